//! `Cluster`: the nodes of one run, by id, in one directory (`n<id>.toml`, `db/<id>`,
//! `logs/<id>`): their configs, processes, logs and HTTP API.
//!
//! Runs on the thread that owns it (a test's, or the campaign runner's main thread), which
//! must also be the one that starts its nodes (`process`: they die with it). Owns the
//! child processes (killed on drop) and the files it writes in its directory; the
//! directory itself stays (the caller decides: a test removes it, the campaign keeps it
//! for its report). Must not touch node internals: processes, signals, files and the HTTP
//! API only.
//!
//! Where nodes listen is the caller's (an `Addresses` function); so is everything a
//! caller does between these calls (faults, proxies, checks).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use ringkv_client::http1::{self, ExchangeError, Response};
use ringkv_raft::NodeId;
use serde_json::Value;

use crate::config::{Listener, NodeSpec, Opts, node_toml};
use crate::{api, logs, process};

/// Where the nodes listen: an address for node `id`'s listener, asked once per listener
/// when the node is added (tests: a free loopback port; the campaign: the node's own
/// address in its namespace).
pub type Addresses = Box<dyn FnMut(NodeId, Listener) -> SocketAddr + Send + Sync>;

/// One node of the cluster.
#[derive(Debug)]
pub struct Node {
    pub spec: NodeSpec,
    pub address: SocketAddr,
    pub metrics_address: Option<SocketAddr>,
    /// The process the harness started and has not seen end.
    child: Option<Child>,
    /// Stopped with SIGSTOP (`pause`) and not resumed.
    pub paused: bool,
}

pub struct Cluster {
    bin: PathBuf,
    pub dir: PathBuf,
    pub opts: Opts,
    addresses: Addresses,
    nodes: BTreeMap<NodeId, Node>,
    /// Processes that ended without the harness stopping them: (node, how), in the order
    /// they were noticed (`running`, `start`, `kill`).
    pub exits: Vec<(NodeId, String)>,
    /// How long a `/status` may take (the campaign asks often and moves on).
    pub status_timeout: Duration,
    /// How long any other call may take.
    pub call_timeout: Duration,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl Cluster {
    /// An empty cluster in `dir` (emptied first) running `bin` (the `ringkv` binary; the
    /// campaign's is built with `crash-sim`).
    pub fn new(
        bin: &Path,
        dir: &Path,
        opts: Opts,
        addresses: impl FnMut(NodeId, Listener) -> SocketAddr + Send + Sync + 'static,
    ) -> Result<Cluster, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Cluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            opts,
            addresses: Box::new(addresses),
            nodes: BTreeMap::new(),
            exits: Vec::new(),
            status_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(10),
        })
    }

    /// Adds node `id` (a founder unless `spec.joiner`) with its addresses and writes its
    /// config; starts nothing. Every config lists the founders, so a founder's addition
    /// rewrites them all (a node reads its config only when it starts).
    pub fn add(&mut self, id: NodeId, spec: NodeSpec) -> Result<(), String> {
        let founder = !spec.joiner;
        assert!(!self.nodes.contains_key(&id), "node {id} exists already");
        let address = (self.addresses)(id, Listener::Node);
        let metrics_address = self
            .opts
            .metrics
            .then(|| (self.addresses)(id, Listener::Metrics));
        self.nodes.insert(
            id,
            Node {
                spec,
                address,
                metrics_address,
                child: None,
                paused: false,
            },
        );
        if founder {
            self.ids()
                .into_iter()
                .try_for_each(|n| self.write_config(n))
        } else {
            self.write_config(id)
        }
    }

    /// The nodes' ids, in order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Node `id`, to change its spec (then `write_config`).
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn address(&self, id: NodeId) -> SocketAddr {
        self.node(id).address
    }

    pub fn config_path(&self, id: NodeId) -> PathBuf {
        self.dir.join(format!("n{id}.toml"))
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.join(format!("db/{id}"))
    }

    pub fn log_dir(&self, id: NodeId) -> PathBuf {
        self.dir.join(format!("logs/{id}"))
    }

    /// The founders and their addresses, in id order.
    pub fn founders(&self) -> Vec<(NodeId, SocketAddr)> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.spec.joiner)
            .map(|(id, n)| (*id, n.address))
            .collect()
    }

    /// (Re)writes node `id`'s config from the cluster's `Opts` and its spec.
    pub fn write_config(&self, id: NodeId) -> Result<(), String> {
        let n = self.node(id);
        let text = node_toml(
            &self.opts,
            id,
            &n.spec,
            n.address,
            n.metrics_address,
            &self.founders(),
            &self.data_dir(id),
        );
        std::fs::write(self.config_path(id), text).map_err(|e| format!("config of node {id}: {e}"))
    }

    /// Starts node `id` on its config as it is on disk. Refused while its last process
    /// runs.
    pub fn start(&mut self, id: NodeId) -> Result<(), String> {
        if self.running(id) {
            return Err(format!("node {id} runs already"));
        }
        let child = process::spawn(
            &self.bin,
            &self.config_path(id),
            &self.log_dir(id),
            process::Stderr::ToLogDir,
        )?;
        let n = self.node_mut(id);
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    /// Starts node `id` expecting it to exit on its own within `limit` (a refused start):
    /// its exit status and stderr. Not counted as one of the cluster's processes.
    pub fn start_expecting_exit(
        &mut self,
        id: NodeId,
        limit: Duration,
    ) -> Result<(ExitStatus, String), String> {
        if self.running(id) {
            return Err(format!("node {id} runs already"));
        }
        process::run_to_exit(&self.bin, &self.config_path(id), &self.log_dir(id), limit)
    }

    /// Whether the harness holds a process of node `id` (started, not stopped by it, maybe
    /// ended on its own unnoticed): what a test that starts and stops nodes itself asks.
    pub fn has_process(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    /// Whether node `id` has a live process; one found ended is reaped and recorded in
    /// `exits`.
    pub fn running(&mut self, id: NodeId) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        let Some(child) = n.child.as_mut() else {
            return false;
        };
        let how = match child.try_wait() {
            Ok(None) => return true,
            Ok(Some(st)) => st.to_string(),
            Err(e) => e.to_string(),
        };
        n.child = None;
        n.paused = false;
        self.exits.push((id, how));
        false
    }

    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(Child::id)
    }

    /// SIGKILL; waits for the exit.
    pub fn kill(&mut self, id: NodeId) {
        self.kill_many(&[id]);
    }

    /// SIGKILL to all of `ids` at once (a power cut hits them together), then waits for
    /// each to exit. One that had already ended on its own is recorded in `exits`, not
    /// hidden by this kill.
    pub fn kill_many(&mut self, ids: &[NodeId]) {
        for id in ids {
            self.running(*id);
        }
        for id in ids {
            if let Some(c) = self.nodes.get_mut(id).and_then(|n| n.child.as_mut()) {
                // Kills a stopped (paused) process as well.
                let _ = c.kill();
            }
        }
        for id in ids {
            if let Some(n) = self.nodes.get_mut(id) {
                if let Some(mut c) = n.child.take() {
                    let _ = c.wait();
                }
                n.paused = false;
            }
        }
    }

    /// SIGTERM; waits up to `limit` for the exit: its status and how long it took.
    pub fn terminate(
        &mut self,
        id: NodeId,
        limit: Duration,
    ) -> Result<(ExitStatus, Duration), String> {
        let pid = self.pid(id).ok_or(format!("node {id} is not running"))?;
        let t = Instant::now();
        process::signal(pid, "TERM")?;
        let child = self.node_mut(id).child.as_mut().expect("running");
        match process::wait_exit(child, limit)? {
            Some(st) => {
                let n = self.node_mut(id);
                n.child = None;
                n.paused = false;
                Ok((st, t.elapsed()))
            }
            None => Err(format!("node {id} still ran {limit:?} after SIGTERM")),
        }
    }

    /// `kill -SIG` (e.g. "STOP", "CONT") to node `id`'s process.
    pub fn signal(&self, id: NodeId, sig: &str) -> Result<(), String> {
        let pid = self.pid(id).ok_or(format!("node {id} is not running"))?;
        process::signal(pid, sig)
    }

    /// SIGSTOP: the process is frozen (no timers, no I/O) until `resume`.
    pub fn pause(&mut self, id: NodeId) {
        if self.signal(id, "STOP").is_ok() {
            self.node_mut(id).paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: NodeId) {
        let _ = self.signal(id, "CONT");
        self.node_mut(id).paused = false;
    }

    /// Removes node `id`'s data directory (its process should be stopped).
    pub fn wipe(&self, id: NodeId) -> Result<(), String> {
        let d = self.data_dir(id);
        std::fs::remove_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))
    }

    /// Kills every process.
    pub fn stop_all(&mut self) {
        let ids = self.ids();
        self.kill_many(&ids);
    }

    /// Everything node `id` wrote in its log directory (`logs::read`).
    pub fn log(&self, id: NodeId) -> String {
        logs::read(&self.log_dir(id))
    }

    /// Every (term, node) a "Became leader" line of any node's logs claims, each once, in
    /// order.
    pub fn leader_claims(&self) -> Vec<(u64, NodeId)> {
        let mut all = std::collections::BTreeSet::new();
        for id in self.nodes.keys() {
            all.extend(logs::leader_claims(&self.log(*id)));
        }
        all.into_iter().collect()
    }

    /// One request to node `id`, within `call_timeout`.
    pub fn http(
        &self,
        id: NodeId,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, ExchangeError> {
        let addr = self.address(id).to_string();
        http1::exchange(&addr, method, target, headers, body, self.call_timeout)
    }

    /// Node `id`'s `/status` (200 with JSON), within `status_timeout`.
    pub fn status(&self, id: NodeId) -> Option<Value> {
        api::status(self.address(id), self.status_timeout)
    }

    /// The leader among `among` now (`api::newest_leader` of those that answer).
    pub fn newest_leader(&self, among: &[NodeId]) -> Option<NodeId> {
        let st: Vec<(NodeId, Value)> = among
            .iter()
            .filter_map(|id| Some((*id, self.status(*id)?)))
            .collect();
        api::newest_leader(&st)
    }

    /// The leader all of `among` answer with and agree on (`api::agreed_leader`).
    pub fn agreed_leader(&self, among: &[NodeId]) -> Option<NodeId> {
        let st: Vec<Value> = among
            .iter()
            .map(|id| self.status(*id))
            .collect::<Option<_>>()?;
        api::agreed_leader(&st)
    }

    /// An operator call about `node_id` through node `via` (`api::admin`).
    pub fn admin(
        &self,
        via: NodeId,
        path: &str,
        node_id: NodeId,
        token: Option<&str>,
    ) -> Option<(u16, Value)> {
        api::admin(self.address(via), path, node_id, token, self.call_timeout)
    }

    pub fn put(&self, id: NodeId, key: &str, value: &str) -> Result<Response, ExchangeError> {
        api::put(self.address(id), key, value, self.call_timeout)
    }

    pub fn get(&self, id: NodeId, key: &str, consistency: &str) -> Result<Response, ExchangeError> {
        self.http(id, "GET", &api::get_target(key, consistency), &[], b"")
    }

    /// One request to node `id`'s metrics listener; `None` when it has none.
    pub fn metrics_http(
        &self,
        id: NodeId,
        method: &str,
        target: &str,
    ) -> Option<Result<Response, ExchangeError>> {
        let a = self.node(id).metrics_address?;
        Some(http1::exchange(
            &a.to_string(),
            method,
            target,
            &[],
            b"",
            self.call_timeout,
        ))
    }

    /// Node `id`'s `GET /metrics` text, when it serves one and answers 200.
    pub fn metrics(&self, id: NodeId) -> Option<String> {
        api::metrics(self.node(id).metrics_address?, self.call_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_lists_all_founders_and_a_joiner_itself() {
        let dir = std::env::temp_dir().join(format!("ringkv-harness-{}", std::process::id()));
        let opts = Opts {
            metrics: true,
            ..Opts::default()
        };
        let mut next = 5000;
        let mut c = Cluster::new(Path::new("/nonexistent/ringkv"), &dir, opts, move |_, l| {
            next += 1;
            let port = if l == Listener::Metrics {
                next + 100
            } else {
                next
            };
            SocketAddr::from(([127, 0, 0, 1], port))
        })
        .unwrap();
        for id in 1..=3 {
            c.add(id, NodeSpec::default()).unwrap();
        }
        let joiner = NodeSpec {
            joiner: true,
            ..NodeSpec::default()
        };
        c.add(4, joiner).unwrap();
        let text = |id: NodeId| std::fs::read_to_string(c.config_path(id)).unwrap();
        // The first founder's config was rewritten when the others came.
        for id in 1..=4 {
            assert_eq!(
                text(id).matches("role = 1, status = 2").count(),
                3,
                "{}",
                text(id)
            );
        }
        assert!(text(4).contains("{ id = 4, address = \"127.0.0.1:5007\", role = 3, status = 0 }"));
        assert_eq!(c.address(2), SocketAddr::from(([127, 0, 0, 1], 5003)));
        assert_eq!(
            c.node(2).metrics_address,
            Some(SocketAddr::from(([127, 0, 0, 1], 5104)))
        );
        assert_eq!(c.founders().len(), 3);
        // Nothing runs; a binary that does not exist is an error, not a panic.
        assert!(!c.running(1) && !c.has_process(1));
        assert!(c.start(1).unwrap_err().contains("cannot start"));
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
