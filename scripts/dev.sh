#!/usr/bin/env bash
# Development server: makes sure a Redis answers on 127.0.0.1:${REDIS_PORT:-6379} (starting
# redis-server, if installed, when none does; it is stopped again when this script ends), then
# runs the gateway on it. Extra arguments go to the gateway, e.g. `scripts/dev.sh --data-dir /tmp/d`.
# Without redis-server the gateway runs on its embedded in-process store.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT="${REDIS_PORT:-6379}"

# True when something on the port answers PING like Redis. In a subshell, its stderr silenced:
# a bare `exec 3<>... 2>/dev/null` would send the whole script's stderr (and the gateway's
# errors after it) to /dev/null once a connection succeeds, and print "Connection refused" when
# none does.
redis_answers() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/${REDIS_PORT}" || exit 1
    printf 'PING\r\n' >&3
    reply=""
    read -r -t 1 reply <&3 || true
    [[ "$reply" == "+PONG"* ]]
  ) 2>/dev/null
}

redis_args=()
if redis_answers; then
  echo "dev.sh: using the Redis already answering on port ${REDIS_PORT}" >&2
  redis_args=(--redis-url "redis://127.0.0.1:${REDIS_PORT}")
elif command -v redis-server >/dev/null 2>&1; then
  echo "dev.sh: starting redis-server on port ${REDIS_PORT} (no persistence)" >&2
  # Warnings only (a port it cannot bind, say), on stderr.
  redis-server --port "${REDIS_PORT}" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning >&2 &
  redis_pid=$!
  # Stopped, and waited for, however this script ends (Ctrl-C included: a background job of a
  # script ignores SIGINT, so only this trap stops it).
  trap 'kill "${redis_pid}" 2>/dev/null || true; wait "${redis_pid}" 2>/dev/null || true' EXIT
  for _ in $(seq 1 50); do
    redis_answers && break
    kill -0 "${redis_pid}" 2>/dev/null || break
    sleep 0.1
  done
  if ! redis_answers; then
    echo "dev.sh: redis-server did not answer on port ${REDIS_PORT} (is the port taken by something" \
      "other than Redis? set REDIS_PORT)" >&2
    exit 1
  fi
  redis_args=(--redis-url "redis://127.0.0.1:${REDIS_PORT}")
else
  echo "dev.sh: redis-server is not installed: the gateway runs on its embedded store" >&2
fi

# `${a[@]+...}`: an empty array under `set -u` is an error in bash before 4.4 (macOS's 3.2).
cargo run -p gateway --bin gateway -- ${redis_args[@]+"${redis_args[@]}"} "$@"
