//! Segment management: the segment files of `wal/`, rotation, the spare, deletions.
//!
//! Owns the set of segment files (each named by the first index it holds, in order), the
//! open current segment and the offset of its next batch, the creation sequence recorded
//! in each header, and the spare: the next segment prepared ahead of rotation (`spare.tmp`,
//! fallocated, then pre-zeroed). Deletes segments: those a snapshot wholly covers
//! (compaction), those a truncation below the current segment supersedes, all of them on a
//! reset. Runs on the raft core's executor; the spare is prepared by a task on that same
//! executor, beside the flush workers. Must not touch the in-memory batch index, the
//! durable marks, the hard state or the writes in flight: those are `log`'s, and its
//! callers drain the flights before they rotate or delete a segment.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ringkv_raft::{Entry, Index};

use super::disk::{Disk, DiskFile, is_no_space};
use super::format::{BLOCK, SegmentHeader, batch_bytes, encode_batch};
use super::log::{Counters, WalError, WalOptions, fatal};
use super::scan::{BatchLoc, SegmentInfo, segment_name};

/// Name of the segment being prepared ahead of rotation (pre-zeroed, no header yet).
const SPARE: &str = "spare.tmp";
/// Chunk size when pre-zeroing a segment.
pub(super) const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// The open segment batches are appended to.
struct Segment<F> {
    first_index: Index,
    file: Rc<F>,
    /// Offset of the next batch.
    offset: u64,
}

/// The next segment being prepared: fallocated at once, then zeroed. `stop` ends the zeroing after the chunk in flight (never cancel mid-write: a
/// zero write landing after a batch write would destroy the batch).
struct Spare {
    stop: Rc<Cell<bool>>,
    task: glommio::Task<io::Result<()>>,
}

/// The segment files of one WAL. See the module doc.
pub(super) struct Segments<D: Disk> {
    /// The handle `Wal::open` was given; `Wal` reads through it too rather than keep a
    /// clone: a `SimDisk` clone belongs to whichever process runs when it is cloned, which
    /// after a simulated crash is no longer this WAL's.
    disk: D,
    dir: PathBuf,
    /// What each new segment's header records (`WalOptions`).
    segment_bytes_max: u64,
    flush_workers: usize,
    batch_bytes_max: usize,
    /// Segment names (first indexes) in order; the last one is `cur` when open.
    names: Vec<Index>,
    /// Creation sequence of the next segment.
    next_seq: u64,
    cur: Option<Segment<D::File>>,
    /// Background preparation of the next segment; dropping the WAL cancels it.
    spare: Option<Spare>,
    counters: Counters,
}

impl<D: Disk> Segments<D> {
    /// The segments recovery kept in `dir`: `names` in order, `last` the newest one, open,
    /// with the end of its valid batches (`None`: appends start a new segment).
    pub(super) fn recovered(
        disk: D,
        dir: PathBuf,
        opts: &WalOptions,
        names: Vec<Index>,
        next_seq: u64,
        last: Option<(SegmentInfo, D::File)>,
        counters: Counters,
    ) -> Self {
        Self {
            disk,
            dir,
            segment_bytes_max: opts.segment_bytes_max,
            flush_workers: opts.flush_workers,
            batch_bytes_max: opts.batch_bytes_max,
            names,
            next_seq,
            cur: last.map(|(info, file)| Segment {
                first_index: info.first_index,
                file: Rc::new(file),
                offset: info.end_offset,
            }),
            spare: None,
            counters,
        }
    }

    /// The disk, for reading segments other than the current one.
    pub(super) fn disk(&self) -> &D {
        &self.disk
    }

    /// The `wal/` directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the segment named `first_index`.
    pub(super) fn path(&self, first_index: Index) -> PathBuf {
        self.dir.join(segment_name(first_index))
    }

    /// Number of segment files.
    pub(super) fn len(&self) -> usize {
        self.names.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether a batch starting at `first` reaches back to the newest segment's first
    /// index or below it (a truncation there needs a new segment, see `log::write_batch`).
    pub(super) fn reaches_back(&self, first: Index) -> bool {
        self.names.last().is_some_and(|&n| first <= n)
    }

    /// Whether a batch of `len` bytes needs a new segment: none is open, or it is full.
    pub(super) fn needs_segment(&self, len: usize) -> bool {
        match &self.cur {
            None => true,
            Some(c) => c.offset + len as u64 > self.segment_bytes_max,
        }
    }

    /// Reserves `len` bytes for a batch at the end of the current segment: its name, the
    /// batch's offset and the file to write it to.
    pub(super) fn reserve(&mut self, len: usize) -> (Index, u64, Rc<D::File>) {
        let cur = self.cur.as_mut().expect("segment open");
        let pos = cur.offset;
        cur.offset += len as u64;
        (cur.first_index, pos, cur.file.clone())
    }

    /// The open file of segment `first_index`, if it is the current one.
    pub(super) fn current_file(&self, first_index: Index) -> Option<&Rc<D::File>> {
        self.cur
            .as_ref()
            .filter(|c| c.first_index == first_index)
            .map(|c| &c.file)
    }

    /// Starts preparing the next segment in the background: fallocated at once (usable),
    /// then zeroed chunk by chunk. Overwriting zeroed blocks needs no extent conversion at
    /// fdatasync: small syncs are ~1.4x faster than into fallocated blocks, and the
    /// zeroing runs beside the log's own writes (`make bench-wal` measured it faster than
    /// leaving busy segments fallocated). Rotation takes the spare as far as it got.
    pub(super) fn start_spare(&mut self) {
        if self.spare.is_some() {
            return;
        }
        let stop = Rc::new(Cell::new(false));
        let task = glommio::spawn_local(prepare_spare(
            self.disk.clone(),
            self.dir.join(SPARE),
            self.segment_bytes_max,
            Some(stop.clone()),
        ));
        self.spare = Some(Spare { stop, task });
    }

    /// Makes the spare the segment named `first_index` and the current one: header, then
    /// `batch` if given (with the `commit` it records, flagged TRUNCATE), synced BEFORE it
    /// is named. Returns where that batch is. Batches of the old current segment must be
    /// durable already: recovery treats damage anywhere but in the last segment as
    /// corruption.
    pub(super) async fn create(
        &mut self,
        first_index: Index,
        batch: Option<(&[Entry], Index)>,
    ) -> Result<Option<BatchLoc>, WalError> {
        let spare_path = self.dir.join(SPARE);
        let ready = match self.spare.take() {
            Some(sp) => {
                sp.stop.set(true);
                sp.task.await.is_ok()
            }
            None => false,
        };
        if !ready {
            // The background attempt failed (or never ran): once more, here, to report why.
            if let Err(e) = prepare_spare(
                self.disk.clone(),
                spare_path.clone(),
                self.segment_bytes_max,
                None,
            )
            .await
            {
                let _ = self.disk.remove(&spare_path).await;
                return Err(if is_no_space(&e) {
                    WalError::NoSpace(format!(
                        "cannot create a {}-byte segment in {}: {e}",
                        self.segment_bytes_max,
                        self.dir.display()
                    ))
                } else {
                    fatal("creating a segment in", &self.dir, e)
                });
            }
        }
        let f = match self.disk.open(&spare_path, false).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Prepared but gone (removed by hand): prepare it again, here.
                prepare_spare(
                    self.disk.clone(),
                    spare_path.clone(),
                    self.segment_bytes_max,
                    None,
                )
                .await
                .map_err(|e| {
                    if is_no_space(&e) {
                        WalError::NoSpace(format!(
                            "cannot create a segment in {}: {e}",
                            self.dir.display()
                        ))
                    } else {
                        fatal("creating a segment in", &self.dir, e)
                    }
                })?;
                self.disk
                    .open(&spare_path, false)
                    .await
                    .map_err(|e| fatal("opening", &spare_path, e))?
            }
            Err(e) => return Err(fatal("opening", &spare_path, e)),
        };
        let mut b = f.alloc(BLOCK);
        SegmentHeader {
            first_index,
            segment_bytes: self.segment_bytes_max,
            flush_workers: self.flush_workers as u32,
            torn_window_bytes: (self.flush_workers * self.batch_bytes_max) as u64,
            seq: self.next_seq,
        }
        .encode(&mut b);
        f.write_at(b, 0)
            .await
            .map_err(|e| fatal("writing the header of", &spare_path, e))?;
        let mut offset = BLOCK as u64;
        let mut loc = None;
        if let Some((batch, commit)) = batch {
            let len = batch_bytes(batch);
            let mut b = f.alloc(len);
            encode_batch(&mut b, batch, commit, true);
            f.write_at(b, offset)
                .await
                .map_err(|e| fatal("writing", &spare_path, e))?;
            loc = Some(BatchLoc {
                segment: first_index,
                offset,
                total_bytes: len as u32,
                first_index,
                count: batch.len() as u32,
            });
            offset += len as u64;
            self.counters.batch_written(batch.len() as u64, len as u64);
        }
        f.fdatasync()
            .await
            .map_err(|e| fatal("syncing", &spare_path, e))?;
        self.counters.fsync();
        self.next_seq += 1;
        let path = self.dir.join(segment_name(first_index));
        self.disk
            .rename(&spare_path, &path)
            .await
            .map_err(|e| fatal("renaming", &path, e))?;
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(|e| fatal("syncing", &self.dir, e))?;
        if let Some(old) = self.cur.take() {
            drop(old.file); // flights of the old segment are drained; closes on last Rc
        }
        self.cur = Some(Segment {
            first_index,
            file: Rc::new(f),
            offset,
        });
        self.names.push(first_index);
        self.counters.segment_created();
        self.start_spare();
        Ok(loc)
    }

    /// After `create(first, Some(..))` wrote a truncating batch into a new segment named
    /// `first`: deletes the segments it supersedes (named `>= first`), only now that it is
    /// durable. Deleting them first could let a crash resurrect entries an older segment
    /// still holds but a deleted one had truncated.
    pub(super) async fn delete_superseded(&mut self, first: Index) -> Result<(), WalError> {
        // One named `first` itself was replaced by the rename.
        let superseded: Vec<Index> = self.names.iter().copied().filter(|&n| n > first).collect();
        self.names.retain(|&n| n < first);
        self.names.push(first);
        for n in superseded {
            let p = self.dir.join(segment_name(n));
            self.disk
                .remove(&p)
                .await
                .map_err(|e| fatal("removing", &p, e))?;
        }
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(|e| fatal("syncing", &self.dir, e))
    }

    /// Deletes every segment whose name is `>= first` (newest first, so a crash leaves a
    /// contiguous prefix of the log).
    pub(super) async fn delete_from(&mut self, first: Index) -> Result<(), WalError> {
        let mut removed = false;
        while self.names.last().is_some_and(|&n| n >= first) {
            let n = self.names.pop().expect("non-empty");
            if self.cur.as_ref().is_some_and(|c| c.first_index == n) {
                self.cur = None;
            }
            let p = self.dir.join(segment_name(n));
            self.disk
                .remove(&p)
                .await
                .map_err(|e| fatal("removing", &p, e))?;
            removed = true;
        }
        if removed {
            self.disk
                .sync_dir(&self.dir)
                .await
                .map_err(|e| fatal("syncing", &self.dir, e))?;
        }
        // Appends continue in a new segment (named by the next batch).
        self.cur = None;
        Ok(())
    }

    /// Deletes segments all of whose live entries are at or below `base` (the snapshot
    /// index).
    pub(super) async fn delete_covered(&mut self, base: Index) -> Result<usize, WalError> {
        let mut n = 0;
        // Segment k holds live entries [name_k, name_{k+1} - 1]; the last one stays.
        while self.names.len() >= 2 && self.names[1] - 1 <= base {
            let name = self.names.remove(0);
            let p = self.dir.join(segment_name(name));
            self.disk
                .remove(&p)
                .await
                .map_err(|e| fatal("removing", &p, e))?;
            n += 1;
        }
        if n > 0 {
            self.disk
                .sync_dir(&self.dir)
                .await
                .map_err(|e| fatal("syncing", &self.dir, e))?;
        }
        Ok(n)
    }
}

/// Creates `path` as a fallocated, synced file of `size` bytes, then, unless `stop` is
/// absent or set, zeroes it. Either way it reads as zeros past what is written.
async fn prepare_spare<D: Disk>(
    disk: D,
    path: PathBuf,
    size: u64,
    stop: Option<Rc<Cell<bool>>>,
) -> io::Result<()> {
    let _ = disk.remove(&path).await;
    let f = disk.open(&path, true).await?;
    f.allocate(size).await?;
    f.fdatasync().await?;
    let Some(stop) = stop else {
        return f.close().await;
    };
    let mut at = 0u64;
    while at < size && !stop.get() {
        let n = ((size - at) as usize).min(ZERO_CHUNK_BYTES);
        let mut b = f.alloc(n);
        b.fill(0);
        f.write_at(b, at).await?;
        at += n as u64;
    }
    if at >= size {
        f.fdatasync().await?;
    }
    f.close().await
}
