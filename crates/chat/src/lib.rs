//! Chat: public rooms, private groups and direct messages, with history in one SQLite shard per
//! year (`chat-2026.db`, `chat-2027.db`, ...).
//!
//! Owns:
//! - `chat.db` (`channels.rs`): channels and their members. Channels span years, so they are
//!   kept apart from the yearly message shards.
//! - `chat-YYYY.db`: the messages sent in year YYYY (UTC, by the injected clock). A message's id
//!   ([`MessageId`], a UUID v7) carries its timestamp, so the id names its shard. The current
//!   year's and the next year's shards are provisioned at start-up, and the next one again after
//!   the first commit of each year; writes switch shards by each message's own timestamp, with
//!   no restart.
//! - the rules: text cleaning and length, room and group names, who may read, post, invite and
//!   delete, how many members a room or group and how many rooms and groups a player has, and
//!   the per-player send rate (a fixed-window counter in the key-value store, its window
//!   numbered by the injected clock).
//! - group commit ([`writer`]): a send is acknowledged only after the transaction holding it
//!   commits, and one transaction holds every message queued meanwhile.
//! - history: newest first, paged by a message-id cursor, crossing from one year's shard into
//!   the previous one within a page; a retired year ends the history with an `archived` marker
//!   rather than being served.
//! - shard lifecycle ([`lifecycle`]): provision, retire into an archive directory, list.
//!
//! Never: reads or writes another domain's shard, knows whether an account exists (the gateway
//! checks before a first direct message), or knows how a message reaches a socket: every
//! operation that others should hear about returns the members to tell, and the gateway
//! delivers it.

mod channels;
mod error;
mod ids;
pub mod lifecycle;
mod members;
mod messages;
mod text;
pub mod writer;
mod years;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clock::SharedClock;
use kv::Kv;
use shard::{Shard, ShardConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use error::ChatError;
pub use ids::{ChannelId, MessageId, direct_channel_id, year_of_ms, year_start_ms};
pub use text::{GROUP_NAME_MAX_CHARS, ROOM_NAME_MAX_CHARS};
pub use writer::GroupCommitter;
pub use years::shard_file_name;

/// Longest message, in characters (Unicode scalar values), after cleaning.
pub const MAX_TEXT_CHARS: usize = 1_000;
/// Most messages in one history page; larger requests get this many.
pub const MAX_PAGE_SIZE: usize = 100;
/// Default messages one player may send per window.
pub const DEFAULT_SENDS_PER_WINDOW: u64 = 10;
/// Default length of the send-rate window.
pub const DEFAULT_SEND_WINDOW: Duration = Duration::from_secs(5);
/// Default membership changes (joining or leaving a room, creating a group, adding or removing
/// a member) one player may make per window: each writes `chat.db` and tells every process.
pub const DEFAULT_MEMBERSHIP_CHANGES_PER_WINDOW: u64 = 20;
/// Default length of the membership-change window.
pub const DEFAULT_MEMBERSHIP_WINDOW: Duration = Duration::from_secs(10);
/// Default number of messages waiting for the writer before senders wait for room.
pub const DEFAULT_QUEUE_CAPACITY: usize = 16_384;
/// Default largest number of messages in one group commit.
pub const DEFAULT_MAX_BATCH: usize = 2_048;
/// Default most members of one public room. A message to a room goes out as one bus message
/// naming every member, so this bounds each message's fan-out; it is five times the benchmarks'
/// largest room (1,000 members) and stays within one bus message's recipients
/// (the gateway's `MAX_ANNOUNCE_RECIPIENTS`, 8,192).
pub const DEFAULT_MAX_ROOM_MEMBERS: usize = 5_000;
/// Default most members of one private group, its owner included: a large guild.
pub const DEFAULT_MAX_GROUP_MEMBERS: usize = 1_000;
/// Default most rooms and groups one player is in at once. Direct channels do not count (a
/// player cannot leave one). An owner cannot leave their group, so this also bounds the groups
/// one player owns.
pub const DEFAULT_MAX_CHANNELS_PER_PLAYER: usize = 100;
/// Default time a cached room's or group's member list is trusted without an invalidation
/// (the bound on staleness when an invalidation from another process is lost).
pub const DEFAULT_MEMBER_CACHE_TTL: Duration = Duration::from_secs(1);
/// How far another gateway process's clock may run ahead of this one's: within this long
/// before a new year, the newest history page also looks in the next year's shard.
pub const CLOCK_SKEW_ALLOWANCE_MS: u64 = 60_000;
/// The name of the channels shard in the data directory.
pub const CHANNELS_FILE: &str = "chat.db";
/// The archive directory's name inside the data directory, unless configured.
pub const DEFAULT_ARCHIVE_DIR_NAME: &str = "chat-archive";

/// Configuration of the chat domain.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Messages one player may send per `send_window`; default [`DEFAULT_SENDS_PER_WINDOW`];
    /// must be positive.
    pub sends_per_window: u64,
    /// The send-rate window; default [`DEFAULT_SEND_WINDOW`]; at least 1 ms.
    pub send_window: Duration,
    /// Membership changes one player may make per `membership_window`; default
    /// [`DEFAULT_MEMBERSHIP_CHANGES_PER_WINDOW`]; must be positive.
    pub membership_changes_per_window: u64,
    /// The membership-change window; default [`DEFAULT_MEMBERSHIP_WINDOW`]; at least 1 ms.
    pub membership_window: Duration,
    /// Messages queued for the writer at most; default [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// Messages per group commit at most; default [`DEFAULT_MAX_BATCH`].
    pub max_batch: usize,
    /// How long a cached room's or group's member list is used before it is read again, even
    /// without an invalidation; default [`DEFAULT_MEMBER_CACHE_TTL`]; zero reads every time.
    pub member_cache_ttl: Duration,
    /// Members of one room at most; default [`DEFAULT_MAX_ROOM_MEMBERS`]; must be positive.
    pub max_room_members: usize,
    /// Members of one group at most, its owner included; default [`DEFAULT_MAX_GROUP_MEMBERS`];
    /// must be positive.
    pub max_group_members: usize,
    /// Rooms and groups one player is in at most; default [`DEFAULT_MAX_CHANNELS_PER_PLAYER`];
    /// must be positive.
    pub max_channels_per_player: usize,
    /// Where retired years go; default `DATA_DIR/`[`DEFAULT_ARCHIVE_DIR_NAME`].
    pub archive_dir: Option<PathBuf>,
    /// How every chat shard is opened.
    pub shard: ShardConfig,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            sends_per_window: DEFAULT_SENDS_PER_WINDOW,
            send_window: DEFAULT_SEND_WINDOW,
            membership_changes_per_window: DEFAULT_MEMBERSHIP_CHANGES_PER_WINDOW,
            membership_window: DEFAULT_MEMBERSHIP_WINDOW,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_batch: DEFAULT_MAX_BATCH,
            member_cache_ttl: DEFAULT_MEMBER_CACHE_TTL,
            max_room_members: DEFAULT_MAX_ROOM_MEMBERS,
            max_group_members: DEFAULT_MAX_GROUP_MEMBERS,
            max_channels_per_player: DEFAULT_MAX_CHANNELS_PER_PLAYER,
            archive_dir: None,
            shard: ShardConfig::default(),
        }
    }
}

impl ChatConfig {
    /// The archive directory for a data directory.
    pub fn archive_dir(&self, data_dir: &Path) -> PathBuf {
        self.archive_dir.clone().unwrap_or_else(|| data_dir.join(DEFAULT_ARCHIVE_DIR_NAME))
    }
}

/// What kind of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// A public room: anyone joins and leaves by name, anyone reads, members post.
    Room,
    /// A private group: the owner adds and removes members; only members read and post.
    Group,
    /// Two players' direct messages: only they read and post.
    Direct,
}

/// A channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Its id.
    pub id: ChannelId,
    /// Room, group or direct.
    pub kind: ChannelKind,
    /// A room's or group's name; empty for direct channels.
    pub name: String,
    /// A group's owner.
    pub owner: Option<Uuid>,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id; sorts by time and names the year's shard.
    pub id: MessageId,
    /// Where it was sent.
    pub channel_id: ChannelId,
    /// Who sent it.
    pub sender: Uuid,
    /// The cleaned text.
    pub text: String,
    /// Server time of the send (milliseconds since the Unix epoch); the id's timestamp.
    pub sent_at_ms: u64,
}

/// Something that happened, and the accounts to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<T> {
    /// What happened.
    pub value: T,
    /// Every member of the channel (the actor included: their other connections want it too).
    pub recipients: Vec<Uuid>,
}

/// One page of a channel's history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    /// Newest first.
    pub messages: Vec<Message>,
    /// The cursor of the next (older) page; `None` when there is nothing older to serve.
    pub next_before: Option<MessageId>,
    /// True when older history exists in a retired (archived) year and is not served.
    pub archived: bool,
}

/// Counters of the write path and the member cache, for metrics and tests.
#[derive(Debug, Default)]
pub struct ChatStats {
    /// Messages stored (committed).
    pub messages_stored: AtomicU64,
    /// Group commits (transactions) made.
    pub commits: AtomicU64,
    /// Messages in the last group commit.
    pub last_batch: AtomicU64,
    /// Messages in the largest group commit so far.
    pub largest_batch: AtomicU64,
    /// Time spent in group commits (the transaction, its queueing for the shard's writer
    /// thread and the COMMIT), in microseconds.
    pub commit_micros: AtomicU64,
    /// Group commits that failed (their senders were answered with an error).
    pub failed_commits: AtomicU64,
    /// Membership checks answered from the member cache.
    pub member_cache_hits: AtomicU64,
    /// Member lists read from `chat.db` (the member cache's misses).
    pub membership_loads: AtomicU64,
    /// Membership invalidations published (this process changed a channel's members).
    pub invalidations_published: AtomicU64,
    /// Membership invalidations received from the key-value store (other processes' changes,
    /// and this one's own).
    pub invalidations_received: AtomicU64,
    /// History pages served.
    pub history_pages: AtomicU64,
    /// Shard queries made for them (more than one per page only when a page crosses years).
    pub history_shard_reads: AtomicU64,
    /// The checkpoints run beside the writer, over every year's shard.
    pub wal: Arc<shard::WalStats>,
}

/// The chat domain: cheap to clone.
#[derive(Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

struct Inner {
    channels: Shard,
    years: Arc<years::Years>,
    queue: mpsc::Sender<writer::Pending>,
    ids: ids::IdGenerator,
    kv: Kv,
    clock: SharedClock,
    config: ChatConfig,
    stats: Arc<ChatStats>,
    members: Arc<members::MemberCache>,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Chat {
    /// Opens `DATA_DIR/chat.db` and the yearly shards, provisioning the current year's and the
    /// next year's, and subscribes to other processes' membership invalidations. Returns the
    /// domain and its background work (writer and invalidation listener), which the caller must
    /// run (on its task tracker, with its shutdown token) for sends to complete.
    ///
    /// # Errors
    /// A shard cannot be opened or migrated, the subscription cannot be made, or the
    /// configuration is invalid.
    pub async fn open(
        data_dir: &Path,
        kv: Kv,
        clock: SharedClock,
        config: ChatConfig,
    ) -> Result<(Chat, GroupCommitter), ChatError> {
        if config.sends_per_window == 0
            || config.send_window.as_millis() == 0
            || config.membership_changes_per_window == 0
            || config.membership_window.as_millis() == 0
            || config.queue_capacity == 0
            || config.max_batch == 0
            || config.max_room_members == 0
            || config.max_group_members == 0
            || config.max_channels_per_player == 0
        {
            return Err(ChatError::InvalidRequest(
                "sends_per_window, send_window, membership_changes_per_window, membership_window, \
                 queue_capacity, max_batch and the membership limits must be positive"
                    .into(),
            ));
        }
        let channels = Shard::open(data_dir.join(CHANNELS_FILE), &config.shard, channels::MIGRATIONS).await?;
        let current_year = year_of_ms(clock.now_ms());
        let years = Arc::new(
            years::Years::open(
                data_dir.to_path_buf(),
                config.archive_dir(data_dir),
                config.shard.clone(),
                current_year,
            )
            .await?,
        );
        let (queue, receiver) = mpsc::channel(config.queue_capacity);
        let stats = Arc::new(ChatStats::default());
        let ttl_ms = u64::try_from(config.member_cache_ttl.as_millis()).unwrap_or(u64::MAX);
        let members = Arc::new(members::MemberCache::new(ttl_ms));
        let subscription_stop = CancellationToken::new();
        let subscription = kv.subscribe(members::MEMBERS_CHANNEL, subscription_stop.clone()).await?;
        let committer = GroupCommitter {
            writer: writer::Writer {
                receiver,
                years: years.clone(),
                stats: stats.clone(),
                max_batch: config.max_batch,
                wal: std::collections::HashMap::new(),
            },
            listener: members::Listener {
                cache: members.clone(),
                subscription,
                subscription_stop,
                stats: stats.clone(),
            },
        };
        let inner = Inner {
            channels,
            years,
            queue,
            ids: ids::IdGenerator::default(),
            kv,
            clock,
            config,
            stats,
            members,
        };
        Ok((Chat { inner: Arc::new(inner) }, committer))
    }

    /// Counters of the write path.
    pub fn stats(&self) -> &ChatStats {
        &self.inner.stats
    }

    /// `chat.db` and every open yearly shard, for checkpoints and readiness checks.
    pub fn shards(&self) -> Vec<Shard> {
        let mut shards = vec![self.inner.channels.clone()];
        shards.extend(self.inner.years.open_shards());
        shards
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// The channel, as `actor` may see it: a direct channel of two others is unknown to them
    /// (see [`not_member`]).
    async fn channel(&self, actor: Uuid, channel_id: ChannelId) -> Result<Channel, ChatError> {
        let channel =
            channels::channel(&self.inner.channels, channel_id).await?.ok_or(ChatError::UnknownChannel)?;
        if channel.kind == ChannelKind::Direct
            && !channels::is_member(&self.inner.channels, channel_id, actor).await?
        {
            return Err(ChatError::UnknownChannel);
        }
        Ok(channel)
    }

    /// The channel and its members: from the member cache, else read (and cached).
    async fn membership(&self, channel_id: ChannelId) -> Result<Arc<members::Membership>, ChatError> {
        let cache = &self.inner.members;
        if let Some(membership) = cache.get(channel_id, self.now_ms()) {
            self.inner.stats.member_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(membership);
        }
        let generation = cache.generation();
        let membership =
            channels::membership(&self.inner.channels, channel_id).await?.ok_or(ChatError::UnknownChannel)?;
        self.inner.stats.membership_loads.fetch_add(1, Ordering::Relaxed);
        let membership = Arc::new(membership);
        cache.insert(generation, membership.clone(), self.now_ms());
        Ok(membership)
    }

    /// Drops the channel's cached members here and, through the key-value store, in every other
    /// process. Called after a membership change commits.
    async fn members_changed(&self, channel_id: ChannelId) {
        self.inner.members.invalidate(channel_id);
        let published = self.inner.kv.publish(members::MEMBERS_CHANNEL, channel_id.0.as_bytes()).await;
        if published.is_ok() {
            self.inner.stats.invalidations_published.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(error) = published {
            // The change is stored; other processes reload it within the cache's ttl.
            tracing::warn!(%error, channel_id = %channel_id.0, "could not publish a membership invalidation");
        }
    }

    fn limits(&self) -> channels::Limits {
        let config = &self.inner.config;
        channels::Limits {
            room_members: config.max_room_members,
            group_members: config.max_group_members,
            channels_per_player: config.max_channels_per_player,
        }
    }

    /// Joins the public room called `name` (case-insensitive), creating it if needed. Joining a
    /// room one is in changes nothing.
    ///
    /// # Errors
    /// [`ChatError::InvalidName`]; [`ChatError::LimitReached`] when the room is full or the
    /// account is in `max_channels_per_player` rooms and groups;
    /// [`ChatError::MembershipRateLimited`]; storage errors.
    pub async fn join_room(&self, account_id: Uuid, name: &str) -> Result<Channel, ChatError> {
        let name = text::room_name(name)?;
        self.count_membership_change(account_id).await?;
        let new_id = ChannelId(Uuid::now_v7());
        let (room, joined) =
            channels::join_room(&self.inner.channels, name, new_id, account_id, self.now_ms(), self.limits())
                .await?;
        if joined {
            self.members_changed(room.id).await;
        }
        Ok(room)
    }

    /// Leaves the public room called `name`. Leaving a room one is not in changes nothing.
    ///
    /// # Errors
    /// [`ChatError::UnknownChannel`] when no room has that name; [`ChatError::InvalidName`];
    /// [`ChatError::MembershipRateLimited`].
    pub async fn leave_room(&self, account_id: Uuid, name: &str) -> Result<Channel, ChatError> {
        let name = text::room_name(name)?;
        let room =
            channels::room_by_name(&self.inner.channels, name).await?.ok_or(ChatError::UnknownChannel)?;
        self.count_membership_change(account_id).await?;
        if channels::remove_member(&self.inner.channels, room.id, account_id).await? {
            self.members_changed(room.id).await;
        }
        Ok(room)
    }

    /// Creates a private group owned (and so far only joined) by `owner`.
    ///
    /// # Errors
    /// [`ChatError::InvalidName`]; [`ChatError::LimitReached`] when `owner` is in
    /// `max_channels_per_player` rooms and groups; [`ChatError::MembershipRateLimited`]; storage
    /// errors.
    pub async fn create_group(&self, owner: Uuid, name: &str) -> Result<Channel, ChatError> {
        let name = text::group_name(name)?;
        self.count_membership_change(owner).await?;
        let group = Channel {
            id: ChannelId(Uuid::now_v7()),
            kind: ChannelKind::Group,
            name,
            owner: Some(owner),
            created_at_ms: self.now_ms(),
        };
        channels::create_group(&self.inner.channels, group, self.limits()).await
    }

    /// The owner adds `account_id` to a group. The recipients are every member, the new one
    /// included (the gateway tells only the new one, so they learn the group exists); nobody when
    /// `account_id` already was a member, as nothing changed.
    ///
    /// # Errors
    /// [`ChatError::UnknownChannel`] (also a direct channel of two other players);
    /// [`ChatError::NotAllowed`] unless `actor` owns the group; [`ChatError::LimitReached`] when
    /// the group is full or `account_id` is in `max_channels_per_player` rooms and groups;
    /// [`ChatError::MembershipRateLimited`] (counted for `actor`).
    pub async fn add_member(
        &self,
        actor: Uuid,
        channel_id: ChannelId,
        account_id: Uuid,
    ) -> Result<Delivery<Channel>, ChatError> {
        let group = self.owned_group(actor, channel_id).await?;
        self.count_membership_change(actor).await?;
        let added = channels::add_member(
            &self.inner.channels,
            group.clone(),
            account_id,
            self.now_ms(),
            self.limits(),
        )
        .await?;
        if !added {
            return Ok(Delivery { value: group, recipients: Vec::new() });
        }
        self.members_changed(channel_id).await;
        let recipients = channels::members(&self.inner.channels, channel_id).await?;
        Ok(Delivery { value: group, recipients })
    }

    /// Removes `account_id` from a group: the owner removes anyone else, a member removes
    /// themselves (leaves). The recipients are the remaining members, and the removed one only if
    /// they were a member.
    ///
    /// # Errors
    /// [`ChatError::UnknownChannel`] (also a direct channel of two other players);
    /// [`ChatError::NotAllowed`] for anyone else; [`ChatError::InvalidRequest`] when the owner
    /// tries to leave their own group; [`ChatError::MembershipRateLimited`] (counted for `actor`).
    pub async fn remove_member(
        &self,
        actor: Uuid,
        channel_id: ChannelId,
        account_id: Uuid,
    ) -> Result<Delivery<Channel>, ChatError> {
        let group = self.channel(actor, channel_id).await?;
        if group.kind != ChannelKind::Group {
            return Err(ChatError::InvalidRequest(
                "only group members are removed; leave a room by name".into(),
            ));
        }
        if group.owner == Some(account_id) {
            return Err(ChatError::InvalidRequest("the owner cannot leave their own group".into()));
        }
        if actor != account_id && group.owner != Some(actor) {
            return Err(if channels::is_member(&self.inner.channels, channel_id, actor).await? {
                ChatError::NotAllowed("only the owner removes other members".into())
            } else {
                ChatError::NotMember
            });
        }
        self.count_membership_change(actor).await?;
        let was_member = channels::remove_member(&self.inner.channels, channel_id, account_id).await?;
        if was_member {
            self.members_changed(channel_id).await;
        }
        let mut recipients = channels::members(&self.inner.channels, channel_id).await?;
        if was_member {
            recipients.push(account_id);
        }
        Ok(Delivery { value: group, recipients })
    }

    async fn owned_group(&self, actor: Uuid, channel_id: ChannelId) -> Result<Channel, ChatError> {
        let group = self.channel(actor, channel_id).await?;
        if group.kind != ChannelKind::Group {
            return Err(ChatError::InvalidRequest("members are added to groups only".into()));
        }
        if group.owner != Some(actor) {
            return Err(if channels::is_member(&self.inner.channels, channel_id, actor).await? {
                ChatError::NotAllowed("only the owner adds members".into())
            } else {
                ChatError::NotMember
            });
        }
        Ok(group)
    }

    /// Every channel the account belongs to (rooms joined, groups, direct channels).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn channels_of(&self, account_id: Uuid) -> Result<Vec<Channel>, ChatError> {
        channels::channels_of(&self.inner.channels, account_id).await
    }

    /// Sends `text` to a channel the sender is a member of. Returns once the message is
    /// committed to its year's shard, with the stored message and the members to deliver it to:
    /// those of the channel once it is stored.
    ///
    /// # Errors
    /// [`ChatError::InvalidText`]; [`ChatError::UnknownChannel`] (also a direct channel of two
    /// other players); [`ChatError::NotMember`]; [`ChatError::RateLimited`]; [`ChatError::Store`]
    /// when the rate counter is unreachable; [`ChatError::ShuttingDown`] or [`ChatError::Write`]
    /// when it was not stored.
    pub async fn send(
        &self,
        sender: Uuid,
        channel_id: ChannelId,
        text: &str,
    ) -> Result<Delivery<Message>, ChatError> {
        let text = text::clean_text(text, MAX_TEXT_CHARS)?;
        let membership = self.membership(channel_id).await?;
        if !membership.contains(sender) {
            return Err(not_member(&membership));
        }
        let now_ms = self.now_ms();
        self.count_send(sender, now_ms).await?;
        let message = self.store(sender, channel_id, text, now_ms).await?;
        // Told are the members once it is stored: one removed while it waited for its commit can
        // no longer read it and is not told of it either. The message is stored, so a failed
        // read of the members falls back to those it was sent to rather than failing the send.
        let recipients = match self.membership(channel_id).await {
            Ok(now) => now.members().to_vec(),
            Err(error) => {
                tracing::warn!(%error, channel_id = %channel_id.0, "members read again after a send failed");
                membership.members().to_vec()
            }
        };
        Ok(Delivery { value: message, recipients })
    }

    /// Sends `text` to the direct channel of `sender` and `to`, creating it on the first message.
    /// The caller has checked that `to` is an account.
    ///
    /// # Errors
    /// As [`Chat::send`]; [`ChatError::InvalidRequest`] for a message to oneself.
    pub async fn send_direct(
        &self,
        sender: Uuid,
        to: Uuid,
        text: &str,
    ) -> Result<Delivery<Message>, ChatError> {
        let text = text::clean_text(text, MAX_TEXT_CHARS)?;
        if sender == to {
            return Err(ChatError::InvalidRequest("a direct message goes to someone else".into()));
        }
        // Counted before the channel is made, so a refused first message leaves nothing behind.
        let now_ms = self.now_ms();
        self.count_send(sender, now_ms).await?;
        let channel_id = direct_channel_id(sender, to);
        if !self.has_direct_channel(sender, to).await? {
            let direct = Channel {
                id: channel_id,
                kind: ChannelKind::Direct,
                name: String::new(),
                owner: None,
                created_at_ms: now_ms,
            };
            channels::create(&self.inner.channels, direct, vec![sender, to]).await?;
        }
        let message = self.store(sender, channel_id, text, now_ms).await?;
        Ok(Delivery { value: message, recipients: vec![sender, to] })
    }

    /// Whether `a` and `b` have exchanged direct messages (their channel exists). When it does,
    /// both accounts were checked when it was made.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn has_direct_channel(&self, a: Uuid, b: Uuid) -> Result<bool, ChatError> {
        match self.membership(direct_channel_id(a, b)).await {
            Ok(_) => Ok(true),
            Err(ChatError::UnknownChannel) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Stamps the message with `now_ms` and waits for its group commit.
    async fn store(
        &self,
        sender: Uuid,
        channel_id: ChannelId,
        text: String,
        now_ms: u64,
    ) -> Result<Message, ChatError> {
        let message =
            Message { id: self.inner.ids.next(now_ms), channel_id, sender, text, sent_at_ms: now_ms };
        let (done, acknowledged) = oneshot::channel();
        let pending = writer::Pending { message: message.clone(), done };
        self.inner.queue.send(pending).await.map_err(|_| ChatError::ShuttingDown)?;
        acknowledged.await.map_err(|_| ChatError::ShuttingDown)??;
        Ok(message)
    }

    /// A fixed window per player, numbered by the injected clock so tests move it by hand.
    async fn count_send(&self, sender: Uuid, now_ms: u64) -> Result<(), ChatError> {
        let config = &self.inner.config;
        if self.count("chat-send", sender, now_ms, config.send_window).await? > config.sends_per_window {
            return Err(ChatError::RateLimited);
        }
        Ok(())
    }

    /// Like [`Chat::count_send`], for membership changes: every one writes `chat.db` and makes
    /// every process drop the channel's cached members, so one player toggling quickly must not
    /// keep them all reading `chat.db`.
    async fn count_membership_change(&self, actor: Uuid) -> Result<(), ChatError> {
        let config = &self.inner.config;
        let count = self.count("chat-membership", actor, self.now_ms(), config.membership_window).await?;
        if count > config.membership_changes_per_window {
            return Err(ChatError::MembershipRateLimited);
        }
        Ok(())
    }

    /// Counts one hit of `account_id` in the fixed window of length `window` holding `now_ms`,
    /// and returns the window's count so far.
    async fn count(
        &self,
        what: &str,
        account_id: Uuid,
        now_ms: u64,
        window: Duration,
    ) -> Result<u64, ChatError> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let key = format!("{what}:{account_id}:{}", now_ms / window_ms);
        Ok(self.inner.kv.counter_hit(&key, window).await?)
    }

    /// Up to `limit` (at most [`MAX_PAGE_SIZE`]) visible messages older than `before` (newest
    /// first when `None`), crossing into earlier years' shards as needed. Rooms are readable by
    /// anyone; groups and direct channels by members only.
    ///
    /// # Errors
    /// [`ChatError::UnknownChannel`] (also a direct channel of two other players);
    /// [`ChatError::NotMember`]; storage errors.
    pub async fn history(
        &self,
        reader: Uuid,
        channel_id: ChannelId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage, ChatError> {
        let membership = self.membership(channel_id).await?;
        if membership.channel.kind != ChannelKind::Room && !membership.contains(reader) {
            return Err(not_member(&membership));
        }
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let years = &self.inner.years;
        // The newest year anyone may have written: next year's shard is provisioned ahead of
        // time but stays empty until some process's clock passes the boundary, so the newest
        // page starts in this year's shard (next year's too only within the skew allowance
        // before the boundary) instead of spending a trip on an empty shard. Whether this
        // process has that year open does not matter: one that sent nothing since may not, while
        // others write there.
        let newest = year_of_ms(self.now_ms().saturating_add(CLOCK_SKEW_ALLOWANCE_MS));
        // A cursor from the future (or not a message id at all) starts at the newest shard.
        let (mut cursor, start_year) = match before {
            Some(before) => (before, before.year().min(newest)),
            None => (ids::first_id_at(year_start_ms(newest + 1)), newest),
        };
        self.inner.stats.history_pages.fetch_add(1, Ordering::Relaxed);
        // No message of the channel is older than the channel (give or take another process's
        // clock), so older years are neither read nor reported archived for it.
        let first_year = year_of_ms(membership.channel.created_at_ms.saturating_sub(CLOCK_SKEW_ALLOWANCE_MS));
        let mut page = HistoryPage::default();
        for year in (years.oldest().max(first_year)..=start_year).rev() {
            match years.for_read(year).await? {
                years::YearState::Live(shard) => {
                    self.inner.stats.history_shard_reads.fetch_add(1, Ordering::Relaxed);
                    let remaining = limit - page.messages.len();
                    let found = messages::page(&shard, channel_id, cursor, remaining).await?;
                    page.messages.extend(found);
                }
                years::YearState::Archived => {
                    page.archived = true;
                    break;
                }
                years::YearState::Missing => {}
            }
            if page.messages.len() == limit {
                break;
            }
            cursor = ids::first_id_at(year_start_ms(year));
        }
        if page.messages.len() == limit {
            page.next_before = page.messages.last().map(|message| message.id);
        }
        Ok(page)
    }

    /// Soft-deletes the sender's own message: it disappears from history (the row stays, for
    /// moderation). Returns the deletion and the members to tell.
    ///
    /// # Errors
    /// [`ChatError::UnknownChannel`] (also a direct channel of two other players);
    /// [`ChatError::UnknownMessage`] when the channel holds no such visible message;
    /// [`ChatError::NotAllowed`] for someone else's message; [`ChatError::Archived`] when its
    /// year was retired.
    pub async fn delete(
        &self,
        actor: Uuid,
        channel_id: ChannelId,
        message_id: MessageId,
    ) -> Result<Delivery<(ChannelId, MessageId)>, ChatError> {
        let membership = self.membership(channel_id).await?;
        // A former member of a room or group may still withdraw their own messages; a direct
        // channel's members never change.
        if membership.channel.kind == ChannelKind::Direct && !membership.contains(actor) {
            return Err(not_member(&membership));
        }
        let shard = match self.inner.years.for_read(message_id.year()).await? {
            years::YearState::Live(shard) => shard,
            years::YearState::Archived => return Err(ChatError::Archived(message_id.year())),
            years::YearState::Missing => return Err(ChatError::UnknownMessage),
        };
        match messages::sender(&shard, channel_id, message_id).await? {
            None => return Err(ChatError::UnknownMessage),
            Some(sender) if sender != actor => {
                return Err(ChatError::NotAllowed("only the sender deletes a message".into()));
            }
            Some(_) => {}
        }
        if !messages::soft_delete(&shard, channel_id, message_id, self.now_ms()).await? {
            return Err(ChatError::UnknownMessage);
        }
        Ok(Delivery { value: (channel_id, message_id), recipients: membership.members().to_vec() })
    }
}

/// Why someone outside the channel may not read or post there. A direct channel's id is computed
/// from the two account ids, which every player can see, so to anyone else it is answered as if
/// it did not exist: whether two players write to each other is theirs to know.
fn not_member(membership: &members::Membership) -> ChatError {
    if membership.channel.kind == ChannelKind::Direct {
        ChatError::UnknownChannel
    } else {
        ChatError::NotMember
    }
}

/// Counters are read with relaxed ordering: they are statistics, not synchronisation.
impl ChatStats {
    /// (messages stored, commits).
    pub fn snapshot(&self) -> (u64, u64) {
        (self.messages_stored.load(Ordering::Relaxed), self.commits.load(Ordering::Relaxed))
    }
}
