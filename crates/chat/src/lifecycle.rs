//! Shard lifecycle operations for ops tooling: provision a year, retire a year into the archive,
//! list every year's shard. Plain functions over a data directory, so a CLI (or a gateway
//! subcommand) only parses arguments and prints the result; they are safe beside running
//! gateways on the same directory (a gateway notices a retired year at its next read of it).
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

/// What [`retire`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetireReport {
    /// The archived copy.
    pub archive_path: PathBuf,
    /// Messages in it (equal to the live shard's count, or the retire would have failed).
    pub messages: u64,
    /// Size of the live shard with its log before, and of the compacted copy.
    pub bytes_before: u64,
    /// Size of the archive.
    pub bytes_after: u64,
}

/// Creates and migrates `DATA_DIR/chat-YEAR.db` (nothing changes if it exists and is current).
///
/// # Errors
/// [`ChatError::Refused`] when the year is archived; shard errors.
pub async fn provision(
    data_dir: &Path,
    archive_dir: &Path,
    year: i32,
    config: &ShardConfig,
) -> Result<PathBuf, ChatError> {
    let path = data_dir.join(shard_file_name(year));
    if archive_dir.join(shard_file_name(year)).try_exists()? {
        return Err(ChatError::Refused(format!("year {year} is archived")));
    }
    let shard = Shard::open(&path, config, messages::MIGRATIONS).await?;
    drop(shard);
    Ok(path)
}

/// Retires a past year: checkpoints it, compacts it with `VACUUM INTO` into the archive
/// directory, verifies the copy (integrity check, same message count), makes it read-only and
/// removes the live file and its companions. `now_ms` decides the current year, which (like any
/// later one) is refused.
///
/// # Errors
/// [`ChatError::Refused`] for the current or a future year, a year without a live shard, or an
/// archive that already exists; [`ChatError::Verification`] when the copy does not match (the
/// copy is removed and the live shard kept); shard and file errors.
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
    let live = data_dir.join(shard_file_name(year));
    let archive = archive_dir.join(shard_file_name(year));
    if !live.try_exists()? {
        return Err(ChatError::Refused(format!("year {year} has no live shard")));
    }
    if archive.try_exists()? {
        return Err(ChatError::Refused(format!("{} already exists", archive.display())));
    }
    std::fs::create_dir_all(archive_dir)?;
    let bytes_before = live_bytes(&live);
    let partial = archive_dir.join(format!("{}.partial", shard_file_name(year)));
    if partial.try_exists()? {
        std::fs::remove_file(&partial)?;
    }

    let shard = Shard::open(&live, config, messages::MIGRATIONS).await?;
    shard.checkpoint().await?;
    let target = partial.to_string_lossy().into_owned();
    // One statement, so the count and the copy see the same snapshot only if nothing writes in
    // between; a past year takes no writes, and a mismatch fails the retire rather than lose rows.
    let live_count = shard
        .write(move |conn| {
            let count = messages::count(conn)?;
            conn.execute("VACUUM INTO ?1", [&target])?;
            Ok(count)
        })
        .await?;

    if let Err(error) = verify(&partial, live_count) {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    std::fs::rename(&partial, &archive)?;
    let mut permissions = std::fs::metadata(&archive)?.permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&archive, permissions)?;

    drop(shard);
    for suffix in ["", "-wal", "-shm"] {
        let mut path = live.clone().into_os_string();
        path.push(suffix);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error.into()),
        }
    }
    let bytes_after = std::fs::metadata(&archive)?.len();
    tracing::info!(year, archive = %archive.display(), messages = live_count, bytes_before, bytes_after, "chat year retired");
    Ok(RetireReport { archive_path: archive, messages: live_count, bytes_before, bytes_after })
}

/// Every year's shard, live and archived, oldest first.
///
/// # Errors
/// A directory or a shard cannot be read.
pub async fn list(data_dir: &Path, archive_dir: &Path) -> Result<Vec<YearShard>, ChatError> {
    let data_dir = data_dir.to_path_buf();
    let archive_dir = archive_dir.to_path_buf();
    tokio::task::spawn_blocking(move || list_blocking(&data_dir, &archive_dir))
        .await
        .map_err(|e| ChatError::Io(std::io::Error::other(e.to_string())))?
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

/// A read-only connection for inspection. Archives are opened `immutable` (no lock, no log):
/// nothing writes them.
fn open_read_only(path: &Path, immutable: bool) -> Result<rusqlite::Connection, ChatError> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = if immutable {
        rusqlite::Connection::open_with_flags(format!("file:{}?immutable=1", path.display()), flags)
    } else {
        rusqlite::Connection::open_with_flags(path, flags)
    };
    conn.map_err(|e| ChatError::Shard(e.into()))
}

/// The copy must be sound and hold every message.
fn verify(copy: &Path, expected: u64) -> Result<(), ChatError> {
    let conn = open_read_only(copy, true)?;
    let report: String =
        conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).map_err(shard::ShardError::from)?;
    if report != "ok" {
        return Err(ChatError::Verification(format!("integrity check: {report}")));
    }
    let copied = messages::count(&conn).map_err(shard::ShardError::from)?;
    if copied != expected {
        return Err(ChatError::Verification(format!("{copied} messages copied of {expected}")));
    }
    Ok(())
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
