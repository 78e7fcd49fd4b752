#!/usr/bin/env bash
# A 3-member etcd cluster on 127.0.0.1 for side-by-side benchmarks (default flags, fresh
# data directories under DIR, which must not be tmpfs: etcd fsyncs its WAL as ringkv does).
#   benches/etcd-cluster.sh start DIR   -> members on 127.0.0.1:12379/22379/32379
#   benches/etcd-cluster.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data directory}
case "$cmd" in
start)
  command -v etcd >/dev/null || { echo "etcd not installed (make bench-etcd installs etcd-server)" >&2; exit 1; }
  mkdir -p "$dir"
  fs=$(stat -f -c %T "$dir")
  [ "$fs" != "tmpfs" ] || { echo "$dir is on tmpfs: refusing (no fsync cost)" >&2; exit 1; }
  rm -rf "$dir"/e1 "$dir"/e2 "$dir"/e3
  cluster="e1=http://127.0.0.1:12380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380"
  for i in 1 2 3; do
    ETCD_UNSUPPORTED_ARCH= etcd --name e$i --data-dir "$dir/e$i" \
      --listen-client-urls http://127.0.0.1:${i}2379 --advertise-client-urls http://127.0.0.1:${i}2379 \
      --listen-peer-urls http://127.0.0.1:${i}2380 --initial-advertise-peer-urls http://127.0.0.1:${i}2380 \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token ringkv-bench \
      --log-level error > "$dir/e$i.log" 2>&1 &
    echo $! > "$dir/e$i.pid"
  done
  for i in $(seq 1 100); do
    ok=0
    for p in 12379 22379 32379; do curl -s -m 1 http://127.0.0.1:$p/health | grep -q '"health":"true"' && ok=$((ok+1)); done
    [ $ok = 3 ] && { echo "etcd: 3 members healthy"; exit 0; }
    sleep 0.2
  done
  echo "etcd did not become healthy; see $dir/e*.log" >&2; exit 1 ;;
stop)
  for i in 1 2 3; do
    [ -f "$dir/e$i.pid" ] && kill "$(cat "$dir/e$i.pid")" 2>/dev/null || true
  done
  sleep 0.5 ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
