//! Snapshots on the raft core: taking them (every `interval_entries` applied entries once
//! the log grew by `log_growth_percent_min` of the last one's size, and on demand), compacting the log and the WAL behind them, sending them to followers that need
//! compacted entries, receiving and installing them. Part of the raft core's driver (same
//! executor, same state); shard state is reached only through `ToShard` messages.
//!
//! Taking one: right after handing out the entries through index i, every shard is asked
//! for its pairs (`ToShard::Snapshot`); it copies them between two applies (a reference
//! count per key's history) and encodes the copy while it applies on, so all parts are
//! at i. The raft core assembles the node snapshot (address book + key-value body),
//! saves it in a task of its own that yields every MiB (the driver keeps running), then
//! compacts the Raft log and the WAL to i. Writes are acknowledged at commit by the raft
//! core, so a shard's copying delays its applies (and the reads waiting for them), not
//! acknowledgements; when the raft core shares that shard's executor it waits at most
//! the executor's 10 ms preemption timer, as copying and encoding yield in steps.
//!
//! Sending: the stored file's body is read chunk by chunk (`chunk_bytes_max`, one read at
//! a time, at most `WINDOW` chunks unacknowledged) and sent over the peer connection; the
//! receiver writes each chunk to a temporary file as it comes, checks the CRC32C of the
//! whole at the end, stores it (header, fsync, rename, directory fsync) and acknowledges the
//! last byte; only then does the leader send the Raft snapshot message, whose Ready makes
//! the receiver load the file into its shards. Memory on either side: a few chunks. A
//! transfer without progress for `STALL` is abandoned (the core retries); a gap restarts
//! it from zero; a receiver over its size limit refuses it for good.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Core, Event, Origin};
use std::rc::Rc;

use crate::config::NodeConfig;
use crate::net::wire::ClientFrame;
use crate::node::ToShard;
use crate::node::members;
use crate::wal::disk::DmaDiskFile;
use crate::wal::snapshot::{BodyReader, BodyWriter};
use crate::wal::{DmaDisk, SnapshotStore};
use ringkv_proto::outcome::{Answer, ApiError, SnapshotTaken};
use ringkv_raft::{Body, Index, Membership, Message, NodeId, SnapshotMeta, Term};

/// Chunks in flight per transfer.
const WINDOW: u64 = 4;
/// A transfer with no acknowledged progress for this long is abandoned (the receiver's
/// final ack comes after it stored the whole snapshot, hence the margin).
const STALL: Duration = Duration::from_secs(30);
/// `SnapAck::next` meaning "refused for good" (too large here): the sender gives up.
const REFUSED: u64 = u64::MAX;

/// The raft core's snapshot state: the store, the newest snapshot here, one being taken,
/// transfers out and in.
pub(super) struct Snapshots {
    pub store: Rc<SnapshotStore<DmaDisk>>,
    /// The newest snapshot here (taken, received or loaded): what followers are sent
    /// (read from its file as it goes).
    pub latest: Option<SnapshotMeta>,
    /// Bumped by a reset or an installed snapshot: a snapshot of our own started before
    /// describes a replaced state and is void.
    pub snap_epoch: u64,
    /// Entries applied between automatic snapshots (0: only on demand).
    pub snap_interval: u64,
    /// `raft.snapshot.log_growth_percent_min`.
    pub log_growth_percent_min: u64,
    /// Payload bytes of the entries applied since the last snapshot was started.
    pub log_bytes_since: u64,
    /// The body size of the newest snapshot taken here (0: none yet).
    pub last_bytes: u64,
    pub chunk_bytes_max: usize,
    /// A received snapshot larger than this is refused.
    pub snapshot_bytes_max: u64,
    pub building: Option<Building>,
    pub saving: bool,
    /// Operators who asked while a snapshot was being saved: the next one is theirs.
    pub snapshot_after_save: Vec<Origin>,
    pub sends: HashMap<NodeId, Sending>,
    pub recv: Option<Receiving>,
    /// A received snapshot stored here, waiting for the leader's message to install it.
    pub received: Option<(Index, Term)>,
    /// Snapshot chunks received, written to their file at the next drive.
    pub chunk_inbox: VecDeque<(NodeId, ClientFrame)>,
    /// The WAL compacts to this (index, term) at the next turn.
    pub compact_wal: Option<(Index, Term)>,
}

impl Snapshots {
    /// Whether an automatic snapshot is due, `entries` applied since the last one.
    fn due(&self, entries: u64) -> bool {
        snapshot_due(
            entries,
            self.snap_interval,
            self.log_bytes_since,
            self.last_bytes,
            self.log_growth_percent_min,
        )
    }

    pub fn new(
        store: Rc<SnapshotStore<DmaDisk>>,
        latest: Option<SnapshotMeta>,
        cfg: &NodeConfig,
    ) -> Self {
        Self {
            store,
            latest,
            snap_epoch: 0,
            snap_interval: cfg.raft.snapshot.interval_entries,
            log_growth_percent_min: cfg.raft.snapshot.log_growth_percent_min,
            log_bytes_since: 0,
            last_bytes: 0,
            chunk_bytes_max: cfg.raft.snapshot.chunk_bytes_max,
            // A snapshot holds the state (at most state_bytes_max) plus its framing.
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
        }
    }
}

/// The automatic snapshot rule: `interval` entries applied since the last snapshot (0:
/// never), and log bytes applied since then at least `growth_percent` of its size.
fn snapshot_due(
    entries: u64,
    interval: u64,
    log_bytes_since: u64,
    last_bytes: u64,
    growth_percent: u64,
) -> bool {
    interval > 0
        && entries >= interval
        && log_bytes_since.saturating_mul(100) >= last_bytes.saturating_mul(growth_percent)
}

pub(super) struct Building {
    pub index: Index,
    /// `Core::snap_epoch` when it started: a reset or an installed snapshot since makes
    /// it void.
    pub epoch: u64,
    /// Per shard: its part, once it came.
    pub parts: Vec<Option<ShardPart>>,
    pub started: Instant,
    /// The longest time one shard spent copying its part (its apply pause).
    pub pause: Duration,
    /// Operators waiting for it (`POST /snapshot`).
    pub waiting: Vec<Origin>,
}

/// A snapshot save that finished (an event for the driver loop).
pub(super) struct Saved {
    pub meta: SnapshotMeta,
    /// The body's length.
    pub bytes: u64,
    /// When it started, the longest shard pause, its keys, the operators waiting for it.
    #[allow(clippy::type_complexity)]
    pub own: (Instant, Duration, u64, Vec<Origin>),
    /// `Core::snap_epoch` when it was started.
    pub epoch: u64,
    pub result: Result<(), String>,
}

/// A snapshot on its way to a follower: read from its file chunk by chunk (one read at a
/// time, at most `WINDOW` chunks unacknowledged).
pub(super) struct Sending {
    msg: Message,
    meta: SnapshotMeta,
    reader: Option<Rc<BodyReader<DmaDiskFile>>>,
    next: u64,
    acked: u64,
    reading: bool,
    progress_at: Instant,
}

/// A shard's part of a snapshot being taken: the store-wide header as it sees it, its keys
/// and how many.
pub(super) type ShardPart = (Vec<u8>, Vec<u8>, u64);

/// A snapshot arriving from the leader, written to a temporary file as it comes.
pub(super) struct Receiving {
    from: NodeId,
    index: Index,
    term: Term,
    membership: Vec<u8>,
    total: u64,
    crc: u32,
    writer: BodyWriter<DmaDisk>,
}

/// The start of the node snapshot body: the address book, then the store body's header
/// and key count (`ringkv_store::snapshot::assemble` with the shards' keys left out). The
/// shards' keys follow it in the file as they are (`SnapshotStore::save_parts`), so the
/// body is never assembled in memory.
fn body_head(
    book: &std::collections::BTreeMap<NodeId, std::net::SocketAddr>,
    header: &[u8],
    parts: &[(Vec<u8>, u64)],
) -> Vec<u8> {
    let mut head = members::encode_snapshot(book, &[]);
    head.extend_from_slice(&ringkv_store::snapshot::assemble(
        header,
        &[(Vec::new(), parts.iter().map(|p| p.1).sum())],
    ));
    head
}

impl Core {
    /// Takes a snapshot when `interval_entries` entries were applied since the last one
    /// and the log grew by `log_growth_percent_min` of the last one's size: copying the
    /// state then costs at most a fixed multiple of the bytes written, however large it is.
    pub(super) fn maybe_snapshot(&mut self) {
        let applied = self.raft.applied();
        if self
            .snap
            .due(applied - applied.min(self.last_snapshot_index()))
            && self.snap.building.is_none()
            && !self.snap.saving
        {
            self.start_snapshot(None);
        }
    }

    fn last_snapshot_index(&self) -> Index {
        self.snap.latest.as_ref().map_or(0, |s| s.index)
    }

    /// Asks every shard for its part at the current applied index (`origin`: an operator
    /// waiting for it).
    pub(super) fn start_snapshot(&mut self, origin: Option<Origin>) {
        let index = self.raft.applied();
        if let Some(b) = &mut self.snap.building {
            b.waiting.extend(origin);
            return;
        }
        if self.snap.saving {
            // One at a time: this one starts when the one being saved is done.
            self.snap.snapshot_after_save.extend(origin);
            return;
        }
        if index == 0 || index <= self.last_snapshot_index() {
            if let Some(o) = origin {
                let r = Ok(Answer::Snapshot {
                    index: self.last_snapshot_index(),
                    taken: None,
                });
                self.answer(o, r);
            }
            return;
        }
        let n = self.to_shards.len();
        for s in 0..n {
            self.out.push((s, ToShard::Snapshot { index }));
        }
        self.snap.log_bytes_since = 0;
        self.snap.building = Some(Building {
            index,
            epoch: self.snap.snap_epoch,
            parts: vec![None; n],
            started: Instant::now(),
            pause: Duration::ZERO,
            waiting: origin.into_iter().collect(),
        });
    }

    /// A shard's part arrived; with all of them, the snapshot is assembled and saved.
    pub(super) fn snapshot_part(
        &mut self,
        shard: usize,
        index: Index,
        header: Vec<u8>,
        pairs: Vec<u8>,
        count: u64,
        took: Duration,
    ) {
        let Some(b) = self.snap.building.as_mut().filter(|b| b.index == index) else {
            return;
        };
        b.parts[shard] = Some((header, pairs, count));
        b.pause = b.pause.max(took);
        if b.parts.iter().any(|p| p.is_none()) {
            return;
        }
        let b = self.snap.building.take().expect("checked");
        let mut header = None;
        let mut parts: Vec<(Vec<u8>, u64)> = Vec::with_capacity(b.parts.len());
        for (h, keys, count) in b.parts.into_iter().map(|p| p.expect("all")) {
            // Every shard keeps a copy of the store-wide state: they must agree.
            assert!(
                header.as_ref().is_none_or(|first| *first == h),
                "shards disagree on the store-wide state at {index}"
            );
            header = Some(h);
            parts.push((keys, count));
        }
        let header = header.expect("a shard");
        let keys: u64 = parts.iter().map(|p| p.1).sum();
        let book = self.member_addresses();
        let meta = self.raft.snapshot_meta(index);
        self.snap.saving = true;
        let (store, ev) = (self.snap.store.clone(), self.ev_tx.clone());
        let (started, pause, waiting, epoch) = (b.started, b.pause, b.waiting, b.epoch);
        // Assembling and saving run in a task that yields every MiB: the driver loop goes
        // on between the steps.
        glommio::spawn_local(async move {
            let head = body_head(&book, &header, &parts);
            let mut body: Vec<&[u8]> = vec![&head];
            body.extend(parts.iter().map(|p| &p.0[..]));
            let bytes = body.iter().map(|p| p.len() as u64).sum();
            let result = store
                .save_parts(&meta, &body)
                .await
                .map_err(|e| e.to_string());
            drop(body);
            let _ = ev
                .send(Event::SnapshotSaved(Saved {
                    meta,
                    bytes,
                    own: (started, pause, keys, waiting),
                    epoch,
                    result,
                }))
                .await;
        })
        .detach();
    }

    /// Makes a snapshot being taken or saved void (reset or install): waiters get 503.
    pub(super) fn void_building(&mut self) {
        self.snap.snap_epoch += 1;
        if let Some(b) = self.snap.building.take() {
            for o in b.waiting {
                self.answer(o, Err(ApiError::SnapshotVoid));
            }
        }
    }

    /// Addresses of the current members (and this node).
    fn member_addresses(&self) -> std::collections::BTreeMap<NodeId, std::net::SocketAddr> {
        // Not filtered by the current membership: a member being added (its address entry
        // appended, its AddLearner not yet) must keep its address across the snapshot.
        let m = self.raft.membership();
        self.addresses
            .iter()
            .filter(|(id, _)| !m.removed.contains(id))
            .map(|(a, b)| (*a, *b))
            .collect()
    }

    /// A snapshot reached disk (`own`: taken here; `from`: received from that leader).
    pub(super) fn snapshot_saved(&mut self, saved: Saved) -> Result<(), String> {
        let Saved {
            meta,
            bytes,
            own,
            epoch,
            result,
        } = saved;
        self.snap.saving = false;
        let (started, pause, keys, waiting) = own;
        let queued = std::mem::take(&mut self.snap.snapshot_after_save);
        if epoch != self.snap.snap_epoch {
            // Taken before a reset or an installed snapshot: it describes a state this node
            // no longer has. After a reset it must not survive a restart either.
            if result.is_ok()
                && self
                    .snap
                    .latest
                    .as_ref()
                    .is_none_or(|l| l.index < meta.index)
            {
                let store = self.snap.store.clone();
                let (i, t) = (meta.index, meta.term);
                glommio::spawn_local(async move {
                    if let Err(e) = store.discard(i, t).await {
                        tracing::error!("cannot delete a void snapshot at {i}: {e}");
                    }
                })
                .detach();
            }
            for o in waiting.into_iter().chain(queued) {
                self.answer(o, Err(ApiError::SnapshotVoid));
            }
            return Ok(());
        }
        match result {
            Ok(()) => {
                let index = meta.index;
                if self.raft.latest_snapshot().is_none_or(|s| s.index < index) {
                    self.raft.compact(index);
                    self.snap.compact_wal = Some((index, meta.term));
                }
                tracing::info!(
                    node = self.id,
                    index,
                    bytes,
                    keys,
                    took_ms = started.elapsed().as_millis() as u64,
                    shard_pause_ms = pause.as_secs_f64() * 1000.0,
                    "snapshot taken; log compacted"
                );
                self.set_latest(meta);
                self.snap.last_bytes = bytes;
                for o in waiting {
                    self.answer(
                        o,
                        Ok(Answer::Snapshot {
                            index,
                            taken: Some(SnapshotTaken {
                                bytes,
                                keys,
                                took_ms: started.elapsed().as_millis() as u64,
                                shard_pause_ms: pause.as_secs_f64() * 1000.0,
                            }),
                        }),
                    );
                }
                for o in queued {
                    self.start_snapshot(Some(o));
                }
                Ok(())
            }
            Err(e) => {
                for o in waiting.into_iter().chain(queued) {
                    let e = ApiError::SnapshotFailed { message: e.clone() };
                    self.answer(o, Err(e));
                }
                // A full disk is survivable (the log stays); anything else is not.
                if e.contains("disk full") || e.contains("No space") {
                    tracing::error!(node = self.id, "snapshot not saved: {e}");
                    Ok(())
                } else {
                    Err(format!("stopping: snapshot not saved: {e}"))
                }
            }
        }
    }

    fn send_frame(&self, to: NodeId, f: ClientFrame) -> bool {
        self.transport.send_client(to, f, Instant::now() + STALL)
    }

    /// The core wants `m` (a `Body::Snapshot`) delivered: stream the data first.
    pub(super) fn send_snapshot(&mut self, m: Message) {
        let Body::Snapshot { meta } = &m.body else {
            unreachable!("not a snapshot message");
        };
        let to = m.to;
        if self
            .snap
            .sends
            .get(&to)
            .is_some_and(|s| s.meta.index == meta.index)
        {
            return; // already on its way
        }
        if self
            .snap
            .latest
            .as_ref()
            .is_none_or(|l| l.index != meta.index || l.term != meta.term)
        {
            tracing::warn!(
                node = self.id,
                peer = to,
                index = meta.index,
                "the snapshot to send is not at hand"
            );
            self.raft.report_snapshot(to, false);
            return;
        }
        tracing::info!(
            node = self.id,
            peer = to,
            index = meta.index,
            "sending a snapshot"
        );
        let (store, ev) = (self.snap.store.clone(), self.ev_tx.clone());
        let (index, term) = (meta.index, meta.term);
        glommio::spawn_local(async move {
            let result = store
                .open_body(index, term)
                .await
                .map_err(|e| e.to_string());
            let _ = ev
                .send(Event::SnapshotOpened {
                    to,
                    index,
                    result: result.map(Rc::new),
                })
                .await;
        })
        .detach();
        self.snap.sends.insert(
            to,
            Sending {
                meta: meta.clone(),
                msg: m,
                reader: None,
                next: 0,
                acked: 0,
                reading: true,
                progress_at: Instant::now(),
            },
        );
    }

    /// The file of a snapshot to send is open (or not).
    pub(super) fn snapshot_opened(
        &mut self,
        to: NodeId,
        index: Index,
        result: Result<Rc<BodyReader<DmaDiskFile>>, String>,
    ) {
        let Some(s) = self
            .snap
            .sends
            .get_mut(&to)
            .filter(|s| s.meta.index == index)
        else {
            return;
        };
        match result {
            Ok(r) => {
                s.reader = Some(r);
                s.reading = false;
                self.pump(to);
            }
            Err(e) => self.read_failed(to, index, &e),
        }
    }

    fn read_failed(&mut self, to: NodeId, index: Index, e: &str) {
        tracing::error!(
            node = self.id,
            peer = to,
            index,
            "cannot read the snapshot to send: {e}"
        );
        self.abandon_send(to);
    }

    /// Gives up sending to `to` (the core sends a snapshot again later).
    fn abandon_send(&mut self, to: NodeId) {
        self.snap.sends.remove(&to);
        self.raft.report_snapshot(to, false);
    }

    /// Reads the next chunk if the window allows (one read at a time, in order).
    fn pump(&mut self, to: NodeId) {
        let chunk = self.snap.chunk_bytes_max as u64;
        let Some(s) = self.snap.sends.get_mut(&to) else {
            return;
        };
        let Some(reader) = s.reader.clone() else {
            return;
        };
        if s.reading || s.next >= reader.body_len || s.next >= s.acked + WINDOW * chunk {
            return;
        }
        s.reading = true;
        let (offset, index) = (s.next, s.meta.index);
        let len = chunk.min(reader.body_len - offset) as usize;
        let ev = self.ev_tx.clone();
        glommio::spawn_local(async move {
            let result = reader.read(offset, len).await.map_err(|e| e.to_string());
            let _ = ev
                .send(Event::ChunkRead {
                    to,
                    index,
                    offset,
                    result,
                })
                .await;
        })
        .detach();
    }

    /// A chunk of a snapshot being sent was read: send it, read the next.
    pub(super) fn chunk_read(
        &mut self,
        to: NodeId,
        index: Index,
        offset: u64,
        result: Result<Vec<u8>, String>,
    ) {
        let Some(s) = self
            .snap
            .sends
            .get_mut(&to)
            .filter(|s| s.meta.index == index)
        else {
            return;
        };
        s.reading = false;
        let data = match result {
            Ok(d) => d,
            Err(e) => return self.read_failed(to, index, &e),
        };
        if offset != s.next {
            return self.pump(to); // a restart happened meanwhile
        }
        let reader = s.reader.clone().expect("open");
        let f = ClientFrame::SnapChunk {
            index,
            term: s.meta.term,
            membership: s.meta.membership.encode(),
            offset,
            total: reader.body_len,
            crc: reader.body_crc,
            data: data.clone(),
        };
        if self.transport.send_client(to, f, Instant::now() + STALL) {
            s.next = offset + data.len() as u64;
        }
        self.pump(to);
    }

    /// The receiver's progress on a transfer.
    pub(super) fn snap_ack(&mut self, from: NodeId, index: Index, next: u64, ok: bool) {
        let Some(s) = self
            .snap
            .sends
            .get_mut(&from)
            .filter(|s| s.meta.index == index)
        else {
            return;
        };
        if !ok && next == REFUSED {
            self.abandon_send(from);
            tracing::warn!(
                node = self.id,
                peer = from,
                index,
                "the peer refused the snapshot for good (over its size limit)"
            );
            return;
        }
        if !ok {
            // The receiver lost a chunk or could not store it: start over, from the tick
            // (no burst per refusal, and a receiver that never accepts runs into STALL).
            s.next = 0;
            s.acked = 0;
            return;
        }
        s.acked = s.acked.max(next);
        s.progress_at = Instant::now();
        let total = s.reader.as_ref().map_or(u64::MAX, |r| r.body_len);
        if s.acked >= total {
            let s = self.snap.sends.remove(&from).expect("checked");
            tracing::info!(node = self.id, peer = from, index, "snapshot delivered");
            self.transport.send(s.msg);
            self.raft.report_snapshot(from, true);
        } else {
            self.pump(from);
        }
    }

    /// Abandons stalled transfers (the core will send again) and re-pumps the others.
    pub(super) fn snapshot_ticks(&mut self) {
        let stalled: Vec<NodeId> = self
            .snap
            .sends
            .iter()
            .filter(|(_, s)| s.progress_at.elapsed() > STALL)
            .map(|(id, _)| *id)
            .collect();
        for id in stalled {
            tracing::warn!(
                node = self.id,
                peer = id,
                "snapshot transfer stalled; abandoned"
            );
            self.abandon_send(id);
        }
        let ids: Vec<NodeId> = self.snap.sends.keys().copied().collect();
        for id in ids {
            self.pump(id);
        }
    }

    /// Writes the chunks received since the last turn (the driver awaits the file writes).
    pub(super) async fn receive_chunks(&mut self) {
        while let Some((from, f)) = self.snap.chunk_inbox.pop_front() {
            self.receive_chunk(from, f).await;
        }
    }

    async fn receive_chunk(&mut self, from: NodeId, f: ClientFrame) {
        let ClientFrame::SnapChunk {
            index,
            term,
            membership,
            offset,
            total,
            crc,
            data,
        } = f
        else {
            return;
        };
        let ack = |core: &Core, next: u64, ok: bool| {
            core.send_frame(from, ClientFrame::SnapAck { index, next, ok });
        };
        if total > self.snap.snapshot_bytes_max {
            tracing::warn!(
                node = self.id,
                peer = from,
                total = total,
                "refused a snapshot over the size limit"
            );
            return ack(self, REFUSED, false);
        }
        // Already stored here (its final ack was lost or late): say so at once.
        if offset == 0 && self.snap.received == Some((index, term)) {
            return ack(self, total, true);
        }
        if offset == 0 {
            match self
                .snap
                .store
                .begin_body(index, term, membership.len() as u64, total)
                .await
            {
                Ok(writer) => {
                    self.snap.recv = Some(Receiving {
                        from,
                        index,
                        term,
                        membership: membership.clone(),
                        total,
                        crc,
                        writer,
                    });
                }
                Err(e) => {
                    tracing::error!(
                        node = self.id,
                        index,
                        "cannot store a received snapshot: {e}"
                    );
                    return ack(self, 0, false);
                }
            }
        }
        let in_order = self
            .snap
            .recv
            .as_ref()
            .is_some_and(|r| r.from == from && r.index == index && r.writer_offset() == offset);
        if !in_order {
            self.snap.recv = None;
            return ack(self, 0, false);
        }
        let r = self.snap.recv.as_mut().expect("checked");
        if let Err(e) = r.writer.write(&data).await {
            tracing::error!(
                node = self.id,
                index,
                "cannot store a received snapshot: {e}"
            );
            self.snap.recv = None;
            return ack(self, 0, false);
        }
        let next = offset + data.len() as u64;
        if next < r.total {
            return ack(self, next, true);
        }
        let r = self.snap.recv.take().expect("checked");
        let Some(membership) = Membership::decode(&r.membership) else {
            return ack(self, 0, false);
        };
        let (total, term) = (r.total, r.term);
        match r.writer.finish(&self.snap.store, r.crc).await {
            Ok(()) => {
                tracing::info!(
                    node = self.id,
                    index,
                    bytes = total,
                    "snapshot received and stored"
                );
                let _ = membership;
                self.snap.received = Some((index, term));
                ack(self, total, true);
            }
            Err(e) => {
                tracing::warn!(
                    node = self.id,
                    peer = from,
                    index,
                    "received snapshot not stored ({e}); asking again"
                );
                ack(self, 0, false);
            }
        }
    }

    /// Whether a leader's snapshot message may be stepped: its data is stored here.
    pub(super) fn have_snapshot(&self, meta: &SnapshotMeta) -> bool {
        self.snap.received == Some((meta.index, meta.term))
    }

    /// The core installs a received snapshot (a Ready carried it): the shards load it from
    /// the stored file.
    pub(super) async fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), String> {
        if self.snap.received.take() != Some((meta.index, meta.term)) {
            return Err(format!(
                "installing snapshot {} without its data",
                meta.index
            ));
        }
        let snap = self
            .snap
            .store
            .load(meta.index, meta.term)
            .await
            .map_err(|e| format!("snapshot {}: {e}", meta.index))?;
        let data = Bytes::from(snap.data);
        let (book, kv) =
            members::decode_snapshot(&data).map_err(|e| format!("snapshot {}: {e}", meta.index))?;
        let kv_at = data.len() - kv.len();
        let h = ringkv_store::snapshot::header(kv)
            .map_err(|e| format!("snapshot {}: {e}", meta.index))?;
        // Any snapshot of our own being taken now describes the state this one replaces.
        self.void_building();
        let epoch = self.new_store(meta.index, h.revision, &h.leases, h.nospace);
        for (id, addr) in book {
            self.addresses.insert(id, addr);
            if self.raft.membership().is_member(id) {
                self.transport.add_peer(id, addr);
            }
        }
        for s in 0..self.to_shards.len() {
            self.out.push((
                s,
                ToShard::Install {
                    data: data.slice(kv_at..),
                    epoch,
                },
            ));
        }
        self.raft.on_applied(meta.index);
        tracing::info!(
            node = self.id,
            index = meta.index,
            bytes = data.len(),
            "snapshot installed"
        );
        self.set_latest(meta.clone());
        Ok(())
    }

    /// The newest snapshot here (an older one never replaces a newer).
    fn set_latest(&mut self, meta: SnapshotMeta) {
        if self
            .snap
            .latest
            .as_ref()
            .is_some_and(|l| l.index >= meta.index)
        {
            return;
        }
        self.snap.latest = Some(meta);
    }
}

impl Receiving {
    /// Body bytes received so far.
    fn writer_offset(&self) -> u64 {
        self.writer.received()
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    #[test]
    fn a_snapshot_waits_for_its_interval_and_for_the_log_to_grow_by_its_share_of_the_last() {
        // The first one: no size to compare with.
        assert!(snapshot_due(100, 100, 5_000, 0, 100));
        assert!(!snapshot_due(99, 100, 5_000, 0, 100));
        // A 1 MB snapshot: 100 entries are not enough until the log since adds up to 1 MB
        // (100%), or 500 kB at 50%; 0% is the entries rule alone.
        assert!(!snapshot_due(100, 100, 999_999, 1_000_000, 100));
        assert!(snapshot_due(100, 100, 1_000_000, 1_000_000, 100));
        assert!(snapshot_due(100, 100, 500_000, 1_000_000, 50));
        assert!(snapshot_due(100, 100, 0, 1_000_000, 0));
        // Grown enough, but not enough entries; and interval 0 never.
        assert!(!snapshot_due(50, 100, 5_000_000, 1_000_000, 100));
        assert!(!snapshot_due(1_000, 0, 5_000_000, 0, 0));
        // No overflow at the extremes.
        assert!(snapshot_due(100, 100, u64::MAX, u64::MAX, 100));
    }
}
