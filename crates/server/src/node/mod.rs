//! The node: `ringkv serve`, thread per core.
//!
//! Owns the process's executors and the bounded queues between them:
//! - the **raft core** (`core`) on `runtime.raft_core`: the pure Raft core, the WAL, the
//!   peer transport and request forwarding. When that CPU is also a shard's, the raft
//!   core runs in a task queue of its own on the shard's executor (one thread per CPU; a
//!   message between them wakes no other thread); otherwise it has a dedicated executor;
//! - one **shard** executor per CPU in `runtime.cores`, each with its own SO_REUSEPORT
//!   listener on `listen_address` and the client connections the kernel hands it (`conn`),
//!   the calls it carries out and those waiting for an answer (`calls`), and the partition
//!   of the key-value state whose keys hash to it with its applied watermark, held together
//!   with the loops draining its queues (`shard`);
//! - when `cluster.metrics_address` is set, a small **metrics** executor (`exporter`) on
//!   the raft core's CPU serving `GET /metrics`. The Prometheus recorder is installed
//!   before any executor starts; each executor updates its own cached handles
//!   (`crate::metrics`) and none waits on the metrics executor.
//!
//! Data flow of a write: connection (shard s) -> `ToRaft::Write` -> raft core proposes,
//! persists, replicates -> on commit `ToShard::Apply` to every shard (the entry to its
//! owner, a watermark to the rest) and `ToShard::Answer` to shard s -> reply. A lease read
//! goes to the key's owner shard (`MeshMsg::Get`), which checks the raft core's published
//! `LeaseView` against its own clock reading and waits for its watermark to reach that
//! commit index: no round trip to the raft core. Linearizable reads ask the raft core for
//! a read index. A follower forwards writes and non-eventual reads to the leader over its
//! peer connection. Peer connections accepted by a shard are handed to the raft core.
//!
//! Every queue between executors (or between the raft core and the shard it shares an
//! executor with) is a bounded glommio `shared_channel`; a full queue makes its
//! sender wait. No cycle of waits exists: the tasks that drain queues never wait on a
//! queue back to their sender (they spawn a task for anything that would).
//! Must not: block an executor (disk and sockets go through glommio), or let a shard touch
//! Raft state other than through these queues and the `LeaseView`.

mod calls;
mod conn;
mod core;
mod exporter;
mod grpc;
mod lease;
pub mod members;
pub mod restore;
mod shard;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};

pub use lease::{Lease, LeaseView};

use crate::config::NodeConfig;
use ringkv_proto::outcome::Outcome;
use ringkv_raft::{Index, ReadPolicy};

/// How long a busy port is retried at start-up before giving up.
const PORT_WAIT: Duration = Duration::from_secs(2);

/// From SIGTERM to process exit, at most (the shutdown itself aims at 3 s).
const STOP_DEADLINE: Duration = Duration::from_millis(4500);

/// Capacity of every queue between executors or task queues (messages).
const CROSS_CORE_QUEUE_MAX: usize = 1024;

/// glommio's preemption timer on an executor the raft core shares with a shard (its
/// default is 100 ms, longer than a heartbeat interval).
const SHARED_PREEMPT: Duration = Duration::from_millis(10);

/// A request's id on the shard that holds its connection.
pub(crate) type ReqId = u64;

/// The raft core's answer to a shard's request.
#[derive(Debug)]
pub(crate) enum CoreAnswer {
    /// The call's outcome.
    Done(Outcome),
    /// Serve the read once the shard's watermark reaches this index.
    ReadAt(Index),
    /// Another shard's part of a range.
    Part(Result<ringkv_store::parts::RangePart, ringkv_proto::outcome::ApiError>),
    /// Another shard's keys of a lease.
    Keys(Vec<Vec<u8>>),
    /// Another shard's part of the store hash.
    Hash(Result<u64, ringkv_proto::outcome::ApiError>),
    /// Another shard's partial of a read-only txn.
    Partial(Result<ringkv_store::parts::Partial, ringkv_proto::outcome::ApiError>),
    /// Another shard's part of a read-only txn's answer.
    TxnPart(Result<ringkv_store::parts::TxnPart, ringkv_proto::outcome::ApiError>),
}

/// Shard -> raft core.
pub(crate) enum ToRaft {
    /// A write (an encoded `shard::Command`).
    Write {
        shard: usize,
        req: ReqId,
        command: Bytes,
        deadline: Instant,
    },
    /// A read index for a linearizable (or lease, when the lease view did not hold) read
    /// (of a key the asking shard owns, or a range).
    Read {
        shard: usize,
        req: ReqId,
        target: ReadTarget,
        policy: ReadPolicy,
        deadline: Instant,
    },
    Status {
        shard: usize,
        req: ReqId,
    },
    /// A lease call for the leader's lessor (a follower forwards it).
    Lease {
        shard: usize,
        req: ReqId,
        call: LeaseCall,
        deadline: Instant,
    },
    /// The answer to a `ToShard::ServeRead` (a read a follower forwarded to us).
    Served {
        token: u64,
        outcome: Outcome,
    },
    /// An operator call (membership, leadership, snapshot).
    Admin {
        shard: usize,
        req: ReqId,
        call: AdminCall,
        deadline: Instant,
    },
    /// This shard's keys for the snapshot at `index` (`ToShard::Snapshot`), the store-wide
    /// header as it sees it (every shard's must be the same), and how long taking them
    /// held the shard up.
    SnapshotPart {
        shard: usize,
        index: Index,
        header: Vec<u8>,
        pairs: Vec<u8>,
        count: u64,
        took: Duration,
    },
    /// What the shard's store tells the sequencer (reports, partials of multi-shard txns),
    /// for the store `epoch` it was computed in (a replaced store's are dropped).
    Store {
        epoch: u64,
        out: Vec<ringkv_store::ToSequencer>,
    },
    /// An accepted connection that opened with the frame magic: a peer.
    PeerConn {
        fd: OwnedFd,
        first: [u8; ringkv_proto::frame::HEADER_BYTES],
    },
}

/// Raft core -> shard.
pub(crate) enum ToShard {
    /// Replace the store with this shard's part of a snapshot body; its reports are then
    /// of store `epoch`.
    Install {
        data: Bytes,
        epoch: u64,
    },
    /// Send this shard's keys as of `index` (every entry through it was handed out).
    Snapshot {
        index: Index,
    },
    /// Empty the store: the log was reset (MemFirst divergence); reports are then of
    /// store `epoch`.
    Reset {
        epoch: u64,
    },
    /// The raft core found the store stalled: log where this shard's store stands.
    Describe,
    /// Committed entries that involve this shard; every committed entry up to `through`
    /// has been handed out (the shard's watermark moves there even when `entries` is
    /// empty).
    Apply {
        entries: Vec<ringkv_store::Routed>,
        through: Index,
    },
    /// The sequencer numbered the entries through `resolution.through`.
    Resolution(Arc<ringkv_store::Resolution>),
    /// The decision of the multi-shard txn at `index`.
    Decision {
        index: Index,
        decision: Arc<ringkv_store::parts::Decision>,
    },
    Answer {
        req: ReqId,
        answer: CoreAnswer,
    },
    /// Serve a read at `index` for the raft core (reply `ToRaft::Served`): a key this
    /// shard owns, or a range this shard gathers from every shard it involves.
    ServeRead {
        token: u64,
        target: ReadTarget,
        index: Index,
        deadline: Instant,
    },
}

/// A lease call the raft core answers (grants and revokes are writes: log commands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaseCall {
    /// Restart the lease's countdown: its TTL, or 0 for a lease the leader does not know.
    KeepAlive {
        lease: i64,
    },
    /// Its remaining TTL (-1: unknown) and granted TTL; the calling shard adds the keys.
    TimeToLive {
        lease: i64,
        keys: bool,
    },
    Leases,
}

/// What a read reads: one key (the seed's get), or a range of the etcd data model.
#[derive(Clone, Debug)]
pub(crate) enum ReadTarget {
    Key(Bytes),
    Range(Arc<ringkv_store::RangeRequest>),
    /// A txn that writes nothing.
    Txn(Arc<ringkv_store::TxnRequest>),
}

/// An operator call as the raft core carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AdminCall {
    Join {
        node_id: u64,
        address: SocketAddr,
    },
    Promote {
        node_id: u64,
    },
    Remove {
        node_id: u64,
    },
    TransferLeader {
        node_id: u64,
    },
    /// Take a snapshot on this node now.
    Snapshot,
}

/// Shard -> shard: reads go to the key's owner.
pub(crate) enum MeshMsg {
    Get {
        from: usize,
        req: ReqId,
        key: Bytes,
        policy: ReadPolicy,
        deadline: Instant,
    },
    GetReply {
        req: ReqId,
        outcome: Outcome,
    },
    /// This shard's part of a range, read at `revision` once the shard's watermark reaches
    /// `index` (the asking shard's, where it read the current revision).
    RangePart {
        from: usize,
        req: ReqId,
        range: Arc<ringkv_store::RangeRequest>,
        revision: ringkv_store::Revision,
        index: Index,
        deadline: Instant,
    },
    RangePartReply {
        req: ReqId,
        part: Result<ringkv_store::parts::RangePart, ringkv_proto::outcome::ApiError>,
    },
    /// This shard's keys attached to `lease`.
    LeaseKeys {
        from: usize,
        req: ReqId,
        lease: i64,
    },
    LeaseKeysReply {
        req: ReqId,
        keys: Vec<Vec<u8>>,
    },
    /// This shard's part of the store hash at `revision`, once its watermark reaches
    /// `index`.
    Hash {
        from: usize,
        req: ReqId,
        revision: ringkv_store::Revision,
        index: Index,
        deadline: Instant,
    },
    HashReply {
        req: ReqId,
        hash: Result<u64, ringkv_proto::outcome::ApiError>,
    },
    /// This shard's partial of a read-only txn at `revision`, once its watermark reaches
    /// `index`.
    TxnPartial {
        from: usize,
        req: ReqId,
        txn: Arc<ringkv_store::TxnRequest>,
        revision: ringkv_store::Revision,
        index: Index,
        deadline: Instant,
    },
    TxnPartialReply {
        req: ReqId,
        partial: Result<ringkv_store::parts::Partial, ringkv_proto::outcome::ApiError>,
    },
    /// This shard's part of a read-only txn's answer on the path decided.
    TxnPart {
        from: usize,
        req: ReqId,
        txn: Arc<ringkv_store::TxnRequest>,
        decision: Arc<ringkv_store::parts::Decision>,
        revision: ringkv_store::Revision,
        index: Index,
        deadline: Instant,
    },
    TxnPartReply {
        req: ReqId,
        part: Result<ringkv_store::parts::TxnPart, ringkv_proto::outcome::ApiError>,
    },
}

/// State every executor of the node reads.
pub(crate) struct Shared {
    /// The node's clock: raft core ticks and lease expiries are its nanoseconds.
    clock: Clock,
    lease: LeaseView,
    /// The leader this node knows of (0: none), published by the raft core with the
    /// lease view (etcd's `hasleader` and Status read it).
    leader: AtomicU64,
    /// Each shard's applied watermark (for `/status`).
    watermarks: Vec<AtomicU64>,
    /// Bytes each shard's partition holds (for `state_bytes_max`).
    state_bytes: Vec<AtomicU64>,
    /// Set by SIGTERM/SIGINT; the raft core starts its shutdown on its next tick.
    stop_requested: Arc<AtomicBool>,
    /// Set by the raft core once it shuts down: shards refuse new requests.
    stopping: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn applied_min(&self) -> Index {
        self.watermarks
            .iter()
            .map(|w| w.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

/// The node's monotonic clock. Every reading the raft core and the shards use for ticks
/// and leases comes from here, so the fault campaign can make one node's clock run fast or
/// slow (`testing.clock_rate_ppm`, 0 outside it) and show the drift bound holds.
pub(crate) struct Clock {
    epoch: Instant,
    /// Clock nanoseconds per 10^6 real nanoseconds.
    rate_per_million: u64,
}

impl Clock {
    pub(crate) fn new(rate_ppm: i32) -> Clock {
        debug_assert!(rate_ppm.abs() <= crate::config::CLOCK_RATE_PPM_MAX);
        Clock {
            epoch: Instant::now(),
            rate_per_million: (1_000_000 + rate_ppm as i64) as u64,
        }
    }

    /// Nanoseconds since start, on this node's clock.
    pub(crate) fn now_ns(&self) -> u64 {
        let real = self.epoch.elapsed().as_nanos();
        (real * self.rate_per_million as u128 / 1_000_000) as u64
    }

    /// The real time that `d` of this clock takes (a tick's period).
    pub(crate) fn real(&self, d: Duration) -> Duration {
        Duration::from_nanos((d.as_nanos() * 1_000_000 / self.rate_per_million as u128) as u64)
    }
}

/// The raft core's ends of the queues.
pub(crate) struct CoreQueues {
    from_shards: Vec<SharedReceiver<ToRaft>>,
    to_shards: Vec<SharedSender<ToShard>>,
}

/// One shard's ends of the queues.
pub(crate) struct ShardQueues {
    to_raft: SharedSender<ToRaft>,
    from_raft: SharedReceiver<ToShard>,
    /// Index = destination shard; `None` for this shard itself.
    mesh_out: Vec<Option<SharedSender<MeshMsg>>>,
    mesh_in: Vec<SharedReceiver<MeshMsg>>,
}

fn queues(n: usize) -> (CoreQueues, Vec<ShardQueues>) {
    let mut core = CoreQueues {
        from_shards: Vec::new(),
        to_shards: Vec::new(),
    };
    let mut shards = Vec::new();
    for _ in 0..n {
        let (to_raft, from_shard) = shared_channel::new_bounded(CROSS_CORE_QUEUE_MAX);
        let (to_shard, from_raft) = shared_channel::new_bounded(CROSS_CORE_QUEUE_MAX);
        core.from_shards.push(from_shard);
        core.to_shards.push(to_shard);
        shards.push(ShardQueues {
            to_raft,
            from_raft,
            mesh_out: (0..n).map(|_| None).collect(),
            mesh_in: Vec::new(),
        });
    }
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (tx, rx) = shared_channel::new_bounded(CROSS_CORE_QUEUE_MAX);
                shards[i].mesh_out[j] = Some(tx);
                shards[j].mesh_in.push(rx);
            }
        }
    }
    (core, shards)
}

/// Turns transparent huge pages off for this process. With them, memory the allocator
/// hands back and takes again came back as 2 MiB pages the kernel zeroed on each first
/// touch: under put load 29% of a follower's CPU was `clear_page_erms`, and a snapshot's
/// burst of such faults stalled both followers (put 100/1000 p99 170-260 ms where it is
/// 45-80 ms without; benches/README.md). A kernel without the call only loses the gain.
fn no_huge_pages(node: u64) {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        tracing::warn!(
            node,
            "cannot turn transparent huge pages off (prctl PR_SET_THP_DISABLE): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs a node until SIGTERM/SIGINT (returns Ok after an orderly shutdown). Returns an
/// error message for start-up failures and fatal faults (the caller prints it and exits
/// non-zero).
pub fn serve(cfg: NodeConfig) -> Result<(), String> {
    no_huge_pages(cfg.cluster.node_id);
    // Keys the file sets that have no effect (a MemFirst-only key under DiskFirst): said
    // first, so no key is ignored without the operator being told.
    for w in cfg.warnings() {
        tracing::warn!(node = cfg.cluster.node_id, "config: {w}");
    }
    cfg.runtime.check_cpus()?;
    let listen: SocketAddr = cfg.cluster.listen_address.parse().expect("validated");
    // Shards bind with SO_REUSEPORT, which would silently share a port with another
    // process of the same user; a plain bind first refuses a port anything holds.
    // Right after this node's previous process was killed, the kernel may still hold its
    // listener for a moment (io_uring tears a ring down asynchronously): retry briefly.
    let t = Instant::now();
    loop {
        match std::net::TcpListener::bind(listen) {
            Ok(l) => {
                drop(l);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && t.elapsed() < PORT_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(format!(
                    "cannot listen on {listen} (cluster.listen_address): {e}; another process \
                     holds the port"
                ));
            }
        }
    }
    // The metrics port is bound here, before anything starts, so a taken port refuses
    // start-up as the main listener's does. The recorder is installed before any executor
    // builds its metric handles (handles built without a recorder stay no-ops).
    let metrics = match &cfg.cluster.metrics_address {
        Some(a) => {
            let addr: SocketAddr = a.parse().expect("validated");
            let listener = exporter::bind(addr, PORT_WAIT)?;
            Some((listener, crate::metrics::install()?))
        }
        None => None,
    };
    let stop_requested = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal ends the process at once (exit 1), even if start-up is stuck.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop_requested.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop_requested.clone()))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    // The orderly shutdown has STOP_DEADLINE to finish; past it the process exits anyway.
    {
        let stop = stop_requested.clone();
        std::thread::Builder::new()
            .name("ringkv-stop-watchdog".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(STOP_DEADLINE);
                tracing::error!("shutdown did not finish within {STOP_DEADLINE:?}; exiting");
                eprintln!(
                    "ringkv serve: shutdown did not finish within {STOP_DEADLINE:?}; exiting"
                );
                std::process::exit(1);
            })
            .map_err(|e| format!("cannot start the stop watchdog: {e}"))?;
    }
    let n = cfg.runtime.cores.len();
    let shared = Arc::new(Shared {
        clock: Clock::new(cfg.testing.clock_rate_ppm),
        lease: LeaseView::default(),
        leader: AtomicU64::new(0),
        watermarks: (0..n).map(|_| AtomicU64::new(0)).collect(),
        state_bytes: (0..n).map(|_| AtomicU64::new(0)).collect(),
        stop_requested,
        stopping: AtomicBool::new(false),
    });
    let (core_q, shard_qs) = queues(n);
    let spin = cfg.runtime.spin_before_park_us;
    let builder = |cpu: usize, name: String| {
        let b = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu)).name(&name);
        if spin > 0 {
            b.spin_before_park(Duration::from_micros(spin))
        } else {
            b
        }
    };
    let id = cfg.cluster.node_id;
    let raft_cpu = cfg.runtime.raft_core;
    let mut core_q = Some(core_q);
    // The executor that runs the raft core, whichever it is: its end is the node's end.
    let mut core_handle = None;
    for (i, q) in shard_qs.into_iter().enumerate() {
        let cpu = cfg.runtime.cores[i];
        let (cfg, shared) = (cfg.clone(), shared.clone());
        if cpu == raft_cpu {
            // One thread per CPU: the raft core runs in its own task queue on the shard
            // executor of its CPU. A shard-to-raft message then wakes no other thread
            // (benches/README.md: put 1/1 +20%, put 100/1000 +45% on this machine).
            let core_q = core_q.take().expect("one shard per CPU");
            let h = builder(cpu, format!("ringkv{id}-s{i}+raft"))
                // Long work on either side (snapshot encoding, decoding, saving) yields
                // when this fires: neither waits more than this for the other.
                .preempt_timer(SHARED_PREEMPT)
                .spawn(move || async move {
                    let _node = crate::logging::node_span(id).entered();
                    let raft_tq = glommio::executor().create_task_queue(
                        glommio::Shares::default(),
                        glommio::Latency::NotImportant,
                        "raft",
                    );
                    crate::metrics::sample_executor(vec![
                        (format!("shard{i}"), None),
                        ("raft".into(), Some(raft_tq)),
                    ]);
                    glommio::spawn_local(shard::run(i, n, cfg.clone(), shared.clone(), q)).detach();
                    glommio::spawn_local_into(core::run(cfg, shared, core_q), raft_tq)
                        .map_err(|e| format!("cannot start the raft core's task queue: {e}"))?
                        .await
                })
                .map_err(|e| {
                    format!("cannot start shard {i} and the raft core on CPU {cpu}: {e}")
                })?;
            core_handle = Some(h);
            continue;
        }
        // Shards do socket I/O only: a small registered-buffer area.
        builder(cpu, format!("ringkv{id}-shard{i}"))
            .io_memory(1 << 20)
            .spawn(move || async move {
                // Held for the thread's life: every line from this executor names the node.
                let _node = crate::logging::node_span(id).entered();
                crate::metrics::sample_executor(vec![(format!("shard{i}"), None)]);
                shard::run(i, n, cfg, shared, q).await
            })
            .map_err(|e| format!("cannot start shard {i} on CPU {cpu}: {e}"))?;
    }
    if let Some((listener, handle)) = metrics {
        // Mostly asleep: it shares the raft core's CPU. Socket I/O only: the smallest
        // registered-buffer area an executor starts with.
        // Never spinning: the setting is for latency-critical executors.
        glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(raft_cpu))
            .name(&format!("ringkv{id}-metrics"))
            .io_memory(512 << 10)
            .spawn(move || async move {
                let _node = crate::logging::node_span(id).entered();
                crate::metrics::sample_executor(vec![("metrics".into(), None)]);
                exporter::serve(listener, handle).await
            })
            .map_err(|e| format!("cannot start the metrics executor on CPU {raft_cpu}: {e}"))?;
    }
    let core = match core_handle {
        Some(h) => h,
        // A CPU of its own (not one of `runtime.cores`): a dedicated raft core executor.
        None => builder(raft_cpu, format!("ringkv{id}-raft"))
            .spawn(move || async move {
                let _node = crate::logging::node_span(id).entered();
                crate::metrics::sample_executor(vec![("raft".into(), None)]);
                core::run(cfg, shared, core_q.expect("no shard executor took it")).await
            })
            .map_err(|e| format!("cannot start the raft core on CPU {raft_cpu}: {e}"))?,
    };
    // The raft core decides when the node ends (with it, the executor it shares with a
    // shard); the other shard threads end with the process.
    core.join()
        .map_err(|e| format!("the raft core's executor failed: {e}"))?
}

#[cfg(test)]
mod clock_tests {
    use super::Clock;
    use std::time::Duration;

    #[test]
    fn a_drifting_clock_scales_readings_and_tick_periods_together() {
        let slow = Clock::new(-250_000);
        // 10 ms of the slow clock take 13.33 ms of real time.
        assert_eq!(
            slow.real(Duration::from_millis(10)),
            Duration::from_nanos(13_333_333)
        );
        let fast = Clock::new(250_000);
        assert_eq!(
            fast.real(Duration::from_millis(10)),
            Duration::from_millis(8)
        );
        assert_eq!(
            Clock::new(0).real(Duration::from_millis(10)),
            Duration::from_millis(10)
        );
        // Readings run at the rate: after the same real time, fast > exact > slow.
        let exact = Clock::new(0);
        std::thread::sleep(Duration::from_millis(20));
        let (s, e, f) = (slow.now_ns(), exact.now_ns(), fast.now_ns());
        assert!(s < e && e < f, "{s} {e} {f}");
        assert!(s >= 15_000_000 && f >= 25_000_000, "{s} {f}");
    }
}
