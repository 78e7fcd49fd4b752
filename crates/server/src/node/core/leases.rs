//! Leases (and the store-wide events shard 0 reports) on the raft core: every node's copy of the store's lease table (from shard 0's
//! lease events), the leader's lessor (`ringkv_store::lessor`: countdowns, keep-alives,
//! checkpoints), and the revokes and checkpoints the leader proposes.
//!
//! Part of the raft core's driver (its task queue; same state). Only the leader expires
//! leases, by proposing revokes through the log like any write; a new leader starts every
//! countdown afresh from the lease's last checkpoint (or its TTL). Must not touch a
//! shard's state: the table changes only from applied entries the shards report.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::Core;
use super::requests::{Op, Origin};
use crate::node::LeaseCall;
use crate::shard::Command;
use ringkv_proto::outcome::{Answer, Outcome};
use ringkv_raft::Role;
use ringkv_store::lessor::{Lessor, LessorConfig};
use ringkv_store::{LeaseId, StoreEvent};

/// How often the leader checkpoints remaining TTLs (leases longer than this): how much a
/// run of elections can extend a lease beyond its TTL at most, per election.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Revokes proposed per tick at most (etcd's revoke rate limit, per 500 ms: 500).
const REVOKES_PER_TICK_MAX: usize = 64;
/// A revoke proposed and not seen applied within this is proposed again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);

pub(super) struct Leases {
    lessor: Lessor,
    /// The store's lease table as applied here: id -> (TTL, last checkpointed remaining).
    table: BTreeMap<LeaseId, (i64, Option<i64>)>,
    /// Revokes proposed and not applied yet, with when (one in flight per lease).
    revoking: HashMap<LeaseId, Instant>,
    /// The lessor counts down (this node was leader at the last look).
    primary: bool,
}

impl Leases {
    /// `table`: the lease table of the state the node starts from.
    pub fn new(election_timeout_max: Duration, table: &[(LeaseId, i64, Option<i64>)]) -> Leases {
        Leases {
            lessor: Lessor::new(LessorConfig {
                promote_extend_ms: election_timeout_max.as_millis() as u64,
                checkpoint_interval_ms: CHECKPOINT_INTERVAL.as_millis() as u64,
                revokes_per_call_max: REVOKES_PER_TICK_MAX,
            }),
            table: table
                .iter()
                .map(|&(id, ttl, rem)| (id, (ttl, rem)))
                .collect(),
            revoking: HashMap::new(),
            primary: false,
        }
    }

    /// The state was replaced (snapshot installed, reset): its lease table.
    pub fn replaced(&mut self, now_ms: u64, table: &[(LeaseId, i64, Option<i64>)]) {
        self.table = table
            .iter()
            .map(|&(id, ttl, rem)| (id, (ttl, rem)))
            .collect();
        self.revoking.clear();
        if self.primary {
            self.lessor.promote(now_ms, table);
        }
    }

    /// A change shard 0 applied.
    pub fn applied(&mut self, now_ms: u64, e: StoreEvent) {
        match e {
            StoreEvent::Granted { id, ttl } => {
                self.table.insert(id, (ttl, None));
                self.lessor.granted(now_ms, id, ttl);
            }
            StoreEvent::Revoked { id } => {
                self.table.remove(&id);
                self.revoking.remove(&id);
                self.lessor.revoked(id);
            }
            StoreEvent::Checkpointed { id, remaining } => {
                if let Some(l) = self.table.get_mut(&id) {
                    l.1 = Some(remaining);
                }
            }
            // Not a lease's: the raft core keeps it (`store_events`).
            StoreEvent::Alarm { .. } => {}
        }
    }

    fn rows(&self) -> Vec<(LeaseId, i64, Option<i64>)> {
        self.table
            .iter()
            .map(|(&id, &(ttl, rem))| (id, ttl, rem))
            .collect()
    }
}

/// A lease call as a forwarded frame: (op, lease, keys).
pub(super) fn to_wire(c: LeaseCall) -> (u8, i64, bool) {
    match c {
        LeaseCall::KeepAlive { lease } => (1, lease, false),
        LeaseCall::TimeToLive { lease, keys } => (2, lease, keys),
        LeaseCall::Leases => (3, 0, false),
    }
}

/// The inverse of `to_wire`.
pub(super) fn from_wire(op: u8, lease: i64, keys: bool) -> Result<LeaseCall, String> {
    Ok(match op {
        1 => LeaseCall::KeepAlive { lease },
        2 => LeaseCall::TimeToLive { lease, keys },
        3 => LeaseCall::Leases,
        other => return Err(format!("lease call {other} is unknown")),
    })
}

impl Core {
    fn now_ms(&self) -> u64 {
        self.shared.now_ns() / 1_000_000
    }

    /// Shard 0's events of a report: lease table changes, the alarm.
    pub(super) fn store_events(&mut self, events: Vec<StoreEvent>) {
        let now = self.now_ms();
        for e in events {
            match e {
                StoreEvent::Alarm { nospace } => {
                    if nospace != self.nospace {
                        tracing::warn!(
                            node = self.id,
                            "NOSPACE alarm {}",
                            if nospace {
                                "raised: writes refused until it is disarmed"
                            } else {
                                "disarmed"
                            }
                        );
                    }
                    self.nospace = nospace;
                }
                e => self.leases.applied(now, e),
            }
        }
    }

    /// The state was replaced with one holding this lease table.
    pub(super) fn leases_replaced(&mut self, table: &[(LeaseId, i64, Option<i64>)]) {
        let now = self.now_ms();
        self.leases.replaced(now, table);
    }

    /// The lessor follows leadership: promoted when this node leads, demoted when not.
    /// Called each tick and before a lease call is served (the role may have changed
    /// since the last tick, within the same loop turn).
    fn lessor_follows_role(&mut self) -> bool {
        let leader = self.raft.role() == Role::Leader;
        let now = self.now_ms();
        if leader && !self.leases.primary {
            let rows = self.leases.rows();
            self.leases.lessor.promote(now, &rows);
            self.leases.primary = true;
        } else if !leader && self.leases.primary {
            self.leases.lessor.demote();
            self.leases.revoking.clear();
            self.leases.primary = false;
        }
        leader
    }

    /// Each tick: the lessor follows leadership; on the leader, expired leases get a
    /// revoke proposed and remaining TTLs a checkpoint.
    pub(super) fn lease_turn(&mut self) {
        let now = self.now_ms();
        if !self.lessor_follows_role() {
            return;
        }
        let t = Instant::now();
        let deadline = t + self.request_timeout;
        for id in self.leases.lessor.expired(now) {
            if self
                .leases
                .revoking
                .get(&id)
                .is_some_and(|at| t.duration_since(*at) < REVOKE_RETRY)
            {
                continue;
            }
            self.leases.revoking.insert(id, t);
            let cmd = Command::LeaseRevoke { id }.encode();
            self.submit(Origin::Core, Op::Write(cmd), deadline);
        }
        let checkpoints = self.leases.lessor.checkpoints(now);
        if !checkpoints.is_empty() {
            let cmd = Command::LeaseCheckpoint { checkpoints }.encode();
            self.submit(Origin::Core, Op::Write(cmd), deadline);
        }
    }

    /// A lease call on the leader.
    pub(super) fn lease_call(&mut self, call: LeaseCall) -> Outcome {
        // Elected since the last tick: the lessor must count down before it answers.
        self.lessor_follows_role();
        let now = self.now_ms();
        Ok(match call {
            LeaseCall::KeepAlive { lease } => match self.leases.lessor.keep_alive(now, lease) {
                Some((ttl, reset)) => {
                    if reset {
                        // The countdown restarted: a later leader must not resume it from
                        // the old checkpoint.
                        let cmd = Command::LeaseCheckpoint {
                            checkpoints: vec![(lease, 0)],
                        }
                        .encode();
                        self.submit(
                            Origin::Core,
                            Op::Write(cmd),
                            Instant::now() + self.request_timeout,
                        );
                    }
                    Answer::LeaseTtl {
                        id: lease,
                        ttl,
                        granted_ttl: ttl,
                        keys: Vec::new(),
                    }
                }
                // etcd answers a keep-alive of an unknown (or expired) lease with TTL 0.
                None => Answer::LeaseTtl {
                    id: lease,
                    ttl: 0,
                    granted_ttl: 0,
                    keys: Vec::new(),
                },
            },
            LeaseCall::TimeToLive { lease, .. } => {
                match (
                    self.leases.table.get(&lease),
                    self.leases.lessor.remaining_secs(now, lease),
                ) {
                    (Some(&(granted, _)), Some(rem)) => Answer::LeaseTtl {
                        id: lease,
                        ttl: rem,
                        granted_ttl: granted,
                        keys: Vec::new(),
                    },
                    // etcd answers TimeToLive of an unknown lease with TTL -1.
                    _ => Answer::LeaseTtl {
                        id: lease,
                        ttl: -1,
                        granted_ttl: 0,
                        keys: Vec::new(),
                    },
                }
            }
            LeaseCall::Leases => Answer::LeaseList {
                ids: self.leases.table.keys().copied().collect(),
            },
        })
    }
}
