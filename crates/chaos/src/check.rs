//! The campaign's checkers: they read the clients' history, the final reads, the nodes'
//! final states and their "Became leader" log lines, and nothing else (never the switch
//! a negative control flipped).
//!
//! Pure and single-threaded; runs on the runner's main thread after a run. Linearizability
//! is the simulator's checker (`sim::checker`), per key. The store clients' history has a
//! checker of its own (`storecheck`), whose findings `Findings` carries.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::workload::{Kind, Outcome, Record, is_register};
use ringkv_proto::native::{CONSISTENCY_EVENTUAL, CONSISTENCY_LEASE, CONSISTENCY_LINEARIZABLE};
use ringkv_raft::NodeId;
use ringkv_sim::checker::{self, Op, OpKind, Verdict};

/// Every key's value at the end, as one node returned it.
pub type State = BTreeMap<String, Option<u64>>;

/// What the checkers found.
#[derive(Debug, Default)]
pub struct Findings {
    pub ops: usize,
    pub acked_writes: usize,
    /// Acknowledged writes whose value is gone at the end.
    pub lost: usize,
    /// `None` when linearizable; else the first violation, printed.
    pub not_linearizable: Option<String>,
    /// Terms in which two nodes said they became leader.
    pub two_leaders: Vec<(u64, Vec<NodeId>)>,
    /// Eventual reads of values no write wrote to that key.
    pub phantom_reads: usize,
    /// Nodes whose final state differs from the first node's.
    pub diverged: Vec<NodeId>,
    pub examples: Vec<String>,
    /// The store clients' history against the store's states (`storecheck`).
    pub store: super::storecheck::StoreFindings,
}

impl Findings {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.not_linearizable.is_none()
            && self.two_leaders.is_empty()
            && self.phantom_reads == 0
            && self.diverged.is_empty()
            && self.store.ok()
    }

    /// Why the run failed, one reason a line (empty when it passed).
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.lost > 0 {
            f.push(format!("{} acknowledged writes lost", self.lost));
        }
        if let Some(v) = &self.not_linearizable {
            f.push(format!("not linearizable: {v}"));
        }
        for (t, n) in &self.two_leaders {
            f.push(format!("term {t} had two leaders: nodes {n:?}"));
        }
        if self.phantom_reads > 0 {
            f.push(format!(
                "{} eventual reads returned a value never written",
                self.phantom_reads
            ));
        }
        if !self.diverged.is_empty() {
            f.push(format!(
                "nodes {:?} ended in a different state",
                self.diverged
            ));
        }
        f.extend(self.examples.iter().cloned());
        f.extend(self.store.failures());
        f
    }
}

/// Checks one run. `end_us`: a time after every call of the history (the final reads
/// are placed there); `final_state`: every key read linearizably after the run (`None`
/// when it could not be read: then loss goes unchecked, and the caller fails the run);
/// `states`: each node's state read locally once it applied everything.
pub fn check(
    history: &[Record],
    end_us: u64,
    final_state: Option<&State>,
    states: &[(NodeId, State)],
    claims: &[(u64, NodeId)],
) -> Findings {
    let empty = State::new();
    let have_final = final_state.is_some();
    let final_state = final_state.unwrap_or(&empty);
    let mut f = Findings {
        ops: history.len(),
        acked_writes: history
            .iter()
            .filter(|r| r.kind == Kind::Put && r.outcome == Outcome::Ok)
            .count(),
        ..Findings::default()
    };
    // Every write each key may hold: acknowledged or unknown (a refused one never took).
    let mut written: HashMap<&str, BTreeSet<u64>> = HashMap::new();
    for r in history.iter().filter(|r| r.kind == Kind::Put) {
        if r.outcome != Outcome::Failed {
            written
                .entry(&r.key)
                .or_default()
                .insert(r.value.expect("a put has a value"));
        }
    }
    // Lost: a once-written key must hold its acknowledged value at the end.
    for r in history.iter().filter(|r| {
        have_final && r.kind == Kind::Put && r.outcome == Outcome::Ok && !is_register(&r.key)
    }) {
        if final_state.get(&r.key).copied().flatten() != r.value {
            f.lost += 1;
            if f.examples.len() < 5 {
                f.examples.push(format!(
                    "acknowledged put {}={} at {} us (node {}) reads {:?} at the end",
                    r.key,
                    r.value.unwrap_or(0),
                    r.ret_us,
                    r.node,
                    final_state.get(&r.key)
                ));
            }
        }
    }
    // Lost, register keys: an acknowledged write is overwritten only by a write not
    // finished before it began.
    let mut by_key: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in history.iter().filter(|r| is_register(&r.key)) {
        by_key.entry(&r.key).or_default().push(r);
    }
    for (key, ops) in by_key.iter().filter(|_| have_final) {
        let last = final_state.get(*key).copied().flatten();
        let writer = last.and_then(|v| {
            ops.iter()
                .find(|r| r.kind == Kind::Put && r.value == Some(v))
        });
        for w in ops
            .iter()
            .filter(|r| r.kind == Kind::Put && r.outcome == Outcome::Ok)
        {
            let superseded = match writer {
                Some(x) => {
                    x.value == w.value || x.outcome == Outcome::Unknown || x.ret_us > w.call_us
                }
                None => false,
            };
            if !superseded {
                f.lost += 1;
                if f.examples.len() < 5 {
                    f.examples.push(format!(
                        "acknowledged put {key}={} [{} .. {} us] is gone: the key ends as {last:?}",
                        w.value.unwrap_or(0),
                        w.call_us,
                        w.ret_us
                    ));
                }
            }
        }
    }
    // Linearizability of writes, linearizable and lease reads, and the final reads.
    let mut ids: HashMap<&str, u64> = HashMap::new();
    let mut ops = Vec::new();
    for r in history {
        let n = ids.len() as u64;
        let key = *ids.entry(&r.key).or_insert(n);
        let (kind, ret) = match (r.kind, r.outcome) {
            (_, Outcome::Failed) => continue,
            (Kind::Put, Outcome::Ok) => (OpKind::Write(r.value), Some(r.ret_us)),
            (Kind::Put, Outcome::Unknown) => (OpKind::Write(r.value), None),
            (Kind::Get(c), Outcome::Ok)
                if c == CONSISTENCY_LINEARIZABLE || c == CONSISTENCY_LEASE =>
            {
                (OpKind::Read(r.value), Some(r.ret_us))
            }
            _ => continue,
        };
        ops.push(Op {
            key,
            kind,
            call: r.call_us,
            ret,
        });
    }
    for (k, v) in final_state {
        if let Some(&key) = ids.get(k.as_str())
            && is_register(k)
        {
            ops.push(Op {
                key,
                kind: OpKind::Read(*v),
                call: end_us,
                ret: Some(end_us + 1),
            });
        }
    }
    match checker::check(&ops) {
        Verdict::Ok => {}
        Verdict::Violation(v) => {
            let name = ids
                .iter()
                .find(|(_, id)| **id == v.key)
                .map_or("?", |(k, _)| *k);
            let mut text = format!("key {name}: ");
            let shown: Vec<String> = v
                .ops
                .iter()
                .take(40)
                .map(|o| {
                    let ret = o.ret.map_or("?".into(), |r| r.to_string());
                    format!("[{}..{}] {:?}", o.call, ret, o.kind)
                })
                .collect();
            text.push_str(&shown.join("; "));
            f.not_linearizable = Some(text);
        }
        Verdict::TooHard { key } => {
            f.not_linearizable = Some(format!(
                "key #{key}: the search passed {} states; the history could not be checked",
                checker::SEARCH_STATES_MAX
            ));
        }
    }
    // Eventual reads may be stale, never invented.
    for r in history.iter().filter(|r| {
        r.kind == Kind::Get(CONSISTENCY_EVENTUAL) && r.outcome == Outcome::Ok && r.value.is_some()
    }) {
        let v = r.value.expect("checked");
        if !written.get(r.key.as_str()).is_some_and(|w| w.contains(&v)) {
            f.phantom_reads += 1;
            if f.examples.len() < 5 {
                f.examples.push(format!(
                    "eventual read of {} at node {} returned {v}, which no write wrote",
                    r.key, r.node
                ));
            }
        }
    }
    // One leader per term.
    let mut terms: BTreeMap<u64, BTreeSet<NodeId>> = BTreeMap::new();
    for (t, n) in claims {
        terms.entry(*t).or_default().insert(*n);
    }
    f.two_leaders = terms
        .into_iter()
        .filter(|(_, n)| n.len() > 1)
        .map(|(t, n)| (t, n.into_iter().collect()))
        .collect();
    // Convergence: every node holds the same state.
    if let Some((_, first)) = states.first() {
        f.diverged = states
            .iter()
            .filter(|(_, s)| s != first)
            .map(|(id, _)| *id)
            .collect();
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, v: u64, call: u64, ret: u64, outcome: Outcome) -> Record {
        Record {
            client: 0,
            node: 1,
            kind: Kind::Put,
            key: key.into(),
            value: Some(v),
            call_us: call,
            ret_us: ret,
            outcome,
        }
    }

    fn get(key: &str, c: u8, v: Option<u64>, call: u64, ret: u64) -> Record {
        Record {
            client: 1,
            node: 2,
            kind: Kind::Get(c),
            key: key.into(),
            value: v,
            call_us: call,
            ret_us: ret,
            outcome: Outcome::Ok,
        }
    }

    fn state(pairs: &[(&str, Option<u64>)]) -> State {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let h = vec![
            put("r0-1", 1, 0, 10, Outcome::Ok),
            get("r0-1", CONSISTENCY_LINEARIZABLE, Some(1), 11, 12),
            put("r0-1", 2, 13, 20, Outcome::Unknown),
            put("u0-1", 3, 0, 5, Outcome::Ok),
            get("u0-1", CONSISTENCY_EVENTUAL, Some(3), 6, 7),
        ];
        let s = state(&[("r0-1", Some(2)), ("u0-1", Some(3))]);
        let f = check(
            &h,
            100,
            Some(&s),
            &[(1, s.clone()), (2, s.clone())],
            &[(1, 1), (2, 3)],
        );
        assert!(f.ok(), "{:?}", f.failures());
        assert_eq!((f.ops, f.acked_writes), (5, 2));
    }

    #[test]
    fn each_checker_catches_its_fault() {
        // A lost once-written key.
        let h = vec![put("u0-1", 3, 0, 5, Outcome::Ok)];
        let f = check(&h, 100, Some(&state(&[("u0-1", None)])), &[], &[]);
        assert_eq!(f.lost, 1);
        // A stale linearizable read.
        let h = vec![
            put("r0-1", 1, 0, 10, Outcome::Ok),
            put("r0-1", 2, 11, 20, Outcome::Ok),
            get("r0-1", CONSISTENCY_LEASE, Some(1), 21, 22),
        ];
        let f = check(&h, 100, Some(&state(&[("r0-1", Some(2))])), &[], &[]);
        assert!(f.not_linearizable.is_some() && f.lost == 0);
        // A register write acknowledged, then overwritten by an older one.
        let h = vec![
            put("r0-1", 1, 0, 10, Outcome::Ok),
            put("r0-1", 2, 11, 20, Outcome::Ok),
        ];
        let f = check(&h, 100, Some(&state(&[("r0-1", Some(1))])), &[], &[]);
        assert_eq!(f.lost, 1);
        assert!(f.not_linearizable.is_some());
        // An invented value; two leaders in one term; a diverged node.
        let h = vec![get("r0-1", CONSISTENCY_EVENTUAL, Some(9), 0, 1)];
        let a = state(&[("r0-1", None)]);
        let b = state(&[("r0-1", Some(4))]);
        let f = check(
            &h,
            100,
            Some(&a),
            &[(1, a.clone()), (2, b)],
            &[(3, 1), (3, 2)],
        );
        assert_eq!(f.phantom_reads, 1);
        assert_eq!(f.two_leaders, vec![(3, vec![1, 2])]);
        assert_eq!(f.diverged, vec![2]);
        assert!(!f.ok());
    }
}
