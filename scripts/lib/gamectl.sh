# Sourced by the ops scripts: sets $gamectl to the gamectl binary — $GAMECTL if set, else gamectl on
# PATH, else target/release, else target/debug — or exits saying so. $root is the repository.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
gamectl="${GAMECTL:-}"
if [[ -z "$gamectl" ]]; then
  for candidate in "$(command -v gamectl || true)" "$root/target/release/gamectl" "$root/target/debug/gamectl"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
      gamectl="$candidate"
      break
    fi
  done
fi
[[ -n "$gamectl" ]] || { echo "$(basename "$0"): no gamectl binary found; set GAMECTL" >&2; exit 1; }
