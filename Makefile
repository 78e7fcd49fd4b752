# ringkv developer commands. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help build test lint fmt bench-raft bench-wal soak-wal sim start-cluster stop-cluster clean clean-log-db start-node1 start-node2 start-node3 stop-node1 stop-node2 stop-node3
.PHONY: perf-cluster perf-node1 perf-node2 perf-node3 need-samply console-cluster
.PHONY: chaos need-iptables fuzz need-cargo-fuzz kill-leader need-curl bench-http bench-snapshot bench-etcd bench-memory bench need-etcd need-etcd-benchmark need-protoc compat join-node4 join-node5 stop-node4 stop-node5 test-long

# Extra cargo features of the `ringkv` binary, e.g. `CARGO_FEATURES=crash-sim` (power-cut WAL).
CARGO_FEATURES ?=
FEATURES_FLAG := $(if $(CARGO_FEATURES),--features $(CARGO_FEATURES))

# Seeds `make sim` runs by default; `make test` always runs TEST_SEEDS.
SEEDS ?= 2000
TEST_SEEDS := 2000
SIM := $(CARGO) run --quiet --release -p ringkv-sim --features negative-controls --bin ringkv-sim --

help:
	@echo "make start-cluster  build and run the three-node cluster (config/n1..n3.toml); Ctrl-C stops it"
	@echo "make start-nodeN    run node N (1..3) alone (it rejoins a running cluster); make stop-nodeN stops node N (1..5)"
	@echo "make join-node4     run node 4 (config/n4.toml), a learner joining the running cluster; likewise join-node5"
	@echo "make stop-cluster   SIGTERM nodes 1..5 started from this directory"
	@echo "make kill-leader    SIGKILL the node whose /status says leader (a failover drill; ports 9081..9085)"
	@echo "make perf-cluster   profile the three nodes with samply under PERF_SECONDS (20) of ringkv bench load,"
	@echo "                    fresh data: samply_reports/N.profile.json (view: samply load samply_reports/1.profile.json)"
	@echo "make perf-nodeN     profile node N (1..3) alone while the other two run (make start-node2, make start-node3"
	@echo "                    in two other terminals for perf-node1): samply_reports/N.profile.json"
	@echo "make console-cluster ringkv top on the three example nodes: roles, indexes, lag, rates, p99, executors' load"
	@echo "make test           fmt check, clippy -D warnings, all tests (and the crash-sim WAL and whole-cluster crash tests), 2000 simulator seeds"
	@echo "make test-long      the long membership test (RINGKV_LONG=1, release build)"
	@echo "make lint           fmt check and clippy only"
	@echo "make bench-raft     proposals/s through a 3-node in-memory cluster of the Raft core"
	@echo "make bench-wal      WAL appends/s and sync latency beside raw O_DIRECT+fdatasync"
	@echo "make bench-http     puts/s and latency over HTTP against a real 3-node cluster, 1 and 64 clients"
	@echo "make bench-etcd     ringkv and etcd side by side (QUICK=1 for the short suite); make bench: ringkv only"
	@echo "make bench-memory   resident memory per key, ringkv and etcd: MEMORY_KEYS (200000) keys x 1 and x 10 versions"
	@echo "make bench-snapshot snapshot of 100,000 keys: size, creation time, write pause, install time"
	@echo "make soak-wal       the WAL power-cut property test with WAL_SEEDS seeds (default 4000)"
	@echo "make chaos QUICK=1  fault campaign on real clusters: every nemesis once, then the negative controls (under 10 min)"
	@echo "make chaos DURATION=1h  the same with random nemeses for DURATION (soak; default 10m)"
	@echo "make chaos CONTROL=ack_before_persist  one negative control alone (or read_index_without_quorum, lease_ignores_drift, sequencer_skips_revisions)"
	@echo "make fuzz           coverage-guided fuzzing of frames, peer messages stepped into a core, HTTP, HTTP/2, WAL recovery, config (FUZZ_SECONDS per target, default 60)"
	@echo "make compat         the differential tester against etcd: COMPAT_SEEDS (50) x COMPAT_CALLS (1000) calls"
	@echo "make sim SEEDS=N    N seeds of the deterministic simulator, then every negative control"
	@echo "make sim SEED=S     replay one seed and print its trace (CONTROL=Name for a control run)"

build:
	$(CARGO) build --release -p ringkv $(FEATURES_FLAG)

lint: need-protoc
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

fmt:
	$(CARGO) fmt --all

# The etcd comparisons (tests/etcd_client.rs and the other etcd_* tests) need a real etcd
# and etcdctl.
test: lint need-etcd
	$(CARGO) test --workspace
	$(CARGO) test -p ringkv --features crash-sim --test wal --test node_crash --test config
	$(SIM) --seeds $(TEST_SEEDS)

bench-raft:
	$(CARGO) bench -p ringkv-raft --bench raft

bench-wal:
	$(CARGO) bench -p ringkv-server --bench wal

# Puts/s and latency percentiles over HTTP, 1 and 64 clients, DiskFirst then MemFirst
# (HTTP_BENCH_SECS per row, default 5).
bench-http:
	$(CARGO) bench -p ringkv --bench http

# ringkv (DiskFirst) and etcd side by side on this machine, median of 3 alternating runs,
# driven by etcd's own benchmark tool (put 1/1, 8/64, 100/1000; range-l and range-s 1/1
# and 100/1000; txn-put and lease-keepalive 100/1000; QUICK=1: the 100/1000 rows and put
# 1/1) and by `ringkv bench` (QUICK=1: put 1/1, put 100/1000, range-l and range-s
# 100/1000, txn-put, range-prefix-l and lease-put 100/1000). Installs etcd-server, and
# builds etcd's benchmark tool, when missing. Writes benches/reports/latest/summary.json
# and summary.md.
bench-etcd: need-etcd need-etcd-benchmark
	$(CARGO) build --release -p ringkv --features etcd
	python3 benches/suite.py $(if $(QUICK),--quick --name latest,--name full)

# etcd's own benchmark tool, built from Debian's etcd source package (no binary package
# has it): target/etcd-benchmark/benchmark.
need-etcd-benchmark:
	scripts/etcd-benchmark.sh

# Resident memory per key, ringkv and etcd side by side: MEMORY_KEYS keys (default
# 200,000) of 256 B into a fresh cluster of each, 1 version each then 10 (no compaction);
# the three servers' VmRSS after the load minus right after start, over the keys. Writes
# benches/reports/memory/memory.json and memory.md. Measure on a quiet machine.
MEMORY_KEYS ?= 200000
bench-memory: need-etcd
	$(CARGO) build --release -p ringkv --features etcd
	python3 benches/suite.py --memory --memory-keys $(MEMORY_KEYS) --name memory

# The ringkv half of the suite alone.
bench:
	$(CARGO) build --release -p ringkv
	python3 benches/suite.py --systems ringkv --no-etcd-benchmark $(if $(QUICK),--quick) --name ringkv-only

need-etcd:
	@{ command -v etcd && command -v etcdctl; } >/dev/null || { \
	  echo "installing etcd-server and etcd-client"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null; \
	}
	@command -v python3 >/dev/null || { \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null; \
	}

# The differential tester's long run: COMPAT_SEEDS sequences of COMPAT_CALLS etcd API
# calls each to a fresh etcd and a fresh three-node ringkv (release build), every answer
# compared; a difference is shrunk and printed, and the run fails.
COMPAT_SEEDS ?= 50
COMPAT_CALLS ?= 1000
COMPAT_FIRST_SEED ?= 1
compat: need-etcd need-protoc
	$(CARGO) build --release -p ringkv -p ringkv-compat
	target/release/ringkv-compat --bin target/release/ringkv --dir target/compat \
	  --seeds $(COMPAT_SEEDS) --calls $(COMPAT_CALLS) --first-seed $(COMPAT_FIRST_SEED)

# protoc: the etcd-client crate (a dev-dependency the etcd comparison tests use) compiles
# etcd's .proto files when it builds. ringkv itself declares its messages with prost.
need-protoc:
	@command -v protoc >/dev/null || { \
	  echo "installing protobuf-compiler"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null; \
	}

# Snapshot of 100,000 keys x 256 B on a real 3-node cluster: size, creation time, the write
# pause it causes, transfer and install on a follower (SNAPSHOT_KEYS to change the count).
bench-snapshot:
	$(CARGO) bench -p ringkv --bench snapshot

# The WAL power-cut property test with more seeds than `make test` runs (300).
WAL_SEEDS ?= 4000
soak-wal:
	WAL_SEEDS=$(WAL_SEEDS) $(CARGO) test --release -p ringkv --test wal random_operations -- --nocapture

# Learners joining, promotion, removal, leadership transfer and snapshots on a real
# cluster, at length (too long for `make test`).
test-long:
	RINGKV_LONG=1 $(CARGO) test --release -p ringkv --test membership -- --nocapture

sim:
ifneq ($(SEED),)
	$(SIM) --seed $(SEED) $(if $(CONTROL),--control $(CONTROL))
else
	$(SIM) --seeds $(SEEDS)
endif

BIN := ./target/release/ringkv

# The three-node example (config/n1..n3.toml): builds, then runs all three with prefixed
# output. Each node writes its own logs/N/d.log (LOG_DIR; rotated, see config/README.md)
# and the same lines on stderr. Data in db/N is kept between runs.
# Ctrl-C or SIGTERM stops all three; one node dying leaves the others running.
start-cluster: build need-curl
	@trap 'trap - INT TERM; kill 0' INT TERM; \
	for i in 1 2 3; do \
	  ( LOG_DIR=logs/$$i $(BIN) serve --config config/n$$i.toml 2>&1 | sed -u "s/^/[n$$i] /" ) & \
	done; \
	wait

# A live view of the running example cluster (ringkv top; Ctrl-C quits). `ringkv top --once`
# prints one table.
console-cluster: build
	$(BIN) top --endpoints 127.0.0.1:9081,127.0.0.1:9082,127.0.0.1:9083

start-node1 start-node2 start-node3: start-node%: build need-curl
	LOG_DIR=logs/$* $(BIN) serve --config config/n$*.toml

# Nodes 4 and 5 (config/n4.toml, n5.toml) list themselves as learners: started while the
# three-node cluster runs, they join it through the founders and replicate without voting
# until promoted (`curl -X POST http://localhost:9081/promote -d '{"node_id": 4}'` or
# `ringkv promote 4`).
join-node4 join-node5: join-node%: build need-curl
	LOG_DIR=logs/$* $(BIN) serve --config config/n$*.toml

# SIGTERM (a leader hands leadership over first) to `ringkv serve --config config/nN.toml`
# for N matching $(1), started from this directory: another checkout's nodes are left alone.
define stop-nodes
	@for p in $$(pgrep -f "^[^ ]*ringkv serve --config config/n$(1)\.toml"); do \
	  [ "$$(readlink /proc/$$p/cwd)" = "$(CURDIR)" ] || continue; \
	  cfg=$$(tr '\0' ' ' < /proc/$$p/cmdline 2>/dev/null | grep -o 'config/n[0-9]*\.toml'); \
	  kill $$p && echo "stopped the node of $$cfg (pid $$p)"; \
	done; true
endef

stop-node1 stop-node2 stop-node3 stop-node4 stop-node5: stop-node%:
	$(call stop-nodes,$*)

stop-cluster:
	$(call stop-nodes,[1-5])

# Asks 127.0.0.1:9081..9085 for /status; the node reporting role "leader" (the highest term
# if a stale one still does too) is killed with SIGKILL. Only a `ringkv serve --config
# config/nN.toml` started from this directory is killed, never one of another checkout.
kill-leader: need-curl
	@leader=; port=; best_term=-1; \
	for i in 1 2 3 4 5; do \
	  s=$$(curl -s --connect-timeout 1 --max-time 2 http://127.0.0.1:908$$i/status) || continue; \
	  echo "$$s" | grep -q '"role" *: *"leader"' || continue; \
	  term=$$(echo "$$s" | grep -o '"term" *: *[0-9]*' | grep -o '[0-9]*$$'); \
	  id=$$(echo "$$s" | grep -o '"node_id" *: *[0-9]*' | grep -o '[0-9]*$$'); \
	  if [ -n "$$id" ] && [ "$${term:-0}" -gt "$$best_term" ]; then \
	    leader=$$id; port=908$$i; best_term=$${term:-0}; \
	  fi; \
	done; \
	if [ -z "$$leader" ]; then \
	  echo "kill-leader: no node on 127.0.0.1:9081..9085 reports role leader" >&2; exit 1; \
	fi; \
	pid=; \
	for p in $$(pgrep -f "^[^ ]*ringkv serve --config config/n$$leader.toml"); do \
	  [ "$$(readlink /proc/$$p/cwd)" = "$(CURDIR)" ] && pid=$$p; \
	done; \
	if [ -z "$$pid" ]; then \
	  echo "kill-leader: the leader is node $$leader (127.0.0.1:$$port), but no" \
	    "'ringkv serve --config config/n$$leader.toml' runs from $(CURDIR)" >&2; exit 1; \
	fi; \
	kill -9 $$pid && echo "killed leader node $$leader (pid $$pid, 127.0.0.1:$$port)"

# Profiling with samply (https://github.com/mstange/samply): each profiled node runs under
# `samply record --save-only` while `ringkv bench` drives PERF_WORKLOAD for PERF_SECONDS,
# then gets SIGTERM; samply writes samply_reports/N.profile.json and, for viewing without
# the binary, the symbols beside it (N.profile.syms.json). The release profile keeps line
# tables (Cargo.toml: debug = "line-tables-only"), so the normal release build is the
# profiling build. perf_event_paranoid above 1 is lowered to 1 when run as root (samply
# refuses 2), otherwise the script stops and prints the sysctl to run. See scripts/perf-cluster.sh.
#   make perf-cluster: the three example nodes with fresh data (db/1..3 and logs/1..3 are
#     removed first); refused while anything listens on their ports.
#   make perf-nodeN: node N alone (its data in db/N kept), into a cluster whose other nodes
#     run already (make start-node2 and make start-node3 in two other terminals).
# Top functions by self time without a browser: python3 scripts/profile_top.py FILE.
PERF_SECONDS ?= 20
PERF_WORKLOAD ?= mixed
PERF_BENCH_ARGS ?= --read-ratio 0.5 --conns 8 --clients 64
PERF_RATE ?= 1000
# PERF_CLIENT=etcd-benchmark: etcd's benchmark tool makes the load over gRPC, PERF_BENCH_ARGS
# being its arguments, e.g. "--conns 100 --clients 1000 put --total 100000000".
PERF_CLIENT ?= ringkv-bench
# samply on PATH, else where `cargo install` puts it.
SAMPLY ?= $(or $(shell command -v samply 2>/dev/null),$(or $(CARGO_HOME),$(HOME)/.cargo)/bin/samply)
PERF_ENV = BIN=$(BIN) SAMPLY=$(SAMPLY) PERF_SECONDS=$(PERF_SECONDS) PERF_WORKLOAD=$(PERF_WORKLOAD) \
	PERF_BENCH_ARGS="$(PERF_BENCH_ARGS)" PERF_RATE=$(PERF_RATE) PERF_CLIENT=$(PERF_CLIENT) OUT=samply_reports
PERF_NEEDS = build need-curl need-samply $(if $(filter etcd-benchmark,$(PERF_CLIENT)),need-etcd-benchmark)

perf-cluster: $(PERF_NEEDS)
	$(PERF_ENV) scripts/perf-cluster.sh 1 2 3

perf-node1 perf-node2 perf-node3: perf-node%: $(PERF_NEEDS)
	$(PERF_ENV) scripts/perf-cluster.sh $*

need-samply:
	@command -v "$(SAMPLY)" >/dev/null || { \
	  echo "installing samply: cargo install samply --locked (about 4.5 min)"; \
	  $(CARGO) install samply --locked; \
	}

# Any tool a target needs is installed when missing (apt-get, non-interactive).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# The fault campaign: real nodes built with crash-sim (kill -9 = power cut) and the
# negative controls, in a private network namespace (its iptables rules touch nothing
# else). The binaries are copied out, so a build meanwhile cannot swap them mid-run;
# the next plain `make build` relinks target/release/ringkv without the features.
CHAOS_DIR ?= target/chaos
chaos: need-iptables
	$(CARGO) build --release -p ringkv -p ringkv-chaos --features ringkv/crash-sim,ringkv/negative-controls
	mkdir -p $(CHAOS_DIR)
	cp target/release/ringkv $(CHAOS_DIR)/ringkv-crash-sim
	cp target/release/ringkv-chaos $(CHAOS_DIR)/ringkv-chaos
	$(SUDO) unshare --net $(CHAOS_DIR)/ringkv-chaos --bin $(CHAOS_DIR)/ringkv-crash-sim --dir $(CHAOS_DIR)/run \
	  $(if $(QUICK),--quick,--duration $(or $(DURATION),10m)) $(if $(SEED),--seed $(SEED)) \
	  $(if $(CONTROL),--control $(CONTROL))

# Coverage-guided fuzzing (cargo fuzz: libFuzzer with AddressSanitizer, nightly
# toolchain) of the frame decoders, the HTTP parser, the HTTP/2 server, WAL recovery and
# config parsing;
# FUZZ_SECONDS per target. Crashes land in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= frame peer_message http http2 wal_recovery config
fuzz: need-cargo-fuzz
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  cargo +nightly fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -print_final_stats=1 || exit 1; \
	done

need-cargo-fuzz:
	@rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

need-iptables:
	@command -v iptables >/dev/null || { \
	  echo "installing iptables"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null; \
	}

need-curl:
	@command -v curl >/dev/null || { \
	  echo "installing curl"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; \
	}

clean-log-db:
	rm -rf logs db

clean:
	$(CARGO) clean
	rm -rf logs db samply_reports
