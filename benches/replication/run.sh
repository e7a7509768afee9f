#!/usr/bin/env bash
# Replication benchmark: a follower and a leader (release `wormdb serve`, one
# shard each by default), pinned to different cores, on ext4 temp dirs; wrk
# POSTs NDJSON batches of 1000 LogHub entries (3 tags, 256 B bodies) to the
# follower. Measures, in one run:
#   1. follower ingest rate with replication on vs off (a node without
#      --leader), RUNS alternating runs of DURATION s each; median ratio;
#   2. catch-up: the leader is stopped, wrk ingests into the follower for
#      OUTAGE s, wrk stops, the leader restarts; the backlog divided by the
#      time until the follower's lag is zero is the push throughput
#      follower→leader, reported also as a multiple of the live ingest rate.
# Bounded: every wrk run has a duration; the drain wait gives up after 600 s.
# Usage: benches/replication/run.sh     (RUNS=3 DURATION=10 OUTAGE=30 SHARDS=1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
SHARDS=${SHARDS:-1}
CONNS=${CONNS:-16}
DURATION=${DURATION:-10}
OUTAGE=${OUTAGE:-30}
RUNS=${RUNS:-3}
FOLLOWER_CPUS=${FOLLOWER_CPUS:-0}
LEADER_CPUS=${LEADER_CPUS:-1}
BIN=${BIN:-$repo/target/release/wormdb}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -x "$BIN" ] || (cd "$repo" && cargo build --release)
work=$(mktemp -d /tmp/wormdb-repl-bench.XXXXXX)
payload=$work/payload.ndjson
python3 "$repo/benches/http/make_payload.py" 1000 256 > "$payload"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
leader_port=$(free_port)

# start NAME CPUS ARGS... : starts a node, waits for its listeners, sets $pid and $addr.
start() {
  local name=$1 cpus=$2; shift 2
  local log=$work/$name.log
  taskset -c "$cpus" "$BIN" serve --data-dir "$work/$name" --http-addr 127.0.0.1:0 --shards "$SHARDS" "$@" 2>> "$log" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 200); do [ "$(grep -c "grpc listening on" "$log" || true)" -ge "$SHARDS" ] && break; sleep 0.05; done
  addr=$(grep -o "http listening on [0-9.:]*" "$log" | tail -1 | awk '{print $4}')
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
stat_sum() { curl -s "http://$1/v1/stats" | python3 -c "import json,sys; print(sum(s$2 or 0 for s in json.load(sys.stdin)['shards']))"; }
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ingest_rate() { # addr seconds pid -> "entries/s cpu-s-per-million" (entries acknowledged; the node's own CPU)
  local e0 e1 t0 t1 c0 c1
  e0=$(stat_sum "$1" '["ingest_entries"]'); t0=$(date +%s.%N); c0=$(cpu "$3")
  PAYLOAD=$payload wrk -t1 -c"$CONNS" -d"$2"s -s "$repo/benches/http/ingest.lua" "http://$1/v1/entries" > /dev/null
  e1=$(stat_sum "$1" '["ingest_entries"]'); t1=$(date +%s.%N); c1=$(cpu "$3")
  python3 -c "e = $e1 - $e0; print(round(e / ($t1 - $t0)), round(($c1 - $c0) / $hz / (e / 1e6), 3))"
}

start leader "$LEADER_CPUS" --node-id 1 --grpc-addr "127.0.0.1:$leader_port"; leader_pid=$pid
start follower "$FOLLOWER_CPUS" --node-id 2 --grpc-addr 127.0.0.1:0 --leader "127.0.0.1:$leader_port"; follower=$addr; follower_pid=$pid
start plain "$FOLLOWER_CPUS" --node-id 3 --grpc-addr 127.0.0.1:0; plain=$addr; plain_pid=$pid
# Warm-up both (segment creation, page faults).
PAYLOAD=$payload wrk -t1 -c"$CONNS" -d2s -s "$repo/benches/http/ingest.lua" "http://$follower/v1/entries" > /dev/null
PAYLOAD=$payload wrk -t1 -c"$CONNS" -d2s -s "$repo/benches/http/ingest.lua" "http://$plain/v1/entries" > /dev/null

echo "== 1. follower ingest with replication on vs off ($RUNS x ${DURATION}s each, alternating)"
ratios=()
for run in $(seq 1 "$RUNS"); do
  read -r on on_cpu <<< "$(ingest_rate "$follower" "$DURATION" "$follower_pid")"
  read -r off off_cpu <<< "$(ingest_rate "$plain" "$DURATION" "$plain_pid")"
  ratio=$(python3 -c "print(f'{$on / $off * 100:.1f}')")
  ratios+=("$ratio")
  echo "run $run: on $on entries/s ($on_cpu CPU-s/M in the follower), off $off entries/s ($off_cpu CPU-s/M), on/off $ratio %"
done
echo "median on/off: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') % (target >= 90 %)"
echo "(with replication on, the leader process runs on the same 2-core machine and takes CPU from wrk and the follower)"
stop "$plain_pid"

echo "== 2. catch-up after a ${OUTAGE}s leader outage"
lag() { stat_sum "$follower" '["replication"]["lag_entries"]'; }
for _ in $(seq 1 600); do [ "$(lag)" = 0 ] && break; sleep 0.1; done
stop "$leader_pid"
read -r live _ <<< "$(ingest_rate "$follower" "$OUTAGE" "$follower_pid")"
backlog=$(lag)
t0=$(date +%s.%N)
start leader "$LEADER_CPUS" --node-id 1 --grpc-addr "127.0.0.1:$leader_port"
# t_first: the first poll that sees the lag shrink (the follower reconnected:
# its backoff is at most 1 s).
t_first=""
for _ in $(seq 1 6000); do
  left=$(lag)
  [ -z "$t_first" ] && [ "$left" != "$backlog" ] && t_first=$(date +%s.%N)
  [ "$left" = 0 ] && break
  sleep 0.05
done
t1=$(date +%s.%N)
[ "$(lag)" = 0 ] || echo "WARNING: lag did not drain within 600 s"
python3 - "$live" "$backlog" "$t0" "$t1" "${t_first:-$t0}" <<'PY'
import sys
live, backlog = int(sys.argv[1]), int(sys.argv[2]); t0, t1, t_first = map(float, sys.argv[3:6])
rate = backlog / (t1 - t0)
print(f"live ingest during the outage: {live:,} entries/s; backlog {backlog:,} entries")
print(f"drained in {t1 - t0:.2f} s from the leader's restart (its start and the follower's reconnect "
      f"included) = {rate:,.0f} entries/s = {rate / live:.2f}x the live ingest rate "
      f"(targets: >= 2 M entries/s, >= 3x)")
print(f"push rate once reconnected ({t1 - t_first:.2f} s from the first ack seen): "
      f"{backlog / (t1 - t_first):,.0f} entries/s (an upper bound: acks before that poll are counted)")
PY
echo "conditions: $(nproc) cores, shards=$SHARDS per node, follower on cpus $FOLLOWER_CPUS, leader on cpus $LEADER_CPUS, wrk unpinned, conns=$CONNS, data on $(df -T "$work" | awk 'NR==2 {print $2}')"
