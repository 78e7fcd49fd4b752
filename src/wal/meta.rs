//! Node identity in the data directory: which cluster and which node it belongs to.
//!
//! Owns `<data_dir>/meta`. Read and written once at start-up, before any executor runs,
//! with plain std I/O (a 64-byte file, synced, renamed into place, directory synced).
//! Must not touch the log, the hard state or snapshots; the node decides what a mismatch
//! means for bootstrap.
//!
//! Layout: `[magic "RKVMETA1"][version u32][reserved u32][cluster id u64][node id u64]
//! [CRC32C of the preceding bytes u32]`, zero-padded to 64 bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::raft::NodeId;

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
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[16..24].copy_from_slice(&self.cluster_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.node_id.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != FILE_BYTES || &b[0..8] != MAGIC {
            return Err("not a ringkv meta file".into());
        }
        if crc32c::crc32c(&b[0..32]) != u32::from_le_bytes(b[32..36].try_into().expect("4")) {
            return Err("checksum mismatch".into());
        }
        Ok(Self {
            cluster_id: u64::from_le_bytes(b[16..24].try_into().expect("8")),
            node_id: u64::from_le_bytes(b[24..32].try_into().expect("8")),
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

    /// Start-up check. `has_state`: the directory already holds a log, hard state or
    /// snapshots. Returns the identity to run with; writes it for a fresh directory.
    pub fn check_or_create(
        data_dir: &Path,
        expected: NodeMeta,
        has_state: bool,
    ) -> Result<NodeMeta, IdentityError> {
        match Self::load(data_dir)? {
            None if has_state => Err(IdentityError(format!(
                "{} holds Raft state but no identity (meta) file: refusing to guess which \
                 cluster it belongs to; wipe it and rejoin under a new node id",
                data_dir.display()
            ))),
            None => {
                expected.store(data_dir)?;
                Ok(expected)
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
            Some(m) => Ok(m),
        }
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
        };
        assert_eq!(NodeMeta::check_or_create(&d, me, false).unwrap(), me);
        assert_eq!(NodeMeta::load(&d).unwrap(), Some(me));
        assert_eq!(NodeMeta::check_or_create(&d, me, true).unwrap(), me);
        let other_node = NodeMeta { node_id: 2, ..me };
        let e = NodeMeta::check_or_create(&d, other_node, true).unwrap_err();
        assert!(
            e.0.contains("belongs to node 1, but this config is for node 2"),
            "{e}"
        );
        let other_cluster = NodeMeta {
            cluster_id: 43,
            ..me
        };
        let e = NodeMeta::check_or_create(&d, other_cluster, true).unwrap_err();
        assert!(e.0.contains("cannot change once it exists"), "{e}");
        // Damage is named.
        let mut b = std::fs::read(d.join("meta")).unwrap();
        b[20] ^= 1;
        std::fs::write(d.join("meta"), b).unwrap();
        let e = NodeMeta::check_or_create(&d, me, true).unwrap_err();
        assert!(e.0.contains("checksum mismatch"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
        // State without identity is refused, not adopted.
        let d = dir("orphan");
        std::fs::create_dir_all(&d).unwrap();
        let e = NodeMeta::check_or_create(&d, me, true).unwrap_err();
        assert!(e.0.contains("no identity"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
