//! The group committer: the one task that writes `inventory.db`.
//!
//! It waits for a change, takes every other change queued by then (up to `max_group`), and runs
//! them in one SQLite transaction, each inside its own `SAVEPOINT`: a change that fails (not
//! enough items, an expired offer, even a failed statement) is rolled back to its savepoint and
//! answered with its error, and the others still commit. Only after `COMMIT` returns is any
//! change answered, so an acknowledged change is durable (with `synchronous=FULL`, across a power
//! loss). While one group commits, the next one queues: the busier the server, the larger the
//! groups and the fewer fsyncs per change.
//!
//! Checkpoints run beside the committer: SQLite's automatic checkpoint (which would copy the
//! WAL into the database file inside a `COMMIT`, holding the group's answers back) is off on the
//! write connection; every `checkpoint_every` groups a `PASSIVE` checkpoint runs on a read
//! connection of the shard while the committer goes on, copying each page written since the
//! last one once. Starting the WAL over needs a moment when all of it is copied and no commit is
//! in flight, which a busy committer rarely leaves: once the WAL file passes `wal_limit_bytes`,
//! the committer runs a checkpoint itself between groups as soon as none runs beside it
//! (copying only what was committed since the last one), so the next group starts the WAL over
//! and cuts the file back to the limit (`journal_size_limit`). It waits for a running checkpoint
//! only past half as much again: the WAL stays within 1.5 times the limit plus one group.
//!
//! Pruning rides along: every `prune_interval` (by the injected clock) a group also deletes up to
//! `prune_batch` idempotency records older than `retention` and as many offers that expired
//! before then, in a savepoint after the changes. A pass that deleted a full batch is repeated
//! with the next group until the backlog is gone, so pruning keeps up with any write rate
//! without ever holding the writer for long.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shard::ShardError;
use shard::rusqlite::{self, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Change, Command, Inner, InventoryError, Receipt, Scope, store};

/// Page cache of the write connection, in KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// One queued change and where its answer goes.
pub(crate) struct Job {
    pub(crate) scope: Scope,
    pub(crate) idempotency_key: String,
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Result<Receipt<Change>, InventoryError>>,
}

/// The task that applies every inventory change; see the module doc. Run it with
/// [`Committer::run`] on the server's task tracker.
pub struct Committer {
    inner: Arc<Inner>,
    queue: mpsc::Receiver<Job>,
    /// When (by the injected clock) the next prune pass is due.
    next_prune_ms: u64,
    /// The checkpoint running beside the committer, if any, and how long it took.
    checkpoint: Option<JoinHandle<(Result<WalState, ShardError>, Duration)>>,
    /// Groups committed since the last checkpoint began.
    groups_since_checkpoint: u64,
    /// The shard's WAL file.
    wal_path: Arc<Path>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    pub(crate) fn new(inner: Arc<Inner>, queue: mpsc::Receiver<Job>) -> Committer {
        let mut wal_path = inner.shard.path().as_os_str().to_owned();
        wal_path.push("-wal");
        Committer {
            wal_path: PathBuf::from(wal_path).into(),
            inner,
            queue,
            next_prune_ms: 0,
            checkpoint: None,
            groups_since_checkpoint: 0,
        }
    }

    /// Commits queued changes in groups until `shutdown`, then refuses new changes, commits
    /// every change already queued, and returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Holdings, offers and the idempotency records are read at random by every change: a
        // larger page cache than SQLite's 2 MiB default keeps those reads off the file. The
        // checkpoints run beside the committer instead of inside its commits (see the module doc).
        let wal_limit = i64::try_from(self.inner.config.wal_limit_bytes).unwrap_or(i64::MAX);
        let pragmas = self
            .inner
            .shard
            .write(move |conn| {
                conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
                conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                conn.pragma_update(None, "journal_size_limit", wal_limit)
            })
            .await;
        if let Err(error) = pragmas {
            tracing::warn!(%error, "could not set the inventory writer's cache size and checkpoints");
        }
        loop {
            let first = tokio::select! {
                // Queued changes first: a shutdown never skips one that is already waiting.
                biased;
                job = self.queue.recv() => job,
                () = shutdown.cancelled() => None,
            };
            let Some(first) = first else { break };
            let group = self.gather(first);
            let wal_bytes = self.commit(group).await;
            self.checkpoint_if_due(wal_bytes).await;
        }
        self.queue.close();
        let mut drained = 0;
        while let Some(first) = self.queue.recv().await {
            let group = self.gather(first);
            drained += group.len();
            let wal_bytes = self.commit(group).await;
            self.checkpoint_if_due(wal_bytes).await;
        }
        if let Some(running) = self.checkpoint.take() {
            self.checkpoint_done(running).await;
        }
        tracing::info!(drained, "inventory committer stopped");
    }

    /// After a group, which left the WAL file at `wal_bytes`: collects a finished checkpoint,
    /// checkpoints itself if the WAL passed its limit, and starts the next checkpoint beside the
    /// committer when it is due.
    async fn checkpoint_if_due(&mut self, wal_bytes: Option<u64>) {
        if let Some(running) = self.checkpoint.take_if(|running| running.is_finished()) {
            self.checkpoint_done(running).await;
        }
        self.groups_since_checkpoint += 1;
        let bytes = wal_bytes.unwrap_or(0);
        let limit = self.inner.config.wal_limit_bytes;
        // Past the limit the committer starts the WAL over itself: at once when no checkpoint
        // runs beside it, else as soon as that one has finished (the rest to copy is then what
        // was committed since it began), waiting for it only past half as much again.
        if bytes > limit && (self.checkpoint.is_none() || bytes > limit.saturating_add(limit / 2)) {
            if let Some(running) = self.checkpoint.take() {
                self.checkpoint_done(running).await;
            }
            // With no commit in between, the next group starts the WAL over. Should a reader
            // hold an old snapshot (a backup), the next group tries again.
            match self.inner.shard.write(|conn| checkpoint(conn)).await {
                Ok(wal) => {
                    self.inner.stats.forced_checkpoints.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        wal_pages = wal.pages,
                        checkpointed = wal.checkpointed,
                        "the inventory committer checkpointed the WAL itself"
                    );
                }
                Err(error) => tracing::warn!(%error, "inventory WAL checkpoint failed"),
            }
            self.groups_since_checkpoint = 0;
            return;
        }
        let due = self.groups_since_checkpoint >= self.inner.config.checkpoint_every;
        if self.checkpoint.is_none() && due && bytes <= limit {
            self.groups_since_checkpoint = 0;
            let shard = self.inner.shard.clone();
            self.checkpoint = Some(tokio::spawn(async move {
                let started = Instant::now();
                let wal = shard.read(checkpoint).await;
                (wal, started.elapsed())
            }));
        }
    }

    /// Waits for a checkpoint that ran beside the committer and records it.
    async fn checkpoint_done(&mut self, running: JoinHandle<(Result<WalState, ShardError>, Duration)>) {
        let stats = &self.inner.stats;
        match running.await {
            Ok((Ok(_), took)) => {
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                stats.checkpoint_micros.fetch_add(micros(took), Ordering::Relaxed);
            }
            Ok((Err(error), _)) => tracing::warn!(%error, "inventory WAL checkpoint failed"),
            Err(error) => tracing::warn!(%error, "inventory WAL checkpoint task failed"),
        }
    }

    /// `first` and whatever else is queued right now, up to `max_group` changes.
    fn gather(&mut self, first: Job) -> Vec<Job> {
        let mut group = vec![first];
        while group.len() < self.inner.config.max_group {
            match self.queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        group
    }

    /// The prune pass to run in this group, if one is due: records and offers older than this.
    fn prune_due(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms < self.next_prune_ms {
            return None;
        }
        let config = &self.inner.config;
        self.next_prune_ms = now_ms.saturating_add(millis(config.prune_interval));
        Some(now_ms.saturating_sub(millis(config.retention)))
    }

    /// Commits one group and answers its callers; returns the size of the WAL file afterwards.
    async fn commit(&mut self, group: Vec<Job>) -> Option<u64> {
        let size = group.len();
        let (work, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|job| ((job.scope, job.idempotency_key, job.command), job.reply)).unzip();
        let inner = self.inner.clone();
        let now_ms = inner.clock.now_ms();
        let prune_before_ms = self.prune_due(now_ms);
        let wal_path = self.wal_path.clone();
        let outcome = self
            .inner
            .shard
            .write(move |conn| {
                let committed = commit_group(conn, &inner, &work, now_ms, prune_before_ms)?;
                Ok((committed, std::fs::metadata(&wal_path).ok().map(|file| file.len())))
            })
            .await;
        let stats = &self.inner.stats;
        match outcome {
            Ok(((results, timing), wal_bytes)) => {
                if let Some(bytes) = wal_bytes {
                    stats.wal_bytes.store(bytes, Ordering::Relaxed);
                }
                if let Some(pruned) = timing.pruned {
                    stats.pruned_requests.fetch_add(pruned.requests as u64, Ordering::Relaxed);
                    stats.pruned_offers.fetch_add(pruned.offers as u64, Ordering::Relaxed);
                    // A full batch may have left more behind: prune again with the next group.
                    let batch = self.inner.config.prune_batch;
                    if pruned.requests == batch || pruned.offers == batch {
                        self.next_prune_ms = now_ms;
                    }
                }
                stats.groups.fetch_add(1, Ordering::Relaxed);
                stats.largest_group.fetch_max(size as u64, Ordering::Relaxed);
                stats.last_group.store(size as u64, Ordering::Relaxed);
                stats.changes.fetch_add(size as u64, Ordering::Relaxed);
                stats.apply_micros.fetch_add(micros(timing.apply), Ordering::Relaxed);
                stats.commit_micros.fetch_add(micros(timing.commit), Ordering::Relaxed);
                for (reply, result) in replies.into_iter().zip(results) {
                    if matches!(&result, Ok(receipt) if receipt.replayed) {
                        stats.replays.fetch_add(1, Ordering::Relaxed);
                    }
                    // A caller that stopped waiting finds its change applied when it retries.
                    let _ = reply.send(result);
                }
                wal_bytes
            }
            Err(error) => {
                tracing::error!(%error, size, "inventory group commit failed; nothing in it was applied");
                for reply in replies {
                    let _ =
                        reply.send(Err(InventoryError::Internal(format!("group commit failed: {error}"))));
                }
                None
            }
        }
    }
}

/// What a checkpoint found: pages in the WAL, and how many of them are now in the database file
/// (all of them: the next write transaction starts the WAL over).
#[derive(Debug, Clone, Copy)]
struct WalState {
    pages: u64,
    checkpointed: u64,
}

/// A `PASSIVE` checkpoint: copies what it can without waiting for readers or the writer.
fn checkpoint(conn: &rusqlite::Connection) -> rusqlite::Result<WalState> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        let (pages, checkpointed): (i64, i64) = (row.get(1)?, row.get(2)?);
        Ok(WalState { pages: store::to_u64(pages), checkpointed: store::to_u64(checkpointed) })
    })
}

/// What one change of a group answers.
type ChangeResult = Result<Receipt<Change>, InventoryError>;

/// Where a group's time went, and what its prune pass deleted.
struct Timing {
    /// Running the changes (and the prune pass), up to `COMMIT`.
    apply: Duration,
    /// `COMMIT` itself.
    commit: Duration,
    /// `None` when no pass ran or it failed.
    pruned: Option<store::Pruned>,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One transaction, one savepoint per change, and the prune pass (if `prune_before_ms`) in a
/// savepoint of its own after them, so it shares the group's fsync and its failure fails no
/// change. The outer `Err` (a savepoint or the commit itself failed) means nothing of the group
/// was applied.
fn commit_group(
    conn: &mut rusqlite::Connection,
    inner: &Inner,
    work: &[(Scope, String, Command)],
    now_ms: u64,
    prune_before_ms: Option<u64>,
) -> rusqlite::Result<(Vec<ChangeResult>, Timing)> {
    let started = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(work.len());
    for (scope, key, command) in work {
        // Prepared once per connection: a savepoint per change costs no parsing.
        tx.prepare_cached("SAVEPOINT change")?.execute([])?;
        let result = store::apply(&tx, inner, scope, key, command, now_ms);
        if result.is_ok() {
            tx.prepare_cached("RELEASE change")?.execute([])?;
        } else {
            // Fails if SQLite itself rolled the whole transaction back (disk full, I/O error):
            // then the group fails as a whole and nobody is told "done".
            tx.execute_batch("ROLLBACK TO change; RELEASE change")?;
        }
        if let Err(InventoryError::Shard(error)) = &result {
            tracing::error!(%error, "an inventory change failed in SQLite; the rest of its group goes on");
        }
        results.push(result);
    }
    let pruned = match prune_before_ms {
        Some(before_ms) => {
            tx.execute_batch("SAVEPOINT prune")?;
            match store::prune(&tx, before_ms, inner.config.prune_batch) {
                Ok(pruned) => {
                    tx.execute_batch("RELEASE prune")?;
                    Some(pruned)
                }
                Err(error) => {
                    tracing::error!(%error, "inventory prune pass failed; the group's changes go on");
                    tx.execute_batch("ROLLBACK TO prune; RELEASE prune")?;
                    None
                }
            }
        }
        None => None,
    };
    let applied = Instant::now();
    tx.commit()?;
    let timing = Timing { apply: applied - started, commit: applied.elapsed(), pruned };
    Ok((results, timing))
}
