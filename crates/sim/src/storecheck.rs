//! The whole-store check: the committed log replayed on the reference model
//! (`ringkv_store::reference::Reference`), every node's revisions and answers held to it,
//! and the clients' store operations (workload.rs) checked for linearizability against it.
//!
//! Runs once at the end of a DiskFirst run, on the simulator's thread. Input: the payload
//! of every applied entry as first applied (every node applies that one sequence:
//! `check_apply`), the revision and answer each index got on the first node to apply it
//! (every other node computed the same: `check_store_entries`), and the client history.
//! Pure: it reads only those; must not touch the world.
//!
//! Why this check, and why it is sound. The per-key register checker searches for an order
//! of the operations; over a whole store with txns, ranges and writes whose outcome is
//! unknown that search would be exponential. It need not search for the order of the
//! writes: Raft fixes it. Every entry the cluster committed, acknowledged or timed out,
//! client write or not, is in the log, and the store applies the log in order; so the log
//! replayed on the reference model gives the one sequence of states the store went
//! through, with each entry's revision and answer. Then:
//! 1. every index's revision and answer as the nodes computed them must be the
//!    reference's (the nodes agree with each other already, checked as they applied);
//! 2. an acknowledged write is linearized at its index: its answer (the one its client
//!    got) must be the index's;
//! 3. an answered read carries the revision it was served at (its header revision), so it
//!    can only be linearized where the store is at that revision: after an index of the
//!    span of indexes whose state has that revision (between two changes, the state
//!    differs only by compactions, which are entries too); its answer must be the
//!    reference's answer at one of those indexes;
//! 4. real time: a point on one line for every operation, an acknowledged write at `2 i`
//!    for its index `i`, a read after index `p` at `2 p + 1`; an operation that returned
//!    before another was invoked must have a point no later than the other's. Writes'
//!    points are fixed, reads may take any point their answer allows; taking operations in
//!    order of invocation and giving each read the earliest point allowed that follows
//!    everything that returned before it was invoked is optimal (a later point only
//!    constrains more), so a history fails this only if no choice of points passes.
//!    Eventual reads are held to 3 only (a consistent state, however stale).
//!
//! A history that passes is linearizable (the points are the linearization). One that
//! fails is not linearizable in the log's order of writes, which is the only order a
//! replica applies them in, with the header revisions as part of each answer (etcd's
//! semantics: a revision identifies a state).

use std::collections::BTreeMap;

use bytes::Bytes;
use ringkv_raft::{Index, ReadPolicy};
use ringkv_store::reference::Reference;
use ringkv_store::{Applied, Command, RangeResponse, Revision, StoreError};

use super::workload::StoreReq;
use super::world::HistOp;

/// An answered store read, with the indexes after which the store answered as it did.
struct Read<'a> {
    op: usize,
    req: &'a ringkv_store::RangeRequest,
    at: Revision,
    answer: &'a Result<RangeResponse, StoreError>,
    /// The answer matches the state after each index of these (inclusive) spans.
    allowed: Vec<(Index, Index)>,
    /// The span being grown: matched since this index.
    open: Option<Index>,
}

impl Read<'_> {
    fn matches(&self, reference: &Reference) -> bool {
        match reference.range(self.req) {
            Ok((rev, resp)) => rev == self.at && self.answer.as_ref() == Ok(&resp),
            Err(e) => self.answer.as_ref() == Err(&e),
        }
    }

    /// The state after index `p`: open or close the span.
    fn at_state(&mut self, reference: &Reference, p: Index) {
        let m = self.matches(reference);
        match (m, self.open) {
            (true, None) => self.open = Some(p),
            (false, Some(from)) => {
                self.allowed.push((from, p - 1));
                self.open = None;
            }
            _ => {}
        }
    }

    /// The state the read's revision named ended after index `last`.
    fn close(&mut self, last: Index) {
        if let Some(from) = self.open.take() {
            self.allowed.push((from, last));
        }
    }
}

/// Runs the whole check (see the module documentation); the first failure, described.
pub(crate) fn check(
    log: &BTreeMap<Index, Option<Bytes>>,
    entries: &BTreeMap<Index, (Revision, Option<Applied>)>,
    history: &[HistOp],
) -> Result<(), String> {
    let mut reads: Vec<Read> = Vec::new();
    for (op, h) in history.iter().enumerate() {
        let Some(s) = &h.store else { continue };
        if let (StoreReq::Read(req), Some((at, answer)), Some(_)) = (&s.req, &s.read, h.ret) {
            reads.push(Read {
                op,
                req,
                at: *at,
                answer,
                allowed: Vec::new(),
                open: None,
            });
        }
    }
    let mut by_revision: BTreeMap<Revision, Vec<usize>> = BTreeMap::new();
    for (i, r) in reads.iter().enumerate() {
        by_revision.entry(r.at).or_default().push(i);
    }
    let none = Vec::new();
    // 1 and 3: the replay, each read looked at where the state has its revision.
    let mut reference = Reference::new();
    let mut current = reference.revision();
    for &r in by_revision.get(&current).unwrap_or(&none) {
        reads[r].at_state(&reference, 0);
    }
    let mut last = 0;
    for (n, (&i, payload)) in log.iter().enumerate() {
        if i != n as Index + 1 {
            return Err(format!("sim: the applied log has no entry {}", n + 1));
        }
        last = i;
        let mut compacted = false;
        let (rev, applied) = match payload {
            Some(data) => {
                let cmd = Command::decode(data).map_err(|e| format!("entry {i}: {e}"))?;
                let a = reference.apply(&cmd);
                compacted = matches!(cmd, Command::Compact { .. }) && a.result.is_ok();
                (a.revision, Some(a))
            }
            None => (reference.revision(), None),
        };
        let Some((node_rev, node_applied)) = entries.get(&i) else {
            return Err(format!("sim: no node's answer recorded for entry {i}"));
        };
        if *node_rev != rev || *node_applied != applied {
            return Err(format!(
                "store: entry {i}: the nodes computed revision {node_rev} and answer \
                 {node_applied:?}; the reference model revision {rev} and answer {applied:?}"
            ));
        }
        if rev != current {
            for &r in by_revision.get(&current).unwrap_or(&none) {
                reads[r].close(i - 1);
            }
            current = rev;
            for &r in by_revision.get(&current).unwrap_or(&none) {
                reads[r].at_state(&reference, i);
            }
        } else if compacted {
            // Only a read at a past revision can tell a compaction.
            for &r in by_revision.get(&current).unwrap_or(&none) {
                if reads[r].req.revision > 0 {
                    reads[r].at_state(&reference, i);
                }
            }
        }
    }
    for &r in by_revision.get(&current).unwrap_or(&none) {
        reads[r].close(last);
    }
    for r in &reads {
        if r.allowed.is_empty() {
            let h = &history[r.op];
            return Err(format!(
                "store read #{} [{} .. {:?}] {:?} answered at revision {}: {:?}; the store \
                 never answered that at that revision",
                r.op, h.call, h.ret, r.req, r.at, r.answer
            ));
        }
    }
    // 2: acknowledged writes' answers.
    for (op, h) in history.iter().enumerate() {
        let (Some((i, _)), Some(a), Some(_)) = (h.acked_at, &h.applied, h.ret) else {
            continue;
        };
        match entries.get(&i) {
            Some((_, Some(b))) if b == a => {}
            other => {
                return Err(format!(
                    "write #{op} acknowledged at index {i} with {a:?}; the log has {other:?} \
                     there"
                ));
            }
        }
    }
    // 4: real time.
    real_time(history, &reads)
}

/// Where an operation may be linearized (points as in the module documentation).
enum Points<'a> {
    Fixed(u64),
    After(&'a [(Index, Index)]),
}

fn real_time(history: &[HistOp], reads: &[Read]) -> Result<(), String> {
    let mut ops: Vec<(u64, u64, usize, Points)> = Vec::new();
    for (op, h) in history.iter().enumerate() {
        if let (Some((i, _)), Some(ret), Some(_)) = (h.acked_at, h.ret, &h.applied) {
            ops.push((h.call, ret, op, Points::Fixed(2 * i)));
        }
    }
    for r in reads {
        let h = &history[r.op];
        if h.policy != Some(ReadPolicy::Eventual) {
            let ret = h.ret.expect("answered");
            ops.push((h.call, ret, r.op, Points::After(&r.allowed)));
        }
    }
    ops.sort_by_key(|o| (o.0, o.2));
    let mut rets: Vec<u64> = ops.iter().map(|o| o.1).collect();
    rets.sort_unstable();
    rets.dedup();
    // Prefix maximum over return times (a Fenwick tree): the latest point among the
    // operations that returned before a time, and which one it is.
    let mut tree: Vec<(u64, usize)> = vec![(0, usize::MAX); rets.len() + 1];
    for (call, ret, op, points) in &ops {
        let mut k = rets.partition_point(|&r| r < *call);
        let mut lower = (0, usize::MAX);
        while k > 0 {
            lower = lower.max(tree[k]);
            k &= k - 1;
        }
        let point = match points {
            Points::Fixed(p) => (*p >= lower.0).then_some(*p),
            Points::After(spans) => {
                let p_min = lower.0 / 2;
                spans
                    .iter()
                    .find(|s| s.1 >= p_min)
                    .map(|s| 2 * s.0.max(p_min) + 1)
            }
        };
        let Some(point) = point else {
            let h = &history[*op];
            let b = &history[lower.1];
            return Err(format!(
                "not linearizable (store): {} #{op} [{} .. {ret}] (at {}) cannot follow \
                 #{} [{} .. {:?}] (at {}), which returned before it was invoked",
                describe(h),
                h.call,
                where_(points),
                lower.1,
                b.call,
                b.ret,
                point_name(lower.0),
            ));
        };
        let mut k = rets.partition_point(|&r| r < *ret) + 1;
        while k < tree.len() {
            tree[k] = tree[k].max((point, *op));
            k += k & k.wrapping_neg();
        }
    }
    Ok(())
}

fn describe(h: &HistOp) -> String {
    match h.store.as_deref().map(|s| &s.req) {
        Some(StoreReq::Read(r)) => format!("read {r:?}"),
        Some(StoreReq::Write(c)) => format!("write {c:?}"),
        None => "register write".to_string(),
    }
}

fn where_(p: &Points) -> String {
    match p {
        Points::Fixed(p) => point_name(*p),
        Points::After(spans) => format!("after an index of {spans:?}"),
    }
}

fn point_name(p: u64) -> String {
    if p % 2 == 0 {
        format!("index {}", p / 2)
    } else {
        format!("after index {}", p / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::OpKind;
    use crate::workload::StoreOp;
    use ringkv_store::{DeleteRangeRequest, PutRequest, RangeRequest};

    fn put(k: &str, v: &str) -> Command {
        Command::Put(PutRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            ..Default::default()
        })
    }

    fn get(k: &str) -> RangeRequest {
        RangeRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            ..Default::default()
        }
    }

    /// A cluster's log of `cmds` (`None`: a no-op), as the nodes applied it.
    struct Run {
        log: BTreeMap<Index, Option<Bytes>>,
        entries: BTreeMap<Index, (Revision, Option<Applied>)>,
        states: Vec<Reference>,
        history: Vec<HistOp>,
    }

    impl Run {
        fn new(cmds: &[Option<Command>]) -> Run {
            let mut r = Reference::new();
            let mut run = Run {
                log: BTreeMap::new(),
                entries: BTreeMap::new(),
                states: vec![r.clone()],
                history: Vec::new(),
            };
            for (i, c) in cmds.iter().enumerate() {
                let i = i as Index + 1;
                let a = c.as_ref().map(|c| r.apply(c));
                run.log.insert(i, c.as_ref().map(Command::encode));
                run.entries.insert(i, (r.revision(), a));
                run.states.push(r.clone());
            }
            run
        }

        /// A write of the log's entry `i`, acknowledged (with its answer) or not.
        fn write(&mut self, i: Index, call: u64, ret: Option<u64>) {
            let mut h = HistOp::new(u64::MAX, OpKind::Read(None), None, call);
            let data = self.log[&i].clone().expect("a command");
            h.store = Some(Box::new(StoreOp {
                req: StoreReq::Write(Command::decode(&data).unwrap()),
                read: None,
            }));
            h.ret = ret;
            if ret.is_some() {
                h.acked_at = Some((i, 1));
                h.applied = self.entries[&i].1.clone();
            }
            self.history.push(h);
        }

        /// A read answered as the state after index `at` has it.
        fn read(&mut self, req: RangeRequest, at: usize, call: u64, ret: u64) {
            let state = &self.states[at];
            let answer = state.range(&req).map(|(_, r)| r);
            self.read_answered(req, state.revision(), answer, call, ret);
        }

        fn read_answered(
            &mut self,
            req: RangeRequest,
            rev: Revision,
            answer: Result<RangeResponse, StoreError>,
            call: u64,
            ret: u64,
        ) {
            let mut h = HistOp::new(
                u64::MAX,
                OpKind::Read(None),
                Some(ReadPolicy::Linearizable),
                call,
            );
            h.store = Some(Box::new(StoreOp {
                req: StoreReq::Read(req),
                read: Some((rev, answer)),
            }));
            h.ret = Some(ret);
            self.history.push(h);
        }

        fn check(&self) -> Result<(), String> {
            check(&self.log, &self.entries, &self.history)
        }
    }

    #[test]
    fn a_linearizable_history_passes() {
        // put a=1 (acknowledged), a no-op, put b=2 (timed out, but committed), delete a.
        let del = Command::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"a"),
            ..Default::default()
        });
        let mut run = Run::new(&[Some(put("a", "1")), None, Some(put("b", "2")), Some(del)]);
        run.write(1, 0, Some(10));
        run.write(3, 5, None);
        run.read(get("a"), 1, 11, 12);
        // Concurrent with the delete: either state.
        run.write(4, 20, Some(40));
        run.read(get("a"), 3, 21, 30);
        run.read(get("a"), 4, 22, 31);
        // After the no-op, before b: the state after index 1 or 2 (revision 2).
        run.read(get("b"), 2, 11, 13);
        assert_eq!(run.check(), Ok(()));
    }

    #[test]
    fn a_stale_read_is_caught() {
        let mut run = Run::new(&[Some(put("a", "1")), Some(put("a", "2"))]);
        run.write(1, 0, Some(10));
        run.write(2, 11, Some(20));
        // Invoked after the second put returned, it answers the state after the first.
        run.read(get("a"), 1, 21, 22);
        let e = run.check().unwrap_err();
        assert!(e.starts_with("not linearizable (store): read"), "{e}");
    }

    #[test]
    fn a_read_that_sees_a_write_before_it_began_is_caught() {
        let mut run = Run::new(&[Some(put("a", "1"))]);
        run.read(get("a"), 1, 0, 5);
        run.write(1, 6, Some(10));
        let e = run.check().unwrap_err();
        assert!(e.contains("cannot follow"), "{e}");
    }

    #[test]
    fn reads_order_among_themselves() {
        // Two reads in sequence, the first at the later state: the second is stale.
        let mut run = Run::new(&[Some(put("a", "1")), Some(put("a", "2"))]);
        run.write(1, 0, None);
        run.write(2, 0, None);
        run.read(get("a"), 2, 1, 2);
        run.read(get("a"), 1, 3, 4);
        assert!(run.check().is_err());
    }

    #[test]
    fn an_answer_no_state_has_is_caught() {
        let mut run = Run::new(&[Some(put("a", "1"))]);
        // Revision 2 has a = 1; answering nothing there is wrong, and so is a revision
        // the store never reached.
        run.read_answered(get("a"), 2, Ok(RangeResponse::default()), 0, 1);
        let e = run.check().unwrap_err();
        assert!(e.contains("never answered that"), "{e}");
        let mut run = Run::new(&[Some(put("a", "1"))]);
        let ok = run.states[1].range(&get("a")).unwrap().1;
        run.read_answered(get("a"), 3, Ok(ok), 0, 1);
        assert!(run.check().is_err());
    }

    #[test]
    fn a_read_at_a_past_revision_sees_the_compaction_where_it_was() {
        let compact = Command::Compact {
            revision: 2,
            physical: false,
        };
        let mut run = Run::new(&[Some(put("a", "1")), Some(put("a", "2")), Some(compact)]);
        let at_2 = RangeRequest {
            revision: 2,
            ..get("a")
        };
        let at_1 = RangeRequest {
            revision: 1,
            ..get("a")
        };
        // At revision 3: before the compaction revision 1 reads, after it is compacted.
        run.read(at_1.clone(), 2, 0, 1);
        run.read(at_1, 3, 0, 1);
        run.read(at_2, 3, 0, 1);
        assert_eq!(run.check(), Ok(()));
        assert_eq!(run.states[3].range(&get("a")).map(|r| r.0), Ok(3));
    }

    #[test]
    fn a_write_answered_otherwise_than_the_log_is_caught() {
        let mut run = Run::new(&[Some(put("a", "1"))]);
        run.write(1, 0, Some(1));
        run.history[0].applied.as_mut().unwrap().revision = 3;
        let e = run.check().unwrap_err();
        assert!(e.starts_with("write #0 acknowledged at index 1"), "{e}");
        // And a node that answered otherwise than the reference.
        let mut run = Run::new(&[Some(put("a", "1"))]);
        run.entries.get_mut(&1).unwrap().0 = 3;
        assert!(run.check().unwrap_err().starts_with("store: entry 1"));
    }
}
