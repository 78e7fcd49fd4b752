//! The nemesis: which faults a run suffers, when, and what they do. Crashes (one node or
//! all), partitions (split, one-way, bridge, isolated leader) and their healing, membership
//! changes, leadership transfers; and the faults drawn as the world runs: lost, duplicated
//! and slow messages, disk stalls, drifting clocks. Stopped for the final settle phase.
//!
//! Runs on the simulator's thread (one per seed), called from `World`'s event loop. Every
//! choice is a draw from the run's one random stream, in a fixed order: moving, adding or
//! dropping a draw changes everything after it, so a seed would no longer replay its run.
//! Must not touch real I/O or clocks; a crash is simulated on the node's state
//! (`Node::power_off`), never by stopping anything real.

use std::collections::BTreeSet;

use super::options::Control;
use super::world::{DRIFT_PPM_MAX, Disk, Event, Micros, World};
use ringkv_raft::{Membership, MembershipChange, Message, NodeId};
use ringkv_rng::Rng;

/// What the nemesis has broken now: one `World` field. The rest of the world only asks
/// whether faults are still on and which links are cut; the rest is this file's.
pub(crate) struct Faults {
    /// False once the fault phase is over (the final heal-and-settle phase).
    on: bool,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Chance (per mille) that a message is lost; 0 once faults stop.
    loss_per_mille: u64,
    /// Chance (per mille) that a message is delivered twice; 0 once faults stop.
    dup_per_mille: u64,
    /// The id a node added by a membership change gets.
    next_node_id: NodeId,
}

impl Faults {
    /// Draws the run's message loss and duplication rates (the seed's first two draws).
    pub(crate) fn new(rng: &mut Rng, nodes: usize) -> Self {
        let loss_per_mille = rng.range(0, 50);
        let dup_per_mille = rng.range(0, 20);
        Faults {
            on: true,
            cut: BTreeSet::new(),
            loss_per_mille,
            dup_per_mille,
            next_node_id: nodes as NodeId + 1,
        }
    }

    /// Whether faults are still being injected.
    pub(crate) fn on(&self) -> bool {
        self.on
    }

    /// Whether the link `from` -> `to` is cut.
    pub(crate) fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }
}

impl World {
    /// The first fault comes 0.3 to 1 s into the run.
    pub(crate) fn schedule_first_fault(&mut self) {
        let first_fault = self.rng.range(300_000, 1_000_000);
        self.schedule(first_fault, Event::Fault);
    }

    // ----- drawn as the world runs -----

    /// Whether the network drops `m`: its link is cut, or it is unlucky.
    pub(crate) fn drops(&mut self, m: &Message) -> bool {
        self.faults.is_cut(m.from, m.to) || self.rng.chance(self.faults.loss_per_mille)
    }

    /// Whether a message sent is delivered twice.
    pub(crate) fn duplicate(&mut self) -> bool {
        self.rng.chance(self.faults.dup_per_mille)
    }

    /// A slow link's delay now and then (it reorders messages on the same link).
    pub(crate) fn slow_link(&mut self) -> Option<Micros> {
        if self.rng.chance(self.params.slow_link_per_mille) {
            Some(self.rng.range(5_000, 60_000))
        } else {
            None
        }
    }

    /// Now and then an fsync stalls, as real disks do: the flush's latency if so.
    pub(crate) fn disk_stall(&mut self) -> Option<Micros> {
        if self.rng.chance(self.params.slow_disk_per_mille) {
            Some(self.rng.range(2_000, 30_000))
        } else {
            None
        }
    }

    /// A booting node's clock rate error, ppm. Rates spread over the whole bound: any two
    /// nodes differ by at most it.
    pub(crate) fn clock_drift(&mut self) -> i64 {
        let half = DRIFT_PPM_MAX as i64 / 2;
        if self.opts.control == Some(Control::LeaseIgnoresDrift) {
            // Clocks at the bound (each node at one extreme), so the drift control can fire.
            if self.rng.chance(500) { half } else { -half }
        } else {
            self.rng.range(0, 2 * half as u64) as i64 - half
        }
    }

    // ----- the schedule -----

    /// The nemesis: one fault drawn from the profile's weights, then the next one scheduled.
    pub(crate) fn fault(&mut self) {
        if !self.faults.on {
            return;
        }
        let live: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.up && !n.removed)
            .map(|(&id, _)| id)
            .collect();
        let members: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.removed)
            .map(|(&id, _)| id)
            .collect();
        let leader = self.current_leader();
        let w = self.params.fault_weights;
        // The first fault of a run is always a crash or a partition.
        let first = self.stats.crashes + self.stats.partitions == 0;
        let span: u64 = if first {
            w[..3].iter().sum()
        } else {
            w.iter().sum()
        };
        let mut roll = self.rng.below(span);
        let mut kind = 0;
        while roll >= w[kind] {
            roll -= w[kind];
            kind += 1;
        }
        match kind {
            0 => {
                // Every live node at once: DiskFirst must still lose no acknowledged write.
                for &victim in &live {
                    self.crash(victim);
                    let at = self.now + self.rng.range(50_000, 1_000_000);
                    self.schedule(at, Event::Restart(victim));
                }
            }
            1 => {
                // Crash one node (the leader half the time), keeping a majority up.
                let down = members.len() - live.len();
                if down < (members.len() - 1) / 2 && !live.is_empty() {
                    let victim = match leader {
                        Some(l) if self.rng.chance(500) => l,
                        _ => live[self.rng.below(live.len() as u64) as usize],
                    };
                    self.crash(victim);
                    let at = self.now + self.rng.range(100_000, 2_000_000);
                    self.schedule(at, Event::Restart(victim));
                }
            }
            2 => {
                let isolate = self.params.isolate_leader_per_mille;
                let leader = leader.filter(|_| self.rng.chance(isolate));
                self.partition(members, leader)
            }
            3 => self.membership_fault(leader),
            4 => {
                if let Some(l) = leader {
                    let voters: Vec<NodeId> = self.nodes[&l]
                        .raft
                        .membership()
                        .voters
                        .iter()
                        .copied()
                        .filter(|&v| v != l)
                        .collect();
                    if !voters.is_empty() {
                        let t = voters[self.rng.below(voters.len() as u64) as usize];
                        if self
                            .nodes
                            .get_mut(&l)
                            .expect("leader")
                            .raft
                            .transfer_leader(t)
                            .is_ok()
                        {
                            self.stats.transfers += 1;
                            self.log(|| format!("transfer {l} -> {t}"));
                        }
                    }
                }
            }
            _ => {} // a quiet period
        }
        let (lo, hi) = self.params.fault_gap_us;
        let at = self.now + self.rng.range(lo, hi);
        self.schedule(at, Event::Fault);
    }

    /// Cuts links: a symmetric split, a one-way cut, a bridge (one node sees both sides of a
    /// split), or the leader isolated. Healed after a while.
    fn partition(&mut self, mut nodes: Vec<NodeId>, isolate: Option<NodeId>) {
        if nodes.len() < 2 {
            return;
        }
        for i in (1..nodes.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            nodes.swap(i, j);
        }
        let kind = if isolate.is_some() {
            3
        } else {
            self.rng.below(3)
        };
        let (a, b): (Vec<NodeId>, Vec<NodeId>) = if let Some(l) = isolate {
            // The leader alone on one side (its clients may still reach it).
            (vec![l], nodes.iter().copied().filter(|&n| n != l).collect())
        } else if kind == 2 && nodes.len() >= 3 {
            // nodes[0] is the bridge: it keeps every link; the rest split in two.
            let rest = &nodes[1..];
            let half = rest.len() / 2;
            (rest[..half].to_vec(), rest[half..].to_vec())
        } else {
            let k = 1 + self.rng.below(nodes.len() as u64 - 1) as usize;
            (nodes[..k].to_vec(), nodes[k..].to_vec())
        };
        for &x in &a {
            for &y in &b {
                self.faults.cut.insert((x, y));
                if kind != 1 {
                    self.faults.cut.insert((y, x));
                }
            }
        }
        self.stats.partitions += 1;
        let kind_name = ["split", "one-way", "bridge", "isolated leader"][kind as usize];
        self.log(|| format!("partition ({kind_name}) {a:?} | {b:?}"));
        let at = self.now + self.rng.range(200_000, 3_000_000);
        self.schedule(at, Event::Heal);
    }

    pub(crate) fn heal(&mut self) {
        self.faults.cut.clear();
        self.log(|| "heal".to_string());
    }

    /// Through the leader: promote a learner, add a fresh node, or remove a voter.
    fn membership_fault(&mut self, leader: Option<NodeId>) {
        let Some(l) = leader else { return };
        let m = self.nodes[&l].raft.membership().clone();
        let change = if let Some(&learner) = m.learners.iter().next() {
            MembershipChange::Promote(learner)
        } else if m.voters.len() <= 3 || (m.voters.len() < 5 && self.rng.chance(500)) {
            // Add a fresh node (it joins with an empty configuration and learns it).
            let id = self.faults.next_node_id;
            MembershipChange::AddLearner(id)
        } else {
            let voters: Vec<NodeId> = m.voters.iter().copied().collect();
            MembershipChange::Remove(voters[self.rng.below(voters.len() as u64) as usize])
        };
        let res = self
            .nodes
            .get_mut(&l)
            .expect("leader")
            .raft
            .propose_membership(change);
        if res.is_ok() {
            self.stats.membership_changes += 1;
            self.log(|| format!("membership {change:?} via {l}"));
            if let MembershipChange::AddLearner(id) = change {
                self.faults.next_node_id += 1;
                self.boot(id, Membership::default(), Disk::default());
            }
        }
    }

    fn crash(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).expect("node").power_off();
        self.stats.crashes += 1;
        self.log(|| format!("crash {id}"));
        // Clients waiting on this node learn nothing: they time out (outcome unknown).
    }

    /// Boots a crashed node again from what is durable on its disk.
    pub(crate) fn restart(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get(&id) else { return };
        if n.up || n.removed {
            return;
        }
        let initial = n.initial.clone();
        let disk = n.disk.clone();
        self.boot(id, initial, disk);
        self.log(|| format!("restart {id}"));
    }

    /// The fault phase is over: every link heals, lossless from now on, and every crashed
    /// member restarts, so the cluster can settle before the final checks.
    pub(crate) fn stop_faults(&mut self) {
        self.faults.on = false;
        self.faults.cut.clear();
        self.faults.loss_per_mille = 0;
        self.faults.dup_per_mille = 0;
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.up && !n.removed)
            .map(|(&id, _)| id)
            .collect();
        for id in down {
            self.restart(id);
        }
        self.log(|| "faults stop; settling".to_string());
    }
}
