//! Scripted fault schedules: interleavings too narrow for random schedules to hit often,
//! run on real cores through the testkit driver (message-level control).
//!
//! Owns nothing beyond one run. Each script must pass with the protocol as built and is
//! expected to be flagged under the negative control it targets. What flags a run is the
//! same as in the random simulator: an invariant asserted in the core (a panic), the
//! cluster invariants below, or the linearizability checker. The checks never look at the
//! control switches.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::checker::{self, Op, OpKind, Verdict};
use crate::testkit::Cluster;
use ringkv_raft::{Body, Config, Controls, Index, MembershipChange, NodeId, ReadPolicy, Term};

/// The scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// Raft paper Figure 8: an entry of an older term replicated to a majority by a later
    /// leader, which crashes before committing an entry of its own term.
    Figure8,
    /// The single-server membership change bug (Ongaro, raft-dev 2015): a new leader that
    /// changes the configuration before committing an entry of its term.
    MembershipBeforeNoop,
    /// A leader cut off at the moment its lease round was acknowledged, clocks drifting at
    /// the bound: leader slow, followers fast.
    LeaseAtDriftBound,
}

impl Script {
    pub const ALL: [Script; 3] = [
        Script::Figure8,
        Script::MembershipBeforeNoop,
        Script::LeaseAtDriftBound,
    ];
}

/// Runs `script` with `controls` (all off for the real protocol). `seed` varies the details
/// (which node is written to, values, timing inside the window). Returns what flagged it;
/// an error starting with "script:" means the script itself could not set its stage.
pub fn run(script: Script, seed: u64, controls: Controls) -> Result<(), String> {
    let outcome = std::panic::catch_unwind(move || match script {
        Script::Figure8 => figure8(seed, controls),
        Script::MembershipBeforeNoop => membership_before_noop(seed, controls),
        Script::LeaseAtDriftBound => lease_at_drift_bound(seed, controls),
    });
    match outcome {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            // A script that cannot set its stage says so; anything else is the core's.
            if what.starts_with("script:") || !super::panic_in_core() {
                Err(what)
            } else {
                Err(format!("assertion failed: {what}"))
            }
        }
    }
}

fn base(c: &mut Config, controls: Controls) {
    c.election_timeout_min_ticks = 10;
    c.election_timeout_max_ticks = 20;
    c.heartbeat_interval_ticks = 2;
    c.lease_duration_ns = 80_000_000;
    c.controls = controls;
}

/// Every index applied by two nodes carries the same term (State Machine Safety).
fn applied_agree(c: &Cluster) -> Result<(), String> {
    let mut seen: BTreeMap<Index, (Term, NodeId)> = BTreeMap::new();
    for (&id, n) in &c.nodes {
        for &(i, t) in &n.applied_terms {
            match seen.get(&i) {
                Some(&(t0, other)) if t0 != t => {
                    return Err(format!(
                        "node {id} applied {i}/{t} but node {other} applied {i}/{t0}"
                    ));
                }
                Some(_) => {}
                None => {
                    seen.insert(i, (t, id));
                }
            }
        }
    }
    Ok(())
}

/// No node was sent entries conflicting with its committed log, or malformed messages:
/// the core refuses and counts those (instead of asserting), and no peer here lies.
fn no_refusals(c: &Cluster) -> Result<(), String> {
    for (&id, n) in &c.nodes {
        let k = n.raft.counters();
        if k.committed_conflicts > 0 || k.messages_refused > 0 || k.rival_leaders > 0 {
            return Err(format!(
                "node {id} refused {} appends conflicting with its committed entries, {} \
                 malformed messages and {} rival leaders",
                k.committed_conflicts, k.messages_refused, k.rival_leaders
            ));
        }
    }
    Ok(())
}

fn campaign_until_leader(c: &mut Cluster, id: NodeId) -> Result<(), String> {
    if c.campaign_until_leader(id) {
        Ok(())
    } else {
        Err(format!("script: node {id} did not win"))
    }
}

fn figure8(seed: u64, controls: Controls) -> Result<(), String> {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], &[], |cfg| {
        base(cfg, controls);
        cfg.append_entries_max = 1; // index 2 travels alone
    });
    let value = Bytes::from(format!("fig8-{seed}"));
    // (a) S1 leads and replicates index 2 to S2 only.
    campaign_until_leader(&mut c, 1)?;
    c.stabilize();
    c.partition(&[1, 2], &[3, 4, 5]);
    c.raft(1)
        .propose(vec![value])
        .map_err(|e| format!("script: {e}"))?;
    c.stabilize();
    // (b) S1 crashes; S5 wins with S3 and S4, appends index 2 of its term, crashes.
    c.crash(1);
    c.heal();
    c.partition(&[2], &[3, 4, 5]);
    c.let_leases_lapse(&[3, 4, 5]);
    campaign_until_leader(&mut c, 5)?;
    c.process(5);
    c.crash(5);
    // (c) S1 restarts and wins with S3 and S4 (S2 is cut off from it); index 2 (of the old
    // term) reaches S3 and S4 alone, then heartbeats; nothing carries the leader's own-term
    // entry (index 3). Index 2 is now on a majority (S1, S3, S4) but must not commit.
    c.heal();
    c.restart(1);
    c.let_leases_lapse(&[1, 2, 3, 4]);
    c.partition(&[1], &[2]);
    campaign_until_leader(&mut c, 1)?;
    c.run_until(|c| {
        let lacks = |c: &mut Cluster, id| c.raft(id).last_index() < 2;
        let (s3_lacks, s4_lacks) = (lacks(c, 3), lacks(c, 4));
        c.queue.retain(|m| {
            let lacking = (m.to == 3 && s3_lacks) || (m.to == 4 && s4_lacks);
            match &m.body {
                Body::Append { entries, .. } => {
                    (m.to == 3 || m.to == 4) && (lacking || entries.iter().all(|e| e.index <= 2))
                }
                Body::Heartbeat { .. } => m.to == 3 || m.to == 4,
                Body::AppendResp { .. } | Body::HeartbeatResp { .. } => m.from == 3 || m.from == 4,
                _ => false,
            }
        });
        // Done once the leader has heard both acknowledge index 2.
        let acked = c
            .raft(1)
            .status()
            .progress
            .iter()
            .filter(|p| (p.0 == 3 || p.0 == 4) && p.1 >= 2)
            .count();
        acked == 2
    });
    // A heartbeat round announces whatever the leader committed.
    c.raft(1).tick(0);
    c.raft(1).tick(0);
    c.process(1);
    c.run_until(|c| {
        c.queue
            .retain(|m| matches!(m.body, Body::Heartbeat { .. } | Body::HeartbeatResp { .. }));
        c.queue.is_empty()
    });
    applied_agree(&c)?;
    no_refusals(&c)?;
    // (d) S1 crashes; S5 restarts and wins with S2, S3, S4, overwriting index 2.
    c.crash(1);
    c.heal();
    c.restart(5);
    c.let_leases_lapse(&[2, 3, 4, 5]);
    campaign_until_leader(&mut c, 5)?;
    c.stabilize();
    applied_agree(&c)?;
    no_refusals(&c)
}

fn membership_before_noop(seed: u64, controls: Controls) -> Result<(), String> {
    let mut c = Cluster::new(&[1, 2, 3, 4], &[], |cfg| base(cfg, controls));
    c.add_node(5, |cfg| base(cfg, controls));
    campaign_until_leader(&mut c, 1)?;
    c.stabilize();
    c.raft(1)
        .propose(vec![Bytes::from(format!("v{seed}"))])
        .map_err(|e| format!("script: {e}"))?;
    c.raft(1)
        .propose_membership(MembershipChange::AddLearner(5))
        .map_err(|e| format!("script: {e}"))?;
    c.stabilize();
    // C1 = {1..5}: promoted on S1 and S5 only, never committed.
    c.partition(&[1, 5], &[2, 3, 4]);
    c.raft(1)
        .propose_membership(MembershipChange::Promote(5))
        .map_err(|e| format!("script: {e}"))?;
    c.stabilize();
    c.crash(1);
    // S2 wins term 2 under C0 = {1,2,3,4} with S3 and S4, then loses S4 at once.
    c.let_leases_lapse(&[2, 3, 4]);
    campaign_until_leader(&mut c, 2)?;
    c.partition(&[2], &[4]);
    // A change proposed before S2's no-op commits: C2 = {2,3,4} (remove 1). Its quorum,
    // S2 and S3, commits it together with the no-op. The real protocol refuses it here.
    let early = c.raft(2).propose_membership(MembershipChange::Remove(1));
    c.stabilize();
    if early.is_ok() && c.raft(2).commit() < c.raft(2).last_index() {
        return Err("script: the early change did not commit".into());
    }
    // S1 restarts under C1 and wins term 3 with S4 and S5, then heals.
    c.heal();
    c.restart(1);
    c.partition(&[1, 4, 5], &[2, 3]);
    c.let_leases_lapse(&[1, 4, 5]);
    campaign_until_leader(&mut c, 1)?;
    c.heal();
    for _ in 0..30 {
        c.tick_all();
        c.stabilize();
    }
    applied_agree(&c)?;
    no_refusals(&c)
}

fn lease_at_drift_bound(seed: u64, controls: Controls) -> Result<(), String> {
    const MS: u64 = 1_000_000;
    let mut c = Cluster::new(&[1, 2, 3], &[], |cfg| {
        base(cfg, controls);
        cfg.clock_drift_ppm_max = 50_000;
        // The longest lease the rules allow: election_timeout_min less one tick.
        cfg.lease_duration_ns = 90 * MS - 1;
    });
    campaign_until_leader(&mut c, 1)?;
    c.stabilize();
    let mut history = Vec::new();
    let mut now_us = 0u64;
    let mut t = || {
        now_us += 1;
        now_us
    };
    // W(1) completes through the leader.
    let call = t();
    c.raft(1)
        .propose(vec![Bytes::from_static(b"1")])
        .map_err(|e| format!("script: {e}"))?;
    c.stabilize();
    history.push(Op {
        key: 0,
        kind: OpKind::Write(Some(1)),
        call,
        ret: Some(t()),
    });
    // The leader's clock reads T0 when it sends a heartbeat round; both followers
    // acknowledge it, and their vote refusal windows start at its arrival.
    let t0 = 10_000 * MS;
    c.raft(1).tick(t0);
    c.raft(1).tick(t0);
    c.stabilize();
    if !c.raft(1).lease_valid(t0) {
        return Err("script: the leader holds no lease after its round".into());
    }
    // Cut off now. Followers' clocks run 2.5% fast, the leader's 2.5% slow (5% apart).
    c.partition(&[1], &[2, 3]);
    c.let_leases_lapse(&[2, 3]);
    // Their windows closed after 9 to 10 of their ticks: 90 ms of their time, which is
    // 87.8 ms of real time at +2.5%. S2 wins and commits W(2).
    let winner = 2 + seed % 2;
    campaign_until_leader(&mut c, winner)?;
    c.stabilize();
    let call = t();
    c.raft(winner)
        .propose(vec![Bytes::from_static(b"2")])
        .map_err(|e| format!("script: {e}"))?;
    c.stabilize();
    if c.node(winner).applied.last().map(|(_, d)| d.as_ref()) != Some(&b"2"[..]) {
        return Err("script: W(2) did not commit".into());
    }
    history.push(Op {
        key: 0,
        kind: OpKind::Write(Some(2)),
        call,
        ret: Some(t()),
    });
    // A lease read reaches the old leader 87.8 ms (real) after T0: at -2.5% its clock reads
    // T0 + 85.6 ms. The lease (90 ms x (1 - 5%) = 85.5 ms) has run out; a lease that
    // ignored the drift bound (90 ms) would still hold.
    let leader_now = t0 + 85_600_000 + seed % 100_000;
    let call = t();
    c.raft(1).read(1, ReadPolicy::Lease, leader_now);
    c.stabilize();
    let n = c.nodes.get_mut(&1).expect("node 1");
    if let Some(r) = n.reads.drain(..).find(|r| r.id == 1) {
        if r.result.is_ok() {
            let seen = n
                .applied
                .last()
                .and_then(|(_, d)| String::from_utf8_lossy(d).parse::<u64>().ok());
            history.push(Op {
                key: 0,
                kind: OpKind::Read(seen),
                call,
                ret: Some(t()),
            });
        }
    }
    match checker::check(&history) {
        Verdict::Ok => applied_agree(&c).and_then(|()| no_refusals(&c)),
        Verdict::Violation(v) => Err(format!("not linearizable: {v}")),
        Verdict::TooHard { key } => Err(format!("linearizability search too large for key {key}")),
    }
}
