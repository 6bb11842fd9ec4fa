# shellcheck shell=bash
# Sourced by scripts/bench.sh and scripts/ab.sh: the gateway settings beyond its flags that
# benchmark runs use. Chat sends are not rate limited (the chat runs send far above a player's
# budget), and the inventory catalogue has the load test's items.

# The load generator opens thousands of connections from one or two local addresses. An
# environment variable rather than a key in gateway.toml, which builds from before the setting
# existed would refuse.
export GAME_MAX_CONNECTIONS_PER_ADDRESS=1000000 GAME_REGISTRATIONS_PER_ADDRESS=1000000

# Writes $1/catalogue.toml and $1/gateway.toml (which names the catalogue).
write_bench_config() {
  cat >"$1/catalogue.toml" <<'TOML'
[[item]]
id = "lt-coin"
name = "Load-test coin"
max_stack = 1000000000000

[[item]]
id = "lt-gem"
name = "Load-test gem"
max_stack = 1000000000000
TOML
  cat >"$1/gateway.toml" <<TOML
chat_sends_per_window = 1000000000
chat_send_window = 1.0
inventory_catalogue = "$1/catalogue.toml"
TOML
}
