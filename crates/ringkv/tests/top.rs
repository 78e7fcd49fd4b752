//! `ringkv top --once` against a running three-node cluster: one line per node with its
//! role and indexes, the leader named, rates measured over the interval, and an endpoint
//! that does not answer named as unreachable.

mod common;

use common::{Cluster, Opts, put_port};

#[test]
fn top_once_prints_every_node_with_the_leader_and_rates() {
    let c = Cluster::new(
        "top",
        Opts {
            metrics: true,
            ..Opts::default()
        },
    );
    let l = c.leader();
    for i in 0..20 {
        let (st, b) = c.put(l, &format!("k{i}"), "v");
        assert_eq!(st, 200, "{b}");
    }
    // A port nothing listens on (bound, then released).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut eps: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    eps.push(dead.to_string());
    // Writes go on while top measures, so the leader's commit rate is above zero.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let port = c.ports[l];
        let stop = stop.clone();
        std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                put_port(port, &format!("w{i}"), "v");
            }
        })
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args([
            "top",
            "--once",
            "--interval-ms",
            "500",
            "--endpoints",
            &eps.join(","),
        ])
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NODE"), "{text}");
    let rows: Vec<Vec<&str>> = lines[1..4]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let mut ids: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    ids.sort();
    assert_eq!(ids, ["1", "2", "3"], "{text}");
    let leader_row = rows
        .iter()
        .find(|r| r[2] == "leader")
        .expect("a leader row");
    assert_eq!(leader_row[0], (l + 1).to_string(), "{text}");
    assert!(
        rows.iter().filter(|r| r[2] == "follower").count() == 2,
        "{text}"
    );
    // The leader committed at least the 20 puts and measured a commit rate.
    assert!(leader_row[5].parse::<u64>().unwrap() >= 20, "{text}");
    assert!(leader_row[9].parse::<f64>().unwrap() > 0.0, "{text}");
    // From /metrics: the leader served requests in the interval, with a p99.
    assert!(leader_row[12].parse::<f64>().unwrap() > 0.0, "{text}");
    assert!(leader_row[13].parse::<f64>().unwrap() > 0.0, "{text}");
    // One executor line per node, naming the raft core and the shards.
    for p in &c.ports {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("  127.0.0.1:{p} busy: ")))
            .unwrap_or_else(|| panic!("no executor line for {p}: {text}"));
        assert!(line.contains("raft ") && line.contains("shard0 "), "{text}");
    }
    assert!(
        lines[4].contains(&dead.to_string()) && lines[4].contains("unreachable"),
        "{text}"
    );
    assert_eq!(
        *lines.last().unwrap(),
        format!("leader: node {} (term {})", l + 1, leader_row[3]),
        "{text}"
    );
}
