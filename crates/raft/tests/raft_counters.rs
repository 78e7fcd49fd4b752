//! The Raft core's event counters (`Raft::counters`), which the node exports as metrics:
//! elections, ReadIndex rounds with the reads they carry, lease reads.

use ringkv_raft::{Config, Counters, ReadPolicy, Role};
use ringkv_sim::testkit::Cluster;

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

/// DiskFirst: a follower whose disk lost entries it had acknowledged (damage its WAL cut as
/// a torn tail) is found out by its rejection, counted, and re-sent from what it holds;
/// without that the leader would probe it at its old match index forever.
#[test]
fn a_follower_that_lost_acknowledged_entries_is_counted_and_caught_up() {
    let mut c = Cluster::new(&[1, 2, 3], &[], small);
    c.raft(1).campaign_now();
    c.stabilize();
    for i in 0..6u8 {
        c.raft(1)
            .propose(vec![bytes::Bytes::from(vec![b'a' + i])])
            .unwrap();
        c.stabilize();
    }
    let last = c.raft(1).last_index();
    assert_eq!(c.raft(3).last_index(), last);
    // Node 3 crashes; its last three entries are cut from its disk.
    c.crash(3);
    let kept = c.node(3).storage.entries.len() - 3;
    c.nodes.get_mut(&3).unwrap().storage.entries.truncate(kept);
    c.restart(3);
    assert_eq!(c.raft(3).last_index(), last - 3);
    c.raft(1)
        .propose(vec![bytes::Bytes::from_static(b"z")])
        .unwrap();
    for _ in 0..5 {
        c.tick_all();
        c.stabilize();
    }
    assert_eq!(
        c.raft(3).last_index(),
        c.raft(1).last_index(),
        "node 3 caught up"
    );
    assert_eq!(c.raft(1).counters().follower_regressions, 1);
    assert_eq!(c.raft(2).counters().follower_regressions, 0);
}

/// Peer bytes that would break the log's invariants (a gap in appended entries, terms
/// going backwards, a membership payload that does not decode) are dropped and counted by
/// `step`: the node neither panics nor changes its log, and goes on replicating.
#[test]
fn malformed_messages_are_refused_and_counted_not_stepped() {
    use bytes::Bytes;
    use ringkv_raft::{Body, Entry, EntryKind, Message, MessageError};
    let mut c = Cluster::new(&[1, 2, 3], &[], small);
    c.raft(1).campaign_now();
    c.stabilize();
    let (term, last) = (c.raft(1).term(), c.raft(2).last_index());
    let entry = |index, term, kind, data: &'static [u8]| Entry {
        index,
        term,
        kind,
        data: Bytes::from_static(data),
    };
    let append = |entries: Vec<Entry>| Message {
        from: 1,
        to: 2,
        term,
        body: Body::Append {
            prev_index: last,
            prev_term: term,
            entries,
            commit: 0,
        },
    };
    let gap = append(vec![
        entry(last + 1, term, EntryKind::Normal, b"a"),
        entry(last + 3, term, EntryKind::Normal, b"b"),
    ]);
    let backwards = append(vec![
        entry(last + 1, term, EntryKind::Normal, b"a"),
        entry(last + 2, term - 1, EntryKind::Normal, b"b"),
    ]);
    let bad_membership = append(vec![entry(last + 1, term, EntryKind::Membership, b"\x01")]);
    assert_eq!(
        gap.check(),
        Err(MessageError::NotContiguous {
            expected: last + 2,
            found: last + 3
        })
    );
    assert!(matches!(
        backwards.check(),
        Err(MessageError::BadTerm { .. })
    ));
    assert_eq!(
        bad_membership.check(),
        Err(MessageError::BadMembership { index: last + 1 })
    );
    for m in [gap, backwards, bad_membership] {
        c.raft(2).step(m);
    }
    assert_eq!(c.raft(2).counters().messages_refused, 3);
    assert_eq!(c.raft(2).last_index(), last, "nothing appended");
    // The node goes on: a real proposal reaches it.
    c.raft(1).propose(vec![Bytes::from_static(b"ok")]).unwrap();
    c.stabilize();
    assert_eq!(c.raft(2).last_index(), last + 1);
}
