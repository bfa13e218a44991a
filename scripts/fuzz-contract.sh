#!/usr/bin/env bash
# Fuzzes the mock's HTTP contract with schemathesis (pinned) against its own
# /openapi.json: a fresh mock on a free loopback port with a throwaway SQLite
# database, the four checks (not_a_server_error, status_code_conformance,
# content_type_conformance, response_schema_conformance), the examples,
# coverage, fuzzing and stateful phases, authenticated as the test user and,
# when ADMIN_EMAIL/ADMIN_PASSWORD are set, as the admin too (the admin
# routes only). Bounded: FUZZ_MAX_TIME seconds for the user's pass (default
# 110) and a third of that for the admin's, so the whole run stays under
# 3 minutes once built. Exit 0 only with zero failures, and 1 when the
# fuzzer finds the schema looser than what the API validates.
#
# FUZZ_VENV=DIR reuses (or creates) a virtualenv there instead of a
# temporary one; FUZZ_SEED=N replays a run.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
max_time=${FUZZ_MAX_TIME:-110}
seed=${FUZZ_SEED:-$RANDOM}
work=$(mktemp -d)
mock_pid=""
cleanup() {
  if [ -n "$mock_pid" ]; then kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

venv=$(realpath -m "${FUZZ_VENV:-$work/venv}")
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build -q -p mock-api --locked
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

# A short provider latency and a cheap bcrypt keep the run about the API,
# not about waiting; the mock's own deadline ends it if this script dies.
JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))') \
DATABASE_URL="sqlite:$work/fuzz.db" BCRYPT_COST=4 \
SEEDREAM4_MOCK_MIN_MS=5 SEEDREAM4_MOCK_MAX_MS=20 \
  timeout $((2 * max_time + 120)) target/debug/mock-api --bind "127.0.0.1:$port" \
  >"$work/mock.log" 2>&1 &
mock_pid=$!

python3 - "$base" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=2).read()
        break
    except Exception as e:
        if time.monotonic() > deadline:
            sys.exit(f"fuzz-contract: the mock did not answer /healthz within 60 s: {e}")
        time.sleep(0.1)
PY

# login EMAIL PASSWORD PATH → the token in the answer's body.
login() {
  python3 - "$base$3" "$1" "$2" <<'PY'
import json, sys, urllib.request
url, email, password = sys.argv[1:4]
request = urllib.request.Request(url, json.dumps({"email": email, "password": password}).encode(),
                                 {"Content-Type": "application/json"})
try:
    print(json.load(urllib.request.urlopen(request, timeout=10))["token"])
except Exception as e:
    sys.exit(f"fuzz-contract: login at {url} failed: {e}")
PY
}

# fuzz TOKEN SECONDS EXTRA-ARGS…: one pass; fails on any failure, and on
# the warning that the schema is looser than what the API validates.
fuzz() {
  local token=$1 seconds=$2
  shift 2
  # From the work directory: schemathesis keeps a cache where it runs.
  (cd "$work" && "$venv/bin/schemathesis" run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing,stateful \
    --max-time "$seconds" --seed "$seed" --workers 2 \
    --request-timeout 10 --generation-database none --generation-unique-inputs --no-color \
    --suppress-health-check too_slow \
    -H "Authorization: Bearer $token" "$@") | tee "$work/pass.log"
  local rc=${PIPESTATUS[0]}
  # The operations named under the mismatch warning. Register is exempt:
  # its 400s there are "Email already registered" (the generator repeats
  # e-mails), a conflict with the server's state no schema can describe.
  local loose
  loose=$(awk '/^Schema validation mismatch/ {on = 1; next} on && /^  - / {print} on && /^💡/ {on = 0}' \
    "$work/pass.log" | grep -v "POST /api/auth/register$" || true)
  if [ -n "$loose" ]; then
    echo "fuzz-contract: the OpenAPI schema is looser than the API's validation for:" >&2
    echo "$loose" >&2
    return 1
  fi
  return "$rc"
}

echo "fuzz-contract: schemathesis $SCHEMATHESIS_VERSION against $base, seed $seed"
user_token=$(login test@example.com testpassword123 /api/auth/login)
status=0
fuzz "$user_token" "$max_time" --exclude-path-regex '^/api/admin/users' || status=1
if [ -n "${ADMIN_EMAIL:-}" ] && [ -n "${ADMIN_PASSWORD:-}" ]; then
  admin_token=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD" /api/admin/login)
  fuzz "$admin_token" $((max_time / 3 + 1)) --include-path-regex '^/api/admin/users' || status=1
fi
if [ "$status" -ne 0 ]; then
  echo "fuzz-contract: failures (mock log: last lines below)" >&2
  tail -n 20 "$work/mock.log" >&2
fi
exit "$status"
