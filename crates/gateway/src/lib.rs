//! The gateway: the one server binary, and the only crate that knows WebSockets.
//!
//! Owns: accepting game connections, the handshake, turning frames into calls on the domain
//! crates and their results into frames, per-connection limits (frame size, request rate,
//! outbound queue, heartbeat), the registry of who is connected where and the bus between gateway
//! processes, the admin HTTP port, configuration, and the one shutdown path.
//!
//! Never: holds game rules or SQL of its own. Domains own their shards; this crate wires them.

mod admin;
mod chat_requests;
pub mod config;
mod connection;
mod errors;
pub mod forwarded;
mod hub;
mod inventory_requests;
mod matchmaking_requests;
pub mod metrics;
pub mod ops;
mod outbound;
mod player_requests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clock::SharedClock;
use kv::Kv;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::GatewayConfig;

/// At most one warning per this interval about failing accepts, with how many failed.
const ACCEPT_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Refused connections being told why (a handshake, then close 1013) at once; past it a refused
/// socket is closed without a word.
const REFUSALS_IN_FLIGHT: usize = 256;

/// Departures from other processes of players connected here, waiting to be checked: past it a
/// burst's tickets stay set aside (and go after the disconnect grace), as without the check.
const DEPARTURES_TO_CHECK: usize = 1024;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The key-value store could not be opened.
    #[error(transparent)]
    Kv(#[from] kv::KvError),
    /// The auth domain could not be opened.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The player domain could not be opened.
    #[error(transparent)]
    Player(#[from] player::PlayerError),
    /// The chat domain could not be opened.
    #[error(transparent)]
    Chat(#[from] chat::ChatError),
    /// The inventory domain could not be opened (catalogue or shard).
    #[error(transparent)]
    Inventory(#[from] inventory::InventoryError),
    /// The matchmaking domain could not be opened (configuration or shard).
    #[error(transparent)]
    Match(#[from] matchmaking::MatchError),
    /// A file or socket operation failed.
    // Not `#[from]`, which would also make the error its own source: `main` prints the chain,
    // which would then say it twice.
    #[error("io: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for GatewayError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// What every connection task shares: configuration, domains, the hub and metrics.
pub(crate) struct Shared {
    config: GatewayConfig,
    clock: SharedClock,
    kv: Kv,
    auth: auth::Auth,
    players: player::Players,
    inventory: inventory::Inventory,
    known_accounts: inventory_requests::KnownAccounts,
    chat: chat::Chat,
    chat_announcer: chat_requests::Announcer,
    matchmaking: matchmaking::Matchmaking,
    hub: hub::Hub,
    metrics: Arc<metrics::Metrics>,
    /// Open connections per client address, each at most `max_connections_per_address`.
    address_slots: connection::AddressSlots,
}

impl Shared {
    /// Every shard this process has open: each domain's, and chat's `chat.db` and open years.
    fn shards(&self) -> Vec<shard::Shard> {
        let mut shards = vec![
            self.auth.shard().clone(),
            self.players.shard().clone(),
            self.inventory.shard().clone(),
            self.matchmaking.shard().clone(),
        ];
        shards.extend(self.chat.shards());
        shards
    }
}

/// Runs a gateway on already-bound listeners until `shutdown` is cancelled, then drains: stops
/// accepting, closes every connection with a close frame after its in-flight request (waiting
/// `config.shutdown_timeout` at most), runs the final flushes and commits (as long again at most),
/// checkpoints the shards and returns.
///
/// # Errors
/// [`GatewayError`] when start-up fails (bad configuration, Redis unreachable, a shard that
/// cannot be opened, the embedded store already in use).
pub async fn run(
    listener: TcpListener,
    admin_listener: TcpListener,
    config: GatewayConfig,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|error| {
        GatewayError::Config(format!(
            "data directory {}: {error}; give --data-dir a directory the gateway can create and write",
            config.data_dir.display()
        ))
    })?;
    let _data_dir_lock = ops::lock_data_dir_shared(&config.data_dir)?;
    // A restore that stopped half-way left some shards missing, which opening would create empty.
    let staging = config.data_dir.join(ops::backup::STAGING_DIR);
    if staging.exists() {
        return Err(GatewayError::Config(format!(
            "{} exists: a restore into this data directory did not finish; run `gamectl restore` again",
            staging.display()
        )));
    }
    let kv = match &config.redis_url {
        Some(url) => {
            let kv = Kv::connect_redis(url, &config.key_prefix).await?;
            tracing::info!(redis = %redact(url), "using Redis");
            match kv.risky_settings().await {
                Ok(risky) => {
                    for setting in risky {
                        tracing::error!("{setting}");
                    }
                }
                Err(error) => tracing::warn!(%error, "could not read Redis's settings"),
            }
            kv
        }
        None => {
            let kv = Kv::embedded(&config.data_dir, &config.key_prefix)?;
            tracing::warn!(
                data_dir = %config.data_dir.display(),
                "no Redis configured: running on the embedded in-process store; sessions do not \
                 survive a restart and only this one process may use the data directory"
            );
            kv
        }
    };
    let auth =
        auth::Auth::open(config.data_dir.join("auth.db"), kv.clone(), clock.clone(), config.auth_config())
            .await?;
    let players = player::Players::open(
        config.data_dir.join("player.db"),
        kv.clone(),
        clock.clone(),
        config.player_config(),
    )
    .await?;

    let (chat, chat_writer) =
        chat::Chat::open(&config.data_dir, kv.clone(), clock.clone(), config.chat_config()).await?;

    let (inventory, inventory_committer) = inventory_requests::open(&config, clock.clone()).await?;

    let matchmaking = matchmaking::Matchmaking::open(
        config.data_dir.join("match.db"),
        kv.clone(),
        clock.clone(),
        config.matchmaking.clone(),
        &config.shard_config(),
    )
    .await?;

    let metrics = Arc::new(metrics::Metrics::default());
    let hub = hub::Hub::new(kv.clone(), metrics.clone());
    // Background tasks (bus, admin port) outlive the connections' drain, so revocations keep
    // arriving and /healthz keeps answering while connections close.
    let background = TaskTracker::new();
    let background_shutdown = CancellationToken::new();
    let (still_connected, departures_to_check) = tokio::sync::mpsc::channel(DEPARTURES_TO_CHECK);
    hub.listen(&background, background_shutdown.clone(), still_connected).await?;
    let (chat_announcer, chat_announcer_task) = chat_requests::Announcer::new(hub.clone());

    let shared = Arc::new(Shared {
        config: config.clone(),
        clock,
        kv,
        auth,
        players: players.clone(),
        inventory,
        known_accounts: inventory_requests::KnownAccounts::default(),
        chat,
        chat_announcer,
        matchmaking,
        hub,
        metrics,
        address_slots: connection::AddressSlots::new(config.max_connections_per_address),
    });
    // Ends with the hub's bus task, which holds the other end.
    background.spawn(matchmaking_requests::put_back_still_connected(shared.clone(), departures_to_check));
    // Chat's group-commit writer: after the connections drain, it commits what is still queued.
    background.spawn(chat_writer.run(background_shutdown.clone()));
    // Chat's event publisher: after the connections drain, it publishes what is still queued.
    background.spawn(chat_announcer_task.run(background_shutdown.clone()));

    // Inventory's group committer: after the connections drain, it commits what is still queued.
    background.spawn(inventory_committer.run(background_shutdown.clone()));

    if config.player_write_mode == config::PlayerWriteMode::Buffered {
        // The flusher's last act, when `background_shutdown` fires after the connections have
        // drained, is the final flush.
        let holder = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
        background.spawn(player::flusher::run(players, holder, background_shutdown.clone()));
    }

    // The matchmaker: every process runs the loop; the lease holder forms the matches.
    background.spawn(matchmaking_requests::run_matchmaker(
        shared.clone(),
        format!("{}-{}", std::process::id(), uuid::Uuid::new_v4()),
        background_shutdown.clone(),
    ));

    background.spawn({
        let stop = background_shutdown.clone();
        let router = admin::router(shared.clone(), stop.clone());
        async move {
            let serve = axum::serve(admin_listener, router).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(error) = serve.await {
                tracing::error!(%error, "admin server failed");
            }
        }
    });

    tracing::info!(listen = %listener.local_addr()?, data_dir = %config.data_dir.display(), "gateway ready");
    let connections = TaskTracker::new();
    accept_loop(&listener, &shared, &connections, &shutdown).await;
    drop(listener);

    // Every connection task sees `shutdown`, finishes its in-flight request and closes with 1001.
    tracing::info!(connections = shared.metrics.open_connections(), "shutting down: draining connections");
    connections.close();
    if tokio::time::timeout(config.shutdown_timeout, connections.wait()).await.is_err() {
        tracing::warn!(
            connections = shared.metrics.open_connections(),
            "shutdown timeout: going on without the connections still open; they end with the process"
        );
    }
    background_shutdown.cancel();
    background.close();
    if tokio::time::timeout(config.shutdown_timeout, background.wait()).await.is_err() {
        tracing::warn!(
            tasks = background.len(),
            "shutdown timeout: going on without background tasks still running (the final flush, \
             chat's and the inventory's last commits, the admin port); player states buffered on the \
             embedded store and not yet flushed are lost with the process"
        );
    }
    final_flush(&shared).await;
    tracing::info!("gateway stopped");
    Ok(())
}

async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let next_id = AtomicU64::new(1);
    let (mut n_accept_failures, mut last_accept_warning) = (0_u64, None);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and similar: back off instead of spinning, and say so
                // once in a while rather than twenty times a second.
                n_accept_failures += 1;
                if last_accept_warning
                    .is_none_or(|at: tokio::time::Instant| at.elapsed() >= ACCEPT_WARNING_INTERVAL)
                {
                    tracing::warn!(%error, failures = n_accept_failures, "accept failed");
                    last_accept_warning = Some(tokio::time::Instant::now());
                    n_accept_failures = 0;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Dropped at once, with no close frame: one address is taking far more than its share. A
        // trusted proxy's connections are counted once the handshake says whose they are.
        let address_slot = if shared.config.is_trusted_proxy(peer.ip()) {
            None
        } else {
            let Some(slot) = shared.address_slots.try_take(peer.ip()) else {
                shared.metrics.connection_refused_for_address();
                continue;
            };
            Some(slot)
        };
        let admission = match slots.clone().try_acquire_owned() {
            Ok(slot) => connection::Admission::Admitted { _slot: slot },
            Err(_) => {
                shared.metrics.connection_refused();
                // Telling a refused client why takes a handshake; past this many at once the
                // socket is just closed, so a flood of silent sockets cannot pile up.
                match refusals.clone().try_acquire_owned() {
                    Ok(place) => connection::Admission::Refused { _place: place },
                    Err(_) => continue,
                }
            }
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        // Handed to the connection's own future rather than to a wrapper around it: awaiting a
        // moved future from an async block keeps two copies of it, 4 KiB more per connection.
        let serving =
            connection::serve(stream, peer, id, admission, address_slot, shared.clone(), shutdown.clone());
        tracker.spawn(serving);
    }
}

/// The last act of a shutdown, after the flusher's final flush: checkpoint every shard's WAL.
async fn final_flush(shared: &Shared) {
    for shard in shared.shards() {
        if let Err(error) = shard.checkpoint().await {
            tracing::warn!(%error, shard = %shard.path().display(), "final checkpoint failed");
        }
    }
}

/// A Redis URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_stay_out_of_logs() {
        assert_eq!(redact("redis://:secret@cache:6379/0"), "redis://***@cache:6379/0");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
