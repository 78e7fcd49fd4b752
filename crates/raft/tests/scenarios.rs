//! Scenario files for the Raft core: `tests/testdata/raft/*.txt`, one file per topic.
//!
//! Each stanza is a command and the output it must produce (etcd-raft's datadriven style).
//! `REWRITE=1 cargo test --test scenarios` rewrites the expected outputs for review in the
//! diff; `RUN=election.txt` runs one file. Commands (ids are bare words, lists `(1,2)`):
//!
//! - `cluster voters=(1,2,3) [learners=(4)] [persistence=mem] [election=10] [heartbeat=2]
//!   [inflight=N] [append_entries=N] [uncommitted=N] [manual]`: a fresh cluster (ticks of
//!   10 ms; election timeout `election`..2x`election` ticks; `manual`: persistence
//!   happens only on `persist`).
//! - `add-node 4`: a fresh node with no membership (it learns it when added).
//! - `tick [n=K] [1 2]`: K ticks on the named nodes (default all).
//! - `campaign 1`, `stabilize`, `process 1`, `deliver [from=1] [to=2] [type=Append] [drop]
//!   [count=N]` (`type` matches the message kind as printed, e.g. `Heartbeat`, `Snapshot`;
//!   it lets a scenario deliver a later message before an earlier one on the same link).
//!   `dup`: deliver and also keep a copy at the back of the queue (a duplicate that a
//!   later `deliver` hands over again, late: a stale or repeated message).
//! - `propose 1 [data=(a,b)]`, `conf 1 add-learner|promote|remove=4`, `transfer 1 to=2`.
//! - `read 1 id=7 policy=linearizable|lease|eventual`, `reads 1` (completed reads).
//! - `persist 1 [all]`, `crash 2`, `restart 2`, `partition a=(1) b=(2,3)`, `heal`,
//!   `compact 1`, `status [1 2]`, `log 1`, `applied 1`.

use std::fmt::Write;

use bytes::Bytes;
use datadriven::{TestCase, walk};
use ringkv_raft::{
    Body, Config, Entry, EntryKind, Membership, MembershipChange, Message, NodeId, Persistence,
    ReadPolicy,
};
use ringkv_sim::testkit::Cluster;

fn fmt_entry(e: &Entry) -> String {
    match e.kind {
        EntryKind::Noop => format!("{}/{} noop", e.index, e.term),
        EntryKind::Normal => format!(
            "{}/{} {}",
            e.index,
            e.term,
            String::from_utf8_lossy(&e.data)
        ),
        EntryKind::Membership => {
            let m = Membership::decode(&e.data).expect("valid membership");
            format!("{}/{} conf{}", e.index, e.term, fmt_membership(&m))
        }
    }
}

fn fmt_membership(m: &Membership) -> String {
    let ids = |s: &std::collections::BTreeSet<NodeId>| {
        s.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = format!("[v={}", ids(&m.voters));
    if !m.learners.is_empty() {
        write!(out, " l={}", ids(&m.learners)).unwrap();
    }
    if !m.removed.is_empty() {
        write!(out, " x={}", ids(&m.removed)).unwrap();
    }
    out.push(']');
    out
}

fn fmt_msg(m: &Message) -> String {
    let head = format!("{}->{} {} t{}", m.from, m.to, m.body.name(), m.term);
    let tail = match &m.body {
        Body::PreVote {
            last_index,
            last_term,
        } => format!(" last={last_index}/{last_term}"),
        Body::Vote {
            last_index,
            last_term,
            force,
        } => {
            format!(
                " last={last_index}/{last_term}{}",
                if *force { " force" } else { "" }
            )
        }
        Body::PreVoteResp { granted } | Body::VoteResp { granted } => {
            (if *granted { " granted" } else { " rejected" }).to_string()
        }
        Body::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            let ents: Vec<String> = entries.iter().map(fmt_entry).collect();
            format!(
                " prev={prev_index}/{prev_term} commit={commit} [{}]",
                ents.join(", ")
            )
        }
        Body::AppendResp {
            success: true,
            index,
            ..
        } => format!(" ok index={index}"),
        Body::AppendResp {
            success: false,
            index,
            hint_index,
            hint_term,
        } => {
            format!(" reject index={index} hint={hint_index}/{hint_term}")
        }
        Body::Heartbeat {
            commit,
            commit_term,
            seq,
        } => format!(" commit={commit}/{commit_term} seq={seq}"),
        Body::HeartbeatResp { seq } => format!(" seq={seq}"),
        Body::Snapshot { meta } => {
            format!(
                " index={} term={} {}",
                meta.index,
                meta.term,
                fmt_membership(&meta.membership)
            )
        }
        Body::TimeoutNow => String::new(),
    };
    head + &tail
}

/// Bare numeric words of a directive line, in order.
fn ids(tc: &mut TestCase) -> Vec<NodeId> {
    let mut out: Vec<NodeId> = tc
        .args
        .iter()
        .filter(|(k, v)| v.is_empty() && k.parse::<NodeId>().is_ok())
        .map(|(k, _)| k.parse().unwrap())
        .collect();
    out.sort();
    for id in &out {
        tc.args.remove(&id.to_string());
    }
    out
}

fn one_id(tc: &mut TestCase) -> NodeId {
    let v = ids(tc);
    assert_eq!(v.len(), 1, "{}: expected one node id", tc.directive);
    v[0]
}

struct World {
    c: Option<Cluster>,
    tweak: Config,
}

impl World {
    fn c(&mut self) -> &mut Cluster {
        self.c.as_mut().expect("run `cluster` first")
    }

    fn status_line(&mut self, id: NodeId) -> String {
        let s = self.c().raft(id).status();
        let up = if self.c().node(id).up { "" } else { " (down)" };
        format!(
            "{}: {:?} t{} vote={} leader={} commit={} applied={} last={} persisted={} first={} {}{}",
            s.id,
            s.role,
            s.term,
            s.vote,
            s.leader,
            s.commit,
            s.applied,
            s.last_index,
            s.persisted_index,
            s.first_index,
            fmt_membership(&s.membership),
            up
        )
    }

    fn run(&mut self, tc: &mut TestCase) -> String {
        let mut out = String::new();
        match tc.directive.as_str() {
            "cluster" => {
                let voters: Vec<NodeId> = tc.take_args("voters").unwrap();
                let learners: Vec<NodeId> =
                    tc.try_take_args("learners").unwrap().unwrap_or_default();
                let mem =
                    tc.try_take_arg::<String>("persistence").unwrap().as_deref() == Some("mem");
                let election: u32 = tc.try_take_arg("election").unwrap().unwrap_or(10);
                let heartbeat: u32 = tc.try_take_arg("heartbeat").unwrap().unwrap_or(2);
                let inflight: Option<usize> = tc.try_take_arg("inflight").unwrap();
                let append: Option<usize> = tc.try_take_arg("append_entries").unwrap();
                let uncommitted: Option<usize> = tc.try_take_arg("uncommitted").unwrap();
                let manual = tc.take_flag("manual").unwrap();
                let tweak = move |c: &mut Config| {
                    c.election_timeout_min_ticks = election;
                    c.election_timeout_max_ticks = election * 2;
                    c.heartbeat_interval_ticks = heartbeat;
                    // Lease: (election_timeout_min - 1 tick) minus the 5% drift bound, minus a margin.
                    c.lease_duration_ns = (election as u64 - 1) * c.tick_interval_ns * 94 / 100;
                    if mem {
                        c.persistence = Persistence::MemFirst;
                    }
                    if let Some(v) = inflight {
                        c.inflight_appends_max = v;
                    }
                    if let Some(v) = append {
                        c.append_entries_max = v;
                    }
                    if let Some(v) = uncommitted {
                        c.uncommitted_entries_max = v;
                    }
                };
                let mut template = Config::new(1);
                tweak(&mut template);
                self.tweak = template;
                let mut c = Cluster::new(&voters, &learners, tweak);
                for n in c.nodes.values_mut() {
                    n.auto_persist = !manual;
                }
                self.c = Some(c);
                out.push_str("ok\n");
            }
            "add-node" => {
                let id = one_id(tc);
                let t = self.tweak.clone();
                self.c().add_node(id, move |c| {
                    let seed = c.seed;
                    *c = Config {
                        id: c.id,
                        seed,
                        ..t.clone()
                    };
                });
                out.push_str("ok\n");
            }
            "tick" => {
                let n: u32 = tc.try_take_arg("n").unwrap().unwrap_or(1);
                let mut who = ids(tc);
                if who.is_empty() {
                    who = self.c().nodes.keys().copied().collect();
                }
                for _ in 0..n {
                    for &id in &who {
                        self.c().tick(id);
                    }
                }
                out.push_str("ok\n");
            }
            "campaign" => {
                let id = one_id(tc);
                self.c().raft(id).campaign_now();
                out.push_str("ok\n");
            }
            "stabilize" => {
                for (m, ok) in self.c().stabilize() {
                    let drop = if ok { "" } else { "DROP " };
                    writeln!(out, "{drop}{}", fmt_msg(&m)).unwrap();
                }
                let ids: Vec<NodeId> = self.c().nodes.keys().copied().collect();
                for id in ids {
                    let line = self.status_line(id);
                    writeln!(out, "{line}").unwrap();
                }
            }
            "process" => {
                let id = one_id(tc);
                let before = self.c().queue.len();
                self.c().process(id);
                let c = self.c();
                for m in c.queue.iter().skip(before) {
                    writeln!(out, "send {}", fmt_msg(m)).unwrap();
                }
                if out.is_empty() {
                    out.push_str("nothing to send\n");
                }
            }
            "deliver" => {
                let from: Option<NodeId> = tc.try_take_arg("from").unwrap();
                let to: Option<NodeId> = tc.try_take_arg("to").unwrap();
                let count: Option<usize> = tc.try_take_arg("count").unwrap();
                let kind: Option<String> = tc.try_take_arg("type").unwrap();
                let drop = tc.take_flag("drop").unwrap();
                let dup = tc.take_flag("dup").unwrap();
                let c = self.c();
                let mut left = count.unwrap_or(usize::MAX);
                let mut rest = std::collections::VecDeque::new();
                let queued = std::mem::take(&mut c.queue);
                let mut picked = Vec::new();
                for m in queued {
                    let hit = from.is_none_or(|f| f == m.from)
                        && to.is_none_or(|t| t == m.to)
                        && kind.as_deref().is_none_or(|k| k == m.body.name());
                    if hit && left > 0 {
                        left -= 1;
                        picked.push(m);
                    } else {
                        rest.push_back(m);
                    }
                }
                c.queue = rest;
                for m in picked {
                    if drop || !c.deliverable(&m) {
                        writeln!(out, "DROP {}", fmt_msg(&m)).unwrap();
                    } else {
                        writeln!(out, "{}", fmt_msg(&m)).unwrap();
                        if dup {
                            c.queue.push_back(m.clone());
                        }
                        c.deliver(m);
                    }
                }
                if out.is_empty() {
                    out.push_str("nothing to deliver\n");
                }
            }
            "propose" => {
                let id = one_id(tc);
                let data: Vec<String> = tc
                    .try_take_args("data")
                    .unwrap()
                    .unwrap_or_else(|| vec!["x".into()]);
                let batch = data.into_iter().map(Bytes::from).collect();
                match self.c().raft(id).propose(batch) {
                    Ok((i, t)) => writeln!(out, "ok index={i} term={t}").unwrap(),
                    Err(e) => writeln!(out, "error: {e}").unwrap(),
                }
            }
            "conf" => {
                let id = one_id(tc);
                let change = if let Some(n) = tc.try_take_arg("add-learner").unwrap() {
                    MembershipChange::AddLearner(n)
                } else if let Some(n) = tc.try_take_arg("promote").unwrap() {
                    MembershipChange::Promote(n)
                } else {
                    MembershipChange::Remove(tc.take_arg("remove").unwrap())
                };
                match self.c().raft(id).propose_membership(change) {
                    Ok(i) => writeln!(out, "ok index={i}").unwrap(),
                    Err(e) => writeln!(out, "error: {e}").unwrap(),
                }
            }
            "transfer" => {
                let id = one_id(tc);
                let to: NodeId = tc.take_arg("to").unwrap();
                match self.c().raft(id).transfer_leader(to) {
                    Ok(()) => out.push_str("ok\n"),
                    Err(e) => writeln!(out, "error: {e}").unwrap(),
                }
            }
            "read" => {
                let id = one_id(tc);
                let rid: u64 = tc.take_arg("id").unwrap();
                let policy = match tc.take_arg::<String>("policy").unwrap().as_str() {
                    "linearizable" => ReadPolicy::Linearizable,
                    "lease" => ReadPolicy::Lease,
                    "eventual" => ReadPolicy::Eventual,
                    p => panic!("unknown policy {p}"),
                };
                let now = self.c().now;
                self.c().raft(id).read(rid, policy, now);
                out.push_str("ok\n");
            }
            "reads" => {
                let id = one_id(tc);
                self.c().process(id);
                let n = self.c().nodes.get_mut(&id).unwrap();
                for r in n.reads.drain(..) {
                    match r.result {
                        Ok(i) => writeln!(out, "read {} ok index={i}", r.id).unwrap(),
                        Err(e) => writeln!(out, "read {} error {e:?}", r.id).unwrap(),
                    }
                }
                if out.is_empty() {
                    out.push_str("none\n");
                }
            }
            "persist" => {
                let id = one_id(tc);
                let all = tc.take_flag("all").unwrap();
                let n = self.c().nodes.get_mut(&id).unwrap();
                let mut k = 0;
                while n.persist_one() {
                    k += 1;
                    if !all {
                        break;
                    }
                }
                writeln!(out, "persisted {k} ready").unwrap();
            }
            "crash" => {
                for id in ids(tc) {
                    self.c().crash(id);
                }
                out.push_str("ok\n");
            }
            "restart" => {
                for id in ids(tc) {
                    self.c().restart(id);
                    let line = self.status_line(id);
                    writeln!(out, "{line}").unwrap();
                }
            }
            "partition" => {
                let a: Vec<NodeId> = tc.take_args("a").unwrap();
                let b: Vec<NodeId> = tc.take_args("b").unwrap();
                self.c().partition(&a, &b);
                out.push_str("ok\n");
            }
            "heal" => {
                self.c().heal();
                out.push_str("ok\n");
            }
            "compact" => {
                let id = one_id(tc);
                let meta = self.c().nodes.get_mut(&id).unwrap().take_snapshot();
                writeln!(
                    out,
                    "snapshot index={} term={} {}",
                    meta.index,
                    meta.term,
                    fmt_membership(&meta.membership)
                )
                .unwrap();
            }
            "status" => {
                let mut who = ids(tc);
                if who.is_empty() {
                    who = self.c().nodes.keys().copied().collect();
                }
                for id in who {
                    let line = self.status_line(id);
                    writeln!(out, "{line}").unwrap();
                }
            }
            "log" => {
                let id = one_id(tc);
                let r = self.c().raft(id);
                let first = r.log().first_index();
                let ents: Vec<String> = r.log().iter_from(first).map(fmt_entry).collect();
                writeln!(out, "first={first} [{}]", ents.join(", ")).unwrap();
            }
            "applied" => {
                let id = one_id(tc);
                let n = self.c().node(id);
                let v: Vec<String> = n
                    .applied
                    .iter()
                    .map(|(i, d)| format!("{i}:{}", String::from_utf8_lossy(d)))
                    .collect();
                writeln!(out, "applied_index={} [{}]", n.applied_index, v.join(" ")).unwrap();
            }
            d => panic!("unknown directive {d}"),
        }
        tc.expect_empty()
            .unwrap_or_else(|e| panic!("{}: {e:?}", tc.directive));
        out
    }
}

#[test]
fn raft_scenarios() {
    walk("tests/testdata/raft", |f| {
        let mut w = World {
            c: None,
            tweak: Config::new(1),
        };
        f.run(|tc| -> String {
            let mut tc = tc.clone();
            w.run(&mut tc)
        });
    });
}
