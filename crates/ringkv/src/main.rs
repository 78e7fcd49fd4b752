//! The `ringkv` binary: `ringkv serve` (the node), `ringkv config check [FILE]`,
//! `ringkv wal check|dump DIR` and the client commands `ringkv put|get|delete|status`
//! (with etcdctl's range and option flags), `txn`, `compact`, `lease ...` and
//! `ringkv join|promote|remove|transfer-leader|snapshot` (`ringkv_client::client`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// mimalloc instead of glibc's malloc: under a large MVCC heap (every version of every key
/// until compaction) glibc's free lists fragment, and a put's few small allocations (its
/// answer channel, timer, task) spent more time in `malloc` than the store spent applying
/// it (profile in benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use ringkv_client::client::{self, AdminOp, Consistency, Request};
use ringkv_store::bytes::Bytes;
use ringkv_store::{
    Command, DeleteRangeRequest, PutRequest, RangeRequest, SortOrder, SortTarget, prefix_end,
};

#[derive(Parser)]
#[command(name = "ringkv", version, about = "A Raft-replicated key-value server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Closed-loop load generator (etcd benchmark style) against running nodes.
    Bench(BenchArgs),
    /// Inspect a write-ahead log directory (read-only).
    Wal {
        #[command(subcommand)]
        cmd: WalCmd,
    },
    /// Validate a node configuration file.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Run a node: `ringkv serve --config config/n1.toml` (or CONFIG_PATH=config/n1).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a key (redirected to the leader; never resent once it may have arrived).
    #[command(after_help = CLIENT_EXIT_CODES)]
    Put {
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// The value (omitted with --ignore-value).
        #[arg(allow_hyphen_values = true, required_unless_present = "ignore_value")]
        value: Option<String>,
        /// Attach the key to this lease (decimal, or 0x-prefixed hexadecimal).
        #[arg(long, value_parser = parse_lease)]
        lease: Option<i64>,
        /// Answer with the previous key-value.
        #[arg(long)]
        prev_kv: bool,
        /// Keep the current value (the key must exist).
        #[arg(long)]
        ignore_value: bool,
        /// Keep the current lease (the key must exist).
        #[arg(long)]
        ignore_lease: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Read a key, or (with a range flag) the keys of a range, etcdctl's `get`.
    #[command(after_help = CLIENT_EXIT_CODES)]
    Get {
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// The end of the range [KEY, RANGE_END).
        #[arg(allow_hyphen_values = true)]
        range_end: Option<String>,
        /// Default: the node's raft.read_consistency.default_policy.
        #[arg(long, value_enum)]
        consistency: Option<Consistency>,
        /// Every key starting with KEY.
        #[arg(long, conflicts_with_all = ["range_end", "from_key"])]
        prefix: bool,
        /// Every key >= KEY.
        #[arg(long, conflicts_with = "range_end")]
        from_key: bool,
        /// At most this many keys (0: all).
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Read at this revision (0: the current one).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        #[arg(long)]
        keys_only: bool,
        #[arg(long)]
        count_only: bool,
        /// Sort order: ascend or descend (by --sort-by).
        #[arg(long, value_parser = ["ascend", "descend"])]
        order: Option<String>,
        /// Sort target: key, version, create, modify or value.
        #[arg(long, value_parser = ["key", "version", "create", "modify", "value"])]
        sort_by: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a key, or (with a range flag) the keys of a range (redirected to the leader;
    /// never resent once it may have arrived).
    #[command(after_help = CLIENT_EXIT_CODES, visible_alias = "del")]
    Delete {
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// The end of the range [KEY, RANGE_END).
        #[arg(allow_hyphen_values = true)]
        range_end: Option<String>,
        /// Every key starting with KEY.
        #[arg(long, conflicts_with_all = ["range_end", "from_key"])]
        prefix: bool,
        /// Every key >= KEY.
        #[arg(long, conflicts_with = "range_end")]
        from_key: bool,
        /// Answer with the deleted key-values.
        #[arg(long)]
        prev_kv: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// A transaction, read from standard input in etcdctl's txn syntax: compares, an empty
    /// line, the ops if they all hold, an empty line, the ops otherwise (e.g.
    /// `mod("k") = "5"`, `put k v`, `get k --prefix`, `del k`).
    #[command(after_help = CLIENT_EXIT_CODES)]
    Txn {
        #[command(flatten)]
        conn: Conn,
    },
    /// Free the history below REVISION (reads of older revisions are then refused).
    #[command(after_help = CLIENT_EXIT_CODES)]
    Compact {
        revision: i64,
        /// Answer once the space is freed (ringkv always does).
        #[arg(long)]
        physical: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Disarm the NOSPACE alarm (raised when the state reached limits.state_bytes_max;
    /// writes are refused until it is disarmed; `ringkv status` lists alarms).
    #[command(after_help = CLIENT_EXIT_CODES)]
    AlarmDisarm {
        #[command(flatten)]
        conn: Conn,
    },
    /// Leases: keys attached to one are deleted when it expires or is revoked.
    #[command(after_help = CLIENT_EXIT_CODES)]
    Lease {
        #[command(subcommand)]
        cmd: LeaseCmd,
    },
    /// A live view of the cluster: one line per node (role, term, commit and applied
    /// index, follower lag, commits, fsyncs, WAL entries and requests per second, p99 of
    /// the interval), then each node's executors (busy fraction, queue depths), refreshed
    /// every second until Ctrl-C.
    Top {
        /// Print one table (rates over one interval) without screen control, then exit.
        #[arg(long)]
        once: bool,
        /// Refresh interval.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
        interval_ms: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the status of the first endpoint that answers.
    #[command(after_help = CLIENT_EXIT_CODES)]
    Status {
        /// Every endpoint's status, one JSON per line (an error line for one that fails);
        /// exit 0 when all answered, 1 when some did, 3 when none did.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a node to the cluster as a learner (it replicates, does not vote). Start it with
    /// its own learner entry (config/n4.toml) to have it join.
    #[command(after_help = CLIENT_EXIT_CODES)]
    Join {
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        /// Its listen address, ip:port (like 127.0.0.1:9084).
        #[arg(value_parser = parse_address)]
        address: String,
        #[command(flatten)]
        admin: AdminConn,
    },
    /// Make a learner a voter. A lagging learner is waited for, up to the node's
    /// raft.request_timeout_ms (then 409 learner_lagging): keep --timeout-ms above it.
    #[command(after_help = CLIENT_EXIT_CODES)]
    Promote {
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        #[command(flatten)]
        admin: AdminConn,
    },
    /// Take a node (voter or learner) out of the cluster.
    #[command(after_help = CLIENT_EXIT_CODES)]
    Remove {
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        #[command(flatten)]
        admin: AdminConn,
    },
    /// Hand leadership to the voter NODE_ID.
    #[command(after_help = CLIENT_EXIT_CODES)]
    TransferLeader {
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        #[command(flatten)]
        admin: AdminConn,
    },
    /// Take a snapshot now, at the first endpoint that takes the request; or `restore`.
    #[command(after_help = CLIENT_EXIT_CODES, args_conflicts_with_subcommands = true)]
    Snapshot {
        #[command(subcommand)]
        cmd: Option<SnapshotCmd>,
        #[command(flatten)]
        admin: AdminConn,
    },
}

#[derive(Subcommand)]
enum LeaseCmd {
    /// Grant a lease of TTL seconds (raised to the cluster's minimum); prints its ID.
    Grant {
        ttl: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a lease: its keys are deleted.
    Revoke {
        #[arg(value_parser = parse_lease)]
        id: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Keep a lease alive (every third of its TTL until interrupted, or once).
    KeepAlive {
        #[arg(value_parser = parse_lease)]
        id: i64,
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// A lease's remaining and granted TTL (-1: no such lease).
    Timetolive {
        #[arg(value_parser = parse_lease)]
        id: i64,
        /// With the keys attached to it.
        #[arg(long)]
        keys: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Every lease's ID.
    List {
        #[command(flatten)]
        conn: Conn,
    },
}

fn parse_lease(s: &str) -> Result<i64, String> {
    ringkv_client::txn::parse_lease(s)
}

const CLIENT_EXIT_CODES: &str = "Exit codes: 0 done (the reply's JSON on stdout); 1 the \
cluster answered with an error (its JSON on stderr); 2 usage error; 3 no answer: no endpoint \
reachable, or a put/delete/join/promote/remove/transfer-leader/snapshot whose outcome is \
unknown (sent, then the connection was lost or it timed out; it is never resent).";

/// Where and how long an admin command tries, and its token.
#[derive(Args)]
struct AdminConn {
    #[command(flatten)]
    conn: Conn,
    /// Sent as the X-Ringkv-Token header. Default: $RINGKV_TOKEN (which, unlike the flag,
    /// does not show in the process list); none when both are absent or empty.
    #[arg(long, value_parser = client::check_token)]
    token: Option<String>,
}

/// Where and how long the client commands try.
#[derive(Args)]
struct Conn {
    /// Nodes to try, in order: host:port,host:port,...
    #[arg(long, default_value = client::ENDPOINTS_DEFAULT, value_parser = parse_endpoints)]
    endpoints: Endpoints,
    /// Limit for each attempt at one endpoint: connect, send and the whole reply.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// put, range (gets) or mixed (gets and puts); the etcd data model's (native and etcd
    /// targets): txn-put (Kubernetes' update: Txn{MOD(key) == r ? Put : Range}, conflicts
    /// counted apart), range-prefix (a range over one prefix of 100 keys; --populate
    /// first), lease-put (LeaseGrant then a Put with the lease, one op; --revoke-leases
    /// after).
    #[arg(value_parser = ["put", "range", "mixed", "txn-put", "range-prefix", "lease-put"])]
    workload: String,
    /// range-prefix: instead of ranges, write every key of the --key-space prefixes (100
    /// keys each, 'p000000/000'...), once, and report that run.
    #[arg(long)]
    populate: bool,
    /// lease-put: instead of the workload, revoke every lease the cluster holds (their
    /// keys go with them) and report that run.
    #[arg(long)]
    revoke_leases: bool,
    /// Nodes: host:port,host:port,... (puts go to the leader, reads to all).
    #[arg(long, default_value = client::ENDPOINTS_DEFAULT, value_parser = parse_endpoints)]
    endpoints: Endpoints,
    /// native (pipelined binary frames), http (one keep-alive connection per client) or
    /// etcd (its v3 gRPC API; builds with --features etcd).
    #[arg(long, default_value = "native", value_parser = ["native", "http", "etcd"])]
    target: String,
    /// Native connections shared by the clients.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    conns: u64,
    /// Concurrent clients, each with one request outstanding.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    /// Requests in all (default 10000 unless --duration is given).
    #[arg(long)]
    total: Option<u64>,
    /// Run for this many seconds instead of --total.
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Distinct keys (10 for a hot-key run); for range-prefix the number of prefixes
    /// (default 100,000 keys; 100 prefixes for range-prefix).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    key_space: Option<u64>,
    #[arg(long)]
    sequential_keys: bool,
    /// Reads: l (linearizable), lease, s (serializable: eventual, local).
    #[arg(long, default_value = "l", value_parser = ["l", "lease", "s"])]
    consistency: String,
    /// mixed: the share of reads, 0..=1.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Per-request limit in milliseconds (over it: a timeout error, never retried).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Build the data directory of one founder of a new cluster from FILE, a snapshot
    /// saved from ringkv (`etcdctl snapshot save`): the state at the file's revision, the
    /// members of the node's config. Run it for every founder (same FILE), then start them.
    /// Exit 0 restored, 1 refused (the reason on stderr).
    Restore {
        file: PathBuf,
        /// The new node's config: its node id, data_dir (must hold no node state) and the
        /// new cluster's initial_cluster.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Parse and validate; exit 0 when valid, 1 naming the key and the reason otherwise.
    /// Keys a valid file sets to no effect (a MemFirst-only key under DiskFirst) are named
    /// on stderr as warnings, as `ringkv serve` logs them; the exit is still 0.
    Check {
        /// The file (default: $CONFIG_PATH, with or without `.toml`).
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum WalCmd {
    /// Verify every segment; exit 0 when clean or only a torn tail, 1 on corruption.
    Check {
        /// A node's `wal/` directory.
        dir: PathBuf,
    },
    /// Print every live record.
    Dump {
        /// A node's `wal/` directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Bench(a) => bench(a),
        Cmd::Put {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
            conn,
        } => {
            let value = value.unwrap_or_default();
            if lease.is_none() && !prev_kv && !ignore_value && !ignore_lease {
                return finish(conn.run(&Request::Put { key, value }));
            }
            let cmd = Command::Put(PutRequest {
                key: Bytes::from(key.into_bytes()),
                value: Bytes::from(value.into_bytes()),
                lease: lease.unwrap_or(0),
                prev_kv,
                ignore_value,
                ignore_lease,
            });
            finish(conn.run(&Request::Write { name: "put", cmd }))
        }
        Cmd::Delete {
            key,
            range_end,
            prefix,
            from_key,
            prev_kv,
            conn,
        } => {
            if range_end.is_none() && !prefix && !from_key && !prev_kv {
                return finish(conn.run(&Request::Delete { key }));
            }
            let end = range_of(&key, range_end, prefix, from_key);
            let cmd = Command::DeleteRange(DeleteRangeRequest {
                key: Bytes::from(key.into_bytes()),
                range_end: end,
                prev_kv,
            });
            finish(conn.run(&Request::Write {
                name: "delete",
                cmd,
            }))
        }
        Cmd::Get {
            key,
            range_end,
            consistency,
            prefix,
            from_key,
            limit,
            rev,
            keys_only,
            count_only,
            order,
            sort_by,
            conn,
        } => {
            let plain = range_end.is_none()
                && !prefix
                && !from_key
                && limit == 0
                && rev == 0
                && !keys_only
                && !count_only
                && order.is_none()
                && sort_by.is_none();
            if plain {
                return finish(conn.run(&Request::Get { key, consistency }));
            }
            let end = range_of(&key, range_end, prefix, from_key);
            let req = RangeRequest {
                key: Bytes::from(key.into_bytes()),
                range_end: end,
                limit,
                revision: rev,
                keys_only,
                count_only,
                sort_order: match order.as_deref() {
                    Some("ascend") => SortOrder::Ascend,
                    Some("descend") => SortOrder::Descend,
                    _ => SortOrder::None,
                },
                sort_target: match sort_by.as_deref() {
                    Some("version") => SortTarget::Version,
                    Some("create") => SortTarget::Create,
                    Some("modify") => SortTarget::Mod,
                    Some("value") => SortTarget::Value,
                    _ => SortTarget::Key,
                },
                ..Default::default()
            };
            finish(conn.run(&Request::Range { req, consistency }))
        }
        Cmd::Txn { conn } => {
            let mut text = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                eprintln!("ringkv txn: cannot read standard input: {e}");
                return ExitCode::from(2);
            }
            match ringkv_client::txn::parse(&text) {
                Ok(t) => finish(conn.run(&Request::Write {
                    name: "txn",
                    cmd: Command::Txn(t),
                })),
                Err(e) => {
                    eprintln!("ringkv txn: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Compact {
            revision,
            physical,
            conn,
        } => finish(conn.run(&Request::Write {
            name: "compact",
            cmd: Command::Compact { revision, physical },
        })),
        Cmd::AlarmDisarm { conn } => finish(conn.run(&Request::Write {
            name: "alarm-disarm",
            cmd: Command::Alarm { nospace: false },
        })),
        Cmd::Lease { cmd } => match cmd {
            LeaseCmd::Grant { ttl, conn } => finish(conn.run(&Request::Write {
                name: "lease grant",
                cmd: Command::LeaseGrant { id: 0, ttl },
            })),
            LeaseCmd::Revoke { id, conn } => finish(conn.run(&Request::Write {
                name: "lease revoke",
                cmd: Command::LeaseRevoke { id },
            })),
            LeaseCmd::KeepAlive {
                id,
                once: true,
                conn,
            } => finish(conn.run(&Request::LeaseKeepAlive { lease: id })),
            LeaseCmd::KeepAlive {
                id,
                once: false,
                conn,
            } => ExitCode::from(client::keep_alive_loop(
                id,
                &conn.endpoints.0,
                Duration::from_millis(conn.timeout_ms),
            )),
            LeaseCmd::Timetolive { id, keys, conn } => {
                finish(conn.run(&Request::LeaseTimeToLive { lease: id, keys }))
            }
            LeaseCmd::List { conn } => finish(conn.run(&Request::LeaseList)),
        },
        Cmd::Status { all: false, conn } => finish(conn.run(&Request::Status)),
        Cmd::Status { all: true, conn } => finish(client::status_all(
            &conn.endpoints.0,
            Duration::from_millis(conn.timeout_ms),
        )),
        Cmd::Top {
            once,
            interval_ms,
            conn,
        } => ExitCode::from(ringkv_client::top::run(
            &conn.endpoints.0,
            Duration::from_millis(interval_ms),
            once,
            Duration::from_millis(conn.timeout_ms),
        )),
        Cmd::Join {
            node_id,
            address,
            admin,
        } => admin.run(AdminOp::Join { node_id, address }),
        Cmd::Promote { node_id, admin } => admin.run(AdminOp::Promote { node_id }),
        Cmd::Remove { node_id, admin } => admin.run(AdminOp::Remove { node_id }),
        Cmd::TransferLeader { node_id, admin } => admin.run(AdminOp::TransferLeader { node_id }),
        Cmd::Snapshot { cmd: None, admin } => admin.run(AdminOp::Snapshot),
        Cmd::Snapshot {
            cmd: Some(SnapshotCmd::Restore { file, config }),
            ..
        } => {
            let restored = ringkv_server::config::NodeConfig::load(&config)
                .map_err(|e| format!("{}: {e}", config.display()))
                .and_then(|c| ringkv_server::node::restore::restore(&file, &c));
            match restored {
                Ok(said) => {
                    println!("{said}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ringkv snapshot restore: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Wal { cmd } => {
            let r = match cmd {
                WalCmd::Check { dir } => ringkv_server::wal::inspect::check(&dir),
                WalCmd::Dump { dir } => ringkv_server::wal::inspect::dump(&dir),
            };
            print!("{}", r.text);
            ExitCode::from(r.exit_code as u8)
        }
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => {
            let Some(path) = file.or_else(ringkv_server::config::path_from_env) else {
                eprintln!("ringkv config check: give a file or set CONFIG_PATH");
                return ExitCode::from(2);
            };
            match ringkv_server::config::NodeConfig::load(&path) {
                Ok(c) => {
                    println!(
                        "{}: valid: node {} on {}, {} members{}, {:?}, data in {}",
                        path.display(),
                        c.cluster.node_id,
                        c.cluster.listen_address,
                        c.cluster.initial_cluster.len(),
                        if c.is_joiner() {
                            " (joins as a learner through the founders)"
                        } else {
                            ""
                        },
                        c.raft.persistence.strategy,
                        c.data_dir().display()
                    );
                    for w in c.warnings() {
                        eprintln!("warning: {}: {w}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Serve { config } => {
            let Some(path) = config.or_else(ringkv_server::config::path_from_env) else {
                eprintln!("ringkv serve: give --config FILE or set CONFIG_PATH");
                return ExitCode::from(2);
            };
            let cfg = match ringkv_server::config::NodeConfig::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            // $LOG_DIR (what `make start-cluster` sets) overrides cluster.log_dir.
            let log_dir = std::env::var_os("LOG_DIR")
                .filter(|d| !d.is_empty())
                .map_or_else(|| cfg.log_dir(), PathBuf::from);
            if let Err(e) = ringkv_server::logging::init(&cfg.log_options(log_dir)) {
                eprintln!("ringkv serve ({}): {e}", path.display());
                return ExitCode::from(1);
            }
            let _node = ringkv_server::logging::node_span(cfg.cluster.node_id).entered();
            tracing::warn!(
                node = cfg.cluster.node_id,
                config = %path.display(),
                version = env!("CARGO_PKG_VERSION"),
                "ringkv serve starting"
            );
            match ringkv_server::node::serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // In d.log as well as on stderr: the node is gone, say why.
                    tracing::error!(config = %path.display(), "ringkv serve: {e}");
                    eprintln!("ringkv serve ({}): {e}", path.display());
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn bench(a: BenchArgs) -> ExitCode {
    use ringkv_client::bench::{Options, Target, Workload};
    use ringkv_proto::native;
    let consistency = match a.consistency.as_str() {
        "l" => native::CONSISTENCY_LINEARIZABLE,
        "lease" => native::CONSISTENCY_LEASE,
        _ => native::CONSISTENCY_EVENTUAL,
    };
    if !(0.0..=1.0).contains(&a.read_ratio) {
        eprintln!("ringkv bench: --read-ratio must be within 0..=1");
        return ExitCode::from(2);
    }
    let mut endpoints = Vec::new();
    for e in &a.endpoints.0 {
        match e.parse() {
            Ok(x) => endpoints.push(x),
            Err(err) => {
                eprintln!("ringkv bench: endpoint {e:?}: {err} (give ip:port)");
                return ExitCode::from(2);
            }
        }
    }
    if a.populate && a.workload != "range-prefix" {
        eprintln!("ringkv bench: --populate goes with range-prefix");
        return ExitCode::from(2);
    }
    if a.revoke_leases && a.workload != "lease-put" {
        eprintln!("ringkv bench: --revoke-leases goes with lease-put");
        return ExitCode::from(2);
    }
    let o = Options {
        endpoints,
        target: match a.target.as_str() {
            "http" => Target::Http,
            "etcd" => Target::Etcd,
            _ => Target::Native,
        },
        workload: match a.workload.as_str() {
            "put" => Workload::Put,
            "range" => Workload::Range { consistency },
            "txn-put" => Workload::TxnPut,
            "range-prefix" if a.populate => Workload::PopulatePrefixes,
            "range-prefix" => Workload::RangePrefix { consistency },
            "lease-put" if a.revoke_leases => Workload::RevokeLeases,
            "lease-put" => Workload::LeasePut,
            _ => Workload::Mixed {
                read_ratio: a.read_ratio,
                consistency,
            },
        },
        conns: a.conns as usize,
        clients: a.clients as usize,
        total: match (a.total, a.duration) {
            (None, None) => Some(10_000),
            (t, _) => t,
        },
        duration: a.duration.map(Duration::from_secs_f64),
        key_size: a.key_size,
        val_size: a.val_size,
        key_space: a.key_space.unwrap_or(if a.workload == "range-prefix" {
            100
        } else {
            100_000
        }),
        sequential_keys: a.sequential_keys,
        timeout: Duration::from_millis(a.timeout_ms),
    };
    match ringkv_client::bench::run(o) {
        Ok(r) if a.json => {
            println!("{}", serde_json::to_string(&r).expect("serializable"));
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!("{}", r.line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringkv bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// The parsed `--endpoints` list (a newtype: clap reads a `Vec` field as repeated flags).
#[derive(Clone)]
struct Endpoints(Vec<String>);

fn parse_endpoints(s: &str) -> Result<Endpoints, String> {
    client::parse_endpoints(s).map(Endpoints)
}

impl Conn {
    fn run(&self, req: &Request) -> client::Outcome {
        client::run(
            req,
            &self.endpoints.0,
            Duration::from_millis(self.timeout_ms),
        )
    }
}

fn parse_address(s: &str) -> Result<String, String> {
    s.parse::<std::net::SocketAddr>()
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?} is not an address like 127.0.0.1:9084 ({e})"))
}

impl AdminConn {
    fn run(&self, op: AdminOp) -> ExitCode {
        let token = match &self.token {
            Some(t) => Some(t.clone()),
            None => match std::env::var("RINGKV_TOKEN") {
                Ok(t) if t.is_empty() => None,
                Ok(t) => match client::check_token(&t) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        eprintln!("ringkv: RINGKV_TOKEN: {e}");
                        return ExitCode::from(2);
                    }
                },
                Err(std::env::VarError::NotPresent) => None,
                Err(std::env::VarError::NotUnicode(_)) => {
                    eprintln!("ringkv: RINGKV_TOKEN: not UTF-8");
                    return ExitCode::from(2);
                }
            },
        };
        finish(self.conn.run(&Request::Admin { op, token }))
    }
}

/// The range_end of a range given as an explicit end, `--prefix` or `--from-key`.
fn range_of(key: &str, end: Option<String>, prefix: bool, from_key: bool) -> Bytes {
    if prefix {
        prefix_end(key.as_bytes())
    } else if from_key {
        Bytes::from_static(&[0])
    } else {
        end.map(|e| Bytes::from(e.into_bytes())).unwrap_or_default()
    }
}

fn finish(o: client::Outcome) -> ExitCode {
    print!("{}", o.stdout);
    eprint!("{}", o.stderr);
    ExitCode::from(o.exit_code)
}
