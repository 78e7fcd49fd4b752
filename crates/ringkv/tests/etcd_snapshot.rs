//! Disaster recovery as an etcd operator does it: `etcdctl snapshot save` from a running
//! ringkv (Maintenance.Snapshot), the whole cluster stopped and its data wiped,
//! `ringkv snapshot restore FILE --config` for every node, the nodes started again: every
//! key reads back with the same value, versions and revisions, leases with their keys, the
//! revision goes on from where it was; a damaged file is refused.
//!
//! Needs etcdctl installed (`make test` installs it through `need-etcd`).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Cluster, Opts};

fn etcdctl(port: u16, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = common::etcdctl(&format!("127.0.0.1:{port}"), args, "");
    (code == 0, out, err)
}

fn ok(port: u16, args: &[&str]) -> String {
    let (ok, out, err) = etcdctl(port, args);
    assert!(ok, "etcdctl {args:?}: {err}");
    out
}

/// An interactive `etcdctl txn` (its input on stdin) that must succeed.
fn txn(port: u16, input: &str) {
    let (code, out, err) = common::etcdctl(&format!("127.0.0.1:{port}"), &["txn"], input);
    assert!(code == 0 && out.starts_with("SUCCESS"), "txn: {out}{err}");
}

/// Every key with its value, versions and revisions, and the header's revision.
fn everything(port: u16) -> (i64, serde_json::Value) {
    let v: serde_json::Value =
        serde_json::from_str(&ok(port, &["get", "", "--from-key", "-w", "json"])).unwrap();
    (v["header"]["revision"].as_i64().unwrap(), v["kvs"].clone())
}

fn restore(file: &Path, config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["snapshot", "restore"])
        .arg(file)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_saved_snapshot_restores_a_wiped_cluster_with_every_revision() {
    assert!(
        ringkv_harness::etcd::installed(),
        "etcdctl is not installed: run `make test` (it installs etcd-client)"
    );
    let mut c = Cluster::new("etcd-snapshot", Opts::default());
    c.leader();
    let p = c.ports[0];
    // History worth keeping: versions, a delete, a compaction, a lease with keys, and
    // enough keys that the snapshot spans several chunks of the stream.
    // Three rounds of 384 keys, 128 puts per txn (etcd's limit): 9 revisions.
    for round in 0..3 {
        for first in (0..384).step_by(128) {
            let puts: String = (first..first + 128)
                .map(|k| format!("put k/{k:04} v{round}-{}\n", "x".repeat(3000)))
                .collect();
            txn(p, &format!("\n{puts}\n\n"));
        }
    }
    ok(p, &["del", "k/0007"]);
    ok(p, &["compaction", "5"]);
    let lease = ok(p, &["lease", "grant", "600"]);
    let lease = lease.split_whitespace().nth(1).unwrap().to_string();
    ok(p, &["put", "l/a", "1", &format!("--lease={lease}")]);
    let (rev, before) = everything(p);
    assert_eq!(before.as_array().unwrap().len(), 384, "383 k/ keys and l/a");

    let dir = c.dir.join("saved");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("snap.db");
    let (saved, out, err) = etcdctl(p, &["snapshot", "save", file.to_str().unwrap()]);
    assert!(saved, "snapshot save: {out}{err}");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size > 1 << 20 && size % 512 == 32, "{size} bytes");

    for i in 0..3 {
        c.terminate(i);
        c.wipe(i);
    }
    // A damaged file is refused (the SHA-256 etcd's stream ends with).
    let mut bad = std::fs::read(&file).unwrap();
    bad[size as usize / 2] ^= 1;
    let bad_file = dir.join("bad.db");
    std::fs::write(&bad_file, bad).unwrap();
    let (restored, said) = restore(&bad_file, &c.config(0));
    assert!(!restored && said.contains("SHA-256"), "{said}");
    for i in 0..3 {
        let (restored, said) = restore(&file, &c.config(i));
        assert!(restored, "{said}");
        assert!(said.contains(&format!("restored revision {rev}")), "{said}");
    }
    // A directory that holds state is refused.
    let (again, said) = restore(&file, &c.config(0));
    assert!(!again && said.contains("holds a node's state"), "{said}");

    for i in 0..3 {
        c.start(i);
    }
    c.leader();
    for port in &c.ports {
        assert_eq!(everything(*port), (rev, before.clone()));
    }
    let ttl = ok(p, &["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("attached keys([l/a])"), "{ttl}");
    // Below the compaction is gone still; the revision goes on.
    let (old, _, err) = etcdctl(p, &["get", "k/0001", "--rev=3"]);
    assert!(
        !old && err.contains("required revision has been compacted"),
        "{err}"
    );
    ok(p, &["put", "after", "1"]);
    assert_eq!(everything(p).0, rev + 1);
}
