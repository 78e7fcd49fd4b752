//! Tests that check the Raft core against the figures and sections of the Raft paper
//! ("In Search of an Understandable Consensus Algorithm", extended version) and Ongaro's
//! thesis. Each test names the section it checks.

use bytes::Bytes;
use ringkv_raft::{Body, Config, Entry, EntryKind, HardState, Index, NodeId, Role, Term};
use ringkv_sim::testkit::Cluster;

fn entry(index: Index, term: Term, data: &str) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

fn log_of(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &t)| entry(i as Index + 1, t, &format!("{}@{t}", i + 1)))
        .collect()
}

fn terms_of(c: &mut Cluster, id: NodeId) -> Vec<Term> {
    let r = c.raft(id);
    let first = r.log().first_index();
    r.log().iter_from(first).map(|e| e.term).collect()
}

/// Replaces a node's stored state and restarts it from there.
fn seed_node(c: &mut Cluster, id: NodeId, term: Term, terms: &[Term]) {
    let n = c.nodes.get_mut(&id).unwrap();
    n.storage.hard_state = HardState {
        term,
        vote: 0,
        commit: 0,
    };
    n.storage.entries = log_of(terms);
    c.restart(id);
}

/// A restarted node refuses votes for one minimum election timeout (it may have
/// acknowledged a lease just before it stopped): let that pass, dropping any campaign the
/// ticks start.
fn pass_boot_guard(c: &mut Cluster) {
    for _ in 0..10 {
        c.tick_all();
    }
    c.drop_in_flight();
}

fn campaign_until_leader(c: &mut Cluster, id: NodeId) {
    assert!(c.campaign_until_leader(id), "node {id} did not win");
}

fn small(c: &mut Config) {
    c.election_timeout_min_ticks = 10;
    c.election_timeout_max_ticks = 20;
    c.heartbeat_interval_ticks = 2;
    c.lease_duration_ns = 80_000_000;
}

/// Figure 7 / section 5.3: whatever a follower's log looks like (missing entries, extra
/// uncommitted entries, or both), the leader brings it to exactly the leader's log.
#[test]
fn figure7_leader_repairs_every_follower_log() {
    let leader_log: &[Term] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [(&str, &[Term]); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for (name, f) in followers {
        let mut c = Cluster::new(&[1, 2, 3], &[], small);
        seed_node(&mut c, 1, 7, leader_log);
        seed_node(&mut c, 2, 7, f);
        seed_node(&mut c, 3, 7, leader_log);
        pass_boot_guard(&mut c);
        c.raft(1).campaign_now();
        for (m, ok) in c.stabilize() {
            if std::env::var("DBG").is_ok() {
                eprintln!("{ok} {m:?}");
            }
        }
        assert_eq!(c.raft(1).role(), Role::Leader, "case {name}");
        assert_eq!(c.raft(1).term(), 8, "case {name}");
        let mut want = leader_log.to_vec();
        want.push(8); // the new leader's no-op
        assert_eq!(terms_of(&mut c, 2), want, "case {name}: follower log");
        assert_eq!(
            terms_of(&mut c, 1),
            want,
            "case {name}: leader log is append-only"
        );
        assert_eq!(c.raft(2).commit(), 11, "case {name}");
    }
}

/// Figure 8 / section 5.4.2: a leader must not commit an entry of an older term by counting
/// replicas, or a later leader may overwrite an entry that was reported committed.
#[test]
fn figure8_older_term_entry_is_not_committed_by_counting() {
    let tweak = |c: &mut Config| {
        small(c);
        c.append_entries_max = 1; // one entry per message, so index 2 travels alone
    };
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], &[], tweak);
    // (a) S1 leads and replicates index 2 to S2 only.
    c.raft(1).campaign_now();
    c.stabilize();
    let t1 = c.raft(1).term();
    c.partition(&[1, 2], &[3, 4, 5]);
    c.raft(1)
        .propose(vec![Bytes::from_static(b"fig8")])
        .unwrap();
    c.stabilize();
    assert_eq!(c.raft(2).last_index(), 2);
    // (b) S1 crashes; S5 is elected by S3, S4 and itself, appends index 2 in its term, crashes.
    c.crash(1);
    c.heal();
    c.partition(&[2], &[3, 4, 5]);
    for _ in 0..25 {
        for id in [3, 4, 5] {
            c.tick(id); // let the followers' leader lease run out
        }
    }
    c.drop_in_flight();
    c.raft(5).campaign_now();
    assert!(c.run_until(|c| c.raft(5).role() == Role::Leader));
    let t5 = c.raft(5).term();
    assert!(t5 > t1);
    assert_eq!(c.raft(5).log().term(2), Some(t5));
    c.process(5); // persist the new entry; the crash then drops the messages carrying it
    c.crash(5);
    // (c) S1 restarts, wins a later term with S2 and S3, and replicates index 2 (of term t1) to
    // S3. Index 2 is now on a majority (S1, S2, S3) but must not be committed.
    c.heal();
    c.restart(1);
    for _ in 0..25 {
        for id in [1, 2, 3, 4] {
            c.tick(id);
        }
    }
    c.drop_in_flight();
    c.partition(&[1], &[4]);
    campaign_until_leader(&mut c, 1);
    let t1b = c.raft(1).term();
    assert!(t1b > t5);
    // Deliver only what carries index 2 to S3 (and S3's answer); nothing carries index 3 yet.
    let mut delivered_index2 = false;
    c.run_until(|c| {
        // While S3 lacks index 2 it rejects any append and the leader backs up to index 2.
        let s3_lacks = c.raft(3).last_index() < 2;
        c.queue.retain(|m| match &m.body {
            Body::Append { entries, .. } => {
                m.to == 3 && (s3_lacks || entries.iter().all(|e| e.index <= 2))
            }
            Body::AppendResp { .. } => m.from == 3,
            _ => false,
        });
        if c.raft(3).log().term(2) == Some(t1) {
            delivered_index2 = true;
        }
        delivered_index2 && c.queue.is_empty()
    });
    assert_eq!(
        c.raft(3).log().term(2),
        Some(t1),
        "S3 holds index 2 of term {t1}"
    );
    assert_eq!(
        c.raft(1).commit(),
        1,
        "index 2 is on a majority but of an older term"
    );
    // (d) S1 crashes; S5 restarts and wins with S2, S3, S4 (its last term t5 beats t1),
    // then overwrites index 2 everywhere. That is safe only because index 2 never committed.
    c.crash(1);
    c.heal();
    c.restart(5);
    for _ in 0..25 {
        for id in [2, 3, 4, 5] {
            c.tick(id);
        }
    }
    c.drop_in_flight();
    campaign_until_leader(&mut c, 5);
    c.stabilize();
    for id in [2, 3, 4, 5] {
        assert_eq!(
            c.raft(id).log().term(2),
            Some(t5),
            "S{id} index 2 overwritten"
        );
        assert!(
            c.node(id)
                .applied
                .iter()
                .all(|(_, d)| d.as_ref() != b"fig8"),
            "S{id} applied an entry that was later overwritten"
        );
    }
}

/// Figure 8 (e): once the leader commits an entry of its own term, the older entry below
/// it is committed too and no later leader can lack it (Leader Completeness, 5.4.3).
#[test]
fn figure8_e_committing_current_term_commits_older_entries() {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], &[], small);
    c.raft(1).campaign_now();
    c.stabilize();
    c.partition(&[1, 2], &[3, 4, 5]);
    c.raft(1).propose(vec![Bytes::from_static(b"old")]).unwrap();
    c.stabilize();
    c.crash(1);
    c.heal();
    c.restart(1);
    for _ in 0..25 {
        c.tick_all();
    }
    c.drop_in_flight();
    c.raft(1).campaign_now();
    c.stabilize();
    assert_eq!(c.raft(1).role(), Role::Leader);
    let last = c.raft(1).last_index();
    assert_eq!(
        c.raft(1).commit(),
        last,
        "no-op of the new term commits, and index 2 with it"
    );
    // Any other node that wins later must hold the committed entry.
    c.crash(1);
    let l = c.elect(200);
    assert!(
        c.node(l)
            .applied
            .iter()
            .any(|(i, d)| *i == 2 && d.as_ref() == b"old")
    );
}

/// Section 5.2 (Election Safety) and 5.4.1: a candidate whose log is behind cannot win,
/// and a voter grants one vote per term even when asked twice.
#[test]
fn stale_candidate_loses_and_votes_are_unique() {
    let mut c = Cluster::new(&[1, 2, 3], &[], small);
    seed_node(&mut c, 1, 3, &[1, 1]);
    seed_node(&mut c, 2, 3, &[1, 1, 3]);
    seed_node(&mut c, 3, 3, &[1, 1, 3]);
    pass_boot_guard(&mut c);
    c.raft(1).campaign_now();
    c.stabilize();
    assert_ne!(
        c.raft(1).role(),
        Role::Leader,
        "node with a stale log must not lead"
    );
    assert_eq!(
        c.raft(1).term(),
        3,
        "rejected pre-vote does not disrupt the term"
    );
    c.raft(2).campaign_now();
    c.stabilize();
    assert_eq!(c.raft(2).role(), Role::Leader);
    assert_eq!(terms_of(&mut c, 1), vec![1, 1, 3, 4]);
}

/// Section 5.5: AppendEntries is idempotent; a repeated message changes nothing.
#[test]
fn duplicate_append_changes_nothing() {
    let mut c = Cluster::new(&[1, 2, 3], &[], small);
    c.raft(1).campaign_now();
    c.stabilize();
    c.raft(1)
        .propose(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
        .unwrap();
    c.process(1);
    let appends: Vec<_> = c
        .queue
        .iter()
        .filter(|m| m.to == 2 && matches!(m.body, Body::Append { .. }))
        .cloned()
        .collect();
    c.stabilize();
    let before = terms_of(&mut c, 2);
    let commit = c.raft(2).commit();
    for m in appends {
        c.deliver(m);
    }
    assert_eq!(terms_of(&mut c, 2), before);
    assert_eq!(c.raft(2).commit(), commit);
}

/// Section 5.2 / 5.4 and thesis 3.6 under random faults: with DiskFirst, random message
/// loss, partitions, crashes that lose unpersisted state and restarts, (1) there is at most
/// one leader per term, (2) an entry once committed on any node is never changed or lost,
/// (3) every node applies the same sequence.
#[test]
fn safety_under_random_faults() {
    let (mut committed, mut terms) = (0, 0);
    for seed in 0..40u64 {
        let (c, t) = run_random(seed);
        committed += c;
        terms += t;
    }
    // The runs must have made progress and changed leaders, or they proved nothing.
    assert!(
        committed > 300,
        "only {committed} entries committed over 40 seeds"
    );
    assert!(terms > 40, "only {terms} terms with a leader over 40 seeds");
}

/// Runs one seed; returns (entries committed, terms that had a leader).
fn run_random(seed: u64) -> (usize, usize) {
    let mut rng = ringkv_rng::Rng::new(seed);
    let mut next = move |n: u64| rng.below(n);
    let ids = [1u64, 2, 3, 4, 5];
    let mut c = Cluster::new(&ids, &[], |cfg| {
        small(cfg);
        cfg.seed ^= seed;
    });
    for n in c.nodes.values_mut() {
        n.auto_persist = false;
    }
    let mut leaders: std::collections::BTreeMap<Term, NodeId> = Default::default();
    let mut committed: std::collections::BTreeMap<Index, (Term, Bytes)> = Default::default();
    let mut proposals = 0u64;
    for step in 0..6000 {
        match next(100) {
            0..=14 => c.tick(ids[next(5) as usize]),
            15..=59 => {
                let id = ids[next(5) as usize];
                c.process(id);
            }
            60..=79 => {
                for _ in 0..next(20) {
                    let Some(m) = c.queue.pop_front() else { break };
                    if next(10) == 0 {
                        continue; // lost
                    }
                    if next(10) == 0 {
                        c.queue.push_back(m); // reordered
                    } else if c.deliverable(&m) {
                        c.deliver(m);
                    }
                }
            }
            80..=87 => {
                let id = ids[next(5) as usize];
                let n = c.nodes.get_mut(&id).unwrap();
                if n.up {
                    n.persist_one();
                }
            }
            88..=93 => {
                if let Some(l) = c.leader() {
                    proposals += 1;
                    let _ = c
                        .raft(l)
                        .propose(vec![Bytes::from(format!("{seed}-{proposals}"))]);
                }
            }
            94 => {
                // Half the crashes hit the leader, so leadership changes often.
                let id = match c.leader() {
                    Some(l) if next(2) == 0 => l,
                    _ => ids[next(5) as usize],
                };
                if c.nodes[&id].up && c.nodes.values().filter(|n| !n.up).count() < 2 {
                    c.crash(id);
                }
            }
            95..=96 => {
                let id = ids[next(5) as usize];
                if !c.nodes[&id].up {
                    c.restart(id);
                    c.nodes.get_mut(&id).unwrap().auto_persist = false;
                }
            }
            97 => {
                let a = ids[next(5) as usize];
                c.partition(
                    &[a],
                    &ids.iter().copied().filter(|&x| x != a).collect::<Vec<_>>(),
                );
            }
            _ => c.heal(),
        }
        for (&id, n) in &c.nodes {
            let r = &n.raft;
            if r.role() == Role::Leader {
                let prev = leaders.insert(r.term(), id);
                assert!(
                    prev.is_none_or(|p| p == id),
                    "seed {seed} step {step}: two leaders in term {}",
                    r.term()
                );
            }
            for i in r.log().first_index()..=r.commit() {
                let e = r.log().get(i).expect("committed entry in log");
                let seen = committed.entry(i).or_insert((e.term, e.data.clone()));
                assert_eq!(
                    (seen.0, &seen.1),
                    (e.term, &e.data),
                    "seed {seed} step {step}: node {id} has a different committed entry at {i}"
                );
            }
        }
        // Leader Completeness: a leader's log holds every entry committed so far.
        let max_term = c.nodes.values().map(|n| n.raft.term()).max().unwrap_or(0);
        if let Some(l) = c.leader().filter(|l| c.nodes[l].raft.term() == max_term) {
            let r = &c.nodes[&l].raft;
            {
                for (&i, (t, _)) in committed.range(r.log().first_index()..) {
                    assert_eq!(
                        r.log().term(i),
                        Some(*t),
                        "seed {seed}: leader {l} lacks committed {i}"
                    );
                }
            }
        }
    }
    // Liveness once the faults stop: heal, restart everyone, and a new write must commit and
    // be applied on every node.
    c.heal();
    for id in ids {
        if !c.nodes[&id].up {
            c.restart(id);
        }
        let n = c.nodes.get_mut(&id).unwrap();
        n.auto_persist = true;
        while n.persist_one() {}
    }
    let l = c.elect(500);
    let (idx, _) = c
        .raft(l)
        .propose(vec![Bytes::from_static(b"final")])
        .unwrap();
    for _ in 0..20 {
        c.tick_all();
        c.stabilize();
    }
    for (&id, n) in &c.nodes {
        assert_eq!(
            n.applied.last().map(|(i, d)| (*i, d.as_ref())),
            Some((idx, &b"final"[..])),
            "seed {seed}: node {id}"
        );
        for (i, d) in &n.applied {
            let seen = committed.entry(*i).or_insert((0, d.clone()));
            assert_eq!(
                &seen.1, d,
                "seed {seed}: node {id} applied a different entry at {i}"
            );
        }
    }
    if std::env::var("DBG").is_ok() {
        eprintln!(
            "seed {seed}: committed {} leaders {}",
            committed.len(),
            leaders.len()
        );
    }
    (committed.len(), leaders.len())
}
