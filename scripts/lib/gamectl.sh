# shellcheck shell=bash
# Sourced by the ops scripts: sets $gamectl to the gamectl binary — $GAMECTL if set (a path, or a
# name on PATH), else gamectl on PATH, else the newer of target/release and target/debug — or exits saying
# so. $root is the repository.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
gamectl="${GAMECTL:-}"
if [[ -n "$gamectl" ]]; then
  # Checked here: a wrong GAMECTL would otherwise surface as a failed backup or retire.
  command -v "$gamectl" >/dev/null 2>&1 || { echo "$(basename "$0"): GAMECTL=$gamectl is not an executable" >&2; exit 1; }
else
  gamectl="$(command -v gamectl || true)"
  if [[ -z "$gamectl" ]]; then
    # The newer of the two builds: an older release binary left beside a fresh debug one would
    # run ops commands of a release this checkout no longer is.
    for candidate in "$root/target/release/gamectl" "$root/target/debug/gamectl"; do
      if [[ -x "$candidate" && ( -z "$gamectl" || "$candidate" -nt "$gamectl" ) ]]; then
        gamectl="$candidate"
      fi
    done
  fi
fi
[[ -n "$gamectl" ]] || { echo "$(basename "$0"): no gamectl binary found; set GAMECTL" >&2; exit 1; }
