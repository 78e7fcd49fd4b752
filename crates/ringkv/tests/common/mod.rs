//! The tests' (and benches') view of `ringkv_harness::Cluster`: what is theirs only.
//! Nodes are numbered from 0 here (node `i` has id `i + 1`); each test gets free loopback
//! ports and its own directory under the target's tmp dir, removed with every process on
//! drop (`RINGKV_KEEP_TEST_DIR=1` keeps it). Everything else (configs, processes, logs,
//! HTTP) is the harness's; this only turns indices into ids and a miss into a panic.
//!
//! Runs on the test's thread (its nodes die with it). Must not touch node internals.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use ringkv_client::http1;
use ringkv_harness::{NodeId, NodeSpec, api};

pub use ringkv_harness::Opts;

/// How long one HTTP call of a test may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Cluster {
    pub dir: PathBuf,
    pub ports: Vec<u16>,
    /// Each node's metrics port (`Opts::metrics`), `None` without one.
    pub metrics_ports: Vec<Option<u16>>,
    h: ringkv_harness::Cluster,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Before the directory goes: a running node would keep writing into it.
        self.h.stop_all();
        // RINGKV_KEEP_TEST_DIR=1 keeps data and logs for a post-mortem.
        if std::env::var_os("RINGKV_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept {}", self.dir.display());
        }
    }
}

/// Node `i`'s id.
fn id(i: usize) -> NodeId {
    i as NodeId + 1
}

/// 127.0.0.1:`port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A free port below the kernel's ephemeral range (32768 and up): a port from that range
/// can be taken as the local end of some other test's outbound connection while its node
/// is down, and the node could not restart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::process::id() as u64 * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((seed + n * 104_729) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn json(b: &str) -> serde_json::Value {
    serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {b}"))
}

/// Polls `f` every 20 ms until it returns Some, for at most `secs` seconds.
pub fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Cluster {
    /// Writes the three configs and starts the nodes.
    pub fn new(tag: &str, o: Opts) -> Self {
        let mut c = Self::with_joiners(tag, o, 0);
        for i in 0..3 {
            c.start(i);
        }
        c
    }

    /// Writes configs for three founders and `joiners` learners (nodes 4, 5, ...: the
    /// founders plus themselves as role 3, status 0) and starts nothing.
    pub fn with_joiners(tag: &str, o: Opts, joiners: usize) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("node-{tag}-{}", std::process::id()));
        let bin = Path::new(env!("CARGO_BIN_EXE_ringkv"));
        let mut h = ringkv_harness::Cluster::new(bin, &dir, o, |_, _| loopback(free_port()))
            .unwrap_or_else(|e| panic!("{e}"));
        h.status_timeout = CALL_TIMEOUT;
        h.call_timeout = CALL_TIMEOUT;
        let n = 3 + joiners;
        for i in 0..n {
            let spec = NodeSpec {
                joiner: i >= 3,
                ..NodeSpec::default()
            };
            h.add(id(i), spec).unwrap_or_else(|e| panic!("{e}"));
        }
        Self {
            dir,
            ports: (0..n).map(|i| h.address(id(i)).port()).collect(),
            metrics_ports: (0..n)
                .map(|i| h.node(id(i)).metrics_address.map(|a| a.port()))
                .collect(),
            h,
        }
    }

    pub fn config(&self, i: usize) -> PathBuf {
        self.h.config_path(id(i))
    }

    pub fn log_dir(&self, i: usize) -> PathBuf {
        self.h.log_dir(id(i))
    }

    pub fn start(&mut self, i: usize) {
        self.h.start(id(i)).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts node `i` expecting it to exit on its own; returns its status and stderr.
    pub fn start_expecting_exit(&mut self, i: usize, secs: u64) -> (ExitStatus, String) {
        self.h
            .start_expecting_exit(id(i), Duration::from_secs(secs))
            .unwrap_or_else(|e| panic!("node {}: {e}", i + 1))
    }

    pub fn running(&self, i: usize) -> bool {
        self.h.has_process(id(i))
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) {
        self.h.kill(id(i));
    }

    /// SIGTERM; waits for the exit and returns its status and how long it took.
    pub fn terminate(&mut self, i: usize) -> (ExitStatus, Duration) {
        self.h
            .terminate(id(i), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.h.pid(id(i)).expect("running")
    }

    /// Sends `kill -SIG` (e.g. "STOP", "CONT") to node `i`.
    pub fn signal(&self, i: usize, sig: &str) {
        signal(self.pid(i), sig);
    }

    pub fn wipe(&self, i: usize) {
        self.h.wipe(id(i)).unwrap_or_else(|e| panic!("{e}"));
    }

    /// (status, body) of one request, or None if the node does not answer.
    pub fn http(&self, i: usize, method: &str, target: &str, body: &str) -> Option<(u16, String)> {
        let r = self
            .h
            .http(id(i), method, target, &[], body.as_bytes())
            .ok()?;
        Some((r.status, r.body))
    }

    pub fn put(&self, i: usize, key: &str, value: &str) -> (u16, serde_json::Value) {
        let r = self
            .h
            .put(id(i), key, value)
            .unwrap_or_else(|e| panic!("node {} did not answer a put: {e}", i + 1));
        (r.status, json(&r.body))
    }

    pub fn get(&self, i: usize, key: &str, consistency: &str) -> (u16, serde_json::Value) {
        let r = self
            .h
            .get(id(i), key, consistency)
            .unwrap_or_else(|e| panic!("node {} did not answer a get: {e}", i + 1));
        (r.status, json(&r.body))
    }

    /// An operator call (`/promote`, `/remove`, `/transfer-leader`) about `node_id`.
    pub fn admin(
        &self,
        i: usize,
        path: &str,
        node_id: NodeId,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        self.h
            .admin(id(i), path, node_id, token)
            .unwrap_or_else(|| panic!("node {} did not answer {path}", i + 1))
    }

    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        self.h.status(id(i))
    }

    /// Waits until the running nodes agree on one leader; returns its index.
    pub fn leader(&self) -> usize {
        wait_until(30, "one leader all running nodes agree on", || {
            let running: Vec<NodeId> = self
                .h
                .ids()
                .into_iter()
                .filter(|n| self.h.has_process(*n))
                .collect();
            self.h.agreed_leader(&running).map(|l| l as usize - 1)
        })
    }

    /// Every (term, node id) some node's log says became leader, each once.
    pub fn leader_claims(&self) -> Vec<(u64, NodeId)> {
        self.h.leader_claims()
    }

    /// (status, body) of one request to node `i`'s metrics port, or None if it does not
    /// answer (or has none).
    pub fn metrics_http(&self, i: usize, method: &str, target: &str) -> Option<(u16, String)> {
        let r = self.h.metrics_http(id(i), method, target)?.ok()?;
        Some((r.status, r.body))
    }

    /// Node `i`'s `GET /metrics` text (panics unless it answers 200).
    pub fn metrics(&self, i: usize) -> String {
        self.h
            .metrics(id(i))
            .unwrap_or_else(|| panic!("node {}: GET /metrics did not answer 200", i + 1))
    }

    /// What the node logged so far (its log directory).
    pub fn log(&self, i: usize) -> String {
        self.h.log(id(i))
    }
}

/// A put over a fresh connection from any thread (the cluster handle stays on the test's).
pub fn put_at(port: u16, key: &str, value: &str) -> Result<http1::Response, http1::ExchangeError> {
    api::put(loopback(port), key, value, CALL_TIMEOUT)
}

/// `put_at`'s status, or None without an answer.
pub fn put_port(port: u16, key: &str, value: &str) -> Option<u16> {
    put_at(port, key, value).ok().map(|r| r.status)
}

/// One put on a keep-alive connection (the benches' clients): its status.
pub fn put_on(c: &mut http1::Conn, key: &str, value: &str) -> u16 {
    api::put_on(c, key, value, CALL_TIMEOUT)
        .expect("a reply to a put")
        .status
}

/// `kill -SIG PID` (e.g. "STOP", "CONT"), from any thread.
pub fn signal(pid: u32, sig: &str) {
    ringkv_harness::process::signal(pid, sig).unwrap_or_else(|e| panic!("{e}"));
}

/// One etcdctl run (v3 API, a 10 s command timeout) against `endpoints` with `stdin` as
/// its input: exit code, stdout, stderr.
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut cmd = std::process::Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args);
    run_with_stdin(cmd, stdin)
}

/// Runs `cmd` with `stdin` as its input: exit code (-1 if a signal ended it), stdout,
/// stderr.
pub fn run_with_stdin(mut cmd: std::process::Command, stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} runs: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fails with every differing entry when etcd's record and ringkv's differ (`what`: what
/// an entry is, for the message).
pub fn assert_records_equal(theirs: &[String], ours: &[String], what: &str) {
    let diffs: Vec<String> = theirs
        .iter()
        .zip(ours)
        .filter(|(t, o)| t != o)
        .map(|(t, o)| format!("--- etcd\n{t}\n--- ringkv\n{o}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} of {} {what} differ:\n{}",
        diffs.len(),
        theirs.len(),
        diffs.join("\n")
    );
    assert_eq!(ours.len(), theirs.len());
}
