//! Chat messages: requests, replies and events of the chat domain, nested under
//! [`crate::Request::Chat`], [`crate::Reply::Chat`] and [`crate::Event::Chat`] so each
//! domain's messages live in one file.
//!
//! Channels are public rooms (joined and left by name), private groups (an owner adds and
//! removes members) and direct channels (one per pair of players, made by the first
//! [`ChatRequest::SendDirect`]). Every member of a channel, the sender included, gets each new
//! message as a [`ChatEvent::Message`] on whichever gateway they are connected to; members who
//! are offline read it with [`ChatRequest::History`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AccountId;

/// Longest message text, in characters (Unicode scalar values) after cleaning.
pub const TEXT_MAX_CHARS: usize = 1_000;
/// Most messages in one history page.
pub const PAGE_MAX_MESSAGES: u32 = 100;

/// A channel's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelId(pub Uuid);

/// A message's id: a UUID v7 whose timestamp is the message's server time, so ids sort by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub Uuid);

/// What kind of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Public: anyone joins by name and reads; members post.
    Room,
    /// Private: the owner adds and removes members; only members read and post.
    Group,
    /// Two players: only they read and post.
    Direct,
}

/// A channel as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// Its id.
    pub channel_id: ChannelId,
    /// Room, group or direct.
    pub kind: ChannelKind,
    /// A room's name (lower case) or a group's name; empty for direct channels.
    pub name: String,
    /// A group's owner; none for rooms and direct channels.
    pub owner: Option<AccountId>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Its id (sorts by time).
    pub message_id: MessageId,
    /// Where it was sent.
    pub channel_id: ChannelId,
    /// Who sent it.
    pub sender: AccountId,
    /// The text as stored: control characters other than line feeds removed, trimmed.
    pub text: String,
    /// Server time of the send, in milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
}

/// Chat requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRequest {
    /// Joins the public room `name` (1 to 32 of `a-z0-9_-`, case-insensitive), creating it if
    /// needed. Answered with [`ChatReply::Channel`].
    JoinRoom {
        /// The room's name.
        name: String,
    },
    /// Leaves the public room `name`. Answered with [`ChatReply::Left`].
    LeaveRoom {
        /// The room's name.
        name: String,
    },
    /// Creates a private group owned by this player. Answered with [`ChatReply::Channel`].
    CreateGroup {
        /// 1 to 64 characters.
        name: String,
    },
    /// The group's owner adds a member; the new member gets [`ChatEvent::Added`]. Answered
    /// with [`ChatReply::MemberAdded`].
    AddMember {
        /// The group.
        channel_id: ChannelId,
        /// Who to add.
        account_id: AccountId,
    },
    /// The owner removes a member, or a member removes themselves (leaves). Answered with
    /// [`ChatReply::MemberRemoved`]; the removed member gets [`ChatEvent::Removed`].
    RemoveMember {
        /// The group.
        channel_id: ChannelId,
        /// Who to remove.
        account_id: AccountId,
    },
    /// Sends a message to a channel this player is a member of. Answered with
    /// [`ChatReply::Sent`] once it is stored.
    Send {
        /// Where.
        channel_id: ChannelId,
        /// 1 to [`TEXT_MAX_CHARS`] characters after cleaning.
        text: String,
    },
    /// Sends a direct message, creating the pair's channel on the first one. Answered with
    /// [`ChatReply::Sent`] (carrying the channel's id) once it is stored.
    SendDirect {
        /// To whom (not oneself).
        to: AccountId,
        /// 1 to [`TEXT_MAX_CHARS`] characters after cleaning.
        text: String,
    },
    /// A page of a channel's history, newest first. Answered with [`ChatReply::History`].
    History {
        /// Which channel (rooms: anyone; groups and direct channels: members).
        channel_id: ChannelId,
        /// Only messages older than this one; none for the newest.
        before: Option<MessageId>,
        /// Messages wanted, 1 to [`PAGE_MAX_MESSAGES`] (larger asks get the maximum).
        limit: u32,
    },
    /// Deletes one of this player's own messages: it leaves history and members get
    /// [`ChatEvent::Deleted`]. Answered with [`ChatReply::Deleted`].
    Delete {
        /// The message's channel.
        channel_id: ChannelId,
        /// The message.
        message_id: MessageId,
    },
    /// Every channel this player is a member of. Answered with [`ChatReply::Channels`].
    Channels,
}

impl ChatRequest {
    /// A short stable name of the request's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ChatRequest::JoinRoom { .. } => "chat_join_room",
            ChatRequest::LeaveRoom { .. } => "chat_leave_room",
            ChatRequest::CreateGroup { .. } => "chat_create_group",
            ChatRequest::AddMember { .. } => "chat_add_member",
            ChatRequest::RemoveMember { .. } => "chat_remove_member",
            ChatRequest::Send { .. } => "chat_send",
            ChatRequest::SendDirect { .. } => "chat_send_direct",
            ChatRequest::History { .. } => "chat_history",
            ChatRequest::Delete { .. } => "chat_delete",
            ChatRequest::Channels => "chat_channels",
        }
    }
}

/// Chat results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatReply {
    /// The room joined or the group created.
    Channel(ChannelInfo),
    /// The room was left (or this player was not in it).
    Left {
        /// The room.
        channel_id: ChannelId,
    },
    /// The member was added (or already was one).
    MemberAdded {
        /// The group.
        channel_id: ChannelId,
        /// The member.
        account_id: AccountId,
    },
    /// The member was removed (or was not one).
    MemberRemoved {
        /// The group.
        channel_id: ChannelId,
        /// The former member.
        account_id: AccountId,
    },
    /// The message is stored.
    Sent {
        /// Where it went (for a first direct message: the new channel).
        channel_id: ChannelId,
        /// Its id.
        message_id: MessageId,
        /// Its server time, in milliseconds since the Unix epoch.
        sent_at_ms: u64,
    },
    /// A page of history.
    History(HistoryPage),
    /// The message was deleted.
    Deleted {
        /// The message's channel.
        channel_id: ChannelId,
        /// The message.
        message_id: MessageId,
    },
    /// This player's channels, oldest first.
    Channels(Vec<ChannelInfo>),
}

/// One page of a channel's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The channel.
    pub channel_id: ChannelId,
    /// Newest first.
    pub messages: Vec<ChatMessage>,
    /// Pass as `before` for the next (older) page; none when nothing older is served.
    pub next_before: Option<MessageId>,
    /// True when older messages exist in a retired (archived) year and are not served online.
    pub archived: bool,
}

/// Chat events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatEvent {
    /// A new message in one of this player's channels (also sent to the sender).
    Message(ChatMessage),
    /// A message was deleted by its sender.
    Deleted {
        /// The message's channel.
        channel_id: ChannelId,
        /// The message.
        message_id: MessageId,
    },
    /// This player was added to a group.
    Added(ChannelInfo),
    /// This player was removed from (or left) a group.
    Removed {
        /// The group.
        channel_id: ChannelId,
    },
}
