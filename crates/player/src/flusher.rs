//! The flusher: moves buffered player states into `player.db` in batched transactions.
//!
//! Exactly one flusher runs at a time across the gateway processes sharing a store: each process
//! runs [`run`], and only the holder of the lease flushes. A batch is *claimed* in the store
//! before it is written (moved from the dirty set to the claim), and released only after its
//! transaction commits; a flusher that dies in between leaves the claim behind, and whoever takes
//! the lease next puts it back into the dirty set first. So a crash loses nothing, and writing a
//! batch twice is harmless because an older version never overwrites a newer one.
//!
//! `player.db` keeps a watermark, the highest version it has held: every flush raises it, and so
//! does a process that takes the lease (up to what direct writes stored). The buffer's version
//! counter is never below it unless the buffer lost its data or went back to older data, or
//! direct writes moved players past it; a pass that finds it below drops the buffer's clean
//! states, which `player.db` holds at the same or a newer version, so they are read from there
//! again, flushes the rest and raises the counter to the watermark, so versions continue above
//! it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{NAMESPACE, PlayerError, PlayerState, Players, record, store};

/// The lease that elects the one flusher (a key in the store).
pub const LEASE: &str = "player-flusher";

/// What one flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Rows written to SQLite.
    pub rows_written: u64,
    /// Rows not written because SQLite already held that version or a newer one.
    pub rows_skipped: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Time spent writing to SQLite (the transactions themselves, not claiming from Redis).
    pub write_time: std::time::Duration,
}

/// Runs the flusher until `shutdown`, then makes the final flush and gives up the lease.
/// `holder` names this process in the lease (unique per process).
pub async fn run(players: Players, holder: String, shutdown: CancellationToken) {
    let inner = &players.inner;
    let kv = &inner.kv;
    let mut ticks = tokio::time::interval(inner.config.flush_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut holding = false;
    let mut store_was_down = false;
    loop {
        // The first tick fires at once: start-up flushes what a crashed process left behind.
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
            () = inner.flush_wanted.notified() => {}
        }
        match kv.lease_acquire(LEASE, &holder, inner.config.flush_lease).await {
            Ok(true) => {
                if store_was_down {
                    tracing::info!("flusher reaches the store again");
                    store_was_down = false;
                }
                if !holding {
                    holding = true;
                    recover(&players).await;
                    if let Err(error) = store::raise_watermark_to_stored(&players.inner.shard).await {
                        tracing::warn!(%error, "could not bring the version watermark up to player.db");
                    }
                    tracing::info!(holder, "this process is the player-state flusher");
                }
                if let Err(error) = flush_all(&players, Some(&holder)).await {
                    tracing::warn!(%error, "player-state flush failed; the batch will be retried");
                    recover(&players).await;
                }
            }
            Ok(false) => {
                if holding {
                    tracing::info!("another process took the player-state flusher lease");
                }
                holding = false;
            }
            Err(error) => {
                if !store_was_down {
                    tracing::warn!(%error, "flusher cannot reach the store");
                    store_was_down = true;
                }
                holding = false;
            }
        }
    }
    final_flush(&players, &holder).await;
}

async fn final_flush(players: &Players, holder: &str) {
    let kv = &players.inner.kv;
    match kv.lease_acquire(LEASE, holder, players.inner.config.flush_lease).await {
        Ok(true) => {
            recover(players).await;
            match flush_all(players, Some(holder)).await {
                Ok(report) => tracing::info!(rows = report.rows_written, "final player-state flush done"),
                Err(error) => {
                    tracing::error!(%error, "final player-state flush failed; Redis still holds the data")
                }
            }
            if let Err(error) = kv.lease_release(LEASE, holder).await {
                tracing::warn!(%error, "could not release the flusher lease; it expires by itself");
            }
        }
        Ok(false) => tracing::info!("another process holds the flusher lease and will flush"),
        Err(error) => tracing::error!(%error, "final flush impossible: the store is unreachable"),
    }
}

/// Puts a claim left by an interrupted flush back into the dirty set.
async fn recover(players: &Players) {
    match players.inner.kv.buffer_recover(NAMESPACE).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(players = n, "recovered an interrupted flush"),
        Err(error) => tracing::warn!(%error, "could not recover claimed player states"),
    }
}

/// Claims and writes batches until every player that was dirty when the pass began is written.
///
/// With `lease_holder`, the pass renews that holder's lease after each batch and stops if it was
/// lost: a pass can outlast the lease (a backlog of a few hundred thousand players), and the
/// next holder's first step is to put back the claim of an interrupted flush, which would be
/// this pass's batch in flight. Without a holder ([`Players::flush_now`]) it just runs.
///
/// Players dirtied during the pass wait for the next one: under steady load they are dirtied
/// again within milliseconds, and chasing them would turn one flush per interval into a
/// continuous stream of small ones that write each player many times a second. The cut-off is
/// this process's clock against the dirtying process's: a gateway whose clock runs ahead has its
/// players flushed later by the skew, never lost.
///
/// A pass that finds the buffer behind `player.db` (see [`buffer_behind_sqlite`]) first drops
/// its clean states and, after writing, drops the ones it skipped and raises the version counter.
pub(crate) async fn flush_all(
    players: &Players,
    lease_holder: Option<&str>,
) -> Result<FlushReport, PlayerError> {
    let Some(watermark) = buffer_behind_sqlite(players).await? else {
        return flush_pass(players, lease_holder).await;
    };
    // Until the counter is raised at the end, every pass comes back here: a pass cut short (a
    // lost lease, an error) leaves the healing to the next.
    let kv = &players.inner.kv;
    // A claim that came back with the old data is no flush in flight (a holder that kept the
    // lease would never recover it): its records go back to the dirty set, to be written or
    // skipped by this pass.
    kv.buffer_recover(NAMESPACE).await?;
    let mut dropped = kv.buffer_drop_clean(NAMESPACE).await?;
    // The walk over a large buffer can take seconds.
    if !still_holding(players, lease_holder).await? {
        return Ok(FlushReport::default());
    }
    let report = flush_pass(players, lease_holder).await?;
    // The flushed states older than SQLite's were skipped, and are clean now.
    dropped += kv.buffer_drop_clean(NAMESPACE).await?;
    kv.buffer_raise_version(NAMESPACE, watermark).await?;
    players.inner.stats.buffer_heals.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        dropped,
        skipped = report.rows_skipped,
        watermark,
        "buffered player states are read from player.db again; versions continue above it"
    );
    Ok(report)
}

/// `Some(watermark)` if the buffer's version counter is below the highest version `player.db`
/// has held, which it never is while the buffer keeps its data and every write goes through it:
/// versions are handed out by that counter before they are flushed.
///
/// Below it, the buffer lost data or came back with older data (Redis restarted from an old
/// snapshot, or failed over to a replica that lagged), or direct writes moved players ahead of
/// it (a deployment that ran in `direct` mode for a while, then `buffered` again). A buffered
/// record may then hold an older state than `player.db`, which reads would show and partial
/// updates build on, and new updates would get versions the flush skips as older than SQLite's.
/// A clean record holds nothing `player.db` lacks, so the cure is to put any claim that came
/// back with the data into the dirty set, drop the clean records (read again from `player.db`
/// on their next use), flush the dirty ones (those older than SQLite's are skipped, and so
/// clean), drop again, and raise the counter to the watermark. An empty buffer (a Redis that
/// restarted without persistence, the embedded store after a restart) takes the same path,
/// quickly.
async fn buffer_behind_sqlite(players: &Players) -> Result<Option<u64>, PlayerError> {
    let watermark = store::version_watermark(&players.inner.shard).await?;
    let counter = players.inner.kv.buffer_version(NAMESPACE).await?;
    if counter >= watermark {
        return Ok(None);
    }
    if counter > 0 {
        tracing::warn!(
            counter,
            watermark,
            "the player-state buffer is behind player.db (its version counter is below player.db's \
             highest version: Redis lost its data or came back with older data, from a snapshot \
             or a lagging replica, or direct-mode writes moved players ahead); dropping its clean \
             states so they are read from player.db again"
        );
    }
    Ok(Some(watermark))
}

/// One pass of claims and writes; see [`flush_all`].
async fn flush_pass(players: &Players, lease_holder: Option<&str>) -> Result<FlushReport, PlayerError> {
    let batch = players.inner.config.flush_batch;
    let pass_started_ms = players.inner.clock.now_ms();
    let mut report = FlushReport::default();
    loop {
        let kv::BufferClaim { records: claimed, generation } =
            players.inner.kv.buffer_claim(NAMESPACE, batch, pass_started_ms).await?;
        let n_claimed = claimed.len();
        if n_claimed == 0 {
            return Ok(report);
        }
        // Claims come oldest first, so the last one is the newest of the batch.
        let newest_dirty_ms = claimed.last().map_or(0, |record| record.dirty_since_ms);
        let ids: Vec<String> = claimed.iter().map(|record| record.id.clone()).collect();
        let states: Vec<PlayerState> = claimed
            .into_iter()
            .filter_map(|record| {
                let parsed = Uuid::parse_str(&record.id)
                    .map_err(|e| PlayerError::Internal(e.to_string()))
                    .and_then(|player_id| record::parse(player_id, &record.fields));
                parsed
                    .map_err(|error| tracing::error!(id = record.id, %error, "dropping an unreadable record"))
                    .ok()
            })
            .collect();
        let started = Instant::now();
        let (written, skipped) = store::write_batch(&players.inner.shard, states).await?;
        let write_time = started.elapsed();
        report.write_time += write_time;
        players.inner.kv.buffer_release(NAMESPACE, &ids, generation, players.inner.config.record_ttl).await?;

        let stats = &players.inner.stats;
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        stats.rows_flushed.fetch_add(written, Ordering::Relaxed);
        stats.last_flush_rows.store(n_claimed as u64, Ordering::Relaxed);
        stats
            .last_flush_micros
            .store(u64::try_from(write_time.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        report.rows_written += written;
        report.rows_skipped += skipped;
        report.batches += 1;
        // A short batch is not the end: a recovery beside this pass (an ops flush) cuts a claim
        // short and puts its ids back, to be claimed next. Only an empty claim ends the pass.
        if newest_dirty_ms > pass_started_ms {
            return Ok(report);
        }
        if !still_holding(players, lease_holder).await? {
            return Ok(report);
        }
    }
}

/// Renews `lease_holder`'s lease; false if another process took it (the pass then stops, its new
/// holder flushes the rest). Always true without a holder ([`Players::flush_now`]).
async fn still_holding(players: &Players, lease_holder: Option<&str>) -> Result<bool, PlayerError> {
    let Some(holder) = lease_holder else { return Ok(true) };
    let held = players.inner.kv.lease_acquire(LEASE, holder, players.inner.config.flush_lease).await?;
    if !held {
        tracing::warn!(holder, "lost the flusher lease during a pass; its new holder flushes the rest");
    }
    Ok(held)
}
