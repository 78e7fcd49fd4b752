//! The raft core: the Raft driver loop of a node.
//!
//! Runs in its own task queue on the executor pinned to `runtime.raft_core` (shared with
//! the shard on that CPU, or dedicated when no shard runs there). Owns the pure Raft core, the WAL,
//! the snapshot store, the peer transport, the requests it is carrying out (proposed
//! writes by index, read indexes by id, calls forwarded to the leader, calls parked while
//! no leader is known), the publication of the `LeaseView` and the export of the raft
//! metrics (the pure core's `Counters` and state, read after each input that can change
//! them; gauges once per loop turn). Must not touch a shard's partition: committed
//! entries and answers go out through the shards' queues.
//!
//! One loop turn: take every queued event (client calls from shards, peer frames), tick
//! when due, then drive: each Raft `Ready` is persisted (the WAL batches it), the lease
//! view published, messages queued to peers, committed entries handed to the shards, and
//! answers queued; finally the shard queues are flushed (waiting when one is full).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::rc::Rc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::ConnectedSender;
use glommio::net::TcpStream;

use super::members;
use super::{AdminCall, CoreAnswer, CoreQueues, Lease, ReqId, Shared, ToRaft, ToShard};
use crate::config::{MemberRole, NodeConfig};
use crate::metrics::RaftMetrics;
use crate::net::peer::Handshake;
use crate::net::peer::{Inbound, PeerConfig, Transport};
use crate::net::wire::ClientFrame;
use crate::shard::{Command, pair_bytes, route};
use crate::wal::meta::{KnownPeers, NodeMeta, cluster_id, new_incarnation};
use crate::wal::{DmaDisk, SnapshotStore, Wal, WalError};
use ringkv_proto::outcome::{
    Answer, ApiError, MemberRole as StatusMemberRole, MemberStatus, NoLeaderReason, NodeRole,
    NodeStatus, Outcome, TimeoutKind, UnavailableReason, WalStatus,
};
use ringkv_raft::{
    Body, Counters, EntryKind, Index, Membership, NodeId, ProposeError, Raft, ReadError,
    ReadPolicy, Restore, Role, SnapshotMeta, Term,
};

/// Calls held while no leader is known (beyond it: 503 at once).
const PARKED_MAX: usize = 4096;
/// How long a stopping leader waits for its transfer and pending writes.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(3000);

mod admin;
mod join;
mod snap;

use join::{JOIN_WAIT, MemberBook, join_cluster};

enum Event {
    Shard(ToRaft),
    Peer(Inbound),
    /// A snapshot save finished (`own`: taken here, with when it started, the longest
    /// shard pause, its keys and the operators waiting; `from`: received from that leader).
    SnapshotSaved(snap::Saved),
    /// The file of a snapshot to send to `to` was opened (or not).
    SnapshotOpened {
        to: NodeId,
        index: Index,
        result: Result<Rc<crate::wal::snapshot::BodyReader<crate::wal::disk::DmaDiskFile>>, String>,
    },
    /// A chunk of a snapshot to send was read.
    ChunkRead {
        to: NodeId,
        index: Index,
        offset: u64,
        result: Result<Vec<u8>, String>,
    },
}

/// Who waits for a call's answer.
#[derive(Clone, Copy, Debug)]
enum Origin {
    Shard(usize, ReqId),
    /// A follower's forwarded call, by the follower's id for it.
    Peer(NodeId, u64),
}

enum Op {
    Write(Bytes),
    Read { key: Bytes, policy: ReadPolicy },
    Admin(AdminCall),
}

struct Waiting {
    term: Term,
    origin: Origin,
    deadline: Instant,
}

struct ReadWait {
    origin: Origin,
    key: Bytes,
    policy: ReadPolicy,
    deadline: Instant,
}

struct Forwarded {
    /// The leader it went to: only its reply counts.
    to: NodeId,
    shard: usize,
    req: ReqId,
    write: bool,
    deadline: Instant,
}

struct Parked {
    origin: Origin,
    op: Op,
    deadline: Instant,
}

pub(super) async fn run(cfg: NodeConfig, shared: Arc<Shared>, q: CoreQueues) -> Result<(), String> {
    let id = cfg.cluster.node_id;
    let data_dir = cfg.data_dir();
    let members = cfg.members();
    let cid = cluster_id(
        // The founders (voters of initial_cluster) name the cluster: a joiner lists them
        // and itself as a learner, and gets the same id.
        &members
            .iter()
            .filter(|m| m.2 == MemberRole::Voter)
            .map(|(i, a, _)| (*i, a.to_string()))
            .collect::<Vec<_>>(),
        &cfg.cluster.cluster_token,
    );
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let has_state = data_dir.join("wal").exists() || data_dir.join("hardstate").exists();
    let (meta, fresh) = NodeMeta::check_or_create(
        &data_dir,
        NodeMeta {
            cluster_id: cid,
            node_id: id,
            incarnation: new_incarnation(),
        },
        has_state,
    )
    .map_err(|e| e.to_string())?;
    let known = KnownPeers::load(&data_dir).map_err(|e| e.to_string())?;
    if !fresh && !has_state && !known.is_empty() {
        // This node met its peers, so it took part: its term, vote and log are gone.
        return Err(format!(
            "{} has this node's identity but no Raft state (no hardstate, no wal/): it was \
             partly wiped, and the votes and entries it acknowledged are lost. It must not \
             rejoin under node id {id}: remove the whole directory and add the node back \
             under a new node id",
            data_dir.display()
        ));
    }
    let disk = DmaDisk::new(&data_dir)
        .await
        .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?
        .with_sync_delay(Duration::from_micros(cfg.testing.sync_delay_us));
    let snaps = SnapshotStore::open(disk.clone(), data_dir.clone(), cfg.raft.snapshot.keep)
        .await
        .map_err(|e| e.to_string())?;
    let snaps = std::rc::Rc::new(snaps);
    let snap = snaps.load_latest().await.map_err(|e| e.to_string())?;
    let base = snap
        .as_ref()
        .map_or((0, 0), |s| (s.meta.index, s.meta.term));
    let (mut wal, rec) = Wal::open(disk.clone(), cfg.wal_options(), base)
        .await
        .map_err(|e| e.to_string())?;
    // Addresses: the config's, then the snapshot's, then address entries in the log.
    let mut addresses: BTreeMap<NodeId, SocketAddr> = members.iter().map(|m| (m.0, m.1)).collect();
    let snap = match snap {
        Some(s) => {
            let data = Bytes::from(s.data);
            let kv_at = {
                let (book, kv) = members::decode_snapshot(&data)
                    .map_err(|e| format!("snapshot {}: {e}", s.meta.index))?;
                addresses.extend(book);
                data.len() - kv.len()
            };
            Some((s.meta, data, kv_at))
        }
        None => None,
    };
    for e in &rec.entries {
        if let Some(Ok((nid, addr))) = members::decode_address(&e.data) {
            addresses.insert(nid, addr);
        }
    }
    let voters: Vec<_> = members
        .iter()
        .filter(|m| m.2 == MemberRole::Voter)
        .map(|m| m.0)
        .collect();
    let raft_cfg = cfg.raft_config();
    for w in raft_cfg.startup_warnings() {
        tracing::warn!(node = id, "{w}");
    }
    let raft = Raft::new(
        raft_cfg,
        Restore {
            hard_state: rec.hard_state,
            snapshot: snap.as_ref().map(|s| s.0.clone()),
            entries: rec.entries,
            initial_membership: Membership::with_voters(voters),
        },
    )
    .map_err(|e| format!("raft: {e}"))?;

    // A channel end's `connect` waits for the other end's: connect all at once.
    let to_shards: Vec<_> = q
        .to_shards
        .into_iter()
        .map(|s| glommio::spawn_local(s.connect()))
        .collect();
    let from_shards: Vec<_> = q
        .from_shards
        .into_iter()
        .map(|r| glommio::spawn_local(r.connect()))
        .collect();
    let mut connected = Vec::new();
    for t in to_shards {
        connected.push(t.await);
    }
    let to_shards = connected;
    let mut latest = None;
    if let Some((meta, data, kv_at)) = snap {
        for tx in &to_shards {
            tx.send(ToShard::Install {
                data: data.slice(kv_at..),
            })
            .await
            .map_err(|_| "a shard stopped during start-up".to_string())?;
        }
        latest = Some(meta);
    }
    let (ev_tx, ev_rx) = local_channel::new_bounded::<Event>(4096);
    let ev_tx = std::rc::Rc::new(ev_tx);
    for rx in from_shards {
        let ev_tx = ev_tx.clone();
        let rx = rx.await;
        glommio::spawn_local(async move {
            while let Some(m) = rx.recv().await {
                if ev_tx.send(Event::Shard(m)).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }
    let (peer_tx, peer_rx) = local_channel::new_bounded::<Inbound>(4096);
    let transport = Transport::start(
        PeerConfig {
            node_id: id,
            cluster_id: cid,
            token: cfg.cluster.cluster_token.clone(),
            peers: addresses
                .iter()
                .filter(|(nid, _)| raft.membership().is_member(**nid))
                .map(|(a, b)| (*a, *b))
                .collect(),
            frame_bytes_max: cfg.limits.frame_bytes_max,
            outbox_max: 4096,
            reconnect_backoff_max_ms: 1000,
            dial: cfg.testing.dial_overrides(),
            source_ip: cfg
                .cluster
                .listen_address
                .parse::<SocketAddr>()
                .ok()
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified()),
            incarnation: meta.incarnation,
            known: Some(std::rc::Rc::new(std::cell::RefCell::new(known))),
        },
        peer_tx,
    );
    let mut early = Vec::new();
    // A joiner that is not a member yet (a first start, or one whose join failed before)
    // asks the cluster to add it as a learner first (in a task: peers' connections must be
    // answered meanwhile). It advertises its own initial_cluster address (listen_address
    // may be a wildcard).
    let joiner = cfg.is_joiner() && !raft.membership().is_member(id);
    let joined: Rc<std::cell::RefCell<Option<Result<MemberBook, String>>>> = Rc::default();
    let join_last: Rc<std::cell::RefCell<String>> = Rc::default();
    if joiner {
        let me = members
            .iter()
            .find(|m| m.0 == id)
            .map(|m| m.1.to_string())
            .expect("a joiner lists itself");
        let (founders, token) = (cfg.founders(), cfg.cluster.cluster_token.clone());
        let (done, last) = (joined.clone(), join_last.clone());
        glommio::spawn_local(async move {
            let r = join_cluster(id, &me, &founders, &token, &last).await;
            *done.borrow_mut() = Some(r);
        })
        .detach();
    }
    if fresh || joiner {
        // initial_cluster counts only if no peer already knows this node under another
        // incarnation, or refuses it: wait for every peer's handshake (or one election
        // timeout: peers that are down cannot object, as in a first start of all nodes).
        // A joiner waits for its join instead (peers refuse it until they know it).
        let until = Instant::now()
            + if joiner {
                JOIN_WAIT
            } else {
                Duration::from_millis(cfg.raft.election_timeout_min_ms)
            };
        while Instant::now() < until
            && if joiner {
                joined.borrow().is_none()
            } else {
                transport.handshakes.borrow().len() + 1 < members.len()
            }
        {
            if wiped(&transport).is_some() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
            // Answer peers' handshakes meanwhile (other fresh nodes wait for ours); keep
            // everything else for the loop.
            while let Some(Some(e)) = futures_lite::future::poll_once(ev_rx.recv()).await {
                match e {
                    Event::Shard(ToRaft::PeerConn { fd, first }) => {
                        // SAFETY: the shard handed over sole ownership of this descriptor.
                        let s = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
                        transport.adopt(s, first);
                    }
                    other => early.push(other),
                }
            }
        }
        if joiner {
            match joined.borrow_mut().take() {
                Some(Ok(book)) => {
                    tracing::warn!(node = id, members = ?book, "joined the cluster as a learner");
                    // Every member's address: whoever leads may contact us first.
                    for (nid, a) in book {
                        match a.parse::<SocketAddr>() {
                            Ok(addr) => {
                                addresses.insert(nid, addr);
                                transport.add_peer(nid, addr);
                            }
                            Err(e) => tracing::warn!(
                                node = id,
                                "the join answer names node {nid} at {a:?}, not an address: {e}"
                            ),
                        }
                    }
                }
                Some(Err(e)) => return Err(format!("cannot join the cluster: {e}")),
                None => {
                    return Err(format!(
                        "cannot join the cluster: not added within {JOIN_WAIT:?} (last answer: \
                         {}); is the cluster running?",
                        join_last.borrow()
                    ));
                }
            }
        }
        let refusal = transport
            .handshakes
            .borrow()
            .iter()
            .find_map(|(p, h)| match h {
                Handshake::Refused(why) => Some((*p, why.clone())),
                _ => None,
            })
            .filter(|_| !joiner);
        if let Some((peer, why)) = refusal {
            return Err(format!(
                "refusing to start with an empty data directory: peer {peer} refused this \
                 node ({why}); fix the configuration (initial_cluster, cluster_token, node_id) \
                 so it matches the running cluster"
            ));
        }
    }
    if let Some(why) = wiped(&transport) {
        return Err(refused_start(&data_dir, &why));
    }
    {
        let ev_tx = ev_tx.clone();
        glommio::spawn_local(async move {
            while let Some(m) = peer_rx.recv().await {
                if ev_tx.send(Event::Peer(m)).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }
    tracing::warn!(
        node = id,
        listen = %cfg.cluster.listen_address,
        metrics = cfg.cluster.metrics_address.as_deref().unwrap_or("none"),
        data_dir = %data_dir.display(),
        shards = to_shards.len(),
        cores = ?cfg.runtime.cores,
        raft_core = cfg.runtime.raft_core,
        strategy = ?cfg.raft.persistence.strategy,
        "ringkv node started: peers and HTTP on {}", cfg.cluster.listen_address
    );
    // A drifting clock (fault campaign) ticks faster or slower in real time.
    let tick = shared
        .clock
        .real(Duration::from_millis(cfg.raft.tick_interval_ms));
    let mut core = Core {
        id,
        wal_stalled: false,
        wal_stats: wal.stats_handle(),
        metrics_address: cfg.cluster.metrics_address.clone(),
        snaps,
        ev_tx: ev_tx.clone(),
        fatal: None,
        latest,
        snap_epoch: 0,
        retiring: Vec::new(),
        snap_interval: cfg.raft.snapshot.interval_entries,
        chunk_bytes_max: cfg.raft.snapshot.chunk_bytes_max,
        snapshot_bytes_max: cfg
            .limits
            .state_bytes_max
            .saturating_mul(2)
            .saturating_add(1 << 20),
        building: None,
        saving: false,
        snapshot_after_save: Vec::new(),
        sends: HashMap::new(),
        recv: None,
        received: None,
        chunk_inbox: VecDeque::new(),
        compact_wal: None,
        admin_waits: Vec::new(),
        promote_lag_max: cfg.raft.membership.promote_lag_entries_max,
        membership_seen: Membership::default(),
        removed_self: false,
        data_dir: data_dir.clone(),
        raft,
        transport,
        addresses,
        to_shards,
        out: Vec::new(),
        shared,
        writes: HashMap::new(),
        reads: HashMap::new(),
        next_read: 1,
        forwards: HashMap::new(),
        // Ids from a random start: replies to a previous process of this node (still queued
        // at the leader when it restarted) must not match this process's calls.
        next_fwd: new_incarnation(),
        serving: HashMap::new(),
        parked: VecDeque::new(),
        request_timeout: Duration::from_millis(cfg.raft.request_timeout_ms),
        tick,
        last_role: Role::Follower,
        last_leader: (0, 0, false),
        stop_at: None,
        state_bytes_max: cfg.limits.state_bytes_max,
        append_entries_max: cfg.raft.replication.append_entries_max,
        last_lag_log: Instant::now(),
        metrics: RaftMetrics::new(),
        counters_seen: Counters::default(),
        role_shown: usize::MAX,
        leader_seen: (0, 0),
    };
    for e in early {
        core.handle(e);
    }
    core.run(&mut wal, ev_rx).await
}

struct Core {
    id: NodeId,
    /// The WAL's counters (fsyncs, batches, entries), shown by /status.
    wal_stats: Rc<std::cell::Cell<crate::wal::WalStats>>,
    /// Where this node serves /metrics (shown by /status, for `ringkv top`).
    metrics_address: Option<String>,
    /// The disk is full: the WAL holds writes it could not place; no Ready is taken.
    wal_stalled: bool,
    snaps: Rc<SnapshotStore<DmaDisk>>,
    ev_tx: Rc<LocalSender<Event>>,
    /// A failure found while handling an event: the node stops with it.
    fatal: Option<String>,
    /// The newest snapshot here (taken, received or loaded): what followers are sent
    /// (read from its file as it goes).
    latest: Option<SnapshotMeta>,
    /// Bumped by a reset or an installed snapshot: a snapshot of our own started before
    /// describes a replaced state and is void.
    snap_epoch: u64,
    /// Removed members: their outboxes go a moment after the removal committed (so the
    /// notice that they were removed can still reach them).
    retiring: Vec<(NodeId, Instant)>,
    snap_interval: u64,
    chunk_bytes_max: usize,
    /// A received snapshot larger than this is refused.
    snapshot_bytes_max: u64,
    building: Option<snap::Building>,
    saving: bool,
    /// Operators who asked while a snapshot was being saved: the next one is theirs.
    snapshot_after_save: Vec<Origin>,
    sends: HashMap<NodeId, snap::Sending>,
    recv: Option<snap::Receiving>,
    /// A received snapshot stored here, waiting for the leader's message to install it.
    received: Option<(Index, Term)>,
    /// Snapshot chunks received, written to their file at the next drive.
    chunk_inbox: VecDeque<(NodeId, ClientFrame)>,
    /// The WAL compacts to this (index, term) at the next turn.
    compact_wal: Option<(Index, Term)>,
    admin_waits: Vec<admin::AdminWait>,
    promote_lag_max: u64,
    /// The membership the transport was last synced with.
    membership_seen: Membership,
    /// This node's removal committed: it stops.
    removed_self: bool,
    data_dir: std::path::PathBuf,
    raft: Raft,
    transport: Transport,
    addresses: BTreeMap<NodeId, SocketAddr>,
    to_shards: Vec<ConnectedSender<ToShard>>,
    /// Shard messages of this turn, sent (waiting when a queue is full) at its end.
    out: Vec<(usize, ToShard)>,
    shared: Arc<Shared>,
    writes: HashMap<Index, Waiting>,
    reads: HashMap<u64, ReadWait>,
    next_read: u64,
    forwards: HashMap<u64, Forwarded>,
    next_fwd: u64,
    /// Reads forwarded to us, handed to their owner shard: token -> (peer, its id).
    serving: HashMap<u64, (NodeId, u64)>,
    parked: VecDeque<Parked>,
    request_timeout: Duration,
    tick: Duration,
    last_role: Role,
    /// (term, leader, transfer in progress) last seen: parked calls go out when it changes.
    last_leader: (Term, NodeId, bool),
    /// Set when shutdown began: the latest moment to finish it.
    stop_at: Option<Instant>,
    state_bytes_max: u64,
    append_entries_max: usize,
    last_lag_log: Instant,
    /// Prometheus handles (no-ops without a recorder).
    metrics: RaftMetrics,
    /// The core's counters as last exported.
    counters_seen: Counters,
    /// Index into `metrics::ROLES` last exported.
    role_shown: usize,
    /// (term, leader) last seen, for `ringkv_raft_leader_changes_total`.
    leader_seen: (Term, NodeId),
}

/// What woke the raft core's loop.
enum Wake {
    Event(Event),
    Closed,
    Tick,
    Flight(Result<(), WalError>),
}

impl Core {
    async fn run(
        &mut self,
        wal: &mut Wal<DmaDisk>,
        events: LocalReceiver<Event>,
    ) -> Result<(), String> {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            // Whichever comes first: a request or message, the tick, or a WAL write
            // completing. The core never stalls on the disk: while a batch syncs it goes
            // on taking requests, and followers' acks can commit before its own sync.
            let ev = {
                let queue = async {
                    match events.recv().await {
                        Some(e) => Wake::Event(e),
                        None => Wake::Closed,
                    }
                };
                let timer = async {
                    glommio::timer::sleep(wait).await;
                    Wake::Tick
                };
                let disk = async {
                    if wal.inflight() == 0 {
                        std::future::pending::<()>().await;
                    }
                    Wake::Flight(wal.wait_flight().await)
                };
                // The disk first: a busy queue must not hold back completed syncs (and
                // with them followers' acks and the leader's own vote).
                futures_lite::future::or(disk, futures_lite::future::or(queue, timer)).await
            };
            self.metrics.events_queued.set(self.ev_tx.len() as f64);
            match ev {
                Wake::Closed => return Ok(()),
                Wake::Event(e) => self.handle(e),
                Wake::Flight(r) => {
                    self.wal_ok(r)?;
                }
                Wake::Tick => {}
            }
            // Take whatever else is queued: one Ready for many requests.
            for _ in 0..1024 {
                match futures_lite::future::poll_once(events.recv()).await {
                    Some(Some(e)) => self.handle(e),
                    _ => break,
                }
            }
            // And every sync already complete, not just the one that woke us.
            while wal.inflight() > 0 {
                match futures_lite::future::poll_once(wal.wait_flight()).await {
                    Some(r) => {
                        self.wal_ok(r)?;
                    }
                    None => break,
                }
            }
            if Instant::now() >= next_tick {
                self.raft.tick(self.shared.now_ns());
                // A heartbeat round sent by the tick may carry reads: count it on its own.
                self.export_counters();
                next_tick += self.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.tick;
                }
                self.expire();
                self.log_replication();
                self.snapshot_ticks();
                let now = Instant::now();
                for (id, _) in self.retiring.iter().filter(|r| r.1 <= now) {
                    self.transport.remove_peer(*id);
                }
                self.retiring.retain(|r| r.1 > now);
                if self.wal_stalled {
                    let r = wal.retry().await;
                    if self.wal_ok(r)?.is_some() {
                        self.wal_stalled = false;
                        tracing::warn!(node = self.id, "disk space is back: WAL writes resumed");
                    }
                } else {
                    // MemFirst: the interval half of the flush policy.
                    let r = wal.flush_if_due().await;
                    self.wal_ok(r)?;
                }
                if let Some(why) = wiped(&self.transport) {
                    let _ = wal.sync_all().await;
                    return Err(refused_start(&self.data_dir, &why));
                }
                if !self.removed_self
                    && let Some(why) = removed(&self.transport)
                {
                    tracing::warn!(
                        node = self.id,
                        "this node was removed from the cluster: stopping ({why})"
                    );
                    self.removed_self = true;
                }
                if self.stop_at.is_none()
                    && (self.shared.stop_requested.load(Ordering::Relaxed) || self.removed_self)
                {
                    self.begin_shutdown();
                }
            }
            self.drive(wal).await?;
            self.check_admin();
            if let Some(at) = self.stop_at
                && (self.shutdown_done() || Instant::now() >= at)
            {
                return self.finish_shutdown(wal).await;
            }
        }
    }

    fn handle(&mut self, e: Event) {
        let now = Instant::now();
        match e {
            // A removed node's old connection may still deliver: it has no say any more.
            Event::Peer(Inbound::Raft(m)) if self.raft.membership().removed.contains(&m.from) => {}
            Event::Peer(Inbound::Raft(m)) => {
                if matches!(m.body, Body::Append { .. }) {
                    self.metrics.appends_received.increment(1);
                }
                // A snapshot is stepped only once its data is stored here (the leader
                // streams it first); otherwise the leader tries again.
                if let Body::Snapshot { meta } = &m.body
                    && !self.have_snapshot(meta)
                {
                    return;
                }
                self.raft.step(m)
            }
            Event::SnapshotOpened { to, index, result } => self.snapshot_opened(to, index, result),
            Event::ChunkRead {
                to,
                index,
                offset,
                result,
            } => self.chunk_read(to, index, offset, result),
            Event::SnapshotSaved(saved) => {
                if let Err(e) = self.snapshot_saved(saved) {
                    self.fatal = Some(e);
                }
            }
            Event::Peer(Inbound::Client { from, frame }) => match frame {
                ClientFrame::Write { id, command } => {
                    let origin = Origin::Peer(from, id);
                    let command = Bytes::from(command);
                    match Command::decode(&command) {
                        Ok(_) => {
                            self.submit(origin, Op::Write(command), now + self.request_timeout)
                        }
                        Err(e) => self.answer(
                            origin,
                            Err(ApiError::bad_request(format!("forwarded write: {}", e.0))),
                        ),
                    }
                }
                ClientFrame::Read { id, key, policy } => {
                    let policy = match policy {
                        0 => ReadPolicy::Linearizable,
                        _ => ReadPolicy::Lease,
                    };
                    let deadline = now + self.request_timeout;
                    let key = Bytes::from(key);
                    self.submit(Origin::Peer(from, id), Op::Read { key, policy }, deadline);
                }
                ClientFrame::Admin {
                    id,
                    op,
                    node_id,
                    address,
                } => {
                    let origin = Origin::Peer(from, id);
                    // A little less than the follower waits, so our own answer (e.g. 409
                    // learner_lagging) reaches it before its timeout does.
                    let deadline = now
                        + self
                            .request_timeout
                            .saturating_sub(Duration::from_millis(500));
                    match admin::from_wire(op, node_id, &address) {
                        Ok(call) => self.submit(origin, Op::Admin(call), deadline),
                        Err(e) => self.answer(origin, Err(ApiError::bad_request(e))),
                    }
                }
                f @ ClientFrame::SnapChunk { .. } => self.chunk_inbox.push_back((from, f)),
                ClientFrame::SnapAck { index, next, ok } => self.snap_ack(from, index, next, ok),
                ClientFrame::Removed { node_id } => {
                    if node_id == self.id && !self.removed_self {
                        tracing::warn!(
                            node = self.id,
                            by = from,
                            "this node was removed from the cluster: stopping"
                        );
                        self.removed_self = true;
                    }
                }
                ClientFrame::Reply { id, outcome } => {
                    if self.forwards.get(&id).is_some_and(|f| f.to == from)
                        && let Some(f) = self.forwards.remove(&id)
                    {
                        self.out.push((
                            f.shard,
                            ToShard::Answer {
                                req: f.req,
                                answer: CoreAnswer::Done(outcome),
                            },
                        ));
                    }
                }
            },
            Event::Shard(ToRaft::Write {
                shard,
                req,
                command,
                deadline,
            }) => self.submit(Origin::Shard(shard, req), Op::Write(command), deadline),
            Event::Shard(ToRaft::Read {
                shard,
                req,
                key,
                policy,
                deadline,
            }) => self.submit(
                Origin::Shard(shard, req),
                Op::Read { key, policy },
                deadline,
            ),
            Event::Shard(ToRaft::Status { shard, req }) => {
                let st = Answer::Status(Box::new(self.status()));
                self.answer(Origin::Shard(shard, req), Ok(st));
            }
            Event::Shard(ToRaft::Served { token, outcome }) => {
                if let Some((from, id)) = self.serving.remove(&token) {
                    self.answer(Origin::Peer(from, id), outcome);
                }
            }
            Event::Shard(ToRaft::Admin {
                shard,
                req,
                call,
                deadline,
            }) => {
                let origin = Origin::Shard(shard, req);
                if call == AdminCall::Snapshot {
                    self.start_snapshot(Some(origin));
                } else {
                    self.submit(origin, Op::Admin(call), deadline);
                }
            }
            Event::Shard(ToRaft::SnapshotPart {
                shard,
                index,
                pairs,
                count,
                took,
            }) => self.snapshot_part(shard, index, pairs, count, took),
            Event::Shard(ToRaft::PeerConn { fd, first }) => {
                // SAFETY: the shard handed over sole ownership of this socket descriptor.
                let s = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
                self.transport.adopt(s, first);
            }
        }
    }

    fn answer(&mut self, origin: Origin, outcome: Outcome) {
        match origin {
            Origin::Shard(s, req) => self.out.push((
                s,
                ToShard::Answer {
                    req,
                    answer: CoreAnswer::Done(outcome),
                },
            )),
            Origin::Peer(to, id) => {
                // The follower waits at most request_timeout_ms for it.
                let deadline = Instant::now() + self.request_timeout;
                self.transport
                    .send_client(to, ClientFrame::Reply { id, outcome }, deadline);
            }
        }
    }

    fn leader_hint(&self) -> (Option<NodeId>, Option<String>) {
        let l = self.raft.leader();
        match self.addresses.get(&l) {
            Some(a) if l != 0 => (Some(l), Some(a.to_string())),
            _ => (None, None),
        }
    }

    fn not_leader(&self) -> ApiError {
        let (leader_id, leader_address) = self.leader_hint();
        ApiError::NotLeader {
            leader_id,
            leader_address,
        }
    }

    /// Carries out a client call: on the leader, propose or read; on a follower, forward a
    /// shard's call to the leader (never a peer's: one hop only) or park it until a
    /// leader is known.
    fn submit(&mut self, origin: Origin, op: Op, deadline: Instant) {
        if self.raft.role() == Role::Leader {
            match op {
                Op::Write(cmd) if self.state_full(&cmd) => {
                    let e = ApiError::StateFull {
                        state_bytes_max: self.state_bytes_max,
                    };
                    self.answer(origin, Err(e));
                }
                Op::Write(cmd) => match self.raft.propose(vec![cmd.clone()]) {
                    Ok((index, term)) => {
                        self.metrics.proposals.increment(1);
                        self.writes.insert(
                            index,
                            Waiting {
                                term,
                                origin,
                                deadline,
                            },
                        );
                    }
                    Err(ProposeError::TransferInProgress) => {
                        self.park(origin, Op::Write(cmd), deadline)
                    }
                    Err(e) => self.answer(
                        origin,
                        Err(ApiError::Unavailable {
                            reason: UnavailableReason::Refused {
                                reason: e.to_string(),
                            },
                        }),
                    ),
                },
                Op::Read { key, policy } => {
                    let rid = self.next_read;
                    self.next_read += 1;
                    self.reads.insert(
                        rid,
                        ReadWait {
                            origin,
                            key,
                            policy,
                            deadline,
                        },
                    );
                    self.raft.read(rid, policy, self.shared.now_ns());
                    self.export_counters();
                }
                Op::Admin(call) => self.admin(origin, call, deadline),
            }
            return;
        }
        let leader = self.raft.leader();
        match origin {
            Origin::Peer(..) => {
                let e = self.not_leader();
                self.answer(origin, Err(e));
            }
            Origin::Shard(shard, req) if leader != 0 && leader != self.id => {
                let fid = self.next_fwd;
                self.next_fwd = self.next_fwd.wrapping_add(1);
                // A forwarded operator call, like a write, may have happened on a timeout.
                let write = matches!(op, Op::Write(_) | Op::Admin(_));
                let frame = match op {
                    Op::Write(cmd) => ClientFrame::Write {
                        id: fid,
                        command: cmd.to_vec(),
                    },
                    Op::Admin(call) => {
                        let (op, node_id, address) = admin::to_wire(&call);
                        ClientFrame::Admin {
                            id: fid,
                            op,
                            node_id,
                            address,
                        }
                    }
                    Op::Read { key, policy } => ClientFrame::Read {
                        id: fid,
                        key: key.to_vec(),
                        policy: u8::from(policy != ReadPolicy::Linearizable),
                    },
                };
                if self.transport.send_client(leader, frame, deadline) {
                    self.forwards.insert(
                        fid,
                        Forwarded {
                            to: leader,
                            shard,
                            req,
                            write,
                            deadline,
                        },
                    );
                } else {
                    let e = ApiError::Unavailable {
                        reason: UnavailableReason::LeaderUnreachable { node_id: leader },
                    };
                    self.answer(origin, Err(e));
                }
            }
            Origin::Shard(..) => self.park(origin, op, deadline),
        }
    }

    /// Whether a put would take the state past `state_bytes_max` (checked by the leader
    /// before proposing, against what the shards hold; deletes always pass).
    fn state_full(&self, cmd: &Bytes) -> bool {
        let Ok(Command::Put { key, value }) = Command::decode(cmd) else {
            return false;
        };
        let held: u64 = self
            .shared
            .state_bytes
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum();
        held + pair_bytes(&key, &value) > self.state_bytes_max
    }

    /// Leader, about once a second at info level: how far each follower is behind
    /// (`grep append_entries logs/*/d.log`); a warning when one is more than a full
    /// AppendEntries batch behind.
    fn log_replication(&mut self) {
        if self.raft.role() != Role::Leader || self.last_lag_log.elapsed() < Duration::from_secs(1)
        {
            return;
        }
        self.last_lag_log = Instant::now();
        let st = self.raft.status();
        for (peer, matched, next) in st.progress {
            if peer == self.id {
                continue;
            }
            let lag = st.last_index.saturating_sub(matched);
            if lag > self.append_entries_max as u64 {
                tracing::warn!(
                    node = self.id,
                    peer,
                    matched,
                    next,
                    last = st.last_index,
                    lag,
                    "append_entries: follower lags"
                );
            } else {
                tracing::info!(
                    node = self.id,
                    peer,
                    matched,
                    next,
                    last = st.last_index,
                    lag,
                    "append_entries progress"
                );
            }
        }
    }

    fn park(&mut self, origin: Origin, op: Op, deadline: Instant) {
        if self.parked.len() >= PARKED_MAX {
            let e = ApiError::NoLeader {
                why: NoLeaderReason::TooManyWaiting,
            };
            self.answer(origin, Err(e));
            return;
        }
        self.parked.push_back(Parked {
            origin,
            op,
            deadline,
        });
    }

    fn status(&self) -> NodeStatus {
        let st = self.raft.status();
        let role = match st.role {
            Role::Leader => NodeRole::Leader,
            Role::Candidate | Role::PreCandidate => NodeRole::Candidate,
            Role::Follower if st.membership.is_learner(self.id) => NodeRole::Learner,
            Role::Follower => NodeRole::Follower,
        };
        let members = st
            .membership
            .members()
            .map(|m| {
                // Replication progress is known on the leader only (itself: its last index).
                let matched = if m == self.id && st.role == Role::Leader {
                    Some(st.last_index)
                } else {
                    st.progress.iter().find(|p| p.0 == m).map(|p| p.1)
                };
                MemberStatus {
                    id: m,
                    address: self.addresses.get(&m).map(|a| a.to_string()),
                    role: if st.membership.is_voter(m) {
                        StatusMemberRole::Voter
                    } else {
                        StatusMemberRole::Learner
                    },
                    match_index: matched,
                    lag: matched.map(|i| st.last_index.saturating_sub(i)),
                }
            })
            .collect();
        let (leader_id, leader_address) = self.leader_hint();
        let w = self.wal_stats.get();
        NodeStatus {
            node_id: self.id,
            role,
            term: st.term,
            leader_id,
            leader_address,
            commit_index: st.commit,
            applied_index: self.shared.applied_min(),
            last_index: st.last_index,
            snapshot_index: self.latest.as_ref().map_or(0, |s| s.index),
            leader_ready: st.role == Role::Leader && self.raft.noop_committed(),
            membership_change_in_progress: self.raft.membership_change_pending(),
            transfer_in_progress: self.raft.transfer_target().is_some(),
            removed: st.membership.removed.iter().copied().collect(),
            members,
            metrics_address: self.metrics_address.clone(),
            wal: WalStatus {
                fsyncs: w.fsyncs,
                batches: w.batches,
                entries: w.entries,
                bytes_written: w.bytes_written,
                segments_created: w.segments_created,
            },
        }
    }

    /// Answers calls past their deadline.
    fn expire(&mut self) {
        let now = Instant::now();
        let mut late: Vec<(Origin, ApiError)> = Vec::new();
        self.writes.retain(|_, w| {
            let keep = w.deadline > now;
            if !keep {
                late.push((w.origin, timeout(TimeoutKind::Write)));
            }
            keep
        });
        self.reads.retain(|_, r| {
            let keep = r.deadline > now;
            if !keep {
                late.push((r.origin, timeout(TimeoutKind::Read)));
            }
            keep
        });
        self.forwards.retain(|_, f| {
            let keep = f.deadline > now;
            if !keep {
                late.push((Origin::Shard(f.shard, f.req), forward_late(f.write)));
            }
            keep
        });
        while self.parked.front().is_some_and(|p| p.deadline <= now) {
            let p = self.parked.pop_front().expect("checked");
            let e = ApiError::NoLeader {
                why: NoLeaderReason::NotElected,
            };
            late.push((p.origin, e));
        }
        for (o, e) in late {
            self.answer(o, Err(e));
        }
    }

    /// A WAL result: a full disk stalls writes (retried each tick) instead of stopping the
    /// node; any other failure stops it.
    fn wal_ok<T>(&mut self, r: Result<T, WalError>) -> Result<Option<T>, String> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e @ (WalError::NoSpace(_) | WalError::Stalled(_))) => {
                if !self.wal_stalled {
                    tracing::error!(
                        node = self.id,
                        "{e}: writes wait (clients get 503/504) while reads go on; retrying each tick"
                    );
                }
                self.wal_stalled = true;
                Ok(None)
            }
            Err(e) => Err(format!("stopping: {e}")),
        }
    }

    /// Keeps the transport's peers equal to the membership: new members get a sender,
    /// removed ones lose theirs and are refused.
    fn sync_members(&mut self) {
        if *self.raft.membership() == self.membership_seen {
            return;
        }
        let m = self.raft.membership().clone();
        for id in m.members().filter(|id| *id != self.id) {
            if let Some(addr) = self.addresses.get(&id) {
                self.transport.add_peer(id, *addr);
            }
        }
        // Removals retire peers when they commit (`dispatch`), not when appended: an
        // appended removal can still be truncated.
        self.membership_seen = m;
    }

    fn publish(&self) {
        self.shared.lease.publish(Lease {
            term: self.raft.term(),
            expiry_ns: self.raft.lease_expiry().unwrap_or(0),
            commit: self.raft.commit(),
        });
    }

    async fn drive(&mut self, wal: &mut Wal<DmaDisk>) -> Result<(), String> {
        if let Some(f) = self.fatal.take() {
            return Err(f);
        }
        self.receive_chunks().await;
        if let Some((index, term)) = self.compact_wal.take() {
            let r = wal.compact(index, term).await;
            self.wal_ok(r)?;
        }
        loop {
            // While the disk is full no further Ready is taken (the WAL would refuse it);
            // reads and lease reads go on.
            while !self.wal_stalled && self.raft.has_ready() {
                let rd = self.raft.ready();
                // ready() sends at most one heartbeat round (carrying the reads recorded).
                self.export_counters();
                if !rd.entries.is_empty() {
                    self.metrics
                        .entries_per_ready
                        .record(rd.entries.len() as f64);
                }
                if rd.reset && rd.snapshot.is_none() {
                    // MemFirst divergence: the state machine and snapshots go too; shards
                    // start empty and re-apply from the leader. (A reset that comes with a
                    // received snapshot keeps it: the shards load it below.)
                    self.snaps
                        .clear()
                        .await
                        .map_err(|e| format!("stopping: clearing snapshots: {e}"))?;
                    self.latest = None;
                    self.void_building();
                    for s in 0..self.to_shards.len() {
                        self.out.push((s, ToShard::Reset));
                    }
                    tracing::warn!(
                        node = self.id,
                        "log diverged from the leader's at a committed index (MemFirst lost \
                         acknowledged entries in a crash): state reset, catching up from the leader"
                    );
                }
                if rd.must_persist() {
                    let r = wal
                        .persist(
                            rd.number,
                            rd.hard_state,
                            rd.reset,
                            rd.snapshot.as_ref().map(|s| (s.index, s.term)),
                            &rd.entries,
                        )
                        .await;
                    // NoSpace: the WAL took the Ready and holds what it could not write.
                    self.wal_ok(r)?;
                }
                if let Some(meta) = &rd.snapshot {
                    self.install_snapshot(meta).await?;
                }
                // Addresses of members being added, before messages to them go out.
                for e in &rd.entries {
                    if let Some(Ok((nid, addr))) = members::decode_address(&e.data) {
                        self.addresses.insert(nid, addr);
                        self.transport.add_peer(nid, addr);
                    }
                }
                self.sync_members();
                // Before any message goes out: a TimeoutNow in this Ready ends the lease.
                self.publish();
                for m in rd.messages {
                    if let Body::Append { entries, .. } = &m.body {
                        self.metrics.appends_sent.increment(1);
                        self.metrics.entries_per_append.record(entries.len() as f64);
                    }
                    if matches!(m.body, Body::Snapshot { .. }) {
                        self.send_snapshot(m);
                    } else {
                        self.transport.send(m);
                    }
                }
                if let Some(last) = rd.committed.last().map(|e| e.index) {
                    self.dispatch(&rd.committed, last);
                    self.raft.on_applied(last);
                    self.maybe_snapshot();
                }
                for r in rd.reads {
                    let Some(w) = self.reads.remove(&r.id) else {
                        continue;
                    };
                    match (r.result, w.origin) {
                        (Ok(index), Origin::Shard(s, req)) => self.out.push((
                            s,
                            ToShard::Answer {
                                req,
                                answer: CoreAnswer::ReadAt(index),
                            },
                        )),
                        (Ok(index), Origin::Peer(from, id)) => {
                            let owner = route(&w.key, self.to_shards.len());
                            self.serving.insert(r.id, (from, id));
                            self.out.push((
                                owner,
                                ToShard::ServeRead {
                                    token: r.id,
                                    key: w.key,
                                    index,
                                    deadline: w.deadline,
                                },
                            ));
                        }
                        // Lost leadership while the read waited: reads are safe to redo.
                        (Err(ReadError::NotLeader { .. }), o) => self.submit(
                            o,
                            Op::Read {
                                key: w.key,
                                policy: w.policy,
                            },
                            w.deadline,
                        ),
                        (Err(ReadError::Backpressure), o) => self.answer(
                            o,
                            Err(ApiError::Unavailable {
                                reason: UnavailableReason::ReadsPending,
                            }),
                        ),
                    }
                }
                self.log_role();
                self.drop_stale_forwards();
            }
            for n in wal.take_completed() {
                self.raft.on_persisted(n);
            }
            if self.wal_stalled || !self.raft.has_ready() {
                // Writes still in flight report through `run`'s wait.
                break;
            }
        }
        self.publish();
        self.export_counters();
        self.export_gauges();
        let seen = (
            self.raft.term(),
            self.raft.leader(),
            self.raft.transfer_target().is_some(),
        );
        if seen != self.last_leader {
            self.last_leader = seen;
            if seen.1 != 0 && !self.parked.is_empty() {
                for p in std::mem::take(&mut self.parked) {
                    self.submit(p.origin, p.op, p.deadline);
                }
                // Calls parked again (e.g. a transfer in progress) wait for the next change.
            }
        }
        self.flush_out().await
    }

    /// Hands committed entries to their owner shards, moves every shard's watermark to
    /// `through`, then answers the writes they complete.
    fn dispatch(&mut self, committed: &[ringkv_raft::Entry], through: Index) {
        let n = self.to_shards.len();
        let mut per: Vec<Vec<ringkv_raft::Entry>> = vec![Vec::new(); n];
        let mut done = Vec::new();
        for e in committed {
            if e.kind == EntryKind::Membership
                && let Some(m) = Membership::decode(&e.data)
            {
                if m.removed.contains(&self.id) && !self.removed_self {
                    self.removed_self = true;
                    tracing::warn!(
                        node = self.id,
                        index = e.index,
                        "this node was removed from the cluster: stopping"
                    );
                }
                for id in m.removed.iter().filter(|id| **id != self.id) {
                    if !self.retiring.iter().any(|r| r.0 == *id) && self.transport.retire(*id) {
                        // Tell it (it never receives the entry removing it), then let go.
                        self.transport.send_client(
                            *id,
                            ClientFrame::Removed { node_id: *id },
                            Instant::now() + RETIRE_GRACE,
                        );
                        self.retiring.push((*id, Instant::now() + RETIRE_GRACE));
                    }
                }
            }
            if e.kind == EntryKind::Normal && members::decode_address(&e.data).is_some() {
                // An address entry: read when appended, nothing to apply.
            } else if e.kind == EntryKind::Normal {
                match Command::decode(&e.data) {
                    Ok(c) => per[route(c.key(), n)].push(e.clone()),
                    // The leader encodes every entry; a bad one is a bug, not input.
                    Err(err) => tracing::error!(
                        node = self.id,
                        index = e.index,
                        "committed entry does not decode: {}",
                        err.0
                    ),
                }
            }
            if let Some(w) = self.writes.remove(&e.index) {
                let r = if w.term == e.term {
                    Ok(Answer::Written { index: e.index })
                } else {
                    Err(ApiError::LostLeadership { change: false })
                };
                done.push((w.origin, r));
            }
        }
        for (s, entries) in per.into_iter().enumerate() {
            self.out.push((s, ToShard::Apply { entries, through }));
        }
        for (o, r) in done {
            self.answer(o, r);
        }
    }

    async fn flush_out(&mut self) -> Result<(), String> {
        for (s, m) in std::mem::take(&mut self.out) {
            self.to_shards[s]
                .send(m)
                .await
                .map_err(|_| format!("shard {s} stopped"))?;
        }
        Ok(())
    }

    /// Exports the pure core's counters moved since the last call. Called after every input
    /// that can start a heartbeat round (tick, read, ready), so each call sees at most one
    /// new round and the reads it carried (more are recorded at their average).
    fn export_counters(&mut self) {
        let c = self.raft.counters();
        let was = self.counters_seen;
        if c == was {
            return;
        }
        let m = &self.metrics;
        m.pre_votes
            .increment(c.pre_votes_started - was.pre_votes_started);
        m.elections_started
            .increment(c.elections_started - was.elections_started);
        m.elections_won
            .increment(c.elections_won - was.elections_won);
        m.lease_reads.increment(c.lease_reads - was.lease_reads);
        if c.follower_regressions > was.follower_regressions {
            m.follower_regressions
                .increment(c.follower_regressions - was.follower_regressions);
            tracing::warn!(
                node = self.id,
                "a follower holds less than it had acknowledged (damaged or lost disk \
                 data); re-sending it from what it holds"
            );
        }
        if c.committed_conflicts > was.committed_conflicts {
            tracing::error!(
                node = self.id,
                refused = c.committed_conflicts - was.committed_conflicts,
                "refused appends that conflict with entries this node committed (DiskFirst): \
                 some node's storage lied or a peer is broken; committed entries are kept"
            );
        }
        if c.rival_leaders > was.rival_leaders {
            tracing::error!(
                node = self.id,
                term = self.raft.term(),
                "refused leader messages from another node claiming this leader's own term: a \
                 peer is broken"
            );
        }
        if c.messages_refused > was.messages_refused {
            tracing::error!(
                node = self.id,
                refused = c.messages_refused - was.messages_refused,
                "the core refused malformed peer messages the transport let through"
            );
        }
        let rounds = c.read_index_rounds - was.read_index_rounds;
        if rounds > 0 {
            m.read_index_rounds.increment(rounds);
            let reads = c.read_index_reads - was.read_index_reads;
            m.reads_per_round
                .record_many((reads / rounds) as f64, rounds as usize);
        }
        self.counters_seen = c;
    }

    /// Sets the raft gauges (once per loop turn: a few atomic stores).
    fn export_gauges(&mut self) {
        let m = &self.metrics;
        let (term, leader) = (self.raft.term(), self.raft.leader());
        m.term.set(term as f64);
        m.leader_id.set(leader as f64);
        m.commit_index.set(self.raft.commit() as f64);
        m.applied_index.set(self.shared.applied_min() as f64);
        m.last_index.set(self.raft.last_index() as f64);
        m.writes_pending.set(self.writes.len() as f64);
        m.reads_pending.set(self.reads.len() as f64);
        m.calls_parked.set(self.parked.len() as f64);
        m.calls_forwarded.set(self.forwards.len() as f64);
        if leader != 0 && (term, leader) != self.leader_seen {
            m.leader_changes.increment(1);
        }
        if leader != 0 || term != self.leader_seen.0 {
            self.leader_seen = (term, leader);
        }
        // Indexes into metrics::ROLES.
        let role = match self.raft.role() {
            Role::Follower if self.raft.membership().is_learner(self.id) => 1,
            Role::Follower => 0,
            Role::PreCandidate => 2,
            Role::Candidate => 3,
            Role::Leader => 4,
        };
        if role != self.role_shown {
            m.set_role(role);
            self.role_shown = role;
        }
    }

    /// Calls forwarded to the leader are answered now, not at their deadline, once this
    /// node stopped hearing from it (its own election timer fired: it campaigns): a dead
    /// or cut-off leader will not answer, and the caller may go elsewhere. A write's fate
    /// is unknown (it may have committed); a read had no effect. A leader that merely
    /// handed over (a transfer: a higher term, no campaign here) still answers.
    fn drop_stale_forwards(&mut self) {
        if self.forwards.is_empty()
            || !matches!(self.raft.role(), Role::PreCandidate | Role::Candidate)
        {
            return;
        }
        let gone: Vec<_> = self
            .forwards
            .drain()
            .map(|(_, f)| (f.to, Origin::Shard(f.shard, f.req), f.write))
            .collect();
        for (node_id, origin, write) in gone {
            self.answer(origin, Err(ApiError::LeaderLost { node_id, write }));
        }
    }

    fn log_role(&mut self) {
        let role = self.raft.role();
        if role == self.last_role {
            return;
        }
        let term = self.raft.term();
        match role {
            Role::Leader => tracing::warn!(node = self.id, term, "Became leader"),
            Role::Follower => tracing::warn!(
                node = self.id,
                term,
                leader = self.raft.leader(),
                "Became follower"
            ),
            Role::Candidate => tracing::warn!(node = self.id, term, "Became candidate"),
            Role::PreCandidate => tracing::info!(node = self.id, term, "Became pre-candidate"),
        }
        self.last_role = role;
    }

    /// SIGTERM/SIGINT: shards refuse new calls; a leader hands leadership to the most
    /// up-to-date voter; pending calls complete or time out (at most `SHUTDOWN_WAIT`).
    fn begin_shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.stop_at = Some(Instant::now() + SHUTDOWN_WAIT);
        let mut target = None;
        if self.raft.role() == Role::Leader {
            let st = self.raft.status();
            let connected = self.transport.stats.borrow().connected.clone();
            target = st
                .membership
                .members()
                .filter(|&m| m != self.id && st.membership.is_voter(m) && connected.contains(&m))
                .max_by_key(|&m| st.progress.iter().find(|p| p.0 == m).map_or(0, |p| p.1));
            if let Some(t) = target
                && let Err(e) = self.raft.transfer_leader(t)
            {
                tracing::warn!(node = self.id, "cannot hand leadership to node {t}: {e:?}");
                target = None;
            }
        }
        tracing::warn!(
            node = self.id,
            transfer_to = ?target,
            pending_writes = self.writes.len(),
            "stopping on signal"
        );
    }

    fn shutdown_done(&self) -> bool {
        let handed_over = self.raft.role() != Role::Leader || self.raft.transfer_target().is_none();
        handed_over && self.writes.is_empty() && self.forwards.is_empty()
    }

    async fn finish_shutdown(&mut self, wal: &mut Wal<DmaDisk>) -> Result<(), String> {
        let mut left: Vec<(Origin, ApiError)> = Vec::new();
        left.extend(
            self.writes
                .drain()
                .map(|(_, w)| (w.origin, timeout(TimeoutKind::Write))),
        );
        left.extend(
            self.forwards
                .drain()
                .map(|(_, f)| (Origin::Shard(f.shard, f.req), forward_late(f.write))),
        );
        left.extend(
            self.reads
                .drain()
                .map(|(_, r)| (r.origin, ApiError::Stopping)),
        );
        left.extend(
            self.parked
                .drain(..)
                .map(|p| (p.origin, ApiError::Stopping)),
        );
        left.extend(
            self.admin_waits
                .drain(..)
                .map(|w| (w.origin, timeout(TimeoutKind::Stopped))),
        );
        left.extend(
            self.serving
                .drain()
                .map(|(_, (from, id))| (Origin::Peer(from, id), ApiError::Stopping)),
        );
        for (o, e) in left {
            self.answer(o, Err(e));
        }
        self.flush_out().await?;
        wal.sync_all()
            .await
            .map_err(|e| format!("final flush failed: {e}"))?;
        // Let shards write the last answers before the process ends.
        glommio::timer::sleep(Duration::from_millis(100)).await;
        tracing::warn!(node = self.id, role = ?self.raft.role(), "stopped: log flushed");
        Ok(())
    }
}

/// How long a removed member's outbox lives after its removal committed.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// A peer's report that this node was removed from the cluster, if any came.
fn removed(t: &Transport) -> Option<String> {
    t.handshakes.borrow().values().find_map(|h| match h {
        Handshake::RemovedSelf(why) => Some(why.clone()),
        _ => None,
    })
}

/// A peer's report that this node's data directory was wiped, if any came.
fn wiped(t: &Transport) -> Option<String> {
    t.handshakes.borrow().values().find_map(|h| match h {
        Handshake::WipedSelf(why) => Some(why.clone()),
        _ => None,
    })
}

fn refused_start(data_dir: &std::path::Path, why: &str) -> String {
    format!(
        "refusing to run: a peer already knows this node with other data ({why}). \
         {} is not the data this node had in the cluster",
        data_dir.display()
    )
}

fn timeout(what: TimeoutKind) -> ApiError {
    ApiError::Timeout { what }
}

/// A call forwarded to the leader that ran out of time: a write's fate is unknown, a read
/// simply was not served.
fn forward_late(write: bool) -> ApiError {
    timeout(if write {
        TimeoutKind::Write
    } else {
        TimeoutKind::Read
    })
}
