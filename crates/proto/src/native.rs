//! The native client protocol: binary frames on the node's port, pipelined by request id.
//!
//! Pure encoding, used by the shard executors (server side) and `crate::native_client` (the
//! client). A native connection opens straight with a `FrameKind::Client` frame (a peer's
//! opens with a handshake); each request carries an id, replies come back with it, in
//! completion order. Bodies are rkyv archives validated in place. Keys and values are
//! arbitrary bytes (no UTF-8 requirement); answers are typed (`outcome::Outcome`), not
//! status codes and JSON text. Must not touch node state.

use rkyv::rancor;

use crate::admin::AdminOp;
use crate::outcome::Outcome;

/// Read consistency codes in `Request::Get`.
pub const CONSISTENCY_DEFAULT: u8 = 0;
pub const CONSISTENCY_LINEARIZABLE: u8 = 1;
pub const CONSISTENCY_LEASE: u8 = 2;
pub const CONSISTENCY_EVENTUAL: u8 = 3;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Put {
        id: u64,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        id: u64,
        key: Vec<u8>,
        consistency: u8,
    },
    Delete {
        id: u64,
        key: Vec<u8>,
    },
    Status {
        id: u64,
    },
    /// An operator call; `token`: the cluster token, when one is set.
    Admin {
        id: u64,
        op: AdminOp,
        token: Option<String>,
    },
    /// A write of the etcd data model: an encoded `ringkv_store::Command` (a put with its
    /// options, a delete of a key or range, a txn, a compaction, a lease grant or revoke).
    Write {
        id: u64,
        command: Vec<u8>,
    },
    /// A range read: an encoded `ringkv_store::RangeRequest` (`encode_range`);
    /// `consistency` as `Get`'s.
    Range {
        id: u64,
        request: Vec<u8>,
        consistency: u8,
    },
    /// Restart a lease's countdown (answered by the leader).
    LeaseKeepAlive {
        id: u64,
        lease: i64,
    },
    /// A lease's remaining and granted TTL, with its keys when `keys`.
    LeaseTimeToLive {
        id: u64,
        lease: i64,
        keys: bool,
    },
    /// Every lease's id.
    LeaseLeases {
        id: u64,
    },
    /// This node's store hash at `revision` (0: its current one).
    Hash {
        id: u64,
        revision: i64,
    },
}

impl Request {
    pub fn id(&self) -> u64 {
        match self {
            Request::Put { id, .. }
            | Request::Get { id, .. }
            | Request::Delete { id, .. }
            | Request::Status { id }
            | Request::Admin { id, .. }
            | Request::Write { id, .. }
            | Request::Range { id, .. }
            | Request::LeaseKeepAlive { id, .. }
            | Request::LeaseTimeToLive { id, .. }
            | Request::LeaseLeases { id }
            | Request::Hash { id, .. } => *id,
        }
    }
}

/// The answer to request `id`: what the node did, or why not.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Response {
    pub id: u64,
    pub outcome: Outcome,
}

pub fn encode<T>(v: &T) -> rkyv::util::AlignedVec
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rancor::Error,
            >,
        >,
{
    rkyv::to_bytes::<rancor::Error>(v).expect("archiving to memory cannot fail")
}

/// Validates a request body in place (16-byte aligned, as frame bodies are read).
pub fn decode_request(buf: &[u8]) -> Result<Request, String> {
    let a = rkyv::access::<ArchivedRequest, rancor::BoxedError>(buf).map_err(|e| e.to_string())?;
    rkyv::deserialize::<Request, rancor::BoxedError>(a).map_err(|e| e.to_string())
}

pub fn decode_response(buf: &[u8]) -> Result<Response, String> {
    let a = rkyv::access::<ArchivedResponse, rancor::BoxedError>(buf).map_err(|e| e.to_string())?;
    rkyv::deserialize::<Response, rancor::BoxedError>(a).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip_and_garbage_is_refused() {
        let r = Request::Put {
            id: 7,
            key: b"k".to_vec(),
            value: vec![0, 1, 2],
        };
        assert_eq!(decode_request(&encode(&r)).unwrap(), r);
        let a = Response {
            id: 7,
            outcome: Ok(crate::outcome::Answer::Value {
                key: vec![0, 0xff],
                value: vec![0xc3, 0x28, 0],
                revision: 3,
            }),
        };
        assert_eq!(decode_response(&encode(&a)).unwrap(), a);
        let e = Response {
            id: 8,
            outcome: Err(crate::outcome::ApiError::NotLeader {
                leader_id: Some(2),
                leader_address: None,
            }),
        };
        assert_eq!(decode_response(&encode(&e)).unwrap(), e);
        let admin = Request::Admin {
            id: 9,
            op: AdminOp::Join {
                node_id: 4,
                address: "127.0.0.1:9084".into(),
            },
            token: Some("t".into()),
        };
        assert_eq!(decode_request(&encode(&admin)).unwrap(), admin);
        let mut b = rkyv::util::AlignedVec::<16>::new();
        b.extend_from_slice(&[0xff; 40]);
        assert!(decode_request(&b).is_err());
    }
}
