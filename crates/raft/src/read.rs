//! Reads of the Raft core: ReadIndex rounds, the leader lease, reads waiting to be served.
//!
//! Owns `Reads` (the heartbeat round sequence, the read queues, the lease's start and the
//! rounds that may renew it), which `Raft` keeps as one field, and the `Raft` methods that
//! drive it: `read`, `lease_valid`, `lease_expiry`, the rounds (`start_round`,
//! `handle_heartbeat_resp`, `advance_rounds`) and `in_lease`, the voter side of the lease.
//! Part of the core: it runs wherever the core runs, in the raft core's task queue, inside
//! the same `Raft` calls as the rest of the core.
//!
//! Must not touch: sockets, files, clocks, random sources, threads or `.await` (the core is
//! pure). The lease is measured in the `Nanos` the driver passes in; rounds leave as
//! messages in the next `Ready`, answers as its `reads`.

use std::collections::VecDeque;

use super::node::{Raft, Role};
use super::progress::ReplState;
use super::types::{Body, Index, Nanos, NodeId};

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

/// Read and lease state of a node. Only this module reads or writes the fields; the rest
/// of the core goes through the methods, so the queues stay in order and bounded.
#[derive(Debug, Default)]
pub struct Reads {
    /// Last heartbeat round sent (monotonic for the node's lifetime).
    hb_seq: u64,
    /// Arrived before this leader's no-op committed: (id, policy).
    awaiting_noop: Vec<(u64, ReadPolicy)>,
    /// Recorded (id, read_index), waiting for the next heartbeat round to be sent.
    awaiting_round: Vec<(u64, Index)>,
    /// Sent in round `seq`: (seq, id, read_index), seq non-decreasing.
    in_round: VecDeque<(u64, u64, Index)>,
    /// Confirmed (id, read_index), waiting for applied >= read_index.
    confirmed: VecDeque<(u64, Index)>,
    /// Finished reads for the next `Ready`.
    done: Vec<ReadOutcome>,
    /// Send time of each heartbeat round not yet acknowledged by a quorum: (seq, time).
    round_sent_at: VecDeque<(u64, Nanos)>,
    /// Send time of the latest round a voter quorum acknowledged in this term.
    lease_start: Option<Nanos>,
    /// A TimeoutNow went out in this term. Its forced vote skips the voters' lease check and
    /// may arrive at any later time, so this leader serves no more lease reads in this term.
    timeout_now_sent: bool,
}

impl Reads {
    /// Reads not yet confirmed or finished, for the `pending_reads_max` limit.
    fn pending(&self) -> usize {
        self.awaiting_noop.len()
            + self.awaiting_round.len()
            + self.in_round.len()
            + self.confirmed.len()
    }

    /// Whether finished reads wait for the next `Ready`.
    pub(super) fn has_done(&self) -> bool {
        !self.done.is_empty()
    }

    /// Whether recorded reads wait for a heartbeat round to be sent.
    pub(super) fn awaits_round(&self) -> bool {
        !self.awaiting_round.is_empty()
    }

    /// Hands the finished reads over to a `Ready`.
    pub(super) fn take_done(&mut self) -> Vec<ReadOutcome> {
        std::mem::take(&mut self.done)
    }

    /// A new leader term: no lease yet, no TimeoutNow sent yet.
    pub(super) fn start_term(&mut self) {
        debug_assert_eq!(self.pending(), self.confirmed.len());
        self.round_sent_at.clear();
        self.lease_start = None;
        self.timeout_now_sent = false;
    }

    /// Ends the lease; rounds already sent may still start a new one.
    pub(super) fn drop_lease(&mut self) {
        self.lease_start = None;
    }

    /// Ends the lease, and lets no round sent so far start a new one.
    pub(super) fn revoke_lease(&mut self) {
        self.lease_start = None;
        self.round_sent_at.clear();
    }

    /// A TimeoutNow went out: no more lease reads in this term (see `timeout_now_sent`).
    pub(super) fn on_timeout_now_sent(&mut self) {
        self.timeout_now_sent = true;
    }

    /// Fails every read that is not yet confirmed (step-down). Confirmed reads stay: their
    /// read index was valid, and serving them once applied is still linearizable.
    pub(super) fn fail_unconfirmed(&mut self, leader: NodeId) {
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
    fn on_quorum_round(&mut self, seq: u64) {
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
    pub(super) fn on_applied(&mut self, applied: Index) {
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

impl Raft {
    /// Whether a lease read would be served locally at `now`.
    pub fn lease_valid(&self, now: Nanos) -> bool {
        self.lease_expiry().is_some_and(|end| now < end)
    }

    /// Until when (exclusive) this leader may serve lease reads at its commit index without
    /// a round trip; `None` when it may not at all (not leader, no-op of its term not yet
    /// committed, or handing leadership over). The driver publishes it to the shards.
    pub fn lease_expiry(&self) -> Option<Nanos> {
        if self.role != Role::Leader
            || self.transfer.is_some()
            || self.reads.timeout_now_sent
            || !self.noop_committed()
        {
            return None;
        }
        self.reads.lease_start.map(|s| s + self.lease_ns())
    }

    /// Requests a read at `policy`. The answer comes in a later `Ready::reads`.
    pub fn read(&mut self, id: u64, policy: ReadPolicy, now: Nanos) {
        self.observe_time(now);
        if policy == ReadPolicy::Eventual {
            self.reads.done.push(ReadOutcome {
                id,
                result: Ok(self.applied),
            });
            return;
        }
        if self.role != Role::Leader {
            let err = Err(ReadError::NotLeader {
                leader: self.leader,
            });
            self.reads.done.push(ReadOutcome { id, result: err });
            return;
        }
        if self.reads.pending() >= self.cfg.pending_reads_max {
            self.reads.done.push(ReadOutcome {
                id,
                result: Err(ReadError::Backpressure),
            });
            return;
        }
        if !self.noop_committed() {
            self.reads.awaiting_noop.push((id, policy));
            return;
        }
        self.record_read(id, policy);
    }

    /// The lease a quorum round buys: lease x (1 - drift bound).
    fn lease_ns(&self) -> Nanos {
        if self.control(|c| c.lease_ignores_drift) {
            return self.cfg.lease_duration_ns;
        }
        self.cfg.effective_lease_ns()
    }

    /// A node that heard from a live leader within the minimum election timeout, or leads,
    /// refuses to help depose it (CheckQuorum's vote refusal; the base of lease safety).
    pub(super) fn in_lease(&self) -> bool {
        self.role == Role::Leader || self.leader_contact_ticks < self.cfg.election_timeout_min_ticks
    }

    /// This leader's no-op just committed: record the reads that waited for it.
    pub(super) fn record_noop_reads(&mut self) {
        // These reads waited for an unknown time: a lease checked now would be checked
        // against a stale clock reading, so every one of them takes a ReadIndex round.
        let waiting = std::mem::take(&mut self.reads.awaiting_noop);
        for (id, _) in waiting {
            self.record_read(id, ReadPolicy::Linearizable);
        }
    }

    fn record_read(&mut self, id: u64, policy: ReadPolicy) {
        let index = self.commit;
        if policy == ReadPolicy::Lease && self.lease_valid(self.now) {
            self.counters.lease_reads += 1;
            // The state must include everything committed when the lease was checked.
            if index <= self.applied {
                self.reads.done.push(ReadOutcome {
                    id,
                    result: Ok(index),
                });
            } else {
                self.reads.confirmed.push_back((id, index));
            }
            return;
        }
        if self.control(|c| c.read_index_without_quorum) {
            self.reads.confirmed.push_back((id, index));
            self.reads.on_applied(self.applied);
            return;
        }
        self.reads.awaiting_round.push((id, index));
        if self.membership().voters.len() == 1 && self.membership().is_voter(self.id) {
            self.start_round(); // a single voter is its own quorum
        }
    }

    /// Sends one sequence-tagged heartbeat to every peer; all reads recorded so far ride on it.
    pub(super) fn start_round(&mut self) {
        self.reads.hb_seq += 1;
        let seq = self.reads.hb_seq;
        if !self.reads.awaiting_round.is_empty() {
            self.counters.read_index_rounds += 1;
            self.counters.read_index_reads += self.reads.awaiting_round.len() as u64;
        }
        for (id, index) in self.reads.awaiting_round.drain(..) {
            self.reads.in_round.push_back((seq, id, index));
        }
        // A round sent during a leadership transfer still confirms ReadIndex reads but starts
        // no lease: a voter may ack it and then grant the target's forced vote (which skips
        // the lease check), so a lease from it could outlive an abandoned transfer while the
        // target leads (lease.txt, "Rounds acknowledged DURING a transfer").
        if self.transfer.is_none() {
            self.reads.round_sent_at.push_back((seq, self.now));
        }
        let peers: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.match_index))
            .collect();
        for (id, matched) in peers {
            let commit = self.commit.min(matched);
            // Below the snapshot the term is unknown: announce nothing there (term 0 never
            // matches an entry).
            let commit_term = self.log.term(commit).unwrap_or(0);
            self.send(
                id,
                Body::Heartbeat {
                    commit,
                    commit_term,
                    seq,
                },
            );
        }
        self.advance_rounds();
    }

    pub(super) fn handle_heartbeat_resp(&mut self, from: NodeId, seq: u64) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.acked_seq = pr.acked_seq.max(seq);
        let behind = pr.match_index < last;
        // In Replicate state with every missing entry already in flight (or the pipeline
        // full), `send_append` sends nothing, so appends lost on the way would never be
        // retried and an idle follower would stay behind forever (paper 5.3: the leader
        // retries indefinitely). If two heartbeat replies in a row find it so with no
        // progress of the match index, fall back to probing from the match index: that
        // resends what is missing, or a snapshot if it has been compacted away.
        let all_in_flight = behind
            && pr.state == ReplState::Replicate
            && (pr.next_index > last || !pr.can_send(self.cfg.inflight_appends_max));
        let stalled = all_in_flight && pr.stalled_match == Some(pr.match_index);
        pr.stalled_match = if all_in_flight && !stalled {
            Some(pr.match_index)
        } else {
            None
        };
        if stalled {
            pr.become_probe();
        }
        if behind {
            if pr.state == ReplState::Probe {
                pr.probe_sent = false; // the peer is alive: resend the probe
            }
            self.send_append(from);
        }
        self.advance_rounds();
    }

    /// Confirms every round a voter quorum has acknowledged in this term.
    fn advance_rounds(&mut self) {
        let m = self.membership();
        let mut acked: Vec<u64> = m
            .voters
            .iter()
            .map(|&v| {
                if v == self.id {
                    self.reads.hb_seq
                } else {
                    self.progress[&v].acked_seq
                }
            })
            .collect();
        if acked.is_empty() {
            return;
        }
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let q = acked[m.quorum() - 1];
        self.reads.on_quorum_round(q);
        self.reads.on_applied(self.applied);
    }
}
