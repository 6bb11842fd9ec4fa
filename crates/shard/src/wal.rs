//! Checkpoints beside a busy writer, for shards that commit group after group.
//!
//! SQLite's automatic checkpoint copies the WAL into the database file inside the `COMMIT` that
//! passes 1,000 pages, so that commit (and everyone waiting for it) waits for the copy and its
//! fsync. A [`WalKeeper`] turns that off on the shard's write connection instead; every
//! `checkpoint_every` commits it starts a `PASSIVE` checkpoint on a read connection while the
//! writer goes on, copying each page written since the last one once.
//!
//! Starting the WAL over needs a moment when all of it is copied and no commit is in flight,
//! which a busy writer rarely leaves: once the WAL file passes `limit_bytes`, the keeper runs a
//! checkpoint on the write connection itself between two commits as soon as none runs beside it
//! (copying only what was committed since the last one), so the next commit starts the WAL over
//! and cuts the file back to the limit (`journal_size_limit`). It waits for a running checkpoint
//! only past half as much again: the WAL stays within 1.5 times the limit plus one commit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::task::JoinHandle;

use crate::{Shard, ShardError};

/// What a shard's [`WalKeeper`] did, for metrics. Several keepers may share one.
#[derive(Debug, Default)]
pub struct WalStats {
    /// Checkpoints run beside the writer.
    pub checkpoints: AtomicU64,
    /// Microseconds those took (on their own connection, not the writer's).
    pub checkpoint_micros: AtomicU64,
    /// Checkpoints the writer ran itself because the WAL passed its limit.
    pub forced_checkpoints: AtomicU64,
    /// Size of the WAL file after the last commit.
    pub wal_bytes: AtomicU64,
}

/// Keeps one shard's checkpoints out of its commits; call [`WalKeeper::after_commit`] after
/// every commit of the shard's one writer task, and [`WalKeeper::finish`] when it stops.
#[derive(Debug)]
pub struct WalKeeper {
    wal_path: PathBuf,
    checkpoint_every: u64,
    limit_bytes: u64,
    stats: Arc<WalStats>,
    /// The checkpoint running beside the writer, if any, and how long it took.
    running: Option<JoinHandle<(Result<(), ShardError>, Duration)>>,
    /// Commits since the last checkpoint began.
    commits_since: u64,
}

impl WalKeeper {
    /// Turns automatic checkpoints off on `shard`'s write connection and bounds its WAL file to
    /// `limit_bytes` once it starts over. `checkpoint_every` and `limit_bytes` must be positive.
    ///
    /// # Errors
    /// The pragmas could not be set.
    pub async fn start(
        shard: &Shard,
        checkpoint_every: u64,
        limit_bytes: u64,
        stats: Arc<WalStats>,
    ) -> Result<WalKeeper, ShardError> {
        let limit = i64::try_from(limit_bytes).unwrap_or(i64::MAX);
        shard
            .write(move |conn| {
                conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                conn.pragma_update(None, "journal_size_limit", limit)
            })
            .await?;
        let mut wal_path = shard.path().as_os_str().to_owned();
        wal_path.push("-wal");
        Ok(WalKeeper {
            wal_path: wal_path.into(),
            checkpoint_every: checkpoint_every.max(1),
            limit_bytes: limit_bytes.max(1),
            stats,
            running: None,
            commits_since: 0,
        })
    }

    /// After a commit of `shard` (the one this keeper started on): collects a finished
    /// checkpoint, checkpoints on the writer if the WAL passed its limit, and starts the next
    /// checkpoint beside the writer when it is due.
    pub async fn after_commit(&mut self, shard: &Shard) {
        if let Some(running) = self.running.take_if(|running| running.is_finished()) {
            self.collect(running).await;
        }
        self.commits_since += 1;
        let bytes = std::fs::metadata(&self.wal_path).map_or(0, |file| file.len());
        self.stats.wal_bytes.store(bytes, Ordering::Relaxed);
        let limit = self.limit_bytes;
        // Past the limit the writer starts the WAL over itself: at once when no checkpoint runs
        // beside it, else as soon as that one has finished (the rest to copy is then what was
        // committed since it began), waiting for it only past half as much again.
        if bytes > limit && (self.running.is_none() || bytes > limit.saturating_add(limit / 2)) {
            if let Some(running) = self.running.take() {
                self.collect(running).await;
            }
            // With no commit in between, the next one starts the WAL over. Should a reader hold
            // an old snapshot (a backup), the next commit tries again.
            match shard.write(|conn| passive_checkpoint(conn)).await {
                Ok(()) => {
                    self.stats.forced_checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(%error, path = %self.wal_path.display(), "WAL checkpoint failed")
                }
            }
            self.commits_since = 0;
            return;
        }
        if self.running.is_none() && self.commits_since >= self.checkpoint_every && bytes <= limit {
            self.commits_since = 0;
            let shard = shard.clone();
            self.running = Some(tokio::spawn(async move {
                let started = Instant::now();
                let done = shard.read(passive_checkpoint).await;
                (done, started.elapsed())
            }));
        }
    }

    /// Waits for a checkpoint still running beside the writer.
    pub async fn finish(&mut self) {
        if let Some(running) = self.running.take() {
            self.collect(running).await;
        }
    }

    async fn collect(&self, running: JoinHandle<(Result<(), ShardError>, Duration)>) {
        match running.await {
            Ok((Ok(()), took)) => {
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                self.stats.checkpoint_micros.fetch_add(micros, Ordering::Relaxed);
            }
            Ok((Err(error), _)) => {
                tracing::warn!(%error, path = %self.wal_path.display(), "WAL checkpoint failed")
            }
            Err(error) => tracing::warn!(%error, "WAL checkpoint task failed"),
        }
    }
}

/// A `PASSIVE` checkpoint: copies what it can without waiting for readers or the writer.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}
