//! Shard lifecycle operations for ops tooling: provision a year, retire a year into the archive,
//! list every year's shard. Plain functions over a data directory, so a CLI (or a gateway
//! subcommand) only parses arguments and prints the result; they are safe beside running
//! gateways on the same directory: a gateway notices a retired year at its next read of it, and
//! its writes to a year being retired are refused by the mark the shard carries from the first
//! step of [`retire`] on (see `messages.rs`).
//!
//! Archived years are not served: history that reaches one ends with the `archived` marker.

use std::path::{Path, PathBuf};

use shard::rusqlite::{self, OpenFlags};
use shard::{Shard, ShardConfig};

use crate::years::{shard_file_name, years_in};
use crate::{ChatError, messages, year_of_ms};

/// Where a year's shard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    /// In the data directory, read and written by gateways.
    Live,
    /// Retired: a compacted, read-only copy in the archive directory.
    Archived,
}

/// One year's shard, as [`list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YearShard {
    /// The year.
    pub year: i32,
    /// Live or archived.
    pub state: ShardState,
    /// The file.
    pub path: PathBuf,
    /// Bytes on disk (with the write-ahead log, for a live shard).
    pub bytes: u64,
    /// Messages stored, soft-deleted ones included.
    pub messages: u64,
}

/// How [`retire`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireOutcome {
    /// The year was live and is now archived.
    Retired,
    /// An earlier, interrupted retire of the year was finished.
    Resumed,
    /// The year was already archived; nothing was left to do (leftover log files aside).
    AlreadyRetired,
}

/// What [`retire`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetireReport {
    /// Retired now, finished, or retired before.
    pub outcome: RetireOutcome,
    /// The archived copy.
    pub archive_path: PathBuf,
    /// Messages in it (every message of the live shard, or the retire would have failed).
    pub messages: u64,
    /// Size of the live shard with its log before (zero when it was already gone).
    pub bytes_before: u64,
    /// Size of the archive.
    pub bytes_after: u64,
}

/// The schema version this build migrates a year's shard to.
pub fn year_schema_version() -> u32 {
    shard::latest_version(messages::MIGRATIONS)
}

/// The last millisecond a message id can be stamped with: its timestamp has 48 bits.
const LAST_ID_MS: u64 = (1 << 48) - 1;

/// Creates and migrates `DATA_DIR/chat-YEAR.db` (nothing changes if it exists and is current).
/// `now_ms` decides the current year: a year before it is refused, as is one no message id can
/// be stamped in.
///
/// # Errors
/// [`ChatError::Refused`] when the year is archived, has ended, or lies past what a message id
/// can name; shard errors.
pub async fn provision(
    data_dir: &Path,
    archive_dir: &Path,
    year: i32,
    now_ms: u64,
    config: &ShardConfig,
) -> Result<PathBuf, ChatError> {
    // A shard made for a year nothing can be written in is only clutter that every listing,
    // backup and integrity check carries on (a mistyped year, a negative one whose file name
    // no listing even reads back as a year).
    let current = year_of_ms(now_ms);
    if year < current {
        return Err(ChatError::Refused(format!(
            "year {year} has ended (the current year is {current}): nothing is provisioned for it; a \
             gateway makes a past year's shard itself if a late message needs one"
        )));
    }
    let last = year_of_ms(LAST_ID_MS);
    if year > last {
        return Err(ChatError::Refused(format!(
            "year {year} is past {last}, the last year a message id can name; check the year"
        )));
    }
    let path = data_dir.join(shard_file_name(year));
    if archive_dir.join(shard_file_name(year)).try_exists()? {
        return Err(ChatError::Refused(format!("year {year} is archived")));
    }
    let shard = Shard::open(&path, config, messages::MIGRATIONS).await?;
    drop(shard);
    Ok(path)
}

/// Retires a past year: marks its shard for retirement (after which no gateway process commits
/// another write to it), checkpoints it, compacts it with `VACUUM INTO` into the archive
/// directory, verifies the copy (integrity check, and every message of the live shard in it
/// unchanged), makes it read-only and removes the live file and its companions. `now_ms` decides
/// the current year, which (like any later one) is refused.
///
/// Every step can be repeated, so an interrupted retire is finished by running it again: a
/// marked live shard is copied again, or checked against an archive already in place, before it
/// is removed. Once the year is archived, running it again only removes leftover log files and
/// reports [`RetireOutcome::AlreadyRetired`].
///
/// # Errors
/// [`ChatError::Refused`] for the current or a future year, a year with no shard at all, or
/// while another retire runs on the data directory;
/// [`ChatError::Verification`] when the copy (or an archive already in place) does not hold
/// every message of the live shard (a new copy is removed; the live shard is kept, marked, so it
/// takes no writes until an operator decides); shard and file errors.
pub async fn retire(
    data_dir: &Path,
    archive_dir: &Path,
    year: i32,
    now_ms: u64,
    config: &ShardConfig,
) -> Result<RetireReport, ChatError> {
    let current = year_of_ms(now_ms);
    if year >= current {
        return Err(ChatError::Refused(format!(
            "year {year} is not in the past (the current year is {current})"
        )));
    }
    let _retiring = lock_retire(data_dir)?;
    let live = data_dir.join(shard_file_name(year));
    let archive = archive_dir.join(shard_file_name(year));
    if !live.try_exists()? {
        if !archive.try_exists()? {
            return Err(ChatError::Refused(format!("year {year} has no shard, live or archived")));
        }
        // A retire stopped between removing the database and its log files.
        remove_live_files(&live)?;
        let checked = archive.clone();
        let messages = blocking(move || {
            let conn = open_read_only(&checked, true)?;
            Ok(messages::count(&conn).map_err(shard::ShardError::from)?)
        })
        .await?;
        let bytes_after = std::fs::metadata(&archive)?.len();
        tracing::info!(year, archive = %archive.display(), "chat year already retired");
        return Ok(RetireReport {
            outcome: RetireOutcome::AlreadyRetired,
            archive_path: archive,
            messages,
            bytes_before: 0,
            bytes_after,
        });
    }
    std::fs::create_dir_all(archive_dir)?;
    let bytes_before = live_bytes(&live);

    let shard = Shard::open(&live, config, messages::MIGRATIONS).await?;
    // First, so that the copy below holds every write any process ever acknowledged here: a
    // write transaction that begins after this commit finds the mark and changes nothing.
    shard.write(move |conn| messages::mark_retiring(conn, now_ms)).await?;
    shard.checkpoint().await?;

    let resumed = archive.try_exists()?;
    let messages = if resumed {
        let (checked, live) = (archive.clone(), live.clone());
        blocking(move || verify(&checked, &live)).await?
    } else {
        let partial = archive_dir.join(format!("{}.partial", shard_file_name(year)));
        if partial.try_exists()? {
            std::fs::remove_file(&partial)?;
        }
        let target = partial.to_string_lossy().into_owned();
        shard.write(move |conn| conn.execute("VACUUM INTO ?1", [&target]).map(drop)).await?;
        let (checked, live) = (partial.clone(), live.clone());
        match blocking(move || verify(&checked, &live)).await {
            Ok(messages) => {
                std::fs::rename(&partial, &archive)?;
                messages
            }
            Err(error) => {
                let _ = std::fs::remove_file(&partial);
                return Err(error);
            }
        }
    };
    let mut permissions = std::fs::metadata(&archive)?.permissions();
    if !permissions.readonly() {
        permissions.set_readonly(true);
        std::fs::set_permissions(&archive, permissions)?;
    }

    drop(shard);
    remove_live_files(&live)?;
    let bytes_after = std::fs::metadata(&archive)?.len();
    let outcome = if resumed { RetireOutcome::Resumed } else { RetireOutcome::Retired };
    tracing::info!(year, ?outcome, archive = %archive.display(), messages, bytes_before, bytes_after, "chat year retired");
    Ok(RetireReport { outcome, archive_path: archive, messages, bytes_before, bytes_after })
}

/// The lock file [`retire`] holds exclusively in the data directory while it runs.
pub const RETIRE_LOCK_FILE: &str = "chat-retire.lock";

/// Takes `DATA_DIR/chat-retire.lock` exclusively for as long as the file is open. Two retires at
/// once would each remove the other's partial copy and the live files under it: one fails with
/// a bare SQLite I/O error, and which one is luck.
fn lock_retire(data_dir: &Path) -> Result<std::fs::File, ChatError> {
    let path = data_dir.join(RETIRE_LOCK_FILE);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(
        |error| {
            ChatError::Refused(format!(
                "cannot open {}: {error}; chat retire writes the data directory: run it as the user the \
                 gateways run as",
                path.display()
            ))
        },
    )?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ChatError::Refused(format!(
            "another chat retire is running on {} (it holds {}); wait for it, then run this again \
             if it failed: a retire finishes an interrupted one",
            data_dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => Err(error.into()),
    }
}

/// Removes a retired year's live database, then its log and shared-memory files. The database
/// goes first: once it is gone the year is archived for everyone, and leftover companions are
/// removed by the next run.
fn remove_live_files(live: &Path) -> Result<(), ChatError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = live.to_path_buf().into_os_string();
        path.push(suffix);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Runs file and SQLite work that may take a while off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ChatError> + Send + 'static,
) -> Result<T, ChatError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ChatError::Io(std::io::Error::other(e.to_string())))?
}

/// Every year's shard, live and archived, oldest first.
///
/// # Errors
/// A directory or a shard cannot be read.
pub async fn list(data_dir: &Path, archive_dir: &Path) -> Result<Vec<YearShard>, ChatError> {
    let data_dir = data_dir.to_path_buf();
    let archive_dir = archive_dir.to_path_buf();
    blocking(move || list_blocking(&data_dir, &archive_dir)).await
}

fn list_blocking(data_dir: &Path, archive_dir: &Path) -> Result<Vec<YearShard>, ChatError> {
    let mut shards = Vec::new();
    for (dir, state) in [(data_dir, ShardState::Live), (archive_dir, ShardState::Archived)] {
        for year in years_in(dir)? {
            let path = dir.join(shard_file_name(year));
            let conn = open_read_only(&path, state == ShardState::Archived)?;
            let messages = messages::count(&conn).map_err(shard::ShardError::from)?;
            shards.push(YearShard { year, state, bytes: live_bytes(&path), path, messages });
        }
    }
    shards.sort_by_key(|shard| (shard.year, shard.state == ShardState::Archived));
    Ok(shards)
}

/// `PRAGMA integrity_check` of every archived year, oldest first: each archive's file and what
/// the check reported (empty when sound). An archive that cannot even be opened reports that.
///
/// # Errors
/// The archive directory cannot be read.
pub async fn check_archives(archive_dir: &Path) -> Result<Vec<(PathBuf, Vec<String>)>, ChatError> {
    let archive_dir = archive_dir.to_path_buf();
    blocking(move || {
        let mut reports = Vec::new();
        for year in years_in(&archive_dir)? {
            let path = archive_dir.join(shard_file_name(year));
            let problems = match shard::file_integrity_problems(&path) {
                Ok(problems) => problems,
                Err(error) => vec![error.to_string()],
            };
            reports.push((path, problems));
        }
        Ok(reports)
    })
    .await
}

/// A read-only connection for inspection. Archives are opened `immutable` (no lock, no log):
/// nothing writes them.
fn open_read_only(path: &Path, immutable: bool) -> Result<rusqlite::Connection, ChatError> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = if immutable {
        rusqlite::Connection::open_with_flags(messages::immutable_uri(path), flags)
    } else {
        rusqlite::Connection::open_with_flags(path, flags)
    };
    conn.map_err(|e| ChatError::Shard(e.into()))
}

/// The copy must be sound and hold every message of the live shard as it is; returns the
/// number of messages in the copy.
fn verify(copy: &Path, live: &Path) -> Result<u64, ChatError> {
    let conn = open_read_only(copy, true)?;
    let report: String =
        conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).map_err(shard::ShardError::from)?;
    if report != "ok" {
        return Err(ChatError::Verification(format!("integrity check: {report}")));
    }
    let copied = messages::count(&conn).map_err(shard::ShardError::from)?;
    let missing =
        messages::missing_from(&open_read_only(live, false)?, copy).map_err(shard::ShardError::from)?;
    if missing != 0 {
        return Err(ChatError::Verification(format!(
            "{missing} messages of {} are missing from {} or differ there",
            live.display(),
            copy.display()
        )));
    }
    Ok(copied)
}

/// Size of a shard file plus its write-ahead log, if any.
fn live_bytes(path: &Path) -> u64 {
    let mut wal = path.to_path_buf().into_os_string();
    wal.push("-wal");
    [path.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}
