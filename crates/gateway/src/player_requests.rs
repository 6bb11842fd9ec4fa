//! Player-state requests: wire types in, `player` domain calls, wire types out. The domain
//! validates values; this file only converts.

use player::Players;
use proto::{ErrorBody, ErrorCode, Reply};
use uuid::Uuid;

use crate::errors;

fn position_from_wire(position: proto::Position) -> player::Position {
    player::Position { x: position.x, y: position.y, z: position.z }
}

fn position_to_wire(position: player::Position) -> proto::Position {
    proto::Position { x: position.x, y: position.y, z: position.z }
}

/// `UpdateState`: only ever applied to the authenticated player's own state.
pub(crate) async fn update(
    players: &Players,
    own_id: Uuid,
    update: proto::StateUpdate,
) -> Result<Reply, ErrorBody> {
    let update = player::StateUpdate {
        position: update.position.map(position_from_wire),
        rotation: update.rotation,
        health: update.health,
        attributes: update.attributes,
    };
    let version = players.update(own_id, update).await.map_err(|e| errors::from_player(&e))?;
    Ok(Reply::StateAccepted { version })
}

/// `GetState`: the player's own full state; the default state (version 0) before the first update.
pub(crate) async fn get_own(players: &Players, own_id: Uuid) -> Result<Reply, ErrorBody> {
    let state = players.get(own_id).await.map_err(|e| errors::from_player(&e))?;
    let state = state.unwrap_or(player::PlayerState { player_id: own_id, ..player::PlayerState::default() });
    Ok(Reply::State(proto::PlayerState {
        account_id: proto::AccountId(state.player_id),
        position: position_to_wire(state.position),
        rotation: state.rotation,
        health: state.health,
        attributes: state.attributes,
        version: state.version,
        updated_at_ms: state.updated_at_ms,
    }))
}

/// `GetPlayerState`: another player's public state (no attributes).
pub(crate) async fn get_public(players: &Players, player_id: Uuid) -> Result<Reply, ErrorBody> {
    let Some(state) = players.get(player_id).await.map_err(|e| errors::from_player(&e))? else {
        return Err(ErrorBody::new(ErrorCode::NotFound, "no state is stored for that player"));
    };
    Ok(Reply::PublicState(proto::PublicPlayerState {
        account_id: proto::AccountId(state.player_id),
        position: position_to_wire(state.position),
        rotation: state.rotation,
        health: state.health,
        version: state.version,
        updated_at_ms: state.updated_at_ms,
    }))
}

#[cfg(test)]
mod tests {
    /// The protocol publishes the player domain's limits for clients; they must be the same numbers.
    #[test]
    fn the_published_limits_are_the_domains() {
        assert_eq!(proto::limits::COORDINATE_MAX_ABS, player::COORDINATE_MAX_ABS);
        assert_eq!(proto::limits::ROTATION_MAX_ABS_DEGREES, player::ROTATION_MAX_ABS_DEGREES);
        assert_eq!(proto::limits::HEALTH_MAX, player::HEALTH_MAX);
        assert_eq!(proto::limits::ATTRIBUTES_MAX_BYTES, player::ATTRIBUTES_MAX_BYTES);
        assert_eq!(proto::limits::USERNAME_MAX_CHARS, auth::USERNAME_MAX_CHARS);
        assert_eq!(proto::limits::USERNAME_MIN_CHARS, auth::USERNAME_MIN_CHARS);
        assert_eq!(proto::limits::PASSWORD_MIN_CHARS, auth::PASSWORD_MIN_CHARS);
        assert_eq!(proto::limits::PASSWORD_MAX_BYTES, auth::PASSWORD_MAX_BYTES);
    }
}
