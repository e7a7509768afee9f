#!/usr/bin/env bash
# A node joining a loaded tier (issue 16, "Performance"): a 3-member tier
# and a follower under full HTTP load for LOAD s; the follower's ingest is
# measured over MEASURE s; then node 4 starts with `--join` (through member
# 1) while the load goes on. Reported: the time from its start command until
# it is a voter of every group (promoted: its log within
# PROMOTE_LAG_ENTRIES of each leader's), the MB/s of segment data it gained
# over that time, and the follower's ingest during the join against before.
# At the end the load stops, the follower drains, and node 4's entries per
# group must equal the others'. Beside it, the longest time the follower's
# acked seq stood still with entries unacknowledged, per shard, during the
# join (tier.py stalls).
# Bounded: wrk has a duration; every wait at most WAIT_TIMEOUT s.
# Usage: benches/tier/join.sh   (LOAD=40 MEASURE=10 CONNS=16 RATE=max
#        WAIT_TIMEOUT=300 FOLLOWER_ARGS=; TIER_CPUS and FOLLOWER_CPUS pin
#        with taskset; KEEP=1 keeps the logs). Disk: every member holds the
#        whole archive (about 47 MB/s of segments per member under full
#        load here), the follower its own log: LOAD=230 needs about 60 GB
#        with FOLLOWER_ARGS="--retention-bytes 2GB".
LOAD=${LOAD:-40}
# Extra flags for the follower, e.g. FOLLOWER_ARGS="--retention-bytes 2GB"
# so that a long load does not fill the disk with a fifth copy (retention
# keeps whatever the tier has not acknowledged).
FOLLOWER_ARGS=${FOLLOWER_ARGS:-}
# Entries/s wrk aims at from the end of LOAD on (the measure before the
# join, and the join itself); empty: full load throughout. A paced load
# after a full one builds a large archive quickly, then joins at a load
# the tier can carry (and keeps the disk from filling meanwhile).
JOIN_RATE=${JOIN_RATE:-}
MEASURE=${MEASURE:-10}
TIER_CPUS=${TIER_CPUS:-}
FOLLOWER_CPUS=${FOLLOWER_CPUS:-}
# shellcheck source=benches/tier/common.sh
source "$(dirname "$0")/common.sh"

echo "== a node joins a tier under load, after ${LOAD} s of load"
conditions
tier "$TIER_CPUS"
# shellcheck disable=SC2086 # FOLLOWER_ARGS holds words
start follower "$FOLLOWER_CPUS" "$FOLLOWER_SHARDS" --node-id "$FOLLOWER_ID" --leader "$tier_grpc" $FOLLOWER_ARGS
follower=${node_http[follower]}
load_start_spread "$follower" $((LOAD + MEASURE + WAIT_TIMEOUT))
sleep "$LOAD"
read -r disk entries <<< "$(stat_sum "${node_http[t1]}" disk_bytes entries)"
echo "loaded: member 1 holds $((disk / 1000000)) MB of segment data, $entries entries"
if [ -n "$JOIN_RATE" ]; then
  kill "$wrk_pid" 2> /dev/null || true
  wait "$wrk_pid" 2> /dev/null || true
  RATE=$JOIN_RATE
  load_start_spread "$follower" $((MEASURE + WAIT_TIMEOUT + 10))
  sleep 3
  echo "the load is now paced at $JOIN_RATE entries/s"
fi
e0=$(stat_sum "$follower" ingest_entries)
t0=$(now)
sleep "$MEASURE"
e1=$(stat_sum "$follower" ingest_entries)
t1=$(now)

# The follower's longest ack stall from here until node 4 is a voter.
python3 "$tier_py" stalls --follower "$follower" --until "$work/promoted" --timeout "$WAIT_TIMEOUT" > "$work/stalls.json" &
stalls_pid=$!
bg_pids+=("$stalls_pid")
since=$(now)
# shellcheck disable=SC2086 # ARCHIVE_ARGS holds words
start t4 "$TIER_CPUS" "$SHARDS" --node-id 4 --join "${node_grpc[t1]}" $ARCHIVE_ARGS
joined=$(now)
promoted=$(python3 - "${node_http[t4]}" "$WAIT_TIMEOUT" <<'PY'
import json, sys, time, urllib.request
addr, timeout = sys.argv[1], float(sys.argv[2])
start = time.time()
while time.time() - start < timeout:
    try:
        view = json.load(urllib.request.urlopen(f"http://{addr}/v1/cluster", timeout=2))
        roles = [g["role"] for g in view["groups"]]
        if roles and all(role in ("leader", "follower") for role in roles):
            print(time.time())
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.exit(1)
PY
) || { echo "node 4 was not promoted within $WAIT_TIMEOUT s"; exit 1; }
touch "$work/promoted"
wait "$stalls_pid"
e2=$(stat_sum "$follower" ingest_entries)
read -r disk4 entries4 <<< "$(stat_sum "${node_http[t4]}" disk_bytes entries)"
python3 - "$since" "$joined" "$promoted" "$disk4" "$entries4" "$e0" "$t0" "$e1" "$t1" "$e2" <<'PY'
import sys
since, joined, promoted, disk, entries, e0, t0, e1, t1, e2 = map(float, sys.argv[1:])
took = promoted - since
print(f"node 4: learner of every group {joined - since:.2f} s after its start command, voter of every group after {took:.2f} s; "
      f"it then held {disk / 1e6:,.1f} MB of segment data ({entries:,.0f} entries): {disk / 1e6 / took:,.1f} MB/s")
before = (e1 - e0) / (t1 - t0)
during = (e2 - e1) / (promoted - t1)
print(f"follower ingest: {before:,.0f} entries/s before the join, {during:,.0f} entries/s during it ({during / before:.1%})")
PY
python3 - "$work/stalls.json" <<'PY'
import json, sys
stalls = json.load(open(sys.argv[1]))
polls = stalls.pop("polls")
print(f"longest ack stall per follower shard during the join (from its /v1/stats, {polls} polls): "
      + ", ".join(f"shard {shard}: {seconds:.3f} s" for shard, seconds in stalls.items()))
PY
kill "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" 2>/dev/null || true

members+=",4=${node_http[t4]}=${node_grpc[t4]}"
python3 "$tier_py" wait-drained --follower "$follower" --timeout "$WAIT_TIMEOUT" > /dev/null
python3 "$tier_py" wait-settled --members "$members" --exact --timeout "$WAIT_TIMEOUT" > /dev/null
python3 "$tier_py" state --members "$members" --follower "$follower" --follower-id "$FOLLOWER_ID" > "$work/state.json"
python3 - "$work/state.json" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))
entries = {node: m["entries"] for node, m in state["members"].items()}
same = len({json.dumps(e, sort_keys=True) for e in entries.values()}) == 1
print(f"members' entries per group: {entries}: " + ("agree" if same else "DIFFER"))
sys.exit(0 if same else 1)
PY
echo "conditions: tier members on cpus ${TIER_CPUS:-any}, follower on cpus ${FOLLOWER_CPUS:-any};" \
  "$SHARDS groups, follower $FOLLOWER_SHARDS shards, conns=$CONNS, rate=$RATE; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
