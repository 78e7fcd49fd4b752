//! etcd's v3 gRPC API on a shard's client connections: cleartext HTTP/2 (h2c) on the
//! node's one port.
//!
//! Owns the gRPC connections `conn` hands over (those opening with the HTTP/2 preface):
//! the HTTP/2 connection (h2, driven by this connection's task), one task per call, the
//! gRPC framing of requests and replies, `grpc-timeout` and `hasleader`, and the mapping
//! of each etcd method onto the node's calls (`Calls::handle`, the same path the native
//! and HTTP APIs take) and of their outcomes onto etcd's response messages and error
//! statuses. Watch answers Unimplemented until the watch issue lands. The JSON gateway's
//! calls (`conn`, `/v3/` paths) are carried out here too, by `unary` and
//! `keep_alive_once`.
//!
//! Runs on its shard's executor: a call is carried out where its connection is, with no
//! hop to another thread. Must not touch Raft state or the key-value state other than
//! through `Calls`.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderValue, Request, Response};
use prost::Message;
use sha2::{Digest, Sha256};

use super::calls::Calls;
use crate::metrics::{NetMetrics, Traffic};
use crate::net::call::{check_command, check_range};
use crate::net::etcd;
use crate::net::h2c::Inbound;
use crate::net::http::{ApiCall, HttpLimits};
use crate::shard::Command;
use ringkv_proto::admin::AdminOp;
use ringkv_proto::etcdpb as pb;
use ringkv_proto::grpc::{self, Code, Deframer, Status, frame, percent_encode};
use ringkv_proto::outcome::{Answer, ApiError, MemberRole as StatusMemberRole, NodeRole};
use ringkv_raft::ReadPolicy;
use ringkv_store::Response as StoreResponse;

/// Calls one gRPC connection may have open at once (its SETTINGS_MAX_CONCURRENT_STREAMS;
/// a client queues the rest).
pub(super) const GRPC_STREAMS_MAX: u32 = 1024;
/// Bytes a stream may send before this node reads them (HTTP/2 flow control).
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// Bytes a connection may send before this node reads them, over all its streams.
const CONNECTION_WINDOW_BYTES: u32 = 8 << 20;
/// The largest header block a client may send.
const HEADER_LIST_BYTES_MAX: u32 = 16 << 10;
/// The checksum that ends a Maintenance.Snapshot stream.
const SHA256_BYTES: u64 = 32;
/// Bytes of the snapshot file per Maintenance.Snapshot message.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// The smallest `db_size` Status reports.
const DB_SIZE_MIN_BYTES: u64 = 4096;
/// The etcd API version this node implements (Status `version`): the 3.4 API, checked
/// against etcd 3.4.23 by the differential tests.
pub(super) const ETCD_API_VERSION: &str = "3.4.23";

const WATCH_UNIMPLEMENTED: &str =
    "ringkv: Watch is not implemented yet (it comes with ringkv's watch release)";

/// What the gRPC service needs beyond `Calls`.
pub(super) struct Grpc {
    pub(super) calls: Rc<Calls>,
    pub(super) limits: HttpLimits,
    /// The largest request message (`limits.frame_bytes_max`).
    pub(super) message_bytes_max: usize,
    pub(super) net: Rc<NetMetrics>,
    pub(super) idx: usize,
    /// Where Maintenance.Snapshot finds the snapshot files it streams.
    pub(super) snapshots_dir: std::path::PathBuf,
    /// The cluster token: taking a snapshot for Maintenance.Snapshot is an operator call
    /// the node makes itself (etcd lets any client save a snapshot).
    pub(super) cluster_token: String,
}

/// A glommio socket as h2 wants it (tokio's I/O traits; no tokio runtime is involved).
/// Inbound bytes pass `h2c::Inbound` (which repairs grpc-go's URL authorities) until it
/// says the rest may go straight through.
struct H2Io {
    s: TcpStream,
    inbound: Inbound,
    /// Bytes `inbound` released that h2 has not read yet.
    ready: BytesMut,
    net: Rc<NetMetrics>,
}

/// Bytes read from the socket at a time while `Inbound` examines them.
const EXAMINE_READ_BYTES: usize = 16 << 10;

impl tokio::io::AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            if !me.ready.is_empty() {
                let n = buf.remaining().min(me.ready.len());
                buf.put_slice(&me.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if me.inbound.passing_through() {
                let dst = buf.initialize_unfilled();
                return match Pin::new(&mut me.s).poll_read(cx, dst) {
                    Poll::Ready(Ok(n)) => {
                        buf.advance(n);
                        me.net.received(Traffic::Grpc, 0, n as u64);
                        Poll::Ready(Ok(()))
                    }
                    other => other.map_ok(|_| ()),
                };
            }
            let mut tmp = [0u8; EXAMINE_READ_BYTES];
            match Pin::new(&mut me.s).poll_read(cx, &mut tmp) {
                Poll::Ready(Ok(0)) => {
                    me.inbound.finish_input(&mut me.ready);
                    if me.ready.is_empty() {
                        return Poll::Ready(Ok(())); // end of stream
                    }
                }
                Poll::Ready(Ok(n)) => {
                    me.net.received(Traffic::Grpc, 0, n as u64);
                    me.inbound.feed(&tmp[..n], &mut me.ready);
                }
                other => return other.map_ok(|_| ()),
            }
        }
    }
}

impl tokio::io::AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let r = Pin::new(&mut me.s).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            me.net.sent(Traffic::Grpc, 0, n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.s).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.s).poll_close(cx)
    }
}

/// A call's result: the framed reply message, or the status to end with.
type Reply = Result<Bytes, Status>;

/// A message framed for the wire, encoded once into its final buffer.
trait Framed {
    fn framed(&self) -> Bytes;
}

impl<M: Message> Framed for M {
    fn framed(&self) -> Bytes {
        frame(self)
    }
}

impl Grpc {
    /// Serves one HTTP/2 connection until the client closes it (or breaks the protocol).
    /// `first`: the bytes of the preface already read.
    pub(super) async fn serve(
        self: Rc<Self>,
        s: TcpStream,
        first: [u8; 4],
        handshake_within: Duration,
    ) {
        // h2 may write a reply's frames in more than one send: without NODELAY, Nagle's
        // algorithm holds the later ones for the client's delayed ACK (40 ms a call).
        if let Err(e) = s.set_nodelay(true) {
            tracing::debug!(shard = self.idx, "TCP_NODELAY on a gRPC connection: {e}");
        }
        let mut inbound = Inbound::new();
        let mut ready = BytesMut::new();
        inbound.feed(&first, &mut ready);
        let io = H2Io {
            s,
            inbound,
            ready,
            net: self.net.clone(),
        };
        let mut b = h2::server::Builder::new();
        b.max_concurrent_streams(GRPC_STREAMS_MAX)
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_header_list_size(HEADER_LIST_BYTES_MAX);
        let hs = b.handshake::<_, Bytes>(io);
        let mut conn = match futures_lite::future::or(async { Some(hs.await) }, async {
            glommio::timer::sleep(handshake_within).await;
            None
        })
        .await
        {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                tracing::debug!(shard = self.idx, "HTTP/2 handshake failed: {e}");
                return;
            }
            None => {
                tracing::debug!(shard = self.idx, "HTTP/2 handshake timed out");
                return;
            }
        };
        while let Some(r) = conn.accept().await {
            match r {
                Ok((req, respond)) => {
                    let me = self.clone();
                    glommio::spawn_local(async move { me.call(req, respond).await }).detach();
                }
                Err(e) => {
                    tracing::debug!(shard = self.idx, "HTTP/2 connection ended: {e}");
                    break;
                }
            }
        }
    }

    async fn call(self: Rc<Self>, req: Request<RecvStream>, respond: SendResponse<Bytes>) {
        let (parts, body) = req.into_parts();
        let grpc_content = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if !grpc_content {
            let mut respond = respond;
            let r = Response::builder()
                .status(415)
                .body(())
                .expect("static response");
            let _ = respond.send_response(r, true);
            return;
        }
        let path = parts.uri.path();
        let timeout = parts
            .headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc::parse_timeout);
        // etcd's clients set `hasleader` to be told at once when the member has no leader
        // (instead of waiting for an election).
        let wants_leader = parts
            .headers
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true");
        if wants_leader && !self.calls.leader_known() {
            send_status(respond, &Status::new(Code::Unavailable, grpc::NO_LEADER));
            return;
        }
        match path {
            "/etcdserverpb.Lease/LeaseKeepAlive" => self.keep_alive(body, respond).await,
            "/etcdserverpb.Maintenance/Snapshot" => self.snapshot(body, respond).await,
            // A Watch stream stays open: refused before its requests are read.
            "/etcdserverpb.Watch/Watch" => send_status(
                respond,
                &Status::new(Code::Unimplemented, WATCH_UNIMPLEMENTED),
            ),
            _ => {
                let path = path.to_owned();
                let reply = async {
                    let msg = self.read_unary(body).await?;
                    self.unary(&path, msg).await
                };
                let reply = match timeout {
                    Some(t) => {
                        futures_lite::future::or(reply, async {
                            glommio::timer::sleep(t).await;
                            Err(Status::new(Code::DeadlineExceeded, grpc::DEADLINE_EXCEEDED))
                        })
                        .await
                    }
                    None => reply.await,
                };
                match reply {
                    Ok(msg) => send_message(respond, msg),
                    Err(s) => send_status(respond, &s),
                }
            }
        }
    }

    /// A unary call's one request message (the stream must end after it).
    async fn read_unary(&self, mut body: RecvStream) -> Result<Bytes, Status> {
        let mut d = Deframer::new(self.message_bytes_max);
        let mut msg = None;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| Status::new(Code::Canceled, format!("grpc: {e}")))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            d.push(&chunk);
            while let Some(m) = d.next_message().map_err(|e| e.status())? {
                if msg.replace(m).is_some() {
                    return Err(Status::new(
                        Code::Unimplemented,
                        "grpc: a unary call got more than one request message",
                    ));
                }
            }
        }
        msg.ok_or_else(|| {
            Status::new(
                Code::Unimplemented,
                "grpc: the request stream ended without a message",
            )
        })
    }

    fn header(&self, revision: i64) -> pb::ResponseHeader {
        self.calls.etcd_header(revision)
    }

    /// The header of an answer that carries no revision of its own: the current one.
    fn header_now(&self) -> pb::ResponseHeader {
        self.calls.etcd_header(self.calls.revision())
    }

    /// The header of the Cluster service's answers: etcd's has no revision.
    fn cluster_header(&self) -> pb::ResponseHeader {
        self.calls.etcd_header(0)
    }

    /// Carries out a store write; its revision and the store's answer.
    async fn write(&self, cmd: Command) -> Result<(i64, StoreResponse), ApiError> {
        check_command(&cmd, &self.limits)?;
        let out = self
            .calls
            .handle(ApiCall::Write {
                command: cmd.encode(),
            })
            .await?;
        store_answer(out)
    }

    /// Carries out the unary method at gRPC path `path` on request message `msg` (the
    /// gateway's calls come here too); the framed reply.
    pub(super) async fn unary(&self, path: &str, msg: Bytes) -> Reply {
        let st = |e: ApiError| grpc::status_of(&e);
        let decode_err = |e: prost::DecodeError| {
            Status::new(
                Code::Internal,
                format!("grpc: error unmarshalling request: {e}"),
            )
        };
        macro_rules! decode {
            ($t:ty) => {
                <$t>::decode(msg).map_err(decode_err)?
            };
        }
        let (service, method) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .unwrap_or(("", path));
        Ok(match (service, method) {
            ("etcdserverpb.KV", "Range") => {
                let req = etcd::range_request(decode!(pb::RangeRequest)).map_err(st)?;
                check_range(&req, &self.limits).map_err(st)?;
                // etcd's reads: serializable from local state, the rest ReadIndex.
                let policy = if req.serializable {
                    ReadPolicy::Eventual
                } else {
                    ReadPolicy::Linearizable
                };
                let out = self
                    .calls
                    .handle(ApiCall::Range {
                        req: Box::new(req),
                        consistency: Some(policy),
                    })
                    .await
                    .map_err(st)?;
                match store_answer(out).map_err(st)? {
                    (rev, StoreResponse::Range(r)) => {
                        etcd::range_response(r, self.header(rev)).framed()
                    }
                    (_, r) => return Err(st(etcd::unexpected("range", &r))),
                }
            }
            ("etcdserverpb.KV", "Put") => {
                let cmd = Command::Put(etcd::put_request(decode!(pb::PutRequest)));
                match self.write(cmd).await.map_err(st)? {
                    (rev, StoreResponse::Put(p)) => {
                        etcd::put_response(p, self.header(rev)).framed()
                    }
                    (_, r) => return Err(st(etcd::unexpected("put", &r))),
                }
            }
            ("etcdserverpb.KV", "DeleteRange") => {
                let cmd =
                    Command::DeleteRange(etcd::delete_request(decode!(pb::DeleteRangeRequest)));
                match self.write(cmd).await.map_err(st)? {
                    (rev, StoreResponse::DeleteRange(d)) => {
                        etcd::delete_response(d, self.header(rev)).framed()
                    }
                    (_, r) => return Err(st(etcd::unexpected("delete", &r))),
                }
            }
            ("etcdserverpb.KV", "Txn") => {
                let cmd = Command::Txn(etcd::txn_request(decode!(pb::TxnRequest)).map_err(st)?);
                match self.write(cmd).await.map_err(st)? {
                    (rev, StoreResponse::Txn(t)) => {
                        etcd::txn_response(t, self.header(rev)).framed()
                    }
                    (_, r) => return Err(st(etcd::unexpected("txn", &r))),
                }
            }
            ("etcdserverpb.KV", "Compact") => {
                let req = decode!(pb::CompactionRequest);
                let cmd = Command::Compact {
                    revision: req.revision,
                    physical: req.physical,
                };
                let (rev, _) = self.write(cmd).await.map_err(st)?;
                pb::CompactionResponse {
                    header: Some(self.header(rev)),
                }
                .framed()
            }
            ("etcdserverpb.Lease", "LeaseGrant") => {
                let req = decode!(pb::LeaseGrantRequest);
                let cmd = Command::LeaseGrant {
                    id: req.id,
                    ttl: req.ttl,
                };
                match self.write(cmd).await.map_err(st)? {
                    (rev, StoreResponse::LeaseGranted(g)) => pb::LeaseGrantResponse {
                        header: Some(self.header(rev)),
                        id: g.id,
                        ttl: g.ttl,
                        error: String::new(),
                    }
                    .framed(),
                    (_, r) => return Err(st(etcd::unexpected("lease grant", &r))),
                }
            }
            ("etcdserverpb.Lease", "LeaseRevoke") => {
                let req = decode!(pb::LeaseRevokeRequest);
                let (rev, _) = self
                    .write(Command::LeaseRevoke { id: req.id })
                    .await
                    .map_err(st)?;
                pb::LeaseRevokeResponse {
                    header: Some(self.header(rev)),
                }
                .framed()
            }
            ("etcdserverpb.Lease", "LeaseTimeToLive") => {
                let req = decode!(pb::LeaseTimeToLiveRequest);
                let out = self
                    .calls
                    .handle(ApiCall::LeaseTimeToLive {
                        lease: req.id,
                        keys: req.keys,
                    })
                    .await
                    .map_err(st)?;
                let Answer::LeaseTtl {
                    id,
                    ttl,
                    granted_ttl,
                    keys,
                } = out
                else {
                    return Err(st(internal("lease time-to-live", &out)));
                };
                pb::LeaseTimeToLiveResponse {
                    header: Some(self.header_now()),
                    id,
                    ttl,
                    granted_ttl,
                    keys: keys.into_iter().map(Bytes::from).collect(),
                }
                .framed()
            }
            ("etcdserverpb.Lease", "LeaseLeases") => {
                let _ = decode!(pb::LeaseLeasesRequest);
                let out = self.calls.handle(ApiCall::LeaseLeases).await.map_err(st)?;
                let Answer::LeaseList { ids } = out else {
                    return Err(st(internal("lease list", &out)));
                };
                pb::LeaseLeasesResponse {
                    header: Some(self.header_now()),
                    leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
                }
                .framed()
            }
            ("etcdserverpb.Maintenance", "Status") => {
                let _ = decode!(pb::StatusRequest);
                let st_ = self.node_status().await.map_err(st)?;
                // At least one page: an empty store still occupies memory (and etcdctl
                // divides by this number).
                let db = self.calls.state_bytes().max(DB_SIZE_MIN_BYTES) as i64;
                pb::StatusResponse {
                    header: Some(self.header_now()),
                    version: ETCD_API_VERSION.to_string(),
                    // ringkv's store lives in memory: its size is the bytes the state
                    // holds (what `limits.state_bytes_max` caps, as etcd's quota caps its
                    // database), all of them in use (compaction frees at once).
                    db_size: db,
                    db_size_in_use: db,
                    leader: st_.leader_id.unwrap_or(0),
                    raft_index: st_.commit_index,
                    raft_term: st_.term,
                    raft_applied_index: st_.applied_index,
                    errors: st_.alarms.iter().map(|a| format!("alarm:{a}")).collect(),
                    is_learner: st_.role == NodeRole::Learner,
                }
                .framed()
            }
            ("etcdserverpb.Maintenance", "Alarm") => {
                let req = decode!(pb::AlarmRequest);
                match req.action {
                    pb::ALARM_GET => {}
                    pb::ALARM_DEACTIVATE if req.alarm == pb::ALARM_NOSPACE => {
                        self.write(Command::Alarm { nospace: false })
                            .await
                            .map_err(st)?;
                    }
                    // Disarming an alarm that does not exist here changes nothing.
                    pb::ALARM_DEACTIVATE => {}
                    pb::ALARM_ACTIVATE => {
                        return Err(Status::new(
                            Code::InvalidArgument,
                            "ringkv: alarms are raised by the cluster itself, not by clients",
                        ));
                    }
                    a => {
                        return Err(Status::new(
                            Code::InvalidArgument,
                            format!("ringkv: alarm action {a} is not GET, ACTIVATE or DEACTIVATE"),
                        ));
                    }
                }
                let s = self.node_status().await.map_err(st)?;
                // NOSPACE is cluster-wide in ringkv (a replicated entry raises it): every
                // member reports it.
                let alarms = if s.alarms.iter().any(|a| a == "NOSPACE")
                    && (req.alarm == pb::ALARM_NONE || req.alarm == pb::ALARM_NOSPACE)
                    && req.action == pb::ALARM_GET
                {
                    s.members
                        .iter()
                        .filter(|m| req.member_id == 0 || m.id == req.member_id)
                        .map(|m| pb::AlarmMember {
                            member_id: m.id,
                            alarm: pb::ALARM_NOSPACE,
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                // etcd's Alarm answer has no header.
                pb::AlarmResponse {
                    header: None,
                    alarms,
                }
                .framed()
            }
            ("etcdserverpb.Maintenance", "HashKV") => {
                let req = decode!(pb::HashKvRequest);
                let out = self
                    .calls
                    .handle(ApiCall::Hash {
                        revision: req.revision,
                    })
                    .await
                    .map_err(st)?;
                let Answer::Hash {
                    revision,
                    compact_revision,
                    hash,
                    ..
                } = out
                else {
                    return Err(st(internal("hash", &out)));
                };
                pb::HashKvResponse {
                    header: Some(self.header(revision)),
                    // Both halves count: equal stores give equal 32-bit hashes too.
                    hash: (hash ^ (hash >> 32)) as u32,
                    compact_revision,
                }
                .framed()
            }
            ("etcdserverpb.Maintenance", "MoveLeader") => {
                let req = decode!(pb::MoveLeaderRequest);
                self.admin(AdminOp::TransferLeader {
                    node_id: req.target_id,
                })
                .await
                .map_err(st)?;
                // etcd's MoveLeader answer has no header.
                pb::HeaderResponse { header: None }.framed()
            }
            ("etcdserverpb.Cluster", "MemberList") => {
                let _ = decode!(pb::MemberListRequest);
                let s = self.node_status().await.map_err(st)?;
                pb::MembersResponse {
                    header: Some(self.cluster_header()),
                    members: members(&s),
                }
                .framed()
            }
            ("etcdserverpb.Cluster", "MemberAdd") => {
                let req = decode!(pb::MemberAddRequest);
                self.member_add(req).await?
            }
            ("etcdserverpb.Cluster", "MemberRemove") => {
                let req = decode!(pb::MemberRemoveRequest);
                self.admin(AdminOp::Remove { node_id: req.id })
                    .await
                    .map_err(st)?;
                self.members_reply().await?
            }
            ("etcdserverpb.Cluster", "MemberPromote") => {
                let req = decode!(pb::MemberPromoteRequest);
                self.admin(AdminOp::Promote { node_id: req.id })
                    .await
                    .map_err(st)?;
                self.members_reply().await?
            }
            ("etcdserverpb.Cluster", "MemberUpdate") => {
                return Err(Status::new(
                    Code::Unimplemented,
                    "ringkv: a member's address cannot be changed in place: add a learner at \
                     the new address, promote it, then remove the old member",
                ));
            }
            ("etcdserverpb.Maintenance", "Defragment") => {
                return Err(Status::new(
                    Code::Unimplemented,
                    "ringkv: defragment has nothing to do: the store lives in memory and \
                     compaction frees what it removes at once",
                ));
            }
            ("etcdserverpb.Maintenance", "Hash") => {
                return Err(Status::new(
                    Code::Unimplemented,
                    "ringkv: Hash hashes etcd's backend file, which ringkv does not have: use \
                     HashKV",
                ));
            }
            // Over gRPC a stream (`snapshot`); the JSON gateway does not stream it.
            ("etcdserverpb.Maintenance", "Snapshot") => {
                return Err(Status::new(
                    Code::Unimplemented,
                    "ringkv: Maintenance.Snapshot is served over gRPC only (etcdctl snapshot save)",
                ));
            }
            ("etcdserverpb.Watch", "Watch") => {
                return Err(Status::new(Code::Unimplemented, WATCH_UNIMPLEMENTED));
            }
            ("etcdserverpb.Auth", m) => {
                return Err(Status::new(
                    Code::Unimplemented,
                    format!("ringkv: Auth.{m}: authentication is not implemented yet"),
                ));
            }
            (
                "etcdserverpb.KV"
                | "etcdserverpb.Lease"
                | "etcdserverpb.Cluster"
                | "etcdserverpb.Maintenance"
                | "etcdserverpb.Watch",
                m,
            ) => {
                // grpc-go's wording.
                return Err(Status::new(
                    Code::Unimplemented,
                    format!("unknown method {m} for service {service}"),
                ));
            }
            _ => {
                return Err(Status::new(
                    Code::Unimplemented,
                    format!("unknown service {service}"),
                ));
            }
        })
    }

    async fn node_status(&self) -> Result<Box<ringkv_proto::outcome::NodeStatus>, ApiError> {
        match self.calls.handle(ApiCall::Status).await? {
            Answer::Status(s) => Ok(s),
            other => Err(internal("status", &other)),
        }
    }

    /// An operator call. Over gRPC it carries no cluster token: etcd's clients have no way
    /// to send one, so these calls are refused when `cluster.cluster_token` is set.
    async fn admin(&self, op: AdminOp) -> Result<Answer, ApiError> {
        self.calls.handle(ApiCall::Admin { op, token: None }).await
    }

    async fn members_reply(&self) -> Reply {
        let s = self.node_status().await.map_err(|e| grpc::status_of(&e))?;
        Ok(pb::MembersResponse {
            header: Some(self.cluster_header()),
            members: members(&s),
        }
        .framed())
    }

    /// etcd's MemberAdd: the member's id is chosen here (one above every id the cluster
    /// has used); its peer URL is its one address. ringkv adds members as learners: a
    /// voter is promoted once it has caught up (`MemberPromote`).
    async fn member_add(&self, req: pb::MemberAddRequest) -> Reply {
        let st = |e: ApiError| grpc::status_of(&e);
        let bad_urls = || Status::new(Code::InvalidArgument, grpc::MEMBER_BAD_URLS);
        if !req.is_learner {
            return Err(Status::new(
                Code::FailedPrecondition,
                "ringkv: members join as learners: add with --learner, start the member, \
                 then promote it",
            ));
        }
        let [url] = req.peer_urls.as_slice() else {
            return Err(bad_urls());
        };
        let addr = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        let addr: std::net::SocketAddr = addr.parse().map_err(|_| bad_urls())?;
        let s = self.node_status().await.map_err(st)?;
        let node_id = s
            .members
            .iter()
            .map(|m| m.id)
            .chain(s.removed.iter().copied())
            .max()
            .unwrap_or(0)
            + 1;
        self.admin(AdminOp::Join {
            node_id,
            address: addr.to_string(),
        })
        .await
        .map_err(st)?;
        let s = self.node_status().await.map_err(st)?;
        let all = members(&s);
        let member = all.iter().find(|m| m.id == node_id).cloned().or_else(|| {
            Some(pb::Member {
                id: node_id,
                peer_urls: vec![format!("http://{addr}")],
                is_learner: true,
                ..Default::default()
            })
        });
        Ok(pb::MemberAddResponse {
            header: Some(self.cluster_header()),
            member,
            members: all,
        }
        .framed())
    }

    /// etcd's Maintenance.Snapshot: a snapshot taken now (or the newest, if it covers
    /// everything applied) streamed as its file is on disk, in `SNAPSHOT_CHUNK_BYTES`
    /// pieces, each sent once HTTP/2 flow control has room for it (a large state is never
    /// buffered whole). `ringkv snapshot restore` reads the saved file.
    async fn snapshot(&self, body: RecvStream, respond: SendResponse<Bytes>) {
        match self.snapshot_file(body).await {
            Ok((file, size)) => self.stream_file(respond, file, size).await,
            Err(s) => send_status(respond, &s),
        }
    }

    async fn snapshot_file(&self, body: RecvStream) -> Result<(glommio::io::DmaFile, u64), Status> {
        let msg = self.read_unary(body).await?;
        pb::SnapshotRequest::decode(msg).map_err(|e| {
            Status::new(
                Code::Internal,
                format!("grpc: error unmarshalling request: {e}"),
            )
        })?;
        let token = (!self.cluster_token.is_empty()).then(|| self.cluster_token.clone());
        let out = self
            .calls
            .handle(ApiCall::Admin {
                op: AdminOp::Snapshot,
                token,
            })
            .await
            .map_err(|e| grpc::status_of(&e))?;
        let Answer::Snapshot { index, .. } = out else {
            return Err(grpc::status_of(&internal("snapshot", &out)));
        };
        // The file of that index (its name also holds the term). Opened now, it stays
        // readable even if a newer snapshot prunes it meanwhile.
        let prefix = format!("{index:020}-");
        let name = std::fs::read_dir(&self.snapshots_dir)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(&prefix) && n.ends_with(".snap"))
            .ok_or_else(|| {
                Status::new(
                    Code::Unavailable,
                    format!("ringkv: snapshot {index} was replaced before it could be read: retry"),
                )
            })?;
        let path = self.snapshots_dir.join(name);
        let file = glommio::io::DmaFile::open(&path).await.map_err(|e| {
            Status::new(
                Code::Internal,
                format!("ringkv: cannot open {}: {e}", path.display()),
            )
        })?;
        let size = file.file_size().await.map_err(|e| {
            Status::new(
                Code::Internal,
                format!("ringkv: cannot stat {}: {e}", path.display()),
            )
        })?;
        Ok((file, size))
    }

    async fn stream_file(
        &self,
        mut respond: SendResponse<Bytes>,
        file: glommio::io::DmaFile,
        size: u64,
    ) {
        let Ok(mut send) = respond.send_response(ok_head(), false) else {
            return;
        };
        let header = self.header_now();
        let mut at = 0u64;
        let mut failed = None;
        // etcd's stream ends with the SHA-256 of what came before, and etcdctl refuses a
        // stream without it (its length must be 32 more than a multiple of 512).
        let mut sha = Sha256::new();
        while at < size {
            let len = (size - at).min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
            let chunk = match file.read_at(at, len).await {
                Ok(c) => Bytes::copy_from_slice(&c[..len.min(c.len())]),
                Err(e) => {
                    failed = Some(Status::new(
                        Code::Internal,
                        format!("ringkv: reading the snapshot: {e}"),
                    ));
                    break;
                }
            };
            if chunk.is_empty() {
                failed = Some(Status::new(
                    Code::Internal,
                    "ringkv: the snapshot file ended early",
                ));
                break;
            }
            at += chunk.len() as u64;
            sha.update(&chunk);
            let msg = pb::SnapshotResponse {
                header: Some(header.clone()),
                remaining_bytes: size - at + SHA256_BYTES,
                blob: chunk,
            }
            .framed();
            if send_flow_controlled(&mut send, msg).await.is_err() {
                let _ = file.close().await;
                return; // the client went away
            }
        }
        let _ = file.close().await;
        if failed.is_none() {
            let msg = pb::SnapshotResponse {
                header: Some(header),
                remaining_bytes: 0,
                blob: Bytes::copy_from_slice(&sha.finalize()),
            }
            .framed();
            if send_flow_controlled(&mut send, msg).await.is_err() {
                return;
            }
        }
        let _ = send.send_trailers(trailers(failed.as_ref()));
    }

    /// One LeaseKeepAlive request's answer (the stream's, and the gateway's for each
    /// request in its body).
    pub(super) async fn keep_alive_once(
        &self,
        id: i64,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        match self
            .calls
            .handle(ApiCall::LeaseKeepAlive { lease: id })
            .await
        {
            Ok(Answer::LeaseTtl { id, ttl, .. }) => Ok(pb::LeaseKeepAliveResponse {
                header: Some(self.header_now()),
                id,
                ttl,
            }),
            Ok(other) => Err(grpc::status_of(&internal("lease keep-alive", &other))),
            Err(e) => Err(grpc::status_of(&e)),
        }
    }

    /// etcd's LeaseKeepAlive: a stream of requests, each answered in turn.
    async fn keep_alive(&self, mut body: RecvStream, mut respond: SendResponse<Bytes>) {
        let Ok(mut send) = respond.send_response(ok_head(), false) else {
            return;
        };
        let mut d = Deframer::new(self.message_bytes_max);
        let end = loop {
            let Some(chunk) = body.data().await else {
                break None; // the client closed its side: end the call
            };
            let Ok(chunk) = chunk else {
                return; // reset by the client
            };
            let _ = body.flow_control().release_capacity(chunk.len());
            d.push(&chunk);
            let mut failed = None;
            loop {
                let m = match d.next_message() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e.status());
                        break;
                    }
                };
                let id = match pb::LeaseKeepAliveRequest::decode(m) {
                    Ok(r) => r.id,
                    Err(e) => {
                        failed = Some(Status::new(
                            Code::Internal,
                            format!("grpc: error unmarshalling request: {e}"),
                        ));
                        break;
                    }
                };
                match self.keep_alive_once(id).await {
                    Ok(reply) => {
                        if send.send_data(frame(&reply), false).is_err() {
                            return;
                        }
                    }
                    Err(s) => {
                        failed = Some(s);
                        break;
                    }
                }
            }
            if failed.is_some() {
                break failed;
            }
        };
        let _ = send.send_trailers(trailers(end.as_ref()));
    }
}

/// A store call's answer: the header revision and the decoded store response.
fn store_answer(a: Answer) -> Result<(i64, StoreResponse), ApiError> {
    match a {
        Answer::Store { revision, response } => {
            let r = ringkv_store::decode_response(&Bytes::from(response)).map_err(|e| {
                ApiError::Internal {
                    message: format!("a store answer does not decode: {e}"),
                }
            })?;
            Ok((revision, r))
        }
        other => Err(internal("store", &other)),
    }
}

fn internal(what: &str, a: &Answer) -> ApiError {
    tracing::error!("a {what} call was answered with {a:?}");
    ApiError::Internal {
        message: format!("a {what} call got another call's answer"),
    }
}

/// etcd's members from a node's status: client and peer URL are the member's one address.
fn members(s: &ringkv_proto::outcome::NodeStatus) -> Vec<pb::Member> {
    s.members
        .iter()
        .map(|m| {
            let urls: Vec<String> = m.address.iter().map(|a| format!("http://{a}")).collect();
            pb::Member {
                id: m.id,
                name: format!("node-{}", m.id),
                peer_urls: urls.clone(),
                client_urls: urls,
                is_learner: m.role == StatusMemberRole::Learner,
            }
        })
        .collect()
}

/// Sends `data` once HTTP/2 flow control grants room for it, piece by piece: a stream
/// that sends more than the client reads waits here instead of buffering.
async fn send_flow_controlled(
    send: &mut h2::SendStream<Bytes>,
    mut data: Bytes,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e),
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        let piece = data.split_to(granted.min(data.len()));
        send.send_data(piece, false)?;
    }
    Ok(())
}

fn ok_head() -> Response<()> {
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(())
        .expect("static response")
}

fn trailers(status: Option<&Status>) -> HeaderMap {
    let mut t = HeaderMap::new();
    match status {
        None => {
            t.insert("grpc-status", HeaderValue::from_static("0"));
        }
        Some(s) => {
            t.insert("grpc-status", HeaderValue::from((s.code as u32) as u64));
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&s.message)) {
                t.insert("grpc-message", v);
            }
        }
    }
    t
}

fn send_message(mut respond: SendResponse<Bytes>, msg: Bytes) {
    let Ok(mut send) = respond.send_response(ok_head(), false) else {
        return;
    };
    if send.send_data(msg, false).is_ok() {
        let _ = send.send_trailers(trailers(None));
    }
}

/// A failed call: a trailers-only reply (status in the one HEADERS frame).
fn send_status(mut respond: SendResponse<Bytes>, s: &Status) {
    let mut head = ok_head();
    head.headers_mut().extend(trailers(Some(s)));
    let _ = respond.send_response(head, true);
}
