//! Growing, shrinking and healing a cluster of real `ringkv serve` processes: the seed's
//! 5-node expansion (learners join, catch up by snapshot, are promoted, two voters fail),
//! a follower rejoining by snapshot, leadership transfer under load, removal, and the
//! refusals of bad operator calls. `RINGKV_LONG=1` (make test-long) writes 10,000 keys
//! instead of 2,000.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, Opts, json, loopback, put_port, wait_until};
use ringkv_harness::api;

const SNAPSHOT_EVERY_500: &str =
    "[raft.snapshot]\ninterval_entries = 500\nlog_growth_percent_min = 0\n";

fn admin(c: &Cluster, node: usize, path: &str, node_id: u64) -> (u16, serde_json::Value) {
    c.admin(node, path, node_id, None)
}

fn status(c: &Cluster, node: usize) -> serde_json::Value {
    c.status(node)
        .unwrap_or_else(|| panic!("node {} has no status", node + 1))
}

/// Writes `keys` keys through the leader from 4 threads; returns when all are acknowledged.
fn write_keys(c: &Cluster, leader: usize, prefix: &str, keys: usize) {
    let port = c.ports[leader];
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                for k in (t..keys).step_by(4) {
                    let st = put_port(port, &format!("{prefix}{k}"), &format!("v{k}"));
                    assert_eq!(st, Some(200), "{prefix}{k}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Every key reads back with its value at `consistency` on `node`.
fn all_keys_on(c: &Cluster, node: usize, prefix: &str, keys: usize, consistency: &str) {
    for k in 0..keys {
        let (st, b) = c.get(node, &format!("{prefix}{k}"), consistency);
        assert_eq!(
            (st, b["value"].as_str()),
            (200, Some(format!("v{k}").as_str())),
            "{prefix}{k} on node {}",
            node + 1
        );
    }
}

#[test]
fn seed_expansion_learners_join_catch_up_are_promoted_and_survive_two_failures() {
    let keys = if std::env::var_os("RINGKV_LONG").is_some() {
        10_000
    } else {
        2_000
    };
    let mut c = Cluster::with_joiners(
        "expand",
        Opts {
            extra: SNAPSHOT_EVERY_500.into(),
            ..Opts::default()
        },
        2,
    );
    for i in 0..3 {
        c.start(i);
    }
    let l = c.leader();
    write_keys(&c, l, "k", keys);
    assert!(
        status(&c, l)["snapshot_index"].as_u64().unwrap() >= 500,
        "snapshots every 500 entries"
    );
    // make join-node4, make join-node5: learners that catch up (by snapshot: the log
    // before the last snapshot is gone).
    for j in [3, 4] {
        c.start(j);
    }
    for j in [3, 4] {
        wait_until(30, "the learner to catch up", || {
            let s = c.status(j)?;
            (s["role"] == "learner"
                && s["applied_index"].as_u64()? >= status(&c, l)["commit_index"].as_u64()?)
            .then_some(())
        });
        all_keys_on(&c, j, "k", keys, "eventual");
        assert!(
            status(&c, j)["snapshot_index"].as_u64().unwrap() > 0,
            "node {} installed a snapshot",
            j + 1
        );
    }
    // Learners never vote and are never counted: the leader's status shows them.
    let st = status(&c, l);
    let roles: BTreeMap<u64, String> = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(roles[&4], "learner");
    assert_eq!(roles[&5], "learner");
    // The two curl promotions, sent to node 1 whoever leads.
    for id in [4, 5] {
        let (st, b) = admin(&c, 0, "/promote", id);
        assert_eq!((st, b["role"].as_str()), (200, Some("voter")), "{b}");
    }
    // Stop two voters, the leader among them: three of five still make a quorum.
    let other = (0..3).find(|&n| n != l).unwrap();
    c.kill(l);
    c.kill(other);
    let l2 = c.leader();
    assert!(![l, other].contains(&l2));
    let (st, b) = c.put(l2, "after", "two-down");
    assert_eq!(st, 200, "{b}");
    for n in (0..5).filter(|n| ![l, other].contains(n)) {
        let (st, b) = c.get(n, "after", "linearizable");
        assert_eq!((st, b["value"].as_str()), (200, Some("two-down")));
    }
    // They come back and all five converge.
    c.start(l);
    c.start(other);
    let commit = status(&c, l2)["commit_index"].as_u64().unwrap();
    for n in 0..5 {
        wait_until(30, "every node to converge", || {
            (c.status(n)?["applied_index"].as_u64()? >= commit).then_some(())
        });
        let (st, b) = c.get(n, "after", "eventual");
        assert_eq!((st, b["value"].as_str()), (200, Some("two-down")));
    }
    all_keys_on(&c, l, "k", keys, "eventual");
}

#[test]
fn a_follower_behind_the_compacted_log_rejoins_by_snapshot() {
    let mut c = Cluster::new(
        "snapjoin",
        Opts {
            extra: "[raft.snapshot]\ninterval_entries = 100\nlog_growth_percent_min = 0\nchunk_bytes_max = 4096\n".into(),
            ..Opts::default()
        },
    );
    let l = c.leader();
    let f = (l + 1) % 3;
    c.kill(f);
    write_keys(&c, l, "s", 600);
    let (st, b) = c.http(l, "POST", "/snapshot", "").unwrap();
    assert_eq!(st, 200, "{b}");
    let snap_index = json(&b)["index"].as_u64().unwrap();
    assert!(snap_index >= 600);
    c.start(f);
    wait_until(30, "the follower to catch up", || {
        (c.status(f)?["applied_index"].as_u64()? >= snap_index).then_some(())
    });
    assert!(status(&c, f)["snapshot_index"].as_u64().unwrap() >= 500);
    all_keys_on(&c, f, "s", 600, "eventual");
    assert!(c.log(l).contains("snapshot delivered"), "{}", c.log(l));
}

#[test]
fn leadership_moves_to_the_named_node_under_writes_without_losing_any() {
    let c = Cluster::new("transfer", Opts::default());
    let l = c.leader();
    let target = (l + 2) % 3;
    let stop = Arc::new(AtomicBool::new(false));
    let ports = c.ports.clone();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if put_port(ports[i % 3], &format!("t{i}"), &format!("v{i}")) == Some(200) {
                    acked.push(i);
                }
                i += 1;
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    // Sent to the third node: forwarded to the leader.
    let via = (l + 1) % 3;
    let t = Instant::now();
    let (st, b) = admin(&c, via, "/transfer-leader", target as u64 + 1);
    let took = t.elapsed();
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["leader_id"], target as u64 + 1);
    eprintln!("transfer answered after {took:?}");
    // Within one election timeout (600 ms at most in these configs).
    assert!(took < Duration::from_millis(600), "{took:?}");
    assert_eq!(c.leader(), target);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(acked.len() > 10);
    for i in acked {
        let (st, b) = c.get(target, &format!("t{i}"), "linearizable");
        assert_eq!(
            (st, b["value"].as_str()),
            (200, Some(format!("v{i}").as_str())),
            "acknowledged t{i} lost"
        );
    }
}

#[test]
fn a_removed_node_stops_and_cannot_disturb_the_cluster_when_restarted() {
    let mut c = Cluster::new("remove", Opts::default());
    let l = c.leader();
    let victim = (l + 1) % 3;
    let (st, b) = admin(&c, l, "/remove", victim as u64 + 1);
    assert_eq!(st, 200, "{b}");
    // It learns of its removal and stops by itself.
    wait_until(10, "the removed node to stop", || {
        c.http(victim, "GET", "/status", "")
            .is_none_or(|r| r.0 != 200)
            .then_some(())
    });
    let terms = |c: &Cluster| -> Vec<u64> {
        (0..3)
            .filter(|&n| n != victim)
            .map(|n| status(c, n)["term"].as_u64().unwrap())
            .collect()
    };
    let before = terms(&c);
    assert_eq!(
        status(&c, l)["removed"],
        serde_json::json!([victim as u64 + 1])
    );
    // Restarted with its old data: it stops again, and the others' term never moves.
    c.kill(victim);
    c.start(victim);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(terms(&c), before, "a removed node disturbed the cluster");
    assert_eq!(c.put(l, "still", "fine").0, 200);
    assert!(c.log(victim).contains("removed from the cluster"));
}

#[test]
fn bad_operator_calls_are_refused_with_their_codes() {
    let mut c = Cluster::new("badadmin", Opts::default());
    let l = c.leader();
    let f1 = (l + 1) % 3;
    let f2 = (l + 2) % 3;
    // Unknown ids.
    let (st, b) = admin(&c, l, "/promote", 42);
    assert_eq!((st, b["code"].as_str()), (400, Some("not_learner")), "{b}");
    let (st, b) = admin(&c, l, "/remove", 42);
    assert_eq!((st, b["code"].as_str()), (400, Some("unknown_node")), "{b}");
    let (st, b) = admin(&c, l, "/transfer-leader", 42);
    assert_eq!((st, b["code"].as_str()), (400, Some("not_voter")), "{b}");
    // A second change while one is in progress: with f2 down, removing f1 cannot commit
    // (the new configuration needs both remaining voters), so the next change finds it
    // pending.
    c.kill(f2);
    let port = c.ports[l];
    let pending = std::thread::spawn(move || {
        let node = f1 as u64 + 1;
        api::admin(
            loopback(port),
            "/remove",
            node,
            None,
            Duration::from_secs(30),
        )
    });
    wait_until(5, "the first change to be pending", || {
        (status(&c, l)["membership_change_in_progress"] == true).then_some(())
    });
    let (st, b) = admin(&c, l, "/remove", f2 as u64 + 1);
    assert_eq!(
        (st, b["code"].as_str()),
        (409, Some("change_in_progress")),
        "{b}"
    );
    let out = pending.join().unwrap();
    assert!(
        matches!(out, Some((503 | 504, _))),
        "the uncommittable change is not acknowledged: {out:?}"
    );
    // The last voter cannot be removed (a fresh cluster: remove down to one voter).
    drop(c);
    let c = Cluster::new("lastvoter", Opts::default());
    let l = c.leader();
    for n in (0..3).filter(|&n| n != l) {
        let (st, b) = admin(&c, l, "/remove", n as u64 + 1);
        assert_eq!(st, 200, "{b}");
    }
    let (st, b) = admin(&c, l, "/remove", l as u64 + 1);
    assert_eq!((st, b["code"].as_str()), (400, Some("last_voter")), "{b}");
}

#[test]
fn operator_calls_need_the_cluster_token_when_one_is_set() {
    let c = Cluster::new(
        "token",
        Opts {
            token: "s3cret",
            ..Opts::default()
        },
    );
    let l = c.leader();
    let (st, b) = admin(&c, l, "/promote", 42);
    assert_eq!((st, b["code"].as_str()), (401, Some("unauthorized")), "{b}");
    // With the token the call goes through (and is judged on its merits).
    let (st, b) = c.admin(l, "/promote", 42, Some("s3cret"));
    assert_eq!((st, b["code"].as_str()), (400, Some("not_learner")), "{b}");
    // Client writes need no token.
    assert_eq!(c.put(l, "k", "v").0, 200);
}

#[test]
fn a_removed_learner_stops_and_a_joiner_finds_a_leader_that_is_not_a_founder() {
    let mut c = Cluster::with_joiners("learners", Opts::default(), 2);
    for i in 0..3 {
        c.start(i);
    }
    let l = c.leader();
    assert_eq!(c.put(l, "k", "v").0, 200);
    c.start(3);
    wait_until(20, "node 4 to join", || {
        (c.status(3)?["role"] == "learner").then_some(())
    });
    // Node 4 leads: a joiner that lists only the founders must still be reached by it.
    let (st, b) = admin(&c, 0, "/promote", 4);
    assert_eq!(st, 200, "{b}");
    // Once node 4 knows it votes (its status says follower, not learner).
    wait_until(10, "node 4 to see its promotion", || {
        (c.status(3)?["role"] == "follower").then_some(())
    });
    let (st, b) = admin(&c, 0, "/transfer-leader", 4);
    assert_eq!(st, 200, "{b}");
    assert_eq!(c.leader(), 3);
    c.start(4);
    wait_until(20, "node 5 to join and catch up", || {
        let (st, b) = c.http(4, "GET", "/get?key=k&consistency=eventual", "")?;
        (st == 200 && json(&b)["value"] == "v").then_some(())
    });
    // A learner never receives its own removal; it is told, and stops.
    let (st, b) = admin(&c, 0, "/remove", 5);
    assert_eq!(st, 200, "{b}");
    wait_until(15, "the removed learner to stop", || {
        c.http(4, "GET", "/status", "")
            .is_none_or(|r| r.0 != 200)
            .then_some(())
    });
    assert!(c.log(4).contains("removed from the cluster"));
    assert_eq!(c.put(3, "after", "removal").0, 200);
}
