//! The Raft consensus core: a pure, deterministic state machine.
//!
//! Owns the protocol state of one node (term, vote, log, commit, roles, replication
//! progress, reads, membership). Runs on the dedicated raft core's executor, where a driver
//! loop feeds it inputs and executes its numbered `Ready`s.
//!
//! Must not touch: sockets, files, clocks, random sources, threads or `.await`. Time arrives
//! as `tick()` calls and `Nanos` values; randomness as `Config::seed`. Everything the node
//! must do comes out of `Raft::ready()`. That is what lets one seeded simulator drive it.
//!
//! Inputs: `tick`, `step`, `propose`, `propose_membership`, `transfer_leader`, `read`,
//! `on_persisted`, `on_applied`, `compact`. Output: `Ready` (hard state and entries to
//! persist, a snapshot to install, messages that are safe to send, committed entries, read
//! results). Messages that promise durability (votes, and append acknowledgements under
//! `Persistence::DiskFirst`) are held inside the core until `on_persisted` covers them.

mod config;
mod log;
mod membership;
mod node;
mod progress;
mod read;
mod rng;
mod types;

pub use config::{Config, ConfigError, Persistence};
pub use log::RaftLog;
pub use membership::{Membership, MembershipChange, MembershipError};
pub use node::{ProposeError, Raft, Ready, Restore, Role, Status};
pub use read::{ReadError, ReadOutcome, ReadPolicy};
pub use types::{
    Body, Entry, EntryKind, HardState, Index, Message, Nanos, NodeId, SnapshotMeta, Term,
};
