//! The ways a chat operation fails.

/// Why a chat operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The message text breaks the rules (empty after cleaning, too long); nothing was stored.
    #[error("invalid text: {0}")]
    InvalidText(String),
    /// A room or group name breaks the rules.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The request makes no sense as asked (a direct message to oneself, the owner leaving).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No channel has that id (or no room that name).
    #[error("no such channel")]
    UnknownChannel,
    /// The channel holds no visible message with that id.
    #[error("no such message")]
    UnknownMessage,
    /// The account is not a member of the channel.
    #[error("not a member of this channel")]
    NotMember,
    /// The account is a member but may not do this (not the owner, not the sender).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// A room or group is full, or a player is in as many rooms and groups as one may be
    /// (`ChatConfig`'s `max_*` limits); nothing changed.
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// The sender exceeded the per-player send rate.
    #[error("sending too fast; retry in a moment")]
    RateLimited,
    /// The player exceeded the per-player rate of membership changes (joins, leaves, groups
    /// created, members added or removed); nothing changed.
    #[error("joining and leaving too fast; retry in a moment")]
    MembershipRateLimited,
    /// The message's year was retired into the archive: it can no longer be changed.
    #[error("year {0} is archived")]
    Archived(i32),
    /// An ops operation was refused (retiring the current year, an archive that already exists).
    #[error("refused: {0}")]
    Refused(String),
    /// A retired year's archive failed verification; the live shard was left in place.
    #[error("archive verification failed: {0}")]
    Verification(String),
    /// The writer is stopping or stopped: the message was not stored.
    #[error("chat is shutting down")]
    ShuttingDown,
    /// The group commit holding this message failed; it was not stored.
    #[error("storing the message failed: {0}")]
    Write(String),
    /// The key-value store (Redis) failed; nothing was stored.
    #[error(transparent)]
    Store(#[from] kv::KvError),
    /// A chat shard failed.
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    /// A file operation on a shard or the archive failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
