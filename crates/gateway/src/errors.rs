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
        AuthError::AccountDisabled => ErrorCode::Forbidden,
        AuthError::Throttled { .. } | AuthError::RegistrationsThrottled { .. } => ErrorCode::RateLimited,
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

/// The wire error for a chat failure.
pub fn from_chat(error: &chat::ChatError) -> ErrorBody {
    use chat::ChatError;
    let code = match error {
        ChatError::InvalidText(_) | ChatError::InvalidName(_) | ChatError::InvalidRequest(_) => {
            ErrorCode::BadRequest
        }
        ChatError::UnknownChannel | ChatError::UnknownMessage => ErrorCode::NotFound,
        ChatError::NotMember | ChatError::NotAllowed(_) => ErrorCode::Forbidden,
        ChatError::RateLimited | ChatError::MembershipRateLimited => ErrorCode::RateLimited,
        ChatError::Archived(_) | ChatError::LimitReached(_) => ErrorCode::Conflict,
        ChatError::ShuttingDown => ErrorCode::Unavailable,
        ChatError::Store(store_error) => return unavailable(store_error),
        ChatError::Refused(_)
        | ChatError::Verification(_)
        | ChatError::Write(_)
        | ChatError::Shard(_)
        | ChatError::Io(_) => {
            tracing::error!(%error, "chat failed");
            return ErrorBody::new(ErrorCode::Internal, "internal error");
        }
    };
    ErrorBody::new(code, error.to_string())
}

/// The wire error for an inventory failure. An expired offer is `conflict`: it exists, but can
/// no longer be acted on.
pub fn from_inventory(error: &inventory::InventoryError) -> ErrorBody {
    use inventory::InventoryError as E;
    let code = match error {
        E::UnknownItem(_) | E::InvalidQuantity(_) | E::InvalidRequest(_) => ErrorCode::BadRequest,
        E::NotAllowed(_) => ErrorCode::Forbidden,
        E::UnknownOffer(_) => ErrorCode::NotFound,
        E::Insufficient { .. }
        | E::StackFull { .. }
        | E::OffererLacks { .. }
        | E::OffererFull { .. }
        | E::ItemRetired { .. }
        | E::OfferClosed(_)
        | E::OfferExpired
        | E::TooManyOpenOffers(_)
        | E::KeyReused => ErrorCode::Conflict,
        E::ShuttingDown => ErrorCode::Unavailable,
        E::Catalogue(_) | E::Config(_) | E::Shard(_) | E::Internal(_) => {
            tracing::error!(%error, "inventory failed");
            return ErrorBody::new(ErrorCode::Internal, "internal error");
        }
    };
    ErrorBody::new(code, error.to_string())
}

/// The wire error for a matchmaking failure. Reporting on a match one was not in is
/// `forbidden`; a second, different result is `conflict`.
pub fn from_match(error: &matchmaking::MatchError) -> ErrorBody {
    use matchmaking::MatchError as E;
    let code = match error {
        E::UnknownMode(_) | E::InvalidRequest(_) => ErrorCode::BadRequest,
        E::NotParticipant => ErrorCode::Forbidden,
        E::UnknownMatch(_) => ErrorCode::NotFound,
        E::AlreadyQueued { .. } | E::ResultConflict(_) => ErrorCode::Conflict,
        E::Store(store_error) => return unavailable(store_error),
        E::Config(_) | E::Shard(_) | E::Internal(_) => {
            tracing::error!(%error, "matchmaking failed");
            return ErrorBody::new(ErrorCode::Internal, "internal error");
        }
    };
    ErrorBody::new(code, error.to_string())
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
    fn every_inventory_error_has_its_code() {
        use inventory::InventoryError as E;
        let check = |error: E, code: ErrorCode| assert_eq!(from_inventory(&error).code, code, "{error:?}");
        check(E::UnknownItem("x".into()), ErrorCode::BadRequest);
        check(E::InvalidQuantity("x".into()), ErrorCode::BadRequest);
        check(E::InvalidRequest("x".into()), ErrorCode::BadRequest);
        check(E::NotAllowed("x"), ErrorCode::Forbidden);
        check(E::UnknownOffer(uuid::Uuid::nil()), ErrorCode::NotFound);
        check(E::Insufficient { item_id: "x".into(), held: 0, needed: 1 }, ErrorCode::Conflict);
        check(E::OffererLacks { item_id: "x".into() }, ErrorCode::Conflict);
        check(E::OffererFull { item_id: "x".into() }, ErrorCode::Conflict);
        check(E::ItemRetired { item_id: "x".into() }, ErrorCode::Conflict);
        check(E::OfferExpired, ErrorCode::Conflict);
        check(E::KeyReused, ErrorCode::Conflict);
        check(E::ShuttingDown, ErrorCode::Unavailable);
        check(E::Internal("secret detail".into()), ErrorCode::Internal);
        assert!(!from_inventory(&E::Internal("secret detail".into())).message.contains("secret"));
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let body = from_auth(&AuthError::Hashing("secret detail".into()));
        assert!(!body.message.contains("secret"));
    }
}
