//! A shard executor: its parts, the loops draining its queues, and its part of the
//! key-value state.
//!
//! Runs on its own glommio executor pinned to one CPU of `runtime.cores` (on the raft
//! core's CPU the raft core shares it, in another task queue: long work here must yield,
//! as snapshot encoding and decoding do). Owns `Shard`, the composition of the shard's
//! parts: its client connections (`conn::Conns`), the calls it carries out
//! (`calls::Calls`), its `KvState`, and `Senders`, the sending ends of its queues, which
//! the parts share; `run`, which connects the queues, builds the parts and serves the
//! listener; the loop draining the raft core's queue (applies, resolutions and decisions
//! of the sequencer, snapshot installs and encodings, resets, answers to calls, reads the
//! raft core asks it to serve) and the loops draining the other shards' queues (reads of
//! keys it owns, answers to its forwarded reads); and `KvState`: its `ShardStore` (the keys
//! whose hash routes here, their history, its copy of the store-wide state), the
//! watermark (applied and numbered through; published for `/status`) and the readers
//! waiting for it, the ordered outbox of what the store tells the sequencer, and the
//! gauges that show them. Only the raft core's queue loop changes the store.
//! Must not touch Raft state except through its queues and the published `LeaseView`, nor
//! wait, in a loop draining a queue, on a queue back to that queue's sender.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::sync::{Semaphore, StaticPermit};
use glommio::{GlommioError, ResourceType};

use super::calls::Calls;
use super::conn::{self, Conns, Refusals};
use super::{CoreAnswer, MeshMsg, ReadTarget, ShardQueues, Shared, ToRaft, ToShard};
use crate::config::NodeConfig;
use crate::metrics::ShardMetrics;
use crate::shard::{Resolution, Routed, ShardStore, ToSequencer};
use ringkv_proto::outcome::{Answer, ApiError, Outcome, TimeoutKind, UnavailableReason};
use ringkv_raft::Index;
use ringkv_store::parts::Decision;
use ringkv_store::{RangeRequest, snapshot};

/// Bytes a snapshot encodes or decodes between checks of glommio's preemption timer.
const SNAPSHOT_STEP_BYTES: usize = 1 << 20;
/// Keys a snapshot copies (a reference count each) between such checks.
const SNAPSHOT_STEP_KEYS: usize = 65_536;
/// Keys a replaced store frees between such checks.
const FREE_STEP_KEYS: usize = 4096;

/// Reads asked of this shard by other shards (`MeshMsg::Get`) and by the raft core
/// (`ToShard::ServeRead`, reads followers forwarded) that it carries out at once, each in
/// a task of its own; past it such a read is answered at once with `Unavailable {
/// ReadsPending }` (503, retry) instead. 4096, as the raft core's bound on the calls it
/// holds while no leader is known: a healthy shard stays far below it (such a read waits
/// for one round of the raft core, a read index or a commit, 0.1-2 ms on this machine, so
/// 4096 at once would take 2 million such reads per second on one shard, about ten times
/// what a whole node serves here; the benchmarks' 1000 concurrent clients cannot reach
/// it), so only a stuck watermark or raft core under load, or a flood, does. It bounds
/// what these reads hold to 4096 tasks with their keys (`limits.key_bytes_max` each, at
/// most) and the values read while their answers wait for room in a queue.
const READS_SPAWNED_MAX: usize = 4096;

/// One shard: its parts, and the loops that drain its queues.
struct Shard {
    idx: usize,
    out: Rc<Senders>,
    kv: Rc<KvState>,
    calls: Rc<Calls>,
    conns: Rc<Conns>,
    /// One permit per task serving a read asked of this shard by another shard or the raft
    /// core (`READS_SPAWNED_MAX` in all).
    reads_spawned: Rc<Semaphore>,
    /// Such reads refused because no permit was left.
    reads_refused: Refusals,
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

    /// Sends to the raft core without waiting: now if its queue has room, else from a task
    /// of its own (for the loops draining queues, which never wait on a queue back).
    fn to_raft_soon(self: &Rc<Self>, msg: ToRaft) {
        if let Some(msg) = unsent(self.to_raft.try_send(msg)) {
            let out = self.clone();
            glommio::spawn_local(async move {
                let _ = out.to_raft.send(msg).await;
            })
            .detach();
        }
    }

    /// Sends to shard `i` without waiting, like `to_raft_soon`.
    fn to_shard_soon(self: &Rc<Self>, i: usize, msg: MeshMsg) {
        if let Some(msg) = unsent(self.to_shard(i).try_send(msg)) {
            let out = self.clone();
            glommio::spawn_local(async move {
                let _ = out.to_shard(i).send(msg).await;
            })
            .detach();
        }
    }
}

/// The message a `try_send` left because its queue was full (one to a closed queue is
/// dropped, as a `send` to it is: the node is stopping).
fn unsent<T>(r: Result<(), GlommioError<T>>) -> Option<T> {
    match r {
        Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => Some(msg),
        _ => None,
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
    let listener = match conn::reuseport_listener(listen) {
        Ok(l) => l,
        Err(e) => {
            let msg =
                format!("shard {idx}: cannot listen on {listen} (cluster.listen_address): {e}");
            tracing::error!("{msg}");
            eprintln!("ringkv serve: {msg}");
            std::process::exit(1);
        }
    };
    let shard = start(idx, n, &cfg, shared, q, READS_SPAWNED_MAX).await;
    shard.conns.clone().accept(listener).await
}

/// Connects a shard's queues, builds its parts, and starts the loops draining its queues.
async fn start(
    idx: usize,
    n: usize,
    cfg: &NodeConfig,
    shared: Arc<Shared>,
    q: ShardQueues,
    reads_spawned_max: usize,
) -> Rc<Shard> {
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
    let kv = Rc::new(KvState::new(
        idx,
        n,
        shared.clone(),
        out.clone(),
        metrics.clone(),
    ));
    let calls = Rc::new(Calls::new(
        idx,
        n,
        cfg,
        shared,
        out.clone(),
        kv.clone(),
        metrics,
    ));
    glommio::spawn_local(calls.clone().sweep()).detach();
    let conns = Rc::new(Conns::new(idx, n, cfg, calls.clone(), out.clone()));
    let shard = Rc::new(Shard {
        idx,
        out,
        kv,
        calls,
        conns,
        reads_spawned: Rc::new(Semaphore::new(reads_spawned_max as u64)),
        reads_refused: Refusals::default(),
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
    shard
}

impl Shard {
    /// Drains the raft core's queue. Never waits on a queue back to the raft core (what
    /// the store says to the sequencer leaves through `KvState`'s ordered outbox).
    async fn from_raft(self: Rc<Self>, rx: ConnectedReceiver<ToShard>) {
        while let Some(m) = rx.recv().await {
            match m {
                ToShard::Install { data, epoch } => {
                    if let Err(e) = self.kv.install(&data, epoch).await {
                        // The raft core checked the snapshot's checksum: this is a bug.
                        tracing::error!(shard = self.idx, "snapshot does not decode: {e}");
                        std::process::exit(1);
                    }
                }
                ToShard::Snapshot { index } => self.kv.hold_for_snapshot(index),
                ToShard::Reset { epoch } => self.kv.reset(epoch),
                ToShard::Describe => tracing::error!(
                    shard = self.idx,
                    epoch = self.kv.epoch.get(),
                    snapshot_at = ?self.kv.snapshot_at.get(),
                    outbox = self.kv.outbox.borrow().len(),
                    sending = self.kv.sending.get(),
                    "stalled store: {}",
                    self.kv.store.borrow().describe()
                ),
                ToShard::Apply { entries, through } => self.kv.apply(entries, through),
                ToShard::Resolution(r) => self.kv.resolution(&r),
                ToShard::Decision { index, decision } => self.kv.decision(index, decision),
                ToShard::Answer { req, answer } => self.calls.answered(req, answer),
                ToShard::ServeRead {
                    token,
                    target,
                    index,
                    deadline,
                } => {
                    let Some(permit) = self.read_permit() else {
                        let outcome = Err(reads_pending());
                        self.out.to_raft_soon(ToRaft::Served { token, outcome });
                        continue;
                    };
                    let (kv, calls, out) = (self.kv.clone(), self.calls.clone(), self.out.clone());
                    glommio::spawn_local(async move {
                        let outcome = match target {
                            ReadTarget::Key(key) => {
                                if kv.wait_applied(index, deadline).await {
                                    kv.serve_local(&key)
                                } else {
                                    Err(read_timeout())
                                }
                            }
                            ReadTarget::Range(r) => calls.range_at(r, Some(index), deadline).await,
                            ReadTarget::Txn(t) => calls.txn_at(t, Some(index), deadline).await,
                        };
                        let _ = out.to_raft.send(ToRaft::Served { token, outcome }).await;
                        drop(permit);
                    })
                    .detach();
                }
            }
            // A snapshot asked for is taken as soon as the store rests at its index: the
            // loop waits while the keys are copied (nothing is applied meanwhile: the
            // snapshot's write pause on this shard; reads of its keys wait too), then
            // applies on while a task of its own encodes the copy.
            if let Some(index) = self.kv.snapshot_due() {
                let t = Instant::now();
                let (header, mut keys, bytes) = self.kv.snapshot_copy(index).await;
                let took = t.elapsed();
                self.kv.snapshot_taken();
                let (out, shard) = (self.out.clone(), self.idx);
                glommio::spawn_local(async move {
                    let mut pairs = Vec::with_capacity(bytes);
                    // The raft core may share this executor: a large state is encoded in
                    // steps, yielding when glommio's preemption timer says so.
                    while !keys.encode(&mut pairs, SNAPSHOT_STEP_BYTES) {
                        glommio::yield_if_needed().await;
                    }
                    out.to_raft_soon(ToRaft::SnapshotPart {
                        shard,
                        index,
                        header,
                        pairs,
                        count: keys.count,
                        took,
                    });
                })
                .detach();
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
                    let Some(permit) = self.read_permit() else {
                        let outcome = Err(reads_pending());
                        self.out
                            .to_shard_soon(from, MeshMsg::GetReply { req, outcome });
                        continue;
                    };
                    let (calls, out) = (self.calls.clone(), self.out.clone());
                    glommio::spawn_local(async move {
                        let outcome = calls.read(key, policy, deadline).await;
                        let _ = out
                            .to_shard(from)
                            .send(MeshMsg::GetReply { req, outcome })
                            .await;
                        drop(permit);
                    })
                    .detach();
                }
                MeshMsg::GetReply { req, outcome } => {
                    self.calls.answered(req, CoreAnswer::Done(outcome))
                }
                MeshMsg::RangePart {
                    from,
                    req,
                    range,
                    revision,
                    index,
                    deadline,
                } => self.serve_part(
                    from,
                    index,
                    deadline,
                    move |kv| kv.read_part(&range, revision),
                    move |part| MeshMsg::RangePartReply { req, part },
                ),
                MeshMsg::RangePartReply { req, part } => {
                    self.calls.answered(req, CoreAnswer::Part(part))
                }
                MeshMsg::LeaseKeys { from, req, lease } => {
                    let keys = self.kv.lease_keys(lease);
                    self.out
                        .to_shard_soon(from, MeshMsg::LeaseKeysReply { req, keys });
                }
                MeshMsg::LeaseKeysReply { req, keys } => {
                    self.calls.answered(req, CoreAnswer::Keys(keys))
                }
                MeshMsg::Hash {
                    from,
                    req,
                    revision,
                    index,
                    deadline,
                } => self.serve_part(
                    from,
                    index,
                    deadline,
                    move |kv| Ok(kv.hash(revision)),
                    move |hash| MeshMsg::HashReply { req, hash },
                ),
                MeshMsg::HashReply { req, hash } => {
                    self.calls.answered(req, CoreAnswer::Hash(hash))
                }
                MeshMsg::TxnPartial {
                    from,
                    req,
                    txn,
                    revision,
                    index,
                    deadline,
                } => self.serve_part(
                    from,
                    index,
                    deadline,
                    move |kv| Ok(kv.txn_partial(&txn, revision)),
                    move |partial| MeshMsg::TxnPartialReply { req, partial },
                ),
                MeshMsg::TxnPartialReply { req, partial } => {
                    self.calls.answered(req, CoreAnswer::Partial(partial))
                }
                MeshMsg::TxnPart {
                    from,
                    req,
                    txn,
                    decision,
                    revision,
                    index,
                    deadline,
                } => self.serve_part(
                    from,
                    index,
                    deadline,
                    move |kv| Ok(kv.txn_part(&txn, &decision, revision)),
                    move |part| MeshMsg::TxnPartReply { req, part },
                ),
                MeshMsg::TxnPartReply { req, part } => {
                    self.calls.answered(req, CoreAnswer::TxnPart(part))
                }
            }
        }
    }

    /// Serves a part of a read another shard gathers (a range's, a hash's, a read-only
    /// txn's): in a task of its own (one of `READS_SPAWNED_MAX`; past them, answered
    /// "reads pending" at once) that waits for this shard's watermark to reach `index`,
    /// computes it (or times out) and sends `reply` of it to shard `from`.
    fn serve_part<T: 'static>(
        &self,
        from: usize,
        index: Index,
        deadline: Instant,
        compute: impl FnOnce(&KvState) -> Result<T, ApiError> + 'static,
        reply: impl FnOnce(Result<T, ApiError>) -> MeshMsg + 'static,
    ) {
        let Some(permit) = self.read_permit() else {
            self.out.to_shard_soon(from, reply(Err(reads_pending())));
            return;
        };
        let (kv, out) = (self.kv.clone(), self.out.clone());
        glommio::spawn_local(async move {
            let part = if kv.wait_applied(index, deadline).await {
                compute(&kv)
            } else {
                Err(read_timeout())
            };
            let _ = out.to_shard(from).send(reply(part)).await;
            drop(permit);
        })
        .detach();
    }

    /// A permit for a task serving a read asked of this shard, or `None` (counted, and
    /// warned about at most every 10 s) when `READS_SPAWNED_MAX` of them are running.
    fn read_permit(&self) -> Option<StaticPermit> {
        match self.reads_spawned.try_acquire_static_permit(1) {
            Ok(p) => Some(p),
            Err(_) => {
                if let Some(refused) = self.reads_refused.count() {
                    tracing::warn!(
                        shard = self.idx,
                        refused,
                        "{READS_SPAWNED_MAX} reads asked by other shards and the raft core \
                         are pending on this shard: answering new ones 503 (reads pending)"
                    );
                }
                None
            }
        }
    }
}

/// This shard's part of the key-value state: its `ShardStore`, the index through which
/// it is applied and numbered (its watermark, published for `/status`), the readers
/// waiting for it, and the ordered outbox of what the store tells the sequencer. Only the
/// raft core's queue loop (`Shard::from_raft`) changes the store; calls read from it.
pub(super) struct KvState {
    idx: usize,
    n: usize,
    shared: Arc<Shared>,
    out: Rc<Senders>,
    store: RefCell<ShardStore>,
    /// The store's epoch (set by the raft core with each install or reset): the sequencer
    /// drops what an older store said.
    epoch: Cell<u64>,
    /// What the store said and the raft core has not been sent yet, in order, with the
    /// epoch it was said in. Consecutive reports are merged, so it holds at most one
    /// report and the partials of the multi-shard txns applied meanwhile.
    outbox: RefCell<Vec<(u64, ToSequencer)>>,
    /// A task is sending the outbox.
    sending: Cell<bool>,
    /// A snapshot asked for at this index and not taken yet.
    snapshot_at: Cell<Option<Index>>,
    /// Readers waiting for the watermark to reach an index, by that index and their
    /// arrival number: the watermark wakes those at or below it; a reader that gives up
    /// (times out, or its future is dropped) takes its own entry out (`Waiting`).
    waiters: RefCell<BTreeMap<(Index, u64), LocalSender<()>>>,
    /// The next waiter's arrival number.
    waiter_seq: Cell<u64>,
    metrics: Rc<ShardMetrics>,
}

impl KvState {
    fn new(
        idx: usize,
        n: usize,
        shared: Arc<Shared>,
        out: Rc<Senders>,
        metrics: Rc<ShardMetrics>,
    ) -> KvState {
        KvState {
            idx,
            n,
            shared,
            out,
            store: RefCell::new(ShardStore::new(idx, n)),
            epoch: Cell::new(0),
            outbox: RefCell::default(),
            sending: Cell::new(false),
            snapshot_at: Cell::new(None),
            waiters: RefCell::default(),
            waiter_seq: Cell::new(0),
            metrics,
        }
    }

    /// The value of `key`, a key this shard owns, at the last numbered revision.
    pub(super) fn serve_local(&self, key: &[u8]) -> Outcome {
        let store = self.store.borrow();
        let req = RangeRequest {
            key: bytes::Bytes::copy_from_slice(key),
            ..Default::default()
        };
        let part = store
            .read(&req, store.read_revision())
            .expect("the current revision is never compacted");
        match part.kvs.into_iter().next() {
            Some(kv) => Ok(Answer::Value {
                key: key.to_vec(),
                value: kv.value.to_vec(),
                revision: kv.mod_revision as u64,
            }),
            None => Err(ApiError::NotFound { key: key.to_vec() }),
        }
    }

    /// Where reads are served now: (the watermark, the store revision there, the
    /// compaction revision).
    pub(super) fn read_point(&self) -> (Index, ringkv_store::Revision, ringkv_store::Revision) {
        let s = self.store.borrow();
        let (i, r) = s.resolved();
        (i, r, s.compact_revision())
    }

    /// This shard's part of a range at `revision` (at or below its last numbered one).
    pub(super) fn read_part(
        &self,
        r: &RangeRequest,
        revision: ringkv_store::Revision,
    ) -> Result<ringkv_store::parts::RangePart, ApiError> {
        self.store
            .borrow()
            .read(r, revision)
            .map_err(|e| crate::shard::api_error(&e))
    }

    /// This shard's partial of read-only txn `t` at `revision` (numbered here).
    pub(super) fn txn_partial(
        &self,
        t: &ringkv_store::TxnRequest,
        revision: ringkv_store::Revision,
    ) -> ringkv_store::parts::Partial {
        self.store.borrow().read_partial(t, revision)
    }

    /// This shard's part of read-only txn `t`'s answer at `revision` on the path `d`.
    pub(super) fn txn_part(
        &self,
        t: &ringkv_store::TxnRequest,
        d: &ringkv_store::parts::Decision,
        revision: ringkv_store::Revision,
    ) -> ringkv_store::parts::TxnPart {
        self.store.borrow().read_txn(t, d, revision)
    }

    /// This shard's part of the store hash at `revision` (at or below its last numbered
    /// one).
    pub(super) fn hash(&self, revision: ringkv_store::Revision) -> u64 {
        self.store.borrow().hash(revision)
    }

    /// This shard's keys attached to `lease`.
    pub(super) fn lease_keys(&self, lease: i64) -> Vec<Vec<u8>> {
        self.store
            .borrow()
            .lease_keys(lease)
            .into_iter()
            .map(|k| k.to_vec())
            .collect()
    }

    /// The watermark: every entry through it is applied here and numbered.
    fn watermark(&self) -> Index {
        self.store.borrow().resolved().0
    }

    /// Waits until this shard has applied and numbered every entry through `index`; false
    /// at the deadline.
    pub(super) async fn wait_applied(&self, index: Index, deadline: Instant) -> bool {
        if self.watermark() >= index {
            return true;
        }
        let (tx, rx) = local_channel::new_bounded(1);
        let key = (index, self.waiter_seq.get());
        self.waiter_seq.set(key.1 + 1);
        self.waiters.borrow_mut().insert(key, tx);
        self.gauge_waiters();
        // However the wait ends (woken, timed out, or dropped), its entry goes with it.
        let _waiting = Waiting { kv: self, key };
        let wait = deadline.saturating_duration_since(Instant::now());
        futures_lite::future::or(async { rx.recv().await.is_some() }, async {
            glommio::timer::sleep(wait).await;
            false
        })
        .await
    }

    /// Committed entries that involve this shard, and the watermark of the others.
    fn apply(self: &Rc<Self>, entries: Vec<Routed>, through: Index) {
        {
            let mut store = self.store.borrow_mut();
            for e in entries {
                store.push(e);
            }
            store.push_through(through);
        }
        self.pump();
    }

    fn resolution(self: &Rc<Self>, r: &Resolution) {
        self.store.borrow_mut().resolution(r);
        self.pump();
    }

    fn decision(self: &Rc<Self>, index: Index, d: Arc<Decision>) {
        self.store.borrow_mut().decision(index, d);
        self.pump();
    }

    /// Applies what the store can and sends what it says to the sequencer, in order.
    fn pump(self: &Rc<Self>) {
        let said = self.store.borrow_mut().pump();
        if !said.is_empty() {
            let epoch = self.epoch.get();
            let mut ob = self.outbox.borrow_mut();
            for m in said {
                match (ob.last_mut(), m) {
                    (Some((e, ToSequencer::Report(last))), ToSequencer::Report(r))
                        if *e == epoch =>
                    {
                        merge_report(last, r)
                    }
                    (_, m) => ob.push((epoch, m)),
                }
            }
            drop(ob);
            self.send_outbox();
        }
        self.advanced();
    }

    /// Starts the one task that sends the outbox, unless it runs: one sender keeps the
    /// order, and the queue loops never wait on the raft core's queue.
    fn send_outbox(self: &Rc<Self>) {
        if self.sending.replace(true) {
            return;
        }
        let kv = self.clone();
        glommio::spawn_local(async move {
            loop {
                let batch = std::mem::take(&mut *kv.outbox.borrow_mut());
                if batch.is_empty() {
                    break;
                }
                let mut msgs: Vec<ToSequencer> = Vec::new();
                let mut epoch = batch[0].0;
                for (e, m) in batch {
                    if e != epoch && !msgs.is_empty() {
                        let out = std::mem::take(&mut msgs);
                        if kv
                            .out
                            .to_raft
                            .send(ToRaft::Store { epoch, out })
                            .await
                            .is_err()
                        {
                            return; // the node is stopping
                        }
                    }
                    epoch = e;
                    msgs.push(m);
                }
                if kv
                    .out
                    .to_raft
                    .send(ToRaft::Store { epoch, out: msgs })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            kv.sending.set(false);
        })
        .detach();
    }

    /// Replaces the store with this shard's part of a snapshot body.
    async fn install(&self, data: &[u8], epoch: u64) -> Result<(), String> {
        let s = decode_in_steps(data, self.idx, self.n).await?;
        self.replace(s, epoch);
        Ok(())
    }

    /// Empties the store (watermark 0).
    fn reset(&self, epoch: u64) {
        self.replace(ShardStore::new(self.idx, self.n), epoch);
    }

    fn replace(&self, s: ShardStore, epoch: u64) {
        let old = std::mem::replace(&mut *self.store.borrow_mut(), s);
        self.epoch.set(epoch);
        self.outbox.borrow_mut().retain(|m| m.0 == epoch);
        self.snapshot_at.set(None);
        free_in_steps(old);
        self.advanced();
    }

    /// A snapshot at `index`: apply nothing past it until it is taken.
    fn hold_for_snapshot(&self, index: Index) {
        self.store.borrow_mut().hold_after(index);
        self.snapshot_at.set(Some(index));
    }

    /// The index of a snapshot that can be taken now.
    fn snapshot_due(&self) -> Option<Index> {
        let i = self.snapshot_at.get()?;
        self.store.borrow().at_rest(i).then_some(i)
    }

    fn snapshot_taken(self: &Rc<Self>) {
        self.snapshot_at.set(None);
        self.store.borrow_mut().release();
        self.pump();
    }

    /// The store-wide header and a copy of this shard's keys as of `index` (to encode
    /// while the store applies on), and about how many bytes they hold.
    // Copying holds the store's borrow across yields; only the raft core's queue loop
    // takes it mutably, and that loop is waiting here (see `Shard::from_raft`).
    #[allow(clippy::await_holding_refcell_ref)]
    async fn snapshot_copy(&self, index: Index) -> (Vec<u8>, snapshot::KeyEncoder, usize) {
        let s = self.store.borrow();
        assert!(s.at_rest(index), "snapshot between applies");
        let header = snapshot::header_bytes(&s.header());
        let bytes = s.keys().bytes() as usize;
        let mut c = snapshot::KeyCopier::new(&s);
        // The raft core may share this executor: a large state is copied in steps.
        while !c.copy(SNAPSHOT_STEP_KEYS) {
            glommio::yield_if_needed().await;
        }
        (header, c.finish(), bytes)
    }

    /// The store changed: publish its watermark and size, wake the readers it passed.
    fn advanced(&self) {
        let (watermark, bytes, keys) = {
            let s = self.store.borrow();
            (s.resolved().0, s.state_bytes(), s.keys().live())
        };
        self.metrics.applied_index.set(watermark as f64);
        self.metrics.state_bytes.set(bytes as f64);
        self.metrics.keys.set(keys as f64);
        self.shared.state_bytes[self.idx].store(bytes, Ordering::Relaxed);
        self.shared.watermarks[self.idx].store(watermark, Ordering::Release);
        let passed = {
            let mut w = self.waiters.borrow_mut();
            let above = match watermark.checked_add(1) {
                Some(next) => w.split_off(&(next, 0)),
                None => BTreeMap::new(),
            };
            std::mem::replace(&mut *w, above)
        };
        for tx in passed.values() {
            let _ = tx.try_send(());
        }
        self.gauge_waiters();
    }

    /// Readers waiting for the watermark.
    fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    fn gauge_waiters(&self) {
        self.metrics.read_waiters.set(self.waiting() as f64);
    }
}

/// Folds report `r` into the earlier, unsent `last` (the later facts extend the earlier).
fn merge_report(last: &mut ringkv_store::Report, r: ringkv_store::Report) {
    debug_assert_eq!(last.shard, r.shard);
    last.through = r.through;
    last.changes.extend(r.changes);
    last.parts.extend(r.parts);
    last.events.extend(r.events);
    // The merged parts were computed under the earlier, smaller resolution point.
    last.state_bytes = r.state_bytes;
}

/// A reader's entry among the waiters, taken out when the reader stops waiting (the
/// watermark took it out already if it was woken).
struct Waiting<'a> {
    kv: &'a KvState,
    key: (Index, u64),
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let gone = self.kv.waiters.borrow_mut().remove(&self.key).is_some();
        if gone {
            self.kv.gauge_waiters();
        }
    }
}

pub(super) fn read_timeout() -> ApiError {
    ApiError::Timeout {
        what: TimeoutKind::Read,
    }
}

fn reads_pending() -> ApiError {
    ApiError::Unavailable {
        reason: UnavailableReason::ReadsPending,
    }
}

/// Decodes this shard's store from a snapshot body in steps, like encoding: the raft core
/// may share this executor.
async fn decode_in_steps(data: &[u8], shard: usize, shards: usize) -> Result<ShardStore, String> {
    let mut d = snapshot::Decoder::new(data, shard, shards)?;
    while !d.step(SNAPSHOT_STEP_BYTES)? {
        glommio::yield_if_needed().await;
    }
    d.finish()
}

/// Frees a replaced store a few thousand keys at a time in a task of its own, so a large
/// state does not hold the executor (and a raft core sharing it) while it goes.
fn free_in_steps(old: ShardStore) {
    glommio::spawn_local(async move {
        let mut keys = old.into_keys();
        while keys.by_ref().take(FREE_STEP_KEYS).count() == FREE_STEP_KEYS {
            glommio::yield_if_needed().await;
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::time::Duration;

    use bytes::Bytes;
    use futures_lite::future::poll_once;
    use glommio::{LocalExecutorBuilder, Placement};
    use ringkv_raft::ReadPolicy;

    use super::*;
    use crate::node::{Clock, LeaseView, ReqId, queues};

    fn on_executor<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move { f().await })
            .unwrap()
            .join()
            .unwrap();
    }

    /// Fails the test if `f` takes more than 10 s.
    async fn within<T>(f: impl Future<Output = T>) -> T {
        futures_lite::future::or(f, async {
            glommio::timer::sleep(Duration::from_secs(10)).await;
            panic!("still waiting after 10 s");
        })
        .await
    }

    fn shared(n: usize) -> Arc<Shared> {
        Arc::new(Shared {
            clock: Clock::new(0),
            lease: LeaseView::default(),
            leader: AtomicU64::new(0),
            watermarks: (0..n).map(|_| AtomicU64::new(0)).collect(),
            state_bytes: (0..n).map(|_| AtomicU64::new(0)).collect(),
            stop_requested: Arc::new(AtomicBool::new(false)),
            stopping: AtomicBool::new(false),
        })
    }

    /// One shard's key-value state, with no recorder (its gauges are no-ops), and the
    /// raft core's end of its queue (what its store says arrives there).
    async fn kv_state() -> (Rc<KvState>, ConnectedReceiver<ToRaft>) {
        let (mut core, mut shards) = queues(1);
        let q = shards.pop().unwrap();
        let from_shard = glommio::spawn_local(core.from_shards.remove(0).connect());
        let to_raft = q.to_raft.connect().await;
        let out = Rc::new(Senders {
            to_raft,
            mesh_out: vec![None],
        });
        let kv = KvState::new(0, 1, shared(1), out, Rc::new(ShardMetrics::new(0)));
        (Rc::new(kv), from_shard.await)
    }

    /// The entries through `index` applied and numbered (none changed anything).
    fn applied_through(kv: &Rc<KvState>, index: Index) {
        kv.apply(Vec::new(), index);
        kv.resolution(&Resolution {
            through: index,
            revision: 1,
            changes: Vec::new(),
        });
    }

    fn watermark(kv: &KvState) -> Index {
        kv.shared.watermarks[0].load(Ordering::Acquire)
    }

    #[test]
    fn a_reader_that_gives_up_leaves_no_waiter_behind() {
        on_executor(|| async {
            let (kv, _core) = kv_state().await;
            let soon = Instant::now() + Duration::from_millis(20);
            assert!(
                !kv.wait_applied(5, soon).await,
                "nothing applied: timed out"
            );
            assert_eq!(kv.waiting(), 0);
            assert_eq!(watermark(&kv), 0, "the watermark has not moved");
            // A wait whose future is dropped (its connection went away) is gone as well.
            {
                let mut w = pin!(kv.wait_applied(7, Instant::now() + Duration::from_secs(60)));
                assert_eq!(poll_once(w.as_mut()).await, None);
                assert_eq!(kv.waiting(), 1);
            }
            assert_eq!(kv.waiting(), 0);
            assert_eq!(watermark(&kv), 0);
        });
    }

    #[test]
    fn the_watermark_wakes_the_readers_it_reaches_and_keeps_the_others() {
        on_executor(|| async {
            let (kv, _core) = kv_state().await;
            let later = Instant::now() + Duration::from_secs(60);
            let mut at3 = pin!(kv.wait_applied(3, later));
            let mut at5 = pin!(kv.wait_applied(5, later));
            let mut at5_too = pin!(kv.wait_applied(5, later));
            let mut at9 = pin!(kv.wait_applied(9, later));
            for w in [at3.as_mut(), at5.as_mut(), at5_too.as_mut(), at9.as_mut()] {
                assert_eq!(poll_once(w).await, None);
            }
            assert_eq!(kv.waiting(), 4);
            kv.apply(Vec::new(), 5);
            assert_eq!(
                watermark(&kv),
                0,
                "applied, not numbered yet: no reader wakes"
            );
            assert_eq!(kv.waiting(), 4);
            applied_through(&kv, 5);
            assert_eq!(watermark(&kv), 5);
            assert_eq!(kv.waiting(), 1);
            assert!(at3.await && at5.await && at5_too.await);
            assert_eq!(poll_once(at9.as_mut()).await, None);
            applied_through(&kv, 9);
            assert!(at9.await);
            assert_eq!(kv.waiting(), 0);
            // Already applied: no wait at all.
            assert!(kv.wait_applied(9, Instant::now()).await);
            assert_eq!(kv.waiting(), 0);
        });
    }

    const CONFIG: &str = r#"
[cluster]
node_id = 1
listen_address = "127.0.0.1:1"
initial_cluster = [{ id = 1, address = "127.0.0.1:1", role = 1, status = 2 }]
"#;

    fn get(req: ReqId) -> MeshMsg {
        MeshMsg::Get {
            from: 1,
            req,
            key: Bytes::from_static(b"k"),
            // Each waits for a read index from the raft core (the test), holding its task.
            policy: ReadPolicy::Linearizable,
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    fn is_reads_pending(o: &Outcome) -> bool {
        matches!(
            o,
            Err(ApiError::Unavailable {
                reason: UnavailableReason::ReadsPending
            })
        )
    }

    /// Shard 0 of two, with room for two tasks serving reads asked of it; the test plays
    /// the raft core and shard 1.
    #[test]
    fn reads_asked_past_the_limit_are_answered_reads_pending_at_once() {
        on_executor(|| async {
            let cfg = NodeConfig::parse(CONFIG, "test.toml").unwrap();
            let (mut core, mut shards) = queues(2);
            let mut other = shards.pop().unwrap();
            let mine = shards.pop().unwrap();
            // Both ends of a queue connect at once.
            let from_shard = glommio::spawn_local(core.from_shards.remove(0).connect());
            let to_shard = glommio::spawn_local(core.to_shards.remove(0).connect());
            let mesh_to = glommio::spawn_local(other.mesh_out[0].take().unwrap().connect());
            let mesh_from = glommio::spawn_local(other.mesh_in.remove(0).connect());
            let shard = start(0, 2, &cfg, shared(2), mine, 2).await;
            let (from_shard, to_shard) = (from_shard.await, to_shard.await);
            let (mesh_to, mesh_from) = (mesh_to.await, mesh_from.await);

            // Two reads from shard 1 take the two tasks (each asks the raft core for a read
            // index); the third is answered at once.
            for req in 1..=3 {
                assert!(mesh_to.send(get(req)).await.is_ok());
            }
            match within(mesh_from.recv()).await {
                Some(MeshMsg::GetReply { req: 3, outcome }) => {
                    assert!(is_reads_pending(&outcome), "{outcome:?}")
                }
                _ => panic!("not the third read's answer"),
            }
            // So is a read the raft core asks for (a follower's, forwarded).
            let serve = ToShard::ServeRead {
                token: 7,
                target: ReadTarget::Key(Bytes::from_static(b"k")),
                index: 1,
                deadline: Instant::now() + Duration::from_secs(60),
            };
            assert!(to_shard.send(serve).await.is_ok());
            let mut read_index_asked = Vec::new();
            loop {
                match within(from_shard.recv()).await {
                    Some(ToRaft::Read { req, .. }) => read_index_asked.push(req),
                    Some(ToRaft::Served { token: 7, outcome }) => {
                        assert!(is_reads_pending(&outcome), "{outcome:?}");
                        break;
                    }
                    _ => panic!("unexpected message to the raft core"),
                }
            }
            while read_index_asked.len() < 2 {
                match within(from_shard.recv()).await {
                    Some(ToRaft::Read { req, .. }) => read_index_asked.push(req),
                    _ => panic!("unexpected message to the raft core"),
                }
            }
            assert_eq!(shard.reads_spawned.available(), 0);

            // One read is answered: its task ends and gives its place to the next read.
            let answer = ToShard::Answer {
                req: read_index_asked[0],
                answer: CoreAnswer::Done(Err(ApiError::NotFound { key: b"k".to_vec() })),
            };
            assert!(to_shard.send(answer).await.is_ok());
            match within(mesh_from.recv()).await {
                Some(MeshMsg::GetReply { req: 1, outcome }) => {
                    assert!(
                        matches!(outcome, Err(ApiError::NotFound { .. })),
                        "{outcome:?}"
                    )
                }
                _ => panic!("not the first read's answer"),
            }
            assert!(mesh_to.send(get(4)).await.is_ok());
            match within(from_shard.recv()).await {
                Some(ToRaft::Read { .. }) => {}
                _ => panic!("the fourth read was not carried out"),
            }
            assert_eq!(shard.reads_spawned.available(), 0);
        });
    }
}
