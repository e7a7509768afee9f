#!/usr/bin/env bash
# What TLS and tokens cost (issue 17, "Performance"), in one run on this
# machine: ingest through a release `wormdb serve` (SHARDS shards) in two
# modes, alternated ROUNDS times so both see the same noise:
#   plain    no TLS, no tokens (the loopback default);
#   secure   --tls-cert/--tls-key on both listeners and --auth-tokens: the
#            HTTP client sends a bearer token over HTTPS; the gRPC client
#            pushes as a follower (WormReplication.Replicate) over TLS with
#            a token limited to its id.
# Each mode runs `wormdb-loadgen --rate max` for DURATION s after WARMUP s,
# HTTP NDJSON (BATCH entries a request, CONNS connections) and then gRPC
# pushes (CONNS streams), with LogHub bodies (https://github.com/logpai/loghub).
# Reported per mode and protocol: the median entries/s the server
# acknowledged (its /v1/stats ingest_entries over the measured time) and
# the server's CPU-s per million entries (user + system, /proc/PID/stat),
# with min..max; then secure/plain as a ratio (goal: >= 85 %).
# Then handshakes: `openssl s_time -new` opens new TLS connections to the
# HTTPS port for HANDSHAKE_SECONDS; reported: connections/s and the
# server's CPU-ms per handshake, so handshakes per second per core =
# 1000 / that (the client's own CPU is on the same 2 cores: the rate is a
# floor, the per-core figure is the server's cost).
# Usage: benches/security.sh   (ROUNDS=3 DURATION=10 WARMUP=2 SHARDS=2
#        CONNS=8 BATCH=500 HANDSHAKE_SECONDS=10)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SHARDS=${SHARDS:-2}
CONNS=${CONNS:-8}
BATCH=${BATCH:-500}
HANDSHAKE_SECONDS=${HANDSHAKE_SECONDS:-10}
BIN=${BIN:-$repo/target/release/wormdb}
LOADGEN=${LOADGEN:-$repo/target/release/wormdb-loadgen}
[ -x "$BIN" ] && [ -x "$LOADGEN" ] || (cd "$repo" && cargo build --release --bin wormdb && cargo build --release -p wormdb-loadgen)
command -v openssl > /dev/null || { echo "openssl is missing (scripts/test-deps.sh installs it)" >&2; exit 1; }

work=$(mktemp -d /tmp/wormdb-security-bench.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2> /dev/null && wait "$pid" 2> /dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# LogHub bodies, one a line, for the loadgen.
loghub=$repo/../shared/data/loghub
[ -d "$loghub" ] || loghub=$repo/tests/data/loghub
cat "$loghub"/*_2k.log > "$work/bodies.txt"

# The CA, the server's certificate (IP 127.0.0.1), the tokens.
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=bench CA" \
  -keyout ca.key -out ca.pem 2> /dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout server.key -out server.csr 2> /dev/null
printf 'basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 30 -extfile server.ext -out server.pem 2> /dev/null
secret=$(openssl rand -hex 32)
digest=$(printf %s "$secret" | sha256sum | cut -d' ' -f1)
printf '[[token]]\nname = "bench"\nsha256 = "%s"\nscopes = ["ingest", "metrics"]\nfollower_ids = [77]\n' "$digest" > tokens.toml
cd - > /dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
grpc_port=$(free_port)

# start MODE: a fresh node in MODE; sets $pid.
start() {
  local -a extra=()
  [ "$1" = secure ] && extra=(--tls-cert "$work/server.pem" --tls-key "$work/server.key" --auth-tokens "$work/tokens.toml")
  rm -rf "$work/data"
  "$BIN" serve --data-dir "$work/data" --http-addr "127.0.0.1:$http_port" --grpc-addr "127.0.0.1:$grpc_port" \
    --shards "$SHARDS" "${extra[@]}" 2> "$work/node.log" &
  pid=$!
  for _ in $(seq 1 200); do
    [ "$(grep -c "grpc listening on" "$work/node.log" || true)" -ge "$SHARDS" ] && return
    sleep 0.05
  done
  echo "the node did not start:" >&2
  tail -5 "$work/node.log" >&2
  exit 1
}

stop() { kill "$pid"; wait "$pid" 2> /dev/null || true; pid=""; }

# ingested MODE: the entries the node acknowledged so far.
ingested() {
  local -a curl_args=(-s "http://127.0.0.1:$http_port/v1/stats")
  [ "$1" = secure ] && curl_args=(-s --cacert "$work/ca.pem" -H "authorization: Bearer $secret" "https://127.0.0.1:$http_port/v1/stats")
  # Direct ingest, and what follower pushes archived.
  curl "${curl_args[@]}" | python3 -c 'import json,sys; d = json.load(sys.stdin)
print(sum(s.get("ingest_entries") or 0 for s in d["shards"]) + sum(w.get("written") or 0 for w in d.get("watermarks") or []))'
}

cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$pid/stat"; }

# run MODE PROTOCOL: one measurement; appends "MODE PROTOCOL entries/s cpu-s/M".
run() {
  local mode=$1 protocol=$2
  local -a target=(--target "http://127.0.0.1:$http_port") auth=()
  [ "$protocol" = grpc ] && target=(--target "127.0.0.1:$grpc_port" --protocol grpc --follower-id 77)
  if [ "$mode" = secure ]; then
    auth=(--tls-ca "$work/ca.pem" --token "$secret")
    [ "$protocol" = http ] && target=(--target "https://127.0.0.1:$http_port")
  fi
  start "$mode"
  "$LOADGEN" "${target[@]}" "${auth[@]}" --rate max --duration "${WARMUP}s" --connections "$CONNS" \
    --batch "$BATCH" --payload-file "$work/bodies.txt" > /dev/null 2>&1 || true
  local e0 c0 t0 e1 c1 t1
  e0=$(ingested "$mode"); c0=$(cpu_s); t0=$(date +%s.%N)
  "$LOADGEN" "${target[@]}" "${auth[@]}" --rate max --duration "${DURATION}s" --connections "$CONNS" \
    --batch "$BATCH" --payload-file "$work/bodies.txt" > "$work/loadgen.out" 2>&1 || { cat "$work/loadgen.out" >&2; exit 1; }
  e1=$(ingested "$mode"); c1=$(cpu_s); t1=$(date +%s.%N)
  stop
  python3 -c "
e, c, t = $e1 - $e0, $c1 - $c0, $t1 - $t0
print('$mode $protocol', round(e / t), round(c / (e / 1e6), 3) if e else 'nan')" >> "$work/results.txt"
  tail -1 "$work/results.txt"
}

echo "== TLS and tokens against plaintext: $ROUNDS rounds, ${DURATION} s each, $SHARDS shards, $CONNS connections, batches of $BATCH"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg)," \
  "source $(git -C "$repo" rev-parse --short HEAD 2> /dev/null || echo unknown)"
for round in $(seq 1 "$ROUNDS"); do
  for protocol in http grpc; do
    # The order alternates every round.
    if [ $((round % 2)) -eq 1 ]; then modes="plain secure"; else modes="secure plain"; fi
    for mode in $modes; do run "$mode" "$protocol"; done
  done
done

echo "== medians (min..max)"
python3 - "$work/results.txt" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
table = {}
for mode, protocol, rate, cpu in rows:
    table.setdefault((mode, protocol), []).append((float(rate), float(cpu)))
for protocol in ("http", "grpc"):
    medians = {}
    for mode in ("plain", "secure"):
        runs = table[(mode, protocol)]
        rates, cpus = [r for r, _ in runs], [c for _, c in runs]
        medians[mode] = (statistics.median(rates), statistics.median(cpus))
        print(f"{protocol:5} {mode:7} {medians[mode][0]:>12,.0f} entries/s ({min(rates):,.0f}..{max(rates):,.0f})"
              f"   {medians[mode][1]:.3f} CPU-s/M ({min(cpus):.3f}..{max(cpus):.3f})")
    ratio = medians["secure"][0] / medians["plain"][0]
    cost = medians["secure"][1] / medians["plain"][1]
    print(f"{protocol:5} secure/plain: throughput {ratio:.1%} (goal >= 85 %), CPU per entry {cost:.2f}x")
PY

echo "== TLS handshakes: openssl s_time -new for ${HANDSHAKE_SECONDS} s against the HTTPS port"
start secure
c0=$(cpu_s)
openssl s_time -connect "127.0.0.1:$http_port" -new -time "$HANDSHAKE_SECONDS" -CAfile "$work/ca.pem" > "$work/s_time.out" 2>&1 || true
c1=$(cpu_s)
stop
python3 - "$work/s_time.out" "$c0" "$c1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
cpu = float(sys.argv[3]) - float(sys.argv[2])
match = re.search(r"(\d+) connections in ([\d.]+)s", text) or re.search(r"(\d+) connections in (\d+) real seconds", text)
if not match:
    sys.exit("openssl s_time said:\n" + text)
count, seconds = int(match.group(1)), float(match.group(2))
print(f"{count} new TLS connections in {seconds:.1f} s: {count / seconds:,.0f}/s with the client on the same cores; "
      f"server CPU {cpu:.2f} s: {cpu * 1000 / count:.3f} ms per handshake, "
      f"so about {count / cpu:,.0f} handshakes per second per core")
PY
echo "conditions: load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
