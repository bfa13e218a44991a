#!/usr/bin/env bash
# Fuzzes the mock's HTTP contract with schemathesis (pinned) against its own
# /openapi.json: a fresh mock on a free loopback port with a throwaway SQLite
# database, the four checks (not_a_server_error, status_code_conformance,
# content_type_conformance, response_schema_conformance), the examples,
# coverage, fuzzing and stateful phases, authenticated as the test user and,
# when ADMIN_EMAIL/ADMIN_PASSWORD are set, as the admin too (the admin
# routes only). State the schema cannot describe (unique e-mails, an
# existing user id) comes from scripts/fuzz_hooks.py.
#
# Reproducible and bounded: a fixed seed (FUZZ_SEED, default 1) and
# FUZZ_EXAMPLES generated cases per operation and phase (default 100: over
# 1,000 cases in all, plus the stateful scenarios), with FUZZ_MAX_TIME
# seconds (default 150) as a hard stop for the whole run.
#
# Exit 0 only with zero failures. Two kinds of failure are told apart on
# the last line, and both exit non-zero:
#   "fuzz-contract: CONTRACT FAILURE …" (exit 1): the API broke a check, or
#     the fuzzer found the schema looser than what the API validates;
#   "fuzz-contract: TOOL FAILURE …" (exit 2): schemathesis itself crashed
#     (an internal error, a Python traceback) or could not run, which says
#     nothing about the API.
#
# One worker: the "SystemError: AST constructor recursion depth mismatch"
# seen once on GET history (CPython 3.11.7) is CPython's, not the API's
# (reported as gh-106905: building ASTs from several threads); a single
# worker thread keeps out of it, and should it come back it is a TOOL
# FAILURE. The virtualenv uses FUZZ_PYTHON (default: the system's
# /usr/bin/python3 when there is one, else python3 on PATH). FUZZ_VENV=DIR reuses (or
# creates) a virtualenv there instead of a temporary one.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

SCHEMATHESIS_VERSION=4.32.5
max_time=${FUZZ_MAX_TIME:-150}
examples=${FUZZ_EXAMPLES:-100}
seed=${FUZZ_SEED:-1}
python=${FUZZ_PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
work=$(mktemp -d)
mock_pid=""
cleanup() {
  if [ -n "$mock_pid" ]; then kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

venv=$(realpath -m "${FUZZ_VENV:-$work/venv}")
tool_failure() {
  echo "fuzz-contract: TOOL FAILURE (not a contract failure): $*" >&2
  exit 2
}
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  "$python" -m venv "$venv" || tool_failure "cannot make a virtualenv with $python"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" ||
    tool_failure "cannot install schemathesis $SCHEMATHESIS_VERSION"
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

# login EMAIL PASSWORD PATH FIELD → FIELD of the answer's body (the token,
# or the user's id).
login() {
  python3 - "$base$3" "$1" "$2" "$4" <<'PY'
import json, sys, urllib.request
url, email, password, field = sys.argv[1:5]
request = urllib.request.Request(url, json.dumps({"email": email, "password": password}).encode(),
                                 {"Content-Type": "application/json"})
try:
    print(json.load(urllib.request.urlopen(request, timeout=10))[field])
except Exception as e:
    sys.exit(f"fuzz-contract: login at {url} failed: {e}")
PY
}

# fuzz NAME TOKEN SECONDS EXTRA-ARGS…: one pass, its log in $work/NAME.log.
# Returns 0 when clean, 1 on a contract failure (a failed check, or the
# warning that the schema is looser than what the API validates), 2 when
# schemathesis itself failed.
fuzz() {
  local name=$1 token=$2 seconds=$3
  shift 3
  local log="$work/$name.log"
  # From the work directory: schemathesis keeps a cache where it runs.
  (cd "$work" && SCHEMATHESIS_HOOKS=fuzz_hooks PYTHONPATH="$repo/scripts" \
    timeout --kill-after=10 "$seconds" "$venv/bin/schemathesis" run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$examples" --seed "$seed" --workers 1 \
    --request-timeout 10 --generation-database none --generation-unique-inputs --no-color \
    --suppress-health-check too_slow \
    -H "Authorization: Bearer $token" "$@") >"$log" 2>&1
  local rc=$?
  cat "$log"
  # A crash inside the tool (schemathesis' own errors, a Python traceback,
  # a timeout) is not a verdict on the API.
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "fuzz-contract: $name pass: schemathesis did not finish within $seconds s" >&2
    return 2
  fi
  if grep -qE '^Traceback|SystemError|Internal Error|INTERNAL ERROR|^=+ ERRORS =+' "$log"; then
    echo "fuzz-contract: $name pass: schemathesis reported an error of its own (above)" >&2
    return 2
  fi
  if grep -qE '^=+ FAILURES =+' "$log"; then
    return 1
  fi
  local loose
  loose=$(awk '/^Schema validation mismatch/ {on = 1; next} on && /^  - / {print} on && /^💡/ {on = 0}' "$log")
  if [ -n "$loose" ]; then
    echo "fuzz-contract: $name pass: the OpenAPI schema is looser than the API's validation for:" >&2
    echo "$loose" >&2
    return 1
  fi
  # Anything else non-zero (a bad option, an unreachable schema) is the
  # tool's, not the contract's.
  if [ "$rc" -ne 0 ]; then
    echo "fuzz-contract: $name pass: schemathesis exited $rc without a failure of the API" >&2
    return 2
  fi
  if ! grep -qE '^  [0-9]+ generated, [0-9]+ passed$' "$log"; then
    echo "fuzz-contract: $name pass: no test case ran" >&2
    return 2
  fi
  return 0
}

echo "fuzz-contract: schemathesis $SCHEMATHESIS_VERSION ($("$venv/bin/python" --version)) against $base, seed $seed, $examples examples"
user_token=$(login test@example.com testpassword123 /api/auth/login token)
FUZZ_USER_ID=$(login test@example.com testpassword123 /api/auth/login id)
export FUZZ_USER_ID
contract=0
tool=0
record() {
  case $1 in
    0) ;;
    1) contract=1 ;;
    *) tool=1 ;;
  esac
}
started=$SECONDS
rc=0
fuzz user "$user_token" "$max_time" --exclude-path-regex '^/api/admin/users' || rc=$?
record "$rc"
if [ -n "${ADMIN_EMAIL:-}" ] && [ -n "${ADMIN_PASSWORD:-}" ]; then
  admin_token=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD" /api/admin/login token)
  left=$((max_time - (SECONDS - started)))
  [ "$left" -gt 10 ] || left=10
  rc=0
  fuzz admin "$admin_token" "$left" --include-path-regex '^/api/admin/users' || rc=$?
  record "$rc"
fi
cases=$(cat "$work"/*.log | awk '/^  [0-9]+ generated, [0-9]+ passed$/ {n += $1} END {print n + 0}')
if [ "$contract" -ne 0 ]; then
  echo "fuzz-contract: mock log, last lines:" >&2
  tail -n 20 "$work/mock.log" >&2
  echo "fuzz-contract: CONTRACT FAILURE (seed $seed; replay with FUZZ_SEED=$seed)" >&2
  exit 1
fi
if [ "$tool" -ne 0 ]; then
  tool_failure "schemathesis failed on its own (seed $seed), see above"
fi
echo "fuzz-contract: $cases cases, zero failures in $((SECONDS - started)) s"
