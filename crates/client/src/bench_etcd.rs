//! The etcd target of `ringkv bench` (feature `etcd`): the same closed loop against etcd's
//! v3 gRPC KV API, for side-by-side runs on one machine.
//!
//! Runs on its own single-threaded tokio runtime (as the ringkv targets run on one glommio
//! executor), `conns` gRPC channels (one HTTP/2 connection each) shared by the clients.
//! Message types are declared here with prost (the fields of etcd's rpc.proto that the
//! bench uses; others are skipped on decode), so no protoc is needed. Writes (puts, txns,
//! lease grants and revokes) go to the leader (found with Maintenance/Status), reads to
//! every endpoint. Never retries.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use hdrhistogram::Histogram;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::bench::{
    Done, LEASE_TTL_SECS, Options, Plan, Prepared, Report, WARMUP_END, WARMUP_FIRST, WARMUP_PAGE,
    Workload, after, check_populated, lease_key_name, prefixes_range, report,
};
use ringkv_proto::native;
use ringkv_rng::Rng;

// Field numbers are etcd's (api/etcdserverpb/rpc.proto, and mvccpb's kv.proto for
// KeyValue); fields the bench never sets or reads are left out (prost skips unknown
// fields on decode, and proto3 never encodes a field at its default).

/// rpc.proto `PutRequest`: key = 1, value = 2, lease = 3.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub lease: i64,
}

/// rpc.proto `PutResponse` (header = 1 and prev_kv = 2 not read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {}

/// rpc.proto `RangeRequest`: key = 1, range_end = 2, limit = 3, serializable = 7,
/// keys_only = 8, count_only = 9 (revision = 4, the sorts and the min/max filters not
/// used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    /// etcd's serializable read: served by the member without a quorum round.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
    #[prost(bool, tag = "8")]
    pub keys_only: bool,
    #[prost(bool, tag = "9")]
    pub count_only: bool,
}

/// rpc.proto `RangeResponse` as the single-key `range` and `mixed` rows read it: count = 4
/// only (the key-value pairs are skipped on decode).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// rpc.proto `RangeResponse` whole, as the etcd data model workloads read it:
/// header = 1, kvs = 2, more = 3, count = 4.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeKvsResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// kv.proto `mvccpb.KeyValue`: key = 1, create_revision = 2, mod_revision = 3,
/// version = 4, value = 5, lease = 6.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// rpc.proto `Compare.CompareResult`: EQUAL = 0 (GREATER = 1, LESS = 2, NOT_EQUAL = 3).
pub const COMPARE_EQUAL: i32 = 0;
/// rpc.proto `Compare.CompareTarget`: MOD = 2 (VERSION = 0, CREATE = 1, VALUE = 3,
/// LEASE = 4).
pub const COMPARE_MOD: i32 = 2;

/// rpc.proto `Compare`: result = 1, target = 2, key = 3, the oneof target_union
/// (version = 4, create_revision = 5, mod_revision = 6, value = 7, lease = 8),
/// range_end = 64.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Compare {
    #[prost(int32, tag = "1")]
    pub result: i32,
    #[prost(int32, tag = "2")]
    pub target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    #[prost(oneof = "TargetUnion", tags = "4, 5, 6, 7, 8")]
    pub target_union: Option<TargetUnion>,
    #[prost(bytes = "vec", tag = "64")]
    pub range_end: Vec<u8>,
}

/// rpc.proto `Compare.target_union`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum TargetUnion {
    #[prost(int64, tag = "4")]
    Version(i64),
    #[prost(int64, tag = "5")]
    CreateRevision(i64),
    #[prost(int64, tag = "6")]
    ModRevision(i64),
    #[prost(bytes, tag = "7")]
    Value(Vec<u8>),
    #[prost(int64, tag = "8")]
    Lease(i64),
}

/// rpc.proto `RequestOp`: the oneof request (request_range = 1, request_put = 2;
/// request_delete_range = 3 and request_txn = 4 not used by the bench).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    #[prost(oneof = "Request", tags = "1, 2")]
    pub request: Option<Request>,
}

/// rpc.proto `RequestOp.request`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    #[prost(message, tag = "1")]
    RequestRange(RangeRequest),
    #[prost(message, tag = "2")]
    RequestPut(PutRequest),
}

/// rpc.proto `ResponseOp`: the oneof response (response_range = 1, response_put = 2;
/// response_delete_range = 3 and response_txn = 4 are skipped on decode).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseOp {
    #[prost(oneof = "Response", tags = "1, 2")]
    pub response: Option<Response>,
}

/// rpc.proto `ResponseOp.response`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Response {
    #[prost(message, tag = "1")]
    ResponseRange(RangeKvsResponse),
    #[prost(message, tag = "2")]
    ResponsePut(PutResponse),
}

/// rpc.proto `TxnRequest`: compare = 1, success = 2, failure = 3.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

/// rpc.proto `TxnResponse`: header = 1, succeeded = 2, responses = 3.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
    #[prost(message, repeated, tag = "3")]
    pub responses: Vec<ResponseOp>,
}

/// rpc.proto `LeaseGrantRequest`: TTL = 1, ID = 2 (0: the lessor chooses).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    #[prost(int64, tag = "2")]
    pub id: i64,
}

/// rpc.proto `LeaseGrantResponse`: header = 1, ID = 2, TTL = 3, error = 4.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    #[prost(string, tag = "4")]
    pub error: String,
}

/// rpc.proto `LeaseRevokeRequest`: ID = 1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeRequest {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// rpc.proto `LeaseRevokeResponse` (header = 1 not read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeResponse {}

/// rpc.proto `LeaseLeasesRequest` (no fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseLeasesRequest {}

/// rpc.proto `LeaseStatus`: ID = 1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseStatus {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// rpc.proto `LeaseLeasesResponse`: header = 1, leases = 2.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseLeasesResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub leases: Vec<LeaseStatus>,
}

/// rpc.proto `StatusRequest` (no fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

/// rpc.proto `ResponseHeader`: member_id = 2, revision = 3 (cluster_id = 1 and
/// raft_term = 4 not read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

/// rpc.proto `StatusResponse`: header = 1, leader = 4.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
}

async fn unary<Q, R>(ch: &Channel, path: &'static str, req: Q) -> Result<R, String>
where
    Q: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
    let codec = tonic_prost::ProstCodec::<Q, R>::default();
    grpc.unary(
        tonic::Request::new(req),
        PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(|r| r.into_inner())
    .map_err(|s| format!("grpc {:?}", s.code()))
}

async fn connect(addr: SocketAddr) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// The endpoint of the member that leads.
async fn leader(endpoints: &[SocketAddr]) -> Result<SocketAddr, String> {
    let mut ids = Vec::new();
    let mut leader = 0;
    for e in endpoints {
        let ch = connect(*e).await?;
        let st: StatusResponse =
            unary(&ch, "/etcdserverpb.Maintenance/Status", StatusRequest {}).await?;
        ids.push((st.header.map_or(0, |h| h.member_id), *e));
        leader = st.leader;
    }
    ids.iter()
        .find(|(id, _)| *id == leader && leader != 0)
        .map(|(_, e)| *e)
        .ok_or_else(|| "no etcd member reports a leader among the endpoints".to_string())
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
                let key = plan.key(&mut rng).into_bytes();
                let read = plan.pick_read(&mut rng);
                let t = Instant::now();
                let call = async {
                    match read {
                        None => unary::<_, PutResponse>(
                            &ch,
                            "/etcdserverpb.KV/Put",
                            PutRequest {
                                key,
                                value: plan.value.clone().into_bytes(),
                                ..Default::default()
                            },
                        )
                        .await
                        .map(|_| ()),
                        Some(c) => unary::<_, RangeResponse>(
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
            let k = key.clone().into_bytes();
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: COMPARE_EQUAL,
                    target: COMPARE_MOD,
                    key: k.clone(),
                    target_union: Some(TargetUnion::ModRevision(plan.known_mod_revision(&key))),
                    range_end: Vec::new(),
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: k.clone(),
                        value: plan.value.clone().into_bytes(),
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
            let r: TxnResponse = unary(ch, "/etcdserverpb.KV/Txn", txn).await?;
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
                key,
                range_end,
                serializable: consistency == native::CONSISTENCY_EVENTUAL,
                ..Default::default()
            };
            let r: RangeKvsResponse = unary(ch, "/etcdserverpb.KV/Range", req).await?;
            plan.check_prefix(r.kvs.len())
        }
        Workload::LeasePut => {
            let key = lease_key_name(&plan.key(rng));
            let grant = LeaseGrantRequest {
                ttl: LEASE_TTL_SECS,
                id: 0,
            };
            let g: LeaseGrantResponse = unary(ch, "/etcdserverpb.Lease/LeaseGrant", grant).await?;
            if !g.error.is_empty() {
                return Err(format!("lease grant: {}", g.error));
            }
            let put = PutRequest {
                key: key.into_bytes(),
                value: plan.value.clone().into_bytes(),
                lease: g.id,
            };
            unary::<_, PutResponse>(ch, "/etcdserverpb.KV/Put", put).await?;
            Ok(Done::Ok)
        }
        Workload::PopulatePrefixes => {
            let put = PutRequest {
                key: plan.populate_key().into_bytes(),
                value: plan.value.clone().into_bytes(),
                ..Default::default()
            };
            unary::<_, PutResponse>(ch, "/etcdserverpb.KV/Put", put).await?;
            Ok(Done::Ok)
        }
        Workload::RevokeLeases => {
            let Some(id) = plan.next_lease() else {
                return Ok(Done::Ok);
            };
            let r = unary::<_, LeaseRevokeResponse>(
                ch,
                "/etcdserverpb.Lease/LeaseRevoke",
                LeaseRevokeRequest { id },
            )
            .await;
            match r {
                Ok(_) => Ok(Done::Ok),
                // Expired meanwhile: gone all the same.
                Err(e) if e == "grpc NotFound" => Ok(Done::Ok),
                Err(e) => Err(e),
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
                    key: from,
                    range_end: WARMUP_END.to_vec(),
                    limit: WARMUP_PAGE,
                    keys_only: true,
                    ..Default::default()
                };
                let r: RangeKvsResponse = unary(ch, "/etcdserverpb.KV/Range", req)
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
                key,
                range_end,
                count_only: true,
                ..Default::default()
            };
            let r: RangeKvsResponse = unary(ch, "/etcdserverpb.KV/Range", req)
                .await
                .map_err(|e| format!("counting the prefixes' keys: {e}"))?;
            check_populated(o, r.count)?;
        }
        Workload::RevokeLeases => {
            let r: LeaseLeasesResponse =
                unary(ch, "/etcdserverpb.Lease/LeaseLeases", LeaseLeasesRequest {})
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
