//! Membership through etcd's Cluster and Maintenance APIs, with etcdctl as an etcd
//! operator runs it: a learner added (`member add --learner`), started, promoted, made
//! leader (`move-leader`), removed; adding a voter directly is refused with the advice to
//! add a learner. ringkv only: etcd's members are etcd processes, so the flow cannot be
//! the same commands against both (tests/etcdctl.rs compares what can be).
//!
//! Needs etcdctl installed (`make test` installs it through `need-etcd`).

mod common;

use common::{Cluster, Opts, wait_until};

fn etcdctl(endpoints: &str, args: &[&str]) -> (bool, String) {
    let (code, out, err) = common::etcdctl(endpoints, args, "");
    (code == 0, format!("{out}{err}"))
}

fn members(ep: &str) -> Vec<String> {
    let (ok, out) = etcdctl(ep, &["member", "list"]);
    assert!(ok, "{out}");
    out.lines().map(str::to_string).collect()
}

#[test]
fn etcdctl_adds_promotes_moves_leadership_to_and_removes_a_member() {
    assert!(
        ringkv_harness::etcd::installed(),
        "etcdctl is not installed: run `make test` (it installs etcd-client)"
    );
    let mut c = Cluster::with_joiners("etcd-members", Opts::default(), 1);
    for i in 0..3 {
        c.start(i);
    }
    c.leader();
    let ep = format!("127.0.0.1:{}", c.ports[0]);
    let peer = format!("http://127.0.0.1:{}", c.ports[3]);

    let (ok, out) = etcdctl(&ep, &["member", "add", "n4", "--peer-urls", &peer]);
    assert!(!ok && out.contains("members join as learners"), "{out}");

    let (ok, out) = etcdctl(
        &ep,
        &["member", "add", "n4", "--learner", "--peer-urls", &peer],
    );
    assert!(ok && out.contains("Member                4 added"), "{out}");
    assert!(
        members(&ep)
            .iter()
            .any(|l| l.starts_with("4, started, node-4, ") && l.ends_with(", true"))
    );

    c.start(3);
    // Promotion waits for the learner to catch up: retried until it has.
    wait_until(30, "node 4 promoted", || {
        let (ok, out) = etcdctl(&ep, &["member", "promote", "4"]);
        (ok && out.contains("promoted")).then_some(())
    });
    let m = members(&ep);
    assert_eq!(m.len(), 4, "{m:?}");
    assert!(m.iter().all(|l| l.ends_with(", false")), "{m:?}");

    // move-leader is sent to the leader's endpoint (etcdctl finds it by Status).
    let all: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let (ok, out) = etcdctl(&all.join(","), &["move-leader", "4"]);
    assert!(ok && out.contains("Leadership transferred"), "{out}");
    assert_eq!(c.leader(), 3);

    let (ok, out) = etcdctl(&ep, &["member", "remove", "2"]);
    assert!(
        ok && out.contains("Member                2 removed"),
        "{out}"
    );
    let m = members(&ep);
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(!m.iter().any(|l| l.starts_with("2, ")), "{m:?}");
    let (ok, out) = etcdctl(&ep, &["put", "after", "1"]);
    assert!(ok, "{out}");
}
