//! etcd's v3 JSON gateway on the HTTP port (`curl -X POST host:port/v3/kv/range -d
//! '{"key":"Zm9v"}'`): which gRPC method each `/v3/` path is, the transcoding of a body to
//! the method's protobuf request and of its protobuf reply to JSON (`ringkv_proto::jsonpb`),
//! and the replies as etcd 3.4's gateway writes them (errors, streams, its own 404 and 405).
//!
//! Pure (bytes in, bytes out): the HTTP parser routes `/v3/` paths here on the shard
//! executors, and `node::conn` carries the calls out through the node's gRPC service, so a
//! gateway call has exactly the gRPC call's semantics. Must not touch node state.

use bytes::Bytes;
use prost::Message;
use ringkv_proto::etcdpb as pb;
use ringkv_proto::grpc::{Code, PREFIX_BYTES, Status};
use ringkv_proto::jsonpb::{self, JsonMessage};

/// A `/v3/` request: the method its path names and its body, or the gateway's own refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayCall {
    Call {
        method: &'static Method,
        body: Bytes,
    },
    /// A path the gateway does not serve (404) or a method other than POST (405).
    NotServed { status: u16 },
}

/// A gateway route.
#[derive(Debug)]
pub struct Method {
    pub path: &'static str,
    /// The gRPC method's path (`/etcdserverpb.KV/Range`).
    pub grpc: &'static str,
    pub kind: Kind,
}

/// Routes are one each per path.
impl PartialEq for Method {
    fn eq(&self, other: &Method) -> bool {
        self.path == other.path
    }
}

impl Eq for Method {}

/// How a method's body and reply are carried.
#[derive(Debug)]
pub enum Kind {
    /// One JSON request message, one reply (`Grpc::unary`).
    Unary {
        /// The body as the request's protobuf encoding.
        request: fn(&[u8]) -> Result<Bytes, Status>,
        /// The reply's protobuf encoding as JSON.
        reply: fn(&[u8]) -> Result<String, Status>,
    },
    /// LeaseKeepAlive: the body's requests one after another, each answered by a
    /// `{"result":...}` line.
    KeepAlive,
    /// Watch and Snapshot: streams the gRPC service refuses (Unimplemented); the refusal
    /// is rendered as the gateway renders a failed stream.
    Refused,
}

/// A reply to a gateway call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

fn request<M: JsonMessage + Message>(body: &[u8]) -> Result<Bytes, Status> {
    jsonpb::decode::<M>(body)
        .map(|m| Bytes::from(m.encode_to_vec()))
        .map_err(|e| Status::new(Code::InvalidArgument, e.0))
}

fn reply<M: JsonMessage + Message>(msg: &[u8]) -> Result<String, Status> {
    M::decode(msg)
        .map(|m| jsonpb::encode(&m))
        .map_err(|e| Status::new(Code::Internal, format!("a reply does not decode: {e}")))
}

/// A unary route: its path, the gRPC method, the request and reply types.
macro_rules! unary {
    ($path:literal, $grpc:literal, $req:ty, $rep:ty) => {
        Method {
            path: $path,
            grpc: $grpc,
            kind: Kind::Unary {
                request: request::<$req>,
                reply: reply::<$rep>,
            },
        }
    };
}

/// The Auth methods, which ringkv's gRPC service refuses whatever they carry: their bodies
/// are read as a message without fields (any JSON object).
type AuthRequest = pb::StatusRequest;

/// etcd 3.4's gateway routes (`rpc.proto`'s `google.api.http` options), checked against
/// etcd 3.4.23. There is no route for HashKV.
pub static METHODS: &[Method] = &[
    unary!(
        "/v3/kv/range",
        "/etcdserverpb.KV/Range",
        pb::RangeRequest,
        pb::RangeResponse
    ),
    unary!(
        "/v3/kv/put",
        "/etcdserverpb.KV/Put",
        pb::PutRequest,
        pb::PutResponse
    ),
    unary!(
        "/v3/kv/deleterange",
        "/etcdserverpb.KV/DeleteRange",
        pb::DeleteRangeRequest,
        pb::DeleteRangeResponse
    ),
    unary!(
        "/v3/kv/txn",
        "/etcdserverpb.KV/Txn",
        pb::TxnRequest,
        pb::TxnResponse
    ),
    unary!(
        "/v3/kv/compaction",
        "/etcdserverpb.KV/Compact",
        pb::CompactionRequest,
        pb::CompactionResponse
    ),
    Method {
        path: "/v3/watch",
        grpc: "/etcdserverpb.Watch/Watch",
        kind: Kind::Refused,
    },
    unary!(
        "/v3/lease/grant",
        "/etcdserverpb.Lease/LeaseGrant",
        pb::LeaseGrantRequest,
        pb::LeaseGrantResponse
    ),
    unary!(
        "/v3/lease/revoke",
        "/etcdserverpb.Lease/LeaseRevoke",
        pb::LeaseRevokeRequest,
        pb::LeaseRevokeResponse
    ),
    unary!(
        "/v3/kv/lease/revoke",
        "/etcdserverpb.Lease/LeaseRevoke",
        pb::LeaseRevokeRequest,
        pb::LeaseRevokeResponse
    ),
    Method {
        path: "/v3/lease/keepalive",
        grpc: "/etcdserverpb.Lease/LeaseKeepAlive",
        kind: Kind::KeepAlive,
    },
    unary!(
        "/v3/lease/timetolive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        pb::LeaseTimeToLiveRequest,
        pb::LeaseTimeToLiveResponse
    ),
    unary!(
        "/v3/kv/lease/timetolive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        pb::LeaseTimeToLiveRequest,
        pb::LeaseTimeToLiveResponse
    ),
    unary!(
        "/v3/lease/leases",
        "/etcdserverpb.Lease/LeaseLeases",
        pb::LeaseLeasesRequest,
        pb::LeaseLeasesResponse
    ),
    unary!(
        "/v3/kv/lease/leases",
        "/etcdserverpb.Lease/LeaseLeases",
        pb::LeaseLeasesRequest,
        pb::LeaseLeasesResponse
    ),
    unary!(
        "/v3/cluster/member/add",
        "/etcdserverpb.Cluster/MemberAdd",
        pb::MemberAddRequest,
        pb::MemberAddResponse
    ),
    unary!(
        "/v3/cluster/member/remove",
        "/etcdserverpb.Cluster/MemberRemove",
        pb::MemberRemoveRequest,
        pb::MembersResponse
    ),
    unary!(
        "/v3/cluster/member/update",
        "/etcdserverpb.Cluster/MemberUpdate",
        pb::MemberUpdateRequest,
        pb::MembersResponse
    ),
    unary!(
        "/v3/cluster/member/list",
        "/etcdserverpb.Cluster/MemberList",
        pb::MemberListRequest,
        pb::MembersResponse
    ),
    unary!(
        "/v3/cluster/member/promote",
        "/etcdserverpb.Cluster/MemberPromote",
        pb::MemberPromoteRequest,
        pb::MembersResponse
    ),
    unary!(
        "/v3/maintenance/alarm",
        "/etcdserverpb.Maintenance/Alarm",
        pb::AlarmRequest,
        pb::AlarmResponse
    ),
    unary!(
        "/v3/maintenance/status",
        "/etcdserverpb.Maintenance/Status",
        pb::StatusRequest,
        pb::StatusResponse
    ),
    unary!(
        "/v3/maintenance/defragment",
        "/etcdserverpb.Maintenance/Defragment",
        pb::DefragmentRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/maintenance/hash",
        "/etcdserverpb.Maintenance/Hash",
        pb::HashRequest,
        pb::HashResponse
    ),
    Method {
        path: "/v3/maintenance/snapshot",
        grpc: "/etcdserverpb.Maintenance/Snapshot",
        kind: Kind::Refused,
    },
    unary!(
        "/v3/maintenance/transfer-leadership",
        "/etcdserverpb.Maintenance/MoveLeader",
        pb::MoveLeaderRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/enable",
        "/etcdserverpb.Auth/AuthEnable",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/disable",
        "/etcdserverpb.Auth/AuthDisable",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/authenticate",
        "/etcdserverpb.Auth/Authenticate",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/user/add",
        "/etcdserverpb.Auth/UserAdd",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/user/get",
        "/etcdserverpb.Auth/UserGet",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/user/list",
        "/etcdserverpb.Auth/UserList",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/user/delete",
        "/etcdserverpb.Auth/UserDelete",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/user/changepw",
        "/etcdserverpb.Auth/UserChangePassword",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/user/grant",
        "/etcdserverpb.Auth/UserGrantRole",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/user/revoke",
        "/etcdserverpb.Auth/UserRevokeRole",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/role/add",
        "/etcdserverpb.Auth/RoleAdd",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/role/get",
        "/etcdserverpb.Auth/RoleGet",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/role/list",
        "/etcdserverpb.Auth/RoleList",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/role/delete",
        "/etcdserverpb.Auth/RoleDelete",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/role/grant",
        "/etcdserverpb.Auth/RoleGrantPermission",
        AuthRequest,
        pb::HeaderResponse
    ),
    unary!(
        "/v3/auth/role/revoke",
        "/etcdserverpb.Auth/RoleRevokePermission",
        AuthRequest,
        pb::HeaderResponse
    ),
];

/// The call a `/v3/` request makes. As etcd's gateway: POST only, the query string is not
/// looked at, and the body is read when the call is carried out (a bad one is the call's
/// InvalidArgument).
pub fn route(method: &str, path: &str, body: &[u8]) -> GatewayCall {
    match METHODS.iter().find(|m| m.path == path) {
        None => GatewayCall::NotServed { status: 404 },
        Some(_) if method != "POST" => GatewayCall::NotServed { status: 405 },
        Some(m) => GatewayCall::Call {
            method: m,
            body: Bytes::copy_from_slice(body),
        },
    }
}

fn json(status: u16, body: String) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body,
    }
}

/// The gateway's own answer (Go's `http.Error`): plain text.
pub fn not_served(status: u16) -> Reply {
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: if status == 405 {
            "Method Not Allowed\n"
        } else {
            "Not Found\n"
        }
        .to_string(),
    }
}

/// A unary call's reply: the message, or the error as `{"error","message","code"}` with
/// the HTTP status of its code.
pub fn unary_reply(r: Result<String, Status>) -> Reply {
    match r {
        Ok(body) => json(200, body),
        Err(s) => json(jsonpb::http_status(s.code), jsonpb::error_body(&s)),
    }
}

/// The protobuf message in a framed gRPC reply.
pub fn unframe(framed: &[u8]) -> Result<&[u8], Status> {
    framed
        .get(PREFIX_BYTES..)
        .ok_or_else(|| Status::new(Code::Internal, "a reply shorter than its frame prefix"))
}

/// A streamed reply: a `{"result":...}` line per message, then the error that ended the
/// stream, if any. The status is 200 once a message went out, else the error's.
pub fn stream_reply<M: JsonMessage>(messages: &[M], end: Option<&Status>) -> Reply {
    let mut body = String::new();
    for m in messages {
        body.push_str(&jsonpb::stream_result(m));
        body.push('\n');
    }
    let mut status = 200;
    if let Some(s) = end {
        if messages.is_empty() {
            status = jsonpb::http_status(s.code);
        }
        body.push_str(&jsonpb::stream_error(s));
    }
    json(status, body)
}

/// A stream whose first request does not decode: the gateway answers as for a unary call,
/// with code Unknown (the decoder's error is not a gRPC status).
pub fn stream_refused(e: jsonpb::JsonError) -> Reply {
    unary_reply(Err(Status::new(Code::Unknown, e.0)))
}
