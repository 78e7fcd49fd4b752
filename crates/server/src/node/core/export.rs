//! The raft core's metrics: the pure core's counters and state exported as Prometheus
//! series (`crate::metrics::RaftMetrics`), and the errors some counters call for.
//!
//! Part of the raft core's driver (its task queue). Touches only its cached handles (a few
//! atomic stores a turn); `src/raft` itself knows nothing of metrics.

use super::Core;
use crate::metrics::RaftMetrics;
use ringkv_raft::{Counters, NodeId, Role, Term};

/// What was last exported, to export only what moved.
pub(super) struct Export {
    /// Prometheus handles (no-ops without a recorder).
    pub metrics: RaftMetrics,
    /// The core's counters as last exported.
    pub counters_seen: Counters,
    /// Index into `metrics::ROLES` last exported.
    pub role_shown: usize,
    /// (term, leader) last seen, for `ringkv_raft_leader_changes_total`.
    pub leader_seen: (Term, NodeId),
}

impl Export {
    pub fn new() -> Self {
        Self {
            metrics: RaftMetrics::new(),
            counters_seen: Counters::default(),
            role_shown: usize::MAX,
            leader_seen: (0, 0),
        }
    }
}

impl Core {
    /// Exports the pure core's counters moved since the last call. Called after every input
    /// that can start a heartbeat round (tick, read, ready), so each call sees at most one
    /// new round and the reads it carried (more are recorded at their average).
    pub(super) fn export_counters(&mut self) {
        let c = self.raft.counters();
        let was = self.export.counters_seen;
        if c == was {
            return;
        }
        let m = &self.export.metrics;
        m.pre_votes
            .increment(c.pre_votes_started - was.pre_votes_started);
        m.elections_started
            .increment(c.elections_started - was.elections_started);
        m.elections_won
            .increment(c.elections_won - was.elections_won);
        m.lease_reads.increment(c.lease_reads - was.lease_reads);
        if c.follower_regressions > was.follower_regressions {
            m.follower_regressions
                .increment(c.follower_regressions - was.follower_regressions);
            tracing::warn!(
                node = self.id,
                "a follower holds less than it had acknowledged (damaged or lost disk \
                 data); re-sending it from what it holds"
            );
        }
        if c.committed_conflicts > was.committed_conflicts {
            tracing::error!(
                node = self.id,
                refused = c.committed_conflicts - was.committed_conflicts,
                "refused appends that conflict with entries this node committed (DiskFirst): \
                 some node's storage lied or a peer is broken; committed entries are kept"
            );
        }
        if c.rival_leaders > was.rival_leaders {
            tracing::error!(
                node = self.id,
                term = self.raft.term(),
                "refused leader messages from another node claiming this leader's own term: a \
                 peer is broken"
            );
        }
        if c.messages_refused > was.messages_refused {
            tracing::error!(
                node = self.id,
                refused = c.messages_refused - was.messages_refused,
                "the core refused malformed peer messages the transport let through"
            );
        }
        let rounds = c.read_index_rounds - was.read_index_rounds;
        if rounds > 0 {
            m.read_index_rounds.increment(rounds);
            let reads = c.read_index_reads - was.read_index_reads;
            m.reads_per_round
                .record_many((reads / rounds) as f64, rounds as usize);
        }
        self.export.counters_seen = c;
    }

    /// Sets the raft gauges (once per loop turn: a few atomic stores).
    pub(super) fn export_gauges(&mut self) {
        let m = &self.export.metrics;
        let (term, leader) = (self.raft.term(), self.raft.leader());
        m.term.set(term as f64);
        m.leader_id.set(leader as f64);
        m.commit_index.set(self.raft.commit() as f64);
        m.applied_index.set(self.shared.applied_min() as f64);
        m.last_index.set(self.raft.last_index() as f64);
        m.writes_pending.set(self.req.writes.len() as f64);
        m.reads_pending.set(self.req.reads.len() as f64);
        m.calls_parked.set(self.req.parked.len() as f64);
        m.calls_forwarded.set(self.req.forwards.len() as f64);
        if leader != 0 && (term, leader) != self.export.leader_seen {
            m.leader_changes.increment(1);
        }
        if leader != 0 || term != self.export.leader_seen.0 {
            self.export.leader_seen = (term, leader);
        }
        // Indexes into metrics::ROLES.
        let role = match self.raft.role() {
            Role::Follower if self.raft.membership().is_learner(self.id) => 1,
            Role::Follower => 0,
            Role::PreCandidate => 2,
            Role::Candidate => 3,
            Role::Leader => 4,
        };
        if role != self.export.role_shown {
            m.set_role(role);
            self.export.role_shown = role;
        }
    }
}
