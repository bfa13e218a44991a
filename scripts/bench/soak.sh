#!/usr/bin/env bash
# Soak: the guide's soak shape (2m:20,30m:20,2m:0) shortened to 10 minutes at
# 20 VUs (1m:20,8m:20,1m:0), hermetic: a fresh SQLite database, the test
# user seeded, mock-api (release, provider 200..800 ms as --spawn-mock's)
# as its own process on loopback, so its RSS can be sampled apart from
# loadgen's. Every SAMPLE_S seconds (default 10) the RSS of both processes
# is read from /proc; at the end the ledger audit runs on the database.
# Prints:
#   - RSS of mock-api and loadgen over time, and their growth after the
#     first minute (goal < 10 %): last sample and peak vs the sample at 60 s;
#   - http_req_duration p95 of minute 2 against the last minute (goal
#     within 20 %) and the last full minute at 20 VUs (minute 9);
#   - loadgen's exit code and the audit's.
# Usage: scripts/bench/soak.sh   (STAGES=..., SAMPLE_S=N to change them)
set -euo pipefail
cd "$(dirname "$0")/../.."
stages="${STAGES:-1m:20,8m:20,1m:0}"
sample_s="${SAMPLE_S:-10}"
cargo build --release --locked -q -p mock-api -p seed -p loadgen
bin=$PWD/target/release
work=$(mktemp -d)
mock_pid=
loadgen_pid=
cleanup() {
  for p in $loadgen_pid $mock_pid; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

echo "cores: $(nproc); load average at start: $(cut -d' ' -f1-3 /proc/loadavg); stages $stages"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
db="sqlite:$work/soak.db"
"$bin/seed" --database-url "$db" --credits 1000000 >/dev/null
env -i PATH="$PATH" BIND="127.0.0.1:$port" DATABASE_URL="$db" JWT_SECRET="soak-$RANDOM$RANDOM" \
  SEEDREAM4_MOCK_MIN_MS=200 SEEDREAM4_MOCK_MAX_MS=800 RUST_LOG=warn \
  "$bin/mock-api" --no-seed 2>"$work/mock.log" &
mock_pid=$!
for _ in $(seq 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done
curl -fs "$base/healthz" >/dev/null || { echo "mock-api did not start:" >&2; cat "$work/mock.log" >&2; exit 1; }

"$bin/loadgen" run --api-base "$base" --stages "$stages" --quiet \
  --out "json=$work/points.json" --summary-export "$work/summary.json" >"$work/loadgen.out" 2>&1 &
loadgen_pid=$!
start=$(date +%s)
echo "t_s mock_rss_mib loadgen_rss_mib" >"$work/rss"
while kill -0 "$loadgen_pid" 2>/dev/null; do
  t=$(( $(date +%s) - start ))
  echo "$t $(rss_kib "$mock_pid") $(rss_kib "$loadgen_pid")" >>"$work/rss"
  sleep "$sample_s"
done
set +e
wait "$loadgen_pid"; loadgen_exit=$?
set -e
loadgen_pid=
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
# Let the accepted generations finish before the audit.
for _ in $(seq 120); do
  processing=$(python3 - "$work/soak.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("select count(*) from generation_sessions where status = 'processing'").fetchone()[0])
PY
)
  [ "$processing" = 0 ] && break
  sleep 1
done
set +e
"$bin/loadgen" audit --database-url "$db" >"$work/audit.out" 2>&1; audit_exit=$?
set -e

python3 - "$work/rss" "$work/points.json" <<'PY'
import json, sys
from datetime import datetime

rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
rows = [(int(t), int(m) / 1024, int(g) / 1024) for t, m, g in rows if int(m) and int(g)]
print("RSS (MiB) every sample:")
for t, m, g in rows:
    print(f"  t={t:4d}s  mock-api {m:7.1f}  loadgen {g:7.1f}")
base = next(r for r in rows if r[0] >= 60)
for i, name in ((1, "mock-api"), (2, "loadgen")):
    after = [r[i] for r in rows if r[0] >= base[0]]
    print(f"{name}: {base[i]:.1f} MiB at t={base[0]}s; last {after[-1]:.1f} MiB "
          f"({(after[-1] / base[i] - 1) * 100:+.1f} %); peak after it {max(after):.1f} MiB "
          f"({(max(after) / base[i] - 1) * 100:+.1f} %)")

durations = []
for line in open(sys.argv[2]):
    p = json.loads(line)
    if p.get("type") == "Point" and p.get("metric") == "http_req_duration":
        d = p["data"]
        ts = datetime.fromisoformat(d["time"].replace("Z", "+00:00")).timestamp()
        durations.append((ts, d["value"]))
t0 = min(t for t, _ in durations)
end = max(t for t, _ in durations) - t0
def p95(lo, hi):
    v = sorted(x for t, x in durations if lo <= t - t0 < hi)
    return (v[int(0.95 * (len(v) - 1))] if v else float("nan")), len(v)
second, n2 = p95(60, 120)
print(f"http_req_duration p95: minute 2 {second:.2f} ms ({n2} requests)")
for label, lo, hi in (("last minute", end - 60, end + 1), ("minute 9 (last at 20 VUs)", 480, 540)):
    v, n = p95(lo, hi)
    print(f"  {label}: {v:.2f} ms ({n} requests), {(v / second - 1) * 100:+.1f} % vs minute 2")
PY
grep -E "iterations\.|http_reqs\.|http_req_duration\.|iteration_duration\." "$work/loadgen.out" || true
echo "loadgen exit $loadgen_exit; audit exit $audit_exit ($(grep -c '✓ I[0-9]' "$work/audit.out") of 7 invariants hold)"
