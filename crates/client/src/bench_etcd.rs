//! The etcd target of `ringkv bench` (feature `etcd`): the same closed loop against etcd's
//! v3 gRPC KV API, for side-by-side runs on one machine.
//!
//! Runs on its own single-threaded tokio runtime (as the ringkv targets run on one glommio
//! executor), `conns` gRPC channels (one HTTP/2 connection each) shared by the clients.
//! Message types are declared here with prost (the fields of etcd's rpc.proto that the
//! bench uses; others are skipped on decode), so no protoc is needed. Puts go to the
//! leader (found with Maintenance/Status), reads to every endpoint. Never retries.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use hdrhistogram::Histogram;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::bench::{Options, Plan, Report, Workload, report};
use ringkv_proto::native;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// etcd's serializable read: served by the member without a quorum round.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(int64, tag = "4")]
    pub count: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
}

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
        Workload::Range { consistency } | Workload::Mixed { consistency, .. }
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

async fn run_local(o: Options) -> Result<Report, String> {
    let targets: Vec<SocketAddr> = if matches!(o.workload, Workload::Put) {
        vec![leader(&o.endpoints).await?]
    } else {
        o.endpoints.clone()
    };
    let mut chans = Vec::new();
    for i in 0..o.conns {
        chans.push(connect(targets[i % targets.len()]).await?);
    }
    let plan = Rc::new(Plan::new(o));
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
    Ok(report(&hist, t0.elapsed().as_secs_f64(), errors))
}
