//! Owns opening a shard: the one SQLite file a domain keeps its state in.
//!
//! A [`Shard`] applies the pragmas every shard shares (WAL, `synchronous`, `busy_timeout`,
//! `foreign_keys`), runs the domain's versioned [`Migration`]s, and then hands out one writer
//! connection plus a small pool of read-only connections. It also offers the maintenance
//! operations every shard needs: an online backup, an integrity check and a WAL checkpoint, and
//! for shards with one busy writer a [`WalKeeper`] that runs checkpoints beside it instead of
//! inside its commits.
//!
//! This crate never knows any domain's tables or SQL beyond pragmas and migration bookkeeping
//! (`PRAGMA user_version` is the number of migrations applied). Domains reach SQLite through the
//! re-exported [`rusqlite`], so the workspace never links a second version of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_sqlite::{Hook, HookError, Pool, Runtime};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

pub use rusqlite;
pub use wal::{WalKeeper, WalStats};

mod wal;

/// How hard SQLite syncs on commit (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `NORMAL` (1): with WAL, durable against process crashes; a power loss may drop the last
    /// commits but never corrupts the file.
    #[default]
    Normal,
    /// `FULL` (2): every commit is fsynced, durable against power loss too.
    Full,
}

impl Synchronous {
    /// The pragma value SQLite expects.
    fn pragma_value(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// How a shard is opened.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// `synchronous` pragma, default [`Synchronous::Normal`] (WAL + NORMAL is durable against
    /// process crashes).
    pub synchronous: Synchronous,
    /// `busy_timeout` on every connection, default [`ShardConfig::DEFAULT_BUSY_TIMEOUT`] (5 s);
    /// rounded down to whole milliseconds.
    pub busy_timeout: Duration,
    /// Number of read connections, default [`ShardConfig::DEFAULT_READ_POOL_SIZE`] (4); must be
    /// at least 1.
    pub read_pool_size: usize,
    /// `temp_store=MEMORY`: SQLite's temporary files in memory, default off. For a writer that
    /// wraps each change in a savepoint: a savepoint's sub-journal (the pages it may have to
    /// restore) is such a file, and once it outgrows 64 KiB SQLite writes it out with a system
    /// call per page. Not for shards that sort large results or are compacted (`VACUUM`), whose
    /// temporary data would then take memory.
    pub temp_in_memory: bool,
}

impl ShardConfig {
    /// Default `busy_timeout`: long enough to ride out a checkpoint or a backup step.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default number of read connections.
    pub const DEFAULT_READ_POOL_SIZE: usize = 4;
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::default(),
            busy_timeout: Self::DEFAULT_BUSY_TIMEOUT,
            read_pool_size: Self::DEFAULT_READ_POOL_SIZE,
            temp_in_memory: false,
        }
    }
}

/// One versioned migration: applied in order; the shard's `PRAGMA user_version` = number applied.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1-based position of this migration; a list must hold versions `1..=n` in order.
    pub version: u32,
    /// What the migration does, for logs.
    pub description: &'static str,
    /// The SQL batch, run in one transaction together with the `user_version` bump.
    pub sql: &'static str,
}

/// Everything that can go wrong opening or using a shard.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A statement failed (including errors returned by the caller's closure).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The shard could not be opened or configured (bad config, bad migration list, a pragma
    /// that did not take).
    #[error("shard {path}: {message}")]
    Open {
        /// The shard file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A migration failed; the shard stays at the previous version.
    #[error("migration {version} of {path}: {source}")]
    Migration {
        /// The shard file.
        path: PathBuf,
        /// The migration that failed.
        version: u32,
        /// Why it failed.
        source: rusqlite::Error,
    },
    /// The file was migrated by a newer build: (path, its version, the newest version known here).
    #[error(
        "shard {0} has schema version {1}, newer than this build knows ({2}): it was written by a newer \
         release; run that release (the file was left unchanged)"
    )]
    TooNew(PathBuf, u32, u32),
    /// The read pool could not hand out a connection.
    #[error("read pool: {0}")]
    Pool(String),
    /// The blocking task running the closure panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Task(String),
    /// A filesystem operation (creating directories, moving a backup into place) failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// An open shard: one writer connection and a pool of read-only connections.
///
/// Cloning is cheap (an `Arc` inside); all clones share the same connections.
#[derive(Clone)]
pub struct Shard {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    config: ShardConfig,
    /// The one write connection.
    ///
    /// A `tokio::sync::Mutex` rather than a `std` one or a writer thread: waiting writers queue
    /// in FIFO order as futures, holding no blocking-pool thread while they wait, and the owned
    /// guard moves into `spawn_blocking`, so a caller that stops awaiting cannot release the
    /// connection while its closure still runs. It also cannot be poisoned: a panicking closure
    /// only leaves a possibly open transaction, which the next writer rolls back.
    writer: Arc<Mutex<Connection>>,
    readers: Pool,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("path", &self.inner.path)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Pages copied per backup step: small enough that each step is quick.
const BACKUP_PAGES_PER_STEP: std::ffi::c_int = 1024;
/// Pause before retrying a backup step that found the destination busy or locked.
const BACKUP_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Suffix of the file a backup is written to before it is renamed into place.
const BACKUP_PARTIAL_SUFFIX: &str = ".partial";

impl Shard {
    /// Opens (creating if missing, parent dirs too) the file at `path`: `journal_mode=WAL`,
    /// `synchronous` per config, `busy_timeout`, `foreign_keys=ON`, then runs pending
    /// `migrations`, each in its own transaction together with its `user_version` bump.
    /// Then builds the read pool (connections opened with the same pragmas plus `query_only=ON`).
    ///
    /// # Errors
    /// [`ShardError::Open`] when the config is invalid, `migrations` are not versions `1..=n`
    /// in order, or WAL cannot be enabled; [`ShardError::TooNew`] when the file's
    /// `user_version` is above `migrations.len()`; [`ShardError::Migration`] when a migration
    /// fails (earlier ones stay applied); [`ShardError::Io`] when the directory cannot be created.
    pub async fn open(
        path: impl Into<PathBuf>,
        config: &ShardConfig,
        migrations: &'static [Migration],
    ) -> Result<Shard, ShardError> {
        let path = path.into();
        let config = config.clone();
        if config.read_pool_size == 0 {
            return Err(ShardError::Open { path, message: "read_pool_size must be at least 1".to_owned() });
        }
        check_migration_list(&path, migrations)?;

        let writer = {
            let path = path.clone();
            let config = config.clone();
            run_blocking(move || open_writer(&path, &config, migrations)).await??
        };

        let readers = build_read_pool(&path, &config)?;
        // Make one reader now, so a reader that cannot be configured fails `open`, not a `read`.
        drop(
            readers
                .get()
                .await
                .map_err(|e| ShardError::Open { path: path.clone(), message: format!("read pool: {e}") })?,
        );
        info!(path = %path.display(), read_pool_size = config.read_pool_size, "shard opened");
        Ok(Shard { inner: Arc::new(Inner { path, config, writer: Arc::new(Mutex::new(writer)), readers }) })
    }

    /// Opens an existing shard for maintenance (ops tooling): like [`Shard::open`], but never
    /// creates the file and runs no migrations, so pointing a tool at a wrong directory cannot
    /// leave empty shards behind, and a file of any schema version can be inspected.
    ///
    /// # Errors
    /// [`ShardError::Open`] when `path` is not a file; [`ShardError::Sqlite`] when it is not a
    /// SQLite database (or is too damaged to read its schema).
    pub async fn open_existing(path: impl Into<PathBuf>, config: &ShardConfig) -> Result<Shard, ShardError> {
        let path = path.into();
        let config = config.clone();
        if config.read_pool_size == 0 {
            return Err(ShardError::Open { path, message: "read_pool_size must be at least 1".to_owned() });
        }
        if !path.is_file() {
            return Err(ShardError::Open { path, message: "no such shard file".to_owned() });
        }
        let writer = {
            let path = path.clone();
            let config = config.clone();
            run_blocking(move || -> Result<Connection, ShardError> {
                let conn = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                apply_connection_pragmas(&conn, &config)?;
                // Reading the schema fails at once on a file that is not a database.
                conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
                Ok(conn)
            })
            .await??
        };
        let readers = build_read_pool(&path, &config)?;
        Ok(Shard { inner: Arc::new(Inner { path, config, writer: Arc::new(Mutex::new(writer)), readers }) })
    }

    /// The single writer: runs `f` on the shard's one write connection on a blocking thread.
    ///
    /// Writers queue (first come, first served); two never run at once. If an earlier writer
    /// left a transaction open (by panicking, or by a raw `BEGIN` without `COMMIT`), it is
    /// rolled back before `f` runs.
    ///
    /// # Errors
    /// [`ShardError::Sqlite`] with the closure's error; [`ShardError::Task`] if it panicked.
    pub async fn write<T, F>(&self, f: F) -> Result<T, ShardError>
    where
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let mut writer = Arc::clone(&self.inner.writer).lock_owned().await;
        let result = run_blocking(move || {
            let conn: &mut Connection = &mut writer;
            roll_back_leftover_transaction(conn)?;
            f(conn)
        })
        .await?;
        Ok(result?)
    }

    /// Runs `f` on a pooled read connection (`query_only=ON`, so any write fails).
    ///
    /// # Errors
    /// [`ShardError::Sqlite`] with the closure's error; [`ShardError::Pool`] when no connection
    /// could be made; [`ShardError::Task`] if the closure panicked.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ShardError>
    where
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.inner.readers.get().await.map_err(|e| ShardError::Pool(e.to_string()))?;
        let result = conn.interact(move |conn| f(conn)).await.map_err(|e| ShardError::Task(e.to_string()))?;
        Ok(result?)
    }

    /// Online backup of the live shard to `dest` (a new file; parent dirs created).
    ///
    /// Copies from a dedicated connection that holds one read transaction for the whole copy, so
    /// the result is a consistent snapshot of the moment the backup started, and writers (which
    /// WAL lets proceed beside a reader) are never blocked or cause the copy to restart. Pages are
    /// copied in steps of 1024. The copy is written next to `dest` and renamed into place once
    /// complete, so `dest` never holds a partial database.
    ///
    /// # Errors
    /// [`ShardError::Io`] if `dest` already exists or the directory cannot be created;
    /// [`ShardError::Sqlite`] if the copy fails; [`ShardError::Task`] if the task panicked.
    pub async fn backup_to(&self, dest: &Path) -> Result<(), ShardError> {
        let source = self.inner.path.clone();
        let config = self.inner.config.clone();
        let dest = dest.to_path_buf();
        run_blocking(move || backup(&source, &config, &dest)).await?
    }

    /// `PRAGMA integrity_check`: `Ok(vec![])` when "ok", else the reported problems.
    ///
    /// # Errors
    /// As [`Shard::read`]; a file too damaged to read may fail with [`ShardError::Sqlite`].
    pub async fn integrity_check(&self) -> Result<Vec<String>, ShardError> {
        let problems = self.read(integrity_problems).await?;
        if !problems.is_empty() {
            warn!(path = %self.inner.path.display(), problems = problems.len(), "integrity check failed");
        }
        Ok(problems)
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)` on the writer.
    ///
    /// A checkpoint that readers kept from finishing is not an error; it is logged and the rest
    /// is copied by a later checkpoint.
    ///
    /// # Errors
    /// As [`Shard::write`].
    pub async fn checkpoint(&self) -> Result<(), ShardError> {
        let (busy, wal_frames, checkpointed) = self
            .write(|conn| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                })
            })
            .await?;
        if busy == 0 {
            debug!(path = %self.inner.path.display(), "checkpoint complete");
        } else {
            warn!(path = %self.inner.path.display(), wal_frames, checkpointed, "checkpoint blocked by readers");
        }
        Ok(())
    }

    /// Current `user_version`: the number of migrations applied.
    ///
    /// # Errors
    /// As [`Shard::read`].
    pub async fn schema_version(&self) -> Result<u32, ShardError> {
        self.read(user_version).await
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// Runs `f` on tokio's blocking pool, mapping a panic or cancellation to [`ShardError::Task`].
async fn run_blocking<T, F>(f: F) -> Result<T, ShardError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| ShardError::Task(e.to_string()))
}

fn check_migration_list(path: &Path, migrations: &[Migration]) -> Result<(), ShardError> {
    for (index, migration) in migrations.iter().enumerate() {
        let expected = u32::try_from(index + 1).ok();
        if Some(migration.version) != expected {
            return Err(ShardError::Open {
                path: path.to_path_buf(),
                message: format!(
                    "migration at position {} has version {}; versions must be 1..=n in order",
                    index + 1,
                    migration.version
                ),
            });
        }
    }
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Pragmas every connection gets; `busy_timeout` first so the others wait out locks.
fn apply_connection_pragmas(conn: &Connection, config: &ShardConfig) -> rusqlite::Result<()> {
    let busy_timeout_ms = i64::try_from(config.busy_timeout.as_millis()).unwrap_or(i64::MAX);
    conn.pragma_update(None, "busy_timeout", busy_timeout_ms)?;
    conn.pragma_update(None, "synchronous", config.synchronous.pragma_value())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if config.temp_in_memory {
        conn.pragma_update(None, "temp_store", "MEMORY")?;
    }
    Ok(())
}

fn open_writer(
    path: &Path,
    config: &ShardConfig,
    migrations: &[Migration],
) -> Result<Connection, ShardError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut conn = Connection::open(path)?;
    apply_connection_pragmas(&conn, config)?;
    // Before anything writes: a file a newer build migrated is left exactly as it is, not even
    // switched to WAL.
    refuse_newer(&conn, path, migrations)?;
    let journal_mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(ShardError::Open {
            path: path.to_path_buf(),
            message: format!("journal_mode is {journal_mode}, expected wal"),
        });
    }
    migrate(&mut conn, path, migrations)?;
    Ok(conn)
}

/// [`ShardError::TooNew`] when the file's schema is newer than `migrations` know.
fn refuse_newer(conn: &Connection, path: &Path, migrations: &[Migration]) -> Result<u32, ShardError> {
    let known = latest_version(migrations);
    let current = user_version(conn)?;
    if current > known {
        return Err(ShardError::TooNew(path.to_path_buf(), current, known));
    }
    Ok(current)
}

fn migrate(conn: &mut Connection, path: &Path, migrations: &[Migration]) -> Result<(), ShardError> {
    // Again: another process may have migrated the file since the first look.
    let current = refuse_newer(conn, path, migrations)?;
    for migration in migrations.iter().filter(|m| m.version > current) {
        let fail =
            |source| ShardError::Migration { path: path.to_path_buf(), version: migration.version, source };
        // IMMEDIATE takes the write lock before re-reading the version: another process opening
        // the same file at the same moment may have applied this migration meanwhile.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        if user_version(&tx).map_err(fail)? >= migration.version {
            continue;
        }
        tx.execute_batch(migration.sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", migration.version).map_err(fail)?;
        tx.commit().map_err(fail)?;
        info!(
            path = %path.display(),
            version = migration.version,
            description = migration.description,
            "migration applied"
        );
    }
    Ok(())
}

/// `path` as an SQLite URI with `query` (such as `mode=rw` or `immutable=1`). In a URI, `?` and
/// `#` would end the path and `%` begin an escape, so they are escaped.
pub fn file_uri(path: &Path, query: &str) -> String {
    let path = path.display().to_string().replace('%', "%25").replace('?', "%3f").replace('#', "%23");
    format!("file:{path}?{query}")
}

/// The schema version `migrations` bring a shard to.
pub fn latest_version(migrations: &[Migration]) -> u32 {
    u32::try_from(migrations.len()).unwrap_or(u32::MAX)
}

/// What `PRAGMA integrity_check` reports on the file at `path`, empty when sound, for a file
/// nothing writes (an archived year, a backup's copy): opened read-only and `immutable`, so the
/// check takes no lock and leaves no log file beside it. Blocking.
///
/// # Errors
/// A file that cannot be opened, or too damaged to read.
pub fn file_integrity_problems(path: &Path) -> Result<Vec<String>, ShardError> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(file_uri(path, "immutable=1"), flags)?;
    Ok(integrity_problems(&conn)?)
}

/// What `PRAGMA integrity_check` reports on `conn`: empty when sound.
///
/// # Errors
/// A file too damaged to read.
fn integrity_problems(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut check = conn.prepare("PRAGMA integrity_check")?;
    let report = check.query_map([], |row| row.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(if report.len() == 1 && report[0] == "ok" { Vec::new() } else { report })
}

fn build_read_pool(path: &Path, config: &ShardConfig) -> Result<Pool, ShardError> {
    let hook_config = config.clone();
    let pool_error = |message: String| ShardError::Open {
        path: path.to_path_buf(),
        message: format!("read pool: {message}"),
    };
    // deadpool-sqlite opens with SQLite's default flags, which create a missing file: the URI's
    // `mode=rw` forbids that, so a reader opened after the file was removed (a retired year's
    // shard) fails instead of leaving an empty shard in its place.
    deadpool_sqlite::Config::new(file_uri(path, "mode=rw"))
        .builder(Runtime::Tokio1)
        .map_err(|e| pool_error(e.to_string()))?
        .max_size(config.read_pool_size)
        .post_create(Hook::async_fn(move |conn, _metrics| {
            let config = hook_config.clone();
            Box::pin(async move {
                conn.interact(move |conn| {
                    apply_connection_pragmas(conn, &config)?;
                    conn.pragma_update(None, "query_only", "ON")
                })
                .await
                .map_err(|e| HookError::message(e.to_string()))?
                .map_err(HookError::Backend)
            })
        }))
        .build()
        .map_err(|e| pool_error(e.to_string()))
}

/// A transaction still open on the writer belongs to a writer that panicked or forgot to
/// commit; its changes must not leak into the next writer's commit.
fn roll_back_leftover_transaction(conn: &Connection) -> rusqlite::Result<()> {
    if !conn.is_autocommit() {
        warn!("rolling back a transaction an earlier writer left open");
        conn.execute_batch("ROLLBACK")?;
    }
    Ok(())
}

fn backup(source: &Path, config: &ShardConfig, dest: &Path) -> Result<(), ShardError> {
    if dest.try_exists()? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("backup destination {} already exists", dest.display()),
        )
        .into());
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(BACKUP_PARTIAL_SUFFIX);
    let partial = PathBuf::from(partial);
    // A leftover from an interrupted backup is garbage by construction.
    if partial.try_exists()? {
        std::fs::remove_file(&partial)?;
    }

    let result = copy_database(source, config, &partial);
    match result {
        Ok(()) => {
            std::fs::rename(&partial, dest)?;
            info!(source = %source.display(), dest = %dest.display(), "backup complete");
            Ok(())
        }
        Err(error) => {
            if let Err(remove_error) = std::fs::remove_file(&partial) {
                warn!(path = %partial.display(), %remove_error, "could not remove partial backup");
            }
            Err(error)
        }
    }
}

fn copy_database(source: &Path, config: &ShardConfig, dest: &Path) -> Result<(), ShardError> {
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    apply_connection_pragmas(&src, config)?;
    // One read transaction across every step pins a WAL snapshot: the copy is consistent and
    // commits by the writer neither block it nor make SQLite restart it.
    src.execute_batch("BEGIN DEFERRED")?;
    src.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;

    let mut dst = Connection::open(dest)?;
    {
        let backup = Backup::new(&src, &mut dst)?;
        loop {
            match backup.step(BACKUP_PAGES_PER_STEP)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => std::thread::sleep(BACKUP_RETRY_PAUSE),
                // StepResult is non-exhaustive; treat anything new as "try again".
                _ => std::thread::sleep(BACKUP_RETRY_PAUSE),
            }
        }
    }
    src.execute_batch("COMMIT")?;
    dst.close().map_err(|(_, e)| e)?;
    Ok(())
}
