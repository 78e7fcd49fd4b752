//! A shard executor: the composition of its parts, its queue loops, and its part of the
//! key-value state.
//!
//! Runs on its own glommio executor pinned to one CPU of `runtime.cores` (on the raft
//! core's CPU the raft core shares it, in another task queue: long work here must yield,
//! as snapshot encoding does). Owns `Shard`, which holds the shard's parts: its
//! connections (SO_REUSEPORT listener, protocols), `Calls` (carrying out calls, `calls`),
//! and `KvState` (its `Partition`, the keys whose hash routes here, with the partition's
//! applied watermark, the readers waiting for it, and the gauges that show them); the
//! loops draining the raft core's queue (applies, installs, snapshots, resets, answers,
//! reads to serve) and the other shards' queues (forwarded reads and their answers).
//! Must not touch Raft state except through its queues and the published `LeaseView`;
//! connections that turn out to be peers are handed to the raft core unread past the
//! magic.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::net::{TcpListener, TcpStream};

use super::calls::Calls;
use super::{CoreAnswer, MeshMsg, ShardQueues, Shared, ToRaft, ToShard};
use crate::config::NodeConfig;
use crate::metrics::{ConnKind, NetMetrics, ShardMetrics, Traffic};
use crate::net::http::{self, ApiCall, HttpLimits, Parsed};
use crate::shard::{Partition, Snapshot};
use ringkv_proto::frame::{FrameHeader, FrameKind, HEADER_BYTES, MAGIC};
use ringkv_proto::native;
use ringkv_proto::outcome::{Answer, ApiError, Outcome, TimeoutKind};
use ringkv_raft::{Entry, Index, ReadPolicy};

/// Bytes a snapshot encodes or decodes between checks of glommio's preemption timer.
const SNAPSHOT_STEP_BYTES: usize = 1 << 20;
/// Pairs a replaced partition frees between such checks.
const FREE_STEP_PAIRS: usize = 4096;

/// Requests of one native connection carried out at once; more wait to be read.
const NATIVE_INFLIGHT_MAX: usize = 1024;
/// Receive buffer of a native connection (many small pipelined frames per receive; kept
/// small since every open connection holds one).
const NATIVE_READ_BUFFER_BYTES: usize = 16 << 10;

/// A keep-alive connection may idle this long between requests.
const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Within a request (and for a new connection's first bytes), the longest silence.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One shard: its parts, and the loops that drain its queues.
struct Shard {
    idx: usize,
    out: Rc<Senders>,
    kv: Rc<KvState>,
    calls: Rc<Calls>,
    limits: HttpLimits,
    frame_bytes_max: usize,
    /// Open client connections on this shard, and its share of `limits.connections_max`.
    connections: Cell<usize>,
    connections_max: usize,
    /// Refusals since the last warning about them, and when that was.
    refused: Cell<u64>,
    last_refusal_log: Cell<Option<Instant>>,
    net: NetMetrics,
}

/// The sending ends of a shard's queues, shared by its parts.
pub(super) struct Senders {
    pub(super) to_raft: ConnectedSender<ToRaft>,
    /// Index = destination shard; `None` for this shard itself.
    mesh_out: Vec<Option<ConnectedSender<MeshMsg>>>,
}

impl Senders {
    /// The queue to shard `i` (another shard).
    pub(super) fn to_shard(&self, i: usize) -> &ConnectedSender<MeshMsg> {
        self.mesh_out[i].as_ref().expect("another shard")
    }
}

pub(super) async fn run(
    idx: usize,
    n: usize,
    cfg: NodeConfig,
    shared: Arc<Shared>,
    q: ShardQueues,
) {
    let listen: SocketAddr = cfg.cluster.listen_address.parse().expect("validated");
    let listener = match reuseport_listener(listen) {
        Ok(l) => l,
        Err(e) => {
            let msg =
                format!("shard {idx}: cannot listen on {listen} (cluster.listen_address): {e}");
            tracing::error!("{msg}");
            eprintln!("ringkv serve: {msg}");
            std::process::exit(1);
        }
    };
    // A channel end's `connect` waits for the other end's: connect all at once.
    let to_raft = glommio::spawn_local(q.to_raft.connect());
    let from_raft = glommio::spawn_local(q.from_raft.connect());
    let mesh_out: Vec<_> = q
        .mesh_out
        .into_iter()
        .map(|s| s.map(|s| glommio::spawn_local(s.connect())))
        .collect();
    let mesh_in: Vec<_> = q
        .mesh_in
        .into_iter()
        .map(|r| glommio::spawn_local(r.connect()))
        .collect();
    let mut out = Vec::new();
    for s in mesh_out {
        out.push(match s {
            Some(t) => Some(t.await),
            None => None,
        });
    }
    let out = Rc::new(Senders {
        to_raft: to_raft.await,
        mesh_out: out,
    });
    // Prometheus handles, built on this executor (no-ops without a recorder).
    let metrics = Rc::new(ShardMetrics::new(idx));
    let kv = Rc::new(KvState::new(idx, n, shared.clone(), metrics.clone()));
    let calls = Rc::new(Calls::new(
        idx,
        n,
        &cfg,
        shared,
        out.clone(),
        kv.clone(),
        metrics,
    ));
    let shard = Rc::new(Shard {
        idx,
        out,
        kv,
        calls,
        limits: HttpLimits {
            head_bytes_max: 16 << 10,
            body_bytes_max: cfg.limits.key_bytes_max * 2 + cfg.limits.value_bytes_max * 2 + 1024,
            key_bytes_max: cfg.limits.key_bytes_max,
            value_bytes_max: cfg.limits.value_bytes_max,
        },
        frame_bytes_max: cfg.limits.frame_bytes_max,
        connections: Cell::new(0),
        connections_max: cfg.limits.connections_max.div_ceil(n),
        refused: Cell::new(0),
        last_refusal_log: Cell::new(None),
        net: NetMetrics::new(),
    });
    {
        let shard = shard.clone();
        let rx = from_raft.await;
        glommio::spawn_local(async move { shard.from_raft(rx).await }).detach();
    }
    for rx in mesh_in {
        let shard = shard.clone();
        let rx = rx.await;
        glommio::spawn_local(async move { shard.from_mesh(rx).await }).detach();
    }
    loop {
        let s = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, usually: back off instead of spinning.
                tracing::warn!(shard = idx, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let shard = shard.clone();
        glommio::spawn_local(async move { shard.connection(s).await }).detach();
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
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
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

impl Shard {
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
            self.refused.set(self.refused.get() + 1);
            if self
                .last_refusal_log
                .get()
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                tracing::warn!(
                    shard = self.idx,
                    refused = self.refused.get(),
                    "limits.connections_max reached ({} per shard): refusing new client connections",
                    self.connections_max
                );
                self.last_refusal_log.set(Some(Instant::now()));
                self.refused.set(0);
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
            let (shard, tx) = (self.clone(), tx.clone());
            glommio::spawn_local(async move {
                let id = req.id();
                let r = shard.handle_native(req).await;
                let _ = tx.send((id, r)).await;
                drop(permit);
            })
            .detach();
        }
        drop(tx);
        writer.await;
    }

    async fn handle_native(self: &Rc<Self>, req: native::Request) -> Outcome {
        let key_ok = |k: &[u8]| {
            if k.is_empty() {
                Err(ApiError::bad_request("empty key"))
            } else if k.len() > self.limits.key_bytes_max {
                Err(ApiError::too_large(format!(
                    "key of {} bytes is over key_bytes_max ({})",
                    k.len(),
                    self.limits.key_bytes_max
                )))
            } else {
                Ok(())
            }
        };
        // Keys and values are bytes: no UTF-8 requirement (the native protocol carries
        // them as they are).
        let call = match req {
            native::Request::Put { key, value, .. } => {
                key_ok(&key)?;
                if value.len() > self.limits.value_bytes_max {
                    return Err(ApiError::too_large(format!(
                        "value of {} bytes is over value_bytes_max ({})",
                        value.len(),
                        self.limits.value_bytes_max
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
                let consistency = match consistency {
                    native::CONSISTENCY_DEFAULT => None,
                    native::CONSISTENCY_LINEARIZABLE => Some(ReadPolicy::Linearizable),
                    native::CONSISTENCY_LEASE => Some(ReadPolicy::Lease),
                    native::CONSISTENCY_EVENTUAL => Some(ReadPolicy::Eventual),
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "consistency {other} is unknown"
                        )));
                    }
                };
                ApiCall::Get {
                    key: Bytes::from(key),
                    consistency,
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
        };
        self.calls.handle(call).await
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
                        Ok(call) => {
                            let r = self.calls.handle(call).await;
                            http::outcome_response(&r, !keep_alive)
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

    /// Drains the raft core's queue. Never waits on a queue back to the raft core.
    async fn from_raft(self: Rc<Self>, rx: ConnectedReceiver<ToShard>) {
        while let Some(m) = rx.recv().await {
            match m {
                ToShard::Install { data } => {
                    if let Err(e) = self.kv.install(&data).await {
                        // The raft core checked the snapshot's checksum: this is a bug.
                        tracing::error!(shard = self.idx, "snapshot does not decode: {e}");
                        std::process::exit(1);
                    }
                }
                ToShard::Snapshot { index } => {
                    // Taken between two Apply messages: exactly the state at `index`. The
                    // shard applies nothing meanwhile (that is the snapshot's write pause
                    // on this shard; reads of its keys wait too).
                    let t = Instant::now();
                    let (pairs, count) = self.kv.snapshot(index).await;
                    let msg = ToRaft::SnapshotPart {
                        shard: self.idx,
                        index,
                        pairs,
                        count,
                        took: t.elapsed(),
                    };
                    let out = self.out.clone();
                    glommio::spawn_local(async move {
                        let _ = out.to_raft.send(msg).await;
                    })
                    .detach();
                }
                ToShard::Reset => self.kv.reset(),
                ToShard::Apply { entries, through } => self.kv.apply(&entries, through),
                ToShard::Answer { req, answer } => self.calls.answered(req, answer),
                ToShard::ServeRead {
                    token,
                    key,
                    index,
                    deadline,
                } => {
                    let (kv, out) = (self.kv.clone(), self.out.clone());
                    glommio::spawn_local(async move {
                        let outcome = if kv.wait_applied(index, deadline).await {
                            kv.serve_local(&key)
                        } else {
                            Err(read_timeout())
                        };
                        let _ = out.to_raft.send(ToRaft::Served { token, outcome }).await;
                    })
                    .detach();
                }
            }
        }
    }

    /// Drains one other shard's queue. Never waits on a queue back to it.
    async fn from_mesh(self: Rc<Self>, rx: ConnectedReceiver<MeshMsg>) {
        while let Some(m) = rx.recv().await {
            match m {
                MeshMsg::Get {
                    from,
                    req,
                    key,
                    policy,
                    deadline,
                } => {
                    let (calls, out) = (self.calls.clone(), self.out.clone());
                    glommio::spawn_local(async move {
                        let outcome = calls.read(key, policy, deadline).await;
                        let _ = out
                            .to_shard(from)
                            .send(MeshMsg::GetReply { req, outcome })
                            .await;
                    })
                    .detach();
                }
                MeshMsg::GetReply { req, outcome } => {
                    self.calls.answered(req, CoreAnswer::Done(outcome))
                }
            }
        }
    }
}

/// This shard's part of the key-value state: its partition, the partition's applied
/// watermark (published for `/status` and gauged), and the readers waiting for it. Only
/// the raft core's queue loop (`Shard::from_raft`) changes it; calls read from it.
pub(super) struct KvState {
    idx: usize,
    n: usize,
    shared: Arc<Shared>,
    part: RefCell<Partition>,
    /// Readers waiting for the watermark to reach an index.
    waiters: RefCell<Vec<(Index, LocalSender<()>)>>,
    metrics: Rc<ShardMetrics>,
}

impl KvState {
    fn new(idx: usize, n: usize, shared: Arc<Shared>, metrics: Rc<ShardMetrics>) -> KvState {
        KvState {
            idx,
            n,
            shared,
            part: RefCell::new(Partition::new(idx, n)),
            waiters: RefCell::default(),
            metrics,
        }
    }

    /// The value of `key`, a key this shard owns, as applied so far.
    pub(super) fn serve_local(&self, key: &[u8]) -> Outcome {
        match self.part.borrow().get(key) {
            Some(v) => Ok(Answer::Value {
                key: key.to_vec(),
                value: v.value.to_vec(),
                revision: v.revision,
            }),
            None => Err(ApiError::NotFound { key: key.to_vec() }),
        }
    }

    /// Waits until this shard has applied through `index`; false at the deadline.
    pub(super) async fn wait_applied(&self, index: Index, deadline: Instant) -> bool {
        if self.part.borrow().applied() >= index {
            return true;
        }
        let (tx, rx) = local_channel::new_bounded(1);
        self.waiters.borrow_mut().push((index, tx));
        self.metrics
            .read_waiters
            .set(self.waiters.borrow().len() as f64);
        let wait = deadline.saturating_duration_since(Instant::now());
        futures_lite::future::or(async { rx.recv().await.is_some() }, async {
            glommio::timer::sleep(wait).await;
            false
        })
        .await
    }

    /// Applies committed entries this shard owns and moves the watermark to `through`.
    fn apply(&self, entries: &[Entry], through: Index) {
        {
            let mut part = self.part.borrow_mut();
            for e in entries {
                if let Err(err) = part.apply(e) {
                    tracing::error!(
                        shard = self.idx,
                        index = e.index,
                        "committed entry not applied: {err}"
                    );
                }
            }
            part.advance(through);
        }
        self.advanced();
    }

    /// Replaces the partition with this shard's part of a snapshot body.
    async fn install(&self, data: &[u8]) -> Result<(), String> {
        let p = decode_in_steps(data, self.idx, self.n).await?;
        let old = std::mem::replace(&mut *self.part.borrow_mut(), p);
        free_in_steps(old);
        self.advanced();
        Ok(())
    }

    /// Empties the partition (watermark 0).
    fn reset(&self) {
        let old = std::mem::replace(
            &mut *self.part.borrow_mut(),
            Partition::new(self.idx, self.n),
        );
        free_in_steps(old);
        self.advanced();
    }

    /// This partition's pairs as of `index` (its watermark), and how many there are.
    // Encoding holds the partition's borrow across yields; only the raft core's queue loop
    // takes it mutably, and that loop is waiting here (see `ToShard::Snapshot`).
    #[allow(clippy::await_holding_refcell_ref)]
    async fn snapshot(&self, index: Index) -> (Vec<u8>, u64) {
        let p = self.part.borrow();
        assert_eq!(p.applied(), index, "snapshot between applies");
        let mut v = Vec::with_capacity(p.state_bytes() as usize);
        let mut e = p.pair_encoder();
        // The raft core may share this executor: a large state is encoded in steps,
        // yielding when glommio's preemption timer says so.
        while !e.encode(&mut v, SNAPSHOT_STEP_BYTES) {
            glommio::yield_if_needed().await;
        }
        (v, e.count)
    }

    /// The partition changed: publish its watermark and size, wake the readers it passed.
    fn advanced(&self) {
        let (applied, bytes, keys) = {
            let p = self.part.borrow();
            (p.applied(), p.state_bytes(), p.len())
        };
        self.metrics.applied_index.set(applied as f64);
        self.metrics.state_bytes.set(bytes as f64);
        self.metrics.keys.set(keys as f64);
        self.shared.state_bytes[self.idx].store(bytes, Ordering::Relaxed);
        self.shared.watermarks[self.idx].store(applied, Ordering::Release);
        self.waiters.borrow_mut().retain(|(i, tx)| {
            if *i <= applied {
                let _ = tx.try_send(());
                false
            } else {
                // Kept even when its reader timed out: dropped once the watermark passes.
                true
            }
        });
        self.metrics
            .read_waiters
            .set(self.waiters.borrow().len() as f64);
    }
}

pub(super) fn read_timeout() -> ApiError {
    ApiError::Timeout {
        what: TimeoutKind::Read,
    }
}

/// Decodes this shard's partition from a snapshot body in steps, like encoding: the raft
/// core may share this executor.
async fn decode_in_steps(data: &[u8], shard: usize, shards: usize) -> Result<Partition, String> {
    let mut d = Snapshot::decoder(data, shard, shards)?;
    while !d.step(SNAPSHOT_STEP_BYTES)? {
        glommio::yield_if_needed().await;
    }
    d.finish()
}

/// Frees a replaced partition a few thousand pairs at a time in a task of its own, so a
/// large state does not hold the executor (and a raft core sharing it) while it goes.
fn free_in_steps(old: Partition) {
    glommio::spawn_local(async move {
        let mut pairs = old.into_pairs();
        while pairs.by_ref().take(FREE_STEP_PAIRS).count() == FREE_STEP_PAIRS {
            glommio::yield_if_needed().await;
        }
    })
    .detach();
}
