//! The Rust `etcd-client` crate (tonic) against ringkv and against a real etcd: the same
//! script of its common calls (put with prev_kv, get by prefix with limit and sort, get at
//! a revision, delete a range, compare-and-swap txns both ways, leases with keys and
//! keep-alive, compaction and its errors, member list, status) goes to a three-node
//! ringkv and a three-member etcd; what each call returned is written down with ids and
//! terms left out, and the two records must be equal line for line.
//!
//! Needs etcd installed (`make test` installs it through `need-etcd`).

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::{Cluster, Opts, loopback};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions,
    LeaseTimeToLiveOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use ringkv_harness::etcd::{EtcdCluster, installed};

/// A call's result in the record: its error as gRPC code and message, or what it returned.
fn err(e: etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("error {:?}: {}", s.code(), s.message()),
        other => format!("error {other}"),
    }
}

fn kvs(kvs: &[etcd_client::KeyValue]) -> String {
    kvs.iter()
        .map(|kv| {
            format!(
                "{}={} c{} m{} v{}",
                String::from_utf8_lossy(kv.key()),
                String::from_utf8_lossy(kv.value()),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(-1, |h| h.revision())
}

/// The script: every line of the returned record is one call's observable result.
async fn script(endpoints: Vec<String>) -> Vec<String> {
    let mut c = Client::connect(endpoints, None).await.expect("connect");
    let mut out = Vec::new();
    let mut log = |s: String| out.push(s);

    let r = c.put("a", "1", None).await.unwrap();
    log(format!("put a: rev {}", rev(r.header())));
    let r = c
        .put("a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    log(format!(
        "put a prev_kv: rev {} prev {}",
        rev(r.header()),
        r.prev_key()
            .map_or(String::new(), |kv| kvs(std::slice::from_ref(kv)))
    ));
    for (k, v) in [("b", "3"), ("c", "4"), ("d", "5")] {
        c.put(k, v, None).await.unwrap();
    }
    let r = c.get("a", None).await.unwrap();
    log(format!("get a: rev {} {}", rev(r.header()), kvs(r.kvs())));
    let r = c
        .get(
            "",
            Some(
                GetOptions::new()
                    .with_from_key()
                    .with_limit(2)
                    .with_sort(SortTarget::Value, SortOrder::Descend),
            ),
        )
        .await
        .unwrap();
    log(format!(
        "get all by value desc limit 2: {} more {} count {}",
        kvs(r.kvs()),
        r.more(),
        r.count()
    ));
    let r = c
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    log(format!("get a at 2: {}", kvs(r.kvs())));
    let r = c
        .get("", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    log(format!("count all: {} kvs {}", r.count(), r.kvs().len()));
    let r = c
        .get(
            "b",
            Some(GetOptions::new().with_serializable().with_keys_only()),
        )
        .await
        .unwrap();
    log(format!("serializable keys-only b: {}", kvs(r.kvs())));
    let r = c
        .delete(
            "b",
            Some(DeleteOptions::new().with_range("d").with_prev_key()),
        )
        .await
        .unwrap();
    log(format!(
        "delete [b, d): rev {} deleted {} prev {}",
        rev(r.header()),
        r.deleted(),
        kvs(r.prev_kvs())
    ));
    let r = c.delete("zz", None).await.unwrap();
    log(format!(
        "delete missing: rev {} deleted {}",
        rev(r.header()),
        r.deleted()
    ));

    // Kubernetes' create and update shapes.
    for (what, cmp) in [
        (
            "create a (exists)",
            Compare::mod_revision("a", CompareOp::Equal, 0),
        ),
        ("create e", Compare::mod_revision("e", CompareOp::Equal, 0)),
        (
            "update a at 3",
            Compare::mod_revision("a", CompareOp::Equal, 3),
        ),
        ("value a > 1", Compare::value("a", CompareOp::Greater, "1")),
    ] {
        let key = if what.contains(" e") { "e" } else { "a" };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key, "t", None)])
            .or_else([TxnOp::get(key, None)]);
        let r = c.txn(txn).await.unwrap();
        let ops: Vec<String> = r
            .op_responses()
            .into_iter()
            .map(|o| match o {
                TxnOpResponse::Put(p) => format!("put rev {}", rev(p.header())),
                TxnOpResponse::Get(g) => format!("get {}", kvs(g.kvs())),
                TxnOpResponse::Delete(d) => format!("delete {}", d.deleted()),
                TxnOpResponse::Txn(t) => format!("txn {}", t.succeeded()),
            })
            .collect();
        log(format!(
            "txn {what}: rev {} succeeded {} {ops:?}",
            rev(r.header()),
            r.succeeded()
        ));
    }
    let dup = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]);
    log(format!(
        "txn duplicate: {}",
        c.txn(dup)
            .await
            .map(|_| ())
            .map_err(err)
            .err()
            .unwrap_or_default()
    ));
    log(format!(
        "put empty key: {}",
        c.put("", "v", None)
            .await
            .map(|_| ())
            .map_err(err)
            .err()
            .unwrap_or_default()
    ));

    let g = c.lease_grant(30, None).await.unwrap();
    log(format!("lease grant: ttl {}", g.ttl()));
    let id = g.id();
    c.put("l1", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    c.put("l2", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    let t = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    // etcd lists a lease's keys in Go's map order (it varies); ringkv in key order.
    let mut keys: Vec<String> = t
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    log(format!(
        "lease ttl: granted {} remaining within {} keys {keys:?}",
        t.granted_ttl(),
        (25..=30).contains(&t.ttl())
    ));
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let k = stream.message().await.unwrap().expect("a keep-alive reply");
    log(format!(
        "keep-alive: ttl {} same id {}",
        k.ttl(),
        k.id() == id
    ));
    let l = c.leases().await.unwrap();
    log(format!(
        "leases: {}",
        l.leases().iter().filter(|s| s.id() == id).count()
    ));
    let r = c.lease_revoke(id).await.unwrap();
    log(format!("lease revoke: rev {}", rev(r.header())));
    let r = c
        .get("l", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    log(format!("after revoke: {} keys", r.kvs().len()));
    let t = c.lease_time_to_live(id, None).await.unwrap();
    log(format!("revoked lease ttl: {}", t.ttl()));
    log(format!(
        "revoke again: {}",
        c.lease_revoke(id)
            .await
            .map(|_| ())
            .map_err(err)
            .err()
            .unwrap_or_default()
    ));

    let now = rev(c.get("a", None).await.unwrap().header());
    let r = c
        .compact(now - 1, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    log(format!("compact at {}: rev {}", now - 1, rev(r.header())));
    for at in [now - 2, now + 5] {
        log(format!(
            "get at {at}: {}",
            c.get("a", Some(GetOptions::new().with_revision(at)))
                .await
                .map(|_| ())
                .map_err(err)
                .err()
                .unwrap_or_default()
        ));
    }
    log(format!(
        "compact again: {}",
        c.compact(now - 1, None)
            .await
            .map(|_| ())
            .map_err(err)
            .err()
            .unwrap_or_default()
    ));

    let m = c.member_list().await.unwrap();
    log(format!(
        "members: {} learners {}",
        m.members().len(),
        m.members().iter().filter(|m| m.is_learner()).count()
    ));
    let s = c.status().await.unwrap();
    log(format!(
        "status: version {} leader known {} db size positive {}",
        s.version(),
        s.leader() != 0,
        s.db_size() > 0
    ));
    out
}

fn run(endpoints: &[SocketAddr]) -> Vec<String> {
    let endpoints: Vec<String> = endpoints.iter().map(|a| a.to_string()).collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(script(endpoints))
}

#[test]
fn etcd_client_sees_ringkv_as_it_sees_etcd() {
    assert!(
        installed(),
        "etcd is not installed: run `make test` (it installs etcd-server)"
    );
    let c = Cluster::new("etcd-client", Opts::default());
    c.leader();
    let ringkv: Vec<SocketAddr> = c.ports.iter().map(|p| loopback(*p)).collect();
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("etcd-client-{}", std::process::id()));
    let e = EtcdCluster::start(&dir, 3, common::free_port).unwrap_or_else(|e| panic!("{e}"));
    let theirs = run(&e.clients);
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    let ours = run(&ringkv);
    // The record means something only if the calls did what the script expects.
    assert_eq!(theirs[0], "put a: rev 2", "{theirs:#?}");
    assert!(
        theirs
            .iter()
            .any(|l| l.contains("required revision has been compacted"))
    );
    for (i, (t, o)) in theirs.iter().zip(&ours).enumerate() {
        assert_eq!(
            o, t,
            "line {i} differs (ringkv, then etcd)\nringkv: {ours:#?}\netcd: {theirs:#?}"
        );
    }
    assert_eq!(ours.len(), theirs.len());
    eprintln!("{} calls, records equal:\n{}", ours.len(), ours.join("\n"));
}
