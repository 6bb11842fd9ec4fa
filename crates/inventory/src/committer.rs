//! The group committer: the one task that writes `inventory.db`.
//!
//! It waits for a change, takes every other change queued by then (up to `max_group`), and runs
//! them in one SQLite transaction, each inside its own `SAVEPOINT`: a change that fails (not
//! enough items, an expired offer, even a failed statement) is rolled back to its savepoint and
//! answered with its error, and the others still commit. Only after `COMMIT` returns is any
//! change answered, so an acknowledged change is durable (with `synchronous=FULL`, across a power
//! loss). While one group commits, the next one queues: the busier the server, the larger the
//! groups and the fewer fsyncs per change.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shard::rusqlite::{self, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{Change, Command, Inner, InventoryError, Receipt, Scope, store};

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
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    pub(crate) fn new(inner: Arc<Inner>, queue: mpsc::Receiver<Job>) -> Committer {
        Committer { inner, queue }
    }

    /// Commits queued changes in groups until `shutdown`, then refuses new changes, commits
    /// every change already queued, and returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
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
        }
        self.queue.close();
        let mut drained = 0;
        while let Some(first) = self.queue.recv().await {
            let group = self.gather(first);
            drained += group.len();
            self.commit(group).await;
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

    async fn commit(&self, group: Vec<Job>) {
        let size = group.len();
        let (work, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|job| ((job.scope, job.idempotency_key, job.command), job.reply)).unzip();
        let inner = self.inner.clone();
        let now_ms = inner.clock.now_ms();
        let outcome = self.inner.shard.write(move |conn| commit_group(conn, &inner, &work, now_ms)).await;
        let stats = &self.inner.stats;
        match outcome {
            Ok(results) => {
                stats.groups.fetch_add(1, Ordering::Relaxed);
                stats.largest_group.fetch_max(size as u64, Ordering::Relaxed);
                stats.changes.fetch_add(size as u64, Ordering::Relaxed);
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

/// One transaction, one savepoint per change. The outer `Err` (a savepoint or the commit itself
/// failed) means nothing of the group was applied.
fn commit_group(
    conn: &mut rusqlite::Connection,
    inner: &Inner,
    work: &[(Scope, String, Command)],
    now_ms: u64,
) -> rusqlite::Result<Vec<Result<Receipt<Change>, InventoryError>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(work.len());
    for (scope, key, command) in work {
        tx.execute_batch("SAVEPOINT change")?;
        let result = store::apply(&tx, inner, scope, key, command, now_ms);
        if result.is_ok() {
            tx.execute_batch("RELEASE change")?;
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
    tx.commit()?;
    Ok(results)
}
