//! The store workload: the operations of etcd's data model that clients issue besides the
//! register writes and reads (which `world` keeps for the per-key checker), over a small
//! key set of their own.
//!
//! Puts (prev_kv, leases, now and then ignore_value), deletes of one key, of ranges and of
//! the prefix, ranges (one key, the prefix, spans, from a key on, everything; limits,
//! counts, keys only, sorts, revision filters, now and then at a past revision) under
//! every read policy, Kubernetes' compare-and-swap on one key's mod revision (the
//! expected revision is the one the client last saw), txns over several keys of several
//! shards (compares, puts, deletes, ranges, now and then a nested txn), read-only txns,
//! compactions a little behind the revision the client last saw, lease grants and
//! revokes. Writes are never retried: a time-out is an unknown outcome, as for the
//! register writes. The model keys are never touched by a register operation, and the
//! register keys are only ever read here, so the per-key checker sees all their writes;
//! `storecheck` checks these operations on the whole store.
//!
//! Runs on the simulator's thread, called by `World::client_step`; every choice is a draw
//! from the run's one random stream (a seed replays). Must not touch real I/O or clocks.

use std::collections::BTreeMap;

use bytes::Bytes;
use ringkv_raft::{NodeId, ReadPolicy};
use ringkv_store::{
    Applied, Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, LeaseId,
    PutRequest, RangeRequest, RangeResponse, RequestOp, Response, ResponseOp, Revision, SortOrder,
    SortTarget, Store, StoreError, TxnRequest, TxnResponse, prefix_end,
};

use super::checker::OpKind;
use super::world::{HistOp, World, value_bytes};

/// The keys the store workload writes: under one prefix, spread over the shards of every
/// shard count a node may have (a test checks it).
pub(crate) const MODEL_KEYS: [&[u8]; 6] = [b"m/aa", b"m/ba", b"m/ca", b"m/da", b"m/ea", b"m/fa"];
const MODEL_PREFIX: &[u8] = b"m/";
/// Lease ids granted, attached and revoked (1 to this).
const LEASES: u64 = 3;

/// A store operation of the history.
#[derive(Clone, Debug)]
pub(crate) struct StoreOp {
    pub(crate) req: StoreReq,
    /// For an answered read: the store revision it was served at (its header revision) and
    /// its answer.
    pub(crate) read: Option<(Revision, Result<RangeResponse, StoreError>)>,
}

#[derive(Clone, Debug)]
pub(crate) enum StoreReq {
    /// Through the log.
    Write(Command),
    /// Served by a node's store under the operation's read policy.
    Read(RangeRequest),
}

impl StoreOp {
    /// Serves the read from `store` (at rest at the node's applied index).
    pub(crate) fn serve(&mut self, store: &Store) {
        let StoreReq::Read(r) = &self.req else {
            panic!("sim: serving a write")
        };
        let at = store.revision();
        self.read = Some((at, store.range(r).map(|(_, resp)| resp)));
    }
}

/// What a client learnt from its store operations' answers, to aim its next ones.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    /// The highest header revision seen.
    revision: Revision,
    /// The mod revision each model key had when last seen (0: absent).
    mods: BTreeMap<Bytes, Revision>,
}

impl Seen {
    /// An acknowledged write of `op` answered `a`.
    pub(crate) fn learn_write(&mut self, op: &StoreOp, a: &Applied) {
        self.revision = self.revision.max(a.revision);
        let (StoreReq::Write(cmd), Ok(resp)) = (&op.req, &a.result) else {
            return;
        };
        match (cmd, resp) {
            (Command::Put(p), _) => {
                self.mods.insert(p.key.clone(), a.revision);
            }
            (Command::DeleteRange(d), Response::DeleteRange(_)) if d.range_end.is_empty() => {
                self.mods.insert(d.key.clone(), 0);
            }
            (Command::Txn(t), Response::Txn(r)) => self.learn_txn(t, r, a.revision),
            _ => {}
        }
    }

    fn learn_txn(&mut self, t: &TxnRequest, r: &TxnResponse, revision: Revision) {
        let ops = if r.succeeded { &t.success } else { &t.failure };
        for (op, resp) in ops.iter().zip(&r.responses) {
            match (op, resp) {
                (RequestOp::Put(p), _) => {
                    self.mods.insert(p.key.clone(), revision);
                }
                (RequestOp::DeleteRange(d), _) if d.range_end.is_empty() => {
                    self.mods.insert(d.key.clone(), 0);
                }
                (RequestOp::Range(q), ResponseOp::Range(r)) => self.learn_range(q, r),
                (RequestOp::Txn(n), ResponseOp::Txn(r)) => self.learn_txn(n, r, revision),
                _ => {}
            }
        }
    }

    /// An answered read.
    pub(crate) fn learn_read(&mut self, op: &StoreOp) {
        let (StoreReq::Read(q), Some((at, answer))) = (&op.req, &op.read) else {
            return;
        };
        self.revision = self.revision.max(*at);
        if let Ok(r) = answer {
            if q.revision <= 0 {
                self.learn_range(q, r);
            }
        }
    }

    fn learn_range(&mut self, q: &RangeRequest, r: &RangeResponse) {
        for kv in &r.kvs {
            if kv.key.starts_with(MODEL_PREFIX) {
                self.mods.insert(kv.key.clone(), kv.mod_revision);
            }
        }
        if q.range_end.is_empty() && r.count == 0 && q.key.starts_with(MODEL_PREFIX) {
            self.mods.insert(q.key.clone(), 0);
        }
    }
}

fn key(i: usize) -> Bytes {
    Bytes::from_static(MODEL_KEYS[i])
}

impl World {
    /// Client `c` issues one store operation at `node`.
    pub(crate) fn store_op(&mut self, c: usize, node: NodeId) {
        let op = self.history.len();
        let roll = self.rng.below(1000);
        let req = match roll {
            0..=329 => {
                let policy = match self.rng.below(100) {
                    0..=44 => ReadPolicy::Linearizable,
                    45..=84 => ReadPolicy::Lease,
                    _ => ReadPolicy::Eventual,
                };
                self.store_read(c, node, policy);
                return;
            }
            330..=459 => {
                let k = self.rng.index(MODEL_KEYS.len());
                Command::Put(self.gen_put(k))
            }
            460..=539 => Command::DeleteRange(self.gen_delete()),
            540..=719 => Command::Txn(self.gen_cas(c)),
            720..=839 => Command::Txn(self.gen_txn(c)),
            840..=899 => Command::Txn(self.gen_read_txn(c)),
            900..=934 => {
                let seen = self.clients[c].seen.revision;
                Command::Compact {
                    revision: (seen - self.rng.below(30) as Revision).max(1),
                    physical: self.rng.chance(500),
                }
            }
            935..=969 => Command::LeaseGrant {
                id: 1 + self.rng.below(LEASES) as LeaseId,
                ttl: self.rng.range(10, 60) as i64,
            },
            _ => Command::LeaseRevoke {
                id: 1 + self.rng.below(LEASES) as LeaseId,
            },
        };
        let payload = req.encode();
        self.push_store_op(StoreReq::Write(req), None);
        self.stats.store_ops += 1;
        self.propose(c, node, op, payload);
    }

    /// Client `c` reads a range at `node` under `policy`.
    pub(crate) fn store_read(&mut self, c: usize, node: NodeId, policy: ReadPolicy) {
        let op = self.history.len();
        let r = self.gen_range(c);
        self.push_store_op(StoreReq::Read(r), Some(policy));
        self.stats.store_ops += 1;
        self.read(c, node, op, policy);
    }

    fn push_store_op(&mut self, req: StoreReq, policy: Option<ReadPolicy>) {
        let mut h = HistOp::new(u64::MAX, OpKind::Read(None), policy, self.now);
        h.store = Some(Box::new(StoreOp { req, read: None }));
        self.history.push(h);
    }

    fn unique_value(&mut self) -> Bytes {
        let v = self.next_value;
        self.next_value += 1;
        value_bytes(v)
    }

    fn lease(&mut self, per_mille: u64) -> LeaseId {
        if self.rng.chance(per_mille) {
            1 + self.rng.below(LEASES) as LeaseId
        } else {
            0
        }
    }

    /// A put of model key `k`: a unique value, prev_kv half the time, sometimes a lease,
    /// rarely ignore_value (which needs the key to exist).
    fn gen_put(&mut self, k: usize) -> PutRequest {
        let mut p = PutRequest {
            key: key(k),
            value: self.unique_value(),
            lease: self.lease(150),
            prev_kv: self.rng.chance(500),
            ..Default::default()
        };
        if self.rng.chance(30) {
            p.ignore_value = true;
            p.value = Bytes::new();
        }
        p
    }

    /// One model key, a span of them, or the whole prefix.
    fn gen_delete(&mut self) -> DeleteRangeRequest {
        let (key, range_end) = match self.rng.below(100) {
            0..=59 => (key(self.rng.index(MODEL_KEYS.len())), Bytes::new()),
            60..=84 => self.model_span(),
            _ => (Bytes::from_static(MODEL_PREFIX), prefix_end(MODEL_PREFIX)),
        };
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.rng.chance(500),
        }
    }

    /// `[a, b)` over two model keys, `a < b`.
    fn model_span(&mut self) -> (Bytes, Bytes) {
        let a = self.rng.index(MODEL_KEYS.len() - 1);
        let b = a + 1 + self.rng.index(MODEL_KEYS.len() - 1 - a);
        (key(a), key(b))
    }

    /// A read over model keys, now and then over register keys too (only read here).
    fn gen_range(&mut self, c: usize) -> RangeRequest {
        let (key, range_end) = match self.rng.below(20) {
            0..=6 => (key(self.rng.index(MODEL_KEYS.len())), Bytes::new()),
            7..=11 => (Bytes::from_static(MODEL_PREFIX), prefix_end(MODEL_PREFIX)),
            12..=14 => self.model_span(),
            15 | 16 => (
                key(self.rng.index(MODEL_KEYS.len())),
                Bytes::from_static(&[0]),
            ),
            17 | 18 => (Bytes::from_static(&[0]), Bytes::from_static(&[0])),
            _ => (Bytes::from_static(b"r/0"), Bytes::new()),
        };
        let mut r = RangeRequest {
            key,
            range_end,
            ..Default::default()
        };
        if self.rng.chance(250) {
            r.limit = self.rng.range(1, 3) as i64;
        }
        r.count_only = self.rng.chance(80);
        r.keys_only = self.rng.chance(100);
        if self.rng.chance(200) {
            r.sort_order =
                [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][self.rng.index(3)];
            r.sort_target = [
                SortTarget::Key,
                SortTarget::Version,
                SortTarget::Create,
                SortTarget::Mod,
                SortTarget::Value,
            ][self.rng.index(5)];
        }
        let seen = self.clients[c].seen.revision;
        if self.rng.chance(120) {
            r.revision = (seen - self.rng.below(20) as Revision).max(1);
        }
        if self.rng.chance(50) {
            r.min_mod_revision = (seen - self.rng.below(50) as Revision).max(1);
        }
        if self.rng.chance(30) {
            r.max_create_revision = (seen - self.rng.below(50) as Revision).max(1);
        }
        r
    }

    /// Kubernetes' optimistic update: put the key if its mod revision is still the one
    /// last seen (0: create it if absent), else read it.
    fn gen_cas(&mut self, c: usize) -> TxnRequest {
        let k = self.rng.index(MODEL_KEYS.len());
        let expect = self.clients[c].seen.mods.get(MODEL_KEYS[k]).copied();
        TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Mod(expect.unwrap_or(0)),
                key: key(k),
                range_end: Bytes::new(),
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: key(k),
                value: self.unique_value(),
                lease: self.lease(100),
                ..Default::default()
            })],
            failure: vec![RequestOp::Range(RangeRequest {
                key: key(k),
                ..Default::default()
            })],
        }
    }

    /// A compare on one model key, aimed near what the client saw.
    fn gen_compare(&mut self, c: usize, k: usize) -> Compare {
        let seen = &self.clients[c].seen;
        let m = seen.mods.get(MODEL_KEYS[k]).copied().unwrap_or(0);
        let rev = seen.revision;
        let (result, target) = match self.rng.below(5) {
            0 => (CompareResult::Greater, CompareTarget::Version(0)),
            1 => (CompareResult::Equal, CompareTarget::Mod(m)),
            2 => (CompareResult::Less, CompareTarget::Mod(rev + 1)),
            3 => (CompareResult::NotEqual, CompareTarget::Create(m)),
            _ => (
                CompareResult::Equal,
                CompareTarget::Lease(self.rng.below(LEASES + 1) as LeaseId),
            ),
        };
        Compare {
            result,
            target,
            key: key(k),
            range_end: Bytes::new(),
        }
    }

    /// A txn over several model keys (so over several shards): compares, then puts,
    /// maybe a delete, a range and a nested txn; the other branch reads or puts.
    fn gen_txn(&mut self, c: usize) -> TxnRequest {
        let mut keys: Vec<usize> = (0..MODEL_KEYS.len()).collect();
        for i in (1..keys.len()).rev() {
            let j = self.rng.index(i + 1);
            keys.swap(i, j);
        }
        let compares = self.rng.below(3) as usize;
        let compare = (0..compares)
            .map(|i| self.gen_compare(c, keys[(i * 2) % keys.len()]))
            .collect();
        let puts = 1 + self.rng.index(3);
        let mut success: Vec<RequestOp> = keys[..puts]
            .iter()
            .map(|&k| {
                let mut p = self.gen_put(k);
                p.ignore_value = false;
                if p.value.is_empty() {
                    p.value = self.unique_value();
                }
                RequestOp::Put(p)
            })
            .collect();
        if self.rng.chance(400) {
            success.push(RequestOp::DeleteRange(DeleteRangeRequest {
                key: key(keys[puts]),
                prev_kv: self.rng.chance(500),
                ..Default::default()
            }));
        }
        if self.rng.chance(400) {
            success.push(RequestOp::Range(RangeRequest {
                key: Bytes::from_static(MODEL_PREFIX),
                range_end: prefix_end(MODEL_PREFIX),
                ..Default::default()
            }));
        }
        if self.rng.chance(150) {
            let k = keys[puts + 1];
            success.push(RequestOp::Txn(TxnRequest {
                compare: vec![self.gen_compare(c, k)],
                success: vec![RequestOp::Put(PutRequest {
                    key: key(k),
                    value: self.unique_value(),
                    ..Default::default()
                })],
                failure: vec![RequestOp::Range(RangeRequest {
                    key: key(k),
                    ..Default::default()
                })],
            }));
        }
        let failure = match self.rng.below(3) {
            0 => vec![],
            1 => vec![RequestOp::Range(RangeRequest {
                key: Bytes::from_static(MODEL_PREFIX),
                range_end: prefix_end(MODEL_PREFIX),
                limit: self.rng.below(3) as i64,
                ..Default::default()
            })],
            _ => vec![RequestOp::Put(PutRequest {
                key: key(keys[MODEL_KEYS.len() - 1]),
                value: self.unique_value(),
                prev_kv: true,
                ..Default::default()
            })],
        };
        let t = TxnRequest {
            compare,
            success,
            failure,
        };
        assert_eq!(t.validate(), Ok(()), "sim: an invalid txn generated: {t:?}");
        t
    }

    /// A txn that only reads: two keys (or a key and the prefix) at one revision.
    fn gen_read_txn(&mut self, c: usize) -> TxnRequest {
        let a = self.rng.index(MODEL_KEYS.len());
        let b = self.rng.index(MODEL_KEYS.len());
        let compare = if self.rng.chance(500) {
            vec![self.gen_compare(c, a)]
        } else {
            vec![]
        };
        let second = if self.rng.chance(300) {
            RangeRequest {
                key: Bytes::from_static(MODEL_PREFIX),
                range_end: prefix_end(MODEL_PREFIX),
                ..Default::default()
            }
        } else {
            RangeRequest {
                key: key(b),
                ..Default::default()
            }
        };
        TxnRequest {
            compare,
            success: vec![
                RequestOp::Range(RangeRequest {
                    key: key(a),
                    ..Default::default()
                }),
                RequestOp::Range(second),
            ],
            failure: vec![RequestOp::Range(RangeRequest {
                key: Bytes::from_static(MODEL_PREFIX),
                range_end: prefix_end(MODEL_PREFIX),
                count_only: true,
                ..Default::default()
            })],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_keys_reach_every_shard_of_every_count() {
        for shards in 1..=4 {
            let mut hit = vec![false; shards];
            for k in MODEL_KEYS {
                hit[ringkv_store::route(k, shards)] = true;
            }
            assert!(hit.iter().all(|h| *h), "{shards} shards: {hit:?}");
        }
        assert!(MODEL_KEYS.windows(2).all(|w| w[0] < w[1]));
    }
}
