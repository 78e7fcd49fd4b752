//! etcd's v3 messages to ringkv's store requests and back.
//!
//! Pure data: the gRPC service (`node::grpc`) decodes a message, turns it into the store
//! request its shard carries out, and renders the store's answer as etcd's response
//! message. Runs on the shard executor of the call. Must not touch node state.

use bytes::Bytes;
use ringkv_proto::etcdpb as pb;
use ringkv_proto::outcome::ApiError;
use ringkv_store::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, PutRequest, RangeRequest,
    RequestOp, Response, ResponseOp, SortOrder, SortTarget, TxnRequest,
};

fn bad_enum(field: &str, v: i32) -> ApiError {
    ApiError::bad_request(format!("{field} {v} is not one of etcd's values"))
}

pub fn range_request(r: pb::RangeRequest) -> Result<RangeRequest, ApiError> {
    Ok(RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order: match r.sort_order {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            2 => SortOrder::Descend,
            v => return Err(bad_enum("sort_order", v)),
        },
        sort_target: match r.sort_target {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            4 => SortTarget::Value,
            v => return Err(bad_enum("sort_target", v)),
        },
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn put_request(p: pb::PutRequest) -> PutRequest {
    PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

pub fn delete_request(d: pb::DeleteRangeRequest) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: d.key,
        range_end: d.range_end,
        prev_kv: d.prev_kv,
    }
}

/// A compare's operand is read as Go's getters read it: the member the target names, or
/// its zero value when the union holds another member or none (etcd does the same).
fn compare(c: pb::Compare) -> Result<Compare, ApiError> {
    use pb::compare::TargetUnion as U;
    let int = |want: fn(&U) -> Option<i64>| c.target_union.as_ref().and_then(want).unwrap_or(0);
    let target = match c.target {
        0 => CompareTarget::Version(int(|u| match u {
            U::Version(v) => Some(*v),
            _ => None,
        })),
        1 => CompareTarget::Create(int(|u| match u {
            U::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        2 => CompareTarget::Mod(int(|u| match u {
            U::ModRevision(v) => Some(*v),
            _ => None,
        })),
        3 => CompareTarget::Value(match &c.target_union {
            Some(U::Value(v)) => v.clone(),
            _ => Bytes::new(),
        }),
        4 => CompareTarget::Lease(int(|u| match u {
            U::Lease(v) => Some(*v),
            _ => None,
        })),
        v => return Err(bad_enum("compare target", v)),
    };
    Ok(Compare {
        result: match c.result {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            2 => CompareResult::Less,
            3 => CompareResult::NotEqual,
            v => return Err(bad_enum("compare result", v)),
        },
        target,
        key: c.key,
        range_end: c.range_end,
    })
}

fn request_op(op: pb::RequestOp) -> Result<RequestOp, ApiError> {
    use pb::request_op::Request as R;
    Ok(match op.request {
        Some(R::RequestRange(r)) => RequestOp::Range(range_request(r)?),
        Some(R::RequestPut(p)) => RequestOp::Put(put_request(p)),
        Some(R::RequestDeleteRange(d)) => RequestOp::DeleteRange(delete_request(d)),
        Some(R::RequestTxn(t)) => RequestOp::Txn(txn_request(t)?),
        // etcd's checkRequestOp refuses an op with no request the same way.
        None => {
            return Err(ApiError::Store {
                code: 3,
                message: "etcdserver: key is not provided".into(),
            });
        }
    })
}

pub fn txn_request(t: pb::TxnRequest) -> Result<TxnRequest, ApiError> {
    Ok(TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: t
            .success
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
    })
}

pub fn kv(k: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: k.key,
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        value: k.value,
        lease: k.lease,
    }
}

pub fn range_response(r: ringkv_store::RangeResponse, h: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(h),
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_response(p: ringkv_store::PutResponse, h: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(h),
        prev_kv: p.prev_kv.map(kv),
    }
}

pub fn delete_response(
    d: ringkv_store::DeleteRangeResponse,
    h: pb::ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(h),
        deleted: d.deleted,
        prev_kvs: d.prev_kvs.into_iter().map(kv).collect(),
    }
}

/// A txn's answer. The top header is the node's (`h`, at the revision after the txn);
/// nested responses carry a header with a revision alone, as etcd's applier fills it: a
/// range reads at the revision before the txn, or after it once an earlier op of the txn
/// changed something; a put at the revision after; a delete as a range, counting itself;
/// a nested txn's own header is empty. (etcdctl's `txn -w json` against etcd 3.4.23 shows
/// these numbers.)
pub fn txn_response(t: ringkv_store::TxnResponse, h: pb::ResponseHeader) -> pb::TxnResponse {
    let begin = h.revision - i64::from(writes(&t));
    let mut changed = false;
    let mut r = nested_txn(t, begin, &mut changed);
    r.header = Some(h);
    r
}

/// Whether a txn's ops changed anything.
fn writes(t: &ringkv_store::TxnResponse) -> bool {
    t.responses.iter().any(|r| match r {
        ResponseOp::Put(_) => true,
        ResponseOp::DeleteRange(d) => d.deleted > 0,
        ResponseOp::Txn(t) => writes(t),
        ResponseOp::Range(_) => false,
    })
}

fn nested_txn(t: ringkv_store::TxnResponse, begin: i64, changed: &mut bool) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    let at = |revision| pb::ResponseHeader {
        revision,
        ..Default::default()
    };
    let responses = t
        .responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                ResponseOp::Range(r) => {
                    R::ResponseRange(range_response(r, at(begin + i64::from(*changed))))
                }
                ResponseOp::Put(p) => {
                    *changed = true;
                    R::ResponsePut(put_response(p, at(begin + 1)))
                }
                ResponseOp::DeleteRange(d) => {
                    *changed |= d.deleted > 0;
                    R::ResponseDeleteRange(delete_response(d, at(begin + i64::from(*changed))))
                }
                ResponseOp::Txn(t) => R::ResponseTxn(nested_txn(t, begin, changed)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(pb::ResponseHeader::default()),
        succeeded: t.succeeded,
        responses,
    }
}

/// What a store answer must be for the call that asked: anything else is the node's bug,
/// reported to the client as one instead of a wrong message.
pub fn unexpected(what: &str, r: &Response) -> ApiError {
    tracing::error!("a {what} call was answered with {r:?}");
    ApiError::Internal {
        message: format!("a {what} call got another call's answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn compares_read_their_operand_as_go_does() {
        use pb::compare::TargetUnion as U;
        let c = |target, u| {
            compare(pb::Compare {
                result: 1,
                target,
                key: b("k"),
                target_union: u,
                range_end: b("z"),
            })
            .unwrap()
        };
        assert_eq!(c(0, Some(U::Version(3))).target, CompareTarget::Version(3));
        assert_eq!(c(2, Some(U::ModRevision(9))).target, CompareTarget::Mod(9));
        // The union holds another member, or none: the zero value.
        assert_eq!(c(1, Some(U::Version(3))).target, CompareTarget::Create(0));
        assert_eq!(c(3, None).target, CompareTarget::Value(Bytes::new()));
        assert_eq!(c(4, Some(U::Lease(7))).target, CompareTarget::Lease(7));
        let full = c(3, Some(U::Value(b("v"))));
        assert_eq!(full.result, CompareResult::Greater);
        assert_eq!(full.range_end, b("z"));
        assert!(
            compare(pb::Compare {
                target: 5,
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn nested_txns_convert_both_ways() {
        use pb::request_op::Request as R;
        let t = txn_request(pb::TxnRequest {
            compare: vec![],
            success: vec![pb::RequestOp {
                request: Some(R::RequestTxn(pb::TxnRequest {
                    failure: vec![pb::RequestOp {
                        request: Some(R::RequestRange(pb::RangeRequest {
                            key: b("a"),
                            sort_order: 2,
                            sort_target: 4,
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                })),
            }],
            failure: vec![pb::RequestOp {
                request: Some(R::RequestPut(pb::PutRequest {
                    key: b("p"),
                    value: b("v"),
                    ignore_lease: true,
                    ..Default::default()
                })),
            }],
        })
        .unwrap();
        let RequestOp::Txn(inner) = &t.success[0] else {
            panic!("{t:?}")
        };
        let RequestOp::Range(r) = &inner.failure[0] else {
            panic!("{inner:?}")
        };
        assert_eq!(
            (r.sort_order, r.sort_target),
            (SortOrder::Descend, SortTarget::Value)
        );
        assert!(matches!(&t.failure[0], RequestOp::Put(p) if p.ignore_lease && p.value == b("v")));
        // An op without a request is refused as etcd refuses it.
        assert!(
            txn_request(pb::TxnRequest {
                success: vec![pb::RequestOp { request: None }],
                ..Default::default()
            })
            .is_err()
        );

        let h = pb::ResponseHeader {
            cluster_id: 9,
            revision: 7,
            ..Default::default()
        };
        let range = || ResponseOp::Range(ringkv_store::RangeResponse::default());
        let del = |deleted| {
            ResponseOp::DeleteRange(ringkv_store::DeleteRangeResponse {
                deleted,
                prev_kvs: vec![],
            })
        };
        // range, delete of nothing, nested txn (range, put, range), delete of two: the txn
        // began at 6 and ended at 7.
        let out = txn_response(
            ringkv_store::TxnResponse {
                succeeded: true,
                responses: vec![
                    range(),
                    del(0),
                    ResponseOp::Txn(ringkv_store::TxnResponse {
                        succeeded: false,
                        responses: vec![
                            range(),
                            ResponseOp::Put(ringkv_store::PutResponse::default()),
                            range(),
                        ],
                    }),
                    del(2),
                ],
            },
            h.clone(),
        );
        use pb::response_op::Response as Rs;
        let rev = |r: &pb::ResponseOp| match r.response.as_ref().unwrap() {
            Rs::ResponseRange(x) => x.header.clone(),
            Rs::ResponsePut(x) => x.header.clone(),
            Rs::ResponseDeleteRange(x) => x.header.clone(),
            Rs::ResponseTxn(x) => x.header.clone(),
        };
        assert_eq!(out.header, Some(h));
        let revs: Vec<i64> = out
            .responses
            .iter()
            .map(|r| rev(r).unwrap().revision)
            .collect();
        assert_eq!(revs, [6, 6, 0, 7]);
        let Some(Rs::ResponseTxn(inner)) = &out.responses[2].response else {
            panic!("{out:?}")
        };
        assert!(!inner.succeeded);
        assert_eq!(inner.header, Some(pb::ResponseHeader::default()));
        let revs: Vec<i64> = inner
            .responses
            .iter()
            .map(|r| rev(r).unwrap().revision)
            .collect();
        assert_eq!(revs, [6, 7, 7]);
        // Nested headers hold a revision alone.
        assert_eq!(rev(&out.responses[0]).unwrap().cluster_id, 0);
        // A read-only txn reads at its own revision.
        let ro = txn_response(
            ringkv_store::TxnResponse {
                succeeded: true,
                responses: vec![range()],
            },
            pb::ResponseHeader {
                revision: 5,
                ..Default::default()
            },
        );
        assert_eq!(rev(&ro.responses[0]).unwrap().revision, 5);
    }
}
