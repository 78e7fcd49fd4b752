//! Node configuration: the TOML file (`config/n1.toml` ...) parsed into typed, validated
//! settings, and turned into the Raft core's `Config` and the WAL's `WalOptions`.
//!
//! Owns parsing and validation only; read once at start-up on the main thread, before any
//! executor starts. Must not touch the network, the data directory or the executors.
//!
//! Every key is known: an unknown key is an error naming its path, never ignored. Every
//! invalid value is an error naming its key path (`raft.read_consistency.lease_duration_ms`)
//! and the reason. A key that applies only to the other persistence strategy is accepted
//! (switching strategy is a one-line change) but never silently ignored: it is named in a
//! `ConfigWarning` (`NodeConfig::warnings`), which the node logs at start-up and
//! `ringkv config check` prints. Defaults are documented in `config/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::wal::{MemFirstPolicy, WalOptions};
use ringkv_raft::{self, NodeId, Persistence, ReadPolicy};

/// A configuration problem: the file, the key path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// Dotted key path (`cluster.initial_cluster[1].id`); empty for a syntax error.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A key that is accepted but has no effect with the rest of the file (a MemFirst-only
/// key under DiskFirst): the node logs it at start-up and `ringkv config check` prints it,
/// so no key is ignored without the operator being told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Dotted key path (`raft.persistence.flush_policy`).
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub cluster: Cluster,
    #[serde(default)]
    pub raft: RaftSection,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub compaction: CompactionSection,
    /// Fault-injection settings of the fault campaign; refused by ordinary builds.
    #[serde(default)]
    pub testing: Testing,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub node_id: NodeId,
    /// Peers, HTTP and native clients, on one port.
    pub listen_address: String,
    pub initial_cluster: Vec<Member>,
    /// Shared secret peers present in their handshake, and part of the cluster id.
    #[serde(default)]
    pub cluster_token: String,
    /// Default `db/<node_id>`.
    pub data_dir: Option<PathBuf>,
    /// Default `logs/<node_id>`.
    pub log_dir: Option<PathBuf>,
    /// `d.log` is rotated to `d.log.1` before it would grow past this.
    #[serde(default = "log_file_bytes_max_default")]
    pub log_file_bytes_max: u64,
    /// Rotated log files kept besides `d.log` (`d.log.1` .. `d.log.N`).
    #[serde(default = "log_files_kept_default")]
    pub log_files_kept: usize,
    /// Prometheus `/metrics` and the console's data; none when absent.
    pub metrics_address: Option<String>,
}

fn log_file_bytes_max_default() -> u64 {
    crate::logging::FILE_BYTES_MAX_DEFAULT
}

fn log_files_kept_default() -> usize {
    crate::logging::FILES_KEPT_DEFAULT
}

/// A role or status given as the seed's numeric code or as a readable name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Code {
    Number(i64),
    Name(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: NodeId,
    pub address: String,
    /// 1 / "follower" (a voter) or 3 / "learner".
    pub role: Code,
    /// 2 / "active"; learners may also start 0 / "joining" or 1 / "syncing".
    pub status: Code,
}

/// What an `initial_cluster` entry means once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRole {
    Voter,
    Learner,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Granularity of the core's clock (it counts ticks).
    pub tick_interval_ms: u64,
    /// Bound on clock-rate error between nodes, parts per million.
    pub clock_drift_ppm_max: u32,
    /// How long a client request may wait (for a leader, a quorum, its commit).
    pub request_timeout_ms: u64,
    pub read_consistency: ReadConsistency,
    pub persistence: PersistenceSection,
    pub replication: Replication,
    pub snapshot: SnapshotSection,
    pub membership: MembershipSection,
}

impl Default for RaftSection {
    fn default() -> Self {
        Self {
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            heartbeat_interval_ms: 100,
            tick_interval_ms: 10,
            clock_drift_ppm_max: 50_000,
            request_timeout_ms: 3000,
            read_consistency: ReadConsistency::default(),
            persistence: PersistenceSection::default(),
            replication: Replication::default(),
            snapshot: SnapshotSection::default(),
            membership: MembershipSection::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DefaultPolicy {
    LeaseRead,
    LinearizableRead,
    EventualConsistency,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadConsistency {
    pub default_policy: DefaultPolicy,
    pub lease_duration_ms: u64,
}

impl Default for ReadConsistency {
    fn default() -> Self {
        Self {
            default_policy: DefaultPolicy::LeaseRead,
            lease_duration_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Strategy {
    DiskFirst,
    MemFirst,
}

impl Strategy {
    /// As written in the file.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::DiskFirst => "DiskFirst",
            Strategy::MemFirst => "MemFirst",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum FlushPolicy {
    /// Flush when `threshold` entries are buffered or `interval_ms` has passed.
    Batch { threshold: usize, interval_ms: u64 },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistenceSection {
    pub strategy: Strategy,
    /// MemFirst only (required there). Under DiskFirst it is still checked but has no
    /// effect, and a warning says so (`strategy_keys`).
    pub flush_policy: Option<FlushPolicy>,
    /// MemFirst only: beyond this many buffered entries, new writes wait. Under DiskFirst
    /// it is still checked but has no effect, and a warning says so (`strategy_keys`).
    pub max_buffered_entries: Option<usize>,
    pub flush_workers: usize,
    pub segment_bytes_max: u64,
    pub batch_bytes_max: usize,
    /// The old `snapshots_kept`, now `raft.snapshot.keep`: present only to refuse it with a
    /// pointer to its new place (an unknown-key error would not say where it went).
    #[serde(rename = "snapshots_kept")]
    snapshots_kept_moved: Option<IgnoredAny>,
}

impl PersistenceSection {
    /// The keys of this section that mean something under one strategy only: (key path,
    /// the strategy it applies to, whether the file sets it). Every such key is listed
    /// here, so that under the other strategy it is warned about, never silently ignored.
    /// The other keys (`flush_workers`, `segment_bytes_max`, `batch_bytes_max`) shape the
    /// WAL under both strategies; no key is DiskFirst-only.
    fn strategy_keys(&self) -> [(&'static str, Strategy, bool); 2] {
        [
            (
                "raft.persistence.flush_policy",
                Strategy::MemFirst,
                self.flush_policy.is_some(),
            ),
            (
                "raft.persistence.max_buffered_entries",
                Strategy::MemFirst,
                self.max_buffered_entries.is_some(),
            ),
        ]
    }
}

impl Default for PersistenceSection {
    fn default() -> Self {
        let w = WalOptions::new("");
        Self {
            strategy: Strategy::DiskFirst,
            flush_policy: None,
            max_buffered_entries: None,
            flush_workers: w.flush_workers,
            segment_bytes_max: w.segment_bytes_max,
            batch_bytes_max: w.batch_bytes_max,
            snapshots_kept_moved: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Replication {
    /// Entries per AppendEntries message.
    pub append_entries_max: usize,
    /// Payload bytes per AppendEntries message.
    pub append_bytes_max: usize,
    /// AppendEntries in flight per follower.
    pub inflight_appends_max: usize,
    /// How long the leader holds client writes to propose more of them in one log append
    /// (one WAL write, one AppendEntries per follower): 0 proposes each loop turn's writes
    /// at once; above 0 the first held write waits at most this long (fewer fsyncs and
    /// messages under light load, at that much latency). At most `BATCH_DELAY_MS_MAX` and
    /// below `raft.request_timeout_ms`.
    pub batch_delay_ms: u64,
    /// Proposals are refused beyond this many uncommitted entries.
    pub uncommitted_entries_max: usize,
}

impl Default for Replication {
    fn default() -> Self {
        let c = ringkv_raft::Config::new(1);
        Self {
            append_entries_max: c.append_entries_max,
            append_bytes_max: c.append_bytes_max,
            inflight_appends_max: c.inflight_appends_max,
            batch_delay_ms: 0,
            uncommitted_entries_max: c.uncommitted_entries_max,
        }
    }
}

/// Smallest `raft.snapshot.chunk_bytes_max`.
pub const SNAPSHOT_CHUNK_BYTES_MIN: usize = 4096;
/// Room a snapshot chunk's frame keeps besides the chunk (header, metadata):
/// `chunk_bytes_max` is at most `limits.frame_bytes_max - SNAPSHOT_CHUNK_FRAME_ROOM`.
pub const SNAPSHOT_CHUNK_FRAME_ROOM: usize = 4096;

/// `[raft.snapshot]`: when snapshots are taken, how many are kept, how they are sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotSection {
    /// Take a snapshot every this many applied entries; 0: never automatically (only
    /// `POST /snapshot`).
    pub interval_entries: u64,
    /// An automatic snapshot also waits until the log applied since the last snapshot is
    /// at least this percentage of that snapshot's size (0: entries alone decide). A
    /// snapshot copies the whole state, every version of history included: without this a
    /// large state was copied every `interval_entries` however little each entry added.
    pub log_growth_percent_min: u64,
    /// Snapshots retained on disk (at least 1). Was `raft.persistence.snapshots_kept`.
    pub keep: usize,
    /// One snapshot chunk on the wire: `SNAPSHOT_CHUNK_BYTES_MIN` ..=
    /// `limits.frame_bytes_max - SNAPSHOT_CHUNK_FRAME_ROOM`.
    pub chunk_bytes_max: usize,
}

impl Default for SnapshotSection {
    fn default() -> Self {
        Self {
            interval_entries: 100_000,
            log_growth_percent_min: 100,
            keep: 2,
            chunk_bytes_max: 1 << 20,
        }
    }
}

/// `[compaction]`: automatic compaction of the store's history, as etcd's
/// `--auto-compaction-mode` and `--auto-compaction-retention`; off by default. The leader
/// proposes the compactions (a compaction is a log entry like any write).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionSection {
    pub mode: CompactionMode,
    /// `periodic`: keep this much time of history (etcd's retention as a duration).
    pub retention_ms: u64,
    /// `revision`: keep this many revisions of history.
    pub retention_revisions: u64,
    /// How often the leader looks (etcd's revision mode looks every 5 minutes).
    pub check_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactionMode {
    Off,
    Periodic,
    Revision,
}

impl Default for CompactionSection {
    fn default() -> Self {
        Self {
            mode: CompactionMode::Off,
            retention_ms: 3_600_000,
            retention_revisions: 10_000,
            check_interval_ms: 300_000,
        }
    }
}

/// Bounds of `compaction.check_interval_ms`.
pub const COMPACTION_CHECK_INTERVAL_MS_MIN: u64 = 100;
pub const COMPACTION_CHECK_INTERVAL_MS_MAX: u64 = 24 * 3_600_000;

/// `[raft.membership]`: rules of membership changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipSection {
    /// A learner's promotion waits (up to `raft.request_timeout_ms`, then 409
    /// `learner_lagging`) while its match index is more than this many entries behind the
    /// leader's last index, or while it has acknowledged nothing.
    pub promote_lag_entries_max: u64,
}

impl Default for MembershipSection {
    fn default() -> Self {
        Self {
            promote_lag_entries_max: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    /// The key-value state of one node (all shards together).
    pub state_bytes_max: u64,
    /// A peer or client frame; larger ones are refused before allocating.
    pub frame_bytes_max: usize,
    /// Open client and peer connections per node (split evenly over the shards); beyond
    /// it new connections are closed at once.
    pub connections_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            key_bytes_max: 4096,
            value_bytes_max: 1536 << 10,
            state_bytes_max: 4 << 30,
            frame_bytes_max: 8 << 20,
            connections_max: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// CPUs to pin executors to (one executor per CPU).
    pub cores: Vec<usize>,
    /// The CPU of the raft core. One of `cores`: it runs in a task queue of its own on
    /// that shard's executor (one thread per CPU). Any other CPU: a dedicated executor.
    pub raft_core: usize,
    /// Spin this long before parking an idle executor (0: never spin; burns a core).
    pub spin_before_park_us: u64,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            cores: vec![0, 1],
            raft_core: 0,
            spin_before_park_us: 0,
        }
    }
}

/// Settings that exist only for the fault campaign (`make chaos`). Builds without the
/// `crash-sim` feature refuse the section, so a production node can never run with them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Testing {
    /// This node's clock runs this many parts per million fast (+) or slow (-): ticks
    /// and lease expiry both follow it, as they would on a drifting crystal.
    pub clock_rate_ppm: i32,
    /// Dial these addresses instead of the peers' own (the campaign's link proxies);
    /// keys are node ids. The cluster id still comes from `initial_cluster`.
    pub peer_dial: BTreeMap<String, String>,
    /// `crash-sim` power-cut model: each fdatasync keeps its writes in memory this long
    /// before it starts (a slow disk), so a kill -9 meanwhile loses them.
    pub sync_delay_us: u64,
    /// Deliberate protocol bugs (negative controls) by name; these need a
    /// `negative-controls` build as well.
    pub controls: Vec<String>,
}

/// The largest clock-rate error `testing.clock_rate_ppm` may simulate (50%).
pub const CLOCK_RATE_PPM_MAX: i32 = 500_000;

/// The longest `testing.sync_delay_us`.
pub const SYNC_DELAY_US_MAX: u64 = 100_000;

/// The longest `raft.replication.batch_delay_ms`: beyond it, holding writes costs more
/// latency than the batches it builds are worth.
pub const BATCH_DELAY_MS_MAX: u64 = 1000;

/// The names `testing.controls` accepts: the Raft core's controls, then the store's.
pub const CONTROL_NAMES: [&str; 7] = [
    "commit_older_term_by_counting",
    "read_index_without_quorum",
    "ack_before_persist",
    "lease_ignores_drift",
    "vote_without_log_check",
    "membership_before_noop",
    "sequencer_skips_revisions",
];

/// The store's controls among `CONTROL_NAMES` (`ringkv_store::Controls`); the raft core's
/// sequencer honours them.
const STORE_CONTROL_NAMES: [&str; 1] = ["sequencer_skips_revisions"];

impl Testing {
    /// The Raft core's `Controls` the names switch on; `Err(name)` for a name that is
    /// no control at all (a store control's name is left to `store_controls`).
    pub fn raft_controls(&self) -> Result<ringkv_raft::Controls, String> {
        let mut c = ringkv_raft::Controls::default();
        for name in &self.controls {
            let flag = match name.as_str() {
                "commit_older_term_by_counting" => &mut c.commit_older_term_by_counting,
                "read_index_without_quorum" => &mut c.read_index_without_quorum,
                "ack_before_persist" => &mut c.ack_before_persist,
                "lease_ignores_drift" => &mut c.lease_ignores_drift,
                "vote_without_log_check" => &mut c.vote_without_log_check,
                "membership_before_noop" => &mut c.membership_before_noop,
                n if STORE_CONTROL_NAMES.contains(&n) => continue,
                _ => return Err(name.clone()),
            };
            *flag = true;
        }
        Ok(c)
    }

    /// The store's `Controls` the names switch on (the Raft core's names are left to
    /// `raft_controls`, which also refuses unknown ones).
    pub fn store_controls(&self) -> ringkv_store::Controls {
        let mut c = ringkv_store::Controls::default();
        for name in &self.controls {
            if name == "sequencer_skips_revisions" {
                c.sequencer_skips_revisions = true;
            }
        }
        c
    }

    /// `peer_dial` with parsed keys and addresses (validated at load).
    pub fn dial_overrides(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.peer_dial
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
            .collect()
    }
}

/// The file named by `CONFIG_PATH` (with or without `.toml`), as the seed uses it.
pub fn path_from_env() -> Option<PathBuf> {
    let p = std::env::var_os("CONFIG_PATH")?;
    let p = PathBuf::from(p);
    if p.extension().is_some_and(|e| e == "toml") || p.exists() {
        Some(p)
    } else {
        Some(p.with_extension("toml"))
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates `text` (`file` names it in errors).
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: NodeConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1);
            let reason = inner.message().trim().replace('\n', " ");
            ConfigError {
                file: file.to_string(),
                key: if key == "." { String::new() } else { key },
                reason: match line {
                    Some(l) => format!("{reason} (line {l})"),
                    None => reason,
                },
            }
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.cluster
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("db/{}", self.cluster.node_id)))
    }

    pub fn log_dir(&self) -> PathBuf {
        self.cluster
            .log_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("logs/{}", self.cluster.node_id)))
    }

    /// Logging settings: `dir` is the log directory to use (`log_dir()` or an override).
    pub fn log_options(&self, dir: PathBuf) -> crate::logging::LogOptions {
        crate::logging::LogOptions {
            dir: Some(dir),
            file_bytes_max: self.cluster.log_file_bytes_max,
            files_kept: self.cluster.log_files_kept,
        }
    }

    /// Decoded `initial_cluster`: (id, address, role).
    pub fn members(&self) -> Vec<(NodeId, SocketAddr, MemberRole)> {
        self.cluster
            .initial_cluster
            .iter()
            .map(|m| {
                (
                    m.id,
                    m.address.parse().expect("validated"),
                    member_role(&m.role, &m.status, "").expect("validated"),
                )
            })
            .collect()
    }

    /// This node starts as a joiner: its own `initial_cluster` entry is a learner (role 3 /
    /// "learner"), meaning "join the running cluster through the voters listed", not
    /// "found a cluster".
    pub fn is_joiner(&self) -> bool {
        let me = self.cluster.node_id;
        self.members()
            .iter()
            .any(|m| m.0 == me && m.2 == MemberRole::Learner)
    }

    /// The voters of `initial_cluster` (in file order): the members that found the cluster
    /// and define its id; learners listed (joiners) are not among them.
    pub fn founders(&self) -> Vec<(NodeId, SocketAddr)> {
        self.members()
            .into_iter()
            .filter(|m| m.2 == MemberRole::Voter)
            .map(|m| (m.0, m.1))
            .collect()
    }

    pub fn default_read_policy(&self) -> ReadPolicy {
        match self.raft.read_consistency.default_policy {
            DefaultPolicy::LeaseRead => ReadPolicy::Lease,
            DefaultPolicy::LinearizableRead => ReadPolicy::Linearizable,
            DefaultPolicy::EventualConsistency => ReadPolicy::Eventual,
        }
    }

    /// The Raft core's settings (milliseconds become ticks).
    pub fn raft_config(&self) -> ringkv_raft::Config {
        let r = &self.raft;
        let ticks = |ms: u64| (ms / r.tick_interval_ms) as u32;
        let mut c = ringkv_raft::Config::new(self.cluster.node_id);
        c.election_timeout_min_ticks = ticks(r.election_timeout_min_ms);
        c.election_timeout_max_ticks = ticks(r.election_timeout_max_ms);
        c.heartbeat_interval_ticks = ticks(r.heartbeat_interval_ms);
        c.tick_interval_ns = r.tick_interval_ms * 1_000_000;
        c.lease_duration_ns = r.read_consistency.lease_duration_ms * 1_000_000;
        c.clock_drift_ppm_max = r.clock_drift_ppm_max;
        c.append_entries_max = r.replication.append_entries_max;
        c.append_bytes_max = r.replication.append_bytes_max;
        c.inflight_appends_max = r.replication.inflight_appends_max;
        c.uncommitted_entries_max = r.replication.uncommitted_entries_max;
        c.persistence = match r.persistence.strategy {
            Strategy::DiskFirst => Persistence::DiskFirst,
            Strategy::MemFirst => Persistence::MemFirst,
        };
        // Unknown names are refused by `validate`.
        c.controls = self.testing.raft_controls().unwrap_or_default();
        c
    }

    /// Keys this file sets that have no effect with the rest of it, each with why: a
    /// key of the other persistence strategy. Empty for the shipped examples. The node logs
    /// these at start-up; `ringkv config check` prints them.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let p = &self.raft.persistence;
        let mut w: Vec<ConfigWarning> = p
            .strategy_keys()
            .into_iter()
            .filter(|&(_, applies, set)| set && applies != p.strategy)
            .map(|(key, applies, _)| ConfigWarning {
                key: key.to_string(),
                reason: format!(
                    "applies only to strategy = \"{}\" and is ignored under strategy = \"{}\"",
                    applies.name(),
                    p.strategy.name()
                ),
            })
            .collect();
        // A retention of the other compaction mode has no effect: said, not ignored.
        let (c, d) = (&self.compaction, CompactionSection::default());
        for (key, set, mode) in [
            (
                "compaction.retention_ms",
                c.retention_ms != d.retention_ms,
                CompactionMode::Periodic,
            ),
            (
                "compaction.retention_revisions",
                c.retention_revisions != d.retention_revisions,
                CompactionMode::Revision,
            ),
        ] {
            if set && c.mode != mode {
                w.push(ConfigWarning {
                    key: key.into(),
                    reason: format!(
                        "applies only to compaction.mode = \"{}\" and is ignored under \"{}\"",
                        format!("{mode:?}").to_lowercase(),
                        format!("{:?}", c.mode).to_lowercase()
                    ),
                });
            }
        }
        w
    }

    /// The WAL's settings.
    pub fn wal_options(&self) -> WalOptions {
        let p = &self.raft.persistence;
        WalOptions {
            segment_bytes_max: p.segment_bytes_max,
            batch_bytes_max: p.batch_bytes_max,
            flush_workers: p.flush_workers,
            mem_first: match (&p.strategy, &p.flush_policy) {
                (
                    Strategy::MemFirst,
                    Some(FlushPolicy::Batch {
                        threshold,
                        interval_ms,
                    }),
                ) => Some(MemFirstPolicy {
                    flush_threshold_entries: *threshold,
                    flush_interval_ms: *interval_ms,
                    buffered_entries_max: p.max_buffered_entries.unwrap_or(10_000),
                }),
                _ => None,
            },
            ..WalOptions::new(self.data_dir())
        }
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| {
            Err(ConfigError {
                file: file.to_string(),
                key: key.to_string(),
                reason,
            })
        };
        if self.raft.persistence.snapshots_kept_moved.is_some() {
            return err(
                "raft.persistence.snapshots_kept",
                "moved to raft.snapshot.keep: write `keep = N` under [raft.snapshot]".into(),
            );
        }
        let c = &self.cluster;
        if c.node_id == 0 {
            return err("cluster.node_id", "0 is reserved; ids start at 1".into());
        }
        let listen: SocketAddr = match c.listen_address.parse() {
            Ok(a) => a,
            Err(e) => {
                return err(
                    "cluster.listen_address",
                    format!(
                        "{:?} is not an address like 127.0.0.1:9081 ({e})",
                        c.listen_address
                    ),
                );
            }
        };
        if let Some(m) = &c.metrics_address {
            match m.parse::<SocketAddr>() {
                Err(e) => {
                    return err(
                        "cluster.metrics_address",
                        format!("{m:?} is not an address like 127.0.0.1:8081 ({e})"),
                    );
                }
                // The metrics listener binds its own port: sharing listen_address's would
                // fail at start-up (or, on a wildcard, take the other's connections).
                Ok(a)
                    if a.port() == listen.port()
                        && (a.ip() == listen.ip()
                            || a.ip().is_unspecified()
                            || listen.ip().is_unspecified()) =>
                {
                    return err(
                        "cluster.metrics_address",
                        format!(
                            "{m} overlaps listen_address {listen}: the metrics port must be \
                             another port"
                        ),
                    );
                }
                Ok(_) => {}
            }
        }
        if c.log_file_bytes_max == 0 {
            return err("cluster.log_file_bytes_max", "must be at least 1".into());
        }
        if c.log_files_kept == 0 {
            return err("cluster.log_files_kept", "must be at least 1".into());
        }
        if c.initial_cluster.is_empty() {
            return err("cluster.initial_cluster", "lists no member".into());
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        let mut voters = 0;
        for (i, m) in c.initial_cluster.iter().enumerate() {
            let key = |k: &str| format!("cluster.initial_cluster[{i}].{k}");
            if m.id == 0 {
                return err(&key("id"), "0 is reserved; ids start at 1".into());
            }
            if !ids.insert(m.id) {
                return err(&key("id"), format!("id {} appears twice", m.id));
            }
            let a: SocketAddr = match m.address.parse() {
                Ok(a) => a,
                Err(e) => {
                    return err(
                        &key("address"),
                        format!(
                            "{:?} is not an address like 127.0.0.1:9081 ({e})",
                            m.address
                        ),
                    );
                }
            };
            if !addrs.insert(a) {
                return err(&key("address"), format!("{a} appears twice"));
            }
            let role = member_role(&m.role, &m.status, &format!("cluster.initial_cluster[{i}]"))
                .map_err(|(k, reason)| ConfigError {
                    file: file.to_string(),
                    key: k,
                    reason,
                })?;
            voters += (role == MemberRole::Voter) as usize;
            if m.id == c.node_id && a.port() != listen.port() {
                return err(
                    &key("address"),
                    format!(
                        "this node's own entry has port {}, but cluster.listen_address has port {}",
                        a.port(),
                        listen.port()
                    ),
                );
            }
        }
        if !ids.contains(&c.node_id) {
            return err(
                "cluster.node_id",
                format!(
                    "{} is not in cluster.initial_cluster (ids {:?}); a node joining later \
                     still lists itself, as a learner",
                    c.node_id, ids
                ),
            );
        }
        if voters == 0 {
            return err(
                "cluster.initial_cluster",
                "has no voter (role = 1 / \"follower\")".into(),
            );
        }

        let r = &self.raft;
        if r.tick_interval_ms == 0 {
            return err("raft.tick_interval_ms", "must be at least 1".into());
        }
        for (k, v) in [
            ("raft.election_timeout_min_ms", r.election_timeout_min_ms),
            ("raft.election_timeout_max_ms", r.election_timeout_max_ms),
            ("raft.heartbeat_interval_ms", r.heartbeat_interval_ms),
        ] {
            if v == 0 || v % r.tick_interval_ms != 0 {
                return err(
                    k,
                    format!(
                        "{v} must be a positive multiple of raft.tick_interval_ms ({})",
                        r.tick_interval_ms
                    ),
                );
            }
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return err(
                "raft.election_timeout_max_ms",
                format!(
                    "{} must exceed raft.election_timeout_min_ms ({})",
                    r.election_timeout_max_ms, r.election_timeout_min_ms
                ),
            );
        }
        if r.clock_drift_ppm_max >= 1_000_000 {
            return err(
                "raft.clock_drift_ppm_max",
                format!("{} must be below 1000000 (100%)", r.clock_drift_ppm_max),
            );
        }
        let lease = r.read_consistency.lease_duration_ms;
        let keep = 1_000_000 - r.clock_drift_ppm_max as u64;
        let bound_ns = (r.election_timeout_min_ms * 1_000_000 * keep / 1_000_000)
            .min((r.election_timeout_min_ms - r.tick_interval_ms) * 1_000_000);
        if lease * 1_000_000 >= bound_ns {
            return err(
                "raft.read_consistency.lease_duration_ms",
                format!(
                    "{lease} ms must be shorter than raft.election_timeout_min_ms ({}) minus the \
                     clock drift bound ({} ppm) and minus one tick: below {:.1} ms",
                    r.election_timeout_min_ms,
                    r.clock_drift_ppm_max,
                    bound_ns as f64 / 1e6
                ),
            );
        }
        if r.heartbeat_interval_ms * 2 > lease {
            return err(
                "raft.heartbeat_interval_ms",
                format!(
                    "{} ms must be at most half of raft.read_consistency.lease_duration_ms ({lease})",
                    r.heartbeat_interval_ms
                ),
            );
        }
        if r.request_timeout_ms == 0 {
            return err("raft.request_timeout_ms", "must be at least 1".into());
        }
        let delay = r.replication.batch_delay_ms;
        if delay > BATCH_DELAY_MS_MAX || delay >= r.request_timeout_ms {
            return err(
                "raft.replication.batch_delay_ms",
                format!(
                    "{delay} ms must be at most {BATCH_DELAY_MS_MAX} and below \
                     raft.request_timeout_ms ({}): a write is held that long before it is \
                     proposed",
                    r.request_timeout_ms
                ),
            );
        }
        let p = &r.persistence;
        if p.strategy == Strategy::MemFirst && p.flush_policy.is_none() {
            return err(
                "raft.persistence.flush_policy",
                "MemFirst needs a flush policy, e.g. { Batch = { threshold = 100, \
                 interval_ms = 20 } }"
                    .into(),
            );
        }
        // The MemFirst keys' rules hold under either strategy: under DiskFirst they are
        // ignored (with a warning, `warnings`), but a wrong or contradictory value is still
        // refused, so switching back to MemFirst stays a one-line change.
        if let Some(FlushPolicy::Batch {
            threshold,
            interval_ms,
        }) = &p.flush_policy
        {
            if *threshold == 0 {
                return err(
                    "raft.persistence.flush_policy.Batch.threshold",
                    "must be at least 1".into(),
                );
            }
            if *interval_ms == 0 {
                return err(
                    "raft.persistence.flush_policy.Batch.interval_ms",
                    "must be at least 1".into(),
                );
            }
            let max = p.max_buffered_entries.unwrap_or(10_000);
            if max < *threshold {
                return err(
                    "raft.persistence.max_buffered_entries",
                    format!("{max} must be at least flush_policy.Batch.threshold ({threshold})"),
                );
            }
        }
        if p.max_buffered_entries == Some(0) {
            return err(
                "raft.persistence.max_buffered_entries",
                "must be at least 1".into(),
            );
        }
        if let Err(reason) = self.wal_options().validate() {
            return err("raft.persistence", reason);
        }
        let l = &self.limits;
        for (k, v) in [
            ("limits.key_bytes_max", l.key_bytes_max),
            ("limits.value_bytes_max", l.value_bytes_max),
            ("limits.frame_bytes_max", l.frame_bytes_max),
            ("limits.connections_max", l.connections_max),
        ] {
            if v == 0 {
                return err(k, "must be at least 1".into());
            }
        }
        if l.state_bytes_max == 0 {
            return err("limits.state_bytes_max", "must be at least 1".into());
        }
        // One write must fit in one WAL batch and one frame (with room for the envelope).
        let entry_max = self.wal_options().entry_bytes_max();
        let write_max = l.key_bytes_max + l.value_bytes_max + 64;
        if write_max > entry_max {
            return err(
                "limits.value_bytes_max",
                format!(
                    "a write of key_bytes_max + value_bytes_max ({write_max} bytes with its \
                     envelope) must fit one WAL batch: raise raft.persistence.batch_bytes_max \
                     (room for {entry_max})"
                ),
            );
        }
        if write_max + 1024 > l.frame_bytes_max {
            return err(
                "limits.frame_bytes_max",
                format!(
                    "{} must hold the largest write ({write_max} bytes) plus its frame",
                    l.frame_bytes_max
                ),
            );
        }
        let snap = &r.snapshot;
        if snap.keep == 0 {
            return err("raft.snapshot.keep", "must be at least 1".into());
        }
        let chunk_max = l.frame_bytes_max.saturating_sub(SNAPSHOT_CHUNK_FRAME_ROOM);
        if snap.chunk_bytes_max < SNAPSHOT_CHUNK_BYTES_MIN || snap.chunk_bytes_max > chunk_max {
            return err(
                "raft.snapshot.chunk_bytes_max",
                format!(
                    "{} must be between {SNAPSHOT_CHUNK_BYTES_MIN} (4 KiB) and \
                     limits.frame_bytes_max ({}) minus {SNAPSHOT_CHUNK_FRAME_ROOM}: {chunk_max}",
                    snap.chunk_bytes_max, l.frame_bytes_max
                ),
            );
        }
        let comp = &self.compaction;
        if !(COMPACTION_CHECK_INTERVAL_MS_MIN..=COMPACTION_CHECK_INTERVAL_MS_MAX)
            .contains(&comp.check_interval_ms)
        {
            return err(
                "compaction.check_interval_ms",
                format!(
                    "{} is not between {COMPACTION_CHECK_INTERVAL_MS_MIN} and \
                     {COMPACTION_CHECK_INTERVAL_MS_MAX}",
                    comp.check_interval_ms
                ),
            );
        }
        if comp.mode == CompactionMode::Periodic && comp.retention_ms < 1000 {
            return err(
                "compaction.retention_ms",
                format!("{} is under a second of history", comp.retention_ms),
            );
        }
        if comp.mode == CompactionMode::Revision && comp.retention_revisions == 0 {
            return err(
                "compaction.retention_revisions",
                "must keep at least 1 revision".into(),
            );
        }
        let rt = &self.runtime;
        if rt.cores.is_empty() {
            return err("runtime.cores", "lists no CPU".into());
        }
        if rt.cores.iter().collect::<BTreeSet<_>>().len() != rt.cores.len() {
            return err("runtime.cores", format!("{:?} lists a CPU twice", rt.cores));
        }
        let t = &self.testing;
        if *t != Testing::default() && !cfg!(feature = "crash-sim") {
            return err(
                "testing",
                "fault-injection settings need a build with the crash-sim feature \
                 (`make chaos` makes one); remove the [testing] section"
                    .into(),
            );
        }
        if t.clock_rate_ppm.abs() > CLOCK_RATE_PPM_MAX {
            return err(
                "testing.clock_rate_ppm",
                format!("{} is beyond +-{CLOCK_RATE_PPM_MAX} ppm", t.clock_rate_ppm),
            );
        }
        if t.sync_delay_us > SYNC_DELAY_US_MAX {
            return err(
                "testing.sync_delay_us",
                format!("{} is above {SYNC_DELAY_US_MAX} (100 ms)", t.sync_delay_us),
            );
        }
        let member_ids: BTreeSet<NodeId> = self.members().iter().map(|m| m.0).collect();
        for (k, v) in &t.peer_dial {
            match k.parse::<NodeId>() {
                Ok(id) if member_ids.contains(&id) && id != c.node_id => {}
                _ => {
                    return err(
                        "testing.peer_dial",
                        format!("{k:?} is not the id of another node of initial_cluster"),
                    );
                }
            }
            if v.parse::<SocketAddr>().is_err() {
                return err(
                    "testing.peer_dial",
                    format!("{v:?} (for node {k}) is not an ip:port address"),
                );
            }
        }
        if let Err(name) = t.raft_controls() {
            return err(
                "testing.controls",
                format!(
                    "{name:?} is not a control; known: {}",
                    CONTROL_NAMES.join(", ")
                ),
            );
        }
        // The store refuses (panics on) a control its build cannot honour: said here.
        if !cfg!(feature = "negative-controls")
            && t.store_controls() != ringkv_store::Controls::default()
        {
            return err(
                "testing.controls",
                "the store's negative controls need the negative-controls build feature"
                    .to_string(),
            );
        }
        // The core's own rules, as a backstop, named in this file's terms.
        if let Err(e) = self.raft_config().validate() {
            let key = match e.key {
                "append_entries_max" => "raft.replication.append_entries_max",
                "append_bytes_max" => "raft.replication.append_bytes_max",
                "inflight_appends_max" => "raft.replication.inflight_appends_max",
                "uncommitted_entries_max" => "raft.replication.uncommitted_entries_max",
                "lease_duration_ns" => "raft.read_consistency.lease_duration_ms",
                "controls" => "testing.controls",
                _ => "raft",
            };
            return err(key, e.to_string());
        }
        Ok(())
    }
}

/// Decodes a member's role and status (seed codes or names). Errors carry the key path.
fn member_role(role: &Code, status: &Code, at: &str) -> Result<MemberRole, (String, String)> {
    let name = |c: &Code| match c {
        Code::Number(n) => n.to_string(),
        Code::Name(s) => s.to_ascii_lowercase(),
    };
    let r = match name(role).as_str() {
        "1" | "follower" | "voter" => MemberRole::Voter,
        "3" | "learner" => MemberRole::Learner,
        "0" | "leader" | "2" | "candidate" => {
            return Err((
                format!("{at}.role"),
                "a node cannot start as leader (0) or candidate (2): use 1 / \"follower\" or \
                 3 / \"learner\""
                    .into(),
            ));
        }
        other => {
            return Err((
                format!("{at}.role"),
                format!("{other:?} is not a role: use 1 / \"follower\" or 3 / \"learner\""),
            ));
        }
    };
    match (name(status).as_str(), r) {
        ("2" | "active", _) => Ok(r),
        ("0" | "joining" | "1" | "syncing", MemberRole::Learner) => Ok(r),
        ("0" | "joining" | "1" | "syncing", MemberRole::Voter) => Err((
            format!("{at}.status"),
            "a voter starts active (2 / \"active\"); joining and syncing are for learners".into(),
        )),
        (other, _) => Err((
            format!("{at}.status"),
            format!(
                "{other:?} is not a status: use 2 / \"active\", or for a learner 0 / \
                 \"joining\" or 1 / \"syncing\""
            ),
        )),
    }
}

impl Runtime {
    /// Refuses a CPU this process may not run on, naming the key. Checked when a node
    /// starts, not by `config check`, which may run on another machine: pinning to such a
    /// CPU would fail inside the executor's thread, after start-up.
    pub fn check_cpus(&self) -> Result<(), String> {
        let allowed = allowed_cpus();
        for (key, cpu) in self
            .cores
            .iter()
            .map(|c| ("runtime.cores", *c))
            .chain([("runtime.raft_core", self.raft_core)])
        {
            if !allowed.contains(&cpu) {
                return Err(format!(
                    "{key}: CPU {cpu} is not one this process may run on (it may use {allowed:?})"
                ));
            }
        }
        Ok(())
    }
}

/// The CPUs this process may run on: the calling thread's affinity mask (sched_getaffinity,
/// read by `core_affinity`). `serve` asks on the main thread before any executor pins
/// itself, so this is the mask the process started with, which its threads inherit.
fn allowed_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) => ids.into_iter().map(|c| c.id).collect(),
        // Unknown: let the executors' own pinning report the error.
        None => (0..libc::CPU_SETSIZE as usize).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[cluster]
node_id = 1
listen_address = "127.0.0.1:1"
initial_cluster = [{ id = 1, address = "127.0.0.1:1", role = 1, status = 2 }]
"#;

    fn with(extra: &str) -> Result<NodeConfig, String> {
        NodeConfig::parse(&format!("{BASE}{extra}"), "n.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn compaction_is_off_by_default_and_checked_when_set() {
        let c = with("").unwrap();
        assert_eq!(c.compaction.mode, CompactionMode::Off);
        let c = with("[compaction]\nmode = \"revision\"\nretention_revisions = 5\n").unwrap();
        assert_eq!(
            (c.compaction.mode, c.compaction.retention_revisions),
            (CompactionMode::Revision, 5)
        );
        assert!(c.warnings().is_empty());
        for (extra, key) in [
            ("mode = \"hourly\"", "mode"),
            (
                "mode = \"revision\"\nretention_revisions = 0",
                "compaction.retention_revisions",
            ),
            (
                "mode = \"periodic\"\nretention_ms = 10",
                "compaction.retention_ms",
            ),
            ("check_interval_ms = 5", "compaction.check_interval_ms"),
            ("retention = 5", "retention"),
        ] {
            let e = with(&format!("[compaction]\n{extra}\n")).unwrap_err();
            assert!(e.contains(key), "{extra}: {e}");
        }
        // The other mode's retention: accepted, named in a warning.
        let c = with("[compaction]\nmode = \"periodic\"\nretention_revisions = 7\n").unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].key, "compaction.retention_revisions");
    }

    /// `allowed_cpus` agrees with the kernel's own account of this thread's mask
    /// (`Cpus_allowed_list` in /proc/thread-self/status, e.g. `0-1` or `0,2-5`).
    #[test]
    fn allowed_cpus_match_the_kernels_cpus_allowed_list() {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("a Cpus_allowed_list line")
            .trim();
        let mut expected = Vec::new();
        for part in list.split(',') {
            match part.split_once('-') {
                Some((a, b)) => expected.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
                None => expected.push(part.parse::<usize>().unwrap()),
            }
        }
        assert!(!expected.is_empty());
        assert_eq!(super::allowed_cpus(), expected);
    }
}
