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
//! Checkpoints run beside the committer, not inside its commits (a [`shard::WalKeeper`]), so a
//! group never waits for the WAL to be copied into the database file, and the WAL stays within
//! about 1.5 times `wal_limit_bytes`.
//!
//! Pruning rides along: every `prune_interval` (by the injected clock) a group also deletes up to
//! `prune_batch` idempotency records older than `retention` and as many offers that expired
//! before then, in a savepoint after the changes. A pass that deleted a full batch is repeated
//! with the next group until the backlog is gone, so pruning keeps up with any write rate
//! without ever holding the writer for long.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shard::WalKeeper;
use shard::rusqlite::{self, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
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
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    pub(crate) fn new(inner: Arc<Inner>, queue: mpsc::Receiver<Job>) -> Committer {
        Committer { inner, queue, next_prune_ms: 0 }
    }

    /// Commits queued changes in groups until `shutdown`, then refuses new changes, commits
    /// every change already queued, and returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Holdings, offers and the idempotency records are read at random by every change: a
        // larger page cache than SQLite's 2 MiB default keeps those reads off the file.
        let shard = self.inner.shard.clone();
        if let Err(error) =
            shard.write(|conn| conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)).await
        {
            tracing::warn!(%error, "could not set the inventory writer's cache size");
        }
        let config = &self.inner.config;
        let stats = self.inner.stats.wal.clone();
        let mut wal =
            match WalKeeper::start(&shard, config.checkpoint_every, config.wal_limit_bytes, stats).await {
                Ok(keeper) => Some(keeper),
                Err(error) => {
                    tracing::warn!(%error, "could not move inventory checkpoints beside the committer");
                    None
                }
            };
        loop {
            let first = tokio::select! {
                // Queued changes first: a shutdown never skips one that is already waiting.
                biased;
                job = self.queue.recv() => job,
                () = shutdown.cancelled() => None,
            };
            let Some(first) = first else { break };
            let group = self.gather(first);
            self.commit(group).await;
            if let Some(wal) = &mut wal {
                wal.after_commit(&shard).await;
            }
        }
        self.queue.close();
        let mut drained = 0;
        while let Some(first) = self.queue.recv().await {
            let group = self.gather(first);
            drained += group.len();
            self.commit(group).await;
            if let Some(wal) = &mut wal {
                wal.after_commit(&shard).await;
            }
        }
        if let Some(wal) = &mut wal {
            wal.finish().await;
        }
        tracing::info!(drained, "inventory committer stopped");
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
        let config = &self.inner.config;
        let interval_ms = millis(config.prune_interval);
        // A pass is due at most an interval from now: a clock set back (after a jump ahead, say)
        // must not hold pruning off until it has caught up again.
        if now_ms < self.next_prune_ms && self.next_prune_ms - now_ms <= interval_ms {
            return None;
        }
        self.next_prune_ms = now_ms.saturating_add(interval_ms);
        Some(now_ms.saturating_sub(millis(config.retention)))
    }

    /// Commits one group and answers its callers.
    async fn commit(&mut self, group: Vec<Job>) {
        let size = group.len();
        let (work, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|job| ((job.scope, job.idempotency_key, job.command), job.reply)).unzip();
        let inner = self.inner.clone();
        let now_ms = inner.clock.now_ms();
        let prune_before_ms = self.prune_due(now_ms);
        let outcome = self
            .inner
            .shard
            .write(move |conn| commit_group(conn, &inner, &work, now_ms, prune_before_ms))
            .await;
        let stats = &self.inner.stats;
        match outcome {
            Ok((results, timing)) => {
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
            }
            Err(error) => {
                tracing::error!(%error, size, "inventory group commit failed; nothing in it was applied");
                for reply in replies {
                    let _ =
                        reply.send(Err(InventoryError::Internal(format!("group commit failed: {error}"))));
                }
            }
        }
    }
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
