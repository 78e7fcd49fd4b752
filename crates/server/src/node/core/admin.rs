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
use crate::node::AdminCall;
use crate::node::members;
use ringkv_proto::outcome::{
    Answer, ApiError, MembershipRefusal, Outcome, TimeoutKind, UnavailableReason,
};
use ringkv_raft::{Index, MembershipChange, MembershipError, NodeId, ProposeError, Role, Term};

pub(super) enum WaitKind {
    /// A membership entry: answer `done` once it commits in `term`.
    Commit {
        index: Index,
        term: Term,
        done: Answer,
    },
    /// A promotion waiting for its learner to catch up.
    Promote { id: NodeId },
    /// A transfer waiting for `id` to lead.
    Transfer { id: NodeId },
}

/// Operator calls waiting to complete, and the promotion lag limit they are judged by.
pub(super) struct AdminWaits {
    pub waits: Vec<AdminWait>,
    pub promote_lag_max: u64,
}

impl AdminWaits {
    pub fn new(promote_lag_max: u64) -> Self {
        Self {
            waits: Vec::new(),
            promote_lag_max,
        }
    }
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

fn membership_error(e: &MembershipError) -> ApiError {
    let refusal = match *e {
        MembershipError::AlreadyMember(id) => MembershipRefusal::AlreadyMember(id),
        MembershipError::IdRetired(id) => MembershipRefusal::IdRetired(id),
        MembershipError::NotFound(id) => MembershipRefusal::UnknownNode(id),
        MembershipError::LastVoter(id) => MembershipRefusal::LastVoter(id),
        MembershipError::InvalidId => MembershipRefusal::InvalidId,
    };
    ApiError::Membership { refusal }
}

impl Core {
    /// Carries out an operator call on the leader.
    pub(super) fn admin(&mut self, origin: Origin, call: AdminCall, deadline: Instant) {
        let m = self.raft.membership().clone();
        match call {
            AdminCall::Join { node_id, address } => {
                if m.is_member(node_id) && self.raft.membership_change_pending() {
                    // Possibly our own AddLearner, not committed yet: the joiner retries.
                    return self.answer(origin, Err(ApiError::ChangeInProgress));
                }
                if m.is_member(node_id) {
                    let r = if self.addresses.get(&node_id) == Some(&address) {
                        // A joiner restarted before it heard back: already done.
                        Ok(Answer::Joined {
                            node_id,
                            voter: m.is_voter(node_id),
                            members: self.member_book(),
                        })
                    } else {
                        Err(ApiError::MemberConflict { node_id })
                    };
                    return self.answer(origin, r);
                }
                if m.removed.contains(&node_id) || node_id == 0 {
                    let e = if node_id == 0 {
                        MembershipError::InvalidId
                    } else {
                        MembershipError::IdRetired(node_id)
                    };
                    return self.answer(origin, Err(membership_error(&e)));
                }
                if self.raft.membership_change_pending() {
                    return self.answer(origin, Err(ApiError::ChangeInProgress));
                }
                // The address goes first: in log order every node learns it before the
                // change that makes the leader replicate to it.
                if let Err(e) = self
                    .raft
                    .propose(vec![members::encode_address(node_id, address)])
                {
                    return self.answer(origin, Err(propose_error(e)));
                }
                self.addresses.insert(node_id, address);
                self.transport.add_peer(node_id, address);
                // The joiner learns every member's address from the answer: any of them may
                // lead (and contact it) before the joiner has the log.
                let done = Answer::Joined {
                    node_id,
                    voter: false,
                    members: self.member_book(),
                };
                self.propose_change(
                    origin,
                    MembershipChange::AddLearner(node_id),
                    deadline,
                    done,
                );
            }
            AdminCall::Promote { node_id } => {
                if !m.is_learner(node_id) {
                    let refusal = MembershipRefusal::NotLearner {
                        node_id,
                        voter: m.is_voter(node_id),
                    };
                    return self.answer(origin, Err(ApiError::Membership { refusal }));
                }
                if self.learner_lag(node_id) <= self.admin.promote_lag_max {
                    self.propose_change(
                        origin,
                        MembershipChange::Promote(node_id),
                        deadline,
                        Answer::Promoted { node_id },
                    );
                } else {
                    self.admin.waits.push(AdminWait {
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
                Answer::Removed { node_id },
            ),
            AdminCall::TransferLeader { node_id } => {
                if node_id == self.id {
                    let r = Ok(Answer::Leads { leader_id: node_id });
                    return self.answer(origin, r);
                }
                match self.raft.transfer_leader(node_id) {
                    Ok(()) => self.admin.waits.push(AdminWait {
                        origin,
                        kind: WaitKind::Transfer { id: node_id },
                        deadline,
                    }),
                    Err(e) => self.answer(origin, Err(propose_error(e))),
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
        done: Answer,
    ) {
        match self.raft.propose_membership(change) {
            Ok(index) => {
                let term = self.raft.term();
                tracing::warn!(node = self.id, index, ?change, "membership change proposed");
                self.admin.waits.push(AdminWait {
                    origin,
                    kind: WaitKind::Commit { index, term, done },
                    deadline,
                });
            }
            Err(e) => self.answer(origin, Err(propose_error(e))),
        }
    }

    /// Every member's address (this node's too), for a joiner.
    fn member_book(&self) -> Vec<(NodeId, String)> {
        let m = self.raft.membership();
        self.addresses
            .iter()
            .filter(|(id, _)| m.is_member(**id) || **id == self.id)
            .map(|(id, a)| (*id, a.to_string()))
            .collect()
    }

    /// Entries the learner is behind the leader's log (unknown: as far as it can be). A
    /// learner that has acknowledged nothing yet (never started, unreachable) is as far
    /// behind as it can be however short the log is: promoting it would add a voter that
    /// cannot vote.
    fn learner_lag(&self, id: NodeId) -> u64 {
        let st = self.raft.status();
        st.progress
            .iter()
            .find(|p| p.0 == id && p.1 > 0)
            .map_or(u64::MAX, |p| st.last_index.saturating_sub(p.1))
    }

    /// Answers the operator calls that completed, failed or ran out of time.
    pub(super) fn check_admin(&mut self) {
        if self.admin.waits.is_empty() {
            return;
        }
        let now = Instant::now();
        for w in std::mem::take(&mut self.admin.waits) {
            let late = w.deadline <= now;
            match w.kind {
                WaitKind::Commit {
                    index,
                    term,
                    ref done,
                } => {
                    if self.raft.commit() >= index {
                        let r: Outcome = match self.raft.log().term(index) {
                            Some(t) if t == term => Ok(done.clone()),
                            Some(_) => Err(ApiError::LostLeadership { change: true }),
                            // Compacted behind a snapshot: which entry committed there is
                            // no longer known here.
                            None => Err(ApiError::Timeout {
                                what: TimeoutKind::ChangeCompacted,
                            }),
                        };
                        self.answer(w.origin, r);
                    } else if late {
                        let e = ApiError::Timeout {
                            what: TimeoutKind::Change,
                        };
                        self.answer(w.origin, Err(e));
                    } else {
                        self.admin.waits.push(w);
                    }
                }
                WaitKind::Promote { id } => {
                    if self.raft.role() != Role::Leader {
                        let e = self.not_leader();
                        self.answer(w.origin, Err(e));
                    } else if self.learner_lag(id) <= self.admin.promote_lag_max {
                        self.propose_change(
                            w.origin,
                            MembershipChange::Promote(id),
                            w.deadline,
                            Answer::Promoted { node_id: id },
                        );
                    } else if late {
                        let lag = self.learner_lag(id);
                        let e = ApiError::LearnerLagging {
                            node_id: id,
                            lag: (lag != u64::MAX).then_some(lag),
                            lag_max: self.admin.promote_lag_max,
                        };
                        self.answer(w.origin, Err(e));
                    } else {
                        self.admin.waits.push(w);
                    }
                }
                WaitKind::Transfer { id } => {
                    if self.raft.leader() == id {
                        self.answer(w.origin, Ok(Answer::Leads { leader_id: id }));
                    } else if self.raft.role() == Role::Leader
                        && self.raft.transfer_target().is_none()
                    {
                        let e = ApiError::TransferFailed { node_id: id };
                        self.answer(w.origin, Err(e));
                    } else if late {
                        let e = ApiError::Timeout {
                            what: TimeoutKind::Transfer,
                        };
                        self.answer(w.origin, Err(e));
                    } else {
                        self.admin.waits.push(w);
                    }
                }
            }
        }
    }
}

fn propose_error(e: ProposeError) -> ApiError {
    match e {
        ProposeError::MembershipChangeInProgress => ApiError::ChangeInProgress,
        ProposeError::TransferInProgress => ApiError::TransferInProgress,
        ProposeError::Membership(e) => membership_error(&e),
        ProposeError::LeaderNotReady => ApiError::LeaderNotReady,
        ProposeError::InvalidTransferTarget(id) => ApiError::Membership {
            refusal: MembershipRefusal::NotVoter(id),
        },
        other => ApiError::Unavailable {
            reason: UnavailableReason::Refused {
                reason: other.to_string(),
            },
        },
    }
}
