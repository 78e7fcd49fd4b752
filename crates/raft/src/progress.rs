//! The leader's view of one follower or learner: how far its log matches, what is in flight.
//!
//! Owned by the Raft core while it leads; dropped on step-down. Pure data.

use std::collections::VecDeque;

use super::types::Index;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplState {
    /// Unknown match: one AppendEntries at a time until one succeeds.
    Probe,
    /// Known match: pipeline up to `inflight_appends_max` AppendEntries.
    Replicate,
    /// A snapshot at this index is being transferred; no appends until it is answered.
    Snapshot(Index),
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log. Only grows, with one exception: a
    /// follower found holding less than it acknowledged (a MemFirst crash, damage cut from
    /// its disk) is lowered to what it holds (`Counters::follower_regressions`); commit
    /// never goes back with it.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    pub state: ReplState,
    /// Last index of each AppendEntries in flight (Replicate state), oldest first.
    pub inflight: VecDeque<Index>,
    /// In Probe state: an AppendEntries was sent and not answered yet.
    pub probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Highest heartbeat round this peer acknowledged in the current term.
    pub acked_seq: u64,
    /// Commit index carried by the last AppendEntries sent to this peer.
    pub sent_commit: Index,
    /// Replicate state: the match index seen at the last heartbeat reply that found every
    /// missing entry already in flight. Unchanged at the next such reply means those appends
    /// were probably lost (see `Raft::handle_heartbeat_resp`).
    pub stalled_match: Option<Index>,
}

impl Progress {
    pub fn new(next_index: Index) -> Self {
        Self {
            match_index: 0,
            next_index,
            state: ReplState::Probe,
            inflight: VecDeque::new(),
            probe_sent: false,
            // Not heard from yet: a new leader cut off from everyone steps down after one
            // election timeout, not two.
            recent_active: false,
            acked_seq: 0,
            sent_commit: 0,
            stalled_match: None,
        }
    }

    /// Records a successful append up to `index`; returns whether the match advanced.
    pub fn on_success(&mut self, index: Index) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
        self.probe_sent = false;
        if self.state == ReplState::Probe {
            self.state = ReplState::Replicate;
        }
        advanced
    }

    pub fn become_probe(&mut self) {
        self.state = ReplState::Probe;
        self.inflight.clear();
        self.probe_sent = false;
        self.next_index = self.match_index + 1;
    }

    /// Whether another AppendEntries may go out now.
    pub fn can_send(&self, inflight_max: usize) -> bool {
        match self.state {
            ReplState::Probe => !self.probe_sent,
            ReplState::Replicate => self.inflight.len() < inflight_max,
            ReplState::Snapshot(_) => false,
        }
    }

    /// Records that entries up to `last` were sent.
    pub fn on_sent(&mut self, last: Index) {
        match self.state {
            ReplState::Probe => self.probe_sent = true,
            ReplState::Replicate => {
                self.next_index = last + 1;
                self.inflight.push_back(last);
            }
            ReplState::Snapshot(_) => unreachable!("append sent during snapshot transfer"),
        }
    }
}
