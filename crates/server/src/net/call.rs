//! A client call as the node carries it out, whichever protocol it came by (HTTP or
//! native): keys and values as bytes, the read consistency asked for, the operator's token.
//!
//! Pure data, built by the protocol parsers on the shard executors and carried out by the
//! shard (`node::conn`). Must not touch node state.

use bytes::Bytes;
use ringkv_proto::admin::AdminOp;
use ringkv_raft::ReadPolicy;

/// A call the node must carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiCall {
    Put {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    /// `consistency: None` means the node's `default_policy`.
    Get {
        key: Bytes,
        consistency: Option<ReadPolicy>,
    },
    Status,
    /// Free the store's history below `revision` (etcd's Compact; `physical`: answer once
    /// the space is freed, which ringkv always does before answering).
    Compact {
        revision: i64,
        physical: bool,
    },
    /// A membership or maintenance call. `token`: from `X-Ringkv-Token` or
    /// `Authorization: Bearer`, `None` when the request carries neither. (Beware: `Debug`
    /// prints it.)
    Admin {
        op: AdminOp,
        token: Option<String>,
    },
}

impl ApiCall {
    /// A short name for logs (never the key, value or token).
    pub fn name(&self) -> &'static str {
        match self {
            ApiCall::Put { .. } => "put",
            ApiCall::Delete { .. } => "delete",
            ApiCall::Get { .. } => "get",
            ApiCall::Status => "status",
            ApiCall::Compact { .. } => "compact",
            ApiCall::Admin { .. } => "admin",
        }
    }
}
