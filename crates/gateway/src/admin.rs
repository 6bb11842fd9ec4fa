//! The admin HTTP port: liveness, readiness and metrics for orchestrators and Prometheus, and the
//! service endpoints for operators and trusted game servers, which need the service token. It is
//! separate from the game port so it can stay private.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use proto::{ErrorBody, ErrorCode};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Shared;
use crate::errors;
use crate::inventory_requests::{HttpAnswer, authorise, error_answer, json_answer};

/// How long a client has to send a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body (axum's own limit for its extractors).
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The admin routes. A request's body is read in full, within [`BODY_TIMEOUT`], before its
/// handler runs; when `stop` is cancelled, a body still on its way is given up.
pub(crate) fn router(shared: Arc<Shared>, stop: CancellationToken) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/accounts/{account_id}/notice", post(notice))
        .route("/inventory/grant", post(crate::inventory_requests::grant_http))
        .route("/inventory/{account_id}/ledger", get(crate::inventory_requests::ledger_http))
        .route("/match/{match_id}/result", post(crate::matchmaking_requests::result_http))
        .layer(axum::middleware::from_fn_with_state(stop, body_in_time))
        .with_state(shared)
}

/// Reads the body before the handler does, so a client that stalls mid-body holds a connection
/// for [`BODY_TIMEOUT`] at most, and never delays a shutdown.
async fn body_in_time(State(stop): State<CancellationToken>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let read = tokio::select! {
        read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT)) => read,
        () = stop.cancelled() => {
            return error_answer(&ErrorBody::new(ErrorCode::Unavailable, "shutting down")).into_response();
        }
    };
    let refusal = |status: StatusCode, message: &str| {
        json_answer(status, &ErrorBody::new(ErrorCode::BadRequest, message)).into_response()
    };
    match read {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(_)) => refusal(StatusCode::PAYLOAD_TOO_LARGE, "the request body is over 2 MiB or was cut off"),
        Err(_) => refusal(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive within 5 s"),
    }
}

/// Ready when the key-value store answers, the bus subscription receives, and every shard
/// answers a query.
async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    if let Err(error) = shared.kv.ping().await {
        problems.push(format!("kv: {error}"));
    }
    if !shared.hub.hears_bus() {
        problems.push(
            "bus: not subscribed (reconnecting to Redis); events for this process's connections are lost"
                .into(),
        );
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
        shared.hub.n_bus_messages_dropped(),
    );
    shared.metrics.render() + &player + &inventory + &chat
}

/// The id in a route's path, looked at after the token check (so a caller without the token
/// learns nothing from it) and refused as JSON, as every other error on this port is.
pub(crate) fn path_id(path: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, HttpAnswer> {
    match path {
        Ok(Path(id)) => Ok(id),
        Err(rejection) => Err(error_answer(&ErrorBody::new(
            ErrorCode::BadRequest,
            format!("path: {}", rejection.body_text()),
        ))),
    }
}

/// Sends the request body as a [`proto::Event::Notice`] to every connection of the account, on
/// whichever gateway process it is connected to. For operators and trusted game servers, with
/// the service token: a notice reaches players as the game's own word.
async fn notice(
    State(shared): State<Arc<Shared>>,
    account_id: Result<Path<Uuid>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(answer) = authorise(&shared, &headers) {
        return answer.into_response();
    }
    let account_id = match path_id(account_id) {
        Ok(id) => id,
        Err(answer) => return answer.into_response(),
    };
    let Ok(text) = String::from_utf8(body.into()) else {
        return error_answer(&ErrorBody::new(ErrorCode::BadRequest, "a notice is UTF-8 text"))
            .into_response();
    };
    if text.len() > shared.config.max_frame_bytes / 2 {
        let too_long = ErrorBody::new(ErrorCode::BadRequest, "notice too long");
        return json_answer(StatusCode::PAYLOAD_TOO_LARGE, &too_long).into_response();
    }
    if let Err(error) = shared.auth.account(account_id).await {
        return error_answer(&errors::from_auth(&error)).into_response();
    }
    match shared.hub.deliver(account_id, proto::Event::Notice { text }).await {
        Ok(()) => (StatusCode::ACCEPTED, "queued\n").into_response(),
        Err(error) => {
            tracing::warn!(%error, "could not publish a notice");
            error_answer(&ErrorBody::new(ErrorCode::Unavailable, "bus unavailable")).into_response()
        }
    }
}
