#!/usr/bin/env bash
# HTTP ingest benchmark: a release `wormdb serve` (2 shards by default) on an
# ext4 temp dir, wrk POSTing NDJSON batches of 1000 LogHub entries (3 tags,
# 256 B bodies), on the same machine. Prints entries/s from the node's own
# stats (entries acknowledged, so retention does not skew it), server
# CPU-seconds per million entries, peak RSS, and wrk's latency.
# Bounded: DURATION seconds per run. Usage:
#   benches/http/run.sh                 # saturation: 32 connections, 20 s
#   CONNS=8 DURATION=20 benches/http/run.sh
#   SERVE_ARGS="--retention-bytes 2147483648" DURATION=600 benches/http/run.sh   # long run, bounded disk
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
SHARDS=${SHARDS:-2}
CONNS=${CONNS:-32}
DURATION=${DURATION:-20}
THREADS=${THREADS:-1}
DURABILITY=${DURABILITY:-sync}
BIN=${BIN:-$repo/target/release/wormdb}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -x "$BIN" ] || (cd "$repo" && cargo build --release)
data=$(mktemp -d /tmp/wormdb-bench.XXXXXX)
payload=$data.payload.ndjson
python3 "$here/make_payload.py" 1000 256 > "$payload"
log=$data.log
"$BIN" serve --data-dir "$data" --http-addr 127.0.0.1:0 --shards "$SHARDS" --durability "$DURABILITY" ${SERVE_ARGS:-} 2> "$log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$payload" "$log"' EXIT
for _ in $(seq 1 100); do grep -q "http listening on" "$log" && break; sleep 0.1; done
addr=$(grep -o "http listening on [0-9.:]*" "$log" | head -1 | awk '{print $4}')
entries() { curl -s "http://$addr/v1/stats" | python3 -c 'import json,sys; print(sum(s["ingest_entries"] for s in json.load(sys.stdin)["shards"]))'; }
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
# Warm-up (segment creation, page faults), then the measured run.
PAYLOAD=$payload wrk -t"$THREADS" -c"$CONNS" -d3s -s "$here/ingest.lua" "http://$addr/v1/entries" > /dev/null
e0=$(entries); c0=$(cpu); t0=$(date +%s.%N)
PAYLOAD=$payload wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$here/ingest.lua" "http://$addr/v1/entries" | tee "$data.wrk"
e1=$(entries); c1=$(cpu); t1=$(date +%s.%N)
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
python3 - "$e0" "$e1" "$c0" "$c1" "$t0" "$t1" "$hz" "$rss_kib" <<'PY'
import sys
e0, e1, c0, c1 = map(int, sys.argv[1:5]); t0, t1 = map(float, sys.argv[5:7]); hz = int(sys.argv[7]); rss = int(sys.argv[8])
entries = e1 - e0; seconds = t1 - t0; cpu = (c1 - c0) / hz
print(f"stored {entries} entries in {seconds:.1f} s = {entries/seconds:,.0f} entries/s")
print(f"server CPU {cpu:.2f} s = {cpu / (entries/1e6):.3f} CPU-s per million entries")
print(f"server peak RSS (VmHWM) {rss/1024:.1f} MiB")
PY
echo "conditions: $(nproc) cores, shards=$SHARDS, conns=$CONNS, wrk threads=$THREADS, durability=$DURABILITY, data on $(df -T "$data" | awk 'NR==2 {print $2}')"
