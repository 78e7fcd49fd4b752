//! Peer and client frames as they come off a socket: the header check, the checksum, and
//! every body decoder. Nothing may panic; a body that decodes must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_proto::frame::{FrameHeader, FrameKind, HEADER_BYTES};
use ringkv_proto::native;
use ringkv_server::net::wire::{ClientFrame, decode_message, encode_message};

const FRAME_BYTES_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // The bodies as a reader sees them: every decoder on the raw bytes, aligned as the
    // connection's read buffer aligns them.
    let body = bytes::Bytes::copy_from_slice(data);
    if let Ok(m) = decode_message(&body) {
        let again = decode_message(&bytes::Bytes::copy_from_slice(&encode_message(&m)))
            .expect("a decoded message re-encodes to something decodable");
        assert_eq!(again, m);
    }
    let _ = ClientFrame::decode(data);
    if let Ok(r) = native::decode_request(&body) {
        assert_eq!(native::decode_request(&native::encode(&r)).unwrap(), r);
    }
    let _ = native::decode_response(&body);
    // A whole frame: the header is judged before the body is read.
    if data.len() >= HEADER_BYTES {
        let h: &[u8; HEADER_BYTES] = data[..HEADER_BYTES].try_into().unwrap();
        if let Ok(hdr) = FrameHeader::decode(h, FRAME_BYTES_MAX) {
            assert!(hdr.body_bytes as usize <= FRAME_BYTES_MAX);
            let rest = &data[HEADER_BYTES..];
            if rest.len() >= hdr.body_bytes as usize {
                let b = &rest[..hdr.body_bytes as usize];
                if FrameHeader::for_body(hdr.kind, b).crc == hdr.crc && hdr.kind == FrameKind::Raft {
                    let _ = decode_message(&bytes::Bytes::copy_from_slice(b));
                }
            }
        }
    }
});
