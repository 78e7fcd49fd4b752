//! The native client protocol against real nodes: pipelined requests on one connection,
//! answers matched by id, refusals, `ringkv bench` end to end, and `native_client::Client`:
//! the leader found through a follower listed first, reads spread over every node and going
//! on when one dies, a dead endpoint skipped, and a write to a stopped leader reported as
//! outcome unknown and not resent; and the `ringkv` client commands, which use it. Counting
//! proxies in front of the nodes show which node got which request.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Cluster, Opts, json, wait_until};
use glommio::{LocalExecutorBuilder, Placement};
use ringkv_client::native_client::{Client, Conn, Outcome};
use ringkv_proto::frame::{FrameHeader, HEADER_BYTES};
use ringkv_proto::native::{self, Request};
use ringkv_proto::outcome::Answer;

fn on_executor<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn pipelined_requests_on_one_connection_are_answered_by_id() {
    let c = Cluster::new("native", Opts::default());
    let l = c.leader();
    let follower: std::net::SocketAddr = format!("127.0.0.1:{}", c.ports[(l + 1) % 3])
        .parse()
        .unwrap();
    let answers = on_executor(move || async move {
        // Through a follower: writes and linearizable reads are forwarded to the leader.
        let conn = Conn::connect(follower).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let conn: Rc<Conn> = conn.clone();
            tasks.push(glommio::spawn_local(async move {
                let put = conn
                    .call(|id| Request::Put {
                        id,
                        key: format!("n{i}").into_bytes(),
                        value: format!("value-{i}").into_bytes(),
                    })
                    .await
                    .unwrap();
                let get = conn
                    .call(|id| Request::Get {
                        id,
                        key: format!("n{i}").into_bytes(),
                        consistency: native::CONSISTENCY_LINEARIZABLE,
                    })
                    .await
                    .unwrap();
                (i, put, get)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        // Keys and values are bytes: invalid UTF-8 and zero bytes go in and come back as
        // they are (through the follower, forwarded to the leader and back).
        let binary_put = conn
            .call(|id| Request::Put {
                id,
                key: vec![0xff, 0x00, 0xfe],
                value: vec![0xc3, 0x28, 0x00, 0xa0, 0xa1, 0x00],
            })
            .await
            .unwrap();
        let binary_get = conn
            .call(|id| Request::Get {
                id,
                key: vec![0xff, 0x00, 0xfe],
                consistency: native::CONSISTENCY_LINEARIZABLE,
            })
            .await
            .unwrap();
        // Refusals come back as answers; the connection keeps serving.
        let empty_key = conn
            .call(|id| Request::Get {
                id,
                key: Vec::new(),
                consistency: 0,
            })
            .await
            .unwrap();
        let big_key = conn
            .call(|id| Request::Put {
                id,
                key: vec![b'k'; 5000],
                value: b"v".to_vec(),
            })
            .await
            .unwrap();
        let bad_consistency = conn
            .call(|id| Request::Get {
                id,
                key: b"n1".to_vec(),
                consistency: 9,
            })
            .await
            .unwrap();
        let status = conn.call(|id| Request::Status { id }).await.unwrap();
        let binary = (binary_put, binary_get);
        (out, binary, empty_key, big_key, bad_consistency, status)
    });
    let (out, (binary_put, binary_get), empty_key, big_key, bad_consistency, status) = answers;
    assert_eq!(out.len(), 200);
    for (i, put, get) in out {
        let Ok(Answer::Written { revision: index }) = put.outcome else {
            panic!("{put:?}")
        };
        assert_eq!(
            get.outcome,
            Ok(Answer::Value {
                key: format!("n{i}").into_bytes(),
                value: format!("value-{i}").into_bytes(),
                revision: index,
            })
        );
    }
    let Ok(Answer::Written { revision: index }) = binary_put.outcome else {
        panic!("{binary_put:?}")
    };
    assert_eq!(
        binary_get.outcome,
        Ok(Answer::Value {
            key: vec![0xff, 0x00, 0xfe],
            value: vec![0xc3, 0x28, 0x00, 0xa0, 0xa1, 0x00],
            revision: index,
        })
    );
    // Over HTTP the same key (%-escaped) reads back with the value in base64.
    let (st, body) = c
        .http(l, "GET", "/get?key=%FF%00%FE&consistency=linearizable", "")
        .unwrap();
    assert_eq!(st, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["key_base64"], "/wD+");
    assert_eq!(v["value_base64"], "wygAoKEA");
    fn code(r: &native::Response) -> Result<(), (u16, &'static str)> {
        r.outcome
            .as_ref()
            .map(|_| ())
            .map_err(|e| (e.http_status(), e.code()))
    }
    assert_eq!(code(&empty_key), Err((400, "bad_request")), "{empty_key:?}");
    assert_eq!(code(&big_key), Err((413, "too_large")), "{big_key:?}");
    assert_eq!(
        code(&bad_consistency),
        Err((400, "bad_request")),
        "{bad_consistency:?}"
    );
    match status.outcome {
        Ok(Answer::Status(st)) => assert_eq!(st.leader_id, Some(l as u64 + 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ringkv_bench_runs_every_workload_against_a_cluster() {
    let c = Cluster::new("benchcli", Opts::default());
    c.leader();
    let endpoints: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    for args in [
        vec!["put", "--total", "300", "--conns", "2", "--clients", "8"],
        vec![
            "range",
            "--total",
            "300",
            "--clients",
            "8",
            "--consistency",
            "l",
        ],
        vec![
            "range",
            "--total",
            "300",
            "--clients",
            "8",
            "--consistency",
            "s",
        ],
        vec![
            "mixed",
            "--total",
            "300",
            "--clients",
            "8",
            "--read-ratio",
            "0.5",
        ],
        vec![
            "put",
            "--total",
            "100",
            "--target",
            "http",
            "--clients",
            "4",
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .arg("bench")
            .args(&args)
            .args(["--endpoints", &endpoints.join(","), "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = json(&String::from_utf8_lossy(&out.stdout));
        let want = args[2].parse::<u64>().unwrap();
        assert_eq!(r["requests"], want, "{args:?}: {r}");
        assert_eq!(r["errors"], 0, "{args:?}: {r}");
        assert!(r["p99_ms"].as_f64().unwrap() > 0.0);
    }
}

/// `ringkv bench`'s etcd data model workloads over the native protocol: txn-put (a lone
/// client never conflicts: it knows every revision it compares against), range-prefix
/// refused until populated, then every range whole, lease-put, and its cleanup revoking
/// exactly the leases it granted.
#[test]
fn ringkv_bench_runs_the_etcd_data_model_workloads_against_a_cluster() {
    let c = Cluster::new("benchmvcc", Opts::default());
    c.leader();
    let endpoints: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let bench = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .arg("bench")
            .args(args)
            .args(["--endpoints", &endpoints.join(","), "--json"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(json(&String::from_utf8_lossy(&out.stdout)))
        } else {
            Err(err)
        }
    };
    let ok = |args: &[&str], requests: u64| {
        let r = bench(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(r["requests"], requests, "{args:?}: {r}");
        assert_eq!(r["errors"], 0, "{args:?}: {r}");
        r
    };
    // Half the key space exists: the other half is created by txn-put's MOD == 0 compare.
    let put = [
        "put",
        "--sequential-keys",
        "--key-space",
        "50",
        "--total",
        "50",
    ];
    ok(&put, 50);
    let ks = ["--key-space", "100"];
    let r = ok(&[&["txn-put", "--total", "200"][..], &ks].concat(), 200);
    assert_eq!(r["conflicts"], 0, "{r}");
    let r = ok(
        &[&["txn-put", "--total", "300", "--clients", "16"][..], &ks].concat(),
        300,
    );
    assert!(r["conflicts"].as_u64().unwrap() < 300, "{r}");

    let e = bench(&["range-prefix", "--key-space", "3", "--total", "10"]).unwrap_err();
    assert!(e.contains("--populate"), "{e}");
    ok(
        &[
            "range-prefix",
            "--populate",
            "--key-space",
            "3",
            "--clients",
            "8",
        ],
        300,
    );
    for consistency in ["l", "s"] {
        ok(
            &[
                "range-prefix",
                "--key-space",
                "3",
                "--total",
                "60",
                "--clients",
                "4",
                "--consistency",
                consistency,
            ],
            60,
        );
    }

    ok(&["lease-put", "--total", "40", "--clients", "4"], 40);
    ok(&["lease-put", "--revoke-leases", "--clients", "4"], 40);
    ok(&["lease-put", "--revoke-leases"], 0);

    let e = bench(&["txn-put", "--target", "http", "--total", "1"]).unwrap_err();
    assert!(e.contains("native or etcd"), "{e}");
}

/// Native requests a `Proxy` passed on, by kind.
#[derive(Default)]
struct Counts {
    puts: AtomicU64,
    gets: AtomicU64,
    deletes: AtomicU64,
    statuses: AtomicU64,
}

impl Counts {
    /// (puts and deletes, gets, statuses).
    fn get(&self) -> (u64, u64, u64) {
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        (
            l(&self.puts) + l(&self.deletes),
            l(&self.gets),
            l(&self.statuses),
        )
    }
}

/// A TCP proxy in front of one node that counts the native requests it passes on: what
/// that node was asked, seen from outside the client. Its threads end with the test
/// process.
struct Proxy {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

impl Proxy {
    fn start(node: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let counts: Arc<Counts> = Arc::default();
        let c = counts.clone();
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let c = c.clone();
                std::thread::spawn(move || relay(client, node, &c));
            }
        });
        Proxy { addr, counts }
    }
}

fn relay(mut client: TcpStream, node: SocketAddr, counts: &Counts) {
    let Ok(mut up) = TcpStream::connect(node) else {
        return; // the node is down: the client sees its connection closed
    };
    let (mut up_rd, mut client_wr) = (up.try_clone().unwrap(), client.try_clone().unwrap());
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_rd, &mut client_wr);
        let _ = client_wr.shutdown(Shutdown::Both);
    });
    loop {
        let mut h = [0u8; HEADER_BYTES];
        if client.read_exact(&mut h).is_err() {
            break;
        }
        let hdr = FrameHeader::decode(&h, 8 << 20).expect("a native frame");
        let mut body = rkyv::util::AlignedVec::<16>::new();
        body.resize(hdr.body_bytes as usize, 0);
        if client.read_exact(&mut body).is_err() {
            break;
        }
        let n = match native::decode_request(&body).expect("a native request") {
            Request::Put { .. } | Request::Write { .. } => &counts.puts,
            Request::Get { .. } | Request::Range { .. } => &counts.gets,
            Request::Delete { .. } | Request::Admin { .. } => &counts.deletes,
            Request::Status { .. }
            | Request::LeaseKeepAlive { .. }
            | Request::LeaseTimeToLive { .. }
            | Request::LeaseLeases { .. }
            | Request::Hash { .. } => &counts.statuses,
        };
        n.fetch_add(1, Ordering::SeqCst);
        if up.write_all(&h).and_then(|()| up.write_all(&body)).is_err() {
            break;
        }
    }
    let _ = up.shutdown(Shutdown::Both);
    let _ = back.join();
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The answer of a call that must have succeeded.
/// The answer of a call a node carried out, as the HTTP API's JSON.
fn ok(o: &Outcome) -> serde_json::Value {
    match o.ok() {
        Some(a) => a.to_json(),
        None => panic!("not carried out: {o:?}"),
    }
}

/// The node that answered a call.
fn answered_by(o: &Outcome) -> SocketAddr {
    match o {
        Outcome::Answered(a) => a.endpoint,
        _ => panic!("not answered: {o:?}"),
    }
}

#[test]
fn client_finds_the_leader_through_a_follower_listed_first() {
    let c = Cluster::new("clientleader", Opts::default());
    let l = c.leader();
    let (f1, f2) = ((l + 1) % 3, (l + 2) % 3);
    let proxies: Vec<Proxy> = [f1, f2, l]
        .iter()
        .map(|&i| Proxy::start(addr(c.ports[i])))
        .collect();
    let endpoints: Vec<SocketAddr> = proxies.iter().map(|p| p.addr).collect();
    let leader = addr(c.ports[l]);
    let (found, puts) = on_executor(move || async move {
        let client = Client::new(endpoints, Duration::from_secs(5));
        let mut puts = Vec::new();
        for i in 0..3 {
            puts.push(client.put("found", format!("v{i}")).await);
        }
        let deleted = client.delete("found").await;
        puts.push(deleted);
        (client.leader(), puts)
    });
    assert_eq!(found, Some(leader), "the leader the follower named");
    for p in &puts {
        ok(p);
    }
    // The first follower was asked for its status once; the writes went straight to the
    // leader's own address, through none of the proxies (a follower would have forwarded
    // them).
    assert_eq!(proxies[0].counts.get(), (0, 0, 1));
    assert_eq!(proxies[1].counts.get(), (0, 0, 0));
    assert_eq!(proxies[2].counts.get(), (0, 0, 0));
    let (st, _) = c.get(l, "found", "linearizable");
    assert_eq!(st, 404, "the delete came last");
}

#[test]
fn client_reads_rotate_over_every_node_and_go_on_when_one_dies() {
    let mut c = Cluster::new("clientreads", Opts::default());
    let l = c.leader();
    assert_eq!(c.put(l, "spread", "x").0, 200);
    let proxies: Vec<Proxy> = c.ports.iter().map(|&p| Proxy::start(addr(p))).collect();
    let endpoints: Vec<SocketAddr> = proxies.iter().map(|p| p.addr).collect();
    let consistencies = [
        native::CONSISTENCY_EVENTUAL,
        native::CONSISTENCY_LEASE,
        native::CONSISTENCY_LINEARIZABLE,
        native::CONSISTENCY_DEFAULT,
    ];
    let reads = move |endpoints: Vec<SocketAddr>| {
        on_executor(move || async move {
            let client = Client::new(endpoints, Duration::from_secs(5));
            let mut out = Vec::new();
            for i in 0..24 {
                out.push(client.get("spread", consistencies[i % 4]).await);
            }
            out
        })
    };
    // Eventual reads may lag a moment on a follower.
    wait_until(10, "the value on every node", || {
        (0..3)
            .all(|i| c.get(i, "spread", "eventual").0 == 200)
            .then_some(())
    });
    for r in reads(endpoints.clone()) {
        assert_eq!(ok(&r)["value"], "x");
    }
    // 24 reads in rotation over three nodes: 8 each (none failed, so none moved on).
    for p in &proxies {
        assert_eq!(p.counts.get(), (0, 8, 0));
    }

    // A follower dies: every read still answers; the dead one's turns go to the next.
    let f = (l + 1) % 3;
    c.kill(f);
    // The listener can outlive the process a moment (io_uring tears down asynchronously).
    wait_until(10, "the dead node's port to refuse connections", || {
        TcpStream::connect(addr(c.ports[f])).is_err().then_some(())
    });
    for r in reads(endpoints) {
        assert_eq!(ok(&r)["value"], "x");
        assert_ne!(answered_by(&r), proxies[f].addr);
    }
    // The dead node's proxy closes each connection unread; the reads that started there
    // went on to the next endpoint in order.
    let after: Vec<u64> = proxies.iter().map(|p| p.counts.get().1).collect();
    let mut want = vec![0; 3];
    (want[f], want[(f + 1) % 3], want[(f + 2) % 3]) = (8, 8 + 16, 8 + 8);
    assert_eq!(after, want);
}

#[test]
fn client_skips_a_dead_endpoint_listed_first() {
    let c = Cluster::new("clientdead", Opts::default());
    c.leader();
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let live: Vec<SocketAddr> = c.ports.iter().map(|&p| addr(p)).collect();
    let (put, gets, status, all_dead) = on_executor(move || async move {
        let client = Client::new([vec![dead], live].concat(), Duration::from_secs(5));
        let put = client.put("skip", "y").await;
        let mut gets = Vec::new();
        for _ in 0..4 {
            gets.push(client.get("skip", native::CONSISTENCY_LINEARIZABLE).await);
        }
        let status = client.status().await;
        let nobody = Client::new(vec![dead, dead], Duration::from_secs(5));
        let all_dead = (nobody.put("skip", "z").await, nobody.get("skip", 0).await);
        (put, gets, status, all_dead)
    });
    ok(&put);
    for g in &gets {
        assert_eq!(ok(g)["value"], "y");
        assert_ne!(answered_by(g), dead);
    }
    assert!(ok(&status)["node_id"].as_u64().is_some());
    for o in [all_dead.0, all_dead.1] {
        match o {
            Outcome::Unreachable { tried } => {
                assert_eq!(tried.len(), 1, "each address once: {tried:?}");
                assert_eq!(tried[0].0, dead);
                assert!(tried[0].1.contains("Connection refused"), "{tried:?}");
            }
            o => panic!("{o:?}"),
        }
    }
}

#[test]
fn a_write_to_a_stopped_leader_is_outcome_unknown_and_not_resent() {
    let c = Cluster::new("clientstop", Opts::default());
    let mut l = c.leader();
    if l == 0 {
        // The client asks the endpoints for their status in order and takes a leader
        // that answers for itself at the endpoint it asked (here, its proxy): the leader
        // must not be the first endpoint, so that the client learns its own address.
        let (st, v) = c.admin(0, "/transfer-leader", 2, None);
        assert_eq!(st, 200, "{v}");
        l = wait_until(30, "leadership moved off node 1", || {
            let now = c.leader();
            (now != 0).then_some(now)
        });
    }
    let proxies: Vec<Proxy> = c.ports.iter().map(|&p| Proxy::start(addr(p))).collect();
    let endpoints: Vec<SocketAddr> = proxies.iter().map(|p| p.addr).collect();
    let (leader, pid) = (addr(c.ports[l]), c.pid(l));
    let (first, stopped) = on_executor(move || async move {
        let client = Client::new(endpoints, Duration::from_millis(1500));
        let first = client.put("stop", "before").await;
        assert_eq!(client.leader(), Some(leader));
        common::signal(pid, "STOP");
        (first, client.put("stop", "during").await)
    });
    // Resumed whatever the checks below say (Cluster's drop resumes it as well).
    struct Resume(u32);
    impl Drop for Resume {
        fn drop(&mut self) {
            common::signal(self.0, "CONT");
        }
    }
    let resume = Resume(pid);
    let before = ok(&first)["revision"].as_u64().unwrap();
    match &stopped {
        Outcome::Unknown {
            endpoint,
            why,
            answer: None,
        } => {
            assert_eq!(*endpoint, leader);
            assert!(why.contains("timed out"), "{why}");
        }
        o => panic!("{o:?}"),
    }
    // Not resent: no node was sent the write through the endpoints...
    for p in &proxies {
        assert_eq!(p.counts.get().0, 0, "a write went through an endpoint");
    }
    // ...and the two others, under a new leader, never applied it.
    let others = [(l + 1) % 3, (l + 2) % 3];
    let new_leader = wait_until(30, "a new leader among the running nodes", || {
        let st: Vec<serde_json::Value> =
            others.iter().map(|&i| c.status(i)).collect::<Option<_>>()?;
        let id = st.iter().find(|s| s["role"] == "leader")?["node_id"].as_u64()?;
        st.iter()
            .all(|s| s["leader_id"] == id)
            .then_some(id as usize - 1)
    });
    // A resend would have been proposed by now (a follower forwards or parks a write until
    // it knows the leader); a new leader's first read may wait for its term's first commit.
    std::thread::sleep(Duration::from_millis(500));
    let v = wait_until(10, "a linearizable read at the new leader", || {
        let (st, v) = c.get(new_leader, "stop", "linearizable");
        (st != 503 && st != 504).then_some((st, v))
    });
    assert_eq!(
        (v.0, v.1["value"].as_str()),
        (200, Some("before")),
        "{}",
        v.1
    );
    assert_eq!(v.1["revision"], before);

    // Resumed, the old leader may still carry out what it had read (once at most): the
    // nodes end up agreeing on the key either way.
    drop(resume);
    wait_until(30, "the three nodes to agree on the key", || {
        let vals: Vec<serde_json::Value> = (0..3).map(|i| c.get(i, "stop", "eventual").1).collect();
        (vals.iter().all(|v| *v == vals[0]) && c.status(l).is_some()).then_some(())
    });
}

#[test]
fn the_cli_commands_run_against_a_real_cluster() {
    let c = Cluster::new("clientcli", Opts::default());
    let l = c.leader();
    let f = (l + 1) % 3;
    // A follower first: the put goes to the leader it names.
    let order = [f, l, (l + 2) % 3];
    let eps: Vec<String> = order
        .iter()
        .map(|&i| format!("127.0.0.1:{}", c.ports[i]))
        .collect();
    let eps = eps.join(",");
    let ringkv = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(args)
            .args(["--endpoints", &eps])
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, err) = ringkv(&["put", "cli", "a value"]);
    assert_eq!(code, 0, "{err}");
    let index = json(&out)["revision"].as_u64().unwrap();
    for consistency in ["linearizable", "lease", "eventual"] {
        // An eventual read on the follower may lag a moment.
        let v = wait_until(10, "the value", || {
            let (code, out, _) = ringkv(&["get", "cli", "--consistency", consistency]);
            (code == 0).then(|| json(&out))
        });
        assert_eq!(
            (v["value"].as_str(), v["revision"].as_u64()),
            (Some("a value"), Some(index))
        );
    }
    let (code, out, _) = ringkv(&["status"]);
    assert_eq!(
        (code, json(&out)["node_id"].as_u64()),
        (0, Some(f as u64 + 1))
    );
    let (code, out, _) = ringkv(&["status", "--all"]);
    assert_eq!(code, 0);
    let ids: Vec<u64> = out
        .lines()
        .map(|l| json(l)["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, order.iter().map(|&i| i as u64 + 1).collect::<Vec<_>>());
    assert_eq!(ringkv(&["delete", "cli"]).0, 0);
    let (code, out, err) = ringkv(&["get", "cli", "--consistency", "linearizable"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(json(&err)["code"], "not_found");
}

/// A client that sends a frame header and then only part of the body loses its connection
/// after the read timeout (10 s) instead of holding it, and the buffer its header asked
/// for, forever; other clients are served meanwhile.
#[test]
fn a_frame_body_that_stalls_closes_its_connection() {
    let c = Cluster::new("stall", Opts::default());
    let l = c.leader();
    let port = c.ports[l];
    let body = native::encode(&Request::Put {
        id: 1,
        key: b"stalled".to_vec(),
        value: vec![b'v'; 4000],
    });
    let hdr = FrameHeader::for_body(ringkv_proto::frame::FrameKind::Client, &body).encode();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&hdr).unwrap();
    s.write_all(&body[..100]).unwrap();
    let t = std::time::Instant::now();
    // Meanwhile the node serves others.
    let (st, b) = c.put((l + 1) % 3, "other", "served");
    assert_eq!(st, 200, "{b}");
    let mut rest = Vec::new();
    let n = s
        .read_to_end(&mut rest)
        .expect("the node closes the connection");
    let waited = t.elapsed();
    assert_eq!(n, 0, "no answer to a partial frame: {rest:?}");
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(25),
        "closed after {waited:?}"
    );
    let (st, b) = c.get(l, "stalled", "linearizable");
    assert_eq!(st, 404, "the partial put was not applied: {b}");
}
