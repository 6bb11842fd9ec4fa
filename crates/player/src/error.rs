//! The ways a player-state operation fails.

/// Why a player-state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PlayerError {
    /// A value breaks the rules (NaN, out of range, too large); nothing changed.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The key-value store (Redis) failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] kv::KvError),
    /// `player.db` failed.
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// A stored record could not be read back (a bug or tampering).
    #[error("internal: {0}")]
    Internal(String),
}
