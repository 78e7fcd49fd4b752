//! The command-line client: `ringkv put|get|delete|status` and the admin commands
//! `ringkv join|promote|remove|transfer-leader|snapshot` against the nodes' HTTP API.
//!
//! Owns one blocking `std::net::TcpStream` at a time (HTTP/1.1, one request per connection,
//! `Connection: close`), on the main thread of a short-lived `ringkv` process. Not used by
//! the server; must not touch node internals or any file, only the sockets it opens.
//!
//! Which endpoint gets the request: endpoints are tried in the order given, each address at
//! most once. A failed connection (refused, unreachable, timed out) moves on to the next.
//! A 503 `not_leader` naming `leader_address` puts that address next (nothing was written,
//! so the retry is safe); a 503 `unavailable` moves on. A put or delete is never resent once
//! its bytes may have reached a node: a connection lost after sending, no reply in time,
//! or a 504 `timeout` reply end the command with "outcome unknown" (exit 3), because a
//! resend could apply it twice or after a later write. Reads and status are retried on the
//! next endpoint instead. Admin commands change the cluster and are treated as writes;
//! their token, if given, goes in an `X-Ringkv-Token` header.
//!
//! Exit codes: 0 success (the reply's JSON on stdout); 1 the cluster answered with an error
//! (its JSON on stderr); 2 usage error (clap); 3 no answer: no endpoint reachable (each one
//! named with its error), or a write's outcome is unknown.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub use crate::net::http::AdminOp;

/// What `--endpoints` defaults to: the three-node example.
pub const ENDPOINTS_DEFAULT: &str = "127.0.0.1:9081,127.0.0.1:9082,127.0.0.1:9083";
/// A reply (head and body) larger than this is refused.
pub const RESPONSE_BYTES_MAX: usize = 4 << 20;
/// Response headers parsed at most.
const RESPONSE_HEADERS_MAX: usize = 32;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR_REPLY: u8 = 1;
pub const EXIT_NO_ANSWER: u8 = 3;

/// The `consistency` of a read (`/get?consistency=`); the node's default when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    Linearizable,
    Lease,
    Eventual,
}

impl Consistency {
    fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Eventual => "eventual",
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
    /// A membership or maintenance call; `token` (one that passes `check_token`) is sent as
    /// `X-Ringkv-Token`.
    Admin {
        op: AdminOp,
        token: Option<String>,
    },
}

impl Request {
    /// Writes and admin calls change state: never resent once they may have arrived.
    fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Put { .. } | Request::Delete { .. } | Request::Admin { .. }
        )
    }

    fn name(&self) -> &'static str {
        match self {
            Request::Put { .. } => "put",
            Request::Delete { .. } => "delete",
            Request::Get { .. } => "get",
            Request::Status => "status",
            Request::Admin { op, .. } => match op {
                AdminOp::Join { .. } => "join",
                AdminOp::Promote { .. } => "promote",
                AdminOp::Remove { .. } => "remove",
                AdminOp::TransferLeader { .. } => "transfer-leader",
                AdminOp::Snapshot => "snapshot",
            },
        }
    }

    /// Where to look after an unknown outcome.
    fn check_hint(&self) -> &'static str {
        match self {
            Request::Admin { .. } => "check with ringkv status --all",
            _ => "check with ringkv get",
        }
    }

    /// Extra request headers: the admin token.
    fn headers(&self) -> Vec<(&'static str, &str)> {
        match self {
            Request::Admin { token: Some(t), .. } => vec![("X-Ringkv-Token", t.as_str())],
            _ => Vec::new(),
        }
    }

    /// (method, request target, JSON body).
    fn http(&self) -> (&'static str, String, String) {
        match self {
            Request::Put { key, value } => (
                "POST",
                "/put".into(),
                serde_json::json!({ "key": key, "value": value }).to_string(),
            ),
            Request::Delete { key } => (
                "POST",
                "/delete".into(),
                serde_json::json!({ "key": key }).to_string(),
            ),
            Request::Get { key, consistency } => {
                let mut t = format!("/get?key={}", percent_encode(key));
                if let Some(c) = consistency {
                    t.push_str("&consistency=");
                    t.push_str(c.as_str());
                }
                ("GET", t, String::new())
            }
            Request::Status => ("GET", "/status".into(), String::new()),
            Request::Admin { op, .. } => {
                let (path, body) = match op {
                    AdminOp::Join { node_id, address } => (
                        "/join",
                        serde_json::json!({ "node_id": node_id, "address": address }),
                    ),
                    AdminOp::Promote { node_id } => {
                        ("/promote", serde_json::json!({ "node_id": node_id }))
                    }
                    AdminOp::Remove { node_id } => {
                        ("/remove", serde_json::json!({ "node_id": node_id }))
                    }
                    AdminOp::TransferLeader { node_id } => (
                        "/transfer-leader",
                        serde_json::json!({ "node_id": node_id }),
                    ),
                    AdminOp::Snapshot => ("/snapshot", serde_json::json!({})),
                };
                ("POST", path.into(), body.to_string())
            }
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

/// Runs `req` against `endpoints` (see the module doc for the order and the retry rules).
pub fn run(req: &Request, endpoints: &[String], timeout: Duration) -> Outcome {
    let (method, target, body) = req.http();
    let headers = req.headers();
    let name = req.name();
    let mut queue: VecDeque<String> = endpoints.iter().cloned().collect();
    // (endpoint, what happened there), in order.
    let mut tried: Vec<(String, String)> = Vec::new();
    let mut last_reply: Option<Response> = None;
    while let Some(ep) = queue.pop_front() {
        if tried.iter().any(|(e, _)| *e == ep) {
            continue;
        }
        let r = match exchange(&ep, method, &target, &headers, body.as_bytes(), timeout) {
            Ok(r) => r,
            Err(ExchangeError::NotSent(e)) => {
                tried.push((ep, e));
                continue;
            }
            Err(ExchangeError::AfterSend(e)) if req.is_write() => {
                return unknown(req, &ep, &e, String::new());
            }
            Err(ExchangeError::AfterSend(e)) => {
                tried.push((ep, e));
                continue;
            }
        };
        if r.status == 200 {
            return Outcome {
                stdout: line(&r.body),
                stderr: String::new(),
                exit_code: EXIT_OK,
            };
        }
        let err: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        let code = err["code"].as_str().unwrap_or("");
        match (r.status, code) {
            (503, "not_leader") => {
                let leader = err["leader_address"].as_str().unwrap_or("");
                if leader.is_empty() {
                    tried.push((ep, "not the leader, and it knows no leader".into()));
                } else {
                    tried.push((ep, format!("not the leader; the leader is {leader}")));
                    queue.push_front(leader.to_string());
                }
            }
            (503, _) => tried.push((ep, format!("503 {code}"))),
            (504, _) if req.is_write() => {
                let why = format!("it answered 504 {code}");
                return unknown(req, &ep, &why, line(&r.body));
            }
            (504, _) => tried.push((ep, format!("504 {code}"))),
            _ => {
                return Outcome {
                    stdout: String::new(),
                    stderr: line(&r.body),
                    exit_code: EXIT_ERROR_REPLY,
                };
            }
        }
        last_reply = Some(r);
    }
    let summary = tried
        .iter()
        .map(|(e, what)| format!("{e}: {what}"))
        .collect::<Vec<_>>()
        .join("; ");
    match last_reply {
        Some(r) => Outcome {
            stdout: String::new(),
            stderr: format!(
                "{}ringkv {name}: no endpoint could serve it: {summary}\n",
                line(&r.body)
            ),
            exit_code: EXIT_ERROR_REPLY,
        },
        None => Outcome {
            stdout: String::new(),
            stderr: format!("ringkv {name}: no endpoint reachable: {summary}\n"),
            exit_code: EXIT_NO_ANSWER,
        },
    }
}

/// `status --all`: one line per endpoint, in order: its status JSON, or
/// `{"endpoint":..,"error":..}`. Exit 0 when every endpoint answered, 3 when none did,
/// 1 otherwise.
pub fn status_all(endpoints: &[String], timeout: Duration) -> Outcome {
    let mut out = String::new();
    let mut ok = 0;
    for ep in endpoints {
        match exchange(ep, "GET", "/status", &[], b"", timeout) {
            Ok(r) if r.status == 200 => {
                ok += 1;
                out.push_str(&line(&r.body));
            }
            Ok(r) => {
                let body: serde_json::Value =
                    serde_json::from_str(&r.body).unwrap_or_else(|_| r.body.clone().into());
                let e = serde_json::json!({ "endpoint": ep, "status": r.status, "error": body });
                let _ = writeln!(out, "{e}");
            }
            Err(ExchangeError::NotSent(e) | ExchangeError::AfterSend(e)) => {
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

fn unknown(req: &Request, ep: &str, why: &str, reply: String) -> Outcome {
    Outcome {
        stdout: String::new(),
        stderr: format!(
            "{reply}ringkv {}: outcome unknown: the request was sent to {ep}, then {why}; \
             it was not resent (it may or may not have been applied): {}\n",
            req.name(),
            req.check_hint()
        ),
        exit_code: EXIT_NO_ANSWER,
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

/// Percent-encodes everything but RFC 3986 unreserved characters (UTF-8 bytes as `%XX`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An HTTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// How one request/reply exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// No connection was made: nothing reached the server.
    NotSent(String),
    /// Connected and (some of) the request was sent, then no complete reply came: the
    /// server may have acted on it.
    AfterSend(String),
}

/// One HTTP/1.1 request on a new connection to `addr`, all within `timeout` (connect, send
/// and the whole reply). `headers`: extra (name, value) pairs; values must not hold CR or
/// LF (the caller checks them).
pub fn exchange(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, ExchangeError> {
    assert!(
        headers
            .iter()
            .all(|(n, v)| !format!("{n}{v}").contains(['\r', '\n'])),
        "a header holds CR or LF"
    );
    let deadline = Instant::now() + timeout;
    let mut stream = connect(addr, deadline).map_err(ExchangeError::NotSent)?;
    let after = ExchangeError::AfterSend;
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(&req))
        .map_err(|e| after(io_error("sending", e, timeout)))?;

    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let (head_len, status, content_length) = loop {
        let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let mut len = None;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let v = std::str::from_utf8(h.value).ok();
                        len = Some(v.and_then(|v| v.trim().parse::<usize>().ok()).ok_or_else(
                            || after("the reply's Content-Length is not a number".into()),
                        )?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(after(
                            "the reply uses Transfer-Encoding (unsupported)".into(),
                        ));
                    }
                }
                break (n, resp.code.unwrap_or(0), len);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(after(format!("the reply is not HTTP/1.1: {e}"))),
        }
        if read_some(&mut stream, &mut buf, deadline, timeout).map_err(after)? == 0 {
            return Err(after(if buf.is_empty() {
                "the connection was closed before any reply".into()
            } else {
                "the connection was closed in the middle of the reply".into()
            }));
        }
    };
    match content_length {
        Some(n) => {
            if head_len + n > RESPONSE_BYTES_MAX {
                return Err(after(format!(
                    "the reply is over response_bytes_max ({RESPONSE_BYTES_MAX} bytes)"
                )));
            }
            while buf.len() < head_len + n {
                if read_some(&mut stream, &mut buf, deadline, timeout).map_err(after)? == 0 {
                    return Err(after(
                        "the connection was closed in the middle of the reply".into(),
                    ));
                }
            }
            buf.truncate(head_len + n);
        }
        // No length: the body runs to the end of the connection.
        None => while read_some(&mut stream, &mut buf, deadline, timeout).map_err(after)? > 0 {},
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&buf[head_len..]).into_owned(),
    })
}

fn connect(addr: &str, deadline: Instant) -> Result<TcpStream, String> {
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?;
    let mut last = String::from("resolves to no address");
    for sa in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&sa, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Reads what is there into `buf` (at most up to `RESPONSE_BYTES_MAX`); 0 at the end.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    timeout: Duration,
) -> Result<usize, String> {
    if buf.len() >= RESPONSE_BYTES_MAX {
        return Err(format!(
            "the reply is over response_bytes_max ({RESPONSE_BYTES_MAX} bytes)"
        ));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out("waiting for the reply", timeout));
    }
    stream
        .set_read_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    let mut chunk = [0u8; 16 << 10];
    let room = chunk.len().min(RESPONSE_BYTES_MAX - buf.len());
    match stream.read(&mut chunk[..room]) {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        Err(e) => Err(io_error("waiting for the reply", e, timeout)),
    }
}

fn io_error(doing: &str, e: io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(doing, timeout),
        _ => format!("{doing} failed: {e}"),
    }
}

fn timed_out(doing: &str, timeout: Duration) -> String {
    format!("timed out {doing} (--timeout-ms {})", timeout.as_millis())
}
