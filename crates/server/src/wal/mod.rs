//! The write-ahead log: segments on io_uring, flush workers, hard state, snapshots.
//!
//! Owns one node's data directory (`<data_dir>/wal/`, `<data_dir>/hardstate`,
//! `<data_dir>/snapshots/`). Runs on the raft core's executor: `Wal::persist` takes what a
//! `Ready` must make durable, flush-worker tasks on the same executor write and fdatasync
//! up to `flush_workers` batches at once, and `Wal::wait_flight` (the driver, beside its
//! queue) or `Wal::next_persisted` hand back Ready numbers strictly in order for
//! `Raft::on_persisted`. Must not touch protocol state or
//! the state machine; it stores bytes and says when they are durable.
//!
//! - `format`: byte layouts and checksums (pure).
//! - `scan`: the recovery judgement, torn tail versus corruption (pure; shared with
//!   `ringkv wal check`).
//! - `disk`: the file layer: glommio `DmaFile` (O_DIRECT) in production, with the
//!   `crash-sim` power-cut model as a feature; `SimDisk` for crash tests.
//! - `log`: the writer (`Wal`): persist, batching, flush workers, hard state, reads.
//! - `recovery`: opening a log (`Wal::open`): verify, cut a torn tail, rebuild the index.
//! - `segments`: the segment files: naming, rotation, the spare, deleting covered or
//!   superseded segments.
//! - `snapshot`: snapshot files.
//! - `inspect`: `ringkv wal check` and `ringkv wal dump` (read-only, std I/O).
//! - `meta`: the node and cluster ids of the data directory (start-up only, std I/O).

pub mod disk;
pub mod format;
pub mod inspect;
mod log;
pub mod meta;
mod recovery;
pub mod scan;
mod segments;
pub mod snapshot;

pub use disk::{DmaDisk, SimDisk};
pub use log::{MemFirstPolicy, Wal, WalError, WalOptions, WalStats};
pub use recovery::Recovered;
pub use snapshot::{Snapshot, SnapshotStore};
