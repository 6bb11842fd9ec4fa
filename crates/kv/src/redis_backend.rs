//! The Redis backend: key layout, commands, the Lua scripts, the buffered-update batcher, and the
//! reconnecting pub/sub task.
//!
//! Commands go through one `ConnectionManager` (a multiplexed connection that pipelines concurrent
//! callers and reconnects by itself); every subscription holds its own pub/sub connection. A
//! subscription notices an outage when Redis closes the connection (a restart, a crash, a killed
//! process); a half-open connection with no traffic is not detected, since there is no keepalive ping.
//!
//! Buffered updates do not go through the connection one by one: the redis crate's bookkeeping per
//! request, not Redis, is what limits many small concurrent commands. Callers hand their update to
//! one batcher task over a channel; it drains everything waiting, sends it as one pipeline of
//! `EVALSHA` calls, each applying up to [`UPDATE_CHUNK_MAX`] updates (a script run costs Redis
//! more than the commands of one update, so it is paid per chunk), and answers each caller through
//! a oneshot channel.
//!
//! While Redis is known to be unreachable (the last attempt lost the connection or got no
//! answer), commands and buffered updates are refused at once with `Unavailable`, except one at a
//! time, which tries Redis and so finds out when it is back (see [`Reachability`]). Without that,
//! every caller would wait through its own reconnect attempts, and under load the updates queued
//! behind them for seconds.
//!
//! Redis must evict no key: `maxmemory-policy` `noeviction` (its default). Dirty records and the
//! dirty set carry no TTL; a policy that evicts any key (`allkeys-*`) could drop an acknowledged
//! update before it is flushed, or drop the dirty set while its records keep their dirty marker,
//! and those would then never be flushed. An account's sorted set of sessions has a TTL; a policy that
//! evicts keys with one (`volatile-*`) could drop it while its sessions stay, and
//! `sessions_delete_all` would then miss them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{Client, IntoConnectionInfo, RedisError, RedisResult, Script, ServerErrorKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    BufferClaim, BufferStats, BufferUpdate, BufferVersion, ClaimedRecord, Field, KvError, PackedFields,
    RiskySetting, Subscribed, Unsubscribed, forward, millis, put_text, unpack_texts,
};

/// How long the first connection (and the first subscription) may take before giving up.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Each single TCP connect attempt times out after this.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// A command without an answer after this fails; a healthy Redis answers in well under 1 ms.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound for one operation including its reconnect attempts, so callers never hang.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect attempts the `ConnectionManager` makes per failed connection before a command fails
/// with `Unavailable`; kept low so commands fail fast while Redis is away (the next command starts
/// another round).
const COMMAND_RECONNECT_RETRIES: usize = 2;
/// First delay between the `ConnectionManager`'s reconnect attempts.
const COMMAND_RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// Longest delay between the `ConnectionManager`'s reconnect attempts.
const COMMAND_RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// First delay before a subscription reconnects; doubles per failed attempt.
const SUBSCRIBE_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest delay between a subscription's reconnect attempts.
const SUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often a subscription's connection is pinged. A connection that went half-open (Redis's
/// host gone, or a NAT that forgot it, with no reset ever arriving) otherwise looks exactly like a
/// quiet channel: the subscription would stay "receiving" and miss everything until a restart.
/// So a subscription notices such a connection within this plus [`RESPONSE_TIMEOUT`].
const SUBSCRIPTION_HEARTBEAT: Duration = Duration::from_secs(3);

/// The start of every script that touches an account's index of sessions, which calls it on that
/// key before anything else: earlier releases kept the index as a SET, which carries no order to
/// evict the oldest by. Such a key is turned into the sorted set in place, keeping its TTL, its
/// members at score 0: they were all created before any session this release numbers, so they are
/// the oldest. Done inside each script, so an upgrade needs no manual step and no script ever sees
/// the old type. (`unpack` takes at most a few thousand values, hence the chunks.)
macro_rules! index_as_sorted_set {
    () => {
        r"
local function index_as_sorted_set(key)
  if redis.call('TYPE', key).ok ~= 'set' then
    return
  end
  local ttl = redis.call('PTTL', key)
  local members = redis.call('SMEMBERS', key)
  redis.call('DEL', key)
  local args = {}
  for i, member in ipairs(members) do
    args[#args + 1] = 0
    args[#args + 1] = member
    if #args >= 1000 or i == #members then
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  end
end
"
    };
}

/// Stores a session and lists it in its account's sorted set, numbered one above the newest
/// there, so the set orders the account's sessions by when Redis stored them whatever the clocks
/// of the gateways that asked. First drops from the set the sessions that have ended (their keys
/// expired): a set kept alive by its account's logins would otherwise list every session ever
/// abandoned. At most ARGV[6] members are looked at (a random sample of a larger set), so one
/// login's work stays bounded. Then, if the account would hold more than ARGV[7] sessions, ends
/// the oldest ones (before adding the new one, which so never is among them). KEYS: session, the
/// account's set. ARGV: token hash, record, idle TTL in ms, the set's least TTL in ms (set if it has
/// none, otherwise only raised), the session key prefix, the most members looked at, the most
/// sessions an account keeps. Returns the token hashes of the sessions it ended that still existed.
const PUT_SESSION_LUA: &str = concat!(
    index_as_sorted_set!(),
    r"
index_as_sorted_set(KEYS[2])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local members
if redis.call('ZCARD', KEYS[2]) <= tonumber(ARGV[6]) then
  members = redis.call('ZRANGE', KEYS[2], 0, -1)
else
  members = redis.call('ZRANDMEMBER', KEYS[2], ARGV[6])
end
for _, token_hash in ipairs(members) do
  if token_hash ~= ARGV[1] and redis.call('EXISTS', ARGV[5] .. token_hash) == 0 then
    redis.call('ZREM', KEYS[2], token_hash)
  end
end
redis.call('ZREM', KEYS[2], ARGV[1])
local evicted = {}
local n_over = redis.call('ZCARD', KEYS[2]) - math.max(tonumber(ARGV[7]), 1) + 1
if n_over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], n_over)
  for i = 1, #oldest, 2 do
    if redis.call('DEL', ARGV[5] .. oldest[i]) == 1 then
      table.insert(evicted, oldest[i])
    end
  end
end
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local number = 1
if #newest > 0 then
  number = tonumber(newest[2]) + 1
end
redis.call('ZADD', KEYS[2], number, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4], 'NX')
redis.call('PEXPIRE', KEYS[2], ARGV[4], 'GT')
return evicted
"
);

/// Deletes one session and drops it from its account's set. KEYS: the session, the account's set.
/// ARGV: the token hash. Returns 1 if the session existed, else 0.
const DELETE_SESSION_LUA: &str = concat!(
    index_as_sorted_set!(),
    r"
index_as_sorted_set(KEYS[2])
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"
);

/// Deletes every session listed in the account's set (KEYS[1]) and the set itself; ARGV[1] is the
/// session key prefix. Returns the token hashes whose session key still existed. The session keys
/// are built inside the script, which is fine on one Redis but would need hash tags on a cluster.
const DELETE_ALL_SESSIONS_LUA: &str = concat!(
    index_as_sorted_set!(),
    r"
index_as_sorted_set(KEYS[1])
local token_hashes = redis.call('ZRANGE', KEYS[1], 0, -1)
local deleted = {}
for _, token_hash in ipairs(token_hashes) do
  if redis.call('DEL', ARGV[1] .. token_hash) == 1 then
    table.insert(deleted, token_hash)
  end
end
redis.call('DEL', KEYS[1])
return deleted
"
);

/// Replaces one session with another if the old one exists, as one step: a rotation racing another
/// rotation or a delete-all either happens wholly before it or not at all. The new session takes
/// the old one's place in the account's order: it continues the same login (with the same
/// absolute end), so a rotation neither saves a session from eviction nor exposes it to it sooner.
/// KEYS: old session, the account's set, new session. ARGV: old token hash, new token hash, new
/// record, idle TTL in ms, the set's least TTL in ms (set as `session_put` sets it). Returns 1 if it
/// replaced it, else 0.
const ROTATE_SESSION_LUA: &str = concat!(
    index_as_sorted_set!(),
    r"
index_as_sorted_set(KEYS[2])
local number = redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
if not number then
  local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  number = 1
  if #newest > 0 then
    number = tonumber(newest[2]) + 1
  end
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], number, ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[5], 'NX')
redis.call('PEXPIRE', KEYS[2], ARGV[5], 'GT')
return 1
"
);

/// Counts one hit on every counter in KEYS if each is below its limit, else on none. ARGV: the
/// window in ms (the expiry of a counter this creates), then one limit per key. Returns 1 if it
/// counted, else 0.
const HIT_BELOW_LUA: &str = r"
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i + 1]) then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, ARGV[1], 'NX')
end
return 1
";

/// Decrements the counter KEYS[1] unless it is absent or zero: a plain DECR would create it at -1,
/// without an expiry.
const UNDO_HIT_LUA: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
return 0
";

/// Most buffered updates the batcher sends in one pipeline.
const UPDATE_BATCH_MAX: usize = 1024;
/// Most buffered updates in one run of the update script. Redis runs nothing else during a script,
/// so this bounds how long one blocks it (a few microseconds per update).
const UPDATE_CHUNK_MAX: usize = 128;
/// Pipelines of buffered updates in flight at once.
const UPDATE_BATCHES_IN_FLIGHT: usize = 4;
/// Updates that may wait for the batcher before callers wait to enqueue theirs (backpressure).
const UPDATE_QUEUE_CAPACITY: usize = 4 * UPDATE_BATCH_MAX;

/// Buffered updates of one namespace, many per run: a script run costs Redis several times what
/// one update's commands do, so it is paid once per chunk rather than once per update. KEYS: dirty
/// set, version counter. ARGV: record key prefix (`{prefix}{ns}:rec:`), the number of updates,
/// then per update: id, now_ms, the number of field/value pairs, the pairs. Returns {base, the size
/// of the dirty set after the run, one character per update: `1` applied, `0` the record is absent
/// (nothing changed)}; the k-th applied update got version base + k. Each update, like the whole
/// run, is atomic. Three values rather than one per update, because parsing a reply costs the
/// gateway far more per value than the script pays to build this one.
///
/// This is the hot path, so each update costs one HSET and the rest is paid per chunk. Versions
/// come from the namespace's counter, one INCRBY per run, so a record's versions only grow without
/// reading the record first (numbers taken for absent records are given back at the end, so a
/// namespace's versions have no gaps). HSET's count of fields it added tells the rest: a live
/// record always has `v` (seeding writes it, every update too), so an update adding `v` found no
/// record, and the record it just made is deleted again; a dirty record carries the marker `d`
/// (every update writes it, the claim removes it), so an update of a dirty record adds nothing
/// unless it brings a field the record never had. Adding anything to a live record therefore
/// makes sure it is dirty: ZADD NX of its id (a no-op for an id already there) and PERSIST, since
/// dirty records carry no TTL, so an acknowledged update can never expire before it is flushed
/// (releasing a flushed record gives it its TTL back). The marker is what keeps the dirty check
/// out of the dirty set: asking it with ZMSCORE, which formats every id's score as a double, cost
/// Redis a sixth more instructions per update. The caller passes the number of updates so the
/// script walks its arguments once (a first pass to count them cost another tenth). The marker
/// relies on Redis never dropping the dirty set while keeping records, which holds unless it
/// evicts keys without a TTL (see the module docs).
/// The record keys are built inside the script, fine on one Redis but a cluster would need hash
/// tags. The version is formatted as an integer by the script: Lua would format its number with
/// `%.14g`, which costs Redis about a tenth of the update.
const UPDATE_LUA: &str = r"
local dirty, counter, prefix, n = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local base = redis.call('INCRBY', counter, n) - n
local applied, newly_dirty = {}, {}
local version = base
local s = 3
for i = 1, n do
  local id, now, n_fields = ARGV[s], ARGV[s + 1], tonumber(ARGV[s + 2])
  local key = prefix .. id
  local last = s + 2 + 2 * n_fields
  local added = redis.call('HSET', key, 'v', string.format('%d', version + 1), 't', now, 'd', '1', unpack(ARGV, s + 3, last))
  s = last + 1
  if added == n_fields + 3 then
    redis.call('DEL', key)
    applied[i] = '0'
  else
    version = version + 1
    applied[i] = '1'
    if added > 0 then
      redis.call('PERSIST', key)
      newly_dirty[#newly_dirty + 1] = now
      newly_dirty[#newly_dirty + 1] = id
    end
  end
end
if version < base + n then
  redis.call('DECRBY', counter, base + n - version)
end
local n_dirty = redis.call('ZCARD', dirty)
if #newly_dirty > 0 then
  n_dirty = n_dirty + redis.call('ZADD', dirty, 'NX', unpack(newly_dirty))
end
return {base, n_dirty, table.concat(applied)}
";

/// Creates a record if absent. KEYS: record hash, version counter. ARGV: ttl_ms, then field/value
/// pairs (at least one). A record always gets a `v` (0 if none is given), which is how the update
/// script tells a live record from an absent one; a whole-number `v` above the counter raises the
/// counter to it, so the record's next version continues from the seeded one even after Redis
/// lost the counter. Returns 1 if it created the record, else 0.
const SEED_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local has_version = false
for i = 2, #ARGV, 2 do
  if ARGV[i] == 'v' then
    has_version = true
    local version = ARGV[i + 1]
    if string.match(version, '^%d+$') and tonumber(version) > tonumber(redis.call('GET', KEYS[2]) or '0') then
      redis.call('SET', KEYS[2], version)
    end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if not has_version then
  redis.call('HSET', KEYS[1], 'v', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Releases flushed ids. KEYS: claim, dirty set, claim generation. ARGV: record key prefix,
/// ttl_ms, the generation of the claim that took the ids, then the ids (at least one, at most
/// [`BUFFER_SCRIPT_IDS_MAX`]). Each leaves the claim; one that is not dirty again gets its TTL
/// back (a dirty record has none, see [`UPDATE_LUA`]). Nothing happens if a recovery started a
/// new generation since: the ids went back to the dirty set, and may be claimed anew.
const RELEASE_LUA: &str = r"
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[3] then
  return 0
end
redis.call('ZREM', KEYS[1], unpack(ARGV, 4))
local scores = redis.call('ZMSCORE', KEYS[2], unpack(ARGV, 4))
for i = 1, #ARGV - 3 do
  if not scores[i] then
    redis.call('PEXPIRE', ARGV[1] .. ARGV[i + 3], ARGV[2])
  end
end
return 1
";

/// The field that marks a buffered record dirty and not claimed (see [`UPDATE_LUA`]).
pub(crate) const DIRTY_MARKER: &str = "d";

/// Most ids one claim or release script handles, and records one read pipeline fetches (each id
/// costs Redis a few microseconds). Redis runs nothing else during a script, and the gateway parses
/// a pipeline's replies in one go, so a flush of thousands of records is cut into runs this size
/// rather than stalling buffered updates for milliseconds at a time (and Lua's `unpack` has a
/// limit near 8,000 values).
const BUFFER_SCRIPT_IDS_MAX: usize = 250;

/// Claims the oldest dirty ids. KEYS: dirty set, claim, claim generation. ARGV: max (at most
/// [`BUFFER_SCRIPT_IDS_MAX`]), the newest dirty-since score to take, the record key prefix.
/// Returns {generation, {id, dirty_since, ...}}, oldest first. An id the claim still holds (a
/// flush beside this one took it since the last recovery and is writing it) is left in the dirty
/// set and not returned: claimed twice, the first release would take it out of the claim and give
/// its record a TTL while the other flush still writes it, and a crash of that one would lose it.
/// Removes each claimed record's dirty marker `d`, so the next
/// update of it dirties it again (see [`UPDATE_LUA`]). Scores stay the strings Redis gives, so no Lua number formatting
/// touches them. Every step but the markers' is one call for all ids; the records themselves are
/// read afterwards, outside the script (see [`RedisBackend::buffer_claim`]).
///
/// The claim is a sorted set like the dirty set, not a hash: Redis keeps a hash of up to 512
/// short fields as a listpack, searched field by field, so claiming a run of 250 into a claim of
/// up to a batch's size cost Redis a linear search per id (2 µs per id for the lookup of earlier
/// claims alone); a sorted set past 128 members finds each in constant time.
const CLAIM_LUA: &str = r"
local generation = redis.call('GET', KEYS[3]) or '0'
local taken = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[1], 'WITHSCORES')
local n = #taken / 2
if n == 0 then
  return {generation, {}}
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
local ids = {}
for i = 1, n do
  ids[i] = taken[2 * i - 1]
end
local earlier = redis.call('ZMSCORE', KEYS[2], unpack(ids))
local claims, claimed, held = {}, {}, {}
for i = 1, n do
  local id, since = ids[i], taken[2 * i]
  if earlier[i] then
    held[#held + 1] = since
    held[#held + 1] = id
  else
    claims[#claims + 1] = since
    claims[#claims + 1] = id
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = since
    redis.call('HDEL', ARGV[3] .. id, 'd')
  end
end
if #held > 0 then
  redis.call('ZADD', KEYS[1], unpack(held))
end
if #claims > 0 then
  redis.call('ZADD', KEYS[2], unpack(claims))
end
return {generation, claimed}
";

/// Moves the claim back into the dirty set and starts the claim's next generation. KEYS: claim,
/// dirty set, the claim as a hash (id → dirty-since) that releases before the claim became a
/// sorted set left, so a batch claimed by one of them before an upgrade is not lost, claim
/// generation. ZADD LT adds absent ids and lowers (never raises) the score of ids dirty again.
/// Returns how many ids it moved.
const RECOVER_LUA: &str = r"
redis.call('INCR', KEYS[4])
local n_moved = 0
local claimed = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #claimed, 2 do
  redis.call('ZADD', KEYS[2], 'LT', claimed[i + 1], claimed[i])
  n_moved = n_moved + 1
end
local legacy = redis.call('HGETALL', KEYS[3])
for i = 1, #legacy, 2 do
  redis.call('ZADD', KEYS[2], 'LT', legacy[i + 1], legacy[i])
  n_moved = n_moved + 1
end
redis.call('DEL', KEYS[1], KEYS[3])
return n_moved
";

/// Raises a namespace's version counter. KEYS: version counter. ARGV: the least version it may
/// hold. Returns 1 if it raised it.
const RAISE_VERSION_LUA: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// Begins a buffer unless it was begun: sets its baseline and raises its version counter to it.
/// KEYS: baseline, the earlier release's flushed mark, version counter. ARGV: the baseline. A
/// buffer that release had flushed began before any baseline the caller could give now, so it
/// gets the lowest: a later one would hide that it may be older than the caller's durable copy.
const BEGIN_LUA: &str = r"
local baseline = ARGV[1]
if redis.call('EXISTS', KEYS[2]) == 1 then
  baseline = '0'
end
if redis.call('SET', KEYS[1], baseline, 'NX') and tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(baseline) then
  redis.call('SET', KEYS[3], baseline)
end
return 0
";

/// Buffer sizes. KEYS: dirty set, claim. Returns {n_dirty, n_claimed, n_in_both, oldest or nil},
/// the oldest as the original score string.
const STATS_LUA: &str = r"
local oldest = false
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first > 0 then
  oldest = first[2]
end
local first_claimed = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first_claimed > 0 and (not oldest or tonumber(first_claimed[2]) < tonumber(oldest)) then
  oldest = first_claimed[2]
end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZINTERCARD', 2, KEYS[1], KEYS[2]), oldest}
";

/// Takes or renews a lease. KEYS: lease. ARGV: holder, ttl_ms. Returns 1 if the holder has it now.
const LEASE_ACQUIRE_LUA: &str = r"
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Releases a lease if the holder has it. KEYS: lease. ARGV: holder.
const LEASE_RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
";

/// A Redis connection plus the key prefix.
pub(crate) struct RedisBackend {
    client: Client,
    connection: ConnectionManager,
    /// The flusher's connection: a claim's records (a large reply) parsed on the shared connection
    /// would hold up every reply queued behind it, buffered updates' acknowledgements included.
    bulk: ConnectionManager,
    prefix: String,
    put_session: Script,
    delete_session: Script,
    delete_all_sessions: Script,
    rotate_session: Script,
    hit_below: Script,
    undo_hit: Script,
    seed: Script,
    release: Script,
    claim: Script,
    recover: Script,
    stats: Script,
    lease_acquire: Script,
    lease_release: Script,
    raise_version: Script,
    begin: Script,
    /// Hands buffered updates to the batcher task, which ends once this (the only sender) is dropped.
    updates: mpsc::Sender<UpdateRequest>,
    /// Whether Redis answered the last attempt, shared with the batcher.
    reachability: Arc<Reachability>,
    /// The namespaces buffered updates have used (a handful), so their keys are built once.
    namespaces: Mutex<Vec<Arc<Namespace>>>,
}

/// Whether Redis is known to be unreachable, and the one attempt allowed meanwhile.
///
/// An attempt that loses the connection (or gets no answer in time) marks Redis down. While it is
/// down, each attempt asks [`Reachability::attempt`] first: one at a time gets through and tries
/// Redis (the `ConnectionManager` reconnects underneath it), the others are refused at once. The
/// first attempt that gets any answer, even an error reply, marks Redis up again. There is no
/// background probe: with no traffic nobody is waiting, and `/readyz` pings are attempts too.
#[derive(Debug, Default)]
struct Reachability {
    down: AtomicBool,
    /// Some attempt is trying Redis while it is down.
    probing: AtomicBool,
}

/// Leave to try Redis; while Redis is down, the one probe (given back when this is dropped, also
/// when the caller stops waiting half-way).
struct Attempt<'a> {
    reachability: &'a Reachability,
    probe: bool,
}

impl Reachability {
    /// Leave to try Redis, or `Unavailable` at once while it is down and another attempt is
    /// already finding out whether it is back.
    fn attempt(&self) -> Result<Attempt<'_>, KvError> {
        let probe = self.down.load(Ordering::Acquire);
        if probe && self.probing.swap(true, Ordering::AcqRel) {
            return Err(KvError::Unavailable("Redis is unreachable; trying to reconnect".to_owned()));
        }
        Ok(Attempt { reachability: self, probe })
    }
}

impl Attempt<'_> {
    /// Records how the attempt went: whether Redis answered at all.
    fn answered(&self, answered: bool) {
        let down = &self.reachability.down;
        if answered {
            if down.load(Ordering::Acquire) && down.swap(false, Ordering::AcqRel) {
                tracing::info!("Redis answers again");
            }
        } else if !down.swap(true, Ordering::AcqRel) {
            tracing::warn!("Redis is unreachable: refusing what needs it at once until it answers again");
        }
    }

    /// Records a finished attempt's result and passes it on.
    fn finish<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        self.answered(result.as_ref().map_or_else(|error| !lost_connection(error), |_| true));
        result
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.reachability.probing.store(false, Ordering::Release);
        }
    }
}

/// Whether the error means no answer came from Redis (as opposed to an error reply).
fn lost_connection(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
}

/// One caller's buffered update, waiting for the batcher.
struct UpdateRequest {
    namespace: Arc<Namespace>,
    /// Each field's name and value, then the id, packed as [`PackedFields`] packs them: one
    /// allocation per update instead of one per string.
    packed: Vec<u8>,
    /// Where the id starts in `packed`.
    id_at: usize,
    n_fields: usize,
    now_ms: u64,
    /// When the caller stops waiting ([`OPERATION_TIMEOUT`] after it called): the batcher
    /// answers by then.
    deadline: Instant,
    reply: oneshot::Sender<Result<BufferUpdate, KvError>>,
}

/// The keys of one buffer namespace, built once.
struct Namespace {
    name: String,
    /// `{prefix}{ns}:rec:`
    record_prefix: String,
    /// `{prefix}{ns}:dirty`
    dirty_key: String,
    /// `{prefix}{ns}:version`
    version_key: String,
}

fn unavailable(error: RedisError) -> KvError {
    KvError::Unavailable(error.to_string())
}

fn batcher_stopped() -> KvError {
    KvError::Unavailable("the buffered-update batcher has stopped".to_owned())
}

fn no_answer() -> KvError {
    KvError::Unavailable(no_answer_message())
}

fn no_answer_message() -> String {
    format!("no answer from Redis within {} s", OPERATION_TIMEOUT.as_secs())
}

/// The record's fields without the dirty marker, which is the update script's own (see
/// [`UPDATE_LUA`]), not a field of the caller's.
fn without_dirty_marker(fields: &mut Vec<Field>) {
    fields.retain(|(name, _)| name != DIRTY_MARKER);
}

/// `text` as a `SCAN MATCH` pattern that matches only itself (a key prefix may hold `*` or `[`).
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// The value in a `CONFIG GET` reply for one parameter; `None` for an error or no such parameter.
fn config_value(reply: &Value) -> Option<String> {
    let value = match reply {
        Value::Array(pair) => pair.get(1),
        Value::Map(pairs) => pairs.first().map(|(_, value)| value),
        _ => None,
    };
    match value {
        Some(Value::BulkString(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Some(Value::SimpleString(text)) => Some(text.clone()),
        _ => {
            tracing::debug!(?reply, "Redis did not tell a setting");
            None
        }
    }
}

/// A dirty-set score or claim value: whole milliseconds, as written by `buffer_update`.
fn parse_score(score: &str) -> Result<u64, KvError> {
    score
        .parse()
        .map_err(|_| KvError::Unavailable(format!("unexpected dirty-since value {score:?} in Redis")))
}

impl RedisBackend {
    pub(crate) async fn connect(url: &str, key_prefix: &str) -> Result<RedisBackend, KvError> {
        // The redis crate leaves Nagle's algorithm on. With several pipelines in flight on one
        // connection, a small write could then wait for Redis to acknowledge the last one, which
        // a receiver may delay by up to 40 ms.
        let info = url.into_connection_info().map_err(unavailable)?;
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        let client = Client::open(info.set_tcp_settings(tcp)).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(COMMAND_RECONNECT_RETRIES)
            .set_min_delay(COMMAND_RECONNECT_MIN_DELAY)
            .set_max_delay(COMMAND_RECONNECT_MAX_DELAY)
            .set_connection_timeout(Some(CONNECT_ATTEMPT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connect = || {
            first_connect("connection", ConnectionManager::new_with_config(client.clone(), config.clone()))
        };
        let mut connection = connect().await?;
        check_version(&mut connection).await?;
        let bulk = connect().await?;
        let (updates, queued) = mpsc::channel(UPDATE_QUEUE_CAPACITY);
        let reachability = Arc::new(Reachability::default());
        tokio::spawn(
            run_update_batcher(connection.clone(), Script::new(UPDATE_LUA), queued, reachability.clone())
                .instrument(tracing::info_span!("kv_update_batcher", prefix = %key_prefix)),
        );
        Ok(RedisBackend {
            client,
            connection,
            bulk,
            prefix: key_prefix.to_owned(),
            put_session: Script::new(PUT_SESSION_LUA),
            delete_session: Script::new(DELETE_SESSION_LUA),
            delete_all_sessions: Script::new(DELETE_ALL_SESSIONS_LUA),
            rotate_session: Script::new(ROTATE_SESSION_LUA),
            hit_below: Script::new(HIT_BELOW_LUA),
            undo_hit: Script::new(UNDO_HIT_LUA),
            seed: Script::new(SEED_LUA),
            release: Script::new(RELEASE_LUA),
            claim: Script::new(CLAIM_LUA),
            recover: Script::new(RECOVER_LUA),
            stats: Script::new(STATS_LUA),
            lease_acquire: Script::new(LEASE_ACQUIRE_LUA),
            lease_release: Script::new(LEASE_RELEASE_LUA),
            raise_version: Script::new(RAISE_VERSION_LUA),
            begin: Script::new(BEGIN_LUA),
            updates,
            reachability,
            namespaces: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn session_key(&self, token_hash: &str) -> String {
        format!("{}session:{token_hash}", self.prefix)
    }

    fn account_sessions_key(&self, account_id: &str) -> String {
        format!("{}account-sessions:{account_id}", self.prefix)
    }

    fn counter_key(&self, key: &str) -> String {
        format!("{}counter:{key}", self.prefix)
    }

    fn record_key(&self, ns: &str, id: &str) -> String {
        format!("{}{ns}:rec:{id}", self.prefix)
    }

    /// The keys of namespace `ns`, built on its first use.
    fn namespace(&self, ns: &str) -> Arc<Namespace> {
        let mut namespaces = self.namespaces.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(namespace) = namespaces.iter().find(|namespace| namespace.name == ns) {
            return Arc::clone(namespace);
        }
        let namespace = Arc::new(Namespace {
            name: ns.to_owned(),
            record_prefix: self.record_key(ns, ""),
            dirty_key: self.dirty_key(ns),
            version_key: self.version_key(ns),
        });
        namespaces.push(Arc::clone(&namespace));
        namespace
    }

    fn dirty_key(&self, ns: &str) -> String {
        format!("{}{ns}:dirty", self.prefix)
    }

    fn version_key(&self, ns: &str) -> String {
        format!("{}{ns}:version", self.prefix)
    }

    fn baseline_key(&self, ns: &str) -> String {
        format!("{}{ns}:baseline", self.prefix)
    }

    /// Where the release before baselines marked a buffer it had flushed (`"1"`).
    fn legacy_flushed_key(&self, ns: &str) -> String {
        format!("{}{ns}:flushed", self.prefix)
    }

    fn claim_key(&self, ns: &str) -> String {
        format!("{}{ns}:claimed", self.prefix)
    }

    fn claim_generation_key(&self, ns: &str) -> String {
        format!("{}{ns}:claim-generation", self.prefix)
    }

    /// Where releases before the claim became a sorted set kept it (see [`RECOVER_LUA`]).
    fn legacy_claim_key(&self, ns: &str) -> String {
        format!("{}{ns}:claim", self.prefix)
    }

    fn lease_key(&self, name: &str) -> String {
        format!("{}lease:{name}", self.prefix)
    }

    fn channel_name(&self, channel: &str) -> String {
        format!("{}{channel}", self.prefix)
    }

    /// Runs `operation` on the shared connection with an overall timeout.
    ///
    /// A refused connection means the command was never sent, so it is retried once: the failure has
    /// just started a fresh reconnect, and that makes the first command after Redis comes back succeed
    /// instead of reporting the outage that already ended. Other failures are not retried, since the
    /// command may have run.
    pub(crate) async fn run<T, F, Fut>(&self, operation: F) -> Result<T, KvError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run_on(&self.connection, operation).await
    }

    /// [`RedisBackend::run`] on the flusher's own connection.
    async fn run_bulk<T, F, Fut>(&self, operation: F) -> Result<T, KvError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run_on(&self.bulk, operation).await
    }

    async fn run_on<T, F, Fut>(&self, connection: &ConnectionManager, mut operation: F) -> Result<T, KvError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = self.reachability.attempt()?;
        let attempts = async {
            match operation(connection.clone()).await {
                Err(error) if error.is_connection_refusal() => operation(connection.clone()).await,
                result => result,
            }
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, attempts).await {
            Ok(result) => attempt.finish(result).map_err(unavailable),
            Err(_) => {
                attempt.answered(false);
                Err(no_answer())
            }
        }
    }

    /// The settings of this Redis under which buffered state can be lost or come back stale (see
    /// [`RiskySetting`]). A setting Redis does not tell (managed services often rename or disable
    /// `CONFIG`) counts as safe.
    pub(crate) async fn risky_settings(&self) -> Result<Vec<RiskySetting>, KvError> {
        // In a pipeline that keeps errors, a refused CONFIG is a reply, not a failure. One
        // parameter per CONFIG GET: Redis before 7.0 takes only one.
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        for parameter in ["maxmemory-policy", "save", "appendonly"] {
            pipeline.cmd("CONFIG").arg("GET").arg(parameter);
        }
        let pipeline = &pipeline;
        let replies: Vec<Value> =
            self.run(|mut connection| async move { pipeline.query_async(&mut connection).await }).await?;
        let [policy, save, appendonly] = [0, 1, 2].map(|n| replies.get(n).and_then(config_value));
        let mut risky = Vec::new();
        match policy {
            Some(policy) if policy.starts_with("allkeys-") => {
                risky.push(RiskySetting::EvictsKeysWithoutTtl { policy });
            }
            Some(policy) if policy.starts_with("volatile-") => {
                risky.push(RiskySetting::EvictsKeysWithTtl { policy });
            }
            _ => {}
        }
        if let (Some(save), Some("no")) = (save, appendonly.as_deref())
            && !save.trim().is_empty()
        {
            risky.push(RiskySetting::SnapshotsWithoutAppendOnlyFile { save });
        }
        Ok(risky)
    }

    pub(crate) async fn ping(&self) -> Result<(), KvError> {
        let command = redis::cmd("PING");
        let command = &command;
        self.run(|mut connection| async move { command.query_async::<String>(&mut connection).await })
            .await
            .map(drop)
    }

    pub(crate) async fn session_put(
        &self,
        token_hash: &str,
        account_id: &str,
        record: &[u8],
        idle_ttl: Duration,
        index_ttl: Duration,
        max_per_account: usize,
    ) -> Result<Vec<String>, KvError> {
        let mut invocation = self.put_session.prepare_invoke();
        invocation
            .key(self.session_key(token_hash))
            .key(self.account_sessions_key(account_id))
            .arg(token_hash)
            .arg(record)
            .arg(millis(idle_ttl))
            .arg(millis(index_ttl))
            .arg(self.session_key(""))
            .arg(crate::session_prune_max(max_per_account))
            .arg(max_per_account);
        let invocation = &invocation;
        self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await
    }

    pub(crate) async fn session_update(
        &self,
        token_hash: &str,
        record: &[u8],
        idle_ttl: Duration,
    ) -> Result<bool, KvError> {
        let mut command = redis::cmd("SET");
        command.arg(self.session_key(token_hash)).arg(record).arg("PX").arg(millis(idle_ttl)).arg("XX");
        let command = &command;
        let reply: Value =
            self.run(|mut connection| async move { command.query_async(&mut connection).await }).await?;
        Ok(reply != Value::Nil)
    }

    pub(crate) async fn session_rotate(
        &self,
        old_token_hash: &str,
        account_id: &str,
        new_token_hash: &str,
        record: &[u8],
        idle_ttl: Duration,
        index_ttl: Duration,
    ) -> Result<bool, KvError> {
        let mut invocation = self.rotate_session.prepare_invoke();
        invocation
            .key(self.session_key(old_token_hash))
            .key(self.account_sessions_key(account_id))
            .key(self.session_key(new_token_hash))
            .arg(old_token_hash)
            .arg(new_token_hash)
            .arg(record)
            .arg(millis(idle_ttl))
            .arg(millis(index_ttl));
        let invocation = &invocation;
        let rotated: u64 =
            self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await?;
        Ok(rotated == 1)
    }

    pub(crate) async fn session_get_touch(
        &self,
        token_hash: &str,
        idle_ttl: Duration,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let mut command = redis::cmd("GETEX");
        command.arg(self.session_key(token_hash)).arg("PX").arg(millis(idle_ttl));
        let command = &command;
        self.run(|mut connection| async move { command.query_async(&mut connection).await }).await
    }

    pub(crate) async fn session_expire_within(&self, token_hash: &str, ttl: Duration) -> Result<(), KvError> {
        let mut command = redis::cmd("PEXPIRE");
        // LT: only ever shortens, so a call racing a newer, shorter TTL never lengthens it.
        command.arg(self.session_key(token_hash)).arg(millis(ttl)).arg("LT");
        let command = &command;
        self.run(|mut connection| async move { command.query_async::<u64>(&mut connection).await })
            .await
            .map(drop)
    }

    pub(crate) async fn session_ttl(&self, token_hash: &str) -> Result<Option<Duration>, KvError> {
        let mut command = redis::cmd("PTTL");
        command.arg(self.session_key(token_hash));
        let command = &command;
        let ttl_ms: i64 =
            self.run(|mut connection| async move { command.query_async(&mut connection).await }).await?;
        // -2: no such key; -1: no TTL, which no session is stored without.
        Ok(u64::try_from(ttl_ms).ok().map(Duration::from_millis))
    }

    pub(crate) async fn session_delete(&self, token_hash: &str, account_id: &str) -> Result<bool, KvError> {
        let mut invocation = self.delete_session.prepare_invoke();
        invocation
            .key(self.session_key(token_hash))
            .key(self.account_sessions_key(account_id))
            .arg(token_hash);
        let invocation = &invocation;
        let n_deleted: u64 =
            self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await?;
        Ok(n_deleted > 0)
    }

    pub(crate) async fn sessions_delete_all(&self, account_id: &str) -> Result<Vec<String>, KvError> {
        let mut invocation = self.delete_all_sessions.prepare_invoke();
        invocation.key(self.account_sessions_key(account_id)).arg(self.session_key(""));
        let invocation = &invocation;
        self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await
    }

    pub(crate) async fn counter_hit(&self, key: &str, window: Duration) -> Result<u64, KvError> {
        let counter_key = self.counter_key(key);
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("INCR")
            .arg(&counter_key)
            // NX: only a counter this INCR created (no TTL yet) gets the window.
            .cmd("PEXPIRE")
            .arg(&counter_key)
            .arg(millis(window))
            .arg("NX")
            .ignore();
        let pipeline = &pipeline;
        let (count,): (u64,) =
            self.run(|mut connection| async move { pipeline.query_async(&mut connection).await }).await?;
        Ok(count)
    }

    pub(crate) async fn counters_hit_below(
        &self,
        counters: &[(&str, u64)],
        window: Duration,
    ) -> Result<bool, KvError> {
        let mut invocation = self.hit_below.prepare_invoke();
        invocation.arg(millis(window));
        for &(key, limit) in counters {
            invocation.key(self.counter_key(key)).arg(limit);
        }
        let invocation = &invocation;
        let counted: u64 =
            self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await?;
        Ok(counted == 1)
    }

    pub(crate) async fn counter_undo_hit(&self, key: &str) -> Result<(), KvError> {
        let mut invocation = self.undo_hit.prepare_invoke();
        invocation.key(self.counter_key(key));
        let invocation = &invocation;
        self.run(|mut connection| async move { invocation.invoke_async::<()>(&mut connection).await }).await
    }

    pub(crate) async fn counter_get(&self, key: &str) -> Result<u64, KvError> {
        let mut command = redis::cmd("GET");
        command.arg(self.counter_key(key));
        let command = &command;
        let count: Option<u64> =
            self.run(|mut connection| async move { command.query_async(&mut connection).await }).await?;
        Ok(count.unwrap_or(0))
    }

    pub(crate) async fn counter_reset(&self, key: &str) -> Result<(), KvError> {
        let mut command = redis::cmd("DEL");
        command.arg(self.counter_key(key));
        let command = &command;
        self.run(|mut connection| async move { command.query_async::<()>(&mut connection).await }).await
    }

    pub(crate) async fn publish(&self, channel: &str, payload: &[u8]) -> Result<u64, KvError> {
        let mut command = redis::cmd("PUBLISH");
        command.arg(self.channel_name(channel)).arg(payload);
        let command = &command;
        self.run(|mut connection| async move { command.query_async(&mut connection).await }).await
    }

    /// Queues the update for the batcher and waits for its answer, for at most the operation timeout
    /// in all (queueing included), so a caller never hangs behind a backlog.
    pub(crate) async fn buffer_update(
        &self,
        ns: &str,
        id: &str,
        fields: PackedFields,
        now_ms: u64,
    ) -> Result<BufferUpdate, KvError> {
        let (reply, answer) = oneshot::channel();
        let n_fields = fields.len();
        let mut packed = fields.packed;
        let id_at = packed.len();
        put_text(&mut packed, id.as_bytes());
        let request = UpdateRequest {
            namespace: self.namespace(ns),
            packed,
            id_at,
            n_fields,
            now_ms,
            deadline: Instant::now() + OPERATION_TIMEOUT,
            reply,
        };
        // No timer per update (a timer costs a lock to register and another to clear): the
        // batcher answers every update by its deadline, and only a full queue needs one here.
        let deadline = request.deadline;
        match self.updates.try_send(request) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(request)) => {
                match tokio::time::timeout_at(deadline, self.updates.send(request)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(batcher_stopped()),
                    Err(_) => return Err(no_answer()),
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(batcher_stopped()),
        }
        answer
            .await
            .map_err(|_| KvError::Unavailable("the buffered-update batcher dropped the update".to_owned()))?
    }

    pub(crate) async fn buffer_seed(
        &self,
        ns: &str,
        id: &str,
        fields: &[Field],
        ttl: Duration,
    ) -> Result<bool, KvError> {
        let mut invocation = self.seed.prepare_invoke();
        invocation.key(self.record_key(ns, id)).key(self.version_key(ns)).arg(millis(ttl));
        for (name, value) in fields {
            invocation.arg(name).arg(value);
        }
        let invocation = &invocation;
        self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await
    }

    pub(crate) async fn buffer_get(&self, ns: &str, id: &str) -> Result<Option<Vec<Field>>, KvError> {
        let mut command = redis::cmd("HGETALL");
        command.arg(self.record_key(ns, id));
        let command = &command;
        let mut fields: Vec<Field> =
            self.run(|mut connection| async move { command.query_async(&mut connection).await }).await?;
        // Redis has no empty hashes: no fields means no record.
        Ok(if fields.is_empty() {
            None
        } else {
            without_dirty_marker(&mut fields);
            Some(fields)
        })
    }

    /// Claims in runs of at most [`BUFFER_SCRIPT_IDS_MAX`] ids, then reads each run's records in
    /// one pipeline, while the next run is claimed. Reading after the claim is safe: an update in
    /// between leaves newer fields (a newer version to write) and dirties the record again, so
    /// nothing acknowledged is missed.
    pub(crate) async fn buffer_claim(
        &self,
        ns: &str,
        max: usize,
        dirty_until_ms: u64,
    ) -> Result<BufferClaim, KvError> {
        let mut claimed = Vec::with_capacity(max.min(4 * BUFFER_SCRIPT_IDS_MAX));
        let mut remaining = max;
        let mut run = remaining.min(BUFFER_SCRIPT_IDS_MAX);
        let (mut generation, mut taken) = self.claim_run(ns, run, dirty_until_ms).await?.unwrap_or_default();
        while !taken.is_empty() {
            // A short run means nothing older than the cut-off is left to claim (or that ids
            // still claimed were left dirty, to be claimed once released).
            remaining = if taken.len() < run { 0 } else { remaining - run };
            run = remaining.min(BUFFER_SCRIPT_IDS_MAX);
            let (records, next) = futures_util::future::join(
                self.read_records(ns, &taken),
                self.claim_run(ns, run, dirty_until_ms),
            )
            .await;
            // A record Redis lost (a restart) leaves the claim and is not returned.
            let mut vanished = Vec::new();
            for ((id, since), fields) in taken.into_iter().zip(records?) {
                if fields.is_empty() {
                    vanished.push(id);
                } else {
                    claimed.push(ClaimedRecord { id, fields, dirty_since_ms: parse_score(&since)? });
                }
            }
            if !vanished.is_empty() {
                let mut command = redis::cmd("ZREM");
                command.arg(self.claim_key(ns)).arg(&vanished);
                let command = &command;
                self.run_bulk(
                    |mut connection| async move { command.query_async::<()>(&mut connection).await },
                )
                .await?;
            }
            taken = match next? {
                // A recovery between two runs put what the earlier ones took back into the
                // dirty set: it is no longer this claim's to write.
                Some((next_generation, next_taken)) if next_generation != generation => {
                    claimed.clear();
                    generation = next_generation;
                    next_taken
                }
                Some((_, next_taken)) => next_taken,
                None => Vec::new(),
            };
        }
        Ok(BufferClaim { records: claimed, generation })
    }

    /// One run of the claim script: the claim's generation and at most `run` ids with their
    /// dirty-since scores, oldest first (`None`, without asking Redis, for a run of 0).
    async fn claim_run(
        &self,
        ns: &str,
        run: usize,
        dirty_until_ms: u64,
    ) -> Result<Option<(u64, Vec<(String, String)>)>, KvError> {
        if run == 0 {
            return Ok(None);
        }
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(self.dirty_key(ns))
            .key(self.claim_key(ns))
            .key(self.claim_generation_key(ns))
            .arg(run)
            .arg(dirty_until_ms)
            .arg(self.record_key(ns, ""));
        let invocation = &invocation;
        self.run_bulk(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await
    }

    /// The fields of each claimed record (none for a record that is gone), in one pipeline.
    async fn read_records(&self, ns: &str, taken: &[(String, String)]) -> Result<Vec<Vec<Field>>, KvError> {
        let mut reads = redis::pipe();
        for (id, _) in taken {
            reads.cmd("HGETALL").arg(self.record_key(ns, id));
        }
        let reads = &reads;
        let mut records: Vec<Vec<Field>> =
            self.run_bulk(|mut connection| async move { reads.query_async(&mut connection).await }).await?;
        for fields in &mut records {
            without_dirty_marker(fields);
        }
        Ok(records)
    }

    pub(crate) async fn buffer_release(
        &self,
        ns: &str,
        ids: &[String],
        generation: u64,
        ttl: Duration,
    ) -> Result<(), KvError> {
        for ids in ids.chunks(BUFFER_SCRIPT_IDS_MAX) {
            let mut invocation = self.release.prepare_invoke();
            invocation
                .key(self.claim_key(ns))
                .key(self.dirty_key(ns))
                .key(self.claim_generation_key(ns))
                .arg(self.record_key(ns, ""))
                .arg(millis(ttl))
                .arg(generation)
                .arg(ids);
            let invocation = &invocation;
            self.run_bulk(
                |mut connection| async move { invocation.invoke_async::<()>(&mut connection).await },
            )
            .await?;
        }
        Ok(())
    }

    pub(crate) async fn buffer_recover(&self, ns: &str) -> Result<u64, KvError> {
        let mut invocation = self.recover.prepare_invoke();
        invocation
            .key(self.claim_key(ns))
            .key(self.dirty_key(ns))
            .key(self.legacy_claim_key(ns))
            .key(self.claim_generation_key(ns));
        let invocation = &invocation;
        self.run_bulk(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await
    }

    pub(crate) async fn buffer_stats(&self, ns: &str) -> Result<BufferStats, KvError> {
        let mut invocation = self.stats.prepare_invoke();
        invocation.key(self.dirty_key(ns)).key(self.claim_key(ns));
        let invocation = &invocation;
        let (n_dirty, n_claimed, n_in_both, oldest): (u64, u64, u64, Option<String>) =
            self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await?;
        let oldest_dirty_ms = oldest.as_deref().map(parse_score).transpose()?;
        let n_buffered = (n_dirty + n_claimed).saturating_sub(n_in_both);
        Ok(BufferStats { n_dirty, n_claimed, n_buffered, oldest_dirty_ms })
    }

    pub(crate) async fn buffer_version(&self, ns: &str) -> Result<BufferVersion, KvError> {
        let mut command = redis::cmd("MGET");
        command.arg(self.version_key(ns)).arg(self.baseline_key(ns)).arg(self.legacy_flushed_key(ns));
        let command = &command;
        let (last, baseline, legacy_flushed): (Option<u64>, Option<u64>, Option<String>) =
            self.run(|mut connection| async move { command.query_async(&mut connection).await }).await?;
        // The earlier release's mark: see `BEGIN_LUA`.
        let baseline = baseline.or(legacy_flushed.map(|_| 0));
        Ok(BufferVersion { last: last.unwrap_or(0), baseline })
    }

    pub(crate) async fn buffer_begin(&self, ns: &str, baseline: u64) -> Result<(), KvError> {
        let mut invocation = self.begin.prepare_invoke();
        invocation
            .key(self.baseline_key(ns))
            .key(self.legacy_flushed_key(ns))
            .key(self.version_key(ns))
            .arg(baseline);
        let invocation = &invocation;
        self.run(|mut connection| async move { invocation.invoke_async::<()>(&mut connection).await }).await
    }

    pub(crate) async fn buffer_raise_version(&self, ns: &str, at_least: u64) -> Result<bool, KvError> {
        let mut invocation = self.raise_version.prepare_invoke();
        invocation.key(self.version_key(ns)).arg(at_least);
        let invocation = &invocation;
        self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await
    }

    /// Deletes the dirty set and the claim, then walks the namespace's record keys with `SCAN`, a
    /// page at a time, deleting each page with one `DEL`, so Redis is never held for long.
    ///
    /// The sets go first: a record seeded again while the walk runs carries the dirty marker, so
    /// its later updates never add it to the dirty set again, and deleting the set after it would
    /// leave it unflushed for good. The other way round, an update of an old record the walk has
    /// not reached yet may put its id in the new dirty set; the walk deletes the record, and the
    /// claim skips an id whose record is gone.
    pub(crate) async fn buffer_drop_all(&self, ns: &str) -> Result<u64, KvError> {
        let mut delete = redis::cmd("DEL");
        delete.arg(self.dirty_key(ns)).arg(self.claim_key(ns)).arg(self.legacy_claim_key(ns));
        let delete = &delete;
        self.run_bulk(|mut connection| async move { delete.query_async::<()>(&mut connection).await })
            .await?;
        let pattern = format!("{}*", escape_glob(&self.record_key(ns, "")));
        let mut cursor = 0_u64;
        let mut n_dropped = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(BUFFER_SCRIPT_IDS_MAX);
            let scan = &scan;
            let (next, keys): (u64, Vec<String>) = self
                .run_bulk(|mut connection| async move { scan.query_async(&mut connection).await })
                .await?;
            if !keys.is_empty() {
                let mut delete = redis::cmd("DEL");
                delete.arg(&keys);
                let delete = &delete;
                let deleted: u64 = self
                    .run_bulk(|mut connection| async move { delete.query_async(&mut connection).await })
                    .await?;
                n_dropped += deleted;
            }
            if next == 0 {
                return Ok(n_dropped);
            }
            cursor = next;
        }
    }

    pub(crate) async fn lease_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, KvError> {
        let mut invocation = self.lease_acquire.prepare_invoke();
        invocation.key(self.lease_key(name)).arg(holder).arg(millis(ttl));
        let invocation = &invocation;
        self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await
    }

    pub(crate) async fn lease_release(&self, name: &str, holder: &str) -> Result<(), KvError> {
        let mut invocation = self.lease_release.prepare_invoke();
        invocation.key(self.lease_key(name)).arg(holder);
        let invocation = &invocation;
        self.run(|mut connection| async move { invocation.invoke_async::<()>(&mut connection).await }).await
    }

    /// Makes the first subscription here (so the caller knows it is confirmed), then hands the
    /// connection to a spawned task that forwards and reconnects.
    pub(crate) async fn subscribe(
        &self,
        channel: &str,
        sender: mpsc::Sender<Vec<u8>>,
        shutdown: CancellationToken,
        ended: Unsubscribed,
    ) -> Result<(), KvError> {
        let channel = self.channel_name(channel);
        let pubsub = first_connect("subscription", open_pubsub(&self.client, &channel)).await?;
        let span = tracing::info_span!("kv_subscription", %channel);
        let subscription = Resubscribing { client: self.client.clone(), channel, sender, shutdown, ended };
        tokio::spawn(run_subscription(subscription, pubsub).instrument(span));
        Ok(())
    }
}

/// A first connection or subscription (`what`), given up after [`FIRST_CONNECT_TIMEOUT`].
async fn first_connect<T>(
    what: &str,
    connecting: impl Future<Output = RedisResult<T>>,
) -> Result<T, KvError> {
    tokio::time::timeout(FIRST_CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| {
            KvError::Unavailable(format!("no {what} to Redis within {} s", FIRST_CONNECT_TIMEOUT.as_secs()))
        })?
        .map_err(unavailable)
}

/// Refuses a Redis older than [`crate::MIN_REDIS_MAJOR`], before anything runs a script on it.
async fn check_version(connection: &mut ConnectionManager) -> Result<(), KvError> {
    let info: String = redis::cmd("INFO").arg("server").query_async(connection).await.map_err(unavailable)?;
    match redis_version(&info) {
        Some((major, version)) if major < crate::MIN_REDIS_MAJOR => {
            Err(KvError::UnsupportedRedis { found: version.to_owned() })
        }
        // A server that does not say (a proxy, say) is given the benefit of the doubt.
        _ => Ok(()),
    }
}

/// The major version and the whole version string from `INFO server`'s `redis_version` line.
fn redis_version(info: &str) -> Option<(u32, &str)> {
    let version = info.lines().find_map(|line| line.strip_prefix("redis_version:"))?.trim();
    let major = version.split('.').next()?.parse().ok()?;
    Some((major, version))
}

/// Opens a dedicated pub/sub connection and subscribes; resolves once Redis confirmed.
async fn open_pubsub(client: &Client, channel: &str) -> RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// What a subscription's task holds besides its connection.
struct Resubscribing {
    client: Client,
    channel: String,
    sender: mpsc::Sender<Vec<u8>>,
    shutdown: CancellationToken,
    /// Says whether the subscription receives; marks it ended when the task ends.
    ended: Unsubscribed,
}

/// Forwards messages until shutdown or until the subscription is dropped, reconnecting whenever the
/// connection ends.
async fn run_subscription(subscription: Resubscribing, mut pubsub: PubSub) {
    let Resubscribing { client, channel, sender, shutdown, ended } = subscription;
    loop {
        match forward_until_disconnected(pubsub, &sender, &shutdown, &ended.0).await {
            Ended::Stop => return,
            Ended::Disconnected => tracing::warn!(
                "pub/sub connection to Redis lost; reconnecting (messages published meanwhile are lost)"
            ),
            Ended::Unanswered => tracing::warn!(
                timeout_ms = millis(RESPONSE_TIMEOUT),
                "pub/sub connection to Redis did not answer its heartbeat; reconnecting \
                 (messages published meanwhile are lost)"
            ),
        }
        ended.0.set(false);
        match reconnect(&client, &channel, &sender, &shutdown).await {
            Some(fresh) => {
                tracing::info!("pub/sub connection to Redis restored");
                ended.0.set(true);
                pubsub = fresh;
            }
            None => return,
        }
    }
}

/// Why [`forward_until_disconnected`] returned.
#[derive(PartialEq, Eq)]
enum Ended {
    /// Shutdown, or the subscription was dropped: the task ends.
    Stop,
    /// The connection ended: reconnect.
    Disconnected,
    /// The connection did not answer a heartbeat in time (half-open, or Redis hung): reconnect.
    Unanswered,
}

/// Forwards messages, pinging the connection every [`SUBSCRIPTION_HEARTBEAT`], until shutdown, the
/// subscription is dropped, the connection ends or a ping goes unanswered.
async fn forward_until_disconnected(
    pubsub: PubSub,
    sender: &mpsc::Sender<Vec<u8>>,
    shutdown: &CancellationToken,
    subscribed: &Subscribed,
) -> Ended {
    let (mut commands, mut messages) = pubsub.split();
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + SUBSCRIPTION_HEARTBEAT, SUBSCRIPTION_HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ended::Stop,
            () = sender.closed() => return Ended::Stop,
            message = messages.next() => match message {
                Some(message) => message,
                None => return Ended::Disconnected,
            },
            _ = heartbeat.tick() => {
                // Messages that arrive meanwhile wait in the connection's own queue, for one
                // round trip every few seconds.
                let ping = tokio::time::timeout(RESPONSE_TIMEOUT, commands.ping::<Value>());
                tokio::select! {
                    () = shutdown.cancelled() => return Ended::Stop,
                    answer = ping => match answer {
                        Ok(Ok(_)) => continue,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "pub/sub heartbeat failed");
                            return Ended::Disconnected;
                        }
                        Err(_) => return Ended::Unanswered,
                    },
                }
            }
        };
        if !forward(sender, subscribed, message.get_payload_bytes().to_vec()) {
            return Ended::Stop;
        }
    }
}

/// Tries to subscribe again with backoff until it works (`Some`) or the task should stop (`None`).
async fn reconnect(
    client: &Client,
    channel: &str,
    sender: &mpsc::Sender<Vec<u8>>,
    shutdown: &CancellationToken,
) -> Option<PubSub> {
    let mut delay = SUBSCRIBE_BACKOFF_MIN;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = sender.closed() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        let attempt = tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, open_pubsub(client, channel));
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = sender.closed() => return None,
            result = attempt => match result {
                Ok(Ok(pubsub)) => return Some(pubsub),
                Ok(Err(error)) => tracing::debug!(%error, "pub/sub reconnect attempt failed"),
                Err(_) => tracing::debug!("pub/sub reconnect attempt timed out"),
            },
        }
        delay = (delay * 2).min(SUBSCRIBE_BACKOFF_MAX);
    }
}

/// Gathers queued buffered updates into one pipeline per batch until every sender is gone (the last
/// `Kv` clone was dropped). Up to [`UPDATE_BATCHES_IN_FLIGHT`] batches run at once, so encoding the
/// next batch and parsing the last one's replies overlap with Redis executing the current one.
/// The batches run inside this task rather than as tasks of their own: under load every hand-over
/// between tasks waits its turn on a busy core, and an update already crosses several.
///
/// Batches in flight may complete in any order. That is safe because one connection's requests
/// are answered in order by the gateway: a player's next update is sent only after the previous
/// one was acknowledged, so no two batches in flight hold updates from the same connection.
async fn run_update_batcher(
    connection: ConnectionManager,
    script: Script,
    mut queued: mpsc::Receiver<UpdateRequest>,
    reachability: Arc<Reachability>,
) {
    let mut in_flight = FuturesUnordered::new();
    // Emptied batch buffers handed back by finished batches: allocating a fresh one per batch
    // made every batch pay for a large allocation.
    let mut spare: Vec<Vec<UpdateRequest>> = Vec::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        let mut batch = spare.pop().unwrap_or_else(|| Vec::with_capacity(UPDATE_BATCH_MAX));
        tokio::select! {
            received = queued.recv_many(&mut batch, UPDATE_BATCH_MAX), if open && in_flight.len() < UPDATE_BATCHES_IN_FLIGHT => {
                if received == 0 {
                    open = false;
                    continue;
                }
                // A caller that gave up gets no answer, so its update is not made either; nor is
                // one whose deadline passed while it was queued.
                let now = Instant::now();
                for expired in batch.extract_if(.., |request| request.deadline <= now || request.reply.is_closed()) {
                    let _ = expired.reply.send(Err(no_answer()));
                }
                if batch.is_empty() {
                    spare.push(batch);
                } else {
                    let mut connection = connection.clone();
                    let (script, reachability) = (&script, &*reachability);
                    in_flight.push(async move {
                        run_update_batch(&mut connection, script, reachability, &mut batch).await;
                        batch
                    });
                }
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                spare.push(batch);
                spare.push(done);
            }
        }
    }
}

/// Sends one batch and answers every caller in it, leaving `batch` empty. While Redis is down the
/// batch is refused at once; when it holds the probe, a `PING` then finds out whether Redis is
/// back, so no update waits through the reconnect attempts.
async fn run_update_batch(
    connection: &mut ConnectionManager,
    script: &Script,
    reachability: &Reachability,
    batch: &mut Vec<UpdateRequest>,
) {
    let attempt = match reachability.attempt() {
        Ok(attempt) => attempt,
        Err(refused) => return answer_all(batch.drain(..), &refused.to_string()),
    };
    if attempt.probe {
        answer_all(batch.drain(..), "Redis is unreachable; trying to reconnect");
        let ping = redis::cmd("PING");
        match tokio::time::timeout(OPERATION_TIMEOUT, ping.query_async::<Value>(connection)).await {
            Ok(result) => drop(attempt.finish(result)),
            Err(_) => attempt.answered(false),
        }
        return;
    }
    let chunks = chunks(batch);
    // Every caller is answered by its deadline: the batch ends by the earliest one.
    let deadline = batch.iter().map(|request| request.deadline).min().unwrap_or_else(Instant::now);
    match tokio::time::timeout_at(deadline, apply_updates(connection, script, batch, &chunks)).await {
        Ok(Ok(replies)) => {
            attempt.answered(true);
            let mut requests = batch.drain(..);
            for (chunk, reply) in chunks.iter().zip(replies) {
                answer_chunk(requests.by_ref().take(chunk.len()), reply);
            }
        }
        Ok(Err(error)) => {
            attempt.answered(!lost_connection(&error));
            answer_all(batch.drain(..), &error.to_string());
        }
        Err(_) => {
            attempt.answered(false);
            answer_all(batch.drain(..), &no_answer_message());
        }
    }
}

/// Splits a batch into runs of the update script: consecutive updates of one namespace, at most
/// [`UPDATE_CHUNK_MAX`] each.
fn chunks(batch: &[UpdateRequest]) -> Vec<std::ops::Range<usize>> {
    let mut chunks = Vec::with_capacity(batch.len().div_ceil(UPDATE_CHUNK_MAX));
    let mut start = 0;
    for index in 1..=batch.len() {
        let ends = index == batch.len()
            || index - start == UPDATE_CHUNK_MAX
            || !Arc::ptr_eq(&batch[index].namespace, &batch[start].namespace);
        if ends {
            chunks.push(start..index);
            start = index;
        }
    }
    chunks
}

/// Runs the batch's chunks and returns one reply per chunk.
///
/// Redis forgets its scripts when it restarts: an `EVALSHA` it does not know fails with `NOSCRIPT`
/// and does nothing, so exactly those chunks are retried once after `SCRIPT LOAD`. Not the whole
/// batch: another client may load the script while the pipeline runs, and then the chunks after
/// that point have already been applied.
async fn apply_updates(
    connection: &mut ConnectionManager,
    script: &Script,
    batch: &[UpdateRequest],
    chunks: &[std::ops::Range<usize>],
) -> RedisResult<Vec<Value>> {
    let mut replies = query_updates(connection, script, batch, chunks.iter()).await?;
    if replies.len() != chunks.len() {
        return Err(unexpected_reply_count(replies.len(), chunks.len()));
    }
    let unknown_script: Vec<usize> =
        replies.iter().enumerate().filter(|(_, reply)| is_noscript(reply)).map(|(index, _)| index).collect();
    if unknown_script.is_empty() {
        return Ok(replies);
    }
    tracing::info!(
        n_chunks = unknown_script.len(),
        "Redis does not know the buffered-update script (restarted?); loading it and retrying"
    );
    script.load_async(connection).await?;
    let retried =
        query_updates(connection, script, batch, unknown_script.iter().map(|&index| &chunks[index])).await?;
    if retried.len() != unknown_script.len() {
        return Err(unexpected_reply_count(retried.len(), unknown_script.len()));
    }
    for (index, reply) in unknown_script.into_iter().zip(retried) {
        replies[index] = reply;
    }
    Ok(replies)
}

fn unexpected_reply_count(n_replies: usize, n_commands: usize) -> RedisError {
    RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "wrong number of replies",
        format!("{n_replies} replies to a pipeline of {n_commands} update scripts"),
    ))
}

/// Sends one pipeline with an `EVALSHA` per chunk, keeping each command's error in its reply.
/// Retried once if the connection was refused (nothing was sent), like [`RedisBackend::run`].
async fn query_updates<'a>(
    connection: &mut ConnectionManager,
    script: &Script,
    batch: &[UpdateRequest],
    chunks: impl Iterator<Item = &'a std::ops::Range<usize>>,
) -> RedisResult<Vec<Value>> {
    let mut pipeline = redis::pipe();
    pipeline.ignore_errors();
    for chunk in chunks {
        let requests = &batch[chunk.clone()];
        let first = &requests[0];
        let command = pipeline
            .cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(2)
            .arg(&first.namespace.dirty_key)
            .arg(&first.namespace.version_key)
            .arg(&first.namespace.record_prefix)
            .arg(requests.len());
        for request in requests {
            let (fields, id) = request.packed.split_at(request.id_at);
            command
                .arg(unpack_texts(id).next().unwrap_or_default())
                .arg(request.now_ms)
                .arg(request.n_fields);
            for text in unpack_texts(fields) {
                command.arg(text);
            }
        }
    }
    match pipeline.query_async(connection).await {
        Err(error) if error.is_connection_refusal() => pipeline.query_async(connection).await,
        result => result,
    }
}

fn is_noscript(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(error) if error.kind() == Some(ServerErrorKind::NoScript))
}

/// Answers the updates of one chunk from the script's reply: the version before the chunk, the size
/// of the dirty set and which updates applied (see [`UPDATE_LUA`]); or one error for all.
fn answer_chunk(requests: impl ExactSizeIterator<Item = UpdateRequest>, reply: Value) {
    let n_requests = requests.len();
    match reply {
        Value::Array(values) => match values.as_slice() {
            [Value::Int(base), Value::Int(n_dirty), Value::BulkString(applied)]
                if applied.len() == n_requests =>
            {
                let n_dirty = u64::try_from(*n_dirty).unwrap_or_default();
                let mut version = u64::try_from(*base).unwrap_or_default();
                for (request, &applied) in requests.zip(applied) {
                    let outcome = if applied == b'1' {
                        version += 1;
                        BufferUpdate::Applied { version, n_dirty }
                    } else {
                        BufferUpdate::NotLoaded
                    };
                    // A caller that stopped waiting is no reason to fail the others.
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            _ => {
                let error = format!("unexpected reply to {n_requests} buffered updates: {values:?}");
                answer_all(requests, &error);
            }
        },
        Value::ServerError(error) => {
            let error = RedisError::from(error).to_string();
            answer_all(requests, &error);
        }
        reply => {
            let error = format!("unexpected reply to {n_requests} buffered updates: {reply:?}");
            answer_all(requests, &error);
        }
    }
}

/// Fails every update of the batch with `error`.
fn answer_all(batch: impl IntoIterator<Item = UpdateRequest>, error: &str) {
    for request in batch {
        let _ = request.reply.send(Err(KvError::Unavailable(error.to_owned())));
    }
}

#[cfg(test)]
mod tests {
    use super::redis_version;

    #[test]
    fn the_version_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:6.2.14\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(redis_version(info), Some((6, "6.2.14")));
        assert_eq!(redis_version("redis_version:7.0.15\r\n"), Some((7, "7.0.15")));
        assert_eq!(redis_version("# Server\r\nos:Linux\r\n"), None);
    }
}
