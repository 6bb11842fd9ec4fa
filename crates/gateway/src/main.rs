//! The `gateway` binary: parses flags (with environment fallbacks and an optional TOML file),
//! sets up logging, binds the ports, and runs the server until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use gateway::GatewayConfig;
use gateway::config::{LogFormat, PlayerWriteMode, SyncMode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's malloc: many small short-lived allocations per request, and
/// glibc's allocator was a tenth of the gateway's CPU time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The game backend's gateway. Precedence: flag, then environment variable, then the TOML file,
/// then the built-in default.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "GAME_CONFIG")]
    config: Option<PathBuf>,
    /// Address for game clients [default: 127.0.0.1:7070].
    #[arg(long, env = "GAME_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the admin HTTP port (/healthz, /readyz, /metrics) [default: 127.0.0.1:7071].
    #[arg(long, env = "GAME_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Directory of the SQLite shards [default: ./data].
    #[arg(long, env = "GAME_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Redis URL; without one the server runs on an embedded in-process store (one process only).
    #[arg(long, env = "GAME_REDIS_URL")]
    redis_url: Option<String>,
    /// Prefix of every Redis key [default: game:].
    #[arg(long, env = "GAME_KEY_PREFIX")]
    key_prefix: Option<String>,
    /// Open game connections at most [default: 19000].
    #[arg(long, env = "GAME_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open game connections from one client address (IPv6: its /64) at most [default: 1000].
    #[arg(long, env = "GAME_MAX_CONNECTIONS_PER_ADDRESS")]
    max_connections_per_address: Option<usize>,
    /// Sustained requests per second per connection [default: 200].
    #[arg(long, env = "GAME_REQUESTS_PER_SEC")]
    requests_per_sec: Option<u32>,
    /// Request burst per connection [default: 400].
    #[arg(long, env = "GAME_REQUEST_BURST")]
    request_burst: Option<u32>,
    /// Failed logins per client address and window before throttling [default: 100].
    #[arg(long, env = "GAME_LOGIN_FAILURES_PER_ADDRESS")]
    login_failures_per_address: Option<u64>,
    /// Accounts registered per client address and 15-minute window [default: 20].
    #[arg(long, env = "GAME_REGISTRATIONS_PER_ADDRESS")]
    registrations_per_address: Option<u64>,
    /// Live sessions per account; a login past it ends the oldest [default: 64].
    #[arg(long, env = "GAME_MAX_SESSIONS_PER_ACCOUNT")]
    max_sessions_per_account: Option<usize>,
    /// Reverse proxies or load balancers (addresses or networks, comma-separated) whose
    /// connections count as the client address they put in X-Forwarded-For [default: none].
    #[arg(long, env = "GAME_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<gateway::forwarded::ProxyNetwork>>,
    /// SQLite synchronous mode [default: normal].
    #[arg(long, env = "GAME_SYNCHRONOUS", value_enum)]
    synchronous: Option<SyncMode>,
    /// How player-state updates reach SQLite [default: buffered].
    #[arg(long, env = "GAME_PLAYER_WRITE_MODE", value_enum)]
    player_write_mode: Option<PlayerWriteMode>,
    /// Log format [default: text]. The level comes from RUST_LOG (default info).
    #[arg(long, env = "GAME_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// The inventory's item catalogue, a TOML file [default: none, an empty catalogue].
    #[arg(long, env = "GAME_INVENTORY_CATALOGUE")]
    inventory_catalogue: Option<PathBuf>,
    /// The service credential for the admin port's inventory endpoints (at least 16 bytes);
    /// prefer the environment variable, flags show in `ps` [default: none, endpoints off].
    #[arg(long, env = "GAME_SERVICE_TOKEN", hide_env_values = true)]
    service_token: Option<String>,
}

impl Cli {
    fn into_config(self) -> anyhow::Result<GatewayConfig> {
        let mut config = match &self.config {
            Some(path) => GatewayConfig::from_toml_file(path)?,
            None => GatewayConfig::default(),
        };
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(value) = self.$field { config.$field = value; } )* };
        }
        take!(
            listen,
            admin_listen,
            data_dir,
            key_prefix,
            max_connections,
            max_connections_per_address,
            requests_per_sec,
            request_burst,
            login_failures_per_address,
            registrations_per_address,
            max_sessions_per_account,
            trusted_proxies,
            synchronous,
            player_write_mode,
            log_format
        );
        if self.inventory_catalogue.is_some() {
            config.inventory_catalogue = self.inventory_catalogue;
        }
        if let Some(token) = self.service_token {
            config.service_token = Some(gateway::config::ServiceToken::new(token));
        }
        if self.redis_url.is_some() {
            config.redis_url = self.redis_url;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Logs at the levels `RUST_LOG` names per target (`info,gateway=debug`; default `info`).
///
/// A `Targets` filter rather than an `EnvFilter`: every connection's task runs inside a span, and
/// an `EnvFilter` takes a shared lock on each span enter and exit (for span-field directives this
/// server never uses), which under load cost about 2 % of the gateway's CPU.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let default = || Targets::new().with_default(tracing::Level::INFO);
    let targets = match std::env::var("RUST_LOG") {
        Ok(directives) => directives.parse::<Targets>().unwrap_or_else(|error| {
            eprintln!("ignoring RUST_LOG={directives:?} ({error}); logging at info");
            default()
        }),
        Err(_) => default(),
    };
    let registry = tracing_subscriber::registry().with(targets);
    match format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).init(),
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json()).init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Cli::parse().into_config()?;
    init_logging(config.log_format);

    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding {}", config.admin_listen))?;
    tracing::info!(admin = %admin.local_addr()?, "admin HTTP listening");

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    gateway::run(listener, admin, config, Arc::new(clock::SystemClock), shutdown).await?;
    Ok(())
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
    shutdown.cancel();
}
