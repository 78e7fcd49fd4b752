//! ringkv's etcd data model: what a key-value shard keeps and how revisions are decided.
//!
//! Pure code: no I/O, clock, threads or async, so the node's executors and the simulator run
//! exactly the same store. `types` holds etcd-shaped requests, responses and errors;
//! `command` the log payload of every write; `hash` the hash of one version record, which a
//! store hash adds up; `reference` (tests and the `reference` feature) the plain model of
//! etcd's semantics the real store is checked against; `controls` the deliberate bugs the
//! negative controls of the simulator and the fault campaign switch on (honoured only with
//! `negative-controls`). The
//! design (who decides a txn's outcome and a revision, what waits on what) is in
//! ARCHITECTURE.md, "The etcd data model across shards". Must not touch the log, the
//! network or any executor.

// Keys and values are `bytes::Bytes`: callers build them with the same crate.
pub use bytes;
pub mod codec;
pub mod command;
pub mod controls;
pub mod hash;
pub mod lessor;
pub mod mvcc;
pub mod parts;
pub mod read;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
pub mod sequencer;
pub mod shard;
pub mod snapshot;
pub mod store;
pub mod types;

pub use codec::{decode_response, encode_response};
pub use command::{Command, CommandError, decode_range, encode_range};
pub use controls::Controls;
pub use parts::Index;
pub use sequencer::Sequencer;
pub use shard::{
    Report, Resolution, Routed, ShardStore, StoreEvent, ToSequencer, participants, route,
};
pub use store::Store;
pub use types::*;
