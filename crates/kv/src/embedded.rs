//! The embedded backend: the same operations as on Redis, on maps in this process.
//!
//! Expiry is checked lazily on access against `Instant::now()`, as Redis does for reads; writes also
//! sweep out expired entries now and then (amortised O(1) per write) so memory does not grow with keys
//! nobody reads again. Pub/sub uses one `tokio::sync::broadcast` channel per channel name. Buffered
//! records keep Redis's data model (a hash per record, a sorted set of dirty ids, a claim), so
//! both backends answer alike, including the order of equal scores (by id).

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    BufferClaim, BufferStats, BufferUpdate, BufferVersion, ClaimedRecord, Field, KvError, Unsubscribed,
    forward, millis,
};

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
    /// Each account's token hashes, scored in the order they were stored, as on Redis.
    account_sessions: HashMap<String, Expiring<SortedSet>>,
    counters: HashMap<String, Expiring<u64>>,
    /// Buffered records by namespace.
    buffers: HashMap<String, Buffer>,
    /// Lease holders by lease name.
    leases: HashMap<String, Expiring<String>>,
    /// Waiting queues by queue name (see `crate::queue`); they never expire.
    queues: crate::queue::EmbeddedQueues,
    writes_since_sweep: usize,
}

/// One namespace of buffered records: on Redis, `{ns}:rec:{id}`, `{ns}:dirty`, `{ns}:claimed` and
/// `{ns}:version`.
#[derive(Default)]
struct Buffer {
    records: HashMap<String, Expiring<HashMap<String, String>>>,
    dirty: SortedSet,
    /// Claimed id → dirty-since ms.
    claim: HashMap<String, u64>,
    /// How many recoveries the claim has seen (see `BufferClaim::generation`).
    claim_generation: u64,
    /// The last version handed out.
    version: u64,
    /// The baseline the buffer was begun with (see `Kv::buffer_begin`).
    baseline: Option<u64>,
}

/// A sorted set of ids by score, ordered like a Redis ZSET (score, then id).
#[derive(Default)]
struct SortedSet {
    by_score: BTreeSet<(u64, String)>,
    scores: HashMap<String, u64>,
}

impl SortedSet {
    fn len(&self) -> u64 {
        u64::try_from(self.scores.len()).unwrap_or(u64::MAX)
    }

    /// `ZSCORE` is not nil.
    fn contains(&self, id: &str) -> bool {
        self.scores.contains_key(id)
    }

    /// `ZADD NX`: adds `id` unless it is already in the set.
    fn add_if_absent(&mut self, id: &str, score: u64) {
        if !self.scores.contains_key(id) {
            self.scores.insert(id.to_owned(), score);
            self.by_score.insert((score, id.to_owned()));
        }
    }

    /// `ZADD LT`: adds `id`, or lowers its score if it is in the set with a higher one.
    fn add_or_lower(&mut self, id: &str, score: u64) {
        match self.scores.get_mut(id) {
            Some(current) if *current <= score => {}
            Some(current) => {
                self.by_score.remove(&(*current, id.to_owned()));
                *current = score;
                self.by_score.insert((score, id.to_owned()));
            }
            None => {
                self.scores.insert(id.to_owned(), score);
                self.by_score.insert((score, id.to_owned()));
            }
        }
    }

    /// Removes and returns the id with the lowest score.
    /// Removes and returns the lowest-scored id if its score is at most `until`.
    fn pop_oldest_until(&mut self, until: u64) -> Option<(u64, String)> {
        if self.by_score.first().is_none_or(|(score, _)| *score > until) {
            return None;
        }
        let (score, id) = self.by_score.pop_first()?;
        self.scores.remove(&id);
        Some((score, id))
    }

    fn oldest(&self) -> Option<u64> {
        self.by_score.first().map(|(score, _)| *score)
    }

    /// `ZADD`: adds `id` with `score`, or moves it there.
    fn add(&mut self, id: &str, score: u64) {
        self.remove(id);
        self.scores.insert(id.to_owned(), score);
        self.by_score.insert((score, id.to_owned()));
    }

    /// `ZREM`: removes `id`, returning its score (`ZSCORE` before it).
    fn remove(&mut self, id: &str) -> Option<u64> {
        let score = self.scores.remove(id)?;
        self.by_score.remove(&(score, id.to_owned()));
        Some(score)
    }

    /// The highest score, as `ZRANGE key -1 -1 WITHSCORES` reads it.
    fn newest(&self) -> Option<u64> {
        self.by_score.last().map(|(score, _)| *score)
    }

    /// The ids, lowest score first.
    fn ids(&self) -> impl Iterator<Item = &String> {
        self.by_score.iter().map(|(_, id)| id)
    }

    fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }
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
        let n_records: usize = self.buffers.values().map(|buffer| buffer.records.len()).sum();
        let n_entries = self.sessions.len()
            + self.account_sessions.len()
            + self.counters.len()
            + n_records
            + self.leases.len();
        if self.writes_since_sweep >= n_entries.max(SWEEP_MIN_WRITES) {
            self.sessions.retain(|_, entry| entry.is_live(now));
            self.account_sessions.retain(|_, entry| entry.is_live(now));
            self.counters.retain(|_, entry| entry.is_live(now));
            for buffer in self.buffers.values_mut() {
                buffer.records.retain(|_, entry| entry.is_live(now));
            }
            self.leases.retain(|_, entry| entry.is_live(now));
            self.writes_since_sweep = 0;
        }
    }
}

/// Session operations shared by the single and the combined (rotation) calls, under one lock.
impl Store {
    /// Stores a session as `Kv::session_put` does; the new member's number is `number`, or one above
    /// the account's newest. Returns the token hashes of the live sessions it ended to stay within
    /// `max_per_account`.
    #[allow(clippy::too_many_arguments, reason = "the arguments of Kv::session_put, plus the number")]
    fn put_session(
        &mut self,
        now: Instant,
        token_hash: &str,
        account_id: &str,
        record: &[u8],
        idle_ttl: Duration,
        index_ttl: Duration,
        max_per_account: usize,
        number: Option<u64>,
    ) -> Vec<String> {
        self.sessions.insert(
            token_hash.to_owned(),
            Expiring { value: record.to_vec(), expires_at: Some(deadline(now, idle_ttl)) },
        );
        let index_deadline = deadline(now, index_ttl);
        let index = match live(&mut self.account_sessions, account_id, now) {
            Some(index) => {
                // PEXPIRE NX then PEXPIRE GT: set if none, otherwise only ever raise.
                index.expires_at =
                    Some(index.expires_at.map_or(index_deadline, |current| current.max(index_deadline)));
                index
            }
            None => self
                .account_sessions
                .entry(account_id.to_owned())
                .or_insert(Expiring { value: SortedSet::default(), expires_at: Some(index_deadline) }),
        };
        // As on Redis: the set drops sessions that ended, of at most so many looked at.
        let sessions = &mut self.sessions;
        let ended: Vec<String> = index
            .value
            .ids()
            .take(crate::session_prune_max(max_per_account))
            .filter(|member| !sessions.get(*member).is_some_and(|session| session.is_live(now)))
            .cloned()
            .collect();
        for member in &ended {
            index.value.remove(member);
        }
        index.value.remove(token_hash);
        let mut evicted = Vec::new();
        if number.is_none() {
            // Room for the new one, never evicted itself since it is not in the set yet.
            while index.value.len() >= u64::try_from(max_per_account.max(1)).unwrap_or(u64::MAX) {
                let Some((_, oldest)) = index.value.pop_oldest_until(u64::MAX) else { break };
                if sessions.remove(&oldest).is_some_and(|session| session.is_live(now)) {
                    evicted.push(oldest);
                }
            }
        }
        let number = number.unwrap_or_else(|| index.value.newest().map_or(1, |newest| newest + 1));
        index.value.add(token_hash, number);
        evicted
    }

    /// Returns whether the session existed, and its number in its account's set if it was there.
    fn delete_session(&mut self, now: Instant, token_hash: &str, account_id: &str) -> (bool, Option<u64>) {
        let existed = live(&mut self.sessions, token_hash, now).is_some();
        self.sessions.remove(token_hash);
        let mut number = None;
        if let Some(index) = live(&mut self.account_sessions, account_id, now) {
            number = index.value.remove(token_hash);
            if index.value.is_empty() {
                // Redis deletes a set when its last member goes.
                self.account_sessions.remove(account_id);
            }
        }
        (existed, number)
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

    /// Runs `f` on the waiting queues under the store's lock (the queue operations live in
    /// `crate::queue`).
    pub(crate) fn with_queues<T>(&self, f: impl FnOnce(&mut crate::queue::EmbeddedQueues) -> T) -> T {
        f(&mut self.store().queues)
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
        max_per_account: usize,
    ) -> Vec<String> {
        let now = Instant::now();
        let mut store = self.store();
        let evicted = store.put_session(
            now,
            token_hash,
            account_id,
            record,
            idle_ttl,
            index_ttl,
            max_per_account,
            None,
        );
        store.note_write(now);
        evicted
    }

    pub(crate) fn session_update(&self, token_hash: &str, record: &[u8], idle_ttl: Duration) -> bool {
        let now = Instant::now();
        let mut store = self.store();
        let Some(session) = live(&mut store.sessions, token_hash, now) else {
            return false;
        };
        session.value = record.to_vec();
        session.expires_at = Some(deadline(now, idle_ttl));
        store.note_write(now);
        true
    }

    pub(crate) fn session_rotate(
        &self,
        old_token_hash: &str,
        account_id: &str,
        new_token_hash: &str,
        record: &[u8],
        idle_ttl: Duration,
        index_ttl: Duration,
    ) -> bool {
        let now = Instant::now();
        let mut store = self.store();
        let (existed, number) = store.delete_session(now, old_token_hash, account_id);
        if existed {
            // The new session keeps the old one's place in the order (or is the newest, if the old
            // one was not listed), so a rotation ends no other session.
            let number = number.or_else(|| {
                let newest = store.account_sessions.get(account_id).and_then(|index| index.value.newest());
                Some(newest.map_or(1, |newest| newest + 1))
            });
            store.put_session(
                now,
                new_token_hash,
                account_id,
                record,
                idle_ttl,
                index_ttl,
                usize::MAX,
                number,
            );
        }
        store.note_write(now);
        existed
    }

    pub(crate) fn session_get_touch(&self, token_hash: &str, idle_ttl: Duration) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut store = self.store();
        let session = live(&mut store.sessions, token_hash, now)?;
        session.expires_at = Some(deadline(now, idle_ttl));
        Some(session.value.clone())
    }

    pub(crate) fn session_expire_within(&self, token_hash: &str, ttl: Duration) {
        let now = Instant::now();
        let mut store = self.store();
        if let Some(session) = live(&mut store.sessions, token_hash, now) {
            let within = deadline(now, ttl);
            // As PEXPIRE LT: only ever shortens (no deadline counts as the longest).
            session.expires_at = Some(session.expires_at.map_or(within, |current| current.min(within)));
        }
    }

    pub(crate) fn session_ttl(&self, token_hash: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut store = self.store();
        let session = live(&mut store.sessions, token_hash, now)?;
        session.expires_at.map(|deadline| deadline.saturating_duration_since(now))
    }

    pub(crate) fn session_delete(&self, token_hash: &str, account_id: &str) -> bool {
        let now = Instant::now();
        let mut store = self.store();
        let (existed, _) = store.delete_session(now, token_hash, account_id);
        store.note_write(now);
        existed
    }

    pub(crate) fn sessions_delete_all(&self, account_id: &str) -> Vec<String> {
        let now = Instant::now();
        let mut store = self.store();
        let token_hashes: Vec<String> = match live(&mut store.account_sessions, account_id, now) {
            Some(_) => store
                .account_sessions
                .remove(account_id)
                .map(|index| index.value.ids().cloned().collect())
                .unwrap_or_default(),
            None => Vec::new(),
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

    pub(crate) fn counters_hit_below(&self, counters: &[(&str, u64)], window: Duration) -> bool {
        let now = Instant::now();
        let mut store = self.store();
        let all_below = counters.iter().all(|&(key, limit)| {
            live(&mut store.counters, key, now).map_or(0, |counter| counter.value) < limit
        });
        if all_below {
            for &(key, _) in counters {
                match live(&mut store.counters, key, now) {
                    Some(counter) => counter.value = counter.value.saturating_add(1),
                    None => {
                        store.counters.insert(
                            key.to_owned(),
                            Expiring { value: 1, expires_at: Some(deadline(now, window)) },
                        );
                    }
                }
            }
            store.note_write(now);
        }
        all_below
    }

    pub(crate) fn counter_undo_hit(&self, key: &str) {
        let now = Instant::now();
        let mut store = self.store();
        if let Some(counter) = live(&mut store.counters, key, now) {
            counter.value = counter.value.saturating_sub(1);
        }
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

    pub(crate) fn buffer_update(&self, ns: &str, id: &str, fields: Vec<Field>, now_ms: u64) -> BufferUpdate {
        let now = Instant::now();
        let mut store = self.store();
        let Some(buffer) = store.buffers.get_mut(ns) else {
            return BufferUpdate::NotLoaded;
        };
        let Some(record) = live(&mut buffer.records, id, now) else {
            return BufferUpdate::NotLoaded;
        };
        buffer.version += 1;
        let version = buffer.version;
        record.value.insert("v".to_owned(), version.to_string());
        record.value.insert("t".to_owned(), now_ms.to_string());
        record.value.extend(fields);
        // Dirty records never expire: see `Kv::buffer_update`.
        record.expires_at = None;
        buffer.dirty.add_if_absent(id, now_ms);
        let n_dirty = buffer.dirty.len();
        store.note_write(now);
        BufferUpdate::Applied { version, n_dirty }
    }

    pub(crate) fn buffer_seed(&self, ns: &str, id: &str, fields: Vec<Field>, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut store = self.store();
        let buffer = store.buffers.entry(ns.to_owned()).or_default();
        if live(&mut buffer.records, id, now).is_some() {
            return false;
        }
        let mut value: HashMap<String, String> = fields.into_iter().collect();
        match value.get("v").and_then(|version| version.parse::<u64>().ok()) {
            Some(version) => buffer.version = buffer.version.max(version),
            None => {
                value.entry("v".to_owned()).or_insert_with(|| "0".to_owned());
            }
        }
        buffer.records.insert(id.to_owned(), Expiring { value, expires_at: Some(deadline(now, ttl)) });
        store.note_write(now);
        true
    }

    pub(crate) fn buffer_get(&self, ns: &str, id: &str) -> Option<Vec<Field>> {
        let now = Instant::now();
        let mut store = self.store();
        let buffer = store.buffers.get_mut(ns)?;
        let record = live(&mut buffer.records, id, now)?;
        Some(record.value.iter().map(|(name, value)| (name.clone(), value.clone())).collect())
    }

    pub(crate) fn buffer_claim(&self, ns: &str, max: usize, dirty_until_ms: u64) -> BufferClaim {
        let now = Instant::now();
        let mut store = self.store();
        let Some(buffer) = store.buffers.get_mut(ns) else {
            return BufferClaim { records: Vec::new(), generation: 0 };
        };
        let mut claimed = Vec::new();
        let mut held = Vec::new();
        for _ in 0..max {
            let Some((score, id)) = buffer.dirty.pop_oldest_until(dirty_until_ms) else {
                break;
            };
            // Still claimed by a flush beside this one: left dirty (see `CLAIM_LUA`).
            if buffer.claim.contains_key(&id) {
                held.push((score, id));
                continue;
            }
            let Some(record) = live(&mut buffer.records, &id, now) else {
                continue;
            };
            let fields = record.value.iter().map(|(name, value)| (name.clone(), value.clone())).collect();
            buffer.claim.insert(id.clone(), score);
            claimed.push(ClaimedRecord { id, fields, dirty_since_ms: score });
        }
        for (score, id) in held {
            buffer.dirty.add_if_absent(&id, score);
        }
        let generation = buffer.claim_generation;
        store.note_write(now);
        BufferClaim { records: claimed, generation }
    }

    pub(crate) fn buffer_release(&self, ns: &str, ids: &[String], generation: u64, ttl: Duration) {
        let now = Instant::now();
        let mut store = self.store();
        if let Some(buffer) = store.buffers.get_mut(ns)
            && buffer.claim_generation == generation
        {
            for id in ids {
                buffer.claim.remove(id);
                if !buffer.dirty.contains(id)
                    && let Some(record) = buffer.records.get_mut(id)
                {
                    record.expires_at = Some(deadline(now, ttl));
                }
            }
        }
    }

    pub(crate) fn buffer_recover(&self, ns: &str) -> u64 {
        let mut store = self.store();
        let Some(buffer) = store.buffers.get_mut(ns) else {
            return 0;
        };
        buffer.claim_generation += 1;
        let n_moved = u64::try_from(buffer.claim.len()).unwrap_or(u64::MAX);
        for (id, since) in buffer.claim.drain() {
            buffer.dirty.add_or_lower(&id, since);
        }
        n_moved
    }

    pub(crate) fn buffer_stats(&self, ns: &str) -> BufferStats {
        let store = self.store();
        let Some(buffer) = store.buffers.get(ns) else {
            return BufferStats::default();
        };
        let oldest_claimed = buffer.claim.values().copied().min();
        let oldest_dirty_ms = match (buffer.dirty.oldest(), oldest_claimed) {
            (Some(dirty), Some(claimed)) => Some(dirty.min(claimed)),
            (dirty, claimed) => dirty.or(claimed),
        };
        let n_claimed_only = buffer.claim.keys().filter(|id| !buffer.dirty.contains(id)).count();
        BufferStats {
            n_dirty: buffer.dirty.len(),
            n_claimed: u64::try_from(buffer.claim.len()).unwrap_or(u64::MAX),
            n_buffered: buffer.dirty.len().saturating_add(u64::try_from(n_claimed_only).unwrap_or(u64::MAX)),
            oldest_dirty_ms,
        }
    }

    pub(crate) fn buffer_version(&self, ns: &str) -> BufferVersion {
        let store = self.store();
        store.buffers.get(ns).map_or(BufferVersion::default(), |buffer| BufferVersion {
            last: buffer.version,
            baseline: buffer.baseline,
        })
    }

    pub(crate) fn buffer_begin(&self, ns: &str, baseline: u64) {
        let now = Instant::now();
        let mut store = self.store();
        let buffer = store.buffers.entry(ns.to_owned()).or_default();
        if buffer.baseline.is_none() {
            buffer.baseline = Some(baseline);
            buffer.version = buffer.version.max(baseline);
        }
        store.note_write(now);
    }

    pub(crate) fn buffer_raise_version(&self, ns: &str, at_least: u64) -> bool {
        let mut store = self.store();
        let buffer = store.buffers.entry(ns.to_owned()).or_default();
        let raised = buffer.version < at_least;
        buffer.version = buffer.version.max(at_least);
        raised
    }

    pub(crate) fn buffer_drop_all(&self, ns: &str) -> u64 {
        let now = Instant::now();
        let mut store = self.store();
        let Some(buffer) = store.buffers.get_mut(ns) else { return 0 };
        let n_dropped = buffer.records.len();
        buffer.records.clear();
        buffer.dirty = SortedSet::default();
        buffer.claim.clear();
        store.note_write(now);
        u64::try_from(n_dropped).unwrap_or(u64::MAX)
    }

    pub(crate) fn lease_acquire(&self, name: &str, holder: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut store = self.store();
        let held = match live(&mut store.leases, name, now) {
            Some(lease) if lease.value == holder => {
                lease.expires_at = Some(deadline(now, ttl));
                true
            }
            Some(_) => false,
            None => {
                store.leases.insert(
                    name.to_owned(),
                    Expiring { value: holder.to_owned(), expires_at: Some(deadline(now, ttl)) },
                );
                true
            }
        };
        store.note_write(now);
        held
    }

    pub(crate) fn lease_release(&self, name: &str, holder: &str) {
        let now = Instant::now();
        let mut store = self.store();
        if live(&mut store.leases, name, now).is_some_and(|lease| lease.value == holder) {
            store.leases.remove(name);
        }
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
        ended: Unsubscribed,
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
        let span = tracing::info_span!("kv_subscription", channel = %name);
        tokio::spawn(forward_broadcast(receiver, sender, shutdown, ended).instrument(span));
    }
}

/// Moves messages from one channel's broadcast into one subscription until shutdown or until the
/// subscription is dropped.
async fn forward_broadcast(
    mut receiver: broadcast::Receiver<Vec<u8>>,
    sender: mpsc::Sender<Vec<u8>>,
    shutdown: CancellationToken,
    // Counts what is dropped, and marks the subscription ended when this returns.
    ended: Unsubscribed,
) {
    loop {
        let payload = tokio::select! {
            () = shutdown.cancelled() => return,
            () = sender.closed() => return,
            received = receiver.recv() => match received {
                Ok(payload) => payload,
                Err(broadcast::error::RecvError::Lagged(n_missed)) => {
                    if let Some(n_dropped) = ended.0.dropped(n_missed) {
                        tracing::warn!(n_dropped, "subscription fell behind; messages dropped (count so far)");
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if !forward(&sender, &ended.0, payload) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    /// As on Redis (`a_login_drops_the_sessions_that_idled_out_from_the_accounts_set`).
    #[test]
    fn a_login_drops_the_sessions_that_idled_out_from_the_accounts_set() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Embedded::open(dir.path(), "t:").expect("embedded store");
        let n_listed = || store.store().account_sessions.get("acct-1").map_or(0, |index| index.value.len());
        for n in 0..5 {
            store.session_put(&format!("ab{n:02}"), "acct-1", b"r", Duration::from_millis(50), LONG, 1_000);
        }
        store.session_put("cd00", "acct-1", b"r", LONG, LONG, 1_000);
        assert_eq!(n_listed(), 6);
        std::thread::sleep(Duration::from_millis(150));

        store.session_put("cd01", "acct-1", b"r", LONG, LONG, 1_000);
        assert_eq!(n_listed(), 2, "only the live sessions stay listed");
        let mut ended = store.sessions_delete_all("acct-1");
        ended.sort();
        assert_eq!(ended, ["cd00", "cd01"]);
    }
}
