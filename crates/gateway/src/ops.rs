//! Operations on a data directory and its Redis, for the `gamectl` binary: status, integrity,
//! player-state flush, accounts and sessions, the inventory ledger and chat shard lifecycle.
//! Online backup and restore live in [`backup`].
//!
//! Every function takes the same [`GatewayConfig`] the gateway runs with, so the tool finds the
//! same data directory, Redis and key prefix. Shards are opened with [`Shard::open_existing`]
//! (never created, never migrated) for maintenance, and through their domain crates for domain
//! operations, after checking that the file exists and is at this build's schema version: a
//! wrong `--data-dir` is an error, never a new empty shard, and a newer `gamectl` never migrates
//! a shard under the older gateways running on it. Every Redis call is bounded by a timeout.
//!
//! The data directory lock: every gateway holds a shared OS lock on `DATA_DIR/gateway.lock` for
//! its lifetime ([`lock_data_dir_shared`]); a restore takes it exclusively, so a restore never
//! runs under a live gateway and a gateway never starts during a restore.

pub mod backup;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kv::Kv;
use serde::Serialize;
use shard::Shard;
use uuid::Uuid;

use crate::{GatewayConfig, GatewayError};

/// The lock file every gateway holds shared, and a restore exclusively.
pub const LOCK_FILE: &str = "gateway.lock";
/// How often, and how far apart, a starting gateway tries for its shared lock.
const LOCK_ATTEMPTS: u32 = 20;
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// Default bound on every call to Redis and on each gateway's admin port.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of ledger entries shown.
pub const DEFAULT_LEDGER_LIMIT: u32 = 100;

/// Why an operation failed, named for what an operator does about it.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The data directory does not exist or holds no shard.
    #[error("{0}: not a data directory ({1}); check --data-dir")]
    DataDir(PathBuf, String),
    /// A shard the operation needs is not in the data directory.
    #[error("missing shard {0}")]
    MissingShard(PathBuf),
    /// A shard cannot be opened or read: damaged, or not a database.
    #[error("shard {0}: {1}")]
    Shard(PathBuf, shard::ShardError),
    /// Redis is not configured, does not answer, or answered with an error.
    #[error("Redis: {0}")]
    Redis(String),
    /// A gateway runs on the data directory (it holds `gateway.lock`).
    #[error("a gateway is running on {0} (it holds {LOCK_FILE}); stop every gateway first")]
    GatewayRunning(PathBuf),
    /// A backup is incomplete, altered or damaged, or its destination is not empty.
    #[error("backup: {0}")]
    Backup(String),
    /// No account has this name or id.
    #[error("no account named {0:?}")]
    UnknownAccount(String),
    /// A domain refused or failed.
    #[error("{0}")]
    Domain(String),
    /// A shard is at an older schema version than this build's, which would migrate it.
    #[error("{0}")]
    OlderSchema(String),
    /// A file operation failed.
    // Not `#[from]`, which would also make the error its source: `gamectl` prints the chain,
    // which would then say it twice.
    #[error("io: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for OpsError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<auth::AuthError> for OpsError {
    fn from(error: auth::AuthError) -> Self {
        Self::Domain(format!("auth: {error}"))
    }
}

impl From<player::PlayerError> for OpsError {
    fn from(error: player::PlayerError) -> Self {
        Self::Domain(format!("player: {error}"))
    }
}

impl From<chat::ChatError> for OpsError {
    fn from(error: chat::ChatError) -> Self {
        Self::Domain(format!("chat: {error}"))
    }
}

impl From<matchmaking::MatchError> for OpsError {
    fn from(error: matchmaking::MatchError) -> Self {
        Self::Domain(format!("match: {error}"))
    }
}

impl From<inventory::InventoryError> for OpsError {
    fn from(error: inventory::InventoryError) -> Self {
        Self::Domain(format!("inventory: {error}"))
    }
}

/// Takes the shared lock a running gateway holds on `DATA_DIR/gateway.lock`; it lasts as long
/// as the returned file is open.
///
/// # Errors
/// A restore holds the lock, or the file cannot be created.
pub fn lock_data_dir_shared(data_dir: &Path) -> Result<File, GatewayError> {
    let file = open_lock_file(data_dir)?;
    // `gamectl` asking whether a gateway runs holds the lock for an instant; a restore holds it
    // for as long as it runs.
    for _ in 0..LOCK_ATTEMPTS {
        match file.try_lock_shared() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => std::thread::sleep(LOCK_RETRY_INTERVAL),
            Err(std::fs::TryLockError::Error(error)) => return Err(error.into()),
        }
    }
    Err(GatewayError::Io(std::io::Error::new(
        std::io::ErrorKind::WouldBlock,
        format!("{}: a restore is in progress on this data directory", data_dir.display()),
    )))
}

/// Takes `DATA_DIR/gateway.lock` exclusively: proof that no gateway runs on the directory.
///
/// # Errors
/// [`OpsError::GatewayRunning`] when a gateway holds it.
pub fn lock_data_dir_exclusive(data_dir: &Path) -> Result<File, OpsError> {
    let file = open_lock_file(data_dir)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpsError::GatewayRunning(data_dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(error)) => Err(error.into()),
    }
}

fn open_lock_file(data_dir: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(data_dir.join(LOCK_FILE))
}

/// One shard file of a data directory.
#[derive(Debug, Clone, Serialize)]
pub struct ShardFile {
    /// The domain owning it (`auth`, `chat`, `inventory`, `player`, ...).
    pub domain: String,
    /// The file name (`auth.db`, `chat-2026.db`, ...).
    pub file: String,
    /// Its path.
    #[serde(skip)]
    pub path: PathBuf,
}

/// The domain owning a shard file: its stem, with every `chat-YYYY.db` under `chat`.
pub fn domain_of(file: &str) -> String {
    let stem = file.strip_suffix(".db").unwrap_or(file);
    if stem.starts_with("chat-") { "chat".to_owned() } else { stem.to_owned() }
}

/// Every live shard (`*.db`) of the data directory, by file name. Archived chat years (in the
/// archive directory) are not live shards.
///
/// # Errors
/// [`OpsError::DataDir`] when the directory does not exist or holds no shard.
pub fn shard_files(data_dir: &Path) -> Result<Vec<ShardFile>, OpsError> {
    let entries = std::fs::read_dir(data_dir)
        .map_err(|error| OpsError::DataDir(data_dir.to_path_buf(), error.to_string()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if file.ends_with(".db") && entry.file_type()?.is_file() {
            files.push(ShardFile { domain: domain_of(&file), path: entry.path(), file });
        }
    }
    if files.is_empty() {
        return Err(OpsError::DataDir(data_dir.to_path_buf(), "it holds no *.db shard".into()));
    }
    files.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(files)
}

/// The path of a shard the operation needs, checked to exist.
fn required(data_dir: &Path, file: &str) -> Result<PathBuf, OpsError> {
    // Checking the directory first tells a wrong --data-dir apart from one missing shard.
    shard_files(data_dir)?;
    let path = data_dir.join(file);
    if path.is_file() { Ok(path) } else { Err(OpsError::MissingShard(path)) }
}

/// Opens an existing shard for maintenance.
///
/// # Errors
/// [`OpsError::Shard`] when it cannot be opened (missing, damaged, not a database).
pub async fn open_shard(config: &GatewayConfig, path: &Path) -> Result<Shard, OpsError> {
    Shard::open_existing(path, &config.shard_config())
        .await
        .map_err(|error| OpsError::Shard(path.to_path_buf(), error))
}

/// Runs `future` (a call to Redis) within `timeout`.
async fn bounded<T, E: std::fmt::Display>(
    timeout: Duration,
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, OpsError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(OpsError::Redis(format!("{what}: {error}"))),
        Err(_) => Err(OpsError::Redis(format!("{what}: no answer within {} ms", timeout.as_millis()))),
    }
}

/// The key-value store the gateways of this configuration share: Redis when configured, else
/// the embedded store of the data directory, which only exists while no gateway runs on it.
///
/// # Errors
/// [`OpsError::Redis`] when Redis does not answer within `timeout`; when the embedded store is
/// held by a running gateway (whose sessions and buffer live only in its own process).
pub async fn connect_kv(config: &GatewayConfig, timeout: Duration) -> Result<Kv, OpsError> {
    // The embedded store would create its lock file: a wrong directory must stay untouched.
    shard_files(&config.data_dir)?;
    match &config.redis_url {
        Some(url) => {
            let kv = bounded(timeout, "connect", Kv::connect_redis(url, &config.key_prefix)).await?;
            bounded(timeout, "ping", kv.ping()).await?;
            Ok(kv)
        }
        None => {
            let kv = Kv::embedded(&config.data_dir, &config.key_prefix).map_err(|error| match error {
                kv::KvError::EmbeddedInUse(_) => OpsError::Redis(
                    "none configured, and a gateway runs on the embedded store of this data directory: \
                     its sessions and buffered state live in that process; run gateways with --redis-url"
                        .into(),
                ),
                other => OpsError::Redis(other.to_string()),
            })?;
            // The embedded store was free, so a gateway running on this directory runs on a Redis
            // nobody named here: this empty store would report sessions ended and buffers flushed
            // that it never saw.
            if gateway_running(&config.data_dir)? {
                return Err(OpsError::Redis(
                    "none configured, but a gateway runs on this data directory with Redis: give gamectl \
                     the gateways' --redis-url (or GAME_REDIS_URL, or their --config)"
                        .into(),
                ));
            }
            Ok(kv)
        }
    }
}

/// Whether a gateway holds `DATA_DIR/gateway.lock`. Asks by taking the lock exclusively for an
/// instant, which a gateway starting in that instant waits out ([`lock_data_dir_shared`]).
fn gateway_running(data_dir: &Path) -> Result<bool, OpsError> {
    match lock_data_dir_exclusive(data_dir) {
        Ok(_released_when_dropped) => Ok(false),
        Err(OpsError::GatewayRunning(_)) => Ok(true),
        Err(error) => Err(error),
    }
}

/// Refuses a shard at an older schema version than this build's: opening it through its domain,
/// as the operations beyond status, integrity and backup do, would migrate it under gateways of
/// the older release that may still run on it.
async fn require_current_schema(config: &GatewayConfig, path: &Path, current: u32) -> Result<(), OpsError> {
    let shard = open_shard(config, path).await?;
    let version = shard.schema_version().await.map_err(|error| OpsError::Shard(path.to_path_buf(), error))?;
    if version < current {
        return Err(OpsError::OlderSchema(format!(
            "{} is at schema version {version}, older than this gamectl's {current}: run the gamectl of \
             the gateways' release (this one would migrate the file under them)",
            path.display()
        )));
    }
    Ok(())
}

fn clock() -> clock::SharedClock {
    Arc::new(clock::SystemClock)
}

fn now_ms() -> u64 {
    clock::Clock::now_ms(&clock::SystemClock)
}

// ---------------------------------------------------------------------------------------------
// Status

/// What `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Every live shard.
    pub shards: Vec<ShardStatus>,
    /// Chat years, live and archived.
    pub chat_years: Vec<ChatYear>,
    /// Why the chat years could not be listed (a year's shard or the archive unreadable).
    pub chat_years_error: Option<String>,
    /// Redis and the player-state buffer.
    pub redis: RedisStatus,
    /// Each gateway asked through its admin port.
    pub gateways: Vec<GatewayStatus>,
}

/// One shard in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    /// The file and its domain.
    #[serde(flatten)]
    pub file: ShardFile,
    /// Bytes of the database file.
    pub bytes: u64,
    /// Bytes of its write-ahead log (0 when there is none).
    pub wal_bytes: u64,
    /// `user_version`: migrations applied.
    pub schema_version: Option<u32>,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
    /// Why the shard could not be read, if it could not.
    pub error: Option<String>,
}

/// One chat year in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct ChatYear {
    /// The year.
    pub year: i32,
    /// `live` or `archived`.
    pub state: &'static str,
    /// Bytes on disk.
    pub bytes: u64,
    /// Messages stored.
    pub messages: u64,
}

/// Redis in [`Status`].
#[derive(Debug, Clone, Serialize, Default)]
pub struct RedisStatus {
    /// Whether a Redis URL is configured (else the gateway runs on its embedded store).
    pub configured: bool,
    /// Whether it answered.
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
    /// Player states buffered and not yet flushed (dirty plus being flushed).
    pub buffered_players: Option<u64>,
    /// Age of the oldest unflushed player-state update, in milliseconds.
    pub flush_lag_ms: Option<u64>,
    /// Settings of this Redis under which buffered state can be lost or come back stale, each
    /// saying what to set instead (`kv::RiskySetting`).
    pub risky_settings: Vec<String>,
}

/// One gateway in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    /// Its admin address.
    pub admin: SocketAddr,
    /// Whether it answered.
    pub reachable: bool,
    /// Open game connections.
    pub connections: Option<u64>,
    /// Open connections that are logged in.
    pub players: Option<u64>,
}

/// Everything about the data directory, Redis and the gateways at `admins`; a shard or a
/// gateway that cannot be read is reported, not an error.
///
/// # Errors
/// [`OpsError::DataDir`] when the data directory is wrong.
pub async fn status(
    config: &GatewayConfig,
    admins: &[SocketAddr],
    timeout: Duration,
) -> Result<Status, OpsError> {
    let mut shards = Vec::new();
    for file in shard_files(&config.data_dir)? {
        shards.push(shard_status(config, file).await);
    }
    let archive_dir = config.chat_config().archive_dir(&config.data_dir);
    let chat_years = chat::lifecycle::list(&config.data_dir, &archive_dir).await.map(|years| {
        years
            .into_iter()
            .map(|year| ChatYear {
                year: year.year,
                state: match year.state {
                    chat::lifecycle::ShardState::Live => "live",
                    chat::lifecycle::ShardState::Archived => "archived",
                },
                bytes: year.bytes,
                messages: year.messages,
            })
            .collect()
    });
    let (chat_years, chat_years_error) = match chat_years {
        Ok(years) => (years, None),
        Err(error) => (Vec::new(), Some(error.to_string())),
    };
    let redis = redis_status(config, timeout).await;
    let mut gateways = Vec::new();
    for &admin in admins {
        gateways.push(gateway_status(admin, timeout).await);
    }
    Ok(Status { data_dir: config.data_dir.clone(), shards, chat_years, chat_years_error, redis, gateways })
}

async fn shard_status(config: &GatewayConfig, file: ShardFile) -> ShardStatus {
    let bytes = std::fs::metadata(&file.path).map_or(0, |m| m.len());
    let wal_bytes = std::fs::metadata(companion(&file.path, "-wal")).map_or(0, |m| m.len());
    let mut status =
        ShardStatus { file, bytes, wal_bytes, schema_version: None, tables: BTreeMap::new(), error: None };
    let read = async {
        let shard = open_shard(config, &status.file.path).await?;
        let version = shard.schema_version().await.map_err(|e| OpsError::Shard(shard.path().into(), e))?;
        let tables = shard.read(count_rows).await.map_err(|e| OpsError::Shard(shard.path().into(), e))?;
        Ok::<_, OpsError>((version, tables))
    };
    match read.await {
        Ok((version, tables)) => {
            status.schema_version = Some(version);
            status.tables = tables;
        }
        Err(error) => status.error = Some(error.to_string()),
    }
    status
}

/// Rows of every table: generic, so it needs no domain's SQL.
fn count_rows(conn: &shard::rusqlite::Connection) -> shard::rusqlite::Result<BTreeMap<String, u64>> {
    let mut statement = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let names = statement.query_map([], |row| row.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
    let mut tables = BTreeMap::new();
    for name in names {
        let quoted = name.replace('"', "\"\"");
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM \"{quoted}\""), [], |row| row.get(0))?;
        tables.insert(name, u64::try_from(n).unwrap_or(0));
    }
    Ok(tables)
}

/// `path` with `suffix` appended (`-wal`, `-shm`).
pub(crate) fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

async fn redis_status(config: &GatewayConfig, timeout: Duration) -> RedisStatus {
    let mut status = RedisStatus { configured: config.redis_url.is_some(), ..RedisStatus::default() };
    if !status.configured {
        status.error = Some("not configured: gateways run on their embedded store".into());
        return status;
    }
    let kv = match connect_kv(config, timeout).await {
        Ok(kv) => kv,
        Err(error) => {
            status.error = Some(error.to_string());
            return status;
        }
    };
    status.reachable = true;
    match bounded(timeout, "settings", kv.risky_settings()).await {
        Ok(risky) => status.risky_settings = risky.iter().map(ToString::to_string).collect(),
        Err(error) => status.error = Some(error.to_string()),
    }
    // The buffer's sizes straight from the store: opening `player.db` would run its migrations,
    // and in the configured mode, the steps a gateway takes when it starts.
    match bounded(timeout, "buffer stats", player::buffer_stats_of(&kv)).await {
        Ok(stats) => {
            status.buffered_players = Some(stats.n_buffered);
            status.flush_lag_ms =
                Some(stats.oldest_dirty_ms.map_or(0, |oldest| now_ms().saturating_sub(oldest)));
        }
        Err(error) => status.error = Some(error.to_string()),
    }
    status
}

async fn gateway_status(admin: SocketAddr, timeout: Duration) -> GatewayStatus {
    let metrics = tokio::time::timeout(timeout, http_get(admin, "/metrics")).await.ok().and_then(Result::ok);
    let value = |name: &str| {
        metrics.as_deref().and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
                .and_then(|value| value.trim().parse::<f64>().ok())
                // Gauges of counts are whole numbers.
                .map(|value| value as u64)
        })
    };
    GatewayStatus {
        admin,
        reachable: metrics.is_some(),
        connections: value("gateway_connections"),
        players: value("gateway_authenticated_connections"),
    }
}

/// One plain HTTP/1.1 GET; the body of a 200 answer.
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!("{addr}{path}: unexpected answer"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Integrity and flush

/// The integrity check of one shard.
#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    /// The file.
    pub file: String,
    /// What `PRAGMA integrity_check` reported; empty when sound.
    pub problems: Vec<String>,
}

impl Integrity {
    /// True when the shard is sound.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// `PRAGMA integrity_check` of every live shard and every archived chat year; a shard that
/// cannot even be opened is reported with that as its problem.
///
/// # Errors
/// [`OpsError::DataDir`] when the data directory is wrong; the chat archive cannot be listed.
pub async fn integrity(config: &GatewayConfig) -> Result<Vec<Integrity>, OpsError> {
    let mut reports = Vec::new();
    for file in shard_files(&config.data_dir)? {
        let problems = match open_shard(config, &file.path).await {
            Ok(shard) => match shard.integrity_check().await {
                Ok(problems) => problems,
                Err(error) => vec![error.to_string()],
            },
            Err(error) => vec![error.to_string()],
        };
        reports.push(Integrity { file: file.file, problems });
    }
    let archive_dir = config.chat_config().archive_dir(&config.data_dir);
    for (path, problems) in chat::lifecycle::check_archives(&archive_dir).await? {
        let file = path.strip_prefix(&config.data_dir).unwrap_or(&path).display().to_string();
        reports.push(Integrity { file, problems });
    }
    Ok(reports)
}

/// What a forced player-state flush wrote.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Flush {
    /// Rows written to `player.db`.
    pub rows_written: u64,
    /// Rows already there in that version or a newer one.
    pub rows_skipped: u64,
    /// Transactions.
    pub batches: u64,
}

/// Writes every buffered player state to `player.db` now, beside the running flusher.
///
/// # Errors
/// [`OpsError::Redis`] when the store is unreachable or does not answer in time; shard errors.
pub async fn flush(config: &GatewayConfig, timeout: Duration) -> Result<Flush, OpsError> {
    let path = required(&config.data_dir, "player.db")?;
    let kv = connect_kv(config, timeout).await?;
    require_current_schema(config, &path, player::schema_version()).await?;
    let players = player::Players::open_beside_gateways(path, kv, clock(), config.player_config()).await?;
    let report = match tokio::time::timeout(timeout, players.flush_now()).await {
        Ok(report) => report?,
        Err(_) => return Err(OpsError::Redis(format!("flush: not done within {} ms", timeout.as_millis()))),
    };
    Ok(Flush {
        rows_written: report.rows_written,
        rows_skipped: report.rows_skipped,
        batches: report.batches,
    })
}

// ---------------------------------------------------------------------------------------------
// Accounts and sessions

/// An account as `account show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountInfo {
    /// Its id.
    pub account_id: Uuid,
    /// Its username.
    pub username: String,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// Whether an operator disabled it.
    pub disabled: bool,
    /// Sessions ended by this operation, if it ended any.
    pub sessions_ended: Option<usize>,
}

/// The auth domain of the data directory, on the shared key-value store.
async fn open_auth(config: &GatewayConfig, kv: Kv) -> Result<auth::Auth, OpsError> {
    let path = required(&config.data_dir, "auth.db")?;
    require_current_schema(config, &path, auth::schema_version()).await?;
    let auth_config = auth::AuthConfig { hash_threads: 1, ..config.auth_config() };
    Ok(auth::Auth::open(path, kv, clock(), auth_config).await?)
}

/// The account named `name` (a username, or an account id).
async fn find_account(auth: &auth::Auth, name: &str) -> Result<auth::Account, OpsError> {
    let found = match Uuid::parse_str(name) {
        Ok(account_id) => auth.account(account_id).await,
        Err(_) => auth.account_by_username(name).await,
    };
    match found {
        Err(auth::AuthError::UnknownAccount) => Err(OpsError::UnknownAccount(name.to_owned())),
        other => Ok(other?),
    }
}

async fn account_info(auth: &auth::Auth, account: auth::Account) -> Result<AccountInfo, OpsError> {
    Ok(AccountInfo {
        disabled: auth.is_disabled(account.account_id).await?,
        account_id: account.account_id,
        username: account.username,
        created_at_ms: account.created_at_ms,
        sessions_ended: None,
    })
}

/// The account named `name` (username or id).
///
/// # Errors
/// [`OpsError::UnknownAccount`]; a missing `auth.db`; the store.
pub async fn account_show(
    config: &GatewayConfig,
    name: &str,
    timeout: Duration,
) -> Result<AccountInfo, OpsError> {
    let auth = open_auth(config, connect_kv(config, timeout).await?).await?;
    let account = find_account(&auth, name).await?;
    account_info(&auth, account).await
}

/// Disables (`disabled = true`) or re-enables an account. Disabling also ends every session of
/// it at once: they are deleted, and every gateway closes their live connections (close code
/// 4001). The flag is committed first, so a login racing the disable cannot keep a session.
///
/// # Errors
/// [`OpsError::UnknownAccount`]; [`OpsError::Redis`] when the sessions cannot be ended (the flag
/// stays set: run it again).
pub async fn set_account_disabled(
    config: &GatewayConfig,
    name: &str,
    disabled: bool,
    timeout: Duration,
) -> Result<AccountInfo, OpsError> {
    let kv = connect_kv(config, timeout).await?;
    let auth = open_auth(config, kv.clone()).await?;
    let account = find_account(&auth, name).await?;
    auth.set_disabled(account.account_id, disabled).await?;
    let ended =
        if disabled { Some(end_sessions(&auth, &kv, account.account_id, timeout).await?) } else { None };
    let mut info = account_info(&auth, account).await?;
    info.sessions_ended = ended;
    Ok(info)
}

/// Ends every session of the account named `name` and closes its live connections on every
/// gateway; returns how many sessions ended. The account can log in again.
///
/// # Errors
/// [`OpsError::UnknownAccount`]; [`OpsError::Redis`].
pub async fn revoke_sessions(
    config: &GatewayConfig,
    name: &str,
    timeout: Duration,
) -> Result<usize, OpsError> {
    let kv = connect_kv(config, timeout).await?;
    let auth = open_auth(config, kv.clone()).await?;
    let account = find_account(&auth, name).await?;
    end_sessions(&auth, &kv, account.account_id, timeout).await
}

async fn end_sessions(
    auth: &auth::Auth,
    kv: &Kv,
    account_id: Uuid,
    timeout: Duration,
) -> Result<usize, OpsError> {
    let keys = bounded(timeout, "delete sessions", auth.logout_everywhere(account_id)).await?;
    // The same bus message a gateway publishes for "log out everywhere".
    let hub = crate::hub::Hub::new(kv.clone(), Arc::new(crate::metrics::Metrics::default()));
    bounded(timeout, "publish the revocation", hub.revoke(&keys)).await?;
    tracing::info!(%account_id, sessions = keys.len(), "sessions revoked");
    Ok(keys.len())
}

// ---------------------------------------------------------------------------------------------
// Inventory ledger

/// One ledger entry as `ledger` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerLine {
    /// Grows with every entry.
    pub entry_id: u64,
    /// The item.
    pub item_id: String,
    /// The change of the holding.
    pub delta: i64,
    /// Why.
    pub reason: String,
    /// The idempotency key of the request.
    pub request_key: String,
    /// When (milliseconds since the Unix epoch).
    pub at_ms: u64,
}

/// The newest `limit` ledger entries of the player named `name` (username or id), newest first.
///
/// # Errors
/// [`OpsError::UnknownAccount`]; missing shards.
pub async fn ledger(
    config: &GatewayConfig,
    name: &str,
    limit: u32,
    timeout: Duration,
) -> Result<(Uuid, Vec<LedgerLine>), OpsError> {
    let path = required(&config.data_dir, "inventory.db")?;
    let account_id = match Uuid::parse_str(name) {
        Ok(account_id) => account_id,
        Err(_) => {
            let auth = open_auth(config, connect_kv(config, timeout).await?).await?;
            find_account(&auth, name).await?.account_id
        }
    };
    require_current_schema(config, &path, inventory::schema_version()).await?;
    // Only reads: the committer is never run, and the catalogue does not matter.
    let (inventory, _committer) =
        inventory::Inventory::open(path, inventory::Catalogue::default(), clock(), config.inventory_config())
            .await?;
    let entries = inventory.ledger(account_id, limit).await?;
    let lines = entries
        .into_iter()
        .map(|entry| LedgerLine {
            entry_id: entry.entry_id,
            item_id: entry.item_id,
            delta: entry.delta,
            reason: entry.reason,
            request_key: entry.request_key,
            at_ms: entry.at_ms,
        })
        .collect();
    Ok((account_id, lines))
}

// ---------------------------------------------------------------------------------------------
// Match details

/// A match's players, ratings and result, read from `match.db` without running the domain.
///
/// # Errors
/// A missing or damaged `match.db`; an unknown match id.
pub async fn match_details(
    config: &GatewayConfig,
    match_id: Uuid,
) -> Result<matchmaking::MatchDetails, OpsError> {
    let path = required(&config.data_dir, "match.db")?;
    let shard = shard::Shard::open_existing(&path, &config.shard_config())
        .await
        .map_err(|error| OpsError::Shard(path.clone(), error))?;
    Ok(matchmaking::read_details(&shard, match_id).await?)
}

// ---------------------------------------------------------------------------------------------
// Chat shard lifecycle

/// Creates `chat-YEAR.db` (nothing changes if it exists); returns its path.
///
/// # Errors
/// A wrong data directory; the year is archived, has ended, or no message id can name it; its
/// shard exists at an older schema version (this gamectl would migrate it).
pub async fn chat_provision(config: &GatewayConfig, year: i32) -> Result<PathBuf, OpsError> {
    shard_files(&config.data_dir)?;
    // Provisioning a year that exists changes nothing, unless this is a newer gamectl: then it
    // would migrate the shard under the gateways of the older release writing it.
    let path = config.data_dir.join(chat::shard_file_name(year));
    if path.is_file() {
        require_current_schema(config, &path, chat::lifecycle::year_schema_version()).await?;
    }
    let chat_config = config.chat_config();
    let archive_dir = chat_config.archive_dir(&config.data_dir);
    Ok(chat::lifecycle::provision(&config.data_dir, &archive_dir, year, now_ms(), &chat_config.shard).await?)
}

/// Retires a past year into the archive (compacted, verified, read-only); finishes an
/// interrupted retire; reports a year retired before without failing.
///
/// # Errors
/// The current or a future year; a year with no shard; verification failures.
pub async fn chat_retire(
    config: &GatewayConfig,
    year: i32,
) -> Result<chat::lifecycle::RetireReport, OpsError> {
    shard_files(&config.data_dir)?;
    let chat_config = config.chat_config();
    let archive_dir = chat_config.archive_dir(&config.data_dir);
    Ok(chat::lifecycle::retire(&config.data_dir, &archive_dir, year, now_ms(), &chat_config.shard).await?)
}

/// Every chat year, live and archived.
///
/// # Errors
/// A wrong data directory; a shard that cannot be read.
pub async fn chat_list(config: &GatewayConfig) -> Result<Vec<chat::lifecycle::YearShard>, OpsError> {
    shard_files(&config.data_dir)?;
    let archive_dir = config.chat_config().archive_dir(&config.data_dir);
    Ok(chat::lifecycle::list(&config.data_dir, &archive_dir).await?)
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days, for days since 1970-01-01.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_files_name_their_domain() {
        let check = |file: &str, domain: &str| assert_eq!(domain_of(file), domain, "{file}");
        check("auth.db", "auth");
        check("chat.db", "chat");
        check("chat-2026.db", "chat");
        check("inventory.db", "inventory");
        check("match.db", "match");
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(1_924_991_999_999), "2030-12-31T23:59:59Z");
        assert_eq!(utc_timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
