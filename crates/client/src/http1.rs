//! The HTTP/1.1 client: the only one in the workspace. `ringkv top`, `ringkv bench
//! --target http`, the benches and the process-cluster harness (`ringkv-harness`, for the
//! tests and the fault campaign) all ask a node's HTTP API through it.
//!
//! Owns what a client does with HTTP/1.1, in two layers:
//! - a sans-IO core: a request's bytes (`request`) and the reading of responses from
//!   bytes as they arrive (`parse_head`, `Decoder`): the status, where the head ends, the
//!   body by Content-Length, in chunks (etcd's JSON gateway sends its errors and streams
//!   so) or, without either, up to the end of the connection, everything bounded by
//!   `RESPONSE_BYTES_MAX`, and each way a reply can be wrong named (`ReplyError`);
//! - drivers that only move bytes between a socket and that core: `exchange` (one request
//!   on a new blocking connection, all within one timeout), `Conn` (a blocking keep-alive
//!   connection) and `AsyncConn` (a keep-alive connection on any futures-lite stream, such
//!   as glommio's `TcpStream` in `ringkv bench`).
//!
//! Runs on the caller's thread (blocking: `exchange`, `Conn`) or the caller's glommio
//! executor (async: `AsyncConn`, which keeps no timer: the caller races it against its
//! own). Must
//! not touch node internals: it only speaks HTTP on a socket it opens or is given. A
//! transfer coding other than chunked is refused rather than misread.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A reply (head and body) larger than this is refused.
pub const RESPONSE_BYTES_MAX: usize = 4 << 20;
/// Response headers parsed at most.
const RESPONSE_HEADERS_MAX: usize = 32;
/// Bytes asked of a blocking socket per read.
const READ_CHUNK_BYTES: usize = 16 << 10;
/// Bytes asked of an async stream per read: kept small, as each connection holds its own
/// buffer (a bench may have a thousand).
const ASYNC_READ_CHUNK_BYTES: usize = 4 << 10;

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

impl ExchangeError {
    /// What happened, whichever side of the send it was.
    pub fn message(&self) -> &str {
        match self {
            ExchangeError::NotSent(m) | ExchangeError::AfterSend(m) => m,
        }
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Why the bytes a server sent are not a reply this client takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// Not an HTTP/1.x response head (a bad status line, a bad header, too many headers):
    /// httparse's reason.
    NotHttp(String),
    /// A Content-Length that is not a number.
    BadContentLength,
    /// A Transfer-Encoding other than chunked.
    TransferEncoding,
    /// A chunked body whose framing is broken (a size that is not hex, a chunk without
    /// its CRLF).
    BadChunk,
    /// Head and body over the limit.
    TooLarge { bytes_max: usize },
    /// The connection ended before the first byte of a reply.
    ClosedBeforeReply,
    /// The connection ended inside a reply's head or its Content-Length body.
    ClosedInReply,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::NotHttp(e) => write!(f, "the reply is not HTTP/1.1: {e}"),
            ReplyError::BadContentLength => {
                f.write_str("the reply's Content-Length is not a number")
            }
            ReplyError::TransferEncoding => {
                f.write_str("the reply uses a Transfer-Encoding other than chunked")
            }
            ReplyError::BadChunk => f.write_str("the reply's chunked body is malformed"),
            ReplyError::TooLarge { bytes_max } => {
                write!(
                    f,
                    "the reply is over response_bytes_max ({bytes_max} bytes)"
                )
            }
            ReplyError::ClosedBeforeReply => {
                f.write_str("the connection was closed before any reply")
            }
            ReplyError::ClosedInReply => {
                f.write_str("the connection was closed in the middle of the reply")
            }
        }
    }
}

/// The bytes of one request to `host` with a JSON `body` (its length always given, so the
/// server never waits for more). `headers`: extra (name, value) pairs. `close`: ask the
/// server to close the connection after its reply.
///
/// Panics when the method, target or a header holds CR or LF: callers check what they
/// take from users, and anything else is a bug that would split the request.
pub fn request(
    host: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let crlf = |s: &str| s.contains(['\r', '\n']);
    assert!(
        !crlf(host) && !crlf(method) && !crlf(target),
        "a request line or host holds CR or LF"
    );
    assert!(
        headers.iter().all(|(n, v)| !crlf(n) && !crlf(v)),
        "a header holds CR or LF"
    );
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let connection = if close { "Connection: close\r\n" } else { "" };
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{connection}{extra}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Where a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// Content-Length bytes after the head.
    Bytes(usize),
    /// `Transfer-Encoding: chunked`: the body ends with its zero-size chunk.
    Chunked,
    /// No length given: the body runs to the end of the connection.
    ToClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the head, its blank line included: the body starts here.
    pub len: usize,
    pub body: BodyLength,
    /// The server closes the connection after this reply (`Connection: close`, or a body
    /// that runs to the end).
    pub close: bool,
}

/// The response head at the start of `buf`; `None` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, ReplyError> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ReplyError::NotHttp(e.to_string())),
    };
    let mut body = BodyLength::ToClose;
    let mut chunked = false;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(ReplyError::BadContentLength)?;
            body = BodyLength::Bytes(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ReplyError::TransferEncoding);
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= std::str::from_utf8(h.value)
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        }
    }
    if chunked {
        // It overrides any Content-Length (RFC 9112, 6.3).
        body = BodyLength::Chunked;
    }
    Ok(Some(Head {
        // httparse only completes a head with a status code.
        status: resp.code.unwrap_or(0),
        len,
        body,
        close: close || body == BodyLength::ToClose,
    }))
}

/// Reads responses from the bytes of one connection as they arrive (sans-IO): a driver
/// feeds it what it reads (at most `room()` bytes at a time), takes each whole response
/// with `next_response`, and calls `finish` when the connection ends.
#[derive(Debug)]
pub struct Decoder {
    /// Bytes read and not yet taken as a response.
    buf: Vec<u8>,
    bytes_max: usize,
    /// The last response taken said the server closes the connection after it.
    closing: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder refusing replies over `RESPONSE_BYTES_MAX`.
    pub fn new() -> Self {
        Self::with_limit(RESPONSE_BYTES_MAX)
    }

    pub fn with_limit(bytes_max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(4096),
            bytes_max,
            closing: false,
        }
    }

    /// How many more bytes it takes now: a driver reads no more than this.
    pub fn room(&self) -> usize {
        self.bytes_max.saturating_sub(self.buf.len())
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole response, taken out of what was fed (bytes after it stay for the
    /// next one); `None`: more bytes are needed (or, for a body without a length, the
    /// end of the connection: `finish`).
    pub fn next_response(&mut self) -> Result<Option<Response>, ReplyError> {
        let too_large = ReplyError::TooLarge {
            bytes_max: self.bytes_max,
        };
        let head = match parse_head(&self.buf)? {
            Some(h) => h,
            None if self.buf.len() >= self.bytes_max => return Err(too_large),
            None => return Ok(None),
        };
        match head.body {
            BodyLength::Bytes(n) => {
                // Refused at once, before a large body is read at all.
                let end = head.len.checked_add(n).ok_or(too_large.clone())?;
                if end > self.bytes_max {
                    return Err(too_large);
                }
                if self.buf.len() < end {
                    return Ok(None);
                }
                let body = self.buf[head.len..end].to_vec();
                Ok(Some(self.take(head, end, body)))
            }
            BodyLength::Chunked => match dechunk(&self.buf[head.len..])? {
                Some((n, body)) => Ok(Some(self.take(head, head.len + n, body))),
                None if self.buf.len() >= self.bytes_max => Err(too_large),
                None => Ok(None),
            },
            BodyLength::ToClose if self.buf.len() >= self.bytes_max => Err(too_large),
            BodyLength::ToClose => Ok(None),
        }
    }

    /// The connection ended: the response that ran to its end, or why there is none.
    pub fn finish(&mut self) -> Result<Response, ReplyError> {
        if self.buf.is_empty() {
            return Err(ReplyError::ClosedBeforeReply);
        }
        if let Some(r) = self.next_response()? {
            return Ok(r);
        }
        match parse_head(&self.buf)? {
            Some(head) if head.body == BodyLength::ToClose => {
                let end = self.buf.len();
                let body = self.buf[head.len..].to_vec();
                Ok(self.take(head, end, body))
            }
            _ => Err(ReplyError::ClosedInReply),
        }
    }

    /// Whether the last response taken said the server closes the connection after it.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// The response of `head` and `body`, whose bytes end at `end`.
    fn take(&mut self, head: Head, end: usize, body: Vec<u8>) -> Response {
        let body = String::from_utf8_lossy(&body).into_owned();
        self.buf.drain(..end);
        self.closing = head.close;
        Response {
            status: head.status,
            body,
        }
    }
}

/// A chunked body at the start of `buf`: the bytes it takes (trailers included) and its
/// data; `None` while it is incomplete.
fn dechunk(buf: &[u8]) -> Result<Option<(usize, Vec<u8>)>, ReplyError> {
    let line_end = |from: usize| {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i)
    };
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let Some(eol) = line_end(at) else {
            return Ok(None);
        };
        // The size, then maybe `;extensions`.
        let size = buf[at..eol]
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        let size = std::str::from_utf8(size)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or(ReplyError::BadChunk)?;
        at = eol + 2;
        if size == 0 {
            // Trailer lines up to an empty one.
            loop {
                let Some(eol) = line_end(at) else {
                    return Ok(None);
                };
                let empty = eol == at;
                at = eol + 2;
                if empty {
                    return Ok(Some((at, data)));
                }
            }
        }
        let end = at.checked_add(size).ok_or(ReplyError::BadChunk)?;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ReplyError::BadChunk);
        }
        data.extend_from_slice(&buf[at..end]);
        at = end + 2;
    }
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
    let deadline = Instant::now() + timeout;
    let stream = connect(addr, deadline).map_err(ExchangeError::NotSent)?;
    let req = request(addr, method, target, headers, body, true);
    Conn::new(stream, addr).send(&req, deadline, timeout)
}

/// A blocking keep-alive connection: one request at a time, each answered before the
/// next is sent.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    host: String,
    decoder: Decoder,
    open: bool,
}

impl Conn {
    /// Connects to `addr` within `timeout`.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Conn, String> {
        let stream = connect(addr, Instant::now() + timeout)?;
        // Small requests one at a time: waiting to fill a segment only adds latency.
        let _ = stream.set_nodelay(true);
        Ok(Conn::new(stream, addr))
    }

    fn new(stream: TcpStream, host: &str) -> Conn {
        Conn {
            stream,
            host: host.to_string(),
            decoder: Decoder::new(),
            open: true,
        }
    }

    /// One request and its reply, within `timeout`. (No extra headers: none of the
    /// keep-alive users needs any.)
    pub fn exchange(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, ExchangeError> {
        if !self.open {
            return Err(ExchangeError::NotSent(CLOSED.into()));
        }
        let req = request(&self.host, method, target, &[], body, false);
        self.send(&req, Instant::now() + timeout, timeout)
    }

    /// Whether another request may be sent: no error so far, and the server did not say
    /// it closes.
    pub fn is_open(&self) -> bool {
        self.open
    }

    fn send(
        &mut self,
        req: &[u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Response, ExchangeError> {
        let after = ExchangeError::AfterSend;
        // Closed unless the reply comes whole and lets the connection stay open.
        self.open = false;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(after(timed_out("sending", timeout)));
        }
        let sent = self
            .stream
            .set_write_timeout(Some(left))
            .and_then(|()| self.stream.write_all(req));
        let reply = self.read_reply(deadline, timeout);
        let r = match (sent, reply) {
            (_, Ok(r)) => r,
            // A server may refuse a request before reading all of it (413) and close the
            // connection, failing the send: its reply, when whole, still counts.
            (Err(e), Err(_)) => return Err(after(io_error("sending", e, timeout))),
            (Ok(()), Err(e)) => return Err(after(e)),
        };
        self.open = !self.decoder.closing();
        Ok(r)
    }

    fn read_reply(&mut self, deadline: Instant, timeout: Duration) -> Result<Response, String> {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        loop {
            if let Some(r) = self.decoder.next_response().map_err(|e| e.to_string())? {
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out("waiting for the reply", timeout));
            }
            let room = self.decoder.room().min(chunk.len());
            let n = self
                .stream
                .set_read_timeout(Some(left))
                .and_then(|()| self.stream.read(&mut chunk[..room]))
                .map_err(|e| io_error("waiting for the reply", e, timeout))?;
            if n == 0 {
                return self.decoder.finish().map_err(|e| e.to_string());
            }
            self.decoder.feed(&chunk[..n]);
        }
    }
}

/// A keep-alive connection on an async stream (glommio's `TcpStream` in `ringkv bench`):
/// one request at a time. It keeps no timer: the caller races a call against its own, and
/// drops the connection when it gives up (a reply may still be on its way).
pub struct AsyncConn<S> {
    stream: S,
    host: String,
    decoder: Decoder,
    chunk: Box<[u8]>,
    open: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncConn<S> {
    /// Speaks HTTP on `stream`, a connection to `host` (for the `Host` header).
    pub fn new(stream: S, host: &str) -> Self {
        Self {
            stream,
            host: host.to_string(),
            decoder: Decoder::new(),
            chunk: vec![0; ASYNC_READ_CHUNK_BYTES].into_boxed_slice(),
            open: true,
        }
    }

    /// Whether another request may be sent: no error so far, and the server did not say
    /// it closes.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// One request and its reply (no extra headers, as in `Conn`).
    pub async fn exchange(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<Response, ExchangeError> {
        if !self.open {
            return Err(ExchangeError::NotSent(CLOSED.into()));
        }
        let req = request(&self.host, method, target, &[], body, false);
        self.open = false;
        let sent = self.stream.write_all(&req).await;
        let sent = match sent {
            Ok(()) => self.stream.flush().await,
            Err(e) => Err(e),
        };
        let reply = self.read_reply().await;
        let r = match (sent, reply) {
            (_, Ok(r)) => r,
            // As in the blocking `Conn`: an early reply to a request not read whole.
            (Err(e), Err(_)) => {
                return Err(ExchangeError::AfterSend(format!("sending failed: {e}")));
            }
            (Ok(()), Err(e)) => return Err(ExchangeError::AfterSend(e)),
        };
        self.open = !self.decoder.closing();
        Ok(r)
    }

    async fn read_reply(&mut self) -> Result<Response, String> {
        loop {
            if let Some(r) = self.decoder.next_response().map_err(|e| e.to_string())? {
                return Ok(r);
            }
            let room = self.decoder.room().min(self.chunk.len());
            let n = self
                .stream
                .read(&mut self.chunk[..room])
                .await
                .map_err(|e| format!("waiting for the reply failed: {e}"))?;
            if n == 0 {
                return self.decoder.finish().map_err(|e| e.to_string());
            }
            self.decoder.feed(&self.chunk[..n]);
        }
    }
}

const CLOSED: &str =
    "the connection is closed (an earlier exchange failed or the server closed it)";

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

fn io_error(doing: &str, e: io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(doing, timeout),
        _ => format!("{doing} failed: {e}"),
    }
}

fn timed_out(doing: &str, timeout: Duration) -> String {
    format!("timed out {doing} ({} ms)", timeout.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Option<Response>, ReplyError> {
        d.feed(bytes);
        d.next_response()
    }

    fn ok(status: u16, body: &str) -> Response {
        Response {
            status,
            body: body.into(),
        }
    }

    #[test]
    fn a_request_gives_its_length_and_asks_to_close_only_when_told() {
        let r = request(
            "h:1",
            "POST",
            "/put",
            &[("X-Ringkv-Token", "t")],
            b"{}",
            true,
        );
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /put HTTP/1.1\r\nHost: h:1\r\nConnection: close\r\nX-Ringkv-Token: t\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        let r = String::from_utf8(request("h:1", "GET", "/status", &[], b"", false)).unwrap();
        assert!(!r.contains("Connection"), "{r}");
        assert!(r.ends_with("Content-Length: 0\r\n\r\n"), "{r}");
    }

    #[test]
    #[should_panic(expected = "a header holds CR or LF")]
    fn a_header_with_a_line_break_is_a_bug() {
        request("h", "GET", "/", &[("X", "a\r\nEvil: 1")], b"", true);
    }

    #[test]
    fn a_content_length_body_ends_where_it_says_and_leaves_the_next_reply() {
        let mut d = Decoder::new();
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\n\
                    content-length: 2\r\nConnection: close\r\n\r\n{}";
        assert_eq!(decode_all(&mut d, two), Ok(Some(ok(200, "hello"))));
        assert!(!d.closing());
        assert_eq!(d.next_response(), Ok(Some(ok(404, "{}"))));
        assert!(d.closing(), "Connection: close is noticed");
        assert_eq!(d.next_response(), Ok(None));
        assert_eq!(d.finish(), Err(ReplyError::ClosedBeforeReply));
    }

    #[test]
    fn a_reply_split_across_reads_is_whole_only_at_its_last_byte() {
        let all = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}";
        // Every split point, byte by byte: never early, never twice.
        for cut in 1..all.len() {
            let mut d = Decoder::new();
            assert_eq!(decode_all(&mut d, &all[..cut]), Ok(None), "cut at {cut}");
            assert_eq!(
                decode_all(&mut d, &all[cut..]),
                Ok(Some(ok(503, "{\"a\":\"bcd\"}"))),
                "cut at {cut}"
            );
        }
        let mut d = Decoder::new();
        for b in all {
            let got = decode_all(&mut d, &[*b]).unwrap();
            assert_eq!(got.is_some(), std::ptr::eq(b, all.last().unwrap()));
        }
    }

    #[test]
    fn without_a_length_the_body_runs_to_the_close() {
        let mut d = Decoder::new();
        assert_eq!(
            decode_all(&mut d, b"HTTP/1.1 200 OK\r\n\r\nfirst "),
            Ok(None)
        );
        assert_eq!(decode_all(&mut d, b"second"), Ok(None));
        assert_eq!(d.finish(), Ok(ok(200, "first second")));
        assert!(d.closing());
        // A Content-Length reply cut short is not a reply.
        let mut d = Decoder::new();
        d.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
        assert_eq!(d.next_response(), Ok(None));
        assert_eq!(d.finish(), Err(ReplyError::ClosedInReply));
        let mut d = Decoder::new();
        d.feed(b"HTTP/1.1 200 O");
        assert_eq!(d.finish(), Err(ReplyError::ClosedInReply));
    }

    #[test]
    fn a_bad_head_is_named() {
        let bad = |bytes: &[u8]| Decoder::new().finish_after(bytes);
        assert!(matches!(
            bad(b"HTTP/1.1 2x0 OK\r\n\r\n"),
            Err(ReplyError::NotHttp(_))
        ));
        assert!(matches!(
            bad(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ReplyError::NotHttp(_))
        ));
        assert_eq!(
            bad(b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n"),
            Err(ReplyError::BadContentLength)
        );
        assert_eq!(
            bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(ReplyError::TransferEncoding)
        );
        assert_eq!(
            bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n"),
            Err(ReplyError::BadChunk)
        );
        assert_eq!(
            bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n"),
            Err(ReplyError::BadChunk)
        );
        let e = bad(b"HTTP/1.1 2x0 OK\r\n\r\n").unwrap_err().to_string();
        assert!(e.starts_with("the reply is not HTTP/1.1: "), "{e}");
    }

    impl Decoder {
        fn finish_after(&mut self, bytes: &[u8]) -> Result<Response, ReplyError> {
            self.feed(bytes);
            self.next_response()?;
            self.finish()
        }
    }

    #[test]
    fn chunked_bodies_are_joined_with_trailers_and_extensions_skipped() {
        // As etcd's gateway answers an error: chunks, then a trailer.
        let reply = b"HTTP/1.1 400 Bad Request\r\nTrailer: Grpc-Trailer-Content-Type\r\n\
                      Transfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\nA\r\n, world!!!\r\n\
                      0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n";
        let mut both = reply.to_vec();
        both.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        // Byte by byte: nothing is taken before the body's end.
        let mut d = Decoder::new();
        for (i, b) in both.iter().enumerate() {
            let r = decode_all(&mut d, &[*b]).unwrap();
            if i + 1 == reply.len() {
                assert_eq!(r, Some(ok(400, "hello, world!!!")));
            } else if i + 1 == both.len() {
                assert_eq!(r, Some(ok(200, "ok")));
            } else {
                assert_eq!(r, None, "at byte {i}");
            }
        }
        // Cut short: the connection ended inside the reply.
        assert_eq!(
            Decoder::new().finish_after(&reply[..reply.len() - 2]),
            Err(ReplyError::ClosedInReply)
        );
    }

    #[test]
    fn a_reply_over_the_limit_is_refused_before_its_body_is_read() {
        // The head announces too much: refused at once.
        let mut d = Decoder::with_limit(64);
        assert_eq!(
            decode_all(&mut d, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
            Err(ReplyError::TooLarge { bytes_max: 64 })
        );
        // A body without a length that grows past it.
        let mut d = Decoder::with_limit(64);
        assert_eq!(decode_all(&mut d, b"HTTP/1.1 200 OK\r\n\r\n"), Ok(None));
        assert_eq!(d.room(), 64 - 19);
        assert_eq!(
            decode_all(&mut d, &[b'x'; 64 - 19]),
            Err(ReplyError::TooLarge { bytes_max: 64 })
        );
        assert_eq!(d.room(), 0, "a driver reads no more");
        // A head that never ends.
        let mut d = Decoder::with_limit(64);
        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        endless.extend_from_slice(&[b'a'; 60]);
        assert_eq!(
            decode_all(&mut d, &endless),
            Err(ReplyError::TooLarge { bytes_max: 64 })
        );
        // Exactly at the limit is taken.
        let mut d = Decoder::with_limit(41);
        assert_eq!(
            decode_all(&mut d, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"),
            Ok(Some(ok(200, "abc")))
        );
        assert_eq!(
            ReplyError::TooLarge { bytes_max: 64 }.to_string(),
            "the reply is over response_bytes_max (64 bytes)"
        );
    }

    /// A one-connection server on a thread: reads one request, answers `reply` (in
    /// pieces, with a pause between them), then closes.
    fn serve_once(reply: &'static [&'static [u8]]) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            for piece in reply {
                s.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        addr
    }

    #[test]
    fn blocking_exchange_reads_a_reply_in_pieces_and_to_the_close() {
        let addr = serve_once(&[b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 2\r\n\r\n{", b"}"]);
        let r = exchange(&addr, "GET", "/status", &[], b"", Duration::from_secs(5));
        assert_eq!(r, Ok(ok(200, "{}")));
        let addr = serve_once(&[b"HTTP/1.1 200 OK\r\n\r\nto the", b" end"]);
        let r = exchange(&addr, "GET", "/metrics", &[], b"", Duration::from_secs(5));
        assert_eq!(r, Ok(ok(200, "to the end")));
        let addr = serve_once(&[]);
        let r = exchange(&addr, "GET", "/", &[], b"", Duration::from_secs(5));
        assert_eq!(
            r,
            Err(ExchangeError::AfterSend(
                "the connection was closed before any reply".into()
            ))
        );
    }

    #[test]
    fn blocking_exchange_times_out_and_says_nothing_was_sent_when_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let r = exchange(&addr, "GET", "/", &[], b"", Duration::from_millis(100));
        assert_eq!(
            r,
            Err(ExchangeError::AfterSend(
                "timed out waiting for the reply (100 ms)".into()
            ))
        );
        drop(l);
        let r = exchange(&addr, "GET", "/", &[], b"", Duration::from_secs(1));
        assert!(matches!(r, Err(ExchangeError::NotSent(_))), "{r:?}");
    }

    /// An async stream that hands out `reads` one per poll and keeps what is written.
    struct Scripted {
        reads: std::collections::VecDeque<&'static [u8]>,
        written: Vec<u8>,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let next = self.reads.pop_front().unwrap_or(b"");
            assert!(next.len() <= buf.len());
            buf[..next.len()].copy_from_slice(next);
            std::task::Poll::Ready(Ok(next.len()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn an_async_keep_alive_connection_takes_replies_in_pieces_and_stops_at_the_close() {
        let s = Scripted {
            reads: [
                &b"HTTP/1.1 200 OK
Conte"[..],
                b"nt-Length: 2

{",
                b"}HTTP/1.1 404 Not Found
Content-Length: 0

",
                b"HTTP/1.1 200 OK

rest",
            ]
            .into(),
            written: Vec::new(),
        };
        let mut c = AsyncConn::new(s, "b");
        futures_lite::future::block_on(async {
            assert_eq!(c.exchange("GET", "/1", b"").await, Ok(ok(200, "{}")));
            // The second reply came with the first one's last read.
            assert_eq!(c.exchange("GET", "/2", b"").await, Ok(ok(404, "")));
            assert!(c.is_open());
            assert_eq!(c.exchange("POST", "/3", b"x").await, Ok(ok(200, "rest")));
            assert!(!c.is_open(), "a body to the close ends the connection");
            assert!(matches!(
                c.exchange("GET", "/4", b"").await,
                Err(ExchangeError::NotSent(_))
            ));
        });
        let sent = String::from_utf8(c.stream.written.clone()).unwrap();
        assert_eq!(
            sent.matches(" HTTP/1.1\r\nHost: b\r\n").count(),
            3,
            "{sent}"
        );
        assert!(sent.ends_with("Content-Length: 1\r\n\r\nx"), "{sent}");
    }

    #[test]
    fn a_keep_alive_connection_serves_several_exchanges_until_the_server_closes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            for reply in [
                &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"[..],
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb",
            ] {
                let _ = s.read(&mut buf).unwrap();
                s.write_all(reply).unwrap();
            }
        });
        let t = Duration::from_secs(5);
        let mut c = Conn::connect(&addr, t).unwrap();
        assert_eq!(c.exchange("GET", "/a", b"", t), Ok(ok(200, "a")));
        assert!(c.is_open());
        assert_eq!(c.exchange("GET", "/b", b"", t), Ok(ok(503, "b")));
        assert!(!c.is_open());
        assert!(matches!(
            c.exchange("GET", "/c", b"", t),
            Err(ExchangeError::NotSent(_))
        ));
    }
}
