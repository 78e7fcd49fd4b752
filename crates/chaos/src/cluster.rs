//! The processes of one fault-campaign cluster: their configs, start, kill -9, pause,
//! data corruption, iptables partitions, and the HTTP calls the runner makes to them.
//!
//! Runs on the runner's main thread (blocking calls). Owns the child processes and the
//! run's directory. Must only be used inside the private network namespace the runner
//! made for the run: its iptables rules would otherwise change the host's.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringkv_client::http1;
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

/// One node the runner started at some point.
pub struct Node {
    pub child: Option<Child>,
    pub paused: bool,
    pub founder: bool,
    /// The clock rate its current process runs with (`testing.clock_rate_ppm`).
    pub clock_rate_ppm: i32,
    /// Removed from the cluster (its process stopped, its directory kept for the report).
    pub retired: bool,
}

pub struct Cluster {
    bin: PathBuf,
    pub dir: PathBuf,
    pub settings: Settings,
    pub founders: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, Node>,
    next_id: NodeId,
    cpus: usize,
    /// Processes that exited without the runner killing them: (node, exit status).
    pub exits: Vec<(NodeId, String)>,
}

impl Cluster {
    /// Writes the founders' configs under `dir` (emptied first) and starts them, each
    /// with the clock rate `rates` gives it.
    pub fn start_new(
        bin: &Path,
        dir: &Path,
        settings: Settings,
        founders: usize,
        rates: &dyn Fn(NodeId) -> i32,
    ) -> Result<Cluster, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut c = Cluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            settings,
            founders: (1..=founders as NodeId).collect(),
            nodes: BTreeMap::new(),
            next_id: founders as NodeId + 1,
            cpus,
            exits: Vec::new(),
        };
        for id in c.founders.clone() {
            c.nodes.insert(
                id,
                Node {
                    child: None,
                    paused: false,
                    founder: true,
                    clock_rate_ppm: rates(id),
                    retired: false,
                },
            );
            c.start(id)?;
        }
        Ok(c)
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.join(format!("db/{id}"))
    }

    pub fn log_dir(&self, id: NodeId) -> PathBuf {
        self.dir.join(format!("logs/{id}"))
    }

    fn config_path(&self, id: NodeId) -> PathBuf {
        self.dir.join(format!("n{id}.toml"))
    }

    fn write_config(&self, id: NodeId) -> Result<(), String> {
        let s = &self.settings;
        let node = &self.nodes[&id];
        let mut members: Vec<String> = self
            .founders
            .iter()
            .map(|f| {
                format!(
                    "{{ id = {f}, address = \"{}\", role = 1, status = 2 }}",
                    node_addr(*f)
                )
            })
            .collect();
        if !node.founder {
            members.push(format!(
                "{{ id = {id}, address = \"{}\", role = 3, status = 0 }}",
                node_addr(id)
            ));
        }
        let dial: Vec<String> = if s.proxied && node.founder {
            self.founders
                .iter()
                .filter(|f| **f != id)
                .map(|f| format!("\"{f}\" = \"{}\"", proxy_addr(id, *f)))
                .collect()
        } else {
            Vec::new()
        };
        let controls: Vec<String> = s.controls.iter().map(|c| format!("\"{c}\"")).collect();
        let cpu = (id as usize) % self.cpus;
        let toml = format!(
            "[cluster]\nnode_id = {id}\nlisten_address = \"{addr}\"\n\
             initial_cluster = [{members}]\ndata_dir = \"{data}\"\n\n\
             [raft]\nelection_timeout_min_ms = {emin}\nelection_timeout_max_ms = {emax}\n\
             heartbeat_interval_ms = {hb}\nclock_drift_ppm_max = {drift}\n\
             request_timeout_ms = {rt}\n\n\
             [raft.read_consistency]\nlease_duration_ms = {lease}\n\n\
             [raft.persistence]\nstrategy = \"DiskFirst\"\n\n\
             [raft.snapshot]\ninterval_entries = {snap}\n\n\
             [runtime]\ncores = [{cpu}]\nraft_core = {cpu}\n\n\
             [testing]\nclock_rate_ppm = {rate}\nsync_delay_us = {sync}\npeer_dial = {{ {dial} }}\ncontrols = [{controls}]\n",
            addr = node_addr(id),
            members = members.join(", "),
            data = self.data_dir(id).display(),
            emin = s.election_ms.0,
            emax = s.election_ms.1,
            hb = s.heartbeat_ms,
            drift = s.drift_ppm_max,
            rt = s.request_timeout_ms,
            lease = s.lease_ms,
            snap = s.snapshot_entries,
            rate = node.clock_rate_ppm,
            sync = if s.fast_disk == Some(id) {
                0
            } else {
                s.sync_delay_us
            },
            dial = dial.join(", "),
            controls = controls.join(", "),
        );
        std::fs::write(self.config_path(id), toml).map_err(|e| format!("config of node {id}: {e}"))
    }

    /// Starts node `id`'s process (its config rewritten: the clock rate may have changed).
    pub fn start(&mut self, id: NodeId) -> Result<(), String> {
        self.write_config(id)?;
        let log_dir = self.log_dir(id);
        let mut cmd = Command::new(&self.bin);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                // Killed with the runner, whatever ends it (a node must not outlive the
                // namespace's owner and keep the run directory busy).
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // Panics go to stderr only: keep it beside the node's log.
        std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join("stderr.log"))
            .map_err(|e| format!("{}: {e}", log_dir.display()))?;
        let child = cmd
            .args(["serve", "--config"])
            .arg(self.config_path(id))
            .env("LOG_DIR", &log_dir)
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let n = self.nodes.get_mut(&id).expect("known node");
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    /// kill -9; waits for the exit.
    pub fn kill(&mut self, id: NodeId) {
        self.kill_many(&[id]);
    }

    /// kill -9 to all of `ids` at once (a power cut hits them together), then waits
    /// for each to exit.
    pub fn kill_many(&mut self, ids: &[NodeId]) {
        // One that already died on its own is recorded, not hidden by this kill.
        for id in ids {
            self.running(*id);
        }
        for id in ids {
            if let Some(c) = self.nodes.get_mut(id).and_then(|n| n.child.as_mut()) {
                let _ = c.kill();
            }
        }
        for id in ids {
            let n = self.nodes.get_mut(id).expect("known node");
            if let Some(mut c) = n.child.take() {
                let _ = c.wait();
            }
            n.paused = false;
        }
    }

    pub fn pause(&mut self, id: NodeId) {
        if let Some(pid) = self.pid(id) {
            signal(pid, "STOP");
            self.nodes.get_mut(&id).expect("known").paused = true;
        }
    }

    pub fn resume(&mut self, id: NodeId) {
        if let Some(pid) = self.pid(id) {
            signal(pid, "CONT");
        }
        self.nodes.get_mut(&id).expect("known").paused = false;
    }

    fn pid(&self, id: NodeId) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(|c| c.id())
    }

    /// Whether node `id` has a live process (reaping one that exited).
    pub fn running(&mut self, id: NodeId) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        match n.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(r) => {
                // Not killed by the runner: it exited on its own.
                let how = match r {
                    Ok(Some(s)) => s.to_string(),
                    Ok(None) => "running".to_string(),
                    Err(e) => e.to_string(),
                };
                self.exits.push((id, how));
                n.child = None;
                false
            }
            None => false,
        }
    }

    /// The nodes that are members now (not retired), founders and joiners.
    pub fn members(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.retired)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Members with a running, unpaused process.
    pub fn live(&mut self) -> Vec<NodeId> {
        self.members()
            .into_iter()
            .filter(|id| self.running(*id) && !self.nodes[id].paused)
            .collect()
    }

    /// `/status` of node `id`, or None when it does not answer within a second.
    pub fn status(&self, id: NodeId) -> Option<serde_json::Value> {
        let (st, body) = http(node_addr(id), "GET", "/status", "", Duration::from_secs(1))?;
        (st == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// The leader the live members agree on (one that says it leads and is ready, with
    /// the highest term), if any.
    pub fn leader(&mut self) -> Option<NodeId> {
        let mut best: Option<(u64, NodeId)> = None;
        for id in self.live() {
            if let Some(s) = self.status(id)
                && s["role"] == "leader"
                && s["leader_ready"] == true
            {
                let term = s["term"].as_u64().unwrap_or(0);
                if best.is_none_or(|b| term > b.0) {
                    best = Some((term, id));
                }
            }
        }
        best.map(|b| b.1)
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

    /// An operator call (`/promote`, `/remove`, `/transfer-leader`) through node `via`.
    pub fn admin(&self, via: NodeId, path: &str, node_id: NodeId) -> (u16, serde_json::Value) {
        let body = format!("{{\"node_id\": {node_id}}}");
        match http(node_addr(via), "POST", path, &body, Duration::from_secs(10)) {
            Some((st, b)) => (st, serde_json::from_str(&b).unwrap_or_default()),
            None => (0, serde_json::Value::Null),
        }
    }

    /// A new node id, configured as a joiner (founders plus itself as a learner), started.
    pub fn add_joiner(&mut self, clock_rate_ppm: i32) -> Result<NodeId, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.nodes.insert(
            id,
            Node {
                child: None,
                paused: false,
                founder: false,
                clock_rate_ppm,
                retired: false,
            },
        );
        self.start(id)?;
        Ok(id)
    }

    /// Marks `id` removed from the cluster and stops its process.
    pub fn retire(&mut self, id: NodeId) {
        self.kill(id);
        if let Some(n) = self.nodes.get_mut(&id) {
            n.retired = true;
        }
    }

    /// Every "Became leader" line of every node's logs: (term, node).
    pub fn leader_claims(&self) -> Vec<(u64, NodeId)> {
        let mut out = Vec::new();
        for id in self.nodes.keys() {
            let Ok(rd) = std::fs::read_dir(self.log_dir(*id)) else {
                continue;
            };
            for f in rd.flatten() {
                let Ok(text) = std::fs::read_to_string(f.path()) else {
                    continue;
                };
                for line in text.lines().filter(|l| l.contains("Became leader")) {
                    let field = |name: &str| {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(name))
                            .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
                    };
                    if let (Some(n), Some(t)) = (field("node="), field("term=")) {
                        out.push((t, n));
                    }
                }
            }
        }
        out
    }

    /// Stops every process (resuming paused ones first).
    pub fn stop_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Sends a signal by name with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// One HTTP/1.1 request; (status, body), or None when the node does not answer in time.
pub fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &str,
    limit: Duration,
) -> Option<(u16, String)> {
    let r = http1::exchange(
        &addr.to_string(),
        method,
        target,
        &[],
        body.as_bytes(),
        limit,
    )
    .ok()?;
    Some((r.status, r.body))
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
