//! Matchmaking requests: wire types in, `matchmaking` domain calls, wire types out; the
//! matchmaker loop that every gateway process runs (only the lease holder forms matches) and that
//! announces `match_found`; the presence hooks that keep a disconnected player's ticket out of
//! matches and let the matchmaker remove it after the grace period; and the admin port's result
//! endpoint for trusted callers (`POST /match/{match_id}/result`, with the service token).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use matchmaking::{MatchDetails, MatchError, MatchOutcome, ReportReceipt, Reporter};
use proto::matchmaking::{MatchEvent, MatchReply, MatchRequest};
use proto::{AccountId, ErrorBody, ErrorCode, Event, Reply};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::inventory_requests::{HttpAnswer, authorise, error_answer, json_answer};
use crate::{Shared, errors};

fn match_to_wire(details: MatchDetails) -> proto::matchmaking::MatchInfo {
    proto::matchmaking::MatchInfo {
        match_id: details.match_id,
        mode: details.mode,
        created_at_ms: details.created_at_ms,
        teams: details
            .teams
            .into_iter()
            .map(|team| {
                team.into_iter()
                    .map(|player| proto::matchmaking::MatchPlayer {
                        account_id: AccountId(player.account_id),
                        rating_before: player.rating_before,
                        rating_after: player.rating_after,
                    })
                    .collect()
            })
            .collect(),
        finished: details.outcome.is_some(),
        winner: match details.outcome {
            Some(MatchOutcome::Winner(team)) => Some(team),
            Some(MatchOutcome::Draw) | None => None,
        },
        finished_at_ms: details.finished_at_ms,
        disputed: details.disputed,
    }
}

fn outcome_from_wire(winner: Option<u32>) -> MatchOutcome {
    winner.map_or(MatchOutcome::Draw, MatchOutcome::Winner)
}

fn status_to_wire(status: matchmaking::ReportStatus) -> proto::matchmaking::ReportStatus {
    use proto::matchmaking::ReportStatus as Wire;
    match status {
        matchmaking::ReportStatus::Finished => Wire::Finished,
        matchmaking::ReportStatus::AwaitingOthers => Wire::AwaitingOthers,
        matchmaking::ReportStatus::Disputed => Wire::Disputed,
    }
}

fn entries_to_wire(entries: Vec<matchmaking::LeaderboardEntry>) -> MatchReply {
    MatchReply::Leaderboard {
        entries: entries
            .into_iter()
            .map(|e| proto::matchmaking::LeaderboardEntry {
                rank: e.rank,
                account_id: AccountId(e.account_id),
                rating: e.rating,
                games: e.games,
            })
            .collect(),
    }
}

/// One matchmaking request of the authenticated player `own_id`.
pub(crate) async fn handle(shared: &Shared, own_id: Uuid, request: MatchRequest) -> Result<Reply, ErrorBody> {
    let mm = &shared.matchmaking;
    let fail = |error: MatchError| errors::from_match(&error);
    let reply = match request {
        MatchRequest::Modes => MatchReply::Modes {
            modes: mm
                .config()
                .modes
                .iter()
                .map(|mode| proto::matchmaking::ModeInfo {
                    name: mode.name.clone(),
                    team_size: mode.team_size,
                    n_teams: mode.n_teams,
                })
                .collect(),
        },
        MatchRequest::Queue { mode } => {
            let ticket = mm.queue(own_id, &mode).await.map_err(fail)?;
            MatchReply::Queued {
                mode: ticket.mode,
                rating: ticket.rating,
                enqueued_at_ms: ticket.enqueued_at_ms,
            }
        }
        MatchRequest::Leave => MatchReply::Left { was_queued: mm.leave(own_id).await.map_err(fail)? },
        MatchRequest::Report { match_id, winner } => {
            let receipt = mm
                .report(match_id, Reporter::Player(own_id), outcome_from_wire(winner))
                .await
                .map_err(fail)?;
            reported(shared, receipt).await
        }
        MatchRequest::History { before, limit } => MatchReply::History {
            matches: mm
                .history(own_id, before, limit)
                .await
                .map_err(fail)?
                .into_iter()
                .map(match_to_wire)
                .collect(),
        },
        MatchRequest::Details { match_id } => {
            MatchReply::Match(match_to_wire(mm.details(match_id).await.map_err(fail)?))
        }
        MatchRequest::Rating { mode, account_id } => {
            let account_id = account_id.map_or(own_id, |id| id.0);
            let rating = mm.rating(account_id, &mode).await.map_err(fail)?;
            MatchReply::Rating(proto::matchmaking::RatingInfo {
                mode: rating.mode,
                account_id: AccountId(rating.account_id),
                rating: rating.rating,
                rank: rating.rank,
                games: rating.games,
                wins: rating.wins,
                losses: rating.losses,
                draws: rating.draws,
            })
        }
        MatchRequest::Leaderboard { mode, limit } => {
            entries_to_wire(mm.leaderboard(&mode, limit).await.map_err(fail)?)
        }
        MatchRequest::AroundMe { mode, n } => {
            entries_to_wire(mm.around(own_id, &mode, n).await.map_err(fail)?)
        }
        MatchRequest::QueueStats => MatchReply::QueueStats {
            modes: mm
                .queue_stats()
                .await
                .map_err(fail)?
                .into_iter()
                .map(|stats| proto::matchmaking::QueueStats {
                    mode: stats.mode,
                    waiting: stats.n_waiting,
                    median_wait_ms: stats.median_wait_ms,
                })
                .collect(),
        },
    };
    Ok(Reply::Match(reply))
}

/// The reply to a report; when this report finished the match, every player hears of it.
async fn reported(shared: &Shared, receipt: ReportReceipt) -> MatchReply {
    let finished_now = receipt.status == matchmaking::ReportStatus::Finished && !receipt.replayed;
    let players = receipt.details.account_ids();
    let game = match_to_wire(receipt.details);
    if finished_now {
        announce(shared, players, MatchEvent::MatchFinished(game.clone())).await;
    }
    MatchReply::Reported { status: status_to_wire(receipt.status), replayed: receipt.replayed, game }
}

/// Best effort: the match is recorded whether or not the bus carries the event.
async fn announce(shared: &Shared, players: Vec<Uuid>, event: MatchEvent) {
    if let Err(error) = shared.hub.deliver_many(players, Event::Match(event)).await {
        tracing::warn!(%error, "could not publish a matchmaking event");
    }
}

/// A player authenticated a connection: a ticket of theirs counts as present again.
pub(crate) async fn connected(shared: &Shared, account_id: Uuid) {
    if let Err(error) = shared.matchmaking.connected(account_id).await {
        tracing::debug!(%error, %account_id, "could not mark a queued player present");
    }
}

/// A connection of `account_id` ended: if it was their last one on this process, a ticket of
/// theirs is set aside and removed after the disconnect grace unless they come back. The other
/// processes hear of it on the bus, and one where the player is still connected puts the ticket
/// back ([`put_back_still_connected`]).
pub(crate) async fn disconnected(shared: &Shared, account_id: Uuid) {
    if shared.hub.is_connected(account_id) {
        return;
    }
    match shared.matchmaking.disconnected(account_id).await {
        Ok(true) => {
            if let Err(error) = shared.hub.departed(account_id).await {
                tracing::warn!(%error, %account_id, "could not tell other processes a queued player left");
            }
        }
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, %account_id, "could not mark a queued player away"),
    }
}

/// Puts back the tickets of players whose last connection on another process ended while they
/// are still connected to this one (the hub's `still_connected`), until the hub stops.
pub(crate) async fn put_back_still_connected(shared: Arc<Shared>, mut still_connected: mpsc::Receiver<Uuid>) {
    while let Some(account_id) = still_connected.recv().await {
        if !shared.hub.is_connected(account_id) {
            continue;
        }
        connected(&shared, account_id).await;
        // A connection here that ended meanwhile set the ticket aside before or after this put it
        // back; asking again settles it, as it sets the ticket aside only if none is left.
        disconnected(&shared, account_id).await;
    }
}

/// The matchmaker loop of this process: every interval, one [`matchmaking::Matchmaking::tick`] (which does
/// nothing unless this process holds the lease), then `match_found` to the players of each
/// match formed. At shutdown it gives up the lease.
pub(crate) async fn run_matchmaker(shared: Arc<Shared>, holder: String, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(shared.matchmaking.config().interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let tick = shared.matchmaking.tick(&holder).await;
        let (formed, failed) = match tick {
            Ok(tick) => (tick.formed, tick.failed),
            Err(error) => (Vec::new(), Some(error)),
        };
        for details in formed {
            let event = MatchEvent::MatchFound {
                match_id: details.match_id,
                mode: details.mode.clone(),
                teams: details
                    .teams
                    .iter()
                    .map(|team| team.iter().map(|player| AccountId(player.account_id)).collect())
                    .collect(),
            };
            announce(&shared, details.account_ids(), event).await;
        }
        match failed {
            Some(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "matchmaking pass failed; retrying every interval");
            }
            Some(_) => {}
            None => failing = false,
        }
    }
    if let Err(error) = shared.matchmaking.release(&holder).await {
        tracing::debug!(%error, "could not release the matchmaker lease; it expires by itself");
    }
}

/// The body of `POST /match/{match_id}/result`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultBody {
    /// The winning team; `null` for a draw. Required: a body without it must not finish the
    /// match as a draw.
    #[serde(deserialize_with = "Option::deserialize")]
    winner: Option<u32>,
}

/// The answer to a result.
#[derive(Debug, Serialize)]
struct ResultAnswer {
    match_id: Uuid,
    winner: Option<u32>,
    /// True when this repeats a result already recorded.
    replayed: bool,
    /// Each player's rating after the match.
    ratings: Vec<(Uuid, Option<f64>)>,
}

/// `POST /match/{match_id}/result`: a trusted caller (a game server) records a match's result.
pub(crate) async fn result_http(
    State(shared): State<Arc<Shared>>,
    match_id: Result<Path<Uuid>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> HttpAnswer {
    if let Err(answer) = authorise(&shared, &headers) {
        return answer;
    }
    let match_id = match crate::admin::path_id(match_id) {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    let body: ResultBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => return error_answer(&ErrorBody::new(ErrorCode::BadRequest, format!("body: {error}"))),
    };
    match shared.matchmaking.report(match_id, Reporter::Service, outcome_from_wire(body.winner)).await {
        Ok(receipt) => {
            let replayed = receipt.replayed;
            let ratings =
                receipt.details.teams.iter().flatten().map(|p| (p.account_id, p.rating_after)).collect();
            reported(&shared, receipt).await;
            json_answer(StatusCode::OK, &ResultAnswer { match_id, winner: body.winner, replayed, ratings })
        }
        Err(error) => error_answer(&errors::from_match(&error)),
    }
}
