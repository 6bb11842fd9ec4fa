//! Player state: position, rotation, health and a small attributes blob, written at high
//! frequency.
//!
//! Owns: `player.db` (one row per player in `player_state`), the rules for valid values, and the
//! two write paths. *Buffered* (the default): an update is one round trip to the key-value store
//! (through `kv`'s buffered records), acknowledged once the store has it, and a background
//! [`flusher`] writes the newest state of every changed player to SQLite in batched transactions
//! — many updates of one player between two flushes become one row write. *Direct*: every update
//! is its own SQLite transaction, for comparison and for deployments without Redis.
//!
//! Reads see their own writes: the buffer first, SQLite when the player is not buffered.
//!
//! Never: touches another domain's shard, knows about sockets, or lets anything but the
//! player's own id reach [`Players::update`] (the gateway passes the authenticated account).

mod error;
pub mod flusher;
mod record;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clock::SharedClock;
use kv::{BufferUpdate, Kv};
use shard::{Shard, ShardConfig};
use tokio::sync::Notify;
use uuid::Uuid;

pub use error::PlayerError;

/// The schema version this build migrates `player.db` to: a file at an older one is migrated
/// when opened.
pub fn schema_version() -> u32 {
    shard::latest_version(store::MIGRATIONS)
}

/// Largest absolute value of a position coordinate.
pub const COORDINATE_MAX_ABS: f32 = 1.0e6;
/// Largest absolute value of a rotation, in degrees.
pub const ROTATION_MAX_ABS_DEGREES: f32 = 360.0;
/// Largest health value.
pub const HEALTH_MAX: u32 = 1_000_000;
/// Largest attributes blob, in bytes.
pub const ATTRIBUTES_MAX_BYTES: usize = 256;

/// Default time between two flushes.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of players written per SQLite transaction.
pub const DEFAULT_FLUSH_BATCH: usize = 2_000;
/// Default number of dirty players that wakes the flusher before its interval ends. Far above
/// what one interval normally gathers (2,000 players at 25 Hz dirty 2,000, not 50,000): it bounds
/// the buffer under a surge without turning every busy second into many small flushes.
pub const DEFAULT_FLUSH_THRESHOLD: usize = 50_000;
/// Default lifetime of a flushed player's record in Redis once it is not updated any more; a day,
/// so a returning player's first update seldom needs a read from SQLite.
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default lease of the one flusher across gateway processes; renewed every flush interval.
pub const DEFAULT_FLUSH_LEASE: Duration = Duration::from_secs(5);

/// The buffer namespace of player records in the key-value store.
const NAMESPACE: &str = "player";

/// Sizes of the player-state buffer in `kv` (dirty and claimed players, oldest unflushed update),
/// read without opening `player.db`: for a status report, which must change nothing.
///
/// # Errors
/// [`PlayerError::Store`] when the key-value store is down.
pub async fn buffer_stats_of(kv: &Kv) -> Result<kv::BufferStats, PlayerError> {
    Ok(kv.buffer_stats(NAMESPACE).await?)
}

/// How updates reach SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// Through the key-value store and the flusher.
    #[default]
    Buffered,
    /// One SQLite transaction per update.
    Direct,
}

/// Configuration of the player domain.
#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// Write path; default [`WriteMode::Buffered`].
    pub mode: WriteMode,
    /// Time between flushes; default [`DEFAULT_FLUSH_INTERVAL`].
    pub flush_interval: Duration,
    /// Players per flush transaction; default [`DEFAULT_FLUSH_BATCH`].
    pub flush_batch: usize,
    /// Dirty players that wake the flusher early; default [`DEFAULT_FLUSH_THRESHOLD`].
    pub flush_threshold: usize,
    /// How long a buffered record stays in Redis once it is flushed and not updated again (a
    /// record with unflushed updates never expires); default [`DEFAULT_RECORD_TTL`].
    pub record_ttl: Duration,
    /// The flusher lease; default [`DEFAULT_FLUSH_LEASE`]; must exceed `flush_interval`.
    pub flush_lease: Duration,
    /// How `player.db` is opened.
    pub shard: ShardConfig,
}

impl Default for PlayerConfig {
    fn default() -> Self {
        Self {
            mode: WriteMode::default(),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            flush_batch: DEFAULT_FLUSH_BATCH,
            flush_threshold: DEFAULT_FLUSH_THRESHOLD,
            record_ttl: DEFAULT_RECORD_TTL,
            flush_lease: DEFAULT_FLUSH_LEASE,
            shard: ShardConfig::default(),
        }
    }
}

/// A point in the game world.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Position {
    /// East-west.
    pub x: f32,
    /// Up-down.
    pub y: f32,
    /// North-south.
    pub z: f32,
}

/// A change to a player's state; each field present replaces the stored one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateUpdate {
    /// New position.
    pub position: Option<Position>,
    /// New heading in degrees.
    pub rotation: Option<f32>,
    /// New health.
    pub health: Option<u32>,
    /// New attributes.
    pub attributes: Option<Vec<u8>>,
}

/// A player's stored state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlayerState {
    /// Whose state.
    pub player_id: Uuid,
    /// Where the player is.
    pub position: Position,
    /// Heading in degrees.
    pub rotation: f32,
    /// Health.
    pub health: u32,
    /// Game-defined attributes.
    pub attributes: Vec<u8>,
    /// Grows with every accepted update; 0 before the first.
    pub version: u64,
    /// When the last update was accepted (milliseconds since the Unix epoch).
    pub updated_at_ms: u64,
}

/// Counters of the write path, for metrics.
#[derive(Debug, Default)]
pub struct PlayerStats {
    /// Updates acknowledged.
    pub updates_accepted: AtomicU64,
    /// Flush transactions committed.
    pub flushes: AtomicU64,
    /// Rows written by the flusher.
    pub rows_flushed: AtomicU64,
    /// Players in the last flush transaction.
    pub last_flush_rows: AtomicU64,
    /// Duration of the last flush transaction, in microseconds.
    pub last_flush_micros: AtomicU64,
    /// Records seeded into the buffer from SQLite (first update after a cold start).
    pub seeds: AtomicU64,
    /// Flush passes that found the buffer behind `player.db` and healed it (see [`flusher`]).
    pub buffer_heals: AtomicU64,
}

/// The player domain: cheap to clone.
#[derive(Clone)]
pub struct Players {
    inner: Arc<Inner>,
}

struct Inner {
    shard: Shard,
    kv: Kv,
    clock: SharedClock,
    config: PlayerConfig,
    stats: PlayerStats,
    /// Wakes the flusher early when the buffer grows past a batch.
    flush_wanted: Notify,
}

impl std::fmt::Debug for Players {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Players").field("mode", &self.inner.config.mode).finish_non_exhaustive()
    }
}

impl Players {
    /// Opens `player.db` at `path`, running its migrations.
    ///
    /// # Errors
    /// The shard cannot be opened or migrated, or the configuration is inconsistent.
    pub async fn open(
        path: impl Into<std::path::PathBuf>,
        kv: Kv,
        clock: SharedClock,
        config: PlayerConfig,
    ) -> Result<Players, PlayerError> {
        let players = Players::open_beside_gateways(path, kv, clock, config).await?;
        if players.inner.config.mode == WriteMode::Buffered {
            // Before the first seed begins the buffer with it: a deployment that wrote directly
            // until now has moved players past the watermark.
            store::raise_watermark_to_stored(&players.inner.shard).await?;
        }
        match players.inner.config.mode {
            WriteMode::Direct => players.before_direct_writes().await?,
            WriteMode::Buffered => players.after_direct_writes().await?,
        }
        Ok(players)
    }

    /// Before direct writes begin: notes in `player.db` that a buffer is behind them from now on,
    /// writes what a buffered deployment left unflushed in this store, so no acknowledged update
    /// waits there under the direct writes to come, and drops the buffer's records. (The note is
    /// for a buffer this process cannot reach, in another store.)
    ///
    /// A buffer's records outlive direct writes otherwise: their versions come from the buffer's
    /// counter, shared by all players and far above the per-player versions direct writes give,
    /// so after a switch back to buffered, reads would show them and the next flush would write
    /// their older fields over the direct ones.
    async fn before_direct_writes(&self) -> Result<(), PlayerError> {
        store::mark_buffer_behind(&self.inner.shard).await?;
        let stats = self.inner.kv.buffer_stats(NAMESPACE).await?;
        // Only then: a flush pass would begin a buffer that was never begun.
        if stats.n_dirty + stats.n_claimed > 0 {
            let flushed = self.flush_now().await?;
            tracing::info!(
                rows = flushed.rows_written,
                "direct mode: wrote what the player-state buffer held"
            );
        }
        let dropped = self.inner.kv.buffer_drop_all(NAMESPACE).await?;
        if dropped > 0 {
            tracing::info!(records = dropped, "direct mode: dropped the player-state buffer");
        }
        Ok(())
    }

    /// After direct writes (noted by [`Players::before_direct_writes`], in whichever store they
    /// ran): drops every buffered record, all older than those writes, and raises the version
    /// counter to `player.db`'s highest, so the first updates get versions above the direct ones
    /// and the first flush pass finds nothing to heal.
    async fn after_direct_writes(&self) -> Result<(), PlayerError> {
        if !store::take_buffer_behind(&self.inner.shard).await? {
            return Ok(());
        }
        let kv = &self.inner.kv;
        let watermark = store::version_watermark(&self.inner.shard).await?;
        let dropped = kv.buffer_drop_all(NAMESPACE).await?;
        kv.buffer_raise_version(NAMESPACE, watermark).await?;
        tracing::info!(records = dropped, watermark, "after direct writes: dropped the player-state buffer");
        Ok(())
    }

    /// Opens `player.db` for an operator's flush beside running gateways, whatever their write
    /// mode: unlike [`Players::open`], it leaves the notes of a switch between modes alone. Those
    /// are for the gateways' own starts; an operator's tool configured with the other mode would
    /// otherwise take a note meant for the next buffered gateway (whose buffer would then begin
    /// below the direct writes and be dropped by the first flush) or drop a live buffer.
    ///
    /// # Errors
    /// The shard cannot be opened or migrated, or the configuration is inconsistent.
    pub async fn open_beside_gateways(
        path: impl Into<std::path::PathBuf>,
        kv: Kv,
        clock: SharedClock,
        config: PlayerConfig,
    ) -> Result<Players, PlayerError> {
        if config.flush_lease <= config.flush_interval || config.flush_batch == 0 {
            return Err(PlayerError::Config(
                "flush_lease must exceed flush_interval and flush_batch be positive".into(),
            ));
        }
        let shard = Shard::open(path, &config.shard, store::MIGRATIONS).await?;
        let inner =
            Inner { shard, kv, clock, config, stats: PlayerStats::default(), flush_wanted: Notify::new() };
        Ok(Players { inner: Arc::new(inner) })
    }

    /// The shard this domain owns.
    pub fn shard(&self) -> &Shard {
        &self.inner.shard
    }

    /// The configuration in force.
    pub fn config(&self) -> &PlayerConfig {
        &self.inner.config
    }

    /// Counters of the write path.
    pub fn stats(&self) -> &PlayerStats {
        &self.inner.stats
    }

    /// Sizes of the buffer (dirty and claimed players, oldest unflushed update).
    ///
    /// # Errors
    /// [`PlayerError::Store`] when the key-value store is down.
    pub async fn buffer_stats(&self) -> Result<kv::BufferStats, PlayerError> {
        Ok(self.inner.kv.buffer_stats(NAMESPACE).await?)
    }

    /// Applies `update` to `player_id`'s state and returns the new version.
    ///
    /// # Errors
    /// [`PlayerError::InvalidValue`] for values outside the rules (nothing changes);
    /// [`PlayerError::Store`] when the key-value store is down (nothing is acknowledged).
    pub async fn update(&self, player_id: Uuid, update: StateUpdate) -> Result<u64, PlayerError> {
        validate(&update)?;
        let update = with_positive_zeros(update);
        let now_ms = self.inner.clock.now_ms();
        // The rare and slow paths are boxed, so the future of the hot one (an update buffered in
        // Redis) stays small: callers await it once per update.
        let version = match self.inner.config.mode {
            WriteMode::Direct => {
                Box::pin(store::update_direct(&self.inner.shard, player_id, update, now_ms)).await?
            }
            WriteMode::Buffered => self.update_buffered(player_id, &update, now_ms).await?,
        };
        self.inner.stats.updates_accepted.fetch_add(1, Ordering::Relaxed);
        Ok(version)
    }

    async fn update_buffered(
        &self,
        player_id: Uuid,
        update: &StateUpdate,
        now_ms: u64,
    ) -> Result<u64, PlayerError> {
        let kv = &self.inner.kv;
        let mut id = Uuid::encode_buffer();
        let id = &*player_id.hyphenated().encode_lower(&mut id);
        // Each retry follows seeding the record from SQLite. Three tries, since a flusher healing
        // a buffer that came back with older data drops every record, a freshly seeded one too
        // (see `flusher::heal`).
        for _ in 0..3 {
            let fields = record::packed_update_fields(update);
            match kv.buffer_update_packed(NAMESPACE, id, fields, now_ms).await? {
                BufferUpdate::Applied { version, n_dirty } => {
                    if n_dirty >= self.inner.config.flush_threshold as u64 {
                        self.inner.flush_wanted.notify_one();
                    }
                    return Ok(version);
                }
                BufferUpdate::NotLoaded => Box::pin(self.seed(player_id)).await?,
            }
        }
        Err(PlayerError::Internal("the buffered record vanished right after seeding".into()))
    }

    /// Loads a player's state from SQLite into the buffer, so buffered versions continue from the
    /// stored one. Begins the buffer first if it is new, at `player.db`'s watermark: versions
    /// continue above every stored one at once, and a snapshot of the buffer taken before its
    /// first flush pass is still told apart from a store that lost its data (see
    /// `flusher::heal`).
    async fn seed(&self, player_id: Uuid) -> Result<(), PlayerError> {
        let (stored, watermark) = store::load_with_watermark(&self.inner.shard, player_id).await?;
        self.inner.kv.buffer_begin(NAMESPACE, watermark).await?;
        let state = stored.unwrap_or(PlayerState { player_id, ..PlayerState::default() });
        let created = self
            .inner
            .kv
            .buffer_seed(
                NAMESPACE,
                &player_id.to_string(),
                record::all_fields(&state),
                self.inner.config.record_ttl,
            )
            .await?;
        if created {
            self.inner.stats.seeds.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `player_id`'s newest acknowledged state, or `None` if nothing was ever stored.
    ///
    /// # Errors
    /// [`PlayerError::Store`] when the key-value store is down (buffered mode).
    pub async fn get(&self, player_id: Uuid) -> Result<Option<PlayerState>, PlayerError> {
        if self.inner.config.mode == WriteMode::Buffered
            && let Some(fields) = self.inner.kv.buffer_get(NAMESPACE, &player_id.to_string()).await?
        {
            let state = record::parse(player_id, &fields)?;
            // A record seeded for a player who never stored anything is not a state.
            return Ok((state.version > 0).then_some(state));
        }
        store::load(&self.inner.shard, player_id).await
    }

    /// Writes every buffered change to SQLite now, whoever holds the flusher lease, and reports
    /// what it wrote. For shutdown and ops; safe beside a running flusher (older versions never
    /// overwrite newer ones).
    ///
    /// Changes another flusher has claimed but not yet committed are put back and written here
    /// too, those it claims while this runs as well, so once this returns every update
    /// acknowledged before the call is in SQLite (what an online backup relies on).
    ///
    /// # Errors
    /// The store or the shard failed; what was claimed stays claimed and is recovered later.
    pub async fn flush_now(&self) -> Result<flusher::FlushReport, PlayerError> {
        let called_ms = self.inner.clock.now_ms();
        let kv = &self.inner.kv;
        kv.buffer_recover(NAMESPACE).await?;
        store::raise_watermark_to_stored(&self.inner.shard).await?;
        let mut report = flusher::flush_all(self, None).await?;
        // A flusher beside this one may have claimed what the recovery put back before this pass
        // could, and may not have committed it yet: put it back and write it here.
        while kv.buffer_stats(NAMESPACE).await?.oldest_dirty_ms.is_some_and(|oldest| oldest <= called_ms) {
            kv.buffer_recover(NAMESPACE).await?;
            report.add(flusher::flush_all(self, None).await?);
        }
        Ok(report)
    }
}

/// `update` with every -0.0 made 0.0. SQLite keeps a REAL that is a whole number as an integer,
/// so `player.db` gives back a -0.0 as 0.0; the buffer would give back -0.0 until the flush.
fn with_positive_zeros(mut update: StateUpdate) -> StateUpdate {
    let positive = |value: f32| if value == 0.0 { 0.0 } else { value };
    if let Some(position) = &mut update.position {
        *position = Position { x: positive(position.x), y: positive(position.y), z: positive(position.z) };
    }
    update.rotation = update.rotation.map(positive);
    update
}

fn validate(update: &StateUpdate) -> Result<(), PlayerError> {
    let invalid = |message: String| Err(PlayerError::InvalidValue(message));
    if let Some(position) = update.position {
        for (axis, value) in [("x", position.x), ("y", position.y), ("z", position.z)] {
            if !value.is_finite() || value.abs() > COORDINATE_MAX_ABS {
                return invalid(format!("position.{axis} must be finite and within ±{COORDINATE_MAX_ABS}"));
            }
        }
    }
    if let Some(rotation) = update.rotation
        && (!rotation.is_finite() || rotation.abs() > ROTATION_MAX_ABS_DEGREES)
    {
        return invalid(format!("rotation must be finite and within ±{ROTATION_MAX_ABS_DEGREES} degrees"));
    }
    if let Some(health) = update.health
        && health > HEALTH_MAX
    {
        return invalid(format!("health must be at most {HEALTH_MAX}"));
    }
    if let Some(attributes) = &update.attributes
        && attributes.len() > ATTRIBUTES_MAX_BYTES
    {
        return invalid(format!("attributes must be at most {ATTRIBUTES_MAX_BYTES} bytes"));
    }
    if update == &StateUpdate::default() {
        return invalid("an update changes at least one field".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_the_rules_are_refused() {
        let check = |update: StateUpdate, ok: bool| assert_eq!(validate(&update).is_ok(), ok, "{update:?}");
        let at =
            |x: f32| StateUpdate { position: Some(Position { x, y: 0.0, z: 0.0 }), ..StateUpdate::default() };
        check(at(1.0), true);
        check(at(-COORDINATE_MAX_ABS), true);
        check(at(f32::NAN), false);
        check(at(f32::INFINITY), false);
        check(at(f32::NEG_INFINITY), false);
        check(at(COORDINATE_MAX_ABS * 2.0), false);
        check(StateUpdate { rotation: Some(f32::NAN), ..StateUpdate::default() }, false);
        check(StateUpdate { rotation: Some(361.0), ..StateUpdate::default() }, false);
        check(StateUpdate { rotation: Some(-180.0), ..StateUpdate::default() }, true);
        check(StateUpdate { health: Some(HEALTH_MAX), ..StateUpdate::default() }, true);
        check(StateUpdate { health: Some(HEALTH_MAX + 1), ..StateUpdate::default() }, false);
        check(
            StateUpdate { attributes: Some(vec![0; ATTRIBUTES_MAX_BYTES]), ..StateUpdate::default() },
            true,
        );
        check(
            StateUpdate { attributes: Some(vec![0; ATTRIBUTES_MAX_BYTES + 1]), ..StateUpdate::default() },
            false,
        );
        check(StateUpdate::default(), false);
    }
}
