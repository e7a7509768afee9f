#!/usr/bin/env bash
# Snapshot transfer rate of the archive tier (issue 16, "Performance": a new
# node joining with an archive): a 3-member tier (release `wormdb serve
# --peers`, SHARDS=2 groups each, `--raft-log-entries 8`, so a member that
# lost its data can only come back by snapshot) and a follower (`--leader
# A,B,C`). Then:
#   1. wrk POSTs NDJSON batches of 1000 LogHub entries (3 tags, 256 B
#      bodies) to the follower for LOAD s; the follower's lag drains and the
#      tier settles, so the target is fixed: each group's applied index on
#      its leader (`/v1/cluster`);
#   2. for each binary of BINS (NAME=PATH ..., default: this build), every
#      member stops, member DOWN's (3) data dir is wiped (joining is not
#      there yet: this is what a new member costs), the others start again
#      with the binary, then member DOWN with the same --peers; tier.py polls
#      its `/v1/cluster` until each of its groups has applied the leader's
#      index. The segment data it gained is its `/v1/stats` disk_bytes
#      (blocks on disk, LZ4-compressed as stored), over the time from its
#      start command (process start, the others' election, snapshot), from
#      its first HTTP answer, and from its first data (the snapshot alone,
#      about). The senders' "snapshot sent" log lines give each snapshot's
#      own time, when the binary logs them.
# Every binary sees the same tier data, one after the other in one run.
# Prints MB/s of segment data per binary, then checks that the member's
# shards hold what the others' do.
# Bounded: wrk has a duration; every wait at most WAIT_TIMEOUT s.
# Usage: benches/tier/snapshot.sh   (LOAD=40 DOWN=3 CONNS=16 RATE=max WAIT_TIMEOUT=300
#        BINS="main=/path/to/old/wormdb new=target/release/wormdb";
#        TIER_CPUS and FOLLOWER_CPUS pin with taskset; KEEP=1 keeps the logs)
LOAD=${LOAD:-40}
TIER_CPUS=${TIER_CPUS:-}
FOLLOWER_CPUS=${FOLLOWER_CPUS:-}
ARCHIVE_ARGS="${ARCHIVE_ARGS:-} --raft-log-entries 8"
# shellcheck source=benches/tier/common.sh
source "$(dirname "$0")/common.sh"
BINS=${BINS:-this=$BIN}

echo "== snapshot transfer to a member that lost its data, after ${LOAD} s of load"
conditions
tier "$TIER_CPUS"
start follower "$FOLLOWER_CPUS" "$FOLLOWER_SHARDS" --node-id "$FOLLOWER_ID" --leader "$tier_grpc"
follower=${node_http[follower]}
load_start_spread "$follower" "$LOAD"
wait "$wrk_pid"
python3 "$tier_py" wait-drained --follower "$follower" --timeout "$WAIT_TIMEOUT" > /dev/null
python3 "$tier_py" wait-settled --members "$members" --exact --timeout "$WAIT_TIMEOUT" > /dev/null
read -r disk raw entries <<< "$(stat_sum "${node_http[t1]}" disk_bytes raw_bytes entries)"
echo "loaded: each member holds $((disk / 1000000)) MB of segment data, $entries entries ($((raw / 1000000)) MB raw)"
# The target: each group's applied index on its leader, now that nothing moves.
targets=$(python3 - "$members" <<'PY'
import json, sys, urllib.request
http = dict((int(m.split("=")[0]), m.split("=")[1]) for m in sys.argv[1].split(","))
leaders = {}
for node, addr in http.items():
    view = json.load(urllib.request.urlopen(f"http://{addr}/v1/cluster", timeout=2))
    for g in view["groups"]:
        if g["role"] == "leader":
            leaders[g["group"]] = g["applied"]
print(",".join(f"{g}={i}" for g, i in sorted(leaders.items())))
PY
)

# The member that loses its data (it cannot lead: an empty log).
down=${DOWN:-3}
for spec in $BINS; do
  name=${spec%%=*}
  # Every member stops (a leader that outlived the member would remember how
  # far its log reached, which a wiped member contradicts: raft-rs panics);
  # member $down's data dir is wiped; the others start again with this
  # binary, then member $down.
  for i in 1 2 3; do stop "t$i"; done
  BIN=${spec#*=}
  rm -rf "${work:?}/t$down"
  for i in 1 2 3; do [ "$i" = "$down" ] || restart "t$i"; done
  log_lines=()
  for i in 1 2 3; do log_lines+=("$(wc -l < "$work/t$i.log" 2>/dev/null || echo 0)"); done
  echo "[$name] node $down wiped; target applied indexes (group=index): $targets; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  since=$(now)
  restart "t$down"
  result=$(python3 "$tier_py" catchup --members "$members" --node "$down" --targets "$targets" --since "$since" \
    --from-empty --timeout "$WAIT_TIMEOUT") || { echo "[$name] node $down did NOT catch up within $WAIT_TIMEOUT s"; exit 1; }
  python3 - "$name" "$result" <<'PY'
import json, sys
name, r = sys.argv[1], json.loads(sys.argv[2])
seconds, disk, raw, entries = r["seconds"], r["disk_bytes"], r["raw_bytes"], r["entries"]
after_start = seconds - r["first_answer_s"]
growing = seconds - (r["first_growth_s"] if r["first_growth_s"] is not None else 0)
print(f"[{name}] caught up in {seconds:.2f} s from its start command (first HTTP answer after {r['first_answer_s']:.2f} s, "
      f"first data after {r['first_growth_s']} s): {disk / 1e6:,.1f} MB of segment data, {entries:,} entries "
      f"({raw / 1e6:,.1f} MB raw), {r['snapshots_installed']:.0f} snapshots installed")
print(f"[{name}] rate from its start command: {disk / 1e6 / seconds:,.1f} MB/s of segment data ({entries / seconds:,.0f} entries/s, "
      f"{raw / 1e6 / seconds:,.1f} MB/s raw); from its first answer: {disk / 1e6 / max(after_start, 1e-9):,.1f} MB/s; "
      f"from its first data: {disk / 1e6 / max(growing, 1e-9):,.1f} MB/s")
PY
  for i in 1 2 3; do
    tail -n +"$((log_lines[i - 1] + 1))" "$work/t$i.log" | grep "snapshot sent" | sed 's/\x1b\[[0-9;]*m//g' |
      sed "s/^/[$name] sender t$i: /" || true
  done
  python3 "$tier_py" wait-settled --members "$members" --exact --timeout 30 > /dev/null &&
    python3 "$tier_py" state --members "$members" --follower "$follower" --follower-id "$FOLLOWER_ID" > "$work/state.json" &&
    python3 - "$name" "$work/state.json" <<'PY'
import json, sys
name, state = sys.argv[1], json.load(open(sys.argv[2]))
entries = {node: m["entries"] for node, m in state["members"].items()}
same = len({json.dumps(e, sort_keys=True) for e in entries.values()}) == 1
print(f"[{name}] members' entries per group: {entries}: " + ("agree" if same else "DIFFER"))
PY
done
echo "conditions: tier members on cpus ${TIER_CPUS:-any}, follower on cpus ${FOLLOWER_CPUS:-any};" \
  "$SHARDS groups, follower $FOLLOWER_SHARDS shards, conns=$CONNS, rate=$RATE; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
