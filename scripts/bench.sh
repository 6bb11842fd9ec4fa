#!/usr/bin/env bash
# The standard benchmark suite: builds release binaries, starts a fresh Redis and gateway on
# their own ports and data directory, runs the standard scenarios, and writes what they printed,
# with the date, the machine and the exact commands, into BENCHMARKS.md (between the markers).
#
#   scripts/bench.sh            # the full suite (about 10 minutes)
#   QUICK=1 scripts/bench.sh    # small and short, to check the script itself
#
# Everything runs on this machine, against 127.0.0.1 only, and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
REDIS_PORT=${REDIS_PORT:-16379}
GAME_PORT=${GAME_PORT:-17070}
ADMIN_PORT=${ADMIN_PORT:-17071}
POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
if [ "$QUICK" = 1 ]; then
  IDLE_CLIENTS=500; PING_CLIENTS=100; SECS=3; STORM=20; TOKENS=500
else
  IDLE_CLIENTS=10000; PING_CLIENTS=1000; SECS=20; STORM=200; TOKENS=10000
fi

work=$(mktemp -d /tmp/bench.XXXXXX)
out="$work/results.md"
redis_pid=""; gateway_pid=""
cleanup() {
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null && wait "$gateway_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building release binaries"
cargo build --release -q -p gateway -p loadtest
cargo build --release -q -p auth --example validate_bench

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
TARGET="ws://127.0.0.1:$GAME_PORT/"

# Starts a fresh gateway process (the data directory and Redis persist between them).
start_gateway() {
  stop_gateway
  target/release/gateway --data-dir "$work/data" --redis-url "$REDIS_URL" --key-prefix bench: \
    --listen "127.0.0.1:$GAME_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --login-failures-per-address 1000000 "$@" >>"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 100); do curl -sf "$ADMIN/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "gateway did not start" >&2; exit 1
}
stop_gateway() {
  if [ -n "$gateway_pid" ]; then kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; gateway_pid=""; fi
}

# Runs a command, records it and what it printed (minus progress lines) under a heading.
record() {
  local title=$1; shift
  echo "== $title"
  { echo; echo "### $title"; echo; echo '```'; echo "\$ $*"; } >>"$out"
  "$@" 2>&1 | grep -v '^\[progress\]' | tee -a "$out"
  echo '```' >>"$out"
}

LT=target/release/loadtest
{
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB,"
  echo "$(uname -sr), $(rustc --version). Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'),"
  echo "gateway, Redis and the load generator all on this one machine. Ports: game $GAME_PORT, admin $ADMIN_PORT, Redis $REDIS_PORT."
} >"$out"

start_gateway
record "Session tokens for the runs below (setup, not a figure)" \
  $LT prepare-sessions --target "$TARGET" --clients "$TOKENS" --username-prefix bench --out "$work/tokens.txt" --no-progress

record "Token validation through Redis (auth::Auth::validate_token)" \
  target/release/examples/validate_bench "$REDIS_URL"

start_gateway --requests-per-sec 1000000 --request-burst 1000000
record "Authenticated ping, closed loop, $PING_CLIENTS clients (the ceiling)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario ping --clients "$PING_CLIENTS" --ramp-up 2 --duration "$SECS" \
  --token-file "$work/tokens.txt" --no-progress

start_gateway
record "Idle authenticated connections: gateway memory per connection ($IDLE_CLIENTS connections)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario idle --clients "$IDLE_CLIENTS" --ramp-up 10 --duration 5 \
  --token-file "$work/tokens.txt" --no-progress

start_gateway
record "Ping p99 while $STORM clients log in over and over (100 others ping at 10/s each)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario "login-storm=$STORM,ping=100" --clients $((STORM + 100)) \
  --rate ping=10 --ramp-up 2 --duration "$SECS" --username-prefix bench --token-file "$work/tokens.txt" \
  --slo 'ping:p99<20ms' --no-progress || true
stop_gateway

# Replace what lies between the markers in BENCHMARKS.md with this run.
python3 - "$out" <<'PY'
import sys, pathlib
results = pathlib.Path(sys.argv[1]).read_text()
path = pathlib.Path("BENCHMARKS.md")
text = path.read_text()
start, end = "<!-- bench.sh:start -->", "<!-- bench.sh:end -->"
before, rest = text.split(start, 1)
_, after = rest.split(end, 1)
path.write_text(before + start + "\n" + results + "\n" + end + after)
PY
echo "== BENCHMARKS.md updated"
