#!/usr/bin/env bash
# Prints the bytes Tokio allocates for each connection's two tasks (the connection and its writer)
# in a release build of the gateway, and the size of the connection's future itself. These are
# most of an idle connection's memory: a change that keeps a large value alive across an `.await`
# in `connection::serve_in_span` grows every connection, and a task rounds up to a multiple of
# 128 bytes and then to the allocator's next size class. Uses rustc's `-Zprint-type-sizes` on the
# stable toolchain (RUSTC_BOOTSTRAP), in its own target directory; a few minutes the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=target/type-sizes
# rustc prints the sizes only when it compiles: a second run with the same code and flags found
# the crate fresh and printed nothing. Cleaning the gateway package alone forces that one crate
# to be compiled again (its dependencies stay built).
cargo clean -q -p gateway --release
sizes=$(RUSTC_BOOTSTRAP=1 cargo rustc -q -p gateway --lib --release -- -Zprint-type-sizes |
  awk '
    function bytes() { match($0, /`: [0-9]+ bytes/); return substr($0, RSTART + 3, RLENGTH - 9) }
    /^print-type-size type: `tokio::runtime::task::core::Cell</ && /multi_thread/ && !/Pin<std::boxed/ {
      if (/connection::serve_in_span\(\)/) print "connection task:  ", bytes(), "bytes"
      if (/OutboundQueue::write_to</) print "writer task:      ", bytes(), "bytes"
    }
    /^print-type-size type: `\{async fn body of connection::serve_in_span\(\)\}`/ {
      print "connection future:", bytes(), "bytes"
    }')
if [ -z "$sizes" ]; then
  echo "task-sizes.sh: rustc printed none of the sizes looked for (were the tasks or" \
    "connection::serve_in_span renamed?)" >&2
  exit 1
fi
echo "$sizes"
