//! Prometheus metrics: the catalogue of every metric, the recorder, and cached handles.
//!
//! Owns the process's metrics recorder (`install`, once per process, only when
//! `cluster.metrics_address` is set) and the names, kinds and help texts of every metric
//! (`CATALOGUE`; `docs/metrics.md` lists the same, and a test keeps the two equal). The
//! handle bundles (`RaftMetrics`, `WalMetrics`, `NetMetrics`, `ShardMetrics`) are built
//! once per owner on the executor that updates them and kept: a cached handle costs about
//! 15-19 ns per update, a `counter!` with labels about 350 ns per call, so only cold paths
//! (refusals) look handles up per call. Without a recorder (tests, benches, the simulator)
//! every handle is a no-op.
//!
//! Runs on whichever executor updates a handle (the recorder is thread-safe). Must not:
//! be used by `src/raft` (the pure core keeps plain `Counters` that the driver exports), or
//! do I/O (the node's metrics executor, `node::exporter`, serves `render()`).

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// What a metric is, as Prometheus calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names, in the order they are rendered (empty: no labels).
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Def {
    Def {
        name,
        kind,
        labels,
        help,
    }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};

/// Every metric the node exports. Names are `ringkv_<raft|wal|net|shard|executor>_...`, units last,
/// counters end in `_total`, latency histograms in `_seconds`.
pub const CATALOGUE: &[Def] = &[
    // raft: the raft core's driver (src/node/core) exports what the pure core holds.
    def(RAFT_TERM, G, &[], "Current Raft term."),
    def(
        RAFT_ROLE,
        G,
        &["role"],
        "1 for this node's current role (follower, learner, pre_candidate, candidate, leader), 0 for the others.",
    ),
    def(
        RAFT_LEADER_ID,
        G,
        &[],
        "Node id of the leader this node knows of (0: none known).",
    ),
    def(
        RAFT_COMMIT_INDEX,
        G,
        &[],
        "Highest log index known committed.",
    ),
    def(
        RAFT_APPLIED_INDEX,
        G,
        &[],
        "Highest log index every shard has applied.",
    ),
    def(RAFT_LAST_INDEX, G, &[], "Last index of the local log."),
    def(
        RAFT_PROPOSALS,
        C,
        &[],
        "Client writes proposed by this node as leader.",
    ),
    def(
        RAFT_ENTRIES_PER_READY,
        H,
        &[],
        "Log entries per Raft Ready that carried entries to persist.",
    ),
    def(
        RAFT_APPENDS_SENT,
        C,
        &[],
        "AppendEntries messages sent (heartbeats not included).",
    ),
    def(
        RAFT_APPENDS_RECEIVED,
        C,
        &[],
        "AppendEntries messages received from a leader.",
    ),
    def(
        RAFT_ENTRIES_PER_APPEND,
        H,
        &[],
        "Log entries per AppendEntries message sent (0: a probe or commit update).",
    ),
    def(RAFT_PRE_VOTES, C, &[], "Pre-vote rounds started."),
    def(
        RAFT_ELECTIONS_STARTED,
        C,
        &[],
        "Elections started (term incremented, votes requested).",
    ),
    def(RAFT_ELECTIONS_WON, C, &[], "Elections this node won."),
    def(
        RAFT_LEADER_CHANGES,
        C,
        &[],
        "Times this node learnt of a new leader (another node, or a new term).",
    ),
    def(
        RAFT_READ_INDEX_ROUNDS,
        C,
        &[],
        "Heartbeat rounds that confirmed at least one ReadIndex read.",
    ),
    def(
        RAFT_READS_PER_ROUND,
        H,
        &[],
        "ReadIndex reads carried by one heartbeat round.",
    ),
    def(
        RAFT_LEASE_READS,
        C,
        &["via"],
        "Lease reads served without a round: via=shard from the published lease view, via=core by the raft core.",
    ),
    def(
        RAFT_FOLLOWER_REGRESSIONS,
        C,
        &[],
        "Times this leader found a follower holding less than it had acknowledged (a MemFirst crash, or a damaged disk cut short) and re-sent from there.",
    ),
    def(
        RAFT_WRITES_PENDING,
        G,
        &[],
        "Proposed writes waiting to commit on this leader.",
    ),
    def(
        RAFT_READS_PENDING,
        G,
        &[],
        "Reads waiting for their read index on this leader.",
    ),
    def(
        RAFT_CALLS_PARKED,
        G,
        &[],
        "Client calls parked while no leader is known.",
    ),
    def(
        RAFT_CALLS_FORWARDED,
        G,
        &[],
        "Calls forwarded to the leader, waiting for its answer.",
    ),
    def(
        RAFT_EVENTS_QUEUED,
        G,
        &[],
        "Events (shard calls, peer messages) queued for the raft core at its last turn.",
    ),
    // wal
    def(
        WAL_FSYNCS,
        C,
        &[],
        "fdatasync calls of the WAL (batches, hard state, new segments).",
    ),
    def(
        WAL_FSYNC_SECONDS,
        H,
        &["kind"],
        "Write plus fdatasync of one flush task: kind=batch (log entries) or hard_state.",
    ),
    def(WAL_BYTES_WRITTEN, C, &[], "Bytes of log batches written."),
    def(WAL_BATCHES, C, &[], "Log batches written and synced."),
    def(
        WAL_ENTRIES_WRITTEN,
        C,
        &[],
        "Log entries written and synced.",
    ),
    def(
        WAL_ENTRIES_PER_FSYNC,
        H,
        &[],
        "Log entries per batch (one write, one fdatasync).",
    ),
    def(WAL_SEGMENTS_CREATED, C, &[], "WAL segments created."),
    def(
        WAL_FLUSH_WORKERS_BUSY,
        G,
        &[],
        "Flush tasks writing or syncing now (at most flush_workers).",
    ),
    def(
        WAL_BUFFERED_ENTRIES,
        G,
        &[],
        "MemFirst: entries buffered in memory, not yet handed to a flush task.",
    ),
    // net
    def(
        NET_CONNECTIONS,
        G,
        &["kind"],
        "Open connections: kind=native, http (clients, on the shards), peer_in, peer_out (the raft core), metrics.",
    ),
    def(
        NET_FRAMES_RECEIVED,
        C,
        &["kind"],
        "Frames received: kind=peer (Raft and forwarded calls) or native (client requests).",
    ),
    def(
        NET_FRAMES_SENT,
        C,
        &["kind"],
        "Frames sent: kind=peer or native (client answers).",
    ),
    def(
        NET_BYTES_RECEIVED,
        C,
        &["kind"],
        "Bytes received: kind=peer, native or http.",
    ),
    def(
        NET_BYTES_SENT,
        C,
        &["kind"],
        "Bytes sent: kind=peer, native or http.",
    ),
    def(
        NET_REFUSED,
        C,
        &["reason"],
        "Refused input (the connection is closed, or refused at once), by reason.",
    ),
    def(
        NET_PEER_CONNECTS,
        C,
        &[],
        "Outbound peer connections opened (each then sends its handshake).",
    ),
    def(
        NET_PEER_RECONNECTS,
        C,
        &[],
        "Outbound peer connections accepted again after an earlier one to the same peer ended.",
    ),
    def(
        NET_PEER_CONNECT_FAILURES,
        C,
        &[],
        "Outbound peer connection attempts that failed.",
    ),
    def(
        NET_PEER_DROPPED,
        C,
        &[],
        "Messages to peers dropped because the peer's queue was full or the peer unknown.",
    ),
    // shard
    def(
        SHARD_REQUESTS,
        C,
        &["op", "outcome"],
        "Client requests by operation (put, get, delete) and outcome (ok, not_found, client_error, unavailable, timeout, state_full, server_error).",
    ),
    def(
        SHARD_REQUEST_SECONDS,
        H,
        &["op"],
        "Time from a parsed request to its reply, by operation.",
    ),
    def(
        SHARD_REQUESTS_IN_FLIGHT,
        G,
        &["shard"],
        "Client requests a shard is carrying out (in-flight count; glommio exposes no queue lengths).",
    ),
    def(
        SHARD_READ_WAITERS,
        G,
        &["shard"],
        "Reads waiting for the shard's applied watermark.",
    ),
    def(
        SHARD_KEYS,
        G,
        &["shard"],
        "Keys that exist in the shard (deleted ones not counted).",
    ),
    def(
        SHARD_STATE_BYTES,
        G,
        &["shard"],
        "Bytes the shard's store (keys, history since compaction, leases) counts against state_bytes_max.",
    ),
    def(
        SHARD_APPLIED_INDEX,
        G,
        &["shard"],
        "The shard's watermark: entries through it applied here and numbered.",
    ),
    // executor: what glommio reports about each component's task queue, sampled every second.
    def(
        EXECUTOR_BUSY_MICROSECONDS,
        C,
        &["executor"],
        "Microseconds the component's task queue spent running tasks (its busy fraction is the rate / 1e6).",
    ),
    def(
        EXECUTOR_RUNS,
        C,
        &["executor"],
        "Times the executor's scheduler ran the component's task queue (a run polls its ready tasks).",
    ),
    def(
        EXECUTOR_FILE_WRITES,
        C,
        &["executor"],
        "File writes the component issued through its executor's io_uring rings (the WAL's, for raft).",
    ),
];

pub const RAFT_TERM: &str = "ringkv_raft_term";
pub const RAFT_ROLE: &str = "ringkv_raft_role";
pub const RAFT_LEADER_ID: &str = "ringkv_raft_leader_id";
pub const RAFT_COMMIT_INDEX: &str = "ringkv_raft_commit_index";
pub const RAFT_APPLIED_INDEX: &str = "ringkv_raft_applied_index";
pub const RAFT_LAST_INDEX: &str = "ringkv_raft_last_index";
pub const RAFT_PROPOSALS: &str = "ringkv_raft_proposals_total";
pub const RAFT_ENTRIES_PER_READY: &str = "ringkv_raft_entries_per_ready";
pub const RAFT_APPENDS_SENT: &str = "ringkv_raft_append_entries_sent_total";
pub const RAFT_APPENDS_RECEIVED: &str = "ringkv_raft_append_entries_received_total";
pub const RAFT_ENTRIES_PER_APPEND: &str = "ringkv_raft_entries_per_append_entries";
pub const RAFT_PRE_VOTES: &str = "ringkv_raft_pre_votes_started_total";
pub const RAFT_ELECTIONS_STARTED: &str = "ringkv_raft_elections_started_total";
pub const RAFT_ELECTIONS_WON: &str = "ringkv_raft_elections_won_total";
pub const RAFT_LEADER_CHANGES: &str = "ringkv_raft_leader_changes_total";
pub const RAFT_READ_INDEX_ROUNDS: &str = "ringkv_raft_read_index_rounds_total";
pub const RAFT_READS_PER_ROUND: &str = "ringkv_raft_reads_per_read_index_round";
pub const RAFT_LEASE_READS: &str = "ringkv_raft_lease_reads_total";
pub const RAFT_FOLLOWER_REGRESSIONS: &str = "ringkv_raft_follower_regressions_total";
pub const RAFT_WRITES_PENDING: &str = "ringkv_raft_writes_pending";
pub const RAFT_READS_PENDING: &str = "ringkv_raft_reads_pending";
pub const RAFT_CALLS_PARKED: &str = "ringkv_raft_calls_parked";
pub const RAFT_CALLS_FORWARDED: &str = "ringkv_raft_calls_forwarded_pending";
pub const RAFT_EVENTS_QUEUED: &str = "ringkv_raft_events_queued";

pub const WAL_FSYNCS: &str = "ringkv_wal_fsyncs_total";
pub const WAL_FSYNC_SECONDS: &str = "ringkv_wal_fsync_seconds";
pub const WAL_BYTES_WRITTEN: &str = "ringkv_wal_bytes_written_total";
pub const WAL_BATCHES: &str = "ringkv_wal_batches_total";
pub const WAL_ENTRIES_WRITTEN: &str = "ringkv_wal_entries_written_total";
pub const WAL_ENTRIES_PER_FSYNC: &str = "ringkv_wal_entries_per_fsync";
pub const WAL_SEGMENTS_CREATED: &str = "ringkv_wal_segments_created_total";
pub const WAL_FLUSH_WORKERS_BUSY: &str = "ringkv_wal_flush_workers_busy";
pub const WAL_BUFFERED_ENTRIES: &str = "ringkv_wal_buffered_entries";

pub const NET_CONNECTIONS: &str = "ringkv_net_connections_open";
pub const NET_FRAMES_RECEIVED: &str = "ringkv_net_frames_received_total";
pub const NET_FRAMES_SENT: &str = "ringkv_net_frames_sent_total";
pub const NET_BYTES_RECEIVED: &str = "ringkv_net_bytes_received_total";
pub const NET_BYTES_SENT: &str = "ringkv_net_bytes_sent_total";
pub const NET_REFUSED: &str = "ringkv_net_refused_total";
pub const NET_PEER_CONNECTS: &str = "ringkv_net_peer_connects_total";
pub const NET_PEER_RECONNECTS: &str = "ringkv_net_peer_reconnects_total";
pub const NET_PEER_CONNECT_FAILURES: &str = "ringkv_net_peer_connect_failures_total";
pub const NET_PEER_DROPPED: &str = "ringkv_net_peer_messages_dropped_total";

pub const SHARD_REQUESTS: &str = "ringkv_shard_requests_total";
pub const SHARD_REQUEST_SECONDS: &str = "ringkv_shard_request_seconds";
pub const SHARD_REQUESTS_IN_FLIGHT: &str = "ringkv_shard_requests_in_flight";
pub const SHARD_READ_WAITERS: &str = "ringkv_shard_read_waiters";
pub const SHARD_KEYS: &str = "ringkv_shard_keys";
pub const SHARD_STATE_BYTES: &str = "ringkv_shard_state_bytes";
pub const SHARD_APPLIED_INDEX: &str = "ringkv_shard_applied_index";

pub const EXECUTOR_BUSY_MICROSECONDS: &str = "ringkv_executor_busy_microseconds_total";
pub const EXECUTOR_RUNS: &str = "ringkv_executor_runs_total";
pub const EXECUTOR_FILE_WRITES: &str = "ringkv_executor_file_writes_total";

/// How often an executor's glommio statistics are folded into its counters.
const EXECUTOR_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Folds the calling executor's glommio statistics into the `ringkv_executor_*` counters
/// every second, one label value per component (shard0, shard1, raft, metrics): `parts`
/// names each component with its task queue, `None` for the executor's default queue
/// (where the caller runs). A raft core that shares a shard's executor has its own queue,
/// so its busy time stays apart from the shard's. Called once on each executor of a node;
/// glommio hands each read's numbers out once (they reset), so no other code may read
/// them. A no-op recorder (no metrics_address) makes it nearly free.
pub fn sample_executor(parts: Vec<(String, Option<glommio::TaskQueueHandle>)>) {
    let default_tq = glommio::executor().current_task_queue();
    let parts: Vec<_> = parts
        .into_iter()
        .map(|(name, tq)| {
            let busy = counter!(EXECUTOR_BUSY_MICROSECONDS, "executor" => name.clone());
            let runs = counter!(EXECUTOR_RUNS, "executor" => name.clone());
            let writes = counter!(EXECUTOR_FILE_WRITES, "executor" => name);
            (tq.unwrap_or(default_tq), busy, runs, writes)
        })
        .collect();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(EXECUTOR_SAMPLE_EVERY).await;
            let ex = glommio::executor();
            for (tq, busy, runs, writes) in &parts {
                if let Ok(s) = ex.task_queue_stats(*tq) {
                    busy.increment(s.runtime().as_micros() as u64);
                    runs.increment(s.queue_selected());
                }
                // Err: the queue has not done I/O yet.
                if let Ok(io) = ex.task_queue_io_stats(*tq) {
                    writes.increment(io.all_rings().file_writes().0);
                }
            }
        }
    })
    .detach();
}

/// Bucket upper bounds of latency histograms (`*_seconds`): 25 µs to 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket upper bounds of every other histogram (counts: entries, reads): 0 to 16384.
pub const COUNT_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
    16384.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (the first call; later calls return the same handle)
/// and describes every metric of the catalogue. Histograms render as Prometheus
/// histograms with the buckets above, not as summaries.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets(COUNT_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS))
        .map_err(|e| format!("metrics: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("metrics: cannot install the recorder: {e}"))?;
    for d in CATALOGUE {
        match d.kind {
            Kind::Counter => metrics::describe_counter!(d.name, d.help),
            Kind::Gauge => metrics::describe_gauge!(d.name, d.help),
            Kind::Histogram => metrics::describe_histogram!(d.name, d.help),
        }
    }
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The raft core's handles (built by the driver on the raft core's executor).
pub struct RaftMetrics {
    pub term: Gauge,
    /// Indexed by `ROLES`.
    pub role: [Gauge; 5],
    pub leader_id: Gauge,
    pub commit_index: Gauge,
    pub applied_index: Gauge,
    pub last_index: Gauge,
    pub proposals: Counter,
    pub entries_per_ready: Histogram,
    pub appends_sent: Counter,
    pub appends_received: Counter,
    pub entries_per_append: Histogram,
    pub pre_votes: Counter,
    pub elections_started: Counter,
    pub elections_won: Counter,
    pub leader_changes: Counter,
    pub read_index_rounds: Counter,
    pub reads_per_round: Histogram,
    pub lease_reads: Counter,
    pub follower_regressions: Counter,
    pub writes_pending: Gauge,
    pub reads_pending: Gauge,
    pub calls_parked: Gauge,
    pub calls_forwarded: Gauge,
    pub events_queued: Gauge,
}

/// Values of `ringkv_raft_role`'s `role` label, in `RaftMetrics::role` order.
pub const ROLES: [&str; 5] = [
    "follower",
    "learner",
    "pre_candidate",
    "candidate",
    "leader",
];

impl RaftMetrics {
    pub fn new() -> Self {
        Self {
            term: gauge!(RAFT_TERM),
            role: ROLES.map(|r| gauge!(RAFT_ROLE, "role" => r)),
            leader_id: gauge!(RAFT_LEADER_ID),
            commit_index: gauge!(RAFT_COMMIT_INDEX),
            applied_index: gauge!(RAFT_APPLIED_INDEX),
            last_index: gauge!(RAFT_LAST_INDEX),
            proposals: counter!(RAFT_PROPOSALS),
            entries_per_ready: histogram!(RAFT_ENTRIES_PER_READY),
            appends_sent: counter!(RAFT_APPENDS_SENT),
            appends_received: counter!(RAFT_APPENDS_RECEIVED),
            entries_per_append: histogram!(RAFT_ENTRIES_PER_APPEND),
            pre_votes: counter!(RAFT_PRE_VOTES),
            elections_started: counter!(RAFT_ELECTIONS_STARTED),
            elections_won: counter!(RAFT_ELECTIONS_WON),
            leader_changes: counter!(RAFT_LEADER_CHANGES),
            read_index_rounds: counter!(RAFT_READ_INDEX_ROUNDS),
            reads_per_round: histogram!(RAFT_READS_PER_ROUND),
            lease_reads: counter!(RAFT_LEASE_READS, "via" => "core"),
            follower_regressions: counter!(RAFT_FOLLOWER_REGRESSIONS),
            writes_pending: gauge!(RAFT_WRITES_PENDING),
            reads_pending: gauge!(RAFT_READS_PENDING),
            calls_parked: gauge!(RAFT_CALLS_PARKED),
            calls_forwarded: gauge!(RAFT_CALLS_FORWARDED),
            events_queued: gauge!(RAFT_EVENTS_QUEUED),
        }
    }

    /// Sets the role gauges: 1 for `index` (into `ROLES`), 0 for the others.
    pub fn set_role(&self, index: usize) {
        for (i, g) in self.role.iter().enumerate() {
            g.set(if i == index { 1.0 } else { 0.0 });
        }
    }
}

impl Default for RaftMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The WAL's handles (built by `Wal::open`, shared with its flush tasks).
pub struct WalMetrics {
    pub fsyncs: Counter,
    pub fsync_batch_seconds: Histogram,
    pub fsync_hard_state_seconds: Histogram,
    pub bytes_written: Counter,
    pub batches: Counter,
    pub entries_written: Counter,
    pub entries_per_fsync: Histogram,
    pub segments_created: Counter,
    pub flush_workers_busy: Gauge,
    pub buffered_entries: Gauge,
}

impl WalMetrics {
    pub fn new() -> Self {
        Self {
            fsyncs: counter!(WAL_FSYNCS),
            fsync_batch_seconds: histogram!(WAL_FSYNC_SECONDS, "kind" => "batch"),
            fsync_hard_state_seconds: histogram!(WAL_FSYNC_SECONDS, "kind" => "hard_state"),
            bytes_written: counter!(WAL_BYTES_WRITTEN),
            batches: counter!(WAL_BATCHES),
            entries_written: counter!(WAL_ENTRIES_WRITTEN),
            entries_per_fsync: histogram!(WAL_ENTRIES_PER_FSYNC),
            segments_created: counter!(WAL_SEGMENTS_CREATED),
            flush_workers_busy: gauge!(WAL_FLUSH_WORKERS_BUSY),
            buffered_entries: gauge!(WAL_BUFFERED_ENTRIES),
        }
    }
}

impl Default for WalMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A connection's kind, for `ringkv_net_connections_open`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    Native = 0,
    Http = 1,
    PeerIn = 2,
    PeerOut = 3,
    Metrics = 4,
    Grpc = 5,
}

/// Traffic of one kind of connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    Peer = 0,
    Native = 1,
    Http = 2,
    Grpc = 3,
}

/// Network handles (one bundle per executor: each shard, the raft core's transport).
pub struct NetMetrics {
    connections: [Gauge; 6],
    /// Peer and native only: HTTP and gRPC (HTTP/2) are counted in bytes.
    frames_in: [Counter; 2],
    frames_out: [Counter; 2],
    bytes_in: [Counter; 4],
    bytes_out: [Counter; 4],
    pub peer_connects: Counter,
    pub peer_reconnects: Counter,
    pub peer_connect_failures: Counter,
    pub peer_dropped: Counter,
}

impl NetMetrics {
    pub fn new() -> Self {
        let by = |name: &'static str| {
            ["peer", "native", "http", "grpc"].map(|k| counter!(name, "kind" => k))
        };
        let frames = |name: &'static str| ["peer", "native"].map(|k| counter!(name, "kind" => k));
        Self {
            connections: ["native", "http", "peer_in", "peer_out", "metrics", "grpc"]
                .map(|k| gauge!(NET_CONNECTIONS, "kind" => k)),
            frames_in: frames(NET_FRAMES_RECEIVED),
            frames_out: frames(NET_FRAMES_SENT),
            bytes_in: by(NET_BYTES_RECEIVED),
            bytes_out: by(NET_BYTES_SENT),
            peer_connects: counter!(NET_PEER_CONNECTS),
            peer_reconnects: counter!(NET_PEER_RECONNECTS),
            peer_connect_failures: counter!(NET_PEER_CONNECT_FAILURES),
            peer_dropped: counter!(NET_PEER_DROPPED),
        }
    }

    /// A connection of `kind` opened; the guard counts it closed when dropped.
    pub fn open(&self, kind: ConnKind) -> ConnGuard {
        let g = self.connections[kind as usize].clone();
        g.increment(1.0);
        ConnGuard(g)
    }

    /// `frames` must be 0 for HTTP and gRPC.
    pub fn received(&self, t: Traffic, frames: u64, bytes: u64) {
        debug_assert!(
            frames == 0 || (t as usize) < 2,
            "only peer and native count frames"
        );
        if frames > 0 && (t as usize) < 2 {
            self.frames_in[t as usize].increment(frames);
        }
        self.bytes_in[t as usize].increment(bytes);
    }

    /// `frames` must be 0 for HTTP and gRPC.
    pub fn sent(&self, t: Traffic, frames: u64, bytes: u64) {
        debug_assert!(
            frames == 0 || (t as usize) < 2,
            "only peer and native count frames"
        );
        if frames > 0 && (t as usize) < 2 {
            self.frames_out[t as usize].increment(frames);
        }
        self.bytes_out[t as usize].increment(bytes);
    }

    /// Refused input, by reason (a cold path: the handle is looked up per call).
    pub fn refused(reason: &'static str) {
        counter!(NET_REFUSED, "reason" => reason).increment(1);
    }
}

impl Default for NetMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts an open connection until dropped.
pub struct ConnGuard(Gauge);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A client operation, for the shard's request metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put = 0,
    Get = 1,
    Delete = 2,
    /// A write of the etcd data model over the native protocol (put with options, delete
    /// range, txn, compaction, lease grant or revoke).
    Write = 3,
    Range = 4,
}

/// Values of the `outcome` label, indexed by `outcome_of`.
pub const OUTCOMES: [&str; 7] = [
    "ok",
    "not_found",
    "client_error",
    "unavailable",
    "timeout",
    "state_full",
    "server_error",
];

/// The outcome class of a reply's HTTP status (an index into `OUTCOMES`).
pub fn outcome_of(status: u16) -> usize {
    match status {
        200..=299 => 0,
        404 => 1,
        400..=499 => 2,
        503 => 3,
        504 => 4,
        507 => 5,
        _ => 6,
    }
}

/// One shard's handles (built on its executor).
pub struct ShardMetrics {
    /// [op][outcome]
    requests: [[Counter; 7]; 5],
    latency: [Histogram; 5],
    pub in_flight: Gauge,
    pub read_waiters: Gauge,
    pub keys: Gauge,
    pub state_bytes: Gauge,
    pub applied_index: Gauge,
    pub lease_reads: Counter,
}

impl ShardMetrics {
    pub fn new(shard: usize) -> Self {
        let ops = ["put", "get", "delete", "write", "range"];
        let s = shard.to_string();
        Self {
            requests: ops
                .map(|op| OUTCOMES.map(|o| counter!(SHARD_REQUESTS, "op" => op, "outcome" => o))),
            latency: ops.map(|op| histogram!(SHARD_REQUEST_SECONDS, "op" => op)),
            in_flight: gauge!(SHARD_REQUESTS_IN_FLIGHT, "shard" => s.clone()),
            read_waiters: gauge!(SHARD_READ_WAITERS, "shard" => s.clone()),
            keys: gauge!(SHARD_KEYS, "shard" => s.clone()),
            state_bytes: gauge!(SHARD_STATE_BYTES, "shard" => s.clone()),
            applied_index: gauge!(SHARD_APPLIED_INDEX, "shard" => s),
            lease_reads: counter!(RAFT_LEASE_READS, "via" => "shard"),
        }
    }

    /// A request of `op` answered with `status` after `seconds`.
    pub fn request(&self, op: Op, status: u16, seconds: f64) {
        self.requests[op as usize][outcome_of(status)].increment(1);
        self.latency[op as usize].record(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for d in CATALOGUE {
            assert!(seen.insert(d.name), "{} twice", d.name);
            let area = d.name.strip_prefix("ringkv_").expect(d.name);
            assert!(
                ["raft_", "wal_", "net_", "shard_", "executor_"]
                    .iter()
                    .any(|p| area.starts_with(p)),
                "{}",
                d.name
            );
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                d.name
            );
        }
    }

    /// docs/metrics.md lists exactly the catalogue, each metric with its type and labels.
    #[test]
    fn docs_list_every_metric() {
        let doc = include_str!("../../../docs/metrics.md");
        let mut listed = std::collections::BTreeMap::new();
        for row in doc.lines().filter(|l| l.starts_with("| `ringkv_")) {
            let cols: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cols[1].trim_matches('`');
            assert!(
                listed.insert(name, (cols[2], cols[3])).is_none(),
                "{name} twice in docs/metrics.md"
            );
        }
        for d in CATALOGUE {
            let (kind, labels) = listed
                .remove(d.name)
                .unwrap_or_else(|| panic!("docs/metrics.md does not list {}", d.name));
            let want = match d.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            assert_eq!(kind, want, "{}", d.name);
            for l in d.labels {
                assert!(
                    labels.contains(&format!("`{l}`")),
                    "{}: label {l} not in docs/metrics.md",
                    d.name
                );
            }
        }
        assert!(
            listed.is_empty(),
            "docs/metrics.md lists metrics the catalogue does not: {listed:?}"
        );
    }

    /// Every metric the Grafana dashboard (dashboards/ringkv.json) queries is in the
    /// catalogue, with `_bucket`/`_sum`/`_count` only on histograms, and every label it
    /// filters or groups by is one the metric has.
    #[test]
    fn dashboard_queries_only_catalogued_metrics_and_labels() {
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../../../dashboards/ringkv.json")).unwrap();
        let exprs: Vec<String> = dash["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .map(|t| t["expr"].as_str().unwrap().to_string())
            .collect();
        assert!(exprs.len() >= 20, "{} queries", exprs.len());
        let mut seen = 0;
        for e in &exprs {
            let mut rest = e.as_str();
            while let Some(at) = rest.find("ringkv_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let name = &tail[..end];
                let def = CATALOGUE
                    .iter()
                    .find(|d| d.name == name)
                    .or_else(|| {
                        ["_bucket", "_sum", "_count"].iter().find_map(|suf| {
                            let base = name.strip_suffix(suf)?;
                            CATALOGUE
                                .iter()
                                .find(|d| d.name == base && d.kind == Kind::Histogram)
                        })
                    })
                    .unwrap_or_else(|| panic!("{name} (in {e}) is not a catalogued metric"));
                // Labels in a {..} selector right after the name.
                if let Some(sel) = tail[end..].strip_prefix('{') {
                    let sel = &sel[..sel.find('}').unwrap()];
                    for m in sel.split(',') {
                        let l = m.split(['=', '!']).next().unwrap().trim();
                        assert!(
                            l == "instance"
                                || def.labels.contains(&l)
                                || (l == "le" && def.kind == Kind::Histogram),
                            "{name} has no label {l:?} (in {e})"
                        );
                    }
                }
                seen += 1;
                rest = &tail[end..];
            }
        }
        assert!(seen >= exprs.len());
    }

    #[test]
    fn outcomes_by_status() {
        let o = |s| OUTCOMES[outcome_of(s)];
        assert_eq!(
            [200, 404, 400, 413, 503, 504, 507, 500].map(o),
            [
                "ok",
                "not_found",
                "client_error",
                "client_error",
                "unavailable",
                "timeout",
                "state_full",
                "server_error"
            ]
        );
    }
}
