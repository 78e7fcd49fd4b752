#!/usr/bin/env python3
"""Writes dashboards/ringkv.json, the Grafana dashboard for ringkv's metrics
(docs/metrics.md): overview, replication, WAL, and per-shard / raft-core load.

Run after changing a panel: python3 scripts/grafana_dashboard.py. A unit test in
crates/server/src/metrics.rs checks that every metric the dashboard queries is in its
catalogue.
"""
import json
import os

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def panel(title, exprs, unit="short", kind="timeseries", w=8, h=8, legend=True):
    return {
        "type": kind,
        "title": title,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"showLegend": legend, "displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [{"datasource": DS, "expr": e, "legendFormat": l, "refId": chr(65 + i)}
                    for i, (e, l) in enumerate(exprs)],
        "gridPos": {"w": w, "h": h},
    }


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1}, "panels": []}


I = '{instance=~"$instance"}'
SECTIONS = [
    ("Overview", [
        panel("Requests per second by operation and outcome",
              [(f'sum by (instance, op, outcome) (rate(ringkv_shard_requests_total{I}[1m]))',
                "{{instance}} {{op}} {{outcome}}")], "reqps"),
        panel("Request latency p99 by operation",
              [(f'histogram_quantile(0.99, sum by (instance, op, le) (rate(ringkv_shard_request_seconds_bucket{I}[1m])))',
                "{{instance}} {{op}}")], "s"),
        panel("Leader and term",
              [(f"ringkv_raft_leader_id{I}", "{{instance}} leader id"),
               (f"ringkv_raft_term{I}", "{{instance}} term")], "short", "stat"),
    ]),
    ("Replication", [
        panel("Commit index and apply lag",
              [(f"ringkv_raft_commit_index{I}", "{{instance}} commit"),
               (f"ringkv_raft_commit_index{I} - ringkv_raft_applied_index{I}", "{{instance}} commit - applied")]),
        panel("AppendEntries per second",
              [(f"rate(ringkv_raft_append_entries_sent_total{I}[1m])", "{{instance}} sent"),
               (f"rate(ringkv_raft_append_entries_received_total{I}[1m])", "{{instance}} received")], "ops"),
        panel("Entries per AppendEntries and per Ready (p50)",
              [(f'histogram_quantile(0.5, sum by (instance, le) (rate(ringkv_raft_entries_per_append_entries_bucket{I}[1m])))',
                "{{instance}} per AppendEntries"),
               (f'histogram_quantile(0.5, sum by (instance, le) (rate(ringkv_raft_entries_per_ready_bucket{I}[1m])))',
                "{{instance}} per Ready")]),
        panel("Elections and leader changes (per 5 min)",
              [(f"increase(ringkv_raft_elections_started_total{I}[5m])", "{{instance}} elections started"),
               (f"increase(ringkv_raft_elections_won_total{I}[5m])", "{{instance}} won"),
               (f"increase(ringkv_raft_leader_changes_total{I}[5m])", "{{instance}} leader changes")]),
        panel("Reads: ReadIndex rounds and lease reads per second",
              [(f"rate(ringkv_raft_read_index_rounds_total{I}[1m])", "{{instance}} ReadIndex rounds"),
               (f"rate(ringkv_raft_reads_per_read_index_round_sum{I}[1m])", "{{instance}} reads through rounds"),
               (f'sum by (instance) (rate(ringkv_raft_lease_reads_total{I}[1m]))', "{{instance}} lease reads")], "ops"),
        panel("Peer connections and reconnects",
              [(f'ringkv_net_connections_open{{instance=~"$instance", kind=~"peer_in|peer_out"}}',
                "{{instance}} {{kind}}"),
               (f"increase(ringkv_net_peer_reconnects_total{I}[5m])", "{{instance}} reconnects /5m"),
               (f"increase(ringkv_net_peer_connect_failures_total{I}[5m])", "{{instance}} connect failures /5m")]),
    ]),
    ("WAL", [
        panel("fsyncs per second",
              [(f"rate(ringkv_wal_fsyncs_total{I}[1m])", "{{instance}}")], "ops"),
        panel("fsync latency p50 / p99",
              [(f'histogram_quantile(0.5, sum by (instance, le) (rate(ringkv_wal_fsync_seconds_bucket{{instance=~"$instance", kind="batch"}}[1m])))',
                "{{instance}} p50"),
               (f'histogram_quantile(0.99, sum by (instance, le) (rate(ringkv_wal_fsync_seconds_bucket{{instance=~"$instance", kind="batch"}}[1m])))',
                "{{instance}} p99")], "s"),
        panel("Entries per fsync (mean) and bytes written per second",
              [(f"rate(ringkv_wal_entries_written_total{I}[1m]) / rate(ringkv_wal_batches_total{I}[1m])",
                "{{instance}} entries per fsync"),
               (f"rate(ringkv_wal_bytes_written_total{I}[1m])", "{{instance}} bytes/s")]),
        panel("Flush workers busy and MemFirst buffer",
              [(f"ringkv_wal_flush_workers_busy{I}", "{{instance}} workers busy"),
               (f"ringkv_wal_buffered_entries{I}", "{{instance}} buffered entries")]),
    ]),
    ("Load per shard and raft core", [
        panel("Executor busy fraction",
              [(f"rate(ringkv_executor_busy_microseconds_total{I}[1m]) / 1e6", "{{instance}} {{executor}}")],
              "percentunit"),
        panel("Requests in flight per shard",
              [(f"ringkv_shard_requests_in_flight{I}", "{{instance}} shard {{shard}}")]),
        panel("Raft core: events queued, writes and reads pending",
              [(f"ringkv_raft_events_queued{I}", "{{instance}} events queued"),
               (f"ringkv_raft_writes_pending{I}", "{{instance}} writes pending"),
               (f"ringkv_raft_reads_pending{I}", "{{instance}} reads pending")]),
        panel("Keys and state bytes per shard",
              [(f"ringkv_shard_keys{I}", "{{instance}} shard {{shard}} keys"),
               (f"ringkv_shard_state_bytes{I}", "{{instance}} shard {{shard}} bytes")]),
        panel("Client connections",
              [(f'ringkv_net_connections_open{{instance=~"$instance", kind=~"native|http"}}',
                "{{instance}} {{kind}}")]),
        panel("Network bytes per second",
              [(f'sum by (instance, kind) (rate(ringkv_net_bytes_received_total{I}[1m]))', "{{instance}} in {{kind}}"),
               (f'sum by (instance, kind) (rate(ringkv_net_bytes_sent_total{I}[1m]))', "{{instance}} out {{kind}}")], "Bps"),
        panel("Refused input (per 5 min)",
              [(f'sum by (instance, reason) (increase(ringkv_net_refused_total{I}[5m]))', "{{instance}} {{reason}}")]),
    ]),
]


def dashboard():
    panels, y, pid = [], 0, 1
    for title, ps in SECTIONS:
        r = row(title)
        r["id"] = pid
        r["gridPos"].update(x=0, y=y)
        panels.append(r)
        pid, y, x = pid + 1, y + 1, 0
        for p in ps:
            if x + p["gridPos"]["w"] > 24:
                x, y = 0, y + p["gridPos"]["h"]
            p["id"] = pid
            p["gridPos"].update(x=x, y=y)
            panels.append(p)
            pid, x = pid + 1, x + p["gridPos"]["w"]
        y += 8
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "title": "ringkv",
        "uid": "ringkv-overview",
        "tags": ["ringkv", "raft"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{
            "name": "instance", "label": "node", "type": "query", "datasource": DS,
            "query": "label_values(ringkv_raft_term, instance)", "refresh": 2,
            "includeAll": True, "multi": True, "current": {"text": "All", "value": "$__all"},
        }]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = os.path.join(ROOT, "dashboards", "ringkv.json")
    with open(out, "w") as f:
        json.dump(dashboard(), f, indent=2)
        f.write("\n")
    print(f"wrote {out}")
