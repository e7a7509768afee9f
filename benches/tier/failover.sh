#!/usr/bin/env bash
# Failover benchmark of the archive tier (issue 15, "Performance"): a
# 3-member tier (release `wormdb serve --peers`, SHARDS=2 groups each) and a
# follower (`--leader A,B,C`, 2 shards, one per group) under HTTP load: wrk
# POSTs NDJSON batches of 1000 LogHub entries (3 tags, 256 B bodies) to the
# follower at about RATE entries/s, for the whole run. Then KILLS times:
#   1. find the member leading the most groups (`/v1/cluster`, groups[].leader);
#   2. SIGKILL it and time, for each group it led, the kill -> the next
#      acknowledged push on that group (tier.py `failover`): the first poll
#      of the follower's `/v1/stats` in which the follower shard archived by
#      that group is in a session with a surviving member and its acked_seq
#      is above what that new session first showed. This is an ack the
#      follower received for a push the new leader committed on a quorum and
#      applied: not an ack in flight from the dead leader, nor the
#      watermark a new session starts from. Beside it, the time until a
#      survivor's `/v1/cluster` names a new leader in a later term (the
#      election alone). Resolution: one poll every POLL_MS plus the poll's
#      own time (printed);
#   3. restart the killed member (same flags, addresses and data), and wait
#      until every group has one leader all members name, every member has
#      applied at least what that leader had applied (the members read one
#      after the other: under load, a loaded tier's applied indexes are
#      never all equal at one instant) and each follower shard is in a
#      session with its group's leader; next round.
# Prints p50/p99/max over all measurements and the CPU model. At the end:
# the load stops, the follower's lag drains to 0, the tier's applied
# indexes become equal, the members stop cleanly, and the archive is checked
# against the follower's log: on every member, each group's entry count
# equals the seqs of the follower shard it archives, and every origin
# watermark (`wormdb inspect`) equals that shard's last seq.
# Bounded: wrk has a duration (and is stopped at the end); each round waits
# at most ROUND_TIMEOUT s for the acks and WAIT_TIMEOUT s to settle.
# Usage: benches/tier/failover.sh   (KILLS=20 SIGNAL=KILL|TERM RATE=100000 CONNS=8 POLL_MS=10
#        WARMUP=3 GAP=1 ROUND_TIMEOUT=30 WAIT_TIMEOUT=300; TIER_CPUS and
#        FOLLOWER_CPUS pin with taskset, unpinned by default; KEEP=1 keeps
#        the scratch dir and the nodes' logs)
KILLS=${KILLS:-20}
# KILL: a crash (the group waits for an election); TERM: a graceful stop,
# as in a rolling restart (the member hands its leaderships over first).
SIGNAL=${SIGNAL:-KILL}
RATE=${RATE:-100000}
CONNS=${CONNS:-8}
POLL_MS=${POLL_MS:-10}
WARMUP=${WARMUP:-3}
GAP=${GAP:-1}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-30}
TIER_CPUS=${TIER_CPUS:-}
FOLLOWER_CPUS=${FOLLOWER_CPUS:-}
# shellcheck source=benches/tier/common.sh
source "$(dirname "$0")/common.sh"

echo "== failover: $KILLS SIG$SIGNAL of the member leading the most groups, under load"
conditions
tier "$TIER_CPUS"
start follower "$FOLLOWER_CPUS" "$FOLLOWER_SHARDS" --node-id "$FOLLOWER_ID" --leader "$tier_grpc"
follower=${node_http[follower]}
for shard in $(seq 0 $((FOLLOWER_SHARDS - 1))); do
  echo "follower node $FOLLOWER_ID shard $shard -> group $(python3 "$tier_py" group-of "$FOLLOWER_ID" "$shard" "$SHARDS")"
done
# One wrk for the whole run, stopped at the end; its duration only bounds it.
load_start_spread "$follower" $((WARMUP + KILLS * (ROUND_TIMEOUT + WAIT_TIMEOUT + GAP + 5)))
sleep "$WARMUP"
python3 "$tier_py" wait-settled --members "$members" --follower "$follower" --follower-id "$FOLLOWER_ID" \
  --timeout "$WAIT_TIMEOUT" > /dev/null
e0=$(stat_sum "$follower" ingest_entries)
t0=$(now)

results=$work/failover.jsonl
failures=0
for round in $(seq 1 "$KILLS"); do
  sleep "$GAP"
  read -r victim _ <<< "$(python3 "$tier_py" pick --members "$members")"
  python3 "$tier_py" leaders --members "$members" > "$work/before.json"
  printf 'round %d: ' "$round"
  t_kill=$(now)
  # Signalled, not waited for: a SIGTERMed member takes a while to exit
  # (it hands its leaderships over, then drains), and the poll must see
  # that time, not start after it.
  kill -s "$SIGNAL" "${node_pid[t$victim]}"
  python3 "$tier_py" failover --members "$members" --dead "$victim" --since "$t_kill" --before "$work/before.json" \
    --follower "$follower" --follower-id "$FOLLOWER_ID" --follower-shards "$FOLLOWER_SHARDS" \
    --timeout "$ROUND_TIMEOUT" --poll-ms "$POLL_MS" --results "$results" || failures=$((failures + 1))
  reap "t$victim"
  t_restart=$(now)
  restart "t$victim"
  if settled=$(python3 "$tier_py" wait-settled --members "$members" --follower "$follower" \
    --follower-id "$FOLLOWER_ID" --since "$t_restart" --timeout "$WAIT_TIMEOUT"); then
    echo "         node $victim restarted; the tier settled $(python3 -c "import json,sys; print(json.loads(sys.argv[1])['seconds'])" "$settled") s after the restart command"
  else
    echo "         node $victim restarted; the tier did NOT settle within $WAIT_TIMEOUT s (see above); stopping"
    failures=$((failures + 1))
    break
  fi
done
e1=$(stat_sum "$follower" ingest_entries)
t1=$(now)
kill "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" 2>/dev/null || true

echo "== results"
python3 "$tier_py" summary "$results"
python3 -c "print(f'load: the follower stored {($e1 - $e0) / ($t1 - $t0):,.0f} entries/s over the rounds (RATE=$RATE, $CONNS connections)')"
[ "$failures" -eq 0 ] || echo "WARNING: $failures round(s) failed (see above; KEEP=1 keeps the logs)"

echo "== archive check"
python3 "$tier_py" wait-drained --follower "$follower" --timeout "$WAIT_TIMEOUT" > /dev/null
python3 "$tier_py" wait-settled --members "$members" --exact --timeout "$WAIT_TIMEOUT" > /dev/null
python3 "$tier_py" state --members "$members" --follower "$follower" --follower-id "$FOLLOWER_ID" > "$work/state.json"
dumps=()
for i in 1 2 3; do
  stop "t$i"
  "$BIN" inspect "$work/t$i" > "$work/inspect-t$i.txt" || true
  dumps+=("$i=$work/inspect-t$i.txt")
done
python3 "$tier_py" check-archive --state "$work/state.json" "${dumps[@]}" || {
  echo "leadership changes seen by the members:"
  grep -h "leads in term" "$work"/t?.log | sort | tail -20
  failures=$((failures + 1))
}
echo "conditions: tier members on cpus ${TIER_CPUS:-any}, follower on cpus ${FOLLOWER_CPUS:-any}, wrk unpinned;" \
  "$SHARDS groups, follower $FOLLOWER_SHARDS shards; $(cut -d' ' -f1-3 /proc/loadavg) load at the end"
exit $((failures > 0))
