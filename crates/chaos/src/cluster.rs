//! One fault-campaign cluster: what is the campaign's own on top of `ringkv_harness`
//! (which writes the configs, starts, kills and pauses the processes, reads their logs and
//! makes the HTTP calls): the nodes' addresses in the namespace, link-proxy dialing, a CPU
//! and a clock rate per node, joiners and retired members, and iptables partitions (`net`).
//!
//! Runs on the runner's main thread (blocking calls). Owns the run's directory and, through
//! the harness, the child processes. Must only be used inside the private network
//! namespace the runner made for the run: its iptables rules would otherwise change the
//! host's.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ringkv_harness::{self as harness, NodeSpec, Opts, Testing};
use ringkv_raft::NodeId;

/// Every node listens on this port, each on its own address.
pub const PORT: u16 = 7000;

/// Node `id`'s address: 127.0.x.y, distinct per id, so iptables can tell nodes apart.
pub fn node_addr(id: NodeId) -> SocketAddr {
    assert!(
        (1..50_000).contains(&id),
        "node id {id} out of the campaign's range"
    );
    let ip = Ipv4Addr::new(127, 0, (id / 200) as u8, (id % 200) as u8 + 10);
    SocketAddr::new(ip.into(), PORT)
}

/// Where `from` dials `to` when link proxies are on: 127.1.from.to.
pub fn proxy_addr(from: NodeId, to: NodeId) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(127, 1, from as u8, to as u8).into(), PORT)
}

/// The timing and protocol settings every node of a run gets.
#[derive(Clone, Debug)]
pub struct Settings {
    pub election_ms: (u64, u64),
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    pub drift_ppm_max: u32,
    pub request_timeout_ms: u64,
    pub snapshot_entries: u64,
    /// Each fdatasync's writes stay in memory this long first (`testing.sync_delay_us`).
    pub sync_delay_us: u64,
    /// This node's syncs take no extra time (the fsync control's leader).
    pub fast_disk: Option<NodeId>,
    /// Negative controls switched on in every node (`testing.controls`).
    pub controls: Vec<String>,
    /// Founders dial each other through the link proxies.
    pub proxied: bool,
}

/// A fault-campaign cluster: `ringkv_harness::Cluster` (configs, processes, logs, HTTP;
/// reached through `Deref`) plus what is the campaign's: node addresses in the namespace,
/// link proxies in the founders' configs, the nodes' CPUs (`Cluster::cores`), clock rates,
/// joiners under new ids, and retired members.
pub struct Cluster {
    h: harness::Cluster,
    pub settings: Settings,
    /// Removed from the cluster (process stopped, directory kept for the report).
    retired: BTreeSet<NodeId>,
    next_id: NodeId,
    cpus: usize,
}

impl Deref for Cluster {
    type Target = harness::Cluster;
    fn deref(&self) -> &harness::Cluster {
        &self.h
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut harness::Cluster {
        &mut self.h
    }
}

impl Cluster {
    /// A node's CPUs: one each, spread over the machine's, except every third node
    /// (1, 4, ...), which runs two shards: the campaign then holds the cross-shard
    /// coordination (revisions from the sequencer, txns and ranges over both shards) to
    /// the one-shard replicas' states and hashes, under the same faults.
    fn cores(&self, id: NodeId) -> Vec<usize> {
        let first = id as usize % self.cpus;
        if id % 3 == 1 && self.cpus > 1 {
            vec![first, (first + 1) % self.cpus]
        } else {
            vec![first]
        }
    }

    /// Writes the founders' configs under `dir` (emptied first) and starts them, each
    /// with the clock rate `rates` gives it.
    pub fn start_new(
        bin: &Path,
        dir: &Path,
        settings: Settings,
        founders: usize,
        rates: &dyn Fn(NodeId) -> i32,
    ) -> Result<Cluster, String> {
        let s = &settings;
        let opts = Opts {
            election_ms: s.election_ms,
            heartbeat_ms: s.heartbeat_ms,
            lease_ms: s.lease_ms,
            drift_ppm_max: Some(s.drift_ppm_max),
            request_timeout_ms: Some(s.request_timeout_ms),
            // Snapshots every `snapshot_entries` whatever the state's size: the campaign
            // wants many taken and installed.
            extra: format!(
                "[raft.snapshot]\ninterval_entries = {}\nlog_growth_percent_min = 0\n",
                s.snapshot_entries
            )
            .into(),
            ..Opts::default()
        };
        let mut h = harness::Cluster::new(bin, dir, opts, |id, _| node_addr(id))?;
        // Status is asked often, of nodes that may be paused or cut off: move on soon.
        h.status_timeout = Duration::from_secs(1);
        h.call_timeout = Duration::from_secs(10);
        let mut c = Cluster {
            h,
            settings,
            retired: BTreeSet::new(),
            next_id: founders as NodeId + 1,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let ids: Vec<NodeId> = (1..=founders as NodeId).collect();
        for id in &ids {
            let spec = c.spec(*id, &ids, rates(*id));
            c.h.add(*id, spec)?;
        }
        for id in ids {
            c.start(id)?;
        }
        Ok(c)
    }

    /// What node `id`'s config says beyond the shared settings. `founders`: the founders'
    /// ids when `id` is one (it dials the others through the link proxies), else empty.
    fn spec(&self, id: NodeId, founders: &[NodeId], clock_rate_ppm: i32) -> NodeSpec {
        let s = &self.settings;
        let dial = if s.proxied {
            founders
                .iter()
                .filter(|f| **f != id)
                .map(|f| (*f, proxy_addr(id, *f)))
                .collect()
        } else {
            Vec::new()
        };
        NodeSpec {
            joiner: founders.is_empty(),
            cores: Some(self.cores(id)),
            testing: Some(Testing {
                clock_rate_ppm,
                sync_delay_us: if s.fast_disk == Some(id) {
                    0
                } else {
                    s.sync_delay_us
                },
                peer_dial: dial,
                controls: s.controls.clone(),
            }),
        }
    }

    /// Starts node `id`'s process, its config rewritten first (the clock rate may have
    /// changed).
    pub fn start(&mut self, id: NodeId) -> Result<(), String> {
        self.h.write_config(id)?;
        self.h.start(id)
    }

    /// The clock rate node `id`'s next process runs with.
    pub fn set_clock_rate(&mut self, id: NodeId, ppm: i32) {
        if let Some(t) = self.h.node_mut(id).spec.testing.as_mut() {
            t.clock_rate_ppm = ppm;
        }
    }

    pub fn founder(&self, id: NodeId) -> bool {
        !self.h.node(id).spec.joiner
    }

    /// The nodes that are members now (not retired), founders and joiners.
    pub fn members(&self) -> Vec<NodeId> {
        self.h
            .ids()
            .into_iter()
            .filter(|id| !self.retired.contains(id))
            .collect()
    }

    /// Members with a running, unpaused process.
    pub fn live(&mut self) -> Vec<NodeId> {
        self.members()
            .into_iter()
            .filter(|id| self.h.running(*id) && !self.h.node(*id).paused)
            .collect()
    }

    /// The leader the live members agree on (one that says it leads and is ready, with
    /// the highest term), if any.
    pub fn leader(&mut self) -> Option<NodeId> {
        let live = self.live();
        self.h.newest_leader(&live)
    }

    pub fn wait_leader(&mut self, limit: Duration) -> Option<NodeId> {
        let until = Instant::now() + limit;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new node id, configured as a joiner (founders plus itself as a learner), started.
    pub fn add_joiner(&mut self, clock_rate_ppm: i32) -> Result<NodeId, String> {
        let id = self.next_id;
        self.next_id += 1;
        let spec = self.spec(id, &[], clock_rate_ppm);
        self.h.add(id, spec)?;
        self.start(id)?;
        Ok(id)
    }

    /// Marks `id` removed from the cluster and stops its process.
    pub fn retire(&mut self, id: NodeId) {
        self.h.kill(id);
        self.retired.insert(id);
    }
}

/// iptables rules of the run's network namespace.
pub mod net {
    use super::*;

    fn iptables(args: &[String]) -> Result<(), String> {
        let out = Command::new("iptables")
            .args(args)
            .output()
            .map_err(|e| format!("iptables: {e} (install it: apt-get install iptables)"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "iptables {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Drops every packet from `from` to `to` (one direction; a TCP connection between
    /// them then stalls both ways, as in a real one-way partition).
    pub fn drop_link(from: NodeId, to: NodeId) -> Result<(), String> {
        iptables(&[
            "-A".into(),
            "INPUT".into(),
            "-s".into(),
            node_addr(from).ip().to_string(),
            "-d".into(),
            node_addr(to).ip().to_string(),
            "-j".into(),
            "DROP".into(),
        ])
    }

    /// Cuts every link between the two groups, both ways.
    pub fn split(a: &[NodeId], b: &[NodeId]) -> Result<(), String> {
        for x in a {
            for y in b {
                drop_link(*x, *y)?;
                drop_link(*y, *x)?;
            }
        }
        Ok(())
    }

    pub fn heal() -> Result<(), String> {
        iptables(&["-F".into(), "INPUT".into()])
    }

    /// Brings up the loopback device of a fresh namespace and checks iptables works.
    pub fn prepare() -> Result<(), String> {
        let st = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .map_err(|e| format!("ip: {e}"))?;
        if !st.success() {
            return Err("`ip link set lo up` failed".into());
        }
        heal()
    }
}
