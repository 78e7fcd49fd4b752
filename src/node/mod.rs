//! The node: `ringkv serve`. A first, single-executor version of the server.
//!
//! Owns the process: the executor pinned to `runtime.raft_core`, and on it the Raft driver
//! loop (core, WAL, one key-value partition), the peer transport and the HTTP connection
//! tasks. Everything runs on that one executor for now; the node issue's shard executors
//! (one partition per core, SO_REUSEPORT listeners, the atomic lease value) are the next
//! step. Must not block the executor: disk and sockets go through glommio.
//!
//! Data flow: HTTP task -> `Event::Client` (bounded channel) -> driver: propose / read /
//! status -> Raft `Ready` -> WAL persist, messages to the transport, committed entries to
//! the partition -> the waiting HTTP task gets its reply. Peer frames -> `Event::Peer`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};

use crate::config::{MemberRole, NodeConfig};
use crate::net::http::{self, ApiCall, HttpError, HttpLimits, Parsed};
use crate::net::peer::{HttpHandler, PeerConfig, Transport};
use crate::raft::{Index, Membership, Message, ProposeError, Raft, ReadError, Restore, Role, Term};
use crate::shard::{Applied, Command, Partition, Snapshot};
use crate::wal::meta::{NodeMeta, cluster_id};
use crate::wal::{DmaDisk, SnapshotStore, Wal};

/// Events the driver loop handles.
enum Event {
    Peer(Message),
    Client(ApiCall, LocalSender<Reply>),
}

/// A reply for an HTTP task: status and JSON body.
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn ok(v: serde_json::Value) -> Self {
        Self {
            status: 200,
            body: v.to_string(),
        }
    }

    fn err(status: u16, code: &str, msg: impl Into<String>) -> Self {
        Self {
            status,
            body: serde_json::json!({ "error": msg.into(), "code": code }).to_string(),
        }
    }
}

/// Runs a node until the process is stopped. Returns an error message for start-up
/// failures (the caller prints it and exits non-zero).
pub fn serve(cfg: NodeConfig) -> Result<(), String> {
    let core = cfg.runtime.raft_core;
    let spin = cfg.runtime.spin_before_park_us;
    let mut b = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(core))
        .name(&format!("ringkv-{}", cfg.cluster.node_id));
    if spin > 0 {
        b = b.spin_before_park(Duration::from_micros(spin));
    }
    b.spawn(move || async move { run(cfg).await })
        .map_err(|e| format!("cannot start the executor on CPU {core}: {e}"))?
        .join()
        .map_err(|e| format!("executor failed: {e}"))?
}

struct Pending {
    term: Term,
    reply: LocalSender<Reply>,
    deadline: Instant,
}

struct ReadWait {
    key: String,
    reply: LocalSender<Reply>,
    deadline: Instant,
}

async fn run(cfg: NodeConfig) -> Result<(), String> {
    let id = cfg.cluster.node_id;
    let data_dir = cfg.data_dir();
    let members = cfg.members();
    let cid = cluster_id(
        &members
            .iter()
            .map(|(i, a, _)| (*i, a.to_string()))
            .collect::<Vec<_>>(),
        &cfg.cluster.cluster_token,
    );
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let has_state = data_dir.join("wal").exists() || data_dir.join("hardstate").exists();
    NodeMeta::check_or_create(
        &data_dir,
        NodeMeta {
            cluster_id: cid,
            node_id: id,
        },
        has_state,
    )
    .map_err(|e| e.to_string())?;
    let disk = DmaDisk::new(&data_dir)
        .await
        .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?;
    let snaps = SnapshotStore::open(
        disk.clone(),
        data_dir.clone(),
        cfg.raft.persistence.snapshots_kept,
    )
    .await
    .map_err(|e| e.to_string())?;
    let snap = snaps.load_latest().await.map_err(|e| e.to_string())?;
    let base = snap
        .as_ref()
        .map_or((0, 0), |s| (s.meta.index, s.meta.term));
    let (mut wal, rec) = Wal::open(disk.clone(), cfg.wal_options(), base)
        .await
        .map_err(|e| e.to_string())?;
    let mut part = match &snap {
        Some(s) => Snapshot::decode(&s.data, 0, 1).map_err(|e| format!("snapshot: {e}"))?,
        None => Partition::new(0, 1),
    };
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
        raft_cfg.clone(),
        Restore {
            hard_state: rec.hard_state,
            snapshot: snap.as_ref().map(|s| s.meta.clone()),
            entries: rec.entries,
            initial_membership: Membership::with_voters(voters),
        },
    )
    .map_err(|e| format!("raft: {e}"))?;

    let listen: SocketAddr = cfg.cluster.listen_address.parse().expect("validated");
    let listener = TcpListener::bind(listen).map_err(|e| {
        format!("cannot listen on {listen} (cluster.listen_address): {e}; is the port taken?")
    })?;
    let (ev_tx, ev_rx) = local_channel::new_bounded::<Event>(4096);
    let ev_tx = Rc::new(ev_tx);
    let (peer_tx, peer_rx) = local_channel::new_bounded::<Message>(4096);
    let limits = HttpLimits {
        head_bytes_max: 16 << 10,
        body_bytes_max: cfg.limits.key_bytes_max * 2 + cfg.limits.value_bytes_max * 2 + 1024,
        key_bytes_max: cfg.limits.key_bytes_max,
        value_bytes_max: cfg.limits.value_bytes_max,
    };
    let http: HttpHandler = {
        let ev_tx = ev_tx.clone();
        Rc::new(move |s: TcpStream, first: Vec<u8>| {
            let ev_tx = ev_tx.clone();
            glommio::spawn_local(async move { serve_http(s, first, limits, ev_tx).await }).detach();
        })
    };
    let transport = Transport::start(
        PeerConfig {
            node_id: id,
            cluster_id: cid,
            token: cfg.cluster.cluster_token.clone(),
            peers: members.iter().map(|m| (m.0, m.1)).collect(),
            frame_bytes_max: cfg.limits.frame_bytes_max,
            outbox_max: 4096,
            reconnect_backoff_max_ms: 1000,
        },
        listener,
        peer_tx,
        http,
    );
    // Peer messages join the event stream.
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
        listen = %listen,
        data_dir = %data_dir.display(),
        "ringkv node started"
    );
    let addresses: BTreeMap<_, _> = members.iter().map(|m| (m.0, m.1)).collect();
    let driver = Driver {
        id,
        raft,
        part: &mut part,
        transport: &transport,
        addresses,
        writes: HashMap::new(),
        reads: HashMap::new(),
        next_read: 1,
        start: Instant::now(),
        request_timeout: Duration::from_millis(cfg.raft.request_timeout_ms),
        default_policy: cfg.default_read_policy(),
        tick: Duration::from_millis(cfg.raft.tick_interval_ms),
        last_role: Role::Follower,
    };
    driver.run(&mut wal, ev_rx).await
}

struct Driver<'a> {
    id: u64,
    raft: Raft,
    part: &'a mut Partition,
    transport: &'a Transport,
    addresses: BTreeMap<u64, SocketAddr>,
    writes: HashMap<Index, Pending>,
    reads: HashMap<u64, ReadWait>,
    next_read: u64,
    start: Instant,
    request_timeout: Duration,
    default_policy: crate::raft::ReadPolicy,
    tick: Duration,
    last_role: Role,
}

impl Driver<'_> {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    async fn run(
        mut self,
        wal: &mut Wal<DmaDisk>,
        events: LocalReceiver<Event>,
    ) -> Result<(), String> {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            // Wait for an event or the next tick, whichever comes first.
            let wait = next_tick.saturating_duration_since(Instant::now());
            let ev = futures_lite::future::or(async { events.recv().await.map(Some) }, async {
                glommio::timer::sleep(wait).await;
                Some(None)
            })
            .await;
            match ev {
                None => return Ok(()),
                Some(Some(e)) => self.handle(e),
                Some(None) => {}
            }
            // Take whatever else is queued: one Ready for many requests.
            for _ in 0..1024 {
                match futures_lite::future::poll_once(events.recv()).await {
                    Some(Some(e)) => self.handle(e),
                    _ => break,
                }
            }
            if Instant::now() >= next_tick {
                let now = self.now();
                self.raft.tick(now);
                next_tick += self.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.tick;
                }
                self.expire();
            }
            self.drive(wal).await?;
        }
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Peer(m) => self.raft.step(m),
            Event::Client(call, reply) => self.client(call, reply),
        }
    }

    fn leader_hint(&self) -> serde_json::Value {
        let l = self.raft.status().leader;
        match self.addresses.get(&l) {
            Some(a) if l != 0 => {
                serde_json::json!({ "leader_id": l, "leader_address": a.to_string() })
            }
            _ => serde_json::json!({ "leader_id": null, "leader_address": null }),
        }
    }

    fn not_leader(&self, reply: &LocalSender<Reply>) {
        let hint = self.leader_hint();
        let _ = reply.try_send(Reply {
            status: 503,
            body: serde_json::json!({
                "error": "this node is not the leader; send the request to the leader (retry is safe: nothing was written)",
                "code": "not_leader",
                "leader_id": hint["leader_id"],
                "leader_address": hint["leader_address"],
            })
            .to_string(),
        });
    }

    fn client(&mut self, call: ApiCall, reply: LocalSender<Reply>) {
        let deadline = Instant::now() + self.request_timeout;
        match call {
            ApiCall::Put { key, value } => self.propose(
                Command::Put {
                    key: Bytes::from(key),
                    value: Bytes::from(value),
                },
                reply,
                deadline,
            ),
            ApiCall::Delete { key } => self.propose(
                Command::Delete {
                    key: Bytes::from(key),
                },
                reply,
                deadline,
            ),
            ApiCall::Get { key, consistency } => {
                let policy = consistency.unwrap_or(self.default_policy);
                let rid = self.next_read;
                self.next_read += 1;
                self.reads.insert(
                    rid,
                    ReadWait {
                        key,
                        reply,
                        deadline,
                    },
                );
                let now = self.now();
                self.raft.read(rid, policy, now);
            }
            ApiCall::Status => {
                let st = self.raft.status();
                let role = match st.role {
                    Role::Leader => "leader",
                    Role::Candidate | Role::PreCandidate => "candidate",
                    Role::Follower if st.membership.is_learner(self.id) => "learner",
                    Role::Follower => "follower",
                };
                let members: Vec<_> = st
                    .membership
                    .members()
                    .map(|m| {
                        serde_json::json!({
                            "id": m,
                            "address": self.addresses.get(&m).map(|a| a.to_string()),
                            "role": if st.membership.is_voter(m) { "voter" } else { "learner" },
                        })
                    })
                    .collect();
                let hint = self.leader_hint();
                let _ = reply.try_send(Reply::ok(serde_json::json!({
                    "node_id": self.id,
                    "role": role,
                    "term": st.term,
                    "leader_id": hint["leader_id"],
                    "leader_address": hint["leader_address"],
                    "commit_index": st.commit,
                    "applied_index": st.applied,
                    "members": members,
                })));
            }
        }
    }

    fn propose(&mut self, cmd: Command, reply: LocalSender<Reply>, deadline: Instant) {
        match self.raft.propose(vec![cmd.encode()]) {
            Ok((index, term)) => {
                self.writes.insert(
                    index,
                    Pending {
                        term,
                        reply,
                        deadline,
                    },
                );
            }
            Err(ProposeError::NotLeader { .. }) => self.not_leader(&reply),
            Err(e) => {
                let _ = reply.try_send(Reply::err(
                    503,
                    "unavailable",
                    format!("write refused, nothing was written ({e:?}); retry"),
                ));
            }
        }
    }

    /// Answers requests past their deadline: a write's outcome is then unknown.
    fn expire(&mut self) {
        let now = Instant::now();
        self.writes.retain(|_, p| {
            if p.deadline <= now {
                let _ = p.reply.try_send(Reply::err(
                    504,
                    "timeout",
                    "request_timeout_ms passed; the write may or may not be applied (outcome unknown)",
                ));
                false
            } else {
                true
            }
        });
        self.reads.retain(|_, r| {
            if r.deadline <= now {
                let _ = r.reply.try_send(Reply::err(
                    504,
                    "timeout",
                    "request_timeout_ms passed before the read could be served",
                ));
                false
            } else {
                true
            }
        });
    }

    async fn drive(&mut self, wal: &mut Wal<DmaDisk>) -> Result<(), String> {
        loop {
            while self.raft.has_ready() {
                let rd = self.raft.ready();
                if rd.must_persist() {
                    wal.persist(
                        rd.number,
                        rd.hard_state,
                        rd.reset,
                        rd.snapshot.as_ref().map(|s| (s.index, s.term)),
                        &rd.entries,
                    )
                    .await
                    .map_err(|e| format!("stopping: {e}"))?;
                }
                for m in rd.messages {
                    self.transport.send(m);
                }
                for e in &rd.committed {
                    let res = self.part.apply(e).map_err(|e| format!("apply: {e}"));
                    if let Some(p) = self.writes.remove(&e.index) {
                        let r = match (res, p.term == e.term) {
                            (Ok(Applied::Put { revision }), true) => {
                                Reply::ok(serde_json::json!({ "index": revision }))
                            }
                            (Ok(Applied::Deleted { .. }), true) => {
                                Reply::ok(serde_json::json!({ "index": e.index }))
                            }
                            (_, false) => Reply::err(
                                503,
                                "lost_leadership",
                                "leadership changed before the write committed; it was not applied, retry is safe",
                            ),
                            (Ok(Applied::Internal), true) | (Err(_), true) => {
                                Reply::err(500, "internal", "the entry was not a write")
                            }
                        };
                        let _ = p.reply.try_send(r);
                    }
                }
                if let Some(last) = rd.committed.last() {
                    self.raft.on_applied(last.index);
                }
                for r in rd.reads {
                    let Some(w) = self.reads.remove(&r.id) else {
                        continue;
                    };
                    let reply = match r.result {
                        Ok(_) => match self.part.get(w.key.as_bytes()) {
                            Some(v) => Reply::ok(serde_json::json!({
                                "key": w.key,
                                "value": String::from_utf8_lossy(&v.value),
                                "revision": v.revision,
                            })),
                            None => Reply::err(404, "not_found", format!("no key {:?}", w.key)),
                        },
                        Err(ReadError::NotLeader { .. }) => {
                            self.not_leader(&w.reply);
                            continue;
                        }
                        Err(ReadError::Backpressure) => {
                            Reply::err(503, "unavailable", "too many reads pending; retry")
                        }
                    };
                    let _ = w.reply.try_send(reply);
                }
                let role = self.raft.role();
                if role != self.last_role {
                    if role == Role::Leader {
                        tracing::warn!(
                            node = self.id,
                            term = self.raft.status().term,
                            "Became leader"
                        );
                    }
                    self.last_role = role;
                }
            }
            for n in wal.take_completed() {
                self.raft.on_persisted(n);
            }
            if self.raft.has_ready() {
                continue;
            }
            if wal.inflight() == 0 {
                return Ok(());
            }
            match wal
                .next_persisted()
                .await
                .map_err(|e| format!("stopping: {e}"))?
            {
                Some(n) => self.raft.on_persisted(n),
                None => return Ok(()),
            }
        }
    }
}

async fn serve_http(
    mut s: TcpStream,
    first: Vec<u8>,
    limits: HttpLimits,
    events: Rc<LocalSender<Event>>,
) {
    let mut buf = first;
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        match http::parse(&buf, &limits) {
            Parsed::Incomplete => match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            Parsed::Fatal(e) => {
                let _ = s.write_all(&e.reply(true)).await;
                return;
            }
            Parsed::Request {
                consumed,
                call,
                keep_alive,
            } => {
                buf.drain(..consumed);
                let out = match call {
                    Err(e) => e.reply(!keep_alive),
                    Ok(call) => {
                        let (tx, rx) = local_channel::new_bounded(1);
                        if events.send(Event::Client(call, tx)).await.is_err() {
                            return;
                        }
                        match rx.recv().await {
                            Some(r) => http::response(r.status, &r.body, !keep_alive),
                            None => HttpError {
                                status: 503,
                                code: "unavailable",
                                message: "node stopping".into(),
                            }
                            .reply(true),
                        }
                    }
                };
                if s.write_all(&out).await.is_err() || !keep_alive {
                    return;
                }
            }
        }
    }
}

/// Installs the text logger: `$LOG_LEVEL` (default warn), to stderr, each line with the
/// node id field.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
