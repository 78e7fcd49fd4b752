//! The Raft consensus core: a pure, deterministic state machine.
//!
//! Owns the protocol state of one node (term, vote, log, commit, roles, replication
//! progress, reads, membership). Runs in the raft core's task queue (on its CPU's shard
//! executor, or a dedicated one), where a driver loop feeds it inputs and executes its
//! numbered `Ready`s.
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
//!
//! A single-voter node, driven by hand:
//!
//! ```
//! use bytes::Bytes;
//! use ringkv_raft::{Config, Membership, Raft, Restore, Role};
//!
//! let restore = Restore { initial_membership: Membership::with_voters([1]), ..Restore::default() };
//! let mut raft = Raft::new(Config::new(1), restore).unwrap();
//! raft.campaign_now(); // a lone voter wins at once and appends its no-op
//! assert_eq!(raft.role(), Role::Leader);
//! let (index, _term) = raft.propose(vec![Bytes::from_static(b"k=v")]).unwrap();
//! let mut applied = Vec::new();
//! while raft.has_ready() {
//!     let rd = raft.ready();
//!     // A real driver writes rd.hard_state and rd.entries to its WAL and fdatasyncs here.
//!     if rd.must_persist() {
//!         raft.on_persisted(rd.number);
//!     }
//!     if let Some(last) = rd.committed.last() {
//!         applied.extend(rd.committed.iter().map(|e| e.index));
//!         raft.on_applied(last.index);
//!     }
//! }
//! assert_eq!(applied, vec![1, index]); // the no-op, then our entry
//! ```

mod config;
mod log;
mod membership;
mod node;
mod progress;
mod read;
mod rng;
mod types;

pub use config::{Config, ConfigError, Controls, Persistence};
pub use log::RaftLog;
pub use membership::{Membership, MembershipChange, MembershipError};
pub use node::{Counters, ProposeError, Raft, Ready, Restore, Role, Status};
pub use read::{ReadError, ReadOutcome, ReadPolicy};
pub use types::{
    Body, Entry, EntryKind, HardState, Index, Message, MessageError, Nanos, NodeId, SnapshotMeta,
    Term,
};
