//! The yearly message shards of one data directory: which exist, which are open, which were
//! retired into the archive, and opening (provisioning) a year on demand.
//!
//! The filesystem is the truth: a year is *live* while `DATA_DIR/chat-YYYY.db` exists and
//! *archived* when only `ARCHIVE_DIR/chat-YYYY.db` does. Reads look at the file before using an
//! open shard, so a year retired by an ops command in another process stops being served here
//! at once. Writes need not look: a shard being retired carries a mark that its every write
//! transaction reads ([`crate::messages`]), so an open shard of a retired year refuses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use shard::{Shard, ShardConfig};

use crate::{ChatError, messages};

/// The file name of a year's shard, live or archived.
pub fn shard_file_name(year: i32) -> String {
    format!("chat-{year}.db")
}

/// The year of a shard file name (`chat-2026.db` → 2026).
pub(crate) fn year_of_file_name(name: &str) -> Option<i32> {
    let digits = name.strip_prefix("chat-")?.strip_suffix(".db")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Every year with a shard file in `dir`, ascending.
pub(crate) fn years_in(dir: &Path) -> Result<Vec<i32>, ChatError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut years = Vec::new();
    for entry in entries {
        if let Some(year) = entry?.file_name().to_str().and_then(year_of_file_name) {
            years.push(year);
        }
    }
    years.sort_unstable();
    Ok(years)
}

/// What a read finds for one year.
pub(crate) enum YearState {
    /// The live shard.
    Live(Shard),
    /// Retired into the archive.
    Archived,
    /// No shard was ever made for this year.
    Missing,
}

/// The yearly shards of one data directory.
pub(crate) struct Years {
    data_dir: PathBuf,
    archive_dir: PathBuf,
    config: ShardConfig,
    open: Mutex<BTreeMap<i32, Shard>>,
    /// Serialises opening, so two callers never open one file twice.
    opening: tokio::sync::Mutex<()>,
    /// The oldest year with a shard, live or archived: where history stops looking.
    oldest: AtomicI32,
}

impl Years {
    /// Finds the existing years and provisions `current_year` and the one after it.
    pub(crate) async fn open(
        data_dir: PathBuf,
        archive_dir: PathBuf,
        config: ShardConfig,
        current_year: i32,
    ) -> Result<Years, ChatError> {
        let oldest = years_in(&data_dir)?
            .into_iter()
            .chain(years_in(&archive_dir)?)
            .min()
            .map_or(current_year, |year| year.min(current_year));
        let years = Years {
            data_dir,
            archive_dir,
            config,
            open: Mutex::default(),
            opening: tokio::sync::Mutex::default(),
            oldest: AtomicI32::new(oldest),
        };
        years.writable(current_year).await?;
        years.writable(current_year + 1).await?;
        Ok(years)
    }

    pub(crate) fn live_path(&self, year: i32) -> PathBuf {
        self.data_dir.join(shard_file_name(year))
    }

    fn archive_path(&self, year: i32) -> PathBuf {
        self.archive_dir.join(shard_file_name(year))
    }

    fn cached(&self, year: i32) -> Option<Shard> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&year).cloned()
    }

    /// The oldest year with a shard.
    pub(crate) fn oldest(&self) -> i32 {
        self.oldest.load(Ordering::Relaxed)
    }

    /// Every open shard.
    pub(crate) fn open_shards(&self) -> Vec<Shard> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }

    /// The year's shard, created and migrated if it does not exist yet (provisioning).
    ///
    /// # Errors
    /// [`ChatError::Archived`] when the year was retired; shard errors.
    pub(crate) async fn writable(&self, year: i32) -> Result<Shard, ChatError> {
        if let Some(shard) = self.cached(year) {
            return Ok(shard);
        }
        let _opening = self.opening.lock().await;
        if let Some(shard) = self.cached(year) {
            return Ok(shard);
        }
        let path = self.live_path(year);
        if !path.try_exists()? && self.archive_path(year).try_exists()? {
            return Err(ChatError::Archived(year));
        }
        let shard = Shard::open(path, &self.config, messages::MIGRATIONS).await?;
        // A retire may have removed the live file between the look above and the open, which
        // then made a new, empty one: never write beside an archive.
        if self.archive_path(year).try_exists()? {
            return Err(ChatError::Archived(year));
        }
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(year, shard.clone());
        self.oldest.fetch_min(year, Ordering::Relaxed);
        tracing::info!(year, "chat shard provisioned");
        Ok(shard)
    }

    /// Closes this process's handle on `year`'s shard (its file is being retired); the next use
    /// looks at the filesystem again.
    pub(crate) fn forget(&self, year: i32) {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&year);
    }

    /// What a read of `year` finds now.
    pub(crate) async fn for_read(&self, year: i32) -> Result<YearState, ChatError> {
        if self.live_path(year).try_exists()? {
            return match self.writable(year).await {
                Ok(shard) => Ok(YearState::Live(shard)),
                Err(ChatError::Archived(_)) => Ok(YearState::Archived),
                Err(error) => Err(error),
            };
        }
        // Retired (or removed) behind our back: stop serving the stale open shard.
        self.forget(year);
        if self.archive_path(year).try_exists()? { Ok(YearState::Archived) } else { Ok(YearState::Missing) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shard_files_name_a_year() {
        assert_eq!(year_of_file_name("chat-2026.db"), Some(2026));
        assert_eq!(year_of_file_name("chat-2026.db-wal"), None);
        assert_eq!(year_of_file_name("chat.db"), None);
        assert_eq!(year_of_file_name("chat-.db"), None);
        assert_eq!(year_of_file_name("chat-20x6.db"), None);
    }
}
