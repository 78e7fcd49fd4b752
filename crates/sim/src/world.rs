//! One seeded simulation: real Raft cores on a simulated network, disks and clocks, with
//! clients, faults and invariant checks on every step.
//!
//! Owns simulated time (microseconds), the event queue and its loop, each node's disk and
//! state machine, message delivery, and the clients and their history. A node's state
//! machine is the real store (`ringkv_store::Store`) on 1 to 4 shards, drawn at each boot:
//! committed entries are decoded `Command`s handed to it in order (no-op and membership
//! entries as `Store::skip`), and it runs (its shards and sequencer stepped in an order
//! the node's seeded generator picks) whenever an answer, a read, a snapshot or a hash
//! check needs it, so it applies in batches of varying length; its snapshots are
//! `Store::snapshot()` bodies, restored with `Store::restore` on the shard count of the
//! node that installs them. What a run is configured with is in `options`, which faults it
//! suffers in `faults`, what the store clients ask in `workload`, and what it is checked
//! against in `invariants`; the loop calls them as events are handled.
//! Single-threaded and deterministic for a seed: the same seed replays the same run event
//! for event. Must not touch real clocks, files or sockets.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use bytes::Bytes;

use super::checker::OpKind;
use super::faults::Faults;
use super::invariants::{Checks, Violation};
use super::options::{Options, Params};
use super::workload::{Seen, StoreOp};
use ringkv_raft::{
    Body, Config, Entry, EntryKind, HardState, Index, Membership, Message, NodeId, Persistence,
    Raft, ReadPolicy, Ready, Restore, Role, SnapshotMeta, Term,
};
use ringkv_rng::Rng;
use ringkv_store::{Applied, Command, PutRequest, RangeRequest, Revision, Store};

/// Simulated microseconds.
pub(crate) type Micros = u64;

const TICK_US: Micros = 10_000;
const ELECTION_MIN_TICKS: u32 = 10;
const HEARTBEAT_TICKS: u32 = 2;
/// Bound on relative clock-rate error, in ppm (5%).
pub(crate) const DRIFT_PPM_MAX: u32 = 50_000;
/// Client operations time out (outcome unknown) after this long.
const OP_TIMEOUT_US: Micros = 1_000_000;
/// A node snapshots and compacts after applying this many entries since its last one.
const SNAPSHOT_EVERY_ENTRIES: u64 = 150;
const CLIENTS: usize = 8;
/// Shards a node's store is split into: drawn per node and boot from 1 to this.
const SHARDS_MAX: usize = 4;
/// A node's store is run to rest and hashed at every index that is a multiple of this (the
/// hashes are compared across nodes).
pub(crate) const STORE_HASH_EVERY: Index = 64;

/// Totals of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub sim_us: u64,
    pub ops: u64,
    pub ops_ok: u64,
    /// Of `ops`, the store workload's (workload.rs).
    pub store_ops: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub membership_changes: u64,
    pub transfers: u64,
    pub snapshots_installed: u64,
    pub elections_won: u64,
    pub messages: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.sim_us += o.sim_us;
        self.ops += o.ops;
        self.ops_ok += o.ops_ok;
        self.store_ops += o.store_ops;
        self.crashes += o.crashes;
        self.partitions += o.partitions;
        self.membership_changes += o.membership_changes;
        self.transfers += o.transfers;
        self.snapshots_installed += o.snapshots_installed;
        self.elections_won += o.elections_won;
        self.messages += o.messages;
    }
}

/// A snapshot as a node stores and sends it: the Raft metadata and `Store::snapshot()`'s
/// body (independent of the shard count).
type Snapshot = (SnapshotMeta, Bytes);

/// The store key of register key `k` (the keys the per-key linearizability checker sees).
pub(crate) fn register_key(k: u64) -> Bytes {
    Bytes::from(format!("r/{k}"))
}

/// A register value as stored: the unique number, little-endian.
pub(crate) fn value_bytes(v: u64) -> Bytes {
    Bytes::copy_from_slice(&v.to_le_bytes())
}

/// The number a stored value holds; `u64::MAX` (never written) for anything else.
pub(crate) fn value_of(b: &[u8]) -> u64 {
    b.try_into().map_or(u64::MAX, u64::from_le_bytes)
}

/// A register key's value as a node's store holds it now (the store is at rest between
/// events).
fn read_register(store: &Store, key: &Bytes) -> Option<u64> {
    let r = RangeRequest {
        key: key.clone(),
        ..Default::default()
    };
    let (_, resp) = store.range(&r).expect("a read at the current revision");
    resp.kvs.first().map(|kv| value_of(&kv.value))
}

/// What a node has on its simulated disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

impl Disk {
    fn write(&mut self, job: &PersistJob) {
        if job.reset {
            self.entries.clear();
            self.snapshot = None;
        }
        if let Some(hs) = job.hard_state {
            self.hard_state = hs;
        }
        if let Some(snap) = &job.snapshot {
            self.entries.retain(|e| e.index > snap.0.index);
            if self
                .entries
                .first()
                .is_some_and(|e| e.index != snap.0.index + 1)
            {
                self.entries.clear();
            }
            self.snapshot = Some(snap.clone());
        }
        let base = self.snapshot.as_ref().map_or(0, |s| s.0.index);
        // Entries a snapshot taken meanwhile already covers are not written again.
        let fresh: Vec<&Entry> = job.entries.iter().filter(|e| e.index > base).collect();
        if let Some(first) = fresh.first() {
            self.entries
                .truncate(first.index.saturating_sub(base + 1) as usize);
            let last = self.entries.last().map_or(base, |e| e.index);
            assert_eq!(
                last + 1,
                first.index,
                "disk: entries do not continue the log (snapshot {base}, stored up to {last}, \
                 job {:?} with entries {}..={}, reset {})",
                job.number,
                job.entries.first().map_or(0, |e| e.index),
                job.entries.last().map_or(0, |e| e.index),
                job.reset
            );
            self.entries.extend(fresh.into_iter().cloned());
        }
    }
}

#[derive(Debug)]
struct PersistJob {
    /// The Ready this persists; `None` for a snapshot the node took itself.
    number: Option<u64>,
    hard_state: Option<HardState>,
    reset: bool,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

pub(crate) struct Node {
    pub(crate) raft: Raft,
    pub(crate) up: bool,
    /// Bumped on every restart; events of an older incarnation are ignored.
    incarnation: u64,
    pub(crate) disk: Disk,
    /// Writes handed to the disk, made durable in order.
    disk_queue: VecDeque<PersistJob>,
    /// How many jobs at the front of `disk_queue` the flush in progress covers (0: idle).
    /// A flush takes everything queued when it starts: one write and one fdatasync for
    /// many Readies, as the WAL will do.
    flushing: usize,
    /// The state machine: the real store, on `store.shard_count()` shards.
    pub(crate) store: Store,
    /// Picks which of the store's shards or its sequencer moves next (seeded at boot).
    store_rng: Rng,
    /// The store revision after `applied_index` (as checked entry by entry).
    pub(crate) revision: Revision,
    /// Entries handed to the store and not yet run and checked: (index, a command?).
    unsettled: Vec<(Index, bool)>,
    pub(crate) applied_index: Index,
    applied_since_snapshot: u64,
    /// Relative clock rate error of this node, ppm.
    drift_ppm: i64,
    /// Local ticks taken so far (drives the next tick's time).
    ticks: u64,
    /// Snapshot received from a leader, waiting for the core to install it.
    received_snapshot: Option<Snapshot>,
    /// Writes proposed here: index -> (term, client op).
    pending_writes: HashMap<Index, (Term, usize)>,
    /// Reads issued here: read id -> client op.
    pending_reads: HashMap<u64, usize>,
    pub(crate) initial: Membership,
    /// Decommissioned after its removal committed.
    pub(crate) removed: bool,
    /// Role and term at the last step (for invariants.rs: who has just become leader).
    pub(crate) last_role: Role,
    pub(crate) last_term: Term,
}

impl Node {
    /// Local clock reading at real time `t` (drifting).
    fn local_ns(&self, t: Micros) -> u64 {
        let t_ns = t as i128 * 1000;
        (t_ns + t_ns * self.drift_ppm as i128 / 1_000_000) as u64
    }

    /// Real time of this node's next tick.
    fn next_tick_at(&self) -> Micros {
        let local_ns = (self.ticks + 1) as i128 * TICK_US as i128 * 1000;
        let real_ns = local_ns * 1_000_000 / (1_000_000 + self.drift_ppm as i128);
        (real_ns / 1000) as Micros + 1
    }

    /// A crash (faults.rs): the node stops, and writes handed to its disk but not yet
    /// durable are lost.
    pub(crate) fn power_off(&mut self) {
        self.up = false;
        self.disk_queue.clear();
        self.flushing = 0;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    Idle,
    Waiting {
        op: usize,
        node: NodeId,
        deadline: Micros,
    },
}

pub(crate) struct Client {
    state: ClientState,
    /// Node this client believes leads.
    leader_hint: NodeId,
    /// What its store operations' answers told it (workload.rs).
    pub(crate) seen: Seen,
}

/// A client operation of the history: a register operation (`key`, `kind`), or a store
/// operation (`store`; `key` and `kind` then mean nothing).
#[derive(Clone, Debug)]
pub(crate) struct HistOp {
    pub(crate) key: u64,
    pub(crate) kind: OpKind,
    pub(crate) policy: Option<ReadPolicy>,
    pub(crate) call: Micros,
    pub(crate) ret: Option<Micros>,
    /// Definitely not executed (refused or superseded): dropped from the history.
    pub(crate) failed: bool,
    /// For writes: (index, term) once acknowledged.
    pub(crate) acked_at: Option<(Index, Term)>,
    /// For acknowledged writes: the store's answer.
    pub(crate) applied: Option<Applied>,
    /// A store operation (workload.rs): what it asked and, for a read, what it saw.
    pub(crate) store: Option<Box<StoreOp>>,
}

impl HistOp {
    pub(crate) fn new(key: u64, kind: OpKind, policy: Option<ReadPolicy>, call: Micros) -> Self {
        HistOp {
            key,
            kind,
            policy,
            call,
            ret: None,
            failed: false,
            acked_at: None,
            applied: None,
            store: None,
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Event {
    Tick(NodeId, u64),
    Deliver(Box<MessageBox>),
    DiskDone(NodeId, u64),
    Client(usize),
    ClientTimeout(usize, usize),
    Fault,
    Heal,
    Restart(NodeId),
    /// The transport gave up on a snapshot transfer (from, to).
    SnapshotFailed(NodeId, NodeId),
}

/// Ordering wrapper so messages can sit in the heap (ordered by sequence only).
#[derive(Debug)]
pub(crate) struct MessageBox {
    msg: Message,
    seq: u64,
}
impl PartialEq for MessageBox {
    fn eq(&self, o: &Self) -> bool {
        self.seq == o.seq
    }
}
impl Eq for MessageBox {}
impl PartialOrd for MessageBox {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for MessageBox {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.seq.cmp(&o.seq)
    }
}

pub struct World {
    pub(crate) seed: u64,
    pub(crate) opts: Options,
    pub(crate) params: Params,
    pub(crate) rng: Rng,
    pub(crate) now: Micros,
    seq: u64,
    events: BinaryHeap<Reverse<(Micros, u64, Event)>>,
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) clients: Vec<Client>,
    pub(crate) history: Vec<HistOp>,
    pub(crate) next_value: u64,
    /// The store keys of the register keys, by number.
    register_keys: Vec<Bytes>,
    next_read_id: u64,
    /// What the invariants remember (invariants.rs).
    pub(crate) checks: Checks,
    /// What the nemesis has broken now (faults.rs).
    pub(crate) faults: Faults,
    pub stats: Stats,
    pub trace: Vec<String>,
}

impl World {
    pub fn new(seed: u64, opts: Options) -> Self {
        let mut rng = Rng::new(seed);
        let faults = Faults::new(&mut rng, opts.nodes);
        let mut w = World {
            seed,
            params: opts.profile.params(),
            opts: opts.clone(),
            rng,
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            nodes: BTreeMap::new(),
            clients: (0..CLIENTS)
                .map(|_| Client {
                    state: ClientState::Idle,
                    leader_hint: 0,
                    seen: Seen::default(),
                })
                .collect(),
            history: Vec::new(),
            next_value: 1,
            register_keys: (0..opts.profile.params().keys).map(register_key).collect(),
            next_read_id: 1,
            checks: Checks::default(),
            faults,
            stats: Stats::default(),
            trace: Vec::new(),
        };
        let initial = Membership::with_voters(1..=opts.nodes as NodeId);
        for id in 1..=opts.nodes as NodeId {
            w.boot(id, initial.clone(), Disk::default());
        }
        for c in 0..CLIENTS {
            let at = w.rng.range(0, 200_000);
            w.schedule(at, Event::Client(c));
        }
        w.schedule_first_fault();
        w
    }

    fn config(&mut self, id: NodeId) -> Config {
        let mut c = Config::new(id);
        c.election_timeout_min_ticks = ELECTION_MIN_TICKS;
        c.election_timeout_max_ticks = ELECTION_MIN_TICKS * 2;
        c.heartbeat_interval_ticks = HEARTBEAT_TICKS;
        c.tick_interval_ns = TICK_US * 1000;
        c.clock_drift_ppm_max = DRIFT_PPM_MAX;
        // As long as the rules allow: election_timeout_min less one tick (90 ms), the binding
        // rule here; the drift bound is applied at expiry (lease x (1 - drift)).
        // With clocks drifting at the bound this is exactly safe, so ignoring the drift
        // (a negative control) is not.
        let bound = (ELECTION_MIN_TICKS as u64 - 1) * TICK_US * 1000;
        c.lease_duration_ns = bound - 1;
        c.append_entries_max = self.params.append_entries_max;
        c.inflight_appends_max = self.params.inflight_appends_max;
        c.persistence = self.opts.persistence;
        c.seed = self.seed ^ id.wrapping_mul(0x9E37_79B9);
        if let Some(control) = self.opts.control {
            control.apply(&mut c.controls);
        }
        c
    }

    pub(crate) fn boot(&mut self, id: NodeId, initial: Membership, disk: Disk) {
        let cfg = self.config(id);
        let restore = Restore {
            hard_state: disk.hard_state,
            snapshot: disk.snapshot.as_ref().map(|s| s.0.clone()),
            entries: disk.entries.clone(),
            initial_membership: initial.clone(),
        };
        let raft = Raft::new(cfg.clone(), restore).expect("valid simulator config");
        // Each boot its own shard count (snapshots do not depend on it) and stepping order.
        let shards = 1 + self.rng.index(SHARDS_MAX);
        let store_rng = Rng::new(self.rng.next_u64());
        let (store, applied_index) = match &disk.snapshot {
            Some((meta, data)) => (self.restored_store(data, shards), meta.index),
            None => (self.empty_store(shards), 0),
        };
        let revision = store.revision();
        self.log(|| format!("node {id} boots on {shards} store shards at index {applied_index}"));
        let drift_ppm = self.clock_drift();
        let incarnation = self.nodes.get(&id).map_or(0, |n| n.incarnation + 1);
        let node = Node {
            raft,
            up: true,
            incarnation,
            disk,
            disk_queue: VecDeque::new(),
            flushing: 0,
            store,
            store_rng,
            revision,
            unsettled: Vec::new(),
            applied_index,
            applied_since_snapshot: 0,
            drift_ppm,
            ticks: 0,
            received_snapshot: None,
            pending_writes: HashMap::new(),
            pending_reads: HashMap::new(),
            initial,
            removed: false,
            last_role: Role::Follower,
            last_term: 0,
        };
        // Ticks continue from the node's local time now.
        let mut node = node;
        node.ticks = node.local_ns(self.now) / (TICK_US * 1000);
        let at = node.next_tick_at();
        self.nodes.insert(id, node);
        self.schedule(at, Event::Tick(id, incarnation));
    }

    fn empty_store(&self, shards: usize) -> Store {
        self.with_controls(Store::new(shards))
    }

    /// A store of `shards` shards from a snapshot body one of the nodes took.
    fn restored_store(&self, data: &[u8], shards: usize) -> Store {
        let store = Store::restore(data, shards)
            .unwrap_or_else(|e| panic!("sim: a node's own store snapshot does not restore: {e}"));
        self.with_controls(store)
    }

    /// The store under the run's negative control, if it is one of the store's.
    fn with_controls(&self, mut store: Store) -> Store {
        let c = self
            .opts
            .control
            .map(|c| c.store_controls())
            .unwrap_or_default();
        if c != Default::default() {
            store.set_controls(c);
        }
        store
    }

    pub(crate) fn schedule(&mut self, at: Micros, e: Event) {
        self.seq += 1;
        self.events.push(Reverse((at.max(self.now), self.seq, e)));
    }

    pub(crate) fn log(&mut self, s: impl FnOnce() -> String) {
        if self.opts.trace {
            let line = format!("{:>10.6} {}", self.now as f64 / 1e6, s());
            self.trace.push(line);
        }
    }

    /// The live leader of the highest term, if any: what the nemesis aims at, and what the
    /// final checks hold the others to.
    pub(crate) fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.up && n.raft.role() == Role::Leader)
            .max_by_key(|(_, n)| n.raft.term())
            .map(|(&id, _)| id)
    }

    /// Runs the seed to the end; returns the first violation found.
    pub fn run(&mut self) -> Result<(), Violation> {
        let fault_end = self.opts.sim_secs * 1_000_000;
        let end = fault_end + 5_000_000;
        while let Some(Reverse((at, _, ev))) = self.events.pop() {
            if at > end {
                break;
            }
            self.now = at;
            if self.faults.on() && self.now >= fault_end {
                self.stop_faults();
            }
            self.handle(ev)?;
            self.drain_readies()?;
            self.after_step()?;
        }
        self.stats.sim_us = self.now;
        self.final_checks()
    }

    fn handle(&mut self, ev: Event) -> Result<(), Violation> {
        match ev {
            Event::Tick(id, inc) => {
                let now = self.now;
                let Some(n) = self
                    .nodes
                    .get_mut(&id)
                    .filter(|n| n.up && n.incarnation == inc)
                else {
                    return Ok(());
                };
                n.ticks += 1;
                let local = n.local_ns(now);
                n.raft.tick(local);
                let at = n.next_tick_at();
                self.schedule(at, Event::Tick(id, inc));
            }
            Event::Deliver(b) => self.deliver(b.msg),
            Event::DiskDone(id, inc) => self.disk_done(id, inc),
            Event::Client(c) => self.client_step(c),
            Event::ClientTimeout(c, op) => {
                if let ClientState::Waiting { op: o, .. } = self.clients[c].state {
                    if o == op {
                        self.finish(c, op, None, true);
                        self.log(|| format!("client {c} op {op} timed out"));
                    }
                }
            }
            Event::Fault => self.fault(),
            Event::Heal => self.heal(),
            Event::Restart(id) => self.restart(id),
            Event::SnapshotFailed(from, to) => {
                if let Some(n) = self.nodes.get_mut(&from).filter(|n| n.up) {
                    n.raft.report_snapshot(to, false);
                }
            }
        }
        Ok(())
    }

    // ----- network -----

    fn send(&mut self, m: Message) {
        self.stats.messages += 1;
        if self.drops(&m) {
            self.lost(&m);
            return;
        }
        let copies = if self.duplicate() { 2 } else { 1 };
        for _ in 0..copies {
            // Mostly fast, sometimes slow (faults.rs): reorders messages on the same link.
            let delay = self
                .slow_link()
                .unwrap_or_else(|| self.rng.range(100, 2_000));
            let seq = self.seq;
            self.schedule(
                self.now + delay,
                Event::Deliver(Box::new(MessageBox {
                    msg: m.clone(),
                    seq,
                })),
            );
        }
    }

    /// A snapshot transfer that never arrives is reported failed by the transport after a
    /// while (a real one notices a broken stream or a time-out).
    fn lost(&mut self, m: &Message) {
        if matches!(m.body, Body::Snapshot { .. }) {
            let at = self.now + 50_000;
            self.schedule(at, Event::SnapshotFailed(m.from, m.to));
        }
    }

    fn deliver(&mut self, m: Message) {
        if self.faults.is_cut(m.from, m.to) || !self.nodes.get(&m.to).is_some_and(|n| n.up) {
            self.lost(&m);
            return;
        }
        if self.opts.trace {
            let brief = match &m.body {
                Body::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                } => format!(
                    "Append prev={prev_index}/{prev_term} n={} commit={commit}",
                    entries.len()
                ),
                b => format!("{b:?}"),
            };
            let line = format!(
                "{:>10.6}   {}->{} t{} {brief}",
                self.now as f64 / 1e6,
                m.from,
                m.to,
                m.term
            );
            self.trace.push(line);
        }
        let Some(_) = self.nodes.get(&m.to).filter(|n| n.up) else {
            return;
        };
        let from = m.from;
        let to = m.to;
        let snapshot = if let Body::Snapshot { meta } = &m.body {
            // The transport streams the sender's stored snapshot; if the sender has since
            // taken a newer one, this transfer fails.
            let data = self
                .nodes
                .get(&from)
                .and_then(|s| s.disk.snapshot.clone())
                .filter(|(sm, _)| sm == meta);
            match data {
                Some(d) => Some(d),
                None => {
                    if let Some(s) = self.nodes.get_mut(&from).filter(|s| s.up) {
                        s.raft.report_snapshot(to, false);
                    }
                    return;
                }
            }
        } else {
            None
        };
        let is_snapshot = snapshot.is_some();
        let n = self.nodes.get_mut(&to).expect("node");
        if let Some(s) = snapshot {
            n.received_snapshot = Some(s);
        }
        n.raft.step(m);
        if is_snapshot {
            if let Some(s) = self.nodes.get_mut(&from).filter(|s| s.up) {
                s.raft.report_snapshot(to, true);
            }
        }
    }

    // ----- readies, disk, apply -----

    fn drain_readies(&mut self) -> Result<(), Violation> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        loop {
            let mut any = false;
            for &id in &ids {
                if self
                    .nodes
                    .get(&id)
                    .is_some_and(|n| n.up && n.raft.has_ready())
                {
                    any = true;
                    let rd = self.nodes.get_mut(&id).expect("node").raft.ready();
                    self.handle_ready(id, rd)?;
                }
            }
            if !any {
                return Ok(());
            }
        }
    }

    fn handle_ready(&mut self, id: NodeId, mut rd: Ready) -> Result<(), Violation> {
        self.check_log_matching(&rd.entries)?;
        let msgs = std::mem::take(&mut rd.messages);
        self.apply(id, &rd)?;
        if rd.must_persist() {
            let n = self.nodes.get_mut(&id).expect("node");
            let snapshot = rd.snapshot.as_ref().map(|meta| {
                let (m, kv) = n
                    .received_snapshot
                    .clone()
                    .expect("snapshot received before install");
                assert_eq!(&m, meta);
                (m, kv)
            });
            let job = PersistJob {
                number: Some(rd.number),
                hard_state: rd.hard_state,
                reset: rd.reset,
                snapshot,
                entries: std::mem::take(&mut rd.entries),
            };
            self.nodes
                .get_mut(&id)
                .expect("node")
                .disk_queue
                .push_back(job);
            self.start_flush(id);
        }
        for m in msgs {
            self.send(m);
        }
        for r in std::mem::take(&mut rd.reads) {
            self.read_done(id, r.id, r.result.is_ok())?;
        }
        Ok(())
    }

    /// Starts a flush of everything queued, if the disk is idle.
    fn start_flush(&mut self, id: NodeId) {
        let n = &self.nodes[&id];
        if n.flushing > 0 || n.disk_queue.is_empty() {
            return;
        }
        // DiskFirst: a write + fdatasync; MemFirst: the flush interval.
        let latency = match self.opts.persistence {
            // Now and then an fsync stalls (faults.rs).
            Persistence::DiskFirst => self.disk_stall().unwrap_or_else(|| self.rng.range(50, 600)),
            Persistence::MemFirst => self.rng.range(2_000, 20_000),
        };
        let n = self.nodes.get_mut(&id).expect("node");
        n.flushing = n.disk_queue.len();
        let inc = n.incarnation;
        self.schedule(self.now + latency, Event::DiskDone(id, inc));
    }

    fn disk_done(&mut self, id: NodeId, inc: u64) {
        let Some(n) = self
            .nodes
            .get_mut(&id)
            .filter(|n| n.up && n.incarnation == inc)
        else {
            return;
        };
        let mut last = None;
        for _ in 0..std::mem::take(&mut n.flushing) {
            let job = n.disk_queue.pop_front().expect("a queued persist job");
            n.disk.write(&job);
            last = job.number.or(last);
        }
        if let Some(number) = last {
            n.raft.on_persisted(number);
        }
        self.start_flush(id);
    }

    fn apply(&mut self, id: NodeId, rd: &Ready) -> Result<(), Violation> {
        if rd.reset {
            self.settle_store(id, false)?;
            let shards = self.nodes[&id].store.shard_count();
            let store = self.empty_store(shards);
            let n = self.nodes.get_mut(&id).expect("node");
            n.revision = store.revision();
            n.store = store;
            n.applied_index = 0;
        }
        if let Some(meta) = &rd.snapshot {
            self.settle_store(id, false)?;
            let n = &self.nodes[&id];
            let (m, data) = n.received_snapshot.clone().expect("snapshot received");
            assert_eq!(&m, meta);
            let store = self.restored_store(&data, n.store.shard_count());
            let n = self.nodes.get_mut(&id).expect("node");
            n.revision = store.revision();
            n.store = store;
            n.applied_index = meta.index;
            n.applied_since_snapshot = 0;
            n.raft.on_applied(meta.index);
            self.stats.snapshots_installed += 1;
        }
        let mut acks = Vec::new();
        let mut answers: BTreeMap<Index, Applied> = BTreeMap::new();
        for e in &rd.committed {
            self.check_apply(id, e)?;
            let n = self.nodes.get_mut(&id).expect("node");
            if n.store.index() + 1 != e.index {
                let at = n.store.index();
                return Err(self.fail(format!(
                    "node {id}: its store is at index {at} applying entry {}",
                    e.index
                )));
            }
            n.applied_index = e.index;
            n.applied_since_snapshot += 1;
            let command = e.kind == EntryKind::Normal;
            if command {
                match Command::decode(&e.data) {
                    Ok(cmd) => n.store.submit(cmd),
                    Err(err) => {
                        return Err(self.fail(format!(
                            "node {id}: entry {} is not a store command: {err}",
                            e.index
                        )));
                    }
                }
            } else {
                // No-op and membership entries: no revision, only the watermark moves.
                n.store.skip()
            };
            n.unsettled.push((e.index, command));
            if let Some((term, op)) = n.pending_writes.remove(&e.index) {
                acks.push((op, term == e.term, e.index, e.term));
            }
            if e.index % STORE_HASH_EVERY == 0 {
                answers.extend(self.settle_store(id, true)?);
            }
        }
        // Answers someone waits for are needed now; the rest may wait for a read, a
        // snapshot or the next hash, so that the store applies longer batches.
        if !acks.is_empty() {
            answers.extend(self.settle_store(id, false)?);
        }
        let n = self.nodes.get_mut(&id).expect("node");
        if let Some(last) = rd.committed.last() {
            n.raft.on_applied(last.index);
        }
        for (op, ok, index, term) in acks {
            let applied = answers.remove(&index);
            self.write_done(op, ok, index, term, applied);
        }
        // Snapshot and compact now and then (the driver's policy).
        let n = &self.nodes[&id];
        if n.applied_since_snapshot >= SNAPSHOT_EVERY_ENTRIES && n.raft.applied() == n.applied_index
        {
            self.settle_store(id, false)?;
            let n = self.nodes.get_mut(&id).expect("node");
            let meta = n.raft.compact(n.applied_index);
            n.applied_since_snapshot = 0;
            // Taken synchronously with the state it describes (the store run to rest just
            // above); written at once, in order with the Readies before it (a snapshot
            // file, then the WAL is compacted behind it).
            let job = PersistJob {
                number: None,
                hard_state: None,
                reset: false,
                snapshot: Some((meta, Bytes::from(n.store.snapshot()))),
                entries: Vec::new(),
            };
            n.disk_queue.push_back(job);
            self.start_flush(id);
        }
        Ok(())
    }

    /// Runs node `id`'s store until everything handed to it is applied and numbered, its
    /// shards and sequencer moving in an order its seeded generator picks; then checks the
    /// entries settled (invariants.rs) and returns the answers of the commands among them.
    /// With `hash`, the store hash is compared with other nodes' at the same index.
    pub(crate) fn settle_store(
        &mut self,
        id: NodeId,
        hash: bool,
    ) -> Result<Vec<(Index, Applied)>, Violation> {
        let n = self.nodes.get_mut(&id).expect("node");
        if n.unsettled.is_empty() {
            return Ok(Vec::new());
        }
        let Node {
            store, store_rng, ..
        } = n;
        // Seeded picks until a round of them moves nothing, then the rest in a fixed order
        // (`Store::run` with a shorter idle stretch).
        let actors = store.shard_count() + 1;
        let mut idle = 0;
        while idle < actors {
            if store.step(store_rng.index(actors)) {
                idle = 0;
            } else {
                idle += 1;
            }
        }
        store.run_in_order();
        let mut entries = Vec::with_capacity(n.unsettled.len());
        for (i, command) in std::mem::take(&mut n.unsettled) {
            let applied = if command {
                match n.store.take_answer(i) {
                    Some(a) => Some(a),
                    None => {
                        return Err(self.fail(format!("node {id}: entry {i} has no answer")));
                    }
                }
            } else {
                None
            };
            entries.push((i, applied));
        }
        let prev = self.nodes[&id].revision;
        let revision = self.check_store_entries(id, prev, &entries)?;
        self.nodes.get_mut(&id).expect("node").revision = revision;
        if hash {
            self.check_store_hash(id)?;
        }
        Ok(entries
            .into_iter()
            .filter_map(|(i, a)| a.map(|a| (i, a)))
            .collect())
    }

    // ----- clients -----

    fn client_step(&mut self, c: usize) {
        if !self.faults.on() && self.now > self.opts.sim_secs * 1_000_000 + 4_000_000 {
            return; // settle phase over: no new operations
        }
        let up: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.up && !n.removed)
            .map(|(&id, _)| id)
            .collect();
        if up.is_empty() {
            let at = self.now + 50_000;
            self.schedule(at, Event::Client(c));
            return;
        }
        let sticky = self.params.sticky_readers && c < CLIENTS / 2;
        let hint = self.clients[c].leader_hint;
        let node = if sticky {
            up[c % up.len()] // a reader that stays on its node, wherever the leader is
        } else if up.contains(&hint) && !self.rng.chance(100) {
            hint
        } else {
            up[self.rng.below(up.len() as u64) as usize]
        };
        self.stats.ops += 1;
        // The store workload (workload.rs) takes its share; a reader that stays on its
        // node reads ranges.
        if self.rng.chance(self.params.store_ops_per_mille) {
            if sticky {
                let policy = if self.rng.chance(500) {
                    ReadPolicy::Linearizable
                } else {
                    ReadPolicy::Lease
                };
                self.store_read(c, node, policy);
            } else {
                self.store_op(c, node);
            }
            return;
        }
        let key = self.rng.below(self.params.keys);
        let op_index = self.history.len();
        let roll = if sticky {
            self.rng.range(50, 89) // linearizable or lease reads only
        } else {
            self.rng.below(100)
        };
        if roll < 50 {
            let value = self.next_value;
            self.next_value += 1;
            self.checks.proposed(key, value);
            self.history
                .push(HistOp::new(key, OpKind::Write(Some(value)), None, self.now));
            let put = Command::Put(PutRequest {
                key: self.register_keys[key as usize].clone(),
                value: value_bytes(value),
                // Now and then the previous value too (checked against the reference).
                prev_kv: value % 4 == 0,
                ..Default::default()
            });
            self.propose(c, node, op_index, put.encode());
        } else {
            let policy = match roll {
                50..=69 => ReadPolicy::Linearizable,
                70..=89 => ReadPolicy::Lease,
                _ => ReadPolicy::Eventual,
            };
            self.history
                .push(HistOp::new(key, OpKind::Read(None), Some(policy), self.now));
            self.read(c, node, op_index, policy);
        }
    }

    /// Client `c` proposes the write `op` of the history at `node`.
    pub(crate) fn propose(&mut self, c: usize, node: NodeId, op: usize, payload: Bytes) {
        let n = self.nodes.get_mut(&node).expect("node");
        match n.raft.propose(vec![payload]) {
            Ok((index, term)) => {
                n.pending_writes.insert(index, (term, op));
                self.wait(c, op, node);
            }
            Err(ringkv_raft::ProposeError::NotLeader { leader }) => {
                self.clients[c].leader_hint = leader;
                self.finish(c, op, None, false);
            }
            Err(_) => self.finish(c, op, None, false),
        }
    }

    /// Client `c` asks `node` for the read `op` of the history under `policy` (served
    /// from the node's store once the core says it may be: `read_done`).
    pub(crate) fn read(&mut self, c: usize, node: NodeId, op: usize, policy: ReadPolicy) {
        let id = self.next_read_id;
        self.next_read_id += 1;
        let now = self.now;
        let n = self.nodes.get_mut(&node).expect("node");
        let local = n.local_ns(now);
        n.pending_reads.insert(id, op);
        n.raft.read(id, policy, local);
        if n.raft.role() != Role::Leader && policy != ReadPolicy::Eventual {
            self.clients[c].leader_hint = n.raft.leader();
        }
        self.wait(c, op, node);
    }

    fn wait(&mut self, c: usize, op: usize, node: NodeId) {
        let deadline = self.now + OP_TIMEOUT_US;
        self.clients[c].state = ClientState::Waiting { op, node, deadline };
        self.schedule(deadline, Event::ClientTimeout(c, op));
    }

    /// Ends a client's operation: `ret` known or not, `failed` = definitely not executed.
    fn finish(&mut self, c: usize, op: usize, ret: Option<Micros>, timed_out: bool) {
        let h = &mut self.history[op];
        h.ret = ret;
        h.failed = ret.is_none() && !timed_out;
        if ret.is_some() {
            self.stats.ops_ok += 1;
        }
        self.clients[c].state = ClientState::Idle;
        let think = self.rng.range(0, 30_000);
        self.schedule(self.now + think, Event::Client(c));
    }

    fn client_of(&self, op: usize) -> Option<usize> {
        self.clients
            .iter()
            .position(|cl| matches!(cl.state, ClientState::Waiting { op: o, .. } if o == op))
    }

    fn write_done(
        &mut self,
        op: usize,
        ok: bool,
        index: Index,
        term: Term,
        applied: Option<Applied>,
    ) {
        let Some(c) = self.client_of(op) else { return };
        if ok {
            self.history[op].acked_at = Some((index, term));
            if let (Some(store_op), Some(a)) = (&self.history[op].store, &applied) {
                self.clients[c].seen.learn_write(store_op, a);
            }
            self.history[op].applied = applied;
            let now = self.now;
            self.finish(c, op, Some(now), false);
        } else {
            // Another entry took its index: it will never be applied.
            self.finish(c, op, None, false);
        }
    }

    fn read_done(&mut self, node: NodeId, id: u64, ok: bool) -> Result<(), Violation> {
        let n = self.nodes.get_mut(&node).expect("node");
        let Some(op) = n.pending_reads.remove(&id) else {
            return Ok(());
        };
        let Some(c) = self.client_of(op) else {
            return Ok(());
        };
        if ok {
            self.settle_store(node, false)?;
        }
        if ok && self.history[op].store.is_some() {
            let n = &self.nodes[&node];
            let store_op = self.history[op].store.as_mut().expect("a store op");
            store_op.serve(&n.store);
            self.clients[c].seen.learn_read(store_op);
            let now = self.now;
            self.finish(c, op, Some(now), false);
        } else if ok {
            let key = self.history[op].key;
            let value = read_register(&self.nodes[&node].store, &self.register_keys[key as usize]);
            self.history[op].kind = OpKind::Read(value);
            let now = self.now;
            self.finish(c, op, Some(now), false);
        } else {
            self.finish(c, op, None, false);
        }
        Ok(())
    }

    // ----- after each step -----

    /// After every event, node by node in id order: the node's invariants (invariants.rs),
    /// then, once it has applied its own removal, it is stopped. One pass, so the trace
    /// keeps its order.
    fn after_step(&mut self) -> Result<(), Violation> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if !self.nodes[&id].up {
                continue;
            }
            self.check_node(id)?;
            // A decommissioned node: once its removal is applied, stop it.
            let n = self.nodes.get_mut(&id).expect("node");
            let removed =
                !n.raft.membership().is_member(id) && n.raft.membership().removed.contains(&id);
            if removed && n.raft.commit() >= n.raft.last_index() && !n.removed {
                n.removed = true;
                n.up = false;
                self.log(|| format!("node {id} removed and stopped"));
            }
        }
        Ok(())
    }
}
