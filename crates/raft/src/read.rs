//! Read bookkeeping of a leader: ReadIndex rounds, the lease, reads waiting to be applied.
//!
//! Owned by the Raft core; pure data. The core decides when a read is confirmed; this module
//! only keeps the queues in order and bounded.

use std::collections::VecDeque;

use super::types::{Index, Nanos, NodeId};

/// How a read is served (the config's `read_consistency` policies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPolicy {
    /// ReadIndex: confirmed by a quorum heartbeat round sent after the read arrived.
    Linearizable,
    /// Served by the leader while its lease holds; falls back to ReadIndex otherwise.
    Lease,
    /// Local state of any node, possibly stale.
    Eventual,
}

/// Why a read cannot be served here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// This node is not (or no longer) the leader; `leader` is a hint, 0 if unknown.
    NotLeader { leader: NodeId },
    /// Too many reads are pending (`pending_reads_max`).
    Backpressure,
}

/// A finished read: `Ok(index)` means the local state machine has applied through `index`
/// and the read may be served from it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOutcome {
    pub id: u64,
    pub result: Result<Index, ReadError>,
}

#[derive(Debug, Default)]
pub struct Reads {
    /// Arrived before this leader's no-op committed: (id, policy).
    pub awaiting_noop: Vec<(u64, ReadPolicy)>,
    /// Recorded (id, read_index), waiting for the next heartbeat round to be sent.
    pub awaiting_round: Vec<(u64, Index)>,
    /// Sent in round `seq`: (seq, id, read_index), seq non-decreasing.
    pub in_round: VecDeque<(u64, u64, Index)>,
    /// Confirmed (id, read_index), waiting for applied >= read_index.
    pub confirmed: VecDeque<(u64, Index)>,
    /// Finished reads for the next `Ready`.
    pub done: Vec<ReadOutcome>,
    /// Send time of each heartbeat round not yet acknowledged by a quorum: (seq, time).
    pub round_sent_at: VecDeque<(u64, Nanos)>,
    /// Send time of the latest round a voter quorum acknowledged in this term.
    pub lease_start: Option<Nanos>,
}

impl Reads {
    /// Reads not yet confirmed or finished, for the `pending_reads_max` limit.
    pub fn pending(&self) -> usize {
        self.awaiting_noop.len()
            + self.awaiting_round.len()
            + self.in_round.len()
            + self.confirmed.len()
    }

    /// Fails every read that is not yet confirmed (step-down). Confirmed reads stay: their
    /// read index was valid, and serving them once applied is still linearizable.
    pub fn fail_unconfirmed(&mut self, leader: NodeId) {
        let err = Err(ReadError::NotLeader { leader });
        let ids = self
            .awaiting_noop
            .drain(..)
            .map(|(id, _)| id)
            .chain(self.awaiting_round.drain(..).map(|(id, _)| id))
            .chain(self.in_round.drain(..).map(|(_, id, _)| id));
        self.done.extend(
            ids.map(|id| ReadOutcome { id, result: err })
                .collect::<Vec<_>>(),
        );
        self.round_sent_at.clear();
        self.lease_start = None;
    }

    /// Moves reads of rounds up to `seq` to `confirmed`; records the lease start.
    pub fn on_quorum_round(&mut self, seq: u64) {
        while self.in_round.front().is_some_and(|r| r.0 <= seq) {
            let (_, id, index) = self.in_round.pop_front().expect("front exists");
            self.confirmed.push_back((id, index));
        }
        while let Some(&(s, at)) = self.round_sent_at.front() {
            if s > seq {
                break;
            }
            self.round_sent_at.pop_front();
            if s == seq {
                self.lease_start = Some(self.lease_start.map_or(at, |l| l.max(at)));
            }
        }
    }

    /// Finishes confirmed reads whose index is applied.
    pub fn on_applied(&mut self, applied: Index) {
        let done = &mut self.done;
        self.confirmed.retain(|&(id, index)| {
            let ready = index <= applied;
            if ready {
                done.push(ReadOutcome {
                    id,
                    result: Ok(index),
                });
            }
            !ready
        });
    }
}
