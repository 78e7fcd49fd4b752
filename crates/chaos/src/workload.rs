//! The campaign's clients and the history they record.
//!
//! Runs on one glommio executor thread of the runner (`Workload::start`), many client
//! tasks on it (the register clients here, the store clients of `storeload` beside them),
//! each with one request outstanding, its own connections, and a plain record of every
//! call: when it was invoked, when (and whether) it completed, and what it saw. The
//! runner's main thread steers them (new targets, stop) over a bounded flume channel, the
//! one `Send` link between it and the executor: the clients themselves share only
//! executor-local state, so no client takes a lock per call. Values are unique per write,
//! a write is never retried (a lost answer is recorded as unknown), and reads use all
//! three consistency levels. Must not look at node internals: the history is what clients
//! saw, nothing else.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::cluster::node_addr;
use super::storecheck::StoreRecord;
use super::storeload::{self, StoreLoad};
use ringkv_client::native_client::{CallError, Conn};
use ringkv_proto::native::{
    CONSISTENCY_EVENTUAL, CONSISTENCY_LEASE, CONSISTENCY_LINEARIZABLE, Request,
};
use ringkv_proto::outcome::{Answer, ApiError};
use ringkv_raft::NodeId;
use ringkv_rng::Rng;

/// What one call asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Put,
    /// A read at this consistency (`net::native` code).
    Get(u8),
}

/// How one call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A write acknowledged, or a read answered (with the value seen, `None` = absent).
    Ok,
    /// Refused before anything was done (a 503 or a 4xx): it had no effect.
    Failed,
    /// No answer, or a 504: a write may or may not have taken effect.
    Unknown,
}

/// One call of the history. Times are microseconds since the run began.
#[derive(Clone, Debug)]
pub struct Record {
    pub client: u32,
    pub node: NodeId,
    pub kind: Kind,
    pub key: String,
    /// The value written (Put) or read (Get, `Ok` only).
    pub value: Option<u64>,
    pub call_us: u64,
    pub ret_us: u64,
    pub outcome: Outcome,
}

/// Where the clients send calls; the runner updates it as members change.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub members: Vec<NodeId>,
}

/// Shape of the load.
#[derive(Clone, Debug)]
pub struct Load {
    pub clients: u32,
    /// Contended keys per key epoch; a key is used only within its epoch, so each key's
    /// history stays short enough to check.
    pub register_keys: u64,
    pub epoch_secs: u64,
    /// A write's answer must come within this (then: unknown); above the nodes'
    /// `request_timeout_ms`, so a node's own 504 usually comes first.
    pub write_timeout: Duration,
    /// A read's answer must come within this (then: dropped). Short, so a client stuck on
    /// a paused node soon asks again, and a read served after the pause was invoked late.
    pub read_timeout: Duration,
    /// The store clients beside the register clients.
    pub store: StoreLoad,
}

/// What the clients saw: the register clients' calls and the store clients'.
pub struct History {
    pub records: Vec<Record>,
    pub store: Vec<StoreRecord>,
}

/// Keys written once each (`u<client>-<seq>`) check loss at scale; register keys
/// (`r<epoch>-<k>`) are contended by every client and check linearizability.
pub fn is_register(key: &str) -> bool {
    key.starts_with('r')
}

/// What the runner tells the client executor.
enum Steer {
    Targets(Targets),
    Stop,
}

/// Steering messages queued at most (the runner sends one per membership change).
const STEER_QUEUE_MAX: usize = 64;

pub struct Workload {
    steer: flume::Sender<Steer>,
    thread: Option<glommio::ExecutorJoinHandle<Result<History, String>>>,
}

impl Workload {
    pub fn start(load: Load, t0: Instant, targets: Targets, seed: u64) -> Result<Workload, String> {
        let (steer, steered) = flume::bounded(STEER_QUEUE_MAX);
        let thread = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name("chaos-clients")
            .io_memory(1 << 20)
            .spawn(move || async move { run_clients(load, t0, targets, steered, seed).await })
            .map_err(|e| format!("cannot start the client executor: {e}"))?;
        Ok(Workload {
            steer,
            thread: Some(thread),
        })
    }

    pub fn set_targets(&self, t: Targets) {
        // Blocks only while the queue is full; the executor drains it at once.
        let _ = self.steer.send(Steer::Targets(t));
    }

    /// Stops the clients (each finishes its call in progress) and returns the history;
    /// an error if the client executor failed (a lost history must not pass as empty).
    pub fn finish(mut self) -> Result<History, String> {
        let _ = self.steer.send(Steer::Stop);
        let t = self
            .thread
            .take()
            .ok_or("the clients were already stopped")?;
        t.join()
            .map_err(|e| format!("the client executor failed: {e:?}"))?
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // Dropping the sender would stop them too; say it plainly.
        let _ = self.steer.try_send(Steer::Stop);
    }
}

async fn run_clients(
    load: Load,
    t0: Instant,
    targets: Targets,
    steered: flume::Receiver<Steer>,
    seed: u64,
) -> Result<History, String> {
    let targets = Rc::new(RefCell::new(targets));
    let stop = Rc::new(Cell::new(false));
    {
        // The runner's messages, applied to the clients' shared state; the runner gone
        // (its sender dropped) means stop as well.
        let (targets, stop) = (targets.clone(), stop.clone());
        glommio::spawn_local(async move {
            while let Ok(m) = steered.recv_async().await {
                match m {
                    Steer::Targets(t) => *targets.borrow_mut() = t,
                    Steer::Stop => break,
                }
            }
            stop.set(true);
        })
        .detach();
    }
    let history = Rc::new(RefCell::new(Vec::new()));
    let tasks: Vec<_> = (0..load.clients)
        .map(|c| {
            let (load, targets, stop, history) =
                (load.clone(), targets.clone(), stop.clone(), history.clone());
            glommio::spawn_local(async move {
                client(c, load, t0, targets, stop, history, seed).await;
            })
        })
        .collect();
    let store = Rc::new(RefCell::new(Vec::new()));
    let store_tasks: Vec<_> = (0..load.store.clients)
        .map(|c| {
            let (load, targets, stop, store) = (
                load.store.clone(),
                targets.clone(),
                stop.clone(),
                store.clone(),
            );
            glommio::spawn_local(storeload::client(c, load, t0, targets, stop, store, seed))
        })
        .collect();
    for t in tasks {
        t.await;
    }
    for t in store_tasks {
        t.await;
    }
    let held = || "a client task still holds the history".to_string();
    Ok(History {
        records: Rc::try_unwrap(history).map_err(|_| held())?.into_inner(),
        store: Rc::try_unwrap(store).map_err(|_| held())?.into_inner(),
    })
}

async fn client(
    id: u32,
    load: Load,
    t0: Instant,
    targets: Rc<RefCell<Targets>>,
    stop: Rc<Cell<bool>>,
    history: Rc<RefCell<Vec<Record>>>,
    seed: u64,
) {
    let mut rng = Rng::new(seed ^ (u64::from(id) << 40) ^ 0x5eed);
    let mut conns: HashMap<NodeId, Rc<Conn>> = HashMap::new();
    let mut seq = 0u64;
    let now_us = || t0.elapsed().as_micros() as u64;
    // Half the clients write and read; a quarter only read at lease consistency and a
    // quarter only linearizably. A client stuck behind an unanswerable call (at an
    // isolated leader, say) cannot then hide what its node serves at the other level.
    let role = id / 3 % 4;
    while !stop.get() {
        let t = targets.borrow().clone();
        if t.members.is_empty() {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        }
        // Each client talks to one node, its home (as a client of one server does);
        // a follower forwards what it cannot serve. Homes spread over the members, and
        // with three members each role has clients at each node.
        let node = t.members[id as usize % t.members.len()];
        let epoch = now_us() / 1_000_000 / load.epoch_secs;
        let register = format!("r{epoch}-{}", rng.below(load.register_keys));
        let dice = match role {
            2 => 70,
            3 => 50,
            _ => rng.below(100),
        };
        let (kind, key) = if dice < 50 {
            seq += 1;
            let key = if dice < 20 {
                format!("u{id}-{seq}")
            } else {
                register
            };
            (Kind::Put, key)
        } else {
            let c = match dice {
                50..=69 => CONSISTENCY_LINEARIZABLE,
                70..=84 => CONSISTENCY_LEASE,
                _ => CONSISTENCY_EVENTUAL,
            };
            // Some eventual reads of this client's own once-written keys.
            let key = if c == CONSISTENCY_EVENTUAL && seq > 0 && dice >= 95 {
                format!("u{id}-{}", 1 + rng.below(seq))
            } else {
                register
            };
            (Kind::Get(c), key)
        };
        let value = (kind == Kind::Put).then_some((u64::from(id) << 40) | seq);
        let conn = match conns.get(&node) {
            Some(c) if !c.is_broken() => c.clone(),
            _ => {
                let c = futures_lite::future::or(
                    async { Conn::connect(node_addr(node)).await.ok() },
                    async {
                        glommio::timer::sleep(Duration::from_millis(500)).await;
                        None
                    },
                )
                .await;
                match c {
                    Some(c) => {
                        conns.insert(node, c.clone());
                        c
                    }
                    None => {
                        // Nothing was sent: no record, no effect.
                        conns.remove(&node);
                        glommio::timer::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
        };
        let call_us = now_us();
        let k = key.clone().into_bytes();
        let r = conn
            .call_within(
                |rid| match kind {
                    Kind::Put => Request::Put {
                        id: rid,
                        key: k,
                        value: value.expect("a put's value").to_string().into_bytes(),
                    },
                    Kind::Get(consistency) => Request::Get {
                        id: rid,
                        key: k,
                        consistency,
                    },
                },
                if kind == Kind::Put {
                    load.write_timeout
                } else {
                    load.read_timeout
                },
            )
            .await;
        let ret_us = now_us();
        let (outcome, seen) = match r {
            Err(CallError::NotSent(_)) => {
                conns.remove(&node);
                continue;
            }
            Err(CallError::Lost(_)) | Err(CallError::TimedOut) => {
                // A connection that let a call time out is not reused: a late answer on
                // it must not be taken for another call's.
                conns.remove(&node);
                (Outcome::Unknown, None)
            }
            Ok(resp) => match resp.outcome {
                Ok(answer) => {
                    let v = if kind == Kind::Put {
                        None
                    } else {
                        read_value(&answer)
                    };
                    (Outcome::Ok, v)
                }
                Err(ApiError::NotFound { .. }) if kind != Kind::Put => (Outcome::Ok, None),
                // A write that may have happened, or a read that timed out.
                Err(e) if e.outcome_unknown() || matches!(e, ApiError::Timeout { .. }) => {
                    (Outcome::Unknown, None)
                }
                Err(_) => (Outcome::Failed, None),
            },
        };
        history.borrow_mut().push(Record {
            client: id,
            node,
            kind,
            key,
            value: if kind == Kind::Put { value } else { seen },
            call_us,
            ret_us,
            outcome,
        });
        if outcome != Outcome::Ok {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Reads every key at node `node` with `consistency`, many calls in flight on one
/// connection: the final state the checkers compare. Fails if any key gets no answer.
pub fn read_all(
    node: NodeId,
    keys: &[String],
    consistency: u8,
) -> Result<super::check::State, String> {
    let keys = keys.to_vec();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("chaos-read-all")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let conn = Conn::connect(node_addr(node))
                .await
                .map_err(|e| format!("node {node}: {e}"))?;
            let out = Rc::new(RefCell::new(super::check::State::new()));
            for chunk in keys.chunks(256) {
                let calls: Vec<_> = chunk
                    .iter()
                    .map(|k| {
                        let (conn, out, k) = (conn.clone(), out.clone(), k.clone());
                        glommio::spawn_local(async move {
                            let kb = k.clone().into_bytes();
                            let r = conn
                                .call_within(
                                    |id| Request::Get {
                                        id,
                                        key: kb,
                                        consistency,
                                    },
                                    Duration::from_secs(10),
                                )
                                .await
                                .map_err(|e| format!("reading {k} at node {node}: {e:?}"))?;
                            let v = match r.outcome {
                                Ok(answer) => read_value(&answer),
                                Err(ApiError::NotFound { .. }) => None,
                                Err(e) => {
                                    return Err(format!(
                                        "reading {k} at node {node}: {} {e}",
                                        e.code()
                                    ));
                                }
                            };
                            out.borrow_mut().insert(k, v);
                            Ok::<(), String>(())
                        })
                    })
                    .collect();
                for c in calls {
                    c.await?;
                }
            }
            Ok(out.take())
        })
        .map_err(|e| format!("cannot start an executor: {e}"))?
        .join()
        .map_err(|e| format!("read-all executor: {e:?}"))?
}

/// The value a read returned, as the client wrote it (decimal text); a value no client
/// wrote reads as `u64::MAX`: never written.
fn read_value(answer: &Answer) -> Option<u64> {
    match answer {
        Answer::Value { value, .. } => Some(
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX),
        ),
        _ => None,
    }
}
