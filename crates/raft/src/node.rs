//! `Raft`: one node's consensus state machine.
//!
//! Owns term, vote, the in-memory log, commit index, role, the leader's per-peer progress
//! and the membership; reads and the lease are `read.rs`'s (its `Reads` is one field here).
//! Runs on the raft core's executor, driven by a loop that feeds inputs (`tick`, `step`,
//! `propose`, `read`, `on_persisted`, `on_applied`) and drains numbered `Ready`s. It must
//! not touch sockets, files, clocks, randomness sources or async runtimes: time arrives as
//! ticks and `Nanos` values, randomness as a seed.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::config::{Config, ConfigError, Controls, Persistence};
use super::log::RaftLog;
use super::membership::{Membership, MembershipChange, MembershipError};
use super::progress::{Progress, ReplState};
use super::read::{ReadOutcome, Reads};
use super::rng::SplitMix64;
use super::types::{
    Body, Entry, EntryKind, HardState, Index, Message, Nanos, NodeId, SnapshotMeta, Term,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Why a proposal (or membership change, or transfer) was refused. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Not the leader; `leader` is a hint (0 if unknown).
    NotLeader { leader: NodeId },
    /// A leadership transfer is in progress.
    TransferInProgress,
    /// `uncommitted_entries_max` entries are waiting to commit.
    Backpressure,
    /// The leader's no-op has not committed yet (membership changes wait for it).
    LeaderNotReady,
    /// Another membership change has not committed yet.
    MembershipChangeInProgress,
    /// The membership change itself is invalid.
    Membership(MembershipError),
    /// The transfer target is not a voter, or is this node.
    InvalidTransferTarget(NodeId),
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotLeader { leader } => write!(f, "not the leader (leader hint: {leader})"),
            Self::TransferInProgress => write!(f, "leadership transfer in progress"),
            Self::Backpressure => write!(f, "too many uncommitted entries"),
            Self::LeaderNotReady => write!(f, "leader has not committed an entry of its term"),
            Self::MembershipChangeInProgress => write!(f, "another membership change is pending"),
            Self::Membership(e) => write!(f, "{e}"),
            Self::InvalidTransferTarget(id) => write!(f, "node {id} cannot take leadership"),
        }
    }
}

impl std::error::Error for ProposeError {}

/// What a node recovered from its storage at start-up.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    pub hard_state: HardState,
    /// Latest snapshot on disk, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Persisted entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// Membership to use when neither the snapshot nor the log has one (a fresh cluster's
    /// `initial_cluster`; empty for a node that joins later).
    pub initial_membership: Membership,
}

/// Output of the core, numbered. The driver must, in this order of guarantees:
/// persist `hard_state`, `snapshot` and `entries` (entries starting at an index already in
/// the WAL replace that suffix) and then call `on_persisted(number)`; send `messages` (they
/// are already safe to send); apply `committed` and call `on_applied`; answer `reads`.
#[derive(Debug, Default)]
pub struct Ready {
    pub number: u64,
    pub hard_state: Option<HardState>,
    /// Discard the WAL entries, snapshot and state machine first (the hard state stays): MemFirst
    /// divergence recovery, or a received `snapshot` that replaces a log not matching it.
    pub reset: bool,
    /// A received snapshot to install (state machine and WAL) before `entries`.
    pub snapshot: Option<SnapshotMeta>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub committed: Vec<Entry>,
    pub reads: Vec<ReadOutcome>,
}

impl Ready {
    /// Whether the driver must persist something and acknowledge with `on_persisted`.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some()
            || self.reset
            || self.snapshot.is_some()
            || !self.entries.is_empty()
    }
}

/// A message that may leave only once Ready `after_ready` and log index `after_index`
/// are persisted.
#[derive(Debug)]
struct Held {
    after_ready: u64,
    after_index: Index,
    msg: Message,
}

/// A numbered Ready that carried entries or a snapshot and is not yet persisted.
#[derive(Debug)]
struct InflightReady {
    number: u64,
    /// Last log index the Ready made durable (clamped if a later Ready truncated it).
    last_index: Index,
}

/// Read-only view for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: NodeId,
    pub leader: NodeId,
    pub commit: Index,
    pub applied: Index,
    pub last_index: Index,
    pub persisted_index: Index,
    pub first_index: Index,
    pub membership: Membership,
    /// Leader only: (peer, match index, next index).
    pub progress: Vec<(NodeId, Index, Index)>,
}

/// Monotonic event counts since this `Raft` was built (for the node's metrics; plain
/// numbers, so the core stays pure: the driver reads and exports them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Pre-vote rounds started (a follower's election timeout with PreVote).
    pub pre_votes_started: u64,
    /// Real elections started: term incremented, votes requested.
    pub elections_started: u64,
    /// Elections won (this node became leader).
    pub elections_won: u64,
    /// Heartbeat rounds that carried at least one ReadIndex read.
    pub read_index_rounds: u64,
    /// Reads those rounds carried (reads per round = this / `read_index_rounds`).
    pub read_index_reads: u64,
    /// Lease reads the core answered without a round (`ReadPolicy::Lease`, lease valid).
    pub lease_reads: u64,
    /// Followers found holding less than they had acknowledged (a MemFirst crash, or
    /// disk damage cut from a DiskFirst log): their match index was lowered.
    pub follower_regressions: u64,
    /// Messages dropped by `step` because they fail `Message::check` (a driver should
    /// have refused them at its boundary already).
    pub messages_refused: u64,
    /// DiskFirst: appends refused because they conflict with an entry this node holds as
    /// committed (some storage lied or the sender is broken; see `diverged`).
    pub committed_conflicts: u64,
    /// Leader messages refused from another node claiming to lead this leader's own term.
    pub rival_leaders: u64,
}

// Fields marked `pub(super)` are shared with the read and lease code in `read.rs`, which
// adds its own `impl Raft` block.
pub struct Raft {
    pub(super) cfg: Config,
    pub(super) id: NodeId,
    term: Term,
    vote: NodeId,
    pub(super) leader: NodeId,
    pub(super) role: Role,
    pub(super) log: RaftLog,
    /// Invariant: applied <= applying <= commit <= last_index.
    pub(super) commit: Index,
    /// Handed out for applying (up to here in some Ready's `committed`).
    applying: Index,
    /// Reported applied by the driver.
    pub(super) applied: Index,
    /// Latest snapshot taken or installed (what the leader sends to lagging peers).
    snapshot: Option<SnapshotMeta>,

    /// Membership entries still in the log, oldest first; element 0 is the base (snapshot
    /// or initial) configuration. The last element is in force (thesis 4.1: on append).
    conf_history: Vec<(Index, Membership)>,
    /// The membership at index 0 (`Restore::initial_membership`): what a MemFirst node that
    /// must discard its whole log starts again from, like every node's log does.
    initial_membership: Membership,

    // Leader state.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// Target and ticks elapsed of an ongoing leadership transfer.
    pub(super) transfer: Option<(NodeId, u32)>,
    /// Ticks since this node last heard from a leader of its term (or led itself). While
    /// below `election_timeout_min_ticks` it refuses votes: it may have acknowledged a lease
    /// round (thesis 6.4.1). Unlike `leader`, a higher-term message does not reset it. A node
    /// restarting with a term > 0 starts at 0: it may have acknowledged a round just before it
    /// stopped. A fresh node starts at the maximum (it never acknowledged anything).
    pub(super) leader_contact_ticks: u32,
    /// Send appends to every peer at the next `ready()` (batches many proposals).
    need_broadcast: bool,
    /// Commit index last announced to followers.
    broadcast_commit: Index,
    /// ReadIndex rounds, the lease and pending reads (`read.rs`).
    pub(super) reads: Reads,

    // Candidate state: votes received in the current (pre-)election.
    votes: BTreeMap<NodeId, bool>,

    // Timers, in ticks.
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_timeout: u32,
    rng: SplitMix64,
    /// Latest monotonic time seen in an input.
    pub(super) now: Nanos,

    // Persistence tracking.
    next_ready: u64,
    persisted_ready: u64,
    /// Highest log index known durable.
    persisted_index: Index,
    inflight_readies: VecDeque<InflightReady>,
    /// First log index not yet handed out in a Ready.
    unstable_from: Index,
    /// Hard state as last handed out, and the Ready that carried the last term/vote change.
    emitted_hs: HardState,
    term_vote_ready: u64,
    pending_snapshot: Option<SnapshotMeta>,
    pending_reset: bool,

    msgs: Vec<Message>,
    held: VecDeque<Held>,
    pub(super) counters: Counters,
}

impl Raft {
    /// Builds a node from what its storage holds. Config errors name the setting.
    pub fn new(cfg: Config, restore: Restore) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let (base_index, base_term, base_conf) = match &restore.snapshot {
            Some(s) => (s.index, s.term, s.membership.clone()),
            None => (0, 0, restore.initial_membership.clone()),
        };
        base_conf.check();
        let mut log = RaftLog::new(base_index, base_term);
        log.append(restore.entries);
        let mut conf_history = vec![(base_index, base_conf)];
        for e in log.iter_from(base_index + 1) {
            if e.kind == EntryKind::Membership {
                let m = Membership::decode(&e.data).expect("corrupt membership entry in log");
                conf_history.push((e.index, m));
            }
        }
        let hs = restore.hard_state;
        // MemFirst may have lost entries the hard state saw committed: clamp (see Persistence).
        let commit = hs.commit.clamp(base_index, log.last_index());
        let last = log.last_index();
        let mut raft = Raft {
            id: cfg.id,
            rng: SplitMix64::new(cfg.seed),
            cfg,
            // At least the snapshot's term: a node restored from a snapshot file alone
            // (`ringkv snapshot restore`) has no hard state yet, and its term must not
            // be below its log's last term.
            term: hs.term.max(base_term),
            vote: hs.vote,
            leader: 0,
            role: Role::Follower,
            log,
            commit,
            applying: base_index,
            applied: base_index,
            snapshot: restore.snapshot,
            conf_history,
            initial_membership: restore.initial_membership,
            progress: BTreeMap::new(),
            transfer: None,
            leader_contact_ticks: if hs.term > 0 { 0 } else { u32::MAX },
            need_broadcast: false,
            broadcast_commit: 0,
            reads: Reads::default(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: 0,
            now: 0,
            next_ready: 1,
            persisted_ready: 0,
            persisted_index: last,
            inflight_readies: VecDeque::new(),
            unstable_from: last + 1,
            emitted_hs: HardState {
                term: hs.term,
                vote: hs.vote,
                commit,
            },
            term_vote_ready: 0,
            pending_snapshot: None,
            pending_reset: false,
            msgs: Vec::new(),
            held: VecDeque::new(),
            counters: Counters::default(),
        };
        raft.reset_randomized_timeout();
        Ok(raft)
    }

    // ----- accessors -----

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn leader(&self) -> NodeId {
        self.leader
    }
    pub fn commit(&self) -> Index {
        self.commit
    }
    pub fn applied(&self) -> Index {
        self.applied
    }
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    pub fn membership(&self) -> &Membership {
        &self.conf_history.last().expect("base config").1
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn latest_snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.0)
    }
    /// Event counts since start (elections, read rounds, lease reads).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether a membership change is appended but not yet committed.
    pub fn membership_change_pending(&self) -> bool {
        self.conf_history.last().expect("base").0 > self.commit
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.commit,
            applied: self.applied,
            last_index: self.log.last_index(),
            persisted_index: self.persisted_index,
            first_index: self.log.first_index(),
            membership: self.membership().clone(),
            progress: self
                .progress
                .iter()
                .map(|(&id, p)| (id, p.match_index, p.next_index))
                .collect(),
        }
    }

    // ----- inputs -----

    /// One unit of logical time. `now` is the driver's monotonic clock, used only to stamp
    /// heartbeat rounds for the lease.
    pub fn tick(&mut self, now: Nanos) {
        self.observe_time(now);
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed = self.election_elapsed.saturating_add(1);
            self.leader_contact_ticks = self.leader_contact_ticks.saturating_add(1);
            if self.election_elapsed >= self.randomized_timeout && self.promotable() {
                self.campaign(true, false);
            }
        }
    }

    /// Starts an election now (operator action or tests); uses pre-vote.
    pub fn campaign_now(&mut self) {
        if self.role != Role::Leader && self.promotable() {
            self.campaign(true, false);
        }
    }

    /// Appends a batch of client commands. Returns (first index, term): an applied entry at
    /// that index with another term means the proposal was lost to a leader change.
    pub fn propose(&mut self, batch: Vec<Bytes>) -> Result<(Index, Term), ProposeError> {
        self.check_can_propose(batch.len())?;
        let first = self.log.last_index() + 1;
        let term = self.term;
        let entries = batch.into_iter().enumerate().map(|(i, data)| Entry {
            index: first + i as Index,
            term,
            kind: EntryKind::Normal,
            data,
        });
        self.append_as_leader(entries);
        Ok((first, term))
    }

    /// Proposes one membership change. Allowed only after an entry of this leader's term
    /// committed and while no other change is uncommitted.
    pub fn propose_membership(&mut self, change: MembershipChange) -> Result<Index, ProposeError> {
        self.check_can_propose(1)?;
        if !self.noop_committed() && !self.control(|c| c.membership_before_noop) {
            return Err(ProposeError::LeaderNotReady);
        }
        if self.conf_history.last().expect("base").0 > self.commit {
            return Err(ProposeError::MembershipChangeInProgress);
        }
        let next = self
            .membership()
            .apply(change)
            .map_err(ProposeError::Membership)?;
        let index = self.log.last_index() + 1;
        let entry = Entry {
            index,
            term: self.term,
            kind: EntryKind::Membership,
            data: Bytes::from(next.encode()),
        };
        self.append_as_leader([entry]);
        Ok(index)
    }

    /// Starts a leadership transfer to `target` (thesis 3.10). Proposals and lease reads are
    /// refused until it ends; it is abandoned after one election timeout.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.id || !self.membership().is_voter(target) {
            return Err(ProposeError::InvalidTransferTarget(target));
        }
        if self.transfer.is_some_and(|(t, _)| t == target) {
            return Ok(());
        }
        self.transfer = Some((target, 0));
        // Revoke the lease, and let no round sent before now renew it: the target's forced
        // vote is granted regardless of leases (see `start_round` for rounds sent during).
        self.reads.revoke_lease();
        let caught_up = self.progress[&target].match_index == self.log.last_index();
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.send_append(target);
        }
        Ok(())
    }

    /// Steps one message from a peer. A message that fails `Message::check` is dropped and
    /// counted: no peer's bytes can trip an invariant assertion.
    pub fn step(&mut self, m: Message) {
        if m.check().is_err() {
            self.counters.messages_refused += 1;
            return;
        }
        if m.to != self.id || m.from == self.id || m.from == 0 {
            return; // misrouted: the transport refuses these before they get here
        }
        if m.term > self.term {
            match m.body {
                Body::PreVote { .. } => {}
                Body::PreVoteResp { granted: true } => {}
                Body::Vote { force: false, .. } if self.in_lease() => return,
                _ => {
                    let leader = match m.body {
                        Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                            m.from
                        }
                        _ => 0,
                    };
                    self.become_follower(m.term, leader);
                }
            }
        } else if m.term < self.term {
            match m.body {
                // Tell a stale leader about the newer term so it steps down.
                Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                    let body = Body::AppendResp {
                        success: false,
                        index: 0,
                        hint_index: 0,
                        hint_term: 0,
                    };
                    self.send(m.from, body);
                }
                Body::PreVote { .. } => self.send(m.from, Body::PreVoteResp { granted: false }),
                _ => {}
            }
            return;
        }
        if self.role == Role::Leader
            && matches!(
                m.body,
                Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. }
            )
        {
            // Another leader in this node's own term: impossible among honest peers (one
            // vote per term). Refused and counted instead of asserted, so that one broken
            // peer cannot stop the leader; the simulator fails a run on the count.
            self.counters.rival_leaders += 1;
            return;
        }
        match m.body {
            Body::PreVote {
                last_index,
                last_term,
            } => {
                let granted = m.term > self.term
                    && !self.in_lease()
                    && (self.log.is_up_to_date(last_index, last_term)
                        || self.control(|c| c.vote_without_log_check));
                let term = if granted { m.term } else { self.term };
                self.send_with_term(m.from, term, Body::PreVoteResp { granted });
            }
            Body::Vote {
                last_index,
                last_term,
                force,
            } => {
                // Fix (election.txt, "not reset by a higher-term message"): the lease check
                // above covers only a Vote of a higher term. A node in lease that adopted the
                // candidate's term from a message carrying no vote (a late PreVoteResp
                // refusal, an AppendResp) has vote 0 and leader 0 in that term, and granted:
                // right after acknowledging a lease round of the older leader. A vote not yet
                // given in this term is refused in lease too, unless forced (TimeoutNow).
                let fresh = self.vote == 0 && self.leader == 0 && (force || !self.in_lease());
                let can_vote = self.vote == m.from || fresh;
                let granted = can_vote
                    && (self.log.is_up_to_date(last_index, last_term)
                        || self.control(|c| c.vote_without_log_check));
                if granted {
                    assert!(
                        self.vote == 0 || self.vote == m.from,
                        "second vote in term {}",
                        self.term
                    );
                    self.vote = m.from;
                    self.election_elapsed = 0;
                }
                self.send(m.from, Body::VoteResp { granted });
            }
            Body::PreVoteResp { granted } => {
                // A grant carries the pre-vote term; a refusal carries the voter's own term.
                if self.role == Role::PreCandidate && (m.term == self.term + 1 || !granted) {
                    self.tally(m.from, granted, true);
                }
            }
            Body::VoteResp { granted } => {
                if self.role == Role::Candidate {
                    self.tally(m.from, granted, false);
                }
            }
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.follow(m.from);
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            Body::Heartbeat {
                commit,
                commit_term,
                seq,
            } => {
                self.follow(m.from);
                // Only an entry that matches the leader's at `commit` proves the whole prefix
                // matches; a MemFirst follower that lost acknowledged entries in a crash may
                // hold older ones there, which must never be applied.
                if commit > self.commit && self.log.term(commit) == Some(commit_term) {
                    self.commit = commit;
                }
                self.send(m.from, Body::HeartbeatResp { seq });
            }
            Body::Snapshot { meta } => {
                self.follow(m.from);
                self.handle_snapshot(m.from, meta);
            }
            Body::AppendResp {
                success,
                index,
                hint_index,
                hint_term,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_resp(m.from, success, index, hint_index, hint_term);
                }
            }
            Body::HeartbeatResp { seq } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_resp(m.from, seq);
                }
            }
            Body::TimeoutNow => {
                if self.role != Role::Leader && self.promotable() {
                    self.campaign(false, true);
                }
            }
        }
    }

    /// The driver persisted everything in Readies up to `number`.
    pub fn on_persisted(&mut self, number: u64) {
        assert!(
            number < self.next_ready,
            "persisted Ready {number} was never handed out"
        );
        if number <= self.persisted_ready {
            return;
        }
        self.persisted_ready = number;
        while self
            .inflight_readies
            .front()
            .is_some_and(|r| r.number <= number)
        {
            let r = self.inflight_readies.pop_front().expect("front exists");
            self.persisted_index = self.persisted_index.max(r.last_index);
        }
        assert!(
            self.persisted_index <= self.log.last_index(),
            "persisted beyond the log"
        );
        self.release_held();
        if self.role == Role::Leader && self.cfg.persistence == Persistence::DiskFirst {
            self.maybe_commit();
        }
    }

    /// Committed entries (or an installed snapshot) through `index` are applied, or handed
    /// in log order to whatever applies them: a driver may call this when it hands them
    /// out, as long as everything that depends on `applied` (read results, snapshots)
    /// reaches the state machine after them in the same order.
    pub fn on_applied(&mut self, index: Index) {
        assert!(
            index <= self.applying,
            "applied {index} beyond what was handed out ({})",
            self.applying
        );
        if index <= self.applied {
            return;
        }
        self.applied = index;
        self.reads.on_applied(index);
    }

    /// The metadata a snapshot at `index` (<= applied, in the log) will carry: what
    /// `compact(index)` returns, without forgetting anything yet (the driver saves the
    /// snapshot first, then compacts).
    pub fn snapshot_meta(&self, index: Index) -> SnapshotMeta {
        assert!(index <= self.applied, "snapshot at {index} beyond applied");
        let term = self
            .log
            .term(index)
            .expect("entry to snapshot is in the log");
        let conf_pos = self
            .conf_history
            .iter()
            .rposition(|(i, _)| *i <= index)
            .expect("base");
        SnapshotMeta {
            index,
            term,
            membership: self.conf_history[conf_pos].1.clone(),
        }
    }

    /// The driver took a state-machine snapshot at `index` (<= applied): forget the log up
    /// to it. Returns the metadata to store beside the snapshot.
    pub fn compact(&mut self, index: Index) -> SnapshotMeta {
        assert!(
            index <= self.applied,
            "snapshot at {index} beyond applied {}",
            self.applied
        );
        assert!(
            index > self.log.snapshot_index(),
            "snapshot at {index} is not newer"
        );
        let meta = self.snapshot_meta(index);
        let conf_pos = self
            .conf_history
            .iter()
            .rposition(|(i, _)| *i <= index)
            .expect("base");
        self.conf_history.drain(..conf_pos);
        self.conf_history[0].0 = index;
        self.log.compact_to(index, meta.term);
        self.snapshot = Some(meta.clone());
        meta
    }

    /// The transport finished sending the snapshot to `to`, `delivered` or not. Either way
    /// the leader probes next (as etcd does): after a delivered snapshot at the index after
    /// it, which the peer acknowledges once installed or rejects if it lost it in a crash
    /// (then the leader backs up and sends a snapshot again). Without this report a lost
    /// acknowledgement would leave the peer in snapshot state forever.
    pub fn report_snapshot(&mut self, to: NodeId, delivered: bool) {
        if let Some(pr) = self.progress.get_mut(&to) {
            if let ReplState::Snapshot(index) = pr.state {
                pr.become_probe();
                if delivered {
                    // Paused until the peer's acknowledgement or next heartbeat reply.
                    pr.next_index = pr.next_index.max(index + 1);
                    pr.probe_sent = true;
                }
            }
        }
    }

    /// The transport lost its connection to `to`: stop pipelining until it answers.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if let Some(pr) = self.progress.get_mut(&to) {
            if pr.state != ReplState::Probe {
                pr.become_probe(); // a snapshot in flight is lost with the connection too
            }
        }
    }

    // ----- output -----

    pub fn has_ready(&self) -> bool {
        let hs = self.hard_state();
        hs != self.emitted_hs
            || self.pending_reset
            || self.pending_snapshot.is_some()
            || self.unstable_from <= self.log.last_index()
            || !self.msgs.is_empty()
            || self.commit > self.applying
            || self.reads.has_done()
            || (self.role == Role::Leader
                && (self.need_broadcast
                    || self.commit > self.broadcast_commit
                    || self.reads.awaits_round()))
    }

    /// Collects everything the driver must do now, under a new number.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            if self.reads.awaits_round() {
                self.start_round();
            }
            if self.need_broadcast || self.commit > self.broadcast_commit {
                self.broadcast_append();
            }
        }
        let number = self.next_ready;
        self.next_ready += 1;
        let hs = self.hard_state();
        let mut rd = Ready {
            number,
            ..Ready::default()
        };
        if hs != self.emitted_hs {
            assert!(
                hs.term > self.emitted_hs.term
                    || (hs.term == self.emitted_hs.term
                        && (self.emitted_hs.vote == 0 || hs.vote == self.emitted_hs.vote)),
                "node {}: hard state {:?} after {:?}: term went back or second vote in a term",
                self.id,
                hs,
                self.emitted_hs
            );
            // Commit may only go back through the MemFirst divergence reset.
            assert!(
                hs.commit >= self.emitted_hs.commit || self.pending_reset,
                "node {}: commit went back from {} to {}",
                self.id,
                self.emitted_hs.commit,
                hs.commit
            );
            if (hs.term, hs.vote) != (self.emitted_hs.term, self.emitted_hs.vote) {
                self.term_vote_ready = number;
            }
            self.emitted_hs = hs;
            rd.hard_state = Some(hs);
        }
        rd.reset = std::mem::take(&mut self.pending_reset);
        rd.snapshot = self.pending_snapshot.take();
        let mut durable_to = rd.snapshot.as_ref().map(|s| s.index);
        if self.unstable_from <= self.log.last_index() {
            rd.entries = self.log.iter_from(self.unstable_from).cloned().collect();
            self.unstable_from = self.log.last_index() + 1;
            durable_to = Some(self.log.last_index());
        }
        if let Some(last_index) = durable_to {
            self.inflight_readies
                .push_back(InflightReady { number, last_index });
        }
        if self.commit > self.applying {
            let from = self.applying + 1;
            let to = self
                .commit
                .min(self.applying + self.cfg.apply_entries_max as Index);
            rd.committed = self
                .log
                .iter_from(from)
                .take((to - from + 1) as usize)
                .cloned()
                .collect();
            assert_eq!(
                rd.committed.first().map(|e| e.index),
                Some(from),
                "committed entry missing"
            );
            self.applying = to;
        }
        rd.messages = std::mem::take(&mut self.msgs);
        rd.reads = self.reads.take_done();
        self.check_invariants();
        rd
    }

    /// Cheap invariants, checked on every Ready in every build.
    fn check_invariants(&self) {
        let last = self.log.last_index();
        assert!(
            self.applied <= self.applying && self.applying <= self.commit && self.commit <= last,
            "node {}: applied {} <= applying {} <= commit {} <= last {} violated",
            self.id,
            self.applied,
            self.applying,
            self.commit,
            last
        );
        assert!(
            self.persisted_index <= last,
            "persisted index beyond the log"
        );
        assert!(
            self.commit >= self.log.snapshot_index(),
            "commit below the snapshot"
        );
        assert!(
            self.role != Role::Leader || self.leader == self.id,
            "leader without itself as leader"
        );
    }

    // ----- internals: roles -----

    /// Whether a negative control is on (always false without the feature).
    pub(super) fn control(&self, f: impl Fn(&Controls) -> bool) -> bool {
        cfg!(feature = "negative-controls") && f(&self.cfg.controls)
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        }
    }

    pub(super) fn observe_time(&mut self, now: Nanos) {
        self.now = self.now.max(now);
    }

    fn promotable(&self) -> bool {
        self.membership().is_voter(self.id)
    }

    /// An entry of this node's current term has committed: as leader it may serve
    /// ReadIndex reads and accept membership changes.
    pub fn noop_committed(&self) -> bool {
        self.log.term(self.commit) == Some(self.term)
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.reads.on_timeout_now_sent();
        self.send(to, Body::TimeoutNow);
    }

    fn reset_randomized_timeout(&mut self) {
        let span =
            (self.cfg.election_timeout_max_ticks - self.cfg.election_timeout_min_ticks) as u64;
        self.randomized_timeout = self.cfg.election_timeout_min_ticks + self.rng.below(span) as u32;
    }

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        assert!(term >= self.term, "term goes backwards");
        if term > self.term {
            self.term = term;
            self.vote = 0;
        }
        if self.role == Role::Leader {
            self.progress.clear();
            self.transfer = None;
            self.leader_contact_ticks = 0; // it led until now: as fresh as contact gets
        }
        self.reads.fail_unconfirmed(leader);
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.election_elapsed = 0;
        self.reset_randomized_timeout();
    }

    /// Accept `from` as leader of the current term.
    fn follow(&mut self, from: NodeId) {
        assert!(
            self.role != Role::Leader,
            "two leaders in term {}: {} and {from}",
            self.term,
            self.id
        );
        if self.role != Role::Follower || self.leader != from {
            self.become_follower(self.term, from);
        }
        self.election_elapsed = 0;
        self.leader_contact_ticks = 0;
    }

    fn campaign(&mut self, pre: bool, force: bool) {
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.election_elapsed = 0;
        self.reset_randomized_timeout();
        let term = if pre {
            self.counters.pre_votes_started += 1;
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.counters.elections_started += 1;
            self.become_follower(self.term + 1, 0);
            self.role = Role::Candidate;
            self.vote = self.id;
            self.votes.insert(self.id, true);
            self.term
        };
        self.leader = 0;
        if self.won(true) {
            return self.finish_campaign(pre);
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self
            .membership()
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.id)
            .collect();
        for v in voters {
            let body = if pre {
                Body::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                Body::Vote {
                    last_index,
                    last_term,
                    force,
                }
            };
            self.send_with_term(v, term, body);
        }
    }

    fn tally(&mut self, from: NodeId, granted: bool, pre: bool) {
        if !self.membership().is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        if self.won(true) {
            self.finish_campaign(pre);
        } else if self.won(false) {
            self.become_follower(self.term, 0);
        }
    }

    /// Whether a quorum of voters answered `granted`.
    fn won(&self, granted: bool) -> bool {
        let m = self.membership();
        let n = m
            .voters
            .iter()
            .filter(|v| self.votes.get(v) == Some(&granted))
            .count();
        n >= m.quorum()
    }

    fn finish_campaign(&mut self, pre: bool) {
        if pre {
            self.campaign(false, false);
        } else {
            self.become_leader();
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate);
        self.counters.elections_won += 1;
        self.role = Role::Leader;
        self.leader = self.id;
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.transfer = None;
        // Unconfirmed reads were failed on the way here (become_follower); confirmed reads and
        // results not yet handed out stay. The new term starts without a lease, and no
        // TimeoutNow of an earlier term holds back lease reads.
        self.reads.start_term();
        let next = self.log.last_index() + 1;
        self.progress = self
            .membership()
            .members()
            .filter(|&id| id != self.id)
            .map(|id| (id, Progress::new(next)))
            .collect();
        self.broadcast_commit = 0;
        // Commit the term (paper 5.4.2, thesis 6.4): reads and membership changes wait for it.
        let noop = Entry {
            index: next,
            term: self.term,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        };
        self.append_as_leader([noop]);
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if let Some((_, elapsed)) = self.transfer.as_mut() {
            *elapsed += 1;
            if *elapsed >= self.cfg.election_timeout_min_ticks {
                self.transfer = None; // abandoned: the target did not win in time
            }
        }
        if self.election_elapsed >= self.cfg.election_timeout_min_ticks {
            self.election_elapsed = 0;
            if !self.check_quorum() {
                // No quorum heard from us for a whole timeout: someone else may lead.
                self.become_follower(self.term, 0);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.start_round();
        }
    }

    /// CheckQuorum (thesis 6.2): counts voters heard from since the last check.
    fn check_quorum(&mut self) -> bool {
        let m = self.membership().clone();
        let mut active = usize::from(m.is_voter(self.id));
        for (id, pr) in self.progress.iter_mut() {
            if m.is_voter(*id) && pr.recent_active {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= m.quorum()
    }

    // ----- internals: replication -----

    fn check_can_propose(&self, n: usize) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let uncommitted = (self.log.last_index() - self.commit) as usize;
        if uncommitted + n > self.cfg.uncommitted_entries_max {
            return Err(ProposeError::Backpressure);
        }
        Ok(())
    }

    fn append_as_leader(&mut self, entries: impl IntoIterator<Item = Entry>) {
        let before = self.log.last_index();
        self.log.append(entries);
        self.track_membership_entries(before + 1);
        self.need_broadcast = true;
        self.maybe_commit();
    }

    /// Records membership entries appended from `from` on and puts the newest in force.
    fn track_membership_entries(&mut self, from: Index) {
        let mut changed = false;
        for e in self.log.iter_from(from) {
            if e.kind == EntryKind::Membership {
                let m = Membership::decode(&e.data).expect("corrupt membership entry");
                self.conf_history.push((e.index, m));
                changed = true;
            }
        }
        if changed {
            self.on_membership_changed();
        }
    }

    fn on_membership_changed(&mut self) {
        let m = self.membership().clone();
        if self.role == Role::Leader {
            let next = self.log.last_index() + 1;
            for id in m.members().filter(|&id| id != self.id) {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next));
            }
            // A node removed by a change that has not committed keeps receiving appends so
            // that it learns of its removal (and stops campaigning); pruned on commit.
            let uncommitted = self.conf_history.last().expect("base").0 > self.commit;
            self.progress
                .retain(|id, _| m.is_member(*id) || (uncommitted && m.removed.contains(id)));
            if self.transfer.is_some_and(|(t, _)| !m.is_voter(t)) {
                self.transfer = None;
            }
            // The lease was earned from a quorum of the previous configuration: start over.
            self.reads.drop_lease();
        } else if matches!(self.role, Role::Candidate | Role::PreCandidate) && !m.is_voter(self.id)
        {
            self.become_follower(self.term, 0);
        }
    }

    /// This node's own replication point: in DiskFirst only what is on disk counts.
    fn self_match(&self) -> Index {
        match self.cfg.persistence {
            Persistence::DiskFirst if !self.control(|c| c.ack_before_persist) => {
                self.persisted_index
            }
            Persistence::DiskFirst => self.log.last_index(),
            Persistence::MemFirst => self.log.last_index(),
        }
    }

    /// Commit by counting replicas, only for an entry of the current term (paper 5.4.2).
    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let m = self.membership();
        let mut matches: Vec<Index> = m
            .voters
            .iter()
            .map(|&v| {
                if v == self.id {
                    self.self_match()
                } else {
                    self.progress[&v].match_index
                }
            })
            .collect();
        if matches.is_empty() {
            return;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let q = matches[m.quorum() - 1];
        let older_term = self.log.term(q) != Some(self.term);
        if q <= self.commit || (older_term && !self.control(|c| c.commit_older_term_by_counting)) {
            return;
        }
        assert!(q <= self.log.last_index(), "commit beyond the log");
        let noop_was_committed = self.noop_committed();
        self.commit = q;
        if !noop_was_committed && self.noop_committed() {
            self.record_noop_reads();
        }
        let conf_index = self.conf_history.last().expect("base").0;
        if conf_index <= self.commit {
            // Nodes removed by the now committed change no longer need its entry.
            let m = self.membership().clone();
            self.progress.retain(|id, _| m.is_member(*id));
            // A leader removed from the voters steps down once the removal commits (thesis
            // 4.2.2), handing leadership to a caught-up voter so the cluster does not wait
            // out an election timeout.
            if !m.is_voter(self.id) {
                let last = self.log.last_index();
                let heir = self
                    .progress
                    .iter()
                    .filter(|(id, p)| m.is_voter(**id) && p.match_index == last)
                    .map(|(id, _)| *id)
                    .next();
                if let Some(heir) = heir {
                    self.send_timeout_now(heir);
                }
                self.become_follower(self.term, 0);
            }
        }
    }

    fn broadcast_append(&mut self) {
        self.need_broadcast = false;
        self.broadcast_commit = self.commit;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in peers {
            self.send_append(id);
        }
    }

    /// Sends what `to` is missing, pipelined up to `inflight_appends_max`. A peer that has
    /// everything but not the latest commit index gets an empty append to learn it.
    pub(super) fn send_append(&mut self, to: NodeId) {
        let mut sent_any = false;
        loop {
            let last = self.log.last_index();
            let pr = self.progress.get(&to).expect("progress for peer");
            if !pr.can_send(self.cfg.inflight_appends_max) {
                return;
            }
            let even_empty = pr.sent_commit < self.commit;
            let prev_index = pr.next_index - 1;
            if prev_index < self.log.snapshot_index() {
                let meta = self
                    .snapshot
                    .clone()
                    .expect("compacted log without a snapshot");
                let pr = self.progress.get_mut(&to).expect("progress");
                pr.state = ReplState::Snapshot(meta.index);
                pr.inflight.clear();
                self.send(to, Body::Snapshot { meta });
                return;
            }
            let has_new = pr.next_index <= last;
            if !has_new && (sent_any || !even_empty) && pr.state == ReplState::Replicate {
                return;
            }
            let prev_term = self.log.term(prev_index).expect("prev entry in log");
            let entries = if has_new {
                self.log.slice(
                    pr.next_index,
                    last,
                    self.cfg.append_entries_max,
                    self.cfg.append_bytes_max,
                )
            } else {
                Vec::new()
            };
            let sent_last = prev_index + entries.len() as Index;
            let commit = self.commit;
            let pr = self.progress.get_mut(&to).expect("progress");
            pr.on_sent(sent_last);
            pr.sent_commit = commit;
            self.send(
                to,
                Body::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                },
            );
            sent_any = true;
            if sent_last >= last {
                return;
            }
        }
    }

    fn handle_append_resp(
        &mut self,
        from: NodeId,
        success: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if success {
            if index > last {
                return; // cannot match entries we do not have (stale or diverged peer)
            }
            if matches!(pr.state, ReplState::Snapshot(_)) {
                pr.state = ReplState::Probe;
            }
            if pr.on_success(index) {
                self.maybe_commit();
                if self.transfer.is_some_and(|(t, _)| t == from) && index == self.log.last_index() {
                    self.send_timeout_now(from);
                }
            }
            if self.role == Role::Leader {
                self.send_append(from);
            }
            return;
        }
        let stale = match pr.state {
            // A rejection at the match index itself is current: the follower no longer
            // holds what it acknowledged (a MemFirst crash, or damage cut from its disk).
            ReplState::Replicate => index < pr.match_index,
            ReplState::Probe => index + 1 != pr.next_index,
            ReplState::Snapshot(_) => true,
        } || index > last; // a rejection of entries this leader never had: not ours
        if stale {
            return;
        }
        let probe = if hint_term > 0 {
            self.log.find_conflict_by_term(hint_index, hint_term).0
        } else {
            hint_index
        };
        let pr = self.progress.get_mut(&from).expect("progress");
        if probe < pr.match_index {
            // The one case where a match index goes down. Safe: commit never does, and
            // later commits count this follower only once it acknowledges again. Left
            // alone, the follower would be probed at an index it lacks forever.
            pr.match_index = probe;
            self.counters.follower_regressions += 1;
        }
        pr.become_probe();
        pr.next_index = index.min(probe + 1).max(pr.match_index + 1);
        self.send_append(from);
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) {
        if prev_index < self.log.snapshot_index() {
            let index = self.log.snapshot_index();
            return self.send(
                from,
                Body::AppendResp {
                    success: true,
                    index,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
        }
        match self.log.term(prev_index) {
            Some(t) if t == prev_term => {}
            found => {
                if found.is_some() && prev_index <= self.commit {
                    return self.diverged(from, prev_index);
                }
                let (hint_index, hint_term) = self
                    .log
                    .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
                let body = Body::AppendResp {
                    success: false,
                    index: prev_index,
                    hint_index,
                    hint_term,
                };
                return self.send(from, body);
            }
        }
        let last_new = prev_index + entries.len() as Index;
        let mut first_new = None;
        for (i, e) in entries.iter().enumerate() {
            match self.log.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    if e.index <= self.commit {
                        return self.diverged(from, prev_index);
                    }
                    self.truncate_from(e.index);
                }
                None => {}
            }
            first_new = Some(i);
            break;
        }
        if let Some(i) = first_new {
            let from_index = entries[i].index;
            self.log.append(entries.into_iter().skip(i));
            self.track_membership_entries(from_index);
        }
        let c = commit.min(last_new);
        if c > self.commit {
            self.commit = c;
        }
        self.send(
            from,
            Body::AppendResp {
                success: true,
                index: last_new,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }

    /// Drops log entries from `index` on (a conflicting suffix) and reverts membership
    /// entries among them (thesis 4.1: a configuration is undone with its entry).
    fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.commit,
            "truncating committed entry {index} (commit {})",
            self.commit
        );
        self.log.truncate_from(index);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted_index = self.persisted_index.min(index - 1);
        for r in self.inflight_readies.iter_mut() {
            r.last_index = r.last_index.min(index - 1);
        }
        let before = self.conf_history.len();
        while self.conf_history.len() > 1 && self.conf_history.last().expect("entry").0 >= index {
            self.conf_history.pop();
        }
        if self.conf_history.len() != before {
            self.on_membership_changed();
        }
    }

    /// A leader's log disagrees with an entry we hold as committed. With
    /// MemFirst it means acknowledged entries were lost in a crash (see `Persistence`): drop
    /// everything and catch up from the leader, by entries or snapshot. With DiskFirst it
    /// cannot happen unless some storage lied or the peer is broken: committed entries are
    /// never given up, so the message is refused and counted (`committed_conflicts`: the
    /// driver reports it, the simulator fails the run on it) and the node keeps what it
    /// committed. A panic here would let one bad peer stop every follower.
    fn diverged(&mut self, from: NodeId, prev_index: Index) {
        if self.cfg.persistence != Persistence::MemFirst {
            self.counters.committed_conflicts += 1;
            return;
        }
        // Every membership entry of this log is suspect, committed ones included.
        self.log = RaftLog::new(0, 0);
        self.conf_history = vec![(0, self.initial_membership.clone())];
        self.on_membership_changed();
        self.commit = 0;
        self.applying = 0;
        self.applied = 0;
        self.snapshot = None;
        self.persisted_index = 0;
        self.unstable_from = 1;
        for r in self.inflight_readies.iter_mut() {
            r.last_index = 0;
        }
        self.pending_reset = true;
        self.pending_snapshot = None;
        // Rejecting with an empty hint makes the leader start again from index 1.
        let body = Body::AppendResp {
            success: false,
            index: prev_index,
            hint_index: 0,
            hint_term: 0,
        };
        self.send(from, body);
    }

    fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        if meta.index <= self.commit {
            let index = self.commit;
            return self.send(
                from,
                Body::AppendResp {
                    success: true,
                    index,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
        }
        meta.membership.check();
        let keep_suffix = self.log.term(meta.index) == Some(meta.term);
        if keep_suffix {
            self.log.compact_to(meta.index, meta.term);
            self.conf_history.retain(|(i, _)| *i > meta.index);
            self.conf_history
                .insert(0, (meta.index, meta.membership.clone()));
        } else {
            self.log = RaftLog::new(meta.index, meta.term);
            self.unstable_from = meta.index + 1;
            // Fix (snapshot.txt, "drops its whole log"): of the old log only committed entries
            // (which the snapshot covers) are known durable until the snapshot's own Ready is
            // persisted. Clamping to `meta.index` instead released the ack for `meta.index`
            // before the snapshot was on disk (breaking DiskFirst): after a crash the leader
            // believed index 5 matched and its heartbeat commit made the follower apply its own
            // stale, conflicting entries 3-5.
            let durable = self.persisted_index.min(self.commit);
            self.persisted_index = durable;
            for r in self.inflight_readies.iter_mut() {
                r.last_index = r.last_index.min(durable);
            }
            // Fix (snapshot.txt, "drops its whole log"): the driver must drop the stored log
            // too. Without `reset` it kept stored entries after the snapshot (it cannot tell
            // them from a matching suffix), and a restart loaded a stale 6/1 after a 5/2
            // snapshot ("log term goes backwards").
            self.pending_reset = true;
            self.conf_history = vec![(meta.index, meta.membership.clone())];
        }
        self.on_membership_changed();
        self.commit = meta.index;
        self.applying = meta.index;
        self.snapshot = Some(meta.clone());
        // Acknowledge the snapshot index, not a kept suffix after it: only the snapshot is
        // known to match the leader's log.
        let index = meta.index;
        self.pending_snapshot = Some(meta);
        self.send(
            from,
            Body::AppendResp {
                success: true,
                index,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }

    // ----- internals: sending -----

    pub(super) fn send(&mut self, to: NodeId, body: Body) {
        self.send_with_term(to, self.term, body);
    }

    /// Queues a message, or holds it until what it depends on is durable: any message sent
    /// while a term or vote change is unpersisted; with DiskFirst, an append acknowledgement
    /// until the acknowledged entries are persisted.
    fn send_with_term(&mut self, to: NodeId, term: Term, body: Body) {
        let after_ready = if (self.term, self.vote) != (self.emitted_hs.term, self.emitted_hs.vote)
        {
            self.next_ready
        } else if self.term_vote_ready > self.persisted_ready {
            self.term_vote_ready
        } else {
            0
        };
        let after_index = match body {
            Body::AppendResp {
                success: true,
                index,
                ..
            } if self.cfg.persistence == Persistence::DiskFirst
                && !self.control(|c| c.ack_before_persist) =>
            {
                index
            }
            _ => 0,
        };
        let msg = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if after_ready > self.persisted_ready || after_index > self.persisted_index {
            self.held.push_back(Held {
                after_ready,
                after_index,
                msg,
            });
        } else {
            self.msgs.push(msg);
        }
    }

    fn release_held(&mut self) {
        let mut keep = VecDeque::new();
        while let Some(h) = self.held.pop_front() {
            if h.msg.term < self.term {
                continue; // written for an older term; its promise may no longer hold
            }
            if h.after_ready <= self.persisted_ready && h.after_index <= self.persisted_index {
                self.msgs.push(h.msg);
            } else {
                keep.push_back(h);
            }
        }
        self.held = keep;
    }
}
