#!/usr/bin/env bash
# Yearly chat rotation (run it from cron early each January, or any day: it is idempotent):
# provisions next year's chat shard and retires the year before last into the archive.
# gamectl reads the gateway's configuration from the environment (GAME_CONFIG, GAME_DATA_DIR, ...);
# GAMECTL names the binary (default: gamectl on PATH, else target/release, else target/debug).
set -euo pipefail

# shellcheck source=lib/gamectl.sh
source "$(dirname "$0")/lib/gamectl.sh"

year="$(date -u +%Y)"
"$gamectl" chat provision "$((year + 1))"

retire="$((year - 2))"
# A year still listed live is retired again: that also finishes a retire interrupted before it
# removed the live shard (gamectl chat retire resumes it). The list is taken first, so a failing
# `chat list` stops the script instead of reading as "nothing to retire".
shards="$("$gamectl" chat list)"
if awk -v year="$retire" '$1 == year && $2 == "live" { found = 1 } END { exit !found }' <<<"$shards"; then
  "$gamectl" chat retire "$retire"
else
  echo "rotate-chat.sh: $retire has no live shard; nothing to retire" >&2
fi
