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
                // The block's limit counts this first fragment too (checking only the
                // CONTINUATION frames let a single HEADERS frame exceed it).
                if p.len() > self.limits.header_block_bytes_max {
                    return Err(err(
                        Reason::EnhanceYourCalm,
                        format!(
                            "a header block over {} bytes",
                            self.limits.header_block_bytes_max
                        ),
                    ));
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
            // Trailers from the client (gRPC clients send none): they end its side. On a
            // side already ended they are a stream error STREAM_CLOSED (RFC 9113 5.1), as
            // DATA is: without this check they made a second `End` event.
            if s.recv_closed {
                self.reset(stream, Reason::StreamClosed, events);
                return Ok(());
            }
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

#[cfg(test)]
mod tests {
    //! A tiny client: frames built by hand, request headers HPACK-encoded with
    //! `loona_hpack::Encoder`, the server's output parsed back into frames and its header
    //! blocks decoded with `loona_hpack::Decoder`.

    use super::*;
    use loona_hpack::Encoder;

    const CLIENT_SETTINGS_ACK: &[u8] = b"\0\0\0\x04\x01\0\0\0\0";

    fn limits() -> Limits {
        Limits {
            streams_max: 4,
            stream_window_bytes: 1 << 16,
            connection_window_bytes: 1 << 20,
            header_list_bytes_max: 4096,
            header_block_bytes_max: 32 << 10,
            output_bytes_max: 1 << 20,
        }
    }

    /// A unary call's request headers, as grpc-go and etcd's clients send them.
    const UNARY: &[(&str, &str)] = &[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/etcdserverpb.KV/Range"),
        (":authority", "localhost:2379"),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-go/1.60.0"),
        ("te", "trailers"),
        ("grpc-timeout", "5S"),
        ("hasleader", "true"),
    ];

    fn unary_head() -> Head {
        Head {
            path: "/etcdserverpb.KV/Range".into(),
            grpc: true,
            timeout: Some(Duration::from_secs(5)),
            wants_leader: true,
        }
    }

    /// A frame: its 9-byte header and `payload`.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_frame_head(&mut b, payload.len(), kind, flags, stream);
        b.extend_from_slice(payload);
        b.to_vec()
    }

    fn settings_frame(values: &[(u16, u32)]) -> Vec<u8> {
        let mut p = Vec::new();
        for &(id, v) in values {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        frame(SETTINGS, 0, 0, &p)
    }

    fn window_update_frame(stream: u32, inc: u32) -> Vec<u8> {
        frame(WINDOW_UPDATE, 0, stream, &inc.to_be_bytes())
    }

    fn data_frame(stream: u32, data: &[u8], end_stream: bool) -> Vec<u8> {
        frame(DATA, if end_stream { END_STREAM } else { 0 }, stream, data)
    }

    fn rst_frame(stream: u32, reason: Reason) -> Vec<u8> {
        frame(RST_STREAM, 0, stream, &(reason as u32).to_be_bytes())
    }

    /// A gRPC message: uncompressed, its length, the bytes.
    fn message(body: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_u32(body.len() as u32);
        b.extend_from_slice(body);
        b.freeze()
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    /// Splits output into frames; panics on a cut or malformed one.
    fn frames(mut b: &[u8]) -> Vec<Frame> {
        let mut v = Vec::new();
        while !b.is_empty() {
            assert!(b.len() >= FRAME_HEADER_BYTES, "a cut frame header: {b:?}");
            let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
            assert!(b.len() >= FRAME_HEADER_BYTES + len, "a cut frame");
            assert_eq!(b[5] & 0x80, 0, "the reserved bit is set");
            v.push(Frame {
                kind: b[3],
                flags: b[4],
                stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
                payload: b[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len].to_vec(),
            });
            b = &b[FRAME_HEADER_BYTES + len..];
        }
        v
    }

    fn u32_at(p: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
    }

    /// The server's output, frame by frame, header blocks decoded.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Out {
        Settings {
            ack: bool,
            values: Vec<(u16, u32)>,
        },
        WindowUpdate {
            stream: u32,
            inc: u32,
        },
        /// A HEADERS frame and its CONTINUATION frames.
        Headers {
            stream: u32,
            end_stream: bool,
            fields: Vec<(String, String)>,
        },
        Data {
            stream: u32,
            end_stream: bool,
            data: Blob,
        },
        Rst {
            stream: u32,
            code: u32,
        },
        Ping {
            ack: bool,
            payload: Vec<u8>,
        },
        GoAway {
            last_stream: u32,
            code: u32,
        },
    }

    /// Bytes that print short (a failed assertion on a large reply stays readable).
    #[derive(Clone, PartialEq, Eq)]
    struct Blob(Vec<u8>);

    impl std::fmt::Debug for Blob {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let head = &self.0[..self.0.len().min(8)];
            write!(f, "{} bytes {head:?}", self.0.len())
        }
    }

    fn headers(stream: u32, end_stream: bool, fields: &[(&str, &str)]) -> Out {
        Out::Headers {
            stream,
            end_stream,
            fields: fields
                .iter()
                .map(|&(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn data(stream: u32, end_stream: bool, data: &[u8]) -> Out {
        Out::Data {
            stream,
            end_stream,
            data: Blob(data.to_vec()),
        }
    }

    const OK_HEAD: &[(&str, &str)] = &[(":status", "200"), ("content-type", "application/grpc")];

    fn ok_trailers(stream: u32) -> Out {
        headers(stream, true, &[("grpc-status", "0")])
    }

    struct Client {
        conn: Conn,
        enc: Encoder<'static>,
        dec: Decoder<'static>,
    }

    impl Client {
        /// A connection whose server preface is still in its output.
        fn bare(limits: Limits) -> Client {
            Client {
                conn: Conn::new(limits),
                enc: Encoder::new(),
                dec: Decoder::new(),
            }
        }

        /// A connection past the preface and the client's SETTINGS (`settings`), the
        /// server's output so far checked and taken.
        fn connect(limits: Limits, settings: &[(u16, u32)]) -> Client {
            let mut c = Client::bare(limits);
            c.conn.take_output();
            assert!(c.feed(PREFACE).is_empty());
            assert!(c.feed(&settings_frame(settings)).is_empty());
            assert!(c.conn.preface_done());
            assert_eq!(
                c.read(),
                vec![Out::Settings {
                    ack: true,
                    values: vec![]
                }]
            );
            c
        }

        fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
            let mut events = Vec::new();
            if let Err(e) = self.conn.feed(bytes, &mut events) {
                panic!("a connection error: {e:?}");
            }
            events
        }

        /// Feeds bytes that must end the connection; returns its error.
        fn feed_err(&mut self, bytes: &[u8]) -> ConnError {
            let mut events = Vec::new();
            let e = self
                .conn
                .feed(bytes, &mut events)
                .expect_err("a connection error");
            assert!(self.conn.is_closed());
            e
        }

        fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
            self.enc
                .encode(fields.iter().map(|&(n, v)| (n.as_bytes(), v.as_bytes())))
        }

        /// One HEADERS frame (END_HEADERS) with `fields`.
        fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
            let block = self.block(fields);
            let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
            frame(HEADERS, flags, stream, &block)
        }

        /// Opens `stream` with a unary call's headers and checks its `Call`.
        fn call(&mut self, stream: u32, end_stream: bool) {
            let f = self.headers(stream, UNARY, end_stream);
            assert_eq!(
                self.feed(&f),
                vec![Event::Call {
                    stream,
                    head: unary_head(),
                    end_stream
                }]
            );
        }

        fn decode(&mut self, block: &[u8]) -> Vec<(String, String)> {
            self.dec
                .decode(block)
                .expect("the server's header block decodes")
                .into_iter()
                .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                .collect()
        }

        /// The server's output since the last read.
        fn read(&mut self) -> Vec<Out> {
            let out = self.conn.take_output();
            self.describe(&frames(&out))
        }

        fn describe(&mut self, frames: &[Frame]) -> Vec<Out> {
            let mut v = Vec::new();
            let mut it = frames.iter();
            while let Some(f) = it.next() {
                let p = &f.payload;
                v.push(match f.kind {
                    SETTINGS => {
                        assert_eq!(f.stream, 0);
                        assert_eq!(p.len() % 6, 0);
                        Out::Settings {
                            ack: f.flags & ACK != 0,
                            values: p
                                .chunks(6)
                                .map(|s| (u16::from_be_bytes([s[0], s[1]]), u32_at(s, 2)))
                                .collect(),
                        }
                    }
                    WINDOW_UPDATE => {
                        assert_eq!(p.len(), 4);
                        let inc = u32_at(p, 0);
                        assert!(inc > 0, "a WINDOW_UPDATE of 0");
                        Out::WindowUpdate {
                            stream: f.stream,
                            inc,
                        }
                    }
                    HEADERS => {
                        assert_eq!(f.flags & (PADDED | PRIORITY_FLAG), 0);
                        let mut block = p.clone();
                        let mut last = f.flags & END_HEADERS != 0;
                        while !last {
                            let c = it.next().expect("a CONTINUATION follows");
                            assert_eq!((c.kind, c.stream), (CONTINUATION, f.stream));
                            block.extend_from_slice(&c.payload);
                            last = c.flags & END_HEADERS != 0;
                        }
                        Out::Headers {
                            stream: f.stream,
                            end_stream: f.flags & END_STREAM != 0,
                            fields: self.decode(&block),
                        }
                    }
                    DATA => {
                        assert_eq!(f.flags & PADDED, 0);
                        assert!(f.stream != 0);
                        Out::Data {
                            stream: f.stream,
                            end_stream: f.flags & END_STREAM != 0,
                            data: Blob(p.clone()),
                        }
                    }
                    RST_STREAM => {
                        assert_eq!(p.len(), 4);
                        Out::Rst {
                            stream: f.stream,
                            code: u32_at(p, 0),
                        }
                    }
                    PING => {
                        assert_eq!(p.len(), 8);
                        Out::Ping {
                            ack: f.flags & ACK != 0,
                            payload: p.clone(),
                        }
                    }
                    GOAWAY => {
                        assert_eq!(p.len(), 8);
                        Out::GoAway {
                            last_stream: u32_at(p, 0),
                            code: u32_at(p, 4),
                        }
                    }
                    k => panic!("an unexpected frame of type {k}"),
                });
            }
            v
        }
    }

    /// The DATA frames' payload sizes in `out`, and whether all else is as `rest`.
    fn data_sizes(out: &[Out]) -> Vec<(u32, usize)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Data { stream, data, .. } => Some((*stream, data.0.len())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn server_preface_carries_the_limits_and_the_connection_window() {
        let mut c = Client::bare(limits());
        assert_eq!(
            c.read(),
            vec![
                Out::Settings {
                    ack: false,
                    values: vec![
                        (SETTINGS_ENABLE_PUSH, 0),
                        (SETTINGS_MAX_CONCURRENT_STREAMS, 4),
                        (SETTINGS_INITIAL_WINDOW_SIZE, 1 << 16),
                        (SETTINGS_MAX_HEADER_LIST_SIZE, 4096),
                    ]
                },
                Out::WindowUpdate {
                    stream: 0,
                    inc: (1 << 20) - 65_535
                },
            ]
        );
        // A connection window no larger than the protocol's default needs no update.
        let mut c = Client::bare(Limits {
            connection_window_bytes: 65_535,
            ..limits()
        });
        let out = c.read();
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Out::Settings { ack: false, .. }));
    }

    #[test]
    fn client_settings_are_acknowledged_and_end_the_preface() {
        let mut c = Client::bare(limits());
        c.conn.take_output();
        assert!(!c.conn.preface_done());
        // The preface in pieces.
        assert!(c.feed(&PREFACE[..5]).is_empty());
        assert!(c.feed(&PREFACE[5..]).is_empty());
        assert!(!c.conn.preface_done(), "no SETTINGS yet");
        // A SETTINGS ACK (of the server's SETTINGS) is not the client's SETTINGS.
        assert!(c.feed(CLIENT_SETTINGS_ACK).is_empty());
        assert!(!c.conn.preface_done());
        assert_eq!(c.read(), vec![]);
        // The client's SETTINGS, cut in two.
        let s = settings_frame(&[(SETTINGS_HEADER_TABLE_SIZE, 0), (0x99, 7)]);
        assert!(c.feed(&s[..4]).is_empty());
        assert!(!c.conn.preface_done());
        assert!(c.feed(&s[4..]).is_empty());
        assert!(c.conn.preface_done());
        assert_eq!(
            c.read(),
            vec![Out::Settings {
                ack: true,
                values: vec![]
            }]
        );
        // Every SETTINGS is acknowledged.
        c.feed(&settings_frame(&[]));
        assert_eq!(
            c.read(),
            vec![Out::Settings {
                ack: true,
                values: vec![]
            }]
        );
    }

    #[test]
    fn a_wrong_preface_is_a_protocol_error() {
        let mut c = Client::bare(limits());
        c.conn.take_output();
        let e = c.feed_err(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(e.reason, Reason::Protocol);
        assert_eq!(
            c.read(),
            vec![Out::GoAway {
                last_stream: 0,
                code: Reason::Protocol as u32
            }]
        );
        assert!(!c.conn.preface_done());

        // Wrong in its second piece.
        let mut c = Client::bare(limits());
        c.conn.take_output();
        assert!(c.feed(&PREFACE[..10]).is_empty());
        let e = c.feed_err(b"XXXXXXXXXXXXXXXXXXXXXXXX");
        assert_eq!(e.reason, Reason::Protocol);
        assert_eq!(
            c.read(),
            vec![Out::GoAway {
                last_stream: 0,
                code: Reason::Protocol as u32
            }]
        );
    }

    #[test]
    fn a_unary_call_and_its_reply() {
        let mut c = Client::connect(limits(), &[]);
        let h = c.headers(1, UNARY, false);
        assert_eq!(
            c.feed(&h),
            vec![Event::Call {
                stream: 1,
                head: unary_head(),
                end_stream: false
            }]
        );
        let req = message(b"\x0a\x03foo");
        assert_eq!(
            c.feed(&data_frame(1, &req, true)),
            vec![Event::Data {
                stream: 1,
                data: req.clone(),
                end_stream: true
            }]
        );
        assert_eq!(c.read(), vec![], "nothing to say before the reply");
        assert!(c.conn.is_open(1));

        let resp = message(b"\x0a\x02ok");
        c.conn.reply(1, resp.clone());
        assert_eq!(
            c.read(),
            vec![
                headers(1, false, OK_HEAD),
                data(1, false, &resp),
                ok_trailers(1)
            ]
        );
        // The stream is over.
        assert!(!c.conn.is_open(1));
        assert_eq!(c.conn.queued_bytes(1), None);
        assert!(!c.conn.send_message(1, resp));
        c.conn.end(
            1,
            End::Grpc {
                code: 2,
                message: "late",
            },
        );
        assert_eq!(c.read(), vec![]);
    }

    #[test]
    fn a_call_fed_byte_by_byte_is_the_same_call() {
        let mut c = Client::bare(limits());
        c.conn.take_output();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(settings_frame(&[]));
        bytes.extend(c.headers(1, UNARY, false));
        bytes.extend(data_frame(1, b"\0\0\0\0\x01z", true));
        let mut events = Vec::new();
        for b in &bytes {
            c.conn.feed(std::slice::from_ref(b), &mut events).unwrap();
        }
        assert_eq!(
            events,
            vec![
                Event::Call {
                    stream: 1,
                    head: unary_head(),
                    end_stream: false
                },
                Event::Data {
                    stream: 1,
                    data: Bytes::from_static(b"\0\0\0\0\x01z"),
                    end_stream: true
                }
            ]
        );
    }

    #[test]
    fn odd_header_values_are_read_not_trusted() {
        let mut c = Client::connect(limits(), &[]);
        // A timeout ending in a multi-byte character (this panicked in parse_timeout),
        // one with a bad unit, `hasleader` not `true`, a content-type not gRPC's.
        for (stream, timeout, leader, ctype) in [
            (1, "5é", "true", "application/grpc+proto"),
            (3, "˩", "false", "application/grpc"),
            (5, "5x", "TRUE", "text/plain"),
        ] {
            let h = c.headers(
                stream,
                &[
                    (":method", "POST"),
                    (":path", "/p"),
                    ("content-type", ctype),
                    ("grpc-timeout", timeout),
                    ("hasleader", leader),
                ],
                true,
            );
            assert_eq!(
                c.feed(&h),
                vec![Event::Call {
                    stream,
                    head: Head {
                        path: "/p".into(),
                        grpc: ctype.starts_with("application/grpc"),
                        timeout: None,
                        wants_leader: leader == "true",
                    },
                    end_stream: true
                }]
            );
        }
    }

    #[test]
    fn an_error_before_any_message_is_a_trailers_only_reply() {
        let mut c = Client::connect(limits(), &[]);
        c.call(1, true);
        let text = "no such key: café 100%";
        c.conn.end(
            1,
            End::Grpc {
                code: 5,
                message: text,
            },
        );
        let out = c.read();
        assert_eq!(
            out,
            vec![headers(
                1,
                true,
                &[
                    (":status", "200"),
                    ("content-type", "application/grpc"),
                    ("grpc-status", "5"),
                    ("grpc-message", "no such key: caf%C3%A9 100%25"),
                ]
            )]
        );
        let Out::Headers { fields, .. } = &out[0] else {
            unreachable!()
        };
        assert_eq!(ringkv_proto::grpc::percent_decode(&fields[3].1), text);
        assert!(!c.conn.is_open(1));
    }

    #[test]
    fn an_error_after_a_message_is_in_the_trailers() {
        let mut c = Client::connect(limits(), &[]);
        c.call(1, true);
        let m = message(b"part");
        assert!(c.conn.send_message(1, m.clone()));
        assert!(c.conn.send_message(1, m.clone()));
        c.conn.end(
            1,
            End::Grpc {
                code: 14,
                message: "gone",
            },
        );
        assert!(!c.conn.send_message(1, m.clone()));
        assert_eq!(
            c.read(),
            vec![
                headers(1, false, OK_HEAD),
                data(1, false, &m),
                data(1, false, &m),
                headers(1, true, &[("grpc-status", "14"), ("grpc-message", "gone")]),
            ]
        );
    }

    #[test]
    fn an_http_status_ends_the_stream() {
        let mut c = Client::connect(limits(), &[]);
        let h = c.headers(
            1,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/x"),
                ("content-type", "application/json"),
            ],
            true,
        );
        let ev = c.feed(&h);
        assert_eq!(
            ev,
            vec![Event::Call {
                stream: 1,
                head: Head {
                    path: "/x".into(),
                    grpc: false,
                    timeout: None,
                    wants_leader: false
                },
                end_stream: true
            }]
        );
        c.conn.end(1, End::Http(415));
        assert_eq!(c.read(), vec![headers(1, true, &[(":status", "415")])]);
        assert!(!c.conn.is_open(1));
    }

    #[test]
    fn a_request_not_a_post_or_without_a_path_is_answered_here() {
        let mut c = Client::connect(limits(), &[]);
        let h = c.headers(1, &[(":method", "GET"), (":path", "/x")], true);
        assert_eq!(c.feed(&h), vec![]);
        let h = c.headers(3, &[(":method", "POST"), (":scheme", "http")], true);
        assert_eq!(c.feed(&h), vec![]);
        assert_eq!(
            c.read(),
            vec![
                headers(1, true, &[(":status", "405")]),
                headers(3, true, &[(":status", "400")]),
            ]
        );
    }

    #[test]
    fn a_header_block_over_continuation_frames() {
        let mut c = Client::connect(limits(), &[]);
        let block = c.block(UNARY);
        let (a, rest) = block.split_at(7);
        let (b, d) = rest.split_at(20);
        assert!(c.feed(&frame(HEADERS, END_STREAM, 1, a)).is_empty());
        assert!(c.feed(&frame(CONTINUATION, 0, 1, b)).is_empty());
        assert!(c.feed(&frame(CONTINUATION, 0, 1, &[])).is_empty());
        assert_eq!(
            c.feed(&frame(CONTINUATION, END_HEADERS, 1, d)),
            vec![Event::Call {
                stream: 1,
                head: unary_head(),
                end_stream: true
            }]
        );
        // The decoder's dynamic table carried on: the next request's block refers to it.
        c.call(3, true);
    }

    #[test]
    fn padded_headers_with_priority_and_padded_data() {
        let mut c = Client::connect(limits(), &[]);
        let block = c.block(UNARY);
        let mut p = vec![3u8]; // pad length
        p.extend_from_slice(&[0x80, 0, 0, 0, 16]); // exclusive on stream 0, weight 17
        p.extend_from_slice(&block);
        p.extend_from_slice(&[0, 0, 0]);
        assert_eq!(
            c.feed(&frame(HEADERS, PADDED | PRIORITY_FLAG | END_HEADERS, 1, &p)),
            vec![Event::Call {
                stream: 1,
                head: unary_head(),
                end_stream: false
            }]
        );
        let msg = message(b"body");
        let mut p = vec![4u8];
        p.extend_from_slice(&msg);
        p.extend_from_slice(&[0; 4]);
        assert_eq!(
            c.feed(&frame(DATA, PADDED | END_STREAM, 1, &p)),
            vec![Event::Data {
                stream: 1,
                data: msg,
                end_stream: true
            }]
        );
        // A PRIORITY frame is read and ignored.
        assert!(c.feed(&frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 7])).is_empty());
        assert_eq!(c.read(), vec![]);
        // Padding longer than the frame is a connection error.
        let e = c.feed_err(&frame(DATA, PADDED, 1, &[9, 1, 2]));
        assert_eq!(e.reason, Reason::Protocol);
    }

    #[test]
    fn a_frame_inside_a_header_block_is_a_connection_error() {
        let mut c = Client::connect(limits(), &[]);
        let block = c.block(UNARY);
        assert!(c.feed(&frame(HEADERS, 0, 1, &block[..10])).is_empty());
        let e = c.feed_err(&frame(PING, 0, 0, &[0; 8]));
        assert_eq!(e.reason, Reason::Protocol);
        assert_eq!(
            c.read(),
            vec![Out::GoAway {
                last_stream: 0,
                code: Reason::Protocol as u32
            }],
            "no PING ACK: the PING was not read"
        );

        // A CONTINUATION on another stream.
        let mut c = Client::connect(limits(), &[]);
        let block = c.block(UNARY);
        assert!(c.feed(&frame(HEADERS, 0, 1, &block[..10])).is_empty());
        let e = c.feed_err(&frame(CONTINUATION, END_HEADERS, 3, &block[10..]));
        assert_eq!(e.reason, Reason::Protocol);

        // A CONTINUATION without a HEADERS.
        let mut c = Client::connect(limits(), &[]);
        let e = c.feed_err(&frame(CONTINUATION, END_HEADERS, 1, &[0x82]));
        assert_eq!(e.reason, Reason::Protocol);
    }

    #[test]
    fn a_header_block_over_its_limit_is_a_connection_error() {
        let mut c = Client::connect(
            Limits {
                header_block_bytes_max: 100,
                ..limits()
            },
            &[],
        );
        let block = c.block(UNARY);
        assert!(block.len() > 100);
        assert!(c.feed(&frame(HEADERS, 0, 1, &block[..60])).is_empty());
        let e = c.feed_err(&frame(CONTINUATION, END_HEADERS, 1, &[0x82; 41]));
        assert_eq!(e.reason, Reason::EnhanceYourCalm);

        // A HEADERS frame alone over the limit.
        let mut c = Client::connect(
            Limits {
                header_block_bytes_max: 100,
                ..limits()
            },
            &[],
        );
        let h = c.headers(1, UNARY, true);
        let e = c.feed_err(&h);
        assert_eq!(e.reason, Reason::EnhanceYourCalm);
    }

    #[test]
    fn an_undecodable_header_block_is_a_compression_error() {
        let mut c = Client::connect(limits(), &[]);
        // Index 70: past the static table, and the dynamic table is empty.
        let e = c.feed_err(&frame(HEADERS, END_HEADERS, 1, &[0x80 | 70]));
        assert_eq!(e.reason, Reason::Compression);
    }

    #[test]
    fn the_stream_window_holds_the_reply() {
        let mut c = Client::connect(limits(), &[(SETTINGS_INITIAL_WINDOW_SIZE, 10)]);
        c.call(1, true);
        let m: Bytes = (0..25u8).collect::<Vec<_>>().into();
        c.conn.reply(1, m.clone());
        assert_eq!(
            c.read(),
            vec![headers(1, false, OK_HEAD), data(1, false, &m[..10])]
        );
        assert_eq!(c.conn.queued_bytes(1), Some(15));
        // A connection WINDOW_UPDATE does not open the stream's window.
        c.feed(&window_update_frame(0, 1000));
        assert_eq!(c.read(), vec![]);
        c.feed(&window_update_frame(1, 5));
        assert_eq!(c.read(), vec![data(1, false, &m[10..15])]);
        assert_eq!(c.conn.queued_bytes(1), Some(10));
        // The trailers wait for the last byte.
        c.feed(&window_update_frame(1, 100));
        assert_eq!(c.read(), vec![data(1, false, &m[15..]), ok_trailers(1)]);
        assert_eq!(c.conn.queued_bytes(1), None);
    }

    #[test]
    fn a_larger_initial_window_releases_held_replies() {
        let mut c = Client::connect(limits(), &[(SETTINGS_INITIAL_WINDOW_SIZE, 10)]);
        c.call(1, true);
        let m: Bytes = vec![7u8; 25].into();
        c.conn.reply(1, m.clone());
        assert_eq!(
            c.read(),
            vec![headers(1, false, OK_HEAD), data(1, false, &m[..10])]
        );
        c.feed(&settings_frame(&[(SETTINGS_INITIAL_WINDOW_SIZE, 100)]));
        assert_eq!(
            c.read(),
            vec![
                Out::Settings {
                    ack: true,
                    values: vec![]
                },
                data(1, false, &m[10..]),
                ok_trailers(1)
            ]
        );
    }

    #[test]
    fn the_connection_window_holds_replies() {
        let mut c = Client::connect(limits(), &[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]);
        c.call(1, true);
        c.call(3, true);
        let big: Bytes = (0..100_000u32).map(|i| i as u8).collect::<Vec<_>>().into();
        c.conn.reply(1, big.clone());
        let out = c.read();
        assert_eq!(
            data_sizes(&out),
            vec![(1, 16_384), (1, 16_384), (1, 16_384), (1, 16_383)]
        );
        assert_eq!(out.len(), 5, "the headers and the data: {out:?}");
        assert_eq!(c.conn.queued_bytes(1), Some(100_000 - 65_535));
        // The stream's window is not the limit.
        c.feed(&window_update_frame(1, 100_000));
        assert_eq!(c.read(), vec![]);
        // Another reply waits behind the first.
        let small = message(b"small");
        c.conn.reply(3, small.clone());
        assert_eq!(c.read(), vec![headers(3, false, OK_HEAD)]);
        assert_eq!(c.conn.queued_bytes(3), Some(small.len()));
        // A little window: the first stream's next bytes.
        c.feed(&window_update_frame(0, 1000));
        assert_eq!(c.read(), vec![data(1, false, &big[65_535..66_535])]);
        // Enough for both: the first stream, having had its turn, now waits behind the
        // second.
        c.feed(&window_update_frame(0, 100_000));
        assert_eq!(
            c.read(),
            vec![
                data(3, false, &small),
                ok_trailers(3),
                data(1, false, &big[66_535..82_919]),
                data(1, false, &big[82_919..99_303]),
                data(1, false, &big[99_303..]),
                ok_trailers(1),
            ]
        );
        assert_eq!(c.conn.queued_bytes(1), None);
        assert_eq!(c.conn.queued_bytes(3), None);
    }

    #[test]
    fn data_frames_fit_the_clients_frame_size() {
        let mut c = Client::connect(limits(), &[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]);
        c.feed(&window_update_frame(0, 1 << 20));
        c.call(1, true);
        c.conn.reply(1, vec![1u8; 40_000].into());
        assert_eq!(
            data_sizes(&c.read()),
            vec![(1, 16_384), (1, 16_384), (1, 7_232)]
        );
        c.feed(&settings_frame(&[(SETTINGS_MAX_FRAME_SIZE, 20_000)]));
        c.read();
        c.call(3, true);
        c.conn.reply(3, vec![3u8; 45_000].into());
        assert_eq!(
            data_sizes(&c.read()),
            vec![(3, 20_000), (3, 20_000), (3, 5_000)]
        );
        // Out-of-range frame sizes are connection errors.
        let e = c.feed_err(&settings_frame(&[(SETTINGS_MAX_FRAME_SIZE, 16_383)]));
        assert_eq!(e.reason, Reason::Protocol);
    }

    #[test]
    fn a_large_header_block_goes_out_in_continuation_frames() {
        let mut c = Client::connect(limits(), &[]);
        c.call(1, true);
        let text = "x".repeat(40_000);
        c.conn.end(
            1,
            End::Grpc {
                code: 13,
                message: &text,
            },
        );
        let raw = frames(&c.conn.take_output());
        let shape: Vec<_> = raw
            .iter()
            .map(|f| (f.kind, f.flags, f.stream, f.payload.len()))
            .collect();
        let total: usize = raw.iter().map(|f| f.payload.len()).sum();
        assert_eq!(
            shape,
            vec![
                (HEADERS, END_STREAM, 1, 16_384),
                (CONTINUATION, 0, 1, 16_384),
                (CONTINUATION, END_HEADERS, 1, total - 2 * 16_384),
            ]
        );
        assert_eq!(
            c.describe(&raw),
            vec![headers(
                1,
                true,
                &[
                    (":status", "200"),
                    ("content-type", "application/grpc"),
                    ("grpc-status", "13"),
                    ("grpc-message", &text),
                ]
            )]
        );
    }

    #[test]
    fn received_data_is_released_by_window_updates() {
        let mut c = Client::connect(
            Limits {
                connection_window_bytes: 100_000,
                ..limits()
            },
            &[],
        );
        c.call(1, false);
        let chunk = vec![0u8; 16_384];
        // The stream's window is 65536: it is released after half of it; the
        // connection's (100000) after 50000 bytes.
        c.feed(&data_frame(1, &chunk, false));
        assert_eq!(c.read(), vec![]);
        c.feed(&data_frame(1, &chunk, false));
        assert_eq!(
            c.read(),
            vec![Out::WindowUpdate {
                stream: 1,
                inc: 32_768
            }]
        );
        c.feed(&data_frame(1, &chunk, false));
        assert_eq!(c.read(), vec![]);
        c.feed(&data_frame(1, &chunk, false));
        assert_eq!(
            c.read(),
            vec![
                Out::WindowUpdate {
                    stream: 0,
                    inc: 65_536
                },
                Out::WindowUpdate {
                    stream: 1,
                    inc: 32_768
                }
            ]
        );
        // The DATA that ends a stream gets no stream update (it is closing): 32768 bytes
        // would have earned one.
        c.feed(&data_frame(1, &chunk, false));
        c.feed(&data_frame(1, &chunk, true));
        assert_eq!(c.read(), vec![]);
        // DATA after END_STREAM: the stream is reset.
        c.feed(&data_frame(1, &chunk[..1_000], true));
        assert_reset(c.read(), 1, Reason::StreamClosed);
        // Its bytes still counted for the connection: 2 * 16384 + 1000 + 16384 = 50152
        // bytes reach the half (50000).
        c.call(3, false);
        c.feed(&data_frame(3, &chunk, true));
        assert_eq!(
            c.read(),
            vec![Out::WindowUpdate {
                stream: 0,
                inc: 50_152
            }]
        );
    }

    #[test]
    fn a_reset_from_the_client_forgets_the_stream() {
        let mut c = Client::connect(limits(), &[(SETTINGS_INITIAL_WINDOW_SIZE, 10)]);
        c.call(1, false);
        assert_eq!(
            c.feed(&rst_frame(1, Reason::Cancel)),
            vec![Event::Reset { stream: 1 }]
        );
        assert!(!c.conn.is_open(1));
        assert!(!c.conn.send_message(1, message(b"late")));
        c.conn.reply(1, message(b"late"));
        assert_eq!(c.read(), vec![]);
        // DATA the client had in flight is dropped quietly.
        assert_eq!(c.feed(&data_frame(1, b"xx", true)), vec![]);

        // A reply held by flow control is dropped with its stream.
        c.call(3, true);
        c.conn.reply(3, vec![0u8; 30].into());
        assert_eq!(data_sizes(&c.read()), vec![(3, 10)]);
        assert_eq!(
            c.feed(&rst_frame(3, Reason::Cancel)),
            vec![Event::Reset { stream: 3 }]
        );
        assert_eq!(c.conn.queued_bytes(3), None);
        c.feed(&window_update_frame(3, 100));
        c.feed(&window_update_frame(0, 100));
        assert_eq!(c.read(), vec![]);

        // A reset of a stream never opened is a connection error.
        let e = c.feed_err(&rst_frame(5, Reason::Cancel));
        assert_eq!(e.reason, Reason::Protocol);
    }

    #[test]
    fn streams_over_the_limit_are_refused() {
        let mut c = Client::connect(
            Limits {
                streams_max: 2,
                ..limits()
            },
            &[],
        );
        // Without the headers only the refused request brings: the encoder adds them to
        // its dynamic table there, so the next request's block refers to entries only the
        // refused request's block made.
        let plain: Vec<(&str, &str)> = UNARY[..7].to_vec();
        let head = Head {
            timeout: None,
            wants_leader: false,
            ..unary_head()
        };
        for stream in [1, 3] {
            let h = c.headers(stream, &plain, false);
            assert_eq!(
                c.feed(&h),
                vec![Event::Call {
                    stream,
                    head: head.clone(),
                    end_stream: false
                }]
            );
        }
        let h = c.headers(5, UNARY, true);
        assert_eq!(c.feed(&h), vec![]);
        assert_reset(c.read(), 5, Reason::RefusedStream);
        assert!(!c.conn.is_open(5));
        // Its DATA is dropped.
        assert_eq!(c.feed(&data_frame(5, b"x", true)), vec![]);
        // Once a stream is done, there is room again.
        assert_eq!(
            c.feed(&rst_frame(1, Reason::Cancel)),
            vec![Event::Reset { stream: 1 }]
        );
        c.call(7, true);
        assert_eq!(c.read(), vec![]);
    }

    #[test]
    fn a_header_list_over_its_limit_gets_431() {
        let mut c = Client::connect(limits(), &[]);
        let big = "a".repeat(5_000);
        let mut fields = UNARY.to_vec();
        fields.push(("x-big", &big));
        let h = c.headers(1, &fields, false);
        assert_eq!(c.feed(&h), vec![]);
        assert_eq!(
            c.read(),
            vec![
                headers(1, true, &[(":status", "431")]),
                Out::Rst {
                    stream: 1,
                    code: Reason::NoError as u32
                }
            ]
        );
        assert!(!c.conn.is_open(1));
        // The connection goes on (its HPACK state too).
        c.call(3, true);
    }

    #[test]
    fn a_ping_is_answered() {
        let mut c = Client::connect(limits(), &[]);
        c.feed(&frame(PING, 0, 0, b"12345678"));
        assert_eq!(
            c.read(),
            vec![Out::Ping {
                ack: true,
                payload: b"12345678".to_vec()
            }]
        );
        // An ACK is not answered.
        c.feed(&frame(PING, ACK, 0, b"abcdefgh"));
        assert_eq!(c.read(), vec![]);
        // A PING on a stream is a connection error.
        let e = c.feed_err(&frame(PING, 0, 1, b"12345678"));
        assert_eq!(e.reason, Reason::Protocol);
    }

    /// The server's output is exactly one RST_STREAM on `stream` with `reason`.
    fn assert_reset(out: Vec<Out>, stream: u32, reason: Reason) {
        assert_eq!(
            out,
            vec![Out::Rst {
                stream,
                code: reason as u32
            }]
        );
    }

    /// Builds the bytes of one broken frame for a client.
    type Breaker = Box<dyn Fn(&mut Client) -> Vec<u8>>;

    #[test]
    fn broken_frames_are_connection_errors() {
        let mut cases: Vec<(&str, Breaker, Reason)> = vec![
            (
                "an even stream",
                Box::new(|c| c.headers(2, UNARY, true)),
                Reason::Protocol,
            ),
            (
                "DATA on stream 0",
                Box::new(|_| data_frame(0, b"x", false)),
                Reason::Protocol,
            ),
            (
                "DATA on an idle stream",
                Box::new(|_| data_frame(9, b"x", false)),
                Reason::Protocol,
            ),
            (
                // Only the header: the error comes before the payload does.
                "a frame over 16384 bytes",
                Box::new(|_| vec![0x00, 0x40, 0x01, DATA, 0, 0, 0, 0, 1]),
                Reason::FrameSize,
            ),
            (
                "a WINDOW_UPDATE of 0 on the connection",
                Box::new(|_| window_update_frame(0, 0)),
                Reason::Protocol,
            ),
            (
                "the connection window overflowing",
                Box::new(|_| window_update_frame(0, 0x7fff_ffff)),
                Reason::FlowControl,
            ),
            (
                "a PUSH_PROMISE",
                Box::new(|_| frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2])),
                Reason::Protocol,
            ),
            (
                "SETTINGS of a bad length",
                Box::new(|_| frame(SETTINGS, 0, 0, &[0; 5])),
                Reason::FrameSize,
            ),
            (
                "SETTINGS on a stream",
                Box::new(|_| frame(SETTINGS, 0, 1, &[])),
                Reason::Protocol,
            ),
            (
                "SETTINGS_INITIAL_WINDOW_SIZE over the limit",
                Box::new(|_| settings_frame(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31)])),
                Reason::FlowControl,
            ),
        ];
        for (what, bytes, reason) in cases.drain(..) {
            let mut c = Client::connect(limits(), &[]);
            c.call(1, false);
            let b = bytes(&mut c);
            let e = c.feed_err(&b);
            assert_eq!(e.reason, reason, "{what}: {e:?}");
            assert_eq!(
                c.read(),
                vec![Out::GoAway {
                    last_stream: 1,
                    code: reason as u32
                }],
                "{what}"
            );
            // Nothing more is read: no PING ACK, no call.
            let mut events = Vec::new();
            let mut more = frame(PING, 0, 0, &[1; 8]);
            more.extend(c.headers(3, UNARY, true));
            assert!(c.conn.feed(&more, &mut events).is_ok(), "{what}");
            assert_eq!(events, vec![], "{what}");
            assert_eq!(c.read(), vec![], "{what}");
        }
    }

    #[test]
    fn trailers_from_the_client_end_its_side() {
        let mut c = Client::connect(limits(), &[]);
        c.call(1, false);
        let h = c.headers(1, &[("x-trailer", "1")], true);
        assert_eq!(c.feed(&h), vec![Event::End { stream: 1 }]);
        // The reply needs no RST_STREAM now.
        c.conn.reply(1, message(b"r"));
        let out = c.read();
        assert_eq!(out.last(), Some(&ok_trailers(1)));
    }

    #[test]
    fn headers_after_the_clients_end_stream_reset_the_stream() {
        let mut c = Client::connect(limits(), &[]);
        c.call(1, true);
        // The stream is half-closed (remote): a HEADERS frame on it is a stream error
        // STREAM_CLOSED (RFC 9113 section 5.1), not a second end.
        let h = c.headers(1, &[("x-trailer", "1")], true);
        assert_eq!(c.feed(&h), vec![Event::Reset { stream: 1 }]);
        assert_reset(c.read(), 1, Reason::StreamClosed);
        assert!(!c.conn.is_open(1));
    }

    #[test]
    fn data_after_the_clients_end_stream_resets_the_stream() {
        let mut c = Client::connect(limits(), &[]);
        c.call(1, true);
        assert_eq!(
            c.feed(&data_frame(1, b"more", false)),
            vec![Event::Reset { stream: 1 }]
        );
        assert_reset(c.read(), 1, Reason::StreamClosed);
        assert!(!c.conn.is_open(1));
    }

    #[test]
    fn an_early_reply_resets_the_stream() {
        let mut c = Client::connect(limits(), &[]);
        c.call(1, false);
        let m = message(b"early");
        c.conn.reply(1, m.clone());
        assert_eq!(
            c.read(),
            vec![
                headers(1, false, OK_HEAD),
                data(1, false, &m),
                ok_trailers(1),
                Out::Rst {
                    stream: 1,
                    code: Reason::NoError as u32
                },
            ]
        );
        // The rest of the body, already sent, is dropped quietly.
        assert_eq!(c.feed(&data_frame(1, b"rest", true)), vec![]);
        assert_eq!(c.read(), vec![]);
    }
}
