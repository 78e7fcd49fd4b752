//! What a seeded run is configured with: the options (`Options`, chosen per seed by
//! `Options::for_seed`), the workload and fault mixes (`Profile` and the knobs it sets,
//! `Params`), and the negative controls (`Control`).
//!
//! Plain data, read by the simulator's thread (one per seed) when a `World` is built and as
//! it runs; deciding from a seed is arithmetic on the seed, so the same seed always gets the
//! same options. Must not touch real I/O or clocks, nor draw from the run's random stream:
//! a draw here would shift every later one and change the run.

use ringkv_raft::{Controls, Persistence};
use ringkv_store::Controls as StoreControls;

/// What a seed is run with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Initial voters (3 or 5).
    pub nodes: usize,
    pub persistence: Persistence,
    /// Simulated seconds of faults and load, before the final heal-and-settle phase.
    pub sim_secs: u64,
    pub trace: bool,
    /// A deliberate protocol bug to run with (negative control), if any.
    pub control: Option<Control>,
    pub profile: Profile,
}

/// Workload and fault mixes, each aimed at a class of bugs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Everything a little: crashes, partitions, membership, transfers, 4 register keys,
    /// the most store operations (30%).
    Standard,
    /// One register key, readers that stay on their node (reading ranges now and then),
    /// the leader often isolated, fast links: a leader that answers reads it should not
    /// shows up as a stale read.
    StaleReads,
    /// Whole-cluster crashes and stalling disks: anything acknowledged before it is
    /// durable on a quorum shows up as a lost write.
    Durability,
    /// Leaders crash and change often, one entry per AppendEntries, membership churn: log
    /// repair and commit rules are stressed (Figure 8 shapes).
    Churn,
}

/// The knobs a profile sets.
pub(crate) struct Params {
    /// Register keys (the per-key checker's).
    pub(crate) keys: u64,
    /// Chance (per mille) that a client's operation is a store operation (workload.rs; a
    /// range read for a sticky reader) rather than a register one.
    pub(crate) store_ops_per_mille: u64,
    /// Half the clients only read, each always from the same node.
    pub(crate) sticky_readers: bool,
    /// Relative weights: crash all, crash one, partition, membership, transfer, quiet.
    pub(crate) fault_weights: [u64; 6],
    /// Chance (per mille) that a partition isolates the leader.
    pub(crate) isolate_leader_per_mille: u64,
    /// Time between faults, microseconds.
    pub(crate) fault_gap_us: (u64, u64),
    pub(crate) slow_disk_per_mille: u64,
    pub(crate) slow_link_per_mille: u64,
    pub(crate) append_entries_max: usize,
    pub(crate) inflight_appends_max: usize,
}

impl Profile {
    pub(crate) fn params(self) -> Params {
        let standard = Params {
            keys: 4,
            store_ops_per_mille: 300,
            sticky_readers: false,
            fault_weights: [3, 27, 25, 15, 10, 20],
            isolate_leader_per_mille: 400,
            fault_gap_us: (200_000, 1_500_000),
            slow_disk_per_mille: 30,
            slow_link_per_mille: 30,
            append_entries_max: 64,
            inflight_appends_max: 4,
        };
        match self {
            Profile::Standard => standard,
            Profile::StaleReads => Params {
                keys: 1,
                store_ops_per_mille: 150,
                sticky_readers: true,
                fault_weights: [0, 10, 70, 0, 10, 10],
                isolate_leader_per_mille: 800,
                slow_link_per_mille: 0,
                ..standard
            },
            Profile::Durability => Params {
                store_ops_per_mille: 250,
                fault_weights: [30, 30, 20, 5, 5, 10],
                slow_disk_per_mille: 150,
                ..standard
            },
            Profile::Churn => Params {
                keys: 2,
                store_ops_per_mille: 250,
                fault_weights: [5, 40, 30, 20, 5, 0],
                isolate_leader_per_mille: 600,
                fault_gap_us: (100_000, 600_000),
                append_entries_max: 1,
                inflight_appends_max: 2,
                ..standard
            },
        }
    }
}

/// The negative controls: each breaks the protocol (the first six, in the Raft core) or
/// the store (the last four, in `ringkv-store`) in one way the checkers must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    CommitOlderTermByCounting,
    ReadIndexWithoutQuorum,
    AckBeforePersist,
    LeaseIgnoresDrift,
    VoteWithoutLogCheck,
    MembershipBeforeNoop,
    /// A shard decides a txn compare on a pending revision from its lowest bound.
    CompareWithoutWaiting,
    /// A read-only txn takes a revision.
    ReadOnlyTxnBumpsRevision,
    /// A range merged from several shards leaves one shard's part out.
    RangeDropsShardPart,
    /// The sequencer skips a revision number now and then.
    SequencerSkipsRevision,
}

impl Control {
    pub const ALL: [Control; 10] = [
        Control::CommitOlderTermByCounting,
        Control::ReadIndexWithoutQuorum,
        Control::AckBeforePersist,
        Control::LeaseIgnoresDrift,
        Control::VoteWithoutLogCheck,
        Control::MembershipBeforeNoop,
        Control::CompareWithoutWaiting,
        Control::ReadOnlyTxnBumpsRevision,
        Control::RangeDropsShardPart,
        Control::SequencerSkipsRevision,
    ];

    /// The Raft core's switches this control turns on.
    pub fn controls(self) -> Controls {
        let mut c = Controls::default();
        self.apply(&mut c);
        c
    }

    pub(crate) fn apply(self, c: &mut Controls) {
        match self {
            Control::CommitOlderTermByCounting => c.commit_older_term_by_counting = true,
            Control::ReadIndexWithoutQuorum => c.read_index_without_quorum = true,
            Control::AckBeforePersist => c.ack_before_persist = true,
            Control::LeaseIgnoresDrift => c.lease_ignores_drift = true,
            Control::VoteWithoutLogCheck => c.vote_without_log_check = true,
            Control::MembershipBeforeNoop => c.membership_before_noop = true,
            Control::CompareWithoutWaiting
            | Control::ReadOnlyTxnBumpsRevision
            | Control::RangeDropsShardPart
            | Control::SequencerSkipsRevision => {}
        }
    }

    /// The store's switches this control turns on (none for a control of the core).
    pub fn store_controls(self) -> StoreControls {
        let mut c = StoreControls::default();
        match self {
            Control::CompareWithoutWaiting => c.compare_without_waiting = true,
            Control::ReadOnlyTxnBumpsRevision => c.read_only_txn_bumps_revision = true,
            Control::RangeDropsShardPart => c.range_drops_a_part = true,
            Control::SequencerSkipsRevision => c.sequencer_skips_revisions = true,
            _ => {}
        }
        c
    }
}

impl Options {
    /// The mix `make sim` uses: 3 or 5 nodes, DiskFirst mostly, MemFirst sometimes.
    pub fn for_seed(seed: u64) -> Self {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let persistence = if seed % 7 == 3 {
            Persistence::MemFirst
        } else {
            Persistence::DiskFirst
        };
        let profile = [
            Profile::Standard,
            Profile::StaleReads,
            Profile::Durability,
            Profile::Churn,
        ][(seed / 2 % 4) as usize];
        Options {
            nodes,
            persistence,
            sim_secs: 20,
            trace: false,
            control: None,
            profile,
        }
    }
}
