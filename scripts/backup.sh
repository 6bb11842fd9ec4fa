#!/usr/bin/env bash
# Online backup fit for cron: `scripts/backup.sh DIR [KEEP]` runs `gamectl backup` into
# DIR/backup-<UTC timestamp> and then keeps only the newest KEEP complete backups (default 7).
# gamectl reads the gateway's configuration from the environment (GAME_CONFIG, GAME_DATA_DIR,
# GAME_REDIS_URL, GAME_KEY_PREFIX); GAMECTL names the binary (default: gamectl on PATH, else
# target/release/gamectl, else target/debug/gamectl). Exits non-zero when the backup fails, and
# then leaves no partial backup behind.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 DIR [KEEP]" >&2
  exit 64
fi
dir="$1"
keep="${2:-7}"
if ! [[ "$keep" =~ ^[1-9][0-9]*$ ]]; then
  echo "backup.sh: KEEP must be a positive number, not '$keep'" >&2
  exit 64
fi

# shellcheck source=lib/gamectl.sh
source "$(dirname "$0")/lib/gamectl.sh"

mkdir -p "$dir"
# Two runs (a slow backup and the next cron tick) must not overlap.
exec 9>"$dir/.backup.lock"
if ! flock -n 9; then
  echo "backup.sh: another backup into $dir is running" >&2
  exit 1
fi

dest="$dir/backup-$(date -u +%Y%m%dT%H%M%SZ)"
if [[ -e "$dest" ]]; then
  echo "backup.sh: $dest already exists (two runs within one second?)" >&2
  exit 1
fi
if ! "$gamectl" backup --to "$dest"; then
  rm -rf "$dest"
  echo "backup.sh: backup failed" >&2
  exit 1
fi

# Newest first by name (the timestamp sorts); only complete backups (with a manifest) count.
mapfile -t complete < <(
  for backup in "$dir"/backup-*; do
    [[ -f "$backup/manifest.json" ]] && echo "$backup"
  done | sort -r
)
for old in "${complete[@]:$keep}"; do
  echo "backup.sh: removing $old" >&2
  rm -rf "$old"
done
