//! What shards tell the sequencer about an entry, and how the parts become one answer.
//!
//! Pure data and pure functions. A *partial* is one participant's evaluation of a txn's
//! compares and pre-checks over its own keys; `decide` turns the partials of every
//! participant into the one `Decision` they all apply. A *part* is one participant's
//! share of an entry's result; `merge` joins them (ranges by sort target then key,
//! limit and `more`, counts summed) once the revisions in them are known.

use std::cmp::Ordering;

use crate::controls::Controls;
use crate::mvcc::pending_index_of_field;
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeResponse, KeyValue, LeaseGrantResponse,
    PutResponse, RangeRequest, RangeResponse, RequestOp, Response, ResponseOp, Revision, SortOrder,
    SortTarget, StoreError, TxnRequest, TxnResponse,
};

/// A log index.
pub type Index = u64;

/// One participant's view of one compare over the keys it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpPart {
    /// None of the compared keys is here.
    NoKeys,
    /// Every compared key here satisfies it.
    AllTrue,
    /// At least one compared key here fails it.
    SomeFalse,
}

/// One participant's evaluation of a txn, over the whole txn tree (both branches of every
/// level: the path is not known until every participant's compares are in). Txn nodes are
/// numbered in preorder, success branch before failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partial {
    pub index: Index,
    pub shard: usize,
    /// Every compare of every txn node, node by node in preorder.
    pub compares: Vec<CmpPart>,
    /// Every put in preorder: the error its pre-check found here (only the key's owner
    /// checks a put).
    pub puts: Vec<Option<StoreError>>,
    /// Every range in preorder: its revision check (the same on every participant).
    pub ranges: Vec<Option<StoreError>>,
}

/// The outcome of a txn's compares and pre-checks, the same for every participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Per txn node in preorder: whether its compares held (off-path nodes included).
    pub succeeded: Vec<bool>,
    /// The pre-check error that fails the whole txn, if any (etcd's order: puts on the
    /// taken path first, then ranges).
    pub error: Option<StoreError>,
}

/// The compare on the zero key-value etcd uses when no key matched (a VALUE compare on
/// missing keys is always false).
pub fn compare_missing(c: &Compare) -> bool {
    match &c.target {
        CompareTarget::Value(_) => false,
        CompareTarget::Version(v)
        | CompareTarget::Create(v)
        | CompareTarget::Mod(v)
        | CompareTarget::Lease(v) => holds(c.result, 0.cmp(v)),
    }
}

/// etcd's `compareKV` result test on an ordering of the key's field against the operand.
pub fn holds(result: CompareResult, ord: Ordering) -> bool {
    match result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// Every txn node of `t` in preorder (success branch before failure).
pub fn txn_nodes(t: &TxnRequest) -> Vec<&TxnRequest> {
    fn walk<'a>(t: &'a TxnRequest, out: &mut Vec<&'a TxnRequest>) {
        out.push(t);
        for op in t.success.iter().chain(&t.failure) {
            if let RequestOp::Txn(n) = op {
                walk(n, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(t, &mut out);
    out
}

/// How many txn nodes `ops` holds (nested ones included).
pub fn txn_nodes_in(ops: &[RequestOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            RequestOp::Txn(t) => 1 + txn_nodes_in(&t.success) + txn_nodes_in(&t.failure),
            _ => 0,
        })
        .sum()
}

/// Numbers of the puts and ranges of `t`'s tree in preorder, used to find a node's op in
/// `Partial::puts` and `Partial::ranges`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cursor {
    pub node: usize,
    pub compare: usize,
    pub put: usize,
    pub range: usize,
}

impl Cursor {
    /// Moves past every node, compare, put and range inside `ops` (an untaken branch).
    pub fn skip_ops(&mut self, ops: &[RequestOp]) {
        for op in ops {
            match op {
                RequestOp::Range(_) => self.range += 1,
                RequestOp::Put(_) => self.put += 1,
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(t) => self.skip_txn(t),
            }
        }
    }

    /// Moves past the node `t` and everything under it.
    pub fn skip_txn(&mut self, t: &TxnRequest) {
        self.node += 1;
        self.compare += t.compare.len();
        self.skip_ops(&t.success);
        self.skip_ops(&t.failure);
    }
}

/// ANDs the participants' partials of `t` into the decision every participant applies.
pub fn decide(t: &TxnRequest, partials: &[Partial]) -> Decision {
    assert!(!partials.is_empty(), "a txn with no participant");
    let nodes = txn_nodes(t);
    let mut succeeded = Vec::with_capacity(nodes.len());
    let mut c = 0;
    for n in &nodes {
        let mut ok = true;
        for cmp in &n.compare {
            let mut any_keys = false;
            let mut all_true = true;
            for p in partials {
                match p.compares[c] {
                    CmpPart::NoKeys => {}
                    CmpPart::AllTrue => any_keys = true,
                    CmpPart::SomeFalse => {
                        any_keys = true;
                        all_true = false;
                    }
                }
            }
            let this = if any_keys {
                all_true
            } else {
                compare_missing(cmp)
            };
            ok &= this;
            c += 1;
        }
        succeeded.push(ok);
    }
    let puts: Vec<Option<StoreError>> = (0..partials[0].puts.len())
        .map(|i| partials.iter().find_map(|p| p.puts[i].clone()))
        .collect();
    let ranges: Vec<Option<StoreError>> = (0..partials[0].ranges.len())
        .map(|i| partials.iter().find_map(|p| p.ranges[i].clone()))
        .collect();
    let mut d = Decision {
        succeeded,
        error: None,
    };
    let mut cur = Cursor::default();
    let mut put_err = None;
    let mut range_err = None;
    path_checks(
        t,
        &d,
        &mut cur,
        &puts,
        &ranges,
        &mut put_err,
        &mut range_err,
    );
    d.error = if t.is_read_only() {
        range_err
    } else {
        put_err.or(range_err).or_else(|| deleted_then_kept(t, &d))
    };
    d
}

/// A put with `ignore_value` or `ignore_lease` whose key an earlier op on the taken path
/// deleted (only a delete with range_end `[0]` gets past `checkIntervals`): etcd 3.4
/// panics on it in `applyTxn`; the whole txn fails with `KeyNotFound` instead, changing
/// nothing (the reference model's rule).
fn deleted_then_kept(t: &TxnRequest, d: &Decision) -> Option<StoreError> {
    fn walk(
        t: &TxnRequest,
        d: &Decision,
        node: &mut usize,
        dels: &mut Vec<(bytes::Bytes, bytes::Bytes)>,
    ) -> bool {
        let ok = d.succeeded[*node];
        *node += 1;
        if !ok {
            *node += txn_nodes_in(&t.success);
        }
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::DeleteRange(x) => dels.push((x.key.clone(), x.range_end.clone())),
                RequestOp::Put(p)
                    if (p.ignore_value || p.ignore_lease)
                        && dels
                            .iter()
                            .any(|(k, e)| crate::types::End::of(e).admits(k, &p.key)) =>
                {
                    return true;
                }
                RequestOp::Txn(n) if walk(n, d, node, dels) => return true,
                _ => {}
            }
        }
        if ok {
            *node += txn_nodes_in(&t.failure);
        }
        false
    }
    walk(t, d, &mut 0, &mut Vec::new()).then_some(StoreError::KeyNotFound)
}

/// The first put error and the first range error on the taken path, in op order.
fn path_checks(
    t: &TxnRequest,
    d: &Decision,
    cur: &mut Cursor,
    puts: &[Option<StoreError>],
    ranges: &[Option<StoreError>],
    put_err: &mut Option<StoreError>,
    range_err: &mut Option<StoreError>,
) {
    let ok = d.succeeded[cur.node];
    cur.node += 1;
    cur.compare += t.compare.len();
    let (taken, other) = if ok {
        (&t.success, &t.failure)
    } else {
        (&t.failure, &t.success)
    };
    // The untaken branch's ops are numbered after or before the taken one's.
    if !ok {
        cur.skip_ops(other);
    }
    for op in taken {
        match op {
            RequestOp::Range(_) => {
                if range_err.is_none() {
                    *range_err = ranges[cur.range].clone();
                }
                cur.range += 1;
            }
            RequestOp::Put(_) => {
                if put_err.is_none() {
                    *put_err = puts[cur.put].clone();
                }
                cur.put += 1;
            }
            RequestOp::DeleteRange(_) => {}
            RequestOp::Txn(n) => path_checks(n, d, cur, puts, ranges, put_err, range_err),
        }
    }
    if ok {
        cur.skip_ops(other);
    }
}

/// One participant's share of a range: the matching keys after the revision filters,
/// sorted and cut to the limit, with how many matched before the cut and how many keys
/// were in the range at all (etcd's `count`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangePart {
    pub kvs: Vec<KeyValue>,
    pub matched: usize,
    pub count: i64,
}

/// One participant's share of a txn op's response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpPart {
    Range(RangePart),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnPart),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnPart {
    pub succeeded: bool,
    pub responses: Vec<OpPart>,
}

/// One participant's share of an entry's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnPart),
    Compacted,
    LeaseGranted(LeaseGrantResponse),
    LeaseRevoked,
    Done,
}

/// How kvs order in a range's answer: by the sort target (etcd sorts stably over key
/// order, so ties stay in ascending key order whichever the direction), then by key.
pub fn range_order(req: &RangeRequest, a: &KeyValue, b: &KeyValue) -> Ordering {
    let mut order = req.sort_order;
    if req.sort_target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    let by = match req.sort_target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    let by = if order == SortOrder::Descend {
        by.reverse()
    } else {
        by
    };
    by.then_with(|| a.key.cmp(&b.key))
}

/// Joins range parts into etcd's answer.
pub fn merge_range(req: &RangeRequest, parts: Vec<RangePart>) -> RangeResponse {
    merge_range_with(req, parts, &Controls::default())
}

/// `merge_range` under the store's negative controls (`range_drops_a_part`).
pub fn merge_range_with(
    req: &RangeRequest,
    mut parts: Vec<RangePart>,
    controls: &Controls,
) -> RangeResponse {
    if controls.on(|c| c.range_drops_a_part) && parts.len() > 1 {
        if let Some(at) = parts.iter().rposition(|p| p.count > 0) {
            parts.remove(at);
        }
    }
    let mut matched: usize = parts.iter().map(|p| p.matched).sum();
    let count = parts.iter().map(|p| p.count).sum();
    let mut kvs: Vec<KeyValue> = parts.into_iter().flat_map(|p| p.kvs).collect();
    if let Some(w) = req.key_window() {
        // etcd's first limit + 1 keys of the whole range, then their order.
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        kvs.truncate(w);
        matched = kvs.len();
    }
    kvs.sort_by(|a, b| range_order(req, a, b));
    let mut more = false;
    if req.limit > 0 && matched > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value = bytes::Bytes::new());
    }
    RangeResponse { kvs, more, count }
}

fn merge_kvs(mut kvs: Vec<KeyValue>) -> Vec<KeyValue> {
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    kvs
}

fn merge_txn(t: &TxnRequest, parts: Vec<TxnPart>, controls: &Controls) -> TxnResponse {
    let succeeded = parts[0].succeeded;
    assert!(
        parts.iter().all(|p| p.succeeded == succeeded),
        "participants took different paths"
    );
    let ops = if succeeded { &t.success } else { &t.failure };
    let mut columns: Vec<Vec<OpPart>> = ops.iter().map(|_| Vec::new()).collect();
    for p in parts {
        assert_eq!(p.responses.len(), ops.len(), "a txn part of another shape");
        for (i, r) in p.responses.into_iter().enumerate() {
            columns[i].push(r);
        }
    }
    let responses = ops
        .iter()
        .zip(columns)
        .map(|(op, col)| merge_op(op, col, controls))
        .collect();
    TxnResponse {
        succeeded,
        responses,
    }
}

fn merge_op(op: &RequestOp, col: Vec<OpPart>, controls: &Controls) -> ResponseOp {
    match op {
        RequestOp::Range(r) => ResponseOp::Range(merge_range_with(
            r,
            col.into_iter()
                .map(|p| match p {
                    OpPart::Range(p) => p,
                    other => panic!("range part expected, got {other:?}"),
                })
                .collect(),
            controls,
        )),
        RequestOp::Put(_) => ResponseOp::Put(PutResponse {
            prev_kv: col.into_iter().find_map(|p| match p {
                OpPart::Put(p) => p.prev_kv,
                other => panic!("put part expected, got {other:?}"),
            }),
        }),
        RequestOp::DeleteRange(_) => {
            let mut deleted = 0;
            let mut prev = Vec::new();
            for p in col {
                let OpPart::DeleteRange(p) = p else {
                    panic!("delete part expected, got {p:?}")
                };
                deleted += p.deleted;
                prev.extend(p.prev_kvs);
            }
            ResponseOp::DeleteRange(DeleteRangeResponse {
                deleted,
                prev_kvs: merge_kvs(prev),
            })
        }
        RequestOp::Txn(t) => ResponseOp::Txn(merge_txn(
            t,
            col.into_iter()
                .map(|p| match p {
                    OpPart::Txn(p) => p,
                    other => panic!("txn part expected, got {other:?}"),
                })
                .collect(),
            controls,
        )),
    }
}

/// Joins every participant's part of an entry (all from the same command) into its
/// response. `Err` parts are the same on every participant (the checks that fail a whole
/// entry see only store-wide state or the decision).
pub fn merge(
    cmd: &crate::Command,
    parts: Vec<Result<Part, StoreError>>,
) -> Result<Response, StoreError> {
    merge_with(cmd, parts, &Controls::default())
}

/// `merge` under the store's negative controls.
pub fn merge_with(
    cmd: &crate::Command,
    parts: Vec<Result<Part, StoreError>>,
    controls: &Controls,
) -> Result<Response, StoreError> {
    use crate::Command;
    assert!(!parts.is_empty(), "an answer with no part");
    let mut ok = Vec::with_capacity(parts.len());
    for p in parts {
        ok.push(p?);
    }
    Ok(match cmd {
        Command::Put(_) => {
            let prev = ok.into_iter().find_map(|p| match p {
                Part::Put(p) => p.prev_kv,
                _ => None,
            });
            Response::Put(PutResponse { prev_kv: prev })
        }
        Command::DeleteRange(_) => {
            let mut deleted = 0;
            let mut prev = Vec::new();
            for p in ok {
                if let Part::DeleteRange(d) = p {
                    deleted += d.deleted;
                    prev.extend(d.prev_kvs);
                }
            }
            Response::DeleteRange(DeleteRangeResponse {
                deleted,
                prev_kvs: merge_kvs(prev),
            })
        }
        Command::Txn(t) => Response::Txn(merge_txn(
            t,
            ok.into_iter()
                .map(|p| match p {
                    Part::Txn(p) => p,
                    other => panic!("txn part expected, got {other:?}"),
                })
                .collect(),
            controls,
        )),
        _ => match ok.into_iter().next().expect("a part") {
            Part::Compacted => Response::Compacted,
            Part::LeaseGranted(g) => Response::LeaseGranted(g),
            Part::LeaseRevoked => Response::LeaseRevoked,
            Part::Done => Response::Done,
            other => panic!("unexpected part {other:?}"),
        },
    })
}

/// Rewrites the pending revision fields in `part` that `number` knows with their revisions.
pub fn resolve_part(part: &mut Part, number: &impl Fn(Index) -> Option<Revision>) {
    match part {
        Part::Put(p) => resolve_opt(&mut p.prev_kv, number),
        Part::DeleteRange(d) => d.prev_kvs.iter_mut().for_each(|kv| resolve_kv(kv, number)),
        Part::Txn(t) => resolve_txn(t, number),
        _ => {}
    }
}

fn resolve_txn(t: &mut TxnPart, number: &impl Fn(Index) -> Option<Revision>) {
    for r in &mut t.responses {
        match r {
            OpPart::Range(p) => p.kvs.iter_mut().for_each(|kv| resolve_kv(kv, number)),
            OpPart::Put(p) => resolve_opt(&mut p.prev_kv, number),
            OpPart::DeleteRange(d) => d.prev_kvs.iter_mut().for_each(|kv| resolve_kv(kv, number)),
            OpPart::Txn(t) => resolve_txn(t, number),
        }
    }
}

fn resolve_opt(kv: &mut Option<KeyValue>, number: &impl Fn(Index) -> Option<Revision>) {
    if let Some(kv) = kv {
        resolve_kv(kv, number);
    }
}

pub fn resolve_kv(kv: &mut KeyValue, number: &impl Fn(Index) -> Option<Revision>) {
    if let Some(r) = pending_index_of_field(kv.mod_revision).and_then(number) {
        kv.mod_revision = r;
    }
    if let Some(r) = pending_index_of_field(kv.create_revision).and_then(number) {
        kv.create_revision = r;
    }
}

/// Whether `part` still holds a pending revision field.
pub fn is_resolved(part: &Part) -> bool {
    let left = std::cell::Cell::new(false);
    let mut probe = part.clone();
    resolve_part(&mut probe, &|_| {
        left.set(true);
        None
    });
    !left.get()
}
