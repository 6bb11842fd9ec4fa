//! The ways an auth operation fails, named for what a caller does about them.

use std::time::Duration;

/// Why an auth operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The username breaks the naming rules.
    #[error("invalid username: {0}")]
    InvalidUsername(String),
    /// The password breaks the length rules.
    #[error("invalid password: {0}")]
    InvalidPassword(String),
    /// Another account has this username, in any case.
    #[error("that username is taken")]
    UsernameTaken,
    /// Unknown username or wrong password: deliberately not saying which.
    #[error("unknown username or wrong password")]
    BadCredentials,
    /// The token or session is unknown, revoked or expired.
    #[error("the session is invalid or has expired")]
    InvalidSession,
    /// No account has this id.
    #[error("no such account")]
    UnknownAccount,
    /// The account was disabled by an operator: the credentials were right, but it may not log in.
    #[error("this account is disabled")]
    AccountDisabled,
    /// Too many failed logins for this account or address; retry after the given time.
    #[error("too many failed logins; retry in {} s", retry_after.as_secs().max(1))]
    Throttled {
        /// How long until the current throttling window ends.
        retry_after: Duration,
    },
    /// Too many registrations from this client address; retry after the given time.
    #[error("too many accounts registered from this address; retry in {} s", retry_after.as_secs().max(1))]
    RegistrationsThrottled {
        /// How long until the current throttling window ends.
        retry_after: Duration,
    },
    /// Too many password hashes are already waiting for a thread.
    #[error("too many logins at once; retry shortly")]
    Busy,
    /// The session store (Redis) failed.
    #[error(transparent)]
    Store(#[from] kv::KvError),
    /// `auth.db` failed.
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    /// The password hasher failed (a bug or a broken stored hash).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}
