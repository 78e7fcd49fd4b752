//! Raft messages on the wire: rkyv archives validated in place.
//!
//! Used by the peer connection tasks. Sending archives a `Message` once; receiving
//! validates the archive where it lies (never `access_unchecked`: the bytes come from a
//! socket) and builds the core's `Message` with every entry payload a zero-copy slice of
//! the receive buffer. Must not touch the Raft core or the connections themselves.

use bytes::Bytes;
use ringkv_proto::outcome::Outcome;
use rkyv::rancor;

use ringkv_raft::{Body, Entry, EntryKind, Membership, Message, SnapshotMeta};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub struct WireEntry {
    pub index: u64,
    pub term: u64,
    pub kind: u8,
    pub data: Vec<u8>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub enum WireBody {
    PreVote {
        last_index: u64,
        last_term: u64,
    },
    PreVoteResp {
        granted: bool,
    },
    Vote {
        last_index: u64,
        last_term: u64,
        force: bool,
    },
    VoteResp {
        granted: bool,
    },
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<WireEntry>,
        commit: u64,
    },
    AppendResp {
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
    },
    Heartbeat {
        commit: u64,
        commit_term: u64,
        seq: u64,
    },
    HeartbeatResp {
        seq: u64,
    },
    Snapshot {
        index: u64,
        term: u64,
        membership: Vec<u8>,
    },
    TimeoutNow,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub struct WireMessage {
    pub from: u64,
    pub to: u64,
    pub term: u64,
    pub body: WireBody,
}

/// Archives a message (the frame body of a `FrameKind::Raft` frame).
pub fn encode_message(m: &Message) -> rkyv::util::AlignedVec {
    let body = match &m.body {
        Body::PreVote {
            last_index,
            last_term,
        } => WireBody::PreVote {
            last_index: *last_index,
            last_term: *last_term,
        },
        Body::PreVoteResp { granted } => WireBody::PreVoteResp { granted: *granted },
        Body::Vote {
            last_index,
            last_term,
            force,
        } => WireBody::Vote {
            last_index: *last_index,
            last_term: *last_term,
            force: *force,
        },
        Body::VoteResp { granted } => WireBody::VoteResp { granted: *granted },
        Body::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => WireBody::Append {
            prev_index: *prev_index,
            prev_term: *prev_term,
            entries: entries
                .iter()
                .map(|e| WireEntry {
                    index: e.index,
                    term: e.term,
                    kind: e.kind as u8,
                    data: e.data.to_vec(),
                })
                .collect(),
            commit: *commit,
        },
        Body::AppendResp {
            success,
            index,
            hint_index,
            hint_term,
        } => WireBody::AppendResp {
            success: *success,
            index: *index,
            hint_index: *hint_index,
            hint_term: *hint_term,
        },
        Body::Heartbeat {
            commit,
            commit_term,
            seq,
        } => WireBody::Heartbeat {
            commit: *commit,
            commit_term: *commit_term,
            seq: *seq,
        },
        Body::HeartbeatResp { seq } => WireBody::HeartbeatResp { seq: *seq },
        Body::Snapshot { meta } => WireBody::Snapshot {
            index: meta.index,
            term: meta.term,
            membership: meta.membership.encode(),
        },
        Body::TimeoutNow => WireBody::TimeoutNow,
    };
    let w = WireMessage {
        from: m.from,
        to: m.to,
        term: m.term,
        body,
    };
    rkyv::to_bytes::<rancor::Error>(&w).expect("archiving into memory cannot fail")
}

/// Validates an archived message in place and builds the core's `Message`; entry payloads
/// are slices of `buf` (copied once into an aligned buffer only if `buf` is misaligned).
/// Refuses bytes that are not an archive, and messages that fail `Message::check`
/// (non-contiguous entries, terms going backwards, undecodable membership entries).
pub fn decode_message(buf: &Bytes) -> Result<Message, String> {
    let buf = if (buf.as_ptr() as usize) % 16 == 0 {
        buf.clone()
    } else {
        let mut v = rkyv::util::AlignedVec::<16>::with_capacity(buf.len());
        v.extend_from_slice(buf);
        Bytes::from_owner(v)
    };
    let w =
        rkyv::access::<ArchivedWireMessage, rancor::BoxedError>(&buf).map_err(|e| e.to_string())?;
    let base = buf.as_ptr() as usize;
    let body = match &w.body {
        ArchivedWireBody::PreVote {
            last_index,
            last_term,
        } => Body::PreVote {
            last_index: last_index.to_native(),
            last_term: last_term.to_native(),
        },
        ArchivedWireBody::PreVoteResp { granted } => Body::PreVoteResp { granted: *granted },
        ArchivedWireBody::Vote {
            last_index,
            last_term,
            force,
        } => Body::Vote {
            last_index: last_index.to_native(),
            last_term: last_term.to_native(),
            force: *force,
        },
        ArchivedWireBody::VoteResp { granted } => Body::VoteResp { granted: *granted },
        ArchivedWireBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            let mut out = Vec::with_capacity(entries.len());
            for e in entries.iter() {
                let kind = EntryKind::from_u8(e.kind)
                    .ok_or_else(|| format!("entry kind {} is unknown", e.kind))?;
                let start = e.data.as_ptr() as usize - base;
                out.push(Entry {
                    index: e.index.to_native(),
                    term: e.term.to_native(),
                    kind,
                    data: buf.slice(start..start + e.data.len()),
                });
            }
            Body::Append {
                prev_index: prev_index.to_native(),
                prev_term: prev_term.to_native(),
                entries: out,
                commit: commit.to_native(),
            }
        }
        ArchivedWireBody::AppendResp {
            success,
            index,
            hint_index,
            hint_term,
        } => Body::AppendResp {
            success: *success,
            index: index.to_native(),
            hint_index: hint_index.to_native(),
            hint_term: hint_term.to_native(),
        },
        ArchivedWireBody::Heartbeat {
            commit,
            commit_term,
            seq,
        } => Body::Heartbeat {
            commit: commit.to_native(),
            commit_term: commit_term.to_native(),
            seq: seq.to_native(),
        },
        ArchivedWireBody::HeartbeatResp { seq } => Body::HeartbeatResp {
            seq: seq.to_native(),
        },
        ArchivedWireBody::Snapshot {
            index,
            term,
            membership,
        } => Body::Snapshot {
            meta: SnapshotMeta {
                index: index.to_native(),
                term: term.to_native(),
                membership: Membership::decode(membership.as_slice())
                    .ok_or("snapshot membership does not decode")?,
            },
        },
        ArchivedWireBody::TimeoutNow => Body::TimeoutNow,
    };
    let m = Message {
        from: w.from.to_native(),
        to: w.to.to_native(),
        term: w.term.to_native(),
        body,
    };
    // What the core relies on of a peer's message is checked here, at the boundary: a
    // bad message is refused with its reason instead of reaching an assertion.
    m.check().map_err(|e| e.to_string())?;
    Ok(m)
}

/// A client call forwarded by a follower to the leader, the leader's answer, or snapshot
/// transfer and removal notices: every `FrameKind::Client` frame on a peer connection
/// (the same frame kind native clients use, on connections of their own). Not on the Raft
/// hot path: the archive is validated and copied out.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// An encoded `shard::Command` (put or delete) to propose.
    Write { id: u64, command: Vec<u8> },
    /// `policy`: 0 linearizable, 1 lease (eventual reads are never forwarded).
    Read { id: u64, key: Vec<u8>, policy: u8 },
    /// A lease call for the leader's lessor (op: 1 keep-alive, 2 time-to-live, 3 list).
    Lease {
        id: u64,
        op: u8,
        lease: i64,
        keys: bool,
    },
    /// A read-only txn (an encoded `ringkv_store::Command::Txn`) for the leader to serve
    /// as a read; `policy` as `Read`'s.
    ReadTxn {
        id: u64,
        command: Vec<u8>,
        policy: u8,
    },
    /// A range read (an encoded `ringkv_store::RangeRequest`) for the leader to serve;
    /// `policy` as `Read`'s.
    Range {
        id: u64,
        request: Vec<u8>,
        policy: u8,
    },
    /// The leader's outcome for request `id`.
    Reply { id: u64, outcome: Outcome },
    /// An operator call (op: 1 join, 2 promote, 3 remove, 4 transfer leadership).
    Admin {
        id: u64,
        op: u8,
        node_id: u64,
        address: String,
    },
    /// Part of the snapshot at (`index`, `term`): bytes `offset..offset + data.len()` of
    /// `total`, whose CRC32C is `crc`. `membership` is the snapshot's configuration.
    SnapChunk {
        index: u64,
        term: u64,
        membership: Vec<u8>,
        offset: u64,
        total: u64,
        crc: u32,
        data: Vec<u8>,
    },
    /// The receiver has bytes `..next` of snapshot `index` (`ok: false`: start again). At
    /// `next == total` the snapshot is verified and stored.
    SnapAck { index: u64, next: u64, ok: bool },
    /// The removal of `node_id` (the receiver) committed: it must stop.
    Removed { node_id: u64 },
}

impl ClientFrame {
    pub fn encode(&self) -> rkyv::util::AlignedVec {
        rkyv::to_bytes::<rancor::Error>(self).expect("archiving to memory cannot fail")
    }

    /// Validates the archive in place (`buf` must be 16-byte aligned, as the transport's
    /// receive buffers are) and copies it out.
    pub fn decode(buf: &[u8]) -> Result<Self, String> {
        let a = rkyv::access::<ArchivedClientFrame, rancor::BoxedError>(buf)
            .map_err(|e| e.to_string())?;
        rkyv::deserialize::<ClientFrame, rancor::BoxedError>(a).map_err(|e| e.to_string())
    }
}
