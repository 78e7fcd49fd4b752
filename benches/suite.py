#!/usr/bin/env python3
"""ringkv against etcd, side by side on this machine (`make bench-etcd`, `make bench`).

Starts a fresh 3-member etcd (default flags) and a fresh 3-node ringkv (DiskFirst: a
majority fsyncs before the acknowledgement, as etcd) on 127.0.0.1, data directories of
both under target/bench-data (same filesystem, tmpfs refused), runs the suite with the
same clients on each system, alternating systems, three times: etcd's own benchmark
tool (tools/benchmark, built from Debian's etcd source by scripts/etcd-benchmark.sh;
rows with "client": "etcd-benchmark") and `ringkv bench` (closed loop; "client":
"ringkv-bench"); every reported figure is the median of the three, with the servers'
and the client's CPU seconds. Writes
benches/reports/<name>/summary.json and summary.md (and extras.json for non-default rows).
`--memory` (`make bench-memory`) measures resident memory per key instead, into
benches/reports/<name>/memory.json and memory.md.
"""
import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

import charts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ringkv")
DATA = os.path.join(ROOT, "target", "bench-data")
RINGKV = ["127.0.0.1:19081", "127.0.0.1:19082", "127.0.0.1:19083"]
ETCD = ["127.0.0.1:12379", "127.0.0.1:22379", "127.0.0.1:32379"]

# (workload label, bench args, conns, clients, total)
FULL = [
    ("put", ["put"], 1, 1, 10_000),
    ("put", ["put"], 8, 64, 100_000),
    ("put", ["put"], 100, 1000, 100_000),
    ("range-l", ["range", "--consistency", "l"], 1, 1, 10_000),
    ("range-l", ["range", "--consistency", "l"], 100, 1000, 100_000),
    ("range-s", ["range", "--consistency", "s"], 1, 1, 10_000),
    ("range-s", ["range", "--consistency", "s"], 100, 1000, 100_000),
    ("mixed-90", ["mixed", "--read-ratio", "0.9"], 100, 1000, 100_000),
    ("mixed-50", ["mixed", "--read-ratio", "0.5"], 100, 1000, 100_000),
    ("hot-key", ["mixed", "--read-ratio", "0.5", "--key-space", "10"], 100, 1000, 100_000),
    # The etcd data model (benches/README.md): Kubernetes' update txn, 100-key prefix
    # ranges, lease grant + put.
    ("txn-put", ["txn-put"], 1, 1, 10_000),
    ("txn-put", ["txn-put"], 100, 1000, 100_000),
    ("range-prefix-l", ["range-prefix", "--consistency", "l", "--key-space", "PREFIXES"], 100, 1000, 20_000),
    ("range-prefix-s", ["range-prefix", "--consistency", "s", "--key-space", "PREFIXES"], 100, 1000, 20_000),
    ("lease-put", ["lease-put"], 100, 1000, 50_000),
]
QUICK = [
    ("put", ["put"], 1, 1, 10_000),
    ("put", ["put"], 100, 1000, 100_000),
    ("range-l", ["range", "--consistency", "l"], 100, 1000, 100_000),
    ("range-s", ["range", "--consistency", "s"], 100, 1000, 100_000),
    ("txn-put", ["txn-put"], 100, 1000, 100_000),
    ("range-prefix-l", ["range-prefix", "--consistency", "l", "--key-space", "PREFIXES"], 100, 1000, 20_000),
    ("lease-put", ["lease-put"], 100, 1000, 50_000),
]
# ringkv only: reads etcd has no equivalent of (extras.json).
EXTRAS_LEASE = [
    ("range-lease", ["range", "--consistency", "lease"], 1, 1, 10_000),
    ("range-lease", ["range", "--consistency", "lease"], 100, 1000, 100_000),
]
KEY_SPACE = 10_000
# range-prefix: prefixes of 100 keys each (as many keys as KEY_SPACE), written once per
# system before the runs (`ringkv bench range-prefix --populate`).
PREFIXES = 100
# The rows of the main table are driven by ringkv's own client (`ringkv bench`: native
# protocol to ringkv, gRPC to etcd); the etcd-benchmark rows by etcd's own benchmark tool
# over gRPC on both systems (scripts/etcd-benchmark.sh builds it).
CLIENT = "ringkv-bench"
ETCD_BENCHMARK = os.path.join(ROOT, "target", "etcd-benchmark", "benchmark")
# (workload label, etcd benchmark args, conns, clients, total). Writes go to the leader
# (--target-leader) on both systems, as etcd's performance guide runs them; keys are
# random over KEY_SPACE; range rows read one key of 256 B.
ETCD_BENCH_FULL = [
    ("put", ["--target-leader", "put", "--key-size=8", "--val-size=256", "--key-space-size=KEY_SPACE"], 1, 1, 10_000),
    ("put", ["--target-leader", "put", "--key-size=8", "--val-size=256", "--key-space-size=KEY_SPACE"], 8, 64, 100_000),
    ("put", ["--target-leader", "put", "--key-size=8", "--val-size=256", "--key-space-size=KEY_SPACE"], 100, 1000, 100_000),
    ("range-l", ["range", "bench-range-key", "--consistency=l"], 1, 1, 10_000),
    ("range-l", ["range", "bench-range-key", "--consistency=l"], 100, 1000, 100_000),
    ("range-s", ["range", "bench-range-key", "--consistency=s"], 1, 1, 10_000),
    ("range-s", ["range", "bench-range-key", "--consistency=s"], 100, 1000, 100_000),
    ("txn-put", ["--target-leader", "txn-put", "--key-size=8", "--val-size=256", "--key-space-size=KEY_SPACE"], 100, 1000, 100_000),
    ("lease-keepalive", ["--target-leader", "lease-keepalive"], 100, 1000, 100_000),
]
ETCD_BENCH_QUICK = [r for r in ETCD_BENCH_FULL if (r[0], r[2]) not in {("put", 8), ("range-l", 1), ("range-s", 1)}]


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ringkv_configs(mem_first=False):
    d = os.path.join(DATA, "ringkv")
    subprocess.run(["rm", "-rf", d])
    os.makedirs(d)
    members = ", ".join(
        f'{{ id = {i}, address = "{a}", role = 1, status = 2 }}' for i, a in enumerate(RINGKV, 1)
    )
    persistence = ('strategy = "MemFirst"\nflush_policy = { Batch = { threshold = 100, interval_ms = 20 } }'
                   if mem_first else 'strategy = "DiskFirst"')
    for i, a in enumerate(RINGKV, 1):
        with open(os.path.join(d, f"n{i}.toml"), "w") as f:
            f.write(
                f"""[cluster]
node_id = {i}
listen_address = "{a}"
metrics_address = "127.0.0.1:1808{i}"
initial_cluster = [{members}]
data_dir = "{d}/db/{i}"
log_dir = "{d}/logs/{i}"

[raft]
election_timeout_min_ms = 1000
election_timeout_max_ms = 2000
heartbeat_interval_ms = 100

[raft.read_consistency]
default_policy = "LinearizableRead"
lease_duration_ms = 500

[raft.persistence]
{persistence}
flush_workers = 4

[raft.replication]
append_entries_max = 5000
batch_delay_ms = 0

[runtime]
# One CPU per node, nodes spread over the two (as config/n*.toml): see benches/README.md.
cores = [{(i - 1) % 2}]
raft_core = {(i - 1) % 2}
"""
            )
    return d


def start_ringkv(mem_first=False):
    d = ringkv_configs(mem_first)
    procs = []
    for i in range(1, 4):
        env = dict(os.environ, LOG_DIR=f"{d}/logs/{i}")
        procs.append(
            subprocess.Popen(
                [BIN, "serve", "--config", f"{d}/n{i}.toml"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    for _ in range(100):
        r = subprocess.run(
            [BIN, "status", "--endpoints", ",".join(RINGKV)], capture_output=True, text=True
        )
        if r.returncode == 0 and '"leader_id":null' not in r.stdout.replace(" ", ""):
            return procs
        time.sleep(0.2)
    for p in procs:
        p.kill()
        p.wait()
    sys.exit("ringkv did not elect a leader")


def start_etcd():
    sh([os.path.join(ROOT, "benches", "etcd-cluster.sh"), "start", os.path.join(DATA, "etcd")])
    pids = []
    for i in range(1, 4):
        with open(os.path.join(DATA, "etcd", f"e{i}.pid")) as f:
            pids.append(int(f.read()))
    return pids


def proc_usage(pid):
    """CPU seconds and peak RSS (MiB) of a server process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / tck
        with open(f"/proc/{pid}/status") as f:
            hwm = [l for l in f if l.startswith("VmHWM")]
        rss = int(hwm[0].split()[1]) / 1024 if hwm else 0.0
        return cpu, rss
    except OSError:
        return 0.0, 0.0


def http_get(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def disk_counters(system):
    """(WAL fsyncs, WAL entries) summed over the members: ringkv from /status, etcd from
    /metrics (its WAL fsync count, and committed proposals as the entries each member
    appends)."""
    fsyncs = entries = 0.0
    if system == "ringkv":
        for a in RINGKV:
            w = json.loads(http_get(f"http://{a}/status"))["wal"]
            fsyncs += w["fsyncs"]
            entries += w["entries"]
    else:
        for a in ETCD:
            for line in http_get(f"http://{a}/metrics").splitlines():
                if line.startswith("etcd_disk_wal_fsync_duration_seconds_count"):
                    fsyncs += float(line.split()[-1])
                elif line.startswith("etcd_server_proposals_committed_total"):
                    entries += float(line.split()[-1])
    return fsyncs, entries


def cpu_seconds(pids):
    return sum(proc_usage(p)[0] for p in pids)


def bench(system, args, conns, clients, total, extra=()):
    args = [str(PREFIXES) if a == "PREFIXES" else a for a in args]
    target = ["--target", "etcd", "--endpoints", ",".join(ETCD)] if system == "etcd" else [
        "--target", "native", "--endpoints", ",".join(RINGKV)]
    cmd = [BIN, "bench", *args, *target, "--conns", str(conns), "--clients", str(clients),
           "--total", str(total), "--key-space", str(KEY_SPACE), "--json", *extra]
    if "--key-space" in args:
        cmd = [BIN, "bench", *args, *target, "--conns", str(conns), "--clients", str(clients),
               "--total", str(total), "--json", *extra]
    cpu0 = child_cpu()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{system} {args}: {r.stderr}")
    out = json.loads(r.stdout)
    out["client_cpu_s"] = child_cpu() - cpu0
    return out


def child_cpu():
    """CPU seconds (user + system) of this script's reaped children so far: a client's
    own CPU time, read around its run (nothing else runs as a child meanwhile)."""
    import resource
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def etcd_benchmark(system, args, conns, clients, total):
    """One run of etcd's benchmark tool against `system`: its throughput, latency
    percentiles, errors and the tool's own CPU seconds (on two cores the Go client is a
    large share of the work)."""
    import re
    eps = ETCD if system == "etcd" else RINGKV
    args = [a.replace("KEY_SPACE", str(KEY_SPACE)) for a in args]
    cmd = [ETCD_BENCHMARK, f"--endpoints={','.join(eps)}", f"--conns={conns}",
           f"--clients={clients}", "--precise", *args, f"--total={total}"]
    cpu0 = child_cpu()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    client_cpu = child_cpu() - cpu0
    if p.returncode != 0:
        sys.exit(f"etcd benchmark on {system} {args}: exit {p.returncode}: {err[-2000:]}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    pct = {float(a): float(b) * 1000 for a, b in re.findall(r"([\d.]+)% in ([\d.]+) secs", out)}
    avg = re.search(r"Average:\s+([\d.]+) secs", out)
    errors = 0
    if "Error distribution:" in out:
        for n in re.findall(r"\[(\d+)\]\s", out.split("Error distribution:", 1)[1]):
            errors += int(n)
    if not rps:
        sys.exit(f"etcd benchmark on {system} {args}: no Requests/sec in its output:\n{out[-2000:]}")
    return {"ops_per_sec": float(rps.group(1)), "p50_ms": pct.get(50.0), "p90_ms": pct.get(90.0),
            "p99_ms": pct.get(99.0), "p999_ms": pct.get(99.9),
            "avg_ms": float(avg.group(1)) * 1000 if avg else None,
            "errors": errors, "requests": total, "client_cpu_s": client_cpu}


def medians(results):
    """One row per (system, workload, conns, clients): the median of each figure."""
    def med(rs, k, nd):
        v = [r[k] for r in rs if r.get(k) is not None]
        return round(statistics.median(v), nd) if v else None
    rows = []
    for key, rs in sorted(results.items()):
        s, label, conns, clients = key[:4]
        rows.append({
            "system": s, "workload": label, "conns": conns, "clients": clients,
            "client": key[4] if len(key) > 4 else CLIENT,
            "ops_per_sec": med(rs, "ops_per_sec", 1),
            "p50_ms": med(rs, "p50_ms", 3),
            "p99_ms": med(rs, "p99_ms", 3),
            "errors": sum(r["errors"] for r in rs),
            "p90_ms": med(rs, "p90_ms", 3),
            "p999_ms": med(rs, "p999_ms", 3),
            "avg_ms": med(rs, "avg_ms", 3),
            "server_cpu_s": med(rs, "server_cpu_s", 2),
            "client_cpu_s": med(rs, "client_cpu_s", 2),
            "requests_median": med(rs, "requests", 0),
            "fsyncs": med(rs, "fsyncs", 0),
            "entries_per_fsync": med(rs, "entries_per_fsync", 2),
        })
        if label == "txn-put":
            # Failed compares (the key changed since the revision compared): completed
            # ops, in ops_per_sec and the latencies, not errors; summed over the runs.
            done = sum(r["requests"] for r in rs)
            rows[-1]["conflicts"] = sum(r.get("conflicts", 0) for r in rs)
            rows[-1]["conflicts_per_op"] = round(rows[-1]["conflicts"] / done, 4) if done else None
    return rows


def per_fsync(r):
    return "-" if r.get("entries_per_fsync") is None else f"{r['entries_per_fsync']:.1f}"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def wait_exit(proc, secs=10):
    """Waits for a node sent SIGTERM (reaping it); kills it if it hangs."""
    try:
        proc.wait(timeout=secs)
    except subprocess.TimeoutExpired:
        print(f"node {proc.pid} did not stop within {secs} s: killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


def rss_kib(pids):
    """VmRSS, RssAnon and RssFile (KiB) of the server processes, summed."""
    total = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k = line.split(":", 1)[0]
                if k in total:
                    total[k] += int(line.split()[1])
    return total


def memory(o, systems):
    """Resident memory per key (`make bench-memory`): N keys of 256 B loaded into a fresh
    cluster with one version each, then 9 more versions each (no compaction), measured
    as the servers' summed VmRSS minus their VmRSS right after start, over N."""
    n = o.memory_keys
    settle = 3  # seconds after a load (and after start) before reading /proc
    results = []
    for s in systems:
        procs, pids = [], []
        if s == "ringkv":
            procs = start_ringkv()
            pids = [p.pid for p in procs]
        else:
            pids = start_etcd()
        try:
            time.sleep(settle)
            base = rss_kib(pids)
            phases = []
            for versions, total in [(1, n), (10, 9 * n)]:
                # Keys 0..N-1 in order over all clients: every key once per pass.
                r = bench(s, ["put", "--sequential-keys", "--key-space", str(n)], 8, 64, total)
                if r["errors"] or r["requests"] != total:
                    sys.exit(f"{s}: loading {total} puts: {r['requests']} done, "
                             f"errors {r['errors_by_kind']}")
                time.sleep(settle)
                now = rss_kib(pids)
                phases.append({
                    "versions": versions,
                    "rss_kib": now,
                    "bytes_per_key": round((now["VmRSS"] - base["VmRSS"]) * 1024 / n, 1),
                    "anon_bytes_per_key": round((now["RssAnon"] - base["RssAnon"]) * 1024 / n, 1),
                    "file_bytes_per_key": round((now["RssFile"] - base["RssFile"]) * 1024 / n, 1),
                    "load_ops_per_sec": round(r["ops_per_sec"], 1),
                })
                print(f"memory {s:6} {n} keys x {versions:>2} versions: "
                      f"{phases[-1]['bytes_per_key']:.0f} B/key resident "
                      f"(anon {phases[-1]['anon_bytes_per_key']:.0f}, "
                      f"file {phases[-1]['file_bytes_per_key']:.0f})", flush=True)
            results.append({"system": s, "client": CLIENT, "keys": n, "value_bytes": 256,
                            "rss_kib_after_start": base, "phases": phases})
        finally:
            if s == "etcd":
                subprocess.run([os.path.join(ROOT, "benches", "etcd-cluster.sh"), "stop",
                                os.path.join(DATA, "etcd")])
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                wait_exit(p)
    out = os.path.join(ROOT, "benches", "reports", o.name)
    os.makedirs(out, exist_ok=True)
    meta = {
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu": cpu_model()},
        "versions": {"ringkv": subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip(),
                     "etcd": (subprocess.run(["etcd", "--version"], capture_output=True, text=True)
                              .stdout.splitlines() or [None])[0] if "etcd" in systems else None},
        "figure": "(sum of the three servers' VmRSS after the load - the same right after "
                  "start) / keys; anon and file: the same for RssAnon and RssFile",
        "load": f"ringkv bench put --sequential-keys --key-space {n}, 8 conns / 64 clients: "
                f"{n} puts (1 version each), then {9 * n} more (10 versions each); no compaction",
        "ringkv_config": "DiskFirst, 3 nodes, as the suite (benches/suite.py)",
        "etcd_config": "etcd defaults, 3 members, benches/etcd-cluster.sh",
    }
    with open(os.path.join(out, "memory.json"), "w") as f:
        json.dump({"meta": meta, "rows": results}, f, indent=2)
    lines = ["| system | RSS after start (MiB, 3 servers) | bytes/key, 1 version | bytes/key, 10 versions | "
             "of which anon / file, 10 versions |",
             "|---|---|---|---|---|"]
    for r in results:
        one, ten = r["phases"]
        lines.append(f"| {r['system']} | {r['rss_kib_after_start']['VmRSS'] / 1024:.1f} | "
                     f"{one['bytes_per_key']:.0f} | {ten['bytes_per_key']:.0f} | "
                     f"{ten['anon_bytes_per_key']:.0f} / {ten['file_bytes_per_key']:.0f} |")
    with open(os.path.join(out, "memory.md"), "w") as f:
        f.write(f"# Resident memory per key: {n} keys of 256 B, 1 and 10 versions each\n\n")
        f.write("\n".join(lines) + "\n\n")
        f.write("Summed VmRSS of the three servers after the load, minus the same right after "
                "start, divided by the number of keys (so 10 versions is per key, not per "
                "version). A server's file-backed pages (etcd's bbolt mmap) count in VmRSS as "
                "RssFile.\n")
    print("\n".join(lines))
    print(f"wrote {out}/memory.json and memory.md")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--systems", default="ringkv,etcd")
    ap.add_argument("--name", default="latest")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--memory", action="store_true",
                    help="measure resident memory per key instead of the suite (memory.json/md)")
    ap.add_argument("--memory-keys", type=int, default=200_000)
    ap.add_argument("--no-etcd-benchmark", action="store_true",
                    help="leave out the rows driven by etcd's own benchmark tool")
    ap.add_argument("--only-etcd-benchmark", action="store_true",
                    help="only the rows driven by etcd's own benchmark tool (no ringkv-bench rows, no extras)")
    o = ap.parse_args()
    systems = o.systems.split(",")
    suite = [] if o.only_etcd_benchmark else (QUICK if o.quick else FULL)
    etcd_suite = [] if o.no_etcd_benchmark or o.memory else (ETCD_BENCH_QUICK if o.quick else ETCD_BENCH_FULL)
    if etcd_suite and not os.path.exists(ETCD_BENCHMARK):
        sh([os.path.join(ROOT, "scripts", "etcd-benchmark.sh")])
    os.makedirs(DATA, exist_ok=True)
    if subprocess.run(["stat", "-f", "-c", "%T", DATA], capture_output=True, text=True).stdout.strip() == "tmpfs":
        sys.exit(f"{DATA} is on tmpfs: refusing (no fsync cost)")
    if o.memory:
        memory(o, systems)
        return
    servers = {}
    ringkv_procs = []
    if "ringkv" in systems:
        ringkv_procs = start_ringkv()
        servers["ringkv"] = [p.pid for p in ringkv_procs]
    if "etcd" in systems:
        servers["etcd"] = start_etcd()
    results = {}
    extras = {}

    def measured(s, args, conns, clients, total, tool=CLIENT):
        """One bench run with the servers' CPU seconds and WAL work during it."""
        cpu0, (f0, e0) = cpu_seconds(servers[s]), disk_counters(s)
        if tool == "etcd-benchmark":
            r = etcd_benchmark(s, args, conns, clients, total)
        else:
            r = bench(s, args, conns, clients, total)
        # Past a MemFirst flush interval (20 ms): this row's last flush counts here.
        time.sleep(0.05)
        cpu1, (f1, e1) = cpu_seconds(servers[s]), disk_counters(s)
        r["server_cpu_s"] = cpu1 - cpu0
        r["fsyncs"] = f1 - f0
        r["entries_per_fsync"] = (e1 - e0) / (f1 - f0) if f1 > f0 else None
        return r

    try:
        # Keys the reads find: the same key space filled on both systems (and the
        # range-prefix rows' prefixes).
        for s in systems:
            bench(s, ["put", "--sequential-keys"], 8, 64, KEY_SPACE)
            if any(row[1][0] == "range-prefix" for row in suite):
                bench(s, ["range-prefix", "--populate", "--key-space", "PREFIXES"], 8, 64, 1)
            if etcd_suite:
                # The one key etcd's range rows read (etcdctl: any etcd v3 client works).
                eps = ETCD if s == "etcd" else RINGKV
                sh(["etcdctl", f"--endpoints={','.join(eps)}", "put", "bench-range-key", "v" * 256],
                   stdout=subprocess.DEVNULL)
        for run in range(o.runs):
            for row in suite:
                label, args, conns, clients, total = row
                order = systems if run % 2 == 0 else list(reversed(systems))
                for s in order:
                    r = measured(s, args, conns, clients, total)
                    results.setdefault((s, label, conns, clients), []).append(r)
                    conflicts = f" conflicts {r['conflicts']}" if r.get("conflicts") else ""
                    print(f"run {run + 1} {s:6} {label:8} {conns:>3}/{clients:<4} "
                          f"{r['ops_per_sec']:>9.0f} ops/s p50 {r['p50_ms']:.2f} ms "
                          f"p99 {r['p99_ms']:.2f} ms errors {r['errors']}{conflicts} "
                          f"fsyncs {r['fsyncs']:.0f}", flush=True)
                    if args[0] == "lease-put":
                        # Untimed, outside the row's counters: revoke the row's leases
                        # (and so their l/ keys) before the next row, rather than let
                        # them expire under it.
                        bench(s, ["lease-put", "--revoke-leases"], 8, 64, 1)
            for label, args, conns, clients, total in etcd_suite:
                order = systems if run % 2 == 0 else list(reversed(systems))
                for s in order:
                    r = measured(s, args, conns, clients, total, tool="etcd-benchmark")
                    results.setdefault((s, label, conns, clients, "etcd-benchmark"), []).append(r)
                    print(f"run {run + 1} {s:6} {label:15} {conns:>3}/{clients:<4} "
                          f"{r['ops_per_sec']:>9.0f} ops/s p50 {r['p50_ms']:.2f} ms "
                          f"p99 {r['p99_ms']:.2f} ms errors {r['errors']} "
                          f"client CPU {r['client_cpu_s']:.1f} s (etcd-benchmark)", flush=True)
            if "ringkv" in systems and not o.only_etcd_benchmark:
                # Extras (not compared): lease reads, which etcd does not have.
                for label, args, conns, clients, total in EXTRAS_LEASE:
                    r = measured("ringkv", args, conns, clients, total)
                    extras.setdefault(("ringkv", label, conns, clients), []).append(r)
                    print(f"run {run + 1} extra  {label:11} {conns:>3}/{clients:<4} "
                          f"{r['ops_per_sec']:>9.0f} ops/s p99 {r['p99_ms']:.2f} ms", flush=True)
        usage = {s: [proc_usage(p) for p in pids] for s, pids in servers.items()}
        if "ringkv" in systems and not o.quick and not o.only_etcd_benchmark:
            # MemFirst (acknowledged on a majority's memory, flushed in batches): a fresh
            # cluster, the put rows only.
            for p in ringkv_procs:
                p.send_signal(signal.SIGTERM)
            for p in ringkv_procs:
                wait_exit(p)
            ringkv_procs = start_ringkv(mem_first=True)
            servers["ringkv"] = [p.pid for p in ringkv_procs]
            for run in range(o.runs):
                for label, args, conns, clients, total in [r for r in suite if r[0] == "put"]:
                    r = measured("ringkv", args, conns, clients, total)
                    extras.setdefault(("ringkv", "put-memfirst", conns, clients), []).append(r)
                    print(f"run {run + 1} extra  put-memfirst {conns:>3}/{clients:<4} "
                          f"{r['ops_per_sec']:>9.0f} ops/s p99 {r['p99_ms']:.2f} ms", flush=True)
    finally:
        if "etcd" in systems:
            subprocess.run([os.path.join(ROOT, "benches", "etcd-cluster.sh"), "stop",
                            os.path.join(DATA, "etcd")])
        for p in ringkv_procs:
            p.send_signal(signal.SIGTERM)
        for p in ringkv_procs:
            wait_exit(p)
    rows = medians(results)
    extra_rows = medians(extras)
    out = os.path.join(ROOT, "benches", "reports", o.name)
    os.makedirs(out, exist_ok=True)
    etcd_version = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()[:1] if "etcd" in systems else []
    meta = {
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                    "cpu": cpu_model()},
        "versions": {"ringkv": subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip(),
                     "etcd": etcd_version[0] if etcd_version else None},
        "runs": o.runs, "figure": "median of the runs", "quick": o.quick,
        "ringkv_config": "DiskFirst, 3 nodes, one CPU each (nodes 1 and 3 on CPU 0, node 2 on "
                         "CPU 1), see benches/suite.py; extras: lease reads, MemFirst puts",
        "etcd_config": "etcd defaults, 3 members, benches/etcd-cluster.sh",
        "server_cpu_seconds_and_peak_rss_mib": {
            s: [{"cpu_s": round(c, 1), "peak_rss_mib": round(m, 1)} for c, m in u]
            for s, u in usage.items()},
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(out, "extras.json"), "w") as f:
        json.dump({"meta": meta, "rows": extra_rows}, f, indent=2)
    charts.write(out, [r for r in rows if r["client"] == CLIENT], systems)

    def table(client, rows_of_suite, title):
        by = {(r["system"], r["workload"], r["conns"], r["clients"]): r for r in rows if r["client"] == client}
        out_lines = [title, "",
                     "| workload | conns/clients | ringkv ops/s | etcd ops/s | ratio | ringkv p50 / p99 ms | "
                     "etcd p50 / p99 ms | server CPU s ringkv / etcd | server CPU per op ringkv / etcd | "
                     "client CPU s on ringkv / etcd |",
                     "|---|---|---|---|---|---|---|---|---|---|"]
        for label, conns, clients in rows_of_suite:
            a, b = by.get(("ringkv", label, conns, clients)), by.get(("etcd", label, conns, clients))
            if not a or not b:
                continue
            per_op = (a["server_cpu_s"] / a["requests_median"]) / (b["server_cpu_s"] / b["requests_median"]) \
                if a.get("requests_median") and b.get("requests_median") and b["server_cpu_s"] else None
            out_lines.append(
                f"| {label} | {conns}/{clients} | {a['ops_per_sec']:.0f} | {b['ops_per_sec']:.0f} | "
                f"{a['ops_per_sec'] / b['ops_per_sec']:.2f}x | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} | "
                f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {a['server_cpu_s']:.1f} / {b['server_cpu_s']:.1f} | "
                f"{'-' if per_op is None else f'{per_op:.2f}x'} | "
                f"{a['client_cpu_s'] or 0:.1f} / {b['client_cpu_s'] or 0:.1f} |")
        return out_lines

    lines = []
    if etcd_suite:
        lines += table("etcd-benchmark", [(r[0], r[2], r[3]) for r in etcd_suite],
                       "etcd's own benchmark tool (tools/benchmark of etcd 3.4.23) driving both systems "
                       "over gRPC:")
        lines += [""]
    lines += table(CLIENT, [(r[0], r[2], r[3]) for r in suite],
                   "ringkv bench driving both (ringkv's native protocol, etcd's gRPC API):")
    if len(systems) == 1:
        # One system alone (`make bench`): its rows, nothing to compare.
        by = {(r["system"], r["workload"], r["conns"], r["clients"]): r for r in rows if r["client"] == CLIENT}
        lines = ["| workload | conns/clients | ops/s | p50 / p99 ms | entries per fsync | server CPU s |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {r['workload']} | {r['conns']}/{r['clients']} | {r['ops_per_sec']:.0f} | "
                  f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {per_fsync(r)} | {r['server_cpu_s']:.1f} |"
                  for label, _, conns, clients, _ in suite
                  for r in [by.get((systems[0], label, conns, clients))] if r]
    if extra_rows:
        lines += ["", "Extras (ringkv only, not compared):", "",
                  "| workload | conns/clients | ops/s | p50 / p99 ms | entries per fsync |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['workload']} | {r['conns']}/{r['clients']} | {r['ops_per_sec']:.0f} | "
                  f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {per_fsync(r)} |" for r in extra_rows]
    conflict_lines = [
        f"txn-put {r['conns']}/{r['clients']} {r['system']}: {r['conflicts']} failed compares "
        f"over the {o.runs} runs ({100 * (r['conflicts_per_op'] or 0):.2f}% of the ops; counted "
        "as completed ops, not errors)"
        for r in rows if r["workload"] == "txn-put" and r["client"] == CLIENT]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(f"# ringkv vs etcd ({'quick' if o.quick else 'full'} suite, median of {o.runs} alternating runs)\n\n")
        f.write("\n".join(lines) + "\n")
        if conflict_lines:
            f.write("\n" + "\n".join(conflict_lines) + "\n")
        f.write("\nCharts: throughput.svg (ops/s against clients), latency.svg (p50/p90/p99/p99.9).\n")
    print("\n".join(lines + conflict_lines))
    print(f"wrote {out}/summary.json and summary.md")


if __name__ == "__main__":
    main()
