#!/usr/bin/env bash
# Logins/s of one account with LOGIN_CACHE=true then false (wrk, 50 connections, 8 s, loopback).
# Usage: scripts/bench/login-cache.sh after cargo build --release -p mock-api; run from the repository root.
set -u
work=$(mktemp -d)
echo "cores: $(nproc)"
for cache in true false; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  env -i PATH="$PATH" BIND="127.0.0.1:$port" DATABASE_URL="sqlite:$work/login-$cache.db" JWT_SECRET=bench \
    BCRYPT_COST=10 LOGIN_CACHE=$cache RUST_LOG=warn target/release/mock-api 2>"$work/$cache.log" &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  echo "LOGIN_CACHE=$cache:"
  timeout 60 wrk -t2 -c50 -d8s --timeout 30s -s scripts/bench/login.lua "http://127.0.0.1:$port/api/auth/login"
  curl -fs "http://127.0.0.1:$port/metrics" | grep '^mock_login_'
  kill $pid; wait $pid
done
rm -rf "$work"
