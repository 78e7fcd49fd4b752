//! A whole store on one thread: the shards, the sequencer and the queues between them, run
//! step by step in an order the caller picks.
//!
//! The node runs the same parts on its executors (shards on theirs, the sequencer on the
//! raft core); this composition is what the property test and the simulator run, with the
//! interleaving of the cross-shard messages chosen by a seed so that every run replays.
//! Owns its shards and sequencer; touches nothing else.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::command::Command;
use crate::controls::Controls;
use crate::parts::{Decision, Index, merge_range_with};
use crate::sequencer::Sequencer;
use crate::shard::{Resolution, Routed, ShardStore, ToSequencer, participants};
use crate::types::{
    Applied, LeaseId, LeaseInfo, RangeRequest, RangeResponse, Revision, StoreError,
};

enum ToShard {
    Resolution(Arc<Resolution>),
    Decision(Index, Arc<Decision>),
}

pub struct Store {
    shards: Vec<ShardStore>,
    seq: Sequencer,
    /// The last index handed out.
    index: Index,
    inbox: Vec<VecDeque<ToShard>>,
    /// Per shard: the watermark it was last handed (`step` hands it the current index).
    handed: Vec<Index>,
    to_seq: VecDeque<ToSequencer>,
    answers: BTreeMap<Index, Applied>,
    controls: Controls,
}

impl Store {
    pub fn new(shards: usize) -> Store {
        Store::from_shards(
            (0..shards).map(|s| ShardStore::new(s, shards)).collect(),
            0,
            1,
        )
    }

    pub(crate) fn from_shards(shards: Vec<ShardStore>, index: Index, revision: Revision) -> Store {
        let n = shards.len();
        Store {
            seq: Sequencer::new(n, index, revision),
            shards,
            index,
            inbox: (0..n).map(|_| VecDeque::new()).collect(),
            handed: vec![index; n],
            to_seq: VecDeque::new(),
            answers: BTreeMap::new(),
            controls: Controls::default(),
        }
    }

    /// Turns negative controls on in every part (simulator builds with
    /// `negative-controls` only; panics otherwise).
    pub fn set_controls(&mut self, controls: Controls) {
        controls.check();
        self.controls = controls;
        self.seq.set_controls(controls);
        for s in &mut self.shards {
            s.set_controls(controls);
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Hands out the entry at the next index (its answer is kept once known).
    pub fn submit(&mut self, cmd: Command) -> Index {
        self.index += 1;
        let i = self.index;
        let e = Routed {
            index: i,
            participants: participants(&cmd, self.shards.len()),
            cmd: Arc::new(cmd),
            answer: true,
        };
        self.seq.expect(&e);
        for (s, shard) in self.shards.iter_mut().enumerate() {
            if e.participants >> s & 1 == 1 {
                shard.push(e.clone());
            }
        }
        i
    }

    /// An entry that is not a store command (no-op, membership): only the watermark moves.
    pub fn skip(&mut self) -> Index {
        self.index += 1;
        self.index
    }

    /// Runs one actor: shard `a` (for `a < shards`: takes its inbox, applies what it can)
    /// or the sequencer (`a == shards`). False when it had nothing to do.
    pub fn step(&mut self, a: usize) -> bool {
        let n = self.shards.len();
        if a < n {
            let mut moved = false;
            // The watermark comes once per batch of entries, as the node's raft core hands
            // them out (`ToShard::Apply { entries, through }`): a shard that took part in
            // none of the last few entries learns that only now.
            if self.handed[a] < self.index {
                self.handed[a] = self.index;
                self.shards[a].push_through(self.index);
                moved = true;
            }
            while let Some(m) = self.inbox[a].pop_front() {
                moved = true;
                match m {
                    ToShard::Resolution(r) => self.shards[a].resolution(&r),
                    ToShard::Decision(i, d) => self.shards[a].decision(i, d),
                }
            }
            let out = self.shards[a].pump();
            moved |= !out.is_empty();
            self.to_seq.extend(out);
            moved
        } else {
            let mut moved = false;
            while let Some(m) = self.to_seq.pop_front() {
                moved = true;
                match m {
                    ToSequencer::Report(r) => self.seq.report(r),
                    ToSequencer::Partial(p) => {
                        if let Some((i, parts, d)) = self.seq.partial(p) {
                            for s in 0..n {
                                if parts >> s & 1 == 1 {
                                    self.inbox[s].push_back(ToShard::Decision(i, d.clone()));
                                }
                            }
                        }
                    }
                }
            }
            if let Some(r) = self.seq.resolve() {
                moved = true;
                let r = Arc::new(r);
                for q in &mut self.inbox {
                    q.push_back(ToShard::Resolution(r.clone()));
                }
            }
            for (i, a) in self.seq.answers() {
                moved = true;
                self.answers.insert(i, a);
            }
            moved
        }
    }

    /// Runs actors chosen by `pick(n)` (an index below `n`) until nothing moves.
    pub fn run(&mut self, mut pick: impl FnMut(usize) -> usize) {
        let actors = self.shards.len() + 1;
        let mut idle = 0;
        while idle < 4 * actors {
            if self.step(pick(actors)) {
                idle = 0;
            } else {
                idle += 1;
            }
        }
        // Whatever the picks were, finish in a fixed order.
        while (0..actors).map(|a| self.step(a)).fold(false, |a, b| a | b) {}
        assert!(self.is_quiet(), "the store stopped with work left");
    }

    /// Runs every actor in turn until nothing moves.
    pub fn run_in_order(&mut self) {
        let actors = self.shards.len() + 1;
        while (0..actors).map(|a| self.step(a)).fold(false, |a, b| a | b) {}
        assert!(self.is_quiet(), "the store stopped with work left");
    }

    /// Everything handed out is applied and resolved everywhere.
    pub fn is_quiet(&self) -> bool {
        self.seq.resolved().0 == self.index
            && self
                .shards
                .iter()
                .all(|s| s.resolved().0 == self.index && !s.is_waiting())
            && self.to_seq.is_empty()
            && self.inbox.iter().all(VecDeque::is_empty)
    }

    /// The answer of the entry at `i`, once known.
    pub fn take_answer(&mut self, i: Index) -> Option<Applied> {
        self.answers.remove(&i)
    }

    /// Applies one command and answers it (everything before it is finished too).
    pub fn apply(&mut self, cmd: Command) -> Applied {
        let i = self.submit(cmd);
        self.run_in_order();
        self.take_answer(i).expect("an answer")
    }

    /// The current revision (of the last resolution).
    pub fn revision(&self) -> Revision {
        self.seq.resolved().1
    }

    pub fn index(&self) -> Index {
        self.index
    }

    pub fn compact_revision(&self) -> Revision {
        self.shards[0].compact_revision()
    }

    pub fn alarm(&self) -> bool {
        self.shards[0].alarm()
    }

    pub fn state_bytes(&self) -> u64 {
        self.shards.iter().map(ShardStore::state_bytes).sum()
    }

    pub fn shards(&self) -> &[ShardStore] {
        &self.shards
    }

    /// A range at the current state (revision <= 0) or at `r.revision`, read as a node
    /// does: every shard's part at one resolved revision, merged.
    pub fn range(&self, r: &RangeRequest) -> Result<(Revision, RangeResponse), StoreError> {
        assert!(self.is_quiet(), "reading a store with work in flight");
        let current = self.revision();
        let at = read_revision(r.revision, current, self.compact_revision())?;
        let mut parts = Vec::with_capacity(self.shards.len());
        for s in &self.shards {
            parts.push(s.read(r, at)?);
        }
        Ok((current, merge_range_with(r, parts, &self.controls)))
    }

    /// A read-only txn served as a read at the current revision, as a node does: every
    /// participant's partial at that revision, one decision, every participant's part.
    pub fn read_txn(
        &self,
        t: &crate::types::TxnRequest,
    ) -> Result<(Revision, crate::types::TxnResponse), StoreError> {
        assert!(self.is_quiet(), "reading a store with work in flight");
        let at = self.revision();
        let shards = participants(&Command::Txn(t.clone()), self.shards.len());
        let involved: Vec<&ShardStore> = (0..self.shards.len())
            .filter(|s| shards >> s & 1 == 1)
            .map(|s| &self.shards[s])
            .collect();
        let partials: Vec<_> = involved.iter().map(|s| s.read_partial(t, at)).collect();
        let d = crate::parts::decide(t, &partials);
        if let Some(e) = d.error {
            return Err(e);
        }
        let parts = involved
            .iter()
            .map(|s| Ok(crate::parts::Part::Txn(s.read_txn(t, &d, at))))
            .collect();
        match crate::parts::merge(&Command::Txn(t.clone()), parts)? {
            crate::types::Response::Txn(r) => Ok((at, r)),
            other => unreachable!("a txn answered {other:?}"),
        }
    }

    /// The store hash at `revision` (0: the current one).
    pub fn hash(&self, revision: Revision) -> Result<u64, StoreError> {
        assert!(self.is_quiet());
        let at = read_revision(revision, self.revision(), self.compact_revision())?;
        Ok(self
            .shards
            .iter()
            .map(|s| s.hash(at))
            .fold(0u64, u64::wrapping_add))
    }

    /// The whole store as a snapshot body (every shard's keys; see `snapshot`).
    pub fn snapshot(&self) -> Vec<u8> {
        assert!(self.is_quiet(), "a snapshot with work in flight");
        crate::snapshot::encode(&self.shards.iter().collect::<Vec<_>>())
    }

    /// A store of `shards` shards from a snapshot body (taken with any shard count).
    pub fn restore(data: &[u8], shards: usize) -> Result<Store, String> {
        let parts = (0..shards)
            .map(|s| crate::snapshot::decode(data, s, shards))
            .collect::<Result<Vec<_>, _>>()?;
        let h = crate::snapshot::header(data)?;
        Ok(Store::from_shards(parts, h.index, h.revision))
    }

    pub fn lease(&self, id: LeaseId) -> Option<LeaseInfo> {
        let mut info = self.shards[0].lease(id)?;
        for s in &self.shards[1..] {
            info.keys
                .extend(s.lease(id).expect("lease tables agree").keys);
        }
        info.keys.sort();
        Some(info)
    }

    pub fn leases(&self) -> Vec<LeaseId> {
        self.shards[0].leases()
    }
}

/// The revision a read asks for, checked as etcd's `rangeKeys`: <= 0 is the current one;
/// above it is a future revision; below the compaction point is compacted.
pub fn read_revision(
    asked: Revision,
    current: Revision,
    compacted: Revision,
) -> Result<Revision, StoreError> {
    let at = if asked <= 0 { current } else { asked };
    if at > current {
        return Err(StoreError::FutureRevision);
    }
    if at < compacted {
        return Err(StoreError::Compacted);
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;
    use bytes::Bytes;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(k: &str, v: &str) -> Command {
        Command::Put(PutRequest {
            key: b(k),
            value: b(v),
            prev_kv: true,
            ..Default::default()
        })
    }

    fn get_all(s: &Store) -> Vec<(String, Revision, Revision, i64)> {
        let (_, r) = s
            .range(&RangeRequest {
                key: Bytes::from_static(&[0]),
                range_end: Bytes::from_static(&[0]),
                ..Default::default()
            })
            .unwrap();
        r.kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                )
            })
            .collect()
    }

    #[test]
    fn revisions_count_changes_not_entries_on_any_number_of_shards() {
        for shards in 1..=4 {
            let mut s = Store::new(shards);
            assert_eq!(s.revision(), 1);
            assert_eq!(s.apply(put("a", "1")).revision, 2);
            s.skip(); // a no-op entry: no revision
            assert_eq!(s.apply(put("b", "1")).revision, 3);
            let none = Command::DeleteRange(DeleteRangeRequest {
                key: b("zz"),
                ..Default::default()
            });
            assert_eq!(s.apply(none).revision, 3, "a delete of nothing");
            let a = s.apply(put("a", "2"));
            assert_eq!(a.revision, 4);
            let Ok(Response::Put(p)) = a.result else {
                panic!("{a:?}")
            };
            let prev = p.prev_kv.unwrap();
            assert_eq!((prev.mod_revision, prev.version), (2, 1));
            let all = Command::DeleteRange(DeleteRangeRequest {
                key: b("a"),
                range_end: Bytes::from_static(&[0]),
                prev_kv: true,
            });
            let d = s.apply(all);
            assert_eq!(d.revision, 5, "one revision for a delete across shards");
            let Ok(Response::DeleteRange(d)) = d.result else {
                panic!()
            };
            assert_eq!(d.deleted, 2);
            assert_eq!(
                d.prev_kvs
                    .iter()
                    .map(|kv| kv.mod_revision)
                    .collect::<Vec<_>>(),
                vec![4, 3]
            );
            assert_eq!(s.apply(put("a", "3")).revision, 6);
            assert_eq!(get_all(&s), vec![("a".into(), 6, 6, 1)]);
        }
    }

    #[test]
    fn a_txn_across_shards_takes_one_path_and_one_revision() {
        // Keys that land on different shards of 4.
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let mut on: Vec<String> = Vec::new();
        for k in &keys {
            if !on
                .iter()
                .any(|o| crate::route(o.as_bytes(), 4) == crate::route(k.as_bytes(), 4))
            {
                on.push(k.clone());
            }
        }
        assert_eq!(on.len(), 4);
        let mut s = Store::new(4);
        s.apply(put(&on[0], "x"));
        let cas = |expect_mod: Revision| {
            Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod(expect_mod),
                    key: b(&on[0]),
                    range_end: Bytes::new(),
                }],
                success: vec![
                    RequestOp::Put(PutRequest {
                        key: b(&on[1]),
                        value: b("s1"),
                        ..Default::default()
                    }),
                    RequestOp::Put(PutRequest {
                        key: b(&on[2]),
                        value: b("s2"),
                        ..Default::default()
                    }),
                ],
                failure: vec![RequestOp::Range(RangeRequest {
                    key: b("k"),
                    range_end: b("l"),
                    ..Default::default()
                })],
            })
        };
        let a = s.apply(cas(2));
        assert_eq!(a.revision, 3);
        assert!(matches!(a.result, Ok(Response::Txn(ref t)) if t.succeeded));
        let f = s.apply(cas(1));
        assert_eq!(
            f.revision, 3,
            "a failed compare with a read-only branch changes nothing"
        );
        let Ok(Response::Txn(t)) = f.result else {
            panic!()
        };
        assert!(!t.succeeded);
        let ResponseOp::Range(r) = &t.responses[0] else {
            panic!()
        };
        assert_eq!(r.count, 3);
        assert!(r.kvs.windows(2).all(|w| w[0].key < w[1].key));
        assert_eq!(r.kvs.iter().filter(|kv| kv.mod_revision == 3).count(), 2);
    }

    #[test]
    fn pipelined_entries_and_any_interleaving_give_the_sequential_answers() {
        let mut rng = 0x1234_5678_u64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let cmds: Vec<Command> = (0..200)
            .map(|i| {
                let k = format!("k{}", i % 7);
                match i % 5 {
                    0 | 1 => put(&k, &format!("v{i}")),
                    2 => Command::DeleteRange(DeleteRangeRequest {
                        key: b(&k),
                        ..Default::default()
                    }),
                    3 => Command::Txn(TxnRequest {
                        compare: vec![Compare {
                            result: CompareResult::Greater,
                            target: CompareTarget::Mod(i as i64 / 3),
                            key: b(&k),
                            range_end: Bytes::new(),
                        }],
                        success: vec![RequestOp::Put(PutRequest {
                            key: b(&format!("k{}", (i + 3) % 7)),
                            value: b("t"),
                            prev_kv: true,
                            ..Default::default()
                        })],
                        failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                            key: b("k"),
                            range_end: b("k5"),
                            prev_kv: true,
                        })],
                    }),
                    _ => Command::Compact {
                        revision: i as i64 / 4,
                        physical: false,
                    },
                }
            })
            .collect();
        let mut one = Store::new(1);
        let expect: Vec<Applied> = cmds.iter().map(|c| one.apply(c.clone())).collect();
        for shards in [2, 3, 5] {
            let mut s = Store::new(shards);
            let mut got = Vec::new();
            for batch in cmds.chunks(9) {
                let ids: Vec<Index> = batch.iter().map(|c| s.submit(c.clone())).collect();
                s.run(&mut next);
                got.extend(ids.into_iter().map(|i| s.take_answer(i).expect("answered")));
            }
            for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
                assert_eq!(g, e, "{shards} shards, command {i}: {:?}", cmds[i]);
            }
            assert_eq!(get_all(&s), get_all(&one));
            assert_eq!(s.hash(0), one.hash(0));
        }
    }

    /// Each switch changes what the store answers (the simulator shows its checkers catch
    /// it; here only that it does something).
    #[cfg(feature = "negative-controls")]
    #[test]
    fn each_negative_control_changes_an_answer() {
        let on = |f: fn(&mut Controls)| {
            let mut c = Controls::default();
            f(&mut c);
            c
        };
        let range_all = RangeRequest {
            key: Bytes::from_static(&[0]),
            range_end: Bytes::from_static(&[0]),
            ..Default::default()
        };
        let read_only = || {
            Command::Txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Range(range_all.clone())],
                failure: vec![],
            })
        };
        for (name, controls) in [
            ("off", Controls::default()),
            (
                "read-only txn",
                on(|c| c.read_only_txn_bumps_revision = true),
            ),
            ("skips", on(|c| c.sequencer_skips_revisions = true)),
            ("drops", on(|c| c.range_drops_a_part = true)),
            ("no wait", on(|c| c.compare_without_waiting = true)),
        ] {
            let mut s = Store::new(4);
            s.set_controls(controls);
            for i in 0..45 {
                s.apply(put(&format!("k{i}"), "v"));
            }
            let rev = s.revision();
            assert_eq!(rev == 47, name == "skips", "{name}: revision {rev}");
            let after = s.apply(read_only()).revision;
            assert_eq!(after == rev + 1, name == "read-only txn", "{name}");
            let (_, all) = s.range(&range_all).unwrap();
            assert_eq!(all.count < 45, name == "drops", "{name}: {}", all.count);
            // A compare on a mod revision still pending: put a, put b, put a, then
            // mod(a) == its revision, the shard applying all four before any resolution.
            let mut s = Store::new(1);
            s.set_controls(controls);
            let base = s.revision();
            s.submit(put("a", "1"));
            s.submit(put("b", "1"));
            s.submit(put("a", "2"));
            let i = s.submit(Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod(base + 3),
                    key: b("a"),
                    range_end: Bytes::new(),
                }],
                success: vec![],
                failure: vec![],
            }));
            s.step(0);
            s.run_in_order();
            let Ok(Response::Txn(t)) = s.take_answer(i).unwrap().result else {
                panic!()
            };
            assert_eq!(t.succeeded, name != "no wait", "{name}");
        }
    }

    #[test]
    fn a_snapshot_copy_is_unchanged_by_what_the_store_applies_after_it() {
        let mut s = Store::new(2);
        for i in 0..40 {
            s.apply(put(&format!("k{}", i % 8), &format!("v{i}")));
        }
        let before = s.snapshot();
        // Copy each shard's keys in steps of 3 keys, as a shard executor does.
        let header = crate::snapshot::header_bytes(&s.shards[0].header());
        let mut encoders: Vec<_> = s
            .shards
            .iter()
            .map(|sh| {
                let mut c = crate::snapshot::KeyCopier::new(sh);
                while !c.copy(3) {}
                c.finish()
            })
            .collect();
        // The store goes on: new versions of copied keys, new keys, a delete, compaction.
        for i in 0..20 {
            s.apply(put(&format!("k{}", i % 12), &format!("w{i}")));
        }
        s.apply(Command::DeleteRange(DeleteRangeRequest {
            key: b("k1"),
            ..Default::default()
        }));
        s.apply(Command::Compact {
            revision: s.revision() - 2,
            physical: true,
        });
        // The copies encode the state as it was (in steps of 10 bytes).
        let parts: Vec<(Vec<u8>, u64)> = encoders
            .iter_mut()
            .map(|e| {
                let mut out = Vec::new();
                while !e.encode(&mut out, 10) {}
                (out, e.count)
            })
            .collect();
        assert_eq!(crate::snapshot::assemble(&header, &parts), before);
        // And the store's own state moved on.
        assert_ne!(s.snapshot(), before);
        let r = Store::restore(&before, 3).unwrap();
        assert_eq!(r.revision(), 41);
        assert_eq!(get_all(&r).len(), 8);
    }

    #[test]
    fn a_snapshot_restores_on_any_shard_count_with_the_same_hash_and_history() {
        let mut s = Store::new(3);
        s.apply(Command::LeaseGrant { id: 7, ttl: 10 });
        for i in 0..30 {
            let mut p = PutRequest {
                key: b(&format!("k{}", i % 6)),
                value: b(&format!("v{i}")),
                ..Default::default()
            };
            if i % 4 == 0 {
                p.lease = 7;
            }
            s.apply(Command::Put(p));
        }
        s.apply(Command::DeleteRange(DeleteRangeRequest {
            key: b("k4"),
            ..Default::default()
        }));
        s.apply(Command::Compact {
            revision: 12,
            physical: true,
        });
        s.apply(Command::LeaseCheckpoint {
            checkpoints: vec![(7, 4)],
        });
        let snap = s.snapshot();
        for shards in [1, 2, 3, 5] {
            let mut r = Store::restore(&snap, shards).unwrap();
            assert_eq!(r.revision(), s.revision());
            assert_eq!(r.compact_revision(), 12);
            for rev in [0, 12, 20, s.revision()] {
                assert_eq!(r.hash(rev), s.hash(rev), "{shards} shards, rev {rev}");
            }
            assert_eq!(r.hash(11), Err(StoreError::Compacted));
            assert_eq!(r.lease(7), s.lease(7));
            assert_eq!(r.lease(7).unwrap().remaining_ttl, Some(4));
            assert_eq!(get_all(&r), get_all(&s));
            // And both go on the same way.
            let a = r.apply(Command::LeaseRevoke { id: 7 });
            let mut s2 = Store::restore(&snap, 3).unwrap();
            assert_eq!(a, s2.apply(Command::LeaseRevoke { id: 7 }));
            assert_eq!(r.hash(0), s2.hash(0));
        }
        for cut in [0, 1, 10, snap.len() / 2, snap.len() - 1] {
            assert!(Store::restore(&snap[..cut], 2).is_err(), "cut at {cut}");
        }
    }
}
