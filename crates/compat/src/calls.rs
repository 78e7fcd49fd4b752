//! Seeded random sequences of etcd API calls: puts, ranges, deletes, txns (nested one
//! level), compactions and lease calls over a small key space, so calls collide (the
//! same keys, overlapping ranges, revisions near the current one, compacted and future
//! ones, duplicate keys in a txn, leases that do and do not exist).
//!
//! What is left out on purpose, because its answer depends on timing rather than on the
//! data model: serializable reads (a follower may lag), lease TTLs short enough to expire
//! during a run (every TTL is 10 minutes or more), and leases granted without an id are
//! never used again (their ids are each system's own). Puts inside txns never set
//! ignore_value or ignore_lease: after a delete of `[key, "\0")` in the same txn, etcd
//! 3.4 panics (every member; ringkv refuses the txn).

use bytes::Bytes;
use ringkv_proto::etcdpb as pb;
use ringkv_rng::Rng;

/// One call of a sequence.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Put(pb::PutRequest),
    Range(pb::RangeRequest),
    Delete(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
    LeaseGrant(pb::LeaseGrantRequest),
    LeaseRevoke(i64),
    LeaseTimeToLive {
        id: i64,
        keys: bool,
    },
    LeaseLeases,
    /// One request on a fresh LeaseKeepAlive stream.
    LeaseKeepAlive(i64),
}

impl Call {
    pub fn name(&self) -> &'static str {
        match self {
            Call::Put(_) => "Put",
            Call::Range(_) => "Range",
            Call::Delete(_) => "DeleteRange",
            Call::Txn(_) => "Txn",
            Call::Compact(_) => "Compact",
            Call::LeaseGrant(_) => "LeaseGrant",
            Call::LeaseRevoke(_) => "LeaseRevoke",
            Call::LeaseTimeToLive { .. } => "LeaseTimeToLive",
            Call::LeaseLeases => "LeaseLeases",
            Call::LeaseKeepAlive(_) => "LeaseKeepAlive",
        }
    }
}

const KEYS: &[&str] = &["a", "a/1", "a/2", "a/3", "b", "b/1", "b/2", "c", "d"];
/// The ids leases are granted with (and asked about).
pub const LEASES: &[i64] = &[101, 102, 103];
const TTL_MIN_SECS: u64 = 600;
const TTL_MAX_SECS: u64 = 3600;

pub struct Gen {
    rng: Rng,
    /// Writes generated so far: roughly the store's revision, to aim revisions near it.
    writes: i64,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng::new(seed),
            writes: 0,
        }
    }

    /// A sequence of `n` calls.
    pub fn calls(seed: u64, n: usize) -> Vec<Call> {
        let mut g = Gen::new(seed);
        (0..n).map(|_| g.next_call()).collect()
    }

    pub fn next_call(&mut self) -> Call {
        match self.rng.below(100) {
            0..=29 => {
                self.writes += 1;
                Call::Put(self.put())
            }
            30..=49 => Call::Range(self.range()),
            50..=57 => {
                self.writes += 1;
                Call::Delete(self.delete())
            }
            58..=77 => {
                self.writes += 1;
                Call::Txn(self.txn(1))
            }
            78..=81 => Call::Compact(pb::CompactionRequest {
                revision: self.revision_near().max(1),
                physical: self.rng.chance(500),
            }),
            82..=87 => Call::LeaseGrant(pb::LeaseGrantRequest {
                ttl: self.rng.range(TTL_MIN_SECS, TTL_MAX_SECS) as i64,
                id: if self.rng.chance(100) {
                    0
                } else {
                    self.lease()
                },
            }),
            88..=90 => Call::LeaseRevoke(self.lease()),
            91..=94 => Call::LeaseTimeToLive {
                id: self.lease(),
                keys: self.rng.chance(500),
            },
            95..=96 => Call::LeaseLeases,
            _ => Call::LeaseKeepAlive(self.lease()),
        }
    }

    fn lease(&mut self) -> i64 {
        LEASES[self.rng.index(LEASES.len())]
    }

    fn key(&mut self) -> Bytes {
        Bytes::from_static(KEYS[self.rng.index(KEYS.len())].as_bytes())
    }

    fn value(&mut self) -> Bytes {
        if self.rng.chance(100) {
            Bytes::new()
        } else {
            Bytes::from(format!("v{}", self.rng.below(1000)))
        }
    }

    /// An end for `key`: none (one key), "\0" (every key from it), its prefix's end, or
    /// another key (possibly below it: an empty range).
    fn range_end(&mut self, key: &Bytes) -> Bytes {
        match self.rng.below(10) {
            0..=4 => Bytes::new(),
            5 => Bytes::from_static(b"\0"),
            6 | 7 => {
                let mut e = key.to_vec();
                *e.last_mut().expect("keys are not empty") += 1;
                Bytes::from(e)
            }
            _ => self.key(),
        }
    }

    /// 0 (the current revision) mostly, else a revision near the store's: sometimes
    /// compacted, sometimes in the future.
    fn revision(&mut self) -> i64 {
        if self.rng.chance(700) {
            0
        } else {
            self.revision_near()
        }
    }

    fn revision_near(&mut self) -> i64 {
        self.rng.range(1, self.writes as u64 + 4) as i64
    }

    fn put(&mut self) -> pb::PutRequest {
        let ignore_value = self.rng.chance(30);
        pb::PutRequest {
            key: self.key(),
            // A value with ignore_value is refused ("value is provided"): sometimes.
            value: if ignore_value && self.rng.chance(700) {
                Bytes::new()
            } else {
                self.value()
            },
            lease: if self.rng.chance(200) {
                self.lease()
            } else {
                0
            },
            prev_kv: self.rng.chance(300),
            ignore_value,
            ignore_lease: self.rng.chance(30),
        }
    }

    fn range(&mut self) -> pb::RangeRequest {
        let key = self.key();
        let range_end = self.range_end(&key);
        let rev_bound = |g: &mut Gen| {
            if g.rng.chance(60) {
                g.revision_near()
            } else {
                0
            }
        };
        pb::RangeRequest {
            key,
            range_end,
            limit: if self.rng.chance(400) {
                self.rng.range(1, 4) as i64
            } else {
                0
            },
            revision: self.revision(),
            sort_order: if self.rng.chance(250) {
                self.rng.below(3) as i32
            } else {
                0
            },
            sort_target: if self.rng.chance(250) {
                self.rng.below(5) as i32
            } else {
                0
            },
            serializable: false,
            keys_only: self.rng.chance(100),
            count_only: self.rng.chance(100),
            min_mod_revision: rev_bound(self),
            max_mod_revision: rev_bound(self),
            min_create_revision: rev_bound(self),
            max_create_revision: rev_bound(self),
        }
    }

    fn delete(&mut self) -> pb::DeleteRangeRequest {
        let key = self.key();
        pb::DeleteRangeRequest {
            range_end: self.range_end(&key),
            key,
            prev_kv: self.rng.chance(300),
        }
    }

    fn compare(&mut self) -> pb::Compare {
        use pb::compare::TargetUnion as U;
        let target = self.rng.below(5) as i32;
        let union = match target {
            0 => U::Version(self.rng.below(4) as i64),
            1 => U::CreateRevision(self.revision_near()),
            2 => U::ModRevision(if self.rng.chance(300) {
                0
            } else {
                self.revision_near()
            }),
            3 => U::Value(self.value()),
            _ => U::Lease(if self.rng.chance(500) {
                0
            } else {
                self.lease()
            }),
        };
        let key = self.key();
        pb::Compare {
            result: self.rng.below(4) as i32,
            target,
            range_end: if self.rng.chance(150) {
                self.range_end(&key)
            } else {
                Bytes::new()
            },
            key,
            target_union: Some(union),
        }
    }

    fn op(&mut self, depth: u32) -> pb::RequestOp {
        use pb::request_op::Request as R;
        let r = match self.rng.below(10) {
            // No ignore_value/ignore_lease inside a txn: after a `[key, "\0")` delete of the
            // same key, etcd 3.4 panics on it (README, "Where ringkv's data model differs").
            0..=3 => R::RequestPut(pb::PutRequest {
                ignore_value: false,
                ignore_lease: false,
                ..self.put()
            }),
            4..=6 => R::RequestRange(self.range()),
            7 | 8 => R::RequestDeleteRange(self.delete()),
            _ if depth > 0 => R::RequestTxn(self.txn(depth - 1)),
            _ => R::RequestRange(self.range()),
        };
        pb::RequestOp { request: Some(r) }
    }

    fn txn(&mut self, depth: u32) -> pb::TxnRequest {
        let compares = self.rng.below(3) as usize;
        let success = self.rng.below(4) as usize;
        let failure = self.rng.below(4) as usize;
        pb::TxnRequest {
            compare: (0..compares).map(|_| self.compare()).collect(),
            success: (0..success).map(|_| self.op(depth)).collect(),
            failure: (0..failure).map(|_| self.op(depth)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_sequence_and_every_kind_of_call() {
        let a = Gen::calls(7, 500);
        assert_eq!(a, Gen::calls(7, 500));
        assert_ne!(a, Gen::calls(8, 500));
        let mut kinds: Vec<&str> = a.iter().map(Call::name).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), 10, "{kinds:?}");
        // Nested txns occur.
        assert!(a.iter().any(|c| matches!(c, Call::Txn(t)
            if t.success.iter().chain(&t.failure).any(|o| matches!(o.request,
                Some(pb::request_op::Request::RequestTxn(_)))))));
    }
}
