//! The HTTP API for `curl`: request parsing with limits, routing to API calls, JSON replies.
//!
//! Pure (bytes in, calls and bytes out), used by the connection tasks on the shard
//! executors. Must not touch the Raft core or shard state: it only turns requests into
//! `ApiCall`s and `Reply`s into bytes.
//!
//! Routes (the node issue): `POST /put {"key","value"}`, `POST /delete {"key"}`,
//! `GET /get?key=K[&consistency=linearizable|lease|eventual]`, `GET /status`. Errors are
//! JSON `{"error": "...", "code": "..."}` with 400, 404, 405, 413; the node adds 503 and 504.

use serde::Deserialize;

use crate::raft::ReadPolicy;

/// Limits applied while parsing (from `[limits]`).
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub head_bytes_max: usize,
    pub body_bytes_max: usize,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
}

/// A call the node must carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiCall {
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// `consistency: None` means the node's `default_policy`.
    Get {
        key: String,
        consistency: Option<ReadPolicy>,
    },
    Status,
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

/// Outcome of looking at the start of a connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet.
    Incomplete,
    /// A request of `consumed` bytes: the call, or the error to answer it with.
    /// `keep_alive`: the client did not ask to close.
    Request {
        consumed: usize,
        call: Result<ApiCall, HttpError>,
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

/// Parses one request from the start of `buf`.
pub fn parse(buf: &[u8], limits: &HttpLimits) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.head_bytes_max {
                return Parsed::Fatal(HttpError::new(
                    431,
                    "head_too_large",
                    format!("request head over {} bytes", limits.head_bytes_max),
                ));
            }
            return Parsed::Incomplete;
        }
        Err(e) => {
            return Parsed::Fatal(HttpError::new(
                400,
                "bad_request",
                format!("not an HTTP/1.1 request: {e}"),
            ));
        }
    };
    if head > limits.head_bytes_max {
        return Parsed::Fatal(HttpError::new(
            431,
            "head_too_large",
            format!("request head over {} bytes", limits.head_bytes_max),
        ));
    }
    let mut body_len = 0usize;
    let mut keep_alive = req.version == Some(1);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => body_len = n,
                None => {
                    return Parsed::Fatal(HttpError::new(
                        400,
                        "bad_request",
                        "Content-Length is not a number",
                    ));
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Fatal(HttpError::new(
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
        return Parsed::Fatal(HttpError::new(
            413,
            "too_large",
            format!(
                "body of {body_len} bytes is over the limit of {}",
                limits.body_bytes_max
            ),
        ));
    }
    if buf.len() < head + body_len {
        return Parsed::Incomplete;
    }
    let body = &buf[head..head + body_len];
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Parsed::Request {
        consumed: head + body_len,
        call: route(method, path, query, body, limits),
        keep_alive,
    }
}

fn route(
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
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
    let check_key = |k: &str| {
        if k.len() > limits.key_bytes_max {
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
            check_key(&b.key)?;
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
                key: b.key,
                value: b.value,
            })
        }
        "/delete" => {
            want("POST")?;
            let b: KeyBody = json(body)?;
            check_key(&b.key)?;
            Ok(ApiCall::Delete { key: b.key })
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
                        consistency = Some(match v.as_str() {
                            "linearizable" | "l" => ReadPolicy::Linearizable,
                            "lease" => ReadPolicy::Lease,
                            "eventual" | "s" => ReadPolicy::Eventual,
                            other => {
                                return Err(HttpError::new(
                                    400,
                                    "bad_request",
                                    format!(
                                        "consistency {other:?} is not linearizable, lease or eventual"
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
            Ok(ApiCall::Get { key, consistency })
        }
        "/status" => {
            want("GET")?;
            Ok(ApiCall::Status)
        }
        other => Err(HttpError::new(
            404,
            "not_found",
            format!("no such path {other:?}: use /put, /get, /delete or /status"),
        )),
    }
}

fn json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body)
        .map_err(|e| HttpError::new(400, "bad_request", format!("bad JSON body: {e}")))
}

fn percent_decode(s: &str) -> Option<String> {
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
    String::from_utf8(out).ok()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        500 => "Internal Server Error",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "Error",
    }
}

/// A complete HTTP/1.1 response with a JSON body.
pub fn response(status: u16, json_body: &str, close: bool) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{json_body}",
        reason(status),
        json_body.len(),
        if close { "connection: close\r\n" } else { "" }
    )
    .into_bytes()
}
