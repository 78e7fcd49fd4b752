//! Plain data of the protocol: ids, log entries, hard state, messages, snapshot metadata.
//!
//! Owns no state. Used by the Raft core, and later by the WAL (which persists `Entry` and
//! `HardState`) and the peer transport (which frames `Message`).

use bytes::Bytes;

use super::membership::Membership;

/// A node's identity. `0` is never a valid id (it means "none" on the wire).
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A log index. Index `0` is the empty prefix; the first entry has index 1.
pub type Index = u64;
/// Monotonic time in nanoseconds, as read by the driver. The core never reads a clock.
pub type Nanos = u64;

/// What an entry carries; the state machine applies only `Normal` payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A client command (opaque to the core).
    Normal = 0,
    /// The empty entry a new leader appends to commit its term.
    Noop = 1,
    /// A full membership configuration (see `Membership::encode`).
    Membership = 2,
}

impl EntryKind {
    /// Decodes the on-disk / on-wire tag.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Normal),
            1 => Some(Self::Noop),
            2 => Some(Self::Membership),
            _ => None,
        }
    }
}

/// One log entry. `data` is a `Bytes` slice of whatever buffer it arrived in: the core
/// clones the handle, never the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Payload bytes plus a fixed per-entry overhead, the unit of `append_bytes_max`.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state that must survive a crash before the node acts on it.
/// Invariant: `term` never decreases; `vote` changes at most once per term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    /// Candidate voted for in `term`; 0 if none.
    pub vote: NodeId,
    pub commit: Index,
}

/// Metadata of a state-machine snapshot. The snapshot bytes themselves are owned and moved
/// by the driver (streamed in chunks by the transport); the core only reasons about this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last log index the snapshot covers.
    pub index: Index,
    /// Term of the entry at `index`.
    pub term: Term,
    /// Membership in force at `index`.
    pub membership: Membership,
}

/// A protocol message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term (for `PreVote`, the term the sender would campaign in).
    pub term: Term,
    pub body: Body,
}

/// Why a message from a peer is refused before the core sees it (`Message::check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// Id 0 as sender or receiver.
    ReservedId,
    /// Append entries whose indexes do not run on from `prev_index + 1` one by one.
    NotContiguous { expected: Index, found: Index },
    /// An entry's term below the previous one's (or `prev_term`), above the message's
    /// term, or 0.
    BadTerm { index: Index, term: Term },
    /// A membership entry whose payload is not a valid configuration with a voter.
    BadMembership { index: Index },
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ReservedId => write!(f, "node id 0 as sender or receiver"),
            Self::NotContiguous { expected, found } => write!(
                f,
                "append entries not contiguous: index {found} where {expected} was due"
            ),
            Self::BadTerm { index, term } => write!(
                f,
                "entry {index} has term {term}: below the entry before it, above the \
                 message's term, or 0"
            ),
            Self::BadMembership { index } => write!(
                f,
                "membership entry {index} does not decode to a configuration with a voter"
            ),
        }
    }
}

impl Message {
    /// Checks what the core relies on and cannot check against its own state: a peer's
    /// bytes that break it (a gap in appended entries, terms going backwards, a membership
    /// payload that does not decode) would otherwise trip an invariant assertion. The
    /// transport refuses such a message at the boundary; `Raft::step` drops it as well.
    pub fn check(&self) -> Result<(), MessageError> {
        if self.from == 0 || self.to == 0 {
            return Err(MessageError::ReservedId);
        }
        let Body::Append {
            prev_index,
            prev_term,
            entries,
            ..
        } = &self.body
        else {
            return Ok(());
        };
        let mut expected = prev_index
            .checked_add(1)
            .ok_or(MessageError::NotContiguous {
                expected: *prev_index,
                found: *prev_index,
            })?;
        let mut floor = *prev_term;
        for e in entries {
            if e.index != expected {
                return Err(MessageError::NotContiguous {
                    expected,
                    found: e.index,
                });
            }
            if e.term == 0 || e.term < floor || e.term > self.term {
                return Err(MessageError::BadTerm {
                    index: e.index,
                    term: e.term,
                });
            }
            if e.kind == EntryKind::Membership
                && Membership::decode(&e.data).is_none_or(|m| m.voters.is_empty())
            {
                return Err(MessageError::BadMembership { index: e.index });
            }
            floor = e.term;
            expected = expected.checked_add(1).ok_or(MessageError::NotContiguous {
                expected,
                found: e.index,
            })?;
        }
        Ok(())
    }
}

/// Message bodies. Field meanings follow the Raft paper (section numbers in comments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Pre-vote request (thesis 9.6): would you vote for me in `term`? Changes no state.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResp {
        granted: bool,
    },
    /// RequestVote (paper 5.2, 5.4.1). `force` is set only by leadership transfer and
    /// lets the voter skip the "I heard from a live leader" check.
    Vote {
        last_index: Index,
        last_term: Term,
        force: bool,
    },
    VoteResp {
        granted: bool,
    },
    /// AppendEntries (paper 5.3).
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// Reply to `Append` or to an installed `Snapshot`.
    /// On success `index` is the last index known to match the leader's log.
    /// On rejection `index` is the rejected `prev_index` and (`hint_index`, `hint_term`)
    /// name the largest follower index <= it whose term <= the leader's `prev_term`
    /// (fast backtracking; thesis 5.3 end, etcd's findConflictByTerm).
    AppendResp {
        success: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// Heartbeat carrying a round number `seq` for ReadIndex confirmation and leases.
    /// `commit` is min(leader commit, follower match) and `commit_term` the leader's term at
    /// it: the follower commits it only if its own entry there has that term (Log Matching),
    /// because a follower that restarted may hold other entries than it once acknowledged.
    Heartbeat {
        commit: Index,
        commit_term: Term,
        seq: u64,
    },
    HeartbeatResp {
        seq: u64,
    },
    /// "Install this snapshot". Leader side: an instruction for the transport to stream the
    /// snapshot named by `meta`. Receiver side: stepped into the core once the bytes have
    /// arrived and been verified.
    Snapshot {
        meta: SnapshotMeta,
    },
    /// Leadership transfer: campaign now, skipping pre-vote (thesis 3.10).
    TimeoutNow,
}

impl Body {
    /// Short name for logs and scenario output.
    pub fn name(&self) -> &'static str {
        match self {
            Body::PreVote { .. } => "PreVote",
            Body::PreVoteResp { .. } => "PreVoteResp",
            Body::Vote { .. } => "Vote",
            Body::VoteResp { .. } => "VoteResp",
            Body::Append { .. } => "Append",
            Body::AppendResp { .. } => "AppendResp",
            Body::Heartbeat { .. } => "Heartbeat",
            Body::HeartbeatResp { .. } => "HeartbeatResp",
            Body::Snapshot { .. } => "Snapshot",
            Body::TimeoutNow => "TimeoutNow",
        }
    }
}
