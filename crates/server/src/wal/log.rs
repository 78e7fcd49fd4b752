//! The write-ahead log proper: the writer (`Wal`), flush workers, hard state, reads.
//!
//! Owns `Wal` once it is open: the `wal/` directory and the `hardstate` file of one node,
//! the batches and hard-state writes in flight, the MemFirst buffer, the in-memory index of
//! batches and the durable marks, the options and errors. Runs on the raft core's
//! executor; its flush workers are tasks on that same executor, so at most
//! `flush_workers` batches are in flight while the core goes on. Knows nothing of the
//! protocol beyond what a `Ready` asks: persist `hard_state`, `entries` (a first index
//! already in the log replaces that suffix), `reset`, `snapshot`; report `Ready` numbers
//! durable strictly in order. Counts its work in `WalStats` (for `/status`) and the same,
//! plus each flush task's write+fdatasync time, in its `WalMetrics` handles. Opening the
//! log is `recovery`'s; the segment files (naming, rotation, the spare, deleting them)
//! are `segments`', so this file never creates, renames or deletes a file itself.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use glommio::task::JoinHandle;

use crate::metrics::WalMetrics;
use ringkv_raft::{Entry, HardState, Index, Term};

use super::disk::{Disk, DiskFile};
use super::format::{self, BATCH_HEADER_BYTES, BLOCK, batch_bytes, encode_batch, record_bytes};
use super::recovery::{self, Recovered};
use super::scan::{self, BatchLoc};
use super::segments::Segments;

/// MemFirst buffering (`[raft.persistence] strategy = "MemFirst"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemFirstPolicy {
    /// Flush once this many entries are buffered (`flush_policy.Batch.threshold`).
    pub flush_threshold_entries: usize,
    /// Flush buffered entries at least this often (`flush_policy.Batch.interval_ms`).
    pub flush_interval_ms: u64,
    /// Beyond this many buffered entries, `persist` waits for a flush (backpressure).
    pub buffered_entries_max: usize,
}

/// Settings of one WAL.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// The node's data directory: the log goes in `wal/`, the hard state in `hardstate`.
    pub data_dir: PathBuf,
    pub segment_bytes_max: u64,
    /// Largest batch (one write, one fdatasync); also bounds a single entry's record.
    pub batch_bytes_max: usize,
    /// Batches written and synced concurrently.
    pub flush_workers: usize,
    /// `None`: DiskFirst (a Ready is reported only once its entries are synced).
    pub mem_first: Option<MemFirstPolicy>,
}

impl WalOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            segment_bytes_max: 64 << 20,
            batch_bytes_max: 2 << 20,
            flush_workers: 4,
            mem_first: None,
        }
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.batch_bytes_max < 2 * BLOCK || self.batch_bytes_max % BLOCK != 0 {
            return Err(format!(
                "batch_bytes_max = {} must be a multiple of {BLOCK} and at least {}",
                self.batch_bytes_max,
                2 * BLOCK
            ));
        }
        if self.segment_bytes_max % BLOCK as u64 != 0
            || self.segment_bytes_max < (BLOCK + 2 * self.batch_bytes_max) as u64
        {
            return Err(format!(
                "segment_bytes_max = {} must be a multiple of {BLOCK} and hold two batches \
                 of batch_bytes_max = {} plus a header block",
                self.segment_bytes_max, self.batch_bytes_max
            ));
        }
        if !(1..=64).contains(&self.flush_workers) {
            return Err(format!(
                "flush_workers = {} must be between 1 and 64",
                self.flush_workers
            ));
        }
        if let Some(m) = &self.mem_first
            && (m.flush_threshold_entries == 0
                || m.buffered_entries_max < m.flush_threshold_entries)
        {
            return Err(format!(
                "MemFirst: threshold = {} must be at least 1 and at most max_buffered_entries = {}",
                m.flush_threshold_entries, m.buffered_entries_max
            ));
        }
        Ok(())
    }

    /// Largest entry payload a batch can hold.
    pub fn entry_bytes_max(&self) -> usize {
        self.batch_bytes_max - BATCH_HEADER_BYTES - record_bytes(0) - 8
    }
}

/// Why the WAL refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalError {
    /// Damage recovery must not repair: the node must not start.
    Corruption(scan::Corruption),
    /// The disk is full. The Ready passed to `persist` was taken, but part of it waits for
    /// space (reads keep working); call `retry` until it succeeds before the next `persist`.
    NoSpace(String),
    /// `persist` refused a Ready and took nothing of it: earlier writes still wait for
    /// space. Call `retry`, then pass the same Ready again.
    Stalled(String),
    /// A write or fsync failed. The node must stop: after a failed fsync the kernel may have
    /// dropped the dirty pages, so a retry could report data durable that is not.
    Fatal(String),
    /// A request the WAL cannot honour (bad options, an entry larger than a batch).
    Invalid(String),
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Corruption(c) => write!(f, "{c}"),
            WalError::NoSpace(m) => write!(f, "WAL disk full, writes refused: {m}"),
            WalError::Stalled(m) => write!(f, "WAL writes stalled for lack of space: {m}"),
            WalError::Fatal(m) => write!(f, "WAL I/O failure, node must stop: {m}"),
            WalError::Invalid(m) => write!(f, "WAL: {m}"),
        }
    }
}

impl std::error::Error for WalError {}

pub(super) fn fatal(what: &str, path: &Path, e: io::Error) -> WalError {
    WalError::Fatal(format!("{what} {}: {e}", path.display()))
}

/// Counters for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub fsyncs: u64,
    pub batches: u64,
    pub entries: u64,
    pub bytes_written: u64,
    pub segments_created: u64,
}

/// A write in flight (entries or hard state), reported in order.
struct Flight {
    /// The Ready this completes, if it is the Ready's last write.
    ready: Option<u64>,
    /// Log index durable once this completes (clamped by later truncations).
    last_index: Index,
    task: JoinHandle<io::Result<()>>,
}

/// The log of one node. See the module doc.
pub struct Wal<D: Disk> {
    opts: WalOptions,
    /// The segment files: names, the current one, the spare (`segments`).
    segs: Segments<D>,
    /// Where each batch of the live log is (entries above `base`).
    locs: VecDeque<BatchLoc>,
    base: (Index, Term),
    /// Last index written or in flight (MemFirst: excluding the buffer).
    disk_last: Index,
    /// Last index including MemFirst's buffer.
    last_index: Index,
    last_term: Term,
    persisted_index: Index,
    commit: Index,
    hs: HardStateFile<D::File>,
    flights: VecDeque<Flight>,
    completed: VecDeque<u64>,
    fatal: Option<WalError>,
    /// MemFirst: entries not yet handed to a flush worker.
    buffer: Vec<Entry>,
    buffer_since: Option<Instant>,
    /// Batches waiting for disk space (NoSpace): written in order by `retry`.
    stalled: VecDeque<Stalled>,
    counters: Counters,
}

/// The WAL's counts, shared by the write path and segment rotation (`segments`); clones
/// share them.
#[derive(Clone)]
pub(super) struct Counters {
    stats: Rc<std::cell::Cell<WalStats>>,
    /// The same counts for Prometheus, plus sync latencies and gauges (no-ops without a
    /// recorder).
    metrics: Rc<WalMetrics>,
}

impl Counters {
    pub(super) fn new() -> Self {
        Self {
            stats: Rc::default(),
            metrics: Rc::new(WalMetrics::new()),
        }
    }

    /// A batch written (its fdatasync is counted by `fsync`).
    pub(super) fn batch_written(&self, entries: u64, bytes: u64) {
        self.metrics.batches.increment(1);
        self.metrics.entries_written.increment(entries);
        self.metrics.bytes_written.increment(bytes);
        self.metrics.entries_per_fsync.record(entries as f64);
        bump(&self.stats, |s| {
            s.batches += 1;
            s.entries += entries;
            s.bytes_written += bytes;
        });
    }

    pub(super) fn fsync(&self) {
        self.metrics.fsyncs.increment(1);
        bump(&self.stats, |s| s.fsyncs += 1);
    }

    pub(super) fn segment_created(&self) {
        self.metrics.segments_created.increment(1);
        bump(&self.stats, |s| s.segments_created += 1);
    }
}

/// The `hardstate` file: two block-sized slots, written alternately by sequence number.
struct HardStateFile<F> {
    file: Rc<F>,
    /// Held by the hard-state write in progress.
    lock: Rc<glommio::sync::Semaphore>,
    /// Sequence number of the latest write (its parity picks the slot).
    seq: u64,
    /// The hard state of the latest write.
    written: HardState,
}

impl<F> HardStateFile<F> {
    fn new(file: F, seq: u64, written: HardState) -> Self {
        Self {
            file: Rc::new(file),
            lock: Rc::new(glommio::sync::Semaphore::new(1)),
            seq,
            written,
        }
    }
}

struct Stalled {
    ready: Option<u64>,
    entries: Vec<Entry>,
}

/// Counts a flush task as busy (`ringkv_wal_flush_workers_busy`) while it lives.
struct Busy<'a>(&'a WalMetrics);

impl<'a> Busy<'a> {
    fn new(m: &'a WalMetrics) -> Self {
        m.flush_workers_busy.increment(1.0);
        Self(m)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.flush_workers_busy.decrement(1.0);
    }
}

fn bump(stats: &std::cell::Cell<WalStats>, f: impl FnOnce(&mut WalStats)) {
    let mut s = stats.get();
    f(&mut s);
    stats.set(s);
}

impl<D: Disk> Wal<D> {
    /// Recovers the log in `opts.data_dir` (creating it when absent). `base`: the index
    /// and term of the latest snapshot on disk (`(0, 0)` without one). A torn tail is cut
    /// (and logged); corruption refuses with `WalError::Corruption`.
    pub async fn open(
        disk: D,
        opts: WalOptions,
        base: (Index, Term),
    ) -> Result<(Self, Recovered), WalError> {
        let r = recovery::recover(disk, &opts, base).await?;
        // Nothing in flight or buffered yet: everything recovered is durable.
        let (last_index, last_term) = r.last;
        let wal = Wal {
            segs: r.segs,
            locs: r.locs,
            base,
            disk_last: last_index,
            last_index,
            last_term,
            persisted_index: last_index,
            commit: r.commit,
            hs: HardStateFile::new(r.hs_file, r.hs_seq, r.found.hard_state),
            flights: VecDeque::new(),
            completed: VecDeque::new(),
            fatal: None,
            buffer: Vec::new(),
            buffer_since: None,
            stalled: VecDeque::new(),
            counters: r.counters,
            opts,
        };
        Ok((wal, r.found))
    }

    pub fn stats(&self) -> WalStats {
        self.counters.stats.get()
    }

    /// The live counters, for a reader on the same executor (status, metrics).
    pub fn stats_handle(&self) -> Rc<std::cell::Cell<WalStats>> {
        self.counters.stats.clone()
    }

    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// Highest index known durable (written and synced, in order).
    pub fn persisted_index(&self) -> Index {
        self.persisted_index
    }

    /// MemFirst entries waiting for a flush.
    pub fn buffered_entries(&self) -> usize {
        self.buffer.len()
    }

    /// Writes refused for lack of space are waiting (see `retry`).
    pub fn is_stalled(&self) -> bool {
        !self.stalled.is_empty()
    }

    pub fn inflight(&self) -> usize {
        self.flights.len()
    }

    fn check_fatal(&self) -> Result<(), WalError> {
        match &self.fatal {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Persists one Ready's durable parts and arranges for `number` to be reported once
    /// they are synced (by `take_completed` after `wait_flight`, or by `next_persisted`;
    /// at once for a MemFirst Ready without a term or vote change). May wait for a free
    /// flush worker (bounded in-flight work).
    pub async fn persist(
        &mut self,
        number: u64,
        hard_state: Option<HardState>,
        reset: bool,
        snapshot: Option<(Index, Term)>,
        entries: &[Entry],
    ) -> Result<(), WalError> {
        self.check_fatal()?;
        if !self.stalled.is_empty() && !reset {
            // Nothing may overtake the stalled writes: a later Ready reported first would
            // report them too (numbers are cumulative). A reset discards them anyway.
            self.retry().await.map_err(|e| match e {
                WalError::NoSpace(m) => WalError::Stalled(m),
                e => e,
            })?;
        }
        if let Some(e) = entries
            .iter()
            .find(|e| e.data.len() > self.opts.entry_bytes_max())
        {
            return Err(WalError::Invalid(format!(
                "entry {} holds {} bytes, more than a batch can (batch_bytes_max = {})",
                e.index,
                e.data.len(),
                self.opts.batch_bytes_max
            )));
        }
        if reset || snapshot.is_some() {
            self.install_base(reset, snapshot).await?;
        }
        if let Some(hs) = hard_state {
            self.commit = self.commit.max(hs.commit);
            if hs.term != self.hs.written.term || hs.vote != self.hs.written.vote {
                self.start_hard_state(hs).await;
            }
        }
        if self.opts.mem_first.is_some() && !entries.is_empty() {
            self.accept_entries(entries);
        }
        match &self.opts.mem_first {
            // DiskFirst writes straight from the Ready's entries (no buffer, no copy).
            None if !entries.is_empty() => {
                self.take_tail(entries);
                self.write_batches(Some(number), entries).await
            }
            None => {
                self.report_when_previous_done(number);
                Ok(())
            }
            Some(policy) => {
                let (threshold, max) =
                    (policy.flush_threshold_entries, policy.buffered_entries_max);
                // Backpressure: at the threshold (never beyond the bound) the buffer goes to
                // the flush workers, waiting for a free one.
                if self.buffer.len() >= threshold.min(max) {
                    self.flush_buffer(None).await?;
                }
                self.report_when_previous_done(number);
                Ok(())
            }
        }
    }

    /// Reports `number` after every earlier flight (or at once when none is in flight).
    fn report_when_previous_done(&mut self, number: u64) {
        if self.flights.is_empty() {
            self.completed.push_back(number);
        } else {
            self.flights.back_mut().expect("non-empty").ready = Some(number);
            // An earlier Ready number on the last flight is subsumed: numbers are reported
            // as "everything up to n", so the latest one is what counts.
        }
    }

    /// MemFirst: flush if the buffer is older than the policy's interval.
    pub async fn flush_if_due(&mut self) -> Result<(), WalError> {
        self.check_fatal()?;
        let due = match (&self.opts.mem_first, self.buffer_since) {
            (Some(p), Some(since)) => since.elapsed().as_millis() as u64 >= p.flush_interval_ms,
            _ => false,
        };
        if due {
            self.retry().await?;
            self.flush_buffer(None).await?;
        }
        Ok(())
    }

    /// Writes whatever is buffered and waits until everything is synced; writes the hard
    /// state with the latest commit index too (clean shutdown).
    pub async fn sync_all(&mut self) -> Result<(), WalError> {
        self.check_fatal()?;
        self.retry().await?;
        self.flush_buffer(None).await?;
        let hs = HardState {
            commit: self.commit,
            ..self.hs.written
        };
        self.start_hard_state(hs).await;
        self.drain().await
    }

    /// Retries writes refused for lack of space.
    pub async fn retry(&mut self) -> Result<(), WalError> {
        self.check_fatal()?;
        while let Some(s) = self.stalled.pop_front() {
            // On failure `write_batches` re-queues what it could not place.
            self.write_batches(s.ready, &s.entries).await?;
        }
        Ok(())
    }

    /// Next Ready number whose parts are all durable, in order.
    pub async fn next_persisted(&mut self) -> Result<Option<u64>, WalError> {
        if let Some(n) = self.completed.pop_front() {
            return Ok(Some(n));
        }
        self.check_fatal()?;
        loop {
            let Some(f) = self.flights.pop_front() else {
                return Ok(None);
            };
            self.finish(f).await?;
            if let Some(n) = self.completed.pop_front() {
                return Ok(Some(n));
            }
        }
    }

    /// Ready numbers already complete, without waiting.
    pub fn take_completed(&mut self) -> Vec<u64> {
        self.completed.drain(..).collect()
    }

    /// Waits for the oldest write in flight and records it: its Ready number, if it
    /// completes one, then comes from `take_completed`. Cancel-safe (dropped before the
    /// write completes, it changes nothing), so the driver can wait on it beside its
    /// queue instead of stalling there. Never completes while nothing is in flight.
    pub async fn wait_flight(&mut self) -> Result<(), WalError> {
        self.check_fatal()?;
        let r = std::future::poll_fn(|cx| match self.flights.front_mut() {
            Some(f) => std::pin::Pin::new(&mut f.task).poll(cx),
            None => std::task::Poll::Pending,
        })
        .await;
        // No await from here on: the flight is popped in the same poll that saw it done.
        let f = self.flights.pop_front().expect("the polled flight");
        self.record(f.ready, f.last_index, r)
    }

    async fn finish(&mut self, f: Flight) -> Result<(), WalError> {
        let r = f.task.await;
        self.record(f.ready, f.last_index, r)
    }

    fn record(
        &mut self,
        ready: Option<u64>,
        last_index: Index,
        r: Option<io::Result<()>>,
    ) -> Result<(), WalError> {
        let r = r.unwrap_or_else(|| Err(io::Error::other("flush worker was cancelled")));
        match r {
            Ok(()) => {
                self.persisted_index = self.persisted_index.max(last_index);
                if let Some(n) = ready {
                    self.completed.push_back(n);
                }
                Ok(())
            }
            Err(e) => {
                let err = WalError::Fatal(format!(
                    "a batch write or fdatasync failed in {}: {e}",
                    self.segs.dir().display()
                ));
                tracing::error!(error = %err, "WAL: stopping: never retrying a failed fsync");
                self.fatal = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Waits for every flight (their Ready numbers go to `completed`).
    pub async fn drain(&mut self) -> Result<(), WalError> {
        while let Some(f) = self.flights.pop_front() {
            self.finish(f).await?;
        }
        Ok(())
    }

    /// Waits until a flush worker is free: at most `flush_workers` writes are ever in
    /// flight (recovery's torn-tail rule counts on it).
    async fn wait_for_worker(&mut self) {
        while self.flights.len() >= self.opts.flush_workers {
            let f = self.flights.pop_front().expect("non-empty");
            // An error here is recorded in `fatal` and returned by the caller's check.
            let _ = self.finish(f).await;
        }
    }

    async fn start_hard_state(&mut self, hs: HardState) {
        self.wait_for_worker().await;
        let task = self.spawn_hard_state(hs);
        self.flights.push_back(Flight {
            ready: None,
            last_index: self.persisted_index,
            task,
        });
    }

    fn spawn_hard_state(&mut self, hs: HardState) -> JoinHandle<io::Result<()>> {
        self.hs.seq += 1;
        self.hs.written = hs;
        let seq = self.hs.seq;
        let file = self.hs.file.clone();
        let lock = self.hs.lock.clone();
        let stats = self.counters.stats.clone();
        let m = self.counters.metrics.clone();
        // One hard-state write at a time: two in flight could tear both slots.
        glommio::spawn_local(async move {
            let _permit = lock
                .acquire_permit(1)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            let _busy = Busy::new(&m);
            let t = Instant::now();
            let mut b = file.alloc(BLOCK);
            format::encode_hard_state(&mut b, seq, &hs);
            file.write_at(b, (seq % 2) * BLOCK as u64).await?;
            file.fdatasync().await?;
            m.fsync_hard_state_seconds.record(t.elapsed());
            m.fsyncs.increment(1);
            bump(&stats, |s| s.fsyncs += 1);
            Ok(())
        })
        .detach()
    }

    /// DiskFirst: the entries become the log tail.
    fn take_tail(&mut self, entries: &[Entry]) {
        let first = entries[0].index;
        assert!(
            first <= self.last_index + 1 && first > self.base.0,
            "entries at {first} outside the log ({}..={})",
            self.base.0,
            self.last_index
        );
        if first <= self.disk_last {
            // Even if the truncating batch has to wait for space.
            self.forget_durable_from(first);
        }
        let l = entries.last().expect("non-empty");
        self.last_index = l.index;
        self.last_term = l.term;
    }

    /// MemFirst: takes entries into the buffer (replacing part of it, or of the disk log).
    fn accept_entries(&mut self, entries: &[Entry]) {
        let first = entries[0].index;
        assert!(
            first <= self.last_index + 1,
            "entries start at {first} after the log's end {}",
            self.last_index
        );
        assert!(
            first > self.base.0,
            "entries at {first} at or below the snapshot {}",
            self.base.0
        );
        match self.buffer.first().map(|e| e.index) {
            // Replaces part of the buffer only.
            Some(s) if first >= s => self.buffer.truncate((first - s) as usize),
            // Replaces the whole buffer and possibly part of what is written (the batch
            // then truncates: `write_batch` sees `first <= disk_last`).
            _ => self.buffer.clear(),
        }
        if first <= self.disk_last {
            self.forget_durable_from(first);
        }
        if self.buffer.is_empty() {
            self.buffer_since = Some(Instant::now());
        }
        self.buffer.extend_from_slice(entries);
        self.counters
            .metrics
            .buffered_entries
            .set(self.buffer.len() as f64);
        let l = entries.last().expect("non-empty");
        self.last_index = l.index;
        self.last_term = l.term;
    }

    /// Hands the buffer to flush workers; `ready` is reported after its last batch.
    async fn flush_buffer(&mut self, ready: Option<u64>) -> Result<(), WalError> {
        if !self.stalled.is_empty() {
            return Err(WalError::Stalled(
                "earlier writes wait for space; call retry first".into(),
            ));
        }
        if self.buffer.is_empty() {
            if let Some(n) = ready {
                self.report_when_previous_done(n);
            }
            return Ok(());
        }
        let entries = std::mem::take(&mut self.buffer);
        self.counters.metrics.buffered_entries.set(0.0);
        self.buffer_since = None;
        self.write_batches(ready, &entries).await
    }

    /// Splits entries into batches of at most `batch_bytes_max` and starts their writes.
    async fn write_batches(
        &mut self,
        ready: Option<u64>,
        entries: &[Entry],
    ) -> Result<(), WalError> {
        let mut rest = entries;
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = BATCH_HEADER_BYTES;
            while n < rest.len() {
                let b = record_bytes(rest[n].data.len());
                if n > 0 && format::align_up(bytes + b) > self.opts.batch_bytes_max {
                    break;
                }
                bytes += b;
                n += 1;
            }
            let (batch, tail) = rest.split_at(n);
            let last = tail.is_empty();
            if let Err(e) = self
                .write_batch(if last { ready } else { None }, batch)
                .await
            {
                if matches!(e, WalError::NoSpace(_)) {
                    self.stalled.push_front(Stalled {
                        ready,
                        entries: rest.to_vec(),
                    });
                }
                return Err(e);
            }
            rest = tail;
        }
        Ok(())
    }

    async fn write_batch(&mut self, ready: Option<u64>, batch: &[Entry]) -> Result<(), WalError> {
        let first = batch[0].index;
        let len = batch_bytes(batch);
        // Whether the batch replaces a suffix is decided here, against what is written.
        let truncate = first <= self.disk_last;
        // A truncation reaching below the current segment's start: the batch goes into a
        // new segment named `first`, written and synced BEFORE it is named (a rename may
        // replace a segment of the same name), and the superseded segments are deleted
        // only after that. Deleting first could let a crash resurrect entries an older
        // segment still holds but a deleted one had truncated.
        let reaches_back = self.segs.reaches_back(first);
        if truncate && reaches_back {
            self.drain().await?;
            return self.write_truncating_segment(ready, batch).await;
        }
        if self.segs.needs_segment(len) {
            // Batches of the old segment must be durable first: recovery treats damage
            // anywhere but in the last segment as corruption.
            self.drain().await?;
            self.segs.create(first, None).await?;
        }
        self.wait_for_worker().await;
        self.check_fatal()?;
        if truncate {
            self.forget_durable_from(first);
            self.forget_locs_from(first);
        }
        let (segment, pos, file) = self.segs.reserve(len);
        let mut buf = file.alloc(len);
        encode_batch(&mut buf, batch, self.commit.min(self.last_index), truncate);
        self.locs.push_back(BatchLoc {
            segment,
            offset: pos,
            total_bytes: len as u32,
            first_index: first,
            count: batch.len() as u32,
        });
        let last_index = batch.last().expect("non-empty").index;
        self.disk_last = last_index;
        let stats = self.counters.stats.clone();
        let m = self.counters.metrics.clone();
        let entries = batch.len() as u64;
        let task = glommio::spawn_local(async move {
            let _busy = Busy::new(&m);
            let t = Instant::now();
            file.write_at(buf, pos).await?;
            file.fdatasync().await?;
            m.fsync_batch_seconds.record(t.elapsed());
            m.fsyncs.increment(1);
            m.batches.increment(1);
            m.entries_written.increment(entries);
            m.bytes_written.increment(len as u64);
            m.entries_per_fsync.record(entries as f64);
            bump(&stats, |s| {
                s.fsyncs += 1;
                s.batches += 1;
                s.entries += entries;
                s.bytes_written += len as u64;
            });
            Ok(())
        })
        .detach();
        self.flights.push_back(Flight {
            ready,
            last_index,
            task,
        });
        Ok(())
    }

    /// What is written from `first` on no longer counts as this log's durable entries.
    fn forget_durable_from(&mut self, first: Index) {
        for f in self.flights.iter_mut() {
            f.last_index = f.last_index.min(first - 1);
        }
        self.persisted_index = self.persisted_index.min(first - 1);
    }

    /// Batch locations from `first` on no longer hold live entries.
    fn forget_locs_from(&mut self, first: Index) {
        while self.locs.back().is_some_and(|l| l.first_index >= first) {
            self.locs.pop_back();
        }
        if let Some(l) = self.locs.back_mut() {
            let end = l.first_index + l.count as u64;
            if end > first {
                l.count = (first - l.first_index) as u32;
            }
        }
    }

    /// See `write_batch`: a truncation below the current segment's first index.
    async fn write_truncating_segment(
        &mut self,
        ready: Option<u64>,
        batch: &[Entry],
    ) -> Result<(), WalError> {
        let first = batch[0].index;
        // Bookkeeping first (the batch's location goes after what is forgotten); restored
        // if the segment cannot be created, so a NoSpace retry starts from the same state.
        let saved = self.locs.clone();
        self.forget_durable_from(first);
        self.forget_locs_from(first);
        let commit = self.commit.min(self.last_index);
        match self.segs.create(first, Some((batch, commit))).await {
            Ok(loc) => self.locs.extend(loc),
            Err(e) => {
                self.locs = saved;
                return Err(e);
            }
        }
        self.segs.delete_superseded(first).await?;
        let last = batch.last().expect("non-empty").index;
        self.disk_last = last;
        self.persisted_index = last;
        if let Some(n) = ready {
            self.completed.push_back(n);
        }
        Ok(())
    }

    /// `reset`: discard the whole log; `snapshot`: the log now starts after it.
    async fn install_base(
        &mut self,
        reset: bool,
        snapshot: Option<(Index, Term)>,
    ) -> Result<(), WalError> {
        if reset {
            self.buffer.clear();
            self.counters.metrics.buffered_entries.set(0.0);
            self.buffer_since = None;
            self.stalled.clear();
        } else {
            // The log suffix after the snapshot is kept, buffered entries included. If they
            // cannot be written, nothing of this Ready has been taken yet: say so.
            self.flush_buffer(None).await.map_err(|e| match e {
                WalError::NoSpace(m) => WalError::Stalled(m),
                e => e,
            })?;
        }
        self.drain().await?;
        let base = snapshot.unwrap_or((0, 0));
        if reset {
            self.segs.delete_from(0).await?;
            self.locs.clear();
            self.base = base;
            self.last_index = base.0;
            self.last_term = base.1;
            self.disk_last = base.0;
            self.persisted_index = base.0;
            self.commit = base.0;
        } else if let Some(b) = snapshot {
            self.compact(b.0, b.1).await?;
            if self.last_index < b.0 {
                // The snapshot is ahead of the whole log: start after it.
                self.segs.delete_from(0).await?;
                self.locs.clear();
                self.last_index = b.0;
                self.last_term = b.1;
                self.disk_last = b.0;
                self.persisted_index = b.0;
            }
            self.commit = self.commit.max(b.0);
        }
        Ok(())
    }

    /// A snapshot at (`index`, `term`) is durable: drop the log up to it and delete the
    /// segments it wholly covers.
    pub async fn compact(&mut self, index: Index, term: Term) -> Result<(), WalError> {
        self.check_fatal()?;
        if index <= self.base.0 {
            return Ok(());
        }
        self.base = (index, term);
        while self
            .locs
            .front()
            .is_some_and(|l| l.first_index + l.count as u64 - 1 <= index)
        {
            self.locs.pop_front();
        }
        self.segs.delete_covered(self.base.0).await?;
        Ok(())
    }

    /// Entries `[lo, hi]` from disk (a lagging follower's catch-up) or from the MemFirst
    /// buffer. Only entries above the snapshot and already written can be read.
    pub async fn read_range(&mut self, lo: Index, hi: Index) -> Result<Vec<Entry>, WalError> {
        self.check_fatal()?;
        if lo <= self.base.0 || hi > self.last_index || lo > hi {
            return Err(WalError::Invalid(format!(
                "range {lo}..={hi} is outside the log ({}..={})",
                self.base.0 + 1,
                self.last_index
            )));
        }
        // Entries not written yet (stalled for space, or MemFirst's buffer) are read from
        // memory; they may replace a written suffix, so they win from their first index.
        let mem: Vec<Entry> = self
            .stalled
            .iter()
            .flat_map(|s| s.entries.iter())
            .chain(self.buffer.iter())
            .cloned()
            .collect();
        let from_buf = mem.first().map_or(Index::MAX, |e| e.index);
        if hi > self.persisted_index && from_buf > lo {
            // Not all of it is on disk yet: wait for the writes in flight.
            self.drain().await?;
        }
        let mut out = Vec::with_capacity((hi - lo + 1) as usize);
        let start = self
            .locs
            .partition_point(|l| l.first_index + l.count as u64 <= lo);
        let mut opened: Option<(Index, D::File)> = None;
        for l in self.locs.iter().skip(start) {
            if l.first_index > hi || l.first_index >= from_buf {
                break;
            }
            let seg_path = self.segs.path(l.segment);
            let bytes = if let Some(file) = self.segs.current_file(l.segment) {
                file.read_at(l.offset, l.total_bytes as usize).await
            } else {
                if opened.as_ref().is_none_or(|(s, _)| *s != l.segment) {
                    let f = self
                        .segs
                        .disk()
                        .open(&seg_path, false)
                        .await
                        .map_err(|e| fatal("opening", &seg_path, e))?;
                    opened = Some((l.segment, f));
                }
                opened
                    .as_ref()
                    .expect("opened")
                    .1
                    .read_at(l.offset, l.total_bytes as usize)
                    .await
            }
            .map_err(|e| fatal("reading", &seg_path, e))?;
            let hdr = format::BatchHeader::decode(&bytes)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    WalError::Fatal(format!(
                        "batch header at offset {} of {} no longer reads back",
                        l.offset,
                        seg_path.display()
                    ))
                })?;
            let entries = format::decode_batch(&bytes, &hdr).map_err(|(at, r)| {
                WalError::Fatal(format!(
                    "batch at offset {} of {} no longer reads back ({r} at +{at})",
                    l.offset,
                    seg_path.display()
                ))
            })?;
            for e in entries.into_iter().take(l.count as usize) {
                if e.index >= lo && e.index <= hi && e.index < from_buf {
                    out.push(e);
                }
            }
        }
        if let Some((_, f)) = opened {
            let _ = f.close().await;
        }
        // Later entries in `mem` replace earlier ones from their index on.
        let mut tail: Vec<Entry> = Vec::new();
        for e in mem {
            if let Some(first) = tail.first().map(|t| t.index)
                && e.index < first + tail.len() as u64
            {
                tail.truncate(e.index.saturating_sub(first) as usize);
            }
            tail.push(e);
        }
        out.extend(tail.into_iter().filter(|e| e.index >= lo && e.index <= hi));
        assert!(
            out.len() as u64 == hi - lo + 1 && out.windows(2).all(|w| w[1].index == w[0].index + 1),
            "read_range({lo}, {hi}) assembled a broken range"
        );
        Ok(out)
    }
}
