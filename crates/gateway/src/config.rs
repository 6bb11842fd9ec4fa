//! The gateway's configuration: one typed struct, read from an optional TOML file and overridden
//! by flags and environment variables in `main`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Default address for game clients: localhost only, so a fresh checkout exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default address of the admin HTTP port.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7071";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Default prefix of every Redis key.
pub const DEFAULT_KEY_PREFIX: &str = "game:";
/// Default cap on open game connections: below the 20,000 open files a process may hold here.
pub const DEFAULT_MAX_CONNECTIONS: usize = 19_000;
/// Default cap on open connections from one client address (an IPv6 address's /64): far above a
/// household's or a LAN party's, far below what would let one address fill the server.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 1_000;
/// Default cap on one incoming frame or message.
pub const DEFAULT_MAX_FRAME_BYTES: usize = proto::DEFAULT_MAX_FRAME_BYTES;
/// Default number of messages waiting to be written to one connection before it counts as slow.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;
/// Default number of bytes waiting to be written to one connection before it counts as slow: a
/// few of the largest replies (a chat history page of long messages is about 400 KiB).
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 4 << 20;
/// Default bound on the bytes queued for all connections together: a thousand connections' full
/// queues, far above what readers that keep up hold, far below the machine's memory.
pub const DEFAULT_OUTBOUND_TOTAL_BYTES: usize = 1 << 30;
/// Default sustained requests per second per connection.
pub const DEFAULT_REQUESTS_PER_SEC: u32 = 200;
/// Default number of requests a connection may send at once before the sustained rate applies.
pub const DEFAULT_REQUEST_BURST: u32 = 400;
/// Default interval between server pings.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// Default time without any frame from a client before it is disconnected.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Default time a connection may stay without a session: room for a login screen, but sockets
/// that never log in do not hold connection slots for long.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time shutdown waits for connections and in-flight requests to finish.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default size of each connection's read buffer: game frames are a few hundred bytes at most,
/// and tungstenite's 128 KiB default would cost that much memory per idle connection. A larger
/// frame still arrives whole; it just takes more than one read.
pub const DEFAULT_READ_BUFFER_BYTES: usize = 2048;

/// The longest any duration setting may be: beyond every TTL or interval a game needs, and far
/// from where a deadline computed from it (an `Instant`, or a TTL in milliseconds for Redis)
/// overflows, which would panic in every connection or fail every login.
pub const LONGEST_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Default chat messages one player may send per window.
pub const DEFAULT_CHAT_SENDS_PER_WINDOW: u64 = chat::DEFAULT_SENDS_PER_WINDOW;
/// Default length of the chat send-rate window.
pub const DEFAULT_CHAT_SEND_WINDOW: Duration = chat::DEFAULT_SEND_WINDOW;
/// Default chat membership changes one player may make per window.
pub const DEFAULT_CHAT_MEMBERSHIP_CHANGES_PER_WINDOW: u64 = chat::DEFAULT_MEMBERSHIP_CHANGES_PER_WINDOW;
/// Default length of the chat membership-change window.
pub const DEFAULT_CHAT_MEMBERSHIP_WINDOW: Duration = chat::DEFAULT_MEMBERSHIP_WINDOW;
/// Default time a cached chat member list is trusted without an invalidation.
pub const DEFAULT_CHAT_MEMBER_CACHE_TTL: Duration = chat::DEFAULT_MEMBER_CACHE_TTL;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How hard SQLite shards sync on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// WAL with `synchronous=NORMAL`: durable across process crashes.
    #[default]
    Normal,
    /// `synchronous=FULL`: durable across power loss too.
    Full,
}

/// How player-state updates reach SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PlayerWriteMode {
    /// Buffered in the key-value store, flushed in batches.
    #[default]
    Buffered,
    /// One SQLite transaction per update.
    Direct,
}

/// Everything a gateway process is told at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where game clients connect; default [`DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; default [`DEFAULT_ADMIN_LISTEN`].
    pub admin_listen: SocketAddr,
    /// The directory holding every shard; default [`DEFAULT_DATA_DIR`].
    pub data_dir: PathBuf,
    /// Redis URL (`redis://host:port/db`); none runs on the embedded in-process store.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key; default [`DEFAULT_KEY_PREFIX`].
    pub key_prefix: String,
    /// Open game connections at most; default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Open game connections from one client address (an IPv6 address counts as its /64), the
    /// handshakes under way included, at most; default [`DEFAULT_MAX_CONNECTIONS_PER_ADDRESS`].
    /// Behind a reverse proxy every client has the proxy's address unless it is one of
    /// `trusted_proxies`.
    pub max_connections_per_address: usize,
    /// Largest frame or message accepted, in bytes; default [`DEFAULT_MAX_FRAME_BYTES`].
    pub max_frame_bytes: usize,
    /// Messages queued for one connection before it is closed as slow; default [`DEFAULT_OUTBOUND_QUEUE`].
    pub outbound_queue: usize,
    /// Bytes queued for one connection before it is closed as slow (a single larger message is
    /// still sent); default [`DEFAULT_OUTBOUND_QUEUE_BYTES`].
    pub outbound_queue_bytes: usize,
    /// Bytes queued for all connections together (each one's next frame aside) before the
    /// connection adding to a backed-up queue is closed as slow; default
    /// [`DEFAULT_OUTBOUND_TOTAL_BYTES`].
    pub outbound_total_bytes: usize,
    /// Sustained requests per second per connection; default [`DEFAULT_REQUESTS_PER_SEC`].
    pub requests_per_sec: u32,
    /// Requests a connection may send at once (the size of its token bucket, which refills at
    /// `requests_per_sec`); default [`DEFAULT_REQUEST_BURST`].
    pub request_burst: u32,
    /// Interval between server pings; default [`DEFAULT_HEARTBEAT_INTERVAL`]; must be below `idle_timeout`.
    #[serde(with = "seconds")]
    pub heartbeat_interval: Duration,
    /// Time without a frame from the client before disconnecting it; default [`DEFAULT_IDLE_TIMEOUT`].
    #[serde(with = "seconds")]
    pub idle_timeout: Duration,
    /// Time a connection may stay without a session (before its first login, or after a
    /// logout), checked at heartbeats; default [`DEFAULT_LOGIN_TIMEOUT`].
    #[serde(with = "seconds")]
    pub login_timeout: Duration,
    /// Time shutdown waits for connections to drain, then again for the final flush and commits;
    /// default [`DEFAULT_SHUTDOWN_TIMEOUT`].
    #[serde(with = "seconds")]
    pub shutdown_timeout: Duration,
    /// Read buffer per connection, in bytes; default [`DEFAULT_READ_BUFFER_BYTES`].
    pub read_buffer_bytes: usize,
    /// A session unused this long ends; default one day; at least a millisecond.
    #[serde(with = "seconds")]
    pub session_idle_ttl: Duration,
    /// A session ends this long after login; default 30 days.
    #[serde(with = "seconds")]
    pub session_max_lifetime: Duration,
    /// Failed logins per account and window before throttling; default 10.
    pub login_failures_per_account: u64,
    /// Failed logins per client address and window before throttling; default 100.
    pub login_failures_per_address: u64,
    /// Accounts registered per client address (an IPv6 address counts as its /64) and login
    /// throttling window; default 20. Behind a reverse proxy not in `trusted_proxies` every client
    /// has the proxy's address.
    pub registrations_per_address: u64,
    /// Live sessions one account may hold; a login past it ends the account's oldest sessions and
    /// closes their connections with 4001; default 64; at least 1.
    pub max_sessions_per_account: usize,
    /// The login throttling window; default 15 minutes; at least a millisecond.
    #[serde(with = "seconds")]
    pub login_throttle_window: Duration,
    /// How hard shards sync on commit; default normal.
    pub synchronous: SyncMode,
    /// How player-state updates reach SQLite; default buffered.
    pub player_write_mode: PlayerWriteMode,
    /// Time between player-state flushes; default 1 s.
    #[serde(with = "seconds")]
    pub flush_interval: Duration,
    /// Players per flush transaction; default 2,000.
    pub flush_batch: usize,
    /// Dirty players that wake the flusher before its interval ends; default 50,000.
    pub flush_threshold: usize,
    /// The flusher lease across processes; default 5 s; must exceed `flush_interval`.
    #[serde(with = "seconds")]
    pub flush_lease: Duration,
    /// Log format; default text.
    pub log_format: LogFormat,
    /// The inventory's item catalogue (TOML); none: an empty catalogue, so every grant is refused.
    pub inventory_catalogue: Option<PathBuf>,
    /// How hard `inventory.db` syncs on commit; default full (group commit keeps it fast).
    pub inventory_synchronous: SyncMode,
    /// Lifetime of an open trade offer; default 10 minutes; at least a millisecond.
    #[serde(with = "seconds")]
    pub offer_ttl: Duration,
    /// The credential of trusted callers (game servers, ops tools) on the admin port's service
    /// endpoints (grants, ledgers); none turns those endpoints off; at least 16 bytes.
    pub service_token: Option<ServiceToken>,
    /// Chat messages one player may send per `chat_send_window`; default
    /// [`DEFAULT_CHAT_SENDS_PER_WINDOW`]; must be positive.
    pub chat_sends_per_window: u64,
    /// The chat send-rate window; default [`DEFAULT_CHAT_SEND_WINDOW`]; at least 1 ms.
    #[serde(with = "seconds")]
    pub chat_send_window: Duration,
    /// Chat membership changes (joining or leaving a room, creating a group, adding or removing
    /// a member) one player may make per `chat_membership_window`; default
    /// [`DEFAULT_CHAT_MEMBERSHIP_CHANGES_PER_WINDOW`]; must be positive.
    pub chat_membership_changes_per_window: u64,
    /// The chat membership-change window; default [`DEFAULT_CHAT_MEMBERSHIP_WINDOW`]; at least
    /// 1 ms.
    #[serde(with = "seconds")]
    pub chat_membership_window: Duration,
    /// How long a cached room's or group's member list is used without an invalidation from
    /// the process that changed it (the bound on staleness if one is lost); default
    /// [`DEFAULT_CHAT_MEMBER_CACHE_TTL`]; zero reads `chat.db` every time.
    #[serde(with = "seconds")]
    pub chat_member_cache_ttl: Duration,
    /// Reverse proxies and load balancers (addresses or networks, `10.0.0.0/8`) whose
    /// connections count as the client address they put in `X-Forwarded-For`; default none, so
    /// every connection is its TCP peer. See [`crate::forwarded`].
    pub trusted_proxies: Vec<crate::forwarded::ProxyNetwork>,
    /// Matchmaking (`[matchmaking]` in TOML): modes (default `duel` 1v1 and `team` 2v2), the
    /// rating window, the pass interval, lease and disconnect grace; see
    /// [`matchmaking::MatchmakingConfig`].
    pub matchmaking: matchmaking::MatchmakingConfig,
}

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ServiceToken(String);

impl ServiceToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> ServiceToken {
        ServiceToken(token.into())
    }

    /// The token itself, for comparing with what a caller presents.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceToken(***)")
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let auth = auth::AuthConfig::default();
        let player = player::PlayerConfig::default();
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7070))),
            admin_listen: DEFAULT_ADMIN_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7071))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            redis_url: None,
            key_prefix: DEFAULT_KEY_PREFIX.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            outbound_queue_bytes: DEFAULT_OUTBOUND_QUEUE_BYTES,
            outbound_total_bytes: DEFAULT_OUTBOUND_TOTAL_BYTES,
            requests_per_sec: DEFAULT_REQUESTS_PER_SEC,
            request_burst: DEFAULT_REQUEST_BURST,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            read_buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
            session_idle_ttl: auth.session_idle_ttl,
            session_max_lifetime: auth.session_max_lifetime,
            login_failures_per_account: auth.account_failure_limit,
            login_failures_per_address: auth.address_failure_limit,
            registrations_per_address: auth.registration_limit,
            max_sessions_per_account: auth.max_sessions_per_account,
            login_throttle_window: auth.throttle_window,
            synchronous: SyncMode::default(),
            player_write_mode: PlayerWriteMode::default(),
            flush_interval: player.flush_interval,
            flush_batch: player.flush_batch,
            flush_threshold: player.flush_threshold,
            flush_lease: player.flush_lease,
            log_format: LogFormat::default(),
            inventory_catalogue: None,
            inventory_synchronous: SyncMode::Full,
            offer_ttl: inventory::DEFAULT_OFFER_TTL,
            service_token: None,
            chat_sends_per_window: DEFAULT_CHAT_SENDS_PER_WINDOW,
            chat_send_window: DEFAULT_CHAT_SEND_WINDOW,
            chat_membership_changes_per_window: DEFAULT_CHAT_MEMBERSHIP_CHANGES_PER_WINDOW,
            chat_membership_window: DEFAULT_CHAT_MEMBERSHIP_WINDOW,
            chat_member_cache_ttl: DEFAULT_CHAT_MEMBER_CACHE_TTL,
            trusted_proxies: Vec::new(),
            matchmaking: matchmaking::MatchmakingConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// Reads a TOML file; fields it leaves out keep their defaults.
    ///
    /// # Errors
    /// The file cannot be read, or is not valid TOML for this struct (unknown keys included).
    pub fn from_toml_file(path: &std::path::Path) -> Result<GatewayConfig, crate::GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::GatewayError::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| crate::GatewayError::Config(format!("{}: {e}", path.display())))
    }

    /// Checks the relations between fields.
    ///
    /// # Errors
    /// [`crate::GatewayError::Config`] naming the first broken rule.
    pub fn validate(&self) -> Result<(), crate::GatewayError> {
        let fail = |message: &str| Err(crate::GatewayError::Config(message.into()));
        // Tokio's intervals panic on a zero period, in every connection or in the flusher.
        if self.heartbeat_interval.is_zero() || self.flush_interval.is_zero() || self.login_timeout.is_zero()
        {
            return fail("heartbeat_interval, flush_interval and login_timeout must be positive");
        }
        // Zero would cut off the final flush and the last commits at every shutdown.
        if self.shutdown_timeout.is_zero() {
            return fail("shutdown_timeout must be positive");
        }
        if self.heartbeat_interval >= self.idle_timeout {
            return fail("heartbeat_interval must be below idle_timeout");
        }
        if let Some(name) =
            self.durations().find_map(|(name, value)| (value > LONGEST_DURATION).then_some(name))
        {
            return Err(crate::GatewayError::Config(format!("{name} must be at most ten years")));
        }
        // The store keeps TTLs in whole milliseconds: Redis refuses a zero one (every login would
        // fail), the embedded store expires the key at once, and a throttling counter would vanish
        // as soon as it was counted. A zero failure limit refuses every login. (Zero registrations
        // per address is the documented way to close registration.)
        if self.session_idle_ttl.as_millis() == 0 || self.login_throttle_window.as_millis() == 0 {
            return fail("session_idle_ttl and login_throttle_window must be at least a millisecond");
        }
        if self.session_max_lifetime < self.session_idle_ttl {
            return fail("session_max_lifetime must be at least session_idle_ttl");
        }
        if self.login_failures_per_account == 0 || self.login_failures_per_address == 0 {
            return fail("login_failures_per_account and login_failures_per_address must be positive");
        }
        // Zero would end every other session at each login while reading like "no sessions".
        if self.max_sessions_per_account == 0 {
            return fail("max_sessions_per_account must be positive");
        }
        if self.max_connections == 0
            || self.max_connections_per_address == 0
            || self.outbound_queue == 0
            || self.outbound_queue_bytes == 0
            || self.outbound_total_bytes == 0
            || self.requests_per_sec == 0
        {
            return fail(
                "max_connections, max_connections_per_address, outbound_queue, outbound_queue_bytes, \
                 outbound_total_bytes and requests_per_sec must be positive",
            );
        }
        if self.flush_lease <= self.flush_interval || self.flush_batch == 0 {
            return fail("flush_lease must exceed flush_interval, and flush_batch must be positive");
        }
        if self.chat_sends_per_window == 0 || self.chat_send_window.as_millis() == 0 {
            return fail("chat_sends_per_window and chat_send_window must be positive");
        }
        if self.chat_membership_changes_per_window == 0 || self.chat_membership_window.as_millis() == 0 {
            return fail("chat_membership_changes_per_window and chat_membership_window must be positive");
        }
        if self.service_token.as_ref().is_some_and(|token| token.expose().len() < 16)
            || self.offer_ttl.as_millis() == 0
        {
            return fail("service_token must be at least 16 bytes, and offer_ttl at least a millisecond");
        }
        self.matchmaking.validate().map_err(|e| crate::GatewayError::Config(e.to_string()))?;
        if self.max_frame_bytes < 256 {
            return fail("max_frame_bytes must be at least 256");
        }
        Ok(())
    }

    /// Whether connections from `peer` are a trusted proxy's.
    pub(crate) fn is_trusted_proxy(&self, peer: std::net::IpAddr) -> bool {
        crate::forwarded::is_trusted(&self.trusted_proxies, peer)
    }

    /// Every duration setting, by name.
    fn durations(&self) -> impl Iterator<Item = (&'static str, Duration)> {
        let matchmaking = &self.matchmaking;
        [
            ("heartbeat_interval", self.heartbeat_interval),
            ("idle_timeout", self.idle_timeout),
            ("login_timeout", self.login_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
            ("session_idle_ttl", self.session_idle_ttl),
            ("session_max_lifetime", self.session_max_lifetime),
            ("login_throttle_window", self.login_throttle_window),
            ("flush_interval", self.flush_interval),
            ("flush_lease", self.flush_lease),
            ("offer_ttl", self.offer_ttl),
            ("chat_send_window", self.chat_send_window),
            ("chat_membership_window", self.chat_membership_window),
            ("chat_member_cache_ttl", self.chat_member_cache_ttl),
            ("matchmaking.interval", matchmaking.interval),
            ("matchmaking.lease", matchmaking.lease),
            ("matchmaking.disconnect_grace", matchmaking.disconnect_grace),
        ]
        .into_iter()
    }

    /// The auth domain's configuration derived from this one.
    pub fn auth_config(&self) -> auth::AuthConfig {
        auth::AuthConfig {
            session_idle_ttl: self.session_idle_ttl,
            session_max_lifetime: self.session_max_lifetime,
            account_failure_limit: self.login_failures_per_account,
            address_failure_limit: self.login_failures_per_address,
            registration_limit: self.registrations_per_address,
            max_sessions_per_account: self.max_sessions_per_account,
            throttle_window: self.login_throttle_window,
            shard: self.shard_config(),
            ..auth::AuthConfig::default()
        }
    }

    /// The player domain's configuration derived from this one.
    pub fn player_config(&self) -> player::PlayerConfig {
        player::PlayerConfig {
            mode: match self.player_write_mode {
                PlayerWriteMode::Buffered => player::WriteMode::Buffered,
                PlayerWriteMode::Direct => player::WriteMode::Direct,
            },
            flush_interval: self.flush_interval,
            flush_batch: self.flush_batch,
            flush_threshold: self.flush_threshold,
            flush_lease: self.flush_lease,
            shard: self.shard_config(),
            ..player::PlayerConfig::default()
        }
    }

    /// The chat domain's configuration derived from this one.
    pub fn chat_config(&self) -> chat::ChatConfig {
        chat::ChatConfig {
            sends_per_window: self.chat_sends_per_window,
            send_window: self.chat_send_window,
            membership_changes_per_window: self.chat_membership_changes_per_window,
            membership_window: self.chat_membership_window,
            member_cache_ttl: self.chat_member_cache_ttl,
            shard: self.shard_config(),
            ..chat::ChatConfig::default()
        }
    }

    /// The inventory domain's configuration derived from this one.
    pub fn inventory_config(&self) -> inventory::InventoryConfig {
        let synchronous = match self.inventory_synchronous {
            SyncMode::Normal => shard::Synchronous::Normal,
            SyncMode::Full => shard::Synchronous::Full,
        };
        inventory::InventoryConfig {
            offer_ttl: self.offer_ttl,
            shard: shard::ShardConfig { synchronous, ..shard::ShardConfig::default() },
            ..inventory::InventoryConfig::default()
        }
    }

    /// How shards are opened.
    pub fn shard_config(&self) -> shard::ShardConfig {
        shard::ShardConfig {
            synchronous: match self.synchronous {
                SyncMode::Normal => shard::Synchronous::Normal,
                SyncMode::Full => shard::Synchronous::Full,
            },
            ..shard::ShardConfig::default()
        }
    }
}

/// Durations in TOML are whole or fractional seconds.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        GatewayConfig::default().validate().expect("defaults validate");
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let config: GatewayConfig =
            toml::from_str("max_connections = 5\nidle_timeout = 2.5\nsynchronous = \"full\"").expect("parse");
        assert_eq!(config.max_connections, 5);
        assert_eq!(config.idle_timeout, Duration::from_millis(2500));
        assert_eq!(config.synchronous, SyncMode::Full);
        assert_eq!(config.outbound_queue, DEFAULT_OUTBOUND_QUEUE);
    }

    #[test]
    fn unknown_keys_and_bad_relations_are_refused() {
        assert!(toml::from_str::<GatewayConfig>("max_conections = 5").is_err());
        let config =
            GatewayConfig { heartbeat_interval: Duration::from_secs(60), ..GatewayConfig::default() };
        assert!(config.validate().is_err());
        for zero_period in [
            "heartbeat_interval = 0",
            "flush_interval = 0",
            "shutdown_timeout = 0",
            "session_idle_ttl = 0",
            "session_idle_ttl = 0.0004",
            "login_throttle_window = 0",
            "offer_ttl = 0",
            "offer_ttl = 0.0004",
        ] {
            let config: GatewayConfig = toml::from_str(zero_period).expect("a well-formed setting");
            assert!(config.validate().is_err(), "{zero_period} must be refused, not panic later");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let config: GatewayConfig =
            toml::from_str("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]").expect("two networks");
        assert!(config.is_trusted_proxy([10, 9, 8, 7].into()));
        assert!(config.is_trusted_proxy(std::net::Ipv6Addr::LOCALHOST.into()));
        assert!(!config.is_trusted_proxy([192, 0, 2, 1].into()));
        assert!(toml::from_str::<GatewayConfig>("trusted_proxies = [\"lb.internal\"]").is_err());
    }

    #[test]
    fn settings_that_would_end_every_session_or_refuse_every_login_are_refused() {
        for setting in [
            "session_idle_ttl = 0",
            "login_throttle_window = 0",
            "login_failures_per_account = 0",
            "login_failures_per_address = 0",
            "max_sessions_per_account = 0",
        ] {
            let config: GatewayConfig = toml::from_str(setting).expect("a well-formed setting");
            assert!(config.validate().is_err(), "{setting} must be refused");
        }
    }

    #[test]
    fn durations_past_ten_years_are_refused_by_name() {
        // Valid relations otherwise: a heartbeat this long would overflow each connection's first
        // deadline and panic there.
        let config: GatewayConfig = toml::from_str("heartbeat_interval = 1e19\nidle_timeout = 1.5e19")
            .expect("a well-formed setting");
        let error = config.validate().expect_err("refused").to_string();
        assert!(error.contains("heartbeat_interval"), "{error}");
        let config: GatewayConfig =
            toml::from_str("[matchmaking]\ndisconnect_grace = 4e8").expect("a well-formed setting");
        assert!(config.validate().expect_err("refused").to_string().contains("matchmaking.disconnect_grace"));
        let config: GatewayConfig =
            toml::from_str("session_max_lifetime = 3e8\nregistrations_per_address = 0")
                .expect("well-formed settings");
        config.validate().expect("under ten years, and registration closed, are fine");
    }
}
