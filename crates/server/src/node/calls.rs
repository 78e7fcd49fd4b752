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
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::shared_channel::ConnectedSender;

use super::shard::{KvState, Senders, read_timeout};
use super::{AdminCall, CoreAnswer, LeaseCall, MeshMsg, ReadTarget, ReqId, Shared, ToRaft};
use crate::config::NodeConfig;
use crate::metrics::{Op, ShardMetrics};
use crate::net::http::{AdminOp, ApiCall};
use crate::shard::{Command, route};
use ringkv_proto::outcome::{Answer, ApiError, Outcome, TimeoutKind, http_status};
use ringkv_raft::{Index, ReadPolicy};
use ringkv_store::{DeleteRangeRequest, PutRequest, RangeRequest};

/// Extra time a shard waits past a request's deadline for the raft core's own, more
/// precise, timeout answer.
const ANSWER_GRACE: Duration = Duration::from_millis(200);
/// How often overdue waits for answers are ended: a timeout comes this much late at most.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

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
    /// A lease's shortest TTL: 1.5 x the longest election timeout, in whole seconds
    /// (etcd's rule), so a lease outlives a leader change.
    lease_ttl_min_secs: i64,
    /// Operator calls must carry it when it is set.
    cluster_token: String,
    /// etcd's response header names the cluster and the member that answered.
    header_cluster_id: u64,
    node_id: u64,
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
            lease_ttl_min_secs: (cfg.raft.election_timeout_max_ms * 3).div_ceil(2000) as i64,
            cluster_token: cfg.cluster.cluster_token.clone(),
            header_cluster_id: super::core::header_cluster_id(cfg),
            node_id: cfg.cluster.node_id,
            metrics,
        }
    }

    /// The response header of etcd's API at `revision`.
    pub(super) fn etcd_header(&self, revision: i64) -> ringkv_proto::etcdpb::ResponseHeader {
        ringkv_proto::etcdpb::ResponseHeader {
            cluster_id: self.header_cluster_id,
            member_id: self.node_id,
            revision,
            raft_term: self.shared.lease.read().term,
        }
    }

    /// The store revision this shard has applied.
    pub(super) fn revision(&self) -> i64 {
        self.kv.read_point().1
    }

    /// Whether this node knows a leader now.
    pub(super) fn leader_known(&self) -> bool {
        self.shared.leader.load(Ordering::Relaxed) != 0
    }

    /// Bytes the key-value state holds, over every shard.
    pub(super) fn state_bytes(&self) -> u64 {
        self.shared
            .state_bytes
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// Ends the waits of calls whose answer is overdue, every `SWEEP_INTERVAL`, for as
    /// long as the shard runs.
    pub(super) async fn sweep(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(SWEEP_INTERVAL).await;
            self.pending.expire(Instant::now());
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
            ApiCall::Write { .. } => Some(Op::Write),
            ApiCall::Range { .. } => Some(Op::Range),
            ApiCall::Status
            | ApiCall::Admin { .. }
            | ApiCall::Compact { .. }
            | ApiCall::LeaseKeepAlive { .. }
            | ApiCall::LeaseTimeToLive { .. }
            | ApiCall::LeaseLeases
            | ApiCall::Hash { .. } => None,
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
            // The seed's calls answer with the revision alone.
            ApiCall::Put { key, value } => {
                let cmd = Command::Put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                });
                written(self.write(cmd.encode(), deadline).await)
            }
            ApiCall::Delete { key } => {
                let cmd = Command::DeleteRange(DeleteRangeRequest {
                    key,
                    ..Default::default()
                });
                written(self.write(cmd.encode(), deadline).await)
            }
            ApiCall::Compact { revision, physical } => {
                let cmd = Command::Compact { revision, physical };
                written(self.write(cmd.encode(), deadline).await)
            }
            ApiCall::Write { command } => {
                // A txn that writes nothing is a read (no log entry, no revision).
                if let Ok(Command::Txn(t)) = Command::decode(&command)
                    && t.is_read_only()
                {
                    return self.read_txn(Arc::new(t), deadline).await;
                }
                let command = self.grant_terms(command)?;
                self.write(command, deadline).await
            }
            ApiCall::Range { req, consistency } => {
                let policy = consistency.unwrap_or(self.default_policy);
                self.range(Arc::new(*req), policy, deadline).await
            }
            ApiCall::LeaseKeepAlive { lease } => {
                self.lease(LeaseCall::KeepAlive { lease }, deadline).await
            }
            ApiCall::LeaseTimeToLive { lease, keys } => {
                let ttl = self
                    .lease(LeaseCall::TimeToLive { lease, keys }, deadline)
                    .await?;
                match ttl {
                    Answer::LeaseTtl {
                        id,
                        ttl,
                        granted_ttl,
                        ..
                    } if keys && ttl >= 0 => Ok(Answer::LeaseTtl {
                        id,
                        ttl,
                        granted_ttl,
                        keys: self.lease_keys(lease, deadline).await?,
                    }),
                    other => Ok(other),
                }
            }
            ApiCall::LeaseLeases => self.lease(LeaseCall::Leases, deadline).await,
            ApiCall::Hash { revision } => self.hash(revision, deadline).await,
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
        let req = self.pending.register(deadline);
        if to.send(make(req)).await.is_err() {
            self.pending.forget(req);
            return Err(ApiError::Stopping);
        }
        Ok(self.pending.answer(req).await)
    }

    /// A read of a key this shard owns (a client's, or one another shard forwarded).
    pub(super) async fn read(&self, key: Bytes, policy: ReadPolicy, deadline: Instant) -> Outcome {
        let at = match self
            .read_index(ReadTarget::Key(key.clone()), policy, deadline)
            .await?
        {
            Ok(at) => at,
            Err(done) => return done,
        };
        if let Some(i) = at
            && !self.kv.wait_applied(i, deadline).await
        {
            return Err(read_timeout());
        }
        self.kv.serve_local(&key)
    }

    /// Where a read of `policy` must be served from: `None` (now, eventual), the index the
    /// shard's watermark must reach first, or (`Err`) the whole answer (a follower's read
    /// the leader served).
    async fn read_index(
        &self,
        target: ReadTarget,
        policy: ReadPolicy,
        deadline: Instant,
    ) -> Result<Result<Option<Index>, Outcome>, ApiError> {
        Ok(Ok(match policy {
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
                    target,
                    policy,
                    deadline,
                };
                match self.ask(&self.out.to_raft, read, deadline).await? {
                    Some(CoreAnswer::ReadAt(i)) => Some(i),
                    Some(CoreAnswer::Done(r)) => return Ok(Err(r)),
                    _ => return Err(read_timeout()),
                }
            }
        }))
    }

    /// A range read (a client's on this shard).
    async fn range(&self, r: Arc<RangeRequest>, policy: ReadPolicy, deadline: Instant) -> Outcome {
        let at = match self
            .read_index(ReadTarget::Range(r.clone()), policy, deadline)
            .await?
        {
            Ok(at) => at,
            Err(done) => return done,
        };
        self.range_at(r, at, deadline).await
    }

    /// A range served once this shard's watermark reaches `at`: the current revision is
    /// this shard's there, and every shard the range involves reads its part at the one
    /// revision asked (or that one), once its own watermark is as far: a consistent cut.
    pub(super) async fn range_at(
        &self,
        r: Arc<RangeRequest>,
        at: Option<Index>,
        deadline: Instant,
    ) -> Outcome {
        if let Some(i) = at
            && !self.kv.wait_applied(i, deadline).await
        {
            return Err(read_timeout());
        }
        let (index, current, compacted) = self.kv.read_point();
        let revision = ringkv_store::store::read_revision(r.revision, current, compacted)
            .map_err(|e| crate::shard::api_error(&e))?;
        let shards: Vec<usize> = if r.range_end.is_empty() {
            vec![route(&r.key, self.n)]
        } else {
            (0..self.n).collect()
        };
        let parts = self
            .gather(
                &shards,
                |req| MeshMsg::RangePart {
                    from: self.idx,
                    req,
                    range: r.clone(),
                    revision,
                    index,
                    deadline,
                },
                || self.kv.read_part(&r, revision),
                |a| match a {
                    CoreAnswer::Part(p) => Some(p),
                    _ => None,
                },
                deadline,
            )
            .await?;
        let resp = ringkv_store::parts::merge_range(&r, parts);
        Ok(Answer::Store {
            revision: current,
            response: Vec::from(ringkv_store::encode_response(
                &ringkv_store::Response::Range(resp),
            )),
        })
    }

    /// This node's store hash at `revision` (0: its current one): every shard's part at
    /// that one revision, added up.
    async fn hash(&self, revision: ringkv_store::Revision, deadline: Instant) -> Outcome {
        let (index, current, compacted) = self.kv.read_point();
        let at = ringkv_store::store::read_revision(revision, current, compacted)
            .map_err(|e| crate::shard::api_error(&e))?;
        let all: Vec<usize> = (0..self.n).collect();
        let parts = self
            .gather(
                &all,
                |req| MeshMsg::Hash {
                    from: self.idx,
                    req,
                    revision: at,
                    index,
                    deadline,
                },
                || Ok(self.kv.hash(at)),
                |a| match a {
                    CoreAnswer::Hash(h) => Some(h),
                    _ => None,
                },
                deadline,
            )
            .await?;
        let hash = parts.into_iter().fold(0u64, u64::wrapping_add);
        Ok(Answer::Hash {
            revision: current,
            hash_revision: at,
            compact_revision: compacted,
            hash,
        })
    }

    /// A read-only txn (a client's on this shard): linearizable unless every range in it
    /// is serializable (etcd's rule).
    async fn read_txn(&self, t: Arc<ringkv_store::TxnRequest>, deadline: Instant) -> Outcome {
        let policy = if ringkv_store::read::is_serializable(&t) {
            ReadPolicy::Eventual
        } else {
            ReadPolicy::Linearizable
        };
        let at = match self
            .read_index(ReadTarget::Txn(t.clone()), policy, deadline)
            .await?
        {
            Ok(at) => at,
            Err(done) => return done,
        };
        self.txn_at(t, at, deadline).await
    }

    /// A read-only txn served once this shard's watermark reaches `at`, at the current
    /// revision there: every shard it involves gives its partial at that revision, one
    /// decision, then every shard its part of the answer (a consistent cut, no log entry).
    pub(super) async fn txn_at(
        &self,
        t: Arc<ringkv_store::TxnRequest>,
        at: Option<Index>,
        deadline: Instant,
    ) -> Outcome {
        if let Some(i) = at
            && !self.kv.wait_applied(i, deadline).await
        {
            return Err(read_timeout());
        }
        let (index, current, _) = self.kv.read_point();
        let cmd = Command::Txn((*t).clone());
        let mask = crate::shard::participants(&cmd, self.n);
        let shards: Vec<usize> = (0..self.n).filter(|s| mask >> s & 1 == 1).collect();
        // Round one: the partials.
        let partials = self
            .gather(
                &shards,
                |req| MeshMsg::TxnPartial {
                    from: self.idx,
                    req,
                    txn: t.clone(),
                    revision: current,
                    index,
                    deadline,
                },
                || Ok(self.kv.txn_partial(&t, current)),
                |a| match a {
                    CoreAnswer::Partial(p) => Some(p),
                    _ => None,
                },
                deadline,
            )
            .await?;
        let d = ringkv_store::parts::decide(&t, &partials);
        if let Some(e) = &d.error {
            return Err(crate::shard::api_error(e));
        }
        let d = Arc::new(d);
        // Round two: the parts of the answer on the path taken.
        let parts = self
            .gather(
                &shards,
                |req| MeshMsg::TxnPart {
                    from: self.idx,
                    req,
                    txn: t.clone(),
                    decision: d.clone(),
                    revision: current,
                    index,
                    deadline,
                },
                || Ok(self.kv.txn_part(&t, &d, current)),
                |a| match a {
                    CoreAnswer::TxnPart(p) => Some(p),
                    _ => None,
                },
                deadline,
            )
            .await?;
        let parts = parts
            .into_iter()
            .map(|p| Ok(ringkv_store::parts::Part::Txn(p)))
            .collect();
        let resp =
            ringkv_store::parts::merge(&cmd, parts).map_err(|e| crate::shard::api_error(&e))?;
        Ok(Answer::Store {
            revision: current,
            response: Vec::from(ringkv_store::encode_response(&resp)),
        })
    }

    /// A lease grant's final terms before it is proposed (etcd's server and lessor do the
    /// same): an id chosen when none was asked for, the TTL raised to the minimum.
    fn grant_terms(&self, command: Bytes) -> Result<Bytes, ApiError> {
        let Ok(Command::LeaseGrant { id, ttl }) = Command::decode(&command) else {
            return Ok(command);
        };
        let id = if id == 0 {
            // A random positive id (etcd's are unique per member and time; a clash is
            // refused "lease already exists" and the client asks again).
            (crate::wal::meta::new_incarnation() >> 1).max(1) as i64
        } else {
            id
        };
        let ttl = ttl.max(self.lease_ttl_min_secs);
        Ok(Command::LeaseGrant { id, ttl }.encode())
    }

    /// Every shard's keys of `lease`, in key order.
    async fn lease_keys(&self, lease: i64, deadline: Instant) -> Result<Vec<Vec<u8>>, ApiError> {
        let all: Vec<usize> = (0..self.n).collect();
        let parts = self
            .gather(
                &all,
                |req| MeshMsg::LeaseKeys {
                    from: self.idx,
                    req,
                    lease,
                },
                || Ok(self.kv.lease_keys(lease)),
                |a| match a {
                    CoreAnswer::Keys(k) => Some(Ok(k)),
                    _ => None,
                },
                deadline,
            )
            .await?;
        let mut keys: Vec<Vec<u8>> = parts.into_iter().flatten().collect();
        keys.sort();
        Ok(keys)
    }

    /// Asks each of `shards` but this one for its part (`make`: the message, given the
    /// request id its answer comes back under), computes this shard's own part with
    /// `local` meanwhile when it is one of them, and gathers the answers (`take`: the part
    /// in an answer): every part, or the first error; a shard that does not answer in time
    /// is a read timeout.
    async fn gather<T>(
        &self,
        shards: &[usize],
        make: impl Fn(ReqId) -> MeshMsg,
        local: impl FnOnce() -> Result<T, ApiError>,
        take: impl Fn(CoreAnswer) -> Option<Result<T, ApiError>>,
        deadline: Instant,
    ) -> Result<Vec<T>, ApiError> {
        let mut asked = Vec::new();
        for &s in shards.iter().filter(|&&s| s != self.idx) {
            let req = self.pending.register(deadline);
            if self.out.to_shard(s).send(make(req)).await.is_err() {
                self.pending.forget(req);
                return Err(ApiError::Stopping);
            }
            asked.push(req);
        }
        let mut parts = Vec::with_capacity(shards.len());
        if shards.contains(&self.idx) {
            parts.push(local()?);
        }
        for req in asked {
            match self.pending.answer(req).await.and_then(&take) {
                Some(p) => parts.push(p?),
                None => return Err(read_timeout()),
            }
        }
        Ok(parts)
    }

    /// A lease call: carried out by the raft core (the leader's lessor and, for a
    /// lease's keys, the shards).
    async fn lease(&self, call: LeaseCall, deadline: Instant) -> Outcome {
        let lease = |req| ToRaft::Lease {
            shard: self.idx,
            req,
            call,
            deadline,
        };
        match self.ask(&self.out.to_raft, lease, deadline).await? {
            Some(CoreAnswer::Done(r)) => r,
            _ => Err(ApiError::Timeout {
                what: TimeoutKind::Call,
            }),
        }
    }
}

/// A store write's answer as the seed's calls give it: the revision alone.
fn written(o: Outcome) -> Outcome {
    match o? {
        Answer::Store { revision, .. } => Ok(Answer::Written {
            revision: revision as u64,
        }),
        other => Ok(other),
    }
}

/// Calls of one shard waiting for an answer from the raft core or another shard, by the
/// request id they were sent with.
pub(super) struct Pending {
    waiting: RefCell<HashMap<ReqId, Slot>>,
    /// The next request id (ids start at 1).
    next: Cell<ReqId>,
}

/// One call's wait for its answer. No timer per call: `expire`, run by the shard's
/// sweep every `SWEEP_INTERVAL`, ends the waits whose time is up (a timer armed and
/// cancelled per request cost more than the rest of its bookkeeping).
struct Slot {
    answer: Option<CoreAnswer>,
    waker: Option<Waker>,
    /// The deadline plus grace: no answer by then is a timeout.
    expires: Instant,
}

/// Forgets a request when its wait ends, however it ends (answered, timed out, or the
/// call dropped).
struct Forget<'a>(&'a Pending, ReqId);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

impl Pending {
    fn new() -> Pending {
        Pending {
            waiting: RefCell::default(),
            next: Cell::new(1),
        }
    }

    /// A new request id, answered until `deadline` (plus grace).
    fn register(&self, deadline: Instant) -> ReqId {
        let req = self.next.get();
        self.next.set(req + 1);
        let slot = Slot {
            answer: None,
            waker: None,
            expires: deadline + ANSWER_GRACE,
        };
        self.waiting.borrow_mut().insert(req, slot);
        req
    }

    /// Waits for the answer to `req` until its deadline (plus grace; `expire` ends the
    /// wait), then forgets `req`.
    async fn answer(&self, req: ReqId) -> Option<CoreAnswer> {
        let _forget = Forget(self, req);
        std::future::poll_fn(|cx| {
            let mut w = self.waiting.borrow_mut();
            let Some(slot) = w.get_mut(&req) else {
                return Poll::Ready(None); // expired
            };
            if let Some(a) = slot.answer.take() {
                return Poll::Ready(Some(a));
            }
            match &slot.waker {
                Some(k) if k.will_wake(cx.waker()) => {}
                _ => slot.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// `req` will not be answered (its request was never sent), or its wait ended.
    fn forget(&self, req: ReqId) {
        self.waiting.borrow_mut().remove(&req);
    }

    /// Hands an answer to the call waiting for it; one that gave up is not there.
    fn deliver(&self, req: ReqId, answer: CoreAnswer) {
        if let Some(slot) = self.waiting.borrow_mut().get_mut(&req) {
            slot.answer = Some(answer);
            if let Some(k) = slot.waker.take() {
                k.wake();
            }
        }
    }

    /// Ends the waits whose time is up at `now`: they answer None (a timeout).
    fn expire(&self, now: Instant) {
        self.waiting.borrow_mut().retain(|_, slot| {
            if slot.expires > now || slot.answer.is_some() {
                return true;
            }
            if let Some(k) = slot.waker.take() {
                k.wake();
            }
            false
        });
    }
}
