#!/usr/bin/env bash
# Runs one load-test case against two builds side by side (alternated, a fresh gateway and data
# directory per run) and prints each run's loadtest row with the CPU each process spent per
# request, read from /proc. Ratios from one such run are what to compare on a shared machine.
#
#   scripts/ab.sh DIR_A DIR_B CASE[,CASE...] [REPEATS]
#
# DIR_A and DIR_B each hold a `gateway` and a `loadtest` binary (say a copy of an older
# target/release, and target/release). `embedded:DIR` runs DIR's gateway without Redis, on its
# in-process KV: `scripts/ab.sh embedded:DIR DIR state,ping` measures what the hop to Redis costs.
# `unix:DIR` runs DIR's gateway against the same Redis through its Unix socket instead of TCP.
# Such a gateway keeps its sessions in itself, so each of its runs first logs the clients in (up
# to a minute). Each CASE is one of:
#   state         1,000 clients updating their state, closed loop
#   ping          1,000 clients pinging, closed loop
#   state-paced   2,000 clients × 25 updates/s
#   ping-paced    2,000 clients × 25 pings/s
#   dm            1,000 direct-message pairs, closed loop
#   room          100 members of one room, each sending 20 messages/s
#   inventory     1,000 clients trading in pairs and consuming, closed loop (durable transactions)
#   outage        state-paced, with Redis killed (SIGKILL) 8 s in and restarted 3 s later (Redis sides only)
#   idle          10,000 authenticated connections held idle: the gateway's memory per connection
#                 (prepares 10,000 sessions instead of 2,000, about five minutes)
#
# Everything runs on 127.0.0.1 (Redis on $AB_REDIS_PORT, default 46390; the gateway on
# $AB_GAME_PORT and $AB_ADMIN_PORT, default 47070 and 47071) and stops by itself.
set -euo pipefail

[ $# -ge 3 ] && [ $# -le 4 ] || { sed -n '2,26p' "$0"; exit 2; }
cases=$3; repeats=${4:-2}
[[ "$repeats" =~ ^[1-9][0-9]*$ ]] || { echo "ab.sh: REPEATS must be a positive number, not '$repeats'" >&2; exit 2; }

# Sets `args` (the load test's arguments) and `kind` (the request kind whose count the CPU
# figures divide by) for case $1; fails on an unknown case.
case_args() {
  case $1 in
    state) args=(--scenario state --clients 1000 --duration 15); kind=update_state ;;
    ping) args=(--scenario ping --clients 1000 --duration 15); kind=ping ;;
    state-paced|outage) args=(--scenario state --clients 2000 --rate state=25 --duration 20); kind=update_state ;;
    ping-paced) args=(--scenario ping --clients 2000 --rate ping=25 --duration 20); kind=ping ;;
    dm) args=(--scenario chat --chat-dm --clients 2000 --duration 15); kind=chat_send_direct ;;
    room) args=(--scenario chat --clients 100 --chat-room-size 100 --rate chat=20 --duration 20); kind=chat_send ;;
    inventory) args=(--scenario inventory --clients 1000 --duration 15); kind=inventory_accept_offer ;;
    # Two source addresses: 10,000 connections from one would take a third of its ephemeral ports.
    idle) args=(--scenario idle --clients 10000 --duration 5 --source-addr 127.0.0.2 --source-addr 127.0.0.3); kind="" ;;
    *) return 1 ;;
  esac
}
# Every case is checked before anything starts: a typo must not cost the minute of preparing sessions.
for case_name in ${cases//,/ }; do
  case_args "$case_name" || { echo "ab.sh: unknown case '$case_name' (see: $0 with no arguments)" >&2; exit 2; }
done

# A side is a build directory, or `embedded:` or `unix:` and one.
side() { case $1 in embedded:* | unix:*) echo "${1%%:*}:$(realpath "${1#*:}")" ;; *) realpath "$1" ;; esac; }
side_a=$(side "$1"); side_b=$(side "$2")
for side in "$side_a" "$side_b"; do
  for binary in gateway loadtest; do
    [ -x "${side#*:}/$binary" ] || { echo "ab.sh: ${side#*:}/$binary is missing or not executable" >&2; exit 2; }
  done
done
dir_a=${side_a#*:}
redis_port=${AB_REDIS_PORT:-46390}
game_port=${AB_GAME_PORT:-47070}; admin_port=${AB_ADMIN_PORT:-47071}
game="127.0.0.1:$game_port"; admin="http://127.0.0.1:$admin_port"
source "$(dirname "$0")/lib/ports.sh"
require_free_port "$redis_port" "Redis" AB_REDIS_PORT
require_free_port "$game_port" "the gateway's game port" AB_GAME_PORT
require_free_port "$admin_port" "the gateway's admin port" AB_ADMIN_PORT
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/ab.XXXXXX)
redis_pid=""; gateway_pid=""
cleanup() {
  stop_gateway
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  [ -n "${AB_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# Redis keeps its files (a dump made before the outage case's kill) in $work.
start_redis() {
  require_free_port "$redis_port" "Redis" AB_REDIS_PORT
  redis-server --port "$redis_port" --bind 127.0.0.1 --unixsocket "$work/redis.sock" --save "" --appendonly no --dir "$work" \
    >>"$work/redis.log" 2>&1 &
  redis_pid=$!
  wait_for_redis "$redis_port" "$redis_pid" "$work/redis.log"
}

# No chat send limit; the load test's item catalogue (scripts/bench-config.sh).
source "$(dirname "$0")/bench-config.sh"
write_bench_config "$work"
GAME_SERVICE_TOKEN="ab-service-token-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
export GAME_SERVICE_TOKEN LOADTEST_SERVICE_TOKEN=$GAME_SERVICE_TOKEN

# Starts the gateway of side $1 (a build directory, or `embedded:` or `unix:` and one) on data directory $2.
start_gateway() {
  local kv=(--redis-url "redis://127.0.0.1:$redis_port" --key-prefix ab:)
  case $1 in
    embedded:*) kv=() ;;
    unix:*) kv=(--redis-url "redis+unix://$work/redis.sock" --key-prefix ab:) ;;
  esac
  require_free_port "$game_port" "the gateway's game port" AB_GAME_PORT
  require_free_port "$admin_port" "the gateway's admin port" AB_ADMIN_PORT
  "${1#*:}/gateway" --config "$work/gateway.toml" --data-dir "$2" ${kv[@]+"${kv[@]}"} \
    --listen "$game" --admin-listen "127.0.0.1:$admin_port" \
    --login-failures-per-address 1000000 --requests-per-sec 1000000 --request-burst 1000000 \
    >>"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 100); do
    curl -sf "$admin/healthz" >/dev/null 2>&1 && return
    started "$gateway_pid" gateway "$work/gateway.log" || exit 1
    sleep 0.1
  done
  echo "gateway did not start" >&2; exit 1
}
stop_gateway() {
  [ -n "$gateway_pid" ] || return 0
  kill -TERM "$gateway_pid" 2>/dev/null || true
  wait "$gateway_pid" 2>/dev/null || true
  gateway_pid=""
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "$side_a against $side_b, $repeats times each, alternated"
start_redis
# The accounts and their sessions, made once with build A and copied into every run's data directory.
n_sessions=2000
[[ ",$cases," == *,idle,* ]] && n_sessions=10000
echo "preparing $n_sessions sessions (a minute per 2,000)" >&2
start_gateway "$dir_a" "$work/accounts"
"$dir_a/loadtest" prepare-sessions --target "ws://$game/" --clients "$n_sessions" --username-prefix ab \
  --out "$work/tokens.txt" --no-progress >/dev/null
stop_gateway

run=0
for case_name in ${cases//,/ }; do
  case_args "$case_name"
  n_clients=$(echo "${args[*]}" | sed -E 's/.*--clients ([0-9]+).*/\1/')
  ramp_up=2
  [ "$case_name" = idle ] && ramp_up=10
  args+=(--ramp-up "$ramp_up" --no-progress)
  echo "\$ loadtest ${args[*]}"

  for _ in $(seq "$repeats"); do
    for side in "$side_a" "$side_b"; do
      dir=${side#*:}
      run=$((run + 1))
      data="$work/data-$run"
      mkdir -p "$data"
      cp "$work/accounts"/auth.db* "$data"/
      [ "$case_name" = outage ] && redis-cli -p "$redis_port" save >/dev/null
      start_gateway "$side" "$data"
      tokens="$work/tokens.txt"
      if [ "${side%%:*}" = embedded ]; then
        tokens="$data/tokens.txt"
        "$dir/loadtest" prepare-sessions --target "ws://$game/" --clients "$n_clients" --username-prefix ab \
          --out "$tokens" --no-progress >/dev/null
      fi
      gateway_before=$(cpu_ticks "$gateway_pid"); redis_before=$(cpu_ticks "$redis_pid")
      redis-cli -p "$redis_port" config resetstat >/dev/null
      /usr/bin/time -f "%U %S" -o "$work/loadtest-cpu" "$dir/loadtest" --target "ws://$game/" --admin "$admin" \
        "${args[@]}" --token-file "$tokens" >"$work/run.out" 2>&1 &
      loadtest_pid=$!
      if [ "$case_name" = outage ]; then
        sleep 8
        kill -KILL "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
        sleep 3
        start_redis
        redis_before=$(cpu_ticks "$redis_pid")
      fi
      wait "$loadtest_pid" || true
      gateway_ticks=$(( $(cpu_ticks "$gateway_pid") - gateway_before ))
      redis_ticks=$(( $(cpu_ticks "$redis_pid") - redis_before ))
      stop_gateway
      echo "== $side"
      if [ -z "$kind" ]; then
        grep -oE 'rss before .* per connection' "$work/run.out" || cat "$work/run.out"
        continue
      fi
      # A run that printed no row failed: show what it printed rather than stop without a word.
      row=$(grep -E '^(update_state|ping|chat_send_direct|chat_send|chat_delivery|inventory_accept_offer|inventory:) ' "$work/run.out") ||
        { echo "ab.sh: the load test printed no figures:" >&2; cat "$work/run.out" >&2; exit 1; }
      requests=$(echo "$row" | awk -v kind="$kind" '$1 == kind {print $2}')
      loadtest_secs=$(awk '{print $1 + $2}' "$work/loadtest-cpu")
      echo "$row"
      # /proc counts CPU time in ticks of 10 ms. After the outage case's restart, Redis's figure
      # covers only the time since.
      awk -v kind="$kind" -v n="$requests" -v g="$gateway_ticks" -v r="$redis_ticks" -v l="$loadtest_secs" 'BEGIN {
        printf "CPU µs per " kind ": load generator %.1f, gateway %.1f, Redis %.1f\n",
          l * 1e6 / n, g * 1e4 / n, r * 1e4 / n }'
      # How many updates shared a run of the update script (`EVALSHA`, counted by Redis; the
      # flusher's and the leases' few runs per second are counted too, so it errs a little low).
      script_runs=$(redis-cli -p "$redis_port" info commandstats | sed -nE 's/^cmdstat_evalsha:calls=([0-9]+),.*/\1/p')
      if [ "$kind" = update_state ] && [ "${script_runs:-0}" -gt 0 ]; then
        awk -v n="$requests" -v runs="$script_runs" 'BEGIN { printf "updates per script run: %.1f\n", n / runs }'
      fi
    done
  done
done
