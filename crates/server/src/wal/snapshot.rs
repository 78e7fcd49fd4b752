//! Snapshot files: a state-machine image at an index, checksummed, installed atomically.
//!
//! Owns the `snapshots/` directory of one node; runs on the raft core's executor. A
//! snapshot is written to `<name>.tmp`, synced, renamed and the directory synced, so a
//! crash leaves either the old set or the new one. The newest valid snapshot is loaded at
//! start-up; a damaged newest one refuses start-up (it may be all that holds compacted
//! entries). Knows nothing of the state machine's encoding: `data` is opaque bytes.
//!
//! File layout: `[header 4 KiB: magic, version, index, term, membership length, data
//! length, CRC32C of membership and data, header CRC][membership][data][zero pad]`.

use std::path::{Path, PathBuf};

use ringkv_raft::{Index, Membership, SnapshotMeta, Term};

use super::disk::{Disk, DiskFile, is_no_space};
use super::format::{BLOCK, align_up};
use super::log::WalError;

const MAGIC: &[u8; 8] = b"RKVSNAP1";

pub fn snapshot_name(index: Index, term: Term) -> String {
    format!("{index:020}-{term:020}.snap")
}

fn parse_snapshot_name(n: &str) -> Option<(Index, Term)> {
    let stem = n.strip_suffix(".snap")?;
    let (i, t) = stem.split_once('-')?;
    if i.len() != 20 || t.len() != 20 {
        return None;
    }
    Some((i.parse().ok()?, t.parse().ok()?))
}

/// A loaded snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// A snapshot file is written through a buffer of this size (a multiple of `BLOCK`).
const SNAPSHOT_WRITE_STEP_BYTES: usize = 4 << 20;
const _: () = assert!(SNAPSHOT_WRITE_STEP_BYTES % BLOCK == 0);

/// The checksummed header block of a snapshot file.
fn encode_header(h: &mut [u8], index: Index, term: Term, mlen: u64, dlen: u64, body_crc: u32) {
    h.fill(0);
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[16..24].copy_from_slice(&index.to_le_bytes());
    h[24..32].copy_from_slice(&term.to_le_bytes());
    h[32..40].copy_from_slice(&mlen.to_le_bytes());
    h[40..48].copy_from_slice(&dlen.to_le_bytes());
    h[48..52].copy_from_slice(&body_crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..60]);
    h[60..64].copy_from_slice(&hcrc.to_le_bytes());
}

/// A stored snapshot's body (membership bytes, then data) read by ranges, for sending it
/// to a follower without holding it in memory.
pub struct BodyReader<F> {
    file: F,
    pub body_len: u64,
    /// CRC32C of the whole body, from the verified header.
    pub body_crc: u32,
}

impl<F: DiskFile> BodyReader<F> {
    pub async fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, WalError> {
        self.file
            .read_at(BLOCK as u64 + offset, len)
            .await
            .map_err(|e| WalError::Fatal(format!("reading a snapshot body: {e}")))
    }
}

/// A snapshot body received in order, chunk by chunk, written to a temporary file in
/// whole blocks (memory: at most one chunk plus a block), then checked and stored.
pub struct BodyWriter<D: Disk> {
    file: D::File,
    tmp: PathBuf,
    path: PathBuf,
    index: Index,
    term: Term,
    membership_len: u64,
    body_len: u64,
    /// Body bytes written to the file (whole blocks).
    written: u64,
    pending: Vec<u8>,
    crc: u32,
}

impl<D: Disk> BodyWriter<D> {
    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// Appends the next bytes of the body.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), WalError> {
        if self.written + (self.pending.len() + chunk.len()) as u64 > self.body_len {
            return Err(WalError::Invalid(
                "snapshot body longer than announced".into(),
            ));
        }
        self.crc = crc32c::crc32c_append(self.crc, chunk);
        self.pending.extend_from_slice(chunk);
        let whole = self.pending.len() / BLOCK * BLOCK;
        if whole > 0 {
            self.flush(whole).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, n: usize) -> Result<(), WalError> {
        let mut b = self.file.alloc(align_up(n));
        b[..n].copy_from_slice(&self.pending[..n]);
        b[n..].fill(0);
        self.file
            .write_at(b, BLOCK as u64 + self.written)
            .await
            .map_err(|e| io_error("writing", &self.tmp, e))?;
        self.written += n as u64;
        self.pending.drain(..n);
        Ok(())
    }

    /// Checks length and CRC32C, writes the header, syncs, renames into place, syncs the
    /// directory, prunes beyond `keep`.
    pub async fn finish(mut self, store: &SnapshotStore<D>, crc: u32) -> Result<(), WalError> {
        let done = self.written + self.pending.len() as u64;
        if done != self.body_len || self.crc != crc {
            let _ = store.disk.remove(&self.tmp).await;
            return Err(WalError::Invalid(format!(
                "snapshot body of {done} bytes (announced {}) fails its checksum",
                self.body_len
            )));
        }
        if !self.pending.is_empty() {
            let n = self.pending.len();
            self.flush(n).await?;
        }
        let mut h = self.file.alloc(BLOCK);
        encode_header(
            &mut h,
            self.index,
            self.term,
            self.membership_len,
            self.body_len - self.membership_len,
            self.crc,
        );
        self.file
            .write_at(h, 0)
            .await
            .map_err(|e| io_error("writing", &self.tmp, e))?;
        self.file
            .fdatasync()
            .await
            .map_err(|e| io_error("syncing", &self.tmp, e))?;
        let _ = self.file.close().await;
        store
            .disk
            .rename(&self.tmp, &self.path)
            .await
            .map_err(|e| io_error("renaming", &self.tmp, e))?;
        store
            .disk
            .sync_dir(&store.dir)
            .await
            .map_err(|e| io_error("syncing the directory of", &self.tmp, e))?;
        store.prune().await
    }
}

fn io_error(what: &str, p: &Path, e: std::io::Error) -> WalError {
    if is_no_space(&e) {
        WalError::NoSpace(format!("{what} {}: {e}", p.display()))
    } else {
        WalError::Fatal(format!("{what} {}: {e}", p.display()))
    }
}

/// Decodes and verifies a snapshot file.
pub fn decode_snapshot(b: &[u8]) -> Result<Snapshot, String> {
    if b.len() < BLOCK {
        return Err("shorter than its header".into());
    }
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
    if &b[0..8] != MAGIC || u32_at(8) != 1 {
        return Err("magic or version is wrong".into());
    }
    if crc32c::crc32c(&b[0..60]) != u32_at(60) {
        return Err("header checksum mismatch".into());
    }
    let (mlen, dlen) = (u64_at(32) as usize, u64_at(40) as usize);
    let end = BLOCK
        .checked_add(mlen)
        .and_then(|x| x.checked_add(dlen))
        .filter(|&e| e <= b.len())
        .ok_or("lengths run past the end of the file")?;
    if crc32c::crc32c(&b[BLOCK..end]) != u32_at(48) {
        return Err("body checksum mismatch".into());
    }
    let membership =
        Membership::decode(&b[BLOCK..BLOCK + mlen]).ok_or("membership does not decode")?;
    Ok(Snapshot {
        meta: SnapshotMeta {
            index: u64_at(16),
            term: u64_at(24),
            membership,
        },
        data: b[BLOCK + mlen..end].to_vec(),
    })
}

/// The `snapshots/` directory.
pub struct SnapshotStore<D: Disk> {
    disk: D,
    dir: PathBuf,
    keep: usize,
}

impl<D: Disk> SnapshotStore<D> {
    /// `keep`: how many snapshots to retain (at least 1).
    pub async fn open(disk: D, data_dir: PathBuf, keep: usize) -> Result<Self, WalError> {
        let dir = data_dir.join("snapshots");
        disk.create_dir_all(&dir)
            .await
            .map_err(|e| WalError::Fatal(format!("creating {}: {e}", dir.display())))?;
        // Leftovers of an interrupted write never became a snapshot.
        for n in disk.list(&dir).await.unwrap_or_default() {
            if n.ends_with(".tmp") {
                let _ = disk.remove(&dir.join(n)).await;
            }
        }
        Ok(Self {
            disk,
            dir,
            keep: keep.max(1),
        })
    }

    async fn names(&self) -> Result<Vec<(Index, Term, String)>, WalError> {
        let mut v: Vec<_> = self
            .disk
            .list(&self.dir)
            .await
            .map_err(|e| WalError::Fatal(format!("listing {}: {e}", self.dir.display())))?
            .into_iter()
            .filter_map(|n| parse_snapshot_name(&n).map(|(i, t)| (i, t, n)))
            .collect();
        v.sort();
        Ok(v)
    }

    /// The newest snapshot, verified; `Corruption` if it is damaged.
    pub async fn load_latest(&self) -> Result<Option<Snapshot>, WalError> {
        let Some((_, _, name)) = self.names().await?.pop() else {
            return Ok(None);
        };
        let p = self.dir.join(&name);
        let io_err = |e: std::io::Error| WalError::Fatal(format!("reading {}: {e}", p.display()));
        let f = self.disk.open(&p, false).await.map_err(io_err)?;
        let len = f.size().await.map_err(io_err)?;
        let b = f.read_at(0, len as usize).await.map_err(io_err)?;
        let _ = f.close().await;
        let snap = decode_snapshot(&b).map_err(|r| {
            WalError::Corruption(super::scan::Corruption {
                file: p.display().to_string(),
                offset: 0,
                index: 0,
                reason: format!("snapshot {r}"),
            })
        })?;
        if (snap.meta.index, snap.meta.term) != parse_snapshot_name(&name).expect("parsed") {
            return Err(WalError::Corruption(super::scan::Corruption {
                file: p.display().to_string(),
                offset: 16,
                index: snap.meta.index,
                reason: "snapshot header disagrees with its file name".into(),
            }));
        }
        Ok(Some(snap))
    }

    /// Writes a snapshot durably and atomically, then prunes beyond `keep`.
    pub async fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), WalError> {
        self.save_parts(meta, &[data]).await
    }

    /// `save` of a body given as parts (concatenated in order): the body is copied once,
    /// into the file's aligned buffer, never assembled in memory first.
    pub async fn save_parts(&self, meta: &SnapshotMeta, parts: &[&[u8]]) -> Result<(), WalError> {
        let data_len: usize = parts.iter().map(|p| p.len()).sum();
        let name = snapshot_name(meta.index, meta.term);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(&name);
        let err = |what: &str, e: std::io::Error| {
            if is_no_space(&e) {
                WalError::NoSpace(format!("{what} {}: {e}", tmp.display()))
            } else {
                WalError::Fatal(format!("{what} {}: {e}", tmp.display()))
            }
        };
        let f = self
            .disk
            .open(&tmp, true)
            .await
            .map_err(|e| err("creating", e))?;
        let m = meta.membership.encode();
        let len = BLOCK + m.len() + data_len;
        f.allocate(align_up(len) as u64)
            .await
            .map_err(|e| err("allocating", e))?;
        // The membership and the body go out in aligned steps through one buffer at a
        // time, never a buffer of the whole file (a large state's snapshot was copied
        // into a fresh allocation of its full size, every page of it faulted in); the
        // header, with the body's checksum, goes last.
        let mut crc = 0;
        let mut pos = BLOCK as u64;
        let mut buf = f.alloc(SNAPSHOT_WRITE_STEP_BYTES);
        let mut fill = 0;
        for piece in std::iter::once(&m[..]).chain(parts.iter().copied()) {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = rest.len().min(SNAPSHOT_WRITE_STEP_BYTES - fill);
                buf[fill..fill + n].copy_from_slice(&rest[..n]);
                crc = crc32c::crc32c_append(crc, &rest[..n]);
                fill += n;
                rest = &rest[n..];
                if fill == SNAPSHOT_WRITE_STEP_BYTES {
                    let full = std::mem::replace(&mut buf, f.alloc(SNAPSHOT_WRITE_STEP_BYTES));
                    f.write_at(full, pos).await.map_err(|e| err("writing", e))?;
                    pos += SNAPSHOT_WRITE_STEP_BYTES as u64;
                    fill = 0;
                }
            }
        }
        if fill > 0 {
            let mut tail = f.alloc(align_up(fill));
            tail[..fill].copy_from_slice(&buf[..fill]);
            tail[fill..].fill(0);
            f.write_at(tail, pos).await.map_err(|e| err("writing", e))?;
        }
        drop(buf);
        let mut h = f.alloc(BLOCK);
        encode_header(
            &mut h,
            meta.index,
            meta.term,
            m.len() as u64,
            data_len as u64,
            crc,
        );
        f.write_at(h, 0).await.map_err(|e| err("writing", e))?;
        f.fdatasync().await.map_err(|e| err("syncing", e))?;
        let _ = f.close().await;
        self.disk
            .rename(&tmp, &path)
            .await
            .map_err(|e| err("renaming", e))?;
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(|e| err("syncing the directory of", e))?;
        self.prune().await
    }

    async fn prune(&self) -> Result<(), WalError> {
        let names = self.names().await?;
        let extra = names.len().saturating_sub(self.keep);
        self.remove(&names[..extra]).await
    }

    /// The snapshot at (`index`, `term`), verified.
    pub async fn load(&self, index: Index, term: Term) -> Result<Snapshot, WalError> {
        let p = self.dir.join(snapshot_name(index, term));
        let io_err = |e: std::io::Error| WalError::Fatal(format!("reading {}: {e}", p.display()));
        let f = self.disk.open(&p, false).await.map_err(io_err)?;
        let len = f.size().await.map_err(io_err)?;
        let b = f.read_at(0, len as usize).await.map_err(io_err)?;
        let _ = f.close().await;
        decode_snapshot(&b).map_err(|r| WalError::Fatal(format!("{}: snapshot {r}", p.display())))
    }

    /// Opens the stored snapshot (`index`, `term`) for reading its body by ranges.
    pub async fn open_body(
        &self,
        index: Index,
        term: Term,
    ) -> Result<BodyReader<D::File>, WalError> {
        let p = self.dir.join(snapshot_name(index, term));
        let io_err = |e: std::io::Error| WalError::Fatal(format!("reading {}: {e}", p.display()));
        let f = self.disk.open(&p, false).await.map_err(io_err)?;
        let h = f.read_at(0, BLOCK).await.map_err(io_err)?;
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4"));
        if h.len() < BLOCK || &h[0..8] != MAGIC || crc32c::crc32c(&h[0..60]) != u32_at(60) {
            return Err(WalError::Fatal(format!(
                "{}: snapshot header is damaged",
                p.display()
            )));
        }
        Ok(BodyReader {
            file: f,
            body_len: u64_at(32) + u64_at(40),
            body_crc: u32_at(48),
        })
    }

    /// Starts receiving the snapshot (`index`, `term`) whose body (membership bytes, then
    /// data) is `body_len` bytes.
    pub async fn begin_body(
        &self,
        index: Index,
        term: Term,
        membership_len: u64,
        body_len: u64,
    ) -> Result<BodyWriter<D>, WalError> {
        let name = snapshot_name(index, term);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let file = self
            .disk
            .open(&tmp, true)
            .await
            .map_err(|e| io_error("creating", &tmp, e))?;
        file.allocate(align_up(BLOCK + body_len as usize) as u64)
            .await
            .map_err(|e| io_error("allocating", &tmp, e))?;
        Ok(BodyWriter {
            file,
            path: self.dir.join(&name),
            tmp,
            index,
            term,
            membership_len,
            body_len,
            written: 0,
            pending: Vec::new(),
            crc: 0,
        })
    }

    /// Removes every snapshot (MemFirst divergence reset).
    pub async fn clear(&self) -> Result<(), WalError> {
        self.remove(&self.names().await?).await
    }

    /// Deletes the snapshot at (`index`, `term`) if it is there (one taken before a reset
    /// that made it wrong).
    pub async fn discard(&self, index: Index, term: Term) -> Result<(), WalError> {
        let names: Vec<_> = self
            .names()
            .await?
            .into_iter()
            .filter(|(i, t, _)| *i == index && *t == term)
            .collect();
        self.remove(&names).await
    }

    /// Removes these snapshots, then syncs the directory (nothing to do for none).
    async fn remove(&self, names: &[(Index, Term, String)]) -> Result<(), WalError> {
        if names.is_empty() {
            return Ok(());
        }
        for (_, _, n) in names {
            let p = self.dir.join(n);
            self.disk
                .remove(&p)
                .await
                .map_err(|e| WalError::Fatal(format!("removing {}: {e}", p.display())))?;
        }
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(|e| WalError::Fatal(format!("syncing {}: {e}", self.dir.display())))
    }
}
