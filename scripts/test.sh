#!/usr/bin/env bash
# The one test command (README, .ci/run): formatting, lints, then every test of the workspace.
# Tests start their own redis-server on free ports; this script makes sure one is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is not installed; the integration tests start their own." >&2
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "Installing it with apt-get..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    brew install redis
  else
    echo "Install Redis 7 or newer (the redis-server binary must be on PATH), then run this again." >&2
    exit 1
  fi
fi
# The KV layer refuses a Redis older than 7.0, so with one every integration test would fail,
# after the whole build, with that error repeated; an older distribution package (Ubuntu 22.04's
# is 6.0) is the usual cause.
redis_major="$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')"
if [ -n "$redis_major" ] && [ "$redis_major" -lt 7 ]; then
  echo "$(redis-server --version): the tests need Redis 7.0 or newer on PATH (e.g. from packages.redis.io)." >&2
  exit 1
fi

# The load test's PostgreSQL baseline is tested against a real PostgreSQL (database `test`,
# user `postgres`, trust auth on 127.0.0.1:5432, or LOADTEST_POSTGRES_URL). Start an installed
# cluster that is down; otherwise say what is needed.
if [ -z "${LOADTEST_POSTGRES_URL:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "Starting the installed PostgreSQL cluster..." >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "PostgreSQL is not answering on 127.0.0.1:5432. The baseline test needs one with a database" >&2
    echo "'test' that user 'postgres' reaches without a password (or set LOADTEST_POSTGRES_URL)." >&2
    exit 1
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
