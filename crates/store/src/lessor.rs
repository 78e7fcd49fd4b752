//! The leader's lease clocks (etcd's primary lessor): which leases have expired, when to
//! checkpoint their remaining TTLs, and keep-alives.
//!
//! Pure: time comes in as milliseconds of a monotonic clock the caller reads; nothing here
//! sleeps or proposes. On the node it lives with the raft core and only the leader's is
//! active: the leader proposes `LeaseRevoke` for what `expired` returns and
//! `LeaseCheckpoint` for what `checkpoints` returns, so followers never expire a lease.
//! After a leader change every lease counts down afresh from its remaining TTL (the last
//! checkpoint, or the whole TTL), as etcd's `Promote`; checkpoints make sure frequent
//! elections cannot keep an abandoned lease alive forever. Must not touch the store.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::LeaseId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Clock {
    ttl_ms: u64,
    deadline_ms: u64,
    /// The remaining TTL last checkpointed (ms), to avoid proposing the same again.
    checkpointed_ms: Option<u64>,
}

/// Settings of the lessor (the node derives them from its configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LessorConfig {
    /// A new leader adds this to every lease's remaining TTL (etcd: the election timeout),
    /// so that keep-alives sent to the old leader have time to reach the new one.
    pub promote_extend_ms: u64,
    /// How often a lease's remaining TTL is checkpointed (only leases whose TTL is longer).
    pub checkpoint_interval_ms: u64,
    /// Leases expired at most per call to `expired` (etcd's revoke rate limit).
    pub revokes_per_call_max: usize,
}

#[derive(Debug)]
pub struct Lessor {
    cfg: LessorConfig,
    primary: bool,
    clocks: BTreeMap<LeaseId, Clock>,
    by_deadline: BTreeSet<(u64, LeaseId)>,
    next_checkpoint_ms: u64,
}

impl Lessor {
    pub fn new(cfg: LessorConfig) -> Lessor {
        assert!(cfg.checkpoint_interval_ms > 0 && cfg.revokes_per_call_max > 0);
        Lessor {
            cfg,
            primary: false,
            clocks: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            next_checkpoint_ms: 0,
        }
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// This node became leader at `now_ms`: every lease of the store (id, TTL in seconds,
    /// last checkpointed remaining TTL in seconds) counts down afresh.
    pub fn promote(&mut self, now_ms: u64, leases: &[(LeaseId, i64, Option<i64>)]) {
        self.primary = true;
        self.clocks.clear();
        self.by_deadline.clear();
        for &(id, ttl, remaining) in leases {
            let ttl_ms = secs_ms(ttl);
            let left_ms = match remaining {
                Some(r) if r > 0 => secs_ms(r),
                _ => ttl_ms,
            };
            self.set(
                id,
                Clock {
                    ttl_ms,
                    deadline_ms: now_ms + left_ms + self.cfg.promote_extend_ms,
                    checkpointed_ms: remaining.filter(|r| *r > 0).map(secs_ms),
                },
            );
        }
        self.next_checkpoint_ms = now_ms + self.cfg.checkpoint_interval_ms;
    }

    /// No longer leader: nothing expires here.
    pub fn demote(&mut self) {
        self.primary = false;
        self.clocks.clear();
        self.by_deadline.clear();
    }

    /// A grant was applied (on the leader): its countdown starts now.
    pub fn granted(&mut self, now_ms: u64, id: LeaseId, ttl: i64) {
        if !self.primary {
            return;
        }
        let ttl_ms = secs_ms(ttl);
        self.set(
            id,
            Clock {
                ttl_ms,
                deadline_ms: now_ms + ttl_ms,
                checkpointed_ms: None,
            },
        );
    }

    /// A revoke was applied.
    pub fn revoked(&mut self, id: LeaseId) {
        if let Some(c) = self.clocks.remove(&id) {
            self.by_deadline.remove(&(c.deadline_ms, id));
        }
    }

    /// A keep-alive: the lease's countdown restarts from its TTL. `None`: not a lease
    /// this leader knows (etcd answers TTL 0). Returns the TTL in seconds otherwise and
    /// whether its checkpoint must be reset (propose a checkpoint of 0 for it).
    pub fn keep_alive(&mut self, now_ms: u64, id: LeaseId) -> Option<(i64, bool)> {
        assert!(self.primary, "keep-alive on a follower's lessor");
        let mut c = *self.clocks.get(&id)?;
        if c.deadline_ms <= now_ms {
            return None; // expired: its revoke is on its way
        }
        c.deadline_ms = now_ms + c.ttl_ms;
        let reset = c.checkpointed_ms.take().is_some();
        self.set(id, c);
        Some(((c.ttl_ms / 1000) as i64, reset))
    }

    /// Remaining TTL in whole seconds, rounded down as etcd's TimeToLive does (its Go
    /// code truncates the remaining duration's seconds: a 60 s lease reads 59 at once;
    /// etcdctl against etcd 3.4.23 shows it), `None` for an unknown lease.
    pub fn remaining_secs(&self, now_ms: u64, id: LeaseId) -> Option<i64> {
        let c = self.clocks.get(&id)?;
        Some((c.deadline_ms.saturating_sub(now_ms) / 1000) as i64)
    }

    /// Leases past their deadline (at most `revokes_per_call_max`, soonest first): the
    /// leader proposes their revokes. They stay until the revoke is applied (`revoked`),
    /// so they are returned again if the proposal is lost; the caller keeps at most one
    /// revoke in flight per lease.
    pub fn expired(&self, now_ms: u64) -> Vec<LeaseId> {
        if !self.primary {
            return Vec::new();
        }
        self.by_deadline
            .iter()
            .take_while(|(d, _)| *d <= now_ms)
            .take(self.cfg.revokes_per_call_max)
            .map(|&(_, id)| id)
            .collect()
    }

    /// Every checkpoint interval: the remaining TTLs (seconds) to record in the log for
    /// leases longer than the interval whose remaining TTL changed since the last one.
    pub fn checkpoints(&mut self, now_ms: u64) -> Vec<(LeaseId, i64)> {
        if !self.primary || now_ms < self.next_checkpoint_ms {
            return Vec::new();
        }
        self.next_checkpoint_ms = now_ms + self.cfg.checkpoint_interval_ms;
        let mut out = Vec::new();
        for (&id, c) in self.clocks.iter_mut() {
            if c.ttl_ms <= self.cfg.checkpoint_interval_ms || c.deadline_ms <= now_ms {
                continue;
            }
            let left = c.deadline_ms - now_ms;
            let secs = left.div_ceil(1000);
            if c.checkpointed_ms != Some(secs * 1000) {
                c.checkpointed_ms = Some(secs * 1000);
                out.push((id, secs as i64));
            }
        }
        out
    }

    fn set(&mut self, id: LeaseId, c: Clock) {
        if let Some(old) = self.clocks.insert(id, c) {
            self.by_deadline.remove(&(old.deadline_ms, id));
        }
        self.by_deadline.insert((c.deadline_ms, id));
    }
}

fn secs_ms(s: i64) -> u64 {
    (s.max(0) as u64).saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LessorConfig {
        LessorConfig {
            promote_extend_ms: 1000,
            checkpoint_interval_ms: 5000,
            revokes_per_call_max: 2,
        }
    }

    #[test]
    fn a_lease_expires_at_its_ttl_unless_kept_alive_and_only_on_the_primary() {
        let mut l = Lessor::new(cfg());
        l.granted(0, 1, 10);
        assert!(l.expired(20_000).is_empty(), "a follower expires nothing");
        l.promote(0, &[]);
        l.granted(0, 1, 10);
        l.granted(0, 2, 3);
        assert!(l.expired(2_999).is_empty());
        assert_eq!(l.expired(3_000), vec![2]);
        assert_eq!(l.keep_alive(2_000, 1), Some((10, false)));
        assert_eq!(l.remaining_secs(2_500, 1), Some(9), "9.5 s left reads 9");
        assert_eq!(l.remaining_secs(2_000, 1), Some(10));
        assert_eq!(l.expired(11_000), vec![2], "1 was kept alive at 2 s");
        assert_eq!(l.expired(12_000), vec![2, 1]);
        assert_eq!(l.keep_alive(12_000, 1), None, "expired: no renewal");
        l.revoked(2);
        assert_eq!(l.expired(12_000), vec![1]);
        assert_eq!(l.keep_alive(0, 9), None);
        l.demote();
        assert!(l.expired(100_000).is_empty());
    }

    #[test]
    fn checkpoints_bound_what_elections_can_extend() {
        let mut l = Lessor::new(cfg());
        l.promote(0, &[]);
        l.granted(0, 1, 60);
        l.granted(0, 2, 4); // shorter than the interval: never checkpointed
        assert!(l.checkpoints(4_999).is_empty());
        assert_eq!(l.checkpoints(5_000), vec![(1, 55)]);
        assert!(
            l.checkpoints(7_000).is_empty(),
            "not before the next interval"
        );
        assert_eq!(l.checkpoints(10_000), vec![(1, 50)]);
        // A new leader starts from the checkpoint (plus the extension), not from 60 s.
        let mut n = Lessor::new(cfg());
        n.promote(10_500, &[(1, 60, Some(50)), (2, 4, None)]);
        assert_eq!(n.remaining_secs(10_500, 1), Some(51));
        assert!(n.expired(10_500 + 50_999).contains(&2));
        assert_eq!(n.expired(10_500 + 51_000), vec![2, 1]);
        // A keep-alive resets the checkpoint.
        assert_eq!(n.keep_alive(11_000, 1), Some((60, true)));
        assert_eq!(n.keep_alive(11_500, 1), Some((60, false)));
    }
}
