//! The bytes of an inbound HTTP/2 connection on their way to h2, with one repair: an
//! `:authority` that is a URL.
//!
//! grpc-go, as etcd's 3.4 clients use it, sends the endpoint it was given as `:authority`:
//! `etcdctl --endpoints http://127.0.0.1:2379` sends "http://127.0.0.1:2379", which is not
//! an authority. etcd's server never reads it; h2 resets the stream (PROTOCOL_ERROR), and
//! its maintainers keep that strictness. So the first header block of every connection is
//! decoded here (HPACK, with the client's dynamic table mirrored): when its `:authority` is
//! valid, the connection's bytes go to h2 untouched from then on (grpc-go sends one
//! authority per connection); when not, every header block of the connection is decoded and
//! sent on re-encoded without indexing (h2's table stays empty, the client's is mirrored
//! here), the authority cut down to its host and port.
//!
//! Pure (bytes in, bytes out): used by `node::grpc`'s socket adapter on the connection's
//! shard executor. Must not touch node state.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use loona_hpack::Decoder;

/// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
const PREFACE_BYTES: usize = 24;
const FRAME_HEADER_BYTES: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size h2 accepts (SETTINGS_MAX_FRAME_SIZE left at the protocol default).
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;
/// The dynamic table a client may use (SETTINGS_HEADER_TABLE_SIZE left at the default).
const HEADER_TABLE_BYTES: usize = 4096;
/// A header block longer than this is left for h2 to refuse.
const HEADER_BLOCK_BYTES_MAX: usize = 64 << 10;

enum Mode {
    /// The first header block has not arrived yet.
    Deciding(Box<Decoder<'static>>),
    /// Everything goes to h2 as received.
    PassThrough,
    /// Header blocks are decoded and re-encoded.
    Rewriting(Box<Decoder<'static>>),
}

/// A header block being gathered (a HEADERS frame and its CONTINUATION frames).
struct Block {
    /// The frames as received.
    raw: BytesMut,
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
}

/// One connection's inbound bytes.
pub struct Inbound {
    mode: Mode,
    preface_left: usize,
    /// Received and not yet examined (at most one frame in progress).
    raw: BytesMut,
    block: Option<Block>,
    /// Authorities repaired on this connection.
    pub repaired: u64,
}

impl Default for Inbound {
    fn default() -> Self {
        Self::new()
    }
}

impl Inbound {
    pub fn new() -> Inbound {
        let mut d = Decoder::new();
        d.set_max_allowed_table_size(HEADER_TABLE_BYTES);
        Inbound {
            mode: Mode::Deciding(Box::new(d)),
            preface_left: PREFACE_BYTES,
            raw: BytesMut::new(),
            block: None,
            repaired: 0,
        }
    }

    /// Whether bytes may go from the socket to h2 directly from now on.
    pub fn passing_through(&self) -> bool {
        matches!(self.mode, Mode::PassThrough) && self.raw.is_empty() && self.block.is_none()
    }

    /// Takes bytes received from the client; appends to `out` what h2 is to read.
    pub fn feed(&mut self, input: &[u8], out: &mut BytesMut) {
        self.raw.extend_from_slice(input);
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.raw.len());
            out.extend_from_slice(&self.raw.split_to(n));
            self.preface_left -= n;
            if self.preface_left > 0 {
                return;
            }
        }
        loop {
            if matches!(self.mode, Mode::PassThrough) {
                if let Some(b) = self.block.take() {
                    out.extend_from_slice(&b.raw);
                }
                out.extend_from_slice(&self.raw.split());
                return;
            }
            if self.raw.len() < FRAME_HEADER_BYTES {
                return;
            }
            let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
            if len > FRAME_PAYLOAD_BYTES_MAX {
                // Over the size h2 allows: h2 refuses it and closes the connection.
                self.mode = Mode::PassThrough;
                continue;
            }
            if self.raw.len() < FRAME_HEADER_BYTES + len {
                return;
            }
            let kind = self.raw[3];
            let flags = self.raw[4];
            let stream_id =
                u32::from_be_bytes(self.raw[5..9].try_into().expect("4 bytes")) & 0x7fff_ffff;
            let frame = self.raw.split_to(FRAME_HEADER_BYTES + len);
            let payload = &frame[FRAME_HEADER_BYTES..];
            match (kind, self.block.as_mut()) {
                (HEADERS, None) => {
                    let Some((priority, fragment)) = headers_payload(flags, payload) else {
                        self.pass(frame, out);
                        continue;
                    };
                    let mut b = Block {
                        raw: BytesMut::new(),
                        stream_id,
                        flags,
                        priority,
                        fragment: BytesMut::from(fragment),
                    };
                    b.raw.extend_from_slice(&frame);
                    if flags & END_HEADERS != 0 {
                        self.finish(b, out);
                    } else {
                        self.block = Some(b);
                    }
                }
                (CONTINUATION, Some(b)) if b.stream_id == stream_id => {
                    b.raw.extend_from_slice(&frame);
                    b.fragment.extend_from_slice(payload);
                    if b.fragment.len() > HEADER_BLOCK_BYTES_MAX {
                        self.pass(BytesMut::new(), out);
                    } else if flags & END_HEADERS != 0 {
                        let b = self.block.take().expect("a block");
                        self.finish(b, out);
                    }
                }
                // Anything else inside a header block breaks the protocol: h2 says so.
                (_, Some(_)) => self.pass(frame, out),
                (_, None) => out.extend_from_slice(&frame),
            }
        }
    }

    /// The client closed its side: whatever is held goes to h2 as it is.
    pub fn finish_input(&mut self, out: &mut BytesMut) {
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.raw);
        }
        out.extend_from_slice(&self.raw.split());
    }

    /// Gives up on repairs: the held block, `frame` and the rest go to h2 untouched.
    fn pass(&mut self, frame: BytesMut, out: &mut BytesMut) {
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.raw);
        }
        out.extend_from_slice(&frame);
        self.mode = Mode::PassThrough;
    }

    fn finish(&mut self, b: Block, out: &mut BytesMut) {
        let decoder = match &mut self.mode {
            Mode::Deciding(d) | Mode::Rewriting(d) => d,
            Mode::PassThrough => {
                out.extend_from_slice(&b.raw);
                return;
            }
        };
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let decoded = decoder.decode_with_cb(&b.fragment, |n: Cow<[u8]>, v: Cow<[u8]>| {
            fields.push((n.into_owned(), v.into_owned()))
        });
        if decoded.is_err() {
            // h2 finds the same error in the same bytes.
            self.pass(b.raw, out);
            return;
        }
        let mut repaired = false;
        fields.retain_mut(|(n, v)| {
            if n.as_slice() != b":authority" || valid_authority(v) {
                return true;
            }
            repaired = true;
            match repair_authority(v) {
                Some(a) => {
                    *v = a;
                    true
                }
                None => false,
            }
        });
        if matches!(self.mode, Mode::Deciding(_)) && !repaired {
            self.mode = Mode::PassThrough;
            out.extend_from_slice(&b.raw);
            return;
        }
        if matches!(self.mode, Mode::Deciding(_))
            && let Mode::Deciding(d) = std::mem::replace(&mut self.mode, Mode::PassThrough)
        {
            self.mode = Mode::Rewriting(d);
        }
        if repaired {
            self.repaired += 1;
        }
        let mut block = BytesMut::new();
        for (n, v) in &fields {
            // Literal without indexing, new name: h2's dynamic table is never written.
            block.put_u8(0);
            put_string(&mut block, n);
            put_string(&mut block, v);
        }
        let mut first = BytesMut::new();
        if let Some(p) = b.priority {
            first.extend_from_slice(&p);
        }
        let room = FRAME_PAYLOAD_BYTES_MAX - first.len();
        let take = room.min(block.len());
        first.extend_from_slice(&block.split_to(take));
        let keep = b.flags & (END_STREAM | PRIORITY);
        let end = if block.is_empty() { END_HEADERS } else { 0 };
        put_frame(out, HEADERS, keep | end, b.stream_id, &first);
        while !block.is_empty() {
            let part = block.split_to(FRAME_PAYLOAD_BYTES_MAX.min(block.len()));
            let end = if block.is_empty() { END_HEADERS } else { 0 };
            put_frame(out, CONTINUATION, end, b.stream_id, &part);
        }
    }
}

/// A HEADERS frame's priority fields and header block fragment (padding removed); `None`
/// when the padding does not fit (h2 refuses such a frame).
fn headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = *p.first()? as usize;
        p = &p[1..];
    }
    let priority = if flags & PRIORITY != 0 {
        let fields: [u8; 5] = p.get(..5)?.try_into().ok()?;
        p = &p[5..];
        Some(fields)
    } else {
        None
    };
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// "http://host:port/..." -> "host:port"; `None` when no valid authority is left.
fn repair_authority(v: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(v).ok()?;
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let host = rest.split('/').next()?;
    valid_authority(host.as_bytes()).then(|| host.as_bytes().to_vec())
}

/// An HPACK string literal, not Huffman-coded.
fn put_string(out: &mut BytesMut, s: &[u8]) {
    put_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix after the bits of `first`.
fn put_int(out: &mut BytesMut, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.put_u8(first | v as u8);
        return;
    }
    out.put_u8(first | max as u8);
    v -= max;
    while v >= 128 {
        out.put_u8((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.put_u8(v as u8);
}

fn put_frame(out: &mut BytesMut, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
    out.extend_from_slice(payload);
}

/// The header blocks in a byte stream (after the preface): (stream, flags, block).
#[cfg(test)]
fn blocks(mut b: &[u8]) -> Vec<(u32, u8, Vec<u8>)> {
    let mut out: Vec<(u32, u8, Vec<u8>)> = Vec::new();
    while b.len() >= FRAME_HEADER_BYTES {
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
        let (kind, flags) = (b[3], b[4]);
        let sid = u32::from_be_bytes(b[5..9].try_into().unwrap());
        let payload = &b[9..9 + len];
        match kind {
            HEADERS => {
                let (_, frag) = headers_payload(flags, payload).unwrap();
                out.push((sid, flags, frag.to_vec()));
            }
            CONTINUATION => out.last_mut().unwrap().2.extend_from_slice(payload),
            _ => {}
        }
        b = &b[9 + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::Encoder;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// A client's connection: the preface, SETTINGS, then one request per authority (the
    /// client's encoder indexes, so later requests refer to its dynamic table).
    fn client(authorities: &[&str], padded: bool) -> Vec<u8> {
        let mut enc = Encoder::new();
        let mut w = BytesMut::new();
        w.extend_from_slice(PREFACE);
        put_frame(&mut w, 0x4, 0, 0, &[]);
        for (i, a) in authorities.iter().enumerate() {
            let sid = 1 + 2 * i as u32;
            let block = enc.encode(vec![
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", b"/etcdserverpb.Maintenance/Status"),
                (b":authority", a.as_bytes()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
            ]);
            let mut payload = Vec::new();
            let mut flags = END_HEADERS;
            if padded {
                flags |= PADDED;
                payload.push(3);
            }
            payload.extend_from_slice(&block);
            if padded {
                payload.extend_from_slice(&[0, 0, 0]);
            }
            put_frame(&mut w, HEADERS, flags, sid, &payload);
            put_frame(&mut w, 0x0, END_STREAM, sid, &[0, 0, 0, 0, 0]);
        }
        w.to_vec()
    }

    /// Feeds `input` in pieces of `step` bytes.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, u64) {
        let mut inb = Inbound::new();
        let mut out = BytesMut::new();
        for c in input.chunks(step) {
            inb.feed(c, &mut out);
        }
        inb.finish_input(&mut out);
        (out.to_vec(), inb.repaired)
    }

    /// What h2 would decode: each block's fields, with a fresh decoder.
    fn decoded(out: &[u8]) -> Vec<Vec<(String, String)>> {
        assert_eq!(&out[..24], PREFACE);
        let mut d = Decoder::new();
        blocks(&out[24..])
            .into_iter()
            .map(|(_, _, b)| {
                d.decode(&b)
                    .unwrap()
                    .into_iter()
                    .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                    .collect()
            })
            .collect()
    }

    fn authority(fields: &[(String, String)]) -> Option<&str> {
        fields
            .iter()
            .find(|(n, _)| n == ":authority")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_valid_authority_passes_the_connection_through_untouched() {
        let input = client(&["127.0.0.1:2379", "127.0.0.1:2379"], false);
        for step in [1, 7, input.len()] {
            let (out, repaired) = run(&input, step);
            assert_eq!(out, input, "step {step}");
            assert_eq!(repaired, 0);
        }
    }

    #[test]
    fn a_url_authority_is_cut_to_host_and_port_in_every_block() {
        for padded in [false, true] {
            let input = client(&["http://127.0.0.1:2379"; 3], padded);
            for step in [1, 5, 64, input.len()] {
                let (out, repaired) = run(&input, step);
                assert_eq!(repaired, 3, "step {step}");
                let blocks = decoded(&out);
                assert_eq!(blocks.len(), 3);
                for f in &blocks {
                    assert_eq!(authority(f), Some("127.0.0.1:2379"));
                    assert_eq!(
                        f[2],
                        (":path".into(), "/etcdserverpb.Maintenance/Status".into())
                    );
                    assert_eq!(f.len(), 6);
                }
                // DATA frames come through with their stream and flags.
                let data = out
                    .windows(5)
                    .filter(|w| *w == [0, 0, 5, 0, END_STREAM])
                    .count();
                assert_eq!(data, 3);
            }
        }
    }

    #[test]
    fn an_authority_that_cannot_be_repaired_is_dropped() {
        let (out, repaired) = run(&client(&["unix:///var/run/etcd sock"], false), 3);
        assert_eq!(repaired, 1);
        let blocks = decoded(&out);
        assert_eq!(authority(&blocks[0]), None);
        assert_eq!(blocks[0].len(), 5);
    }

    #[test]
    fn continuations_are_joined_and_large_blocks_split_again() {
        let mut enc = Encoder::new();
        let big = "x".repeat(20_000);
        let block = enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (b":authority", b"http://h:1"),
            (b"x-big", big.as_bytes()),
        ]);
        let mut w = BytesMut::new();
        w.extend_from_slice(PREFACE);
        let (a, rest) = block.split_at(10);
        let (b, c) = rest.split_at(rest.len() / 2);
        put_frame(&mut w, HEADERS, END_STREAM, 1, a);
        put_frame(&mut w, CONTINUATION, 0, 1, b);
        put_frame(&mut w, CONTINUATION, END_HEADERS, 1, c);
        let (out, repaired) = run(&w, 1000);
        assert_eq!(repaired, 1);
        let bl = blocks(&out[24..]);
        assert_eq!(bl.len(), 1);
        assert_eq!(bl[0].1 & END_STREAM, END_STREAM, "END_STREAM kept");
        let f = decoded(&out);
        assert_eq!(authority(&f[0]), Some("h:1"));
        assert_eq!(f[0][2].1.len(), 20_000);
        // Every frame within the frame size h2 accepts.
        let mut rest = &out[24..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            assert!(len <= FRAME_PAYLOAD_BYTES_MAX);
            rest = &rest[9 + len..];
        }
    }

    #[test]
    fn integers_use_the_prefix_and_continuation_bytes() {
        let mut b = BytesMut::new();
        put_int(&mut b, 0, 7, 126);
        put_int(&mut b, 0, 7, 127);
        put_int(&mut b, 0, 7, 1337);
        assert_eq!(&b[..], [126, 127, 0, 127, 0xba, 0x09]);
    }
}
