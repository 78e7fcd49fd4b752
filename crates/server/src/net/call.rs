//! A client call as the node carries it out, whichever protocol it came by (HTTP or
//! native): keys and values as bytes, the read consistency asked for, the operator's token.
//!
//! Pure data, built by the protocol parsers on the shard executors and carried out by the
//! shard (`node::conn`), and the checks a store call passes before it is carried out
//! (`check_command`, `check_range`). Must not touch node state.

use bytes::Bytes;
use ringkv_proto::admin::AdminOp;
use ringkv_proto::outcome::ApiError;
use ringkv_raft::ReadPolicy;
use ringkv_store::{RangeRequest, RequestOp};

use crate::net::http::HttpLimits;
use crate::shard::Command;

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
    /// A write of the etcd data model: an encoded, checked `shard::Command`.
    Write {
        command: Bytes,
    },
    /// A range read.
    Range {
        req: Box<RangeRequest>,
        consistency: Option<ReadPolicy>,
    },
    LeaseKeepAlive {
        lease: i64,
    },
    LeaseTimeToLive {
        lease: i64,
        keys: bool,
    },
    LeaseLeases,
    /// This node's store hash at `revision` (0: the current one).
    Hash {
        revision: i64,
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
            ApiCall::Write { .. } => "write",
            ApiCall::Range { .. } => "range",
            ApiCall::LeaseKeepAlive { .. } => "lease_keep_alive",
            ApiCall::LeaseTimeToLive { .. } => "lease_time_to_live",
            ApiCall::LeaseLeases => "lease_leases",
            ApiCall::Hash { .. } => "hash",
            ApiCall::Admin { .. } => "admin",
        }
    }
}

/// etcd's checks of a write before it is proposed (empty keys, `ignore_*` with a value or
/// lease, txn limits and duplicate keys: etcd's errors), and the node's size limits on
/// every key and value in it.
pub fn check_command(cmd: &Command, limits: &HttpLimits) -> Result<(), ApiError> {
    let store = |e: ringkv_store::StoreError| crate::shard::api_error(&e);
    let mut sizes = Ok(());
    let mut key = |k: &[u8]| {
        if k.len() > limits.key_bytes_max && sizes.is_ok() {
            sizes = Err(ApiError::too_large(format!(
                "key of {} bytes is over key_bytes_max ({})",
                k.len(),
                limits.key_bytes_max
            )));
        }
    };
    let mut values = 0usize;
    match cmd {
        Command::Put(p) => {
            p.validate().map_err(store)?;
            key(&p.key);
            values += p.value.len();
        }
        Command::DeleteRange(d) => {
            if d.key.is_empty() {
                return Err(store(ringkv_store::StoreError::EmptyKey));
            }
            key(&d.key);
            key(&d.range_end);
        }
        Command::Txn(t) => {
            t.validate().map_err(store)?;
            fn walk(t: &ringkv_store::TxnRequest, key: &mut dyn FnMut(&[u8]), values: &mut usize) {
                for c in &t.compare {
                    key(&c.key);
                    key(&c.range_end);
                    if let ringkv_store::CompareTarget::Value(v) = &c.target {
                        *values += v.len();
                    }
                }
                for op in t.success.iter().chain(&t.failure) {
                    match op {
                        RequestOp::Range(r) => {
                            key(&r.key);
                            key(&r.range_end);
                        }
                        RequestOp::Put(p) => {
                            key(&p.key);
                            *values += p.value.len();
                        }
                        RequestOp::DeleteRange(d) => {
                            key(&d.key);
                            key(&d.range_end);
                        }
                        RequestOp::Txn(n) => walk(n, key, values),
                    }
                }
            }
            walk(t, &mut key, &mut values);
        }
        // The cluster's own: a client could shorten or stretch leases, or stop writes.
        Command::LeaseCheckpoint { .. } | Command::Alarm { nospace: true } => {
            return Err(ApiError::bad_request(
                "lease checkpoints and raising the NOSPACE alarm are the cluster's own entries",
            ));
        }
        Command::Compact { .. }
        | Command::LeaseGrant { .. }
        | Command::LeaseRevoke { .. }
        | Command::Alarm { nospace: false } => {}
    }
    sizes?;
    if values > limits.value_bytes_max {
        return Err(ApiError::too_large(format!(
            "values of {values} bytes are over value_bytes_max ({})",
            limits.value_bytes_max
        )));
    }
    Ok(())
}

/// etcd's check of a range (a key is required) and the node's key size limit.
pub fn check_range(r: &RangeRequest, limits: &HttpLimits) -> Result<(), ApiError> {
    if r.key.is_empty() {
        return Err(crate::shard::api_error(&ringkv_store::StoreError::EmptyKey));
    }
    for k in [&r.key, &r.range_end] {
        if k.len() > limits.key_bytes_max {
            return Err(ApiError::too_large(format!(
                "key of {} bytes is over key_bytes_max ({})",
                k.len(),
                limits.key_bytes_max
            )));
        }
    }
    Ok(())
}
