//! The key-value state machine as the node uses it.
//!
//! The etcd data model lives in `ringkv-store` (pure, shared with the simulator): each
//! shard executor holds one `ShardStore` (the keys that route to it, their MVCC history,
//! its copy of the store-wide state), the raft core holds the `Sequencer` that numbers
//! revisions. This module names what the node takes from it and the node's own rules for
//! writes: how a call becomes a log command and what a write may add to the state. Must not
//! touch the log, the WAL or the network.

pub use ringkv_store::{
    Command, CommandError, Report, Resolution, Routed, Sequencer, ShardStore, ToSequencer,
    participants, route,
};

use ringkv_store::{RequestOp, mvcc};

/// Bytes a write may add to the state at most (the leader's `state_bytes_max` check
/// before proposing; deletes and reads add nothing).
pub fn write_cost(cmd: &Command) -> u64 {
    fn ops(o: &[RequestOp]) -> u64 {
        o.iter()
            .map(|op| match op {
                RequestOp::Put(p) => put_cost(&p.key, &p.value),
                RequestOp::Txn(t) => ops(&t.success).max(ops(&t.failure)),
                _ => 0,
            })
            .sum()
    }
    match cmd {
        Command::Put(p) => put_cost(&p.key, &p.value),
        Command::Txn(t) => ops(&t.success).max(ops(&t.failure)),
        Command::LeaseGrant { .. } => 64,
        _ => 0,
    }
}

fn put_cost(key: &[u8], value: &[u8]) -> u64 {
    mvcc::KEY_OVERHEAD_BYTES + mvcc::VERSION_OVERHEAD_BYTES + key.len() as u64 + value.len() as u64
}

/// A store refusal in the node's typed outcome (etcd's gRPC code and message).
pub fn api_error(e: &ringkv_store::StoreError) -> ringkv_proto::outcome::ApiError {
    ringkv_proto::outcome::ApiError::Store {
        code: e.code() as u32,
        message: e.message().to_string(),
    }
}
