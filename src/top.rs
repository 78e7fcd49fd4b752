//! `ringkv top`: a live view of a cluster, one line per node, refreshed every second
//! (`--once`: one table, no screen control).
//!
//! Runs on the main thread of a short-lived `ringkv` process with blocking HTTP
//! (`client::exchange`): each refresh reads every endpoint's `/status`, and rates come from
//! the difference with the previous refresh. Not used by the server; must not touch node
//! internals or files, only the sockets it opens.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{self, ExchangeError};

/// What one endpoint said at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    /// The node's `/status`, or why it could not be read.
    pub status: Result<Value, String>,
}

/// Reads `/status` of every endpoint (in order).
pub fn sample(endpoints: &[String], timeout: Duration) -> Vec<Sample> {
    endpoints
        .iter()
        .map(|e| {
            let status = match client::exchange(e, "GET", "/status", &[], b"", timeout) {
                Ok(r) if r.status == 200 => {
                    serde_json::from_str(&r.body).map_err(|e| format!("bad status JSON: {e}"))
                }
                Ok(r) => Err(format!("answered {}", r.status)),
                Err(ExchangeError::NotSent(m) | ExchangeError::AfterSend(m)) => Err(m),
            };
            Sample {
                at: Instant::now(),
                status,
            }
        })
        .collect()
}

/// Per-second rate of `field` (a path into the status JSON) between two samples.
fn rate(prev: Option<&Sample>, cur: &Sample, field: &[&str]) -> Option<f64> {
    let get = |s: &Sample| -> Option<f64> {
        let mut v = s.status.as_ref().ok()?;
        for f in field {
            v = v.get(*f)?;
        }
        v.as_f64()
    };
    let p = prev?;
    let secs = cur.at.checked_duration_since(p.at)?.as_secs_f64();
    let (a, b) = (get(p)?, get(cur)?);
    (secs > 0.0 && b >= a).then(|| (b - a) / secs)
}

fn num(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::Null => "-".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The table for `cur` (rates against `prev` when given, same endpoints in the same order).
/// Follower lag is the leader's view: entries the leader has that the node has not matched.
pub fn render(endpoints: &[String], prev: Option<&[Sample]>, cur: &[Sample]) -> String {
    // The leader's members list, for each node's replication lag.
    let leader_view: Option<&Value> = cur
        .iter()
        .filter_map(|s| s.status.as_ref().ok())
        .find(|v| v["role"] == "leader");
    let lag_of = |id: &Value| -> String {
        leader_view
            .and_then(|l| l["members"].as_array())
            .and_then(|ms| ms.iter().find(|m| m["id"] == *id))
            .map(|m| num(m, "lag"))
            .unwrap_or_else(|| "-".into())
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<21} {:<9} {:>5} {:>6} {:>10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "NODE",
        "ENDPOINT",
        "ROLE",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "LAST",
        "LAG",
        "COMMITS/S",
        "FSYNCS/S",
        "ENTRIES/S"
    );
    let fmt_rate = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.0}"));
    for (i, (e, s)) in endpoints.iter().zip(cur).enumerate() {
        let p = prev.and_then(|p| p.get(i));
        match &s.status {
            Ok(v) => {
                let _ = writeln!(
                    out,
                    "{:<4} {:<21} {:<9} {:>5} {:>6} {:>10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10}",
                    num(v, "node_id"),
                    e,
                    num(v, "role"),
                    num(v, "term"),
                    num(v, "leader_id"),
                    num(v, "commit_index"),
                    num(v, "applied_index"),
                    num(v, "last_index"),
                    if v["role"] == "leader" {
                        "-".into()
                    } else {
                        lag_of(&v["node_id"])
                    },
                    fmt_rate(rate(p, s, &["commit_index"])),
                    fmt_rate(rate(p, s, &["wal", "fsyncs"])),
                    fmt_rate(rate(p, s, &["wal", "entries"])),
                );
            }
            Err(why) => {
                let _ = writeln!(out, "{:<4} {:<21} unreachable: {why}", "?", e);
            }
        }
    }
    let leaders: Vec<String> = cur
        .iter()
        .filter_map(|s| s.status.as_ref().ok())
        .filter(|v| v["role"] == "leader")
        .map(|v| format!("node {} (term {})", num(v, "node_id"), num(v, "term")))
        .collect();
    let _ = writeln!(
        out,
        "leader: {}",
        if leaders.is_empty() {
            "none known".to_string()
        } else {
            leaders.join(", ")
        }
    );
    out
}

/// `ringkv top`: refreshes every `every` until interrupted, or prints one table (`once`,
/// rates over one interval). Exit code 0, or 3 when no endpoint answered (`once`).
pub fn run(endpoints: &[String], every: Duration, once: bool, timeout: Duration) -> u8 {
    let mut prev = sample(endpoints, timeout);
    if once {
        std::thread::sleep(every);
        let cur = sample(endpoints, timeout);
        print!("{}", render(endpoints, Some(&prev), &cur));
        return if cur.iter().any(|s| s.status.is_ok()) {
            client::EXIT_OK
        } else {
            client::EXIT_NO_ANSWER
        };
    }
    loop {
        std::thread::sleep(every);
        let cur = sample(endpoints, timeout);
        // Home and clear, then the table: one screen, redrawn.
        print!(
            "\x1b[H\x1b[2Jringkv top: every {} ms, Ctrl-C to quit\n\n{}",
            every.as_millis(),
            render(endpoints, Some(&prev), &cur)
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        prev = cur;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: Instant, ms: u64, v: Value) -> Sample {
        Sample {
            at: s + Duration::from_millis(ms),
            status: Ok(v),
        }
    }

    #[test]
    fn table_shows_roles_lag_and_rates_and_names_unreachable_nodes() {
        let t = Instant::now();
        let eps = vec![
            "127.0.0.1:9081".to_string(),
            "127.0.0.1:9082".to_string(),
            "127.0.0.1:9083".to_string(),
        ];
        let leader = |commit: u64, fsyncs: u64| {
            serde_json::json!({"node_id": 1, "role": "leader", "term": 3, "leader_id": 1,
                "commit_index": commit, "applied_index": commit, "last_index": commit,
                "members": [{"id": 1, "lag": 0}, {"id": 2, "lag": 7}, {"id": 3, "lag": null}],
                "wal": {"fsyncs": fsyncs, "entries": commit}})
        };
        let follower = serde_json::json!({"node_id": 2, "role": "follower", "term": 3,
            "leader_id": 1, "commit_index": 93, "applied_index": 90, "last_index": 93,
            "wal": {"fsyncs": 5, "entries": 93}});
        let prev = vec![
            at(t, 0, leader(100, 10)),
            at(t, 0, follower.clone()),
            at(t, 0, serde_json::json!({})),
        ];
        let cur = vec![
            at(t, 500, leader(600, 60)),
            at(t, 500, follower),
            Sample {
                at: t + Duration::from_millis(500),
                status: Err("connection refused".into()),
            },
        ];
        let s = render(&eps, Some(&prev), &cur);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{s}");
        let l1: Vec<&str> = lines[1].split_whitespace().collect();
        // 500 commits and 50 fsyncs in half a second.
        assert_eq!(
            l1,
            [
                "1",
                "127.0.0.1:9081",
                "leader",
                "3",
                "1",
                "600",
                "600",
                "600",
                "-",
                "1000",
                "100",
                "1000"
            ],
            "{s}"
        );
        let l2: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(l2[2], "follower");
        assert_eq!(l2[8], "7", "the leader's view of node 2's lag: {s}");
        assert_eq!(&l2[9..], ["0", "0", "0"], "{s}");
        assert!(
            lines[3].starts_with("?    127.0.0.1:9083")
                && lines[3].ends_with(" unreachable: connection refused"),
            "{s}"
        );
        assert_eq!(lines[4], "leader: node 1 (term 3)");
        // Without a previous sample there are no rates.
        let first = render(&eps, None, &cur);
        let f1: Vec<&str> = first.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(&f1[9..], ["-", "-", "-"], "{first}");
    }
}
