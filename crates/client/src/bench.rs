//! `ringkv bench`: a closed-loop load generator in the style of etcd's `benchmark` tool.
//!
//! Runs on its own glommio executor (the caller's thread waits). Each client is a task
//! with one request outstanding, no coalescing on the client side; clients share `conns`
//! native connections (pipelined) or, over HTTP/1.1, have one keep-alive connection each
//! (`http1::AsyncConn`). Every client records its latencies in its own HDR histogram; they
//! are merged at the end (nothing global on the hot path). Writes are never retried: a failed one counts as an
//! error by kind. Must not touch a node's files: it only talks to its port.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
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
}

impl Report {
    pub fn line(&self) -> String {
        format!(
            "{} requests in {:.2} s: {:.0} ops/s; latency ms avg {:.3} p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}; errors {}{}",
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
            started: Instant::now(),
            o,
        }
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

    /// The next operation: `Some(consistency)` for a read, `None` for a put.
    pub fn pick_read(&self, rng: &mut Rng) -> Option<u8> {
        match self.o.workload {
            Workload::Put => None,
            Workload::Range { consistency } => Some(consistency),
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

async fn run_on_executor(o: Options) -> Result<Report, String> {
    // Writes go to the leader (followers would forward them); reads spread over all.
    let writes_to_leader = matches!(o.workload, Workload::Put);
    let targets: Vec<SocketAddr> = if writes_to_leader {
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
    let shared = Rc::new(Plan::new(o));
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
    Ok(report(&hist, t0.elapsed().as_secs_f64(), errors))
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
