//! gRPC over HTTP/2, the parts that are not HTTP/2 itself: status codes, etcd's error
//! codes and messages for every refusal, the 5-byte message framing, `grpc-timeout` and
//! the percent-encoding of `grpc-message`.
//!
//! Pure: used by the node's gRPC service (any shard executor) and by clients. Must not
//! touch node state.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::outcome::{ApiError, MembershipRefusal, TimeoutKind, UnavailableReason};

/// gRPC status codes (the numbers of `google.golang.org/grpc/codes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    Ok = 0,
    Canceled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    pub fn from_u32(c: u32) -> Code {
        use Code::*;
        match c {
            0 => Ok,
            1 => Canceled,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }
}

/// A call's failure as a gRPC client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
}

// etcd's messages (api/v3rpc/rpctypes/error.go): its clients compare these strings.
pub const NO_LEADER: &str = "etcdserver: no leader";
pub const NOT_LEADER: &str = "etcdserver: not leader";
pub const LEADER_CHANGED: &str = "etcdserver: leader changed";
pub const STOPPED: &str = "etcdserver: server stopped";
pub const TIMEOUT: &str = "etcdserver: request timed out";
pub const TIMEOUT_LEADER_FAIL: &str =
    "etcdserver: request timed out, possibly due to previous leader failure";
pub const TIMEOUT_CONNECTION_LOST: &str =
    "etcdserver: request timed out, possibly due to connection lost";
pub const TIMEOUT_LEADER_TRANSFER: &str =
    "etcdserver: request timed out, leader transfer took too long";
pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
pub const TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";
pub const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
pub const MEMBER_EXIST: &str = "etcdserver: member ID already exist";
pub const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
pub const MEMBER_BAD_URLS: &str = "etcdserver: given member URLs are invalid";
pub const MEMBER_NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
pub const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
pub const BAD_LEADER_TRANSFEREE: &str = "etcdserver: bad leader transferee";
pub const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
/// What a Go client reports when its deadline passes (the status the server sends then).
pub const DEADLINE_EXCEEDED: &str = "context deadline exceeded";

/// The gRPC status of a refusal: etcd's code and message wherever etcd has the same
/// refusal, else the nearest code with ringkv's own message (which names the problem).
pub fn status_of(e: &ApiError) -> Status {
    use ApiError as E;
    use Code::*;
    let own = |code| Status::new(code, format!("ringkv: {e}"));
    match e {
        E::BadRequest { .. } | E::NotFound { .. } => own(InvalidArgument),
        E::TooLarge { .. } => Status::new(InvalidArgument, REQUEST_TOO_LARGE),
        E::Unauthorized => own(PermissionDenied),
        E::NotLeader { .. } => Status::new(FailedPrecondition, NOT_LEADER),
        E::NoLeader { .. } => Status::new(Unavailable, NO_LEADER),
        E::Stopping => Status::new(Unavailable, STOPPED),
        E::Unavailable { reason } => match reason {
            UnavailableReason::ReadsPending => Status::new(ResourceExhausted, TOO_MANY_REQUESTS),
            UnavailableReason::LeaderUnreachable { .. } => {
                Status::new(Code::Unavailable, TIMEOUT_CONNECTION_LOST)
            }
            UnavailableReason::Refused { .. } => own(Code::Unavailable),
        },
        E::LostLeadership { .. } | E::LeaderNotReady => {
            Status::new(Code::Unavailable, LEADER_CHANGED)
        }
        E::LeaderLost { .. } => Status::new(Code::Unavailable, TIMEOUT_LEADER_FAIL),
        E::Timeout { what } => match what {
            TimeoutKind::Transfer => Status::new(Code::Unavailable, TIMEOUT_LEADER_TRANSFER),
            TimeoutKind::Stopped => Status::new(Code::Unavailable, STOPPED),
            _ => Status::new(Code::Unavailable, TIMEOUT),
        },
        E::StateFull { .. } => Status::new(ResourceExhausted, NO_SPACE),
        E::ChangeInProgress | E::TransferInProgress => own(FailedPrecondition),
        E::LearnerLagging { .. } => Status::new(FailedPrecondition, LEARNER_NOT_READY),
        E::MemberConflict { .. } => Status::new(FailedPrecondition, MEMBER_EXIST),
        E::Membership { refusal } => match refusal {
            MembershipRefusal::AlreadyMember(_) => Status::new(FailedPrecondition, MEMBER_EXIST),
            MembershipRefusal::UnknownNode(_) => Status::new(Code::NotFound, MEMBER_NOT_FOUND),
            MembershipRefusal::NotLearner { .. } => {
                Status::new(FailedPrecondition, MEMBER_NOT_LEARNER)
            }
            MembershipRefusal::NotVoter(_) => {
                Status::new(FailedPrecondition, BAD_LEADER_TRANSFEREE)
            }
            MembershipRefusal::InvalidId => own(InvalidArgument),
            MembershipRefusal::IdRetired(_) | MembershipRefusal::LastVoter(_) => {
                own(FailedPrecondition)
            }
        },
        E::TransferFailed { .. } => Status::new(Code::Unavailable, TIMEOUT_LEADER_TRANSFER),
        E::SnapshotVoid => own(Code::Unavailable),
        E::SnapshotFailed { .. } | E::Internal { .. } => own(Internal),
        E::TooManyConnections => Status::new(ResourceExhausted, TOO_MANY_REQUESTS),
        E::Store { code, message } => Status::new(Code::from_u32(*code), message.clone()),
    }
}

/// Bytes of a message's prefix: a compression flag, then the length (big-endian u32).
pub const PREFIX_BYTES: usize = 5;

/// One message as it goes on the wire (uncompressed).
pub fn frame(msg: &impl prost::Message) -> Bytes {
    let len = msg.encoded_len();
    let mut b = BytesMut::with_capacity(PREFIX_BYTES + len);
    b.put_u8(0);
    b.put_u32(len as u32);
    msg.encode(&mut b).expect("sized buffer");
    b.freeze()
}

/// Why received bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The compressed flag is set; ringkv announces no compression (`grpc-accept-encoding`
    /// absent), so a client must not send any.
    Compressed,
    /// The length is over the limit (`len`, `max`).
    TooLarge { len: usize, max: usize },
}

impl FrameError {
    pub fn status(&self) -> Status {
        match self {
            FrameError::Compressed => Status::new(
                Code::Unimplemented,
                "grpc: compressed messages are not supported by ringkv",
            ),
            // grpc-go's own wording, which clients see from etcd for the same case.
            FrameError::TooLarge { len, max } => Status::new(
                Code::ResourceExhausted,
                format!("grpc: received message larger than max ({len} vs. {max})"),
            ),
        }
    }
}

/// Splits a stream's DATA chunks into messages: a message may span chunks, and one
/// chunk may hold several messages. Holds at most one message over its prefix.
#[derive(Debug)]
pub struct Deframer {
    buf: BytesMut,
    message_bytes_max: usize,
}

impl Deframer {
    pub fn new(message_bytes_max: usize) -> Deframer {
        Deframer {
            buf: BytesMut::new(),
            message_bytes_max,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < PREFIX_BYTES {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(FrameError::Compressed);
        }
        let len = u32::from_be_bytes(self.buf[1..5].try_into().expect("4 bytes")) as usize;
        if len > self.message_bytes_max {
            return Err(FrameError::TooLarge {
                len,
                max: self.message_bytes_max,
            });
        }
        if self.buf.len() < PREFIX_BYTES + len {
            // Reserve once for the whole message instead of growing per chunk.
            self.buf.reserve(PREFIX_BYTES + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(PREFIX_BYTES);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Bytes received that are not yet a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// A `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(v: &str) -> Option<Duration> {
    // `split_at_checked`: a value ending in a multi-byte character (any UTF-8 a client
    // sends, as `net::http2` passes it) is refused instead of panicking in `split_at`.
    let (digits, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-message` as the spec wants it: bytes outside printable ASCII, and '%', as %XX.
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The reverse of `percent_encode` (clients read `grpc-message` with it); malformed
/// escapes are kept as they are.
pub fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcdpb::PutRequest;

    #[test]
    fn deframer_joins_split_messages_and_splits_joined_ones() {
        let a = frame(&PutRequest {
            key: Bytes::from_static(b"a"),
            ..Default::default()
        });
        let b = frame(&PutRequest {
            key: Bytes::from_static(b"bb"),
            value: Bytes::from(vec![7u8; 300]),
            ..Default::default()
        });
        let mut wire = a.to_vec();
        wire.extend_from_slice(&b);
        let mut d = Deframer::new(1024);
        let mut got = Vec::new();
        // Byte by byte, then the rest: every split point is crossed.
        for c in wire.chunks(1).take(9) {
            d.push(c);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        d.push(&wire[9..]);
        while let Some(m) = d.next_message().unwrap() {
            got.push(m);
        }
        assert_eq!(got, vec![a.slice(5..), b.slice(5..)]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn deframer_refuses_compressed_and_oversized_messages() {
        let mut d = Deframer::new(10);
        d.push(&[0, 0, 0, 0, 11]);
        assert_eq!(
            d.next_message(),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        assert_eq!(
            FrameError::TooLarge { len: 11, max: 10 }.status().message,
            "grpc: received message larger than max (11 vs. 10)"
        );
        let mut d = Deframer::new(10);
        d.push(&[1, 0, 0, 0, 1, 0]);
        assert_eq!(d.next_message(), Err(FrameError::Compressed));
    }

    #[test]
    fn timeouts_parse_every_unit_and_refuse_the_rest() {
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout("10n"), Some(Duration::from_nanos(10)));
        for bad in ["", "S", "123456789S", "5s", "-5S", "5 S", "5", "5é", "˩"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn messages_are_percent_encoded_both_ways() {
        let m = "etcdserver: 100% done\nnext ü";
        let e = percent_encode(m);
        assert_eq!(e, "etcdserver: 100%25 done%0Anext %C3%BC");
        assert_eq!(percent_decode(&e), m);
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn refusals_carry_etcds_codes_and_messages() {
        let s = status_of(&ApiError::NoLeader {
            why: crate::outcome::NoLeaderReason::NotElected,
        });
        assert_eq!(s, Status::new(Code::Unavailable, "etcdserver: no leader"));
        let s = status_of(&ApiError::Store {
            code: 11,
            message: "etcdserver: mvcc: required revision has been compacted".into(),
        });
        assert_eq!(s.code, Code::OutOfRange);
        let s = status_of(&ApiError::Membership {
            refusal: MembershipRefusal::NotLearner {
                node_id: 2,
                voter: true,
            },
        });
        assert_eq!(
            s,
            Status::new(
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member"
            )
        );
        let s = status_of(&ApiError::bad_request("key is empty"));
        assert_eq!(s.code, Code::InvalidArgument);
        assert!(s.message.starts_with("ringkv: "), "{}", s.message);
    }
}
