#!/usr/bin/env bash
# Finding things in a large store, on this machine (issue 19): a release
# `wormdb serve` with SHARDS shards is loaded with N entries by
# wormdb-loadgen (`--tags TAGS`, LogHub bodies: https://github.com/logpai/loghub,
# consecutive lines cut to BODY_BYTES, 256 by default: about 300 B raw per
# entry, so the default N makes about 25 GB raw, 5-6 GB on disk with LZ4),
# with PLANTED entries carrying one unique word posted over plain HTTP at
# spread-out times during the load. Then each query below is timed ROUNDS
# times (the table reports the median, min..max):
#
#   (a) tags-none   tag=t0=v7&tag=t1=v3&tag=t2=v9: a 3-tag conjunction that
#                   (almost surely) matches nothing; the count is printed
#   (b) tags-some   a 3-tag conjunction of values of the data that SET_PLANTED
#                   entries carry (100 by default), posted at spread-out
#                   times during the load like the word's entries; the
#                   script picks a conjunction the loadgen's pool lacks
#                   (checked once the pool has gone round at least twice),
#                   so it matches exactly SET_PLANTED entries
#   (b') tags-data  the 3 tags of an entry of the data (the loadgen's pool
#                   of about 256k entries repeats, so about N / 256k
#                   matches: about 330 at the default N)
#   (c) word        q=<the planted word>: expect PLANTED matches
#   (d) scan        contains=<text that occurs nowhere>: a brute-force scan
#                   of every block, the reference the others are compared to
#
# Each query asks for limit=LIMIT entries (NDJSON, counted). For each the
# table prints the time, its ratio to (d)'s time (how many times faster
# than a scan), and the blocks read (the /v1/stats `blocks_read` delta over
# the query, summed over shards). For (d) it prints GB/s of raw text: the
# store's raw bytes (/v1/stats `raw_bytes`, entry bytes before compression)
# over the scan time, in all and per core (SHARDS cores scan in parallel).
#
# Bounded: the load stops at N entries or after LOAD_SECONDS_MAX s, whichever
# comes first (the table says how many were stored); every query has a
# QUERY_TIMEOUT; the data dir lives under SCRATCH and is deleted on exit, and
# the server is stopped on exit (trap). Raw output (server log, results.tsv,
# table.txt) is kept in OUT_DIR.
#
# BIN and LOADGEN name the binaries. SCAN names the predicate of (d), for a
# build that has no `contains=` (compare with an older build:
# SCAN='field=absent=1' BIN=old/wormdb; a field predicate is checked on
# every entry of every block, as a scan was before word search existed).
#
# Usage: benches/query/needle.sh                    # N=85000000 (the lead's run: about 6 GiB on disk)
#        N=2000000 ROUNDS=3 benches/query/needle.sh # quick run (about a minute)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

N=${N:-85000000}
ROUNDS=${ROUNDS:-5}
SHARDS=${SHARDS:-2}
TAGS=${TAGS:-3:100}
PLANTED=${PLANTED:-5}
SET_PLANTED=${SET_PLANTED:-100}
LIMIT=${LIMIT:-1000}
CONNS=${CONNS:-16}
BODY_BYTES=${BODY_BYTES:-256}
BATCH=${BATCH:-1000}
LOAD_SECONDS_MAX=${LOAD_SECONDS_MAX:-1800}
QUERY_TIMEOUT=${QUERY_TIMEOUT:-600}
ABSENT=${ABSENT:-wormdb-needle-absent-q7zx}
SCAN=${SCAN:-contains=$ABSENT}
LOGHUB=${LOGHUB:-$repo/../shared/data/loghub}
LOADGEN=${LOADGEN:-$repo/target/release/wormdb-loadgen}
BIN=${BIN:-$repo/target/release/wormdb}
SCRATCH=${SCRATCH:-/tmp}
OUT_DIR=${OUT_DIR:-$repo/target/needle/$(date -u +%Y%m%dT%H%M%SZ)}

[ -x "$BIN" ] && [ -x "$LOADGEN" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
[ -d "$LOGHUB" ] || LOGHUB=$repo/tests/data/loghub
mkdir -p "$OUT_DIR"
work=$(mktemp -d "$SCRATCH/wormdb-needle.XXXXXX") || exit 1
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every LogHub sample, one after the other, as the bodies.
payload=$work/loghub.log
cat "$LOGHUB"/*_2k.log > "$payload"
# A word that occurs in no LogHub line and in nothing the loadgen makes.
word=needle_$(date +%s)_$$
if grep -q -- "$ABSENT" "$payload" || grep -q -- "$word" "$payload"; then
  echo "the absent text or the planted word occurs in the payload: pick another ABSENT" >&2; exit 1
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stats_sum() { curl -sf "$base/v1/stats" | python3 -c "import json,sys; print(sum(s['$1'] for s in json.load(sys.stdin)['shards']))"; }

http=$(free_port); grpc=$(free_port)
base=http://127.0.0.1:$http
"$BIN" serve --data-dir "$work/data" --shards "$SHARDS" --http-addr "127.0.0.1:$http" \
  --grpc-addr "127.0.0.1:$grpc" > "$OUT_DIR/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 200); do curl -sf "$base/healthz" > /dev/null && break; sleep 0.05; done
curl -sf "$base/healthz" > /dev/null || { echo "the server did not start: $OUT_DIR/server.log" >&2; exit 1; }

# Load: one loadgen run (one pool, as a user would run it: its ~256k
# distinct entries repeat, so a 3-tag conjunction absent from the pool
# matches nothing), stopped once N entries are stored; the planted entries
# are posted whenever the store passes k * N / (PLANTED + 1), the entries of
# (b)'s tag set from set_start (past two rounds of the pool) to N, evenly.
echo "loading $N entries (--tags $TAGS, LogHub bodies) with $PLANTED planted entries..." >&2
load_started=$(date +%s)
deadline=$((load_started + LOAD_SECONDS_MAX))
"$LOADGEN" --target "$base" --protocol http --rate max --connections "$CONNS" --batch "$BATCH" --tags "$TAGS" \
  --payload-file "$payload" --body-bytes "$BODY_BYTES" --duration "${LOAD_SECONDS_MAX}s" > "$OUT_DIR/loadgen.log" 2>&1 &
loader=$!
plant() {
  local line
  line=$(printf '{"tags":{"t0":"planted"},"body":"request %s failed: planted entry %d of %d"}' "$word" "$1" "$PLANTED")
  curl -sf -H 'content-type: application/x-ndjson' --data-binary "$line" "$base/v1/entries" > /dev/null \
    || { echo "planting entry $1 failed" >&2; exit 1; }
}
# (b)'s conjunction: the first of a fixed list of value triples that no
# stored entry has, once the pool has gone round (POOL_ENTRIES_MAX).
POOL_ENTRIES_MAX=300000
set_start=$((N / (SET_PLANTED + 1)))
[ "$set_start" -lt $((2 * POOL_ENTRIES_MAX)) ] && set_start=$((2 * POOL_ENTRIES_MAX))
tags_set=""
pick_set() {
  local a
  for a in $(seq 11 40); do
    local candidate="tag=t0=v$a&tag=t1=v$(((a * 7) % 100))&tag=t2=v$(((a * 13) % 100))"
    if [ -z "$(curl -sf "$base/v1/entries?$candidate&limit=1")" ]; then tags_set=$candidate; return; fi
  done
  echo "every candidate conjunction occurs in the data: is TAGS 3:100?" >&2; exit 1
}
plant_set() {
  local line
  [ -n "$tags_set" ] || pick_set
  line=$(python3 -c 'import json, sys; tags = dict(kv.split("=", 2)[1:] for kv in sys.argv[1].split("&")); print(json.dumps({"tags": tags, "body": f"block served to client: planted set entry {sys.argv[2]}"}))' "$tags_set" "$1")
  curl -sf -H 'content-type: application/x-ndjson' --data-binary "$line" "$base/v1/entries" > /dev/null \
    || { echo "planting set entry $1 failed" >&2; exit 1; }
}
planted=0
set_planted=0
while :; do
  stored=$(stats_sum entries)
  while [ "$planted" -lt "$PLANTED" ] && [ "$stored" -ge $((N * (planted + 1) / (PLANTED + 1))) ]; do
    planted=$((planted + 1)); plant "$planted"
  done
  while [ "$set_planted" -lt "$SET_PLANTED" ] && [ "$stored" -ge $((set_start + (N - set_start) * set_planted / SET_PLANTED)) ]; do
    set_planted=$((set_planted + 1)); plant_set "$set_planted"
  done
  [ "$stored" -ge "$N" ] && break
  kill -0 "$loader" 2>/dev/null || { echo "the loadgen stopped at $stored entries (see $OUT_DIR/loadgen.log)" >&2; break; }
  [ "$(date +%s)" -ge "$deadline" ] && { echo "load stopped after ${LOAD_SECONDS_MAX}s at $stored entries" >&2; break; }
  sleep 0.2
done
kill "$loader" 2>/dev/null; wait "$loader" 2>/dev/null
while [ "$planted" -lt "$PLANTED" ]; do planted=$((planted + 1)); plant "$planted"; done
while [ "$set_planted" -lt "$SET_PLANTED" ]; do set_planted=$((set_planted + 1)); plant_set "$set_planted"; done
entries=$(stats_sum entries)
raw_bytes=$(stats_sum raw_bytes)
disk_bytes=$(stats_sum disk_bytes)
echo "stored $entries entries in $(( $(date +%s) - load_started )) s: raw $raw_bytes B, disk $disk_bytes B" >&2

# (b'): the tags of one entry of the data (not a planted one).
tags_data=$(curl -sf "$base/v1/entries?limit=1&tag=t0=v42" | python3 -c '
import json, sys
tags = json.loads(sys.stdin.readline())["tags"]
print("&".join(f"tag={k}={v}" for k, v in sorted(tags.items())))')
[ -n "$tags_data" ] || { echo "no entry has t0=v42: is TAGS 3:100?" >&2; exit 1; }

results=$OUT_DIR/results.tsv
: > "$results"
# time_query NAME QUERY: ROUNDS timed runs; one row each (name, round, s, count, blocks).
time_query() {
  local name=$1 query=$2
  for round in $(seq "$ROUNDS"); do
    local before after out seconds count
    before=$(stats_sum blocks_read)
    out=$(curl -s --max-time "$QUERY_TIMEOUT" -o "$work/answer" -w '%{http_code} %{time_total}' "$base/v1/entries?$query&limit=$LIMIT")
    after=$(stats_sum blocks_read)
    [ "${out%% *}" = 200 ] || { echo "$name: HTTP ${out%% *}: $(head -c 300 "$work/answer")" >&2; return; }
    seconds=${out#* }
    count=$(grep -c . "$work/answer")
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$seconds" "$count" "$((after - before))" >> "$results"
  done
  tail -1 "$results" >&2
}
time_query tags-none 'tag=t0=v7&tag=t1=v3&tag=t2=v9'
time_query tags-some "$tags_set"
time_query tags-data "$tags_data"
time_query word "q=$word"
time_query scan "$SCAN"

python3 - "$results" "$raw_bytes" "$SHARDS" "$entries" "$disk_bytes" "$tags_set" "$SET_PLANTED" "$tags_data" "$word" "$SCAN" "$PLANTED" <<'PY' | tee "$OUT_DIR/table.txt"
import statistics, sys
path, raw, shards, entries, disk, tags_set, set_planted, tags_data, word, scan, planted = sys.argv[1:]
raw, shards, entries, disk = int(raw), int(shards), int(entries), int(disk)
rows = {}
for line in open(path):
    name, _round, seconds, count, blocks = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((float(seconds), int(count), int(blocks)))
def median(name): return statistics.median(s for s, _, _ in rows[name]) if name in rows else None
scan_s = median("scan")
print(f"{entries:,} entries, raw {raw / 1e9:.2f} GB, disk {disk / 1e9:.2f} GB ({raw / max(disk, 1):.1f}x), {shards} shards")
print(f"(b) = {tags_set} (expect {set_planted}); (b') = {tags_data}; (c) = q={word} (expect {planted}); (d) = {scan}")
print(f"{'query':<11} {'time s (median, min..max)':>27} {'x faster than (d)':>18} {'matches':>8} {'blocks read':>12}")
for name, label in [("tags-none", "(a)"), ("tags-some", "(b)"), ("tags-data", "(b')"), ("word", "(c)"), ("scan", "(d)")]:
    if name not in rows: continue
    times = [s for s, _, _ in rows[name]]
    ratio = f"{scan_s / median(name):.1f}" if scan_s and median(name) else ""
    count = rows[name][-1][1]; blocks = statistics.median(b for _, _, b in rows[name])
    print(f"{label:<4} {name:<9} {median(name):>9.3f} ({min(times):.3f}..{max(times):.3f}) {ratio:>18} {count:>8} {blocks:>12.0f}")
if scan_s:
    print(f"(d) scan: {raw / scan_s / 1e9:.2f} GB/s of raw text, {raw / scan_s / 1e9 / shards:.2f} GB/s per core")
PY
