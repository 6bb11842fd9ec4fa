//! Group commit: one task writes every queued message, many per transaction.
//!
//! [`crate::Chat::send`] queues a message with a one-shot reply and waits. The writer takes the
//! first queued message, then everything else already queued (up to `max_batch`), splits the
//! batch by year and writes each year's part in one transaction; only then does it answer each
//! sender. While one transaction commits the next batch gathers in the queue, so under load the
//! cost of a commit (an fsync with `synchronous=FULL`) is shared by many messages, and when idle
//! a lone message is written at once. After a commit it provisions the following year's shard
//! if that is not open yet, so the shard exists well before the boundary. Each year's shard it
//! writes gets a [`shard::WalKeeper`], so checkpoints run beside the writer, not inside its
//! commits.
//!
//! A year's shard marked for retirement ([`crate::lifecycle::retire`]) refuses the transaction,
//! and its senders get [`ChatError::Archived`]: nothing is acknowledged that the archive misses.
//!
//! On shutdown it stops taking new messages, writes everything still queued and answers it.
//!
//! The same task also listens for membership invalidations from other processes
//! ([`crate::members`]), so the caller runs one thing for the chat domain's background work.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use shard::{Shard, WalKeeper};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::members::Listener;
use crate::years::Years;
use crate::{ChatError, ChatStats, Message, messages};

/// A message waiting for its transaction, and where to say how it went.
pub(crate) struct Pending {
    pub(crate) message: Message,
    pub(crate) done: oneshot::Sender<Result<(), ChatError>>,
}

/// The chat domain's background work: the writer and the membership listener; run it with
/// [`GroupCommitter::run`] (exactly one per [`crate::Chat`]).
pub struct GroupCommitter {
    pub(crate) writer: Writer,
    pub(crate) listener: Listener,
}

/// The writer's state.
pub(crate) struct Writer {
    pub(crate) receiver: mpsc::Receiver<Pending>,
    pub(crate) years: Arc<Years>,
    pub(crate) stats: Arc<ChatStats>,
    pub(crate) max_batch: usize,
    /// The checkpoint keeper of each year's shard written so far.
    pub(crate) wal: HashMap<i32, WalKeeper>,
}

/// Group commits between two checkpoints beside the writer.
const CHECKPOINT_EVERY: u64 = 128;
/// Size of a year's WAL file past which the writer checkpoints it itself between commits.
const WAL_LIMIT_BYTES: u64 = 128 * 1024 * 1024;

impl std::fmt::Debug for GroupCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter").field("max_batch", &self.writer.max_batch).finish_non_exhaustive()
    }
}

impl GroupCommitter {
    /// Writes queued messages until `shutdown`, then writes what is still queued and returns.
    /// Sends after that fail with [`ChatError::ShuttingDown`]. Meanwhile applies membership
    /// invalidations from other processes.
    pub async fn run(self, shutdown: CancellationToken) {
        let GroupCommitter { writer, listener } = self;
        tokio::join!(writer.run(shutdown.clone()), listener.run(shutdown));
    }
}

impl Writer {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                first = self.receiver.recv() => first,
            };
            let Some(first) = first else { return };
            let batch = self.gather(first);
            self.commit(batch).await;
        }
        self.receiver.close();
        let mut drained = 0;
        while let Some(first) = self.receiver.recv().await {
            let batch = self.gather(first);
            drained += batch.len();
            self.commit(batch).await;
        }
        for wal in self.wal.values_mut() {
            wal.finish().await;
        }
        tracing::info!(drained, "chat writer stopped");
    }

    fn gather(&mut self, first: Pending) -> Vec<Pending> {
        let mut batch = vec![first];
        while batch.len() < self.max_batch {
            match self.receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        batch
    }

    async fn commit(&mut self, batch: Vec<Pending>) {
        let mut by_year: BTreeMap<i32, Vec<Pending>> = BTreeMap::new();
        for pending in batch {
            by_year.entry(pending.message.id.year()).or_default().push(pending);
        }
        for (year, pending) in by_year {
            let (batch, done): (Vec<Message>, Vec<_>) =
                pending.into_iter().map(|pending| (pending.message, pending.done)).unzip();
            let n_messages = batch.len() as u64;
            let started = Instant::now();
            let result = match self.years.writable(year).await {
                Ok(shard) => match shard.write(move |conn| messages::insert_batch(conn, &batch)).await {
                    Ok(messages::Written::Done(())) => {
                        self.keep_wal(year, &shard).await;
                        Ok(())
                    }
                    Ok(messages::Written::Retiring) => {
                        self.retired(year).await;
                        Err(ChatError::Archived(year))
                    }
                    Err(error) => Err(ChatError::from(error)),
                },
                Err(error) => Err(error),
            };
            match &result {
                Ok(()) => {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.stats.commit_micros.fetch_add(micros, Ordering::Relaxed);
                    self.stats.messages_stored.fetch_add(n_messages, Ordering::Relaxed);
                    self.stats.last_batch.store(n_messages, Ordering::Relaxed);
                    self.stats.largest_batch.fetch_max(n_messages, Ordering::Relaxed);
                }
                // Refused, not failed: the year is being retired (a skewed clock, or a send
                // queued across midnight), and the senders are told so.
                Err(ChatError::Archived(_)) => {
                    tracing::info!(year, n_messages, "chat messages refused: their year is retired");
                }
                Err(error) => {
                    self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%error, year, n_messages, "chat group commit failed");
                }
            }
            // Before answering, so the next year exists by the time anyone hears of this year's
            // first commit (a map lookup once the shard is open).
            if result.is_ok()
                && let Err(error) = self.years.writable(year + 1).await
            {
                tracing::warn!(%error, year = year + 1, "could not provision the next chat shard");
            }
            for done in done {
                let answer = match &result {
                    Ok(()) => Ok(()),
                    Err(ChatError::Archived(year)) => Err(ChatError::Archived(*year)),
                    Err(error) => Err(ChatError::Write(error.to_string())),
                };
                // A sender that stopped waiting does not need the answer.
                let _ = done.send(answer);
            }
        }
    }

    /// The year's shard carries the retirement mark: let go of it, so this process stops holding
    /// a file the retire is about to remove and later writes find the archive instead.
    async fn retired(&mut self, year: i32) {
        if let Some(mut keeper) = self.wal.remove(&year) {
            keeper.finish().await;
        }
        self.years.forget(year);
    }

    /// After a commit to `year`'s shard: its keeper's turn (started on the year's first commit).
    /// Keepers of years before the previous one are dropped, since nothing writes there.
    async fn keep_wal(&mut self, year: i32, shard: &Shard) {
        if !self.wal.contains_key(&year) {
            match WalKeeper::start(shard, CHECKPOINT_EVERY, WAL_LIMIT_BYTES, self.stats.wal.clone()).await {
                Ok(keeper) => {
                    self.wal.insert(year, keeper);
                }
                Err(error) => {
                    tracing::warn!(%error, year, "could not move chat checkpoints beside the writer");
                    return;
                }
            }
            for old in self.wal.keys().copied().filter(|old| *old < year - 1).collect::<Vec<_>>() {
                if let Some(mut keeper) = self.wal.remove(&old) {
                    keeper.finish().await;
                }
            }
        }
        if let Some(keeper) = self.wal.get_mut(&year) {
            keeper.after_commit(shard).await;
        }
    }
}
