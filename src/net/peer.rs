//! Peer transport: framed Raft messages between nodes over TCP on the node's one port.
//!
//! Runs on the raft core's executor (glommio sockets). Owns the listener's accept loop,
//! one outbound connection per peer (with reconnect and backoff) and the inbound
//! connections peers open to us. Must not touch the Raft core: received messages go to a
//! bounded inbox the driver reads; outgoing ones come through bounded per-peer queues and
//! are dropped when a queue is full or its peer is down (Raft retransmits).
//!
//! A connection is told apart by its first bytes: the frame magic means a peer (or, later,
//! a native client); anything else is handed to the HTTP handler. A peer opens with a
//! handshake frame (cluster id, node id, token); a wrong cluster id or token, or an
//! unknown node id, is refused and counted.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use rkyv::rancor;

use super::frame::{FrameHeader, FrameKind, HEADER_BYTES, MAGIC};
use super::wire::{decode_message, encode_message};
use crate::raft::{Message, NodeId};

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
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Eq)]
pub struct Hello {
    pub cluster_id: u64,
    pub node_id: u64,
    pub token: String,
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
}

/// Hands a non-frame connection (HTTP) to its handler, with the bytes already read.
pub type HttpHandler = Rc<dyn Fn(TcpStream, Vec<u8>)>;

pub struct Transport {
    outboxes: BTreeMap<NodeId, LocalSender<Message>>,
    pub stats: Rc<RefCell<PeerStats>>,
    local_addr: SocketAddr,
    _tasks: Vec<glommio::task::JoinHandle<()>>,
}

fn refuse(stats: &RefCell<PeerStats>, why: &'static str) {
    *stats.borrow_mut().refused.entry(why).or_default() += 1;
}

async fn write_frame(s: &mut TcpStream, kind: FrameKind, body: &[u8]) -> std::io::Result<()> {
    let h = FrameHeader::for_body(kind, body).encode();
    s.write_all(&h).await?;
    s.write_all(body).await?;
    s.flush().await
}

/// Reads one frame's body after its header; the body lands in a 16-byte aligned buffer
/// (rkyv validates in place).
async fn read_body(s: &mut TcpStream, h: &FrameHeader) -> std::io::Result<Bytes> {
    let mut v = rkyv::util::AlignedVec::<16>::with_capacity(h.body_bytes as usize);
    v.resize(h.body_bytes as usize, 0);
    s.read_exact(&mut v).await?;
    Ok(Bytes::from_owner(v))
}

impl Transport {
    /// Starts the accept loop on `listener` and a sender per peer. Received messages go to
    /// `inbox`; non-frame connections to `http`.
    pub fn start(
        cfg: PeerConfig,
        listener: TcpListener,
        inbox: LocalSender<Message>,
        http: HttpHandler,
    ) -> Self {
        let stats = Rc::new(RefCell::new(PeerStats::default()));
        let cfg = Rc::new(cfg);
        let local_addr = listener.local_addr().expect("bound listener");
        let inbox = Rc::new(inbox);
        let mut tasks = Vec::new();
        {
            let (cfg, stats) = (cfg.clone(), stats.clone());
            tasks.push(
                glommio::spawn_local(async move {
                    loop {
                        let s = match listener.accept().await {
                            Ok(s) => s,
                            Err(_) => {
                                refuse(&stats, "accept_error");
                                glommio::timer::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        };
                        let (cfg, stats, inbox, http) =
                            (cfg.clone(), stats.clone(), inbox.clone(), http.clone());
                        glommio::spawn_local(async move {
                            serve_inbound(s, &cfg, &stats, &inbox, http).await;
                        })
                        .detach();
                    }
                })
                .detach(),
            );
        }
        let mut outboxes = BTreeMap::new();
        for (&id, &addr) in cfg.peers.iter().filter(|(id, _)| **id != cfg.node_id) {
            let (tx, rx) = local_channel::new_bounded::<Message>(cfg.outbox_max);
            outboxes.insert(id, tx);
            let (cfg, stats) = (cfg.clone(), stats.clone());
            tasks.push(
                glommio::spawn_local(async move {
                    let mut backoff_ms = 10;
                    loop {
                        let Ok(mut s) = TcpStream::connect(addr).await else {
                            glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
                            backoff_ms = (backoff_ms * 2).min(cfg.reconnect_backoff_max_ms);
                            continue;
                        };
                        let _ = s.set_nodelay(true);
                        stats.borrow_mut().connects += 1;
                        let hello = Hello {
                            cluster_id: cfg.cluster_id,
                            node_id: cfg.node_id,
                            token: cfg.token.clone(),
                        };
                        let hb = rkyv::to_bytes::<rancor::Error>(&hello).expect("in memory");
                        if write_frame(&mut s, FrameKind::Handshake, &hb)
                            .await
                            .is_err()
                        {
                            continue;
                        }
                        backoff_ms = 10;
                        // Send until the connection breaks; the message in hand is lost
                        // with it (Raft retransmits).
                        while let Some(m) = rx.recv().await {
                            let body = encode_message(&m);
                            if write_frame(&mut s, FrameKind::Raft, &body).await.is_err() {
                                break;
                            }
                            stats.borrow_mut().sent += 1;
                        }
                    }
                })
                .detach(),
            );
        }
        Self {
            outboxes,
            stats,
            local_addr,
            _tasks: tasks,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Queues a message for its peer; drops it (and says so) when the queue is full or
    /// the peer is unknown.
    pub fn send(&self, m: Message) -> bool {
        match self.outboxes.get(&m.to) {
            Some(tx) if tx.try_send(m).is_ok() => true,
            _ => {
                self.stats.borrow_mut().dropped_outbox_full += 1;
                false
            }
        }
    }
}

async fn serve_inbound(
    mut s: TcpStream,
    cfg: &PeerConfig,
    stats: &RefCell<PeerStats>,
    inbox: &LocalSender<Message>,
    http: HttpHandler,
) {
    let mut first = [0u8; 4];
    if s.read_exact(&mut first).await.is_err() {
        return;
    }
    if first != MAGIC {
        http(s, first.to_vec());
        return;
    }
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(&first);
    let mut peer: Option<NodeId> = None;
    loop {
        if peer.is_some() && s.read_exact(&mut h).await.is_err() {
            return;
        }
        if peer.is_none() && s.read_exact(&mut h[4..]).await.is_err() {
            return;
        }
        let hdr = match FrameHeader::decode(&h, cfg.frame_bytes_max) {
            Ok(hdr) => hdr,
            Err(e) => {
                refuse(
                    stats,
                    match e {
                        super::frame::FrameError::TooLarge { .. } => "too_large",
                        _ => "bad_header",
                    },
                );
                return; // the stream cannot be re-synchronised
            }
        };
        let Ok(body) = read_body(&mut s, &hdr).await else {
            return;
        };
        if hdr.check_body(&body).is_err() {
            refuse(stats, "checksum");
            return;
        }
        match (peer, hdr.kind) {
            (None, FrameKind::Handshake) => {
                let Ok(hello) = rkyv::access::<ArchivedHello, rancor::BoxedError>(&body) else {
                    refuse(stats, "bad_handshake");
                    return;
                };
                let id = hello.node_id.to_native();
                if hello.cluster_id.to_native() != cfg.cluster_id {
                    refuse(stats, "wrong_cluster");
                    tracing::warn!(peer = id, "refused a peer from another cluster");
                    return;
                }
                if hello.token.as_str() != cfg.token {
                    refuse(stats, "wrong_token");
                    tracing::warn!(peer = id, "refused a peer with a wrong cluster_token");
                    return;
                }
                if id == cfg.node_id || !cfg.peers.contains_key(&id) {
                    refuse(stats, "unknown_node");
                    tracing::warn!(peer = id, "refused a peer that is not a member");
                    return;
                }
                peer = Some(id);
            }
            (Some(id), FrameKind::Raft) => {
                let m = match decode_message(&body) {
                    Ok(m) => m,
                    Err(_) => {
                        refuse(stats, "bad_message");
                        return;
                    }
                };
                if m.from != id || m.to != cfg.node_id {
                    refuse(stats, "misaddressed");
                    return;
                }
                // Backpressure: a full inbox slows this peer's stream down.
                if inbox.send(m).await.is_err() {
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
