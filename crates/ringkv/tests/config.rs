//! Node configuration: the shipped example files are valid, every validation rule refuses
//! with the key path and reason it documents, and values reach the core and the WAL.

use ringkv_raft::{Persistence, ReadPolicy};
use ringkv_server::config::{MemberRole, NodeConfig};

/// The repository root: the example configs live in its `config/`.
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

const BASE: &str = r#"
[cluster]
node_id = 1
listen_address = "127.0.0.1:9081"
initial_cluster = [
    { id = 1, address = "127.0.0.1:9081", role = 1, status = 2 },
    { id = 2, address = "127.0.0.1:9082", role = 1, status = 2 },
    { id = 3, address = "127.0.0.1:9083", role = 1, status = 2 },
]

[raft]
election_timeout_min_ms = 1000
election_timeout_max_ms = 2000
heartbeat_interval_ms = 100

[raft.read_consistency]
default_policy = "LeaseRead"
lease_duration_ms = 500

[raft.persistence]
strategy = "MemFirst"
flush_policy = { Batch = { threshold = 100, interval_ms = 20 } }
max_buffered_entries = 10000
flush_workers = 4
"#;

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "test edit {from:?} does not apply");
    BASE.replacen(from, to, 1)
}

/// The error for `text`: (key path, reason).
fn refused(text: &str) -> (String, String) {
    match NodeConfig::parse(text, "n.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            assert_eq!(e.file, "n.toml");
            (e.key, e.reason)
        }
    }
}

fn assert_refused(text: &str, key: &str, reason_part: &str) {
    let (k, r) = refused(text);
    assert_eq!(k, key, "reason was: {r}");
    assert!(
        r.contains(reason_part),
        "{key}: {r:?} lacks {reason_part:?}"
    );
}

/// `text` with its first `from` replaced by `to` (which must be there).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "test edit {from:?} does not apply");
    text.replacen(from, to, 1)
}

#[test]
fn shipped_example_files_are_valid_and_match_the_seed() {
    for i in 1..=3u64 {
        let path = format!("{}/config/n{i}.toml", REPO);
        let c = NodeConfig::load(std::path::Path::new(&path)).unwrap();
        assert_eq!(c.cluster.node_id, i);
        assert_eq!(c.cluster.listen_address, format!("127.0.0.1:908{i}"));
        assert_eq!(
            c.cluster.metrics_address.as_deref(),
            Some(&*format!("127.0.0.1:808{i}"))
        );
        assert_eq!(c.data_dir(), std::path::PathBuf::from(format!("db/{i}")));
        assert_eq!(c.members().len(), 3);
        assert!(c.members().iter().all(|m| m.2 == MemberRole::Voter));
        assert_eq!(c.default_read_policy(), ReadPolicy::Lease);
        let w = c.wal_options();
        let m = w.mem_first.expect("MemFirst with the seed's batch flush");
        assert_eq!((m.flush_threshold_entries, m.flush_interval_ms), (100, 20));
        assert_eq!(m.buffered_entries_max, 10_000);
        assert_eq!(w.flush_workers, 4);
        let r = c.raft_config();
        r.validate().unwrap();
        assert_eq!(r.persistence, Persistence::MemFirst);
        assert_eq!(r.append_entries_max, 5000);
        assert_eq!(c.warnings(), [], "every key of n{i}.toml has an effect");
    }
}

/// `config/n1.toml` with its strategy switched to DiskFirst and nothing else changed.
fn shipped_n1_switched_to_disk_first() -> String {
    let text = std::fs::read_to_string(format!("{REPO}/config/n1.toml")).unwrap();
    let from = "strategy = \"MemFirst\"";
    assert_eq!(
        text.matches(from).count(),
        1,
        "n1.toml names its strategy once"
    );
    let switched = text.replacen(from, "strategy = \"DiskFirst\"", 1);
    let changed = text
        .lines()
        .zip(switched.lines())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, 1, "a one-line change");
    switched
}

/// The warnings for MemFirst-only keys left in a DiskFirst file.
const DISK_FIRST_WARNINGS: [&str; 2] = [
    "raft.persistence.flush_policy: applies only to strategy = \"MemFirst\" and is ignored \
     under strategy = \"DiskFirst\"",
    "raft.persistence.max_buffered_entries: applies only to strategy = \"MemFirst\" and is \
     ignored under strategy = \"DiskFirst\"",
];

#[test]
fn switching_the_shipped_example_to_disk_first_is_one_line_and_warns() {
    let text = shipped_n1_switched_to_disk_first();
    let c = NodeConfig::parse(&text, "n1.toml").unwrap();
    assert_eq!(c.raft_config().persistence, Persistence::DiskFirst);
    assert!(
        c.wal_options().mem_first.is_none(),
        "the MemFirst keys have no effect"
    );
    let w = c.warnings();
    let keys: Vec<&str> = w.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "raft.persistence.flush_policy",
            "raft.persistence.max_buffered_entries"
        ]
    );
    let lines: Vec<String> = w.iter().map(|w| w.to_string()).collect();
    assert_eq!(lines, DISK_FIRST_WARNINGS);

    // Typos stay refused, at the top of the section and inside an ignored key alike.
    assert_refused(
        &edit(
            &text,
            "flush_workers = 4",
            "flush_workers = 4\nflush_worker = 3",
        ),
        "raft.persistence.flush_worker",
        "unknown field `flush_worker`",
    );
    assert_refused(
        &edit(&text, "max_buffered_entries", "max_bufered_entries"),
        "raft.persistence.max_bufered_entries",
        "unknown field `max_bufered_entries`",
    );
    assert_refused(
        &edit(&text, "threshold = 100", "treshold = 100"),
        "raft.persistence.flush_policy.Batch",
        "unexpected keys in table: treshold",
    );
    // So do wrong and contradictory values of the ignored keys: switching back to
    // MemFirst must stay a one-line change that works.
    assert_refused(
        &edit(
            &text,
            "max_buffered_entries = 10000",
            "max_buffered_entries = 50",
        ),
        "raft.persistence.max_buffered_entries",
        "50 must be at least flush_policy.Batch.threshold (100)",
    );
    assert_refused(
        &edit(&text, "interval_ms = 20", "interval_ms = 0"),
        "raft.persistence.flush_policy.Batch.interval_ms",
        "at least 1",
    );
}

#[test]
fn cli_config_check_prints_the_warnings_of_a_disk_first_switch_and_exits_0() {
    let bin = env!("CARGO_BIN_EXE_ringkv");
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file = tmp.join(format!("n1-disk-first-{}.toml", std::process::id()));
    let text = shipped_n1_switched_to_disk_first();
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new(bin)
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("valid: node 1") && stdout.contains("DiskFirst"),
        "{stdout}"
    );
    let expected: Vec<String> = DISK_FIRST_WARNINGS
        .iter()
        .map(|w| format!("warning: {}: {w}", file.display()))
        .collect();
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");

    // A typo is still refused, exit 1, naming the key.
    std::fs::write(
        &file,
        edit(&text, "max_buffered_entries", "max_bufered_entries"),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(": raft.persistence.max_bufered_entries: unknown field"),
        "{stderr}"
    );
}

#[test]
fn shipped_joiner_files_list_the_founders_and_themselves_as_learners() {
    let dir = REPO;
    let load = |i: u64| NodeConfig::load(std::path::Path::new(&format!("{dir}/config/n{i}.toml")));
    let n1 = load(1).unwrap();
    let text = |i: u64| std::fs::read_to_string(format!("{dir}/config/n{i}.toml")).unwrap();
    // From [raft] to [runtime]: the same settings as the founders.
    let settings = |t: &str| {
        let from = t.find("[raft]").unwrap();
        let to = t.find("[runtime]").unwrap();
        t[from..to].to_string()
    };
    for i in 4..=5u64 {
        let c = load(i).unwrap();
        assert_eq!(c.cluster.node_id, i);
        assert_eq!(c.cluster.listen_address, format!("127.0.0.1:908{i}"));
        assert_eq!(
            c.cluster.metrics_address.as_deref(),
            Some(&*format!("127.0.0.1:808{i}"))
        );
        assert_eq!(c.data_dir(), std::path::PathBuf::from(format!("db/{i}")));
        assert_eq!(c.log_dir(), std::path::PathBuf::from(format!("logs/{i}")));
        assert!(c.is_joiner());
        assert_eq!(c.founders(), n1.founders());
        let m = c.members();
        assert_eq!(m.len(), 4);
        assert_eq!(m[..3], n1.members()[..]);
        assert_eq!(
            m[3],
            (
                i,
                format!("127.0.0.1:908{i}").parse().unwrap(),
                MemberRole::Learner
            )
        );
        let e = &c.cluster.initial_cluster[3];
        assert_eq!(
            (format!("{:?}", e.role), format!("{:?}", e.status)),
            ("Number(3)".into(), "Number(0)".into()),
            "learner, joining, as the seed's codes"
        );
        assert_eq!(
            settings(&text(i)),
            settings(&text(1)),
            "n{i} differs from n1"
        );
        // Nodes alternate between the two CPUs, both executors of a node on its one CPU.
        let cpu = (i as usize - 1) % 2;
        assert_eq!(
            (c.runtime.cores.clone(), c.runtime.raft_core),
            (vec![cpu], cpu)
        );
    }
    for i in 1..=3u64 {
        let c = load(i).unwrap();
        let cpu = (i as usize - 1) % 2;
        assert_eq!(
            (c.runtime.cores.clone(), c.runtime.raft_core),
            (vec![cpu], cpu)
        );
    }
    assert!(!n1.is_joiner());
    // `ringkv config check` passes and says how the node starts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["config", "check", "config/n4.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("valid: node 4 on 127.0.0.1:9084, 4 members (joins as a learner"),
        "{stdout}"
    );
}

#[test]
fn milliseconds_become_ticks_and_defaults_fill_the_rest() {
    let c = NodeConfig::parse(BASE, "n.toml").unwrap();
    let r = c.raft_config();
    assert_eq!(r.tick_interval_ns, 10_000_000);
    assert_eq!(
        (
            r.election_timeout_min_ticks,
            r.election_timeout_max_ticks,
            r.heartbeat_interval_ticks
        ),
        (100, 200, 10)
    );
    assert_eq!(r.lease_duration_ns, 500_000_000);
    assert_eq!(c.raft.request_timeout_ms, 3000);
    assert_eq!(c.limits.value_bytes_max, 1536 << 10);
    assert_eq!(c.log_dir(), std::path::PathBuf::from("logs/1"));
    let disk_first = NodeConfig::parse(
        &with(
            "strategy = \"MemFirst\"\nflush_policy = { Batch = { threshold = 100, interval_ms = 20 } }\nmax_buffered_entries = 10000\n",
            "strategy = \"DiskFirst\"\n",
        ),
        "n.toml",
    )
    .unwrap();
    assert!(disk_first.wal_options().mem_first.is_none());
    assert_eq!(disk_first.raft_config().persistence, Persistence::DiskFirst);
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    assert_refused(
        &with("flush_workers = 4", "flush_workers = 4\nflush_worker = 3"),
        "raft.persistence.flush_worker",
        "unknown field `flush_worker`",
    );
    assert_refused(
        &format!("{BASE}\n[raft.replicaton]\nappend_entries_max = 1\n"),
        "raft.replicaton",
        "unknown field",
    );
    assert_refused(
        &with(
            "role = 1, status = 2 },\n    { id = 3",
            "role = 1, status = 2, weight = 2 },\n    { id = 3",
        ),
        "cluster.initial_cluster[1].weight",
        "unknown field `weight`",
    );
    assert_refused(
        &format!("{BASE}\n[extras]\nx = 1\n"),
        "extras",
        "unknown field",
    );
}

#[test]
fn wrong_types_and_syntax_errors_name_the_place() {
    assert_refused(
        &with("node_id = 1", "node_id = \"one\""),
        "cluster.node_id",
        "invalid type: string \"one\", expected u64 (line 3)",
    );
    assert_refused(
        &with(
            "default_policy = \"LeaseRead\"",
            "default_policy = \"Lease\"",
        ),
        "raft.read_consistency.default_policy",
        "unknown variant `Lease`",
    );
    let (k, r) = refused(&format!("{BASE}\ngarbage = [\n"));
    assert_eq!(k, "");
    assert!(r.contains("line"), "{r}");
}

#[test]
fn cluster_membership_rules() {
    assert_refused(
        &with("node_id = 1", "node_id = 0"),
        "cluster.node_id",
        "0 is reserved",
    );
    assert_refused(
        &with("node_id = 1", "node_id = 7"),
        "cluster.node_id",
        "7 is not in cluster.initial_cluster",
    );
    assert_refused(
        &with("{ id = 2,", "{ id = 1,"),
        "cluster.initial_cluster[1].id",
        "id 1 appears twice",
    );
    assert_refused(
        &with("\"127.0.0.1:9082\", role", "\"127.0.0.1:9081\", role"),
        "cluster.initial_cluster[1].address",
        "127.0.0.1:9081 appears twice",
    );
    assert_refused(
        &with(
            "listen_address = \"127.0.0.1:9081\"",
            "listen_address = \"localhost\"",
        ),
        "cluster.listen_address",
        "\"localhost\" is not an address",
    );
    assert_refused(
        &with("\"127.0.0.1:9083\"", "\"127.0.0.1:90830\""),
        "cluster.initial_cluster[2].address",
        "is not an address",
    );
    assert_refused(
        &with(
            "listen_address = \"127.0.0.1:9081\"",
            "listen_address = \"127.0.0.1:9081\"\nmetrics_address = \"nowhere\"",
        ),
        "cluster.metrics_address",
        "is not an address",
    );
    for m in ["127.0.0.1:9081", "0.0.0.0:9081"] {
        assert_refused(
            &with(
                "listen_address = \"127.0.0.1:9081\"",
                &format!("listen_address = \"127.0.0.1:9081\"\nmetrics_address = \"{m}\""),
            ),
            "cluster.metrics_address",
            "overlaps listen_address 127.0.0.1:9081",
        );
    }
    assert_refused(
        &with(
            "listen_address = \"127.0.0.1:9081\"",
            "listen_address = \"127.0.0.1:9999\"",
        ),
        "cluster.initial_cluster[0].address",
        "own entry has port 9081",
    );
    assert_refused(
        &with("initial_cluster = [", "initial_cluster = [\n]\nx = ["),
        "cluster.x",
        "unknown field",
    );
}

#[test]
fn roles_and_statuses_take_codes_or_names() {
    // Names work, learners may start joining.
    let c = NodeConfig::parse(
        &with(
            "{ id = 3, address = \"127.0.0.1:9083\", role = 1, status = 2 }",
            "{ id = 3, address = \"127.0.0.1:9083\", role = \"learner\", status = \"joining\" }",
        )
        .replace(
            "{ id = 2, address = \"127.0.0.1:9082\", role = 1, status = 2 }",
            "{ id = 2, address = \"127.0.0.1:9082\", role = \"Follower\", status = \"active\" }",
        ),
        "n.toml",
    )
    .unwrap();
    let m = c.members();
    assert_eq!(m[1].2, MemberRole::Voter);
    assert_eq!(m[2].2, MemberRole::Learner);
    assert_refused(
        &with(
            "{ id = 2, address = \"127.0.0.1:9082\", role = 1,",
            "{ id = 2, address = \"127.0.0.1:9082\", role = 0,",
        ),
        "cluster.initial_cluster[1].role",
        "cannot start as leader",
    );
    assert_refused(
        &with(
            "{ id = 2, address = \"127.0.0.1:9082\", role = 1,",
            "{ id = 2, address = \"127.0.0.1:9082\", role = 9,",
        ),
        "cluster.initial_cluster[1].role",
        "\"9\" is not a role",
    );
    assert_refused(
        &with(
            "\"127.0.0.1:9082\", role = 1, status = 2",
            "\"127.0.0.1:9082\", role = 1, status = 0",
        ),
        "cluster.initial_cluster[1].status",
        "a voter starts active",
    );
    assert_refused(
        &with(
            "\"127.0.0.1:9082\", role = 1, status = 2",
            "\"127.0.0.1:9082\", role = 1, status = \"asleep\"",
        ),
        "cluster.initial_cluster[1].status",
        "\"asleep\" is not a status",
    );
    let all_learners = BASE.replace("role = 1", "role = 3");
    assert_refused(&all_learners, "cluster.initial_cluster", "has no voter");
}

#[test]
fn timing_rules_protect_leases_and_elections() {
    assert_refused(
        &with(
            "election_timeout_max_ms = 2000",
            "election_timeout_max_ms = 1000",
        ),
        "raft.election_timeout_max_ms",
        "must exceed raft.election_timeout_min_ms (1000)",
    );
    assert_refused(
        &with("heartbeat_interval_ms = 100", "heartbeat_interval_ms = 105"),
        "raft.heartbeat_interval_ms",
        "multiple of raft.tick_interval_ms (10)",
    );
    // 5% drift: the lease must stay below 950 ms with a 1000 ms minimum election timeout.
    NodeConfig::parse(
        &with("lease_duration_ms = 500", "lease_duration_ms = 940"),
        "n.toml",
    )
    .unwrap();
    assert_refused(
        &with("lease_duration_ms = 500", "lease_duration_ms = 950"),
        "raft.read_consistency.lease_duration_ms",
        "950 ms must be shorter than raft.election_timeout_min_ms (1000) minus the clock drift bound",
    );
    assert_refused(
        &with("lease_duration_ms = 500", "lease_duration_ms = 150"),
        "raft.heartbeat_interval_ms",
        "at most half of raft.read_consistency.lease_duration_ms (150)",
    );
    assert_refused(
        &with(
            "heartbeat_interval_ms = 100",
            "heartbeat_interval_ms = 100\nclock_drift_ppm_max = 1000000",
        ),
        "raft.clock_drift_ppm_max",
        "below 1000000",
    );
    assert_refused(
        &with(
            "heartbeat_interval_ms = 100",
            "heartbeat_interval_ms = 100\nrequest_timeout_ms = 0",
        ),
        "raft.request_timeout_ms",
        "at least 1",
    );
    assert_refused(
        &format!("{BASE}\n[raft.replication]\nappend_entries_max = 0\n"),
        "raft.replication.append_entries_max",
        "at least 1",
    );
    assert_refused(
        &format!("{BASE}\n[raft.replication]\nbatch_delay_ms = 1001\n"),
        "raft.replication.batch_delay_ms",
        "at most 1000",
    );
    assert_refused(
        &format!(
            "{}\n[raft.replication]\nbatch_delay_ms = 500\n",
            with(
                "heartbeat_interval_ms = 100",
                "heartbeat_interval_ms = 100\nrequest_timeout_ms = 500"
            )
        ),
        "raft.replication.batch_delay_ms",
        "below raft.request_timeout_ms (500)",
    );
    let held = NodeConfig::parse(
        &format!("{BASE}\n[raft.replication]\nbatch_delay_ms = 20\n"),
        "n.toml",
    )
    .unwrap();
    assert_eq!(held.raft.replication.batch_delay_ms, 20);
}

#[test]
fn persistence_rules() {
    let mem = "strategy = \"MemFirst\"\nflush_policy = { Batch = { threshold = 100, interval_ms = 20 } }\nmax_buffered_entries = 10000\n";
    assert_refused(
        &with(mem, "strategy = \"MemFirst\"\n"),
        "raft.persistence.flush_policy",
        "MemFirst needs a flush policy",
    );
    // MemFirst-only keys under DiskFirst: accepted, without effect, each named in a
    // warning (and no warning for them under MemFirst, where they apply).
    let warned = |text: &str| -> Vec<String> {
        let c = NodeConfig::parse(text, "n.toml").unwrap();
        c.warnings().iter().map(|w| w.key.clone()).collect()
    };
    assert_eq!(warned(BASE), Vec::<String>::new());
    let only_policy = with(
        mem,
        "strategy = \"DiskFirst\"\nflush_policy = { Batch = { threshold = 100, interval_ms = 20 } }\n",
    );
    assert_eq!(warned(&only_policy), ["raft.persistence.flush_policy"]);
    let only_max = with(mem, "strategy = \"DiskFirst\"\nmax_buffered_entries = 5\n");
    assert_eq!(warned(&only_max), ["raft.persistence.max_buffered_entries"]);
    let c = NodeConfig::parse(&only_max, "n.toml").unwrap();
    assert!(c.wal_options().mem_first.is_none());
    assert_eq!(
        c.warnings()[0].reason,
        "applies only to strategy = \"MemFirst\" and is ignored under strategy = \"DiskFirst\""
    );
    assert_eq!(
        warned(&with("strategy = \"MemFirst\"", "strategy = \"DiskFirst\"")),
        [
            "raft.persistence.flush_policy",
            "raft.persistence.max_buffered_entries"
        ]
    );
    // Their values are still checked under DiskFirst.
    assert_refused(
        &with(mem, "strategy = \"DiskFirst\"\nmax_buffered_entries = 0\n"),
        "raft.persistence.max_buffered_entries",
        "must be at least 1",
    );
    assert_refused(
        &with(
            mem,
            "strategy = \"DiskFirst\"\nflush_policy = { Batch = { threshold = 0, interval_ms = 20 } }\n",
        ),
        "raft.persistence.flush_policy.Batch.threshold",
        "at least 1",
    );
    assert_refused(
        &with("threshold = 100", "threshold = 0"),
        "raft.persistence.flush_policy.Batch.threshold",
        "at least 1",
    );
    assert_refused(
        &with("interval_ms = 20", "interval_ms = 0"),
        "raft.persistence.flush_policy.Batch.interval_ms",
        "at least 1",
    );
    assert_refused(
        &with("max_buffered_entries = 10000", "max_buffered_entries = 50"),
        "raft.persistence.max_buffered_entries",
        "50 must be at least flush_policy.Batch.threshold (100)",
    );
    assert_refused(
        &with("flush_workers = 4", "flush_workers = 0"),
        "raft.persistence",
        "flush_workers = 0 must be between 1 and 64",
    );
    assert_refused(
        &with(
            "flush_workers = 4",
            "flush_workers = 4\nbatch_bytes_max = 5000",
        ),
        "raft.persistence",
        "batch_bytes_max = 5000 must be a multiple of 4096",
    );
    assert_refused(
        &with("strategy = \"MemFirst\"", "strategy = \"Sometimes\""),
        "raft.persistence.strategy",
        "unknown variant `Sometimes`",
    );
}

#[test]
fn size_limits_must_fit_the_wal_and_frames() {
    assert_refused(
        &format!("{BASE}\n[limits]\nvalue_bytes_max = 4194304\n"),
        "limits.value_bytes_max",
        "must fit one WAL batch",
    );
    assert_refused(
        &format!("{BASE}\n[limits]\nframe_bytes_max = 65536\n"),
        "limits.frame_bytes_max",
        "must hold the largest write",
    );
    assert_refused(
        &format!("{BASE}\n[limits]\nkey_bytes_max = 0\n"),
        "limits.key_bytes_max",
        "at least 1",
    );
    assert_refused(
        &format!("{BASE}\n[limits]\nconnections_max = 0\n"),
        "limits.connections_max",
        "at least 1",
    );
}

#[test]
fn snapshot_section_defaults_and_rules() {
    let c = NodeConfig::parse(BASE, "n.toml").unwrap();
    let s = &c.raft.snapshot;
    assert_eq!(
        (
            s.interval_entries,
            s.log_growth_percent_min,
            s.keep,
            s.chunk_bytes_max
        ),
        (100_000, 100, 2, 1 << 20)
    );
    let c = NodeConfig::parse(
        &format!(
            "{BASE}\n[raft.snapshot]\ninterval_entries = 0\nlog_growth_percent_min = 0\nkeep = 5\nchunk_bytes_max = 4096\n"
        ),
        "n.toml",
    )
    .unwrap();
    let s = &c.raft.snapshot;
    assert_eq!(
        (
            s.interval_entries,
            s.log_growth_percent_min,
            s.keep,
            s.chunk_bytes_max
        ),
        (0, 0, 5, 4096)
    );
    assert_refused(
        &format!("{BASE}\n[raft.snapshot]\nkeep = 0\n"),
        "raft.snapshot.keep",
        "must be at least 1",
    );
    assert_refused(
        &format!("{BASE}\n[raft.snapshot]\nchunk_bytes_max = 4095\n"),
        "raft.snapshot.chunk_bytes_max",
        "4095 must be between 4096 (4 KiB) and limits.frame_bytes_max (8388608) minus 4096: 8384512",
    );
    // The upper bound follows limits.frame_bytes_max.
    let frame = "\n[limits]\nframe_bytes_max = 8388608\n";
    NodeConfig::parse(
        &format!("{BASE}{frame}\n[raft.snapshot]\nchunk_bytes_max = 8384512\n"),
        "n.toml",
    )
    .unwrap();
    assert_refused(
        &format!("{BASE}{frame}\n[raft.snapshot]\nchunk_bytes_max = 8384513\n"),
        "raft.snapshot.chunk_bytes_max",
        "8384513 must be between",
    );
    assert_refused(
        &format!("{BASE}\n[raft.snapshot]\nkept = 3\n"),
        "raft.snapshot.kept",
        "unknown field `kept`",
    );
    assert_refused(
        &format!("{BASE}\n[raft.snapshot]\ninterval_entries = -1\n"),
        "raft.snapshot.interval_entries",
        "",
    );
}

#[test]
fn snapshots_kept_moved_to_raft_snapshot_keep() {
    for value in ["3", "\"three\""] {
        assert_refused(
            &with(
                "flush_workers = 4",
                &format!("flush_workers = 4\nsnapshots_kept = {value}"),
            ),
            "raft.persistence.snapshots_kept",
            "moved to raft.snapshot.keep",
        );
    }
}

#[test]
fn membership_section_defaults_and_parses() {
    let c = NodeConfig::parse(BASE, "n.toml").unwrap();
    assert_eq!(c.raft.membership.promote_lag_entries_max, 1000);
    let c = NodeConfig::parse(
        &format!("{BASE}\n[raft.membership]\npromote_lag_entries_max = 0\n"),
        "n.toml",
    )
    .unwrap();
    assert_eq!(c.raft.membership.promote_lag_entries_max, 0);
    assert_refused(
        &format!("{BASE}\n[raft.membership]\npromote_lag_max = 5\n"),
        "raft.membership.promote_lag_max",
        "unknown field",
    );
}

#[test]
fn joiners_and_founders() {
    let founders = |c: &NodeConfig| -> Vec<(u64, String)> {
        c.founders()
            .into_iter()
            .map(|(i, a)| (i, a.to_string()))
            .collect()
    };
    let three: Vec<(u64, String)> = (1..=3).map(|i| (i, format!("127.0.0.1:908{i}"))).collect();
    let c = NodeConfig::parse(BASE, "n.toml").unwrap();
    assert!(!c.is_joiner());
    assert_eq!(founders(&c), three);
    // Node 4 lists the founders and itself as a learner: it joins, and is no founder.
    let joiner = |role_status: &str| {
        with("node_id = 1", "node_id = 4")
            .replace("127.0.0.1:9081\"\n", "127.0.0.1:9084\"\n")
            .replace(
                "role = 1, status = 2 },\n]",
                &format!(
                    "role = 1, status = 2 }},\n    {{ id = 4, address = \"127.0.0.1:9084\", {role_status} }},\n]"
                ),
            )
    };
    for rs in [
        "role = 3, status = 0",
        "role = \"learner\", status = \"joining\"",
        "role = 3, status = 2",
    ] {
        let c = NodeConfig::parse(&joiner(rs), "n.toml").unwrap();
        assert_eq!(c.cluster.node_id, 4);
        assert!(c.is_joiner(), "{rs}");
        assert_eq!(founders(&c), three, "{rs}");
    }
    // A voter entry for itself: node 4 founds (with the others), it does not join.
    let c = NodeConfig::parse(&joiner("role = 1, status = 2"), "n.toml").unwrap();
    assert!(!c.is_joiner());
    assert_eq!(founders(&c).len(), 4);
    // Another node listed as a learner does not make this one a joiner.
    let c = NodeConfig::parse(
        &with(
            "{ id = 3, address = \"127.0.0.1:9083\", role = 1, status = 2 }",
            "{ id = 3, address = \"127.0.0.1:9083\", role = 3, status = 0 }",
        ),
        "n.toml",
    )
    .unwrap();
    assert!(!c.is_joiner());
    assert_eq!(founders(&c), three[..2]);
}

#[test]
fn runtime_rules() {
    // The raft core may have a CPU of its own (a dedicated executor) or share a shard's.
    // Whether this machine has the CPUs is for `serve` to say (tests/metrics.rs): a
    // config may be checked on another machine.
    for rt in [
        "cores = [1]\nraft_core = 0",
        "cores = [0, 1]\nraft_core = 1",
        "cores = [2, 3, 4, 5]\nraft_core = 999",
    ] {
        let c = NodeConfig::parse(&format!("{BASE}\n[runtime]\n{rt}\n"), "n.toml").unwrap();
        assert!(!c.runtime.cores.is_empty());
    }
    assert_refused(
        &format!("{BASE}\n[runtime]\ncores = [1, 1]\nraft_core = 1\n"),
        "runtime.cores",
        "lists a CPU twice",
    );
    assert_refused(
        &format!("{BASE}\n[runtime]\ncores = []\n"),
        "runtime.cores",
        "lists no CPU",
    );
}

#[test]
fn log_rotation_keys_default_and_must_be_positive() {
    let c = NodeConfig::parse(BASE, "n.toml").unwrap();
    let o = c.log_options("elsewhere".into());
    assert_eq!(o.dir, Some(std::path::PathBuf::from("elsewhere")));
    assert_eq!((o.file_bytes_max, o.files_kept), (64 << 20, 4));
    let at = "listen_address = \"127.0.0.1:9081\"\n";
    let set = |extra: &str| with(at, &format!("{at}{extra}\n"));
    let c = NodeConfig::parse(
        &set("log_file_bytes_max = 1000\nlog_files_kept = 2"),
        "n.toml",
    )
    .unwrap();
    assert_eq!(
        (c.cluster.log_file_bytes_max, c.cluster.log_files_kept),
        (1000, 2)
    );
    assert_refused(
        &set("log_file_bytes_max = 0"),
        "cluster.log_file_bytes_max",
        "must be at least 1",
    );
    assert_refused(
        &set("log_files_kept = 0"),
        "cluster.log_files_kept",
        "must be at least 1",
    );
    assert_refused(&set("log_files_kept = -1"), "cluster.log_files_kept", "");
    assert_refused(
        &set("log_file_max = 5"),
        "cluster.log_file_max",
        "unknown field",
    );
}

#[test]
fn cli_config_check_reports_and_honours_config_path() {
    let bin = env!("CARGO_BIN_EXE_ringkv");
    let dir = REPO;
    let out = std::process::Command::new(bin)
        .args(["config", "check"])
        .env("CONFIG_PATH", "config/n2") // the seed's form, without .toml
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid: node 2"));
    let bad = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-config.toml");
    std::fs::write(&bad, with("node_id = 1", "node_id = 9")).unwrap();
    let out = std::process::Command::new(bin)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-config.toml: cluster.node_id: 9 is not in cluster.initial_cluster"),
        "{err}"
    );
}

/// Random edits of a valid file never panic the parser or validator: each is accepted or
/// refused with a reason.
#[test]
fn mangled_files_are_refused_not_panicked_on() {
    let mut rng = ringkv_rng::Rng::new(3);
    let alphabet = b" =[]{}\"#.,\n0123456789abcdefxyz_-:";
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..5000 {
        let mut b = BASE.as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(b.len() as u64) as usize;
            match rng.below(3) {
                0 => b[at] = alphabet[rng.below(alphabet.len() as u64) as usize],
                1 => {
                    b.remove(at);
                }
                _ => b.insert(at, alphabet[rng.below(alphabet.len() as u64) as usize]),
            }
        }
        let text = String::from_utf8_lossy(&b);
        match NodeConfig::parse(&text, "n.toml") {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.reason.is_empty());
                refused += 1;
            }
        }
    }
    assert!(refused > 2500, "ok {ok} refused {refused}");
}

#[test]
fn testing_section_is_for_fault_campaign_builds_only() {
    let t = |body: &str| format!("{BASE}\n[testing]\n{body}\n");
    if !cfg!(feature = "crash-sim") {
        // A production build refuses every fault-injection setting, naming the section.
        for body in [
            "clock_rate_ppm = 1000",
            "sync_delay_us = 5",
            "peer_dial = { \"2\" = \"127.1.1.2:7000\" }",
            "controls = [\"ack_before_persist\"]",
        ] {
            assert_refused(&t(body), "testing", "crash-sim");
        }
        // An empty section changes nothing, so it is not refused.
        NodeConfig::parse(&t(""), "n.toml").unwrap();
        return;
    }
    let c = NodeConfig::parse(
        &t("clock_rate_ppm = -40000\nsync_delay_us = 2000\npeer_dial = { \"2\" = \"127.1.1.2:7000\" }"),
        "n.toml",
    )
    .unwrap();
    assert_eq!(c.testing.clock_rate_ppm, -40000);
    assert_eq!(
        c.testing.dial_overrides().get(&2).map(|a| a.to_string()),
        Some("127.1.1.2:7000".to_string())
    );
    assert_refused(
        &t("clock_rate_ppm = 600000"),
        "testing.clock_rate_ppm",
        "500000",
    );
    assert_refused(
        &t("sync_delay_us = 200000"),
        "testing.sync_delay_us",
        "100000",
    );
    assert_refused(
        &t("peer_dial = { \"1\" = \"127.1.1.2:7000\" }"),
        "testing.peer_dial",
        "another node",
    );
    assert_refused(
        &t("peer_dial = { \"9\" = \"127.1.1.2:7000\" }"),
        "testing.peer_dial",
        "another node",
    );
    assert_refused(
        &t("peer_dial = { \"2\" = \"nowhere\" }"),
        "testing.peer_dial",
        "ip:port",
    );
    assert_refused(
        &t("controls = [\"fast_mode\"]"),
        "testing.controls",
        "is not a control",
    );
    if !cfg!(feature = "negative-controls") {
        assert_refused(
            &t("controls = [\"ack_before_persist\"]"),
            "testing.controls",
            "negative-controls",
        );
        // The store's control too: its sequencer would refuse it at start-up.
        assert_refused(
            &t("controls = [\"sequencer_skips_revisions\"]"),
            "testing.controls",
            "negative-controls",
        );
    } else {
        let c = NodeConfig::parse(
            &t("controls = [\"sequencer_skips_revisions\", \"ack_before_persist\"]"),
            "n.toml",
        )
        .unwrap();
        assert!(c.testing.store_controls().sequencer_skips_revisions);
        assert!(c.testing.raft_controls().unwrap().ack_before_persist);
    }
}
