#!/usr/bin/env bash
# Every ingest protocol through wormdb-loadgen, in one run, on this machine:
# the native ones (`POST /v1/entries` NDJSON, gRPC `WormIngest.Write`) and
# the shippers' ones of DESIGN.md section 11 (OTLP over gRPC and HTTP, Loki
# protobuf push, Elasticsearch bulk, syslog over TCP). Issue 18's goals are
# ratios taken in the same run: OTLP/gRPC >= 70 % of native gRPC's rate,
# Loki protobuf >= 70 % of NDJSON's, syslog TCP >= 1 M lines/s on 2 shards.
#
# Each round starts one release `wormdb serve` per protocol on a fresh data
# dir under SCRATCH (SHARDS shards, syslog TCP on), drives it closed-loop
# (`--rate max`) from CONNS connections with BATCH entries per request (3
# tags, LogHub bodies: https://github.com/logpai/loghub) for DURATION s after
# WARMUP s, and records:
#   entries/s     entries the node stored during the measured window (its
#                 /v1/stats `entries` summed over shards, before and after),
#                 so a protocol without acknowledgements (syslog) is counted
#                 by what reached the disk, like the others;
#   CPU-s/M       the server's own user + system CPU (/proc/PID/stat) over
#                 the window, per million entries stored.
# The order of the protocols rotates every round (the machine is shared and
# noisy); the table reports medians with min..max over ROUNDS.
#
# BIN and LOADGEN name the binaries (to compare two builds of the native
# path: PROTOCOLS=http BIN=.../wormdb).
#
# Usage: benches/ingest/protocols.sh                   # ROUNDS=3 DURATION=10
#        ROUNDS=1 DURATION=3 benches/ingest/protocols.sh   # smoke run
#        PROTOCOLS="http grpc otlp-grpc" benches/ingest/protocols.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-16}
BATCH=${BATCH:-1000}
SHARDS=${SHARDS:-2}
# Tags per entry and distinct values per tag (the loadgen's --tags): with the
# default 3:100 nearly every entry of a request is a stream of its own, the
# worst case for stream-grouped protocols (Loki); 3:4 is 64 streams.
TAGS=${TAGS:-3:100}
PROTOCOLS=${PROTOCOLS:-"http grpc otlp-grpc otlp-http loki es-bulk syslog-tcp"}
PAYLOAD=${PAYLOAD:-$repo/../shared/data/loghub/HDFS_2k.log}
LOADGEN=${LOADGEN:-$repo/target/release/wormdb-loadgen}
BIN=${BIN:-$repo/target/release/wormdb}
SCRATCH=${SCRATCH:-/tmp}
OUT_DIR=${OUT_DIR:-$repo/target/protocols/$(date -u +%Y%m%dT%H%M%SZ)}

[ -x "$BIN" ] && [ -x "$LOADGEN" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
[ -f "$PAYLOAD" ] || PAYLOAD=$repo/tests/data/loghub/HDFS_2k.log
mkdir -p "$OUT_DIR"
work=$(mktemp -d "$SCRATCH/wormdb-protocols.XXXXXX") || exit 1
results=$OUT_DIR/results.tsv
: > "$results"
hz=$(getconf CLK_TCK)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" | tail -1; }
stored() { curl -sf "$1/v1/stats" | python3 -c 'import json,sys; print(sum(s["entries"] for s in json.load(sys.stdin)["shards"]))'; }

# run PROTOCOL ROUND: one server, one loadgen run, one row of results.
run() {
  local protocol=$1 round=$2
  local http grpc syslog data log target
  http=$(free_port); grpc=$(free_port); syslog=$(free_port)
  data=$work/$protocol-$round; log=$OUT_DIR/$protocol-$round
  local extra=()
  [ "$protocol" = syslog-tcp ] && extra=(--syslog-tcp-addr "127.0.0.1:$syslog")
  "$BIN" serve --data-dir "$data" --shards "$SHARDS" --http-addr "127.0.0.1:$http" \
    --grpc-addr "127.0.0.1:$grpc" "${extra[@]}" > "$log.server" 2>&1 &
  server_pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$http/healthz" > /dev/null && break; sleep 0.05; done
  case $protocol in
    grpc | otlp-grpc) target=127.0.0.1:$grpc ;;
    syslog-tcp) target=127.0.0.1:$syslog ;;
    *) target=http://127.0.0.1:$http ;;
  esac
  # Warm up, then measure the window alone.
  if [ "$WARMUP" != 0 ]; then
    "$LOADGEN" --target "$target" --protocol "$protocol" --rate max --connections "$CONNS" --batch "$BATCH" --tags "$TAGS" \
      --payload-file "$PAYLOAD" --duration "${WARMUP}s" > "$log.warmup" 2>&1
  fi
  local before_entries before_cpu after_entries after_cpu
  before_entries=$(stored "http://127.0.0.1:$http"); before_cpu=$(cpu_ticks "$server_pid")
  local started ended
  started=$(date +%s.%N)
  "$LOADGEN" --target "$target" --protocol "$protocol" --rate max --connections "$CONNS" --batch "$BATCH" --tags "$TAGS" \
    --payload-file "$PAYLOAD" --duration "${DURATION}s" > "$log.loadgen" 2>&1
  # Syslog has no acknowledgements: wait until what was sent is stored.
  local last=-1 now
  for _ in $(seq 100); do
    now=$(stored "http://127.0.0.1:$http"); [ "$now" = "$last" ] && break; last=$now; sleep 0.2
  done
  ended=$(date +%s.%N)
  after_entries=$(stored "http://127.0.0.1:$http"); after_cpu=$(cpu_ticks "$server_pid")
  kill "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=""
  rm -rf "$data"
  python3 - "$protocol" "$round" "$before_entries" "$after_entries" "$before_cpu" "$after_cpu" "$hz" \
    "$DURATION" "$started" "$ended" >> "$results" <<'PY'
import sys
protocol, round_, e0, e1, c0, c1, hz, duration, started, ended = sys.argv[1:]
entries = int(e1) - int(e0)
cpu = (int(c1) - int(c0)) / int(hz)
# Rate over the loadgen's window; the drain after it (syslog) is at most a
# commit or two, and its entries belong to the window.
rate = entries / float(duration)
print(f"{protocol}\t{round_}\t{rate:.0f}\t{cpu / entries * 1e6 if entries else 0:.3f}")
PY
  tail -1 "$results" >&2
}

protocols=($PROTOCOLS)
for round in $(seq "$ROUNDS"); do
  n=${#protocols[@]}
  for i in $(seq 0 $((n - 1))); do
    run "${protocols[$(((i + round - 1) % n))]}" "$round"
  done
done

python3 - "$results" "$PROTOCOLS" <<'PY' | tee "$OUT_DIR/table.txt"
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]) if line.strip()]
order = sys.argv[2].split()
by = {}
for protocol, _round, rate, cpu in rows:
    by.setdefault(protocol, []).append((float(rate), float(cpu)))
def median(values): return statistics.median(values)
print(f"{'protocol':<12} {'entries/s (median, min..max)':>34} {'CPU-s/M':>9}  {'vs native':>9}")
native = {"otlp-grpc": "grpc", "otlp-http": "http", "loki": "http", "es-bulk": "http", "syslog-tcp": "http"}
for protocol in order:
    if protocol not in by: continue
    rates = [r for r, _ in by[protocol]]; cpus = [c for _, c in by[protocol]]
    base = native.get(protocol)
    ratio = f"{median(rates) / median([r for r, _ in by[base]]) * 100:.1f} %" if base in by else ""
    print(f"{protocol:<12} {median(rates):>14,.0f} ({min(rates):,.0f}..{max(rates):,.0f}) {median(cpus):>9.3f}  {ratio:>9}")
PY
