//! ringkv: a Raft-replicated key-value server, thread-per-core on io_uring.
//!
//! Layout (see ARCHITECTURE.md): `raft` is the pure consensus core; `wal`, `net` and
//! `shard` are the I/O-owning parts that drive it.

pub mod bench;
#[cfg(feature = "etcd")]
pub mod bench_etcd;
pub mod chaos;
pub mod client;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod native_client;
pub mod net;
pub mod node;
pub mod raft;
pub mod shard;
pub mod sim;
pub mod testkit;
pub mod top;
pub mod wal;
