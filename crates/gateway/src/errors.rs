//! The one place where domain errors become wire errors. Server faults are logged here; a
//! client's bad input is not an error of ours and is not logged as one.

use auth::AuthError;
use proto::{ErrorBody, ErrorCode};

/// The wire error for an auth failure.
pub fn from_auth(error: &AuthError) -> ErrorBody {
    let code = match error {
        AuthError::InvalidUsername(_) | AuthError::InvalidPassword(_) => ErrorCode::BadRequest,
        AuthError::UsernameTaken => ErrorCode::Conflict,
        AuthError::BadCredentials | AuthError::InvalidSession => ErrorCode::Unauthorized,
        AuthError::UnknownAccount => ErrorCode::NotFound,
        AuthError::Throttled { .. } => ErrorCode::RateLimited,
        AuthError::Busy => ErrorCode::Unavailable,
        AuthError::Store(store_error) => return unavailable(store_error),
        AuthError::Shard(_) | AuthError::Hashing(_) => {
            tracing::error!(%error, "auth failed");
            return ErrorBody::new(ErrorCode::Internal, "internal error");
        }
    };
    ErrorBody::new(code, error.to_string())
}

/// The wire error for a player-state failure.
pub fn from_player(error: &player::PlayerError) -> ErrorBody {
    match error {
        player::PlayerError::InvalidValue(_) => ErrorBody::new(ErrorCode::BadRequest, error.to_string()),
        player::PlayerError::Store(store_error) => unavailable(store_error),
        player::PlayerError::Shard(_) | player::PlayerError::Config(_) | player::PlayerError::Internal(_) => {
            tracing::error!(%error, "player state failed");
            ErrorBody::new(ErrorCode::Internal, "internal error")
        }
    }
}

/// The wire error for a key-value store (Redis) failure.
pub fn unavailable(error: &kv::KvError) -> ErrorBody {
    tracing::warn!(%error, "key-value store failed");
    ErrorBody::new(ErrorCode::Unavailable, "a backing service is unavailable; retry shortly")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_auth_error_has_its_code() {
        let check = |error: AuthError, code: ErrorCode| assert_eq!(from_auth(&error).code, code, "{error:?}");
        check(AuthError::InvalidUsername("x".into()), ErrorCode::BadRequest);
        check(AuthError::InvalidPassword("x".into()), ErrorCode::BadRequest);
        check(AuthError::UsernameTaken, ErrorCode::Conflict);
        check(AuthError::BadCredentials, ErrorCode::Unauthorized);
        check(AuthError::InvalidSession, ErrorCode::Unauthorized);
        check(AuthError::UnknownAccount, ErrorCode::NotFound);
        check(
            AuthError::Throttled { retry_after: std::time::Duration::from_secs(3) },
            ErrorCode::RateLimited,
        );
        check(AuthError::Busy, ErrorCode::Unavailable);
        check(AuthError::Store(kv::KvError::Unavailable("down".into())), ErrorCode::Unavailable);
        check(AuthError::Hashing("bug".into()), ErrorCode::Internal);
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let body = from_auth(&AuthError::Hashing("secret detail".into()));
        assert!(!body.message.contains("secret"));
    }
}
