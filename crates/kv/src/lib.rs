//! Typed key-value operations for the game backend: sessions, rate-limit counters and pub/sub between
//! gateway processes, over Redis or over an embedded in-process store.
//!
//! This crate owns:
//! - the key layout in Redis (`{prefix}session:{token_hash}`, `{prefix}account-sessions:{account_id}`,
//!   `{prefix}counter:{key}`, channels `{prefix}{channel}`) and the commands and scripts run on it;
//! - the embedded store ([`Kv::embedded`]) that gives the same semantics in one process, guarded by an
//!   OS file lock so two processes never run on one data directory with separate embedded stores;
//! - reconnecting: commands go through `redis::aio::ConnectionManager`, and each [`Subscription`]
//!   keeps its own pub/sub connection alive in a background task.
//!
//! It never does:
//! - domain logic: session records are opaque bytes owned by the auth crate, counters are plain
//!   fixed-window counts, and payloads are opaque bytes;
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
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod embedded;
mod redis_backend;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use embedded::Embedded;
use redis_backend::RedisBackend;

/// How many messages a [`Subscription`] buffers before newer ones are dropped (with a warning).
pub const SUBSCRIPTION_BUFFER: usize = 1024;

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
}

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
    /// the set `account-sessions:{account_id}`, whose TTL is raised to at least `index_ttl` (never
    /// lowered). One round trip (`MULTI`).
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
    ) -> Result<(), KvError> {
        match &self.backend {
            Backend::Redis(redis) => {
                redis.session_put(token_hash, account_id, record, idle_ttl, index_ttl).await
            }
            Backend::Embedded(embedded) => {
                embedded.session_put(token_hash, account_id, record, idle_ttl, index_ttl);
                Ok(())
            }
        }
    }

    /// Reads the session and, if present, resets its TTL to `idle_ttl` (sliding expiry), in one round
    /// trip (`GETEX key PX ms`). `None` if there is no such session or it expired.
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
    /// cancelled or the `Subscription` is dropped. On Redis it holds a dedicated pub/sub connection
    /// and, if Redis goes away, reconnects with backoff (50 ms doubling to 2 s), logging a warning once
    /// per outage and an info line when subscribed again. Messages published while disconnected are
    /// lost. On both backends, if the consumer falls more than [`SUBSCRIPTION_BUFFER`] messages
    /// behind, newer messages are dropped and a warning is logged.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if the first subscription cannot be made within about 5 s.
    pub async fn subscribe(
        &self,
        channel: &str,
        shutdown: CancellationToken,
    ) -> Result<Subscription, KvError> {
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_BUFFER);
        match &self.backend {
            Backend::Redis(redis) => redis.subscribe(channel, sender, shutdown.clone()).await?,
            Backend::Embedded(embedded) => embedded.subscribe(channel, sender, shutdown.clone()),
        }
        Ok(Subscription { receiver, shutdown })
    }
}

/// Messages of one channel, from [`Kv::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<Vec<u8>>,
    shutdown: CancellationToken,
}

impl Subscription {
    /// Next message payload; `None` once `shutdown` is cancelled (messages still buffered then are
    /// discarded).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => None,
            payload = self.receiver.recv() => payload,
        }
    }
}

/// Hands a received payload to the subscription without waiting. A full buffer drops the payload
/// (`Forward::Dropped`): a consumer that stopped reading must not make the forwarding task, and with it
/// the pub/sub connection's unbounded read buffer, grow without limit. Shared by both backends.
fn forward(sender: &mpsc::Sender<Vec<u8>>, payload: Vec<u8>) -> Forward {
    match sender.try_send(payload) {
        Ok(()) => Forward::Sent,
        Err(mpsc::error::TrySendError::Full(_)) => Forward::Dropped,
        Err(mpsc::error::TrySendError::Closed(_)) => Forward::Closed,
    }
}

/// What [`forward`] did with a payload.
enum Forward {
    Sent,
    Dropped,
    Closed,
}

/// Milliseconds for a Redis `PX`/`PEXPIRE` argument: at least 1, since Redis rejects 0.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}
