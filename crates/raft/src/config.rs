//! Settings of the Raft core, in ticks and nanoseconds (the node converts from its TOML).
//!
//! Owns validation of protocol-level limits. Pure data; part of the Raft core.

use super::types::{Nanos, NodeId};

/// When an entry counts as stored (the config's `[raft.persistence] strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// A node counts an entry towards commit, and acknowledges it, only once it is on disk.
    /// An acknowledged write survives any crash of a minority.
    DiskFirst,
    /// Entries count once they are in memory; they reach disk at the next flush.
    /// Term and vote are still persisted before any message that depends on them.
    /// An acknowledged write CAN BE LOST if the nodes holding it crash within the flush
    /// interval (even one crash combined with a partition). Faster, not durable.
    MemFirst,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Election timeout is drawn uniformly from [min, max) ticks.
    pub election_timeout_min_ticks: u32,
    pub election_timeout_max_ticks: u32,
    pub heartbeat_interval_ticks: u32,
    /// Length of one tick. The core never reads a clock; it needs this only to check that
    /// the lease is shorter than the election timeout.
    pub tick_interval_ns: Nanos,
    /// How long a quorum-acknowledged heartbeat round lets the leader serve lease reads.
    pub lease_duration_ns: Nanos,
    /// Bound on relative clock-rate error between nodes, in parts per million.
    pub clock_drift_ppm_max: u32,
    /// Entries per AppendEntries message.
    pub append_entries_max: usize,
    /// Payload bytes per AppendEntries message (one entry is always allowed).
    pub append_bytes_max: usize,
    /// AppendEntries in flight per follower while replicating.
    pub inflight_appends_max: usize,
    /// Proposals are refused once the leader holds this many uncommitted entries.
    pub uncommitted_entries_max: usize,
    /// Committed entries handed out per `Ready`.
    pub apply_entries_max: usize,
    /// Pending (unconfirmed) read requests; beyond it reads are refused.
    pub pending_reads_max: usize,
    pub persistence: Persistence,
    /// Seed of the election-timeout randomness.
    pub seed: u64,
    /// Deliberate protocol bugs for the simulator's negative controls (all off). Honoured
    /// only in builds with the `negative-controls` feature; `validate` refuses them otherwise.
    pub controls: Controls,
}

/// Switches that break the protocol on purpose, so the simulator can show its checkers
/// catch each break. Never set outside the simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    /// Commit an entry of an older term by counting replicas (paper Figure 8).
    pub commit_older_term_by_counting: bool,
    /// Answer ReadIndex reads without a quorum heartbeat round.
    pub read_index_without_quorum: bool,
    /// DiskFirst: acknowledge appends, and count the leader's own entries, before they are
    /// persisted.
    pub ack_before_persist: bool,
    /// Lease reads use the full lease, ignoring the clock-drift bound.
    pub lease_ignores_drift: bool,
    /// Grant (pre-)votes without the log up-to-date check (paper 5.4.1).
    pub vote_without_log_check: bool,
    /// Allow a membership change before the leader's no-op committed.
    pub membership_before_noop: bool,
}

/// A setting that cannot work, with the name of the setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Sensible defaults for tests and the in-memory benchmark (10 ms ticks).
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            election_timeout_min_ticks: 100,
            election_timeout_max_ticks: 200,
            heartbeat_interval_ticks: 10,
            tick_interval_ns: 10_000_000,
            lease_duration_ns: 500_000_000,
            clock_drift_ppm_max: 50_000,
            append_entries_max: 5000,
            append_bytes_max: 4 << 20,
            inflight_appends_max: 16,
            uncommitted_entries_max: 100_000,
            apply_entries_max: 10_000,
            pending_reads_max: 100_000,
            persistence: Persistence::DiskFirst,
            seed: id,
            controls: Controls::default(),
        }
    }

    /// The lease a leader may use after a heartbeat round: lease x (1 - drift bound).
    pub fn effective_lease_ns(&self) -> Nanos {
        let keep = 1_000_000 - self.clock_drift_ppm_max as u64;
        (self.lease_duration_ns as u128 * keep as u128 / 1_000_000) as Nanos
    }

    pub fn election_timeout_min_ns(&self) -> Nanos {
        self.election_timeout_min_ticks as Nanos * self.tick_interval_ns
    }

    /// Warnings the node must log at start-up (the core itself never logs).
    pub fn startup_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.persistence == Persistence::MemFirst {
            w.push(
                "persistence strategy MemFirst: writes are acknowledged before they reach disk; \
                 an acknowledged write can be lost if the nodes holding it crash within the \
                 flush interval (even one crash plus a partition). Use DiskFirst for durability."
                    .to_string(),
            );
        }
        w
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, reason: String| Err(ConfigError { key, reason });
        if !cfg!(feature = "negative-controls") && self.controls != Controls::default() {
            return err(
                "controls",
                "negative controls need the negative-controls build feature".into(),
            );
        }
        if self.id == 0 {
            return err("id", "node id 0 is reserved".into());
        }
        if self.heartbeat_interval_ticks == 0 {
            return err("heartbeat_interval_ticks", "must be at least 1".into());
        }
        if self.election_timeout_min_ticks <= self.heartbeat_interval_ticks {
            return err(
                "election_timeout_min_ticks",
                format!(
                    "{} must exceed heartbeat_interval_ticks ({})",
                    self.election_timeout_min_ticks, self.heartbeat_interval_ticks
                ),
            );
        }
        if self.election_timeout_max_ticks <= self.election_timeout_min_ticks {
            return err(
                "election_timeout_max_ticks",
                format!(
                    "{} must exceed election_timeout_min_ticks ({})",
                    self.election_timeout_max_ticks, self.election_timeout_min_ticks
                ),
            );
        }
        if self.tick_interval_ns == 0 {
            return err("tick_interval_ns", "must be positive".into());
        }
        if self.clock_drift_ppm_max >= 1_000_000 {
            return err(
                "clock_drift_ppm_max",
                "must be below 1,000,000 (100%)".into(),
            );
        }
        // Lease safety (thesis 6.4.1). A voter that heard from the leader refuses votes for
        // election_timeout_min ticks counted from its next tick: at least (min - 1) ticks of
        // its own clock after the heartbeat arrived. The leader serves reads for
        // lease x (1 - drift) of ITS clock after it sent the heartbeat. With clock rates
        // within the drift bound of each other, the lease ends first whenever
        // lease <= (min - 1) ticks. The rule stated to operators, lease shorter than
        // election_timeout_min minus the drift bound, is enforced as well.
        let et_min = self.election_timeout_min_ns();
        let keep = (1_000_000 - self.clock_drift_ppm_max) as u128;
        let bound =
            (et_min - self.tick_interval_ns).min((et_min as u128 * keep / 1_000_000) as Nanos);
        if self.lease_duration_ns >= bound {
            return err(
                "lease_duration_ns",
                format!(
                    "{} ns must be shorter than election_timeout_min minus the drift bound, and \
                     than election_timeout_min less one tick ({bound} ns)",
                    self.lease_duration_ns
                ),
            );
        }
        let hb_ns = self.heartbeat_interval_ticks as u64 * self.tick_interval_ns;
        if hb_ns * 2 > self.lease_duration_ns {
            return err(
                "heartbeat_interval_ticks",
                format!(
                    "heartbeat interval ({hb_ns} ns) must be at most half the lease ({} ns)",
                    self.lease_duration_ns
                ),
            );
        }
        for (key, v) in [
            ("append_entries_max", self.append_entries_max),
            ("append_bytes_max", self.append_bytes_max),
            ("inflight_appends_max", self.inflight_appends_max),
            ("uncommitted_entries_max", self.uncommitted_entries_max),
            ("apply_entries_max", self.apply_entries_max),
            ("pending_reads_max", self.pending_reads_max),
        ] {
            if v == 0 {
                return err(key, "must be at least 1".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::new(1);
        c.validate().unwrap();
        assert!(c.startup_warnings().is_empty());
        let mem = Config {
            persistence: Persistence::MemFirst,
            ..c
        };
        assert!(mem.startup_warnings()[0].contains("can be lost"));
    }

    #[test]
    fn lease_must_be_shorter_than_election_timeout_minus_drift() {
        let mut c = Config::new(1);
        // 100 ticks x 10 ms = 1 s: less one tick, 990 ms; less the 5% drift, 950 ms.
        c.lease_duration_ns = 950_000_000;
        assert_eq!(c.validate().unwrap_err().key, "lease_duration_ns");
        c.lease_duration_ns = 949_000_000;
        c.validate().unwrap();
        assert_eq!(c.effective_lease_ns(), 901_550_000);
        // With coarse ticks the tick rule binds: 10 ticks x 10 ms less one tick = 90 ms.
        let mut c = Config {
            election_timeout_min_ticks: 10,
            election_timeout_max_ticks: 20,
            heartbeat_interval_ticks: 2,
            ..c
        };
        c.lease_duration_ns = 90_000_000;
        assert_eq!(c.validate().unwrap_err().key, "lease_duration_ns");
        c.lease_duration_ns = 89_000_000;
        c.validate().unwrap();
    }

    #[test]
    fn zero_limits_are_refused_by_name() {
        let mut c = Config::new(1);
        c.inflight_appends_max = 0;
        assert_eq!(c.validate().unwrap_err().key, "inflight_appends_max");
        let mut c = Config::new(1);
        c.election_timeout_max_ticks = c.election_timeout_min_ticks;
        assert_eq!(c.validate().unwrap_err().key, "election_timeout_max_ticks");
    }
}
