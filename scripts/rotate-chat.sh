#!/usr/bin/env bash
# Yearly chat rotation (run it from cron early each January, or any day: it is idempotent):
# provisions next year's chat shard and retires every year before last that is still live into
# the archive (the year before last, and any older one a missed or failed run left live).
# gamectl reads the gateway's configuration from the environment (GAME_CONFIG, GAME_DATA_DIR, ...);
# GAMECTL names the binary (default: gamectl on PATH, else target/release, else target/debug).
# Exits non-zero when a step fails; the later years are not tried then, and the next run resumes.
set -euo pipefail

# Found through a symbolic link too (say /usr/local/bin/rotate-chat.sh pointing here).
# shellcheck source=lib/gamectl.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/gamectl.sh"

year="$(date -u +%Y)"
"$gamectl" chat provision "$((year + 1))"

last="$((year - 2))"
# Every year still listed live up to the year before last is retired, oldest first: that also
# finishes a retire interrupted before it removed the live shard (gamectl chat retire resumes
# it). The list is taken first, so a failing `chat list` stops the script instead of reading as
# "nothing to retire".
shards="$("$gamectl" chat list)"
mapfile -t retire < <(awk -v last="$last" '$2 == "live" && $1 + 0 <= last + 0 { print $1 }' <<<"$shards")
if [[ ${#retire[@]} -eq 0 ]]; then
  echo "rotate-chat.sh: no live shard of $last or earlier; nothing to retire"
fi
for old in "${retire[@]}"; do
  "$gamectl" chat retire "$old"
done
