//! What a peer can make a node do: arbitrary bytes as a Raft frame body (the rkyv path the
//! transport takes), and arbitrary bytes read as a message's fields (so gaps, backwards
//! terms, odd kinds and undecodable membership payloads are reached without first having
//! to forge an archive), stepped into follower and leader cores holding a log. The
//! transport refuses what `Message::check` refuses; the core must survive even what it is
//! handed unchecked. Nothing may panic: an invariant assertion here is a crash a peer can
//! cause.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringkv_raft::{
    Body, Config, Entry, EntryKind, HardState, Membership, Message, Raft, Restore,
};
use ringkv_server::net::wire::decode_message;

/// A node `id` of {1, 2, 3} holding entries 1..=6 (terms 1, 1, 2, 2, 3, 3), commit 4.
fn node(id: u64, leader: bool) -> Raft {
    let entries = (1..=6u64)
        .map(|i| Entry {
            index: i,
            term: i.div_ceil(2),
            kind: EntryKind::Normal,
            data: Bytes::from(vec![i as u8; 3]),
        })
        .collect();
    let mut r = Raft::new(
        Config::new(id),
        Restore {
            hard_state: HardState {
                term: 3,
                vote: 0,
                commit: 4,
            },
            snapshot: None,
            entries,
            initial_membership: Membership::with_voters([1, 2, 3]),
        },
    )
    .expect("valid config");
    if leader {
        r.campaign_now();
    }
    r
}

/// Drains every Ready as a driver would (persisted and applied at once).
fn drive(r: &mut Raft) {
    for _ in 0..8 {
        if !r.has_ready() {
            return;
        }
        let rd = r.ready();
        if rd.must_persist() {
            r.on_persisted(rd.number);
        }
        if let Some(last) = rd.committed.last() {
            r.on_applied(last.index);
        }
    }
}

/// Reads little-endian fields off the input; zeros once it runs out.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn small(&mut self) -> u64 {
        u64::from(self.u8() % 12)
    }
}

/// A message from the fields in `c`: mostly near the node's log, so replies, gaps,
/// overlaps and conflicts are all reached.
fn message(c: &mut Cursor<'_>, to: u64) -> Message {
    let from = 1 + u64::from(c.u8() % 3);
    let term = c.small();
    let body = match c.u8() % 8 {
        0 => Body::PreVote {
            last_index: c.small(),
            last_term: c.small(),
        },
        1 => Body::Vote {
            last_index: c.small(),
            last_term: c.small(),
            force: c.u8() & 1 == 1,
        },
        2 => Body::AppendResp {
            success: c.u8() & 1 == 1,
            index: c.small(),
            hint_index: c.small(),
            hint_term: c.small(),
        },
        3 => Body::Heartbeat {
            commit: c.small(),
            commit_term: c.small(),
            seq: c.small(),
        },
        4 => Body::VoteResp {
            granted: c.u8() & 1 == 1,
        },
        5 => Body::TimeoutNow,
        _ => {
            let prev_index = c.small();
            let n = c.u8() % 6;
            let mut index = prev_index;
            let entries = (0..n)
                .map(|_| {
                    // Mostly the next index, sometimes a jump or a repeat.
                    index = match c.u8() % 8 {
                        0 => index + 2,
                        1 => index,
                        _ => index + 1,
                    };
                    let kind = match c.u8() % 6 {
                        0 => EntryKind::Membership,
                        1 => EntryKind::Noop,
                        _ => EntryKind::Normal,
                    };
                    let len = usize::from(c.u8() % 40);
                    let data: Vec<u8> = (0..len).map(|_| c.u8()).collect();
                    Entry {
                        index,
                        term: c.small(),
                        kind,
                        data: Bytes::from(data),
                    }
                })
                .collect();
            Body::Append {
                prev_index,
                prev_term: c.small(),
                entries,
                commit: c.small(),
            }
        }
    };
    Message {
        from,
        to,
        term,
        body,
    }
}

fuzz_target!(|data: &[u8]| {
    // The wire path: what decodes has passed the boundary check; step it.
    if let Ok(m) = decode_message(&Bytes::copy_from_slice(data)) {
        assert!(m.check().is_ok());
        let mut r = node(m.to.clamp(1, 3), false);
        r.step(m);
        drive(&mut r);
    }
    // The fields path: a follower and a leader, each stepping several messages, checked
    // as the transport checks them and also unchecked (the core refuses on its own).
    let mut c = Cursor(data);
    for leader in [false, true] {
        let mut r = node(if leader { 1 } else { 2 }, leader);
        drive(&mut r);
        for _ in 0..4 {
            let m = message(&mut c, r.id());
            if c.u8() & 1 == 0 && m.check().is_err() {
                continue; // refused at the boundary
            }
            r.step(m);
            drive(&mut r);
        }
    }
});
