#!/usr/bin/env bash
# Catch-up of a tier member after an outage (issue 15, "Performance"): a
# 3-member tier (release `wormdb serve --peers`, SHARDS=2 groups each) and
# a follower (`--leader A,B,C`, 2 shards, one per group). After a warm-up:
#   1. a member that leads the fewest groups (not the leader of
#      everything) is stopped (SIGTERM, a clean stop; SIGNAL=KILL for a
#      crash);
#   2. wrk POSTs NDJSON batches of 1000 LogHub entries (3 tags, 256 B
#      bodies) to the follower for OUTAGE s; the other two members, a
#      quorum, archive it;
#   3. the load stops and the follower's lag drains to 0, so the target is
#      fixed: each group's applied index on its leader (`/v1/cluster`);
#   4. the member restarts, and tier.py polls its `/v1/cluster` until each
#      of its groups has applied the leader's index; the segment data it
#      gained is the growth of its `/v1/stats` disk_bytes (blocks on disk,
#      LZ4-compressed as stored), over the time from its start command.
# Prints MB/s of segment data (and raw bytes and entries per second), the
# time to its first HTTP answer (process start and recovery), and whether
# it caught up from the log or by snapshot (wormdb_raft_snapshots_installed_total;
# the leader keeps RAFT_LOG_RETAINED_ENTRIES entries of log). Then checks
# that its shards hold what the leader's do.
# Bounded: wrk has a duration; the drain and the catch-up wait at most
# WAIT_TIMEOUT s.
# Usage: benches/tier/catchup.sh   (OUTAGE=60 CONNS=16 RATE=max SIGNAL=TERM
#        WAIT_TIMEOUT=300; TIER_CPUS and FOLLOWER_CPUS pin with taskset,
#        unpinned by default; KEEP=1 keeps the logs)
OUTAGE=${OUTAGE:-60}
SIGNAL=${SIGNAL:-TERM}
TIER_CPUS=${TIER_CPUS:-}
FOLLOWER_CPUS=${FOLLOWER_CPUS:-}
# shellcheck source=benches/tier/common.sh
source "$(dirname "$0")/common.sh"

echo "== catch-up of a tier member after a ${OUTAGE} s outage under load"
conditions
tier "$TIER_CPUS"
start follower "$FOLLOWER_CPUS" "$FOLLOWER_SHARDS" --node-id "$FOLLOWER_ID" --leader "$tier_grpc"
follower=${node_http[follower]}
load "$follower" 2
python3 "$tier_py" wait-drained --follower "$follower" --timeout "$WAIT_TIMEOUT" > /dev/null
python3 "$tier_py" wait-settled --members "$members" --follower "$follower" --follower-id "$FOLLOWER_ID" \
  --timeout "$WAIT_TIMEOUT" > /dev/null
read -r down led <<< "$(python3 "$tier_py" pick --members "$members" --fewest)"
read -r disk0 raw0 entries0 <<< "$(stat_sum "${node_http[t$down]}" disk_bytes raw_bytes entries)"
echo "stopping node $down (it leads groups: $led) with SIG$SIGNAL; it holds $((disk0 / 1000000)) MB of segment data"
stop "t$down" "$SIGNAL"

e0=$(stat_sum "$follower" ingest_entries)
t0=$(now)
load "$follower" "$OUTAGE"
e1=$(stat_sum "$follower" ingest_entries)
t1=$(now)
python3 -c "print(f'load during the outage: the follower stored {($e1 - $e0) / ($t1 - $t0):,.0f} entries/s')"
drained=$(python3 "$tier_py" wait-drained --follower "$follower" --timeout "$WAIT_TIMEOUT") || {
  echo "the follower's lag did not drain within $WAIT_TIMEOUT s with 2 of 3 members up"
  exit 1
}
echo "the follower's lag drained $(python3 -c "import json,sys; print(json.loads(sys.argv[1])['seconds'])" "$drained") s after the load"

# The target: each group's applied index on its leader, now that nothing moves.
up=()
for i in 1 2 3; do [ "$i" = "$down" ] || up+=("$i=${node_http[t$i]}=${node_grpc[t$i]}"); done
up_members=$(IFS=,; echo "${up[*]}")
python3 "$tier_py" wait-settled --members "$up_members" --exact --timeout "$WAIT_TIMEOUT" > /dev/null
targets=$(python3 - "$up_members" <<'PY'
import json, sys, urllib.request
members = sys.argv[1]
http = dict((int(m.split("=")[0]), m.split("=")[1]) for m in members.split(","))
leaders = {}
for node, addr in http.items():
    view = json.load(urllib.request.urlopen(f"http://{addr}/v1/cluster", timeout=2))
    for g in view["groups"]:
        if g["role"] == "leader":
            leaders[g["group"]] = g["applied"]
print(",".join(f"{g}={i}" for g, i in sorted(leaders.items())))
PY
)
leader_disk=$(stat_sum "$(echo "${up[0]}" | cut -d= -f2)" disk_bytes)
echo "target applied indexes (group=index on its leader): $targets; a live member holds $((leader_disk / 1000000)) MB"

since=$(now)
restart "t$down"
result=$(python3 "$tier_py" catchup --members "$members" --node "$down" --targets "$targets" --since "$since" \
  --timeout "$WAIT_TIMEOUT") || { echo "node $down did NOT catch up within $WAIT_TIMEOUT s"; exit 1; }
python3 - "$result" "$disk0" "$raw0" "$entries0" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
disk0, raw0, entries0 = map(int, sys.argv[2:5])
seconds = r["seconds"]
disk, raw, entries = r["disk_bytes"] - disk0, r["raw_bytes"] - raw0, r["entries"] - entries0
after_start = seconds - r["first_answer_s"]
print(f"caught up in {seconds:.2f} s from its start command (first HTTP answer after {r['first_answer_s']:.2f} s): "
      f"{disk / 1e6:,.1f} MB of segment data, {entries:,} entries ({raw / 1e6:,.1f} MB raw)")
print(f"catch-up rate: {disk / 1e6 / seconds:,.1f} MB/s of segment data = {entries / seconds:,.0f} entries/s "
      f"({raw / 1e6 / seconds:,.1f} MB/s raw); from its first answer: {disk / 1e6 / max(after_start, 1e-9):,.1f} MB/s")
print(f"snapshots installed: {r['snapshots_installed']:.0f} (0: caught up from the leader's log alone)")
PY
python3 "$tier_py" wait-settled --members "$members" --exact --timeout 30 > /dev/null &&
  python3 "$tier_py" state --members "$members" --follower "$follower" --follower-id "$FOLLOWER_ID" > "$work/state.json" &&
  python3 - "$work/state.json" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))
entries = {node: m["entries"] for node, m in state["members"].items()}
last = sum(v["last_seq"] for v in state["follower"].values())
same = len({json.dumps(e, sort_keys=True) for e in entries.values()}) == 1
print(f"members' entries per group: {entries}; the follower's seqs: {last:,}: " + ("agree" if same and sum(next(iter(entries.values())).values()) == last else "DIFFER"))
PY
echo "conditions: tier members on cpus ${TIER_CPUS:-any}, follower on cpus ${FOLLOWER_CPUS:-any}, wrk on cpus ${WRK_CPUS:-any};" \
  "$SHARDS groups, follower $FOLLOWER_SHARDS shards, conns=$CONNS, rate=$RATE; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
