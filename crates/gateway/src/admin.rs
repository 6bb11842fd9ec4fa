//! The admin HTTP port: liveness, readiness and metrics for orchestrators and Prometheus, and the
//! service endpoints for operators and trusted game servers, which need the service token. It is
//! separate from the game port so it can stay private.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use uuid::Uuid;

use crate::Shared;
use crate::errors;
use crate::inventory_requests::{authorise, error_answer};

/// The admin routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/accounts/{account_id}/notice", post(notice))
        .route("/inventory/grant", post(crate::inventory_requests::grant_http))
        .route("/inventory/{account_id}/ledger", get(crate::inventory_requests::ledger_http))
        .route("/match/{match_id}/result", post(crate::matchmaking_requests::result_http))
        .with_state(shared)
}

/// Ready when the key-value store answers and every shard answers a query.
async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    if let Err(error) = shared.kv.ping().await {
        problems.push(format!("kv: {error}"));
    }
    for shard in shared.shards() {
        if let Err(error) = shard.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(()))).await {
            problems.push(format!("{}: {error}", shard.path().display()));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> String {
    let buffer = match shared.players.config().mode {
        player::WriteMode::Buffered => shared.players.buffer_stats().await.ok(),
        player::WriteMode::Direct => None,
    };
    let player = crate::metrics::render_player(shared.players.stats(), buffer, shared.clock.now_ms());
    let inventory = crate::metrics::render_inventory(shared.inventory.stats());
    let chat = crate::metrics::render_chat(
        shared.chat.stats(),
        shared.chat_announcer.stats(),
        shared.hub.delivery_stats(),
    );
    shared.metrics.render() + &player + &inventory + &chat
}

/// Sends the request body as a [`proto::Event::Notice`] to every connection of the account, on
/// whichever gateway process it is connected to. For operators and trusted game servers, with
/// the service token: a notice reaches players as the game's own word.
async fn notice(
    State(shared): State<Arc<Shared>>,
    Path(account_id): Path<Uuid>,
    headers: HeaderMap,
    text: String,
) -> Response {
    if let Err(answer) = authorise(&shared, &headers) {
        return answer.into_response();
    }
    if text.len() > shared.config.max_frame_bytes / 2 {
        return (StatusCode::PAYLOAD_TOO_LARGE, "notice too long\n").into_response();
    }
    if let Err(error) = shared.auth.account(account_id).await {
        return error_answer(&errors::from_auth(&error)).into_response();
    }
    match shared.hub.deliver(account_id, proto::Event::Notice { text }).await {
        Ok(()) => (StatusCode::ACCEPTED, "queued\n").into_response(),
        Err(error) => {
            tracing::warn!(%error, "could not publish a notice");
            (StatusCode::SERVICE_UNAVAILABLE, "bus unavailable\n").into_response()
        }
    }
}
