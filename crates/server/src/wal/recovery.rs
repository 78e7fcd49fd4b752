//! Recovery: opening a log, everything `Wal::open` does before the WAL takes writes.
//!
//! Owns the start-up pass over `wal/` and `hardstate`: listing the directory (leftover
//! `.tmp` files go, anything else refuses), reading every segment and letting `scan` judge
//! them in creation order, reading (or creating) the hard-state file, cutting a torn tail
//! durably, deleting superseded segments, empty last segments and those the snapshot
//! covers, and rebuilding what the writer starts from: the in-memory batch index, the last
//! entry, the commit index clamped to the log, the open current segment. Runs once per
//! open, on the raft core's executor, before any flush worker exists. Must not repair
//! what `scan` calls corruption (only a torn tail, whose fdatasync never completed, is
//! cut), nor write entries or a hard state: what it found goes back to the caller as
//! `Recovered`.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use ringkv_raft::{Entry, HardState, Index, Term};

use super::disk::{Disk, DiskFile};
use super::format::{self, BLOCK, HARD_STATE_FILE_BYTES};
use super::log::{Counters, WalError, WalOptions, fatal};
use super::scan::{self, BatchLoc, Scan, SegmentImage, TornTail, parse_segment_name, segment_name};
use super::segments::{Segments, ZERO_CHUNK_BYTES};

/// What `open` found.
#[derive(Debug, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    /// Entries after the snapshot index, contiguous.
    pub entries: Vec<Entry>,
    /// The torn tail that was cut, if any (already logged).
    pub torn: Option<TornTail>,
    /// Segments deleted because a snapshot covers them.
    pub segments_deleted: usize,
    pub dropped_stale_suffix: bool,
}

/// The recovered state `Wal::open` builds the writer from.
pub(super) struct Opened<D: Disk> {
    /// The live segments, the last one open for appends; its spare is being prepared.
    pub(super) segs: Segments<D>,
    /// Where each batch of the live log is (entries above `base`).
    pub(super) locs: VecDeque<BatchLoc>,
    /// Index and term of the last entry (the snapshot's when the log is empty).
    pub(super) last: (Index, Term),
    /// The commit index, clamped to the log; also `found.hard_state.commit`.
    pub(super) commit: Index,
    /// The hard-state file, open, and the sequence number of its latest slot.
    pub(super) hs_file: D::File,
    pub(super) hs_seq: u64,
    pub(super) counters: Counters,
    pub(super) found: Recovered,
}

/// Recovers the log in `opts.data_dir` (see `Wal::open`); `disk` ends up in the
/// returned segments.
pub(super) async fn recover<D: Disk>(
    disk: D,
    opts: &WalOptions,
    base: (Index, Term),
) -> Result<Opened<D>, WalError> {
    opts.validate().map_err(WalError::Invalid)?;
    let wal_dir = opts.wal_dir();
    disk.create_dir_all(&wal_dir)
        .await
        .map_err(|e| fatal("creating", &wal_dir, e))?;
    let names = list_segments(&disk, &wal_dir).await?;
    let (mut files, scanned) = read_and_scan(&disk, &wal_dir, &names, base).await?;

    let (hs_file, hs_seq, mut hard_state) =
        open_hard_state(&disk, &opts.data_dir, !names.is_empty()).await?;

    // Live segments in creation order (which, once the dead are gone, is name order).
    let mut segment_names: Vec<Index> = scanned
        .segments
        .iter()
        .map(|g| g.first_index)
        .filter(|n| !scanned.dead.contains(n))
        .collect();
    let next_seq = scanned
        .segments
        .iter()
        .map(|g| g.header.seq + 1)
        .max()
        .unwrap_or(1);
    let last_info = scanned.segments.last().cloned();
    if let Some(t) = &scanned.torn {
        cut_torn_tail(
            &files[&t.segment],
            &wal_dir.join(segment_name(t.segment)),
            t,
        )
        .await?;
    }
    let cur = match (
        last_info
            .as_ref()
            .and_then(|i| files.remove(&i.first_index)),
        last_info,
    ) {
        (Some(file), Some(info)) => Some((info, file)),
        _ => None,
    };
    for (_, f) in files {
        let _ = f.close().await;
    }
    // Superseded segments: their truncating successor is durable (it was written
    // before it was named), so they go now.
    for &d in &scanned.dead {
        let p = wal_dir.join(segment_name(d));
        disk.remove(&p)
            .await
            .map_err(|e| fatal("removing", &p, e))?;
    }
    if !scanned.dead.is_empty() {
        disk.sync_dir(&wal_dir)
            .await
            .map_err(|e| fatal("syncing", &wal_dir, e))?;
        assert!(segment_names.windows(2).all(|w| w[0] < w[1]));
    }
    // A last segment without a batch (a crash between naming it and its first write)
    // would let the next batch start at an index other than its name.
    let mut cur = cur;
    if let Some((info, file)) = cur.take_if(|(info, _)| info.end_offset == BLOCK as u64) {
        let p = wal_dir.join(segment_name(info.first_index));
        drop(file);
        disk.remove(&p)
            .await
            .map_err(|e| fatal("removing", &p, e))?;
        disk.sync_dir(&wal_dir)
            .await
            .map_err(|e| fatal("syncing", &wal_dir, e))?;
        segment_names.pop();
    }
    let (last_index, last_term) = match scanned.entries.last() {
        Some(e) => (e.index, e.term),
        None => base,
    };
    let commit = hard_state
        .commit
        .max(scanned.commit)
        .min(last_index)
        .max(base.0);
    hard_state.commit = commit;
    let counters = Counters::new();
    let mut segs = Segments::recovered(
        disk,
        wal_dir,
        opts,
        segment_names,
        next_seq,
        cur,
        counters.clone(),
    );
    let mut deleted = segs.delete_covered(base.0).await?;
    if scanned.entries.is_empty() && !segs.is_empty() {
        // Nothing live above the snapshot: what remains is covered or stale, and a new
        // batch at base + 1 must not follow it in the same log.
        deleted += segs.len();
        segs.delete_from(0).await?;
    }
    segs.start_spare();
    Ok(Opened {
        segs,
        locs: scanned.batches.iter().copied().collect(),
        last: (last_index, last_term),
        commit,
        hs_file,
        hs_seq,
        counters,
        found: Recovered {
            hard_state,
            entries: scanned.entries,
            torn: scanned.torn,
            segments_deleted: deleted,
            dropped_stale_suffix: scanned.dropped_stale_suffix,
        },
    })
}

/// Names (first indexes) of the segments in `wal_dir`, sorted. Leftover `.tmp` files (a
/// spare, or one cut short by a crash) are removed; any other file refuses.
async fn list_segments<D: Disk>(disk: &D, wal_dir: &Path) -> Result<Vec<Index>, WalError> {
    let mut names = Vec::new();
    for n in disk
        .list(wal_dir)
        .await
        .map_err(|e| fatal("listing", wal_dir, e))?
    {
        if let Some(i) = parse_segment_name(&n) {
            names.push(i);
        } else if n.ends_with(".tmp") {
            let p = wal_dir.join(&n);
            disk.remove(&p)
                .await
                .map_err(|e| fatal("removing", &p, e))?;
        } else {
            return Err(WalError::Invalid(format!(
                "unexpected file {n} in {}: the WAL directory holds only segments",
                wal_dir.display()
            )));
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Reads every segment and judges the whole log. Returns the segments' open files (the
/// torn tail is cut through them, the last one takes the appends) and the verdict.
async fn read_and_scan<D: Disk>(
    disk: &D,
    wal_dir: &Path,
    names: &[Index],
    base: (Index, Term),
) -> Result<(BTreeMap<Index, D::File>, Scan), WalError> {
    let mut files = BTreeMap::new();
    let mut images = Vec::new();
    for &n in names {
        let p = wal_dir.join(segment_name(n));
        let f = disk
            .open(&p, false)
            .await
            .map_err(|e| fatal("opening", &p, e))?;
        let len = f.size().await.map_err(|e| fatal("sizing", &p, e))?;
        let bytes = f
            .read_at(0, len as usize)
            .await
            .map_err(|e| fatal("reading", &p, e))?;
        files.insert(n, f);
        images.push(bytes);
    }
    let seg_images: Vec<SegmentImage<'_>> = names
        .iter()
        .zip(&images)
        .map(|(&first_index, b)| SegmentImage {
            first_index,
            bytes: b,
        })
        .collect();
    let scanned = scan::scan(&seg_images, Some(base)).map_err(WalError::Corruption)?;
    Ok((files, scanned))
}

/// Opens `<data_dir>/hardstate` (creating it when absent) and reads it: the file, the
/// sequence number of its latest slot and the hard state in it (zero for a new file).
/// `beside_a_log`: segments exist.
async fn open_hard_state<D: Disk>(
    disk: &D,
    data_dir: &Path,
    beside_a_log: bool,
) -> Result<(D::File, u64, HardState), WalError> {
    let hs_path = data_dir.join("hardstate");
    let hs_file = disk
        .open(&hs_path, true)
        .await
        .map_err(|e| fatal("opening", &hs_path, e))?;
    let hs_len = hs_file
        .size()
        .await
        .map_err(|e| fatal("sizing", &hs_path, e))?;
    let (mut hs_seq, mut hard_state) = (0, HardState::default());
    if hs_len < HARD_STATE_FILE_BYTES as u64 && beside_a_log {
        // Segments are written only after an open that synced the whole file: a short
        // one beside a log is damage, and resetting it could forget a vote.
        return Err(WalError::Corruption(scan::Corruption {
            file: hs_path.display().to_string(),
            offset: hs_len,
            index: 0,
            reason: format!(
                "hard-state file is {hs_len} bytes, expected {HARD_STATE_FILE_BYTES}, \
                 beside an existing log"
            ),
        }));
    }
    if hs_len < HARD_STATE_FILE_BYTES as u64 {
        // New, or its creation was cut short by a crash (slots are written only after
        // the file is whole): both slots zero, durable before anything refers to it.
        let mut b = hs_file.alloc(HARD_STATE_FILE_BYTES);
        b.fill(0);
        hs_file
            .write_at(b, 0)
            .await
            .map_err(|e| fatal("writing", &hs_path, e))?;
        hs_file
            .fdatasync()
            .await
            .map_err(|e| fatal("syncing", &hs_path, e))?;
        disk.sync_dir(data_dir)
            .await
            .map_err(|e| fatal("syncing", data_dir, e))?;
    } else {
        let bytes = hs_file
            .read_at(0, HARD_STATE_FILE_BYTES)
            .await
            .map_err(|e| fatal("reading", &hs_path, e))?;
        match format::decode_hard_state_file(&bytes) {
            Ok(Some((seq, hs))) => (hs_seq, hard_state) = (seq, hs),
            Ok(None) => {}
            Err(r) => {
                return Err(WalError::Corruption(scan::Corruption {
                    file: hs_path.display().to_string(),
                    offset: 0,
                    index: 0,
                    reason: r,
                }));
            }
        }
    }
    Ok((hs_file, hs_seq, hard_state))
}

/// Cuts a torn tail durably (zeroes `[from_offset, to_offset)` of segment file `f` at
/// `p`, then syncs), so a later shorter batch can never be followed by stale intact ones.
async fn cut_torn_tail<F: DiskFile>(f: &F, p: &Path, t: &TornTail) -> Result<(), WalError> {
    let mut at = t.from_offset;
    while at < t.to_offset {
        let n = ((t.to_offset - at) as usize).min(ZERO_CHUNK_BYTES);
        let mut b = f.alloc(n);
        b.fill(0);
        f.write_at(b, at)
            .await
            .map_err(|e| fatal("cutting the torn tail of", p, e))?;
        at += n as u64;
    }
    f.fdatasync().await.map_err(|e| fatal("syncing", p, e))?;
    tracing::warn!(
        file = %p.display(),
        from_offset = t.from_offset,
        to_offset = t.to_offset,
        batches_after = t.batches_after,
        reason = %t.reason,
        "WAL: cut a torn tail (writes whose fdatasync never completed)"
    );
    Ok(())
}
