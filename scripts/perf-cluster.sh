#!/usr/bin/env bash
# Profiles ringkv nodes under load with samply (`make perf-cluster`, `make perf-nodeN`).
#
#   scripts/perf-cluster.sh 1 2 3   the three example nodes (config/n1..n3.toml), fresh data
#   scripts/perf-cluster.sh N       node N alone, into a cluster whose other nodes run already
#
# Each profiled node runs as `samply record --save-only -o samply_reports/N.profile.json
# -- ringkv serve --config config/nN.toml`. Once a leader is elected, `ringkv bench` drives
# load for PERF_SECONDS, then the nodes get SIGTERM (samply writes a profile when its node
# exits). On failure or Ctrl-C every node and samply started here is stopped.
#
# Environment (the Makefile sets these): BIN, SAMPLY, PERF_SECONDS, PERF_WORKLOAD,
# PERF_BENCH_ARGS, PERF_RATE (samples/s), OUT (the reports directory).
# PERF_CLIENT=etcd-benchmark drives the load with etcd's benchmark tool over gRPC instead
# (ETCD_BENCHMARK, built by `make need-etcd-benchmark`): PERF_BENCH_ARGS is then its
# command line after --endpoints, e.g. `--conns 100 --clients 1000 range k --consistency s
# --total 100000000`, and it is stopped after PERF_SECONDS.
set -euo pipefail

BIN=${BIN:-./target/release/ringkv}
SAMPLY=${SAMPLY:-samply}
PERF_SECONDS=${PERF_SECONDS:-20}
PERF_WORKLOAD=${PERF_WORKLOAD:-mixed}
PERF_BENCH_ARGS=${PERF_BENCH_ARGS:---read-ratio 0.5 --conns 8 --clients 64}
PERF_RATE=${PERF_RATE:-1000}
PERF_CLIENT=${PERF_CLIENT:-ringkv-bench}
ETCD_BENCHMARK=${ETCD_BENCHMARK:-./target/etcd-benchmark/benchmark}
OUT=${OUT:-samply_reports}
LEADER_WAIT_S=30   # for a leader after start-up
STOP_WAIT_S=20     # for a node to exit after SIGTERM (it aims at 3 s)
SAVE_WAIT_S=120    # for samply to write its profile after its node exited

die() { echo "perf: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: $0 NODE... (1 2 3 for the whole cluster)"
NODES=("$@")
for n in "${NODES[@]}"; do
  [[ $n =~ ^[1-3]$ ]] || die "node ids are 1..3, not '$n'"
done
WHOLE_CLUSTER=0
[ "${#NODES[@]}" -eq 3 ] && WHOLE_CLUSTER=1

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# --- Preconditions -------------------------------------------------------------------
[ -x "$BIN" ] || die "$BIN is missing (make build)"
command -v "$SAMPLY" >/dev/null || die "samply not found at '$SAMPLY' (cargo install samply --locked)"
command -v curl >/dev/null || die "curl is missing (make need-curl)"
case "$PERF_CLIENT" in
  ringkv-bench) ;;
  etcd-benchmark) [ -x "$ETCD_BENCHMARK" ] || die "$ETCD_BENCHMARK is missing (make need-etcd-benchmark)" ;;
  *) die "PERF_CLIENT is 'ringkv-bench' or 'etcd-benchmark', not '$PERF_CLIENT'" ;;
esac

# samply needs perf events: perf_event_paranoid at most 1 (it refuses 2, even as root).
paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)
if [ "$paranoid" -gt 1 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "perf: /proc/sys/kernel/perf_event_paranoid is $paranoid; setting it to 1 for samply"
    echo 1 > /proc/sys/kernel/perf_event_paranoid
  else
    die "/proc/sys/kernel/perf_event_paranoid is $paranoid; samply needs 1 or less. Run
  sudo sysctl kernel.perf_event_paranoid=1
and try again (it lasts until reboot)."
  fi
fi

# The example nodes must not run already (nor anything else on their ports).
for n in "${NODES[@]}"; do
  for port in "908$n" "808$n"; do
    if port_open "$port"; then
      die "port $port (node $n) is taken: is node $n running? Stop it first (make stop-node$n,
  or Ctrl-C in its terminal); ss -ltnp 'sport = :$port' shows who holds the port"
    fi
  done
done
if [ "$WHOLE_CLUSTER" -eq 0 ]; then
  up=() start=()
  for n in 1 2 3; do
    [[ " ${NODES[*]} " == *" $n "* ]] && continue
    start+=("make start-node$n")
    port_open "908$n" && up+=("$n")
  done
  [ "${#up[@]}" -ge 1 ] || die "node ${NODES[*]} needs the rest of the cluster running for a quorum:
  start the other nodes first, each in its own terminal: $(IFS=,; echo "${start[*]}" | sed 's/,/ and /g')"
fi

# --- Start -----------------------------------------------------------------------------
mkdir -p "$OUT"
if [ "$WHOLE_CLUSTER" -eq 1 ]; then
  echo "perf: fresh data: removing db/1..3 and logs/1..3"
  rm -rf db/1 db/2 db/3 logs/1 logs/2 logs/3
fi

declare -A SAMPLY_PID=()
BENCH_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$BENCH_PID" ]; then kill -TERM "$BENCH_PID" 2>/dev/null || true; fi
  if [ "${#SAMPLY_PID[@]}" -gt 0 ]; then
    echo "perf: stopping the nodes and samply started here" >&2
    stop_nodes || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "perf: interrupted" >&2; exit 130' INT TERM

# The node samply runs (its child); empty until it has started.
node_pid() { pgrep -P "${SAMPLY_PID[$1]}" -f "serve --config config/n$1\.toml" | head -1; }

# SIGTERM to each profiled node (a second one after STOP_WAIT_S ends it at once), then
# wait for samply to save; SIGKILL is the last resort and leaves no profile.
stop_nodes() {
  local n p i status
  for n in "${!SAMPLY_PID[@]}"; do
    p=$(node_pid "$n" || true)
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  for n in "${!SAMPLY_PID[@]}"; do
    for ((i = 0; i < STOP_WAIT_S * 10; i++)); do
      p=$(node_pid "$n" || true)
      [ -z "$p" ] && break
      sleep 0.1
    done
    if [ -n "$p" ]; then
      echo "perf: node $n still runs ${STOP_WAIT_S}s after SIGTERM; sending a second one" >&2
      kill -TERM "$p" 2>/dev/null || true
    fi
  done
  for n in "${!SAMPLY_PID[@]}"; do
    p=${SAMPLY_PID[$n]}
    for ((i = 0; i < SAVE_WAIT_S * 10; i++)); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then
      echo "perf: samply of node $n (pid $p) still runs after ${SAVE_WAIT_S}s; killing it" >&2
      pkill -KILL -P "$p" 2>/dev/null || true
      kill -KILL "$p" 2>/dev/null || true
    fi
    status=0
    wait "$p" 2>/dev/null || status=$?
    # samply exits with its command's status: the node exits 0 after SIGTERM.
    [ "$status" -eq 0 ] || echo "perf: node $n under samply exited with status $status (see $OUT/$n.out)" >&2
    unset "SAMPLY_PID[$n]"
  done
}

for n in "${NODES[@]}"; do
  rm -f "$OUT/$n.profile.json" "$OUT/$n.profile.syms.json"
  # samply's and the node's own output (the node also writes logs/N/d.log).
  LOG_DIR=logs/$n "$SAMPLY" record --save-only --unstable-presymbolicate --rate "$PERF_RATE" \
    -o "$OUT/$n.profile.json" -- "$BIN" serve --config "config/n$n.toml" \
    > "$OUT/$n.out" 2>&1 < /dev/null &
  SAMPLY_PID[$n]=$!
  echo "perf: node $n under samply (samply pid ${SAMPLY_PID[$n]}; output in $OUT/$n.out)"
done

# --- Wait for the profiled nodes to answer and for a leader --------------------------------
endpoints=()
leader=
for ((i = 0; i < LEADER_WAIT_S * 5; i++)); do
  for n in "${!SAMPLY_PID[@]}"; do
    kill -0 "${SAMPLY_PID[$n]}" 2>/dev/null ||
      die "node $n (or its samply) exited during start-up; see $OUT/$n.out and logs/$n/d.log"
  done
  leader= answering=0
  for n in 1 2 3; do
    s=$(curl -s --connect-timeout 1 --max-time 2 "http://127.0.0.1:908$n/status") || continue
    [[ " ${NODES[*]} " == *" $n "* ]] && answering=$((answering + 1))
    if grep -q '"role" *: *"leader"' <<< "$s"; then leader=$n; fi
  done
  [ -n "$leader" ] && [ "$answering" -eq "${#NODES[@]}" ] && break
  sleep 0.2
done
[ -n "$leader" ] && [ "$answering" -eq "${#NODES[@]}" ] ||
  die "no leader, or a profiled node not answering /status, within ${LEADER_WAIT_S}s; see $OUT/N.out and logs/N/d.log"
for n in 1 2 3; do port_open "908$n" && endpoints+=("127.0.0.1:908$n"); done
eps=$(IFS=,; echo "${endpoints[*]}")
# In the background so that a SIGTERM to this script is handled at once, not after the run.
if [ "$PERF_CLIENT" = etcd-benchmark ]; then
  echo "perf: node $leader leads; load for ${PERF_SECONDS}s: benchmark --endpoints $eps $PERF_BENCH_ARGS"
  # shellcheck disable=SC2086 # PERF_BENCH_ARGS is a list of options
  timeout --signal=INT "$PERF_SECONDS" "$ETCD_BENCHMARK" --endpoints "$eps" $PERF_BENCH_ARGS \
    > "$OUT/load.out" 2>&1 &
  BENCH_PID=$!
  status=0
  wait "$BENCH_PID" || status=$?
  # timeout's 124 is the expected end: the load ran for PERF_SECONDS.
  [ "$status" -eq 0 ] || [ "$status" -eq 124 ] || die "etcd's benchmark failed ($status); see $OUT/load.out"
else
  echo "perf: node $leader leads; load: ringkv bench $PERF_WORKLOAD $PERF_BENCH_ARGS --duration $PERF_SECONDS"
  # shellcheck disable=SC2086 # PERF_BENCH_ARGS is a list of options
  "$BIN" bench "$PERF_WORKLOAD" --endpoints "$eps" --duration "$PERF_SECONDS" $PERF_BENCH_ARGS &
  BENCH_PID=$!
  wait "$BENCH_PID" || die "ringkv bench failed"
fi
BENCH_PID=

# --- Stop and check ----------------------------------------------------------------------
echo "perf: stopping the profiled nodes (SIGTERM) and waiting for samply to save"
stop_nodes
missing=0
echo "perf: profiles:"
for n in "${NODES[@]}"; do
  f=$OUT/$n.profile.json
  if [ -s "$f" ]; then
    printf '  %-28s %8s bytes%s\n' "$f" "$(stat -c %s "$f")" \
      "$([ "$n" = "$leader" ] && echo "  (leader)")"
  else
    echo "  $f: missing or empty; see $OUT/$n.out" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ] || die "some profiles are missing"
show=${NODES[0]}
[[ " ${NODES[*]} " == *" $leader "* ]] && show=$leader
cat <<MSG
perf: node $leader led (logs/$leader/d.log: $(grep -h "Became leader" "logs/$leader/d.log" 2>/dev/null | tail -1 | sed 's/^.*Became leader/Became leader/'))
perf: view a profile in the Firefox Profiler with
        samply load $OUT/$show.profile.json
      (a local server gives the browser the symbols, from $OUT/$show.profile.syms.json),
      or load the file at https://profiler.firefox.com (addresses only, no symbols).
      Top functions by self time, without a browser:
        python3 scripts/profile_top.py $OUT/$show.profile.json --top 20
MSG
