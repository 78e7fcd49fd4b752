//! The node as users run it: three real `ringkv serve` processes on loopback (ports and
//! data directories per test), driven over HTTP as the seed's walkthrough does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Cluster {
    dir: PathBuf,
    ports: Vec<u16>,
    procs: Vec<Option<Child>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn new(tag: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("node-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let members: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "{{ id = {}, address = \"127.0.0.1:{p}\", role = 1, status = 2 }}",
                    i + 1
                )
            })
            .collect();
        for (i, p) in ports.iter().enumerate() {
            let toml = format!(
                "[cluster]\nnode_id = {id}\nlisten_address = \"127.0.0.1:{p}\"\ninitial_cluster = [{m}]\n\
                 data_dir = \"{d}/db/{id}\"\n\n[raft]\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n\
                 heartbeat_interval_ms = 50\n\n[raft.read_consistency]\nlease_duration_ms = 200\n\n\
                 [raft.persistence]\nstrategy = \"DiskFirst\"\n",
                id = i + 1,
                m = members.join(", "),
                d = dir.display()
            );
            std::fs::write(dir.join(format!("n{}.toml", i + 1)), toml).unwrap();
        }
        let mut c = Self {
            dir,
            ports,
            procs: vec![None, None, None],
        };
        for i in 0..3 {
            c.start(i);
        }
        c
    }

    fn start(&mut self, i: usize) {
        let child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(["serve", "--config"])
            .arg(self.dir.join(format!("n{}.toml", i + 1)))
            // d.log in the test's directory, not the repository's logs/.
            .env("LOG_DIR", self.dir.join(format!("logs/{}", i + 1)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill().unwrap();
            p.wait().unwrap();
        }
    }

    /// (status, body) of one request, or None if the node does not answer.
    fn http(&self, i: usize, method: &str, target: &str, body: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.ports[i])).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.get(9..12)?.parse().ok()?;
        let body = out.split("\r\n\r\n").nth(1)?.to_string();
        Some((status, body))
    }

    fn status(&self, i: usize) -> Option<serde_json::Value> {
        let (_, b) = self.http(i, "GET", "/status", "")?;
        serde_json::from_str(&b).ok()
    }

    /// Waits until the live nodes agree on one leader; returns its index.
    fn leader(&self) -> usize {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            let leaders: Vec<usize> = (0..3)
                .filter(|&i| self.procs[i].is_some())
                .filter(|&i| self.status(i).is_some_and(|s| s["role"] == "leader"))
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no single leader within 20 s");
    }
}

fn json(b: &str) -> serde_json::Value {
    serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {b}"))
}

#[test]
fn three_nodes_elect_write_read_fail_over_and_catch_up() {
    let mut c = Cluster::new("walk");
    let l = c.leader();
    // A write to the leader, read back at every consistency.
    let (st, b) = c
        .http(
            l,
            "POST",
            "/put",
            r#"{"key":"test-key","value":"test-value"}"#,
        )
        .unwrap();
    assert_eq!(st, 200, "{b}");
    let index = json(&b)["index"].as_u64().unwrap();
    for q in [
        "",
        "&consistency=lease",
        "&consistency=linearizable",
        "&consistency=eventual",
    ] {
        let (st, b) = c
            .http(l, "GET", &format!("/get?key=test-key{q}"), "")
            .unwrap();
        assert_eq!(st, 200, "{q}: {b}");
        let v = json(&b);
        assert_eq!(
            (v["value"].as_str(), v["revision"].as_u64()),
            (Some("test-value"), Some(index))
        );
    }
    // A follower forwards a write to the leader and returns its answer.
    let f = (l + 1) % 3;
    let (st, b) = c
        .http(f, "POST", "/put", r#"{"key":"x","value":"y"}"#)
        .unwrap();
    assert_eq!(st, 200, "{b}");
    assert!(json(&b)["index"].as_u64().unwrap() > index);
    let t = Instant::now();
    loop {
        let (st, _) = c
            .http(f, "GET", "/get?key=test-key&consistency=eventual", "")
            .unwrap();
        if st == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "follower never applied the write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Bad input is refused and the node keeps serving.
    assert_eq!(c.http(l, "POST", "/put", "{oops").unwrap().0, 400);
    assert_eq!(c.http(l, "GET", "/nowhere", "").unwrap().0, 404);
    assert_eq!(
        c.http(l, "GET", "/get?key=missing&consistency=linearizable", "")
            .unwrap()
            .0,
        404
    );
    // Kill the leader: a new one is elected and takes writes with 2 of 3 nodes.
    c.kill(l);
    let l2 = c.leader();
    assert_ne!(l2, l);
    let (st, b) = c
        .http(l2, "POST", "/put", r#"{"key":"after","value":"failover"}"#)
        .unwrap();
    assert_eq!(st, 200, "{b}");
    let (st, b) = c
        .http(l2, "GET", "/get?key=test-key&consistency=linearizable", "")
        .unwrap();
    assert_eq!(
        (st, json(&b)["value"].as_str()),
        (200, Some("test-value")),
        "acknowledged write survived"
    );
    // The old leader comes back and catches up.
    c.start(l);
    let t = Instant::now();
    loop {
        if let Some((200, b)) = c.http(l, "GET", "/get?key=after&consistency=eventual", "")
            && json(&b)["value"] == "failover"
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "restarted node never caught up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
