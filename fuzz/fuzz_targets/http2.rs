//! The gRPC server's HTTP/2 state machine (`net::http2::Conn`) fed the client preface
//! and then any bytes, cut into a few chunks, every call answered as `node::grpc` would.
//! For any input: nothing panics; the output is a sequence of whole frames whose DATA
//! frames fit the client's frame size (16384 unless its SETTINGS raised it) and its flow
//! control windows, whose header blocks decode, and which say nothing on a stream after
//! its end; after a connection error (its GOAWAY last) nothing more is read.
//!
//! Input: the first byte picks how calls are answered, the next two where the rest is
//! cut; the rest is what the client sends after its preface.
#![no_main]

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use loona_hpack::Decoder;
use ringkv_server::net::http2::{Conn, End, Event, Limits, PREFACE};

const FRAME_HEADER: usize = 9;
const FRAME_DEFAULT: usize = 16_384;
const WINDOW_DEFAULT: u64 = 65_535;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

struct Frame<'a> {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &'a [u8],
}

/// Whole frames from the front of `b` (the server's framing: none over 16384 bytes is
/// read), and whether they covered all of it.
fn frames(mut b: &[u8], len_max: usize) -> (Vec<Frame<'_>>, bool) {
    let mut v = Vec::new();
    while b.len() >= FRAME_HEADER {
        let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
        if len > len_max || b.len() < FRAME_HEADER + len {
            return (v, false);
        }
        v.push(Frame {
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
            payload: &b[FRAME_HEADER..FRAME_HEADER + len],
        });
        b = &b[FRAME_HEADER + len..];
    }
    (v, b.is_empty())
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

/// What the client's frames allow at most (whatever the server made of them): the
/// largest DATA frame, the connection's window, each stream's window.
struct Allowed {
    frame_max: usize,
    connection: u64,
    initial_max: u64,
    streams: HashMap<u32, u64>,
}

impl Allowed {
    fn of(input: &[u8]) -> Allowed {
        let mut a = Allowed {
            frame_max: FRAME_DEFAULT,
            connection: WINDOW_DEFAULT,
            initial_max: WINDOW_DEFAULT,
            streams: HashMap::new(),
        };
        for f in frames(input, FRAME_DEFAULT).0 {
            match f.kind {
                SETTINGS if f.flags & 0x1 == 0 && f.payload.len() % 6 == 0 => {
                    for s in f.payload.chunks_exact(6) {
                        let v = u32_at(s, 2);
                        match u16::from_be_bytes([s[0], s[1]]) {
                            0x4 => a.initial_max = a.initial_max.max(u64::from(v)),
                            0x5 => a.frame_max = a.frame_max.max(v as usize),
                            _ => {}
                        }
                    }
                }
                WINDOW_UPDATE if f.payload.len() == 4 => {
                    let inc = u64::from(u32_at(f.payload, 0) & 0x7fff_ffff);
                    if f.stream == 0 {
                        a.connection += inc;
                    } else {
                        *a.streams.entry(f.stream).or_default() += inc;
                    }
                }
                _ => {}
            }
        }
        a
    }
}

/// Answers a call as `node::grpc` might: a reply (small, or larger than the windows and
/// the frame size), an error status, a bare HTTP status, messages then a status.
fn answer(conn: &mut Conn, stream: u32, how: u8) {
    let pick = (u32::from(how) + stream / 2) % 5;
    let msg = |len: usize| Bytes::from(vec![(stream & 0xff) as u8; len]);
    match pick {
        0 => conn.reply(stream, msg(5 + usize::from(how))),
        1 => conn.reply(stream, msg(16_000 + usize::from(how) * 300)),
        2 => conn.end(
            stream,
            End::Grpc {
                code: 5,
                message: "no such key: café 100%",
            },
        ),
        3 => conn.end(stream, End::Http(415)),
        _ => {
            conn.send_message(stream, msg(3));
            conn.send_message(stream, msg(40_000));
            conn.end(
                stream,
                End::Grpc {
                    code: 0,
                    message: "",
                },
            );
        }
    }
}

/// The server's output, checked against what the client allowed.
fn check_output(out: &[u8], allowed: &Allowed, failed: bool) {
    let (frames, whole) = frames(out, usize::MAX);
    assert!(whole, "the output is not whole frames");
    let mut dec = Decoder::new();
    let mut block: Option<(u32, bool, Vec<u8>)> = None;
    let mut sent_connection = 0u64;
    let mut sent: HashMap<u32, u64> = HashMap::new();
    let mut headed = HashSet::new();
    let mut ended = HashSet::new();
    for (i, f) in frames.iter().enumerate() {
        if let Some((stream, ..)) = &block {
            assert!(
                f.kind == CONTINUATION && f.stream == *stream,
                "a header block interrupted"
            );
        }
        match f.kind {
            DATA => {
                assert!(f.stream % 2 == 1, "DATA on stream {}", f.stream);
                assert!(
                    f.payload.len() <= allowed.frame_max,
                    "a DATA frame of {} bytes (the client allows {})",
                    f.payload.len(),
                    allowed.frame_max
                );
                assert!(headed.contains(&f.stream), "DATA before the headers");
                assert!(!ended.contains(&f.stream), "DATA after the stream's end");
                sent_connection += f.payload.len() as u64;
                assert!(
                    sent_connection <= allowed.connection,
                    "{sent_connection} bytes of DATA over the connection's window {}",
                    allowed.connection
                );
                let s = sent.entry(f.stream).or_default();
                *s += f.payload.len() as u64;
                let window =
                    allowed.initial_max + allowed.streams.get(&f.stream).copied().unwrap_or(0);
                assert!(
                    *s <= window,
                    "{s} bytes of DATA over stream window {window}"
                );
            }
            HEADERS | CONTINUATION => {
                assert!(f.stream % 2 == 1, "HEADERS on stream {}", f.stream);
                assert!(!ended.contains(&f.stream), "HEADERS after the stream's end");
                if f.kind == HEADERS {
                    block = Some((f.stream, f.flags & END_STREAM != 0, Vec::new()));
                } else {
                    assert!(block.is_some(), "a CONTINUATION without HEADERS");
                }
                let (stream, end_stream, b) = block.as_mut().expect("a block is open");
                b.extend_from_slice(f.payload);
                if f.flags & END_HEADERS != 0 {
                    let fields = dec.decode(b).expect("the server's header block decodes");
                    assert!(
                        fields
                            .iter()
                            .any(|(n, _)| n == b":status" || n == b"grpc-status"),
                        "a header block with no status"
                    );
                    headed.insert(*stream);
                    if *end_stream {
                        ended.insert(*stream);
                    }
                    block = None;
                }
            }
            RST_STREAM => {
                assert!(f.stream != 0 && f.payload.len() == 4);
                ended.insert(f.stream);
            }
            GOAWAY => {
                assert!(f.stream == 0 && f.payload.len() == 8);
                assert!(failed, "a GOAWAY without a connection error");
                assert_eq!(i, frames.len() - 1, "output after the GOAWAY");
            }
            _ => {}
        }
    }
    assert!(block.is_none(), "a header block left open");
}

fuzz_target!(|data: &[u8]| {
    let (ctl, input) = data.split_at(data.len().min(3));
    let how = ctl.first().copied().unwrap_or(0);
    let mut cuts: Vec<usize> = ctl
        .iter()
        .skip(1)
        .map(|&b| usize::from(b) * input.len() / 255)
        .collect();
    cuts.sort_unstable();
    cuts.push(input.len());

    let limits = Limits {
        streams_max: 8,
        stream_window_bytes: 1 << 16,
        connection_window_bytes: 1 << 20,
        header_list_bytes_max: 8 << 10,
        header_block_bytes_max: 32 << 10,
        output_bytes_max: 64 << 20,
    };
    let mut conn = Conn::new(limits);
    let mut events = Vec::new();
    conn.feed(PREFACE, &mut events)
        .expect("the preface is accepted");
    assert!(events.is_empty());
    let mut out = Vec::from(&conn.take_output()[..]);

    let mut failed = false;
    let mut at = 0;
    for cut in cuts {
        let chunk = &input[at..cut];
        at = cut;
        let r = conn.feed(chunk, &mut events);
        if failed {
            assert!(r.is_ok(), "an error after the connection's error");
            assert!(events.is_empty(), "events after the connection's error");
            assert!(!conn.has_output(), "output after the connection's error");
            continue;
        }
        if r.is_err() {
            failed = true;
            assert!(conn.is_closed());
            // The events before the bad frame are not answered: the connection is over.
            events.clear();
        }
        for ev in events.drain(..) {
            // (A call reset later in the same chunk is answered too: a no-op.)
            if let Event::Call { stream, .. } = ev {
                assert!(stream % 2 == 1, "a call on stream {stream}");
                answer(&mut conn, stream, how);
            }
        }
        out.extend_from_slice(&conn.take_output());
    }
    assert_eq!(conn.is_closed(), failed);
    check_output(&out, &Allowed::of(input), failed);
});
