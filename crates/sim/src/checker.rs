//! Linearizability checker for a key-value history (Wing & Gong search with Lowe's
//! memoization, partitioned per key).
//!
//! Owns nothing but the history it is given; pure and single-threaded. Used by the
//! simulator and (later) the fault campaign. It never looks at protocol internals or at the
//! negative-control switches: it sees only what clients saw.
//!
//! Model: every key is an independent register holding `Option<u64>` (None = absent).
//! Linearizability is local (Herlihy & Wing), so checking each key on its own is exact.
//! An operation whose outcome is unknown (timed out) may take effect at any point after its
//! invocation, or never; reads with unknown outcome say nothing and are dropped.

use std::collections::{BTreeMap, HashSet};

/// What a client asked for and, when known, what it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Set the key to `Some(v)`; `None` deletes it.
    Write(Option<u64>),
    /// A read that returned this value.
    Read(Option<u64>),
}

/// One operation of a history. Times are any monotonic unit shared by all clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub key: u64,
    pub kind: OpKind,
    pub call: u64,
    /// `None`: the outcome is unknown (time-out); the op may or may not have taken effect.
    pub ret: Option<u64>,
}

/// Why a history is not linearizable: the key, and the operations of that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: u64,
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "key {} has no linearization; its {} operations:",
            self.key,
            self.ops.len()
        )?;
        for op in &self.ops {
            let ret = op.ret.map_or("unknown".to_string(), |r| r.to_string());
            writeln!(f, "  [{} .. {}] {:?}", op.call, ret, op.kind)?;
        }
        Ok(())
    }
}

/// Limit on search states per key; past it the check gives up (reported as an error so a
/// silent pass is impossible).
pub const SEARCH_STATES_MAX: usize = 5_000_000;

/// Outcome of checking one history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Violation(Violation),
    /// The search exceeded `SEARCH_STATES_MAX` for this key.
    TooHard {
        key: u64,
    },
}

/// Checks a whole history, key by key. Precondition: every write writes a value no other
/// write writes (the simulator's clients guarantee it); the search relies on it.
pub fn check(history: &[Op]) -> Verdict {
    let mut by_key: BTreeMap<u64, Vec<Op>> = BTreeMap::new();
    for op in history {
        if matches!(op.kind, OpKind::Read(_)) && op.ret.is_none() {
            continue; // an unanswered read constrains nothing
        }
        by_key.entry(op.key).or_default().push(*op);
    }
    for (key, ops) in by_key {
        match check_register(&ops) {
            Some(true) => {}
            Some(false) => return Verdict::Violation(Violation { key, ops }),
            None => return Verdict::TooHard { key },
        }
    }
    Verdict::Ok
}

/// Register check for one key: `Some(linearizable)`, or `None` if the search was too big.
///
/// Unknown-outcome writes are what makes the search explode (each may be placed anywhere
/// after its call, or nowhere), so two exact reductions come first; both rely on written
/// values being unique, as the simulator's are:
/// - an unknown write whose value no read returned is dropped: "never happened" is an
///   allowed outcome, and no read constrains it;
/// - an unknown write whose value some read returned did happen, before every such read
///   returned: it becomes a completed write with that return time.
fn check_register(ops: &[Op]) -> Option<bool> {
    let mut first_seen: BTreeMap<u64, u64> = BTreeMap::new();
    for op in ops {
        if let (OpKind::Read(Some(v)), Some(ret)) = (op.kind, op.ret) {
            let t = first_seen.entry(v).or_insert(ret);
            *t = (*t).min(ret);
        }
    }
    let ops: Vec<Op> = ops
        .iter()
        .filter_map(|op| match (op.kind, op.ret) {
            (OpKind::Write(Some(v)), None) => first_seen.get(&v).map(|&ret| Op {
                ret: Some(ret.max(op.call)),
                ..*op
            }),
            _ => Some(*op),
        })
        .collect();
    let n = ops.len();
    // Ops sorted by call time let the candidate scan stop early.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| ops[i].call);
    let ops: Vec<Op> = order.iter().map(|&i| ops[i]).collect();
    let words = n.div_ceil(64);
    let required = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    // Depth-first search over (linearized set, register value).
    let mut stack: Vec<(Vec<u64>, Option<u64>, usize)> = vec![(vec![0; words], None, 0)];
    while let Some((done, value, done_required)) = stack.pop() {
        if done_required == required {
            return Some(true);
        }
        if !seen.insert((done.clone(), value)) {
            continue;
        }
        if seen.len() > SEARCH_STATES_MAX {
            return None;
        }
        // The earliest return among pending completed ops bounds who may go next.
        let horizon = ops
            .iter()
            .enumerate()
            .filter(|(i, o)| !bit(&done, *i) && o.ret.is_some())
            .map(|(_, o)| o.ret.expect("completed"))
            .min()
            .unwrap_or(u64::MAX);
        for (i, op) in ops.iter().enumerate() {
            if op.call > horizon {
                break;
            }
            if bit(&done, i) {
                continue;
            }
            let next = match op.kind {
                OpKind::Write(v) => v,
                OpKind::Read(seen_value) if seen_value == value => value,
                OpKind::Read(_) => continue,
            };
            let mut d = done.clone();
            d[i / 64] |= 1 << (i % 64);
            stack.push((d, next, done_required + usize::from(op.ret.is_some())));
        }
    }
    Some(false)
}

fn bit(set: &[u64], i: usize) -> bool {
    set[i / 64] >> (i % 64) & 1 == 1
}

/// Exhaustive reference checker for tiny histories (tests only; factorial time).
pub fn check_brute_force(history: &[Op]) -> bool {
    let ops: Vec<Op> = history
        .iter()
        .filter(|o| !(matches!(o.kind, OpKind::Read(_)) && o.ret.is_none()))
        .copied()
        .collect();
    let mut keys: Vec<u64> = ops.iter().map(|o| o.key).collect();
    keys.sort();
    keys.dedup();
    // Try every subset of unknown-outcome writes, and every order of the chosen ops.
    let unknown: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
    for mask in 0u32..(1 << unknown.len()) {
        let chosen: Vec<Op> = (0..ops.len())
            .filter(|i| match unknown.iter().position(|u| u == i) {
                Some(p) => mask >> p & 1 == 1,
                None => true,
            })
            .map(|i| ops[i])
            .collect();
        if permutations_ok(&chosen, &mut Vec::new(), &mut vec![false; chosen.len()]) {
            return true;
        }
    }
    false
}

fn permutations_ok(ops: &[Op], seq: &mut Vec<usize>, used: &mut [bool]) -> bool {
    if seq.len() == ops.len() {
        return sequence_valid(ops, seq);
    }
    for i in 0..ops.len() {
        if used[i] {
            continue;
        }
        // Real-time order: i may not come after an op that was invoked after i returned.
        if seq
            .iter()
            .any(|&j| ops[i].ret.is_some_and(|r| r < ops[j].call))
        {
            continue;
        }
        used[i] = true;
        seq.push(i);
        let ok = permutations_ok(ops, seq, used);
        seq.pop();
        used[i] = false;
        if ok {
            return true;
        }
    }
    false
}

fn sequence_valid(ops: &[Op], seq: &[usize]) -> bool {
    let mut state: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    for &i in seq {
        let op = ops[i];
        let cur = state.entry(op.key).or_insert(None);
        match op.kind {
            OpKind::Write(v) => *cur = v,
            OpKind::Read(v) if v == *cur => {}
            OpKind::Read(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: u64, v: u64, call: u64, ret: u64) -> Op {
        Op {
            key,
            kind: OpKind::Write(Some(v)),
            call,
            ret: Some(ret),
        }
    }
    fn r(key: u64, v: Option<u64>, call: u64, ret: u64) -> Op {
        Op {
            key,
            kind: OpKind::Read(v),
            call,
            ret: Some(ret),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            w(1, 1, 0, 1),
            r(1, Some(1), 2, 3),
            w(1, 2, 4, 5),
            r(1, Some(2), 6, 7),
        ];
        assert_eq!(check(&h), Verdict::Ok);
    }

    #[test]
    fn stale_read_after_write_returned_is_caught() {
        // The write of 2 finished before the read began; reading 1 is stale.
        let h = [w(1, 1, 0, 1), w(1, 2, 2, 3), r(1, Some(1), 4, 5)];
        assert!(matches!(check(&h), Verdict::Violation(v) if v.key == 1));
    }

    #[test]
    fn concurrent_ops_may_order_either_way() {
        let h = [w(1, 1, 0, 10), r(1, Some(1), 1, 2), r(1, None, 3, 4)];
        // The read of 1 then a read of nothing cannot both hold: once 1 is visible it stays.
        assert!(matches!(check(&h), Verdict::Violation(_)));
        let h = [w(1, 1, 0, 10), r(1, None, 1, 2), r(1, Some(1), 3, 4)];
        assert_eq!(check(&h), Verdict::Ok);
    }

    #[test]
    fn unknown_write_may_apply_late_or_never() {
        let lost = Op {
            key: 1,
            kind: OpKind::Write(Some(9)),
            call: 0,
            ret: None,
        };
        assert_eq!(check(&[lost, r(1, None, 5, 6)]), Verdict::Ok);
        assert_eq!(check(&[lost, r(1, Some(9), 100, 101)]), Verdict::Ok);
        // ...but not before it was invoked.
        let late = Op { call: 50, ..lost };
        assert!(matches!(
            check(&[late, r(1, Some(9), 10, 11)]),
            Verdict::Violation(_)
        ));
        // Once seen, it cannot disappear again.
        let h = [lost, r(1, Some(9), 5, 6), r(1, None, 7, 8)];
        assert!(matches!(check(&h), Verdict::Violation(_)));
    }

    #[test]
    fn keys_are_checked_independently() {
        let h = [
            w(1, 1, 0, 1),
            w(2, 5, 0, 1),
            r(2, Some(5), 2, 3),
            r(1, Some(2), 2, 3),
        ];
        assert!(matches!(check(&h), Verdict::Violation(v) if v.key == 1));
    }

    #[test]
    fn agrees_with_brute_force_on_random_small_histories() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let (mut good, mut bad) = (0, 0);
        for _ in 0..3000 {
            let n = 1 + next(8) as usize;
            let keys = 1 + next(2);
            let mut h = Vec::new();
            let mut value = 0;
            for _ in 0..n {
                let call = next(20);
                let ret = if next(6) == 0 {
                    None
                } else {
                    Some(call + 1 + next(8))
                };
                let key = next(keys);
                // Written values are unique (the checker's precondition); reads return one
                // of them, nothing, or (rarely) a value never written.
                let kind = if next(2) == 0 {
                    value += 1;
                    OpKind::Write(Some(value))
                } else {
                    OpKind::Read(if next(4) == 0 {
                        None
                    } else {
                        Some(1 + next(value + 1))
                    })
                };
                h.push(Op {
                    key,
                    kind,
                    call,
                    ret,
                });
            }
            let fast = check(&h);
            assert!(!matches!(fast, Verdict::TooHard { .. }));
            let slow = check_brute_force(&h);
            assert_eq!(fast == Verdict::Ok, slow, "history {h:?}");
            if slow { good += 1 } else { bad += 1 }
        }
        // Both outcomes must be well represented, or the comparison proves little.
        assert!(good > 300 && bad > 300, "good {good} bad {bad}");
    }
}
