//! A three-node cluster of real `ringkv serve` processes on loopback for tests: per-test
//! ports and directory (removed with every process on drop), HTTP helpers, SIGKILL,
//! SIGTERM, other signals (SIGSTOP/SIGCONT) and wiping of single nodes.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ringkv_client::http1;

pub struct Opts {
    /// The `[raft.persistence]` body.
    pub persistence: &'static str,
    pub election_ms: (u64, u64),
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    /// The `[limits]` body.
    pub limits: &'static str,
    /// More TOML appended to every config (e.g. `[raft.snapshot]`).
    pub extra: &'static str,
    /// `cluster.cluster_token`.
    pub token: &'static str,
    /// Give every node a `cluster.metrics_address` (ports in `Cluster::metrics_ports`).
    pub metrics: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            persistence: "strategy = \"DiskFirst\"",
            election_ms: (300, 600),
            heartbeat_ms: 50,
            lease_ms: 200,
            limits: "",
            extra: "",
            token: "",
            metrics: false,
        }
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub ports: Vec<u16>,
    /// Each node's metrics port (`Opts::metrics`), `None` without one.
    pub metrics_ports: Vec<Option<u16>>,
    procs: Vec<Option<Child>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            // A node a test stopped (SIGSTOP) and did not resume.
            let _ = Command::new("kill")
                .args(["-CONT", &p.id().to_string()])
                .status();
            let _ = p.kill();
            let _ = p.wait();
        }
        // RINGKV_KEEP_TEST_DIR=1 keeps data and logs for a post-mortem.
        if std::env::var_os("RINGKV_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept {}", self.dir.display());
        }
    }
}

/// A free port below the kernel's ephemeral range (32768 and up): a port from that range
/// can be taken as the local end of some other test's outbound connection while its node
/// is down, and the node could not restart.
fn free_port() -> u16 {
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
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let n = 3 + joiners;
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let metrics_ports: Vec<Option<u16>> = (0..n).map(|_| o.metrics.then(free_port)).collect();
        let member = |i: usize, role: u8, status: u8| {
            format!(
                "{{ id = {}, address = \"127.0.0.1:{}\", role = {role}, status = {status} }}",
                i + 1,
                ports[i]
            )
        };
        let founders: Vec<String> = (0..3).map(|i| member(i, 1, 2)).collect();
        for (i, p) in ports.iter().enumerate() {
            let mut m = founders.clone();
            if i >= 3 {
                m.push(member(i, 3, 0));
            }
            let members = m;
            let metrics = match metrics_ports[i] {
                Some(mp) => format!("metrics_address = \"127.0.0.1:{mp}\"\n"),
                None => String::new(),
            };
            let toml = format!(
                "[cluster]\nnode_id = {id}\ncluster_token = \"{token}\"\nlisten_address = \"127.0.0.1:{p}\"\n{metrics}initial_cluster = [{m}]\n\
                 data_dir = \"{d}/db/{id}\"\n\n[raft]\nelection_timeout_min_ms = {emin}\n\
                 election_timeout_max_ms = {emax}\nheartbeat_interval_ms = {hb}\n\n\
                 [raft.read_consistency]\nlease_duration_ms = {lease}\n\n[raft.persistence]\n{pers}\n\n\
                 [limits]\n{limits}\n\n{extra}\n",
                id = i + 1,
                m = members.join(", "),
                d = dir.display(),
                emin = o.election_ms.0,
                emax = o.election_ms.1,
                hb = o.heartbeat_ms,
                lease = o.lease_ms,
                pers = o.persistence,
                limits = o.limits,
                extra = o.extra,
                token = o.token,
            );
            std::fs::write(dir.join(format!("n{}.toml", i + 1)), toml).unwrap();
        }
        Self {
            dir,
            procs: (0..n).map(|_| None).collect(),
            ports,
            metrics_ports,
        }
    }

    pub fn config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{}.toml", i + 1))
    }

    pub fn log_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("logs/{}", i + 1))
    }

    fn command(&self, i: usize) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ringkv"));
        c.args(["serve", "--config"])
            .arg(self.config(i))
            // d.log in the test's directory, not the repository's logs/.
            .env("LOG_DIR", self.log_dir(i))
            .env("LOG_LEVEL", "info");
        c
    }

    pub fn start(&mut self, i: usize) {
        assert!(self.procs[i].is_none(), "node {} runs already", i + 1);
        let child = self
            .command(i)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs[i] = Some(child);
    }

    /// Starts node `i` expecting it to exit on its own; returns its status and stderr.
    pub fn start_expecting_exit(&mut self, i: usize, secs: u64) -> (ExitStatus, String) {
        let mut child = self
            .command(i)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_until(secs, "the node to exit", || child.try_wait().unwrap());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    }

    pub fn running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill().unwrap();
            p.wait().unwrap();
        }
    }

    /// SIGTERM; waits for the exit and returns its status and how long it took.
    pub fn terminate(&mut self, i: usize) -> (ExitStatus, Duration) {
        let mut p = self.procs[i].take().expect("running");
        let t = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &p.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let st = wait_until(10, "the node to exit after SIGTERM", || {
            p.try_wait().unwrap()
        });
        (st, t.elapsed())
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.procs[i].as_ref().expect("running").id()
    }

    /// Sends `kill -SIG` (e.g. "STOP", "CONT") to node `i`.
    pub fn signal(&self, i: usize, sig: &str) {
        signal(self.pid(i), sig);
    }

    pub fn wipe(&self, i: usize) {
        std::fs::remove_dir_all(self.dir.join(format!("db/{}", i + 1))).unwrap();
    }

    /// (status, body) of one request, or None if the node does not answer.
    pub fn http(&self, i: usize, method: &str, target: &str, body: &str) -> Option<(u16, String)> {
        self.raw(i, method, target, body.as_bytes())
    }

    pub fn raw(&self, i: usize, method: &str, target: &str, body: &[u8]) -> Option<(u16, String)> {
        call(
            &format!("127.0.0.1:{}", self.ports[i]),
            method,
            target,
            body,
        )
    }

    pub fn put(&self, i: usize, key: &str, value: &str) -> (u16, serde_json::Value) {
        let body = serde_json::json!({ "key": key, "value": value }).to_string();
        let (st, b) = self
            .http(i, "POST", "/put", &body)
            .unwrap_or_else(|| panic!("node {} did not answer a put", i + 1));
        (st, json(&b))
    }

    pub fn get(&self, i: usize, key: &str, consistency: &str) -> (u16, serde_json::Value) {
        let (st, b) = self
            .http(
                i,
                "GET",
                &format!("/get?key={key}&consistency={consistency}"),
                "",
            )
            .unwrap_or_else(|| panic!("node {} did not answer a get", i + 1));
        (st, json(&b))
    }

    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let (_, b) = self.http(i, "GET", "/status", "")?;
        serde_json::from_str(&b).ok()
    }

    /// Waits until the running nodes agree on one leader; returns its index.
    pub fn leader(&self) -> usize {
        wait_until(30, "one leader all running nodes agree on", || {
            let st: Vec<_> = (0..self.ports.len())
                .filter(|&i| self.running(i))
                .map(|i| self.status(i))
                .collect::<Option<Vec<_>>>()?;
            let leaders: Vec<_> = st.iter().filter(|s| s["role"] == "leader").collect();
            // A leader that has not committed an entry of its term refuses admin calls.
            if leaders.len() != 1 || leaders[0]["leader_ready"] != true {
                return None;
            }
            let id = leaders[0]["node_id"].as_u64()?;
            st.iter()
                .all(|s| s["leader_id"] == id)
                .then_some(id as usize - 1)
        })
    }

    /// (status, body) of one request to node `i`'s metrics port, or None if it does not
    /// answer (or has none).
    pub fn metrics_http(&self, i: usize, method: &str, target: &str) -> Option<(u16, String)> {
        let port = self.metrics_ports[i]?;
        call(&format!("127.0.0.1:{port}"), method, target, b"")
    }

    /// Node `i`'s `GET /metrics` text (panics unless it answers 200).
    pub fn metrics(&self, i: usize) -> String {
        match self.metrics_http(i, "GET", "/metrics") {
            Some((200, b)) => b,
            other => panic!("node {}: GET /metrics: {other:?}", i + 1),
        }
    }

    /// The node's `d.log` so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_dir(i).join("d.log")).unwrap_or_default()
    }
}

/// A put over a fresh connection from any thread: its status, or None without an answer.
pub fn put_port(port: u16, key: &str, value: &str) -> Option<u16> {
    let body = serde_json::json!({ "key": key, "value": value }).to_string();
    call(
        &format!("127.0.0.1:{port}"),
        "POST",
        "/put",
        body.as_bytes(),
    )
    .map(|r| r.0)
}

/// One put on a keep-alive connection (the benches' clients): its status.
pub fn put_on(c: &mut http1::Conn, key: &str, value: &str) -> u16 {
    let body = serde_json::json!({ "key": key, "value": value }).to_string();
    c.exchange("POST", "/put", body.as_bytes(), Duration::from_secs(10))
        .expect("a reply to a put")
        .status
}

/// One request through the workspace's HTTP client: (status, body), or None without a
/// whole answer within 10 s.
fn call(addr: &str, method: &str, target: &str, body: &[u8]) -> Option<(u16, String)> {
    let r = http1::exchange(addr, method, target, &[], body, Duration::from_secs(10)).ok()?;
    Some((r.status, r.body))
}

/// `kill -SIG PID` (e.g. "STOP", "CONT"), from any thread.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {pid}");
}
