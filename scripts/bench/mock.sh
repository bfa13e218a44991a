#!/usr/bin/env bash
# Benchmarks of mock-api with a tool that is not ours (wrk), on loopback:
#   generate requests/s and p50/p99 at 50 connections, login once, no think
#   time — SQLite + embedded queue, then PostgreSQL + Redis (throwaway
#   servers in a temp dir), with pgbench running the same work (one
#   transaction per request, scripts/bench/generate.pgbench) against the
#   same PostgreSQL right after; logins/s at bcrypt cost 10 and 12.
#   After each generate run: the most undispatched outbox rows and
#   `processing` sessions seen during it (sampled every 0.5 s from the
#   database; also per half of the run: bounded, or growing with it)
#   and how long after the last request every accepted generation was
#   finished (drain), with a 1-2 ms provider and 50 workers; and the CPU
#   time mock-api, Redis and PostgreSQL used during the run and the drain.
# Usage: scripts/bench/mock.sh [seconds per run, default 10]
# Env: MOCK_BIN_DIR=DIR runs the mock-api and seed binaries in DIR (no
#   build; e.g. an older build to compare); BENCH_LOGIN=0 skips the logins;
#   BENCH_PG=0 skips PostgreSQL + Redis and pgbench.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
bin="${MOCK_BIN_DIR:-target/release}"
[ -n "${MOCK_BIN_DIR:-}" ] || cargo build --release --locked -q -p mock-api -p seed
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${pgdata:-}" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# cpu_ticks PID... -> clock ticks of CPU (user + system) the processes used
cpu_ticks() {
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
# cpu_s -> "mock redis postgres": CPU seconds each has used so far
# (PostgreSQL: every process of the postgres user; 0 for what is not running).
cpu_s() {
  echo "$(cpu_ticks $mock_pid) $(cpu_ticks ${redis_pid:-}) $(cpu_ticks $(pgrep -u postgres || true))" \
    | awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f %.2f %.2f", $1 / hz, $2 / hz, $3 / hz }'
}
# cpu_since "BEFORE" -> CPU seconds used since cpu_s answered BEFORE
cpu_since() {
  paste -d' ' <(echo "$1" | tr ' ' '\n') <(cpu_s | tr ' ' '\n') \
    | awk '{ d[NR] = $2 - $1 } END { printf "mock-api %.1f s, redis %.1f s, postgres %.1f s", d[1], d[2], d[3] }'
}

# start_mock NAME DATABASE_URL [REDIS_URL] -> sets port and mock_pid
start_mock() {
  port=$(free_port)
  env -i PATH="$PATH" BIND="127.0.0.1:$port" DATABASE_URL="$2" ${3:+REDIS_URL=$3} \
    JWT_SECRET=bench BCRYPT_COST="${COST:-10}" GEN_WORKER_CONCURRENCY=50 \
    SEEDREAM4_MOCK_MIN_MS=1 SEEDREAM4_MOCK_MAX_MS=2 RUST_LOG=warn \
    "$bin/mock-api" 2>"$work/$1.log" &
  mock_pid=$!
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  echo "mock-api did not start:"; cat "$work/$1.log"; exit 1
}

token() {
  curl -fs -X POST -H 'Content-Type: application/json' \
    -d '{"email":"test@example.com","password":"testpassword123"}' \
    "http://127.0.0.1:$port/api/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

# backlog DATABASE_URL -> "undispatched processing" now
backlog() {
  local sql="SELECT (SELECT COUNT(*) FROM outbox WHERE dispatched_at IS NULL), (SELECT COUNT(*) FROM generation_sessions WHERE status = 'processing')"
  case "$1" in
    sqlite:*) python3 -c 'import sqlite3,sys; c=sqlite3.connect("file:"+sys.argv[1]+"?mode=ro", uri=True, timeout=10); print(*c.execute(sys.argv[2]).fetchone())' "${1#sqlite:}" "$sql" ;;
    *) psql -XAt -F' ' "$1" -c "$sql" ;;
  esac
}

generate_bench() { # LABEL DATABASE_URL [REDIS_URL]
  "$bin/seed" --database-url "$2" --credits 100000000 >/dev/null
  start_mock "$1" "$2" "${3:-}"
  ( while :; do backlog "$2" || true; sleep 0.5; done ) >"$work/$1.backlog" 2>/dev/null &
  local sampler=$! cpu_before
  cpu_before=$(cpu_s)
  TOKEN=$(token) wrk -t2 -c50 -d"${secs}s" -s scripts/bench/generate.lua "http://127.0.0.1:$port/api/images/seedream4/generate" \
    | sed -n "s/^RESULT /generate $1: /p"
  local ended
  ended=$(date +%s.%N)
  kill "$sampler" 2>/dev/null || true
  echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "  CPU during the run: $(cpu_since "$cpu_before")"
  cpu_before=$(cpu_s)
  # Bounded or growing: the most seen in each half of the run.
  awk '{ u[NR] = $1; p[NR] = $2 }
    END { h = int(NR / 2)
      for (i = 1; i <= NR; i++) { k = (i <= h) ? 1 : 2; if (u[i] > mu[k]) mu[k] = u[i]; if (p[i] > mp[k]) mp[k] = p[i] }
      printf "  backlog during the run: max undispatched=%d max processing=%d (first half %d / %d, second half %d / %d)\n",
        (mu[1] > mu[2] ? mu[1] : mu[2]), (mp[1] > mp[2] ? mp[1] : mp[2]), mu[1], mp[1], mu[2], mp[2] }' "$work/$1.backlog"
  local left=1 waited=0
  while [ "$waited" -lt 600 ]; do
    left=$(backlog "$2" | cut -d' ' -f2)
    [ "$left" = 0 ] && break
    sleep 0.05; waited=$((waited + 1))
  done
  echo "  drained: $left processing left, $(echo "$(date +%s.%N) - $ended" | bc) s after the last request"
  echo "  CPU during the drain: $(cpu_since "$cpu_before")"
}

echo "cores: $(nproc)"
generate_bench sqlite+embedded "sqlite:$work/bench.db"

if [ "${BENCH_PG:-1}" != 0 ]; then
pgbin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
pgdata="$work/pg"
mkdir -p "$pgdata" && chown postgres "$pgdata" "$work" 2>/dev/null || true
runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -A trust -U postgres >/dev/null
pgport=$(free_port)
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" -w start >/dev/null
redisport=$(free_port)
redis-server --port "$redisport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis_pid=$!
pids+=($!)
pgurl="postgres://postgres@127.0.0.1:$pgport/postgres"
generate_bench postgres+redis "$pgurl" "redis://127.0.0.1:$redisport/"
# The peer: the same work as one transaction per request, same server, now.
user=$(psql -XAt "$pgurl" -c "SELECT id FROM users WHERE email = 'test@example.com'")
pgbench -n -h 127.0.0.1 -p "$pgport" -U postgres -c 50 -j 2 -T "$secs" -f scripts/bench/generate.pgbench -D user="'$user'" postgres 2>/dev/null \
  | sed -n 's/^tps = \([0-9.]*\).*/pgbench same work, 50 clients: tps=\1/p'
echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
[ "${BENCH_LOGIN:-1}" = 0 ] && exit 0

for cost in 10 12; do
  COST=$cost
  db="sqlite:$work/login$cost.db"
  "$bin/seed" --database-url "$db" --bcrypt-cost "$cost" >/dev/null
  start_mock "login$cost" "$db"
  # Few connections and a long timeout: a cost-12 hash takes ~0.25 s of a core.
  wrk -t2 -c8 -d"${secs}s" --timeout 30s -s scripts/bench/login.lua "http://127.0.0.1:$port/api/auth/login" \
    | sed -n "s/^RESULT /login bcrypt cost $cost: /p"
done
