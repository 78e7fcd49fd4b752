//! etcd's v3 gRPC API on a shard's client connections: cleartext HTTP/2 (h2c) on the
//! node's one port.
//!
//! Owns the gRPC connections `conn` hands over (those opening with the HTTP/2 preface):
//! each connection's reader (its task: socket bytes into `net::http2`, requests gathered
//! until complete) and writer (a task sending whatever output is ready in one write),
//! one task per call, `grpc-timeout` and `hasleader`, and the mapping of each etcd method
//! onto the node's calls (`Calls::handle`, the same path the native and HTTP APIs take)
//! and of their outcomes onto etcd's response messages and error statuses. Watch answers
//! Unimplemented until the watch issue lands. The JSON gateway's calls (`conn`, `/v3/`
//! paths) are carried out here too, by `unary` and `keep_alive_once`.
//!
//! Runs on its shard's executor: a call is carried out where its connection is, with no
//! hop to another thread. Must not touch Raft state or the key-value state other than
//! through `Calls`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use prost::Message;
use sha2::{Digest, Sha256};

use super::calls::Calls;
use crate::metrics::{NetMetrics, Traffic};
use crate::net::call::{check_command, check_range};
use crate::net::etcd;
use crate::net::http::{ApiCall, HttpLimits};
use crate::net::http2::{self, End};
use crate::shard::Command;
use ringkv_proto::admin::AdminOp;
use ringkv_proto::etcdpb as pb;
use ringkv_proto::grpc::{self, Code, Deframer, Status, frame};
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

/// Bytes read from the socket at a time.
const READ_BYTES: usize = 64 << 10;
/// Output waiting for a client that does not read, before its connection is closed.
const OUTPUT_BYTES_MAX: usize = 64 << 20;
/// The largest header block as received (HEADERS and its CONTINUATION frames).
const HEADER_BLOCK_BYTES_MAX: usize = 64 << 10;
/// LeaseKeepAlive requests read ahead of their answers on one stream.
const KEEP_ALIVE_QUEUE_MAX: usize = 64;
/// How often a Maintenance.Snapshot stream looks whether the client took its last chunk.
const SNAPSHOT_DRAIN_POLL: Duration = Duration::from_millis(1);

/// A wake-up for one waiting task: `notify` before or during `wait` ends the wait.
#[derive(Default)]
struct Signal {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Signal {
    fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// One gRPC connection, shared by its reader (the connection's task), its writer task
/// and its calls' tasks: the HTTP/2 state, and the writer's wake-up. Replies that become
/// ready together leave in one write.
struct Link {
    conn: RefCell<http2::Conn>,
    wake: Signal,
    /// The reader stopped: the writer sends what is queued and ends.
    done: Cell<bool>,
}

impl Link {
    /// Sends one framed message on `stream`; false when the stream is gone.
    fn send(&self, stream: u32, msg: Bytes) -> bool {
        let sent = self.conn.borrow_mut().send_message(stream, msg);
        self.wake.notify();
        sent
    }

    /// Ends `stream` with OK, or with `status`.
    fn end(&self, stream: u32, status: Option<&Status>) {
        let end = match status {
            None => End::Grpc {
                code: 0,
                message: "",
            },
            Some(s) => End::Grpc {
                code: s.code as u32,
                message: &s.message,
            },
        };
        self.conn.borrow_mut().end(stream, end);
        self.wake.notify();
    }

    /// A unary call's whole reply.
    fn reply(&self, stream: u32, reply: Reply) {
        match reply {
            Ok(msg) => {
                self.conn.borrow_mut().reply(stream, msg);
                self.wake.notify();
            }
            Err(s) => self.end(stream, Some(&s)),
        }
    }
}

/// A stream whose request is still arriving.
enum Inbound {
    /// A unary (or server-streaming) call: its one message, once complete.
    Unary {
        path: String,
        timeout: Option<Duration>,
        d: Deframer,
        msg: Option<Bytes>,
    },
    /// LeaseKeepAlive: each request message goes to the stream's task as it completes.
    KeepAlive { d: Deframer, tx: LocalSender<Bytes> },
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
        // A reply may leave in more than one send: without NODELAY, Nagle's algorithm
        // holds the later ones for the client's delayed ACK (40 ms a call).
        if let Err(e) = s.set_nodelay(true) {
            tracing::debug!(shard = self.idx, "TCP_NODELAY on a gRPC connection: {e}");
        }
        let (mut rd, mut wr) = futures_lite::io::split(s);
        let limits = http2::Limits {
            streams_max: GRPC_STREAMS_MAX,
            stream_window_bytes: STREAM_WINDOW_BYTES,
            connection_window_bytes: CONNECTION_WINDOW_BYTES,
            header_list_bytes_max: HEADER_LIST_BYTES_MAX,
            header_block_bytes_max: HEADER_BLOCK_BYTES_MAX,
            output_bytes_max: OUTPUT_BYTES_MAX,
        };
        let link = Rc::new(Link {
            conn: RefCell::new(http2::Conn::new(limits)),
            wake: Signal::default(),
            done: Cell::new(false),
        });
        let writer = {
            let (link, net) = (link.clone(), self.net.clone());
            glommio::spawn_local(async move {
                loop {
                    link.wake.wait().await;
                    // Let the other tasks ready now run first: replies that complete in
                    // the same round leave in this one write.
                    futures_lite::future::yield_now().await;
                    let out = link.conn.borrow_mut().take_output();
                    if !out.is_empty() {
                        if wr.write_all(&out).await.is_err() {
                            link.done.set(true);
                            return;
                        }
                        net.sent(Traffic::Grpc, 0, out.len() as u64);
                    }
                    if link.done.get() && !link.conn.borrow().has_output() {
                        let _ = wr.flush().await;
                        return;
                    }
                }
            })
        };
        link.wake.notify(); // the server's SETTINGS
        let mut calls: HashMap<u32, Inbound> = HashMap::new();
        let mut events = Vec::new();
        let mut buf = vec![0u8; READ_BYTES];
        let mut fed = self.feed(&link, &first, &mut events);
        // The client's preface and SETTINGS must come promptly; then a connection may idle.
        let handshake_by = Instant::now() + handshake_within;
        while fed {
            for ev in events.drain(..) {
                self.event(&link, &mut calls, ev).await;
            }
            if link.done.get() {
                break; // the writer failed: the client is gone
            }
            let n = if Instant::now() < handshake_by && !link.conn.borrow().preface_done() {
                let left = handshake_by.saturating_duration_since(Instant::now());
                let read =
                    futures_lite::future::or(async { Some(rd.read(&mut buf).await) }, async {
                        glommio::timer::sleep(left).await;
                        None
                    });
                match read.await {
                    Some(r) => r,
                    None => {
                        tracing::debug!(shard = self.idx, "HTTP/2 handshake timed out");
                        break;
                    }
                }
            } else {
                rd.read(&mut buf).await
            };
            let n = match n {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.net.received(Traffic::Grpc, 0, n as u64);
            fed = self.feed(&link, &buf[..n], &mut events);
        }
        // What the last bytes asked for still counts (a GOAWAY, a reset).
        for ev in events.drain(..) {
            self.event(&link, &mut calls, ev).await;
        }
        drop(calls); // ends the keep-alive streams' request queues
        link.done.set(true);
        link.wake.notify();
        writer.await;
    }

    /// Feeds received bytes to the connection; false when it is over.
    fn feed(&self, link: &Link, data: &[u8], events: &mut Vec<http2::Event>) -> bool {
        let mut c = link.conn.borrow_mut();
        let r = c.feed(data, events);
        let overflow = c.output_overflow();
        drop(c);
        link.wake.notify();
        match r {
            Err(e) => {
                tracing::debug!(shard = self.idx, "HTTP/2 connection ended: {}", e.detail);
                false
            }
            Ok(()) if overflow => {
                tracing::debug!(
                    shard = self.idx,
                    "HTTP/2 connection closed: over {OUTPUT_BYTES_MAX} bytes wait for a client that does not read"
                );
                false
            }
            Ok(()) => true,
        }
    }

    /// Acts on one thing the client did.
    async fn event(
        self: &Rc<Self>,
        link: &Rc<Link>,
        calls: &mut HashMap<u32, Inbound>,
        ev: http2::Event,
    ) {
        let (stream, data, end_stream) = match ev {
            http2::Event::Call {
                stream,
                head,
                end_stream,
            } => {
                self.open(link, calls, stream, head, end_stream);
                return;
            }
            http2::Event::Reset { stream } => {
                calls.remove(&stream);
                return;
            }
            http2::Event::End { stream } => (stream, Bytes::new(), true),
            http2::Event::Data {
                stream,
                data,
                end_stream,
            } => (stream, data, end_stream),
        };
        let Some(inbound) = calls.get_mut(&stream) else {
            return; // already answered (an oversized request) or reset
        };
        match inbound {
            Inbound::Unary { d, msg, .. } => {
                d.push(&data);
                let mut failed = None;
                loop {
                    match d.next_message() {
                        Ok(Some(m)) => {
                            if msg.replace(m).is_some() {
                                failed = Some(Status::new(
                                    Code::Unimplemented,
                                    "grpc: a unary call got more than one request message",
                                ));
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(e.status());
                            break;
                        }
                    }
                }
                if let Some(s) = failed {
                    calls.remove(&stream);
                    link.end(stream, Some(&s));
                } else if end_stream
                    && let Some(Inbound::Unary {
                        path, timeout, msg, ..
                    }) = calls.remove(&stream)
                {
                    self.start(link, stream, path, timeout, msg);
                }
            }
            Inbound::KeepAlive { d, tx } => {
                d.push(&data);
                let mut failed = None;
                loop {
                    match d.next_message() {
                        Ok(Some(m)) => {
                            // Waiting here holds back this connection's reads: the client
                            // sends no faster than its requests are answered.
                            if tx.send(m).await.is_err() {
                                break; // the stream's task ended it
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(e.status());
                            break;
                        }
                    }
                }
                if let Some(s) = failed {
                    calls.remove(&stream);
                    link.end(stream, Some(&s));
                } else if end_stream {
                    calls.remove(&stream); // the task answers what is queued, then ends
                }
            }
        }
    }

    /// A new call: refused at once, or registered to gather its request.
    fn open(
        self: &Rc<Self>,
        link: &Rc<Link>,
        calls: &mut HashMap<u32, Inbound>,
        stream: u32,
        head: http2::Head,
        end_stream: bool,
    ) {
        if !head.grpc {
            link.conn.borrow_mut().end(stream, End::Http(415));
            link.wake.notify();
            return;
        }
        // etcd's clients set `hasleader` to be told at once when the member has no leader
        // (instead of waiting for an election).
        if head.wants_leader && !self.calls.leader_known() {
            link.end(
                stream,
                Some(&Status::new(Code::Unavailable, grpc::NO_LEADER)),
            );
            return;
        }
        let d = Deframer::new(self.message_bytes_max);
        match head.path.as_str() {
            // A Watch stream stays open: refused before its requests are read.
            "/etcdserverpb.Watch/Watch" => link.end(
                stream,
                Some(&Status::new(Code::Unimplemented, WATCH_UNIMPLEMENTED)),
            ),
            "/etcdserverpb.Lease/LeaseKeepAlive" => {
                let (tx, rx) = local_channel::new_bounded(KEEP_ALIVE_QUEUE_MAX);
                let (me, l) = (self.clone(), link.clone());
                glommio::spawn_local(async move { me.keep_alive(&l, stream, rx).await }).detach();
                if !end_stream {
                    calls.insert(stream, Inbound::KeepAlive { d, tx });
                }
            }
            _ if end_stream => self.start(link, stream, head.path, head.timeout, None),
            _ => {
                calls.insert(
                    stream,
                    Inbound::Unary {
                        path: head.path,
                        timeout: head.timeout,
                        d,
                        msg: None,
                    },
                );
            }
        }
    }

    /// Carries out a unary (or server-streaming) call whose request is complete.
    fn start(
        self: &Rc<Self>,
        link: &Rc<Link>,
        stream: u32,
        path: String,
        timeout: Option<Duration>,
        msg: Option<Bytes>,
    ) {
        let Some(msg) = msg else {
            link.end(
                stream,
                Some(&Status::new(
                    Code::Unimplemented,
                    "grpc: the request stream ended without a message",
                )),
            );
            return;
        };
        let (me, link) = (self.clone(), link.clone());
        if path == "/etcdserverpb.Maintenance/Snapshot" {
            glommio::spawn_local(async move { me.snapshot(&link, stream, msg).await }).detach();
            return;
        }
        glommio::spawn_local(async move {
            // Boxed: the spawned task stays small whatever the methods' futures hold.
            let reply = Box::pin(me.unary(&path, msg));
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
            link.reply(stream, reply);
        })
        .detach();
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
    async fn snapshot(&self, link: &Link, stream: u32, msg: Bytes) {
        match self.snapshot_file(msg).await {
            Ok((file, size)) => self.stream_file(link, stream, file, size).await,
            Err(s) => link.end(stream, Some(&s)),
        }
    }

    async fn snapshot_file(&self, msg: Bytes) -> Result<(glommio::io::DmaFile, u64), Status> {
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

    async fn stream_file(&self, link: &Link, stream: u32, file: glommio::io::DmaFile, size: u64) {
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
            if !send_flow_controlled(link, stream, msg).await {
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
            if !send_flow_controlled(link, stream, msg).await {
                return;
            }
        }
        link.end(stream, failed.as_ref());
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

    /// etcd's LeaseKeepAlive: a stream of requests (from the connection's reader), each
    /// answered in turn.
    async fn keep_alive(&self, link: &Link, stream: u32, rx: LocalReceiver<Bytes>) {
        let mut failed = None;
        while let Some(m) = rx.recv().await {
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
                    if !link.send(stream, frame(&reply)) {
                        return; // reset by the client
                    }
                }
                Err(s) => {
                    failed = Some(s);
                    break;
                }
            }
        }
        link.end(stream, failed.as_ref());
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

/// Sends one message of a long reply, then waits while more than a chunk of the stream's
/// reply is still held back by the client's flow control: a stream that sends more than
/// the client reads waits here instead of buffering. False when the stream is gone.
async fn send_flow_controlled(link: &Link, stream: u32, msg: Bytes) -> bool {
    if !link.send(stream, msg) {
        return false;
    }
    loop {
        match link.conn.borrow().queued_bytes(stream) {
            None => return false,
            Some(q) if q > SNAPSHOT_CHUNK_BYTES => {}
            Some(_) => return true,
        }
        glommio::timer::sleep(SNAPSHOT_DRAIN_POLL).await;
    }
}
