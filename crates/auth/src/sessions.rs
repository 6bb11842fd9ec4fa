//! Session tokens: issued at login, kept in the key-value store under the SHA-256 of the token,
//! validated on resume and while a connection lives, and revoked by deleting them.
//!
//! Expiry is decided here against the injected clock (idle and absolute limits written in the
//! record), so tests control it; the store's own TTL only collects what nobody uses any more, and
//! never keeps a session's key past the session's absolute end.

use std::time::Duration;

use kv::Kv;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Account, AuthConfig, AuthError};

/// Random bytes in a token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// How stale the recorded last use may grow before it is written again, as a fraction of the idle
/// lifetime: refreshing on every request would double the store's writes for nothing.
const LAST_SEEN_REFRESH_DIVISOR: u32 = 8;

/// The name of a session in the store: the hex SHA-256 of its token. Safe to log and to pass
/// between gateways; it cannot be turned back into the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey(String);

impl SessionKey {
    /// The key of `token`.
    pub fn of_token(token: &str) -> SessionKey {
        SessionKey(hex::encode(Sha256::digest(token.as_bytes())))
    }

    /// A key as stored (a hex hash), e.g. from a revocation message.
    pub fn from_hash(hash: String) -> SessionKey {
        SessionKey(hash)
    }

    /// The hex hash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session's key in the store.
    pub key: SessionKey,
    /// The account it belongs to.
    pub account_id: Uuid,
    /// The account's username as registered.
    pub username: String,
    /// When the account was created (milliseconds since the Unix epoch).
    pub account_created_at_ms: u64,
    /// When the session ends whatever happens (milliseconds since the Unix epoch).
    pub expires_at_ms: u64,
}

/// A session just issued, with the token the client must keep. The token exists nowhere else.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    /// The secret token (64 hex characters).
    pub token: String,
    /// The session it opens.
    pub session: Session,
    /// Other sessions of the account that issuing this one ended, oldest first, to keep the
    /// account within [`AuthConfig::max_sessions_per_account`]; empty after a refresh. Their
    /// connections are to be told, as after any revocation.
    pub ended: Vec<SessionKey>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    account_id: Uuid,
    username: String,
    account_created_at_ms: u64,
    created_at_ms: u64,
    expires_at_ms: u64,
    last_seen_ms: u64,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Issues a new session, ending `session_max_lifetime` from now, and ends the account's oldest
/// sessions past `max_sessions_per_account`.
pub(crate) async fn issue(
    kv: &Kv,
    config: &AuthConfig,
    now_ms: u64,
    account: &Account,
) -> Result<IssuedSession, AuthError> {
    let expires_at_ms = now_ms.saturating_add(millis(config.session_max_lifetime));
    let (token, key, record) = new_session(now_ms, account, expires_at_ms);
    let (bytes, idle_ttl, remaining) = stored_form(config, &record, now_ms)?;
    let ended = kv
        .session_put(
            key.as_str(),
            &record.account_id.to_string(),
            &bytes,
            idle_ttl,
            remaining,
            config.max_sessions_per_account,
        )
        .await?;
    if !ended.is_empty() {
        tracing::info!(
            account_id = %record.account_id,
            n_ended = ended.len(),
            "a login ended the account's oldest sessions, past its cap"
        );
    }
    let ended = ended.into_iter().map(SessionKey::from_hash).collect();
    Ok(IssuedSession { token, session: session_of(key, &record), ended })
}

/// Replaces `old` with a new session of the same account and absolute end, so rotating a token
/// never extends a session's lifetime. One atomic store operation: of concurrent rotations of one
/// session only one succeeds, and none creates a session once the old one was revoked (by
/// `logout_everywhere` after a disable, say), which a check followed by a separate write could.
///
/// # Errors
/// [`AuthError::InvalidSession`] when `old` is no longer in the store.
pub(crate) async fn rotate(
    kv: &Kv,
    config: &AuthConfig,
    now_ms: u64,
    old: &Session,
) -> Result<IssuedSession, AuthError> {
    let account = Account {
        account_id: old.account_id,
        username: old.username.clone(),
        created_at_ms: old.account_created_at_ms,
    };
    let (token, key, record) = new_session(now_ms, &account, old.expires_at_ms);
    let (bytes, idle_ttl, remaining) = stored_form(config, &record, now_ms)?;
    let rotated = kv
        .session_rotate(
            old.key.as_str(),
            &record.account_id.to_string(),
            key.as_str(),
            &bytes,
            idle_ttl,
            remaining,
        )
        .await?;
    if !rotated {
        return Err(AuthError::InvalidSession);
    }
    Ok(IssuedSession { token, session: session_of(key, &record), ended: Vec::new() })
}

fn new_session(now_ms: u64, account: &Account, expires_at_ms: u64) -> (String, SessionKey, Record) {
    let mut bytes = [0_u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let key = SessionKey::of_token(&token);
    let record = Record {
        account_id: account.account_id,
        username: account.username.clone(),
        account_created_at_ms: account.created_at_ms,
        created_at_ms: now_ms,
        expires_at_ms,
        last_seen_ms: now_ms,
    };
    (token, key, record)
}

pub(crate) async fn validate(
    kv: &Kv,
    config: &AuthConfig,
    now_ms: u64,
    key: &SessionKey,
) -> Result<Session, AuthError> {
    let Some(bytes) = kv.session_get_touch(key.as_str(), config.session_idle_ttl).await? else {
        return Err(AuthError::InvalidSession);
    };
    let Ok(mut record) = serde_json::from_slice::<Record>(&bytes) else {
        tracing::warn!(session = key.as_str(), "unreadable session record; treating it as revoked");
        return Err(AuthError::InvalidSession);
    };
    let idle_ms = millis(config.session_idle_ttl);
    if now_ms >= record.expires_at_ms || now_ms.saturating_sub(record.last_seen_ms) > idle_ms {
        kv.session_delete(key.as_str(), &record.account_id.to_string()).await?;
        return Err(AuthError::InvalidSession);
    }
    if now_ms.saturating_sub(record.last_seen_ms) > idle_ms / u64::from(LAST_SEEN_REFRESH_DIVISOR) {
        record.last_seen_ms = now_ms;
        let (bytes, idle_ttl, _) = stored_form(config, &record, now_ms)?;
        // Only over a record that is still there: a session revoked since it was read above must
        // stay revoked, not come back from this write.
        if !kv.session_update(key.as_str(), &bytes, idle_ttl).await? {
            return Err(AuthError::InvalidSession);
        }
    } else {
        // The read set the key's TTL to the whole idle lifetime, unaware of the record's absolute
        // end; in the session's last idle lifetime that would keep the key past its end. Only
        // then is the second round trip paid (the write-back above already sets the shorter TTL).
        let remaining = Duration::from_millis(record.expires_at_ms - now_ms);
        if remaining < config.session_idle_ttl {
            kv.session_expire_within(key.as_str(), remaining).await?;
        }
    }
    Ok(session_of(key.clone(), &record))
}

/// The record's bytes, its idle TTL and the time left until its absolute end (at least a second,
/// which the store needs), as the store keeps them.
fn stored_form(
    config: &AuthConfig,
    record: &Record,
    now_ms: u64,
) -> Result<(Vec<u8>, Duration, Duration), AuthError> {
    let bytes = serde_json::to_vec(record).map_err(|e| AuthError::Hashing(e.to_string()))?;
    let remaining =
        Duration::from_millis(record.expires_at_ms.saturating_sub(now_ms)).max(Duration::from_secs(1));
    let idle_ttl = config.session_idle_ttl.min(remaining);
    Ok((bytes, idle_ttl, remaining))
}

fn session_of(key: SessionKey, record: &Record) -> Session {
    Session {
        key,
        account_id: record.account_id,
        username: record.username.clone(),
        account_created_at_ms: record.account_created_at_ms,
        expires_at_ms: record.expires_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_the_sha256_of_the_token_and_not_the_token() {
        let key = SessionKey::of_token("abc");
        assert_eq!(key.as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
