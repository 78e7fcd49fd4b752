//! Node identity in the data directory: which cluster and which node it belongs to, which
//! incarnation of that node it is, and the incarnations of the peers it has met.
//!
//! Owns `<data_dir>/meta` and `<data_dir>/peers`. `meta` is read and written once at
//! start-up; `peers` gains a line the first time a peer is met (a handshake, rare). Both
//! with plain std I/O (small files written to a temporary, synced, renamed into place,
//! directory synced). Must not touch the log, the hard state or snapshots; the node decides
//! what a mismatch means for bootstrap.
//!
//! The incarnation is a random number drawn when the directory is first claimed. A node
//! whose directory was wiped comes back with a new one, and peers that met the old one
//! refuse it: it may have voted or acknowledged entries it no longer remembers.
//!
//! `meta` layout: `[magic "RKVMETA1"][version u32 = 2][reserved u32][cluster id u64]
//! [node id u64][incarnation u64][CRC32C of the preceding bytes u32]`, zero-padded to 64
//! bytes. `peers`: one line `<node id> <incarnation hex>` per peer met, then a line
//! `crc <CRC32C hex of the lines before>`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ringkv_raft::NodeId;

const MAGIC: &[u8; 8] = b"RKVMETA1";
const FILE_BYTES: usize = 64;

/// The id of a cluster: derived from its initial membership and its token, so nodes
/// configured for different clusters (or with a different token) never mix.
pub fn cluster_id(members: &[(NodeId, String)], token: &str) -> u64 {
    let mut m: Vec<_> = members.to_vec();
    m.sort();
    let mut canon = String::new();
    for (id, addr) in &m {
        canon.push_str(&format!("{id}={addr};"));
    }
    canon.push_str("token=");
    canon.push_str(token);
    // Two independent CRC32C streams make 64 stable bits (no std hasher: its algorithm
    // may change between Rust releases, and peers of different builds must agree).
    let hi = crc32c::crc32c_append(crc32c::crc32c(b"ringkv-cluster-hi"), canon.as_bytes());
    let lo = crc32c::crc32c_append(crc32c::crc32c(b"ringkv-cluster-lo"), canon.as_bytes());
    ((hi as u64) << 32) | lo as u64
}

/// What the data directory says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeMeta {
    pub cluster_id: u64,
    pub node_id: NodeId,
    /// Drawn when the directory was claimed; never 0.
    pub incarnation: u64,
}

/// A start-up refusal, with what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityError(pub String);

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityError {}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta")
}

impl NodeMeta {
    fn encode(&self) -> [u8; FILE_BYTES] {
        let mut b = [0u8; FILE_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        b[16..24].copy_from_slice(&self.cluster_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.node_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.incarnation.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != FILE_BYTES || &b[0..8] != MAGIC {
            return Err("not a ringkv meta file".into());
        }
        if crc32c::crc32c(&b[0..40]) != u32::from_le_bytes(b[40..44].try_into().expect("4")) {
            return Err("checksum mismatch".into());
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4"));
        if version != 2 {
            return Err(format!("meta version {version} is not supported (2 is)"));
        }
        Ok(Self {
            cluster_id: u64::from_le_bytes(b[16..24].try_into().expect("8")),
            node_id: u64::from_le_bytes(b[24..32].try_into().expect("8")),
            incarnation: u64::from_le_bytes(b[32..40].try_into().expect("8")),
        })
    }

    /// The stored identity, if any.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, IdentityError> {
        let p = path(data_dir);
        match std::fs::read(&p) {
            Ok(b) => Self::decode(&b).map(Some).map_err(|r| {
                IdentityError(format!(
                    "{}: {r}; the data directory's identity is damaged: wipe it and rejoin \
                     under a new node id",
                    p.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IdentityError(format!("cannot read {}: {e}", p.display()))),
        }
    }

    /// Writes the identity durably (temporary file, fsync, rename, directory fsync).
    pub fn store(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let io =
            |e: std::io::Error| IdentityError(format!("writing {}: {e}", path(data_dir).display()));
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let tmp = data_dir.join("meta.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&self.encode()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path(data_dir)).map_err(io)?;
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    /// Start-up check. `expected.incarnation` is the one to claim a fresh directory with;
    /// `has_state`: the directory already holds a log, hard state or snapshots. Returns
    /// the identity to run with (writing it for a fresh directory) and whether it was
    /// just created.
    pub fn check_or_create(
        data_dir: &Path,
        expected: NodeMeta,
        has_state: bool,
    ) -> Result<(NodeMeta, bool), IdentityError> {
        assert_ne!(expected.incarnation, 0, "incarnation 0 means unknown");
        match Self::load(data_dir)? {
            None if has_state => Err(IdentityError(format!(
                "{} holds Raft state but no identity (meta) file: refusing to guess which \
                 cluster it belongs to; wipe it and rejoin under a new node id",
                data_dir.display()
            ))),
            None => {
                expected.store(data_dir)?;
                Ok((expected, true))
            }
            Some(m) if m.node_id != expected.node_id => Err(IdentityError(format!(
                "{} belongs to node {}, but this config is for node {}: point data_dir at \
                 node {}'s own directory",
                data_dir.display(),
                m.node_id,
                expected.node_id,
                expected.node_id
            ))),
            Some(m) if m.cluster_id != expected.cluster_id => Err(IdentityError(format!(
                "{} belongs to cluster {:016x}, but initial_cluster and cluster_token give \
                 {:016x}: a cluster's initial_cluster and token cannot change once it \
                 exists; restore them, or wipe this directory and join as a new node",
                data_dir.display(),
                m.cluster_id,
                expected.cluster_id
            ))),
            Some(m) => Ok((m, false)),
        }
    }
}

/// A fresh incarnation number: wall-clock nanoseconds, process id and a counter mixed
/// (unique enough: it only has to differ from this node's earlier incarnations).
pub fn new_incarnation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = t ^ ((std::process::id() as u64) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    // SplitMix64 finaliser: spreads nearby inputs.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    (x ^ (x >> 31)).max(1)
}

/// The incarnations of the peers this node has met, persisted in `<data_dir>/peers`.
#[derive(Debug)]
pub struct KnownPeers {
    path: PathBuf,
    known: BTreeMap<NodeId, u64>,
}

/// What a peer's handshake incarnation means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerCheck {
    /// Met before with this incarnation.
    Known,
    /// First meeting: recorded durably.
    Recorded,
    /// Met before with another incarnation (returned): its data was wiped or replaced.
    Changed(u64),
}

impl KnownPeers {
    pub fn load(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join("peers");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    path,
                    known: BTreeMap::new(),
                });
            }
            Err(e) => {
                return Err(IdentityError(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let bad = |why: String| {
            IdentityError(format!(
                "{}: {why}; the record of peers met is damaged: remove the file to forget them \
                 (a wiped peer then goes unnoticed once)",
                path.display()
            ))
        };
        let (body, last) = match text.trim_end_matches('\n').rsplit_once('\n') {
            Some((b, l)) => (format!("{b}\n"), l),
            None => (String::new(), text.trim_end_matches('\n')),
        };
        let crc = last
            .strip_prefix("crc ")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("no checksum line".into()))?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return Err(bad("checksum mismatch".into()));
        }
        let mut known = BTreeMap::new();
        for (n, line) in body.lines().enumerate() {
            let parsed = line.split_once(' ').and_then(|(id, inc)| {
                Some((
                    id.parse::<NodeId>().ok()?,
                    u64::from_str_radix(inc, 16).ok()?,
                ))
            });
            let (id, inc) = parsed.ok_or_else(|| bad(format!("line {}: {line:?}", n + 1)))?;
            known.insert(id, inc);
        }
        Ok(Self { path, known })
    }

    /// Whether no peer was ever met.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// What `incarnation` means for peer `id`, without any I/O: met before as it is
    /// (`Known`), met with another one (`Changed`), or never met (`None`: it must be
    /// recorded with `record`).
    pub fn lookup(&self, id: NodeId, incarnation: u64) -> Option<PeerCheck> {
        match self.known.get(&id) {
            Some(&k) if k == incarnation => Some(PeerCheck::Known),
            Some(&k) => Some(PeerCheck::Changed(k)),
            None => None,
        }
    }

    /// The durable record of one more peer: the file's new text, to be written with
    /// `write` (blocking: off the executors) and then applied with `recorded`.
    pub fn record(&self, id: NodeId, incarnation: u64) -> PeersFile {
        let mut all = self.known.clone();
        all.insert(id, incarnation);
        let mut body = String::new();
        for (peer, inc) in &all {
            body.push_str(&format!("{peer} {inc:016x}\n"));
        }
        PeersFile {
            path: self.path.clone(),
            text: format!("{body}crc {:08x}\n", crc32c::crc32c(body.as_bytes())),
        }
    }

    /// The record written by `record(id, incarnation)` is durable: remember it.
    pub fn recorded(&mut self, id: NodeId, incarnation: u64) {
        self.known.insert(id, incarnation);
    }
}

/// The `peers` file's new contents, written atomically by `write`.
pub struct PeersFile {
    path: PathBuf,
    text: String,
}

impl PeersFile {
    /// Writes a temporary file, fsyncs it, renames it over the record and fsyncs the
    /// directory. Blocking: the node calls it on an executor's blocking pool.
    pub fn write(&self) -> Result<(), IdentityError> {
        let io = |e: std::io::Error| IdentityError(format!("writing {}: {e}", self.path.display()));
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(self.text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringkv-meta-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn cluster_id_is_stable_order_free_and_token_sensitive() {
        let a = vec![
            (1, "127.0.0.1:9081".to_string()),
            (2, "127.0.0.1:9082".to_string()),
        ];
        let b = vec![
            (2, "127.0.0.1:9082".to_string()),
            (1, "127.0.0.1:9081".to_string()),
        ];
        assert_eq!(cluster_id(&a, ""), cluster_id(&b, ""));
        assert_ne!(cluster_id(&a, ""), cluster_id(&a, "secret"));
        assert_ne!(cluster_id(&a, ""), cluster_id(&a[..1], ""));
        // Pinned: ids must agree between builds and versions.
        assert_eq!(format!("{:016x}", cluster_id(&a, "")), "dd20bb31860afd51");
    }

    #[test]
    fn fresh_directory_is_claimed_and_mismatches_are_refused() {
        let d = dir("claim");
        let me = NodeMeta {
            cluster_id: 42,
            node_id: 1,
            incarnation: 7,
        };
        assert_eq!(
            NodeMeta::check_or_create(&d, me, false).unwrap(),
            (me, true)
        );
        assert_eq!(NodeMeta::load(&d).unwrap(), Some(me));
        // A later start keeps the stored incarnation, whatever it was offered.
        let again = NodeMeta {
            incarnation: 8,
            ..me
        };
        assert_eq!(
            NodeMeta::check_or_create(&d, again, true).unwrap(),
            (me, false)
        );
        let other_node = NodeMeta { node_id: 2, ..me };
        let e = NodeMeta::check_or_create(&d, other_node, true).unwrap_err();
        assert!(
            e.0.contains("belongs to node 1, but this config is for node 2"),
            "{e}"
        );
        assert!(!e.0.contains("  "), "a run of spaces: {e}");
        let other_cluster = NodeMeta {
            cluster_id: 43,
            ..me
        };
        let e = NodeMeta::check_or_create(&d, other_cluster, true).unwrap_err();
        assert!(e.0.contains("cannot change once it exists"), "{e}");
        assert!(!e.0.contains("  "), "a run of spaces: {e}");
        // Damage is named.
        let mut b = std::fs::read(d.join("meta")).unwrap();
        b[20] ^= 1;
        std::fs::write(d.join("meta"), b).unwrap();
        let e = NodeMeta::check_or_create(&d, me, true).unwrap_err();
        assert!(e.0.contains("checksum mismatch"), "{e}");
        assert!(!e.0.contains("  "), "a run of spaces: {e}");
        std::fs::remove_dir_all(&d).unwrap();
        // State without identity is refused, not adopted.
        let d = dir("orphan");
        std::fs::create_dir_all(&d).unwrap();
        let e = NodeMeta::check_or_create(&d, me, true).unwrap_err();
        assert!(e.0.contains("no identity"), "{e}");
        assert!(!e.0.contains("  "), "a run of spaces: {e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn peers_are_recorded_once_and_a_changed_incarnation_is_reported() {
        let d = dir("peers");
        std::fs::create_dir_all(&d).unwrap();
        // What the node does: look up, and on a first meeting write the record, then
        // remember it.
        fn check(k: &mut KnownPeers, id: NodeId, inc: u64) -> Result<PeerCheck, IdentityError> {
            if let Some(c) = k.lookup(id, inc) {
                return Ok(c);
            }
            k.record(id, inc).write()?;
            k.recorded(id, inc);
            Ok(PeerCheck::Recorded)
        }
        let mut k = KnownPeers::load(&d).unwrap();
        assert_eq!(check(&mut k, 2, 0xabc).unwrap(), PeerCheck::Recorded);
        assert_eq!(check(&mut k, 3, 0xdef).unwrap(), PeerCheck::Recorded);
        assert_eq!(check(&mut k, 2, 0xabc).unwrap(), PeerCheck::Known);
        // Survives a restart.
        let mut k = KnownPeers::load(&d).unwrap();
        assert_eq!(check(&mut k, 3, 0xdef).unwrap(), PeerCheck::Known);
        assert_eq!(check(&mut k, 2, 0x123).unwrap(), PeerCheck::Changed(0xabc));
        // Damage is named, not ignored.
        let mut b = std::fs::read(d.join("peers")).unwrap();
        b[0] = b'9';
        std::fs::write(d.join("peers"), b).unwrap();
        let e = KnownPeers::load(&d).unwrap_err();
        // The whole message, so a stray run of spaces from a badly continued literal shows.
        assert_eq!(
            e.0,
            format!(
                "{}: checksum mismatch; the record of peers met is damaged: remove the file \
                 to forget them (a wiped peer then goes unnoticed once)",
                d.join("peers").display()
            )
        );
        std::fs::remove_dir_all(&d).unwrap();
        assert_ne!(new_incarnation(), new_incarnation());
    }
}
