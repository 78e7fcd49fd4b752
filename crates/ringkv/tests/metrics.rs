//! `GET /metrics` on real nodes (`cluster.metrics_address`): Prometheus text that parses,
//! counters that move by exactly what was done, bad requests that change nothing, no port
//! without the setting, and a taken port that refuses start-up.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Cluster, Opts, wait_until};
use ringkv_server::metrics::{CATALOGUE, Kind};

/// One sample line: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: `# TYPE` lines by metric name, and every sample.
#[derive(Debug)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample with exactly these labels (0 when absent: a counter that
    /// never moved may not be rendered yet).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map_or(0.0, |s| s.value)
    }

    /// The sum over every sample of `name` (all label values).
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

/// A small parser of the Prometheus text format (version 0.0.4): every line is empty, a
/// `# HELP name text` or `# TYPE name type` comment, or `name{k="v",...} value`. Panics
/// with the line on anything else. Every sample's metric must have a `# TYPE` line
/// (histogram samples end in `_bucket`, `_sum` or `_count`).
fn parse(text: &str) -> Scrape {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("TYPE"), Some(name), Some(t)) => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "unknown type: {line}"
                    );
                    assert!(
                        types.insert(name.to_string(), t.to_string()).is_none(),
                        "two TYPE lines for {name}"
                    );
                }
                (Some("HELP"), Some(_), _) => {}
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name: {line}"
        );
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest
                    .find('=')
                    .unwrap_or_else(|| panic!("bad label: {line}"));
                let key = &rest[..eq];
                assert!(
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name: {line}"
                );
                rest = rest[eq + 1..]
                    .strip_prefix('"')
                    .unwrap_or_else(|| panic!("unquoted label value: {line}"));
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => value.push(c),
                            _ => panic!("bad escape: {line}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value: {line}"),
                    }
                };
                labels.insert(key.to_string(), value);
                rest = &rest[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for s in &samples {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| {
                let b = s.name.strip_suffix(suf)?;
                (types.get(b).map(String::as_str) == Some("histogram")).then_some(b)
            })
            .unwrap_or(&s.name);
        assert!(types.contains_key(base), "{} has no # TYPE line", s.name);
    }
    Scrape { types, samples }
}

/// Every metric rendered is in the catalogue, with the catalogue's type.
fn check_catalogue(s: &Scrape) {
    for (name, t) in &s.types {
        let d = CATALOGUE
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("{name} is not in ringkv_server::metrics::CATALOGUE"));
        let want = match d.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert_eq!(t, want, "{name}");
    }
}

/// The TCP ports process `pid` listens on (from /proc: its socket inodes in LISTEN state).
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(l) = std::fs::read_link(fd.path()) {
            let l = l.to_string_lossy().to_string();
            if let Some(i) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(i.to_string());
            }
        }
    }
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for row in t.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            // local_address is f[1] ("0100007F:1F91"), st f[3] (0A = LISTEN), inode f[9].
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// Sends raw bytes to a port; returns what came back before the node closed (or 5 s).
fn exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn a_running_cluster_serves_prometheus_text_whose_counters_match_the_requests() {
    let mut c = Cluster::new(
        "metrics",
        Opts {
            metrics: true,
            ..Opts::default()
        },
    );
    let l = c.leader();
    let lid = (l + 1) as f64;
    // Every node: parses, only catalogued metrics, and agrees on the leader.
    for i in 0..3 {
        let s = wait_until(10, "every node to see the leader and its peers", || {
            let s = parse(&c.metrics(i));
            (s.get("ringkv_raft_leader_id", &[]) == lid
                && s.get("ringkv_net_connections_open", &[("kind", "peer_out")]) == 2.0)
                .then_some(s)
        });
        check_catalogue(&s);
        let role = if i == l { "leader" } else { "follower" };
        assert_eq!(
            s.get("ringkv_raft_role", &[("role", role)]),
            1.0,
            "node {}",
            i + 1
        );
        assert_eq!(s.sum("ringkv_raft_role"), 1.0, "node {}", i + 1);
        assert!(s.get("ringkv_raft_term", &[]) >= 1.0);
        assert!(s.get("ringkv_net_frames_received_total", &[("kind", "peer")]) > 0.0);
        if i != l {
            assert!(s.get("ringkv_raft_append_entries_received_total", &[]) > 0.0);
        }
        for name in [
            "ringkv_raft_commit_index",
            "ringkv_raft_applied_index",
            "ringkv_wal_fsyncs_total",
            "ringkv_shard_requests_total",
            "ringkv_shard_keys",
            "ringkv_net_connections_open",
        ] {
            assert!(s.has(name), "node {}: no {name}", i + 1);
        }
        assert_eq!(s.types["ringkv_wal_fsync_seconds"], "histogram");
    }
    assert_eq!(
        parse(&c.metrics(l)).get("ringkv_raft_elections_won_total", &[]),
        1.0,
        "the leader won its election"
    );

    let before = parse(&c.metrics(l));
    // 10 puts, 3 deletes, 7 linearizable and 3 lease reads of existing keys, one read of a
    // missing key, a malformed put (refused by the parser: counted in no operation).
    for k in 0..10 {
        assert_eq!(c.put(l, &format!("k{k}"), "v").0, 200);
    }
    for k in 0..3 {
        let body = format!("{{\"key\":\"k{k}\"}}");
        assert_eq!(c.http(l, "POST", "/delete", &body).unwrap().0, 200);
    }
    for k in 3..10 {
        assert_eq!(c.get(l, &format!("k{k}"), "linearizable").0, 200);
    }
    for k in 3..6 {
        assert_eq!(c.get(l, &format!("k{k}"), "lease").0, 200);
    }
    assert_eq!(c.get(l, "missing", "linearizable").0, 404);
    assert_eq!(c.http(l, "POST", "/put", "{not json").unwrap().0, 400);
    let after = parse(&c.metrics(l));
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let req = |op, outcome| {
        delta(
            "ringkv_shard_requests_total",
            &[("op", op), ("outcome", outcome)],
        )
    };
    assert_eq!(req("put", "ok"), 10.0);
    assert_eq!(req("delete", "ok"), 3.0);
    assert_eq!(req("get", "ok"), 10.0);
    assert_eq!(req("get", "not_found"), 1.0);
    assert_eq!(req("put", "client_error"), 0.0);
    assert_eq!(
        after.sum("ringkv_shard_requests_total") - before.sum("ringkv_shard_requests_total"),
        24.0
    );
    for (op, n) in [("put", 10.0), ("delete", 3.0), ("get", 11.0)] {
        assert_eq!(
            delta("ringkv_shard_request_seconds_count", &[("op", op)]),
            n,
            "{op}"
        );
        assert_eq!(
            delta(
                "ringkv_shard_request_seconds_bucket",
                &[("op", op), ("le", "+Inf")]
            ),
            n,
            "{op}"
        );
    }
    assert!(delta("ringkv_raft_proposals_total", &[]) >= 13.0);
    assert!(delta("ringkv_raft_append_entries_sent_total", &[]) >= 2.0);
    // Every one of the 11 non-eventual reads took exactly one way: a lease (shard or core)
    // or a ReadIndex round (reads per round add up to the reads).
    let lease = delta("ringkv_raft_lease_reads_total", &[("via", "shard")])
        + delta("ringkv_raft_lease_reads_total", &[("via", "core")]);
    let by_round = delta("ringkv_raft_reads_per_read_index_round_sum", &[]);
    assert_eq!(lease + by_round, 11.0, "lease {lease}, by round {by_round}");
    assert!(
        by_round >= 8.0,
        "linearizable reads take a round: {by_round}"
    );
    assert!(delta("ringkv_raft_read_index_rounds_total", &[]) >= 1.0);
    assert!(delta("ringkv_net_bytes_received_total", &[("kind", "http")]) > 0.0);
    // The leader acknowledges on its followers' acks: its own syncs may finish just after.
    let (after, fsyncs) = wait_until(10, "the leader's WAL to sync the 13 entries", || {
        let s = parse(&c.metrics(l));
        let f = s.get("ringkv_wal_fsyncs_total", &[]) - before.get("ringkv_wal_fsyncs_total", &[]);
        (s.get("ringkv_wal_entries_written_total", &[])
            - before.get("ringkv_wal_entries_written_total", &[])
            >= 13.0)
            .then_some((s, f))
    });
    assert!(fsyncs >= 1.0, "{fsyncs}");
    assert_eq!(
        after.get("ringkv_wal_fsync_seconds_count", &[("kind", "batch")]),
        after.get("ringkv_wal_batches_total", &[]),
        "one timed write+fdatasync per batch"
    );
    // /status and /metrics count the same WAL work.
    let st = c.status(l).unwrap();
    let now = parse(&c.metrics(l));
    assert_eq!(
        now.get("ringkv_wal_fsyncs_total", &[]),
        st["wal"]["fsyncs"].as_f64().unwrap()
    );
    let keys = wait_until(10, "the shards to apply", || {
        let s = parse(&c.metrics(l));
        let keys = s.sum("ringkv_shard_keys");
        (s.get("ringkv_raft_applied_index", &[]) >= s.get("ringkv_raft_commit_index", &[])
            && keys == 7.0)
            .then_some(keys)
    });
    assert_eq!(keys, 7.0);

    // Every executor reports its load once a second: the leader's raft core and shard ran
    // tasks, and the raft core's rings wrote the WAL.
    let s = wait_until(10, "the executors' first samples", || {
        let s = parse(&c.metrics(l));
        (s.get("ringkv_executor_runs_total", &[("executor", "raft")]) > 0.0
            && s.get("ringkv_executor_runs_total", &[("executor", "shard0")]) > 0.0
            && s.get("ringkv_executor_runs_total", &[("executor", "metrics")]) > 0.0)
            .then_some(s)
    });
    for ex in ["raft", "shard0"] {
        assert!(
            s.get(
                "ringkv_executor_busy_microseconds_total",
                &[("executor", ex)]
            ) > 0.0,
            "{ex}"
        );
    }
    assert!(s.get("ringkv_executor_file_writes_total", &[("executor", "raft")]) > 0.0);

    // Bad requests to the metrics port change nothing.
    let m = 0;
    assert_eq!(c.metrics_http(m, "GET", "/nope").unwrap().0, 404);
    assert_eq!(c.metrics_http(m, "GET", "/").unwrap().0, 404);
    assert_eq!(c.metrics_http(m, "POST", "/metrics").unwrap().0, 405);
    let port = c.metrics_ports[m].unwrap();
    let out = exchange(port, b"\x00\x01garbage\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = exchange(
        port,
        b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 411"), "{out}");
    // A connection that closes mid-request.
    drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
    // Keep-alive: two scrapes on one connection.
    let out = exchange(
        port,
        b"GET /metrics HTTP/1.1\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(
        out.contains("content-type: text/plain; version=0.0.4"),
        "{out}"
    );
    check_catalogue(&parse(&c.metrics(m)));
    assert_eq!(c.put(l, "after", "v").0, 200);

    // A follower restarts: the leader's sender to it connects again.
    let f = (l + 1) % 3;
    let was = parse(&c.metrics(l)).get("ringkv_net_peer_reconnects_total", &[]);
    c.kill(f);
    c.start(f);
    wait_until(
        20,
        "the leader to reconnect to the restarted follower",
        || {
            let s = parse(&c.metrics(l));
            (s.get("ringkv_net_peer_reconnects_total", &[]) > was
                && s.get("ringkv_net_connections_open", &[("kind", "peer_out")]) == 2.0)
                .then_some(())
        },
    );
    // Its counters start again from zero; it learns the leader again.
    wait_until(20, "the restarted follower to know the leader", || {
        let s = parse(&c.metrics(f));
        (s.get("ringkv_raft_leader_id", &[]) == lid
            && s.get("ringkv_raft_leader_changes_total", &[]) == 1.0)
            .then_some(())
    });
}

#[test]
fn a_node_without_metrics_address_listens_on_its_own_port_only() {
    let mut c = Cluster::with_joiners("nometrics", Opts::default(), 0);
    c.start(0);
    wait_until(20, "node 1 to answer /status", || c.status(0));
    assert_eq!(
        listening_ports(c.pid(0)),
        BTreeSet::from([c.ports[0]]),
        "a node without metrics_address opened another port"
    );
    // With the setting: its own port and the metrics port, nothing else.
    let mut m = Cluster::with_joiners(
        "withmetrics",
        Opts {
            metrics: true,
            ..Opts::default()
        },
        0,
    );
    m.start(0);
    wait_until(20, "node 1 to answer /status", || m.status(0));
    assert_eq!(
        listening_ports(m.pid(0)),
        BTreeSet::from([m.ports[0], m.metrics_ports[0].unwrap()])
    );
    check_catalogue(&parse(&m.metrics(0)));
}

#[test]
fn a_taken_metrics_port_refuses_start_up_naming_the_address() {
    let mut c = Cluster::with_joiners(
        "metrics-taken",
        Opts {
            metrics: true,
            ..Opts::default()
        },
        0,
    );
    let port = c.metrics_ports[0].unwrap();
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (status, err) = c.start_expecting_exit(0, 20);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (cluster.metrics_address)"
        )),
        "{err}"
    );
    drop(holder);
    // Nothing was left behind: the node starts once the port is free.
    c.start(0);
    wait_until(20, "node 1 to serve /metrics", || {
        c.metrics_http(0, "GET", "/metrics").filter(|r| r.0 == 200)
    });
}

/// Names of a process's threads (`/proc/<pid>/task/*/comm`).
fn thread_names(pid: u32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn the_raft_core_shares_its_cpus_shard_executor_or_has_its_own_and_is_measured_apart() {
    // Default layout (cores [0, 1], raft_core 0): the raft core is a task queue on shard
    // 0's thread; no thread of its own.
    let mut shared = Cluster::with_joiners(
        "layout-shared",
        Opts {
            metrics: true,
            ..Opts::default()
        },
        0,
    );
    // raft_core on a CPU no shard uses: a dedicated executor thread.
    let mut own = Cluster::with_joiners(
        "layout-own",
        Opts {
            metrics: true,
            extra: "[runtime]\ncores = [1]\nraft_core = 0\n".into(),
            ..Opts::default()
        },
        0,
    );
    for (c, raft_thread) in [(&mut shared, false), (&mut own, true)] {
        c.start(0);
        c.start(1);
        let l = c.leader();
        assert_eq!(c.put(l, "layout", "v").0, 200);
        assert_eq!(c.get(l, "layout", "linearizable").1["value"], "v");
        // Executor threads are named for what they run (thread names are read from the
        // leader; every node has the same layout).
        let names = thread_names(c.pid(l));
        let id = l + 1;
        let (raft, shard0, both) = (
            format!("ringkv{id}-raft"),
            format!("ringkv{id}-shard0"),
            format!("ringkv{id}-s0+raft"),
        );
        // glommio appends "-<executor id>" to a name; the kernel keeps 15 bytes.
        let has = |p: &str| names.iter().any(|n| n.starts_with(p));
        assert_eq!(has(&raft), raft_thread, "threads {names:?}");
        assert_eq!(has(&shard0), raft_thread, "threads {names:?}");
        assert_eq!(has(&both), !raft_thread, "threads {names:?}");
        // Either way the raft core's busy time and WAL writes are its own series.
        let s = wait_until(10, "the leader's executor samples", || {
            let s = parse(&c.metrics(l));
            (s.get(
                "ringkv_executor_busy_microseconds_total",
                &[("executor", "raft")],
            ) > 0.0
                && s.get("ringkv_executor_file_writes_total", &[("executor", "raft")]) > 0.0
                && s.get("ringkv_executor_runs_total", &[("executor", "shard0")]) > 0.0)
                .then_some(s)
        });
        // The WAL is the raft core's: the shard writes no file.
        assert_eq!(
            s.get(
                "ringkv_executor_file_writes_total",
                &[("executor", "shard0")]
            ),
            0.0
        );
        check_catalogue(&s);
    }
    // A CPU this process may not use: refused at start-up, naming the key (no machine
    // here has 1,000 CPUs).
    for (extra, key) in [
        (
            "[runtime]\ncores = [0, 998]\nraft_core = 0\n",
            "runtime.cores: CPU 998",
        ),
        (
            "[runtime]\ncores = [0]\nraft_core = 999\n",
            "runtime.raft_core: CPU 999",
        ),
    ] {
        let mut c = Cluster::with_joiners(
            "layout-bad-cpu",
            Opts {
                extra: extra.into(),
                ..Opts::default()
            },
            0,
        );
        let (status, err) = c.start_expecting_exit(0, 10);
        assert!(!status.success());
        assert!(
            err.contains(&format!("{key} is not one this process may run on")),
            "{err}"
        );
    }
}
