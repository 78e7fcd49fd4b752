//! The server side of HTTP/2 as gRPC uses it, as a state machine: bytes in, events out;
//! replies in, bytes out (RFC 9113, with HPACK from `loona-hpack`).
//!
//! Owns one connection's protocol state: the preface and SETTINGS exchange, frame
//! parsing, header blocks (HEADERS and CONTINUATION, HPACK with the client's dynamic
//! table), open streams and their limits, flow control both ways, PING and GOAWAY, and
//! the encoding of gRPC's reply headers, messages and trailers. It replaced the h2 crate:
//! a gRPC unary call needs a fraction of a general HTTP/2 stack, and h2's per-request
//! machinery (request objects, stream store, send queues, one task per stream's reply)
//! cost more server CPU than the call itself.
//!
//! What it does not do: server push, priorities (read and ignored), HPACK's dynamic
//! table on the way out (replies are literal fields without indexing, valid whatever
//! table size the client allows). It never refuses a client for exceeding the windows it
//! advertised: it releases every DATA byte as it arrives, so a stream's buffered bytes
//! are bounded by the caller (the gRPC deframer's message limit), not by windows.
//!
//! Pure: no I/O, no clock. `node::grpc` drives one per connection on the connection's
//! shard executor. Must not touch node state.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use loona_hpack::Decoder;

/// What every HTTP/2 connection starts with.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// HTTP/2 error codes (RFC 9113 section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    Compression = 0x9,
    EnhanceYourCalm = 0xb,
}

/// The protocol's default frame size, which this server also advertises.
const FRAME_BYTES_DEFAULT: usize = 16_384;
/// The largest frame size a peer may announce.
const FRAME_BYTES_LIMIT: usize = (1 << 24) - 1;
/// The window every stream and the connection start with.
const WINDOW_DEFAULT: i64 = 65_535;
/// The largest window the protocol allows.
const WINDOW_LIMIT: i64 = (1 << 31) - 1;
/// The dynamic table size a client's HPACK encoder may use (the protocol's default).
const HEADER_TABLE_BYTES: usize = 4096;

/// This server's side of the connection: what it advertises and enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); one more
    /// is refused (RST_STREAM REFUSED_STREAM) and the client may retry it.
    pub streams_max: u32,
    /// The window each stream starts with (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window_bytes: u32,
    /// The connection's window.
    pub connection_window_bytes: u32,
    /// The largest decoded header list of a request (SETTINGS_MAX_HEADER_LIST_SIZE);
    /// a larger one is answered with HTTP status 431.
    pub header_list_bytes_max: u32,
    /// The largest header block as received (HEADERS plus CONTINUATION frames): a client
    /// that sends more is a protocol violation, not a big request.
    pub header_block_bytes_max: usize,
    /// Bytes waiting to be written before the connection is given up on (a client that
    /// sends but never reads).
    pub output_bytes_max: usize,
}

/// A request's head: what gRPC needs of its headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub path: String,
    /// `content-type` starts with `application/grpc`.
    pub grpc: bool,
    /// `grpc-timeout`, when given and valid.
    pub timeout: Option<Duration>,
    /// `hasleader: true` (etcd's clients ask to fail at once without a leader).
    pub wants_leader: bool,
}

/// What the client did, for the caller to act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A new stream: a call. `end_stream`: it carries no body.
    Call {
        stream: u32,
        head: Head,
        end_stream: bool,
    },
    /// Body bytes of an open stream (already released to the client's flow control).
    Data {
        stream: u32,
        data: Bytes,
        end_stream: bool,
    },
    /// The client ended the stream without a body frame (trailers or an empty DATA
    /// frame would come as `Data`; this is a HEADERS frame with END_STREAM).
    End { stream: u32 },
    /// The client cancelled the stream (or it broke the protocol): forget it; any reply
    /// is dropped.
    Reset { stream: u32 },
}

/// Why a connection ends: a GOAWAY with this reason has been queued for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnError {
    pub reason: Reason,
    pub detail: String,
}

/// A reply's end: the gRPC status, or a bare HTTP status for a request that is not gRPC.
pub enum End<'a> {
    Grpc { code: u32, message: &'a str },
    Http(u16),
}

struct Stream {
    /// What the client may still be sent on this stream (its window).
    send_window: i64,
    /// The client sent END_STREAM.
    recv_closed: bool,
    /// The reply's HEADERS went out.
    headers_sent: bool,
    /// DATA frames' payloads waiting for window.
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    /// The trailers, once the reply is complete, encoded, waiting for `queue` to drain.
    trailers: Option<Bytes>,
    /// DATA bytes received since the last WINDOW_UPDATE for this stream.
    recv_unacked: u32,
    /// On `Conn::blocked`.
    blocked: bool,
}

/// A header block being gathered: a HEADERS frame and its CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    fragment: BytesMut,
}

/// One HTTP/2 server connection.
pub struct Conn {
    limits: Limits,
    /// Bytes received and not parsed yet.
    rx: BytesMut,
    /// Bytes of the client preface still to check.
    preface_left: usize,
    decoder: Decoder<'static>,
    block: Option<Block>,
    streams: HashMap<u32, Stream>,
    /// The highest stream id the client opened.
    last_stream: u32,
    /// The client's settings.
    peer_frame_bytes_max: usize,
    peer_initial_window: i64,
    /// What the client may still be sent on the connection.
    send_window: i64,
    /// DATA bytes received since the last connection WINDOW_UPDATE.
    recv_unacked: u32,
    /// Streams with DATA waiting for window, oldest first, each once (may hold ids of
    /// streams since gone).
    blocked: VecDeque<u32>,
    out: BytesMut,
    /// A GOAWAY went out: nothing more is read.
    closed: bool,
    /// The client's first SETTINGS frame arrived.
    settings_seen: bool,
}

impl Conn {
    /// A connection whose server preface (SETTINGS and the connection's window) is
    /// queued for output.
    pub fn new(limits: Limits) -> Conn {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_BYTES);
        let mut c = Conn {
            limits,
            rx: BytesMut::with_capacity(FRAME_BYTES_DEFAULT + FRAME_HEADER_BYTES),
            preface_left: PREFACE.len(),
            decoder,
            block: None,
            streams: HashMap::new(),
            last_stream: 0,
            peer_frame_bytes_max: FRAME_BYTES_DEFAULT,
            peer_initial_window: WINDOW_DEFAULT,
            send_window: WINDOW_DEFAULT,
            recv_unacked: 0,
            blocked: VecDeque::new(),
            out: BytesMut::with_capacity(16 << 10),
            closed: false,
            settings_seen: false,
        };
        let settings = [
            (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_MAX_CONCURRENT_STREAMS, limits.streams_max),
            (SETTINGS_INITIAL_WINDOW_SIZE, limits.stream_window_bytes),
            (SETTINGS_MAX_HEADER_LIST_SIZE, limits.header_list_bytes_max),
        ];
        c.frame_head(settings.len() * 6, SETTINGS, 0, 0);
        for (id, v) in settings {
            c.out.put_u16(id);
            c.out.put_u32(v);
        }
        let grow = i64::from(limits.connection_window_bytes) - WINDOW_DEFAULT;
        if grow > 0 {
            c.window_update(0, grow as u32);
        }
        c
    }

    /// Parses `data` (the next bytes from the client) and appends what the client did to
    /// `events`. After an error the connection is over: a GOAWAY is queued for output.
    pub fn feed(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<(), ConnError> {
        if self.closed {
            return Ok(());
        }
        let r = self.parse(data, events);
        if let Err(e) = &r {
            self.go_away(e.reason);
        }
        r
    }

    /// Bytes to write to the client (taken: the next call returns only newer ones).
    pub fn take_output(&mut self) -> BytesMut {
        self.out.split()
    }

    /// The client's preface and first SETTINGS arrived.
    pub fn preface_done(&self) -> bool {
        self.preface_left == 0 && self.settings_seen
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The connection sent GOAWAY: it reads no more.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Output waiting beyond `limits.output_bytes_max`: the client does not read.
    pub fn output_overflow(&self) -> bool {
        self.out.len() > self.limits.output_bytes_max
    }

    /// The stream is open for a reply.
    pub fn is_open(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Bytes of the stream's reply waiting for the client's window (None: the stream is
    /// gone).
    pub fn queued_bytes(&self, stream: u32) -> Option<usize> {
        self.streams.get(&stream).map(|s| s.queued_bytes)
    }

    /// Sends one framed gRPC message on `stream` (its reply headers first, once).
    /// False when the stream is gone (reset by the client, or already ended).
    pub fn send_message(&mut self, stream: u32, msg: Bytes) -> bool {
        let Some(s) = self.streams.get_mut(&stream) else {
            return false;
        };
        if s.trailers.is_some() {
            return false;
        }
        if !s.headers_sent {
            s.headers_sent = true;
            self.headers_frame(stream, REPLY_HEAD, false);
        }
        let s = self.streams.get_mut(&stream).expect("checked above");
        let was_idle = s.queue.is_empty();
        s.queued_bytes += msg.len();
        s.queue.push_back(msg);
        if was_idle {
            self.flush_stream(stream);
        }
        true
    }

    /// Ends `stream`'s reply: trailers with the gRPC status (a trailers-only reply when
    /// no message went out), or a bare HTTP status. Sent once the stream's messages are.
    pub fn end(&mut self, stream: u32, end: End<'_>) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if s.trailers.is_some() {
            return;
        }
        let block = match end {
            End::Grpc { code, message } => {
                let mut b = BytesMut::with_capacity(64 + message.len());
                if !s.headers_sent {
                    b.extend_from_slice(REPLY_HEAD);
                }
                literal(&mut b, None, b"grpc-status", code.to_string().as_bytes());
                if !message.is_empty() {
                    let m = ringkv_proto::grpc::percent_encode(message);
                    literal(&mut b, None, b"grpc-message", m.as_bytes());
                }
                b.freeze()
            }
            End::Http(status) => {
                let mut b = BytesMut::with_capacity(8);
                // `:status` by its static-table name (index 8).
                literal(&mut b, Some(8), b"", status.to_string().as_bytes());
                b.freeze()
            }
        };
        s.headers_sent = true;
        s.trailers = Some(block);
        let idle = s.queue.is_empty();
        if idle {
            self.flush_stream(stream);
        }
    }

    /// The whole reply of a unary call: headers, the message and an OK status.
    pub fn reply(&mut self, stream: u32, msg: Bytes) {
        if self.send_message(stream, msg) {
            self.end(
                stream,
                End::Grpc {
                    code: 0,
                    message: "",
                },
            );
        }
    }

    fn parse(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<(), ConnError> {
        let mut data = data;
        if self.preface_left > 0 {
            let at = PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(data.len());
            if data[..n] != PREFACE[at..at + n] {
                return Err(err(Reason::Protocol, "not the HTTP/2 client preface"));
            }
            self.preface_left -= n;
            data = &data[n..];
        }
        self.rx.extend_from_slice(data);
        while self.rx.len() >= FRAME_HEADER_BYTES {
            let h = &self.rx[..FRAME_HEADER_BYTES];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if len > FRAME_BYTES_DEFAULT {
                return Err(err(
                    Reason::FrameSize,
                    format!("a frame of {len} bytes (the limit is {FRAME_BYTES_DEFAULT})"),
                ));
            }
            if self.rx.len() < FRAME_HEADER_BYTES + len {
                break;
            }
            let mut frame = self.rx.split_to(FRAME_HEADER_BYTES + len);
            let payload = frame.split_off(FRAME_HEADER_BYTES).freeze();
            if self.block.is_some() && kind != CONTINUATION {
                return Err(err(
                    Reason::Protocol,
                    "a header block was interrupted by another frame",
                ));
            }
            self.frame(kind, flags, stream, payload, events)?;
        }
        Ok(())
    }

    fn frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Bytes,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnError> {
        match kind {
            DATA => self.data(flags, stream, payload, events),
            HEADERS => {
                if stream == 0 {
                    return Err(err(Reason::Protocol, "HEADERS on stream 0"));
                }
                let mut p = strip_padding(flags, payload)?;
                if flags & PRIORITY_FLAG != 0 {
                    if p.len() < 5 {
                        return Err(err(Reason::FrameSize, "a HEADERS priority field cut short"));
                    }
                    let _ = p.split_to(5);
                }
                let mut fragment = BytesMut::with_capacity(p.len());
                fragment.extend_from_slice(&p);
                self.block = Some(Block {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    fragment,
                });
                if flags & END_HEADERS != 0 {
                    self.header_block(events)?;
                }
                Ok(())
            }
            CONTINUATION => {
                let Some(b) = self.block.as_mut() else {
                    return Err(err(Reason::Protocol, "CONTINUATION without a header block"));
                };
                if b.stream != stream {
                    return Err(err(
                        Reason::Protocol,
                        "CONTINUATION on another stream than its HEADERS",
                    ));
                }
                if b.fragment.len() + payload.len() > self.limits.header_block_bytes_max {
                    return Err(err(
                        Reason::EnhanceYourCalm,
                        format!(
                            "a header block over {} bytes",
                            self.limits.header_block_bytes_max
                        ),
                    ));
                }
                b.fragment.extend_from_slice(&payload);
                if flags & END_HEADERS != 0 {
                    self.header_block(events)?;
                }
                Ok(())
            }
            PRIORITY => {
                if payload.len() != 5 {
                    return Err(err(Reason::FrameSize, "a PRIORITY frame not of 5 bytes"));
                }
                Ok(())
            }
            RST_STREAM => {
                if stream == 0 || payload.len() != 4 {
                    return Err(err(Reason::Protocol, "a malformed RST_STREAM"));
                }
                if stream > self.last_stream {
                    return Err(err(Reason::Protocol, "RST_STREAM on an idle stream"));
                }
                if self.streams.remove(&stream).is_some() {
                    events.push(Event::Reset { stream });
                }
                Ok(())
            }
            SETTINGS => self.settings(flags, stream, &payload),
            PUSH_PROMISE => Err(err(Reason::Protocol, "a client may not push")),
            PING => {
                if stream != 0 || payload.len() != 8 {
                    return Err(err(Reason::Protocol, "a malformed PING"));
                }
                if flags & ACK == 0 {
                    self.frame_head(8, PING, ACK, 0);
                    self.out.extend_from_slice(&payload);
                }
                Ok(())
            }
            GOAWAY => {
                if stream != 0 || payload.len() < 8 {
                    return Err(err(Reason::Protocol, "a malformed GOAWAY"));
                }
                // The client closes the connection once its calls are done: nothing
                // to do until then.
                Ok(())
            }
            WINDOW_UPDATE => {
                if payload.len() != 4 {
                    return Err(err(Reason::FrameSize, "a WINDOW_UPDATE not of 4 bytes"));
                }
                let inc = i64::from(
                    u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff,
                );
                if stream == 0 {
                    if inc == 0 {
                        return Err(err(Reason::Protocol, "a WINDOW_UPDATE of 0"));
                    }
                    self.send_window += inc;
                    if self.send_window > WINDOW_LIMIT {
                        return Err(err(Reason::FlowControl, "the connection window overflowed"));
                    }
                    self.flush_blocked();
                } else if let Some(s) = self.streams.get_mut(&stream) {
                    s.send_window += inc;
                    if inc == 0 || s.send_window > WINDOW_LIMIT {
                        self.reset(stream, Reason::FlowControl, events);
                    } else {
                        self.flush_stream(stream);
                    }
                }
                Ok(())
            }
            // Unknown frame types are ignored (RFC 9113 section 4.1).
            _ => Ok(()),
        }
    }

    fn data(
        &mut self,
        flags: u8,
        stream: u32,
        payload: Bytes,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnError> {
        if stream == 0 {
            return Err(err(Reason::Protocol, "DATA on stream 0"));
        }
        if stream > self.last_stream {
            return Err(err(Reason::Protocol, "DATA on an idle stream"));
        }
        // Every DATA byte counts against the connection's window, padding included,
        // whatever became of its stream.
        let len = payload.len() as u32;
        self.recv_unacked += len;
        if self.recv_unacked >= self.limits.connection_window_bytes / 2 {
            let n = std::mem::take(&mut self.recv_unacked);
            self.window_update(0, n);
        }
        let end_stream = flags & END_STREAM != 0;
        let data = strip_padding(flags, payload)?;
        let half = self.limits.stream_window_bytes / 2;
        let Some(s) = self.streams.get_mut(&stream) else {
            // A stream this side ended (or reset) while the client was still sending.
            return Ok(());
        };
        if s.recv_closed {
            self.reset(stream, Reason::StreamClosed, events);
            return Ok(());
        }
        s.recv_closed = end_stream;
        // A stream that will receive more gets its window back as it goes.
        if !end_stream {
            s.recv_unacked += len;
            if s.recv_unacked >= half {
                let n = std::mem::take(&mut s.recv_unacked);
                self.window_update(stream, n);
            }
        }
        events.push(Event::Data {
            stream,
            data,
            end_stream,
        });
        Ok(())
    }

    fn header_block(&mut self, events: &mut Vec<Event>) -> Result<(), ConnError> {
        let b = self.block.take().expect("a block is open");
        let mut head = Head::default();
        let mut list_bytes = 0usize;
        let mut method_post = false;
        let decoded = self.decoder.decode_with_cb(&b.fragment, |n, v| {
            list_bytes += n.len() + v.len() + 32;
            match &*n {
                b":path" => head.path = String::from_utf8_lossy(&v).into_owned(),
                b":method" => method_post = &*v == b"POST",
                b"content-type" => head.grpc = v.starts_with(b"application/grpc"),
                b"grpc-timeout" => {
                    head.timeout = std::str::from_utf8(&v)
                        .ok()
                        .and_then(ringkv_proto::grpc::parse_timeout)
                }
                b"hasleader" => head.wants_leader = &*v == b"true",
                _ => {}
            }
        });
        if let Err(e) = decoded {
            return Err(err(
                Reason::Compression,
                format!("a header block does not decode: {e:?}"),
            ));
        }
        let stream = b.stream;
        if let Some(s) = self.streams.get_mut(&stream) {
            // Trailers from the client (gRPC clients send none): they end its side.
            if !b.end_stream {
                self.reset(stream, Reason::Protocol, events);
                return Ok(());
            }
            s.recv_closed = true;
            events.push(Event::End { stream });
            return Ok(());
        }
        if stream <= self.last_stream {
            // A stream that was ended here: its late headers change nothing.
            if stream % 2 == 1 {
                return Ok(());
            }
            return Err(err(Reason::Protocol, "HEADERS on a closed stream"));
        }
        if stream % 2 == 0 {
            return Err(err(Reason::Protocol, "a client opened an even stream"));
        }
        self.last_stream = stream;
        if self.streams.len() >= self.limits.streams_max as usize {
            self.rst(stream, Reason::RefusedStream);
            return Ok(());
        }
        self.streams.insert(
            stream,
            Stream {
                send_window: self.peer_initial_window,
                recv_closed: b.end_stream,
                headers_sent: false,
                queue: VecDeque::new(),
                queued_bytes: 0,
                trailers: None,
                recv_unacked: 0,
                blocked: false,
            },
        );
        if list_bytes > self.limits.header_list_bytes_max as usize {
            self.end(stream, End::Http(431));
            return Ok(());
        }
        if !method_post || head.path.is_empty() {
            self.end(
                stream,
                End::Http(if head.path.is_empty() { 400 } else { 405 }),
            );
            return Ok(());
        }
        events.push(Event::Call {
            stream,
            head,
            end_stream: b.end_stream,
        });
        Ok(())
    }

    fn settings(&mut self, flags: u8, stream: u32, p: &[u8]) -> Result<(), ConnError> {
        if stream != 0 {
            return Err(err(Reason::Protocol, "SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            if !p.is_empty() {
                return Err(err(Reason::FrameSize, "a SETTINGS ACK with a payload"));
            }
            return Ok(());
        }
        if p.len() % 6 != 0 {
            return Err(err(Reason::FrameSize, "SETTINGS not a multiple of 6 bytes"));
        }
        self.settings_seen = true;
        for s in p.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    let v = i64::from(v);
                    if v > WINDOW_LIMIT {
                        return Err(err(
                            Reason::FlowControl,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    let delta = v - self.peer_initial_window;
                    self.peer_initial_window = v;
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > WINDOW_LIMIT {
                            return Err(err(Reason::FlowControl, "a stream window overflowed"));
                        }
                    }
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    let v = v as usize;
                    if !(FRAME_BYTES_DEFAULT..=FRAME_BYTES_LIMIT).contains(&v) {
                        return Err(err(
                            Reason::Protocol,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_frame_bytes_max = v;
                }
                SETTINGS_ENABLE_PUSH if v > 1 => {
                    return Err(err(Reason::Protocol, "SETTINGS_ENABLE_PUSH not 0 or 1"));
                }
                // Replies use no dynamic table; a server opens no streams; the client's
                // header list limit is far above gRPC's reply headers.
                SETTINGS_HEADER_TABLE_SIZE
                | SETTINGS_ENABLE_PUSH
                | SETTINGS_MAX_CONCURRENT_STREAMS
                | SETTINGS_MAX_HEADER_LIST_SIZE => {}
                _ => {} // unknown settings are ignored
            }
        }
        self.frame_head(0, SETTINGS, ACK, 0);
        // A larger initial window may unblock streams.
        self.flush_blocked();
        Ok(())
    }

    /// Writes what the windows allow of `stream`'s queue (and its trailers once the queue
    /// is empty); a stream left waiting goes on `blocked`.
    fn flush_stream(&mut self, stream: u32) {
        let frame_max = self.peer_frame_bytes_max;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        while let Some(front) = s.queue.front_mut() {
            let room = s.send_window.min(self.send_window);
            if room <= 0 {
                if !s.blocked {
                    s.blocked = true;
                    self.blocked.push_back(stream);
                }
                return;
            }
            let n = front.len().min(room as usize).min(frame_max);
            let chunk = front.split_to(n);
            if front.is_empty() {
                s.queue.pop_front();
            }
            s.send_window -= n as i64;
            self.send_window -= n as i64;
            s.queued_bytes -= n;
            // frame_head, inlined: `s` borrows the stream map.
            put_frame_head(&mut self.out, n, DATA, 0, stream);
            self.out.extend_from_slice(&chunk);
        }
        if let Some(t) = s.trailers.take() {
            // The trailers block carries END_STREAM; a stream whose client side is still
            // open is reset (NO_ERROR) so the client stops sending a body nobody reads.
            let client_open = !s.recv_closed;
            self.streams.remove(&stream);
            self.headers_frame(stream, &t, true);
            if client_open {
                self.rst(stream, Reason::NoError);
            }
        }
    }

    fn flush_blocked(&mut self) {
        for _ in 0..self.blocked.len() {
            if self.send_window <= 0 {
                return;
            }
            let Some(stream) = self.blocked.pop_front() else {
                return;
            };
            if let Some(s) = self.streams.get_mut(&stream) {
                s.blocked = false;
                self.flush_stream(stream);
            }
        }
    }

    /// Resets `stream` from this side and tells the caller.
    fn reset(&mut self, stream: u32, reason: Reason, events: &mut Vec<Event>) {
        if self.streams.remove(&stream).is_some() {
            events.push(Event::Reset { stream });
        }
        self.rst(stream, reason);
    }

    fn rst(&mut self, stream: u32, reason: Reason) {
        self.frame_head(4, RST_STREAM, 0, stream);
        self.out.put_u32(reason as u32);
    }

    fn go_away(&mut self, reason: Reason) {
        self.closed = true;
        self.frame_head(8, GOAWAY, 0, 0);
        self.out.put_u32(self.last_stream);
        self.out.put_u32(reason as u32);
    }

    fn window_update(&mut self, stream: u32, n: u32) {
        self.frame_head(4, WINDOW_UPDATE, 0, stream);
        self.out.put_u32(n);
    }

    /// A header block in one HEADERS frame, or HEADERS and CONTINUATION frames when it
    /// is larger than the client's frame size.
    fn headers_frame(&mut self, stream: u32, block: &[u8], end_stream: bool) {
        let max = self.peer_frame_bytes_max;
        let mut chunks = block.chunks(max).peekable();
        let first = chunks.next().unwrap_or(&[]);
        let last = chunks.peek().is_none();
        let flags =
            (if end_stream { END_STREAM } else { 0 }) | (if last { END_HEADERS } else { 0 });
        self.frame_head(first.len(), HEADERS, flags, stream);
        self.out.extend_from_slice(first);
        while let Some(c) = chunks.next() {
            let flags = if chunks.peek().is_none() {
                END_HEADERS
            } else {
                0
            };
            self.frame_head(c.len(), CONTINUATION, flags, stream);
            self.out.extend_from_slice(c);
        }
    }

    fn frame_head(&mut self, len: usize, kind: u8, flags: u8, stream: u32) {
        put_frame_head(&mut self.out, len, kind, flags, stream);
    }
}

fn put_frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= FRAME_BYTES_LIMIT);
    out.put_u8((len >> 16) as u8);
    out.put_u8((len >> 8) as u8);
    out.put_u8(len as u8);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

fn err(reason: Reason, detail: impl Into<String>) -> ConnError {
    ConnError {
        reason,
        detail: detail.into(),
    }
}

fn strip_padding(flags: u8, mut p: Bytes) -> Result<Bytes, ConnError> {
    if flags & PADDED == 0 {
        return Ok(p);
    }
    let Some(&pad) = p.first() else {
        return Err(err(
            Reason::FrameSize,
            "a padded frame without its pad length",
        ));
    };
    let pad = usize::from(pad);
    if pad + 1 > p.len() {
        return Err(err(Reason::Protocol, "padding longer than the frame"));
    }
    let _ = p.split_to(1);
    p.truncate(p.len() - pad);
    Ok(p)
}

/// The headers of a successful reply, HPACK-encoded: `:status: 200` (static table index
/// 8) and `content-type: application/grpc` (a literal without indexing on the static
/// table's name 31: 0x0f then 16, the value's length 16, then the value).
const REPLY_HEAD: &[u8] = b"\x88\x0f\x10\x10application/grpc";

/// An HPACK literal header field without indexing (RFC 7541 6.2.2): by static table
/// name index, or with its name as a string. No Huffman coding.
fn literal(b: &mut BytesMut, name_index: Option<usize>, name: &[u8], value: &[u8]) {
    match name_index {
        Some(i) => integer(b, 0x00, 4, i),
        None => {
            b.put_u8(0x00);
            integer(b, 0x00, 7, name.len());
            b.extend_from_slice(name);
        }
    }
    integer(b, 0x00, 7, value.len());
    b.extend_from_slice(value);
}

/// An HPACK integer with an N-bit prefix (RFC 7541 5.1); `first` holds the bits above it.
fn integer(b: &mut BytesMut, first: u8, prefix_bits: u32, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        b.put_u8(first | v as u8);
        return;
    }
    b.put_u8(first | max as u8);
    v -= max;
    while v >= 128 {
        b.put_u8((v % 128 + 128) as u8);
        v /= 128;
    }
    b.put_u8(v as u8);
}
