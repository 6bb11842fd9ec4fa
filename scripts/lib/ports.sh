# shellcheck shell=bash
# Sourced by scripts/bench.sh, scripts/ab.sh and scripts/instructions.sh, which start their own
# redis-server and gateway on fixed ports: a port already taken must stop them with a message
# naming it, not let them measure (or kill, or save) someone else's server that answers there.

# True when something accepts connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# require_free_port PORT WHAT VARIABLE: exits 1, naming WHAT and the VARIABLE that moves it,
# when PORT is taken on 127.0.0.1.
require_free_port() {
  if port_in_use "$1"; then
    echo "$(basename "$0"): port $1 ($2) is already in use on 127.0.0.1: stop what listens there or set $3" >&2
    exit 1
  fi
}

# started PID NAME LOG: fails, saying so with the end of LOG, when process PID (just started in
# the background) has exited; for the loops that wait for a server to answer.
started() {
  kill -0 "$1" 2>/dev/null && return 0
  echo "$(basename "$0"): $2 exited at start; the end of $3:" >&2
  tail -n 20 "$3" >&2 || true
  return 1
}

# wait_for_redis PORT PID LOG: waits (up to 10 s) until the redis-server PID, just started in the
# background, answers on PORT; exits 1, saying why, when it exits first or never answers.
wait_for_redis() {
  for _ in $(seq 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    started "$2" redis-server "$3" || exit 1
    sleep 0.1
  done
  echo "$(basename "$0"): redis-server did not answer on port $1" >&2
  exit 1
}
