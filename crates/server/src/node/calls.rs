//! Carrying out a shard's calls: a parsed `ApiCall` in, its typed `Outcome` out.
//!
//! Owns `Calls` (the request span and per-operation metrics around each call, the routing
//! of writes, reads by consistency policy, status and operator calls to the raft core, and
//! of reads of keys another shard owns to that shard over the mesh) and `Pending`, the
//! registry of calls waiting for an answer from the raft core or another shard. Protocols
//! (`conn`) hand calls in and render outcomes at their edge; the key-value state
//! (`shard::KvState`) serves the reads of keys this shard owns.
//!
//! Runs on its shard's executor (which the raft core may share, in another task queue):
//! nothing here runs long without waiting. Must not touch Raft state except through the
//! shard's queues and the published `LeaseView`; must not change the key-value state
//! (only the raft core's queue loop does, in `shard`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::ConnectedSender;

use super::shard::{KvState, Senders, read_timeout};
use super::{AdminCall, CoreAnswer, MeshMsg, ReqId, Shared, ToRaft};
use crate::config::NodeConfig;
use crate::metrics::{Op, ShardMetrics};
use crate::net::http::{AdminOp, ApiCall};
use crate::shard::{Command, route};
use ringkv_proto::outcome::{ApiError, Outcome, TimeoutKind, http_status};
use ringkv_raft::{Index, ReadPolicy};
use ringkv_store::{DeleteRangeRequest, PutRequest};

/// Extra time a shard waits past a request's deadline for the raft core's own, more
/// precise, timeout answer.
const ANSWER_GRACE: Duration = Duration::from_millis(200);

/// One shard's calls: what carrying them out needs, and those waiting for an answer.
pub(super) struct Calls {
    idx: usize,
    n: usize,
    shared: Arc<Shared>,
    out: Rc<Senders>,
    /// Reads of keys this shard owns are served from here.
    kv: Rc<KvState>,
    pending: Pending,
    /// Numbers the calls this shard carries out (the `request` span's id at debug level).
    next_request: Cell<u64>,
    default_policy: ReadPolicy,
    request_timeout: Duration,
    /// Operator calls must carry it when it is set.
    cluster_token: String,
    metrics: Rc<ShardMetrics>,
}

impl Calls {
    pub(super) fn new(
        idx: usize,
        n: usize,
        cfg: &NodeConfig,
        shared: Arc<Shared>,
        out: Rc<Senders>,
        kv: Rc<KvState>,
        metrics: Rc<ShardMetrics>,
    ) -> Calls {
        Calls {
            idx,
            n,
            shared,
            out,
            kv,
            pending: Pending::new(),
            next_request: Cell::new(1),
            default_policy: cfg.default_read_policy(),
            request_timeout: Duration::from_millis(cfg.raft.request_timeout_ms),
            cluster_token: cfg.cluster.cluster_token.clone(),
            metrics,
        }
    }

    /// The answer to a call of this shard came (from the raft core or another shard).
    pub(super) fn answered(&self, req: ReqId, answer: CoreAnswer) {
        self.pending.deliver(req, answer);
    }

    /// Carries out one well-formed call, counted by operation and outcome (malformed
    /// requests were answered by the parser and are not counted here).
    pub(super) async fn handle(&self, call: ApiCall) -> Outcome {
        let op = match &call {
            ApiCall::Put { .. } => Some(Op::Put),
            ApiCall::Get { .. } => Some(Op::Get),
            ApiCall::Delete { .. } => Some(Op::Delete),
            ApiCall::Status | ApiCall::Admin { .. } | ApiCall::Compact { .. } => None,
        };
        let t = Instant::now();
        self.metrics.in_flight.increment(1.0);
        // At debug level every call gets a span with an id (shard.number), so its lines
        // (forwarding, waits, the answer) can be told apart; when debug is off this is a
        // level check and nothing else.
        let id = self.next_request.get();
        self.next_request.set(id + 1);
        let span = tracing::debug_span!("request", shard = self.idx, id, op = call.name());
        let r = tracing::Instrument::instrument(
            async {
                tracing::debug!("carrying out");
                let r = self.carry_out(call).await;
                tracing::debug!(status = http_status(&r), "answered");
                r
            },
            span,
        )
        .await;
        self.metrics.in_flight.decrement(1.0);
        if let Some(op) = op {
            self.metrics
                .request(op, http_status(&r), t.elapsed().as_secs_f64());
        }
        r
    }

    async fn carry_out(&self, call: ApiCall) -> Outcome {
        // The signal itself counts: the raft core may be busy (e.g. in WAL I/O) when it
        // comes.
        if self.shared.stopping.load(Ordering::Acquire)
            || self.shared.stop_requested.load(Ordering::Relaxed)
        {
            return Err(ApiError::Stopping);
        }
        let deadline = Instant::now() + self.request_timeout;
        match call {
            ApiCall::Put { key, value } => {
                let cmd = Command::Put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                });
                self.write(cmd.encode(), deadline).await
            }
            ApiCall::Delete { key } => {
                let cmd = Command::DeleteRange(DeleteRangeRequest {
                    key,
                    ..Default::default()
                });
                self.write(cmd.encode(), deadline).await
            }
            ApiCall::Compact { revision, physical } => {
                let cmd = Command::Compact { revision, physical };
                self.write(cmd.encode(), deadline).await
            }
            ApiCall::Get { key, consistency } => {
                let policy = consistency.unwrap_or(self.default_policy);
                let owner = route(&key, self.n);
                if owner == self.idx {
                    return self.read(key, policy, deadline).await;
                }
                let get = |req| MeshMsg::Get {
                    from: self.idx,
                    req,
                    key,
                    policy,
                    deadline,
                };
                match self.ask(self.out.to_shard(owner), get, deadline).await? {
                    Some(CoreAnswer::Done(r)) => r,
                    _ => Err(read_timeout()),
                }
            }
            ApiCall::Admin { op, token } => {
                if !self.cluster_token.is_empty()
                    && token.as_deref() != Some(self.cluster_token.as_str())
                {
                    return Err(ApiError::Unauthorized);
                }
                let call = match op {
                    AdminOp::Join { node_id, address } => match address.parse() {
                        Ok(address) => AdminCall::Join { node_id, address },
                        Err(e) => {
                            return Err(ApiError::bad_request(format!("address: {e}")));
                        }
                    },
                    AdminOp::Promote { node_id } => AdminCall::Promote { node_id },
                    AdminOp::Remove { node_id } => AdminCall::Remove { node_id },
                    AdminOp::TransferLeader { node_id } => AdminCall::TransferLeader { node_id },
                    AdminOp::Snapshot => AdminCall::Snapshot,
                };
                let admin = |req| ToRaft::Admin {
                    shard: self.idx,
                    req,
                    call,
                    deadline,
                };
                match self.ask(&self.out.to_raft, admin, deadline).await? {
                    Some(CoreAnswer::Done(r)) => r,
                    _ => Err(ApiError::Timeout {
                        what: TimeoutKind::Call,
                    }),
                }
            }
            ApiCall::Status => {
                let status = |req| ToRaft::Status {
                    shard: self.idx,
                    req,
                };
                match self.ask(&self.out.to_raft, status, deadline).await? {
                    Some(CoreAnswer::Done(r)) => r,
                    _ => Err(ApiError::Timeout {
                        what: TimeoutKind::Status,
                    }),
                }
            }
        }
    }

    async fn write(&self, command: Bytes, deadline: Instant) -> Outcome {
        let write = |req| ToRaft::Write {
            shard: self.idx,
            req,
            command,
            deadline,
        };
        match self.ask(&self.out.to_raft, write, deadline).await? {
            Some(CoreAnswer::Done(r)) => r,
            _ => Err(ApiError::Timeout {
                what: TimeoutKind::Write,
            }),
        }
    }

    /// Sends `make(req)` (a fresh request id) to `to` and waits for its answer until
    /// `deadline` plus grace: `Ok(None)` when none came in time; `Stopping` when the
    /// queue is closed (nothing was sent).
    async fn ask<T: Send + Sized>(
        &self,
        to: &ConnectedSender<T>,
        make: impl FnOnce(ReqId) -> T,
        deadline: Instant,
    ) -> Result<Option<CoreAnswer>, ApiError> {
        let (req, rx) = self.pending.register();
        if to.send(make(req)).await.is_err() {
            self.pending.forget(req);
            return Err(ApiError::Stopping);
        }
        Ok(self.pending.answer(req, rx, deadline).await)
    }

    /// A read of a key this shard owns (a client's, or one another shard forwarded).
    pub(super) async fn read(&self, key: Bytes, policy: ReadPolicy, deadline: Instant) -> Outcome {
        let at: Option<Index> = match policy {
            ReadPolicy::Eventual => None,
            ReadPolicy::Lease
                if let Some(c) = self.shared.lease.valid_commit(self.shared.now_ns()) =>
            {
                self.metrics.lease_reads.increment(1);
                Some(c)
            }
            ReadPolicy::Lease | ReadPolicy::Linearizable => {
                let read = |req| ToRaft::Read {
                    shard: self.idx,
                    req,
                    key: key.clone(),
                    policy,
                    deadline,
                };
                match self.ask(&self.out.to_raft, read, deadline).await? {
                    Some(CoreAnswer::ReadAt(i)) => Some(i),
                    Some(CoreAnswer::Done(r)) => return r,
                    None => return Err(read_timeout()),
                }
            }
        };
        if let Some(i) = at
            && !self.kv.wait_applied(i, deadline).await
        {
            return Err(read_timeout());
        }
        self.kv.serve_local(&key)
    }
}

/// Calls of one shard waiting for an answer from the raft core or another shard, by the
/// request id they were sent with.
pub(super) struct Pending {
    waiting: RefCell<HashMap<ReqId, LocalSender<CoreAnswer>>>,
    /// The next request id (ids start at 1).
    next: Cell<ReqId>,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            waiting: RefCell::default(),
            next: Cell::new(1),
        }
    }

    /// A new request id, and where its answer will arrive.
    fn register(&self) -> (ReqId, LocalReceiver<CoreAnswer>) {
        let req = self.next.get();
        self.next.set(req + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.waiting.borrow_mut().insert(req, tx);
        (req, rx)
    }

    /// Waits for the answer to `req` until `deadline` (plus grace), then forgets `req`.
    async fn answer(
        &self,
        req: ReqId,
        rx: LocalReceiver<CoreAnswer>,
        deadline: Instant,
    ) -> Option<CoreAnswer> {
        let wait = (deadline + ANSWER_GRACE).saturating_duration_since(Instant::now());
        let a = futures_lite::future::or(rx.recv(), async {
            glommio::timer::sleep(wait).await;
            None
        })
        .await;
        self.forget(req);
        a
    }

    /// `req` will not be answered (its request was never sent).
    fn forget(&self, req: ReqId) {
        self.waiting.borrow_mut().remove(&req);
    }

    /// Hands an answer to the call waiting for it; one that gave up is not there.
    fn deliver(&self, req: ReqId, answer: CoreAnswer) {
        if let Some(tx) = self.waiting.borrow_mut().remove(&req) {
            let _ = tx.try_send(answer);
        }
    }
}
