//! An in-memory, deterministic driver for the Raft core: nodes, a message queue, storage
//! that persists instantly or on demand, and a state machine that records what it applied.
//!
//! Owns nothing of the real server. Used by the scenario and paper tests, `make bench-raft`
//! and the simulator. Single-threaded and pure like the core: no clock, no I/O.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use ringkv_raft::{
    Body, Config, Entry, EntryKind, HardState, Index, Membership, Message, NodeId, Raft,
    ReadOutcome, Ready, Restore, SnapshotMeta, Term,
};

/// What a node has on "disk".
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    pub hard_state: HardState,
    pub snapshot: Option<(SnapshotMeta, Vec<Bytes>)>,
    /// Persisted entries after the snapshot.
    pub entries: Vec<Entry>,
}

impl MemStorage {
    fn persist(&mut self, rd: &Ready, received: &Option<(SnapshotMeta, Vec<Bytes>)>) {
        if rd.reset {
            *self = MemStorage {
                hard_state: self.hard_state,
                ..MemStorage::default()
            };
        }
        if let Some(hs) = rd.hard_state {
            self.hard_state = hs;
        }
        if let Some(meta) = &rd.snapshot {
            let (m, data) = received.clone().expect("installed snapshot was received");
            assert_eq!(&m, meta, "installed snapshot differs from the one received");
            self.entries.retain(|e| e.index > meta.index);
            if self
                .entries
                .first()
                .is_some_and(|e| e.index != meta.index + 1)
            {
                self.entries.clear();
            }
            self.snapshot = Some((m, data));
        }
        if let Some(first) = rd.entries.first() {
            let base = self.snapshot.as_ref().map_or(0, |s| s.0.index);
            // Stored entries are contiguous from base + 1: cut the replaced suffix by position.
            self.entries
                .truncate(first.index.saturating_sub(base + 1) as usize);
            assert_eq!(
                self.entries.last().map_or(base, |e| e.index) + 1,
                first.index,
                "entries do not continue the stored log"
            );
            self.entries.extend(rd.entries.iter().cloned());
        }
    }

    fn restore(&self, initial: &Membership) -> Restore {
        Restore {
            hard_state: self.hard_state,
            snapshot: self.snapshot.as_ref().map(|s| s.0.clone()),
            entries: self.entries.clone(),
            initial_membership: initial.clone(),
        }
    }
}

/// One simulated node.
pub struct Node {
    pub raft: Raft,
    pub storage: MemStorage,
    /// Payloads of applied `Normal` entries, in order, with their indexes.
    pub applied: Vec<(Index, Bytes)>,
    /// (index, term) of every entry applied one by one (not those covered by a snapshot).
    pub applied_terms: Vec<(Index, Term)>,
    pub applied_index: Index,
    /// Readies whose persistence is pending (manual mode).
    pub unpersisted: VecDeque<Ready>,
    /// Persist every Ready as soon as it is produced.
    pub auto_persist: bool,
    pub reads: Vec<ReadOutcome>,
    /// The last snapshot received over the "network", waiting for the core to install it.
    received_snapshot: Option<(SnapshotMeta, Vec<Bytes>)>,
    pub up: bool,
    cfg: Config,
    initial: Membership,
}

impl Node {
    fn apply(&mut self, rd: &Ready) {
        if rd.reset {
            self.applied.clear();
            self.applied_index = 0;
        }
        if let Some(meta) = &rd.snapshot {
            let (_, data) = self
                .received_snapshot
                .clone()
                .expect("snapshot data received");
            self.applied = snapshot_to_applied(&data);
            self.applied_index = meta.index;
            self.raft.on_applied(meta.index);
        }
        for e in &rd.committed {
            assert_eq!(
                e.index,
                self.applied_index + 1,
                "node {} applies out of order",
                self.raft.id()
            );
            if e.kind == EntryKind::Normal {
                self.applied.push((e.index, e.data.clone()));
            }
            self.applied_terms.push((e.index, e.term));
            self.applied_index = e.index;
        }
        if let Some(last) = rd.committed.last() {
            self.raft.on_applied(last.index);
        }
    }

    /// Persists the oldest pending Ready (manual mode).
    pub fn persist_one(&mut self) -> bool {
        let Some(rd) = self.unpersisted.pop_front() else {
            return false;
        };
        self.storage.persist(&rd, &self.received_snapshot);
        self.raft.on_persisted(rd.number);
        true
    }

    /// Snapshot of the state machine (applied payloads) at `applied_index`.
    pub fn take_snapshot(&mut self) -> SnapshotMeta {
        let meta = self.raft.compact(self.applied_index);
        let data = applied_to_snapshot(&self.applied);
        self.storage.snapshot = Some((meta.clone(), data));
        self.storage.entries.retain(|e| e.index > meta.index);
        meta
    }
}

/// A snapshot's data: each applied payload prefixed with its index (8 bytes LE).
fn applied_to_snapshot(applied: &[(Index, Bytes)]) -> Vec<Bytes> {
    applied
        .iter()
        .map(|(i, d)| {
            let mut v = i.to_le_bytes().to_vec();
            v.extend_from_slice(d);
            Bytes::from(v)
        })
        .collect()
}

fn snapshot_to_applied(data: &[Bytes]) -> Vec<(Index, Bytes)> {
    data.iter()
        .map(|b| {
            (
                u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
                b.slice(8..),
            )
        })
        .collect()
}

/// A cluster of in-memory nodes joined by a message queue.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    /// Messages sent and not yet delivered, in send order.
    pub queue: VecDeque<Message>,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Cluster time in nanoseconds; one tick advances it by the tick interval.
    pub now: u64,
    pub tick_ns: u64,
}

impl Cluster {
    /// `voters` start as the initial cluster; `learners` are added to it as learners.
    /// `tweak` adjusts each node's config.
    pub fn new(voters: &[NodeId], learners: &[NodeId], tweak: impl Fn(&mut Config)) -> Self {
        let mut initial = Membership::with_voters(voters.iter().copied());
        initial.learners = learners.iter().copied().collect();
        let mut nodes = BTreeMap::new();
        let mut tick_ns = 0;
        for &id in voters.iter().chain(learners) {
            let mut cfg = Config::new(id);
            tweak(&mut cfg);
            tick_ns = cfg.tick_interval_ns;
            nodes.insert(id, Self::boot(cfg, initial.clone(), MemStorage::default()));
        }
        Cluster {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            now: 0,
            tick_ns,
        }
    }

    fn boot(cfg: Config, initial: Membership, storage: MemStorage) -> Node {
        let raft = Raft::new(cfg.clone(), storage.restore(&initial)).expect("valid config");
        let (applied, applied_index) = match &storage.snapshot {
            Some((meta, data)) => (snapshot_to_applied(data), meta.index),
            None => (Vec::new(), 0),
        };
        Node {
            raft,
            storage,
            applied,
            applied_terms: Vec::new(),
            applied_index,
            unpersisted: VecDeque::new(),
            auto_persist: true,
            reads: Vec::new(),
            received_snapshot: None,
            up: true,
            cfg,
            initial,
        }
    }

    /// Adds a fresh node (empty storage, empty initial membership): it learns the cluster
    /// from the leader once it is added as a learner.
    pub fn add_node(&mut self, id: NodeId, tweak: impl Fn(&mut Config)) {
        let mut cfg = Config::new(id);
        tweak(&mut cfg);
        self.nodes.insert(
            id,
            Self::boot(cfg, Membership::default(), MemStorage::default()),
        );
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    pub fn raft(&mut self, id: NodeId) -> &mut Raft {
        &mut self.nodes.get_mut(&id).expect("node exists").raft
    }

    /// Ticks every live node once.
    pub fn tick_all(&mut self) {
        self.now += self.tick_ns;
        let now = self.now;
        for n in self.nodes.values_mut().filter(|n| n.up) {
            n.raft.tick(now);
        }
    }

    pub fn tick(&mut self, id: NodeId) {
        self.now += self.tick_ns;
        let now = self.now;
        let n = self.nodes.get_mut(&id).expect("node exists");
        if n.up {
            n.raft.tick(now);
        }
    }

    /// Drains one node's Ready: persists (or queues), sends, applies. Returns whether there
    /// was anything.
    pub fn process(&mut self, id: NodeId) -> bool {
        let n = self.nodes.get_mut(&id).expect("node exists");
        if !n.up || !n.raft.has_ready() {
            return false;
        }
        let mut rd = n.raft.ready();
        n.apply(&rd);
        n.reads.append(&mut rd.reads);
        let msgs = std::mem::take(&mut rd.messages);
        if rd.must_persist() {
            if n.auto_persist {
                n.storage.persist(&rd, &n.received_snapshot);
                n.raft.on_persisted(rd.number);
            } else {
                n.unpersisted.push_back(rd);
            }
        }
        self.queue.extend(msgs);
        true
    }

    /// Delivers one queued message (dropped if a link is cut or the target is down).
    /// Returns it, or `None` if the queue is empty.
    pub fn deliver_one(&mut self) -> Option<(Message, bool)> {
        let m = self.queue.pop_front()?;
        let ok = self.deliverable(&m);
        if ok {
            self.deliver(m.clone());
        }
        Some((m, ok))
    }

    pub fn deliverable(&self, m: &Message) -> bool {
        !self.cut.contains(&(m.from, m.to)) && self.nodes.get(&m.to).is_some_and(|n| n.up)
    }

    /// Steps `m` into its target, attaching snapshot data as a transport would.
    pub fn deliver(&mut self, m: Message) {
        let snapshot_from = if let Body::Snapshot { meta } = &m.body {
            let data = self.nodes[&m.from].storage.snapshot.clone();
            let data = data
                .filter(|(sm, _)| sm == meta)
                .expect("leader has the snapshot it sends");
            self.nodes.get_mut(&m.to).expect("node").received_snapshot = Some(data);
            Some(m.from)
        } else {
            None
        };
        let to = m.to;
        let n = self.nodes.get_mut(&m.to).expect("node exists");
        n.raft.step(m);
        // The transport reports a finished snapshot transfer to the sender.
        if let Some(from) = snapshot_from {
            self.report_snapshot(from, to, true);
        }
    }

    /// Tells `from`'s core how sending a snapshot to `to` ended.
    pub fn report_snapshot(&mut self, from: NodeId, to: NodeId, delivered: bool) {
        if let Some(n) = self.nodes.get_mut(&from).filter(|n| n.up) {
            n.raft.report_snapshot(to, delivered);
        }
    }

    /// Processes readies and delivers messages until nothing moves. Returns the messages
    /// delivered (or dropped) in order.
    pub fn stabilize(&mut self) -> Vec<(Message, bool)> {
        let mut log = Vec::new();
        loop {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut moved = false;
            for id in ids {
                moved |= self.process(id);
            }
            while let Some(d) = self.deliver_one() {
                log.push(d);
                moved = true;
            }
            assert!(
                log.len() < 100_000,
                "stabilize does not settle; last: {:?}",
                &log[log.len() - 6..]
            );
            if !moved {
                return log;
            }
        }
    }

    /// Like `stabilize`, without recording or cloning messages (benchmarks).
    pub fn pump(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        loop {
            let mut moved = false;
            for &id in &ids {
                moved |= self.process(id);
            }
            while let Some(m) = self.queue.pop_front() {
                if self.deliverable(&m) {
                    self.deliver(m);
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Processes readies and delivers queued messages one at a time until `done` holds.
    /// Returns false if nothing moves any more (or after a generous step limit) first.
    pub fn run_until(&mut self, mut done: impl FnMut(&mut Cluster) -> bool) -> bool {
        for _ in 0..100_000 {
            if done(self) {
                return true;
            }
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut moved = false;
            for id in ids {
                moved |= self.process(id);
            }
            moved |= self.deliver_one().is_some();
            if !moved {
                return done(self);
            }
        }
        false
    }

    /// Drops every message produced so far, including those still inside the cores, so that
    /// campaigns a test did not script go nowhere.
    pub fn drop_in_flight(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.process(id);
        }
        self.queue.clear();
    }

    /// Campaigns `id` until it leads; false if three campaigns fail. A restarted node's
    /// first pre-vote (at its stale term + 1) may be refused by voters in a newer term; the
    /// refusal teaches it that term.
    pub fn campaign_until_leader(&mut self, id: NodeId) -> bool {
        for _ in 0..3 {
            self.raft(id).campaign_now();
            if self.run_until(|c| c.raft(id).role() == ringkv_raft::Role::Leader) {
                return true;
            }
        }
        false
    }

    /// Ticks `ids` past the election timeout (vote refusal windows end), then drops the
    /// campaigns that started.
    pub fn let_leases_lapse(&mut self, ids: &[NodeId]) {
        for _ in 0..25 {
            for &id in ids {
                self.tick(id);
            }
        }
        self.drop_in_flight();
    }

    /// Ticks all nodes until some node leads, stabilizing between ticks. Panics after
    /// `ticks_max` ticks.
    pub fn elect(&mut self, ticks_max: u32) -> NodeId {
        for _ in 0..ticks_max {
            self.stabilize();
            if let Some(l) = self.leader() {
                return l;
            }
            self.tick_all();
        }
        panic!("no leader after {ticks_max} ticks");
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.up && n.raft.role() == ringkv_raft::Role::Leader)
            .max_by_key(|(_, n)| n.raft.term())
            .map(|(&id, _)| id)
    }

    /// Crash: the node stops; everything not persisted (storage) is lost.
    pub fn crash(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(&id).expect("node exists");
        n.up = false;
        n.unpersisted.clear();
        self.queue.retain(|m| m.to != id && m.from != id);
    }

    /// Restart from storage.
    pub fn restart(&mut self, id: NodeId) {
        let n = self.nodes.remove(&id).expect("node exists");
        let mut fresh = Self::boot(n.cfg, n.initial, n.storage);
        fresh.auto_persist = n.auto_persist;
        self.nodes.insert(id, fresh);
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }
}
