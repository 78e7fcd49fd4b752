//! The etcd target of `ringkv bench` (feature `etcd`): the same closed loop against etcd's
//! v3 gRPC KV API, for side-by-side runs on one machine.
//!
//! Runs on its own single-threaded tokio runtime (as the ringkv targets run on one glommio
//! executor), `conns` gRPC channels (one HTTP/2 connection each) shared by the clients.
//! Messages are `ringkv_proto::etcdpb`'s and calls go through `etcd_grpc` (so no protoc is
//! needed). Writes (puts, txns, lease grants and revokes) go to the leader (found with
//! Maintenance/Status), reads to every endpoint. Never retries.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::bench::{
    Done, LEASE_TTL_SECS, Options, Plan, Prepared, Report, WARMUP_END, WARMUP_FIRST, WARMUP_PAGE,
    Workload, after, check_populated, lease_key_name, prefixes_range, report,
};
use crate::etcd_grpc::{self, CallError, connect, leader};
use ringkv_proto::etcdpb::{
    Compare, LeaseGrantRequest, LeaseGrantResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, TxnResponse, compare::TargetUnion, request_op::Request,
    response_op::Response,
};
use ringkv_proto::native;
use ringkv_rng::Rng;
use ringkv_store::bytes::Bytes;

/// rpc.proto `Compare.CompareResult`: EQUAL = 0 (GREATER = 1, LESS = 2, NOT_EQUAL = 3).
pub const COMPARE_EQUAL: i32 = 0;
/// rpc.proto `Compare.CompareTarget`: MOD = 2 (VERSION = 0, CREATE = 1, VALUE = 3,
/// LEASE = 4).
pub const COMPARE_MOD: i32 = 2;

/// A failed call as the error map counts it: `grpc <code>` (e.g. "grpc Unavailable"), or
/// `not ready: ...` when the channel never became ready.
fn error_key(e: CallError) -> String {
    let code = tonic::Code::from(e.code);
    // etcd_grpc reports a channel that is not ready as Unavailable with this message.
    if code == tonic::Code::Unavailable && e.message.starts_with("not ready: ") {
        return e.message;
    }
    format!("grpc {code:?}")
}

/// `etcd_grpc::unary` with its error as the error map's key.
async fn call<Q, R>(ch: &Channel, path: &'static str, req: Q) -> Result<R, String>
where
    Q: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    etcd_grpc::unary(ch, path, req).await.map_err(error_key)
}

/// Runs the load against etcd.
pub fn run(o: Options) -> Result<Report, String> {
    if matches!(
        o.workload,
        Workload::Range { consistency }
            | Workload::Mixed { consistency, .. }
            | Workload::RangePrefix { consistency }
            if consistency == native::CONSISTENCY_LEASE
    ) {
        return Err("etcd has no lease reads: use --consistency l or s".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run_local(o))
}

async fn run_local(mut o: Options) -> Result<Report, String> {
    let targets: Vec<SocketAddr> = if o.workload.writes_only() {
        vec![leader(&o.endpoints).await?]
    } else {
        o.endpoints.clone()
    };
    let mut chans = Vec::new();
    for i in 0..o.conns {
        chans.push(connect(targets[i % targets.len()]).await?);
    }
    let prepared = prepare(&mut o, &chans[0]).await?;
    let plan = Rc::new(Plan::new(o));
    plan.prepare(prepared);
    let errors: Rc<RefCell<BTreeMap<String, u64>>> = Rc::default();
    let t0 = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let progress = {
        let plan = plan.clone();
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Plan::progress_every(tty)).await;
                eprint!("{}", plan.progress(tty));
            }
        })
    };
    let mut tasks = Vec::new();
    for c in 0..plan.o.clients {
        let ch = chans[c % chans.len()].clone();
        let (plan, errors) = (plan.clone(), errors.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut hist = Histogram::<u64>::new(3).expect("valid precision");
            let mut rng = Plan::client_rng(c);
            while plan.take_one() {
                if !plan.o.workload.on_http() {
                    // The etcd data model's workloads.
                    let t = Instant::now();
                    let outcome = tokio::time::timeout(plan.o.timeout, op(&plan, &ch, &mut rng));
                    let outcome = outcome.await;
                    plan.finished_one();
                    match outcome {
                        Ok(Ok(done)) => {
                            plan.count(done);
                            let _ = hist.record((t.elapsed().as_micros() as u64).max(1));
                        }
                        Ok(Err(e)) => *errors.borrow_mut().entry(e).or_default() += 1,
                        Err(_) => *errors.borrow_mut().entry("timeout".into()).or_default() += 1,
                    }
                    continue;
                }
                let key = Bytes::from(plan.key(&mut rng).into_bytes());
                let read = plan.pick_read(&mut rng);
                let t = Instant::now();
                let call = async {
                    match read {
                        None => call::<_, PutResponse>(
                            &ch,
                            "/etcdserverpb.KV/Put",
                            PutRequest {
                                key,
                                value: Bytes::from(plan.value.clone().into_bytes()),
                                ..Default::default()
                            },
                        )
                        .await
                        .map(|_| ()),
                        Some(c) => call::<_, RangeResponse>(
                            &ch,
                            "/etcdserverpb.KV/Range",
                            RangeRequest {
                                key,
                                serializable: c == native::CONSISTENCY_EVENTUAL,
                                ..Default::default()
                            },
                        )
                        .await
                        .map(|_| ()),
                    }
                };
                let outcome = tokio::time::timeout(plan.o.timeout, call).await;
                plan.finished_one();
                match outcome {
                    Ok(Ok(())) => {
                        let _ = hist.record((t.elapsed().as_micros() as u64).max(1));
                    }
                    Ok(Err(e)) => *errors.borrow_mut().entry(e).or_default() += 1,
                    Err(_) => *errors.borrow_mut().entry("timeout".into()).or_default() += 1,
                }
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new(3).expect("valid precision");
    for t in tasks {
        let h = t.await.map_err(|e| format!("client task: {e}"))?;
        hist.add(&h)
            .map_err(|e| format!("merging histograms: {e}"))?;
    }
    progress.abort();
    if tty {
        eprintln!("{}", plan.progress(tty));
    }
    let errors = errors.borrow().clone();
    let mut r = report(&hist, t0.elapsed().as_secs_f64(), errors);
    r.conflicts = plan.conflicts();
    Ok(r)
}

/// One op of an etcd data model workload (the same requests as `bench::native_op`'s).
async fn op(plan: &Plan, ch: &Channel, rng: &mut Rng) -> Result<Done, String> {
    match plan.o.workload {
        Workload::TxnPut => {
            let key = plan.key(rng);
            let k = Bytes::from(key.clone().into_bytes());
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: COMPARE_EQUAL,
                    target: COMPARE_MOD,
                    key: k.clone(),
                    target_union: Some(TargetUnion::ModRevision(plan.known_mod_revision(&key))),
                    range_end: Bytes::new(),
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: k.clone(),
                        value: Bytes::from(plan.value.clone().into_bytes()),
                        ..Default::default()
                    })),
                }],
                failure: vec![RequestOp {
                    request: Some(Request::RequestRange(RangeRequest {
                        key: k,
                        ..Default::default()
                    })),
                }],
            };
            let r: TxnResponse = call(ch, "/etcdserverpb.KV/Txn", txn).await?;
            let rev = r.header.map_or(0, |h| h.revision);
            if r.succeeded {
                // The put's revision is the txn's: the key's new mod_revision.
                plan.saw_mod_revision(&key, rev, rev);
                return Ok(Done::Ok);
            }
            match r.responses.into_iter().next().and_then(|o| o.response) {
                Some(Response::ResponseRange(rr)) => {
                    let m = rr.kvs.first().map_or(0, |kv| kv.mod_revision);
                    plan.saw_mod_revision(&key, m, rev);
                    Ok(Done::Conflict)
                }
                _ => Err("txn failure without its range".into()),
            }
        }
        Workload::RangePrefix { consistency } => {
            let (key, range_end) = plan.prefix_range(rng);
            let req = RangeRequest {
                key: Bytes::from(key),
                range_end: Bytes::from(range_end),
                serializable: consistency == native::CONSISTENCY_EVENTUAL,
                ..Default::default()
            };
            let r: RangeResponse = call(ch, "/etcdserverpb.KV/Range", req).await?;
            plan.check_prefix(r.kvs.len())
        }
        Workload::LeasePut => {
            let key = lease_key_name(&plan.key(rng));
            let grant = LeaseGrantRequest {
                ttl: LEASE_TTL_SECS,
                id: 0,
            };
            let g: LeaseGrantResponse = call(ch, "/etcdserverpb.Lease/LeaseGrant", grant).await?;
            if !g.error.is_empty() {
                return Err(format!("lease grant: {}", g.error));
            }
            let put = PutRequest {
                key: Bytes::from(key.into_bytes()),
                value: Bytes::from(plan.value.clone().into_bytes()),
                lease: g.id,
                ..Default::default()
            };
            call::<_, PutResponse>(ch, "/etcdserverpb.KV/Put", put).await?;
            Ok(Done::Ok)
        }
        Workload::PopulatePrefixes => {
            let put = PutRequest {
                key: Bytes::from(plan.populate_key().into_bytes()),
                value: Bytes::from(plan.value.clone().into_bytes()),
                ..Default::default()
            };
            call::<_, PutResponse>(ch, "/etcdserverpb.KV/Put", put).await?;
            Ok(Done::Ok)
        }
        Workload::RevokeLeases => {
            let Some(id) = plan.next_lease() else {
                return Ok(Done::Ok);
            };
            let r = etcd_grpc::unary::<_, LeaseRevokeResponse>(
                ch,
                "/etcdserverpb.Lease/LeaseRevoke",
                LeaseRevokeRequest { id },
            )
            .await;
            match r {
                Ok(_) => Ok(Done::Ok),
                // Expired meanwhile: gone all the same.
                Err(e) if tonic::Code::from(e.code) == tonic::Code::NotFound => Ok(Done::Ok),
                Err(e) => Err(error_key(e)),
            }
        }
        Workload::Put | Workload::Range { .. } | Workload::Mixed { .. } => {
            unreachable!("served by the plain put/range path")
        }
    }
}

/// The untimed reads a workload needs before timing starts (as `bench::prepare_native`).
async fn prepare(o: &mut Options, ch: &Channel) -> Result<Prepared, String> {
    let mut p = Prepared::default();
    match o.workload {
        Workload::TxnPut => {
            let mut from = WARMUP_FIRST.to_vec();
            loop {
                let req = RangeRequest {
                    key: Bytes::from(from),
                    range_end: Bytes::from_static(WARMUP_END),
                    limit: WARMUP_PAGE,
                    keys_only: true,
                    ..Default::default()
                };
                let r: RangeResponse = call(ch, "/etcdserverpb.KV/Range", req)
                    .await
                    .map_err(|e| format!("reading the keys' revisions: {e}"))?;
                let rev = r.header.as_ref().map_or(0, |h| h.revision);
                for kv in &r.kvs {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    p.mod_revisions.push((key, kv.mod_revision, rev));
                }
                match r.kvs.last() {
                    Some(last) if r.more => from = after(&last.key),
                    _ => break,
                }
            }
        }
        Workload::RangePrefix { .. } => {
            let (key, range_end) = prefixes_range(o);
            let req = RangeRequest {
                key: Bytes::from(key),
                range_end: Bytes::from(range_end),
                count_only: true,
                ..Default::default()
            };
            let r: RangeResponse = call(ch, "/etcdserverpb.KV/Range", req)
                .await
                .map_err(|e| format!("counting the prefixes' keys: {e}"))?;
            check_populated(o, r.count)?;
        }
        Workload::RevokeLeases => {
            let r: LeaseLeasesResponse =
                call(ch, "/etcdserverpb.Lease/LeaseLeases", LeaseLeasesRequest {})
                    .await
                    .map_err(|e| format!("listing the leases: {e}"))?;
            p.leases = r.leases.into_iter().map(|l| l.id).collect();
            o.total = Some(p.leases.len() as u64);
            o.duration = None;
        }
        _ => {}
    }
    Ok(p)
}
