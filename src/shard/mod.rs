//! Key-value state machine shards (not built yet; see the node issue).
//!
//! Will own one partition of the key space per pinned executor and apply committed
//! entries to it. Must not touch the log or the network.
