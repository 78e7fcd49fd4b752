//! A shard executor: its parts, the loops draining its queues, and its part of the
//! key-value state.
//!
//! Runs on its own glommio executor pinned to one CPU of `runtime.cores` (on the raft
//! core's CPU the raft core shares it, in another task queue: long work here must yield,
//! as snapshot encoding and decoding do). Owns `Shard`, the composition of the shard's
//! parts: its client connections (`conn::Conns`), the calls it carries out
//! (`calls::Calls`), its `KvState`, and `Senders`, the sending ends of its queues, which
//! the parts share; `run`, which connects the queues, builds the parts and serves the
//! listener; the loop draining the raft core's queue (applies, snapshot installs and
//! encodings, resets, answers to calls, reads the raft core asks it to serve) and the loops
//! draining the other shards' queues (reads of keys it owns, answers to its forwarded
//! reads); and `KvState`: its `Partition` (the keys whose hash routes here), the
//! partition's applied watermark (published for `/status`) and the readers waiting for it,
//! and the gauges that show them. Only the raft core's queue loop changes the partition.
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

use super::calls::Calls;
use super::conn::{self, Conns};
use super::{CoreAnswer, MeshMsg, ShardQueues, Shared, ToRaft, ToShard};
use crate::config::NodeConfig;
use crate::metrics::ShardMetrics;
use crate::shard::{Partition, Snapshot};
use ringkv_proto::outcome::{Answer, ApiError, Outcome, TimeoutKind};
use ringkv_raft::{Entry, Index};

/// Bytes a snapshot encodes or decodes between checks of glommio's preemption timer.
const SNAPSHOT_STEP_BYTES: usize = 1 << 20;
/// Pairs a replaced partition frees between such checks.
const FREE_STEP_PAIRS: usize = 4096;

/// One shard: its parts, and the loops that drain its queues.
struct Shard {
    idx: usize,
    out: Rc<Senders>,
    kv: Rc<KvState>,
    calls: Rc<Calls>,
    conns: Rc<Conns>,
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
    let conns = Rc::new(Conns::new(idx, n, &cfg, calls.clone(), out.clone()));
    let shard = Rc::new(Shard {
        idx,
        out,
        kv,
        calls,
        conns,
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
    shard.conns.clone().accept(listener).await
}

impl Shard {
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
    /// Readers waiting for the watermark to reach an index, by that index and their
    /// arrival number: the watermark wakes those at or below it; a reader that gives up
    /// (times out, or its future is dropped) takes its own entry out (`Waiting`).
    waiters: RefCell<BTreeMap<(Index, u64), LocalSender<()>>>,
    /// The next waiter's arrival number.
    waiter_seq: Cell<u64>,
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
            waiter_seq: Cell::new(0),
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
        let passed = {
            let mut w = self.waiters.borrow_mut();
            let above = match applied.checked_add(1) {
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

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::time::Duration;

    use futures_lite::future::poll_once;
    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;
    use crate::node::{Clock, LeaseView};

    fn on_executor<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move { f().await })
            .unwrap()
            .join()
            .unwrap();
    }

    /// One shard's key-value state, with no recorder (its gauges are no-ops).
    fn kv_state() -> KvState {
        let shared = Arc::new(Shared {
            clock: Clock::new(0),
            lease: LeaseView::default(),
            watermarks: vec![AtomicU64::new(0)],
            state_bytes: vec![AtomicU64::new(0)],
            stop_requested: Arc::new(AtomicBool::new(false)),
            stopping: AtomicBool::new(false),
        });
        KvState::new(0, 1, shared, Rc::new(ShardMetrics::new(0)))
    }

    fn watermark(kv: &KvState) -> Index {
        kv.shared.watermarks[0].load(Ordering::Acquire)
    }

    #[test]
    fn a_reader_that_gives_up_leaves_no_waiter_behind() {
        on_executor(|| async {
            let kv = kv_state();
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
            let kv = kv_state();
            let later = Instant::now() + Duration::from_secs(60);
            let mut at3 = pin!(kv.wait_applied(3, later));
            let mut at5 = pin!(kv.wait_applied(5, later));
            let mut at5_too = pin!(kv.wait_applied(5, later));
            let mut at9 = pin!(kv.wait_applied(9, later));
            for w in [at3.as_mut(), at5.as_mut(), at5_too.as_mut(), at9.as_mut()] {
                assert_eq!(poll_once(w).await, None);
            }
            assert_eq!(kv.waiting(), 4);
            kv.apply(&[], 5);
            assert_eq!(watermark(&kv), 5);
            assert_eq!(kv.waiting(), 1);
            assert!(at3.await && at5.await && at5_too.await);
            assert_eq!(poll_once(at9.as_mut()).await, None);
            kv.apply(&[], 9);
            assert!(at9.await);
            assert_eq!(kv.waiting(), 0);
            // Already applied: no wait at all.
            assert!(kv.wait_applied(9, Instant::now()).await);
            assert_eq!(kv.waiting(), 0);
        });
    }
}
