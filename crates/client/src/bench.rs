//! `ringkv bench`: a closed-loop load generator in the style of etcd's `benchmark` tool.
//!
//! Runs on its own glommio executor (the caller's thread waits). Each client is a task
//! with one request outstanding, no coalescing on the client side; clients share `conns`
//! native connections (pipelined) or, over HTTP/1.1, have one keep-alive connection each
//! (`http1::AsyncConn`). Every client records its latencies in its own HDR histogram; they
//! are merged at the end (nothing global on the hot path). Writes are never retried: a failed one counts as an
//! error by kind. Must not touch a node's files: it only talks to its port.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use hdrhistogram::Histogram;

use crate::http1::AsyncConn;
use crate::native_client::Conn;
use ringkv_proto::native::{self, Request};
use ringkv_proto::outcome;
use ringkv_rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Native,
    Http,
    /// etcd's v3 gRPC KV API (feature `etcd`).
    Etcd,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    Put,
    /// Gets with this consistency code (`net::native::CONSISTENCY_*`).
    Range {
        consistency: u8,
    },
    /// Gets (at `consistency`) with probability `read_ratio`, else puts.
    Mixed {
        read_ratio: f64,
        consistency: u8,
    },
    /// Kubernetes' update: `Txn{compare: MOD(key) == r, success: [Put key value],
    /// failure: [Range key]}` with `r` the key's mod_revision last seen by the bench (one
    /// round trip per op). A failed compare is a completed op, counted in
    /// `Report::conflicts`.
    TxnPut,
    /// A range over one of `key_space` prefixes of `PREFIX_KEYS` keys each
    /// (`prefix_name`), with this consistency code. The prefixes must be full
    /// (`PopulatePrefixes`): checked before timing starts.
    RangePrefix {
        consistency: u8,
    },
    /// LeaseGrant (`LEASE_TTL_SECS`), then a Put of a key (`lease_key_name`) with that
    /// lease: one op is the pair.
    LeasePut,
    /// Setup for `RangePrefix`: puts every key of the `key_space` prefixes, in order
    /// (`key_space * PREFIX_KEYS` requests, whatever `total` says).
    PopulatePrefixes,
    /// Cleanup after `LeasePut`: lists the cluster's leases and revokes every one (as many
    /// requests as leases; one already gone counts as revoked).
    RevokeLeases,
}

impl Workload {
    /// Whether the HTTP target has it (the etcd data model's calls are native only).
    pub fn on_http(self) -> bool {
        matches!(
            self,
            Workload::Put | Workload::Range { .. } | Workload::Mixed { .. }
        )
    }

    /// Whether every request is a write, sent to the leader.
    pub fn writes_only(self) -> bool {
        matches!(
            self,
            Workload::Put
                | Workload::TxnPut
                | Workload::LeasePut
                | Workload::PopulatePrefixes
                | Workload::RevokeLeases
        )
    }
}

/// Keys under each prefix of `Workload::RangePrefix`.
pub const PREFIX_KEYS: u64 = 100;
/// The TTL of `Workload::LeasePut`'s leases, in seconds: longer than a row of the suite,
/// which revokes them afterwards (`RevokeLeases`).
pub const LEASE_TTL_SECS: i64 = 60;

/// Prefix `i` of `Workload::RangePrefix`: `p` and six digits, then `/`. It starts with a
/// letter, so plain keys (digits) and prefixed keys never share a range.
pub fn prefix_name(i: u64) -> String {
    format!("p{i:06}/")
}

/// Key `j` (0..PREFIX_KEYS) under prefix `i`.
pub fn prefix_key_name(i: u64, j: u64) -> String {
    format!("{}{j:03}", prefix_name(i))
}

/// The key a `LeasePut` writes for key number `k`: `l/` and the plain key, apart from the
/// plain keys so that revoking the leases deletes none of those.
pub fn lease_key_name(plain: &str) -> String {
    format!("l/{plain}")
}

/// What one op came to, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Done {
    Ok,
    /// A `TxnPut` whose compare failed: its failure branch ran (nothing was written).
    Conflict,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub endpoints: Vec<SocketAddr>,
    pub target: Target,
    pub workload: Workload,
    pub conns: usize,
    pub clients: usize,
    /// Stop after this many requests, or after `duration`.
    pub total: Option<u64>,
    pub duration: Option<Duration>,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    pub sequential_keys: bool,
    /// Per-request limit; a request over it counts as a `timeout` error.
    pub timeout: Duration,
}

/// What a run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub requests: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// `txn-put` ops whose compare failed (another client had changed the key since the
    /// revision this one compared against): completed ops, counted in `requests` and the
    /// latencies, not errors. 0 for every other workload.
    pub conflicts: u64,
}

impl Report {
    pub fn line(&self) -> String {
        format!(
            "{} requests in {:.2} s: {:.0} ops/s; latency ms avg {:.3} p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}; errors {}{}{}",
            self.requests,
            self.seconds,
            self.ops_per_sec,
            self.avg_ms,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.errors,
            if self.errors_by_kind.is_empty() {
                String::new()
            } else {
                format!(" {:?}", self.errors_by_kind)
            },
            if self.conflicts > 0 {
                format!("; conflicts {}", self.conflicts)
            } else {
                String::new()
            }
        )
    }
}

/// Runs the load and returns what it measured.
pub fn run(o: Options) -> Result<Report, String> {
    if o.endpoints.is_empty() || o.clients == 0 || o.conns == 0 {
        return Err("need at least one endpoint, client and connection".into());
    }
    if o.total.is_none() == o.duration.is_none() {
        return Err("give exactly one of --total and --duration".into());
    }
    let mut o = o;
    if o.workload == Workload::PopulatePrefixes {
        // Every key of every prefix once, whatever --total or --duration said.
        o.total = Some(o.key_space * PREFIX_KEYS);
        o.duration = None;
    }
    if o.target == Target::Http && !o.workload.on_http() {
        return Err(
            "txn-put, range-prefix and lease-put run on --target native or etcd only".into(),
        );
    }
    if o.target == Target::Etcd {
        #[cfg(feature = "etcd")]
        return crate::bench_etcd::run(o);
        #[cfg(not(feature = "etcd"))]
        return Err("this build has no etcd client: build with --features etcd".into());
    }
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("ringkv-bench")
        .io_memory(1 << 20)
        .spawn(move || async move { run_on_executor(o).await })
        .map_err(|e| format!("cannot start the bench executor: {e}"))?
        .join()
        .map_err(|e| format!("bench executor failed: {e}"))?
}

/// What every client of a run shares: when to stop, which keys, which operations.
pub(crate) struct Plan {
    pub o: Options,
    issued: Cell<u64>,
    /// Requests answered (or failed) so far: the progress display reads it.
    done: Cell<u64>,
    /// The next key of `--sequential-keys`, shared by every client so that a pass of
    /// `key_space` requests writes every key exactly once.
    next_key: Cell<u64>,
    /// TxnPut: each key's mod_revision as last seen, and the header revision of the answer
    /// that showed it (a later answer replaces an earlier one, whatever order they come in).
    mod_revisions: RefCell<HashMap<String, (i64, i64)>>,
    /// RevokeLeases: the leases still to revoke.
    leases: RefCell<Vec<i64>>,
    conflicts: Cell<u64>,
    started: Instant,
    deadline: Option<Instant>,
    pub value: String,
}

impl Plan {
    pub fn new(o: Options) -> Self {
        Self {
            deadline: o.duration.map(|d| Instant::now() + d),
            value: "v".repeat(o.val_size),
            issued: Cell::new(0),
            done: Cell::new(0),
            next_key: Cell::new(0),
            mod_revisions: RefCell::default(),
            leases: RefCell::default(),
            conflicts: Cell::new(0),
            started: Instant::now(),
            o,
        }
    }

    /// What the run learnt before timing started.
    pub(crate) fn prepare(&self, p: Prepared) {
        let mut m = self.mod_revisions.borrow_mut();
        for (key, mod_revision, at) in p.mod_revisions {
            m.insert(key, (mod_revision, at));
        }
        *self.leases.borrow_mut() = p.leases;
    }

    /// TxnPut: the mod_revision to compare `key` against (0: never seen, so absent as far
    /// as the bench knows; etcd compares an absent key's mod_revision as 0).
    pub fn known_mod_revision(&self, key: &str) -> i64 {
        self.mod_revisions.borrow().get(key).map_or(0, |&(r, _)| r)
    }

    /// TxnPut: an answer at header revision `at` showed `key` at `mod_revision` (0:
    /// absent).
    pub fn saw_mod_revision(&self, key: &str, mod_revision: i64, at: i64) {
        let mut m = self.mod_revisions.borrow_mut();
        match m.get_mut(key) {
            Some(e) if e.1 > at => {}
            Some(e) => *e = (mod_revision, at),
            None => {
                m.insert(key.to_string(), (mod_revision, at));
            }
        }
    }

    /// RevokeLeases: the next lease to revoke.
    pub fn next_lease(&self) -> Option<i64> {
        self.leases.borrow_mut().pop()
    }

    /// PopulatePrefixes: the next key, in order over every prefix.
    pub fn populate_key(&self) -> String {
        let n = self.next_key.get();
        self.next_key.set(n + 1);
        prefix_key_name(n / PREFIX_KEYS, n % PREFIX_KEYS)
    }

    /// RangePrefix: a range over a random prefix (`key_index`), with the range's end.
    pub fn prefix_range(&self, rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
        let p = prefix_name(self.key_index(rng)).into_bytes();
        let end = ringkv_store::prefix_end(&p).to_vec();
        (p, end)
    }

    /// RangePrefix: whether an answer holds the whole prefix.
    pub fn check_prefix(&self, kvs: usize) -> Result<Done, String> {
        if kvs as u64 == PREFIX_KEYS {
            Ok(Done::Ok)
        } else {
            Err(format!("prefix of {kvs} keys, not {PREFIX_KEYS}"))
        }
    }

    /// Counts a completed op's outcome.
    pub(crate) fn count(&self, d: Done) {
        if d == Done::Conflict {
            self.conflicts.set(self.conflicts.get() + 1);
        }
    }

    pub fn conflicts(&self) -> u64 {
        self.conflicts.get()
    }

    /// A client finished a request (whatever its outcome).
    pub fn finished_one(&self) {
        self.done.set(self.done.get() + 1);
    }

    /// How often progress is shown: often on a terminal (one line redrawn), seldom
    /// otherwise (plain lines, e.g. into a log).
    pub fn progress_every(tty: bool) -> Duration {
        if tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        }
    }

    /// The progress so far: a bar redrawn in place on a terminal, a plain line otherwise.
    pub fn progress(&self, tty: bool) -> String {
        const WIDTH: usize = 30;
        let done = self.done.get();
        let secs = self.started.elapsed().as_secs_f64();
        let fraction = match (self.o.total, self.o.duration) {
            (Some(t), _) => done as f64 / t.max(1) as f64,
            (None, Some(d)) => secs / d.as_secs_f64().max(1e-9),
            _ => 0.0,
        }
        .clamp(0.0, 1.0);
        let rate = done as f64 / secs.max(1e-9);
        let of = self.o.total.map_or(String::new(), |t| format!("/{t}"));
        if tty {
            let fill = (fraction * WIDTH as f64) as usize;
            format!(
                "\r[{}{}] {:>3.0}% {done}{of} {rate:.0} ops/s ",
                "#".repeat(fill),
                ".".repeat(WIDTH - fill),
                fraction * 100.0
            )
        } else {
            format!(
                "ringkv bench: {:.0}% {done}{of} requests after {secs:.1} s, {rate:.0} ops/s\n",
                fraction * 100.0
            )
        }
    }

    /// Client `c`'s own random stream.
    pub fn client_rng(c: usize) -> Rng {
        Rng::new(0x5eed ^ (c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// The next operation of a put, range or mixed run: `Some(consistency)` for a read,
    /// `None` for a put (the other workloads pick their own ops).
    pub fn pick_read(&self, rng: &mut Rng) -> Option<u8> {
        match self.o.workload {
            Workload::Range { consistency } | Workload::RangePrefix { consistency } => {
                Some(consistency)
            }
            Workload::Put
            | Workload::TxnPut
            | Workload::LeasePut
            | Workload::PopulatePrefixes
            | Workload::RevokeLeases => None,
            Workload::Mixed {
                read_ratio,
                consistency,
            } => ((rng.below(1_000_000) as f64) < read_ratio * 1e6).then_some(consistency),
        }
    }

    /// Whether a client may issue one more request.
    pub fn take_one(&self) -> bool {
        if let Some(d) = self.deadline {
            return Instant::now() < d;
        }
        let n = self.issued.get();
        if n >= self.o.total.expect("total or duration") {
            return false;
        }
        self.issued.set(n + 1);
        true
    }

    /// The next key's number: random over the key space, or with `--sequential-keys` the
    /// next one in order over all clients (0, 1, ..., key_space - 1, then 0 again).
    pub fn key_index(&self, rng: &mut Rng) -> u64 {
        if self.o.sequential_keys {
            let n = self.next_key.get();
            self.next_key.set(n + 1);
            n % self.o.key_space
        } else {
            rng.below(self.o.key_space)
        }
    }

    pub fn key(&self, rng: &mut Rng) -> String {
        self.key_name(self.key_index(rng))
    }

    /// Key number `k` as text, padded with leading zeros to `key_size`.
    pub fn key_name(&self, k: u64) -> String {
        let s = k.to_string();
        if s.len() >= self.o.key_size {
            s
        } else {
            format!("{}{s}", "0".repeat(self.o.key_size - s.len()))
        }
    }
}

/// What a run learns before timing starts (untimed).
#[derive(Default)]
pub(crate) struct Prepared {
    /// TxnPut: (key, mod_revision, header revision it was read at) of every plain key.
    pub mod_revisions: Vec<(String, i64, i64)>,
    /// RevokeLeases: every lease of the cluster.
    pub leases: Vec<i64>,
}

/// TxnPut's untimed first read, page by page: the plain keys are digits, so the range
/// `[from, ":")` holds all of them (and none of the `p...` and `l/...` keys).
pub(crate) const WARMUP_FIRST: &[u8] = b"0";
pub(crate) const WARMUP_END: &[u8] = b":";
pub(crate) const WARMUP_PAGE: i64 = 10_000;

/// The key after `key`: where the next page starts.
pub(crate) fn after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// RangePrefix's untimed check: the keys in the `key_space` prefixes (`count`) must be
/// all of them.
pub(crate) fn check_populated(o: &Options, count: i64) -> Result<(), String> {
    let want = o.key_space * PREFIX_KEYS;
    if count as u64 == want {
        Ok(())
    } else {
        Err(format!(
            "the {} prefixes hold {count} keys, not {want}: run `ringkv bench range-prefix \
             --populate --key-space {}` (same target and endpoints) first",
            o.key_space, o.key_space
        ))
    }
}

/// The range of the prefixes `0..key_space`, for `check_populated`.
pub(crate) fn prefixes_range(o: &Options) -> (Vec<u8>, Vec<u8>) {
    let first = prefix_name(0).into_bytes();
    let last = prefix_name(o.key_space.saturating_sub(1)).into_bytes();
    (first, ringkv_store::prefix_end(&last).to_vec())
}

async fn leader(endpoints: &[SocketAddr]) -> Option<SocketAddr> {
    for e in endpoints {
        let Ok(mut c) = http_connect(*e).await else {
            continue;
        };
        if let Ok(r) = c.exchange("GET", "/status", b"").await
            && r.status == 200
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body)
            && let Some(a) = v["leader_address"].as_str()
        {
            return a.parse().ok();
        }
    }
    None
}

async fn run_on_executor(mut o: Options) -> Result<Report, String> {
    // Writes go to the leader (followers would forward them); reads spread over all.
    let targets: Vec<SocketAddr> = if o.workload.writes_only() {
        vec![
            leader(&o.endpoints)
                .await
                .ok_or("no leader found at the endpoints")?,
        ]
    } else {
        o.endpoints.clone()
    };
    let mut conns = Vec::new();
    if o.target == Target::Native {
        for i in 0..o.conns {
            let addr = targets[i % targets.len()];
            conns.push(
                Conn::connect(addr)
                    .await
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))?,
            );
        }
    }
    let prepared = match conns.first() {
        Some(conn) => prepare_native(&mut o, conn).await?,
        None => Prepared::default(),
    };
    let shared = Rc::new(Plan::new(o));
    shared.prepare(prepared);
    let errors: Rc<RefCell<BTreeMap<String, u64>>> = Rc::default();
    let t0 = Instant::now();
    let tty = std::io::stderr().is_terminal();
    {
        // Dropped (and silent) once the run's future completes.
        let shared = shared.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Plan::progress_every(tty)).await;
                eprint!("{}", shared.progress(tty));
            }
        })
        .detach();
    }
    let mut tasks = Vec::new();
    for c in 0..shared.o.clients {
        let (shared, errors) = (shared.clone(), errors.clone());
        let conn = conns.get(c % conns.len().max(1)).cloned();
        let addr = targets[c % targets.len()];
        tasks.push(glommio::spawn_local(async move {
            client(c, shared, conn, addr, errors).await
        }));
    }
    let mut hist = Histogram::<u64>::new(3).expect("valid precision");
    for t in tasks {
        let h = t.await;
        hist.add(&h)
            .map_err(|e| format!("merging histograms: {e}"))?;
    }
    if tty {
        eprintln!("{}", shared.progress(tty));
    }
    let errors = errors.borrow().clone();
    let mut r = report(&hist, t0.elapsed().as_secs_f64(), errors);
    r.conflicts = shared.conflicts();
    Ok(r)
}

/// A report from the merged latency histogram (µs) of a run of `seconds`.
pub fn report(hist: &Histogram<u64>, seconds: f64, errors: BTreeMap<String, u64>) -> Report {
    let ms = |us: u64| us as f64 / 1000.0;
    Report {
        requests: hist.len(),
        seconds,
        ops_per_sec: hist.len() as f64 / seconds,
        avg_ms: hist.mean() / 1000.0,
        p50_ms: ms(hist.value_at_quantile(0.50)),
        p90_ms: ms(hist.value_at_quantile(0.90)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
        errors: errors.values().sum(),
        errors_by_kind: errors,
        conflicts: 0,
    }
}

/// One closed-loop client; returns its latency histogram (µs).
async fn client(
    c: usize,
    shared: Rc<Plan>,
    conn: Option<Rc<Conn>>,
    addr: SocketAddr,
    errors: Rc<RefCell<BTreeMap<String, u64>>>,
) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new(3).expect("valid precision");
    let mut rng = Plan::client_rng(c);
    let mut http: Option<AsyncConn<TcpStream>> = None;
    let o = &shared.o;
    while shared.take_one() {
        if !o.workload.on_http() {
            // The etcd data model's workloads (native only: `run` refuses the others).
            let conn = conn.as_ref().expect("a native connection");
            let t = Instant::now();
            let outcome = futures_lite::future::or(native_op(&shared, conn, &mut rng), async {
                glommio::timer::sleep(o.timeout).await;
                Err("timeout".to_string())
            })
            .await;
            let us = t.elapsed().as_micros() as u64;
            shared.finished_one();
            match outcome {
                Ok(done) => {
                    shared.count(done);
                    let _ = hist.record(us.max(1));
                }
                Err(e) => *errors.borrow_mut().entry(e).or_default() += 1,
            }
            continue;
        }
        let key = shared.key(&mut rng);
        let read = shared.pick_read(&mut rng);
        let t = Instant::now();
        let call = async {
            match (&conn, read) {
                (Some(conn), None) => conn
                    .call(|id| Request::Put {
                        id,
                        key: key.clone().into_bytes(),
                        value: shared.value.clone().into_bytes(),
                    })
                    .await
                    .map(|r| outcome::http_status(&r.outcome)),
                (Some(conn), Some(consistency)) => conn
                    .call(|id| Request::Get {
                        id,
                        key: key.clone().into_bytes(),
                        consistency,
                    })
                    .await
                    .map(|r| outcome::http_status(&r.outcome)),
                (None, read) => http_request(&mut http, addr, &key, &shared.value, read).await,
            }
        };
        let outcome = futures_lite::future::or(call, async {
            glommio::timer::sleep(o.timeout).await;
            Err("timeout".to_string())
        })
        .await;
        let us = t.elapsed().as_micros() as u64;
        shared.finished_one();
        // A read of a key never written is a normal answer (404), not an error.
        match outcome {
            Ok(200) | Ok(404) => {
                let _ = hist.record(us.max(1));
            }
            Ok(st) => {
                *errors
                    .borrow_mut()
                    .entry(format!("status {st}"))
                    .or_default() += 1
            }
            Err(e) => {
                *errors.borrow_mut().entry(e).or_default() += 1;
                http = None;
            }
        }
    }
    hist
}

/// A store call's answer: the header revision and the store's response, or why not
/// (`status N` for a refusal, as the other workloads count them).
async fn store_call(
    conn: &Conn,
    make: impl FnOnce(u64) -> Request,
) -> Result<(i64, ringkv_store::Response), String> {
    match conn.call(make).await?.outcome {
        Ok(outcome::Answer::Store { revision, response }) => {
            let r = ringkv_store::decode_response(&ringkv_store::bytes::Bytes::from(response))
                .map_err(|e| e.to_string())?;
            Ok((revision, r))
        }
        Ok(_) => Err("unexpected answer".into()),
        Err(e) => Err(format!("status {}", e.http_status())),
    }
}

async fn native_write(
    conn: &Conn,
    cmd: &ringkv_store::Command,
) -> Result<(i64, ringkv_store::Response), String> {
    let command = cmd.encode().to_vec();
    store_call(conn, move |id| Request::Write { id, command }).await
}

async fn native_range(
    conn: &Conn,
    req: &ringkv_store::RangeRequest,
    consistency: u8,
) -> Result<(i64, ringkv_store::RangeResponse), String> {
    let request = ringkv_store::encode_range(req).to_vec();
    match store_call(conn, move |id| Request::Range {
        id,
        request,
        consistency,
    })
    .await?
    {
        (rev, ringkv_store::Response::Range(r)) => Ok((rev, r)),
        _ => Err("unexpected answer".into()),
    }
}

/// One op of an etcd data model workload over the native protocol (the same requests as
/// `bench_etcd`'s).
async fn native_op(shared: &Plan, conn: &Conn, rng: &mut Rng) -> Result<Done, String> {
    use ringkv_store::bytes::Bytes;
    use ringkv_store::{
        Command, Compare, CompareResult, CompareTarget, PutRequest, RangeRequest, RequestOp,
        Response, ResponseOp, TxnRequest,
    };
    let value = || Bytes::from(shared.value.clone().into_bytes());
    match shared.o.workload {
        Workload::TxnPut => {
            let key = shared.key(rng);
            let k = Bytes::from(key.clone().into_bytes());
            let cmd = Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod(shared.known_mod_revision(&key)),
                    key: k.clone(),
                    range_end: Bytes::new(),
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: k.clone(),
                    value: value(),
                    ..Default::default()
                })],
                failure: vec![RequestOp::Range(RangeRequest {
                    key: k,
                    ..Default::default()
                })],
            });
            match native_write(conn, &cmd).await? {
                // The put's revision is the txn's: the key's new mod_revision.
                (rev, Response::Txn(t)) if t.succeeded => {
                    shared.saw_mod_revision(&key, rev, rev);
                    Ok(Done::Ok)
                }
                (rev, Response::Txn(t)) => match t.responses.first() {
                    Some(ResponseOp::Range(r)) => {
                        let m = r.kvs.first().map_or(0, |kv| kv.mod_revision);
                        shared.saw_mod_revision(&key, m, rev);
                        Ok(Done::Conflict)
                    }
                    _ => Err("txn failure without its range".into()),
                },
                _ => Err("unexpected answer".into()),
            }
        }
        Workload::RangePrefix { consistency } => {
            let (key, end) = shared.prefix_range(rng);
            let req = RangeRequest {
                key: Bytes::from(key),
                range_end: Bytes::from(end),
                serializable: consistency == native::CONSISTENCY_EVENTUAL,
                ..Default::default()
            };
            let (_, r) = native_range(conn, &req, consistency).await?;
            shared.check_prefix(r.kvs.len())
        }
        Workload::LeasePut => {
            let key = lease_key_name(&shared.key(rng));
            let grant = Command::LeaseGrant {
                id: 0,
                ttl: LEASE_TTL_SECS,
            };
            let Response::LeaseGranted(g) = native_write(conn, &grant).await?.1 else {
                return Err("unexpected answer".into());
            };
            let put = Command::Put(PutRequest {
                key: Bytes::from(key.into_bytes()),
                value: value(),
                lease: g.id,
                ..Default::default()
            });
            match native_write(conn, &put).await?.1 {
                Response::Put(_) => Ok(Done::Ok),
                _ => Err("unexpected answer".into()),
            }
        }
        Workload::PopulatePrefixes => {
            let key = shared.populate_key().into_bytes();
            let r = conn
                .call(|id| Request::Put {
                    id,
                    key,
                    value: shared.value.clone().into_bytes(),
                })
                .await?;
            match outcome::http_status(&r.outcome) {
                200 => Ok(Done::Ok),
                st => Err(format!("status {st}")),
            }
        }
        Workload::RevokeLeases => {
            let Some(id) = shared.next_lease() else {
                return Ok(Done::Ok);
            };
            match native_write(conn, &Command::LeaseRevoke { id }).await {
                // Expired (or revoked by someone else) meanwhile: gone all the same.
                Ok(_) => Ok(Done::Ok),
                Err(e) if e == "status 404" => Ok(Done::Ok),
                Err(e) => Err(e),
            }
        }
        Workload::Put | Workload::Range { .. } | Workload::Mixed { .. } => {
            unreachable!("served by the plain put/get path")
        }
    }
}

/// The untimed reads a workload needs before timing starts (over the native protocol).
async fn prepare_native(o: &mut Options, conn: &Conn) -> Result<Prepared, String> {
    use ringkv_store::RangeRequest;
    use ringkv_store::bytes::Bytes;
    let mut p = Prepared::default();
    match o.workload {
        Workload::TxnPut => {
            let mut from = WARMUP_FIRST.to_vec();
            loop {
                let req = RangeRequest {
                    key: Bytes::from(from),
                    range_end: Bytes::from_static(WARMUP_END),
                    limit: WARMUP_PAGE,
                    keys_only: true,
                    ..Default::default()
                };
                let (rev, r) = native_range(conn, &req, native::CONSISTENCY_LINEARIZABLE)
                    .await
                    .map_err(|e| format!("reading the keys' revisions: {e}"))?;
                for kv in &r.kvs {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    p.mod_revisions.push((key, kv.mod_revision, rev));
                }
                match r.kvs.last() {
                    Some(last) if r.more => from = after(&last.key),
                    _ => break,
                }
            }
        }
        Workload::RangePrefix { .. } => {
            let (key, end) = prefixes_range(o);
            let req = RangeRequest {
                key: Bytes::from(key),
                range_end: Bytes::from(end),
                count_only: true,
                ..Default::default()
            };
            let (_, r) = native_range(conn, &req, native::CONSISTENCY_LINEARIZABLE)
                .await
                .map_err(|e| format!("counting the prefixes' keys: {e}"))?;
            check_populated(o, r.count)?;
        }
        Workload::RevokeLeases => {
            let r = conn.call(|id| Request::LeaseLeases { id }).await?;
            match r.outcome {
                Ok(outcome::Answer::LeaseList { ids }) => p.leases = ids,
                Ok(_) => return Err("listing the leases: unexpected answer".into()),
                Err(e) => return Err(format!("listing the leases: {}", e.http_status())),
            }
            o.total = Some(p.leases.len() as u64);
            o.duration = None;
        }
        _ => {}
    }
    Ok(p)
}

/// One HTTP/1.1 exchange on this client's keep-alive connection (opened on demand, and
/// again after the node closed it).
async fn http_request(
    conn: &mut Option<AsyncConn<TcpStream>>,
    addr: SocketAddr,
    key: &str,
    value: &str,
    read: Option<u8>,
) -> Result<u16, String> {
    if !conn.as_ref().is_some_and(AsyncConn::is_open) {
        *conn = Some(http_connect(addr).await?);
    }
    let c = conn.as_mut().expect("connected");
    let r = match read {
        None => {
            let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
            c.exchange("POST", "/put", body.as_bytes()).await
        }
        Some(consistency) => {
            let q = match consistency {
                native::CONSISTENCY_LINEARIZABLE => "&consistency=linearizable",
                native::CONSISTENCY_LEASE => "&consistency=lease",
                native::CONSISTENCY_EVENTUAL => "&consistency=eventual",
                _ => "",
            };
            c.exchange("GET", &format!("/get?key={key}{q}"), b"").await
        }
    };
    r.map(|r| r.status).map_err(|e| e.to_string())
}

async fn http_connect(addr: SocketAddr) -> Result<AsyncConn<TcpStream>, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    Ok(AsyncConn::new(s, &addr.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(total: Option<u64>, duration: Option<Duration>) -> Plan {
        Plan::new(Options {
            endpoints: vec!["127.0.0.1:1".parse().unwrap()],
            target: Target::Native,
            workload: Workload::Put,
            conns: 1,
            clients: 1,
            total,
            duration,
            key_size: 8,
            val_size: 8,
            key_space: 10,
            sequential_keys: false,
            timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn sequential_keys_write_every_key_once_per_pass_whatever_the_clients() {
        let mut p = plan(Some(30), None);
        p.o.sequential_keys = true;
        // Clients take turns (as the tasks of one executor do); each has its own rng,
        // which sequential keys do not use.
        let mut rngs: Vec<Rng> = (0..4).map(Plan::client_rng).collect();
        let keys: Vec<String> = (0..30).map(|i| p.key(&mut rngs[i % 4])).collect();
        let mut first: Vec<String> = keys[..10].to_vec();
        first.sort();
        first.dedup();
        assert_eq!(first.len(), 10, "{keys:?}");
        assert_eq!(keys[0], "00000000");
        assert_eq!(keys[9], "00000009");
        assert_eq!(keys[10..20], keys[..10]);
    }

    #[test]
    fn progress_counts_finished_requests_as_a_bar_or_a_plain_line() {
        let p = plan(Some(200), None);
        for _ in 0..50 {
            p.finished_one();
        }
        let bar = p.progress(true);
        assert!(bar.starts_with('\r'), "{bar:?}");
        assert!(
            bar.contains(&format!("[{}{}]", "#".repeat(7), ".".repeat(23))),
            "{bar}"
        );
        assert!(bar.contains(" 25% 50/200 "), "{bar}");
        let line = p.progress(false);
        assert!(
            line.starts_with("ringkv bench: 25% 50/200 requests after "),
            "{line}"
        );
        assert!(line.ends_with(" ops/s\n"), "{line:?}");
        for _ in 0..500 {
            p.finished_one();
        }
        // Never past 100% (requests finished beyond the total are not possible, but the
        // bar must not overflow if they were counted twice by mistake).
        assert!(p.progress(true).contains(&format!("[{}]", "#".repeat(30))));
        // A timed run shows elapsed time against the duration.
        let t = plan(None, Some(Duration::from_secs(3600)));
        assert!(
            t.progress(false)
                .starts_with("ringkv bench: 0% 0 requests after ")
        );
    }
}
