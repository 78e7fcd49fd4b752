//! The model-based property test: random histories of every store write and read, applied
//! to two implementations of `Model` that must agree on every answer.
//!
//! Seeded with `ringkv_rng::Rng`, over a small key set (keys of one and two bytes sharing
//! prefixes, byte 0xff included, empty values) so that ranges, prefixes, compares and
//! deletes keep hitting several keys and the same keys again. Every step applies one
//! command to both models and compares the `Applied`, then compares a few random ranges
//! (past, compacted and future revisions, every option), the revision, the compaction
//! revision, the alarm, the lease table and the hash at the current and a random
//! revision. For now both sides are the reference model (which checks the generator and
//! the model's determinism); the real store implements `Model` and is compared against it.
//!
//! `MODEL_SEEDS=n` runs seeds 0..n (default 300), `MODEL_STEPS=n` steps per seed (default
//! 300), `MODEL_SEED=s` replays one seed. A mismatch names the seed, the step, the command
//! and the commands before it; `--nocapture` shows how often each outcome came up.
//!
//! `ringkv_store::reference` exists with the `reference` feature only: the crate's
//! dev-dependency on itself with that feature (Cargo.toml) turns it on for test builds, so
//! a plain `cargo test` runs this test (with `required-features` it would be skipped
//! silently without `--features reference`).

use std::collections::BTreeMap;
use std::fmt::Debug;

use bytes::Bytes;
use ringkv_rng::Rng;
use ringkv_store::reference::{LEASE_TTL_MAX, Reference};
use ringkv_store::{
    Applied, Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, LeaseId,
    LeaseInfo, PutRequest, RangeRequest, RangeResponse, RequestOp, Response, ResponseOp, Revision,
    SortOrder, SortTarget, StoreError, TxnRequest, prefix_end,
};
use ringkv_store::{Index, Store};

/// What the test compares: the reference model's API, which the real store has too.
trait Model {
    fn apply(&mut self, cmd: &Command) -> Applied;
    fn range(&self, r: &RangeRequest) -> Result<(Revision, RangeResponse), StoreError>;
    fn revision(&self) -> Revision;
    fn compact_revision(&self) -> Revision;
    fn lease(&self, id: LeaseId) -> Option<LeaseInfo>;
    fn leases(&self) -> Vec<LeaseId>;
    fn alarm(&self) -> bool;
    fn hash(&self, rev: Revision) -> Result<u64, StoreError>;
}

impl Model for Reference {
    fn apply(&mut self, cmd: &Command) -> Applied {
        Reference::apply(self, cmd)
    }
    fn range(&self, r: &RangeRequest) -> Result<(Revision, RangeResponse), StoreError> {
        Reference::range(self, r)
    }
    fn revision(&self) -> Revision {
        Reference::revision(self)
    }
    fn compact_revision(&self) -> Revision {
        Reference::compact_revision(self)
    }
    fn lease(&self, id: LeaseId) -> Option<LeaseInfo> {
        Reference::lease(self, id)
    }
    fn leases(&self) -> Vec<LeaseId> {
        Reference::leases(self)
    }
    fn alarm(&self) -> bool {
        Reference::alarm(self)
    }
    fn hash(&self, rev: Revision) -> Result<u64, StoreError> {
        Reference::hash(self, rev)
    }
}

/// Read-only txns compared with their reads, over every run.
static READ_TXNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The real store on a seeded number of shards; now and then (a seeded chance) it is
/// snapshotted and restored on another number of shards before a command.
struct Sharded {
    store: Store,
    rng: Rng,
    restores: usize,
}

impl Sharded {
    fn new(seed: u64) -> Sharded {
        let mut rng = Rng::new(seed ^ 0x5348_4152_4453);
        let shards = 1 + rng.index(4);
        Sharded {
            store: Store::new(shards),
            rng,
            restores: 0,
        }
    }
}

impl Model for Sharded {
    fn apply(&mut self, cmd: &Command) -> Applied {
        if self.rng.chance(20) {
            let snap = self.store.snapshot();
            let shards = 1 + self.rng.index(4);
            self.store = Store::restore(&snap, shards).expect("a snapshot of ours restores");
            self.restores += 1;
        }
        // A read-only txn is served as a read too (no log entry): the same answer.
        let read = match cmd {
            Command::Txn(t) if t.is_read_only() => Some(self.store.read_txn(t)),
            _ => None,
        };
        if self.rng.chance(100) {
            self.store.skip(); // a no-op or membership entry between commands
        }
        let applied = self.store.apply(cmd.clone());
        if let Some(read) = read {
            let read = read.map(|(rev, r)| Applied {
                revision: rev,
                result: Ok(Response::Txn(r)),
            });
            let as_read = match read {
                Ok(a) => a,
                Err(e) => Applied {
                    revision: applied.revision,
                    result: Err(e),
                },
            };
            assert_eq!(as_read, applied, "a read-only txn read vs applied: {cmd:?}");
            READ_TXNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        applied
    }
    fn range(&self, r: &RangeRequest) -> Result<(Revision, RangeResponse), StoreError> {
        self.store.range(r)
    }
    fn revision(&self) -> Revision {
        self.store.revision()
    }
    fn compact_revision(&self) -> Revision {
        self.store.compact_revision()
    }
    fn lease(&self, id: LeaseId) -> Option<LeaseInfo> {
        self.store.lease(id)
    }
    fn leases(&self) -> Vec<LeaseId> {
        self.store.leases()
    }
    fn alarm(&self) -> bool {
        self.store.alarm()
    }
    fn hash(&self, rev: Revision) -> Result<u64, StoreError> {
        self.store.hash(rev)
    }
}

/// The keys written: one and two bytes, sharing prefixes, 0xff included.
const KEYS: [&[u8]; 8] = [
    b"a",
    b"ab",
    b"a\xff",
    b"b",
    b"ba",
    b"c",
    b"\xff",
    b"\xff\xff",
];
/// Keys never written, read, compared and deleted around the others.
const ABSENT: [&[u8]; 4] = [b"\x00", b"aa", b"bb", b"z"];
/// Prefixes of ranges and deletes (`prefix_end` of 0xff is `[0]`: every key from it).
const PREFIXES: [&[u8]; 6] = [b"a", b"ab", b"b", b"c", b"\xff", b"\xff\xff"];
const VALUES: [&[u8]; 5] = [b"", b"x", b"y", b"xy", b"\xff"];
/// Lease ids granted; 9 never is.
const LEASE_IDS: [LeaseId; 3] = [1, 2, 3];
const LEASE_NEVER: LeaseId = 9;

/// The generator: every choice from one seeded `Rng`, shaped by the state it writes to.
struct Gen {
    rng: Rng,
}

impl Gen {
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.index(xs.len())]
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.rng.chance(per_mille)
    }

    fn key(&mut self) -> Bytes {
        let k = if self.chance(100) {
            self.pick(&ABSENT)
        } else {
            self.pick(&KEYS)
        };
        Bytes::from_static(k)
    }

    fn value(&mut self) -> Bytes {
        Bytes::from_static(self.pick(&VALUES))
    }

    fn lease(&mut self) -> LeaseId {
        match self.rng.below(10) {
            0..=4 => 0,
            5 => LEASE_NEVER,
            _ => self.pick(&LEASE_IDS),
        }
    }

    /// A revision near the interesting ones: 0, negative, around the compaction revision,
    /// around the current one, or any in between.
    fn revision(&mut self, s: &State) -> Revision {
        match self.rng.below(11) {
            0 => 0,
            1 => -1,
            2 => s.compacted - 1,
            3 => s.compacted,
            4 => s.compacted + 1,
            5 => s.revision - 1,
            6 => s.revision,
            7 => s.revision + 1,
            8 => s.revision + 2,
            _ => self.rng.range(1, s.revision as u64) as Revision,
        }
    }

    /// A key and range_end: one key, a prefix, from a key, between two keys (maybe
    /// inverted), or everything.
    fn span(&mut self) -> (Bytes, Bytes) {
        match self.rng.below(10) {
            0..=3 => (self.key(), Bytes::new()),
            4 | 5 => {
                let p = self.pick(&PREFIXES);
                (Bytes::from_static(p), prefix_end(p))
            }
            6 => (self.key(), Bytes::from_static(&[0])),
            7 | 8 => (self.key(), self.key()),
            _ => (Bytes::from_static(&[0]), Bytes::from_static(&[0])),
        }
    }

    fn range(&mut self, s: &State) -> RangeRequest {
        let (key, range_end) = self.span();
        let mut r = RangeRequest {
            key,
            range_end,
            ..Default::default()
        };
        if self.chance(400) {
            r.limit = self.rng.range(1, 4) as i64;
        } else if self.chance(50) {
            r.limit = -1;
        }
        if self.chance(500) {
            r.revision = self.revision(s);
        }
        if self.chance(400) {
            r.sort_order = self.pick(&[SortOrder::None, SortOrder::Ascend, SortOrder::Descend]);
            r.sort_target = self.pick(&[
                SortTarget::Key,
                SortTarget::Version,
                SortTarget::Create,
                SortTarget::Mod,
                SortTarget::Value,
            ]);
        }
        r.serializable = self.chance(200);
        r.keys_only = self.chance(200);
        r.count_only = self.chance(100);
        r.min_mod_revision = self.bound(s);
        r.max_mod_revision = self.bound(s);
        r.min_create_revision = self.bound(s);
        r.max_create_revision = self.bound(s);
        r
    }

    /// A min/max filter of a range: mostly none (0).
    fn bound(&mut self, s: &State) -> Revision {
        if self.chance(120) {
            self.revision(s)
        } else {
            0
        }
    }

    /// A put the node would propose (it passes `PutRequest::validate`).
    fn put(&mut self) -> PutRequest {
        let mut p = PutRequest {
            key: self.key(),
            value: self.value(),
            lease: self.lease(),
            prev_kv: self.chance(500),
            ignore_value: self.chance(100),
            ignore_lease: self.chance(100),
        };
        if p.ignore_value {
            p.value = Bytes::new();
        }
        if p.ignore_lease {
            p.lease = 0;
        }
        p
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let (key, range_end) = self.span();
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.chance(500),
        }
    }

    fn compare(&mut self, s: &State) -> Compare {
        let (key, range_end) = if self.chance(700) {
            (self.key(), Bytes::new())
        } else {
            self.span()
        };
        let target = match self.rng.below(5) {
            0 => CompareTarget::Version(self.rng.below(4) as i64),
            1 => CompareTarget::Create(self.revision(s)),
            2 => CompareTarget::Mod(self.revision(s)),
            3 => CompareTarget::Value(self.value()),
            _ => CompareTarget::Lease(self.lease()),
        };
        Compare {
            result: self.pick(&[
                CompareResult::Equal,
                CompareResult::Greater,
                CompareResult::Less,
                CompareResult::NotEqual,
            ]),
            target,
            key,
            range_end,
        }
    }

    fn ops(&mut self, s: &State, depth: usize) -> Vec<RequestOp> {
        let n = self.rng.below(4);
        (0..n)
            .map(|_| match self.rng.below(20) {
                0..=5 => RequestOp::Range(self.range(s)),
                6..=12 => RequestOp::Put(self.put()),
                13..=16 => RequestOp::DeleteRange(self.delete()),
                _ if depth < 2 => RequestOp::Txn(self.txn_any(s, depth + 1)),
                _ => RequestOp::Range(self.range(s)),
            })
            .collect()
    }

    /// A txn, valid or not.
    fn txn_any(&mut self, s: &State, depth: usize) -> TxnRequest {
        let n = self.rng.below(if depth == 0 { 4 } else { 3 });
        TxnRequest {
            compare: (0..n).map(|_| self.compare(s)).collect(),
            success: self.ops(s, depth),
            failure: self.ops(s, depth),
        }
    }

    /// A txn the node would propose (it passes `TxnRequest::validate`).
    fn txn(&mut self, s: &State) -> TxnRequest {
        for _ in 0..50 {
            let t = self.txn_any(s, 0);
            if t.validate().is_ok() {
                return t;
            }
        }
        TxnRequest {
            compare: vec![self.compare(s)],
            success: vec![RequestOp::Range(self.range(s))],
            failure: vec![],
        }
    }

    fn command(&mut self, s: &State) -> Command {
        match self.rng.below(1000) {
            0..=279 => Command::Put(self.put()),
            280..=389 => Command::DeleteRange(self.delete()),
            390..=689 => Command::Txn(self.txn(s)),
            690..=749 => Command::Compact {
                revision: if self.chance(500) {
                    self.rng
                        .range(s.compacted.max(0) as u64 + 1, s.revision as u64)
                        as Revision
                } else {
                    self.revision(s)
                },
                physical: self.chance(500),
            },
            750..=829 => Command::LeaseGrant {
                id: match self.rng.below(50) {
                    0 => 0,
                    _ => self.pick(&LEASE_IDS),
                },
                ttl: match self.rng.below(50) {
                    0 => LEASE_TTL_MAX + 1,
                    1 => LEASE_TTL_MAX,
                    _ => self.rng.range(1, 100) as i64,
                },
            },
            830..=889 => Command::LeaseRevoke {
                id: if self.chance(150) {
                    LEASE_NEVER
                } else {
                    self.pick(&LEASE_IDS)
                },
            },
            890..=929 => Command::LeaseCheckpoint {
                checkpoints: (0..self.rng.range(1, 3))
                    .map(|_| {
                        let id = if self.chance(200) {
                            LEASE_NEVER
                        } else {
                            self.pick(&LEASE_IDS)
                        };
                        (id, self.rng.below(100) as i64)
                    })
                    .collect(),
            },
            _ => Command::Alarm {
                nospace: self.chance(200),
            },
        }
    }
}

/// What the generator shapes its choices by (taken from the first model).
struct State {
    revision: Revision,
    compacted: Revision,
}

/// How often each kind of outcome came up, to show the histories reach every rule.
#[derive(Default)]
struct Coverage(BTreeMap<String, u64>);

impl Coverage {
    fn note(&mut self, label: impl Into<String>) {
        *self.0.entry(label.into()).or_default() += 1;
    }

    fn applied(&mut self, cmd: &Command, before: Revision, a: &Applied) {
        let kind = match cmd {
            Command::Put(_) => "put",
            Command::DeleteRange(_) => "delete",
            Command::Txn(_) => "txn",
            Command::Compact { .. } => "compact",
            Command::LeaseGrant { .. } => "grant",
            Command::LeaseRevoke { .. } => "revoke",
            Command::LeaseCheckpoint { .. } => "checkpoint",
            Command::Alarm { .. } => "alarm",
        };
        match &a.result {
            Err(e) => self.note(format!("{kind} {e:?}")),
            Ok(r) => {
                let changed = if a.revision > before {
                    "changed"
                } else {
                    "unchanged"
                };
                self.note(format!("{kind} ok {changed}"));
                if let Response::Txn(t) = r {
                    self.txn(t, 0);
                }
            }
        }
    }

    fn txn(&mut self, t: &ringkv_store::TxnResponse, depth: usize) {
        self.note(format!("txn depth {depth} succeeded {}", t.succeeded));
        for op in &t.responses {
            match op {
                ResponseOp::Txn(n) => self.txn(n, depth + 1),
                ResponseOp::Range(r) => self.range(r, "txn "),
                _ => {}
            }
        }
    }

    fn range(&mut self, r: &RangeResponse, within: &str) {
        if r.more {
            self.note(format!("{within}range more"));
        }
        if r.kvs.len() > 1 {
            self.note(format!("{within}range several"));
        }
    }
}

/// The outcomes every full run must reach (a test that never gets there proves nothing).
const COVERED: &[&str] = &[
    "put ok changed",
    "put NoSpace",
    "put LeaseNotFound",
    "put KeyNotFound",
    "delete ok changed",
    "delete ok unchanged",
    "txn ok changed",
    "txn ok unchanged",
    "txn NoSpace",
    "txn KeyNotFound",
    "txn LeaseNotFound",
    "txn FutureRevision",
    "txn Compacted",
    "txn depth 0 succeeded true",
    "txn depth 0 succeeded false",
    "txn depth 1 succeeded true",
    "txn depth 1 succeeded false",
    "txn depth 2 succeeded true",
    "txn range more",
    "compact ok unchanged",
    "compact Compacted",
    "compact FutureRevision",
    "grant ok unchanged",
    "grant LeaseExists",
    "grant NoSpace",
    "grant LeaseNotFound",
    "grant LeaseTtlTooLarge",
    "revoke ok changed",
    "revoke ok unchanged",
    "revoke LeaseNotFound",
    "checkpoint ok unchanged",
    "alarm ok unchanged",
    "range more",
    "range several",
    "range Compacted",
    "range FutureRevision",
    "hash Compacted",
];

fn same<T: PartialEq + Debug>(what: &str, a: T, b: T) -> Result<(), String> {
    if a == b {
        return Ok(());
    }
    Err(format!("{what} differs:\n  a: {a:?}\n  b: {b:?}"))
}

/// Applies `steps` generated commands to `a` and `b` and compares everything after each.
fn run<A: Model, B: Model>(
    seed: u64,
    steps: usize,
    mut a: A,
    mut b: B,
    cov: &mut Coverage,
) -> Result<(), String> {
    let mut g = Gen {
        rng: Rng::new(seed),
    };
    let mut history: Vec<Command> = Vec::new();
    for step in 0..steps {
        let s = State {
            revision: a.revision(),
            compacted: a.compact_revision(),
        };
        let cmd = g.command(&s);
        let checked = (|| {
            let (x, y) = (a.apply(&cmd), b.apply(&cmd));
            cov.applied(&cmd, s.revision, &x);
            same("applied", x, y)?;
            let s = State {
                revision: a.revision(),
                compacted: a.compact_revision(),
            };
            same("revision", s.revision, b.revision())?;
            same("compact revision", s.compacted, b.compact_revision())?;
            same("alarm", a.alarm(), b.alarm())?;
            same("leases", a.leases(), b.leases())?;
            for id in [0, 1, 2, 3, LEASE_NEVER] {
                same(&format!("lease {id}"), a.lease(id), b.lease(id))?;
            }
            for _ in 0..3 {
                let r = g.range(&s);
                let (x, y) = (a.range(&r), b.range(&r));
                match &x {
                    Ok((_, resp)) => cov.range(resp, ""),
                    Err(e) => cov.note(format!("range {e:?}")),
                }
                same(&format!("range {r:?}"), x, y)?;
            }
            same("hash at the current revision", a.hash(0), b.hash(0))?;
            let rev = g.revision(&s);
            let (x, y) = (a.hash(rev), b.hash(rev));
            if let Err(e) = &x {
                cov.note(format!("hash {e:?}"));
            }
            same(&format!("hash at {rev}"), x, y)
        })();
        if let Err(e) = checked {
            let before: Vec<String> = history
                .iter()
                .enumerate()
                .rev()
                .take(8)
                .map(|(i, c)| format!("  step {i}: {c:?}"))
                .collect();
            return Err(format!(
                "seed {seed} (MODEL_SEED={seed} to replay), step {step}, revision {} \
                 compacted {} before it\ncommand: {cmd:?}\n{e}\nthe commands before, \
                 latest first:\n{}",
                s.revision,
                s.compacted,
                before.join("\n")
            ));
        }
        history.push(cmd);
    }
    Ok(())
}

fn env(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
    )
}

#[test]
fn the_models_agree_on_random_histories() {
    let steps = env("MODEL_STEPS").unwrap_or(300) as usize;
    let seeds: Vec<u64> = match env("MODEL_SEED") {
        Some(s) => vec![s],
        None => (0..env("MODEL_SEEDS").unwrap_or(300)).collect(),
    };
    let mut cov = Coverage::default();
    for &seed in &seeds {
        if let Err(e) = run(seed, steps, Reference::new(), Reference::new(), &mut cov) {
            panic!("{e}");
        }
    }
    // Shown with --nocapture.
    println!(
        "{} seeds x {steps} steps; outcomes reached: {:#?}",
        seeds.len(),
        cov.0
    );
    // A full run must reach every outcome listed (a replay of one seed need not).
    if seeds.len() >= 100 && steps >= 200 {
        let missing: Vec<_> = COVERED
            .iter()
            .filter(|l| !cov.0.contains_key(**l))
            .collect();
        assert!(
            missing.is_empty(),
            "never reached: {missing:?}\nreached: {:#?}",
            cov.0
        );
    }
}

/// The real store, on 1 to 4 shards (snapshotted and restored on another count now and
/// then), against the reference model, one command at a time.
#[test]
fn the_store_agrees_with_the_reference() {
    let steps = env("MODEL_STEPS").unwrap_or(300) as usize;
    let seeds: Vec<u64> = match env("MODEL_SEED") {
        Some(s) => vec![s],
        None => (0..env("MODEL_SEEDS").unwrap_or(300)).collect(),
    };
    let mut cov = Coverage::default();
    for &seed in &seeds {
        if let Err(e) = run(seed, steps, Reference::new(), Sharded::new(seed), &mut cov) {
            panic!("{e}");
        }
    }
    let reads = READ_TXNS.load(std::sync::atomic::Ordering::Relaxed);
    if seeds.len() >= 100 {
        assert!(
            reads >= 500,
            "only {reads} read-only txns were served as reads"
        );
    }
}

/// The real store with entries pipelined: batches of commands handed out before any is
/// applied, the shards and the sequencer stepped in a seeded random order (so entries wait
/// on pending revisions and on multi-shard decisions), every answer compared with the
/// reference's.
#[test]
fn the_store_agrees_when_entries_are_pipelined_and_interleaved() {
    let steps = env("MODEL_STEPS").unwrap_or(300) as usize;
    let seeds: Vec<u64> = match env("MODEL_SEED") {
        Some(s) => vec![s],
        None => (0..env("MODEL_SEEDS").unwrap_or(300)).collect(),
    };
    for &seed in &seeds {
        let mut g = Gen {
            rng: Rng::new(seed),
        };
        let mut pick = Rng::new(seed ^ 0x5049_434b);
        let shards = 2 + pick.index(3);
        let mut store = Store::new(shards);
        let mut reference = Reference::new();
        let mut done = 0;
        while done < steps {
            let batch = 1 + pick.index(12);
            let mut expect: Vec<(Index, Command, Applied)> = Vec::new();
            for _ in 0..batch {
                let s = State {
                    revision: reference.revision(),
                    compacted: reference.compact_revision(),
                };
                let cmd = g.command(&s);
                let want = reference.apply(&cmd);
                if pick.chance(50) {
                    store.skip();
                }
                let i = store.submit(cmd.clone());
                expect.push((i, cmd, want));
            }
            store.run(|n| pick.index(n));
            for (i, cmd, want) in expect {
                let got = store.take_answer(i).expect("every entry answered");
                assert_eq!(
                    got, want,
                    "seed {seed} (MODEL_SEED={seed}), {shards} shards, entry {i}: {cmd:?}"
                );
            }
            assert_eq!(store.hash(0), reference.hash(0), "seed {seed}: hash");
            done += batch;
        }
    }
}

/// The command stream only carries txns that `validate` accepts (the node refuses the
/// others before proposing); here the generator's other txns, refused for what etcd
/// refuses them for.
#[test]
fn the_txns_left_out_are_refused_by_validate() {
    let mut g = Gen { rng: Rng::new(7) };
    let s = State {
        revision: 20,
        compacted: 5,
    };
    let mut refused = BTreeMap::new();
    let mut valid = 0;
    for _ in 0..2000 {
        match g.txn_any(&s, 0).validate() {
            Ok(()) => valid += 1,
            Err(e) => *refused.entry(format!("{e:?}")).or_insert(0) += 1,
        }
    }
    assert!(valid > 500, "{valid} valid of 2000");
    assert!(
        refused.get("DuplicateKey").copied().unwrap_or(0) > 50,
        "{refused:?}"
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    // Too many ops, at the top and in a nested txn.
    let mut t = g.txn(&s);
    t.success = (0..129).map(|_| RequestOp::Range(g.range(&s))).collect();
    assert_eq!(t.validate(), Err(StoreError::TooManyOps));
    t.success = vec![RequestOp::Txn(TxnRequest {
        compare: vec![],
        success: (0..128).map(|_| RequestOp::Range(g.range(&s))).collect(),
        failure: vec![],
    })];
    t.compare = vec![g.compare(&s)];
    assert_eq!(t.validate(), Err(StoreError::TooManyOps));
}

/// A model that answers like the reference but drops every put of one key: the driver
/// must catch it and say where.
struct DropsPutsOf(Reference, &'static [u8]);

impl Model for DropsPutsOf {
    fn apply(&mut self, cmd: &Command) -> Applied {
        match cmd {
            Command::Put(p) if p.key == self.1 => Applied {
                revision: self.0.revision() + 1,
                result: Ok(Response::Put(Default::default())),
            },
            _ => self.0.apply(cmd),
        }
    }
    fn range(&self, r: &RangeRequest) -> Result<(Revision, RangeResponse), StoreError> {
        self.0.range(r)
    }
    fn revision(&self) -> Revision {
        self.0.revision()
    }
    fn compact_revision(&self) -> Revision {
        self.0.compact_revision()
    }
    fn lease(&self, id: LeaseId) -> Option<LeaseInfo> {
        self.0.lease(id)
    }
    fn leases(&self) -> Vec<LeaseId> {
        self.0.leases()
    }
    fn alarm(&self) -> bool {
        self.0.alarm()
    }
    fn hash(&self, rev: Revision) -> Result<u64, StoreError> {
        self.0.hash(rev)
    }
}

#[test]
fn a_mismatch_names_the_seed_the_step_and_the_command() {
    let e = run(
        3,
        300,
        Reference::new(),
        DropsPutsOf(Reference::new(), b"ba"),
        &mut Coverage::default(),
    )
    .unwrap_err();
    println!("{e}");
    assert!(
        e.starts_with("seed 3 (MODEL_SEED=3 to replay), step "),
        "{e}"
    );
    assert!(e.contains("command: Put(PutRequest { key: b\"ba\""), "{e}");
    assert!(e.contains("differs"), "{e}");
}
