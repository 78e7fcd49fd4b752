//! Calls in progress on the raft core: client writes proposed and waiting to commit,
//! ReadIndex reads waiting for their round, calls forwarded to the leader, reads forwarded
//! to us, and calls parked while no leader is known; how a call is carried out (proposed,
//! read, forwarded or parked) and answered, and its deadline.
//!
//! Part of the raft core's driver (its task queue; same state): `Requests` owns the
//! bookkeeping, the `impl Core` block here the decisions that need the core. Must not touch
//! a shard's state: answers go out through the shards' queues (`Core::out`) or the peer
//! transport.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Core;
use crate::net::wire::ClientFrame;
use crate::node::{AdminCall, CoreAnswer, LeaseCall, ReadTarget, ReqId, ToShard};
use crate::shard::{Command, write_cost};
use crate::wal::meta::new_incarnation;
use ringkv_proto::outcome::{ApiError, NoLeaderReason, Outcome, TimeoutKind, UnavailableReason};
use ringkv_raft::{Index, NodeId, ProposeError, ReadPolicy, Role, Term};

/// Calls held while no leader is known (beyond it: 503 at once).
const PARKED_MAX: usize = 4096;

/// Who waits for a call's answer.
#[derive(Clone, Copy, Debug)]
pub(super) enum Origin {
    Shard(usize, ReqId),
    /// A follower's forwarded call, by the follower's id for it.
    Peer(NodeId, u64),
    /// The raft core's own proposal (a lease's revoke or checkpoint): nobody waits.
    Core,
}

pub(super) enum Op {
    Write(Bytes),
    Read {
        target: ReadTarget,
        policy: ReadPolicy,
    },
    Admin(AdminCall),
    Lease(LeaseCall),
}

pub(super) struct Waiting {
    pub term: Term,
    pub origin: Origin,
    pub deadline: Instant,
}

pub(super) struct ReadWait {
    pub origin: Origin,
    pub target: ReadTarget,
    pub policy: ReadPolicy,
    pub deadline: Instant,
}

pub(super) struct Forwarded {
    /// The leader it went to: only its reply counts.
    pub to: NodeId,
    pub shard: usize,
    pub req: ReqId,
    pub write: bool,
    pub deadline: Instant,
}

pub(super) struct Parked {
    pub origin: Origin,
    pub op: Op,
    pub deadline: Instant,
}

/// Calls the raft core is carrying out, by what they wait for. Invariant: every call is in
/// exactly one of these maps until answered once (answered early, at its deadline by
/// `expire`, or at shutdown).
pub(super) struct Requests {
    /// Proposed writes by log index: answered when that index commits (in their term).
    pub writes: HashMap<Index, Waiting>,
    /// ReadIndex reads by the id given to the core.
    pub reads: HashMap<u64, ReadWait>,
    pub next_read: u64,
    /// Calls forwarded to the leader, by the id sent with them.
    pub forwards: HashMap<u64, Forwarded>,
    pub next_fwd: u64,
    /// Reads forwarded to us, handed to their owner shard: token -> (peer, its id).
    pub serving: HashMap<u64, (NodeId, u64)>,
    /// Calls held while no leader is known (at most `PARKED_MAX`), oldest first.
    pub parked: VecDeque<Parked>,
    /// Writes a leader holds to propose together (`raft.replication.batch_delay_ms`),
    /// and when the first of them came.
    pub held: Vec<(Bytes, Origin, Instant)>,
    pub held_since: Option<Instant>,
}

impl Requests {
    pub fn new() -> Self {
        Self {
            writes: HashMap::new(),
            reads: HashMap::new(),
            next_read: 1,
            forwards: HashMap::new(),
            // Ids from a random start: replies to a previous process of this node (still
            // queued at the leader when it restarted) must not match this process's calls.
            next_fwd: new_incarnation(),
            serving: HashMap::new(),
            parked: VecDeque::new(),
            held: Vec::new(),
            held_since: None,
        }
    }

    /// When the held writes must be proposed (`None`: none held).
    pub fn held_due(&self, delay: Duration) -> Option<Instant> {
        self.held_since.map(|t| t + delay)
    }

    /// Every call still waiting, with the error each gets when the node stops.
    pub fn drain_for_shutdown(&mut self) -> Vec<(Origin, ApiError)> {
        let mut left: Vec<(Origin, ApiError)> = Vec::new();
        left.extend(
            self.writes
                .drain()
                .map(|(_, w)| (w.origin, timeout(TimeoutKind::Write))),
        );
        left.extend(
            self.forwards
                .drain()
                .map(|(_, f)| (Origin::Shard(f.shard, f.req), forward_late(f.write))),
        );
        left.extend(
            self.reads
                .drain()
                .map(|(_, r)| (r.origin, ApiError::Stopping)),
        );
        left.extend(
            self.parked
                .drain(..)
                .map(|p| (p.origin, ApiError::Stopping)),
        );
        // Held writes were never proposed: nothing was written.
        self.held_since = None;
        left.extend(self.held.drain(..).map(|h| (h.1, ApiError::Stopping)));
        left.extend(
            self.serving
                .drain()
                .map(|(_, (from, id))| (Origin::Peer(from, id), ApiError::Stopping)),
        );
        left
    }
}

impl Core {
    pub(super) fn answer(&mut self, origin: Origin, outcome: Outcome) {
        match origin {
            Origin::Shard(s, req) => self.out.push((
                s,
                ToShard::Answer {
                    req,
                    answer: CoreAnswer::Done(outcome),
                },
            )),
            Origin::Peer(to, id) => {
                // The follower waits at most request_timeout_ms for it.
                let deadline = Instant::now() + self.request_timeout;
                self.transport
                    .send_client(to, ClientFrame::Reply { id, outcome }, deadline);
            }
            Origin::Core => {
                if let Err(e) = outcome {
                    tracing::debug!(node = self.id, "the raft core's own proposal: {e}");
                }
            }
        }
    }

    pub(super) fn leader_hint(&self) -> (Option<NodeId>, Option<String>) {
        let l = self.raft.leader();
        match self.addresses.get(&l) {
            Some(a) if l != 0 => (Some(l), Some(a.to_string())),
            _ => (None, None),
        }
    }

    pub(super) fn not_leader(&self) -> ApiError {
        let (leader_id, leader_address) = self.leader_hint();
        ApiError::NotLeader {
            leader_id,
            leader_address,
        }
    }

    /// Carries out a client call: on the leader, propose or read; on a follower, forward a
    /// shard's call to the leader (never a peer's: one hop only) or park it until a
    /// leader is known.
    pub(super) fn submit(&mut self, origin: Origin, op: Op, deadline: Instant) {
        if self.raft.role() == Role::Leader {
            match op {
                Op::Write(cmd) if self.state_full(&cmd) => {
                    // etcd's quota: the write is refused and the NOSPACE alarm raised (in
                    // the log, so every member refuses writes until it is disarmed).
                    self.raise_nospace(deadline);
                    let e = ApiError::StateFull {
                        state_bytes_max: self.state_bytes_max,
                    };
                    self.answer(origin, Err(e));
                }
                Op::Write(cmd) if self.batch_delay.is_zero() => {
                    self.propose_writes(vec![(cmd, origin, deadline)])
                }
                Op::Write(cmd) => {
                    self.req.held_since.get_or_insert_with(Instant::now);
                    self.req.held.push((cmd, origin, deadline));
                    if self.req.held.len() >= self.append_entries_max {
                        self.propose_held();
                    }
                }
                Op::Read { target, policy } => {
                    let rid = self.req.next_read;
                    self.req.next_read += 1;
                    self.req.reads.insert(
                        rid,
                        ReadWait {
                            origin,
                            target,
                            policy,
                            deadline,
                        },
                    );
                    self.raft.read(rid, policy, self.shared.now_ns());
                    self.export_counters();
                }
                Op::Admin(call) => self.admin(origin, call, deadline),
                Op::Lease(call) => {
                    let outcome = self.lease_call(call);
                    self.answer(origin, outcome);
                }
            }
            return;
        }
        let leader = self.raft.leader();
        match origin {
            Origin::Peer(..) | Origin::Core => {
                let e = self.not_leader();
                self.answer(origin, Err(e));
            }
            Origin::Shard(shard, req) if leader != 0 && leader != self.id => {
                let fid = self.req.next_fwd;
                self.req.next_fwd = self.req.next_fwd.wrapping_add(1);
                // A forwarded operator call, like a write, may have happened on a timeout.
                let write = matches!(op, Op::Write(_) | Op::Admin(_));
                let frame = match op {
                    Op::Write(cmd) => ClientFrame::Write {
                        id: fid,
                        command: cmd.to_vec(),
                    },
                    Op::Admin(call) => {
                        let (op, node_id, address) = super::admin::to_wire(&call);
                        ClientFrame::Admin {
                            id: fid,
                            op,
                            node_id,
                            address,
                        }
                    }
                    Op::Read {
                        target: ReadTarget::Key(key),
                        policy,
                    } => ClientFrame::Read {
                        id: fid,
                        key: key.to_vec(),
                        policy: policy_to_wire(policy),
                    },
                    Op::Read {
                        target: ReadTarget::Range(r),
                        policy,
                    } => ClientFrame::Range {
                        id: fid,
                        request: ringkv_store::encode_range(&r).to_vec(),
                        policy: policy_to_wire(policy),
                    },
                    Op::Read {
                        target: ReadTarget::Txn(t),
                        policy,
                    } => ClientFrame::ReadTxn {
                        id: fid,
                        command: crate::shard::Command::Txn((*t).clone()).encode().to_vec(),
                        policy: policy_to_wire(policy),
                    },
                    Op::Lease(call) => {
                        let (op, lease, keys) = super::leases::to_wire(call);
                        ClientFrame::Lease {
                            id: fid,
                            op,
                            lease,
                            keys,
                        }
                    }
                };
                if self.transport.send_client(leader, frame, deadline) {
                    self.req.forwards.insert(
                        fid,
                        Forwarded {
                            to: leader,
                            shard,
                            req,
                            write,
                            deadline,
                        },
                    );
                } else {
                    let e = ApiError::Unavailable {
                        reason: UnavailableReason::LeaderUnreachable { node_id: leader },
                    };
                    self.answer(origin, Err(e));
                }
            }
            Origin::Shard(..) => self.park(origin, op, deadline),
        }
    }

    /// Proposes the writes held for `batch_delay_ms` (due, or a full AppendEntries of
    /// them). Leadership may have moved meanwhile: then each goes where a new call would.
    pub(super) fn propose_held(&mut self) {
        self.req.held_since = None;
        let held = std::mem::take(&mut self.req.held);
        if held.is_empty() {
            return;
        }
        if self.raft.role() == Role::Leader {
            self.propose_writes(held);
        } else {
            for (cmd, origin, deadline) in held {
                self.submit(origin, Op::Write(cmd), deadline);
            }
        }
    }

    /// Proposes client writes as one batch (one log append): each is answered when its
    /// index commits in this term.
    fn propose_writes(&mut self, batch: Vec<(Bytes, Origin, Instant)>) {
        let cmds = batch.iter().map(|w| w.0.clone()).collect();
        match self.raft.propose(cmds) {
            Ok((first, term)) => {
                self.export.metrics.proposals.increment(batch.len() as u64);
                for (i, (_, origin, deadline)) in batch.into_iter().enumerate() {
                    let w = Waiting {
                        term,
                        origin,
                        deadline,
                    };
                    self.req.writes.insert(first + i as Index, w);
                }
            }
            Err(ProposeError::TransferInProgress) => {
                for (cmd, origin, deadline) in batch {
                    self.park(origin, Op::Write(cmd), deadline);
                }
            }
            Err(e) => {
                for (_, origin, _) in batch {
                    let reason = UnavailableReason::Refused {
                        reason: e.to_string(),
                    };
                    self.answer(origin, Err(ApiError::Unavailable { reason }));
                }
            }
        }
    }

    /// Proposes raising the NOSPACE alarm, unless it is raised or was proposed within the
    /// last second.
    fn raise_nospace(&mut self, deadline: Instant) {
        let now = Instant::now();
        if self.nospace
            || self
                .nospace_proposed
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.nospace_proposed = Some(now);
        tracing::warn!(
            node = self.id,
            state_bytes_max = self.state_bytes_max,
            "the state is full: raising the NOSPACE alarm"
        );
        let cmd = Command::Alarm { nospace: true }.encode();
        self.propose_writes(vec![(cmd, Origin::Core, deadline)]);
    }

    /// Whether a write would take the state past `state_bytes_max` (checked by the leader
    /// before proposing, against what the shards hold; deletes always pass).
    pub(super) fn state_full(&self, cmd: &Bytes) -> bool {
        let Ok(cmd) = Command::decode(cmd) else {
            return false;
        };
        let cost = write_cost(&cmd);
        if cost == 0 {
            return false;
        }
        let held: u64 = self
            .shared
            .state_bytes
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum();
        held + cost > self.state_bytes_max
    }

    pub(super) fn park(&mut self, origin: Origin, op: Op, deadline: Instant) {
        if self.req.parked.len() >= PARKED_MAX {
            let e = ApiError::NoLeader {
                why: NoLeaderReason::TooManyWaiting,
            };
            self.answer(origin, Err(e));
            return;
        }
        self.req.parked.push_back(Parked {
            origin,
            op,
            deadline,
        });
    }

    /// Answers calls past their deadline.
    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        let mut late: Vec<(Origin, ApiError)> = Vec::new();
        self.req.writes.retain(|_, w| {
            let keep = w.deadline > now;
            if !keep {
                late.push((w.origin, timeout(TimeoutKind::Write)));
            }
            keep
        });
        self.req.reads.retain(|_, r| {
            let keep = r.deadline > now;
            if !keep {
                late.push((r.origin, timeout(TimeoutKind::Read)));
            }
            keep
        });
        self.req.forwards.retain(|_, f| {
            let keep = f.deadline > now;
            if !keep {
                late.push((Origin::Shard(f.shard, f.req), forward_late(f.write)));
            }
            keep
        });
        while self.req.parked.front().is_some_and(|p| p.deadline <= now) {
            let p = self.req.parked.pop_front().expect("checked");
            let e = ApiError::NoLeader {
                why: NoLeaderReason::NotElected,
            };
            late.push((p.origin, e));
        }
        for (o, e) in late {
            self.answer(o, Err(e));
        }
    }

    /// Calls forwarded to the leader are answered now, not at their deadline, once this
    /// node stopped hearing from it (its own election timer fired: it campaigns): a dead
    /// or cut-off leader will not answer, and the caller may go elsewhere. A write's fate
    /// is unknown (it may have committed); a read had no effect. A leader that merely
    /// handed over (a transfer: a higher term, no campaign here) still answers.
    pub(super) fn drop_stale_forwards(&mut self) {
        if self.req.forwards.is_empty()
            || !matches!(self.raft.role(), Role::PreCandidate | Role::Candidate)
        {
            return;
        }
        let gone: Vec<_> = self
            .req
            .forwards
            .drain()
            .map(|(_, f)| (f.to, Origin::Shard(f.shard, f.req), f.write))
            .collect();
        for (node_id, origin, write) in gone {
            self.answer(origin, Err(ApiError::LeaderLost { node_id, write }));
        }
    }
}

pub(super) fn timeout(what: TimeoutKind) -> ApiError {
    ApiError::Timeout { what }
}

/// A call forwarded to the leader that ran out of time: a write's fate is unknown, a read
/// simply was not served.
pub(super) fn forward_late(write: bool) -> ApiError {
    timeout(if write {
        TimeoutKind::Write
    } else {
        TimeoutKind::Read
    })
}

/// A forwarded read's policy on the wire: 0 linearizable, 1 lease (a follower forwards
/// only those two; eventual reads are served where they arrive).
pub(super) fn policy_to_wire(p: ReadPolicy) -> u8 {
    u8::from(p != ReadPolicy::Linearizable)
}

/// The inverse of `policy_to_wire`.
pub(super) fn policy_from_wire(p: u8) -> ReadPolicy {
    match p {
        0 => ReadPolicy::Linearizable,
        _ => ReadPolicy::Lease,
    }
}
