//! The Raft core's event counters (`Raft::counters`), which the node exports as metrics:
//! elections, ReadIndex rounds with the reads they carry, lease reads.

use ringkv::raft::{Config, Counters, ReadPolicy, Role};
use ringkv::testkit::Cluster;

fn small(c: &mut Config) {
    c.election_timeout_min_ticks = 10;
    c.election_timeout_max_ticks = 20;
    c.heartbeat_interval_ticks = 2;
    c.lease_duration_ns = 80_000_000;
}

#[test]
fn elections_read_rounds_and_lease_reads_are_counted() {
    let mut c = Cluster::new(&[1, 2, 3], &[], small);
    // Fresh nodes refuse no votes: a campaign is one pre-vote round, one election, a win.
    c.raft(1).campaign_now();
    c.stabilize();
    assert_eq!(c.raft(1).role(), Role::Leader);
    assert_eq!(
        c.raft(1).counters(),
        Counters {
            pre_votes_started: 1,
            elections_started: 1,
            elections_won: 1,
            ..Counters::default()
        }
    );
    assert_eq!(c.raft(2).counters(), Counters::default());

    // Three linearizable reads recorded before the next Ready share one round.
    let now = c.now;
    for id in 1..=3 {
        c.raft(1).read(id, ReadPolicy::Linearizable, now);
    }
    c.stabilize();
    assert_eq!(c.node(1).reads.len(), 3, "{:?}", c.node(1).reads);
    let k = c.raft(1).counters();
    assert_eq!((k.read_index_rounds, k.read_index_reads), (1, 3));
    assert_eq!(k.lease_reads, 0);

    // A lease read while the lease holds (the round just acknowledged started it) needs no
    // round.
    let now = c.now;
    c.raft(1).read(4, ReadPolicy::Lease, now);
    c.stabilize();
    let k = c.raft(1).counters();
    assert_eq!((k.read_index_rounds, k.lease_reads), (1, 1));
    assert_eq!(c.node(1).reads.len(), 4);
}
