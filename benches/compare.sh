#!/usr/bin/env bash
# wormdb against the machine's disk limit and two peers, in one run, on this
# machine. Systems are interleaved (the order rotates every round) and each
# is run ROUNDS times, because this shared machine is noisy; the table
# reports medians with min..max.
#
#   disk      fio: O_DIRECT sequential 1 MiB writes at queue depth 1 with an
#             fdatasync after each write (the I/O pattern of a durable
#             group commit), FIO_RUNTIME s on a FIO_SIZE file (fio is
#             installed with apt-get if missing; the script says so).
#   wormdb    a release `wormdb serve` (SHARDS shards, --durability
#             DURABILITY) on a fresh data dir under SCRATCH, driven over HTTP
#             with NDJSON batches of BATCH entries (3 tags, BODY_BYTES B
#             bodies) from CONNS connections for DURATION s after a WARMUP s
#             warm-up. Driver: target/release/wormdb-loadgen if it is there
#             and takes --rate (closed-loop `--rate max`), else wrk with
#             benches/http/ingest.lua and a LogHub payload from
#             benches/http/make_payload.py (https://github.com/logpai/loghub),
#             as benches/http/run.sh does. DRIVER=wrk|loadgen forces one.
#             entries/s counts entries the server acknowledged (its
#             /v1/stats ingest_entries) over the driver's run, whichever the
#             driver; the loadgen's own figure is printed beside it.
#   redis     ../shared/bench/peers/redis.sh always: Redis Streams XADD with
#             appendfsync always, REDIS_RECORDS records from REDIS_CLIENTS
#             clients pipelining REDIS_PIPE (by default CONNS and BATCH, the
#             wormdb shape). Records: ts + 2 tags + 256 B body (the peer
#             script's shape; its body is not LogHub text, which Redis
#             stores as is, uncompressed).
#   postgres  ../shared/bench/peers/postgres.sh: `\copy` of PG_ROWS rows
#             (ts, a 3-tag text[], 256 B body) into a LOGGED table with
#             fsync=on, synchronous_commit=on (the durable row), and into an
#             UNLOGGED table (not durable, for reference). Its pgbench part
#             runs for 1 s and is not reported.
#
# CPU-s per million entries is the server's own CPU (user + system, from
# /proc/PID/stat), never the client's: wormdb's process over the measured
# run; redis-server over its whole life (it only serves the benchmark);
# the postgres process tree over the COPY, sampled every 0.1 s and
# interpolated at the COPY's start and end (about +-5 %).
#
# The disk row converts MB/s into entries/s at wormdb's on-disk record size
# (its /v1/stats disk_bytes / entries after the runs, LZ4-compressed blocks):
# the rate at which the disk alone could absorb wormdb's records.
#
# Bounded: every fio and driver run has a duration, peer scripts a record
# count and a time cap (PEER_MAXT); scratch data (data dirs, AOF, fio file)
# lives in one temp dir under SCRATCH that is removed on exit, and every
# server this script starts is stopped on exit (trap). A system that cannot
# be installed or started is skipped with a note; the table still prints.
# Raw output (per-run logs, fio/loadgen JSON, results.tsv, table.txt) is kept
# in OUT_DIR.
#
# Usage: benches/compare.sh                   # ROUNDS=3 DURATION=20 (about 2 min per round)
#        ROUNDS=1 DURATION=5 benches/compare.sh   # smoke run: checks the script, not numbers
#        SYSTEMS="disk wormdb" benches/compare.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
peers=$repo/../shared/bench/peers

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
SYSTEMS=${SYSTEMS:-"disk wormdb redis postgres"}
CONNS=${CONNS:-32}
BATCH=${BATCH:-1000}
BODY_BYTES=${BODY_BYTES:-256}
SHARDS=${SHARDS:-2}
DURABILITY=${DURABILITY:-sync}
SERVE_ARGS=${SERVE_ARGS:-}
WRK_THREADS=${WRK_THREADS:-1}
DRIVER=${DRIVER:-auto}
LOADGEN=${LOADGEN:-$repo/target/release/wormdb-loadgen}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
BIN=${BIN:-$repo/target/release/wormdb}
FIO_RUNTIME=${FIO_RUNTIME:-$DURATION}
FIO_SIZE=${FIO_SIZE:-1G}
# About DURATION/2 s each at the rates in ../shared/bench/peers/RESULTS.md.
REDIS_RECORDS=${REDIS_RECORDS:-$((DURATION * 100000))}
REDIS_CLIENTS=${REDIS_CLIENTS:-$CONNS}
REDIS_PIPE=${REDIS_PIPE:-$BATCH}
PG_ROWS=${PG_ROWS:-$((DURATION * 50000))}
PEER_MAXT=${PEER_MAXT:-$((DURATION * 3 + 30))}
SCRATCH=${SCRATCH:-/tmp}
OUT_DIR=${OUT_DIR:-$repo/target/compare/$(date -u +%Y%m%dT%H%M%SZ)}

mkdir -p "$OUT_DIR" || { echo "cannot create OUT_DIR $OUT_DIR" >&2; exit 1; }
OUT_DIR=$(cd "$OUT_DIR" && pwd)
work=$(mktemp -d "$SCRATCH/wormdb-compare.XXXXXX") || { echo "cannot create a temp dir under $SCRATCH" >&2; exit 1; }
# postgres.sh runs its server as the postgres user, which must reach its BASE.
chmod 755 "$work"
results=$OUT_DIR/results.tsv
notes=$OUT_DIR/notes.txt
: > "$results"
: > "$notes"
hz=$(getconf CLK_TCK)

server_pid=""
sampler_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && { kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null; }
  [ -n "$server_pid" ] && { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
  # The peer scripts stop their own servers on exit; this catches a postgres
  # left behind if one of them was killed before its trap ran.
  if [ -f "$work/pg/data/postmaster.pid" ]; then
    pg_ctl=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)/pg_ctl
    runuser -u postgres -- "$pg_ctl" -D "$work/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "$*" | tee -a "$OUT_DIR/log.txt" >&2; }
note() { echo "$*" >> "$notes"; say "NOTE: $*"; }
# record SYSTEM ROUND ENTRIES_PER_S CPU_S_PER_MILLION [KEY=VALUE...]
record() { local IFS=$'\t'; echo "$*" >> "$results"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stamp_lines() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }

# --- helpers in Python: CPU sampling of peer servers, window interpolation, the table.
cat > "$work/cpu_sampler.py" <<'PY'
"""Prints "unix_time cpu_ticks" every 0.1 s for a server this script does not start itself:
  redis PORT      the redis-server whose title names 127.0.0.1:PORT (user + system)
  pgtree PIDFILE  the postmaster of PIDFILE and its children (user + system, plus the reaped
                  children's cutime + cstime of the postmaster: exited backends)"""
import os, sys, time

def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    return int(fields[1]), [int(x) for x in fields[11:15]]

def pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]

def redis_ticks(port):
    for pid in pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            if cmdline.startswith(b"redis-server") and f":{port}".encode() in cmdline:
                return sum(stat(pid)[1][:2])
        except OSError:
            pass
    return None

def pgtree_ticks(pidfile):
    try:
        with open(pidfile) as f:
            root = int(f.readline())
        total = sum(stat(root)[1])
    except (OSError, ValueError):
        return None
    for pid in pids():
        try:
            ppid, times = stat(pid)
            if ppid == root:
                total += sum(times[:2])
        except OSError:
            pass
    return total

mode, arg = sys.argv[1], sys.argv[2]
probe = (lambda: redis_ticks(arg)) if mode == "redis" else (lambda: pgtree_ticks(arg))
while True:
    ticks = probe()
    if ticks is not None:
        print(f"{time.time():.3f} {ticks}", flush=True)
    time.sleep(0.1)
PY
cat > "$work/cpu_window.py" <<'PY'
"""cpu_window.py SAMPLES HZ T0 T1: CPU seconds between T0 and T1, interpolated from the sampler's
lines; "last" as T0 T1 gives the last sample (a server's whole life)."""
import sys
samples = [tuple(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
hz = float(sys.argv[2])
if not samples:
    print("nan"); sys.exit()
if sys.argv[3] == "last":
    print(f"{samples[-1][1] / hz:.3f}"); sys.exit()
def at(t):
    if t <= samples[0][0]: return samples[0][1]
    for (ta, ca), (tb, cb) in zip(samples, samples[1:]):
        if ta <= t <= tb:
            return ca + (cb - ca) * (t - ta) / (tb - ta) if tb > ta else cb
    return samples[-1][1]
print(f"{(at(float(sys.argv[4])) - at(float(sys.argv[3]))) / hz:.3f}")
PY
cat > "$work/table.py" <<'PY'
"""table.py RESULTS NOTES: the summary table (medians over rounds, min..max)."""
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    parts = line.rstrip("\n").split("\t")
    if len(parts) < 4: continue
    system, _round, rate, cpu = parts[:4]
    extra = dict(kv.split("=", 1) for kv in parts[4:] if "=" in kv)
    rows.setdefault(system, []).append((float(rate), float(cpu), extra))

def med(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")

def spread(values):
    return f"{min(values):,.0f}..{max(values):,.0f}"

labels = {
    "wormdb": "wormdb HTTP NDJSON, durability={durability}, {shards} shards ({driver})",
    "redis": "Redis Streams XADD, AOF always",
    "postgres_copy_logged": "PostgreSQL COPY, logged, sync commit",
    "postgres_copy_unlogged": "PostgreSQL COPY, unlogged (NOT durable)",
}
base = med([r for r, _, _ in rows.get("wormdb", [])])
print(f"{'system':<58} {'entries/s median (min..max)':>34} {'CPU-s/M':>8} {'vs wormdb':>9} runs")
for system in ["wormdb", "redis", "postgres_copy_logged", "postgres_copy_unlogged"]:
    runs = rows.get(system)
    if not runs:
        label = labels[system].split(",")[0] if system == "wormdb" else labels[system]
        print(f"{label:<58} {'not measured (SYSTEMS, notes)':>34}")
        continue
    rates = [r for r, _, _ in runs]
    label = labels[system].format(**{k: runs[0][2].get(k, "?") for k in ("durability", "shards", "driver")})
    ratio = med(rates) / base if base == base and base > 0 else float("nan")
    print(f"{label:<58} {med(rates):>12,.0f} ({spread(rates):>19}) {med([c for _, c, _ in runs]):>8.2f} {ratio:>8.2f}x {len(runs)}")
disk = rows.get("disk")
wormdb_runs = rows.get("wormdb", [])
record_bytes = med([float(e["disk_bytes_per_entry"]) for _, _, e in wormdb_runs if "disk_bytes_per_entry" in e])
raw_bytes = med([float(e["raw_bytes_per_entry"]) for _, _, e in wormdb_runs if "raw_bytes_per_entry" in e])
if disk:
    mbps = [r for r, _, _ in disk]
    print(f"disk limit: {med(mbps):,.0f} MB/s ({spread(mbps)}; fio O_DIRECT 1 MiB writes, fdatasync after each, QD1)")
    if record_bytes == record_bytes:
        print(f"  = {med(mbps) * 1e6 / record_bytes:,.0f} entries/s at wormdb's {record_bytes:.0f} B per entry on disk"
              f" ({med(mbps) * 1e6 / raw_bytes:,.0f} entries/s at its {raw_bytes:.0f} B raw, uncompressed)")
    else:
        print("  (no wormdb run measured its on-disk record size)")
else:
    print("disk limit: not measured (SYSTEMS, notes)")
if record_bytes == record_bytes:
    payload = ("the wrk payload (make_payload.py: the same 1000 LogHub entries in every request, neighbours mostly"
               " from the same log file)" if any(e.get("driver") == "wrk" for _, _, e in wormdb_runs)
               else "the loadgen's payload")
    print(f"note: LZ4 stores {payload} {raw_bytes / record_bytes:.1f}x smaller; the on-disk entries/s holds for data"
          f" that compressible, not for all logs")
notes = [line.rstrip() for line in open(sys.argv[2]) if line.strip()]
for line in notes:
    print("note:", line)
PY

# --- conditions
say "# compare.sh $(date -u +%FT%TZ) source=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)"
say "# machine: nproc=$(nproc) cpu=\"$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)\" kernel=$(uname -r)" \
  "fs=$(df -T "$work" | awk 'NR==2{print $2" on "$1}') memlock=$(ulimit -l) loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
say "# settings: ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s SYSTEMS=\"$SYSTEMS\" CONNS=$CONNS BATCH=$BATCH" \
  "BODY_BYTES=$BODY_BYTES SHARDS=$SHARDS DURABILITY=$DURABILITY REDIS_RECORDS=$REDIS_RECORDS" \
  "REDIS_CLIENTS=$REDIS_CLIENTS REDIS_PIPE=$REDIS_PIPE PG_ROWS=$PG_ROWS FIO_RUNTIME=${FIO_RUNTIME}s OUT_DIR=$OUT_DIR"

# --- what each system needs; a system that cannot be prepared is dropped with a note.
enabled=()
for system in $SYSTEMS; do
  case $system in
    disk)
      if ! command -v fio >/dev/null; then
        say "fio is missing: installing it with 'apt-get install -y fio' (needed for the disk-limit row)"
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q fio > "$OUT_DIR/apt-fio.log" 2>&1 ||
          say "apt-get install fio failed (see $OUT_DIR/apt-fio.log)"
      fi
      if command -v fio >/dev/null; then enabled+=(disk); else note "disk: fio is not installed and could not be; row skipped"; fi
      ;;
    wormdb)
      if [ ! -x "$BIN" ]; then
        say "building $BIN (cargo build --release)"
        (cd "$repo" && cargo build --release --bin wormdb) > "$OUT_DIR/build.log" 2>&1 || true
      fi
      if [ "$DRIVER" = auto ]; then
        if [ -x "$LOADGEN" ] && "$LOADGEN" --help 2>&1 | grep -q -- '--rate'; then DRIVER=loadgen
        else
          DRIVER=wrk
          if [ -x "$LOADGEN" ]; then say "$LOADGEN does not take --rate (not finished yet?): using wrk"
          else say "no $LOADGEN: using wrk with benches/http/ingest.lua"; fi
        fi
      fi
      if [ "$DRIVER" = wrk ] && ! command -v wrk >/dev/null; then
        say "wrk is missing: installing it with 'apt-get install -y wrk'"
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q wrk > "$OUT_DIR/apt-wrk.log" 2>&1 ||
          say "apt-get install wrk failed (see $OUT_DIR/apt-wrk.log)"
      fi
      if [ ! -x "$BIN" ]; then note "wormdb: $BIN could not be built (see $OUT_DIR/build.log); row skipped"
      elif [ "$DRIVER" = wrk ] && ! command -v wrk >/dev/null; then note "wormdb: neither a working loadgen nor wrk; row skipped"
      else enabled+=(wormdb); fi
      ;;
    redis | postgres)
      if [ -x "$peers/$system.sh" ]; then enabled+=("$system")
      else note "$system: $peers/$system.sh not found; row skipped"; fi
      ;;
    *) note "unknown system '$system' in SYSTEMS; ignored" ;;
  esac
done
if [ ${#enabled[@]} -eq 0 ]; then say "nothing to run"; exit 1; fi

# --- disk: one fio run.
fio_engine=""
run_disk() {
  local round=$1 json=$OUT_DIR/fio.$1.json
  if [ -z "$fio_engine" ]; then
    fio_engine=libaio
    if timeout 10 fio --name=probe --filename="$work/fio.probe" --size=4M --rw=write --bs=1M --direct=1 \
         --ioengine=io_uring --output-format=terse >/dev/null 2>&1; then fio_engine=io_uring; fi
    rm -f "$work/fio.probe"
  fi
  if ! timeout $((FIO_RUNTIME + 120)) fio --name=seqw_sync --filename="$work/fio.seq" --size="$FIO_SIZE" --rw=write \
       --bs=1M --direct=1 --ioengine="$fio_engine" --iodepth=1 --fdatasync=1 --runtime="$FIO_RUNTIME" --time_based \
       --output-format=json --output="$json" > "$OUT_DIR/fio.$round.log" 2>&1; then
    rm -f "$work/fio.seq"
    note "disk round $round: fio failed: $(tail -2 "$OUT_DIR/fio.$round.log" | tr '\n' ' ')"
    return
  fi
  rm -f "$work/fio.seq"
  local summary
  summary=$(python3 -c '
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
write = job["write"]; sync = job.get("sync", {}).get("lat_ns", {}).get("percentile", {})
print(write["bw_bytes"] / 1e6, write["iops"], sync.get("50.000000", 0) / 1e3, sync.get("99.000000", 0) / 1e3)' "$json") || {
    note "disk round $round: cannot read $json"; return; }
  read -r mbps iops sync50 sync99 <<< "$summary"
  record disk "$round" "$mbps" nan "engine=$fio_engine"
  say "disk   round $round: $(printf '%.0f' "$mbps") MB/s, $(printf '%.0f' "$iops") writes/s, fdatasync p50 ${sync50} us p99 ${sync99} us ($fio_engine)"
}

# --- wormdb: a fresh server per run; the driver is a function so either path works.
payload=""
stats_sum() { # ADDR FIELD -> sum over shards of /v1/stats FIELD
  curl -s --max-time 10 "http://$1/v1/stats" |
    python3 -c "import json,sys; print(sum(s['$2'] for s in json.load(sys.stdin)['shards']))"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# drive_wrk ADDR SECONDS OUTFILE: prints "p50_us p90_us p99_us errors client_rate".
drive_wrk() {
  [ -n "$payload" ] || { payload=$work/payload.ndjson; python3 "$repo/benches/http/make_payload.py" "$BATCH" "$BODY_BYTES" > "$payload"; }
  PAYLOAD=$payload timeout $(($2 + 30)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"$2"s --latency -s "$repo/benches/http/ingest.lua" \
    "http://$1/v1/entries" > "$3" 2>&1
  python3 - "$3" "$BATCH" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def us(value, unit):
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
pct = {p: us(v, u) for p, v, u in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
errors = sum(map(int, re.findall(r"Non-2xx or 3xx responses: (\d+)", text)))
errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
print(pct.get("50", "nan"), pct.get("90", "nan"), pct.get("99", "nan"), errors,
      float(rate.group(1)) * int(sys.argv[2]) if rate else "nan")
PY
}

# drive_loadgen ADDR SECONDS OUTFILE: same output, from the loadgen's --json.
drive_loadgen() {
  # shellcheck disable=SC2086 # LOADGEN_ARGS is a list of extra flags
  timeout $(($2 + 60)) "$LOADGEN" --target "http://$1" --protocol http --rate max --duration "$2s" \
    --connections "$CONNS" --batch "$BATCH" --body-bytes "$BODY_BYTES" --tags 3:100 --json "$3.json" $LOADGEN_ARGS \
    > "$3" 2>&1 || echo "loadgen exited with status $?" >> "$3"
  python3 - "$3.json" <<'PY'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("nan nan nan nan nan"); sys.exit()
latency = report.get("latency_us", {})
errors = report.get("errors", 0)
if isinstance(errors, dict): errors = sum(errors.values())
print(latency.get("p50", "nan"), latency.get("p90", "nan"), latency.get("p99", "nan"), errors,
      report.get("entries_per_s", "nan"), report.get("cpu_s", "nan"))
PY
}

run_wormdb() {
  local round=$1 data=$work/wormdb log=$OUT_DIR/wormdb.$1.server.log addr="" e0 e1 c0 c1 t0 t1
  rm -rf "$data"
  "$BIN" serve --data-dir "$data" --http-addr 127.0.0.1:0 --shards "$SHARDS" --durability "$DURABILITY" $SERVE_ARGS 2> "$log" &
  server_pid=$!
  for _ in $(seq 1 100); do grep -q "http listening on" "$log" && break; kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  addr=$(grep -o "http listening on [0-9.:]*" "$log" | head -1 | awk '{print $4}')
  if [ -z "$addr" ]; then
    note "wormdb round $round: the server did not start: $(tail -2 "$log" | tr '\n' ' ')"
    kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=""; rm -rf "$data"; return
  fi
  # Warm-up (segment creation, page faults), then the measured run.
  "drive_$DRIVER" "$addr" "$WARMUP" "$OUT_DIR/wormdb.$round.warmup.txt" > /dev/null
  e0=$(stats_sum "$addr" ingest_entries); c0=$(cpu_ticks "$server_pid"); t0=$(date +%s.%N)
  local driven
  driven=$("drive_$DRIVER" "$addr" "$DURATION" "$OUT_DIR/wormdb.$round.driver.txt")
  e1=$(stats_sum "$addr" ingest_entries); c1=$(cpu_ticks "$server_pid"); t1=$(date +%s.%N)
  local entries disk raw
  entries=$(stats_sum "$addr" entries); disk=$(stats_sum "$addr" disk_bytes); raw=$(stats_sum "$addr" raw_bytes)
  kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=""
  rm -rf "$data"
  if [ -z "$e0" ] || [ -z "$e1" ] || [ "$e1" = "$e0" ]; then
    note "wormdb round $round: no entries acknowledged (driver output: $OUT_DIR/wormdb.$round.driver.txt)"; return
  fi
  local line
  line=$(python3 - "$e0" "$e1" "$c0" "$c1" "$t0" "$t1" "$hz" "$entries" "$disk" "$raw" $driven <<'PY'
import sys
e0, e1, c0, c1 = map(int, sys.argv[1:5]); t0, t1 = map(float, sys.argv[5:7]); hz = int(sys.argv[7])
entries, disk, raw = map(int, sys.argv[8:11]); p50, p90, p99, errors, client_rate = sys.argv[11:16]
cpu_s = sys.argv[16] if len(sys.argv) > 16 else "nan"
acked = e1 - e0; rate = acked / (t1 - t0); cpu = (c1 - c0) / hz
print(f"{rate:.0f} {cpu / (acked / 1e6):.3f} {disk / entries:.1f} {raw / entries:.1f} {p50} {p90} {p99} {errors} {client_rate} {cpu_s}")
PY
)
  read -r rate cpu_m disk_pe raw_pe p50 p90 p99 errors client_rate client_cpu <<< "$line"
  [ "$client_cpu" = nan ] && client_cpu="n/a (wrk does not report it)"
  record wormdb "$round" "$rate" "$cpu_m" "disk_bytes_per_entry=$disk_pe" "raw_bytes_per_entry=$raw_pe" \
    "driver=$DRIVER" "shards=$SHARDS" "durability=$DURABILITY" "p99_us=$p99" "errors=$errors"
  say "wormdb round $round: $rate entries/s acknowledged (driver says $client_rate), $cpu_m server CPU-s per million," \
    "latency p50/p90/p99 $p50/$p90/$p99 us per request, errors $errors, $disk_pe B per entry on disk ($raw_pe raw)," \
    "driver CPU-s $client_cpu [$DRIVER]"
}

# --- redis: the peer script, with a CPU sampler on its server.
run_redis() {
  local round=$1 port out=$OUT_DIR/redis.$1.txt cpu=$OUT_DIR/redis.$1.cpu
  port=$(free_port)
  python3 "$work/cpu_sampler.py" redis "$port" > "$cpu" &
  sampler_pid=$!
  BASE=$work/redis REDIS_PORT=$port N_ALWAYS=$REDIS_RECORDS CLIENTS=$REDIS_CLIENTS PIPE=$REDIS_PIPE MAXT=$PEER_MAXT \
    timeout $((PEER_MAXT + 360)) "$peers/redis.sh" always 2> "$out.stderr" | stamp_lines > "$out"
  kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null; sampler_pid=""
  local line
  line=$(grep -o 'peer=redis mode=always .*' "$out" | head -1)
  if [ -z "$line" ] || [[ $line == *error=* ]]; then
    note "redis round $round: no result (${line:-$(tail -2 "$out.stderr" | tr '\n' ' ')}); is redis-server installable?"; return
  fi
  local rate records cpu_s
  rate=$(sed -n 's/.*records_per_s=\([0-9.]*\).*/\1/p' <<< "$line")
  records=$(sed -n 's/.* records=\([0-9]*\).*/\1/p' <<< "$line")
  cpu_s=$(python3 "$work/cpu_window.py" "$cpu" "$hz" last)
  local cpu_m
  cpu_m=$(python3 -c "print(f'{$cpu_s / ($records / 1e6):.3f}')" 2>/dev/null || echo nan)
  record redis "$round" "$rate" "$cpu_m" "records=$records"
  say "redis  round $round: $rate records/s, $cpu_m server CPU-s per million ($line)"
}

# --- postgres: the peer script; CPU of the server tree over each COPY window.
run_postgres() {
  local round=$1 port out=$OUT_DIR/postgres.$1.txt cpu=$OUT_DIR/postgres.$1.cpu
  port=$(free_port)
  python3 "$work/cpu_sampler.py" pgtree "$work/pg/data/postmaster.pid" > "$cpu" &
  sampler_pid=$!
  BASE=$work/pg PG_PORT=$port ROWS=$PG_ROWS PGB_T=1 PGB_CLIENTS=4 MAXT=$PEER_MAXT \
    timeout $((PEER_MAXT * 2 + 360)) "$peers/postgres.sh" 2> "$out.stderr" | stamp_lines > "$out"
  kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null; sampler_pid=""
  local found=0 mode
  for mode in logged unlogged; do
    local stamped
    stamped=$(grep "peer=postgres mode=copy_$mode " "$out" | head -1)
    [ -n "$stamped" ] || continue
    found=1
    local t_line rate rows secs cpu_s cpu_m
    t_line=${stamped%% *}
    rate=$(sed -n 's/.*rows_per_s=\([0-9.]*\).*/\1/p' <<< "$stamped")
    rows=$(sed -n 's/.* rows=\([0-9]*\).*/\1/p' <<< "$stamped")
    secs=$(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<< "$stamped")
    cpu_s=$(python3 "$work/cpu_window.py" "$cpu" "$hz" "$(python3 -c "print($t_line - $secs)")" "$t_line")
    cpu_m=$(python3 -c "print(f'{$cpu_s / ($rows / 1e6):.3f}')" 2>/dev/null || echo nan)
    record "postgres_copy_$mode" "$round" "$rate" "$cpu_m" "rows=$rows"
    say "postgres round $round: COPY $mode $rate rows/s, $cpu_m server CPU-s per million (${stamped#* })"
  done
  [ $found = 1 ] || note "postgres round $round: no result ($(tail -2 "$out.stderr" | tr '\n' ' ')); is postgresql installable?"
}

# --- interleaved rounds: the order rotates, so drifting background load hits every system alike.
for round in $(seq 1 "$ROUNDS"); do
  count=${#enabled[@]}
  order=()
  for i in $(seq 0 $((count - 1))); do order+=("${enabled[$(((i + round - 1) % count))]}"); done
  say "== round $round of $ROUNDS: ${order[*]} (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
  for system in "${order[@]}"; do "run_$system" "$round"; done
done

echo
python3 "$work/table.py" "$results" "$notes" | tee "$OUT_DIR/table.txt"
echo "(medians over $ROUNDS rounds; raw output in $OUT_DIR)"
