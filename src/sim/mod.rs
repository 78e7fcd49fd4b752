//! The deterministic cluster simulator and its checkers (the simulator issue).
//!
//! Owns simulated time, network, disks and clients for a cluster of real Raft cores; pure
//! and single-threaded, driven by a seed. Must not touch real I/O or clocks.

pub mod checker;
