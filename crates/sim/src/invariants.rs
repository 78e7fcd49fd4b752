//! The invariants a run is held to, and what they remember: on every step one leader per
//! term, log matching, leader completeness, entries applied in order and the same apply
//! sequence on every node; as each node's store runs through what it applied, the
//! revision rules (each entry's revision is the previous +1 if its answer says it changed
//! something, else the same: never a repeat or a gap) and, DiskFirst, the same revision
//! and answer for each index and the same store hash at every `STORE_HASH_EVERY`th index
//! on every node; at the end liveness, convergence (same revision and store hash),
//! no lost acknowledged write, eventual reads of written values only, linearizability of
//! the register operations (`checker`), and the whole-store check (`storecheck`: the log
//! replayed on the reference model, the store operations' linearizability). `Violation`
//! is what a broken one reports.
//!
//! Runs on the simulator's thread (one per seed), called by `World` as each event is
//! handled. Only reads the world, besides its own `Checks`, each node's last role and term,
//! the elections-won count and the trace: a check that changed the run, or drew from its
//! random stream, would make the run depend on being checked (the final checks first let
//! every live node's store run through what it was handed, as a read would). Must not
//! touch real I/O or clocks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::checker::{self, Op, OpKind, Verdict};
use super::storecheck;
use super::world::{Micros, World};
use ringkv_raft::{Entry, EntryKind, Index, NodeId, Persistence, ReadPolicy, Role, Term};
use ringkv_store::{Applied, Response, ResponseOp, Revision, TxnResponse};

/// A broken invariant or a failed history check.
#[derive(Clone, Debug)]
pub struct Violation {
    pub seed: u64,
    pub at_us: Micros,
    pub what: String,
    /// A safety invariant, the checker, or an assertion inside the Raft core flagged it.
    /// False for liveness failures, runs too weak to count, and the simulator's own
    /// failures: those fail a run but never count as catching a negative control.
    pub safety: bool,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} at {:.6}s: {}",
            self.seed,
            self.at_us as f64 / 1e6,
            self.what
        )
    }
}

/// What the invariants remember across steps: one `World` field, fed by the rest of the
/// world only through `proposed`.
#[derive(Default)]
pub(crate) struct Checks {
    /// The leader of each term so far.
    leaders: BTreeMap<Term, NodeId>,
    /// Applied entries, index -> (term, hash), as first applied by any node.
    applied: BTreeMap<Index, (Term, u64)>,
    /// (index, term) -> hash of every entry any node ever handed out for persisting.
    entries_seen: HashMap<(Index, Term), u64>,
    /// Every value ever proposed for a key (eventual reads may return only these).
    written: HashMap<u64, BTreeSet<u64>>,
    /// DiskFirst: the payload of each applied entry as first applied (`None` for no-ops and
    /// membership entries), replayed on the reference model at the end.
    pub(crate) log: BTreeMap<Index, Option<Bytes>>,
    /// DiskFirst: the store revision after each index and the answer of each command, as
    /// the first node to apply it computed them; every other node must compute the same.
    pub(crate) store_entries: BTreeMap<Index, (Revision, Option<Applied>)>,
    /// DiskFirst: the store hash at each multiple of `STORE_HASH_EVERY`, as first computed,
    /// and by which node.
    store_hashes: BTreeMap<Index, (u64, NodeId)>,
}

impl Checks {
    /// A client proposed `value` for `key`.
    pub(crate) fn proposed(&mut self, key: u64, value: u64) {
        self.written.entry(key).or_default().insert(value);
    }
}

fn entry_hash(e: &Entry) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ e.kind as u64;
    for &b in e.data.iter() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

impl World {
    /// A liveness failure or a run too weak to count (see `Violation::safety`).
    pub(crate) fn fail_liveness(&self, what: String) -> Violation {
        Violation {
            safety: false,
            ..self.fail(what)
        }
    }

    pub(crate) fn fail(&self, what: String) -> Violation {
        Violation {
            safety: true,
            seed: self.seed,
            at_us: self.now,
            what,
        }
    }

    // ----- on every step -----

    /// Log Matching across the cluster: one (index, term) names one entry everywhere.
    /// `entries` are what a node's Ready hands out for persisting.
    pub(crate) fn check_log_matching(&mut self, entries: &[Entry]) -> Result<(), Violation> {
        for e in entries {
            let h = entry_hash(e);
            if let Some(&prev) = self.checks.entries_seen.get(&(e.index, e.term)) {
                if prev != h {
                    return Err(self.fail(format!(
                        "log matching: two entries at {}/{}",
                        e.index, e.term
                    )));
                }
            } else {
                self.checks.entries_seen.insert((e.index, e.term), h);
            }
        }
        Ok(())
    }

    /// Node `id` is about to apply `e`: it must be the next index, and the entry every
    /// other node applied there.
    pub(crate) fn check_apply(&mut self, id: NodeId, e: &Entry) -> Result<(), Violation> {
        let prev = self.nodes[&id].applied_index;
        if e.index != prev + 1 {
            return Err(self.fail(format!("node {id} applies {} after {prev}", e.index)));
        }
        // Every node applies the same sequence (MemFirst may lose applied entries in a
        // crash by design; its nodes then reset and converge, checked at the end).
        let h = entry_hash(e);
        match self
            .checks
            .applied
            .get(&e.index)
            .filter(|_| self.opts.persistence == Persistence::DiskFirst)
        {
            Some(&(t, hh)) if (t, hh) != (e.term, h) => {
                return Err(self.fail(format!(
                    "node {id} applied {}/{} but another node applied {}/{} there",
                    e.index, e.term, e.index, t
                )));
            }
            Some(_) => {}
            None => {
                self.checks.applied.insert(e.index, (e.term, h));
                if self.opts.persistence == Persistence::DiskFirst {
                    let payload = (e.kind == EntryKind::Normal).then(|| e.data.clone());
                    self.checks.log.insert(e.index, payload);
                }
            }
        }
        Ok(())
    }

    /// Node `id`'s store has applied and numbered `entries` (in index order, each with its
    /// answer if it is a command), right after an entry whose revision was `prev`: each
    /// entry's revision is the previous one +1 if its answer says it changed something,
    /// else the same (never a repeat or a gap), the store rests at the last one's, and
    /// (DiskFirst) every node computes the same revision and answer for the same index.
    /// Returns the revision after the last entry.
    pub(crate) fn check_store_entries(
        &mut self,
        id: NodeId,
        mut prev: Revision,
        entries: &[(Index, Option<Applied>)],
    ) -> Result<Revision, Violation> {
        let strict = self.opts.persistence == Persistence::DiskFirst;
        for (i, a) in entries {
            let rev = a.as_ref().map_or(prev, |a| a.revision);
            if let Some(a) = a {
                let ok = match must_change(a) {
                    Some(true) => rev == prev + 1,
                    Some(false) => rev == prev,
                    None => rev == prev || rev == prev + 1,
                };
                if !ok {
                    let says = match must_change(a) {
                        Some(true) => "it changed the store",
                        Some(false) => "it changed nothing",
                        None => "it changed the store or nothing",
                    };
                    return Err(self.fail(format!(
                        "revisions: node {id} numbered entry {i} revision {rev} after {prev}, but \
                         its answer says {says}: {a:?}"
                    )));
                }
            }
            if strict {
                match self.checks.store_entries.get(i) {
                    Some((r, b)) if *r != rev || b.as_ref() != a.as_ref() => {
                        return Err(self.fail(format!(
                            "store: node {id} computed revision {rev} and answer {a:?} for \
                             entry {i}; another node revision {r} and answer {b:?}"
                        )));
                    }
                    Some(_) => {}
                    None => {
                        self.checks.store_entries.insert(*i, (rev, a.clone()));
                    }
                }
            }
            prev = rev;
        }
        let at = self.nodes[&id].store.revision();
        if at != prev {
            return Err(self.fail(format!(
                "revisions: node {id}'s store rests at revision {at} after entries whose \
                 last revision is {prev}"
            )));
        }
        Ok(prev)
    }

    /// Node `id`'s store is at rest at a multiple of `STORE_HASH_EVERY` (DiskFirst): its
    /// hash must be the one every other node had there.
    pub(crate) fn check_store_hash(&mut self, id: NodeId) -> Result<(), Violation> {
        if self.opts.persistence != Persistence::DiskFirst {
            return Ok(());
        }
        let n = &self.nodes[&id];
        let i = n.applied_index;
        let h = n.store.hash(0).expect("the current revision hashes");
        match self.checks.store_hashes.get(&i) {
            Some(&(h0, other)) if h0 != h => Err(self.fail(format!(
                "store: node {id} ({} shards) hashes {h:#x} at index {i}, node {other} {h0:#x}",
                n.store.shard_count()
            ))),
            Some(_) => Ok(()),
            None => {
                self.checks.store_hashes.insert(i, (h, id));
                Ok(())
            }
        }
    }

    /// Checks live node `id` after a step: when it has just become leader, one leader per
    /// term and Leader Completeness. Remembers its role and term for the next step.
    pub(crate) fn check_node(&mut self, id: NodeId) -> Result<(), Violation> {
        let n = &self.nodes[&id];
        let (role, term) = (n.raft.role(), n.raft.term());
        // The core refuses (rather than asserts on) a leader whose log conflicts with its
        // committed entries, and what it refuses it counts: in the simulator no peer lies,
        // so any such refusal is a broken protocol.
        let c = n.raft.counters();
        if c.committed_conflicts > 0 || c.messages_refused > 0 || c.rival_leaders > 0 {
            return Err(self.fail(format!(
                "node {id} refused {} appends conflicting with its committed entries, {} \
                 malformed messages and {} rival leaders",
                c.committed_conflicts, c.messages_refused, c.rival_leaders
            )));
        }
        if role == Role::Leader && (n.last_role != Role::Leader || n.last_term != term) {
            // Election Safety: one leader per term.
            if let Some(&other) = self.checks.leaders.get(&term) {
                if other != id {
                    return Err(self.fail(format!("two leaders in term {term}: {other} and {id}")));
                }
            }
            self.checks.leaders.insert(term, id);
            self.stats.elections_won += 1;
            // Leader Completeness: every entry applied anywhere is in the new leader's log
            // (a DiskFirst promise; MemFirst may lose committed entries in a crash).
            let log = n.raft.log();
            let strict = self.opts.persistence == Persistence::DiskFirst;
            for (&i, &(t, _)) in self
                .checks
                .applied
                .range(log.first_index()..)
                .filter(|_| strict)
            {
                if log.term(i) != Some(t) {
                    return Err(self.fail(format!(
                        "leader completeness: new leader {id} (term {term}) lacks applied entry {i}/{t}"
                    )));
                }
            }
            if self.opts.trace {
                let line = format!(
                    "{:>10.6} node {id} leads term {term}",
                    self.now as f64 / 1e6
                );
                self.trace.push(line);
            }
        }
        let n = self.nodes.get_mut(&id).expect("node");
        n.last_role = role;
        n.last_term = term;
        Ok(())
    }

    // ----- at the end -----

    /// After the settle phase: what the whole run must have been and done.
    pub(crate) fn final_checks(&mut self) -> Result<(), Violation> {
        // Every live node's store runs through what it was handed (and is checked).
        let up: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.up)
            .map(|(&id, _)| id)
            .collect();
        for id in up {
            self.settle_store(id, false)?;
        }
        // The run must have been what it claims: enough load, at least one crash or
        // partition, enough simulated time.
        if self.stats.ops < 500 || self.stats.crashes + self.stats.partitions == 0 {
            return Err(self.fail_liveness(format!(
                "run too weak: {} ops, {} crashes, {} partitions",
                self.stats.ops, self.stats.crashes, self.stats.partitions
            )));
        }
        // Liveness after the faults stop: some node leads and every live member applied the
        // same entries.
        let Some(l) = self.current_leader() else {
            return Err(self.fail_liveness("no leader 5 s after faults stopped".into()));
        };
        let commit = self.nodes[&l].raft.commit();
        // Members as the leader sees them: a node removed while cut off never hears of it.
        let members = self.nodes[&l].raft.membership().clone();
        for (&id, n) in &self.nodes {
            if members.is_member(id) && (!n.up || n.applied_index < commit) {
                return Err(self.fail_liveness(format!(
                    "member {id} (up: {}) applied {} of {commit} 5 s after faults stopped\n  \
                     member: {:?}\n  leader: {:?}",
                    n.up,
                    n.applied_index,
                    n.raft.status(),
                    self.nodes[&l].raft.status()
                )));
            }
        }
        // All members converge to the same state: the same revision and store hash.
        let states: BTreeSet<(Revision, u64)> = self
            .nodes
            .iter()
            .filter(|(id, _)| members.is_member(**id))
            .map(|(_, n)| (n.revision, n.store.hash(0).expect("hash")))
            .collect();
        if states.len() > 1 {
            return Err(self.fail(format!("{} different final states", states.len())));
        }
        // Acknowledged writes are never lost (DiskFirst promises it; MemFirst does not): the
        // final leader holds each one (or a snapshot past it) and has applied it.
        if self.opts.persistence == Persistence::DiskFirst {
            let log = self.nodes[&l].raft.log();
            let applied = self.nodes[&l].applied_index;
            for (i, op) in self.history.iter().enumerate() {
                if let Some((index, term)) = op.acked_at {
                    let held = index <= log.snapshot_index() || log.term(index) == Some(term);
                    if !held || applied < index {
                        return Err(self.fail(format!(
                            "acknowledged write #{i} at {index}/{term} was lost"
                        )));
                    }
                }
            }
        }
        // Eventual reads return only written values.
        for op in self.history.iter().filter(|o| o.store.is_none()) {
            if op.policy == Some(ReadPolicy::Eventual) {
                if let (OpKind::Read(Some(v)), Some(_)) = (op.kind, op.ret) {
                    if !self
                        .checks
                        .written
                        .get(&op.key)
                        .is_some_and(|w| w.contains(&v))
                    {
                        return Err(
                            self.fail(format!("eventual read of key {} saw unwritten {v}", op.key))
                        );
                    }
                }
            }
        }
        // The committed log replayed on the reference model: every node's revisions and
        // answers (as compared across nodes on the way) must be the reference's, and the
        // store operations linearizable (storecheck.rs).
        if self.opts.persistence == Persistence::DiskFirst {
            let checks = &self.checks;
            if let Err(what) = storecheck::check(&checks.log, &checks.store_entries, &self.history)
            {
                // "sim:": the simulator's own bookkeeping failed, which catches nothing.
                return Err(if what.starts_with("sim:") {
                    self.fail_liveness(what)
                } else {
                    self.fail(what)
                });
            }
        }
        // Linearizability of writes, linearizable and lease reads (MemFirst may lose
        // acknowledged writes by design, so its histories are not held to it).
        if self.opts.persistence == Persistence::DiskFirst {
            let ops: Vec<Op> = self
                .history
                .iter()
                .filter(|o| {
                    !o.failed && o.store.is_none() && o.policy != Some(ReadPolicy::Eventual)
                })
                .map(|o| Op {
                    key: o.key,
                    kind: o.kind,
                    call: o.call,
                    ret: o.ret,
                })
                .collect();
            match checker::check(&ops) {
                Verdict::Ok => {}
                Verdict::Violation(v) => return Err(self.fail(format!("not linearizable: {v}"))),
                Verdict::TooHard { key } => {
                    return Err(
                        self.fail(format!("linearizability search too large for key {key}"))
                    );
                }
            }
        }
        Ok(())
    }
}

/// Whether an entry answered `a` must have changed the store (and so taken a revision):
/// `Some(true)` must, `Some(false)` must not, `None` either (a lease revoke changes the
/// store when keys were attached to the lease, which its answer does not say).
fn must_change(a: &Applied) -> Option<bool> {
    match &a.result {
        Err(_) => Some(false),
        Ok(Response::Put(_)) => Some(true),
        Ok(Response::DeleteRange(d)) => Some(d.deleted > 0),
        Ok(Response::Txn(t)) => Some(txn_writes(t)),
        Ok(Response::LeaseRevoked) => None,
        Ok(
            Response::Range(_) | Response::Compacted | Response::LeaseGranted(_) | Response::Done,
        ) => Some(false),
    }
}

/// A txn's answer shows a write: a put on its path, or a delete that deleted something.
fn txn_writes(t: &TxnResponse) -> bool {
    t.responses.iter().any(|r| match r {
        ResponseOp::Put(_) => true,
        ResponseOp::DeleteRange(d) => d.deleted > 0,
        ResponseOp::Txn(n) => txn_writes(n),
        ResponseOp::Range(_) => false,
    })
}
