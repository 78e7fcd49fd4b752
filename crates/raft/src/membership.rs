//! Cluster membership: voters, learners and the ids that may never come back.
//!
//! Owns the configuration value and its binary encoding inside `EntryKind::Membership`
//! entries. Pure data; part of the Raft core (runs on the raft core's executor).
//!
//! ringkv changes membership one server at a time (thesis 4.1), never by joint consensus:
//! every change users need (add learner, promote one learner, remove one node) moves the
//! voter set by at most one, any two majorities of consecutive configurations overlap, and
//! the known single-server-change bug is closed by proposing a change only after an entry
//! of the leader's own term has committed (the core enforces that). One rule, one quorum,
//! and no intermediate state for operators to reason about.

use std::collections::BTreeSet;

use super::types::NodeId;

/// A configuration. Invariant: `voters`, `learners` and `removed` are pairwise disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Ids removed from the cluster; never admitted again.
    pub removed: BTreeSet<NodeId>,
}

/// One membership change, as proposed by an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    AddLearner(NodeId),
    Promote(NodeId),
    Remove(NodeId),
}

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// The id is already a voter or learner.
    AlreadyMember(NodeId),
    /// The id was removed before and may never be reused.
    IdRetired(NodeId),
    /// The id is not a learner (for promote) or not a member (for remove).
    NotFound(NodeId),
    /// Removing the only voter would leave no one to elect a leader.
    LastVoter(NodeId),
    /// Id 0 is reserved.
    InvalidId,
}

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyMember(id) => write!(f, "node {id} is already a member"),
            Self::IdRetired(id) => write!(f, "node id {id} was removed and cannot be reused"),
            Self::NotFound(id) => write!(f, "node {id} is not a member in the required role"),
            Self::LastVoter(id) => write!(f, "node {id} is the last voter and cannot be removed"),
            Self::InvalidId => write!(f, "node id 0 is reserved"),
        }
    }
}

impl Membership {
    /// A configuration of voters only.
    pub fn with_voters(ids: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            voters: ids.into_iter().collect(),
            ..Self::default()
        }
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Voters and learners: everyone the leader replicates to.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// Number of voters that make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The configuration after `change`, or why it is not allowed.
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, MembershipError> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner(id) => {
                if id == 0 {
                    return Err(MembershipError::InvalidId);
                }
                if self.removed.contains(&id) {
                    return Err(MembershipError::IdRetired(id));
                }
                if self.is_member(id) {
                    return Err(MembershipError::AlreadyMember(id));
                }
                next.learners.insert(id);
            }
            MembershipChange::Promote(id) => {
                if !next.learners.remove(&id) {
                    return Err(MembershipError::NotFound(id));
                }
                next.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if self.is_voter(id) && self.voters.len() == 1 {
                    return Err(MembershipError::LastVoter(id));
                }
                if !next.voters.remove(&id) && !next.learners.remove(&id) {
                    return Err(MembershipError::NotFound(id));
                }
                next.removed.insert(id);
            }
        }
        next.check();
        Ok(next)
    }

    /// Asserts the disjointness invariant.
    pub fn check(&self) {
        assert!(
            self.voters.is_disjoint(&self.learners),
            "voter is also a learner: {self:?}"
        );
        assert!(
            self.voters.is_disjoint(&self.removed),
            "removed id is a voter: {self:?}"
        );
        assert!(
            self.learners.is_disjoint(&self.removed),
            "removed id is a learner: {self:?}"
        );
        assert!(
            !self.voters.contains(&0) && !self.learners.contains(&0),
            "id 0 in {self:?}"
        );
    }

    /// Little-endian encoding: three length-prefixed id lists (voters, learners, removed).
    pub fn encode(&self) -> Vec<u8> {
        let n = self.voters.len() + self.learners.len() + self.removed.len();
        let mut out = Vec::with_capacity(12 + 8 * n);
        for set in [&self.voters, &self.learners, &self.removed] {
            out.extend_from_slice(&(set.len() as u32).to_le_bytes());
            for id in set {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out
    }

    /// Decodes `encode`'s output; `None` if the bytes are malformed or break the invariant.
    pub fn decode(mut buf: &[u8]) -> Option<Membership> {
        let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
        for set in sets.iter_mut() {
            let n = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
            buf = &buf[4..];
            if buf.len() < n.checked_mul(8)? {
                return None;
            }
            for chunk in buf[..n * 8].chunks_exact(8) {
                set.insert(u64::from_le_bytes(chunk.try_into().ok()?));
            }
            buf = &buf[n * 8..];
        }
        let [voters, learners, removed] = sets;
        let m = Membership {
            voters,
            learners,
            removed,
        };
        let disjoint = m.voters.is_disjoint(&m.learners)
            && m.voters.is_disjoint(&m.removed)
            && m.learners.is_disjoint(&m.removed);
        // Id 0 is reserved (`check` asserts it): bytes naming it are malformed, not a
        // configuration.
        let no_zero = !m.voters.contains(&0) && !m.learners.contains(&0);
        (buf.is_empty() && disjoint && no_zero).then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips_and_rejects_garbage() {
        let m = Membership::with_voters([1, 2, 3])
            .apply(MembershipChange::AddLearner(4))
            .unwrap()
            .apply(MembershipChange::Remove(2))
            .unwrap();
        assert_eq!(Membership::decode(&m.encode()), Some(m.clone()));
        let enc = m.encode();
        assert_eq!(Membership::decode(&enc[..enc.len() - 1]), None);
        let mut longer = enc.clone();
        longer.push(0);
        assert_eq!(Membership::decode(&longer), None);
    }

    #[test]
    fn changes_enforce_their_rules() {
        let m = Membership::with_voters([1]);
        assert_eq!(
            m.apply(MembershipChange::Remove(1)),
            Err(MembershipError::LastVoter(1))
        );
        assert_eq!(
            m.apply(MembershipChange::Promote(2)),
            Err(MembershipError::NotFound(2))
        );
        let m = m.apply(MembershipChange::AddLearner(2)).unwrap();
        assert_eq!(
            m.apply(MembershipChange::AddLearner(2)),
            Err(MembershipError::AlreadyMember(2))
        );
        let m = m.apply(MembershipChange::Remove(2)).unwrap();
        assert_eq!(
            m.apply(MembershipChange::AddLearner(2)),
            Err(MembershipError::IdRetired(2))
        );
        let m = m.apply(MembershipChange::AddLearner(3)).unwrap();
        let m = m.apply(MembershipChange::Promote(3)).unwrap();
        assert_eq!(m.quorum(), 2);
        assert!(m.is_voter(3) && !m.is_learner(3));
    }
}
