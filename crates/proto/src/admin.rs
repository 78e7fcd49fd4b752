//! Operator calls (membership, leadership, snapshots), as clients send them.

/// What an admin call asks for. Node ids are at least 1; `Join`'s address parses as a
/// `SocketAddr` (checked here, kept as the string the caller sent).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum AdminOp {
    /// Add `node_id` at `address` as a learner.
    Join { node_id: u64, address: String },
    /// Make the learner `node_id` a voter.
    Promote { node_id: u64 },
    /// Take `node_id` (voter or learner) out of the cluster.
    Remove { node_id: u64 },
    /// Hand leadership to the voter `node_id`.
    TransferLeader { node_id: u64 },
    /// Take a snapshot now.
    Snapshot,
}

impl AdminOp {
    /// A short name for logs and messages (`join`, `promote`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            AdminOp::Join { .. } => "join",
            AdminOp::Promote { .. } => "promote",
            AdminOp::Remove { .. } => "remove",
            AdminOp::TransferLeader { .. } => "transfer-leader",
            AdminOp::Snapshot => "snapshot",
        }
    }
}
