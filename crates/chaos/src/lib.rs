//! The fault campaign (`make chaos`): real `ringkv` processes built with `crash-sim`, on
//! their own 127.0.x.y addresses inside a private network namespace, under concurrent
//! clients, while nemeses kill, pause, partition, slow, corrupt and reconfigure them; then
//! checkers read the whole history. Negative controls (protocol bugs switched on in the
//! nodes) run through the same harness and must be caught by the same checkers.
//!
//! Runs in the `ringkv-chaos` process: nemeses on its main thread (blocking), clients on
//! one glommio executor (`workload`, with the store clients of `storeload`), link proxies
//! on plain threads (`proxy`). Owns the run directory, the child processes and the
//! namespace's iptables rules. Must not reach into a node other than through its sockets,
//! signals and files, as an operator (or a data center) would.

pub mod check;
pub mod cluster;
pub mod proxy;
pub mod storecheck;
pub mod storeload;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cluster::{Cluster, Settings, net};
use proxy::{Faults, Proxies};
use workload::{Kind, Load, Outcome, Record, Targets, Workload};

use ringkv_proto::native::{CONSISTENCY_EVENTUAL, CONSISTENCY_LINEARIZABLE};
use ringkv_raft::NodeId;
use ringkv_rng::Rng;

/// How to run the campaign.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `ringkv` binary (built with `crash-sim` and `negative-controls`).
    pub bin: PathBuf,
    /// Run directory (emptied first).
    pub dir: PathBuf,
    /// QUICK: every nemesis once, in a fixed order, then the controls.
    pub quick: bool,
    /// Without `quick`: nemeses chosen at random until this much time passed.
    pub duration: Duration,
    pub seed: u64,
    pub clients: u32,
    /// Store clients (`storeload`) besides the register clients.
    pub store_clients: u32,
}

/// One fault the runner can apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Nemesis {
    KillLeader,
    KillRandom,
    KillMajority,
    KillAll,
    PauseLeader,
    PauseRandom,
    IsolateLeader,
    PartitionMinority,
    Bridge,
    OneWay,
    LinkFaults,
    FlipWal,
    TruncateWal,
    FlipSnapshot,
    Churn,
}

impl Nemesis {
    pub const ALL: [Nemesis; 15] = [
        Nemesis::KillLeader,
        Nemesis::PauseLeader,
        Nemesis::IsolateLeader,
        Nemesis::LinkFaults,
        Nemesis::FlipWal,
        Nemesis::Churn,
        Nemesis::KillRandom,
        Nemesis::PartitionMinority,
        Nemesis::TruncateWal,
        Nemesis::Bridge,
        Nemesis::KillMajority,
        Nemesis::OneWay,
        Nemesis::FlipSnapshot,
        Nemesis::PauseRandom,
        Nemesis::KillAll,
    ];

    /// The class the summary line counts it under.
    pub fn class(self) -> &'static str {
        match self {
            Nemesis::KillLeader
            | Nemesis::KillRandom
            | Nemesis::KillMajority
            | Nemesis::KillAll => "kill",
            Nemesis::PauseLeader | Nemesis::PauseRandom => "pause",
            Nemesis::IsolateLeader
            | Nemesis::PartitionMinority
            | Nemesis::Bridge
            | Nemesis::OneWay
            | Nemesis::LinkFaults => "partition",
            Nemesis::FlipWal | Nemesis::TruncateWal | Nemesis::FlipSnapshot => "corrupt",
            Nemesis::Churn => "membership",
        }
    }
}

/// One applied fault: what, when (µs since the run began), and what came of it.
#[derive(Clone, Debug)]
pub struct Event {
    pub nemesis: Nemesis,
    pub at_us: u64,
    pub note: String,
}

/// The outcome of one run (the main campaign or one control).
pub struct RunReport {
    pub findings: check::Findings,
    pub events: Vec<Event>,
    pub seconds: f64,
    /// Time from each leader kill to the first write acknowledged after it, µs.
    pub leader_recovery_us: Vec<u64>,
    /// Set when the harness itself failed (the cluster never recovered, a node would
    /// not start, ...): the run proves nothing.
    pub error: Option<String>,
    /// Nodes that exited on their own: a failed run, though its history was checked.
    pub crashes: Vec<String>,
    pub proxy_counts: (u64, u64, u64),
    /// Rounds after which every member's store hash was compared (and equal).
    pub hash_checks: usize,
}

/// The settings of a normal run: 5% drift bound, lease under it.
pub fn main_settings() -> Settings {
    Settings {
        election_ms: (600, 900),
        heartbeat_ms: 50,
        lease_ms: 400,
        drift_ppm_max: 50_000,
        request_timeout_ms: 2000,
        snapshot_entries: 4000,
        // A disk whose syncs take 2 ms more: acknowledged-but-unsynced data, if a bug
        // allowed any, would sit in memory long enough for a power cut to find it.
        sync_delay_us: 2000,
        fast_disk: None,
        controls: Vec::new(),
        proxied: true,
    }
}

/// Acknowledged writes, and answered linearizable or lease reads, every run needs.
const ACTIVITY_MIN: usize = 1000;

/// Acknowledged store writes, and answered store reads, every run with store clients needs.
const STORE_ACTIVITY_MIN: usize = 100;

/// TTLs the store clients ask for, in seconds: above every run's minimum (1.5 x the
/// longest election timeout: 2 s for the drift control's 1050 ms), short enough that
/// abandoned leases expire within a run.
const LEASE_TTL_SECS: (i64, i64) = (3, 4);

/// Beyond its TTL, an abandoned lease may live this much longer after its last renewal
/// and after the cluster healed (leader changes restart countdowns from checkpoints).
const LEASE_GRACE: Duration = Duration::from_secs(20);

/// A campaign in progress: the cluster, its clients and what happened.
struct Run<'a> {
    cluster: Cluster,
    workload: Option<Workload>,
    proxies: &'a Proxies,
    rng: Rng,
    t0: Instant,
    events: Vec<Event>,
    hash_checks: usize,
    store_clients: u32,
}

impl<'a> Run<'a> {
    fn start(
        o: &Options,
        name: &str,
        settings: Settings,
        proxies: &'a Proxies,
        rates: &dyn Fn(NodeId) -> i32,
    ) -> Result<Run<'a>, String> {
        let cluster = Cluster::start_new(&o.bin, &o.dir.join(name), settings, 3, rates)?;
        let t0 = Instant::now();
        let mut r = Run {
            cluster,
            workload: None,
            proxies,
            rng: Rng::new(
                o.seed
                    ^ name
                        .bytes()
                        .fold(0u64, |h, b| h.wrapping_mul(131) ^ u64::from(b)),
            ),
            t0,
            events: Vec::new(),
            hash_checks: 0,
            store_clients: o.store_clients,
        };
        r.cluster
            .wait_leader(Duration::from_secs(20))
            .ok_or("no leader within 20 s of start")?;
        let w = Workload::start(
            Load {
                clients: o.clients,
                register_keys: 16,
                epoch_secs: 10,
                write_timeout: Duration::from_millis(2500),
                read_timeout: Duration::from_millis(1000),
                store: storeload::StoreLoad {
                    clients: o.store_clients,
                    keys_per_epoch: 8,
                    epoch_secs: 20,
                    lease_ttl_secs: LEASE_TTL_SECS,
                    leases_kept_max: 3,
                    keys_per_lease_max: 3,
                    pause_ms: (5, 15),
                    write_timeout: Duration::from_millis(2500),
                    read_timeout: Duration::from_millis(1000),
                },
            },
            t0,
            r.targets(),
            o.seed,
        )?;
        r.workload = Some(w);
        Ok(r)
    }

    fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    fn targets(&mut self) -> Targets {
        Targets {
            members: self.cluster.members(),
        }
    }

    fn refresh(&mut self) {
        let t = self.targets();
        if let Some(w) = &self.workload {
            w.set_targets(t);
        }
    }

    /// Sleeps `d`, telling the clients about membership changes meanwhile.
    fn hold(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(250).min(until - Instant::now()));
            self.refresh();
        }
    }

    /// Holds `base` ms plus up to `spread` more, at random.
    fn hold_ms(&mut self, base: u64, spread: u64) {
        let d = base + self.rng.below(spread);
        self.hold(Duration::from_millis(d));
    }

    fn pick(&mut self, from: &[NodeId]) -> NodeId {
        from[self.rng.below(from.len() as u64) as usize]
    }

    /// A clock rate within 80% of the drift bound, fast or slow.
    fn rate(&mut self) -> i32 {
        let b = self.cluster.settings.drift_ppm_max as u64 * 8 / 10;
        self.rng.below(2 * b + 1) as i32 - b as i32
    }

    fn leader(&mut self) -> Result<NodeId, String> {
        self.cluster
            .wait_leader(Duration::from_secs(20))
            .ok_or_else(|| "no leader within 20 s".to_string())
    }

    fn followers(&mut self, leader: NodeId) -> Vec<NodeId> {
        self.cluster
            .live()
            .into_iter()
            .filter(|n| *n != leader)
            .collect()
    }

    fn restart(&mut self, id: NodeId) -> Result<(), String> {
        let r = self.rate();
        self.cluster.set_clock_rate(id, r);
        self.cluster.start(id)
    }

    /// Ends every fault: partitions and link faults off, paused nodes resumed, dead
    /// members restarted.
    fn heal(&mut self) -> Result<(), String> {
        net::heal()?;
        self.proxies.set(Faults::default());
        for id in self.cluster.members() {
            if self.cluster.node(id).paused {
                self.cluster.resume(id);
            }
            if !self.cluster.running(id) {
                self.restart(id)?;
            }
        }
        Ok(())
    }

    /// Waits until there is a leader and every member applied what it had committed.
    fn settle(&mut self, limit: Duration) -> Result<(), String> {
        let until = Instant::now() + limit;
        loop {
            self.refresh();
            if let Some(l) = self.cluster.leader()
                && let Some(commit) = self
                    .cluster
                    .status(l)
                    .and_then(|s| s["commit_index"].as_u64())
            {
                // Members whose process keeps failing are reported as crashes; they
                // must not hold the settle (and the run's checks) hostage.
                let members = self.cluster.live();
                let behind: Vec<NodeId> = members
                    .iter()
                    .copied()
                    .filter(|m| {
                        self.cluster
                            .status(*m)
                            .and_then(|s| s["applied_index"].as_u64())
                            .is_none_or(|a| a < commit)
                    })
                    .collect();
                if behind.is_empty() {
                    return Ok(());
                }
                if Instant::now() >= until {
                    return Err(format!(
                        "nodes {behind:?} did not apply the leader's commit index {commit} within {limit:?}"
                    ));
                }
            } else if Instant::now() >= until {
                return Err(format!("no leader within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every live member's store hash at one revision (the lowest current one among them)
    /// is the same: the members applied the same log to the same state (`GET /hash`).
    fn same_store(&mut self) -> Result<(), String> {
        let hash =
            |c: &cluster::Cluster, m: NodeId, q: &str| -> Result<serde_json::Value, String> {
                let r = c
                    .http(m, "GET", &format!("/hash{q}"), &[], b"")
                    .map_err(|e| format!("GET /hash on node {m}: {e}"))?;
                let v: serde_json::Value = serde_json::from_str(&r.body)
                    .map_err(|e| format!("GET /hash on node {m}: {e}"))?;
                if r.status != 200 {
                    return Err(format!("GET /hash on node {m}: {} {v}", r.status));
                }
                Ok(v)
            };
        let members = self.cluster.live();
        let mut revision = i64::MAX;
        for &m in &members {
            let v = hash(&self.cluster, m, "")?;
            revision = revision.min(v["header"]["revision"].as_i64().unwrap_or(0));
        }
        let mut seen: Vec<(NodeId, u64)> = Vec::new();
        for &m in &members {
            let v = hash(&self.cluster, m, &format!("?revision={revision}"))?;
            seen.push((m, v["hash"].as_u64().unwrap_or(0)));
        }
        if seen.windows(2).any(|w| w[0].1 != w[1].1) {
            return Err(format!(
                "store hashes differ at revision {revision}: {seen:?}"
            ));
        }
        self.hash_checks += 1;
        Ok(())
    }

    fn record(&mut self, nemesis: Nemesis, at_us: u64, note: String) {
        eprintln!("chaos: {:>7.1}s {nemesis:?}: {note}", at_us as f64 / 1e6);
        self.events.push(Event {
            nemesis,
            at_us,
            note,
        });
    }

    /// Applies one nemesis, holds it, heals, and waits for the cluster to settle.
    fn apply(&mut self, n: Nemesis) -> Result<(), String> {
        let (emin, emax) = self.cluster.settings.election_ms;
        let beyond_election = Duration::from_millis(emax * 2 + self.rng.below(emin));
        let at = self.now_us();
        let note = match n {
            Nemesis::KillLeader => {
                let l = self.leader()?;
                let at = self.now_us();
                self.cluster.kill(l);
                self.hold_ms(1500, 1500);
                self.restart(l)?;
                self.record(n, at, format!("killed leader {l}, restarted"));
                return self.after();
            }
            Nemesis::KillRandom => {
                let live = self.cluster.live();
                let v = self.pick(&live);
                self.cluster.kill(v);
                self.hold_ms(1000, 2000);
                format!("killed node {v}")
            }
            Nemesis::KillMajority => {
                let mut live = self.cluster.live();
                let majority = live.len() / 2 + 1;
                let mut dead = Vec::new();
                while dead.len() < majority {
                    let i = self.rng.below(live.len() as u64) as usize;
                    dead.push(live.remove(i));
                }
                self.cluster.kill_many(&dead);
                self.hold_ms(1500, 1500);
                format!("killed nodes {dead:?}")
            }
            Nemesis::KillAll => {
                let all = self.cluster.members();
                self.cluster.kill_many(&all);
                self.hold_ms(500, 1000);
                format!("killed every node {all:?} (unsynced WAL writes lost)")
            }
            Nemesis::PauseLeader | Nemesis::PauseRandom => {
                let v = if n == Nemesis::PauseLeader {
                    self.leader()?
                } else {
                    let live = self.cluster.live();
                    self.pick(&live)
                };
                self.cluster.pause(v);
                self.hold(beyond_election);
                self.cluster.resume(v);
                format!("SIGSTOP node {v} for {beyond_election:?}, then SIGCONT")
            }
            Nemesis::IsolateLeader => {
                let l = self.leader()?;
                let rest = self.followers(l);
                net::split(&[l], &rest)?;
                self.hold(beyond_election);
                format!("isolated leader {l} from {rest:?} for {beyond_election:?}")
            }
            Nemesis::PartitionMinority => {
                let live = self.cluster.live();
                let v = self.pick(&live);
                let rest: Vec<NodeId> = live.into_iter().filter(|x| *x != v).collect();
                net::split(&[v], &rest)?;
                self.hold(beyond_election);
                format!("partitioned {{{v}}} from {rest:?}")
            }
            Nemesis::Bridge => {
                let mut live = self.cluster.live();
                if live.len() < 3 {
                    return Err(format!("a bridge needs 3 live nodes, not {live:?}"));
                }
                let b = self.pick(&live);
                live.retain(|x| *x != b);
                let half = live.len() / 2;
                let (left, right) = live.split_at(half.max(1));
                net::split(left, right)?;
                self.hold(beyond_election);
                format!("cut {left:?} from {right:?}; node {b} bridges them")
            }
            Nemesis::OneWay => {
                let l = self.leader()?;
                let rest = self.followers(l);
                let inbound = self.rng.below(2) == 0;
                for r in &rest {
                    if inbound {
                        net::drop_link(*r, l)?;
                    } else {
                        net::drop_link(l, *r)?;
                    }
                }
                self.hold(beyond_election);
                if inbound {
                    format!("dropped packets from {rest:?} to leader {l}")
                } else {
                    format!("dropped packets from leader {l} to {rest:?}")
                }
            }
            Nemesis::LinkFaults => {
                let f = Faults {
                    delay_ms_max: 5 + self.rng.below(40),
                    reorder_per_mille: 50 + self.rng.below(150),
                    drop_per_mille: 20 + self.rng.below(80),
                };
                self.proxies.set(f);
                self.hold(Duration::from_secs(4));
                format!("link proxies: {f:?}")
            }
            Nemesis::FlipWal | Nemesis::TruncateWal | Nemesis::FlipSnapshot => self.corrupt(n)?,
            Nemesis::Churn => self.churn()?,
        };
        self.record(n, at, note);
        self.after()
    }

    /// Every node loses power at once; all but the leader come back first and run
    /// without it for a while, then it returns.
    fn power_cut_leader_last(&mut self) -> Result<(), String> {
        let l = self.leader()?;
        let all = self.cluster.members();
        let at = self.now_us();
        self.cluster.kill_many(&all);
        for n in all.iter().filter(|n| **n != l) {
            self.restart(*n)?;
        }
        self.hold(Duration::from_millis(2500));
        self.record(
            Nemesis::KillAll,
            at,
            format!("killed every node {all:?}; all but leader {l} back first for 2.5 s"),
        );
        self.after()
    }

    fn after(&mut self) -> Result<(), String> {
        self.heal()?;
        self.settle(Duration::from_secs(30))?;
        self.same_store()?;
        // Some load with no fault before the next one.
        self.hold_ms(500, 1000);
        Ok(())
    }

    /// The follower a corruption or a removal may hit: never the last founder still a
    /// member (joiners find the cluster through the founders).
    fn victim(&mut self) -> Result<NodeId, String> {
        let l = self.leader()?;
        let founders_left = self
            .cluster
            .members()
            .iter()
            .filter(|m| self.cluster.founder(**m))
            .count();
        let cands: Vec<NodeId> = self
            .followers(l)
            .into_iter()
            .filter(|f| founders_left > 1 || !self.cluster.founder(*f))
            .collect();
        if cands.is_empty() {
            return Err("no follower may be corrupted".into());
        }
        Ok(self.pick(&cands))
    }

    fn corrupt(&mut self, n: Nemesis) -> Result<String, String> {
        let v = self.victim()?;
        let dir = self.cluster.data_dir(v);
        if n == Nemesis::FlipSnapshot && newest(&dir.join("snapshots"), ".snap").is_none() {
            let _ = self.cluster.http(v, "POST", "/snapshot", &[], b"");
            let until = Instant::now() + Duration::from_secs(10);
            while newest(&dir.join("snapshots"), ".snap").is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.cluster.kill(v);
        let what = match n {
            Nemesis::FlipWal => flip_tail(&dir.join("wal"), ".wal", &mut self.rng)?,
            Nemesis::TruncateWal => truncate_tail(&dir.join("wal"), &mut self.rng)?,
            _ => flip_middle(&dir.join("snapshots"), ".snap", &mut self.rng)?,
        };
        self.restart(v)?;
        // Started, or refused: a node that refuses exits within seconds.
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until && self.cluster.running(v) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = self.cluster.log(v);
        if self.cluster.running(v) {
            let detected = if log.contains("cut a torn tail") {
                "it cut the damaged tail and caught up from the leader"
            } else {
                "it started; the damage was outside what it reads"
            };
            return Ok(format!("{what} on node {v}: {detected}"));
        }
        // Refused, as it should: that exit (the last one recorded) was expected. Wipe it,
        // bring it back under a new id.
        if let Some(i) = self.cluster.exits.iter().rposition(|e| e.0 == v) {
            self.cluster.exits.remove(i);
        }
        let reason = log
            .lines()
            .rev()
            .find(|l| l.contains("ERROR"))
            .unwrap_or("(no error line)")
            .to_string();
        self.admin_retry("/remove", v)?;
        self.cluster.retire(v);
        let _ = std::fs::remove_dir_all(&dir);
        let r = self.rate();
        let j = self.cluster.add_joiner(r)?;
        self.join_as_voter(j)?;
        Ok(format!(
            "{what} on node {v}: it refused to start ({}); wiped, rejoined as node {j}",
            reason.chars().take(160).collect::<String>()
        ))
    }

    /// Waits for joiner `j` to be a caught-up learner, then promotes it.
    fn join_as_voter(&mut self, j: NodeId) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let l = self.leader()?;
            let lag = self.cluster.status(l).and_then(|s| {
                s["members"]
                    .as_array()?
                    .iter()
                    .find(|m| m["id"] == j)
                    .and_then(|m| m["lag"].as_u64())
            });
            if lag.is_some_and(|g| g < 1000) {
                let (st, b) = self.admin(l, "/promote", j);
                if st == 200 {
                    return Ok(());
                }
                if st != 503 && st != 409 && st != 0 {
                    return Err(format!("promoting node {j}: {st} {b}"));
                }
            }
            if Instant::now() >= until {
                return Err(format!("node {j} did not join and catch up within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An operator call through node `via`: (status, body), or (0, null) without an
    /// answer within 10 s.
    fn admin(&self, via: NodeId, path: &str, id: NodeId) -> (u16, serde_json::Value) {
        self.cluster
            .admin(via, path, id, None)
            .unwrap_or((0, serde_json::Value::Null))
    }

    /// An admin call to the leader, retried while the leader changes or is busy.
    fn admin_retry(&mut self, path: &str, id: NodeId) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let l = self.leader()?;
            let (st, b) = self.admin(l, path, id);
            match st {
                200 => return Ok(()),
                0 | 409 | 503 | 504 if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                _ => return Err(format!("{path} {id}: {st} {b}")),
            }
        }
    }

    /// Add a learner, promote it, move leadership to it and away, remove it.
    fn churn(&mut self) -> Result<String, String> {
        let r = self.rate();
        let j = self.cluster.add_joiner(r)?;
        self.join_as_voter(j)?;
        self.hold(Duration::from_millis(500));
        self.admin_retry("/transfer-leader", j)?;
        self.hold(Duration::from_millis(1000));
        let l = self.leader()?;
        let others: Vec<NodeId> = self
            .cluster
            .members()
            .into_iter()
            .filter(|m| *m != j)
            .collect();
        let back = self.pick(&others);
        if l == j {
            self.admin_retry("/transfer-leader", back)?;
            let until = Instant::now() + Duration::from_secs(10);
            while self.cluster.leader() == Some(j) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let exits_before = self.cluster.exits.len();
        self.admin_retry("/remove", j)?;
        self.cluster.retire(j);
        // A removed node stops by itself: an exit of it from here on is expected.
        let mut i = exits_before;
        while i < self.cluster.exits.len() {
            if self.cluster.exits[i].0 == j {
                self.cluster.exits.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(format!(
            "added node {j} as learner, promoted, moved leadership to it (leader then {l}), \
             then to node {back}, removed node {j}"
        ))
    }

    /// Stops the clients, heals, reads the final state and checks everything.
    fn finish(mut self) -> RunReport {
        let mut error = None;
        let (history, store_history) = match self.workload.take().map(|w| w.finish()) {
            Some(Ok(h)) => (h.records, h.store),
            Some(Err(e)) => {
                error = Some(e);
                (Vec::new(), Vec::new())
            }
            None => {
                error = Some("the run had no clients".into());
                (Vec::new(), Vec::new())
            }
        };
        let end_us = self.now_us() + 1;
        let mut final_state = check::State::new();
        let mut states = Vec::new();
        if let Err(e) = self
            .heal()
            .and_then(|_| self.settle(Duration::from_secs(60)))
        {
            error = Some(format!("after the run: {e}"));
        }
        let heal_us = self.now_us();
        let mut keys: Vec<String> = history.iter().map(|r| r.key.clone()).collect();
        keys.sort();
        keys.dedup();
        if error.is_none() {
            // A write a client gave up on may still commit after the settle: read the
            // states again (settled again) until two readings in a row agree.
            let mut last: Vec<(NodeId, check::State)> = Vec::new();
            for _ in 0..5 {
                let mut now = Vec::new();
                for m in self.cluster.live() {
                    match workload::read_all(m, &keys, CONSISTENCY_EVENTUAL) {
                        Ok(s) => now.push((m, s)),
                        Err(e) => error = Some(format!("final state of node {m}: {e}")),
                    }
                }
                let stable = now == last;
                last = now;
                if stable || error.is_some() {
                    break;
                }
                let _ = self.settle(Duration::from_secs(10));
            }
            states = last;
            if error.is_none()
                && let Err(e) = self.same_store()
            {
                error = Some(format!("after the run: {e}"));
            }
            if let Ok(l) = self.leader() {
                match workload::read_all(l, &keys, CONSISTENCY_LINEARIZABLE) {
                    Ok(s) => final_state = s,
                    Err(e) => error = Some(format!("final reads: {e}")),
                }
            }
        }
        // The store's states, every revision from every member, for the store checker.
        let mut reading = None;
        if error.is_none() && !store_history.is_empty() {
            let mut nodes = self.cluster.live();
            if let Ok(l) = self.leader() {
                nodes.retain(|n| *n != l);
                nodes.insert(0, l);
            }
            let wait = Duration::from_secs(LEASE_TTL_SECS.1 as u64) + LEASE_GRACE;
            let started = Instant::now();
            match storeload::read_states(&nodes, self.t0, wait) {
                Ok(r) => {
                    eprintln!(
                        "chaos: read the store's states at revisions {} ..= {} from nodes {nodes:?} in {:.1} s",
                        r.states.first,
                        r.states.last,
                        started.elapsed().as_secs_f64()
                    );
                    reading = Some(r);
                }
                Err(e) => error = Some(format!("the store's states: {e}")),
            }
        }
        // Members whose process is gone now show up in `exits` too.
        for m in self.cluster.members() {
            self.cluster.running(m);
        }
        // A node that exited on its own (a failed assertion, say) fails the run; the
        // checkers still read the history.
        let crashes: Vec<String> = self
            .cluster
            .exits
            .iter()
            .map(|(id, how)| {
                // The panic, if it was one, is on the node's stderr.
                let err = std::fs::read_to_string(self.cluster.log_dir(*id).join("stderr.log"))
                    .unwrap_or_default();
                let panic = err
                    .lines()
                    .position(|l| l.contains("panicked at"))
                    .and_then(|i| err.lines().nth(i + 1))
                    .map_or(String::new(), |m| format!(": {m}"));
                format!(
                    "node {id} exited on its own ({how}{panic}); its log: {}",
                    self.cluster.log_dir(*id).display()
                )
            })
            .collect();
        // A run that did too little proves nothing, whatever the checkers say.
        let acked = history
            .iter()
            .filter(|r| r.kind == Kind::Put && r.outcome == Outcome::Ok)
            .count();
        let strong_reads = history
            .iter()
            .filter(|r| {
                matches!(r.kind, Kind::Get(c) if c != CONSISTENCY_EVENTUAL)
                    && r.outcome == Outcome::Ok
            })
            .count();
        if error.is_none() && (acked < ACTIVITY_MIN || strong_reads < ACTIVITY_MIN) {
            error = Some(format!(
                "too little happened: {acked} acknowledged writes and {strong_reads} \
                 linearizable or lease reads (at least {ACTIVITY_MIN} of each needed)"
            ));
        }
        let store_acked = store_history
            .iter()
            .filter(|r| {
                matches!(r.op, storecheck::StoreOp::Write(_))
                    && matches!(r.outcome, storecheck::StoreOutcome::Done { .. })
            })
            .count();
        let store_reads = store_history
            .iter()
            .filter(|r| {
                matches!(r.op, storecheck::StoreOp::Range { .. })
                    && matches!(r.outcome, storecheck::StoreOutcome::Done { .. })
            })
            .count();
        if error.is_none()
            && self.store_clients > 0
            && (store_acked < STORE_ACTIVITY_MIN || store_reads < STORE_ACTIVITY_MIN)
        {
            error = Some(format!(
                "too little happened: {store_acked} acknowledged store writes and \
                 {store_reads} answered store reads (at least {STORE_ACTIVITY_MIN} of each \
                 needed)"
            ));
        }
        let claims = self.cluster.leader_claims();
        let have_final = error.is_none();
        let mut findings = check::check(
            &history,
            end_us,
            have_final.then_some(&final_state),
            &states,
            &claims,
        );
        match &reading {
            Some(r) => {
                findings.store = storecheck::check(
                    &store_history,
                    &r.states,
                    storecheck::LeaseTimes {
                        heal_us,
                        end_us: r.end_us,
                        grace_us: LEASE_GRACE.as_micros() as u64,
                    },
                );
                findings.store.diverged.extend(r.diverged.iter().cloned());
            }
            // Unchecked (the run failed to read them, or had no store clients): counted.
            None => findings.store.ops = store_history.len(),
        }
        if !findings.ok() || error.is_some() || !crashes.is_empty() {
            // The evidence, for whoever reads the failure.
            let mut out =
                String::from("client\tnode\tkind\tkey\tvalue\tcall_us\tret_us\toutcome\n");
            for r in &history {
                out.push_str(&format!(
                    "{}\t{}\t{:?}\t{}\t{:?}\t{}\t{}\t{:?}\n",
                    r.client, r.node, r.kind, r.key, r.value, r.call_us, r.ret_us, r.outcome
                ));
            }
            let _ = std::fs::write(self.cluster.dir.join("history.tsv"), out);
            let mut out = String::from("client\tnode\top\tcall_us\tret_us\toutcome\n");
            for r in &store_history {
                out.push_str(&format!(
                    "{}\t{}\t{:?}\t{}\t{}\t{:?}\n",
                    r.client, r.node, r.op, r.call_us, r.ret_us, r.outcome
                ));
            }
            let _ = std::fs::write(self.cluster.dir.join("store_history.tsv"), out);
        }
        let leader_recovery_us = recovery_times(&self.events, &history);
        let seconds = self.t0.elapsed().as_secs_f64();
        self.cluster.stop_all();
        let _ = net::heal();
        RunReport {
            findings,
            events: self.events,
            seconds,
            leader_recovery_us,
            error,
            crashes,
            hash_checks: self.hash_checks,
            proxy_counts: (
                self.proxies
                    .dropped
                    .load(std::sync::atomic::Ordering::Relaxed),
                self.proxies
                    .reordered
                    .load(std::sync::atomic::Ordering::Relaxed),
                self.proxies
                    .delayed
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        }
    }
}

/// For each leader kill, the time until the first write invoked after it was
/// acknowledged.
fn recovery_times(events: &[Event], history: &[Record]) -> Vec<u64> {
    let mut acked: Vec<(u64, u64)> = history
        .iter()
        .filter(|r| r.kind == Kind::Put && r.outcome == Outcome::Ok)
        .map(|r| (r.call_us, r.ret_us))
        .collect();
    acked.sort_unstable();
    events
        .iter()
        .filter(|e| e.nemesis == Nemesis::KillLeader)
        .filter_map(|e| {
            acked
                .iter()
                .filter(|(c, _)| *c >= e.at_us)
                .map(|(_, r)| r - e.at_us)
                .min()
        })
        .collect()
}

/// The newest file in `dir` ending in `ext` (names sort by index).
fn newest(dir: &std::path::Path, ext: &str) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    v.pop()
}

/// Offset one past the last non-zero byte: the end of what was written.
fn written_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

/// Flips one bit in the last 512 written bytes of the newest file.
fn flip_tail(dir: &std::path::Path, ext: &str, rng: &mut Rng) -> Result<String, String> {
    let p = newest(dir, ext).ok_or_else(|| format!("no {ext} file in {}", dir.display()))?;
    let mut b = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let end = written_end(&b);
    if end == 0 {
        return Err(format!("{} holds no data", p.display()));
    }
    let at = end - 1 - rng.below(end.min(512) as u64) as usize;
    b[at] ^= 1 << rng.below(8);
    std::fs::write(&p, &b).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(format!(
        "flipped a bit at byte {at} of {} (written to {end})",
        name(&p)
    ))
}

/// Flips one bit in the middle of the newest file.
fn flip_middle(dir: &std::path::Path, ext: &str, rng: &mut Rng) -> Result<String, String> {
    let p = newest(dir, ext).ok_or_else(|| format!("no {ext} file in {}", dir.display()))?;
    let mut b = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let end = written_end(&b);
    if end < 2 {
        return Err(format!("{} holds no data", p.display()));
    }
    let at = end / 2 + rng.below((end / 4).max(1) as u64) as usize;
    b[at] ^= 1 << rng.below(8);
    std::fs::write(&p, &b).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(format!(
        "flipped a bit at byte {at} of {} ({end} bytes)",
        name(&p)
    ))
}

/// Cuts the newest WAL segment inside its last written bytes.
fn truncate_tail(dir: &std::path::Path, rng: &mut Rng) -> Result<String, String> {
    let p = newest(dir, ".wal").ok_or_else(|| format!("no segment in {}", dir.display()))?;
    let b = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let end = written_end(&b);
    let cut = end.saturating_sub(1 + rng.below(end.min(2048) as u64) as usize);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    f.set_len(cut as u64)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(format!(
        "truncated {} from {} to {cut} bytes",
        name(&p),
        b.len()
    ))
}

fn name(p: &std::path::Path) -> String {
    p.file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned())
}

/// A percentile (nearest rank) of `v`, in milliseconds.
fn pct_ms(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let i = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize - 1;
    s[i.min(s.len() - 1)] as f64 / 1000.0
}

/// A soak runs in rounds of this length, each on a fresh cluster, so a round's history
/// and state (and the final reads) stay bounded however long the soak.
const ROUND: Duration = Duration::from_secs(300);

/// The main campaign: the nemesis schedule against a correct cluster. QUICK is one round
/// with every nemesis once; a soak is rounds of random nemeses until `o.duration`.
fn main_campaign(o: &Options, proxies: &Proxies) -> RunReport {
    let deadline = Instant::now() + o.duration;
    let mut total: Option<RunReport> = None;
    for round in 1u64.. {
        let r = main_round(o, proxies, round, deadline);
        let failed = r.error.is_some() || !r.crashes.is_empty() || !r.findings.ok();
        let dir = o.dir.join(format!("main-{round}"));
        if !failed && !o.quick {
            // Passed: its files prove nothing more (a soak would fill the disk).
            let _ = std::fs::remove_dir_all(&dir);
        }
        eprintln!(
            "chaos: round {round}: {} ops, {} acknowledged writes, {} nemeses, {}",
            r.findings.ops,
            r.findings.acked_writes,
            r.events.len(),
            if failed { "FAILED" } else { "passed" }
        );
        match total.as_mut() {
            None => total = Some(r),
            Some(t) => t.absorb(r),
        }
        if o.quick || failed || Instant::now() >= deadline {
            break;
        }
    }
    total.expect("at least one round")
}

fn main_round(o: &Options, proxies: &Proxies, round: u64, deadline: Instant) -> RunReport {
    let mut seed = Rng::new(o.seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let b = main_settings().drift_ppm_max as u64 * 8 / 10;
    let rates: Vec<i32> = (0..3)
        .map(|_| seed.below(2 * b + 1) as i32 - b as i32)
        .collect();
    let mut settings = main_settings();
    if !o.quick {
        // A soak's state grows: snapshots less often.
        settings.snapshot_entries = 20_000;
    }
    let name = format!("main-{round}");
    let mut run = match Run::start(o, &name, settings, proxies, &|id| {
        rates[(id - 1) as usize % 3]
    }) {
        Ok(r) => r,
        Err(e) => return failed_start(e),
    };
    let round_end = (Instant::now() + ROUND).min(deadline);
    let mut i = 0usize;
    let mut error = None;
    loop {
        let n = if o.quick {
            match Nemesis::ALL.get(i) {
                Some(n) => *n,
                None => break,
            }
        } else {
            if Instant::now() >= round_end {
                break;
            }
            Nemesis::ALL[run.rng.below(Nemesis::ALL.len() as u64) as usize]
        };
        i += 1;
        if let Err(e) = run.apply(n) {
            error = Some(format!("{n:?}: {e}"));
            break;
        }
    }
    let mut r = run.finish();
    if error.is_some() {
        r.error = error;
    }
    r
}

impl RunReport {
    /// Adds a later round's report to this one.
    fn absorb(&mut self, r: RunReport) {
        let f = &mut self.findings;
        f.ops += r.findings.ops;
        f.acked_writes += r.findings.acked_writes;
        f.lost += r.findings.lost;
        if f.not_linearizable.is_none() {
            f.not_linearizable = r.findings.not_linearizable;
        }
        f.two_leaders.extend(r.findings.two_leaders);
        f.phantom_reads += r.findings.phantom_reads;
        f.diverged.extend(r.findings.diverged);
        f.examples.extend(r.findings.examples);
        f.store.absorb(r.findings.store);
        self.events.extend(r.events);
        self.seconds += r.seconds;
        self.leader_recovery_us.extend(r.leader_recovery_us);
        if self.error.is_none() {
            self.error = r.error;
        }
        self.crashes.extend(r.crashes);
        self.hash_checks += r.hash_checks;
        // The proxies' counters run for the whole process.
        self.proxy_counts = r.proxy_counts;
    }
}

fn failed_start(e: String) -> RunReport {
    RunReport {
        findings: check::Findings::default(),
        events: Vec::new(),
        seconds: 0.0,
        leader_recovery_us: Vec::new(),
        error: Some(e),
        crashes: Vec::new(),
        proxy_counts: (0, 0, 0),
        hash_checks: 0,
    }
}

/// A negative control: a protocol bug switched on, the fault that exposes it, and the
/// same checkers. Caught means the checkers failed the run.
#[derive(Clone, Copy, Debug)]
pub enum Control {
    AckBeforePersist,
    ReadIndexWithoutQuorum,
    LeaseIgnoresDrift,
    /// The store's sequencer skips a revision now and then (`ringkv_store::controls`).
    SequencerSkipsRevisions,
}

impl Control {
    pub const ALL: [Control; 4] = [
        Control::AckBeforePersist,
        Control::ReadIndexWithoutQuorum,
        Control::LeaseIgnoresDrift,
        Control::SequencerSkipsRevisions,
    ];

    /// Whether a run with this control switched on was caught by the checker the bug
    /// must trip: loss for the fsync control, linearizability for the two read
    /// controls, the store checker's revision gaps for the sequencer control. For the
    /// fsync control the old leader's own safety assertion (a new leader's entry
    /// conflicting with one it had committed) also counts: it is what the lost
    /// acknowledgement looks like from inside, and it is not the switch.
    fn caught(self, r: &RunReport) -> bool {
        r.error.is_none()
            && match self {
                Control::AckBeforePersist => {
                    r.findings.lost > 0
                        || r.crashes
                            .iter()
                            .any(|x| x.contains("conflicts with committed entry"))
                }
                Control::SequencerSkipsRevisions => r.findings.store.gaps > 0,
                _ => r.findings.not_linearizable.is_some(),
            }
    }

    fn switch(self) -> &'static str {
        match self {
            Control::AckBeforePersist => "ack_before_persist",
            Control::ReadIndexWithoutQuorum => "read_index_without_quorum",
            Control::LeaseIgnoresDrift => "lease_ignores_drift",
            Control::SequencerSkipsRevisions => "sequencer_skips_revisions",
        }
    }
}

/// Runs one control; returns its report (the caller judges it: it must fail).
/// With `switched_on` false, the same schedule runs on a correct build: it must pass,
/// or a catch would prove nothing about the switch.
fn control_run(
    o: &Options,
    proxies: &Proxies,
    c: Control,
    switched_on: bool,
    attempt: u32,
) -> RunReport {
    let mut s = main_settings();
    if switched_on {
        s.controls = vec![c.switch().to_string()];
    }
    // The drift control: the bound is 30%, the leader's clock 29% slow and the others'
    // 29% fast, all within it. Correct leases stay short of the followers' timeouts;
    // leases that ignore the bound outlast them.
    // The fsync control: node 1 leads on a fast disk, the followers' syncs take 50 ms. A
    // node applies (and answers) only what its own disk holds, so the bug shows when the
    // followers acknowledged what they had not synced: after a power cut they come back
    // first, elect one of themselves without those entries, and overwrite the leader's.
    if matches!(c, Control::AckBeforePersist) {
        s.sync_delay_us = 50_000;
        s.fast_disk = Some(1);
    }
    let drift = matches!(c, Control::LeaseIgnoresDrift);
    if drift {
        s.drift_ppm_max = 300_000;
        s.election_ms = (1000, 1050);
        s.lease_ms = 690;
    }
    let name = format!(
        "control-{}{}-{attempt}",
        c.switch(),
        if switched_on { "" } else { "-off" }
    );
    let rate = |id: NodeId| match (drift, id) {
        (false, _) => 0,
        (true, 1) => -290_000,
        (true, _) => 290_000,
    };
    let mut run = match Run::start(o, &name, s, proxies, &rate) {
        Ok(r) => r,
        Err(e) => return failed_start(e),
    };
    let mut error = None;
    // One power cut for the fsync control: after it the old leader's log conflicts with
    // what the others committed, and its own assertions stop it for good. The sequencer
    // control needs no fault: load alone makes revisions to skip.
    let rounds = if matches!(
        c,
        Control::AckBeforePersist | Control::SequencerSkipsRevisions
    ) {
        1
    } else {
        4
    };
    for _ in 0..rounds {
        let r = match c {
            Control::AckBeforePersist => (|| {
                if run.leader()? != 1 {
                    run.admin_retry("/transfer-leader", 1)?;
                    run.hold(Duration::from_secs(1));
                }
                run.hold(Duration::from_secs(2));
                run.power_cut_leader_last()
            })(),
            Control::ReadIndexWithoutQuorum => {
                run.hold(Duration::from_secs(1));
                run.apply(Nemesis::PauseLeader)
                    .and_then(|_| run.apply(Nemesis::IsolateLeader))
            }
            Control::LeaseIgnoresDrift => (|| {
                // The slow node must lead.
                let l = run.leader()?;
                if l != 1 {
                    run.admin_retry("/transfer-leader", 1)?;
                    run.hold(Duration::from_secs(1));
                }
                run.hold(Duration::from_secs(1));
                run.apply(Nemesis::IsolateLeader)
            })(),
            Control::SequencerSkipsRevisions => {
                run.hold(Duration::from_secs(6));
                run.after()
            }
        };
        if let Err(e) = r {
            error = Some(e);
            break;
        }
    }
    let mut r = run.finish();
    if error.is_some() && r.error.is_none() {
        r.error = error;
    }
    r
}

/// Runs one negative control (the fsync control on up to four fresh clusters) and prints
/// its verdict; true when its own checker caught it.
fn judge_control(o: &Options, proxies: &Proxies, c: Control) -> bool {
    // The fsync control's one power cut does not always land while acknowledged
    // entries are unsynced on the followers: up to four fresh clusters, until caught.
    let attempts = if matches!(c, Control::AckBeforePersist) {
        4
    } else {
        1
    };
    let mut attempt = 1;
    let r = loop {
        let r = control_run(o, proxies, c, true, attempt);
        if c.caught(&r) || attempt == attempts {
            break r;
        }
        println!(
            "chaos: control {}: attempt {attempt} caught nothing; a fresh cluster",
            c.switch()
        );
        attempt += 1;
    };
    let flagged = c.caught(&r);
    let why = r.findings.failures();
    if let Some(s) = r.findings.store.failures().first() {
        // What the store checker saw of the same bug, whichever checker must catch it.
        println!(
            "chaos: control {}: the store checker: {}",
            c.switch(),
            s.chars().take(300).collect::<String>()
        );
    }
    for crash in &r.crashes {
        // The protocol's own assertions may stop a node running a broken protocol;
        // reported, but the catch must still come from the checker.
        println!("chaos: control: also: {crash}");
    }
    match (&r.error, flagged) {
        (Some(e), _) => println!("chaos: control {}: could not run: {e}", c.switch()),
        (None, true) => println!(
            "chaos: control {}: caught: {}",
            c.switch(),
            why.first()
                .or(r.crashes.first())
                .map_or("", |s| s.as_str())
                .chars()
                .take(300)
                .collect::<String>()
        ),
        (None, false) => println!(
            "chaos: control {}: MISSED ({} ops, {} acknowledged writes, no checker failed)",
            c.switch(),
            r.findings.ops,
            r.findings.acked_writes
        ),
    }
    flagged
}

/// Runs one negative control alone (`ringkv-chaos --control NAME`); true when caught.
pub fn run_control(o: &Options, name: &str) -> Result<bool, String> {
    let c = Control::ALL
        .into_iter()
        .find(|c| c.switch() == name)
        .ok_or_else(|| {
            let names: Vec<_> = Control::ALL.iter().map(|c| c.switch()).collect();
            format!(
                "no control named {name:?}; the controls are {}",
                names.join(", ")
            )
        })?;
    check_namespace()?;
    net::prepare()?;
    let proxies = Proxies::start(&[1, 2, 3], o.seed)?;
    Ok(judge_control(o, &proxies, c))
}

/// The whole campaign; prints the report and the summary line; true when it passed.
pub fn run(o: &Options) -> Result<bool, String> {
    check_namespace()?;
    net::prepare()?;
    let proxies = Proxies::start(&[1, 2, 3], o.seed)?;
    let started = Instant::now();
    let main = main_campaign(o, &proxies);
    let mut pass = main.error.is_none() && main.crashes.is_empty() && main.findings.ok();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &main.events {
        *counts.entry(e.nemesis.class()).or_default() += 1;
    }
    let f = &main.findings;
    println!(
        "chaos: main run {:.0} s, {} ops ({:.0} ops/s), {} acknowledged writes, {} nemeses",
        main.seconds,
        f.ops,
        f.ops as f64 / main.seconds.max(1.0),
        f.acked_writes,
        main.events.len()
    );
    println!(
        "chaos: leader kills {}: recovery to the first acknowledged write p50 {:.0} ms, p99 {:.0} ms",
        main.leader_recovery_us.len(),
        pct_ms(&main.leader_recovery_us, 50.0),
        pct_ms(&main.leader_recovery_us, 99.0)
    );
    println!(
        "chaos: link proxies dropped {} frames, reordered {}, delayed {}",
        main.proxy_counts.0, main.proxy_counts.1, main.proxy_counts.2
    );
    let st = &f.store;
    println!(
        "chaos: store workload: {} ops, {} acknowledged writes ({} txns failed their \
         compares), {} answered ranges, {} changes of its span ({} by writes whose answer was \
         lost, {} lease ends); phantom {}, lost {}, wrong answers {}, gaps {}, repeats {}, out \
         of real-time order {}, lease rules broken {}, diverged {}",
        st.ops,
        st.acked_writes,
        st.failed_txns,
        st.reads,
        st.changes,
        st.unknown_applied,
        st.lease_ends,
        st.phantom,
        st.lost,
        st.wrong_answers,
        st.gaps,
        st.repeats,
        st.real_time,
        st.lease,
        st.diverged.len()
    );
    if let Some(e) = &main.error {
        println!("chaos: FAILED to run: {e}");
    }
    for c in &main.crashes {
        println!("chaos: FAILED: {c}");
    }
    for line in main.findings.failures() {
        println!("chaos: FAILED: {line}");
    }
    // The drift control's schedule is the only one the main run does not cover (clocks
    // at a 30% bound): it runs once more with the switch off and must pass.
    let twin = control_run(o, &proxies, Control::LeaseIgnoresDrift, false, 1);
    if let Some(e) = &twin.error {
        println!("chaos: drift schedule, switch off: could not run: {e}");
        pass = false;
    } else if !twin.findings.ok() || !twin.crashes.is_empty() {
        for line in twin.findings.failures().iter().chain(&twin.crashes) {
            println!("chaos: FAILED: drift schedule, switch off: {line}");
        }
        pass = false;
    } else {
        println!(
            "chaos: drift schedule, switch off: passed ({} ops, {} acknowledged writes)",
            twin.findings.ops, twin.findings.acked_writes
        );
    }
    let mut caught = 0;
    for c in Control::ALL {
        if judge_control(o, &proxies, c) {
            caught += 1;
        }
    }
    pass &= caught == Control::ALL.len();
    if o.quick {
        for class in ["kill", "pause", "partition", "corrupt", "membership"] {
            if counts.get(class).copied().unwrap_or(0) == 0 {
                println!("chaos: FAILED: QUICK ran no {class} nemesis");
                pass = false;
            }
        }
        if f.acked_writes < 5000 {
            println!(
                "chaos: FAILED: QUICK acknowledged only {} writes (5000 needed)",
                f.acked_writes
            );
            pass = false;
        }
    }
    eprintln!(
        "chaos: finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let c = |k: &str| counts.get(k).copied().unwrap_or(0);
    println!(
        "chaos: ops={} acked_writes={} lost={} linearizable={} store_ops={} store_changes={} nemeses=kill:{},pause:{},partition:{},corrupt:{},membership:{} store_hashes_equal={} controls_caught={caught}/{}",
        f.ops,
        f.acked_writes,
        f.lost,
        if f.not_linearizable.is_none()
            && f.store.real_time == 0
            && main.error.is_none()
            && main.crashes.is_empty()
        {
            "yes"
        } else {
            "no"
        },
        f.store.ops,
        f.store.changes,
        c("kill"),
        c("pause"),
        c("partition"),
        c("corrupt"),
        c("membership"),
        main.hash_checks,
        Control::ALL.len()
    );
    Ok(pass)
}

/// Refuses to touch iptables in the host's network namespace: a namespace made for the
/// run (`unshare --net`) has no device but `lo`.
fn check_namespace() -> Result<(), String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev")
        .map_err(|e| format!("/proc/self/net/dev: {e}"))?;
    let others: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .filter(|d| *d != "lo")
        .collect();
    if !others.is_empty() {
        return Err(format!(
            "ringkv-chaos changes iptables rules, and this network namespace has devices \
             {others:?}: run it in a private one (`unshare --net ringkv-chaos ...`, as \
             `make chaos` does)"
        ));
    }
    Ok(())
}
