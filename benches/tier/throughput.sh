#!/usr/bin/env bash
# Throughput and cost of the archive tier against a single-node archive
# (issue 15, "Performance"), in one run. Five nodes' worth of processes:
#   - `single`: a single-node archive (`wormdb serve --shards 2`, no --peers),
#     and `follower_single`, a follower of it (`--leader ADDR`);
#   - `t1..t3`: a 3-member tier (`--peers`, SHARDS=2 groups each), and
#     `follower_tier`, a follower of it (`--leader A,B,C`);
#   - `plain`: a node without any leader (the follower's ingest alone).
# Every follower has 2 shards and node id FOLLOWER_ID (its 2 shards go to
# the 2 groups). wrk POSTs NDJSON batches of 1000 LogHub entries (3 tags,
# 256 B bodies) to one of the three for DURATION s; ROUNDS rounds, the order
# of the three rotating every round. Per run:
#   - the follower's ingest entries/s (`/v1/stats` ingest_entries over the
#     wrk run) and its CPU-seconds per million;
#   - archived entries/s: the follower's acked seqs (summed over its shards)
#     over the same wrk run: what the archive acknowledged while loaded;
#   - the archive's CPU-seconds per million archived entries, from the wrk
#     run's start until the follower's lag is back to 0 (so entries archived
#     after the load are paid for and counted): the single leader's, and the
#     sum over the 3 tier members.
# Then medians over rounds: tier/plain and single/plain ingest (goal: tier
# >= 90 %), archived entries/s both ways, tier/single CPU per entry (goal
# <= 3.5x). Pinning (taskset): the followers, `plain` and wrk on
# FOLLOWER_CPUS (WRK_CPUS), the single leader and all 3 tier members on
# LEADER_CPUS (each node's executors take the CPUs of its mask, so all
# archive executors share that CPU): the client side gets the same CPU in
# every mode, and the archive side's CPU cannot slow the follower (on real
# servers the tier has machines of its own). With wrk unpinned
# (WRK_CPUS=), three replicas saturating CPU 1 take wrk's share of it and
# the follower's ingest falls with it. FOLLOWER_CPUS= LEADER_CPUS=
# WRK_CPUS= (empty) leaves everything unpinned.
# Bounded: every wrk run has a duration; each drain waits at most
# WAIT_TIMEOUT s.
# Usage: benches/tier/throughput.sh   (ROUNDS=3 DURATION=10 CONNS=16 RATE=max
#        FOLLOWER_CPUS=0 LEADER_CPUS=1 WRK_CPUS=0 WAIT_TIMEOUT=300 ARCHIVE_ARGS=;
#        KEEP=1 keeps the logs)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
FOLLOWER_CPUS=${FOLLOWER_CPUS-0}
LEADER_CPUS=${LEADER_CPUS-1}
WRK_CPUS=${WRK_CPUS-$FOLLOWER_CPUS}
# shellcheck source=benches/tier/common.sh
source "$(dirname "$0")/common.sh"

echo "== throughput: follower -> single-node archive vs follower -> 3-member tier vs no leader"
conditions
# shellcheck disable=SC2086 # ARCHIVE_ARGS holds words
start single "$LEADER_CPUS" "$SHARDS" --node-id 1 $ARCHIVE_ARGS
tier "$LEADER_CPUS"
start follower_single "$FOLLOWER_CPUS" "$FOLLOWER_SHARDS" --node-id "$FOLLOWER_ID" --leader "${node_grpc[single]}"
start follower_tier "$FOLLOWER_CPUS" "$FOLLOWER_SHARDS" --node-id "$FOLLOWER_ID" --leader "$tier_grpc"
start plain "$FOLLOWER_CPUS" "$FOLLOWER_SHARDS" --node-id "$FOLLOWER_ID"
python3 "$tier_py" wait-settled --members "$members" --follower "${node_http[follower_tier]}" \
  --follower-id "$FOLLOWER_ID" --timeout 60 > /dev/null
# Warm-up (segment creation, page faults, connections).
for name in follower_single follower_tier plain; do load "${node_http[$name]}" 2; done

# run MODE FOLLOWER ARCHIVE_NODE...: one wrk run against FOLLOWER; appends
# "mode ingest/s archived/s archive_cpu_per_M follower_cpu_per_M drain_s" to
# $work/runs.txt and prints it in words.
run() {
  local mode=$1 follower=$2; shift 2
  local addr=${node_http[$follower]} e0 a0 e1 a1 a2 t0 t1 t2 c0 c2 f0 f1
  [ "$mode" = plain ] || python3 "$tier_py" wait-drained --follower "$addr" --timeout "$WAIT_TIMEOUT" > /dev/null
  local sync0 sync1 fsyncs
  read -r e0 a0 <<< "$(stat_sum "$addr" ingest_entries acked)"
  sync0=$(python3 "$tier_py" metric "$addr" wormdb_fsync_duration_seconds_sum wormdb_fsync_duration_seconds_count)
  c0=$( (($#)) && cpu "$@" || echo 0); f0=$(cpu "$follower"); t0=$(now)
  load "$addr" "$DURATION"
  read -r e1 a1 <<< "$(stat_sum "$addr" ingest_entries acked)"
  t1=$(now); f1=$(cpu "$follower")
  sync1=$(python3 "$tier_py" metric "$addr" wormdb_fsync_duration_seconds_sum wormdb_fsync_duration_seconds_count)
  fsyncs=$(python3 -c "import sys; s0, n0 = map(float, sys.argv[1].split()); s1, n1 = map(float, sys.argv[2].split()); print(f'{(s1 - s0) / max(n1 - n0, 1) * 1000:.2f}')" "$sync0" "$sync1")
  if [ "$mode" != plain ]; then
    python3 "$tier_py" wait-drained --follower "$addr" --timeout "$WAIT_TIMEOUT" > /dev/null ||
      echo "WARNING: $follower's lag did not drain within $WAIT_TIMEOUT s"
  fi
  read -r a2 <<< "$(stat_sum "$addr" acked)"
  t2=$(now); c2=$( (($#)) && cpu "$@" || echo 0)
  python3 - "$mode" "$e0" "$e1" "$a0" "$a1" "$a2" "$t0" "$t1" "$t2" "$c0" "$c2" "$f0" "$f1" "$work/runs.txt" "$fsyncs" <<'PY'
import sys
mode = sys.argv[1]
fsync_ms = float(sys.argv[15])
e0, e1, a0, a1, a2 = map(int, sys.argv[2:7])
t0, t1, t2, c0, c2, f0, f1 = map(float, sys.argv[7:14])
ingest = (e1 - e0) / (t1 - t0)
archived = (a1 - a0) / (t1 - t0)
archive_cpu = (c2 - c0) / ((a2 - a0) / 1e6) if a2 > a0 else 0.0
follower_cpu = (f1 - f0) / ((e1 - e0) / 1e6) if e1 > e0 else 0.0
drain = t2 - t1 if mode != "plain" else 0.0
with open(sys.argv[14], "a") as runs:
    runs.write(f"{mode} {ingest:.0f} {archived:.0f} {archive_cpu:.4f} {follower_cpu:.4f} {drain:.3f} {fsync_ms}\n")
words = (f"  {mode:<7} follower ingest {ingest:>11,.0f} entries/s ({follower_cpu:.2f} CPU-s/M in the follower, "
         f"its fdatasync {fsync_ms:.2f} ms mean)")
if mode != "plain":
    who = "3 members summed" if mode == "tier" else "the leader"
    words += (f", archived {archived:>11,.0f} entries/s ({archived / ingest * 100:.0f} % of ingest), "
              f"lag drained {drain:.2f} s after wrk; {archive_cpu:.3f} archive CPU-s per M archived ({who})")
print(words)
PY
}

modes=(single tier plain)
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round:"
  for k in 0 1 2; do
    case ${modes[$(((round - 1 + k) % 3))]} in
      single) run single follower_single single ;;
      tier) run tier follower_tier t1 t2 t3 ;;
      plain) run plain plain ;;
    esac
  done
done

echo "== medians over $ROUNDS rounds of ${DURATION} s"
python3 - "$work/runs.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    mode, *values = line.split()
    runs.setdefault(mode, []).append(list(map(float, values)))
def med(mode, column):
    return statistics.median(run[column] for run in runs[mode])
ingest = {mode: med(mode, 0) for mode in runs}
# Same-round ratios, then their median (a drifting machine moves all three).
def ratio(a, b, column):
    return statistics.median(x[column] / y[column] for x, y in zip(runs[a], runs[b]) if y[column])
print(f"follower ingest: no leader {ingest['plain']:,.0f}/s, single-node archive {ingest['single']:,.0f}/s "
      f"({ratio('single', 'plain', 0) * 100:.1f} %), tier {ingest['tier']:,.0f}/s "
      f"({ratio('tier', 'plain', 0) * 100:.1f} % of no leader; goal >= 90 %)")
print(f"archived entries/s (the follower's acks while loaded): single-node {med('single', 1):,.0f}/s, "
      f"tier {med('tier', 1):,.0f}/s ({ratio('tier', 'single', 1) * 100:.1f} % of single)")
print(f"archive CPU-s per million archived entries: single leader {med('single', 2):.3f}, "
      f"tier (3 members summed) {med('tier', 2):.3f} = {ratio('tier', 'single', 2):.2f}x (goal <= 3.5x)")
print(f"follower CPU-s per million ingested: no leader {med('plain', 3):.3f}, single {med('single', 3):.3f}, "
      f"tier {med('tier', 3):.3f}; its mean fdatasync: no leader {med('plain', 5):.2f} ms, single "
      f"{med('single', 5):.2f} ms, tier {med('tier', 5):.2f} ms (the disk is shared with the archive nodes)")
PY
echo "conditions: followers and plain on cpus ${FOLLOWER_CPUS:-any}, single leader and the 3 tier members on cpus" \
  "${LEADER_CPUS:-any} (taskset; every node's executors pinned inside its mask), wrk on cpus ${WRK_CPUS:-any}; $SHARDS archive shards/groups," \
  "followers $FOLLOWER_SHARDS shards, conns=$CONNS, rate=$RATE, archive flags: ${ARCHIVE_ARGS:-none}; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
