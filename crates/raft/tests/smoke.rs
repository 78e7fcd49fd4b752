use bytes::Bytes;
use ringkv_raft::Role;
use ringkv_sim::testkit::Cluster;

#[test]
fn three_nodes_elect_replicate_and_apply() {
    let mut c = Cluster::new(&[1, 2, 3], &[], |_| {});
    let l = c.elect(1000);
    assert_eq!(c.raft(l).role(), Role::Leader);
    let (idx, _) = c
        .raft(l)
        .propose(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
        .unwrap();
    assert_eq!(idx, 2);
    c.stabilize();
    for id in [1, 2, 3] {
        // Followers learn the commit index on the next append or heartbeat.
        let n = c.node(id);
        assert_eq!(n.raft.last_index(), 3, "node {id}");
    }
    assert_eq!(c.node(l).applied.len(), 2);
    for _ in 0..20 {
        c.tick_all();
        c.stabilize();
    }
    for id in [1, 2, 3] {
        assert_eq!(c.node(id).applied.len(), 2, "node {id}");
    }
}
