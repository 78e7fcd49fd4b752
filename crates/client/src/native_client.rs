//! Native-protocol clients (`net::native`) for glommio executors: `Conn`, one pipelined
//! connection, and `Client`, which spreads requests over a cluster's nodes.
//!
//! Runs on the caller's executor. `Conn` owns one socket with one writer task (batches
//! frames queued by callers into one write) and one reader task (hands each answer to its
//! waiting caller, matched by id); many tasks may share it; dropping the last handle ends
//! both tasks and closes the socket. `Conn` never retries: a request whose answer does not
//! come is its caller's to judge.
//!
//! `Client` owns one cached `Conn` per endpoint (opened on first use, opened again once
//! broken or after it let a request time out) and the leader it last learnt. Its rules,
//! the same as the CLI's (`crate::client`):
//! - A put or delete goes first to the remembered leader; when none is remembered the
//!   endpoints are asked for their status, in order, until one names the leader (its own
//!   `leader_address`, or a `NotLeader` refusal's). Then the endpoints in the order given.
//! - Reads and status start at the next endpoint in rotation (each call one further, so
//!   reads spread over the nodes; every consistency is valid on a follower, which
//!   forwards what it cannot serve) and go on through the others in order.
//! - Each address gets the call at most once, each attempt within `timeout` (connect,
//!   send and answer); a write with no leader remembered may first ask each address for
//!   its status, so it can take up to 2 x endpoints x `timeout` in all. A failed
//!   connection moves on. A `NotLeader` refusal naming the leader's address puts that
//!   address next (nothing was written: safe to retry) and, for a write, remembers it; any
//!   other refusal that says nothing was done and another node may serve it
//!   (`ApiError::try_elsewhere`: no leader, stopping, unavailable...) moves on.
//! - A write is never resent once its bytes may have reached a node: a connection lost
//!   after sending, no answer within `timeout`, or an answer whose outcome is unknown
//!   (`ApiError::outcome_unknown`: a write timed out, its leader was lost) end the call
//!   with `Outcome::Unknown` (a resend could apply it twice, or after a later write), and
//!   the remembered leader is forgotten. A read or status is retried on the next endpoint
//!   after any of these (and after a read's timeout) instead.
//!
//! Must not touch node internals; the only retries are those above.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;

use ringkv_proto::admin::AdminOp;
use ringkv_proto::frame::{FrameHeader, FrameKind, HEADER_BYTES};
use ringkv_proto::native::{self, Request, Response};
use ringkv_proto::outcome::{self, ApiError, NodeStatus};

/// Frames queued for the writer, per connection.
const QUEUE_MAX: usize = 4096;
/// The largest answer accepted (a value of 1.5 MiB in JSON, with room).
const ANSWER_BYTES_MAX: usize = 8 << 20;
/// Receive buffer of a connection.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// How a call on a `Conn` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The request was never handed to the socket: no node saw it.
    NotSent(String),
    /// The request was handed to the socket, then the connection broke before its answer:
    /// the node may have acted on it.
    Lost(String),
    /// The request was handed to the socket and no answer came in time: the node may have
    /// acted on it (or still may).
    TimedOut,
}

pub struct Conn {
    out: LocalSender<Vec<u8>>,
    pending: Rc<RefCell<HashMap<u64, LocalSender<Response>>>>,
    next: Cell<u64>,
    /// Set when the connection broke: every waiting and later call fails.
    broken: Rc<Cell<bool>>,
    /// Dropped with the connection: cancels the reader, which holds the socket's read half
    /// (the writer ends when `out` is dropped).
    _reader: glommio::Task<()>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Rc<Conn>> {
        let s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        let (rd, mut wr) = futures_lite::io::split(s);
        // Pipelined answers arrive back to back: one receive takes many of them.
        let mut rd = futures_lite::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
        let (out, rx) = local_channel::new_bounded::<Vec<u8>>(QUEUE_MAX);
        let pending: Rc<RefCell<HashMap<u64, LocalSender<Response>>>> = Rc::default();
        let broken: Rc<Cell<bool>> = Rc::default();
        {
            let broken = broken.clone();
            glommio::spawn_local(async move {
                let mut buf = Vec::new();
                while let Some(first) = rx.recv().await {
                    buf.extend_from_slice(&first);
                    while buf.len() < 1 << 20 {
                        match futures_lite::future::poll_once(rx.recv()).await {
                            Some(Some(more)) => buf.extend_from_slice(&more),
                            _ => break,
                        }
                    }
                    if wr.write_all(&buf).await.is_err() {
                        broken.set(true);
                        return;
                    }
                    buf.clear();
                }
            })
            .detach();
        }
        let reader = {
            let (pending, broken) = (pending.clone(), broken.clone());
            glommio::spawn_local(async move {
                loop {
                    let mut h = [0u8; HEADER_BYTES];
                    if rd.read_exact(&mut h).await.is_err() {
                        break;
                    }
                    let Ok(hdr) = FrameHeader::decode(&h, ANSWER_BYTES_MAX) else {
                        break;
                    };
                    let mut body =
                        rkyv::util::AlignedVec::<16>::with_capacity(hdr.body_bytes as usize);
                    body.resize(hdr.body_bytes as usize, 0);
                    if rd.read_exact(&mut body).await.is_err() || hdr.check_body(&body).is_err() {
                        break;
                    }
                    let Ok(r) = native::decode_response(&body) else {
                        break;
                    };
                    if let Some(tx) = pending.borrow_mut().remove(&r.id) {
                        let _ = tx.try_send(r);
                    }
                }
                broken.set(true);
                // Waiting callers see their channel closed.
                pending.borrow_mut().clear();
            })
        };
        Ok(Rc::new(Conn {
            out,
            pending,
            next: Cell::new(1),
            broken,
            _reader: reader,
        }))
    }

    /// Whether the connection broke (every call on it now fails unsent).
    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Sends the request `make(id)` and waits for its answer. `Err` when the connection
    /// broke before the answer came (for a write: outcome unknown).
    pub async fn call(&self, make: impl FnOnce(u64) -> Request) -> Result<Response, String> {
        self.exchange(make, None).await.map_err(|e| match e {
            CallError::NotSent(e) | CallError::Lost(e) => e,
            CallError::TimedOut => unreachable!("no time limit was set"),
        })
    }

    /// `call` with a time limit on queueing, sending and the answer together.
    pub async fn call_within(
        &self,
        make: impl FnOnce(u64) -> Request,
        limit: Duration,
    ) -> Result<Response, CallError> {
        self.exchange(make, Some(limit)).await
    }

    async fn exchange(
        &self,
        make: impl FnOnce(u64) -> Request,
        limit: Option<Duration>,
    ) -> Result<Response, CallError> {
        if self.broken.get() {
            return Err(CallError::NotSent("the connection is broken".into()));
        }
        let id = self.next.get();
        self.next.set(id + 1);
        let body = native::encode(&make(id));
        let mut frame = FrameHeader::for_body(FrameKind::Client, &body)
            .encode()
            .to_vec();
        frame.extend_from_slice(&body);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        // Set once the writer has the frame: from then on it may reach the node.
        let queued = Cell::new(false);
        let answer = async {
            if self.out.send(frame).await.is_err() {
                return Err(CallError::NotSent("the connection is closed".into()));
            }
            queued.set(true);
            rx.recv().await.ok_or_else(|| {
                CallError::Lost("the connection broke before the answer".to_string())
            })
        };
        let r = match limit {
            None => answer.await,
            Some(limit) => {
                futures_lite::future::or(answer, async {
                    glommio::timer::sleep(limit).await;
                    Err(CallError::TimedOut)
                })
                .await
            }
        };
        if r.is_err() {
            self.pending.borrow_mut().remove(&id);
        }
        match r {
            Err(CallError::TimedOut) if !queued.get() => Err(CallError::NotSent(
                "timed out waiting for room in the connection's queue".into(),
            )),
            r => r,
        }
    }
}

/// A node's answer: what it did, or why not (typed: keys and values are bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The address that answered.
    pub endpoint: SocketAddr,
    pub outcome: outcome::Outcome,
}

impl Answer {
    /// What the node did, when it carried the call out.
    pub fn done(&self) -> Option<&outcome::Answer> {
        self.outcome.as_ref().ok()
    }

    /// Why the node did not carry the call out.
    pub fn error(&self) -> Option<&ApiError> {
        self.outcome.as_ref().err()
    }

    /// The status answer, when this is one.
    pub fn status(&self) -> Option<&NodeStatus> {
        match self.done()? {
            outcome::Answer::Status(s) => Some(s),
            _ => None,
        }
    }

    /// The HTTP API's rendering of this answer: status code and JSON body.
    pub fn to_json(&self) -> (u16, String) {
        outcome::render_json(&self.outcome)
    }
}

/// What became of one `Client` call.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A node carried the request out, or refused it on its merits (anything but a
    /// refusal another node might not give, and a read's timeout).
    Answered(Answer),
    /// Every address was tried and none could serve it, though some answered: `last` is
    /// the last such answer (a `try_elsewhere` refusal, or a read's timeout); `tried` says,
    /// in order, what happened at each address. Nothing was written.
    Unserved {
        last: Answer,
        tried: Vec<(SocketAddr, String)>,
    },
    /// No address answered: `tried` gives each one's error, in order. A write ends here
    /// only when it reached no node.
    Unreachable { tried: Vec<(SocketAddr, String)> },
    /// A put or delete was sent to `endpoint`, then `why` (the connection broke, no answer
    /// within the timeout, or an `answer` whose outcome is unknown): it may or may not have
    /// been applied, and it was not resent.
    Unknown {
        endpoint: SocketAddr,
        why: String,
        answer: Option<Answer>,
    },
}

impl Outcome {
    /// What the node did, when one carried the call out.
    pub fn ok(&self) -> Option<&outcome::Answer> {
        match self {
            Outcome::Answered(a) => a.done(),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
enum Op<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
    },
    Get {
        key: &'a [u8],
        consistency: u8,
    },
    Delete {
        key: &'a [u8],
    },
    Status,
    Admin {
        op: &'a AdminOp,
        token: Option<&'a str>,
    },
    /// An encoded `ringkv_store::Command`.
    Write {
        command: &'a [u8],
    },
    /// An encoded `ringkv_store::RangeRequest`.
    Range {
        request: &'a [u8],
        consistency: u8,
    },
    LeaseKeepAlive {
        lease: i64,
    },
    LeaseTimeToLive {
        lease: i64,
        keys: bool,
    },
    LeaseLeases,
}

impl Op<'_> {
    /// Writes and operator calls change the cluster: never resent once they may have
    /// arrived.
    fn is_write(self) -> bool {
        matches!(
            self,
            Op::Put { .. } | Op::Delete { .. } | Op::Admin { .. } | Op::Write { .. }
        )
    }

    fn request(self, id: u64) -> Request {
        match self {
            Op::Put { key, value } => Request::Put {
                id,
                key: key.to_vec(),
                value: value.to_vec(),
            },
            Op::Get { key, consistency } => Request::Get {
                id,
                key: key.to_vec(),
                consistency,
            },
            Op::Delete { key } => Request::Delete {
                id,
                key: key.to_vec(),
            },
            Op::Status => Request::Status { id },
            Op::Admin { op, token } => Request::Admin {
                id,
                op: op.clone(),
                token: token.map(str::to_string),
            },
            Op::Write { command } => Request::Write {
                id,
                command: command.to_vec(),
            },
            Op::Range {
                request,
                consistency,
            } => Request::Range {
                id,
                request: request.to_vec(),
                consistency,
            },
            Op::LeaseKeepAlive { lease } => Request::LeaseKeepAlive { id, lease },
            Op::LeaseTimeToLive { lease, keys } => Request::LeaseTimeToLive { id, lease, keys },
            Op::LeaseLeases => Request::LeaseLeases { id },
        }
    }
}

/// How one attempt at one address failed.
enum Failed {
    /// Nothing reached the node.
    NotSent(String),
    /// The request may have reached the node.
    MaybeSent(String),
}

/// A cluster client on the caller's glommio executor (see the module doc for its rules).
/// Calls take `&self`: tasks may share one `Client` through an `Rc`.
pub struct Client {
    endpoints: Vec<SocketAddr>,
    timeout: Duration,
    conns: RefCell<HashMap<SocketAddr, Rc<Conn>>>,
    leader: Cell<Option<SocketAddr>>,
    next_read: Cell<usize>,
}

impl Client {
    /// `endpoints`: the nodes, in the order writes try them; `timeout`: the limit of each
    /// attempt at one address (connect, send and answer). Connects lazily.
    pub fn new(endpoints: Vec<SocketAddr>, timeout: Duration) -> Client {
        Client {
            endpoints,
            timeout,
            conns: RefCell::default(),
            leader: Cell::new(None),
            next_read: Cell::new(0),
        }
    }

    /// The leader this client sends writes to first, when it knows one.
    pub fn leader(&self) -> Option<SocketAddr> {
        self.leader.get()
    }

    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Outcome {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.run(Op::Put { key, value }).await
    }

    /// `consistency`: a `net::native::CONSISTENCY_*` code (`CONSISTENCY_DEFAULT`: the
    /// node's default policy).
    pub async fn get(&self, key: impl AsRef<[u8]>, consistency: u8) -> Outcome {
        let key = key.as_ref();
        self.run(Op::Get { key, consistency }).await
    }

    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Outcome {
        let key = key.as_ref();
        self.run(Op::Delete { key }).await
    }

    /// A write of the etcd data model (put with options, delete of a range, txn,
    /// compaction, lease grant or revoke): answered `Answer::Store` (see `store_answer`).
    /// A write: never resent once it may have arrived.
    pub async fn write(&self, cmd: &ringkv_store::Command) -> Outcome {
        let command = cmd.encode();
        self.run(Op::Write { command: &command }).await
    }

    /// A range read; `consistency` as `get`'s.
    pub async fn range(&self, req: &ringkv_store::RangeRequest, consistency: u8) -> Outcome {
        let request = ringkv_store::encode_range(req);
        self.run(Op::Range {
            request: &request,
            consistency,
        })
        .await
    }

    /// Restarts a lease's countdown: `Answer::LeaseTtl` (TTL 0: no such lease).
    pub async fn lease_keep_alive(&self, lease: i64) -> Outcome {
        self.run(Op::LeaseKeepAlive { lease }).await
    }

    /// A lease's remaining and granted TTL (TTL -1: no such lease), its keys when `keys`.
    pub async fn lease_time_to_live(&self, lease: i64, keys: bool) -> Outcome {
        self.run(Op::LeaseTimeToLive { lease, keys }).await
    }

    /// Every lease's id.
    pub async fn leases(&self) -> Outcome {
        self.run(Op::LeaseLeases).await
    }

    /// The status of one node: the first in rotation that answers.
    pub async fn status(&self) -> Outcome {
        self.run(Op::Status).await
    }

    /// An operator call (join, promote, remove, transfer leadership, snapshot), with the
    /// cluster token when one is set. Like a write: sent to the leader first, never resent
    /// once it may have arrived.
    pub async fn admin(&self, op: &AdminOp, token: Option<&str>) -> Outcome {
        self.run(Op::Admin { op, token }).await
    }

    /// The status of the node at `endpoint` only (one attempt): its answer, whatever the
    /// status, or why none came.
    pub async fn status_at(&self, endpoint: SocketAddr) -> Result<Answer, String> {
        match self.attempt(endpoint, Op::Status).await {
            Ok(r) => Ok(Answer {
                endpoint,
                outcome: r.outcome,
            }),
            Err(Failed::NotSent(e) | Failed::MaybeSent(e)) => Err(e),
        }
    }

    async fn run(&self, op: Op<'_>) -> Outcome {
        let write = op.is_write();
        let mut queue: VecDeque<SocketAddr> = if let Op::Admin { .. } = op {
            // In the order given, without looking for the leader first: a snapshot is
            // taken on the node asked, and every other operator call is forwarded to the
            // leader by whichever node gets it.
            self.endpoints.iter().copied().collect()
        } else if write {
            if self.leader.get().is_none() {
                self.find_leader().await;
            }
            self.leader
                .get()
                .into_iter()
                .chain(self.endpoints.iter().copied())
                .collect()
        } else {
            let n = self.endpoints.len().max(1);
            let first = self.next_read.get() % n;
            self.next_read.set((first + 1) % n);
            let (a, b) = self.endpoints.split_at(first.min(self.endpoints.len()));
            b.iter().chain(a).copied().collect()
        };
        let mut tried: Vec<(SocketAddr, String)> = Vec::new();
        let mut last: Option<Answer> = None;
        while let Some(ep) = queue.pop_front() {
            if tried.iter().any(|(e, _)| *e == ep) {
                continue;
            }
            let r = match self.attempt(ep, op).await {
                Ok(r) => r,
                Err(Failed::NotSent(e)) => {
                    self.forget_leader(write, ep);
                    tried.push((ep, e));
                    continue;
                }
                Err(Failed::MaybeSent(why)) if write => {
                    self.forget_leader(write, ep);
                    return Outcome::Unknown {
                        endpoint: ep,
                        why,
                        answer: None,
                    };
                }
                Err(Failed::MaybeSent(e)) => {
                    tried.push((ep, e));
                    continue;
                }
            };
            let a = Answer {
                endpoint: ep,
                outcome: r.outcome,
            };
            let Some(e) = a.error() else {
                return Outcome::Answered(a);
            };
            match e {
                ApiError::NotLeader { leader_address, .. } => match named_leader(&a) {
                    Some(l) => {
                        tried.push((ep, format!("not the leader; the leader is {l}")));
                        queue.push_front(l);
                        if write {
                            self.leader.set(Some(l));
                        }
                    }
                    None => {
                        self.forget_leader(write, ep);
                        let why = match leader_address {
                            Some(s) if !s.is_empty() => {
                                format!("not the leader; it names {s:?}, not an ip:port")
                            }
                            _ => "not the leader, and it knows no leader".into(),
                        };
                        tried.push((ep, why));
                    }
                },
                e if write && e.outcome_unknown() => {
                    self.forget_leader(write, ep);
                    let why = format!("it answered {} {}", e.http_status(), e.code());
                    return Outcome::Unknown {
                        endpoint: ep,
                        why,
                        answer: Some(a),
                    };
                }
                e if e.try_elsewhere() => {
                    self.forget_leader(write, ep);
                    tried.push((ep, format!("{} {}", e.http_status(), e.code())));
                }
                // A read (or status) that timed out here may be served elsewhere.
                e @ ApiError::Timeout { .. } if !write => {
                    tried.push((ep, format!("{} {}", e.http_status(), e.code())));
                }
                _ => return Outcome::Answered(a),
            }
            last = Some(a);
        }
        match last {
            Some(last) => Outcome::Unserved { last, tried },
            None => Outcome::Unreachable { tried },
        }
    }

    /// Asks the endpoints for their status, in order, until one names the leader.
    async fn find_leader(&self) {
        for &ep in &self.endpoints {
            if let Ok(r) = self.attempt(ep, Op::Status).await {
                let a = Answer {
                    endpoint: ep,
                    outcome: r.outcome,
                };
                let named = match a.status() {
                    Some(st) if st.role == outcome::NodeRole::Leader => Some(ep),
                    _ => named_leader(&a),
                };
                if named.is_some() {
                    self.leader.set(named);
                    return;
                }
            }
        }
    }

    fn forget_leader(&self, write: bool, ep: SocketAddr) {
        if write && self.leader.get() == Some(ep) {
            self.leader.set(None);
        }
    }

    /// One request to `ep` within `self.timeout`, on its cached connection (reconnecting
    /// once if that one turns out broken) or a new one.
    async fn attempt(&self, ep: SocketAddr, op: Op<'_>) -> Result<Response, Failed> {
        let deadline = Instant::now() + self.timeout;
        let mut fresh = false;
        loop {
            let cached = self.conns.borrow().get(&ep).cloned();
            let conn = match cached {
                Some(c) if !c.is_broken() && !fresh => c,
                _ => {
                    fresh = true;
                    self.connect(ep, deadline).await.map_err(Failed::NotSent)?
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failed::NotSent(self.timed_out("connecting")));
            }
            match conn.call_within(|id| op.request(id), left).await {
                Ok(r) => return Ok(r),
                Err(CallError::NotSent(e)) => {
                    self.drop_conn(ep, &conn);
                    if fresh {
                        return Err(Failed::NotSent(e));
                    }
                    // A cached connection that broke while idle: one new one.
                    fresh = true;
                }
                Err(CallError::Lost(e)) => {
                    self.drop_conn(ep, &conn);
                    return Err(Failed::MaybeSent(e));
                }
                Err(CallError::TimedOut) => {
                    // A node that let a request time out may be stopped or stuck: the next
                    // call opens a new connection rather than queue behind this one.
                    self.drop_conn(ep, &conn);
                    return Err(Failed::MaybeSent(self.timed_out("waiting for the answer")));
                }
            }
        }
    }

    async fn connect(&self, ep: SocketAddr, deadline: Instant) -> Result<Rc<Conn>, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let c = futures_lite::future::or(async { Some(Conn::connect(ep).await) }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
        match c {
            Some(Ok(c)) => {
                self.conns.borrow_mut().insert(ep, c.clone());
                Ok(c)
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err(self.timed_out("connecting")),
        }
    }

    /// Forgets `conn` as `ep`'s connection (unless another task has replaced it already).
    fn drop_conn(&self, ep: SocketAddr, conn: &Rc<Conn>) {
        let mut conns = self.conns.borrow_mut();
        if conns.get(&ep).is_some_and(|c| Rc::ptr_eq(c, conn)) {
            conns.remove(&ep);
        }
    }

    fn timed_out(&self, doing: &str) -> String {
        format!("timed out {doing} ({} ms)", self.timeout.as_millis())
    }
}

/// The leader's address an answer names (a status, or a `NotLeader` refusal), when it is
/// an address.
fn named_leader(a: &Answer) -> Option<SocketAddr> {
    let named = match &a.outcome {
        Ok(outcome::Answer::Status(st)) => st.leader_address.as_deref(),
        Err(ApiError::NotLeader { leader_address, .. }) => leader_address.as_deref(),
        _ => None,
    };
    named?.parse().ok()
}

/// The header revision and the decoded response of an `Answer::Store`.
pub fn store_answer(a: &outcome::Answer) -> Option<(i64, ringkv_store::Response)> {
    match a {
        outcome::Answer::Store { revision, response } => {
            let r = ringkv_store::decode_response(&ringkv_store::bytes::Bytes::copy_from_slice(
                response,
            ))
            .ok()?;
            Some((*revision, r))
        }
        _ => None,
    }
}
