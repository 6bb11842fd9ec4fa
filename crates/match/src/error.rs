//! The ways a matchmaking operation fails. Every failure changes nothing.

use uuid::Uuid;

/// Why a matchmaking operation failed; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    /// No mode of this name is configured.
    #[error("unknown mode: {0}")]
    UnknownMode(String),
    /// The player already waits in a queue (at most one at a time).
    #[error("already queued for {mode}")]
    AlreadyQueued {
        /// The mode the player waits in.
        mode: String,
    },
    /// No match has this id.
    #[error("unknown match {0}")]
    UnknownMatch(Uuid),
    /// The player was not in the match they report on.
    #[error("not a player of this match")]
    NotParticipant,
    /// A value breaks the rules (a winning team that does not exist, a bad limit).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A different result was already reported (by this player, or the match is finished with
    /// another result).
    #[error("conflicting result: {0}")]
    ResultConflict(&'static str),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The queue (Redis) failed.
    #[error(transparent)]
    Store(#[from] kv::KvError),
    /// `match.db` failed.
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    /// A stored record could not be read back (a bug or tampering).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<shard::rusqlite::Error> for MatchError {
    fn from(error: shard::rusqlite::Error) -> Self {
        MatchError::Shard(shard::ShardError::Sqlite(error))
    }
}
