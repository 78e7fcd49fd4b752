//! Typed outcomes of client calls: what a node did (`Answer`) or why it did not
//! (`ApiError`).
//!
//! The raft core and the shards produce these; each protocol renders them at its edge:
//! HTTP as a status code and a JSON body (`http_status`, `to_json`), the native protocol
//! and the peers' forwarded replies as rkyv archives of the values themselves (keys and
//! values stay bytes), and later gRPC as its status codes. Nothing in the middle of the
//! server builds a status code or JSON text. Pure data: no I/O, no node state.
//!
//! Every error says whether the call may have taken effect: `outcome_unknown` is true
//! only for a write (or an operator call) that was handed to the log and not seen to
//! finish. Every other error means nothing was done, so a client may retry, elsewhere if
//! the error says so.

use std::fmt;

use base64::Engine as _;

/// What a call produced, or why it was refused.
pub type Outcome = Result<Answer, ApiError>;

/// A call carried out.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub enum Answer {
    /// A put or delete applied; the store revision after it (a put's is the key's
    /// mod_revision).
    Written {
        revision: u64,
    },
    /// A key's value, and the revision of its last change (its mod_revision).
    Value {
        key: Vec<u8>,
        value: Vec<u8>,
        revision: u64,
    },
    /// A node's view of itself and the cluster.
    Status(Box<NodeStatus>),
    /// A learner was added (or already was, at the same address): every member's address,
    /// this node's too, so the joiner can reach whoever leads.
    Joined {
        node_id: u64,
        voter: bool,
        members: Vec<(u64, String)>,
    },
    Promoted {
        node_id: u64,
    },
    Removed {
        node_id: u64,
    },
    /// `leader_id` leads (after a leadership transfer).
    Leads {
        leader_id: u64,
    },
    /// The newest snapshot on the node: just taken (`taken`), or already covering what
    /// is applied.
    Snapshot {
        index: u64,
        taken: Option<SnapshotTaken>,
    },
    /// A store write or read: the response header's revision and the encoded
    /// `ringkv_store::Response` (`encode_response`).
    Store {
        revision: i64,
        response: Vec<u8>,
    },
    /// A lease: its remaining TTL (-1: no such lease, as etcd's TimeToLive; 0 from a
    /// keep-alive of an unknown lease), the TTL it was granted, its keys when asked.
    LeaseTtl {
        id: i64,
        ttl: i64,
        granted_ttl: i64,
        keys: Vec<Vec<u8>>,
    },
    /// Every lease's id.
    LeaseList {
        ids: Vec<i64>,
    },
    /// The node's store hash (etcd's HashKV idea) at `hash_revision`: equal on every node
    /// that applied it; `revision` is the node's current one.
    Hash {
        revision: i64,
        hash_revision: i64,
        compact_revision: i64,
        hash: u64,
    },
}

/// What taking a snapshot cost.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub struct SnapshotTaken {
    pub bytes: u64,
    pub keys: u64,
    pub took_ms: u64,
    /// The longest time a shard held back its applies while encoding its part.
    pub shard_pause_ms: f64,
}

/// `GET /status` and the native `Status` call.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, serde::Serialize, Clone, Debug, PartialEq,
)]
pub struct NodeStatus {
    pub node_id: u64,
    pub role: NodeRole,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub leader_address: Option<String>,
    pub commit_index: u64,
    /// The lowest applied index over this node's shards.
    pub applied_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// A leader whose term has a committed entry: operator calls and ReadIndex reads will
    /// not be refused as `leader_not_ready`.
    pub leader_ready: bool,
    pub membership_change_in_progress: bool,
    pub transfer_in_progress: bool,
    /// Ids removed from the cluster (never reused).
    pub removed: Vec<u64>,
    pub members: Vec<MemberStatus>,
    /// Where this node serves `/metrics`, if it does.
    pub metrics_address: Option<String>,
    pub wal: WalStatus,
    /// Alarms raised in the store as this node applied it: `"NOSPACE"` (writes refused
    /// until disarmed).
    pub alarms: Vec<String>,
}

#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Leader,
    Candidate,
    Follower,
    Learner,
}

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, serde::Serialize, Clone, Debug, PartialEq,
)]
pub struct MemberStatus {
    pub id: u64,
    pub address: Option<String>,
    pub role: MemberRole,
    /// Replication progress: known on the leader only.
    pub match_index: Option<u64>,
    pub lag: Option<u64>,
}

#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Voter,
    Learner,
}

/// The WAL's counters since the node started.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
)]
pub struct WalStatus {
    pub fsyncs: u64,
    pub batches: u64,
    pub entries: u64,
    pub bytes_written: u64,
    pub segments_created: u64,
}

/// Why a call was not carried out (or may not have been: `outcome_unknown`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// Malformed or invalid input; nothing was done.
    BadRequest { message: String },
    /// A key, value or request over its limit; nothing was done.
    TooLarge { message: String },
    /// No such key.
    NotFound { key: Vec<u8> },
    /// An operator call without the cluster token.
    Unauthorized,
    /// This node does not lead; nothing was written. The leader, when known.
    NotLeader {
        leader_id: Option<u64>,
        leader_address: Option<String>,
    },
    /// No leader is known; nothing was written.
    NoLeader { why: NoLeaderReason },
    /// This node is shutting down; nothing was done.
    Stopping,
    /// The node cannot take the call now (the reason says why); nothing was done.
    Unavailable { reason: UnavailableReason },
    /// Leadership changed before the write or change committed: it was not applied.
    LostLeadership { change: bool },
    /// The leader this node forwarded to stopped answering (this node campaigns): a
    /// write's fate is unknown, a read had no effect.
    LeaderLost { node_id: u64, write: bool },
    /// The call's time ran out; `what` says whether it may have taken effect.
    Timeout { what: TimeoutKind },
    /// A put would take the state past `limits.state_bytes_max`; nothing was written.
    StateFull { state_bytes_max: u64 },
    /// Another membership change has not committed yet.
    ChangeInProgress,
    /// A leadership transfer is in progress.
    TransferInProgress,
    /// A learner too far behind to promote (`lag`: entries, when known).
    LearnerLagging {
        node_id: u64,
        lag: Option<u64>,
        lag_max: u64,
    },
    /// A member with this id exists at another address.
    MemberConflict { node_id: u64 },
    /// A membership change that is invalid in itself.
    Membership { refusal: MembershipRefusal },
    /// The leader has not committed an entry of its term yet.
    LeaderNotReady,
    /// The transfer target did not take over in time; this node still leads.
    TransferFailed { node_id: u64 },
    /// The state was replaced (snapshot installed, reset) while a snapshot was taken.
    SnapshotVoid,
    /// Saving a snapshot failed.
    SnapshotFailed { message: String },
    /// The node broke one of its own rules answering the call (a bug, logged where found).
    Internal { message: String },
    /// `limits.connections_max` reached on this node.
    TooManyConnections,
    /// The store refused the request as etcd would (its gRPC `code` and etcd's own
    /// `message`); nothing was changed.
    Store { code: u32, message: String },
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoLeaderReason {
    /// None was elected within `request_timeout_ms`.
    NotElected,
    /// Too many calls already wait for one.
    TooManyWaiting,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum UnavailableReason {
    /// The leader cannot be reached from this node now.
    LeaderUnreachable { node_id: u64 },
    /// Too many reads are pending.
    ReadsPending,
    /// The core refused to propose (a reason from the core, for operators).
    Refused { reason: String },
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutKind {
    /// A write was proposed and not seen to commit: it may or may not be applied.
    Write,
    /// A read could not be served in time; nothing happened.
    Read,
    /// An operator call was handed on and did not complete in time.
    Call,
    /// A membership change was proposed and not seen to commit.
    Change,
    /// The change committed at an index now compacted: which entry it was is unknown here.
    ChangeCompacted,
    /// A leadership transfer did not complete in time.
    Transfer,
    /// The raft core did not answer a status call in time.
    Status,
    /// The node stopped before the call completed.
    Stopped,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipRefusal {
    AlreadyMember(u64),
    IdRetired(u64),
    /// Not a member in the role the change needs.
    UnknownNode(u64),
    LastVoter(u64),
    /// Id 0 is reserved.
    InvalidId,
    /// Promote: not a learner (`voter`: a voter already).
    NotLearner {
        node_id: u64,
        voter: bool,
    },
    /// Transfer: not a voter of this cluster.
    NotVoter(u64),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
        }
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::TooLarge {
            message: message.into(),
        }
    }

    /// The HTTP status this error is rendered with.
    pub fn http_status(&self) -> u16 {
        use ApiError::*;
        match self {
            BadRequest { .. } | Membership { .. } => 400,
            Unauthorized => 401,
            NotFound { .. } => 404,
            ChangeInProgress
            | TransferInProgress
            | LearnerLagging { .. }
            | MemberConflict { .. } => 409,
            TooLarge { .. } => 413,
            SnapshotFailed { .. } | Internal { .. } => 500,
            NotLeader { .. }
            | NoLeader { .. }
            | Stopping
            | Unavailable { .. }
            | LostLeadership { .. }
            | LeaderNotReady
            | TransferFailed { .. }
            | SnapshotVoid
            | TooManyConnections => 503,
            LeaderLost { write: false, .. } => 503,
            LeaderLost { write: true, .. } | Timeout { .. } => 504,
            StateFull { .. } => 507,
            // gRPC codes: NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED; the others
            // (INVALID_ARGUMENT, OUT_OF_RANGE) are the caller's to fix.
            Store { code: 5, .. } => 404,
            Store { code: 9, .. } => 409,
            Store { code: 8, .. } => 507,
            Store { .. } => 400,
        }
    }

    /// The machine-readable code (the `code` of the JSON body; clients match on it).
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            BadRequest { .. } => "bad_request",
            TooLarge { .. } => "too_large",
            NotFound { .. } => "not_found",
            Unauthorized => "unauthorized",
            NotLeader { .. } => "not_leader",
            NoLeader { .. } => "no_leader",
            Stopping => "stopping",
            Unavailable { .. } => "unavailable",
            LostLeadership { .. } => "lost_leadership",
            LeaderLost { .. } => "leader_lost",
            Timeout { .. } => "timeout",
            // The NOSPACE alarm refuses a write as a full state does before proposing.
            StateFull { .. } | Store { code: 8, .. } => "state_full",
            Store { .. } => "store",
            ChangeInProgress => "change_in_progress",
            TransferInProgress => "transfer_in_progress",
            LearnerLagging { .. } => "learner_lagging",
            MemberConflict { .. } => "member_conflict",
            Membership { refusal } => refusal.code(),
            LeaderNotReady => "leader_not_ready",
            TransferFailed { .. } => "transfer_failed",
            SnapshotVoid => "snapshot_void",
            SnapshotFailed { .. } => "snapshot_failed",
            Internal { .. } => "internal",
            TooManyConnections => "too_many_connections",
        }
    }

    /// The call may have taken effect (a write or operator call handed to the log and not
    /// seen to finish): it must not be resent blindly.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ApiError::LeaderLost { write, .. } => *write,
            ApiError::Timeout { what } => matches!(
                what,
                TimeoutKind::Write
                    | TimeoutKind::Call
                    | TimeoutKind::Change
                    | TimeoutKind::ChangeCompacted
                    | TimeoutKind::Stopped
            ),
            _ => false,
        }
    }

    /// Nothing was done and another node may serve the call (the HTTP 503s).
    pub fn try_elsewhere(&self) -> bool {
        self.http_status() == 503
    }

    /// The JSON body of this error: `{"error": message, "code": code}`, and for
    /// `not_leader` the leader's id and address (null when unknown).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "error": self.to_string(), "code": self.code() });
        if let ApiError::NotLeader {
            leader_id,
            leader_address,
        } = self
        {
            v["leader_id"] = serde_json::json!(leader_id);
            v["leader_address"] = serde_json::json!(leader_address);
        }
        v
    }
}

impl MembershipRefusal {
    fn code(&self) -> &'static str {
        match self {
            MembershipRefusal::AlreadyMember(_) => "already_member",
            MembershipRefusal::IdRetired(_) => "id_retired",
            MembershipRefusal::UnknownNode(_) => "unknown_node",
            MembershipRefusal::LastVoter(_) => "last_voter",
            MembershipRefusal::InvalidId => "invalid_id",
            MembershipRefusal::NotLearner { .. } => "not_learner",
            MembershipRefusal::NotVoter(_) => "not_voter",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ApiError::*;
        match self {
            BadRequest { message } | TooLarge { message } => f.write_str(message),
            NotFound { key } => write!(f, "no key {}", Printable(key)),
            Unauthorized => {
                f.write_str("operator calls need the cluster_token in an X-Ringkv-Token header")
            }
            NotLeader { .. } => f.write_str(
                "this node is not the leader; send the request to the leader (retry is safe: \
                 nothing was written)",
            ),
            NoLeader {
                why: NoLeaderReason::NotElected,
            } => f.write_str(
                "no leader was elected within request_timeout_ms; nothing was written, retry",
            ),
            NoLeader {
                why: NoLeaderReason::TooManyWaiting,
            } => f.write_str(
                "no leader is known and too many calls wait for one; nothing was written, retry",
            ),
            Stopping => {
                f.write_str("this node is shutting down; nothing was done, retry at another node")
            }
            Unavailable { reason } => match reason {
                UnavailableReason::LeaderUnreachable { node_id } => write!(
                    f,
                    "the leader (node {node_id}) cannot be reached from this node now; nothing \
                     was sent, retry"
                ),
                UnavailableReason::ReadsPending => f.write_str("too many reads pending; retry"),
                UnavailableReason::Refused { reason } => {
                    write!(f, "refused, nothing was written ({reason}); retry")
                }
            },
            LostLeadership { change: false } => f.write_str(
                "leadership changed before the write committed; it was not applied, retry is safe",
            ),
            LostLeadership { change: true } => f.write_str(
                "leadership changed before the change committed; it was not applied, retry",
            ),
            LeaderLost {
                node_id,
                write: true,
            } => write!(
                f,
                "node {node_id} stopped answering as leader before it answered; the write may \
                 or may not be applied (outcome unknown)"
            ),
            LeaderLost {
                node_id,
                write: false,
            } => write!(
                f,
                "node {node_id} stopped answering as leader before it answered; nothing was \
                 read, retry"
            ),
            Timeout { what } => f.write_str(match what {
                TimeoutKind::Write => {
                    "request_timeout_ms passed; the write may or may not be applied (outcome \
                     unknown)"
                }
                TimeoutKind::Read => {
                    "request_timeout_ms passed before the read could be served; retry"
                }
                TimeoutKind::Call => {
                    "request_timeout_ms passed; the call may or may not have taken effect \
                     (outcome unknown): check /status"
                }
                TimeoutKind::Change => {
                    "request_timeout_ms passed; the change may or may not be applied (outcome \
                     unknown): check /status"
                }
                TimeoutKind::ChangeCompacted => {
                    "the outcome of the change is unknown here: check /status"
                }
                TimeoutKind::Transfer => "the transfer did not complete in time",
                TimeoutKind::Status => "the raft core did not answer in time",
                TimeoutKind::Stopped => {
                    "the node stopped before the call completed (outcome unknown): check /status"
                }
            }),
            Store { message, .. } => f.write_str(message),
            StateFull { state_bytes_max } => write!(
                f,
                "the key-value state would exceed limits.state_bytes_max ({state_bytes_max} \
                 bytes); nothing was written: delete keys or raise the limit"
            ),
            ChangeInProgress => {
                f.write_str("another membership change has not committed yet; retry after it")
            }
            TransferInProgress => {
                f.write_str("a leadership transfer is in progress; retry after it")
            }
            LearnerLagging {
                node_id,
                lag,
                lag_max,
            } => {
                let behind = lag.map_or("an unknown number of".to_string(), |l| l.to_string());
                write!(
                    f,
                    "learner {node_id} is {behind} entries behind (promote_lag_entries_max \
                     {lag_max}); not promoted, retry when it caught up"
                )
            }
            MemberConflict { node_id } => {
                write!(f, "node {node_id} is a member with another address")
            }
            Membership { refusal } => match refusal {
                MembershipRefusal::AlreadyMember(id) => write!(f, "node {id} is already a member"),
                MembershipRefusal::IdRetired(id) => {
                    write!(f, "node id {id} was removed and cannot be reused")
                }
                MembershipRefusal::UnknownNode(id) => {
                    write!(f, "node {id} is not a member in the required role")
                }
                MembershipRefusal::LastVoter(id) => {
                    write!(f, "node {id} is the last voter and cannot be removed")
                }
                MembershipRefusal::InvalidId => f.write_str("node id 0 is reserved"),
                MembershipRefusal::NotLearner {
                    node_id,
                    voter: true,
                } => write!(f, "node {node_id} is a voter already"),
                MembershipRefusal::NotLearner {
                    node_id,
                    voter: false,
                } => write!(f, "node {node_id} is not a learner of this cluster"),
                MembershipRefusal::NotVoter(id) => {
                    write!(f, "node {id} is not a voter of this cluster")
                }
            },
            LeaderNotReady => {
                f.write_str("the leader has not committed an entry of its term yet; retry")
            }
            TransferFailed { node_id } => write!(
                f,
                "node {node_id} did not take over in time; this node still leads, retry"
            ),
            SnapshotVoid => f.write_str("the state was replaced meanwhile; retry"),
            SnapshotFailed { message } => f.write_str(message),
            Internal { message } => write!(f, "internal error: {message}"),
            TooManyConnections => {
                f.write_str("limits.connections_max reached on this node; retry later or elsewhere")
            }
        }
    }
}

impl std::error::Error for ApiError {}

impl Answer {
    /// The JSON body of this answer (the HTTP API's and the CLI's output). Keys and values
    /// that are UTF-8 are strings (`key`, `value`); others are base64 (`key_base64`,
    /// `value_base64`), so no byte is lost.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Answer::Written { revision } => json!({ "revision": revision }),
            Answer::Store { revision, response } => {
                match ringkv_store::decode_response(&ringkv_store::bytes::Bytes::copy_from_slice(
                    response,
                )) {
                    Ok(r) => store_json(*revision, &r),
                    // Not from a node of this version: shown as it came.
                    Err(e) => json!({
                        "header": { "revision": revision },
                        "undecodable": e.0,
                        "response_base64":
                            base64::engine::general_purpose::STANDARD.encode(response),
                    }),
                }
            }
            Answer::LeaseTtl {
                id,
                ttl,
                granted_ttl,
                keys,
            } => {
                let keys: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|k| {
                        let mut v = json!({});
                        put_bytes(&mut v, "key", k);
                        v
                    })
                    .collect();
                json!({ "id": id, "ttl": ttl, "granted_ttl": granted_ttl, "keys": keys })
            }
            Answer::LeaseList { ids } => json!({ "leases": ids }),
            Answer::Hash {
                revision,
                hash_revision,
                compact_revision,
                hash,
            } => json!({
                "header": { "revision": revision },
                "hash_revision": hash_revision,
                "compact_revision": compact_revision,
                "hash": hash,
            }),
            Answer::Value {
                key,
                value,
                revision,
            } => {
                let mut v = json!({ "revision": revision });
                put_bytes(&mut v, "key", key);
                put_bytes(&mut v, "value", value);
                v
            }
            Answer::Status(s) => serde_json::to_value(s).expect("plain data"),
            Answer::Joined {
                node_id,
                voter,
                members,
            } => {
                let book: serde_json::Map<String, serde_json::Value> = members
                    .iter()
                    .map(|(id, a)| (id.to_string(), json!(a)))
                    .collect();
                json!({
                    "node_id": node_id,
                    "role": if *voter { "voter" } else { "learner" },
                    "members": book,
                })
            }
            Answer::Promoted { node_id } => json!({ "node_id": node_id, "role": "voter" }),
            Answer::Removed { node_id } => json!({ "node_id": node_id, "removed": true }),
            Answer::Leads { leader_id } => json!({ "leader_id": leader_id }),
            Answer::Snapshot { index, taken: None } => json!({ "index": index, "new": false }),
            Answer::Snapshot {
                index,
                taken: Some(t),
            } => json!({
                "index": index,
                "bytes": t.bytes,
                "keys": t.keys,
                "took_ms": t.took_ms,
                "shard_pause_ms": t.shard_pause_ms,
                "new": true,
            }),
        }
    }
}

/// `(status, JSON body)` for HTTP and the CLI.
pub fn render_json(outcome: &Outcome) -> (u16, String) {
    match outcome {
        Ok(a) => (200, a.to_json().to_string()),
        Err(e) => (e.http_status(), e.to_json().to_string()),
    }
}

/// The HTTP status an outcome is rendered with (and counted under in metrics).
pub fn http_status(outcome: &Outcome) -> u16 {
    outcome.as_ref().map_or_else(ApiError::http_status, |_| 200)
}

/// A store answer in etcd's JSON shapes (`header.revision`, `kvs`, `count`, `more`,
/// `prev_kv(s)`, `deleted`, `succeeded`, `responses`, `ID`/`TTL`), keys and values as the
/// rest of this API renders bytes.
fn store_json(revision: i64, r: &ringkv_store::Response) -> serde_json::Value {
    use ringkv_store::{Response, ResponseOp};
    use serde_json::json;
    fn kv(k: &ringkv_store::KeyValue) -> serde_json::Value {
        let mut v = json!({
            "create_revision": k.create_revision,
            "mod_revision": k.mod_revision,
            "version": k.version,
            "lease": k.lease,
        });
        put_bytes(&mut v, "key", &k.key);
        put_bytes(&mut v, "value", &k.value);
        v
    }
    fn range(r: &ringkv_store::RangeResponse) -> serde_json::Value {
        json!({
            "kvs": r.kvs.iter().map(kv).collect::<Vec<_>>(),
            "more": r.more,
            "count": r.count,
        })
    }
    fn put(p: &ringkv_store::PutResponse) -> serde_json::Value {
        match &p.prev_kv {
            Some(k) => json!({ "prev_kv": kv(k) }),
            None => json!({}),
        }
    }
    fn delete(d: &ringkv_store::DeleteRangeResponse) -> serde_json::Value {
        json!({
            "deleted": d.deleted,
            "prev_kvs": d.prev_kvs.iter().map(kv).collect::<Vec<_>>(),
        })
    }
    fn txn(t: &ringkv_store::TxnResponse) -> serde_json::Value {
        let ops: Vec<serde_json::Value> = t
            .responses
            .iter()
            .map(|op| match op {
                ResponseOp::Range(r) => json!({ "response_range": range(r) }),
                ResponseOp::Put(p) => json!({ "response_put": put(p) }),
                ResponseOp::DeleteRange(d) => json!({ "response_delete_range": delete(d) }),
                ResponseOp::Txn(t) => json!({ "response_txn": txn(t) }),
            })
            .collect();
        json!({ "succeeded": t.succeeded, "responses": ops })
    }
    let mut v = match r {
        Response::Range(x) => range(x),
        Response::Put(x) => put(x),
        Response::DeleteRange(x) => delete(x),
        Response::Txn(x) => txn(x),
        Response::LeaseGranted(g) => json!({ "ID": g.id, "TTL": g.ttl }),
        Response::Compacted | Response::LeaseRevoked | Response::Done => json!({}),
    };
    v["header"] = json!({ "revision": revision });
    v
}

fn put_bytes(v: &mut serde_json::Value, name: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => v[name] = serde_json::json!(s),
        Err(_) => {
            v[format!("{name}_base64")] =
                serde_json::json!(base64::engine::general_purpose::STANDARD.encode(b))
        }
    }
}

/// A key in a message: quoted text when UTF-8, else hex.
struct Printable<'a>(&'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => {
                f.write_str("0x")?;
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_with_their_status_code_and_message() {
        let e = ApiError::NotLeader {
            leader_id: Some(2),
            leader_address: Some("127.0.0.1:9082".into()),
        };
        let (status, body) = render_json(&Err(e.clone()));
        assert_eq!(status, 503);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "not_leader");
        assert_eq!(v["leader_id"], 2);
        assert_eq!(v["leader_address"], "127.0.0.1:9082");
        assert!(e.try_elsewhere() && !e.outcome_unknown());
        let t = ApiError::Timeout {
            what: TimeoutKind::Write,
        };
        assert_eq!((t.http_status(), t.code()), (504, "timeout"));
        assert!(t.outcome_unknown());
        let r = ApiError::Timeout {
            what: TimeoutKind::Read,
        };
        assert!(!r.outcome_unknown());
        let m = ApiError::Membership {
            refusal: MembershipRefusal::NotLearner {
                node_id: 4,
                voter: true,
            },
        };
        assert_eq!((m.http_status(), m.code()), (400, "not_learner"));
        assert_eq!(m.to_string(), "node 4 is a voter already");
        assert_eq!(
            ApiError::NotFound { key: vec![0xff, 0] }.to_string(),
            "no key 0xff00"
        );
    }

    #[test]
    fn values_are_text_when_utf8_and_base64_otherwise() {
        let a = Answer::Value {
            key: b"k".to_vec(),
            value: vec![0xff, 0x00, b'a'],
            revision: 7,
        };
        let v = a.to_json();
        assert_eq!(v["key"], "k");
        assert_eq!(v["value_base64"], "/wBh");
        assert!(v.get("value").is_none());
        assert_eq!(v["revision"], 7);
    }
}
