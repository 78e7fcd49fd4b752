//! Operator calls on the raft core: join (add a learner with its address), promote,
//! remove, transfer leadership. Part of the raft core's driver (same executor, same
//! state); must not touch shard state.
//!
//! Each call is answered only once it has completed: a membership change once its entry
//! committed in the term it was proposed, a transfer once the named node leads, a promotion
//! of a lagging learner once it caught up to within `promote_lag_entries_max` (else 409
//! `learner_lagging` at the request timeout).

use std::time::Instant;

use super::{Core, Origin};
use crate::node::members;
use crate::node::{AdminCall, Reply};
use ringkv_raft::{Index, MembershipChange, MembershipError, NodeId, ProposeError, Role, Term};

pub(super) enum WaitKind {
    /// A membership entry: answer `reply` once it commits in `term`.
    Commit {
        index: Index,
        term: Term,
        reply: serde_json::Value,
    },
    /// A promotion waiting for its learner to catch up.
    Promote { id: NodeId },
    /// A transfer waiting for `id` to lead.
    Transfer { id: NodeId },
}

pub(super) struct AdminWait {
    pub origin: Origin,
    pub kind: WaitKind,
    pub deadline: Instant,
}

/// `ClientFrame::Admin` op codes.
pub(super) fn to_wire(call: &AdminCall) -> (u8, u64, String) {
    match call {
        AdminCall::Join { node_id, address } => (1, *node_id, address.to_string()),
        AdminCall::Promote { node_id } => (2, *node_id, String::new()),
        AdminCall::Remove { node_id } => (3, *node_id, String::new()),
        AdminCall::TransferLeader { node_id } => (4, *node_id, String::new()),
        AdminCall::Snapshot => (5, 0, String::new()),
    }
}

pub(super) fn from_wire(op: u8, node_id: u64, address: &str) -> Result<AdminCall, String> {
    Ok(match op {
        1 => AdminCall::Join {
            node_id,
            address: address
                .parse()
                .map_err(|e| format!("address {address:?}: {e}"))?,
        },
        2 => AdminCall::Promote { node_id },
        3 => AdminCall::Remove { node_id },
        4 => AdminCall::TransferLeader { node_id },
        other => return Err(format!("operator call {other} is unknown")),
    })
}

fn membership_error(e: &MembershipError) -> Reply {
    let code = match e {
        MembershipError::AlreadyMember(_) => "already_member",
        MembershipError::IdRetired(_) => "id_retired",
        MembershipError::NotFound(_) => "unknown_node",
        MembershipError::LastVoter(_) => "last_voter",
        MembershipError::InvalidId => "invalid_id",
    };
    Reply::err(400, code, e.to_string())
}

impl Core {
    /// Carries out an operator call on the leader.
    pub(super) fn admin(&mut self, origin: Origin, call: AdminCall, deadline: Instant) {
        let m = self.raft.membership().clone();
        match call {
            AdminCall::Join { node_id, address } => {
                if m.is_member(node_id) && self.raft.membership_change_pending() {
                    // Possibly our own AddLearner, not committed yet: the joiner retries.
                    return self.answer(origin, in_progress());
                }
                if m.is_member(node_id) {
                    let r = if self.addresses.get(&node_id) == Some(&address) {
                        // A joiner restarted before it heard back: already done.
                        Reply::ok(serde_json::json!({
                            "node_id": node_id,
                            "role": if m.is_voter(node_id) { "voter" } else { "learner" },
                            "members": self.member_book(),
                        }))
                    } else {
                        Reply::err(
                            409,
                            "member_conflict",
                            format!("node {node_id} is a member with another address"),
                        )
                    };
                    return self.answer(origin, r);
                }
                if m.removed.contains(&node_id) || node_id == 0 {
                    let e = if node_id == 0 {
                        MembershipError::InvalidId
                    } else {
                        MembershipError::IdRetired(node_id)
                    };
                    return self.answer(origin, membership_error(&e));
                }
                if self.raft.membership_change_pending() {
                    return self.answer(origin, in_progress());
                }
                // The address goes first: in log order every node learns it before the
                // change that makes the leader replicate to it.
                if let Err(e) = self
                    .raft
                    .propose(vec![members::encode_address(node_id, address)])
                {
                    return self.answer(origin, propose_error(e));
                }
                self.addresses.insert(node_id, address);
                self.transport.add_peer(node_id, address);
                // The joiner learns every member's address from the answer: any of them may
                // lead (and contact it) before the joiner has the log.
                let reply = serde_json::json!({
                    "node_id": node_id,
                    "role": "learner",
                    "members": self.member_book(),
                });
                self.propose_change(
                    origin,
                    MembershipChange::AddLearner(node_id),
                    deadline,
                    reply,
                );
            }
            AdminCall::Promote { node_id } => {
                if !m.is_learner(node_id) {
                    let why = if m.is_voter(node_id) {
                        format!("node {node_id} is a voter already")
                    } else {
                        format!("node {node_id} is not a learner of this cluster")
                    };
                    return self.answer(origin, Reply::err(400, "not_learner", why));
                }
                if self.learner_lag(node_id) <= self.promote_lag_max {
                    self.propose_change(
                        origin,
                        MembershipChange::Promote(node_id),
                        deadline,
                        serde_json::json!({ "node_id": node_id, "role": "voter" }),
                    );
                } else {
                    self.admin_waits.push(AdminWait {
                        origin,
                        kind: WaitKind::Promote { id: node_id },
                        deadline,
                    });
                }
            }
            AdminCall::Remove { node_id } => self.propose_change(
                origin,
                MembershipChange::Remove(node_id),
                deadline,
                serde_json::json!({ "node_id": node_id, "removed": true }),
            ),
            AdminCall::TransferLeader { node_id } => {
                if node_id == self.id {
                    let r = Reply::ok(serde_json::json!({ "leader_id": node_id }));
                    return self.answer(origin, r);
                }
                match self.raft.transfer_leader(node_id) {
                    Ok(()) => self.admin_waits.push(AdminWait {
                        origin,
                        kind: WaitKind::Transfer { id: node_id },
                        deadline,
                    }),
                    Err(ProposeError::InvalidTransferTarget(_)) => self.answer(
                        origin,
                        Reply::err(
                            400,
                            "not_voter",
                            format!("node {node_id} is not a voter of this cluster"),
                        ),
                    ),
                    Err(e) => self.answer(origin, propose_error(e)),
                }
            }
            AdminCall::Snapshot => unreachable!("snapshots are taken locally"),
        }
    }

    fn propose_change(
        &mut self,
        origin: Origin,
        change: MembershipChange,
        deadline: Instant,
        reply: serde_json::Value,
    ) {
        match self.raft.propose_membership(change) {
            Ok(index) => {
                let term = self.raft.term();
                tracing::warn!(node = self.id, index, ?change, "membership change proposed");
                self.admin_waits.push(AdminWait {
                    origin,
                    kind: WaitKind::Commit { index, term, reply },
                    deadline,
                });
            }
            Err(e) => self.answer(origin, propose_error(e)),
        }
    }

    /// Every member's address (this node's too), for a joiner.
    fn member_book(&self) -> serde_json::Value {
        let m = self.raft.membership();
        let book: serde_json::Map<String, serde_json::Value> = self
            .addresses
            .iter()
            .filter(|(id, _)| m.is_member(**id) || **id == self.id)
            .map(|(id, a)| (id.to_string(), serde_json::Value::String(a.to_string())))
            .collect();
        serde_json::Value::Object(book)
    }

    /// Entries the learner is behind the leader's log (unknown: as far as it can be).
    fn learner_lag(&self, id: NodeId) -> u64 {
        let st = self.raft.status();
        st.progress
            .iter()
            .find(|p| p.0 == id)
            .map_or(u64::MAX, |p| st.last_index.saturating_sub(p.1))
    }

    /// Answers the operator calls that completed, failed or ran out of time.
    pub(super) fn check_admin(&mut self) {
        if self.admin_waits.is_empty() {
            return;
        }
        let now = Instant::now();
        for w in std::mem::take(&mut self.admin_waits) {
            let late = w.deadline <= now;
            match w.kind {
                WaitKind::Commit {
                    index,
                    term,
                    ref reply,
                } => {
                    if self.raft.commit() >= index {
                        let r = match self.raft.log().term(index) {
                            Some(t) if t == term => Reply::ok(reply.clone()),
                            Some(_) => Reply::err(
                                503,
                                "lost_leadership",
                                "leadership changed before the change committed; it was not \
                                 applied, retry",
                            ),
                            // Compacted behind a snapshot: which entry committed there is
                            // no longer known here.
                            None => Reply::err(
                                504,
                                "timeout",
                                "the outcome of the change is unknown here: check /status",
                            ),
                        };
                        self.answer(w.origin, r);
                    } else if late {
                        self.answer(
                            w.origin,
                            Reply::err(
                                504,
                                "timeout",
                                "request_timeout_ms passed; the change may or may not be \
                                 applied (outcome unknown): check /status",
                            ),
                        );
                    } else {
                        self.admin_waits.push(w);
                    }
                }
                WaitKind::Promote { id } => {
                    if self.raft.role() != Role::Leader {
                        let r = self.not_leader();
                        self.answer(w.origin, r);
                    } else if self.learner_lag(id) <= self.promote_lag_max {
                        self.propose_change(
                            w.origin,
                            MembershipChange::Promote(id),
                            w.deadline,
                            serde_json::json!({ "node_id": id, "role": "voter" }),
                        );
                    } else if late {
                        let lag = self.learner_lag(id);
                        self.answer(
                            w.origin,
                            Reply::err(
                                409,
                                "learner_lagging",
                                format!(
                                    "learner {id} is {} entries behind (promote_lag_entries_max \
                                     {}); not promoted, retry when it caught up",
                                    if lag == u64::MAX {
                                        "an unknown number of".to_string()
                                    } else {
                                        lag.to_string()
                                    },
                                    self.promote_lag_max
                                ),
                            ),
                        );
                    } else {
                        self.admin_waits.push(w);
                    }
                }
                WaitKind::Transfer { id } => {
                    if self.raft.leader() == id {
                        let r = Reply::ok(serde_json::json!({ "leader_id": id }));
                        self.answer(w.origin, r);
                    } else if self.raft.role() == Role::Leader
                        && self.raft.transfer_target().is_none()
                    {
                        self.answer(
                            w.origin,
                            Reply::err(
                                503,
                                "transfer_failed",
                                format!("node {id} did not take over in time; this node still leads, retry"),
                            ),
                        );
                    } else if late {
                        self.answer(
                            w.origin,
                            Reply::err(504, "timeout", "the transfer did not complete in time"),
                        );
                    } else {
                        self.admin_waits.push(w);
                    }
                }
            }
        }
    }
}

fn in_progress() -> Reply {
    Reply::err(
        409,
        "change_in_progress",
        "another membership change has not committed yet; retry after it",
    )
}

fn propose_error(e: ProposeError) -> Reply {
    match e {
        ProposeError::MembershipChangeInProgress => in_progress(),
        ProposeError::TransferInProgress => Reply::err(
            409,
            "transfer_in_progress",
            "a leadership transfer is in progress; retry after it",
        ),
        ProposeError::Membership(e) => membership_error(&e),
        ProposeError::LeaderNotReady => Reply::err(
            503,
            "leader_not_ready",
            "the leader has not committed an entry of its term yet; retry",
        ),
        ProposeError::InvalidTransferTarget(id) => Reply::err(
            400,
            "not_voter",
            format!("node {id} is not a voter of this cluster"),
        ),
        other => Reply::err(503, "unavailable", format!("refused ({other:?}); retry")),
    }
}
