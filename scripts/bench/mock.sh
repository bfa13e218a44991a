#!/usr/bin/env bash
# Benchmarks of mock-api with a tool that is not ours (wrk), on loopback:
#   generate requests/s and p50/p99 at 50 connections, login once, no think
#   time — SQLite + embedded queue, then PostgreSQL + Redis (throwaway
#   servers in a temp dir); logins/s at bcrypt cost 10 and 12.
# Usage: scripts/bench/mock.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
cargo build --release --locked -q -p mock-api -p seed
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${pgdata:-}" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_mock NAME DATABASE_URL [REDIS_URL] -> sets port
start_mock() {
  port=$(free_port)
  env -i PATH="$PATH" BIND="127.0.0.1:$port" DATABASE_URL="$2" ${3:+REDIS_URL=$3} \
    JWT_SECRET=bench BCRYPT_COST="${COST:-10}" GEN_WORKER_CONCURRENCY=50 \
    SEEDREAM4_MOCK_MIN_MS=1 SEEDREAM4_MOCK_MAX_MS=5 RUST_LOG=warn \
    "$bin/mock-api" 2>"$work/$1.log" &
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  echo "mock-api did not start:"; cat "$work/$1.log"; exit 1
}

token() {
  curl -fs -X POST -H 'Content-Type: application/json' \
    -d '{"email":"test@example.com","password":"testpassword123"}' \
    "http://127.0.0.1:$port/api/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

generate_bench() { # LABEL DATABASE_URL [REDIS_URL]
  "$bin/seed" --database-url "$2" --credits 100000000 >/dev/null
  start_mock "$1" "$2" "${3:-}"
  TOKEN=$(token) wrk -t2 -c50 -d"${secs}s" -s scripts/bench/generate.lua "http://127.0.0.1:$port/api/images/seedream4/generate" \
    | sed -n "s/^RESULT /generate $1: /p"
}

echo "cores: $(nproc)"
generate_bench sqlite+embedded "sqlite:$work/bench.db"

pgbin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
pgdata="$work/pg"
mkdir -p "$pgdata" && chown postgres "$pgdata" "$work" 2>/dev/null || true
runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -A trust -U postgres >/dev/null
pgport=$(free_port)
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" -w start >/dev/null
redisport=$(free_port)
redis-server --port "$redisport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
generate_bench postgres+redis "postgres://postgres@127.0.0.1:$pgport/postgres" "redis://127.0.0.1:$redisport/"

for cost in 10 12; do
  COST=$cost
  db="sqlite:$work/login$cost.db"
  "$bin/seed" --database-url "$db" --bcrypt-cost "$cost" >/dev/null
  start_mock "login$cost" "$db"
  # Few connections and a long timeout: a cost-12 hash takes ~0.25 s of a core.
  wrk -t2 -c8 -d"${secs}s" --timeout 30s -s scripts/bench/login.lua "http://127.0.0.1:$port/api/auth/login" \
    | sed -n "s/^RESULT /login bcrypt cost $cost: /p"
done
