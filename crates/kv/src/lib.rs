//! Typed key-value operations for the game backend: sessions, rate-limit counters and pub/sub between
//! gateway processes, over Redis or over an embedded in-process store.
//!
//! This crate owns:
//! - the key layout in Redis and the commands and scripts run on it:
//!   - `{prefix}session:{token_hash}` (STRING: the session record) and
//!     `{prefix}account-sessions:{account_id}` (ZSET of token hashes, scored in the order they
//!     were stored; earlier releases kept a SET, which every script touching it converts first,
//!     see [`Kv::session_put`]);
//!   - `{prefix}counter:{key}` (STRING: a fixed-window count);
//!   - buffered records of namespace `{ns}` (see [`Kv::buffer_update`]): `{prefix}{ns}:rec:{id}` (HASH:
//!     the record's fields, with its version in `v`, last update time in `t` and, while it is dirty
//!     and not claimed, the marker `d`), `{prefix}{ns}:dirty` (ZSET: member id, score = ms when it
//!     first became dirty), `{prefix}{ns}:claimed` (ZSET: member id, score = dirty-since ms, the
//!     batch a flusher is writing; earlier releases kept it as the HASH `{prefix}{ns}:claim`,
//!     which recovery still reads), `{prefix}{ns}:claim-generation` (STRING: how many recoveries
//!     the claim has seen, see [`BufferClaim::generation`]), `{prefix}{ns}:version` (STRING: the
//!     last version handed out in the namespace), `{prefix}{ns}:baseline` (STRING: the number
//!     the buffer was begun with, see [`Kv::buffer_begin`]; the release before kept only a mark,
//!     `{prefix}{ns}:flushed`, which is still read);
//!   - `{prefix}lease:{name}` (STRING: the holder of a lease, with the lease's TTL);
//!   - waiting queues `{prefix}{queue}:tickets`, `{prefix}{queue}:q:{mode}` and
//!     `{prefix}{queue}:away` (see [`Kv::queue_join`] and the `queue` module);
//!   - pub/sub channels `{prefix}{channel}`;
//! - the embedded store ([`Kv::embedded`]) that gives the same semantics in one process, guarded by an
//!   OS file lock so two processes never run on one data directory with separate embedded stores;
//! - reconnecting: commands go through `redis::aio::ConnectionManager`, and each [`Subscription`]
//!   keeps its own pub/sub connection alive in a background task.
//!
//! - the gathering of concurrent [`Kv::buffer_update`] calls into one Redis pipeline per batch, done by
//!   one background task per Redis `Kv` (it ends when the last clone is dropped).
//!
//! It never does:
//! - domain logic: session records are opaque bytes owned by the auth crate, counters are plain
//!   fixed-window counts, buffered records are maps of text fields whose meaning (and flushing to
//!   SQLite) belongs to the domain crates, and payloads are opaque bytes;
//! - SQLite or any other durable storage;
//! - let another crate issue raw Redis commands: no connection, client or command type leaks out of
//!   this crate, so "only the kv crate speaks Redis" holds by construction.
//!
//! The `testing` cargo feature adds the `kv::testing` module, a harness that starts, stops and
//! restarts a throwaway `redis-server` for integration tests (other crates enable it in their
//! `[dev-dependencies]`: `kv = { workspace = true, features = ["testing"] }`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod embedded;
mod queue;
mod redis_backend;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use embedded::Embedded;
pub use queue::{QueueJoin, QueueStats, QueueTicket};
use redis_backend::RedisBackend;

/// How many messages a [`Subscription`] buffers before newer ones are dropped (with a warning).
pub const SUBSCRIPTION_BUFFER: usize = 1024;
/// How many bytes of payload a [`Subscription`] buffers before newer messages are dropped (with a
/// warning), whatever their number: a bus message can carry one event to thousands of players, so
/// a count alone would let a stalled consumer hold gigabytes. A single larger message is still
/// taken when nothing else waits.
pub const SUBSCRIPTION_BUFFER_BYTES: usize = 64 << 20;

/// One field of a buffered record: (name, value).
pub type Field = (String, String);

/// The fields of one buffered update, packed into one buffer as they are written: the hot path's
/// form of `Vec<Field>`, one allocation for the whole update instead of two per field, handed to
/// Redis without another copy ([`Kv::buffer_update_packed`]).
#[derive(Debug, Default)]
pub struct PackedFields {
    /// Each name and value as its length (native-endian `usize`) and its UTF-8 bytes.
    packed: Vec<u8>,
    n_fields: usize,
}

impl PackedFields {
    /// An empty set with room for names and values of `text_bytes` bytes in all, their lengths, and
    /// the record id the store appends, so the buffer does not grow on the way.
    #[must_use]
    pub fn with_capacity(text_bytes: usize) -> PackedFields {
        PackedFields { packed: Vec::with_capacity(text_bytes + PACKED_ROOM_BYTES), n_fields: 0 }
    }

    /// Adds a field whose value is written by `value` (as `format_args!` gives it), with no
    /// string of its own.
    pub fn push(&mut self, name: &str, value: fmt::Arguments<'_>) {
        put_text(&mut self.packed, name.as_bytes());
        let at = self.packed.len();
        self.packed.extend_from_slice(&[0; LENGTH_BYTES]);
        // Writing into a vector cannot fail.
        let _ = fmt::Write::write_fmt(&mut TextSink(&mut self.packed), value);
        let len = self.packed.len() - at - LENGTH_BYTES;
        self.packed[at..at + LENGTH_BYTES].copy_from_slice(&len.to_ne_bytes());
        self.n_fields += 1;
    }

    /// Adds a field whose value is already text.
    pub fn push_str(&mut self, name: &str, value: &str) {
        put_text(&mut self.packed, name.as_bytes());
        put_text(&mut self.packed, value.as_bytes());
        self.n_fields += 1;
    }

    /// How many fields there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.n_fields
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.n_fields == 0
    }

    /// The (name, value) pairs, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut texts = unpack_texts(&self.packed)
            // Every text was pushed as a `&str` or written by `fmt`: always UTF-8.
            .map(|text| std::str::from_utf8(text).unwrap_or_default());
        std::iter::from_fn(move || Some((texts.next()?, texts.next()?)))
    }
}

impl From<&[Field]> for PackedFields {
    fn from(fields: &[Field]) -> PackedFields {
        let text_bytes: usize = fields.iter().map(|(name, value)| name.len() + value.len()).sum();
        let mut packed = PackedFields::with_capacity(text_bytes + 2 * fields.len() * LENGTH_BYTES);
        for (name, value) in fields {
            packed.push_str(name, value);
        }
        packed
    }
}

/// The size of a packed text's length.
const LENGTH_BYTES: usize = std::mem::size_of::<usize>();
/// What [`PackedFields::with_capacity`] adds to the texts' size: eight lengths (four fields) and an
/// id of 40 bytes with its length.
const PACKED_ROOM_BYTES: usize = 9 * LENGTH_BYTES + 40;

fn put_text(packed: &mut Vec<u8>, text: &[u8]) {
    packed.extend_from_slice(&text.len().to_ne_bytes());
    packed.extend_from_slice(text);
}

/// The texts of a buffer written by [`put_text`], in order.
fn unpack_texts(mut packed: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = packed.split_first_chunk::<LENGTH_BYTES>()?;
        let (text, rest) = rest.split_at(usize::from_ne_bytes(*len));
        packed = rest;
        Some(text)
    })
}

/// `fmt::Write` onto the end of a byte vector.
struct TextSink<'a>(&'a mut Vec<u8>);

impl fmt::Write for TextSink<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// The outcome of a buffered update ([`Kv::buffer_update`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferUpdate {
    /// Applied: the record's new version (its "v" field after increment) and how many records are
    /// dirty now.
    Applied {
        /// The record's `v` field after the increment.
        version: u64,
        /// The size of the namespace's dirty set after this update (claimed records not counted).
        n_dirty: u64,
    },
    /// The record is not in the buffer (never seeded, expired, or Redis restarted): nothing was
    /// changed; seed it and retry.
    NotLoaded,
}

/// What one [`Kv::buffer_claim`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferClaim {
    /// The claimed records, oldest first.
    pub records: Vec<ClaimedRecord>,
    /// The claim's generation, to hand back to [`Kv::buffer_release`]. Every
    /// [`Kv::buffer_recover`] starts a new one: it hands the claim's ids to whoever claims them
    /// next, so a release from before it must leave them alone.
    pub generation: u64,
}

/// A record taken by a flusher ([`Kv::buffer_claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedRecord {
    /// The record's id within its namespace.
    pub id: String,
    /// The record's fields at the moment of the claim (including `v` and `t`), in no particular order.
    pub fields: Vec<Field>,
    /// When the record first became dirty (the `now_ms` of the update that dirtied it).
    pub dirty_since_ms: u64,
}

/// A buffer's version counter ([`Kv::buffer_version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferVersion {
    /// The last version the namespace handed out (0 before the first).
    pub last: u64,
    /// The number the buffer was begun with ([`Kv::buffer_begin`]): `None` in a store that lost
    /// its data and has not been begun since; the old number in one that came back with older
    /// data.
    pub baseline: Option<u64>,
}

/// Sizes of a buffer ([`Kv::buffer_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferStats {
    /// Records in the dirty set: updated and not yet claimed.
    pub n_dirty: u64,
    /// Records in the claim: taken by a flusher and not yet released.
    pub n_claimed: u64,
    /// Records dirty or claimed, each counted once: a record updated while it is claimed is in
    /// both, so this is less than `n_dirty + n_claimed` then.
    pub n_buffered: u64,
    /// The oldest dirty_since_ms over dirty and claimed records.
    pub oldest_dirty_ms: Option<u64>,
}

/// The fields [`Kv::buffer_update`] maintains itself: the version, the time of the last update and
/// (in Redis, never shown to callers) the dirty marker.
const RESERVED_FIELDS: [&str; 3] = ["v", "t", redis_backend::DIRTY_MARKER];

/// Most members of an account's sorted set of sessions that storing a session looks at to drop
/// those that ended: all of a smaller set, a random sample of a larger one. Never fewer than the
/// account's cap ([`session_prune_max`]), so a set within its cap is always looked at whole and a
/// session that ended never counts against the cap in place of a live one being evicted.
const SESSION_SET_PRUNE_MAX: usize = 64;

/// How many members of an account's set storing a session looks at, for a cap of
/// `max_per_account` sessions.
pub(crate) fn session_prune_max(max_per_account: usize) -> usize {
    SESSION_SET_PRUNE_MAX.max(max_per_account)
}

/// A Redis setting the buffer's or the sessions' guarantees do not hold under
/// ([`Kv::risky_settings`]). Its `Display` says what can go wrong and what to set instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RiskySetting {
    /// An `allkeys-*` `maxmemory-policy` may evict a dirty record (it has no TTL) after its update
    /// was acknowledged and before it is flushed, or the dirty set while its records stay dirty.
    EvictsKeysWithoutTtl {
        /// The policy, e.g. `allkeys-lru`.
        policy: String,
    },
    /// A `volatile-*` `maxmemory-policy` may evict an account's set of sessions (it has a TTL)
    /// while the sessions in it stay, so logging out everywhere or disabling the account misses
    /// them; it may also evict login-throttling counters and leases before their time.
    EvictsKeysWithTtl {
        /// The policy, e.g. `volatile-lru`.
        policy: String,
    },
    /// RDB snapshots without an append-only file: a restart loads the last snapshot, up to its
    /// interval old. Sessions revoked since the snapshot come back. Buffered records come back
    /// older than what was flushed since: a flusher notices at its next pass (the version counter
    /// is behind what it wrote) and drops them, so they are read from durable storage again; until
    /// then reads show the older state, and the updates acknowledged meanwhile are lost. Without
    /// persistence a restart loses the records instead, and they are read from durable storage at
    /// once; an append-only file bounds what comes back stale to about its fsync interval.
    SnapshotsWithoutAppendOnlyFile {
        /// The `save` setting, e.g. `3600 1 300 100 60 10000`.
        save: String,
    },
}

impl fmt::Display for RiskySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RiskySetting::EvictsKeysWithoutTtl { policy } => write!(
                f,
                "Redis's maxmemory-policy {policy} may evict keys without a TTL, which could drop player \
                 state after it was acknowledged and before it is flushed; set it to noeviction"
            ),
            RiskySetting::EvictsKeysWithTtl { policy } => write!(
                f,
                "Redis's maxmemory-policy {policy} may evict keys with a TTL: an account's list of \
                 sessions, after which logging out everywhere or disabling the account leaves its \
                 sessions valid, login-throttling counters and leases; set it to noeviction"
            ),
            RiskySetting::SnapshotsWithoutAppendOnlyFile { save } => write!(
                f,
                "Redis saves RDB snapshots (save \"{save}\") without an append-only file: after a restart \
                 it would bring back sessions revoked since the snapshot, and player state older than \
                 player.db until the next flush; run it without persistence (save \"\") or with \
                 appendonly yes"
            ),
        }
    }
}

/// Errors of the key-value store.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Redis could not be reached or answered with an error.
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    /// Another process already holds the embedded store of this data directory.
    #[error("the embedded store at {0} is already in use by another process")]
    EmbeddedInUse(PathBuf),
    /// IO error creating the embedded store's lock file.
    #[error("embedded store lock: {0}")]
    Io(#[from] std::io::Error),
    /// The Redis server is older than the commands this crate's scripts use.
    #[error("Redis {found} is too old: this release needs Redis {MIN_REDIS_MAJOR}.0 or later")]
    UnsupportedRedis {
        /// The version Redis reported.
        found: String,
    },
}

/// The oldest Redis major version this crate runs on: its scripts set expiries with `PEXPIRE`'s
/// `NX` and `GT` options, which Redis 7.0 added. Inside a script, an older Redis would fail such
/// a command after the script's earlier writes were made (a counter left without its expiry).
pub const MIN_REDIS_MAJOR: u32 = 7;

/// A handle on the key-value store (Redis or embedded). Cloning is cheap and shares the connection or
/// the embedded store.
#[derive(Clone)]
pub struct Kv {
    backend: Backend,
}

/// The two stores behind [`Kv`]; each variant is an `Arc`, so cloning a `Kv` is cheap.
#[derive(Clone)]
enum Backend {
    Redis(Arc<RedisBackend>),
    Embedded(Arc<Embedded>),
}

impl fmt::Debug for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Redis(redis) => {
                f.debug_struct("Kv").field("backend", &"redis").field("key_prefix", &redis.prefix()).finish()
            }
            Backend::Embedded(embedded) => f
                .debug_struct("Kv")
                .field("backend", &"embedded")
                .field("key_prefix", &embedded.prefix())
                .finish(),
        }
    }
}

impl Kv {
    /// Connects to Redis at `url` (`redis://host:port[/db]`); every key and channel gets `key_prefix`
    /// in front (e.g. `"game:"`).
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if the URL is invalid or the first connection cannot be made within
    /// about 5 s. Later outages are not fatal: commands fail with `Unavailable` while Redis is away and
    /// work again once it is back.
    pub async fn connect_redis(url: &str, key_prefix: &str) -> Result<Kv, KvError> {
        let redis = RedisBackend::connect(url, key_prefix).await?;
        Ok(Kv { backend: Backend::Redis(Arc::new(redis)) })
    }

    /// The settings of this Redis under which acknowledged buffered state can be lost or come back
    /// older than what was flushed, or revoked sessions stay valid (see [`RiskySetting`]); none for the embedded store, and none
    /// that Redis does not tell (a Redis that refuses `CONFIG GET`).
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis cannot be reached.
    pub async fn risky_settings(&self) -> Result<Vec<RiskySetting>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.risky_settings().await,
            Backend::Embedded(_) => Ok(Vec::new()),
        }
    }

    /// An in-process store for running without Redis, with the same semantics as the Redis backend.
    ///
    /// Takes an exclusive OS file lock on `lock_dir/embedded-kv.lock` (creating the directory if
    /// missing) so two processes can never run on one data directory with separate embedded stores.
    /// The lock is held as long as any clone of this `Kv` lives. Data lives in memory only and is gone
    /// when the last clone is dropped. The store is private to this `Kv` and its clones, so
    /// `key_prefix` only names the pub/sub channels.
    ///
    /// # Errors
    /// [`KvError::EmbeddedInUse`] if another process (or another `Kv` in this one) holds the lock;
    /// [`KvError::Io`] if the directory or lock file cannot be created.
    pub fn embedded(lock_dir: &Path, key_prefix: &str) -> Result<Kv, KvError> {
        let embedded = Embedded::open(lock_dir, key_prefix)?;
        Ok(Kv { backend: Backend::Embedded(Arc::new(embedded)) })
    }

    /// True for the embedded store.
    pub fn is_embedded(&self) -> bool {
        matches!(self.backend, Backend::Embedded(_))
    }

    /// One round trip to check the store answers (`PING`). Embedded: always `Ok`.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn ping(&self) -> Result<(), KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.ping().await,
            Backend::Embedded(_) => Ok(()),
        }
    }

    /// Stores the session under `session:{token_hash}` with TTL `idle_ttl`, and adds `token_hash` to
    /// the sorted set `account-sessions:{account_id}` as its newest member, whose TTL is raised to
    /// at least `index_ttl` (never lowered). First drops from the set sessions that have ended (of
    /// at most `SESSION_SET_PRUNE_MAX` members, or the cap if larger, looked at), then, if the
    /// account would hold more than `max_per_account` sessions (at least one) with this one,
    /// deletes its oldest sessions until it would not. Returns the token hashes of the sessions it so deleted that still
    /// existed, for the caller to announce. One round trip (a Lua script on Redis).
    ///
    /// An account set left as a plain SET by an earlier release is converted first, atomically,
    /// its members counting as older than any session stored since (here and in every other
    /// operation on the set), so an upgrade needs no manual step.
    ///
    /// `token_hash` is an opaque hex string and `record` opaque bytes owned by the auth crate.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn session_put(
        &self,
        token_hash: &str,
        account_id: &str,
        record: &[u8],
        idle_ttl: Duration,
        index_ttl: Duration,
        max_per_account: usize,
    ) -> Result<Vec<String>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => {
                redis.session_put(token_hash, account_id, record, idle_ttl, index_ttl, max_per_account).await
            }
            Backend::Embedded(embedded) => {
                Ok(embedded.session_put(token_hash, account_id, record, idle_ttl, index_ttl, max_per_account))
            }
        }
    }

    /// Replaces the session's record and resets its TTL to `idle_ttl`, only if the session exists
    /// (`SET ... XX`), so a write-back never brings a deleted session back. Returns whether it
    /// existed.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn session_update(
        &self,
        token_hash: &str,
        record: &[u8],
        idle_ttl: Duration,
    ) -> Result<bool, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.session_update(token_hash, record, idle_ttl).await,
            Backend::Embedded(embedded) => Ok(embedded.session_update(token_hash, record, idle_ttl)),
        }
    }

    /// Replaces the session `old_token_hash` of the account with the session `new_token_hash`,
    /// atomically (a Lua script on Redis): if the old session exists, deletes it and removes it from
    /// the account's set, then stores the new one as [`Kv::session_put`] does, but in the old one's
    /// place in the account's order (it continues the same login) and ending no other session. If
    /// the old session is gone, changes nothing but dropping it from the set. Returns whether it
    /// replaced it, so of concurrent rotations of one session exactly one succeeds, and a rotation
    /// never outlives a [`Kv::sessions_delete_all`] that ran first.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer. After an error the rotation may or may
    /// not have happened.
    pub async fn session_rotate(
        &self,
        old_token_hash: &str,
        account_id: &str,
        new_token_hash: &str,
        record: &[u8],
        idle_ttl: Duration,
        index_ttl: Duration,
    ) -> Result<bool, KvError> {
        match &self.backend {
            Backend::Redis(redis) => {
                redis
                    .session_rotate(old_token_hash, account_id, new_token_hash, record, idle_ttl, index_ttl)
                    .await
            }
            Backend::Embedded(embedded) => Ok(embedded.session_rotate(
                old_token_hash,
                account_id,
                new_token_hash,
                record,
                idle_ttl,
                index_ttl,
            )),
        }
    }

    /// Reads the session and, if present, resets its TTL to `idle_ttl` (sliding expiry), in one round
    /// trip (`GETEX key PX ms`). `None` if there is no such session or it expired. A caller whose
    /// record ends sooner than `idle_ttl` shortens the TTL after with [`Kv::session_expire_within`].
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn session_get_touch(
        &self,
        token_hash: &str,
        idle_ttl: Duration,
    ) -> Result<Option<Vec<u8>>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.session_get_touch(token_hash, idle_ttl).await,
            Backend::Embedded(embedded) => Ok(embedded.session_get_touch(token_hash, idle_ttl)),
        }
    }

    /// Shortens the session's TTL to `ttl` if it is longer (`PEXPIRE ... LT`); a missing session
    /// stays missing. For a session whose absolute end comes before its idle TTL would run out.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn session_expire_within(&self, token_hash: &str, ttl: Duration) -> Result<(), KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.session_expire_within(token_hash, ttl).await,
            Backend::Embedded(embedded) => {
                embedded.session_expire_within(token_hash, ttl);
                Ok(())
            }
        }
    }

    /// The time left before the session's key expires (`PTTL`); `None` if there is no such session.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn session_ttl(&self, token_hash: &str) -> Result<Option<Duration>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.session_ttl(token_hash).await,
            Backend::Embedded(embedded) => Ok(embedded.session_ttl(token_hash)),
        }
    }

    /// Deletes one session and removes it from its account's set. Returns whether the session existed.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn session_delete(&self, token_hash: &str, account_id: &str) -> Result<bool, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.session_delete(token_hash, account_id).await,
            Backend::Embedded(embedded) => Ok(embedded.session_delete(token_hash, account_id)),
        }
    }

    /// Deletes every session of the account, atomically (a Lua script on Redis), and the account's
    /// set. Returns the token hashes whose session key still existed, in no particular order.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn sessions_delete_all(&self, account_id: &str) -> Result<Vec<String>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.sessions_delete_all(account_id).await,
            Backend::Embedded(embedded) => Ok(embedded.sessions_delete_all(account_id)),
        }
    }

    /// Counts one hit on the fixed-window counter `counter:{key}` (`INCR`) and, when this call created
    /// it, sets its expiry to `window` (`PEXPIRE ... NX`); one round trip. Returns the new count.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn counter_hit(&self, key: &str, window: Duration) -> Result<u64, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.counter_hit(key, window).await,
            Backend::Embedded(embedded) => Ok(embedded.counter_hit(key, window)),
        }
    }

    /// Counts one hit on each of the fixed-window counters `counters` (key, limit), all or none:
    /// only if every one is below its limit; a counter this creates expires after `window`.
    /// Atomic (a Lua script on Redis), so concurrent callers never take more than a limit's worth
    /// of hits between them. Returns whether it counted.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn counters_hit_below(
        &self,
        counters: &[(&str, u64)],
        window: Duration,
    ) -> Result<bool, KvError> {
        if counters.is_empty() {
            return Ok(true);
        }
        match &self.backend {
            Backend::Redis(redis) => redis.counters_hit_below(counters, window).await,
            Backend::Embedded(embedded) => Ok(embedded.counters_hit_below(counters, window)),
        }
    }

    /// Takes back one hit: decrements the counter unless it is absent or zero, keeping its expiry.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn counter_undo_hit(&self, key: &str) -> Result<(), KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.counter_undo_hit(key).await,
            Backend::Embedded(embedded) => {
                embedded.counter_undo_hit(key);
                Ok(())
            }
        }
    }

    /// Current value of the counter (0 if absent or expired).
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn counter_get(&self, key: &str) -> Result<u64, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.counter_get(key).await,
            Backend::Embedded(embedded) => Ok(embedded.counter_get(key)),
        }
    }

    /// Deletes the counter.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn counter_reset(&self, key: &str) -> Result<(), KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.counter_reset(key).await,
            Backend::Embedded(embedded) => {
                embedded.counter_reset(key);
                Ok(())
            }
        }
    }

    /// Publishes `payload` on channel `{prefix}{channel}`. Returns the number of receivers Redis
    /// reports (embedded: the local subscriptions).
    ///
    /// Delivery is at most once: subscribers that are disconnected or too far behind miss it.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<u64, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.publish(channel, payload).await,
            Backend::Embedded(embedded) => Ok(embedded.publish(channel, payload)),
        }
    }

    /// Subscribes to `{prefix}{channel}`. The returned future resolves once the subscription is
    /// confirmed, so a publish made after it returns is received.
    ///
    /// A background task forwards messages into the [`Subscription`]; it ends when `shutdown` is
    /// cancelled or the `Subscription` is dropped. On Redis it holds a dedicated pub/sub connection,
    /// pings it every 3 s, and if Redis goes away or leaves a ping unanswered for 3 s (a half-open
    /// connection), reconnects with backoff (50 ms doubling to 2 s), logging a warning once per
    /// outage and an info line when subscribed again. Messages published while disconnected are
    /// lost. On both backends, if the consumer falls more than [`SUBSCRIPTION_BUFFER`] messages
    /// or [`SUBSCRIPTION_BUFFER_BYTES`] bytes behind, newer messages are dropped and a warning is
    /// logged.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if the first subscription cannot be made within about 5 s.
    pub async fn subscribe(
        &self,
        channel: &str,
        shutdown: CancellationToken,
    ) -> Result<Subscription, KvError> {
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let subscribed = Subscribed::new();
        let ended = Unsubscribed(subscribed.clone());
        match &self.backend {
            Backend::Redis(redis) => redis.subscribe(channel, sender, shutdown.clone(), ended).await?,
            Backend::Embedded(embedded) => embedded.subscribe(channel, sender, shutdown.clone(), ended),
        }
        Ok(Subscription { receiver, shutdown, subscribed })
    }
}

/// Buffered records: high-frequency small writes (positions, hit points) land here first and are
/// acknowledged at once; a flusher in a domain crate claims dirty records in batches, writes them to
/// SQLite, and releases them. Records live in a namespace `ns` (e.g. `"player"`) and are maps of text
/// fields; the buffer keeps a version in field `v` and the time of the last update in field `t`.
///
/// Versions come from one counter per namespace: every update takes the next one, so a record's
/// versions only grow (not by one: other records' updates take numbers in between), and seeding a
/// record raises the counter to the record's stored version, so versions continue above what was
/// flushed even after Redis lost everything.
///
/// A record that is dirty or claimed has no TTL: an acknowledged update never expires before it
/// is flushed. A seeded record, and a released one that was not updated again, expires after the
/// TTL given to [`Kv::buffer_seed`] or [`Kv::buffer_release`] unless it is updated.
///
/// The flush protocol assumes one flusher per namespace at a time (hold a lease, see
/// [`Kv::lease_acquire`]): [`Kv::buffer_claim`] → write → [`Kv::buffer_release`], with
/// [`Kv::buffer_recover`] on start-up or on taking the lease. A recovery beside a flusher that is
/// still writing (an ops flush) is safe: the flusher's release then changes nothing, and the ids
/// stay with the claim that took them after the recovery until that one is released or recovered.
impl Kv {
    /// If the record exists: sets `fields`, gives it the namespace's next version in `v`, sets `t`
    /// to `now_ms`, and marks it dirty with score `now_ms` unless it is dirty already (so the dirty
    /// set keeps the time it *first* became dirty); a dirty record loses its TTL. Returns
    /// [`BufferUpdate::Applied`] with the new version and the number of dirty records. If the record
    /// is absent: [`BufferUpdate::NotLoaded`] and nothing changed.
    ///
    /// Atomic, one Lua script. On Redis, concurrent calls are gathered by one background task into one
    /// pipeline per batch, so thousands of callers cost a few round trips rather than one each.
    ///
    /// `fields` must not contain `v` or `t` (checked by a debug assertion).
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer within about 5 s (while Redis is down, at
    /// once). After an error the update may or may not have been applied.
    pub async fn buffer_update(
        &self,
        ns: &str,
        id: &str,
        fields: Vec<Field>,
        now_ms: u64,
    ) -> Result<BufferUpdate, KvError> {
        self.buffer_update_packed(ns, id, PackedFields::from(fields.as_slice()), now_ms).await
    }

    /// [`Kv::buffer_update`] with the fields already packed, for hot paths.
    ///
    /// # Errors
    /// As [`Kv::buffer_update`].
    pub async fn buffer_update_packed(
        &self,
        ns: &str,
        id: &str,
        fields: PackedFields,
        now_ms: u64,
    ) -> Result<BufferUpdate, KvError> {
        debug_assert!(
            fields.iter().all(|(name, _)| !RESERVED_FIELDS.contains(&name)),
            "buffer_update fields must not contain the reserved fields {RESERVED_FIELDS:?}"
        );
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_update(ns, id, fields, now_ms).await,
            Backend::Embedded(embedded) => {
                let fields = fields.iter().map(|(name, value)| (name.to_owned(), value.to_owned())).collect();
                Ok(embedded.buffer_update(ns, id, fields, now_ms))
            }
        }
    }

    /// Creates the record with `fields` (which include `v`, the version to continue from, and any
    /// `t`) and TTL `ttl`, only if it is absent; atomic. Does not mark it dirty. A record seeded
    /// without `v` gets `v` = 0; a whole-number `v` above the namespace's version counter raises the
    /// counter to it. Returns whether it created the record. An empty `fields` creates nothing and
    /// returns `false`.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn buffer_seed(
        &self,
        ns: &str,
        id: &str,
        fields: Vec<Field>,
        ttl: Duration,
    ) -> Result<bool, KvError> {
        if fields.is_empty() {
            return Ok(false);
        }
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_seed(ns, id, &fields, ttl).await,
            Backend::Embedded(embedded) => Ok(embedded.buffer_seed(ns, id, fields, ttl)),
        }
    }

    /// The record's fields, in no particular order; `None` if it is absent or expired.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn buffer_get(&self, ns: &str, id: &str) -> Result<Option<Vec<Field>>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_get(ns, id).await,
            Backend::Embedded(embedded) => Ok(embedded.buffer_get(ns, id)),
        }
    }

    /// Takes up to `max` ids with the lowest dirty scores (oldest first), none dirty since after
    /// `dirty_until_ms` (`u64::MAX` for all), out of the dirty set, records each in the claim with
    /// its score, and returns each with its current fields, oldest first. On Redis this runs as scripts of a few hundred ids each, every one atomic, so claiming
    /// a large batch never stalls buffered updates for long. An id whose record has vanished (Redis lost it) is dropped from the claim and not returned.
    ///
    /// An id that an earlier, unreleased claim still holds (a flush beside this one, since the last
    /// recovery) is left in the dirty set and not taken: the earlier claim's release would
    /// otherwise end both claims of it while this one's write may still fail. If a recovery runs while a
    /// large claim is taken, the claim returns only what it took after it (the rest went back to
    /// the dirty set), under the new generation.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn buffer_claim(
        &self,
        ns: &str,
        max: usize,
        dirty_until_ms: u64,
    ) -> Result<BufferClaim, KvError> {
        if max == 0 {
            // Nothing taken, so nothing to release under any generation.
            return Ok(BufferClaim { records: Vec::new(), generation: 0 });
        }
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_claim(ns, max, dirty_until_ms).await,
            Backend::Embedded(embedded) => Ok(embedded.buffer_claim(ns, max, dirty_until_ms)),
        }
    }

    /// Removes these ids from the claim, once the flusher has committed them, and gives each record
    /// that was not updated meanwhile the TTL `ttl` (it is clean now). Ids updated meanwhile stay
    /// in the dirty set, so their newer fields are flushed by a later claim. Unknown ids are ignored.
    /// Does nothing if the claim's `generation` (from [`BufferClaim`]) is no longer the current
    /// one: a recovery since then gave its ids to another claim.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn buffer_release(
        &self,
        ns: &str,
        ids: &[String],
        generation: u64,
        ttl: Duration,
    ) -> Result<(), KvError> {
        if ids.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_release(ns, ids, generation, ttl).await,
            Backend::Embedded(embedded) => {
                embedded.buffer_release(ns, ids, generation, ttl);
                Ok(())
            }
        }
    }

    /// Moves every id in the claim back into the dirty set (an id that is dirty again keeps the
    /// smaller of its two scores), empties the claim, starts the claim's next generation, and
    /// returns how many ids it moved. Run it on start-up or on taking the flusher lease, so a
    /// flusher that crashed mid-flush loses nothing.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn buffer_recover(&self, ns: &str) -> Result<u64, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_recover(ns).await,
            Backend::Embedded(embedded) => Ok(embedded.buffer_recover(ns)),
        }
    }

    /// The number of dirty and claimed records, of records in either, and the oldest dirty-since
    /// time over both, read atomically in one round trip.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn buffer_stats(&self, ns: &str) -> Result<BufferStats, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_stats(ns).await,
            Backend::Embedded(embedded) => Ok(embedded.buffer_stats(ns)),
        }
    }

    /// The namespace's version counter: the last version handed out, and the baseline the buffer
    /// was begun with; one round trip.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn buffer_version(&self, ns: &str) -> Result<BufferVersion, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_version(ns).await,
            Backend::Embedded(embedded) => Ok(embedded.buffer_version(ns)),
        }
    }

    /// Begins the buffer with `baseline` unless it was begun already, in which case nothing
    /// changes: the first baseline stays for as long as the store keeps the buffer's data, and
    /// goes when the store loses it. Beginning also raises the version counter to the baseline,
    /// so every version handed out since is above it. A caller passes how far its durable copy
    /// had come when it first wrote to the buffer (the player domain: `player.db`'s highest
    /// version), so a store that later comes back with older data is told from one that lost
    /// its data by [`BufferVersion::baseline`]; atomic.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn buffer_begin(&self, ns: &str, baseline: u64) -> Result<(), KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_begin(ns, baseline).await,
            Backend::Embedded(embedded) => {
                embedded.buffer_begin(ns, baseline);
                Ok(())
            }
        }
    }

    /// Raises the namespace's version counter to `at_least` if it is lower, so every later update
    /// gets a version above it; atomic. Returns whether it raised it.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn buffer_raise_version(&self, ns: &str, at_least: u64) -> Result<bool, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_raise_version(ns, at_least).await,
            Backend::Embedded(embedded) => Ok(embedded.buffer_raise_version(ns, at_least)),
        }
    }

    /// Drops every record of the namespace, dirty, claimed or clean, and empties its dirty set and
    /// claim, so each record's next update or read seeds it again from durable storage. For a
    /// flusher that finds the buffer older than durable storage (a Redis back from an old
    /// snapshot): every record in it may hold an older state, or updates built on one. Updates
    /// acknowledged into it are lost. Returns how many records it dropped.
    ///
    /// On Redis this empties the dirty set and the claim first, then walks the namespace's keys
    /// with `SCAN`, a page of a few hundred at a time, each page one `DEL`; a record seeded again
    /// after the walk passed it stays, dirty.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer; the pages before the failure are dropped.
    pub async fn buffer_drop_all(&self, ns: &str) -> Result<u64, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.buffer_drop_all(ns).await,
            Backend::Embedded(embedded) => Ok(embedded.buffer_drop_all(ns)),
        }
    }

    /// Takes the lease `name` for `holder` for `ttl` if it is free, or renews it for `ttl` if
    /// `holder` already has it; atomic. Returns whether `holder` holds it now.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer (the caller must then assume it does not
    /// hold the lease once its previous TTL has run out).
    pub async fn lease_acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.lease_acquire(name, holder, ttl).await,
            Backend::Embedded(embedded) => Ok(embedded.lease_acquire(name, holder, ttl)),
        }
    }

    /// Releases the lease `name` if `holder` has it; does nothing otherwise. Atomic.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn lease_release(&self, name: &str, holder: &str) -> Result<(), KvError> {
        match &self.backend {
            Backend::Redis(redis) => redis.lease_release(name, holder).await,
            Backend::Embedded(embedded) => {
                embedded.lease_release(name, holder);
                Ok(())
            }
        }
    }
}

/// Messages of one channel, from [`Kv::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<Vec<u8>>,
    shutdown: CancellationToken,
    subscribed: Subscribed,
}

/// Whether a [`Subscription`] receives: true once subscribed, false while its pub/sub connection
/// is down and being made again (messages published meanwhile are lost), and for good once its
/// task has ended (shutdown, the `Subscription` dropped, or a panic); and how many messages it
/// dropped for a consumer too far behind. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Subscribed(Arc<SubscriptionState>);

#[derive(Debug)]
struct SubscriptionState {
    receiving: AtomicBool,
    n_dropped: AtomicU64,
    /// Payload bytes forwarded and not yet received (see [`SUBSCRIPTION_BUFFER_BYTES`]).
    queued_bytes: AtomicUsize,
}

impl Subscribed {
    fn new() -> Subscribed {
        Subscribed(Arc::new(SubscriptionState {
            receiving: AtomicBool::new(true),
            n_dropped: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
        }))
    }

    /// Whether the subscription receives now.
    pub fn get(&self) -> bool {
        self.0.receiving.load(Ordering::Relaxed)
    }

    /// Messages dropped so far because the consumer was more than [`SUBSCRIPTION_BUFFER`]
    /// messages or [`SUBSCRIPTION_BUFFER_BYTES`] bytes behind (not those published while
    /// disconnected, which nobody counts).
    pub fn n_dropped(&self) -> u64 {
        self.0.n_dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, subscribed: bool) {
        self.0.receiving.store(subscribed, Ordering::Relaxed);
    }

    /// Counts `n_messages` dropped, and returns the total so far when it is worth a warning: at
    /// the first drop, then once per [`DROPS_PER_WARNING`] more, so a flood of dropped messages
    /// is a few log lines rather than one per message.
    pub(crate) fn dropped(&self, n_messages: u64) -> Option<u64> {
        let before = self.0.n_dropped.fetch_add(n_messages, Ordering::Relaxed);
        let total = before.saturating_add(n_messages);
        (before == 0 || before / DROPS_PER_WARNING != total / DROPS_PER_WARNING).then_some(total)
    }
}

/// Dropped messages per warning after the first (see [`Subscribed::dropped`]).
const DROPS_PER_WARNING: u64 = 1_000;

/// Held by a subscription's task: marks it as no longer receiving when the task ends, however
/// it ends.
pub(crate) struct Unsubscribed(pub(crate) Subscribed);

impl Drop for Unsubscribed {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Subscription {
    /// Next message payload; `None` once `shutdown` is cancelled (messages still buffered then are
    /// discarded).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => None,
            payload = self.receiver.recv() => {
                if let Some(payload) = &payload {
                    self.subscribed.0.queued_bytes.fetch_sub(payload.len(), Ordering::Relaxed);
                }
                payload
            }
        }
    }

    /// Whether this subscription receives, for a readiness check; see [`Subscribed`].
    pub fn subscribed(&self) -> Subscribed {
        self.subscribed.clone()
    }
}

/// Hands a received payload to the subscription without waiting; false once the subscription is
/// gone (its `Subscription` dropped). A full buffer, in messages or in bytes, drops the payload,
/// counted and warned about (see [`Subscribed::dropped`]): a consumer that stopped reading must not
/// make the forwarding task, and with it the pub/sub connection's unbounded read buffer, grow
/// without limit. Shared by both backends; each subscription has one forwarding task, so the byte
/// count's check and increase cannot race another forward.
fn forward(sender: &mpsc::Sender<Vec<u8>>, subscribed: &Subscribed, payload: Vec<u8>) -> bool {
    let queued_bytes = &subscribed.0.queued_bytes;
    let n_bytes = payload.len();
    let queued = queued_bytes.load(Ordering::Relaxed);
    let refused = if queued > 0 && queued.saturating_add(n_bytes) > SUBSCRIPTION_BUFFER_BYTES {
        mpsc::error::TrySendError::Full(payload)
    } else {
        queued_bytes.fetch_add(n_bytes, Ordering::Relaxed);
        let Err(refused) = sender.try_send(payload) else { return true };
        queued_bytes.fetch_sub(n_bytes, Ordering::Relaxed);
        refused
    };
    match refused {
        mpsc::error::TrySendError::Full(_) => {
            if let Some(n_dropped) = subscribed.dropped(1) {
                tracing::warn!(n_dropped, "subscription buffer full; messages dropped (count so far)");
            }
            true
        }
        mpsc::error::TrySendError::Closed(_) => false,
    }
}

/// Milliseconds for a Redis `PX`/`PEXPIRE` argument: at least 1, since Redis rejects 0.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_dropped_messages_warns_at_the_first_and_then_once_per_thousand() {
        let subscribed = Subscribed::new();
        let warnings: Vec<u64> = (0..2_500).filter_map(|_| subscribed.dropped(1)).collect();
        assert_eq!(warnings, [1, 1_000, 2_000]);
        assert_eq!(subscribed.dropped(600), Some(3_100), "a lag of many counts at once");
        assert_eq!(subscribed.n_dropped(), 3_100);
    }

    #[test]
    fn packed_fields_give_back_what_was_pushed_in_order() {
        let mut packed = PackedFields::with_capacity(0);
        assert!(packed.is_empty());
        packed.push("p", format_args!("{},{},{}", 1.5, -2, 0.1_f32));
        packed.push("empty", format_args!(""));
        packed.push_str("name", "héllo, wörld");
        let pairs: Vec<(&str, &str)> = packed.iter().collect();
        assert_eq!(pairs, [("p", "1.5,-2,0.1"), ("empty", ""), ("name", "héllo, wörld")]);
        assert_eq!(packed.len(), 3);

        let fields: Vec<Field> =
            pairs.iter().map(|&(name, value)| (name.to_owned(), value.to_owned())).collect();
        let repacked = PackedFields::from(fields.as_slice());
        assert_eq!(repacked.iter().collect::<Vec<_>>(), pairs);
    }
}
