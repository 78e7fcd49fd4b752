//! The io_uring write-ahead log (not built yet; see the WAL issue).
//!
//! Will own the segment files of one node and run on the raft core's executor and its
//! flush workers. Must not touch protocol state: it persists what a `Ready` hands it and
//! reports `Persisted(n)`.
