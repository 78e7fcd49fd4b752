//! The node as users run it: three real `ringkv serve` processes on loopback (ports and
//! data directories per test), driven over HTTP and raw TCP as the seed's walkthrough and
//! an operator's bad day do.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Cluster, Opts, json, put_port, wait_until};
use ringkv_proto::frame::{FrameHeader, FrameKind, HEADER_BYTES};
use ringkv_server::net::peer::{ACK_OK, ACK_REFUSED, ArchivedHelloAck, Hello};
use ringkv_server::net::wire::encode_message;

#[test]
fn seed_walkthrough_election_writes_reads_failover_and_catch_up() {
    let mut c = Cluster::new("walk", Opts::default());
    let l = c.leader();
    let term = c.status(l).unwrap()["term"].as_u64().unwrap();
    // `grep -r "Became leader" logs/` finds the leader with its node id and term, and no
    // term ever had two.
    let lines = wait_until(10, "the leader's log line", || {
        let v = c.leader_claims();
        v.contains(&(term, l as u64 + 1)).then_some(v)
    });
    let mut terms: Vec<u64> = lines.iter().map(|x| x.0).collect();
    terms.sort();
    terms.dedup();
    assert_eq!(
        terms.len(),
        lines.len(),
        "two leaders in one term: {lines:?}"
    );

    // A write sent to a follower is forwarded to the leader.
    let f = (l + 1) % 3;
    let (st, b) = c.put(f, "test-key", "test-value");
    assert_eq!(st, 200, "{b}");
    let index = b["revision"].as_u64().unwrap();
    // Every node, every consistency: lease and linearizable at once, eventual once applied.
    for n in 0..3 {
        for q in ["lease", "linearizable"] {
            let (st, b) = c.get(n, "test-key", q);
            assert_eq!(st, 200, "node {} {q}: {b}", n + 1);
            assert_eq!(
                (b["value"].as_str(), b["revision"].as_u64()),
                (Some("test-value"), Some(index)),
                "node {} {q}",
                n + 1
            );
        }
        wait_until(5, "an eventual read to see the write", || {
            let (st, b) = c.get(n, "test-key", "eventual");
            (st == 200 && b["value"] == "test-value").then_some(())
        });
    }
    // /status counts the WAL's work (benchmark reports divide entries by fsyncs).
    wait_until(5, "the write to be in the leader's WAL", || {
        let w = c.status(l)?["wal"].clone();
        (w["entries"].as_u64()? >= index && w["fsyncs"].as_u64()? >= 1).then_some(())
    });
    // The default policy (LeaseRead here) answers without a consistency parameter.
    let (st, b) = c.http(f, "GET", "/get?key=test-key", "").unwrap();
    assert_eq!((st, json(&b)["value"].clone()), (200, "test-value".into()));

    // Kill the leader: a new one, and writes go on with two of three nodes.
    c.kill(l);
    let t = Instant::now();
    let l2 = c.leader();
    eprintln!("new leader after {:?}", t.elapsed());
    assert_ne!(l2, l);
    let other = (0..3).find(|&n| n != l && n != l2).unwrap();
    let (st, b) = c.put(other, "after", "failover");
    assert_eq!(st, 200, "{b}");
    let (st, b) = c.get(l2, "test-key", "linearizable");
    assert_eq!((st, b["value"].as_str()), (200, Some("test-value")));

    // The old leader restarts, catches up, and serves what it missed.
    c.start(l);
    wait_until(20, "the restarted node to catch up", || {
        let (st, b) = c.http(l, "GET", "/get?key=after&consistency=eventual", "")?;
        (st == 200 && json(&b)["value"] == "failover").then_some(())
    });
    let (st, b) = c.get(l, "after", "linearizable");
    assert_eq!((st, b["value"].as_str()), (200, Some("failover")));
}

#[test]
fn reads_on_any_node_see_every_acknowledged_write() {
    let c = Cluster::new("ryw", Opts::default());
    c.leader();
    // A fixed pseudo-random walk over writers, readers, keys and policies.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for round in 0..120 {
        let key = format!("k{}", next(10));
        let value = format!("v{round}");
        let w = next(3) as usize;
        let (st, b) = c.put(w, &key, &value);
        assert_eq!(st, 200, "round {round}: put on node {}: {b}", w + 1);
        let r = next(3) as usize;
        let q = ["lease", "linearizable"][next(2) as usize];
        let (st, b) = c.get(r, &key, q);
        assert_eq!(
            (st, b["value"].as_str()),
            (200, Some(value.as_str())),
            "round {round}: written on node {}, read {q} on node {}",
            w + 1,
            r + 1
        );
    }
}

#[test]
fn sigterm_of_the_leader_hands_over_without_losing_acknowledged_writes() {
    let mut c = Cluster::new("term", Opts::default());
    let l = c.leader();
    // A writer on the two other nodes keeps going through the handover.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ports = c.ports.clone();
    let others: Vec<usize> = (0..3).filter(|&n| n != l).collect();
    let writer = {
        let stop = stop.clone();
        let others = others.clone();
        std::thread::spawn(move || {
            let mut acked = BTreeMap::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = others[i as usize % 2];
                let key = format!("w{i}");
                if let Some(200) = put_port(ports[n], &key, &i.to_string()) {
                    acked.insert(key, i);
                }
                i += 1;
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = c.terminate(l);
    eprintln!("leader exited with {status} after {took:?}");
    // Exit 0 means the orderly path finished (the watchdog exits 1 at 4.5 s).
    assert!(status.success(), "SIGTERM exit status {status}");
    let l2 = c.leader();
    assert_ne!(l2, l);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(
        acked.len() > 10,
        "the writer made progress: {}",
        acked.len()
    );
    for (k, v) in &acked {
        let (st, b) = c.get(l2, k, "linearizable");
        assert_eq!(
            (st, b["value"].as_str()),
            (200, Some(v.to_string().as_str())),
            "acknowledged write {k} lost"
        );
    }
    let log = c.log(l);
    assert!(log.contains("stopping on signal"), "{log}");
    assert!(log.contains("stopped: log flushed"), "{log}");
}

#[test]
fn a_wiped_data_directory_or_a_taken_port_refuses_start_up() {
    let mut c = Cluster::new("wipe", Opts::default());
    let l = c.leader();
    assert_eq!(c.put(l, "k", "v").0, 200);
    let victim = (l + 1) % 3;
    c.kill(victim);
    c.wipe(victim);
    let (status, err) = c.start_expecting_exit(victim, 20);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("wiped or replaced"), "{err}");
    assert!(err.contains("new node id"), "{err}");
    // The peers say so in their logs too, and keep serving.
    let peer = (victim + 1) % 3;
    assert!(c.log(peer).contains("wiped or replaced"));
    assert_eq!(c.put(c.leader(), "k2", "v2").0, 200);
    // A port something else holds is named, and nothing starts.
    let port = c.ports[victim];
    // (The exited node's listener can linger a moment: io_uring tears down asynchronously.)
    let _holder = wait_until(5, "the port to be free", || {
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()
    });
    let (status, err) = c.start_expecting_exit(victim, 20);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (cluster.listen_address)"
        )),
        "{err}"
    );
    drop(_holder);
    // Raft state removed but the identity kept (a "repair" gone wrong): refused too.
    let other = (victim + 1) % 3;
    c.kill(other);
    let db = c.dir.join(format!("db/{}", other + 1));
    std::fs::remove_dir_all(db.join("wal")).unwrap();
    std::fs::remove_file(db.join("hardstate")).unwrap();
    let (status, err) = c.start_expecting_exit(other, 20);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("partly wiped"), "{err}");
    // A fresh node configured for another cluster (here: another token) is refused by the
    // running peers and does not start a cluster of its own.
    c.wipe(victim);
    let cfg = std::fs::read_to_string(c.config(victim)).unwrap();
    std::fs::write(
        c.config(victim),
        cfg.replace("cluster_token = \"\"", "cluster_token = \"other\""),
    )
    .unwrap();
    let (status, err) = c.start_expecting_exit(victim, 20);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("refused this node"), "{err}");
    assert!(err.contains("serves cluster"), "{err}");
}

/// Sends raw bytes on a new connection; returns what came back before the node closed it.
fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
    let mut v = FrameHeader::for_body(kind, body).encode().to_vec();
    v.extend_from_slice(body);
    v
}

/// The refusal a handshake got: (code, reason).
fn handshake(port: u16, hello: &Hello) -> (u8, String) {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(hello).unwrap();
    let out = exchange(port, &frame(FrameKind::Handshake, &body));
    assert!(out.len() > HEADER_BYTES, "no handshake answer: {out:?}");
    let mut b = rkyv::util::AlignedVec::<16>::new();
    b.extend_from_slice(&out[HEADER_BYTES..]);
    let a = rkyv::access::<ArchivedHelloAck, rkyv::rancor::BoxedError>(&b).unwrap();
    (a.code, a.reason.to_string())
}

#[test]
fn bad_input_is_refused_clearly_and_the_node_keeps_serving() {
    let c = Cluster::new("bad", Opts::default());
    let l = c.leader();
    let n = (l + 1) % 3;
    let serving = |what: &str| {
        let (st, b) = c.put(n, "alive", what);
        assert_eq!(st, 200, "after {what}: {b}");
    };
    let code = |st_body: Option<(u16, String)>| {
        let (st, b) = st_body.expect("an answer");
        (st, json(&b)["code"].as_str().unwrap_or("").to_string())
    };
    type Case<'a> = (&'a str, Option<(u16, String)>, u16);
    let cases: Vec<Case> = vec![
        ("malformed JSON", c.http(n, "POST", "/put", "{oops"), 400),
        (
            "missing field",
            c.http(n, "POST", "/put", r#"{"key":"a"}"#),
            400,
        ),
        ("unknown path", c.http(n, "GET", "/nowhere", ""), 404),
        (
            "oversized key",
            c.http(
                n,
                "POST",
                "/put",
                &format!(r#"{{"key":"{}","value":"v"}}"#, "k".repeat(5000)),
            ),
            413,
        ),
        (
            "oversized value",
            c.http(
                n,
                "POST",
                "/put",
                &format!(r#"{{"key":"k","value":"{}"}}"#, "v".repeat(1_600_000)),
            ),
            413,
        ),
        (
            "oversized body",
            c.http(n, "POST", "/put", &" ".repeat(8 << 20)),
            413,
        ),
        (
            "missing key",
            c.http(n, "GET", "/get?consistency=lease", ""),
            400,
        ),
        (
            "bad consistency",
            c.http(n, "GET", "/get?key=a&consistency=psychic", ""),
            400,
        ),
    ];
    for (what, reply, want) in cases {
        let (st, code) = code(reply);
        assert_eq!(st, want, "{what}: code {code}");
        assert!(!code.is_empty(), "{what}: a JSON error with a code");
        serving(what);
    }
    // Not HTTP and not a frame.
    let out = exchange(c.ports[n], b"\x00\x01\x02garbage\r\n\r\n");
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"),
        "{out:?}"
    );
    serving("garbage");
    // A frame announcing 1 GiB is refused from its header: the connection just closes.
    let mut h = FrameHeader::for_body(FrameKind::Handshake, b"").encode();
    h[8..12].copy_from_slice(&(1u32 << 30).to_le_bytes());
    assert!(exchange(c.ports[n], &h).is_empty());
    serving("oversized frame");
    // A frame whose body fails its checksum.
    let mut f = frame(FrameKind::Handshake, b"0123456789abcdef");
    f[HEADER_BYTES] ^= 1;
    assert!(exchange(c.ports[n], &f).is_empty());
    serving("corrupt frame");
    // A peer with the wrong token, from another cluster, or unknown: told why.
    let status = c.status(n).unwrap();
    let members = status["members"].as_array().unwrap().len();
    assert_eq!(members, 3);
    let (k, why) = handshake(
        c.ports[n],
        &Hello {
            cluster_id: cluster_id(&c),
            node_id: (l + 1) as u64,
            token: "wrong".into(),
            incarnation: 1,
        },
    );
    assert_eq!(k, ACK_REFUSED);
    assert!(why.contains("cluster_token"), "{why}");
    let (k, why) = handshake(
        c.ports[n],
        &Hello {
            cluster_id: 7,
            node_id: (l + 1) as u64,
            token: String::new(),
            incarnation: 1,
        },
    );
    assert_eq!(k, ACK_REFUSED);
    assert!(why.contains("serves cluster"), "{why}");
    let (k, why) = handshake(
        c.ports[n],
        &Hello {
            cluster_id: cluster_id(&c),
            node_id: 99,
            token: String::new(),
            incarnation: 1,
        },
    );
    assert_eq!(k, ACK_REFUSED);
    assert!(why.contains("not a member"), "{why}");
    serving("bad handshakes");
    let log = c.log(n);
    for what in [
        "too_large",
        "checksum",
        "wrong_token",
        "wrong_cluster",
        "unknown_node",
    ] {
        assert!(log.contains(what), "{what} not logged:\n{log}");
    }
}

/// Reads one frame (header and body) from `s`.
fn read_frame(s: &mut TcpStream) -> Option<(FrameHeader, rkyv::util::AlignedVec<16>)> {
    let mut h = [0u8; HEADER_BYTES];
    s.read_exact(&mut h).ok()?;
    let hdr = FrameHeader::decode(&h, 1 << 20).ok()?;
    let mut body = rkyv::util::AlignedVec::<16>::new();
    body.resize(hdr.body_bytes as usize, 0);
    s.read_exact(&mut body).ok()?;
    Some((hdr, body))
}

/// `ringkv_net_refused_total{reason="REASON"}` on node `i` (0 before the first one).
fn refused(c: &Cluster, i: usize, reason: &str) -> u64 {
    let want = format!("ringkv_net_refused_total{{reason=\"{reason}\"}} ");
    c.metrics(i)
        .lines()
        .find_map(|l| l.strip_prefix(want.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A peer that completes its handshake and then sends an AppendEntries whose entries are
/// not contiguous, or whose membership entry does not decode, is refused at the boundary
/// (counted as `bad_message`, logged with the reason, the connection closed): the node
/// neither panics nor appends anything, and goes on serving.
#[test]
fn a_peer_sending_broken_appends_is_refused_counted_and_the_node_keeps_serving() {
    use ringkv_raft::{Body, Entry, EntryKind, Message};
    let c = Cluster::new(
        "peerbad",
        Opts {
            metrics: true,
            ..Opts::default()
        },
    );
    let l = c.leader();
    let n = (l + 1) % 3;
    let (st, b) = c.put(n, "before", "1");
    assert_eq!(st, 200, "{b}");
    // Impersonate the leader: its id and the incarnation its data directory holds, so the
    // follower's handshake checks pass and the message itself is what is judged.
    let leader_dir = c.dir.join(format!("db/{}", l + 1));
    let meta = ringkv_server::wal::meta::NodeMeta::load(&leader_dir)
        .unwrap()
        .expect("the leader's identity");
    let status = c.status(n).unwrap();
    let (term, last) = (
        status["term"].as_u64().unwrap(),
        status["last_index"].as_u64().unwrap(),
    );
    let entry = |index, kind, data: &'static [u8]| Entry {
        index,
        term,
        kind,
        data: bytes::Bytes::from_static(data),
    };
    let broken = [
        vec![
            entry(last + 1, EntryKind::Normal, b"a"),
            entry(last + 3, EntryKind::Normal, b"b"),
        ],
        vec![entry(last + 1, EntryKind::Membership, b"\x01\x02")],
    ];
    let before = refused(&c, n, "bad_message");
    for entries in broken {
        let mut s = TcpStream::connect(("127.0.0.1", c.ports[n])).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let hello = Hello {
            cluster_id: cluster_id(&c),
            node_id: (l + 1) as u64,
            token: String::new(),
            incarnation: meta.incarnation,
        };
        let body = rkyv::to_bytes::<rkyv::rancor::Error>(&hello).unwrap();
        s.write_all(&frame(FrameKind::Handshake, &body)).unwrap();
        let (_, ack) = read_frame(&mut s).expect("a handshake answer");
        let ack = rkyv::access::<ArchivedHelloAck, rkyv::rancor::BoxedError>(&ack).unwrap();
        assert_eq!(ack.code, ACK_OK, "{}", ack.reason);
        let m = Message {
            from: (l + 1) as u64,
            to: (n + 1) as u64,
            term,
            body: Body::Append {
                prev_index: last,
                prev_term: term,
                entries,
                commit: 0,
            },
        };
        s.write_all(&frame(FrameKind::Raft, &encode_message(&m)))
            .unwrap();
        // Refused: the node closes the connection without an answer.
        assert!(read_frame(&mut s).is_none(), "the connection stays open");
    }
    assert_eq!(refused(&c, n, "bad_message"), before + 2);
    let log = c.log(n);
    assert!(log.contains("append entries not contiguous"), "{log}");
    assert!(log.contains("does not decode to a configuration"), "{log}");
    // Still a follower of the same leader, with nothing appended from the broken messages,
    // and serving.
    let (st, b) = c.put(n, "after", "2");
    assert_eq!(st, 200, "{b}");
    let (st, b) = c.get(n, "before", "linearizable");
    assert_eq!((st, b["value"].as_str()), (200, Some("1")));
    let after = c.status(n).unwrap();
    assert_eq!(after["leader_id"], (l + 1) as u64);
    assert_eq!(after["term"], term, "no election was needed");
    assert!(c.running(n));
}

/// The cluster id the test cluster's nodes derive (members and an empty token).
fn cluster_id(c: &Cluster) -> u64 {
    let members: Vec<(u64, String)> = c
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, format!("127.0.0.1:{p}")))
        .collect();
    ringkv_server::wal::meta::cluster_id(&members, "")
}

#[test]
fn a_full_state_or_too_many_connections_are_refused_and_recovered_from() {
    let c = Cluster::new(
        "full",
        Opts {
            limits: "state_bytes_max = 2000\nconnections_max = 4",
            ..Opts::default()
        },
    );
    let l = c.leader();
    let value = "v".repeat(300);
    let mut stored = 0;
    let refused = loop {
        let (st, b) = c.put(l, &format!("k{stored}"), &value);
        match st {
            200 => stored += 1,
            _ => break (st, b),
        }
        assert!(stored < 100, "the limit never applied");
    };
    assert_eq!(refused.0, 507, "{}", refused.1);
    assert_eq!(refused.1["code"], "state_full");
    assert!(
        stored >= 4,
        "room for several pairs before the limit: {stored}"
    );
    // The refusal raised etcd's NOSPACE alarm on every node.
    wait_until(5, "the NOSPACE alarm on every node", || {
        (0..3)
            .all(|n| {
                c.status(n)
                    .is_some_and(|s| s["alarms"] == serde_json::json!(["NOSPACE"]))
            })
            .then_some(())
    });
    // Deletes and compaction still work; with the history below them compacted there is
    // room again (a delete alone keeps the deleted version in the history, as etcd's),
    // but writes stay refused until the alarm is disarmed.
    let (st, b) = c.http(l, "POST", "/delete", r#"{"key":"k0"}"#).unwrap();
    assert_eq!(st, 200, "{b}");
    let rev = json(&b)["revision"].as_u64().unwrap();
    let (st, b) = c
        .http(l, "POST", "/compact", &format!(r#"{{"revision":{rev}}}"#))
        .unwrap();
    assert_eq!(st, 200, "{b}");
    let (st, b) = c.put(l, "again", "v");
    assert_eq!(st, 507, "{b}");
    assert_eq!(b["code"], "state_full");
    assert_eq!(b["error"], "etcdserver: mvcc: database space exceeded");
    let (st, b) = c.http(l, "POST", "/alarm/disarm", "").unwrap();
    assert_eq!(st, 200, "{b}");
    assert!(
        c.status(l).unwrap()["alarms"]
            .as_array()
            .unwrap()
            .is_empty(),
        "disarmed"
    );
    wait_until(5, "the freed room to be usable", || {
        (c.put(l, "again", &value).0 == 200).then_some(())
    });
    // Two client connections per shard: beyond that, a request on a new connection is
    // answered 503 too_many_connections and the connection closed.
    let idle: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(("127.0.0.1", c.ports[l])).unwrap())
        .collect();
    let mut refused = 0;
    for mut s in &idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut b = [0u8; 512];
        let n = s.read(&mut b).unwrap();
        let head = String::from_utf8_lossy(&b[..n]).to_string();
        if head.starts_with("HTTP/1.1 503") {
            assert!(head.contains("too_many_connections"), "{head}");
            refused += 1;
        } else {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
    }
    assert!(refused >= 6, "only {refused} of 10 connections refused");
    assert!(c.log(l).contains("limits.connections_max reached"));
    drop(idle);
    wait_until(5, "connections to be accepted again", || {
        c.status(l).map(|_| ())
    });
}

#[test]
fn without_a_quorum_writes_answer_503_or_504_and_reads_say_so() {
    let mut c = Cluster::new("noquorum", Opts::default());
    let l = c.leader();
    for n in (0..3).filter(|&n| n != l) {
        c.kill(n);
    }
    // The leader steps down once it misses its quorum (CheckQuorum); from then on a write
    // waits request_timeout_ms for a leader and is refused: nothing was written.
    wait_until(10, "the lone leader to step down", || {
        (c.status(l)?["role"] != "leader").then_some(())
    });
    let t = Instant::now();
    let (st, b) = c.put(l, "k", "v");
    assert_eq!((st, b["code"].as_str()), (503, Some("no_leader")), "{b}");
    assert!(
        t.elapsed() >= Duration::from_millis(2500),
        "it waited for a leader first"
    );
    let (st, b) = c.get(l, "k", "linearizable");
    assert_eq!(st, 503, "{b}");
    // Eventual reads are local and still answer.
    let (st, _) = c.get(l, "k", "eventual");
    assert_eq!(st, 404);
}

/// Readies of the leader's that carried more than one entry so far
/// (`ringkv_raft_entries_per_ready` observations above 1).
fn multi_entry_readies(c: &Cluster, i: usize) -> u64 {
    let text = c.metrics(i);
    let bucket = |le: &str| {
        let want = format!("ringkv_raft_entries_per_ready_bucket{{le=\"{le}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(want.as_str()))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    bucket("+Inf") - bucket("1")
}

/// `raft.replication.batch_delay_ms`: a leader holds client writes that long and proposes
/// them together. Two puts sent 100 ms apart, with a 400 ms delay, land in one log append
/// (one Ready of two entries, consecutive indexes); with no delay they would be two.
#[test]
fn batch_delay_ms_holds_writes_to_propose_them_together() {
    let c = Cluster::new(
        "batchdelay",
        Opts {
            metrics: true,
            extra: "[raft.replication]\nbatch_delay_ms = 400\n".into(),
            ..Opts::default()
        },
    );
    let l = c.leader();
    let before = multi_entry_readies(&c, l);
    let port = c.ports[l];
    let first = std::thread::spawn(move || put_port(port, "held-1", "a"));
    std::thread::sleep(Duration::from_millis(100));
    let (st, b) = c.put(l, "held-2", "b");
    assert_eq!(st, 200, "{b}");
    assert_eq!(first.join().unwrap(), Some(200));
    let (_, g) = c.get(l, "held-1", "linearizable");
    let (r1, r2) = (
        g["revision"].as_u64().unwrap(),
        b["revision"].as_u64().unwrap(),
    );
    assert_eq!(r2, r1 + 1, "proposed together, one after the other");
    assert_eq!(
        multi_entry_readies(&c, l),
        before + 1,
        "one Ready carried both writes"
    );
}
