//! The native client protocol: binary frames on the node's port, pipelined by request id.
//!
//! Pure encoding, used by the shard executors (server side) and `crate::native_client` (the
//! client). A native connection opens straight with a `FrameKind::Client` frame (a peer's
//! opens with a handshake); each request carries an id, replies come back with it, in
//! completion order. Bodies are rkyv archives validated in place; keys and values are
//! bytes, keys must be UTF-8 (as over HTTP). Must not touch node state.

use rkyv::rancor;

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
}

impl Request {
    pub fn id(&self) -> u64 {
        match self {
            Request::Put { id, .. }
            | Request::Get { id, .. }
            | Request::Delete { id, .. }
            | Request::Status { id } => *id,
        }
    }
}

/// The answer to request `id`: an HTTP-like status and the same JSON body the HTTP API
/// gives (`{"index":N}`, `{"key","value","revision"}`, `{"error","code",...}`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u64,
    pub status: u16,
    pub body: String,
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
            status: 200,
            body: "{}".into(),
        };
        assert_eq!(decode_response(&encode(&a)).unwrap(), a);
        let mut b = rkyv::util::AlignedVec::<16>::new();
        b.extend_from_slice(&[0xff; 40]);
        assert!(decode_request(&b).is_err());
    }
}
