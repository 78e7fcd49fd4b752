//! Client connections of one shard: accepting, classifying and serving them.
//!
//! Owns `Conns`: the shard's SO_REUSEPORT listener loop, the sniffing of each accepted
//! connection's first bytes (a frame header naming a peer handshake, which goes to the
//! raft core unread past it; a native client; anything else is HTTP), the shard's share of
//! `limits.connections_max` and the rate-limited warning about refusals, the HTTP loop
//! (keep-alive, idle and read timeouts) and the native loop (pipelined frames carried out
//! concurrently under `NATIVE_INFLIGHT_MAX` permits, replies batched by a writer task),
//! with their protocol limits (`HttpLimits`, `frame_bytes_max`) and the network metrics.
//! Requests become `ApiCall`s here (the HTTP parser's, or `native_call`) and their
//! outcomes are rendered here; carrying them out is `calls`'. etcd's JSON gateway calls
//! (`/v3/` paths) are transcoded here (`net::gateway`) and carried out by the gRPC service
//! (`grpc`), so they answer as the gRPC calls do.
//!
//! Runs on its shard's executor (which the raft core may share, in another task queue):
//! every loop waits on its socket, and nothing runs long between waits. Must not touch
//! Raft state (peer connections are handed over through the raft core's queue, client
//! calls go through `Calls`) or the key-value state.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};

use super::ToRaft;
use super::calls::Calls;
use super::grpc::Grpc;
use super::shard::Senders;
use crate::config::NodeConfig;
use crate::metrics::{ConnKind, NetMetrics, Traffic};
use crate::net::gateway::{self, GatewayCall, Kind};
use crate::net::http::{self, ApiCall, HttpCall, HttpLimits, Parsed};
use ringkv_proto::etcdpb as pb;
use ringkv_proto::frame::{FrameHeader, FrameKind, HEADER_BYTES, MAGIC};
use ringkv_proto::grpc::{Code, Status};
use ringkv_proto::outcome::{ApiError, Outcome};
use ringkv_proto::{jsonpb, native};
use ringkv_raft::ReadPolicy;

/// Requests of one native connection carried out at once; more wait to be read.
const NATIVE_INFLIGHT_MAX: usize = 1024;
/// Receive buffer of a native connection (many small pipelined frames per receive; kept
/// small since every open connection holds one).
const NATIVE_READ_BUFFER_BYTES: usize = 16 << 10;

/// A keep-alive connection may idle this long between requests.
const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Within a request (and for a new connection's first bytes), the longest silence.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// At most one warning about refusals of one kind per this long.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// One shard's client connections: their limits, count and metrics, and where their
/// calls and peer handovers go.
pub(super) struct Conns {
    idx: usize,
    /// Carries out the calls of client connections.
    calls: Rc<Calls>,
    /// Peer connections go to the raft core through its queue.
    out: Rc<Senders>,
    limits: HttpLimits,
    frame_bytes_max: usize,
    /// Open client connections on this shard, and its share of `limits.connections_max`.
    connections: Cell<usize>,
    connections_max: usize,
    /// Connections refused over `connections_max`.
    refused: Refusals,
    net: NetMetrics,
    /// etcd's gRPC API, for connections that open with the HTTP/2 preface.
    grpc: Rc<Grpc>,
}

impl Conns {
    pub(super) fn new(
        idx: usize,
        n: usize,
        cfg: &NodeConfig,
        calls: Rc<Calls>,
        out: Rc<Senders>,
    ) -> Conns {
        let limits = HttpLimits {
            head_bytes_max: 16 << 10,
            body_bytes_max: cfg.limits.key_bytes_max * 2 + cfg.limits.value_bytes_max * 2 + 1024,
            key_bytes_max: cfg.limits.key_bytes_max,
            value_bytes_max: cfg.limits.value_bytes_max,
        };
        let grpc = Rc::new(Grpc {
            calls: calls.clone(),
            limits,
            message_bytes_max: cfg.limits.frame_bytes_max,
            net: Rc::new(NetMetrics::new()),
            idx,
            snapshots_dir: cfg.data_dir().join("snapshots"),
            cluster_token: cfg.cluster.cluster_token.clone(),
        });
        Conns {
            idx,
            calls,
            out,
            limits,
            frame_bytes_max: cfg.limits.frame_bytes_max,
            connections: Cell::new(0),
            connections_max: cfg.limits.connections_max.div_ceil(n),
            refused: Refusals::default(),
            net: NetMetrics::new(),
            grpc,
        }
    }

    /// Accepts connections for ever, each served by a task of its own.
    pub(super) async fn accept(self: Rc<Self>, listener: TcpListener) {
        loop {
            let s = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors, usually: back off instead of spinning.
                    tracing::warn!(shard = self.idx, "accept failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let conns = self.clone();
            glommio::spawn_local(async move { conns.connection(s).await }).detach();
        }
    }

    async fn connection(self: Rc<Self>, mut s: TcpStream) {
        let mut first = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match read_within(&mut s, &mut first[got..], HTTP_READ_TIMEOUT).await {
                Some(n) if n > 0 => got += n,
                _ => return, // closed, failed or silent
            }
        }
        let native = if first == MAGIC {
            // A frame: its first header says peer (handshake) or native client.
            let mut h = [0u8; HEADER_BYTES];
            h[..4].copy_from_slice(&first);
            let mut got = 4;
            while got < HEADER_BYTES {
                match read_within(&mut s, &mut h[got..], HTTP_READ_TIMEOUT).await {
                    Some(n) if n > 0 => got += n,
                    _ => return,
                }
            }
            match FrameHeader::decode(&h, self.frame_bytes_max) {
                Ok(hdr) if hdr.kind == FrameKind::Handshake => {
                    // A peer: the raft core owns peer connections (they do not count
                    // against connections_max). Hand over a duplicate of the descriptor;
                    // this executor's stream object closes its own copy.
                    // SAFETY: the descriptor is open for as long as `s` lives.
                    let fd = unsafe { BorrowedFd::borrow_raw(s.as_raw_fd()) }.try_clone_to_owned();
                    drop(s);
                    match fd {
                        Ok(fd) => {
                            let _ = self
                                .out
                                .to_raft
                                .send(ToRaft::PeerConn { fd, first: h })
                                .await;
                        }
                        Err(e) => {
                            tracing::warn!(
                                shard = self.idx,
                                "cannot hand a peer connection over: {e}"
                            )
                        }
                    }
                    return;
                }
                Ok(hdr) if hdr.kind == FrameKind::Client => Some(hdr),
                Ok(hdr) => {
                    tracing::warn!(shard = self.idx, kind = ?hdr.kind, "refused a connection opening with an unexpected frame");
                    NetMetrics::refused("unexpected_frame");
                    return;
                }
                Err(e) => {
                    let why = match e {
                        ringkv_proto::frame::FrameError::TooLarge { .. } => "too_large",
                        _ => "bad_header",
                    };
                    tracing::warn!(
                        shard = self.idx,
                        "refused frame input ({why}: {e:?}); connection closed"
                    );
                    NetMetrics::refused(why);
                    return;
                }
            }
        } else {
            None
        };
        if self.connections.get() >= self.connections_max {
            NetMetrics::refused("connections_max");
            if let Some(refused) = self.refused.count() {
                tracing::warn!(
                    shard = self.idx,
                    refused,
                    "limits.connections_max reached ({} per shard): refusing new client connections",
                    self.connections_max
                );
            }
            if native.is_none() {
                let out = http::outcome_response(&Err(ApiError::TooManyConnections), true);
                let _ = s.write_all(&out).await;
            }
            return;
        }
        self.connections.set(self.connections.get() + 1);
        match native {
            Some(hdr) => {
                let _open = self.net.open(ConnKind::Native);
                self.clone().serve_native(s, hdr).await
            }
            // HTTP/2's client preface ("PRI * HTTP/2.0..."): a gRPC client.
            None if &first == b"PRI " => {
                let _open = self.net.open(ConnKind::Grpc);
                self.grpc.clone().serve(s, first, HTTP_READ_TIMEOUT).await
            }
            None => {
                let _open = self.net.open(ConnKind::Http);
                self.net.received(Traffic::Http, 0, first.len() as u64);
                self.clone().serve_http(s, first.to_vec()).await
            }
        }
        self.connections.set(self.connections.get() - 1);
    }

    /// A native client connection: requests are read continuously and carried out
    /// concurrently (at most `NATIVE_INFLIGHT_MAX` per connection); replies go back as they
    /// complete, tagged with their request id.
    async fn serve_native(self: Rc<Self>, s: TcpStream, first: FrameHeader) {
        let (rd, mut wr) = futures_lite::io::split(s);
        // Pipelined frames arrive back to back: one receive takes many of them.
        let mut rd = futures_lite::io::BufReader::with_capacity(NATIVE_READ_BUFFER_BYTES, rd);
        let (tx, rx) = local_channel::new_bounded::<(u64, Outcome)>(NATIVE_INFLIGHT_MAX);
        let me = self.clone();
        let writer = glommio::spawn_local(async move {
            // Replies ready together go out in one write.
            let mut out = Vec::new();
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                let mut frames = 0;
                while let Some((id, outcome)) = next.take() {
                    frames += 1;
                    let body = native::encode(&native::Response { id, outcome });
                    out.extend_from_slice(
                        &FrameHeader::for_body(FrameKind::Client, &body).encode(),
                    );
                    out.extend_from_slice(&body);
                    if out.len() < 1 << 20
                        && let Some(Some(more)) = futures_lite::future::poll_once(rx.recv()).await
                    {
                        next = Some(more);
                    }
                }
                if wr.write_all(&out).await.is_err() {
                    return;
                }
                me.net.sent(Traffic::Native, frames, out.len() as u64);
                out.clear();
            }
            let _ = wr.flush().await;
        });
        let tx = Rc::new(tx);
        let permits = Rc::new(glommio::sync::Semaphore::new(NATIVE_INFLIGHT_MAX as u64));
        let mut hdr = Some(first);
        loop {
            let h = match hdr.take() {
                Some(h) => h,
                None => {
                    let mut b = [0u8; HEADER_BYTES];
                    if rd.buffer().len() >= HEADER_BYTES {
                        // Already received: no idle timer to arm (and cancel) per frame.
                        if rd.read_exact(&mut b).await.is_err() {
                            break;
                        }
                    } else {
                        let idle = futures_lite::future::or(
                            async { rd.read_exact(&mut b).await.is_ok() },
                            async {
                                glommio::timer::sleep(HTTP_IDLE_TIMEOUT).await;
                                false
                            },
                        );
                        if !idle.await {
                            break;
                        }
                    }
                    match FrameHeader::decode(&b, self.frame_bytes_max) {
                        Ok(h) if h.kind == FrameKind::Client => h,
                        _ => break, // cannot re-synchronise: close
                    }
                }
            };
            let mut body = rkyv::util::AlignedVec::<16>::with_capacity(h.body_bytes as usize);
            body.resize(h.body_bytes as usize, 0);
            // A body must follow its header promptly: a client that stalls mid-frame does
            // not keep its connection (and the buffer its header asked for).
            // (No timer to arm when the body is already received, as it usually is.)
            let whole = rd.buffer().len() >= body.len();
            let read =
                futures_lite::future::or(async { rd.read_exact(&mut body).await.is_ok() }, async {
                    if whole {
                        std::future::pending::<()>().await;
                    }
                    glommio::timer::sleep(HTTP_READ_TIMEOUT).await;
                    false
                });
            if !read.await || h.check_body(&body).is_err() {
                break;
            }
            self.net
                .received(Traffic::Native, 1, (HEADER_BYTES + body.len()) as u64);
            let req = match native::decode_request(&body) {
                Ok(r) => r,
                Err(_) => break,
            };
            let Ok(permit) = permits.acquire_static_permit(1).await else {
                break;
            };
            let id = req.id();
            let call = native_call(req, &self.limits);
            let (calls, tx) = (self.calls.clone(), tx.clone());
            glommio::spawn_local(async move {
                let r = match call {
                    Ok(call) => calls.handle(call).await,
                    Err(e) => Err(e),
                };
                let _ = tx.send((id, r)).await;
                drop(permit);
            })
            .detach();
        }
        drop(tx);
        writer.await;
    }

    async fn serve_http(self: Rc<Self>, mut s: TcpStream, first: Vec<u8>) {
        let mut buf = first;
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            match http::parse(&buf, &self.limits) {
                Parsed::Incomplete => {
                    // Between requests a keep-alive connection may idle; inside one the
                    // client must keep sending.
                    let limit = if buf.is_empty() {
                        HTTP_IDLE_TIMEOUT
                    } else {
                        HTTP_READ_TIMEOUT
                    };
                    match read_within(&mut s, &mut chunk, limit).await {
                        Some(n) if n > 0 => {
                            self.net.received(Traffic::Http, 0, n as u64);
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        _ => return,
                    }
                }
                Parsed::Fatal(e) => {
                    let out = e.reply(true);
                    self.net.sent(Traffic::Http, 0, out.len() as u64);
                    let _ = s.write_all(&out).await;
                    return;
                }
                Parsed::Request {
                    consumed,
                    call,
                    keep_alive,
                } => {
                    buf.drain(..consumed);
                    let out = match call {
                        Err(e) => e.reply(!keep_alive),
                        Ok(HttpCall::Api(call)) => {
                            let r = self.calls.handle(call).await;
                            http::outcome_response(&r, !keep_alive)
                        }
                        Ok(HttpCall::Gateway(call)) => {
                            let r = self.gateway(call).await;
                            http::response_with(r.status, r.content_type, &r.body, !keep_alive)
                        }
                    };
                    self.net.sent(Traffic::Http, 0, out.len() as u64);
                    if s.write_all(&out).await.is_err() || !keep_alive {
                        return;
                    }
                }
            }
        }
    }

    /// A gateway call, carried out by the gRPC service: JSON to protobuf, the call, the
    /// reply to JSON.
    async fn gateway(&self, call: GatewayCall) -> gateway::Reply {
        let (method, body) = match call {
            GatewayCall::NotServed { status } => return gateway::not_served(status),
            GatewayCall::Call { method, body } => (method, body),
        };
        match method.kind {
            Kind::Unary { request, reply } => {
                let r = match request(&body) {
                    Ok(msg) => match self.grpc.unary(method.grpc, msg).await {
                        Ok(framed) => gateway::unframe(&framed).and_then(reply),
                        Err(s) => Err(s),
                    },
                    Err(s) => Err(s),
                };
                gateway::unary_reply(r)
            }
            Kind::KeepAlive => {
                let mut answers = Vec::new();
                let mut end = None;
                for (i, v) in jsonpb::values(&body).enumerate() {
                    let id = match v.and_then(jsonpb::from_value::<pb::LeaseKeepAliveRequest>) {
                        Ok(r) => r.id,
                        Err(e) if i == 0 => return gateway::stream_refused(e),
                        // Later requests that do not decode end the requests, not the
                        // stream (etcd's gateway stops sending).
                        Err(_) => break,
                    };
                    match self.grpc.keep_alive_once(id).await {
                        Ok(a) => answers.push(a),
                        Err(s) => {
                            end = Some(s);
                            break;
                        }
                    }
                }
                gateway::stream_reply(&answers, end.as_ref())
            }
            Kind::Refused => {
                let end = match self.grpc.unary(method.grpc, Bytes::new()).await {
                    Err(s) => s,
                    Ok(_) => Status::new(
                        Code::Unimplemented,
                        "ringkv: the gateway does not stream this method",
                    ),
                };
                gateway::stream_reply::<pb::HeaderResponse>(&[], Some(&end))
            }
        }
    }
}

/// The call a native request asks for, or why it is refused (checked as the HTTP parser
/// checks its requests: such refusals are answered without being carried out or counted).
fn native_call(req: native::Request, limits: &HttpLimits) -> Result<ApiCall, ApiError> {
    use crate::net::call::{check_command, check_range};
    let key_ok = |k: &[u8]| {
        if k.is_empty() {
            Err(ApiError::bad_request("empty key"))
        } else if k.len() > limits.key_bytes_max {
            Err(ApiError::too_large(format!(
                "key of {} bytes is over key_bytes_max ({})",
                k.len(),
                limits.key_bytes_max
            )))
        } else {
            Ok(())
        }
    };
    // Keys and values are bytes: no UTF-8 requirement (the native protocol carries
    // them as they are).
    Ok(match req {
        native::Request::Put { key, value, .. } => {
            key_ok(&key)?;
            if value.len() > limits.value_bytes_max {
                return Err(ApiError::too_large(format!(
                    "value of {} bytes is over value_bytes_max ({})",
                    value.len(),
                    limits.value_bytes_max
                )));
            }
            ApiCall::Put {
                key: Bytes::from(key),
                value: Bytes::from(value),
            }
        }
        native::Request::Get {
            key, consistency, ..
        } => {
            key_ok(&key)?;
            ApiCall::Get {
                key: Bytes::from(key),
                consistency: consistency_of(consistency)?,
            }
        }
        native::Request::Delete { key, .. } => {
            key_ok(&key)?;
            ApiCall::Delete {
                key: Bytes::from(key),
            }
        }
        native::Request::Status { .. } => ApiCall::Status,
        native::Request::Admin { op, token, .. } => ApiCall::Admin { op, token },
        native::Request::Write { command, .. } => {
            let command = Bytes::from(command);
            let cmd = crate::shard::Command::decode(&command)
                .map_err(|e| ApiError::bad_request(format!("command: {}", e.0)))?;
            check_command(&cmd, limits)?;
            ApiCall::Write { command }
        }
        native::Request::Range {
            request,
            consistency,
            ..
        } => {
            let req = ringkv_store::decode_range(&Bytes::from(request))
                .map_err(|e| ApiError::bad_request(format!("range: {}", e.0)))?;
            check_range(&req, limits)?;
            ApiCall::Range {
                req: Box::new(req),
                consistency: consistency_of(consistency)?,
            }
        }
        native::Request::LeaseKeepAlive { lease, .. } => ApiCall::LeaseKeepAlive { lease },
        native::Request::LeaseTimeToLive { lease, keys, .. } => {
            ApiCall::LeaseTimeToLive { lease, keys }
        }
        native::Request::LeaseLeases { .. } => ApiCall::LeaseLeases,
        native::Request::Hash { revision, .. } => ApiCall::Hash { revision },
    })
}

/// A native request's consistency byte.
fn consistency_of(c: u8) -> Result<Option<ReadPolicy>, ApiError> {
    Ok(match c {
        native::CONSISTENCY_DEFAULT => None,
        native::CONSISTENCY_LINEARIZABLE => Some(ReadPolicy::Linearizable),
        native::CONSISTENCY_LEASE => Some(ReadPolicy::Lease),
        native::CONSISTENCY_EVENTUAL => Some(ReadPolicy::Eventual),
        other => {
            return Err(ApiError::bad_request(format!(
                "consistency {other} is unknown"
            )));
        }
    })
}

/// Refusals of one kind on one shard, and when the last warning about them went out: a
/// flood of refusals makes one warning per `REFUSAL_LOG_EVERY`, counting those since the
/// one before.
#[derive(Default)]
pub(super) struct Refusals {
    /// Refusals since the last warning.
    since_warning: Cell<u64>,
    last_warning: Cell<Option<Instant>>,
}

impl Refusals {
    /// Counts a refusal. When a warning is due, returns the refusals it reports (this one
    /// included) and starts counting again.
    pub(super) fn count(&self) -> Option<u64> {
        let n = self.since_warning.get() + 1;
        if self
            .last_warning
            .get()
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY)
        {
            self.last_warning.set(Some(Instant::now()));
            self.since_warning.set(0);
            Some(n)
        } else {
            self.since_warning.set(n);
            None
        }
    }
}

/// Reads into `buf` unless `limit` passes first (then `None`).
pub(super) async fn read_within(
    s: &mut TcpStream,
    buf: &mut [u8],
    limit: Duration,
) -> Option<usize> {
    futures_lite::future::or(async { s.read(buf).await.ok() }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// A listener sharing `addr` with the other shards (SO_REUSEPORT: the kernel spreads
/// connections over them) that a restarted node can bind despite its old connections in
/// TIME_WAIT (SO_REUSEADDR, inherited by accepted sockets).
pub(super) fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    // SAFETY: a listening socket we own, handed over once.
    Ok(unsafe { TcpListener::from_raw_fd(s.into_raw_fd()) })
}
