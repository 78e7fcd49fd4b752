//! The store checker: the store clients' history (`storeload`) against the sequence of the
//! store's states, one per revision, read back from every node after the run.
//!
//! Pure and single-threaded; runs on the runner's main thread after a run. Reads only the
//! history and the states (never the switch a negative control flipped); must not touch a
//! node.
//!
//! Why from revisions. The simulator knows the committed log and replays it
//! (`sim::storecheck`); a real cluster's log is not visible. But under etcd's semantics a
//! revision names a state: the store moves from revision r-1 to r by exactly one change,
//! every node holds the whole history (no compaction during a run), and a range at revision
//! r returns the state S[r]. So the states read back give the one sequence of changes every
//! node applied, and the history is held to it:
//! 1. the states: every node answers the same S[r] for every r (`diverged` otherwise; built
//!    by `changes_from_reads`, which also refuses reads that contradict each other);
//! 2. every change S[r-1] -> S[r] of the span is one write of the history: a put, or a txn's
//!    puts, named by their unique values; a delete (one key or a range: every key of the
//!    range live in S[r-1] goes); a lease's end (every key of one lease goes at once: a
//!    revoke, acknowledged or not, or its expiry). A change no write explains is a phantom.
//!    An acknowledged write must be the change at the revision its answer names, with the
//!    answer S gives it (prev_kv, deleted, a txn's branch from its compares on S[r-1]); an
//!    acknowledged write that changed nothing (a txn whose compares failed, a delete of
//!    nothing) must be so in S at its answer's revision; a refused write never appears;
//!    a write whose outcome is unknown explains at most one change;
//! 3. revisions: every revision of `(first, last]` is one change, inside the span or out of
//!    it (the other clients' puts, counted from their keys' versions): a revision with no
//!    change is a gap, two changes at one revision a repeat;
//! 4. reads: an answered range at header revision R is the range of S[R];
//! 5. real time: a write that changed the store at r has the point 2r, a read or a write
//!    that changed nothing answered at R the point 2R+1; an operation (linearizable or
//!    lease consistency) that returned before another was invoked must not have a later
//!    point than it. Points are fixed by the answers, so one sweep in order of invocation
//!    decides it. A write with an unknown outcome that did change the store has its point
//!    but no return: it only follows. Eventual reads are held to 4 only;
//! 6. leases: keys of one lease vanish together (2); no key is attached to a lease after
//!    its end; a lease no client kept alive holds no key at the end once its TTL and a grace
//!    passed since its last renewal and since the cluster healed; a keep-alive invoked after
//!    its lease's end was seen (its revoke returned, or an operation at or after the change
//!    that deleted its keys returned) must not find it alive.
//!
//! A history that passes is linearizable in the order of the revisions (the points are the
//! linearization), which is the only order a replica applies writes in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ringkv_proto::native::CONSISTENCY_EVENTUAL;
use ringkv_raft::NodeId;
use ringkv_store::bytes::Bytes;
use ringkv_store::{
    Command, Compare, CompareTarget, End, KeyValue, LeaseId, PutRequest, RangeRequest,
    RangeResponse, RequestOp, Response, ResponseOp, Revision,
};

/// The span's keys at one revision, by key.
pub type Kvs = BTreeMap<Bytes, KeyValue>;

/// One store operation of the history. Times are microseconds since the run began.
#[derive(Clone, Debug)]
pub struct StoreRecord {
    pub client: u32,
    pub node: NodeId,
    pub op: StoreOp,
    pub call_us: u64,
    pub ret_us: u64,
    pub outcome: StoreOutcome,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StoreOp {
    /// Through the log: put, delete, txn, lease grant or revoke.
    Write(Command),
    /// A range at a `net::native` consistency.
    Range {
        req: RangeRequest,
        consistency: u8,
    },
    KeepAlive {
        lease: LeaseId,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum StoreOutcome {
    /// Answered: the header revision and the store's response.
    Done {
        revision: Revision,
        response: Response,
    },
    /// A keep-alive's answer: the TTL left (0: no such lease).
    Ttl(i64),
    /// Refused before anything was done.
    Failed,
    /// No answer, or a timeout: a write may or may not have taken effect.
    Unknown,
}

/// One change of the span: the keys put (with their state after it) and the keys deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub puts: Vec<KeyValue>,
    pub deletes: Vec<Bytes>,
}

/// The store's states as read back: the span at `first` and every change of it through
/// `last`; and what changed outside the span meanwhile.
#[derive(Clone, Debug, Default)]
pub struct States {
    pub first: Revision,
    pub base: Kvs,
    pub last: Revision,
    /// The span's changes in `(first, last]`, by revision.
    pub changes: BTreeMap<Revision, Change>,
    /// Changes outside the span in `(first, last]` (keys outside it are only ever put, so
    /// their versions count them).
    pub outside_changes: u64,
    /// Revisions of changes outside the span that are known: each such key's last put.
    pub outside_revisions: Vec<Revision>,
}

impl States {
    /// The states of a sequence, `seq[i]` at revision `first + i` (nothing outside the
    /// span).
    pub fn from_sequence(first: Revision, seq: &[Kvs]) -> States {
        let mut changes = BTreeMap::new();
        for (i, w) in seq.windows(2).enumerate() {
            let c = diff(&w[0], &w[1]);
            if c != Change::default() {
                changes.insert(first + 1 + i as Revision, c);
            }
        }
        States {
            first,
            base: seq.first().cloned().unwrap_or_default(),
            last: first + seq.len().saturating_sub(1) as Revision,
            changes,
            outside_changes: 0,
            outside_revisions: Vec::new(),
        }
    }
}

/// What changed from `a` to `b`.
fn diff(a: &Kvs, b: &Kvs) -> Change {
    Change {
        puts: b
            .iter()
            .filter(|(k, kv)| a.get(*k) != Some(*kv))
            .map(|(_, kv)| kv.clone())
            .collect(),
        deletes: a.keys().filter(|k| !b.contains_key(*k)).cloned().collect(),
    }
}

/// What one node answered for one revision r: the span's keys a put at r left (a range at
/// r with `min_mod_revision` r) and how many keys the span held at r.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevisionRead {
    pub kvs: Vec<KeyValue>,
    pub count: i64,
}

/// The revisions (after `first`) at which keys left the span, from the per-revision reads
/// (`reads[i]` at `first + 1 + i`) and the span's size at `first`: those need a whole read
/// to tell which keys.
pub fn deleting_revisions(
    first: Revision,
    mut count: i64,
    reads: &[RevisionRead],
) -> Vec<Revision> {
    let mut out = Vec::new();
    for (i, rd) in reads.iter().enumerate() {
        let created = rd
            .kvs
            .iter()
            .filter(|kv| kv.create_revision == kv.mod_revision)
            .count() as i64;
        // count(r) = count(r-1) + created - deleted; a put to a live key adds nothing.
        if count + created != rd.count {
            out.push(first + 1 + i as Revision);
        }
        count = rd.count;
    }
    out
}

/// The span's changes from the per-revision reads and whole reads (`whole`: the span at
/// each revision `deleting_revisions` named, and any other revisions read whole, which are
/// compared): an error when the reads contradict each other.
pub fn changes_from_reads(
    first: Revision,
    base: &Kvs,
    reads: &[RevisionRead],
    whole: &BTreeMap<Revision, Kvs>,
) -> Result<BTreeMap<Revision, Change>, String> {
    let mut state = base.clone();
    let mut changes = BTreeMap::new();
    for (i, rd) in reads.iter().enumerate() {
        let r = first + 1 + i as Revision;
        if let Some(kv) = rd.kvs.iter().find(|kv| kv.mod_revision != r) {
            return Err(format!(
                "revision {r}: a read of the keys put at {r} returned {kv:?}"
            ));
        }
        let new_keys = rd
            .kvs
            .iter()
            .filter(|kv| !state.contains_key(&kv.key))
            .count() as i64;
        let deleted = state.len() as i64 + new_keys - rd.count;
        let mut c = Change {
            puts: rd.kvs.clone(),
            deletes: Vec::new(),
        };
        if deleted < 0 {
            return Err(format!(
                "revision {r}: the span holds {} keys, {} before it and {new_keys} new",
                rd.count,
                state.len()
            ));
        }
        if deleted > 0 {
            let w = whole
                .get(&r)
                .ok_or_else(|| format!("revision {r}: keys left the span, no whole read of it"))?;
            c.deletes = state
                .keys()
                .filter(|k| !w.contains_key(*k))
                .cloned()
                .collect();
            if c.deletes.len() as i64 != deleted {
                return Err(format!(
                    "revision {r}: the count says {deleted} keys left, the whole read {:?}",
                    c.deletes
                ));
            }
        }
        for k in &c.deletes {
            state.remove(k);
        }
        for kv in &c.puts {
            state.insert(kv.key.clone(), kv.clone());
        }
        if let Some(w) = whole.get(&r)
            && *w != state
        {
            let d = diff(&state, w);
            return Err(format!(
                "revision {r}: the whole read differs from the changes read: {d:?}"
            ));
        }
        if c != Change::default() {
            changes.insert(r, c);
        }
    }
    Ok(changes)
}

/// Times the lease rule needs: when the cluster healed for good, when the final state was
/// read, and the grace beyond a TTL an abandoned lease gets (leader changes restart
/// countdowns from checkpoints).
#[derive(Clone, Copy, Debug)]
pub struct LeaseTimes {
    pub heal_us: u64,
    pub end_us: u64,
    pub grace_us: u64,
}

/// Examples kept per run (each category still counts every case).
const EXAMPLES_MAX: usize = 12;

/// What the store checker found.
#[derive(Debug, Default)]
pub struct StoreFindings {
    pub ops: usize,
    pub acked_writes: usize,
    /// Answered ranges.
    pub reads: usize,
    /// Changes of the span (revisions at which it changed).
    pub changes: usize,
    /// Txns answered with their failure branch.
    pub failed_txns: usize,
    /// Writes whose answer was lost that the states show applied.
    pub unknown_applied: usize,
    /// Lease ends seen in the states (every key of a lease deleted at once).
    pub lease_ends: usize,
    /// Changes no write of the history explains (or that a refused write made).
    pub phantom: usize,
    /// Acknowledged writes whose change is not where their answer says.
    pub lost: usize,
    /// Answers (reads, txn branches, prev_kv, deleted counts) other than S gives them.
    pub wrong_answers: usize,
    /// Revisions at which nothing changed.
    pub gaps: usize,
    /// Revisions that carry two changes, or writes applied twice.
    pub repeats: usize,
    /// Operations placed before one that returned before they were invoked.
    pub real_time: usize,
    /// Lease rules broken.
    pub lease: usize,
    /// Nodes whose states differ, or reads of the states that contradict each other.
    pub diverged: Vec<String>,
    pub examples: Vec<String>,
}

impl StoreFindings {
    pub fn ok(&self) -> bool {
        self.phantom == 0
            && self.lost == 0
            && self.wrong_answers == 0
            && self.gaps == 0
            && self.repeats == 0
            && self.real_time == 0
            && self.lease == 0
            && self.diverged.is_empty()
    }

    /// Why the store check failed, one reason a line (empty when it passed).
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let counts = [
            (
                self.phantom,
                "store changes no write explains (phantom writes)",
            ),
            (
                self.lost,
                "acknowledged store writes not where their answer says",
            ),
            (
                self.wrong_answers,
                "store answers other than the states give",
            ),
            (self.gaps, "store revisions with no change (gaps)"),
            (
                self.repeats,
                "store revisions with two changes, or writes applied twice",
            ),
            (
                self.real_time,
                "store operations out of real-time order (not linearizable)",
            ),
            (self.lease, "lease rules broken"),
        ];
        for (n, what) in counts {
            if n > 0 {
                f.push(format!("{n} {what}"));
            }
        }
        for d in &self.diverged {
            f.push(format!("store states diverged: {d}"));
        }
        f.extend(self.examples.iter().map(|e| format!("store: {e}")));
        f
    }

    /// Adds another run's findings.
    pub fn absorb(&mut self, o: StoreFindings) {
        self.ops += o.ops;
        self.acked_writes += o.acked_writes;
        self.reads += o.reads;
        self.changes += o.changes;
        self.failed_txns += o.failed_txns;
        self.unknown_applied += o.unknown_applied;
        self.lease_ends += o.lease_ends;
        self.phantom += o.phantom;
        self.lost += o.lost;
        self.wrong_answers += o.wrong_answers;
        self.gaps += o.gaps;
        self.repeats += o.repeats;
        self.real_time += o.real_time;
        self.lease += o.lease;
        self.diverged.extend(o.diverged);
        self.examples.extend(o.examples);
    }

    fn note(&mut self, what: fn(&mut StoreFindings) -> &mut usize, example: String) {
        *what(self) += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(example);
        }
    }
}

/// The keys of `kvs` in `[key, range_end)` (etcd's range ends), in key order.
fn live<'a>(kvs: &'a Kvs, key: &[u8], range_end: &[u8]) -> Vec<&'a KeyValue> {
    let end = End::of(range_end);
    kvs.range(Bytes::copy_from_slice(key)..)
        .take_while(|(k, _)| end.admits(key, k))
        .map(|(_, kv)| kv)
        .collect()
}

/// A range of the span's state `kvs` as the store answers it (key order; the workload
/// asks for no sort, filters or revisions).
fn range(kvs: &Kvs, req: &RangeRequest) -> RangeResponse {
    let matched = live(kvs, &req.key, &req.range_end);
    let count = matched.len() as i64;
    let limit = if req.limit > 0 {
        req.limit as usize
    } else {
        usize::MAX
    };
    let mut out: Vec<KeyValue> = if req.count_only {
        Vec::new()
    } else {
        matched.iter().take(limit).map(|kv| (*kv).clone()).collect()
    };
    if req.keys_only {
        out.iter_mut().for_each(|kv| kv.value = Bytes::new());
    }
    RangeResponse {
        kvs: out,
        more: matched.len() > limit,
        count,
    }
}

/// Whether `c` holds in `kvs` (etcd's: an absent key compares as zero, never by value).
fn holds(kvs: &Kvs, c: &Compare) -> bool {
    let found = live(kvs, &c.key, &c.range_end);
    if found.is_empty() {
        return !matches!(c.target, CompareTarget::Value(_)) && c.holds_for(&KeyValue::default());
    }
    found.iter().all(|kv| c.holds_for(kv))
}

/// The puts of a write's branch (`success`; a plain put is its own success branch).
fn branch_puts(cmd: &Command, success: bool) -> Vec<&PutRequest> {
    match cmd {
        Command::Put(p) if success => vec![p],
        Command::Txn(t) => (if success { &t.success } else { &t.failure })
            .iter()
            .filter_map(|op| match op {
                RequestOp::Put(p) => Some(p),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a txn's branch changes the store (workload txns only put).
fn branch_writes(cmd: &Command, success: bool) -> bool {
    match cmd {
        Command::Txn(t) => (if success { &t.success } else { &t.failure })
            .iter()
            .any(|op| !op.is_read_only()),
        _ => false,
    }
}

/// Whether an acknowledged write with this answer changed the store.
fn changes(cmd: &Command, response: &Response) -> bool {
    match (cmd, response) {
        (Command::Put(_), _) => true,
        (Command::Txn(_), Response::Txn(t)) => branch_writes(cmd, t.succeeded),
        (Command::DeleteRange(_), Response::DeleteRange(d)) => d.deleted > 0,
        _ => false,
    }
}

/// An operation placed in real time: when it was invoked, when it returned (if it did, and
/// answered), its point (if it has one), the lease it found alive (a keep-alive), and its
/// index in the history.
#[derive(Clone, Copy)]
struct Timed {
    call: u64,
    ret: Option<u64>,
    point: Option<i64>,
    keeps: Option<LeaseId>,
    op: usize,
}

impl Timed {
    fn new(
        rec: &StoreRecord,
        op: usize,
        ret: Option<u64>,
        point: Option<i64>,
        keeps: Option<LeaseId>,
    ) -> Timed {
        Timed {
            call: rec.call_us,
            ret,
            point,
            keeps,
            op,
        }
    }
}

/// A point on the line of revisions (module doc, 5).
fn change_point(r: Revision) -> i64 {
    2 * r
}

fn after_point(r: Revision) -> i64 {
    2 * r + 1
}

fn point_name(p: i64) -> String {
    if p % 2 == 0 {
        format!("the change at revision {}", p / 2)
    } else {
        format!("revision {}", p / 2)
    }
}

/// The checker's pass over the history and the states.
struct Pass<'a> {
    h: &'a [StoreRecord],
    s: &'a States,
    f: StoreFindings,
    /// The revision at which each write took effect.
    applied: HashMap<usize, Revision>,
    /// The revision of each lease's end (its keys deleted at once).
    lease_end: HashMap<LeaseId, Revision>,
    /// Put values -> (write, branch).
    by_value: HashMap<&'a [u8], (usize, bool)>,
    /// Acknowledged writes by the revision their answer names.
    acked_at: HashMap<Revision, Vec<usize>>,
    /// Delete changes no acknowledged write explains: (revision, keys, lease keys among
    /// them, the unknown-outcome deletes that would explain it).
    pending: Vec<(Revision, Vec<Bytes>, bool, Vec<usize>)>,
}

/// Checks the store clients' history against the states (module doc).
pub fn check(history: &[StoreRecord], states: &States, times: LeaseTimes) -> StoreFindings {
    let mut p = Pass {
        h: history,
        s: states,
        f: StoreFindings {
            ops: history.len(),
            changes: states.changes.len(),
            ..StoreFindings::default()
        },
        applied: HashMap::new(),
        lease_end: HashMap::new(),
        by_value: HashMap::new(),
        acked_at: HashMap::new(),
        pending: Vec::new(),
    };
    for (i, r) in history.iter().enumerate() {
        let StoreOp::Write(cmd) = &r.op else { continue };
        for success in [true, false] {
            for put in branch_puts(cmd, success) {
                p.by_value.entry(&put.value[..]).or_insert((i, success));
            }
        }
        if let StoreOutcome::Done { revision, response } = &r.outcome {
            p.f.acked_writes += 1;
            p.acked_at.entry(*revision).or_default().push(i);
            if matches!(response, Response::Txn(t) if !t.succeeded) {
                p.f.failed_txns += 1;
            }
        }
    }
    p.f.reads = history
        .iter()
        .filter(|r| {
            matches!(r.op, StoreOp::Range { .. }) && matches!(r.outcome, StoreOutcome::Done { .. })
        })
        .count();
    p.revisions();
    // At each revision: the change that made it, then what was answered there.
    let mut at: BTreeMap<Revision, Vec<usize>> = BTreeMap::new();
    for (i, r) in history.iter().enumerate() {
        if let StoreOutcome::Done { revision, .. } = r.outcome {
            if revision < states.first || revision > states.last {
                p.f.note(
                    |f| &mut f.wrong_answers,
                    format!(
                        "#{i} {:?} answered at revision {revision}, outside the states read \
                         ({} ..= {})",
                        r.op, states.first, states.last
                    ),
                );
                continue;
            }
            at.entry(revision).or_default().push(i);
        }
    }
    let mut state = states.base.clone();
    for (&r, c) in &states.changes {
        // The answers at the revisions before this change see the state before it.
        let before: Vec<Revision> = at.range(..r).map(|(r, _)| *r).collect();
        for q in before {
            for i in at.remove(&q).unwrap_or_default() {
                p.answered_at(i, q, &state);
            }
        }
        p.change(r, c, &state);
        for k in &c.deletes {
            state.remove(k);
        }
        for kv in &c.puts {
            state.insert(kv.key.clone(), kv.clone());
        }
    }
    for (q, ops) in std::mem::take(&mut at) {
        for i in ops {
            p.answered_at(i, q, &state);
        }
    }
    p.match_deletes();
    p.acked_effects();
    p.real_time();
    p.abandoned(&state, times);
    p.f.unknown_applied = p
        .applied
        .keys()
        .filter(|&&i| history[i].outcome == StoreOutcome::Unknown)
        .count();
    p.f.lease_ends = p.lease_end.len();
    p.f
}

impl<'a> Pass<'a> {
    /// Module doc, 3: every revision one change, inside the span or out of it.
    fn revisions(&mut self) {
        let s = self.s;
        let span = (s.last - s.first).max(0) as u64;
        let inside = s.changes.len() as u64;
        let unchanged = span.saturating_sub(inside);
        if unchanged > s.outside_changes {
            let n = unchanged - s.outside_changes;
            self.f.gaps += n as usize;
            let first_gap = (s.first + 1..=s.last).find(|r| !s.changes.contains_key(r));
            self.f.examples.push(format!(
                "{n} of the revisions {} ..= {} changed nothing: {} changed the span, {} \
                 were puts of other keys (the first revision without a change of the span: \
                 {first_gap:?})",
                s.first + 1,
                s.last,
                inside,
                s.outside_changes
            ));
        } else if unchanged < s.outside_changes {
            let n = s.outside_changes - unchanged;
            self.f.repeats += n as usize;
            self.f.examples.push(format!(
                "{} changes in {span} revisions ({inside} of the span, {} of other keys)",
                inside + s.outside_changes,
                s.outside_changes
            ));
        }
        let mut seen = BTreeSet::new();
        for &r in &s.outside_revisions {
            if r <= s.first || r > s.last || s.changes.contains_key(&r) || !seen.insert(r) {
                self.f.note(
                    |f| &mut f.repeats,
                    format!("a put of a key outside the span has revision {r}, which another change has (or which is outside {} ..= {})", s.first + 1, s.last),
                );
            }
        }
    }

    /// Module doc, 2: the change at `r` from `prev` = S[r-1].
    fn change(&mut self, r: Revision, c: &Change, prev: &Kvs) {
        match (c.puts.is_empty(), c.deletes.is_empty()) {
            (false, true) => self.puts(r, c, prev),
            (true, false) => self.deletes(r, c, prev),
            _ => self.f.note(
                |f| &mut f.phantom,
                format!("the change at revision {r} both puts and deletes: {c:?}"),
            ),
        }
    }

    fn puts(&mut self, r: Revision, c: &Change, prev: &Kvs) {
        // The state after a put: the key's incarnation goes on or starts at r.
        for kv in &c.puts {
            let (create, version) = match prev.get(&kv.key) {
                Some(p) => (p.create_revision, p.version + 1),
                None => (r, 1),
            };
            if kv.mod_revision != r || kv.create_revision != create || kv.version != version {
                self.f.diverged.push(format!(
                    "revision {r}: {kv:?} does not follow from {:?}",
                    prev.get(&kv.key)
                ));
                return;
            }
        }
        let owners: BTreeSet<(usize, bool)> = c
            .puts
            .iter()
            .filter_map(|kv| self.by_value.get(&kv.value[..]).copied())
            .collect();
        let Some(&(w, success)) = owners.first() else {
            return self.f.note(
                |f| &mut f.phantom,
                format!(
                    "the change at revision {r} puts {} which no write wrote",
                    show(&c.puts)
                ),
            );
        };
        let rec = &self.h[w];
        let StoreOp::Write(cmd) = &rec.op else {
            unreachable!("values index writes only")
        };
        let wanted = branch_puts(cmd, success);
        let exact = owners.len() == 1
            && wanted.len() == c.puts.len()
            && wanted.iter().all(|p| {
                c.puts
                    .iter()
                    .any(|kv| kv.key == p.key && kv.value == p.value && kv.lease == p.lease)
            });
        if !exact {
            return self.f.note(
                |f| &mut f.phantom,
                format!(
                    "the change at revision {r} puts {}; write #{w} {cmd:?} puts otherwise",
                    show(&c.puts)
                ),
            );
        }
        if let Some(first) = self.applied.insert(w, r) {
            self.f.note(
                |f| &mut f.repeats,
                format!("write #{w} {cmd:?} took effect at revisions {first} and {r}"),
            );
        }
        for kv in c.puts.iter().filter(|kv| kv.lease != 0) {
            if let Some(end) = self.lease_end.get(&kv.lease) {
                self.f.note(
                    |f| &mut f.lease,
                    format!(
                        "{} was attached to lease {} at revision {r}, after the lease ended at {end}",
                        show(std::slice::from_ref(kv)),
                        kv.lease
                    ),
                );
            }
        }
        if let Command::Txn(t) = cmd {
            let all = t.compare.iter().all(|c| holds(prev, c));
            if all != success {
                self.f.note(
                    |f| &mut f.wrong_answers,
                    format!(
                        "txn #{w} {t:?} took its {} branch at revision {r}, but its compares {} at {}",
                        if success { "success" } else { "failure" },
                        if all { "hold" } else { "fail" },
                        r - 1
                    ),
                );
            }
        }
        match &rec.outcome {
            StoreOutcome::Failed => self.f.note(
                |f| &mut f.phantom,
                format!("write #{w} {cmd:?} was refused, and took effect at revision {r}"),
            ),
            StoreOutcome::Done { revision, response } => {
                if *revision != r {
                    self.f.note(
                        |f| &mut f.lost,
                        format!(
                            "write #{w} {cmd:?} was acknowledged at revision {revision}, and took effect at {r}"
                        ),
                    );
                }
                match (cmd, response) {
                    (Command::Put(p), Response::Put(resp)) => {
                        let before = prev.get(&p.key).cloned();
                        if p.prev_kv && resp.prev_kv != before {
                            self.f.note(
                                |f| &mut f.wrong_answers,
                                format!(
                                    "put #{w} at revision {r} answered prev_kv {:?}; S[{}] has {before:?}",
                                    resp.prev_kv,
                                    r - 1
                                ),
                            );
                        }
                    }
                    (Command::Txn(_), Response::Txn(resp)) if resp.succeeded == success => {}
                    _ => self.f.note(
                        |f| &mut f.wrong_answers,
                        format!(
                            "write #{w} {cmd:?} took effect at revision {r} ({} branch) and was answered {response:?}",
                            if success { "success" } else { "failure" }
                        ),
                    ),
                }
            }
            StoreOutcome::Unknown | StoreOutcome::Ttl(_) => {}
        }
    }

    fn deletes(&mut self, r: Revision, c: &Change, prev: &Kvs) {
        let gone: Vec<&KeyValue> = c.deletes.iter().filter_map(|k| prev.get(k)).collect();
        if gone.len() != c.deletes.len() {
            self.f.diverged.push(format!(
                "revision {r}: deletes {:?}, not all of which S[{}] holds",
                c.deletes,
                r - 1
            ));
            return;
        }
        // An acknowledged delete or revoke answered at r explains it, and no other.
        for &w in self.acked_at.get(&r).map(Vec::as_slice).unwrap_or(&[]) {
            let StoreOp::Write(cmd) = &self.h[w].op else {
                continue;
            };
            let StoreOutcome::Done { response, .. } = &self.h[w].outcome else {
                continue;
            };
            match (cmd, response) {
                (Command::DeleteRange(d), Response::DeleteRange(resp)) if resp.deleted > 0 => {
                    let would = live(prev, &d.key, &d.range_end);
                    let keys: Vec<Bytes> = would.iter().map(|kv| kv.key.clone()).collect();
                    if keys != c.deletes || resp.deleted != keys.len() as i64 {
                        return self.f.note(
                            |f| &mut f.lost,
                            format!(
                                "delete #{w} {d:?} answered deleted={} at revision {r}; that change deleted {:?}, the range held {keys:?}",
                                resp.deleted, c.deletes
                            ),
                        );
                    }
                    if d.prev_kv && resp.prev_kvs.iter().ne(would.iter().copied()) {
                        self.f.note(
                            |f| &mut f.wrong_answers,
                            format!(
                                "delete #{w} at revision {r} answered prev_kvs {:?}; S[{}] has {would:?}",
                                resp.prev_kvs,
                                r - 1
                            ),
                        );
                    }
                    self.applied.insert(w, r);
                    return;
                }
                (Command::LeaseRevoke { id }, Response::LeaseRevoked) => {
                    let keys: Vec<Bytes> = prev
                        .values()
                        .filter(|kv| kv.lease == *id)
                        .map(|kv| kv.key.clone())
                        .collect();
                    if keys == c.deletes {
                        self.applied.insert(w, r);
                        self.lease_end.insert(*id, r);
                        return;
                    }
                }
                _ => {}
            }
        }
        // Every key of one lease at once: its revoke (answer unknown) or its expiry.
        let leased = gone.iter().any(|kv| kv.lease != 0);
        let lease = gone[0].lease;
        if lease != 0 && gone.iter().all(|kv| kv.lease == lease) {
            let all: Vec<&Bytes> = prev
                .values()
                .filter(|kv| kv.lease == lease)
                .map(|kv| &kv.key)
                .collect();
            if all.len() == c.deletes.len() {
                self.lease_end.insert(lease, r);
                return;
            }
        }
        // Else a delete whose answer was lost: matched after the pass, each at most once.
        let cands = (0..self.h.len())
            .filter(|&w| {
                let rec = &self.h[w];
                let StoreOp::Write(Command::DeleteRange(d)) = &rec.op else {
                    return false;
                };
                rec.outcome == StoreOutcome::Unknown
                    && live(prev, &d.key, &d.range_end)
                        .iter()
                        .map(|kv| &kv.key)
                        .eq(c.deletes.iter())
            })
            .collect();
        self.pending.push((r, c.deletes.clone(), leased, cands));
    }

    /// Delete changes no acknowledged write explained, matched with deletes whose outcome
    /// is unknown (each explains one change at most; augmenting paths, so a first choice
    /// never blocks a matching that exists).
    fn match_deletes(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        // A delete can only be the change at r if nothing that returned before it was
        // invoked is at a later point (module doc, 5): without this a delete invoked long
        // after r could take r from the older delete that made it (a one-hour soak's false
        // report), and be flagged out of real-time order.
        let floor = self.returned_floor();
        for (r, _, _, cands) in &mut pending {
            cands.retain(|&w| floor(self.h[w].call_us) <= change_point(*r));
        }
        let mut owner: HashMap<usize, usize> = HashMap::new();
        fn augment(
            i: usize,
            pending: &[(Revision, Vec<Bytes>, bool, Vec<usize>)],
            owner: &mut HashMap<usize, usize>,
            seen: &mut BTreeSet<usize>,
        ) -> bool {
            for &w in &pending[i].3 {
                if !seen.insert(w) {
                    continue;
                }
                let free = match owner.get(&w) {
                    None => true,
                    Some(&j) => augment(j, pending, owner, seen),
                };
                if free {
                    owner.insert(w, i);
                    return true;
                }
            }
            false
        }
        for i in 0..pending.len() {
            if augment(i, &pending, &mut owner, &mut BTreeSet::new()) {
                continue;
            }
            let (r, keys, leased, _) = &pending[i];
            let shown: Vec<String> = keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            if *leased {
                self.f.note(
                    |f| &mut f.lease,
                    format!(
                        "lease keys {shown:?} vanished at revision {r}, not with every key of their lease and by no delete"
                    ),
                );
            } else {
                self.f.note(
                    |f| &mut f.phantom,
                    format!("the change at revision {r} deleted {shown:?}; no write explains it"),
                );
            }
        }
        for (w, i) in owner {
            self.applied.insert(w, pending[i].0);
        }
    }

    /// The latest point among the operations with a point and a return (acknowledged
    /// writes, answered linearizable and lease reads) that returned before a time: what
    /// an operation invoked then may not precede.
    fn returned_floor(&self) -> impl Fn(u64) -> i64 + use<> {
        let mut returned: Vec<(u64, i64)> = Vec::new();
        for (i, rec) in self.h.iter().enumerate() {
            match (&rec.op, &rec.outcome) {
                (StoreOp::Write(cmd), StoreOutcome::Done { revision, response }) => {
                    let point = match self.applied.get(&i) {
                        Some(&r) => change_point(r),
                        None if changes(cmd, response) => continue,
                        None => after_point(*revision),
                    };
                    returned.push((rec.ret_us, point));
                }
                (StoreOp::Range { consistency, .. }, StoreOutcome::Done { revision, .. })
                    if *consistency != CONSISTENCY_EVENTUAL =>
                {
                    returned.push((rec.ret_us, after_point(*revision)));
                }
                _ => {}
            }
        }
        returned.sort_unstable();
        let mut latest = i64::MIN;
        for r in &mut returned {
            latest = latest.max(r.1);
            r.1 = latest;
        }
        move |t| {
            let n = returned.partition_point(|r| r.0 < t);
            if n == 0 { i64::MIN } else { returned[n - 1].1 }
        }
    }

    /// What was answered at revision `q` (`state` = S[q]): reads, and writes that changed
    /// nothing.
    fn answered_at(&mut self, i: usize, q: Revision, state: &Kvs) {
        let rec = &self.h[i];
        let StoreOutcome::Done { response, .. } = &rec.outcome else {
            return;
        };
        match (&rec.op, response) {
            (StoreOp::Range { req, .. }, Response::Range(resp)) => {
                let want = range(state, req);
                if *resp != want {
                    self.f.note(
                        |f| &mut f.wrong_answers,
                        format!(
                            "range #{i} [{} .. {} us] {} answered at revision {q}: {}; S[{q}] gives {}",
                            rec.call_us,
                            rec.ret_us,
                            show_range(req),
                            show_resp(resp),
                            show_resp(&want)
                        ),
                    );
                }
            }
            (StoreOp::Write(Command::Txn(t)), Response::Txn(resp)) if !resp.succeeded => {
                if t.compare.iter().all(|c| holds(state, c)) {
                    self.f.note(
                        |f| &mut f.wrong_answers,
                        format!(
                            "txn #{i} {t:?} answered failed at revision {q}, but its compares hold in S[{q}]"
                        ),
                    );
                }
                for (op, got) in t.failure.iter().zip(&resp.responses) {
                    if let (RequestOp::Range(req), ResponseOp::Range(got)) = (op, got) {
                        let want = range(state, req);
                        if *got != want {
                            self.f.note(
                                |f| &mut f.wrong_answers,
                                format!(
                                    "txn #{i} answered failed at revision {q} with the range {}; S[{q}] gives {}",
                                    show_resp(got),
                                    show_resp(&want)
                                ),
                            );
                        }
                    }
                }
            }
            (StoreOp::Write(Command::DeleteRange(d)), Response::DeleteRange(resp))
                if resp.deleted == 0 =>
            {
                let held = live(state, &d.key, &d.range_end);
                if !held.is_empty() {
                    self.f.note(
                        |f| &mut f.wrong_answers,
                        format!(
                            "delete #{i} {d:?} answered deleted=0 at revision {q}; S[{q}] holds {}",
                            show(&held.into_iter().cloned().collect::<Vec<_>>())
                        ),
                    );
                }
            }
            (StoreOp::Write(Command::LeaseRevoke { id }), Response::LeaseRevoked) => {
                let held: Vec<KeyValue> = state
                    .values()
                    .filter(|kv| kv.lease == *id)
                    .cloned()
                    .collect();
                if !held.is_empty() {
                    self.f.note(
                        |f| &mut f.lease,
                        format!(
                            "revoke #{i} of lease {id} answered at revision {q}; S[{q}] still holds its keys {}",
                            show(&held)
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    /// Acknowledged writes that should have changed the store did so at their revision.
    fn acked_effects(&mut self) {
        for (i, rec) in self.h.iter().enumerate() {
            let (StoreOp::Write(cmd), StoreOutcome::Done { revision, response }) =
                (&rec.op, &rec.outcome)
            else {
                continue;
            };
            if changes(cmd, response) && self.applied.get(&i) != Some(revision) {
                let seen = self.s.changes.get(revision);
                self.f.note(
                    |f| &mut f.lost,
                    format!(
                        "write #{i} {cmd:?} acknowledged at revision {revision} [{} .. {} us] is not the change there ({seen:?})",
                        rec.call_us, rec.ret_us
                    ),
                );
            }
        }
    }

    /// Module doc, 5 and the keep-alive rule of 6.
    fn real_time(&mut self) {
        let mut ops: Vec<Timed> = Vec::new();
        // The earliest return of an acknowledged revoke, per lease.
        let mut revoked: HashMap<LeaseId, u64> = HashMap::new();
        for (i, rec) in self.h.iter().enumerate() {
            match (&rec.op, &rec.outcome) {
                (StoreOp::Write(cmd), StoreOutcome::Done { revision, response }) => {
                    if let Command::LeaseRevoke { id } = cmd {
                        let t = revoked.entry(*id).or_insert(rec.ret_us);
                        *t = (*t).min(rec.ret_us);
                    }
                    let point = match self.applied.get(&i) {
                        Some(&r) => change_point(r),
                        // Lost (reported): it has no point.
                        None if changes(cmd, response) => continue,
                        None => after_point(*revision),
                    };
                    ops.push(Timed::new(rec, i, Some(rec.ret_us), Some(point), None));
                }
                (StoreOp::Write(_), StoreOutcome::Unknown) => {
                    if let Some(&r) = self.applied.get(&i) {
                        ops.push(Timed::new(rec, i, None, Some(change_point(r)), None));
                    }
                }
                (StoreOp::Range { consistency, .. }, StoreOutcome::Done { revision, .. })
                    if *consistency != CONSISTENCY_EVENTUAL =>
                {
                    let point = Some(after_point(*revision));
                    ops.push(Timed::new(rec, i, Some(rec.ret_us), point, None));
                }
                (StoreOp::KeepAlive { lease }, StoreOutcome::Ttl(t)) if *t > 0 => {
                    ops.push(Timed::new(rec, i, None, None, Some(*lease)));
                }
                _ => {}
            }
        }
        ops.sort_by_key(|o| (o.call, o.op));
        let mut returned: Vec<(u64, i64, usize)> = ops
            .iter()
            .filter_map(|o| Some((o.ret?, o.point?, o.op)))
            .collect();
        returned.sort_unstable();
        let mut next = 0;
        // The latest point among the operations that returned so far, and which.
        let mut latest: Option<(i64, usize)> = None;
        for &Timed {
            call,
            point,
            keeps: lease,
            op: i,
            ..
        } in &ops
        {
            while next < returned.len() && returned[next].0 < call {
                let (_, p, j) = returned[next];
                if latest.is_none_or(|(q, _)| p > q) {
                    latest = Some((p, j));
                }
                next += 1;
            }
            let Some((lp, j)) = latest else { continue };
            let rec = &self.h[i];
            if let Some(p) = point
                && lp > p
            {
                let a = &self.h[j];
                self.f.note(
                    |f| &mut f.real_time,
                    format!(
                        "#{i} {} [{} .. {} us] is at {}, but #{j} {} [{} .. {} us] returned before it was invoked and is at {}",
                        show_op(&rec.op),
                        rec.call_us,
                        rec.ret_us,
                        point_name(p),
                        show_op(&a.op),
                        a.call_us,
                        a.ret_us,
                        point_name(lp)
                    ),
                );
            }
            if let Some(l) = lease {
                let ended = self.lease_end.get(&l).copied();
                let after_revoke = revoked.get(&l).is_some_and(|t| *t < call);
                let after_end = ended.is_some_and(|r| lp >= change_point(r));
                if after_revoke || after_end {
                    self.f.note(
                        |f| &mut f.lease,
                        format!(
                            "keep-alive #{i} of lease {l} [{} .. {} us] found it alive, invoked after {}",
                            rec.call_us,
                            rec.ret_us,
                            if after_revoke {
                                "its revoke returned".to_string()
                            } else {
                                format!(
                                    "#{j} at {} returned; its keys went at revision {}",
                                    point_name(lp),
                                    ended.unwrap_or(0)
                                )
                            }
                        ),
                    );
                }
            }
        }
    }

    /// Module doc, 6: leases no client renews end within their TTL and a grace.
    fn abandoned(&mut self, end_state: &Kvs, t: LeaseTimes) {
        let mut ttl: HashMap<LeaseId, i64> = HashMap::new();
        let mut renewed: HashMap<LeaseId, u64> = HashMap::new();
        for rec in self.h {
            let (lease, granted) = match (&rec.op, &rec.outcome) {
                (_, StoreOutcome::Failed) | (_, StoreOutcome::Ttl(0)) => continue,
                (
                    StoreOp::Write(Command::LeaseGrant { .. }),
                    StoreOutcome::Done {
                        response: Response::LeaseGranted(g),
                        ..
                    },
                ) => (g.id, Some(g.ttl)),
                (StoreOp::Write(Command::LeaseGrant { id, ttl }), StoreOutcome::Unknown) => {
                    (*id, Some(*ttl))
                }
                (StoreOp::KeepAlive { lease }, _) => (*lease, None),
                _ => continue,
            };
            if let Some(g) = granted {
                let e = ttl.entry(lease).or_insert(g);
                *e = (*e).max(g);
            }
            let r = renewed.entry(lease).or_insert(rec.ret_us);
            *r = (*r).max(rec.ret_us);
        }
        let mut reported = BTreeSet::new();
        for kv in end_state.values().filter(|kv| kv.lease != 0) {
            let (Some(&secs), Some(&last)) = (ttl.get(&kv.lease), renewed.get(&kv.lease)) else {
                continue;
            };
            let due = last.max(t.heal_us) + secs as u64 * 1_000_000 + t.grace_us;
            if t.end_us >= due && reported.insert(kv.lease) {
                self.f.note(
                    |f| &mut f.lease,
                    format!(
                        "lease {} (TTL {secs} s, last renewed at {last} us, the cluster healed at {} us) still holds {} at {} us",
                        kv.lease,
                        t.heal_us,
                        String::from_utf8_lossy(&kv.key),
                        t.end_us
                    ),
                );
            }
        }
    }
}

fn show(kvs: &[KeyValue]) -> String {
    let v: Vec<String> = kvs
        .iter()
        .map(|kv| {
            format!(
                "{}={} (create {}, mod {}, version {}, lease {})",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease
            )
        })
        .collect();
    format!("[{}]", v.join(", "))
}

fn show_range(r: &RangeRequest) -> String {
    format!(
        "[{} .. {}){}",
        String::from_utf8_lossy(&r.key),
        String::from_utf8_lossy(&r.range_end),
        if r.limit > 0 {
            format!(" limit {}", r.limit)
        } else {
            String::new()
        }
    )
}

fn show_resp(r: &RangeResponse) -> String {
    format!("count {} more {} {}", r.count, r.more, show(&r.kvs))
}

fn show_op(op: &StoreOp) -> String {
    match op {
        StoreOp::Write(c) => format!("{c:?}"),
        StoreOp::Range { req, consistency } => {
            format!("range {} (consistency {consistency})", show_range(req))
        }
        StoreOp::KeepAlive { lease } => format!("keep-alive of lease {lease}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_proto::native::{CONSISTENCY_LEASE, CONSISTENCY_LINEARIZABLE};
    use ringkv_store::{
        DeleteRangeRequest, DeleteRangeResponse, PutResponse, TxnRequest, TxnResponse,
    };

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn kv(
        k: &str,
        v: &str,
        create: Revision,
        m: Revision,
        version: i64,
        lease: LeaseId,
    ) -> KeyValue {
        KeyValue {
            key: b(k),
            create_revision: create,
            mod_revision: m,
            version,
            value: b(v),
            lease,
        }
    }

    fn kvs(list: &[KeyValue]) -> Kvs {
        list.iter().map(|kv| (kv.key.clone(), kv.clone())).collect()
    }

    fn rec(op: StoreOp, call: u64, ret: u64, outcome: StoreOutcome) -> StoreRecord {
        StoreRecord {
            client: 0,
            node: 1,
            op,
            call_us: call,
            ret_us: ret,
            outcome,
        }
    }

    fn put_cmd(k: &str, v: &str, lease: LeaseId) -> Command {
        Command::Put(PutRequest {
            key: b(k),
            value: b(v),
            lease,
            ..Default::default()
        })
    }

    fn done(revision: Revision, response: Response) -> StoreOutcome {
        StoreOutcome::Done { revision, response }
    }

    fn put_ok(k: &str, v: &str, lease: LeaseId, r: Revision, call: u64, ret: u64) -> StoreRecord {
        rec(
            StoreOp::Write(put_cmd(k, v, lease)),
            call,
            ret,
            done(r, Response::Put(PutResponse::default())),
        )
    }

    fn read(
        key: &str,
        end: &str,
        c: u8,
        r: Revision,
        got: &Kvs,
        call: u64,
        ret: u64,
    ) -> StoreRecord {
        let req = RangeRequest {
            key: b(key),
            range_end: b(end),
            ..Default::default()
        };
        let resp = range(got, &req);
        rec(
            StoreOp::Range {
                req,
                consistency: c,
            },
            call,
            ret,
            done(r, Response::Range(resp)),
        )
    }

    fn cas(k: &str, expect: Revision, v: &str) -> TxnRequest {
        TxnRequest {
            compare: vec![Compare {
                result: ringkv_store::CompareResult::Equal,
                target: CompareTarget::Mod(expect),
                key: b(k),
                range_end: Bytes::new(),
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: b(k),
                value: b(v),
                ..Default::default()
            })],
            failure: vec![RequestOp::Range(RangeRequest {
                key: b(k),
                ..Default::default()
            })],
        }
    }

    const TIMES: LeaseTimes = LeaseTimes {
        heal_us: 1_000,
        end_us: 2_000,
        grace_us: 20_000_000,
    };

    /// The states of a clean run, revisions 1..=7:
    /// 2: a=1; 3: b=2 under lease 9 and c=3 (a txn); ... see `clean`.
    fn clean_states() -> Vec<Kvs> {
        let a1 = kv("sa", "1", 2, 2, 1, 0);
        let l1 = kv("sl1", "2", 3, 3, 1, 9);
        let l2 = kv("sl2", "3", 4, 4, 1, 9);
        let a4 = kv("sa", "4", 2, 5, 2, 0);
        vec![
            kvs(&[]),
            kvs(std::slice::from_ref(&a1)),
            kvs(&[a1.clone(), l1.clone()]),
            kvs(&[a1.clone(), l1.clone(), l2.clone()]),
            kvs(&[a4.clone(), l1.clone(), l2.clone()]),
            // 6: lease 9 expires: both its keys at once.
            kvs(std::slice::from_ref(&a4)),
            // 7: a is deleted by a delete whose answer was lost.
            kvs(&[]),
        ]
    }

    fn clean_history(s: &[Kvs]) -> Vec<StoreRecord> {
        let del = Command::DeleteRange(DeleteRangeRequest {
            key: b("sa"),
            ..Default::default()
        });
        vec![
            put_ok("sa", "1", 0, 2, 0, 10),
            read("sa", "", CONSISTENCY_LINEARIZABLE, 2, &s[1], 11, 12),
            rec(
                StoreOp::Write(Command::LeaseGrant { id: 9, ttl: 3 }),
                13,
                14,
                done(
                    2,
                    Response::LeaseGranted(ringkv_store::LeaseGrantResponse { id: 9, ttl: 3 }),
                ),
            ),
            put_ok("sl1", "2", 9, 3, 15, 20),
            // Its answer was lost; it took effect.
            rec(
                StoreOp::Write(put_cmd("sl2", "3", 9)),
                21,
                60,
                StoreOutcome::Unknown,
            ),
            // A CAS on a's mod revision 2: took effect at 5.
            rec(
                StoreOp::Write(Command::Txn(cas("sa", 2, "4"))),
                61,
                70,
                done(
                    5,
                    Response::Txn(TxnResponse {
                        succeeded: true,
                        responses: vec![ResponseOp::Put(PutResponse::default())],
                    }),
                ),
            ),
            // A stale CAS fails at 5 and reads a.
            rec(
                StoreOp::Write(Command::Txn(cas("sa", 2, "5"))),
                71,
                80,
                done(
                    5,
                    Response::Txn(TxnResponse {
                        succeeded: false,
                        responses: vec![ResponseOp::Range(range(
                            &s[4],
                            &RangeRequest {
                                key: b("sa"),
                                ..Default::default()
                            },
                        ))],
                    }),
                ),
            ),
            read("s", "t", CONSISTENCY_LEASE, 5, &s[4], 81, 82),
            // Concurrent with the expiry: either state.
            read("s", "t", CONSISTENCY_LINEARIZABLE, 6, &s[5], 83, 90),
            // An eventual read may be stale.
            read("s", "t", CONSISTENCY_EVENTUAL, 3, &s[2], 91, 92),
            rec(StoreOp::Write(del), 93, 99, StoreOutcome::Unknown),
            rec(
                StoreOp::KeepAlive { lease: 9 },
                100,
                101,
                StoreOutcome::Ttl(0),
            ),
            // A refused put never appears.
            rec(
                StoreOp::Write(put_cmd("sb", "6", 0)),
                102,
                103,
                StoreOutcome::Failed,
            ),
        ]
    }

    #[test]
    fn a_clean_history_passes() {
        let s = clean_states();
        let st = States::from_sequence(1, &s);
        let h = clean_history(&s);
        let f = check(&h, &st, TIMES);
        assert!(f.ok(), "{:?}", f.failures());
        assert_eq!((f.ops, f.acked_writes, f.changes), (h.len(), 5, 6));
    }

    #[test]
    fn a_phantom_change_is_caught() {
        let mut s = clean_states();
        // Revision 7 puts a value nobody wrote instead of the delete.
        s[6] = kvs(&[kv("sa", "77", 2, 7, 3, 0)]);
        let f = check(&clean_history(&s), &States::from_sequence(1, &s), TIMES);
        assert_eq!(f.phantom, 1, "{:?}", f.failures());
        // And a delete no write explains: without the delete whose answer was lost.
        let s = clean_states();
        let h: Vec<StoreRecord> = clean_history(&s)
            .into_iter()
            .filter(|r| !matches!(r.op, StoreOp::Write(Command::DeleteRange(_))))
            .collect();
        let f = check(&h, &States::from_sequence(1, &s), TIMES);
        assert_eq!(f.phantom, 1, "{:?}", f.failures());
        // A refused write that took effect.
        let mut h = clean_history(&s);
        h[4].outcome = StoreOutcome::Failed;
        let f = check(&h, &States::from_sequence(1, &s), TIMES);
        assert_eq!(f.phantom, 1, "{:?}", f.failures());
    }

    #[test]
    fn a_lost_acknowledged_put_is_caught() {
        let s = clean_states();
        let mut h = clean_history(&s);
        // Acknowledged at 8: no state has it.
        h.push(put_ok("sb", "8", 0, 7, 200, 210));
        let f = check(&h, &States::from_sequence(1, &s), TIMES);
        assert_eq!(f.lost, 1, "{:?}", f.failures());
        assert_eq!(f.phantom, 0);
        // Acknowledged at another revision than the one it took effect at.
        let mut h = clean_history(&s);
        h[0].outcome = done(3, Response::Put(PutResponse::default()));
        let f = check(&h, &States::from_sequence(1, &s), TIMES);
        assert!(f.lost >= 1, "{:?}", f.failures());
    }

    #[test]
    fn a_stale_linearizable_read_is_caught() {
        let s = clean_states();
        let mut h = clean_history(&s);
        // Invoked after the CAS (revision 5) returned at 70 us, it reads revision 3.
        h.push(read("s", "t", CONSISTENCY_LINEARIZABLE, 3, &s[2], 75, 76));
        let f = check(&h, &States::from_sequence(1, &s), TIMES);
        assert_eq!(f.real_time, 1, "{:?}", f.failures());
        assert_eq!(f.wrong_answers, 0);
        // The same read at eventual consistency is fine.
        let mut h = clean_history(&s);
        h.push(read("s", "t", CONSISTENCY_EVENTUAL, 3, &s[2], 75, 76));
        assert!(check(&h, &States::from_sequence(1, &s), TIMES).ok());
        // A read whose answer is no state's at its revision.
        let mut h = clean_history(&s);
        h.push(read("s", "t", CONSISTENCY_EVENTUAL, 3, &s[1], 75, 76));
        let f = check(&h, &States::from_sequence(1, &s), TIMES);
        assert_eq!(f.wrong_answers, 1, "{:?}", f.failures());
    }

    #[test]
    fn a_revision_gap_is_caught() {
        let mut s = clean_states();
        // Revision 8 changes nothing, and nothing outside the span changed either.
        s.push(s[6].clone());
        let st = States::from_sequence(1, &s);
        let f = check(&clean_history(&s), &st, TIMES);
        assert_eq!(f.gaps, 1, "{:?}", f.failures());
        // A put of another key made it: no gap.
        let mut st = States::from_sequence(1, &s);
        st.outside_changes = 1;
        st.outside_revisions = vec![8];
        assert!(check(&clean_history(&s), &st, TIMES).ok());
        // That put at a revision the span changed at: a repeat.
        st.outside_revisions = vec![5];
        let f = check(&clean_history(&s), &st, TIMES);
        assert_eq!(f.repeats, 1, "{:?}", f.failures());
    }

    #[test]
    fn a_wrong_txn_outcome_is_caught() {
        let s = clean_states();
        // The stale CAS answered "failed" at 2, where a's mod revision is 2: it held.
        let mut h = clean_history(&s);
        h[6].outcome = done(
            2,
            Response::Txn(TxnResponse {
                succeeded: false,
                responses: vec![ResponseOp::Range(range(
                    &s[1],
                    &RangeRequest {
                        key: b("sa"),
                        ..Default::default()
                    },
                ))],
            }),
        );
        let f = check(&h, &States::from_sequence(1, &s), TIMES);
        assert_eq!(f.wrong_answers, 1, "{:?}", f.failures());
        // The CAS took effect though its compare fails: a's mod revision was 2, not 3.
        let mut h = clean_history(&s);
        h[5].op = StoreOp::Write(Command::Txn(cas("sa", 3, "4")));
        let f = check(&h, &States::from_sequence(1, &s), TIMES);
        assert_eq!(f.wrong_answers, 1, "{:?}", f.failures());
    }

    #[test]
    fn a_lease_key_that_vanished_alone_is_caught() {
        let mut s = clean_states();
        // At 6 only one of lease 9's two keys goes (the other at 7 with a).
        let l2 = kv("sl2", "3", 4, 4, 1, 9);
        s[5] = kvs(&[kv("sa", "4", 2, 5, 2, 0), l2]);
        let f = check(&clean_history(&s), &States::from_sequence(1, &s), TIMES);
        assert!(f.lease >= 1, "{:?}", f.failures());
        // A lease nobody renewed still holds a key long after its TTL.
        let s = clean_states();
        let mut s2 = s.clone();
        s2[6] = s[4].clone();
        s2[5] = s[4].clone();
        let mut st = States::from_sequence(1, &s2[..5]);
        st.last = 7;
        st.outside_changes = 2;
        st.outside_revisions = vec![6, 7];
        let h: Vec<StoreRecord> = clean_history(&s)
            .into_iter()
            .filter(|r| match &r.op {
                StoreOp::Write(Command::DeleteRange(_)) => false,
                StoreOp::Range { consistency, .. } => *consistency == CONSISTENCY_EVENTUAL,
                _ => true,
            })
            .collect();
        let late = LeaseTimes {
            end_us: 60_000_000,
            ..TIMES
        };
        assert!(
            check(&h, &st, TIMES).ok(),
            "{:?}",
            check(&h, &st, TIMES).failures()
        );
        let f = check(&h, &st, late);
        assert_eq!(f.lease, 1, "{:?}", f.failures());
        // A keep-alive that finds lease 9 alive after its keys went (at 6) was seen gone.
        let mut h = clean_history(&s);
        h.push(rec(
            StoreOp::KeepAlive { lease: 9 },
            95,
            96,
            StoreOutcome::Ttl(3),
        ));
        let f = check(&h, &States::from_sequence(1, &s), TIMES);
        assert_eq!(f.lease, 1, "{:?}", f.failures());
    }

    #[test]
    fn the_states_come_from_per_revision_reads() {
        let s = clean_states();
        let st = States::from_sequence(1, &s);
        // What a node answers: the keys put at r, and the span's size at r.
        let reads: Vec<RevisionRead> = s[1..]
            .iter()
            .enumerate()
            .map(|(i, state)| {
                let r = 2 + i as Revision;
                RevisionRead {
                    kvs: state
                        .values()
                        .filter(|kv| kv.mod_revision == r)
                        .cloned()
                        .collect(),
                    count: state.len() as i64,
                }
            })
            .collect();
        let need = deleting_revisions(1, 0, &reads);
        assert_eq!(need, vec![6, 7]);
        let whole: BTreeMap<Revision, Kvs> = need
            .iter()
            .map(|&r| (r, s[(r - 1) as usize].clone()))
            .collect();
        let changes = changes_from_reads(1, &Kvs::new(), &reads, &whole).unwrap();
        assert_eq!(changes, st.changes);
        // Without the whole read of a deleting revision, or with one that disagrees.
        let mut partial = whole.clone();
        partial.remove(&7);
        assert!(changes_from_reads(1, &Kvs::new(), &reads, &partial).is_err());
        let mut wrong = whole.clone();
        wrong.insert(5, s[3].clone());
        assert!(changes_from_reads(1, &Kvs::new(), &reads, &wrong).is_err());
        // A key put at another revision than the one read.
        let mut bad = reads.clone();
        bad[0].kvs[0].mod_revision = 5;
        assert!(changes_from_reads(1, &Kvs::new(), &bad, &whole).is_err());
    }

    #[test]
    fn a_lost_delete_is_matched_only_where_real_time_allows() {
        // a is put (2) and deleted at 3 by a delete whose answer was lost (invoked at 2);
        // a read returns at 11 having seen 4 (a put again); a second lost delete of a,
        // invoked at 12, cannot be the change at 3, nor at 5 (nothing: a stays) — the
        // first one explains 3, as in the one-hour soak where a matching blind to real
        // time gave 3 to the later delete and reported it out of order.
        let a = kv("sa", "1", 2, 2, 1, 0);
        let a2 = kv("sa", "2", 4, 4, 1, 0);
        let s = vec![
            kvs(&[]),
            kvs(std::slice::from_ref(&a)),
            kvs(&[]),
            kvs(std::slice::from_ref(&a2)),
        ];
        let del = || {
            Command::DeleteRange(DeleteRangeRequest {
                key: b("sa"),
                ..Default::default()
            })
        };
        let st = States::from_sequence(1, &s);
        // The later delete first in the history, so a matching in history order would
        // try it first.
        let h = vec![
            put_ok("sa", "1", 0, 2, 0, 1),
            rec(StoreOp::Write(del()), 12, 30, StoreOutcome::Unknown),
            rec(StoreOp::Write(del()), 2, 20, StoreOutcome::Unknown),
            put_ok("sa", "2", 0, 4, 5, 6),
            read("sa", "", CONSISTENCY_LINEARIZABLE, 4, &s[3], 7, 11),
        ];
        let f = check(&h, &st, TIMES);
        assert!(f.ok(), "{:?}", f.failures());
        assert_eq!(f.unknown_applied, 1);
        // Without the earlier delete, nothing can explain 3: a phantom, not a reordering.
        let h2: Vec<StoreRecord> = h
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, r)| r.clone())
            .collect();
        let f = check(&h2, &st, TIMES);
        assert_eq!((f.phantom, f.real_time), (1, 0), "{:?}", f.failures());
    }

    #[test]
    fn a_delete_is_matched_once() {
        // Two deletes of a in the states; only one delete whose answer was lost.
        let a = kv("sa", "1", 2, 2, 1, 0);
        let a2 = kv("sa", "2", 4, 4, 1, 0);
        let s = vec![
            kvs(&[]),
            kvs(std::slice::from_ref(&a)),
            kvs(&[]),
            kvs(std::slice::from_ref(&a2)),
            kvs(&[]),
        ];
        let del = || {
            Command::DeleteRange(DeleteRangeRequest {
                key: b("sa"),
                ..Default::default()
            })
        };
        let mut h = vec![
            put_ok("sa", "1", 0, 2, 0, 1),
            rec(StoreOp::Write(del()), 2, 3, StoreOutcome::Unknown),
            put_ok("sa", "2", 0, 4, 4, 5),
        ];
        let st = States::from_sequence(1, &s);
        assert_eq!(check(&h, &st, TIMES).phantom, 1);
        h.push(rec(
            StoreOp::Write(del()),
            6,
            7,
            done(
                5,
                Response::DeleteRange(DeleteRangeResponse {
                    deleted: 1,
                    prev_kvs: Vec::new(),
                }),
            ),
        ));
        let f = check(&h, &st, TIMES);
        assert!(f.ok(), "{:?}", f.failures());
    }
}
