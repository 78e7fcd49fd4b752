//! `ringkv_server::logging`: `d.log` rotates at its cap and keeps exactly `files_kept` old files,
//! lines are never split (not even between files, with many threads logging), a bad
//! `LOG_LEVEL` is refused, and `ringkv serve` writes `$LOG_DIR/d.log` itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringkv_server::logging::{self, RotatingFile};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("logging-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Self(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// File names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// A 100-byte line (with its newline) carrying `n`.
fn line(n: usize) -> String {
    let s = format!("line {n:05} ");
    format!("{s}{}\n", "x".repeat(99 - s.len()))
}

#[test]
fn rotation_happens_at_the_cap_and_keeps_exactly_n_files() {
    let t = TempDir::new("rotate");
    let dir = t.0.join("nested/logs/1");
    let f = RotatingFile::open(&dir, 1000, 3).unwrap();
    assert_eq!(names(&dir), ["d.log"], "created with its parents");

    // Ten 100-byte lines fill the cap exactly: no rotation yet.
    for n in 0..10 {
        f.append(line(n).as_bytes());
    }
    assert_eq!(names(&dir), ["d.log"]);
    assert_eq!(read(&dir, "d.log").len(), 1000);

    // The eleventh would pass it: d.log becomes d.log.1 whole, the line starts a new d.log.
    f.append(line(10).as_bytes());
    assert_eq!(names(&dir), ["d.log", "d.log.1"]);
    assert_eq!(read(&dir, "d.log.1"), (0..10).map(line).collect::<String>());
    assert_eq!(read(&dir, "d.log"), line(10));

    // Many more: d.log plus exactly three old files, newest in .1, oldest in .3.
    for n in 11..100 {
        f.append(line(n).as_bytes());
    }
    assert_eq!(names(&dir), ["d.log", "d.log.1", "d.log.2", "d.log.3"]);
    assert_eq!(read(&dir, "d.log"), (90..100).map(line).collect::<String>());
    assert_eq!(
        read(&dir, "d.log.1"),
        (80..90).map(line).collect::<String>()
    );
    assert_eq!(
        read(&dir, "d.log.3"),
        (60..70).map(line).collect::<String>()
    );
    drop(f);

    // A restart appends to d.log and counts what is already there.
    let f = RotatingFile::open(&dir, 1000, 3).unwrap();
    f.append(line(100).as_bytes());
    assert_eq!(
        read(&dir, "d.log.1"),
        (90..100).map(line).collect::<String>()
    );
    assert_eq!(read(&dir, "d.log"), line(100));

    // A line longer than the cap is kept whole, alone in its file.
    let long = format!("{}\n", "y".repeat(2500));
    f.append(long.as_bytes());
    f.append(line(101).as_bytes());
    assert_eq!(read(&dir, "d.log.1"), long);
    assert_eq!(read(&dir, "d.log"), line(101));
    assert_eq!(names(&dir), ["d.log", "d.log.1", "d.log.2", "d.log.3"]);
}

#[test]
fn lines_from_many_threads_are_whole_and_never_split_across_files() {
    use tracing_subscriber::layer::SubscriberExt;

    let t = TempDir::new("threads");
    let cap = 4000;
    let file = RotatingFile::open(&t.0, cap, 3).unwrap();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_target(false)
                .with_writer(file),
        ),
    );
    const THREADS: usize = 4;
    const EVENTS: usize = 400;
    let start = std::sync::Barrier::new(THREADS);
    std::thread::scope(|s| {
        for th in 0..THREADS {
            let d = dispatch.clone();
            let start = &start;
            s.spawn(move || {
                start.wait();
                tracing::dispatcher::with_default(&d, || {
                    for seq in 0..EVENTS {
                        let pad = "p".repeat(seq % 150);
                        tracing::warn!(th, seq, "m {pad} end");
                    }
                })
            });
        }
    });
    drop(dispatch);

    assert_eq!(names(&t.0), ["d.log", "d.log.1", "d.log.2", "d.log.3"]);
    // Oldest first, so each thread's lines appear in the order it logged them.
    let mut last: BTreeMap<usize, usize> = BTreeMap::new();
    for name in ["d.log.3", "d.log.2", "d.log.1", "d.log"] {
        let text = read(&t.0, name);
        assert!(text.len() as u64 <= cap, "{name}: {} bytes", text.len());
        assert!(text.ends_with('\n'), "{name} ends inside a line");
        assert!(!text.contains('\u{1b}'), "{name} has ANSI escapes");
        for l in text.lines() {
            // "<time>  WARN m ppp end th=T seq=S"
            let (msg, fields) = l
                .split_once(" WARN m ")
                .and_then(|(_, rest)| rest.split_once(" end "))
                .unwrap_or_else(|| panic!("{name}: mangled line {l:?}"));
            let num = |k: &str| -> usize {
                fields
                    .split(' ')
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap_or_else(|| panic!("{name}: no {k} in {l:?}"))
                    .parse()
                    .unwrap()
            };
            let (th, seq) = (num("th="), num("seq="));
            assert_eq!(msg, "p".repeat(seq % 150), "{name}: mangled line {l:?}");
            if let Some(prev) = last.insert(th, seq) {
                assert_eq!(seq, prev + 1, "thread {th}: a line is missing before {l:?}");
            }
        }
    }
    // Only whole old files were deleted, so the kept lines of every thread that still has
    // some run without a gap to its last one.
    assert!(!last.is_empty());
    assert!(last.values().all(|&s| s == EVENTS - 1), "{last:?}");
}

#[test]
fn an_invalid_log_level_is_an_error() {
    for ok in [
        None,
        Some(""),
        Some("debug"),
        Some("WARN"),
        Some("off"),
        Some("warn,ringkv_server::wal=debug"),
        Some("ringkv=trace"),
    ] {
        assert!(logging::filter(ok).is_ok(), "{ok:?} refused");
    }
    for (bad, says) in [
        ("dbug", "\"dbug\" is not a level"),
        ("info,verbose", "\"verbose\" is not a level"),
        ("ringkv=loud", "LOG_LEVEL=\"ringkv=loud\""),
    ] {
        let e = logging::filter(Some(bad)).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
        assert!(e.contains("use a level"), "{bad}: {e}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-node config in `dir` (its own port, data and a log_dir that LOG_DIR overrides).
fn one_node_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = free_port();
    let toml = format!(
        "[cluster]\nnode_id = 1\nlisten_address = \"127.0.0.1:{p}\"\n\
         initial_cluster = [{{ id = 1, address = \"127.0.0.1:{p}\", role = 1, status = 2 }}]\n\
         data_dir = \"{d}/db\"\nlog_dir = \"{d}/configured-logs\"\n\
         log_file_bytes_max = 100000\nlog_files_kept = 2\n\n\
         [raft.persistence]\nstrategy = \"DiskFirst\"\n",
        d = dir.display()
    );
    let path = dir.join("n1.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Reads `path` until it contains `needle` or `deadline` passes; returns what it read.
fn wait_for_line(path: &Path, needle: &str, deadline: Instant) -> String {
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `ringkv serve` with one environment setting that must make it exit 1 at once;
/// returns its stderr.
fn serve_refused(cfg: &Path, env: (&str, &str), log_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["serve", "--config"])
        .arg(cfg)
        .env(env.0, env.1)
        .env("LOG_DIR", log_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

#[test]
fn serve_refuses_a_bad_log_level_before_starting() {
    let t = TempDir::new("serve-bad-level");
    let cfg = one_node_config(&t.0);
    let err = serve_refused(&cfg, ("LOG_LEVEL", "verbose"), &t.0.join("logs"));
    assert!(err.contains("LOG_LEVEL=\"verbose\""), "{err}");
    assert!(!t.0.join("logs").exists() && !t.0.join("db").exists());
}

#[test]
fn serve_writes_d_log_in_log_dir_and_on_stderr() {
    let t = TempDir::new("serve-writes");
    let cfg = one_node_config(&t.0);
    let logs = t.0.join("env-logs/1");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("LOG_LEVEL")
        .env("LOG_DIR", &logs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = wait_for_line(&logs.join("d.log"), "ringkv node started", deadline);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("ringkv node started"),
        "d.log: {text:?}\nstderr: {err}"
    );
    assert!(text.contains(" WARN "), "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI in d.log: {text:?}");
    assert!(err.contains("ringkv node started"), "stderr: {err}");
    assert!(
        !t.0.join("configured-logs").exists(),
        "LOG_DIR overrides cluster.log_dir"
    );
}

/// MemFirst-only keys left in a DiskFirst file do not stop the node: its start-up log
/// names each as ignored, as `ringkv config check` does (tests/config.rs).
#[test]
fn serve_logs_a_warning_for_each_key_of_the_other_persistence_strategy() {
    let t = TempDir::new("serve-strategy-keys");
    let cfg = one_node_config(&t.0);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "flush_policy = { Batch = { threshold = 100, interval_ms = 20 } }\n\
         max_buffered_entries = 10000\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let logs = t.0.join("logs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("LOG_LEVEL")
        .env_remove("LOG_FORMAT")
        .env("LOG_DIR", &logs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = wait_for_line(&logs.join("d.log"), "ringkv node started", deadline);
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("ringkv node started"), "{text}");
    for key in ["flush_policy", "max_buffered_entries"] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("config: raft.persistence.{key}:")))
            .unwrap_or_else(|| panic!("no warning for {key}: {text}"));
        assert!(line.contains(" WARN "), "{line}");
        assert!(
            line.contains(
                "applies only to strategy = \"MemFirst\" and is ignored under \
                 strategy = \"DiskFirst\""
            ),
            "{line}"
        );
    }
}

#[test]
fn log_format_json_writes_one_object_per_line_naming_the_node() {
    let t = TempDir::new("serve-json");
    let cfg = one_node_config(&t.0);
    let logs = t.0.join("logs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("LOG_LEVEL")
        .env("LOG_FORMAT", "json")
        .env("LOG_DIR", &logs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A one-node cluster elects itself: the start-up lines (main thread) and the election
    // (raft core executor) both come from inside the node span.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = wait_for_line(&logs.join("d.log"), "Became leader", deadline);
    let _ = child.kill();
    let _ = child.wait();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |msg: &str| {
        lines
            .iter()
            .find(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(msg))
            })
            .unwrap_or_else(|| panic!("no {msg:?} line in {text}"))
    };
    for msg in [
        "ringkv serve starting",
        "ringkv node started",
        "Became leader",
    ] {
        let v = find(msg);
        assert_eq!(v["level"], "WARN", "{v}");
        assert_eq!(v["span"]["name"], "node", "{v}");
        assert_eq!(v["span"]["id"], 1, "{v}");
    }
    assert_eq!(find("Became leader")["fields"]["term"], 1);
}

#[test]
fn serve_refuses_an_unknown_log_format() {
    let t = TempDir::new("serve-bad-format");
    let cfg = one_node_config(&t.0);
    let err = serve_refused(&cfg, ("LOG_FORMAT", "xml"), &t.0.join("logs"));
    assert!(
        err.contains("LOG_FORMAT=\"xml\" is not a log format"),
        "{err}"
    );
    assert!(!t.0.join("db").exists(), "nothing started");
}

/// At debug level each call carries a `request` span (shard, id, operation) on its lines,
/// and never the key or value.
#[test]
fn debug_lines_of_a_call_carry_its_request_span() {
    let t = TempDir::new("serve-request-span");
    let cfg = one_node_config(&t.0);
    let text_cfg = std::fs::read_to_string(&cfg).unwrap();
    let addr = text_cfg
        .lines()
        .find_map(|l| l.strip_prefix("listen_address = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let logs = t.0.join("logs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("LOG_LEVEL", "warn,ringkv=debug")
        .env_remove("LOG_FORMAT")
        .env("LOG_DIR", &logs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = false;
    while !answered && Instant::now() < deadline {
        answered = ringkv_client::http1::exchange(
            &addr,
            "POST",
            "/put",
            &[],
            br#"{"key":"secret-key","value":"secret-value"}"#,
            Duration::from_secs(2),
        )
        .is_ok_and(|r| r.status == 200);
        if !answered {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(answered, "the node never took the put");
    let text = wait_for_line(&logs.join("d.log"), "answered status=200", deadline);
    let _ = child.kill();
    let _ = child.wait();
    let line = text
        .lines()
        .find(|l| l.contains("answered status=200"))
        .unwrap_or_else(|| panic!("no answered line: {text}"));
    assert!(
        line.contains("node{id=1}:request{shard=") && line.contains(" op=\"put\"}"),
        "{line}"
    );
    // The same span id on the call's first line.
    let span = &line[line.find("request{").unwrap()..line.find("}: answered").unwrap() + 1];
    assert!(
        text.lines()
            .any(|l| l.contains(span) && l.contains("carrying out")),
        "{span} not on the call's first line: {text}"
    );
    assert!(
        !text.contains("secret-"),
        "a key or value was logged: {text}"
    );
}
