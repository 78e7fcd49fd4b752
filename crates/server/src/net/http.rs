//! The HTTP API for `curl`: request parsing with limits, routing to API calls, JSON replies.
//!
//! Pure (bytes in, calls and bytes out), used by the connection tasks on the shard
//! executors, and (`parse_metrics`, `response_with`) by the metrics listener on its own
//! executor, whose only route is `GET /metrics`. Must not touch the Raft core or shard
//! state: it only turns requests into `HttpCall`s and typed outcomes into bytes
//! (`outcome_response`, rendering `ringkv_proto::outcome`).
//!
//! Routes (the node issue): `POST /put {"key","value"}`, `POST /delete {"key"}`,
//! `GET /get?key=K[&consistency=linearizable|lease|eventual]`, `GET /status`. Keys are
//! bytes: `K` may %-escape any byte. JSON bodies carry UTF-8 text; an answer whose key or
//! value is not UTF-8 (written over the native protocol) carries it as base64 in
//! `key_base64` / `value_base64` instead.
//!
//! Admin routes (the membership issue), all `POST` with a JSON body:
//! `/join {"node_id":4,"address":"127.0.0.1:9084"}` (the address an `ip:port`),
//! `/promote {"node_id":4}`, `/remove {"node_id":N}`, `/transfer-leader {"node_id":N}`,
//! `/snapshot` (empty body or `{}`). Node ids start at 1. The caller's token, if any, comes
//! from the `X-Ringkv-Token: T` or the `Authorization: Bearer T` header (two different
//! tokens, an empty one or another `Authorization` scheme are refused with 400); checking
//! it is the node's business.
//!
//! The `Content-Type` of a request is not looked at (curl's `-d` sends
//! `application/x-www-form-urlencoded`): a body is always read as JSON.
//!
//! Errors are JSON `{"error": "...", "code": "..."}` with 400, 404, 405, 411, 413, 431; a
//! JSON error names the field (`bad JSON body: node_id: invalid type ...`). The node adds
//! 503 and 504 (and for admin calls e.g. 409 `learner_lagging`).
//!
//! Paths under `/v3/` are etcd's JSON gateway (`net::gateway`): they become a
//! `HttpCall::Gateway`, answered in etcd's JSON rather than ringkv's. The head's limits and
//! framing rules apply to them as to every request.

use serde::Deserialize;

pub use super::call::ApiCall;
use super::gateway::{self, GatewayCall};
use bytes::Bytes;
pub use ringkv_proto::admin::AdminOp;
use ringkv_proto::outcome::{Outcome, render_json};
use ringkv_raft::ReadPolicy;

/// Limits applied while parsing (from `[limits]`).
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub head_bytes_max: usize,
    pub body_bytes_max: usize,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
}

/// An error reply: status, machine-readable code, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl HttpError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON reply for this error. `close`: the connection cannot continue (the
    /// request could not be delimited).
    pub fn reply(&self, close: bool) -> Vec<u8> {
        let body = serde_json::json!({ "error": self.message, "code": self.code });
        response(self.status, &body.to_string(), close)
    }
}

/// What a request on the API port asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpCall {
    /// ringkv's own routes.
    Api(ApiCall),
    /// etcd's gateway routes (`/v3/...`).
    Gateway(GatewayCall),
}

/// Outcome of looking at the start of a connection's buffer (`C`: what a request asks
/// for: an `HttpCall` on the API port, `()` for `GET /metrics` on the metrics port).
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<C = HttpCall> {
    /// Not a whole request yet.
    Incomplete,
    /// A request of `consumed` bytes: the call, or the error to answer it with.
    /// `keep_alive`: the client did not ask to close.
    Request {
        consumed: usize,
        call: Result<C, HttpError>,
        keep_alive: bool,
    },
    /// The stream cannot be read as HTTP any further: answer and close.
    Fatal(HttpError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactBody {
    revision: i64,
    #[serde(default)]
    physical: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    node_id: u64,
    address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeIdBody {
    node_id: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

/// The token headers of a request, as sent (checked only by admin routes).
#[derive(Default)]
struct TokenHeaders<'a> {
    x_token: Vec<&'a [u8]>,
    authorization: Vec<&'a [u8]>,
}

/// A request head, checked against the limits; its body is complete in the buffer.
struct Head<'a> {
    /// Bytes of head and body.
    consumed: usize,
    body: &'a [u8],
    method: &'a str,
    path: &'a str,
    query: &'a str,
    keep_alive: bool,
    tokens: TokenHeaders<'a>,
}

enum HeadOutcome<'a> {
    Incomplete,
    Fatal(HttpError),
    Whole(Head<'a>),
}

/// Parses one request from the start of `buf`.
pub fn parse(buf: &[u8], limits: &HttpLimits) -> Parsed {
    match head(buf, limits) {
        HeadOutcome::Incomplete => Parsed::Incomplete,
        HeadOutcome::Fatal(e) => Parsed::Fatal(e),
        HeadOutcome::Whole(h) => Parsed::Request {
            consumed: h.consumed,
            call: route(h.method, h.path, h.query, h.body, &h.tokens, limits),
            keep_alive: h.keep_alive,
        },
    }
}

/// Parses one request to the metrics listener, whose only route is `GET /metrics` (any
/// query string is ignored): other paths get 404, other methods 405. The same limits and
/// framing rules as `parse` apply.
pub fn parse_metrics(buf: &[u8], limits: &HttpLimits) -> Parsed<()> {
    match head(buf, limits) {
        HeadOutcome::Incomplete => Parsed::Incomplete,
        HeadOutcome::Fatal(e) => Parsed::Fatal(e),
        HeadOutcome::Whole(h) => Parsed::Request {
            consumed: h.consumed,
            call: match (h.method, h.path) {
                ("GET", "/metrics") => Ok(()),
                (m, "/metrics") => Err(HttpError::new(
                    405,
                    "method_not_allowed",
                    format!("/metrics takes GET, not {m}"),
                )),
                (_, p) => Err(HttpError::new(
                    404,
                    "not_found",
                    format!("no route {p}: this port serves GET /metrics only"),
                )),
            },
            keep_alive: h.keep_alive,
        },
    }
}

fn head<'a>(buf: &'a [u8], limits: &HttpLimits) -> HeadOutcome<'a> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.head_bytes_max {
                return HeadOutcome::Fatal(HttpError::new(
                    431,
                    "head_too_large",
                    format!("request head over {} bytes", limits.head_bytes_max),
                ));
            }
            return HeadOutcome::Incomplete;
        }
        Err(e) => {
            return HeadOutcome::Fatal(HttpError::new(
                400,
                "bad_request",
                format!("not an HTTP/1.1 request: {e}"),
            ));
        }
    };
    if head > limits.head_bytes_max {
        return HeadOutcome::Fatal(HttpError::new(
            431,
            "head_too_large",
            format!("request head over {} bytes", limits.head_bytes_max),
        ));
    }
    let mut body_len = 0usize;
    let mut keep_alive = req.version == Some(1);
    let mut tokens = TokenHeaders::default();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("x-ringkv-token") {
            tokens.x_token.push(h.value);
        } else if h.name.eq_ignore_ascii_case("authorization") {
            tokens.authorization.push(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => body_len = n,
                None => {
                    return HeadOutcome::Fatal(HttpError::new(
                        400,
                        "bad_request",
                        "Content-Length is not a number",
                    ));
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return HeadOutcome::Fatal(HttpError::new(
                411,
                "length_required",
                "chunked bodies are not accepted: send Content-Length",
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    if body_len > limits.body_bytes_max {
        // Refused from the head alone: the body is never buffered.
        return HeadOutcome::Fatal(HttpError::new(
            413,
            "too_large",
            format!(
                "body of {body_len} bytes is over the limit of {}",
                limits.body_bytes_max
            ),
        ));
    }
    if buf.len() < head + body_len {
        return HeadOutcome::Incomplete;
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    HeadOutcome::Whole(Head {
        consumed: head + body_len,
        body: &buf[head..head + body_len],
        method,
        path,
        query,
        keep_alive,
        tokens,
    })
}

fn route(
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    tokens: &TokenHeaders<'_>,
    limits: &HttpLimits,
) -> Result<HttpCall, HttpError> {
    if path.starts_with("/v3/") {
        return Ok(HttpCall::Gateway(gateway::route(method, path, body)));
    }
    api_route(method, path, query, body, tokens, limits).map(HttpCall::Api)
}

fn api_route(
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    tokens: &TokenHeaders<'_>,
    limits: &HttpLimits,
) -> Result<ApiCall, HttpError> {
    let want = |m: &str| {
        if method == m {
            Ok(())
        } else {
            Err(HttpError::new(
                405,
                "method_not_allowed",
                format!("{path} takes {m}, not {method}"),
            ))
        }
    };
    let check_key = |k: &[u8]| {
        if k.is_empty() {
            Err(HttpError::new(400, "bad_request", "empty key"))
        } else if k.len() > limits.key_bytes_max {
            Err(HttpError::new(
                413,
                "too_large",
                format!(
                    "key of {} bytes is over key_bytes_max ({})",
                    k.len(),
                    limits.key_bytes_max
                ),
            ))
        } else {
            Ok(())
        }
    };
    match path {
        "/put" => {
            want("POST")?;
            let b: PutBody = json(body)?;
            check_key(b.key.as_bytes())?;
            if b.value.len() > limits.value_bytes_max {
                return Err(HttpError::new(
                    413,
                    "too_large",
                    format!(
                        "value of {} bytes is over value_bytes_max ({})",
                        b.value.len(),
                        limits.value_bytes_max
                    ),
                ));
            }
            Ok(ApiCall::Put {
                key: Bytes::from(b.key),
                value: Bytes::from(b.value),
            })
        }
        "/delete" => {
            want("POST")?;
            let b: KeyBody = json(body)?;
            check_key(b.key.as_bytes())?;
            Ok(ApiCall::Delete {
                key: Bytes::from(b.key),
            })
        }
        "/alarm/disarm" => {
            want("POST")?;
            Ok(ApiCall::Write {
                command: crate::shard::Command::Alarm { nospace: false }.encode(),
            })
        }
        "/compact" => {
            want("POST")?;
            let b: CompactBody = json(body)?;
            Ok(ApiCall::Compact {
                revision: b.revision,
                physical: b.physical,
            })
        }
        "/get" => {
            want("GET")?;
            let mut key = None;
            let mut consistency = None;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_decode(v).ok_or_else(|| {
                    HttpError::new(400, "bad_request", format!("bad %-escape in {k}"))
                })?;
                match k {
                    "key" => key = Some(v),
                    "consistency" => {
                        consistency = Some(match std::str::from_utf8(&v).unwrap_or("") {
                            "linearizable" | "l" => ReadPolicy::Linearizable,
                            "lease" => ReadPolicy::Lease,
                            "eventual" | "s" => ReadPolicy::Eventual,
                            _ => {
                                return Err(HttpError::new(
                                    400,
                                    "bad_request",
                                    format!(
                                        "consistency {:?} is not linearizable, lease or eventual",
                                        String::from_utf8_lossy(&v)
                                    ),
                                ));
                            }
                        })
                    }
                    other => {
                        return Err(HttpError::new(
                            400,
                            "bad_request",
                            format!("unknown query parameter {other:?}"),
                        ));
                    }
                }
            }
            let key = key
                .ok_or_else(|| HttpError::new(400, "bad_request", "missing query parameter key"))?;
            check_key(&key)?;
            Ok(ApiCall::Get {
                key: Bytes::from(key),
                consistency,
            })
        }
        "/status" => {
            want("GET")?;
            Ok(ApiCall::Status)
        }
        "/hash" => {
            want("GET")?;
            let mut revision = 0;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("revision", v)) => {
                        revision = v.parse().map_err(|_| {
                            HttpError::new(
                                400,
                                "bad_request",
                                format!("revision {v:?} is not a number"),
                            )
                        })?
                    }
                    _ => {
                        return Err(HttpError::new(
                            400,
                            "bad_request",
                            format!("unknown query parameter {pair:?}"),
                        ));
                    }
                }
            }
            Ok(ApiCall::Hash { revision })
        }
        "/join" | "/promote" | "/remove" | "/transfer-leader" | "/snapshot" => {
            want("POST")?;
            let op = match path {
                "/join" => {
                    let b: JoinBody = json(body)?;
                    let node_id = node_id(b.node_id)?;
                    if let Err(e) = b.address.parse::<std::net::SocketAddr>() {
                        return Err(HttpError::new(
                            400,
                            "bad_request",
                            format!(
                                "address: {:?} is not an address like 127.0.0.1:9084 ({e})",
                                b.address
                            ),
                        ));
                    }
                    AdminOp::Join {
                        node_id,
                        address: b.address,
                    }
                }
                "/snapshot" => {
                    if !body.iter().all(u8::is_ascii_whitespace) {
                        let _: EmptyBody = json(body)?;
                    }
                    AdminOp::Snapshot
                }
                _ => {
                    let b: NodeIdBody = json(body)?;
                    let node_id = node_id(b.node_id)?;
                    match path {
                        "/promote" => AdminOp::Promote { node_id },
                        "/remove" => AdminOp::Remove { node_id },
                        _ => AdminOp::TransferLeader { node_id },
                    }
                }
            };
            Ok(ApiCall::Admin {
                op,
                token: token(tokens)?,
            })
        }
        other => Err(HttpError::new(
            404,
            "not_found",
            format!(
                "no such path {other:?}: use /put, /get, /delete, /status, /join, /promote, \
                 /remove, /transfer-leader or /snapshot (or etcd's /v3/ gateway paths)"
            ),
        )),
    }
}

fn node_id(id: u64) -> Result<u64, HttpError> {
    if id == 0 {
        Err(HttpError::new(
            400,
            "bad_request",
            "node_id: 0 is reserved; ids start at 1",
        ))
    } else {
        Ok(id)
    }
}

/// The caller's token: `X-Ringkv-Token: T` or `Authorization: Bearer T` (scheme
/// case-insensitive); `None` when neither is sent. Refused: an empty token, an
/// `Authorization` of another scheme, and two different tokens.
fn token(h: &TokenHeaders<'_>) -> Result<Option<String>, HttpError> {
    let bad = |m: String| HttpError::new(400, "bad_request", m);
    let mut found: Option<String> = None;
    let mut take = |t: &[u8], header: &str| -> Result<(), HttpError> {
        let t = std::str::from_utf8(t)
            .map_err(|_| bad(format!("{header}: the token is not UTF-8")))?
            .trim();
        if t.is_empty() {
            return Err(bad(format!("{header}: the token is empty")));
        }
        match &found {
            Some(f) if f != t => Err(bad(format!(
                "{header}: the request carries two different tokens"
            ))),
            _ => {
                found = Some(t.to_string());
                Ok(())
            }
        }
    };
    for v in &h.x_token {
        take(v, "X-Ringkv-Token")?;
    }
    for v in &h.authorization {
        let scheme_len = v.iter().position(|&b| b == b' ').unwrap_or(v.len());
        if !v[..scheme_len].eq_ignore_ascii_case(b"bearer") {
            return Err(bad(format!(
                "Authorization: {:?} is not `Bearer <token>`",
                String::from_utf8_lossy(&v[..scheme_len])
            )));
        }
        take(&v[scheme_len..], "Authorization")?;
    }
    Ok(found)
}

/// The JSON object in `body` as `T`; an error names the field it is about
/// (`node_id: invalid type`). Only an object is accepted (serde would also take an array of
/// the fields in order).
fn json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, HttpError> {
    if let Some(&b) = body.iter().find(|b| !b.is_ascii_whitespace())
        && b != b'{'
    {
        return Err(HttpError::new(
            400,
            "bad_request",
            "bad JSON body: expected an object {...}",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let v: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            HttpError::new(400, "bad_request", format!("bad JSON body: {inner}"))
        } else {
            HttpError::new(
                400,
                "bad_request",
                format!("bad JSON body: {path}: {inner}"),
            )
        }
    })?;
    de.end()
        .map_err(|e| HttpError::new(400, "bad_request", format!("bad JSON body: {e}")))?;
    Ok(v)
}

/// `%XX` escapes and `+` decoded: keys are bytes, so any byte may be escaped.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        500 => "Internal Server Error",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        501 => "Not Implemented",
        507 => "Insufficient Storage",
        _ => "Error",
    }
}

/// A complete HTTP/1.1 response with a body of the given content type (the metrics
/// listener's Prometheus text).
pub fn response_with(status: u16, content_type: &str, body: &str, close: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The HTTP/1.1 response for a call's outcome: its status and JSON body.
pub fn outcome_response(outcome: &Outcome, close: bool) -> Vec<u8> {
    let (status, body) = render_json(outcome);
    response(status, &body, close)
}

/// A complete HTTP/1.1 response with a JSON body.
pub fn response(status: u16, json_body: &str, close: bool) -> Vec<u8> {
    response_with(status, "application/json", json_body, close)
}
