//! The native client protocol against real nodes: pipelined requests on one connection,
//! answers matched by id, refusals, and `ringkv bench` end to end.

mod common;

use std::rc::Rc;

use common::{Cluster, Opts, json};
use glommio::{LocalExecutorBuilder, Placement};
use ringkv::native_client::Conn;
use ringkv::net::native::{self, Request};

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
        // Refusals come back as answers; the connection keeps serving.
        let bad_key = conn
            .call(|id| Request::Get {
                id,
                key: vec![0xff, 0xfe],
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
        (out, bad_key, big_key, bad_consistency, status)
    });
    let (out, bad_key, big_key, bad_consistency, status) = answers;
    assert_eq!(out.len(), 200);
    for (i, put, get) in out {
        assert_eq!(put.status, 200, "{}", put.body);
        let g = json(&get.body);
        assert_eq!(
            (get.status, g["value"].as_str()),
            (200, Some(format!("value-{i}").as_str()))
        );
        assert_eq!(g["revision"], json(&put.body)["index"]);
    }
    assert_eq!(bad_key.status, 400, "{}", bad_key.body);
    assert_eq!(big_key.status, 413, "{}", big_key.body);
    assert_eq!(bad_consistency.status, 400, "{}", bad_consistency.body);
    assert_eq!(json(&status.body)["leader_id"], l as u64 + 1);
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
