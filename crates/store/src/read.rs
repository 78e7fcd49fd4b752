//! Read-only txns served as reads: evaluated at one numbered revision on every shard they
//! involve, with no log entry (etcd serves them from its read view too).
//!
//! The same two steps as a txn in the log, at a revision instead of after an index: each
//! participant evaluates every compare and every range's revision check on its keys at
//! `at` (`read_partial`), `parts::decide` joins the partials, and each participant answers
//! its part of the taken path at `at` (`read_txn`); `parts::merge` joins the parts. All at
//! a revision every participant has numbered, so the answer is one consistent cut. Pure;
//! runs wherever its `ShardStore` lives. Must not change the store.

use crate::mvcc::Stamp;
use crate::parts::{CmpPart, Decision, OpPart, Partial, TxnPart, holds};
use crate::shard::ShardStore;
use crate::types::{
    Compare, CompareTarget, End, RangeRequest, RequestOp, Revision, StoreError, TxnRequest,
};

/// Whether a txn is served as a read: it writes nothing, at any depth.
pub fn is_read(t: &TxnRequest) -> bool {
    t.is_read_only()
}

/// Whether a read-only txn may be served from the local state: etcd's rule (every op of
/// both branches is a serializable range; a nested txn is not one), except that a txn
/// with no op at all is served linearizably here. etcd serves that one from local state
/// too, so on a follower its compares decide on a stale state: the stronger answer is
/// within etcd's contract and never stale.
pub fn is_serializable(t: &TxnRequest) -> bool {
    let mut ops = t.success.iter().chain(&t.failure).peekable();
    ops.peek().is_some() && ops.all(|op| matches!(op, RequestOp::Range(r) if r.serializable))
}

impl ShardStore {
    /// This shard's partial of read-only txn `t` at revision `at` (numbered here).
    pub fn read_partial(&self, t: &TxnRequest, at: Revision) -> Partial {
        assert!(t.is_read_only(), "a txn that writes is not a read");
        assert!(
            at <= self.read_revision(),
            "reading at an unnumbered revision"
        );
        let mut p = Partial {
            index: 0,
            shard: self.shard(),
            compares: Vec::new(),
            puts: Vec::new(),
            ranges: Vec::new(),
        };
        for n in crate::parts::txn_nodes(t) {
            for c in &n.compare {
                p.compares.push(self.compare_at(c, at as Stamp));
            }
        }
        let compacted = self.compact_revision();
        walk(t, &mut |r: &RangeRequest| {
            // etcd's checkRequestRange against the read view at `at`.
            p.ranges.push(if r.revision == 0 {
                None
            } else if r.revision > at {
                Some(StoreError::FutureRevision)
            } else if r.revision < compacted {
                Some(StoreError::Compacted)
            } else {
                None
            });
        });
        p
    }

    /// This shard's part of read-only txn `t`'s answer at revision `at`, on the path `d`
    /// took (`d.error` is the caller's to answer).
    pub fn read_txn(&self, t: &TxnRequest, d: &Decision, at: Revision) -> TxnPart {
        let mut node = 0;
        self.read_node(t, d, at, &mut node)
    }

    fn read_node(&self, t: &TxnRequest, d: &Decision, at: Revision, node: &mut usize) -> TxnPart {
        let ok = d.succeeded[*node];
        *node += 1;
        if !ok {
            *node += crate::parts::txn_nodes_in(&t.success);
        }
        let ops = if ok { &t.success } else { &t.failure };
        let responses = ops
            .iter()
            .map(|op| match op {
                RequestOp::Range(r) => {
                    let rev = if r.revision > 0 { r.revision } else { at };
                    OpPart::Range(self.range_part(r, rev as Stamp))
                }
                RequestOp::Txn(n) => OpPart::Txn(self.read_node(n, d, at, node)),
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => {
                    unreachable!("a read-only txn has no writes")
                }
            })
            .collect();
        if ok {
            *node += crate::parts::txn_nodes_in(&t.failure);
        }
        TxnPart {
            succeeded: ok,
            responses,
        }
    }

    /// etcd's `applyCompare` over this shard's keys at a numbered revision (exact).
    fn compare_at(&self, c: &Compare, at: Stamp) -> CmpPart {
        let mut any = false;
        for (_, v) in self.keys().scan_at(&c.key, End::of(&c.range_end), at) {
            any = true;
            let ord = match &c.target {
                CompareTarget::Value(x) => v.value.as_deref().unwrap_or_default().cmp(&x[..]),
                CompareTarget::Version(x) => v.version.cmp(x),
                CompareTarget::Lease(x) => v.lease.cmp(x),
                CompareTarget::Mod(x) => (v.stamp as Revision).cmp(x),
                CompareTarget::Create(x) => (v.create as Revision).cmp(x),
            };
            if !holds(c.result, ord) {
                return CmpPart::SomeFalse;
            }
        }
        // With no key on any shard, `decide` applies etcd's zero key-value rule.
        if any {
            CmpPart::AllTrue
        } else {
            CmpPart::NoKeys
        }
    }
}

/// Calls `f` on every range of `t`'s tree in preorder (success branch first), as
/// `Partial::ranges` numbers them.
fn walk(t: &TxnRequest, f: &mut dyn FnMut(&RangeRequest)) {
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => f(r),
            RequestOp::Txn(n) => walk(n, f),
            _ => {}
        }
    }
}

#[cfg(test)]
mod serializable_tests {
    use super::*;
    use crate::types::{PutRequest, RangeRequest};

    fn range(serializable: bool) -> RequestOp {
        RequestOp::Range(RangeRequest {
            serializable,
            ..Default::default()
        })
    }

    #[test]
    fn only_serializable_ranges_make_a_serializable_txn() {
        let txn = |success: Vec<RequestOp>, failure: Vec<RequestOp>| TxnRequest {
            compare: vec![],
            success,
            failure,
        };
        assert!(is_serializable(&txn(vec![range(true)], vec![range(true)])));
        assert!(!is_serializable(&txn(
            vec![range(true)],
            vec![range(false)]
        )));
        // etcd does not look inside a nested txn: it is not a serializable range.
        let nested = RequestOp::Txn(txn(vec![range(true)], vec![]));
        assert!(!is_serializable(&txn(vec![nested], vec![])));
        // No op at all: linearizable here (etcd would read local state, and a follower's
        // compares would decide on a stale state).
        assert!(!is_serializable(&txn(vec![], vec![])));
        let put = RequestOp::Put(PutRequest::default());
        assert!(!is_serializable(&txn(vec![put], vec![])));
    }
}
