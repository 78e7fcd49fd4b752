//! The ringkv node (`ringkv serve`): thread-per-core executors, the raft core's driver,
//! the io_uring write-ahead log, the peer transport and the key-value shards.
//!
//! Layout (ARCHITECTURE.md): `node` owns the executors and the queues between them; `wal`,
//! `net` and `shard` are the I/O-owning parts that drive the pure core (`ringkv-raft`);
//! `config`, `logging` and `metrics` serve them all.

pub mod config;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod node;
pub mod shard;
pub mod wal;
