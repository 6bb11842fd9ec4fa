# shellcheck shell=bash
# Sourced by the ops scripts: sets $gamectl to the gamectl binary — $GAMECTL if set (a path, or a
# name on PATH), else gamectl on PATH, else target/release, else target/debug — or exits saying
# so. $root is the repository.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
gamectl="${GAMECTL:-}"
if [[ -n "$gamectl" ]]; then
  # Checked here: a wrong GAMECTL would otherwise surface as a failed backup or retire.
  command -v "$gamectl" >/dev/null 2>&1 || { echo "$(basename "$0"): GAMECTL=$gamectl is not an executable" >&2; exit 1; }
else
  for candidate in "$(command -v gamectl || true)" "$root/target/release/gamectl" "$root/target/debug/gamectl"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
      gamectl="$candidate"
      break
    fi
  done
fi
[[ -n "$gamectl" ]] || { echo "$(basename "$0"): no gamectl binary found; set GAMECTL" >&2; exit 1; }
