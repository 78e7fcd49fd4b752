//! One shard's store: its keys' MVCC history, its copy of the store-wide state, and the
//! application of the log entries that involve it.
//!
//! Owned by one shard executor (or the simulator), single-threaded and pure. It applies
//! entries in index order and decides their effect on its keys alone; it learns revisions
//! from the sequencer's resolutions and a multi-shard txn's outcome from its decision
//! (ARCHITECTURE.md, "The etcd data model across shards"). Input: `push` (entries and
//! watermarks from the log, in order), `resolution`, `decision`; output: `pump`'s messages
//! for the sequencer. Must not touch other shards' keys, the log or the network.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::command::Command;
use crate::controls::Controls;
use crate::mvcc::{Keys, LATEST, Slot, Stamp, Version, is_pending, pending};
use crate::parts::{
    CmpPart, Decision, Index, OpPart, Part, Partial, RangePart, TxnPart, holds, range_order,
};
use crate::types::{
    Compare, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, End, KeyValue,
    LeaseGrantResponse, LeaseId, LeaseInfo, PutRequest, PutResponse, RangeRequest, RequestOp,
    Revision, StoreError, TxnRequest,
};

/// The shard owning `key` among `shards`: stable across restarts and versions.
pub fn route(key: &[u8], shards: usize) -> usize {
    assert!(shards > 0, "no shard");
    crc32c::crc32c(key) as usize % shards
}

/// Shards a node may split its store into (participant sets are 64-bit masks).
pub const SHARDS_MAX: usize = 64;

/// The shards an entry involves, as a bit mask.
pub fn participants(cmd: &Command, shards: usize) -> u64 {
    assert!((1..=SHARDS_MAX).contains(&shards), "{shards} shards");
    let all = if shards == 64 {
        u64::MAX
    } else {
        (1u64 << shards) - 1
    };
    let key = |k: &[u8], end: &[u8]| -> u64 {
        if end.is_empty() {
            1 << route(k, shards)
        } else {
            all
        }
    };
    fn ops(o: &[RequestOp], key: &dyn Fn(&[u8], &[u8]) -> u64) -> u64 {
        o.iter()
            .map(|op| match op {
                RequestOp::Range(r) => key(&r.key, &r.range_end),
                RequestOp::Put(p) => key(&p.key, &[]),
                RequestOp::DeleteRange(d) => key(&d.key, &d.range_end),
                RequestOp::Txn(t) => txn(t, key),
            })
            .fold(0, |a, b| a | b)
    }
    fn txn(t: &TxnRequest, key: &dyn Fn(&[u8], &[u8]) -> u64) -> u64 {
        let c = t
            .compare
            .iter()
            .map(|c| key(&c.key, &c.range_end))
            .fold(0, |a, b| a | b);
        c | ops(&t.success, key) | ops(&t.failure, key)
    }
    let m = match cmd {
        Command::Put(p) => key(&p.key, &[]),
        Command::DeleteRange(d) => key(&d.key, &d.range_end),
        Command::Txn(t) => txn(t, &key),
        // Store-wide state every shard keeps a copy of.
        Command::Compact { .. }
        | Command::LeaseGrant { .. }
        | Command::LeaseRevoke { .. }
        | Command::LeaseCheckpoint { .. }
        | Command::Alarm { .. } => all,
    };
    // A txn with no key at all (no compare, no op) still needs someone to answer it.
    if m == 0 { 1 } else { m }
}

/// A committed entry as a participant receives it.
#[derive(Clone, Debug)]
pub struct Routed {
    pub index: Index,
    pub cmd: Arc<Command>,
    /// The participants (bit mask over shards).
    pub participants: u64,
    /// Someone waits for the result: attach this shard's part to the report.
    pub answer: bool,
}

/// What the shard sends the sequencer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToSequencer {
    Report(Report),
    Partial(Partial),
}

/// A shard's progress: everything through `through` is applied; `changes` are the indexes
/// at or below it (since the last report) where this shard changed something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub shard: usize,
    pub through: Index,
    pub changes: Vec<Index>,
    pub parts: Vec<(Index, Result<Part, StoreError>)>,
    /// The last resolution this shard had taken in when it computed these parts (a shard
    /// takes resolutions only between pumps): their pending stamps are all above it.
    pub resolved_seen: Index,
    pub state_bytes: u64,
    /// Changes to the store-wide state applied since the last report (shard 0's only:
    /// every shard holds the same copy), for the raft core: its lessor, its copy of the
    /// lease table, the alarm.
    pub events: Vec<StoreEvent>,
}

/// A change to the store-wide state, as applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    Granted {
        id: LeaseId,
        ttl: i64,
    },
    Revoked {
        id: LeaseId,
    },
    Checkpointed {
        id: LeaseId,
        remaining: i64,
    },
    /// The NOSPACE alarm was raised (true) or disarmed.
    Alarm {
        nospace: bool,
    },
}

/// The sequencer's numbering of entries through `through`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub through: Index,
    /// The store revision once every entry through `through` is applied.
    pub revision: Revision,
    /// Entries after the previous resolution that changed something, with their
    /// revisions, in order.
    pub changes: Vec<(Index, Revision)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Work {
    Entry(Routed),
    /// Entries through here that do not involve this shard are done.
    Through(Index),
}

impl PartialEq for Routed {
    fn eq(&self, o: &Routed) -> bool {
        self.index == o.index
    }
}

impl Eq for Routed {}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Lease {
    ttl: i64,
    remaining: Option<i64>,
    /// This shard's keys attached to the lease.
    keys: BTreeSet<Bytes>,
}

/// What the entry at the head of the backlog waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// The resolution through this index (exact revisions of earlier entries).
    Resolution(Index),
    /// The decision of the multi-shard txn at this index (the partial is sent).
    Decision(Index),
}

/// An answer the shard could not give without waiting.
enum Need {
    Resolution,
}

/// Tri-state outcome of a test on revisions that may still be pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
}

#[derive(Debug)]
pub struct ShardStore {
    shard: usize,
    shards: usize,
    keys: Keys,
    leases: BTreeMap<LeaseId, Lease>,
    nospace: bool,
    /// The compaction revision (0: never compacted).
    compacted: Revision,
    /// The last resolution taken in: entries through `res_index` are numbered, and the
    /// store revision there is `res_revision`.
    res_index: Index,
    res_revision: Revision,
    /// Every entry through here is applied (or did not involve this shard).
    applied: Index,
    /// Keys (by slot) with versions still pending, by the index that wrote them.
    pending: VecDeque<(Index, Slot)>,
    backlog: VecDeque<Work>,
    decisions: BTreeMap<Index, Arc<Decision>>,
    wait: Option<Wait>,
    changes: Vec<Index>,
    parts: Vec<(Index, Result<Part, StoreError>)>,
    out: Vec<ToSequencer>,
    /// Something to report since the last report.
    dirty: bool,
    /// Apply nothing after this index (a snapshot of the state there is being taken).
    hold: Option<Index>,
    lease_events: Vec<StoreEvent>,
    controls: Controls,
}

impl ShardStore {
    pub fn new(shard: usize, shards: usize) -> ShardStore {
        assert!(shard < shards && shards <= SHARDS_MAX);
        ShardStore {
            shard,
            shards,
            keys: Keys::default(),
            leases: BTreeMap::new(),
            nospace: false,
            compacted: 0,
            res_index: 0,
            res_revision: 1,
            applied: 0,
            pending: VecDeque::new(),
            backlog: VecDeque::new(),
            decisions: BTreeMap::new(),
            wait: None,
            changes: Vec::new(),
            parts: Vec::new(),
            out: Vec::new(),
            dirty: false,
            hold: None,
            lease_events: Vec::new(),
            controls: Controls::default(),
        }
    }

    /// Turns negative controls on (simulator builds with `negative-controls` only).
    pub fn set_controls(&mut self, controls: Controls) {
        controls.check();
        self.controls = controls;
    }

    /// A shard holding the store-wide state of a snapshot and no keys yet (`load_key`).
    pub fn restore(shard: usize, shards: usize, h: &crate::snapshot::Header) -> ShardStore {
        let mut s = ShardStore::new(shard, shards);
        s.res_index = h.index;
        s.res_revision = h.revision;
        s.applied = h.index;
        s.compacted = h.compacted;
        s.nospace = h.nospace;
        for &(id, ttl, remaining) in &h.leases {
            s.leases.insert(
                id,
                Lease {
                    ttl,
                    remaining,
                    keys: BTreeSet::new(),
                },
            );
        }
        s
    }

    /// Installs one key's history from a snapshot (its live version's lease, if any, gets
    /// the key attached).
    pub fn load_key(&mut self, key: Bytes, versions: Vec<Version>) -> Result<(), String> {
        if let Some(last) = versions.last().filter(|v| v.is_live() && v.lease != 0) {
            match self.leases.get_mut(&last.lease) {
                Some(l) => {
                    l.keys.insert(key.clone());
                }
                None => {
                    return Err(format!(
                        "snapshot: a key is attached to lease {}, which is not in it",
                        last.lease
                    ));
                }
            }
        }
        self.keys
            .load(key, versions)
            .map_err(|e| format!("snapshot: {e}"))
    }

    /// The store-wide state as a snapshot header (the shard must be resolved through
    /// everything it applied).
    pub fn header(&self) -> crate::snapshot::Header {
        assert_eq!(
            self.res_index, self.applied,
            "a header with entries unresolved"
        );
        assert!(!self.is_waiting() && self.pending.is_empty());
        crate::snapshot::Header {
            index: self.applied,
            revision: self.res_revision,
            compacted: self.compacted,
            nospace: self.nospace,
            leases: self
                .leases
                .iter()
                .map(|(id, l)| (*id, l.ttl, l.remaining))
                .collect(),
        }
    }

    pub fn shard(&self) -> usize {
        self.shard
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Every entry through this index is applied here.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The last resolution taken in: (index, revision there).
    pub fn resolved(&self) -> (Index, Revision) {
        (self.res_index, self.res_revision)
    }

    pub fn compact_revision(&self) -> Revision {
        self.compacted
    }

    pub fn alarm(&self) -> bool {
        self.nospace
    }

    /// Bytes of state: keys and their history, and this shard's copy of the lease table.
    pub fn state_bytes(&self) -> u64 {
        self.keys.bytes() + self.leases.len() as u64 * 64
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Every key with its history, moved out (dropping the iterator part way keeps
    /// nothing): lets a caller free a large store a step at a time.
    pub fn into_keys(self) -> impl Iterator<Item = (Bytes, Vec<Version>)> {
        self.keys.into_entries()
    }

    /// Queues an entry that involves this shard (in index order, after every earlier one).
    pub fn push(&mut self, e: Routed) {
        assert!(
            e.participants >> self.shard & 1 == 1,
            "entry {} not for shard {}",
            e.index,
            self.shard
        );
        self.backlog.push_back(Work::Entry(e));
    }

    /// Every entry through `index` has been handed out.
    pub fn push_through(&mut self, index: Index) {
        self.backlog.push_back(Work::Through(index));
    }

    /// The sequencer's numbering: pending stamps through `r.through` become revisions.
    pub fn resolution(&mut self, r: &Resolution) {
        if r.through <= self.res_index {
            return;
        }
        let number = |i: Index| -> Option<Revision> {
            r.changes
                .binary_search_by_key(&i, |c| c.0)
                .ok()
                .map(|at| r.changes[at].1)
        };
        while let Some((i, _)) = self.pending.front() {
            if *i > r.through {
                break;
            }
            let (_, slot) = self.pending.pop_front().expect("front");
            self.keys.resolve(slot, r.through, number);
        }
        self.res_index = r.through;
        self.res_revision = r.revision;
        if matches!(self.wait, Some(Wait::Resolution(i)) if i <= r.through) {
            self.wait = None;
        }
        self.dirty = true;
    }

    /// The decision of the multi-shard txn at `index`.
    pub fn decision(&mut self, index: Index, d: Arc<Decision>) {
        self.decisions.insert(index, d);
        if self.wait == Some(Wait::Decision(index)) {
            self.wait = None;
        }
    }

    /// Applies nothing past `index` until `release` (entries keep queueing): the state at
    /// `index` stays there for a snapshot. The caller holds right after handing out the
    /// entries through `index`.
    pub fn hold_after(&mut self, index: Index) {
        assert!(
            self.applied <= index,
            "holding at {index}, already applied {}",
            self.applied
        );
        self.hold = Some(index);
    }

    /// Whether the state is exactly the one at `index`, every version numbered: a
    /// snapshot can be taken (`header`, `snapshot::KeyCopier`).
    pub fn at_rest(&self, index: Index) -> bool {
        self.applied == index && self.res_index >= index && !self.is_waiting()
    }

    /// Ends a hold.
    pub fn release(&mut self) {
        self.hold = None;
    }

    /// Where the shard stands, in one line (for a stall report).
    pub fn describe(&self) -> String {
        let next = self.backlog.front().map(|w| match w {
            Work::Entry(e) => format!("entry {} ({:#b})", e.index, e.participants),
            Work::Through(i) => format!("through {i}"),
        });
        format!(
            "applied {}, resolved through {} (revision {}), waiting {:?}, hold {:?}, next {:?} \
             of {} queued, {} decisions early, {} pending versions",
            self.applied,
            self.res_index,
            self.res_revision,
            self.wait,
            self.hold,
            next,
            self.backlog.len(),
            self.decisions.len(),
            self.pending.len()
        )
    }

    /// Waiting for something (the resolution or the decision named).
    pub fn is_waiting(&self) -> bool {
        self.wait.is_some()
    }

    /// Applies what the backlog allows and returns the messages for the sequencer: a
    /// report when anything moved (one per call), partials of multi-shard txns.
    pub fn pump(&mut self) -> Vec<ToSequencer> {
        while self.wait.is_none() {
            let Some(w) = self.backlog.front().cloned() else {
                break;
            };
            match w {
                Work::Through(i) if self.hold.is_some_and(|h| i > h) => break,
                Work::Entry(e) if self.hold.is_some_and(|h| e.index > h) => break,
                Work::Through(i) => {
                    assert!(i >= self.applied, "watermark {i} below {}", self.applied);
                    self.applied = i;
                    self.dirty = true;
                    self.backlog.pop_front();
                }
                Work::Entry(e) => {
                    assert!(e.index > self.applied, "entry {} applied twice", e.index);
                    // Every entry before `e` that involves this shard was pushed before it:
                    // the ones between are none of its business, so it is through them.
                    // Said now, not at the batch's watermark: a wait below (for a
                    // resolution or a decision) may depend on another shard that waits for
                    // this shard to report through them (a deadlock the fault campaign
                    // found on a two-shard node).
                    if e.index - 1 > self.applied {
                        self.applied = e.index - 1;
                        self.dirty = true;
                    }
                    if self.step(&e) {
                        self.applied = e.index;
                        self.dirty = true;
                        self.backlog.pop_front();
                    }
                }
            }
        }
        if self.dirty {
            self.flush_report();
        }
        std::mem::take(&mut self.out)
    }

    /// Applies `e`, or records what it waits for: true when applied.
    fn step(&mut self, e: &Routed) -> bool {
        let i = e.index;
        let sole = e.participants.count_ones() == 1;
        let result = match &*e.cmd {
            Command::Put(p) => self.put_entry(i, p),
            Command::DeleteRange(d) => Ok(Part::DeleteRange(self.delete(i, d))),
            Command::Txn(t) => {
                let decision = if sole {
                    match self.partial(i, t) {
                        Ok(p) => Arc::new(crate::parts::decide(t, &[p])),
                        Err(Need::Resolution) => return self.wait_resolution(i),
                    }
                } else if let Some(d) = self.decisions.remove(&i) {
                    d
                } else {
                    match self.partial(i, t) {
                        Ok(p) => {
                            self.wait = Some(Wait::Decision(i));
                            self.dirty = true;
                            self.flush_report();
                            self.out.push(ToSequencer::Partial(p));
                            return false;
                        }
                        Err(Need::Resolution) => return self.wait_resolution(i),
                    }
                };
                self.txn_entry(i, t, &decision)
            }
            Command::Compact { revision, .. } => match self.compact(i, *revision) {
                Ok(r) => r,
                Err(Need::Resolution) => return self.wait_resolution(i),
            },
            Command::LeaseGrant { id, ttl } => self.lease_grant(*id, *ttl),
            Command::LeaseRevoke { id } => self.lease_revoke(i, *id),
            Command::LeaseCheckpoint { checkpoints } => {
                for (id, rem) in checkpoints {
                    if let Some(l) = self.leases.get_mut(id) {
                        l.remaining = Some(*rem);
                        self.lease_event(StoreEvent::Checkpointed {
                            id: *id,
                            remaining: *rem,
                        });
                    }
                }
                Ok(Part::Done)
            }
            Command::Alarm { nospace } => {
                self.nospace = *nospace;
                self.lease_event(StoreEvent::Alarm { nospace: *nospace });
                Ok(Part::Done)
            }
        };
        if e.answer {
            self.parts.push((i, result));
        }
        true
    }

    /// Shard 0 tells the raft core about store-wide changes (every shard has them).
    fn lease_event(&mut self, e: StoreEvent) {
        if self.shard == 0 {
            self.lease_events.push(e);
        }
    }

    /// This shard's keys attached to lease `id`, in key order.
    pub fn lease_keys(&self, id: LeaseId) -> Vec<Bytes> {
        self.leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn wait_resolution(&mut self, i: Index) -> bool {
        assert!(
            self.res_index < i - 1,
            "waiting for a resolution already here"
        );
        self.wait = Some(Wait::Resolution(i - 1));
        self.dirty = true;
        self.flush_report();
        false
    }

    /// Sends the report now (at the end of a pump, and before waiting: the sequencer needs
    /// it to answer the wait).
    fn flush_report(&mut self) {
        self.dirty = false;
        self.out.push(ToSequencer::Report(Report {
            shard: self.shard,
            through: self.applied,
            changes: std::mem::take(&mut self.changes),
            parts: std::mem::take(&mut self.parts),
            resolved_seen: self.res_index,
            state_bytes: self.state_bytes(),
            events: std::mem::take(&mut self.lease_events),
        }));
    }

    // ----- revisions that may be pending -----

    /// The revision range a stamp may have while the entry at `at` is being applied.
    fn bounds(&self, s: Stamp) -> (Revision, Revision) {
        if is_pending(s) {
            let idx = s & !crate::mvcc::PENDING;
            let lo = self.res_revision + 1;
            // At most one revision per index after the resolution point.
            let hi = self.res_revision + (idx - self.res_index) as Revision;
            (lo, hi.max(lo))
        } else {
            (s as Revision, s as Revision)
        }
    }

    /// `bounds` for a compare (the `compare_without_waiting` control takes the lowest bound
    /// as exact, so the compare never waits for the resolution).
    fn compare_bounds(&self, s: Stamp) -> (Revision, Revision) {
        let (lo, hi) = self.bounds(s);
        if self.controls.on(|c| c.compare_without_waiting) {
            (lo, lo)
        } else {
            (lo, hi)
        }
    }

    /// The store revision before entry `i` (exact once resolved through `i - 1`).
    fn current_bounds(&self, i: Index) -> (Revision, Revision) {
        let lo = self.res_revision;
        let hi = self.res_revision + (i - 1).saturating_sub(self.res_index) as Revision;
        (lo, hi)
    }

    fn cmp_bounds(result: crate::types::CompareResult, lo: i64, hi: i64, v: i64) -> Tri {
        let a = holds(result, lo.cmp(&v));
        let b = holds(result, hi.cmp(&v));
        if lo == hi || (a == b && Self::monotone_between(result, lo, hi, v, a)) {
            if a { Tri::True } else { Tri::False }
        } else {
            Tri::Unknown
        }
    }

    /// Whether a compare that gives `same` at both ends of `[lo, hi]` gives it throughout
    /// (false for EQUAL/NOT_EQUAL when `v` lies strictly inside).
    fn monotone_between(
        result: crate::types::CompareResult,
        lo: i64,
        hi: i64,
        v: i64,
        _same: bool,
    ) -> bool {
        use crate::types::CompareResult::*;
        match result {
            Greater | Less => true,
            Equal | NotEqual => !(lo < v && v < hi),
        }
    }

    // ----- txns -----

    /// This shard's evaluation of `t`'s compares and pre-checks, against the state every
    /// entry before `i` left.
    fn partial(&self, i: Index, t: &TxnRequest) -> Result<Partial, Need> {
        let mut p = Partial {
            index: i,
            shard: self.shard,
            compares: Vec::new(),
            puts: Vec::new(),
            ranges: Vec::new(),
        };
        // Compares, node by node in preorder.
        for n in crate::parts::txn_nodes(t) {
            for c in &n.compare {
                p.compares.push(self.compare(c)?);
            }
        }
        let (cur_lo, cur_hi) = self.current_bounds(i);
        let mut need = false;
        self.walk_ops(t, &mut |op| match op {
            RequestOp::Put(put) => {
                let mut err = None;
                if route(&put.key, self.shards) == self.shard {
                    let exists = self.keys.get_at(&put.key, LATEST).is_some();
                    if (put.ignore_value || put.ignore_lease) && !exists {
                        err = Some(StoreError::KeyNotFound);
                    } else if put.lease != 0 && !self.leases.contains_key(&put.lease) {
                        err = Some(StoreError::LeaseNotFound);
                    }
                }
                p.puts.push(err);
            }
            RequestOp::Range(r) => {
                let err = if r.revision == 0 {
                    None
                } else if r.revision > cur_hi {
                    Some(StoreError::FutureRevision)
                } else if r.revision > cur_lo {
                    need = true;
                    None
                } else if r.revision < self.compacted {
                    Some(StoreError::Compacted)
                } else {
                    None
                };
                // Filters over revisions still pending cannot be decided yet.
                if r.has_filters() && cur_lo != cur_hi {
                    need = true;
                }
                p.ranges.push(err);
            }
            _ => {}
        });
        if need {
            return Err(Need::Resolution);
        }
        Ok(p)
    }

    /// Calls `f` on every put and range of `t`'s tree in preorder (success branch first).
    fn walk_ops(&self, t: &TxnRequest, f: &mut dyn FnMut(&RequestOp)) {
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Txn(n) => self.walk_ops(n, f),
                other => f(other),
            }
        }
    }

    /// etcd's `applyCompare` over this shard's keys.
    fn compare(&self, c: &Compare) -> Result<CmpPart, Need> {
        let mut any = false;
        let mut unknown = false;
        for (_, v) in self.keys.scan_at(&c.key, End::of(&c.range_end), LATEST) {
            any = true;
            let t = match &c.target {
                CompareTarget::Value(x) => tri(holds(
                    c.result,
                    v.value.as_deref().unwrap_or_default().cmp(&x[..]),
                )),
                CompareTarget::Version(x) => tri(holds(c.result, v.version.cmp(x))),
                CompareTarget::Lease(x) => tri(holds(c.result, v.lease.cmp(x))),
                CompareTarget::Mod(x) => {
                    let (lo, hi) = self.compare_bounds(v.stamp);
                    Self::cmp_bounds(c.result, lo, hi, *x)
                }
                CompareTarget::Create(x) => {
                    let (lo, hi) = self.compare_bounds(v.create);
                    Self::cmp_bounds(c.result, lo, hi, *x)
                }
            };
            match t {
                Tri::False => return Ok(CmpPart::SomeFalse),
                Tri::Unknown => unknown = true,
                Tri::True => {}
            }
        }
        if unknown {
            return Err(Need::Resolution);
        }
        Ok(if any {
            CmpPart::AllTrue
        } else {
            CmpPart::NoKeys
        })
    }

    fn txn_entry(&mut self, i: Index, t: &TxnRequest, d: &Decision) -> Result<Part, StoreError> {
        // The capped applier refuses any txn with a put in its own branches (etcd's quota
        // counts only those).
        if self.nospace
            && t.success
                .iter()
                .chain(&t.failure)
                .any(|op| matches!(op, RequestOp::Put(_)))
        {
            return Err(StoreError::NoSpace);
        }
        if let Some(e) = &d.error {
            return Err(e.clone());
        }
        let mut node = 0;
        let mut changed = false;
        let part = self.txn_apply(i, t, d, &mut node, &mut changed);
        if self.controls.on(|c| c.read_only_txn_bumps_revision) && t.is_read_only() {
            changed = true;
        }
        if changed {
            self.changes.push(i);
        }
        Ok(Part::Txn(part))
    }

    fn txn_apply(
        &mut self,
        i: Index,
        t: &TxnRequest,
        d: &Decision,
        node: &mut usize,
        changed: &mut bool,
    ) -> TxnPart {
        let ok = d.succeeded[*node];
        *node += 1;
        let skip_nodes = crate::parts::txn_nodes_in;
        if !ok {
            *node += skip_nodes(&t.success);
        }
        let ops = if ok { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => OpPart::Range(self.range_in_txn(r)),
                RequestOp::Put(p) => {
                    if route(&p.key, self.shards) == self.shard {
                        *changed = true;
                        OpPart::Put(self.put(i, p))
                    } else {
                        OpPart::Put(PutResponse::default())
                    }
                }
                RequestOp::DeleteRange(dr) => {
                    let r = self.delete_keys(i, dr);
                    *changed |= r.deleted > 0;
                    OpPart::DeleteRange(r)
                }
                RequestOp::Txn(n) => OpPart::Txn(self.txn_apply(i, n, d, node, changed)),
            });
        }
        if ok {
            *node += skip_nodes(&t.failure);
        }
        TxnPart {
            succeeded: ok,
            responses,
        }
    }

    fn range_in_txn(&self, r: &RangeRequest) -> RangePart {
        // Checked before applying: a revision is 0 or resolved here.
        let at = if r.revision > 0 {
            r.revision as Stamp
        } else {
            LATEST
        };
        self.range_part(r, at)
    }

    /// This shard's share of a range read at `at` (a resolved revision, or `LATEST`
    /// inside an entry): etcd's Range up to the cut, on this shard's keys.
    pub fn range_part(&self, r: &RangeRequest, at: Stamp) -> RangePart {
        let end = End::of(&r.range_end);
        let mut count = 0i64;
        let mut kvs = Vec::new();
        let filtered = r.has_filters();
        // etcd's first limit + 1 keys by key (`key_window`): kept in key order here, the
        // merge picks the window over every part and sorts it.
        let window = r.key_window();
        let sorted = window.is_none()
            && (r.sort_order != crate::types::SortOrder::None
                || r.sort_target != crate::types::SortTarget::Key);
        for (k, v) in self.keys.scan_at(&r.key, end, at) {
            count += 1;
            if r.count_only {
                continue;
            }
            if filtered {
                let (m, c) = (self.bounds(v.stamp).0, self.bounds(v.create).0);
                if (r.max_mod_revision != 0 && m > r.max_mod_revision)
                    || (r.min_mod_revision != 0 && m < r.min_mod_revision)
                    || (r.max_create_revision != 0 && c > r.max_create_revision)
                    || (r.min_create_revision != 0 && c < r.min_create_revision)
                {
                    continue;
                }
            }
            // Unsorted and unfiltered: the first limit + 1 keys say all there is.
            if !sorted && r.limit > 0 && kvs.len() as i64 > r.limit {
                continue;
            }
            let mut kv = v.to_kv(k);
            // Values sort before keys_only drops them (the merge drops the rest).
            if r.keys_only && r.sort_target != crate::types::SortTarget::Value {
                kv.value = Bytes::new();
            }
            kvs.push((v.stamp, v.create, kv));
        }
        let matched = kvs.len();
        if sorted {
            // On stamps, which order pending versions correctly; the merge sorts again on
            // revisions once they are known.
            kvs.sort_by(|a, b| stamp_order(r, a, b));
        }
        let mut kvs: Vec<KeyValue> = kvs.into_iter().map(|(_, _, kv)| kv).collect();
        if window.is_none() && r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
        }
        RangePart {
            kvs,
            matched,
            count,
        }
    }

    // ----- writes -----

    fn put_entry(&mut self, i: Index, p: &PutRequest) -> Result<Part, StoreError> {
        if self.nospace {
            return Err(StoreError::NoSpace);
        }
        // Outside a txn etcd checks the lease first (its `put`), inside one the key first
        // (`checkRequestPut`).
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(StoreError::LeaseNotFound);
        }
        let slot = self.keys.find(&p.key);
        let exists = slot.is_some_and(|s| self.keys.newest_live(s).is_some());
        if (p.ignore_value || p.ignore_lease) && !exists {
            return Err(StoreError::KeyNotFound);
        }
        self.changes.push(i);
        Ok(Part::Put(self.put_found(i, p, slot)))
    }

    /// Writes a put whose checks passed.
    fn put(&mut self, i: Index, p: &PutRequest) -> PutResponse {
        let slot = self.keys.find(&p.key);
        self.put_found(i, p, slot)
    }

    /// `put` of a key whose slot (if it has one) was looked up: one search per put.
    fn put_found(&mut self, i: Index, p: &PutRequest, slot: Option<Slot>) -> PutResponse {
        let stamp = pending(i);
        let prev = slot.and_then(|s| self.keys.newest_live(s));
        // What the new version keeps of the previous one (no copy of a value not needed).
        let prev_kv = prev.filter(|_| p.prev_kv).map(|v| v.to_kv(&p.key));
        let value = match prev {
            Some(prev) if p.ignore_value => prev.value.clone().expect("live"),
            _ => p.value.clone(),
        };
        let old_lease = prev.map_or(0, |v| v.lease);
        let lease = if prev.is_some() && p.ignore_lease {
            old_lease
        } else {
            p.lease
        };
        let v = Version {
            stamp,
            create: prev.map_or(stamp, |v| v.create),
            version: prev.map_or(1, |v| v.version + 1),
            lease,
            value: Some(value),
        };
        if old_lease != lease {
            if let Some(l) = self.leases.get_mut(&old_lease) {
                l.keys.remove(&p.key);
            }
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.insert(p.key.clone());
            }
        }
        let slot = match slot {
            Some(s) => {
                self.keys.write_slot(s, v);
                s
            }
            None => self.keys.write(&p.key, v),
        };
        self.pending.push_back((i, slot));
        PutResponse { prev_kv }
    }

    fn delete(&mut self, i: Index, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let r = self.delete_keys(i, d);
        if r.deleted > 0 {
            self.changes.push(i);
        }
        r
    }

    /// Deletes this shard's live keys in the range (no change record).
    fn delete_keys(&mut self, i: Index, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let found: Vec<(Bytes, Version)> = self
            .keys
            .scan_at(&d.key, End::of(&d.range_end), LATEST)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut prev_kvs = Vec::new();
        for (k, v) in &found {
            self.tombstone(i, k, v.lease);
            if d.prev_kv {
                prev_kvs.push(v.to_kv(k));
            }
        }
        DeleteRangeResponse {
            deleted: found.len() as i64,
            prev_kvs,
        }
    }

    fn tombstone(&mut self, i: Index, key: &Bytes, lease: LeaseId) {
        if lease != 0 {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.remove(key);
            }
        }
        let slot = self.keys.write(
            key,
            Version {
                stamp: pending(i),
                create: 0,
                version: 0,
                lease: 0,
                value: None,
            },
        );
        self.pending.push_back((i, slot));
    }

    fn compact(&mut self, i: Index, revision: Revision) -> Result<Result<Part, StoreError>, Need> {
        if revision <= self.compacted {
            return Ok(Err(StoreError::Compacted));
        }
        let (lo, hi) = self.current_bounds(i);
        if revision > hi {
            return Ok(Err(StoreError::FutureRevision));
        }
        if revision > lo {
            return Err(Need::Resolution);
        }
        self.compacted = revision;
        self.keys.compact(revision);
        Ok(Ok(Part::Compacted))
    }

    fn lease_grant(&mut self, id: LeaseId, ttl: i64) -> Result<Part, StoreError> {
        if self.nospace {
            return Err(StoreError::NoSpace);
        }
        // etcd's lessor's Grant: no lease 0, a TTL within its maximum, then uniqueness.
        if id == 0 {
            return Err(StoreError::LeaseNotFound);
        }
        if ttl > crate::types::LEASE_TTL_MAX_SECS {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        }
        self.leases.insert(
            id,
            Lease {
                ttl,
                remaining: None,
                keys: BTreeSet::new(),
            },
        );
        self.lease_event(StoreEvent::Granted { id, ttl });
        Ok(Part::LeaseGranted(LeaseGrantResponse { id, ttl }))
    }

    fn lease_revoke(&mut self, i: Index, id: LeaseId) -> Result<Part, StoreError> {
        let Some(l) = self.leases.remove(&id) else {
            return Err(StoreError::LeaseNotFound);
        };
        for k in &l.keys {
            let v = self
                .keys
                .get_at(k, LATEST)
                .expect("a leased key is live")
                .clone();
            assert_eq!(v.lease, id, "key attached to another lease");
            self.tombstone(i, k, 0);
        }
        if !l.keys.is_empty() {
            self.changes.push(i);
        }
        self.lease_event(StoreEvent::Revoked { id });
        Ok(Part::LeaseRevoked)
    }

    // ----- reads -----

    /// The revision of the last resolution, at which serializable reads are served.
    pub fn read_revision(&self) -> Revision {
        self.res_revision
    }

    /// This shard's share of a top-level range at a resolved `revision` (> 0).
    pub fn read(&self, r: &RangeRequest, revision: Revision) -> Result<RangePart, StoreError> {
        assert!(
            revision > 0 && revision <= self.res_revision,
            "reading at an unresolved revision"
        );
        if revision < self.compacted {
            return Err(StoreError::Compacted);
        }
        Ok(self.range_part(r, revision as Stamp))
    }

    pub fn lease(&self, id: LeaseId) -> Option<LeaseInfo> {
        let l = self.leases.get(&id)?;
        Some(LeaseInfo {
            id,
            ttl: l.ttl,
            remaining_ttl: l.remaining,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    pub fn leases(&self) -> Vec<LeaseId> {
        self.leases.keys().copied().collect()
    }

    /// This shard's share of the store hash at a resolved `revision`.
    pub fn hash(&self, revision: Revision) -> u64 {
        assert!(revision <= self.res_revision);
        let mut h = 0u64;
        for (k, vs) in self.keys.iter() {
            for v in vs {
                if v.stamp > revision as Stamp {
                    break;
                }
                h = h.wrapping_add(crate::hash::record_hash(
                    k,
                    v.stamp as Revision,
                    v.create as Revision,
                    v.version,
                    v.lease,
                    v.value.as_deref(),
                ));
            }
        }
        h
    }
}

/// `range_order` with mod and create revisions taken from the stamps (pending ones are
/// after every revision, in index order).
fn stamp_order(
    r: &RangeRequest,
    a: &(Stamp, Stamp, KeyValue),
    b: &(Stamp, Stamp, KeyValue),
) -> std::cmp::Ordering {
    use crate::types::{SortOrder, SortTarget};
    let by = match r.sort_target {
        SortTarget::Mod => a.0.cmp(&b.0),
        SortTarget::Create => a.1.cmp(&b.1),
        _ => return range_order(r, &a.2, &b.2),
    };
    let descend = r.sort_order == SortOrder::Descend;
    let by = if descend { by.reverse() } else { by };
    by.then_with(|| a.2.key.cmp(&b.2.key))
}

fn tri(b: bool) -> Tri {
    if b { Tri::True } else { Tri::False }
}
