//! etcdctl 3.4, unmodified, against ringkv and against a real etcd: the same commands
//! (put, get with its flags, del, txn from stdin, leases, compaction, member list,
//! endpoint status and health, also with `--cluster`) go to a three-node ringkv and a
//! three-member etcd, and their outputs must be equal once what differs by nature is
//! normalised: member and cluster ids, names, addresses, raft terms and indexes, lease
//! ids, database sizes, hashes and timings.
//!
//! Needs etcd and etcdctl installed (`make test` installs them through `need-etcd`).

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::{Cluster, Opts, loopback};
use ringkv_harness::etcd::{EtcdCluster, installed};

/// One etcdctl run: its exit code, its stdout and its stderr without the client's log
/// lines (JSON, with timestamps); `endpoint health` reports there, so do errors.
fn ctl(endpoints: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let (code, stdout, stderr) = common::etcdctl(endpoints, args, stdin);
    let error = stderr
        .lines()
        .filter(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    (code, stdout, error)
}

/// Replaces every match of `pattern` (a tiny matcher: `#` is a run of digits, `%` a run of
/// hex digits, `*` a run of anything up to the next literal byte) with `with`.
fn replace(s: &str, pattern: &str, with: &str) -> String {
    fn at(s: &[u8], p: &[u8]) -> Option<usize> {
        let (mut i, mut j) = (0, 0);
        while j < p.len() {
            match p[j] {
                b'#' | b'%' => {
                    let ok = |c: u8| {
                        if p[j] == b'#' {
                            c.is_ascii_digit()
                        } else {
                            c.is_ascii_hexdigit()
                        }
                    };
                    let start = i;
                    while i < s.len() && ok(s[i]) {
                        i += 1;
                    }
                    if i == start {
                        return None;
                    }
                }
                b'*' => {
                    let stop = p.get(j + 1).copied();
                    while i < s.len() && Some(s[i]) != stop && s[i] != b'\n' {
                        i += 1;
                    }
                }
                c => {
                    if s.get(i) != Some(&c) {
                        return None;
                    }
                    i += 1;
                }
            }
            j += 1;
        }
        Some(i)
    }
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        match at(&b[i..], pattern.as_bytes()) {
            Some(n) if n > 0 => {
                out.push_str(with);
                i += n;
            }
            _ => {
                let c = s[i..].chars().next().unwrap();
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// What differs between two clusters by nature, made equal.
fn normalise(s: &str, endpoints: &[SocketAddr], member_ids: &[String]) -> String {
    let mut s = s.to_string();
    for (i, a) in endpoints.iter().enumerate() {
        s = s.replace(&a.to_string(), &format!("<endpoint {i}>"));
    }
    // Member ids as etcdctl prints them (hex) at the start of a line or in a field.
    for id in member_ids {
        s = s.replace(&format!(", {id},"), ", <member>,");
    }
    // A member list line: id, status, name, peer URL, client URL, learner; the id, name
    // and peer URL are each cluster's own.
    s = s
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            if f.len() == 6 && member_ids.iter().any(|id| id == f[0]) {
                format!("<member>, {}, <name>, <peer>, {}, {}", f[1], f[4], f[5])
            } else if l.len() == 16 && l.bytes().all(|b| b.is_ascii_hexdigit()) {
                "<lease>".to_string() // `lease list`
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    for (p, w) in [
        ("\"cluster_id\":#", "\"cluster_id\":<id>"),
        ("\"member_id\":#", "\"member_id\":<id>"),
        ("\"raft_term\":#", "\"raft_term\":<term>"),
        ("\"ClusterID\" : #", "\"ClusterID\" : <id>"),
        ("\"MemberID\" : #", "\"MemberID\" : <id>"),
        ("\"RaftTerm\" : #", "\"RaftTerm\" : <term>"),
        ("took = *", "took = <time>"),
        ("lease %", "lease <lease>"),
        ("\"ID\":#", "\"ID\":<lease>"),
    ] {
        s = replace(&s, p, w);
    }
    s
}

/// The endpoint status line with the fields that differ by nature blanked: the size, the
/// term, the indexes and whether this member leads (which one does is each cluster's
/// own; how many do is counted apart).
fn status_line(l: &str) -> String {
    let f: Vec<&str> = l.split(", ").collect();
    if f.len() < 9 {
        return l.to_string();
    }
    format!(
        "{}, {}, {}, <size>, <leads>, {}, <term>, <index>, <index>, {}",
        f[0],
        f[1],
        f[2],
        f[5],
        f.get(9).unwrap_or(&"")
    )
}

/// Runs every command against one cluster; each result normalised.
fn record(endpoints: &[SocketAddr], member_ids: &[String]) -> Vec<String> {
    let all = endpoints
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    let one = endpoints[0].to_string();
    let mut out = Vec::new();
    let mut run = |what: &str, eps: &str, args: &[&str], stdin: &str| -> String {
        let (code, stdout, error) = ctl(eps, args, stdin);
        let line = format!(
            "{what}: exit {code}\n{}{}",
            normalise(&stdout, endpoints, member_ids),
            normalise(&error, endpoints, member_ids)
        );
        out.push(line);
        stdout
    };
    run("put a", &one, &["put", "a", "1"], "");
    run("put b prev", &one, &["put", "b", "2", "--prev-kv"], "");
    run("put a prev", &all, &["put", "a", "3", "--prev-kv"], "");
    for (k, v) in [("c", "4"), ("d/x", "5"), ("d/y", "6"), ("e", "7")] {
        run("put", &one, &["put", k, v], "");
    }
    run("get a", &one, &["get", "a"], "");
    run("get a json", &one, &["get", "a", "-w", "json"], "");
    run("get prefix d/", &one, &["get", "d/", "--prefix"], "");
    run("get from-key c", &one, &["get", "c", "--from-key"], "");
    run("get range [b, d/y)", &one, &["get", "b", "d/y"], "");
    run(
        "get limit",
        &one,
        &["get", "", "--from-key", "--limit=2", "-w", "json"],
        "",
    );
    run(
        "get sorted",
        &one,
        &[
            "get",
            "",
            "--from-key",
            "--sort-by=VALUE",
            "--order=DESCEND",
        ],
        "",
    );
    run(
        "get sort mod",
        &one,
        &[
            "get",
            "",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=ASCEND",
            "--keys-only",
        ],
        "",
    );
    run(
        "get keys-only",
        &one,
        &["get", "d/", "--prefix", "--keys-only"],
        "",
    );
    run(
        "get count-only",
        &one,
        &["get", "", "--prefix", "--count-only", "-w", "json"],
        "",
    );
    run(
        "get print-value-only",
        &one,
        &["get", "a", "--print-value-only"],
        "",
    );
    run("get rev 2", &one, &["get", "a", "--rev=2"], "");
    run(
        "get serializable",
        &all,
        &["get", "b", "--consistency=s"],
        "",
    );
    run("get fields", &one, &["get", "b", "-w", "fields"], "");
    run("get missing", &one, &["get", "nope"], "");
    run("get future", &one, &["get", "a", "--rev=999"], "");
    run("del c prev", &one, &["del", "c", "--prev-kv"], "");
    run("del prefix", &one, &["del", "d/", "--prefix"], "");
    run("del missing", &one, &["del", "zz"], "");
    run(
        "txn compare ok",
        &one,
        &["txn"],
        "value(\"a\") = \"3\"\n\nput a 10\nget b\n\nput a 11\n\n",
    );
    run(
        "txn compare fails",
        &one,
        &["txn", "-w", "json"],
        "mod(\"b\") > \"1000\"\n\nput b x\n\nget b\ndel e\n\n",
    );
    run(
        "txn version",
        &one,
        &["txn"],
        "version(\"nope\") = \"0\"\ncreate(\"a\") < \"5\"\n\nput n 1\n\n\n",
    );
    let lease = run("lease grant", &one, &["lease", "grant", "60"], "");
    let id = lease.split_whitespace().nth(1).unwrap_or("0").to_string();
    run(
        "put with lease",
        &one,
        &["put", "lk", "v", &format!("--lease={id}")],
        "",
    );
    run(
        "lease timetolive",
        &one,
        &["lease", "timetolive", &id, "--keys"],
        "",
    );
    run(
        "lease keep-alive",
        &one,
        &["lease", "keep-alive", "--once", &id],
        "",
    );
    run("lease list", &one, &["lease", "list"], "");
    run("lease revoke", &one, &["lease", "revoke", &id], "");
    run("get after revoke", &one, &["get", "lk"], "");
    run(
        "lease timetolive gone",
        &one,
        &["lease", "timetolive", &id],
        "",
    );
    run("compaction", &one, &["compaction", "5", "--physical"], "");
    run("get compacted", &one, &["get", "a", "--rev=3"], "");
    run("compaction again", &one, &["compaction", "4"], "");
    run("member list", &one, &["member", "list"], "");
    run("endpoint health", &all, &["endpoint", "health"], "");
    run(
        "endpoint health cluster",
        &one,
        &["endpoint", "health", "--cluster"],
        "",
    );
    out.into_iter()
        .map(|r| {
            // Lines of commands that answer per endpoint or member come in any order.
            if r.starts_with("endpoint") || r.starts_with("member list") {
                let mut lines: Vec<&str> = r.lines().collect();
                lines[1..].sort();
                lines.join("\n")
            } else {
                r
            }
        })
        .collect::<Vec<_>>()
        .into_iter()
        .chain([&all, &one].into_iter().enumerate().map(|(i, eps)| {
            let mut args = vec!["endpoint", "status"];
            if i == 1 {
                args.push("--cluster");
            }
            let (code, stdout, error) = ctl(eps, &args, "");
            let leaders = stdout.lines().filter(|l| l.contains(", true, ")).count();
            let mut lines: Vec<String> = normalise(&stdout, endpoints, member_ids)
                .lines()
                .map(status_line)
                .collect();
            lines.sort();
            lines.push(format!("members that lead: {leaders}"));
            format!(
                "endpoint status {i}: exit {code}\n{}\n{error}",
                lines.join("\n")
            )
        }))
        .collect()
}

/// Member ids as etcdctl prints them (hex), from `member list`.
fn member_ids(endpoint: &SocketAddr) -> Vec<String> {
    let (_, out, _) = ctl(&endpoint.to_string(), &["member", "list"], "");
    out.lines()
        .filter_map(|l| l.split(", ").next().map(str::to_string))
        .collect()
}

#[test]
fn etcdctl_sees_ringkv_as_it_sees_etcd() {
    assert!(
        installed(),
        "etcd is not installed: run `make test` (it installs etcd-server)"
    );
    let c = Cluster::new("etcdctl", Opts::default());
    c.leader();
    let ringkv: Vec<SocketAddr> = c.ports.iter().map(|p| loopback(*p)).collect();
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("etcdctl-{}", std::process::id()));
    let e = EtcdCluster::start(&dir, 3, common::free_port).unwrap_or_else(|e| panic!("{e}"));
    let theirs = record(&e.clients, &member_ids(&e.clients[0]));
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    let ours = record(&ringkv, &member_ids(&ringkv[0]));
    // The records mean something only if the commands did what they should.
    assert!(theirs[0].starts_with("put a: exit 0\nOK"), "{}", theirs[0]);
    assert!(
        theirs
            .iter()
            .any(|r| r.contains("required revision has been compacted"))
    );
    assert!(theirs.iter().any(|r| r.contains("is healthy")));
    common::assert_records_equal(&theirs, &ours, "commands");
    eprintln!("{} etcdctl commands, outputs equal", ours.len());
}
