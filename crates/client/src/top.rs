//! `ringkv top`: a live view of a cluster, one line per node, refreshed every second
//! (`--once`: one table, no screen control).
//!
//! Runs on the main thread of a short-lived `ringkv` process with blocking HTTP
//! (`http1::exchange`): each refresh reads every endpoint's `/status` and, when the node
//! serves metrics (`metrics_address` in its status), its `/metrics`; rates, the p99 of the
//! interval and executors' busy fractions come from the difference with the previous
//! refresh. Not used by the server; must not touch node
//! internals or files, only the sockets it opens.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client;
use crate::http1;

/// What one endpoint said at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    /// The node's `/status`, or why it could not be read.
    pub status: Result<Value, String>,
    /// Its `/metrics` (empty when it serves none or they could not be read): each sample
    /// as (name, labels, value).
    pub metrics: Vec<Metric>,
}

/// One Prometheus sample: name, labels in order, value.
pub type Metric = (String, Vec<(String, String)>, f64);

/// Parses Prometheus text (our own exporter's: label values hold no quotes or commas).
pub fn parse_metrics(text: &str) -> Vec<Metric> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.trim_end_matches('}');
                let labels = inner
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), Vec::new()),
        };
        out.push((name, labels, value));
    }
    out
}

fn label<'a>(m: &'a Metric, k: &str) -> Option<&'a str> {
    m.1.iter().find(|l| l.0 == k).map(|l| l.1.as_str())
}

/// Sum of every sample of `name`.
fn total(ms: &[Metric], name: &str) -> Option<f64> {
    let v: Vec<f64> = ms.iter().filter(|m| m.0 == name).map(|m| m.2).collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

/// The p99 request latency over the interval between two scrapes, from the request
/// histogram's buckets (all operations): the upper bound of the bucket holding it, in ms.
fn p99_ms(prev: &[Metric], cur: &[Metric]) -> Option<f64> {
    let buckets = |ms: &[Metric]| -> Vec<(f64, f64)> {
        let mut by_le: Vec<(f64, f64)> = Vec::new();
        for m in ms
            .iter()
            .filter(|m| m.0 == "ringkv_shard_request_seconds_bucket")
        {
            let le = match label(m, "le") {
                Some("+Inf") => f64::INFINITY,
                Some(x) => match x.parse::<f64>() {
                    Ok(v) => v,
                    Err(_) => continue,
                },
                None => continue,
            };
            match by_le.iter_mut().find(|b| b.0 == le) {
                Some(b) => b.1 += m.2,
                None => by_le.push((le, m.2)),
            }
        }
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_le
    };
    let (a, b) = (buckets(prev), buckets(cur));
    let delta: Vec<(f64, f64)> = b
        .iter()
        .map(|(le, n)| {
            let before = a.iter().find(|x| x.0 == *le).map_or(0.0, |x| x.1);
            (*le, n - before)
        })
        .collect();
    let count = delta.last()?.1;
    if count <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, n)| *n >= 0.99 * count)
        .map(|(le, _)| le * 1000.0)
}

/// Reads `/status` of every endpoint (in order).
pub fn sample(endpoints: &[String], timeout: Duration) -> Vec<Sample> {
    endpoints
        .iter()
        .map(|e| {
            let status = match http1::exchange(e, "GET", "/status", &[], b"", timeout) {
                Ok(r) if r.status == 200 => {
                    serde_json::from_str(&r.body).map_err(|e| format!("bad status JSON: {e}"))
                }
                Ok(r) => Err(format!("answered {}", r.status)),
                Err(e) => Err(e.message().to_string()),
            };
            let metrics = status
                .as_ref()
                .ok()
                .and_then(|v: &Value| v["metrics_address"].as_str())
                .and_then(|a| scrape(e, a, timeout))
                .unwrap_or_default();
            Sample {
                at: Instant::now(),
                status,
                metrics,
            }
        })
        .collect()
}

/// `/metrics` at `addr` (a wildcard host means the endpoint's host).
fn scrape(endpoint: &str, addr: &str, timeout: Duration) -> Option<Vec<Metric>> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = if matches!(host, "0.0.0.0" | "[::]" | "::") {
        endpoint.rsplit_once(':')?.0
    } else {
        host
    };
    let r = http1::exchange(
        &format!("{host}:{port}"),
        "GET",
        "/metrics",
        &[],
        b"",
        timeout,
    )
    .ok()?;
    (r.status == 200).then(|| parse_metrics(&r.body))
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

/// Per-second rate of the sum of metric `name` between two samples.
fn metric_rate(prev: Option<&Sample>, cur: &Sample, name: &str) -> Option<f64> {
    let p = prev?;
    let secs = cur.at.checked_duration_since(p.at)?.as_secs_f64();
    let (a, b) = (total(&p.metrics, name)?, total(&cur.metrics, name)?);
    (secs > 0.0 && b >= a).then(|| (b - a) / secs)
}

/// Whether two samples come from the same node (same id), so their counters compare.
fn same_node(a: &Sample, b: &Sample) -> bool {
    match (&a.status, &b.status) {
        (Ok(x), Ok(y)) => x["node_id"] == y["node_id"],
        _ => false,
    }
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
        "{:<4} {:<21} {:<9} {:>5} {:>6} {:>10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10} {:>9} {:>8}",
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
        "ENTRIES/S",
        "REQS/S",
        "P99_MS"
    );
    let fmt_rate = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.0}"));
    for (i, (e, s)) in endpoints.iter().zip(cur).enumerate() {
        let p = prev.and_then(|p| p.get(i));
        match &s.status {
            Ok(v) => {
                let _ = writeln!(
                    out,
                    "{:<4} {:<21} {:<9} {:>5} {:>6} {:>10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10} {:>9} {:>8}",
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
                    fmt_rate(metric_rate(p, s, "ringkv_shard_requests_total")),
                    p.and_then(|p| p99_ms(&p.metrics, &s.metrics))
                        .map_or("-".to_string(), |v| format!("{v:.1}")),
                );
            }
            Err(why) => {
                let _ = writeln!(out, "{:<4} {:<21} unreachable: {why}", "?", e);
            }
        }
    }
    // Per executor: busy fraction over the interval; queue depths from the gauges.
    for (e, s) in endpoints.iter().zip(cur) {
        let Some(p) = prev.and_then(|p| {
            p.iter()
                .find(|x| x.status.is_ok() && s.status.is_ok() && same_node(x, s))
        }) else {
            continue;
        };
        let secs = match s.at.checked_duration_since(p.at) {
            Some(d) if !d.is_zero() => d.as_secs_f64(),
            _ => continue,
        };
        let mut parts: Vec<(String, String)> = Vec::new();
        for m in s
            .metrics
            .iter()
            .filter(|m| m.0 == "ringkv_executor_busy_microseconds_total")
        {
            let Some(ex) = label(m, "executor") else {
                continue;
            };
            let before = p
                .metrics
                .iter()
                .find(|x| x.0 == m.0 && label(x, "executor") == Some(ex))
                .map_or(m.2, |x| x.2);
            parts.push((
                ex.to_string(),
                format!("{ex} {:.0}%", (m.2 - before) / (secs * 1e6) * 100.0),
            ));
        }
        if parts.is_empty() {
            continue;
        }
        // The raft core, the shards in order, then the rest.
        parts.sort_by_key(|(ex, _)| {
            let rank = match ex.as_str() {
                "raft" => 0,
                x if x.starts_with("shard") => 1,
                _ => 2,
            };
            (rank, ex.len(), ex.clone())
        });
        let parts: Vec<String> = parts.into_iter().map(|p| p.1).collect();
        let queued = total(&s.metrics, "ringkv_raft_events_queued").unwrap_or(0.0);
        let in_flight = total(&s.metrics, "ringkv_shard_requests_in_flight").unwrap_or(0.0);
        let _ = writeln!(
            out,
            "  {e} busy: {}; raft core queue {queued:.0}, requests in flight {in_flight:.0}",
            parts.join(", ")
        );
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
            metrics: Vec::new(),
        }
    }

    /// A scrape of the leader: `reqs` requests so far, `slow` of them over 10 ms, and the
    /// raft core busy for `busy_us`.
    fn scrape(reqs: u64, slow: u64, busy_us: u64) -> Vec<Metric> {
        let fast = reqs - slow;
        parse_metrics(&format!(
            "# TYPE ringkv_shard_requests_total counter\n\
             ringkv_shard_requests_total{{op=\"put\",outcome=\"ok\"}} {reqs}\n\
             ringkv_shard_request_seconds_bucket{{op=\"put\",le=\"0.001\"}} {fast}\n\
             ringkv_shard_request_seconds_bucket{{op=\"put\",le=\"0.01\"}} {fast}\n\
             ringkv_shard_request_seconds_bucket{{op=\"put\",le=\"0.025\"}} {reqs}\n\
             ringkv_shard_request_seconds_bucket{{op=\"put\",le=\"+Inf\"}} {reqs}\n\
             ringkv_executor_busy_microseconds_total{{executor=\"raft\"}} {busy_us}\n\
             ringkv_executor_busy_microseconds_total{{executor=\"shard0\"}} 0\n\
             ringkv_raft_events_queued 3\n\
             ringkv_shard_requests_in_flight{{shard=\"0\"}} 5\n\
             ringkv_shard_requests_in_flight{{shard=\"1\"}} 2\n"
        ))
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
        let mut prev = vec![
            at(t, 0, leader(100, 10)),
            at(t, 0, follower.clone()),
            at(t, 0, serde_json::json!({})),
        ];
        prev[0].metrics = scrape(1000, 0, 0);
        let mut cur = vec![
            at(t, 500, leader(600, 60)),
            at(t, 500, follower),
            Sample {
                at: t + Duration::from_millis(500),
                status: Err("connection refused".into()),
                metrics: Vec::new(),
            },
        ];
        // 1000 requests in the half second, 20 of them (2%) slower than 10 ms: the p99 is
        // in the 25 ms bucket. The raft core was busy 250 ms of the 500.
        cur[0].metrics = scrape(2000, 20, 250_000);
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
                "1000",
                "2000",
                "25.0"
            ],
            "{s}"
        );
        let l2: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(l2[2], "follower");
        assert_eq!(l2[8], "7", "the leader's view of node 2's lag: {s}");
        assert_eq!(&l2[9..], ["0", "0", "0", "-", "-"], "{s}");
        assert!(
            lines[3].starts_with("?    127.0.0.1:9083")
                && lines[3].ends_with(" unreachable: connection refused"),
            "{s}"
        );
        assert_eq!(
            lines[4],
            "  127.0.0.1:9081 busy: raft 50%, shard0 0%; raft core queue 3, requests in flight 7"
        );
        assert_eq!(lines[5], "leader: node 1 (term 3)");
        // Without a previous sample there are no rates.
        let first = render(&eps, None, &cur);
        let f1: Vec<&str> = first.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(&f1[9..], ["-", "-", "-", "-", "-"], "{first}");
    }
}
