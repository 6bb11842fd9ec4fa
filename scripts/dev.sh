#!/usr/bin/env bash
# Development server: makes sure a Redis answers on 127.0.0.1:${REDIS_PORT:-6379} (starting
# redis-server, if installed, when none does; it is stopped again when this script ends), then
# runs the gateway on it. Extra arguments go to the gateway, e.g. `scripts/dev.sh --data-dir /tmp/d`.
# Without redis-server the gateway runs on its embedded in-process store.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT="${REDIS_PORT:-6379}"

# True when something on the port answers PING like Redis.
redis_answers() {
  local reply=""
  exec 3<>"/dev/tcp/127.0.0.1/${REDIS_PORT}" 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  read -r -t 1 reply <&3 || true
  exec 3<&- 3>&-
  [[ "$reply" == "+PONG"* ]]
}

redis_args=()
if redis_answers; then
  echo "dev.sh: using the Redis already answering on port ${REDIS_PORT}" >&2
  redis_args=(--redis-url "redis://127.0.0.1:${REDIS_PORT}")
elif command -v redis-server >/dev/null 2>&1; then
  echo "dev.sh: starting redis-server on port ${REDIS_PORT} (no persistence)" >&2
  redis-server --port "${REDIS_PORT}" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  redis_pid=$!
  trap 'kill "${redis_pid}" 2>/dev/null || true' EXIT
  for _ in $(seq 1 50); do
    redis_answers && break
    sleep 0.1
  done
  redis_answers || { echo "dev.sh: redis-server did not answer" >&2; exit 1; }
  redis_args=(--redis-url "redis://127.0.0.1:${REDIS_PORT}")
else
  echo "dev.sh: redis-server is not installed: the gateway runs on its embedded store" >&2
fi

cargo run -p gateway -- "${redis_args[@]}" "$@"
