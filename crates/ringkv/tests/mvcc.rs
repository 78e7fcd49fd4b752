//! The etcd data model on real nodes (two shards each, the default `runtime.cores`), through
//! the native client: revisions exactly as etcd's, puts with prev_kv, ranges over prefixes
//! with limit, count and `more` gathered from both shards at one revision, reads of the
//! past, compaction and its errors, compare-and-swap txns on one key and txns over keys of
//! both shards, deletes of a prefix in one revision, and leases: grant, attach, time to
//! live with keys, keep-alive, and expiry by the leader (its keys deleted in one revision).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, Opts};
use glommio::{LocalExecutorBuilder, Placement};
use ringkv_client::native_client::{Client, Outcome, store_answer};
use ringkv_proto::native;
use ringkv_proto::outcome::{Answer, ApiError};
use ringkv_store::{
    Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, Response, ResponseOp, Revision, TxnRequest, prefix_end,
};

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

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn endpoints(c: &Cluster) -> Vec<SocketAddr> {
    c.ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
        .collect()
}

/// The store answer of an outcome (panics with the outcome otherwise).
fn store(o: Outcome) -> (Revision, Response) {
    let a = o.ok().unwrap_or_else(|| panic!("{o:?}")).clone();
    store_answer(&a).unwrap_or_else(|| panic!("not a store answer: {a:?}"))
}

/// The store refusal of an outcome: (gRPC code, etcd's message).
fn refusal(o: Outcome) -> (u32, String) {
    match o {
        Outcome::Answered(a) => match a.outcome {
            Err(ApiError::Store { code, message }) => (code, message),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

fn put(k: &str, v: &str) -> Command {
    Command::Put(PutRequest {
        key: b(k),
        value: b(v),
        prev_kv: true,
        ..Default::default()
    })
}

fn prefix(p: &str) -> RangeRequest {
    RangeRequest {
        key: b(p),
        range_end: prefix_end(p.as_bytes()),
        ..Default::default()
    }
}

fn range(o: Outcome) -> (Revision, ringkv_store::RangeResponse) {
    match store(o) {
        (rev, Response::Range(r)) => (rev, r),
        other => panic!("{other:?}"),
    }
}

#[test]
fn revisions_ranges_txns_and_compaction_follow_etcd_across_shards() {
    let mut c = Cluster::new("mvcc", Opts::default());
    c.leader();
    let eps = endpoints(&c);
    let rev = on_executor(move || async move {
        let cl = Client::new(eps, Duration::from_secs(5));
        // A fresh store is at revision 1: each put makes one more.
        let mut rev = 1;
        for i in 0..20 {
            let (r, resp) = store(cl.write(&put(&format!("p/{i:02}"), &format!("v{i}"))).await);
            rev += 1;
            assert_eq!(r, rev, "put {i}");
            assert_eq!(resp, Response::Put(Default::default()), "no previous value");
        }
        // prev_kv of an overwrite: the old version's revisions and version.
        let (r, resp) = store(cl.write(&put("p/03", "again")).await);
        rev += 1;
        assert_eq!(r, rev);
        let Response::Put(p) = resp else { panic!() };
        let prev = p.prev_kv.unwrap();
        assert_eq!(
            (
                prev.value.as_ref(),
                prev.mod_revision,
                prev.create_revision,
                prev.version
            ),
            (&b"v3"[..], 5, 5, 1)
        );

        // A prefix over both shards: sorted, limited, counted, at one revision, from
        // every node and consistency.
        for consistency in [
            native::CONSISTENCY_LINEARIZABLE,
            native::CONSISTENCY_LEASE,
            native::CONSISTENCY_DEFAULT,
        ] {
            let mut req = prefix("p/");
            req.limit = 5;
            let (r, resp) = range(cl.range(&req, consistency).await);
            assert_eq!(r, rev);
            assert_eq!((resp.count, resp.more, resp.kvs.len()), (20, true, 5));
            let keys: Vec<_> = resp.kvs.iter().map(|kv| kv.key.clone()).collect();
            assert_eq!(keys, ["p/00", "p/01", "p/02", "p/03", "p/04"].map(b));
        }
        // Sorted by value, descending; keys only; count only; mod revision filters.
        let mut req = prefix("p/");
        req.sort_order = ringkv_store::SortOrder::Descend;
        req.sort_target = ringkv_store::SortTarget::Mod;
        req.limit = 2;
        req.keys_only = true;
        let (_, resp) = range(cl.range(&req, native::CONSISTENCY_LINEARIZABLE).await);
        assert_eq!(resp.kvs[0].key, b("p/03"), "the newest first");
        assert_eq!(resp.kvs[1].key, b("p/19"));
        assert!(resp.kvs.iter().all(|kv| kv.value.is_empty()));
        let mut req = prefix("p/");
        req.count_only = true;
        req.min_mod_revision = 10;
        let (_, resp) = range(cl.range(&req, native::CONSISTENCY_LINEARIZABLE).await);
        assert_eq!((resp.count, resp.kvs.len(), resp.more), (20, 0, false));

        // The past: the value before the overwrite.
        let mut req = RangeRequest {
            key: b("p/03"),
            ..Default::default()
        };
        req.revision = rev - 1;
        let (r, resp) = range(cl.range(&req, native::CONSISTENCY_LINEARIZABLE).await);
        assert_eq!((r, resp.kvs[0].value.as_ref()), (rev, &b"v3"[..]));
        req.revision = rev + 10;
        assert_eq!(
            refusal(cl.range(&req, native::CONSISTENCY_LINEARIZABLE).await),
            (
                11,
                "etcdserver: mvcc: required revision is a future revision".into()
            )
        );

        // Compare-and-swap on one key (the Kubernetes update): succeeds once.
        let cas = |expect: Revision| {
            Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod(expect),
                    key: b("p/07"),
                    range_end: Bytes::new(),
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: b("p/07"),
                    value: b("swapped"),
                    ..Default::default()
                })],
                failure: vec![RequestOp::Range(RangeRequest {
                    key: b("p/07"),
                    ..Default::default()
                })],
            })
        };
        let (r, resp) = store(cl.write(&cas(9)).await);
        rev += 1;
        assert_eq!(r, rev);
        assert!(
            matches!(resp, Response::Txn(ref t) if t.succeeded),
            "{resp:?}"
        );
        let (r, resp) = store(cl.write(&cas(9)).await);
        assert_eq!(
            r, rev,
            "a failed compare with a read-only branch changes nothing"
        );
        let Response::Txn(t) = resp else { panic!() };
        assert!(!t.succeeded);
        let ResponseOp::Range(got) = &t.responses[0] else {
            panic!()
        };
        assert_eq!(got.kvs[0].mod_revision, rev);

        // A txn over keys of both shards: both puts or neither, one revision.
        let both = |expect: &str| {
            Command::Txn(TxnRequest {
                compare: (0..20)
                    .map(|i| Compare {
                        result: CompareResult::NotEqual,
                        target: CompareTarget::Value(b(expect)),
                        key: b(&format!("p/{i:02}")),
                        range_end: Bytes::new(),
                    })
                    .collect(),
                success: vec![
                    RequestOp::Put(PutRequest {
                        key: b("q/a"),
                        value: b("1"),
                        ..Default::default()
                    }),
                    RequestOp::Put(PutRequest {
                        key: b("q/b"),
                        value: b("1"),
                        ..Default::default()
                    }),
                ],
                failure: vec![],
            })
        };
        let (r, resp) = store(cl.write(&both("absent")).await);
        rev += 1;
        assert_eq!(r, rev);
        assert!(matches!(resp, Response::Txn(ref t) if t.succeeded));
        let (_, q) = range(
            cl.range(&prefix("q/"), native::CONSISTENCY_LINEARIZABLE)
                .await,
        );
        assert_eq!(q.count, 2);
        assert!(
            q.kvs.iter().all(|kv| kv.mod_revision == rev),
            "one revision: {q:?}"
        );
        let (r, resp) = store(cl.write(&both("swapped")).await);
        assert_eq!(r, rev);
        assert!(matches!(resp, Response::Txn(ref t) if !t.succeeded));

        // A txn that only reads is served as a read over both shards: no log entry, no
        // revision, the compares and ranges at one revision.
        let ro = Command::Txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Version(1),
                key: b("p/00"),
                range_end: prefix_end(b"p/"),
            }],
            success: vec![],
            failure: vec![
                RequestOp::Range(RangeRequest {
                    limit: 3,
                    ..prefix("p/")
                }),
                RequestOp::Range(prefix("q/")),
            ],
        });
        let commit = |st: Outcome| match st.ok() {
            Some(Answer::Status(s)) => s.commit_index,
            other => panic!("{other:?}"),
        };
        let ep = cl.leader().expect("a leader found by the writes");
        let before = commit(Outcome::Answered(cl.status_at(ep).await.unwrap()));
        let (r, resp) = store(cl.write(&ro).await);
        assert_eq!(r, rev);
        let Response::Txn(t) = resp else { panic!() };
        assert!(!t.succeeded, "p/03 and p/07 are at version 2");
        let ResponseOp::Range(p) = &t.responses[0] else {
            panic!()
        };
        assert_eq!((p.count, p.kvs.len(), p.more), (20, 3, true));
        let ResponseOp::Range(q) = &t.responses[1] else {
            panic!()
        };
        assert_eq!(q.count, 2);
        let after = commit(Outcome::Answered(cl.status_at(ep).await.unwrap()));
        assert_eq!(after, before, "a read-only txn appends nothing to the log");

        // A duplicate key is refused before anything is proposed, with etcd's words.
        let dup = Command::Txn(TxnRequest {
            success: vec![
                RequestOp::Put(PutRequest {
                    key: b("d"),
                    ..Default::default()
                }),
                RequestOp::Put(PutRequest {
                    key: b("d"),
                    ..Default::default()
                }),
            ],
            ..Default::default()
        });
        assert_eq!(
            refusal(cl.write(&dup).await),
            (3, "etcdserver: duplicate key given in txn request".into())
        );

        // Deleting a prefix over both shards: one revision, every previous value.
        let del = Command::DeleteRange(DeleteRangeRequest {
            key: b("q/"),
            range_end: prefix_end(b"q/"),
            prev_kv: true,
        });
        let (r, resp) = store(cl.write(&del).await);
        rev += 1;
        assert_eq!(r, rev);
        let Response::DeleteRange(d) = resp else {
            panic!()
        };
        assert_eq!((d.deleted, d.prev_kvs.len()), (2, 2));
        let (r, _) = store(cl.write(&del).await);
        assert_eq!(r, rev, "a delete of nothing changes nothing");

        // Compaction: history below it refused with etcd's error, reads at it served.
        let compact = Command::Compact {
            revision: rev - 1,
            physical: true,
        };
        let (r, resp) = store(cl.write(&compact).await);
        assert_eq!((r, resp), (rev, Response::Compacted));
        let mut old = prefix("p/");
        old.revision = rev - 2;
        assert_eq!(
            refusal(cl.range(&old, native::CONSISTENCY_LINEARIZABLE).await),
            (
                11,
                "etcdserver: mvcc: required revision has been compacted".into()
            )
        );
        old.revision = rev - 1;
        let (_, resp) = range(cl.range(&old, native::CONSISTENCY_LINEARIZABLE).await);
        assert_eq!(resp.count, 20);
        assert_eq!(
            refusal(cl.write(&compact).await),
            (
                11,
                "etcdserver: mvcc: required revision has been compacted".into()
            )
        );
        rev
    });
    // Every node hashes the same store at that revision, also after a snapshot and a
    // restart from it.
    let hashes = |c: &Cluster| -> Vec<u64> {
        (0..3)
            .map(|n| {
                common::wait_until(10, "the node's hash at the revision", || {
                    let (st, b) = c.http(n, "GET", &format!("/hash?revision={rev}"), "")?;
                    let v = common::json(&b);
                    (st == 200).then(|| v["hash"].as_u64()).flatten()
                })
            })
            .collect()
    };
    let before = hashes(&c);
    assert!(before.iter().all(|h| *h == before[0]), "{before:?}");
    let f = (c.leader() + 1) % 3;
    let (st, b) = c.http(f, "POST", "/snapshot", "").unwrap();
    assert_eq!(st, 200, "{b}");
    c.kill(f);
    c.start(f);
    let after = hashes(&c);
    assert_eq!(after, before);
    println!("hashes at revision {rev}: {after:?}");
    let (st, b) = c
        .http(f, "GET", &format!("/hash?revision={}", rev - 5), "")
        .unwrap();
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("required revision has been compacted"), "{b}");
}

#[test]
fn a_lease_keeps_its_keys_while_kept_alive_and_the_leader_revokes_it_when_it_expires() {
    let c = Cluster::new("lease", Opts::default());
    c.leader();
    let eps = endpoints(&c);
    on_executor(move || async move {
        let cl = Client::new(eps, Duration::from_secs(5));
        // A TTL below the minimum (1.5 x the election timeout) is raised to it: 1 s here.
        let (_, resp) = store(cl.write(&Command::LeaseGrant { id: 0, ttl: 0 }).await);
        let Response::LeaseGranted(g) = resp else {
            panic!("{resp:?}")
        };
        assert!(g.id > 0);
        assert_eq!(g.ttl, 1);
        let (_, resp) = store(cl.write(&Command::LeaseGrant { id: 0, ttl: 2 }).await);
        let Response::LeaseGranted(g) = resp else {
            panic!()
        };
        assert_eq!(g.ttl, 2);
        for k in ["l/a", "l/b", "l/c"] {
            let p = Command::Put(PutRequest {
                key: b(k),
                value: b("v"),
                lease: g.id,
                ..Default::default()
            });
            store(cl.write(&p).await);
        }
        let missing = Command::Put(PutRequest {
            key: b("l/z"),
            lease: 12345,
            ..Default::default()
        });
        assert_eq!(
            refusal(cl.write(&missing).await),
            (5, "etcdserver: requested lease not found".into())
        );
        let ttl = cl.lease_time_to_live(g.id, true).await;
        let Some(Answer::LeaseTtl {
            id,
            ttl,
            granted_ttl,
            keys,
        }) = ttl.ok().cloned()
        else {
            panic!("{ttl:?}")
        };
        assert_eq!((id, granted_ttl), (g.id, 2));
        assert!((1..=2).contains(&ttl), "{ttl}");
        assert_eq!(
            keys,
            vec![b"l/a".to_vec(), b"l/b".to_vec(), b"l/c".to_vec()]
        );
        let list = cl.leases().await;
        assert!(
            matches!(list.ok(), Some(Answer::LeaseList { ids }) if ids.contains(&g.id)),
            "{list:?}"
        );

        // Kept alive for 3 s (past its TTL): the keys stay.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            let k = cl.lease_keep_alive(g.id).await;
            assert!(
                matches!(k.ok(), Some(Answer::LeaseTtl { ttl: 2, .. })),
                "{k:?}"
            );
            glommio::timer::sleep(Duration::from_millis(500)).await;
        }
        let (rev_before, resp) = range(
            cl.range(&prefix("l/"), native::CONSISTENCY_LINEARIZABLE)
                .await,
        );
        assert_eq!(resp.count, 3);

        // Left alone, it expires: the leader revokes it, its keys go in one revision.
        let t = Instant::now();
        loop {
            let (rev, resp) = range(
                cl.range(&prefix("l/"), native::CONSISTENCY_LINEARIZABLE)
                    .await,
            );
            if resp.count == 0 {
                assert_eq!(rev, rev_before + 1, "the revoke's one revision");
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the lease never expired"
            );
            glommio::timer::sleep(Duration::from_millis(200)).await;
        }
        let ttl = cl.lease_time_to_live(g.id, false).await;
        assert!(
            matches!(ttl.ok(), Some(Answer::LeaseTtl { ttl: -1, .. })),
            "{ttl:?}"
        );
        let k = cl.lease_keep_alive(g.id).await;
        assert!(
            matches!(k.ok(), Some(Answer::LeaseTtl { ttl: 0, .. })),
            "{k:?}"
        );
    });
}

#[test]
fn the_etcdctl_style_cli_commands_run_against_a_real_cluster() {
    let c = Cluster::new("mvcccli", Opts::default());
    c.leader();
    let eps: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let eps = eps.join(",");
    let ringkv = |args: &[&str], stdin: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"));
        cmd.args(args).args(["--endpoints", &eps]);
        common::run_with_stdin(cmd, stdin)
    };
    let ok = |args: &[&str], stdin: &str| {
        let (code, out, err) = ringkv(args, stdin);
        assert_eq!(code, 0, "{args:?}: {err}");
        common::json(&out)
    };
    for (k, v) in [
        ("app/a", "1"),
        ("app/b", "2"),
        ("app/c", "3"),
        ("other", "x"),
    ] {
        ok(&["put", k, v], "");
    }
    // get with range flags: etcd's JSON shapes.
    let r = ok(&["get", "app/", "--prefix", "--limit", "2"], "");
    assert_eq!(
        (r["count"].as_i64(), r["more"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(r["kvs"][0]["key"], "app/a");
    assert_eq!(r["kvs"][1]["value"], "2");
    assert_eq!(r["header"]["revision"], 5);
    let r = ok(&["get", "app/", "--prefix", "--count-only"], "");
    assert_eq!(
        (r["count"].as_i64(), r["kvs"].as_array().map(Vec::len)),
        (Some(3), Some(0))
    );
    let r = ok(&["get", "app/b", "--from-key", "--keys-only"], "");
    let keys: Vec<&str> = r["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/b", "app/c", "other"]);
    assert!(r["kvs"][0]["value"] == "");
    let r = ok(
        &[
            "get",
            "app/a",
            "app/c",
            "--order",
            "descend",
            "--sort-by",
            "modify",
        ],
        "",
    );
    assert_eq!(r["kvs"][0]["key"], "app/b");
    let r = ok(&["get", "app/a", "--rev", "2"], "");
    assert_eq!(r["kvs"][0]["value"], "1");
    // put with options.
    let r = ok(&["put", "app/a", "one", "--prev-kv"], "");
    assert_eq!(r["prev_kv"]["value"], "1");
    let rev = r["header"]["revision"].as_i64().unwrap();
    // txn from standard input, etcdctl's syntax: the compare holds, then it does not.
    let script = format!("mod(\"app/a\") = \"{rev}\"\n\nput app/b two\n\nget app/b\n");
    let r = ok(&["txn"], &script);
    assert_eq!(r["succeeded"], true);
    let r = ok(&["txn"], &script);
    assert_eq!(r["succeeded"], true, "app/a did not change");
    let r = ok(
        &["txn"],
        "value(\"app/b\") = \"2\"\n\nput app/b nope\n\nget app/b\n",
    );
    assert_eq!(r["succeeded"], false);
    assert_eq!(
        r["responses"][0]["response_range"]["kvs"][0]["value"],
        "two"
    );
    let (code, _, err) = ringkv(&["txn"], "size(\"k\") = \"1\"\n");
    assert_eq!(code, 2);
    assert!(err.contains("line 1: compare target"), "{err}");
    // del with flags.
    let r = ok(&["del", "app/", "--prefix", "--prev-kv"], "");
    assert_eq!(r["deleted"], 3);
    assert_eq!(r["prev_kvs"].as_array().map(Vec::len), Some(3));
    // compact, and reading below it.
    let rev = r["header"]["revision"].as_i64().unwrap();
    ok(&["compact", &(rev - 1).to_string()], "");
    let (code, _, err) = ringkv(&["get", "other", "--rev", "2"], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    // leases.
    let g = ok(&["lease", "grant", "30"], "");
    let id = g["ID"].as_i64().unwrap();
    assert_eq!(g["TTL"], 30);
    let id_s = id.to_string();
    ok(&["put", "leased", "v", "--lease", &id_s], "");
    let t = ok(&["lease", "timetolive", &id_s, "--keys"], "");
    assert_eq!(t["granted_ttl"], 30);
    assert_eq!(t["keys"][0]["key"], "leased");
    let k = ok(&["lease", "keep-alive", &id_s, "--once"], "");
    assert_eq!(k["ttl"], 30);
    let l = ok(&["lease", "list"], "");
    assert!(l["leases"].as_array().unwrap().contains(&id.into()));
    ok(&["lease", "revoke", &format!("0x{id:x}")], "");
    let r = ok(&["get", "leased", "--count-only"], "");
    assert_eq!(r["count"], 0, "the lease's key went with it");
    let t = ok(&["lease", "timetolive", &id_s], "");
    assert_eq!(t["ttl"], -1);
    let (code, _, err) = ringkv(&["lease", "revoke", &id_s], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("etcdserver: requested lease not found"),
        "{err}"
    );
}

#[test]
fn the_leader_compacts_automatically_keeping_the_revisions_configured() {
    let c = Cluster::new(
        "autocompact",
        Opts {
            extra: "[compaction]\nmode = \"revision\"\nretention_revisions = 5\ncheck_interval_ms = 200\n"
                .into(),
            ..Opts::default()
        },
    );
    c.leader();
    let eps = endpoints(&c);
    on_executor(move || async move {
        let cl = Client::new(eps, Duration::from_secs(5));
        let mut rev = 1;
        for i in 0..20 {
            rev = store(cl.write(&put("auto", &format!("v{i}"))).await).0;
        }
        assert_eq!(rev, 21);
        let at = |revision| RangeRequest {
            key: b("auto"),
            revision,
            ..Default::default()
        };
        // Within a few checks, history older than 5 revisions is gone; the last 5 stay.
        let t = Instant::now();
        loop {
            match cl.range(&at(2), native::CONSISTENCY_LINEARIZABLE).await {
                Outcome::Answered(a) if a.outcome.is_err() => {
                    assert!(
                        matches!(&a.outcome, Err(ApiError::Store { code: 11, message }) if message.contains("compacted")),
                        "{a:?}"
                    );
                    break;
                }
                _ => {}
            }
            assert!(t.elapsed() < Duration::from_secs(10), "never compacted");
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
        let (_, r) = range(
            cl.range(&at(rev - 5), native::CONSISTENCY_LINEARIZABLE)
                .await,
        );
        assert_eq!(r.kvs[0].value, b("v14"));
    });
}
