//! A raw gRPC client of etcd's v3 API (feature `etcd`): tonic channels and calls by path
//! with `ringkv_proto::etcdpb` messages, for tools that must see every field of a reply
//! (the bench's etcd target, the differential tester).
//!
//! Runs on the caller's tokio runtime (current-thread in every tool here). Must not touch
//! anything but its channel.

use std::net::SocketAddr;

use ringkv_proto::etcdpb as pb;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// A failed call as a client sees it: gRPC code (number) and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}: {}", self.code, self.message)
    }
}

impl From<tonic::Status> for CallError {
    fn from(s: tonic::Status) -> Self {
        CallError {
            code: s.code() as i32,
            message: s.message().to_string(),
        }
    }
}

/// A channel (one HTTP/2 connection) to `addr`.
pub async fn connect(addr: SocketAddr) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// One unary call of `path` (e.g. `/etcdserverpb.KV/Put`).
pub async fn unary<Q, R>(ch: &Channel, path: &'static str, req: Q) -> Result<R, CallError>
where
    Q: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    unary_with(ch, path, req, &[], None).await
}

/// `unary` with request metadata (e.g. etcd's `hasleader: true`) and a deadline (sent as
/// `grpc-timeout`).
pub async fn unary_with<Q, R>(
    ch: &Channel,
    path: &'static str,
    req: Q,
    metadata: &[(&'static str, &'static str)],
    timeout: Option<std::time::Duration>,
) -> Result<R, CallError>
where
    Q: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.map_err(|e| CallError {
        code: tonic::Code::Unavailable as i32,
        message: format!("not ready: {e}"),
    })?;
    let codec = tonic_prost::ProstCodec::<Q, R>::default();
    let mut r = tonic::Request::new(req);
    for (k, v) in metadata {
        r.metadata_mut()
            .insert(*k, tonic::metadata::MetadataValue::from_static(v));
    }
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    grpc.unary(r, PathAndQuery::from_static(path), codec)
        .await
        .map(|r| r.into_inner())
        .map_err(CallError::from)
}

/// etcd's KeepAliveOnce: a LeaseKeepAlive stream opened, one request sent, its one reply
/// read, the stream closed (etcd's benchmark tool does this per request).
pub async fn keep_alive_once(
    ch: &Channel,
    id: i64,
) -> Result<pb::LeaseKeepAliveResponse, CallError> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.map_err(|e| CallError {
        code: tonic::Code::Unavailable as i32,
        message: format!("not ready: {e}"),
    })?;
    let codec =
        tonic_prost::ProstCodec::<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>::default();
    let reqs = tonic::codegen::tokio_stream::iter([pb::LeaseKeepAliveRequest { id }]);
    let mut replies = grpc
        .streaming(
            tonic::Request::new(reqs),
            PathAndQuery::from_static("/etcdserverpb.Lease/LeaseKeepAlive"),
            codec,
        )
        .await?
        .into_inner();
    match replies.message().await? {
        Some(r) => Ok(r),
        None => Err(CallError {
            code: tonic::Code::Internal as i32,
            message: "the keep-alive stream ended without a reply".into(),
        }),
    }
}

/// The endpoint of the member that leads (asked with Maintenance/Status).
pub async fn leader(endpoints: &[SocketAddr]) -> Result<SocketAddr, String> {
    let mut ids = Vec::new();
    let mut leader = 0;
    for e in endpoints {
        let ch = connect(*e).await?;
        let st: pb::StatusResponse = unary(
            &ch,
            "/etcdserverpb.Maintenance/Status",
            pb::StatusRequest {},
        )
        .await
        .map_err(|err| format!("status of {e}: {err}"))?;
        ids.push((st.header.map_or(0, |h| h.member_id), *e));
        leader = st.leader;
    }
    ids.iter()
        .find(|(id, _)| *id == leader && leader != 0)
        .map(|(_, e)| *e)
        .ok_or_else(|| "no member reports a leader among the endpoints".to_string())
}
