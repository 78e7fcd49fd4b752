//! The command-line client: `ringkv put|get|delete|status`, the etcd data model's
//! `get --prefix/--from-key/--limit/--rev/...`, `put`/`del` with options, `txn`, `compact`
//! and `lease grant|revoke|keep-alive|timetolive|list`, and the admin commands
//! `ringkv join|promote|remove|transfer-leader|snapshot`, all over the native protocol
//! (`native_client::Client`), printing each answer as the HTTP API's JSON (store answers in
//! etcd's shapes: `header.revision`, `kvs`, `count`, `more`, `succeeded`, ...).
//!
//! Runs on the main thread of a short-lived `ringkv` process: a command starts one glommio
//! executor (unpinned, 1 MiB of io_uring memory) for its `Client` and waits for it. Not used
//! by the server; must not touch node internals or any file, only the sockets it opens.
//!
//! Which endpoint gets the request: endpoints are tried in the order given, each address at
//! most once; a put or delete first asks the endpoints' status, in order, until one names
//! the leader, and goes there first. A failed connection (refused, unreachable, timed out)
//! moves on to the next. A 503 `not_leader` naming `leader_address` puts that address next
//! (nothing was written, so the retry is safe); a 503 `unavailable` moves on. A put, delete
//! or admin call is never resent once its bytes may have reached a node: a connection lost
//! after sending, no reply in time, or a 504 `timeout` reply end the command with "outcome
//! unknown" (exit 3), because a resend could apply it twice or after a later write. Reads
//! and status are retried on the next endpoint instead. Admin commands change the cluster
//! and are treated as writes (without the status round: they go to the endpoints in order,
//! so `snapshot` is taken on the first); their token, if given, goes with the call. A host
//! name in `--endpoints` stands for each address it resolves to; messages name it as given.
//!
//! Exit codes: 0 success (the reply's JSON on stdout); 1 the cluster answered with an error
//! (its JSON on stderr); 2 usage error (clap); 3 no answer: no endpoint reachable (each one
//! named with its error), or a write's outcome is unknown.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::native_client::{self, Client};
pub use ringkv_proto::admin::AdminOp;
use ringkv_proto::native;
use ringkv_proto::outcome;

/// What `--endpoints` defaults to: the three-node example.
pub const ENDPOINTS_DEFAULT: &str = "127.0.0.1:9081,127.0.0.1:9082,127.0.0.1:9083";

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR_REPLY: u8 = 1;
pub const EXIT_NO_ANSWER: u8 = 3;

/// The `consistency` of a read; the node's default when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    Linearizable,
    Lease,
    Eventual,
}

impl Consistency {
    /// Its `net::native::CONSISTENCY_*` code (`None`: the node's default).
    pub fn code(c: Option<Consistency>) -> u8 {
        match c {
            None => native::CONSISTENCY_DEFAULT,
            Some(Consistency::Linearizable) => native::CONSISTENCY_LINEARIZABLE,
            Some(Consistency::Lease) => native::CONSISTENCY_LEASE,
            Some(Consistency::Eventual) => native::CONSISTENCY_EVENTUAL,
        }
    }
}

/// One client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
        consistency: Option<Consistency>,
    },
    Status,
    /// A membership or maintenance call; `token` (one that passes `check_token`) goes with
    /// it.
    Admin {
        op: AdminOp,
        token: Option<String>,
    },
    /// A range read (`get` with range flags).
    Range {
        req: ringkv_store::RangeRequest,
        consistency: Option<Consistency>,
    },
    /// A write of the etcd data model (`put`/`del` with options, `txn`, `compact`, `lease
    /// grant`, `lease revoke`), named as the command that makes it.
    Write {
        name: &'static str,
        cmd: ringkv_store::Command,
    },
    /// One keep-alive of a lease (`lease keep-alive --once`).
    LeaseKeepAlive {
        lease: i64,
    },
    LeaseTimeToLive {
        lease: i64,
        keys: bool,
    },
    LeaseList,
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Request::Put { .. } => "put",
            Request::Delete { .. } => "delete",
            Request::Get { .. } | Request::Range { .. } => "get",
            Request::Status => "status",
            Request::Admin { op, .. } => op.name(),
            Request::Write { name, .. } => name,
            Request::LeaseKeepAlive { .. } => "lease keep-alive",
            Request::LeaseTimeToLive { .. } => "lease timetolive",
            Request::LeaseList => "lease list",
        }
    }

    /// Where to look after an unknown outcome.
    fn check_hint(&self) -> &'static str {
        match self {
            Request::Admin { .. } => "check with ringkv status --all",
            _ => "check with ringkv get",
        }
    }
}

/// An admin token as it may go into a header: printable ASCII without blanks, not empty.
pub fn check_token(t: &str) -> Result<String, String> {
    if t.is_empty() {
        return Err("the token is empty".into());
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token is printable ASCII without blanks or control characters".into());
    }
    Ok(t.to_string())
}

/// What the process prints and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: u8,
}

/// How a command ended, endpoints named as the operator gave them.
enum Ended {
    /// A node's reply (status, JSON body).
    Answered(u16, String),
    /// Some endpoints answered but none could serve it: the last such reply's body, and
    /// what happened at each endpoint in order.
    Unserved(String, Vec<(String, String)>),
    /// No endpoint answered: each one's error, in order.
    Unreachable(Vec<(String, String)>),
    /// A write was sent to this endpoint, then this happened (with the node's 504 reply,
    /// if that was it).
    Unknown(String, String, Option<String>),
    /// Nothing was sent: the client itself could not run.
    Failed(String),
}

fn render(req: &Request, ended: Ended) -> Outcome {
    let name = req.name();
    let summary = |tried: &[(String, String)]| {
        tried
            .iter()
            .map(|(e, what)| format!("{e}: {what}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (stdout, stderr, exit_code) = match ended {
        Ended::Answered(200, body) => (line(&body), String::new(), EXIT_OK),
        Ended::Answered(_, body) => (String::new(), line(&body), EXIT_ERROR_REPLY),
        Ended::Unserved(body, tried) => (
            String::new(),
            format!(
                "{}ringkv {name}: no endpoint could serve it: {}\n",
                line(&body),
                summary(&tried)
            ),
            EXIT_ERROR_REPLY,
        ),
        Ended::Unreachable(tried) => (
            String::new(),
            format!(
                "ringkv {name}: no endpoint reachable: {}\n",
                summary(&tried)
            ),
            EXIT_NO_ANSWER,
        ),
        Ended::Unknown(ep, why, reply) => (
            String::new(),
            format!(
                "{}ringkv {name}: outcome unknown: the request was sent to {ep}, then {why}; \
                 it was not resent (it may or may not have been applied): {}\n",
                reply.map(|b| line(&b)).unwrap_or_default(),
                req.check_hint()
            ),
            EXIT_NO_ANSWER,
        ),
        Ended::Failed(e) => (
            String::new(),
            format!("ringkv {name}: {e}\n"),
            EXIT_NO_ANSWER,
        ),
    };
    Outcome {
        stdout,
        stderr,
        exit_code,
    }
}

/// Runs `req` against `endpoints` (see the module doc for the order and the retry rules).
pub fn run(req: &Request, endpoints: &[String], timeout: Duration) -> Outcome {
    render(req, run_native(req, endpoints, timeout))
}

/// The endpoints' addresses, in order and each once; what each address is called (the
/// endpoint as given); the endpoints that resolve to none, with why.
struct Resolved {
    addrs: Vec<SocketAddr>,
    names: HashMap<SocketAddr, String>,
    failed: Vec<(String, String)>,
}

impl Resolved {
    fn new(endpoints: &[String]) -> Resolved {
        let mut r = Resolved {
            addrs: Vec::new(),
            names: HashMap::new(),
            failed: Vec::new(),
        };
        for e in endpoints {
            match e.to_socket_addrs() {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    if addrs.is_empty() {
                        r.failed.push((e.clone(), "resolves to no address".into()));
                    }
                    for a in addrs {
                        if let std::collections::hash_map::Entry::Vacant(v) = r.names.entry(a) {
                            v.insert(e.clone());
                            r.addrs.push(a);
                        }
                    }
                }
                Err(err) => r.failed.push((e.clone(), format!("cannot resolve: {err}"))),
            }
        }
        r
    }

    fn name(&self, a: SocketAddr) -> String {
        self.names.get(&a).cloned().unwrap_or_else(|| a.to_string())
    }

    /// `tried` with names, after the endpoints that did not resolve.
    fn named(&self, tried: Vec<(SocketAddr, String)>) -> Vec<(String, String)> {
        let mut v = self.failed.clone();
        v.extend(tried.into_iter().map(|(a, what)| (self.name(a), what)));
        v
    }
}

/// Runs `f`'s future on a new glommio executor for the native client; waits for it.
fn on_executor<T, F>(f: impl FnOnce() -> F + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .name("ringkv-client")
        .spawn(f)
        .and_then(|h| h.join())
        .map_err(|e| format!("cannot run the client's executor: {e}"))
}

/// One command through `native_client::Client`.
fn run_native(req: &Request, endpoints: &[String], timeout: Duration) -> Ended {
    let r = Resolved::new(endpoints);
    if r.addrs.is_empty() {
        return Ended::Unreachable(r.failed);
    }
    let (addrs, req2) = (r.addrs.clone(), req.clone());
    let outcome = on_executor(move || async move {
        let c = Client::new(addrs, timeout);
        match req2 {
            Request::Put { key, value } => c.put(key, value).await,
            Request::Delete { key } => c.delete(key).await,
            Request::Get { key, consistency } => c.get(key, Consistency::code(consistency)).await,
            Request::Status => c.status().await,
            Request::Admin { op, token } => c.admin(&op, token.as_deref()).await,
            Request::Range { req, consistency } => {
                c.range(&req, Consistency::code(consistency)).await
            }
            Request::Write { cmd, .. } => c.write(&cmd).await,
            Request::LeaseKeepAlive { lease } => c.lease_keep_alive(lease).await,
            Request::LeaseTimeToLive { lease, keys } => c.lease_time_to_live(lease, keys).await,
            Request::LeaseList => c.leases().await,
        }
    });
    match outcome {
        Err(e) => Ended::Failed(e),
        Ok(native_client::Outcome::Answered(a)) => {
            let (status, body) = a.to_json();
            Ended::Answered(status, body)
        }
        Ok(native_client::Outcome::Unserved { last, tried }) => {
            Ended::Unserved(last.to_json().1, r.named(tried))
        }
        Ok(native_client::Outcome::Unreachable { tried }) => Ended::Unreachable(r.named(tried)),
        Ok(native_client::Outcome::Unknown {
            endpoint,
            why,
            answer,
        }) => Ended::Unknown(r.name(endpoint), why, answer.map(|a| a.to_json().1)),
    }
}

/// `lease keep-alive`: a keep-alive every third of the lease's TTL, each answer printed as
/// a line, until the lease is gone (TTL 0: exit 1) or no node answers (exit 3). Like
/// etcdctl's, it runs until interrupted.
pub fn keep_alive_loop(lease: i64, endpoints: &[String], timeout: Duration) -> u8 {
    let r = Resolved::new(endpoints);
    if r.addrs.is_empty() {
        eprint!(
            "{}",
            render(
                &Request::LeaseKeepAlive { lease },
                Ended::Unreachable(r.failed)
            )
            .stderr
        );
        return EXIT_NO_ANSWER;
    }
    let addrs = r.addrs.clone();
    let code = on_executor(move || async move {
        let c = Client::new(addrs, timeout);
        loop {
            match c.lease_keep_alive(lease).await {
                native_client::Outcome::Answered(a) => {
                    println!("{}", a.to_json().1);
                    match a.outcome {
                        Ok(outcome::Answer::LeaseTtl { ttl, .. }) if ttl > 0 => {
                            let every = Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
                            glommio::timer::sleep(every).await;
                        }
                        Ok(_) => {
                            eprintln!("ringkv lease keep-alive: lease {lease} expired or revoked");
                            return EXIT_ERROR_REPLY;
                        }
                        Err(_) => return EXIT_ERROR_REPLY,
                    }
                }
                other => {
                    eprintln!("ringkv lease keep-alive: {other:?}");
                    return EXIT_NO_ANSWER;
                }
            }
        }
    });
    code.unwrap_or_else(|e| {
        eprintln!("ringkv lease keep-alive: {e}");
        EXIT_NO_ANSWER
    })
}

/// `status --all`: one line per endpoint, in order: its status JSON, or
/// `{"endpoint":..,"error":..}` (with `"status"` when the node answered with an error).
/// Exit 0 when every endpoint answered, 3 when none did, 1 otherwise.
pub fn status_all(endpoints: &[String], timeout: Duration) -> Outcome {
    // Per endpoint: its addresses, or why it has none.
    let resolved: Vec<Result<Vec<SocketAddr>, String>> = endpoints
        .iter()
        .map(|e| match e.to_socket_addrs() {
            Ok(a) => Ok(a.collect()),
            Err(err) => Err(format!("cannot resolve: {err}")),
        })
        .collect();
    let asked = resolved.clone();
    // Per endpoint: the first answer of one of its addresses, or the last error.
    let answers = on_executor(move || async move {
        let c = Client::new(Vec::new(), timeout);
        let mut out = Vec::new();
        for addrs in asked {
            let mut got = Err("resolves to no address".to_string());
            for a in addrs.iter().flatten() {
                got = c.status_at(*a).await;
                if got.is_ok() {
                    break;
                }
            }
            out.push(got);
        }
        out
    })
    .unwrap_or_else(|e| vec![Err(e); endpoints.len()]);
    let mut out = String::new();
    let mut ok = 0;
    for ((ep, addrs), got) in endpoints.iter().zip(resolved).zip(answers) {
        let got = addrs.and(got);
        match got.as_ref().map(|a| &a.outcome) {
            Ok(Ok(answer)) => {
                ok += 1;
                out.push_str(&line(&answer.to_json().to_string()));
            }
            Ok(Err(err)) => {
                let e = serde_json::json!({
                    "endpoint": ep,
                    "status": err.http_status(),
                    "error": err.to_json(),
                });
                let _ = writeln!(out, "{e}");
            }
            Err(e) => {
                let _ = writeln!(out, "{}", serde_json::json!({ "endpoint": ep, "error": e }));
            }
        }
    }
    Outcome {
        stdout: out,
        stderr: String::new(),
        exit_code: if ok == endpoints.len() {
            EXIT_OK
        } else if ok == 0 {
            EXIT_NO_ANSWER
        } else {
            EXIT_ERROR_REPLY
        },
    }
}

/// `s` with exactly one trailing newline.
fn line(s: &str) -> String {
    format!("{}\n", s.trim_end())
}

/// `--endpoints`: comma-separated `host:port` list (blanks around commas ignored).
pub fn parse_endpoints(s: &str) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    for e in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match e.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                v.push(e.to_string())
            }
            _ => return Err(format!("{e:?} is not host:port (like 127.0.0.1:9081)")),
        }
    }
    if v.is_empty() {
        return Err("no endpoint given".into());
    }
    Ok(v)
}
