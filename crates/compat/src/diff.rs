//! Running one sequence against etcd and ringkv, comparing every answer, and shrinking a
//! sequence that shows a difference to a short one that still does.
//!
//! Every response field is compared (revisions, versions, kvs, prev_kv, count, more,
//! deleted, succeeded, nested responses, TTLs, lease ids and key lists) and every error
//! by code and message, except the fields that differ by nature, which are set to fixed
//! values first: a header's cluster_id, member_id and raft_term; the id of a lease granted
//! without one; a TimeToLive's remaining TTL when within 3 s of the granted one (the clocks
//! of two systems), and the order of its keys (etcd's is Go's map order).

use std::net::SocketAddr;

use ringkv_client::etcd_grpc::{self, CallError};
use ringkv_proto::etcdpb as pb;
use tonic::transport::Channel;

use crate::calls::{Call, LEASES};

/// What one call returned, normalised and printed (every field), or its error.
pub type Outcome = Result<String, CallError>;

/// The first call whose outcomes differ.
#[derive(Clone, Debug)]
pub struct Difference {
    /// Its index in the sequence.
    pub index: usize,
    pub etcd: Outcome,
    pub ringkv: Outcome,
}

fn scrub(h: &mut Option<pb::ResponseHeader>) {
    if let Some(h) = h {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

fn scrub_txn(t: &mut pb::TxnResponse) {
    use pb::response_op::Response as R;
    scrub(&mut t.header);
    for r in &mut t.responses {
        match r.response.as_mut() {
            Some(R::ResponseRange(x)) => scrub(&mut x.header),
            Some(R::ResponsePut(x)) => scrub(&mut x.header),
            Some(R::ResponseDeleteRange(x)) => scrub(&mut x.header),
            Some(R::ResponseTxn(x)) => scrub_txn(x),
            None => {}
        }
    }
}

/// Sends one call; its outcome with the fields that differ by nature fixed.
pub async fn call(ch: &Channel, c: &Call) -> Outcome {
    use etcd_grpc::unary;
    Ok(match c {
        Call::Put(r) => {
            let mut x: pb::PutResponse = unary(ch, "/etcdserverpb.KV/Put", r.clone()).await?;
            scrub(&mut x.header);
            format!("{x:?}")
        }
        Call::Range(r) => {
            let mut x: pb::RangeResponse = unary(ch, "/etcdserverpb.KV/Range", r.clone()).await?;
            scrub(&mut x.header);
            format!("{x:?}")
        }
        Call::Delete(r) => {
            let mut x: pb::DeleteRangeResponse =
                unary(ch, "/etcdserverpb.KV/DeleteRange", r.clone()).await?;
            scrub(&mut x.header);
            format!("{x:?}")
        }
        Call::Txn(r) => {
            let mut x: pb::TxnResponse = unary(ch, "/etcdserverpb.KV/Txn", r.clone()).await?;
            scrub_txn(&mut x);
            format!("{x:?}")
        }
        Call::Compact(r) => {
            let mut x: pb::CompactionResponse =
                unary(ch, "/etcdserverpb.KV/Compact", r.clone()).await?;
            scrub(&mut x.header);
            format!("{x:?}")
        }
        Call::LeaseGrant(r) => {
            let mut x: pb::LeaseGrantResponse =
                unary(ch, "/etcdserverpb.Lease/LeaseGrant", r.clone()).await?;
            scrub(&mut x.header);
            if r.id == 0 {
                x.id = -1; // each system chooses its own
            }
            format!("{x:?}")
        }
        Call::LeaseRevoke(id) => {
            let mut x: pb::LeaseRevokeResponse = unary(
                ch,
                "/etcdserverpb.Lease/LeaseRevoke",
                pb::LeaseRevokeRequest { id: *id },
            )
            .await?;
            scrub(&mut x.header);
            format!("{x:?}")
        }
        Call::LeaseTimeToLive { id, keys } => {
            let mut x: pb::LeaseTimeToLiveResponse = unary(
                ch,
                "/etcdserverpb.Lease/LeaseTimeToLive",
                pb::LeaseTimeToLiveRequest {
                    id: *id,
                    keys: *keys,
                },
            )
            .await?;
            scrub(&mut x.header);
            if x.ttl >= 0 && x.ttl <= x.granted_ttl && x.granted_ttl - x.ttl <= 3 {
                x.ttl = x.granted_ttl;
            }
            // etcd lists a lease's keys in Go's map order, which varies.
            x.keys.sort();
            format!("{x:?}")
        }
        Call::LeaseLeases => {
            let mut x: pb::LeaseLeasesResponse = unary(
                ch,
                "/etcdserverpb.Lease/LeaseLeases",
                pb::LeaseLeasesRequest {},
            )
            .await?;
            scrub(&mut x.header);
            // Leases granted without an id are each system's own; the order is each
            // lessor's map order (etcd's is Go's random map order).
            for l in &mut x.leases {
                if !LEASES.contains(&l.id) {
                    l.id = -1;
                }
            }
            x.leases.sort_by_key(|l| l.id);
            format!("{x:?}")
        }
        Call::LeaseKeepAlive(id) => {
            let mut x = etcd_grpc::keep_alive_once(ch, *id).await?;
            scrub(&mut x.header);
            format!("{x:?}")
        }
    })
}

/// Sends `calls` in turn to both systems; the first difference, if any.
pub async fn compare(
    etcd: SocketAddr,
    ringkv: SocketAddr,
    calls: &[Call],
) -> Result<Option<Difference>, String> {
    let e = etcd_grpc::connect(etcd).await?;
    let r = etcd_grpc::connect(ringkv).await?;
    for (index, c) in calls.iter().enumerate() {
        let theirs = call(&e, c).await;
        let ours = call(&r, c).await;
        if theirs != ours {
            return Ok(Some(Difference {
                index,
                etcd: theirs,
                ringkv: ours,
            }));
        }
    }
    Ok(None)
}

/// Fresh systems for one run: their client addresses, and what keeps them running.
pub type Fresh<'a> =
    dyn FnMut() -> Result<(SocketAddr, SocketAddr, Box<dyn std::any::Any>), String> + 'a;

/// Runs `calls` on fresh systems.
pub fn run_fresh(fresh: &mut Fresh<'_>, calls: &[Call]) -> Result<Option<Difference>, String> {
    let (etcd, ringkv, guard) = fresh()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let r = rt.block_on(compare(etcd, ringkv, calls));
    drop(guard);
    r
}

/// Shrinks `calls`, whose last call differs between the systems, to a shorter sequence
/// that still shows a difference: chunks of calls before the last are dropped, halves
/// first, then quarters, down to single calls, each attempt on fresh systems; at most
/// `runs_max` attempts.
pub fn shrink(
    fresh: &mut Fresh<'_>,
    mut calls: Vec<Call>,
    runs_max: usize,
) -> Result<(Vec<Call>, Difference), String> {
    let mut last = run_fresh(fresh, &calls)?
        .ok_or("the difference did not show again on fresh systems (timing?)")?;
    calls.truncate(last.index + 1);
    let mut runs = 1;
    let mut chunk = calls.len().div_ceil(2);
    while chunk >= 1 && runs < runs_max {
        let mut start = 0;
        while start + 1 < calls.len() && runs < runs_max {
            let end = (start + chunk).min(calls.len() - 1);
            let mut fewer = calls[..start].to_vec();
            fewer.extend_from_slice(&calls[end..]);
            runs += 1;
            match run_fresh(fresh, &fewer)? {
                Some(d) => {
                    fewer.truncate(d.index + 1);
                    calls = fewer;
                    last = d;
                }
                None => start = end,
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    Ok((calls, last))
}
