#!/usr/bin/env bash
# Online backup fit for cron: `scripts/backup.sh DIR [KEEP]` runs `gamectl backup` into
# DIR/backup-<UTC timestamp> and then keeps only the newest KEEP complete backups (default 7).
# gamectl reads the gateway's configuration from the environment (GAME_CONFIG, GAME_DATA_DIR,
# GAME_REDIS_URL, GAME_KEY_PREFIX); GAMECTL names the binary (default: gamectl on PATH, else
# target/release/gamectl, else target/debug/gamectl). Exits non-zero when the backup fails or
# is interrupted (Ctrl-C, SIGTERM, SIGHUP), and then leaves no partial backup behind; one left by
# a run killed outright (SIGKILL, power loss) is removed by the next run.
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

# Found through a symbolic link too (say /usr/local/bin/backup.sh pointing here).
# shellcheck source=lib/gamectl.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/gamectl.sh"

mkdir -p "$dir"
# Two runs (a slow backup and the next cron tick) must not overlap.
exec 9>"$dir/.backup.lock"
if ! flock -n 9; then
  echo "backup.sh: another backup into $dir is running" >&2
  exit 1
fi

# Backups without a manifest are left by a run that was killed outright (SIGKILL, a reboot):
# with the lock held no backup is in progress, so they are removed rather than piling up (the
# pruning below counts complete backups only).
for backup in "$dir"/backup-*; do
  if [[ -d "$backup" && ! -f "$backup/manifest.json" ]]; then
    echo "backup.sh: removing incomplete $backup" >&2
    rm -rf "$backup"
  fi
done

dest="$dir/backup-$(date -u +%Y%m%dT%H%M%SZ)"
if [[ -e "$dest" ]]; then
  echo "backup.sh: $dest already exists (two runs within one second?)" >&2
  exit 1
fi
# Stopped by a signal (Ctrl-C, cron's or systemd's timeout), stop gamectl too and remove the
# partial backup. gamectl runs in the background and is waited for so that the trap runs at once
# rather than after gamectl ends by itself.
gamectl_pid=""
on_signal() {
  trap "" INT TERM HUP
  if [[ -n "$gamectl_pid" ]]; then
    kill "$gamectl_pid" 2>/dev/null || true
    wait "$gamectl_pid" 2>/dev/null || true
  fi
  rm -rf "$dest"
  echo "backup.sh: interrupted; $dest removed" >&2
  exit 1
}
trap on_signal INT TERM HUP
"$gamectl" backup --to "$dest" &
gamectl_pid=$!
if ! wait "$gamectl_pid"; then
  gamectl_pid=""
  rm -rf "$dest"
  echo "backup.sh: backup failed" >&2
  exit 1
fi
gamectl_pid=""
trap - INT TERM HUP

# Newest first by name (the timestamp sorts); only complete backups (with a manifest) count.
mapfile -t complete < <(
  for backup in "$dir"/backup-*; do
    [[ -f "$backup/manifest.json" ]] && echo "$backup"
  done | sort -r
)
for old in "${complete[@]:$keep}"; do
  echo "backup.sh: removing $old"
  rm -rf "$old"
done
