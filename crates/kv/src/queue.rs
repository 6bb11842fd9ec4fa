//! Waiting queues of tickets (the matchmaking queue): who waits in which mode, since when, with
//! which rating, and the atomic claim that takes a formed group out of the queue.
//!
//! A queue named `{queue}` (e.g. `"match"`) lives under three kinds of keys:
//! - `{prefix}{queue}:tickets` (HASH: player id → `"{rating} {enqueued_at_ms} {mode}"`), one field
//!   per waiting player, so a player waits in at most one mode of a queue at a time;
//! - `{prefix}{queue}:q:{mode}` (ZSET: player id, score = enqueued_at_ms), the players waiting in
//!   one mode, oldest first;
//! - `{prefix}{queue}:away` (ZSET: player id, score = ms since when the player is away), the
//!   waiting players with no live connection, whom [`Kv::queue_remove_away`] removes once they
//!   have been away long enough;
//! - `{prefix}{queue}:claimed` (ZSET: player id, score = ms of the claim), the players of groups
//!   claimed for a match that is not yet settled: their tickets stay in the hash, out of their
//!   mode's set, until the match is recorded ([`Kv::queue_settle`]) or not
//!   ([`Kv::queue_unclaim`] puts them back). A player who leaves meanwhile is no longer waiting
//!   (the leave finds nothing to cancel) but loses the ticket, and one removed as away loses it
//!   too, so neither is put back; a claim whose caller never heard the answer stays listed
//!   ([`Kv::queue_claimed`]) for the next caller to settle either way.
//!
//! Every operation that changes more than one key is one Lua script on Redis (one lock on the
//! embedded store), so a ticket is in the hash and either its mode's set or the claimed set, or
//! in none, and a claim takes a whole group or nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use redis::Script;

use crate::redis_backend::RedisBackend;
use crate::{Backend, Kv, KvError};

/// A player waiting in a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueTicket {
    /// The player (an opaque id chosen by the caller, e.g. an account's UUID).
    pub player_id: String,
    /// The mode the player waits for.
    pub mode: String,
    /// The player's rating when they joined.
    pub rating: f64,
    /// When the player joined (the caller's clock, ms).
    pub enqueued_at_ms: u64,
    /// Since when the player is away (no live connection), if they are.
    pub away_since_ms: Option<u64>,
}

/// The outcome of [`Kv::queue_join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueJoin {
    /// The player now waits in the mode.
    Joined,
    /// The player already waits (in this mode or another); nothing changed.
    AlreadyQueued {
        /// The mode the player waits in.
        mode: String,
    },
}

/// Sizes of one mode's queue ([`Kv::queue_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Players waiting in the mode (away ones included).
    pub n_waiting: u64,
    /// The median enqueue time (for an even count, the later of the two middle ones).
    pub median_enqueued_at_ms: Option<u64>,
}

/// Joins: refuses a player already waiting. KEYS: tickets, mode set. ARGV: player, ticket value,
/// enqueued_at_ms. Returns "" when joined, else the stored ticket value.
const JOIN_LUA: &str = r"
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  return existing
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return ''
";

/// Leaves whichever mode the player waits in. A claimed player no longer waits: the ticket goes
/// (so it is never put back), the claim stays to be settled, and nothing is returned. KEYS:
/// tickets, away, claimed. ARGV: player, mode set key prefix (`{prefix}{queue}:q:`). Returns
/// {ticket value, away score or false}, or false.
const LEAVE_LUA: &str = r"
local ticket = redis.call('HGET', KEYS[1], ARGV[1])
if not ticket then
  return false
end
local claimed = redis.call('ZSCORE', KEYS[3], ARGV[1])
local mode = string.match(ticket, '^%S+ %S+ (.*)$')
local away = redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', ARGV[2] .. mode, ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if claimed then
  return false
end
return {ticket, away}
";

/// One ticket. KEYS: tickets, away. ARGV: player. Returns {ticket value, away score or false}.
const GET_LUA: &str = r"
local ticket = redis.call('HGET', KEYS[1], ARGV[1])
if not ticket then
  return false
end
return {ticket, redis.call('ZSCORE', KEYS[2], ARGV[1])}
";

/// Every ticket of a mode, oldest first. KEYS: mode set, tickets, away. Returns a flat list of
/// player, ticket value, away score or "" per ticket.
const LIST_LUA: &str = r"
local players = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, player in ipairs(players) do
  local ticket = redis.call('HGET', KEYS[2], player)
  if ticket then
    out[#out + 1] = player
    out[#out + 1] = ticket
    out[#out + 1] = redis.call('ZSCORE', KEYS[3], player) or ''
  end
end
return out
";

/// Claims groups. KEYS: mode set, tickets, away, claimed. ARGV: claim ms, n groups, then per
/// group its size and its players. A group is claimed (out of its mode's set, into the claimed
/// set) only if every one of its players still waits in this mode and is not away; returns 1 or
/// 0 per group.
const CLAIM_LUA: &str = r"
local out = {}
local at = 3
for g = 1, tonumber(ARGV[2]) do
  local size = tonumber(ARGV[at])
  local ok = 1
  for i = at + 1, at + size do
    if not redis.call('ZSCORE', KEYS[1], ARGV[i]) or redis.call('ZSCORE', KEYS[3], ARGV[i]) then
      ok = 0
      break
    end
  end
  if ok == 1 then
    for i = at + 1, at + size do
      redis.call('ZREM', KEYS[1], ARGV[i])
      redis.call('ZADD', KEYS[4], ARGV[1], ARGV[i])
    end
  end
  out[g] = ok
  at = at + size + 1
end
return out
";

/// Marks a waiting player away (ARGV[2] = since ms) or back (no ARGV[2]). KEYS: tickets, away.
/// ARGV: player[, since]. Returns 1 if the player waits.
const AWAY_LUA: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if ARGV[2] then
  redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
";

/// Removes the tickets of players away since at most ARGV[1]. KEYS: away, tickets, claimed.
/// ARGV: before ms, mode set key prefix. Returns a flat list of player, ticket value, away score.
const REMOVE_AWAY_LUA: &str = r"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES')
local out = {}
for i = 1, #gone, 2 do
  local player = gone[i]
  local ticket = redis.call('HGET', KEYS[2], player)
  redis.call('ZREM', KEYS[1], player)
  if ticket then
    local mode = string.match(ticket, '^%S+ %S+ (.*)$')
    redis.call('HDEL', KEYS[2], player)
    redis.call('ZREM', ARGV[2] .. mode, player)
    redis.call('ZREM', KEYS[3], player)
    out[#out + 1] = player
    out[#out + 1] = ticket
    out[#out + 1] = gone[i + 1]
  end
end
return out
";

/// Settles claims whose match was recorded: each player still claimed loses the claimed ticket
/// (a ticket back in its mode's set is a new one, from queueing again after leaving). KEYS:
/// tickets, away, claimed. ARGV: mode set key prefix, then players. Returns how many were settled.
const SETTLE_LUA: &str = r"
local n = 0
for i = 2, #ARGV do
  local player = ARGV[i]
  if redis.call('ZREM', KEYS[3], player) == 1 then
    local ticket = redis.call('HGET', KEYS[1], player)
    if ticket and not redis.call('ZSCORE', ARGV[1] .. string.match(ticket, '^%S+ %S+ (.*)$'), player) then
      redis.call('HDEL', KEYS[1], player)
      redis.call('ZREM', KEYS[2], player)
    end
    n = n + 1
  end
end
return n
";

/// Puts claimed players whose match was not recorded back into their mode, with their ticket's
/// enqueue time. KEYS: tickets, claimed. ARGV: mode set key prefix, then players. Returns how
/// many were put back.
const UNCLAIM_LUA: &str = r"
local n = 0
for i = 2, #ARGV do
  local player = ARGV[i]
  if redis.call('ZREM', KEYS[2], player) == 1 then
    local ticket = redis.call('HGET', KEYS[1], player)
    if ticket then
      local at, mode = string.match(ticket, '^%S+ (%S+) (.*)$')
      redis.call('ZADD', ARGV[1] .. mode, at, player)
      n = n + 1
    end
  end
end
return n
";

/// Every claim not yet settled. KEYS: claimed. Returns a flat list of player, claim ms.
const CLAIMED_LUA: &str = r"
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
";

/// Count and median enqueue time. KEYS: mode set. Returns {n, median score or false}.
const STATS_LUA: &str = r"
local n = redis.call('ZCARD', KEYS[1])
if n == 0 then
  return {0, false}
end
local middle = redis.call('ZRANGE', KEYS[1], math.floor(n / 2), math.floor(n / 2), 'WITHSCORES')
return {n, middle[2]}
";

static JOIN: LazyLock<Script> = LazyLock::new(|| Script::new(JOIN_LUA));
static LEAVE: LazyLock<Script> = LazyLock::new(|| Script::new(LEAVE_LUA));
static GET: LazyLock<Script> = LazyLock::new(|| Script::new(GET_LUA));
static LIST: LazyLock<Script> = LazyLock::new(|| Script::new(LIST_LUA));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_LUA));
static AWAY: LazyLock<Script> = LazyLock::new(|| Script::new(AWAY_LUA));
static REMOVE_AWAY: LazyLock<Script> = LazyLock::new(|| Script::new(REMOVE_AWAY_LUA));
static STATS: LazyLock<Script> = LazyLock::new(|| Script::new(STATS_LUA));
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_LUA));
static UNCLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(UNCLAIM_LUA));
static CLAIMED: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIMED_LUA));

/// Matchmaking queues: tickets per mode, the claim of a formed group, and removal of players who
/// went away. See the module doc of `kv::queue` for the keys.
impl Kv {
    /// Puts `player_id` into `mode`'s queue with `rating`, enqueued at `now_ms`, unless the player
    /// already waits in any mode of `queue` (then [`QueueJoin::AlreadyQueued`], nothing changed).
    /// Atomic. `mode` must not be empty.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn queue_join(
        &self,
        queue: &str,
        player_id: &str,
        mode: &str,
        rating: f64,
        now_ms: u64,
    ) -> Result<QueueJoin, KvError> {
        debug_assert!(!mode.is_empty(), "a queue mode must not be empty");
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = JOIN.prepare_invoke();
                invocation
                    .key(&keys.tickets)
                    .key(keys.mode(mode))
                    .arg(player_id)
                    .arg(ticket_value(rating, now_ms, mode))
                    .arg(now_ms);
                let invocation = &invocation;
                let existing: String =
                    redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
                if existing.is_empty() {
                    Ok(QueueJoin::Joined)
                } else {
                    let (_, _, mode) = parse_ticket(&existing)?;
                    Ok(QueueJoin::AlreadyQueued { mode })
                }
            }
            Backend::Embedded(embedded) => embedded.with_queues(|queues| {
                let space = queues.entry(queue.to_owned()).or_default();
                if let Some(existing) = space.tickets.get(player_id) {
                    return Ok(QueueJoin::AlreadyQueued { mode: existing.mode.clone() });
                }
                space.insert(player_id, mode, rating, now_ms);
                Ok(QueueJoin::Joined)
            }),
        }
    }

    /// Takes `player_id` out of whichever mode of `queue` they wait in, and returns the ticket
    /// (`None` if they were not waiting). A claimed player no longer waits (`None`): the ticket
    /// goes all the same, so the claim never puts them back. Atomic.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn queue_leave(&self, queue: &str, player_id: &str) -> Result<Option<QueueTicket>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = LEAVE.prepare_invoke();
                invocation
                    .key(&keys.tickets)
                    .key(&keys.away)
                    .key(&keys.claimed)
                    .arg(player_id)
                    .arg(keys.mode(""));
                let invocation = &invocation;
                let found: Option<(String, Option<String>)> =
                    redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
                found.map(|(ticket, away)| ticket_from(player_id, &ticket, away.as_deref())).transpose()
            }
            Backend::Embedded(embedded) => {
                Ok(embedded.with_queues(|queues| queues.get_mut(queue)?.leave(player_id)))
            }
        }
    }

    /// The ticket of `player_id` in `queue`, if they wait.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn queue_ticket(&self, queue: &str, player_id: &str) -> Result<Option<QueueTicket>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = GET.prepare_invoke();
                invocation.key(&keys.tickets).key(&keys.away).arg(player_id);
                let invocation = &invocation;
                let found: Option<(String, Option<String>)> =
                    redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
                found.map(|(ticket, away)| ticket_from(player_id, &ticket, away.as_deref())).transpose()
            }
            Backend::Embedded(embedded) => Ok(embedded.with_queues(|queues| {
                let space = queues.get(queue)?;
                space.tickets.get(player_id).map(|entry| space.ticket(player_id, entry))
            })),
        }
    }

    /// Every ticket waiting in `mode` of `queue`, oldest first (equal times by player id), read
    /// atomically in one round trip.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn queue_tickets(&self, queue: &str, mode: &str) -> Result<Vec<QueueTicket>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = LIST.prepare_invoke();
                invocation.key(keys.mode(mode)).key(&keys.tickets).key(&keys.away);
                let invocation = &invocation;
                let flat: Vec<String> =
                    redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
                flat.chunks_exact(3)
                    .map(|row| {
                        let away = (!row[2].is_empty()).then_some(row[2].as_str());
                        ticket_from(&row[0], &row[1], away)
                    })
                    .collect()
            }
            Backend::Embedded(embedded) => Ok(embedded.with_queues(|queues| {
                let Some(space) = queues.get(queue) else { return Vec::new() };
                let Some(by_time) = space.by_mode.get(mode) else { return Vec::new() };
                by_time
                    .iter()
                    .filter_map(|(_, player_id)| {
                        space.tickets.get(player_id).map(|entry| space.ticket(player_id, entry))
                    })
                    .collect()
            })),
        }
    }

    /// Claims formed groups of `mode` at `claimed_at_ms`: each group is taken out of its mode's
    /// queue only if every one of its players still waits in `mode` and is not away; otherwise
    /// nothing of that group changes. Returns, per group in order, whether it was claimed. Atomic
    /// per call (one Lua script), so a player is never claimed twice and a ticket left or removed
    /// before the claim is never claimed. A player listed in two groups of one call can only be
    /// claimed by the first. Claimed tickets wait for [`Kv::queue_settle`] or
    /// [`Kv::queue_unclaim`].
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer; the claim may or may not have happened
    /// ([`Kv::queue_claimed`] tells).
    pub async fn queue_claim(
        &self,
        queue: &str,
        mode: &str,
        groups: &[Vec<String>],
        claimed_at_ms: u64,
    ) -> Result<Vec<bool>, KvError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = CLAIM.prepare_invoke();
                invocation
                    .key(keys.mode(mode))
                    .key(&keys.tickets)
                    .key(&keys.away)
                    .key(&keys.claimed)
                    .arg(claimed_at_ms)
                    .arg(groups.len());
                for group in groups {
                    invocation.arg(group.len()).arg(group.as_slice());
                }
                let invocation = &invocation;
                let claimed: Vec<u8> =
                    redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
                Ok(claimed.into_iter().map(|ok| ok == 1).collect())
            }
            Backend::Embedded(embedded) => Ok(embedded.with_queues(|queues| {
                let space = queues.entry(queue.to_owned()).or_default();
                groups.iter().map(|group| space.claim(mode, group, claimed_at_ms)).collect()
            })),
        }
    }

    /// Marks a waiting player away since `since_ms` (`Some`, keeping an earlier mark) or back
    /// (`None`). Returns whether the player waits in `queue`; a player who does not wait is never
    /// marked.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn queue_set_away(
        &self,
        queue: &str,
        player_id: &str,
        since_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = AWAY.prepare_invoke();
                invocation.key(&keys.tickets).key(&keys.away).arg(player_id);
                if let Some(since_ms) = since_ms {
                    invocation.arg(since_ms);
                }
                let invocation = &invocation;
                let waits: u8 =
                    redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
                Ok(waits == 1)
            }
            Backend::Embedded(embedded) => Ok(embedded.with_queues(|queues| {
                let Some(space) = queues.get_mut(queue) else { return false };
                if !space.tickets.contains_key(player_id) {
                    space.away.remove(player_id);
                    return false;
                }
                match since_ms {
                    Some(since_ms) => {
                        space.away.entry(player_id.to_owned()).or_insert(since_ms);
                    }
                    None => {
                        space.away.remove(player_id);
                    }
                }
                true
            })),
        }
    }

    /// Removes the tickets of every player of `queue` away since `before_ms` or earlier, and
    /// returns them. Atomic.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn queue_remove_away(&self, queue: &str, before_ms: u64) -> Result<Vec<QueueTicket>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = REMOVE_AWAY.prepare_invoke();
                invocation
                    .key(&keys.away)
                    .key(&keys.tickets)
                    .key(&keys.claimed)
                    .arg(before_ms)
                    .arg(keys.mode(""));
                let invocation = &invocation;
                let flat: Vec<String> =
                    redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
                flat.chunks_exact(3).map(|row| ticket_from(&row[0], &row[1], Some(&row[2]))).collect()
            }
            Backend::Embedded(embedded) => Ok(embedded.with_queues(|queues| {
                let Some(space) = queues.get_mut(queue) else { return Vec::new() };
                let mut gone: Vec<(String, u64)> = space
                    .away
                    .iter()
                    .filter(|(_, since)| **since <= before_ms)
                    .map(|(player_id, since)| (player_id.clone(), *since))
                    .collect();
                gone.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
                gone.into_iter().filter_map(|(player_id, _)| space.remove(&player_id)).collect()
            })),
        }
    }

    /// Settles the claims of `player_ids` whose match was recorded: each one still claimed loses
    /// the claimed ticket (a new one, from queueing again after leaving, stays). Returns how many
    /// were settled. Atomic.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn queue_settle(&self, queue: &str, player_ids: &[String]) -> Result<u64, KvError> {
        if player_ids.is_empty() {
            return Ok(0);
        }
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = SETTLE.prepare_invoke();
                invocation
                    .key(&keys.tickets)
                    .key(&keys.away)
                    .key(&keys.claimed)
                    .arg(keys.mode(""))
                    .arg(player_ids);
                let invocation = &invocation;
                Ok(redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?)
            }
            Backend::Embedded(embedded) => Ok(embedded.with_queues(|queues| {
                let Some(space) = queues.get_mut(queue) else { return 0 };
                player_ids.iter().filter(|player_id| space.settle(player_id)).count() as u64
            })),
        }
    }

    /// Puts the claimed `player_ids` whose match was not recorded back into their mode, with
    /// their original enqueue time (and any away mark they got meanwhile); one who left or was
    /// removed meanwhile stays out. Returns how many were put back. Atomic.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn queue_unclaim(&self, queue: &str, player_ids: &[String]) -> Result<u64, KvError> {
        if player_ids.is_empty() {
            return Ok(0);
        }
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = UNCLAIM.prepare_invoke();
                invocation.key(&keys.tickets).key(&keys.claimed).arg(keys.mode("")).arg(player_ids);
                let invocation = &invocation;
                Ok(redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?)
            }
            Backend::Embedded(embedded) => Ok(embedded.with_queues(|queues| {
                let Some(space) = queues.get_mut(queue) else { return 0 };
                player_ids.iter().filter(|player_id| space.unclaim(player_id)).count() as u64
            })),
        }
    }

    /// Every claim of `queue` not yet settled or put back: (player, claim ms), oldest first.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn queue_claimed(&self, queue: &str) -> Result<Vec<(String, u64)>, KvError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = CLAIMED.prepare_invoke();
                invocation.key(&keys.claimed);
                let invocation = &invocation;
                let flat: Vec<String> =
                    redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
                flat.chunks_exact(2).map(|row| Ok((row[0].clone(), parse_ms(&row[1])?))).collect()
            }
            Backend::Embedded(embedded) => Ok(embedded.with_queues(|queues| {
                let Some(space) = queues.get(queue) else { return Vec::new() };
                let mut claimed: Vec<(String, u64)> =
                    space.claimed.iter().map(|(player_id, at)| (player_id.clone(), *at)).collect();
                claimed.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
                claimed
            })),
        }
    }

    /// How many players wait in `mode` of `queue`, and the median enqueue time.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] if Redis does not answer.
    pub async fn queue_stats(&self, queue: &str, mode: &str) -> Result<QueueStats, KvError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let keys = Keys::new(redis, queue);
                let mut invocation = STATS.prepare_invoke();
                invocation.key(keys.mode(mode));
                let invocation = &invocation;
                let (n_waiting, median): (u64, Option<String>) =
                    redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
                let median_enqueued_at_ms = median.as_deref().map(parse_ms).transpose()?;
                Ok(QueueStats { n_waiting, median_enqueued_at_ms })
            }
            Backend::Embedded(embedded) => Ok(embedded.with_queues(|queues| {
                let Some(by_time) = queues.get(queue).and_then(|space| space.by_mode.get(mode)) else {
                    return QueueStats::default();
                };
                let n = by_time.len();
                QueueStats {
                    n_waiting: u64::try_from(n).unwrap_or(u64::MAX),
                    median_enqueued_at_ms: by_time.iter().nth(n / 2).map(|(at, _)| *at),
                }
            })),
        }
    }
}

/// The key names of one queue on Redis.
struct Keys {
    tickets: String,
    away: String,
    claimed: String,
    mode_prefix: String,
}

impl Keys {
    fn new(redis: &RedisBackend, queue: &str) -> Keys {
        let prefix = redis.prefix();
        Keys {
            tickets: format!("{prefix}{queue}:tickets"),
            away: format!("{prefix}{queue}:away"),
            claimed: format!("{prefix}{queue}:claimed"),
            mode_prefix: format!("{prefix}{queue}:q:"),
        }
    }

    fn mode(&self, mode: &str) -> String {
        format!("{}{mode}", self.mode_prefix)
    }
}

/// A ticket as stored in the tickets hash. The mode goes last, so it may contain spaces.
fn ticket_value(rating: f64, enqueued_at_ms: u64, mode: &str) -> String {
    format!("{rating} {enqueued_at_ms} {mode}")
}

fn parse_ticket(value: &str) -> Result<(f64, u64, String), KvError> {
    let bad = || KvError::Unavailable(format!("unexpected queue ticket {value:?} in Redis"));
    let mut parts = value.splitn(3, ' ');
    let rating = parts.next().and_then(|rating| rating.parse().ok()).ok_or_else(bad)?;
    let enqueued_at_ms = parts.next().and_then(|at| at.parse().ok()).ok_or_else(bad)?;
    let mode = parts.next().ok_or_else(bad)?.to_owned();
    Ok((rating, enqueued_at_ms, mode))
}

/// A ZSET score as Redis returns it: written from whole milliseconds.
fn parse_ms(score: &str) -> Result<u64, KvError> {
    score.parse().map_err(|_| KvError::Unavailable(format!("unexpected queue score {score:?} in Redis")))
}

fn ticket_from(player_id: &str, value: &str, away: Option<&str>) -> Result<QueueTicket, KvError> {
    let (rating, enqueued_at_ms, mode) = parse_ticket(value)?;
    let away_since_ms = away.map(parse_ms).transpose()?;
    Ok(QueueTicket { player_id: player_id.to_owned(), mode, rating, enqueued_at_ms, away_since_ms })
}

/// The embedded store's queues, by queue name; kept under the store's lock.
pub(crate) type EmbeddedQueues = HashMap<String, QueueSpace>;

/// One queue on the embedded store, with Redis's data model.
#[derive(Default)]
pub(crate) struct QueueSpace {
    tickets: HashMap<String, Entry>,
    /// Mode → (enqueued_at_ms, player id), ordered like a Redis ZSET.
    by_mode: HashMap<String, BTreeSet<(u64, String)>>,
    /// Player id → away since ms.
    away: HashMap<String, u64>,
    /// Player id → claim ms, for claimed tickets (out of `by_mode`, still in `tickets`).
    claimed: HashMap<String, u64>,
}

struct Entry {
    mode: String,
    rating: f64,
    enqueued_at_ms: u64,
}

impl QueueSpace {
    fn insert(&mut self, player_id: &str, mode: &str, rating: f64, enqueued_at_ms: u64) {
        self.tickets.insert(player_id.to_owned(), Entry { mode: mode.to_owned(), rating, enqueued_at_ms });
        self.by_mode.entry(mode.to_owned()).or_default().insert((enqueued_at_ms, player_id.to_owned()));
    }

    fn ticket(&self, player_id: &str, entry: &Entry) -> QueueTicket {
        QueueTicket {
            player_id: player_id.to_owned(),
            mode: entry.mode.clone(),
            rating: entry.rating,
            enqueued_at_ms: entry.enqueued_at_ms,
            away_since_ms: self.away.get(player_id).copied(),
        }
    }

    fn remove(&mut self, player_id: &str) -> Option<QueueTicket> {
        let entry = self.tickets.get(player_id)?;
        let ticket = self.ticket(player_id, entry);
        self.tickets.remove(player_id);
        self.away.remove(player_id);
        self.claimed.remove(player_id);
        if let Some(by_time) = self.by_mode.get_mut(&ticket.mode) {
            by_time.remove(&(ticket.enqueued_at_ms, player_id.to_owned()));
        }
        Some(ticket)
    }

    fn claim(&mut self, mode: &str, group: &[String], claimed_at_ms: u64) -> bool {
        let claimable = group.iter().all(|player_id| {
            self.tickets.get(player_id).is_some_and(|entry| entry.mode == mode)
                && !self.away.contains_key(player_id)
                && !self.claimed.contains_key(player_id)
        });
        if claimable {
            for player_id in group {
                if let (Some(entry), Some(by_time)) =
                    (self.tickets.get(player_id), self.by_mode.get_mut(mode))
                {
                    by_time.remove(&(entry.enqueued_at_ms, player_id.clone()));
                }
                self.claimed.insert(player_id.clone(), claimed_at_ms);
            }
        }
        claimable
    }

    /// Leaving: a claimed player's ticket goes but the claim stays, and nothing is returned.
    fn leave(&mut self, player_id: &str) -> Option<QueueTicket> {
        let claim = self.claimed.remove(player_id);
        let ticket = self.remove(player_id);
        if let Some(claimed_at_ms) = claim {
            self.claimed.insert(player_id.to_owned(), claimed_at_ms);
            return None;
        }
        ticket
    }

    fn settle(&mut self, player_id: &str) -> bool {
        if self.claimed.remove(player_id).is_none() {
            return false;
        }
        // A ticket in its mode's line is a new one, from queueing again after leaving.
        let queued_again = self.tickets.get(player_id).is_some_and(|entry| {
            self.by_mode
                .get(&entry.mode)
                .is_some_and(|by_time| by_time.contains(&(entry.enqueued_at_ms, player_id.to_owned())))
        });
        if !queued_again {
            self.tickets.remove(player_id);
            self.away.remove(player_id);
        }
        true
    }

    fn unclaim(&mut self, player_id: &str) -> bool {
        if self.claimed.remove(player_id).is_none() {
            return false;
        }
        let Some(entry) = self.tickets.get(player_id) else { return false };
        self.by_mode
            .entry(entry.mode.clone())
            .or_default()
            .insert((entry.enqueued_at_ms, player_id.to_owned()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_values_round_trip_including_fractional_ratings_and_spaces_in_modes() {
        let value = ticket_value(1516.25, 42, "ranked duel");
        assert_eq!(parse_ticket(&value).ok(), Some((1516.25, 42, "ranked duel".to_owned())));
        assert!(parse_ticket("1500").is_err());
    }
}
