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
