//! Frames and Raft messages on the wire: every message round-trips, payloads are slices of
//! the receive buffer, and damaged, oversized or foreign input is refused without panics.

use bytes::Bytes;
use ringkv_proto::frame::{FrameError, FrameHeader, FrameKind, HEADER_BYTES};
use ringkv_raft::{Body, Entry, EntryKind, Membership, Message, SnapshotMeta};
use ringkv_rng::Rng;
use ringkv_server::net::wire::{decode_message, encode_message};

fn msg(body: Body) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 7,
        body,
    }
}

fn all_bodies() -> Vec<Body> {
    vec![
        Body::PreVote {
            last_index: 10,
            last_term: 3,
        },
        Body::PreVoteResp { granted: true },
        Body::Vote {
            last_index: 11,
            last_term: 4,
            force: true,
        },
        Body::VoteResp { granted: false },
        Body::Append {
            prev_index: 5,
            prev_term: 2,
            entries: (6..40)
                .map(|i| Entry {
                    index: i,
                    term: 3,
                    kind: if i == 6 {
                        EntryKind::Noop
                    } else {
                        EntryKind::Normal
                    },
                    data: Bytes::from(vec![i as u8; (i * 7 % 300) as usize]),
                })
                .collect(),
            commit: 9,
        },
        Body::AppendResp {
            success: false,
            index: 12,
            hint_index: 8,
            hint_term: 2,
        },
        Body::Heartbeat {
            commit: 20,
            commit_term: 6,
            seq: 99,
        },
        Body::HeartbeatResp { seq: 99 },
        Body::Snapshot {
            meta: SnapshotMeta {
                index: 500,
                term: 6,
                membership: Membership::with_voters([1, 2, 3]),
            },
        },
        Body::TimeoutNow,
    ]
}

#[test]
fn every_message_round_trips_with_payloads_sliced_from_the_buffer() {
    for body in all_bodies() {
        let m = msg(body);
        let bytes = Bytes::copy_from_slice(&encode_message(&m));
        let back = decode_message(&bytes).unwrap();
        assert_eq!(back, m);
        if let Body::Append { entries, .. } = &back.body {
            // When the buffer is aligned the payloads point into it (no copy).
            if bytes.as_ptr() as usize % 16 == 0 {
                let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
                for e in entries.iter().filter(|e| !e.data.is_empty()) {
                    assert!(range.contains(&(e.data.as_ptr() as usize)));
                }
            }
        }
    }
}

#[test]
fn a_misaligned_buffer_still_decodes() {
    let m = msg(all_bodies().swap_remove(4));
    let enc = encode_message(&m);
    let mut v = vec![0u8; enc.len() + 1];
    v[1..].copy_from_slice(&enc);
    let b = Bytes::from(v).slice(1..);
    assert_eq!(decode_message(&b).unwrap(), m);
}

#[test]
fn damaged_archives_are_refused_or_caught_by_the_frame_checksum_never_a_panic() {
    let mut rng = Rng::new(5);
    for body in all_bodies() {
        let enc = encode_message(&msg(body)).to_vec();
        let hdr = FrameHeader::for_body(FrameKind::Raft, &enc);
        for cut in 0..enc.len() {
            // rkyv reads its root from the end, so a prefix can itself be an archive: the
            // frame's length and checksum catch truncation; validation must not panic.
            assert_eq!(hdr.check_body(&enc[..cut]), Err(FrameError::Checksum));
            let _ = decode_message(&Bytes::copy_from_slice(&enc[..cut]));
        }
        for _ in 0..200 {
            let mut bad = enc.clone();
            let at = rng.below(bad.len() as u64) as usize;
            bad[at] ^= 1 << rng.below(8);
            // The frame checksum always catches it; validation alone must never panic.
            assert_eq!(hdr.check_body(&bad), Err(FrameError::Checksum));
            let _ = decode_message(&Bytes::from(bad));
        }
    }
}

#[test]
fn frame_headers_refuse_oversize_before_reading_and_foreign_bytes() {
    let body = b"hello body";
    let h = FrameHeader::for_body(FrameKind::Client, body);
    let enc = h.encode();
    assert_eq!(enc.len() % 8, 0, "the body stays 8-byte aligned");
    let back = FrameHeader::decode(&enc, 1 << 20).unwrap();
    assert_eq!(back, h);
    back.check_body(body).unwrap();
    assert_eq!(back.check_body(b"hello bodY"), Err(FrameError::Checksum));
    assert_eq!(back.check_body(b"hello"), Err(FrameError::Checksum));
    // A length over frame_bytes_max is refused from the header alone.
    let mut big = FrameHeader::for_body(FrameKind::Raft, b"").encode();
    big[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        FrameHeader::decode(&big, 8 << 20),
        Err(FrameError::TooLarge { .. })
    ));
    let mut x = enc;
    x[0] = b'G'; // "GET /..." is HTTP, not a frame
    assert_eq!(FrameHeader::decode(&x, 1 << 20), Err(FrameError::BadMagic));
    let mut x = enc;
    x[4] = 9;
    assert_eq!(
        FrameHeader::decode(&x, 1 << 20),
        Err(FrameError::BadVersion(9))
    );
    let mut x = enc;
    x[5] = 77;
    assert_eq!(
        FrameHeader::decode(&x, 1 << 20),
        Err(FrameError::BadKind(77))
    );
    let mut x = enc;
    x[6] = 1;
    assert_eq!(FrameHeader::decode(&x, 1 << 20), Err(FrameError::Reserved));
    assert_eq!(HEADER_BYTES, 16);
}
