//! The embedded backend: the same operations as on Redis, on maps in this process.
//!
//! Expiry is checked lazily on access against `Instant::now()`, as Redis does for reads; writes also
//! sweep out expired entries now and then (amortised O(1) per write) so memory does not grow with keys
//! nobody reads again. Pub/sub uses one `tokio::sync::broadcast` channel per channel name.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{Forward, KvError, forward, millis};

/// Name of the lock file inside the data directory.
const LOCK_FILE_NAME: &str = "embedded-kv.lock";
/// Writes between sweeps never drop below this, so small stores are not swept on every write.
const SWEEP_MIN_WRITES: usize = 1024;
/// Capacity of each channel's broadcast buffer; a subscription further behind loses messages.
const BROADCAST_CAPACITY: usize = 1024;

/// The embedded store. Owns the lock file: dropping the last `Arc<Embedded>` releases the lock.
pub(crate) struct Embedded {
    prefix: String,
    store: Mutex<Store>,
    channels: Mutex<HashMap<String, broadcast::Sender<Vec<u8>>>>,
    /// Held only for its OS lock, which the OS releases when the file is closed.
    _lock_file: File,
}

/// A value with an optional deadline, like a Redis key with or without a TTL.
struct Expiring<T> {
    value: T,
    expires_at: Option<Instant>,
}

impl<T> Expiring<T> {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|deadline| deadline > now)
    }
}

/// The key space, one map per kind of key (the kinds never share a key on Redis either).
#[derive(Default)]
struct Store {
    sessions: HashMap<String, Expiring<Vec<u8>>>,
    account_sessions: HashMap<String, Expiring<HashSet<String>>>,
    counters: HashMap<String, Expiring<u64>>,
    writes_since_sweep: usize,
}

/// Removes `key` from `map` if it has expired, then returns the live entry, if any.
fn live<'a, T>(
    map: &'a mut HashMap<String, Expiring<T>>,
    key: &str,
    now: Instant,
) -> Option<&'a mut Expiring<T>> {
    if map.get(key).is_some_and(|entry| !entry.is_live(now)) {
        map.remove(key);
    }
    map.get_mut(key)
}

impl Store {
    /// Counts one write and, once writes since the last sweep reach the number of entries, drops
    /// every expired entry.
    fn note_write(&mut self, now: Instant) {
        self.writes_since_sweep += 1;
        let n_entries = self.sessions.len() + self.account_sessions.len() + self.counters.len();
        if self.writes_since_sweep >= n_entries.max(SWEEP_MIN_WRITES) {
            self.sessions.retain(|_, entry| entry.is_live(now));
            self.account_sessions.retain(|_, entry| entry.is_live(now));
            self.counters.retain(|_, entry| entry.is_live(now));
            self.writes_since_sweep = 0;
        }
    }
}

/// The deadline `ttl` from `now`, rounded to whole milliseconds as Redis does.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now + Duration::from_millis(millis(ttl))
}

impl Embedded {
    /// Creates `lock_dir` if needed and takes the exclusive lock on its lock file.
    pub(crate) fn open(lock_dir: &Path, key_prefix: &str) -> Result<Embedded, KvError> {
        std::fs::create_dir_all(lock_dir)?;
        let lock_path = lock_dir.join(LOCK_FILE_NAME);
        let lock_file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(KvError::EmbeddedInUse(lock_path)),
            Err(TryLockError::Error(error)) => return Err(KvError::Io(error)),
        }
        Ok(Embedded {
            prefix: key_prefix.to_owned(),
            store: Mutex::new(Store::default()),
            channels: Mutex::new(HashMap::new()),
            _lock_file: lock_file,
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Locks the store. A panic while holding the lock cannot leave a map half-updated in a way later
    /// calls would trip over, so a poisoned lock is used as is.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Vec<u8>>>> {
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn session_put(
        &self,
        token_hash: &str,
        account_id: &str,
        record: &[u8],
        idle_ttl: Duration,
        index_ttl: Duration,
    ) {
        let now = Instant::now();
        let mut store = self.store();
        store.sessions.insert(
            token_hash.to_owned(),
            Expiring { value: record.to_vec(), expires_at: Some(deadline(now, idle_ttl)) },
        );
        let index_deadline = deadline(now, index_ttl);
        match live(&mut store.account_sessions, account_id, now) {
            Some(index) => {
                index.value.insert(token_hash.to_owned());
                // PEXPIRE NX then PEXPIRE GT: set if none, otherwise only ever raise.
                index.expires_at =
                    Some(index.expires_at.map_or(index_deadline, |current| current.max(index_deadline)));
            }
            None => {
                store.account_sessions.insert(
                    account_id.to_owned(),
                    Expiring {
                        value: HashSet::from([token_hash.to_owned()]),
                        expires_at: Some(index_deadline),
                    },
                );
            }
        }
        store.note_write(now);
    }

    pub(crate) fn session_get_touch(&self, token_hash: &str, idle_ttl: Duration) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut store = self.store();
        let session = live(&mut store.sessions, token_hash, now)?;
        session.expires_at = Some(deadline(now, idle_ttl));
        Some(session.value.clone())
    }

    pub(crate) fn session_delete(&self, token_hash: &str, account_id: &str) -> bool {
        let now = Instant::now();
        let mut store = self.store();
        let existed = live(&mut store.sessions, token_hash, now).is_some();
        store.sessions.remove(token_hash);
        if let Some(index) = live(&mut store.account_sessions, account_id, now) {
            index.value.remove(token_hash);
            if index.value.is_empty() {
                // Redis deletes a set when its last member goes.
                store.account_sessions.remove(account_id);
            }
        }
        store.note_write(now);
        existed
    }

    pub(crate) fn sessions_delete_all(&self, account_id: &str) -> Vec<String> {
        let now = Instant::now();
        let mut store = self.store();
        let token_hashes = match live(&mut store.account_sessions, account_id, now) {
            Some(_) => store.account_sessions.remove(account_id).map(|index| index.value).unwrap_or_default(),
            None => HashSet::new(),
        };
        let mut deleted = Vec::new();
        for token_hash in token_hashes {
            if live(&mut store.sessions, &token_hash, now).is_some() {
                store.sessions.remove(&token_hash);
                deleted.push(token_hash);
            }
        }
        store.note_write(now);
        deleted
    }

    pub(crate) fn counter_hit(&self, key: &str, window: Duration) -> u64 {
        let now = Instant::now();
        let mut store = self.store();
        let count = match live(&mut store.counters, key, now) {
            Some(counter) => {
                counter.value = counter.value.saturating_add(1);
                counter.value
            }
            None => {
                store
                    .counters
                    .insert(key.to_owned(), Expiring { value: 1, expires_at: Some(deadline(now, window)) });
                1
            }
        };
        store.note_write(now);
        count
    }

    pub(crate) fn counter_get(&self, key: &str) -> u64 {
        let now = Instant::now();
        let mut store = self.store();
        live(&mut store.counters, key, now).map_or(0, |counter| counter.value)
    }

    pub(crate) fn counter_reset(&self, key: &str) {
        let now = Instant::now();
        let mut store = self.store();
        store.counters.remove(key);
        store.note_write(now);
    }

    pub(crate) fn publish(&self, channel: &str, payload: &[u8]) -> u64 {
        let name = format!("{}{channel}", self.prefix);
        let mut channels = self.channels();
        let Some(sender) = channels.get(&name) else {
            return 0;
        };
        match sender.send(payload.to_vec()) {
            Ok(n_receivers) => u64::try_from(n_receivers).unwrap_or(u64::MAX),
            Err(_) => {
                // Nobody listens any more: forget the channel.
                channels.remove(&name);
                0
            }
        }
    }

    /// Subscribes at once (before returning), then spawns the task that forwards into `sender`.
    pub(crate) fn subscribe(
        &self,
        channel: &str,
        sender: mpsc::Sender<Vec<u8>>,
        shutdown: CancellationToken,
    ) {
        let name = format!("{}{channel}", self.prefix);
        let receiver = {
            let mut channels = self.channels();
            channels.retain(|_, sender| sender.receiver_count() > 0);
            channels
                .entry(name.clone())
                .or_insert_with(|| broadcast::channel(BROADCAST_CAPACITY).0)
                .subscribe()
        };
        tokio::spawn(forward_broadcast(name, receiver, sender, shutdown));
    }
}

/// Moves messages from one channel's broadcast into one subscription until shutdown or until the
/// subscription is dropped.
async fn forward_broadcast(
    channel: String,
    mut receiver: broadcast::Receiver<Vec<u8>>,
    sender: mpsc::Sender<Vec<u8>>,
    shutdown: CancellationToken,
) {
    loop {
        let payload = tokio::select! {
            () = shutdown.cancelled() => return,
            () = sender.closed() => return,
            received = receiver.recv() => match received {
                Ok(payload) => payload,
                Err(broadcast::error::RecvError::Lagged(n_missed)) => {
                    tracing::warn!(%channel, n_missed, "subscription fell behind; messages dropped");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        match forward(&sender, payload) {
            Forward::Sent => {}
            Forward::Dropped => {
                tracing::warn!(%channel, "subscription buffer full; message dropped");
            }
            Forward::Closed => return,
        }
    }
}
