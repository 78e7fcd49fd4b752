//! Key-value state machine shards.
//!
//! Owns the key-value data: each shard executor holds one `Partition` (the keys whose hash
//! routes to it) and applies the committed entries the raft core hands it. The command
//! format (`command`) is what client requests become in the log. Runs on the shard's pinned
//! executor; must not touch the log, the WAL or the network.
//!
//! Applying is deterministic: every replica applies the same entries to the same state and
//! reaches the same result, including refusals (a write that would exceed the state limit
//! is refused identically everywhere).

pub mod command;
pub mod partition;

pub use command::{Command, CommandError};
pub use partition::{Applied, Partition, Snapshot, Value, pair_bytes, route};
