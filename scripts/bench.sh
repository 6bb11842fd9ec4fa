#!/usr/bin/env bash
# The standard benchmark suite: builds release binaries, starts a fresh Redis and gateway on
# their own ports and data directory, runs the standard scenarios, and writes what they printed,
# with the date, the machine and the exact commands, into BENCHMARKS.md (between the markers).
#
#   scripts/bench.sh            # the full suite (about 30 minutes, 10 of them the mixed run)
#   QUICK=1 scripts/bench.sh    # small and short, to check the script itself (writes bench-quick.md,
#                               # not BENCHMARKS.md)
#   MIX_SECS=60 scripts/bench.sh   # the full suite with a shorter mixed run
#
# Everything runs on this machine, against 127.0.0.1 only, and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
REDIS_PORT=${REDIS_PORT:-16379}
CRASH_REDIS_PORT=${CRASH_REDIS_PORT:-16380}
GAME_PORT=${GAME_PORT:-17070}
ADMIN_PORT=${ADMIN_PORT:-17071}
POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
if [ "$QUICK" = 1 ]; then
  PING_CLIENTS=100; SECS=3; STORM=20; PACED_CLIENTS=200; PG_SECS=1; CRASH_CLIENTS=100; CRASH_SECS=6
  IDLE_CLIENTS=500; ROOM_BIG=50; DM_CLIENTS=100; ROOM_SMALL=20; INVENTORY_CLIENTS=100; MIX_CLIENTS=200
  MATCH_CLIENTS=100
  MIX_SECS=${MIX_SECS:-10}
else
  PING_CLIENTS=1000; SECS=20; STORM=200; PACED_CLIENTS=2000; PG_SECS=10; CRASH_CLIENTS=1000; CRASH_SECS=20
  IDLE_CLIENTS=19000; ROOM_BIG=1000; DM_CLIENTS=2000; ROOM_SMALL=100; INVENTORY_CLIENTS=1000; MIX_CLIENTS=2000
  MATCH_CLIENTS=1000
  MIX_SECS=${MIX_SECS:-600}
fi
# One prepared session per client of the largest run (the idle one).
TOKENS=$IDLE_CLIENTS
# Per-client rates: the paced state run (2,000 × 25/s = 50,000 updates/s in the full suite), the
# 100-member room (× 20/s = 2,000 messages/s), and the 1,000-member room (× 0.05/s = 50
# messages/s, each delivered to 999 others).
PACED_RATE=25; ROOM_SMALL_RATE=20; ROOM_BIG_RATE=0.05
# The mixed blend, and each scenario's rate within it.
MIX="ping=1,state=2,chat=1,inventory=1"
MIX_RATES=(--rate ping=10 --rate state=25 --rate chat=0.5 --rate inventory=5)
MIX_ROOM=20

# What the runs below need, checked before half an hour of building and running: a missing tool
# or a taken port would otherwise stop the suite (or, for a port, measure someone else's server)
# minutes in.
for tool in redis-server redis-cli curl sqlite3 python3 git; do
  command -v "$tool" >/dev/null || { echo "bench.sh: $tool is not installed" >&2; exit 1; }
done
source scripts/lib/ports.sh
require_free_port "$REDIS_PORT" "Redis" REDIS_PORT
require_free_port "$CRASH_REDIS_PORT" "the crash run's Redis" CRASH_REDIS_PORT
require_free_port "$GAME_PORT" "the gateway's game port" GAME_PORT
require_free_port "$ADMIN_PORT" "the gateway's admin port" ADMIN_PORT

# The idle run holds 19,000 sockets in each of the gateway and the load generator.
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/bench.XXXXXX)
out="$work/results.md"
redis_pid=""; crash_redis_pid=""; gateway_pid=""
cleanup() {
  stop_gateway
  for pid in "$redis_pid" "$crash_redis_pid"; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building release binaries"
cargo build --release -q -p gateway -p loadtest
cargo build --release -q -p auth --example validate_bench
cargo build --release -q -p matchmaking --example pass_bench
cargo build --release -q -p player --example flush_bench
cargo build --release -q -p chat --example history_bench

# Starts a redis-server on port $1 with its files in $2 (loading $2/dump.rdb if there is one);
# sets $3 (redis_pid or crash_redis_pid) to its pid: set directly, not printed into a command
# substitution, so that the EXIT trap knows it even when the start fails.
start_redis() {
  require_free_port "$1" "Redis" "REDIS_PORT or CRASH_REDIS_PORT"
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --dir "$2" >>"$work/redis.log" 2>&1 &
  printf -v "$3" '%s' "$!"
  wait_for_redis "$1" "${!3}" "$work/redis.log"
}
start_redis "$REDIS_PORT" "$work" redis_pid
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
TARGET="ws://127.0.0.1:$GAME_PORT/"

# No chat send limit; the load test's item catalogue (scripts/bench-config.sh).
source scripts/bench-config.sh
write_bench_config "$work"
# The service token reaches the gateway and the load generator through the environment.
GAME_SERVICE_TOKEN="bench-service-token-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
export GAME_SERVICE_TOKEN LOADTEST_SERVICE_TOKEN=$GAME_SERVICE_TOKEN

# Where the next gateway keeps its shards and which Redis it uses.
gw_data="$work/data"; gw_redis="$REDIS_URL"

# Starts a fresh gateway process on $gw_data and $gw_redis (both persist between gateways).
start_gateway() {
  stop_gateway
  require_free_port "$GAME_PORT" "the gateway's game port" GAME_PORT
  require_free_port "$ADMIN_PORT" "the gateway's admin port" ADMIN_PORT
  target/release/gateway --config "$work/gateway.toml" --data-dir "$gw_data" --redis-url "$gw_redis" \
    --key-prefix bench: --listen "127.0.0.1:$GAME_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --login-failures-per-address 1000000 "$@" >>"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 100); do
    curl -sf "$ADMIN/healthz" >/dev/null 2>&1 && return
    started "$gateway_pid" gateway "$work/gateway.log" || exit 1
    sleep 0.1
  done
  echo "gateway did not start" >&2; exit 1
}
# Stops the gateway with SIGTERM (it drains and flushes), or SIGKILL after 60 s.
stop_gateway() {
  [ -n "$gateway_pid" ] || return 0
  kill -TERM "$gateway_pid" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$gateway_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$gateway_pid" 2>/dev/null || true
  wait "$gateway_pid" 2>/dev/null || true
  gateway_pid=""
}
# A fresh data directory holding only a copy of the accounts (so prepared sessions still name
# existing accounts); the gateway must be stopped.
fresh_data_dir() {
  stop_gateway
  mkdir -p "$1"
  cp "$work/data"/auth.db* "$1"/
}

# Runs a command, records it and what it printed (minus progress lines) under a heading.
record() {
  local title=$1; shift
  echo "== $title"
  { echo; echo "### $title"; echo; echo '```'; echo "\$ $*"; } >>"$out"
  "$@" 2>&1 | grep -v '^\[progress\]' | tee -a "$out"
  echo '```' >>"$out"
}
# Records text saved earlier ($3) under a heading, with the command ($2) that produced it.
record_saved() {
  echo "== $1"
  { echo; echo "### $1"; echo; echo '```'; echo "\$ $2"; cat "$3"; echo '```'; } | tee -a "$out"
}
# A figure from a JSON report: json FILE EXPRESSION (Python, on the report `r`).
json() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"; }
# What a Redis crash at $2 (ms since the epoch) took from the players in $1/player.db: for each
# player, the time from its last update that reached SQLite to the crash, during which its
# acknowledged updates lived only in Redis. Prints the longest and mean window and the updates
# they held at $3 updates per second per player.
lost_window() {
  sqlite3 "$1/player.db" "SELECT 'lost window per player: longest ' || max($2 - updated_at_ms) || ' ms, mean '
    || cast(avg($2 - updated_at_ms) AS INTEGER) || ' ms; acknowledged updates in it at $3/s: about '
    || cast(sum($2 - updated_at_ms) * $3 / 1000.0 AS INTEGER) FROM player_state"
}

LT=target/release/loadtest
TOKEN_FILE="$work/tokens.txt"
{
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB,"
  echo "$(uname -sr), $(rustc --version). Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'),"
  echo "gateway, Redis and the load generator all on this one machine. Ports: game $GAME_PORT, admin $ADMIN_PORT, Redis $REDIS_PORT."
  [ "$QUICK" = 1 ] && echo "QUICK=1: small and short runs that check the script, not figures to quote."
  echo "The code of commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' with uncommitted changes'); the mixed run lasts $MIX_SECS s."
  echo "Gateway settings beyond the flags shown (\`--config\`): chat sends unlimited, the inventory catalogue holds"
  echo "\`lt-coin\` and \`lt-gem\`; the service token comes from the environment."
} >"$out"

start_gateway
record "Session tokens for the runs below (setup, not a figure)" \
  $LT prepare-sessions --target "$TARGET" --clients "$TOKENS" --username-prefix bench --out "$TOKEN_FILE" --no-progress

record "Token validation through Redis (auth::Auth::validate_token)" \
  target/release/examples/validate_bench "$REDIS_URL"

start_gateway --requests-per-sec 1000000 --request-burst 1000000
record "Authenticated ping, closed loop, $PING_CLIENTS clients (the ceiling)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario ping --clients "$PING_CLIENTS" --ramp-up 2 --duration "$SECS" \
  --token-file "$TOKEN_FILE" --json "$work/ping.json" --no-progress
record "Player-state updates, closed loop, $PING_CLIENTS clients, on the same gateway right after ping" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario state --clients "$PING_CLIENTS" --ramp-up 2 --duration "$SECS" \
  --token-file "$TOKEN_FILE" --json "$work/state.json" --no-progress
state_closed=$(json "$work/state.json" "r['kinds']['update_state']['per_sec']")
ratio="updates/s ÷ pings/s = $(json "$work/state.json" "round(r['kinds']['update_state']['per_sec'] / json.load(open('$work/ping.json'))['kinds']['ping']['per_sec'], 3)")"
echo "$ratio" | tee -a "$out"

start_gateway
record "Player-state updates paced: $PACED_CLIENTS clients × $PACED_RATE/s (buffered mode)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario state --clients "$PACED_CLIENTS" --rate "state=$PACED_RATE" \
  --ramp-up 5 --duration "$SECS" --token-file "$TOKEN_FILE" --json "$work/paced.json" --no-progress
# The flusher's own figures over this gateway's life (only the paced run), once its last flush is in.
sleep 2
FLUSH_CMD="curl -s $ADMIN/metrics | grep '^player_'"
curl -s "$ADMIN/metrics" | grep '^player_' >"$work/flusher.txt"
awk '/^player_updates_accepted_total/{u=$2} /^player_rows_flushed_total/{r=$2} /^player_flushes_total/{f=$2}
     END{if (u>0) printf "rows per update %.4f; updates per flush %.0f\n", r/u, (f>0 ? u/f : 0)}' \
  "$work/flusher.txt" >>"$work/flusher.txt"

for mode in normal full; do
  gw_data="$work/direct-$mode"; fresh_data_dir "$gw_data"
  start_gateway --player-write-mode direct --synchronous "$mode" --requests-per-sec 1000000 --request-burst 1000000
  record "Player-state updates in direct mode (one SQLite transaction each), --synchronous $mode, closed loop, $PING_CLIENTS clients, fresh player.db" \
    $LT --target "$TARGET" --admin "$ADMIN" --scenario state --clients "$PING_CLIENTS" --ramp-up 2 --duration "$SECS" \
    --token-file "$TOKEN_FILE" --json "$work/direct-$mode.json" --no-progress
done
gw_data="$work/data"
stop_gateway

# Without a PostgreSQL at $POSTGRES_URL the error is recorded in place of the figures and the
# suite goes on (under set -e a failing record would end it here, half-way, BENCHMARKS.md untouched).
record "The same workload as plain PostgreSQL upserts (postgres-baseline)" \
  $LT postgres-baseline --postgres-url "$POSTGRES_URL" --concurrency 1,2,4,8,16,32 --duration "$PG_SECS" \
  --json "$work/pg.json" --no-progress || true
if [ -s "$work/pg.json" ]; then
  pg_best=$(json "$work/pg.json" "r['best']['per_sec']")
  echo "gateway (buffered, closed loop) ÷ PostgreSQL best = $(python3 -c "print(round($state_closed / $pg_best, 2))")" | tee -a "$out"
fi

record_saved "The flusher's figures after the paced run (player_* from the gateway's /metrics)" "$FLUSH_CMD" "$work/flusher.txt"

record "The flusher on its own: one pass over 100,000 buffered players, 1,000 rows per transaction (target: 500,000 rows/s into SQLite)" \
  target/release/examples/flush_bench

# Redis crash: a copy of the bench's Redis (sessions and a flushed buffer) and of its accounts, so
# the other runs keep theirs; `state` runs paced against it and its redis-server is killed with
# SIGKILL halfway through. Updates acknowledged but not in player.db afterwards were lost.
redis_crash() {
  local dir="$work/crash"
  mkdir -p "$dir/data"
  stop_gateway
  redis-cli -p "$REDIS_PORT" save >/dev/null
  cp "$work/dump.rdb" "$dir/"
  # A fresh player.db: its rows are then exactly the crash run's players.
  cp "$work/data"/auth.db* "$dir/data/"
  start_redis "$CRASH_REDIS_PORT" "$dir" crash_redis_pid
  gw_data="$dir/data"; gw_redis="redis://127.0.0.1:$CRASH_REDIS_PORT"
  start_gateway
  echo "\$ $LT --target $TARGET --admin $ADMIN --scenario state --clients $CRASH_CLIENTS --rate state=$PACED_RATE --ramp-up 2 --duration $CRASH_SECS --token-file tokens.txt --json crash.json --no-progress &"
  $LT --target "$TARGET" --admin "$ADMIN" --scenario state --clients "$CRASH_CLIENTS" --rate "state=$PACED_RATE" \
    --ramp-up 2 --duration "$CRASH_SECS" --token-file "$TOKEN_FILE" --json "$dir/crash.json" --no-progress \
    >"$dir/loadtest.txt" 2>&1 &
  local lt_pid=$!
  sleep $((2 + CRASH_SECS / 2))
  echo "\$ curl -s $ADMIN/metrics | grep '^player_'   # just before the kill"
  curl -s "$ADMIN/metrics" | grep '^player_'
  echo "\$ kill -9 <the crash Redis>"
  local killed_ms; killed_ms=$(date +%s%3N)
  kill -9 "$crash_redis_pid"; wait "$crash_redis_pid" 2>/dev/null || true; crash_redis_pid=""
  wait "$lt_pid" || true
  stop_gateway
  grep -v '^\[progress\]' "$dir/loadtest.txt"
  # Versions come from one sequence shared by all players, so they do not count a player's
  # updates; every client updates at the paced rate until the crash, so the time between a
  # player's last flushed update and the kill measures what it lost.
  lost_window "$dir/data" "$killed_ms" "$PACED_RATE"
  gw_data="$work/data"; gw_redis="$REDIS_URL"
}
record "Redis killed (SIGKILL) under paced state load: acknowledged updates lost" redis_crash

start_gateway
record "Idle authenticated connections: gateway memory per connection ($IDLE_CLIENTS connections)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario idle --clients "$IDLE_CLIENTS" --ramp-up 20 --duration 5 \
  --source-addr 127.0.0.2 --source-addr 127.0.0.3 --token-file "$TOKEN_FILE" --no-progress

start_gateway
record "Ping p99 while $STORM clients log in over and over (100 others ping at 10/s each)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario "login-storm=$STORM,ping=100" --clients $((STORM + 100)) \
  --rate ping=10 --ramp-up 2 --duration "$SECS" --username-prefix bench --token-file "$TOKEN_FILE" \
  --slo 'ping:p99<20ms' --no-progress || true

start_gateway --requests-per-sec 1000000 --request-burst 1000000
record "Chat: $ROOM_BIG members in one room, each sending $ROOM_BIG_RATE/s (every message delivered to the $((ROOM_BIG - 1)) others)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario chat --clients "$ROOM_BIG" --chat-room-size "$ROOM_BIG" \
  --rate "chat=$ROOM_BIG_RATE" --ramp-up 5 --duration "$SECS" --token-file "$TOKEN_FILE" --no-progress
record "Chat: $((DM_CLIENTS / 2)) direct-message pairs, closed loop" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario chat --chat-dm --clients "$DM_CLIENTS" \
  --ramp-up 5 --duration "$SECS" --token-file "$TOKEN_FILE" --no-progress
record "Chat: $((ROOM_SMALL * ${ROOM_SMALL_RATE%.*})) messages/s into one $ROOM_SMALL-member room (p99 delivery target: 50 ms)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario chat --clients "$ROOM_SMALL" --chat-room-size "$ROOM_SMALL" \
  --rate "chat=$ROOM_SMALL_RATE" --ramp-up 2 --duration "$SECS" --token-file "$TOKEN_FILE" \
  --slo 'chat_delivery:p99<50ms' --no-progress || true

record "Inventory: $INVENTORY_CLIENTS clients trading in pairs, closed loop (durable transactions)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario inventory --clients "$INVENTORY_CLIENTS" \
  --ramp-up 5 --duration "$SECS" --token-file "$TOKEN_FILE" --no-progress

# The 10-million-message shard is built on the first run (about a minute) and kept for the next.
record "Chat history pages on a year's shard of 10 million messages (target: p99 under 2 ms)" \
  target/release/examples/history_bench /tmp/chat-history-bench

record "Matchmaker: one pass over 10,000 tickets (target: under 50 ms)" \
  target/release/examples/pass_bench

# Every bench account starts at the same rating (1500): all tickets fall in one window, so the
# wait is the matchmaker's interval (1 s by default) plus the pass, not a search for partners.
start_gateway
record "Match: $MATCH_CLIENTS clients queue for duel, play (players agree on the result) and queue again; time to match (match_wait)" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario match --match-mode duel --clients "$MATCH_CLIENTS" \
  --ramp-up 2 --duration "$SECS" --token-file "$TOKEN_FILE" --no-progress

start_gateway
record "Mixed: $MIX_CLIENTS clients ($MIX; chat rooms of $MIX_ROOM), paced, $MIX_SECS s" \
  $LT --target "$TARGET" --admin "$ADMIN" --scenario mixed --mix "$MIX" --clients "$MIX_CLIENTS" "${MIX_RATES[@]}" \
  --chat-room-size "$MIX_ROOM" --ramp-up 10 --duration "$MIX_SECS" --token-file "$TOKEN_FILE" \
  --json "$work/mixed.json" --no-progress
stop_gateway

# Replace what lies between the markers in BENCHMARKS.md with this run; a QUICK run's figures
# are not to be quoted, so they are printed and kept in a file of their own instead.
if [ "$QUICK" = 1 ]; then
  cp "$out" bench-quick.md
  echo "== QUICK=1: BENCHMARKS.md left as it was; this run's output is in bench-quick.md"
  exit 0
fi
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
