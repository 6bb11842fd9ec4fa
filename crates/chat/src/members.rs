//! The channels this process has looked up, with their members, so a send, a history read or a
//! delete is checked without reading `chat.db`.
//!
//! `chat.db` stays the truth; this is a copy that is dropped whenever it may be wrong:
//! - a membership change made here drops the channel's entry after it commits, and is published
//!   on the key-value store's [`MEMBERS_CHANNEL`], so every other process sharing the data
//!   directory drops its entry too ([`MemberCache::apply_invalidation`]);
//! - a load that raced an invalidation of its channel is not kept: loads remember the cache's
//!   generation before they read, every invalidation moves the generation on and records it
//!   against its channel, and a load is kept only if its channel was not invalidated since. So
//!   one channel's churn does not stop every other channel's loads from being cached. Those
//!   records are kept for the last [`MAX_INVALIDATED`] channels; when they are dropped, loads
//!   begun before are not kept, as if every channel had changed;
//! - an entry is reloaded after `ttl` anyway, which bounds how long a lost invalidation (pub/sub
//!   delivers at most once: a Redis outage or a lagging subscriber drops messages) can leave a
//!   stale entry. The same trade-off the gateway makes for session revocation.
//!
//! A direct channel's members (its two accounts) never change, so its entry never expires.
//! Unknown channels are not cached: creating a channel needs no invalidation.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Channel, ChannelId, ChannelKind, ChatStats};

/// The key-value store's pub/sub channel carrying membership invalidations between processes.
pub(crate) const MEMBERS_CHANNEL: &str = "chat-members";

/// Entries kept at most; the cache is emptied when it is full (it refills with what is used).
const MAX_ENTRIES: usize = 65_536;
/// Channels whose last invalidation is remembered at most; past it the records are dropped and
/// loads begun before are not kept (a load takes a read of `chat.db`, so they are few).
const MAX_INVALIDATED: usize = 4_096;

/// A channel and everyone in it, as read from `chat.db`.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) channel: Channel,
    /// Sorted, for [`Membership::contains`].
    members: Vec<Uuid>,
}

impl Membership {
    pub(crate) fn new(channel: Channel, mut members: Vec<Uuid>) -> Membership {
        members.sort_unstable();
        Membership { channel, members }
    }

    /// Whether `account_id` belongs to the channel.
    pub(crate) fn contains(&self, account_id: Uuid) -> bool {
        self.members.binary_search(&account_id).is_ok()
    }

    /// Every member.
    pub(crate) fn members(&self) -> &[Uuid] {
        &self.members
    }
}

struct Entry {
    membership: Arc<Membership>,
    loaded_at_ms: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<ChannelId, Entry>,
    /// Moves on with every invalidation.
    generation: u64,
    /// The generation each channel was last invalidated at, since `forgotten_before`: a load of
    /// the channel begun before it is not kept.
    invalidated: HashMap<ChannelId, u64>,
    /// Loads begun before this generation are not kept: every channel may have changed since.
    forgotten_before: u64,
}

impl State {
    /// Forgets which channel changed when, so no load begun until now is kept.
    fn forget_invalidations(&mut self) {
        self.invalidated.clear();
        self.forgotten_before = self.generation;
    }
}

/// See the module doc.
pub(crate) struct MemberCache {
    state: Mutex<State>,
    ttl_ms: u64,
}

impl MemberCache {
    /// A cache whose room and group entries are reloaded after `ttl_ms`.
    pub(crate) fn new(ttl_ms: u64) -> MemberCache {
        MemberCache { state: Mutex::default(), ttl_ms }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached membership of `channel_id`, unless absent or older than the ttl at `now_ms`.
    pub(crate) fn get(&self, channel_id: ChannelId, now_ms: u64) -> Option<Arc<Membership>> {
        let state = self.state();
        let entry = state.entries.get(&channel_id)?;
        let fresh = entry.membership.channel.kind == ChannelKind::Direct
            || now_ms.saturating_sub(entry.loaded_at_ms) < self.ttl_ms;
        fresh.then(|| entry.membership.clone())
    }

    /// The generation to pass to [`MemberCache::insert`]; take it before reading `chat.db`.
    pub(crate) fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Keeps `membership`, read at `now_ms` after [`MemberCache::generation`] returned
    /// `generation`, unless its channel was invalidated in between.
    pub(crate) fn insert(&self, generation: u64, membership: Arc<Membership>, now_ms: u64) {
        let mut state = self.state();
        let changed_since = generation < state.forgotten_before
            || state.invalidated.get(&membership.channel.id).is_some_and(|at| *at > generation);
        if changed_since {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state.entries.insert(membership.channel.id, Entry { membership, loaded_at_ms: now_ms });
    }

    /// Forgets `channel_id`'s entry (its members changed).
    pub(crate) fn invalidate(&self, channel_id: ChannelId) {
        let mut state = self.state();
        state.entries.remove(&channel_id);
        state.generation += 1;
        let generation = state.generation;
        state.invalidated.insert(channel_id, generation);
        if state.invalidated.len() > MAX_INVALIDATED {
            state.forget_invalidations();
        }
    }

    /// Forgets every entry.
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        state.entries.clear();
        state.generation += 1;
        state.forget_invalidations();
    }

    /// Applies an invalidation from [`MEMBERS_CHANNEL`]: the 16 bytes of a channel id drop that
    /// channel; anything else drops everything (never wrong, only slower).
    pub(crate) fn apply_invalidation(&self, payload: &[u8]) {
        match Uuid::from_slice(payload) {
            Ok(id) => self.invalidate(ChannelId(id)),
            Err(_) => self.clear(),
        }
    }
}

/// Applies the invalidations other processes publish, until shutdown.
pub(crate) struct Listener {
    pub(crate) cache: Arc<MemberCache>,
    pub(crate) subscription: kv::Subscription,
    /// Ends the subscription's forwarding task once the listener is done.
    pub(crate) subscription_stop: CancellationToken,
    pub(crate) stats: Arc<ChatStats>,
}

impl Listener {
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let _stop = self.subscription_stop.drop_guard();
        loop {
            let payload = tokio::select! {
                () = shutdown.cancelled() => return,
                payload = self.subscription.recv() => payload,
            };
            let Some(payload) = payload else { return };
            self.cache.apply_invalidation(&payload);
            self.stats.invalidations_received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(kind: ChannelKind, members: &[Uuid]) -> Arc<Membership> {
        let channel = Channel {
            id: ChannelId(Uuid::now_v7()),
            kind,
            name: String::new(),
            owner: None,
            created_at_ms: 0,
        };
        Arc::new(Membership::new(channel, members.to_vec()))
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_kept() {
        let cache = MemberCache::new(1_000);
        let room = membership(ChannelKind::Room, &[Uuid::now_v7()]);
        let before_read = cache.generation();
        cache.invalidate(room.channel.id);
        cache.insert(before_read, room.clone(), 0);
        assert!(cache.get(room.channel.id, 0).is_none(), "possibly read before the change");
        cache.insert(cache.generation(), room.clone(), 0);
        assert!(cache.get(room.channel.id, 0).is_some());
        cache.apply_invalidation(room.channel.id.0.as_bytes());
        assert!(cache.get(room.channel.id, 0).is_none(), "invalidated from another process");
    }

    #[test]
    fn a_load_is_kept_when_only_other_channels_changed_meanwhile() {
        let cache = MemberCache::new(1_000);
        let (quiet, busy) = (membership(ChannelKind::Room, &[]), membership(ChannelKind::Room, &[]));
        let before_read = cache.generation();
        cache.invalidate(busy.channel.id);
        cache.insert(before_read, quiet.clone(), 0);
        cache.insert(before_read, busy.clone(), 0);
        assert!(cache.get(quiet.channel.id, 0).is_some(), "another channel's change does not matter");
        assert!(cache.get(busy.channel.id, 0).is_none(), "possibly read before its change");

        // Past the channels remembered, every load begun before is dropped, as after a clear.
        let (late, before_read) = (membership(ChannelKind::Room, &[]), cache.generation());
        for _ in 0..=MAX_INVALIDATED {
            cache.invalidate(ChannelId(Uuid::now_v7()));
        }
        cache.insert(before_read, late.clone(), 0);
        assert!(cache.get(late.channel.id, 0).is_none(), "not known to be unchanged");
        cache.insert(cache.generation(), late.clone(), 0);
        assert!(cache.get(late.channel.id, 0).is_some());
    }

    #[test]
    fn rooms_expire_and_direct_channels_do_not() {
        let cache = MemberCache::new(1_000);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let room = membership(ChannelKind::Room, &[b, a]);
        let direct = membership(ChannelKind::Direct, &[a, b]);
        cache.insert(cache.generation(), room.clone(), 5_000);
        cache.insert(cache.generation(), direct.clone(), 5_000);
        assert!(cache.get(room.channel.id, 5_999).is_some_and(|room| room.contains(a) && room.contains(b)));
        assert!(cache.get(room.channel.id, 6_000).is_none(), "reloaded after the ttl");
        assert!(cache.get(direct.channel.id, u64::MAX).is_some());
        cache.apply_invalidation(b"everything");
        assert!(cache.get(direct.channel.id, 5_000).is_none(), "an unreadable invalidation drops all");
    }
}
