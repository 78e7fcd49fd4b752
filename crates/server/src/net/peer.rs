//! Peer transport: framed Raft messages and forwarded client calls between nodes over TCP
//! on the node's one port.
//!
//! Runs on the raft core's executor (glommio sockets). Owns one outbound connection per
//! peer (with reconnect and backoff) and the inbound connections peers open to us, which a
//! shard executor accepts and hands over (`adopt`) after seeing the frame magic. Must not
//! touch the Raft core: received frames go to a bounded inbox the driver reads; outgoing
//! ones come through bounded per-peer queues and are dropped when a queue is full or its
//! peer is down (Raft retransmits; a forwarded call times out at its sender).
//!
//! A peer opens with a handshake frame (cluster id, node id, token); a wrong cluster id or
//! token, an unknown node id, an oversized, corrupt or unexpected frame is refused, counted
//! (`PeerStats` and `ringkv_net_refused_total`) and logged, and the connection closed.
//! Connections, frames, bytes, (re)connects and dropped messages are counted in the
//! transport's `NetMetrics` handles too.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use rkyv::rancor;

use super::wire::{ClientFrame, decode_message, encode_message};
use crate::metrics::{ConnKind, NetMetrics, Traffic};
use crate::wal::meta::{KnownPeers, PeerCheck};

/// The incarnations of the peers met (`<data_dir>/peers`), and the lock that keeps its
/// writes one at a time (each writes the whole file).
pub struct PeerRecord {
    peers: RefCell<KnownPeers>,
    writing: glommio::sync::Semaphore,
}

impl std::fmt::Debug for PeerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerRecord")
    }
}

impl PeerRecord {
    pub fn new(peers: KnownPeers) -> Self {
        Self {
            peers: RefCell::new(peers),
            writing: glommio::sync::Semaphore::new(1),
        }
    }
}
use ringkv_proto::frame::{FrameHeader, FrameKind, HEADER_BYTES, MAGIC};
use ringkv_raft::{Message, NodeId};

/// Settings of the transport.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub node_id: NodeId,
    pub cluster_id: u64,
    pub token: String,
    /// Every peer's address (this node's own entry is ignored).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub frame_bytes_max: usize,
    /// Messages queued per peer while its connection is busy or down.
    pub outbox_max: usize,
    pub reconnect_backoff_max_ms: u64,
    /// Addresses to dial instead of peers' own (`testing.peer_dial`; empty outside the
    /// fault campaign).
    pub dial: BTreeMap<NodeId, SocketAddr>,
    /// Outbound peer connections leave from this address (the node's own listen IP), so
    /// peers and firewalls see the address the node is known by; `None`: the kernel's
    /// choice (a listen address of 0.0.0.0).
    pub source_ip: Option<std::net::IpAddr>,
    /// This node's incarnation (see `wal::meta`), sent in every handshake.
    pub incarnation: u64,
    /// The incarnations of peers met; `None` skips the check (tests of framing only).
    pub known: Option<Rc<PeerRecord>>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Eq)]
pub struct Hello {
    pub cluster_id: u64,
    pub node_id: u64,
    pub token: String,
    pub incarnation: u64,
}

/// The acceptor's answer to a `Hello`, on the same connection.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Eq)]
pub struct HelloAck {
    /// `ACK_OK`, `ACK_WIPED` (the connecting node's incarnation changed) or `ACK_REFUSED`.
    pub code: u8,
    pub incarnation: u64,
    pub reason: String,
}

/// Bytes of queued frames a peer sender writes at once.
const BATCH_BYTES: usize = 1 << 20;

/// How long an inbound connection may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer of an inbound peer connection.
const PEER_READ_BUFFER_BYTES: usize = 64 << 10;

pub const ACK_OK: u8 = 0;
pub const ACK_WIPED: u8 = 1;
pub const ACK_REFUSED: u8 = 2;
/// The connecting node was removed from the cluster.
pub const ACK_REMOVED: u8 = 3;

/// How the last handshake with a peer went (outbound side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    Accepted,
    /// The peer refused us (wrong cluster, token, unknown id) or we refused its answer.
    Refused(String),
    /// The peer knows this node under another incarnation: our data directory was wiped
    /// or replaced. The node must stop.
    WipedSelf(String),
    /// This node was removed from the cluster. It must stop.
    RemovedSelf(String),
}

/// Counters (for tests and metrics).
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Refused frames and handshakes by reason.
    pub refused: BTreeMap<&'static str, u64>,
    pub delivered: u64,
    pub sent: u64,
    pub dropped_outbox_full: u64,
    pub connects: u64,
    /// Peers whose outbound connection is up (handshake accepted, no write failed since).
    pub connected: std::collections::BTreeSet<NodeId>,
}

/// Hands a non-frame connection (HTTP) to its handler, with the bytes already read.
pub type HttpHandler = Rc<dyn Fn(TcpStream, Vec<u8>)>;

/// What a peer connection delivers to the driver.
#[derive(Debug)]
pub enum Inbound {
    Raft(Message),
    /// The connection to this peer broke: what was queued for it is lost (Raft's
    /// `report_unreachable`).
    Unreachable(NodeId),
    /// A forwarded client call or its answer, from peer `from`.
    Client {
        from: NodeId,
        frame: ClientFrame,
    },
}

/// What the driver sends to a peer.
enum Outgoing {
    Raft(Message),
    /// A forwarded call or answer, dropped unsent once `Instant` passed (its sender has
    /// answered 504 by then).
    Client(ClientFrame, Instant),
}

pub struct Transport {
    cfg: Rc<PeerConfig>,
    /// The outcome of the latest outbound handshake with each peer.
    pub handshakes: Rc<RefCell<BTreeMap<NodeId, Handshake>>>,
    /// The peers now (membership changes add and remove them): handshakes from others
    /// are refused, and a sender stops when its peer leaves.
    book: Rc<RefCell<BTreeMap<NodeId, SocketAddr>>>,
    /// Removed members: their handshakes are answered "removed".
    retired: Rc<RefCell<std::collections::BTreeSet<NodeId>>>,
    outboxes: RefCell<BTreeMap<NodeId, LocalSender<Outgoing>>>,
    inbox: Rc<LocalSender<Inbound>>,
    pub stats: Rc<RefCell<PeerStats>>,
    /// Prometheus handles of this executor (no-ops without a recorder).
    metrics: Rc<NetMetrics>,
    _tasks: Vec<glommio::task::JoinHandle<()>>,
}

fn refuse(stats: &RefCell<PeerStats>, why: &'static str) {
    refuse_with(stats, why, "");
}

/// `refuse`, with what exactly was wrong for the log (the metric counts by `why` only).
fn refuse_with(stats: &RefCell<PeerStats>, why: &'static str, detail: &str) {
    if detail.is_empty() {
        tracing::warn!("refused peer input ({why}); connection closed");
    } else {
        tracing::warn!("refused peer input ({why}: {detail}); connection closed");
    }
    *stats.borrow_mut().refused.entry(why).or_default() += 1;
    NetMetrics::refused(why);
}

async fn write_frame(
    s: &mut (impl AsyncWrite + Unpin),
    kind: FrameKind,
    body: &[u8],
) -> std::io::Result<()> {
    let h = FrameHeader::for_body(kind, body).encode();
    s.write_all(&h).await?;
    s.write_all(body).await?;
    s.flush().await
}

/// Reads one frame's body after its header; the body lands in a 16-byte aligned buffer
/// (rkyv validates in place).
async fn read_body(s: &mut (impl AsyncRead + Unpin), h: &FrameHeader) -> std::io::Result<Bytes> {
    let mut v = rkyv::util::AlignedVec::<16>::with_capacity(h.body_bytes as usize);
    v.resize(h.body_bytes as usize, 0);
    s.read_exact(&mut v).await?;
    Ok(Bytes::from_owner(v))
}

impl Transport {
    /// Starts a sender per peer. Frames received on adopted or accepted connections go to
    /// `inbox`.
    pub fn start(cfg: PeerConfig, inbox: LocalSender<Inbound>) -> Self {
        let stats = Rc::new(RefCell::new(PeerStats::default()));
        let handshakes: Rc<RefCell<BTreeMap<NodeId, Handshake>>> = Rc::default();
        let book = Rc::new(RefCell::new(cfg.peers.clone()));
        book.borrow_mut().remove(&cfg.node_id);
        let t = Self {
            cfg: Rc::new(cfg),
            handshakes,
            book,
            retired: Rc::default(),
            outboxes: RefCell::default(),
            inbox: Rc::new(inbox),
            stats,
            metrics: Rc::new(NetMetrics::new()),
            _tasks: Vec::new(),
        };
        let peers: Vec<_> = t.book.borrow().keys().copied().collect();
        for id in peers {
            t.start_sender(id);
        }
        t
    }

    fn start_sender(&self, id: NodeId) {
        let (tx, rx) = local_channel::new_bounded::<Outgoing>(self.cfg.outbox_max);
        self.outboxes.borrow_mut().insert(id, tx);
        let ctx = SenderCtx {
            cfg: self.cfg.clone(),
            stats: self.stats.clone(),
            metrics: self.metrics.clone(),
            handshakes: self.handshakes.clone(),
            book: self.book.clone(),
            inbox: self.inbox.clone(),
        };
        glommio::spawn_local(async move { send_loop(id, &ctx, rx).await }).detach();
    }

    /// A new member (or a member's new address): connect to it from now on.
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) {
        if id == self.cfg.node_id || self.retired.borrow().contains(&id) {
            return;
        }
        self.book.borrow_mut().insert(id, addr);
        if !self.outboxes.borrow().contains_key(&id) {
            self.start_sender(id);
        }
    }

    /// A member whose removal committed: its handshakes are answered "removed" and its
    /// connections to us closed from now on (its sender stays until `remove_peer`, so a
    /// last notice can reach it). True if it was not retired yet.
    pub fn retire(&self, id: NodeId) -> bool {
        self.retired.borrow_mut().insert(id)
    }

    /// A removed member: its sender stops and its handshakes are refused.
    pub fn remove_peer(&self, id: NodeId) {
        self.retired.borrow_mut().insert(id);
        self.book.borrow_mut().remove(&id);
        self.outboxes.borrow_mut().remove(&id);
        self.stats.borrow_mut().connected.remove(&id);
    }

    /// The peers' addresses now.
    pub fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.book.borrow().clone()
    }

    /// Accepts on `listener` (used when this executor owns the port alone, as in tests):
    /// frame connections are adopted, anything else goes to `http`.
    pub fn serve_listener(&mut self, listener: TcpListener, http: HttpHandler) {
        let ctx = self.inbound_ctx();
        self._tasks.push(
            glommio::spawn_local(async move {
                loop {
                    let mut s = match listener.accept().await {
                        Ok(s) => s,
                        Err(_) => {
                            refuse(&ctx.stats, "accept_error");
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let mut first = [0u8; 4];
                    let (ctx, http) = (ctx.clone(), http.clone());
                    glommio::spawn_local(async move {
                        if s.read_exact(&mut first).await.is_err() {
                            return;
                        }
                        if first != MAGIC {
                            http(s, first.to_vec());
                            return;
                        }
                        let mut h = [0u8; HEADER_BYTES];
                        h[..4].copy_from_slice(&first);
                        let read = futures_lite::future::or(
                            async { s.read_exact(&mut h[4..]).await.is_ok() },
                            async {
                                glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
                                false
                            },
                        );
                        if read.await {
                            serve_inbound(s, h, &ctx).await;
                        }
                    })
                    .detach();
                }
            })
            .detach(),
        );
    }

    /// Serves an inbound connection whose first frame header (a handshake's) was already
    /// read, e.g. by a shard executor that accepted it.
    pub fn adopt(&self, s: TcpStream, first: [u8; HEADER_BYTES]) {
        let ctx = self.inbound_ctx();
        glommio::spawn_local(async move { serve_inbound(s, first, &ctx).await }).detach();
    }

    fn inbound_ctx(&self) -> InboundCtx {
        InboundCtx {
            cfg: self.cfg.clone(),
            stats: self.stats.clone(),
            metrics: self.metrics.clone(),
            inbox: self.inbox.clone(),
            book: self.book.clone(),
            retired: self.retired.clone(),
        }
    }

    /// Queues a message for its peer; drops it (and says so) when the queue is full or
    /// the peer is unknown.
    pub fn send(&self, m: Message) -> bool {
        let to = m.to;
        self.push(to, Outgoing::Raft(m))
    }

    /// Queues a forwarded client call or answer for peer `to`, to be sent before
    /// `deadline`; false when it was dropped.
    pub fn send_client(&self, to: NodeId, f: ClientFrame, deadline: Instant) -> bool {
        self.push(to, Outgoing::Client(f, deadline))
    }

    fn push(&self, to: NodeId, o: Outgoing) -> bool {
        match self.outboxes.borrow().get(&to) {
            Some(tx) if tx.try_send(o).is_ok() => true,
            _ => {
                self.stats.borrow_mut().dropped_outbox_full += 1;
                self.metrics.peer_dropped.increment(1);
                false
            }
        }
    }
}

/// What a peer's sender task shares with the transport.
struct SenderCtx {
    cfg: Rc<PeerConfig>,
    stats: Rc<RefCell<PeerStats>>,
    metrics: Rc<NetMetrics>,
    handshakes: Rc<RefCell<BTreeMap<NodeId, Handshake>>>,
    book: Rc<RefCell<BTreeMap<NodeId, SocketAddr>>>,
    /// Where the loss of a connection is reported (`Inbound::Unreachable`).
    inbox: Rc<LocalSender<Inbound>>,
}

/// Keeps one outbound connection to peer `id` and writes its queue into it. When an
/// established connection breaks, the driver is told (`Inbound::Unreachable`): the frames
/// in hand are lost, so the Raft core should stop pipelining to that peer and probe it.
async fn send_loop(id: NodeId, ctx: &SenderCtx, rx: local_channel::LocalReceiver<Outgoing>) {
    let (book, cfg, stats, metrics, handshakes) = (
        &*ctx.book,
        &*ctx.cfg,
        &*ctx.stats,
        &*ctx.metrics,
        &*ctx.handshakes,
    );
    let mut backoff_ms = 10;
    let mut failures = 0u64;
    // A connection to this peer was up before (the next one is a reconnect).
    let mut was_up = false;
    loop {
        // The peer left the membership: stop (its queue is gone too).
        let Some(addr) = book.borrow().get(&id).copied() else {
            return;
        };
        let addr = cfg.dial.get(&id).copied().unwrap_or(addr);
        // Bounded: SYNs into a black hole would otherwise wait out the kernel's retries.
        let connect_limit = Duration::from_millis(cfg.reconnect_backoff_max_ms.max(1000));
        let source = cfg.source_ip;
        let attempt = futures_lite::future::or(
            async move {
                match source {
                    None => TcpStream::connect(addr).await.map_err(|e| e.to_string()),
                    Some(ip) => connect_from(ip, addr, connect_limit).await,
                }
            },
            async {
                glommio::timer::sleep(connect_limit).await;
                Err(format!("no answer within {connect_limit:?}"))
            },
        );
        let mut s = match attempt.await {
            Ok(s) => s,
            Err(e) => {
                metrics.peer_connect_failures.increment(1);
                if failures == 0 {
                    tracing::warn!(
                        node = cfg.node_id,
                        peer = id,
                        %addr,
                        "connection to peer failed: {e}; retrying with backoff up to {} ms",
                        cfg.reconnect_backoff_max_ms
                    );
                }
                failures += 1;
                glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(cfg.reconnect_backoff_max_ms);
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        stats.borrow_mut().connects += 1;
        metrics.peer_connects.increment(1);
        let hello = Hello {
            cluster_id: cfg.cluster_id,
            node_id: cfg.node_id,
            token: cfg.token.clone(),
            incarnation: cfg.incarnation,
        };
        let hb = rkyv::to_bytes::<rancor::Error>(&hello).expect("in memory");
        if write_frame(&mut s, FrameKind::Handshake, &hb)
            .await
            .is_err()
        {
            continue;
        }
        let outcome = match read_ack(&mut s, cfg).await {
            Ok(ack) => judge_ack(id, &ack, cfg).await,
            // No answer: the connection broke (retry as for a failed connect).
            Err(_) => {
                failures += 1;
                glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(cfg.reconnect_backoff_max_ms);
                continue;
            }
        };
        let previous = handshakes.borrow_mut().insert(id, outcome.clone());
        if outcome == Handshake::Accepted {
            stats.borrow_mut().connected.insert(id);
        }
        match outcome {
            Handshake::Accepted => {}
            Handshake::Refused(why) | Handshake::WipedSelf(why) | Handshake::RemovedSelf(why) => {
                if previous.as_ref() != handshakes.borrow().get(&id) {
                    tracing::error!(node = cfg.node_id, peer = id, %addr, "handshake refused: {why}");
                }
                // The same backoff as a failed connect: a refusal can end soon (a joiner
                // is refused until the cluster has added it).
                glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(cfg.reconnect_backoff_max_ms);
                continue;
            }
        }
        if failures > 0 {
            tracing::warn!(
                node = cfg.node_id,
                peer = id,
                %addr,
                "connection to peer established after {failures} failed attempts"
            );
        } else {
            tracing::info!(node = cfg.node_id, peer = id, %addr, "connection to peer established");
        }
        failures = 0;
        backoff_ms = 10;
        if was_up {
            metrics.peer_reconnects.increment(1);
        }
        was_up = true;
        let _open = metrics.open(ConnKind::PeerOut);
        // Send until the connection breaks; the message in hand is lost with it (Raft
        // retransmits; a lost forwarded call times out at its sender).
        // Frames queued together go out in one write (up to BATCH_BYTES).
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let Some(first) = rx.recv().await else {
                return; // removed
            };
            let mut next = Some(first);
            let mut frames = 0u64;
            while let Some(o) = next.take() {
                match &o {
                    Outgoing::Raft(m) => {
                        append_frame(&mut buf, FrameKind::Raft, &encode_message(m))
                    }
                    Outgoing::Client(_, deadline) if *deadline <= Instant::now() => {}
                    Outgoing::Client(f, _) => {
                        append_frame(&mut buf, FrameKind::Client, &f.encode())
                    }
                }
                frames += 1;
                if buf.len() < BATCH_BYTES
                    && let Some(Some(more)) = futures_lite::future::poll_once(rx.recv()).await
                {
                    next = Some(more);
                }
            }
            if buf.is_empty() {
                continue;
            }
            if let Err(e) = s.write_all(&buf).await {
                stats.borrow_mut().connected.remove(&id);
                tracing::warn!(node = cfg.node_id, peer = id, %addr, "connection to peer lost: {e}");
                // The driver may be gone (the node stops): nothing to tell then.
                let _ = ctx.inbox.send(Inbound::Unreachable(id)).await;
                break;
            }
            metrics.sent(Traffic::Peer, frames, buf.len() as u64);
            buf.clear();
            stats.borrow_mut().sent += frames;
        }
    }
}

/// Appends one frame (header and body) to an output buffer.
fn append_frame(out: &mut Vec<u8>, kind: FrameKind, body: &[u8]) {
    out.extend_from_slice(&FrameHeader::for_body(kind, body).encode());
    out.extend_from_slice(body);
}

/// Reads the acceptor's `HelloAck` (bounded wait: a silent acceptor counts as a broken
/// connection).
async fn read_ack(s: &mut TcpStream, cfg: &PeerConfig) -> std::io::Result<HelloAck> {
    let read = async {
        let mut h = [0u8; HEADER_BYTES];
        s.read_exact(&mut h).await?;
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let hdr =
            FrameHeader::decode(&h, cfg.frame_bytes_max).map_err(|e| bad(format!("{e:?}")))?;
        let body = read_body(s, &hdr).await?;
        hdr.check_body(&body).map_err(|e| bad(format!("{e:?}")))?;
        if hdr.kind != FrameKind::Handshake {
            return Err(bad("expected a handshake answer".into()));
        }
        let a = rkyv::access::<ArchivedHelloAck, rancor::BoxedError>(&body)
            .map_err(|e| bad(e.to_string()))?;
        Ok(HelloAck {
            code: a.code,
            incarnation: a.incarnation.to_native(),
            reason: a.reason.to_string(),
        })
    };
    futures_lite::future::or(read, async {
        glommio::timer::sleep(Duration::from_secs(2)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no handshake answer",
        ))
    })
    .await
}

/// What an acceptor's answer means for this node.
async fn judge_ack(peer: NodeId, ack: &HelloAck, cfg: &PeerConfig) -> Handshake {
    match ack.code {
        ACK_OK => match check_incarnation(cfg, peer, ack.incarnation).await {
            Ok(()) => Handshake::Accepted,
            Err((_, why)) => Handshake::Refused(why),
        },
        ACK_WIPED => Handshake::WipedSelf(ack.reason.clone()),
        ACK_REMOVED => Handshake::RemovedSelf(ack.reason.clone()),
        _ => Handshake::Refused(ack.reason.clone()),
    }
}

/// Checks (and on first meeting records) a peer's incarnation.
/// Errors carry the answer code: `ACK_WIPED` for a changed incarnation, `ACK_REFUSED`
/// when this node cannot record it (its own disk trouble, not the peer's). The record's
/// fsync and rename run on the executor's blocking pool, never on the executor itself
/// (the raft core's, which must keep ticking); one write at a time.
async fn check_incarnation(
    cfg: &PeerConfig,
    peer: NodeId,
    incarnation: u64,
) -> Result<(), (u8, String)> {
    let Some(known) = &cfg.known else {
        return Ok(());
    };
    // The borrow ends here, before any await.
    let seen = known.peers.borrow().lookup(peer, incarnation);
    let checked = match seen {
        Some(c) => Ok(c),
        None => record(known, peer, incarnation).await,
    };
    match checked {
        Ok(PeerCheck::Known | PeerCheck::Recorded) => Ok(()),
        Ok(PeerCheck::Changed(was)) => Err((
            ACK_WIPED,
            format!(
                "node {peer} presents incarnation {incarnation:016x}, but node {} met it as \
             {was:016x}: node {peer}'s data directory was wiped or replaced. A node that \
             lost its data must not rejoin under its old id (it may have voted or \
             acknowledged entries it no longer has): remove node {peer} from the cluster, \
             then add it back under a new node id with an empty data directory",
                cfg.node_id
            ),
        )),
        Err(e) => Err((
            ACK_REFUSED,
            format!(
                "node {} cannot record node {peer}'s incarnation: {e}",
                cfg.node_id
            ),
        )),
    }
}

/// Records a first meeting durably: one writer at a time, the file written on the
/// blocking pool. Another connection may have recorded the peer while this one waited.
async fn record(
    known: &PeerRecord,
    peer: NodeId,
    incarnation: u64,
) -> Result<PeerCheck, crate::wal::meta::IdentityError> {
    // Released when dropped (plain `acquire` would keep the unit).
    let _one_writer = known.writing.acquire_permit(1).await;
    let seen = known.peers.borrow().lookup(peer, incarnation);
    if let Some(c) = seen {
        return Ok(c);
    }
    let file = known.peers.borrow().record(peer, incarnation);
    glommio::executor()
        .spawn_blocking(move || file.write())
        .await?;
    known.peers.borrow_mut().recorded(peer, incarnation);
    Ok(PeerCheck::Recorded)
}

async fn write_ack(s: &mut (impl AsyncWrite + Unpin), code: u8, incarnation: u64, reason: &str) {
    let ack = HelloAck {
        code,
        incarnation,
        reason: reason.to_string(),
    };
    let b = rkyv::to_bytes::<rancor::Error>(&ack).expect("in memory");
    let _ = write_frame(s, FrameKind::Handshake, &b).await;
}

/// What serving an inbound connection needs from its transport (shared handles, so a
/// connection task owns a copy).
#[derive(Clone)]
struct InboundCtx {
    cfg: Rc<PeerConfig>,
    stats: Rc<RefCell<PeerStats>>,
    metrics: Rc<NetMetrics>,
    inbox: Rc<LocalSender<Inbound>>,
    book: Rc<RefCell<BTreeMap<NodeId, SocketAddr>>>,
    retired: Rc<RefCell<std::collections::BTreeSet<NodeId>>>,
}

async fn serve_inbound(s: TcpStream, first: [u8; HEADER_BYTES], ctx: &InboundCtx) {
    let (cfg, stats, metrics, inbox, book, retired) = (
        &*ctx.cfg,
        &*ctx.stats,
        &*ctx.metrics,
        &*ctx.inbox,
        &*ctx.book,
        &*ctx.retired,
    );
    let _open = metrics.open(ConnKind::PeerIn);
    // A peer's frames arrive back to back: one receive takes many of them.
    let mut s = s.buffered_with(glommio::net::Preallocated::new(PEER_READ_BUFFER_BYTES));
    // The first header was read by whoever accepted the connection.
    let mut h = first;
    let mut peer: Option<NodeId> = None;
    loop {
        if peer.is_some() && s.read_exact(&mut h).await.is_err() {
            return;
        }
        let hdr = match FrameHeader::decode(&h, cfg.frame_bytes_max) {
            Ok(hdr) => hdr,
            Err(e) => {
                refuse(
                    stats,
                    match e {
                        ringkv_proto::frame::FrameError::TooLarge { .. } => "too_large",
                        _ => "bad_header",
                    },
                );
                return; // the stream cannot be re-synchronised
            }
        };
        let body = futures_lite::future::or(async { read_body(&mut s, &hdr).await.ok() }, async {
            // Before the handshake, a body must follow its header promptly too.
            if peer.is_some() {
                std::future::pending::<()>().await;
            }
            glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
            None
        });
        let Some(body) = body.await else {
            return;
        };
        if hdr.check_body(&body).is_err() {
            refuse(stats, "checksum");
            return;
        }
        metrics.received(Traffic::Peer, 1, (HEADER_BYTES + body.len()) as u64);
        // A peer removed since its handshake: close its connection (it learns why when it
        // connects again).
        if peer.is_some_and(|id| retired.borrow().contains(&id)) {
            return;
        }
        match (peer, hdr.kind) {
            (None, FrameKind::Handshake) => {
                let Ok(hello) = rkyv::access::<ArchivedHello, rancor::BoxedError>(&body) else {
                    refuse(stats, "bad_handshake");
                    return;
                };
                let id = hello.node_id.to_native();
                let refusal = if hello.cluster_id.to_native() != cfg.cluster_id {
                    Some((
                        "wrong_cluster",
                        format!(
                            "node {} serves cluster {:016x}, not {:016x}: check initial_cluster \
                             and cluster_token on both nodes",
                            cfg.node_id,
                            cfg.cluster_id,
                            hello.cluster_id.to_native()
                        ),
                    ))
                } else if hello.token.as_str() != cfg.token {
                    Some((
                        "wrong_token",
                        format!("node {} refuses a wrong cluster_token", cfg.node_id),
                    ))
                } else if retired.borrow().contains(&id) {
                    Some((
                        "removed_node",
                        format!(
                            "node {id} was removed from the cluster (node {} knows); a removed \
                             id never comes back: add the machine under a new node id",
                            cfg.node_id
                        ),
                    ))
                } else if id == cfg.node_id || !book.borrow().contains_key(&id) {
                    Some((
                        "unknown_node",
                        format!("node {id} is not a member known to node {}", cfg.node_id),
                    ))
                } else {
                    None
                };
                if let Some((why, text)) = refusal {
                    refuse(stats, why);
                    tracing::warn!(node = cfg.node_id, peer = id, "refused a peer: {text}");
                    let code = if why == "removed_node" {
                        ACK_REMOVED
                    } else {
                        ACK_REFUSED
                    };
                    write_ack(&mut s, code, cfg.incarnation, &text).await;
                    return;
                }
                if let Err((code, text)) =
                    check_incarnation(cfg, id, hello.incarnation.to_native()).await
                {
                    refuse(stats, "changed_incarnation");
                    tracing::error!(node = cfg.node_id, peer = id, "refused a peer: {text}");
                    write_ack(&mut s, code, cfg.incarnation, &text).await;
                    return;
                }
                write_ack(&mut s, ACK_OK, cfg.incarnation, "").await;
                peer = Some(id);
            }
            (Some(id), FrameKind::Raft) => {
                let m = match decode_message(&body) {
                    Ok(m) => m,
                    Err(e) => {
                        refuse_with(stats, "bad_message", &format!("from node {id}: {e}"));
                        return;
                    }
                };
                if m.from != id || m.to != cfg.node_id {
                    refuse(stats, "misaddressed");
                    return;
                }
                // Backpressure: a full inbox slows this peer's stream down.
                if inbox.send(Inbound::Raft(m)).await.is_err() {
                    return;
                }
                stats.borrow_mut().delivered += 1;
            }
            (Some(id), FrameKind::Client) => {
                let frame = match ClientFrame::decode(&body) {
                    Ok(f) => f,
                    Err(e) => {
                        refuse_with(stats, "bad_message", &format!("from node {id}: {e}"));
                        return;
                    }
                };
                if inbox
                    .send(Inbound::Client { from: id, frame })
                    .await
                    .is_err()
                {
                    return;
                }
                stats.borrow_mut().delivered += 1;
            }
            _ => {
                refuse(stats, "unexpected_frame");
                return;
            }
        }
    }
}

/// Connects to `to` from `from` (port chosen by the kernel). Binding before connecting
/// has no io_uring form in glommio, so the connect runs on the executor's blocking pool;
/// the connected socket then joins the executor.
async fn connect_from(
    from: std::net::IpAddr,
    to: SocketAddr,
    limit: Duration,
) -> Result<TcpStream, String> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let std_stream = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<std::net::TcpStream> {
            let domain = if to.is_ipv4() {
                socket2::Domain::IPV4
            } else {
                socket2::Domain::IPV6
            };
            let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
            s.bind(&SocketAddr::new(from, 0).into())?;
            s.connect_timeout(&to.into(), limit)?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        })
        .await
        .map_err(|e| format!("{e} (from {from})"))?;
    // SAFETY: the descriptor is a connected TCP socket that nothing else owns.
    Ok(unsafe { TcpStream::from_raw_fd(std_stream.into_raw_fd()) })
}
