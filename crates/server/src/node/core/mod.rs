//! The raft core: the Raft driver loop of a node.
//!
//! Runs in its own task queue on the executor pinned to `runtime.raft_core` (shared with
//! the shard on that CPU, or dedicated when no shard runs there). Owns the pure Raft core,
//! the WAL, the peer transport and the publication of the `LeaseView`; its parts live in
//! files of their own: `start` (start-up until the loop runs), `requests` (calls in
//! progress: proposed writes by index, read indexes by id, calls forwarded to the leader,
//! calls parked while no leader is known), `snap` (snapshots taken, sent, received),
//! `admin` (operator calls), `join` (a learner joining), `export` (the raft metrics: the
//! pure core's `Counters` and state, read after each input that can change them; gauges
//! once per loop turn). Must not touch a shard's partition: committed entries and answers
//! go out through the shards' queues.
//!
//! One loop turn: take every queued event (client calls from shards, peer frames), tick
//! when due, then drive: each Raft `Ready` is persisted (the WAL batches it), the lease
//! view published, messages queued to peers, committed entries handed to the shards, and
//! answers queued; finally the shard queues are flushed (waiting when one is full).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::rc::Rc;

use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use glommio::channels::shared_channel::ConnectedSender;
use glommio::net::TcpStream;

use super::members;
use super::{AdminCall, CoreAnswer, Lease, ReadTarget, Shared, ToRaft, ToShard};
use crate::net::peer::Handshake;
use crate::net::peer::{Inbound, Transport};
use crate::net::wire::ClientFrame;
use crate::shard::{Command, Routed, Sequencer, ToSequencer, participants, route};
use crate::wal::{DmaDisk, Wal, WalError};
use ringkv_proto::outcome::{
    Answer, ApiError, MemberRole as StatusMemberRole, MemberStatus, NodeRole, NodeStatus,
    TimeoutKind, UnavailableReason, WalStatus,
};
use ringkv_raft::{Body, EntryKind, Index, Membership, NodeId, Raft, ReadError, Role, Term};

/// How long a stopping leader waits for its transfer and pending writes.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(3000);
/// A store whose resolution point stands still this long below the entries handed out is
/// reported (`Core::check_store_progress`).
const STORE_STALL_REPORT: Duration = Duration::from_secs(10);

mod admin;
mod compactor;
mod export;
mod join;
mod leases;
mod requests;
mod snap;
mod start;

use requests::{Op, Origin};
pub(super) use start::{header_cluster_id, run};

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

/// The raft core's driver state. Each part that only one concern touches is a type of
/// its own, owned by that concern's file: `req` (calls in progress, `requests.rs`), `snap`
/// (snapshots, `snap.rs`), `admin` (operator calls waiting, `admin.rs`), `export`
/// (metrics, `export.rs`).
struct Core {
    id: NodeId,
    raft: Raft,
    transport: Transport,
    /// Every member's address: the config's, then snapshots' and the log's.
    addresses: BTreeMap<NodeId, SocketAddr>,
    to_shards: Vec<ConnectedSender<ToShard>>,
    /// Shard messages of this turn, sent (waiting when a queue is full) at its end.
    out: Vec<(usize, ToShard)>,
    shared: Arc<Shared>,
    ev_tx: Rc<LocalSender<Event>>,
    /// A failure found while handling an event: the node stops with it.
    fatal: Option<String>,
    req: requests::Requests,
    snap: snap::Snapshots,
    admin: admin::AdminWaits,
    export: export::Export,
    /// The WAL's counters (fsyncs, batches, entries), shown by /status.
    wal_stats: Rc<std::cell::Cell<crate::wal::WalStats>>,
    /// The disk is full: the WAL holds writes it could not place; no Ready is taken.
    wal_stalled: bool,
    /// Where this node serves /metrics (shown by /status, for `ringkv top`).
    metrics_address: Option<String>,
    data_dir: std::path::PathBuf,
    /// The membership the transport was last synced with.
    membership_seen: Membership,
    /// Removed members: their outboxes go a moment after the removal committed (so the
    /// notice that they were removed can still reach them).
    retiring: Vec<(NodeId, Instant)>,
    /// This node's removal committed: it stops.
    removed_self: bool,
    request_timeout: Duration,
    tick: Duration,
    last_role: Role,
    /// (term, leader, transfer in progress) last seen: parked calls go out when it changes.
    last_leader: (Term, NodeId, bool),
    /// Set when shutdown began: the latest moment to finish it.
    stop_at: Option<Instant>,
    state_bytes_max: u64,
    append_entries_max: usize,
    /// `raft.replication.batch_delay_ms`: how long a leader holds writes to batch them.
    batch_delay: Duration,
    last_lag_log: Instant,
    /// Numbers the store's revisions from the shards' reports, decides multi-shard txns,
    /// joins answers (`ringkv_store::sequencer`).
    seq: Sequencer,
    /// The store's negative controls every new sequencer gets (the fault campaign's
    /// `[testing] controls`; all off otherwise).
    store_controls: ringkv_store::Controls,
    /// The shards' store epoch: +1 at every install or reset (what an older store said is
    /// dropped).
    store_epoch: u64,
    /// The last index handed to the shards, and since when the sequencer's resolution
    /// point has stood still below it (a stalled store is reported once per stall).
    dispatched: Index,
    store_stall: Option<(Index, Instant, bool)>,
    /// Writes committed in their term and handed to the shards, waiting for the
    /// sequencer's answer, by log index.
    applying: std::collections::HashMap<Index, requests::Origin>,
    /// The lease table and the leader's lessor (`leases.rs`).
    leases: leases::Leases,
    /// The store's NOSPACE alarm as applied here (from shard 0's events).
    nospace: bool,
    /// When this leader last proposed raising it (at most one a second).
    nospace_proposed: Option<Instant>,
    /// Automatic compaction (`compactor.rs`).
    compactor: compactor::Compactor,
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
            // The tick, or held writes falling due if that is sooner.
            let wake_at = self
                .req
                .held_due(self.batch_delay)
                .map_or(next_tick, |due| due.min(next_tick));
            let wait = wake_at.saturating_duration_since(Instant::now());
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
            self.export
                .metrics
                .events_queued
                .set(self.ev_tx.len() as f64);
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
            if self
                .req
                .held_due(self.batch_delay)
                .is_some_and(|due| due <= Instant::now())
            {
                self.propose_held();
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
                self.check_store_progress();
                self.lease_turn();
                self.compaction_turn();
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
                    self.export.metrics.appends_received.increment(1);
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
            // Frames queued to it were lost with the connection: stop pipelining, probe.
            Event::Peer(Inbound::Unreachable(peer)) => self.raft.report_unreachable(peer),
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
                    let policy = requests::policy_from_wire(policy);
                    let deadline = now + self.request_timeout;
                    let target = ReadTarget::Key(Bytes::from(key));
                    self.submit(
                        Origin::Peer(from, id),
                        Op::Read { target, policy },
                        deadline,
                    );
                }
                ClientFrame::Lease {
                    id,
                    op,
                    lease,
                    keys,
                } => {
                    let origin = Origin::Peer(from, id);
                    match leases::from_wire(op, lease, keys) {
                        Ok(call) => {
                            self.submit(origin, Op::Lease(call), now + self.request_timeout)
                        }
                        Err(e) => self.answer(origin, Err(ApiError::bad_request(e))),
                    }
                }
                ClientFrame::ReadTxn {
                    id,
                    command,
                    policy,
                } => {
                    let policy = requests::policy_from_wire(policy);
                    let deadline = now + self.request_timeout;
                    let origin = Origin::Peer(from, id);
                    match Command::decode(&Bytes::from(command)) {
                        Ok(Command::Txn(t)) if t.is_read_only() => {
                            let target = ReadTarget::Txn(Arc::new(t));
                            self.submit(origin, Op::Read { target, policy }, deadline)
                        }
                        _ => self.answer(
                            origin,
                            Err(ApiError::bad_request(
                                "forwarded read txn: not a read-only txn",
                            )),
                        ),
                    }
                }
                ClientFrame::Range {
                    id,
                    request,
                    policy,
                } => {
                    let policy = requests::policy_from_wire(policy);
                    let deadline = now + self.request_timeout;
                    let origin = Origin::Peer(from, id);
                    match ringkv_store::decode_range(&Bytes::from(request)) {
                        Ok(r) => {
                            let target = ReadTarget::Range(Arc::new(r));
                            self.submit(origin, Op::Read { target, policy }, deadline)
                        }
                        Err(e) => self.answer(
                            origin,
                            Err(ApiError::bad_request(format!("forwarded range: {}", e.0))),
                        ),
                    }
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
                f @ ClientFrame::SnapChunk { .. } => self.snap.chunk_inbox.push_back((from, f)),
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
                    if self.req.forwards.get(&id).is_some_and(|f| f.to == from)
                        && let Some(f) = self.req.forwards.remove(&id)
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
                target,
                policy,
                deadline,
            }) => self.submit(
                Origin::Shard(shard, req),
                Op::Read { target, policy },
                deadline,
            ),
            Event::Shard(ToRaft::Lease {
                shard,
                req,
                call,
                deadline,
            }) => self.submit(Origin::Shard(shard, req), Op::Lease(call), deadline),
            Event::Shard(ToRaft::Status { shard, req }) => {
                let st = Answer::Status(Box::new(self.status()));
                self.answer(Origin::Shard(shard, req), Ok(st));
            }
            Event::Shard(ToRaft::Served { token, outcome }) => {
                if let Some((from, id)) = self.req.serving.remove(&token) {
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
                header,
                pairs,
                count,
                took,
            }) => self.snapshot_part(shard, index, header, pairs, count, took),
            Event::Shard(ToRaft::Store { epoch, out }) => self.store_said(epoch, out),
            Event::Shard(ToRaft::PeerConn { fd, first }) => {
                // SAFETY: the shard handed over sole ownership of this socket descriptor.
                let s = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
                self.transport.adopt(s, first);
            }
        }
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
            snapshot_index: self.snap.latest.as_ref().map_or(0, |s| s.index),
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
            alarms: if self.nospace {
                vec!["NOSPACE".into()]
            } else {
                Vec::new()
            },
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
        self.shared
            .leader
            .store(self.raft.leader(), std::sync::atomic::Ordering::Relaxed);
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
        if let Some((index, term)) = self.snap.compact_wal.take() {
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
                    self.export
                        .metrics
                        .entries_per_ready
                        .record(rd.entries.len() as f64);
                }
                if rd.reset && rd.snapshot.is_none() {
                    // MemFirst divergence: the state machine and snapshots go too; shards
                    // start empty and re-apply from the leader. (A reset that comes with a
                    // received snapshot keeps it: the shards load it below.)
                    self.snap
                        .store
                        .clear()
                        .await
                        .map_err(|e| format!("stopping: clearing snapshots: {e}"))?;
                    self.snap.latest = None;
                    self.void_building();
                    let epoch = self.new_store(0, 1, &[], false);
                    for s in 0..self.to_shards.len() {
                        self.out.push((s, ToShard::Reset { epoch }));
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
                        self.export.metrics.appends_sent.increment(1);
                        self.export
                            .metrics
                            .entries_per_append
                            .record(entries.len() as f64);
                    }
                    if matches!(m.body, Body::Snapshot { .. }) {
                        self.send_snapshot(m);
                    } else {
                        self.transport.send(m);
                    }
                }
                if let Some(last) = rd.committed.last().map(|e| e.index) {
                    self.dispatch(&rd.committed, last);
                    // Handed out, not yet applied: the shards apply their queues in order,
                    // and everything that depends on `applied` reaches them after these
                    // entries (reads wait for a shard's watermark; a snapshot is asked
                    // for through the same queue), as `Raft::on_applied` allows.
                    self.raft.on_applied(last);
                    self.maybe_snapshot();
                }
                for r in rd.reads {
                    let Some(w) = self.req.reads.remove(&r.id) else {
                        continue;
                    };
                    match (r.result, w.origin) {
                        // The core reads nothing of its own.
                        (Ok(_), Origin::Core) => {}
                        (Ok(index), Origin::Shard(s, req)) => self.out.push((
                            s,
                            ToShard::Answer {
                                req,
                                answer: CoreAnswer::ReadAt(index),
                            },
                        )),
                        (Ok(index), Origin::Peer(from, id)) => {
                            // A key is served by its owner; a range is gathered by the
                            // shard of its first key.
                            let n = self.to_shards.len();
                            let shard = match &w.target {
                                ReadTarget::Key(k) => route(k, n),
                                ReadTarget::Range(r) => route(&r.key, n),
                                ReadTarget::Txn(_) => 0,
                            };
                            self.req.serving.insert(r.id, (from, id));
                            self.out.push((
                                shard,
                                ToShard::ServeRead {
                                    token: r.id,
                                    target: w.target,
                                    index,
                                    deadline: w.deadline,
                                },
                            ));
                        }
                        // Lost leadership while the read waited: reads are safe to redo.
                        (Err(ReadError::NotLeader { .. }), o) => self.submit(
                            o,
                            Op::Read {
                                target: w.target,
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
            if seen.1 != 0 && !self.req.parked.is_empty() {
                for p in std::mem::take(&mut self.req.parked) {
                    self.submit(p.origin, p.op, p.deadline);
                }
                // Calls parked again (e.g. a transfer in progress) wait for the next change.
            }
        }
        self.flush_out().await
    }

    /// Hands committed entries to the shards they involve (decoded once, here), moves
    /// every shard's watermark to `through`, and tells the sequencer which writes someone
    /// waits for.
    fn dispatch(&mut self, committed: &[ringkv_raft::Entry], through: Index) {
        let n = self.to_shards.len();
        let mut per: Vec<Vec<Routed>> = vec![Vec::new(); n];
        let mut lost = Vec::new();
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
            // A write proposed here is answered by the store if its entry is the one
            // committed at its index (same term); otherwise it was lost with a leader.
            let waiting = match self.req.writes.remove(&e.index) {
                Some(w) if w.term == e.term => Some(w.origin),
                Some(w) => {
                    lost.push(w.origin);
                    None
                }
                None => None,
            };
            self.snap.log_bytes_since += e.data.len() as u64;
            let cmd = if e.kind == EntryKind::Normal && members::decode_address(&e.data).is_none() {
                match Command::decode(&e.data) {
                    Ok(c) => Some(c),
                    // The leader encodes every entry; a bad one is a bug, not input. Every
                    // replica skips it alike (a no-op for the store).
                    Err(err) => {
                        tracing::error!(
                            node = self.id,
                            index = e.index,
                            "committed entry does not decode: {}",
                            err.0
                        );
                        None
                    }
                }
            } else {
                None
            };
            let Some(cmd) = cmd else {
                if let Some(o) = waiting {
                    lost.push(o);
                }
                continue;
            };
            let routed = Routed {
                index: e.index,
                participants: participants(&cmd, n),
                cmd: Arc::new(cmd),
                answer: waiting.is_some(),
            };
            self.seq.expect(&routed);
            if let Some(o) = waiting {
                self.applying.insert(e.index, o);
            }
            for (s, list) in per.iter_mut().enumerate() {
                if routed.participants >> s & 1 == 1 {
                    list.push(routed.clone());
                }
            }
        }
        for (s, entries) in per.into_iter().enumerate() {
            self.out.push((s, ToShard::Apply { entries, through }));
        }
        self.dispatched = self.dispatched.max(through);
        for o in lost {
            self.answer(o, Err(ApiError::LostLeadership { change: false }));
        }
    }

    /// Reports a store whose resolution point stood still below the entries handed out for
    /// `STORE_STALL_REPORT`: a bug (every wait is for a smaller index), said with what the
    /// sequencer knows.
    fn check_store_progress(&mut self) {
        let resolved = self.seq.resolved().0;
        if resolved >= self.dispatched {
            self.store_stall = None;
            return;
        }
        match &mut self.store_stall {
            Some((at, since, reported)) if *at == resolved => {
                if !*reported && since.elapsed() >= STORE_STALL_REPORT {
                    *reported = true;
                    tracing::error!(
                        node = self.id,
                        dispatched = self.dispatched,
                        epoch = self.store_epoch,
                        "the store has not moved for {} s: {}",
                        STORE_STALL_REPORT.as_secs(),
                        self.seq.describe()
                    );
                    for s in 0..self.to_shards.len() {
                        self.out.push((s, ToShard::Describe));
                    }
                }
            }
            _ => self.store_stall = Some((resolved, Instant::now(), false)),
        }
    }

    /// What a shard's store told the sequencer: decisions go to their participants, a new
    /// resolution to every shard, finished answers to their callers.
    fn store_said(&mut self, epoch: u64, out: Vec<ToSequencer>) {
        if epoch != self.store_epoch {
            return; // said by a store since replaced
        }
        for m in out {
            match m {
                ToSequencer::Report(mut r) => {
                    let events = std::mem::take(&mut r.events);
                    if !events.is_empty() {
                        self.store_events(events);
                    }
                    self.seq.report(r)
                }
                ToSequencer::Partial(p) => {
                    if let Some((index, parts, decision)) = self.seq.partial(p) {
                        for s in 0..self.to_shards.len() {
                            if parts >> s & 1 == 1 {
                                let decision = decision.clone();
                                self.out.push((s, ToShard::Decision { index, decision }));
                            }
                        }
                    }
                }
            }
        }
        if let Some(r) = self.seq.resolve() {
            let r = Arc::new(r);
            for s in 0..self.to_shards.len() {
                self.out.push((s, ToShard::Resolution(r.clone())));
            }
        }
        for (i, applied) in self.seq.answers() {
            if let Some(o) = self.applying.remove(&i) {
                self.answer(o, applied_outcome(applied));
            }
        }
    }

    /// A new store epoch with an empty or installed state at (`index`, `revision`): the
    /// sequencer starts there, and writes still waiting for the old store's answers get
    /// "outcome unknown" (their entries may be in the new state or not).
    pub(super) fn new_store(
        &mut self,
        index: Index,
        revision: ringkv_store::Revision,
        leases: &[(ringkv_store::LeaseId, i64, Option<i64>)],
        nospace: bool,
    ) -> u64 {
        self.store_epoch += 1;
        self.dispatched = index;
        self.store_stall = None;
        self.leases_replaced(leases);
        self.nospace = nospace;
        self.seq = Sequencer::new(self.to_shards.len(), index, revision);
        self.seq.set_controls(self.store_controls);
        for (_, o) in std::mem::take(&mut self.applying) {
            self.answer(
                o,
                Err(ApiError::Timeout {
                    what: TimeoutKind::Write,
                }),
            );
        }
        self.store_epoch
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
            pending_writes = self.req.writes.len(),
            "stopping on signal"
        );
    }

    fn shutdown_done(&self) -> bool {
        let handed_over = self.raft.role() != Role::Leader || self.raft.transfer_target().is_none();
        handed_over
            && self.req.writes.is_empty()
            && self.req.forwards.is_empty()
            && self.applying.is_empty()
    }

    async fn finish_shutdown(&mut self, wal: &mut Wal<DmaDisk>) -> Result<(), String> {
        let mut left = self.req.drain_for_shutdown();
        left.extend(
            self.admin
                .waits
                .drain(..)
                .map(|w| (w.origin, requests::timeout(TimeoutKind::Stopped))),
        );
        // Committed, still being applied: the write is in the log; its answer is unknown.
        left.extend(
            self.applying
                .drain()
                .map(|(_, o)| (o, requests::timeout(TimeoutKind::Write))),
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

/// A write's answer as the store gave it, in the node's typed outcome (the calls that
/// want only the revision, the seed's put and delete, take it from there).
fn applied_outcome(a: ringkv_store::Applied) -> ringkv_proto::outcome::Outcome {
    match a.result {
        Ok(r) => Ok(Answer::Store {
            revision: a.revision,
            response: Vec::from(ringkv_store::encode_response(&r)),
        }),
        Err(e) => Err(crate::shard::api_error(&e)),
    }
}
