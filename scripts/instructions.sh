#!/usr/bin/env bash
# Counts the instructions the gateway runs per request under valgrind's callgrind: a figure the
# machine's noise does not move, for comparing builds where CPU time per request moves by a
# fifth from one run to the next. User space only (system calls are not counted), and callgrind
# runs the gateway some 50 times slower, so few clients and a low rate: per-batch costs weigh
# more here than at full load.
#
#   scripts/instructions.sh DIR CASE [CLIENTS]
#
# DIR holds a `gateway` and a `loadtest` binary (say target/release); CASE is `state`, `ping` or
# `dm` (direct messages in pairs), closed loop, CLIENTS clients (default 20). Starts its own redis-server (port $INSTR_REDIS_PORT,
# default 46393) and gateway ($INSTR_GAME_PORT, admin $INSTR_ADMIN_PORT: 47090, 47091); a 3 s
# warm-up is not counted, the next 10 s are.
# INSTR_KEEP=1 keeps the working directory, callgrind.out in it, for callgrind_annotate.
set -euo pipefail

[ $# -ge 2 ] && [ $# -le 3 ] || { sed -n '2,15p' "$0"; exit 2; }
dir=$(realpath "$1"); case_name=$2; clients=${3:-20}
[[ "$clients" =~ ^[1-9][0-9]*$ ]] || { echo "CLIENTS must be a positive number, not '$clients'" >&2; exit 2; }
for binary in gateway loadtest; do
  [ -x "$dir/$binary" ] || { echo "$dir/$binary is missing or not executable" >&2; exit 2; }
done
case $case_name in
  state) scenario=(--scenario state); kind=update_state ;;
  ping) scenario=(--scenario ping); kind=ping ;;
  dm) scenario=(--scenario chat --chat-dm); kind=chat_send_direct ;;
  *) echo "CASE is state, ping or dm" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
redis_port=${INSTR_REDIS_PORT:-46393}
game_port=${INSTR_GAME_PORT:-47090}; admin_port=${INSTR_ADMIN_PORT:-47091}
game="127.0.0.1:$game_port"; admin="http://127.0.0.1:$admin_port"
source "$(dirname "$0")/lib/ports.sh"
require_free_port "$redis_port" "Redis" INSTR_REDIS_PORT
require_free_port "$game_port" "the gateway's game port" INSTR_GAME_PORT
require_free_port "$admin_port" "the gateway's admin port" INSTR_ADMIN_PORT

work=$(mktemp -d /tmp/instructions.XXXXXX)
redis_pid=""; gateway_pid=""
stop_gateway() {
  [ -n "$gateway_pid" ] || return 0
  kill -TERM "$gateway_pid" 2>/dev/null || true
  wait "$gateway_pid" 2>/dev/null || true
  gateway_pid=""
}
cleanup() {
  stop_gateway
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  [ -n "${INSTR_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

source "$(dirname "$0")/bench-config.sh"
write_bench_config "$work"
GAME_SERVICE_TOKEN="instr-service-token-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
export GAME_SERVICE_TOKEN LOADTEST_SERVICE_TOKEN=$GAME_SERVICE_TOKEN

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >>"$work/redis.log" 2>&1 &
redis_pid=$!
wait_for_redis "$redis_port" "$redis_pid" "$work/redis.log"

# Starts the gateway, under the command given first ("" for none).
start_gateway() {
  require_free_port "$game_port" "the gateway's game port" INSTR_GAME_PORT
  require_free_port "$admin_port" "the gateway's admin port" INSTR_ADMIN_PORT
  $1 "$dir/gateway" --config "$work/gateway.toml" --data-dir "$work/data" \
    --redis-url "redis://127.0.0.1:$redis_port" --key-prefix instr: --listen "$game" \
    --admin-listen "127.0.0.1:$admin_port" --login-failures-per-address 1000000 \
    --requests-per-sec 1000000 --request-burst 1000000 >>"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 600); do
    curl -sf "$admin/healthz" >/dev/null 2>&1 && return
    started "$gateway_pid" gateway "$work/gateway.log" || exit 1
    sleep 0.1
  done
  echo "gateway did not start" >&2; exit 1
}

# Sessions made natively: a login under callgrind takes seconds.
start_gateway ""
"$dir/loadtest" prepare-sessions --target "ws://$game/" --clients "$clients" --username-prefix instr \
  --out "$work/tokens.txt" --no-progress >/dev/null
stop_gateway

start_gateway "valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$work/callgrind.out"
run_load() {
  "$dir/loadtest" --target "ws://$game/" --admin "$admin" "${scenario[@]}" --clients "$clients" \
    --duration "$1" --ramp-up 1 --token-file "$work/tokens.txt" --no-progress >"$work/run.out" 2>&1
}
run_load 3
callgrind_control --instr=on "$gateway_pid" >/dev/null 2>&1
run_load 10
callgrind_control --instr=off "$gateway_pid" >/dev/null 2>&1
stop_gateway

requests=$(awk -v kind="$kind" '$1 == kind {print $2}' "$work/run.out")
if ! [[ "$requests" =~ ^[1-9][0-9]*$ ]]; then
  echo "the load test counted no $kind requests; it printed:" >&2; cat "$work/run.out" >&2; exit 1
fi
# Read to the end (no early exit): under pipefail a closed pipe would fail the script.
instructions=$(callgrind_annotate "$work/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ {gsub(",", "", $1); print $1}')
echo "$case_name, $clients clients: $requests requests, $instructions instructions, $((instructions / requests)) per request"
