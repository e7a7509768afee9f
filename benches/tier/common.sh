# Sourced by the archive tier's benchmarks (failover.sh, throughput.sh,
# catchup.sh): settings, the scratch dir and its cleanup, the LogHub payload,
# starting, killing and restarting nodes, CPU accounting. Not a script of
# its own.
#
# Nodes are release `wormdb serve` processes on loopback, data in one temp
# dir on the machine's filesystem (removed on exit, with a trap that stops
# every node this script started, by pid). A node is named (t1, t2, t3 for
# the tier members, follower, single, plain); its ports are chosen once, so
# a restarted node comes back on the same addresses, as a real one would.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tier_py="$here/tier.py"
BIN=${BIN:-$repo/target/release/wormdb}
# Archive shards per tier member (= Raft groups), and the follower's shards.
SHARDS=${SHARDS:-2}
FOLLOWER_SHARDS=${FOLLOWER_SHARDS:-2}
# The follower's node id: with 2 groups, each of its 2 shards goes to
# another group (tier.py group-of), so every group carries pushes.
FOLLOWER_ID=${FOLLOWER_ID:-10}
CONNS=${CONNS:-16}
# Entries per second wrk aims at (each connection waits between requests):
# "max" sends as fast as the follower answers.
RATE=${RATE:-max}
# wrk's CPUs (taskset -c), empty: unpinned.
WRK_CPUS=${WRK_CPUS-}
# Extra `wormdb serve` flags for the archive nodes (the tier members, and
# throughput.sh's single leader), e.g. ARCHIVE_ARGS="--durability none" to
# see what the archive's fdatasyncs cost the follower on a shared disk.
ARCHIVE_ARGS=${ARCHIVE_ARGS:-}
# Bound of every wait for a state (a drain, a settled tier).
WAIT_TIMEOUT=${WAIT_TIMEOUT:-300}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -x "$BIN" ] || (cd "$repo" && cargo build --release --bin wormdb)
work=$(mktemp -d /tmp/wormdb-tier-bench.XXXXXX)
payload=$work/payload.ndjson
python3 "$repo/benches/http/make_payload.py" 1000 256 > "$payload"
batch_entries=$(wc -l < "$payload")

declare -A node_pid node_http node_grpc node_cpus node_shards node_args
bg_pids=()
cleanup() {
  local pid
  for pid in "${bg_pids[@]}" "${node_pid[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${bg_pids[@]}" "${node_pid[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# ports NAME: chooses NAME's HTTP and gRPC ports (once).
ports() {
  [ -n "${node_grpc[$1]:-}" ] && return
  node_http[$1]=127.0.0.1:$(free_port)
  node_grpc[$1]=127.0.0.1:$(free_port)
}

# start NAME CPUS SHARDS ARGS...: starts a node of SHARDS shards ("" CPUS:
# unpinned, else `taskset -c CPUS`), waits for its listeners (one log line
# per shard).
start() {
  local name=$1 cpus=$2 shards=$3; shift 3
  ports "$name"
  node_cpus[$name]=$cpus
  node_shards[$name]=$shards
  node_args[$name]="$*"
  launch "$name"
}

launch() {
  local name=$1 log=$work/$1.log shards=${node_shards[$1]}
  local -a pin=()
  [ -n "${node_cpus[$name]}" ] && pin=(taskset -c "${node_cpus[$name]}")
  local before=0
  [ -f "$log" ] && before=$(wc -c < "$log")
  # shellcheck disable=SC2086 # node_args holds words
  "${pin[@]}" "$BIN" serve --data-dir "$work/$name" --http-addr "${node_http[$name]}" \
    --grpc-addr "${node_grpc[$name]}" --shards "$shards" ${node_args[$name]} 2>> "$log" &
  node_pid[$name]=$!
  for _ in $(seq 1 400); do
    [ "$(tail -c +$((before + 1)) "$log" 2>/dev/null | grep -c "grpc listening on" || true)" -ge "$shards" ] && return
    kill -0 "${node_pid[$name]}" 2>/dev/null || { echo "node $name exited at start:" >&2; tail -5 "$log" >&2; exit 1; }
    sleep 0.05
  done
  echo "node $name did not listen within 20 s" >&2
  exit 1
}

# restart NAME: starts NAME again with the same addresses, flags and data.
restart() { launch "$1"; }

# stop NAME [SIGNAL]: signals NAME (TERM by default) and reaps it.
stop() {
  kill -s "${2:-TERM}" "${node_pid[$1]}" 2>/dev/null || true
  wait "${node_pid[$1]}" 2>/dev/null || true
}

# reap NAME: waits for a node another command signalled.
reap() { wait "${node_pid[$1]}" 2>/dev/null || true; }

# tier CPUS: starts members t1..t3 of a 3-member tier (`--peers`) and waits
# until every group has a leader; sets $members (tier.py's ID=HTTP=GRPC list)
# and $tier_grpc (the followers' --leader list).
tier() {
  local cpus=$1 i peers=""
  for i in 1 2 3; do ports "t$i"; peers+="${peers:+,}$i=${node_grpc[t$i]}"; done
  members="" tier_grpc=""
  for i in 1 2 3; do
    # shellcheck disable=SC2086 # ARCHIVE_ARGS holds words
    start "t$i" "$cpus" "$SHARDS" --node-id "$i" --peers "$peers" $ARCHIVE_ARGS
    members+="${members:+,}$i=${node_http[t$i]}=${node_grpc[t$i]}"
    tier_grpc+="${tier_grpc:+,}${node_grpc[t$i]}"
  done
  python3 "$tier_py" wait-settled --members "$members" --timeout 60 > /dev/null
}

hz=$(getconf CLK_TCK)
# cpu NAME...: CPU-seconds (user + system) the named nodes used so far.
cpu() {
  local name ticks=0
  for name in "$@"; do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/${node_pid[$name]}/stat"))); done
  python3 -c "print($ticks / $hz)"
}

# load ADDR SECONDS: wrk POSTs the payload to ADDR for SECONDS (at $RATE:
# each connection waits CONNS * 1000 / RATE ms between requests).
load() {
  load_start "$@"
  wait "$wrk_pid"
}

# load_start ADDR SECONDS: the same in the background; sets $wrk_pid.
load_start() {
  local delay=0
  [ "$RATE" != max ] && delay=$(python3 -c "print(max(0, round($CONNS * $batch_entries * 1000 / $RATE)))")
  local -a pin=()
  [ -n "$WRK_CPUS" ] && pin=(taskset -c "$WRK_CPUS")
  PAYLOAD=$payload DELAY_MS=$delay INGEST_LUA="$repo/benches/http/ingest.lua" \
    "${pin[@]}" wrk -t1 -c"$CONNS" -d"$2"s -s "$here/paced.lua" "http://$1/v1/entries" > "$work/wrk.out" &
  wrk_pid=$!
  bg_pids+=("$wrk_pid")
}

# load_start_spread ADDR SECONDS: load_start, made sure that every shard of
# the node at ADDR takes ingest (each HTTP connection stays on the core
# that accepted it, so a few connections can all land on one shard, and a
# shard without load would leave its group without pushes): wrk is started
# again, at most 10 times, until each shard's ingest_entries grew within 1 s.
load_start_spread() {
  local try before after
  for try in $(seq 1 10); do
    before=$(python3 "$tier_py" per-shard "$1" ingest_entries)
    load_start "$@"
    sleep 1
    after=$(python3 "$tier_py" per-shard "$1" ingest_entries)
    python3 -c "import sys; b, a = sys.argv[1].split(), sys.argv[2].split(); sys.exit(any(int(x) >= int(y) for x, y in zip(b, a)))" \
      "$before" "$after" && return
    echo "(a shard of $1 took no ingest: ingest per shard $before -> $after; wrk again)"
    kill "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
  done
  echo "a shard of $1 took no ingest in 10 tries of wrk with $CONNS connections" >&2
  exit 1
}

stat_sum() { python3 "$tier_py" stat "$@"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

conditions() {
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg)," \
    "data on $(df -T "$work" | awk 'NR==2 {print $2}'), source $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
}
