//! The store workload: clients of the etcd data model beside the register clients of
//! `workload`, and the reads of the store's states after a run that `storecheck` holds
//! their history to.
//!
//! The clients run on the campaign's client executor (`workload::Workload` spawns them),
//! each with one call outstanding, on its home node (a follower forwards), over a key span
//! of their own (`SPAN`: `s<epoch>-<k>` keys, a few per epoch, and `sl...` keys put under
//! leases), never touched by the register clients. They put (unique values, sometimes
//! prev_kv), delete a key, an epoch's keys or every earlier epoch's, run Kubernetes'
//! compare-on-mod-revision-then-put and a two-key txn (compares on two keys, puts on two,
//! else a range of the epoch), read ranges at all three consistencies, grant leases (their
//! own ids, TTLs a little above the minimum), put keys under them, keep them alive, revoke
//! them, abandon some to expire, and now and then keep alive a lease they revoked or
//! abandoned (which must be dead once its end was seen). Writes are never retried (a lost
//! answer is an unknown outcome); nothing compacts, so every revision stays readable.
//!
//! `read_states` runs after the run on the runner's thread (its own executor): it reads,
//! from every live member, the span at every revision of the run, and what changed outside
//! it. Must not look at node internals: only the native protocol, as a client would.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::cluster::node_addr;
use super::storecheck::{
    Kvs, RevisionRead, States, StoreOp, StoreOutcome, StoreRecord, changes_from_reads,
    deleting_revisions,
};
use super::workload::Targets;
use ringkv_client::native_client::{CallError, Conn, store_answer};
use ringkv_proto::native::{
    CONSISTENCY_EVENTUAL, CONSISTENCY_LEASE, CONSISTENCY_LINEARIZABLE, Request,
};
use ringkv_proto::outcome::{Answer, ApiError};
use ringkv_raft::NodeId;
use ringkv_rng::Rng;
use ringkv_store::bytes::Bytes;
use ringkv_store::{
    Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, LeaseId,
    PutRequest, RangeRequest, RequestOp, Response, ResponseOp, Revision, TxnRequest,
};

/// Every key the store clients touch is in `[SPAN.0, SPAN.1)`.
pub const SPAN: (&[u8], &[u8]) = (b"s", b"t");

/// The revision of an empty store: a fresh cluster's first state.
pub const FIRST_REVISION: Revision = 1;

/// Shape of the store load.
#[derive(Clone, Debug)]
pub struct StoreLoad {
    pub clients: u32,
    /// Keys per epoch (`s<epoch>-<k>`).
    pub keys_per_epoch: u64,
    pub epoch_secs: u64,
    /// TTLs asked for, in seconds (the nodes raise one below their minimum).
    pub lease_ttl_secs: (i64, i64),
    /// Leases one client keeps alive at most.
    pub leases_kept_max: usize,
    /// Keys put under one lease at most.
    pub keys_per_lease_max: u64,
    /// A client waits this long between calls (at random within), in ms: the store
    /// workload's rate stays bounded, and with it the revisions the checker reads back.
    pub pause_ms: (u64, u64),
    pub write_timeout: Duration,
    pub read_timeout: Duration,
}

/// The `k`th key of `epoch`.
fn epoch_key(epoch: u64, k: u64) -> Bytes {
    Bytes::from(format!("s{epoch:05}-{k}"))
}

/// Every key of `epoch`: `[s<epoch>-, s<epoch>.)` ('.' follows '-').
fn epoch_range(epoch: u64) -> (Bytes, Bytes) {
    (
        Bytes::from(format!("s{epoch:05}-")),
        Bytes::from(format!("s{epoch:05}.")),
    )
}

/// Leases one client remembers (to keep alive, revoke or probe) at most.
const LEASES_REMEMBERED_MAX: usize = 64;

/// A lease this client granted.
struct Held {
    id: LeaseId,
    ttl_secs: i64,
    /// Keys put under it so far (`sl<client>-<lease>-<j>`).
    keys: u64,
    /// Kept alive; false once revoked, abandoned or found dead.
    kept: bool,
    revoked: bool,
    last_renewal_us: u64,
    /// When it stopped being kept alive.
    let_go_us: Option<u64>,
}

impl Held {
    fn let_go(&mut self, now_us: u64) {
        self.kept = false;
        self.let_go_us.get_or_insert(now_us);
    }
}

/// What a client learnt from answers, to aim its compares.
#[derive(Default)]
struct Seen {
    /// The mod revision each key had when last seen (0: absent).
    mods: HashMap<Bytes, Revision>,
}

impl Seen {
    fn range(&mut self, q: &RangeRequest, kvs: &[KeyValue], more: bool) {
        if !more {
            // Keys of the range not returned are absent.
            let end = ringkv_store::End::of(&q.range_end);
            for (k, m) in self.mods.iter_mut() {
                if end.admits(&q.key, k) {
                    *m = 0;
                }
            }
        }
        for kv in kvs {
            self.mods.insert(kv.key.clone(), kv.mod_revision);
        }
    }

    fn learn(&mut self, op: &StoreOp, out: &StoreOutcome) {
        let StoreOutcome::Done { revision, response } = out else {
            return;
        };
        match (op, response) {
            (StoreOp::Write(Command::Put(p)), _) => {
                self.mods.insert(p.key.clone(), *revision);
            }
            (StoreOp::Write(Command::DeleteRange(d)), _) => {
                self.range(
                    &RangeRequest {
                        key: d.key.clone(),
                        range_end: d.range_end.clone(),
                        ..Default::default()
                    },
                    &[],
                    false,
                );
            }
            (StoreOp::Write(Command::Txn(t)), Response::Txn(r)) => {
                let ops = if r.succeeded { &t.success } else { &t.failure };
                for (op, resp) in ops.iter().zip(&r.responses) {
                    match (op, resp) {
                        (RequestOp::Put(p), _) => {
                            self.mods.insert(p.key.clone(), *revision);
                        }
                        (RequestOp::Range(q), ResponseOp::Range(r)) => {
                            self.range(q, &r.kvs, r.more)
                        }
                        _ => {}
                    }
                }
            }
            (StoreOp::Range { req, .. }, Response::Range(r)) => self.range(req, &r.kvs, r.more),
            _ => {}
        }
    }
}

/// The store clients' share of the client executor: one task per client.
pub(crate) async fn client(
    c: u32,
    load: StoreLoad,
    t0: Instant,
    targets: Rc<RefCell<Targets>>,
    stop: Rc<Cell<bool>>,
    history: Rc<RefCell<Vec<StoreRecord>>>,
    seed: u64,
) {
    // Ids apart from the register clients' (values and lease ids carry them).
    let id = 1000 + c;
    let mut rng = Rng::new(seed ^ (u64::from(id) << 40) ^ 0x5707e);
    let mut conns: HashMap<NodeId, Rc<Conn>> = HashMap::new();
    let mut seq = 0u64;
    let mut lease_seq = 0i64;
    let mut leases: Vec<Held> = Vec::new();
    let mut seen = Seen::default();
    let now_us = || t0.elapsed().as_micros() as u64;
    while !stop.get() {
        let t = targets.borrow().clone();
        if t.members.is_empty() {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        }
        // Homes spread over the members (a follower forwards what it cannot serve).
        let node = t.members[c as usize % t.members.len()];
        let epoch = now_us() / 1_000_000 / load.epoch_secs;
        let mut value = || {
            seq += 1;
            Bytes::from(format!("v{id}-{seq}"))
        };
        let ki = rng.below(load.keys_per_epoch);
        let key = epoch_key(epoch, ki);
        let mod_of = |seen: &Seen, k: &Bytes| seen.mods.get(k).copied().unwrap_or(0);
        let due = leases
            .iter()
            .position(|l| l.kept && now_us() > l.last_renewal_us + l.ttl_secs as u64 * 330_000);
        let op = if let Some(i) = due {
            leases[i].last_renewal_us = now_us();
            StoreOp::KeepAlive {
                lease: leases[i].id,
            }
        } else {
            match rng.below(100) {
                0..=17 => StoreOp::Write(Command::Put(PutRequest {
                    key,
                    value: value(),
                    prev_kv: rng.below(2) == 0,
                    ..Default::default()
                })),
                18..=23 => StoreOp::Write(Command::DeleteRange(DeleteRangeRequest {
                    key,
                    prev_kv: rng.below(3) == 0,
                    ..Default::default()
                })),
                24..=26 => {
                    // This epoch's keys, or every earlier epoch's (keeps the span small).
                    let (key, range_end) = if rng.below(2) == 0 {
                        epoch_range(epoch)
                    } else {
                        (epoch_range(0).0, epoch_range(epoch).0)
                    };
                    StoreOp::Write(Command::DeleteRange(DeleteRangeRequest {
                        key,
                        range_end,
                        prev_kv: rng.below(3) == 0,
                    }))
                }
                27..=41 => {
                    // Kubernetes' optimistic update: put if the mod revision last seen is
                    // still the key's (0: create it if absent), else read it.
                    let m = mod_of(&seen, &key);
                    StoreOp::Write(Command::Txn(TxnRequest {
                        compare: vec![mod_equals(&key, m)],
                        success: vec![RequestOp::Put(PutRequest {
                            key: key.clone(),
                            value: value(),
                            ..Default::default()
                        })],
                        failure: vec![RequestOp::Range(RangeRequest {
                            key,
                            ..Default::default()
                        })],
                    }))
                }
                42..=49 => {
                    let n = load.keys_per_epoch;
                    let k2 = epoch_key(epoch, (ki + 1 + rng.below(n - 1)) % n);
                    let (start, end) = epoch_range(epoch);
                    StoreOp::Write(Command::Txn(TxnRequest {
                        compare: vec![
                            mod_equals(&key, mod_of(&seen, &key)),
                            mod_equals(&k2, mod_of(&seen, &k2)),
                        ],
                        success: vec![
                            RequestOp::Put(PutRequest {
                                key,
                                value: value(),
                                ..Default::default()
                            }),
                            RequestOp::Put(PutRequest {
                                key: k2,
                                value: value(),
                                ..Default::default()
                            }),
                        ],
                        failure: vec![RequestOp::Range(RangeRequest {
                            key: start,
                            range_end: end,
                            ..Default::default()
                        })],
                    }))
                }
                50..=79 => {
                    let consistency = match rng.below(100) {
                        0..=39 => CONSISTENCY_LINEARIZABLE,
                        40..=74 => CONSISTENCY_LEASE,
                        _ => CONSISTENCY_EVENTUAL,
                    };
                    let (k, range_end) = match rng.below(10) {
                        0..=4 => epoch_range(epoch),
                        5 | 6 => (Bytes::from_static(SPAN.0), Bytes::from_static(SPAN.1)),
                        _ => (key, Bytes::new()),
                    };
                    let req = RangeRequest {
                        key: k,
                        range_end,
                        limit: if rng.below(10) == 0 { 2 } else { 0 },
                        ..Default::default()
                    };
                    StoreOp::Range { req, consistency }
                }
                80..=85 if leases.iter().filter(|l| l.kept).count() < load.leases_kept_max => {
                    lease_seq += 1;
                    let (lo, hi) = load.lease_ttl_secs;
                    let ttl = lo + rng.below((hi - lo + 1) as u64) as i64;
                    let lease = (i64::from(id) << 32) | lease_seq;
                    leases.push(Held {
                        id: lease,
                        ttl_secs: ttl,
                        keys: 0,
                        kept: true,
                        revoked: false,
                        last_renewal_us: now_us(),
                        let_go_us: None,
                    });
                    if leases.len() > LEASES_REMEMBERED_MAX
                        && let Some(i) = leases.iter().position(|l| !l.kept)
                    {
                        leases.remove(i);
                    }
                    StoreOp::Write(Command::LeaseGrant { id: lease, ttl })
                }
                80..=89 => {
                    let open: Vec<usize> = (0..leases.len())
                        .filter(|&i| leases[i].kept && leases[i].keys < load.keys_per_lease_max)
                        .collect();
                    if open.is_empty() {
                        continue;
                    }
                    let l = &mut leases[open[rng.below(open.len() as u64) as usize]];
                    l.keys += 1;
                    StoreOp::Write(Command::Put(PutRequest {
                        key: Bytes::from(format!("sl{id}-{}-{}", l.id & 0xffff_ffff, l.keys)),
                        value: value(),
                        lease: l.id,
                        ..Default::default()
                    }))
                }
                90..=92 => {
                    let live: Vec<usize> =
                        (0..leases.len()).filter(|&i| !leases[i].revoked).collect();
                    if live.is_empty() {
                        continue;
                    }
                    let l = &mut leases[live[rng.below(live.len() as u64) as usize]];
                    l.revoked = true;
                    l.let_go(now_us());
                    StoreOp::Write(Command::LeaseRevoke { id: l.id })
                }
                93..=95 => {
                    // Abandoned: no keep-alive from now on; it must expire.
                    if let Some(l) = leases.iter_mut().find(|l| l.kept) {
                        l.let_go(now_us());
                    }
                    continue;
                }
                _ => {
                    // A lease this client let go long enough ago to have ended (a probe
                    // sooner would renew an abandoned one): once its end was seen it must
                    // be dead.
                    let now = now_us();
                    let gone: Vec<LeaseId> = leases
                        .iter()
                        .filter(|l| {
                            l.let_go_us.is_some_and(|t| {
                                l.revoked || now > t + 2 * l.ttl_secs as u64 * 1_000_000
                            })
                        })
                        .map(|l| l.id)
                        .collect();
                    if gone.is_empty() {
                        continue;
                    }
                    StoreOp::KeepAlive {
                        lease: gone[rng.below(gone.len() as u64) as usize],
                    }
                }
            }
        };
        let conn = match conns.get(&node) {
            Some(c) if !c.is_broken() => c.clone(),
            _ => match connect(node).await {
                Some(c) => {
                    conns.insert(node, c.clone());
                    c
                }
                None => {
                    // Nothing was sent: no record, no effect.
                    conns.remove(&node);
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let write = matches!(op, StoreOp::Write(_));
        let limit = if write {
            load.write_timeout
        } else {
            load.read_timeout
        };
        let call_us = now_us();
        let r = conn.call_within(|rid| request(rid, &op), limit).await;
        let ret_us = now_us();
        let outcome = match r {
            Err(CallError::NotSent(_)) => {
                conns.remove(&node);
                continue;
            }
            Err(CallError::Lost(_)) | Err(CallError::TimedOut) => {
                // A late answer on this connection must not be taken for another call's.
                conns.remove(&node);
                StoreOutcome::Unknown
            }
            Ok(resp) => outcome(resp.outcome),
        };
        seen.learn(&op, &outcome);
        match (&op, &outcome) {
            (StoreOp::Write(Command::LeaseGrant { id, .. }), _) => {
                if let Some(l) = leases.iter_mut().find(|l| l.id == *id) {
                    match &outcome {
                        StoreOutcome::Done {
                            response: Response::LeaseGranted(g),
                            ..
                        } => l.ttl_secs = g.ttl,
                        // Refused, or maybe granted: not ours to keep alive.
                        _ => l.let_go(ret_us),
                    }
                }
            }
            (StoreOp::KeepAlive { lease }, StoreOutcome::Ttl(0))
            | (StoreOp::Write(Command::Put(PutRequest { lease, .. })), StoreOutcome::Failed)
                if *lease != 0 =>
            {
                // Dead: expired (it may, under faults), or never granted.
                if let Some(l) = leases.iter_mut().find(|l| l.id == *lease) {
                    l.let_go(ret_us);
                }
            }
            _ => {}
        }
        history.borrow_mut().push(StoreRecord {
            client: id,
            node,
            op,
            call_us,
            ret_us,
            outcome,
        });
        let (lo, hi) = load.pause_ms;
        glommio::timer::sleep(Duration::from_millis(lo + rng.below(hi - lo + 1))).await;
    }
}

fn mod_equals(key: &Bytes, m: Revision) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Mod(m),
        key: key.clone(),
        range_end: Bytes::new(),
    }
}

fn request(id: u64, op: &StoreOp) -> Request {
    match op {
        StoreOp::Write(cmd) => Request::Write {
            id,
            command: cmd.encode().to_vec(),
        },
        StoreOp::Range { req, consistency } => Request::Range {
            id,
            request: ringkv_store::encode_range(req).to_vec(),
            consistency: *consistency,
        },
        StoreOp::KeepAlive { lease } => Request::LeaseKeepAlive { id, lease: *lease },
    }
}

/// How an answered call ended.
fn outcome(o: ringkv_proto::outcome::Outcome) -> StoreOutcome {
    match o {
        Ok(Answer::LeaseTtl { ttl, .. }) => StoreOutcome::Ttl(ttl),
        Ok(a) => match store_answer(&a) {
            Some((revision, response)) => StoreOutcome::Done { revision, response },
            // An answer of another shape says nothing of what was done.
            None => StoreOutcome::Unknown,
        },
        Err(e) if e.outcome_unknown() || matches!(e, ApiError::Timeout { .. }) => {
            StoreOutcome::Unknown
        }
        Err(_) => StoreOutcome::Failed,
    }
}

async fn connect(node: NodeId) -> Option<Rc<Conn>> {
    futures_lite::future::or(async { Conn::connect(node_addr(node)).await.ok() }, async {
        glommio::timer::sleep(Duration::from_millis(500)).await;
        None
    })
    .await
}

/// Per-revision reads in flight per node at most.
const READS_IN_FLIGHT_MAX: usize = 32;
/// Tries of one state read before the reading gives up.
const READ_TRIES_MAX: u32 = 5;
/// Keys per page of the reads outside the span.
const PAGE_KEYS_MAX: i64 = 2000;
/// Besides the revisions where keys left the span, every this many revisions are read
/// whole too and compared with the changes read (a check of the reading itself).
const WHOLE_READ_EVERY: Revision = 5000;

/// The states as read, for `storecheck`.
pub struct Reading {
    pub states: States,
    /// Disagreements between the nodes or within the reads (each fails the run).
    pub diverged: Vec<String>,
    /// When the last revision was read (µs since the run began).
    pub end_us: u64,
}

/// Waits until the span holds no key under a lease (the clients stopped renewing; at
/// most `lease_wait`), reads the last revision linearizably through `nodes[0]`, then from
/// every node in `nodes` the span at every revision since `FIRST_REVISION` (once each node
/// has applied that far) and, through `nodes[0]`, what changed outside the span. Blocking:
/// runs its own executor. Errors when a node cannot be read.
pub fn read_states(nodes: &[NodeId], t0: Instant, lease_wait: Duration) -> Result<Reading, String> {
    let nodes = nodes.to_vec();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("chaos-read-states")
        .io_memory(1 << 20)
        .spawn(move || async move { read_states_on(nodes, t0, lease_wait).await })
        .map_err(|e| format!("cannot start an executor: {e}"))?
        .join()
        .map_err(|e| format!("read-states executor: {e:?}"))?
}

/// One range at `node`, retried on a new connection while it fails.
async fn range_at(
    conn: &RefCell<Rc<Conn>>,
    node: NodeId,
    req: &RangeRequest,
    consistency: u8,
) -> Result<(Revision, ringkv_store::RangeResponse), String> {
    let mut last = String::new();
    for _ in 0..READ_TRIES_MAX {
        let c = conn.borrow().clone();
        if c.is_broken() {
            match connect(node).await {
                Some(n) => *conn.borrow_mut() = n,
                None => {
                    last = "cannot connect".into();
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let c = conn.borrow().clone();
        let r = c
            .call_within(
                |id| Request::Range {
                    id,
                    request: ringkv_store::encode_range(req).to_vec(),
                    consistency,
                },
                Duration::from_secs(10),
            )
            .await;
        match r {
            Ok(resp) => match resp.outcome {
                Ok(a) => match store_answer(&a) {
                    Some((rev, Response::Range(r))) => return Ok((rev, r)),
                    other => last = format!("answered {other:?}"),
                },
                Err(e) => last = format!("{} {e}", e.code()),
            },
            Err(e) => last = format!("{e:?}"),
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("node {node}: range {req:?}: {last}"))
}

fn span_at(revision: Revision) -> RangeRequest {
    RangeRequest {
        key: Bytes::from_static(SPAN.0),
        range_end: Bytes::from_static(SPAN.1),
        revision,
        ..Default::default()
    }
}

fn as_kvs(kvs: Vec<KeyValue>) -> Kvs {
    kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect()
}

async fn read_states_on(
    nodes: Vec<NodeId>,
    t0: Instant,
    lease_wait: Duration,
) -> Result<Reading, String> {
    let first = FIRST_REVISION;
    let via = *nodes.first().ok_or("no node to read")?;
    let conn = RefCell::new(
        connect(via)
            .await
            .ok_or(format!("node {via}: cannot connect"))?,
    );
    // Leases the clients stopped renewing expire meanwhile.
    let leased = RangeRequest {
        key: Bytes::from_static(b"sl"),
        range_end: Bytes::from_static(b"sm"),
        count_only: true,
        ..Default::default()
    };
    let until = Instant::now() + lease_wait;
    while Instant::now() < until {
        if range_at(&conn, via, &leased, CONSISTENCY_LINEARIZABLE)
            .await?
            .1
            .count
            == 0
        {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(250)).await;
    }
    let (last, _) = range_at(&conn, via, &span_at(0), CONSISTENCY_LINEARIZABLE).await?;
    let end_us = t0.elapsed().as_micros() as u64;
    // Every node's per-revision reads, all nodes at once.
    let tasks: Vec<_> = nodes
        .iter()
        .map(|&n| glommio::spawn_local(read_node(n, first, last)))
        .collect();
    let mut per_node = Vec::new();
    for (t, &n) in tasks.into_iter().zip(&nodes) {
        per_node.push((n, t.await?));
    }
    let mut diverged = Vec::new();
    let (n0, (base, reads)) = &per_node[0];
    for (n, (b, r)) in &per_node[1..] {
        if b != base {
            diverged.push(format!(
                "node {n} has another state than node {n0} at revision {first}"
            ));
        } else if let Some(i) = (0..reads.len()).find(|&i| reads.get(i) != r.get(i)) {
            diverged.push(format!(
                "at revision {}, node {n0} read {:?}, node {n} {:?}",
                first + 1 + i as Revision,
                reads.get(i),
                r.get(i)
            ));
        }
    }
    // Whole reads where keys left the span, at the last revision, and now and then.
    let mut need = deleting_revisions(first, base.len() as i64, reads);
    need.extend((first + 1..=last).filter(|r| *r % WHOLE_READ_EVERY == 0 || *r == last));
    need.sort_unstable();
    need.dedup();
    let need = Rc::new(need);
    let tasks: Vec<_> = nodes
        .iter()
        .map(|&n| glommio::spawn_local(read_whole(n, need.clone())))
        .collect();
    let mut wholes = Vec::new();
    for (t, &n) in tasks.into_iter().zip(&nodes) {
        wholes.push((n, t.await?));
    }
    let (_, whole) = &wholes[0];
    for (n, w) in &wholes[1..] {
        if let Some((r, _)) = whole.iter().find(|(r, s)| w.get(r) != Some(s)) {
            diverged.push(format!(
                "at revision {r}, nodes {n0} and {n} hold other states"
            ));
        }
    }
    let changes = match changes_from_reads(first, base, reads, whole) {
        Ok(c) => c,
        Err(e) => {
            diverged.push(format!("node {n0}: {e}"));
            BTreeMap::new()
        }
    };
    // Outside the span only the register clients' puts: their versions count them.
    let (at_first, _) = outside(&conn, via, first).await?;
    let (at_last, revisions) = outside(&conn, via, last).await?;
    Ok(Reading {
        states: States {
            first,
            base: base.clone(),
            last,
            changes,
            outside_changes: at_last.saturating_sub(at_first),
            outside_revisions: revisions.into_iter().filter(|r| *r > first).collect(),
        },
        diverged,
        end_us,
    })
}

/// Node `node`'s span at `first` and its per-revision reads through `last`, once it has
/// applied that far.
async fn read_node(
    node: NodeId,
    first: Revision,
    last: Revision,
) -> Result<(Kvs, Vec<RevisionRead>), String> {
    let conn = Rc::new(RefCell::new(
        connect(node)
            .await
            .ok_or(format!("node {node}: cannot connect"))?,
    ));
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (at, _) = range_at(&conn, node, &span_at(0), CONSISTENCY_EVENTUAL).await?;
        if at >= last {
            break;
        }
        if Instant::now() >= until {
            return Err(format!(
                "node {node} is at revision {at}, not {last}, after 30 s"
            ));
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
    let (_, b) = range_at(&conn, node, &span_at(first), CONSISTENCY_EVENTUAL).await?;
    let n = (last - first).max(0) as usize;
    let out: Rc<RefCell<Vec<RevisionRead>>> =
        Rc::new(RefCell::new(vec![RevisionRead::default(); n]));
    let next = Rc::new(Cell::new(0usize));
    let workers: Vec<_> = (0..READS_IN_FLIGHT_MAX)
        .map(|_| {
            let (conn, out, next) = (conn.clone(), out.clone(), next.clone());
            glommio::spawn_local(async move {
                loop {
                    let i = next.get();
                    if i >= n {
                        return Ok::<(), String>(());
                    }
                    next.set(i + 1);
                    let r = first + 1 + i as Revision;
                    let req = RangeRequest {
                        min_mod_revision: r,
                        ..span_at(r)
                    };
                    let (_, resp) = range_at(&conn, node, &req, CONSISTENCY_EVENTUAL).await?;
                    out.borrow_mut()[i] = RevisionRead {
                        kvs: resp.kvs,
                        count: resp.count,
                    };
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let reads = out.take();
    Ok((as_kvs(b.kvs), reads))
}

/// Node `node`'s whole span at each revision of `need`.
async fn read_whole(
    node: NodeId,
    need: Rc<Vec<Revision>>,
) -> Result<BTreeMap<Revision, Kvs>, String> {
    let conn = Rc::new(RefCell::new(
        connect(node)
            .await
            .ok_or(format!("node {node}: cannot connect"))?,
    ));
    let out = Rc::new(RefCell::new(BTreeMap::new()));
    let next = Rc::new(Cell::new(0usize));
    let workers: Vec<_> = (0..READS_IN_FLIGHT_MAX)
        .map(|_| {
            let (conn, out, next, need) = (conn.clone(), out.clone(), next.clone(), need.clone());
            glommio::spawn_local(async move {
                loop {
                    let i = next.get();
                    let Some(&r) = need.get(i) else {
                        return Ok::<(), String>(());
                    };
                    next.set(i + 1);
                    let (_, resp) =
                        range_at(&conn, node, &span_at(r), CONSISTENCY_EVENTUAL).await?;
                    out.borrow_mut().insert(r, as_kvs(resp.kvs));
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    Ok(out.take())
}

/// The keys outside the span at `revision`, page by page: the sum of their versions (their
/// puts so far) and each one's last put's revision.
async fn outside(
    conn: &RefCell<Rc<Conn>>,
    node: NodeId,
    revision: Revision,
) -> Result<(u64, Vec<Revision>), String> {
    let mut puts = 0u64;
    let mut revisions = Vec::new();
    for (from, to) in [(&b"\0"[..], SPAN.0), (SPAN.1, &b"\0"[..])] {
        let mut key = Bytes::copy_from_slice(from);
        loop {
            let req = RangeRequest {
                key: key.clone(),
                range_end: Bytes::copy_from_slice(to),
                revision,
                limit: PAGE_KEYS_MAX,
                keys_only: true,
                ..Default::default()
            };
            let (_, resp) = range_at(conn, node, &req, CONSISTENCY_EVENTUAL).await?;
            for kv in &resp.kvs {
                puts += kv.version as u64;
                revisions.push(kv.mod_revision);
            }
            match resp.kvs.last() {
                Some(kv) if resp.more => {
                    let mut k = kv.key.to_vec();
                    k.push(0);
                    key = Bytes::from(k);
                }
                _ => break,
            }
        }
    }
    Ok((puts, revisions))
}
