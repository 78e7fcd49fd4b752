//! Client and peer networking (not built yet; see the node issue).
//!
//! Will own connections and framing on each pinned executor. Must not touch the Raft core
//! or a shard's state directly: it hands requests on through bounded channels.
