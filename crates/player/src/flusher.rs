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
//! counter is never below it unless the buffer lost its data or came back with older data, or
//! direct writes moved players past it. A pass that finds it below raises the counter to it,
//! after dropping the whole buffer if it came back with older data.

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

impl FlushReport {
    /// Adds what another flush wrote to this report.
    pub(crate) fn add(&mut self, other: FlushReport) {
        self.rows_written += other.rows_written;
        self.rows_skipped += other.rows_skipped;
        self.batches += other.batches;
        self.write_time += other.write_time;
    }
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
                    if let Err(error) = store::raise_watermark_to_stored(&players.inner.shard).await {
                        tracing::warn!(%error, "could not bring the version watermark up to player.db");
                    }
                    tracing::info!(holder, "this process is the player-state flusher");
                }
                // Whatever is claimed when a pass begins is not this flusher's: its passes release
                // or put back all they claim. It is a crashed holder's, or that of a flush run
                // beside this one (`gamectl flush`) which died or is still writing (its players
                // are then written twice, the older never over the newer). Put back, or it would
                // wait for the next change of lease, no longer dirty.
                recover(&players).await;
                if let Err(error) = flush_all(&players, Some(&holder)).await {
                    // Its claim is put back by the next pass, whichever process holds the lease.
                    tracing::warn!(%error, "player-state flush failed; the batch will be retried");
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
/// A buffer found behind `player.db` is healed first (see [`heal`]).
pub(crate) async fn flush_all(
    players: &Players,
    lease_holder: Option<&str>,
) -> Result<FlushReport, PlayerError> {
    let kv = &players.inner.kv;
    // The watermark first: every version it counts was handed out by the counter before, so a
    // counter read after it is at least as high unless the buffer really went back. Read the
    // other way round, another flush (`gamectl flush`, a backup's) committing between the two
    // reads could raise the watermark past the counter just read, and the whole buffer would be
    // dropped as older than `player.db`.
    let watermark = store::version_watermark(&players.inner.shard).await?;
    let version = kv.buffer_version(NAMESPACE).await?;
    if version.last < watermark {
        heal(players, version, watermark).await?;
        // Dropping a large buffer can take seconds.
        if !still_holding(players, lease_holder).await? {
            return Ok(FlushReport::default());
        }
    }
    if version.baseline.is_none() {
        kv.buffer_begin(NAMESPACE, watermark).await?;
    }
    flush_pass(players, lease_holder).await
}

/// Heals a buffer whose version counter is below `watermark`, the highest version `player.db`
/// has held. It never is while the buffer keeps its data and every write goes through it:
/// versions are handed out by that counter before they are flushed.
///
/// Below it, the buffer either lost its data (Redis restarted without persistence, the embedded
/// store after a restart), or came back with older data (Redis restarted from an old snapshot,
/// or failed over to a replica that lagged), or direct writes moved players ahead of it (a
/// deployment that ran in `direct` mode for a while, then `buffered` again). The buffer's
/// baseline tells the first from the others: it is the watermark when the buffer was begun (by
/// its first seed or its first flush pass, whichever came first), beginning raised the counter
/// to it, and a store that lost its data lost it too.
///
/// No baseline: the buffer lost its data and holds no record yet (a seed would have begun it),
/// so the counter is raised to the watermark and nothing else changes. A baseline: the buffer
/// began before something `player.db` holds now was flushed, so it may hold records older than
/// `player.db`, which reads would show and updates build on (the counter is shared, so an update
/// on one can even get a version above its player's stored one, and carry the older state's
/// other fields into `player.db`). Every record is dropped, with the updates acknowledged into
/// it since the store came back, and each is seeded from `player.db` again on its next use; then
/// the counter is raised.
async fn heal(players: &Players, version: kv::BufferVersion, watermark: u64) -> Result<(), PlayerError> {
    let kv = &players.inner.kv;
    let mut dropped = 0;
    if version.baseline.is_some() {
        tracing::warn!(
            counter = version.last,
            baseline = version.baseline,
            watermark,
            "the player-state buffer came back older than player.db (Redis restarted from an old \
             snapshot or failed over to a lagging replica, or direct-mode writes moved players \
             ahead); dropping it, so every player's state is read from player.db again"
        );
        dropped = kv.buffer_drop_all(NAMESPACE).await?;
    }
    kv.buffer_raise_version(NAMESPACE, watermark).await?;
    players.inner.stats.buffer_heals.fetch_add(1, Ordering::Relaxed);
    tracing::info!(dropped, watermark, "player-state versions continue above player.db's highest");
    Ok(())
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
