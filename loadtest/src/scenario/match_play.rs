//! The `match` scenario: each client queues for a mode ([`super::ScenarioOptions::match_mode`],
//! `duel` by default), waits for its `match_found` event, and records the time from the queue's
//! acknowledgement to that event under [`crate::stats::MATCH_WAIT`] (time to match). Then every
//! player of the match reports the same result — the team holding the lowest account id wins, which
//! each player works out alone from the event's teams — so the result stands by agreement; the
//! client waits for `match_finished` and queues again, closed loop, until the end.
//!
//! Requests are recorded under their kinds as the gateway counts them (`match_queue`,
//! `match_report`, `match_leave`). A client still queued at the end leaves the queue; if the
//! matchmaker got there first (`was_queued: false`), it plays that last match out so its partners
//! are not left waiting. A `match_found` or `match_finished` that never comes is recorded as an
//! error of [`crate::stats::MATCH_WAIT`] (`no_match_found`, `unfinished`).

use std::collections::VecDeque;

use proto::matchmaking::{MatchEvent, MatchReply, MatchRequest};
use proto::{AccountId, ErrorCode, Event, Outcome, Reply, Request, ServerMessage};
use tokio::time::{Instant, sleep_until};

use super::{ClientContext, DRAIN_TIMEOUT, Open, REQUEST_TIMEOUT, RETRY_PAUSE, Ready};
use crate::conn::ConnError;
use crate::stats::MATCH_WAIT;

/// Matchmaking events received but not handled yet, with when they arrived.
type Inbox = VecDeque<(Instant, MatchEvent)>;

/// The connection is gone (already recorded).
struct Lost;

/// Runs one match client.
pub async fn run(ctx: ClientContext) {
    let Some(mut open) = ctx.connect_authenticated().await else { return };
    let ready = Ready::new(&ctx.shared);
    let mut inbox = Inbox::new();
    while Instant::now() < ctx.shared.deadline {
        match play_one(&ctx, &mut open, &mut inbox).await {
            Ok(true) => {}
            Ok(false) => tokio::time::sleep(RETRY_PAUSE).await,
            Err(Lost) => break,
        }
    }
    drop(ready);
    open.close().await;
}

/// Queues, waits for a match and plays it. `Ok(false)` when no match was played (refused queue,
/// or the end came first).
async fn play_one(ctx: &ClientContext, open: &mut Open, inbox: &mut Inbox) -> Result<bool, Lost> {
    let mode = ctx.shared.scenario.match_mode.clone();
    let queue = || Request::Match(MatchRequest::Queue { mode: mode.clone() });
    // Conflict: a ticket of an earlier run is still waiting; leave it and queue again.
    let mut answer = call(ctx, open, inbox, queue(), Some(ErrorCode::Conflict)).await?;
    if matches!(answer, Outcome::Error(ref body) if body.code == ErrorCode::Conflict) {
        call(ctx, open, inbox, Request::Match(MatchRequest::Leave), None).await?;
        answer = call(ctx, open, inbox, queue(), None).await?;
    }
    if !matches!(answer, Outcome::Ok(Reply::Match(MatchReply::Queued { .. }))) {
        return Ok(false);
    }
    let queued_at = Instant::now();
    // Events from before this queue (another run's, a match already finished) are not ours.
    inbox.retain(|(_, event)| matches!(event, MatchEvent::MatchFound { .. }));
    let drain_deadline = ctx.shared.deadline + DRAIN_TIMEOUT;
    let mut leaving = false;
    let (found_at, match_id, teams) = loop {
        let until = if leaving { drain_deadline } else { ctx.shared.deadline };
        match next_event(ctx, open, inbox, until).await? {
            Some((at, MatchEvent::MatchFound { match_id, teams, .. })) => break (at, match_id, teams),
            Some(_) => {}
            None if leaving => {
                ctx.shared.recorder.failed_with(ctx.index, MATCH_WAIT, "no_match_found".into());
                return Ok(false);
            }
            None => {
                // The end: leave the queue, unless the matchmaker already put us into a match.
                let left = call(ctx, open, inbox, Request::Match(MatchRequest::Leave), None).await?;
                match left {
                    Outcome::Ok(Reply::Match(MatchReply::Left { was_queued: false })) => leaving = true,
                    _ => return Ok(false),
                }
            }
        }
    };
    ctx.shared.recorder.observed(ctx.index, MATCH_WAIT, found_at.saturating_duration_since(queued_at));

    let report = Request::Match(MatchRequest::Report { match_id, winner: winner(&teams) });
    if !matches!(
        call(ctx, open, inbox, report, None).await?,
        Outcome::Ok(Reply::Match(MatchReply::Reported { .. }))
    ) {
        return Ok(false);
    }
    // The others report as soon as they hear of the match: allow a request timeout past the end.
    let finish_by = (Instant::now() + REQUEST_TIMEOUT).max(drain_deadline);
    loop {
        match next_event(ctx, open, inbox, finish_by).await? {
            Some((_, MatchEvent::MatchFinished(info))) if info.match_id == match_id => return Ok(true),
            Some(_) => {}
            None => {
                ctx.shared.recorder.failed_with(ctx.index, MATCH_WAIT, "unfinished".into());
                return Ok(false);
            }
        }
    }
}

/// The result every player of a match reports: the team holding the lowest account id wins.
fn winner(teams: &[Vec<AccountId>]) -> Option<u32> {
    let lowest = teams.iter().flatten().min()?;
    teams.iter().position(|team| team.contains(lowest)).and_then(|team| u32::try_from(team).ok())
}

/// Sends `request` and waits for its answer, recording it (an error code `expected` as part of
/// the plan); matchmaking events arriving meanwhile go to `inbox`.
async fn call(
    ctx: &ClientContext,
    open: &mut Open,
    inbox: &mut Inbox,
    request: Request,
    expected: Option<ErrorCode>,
) -> Result<Outcome, Lost> {
    let kind = request.kind();
    let started = Instant::now();
    let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let id = open.conn.send(request).await?;
        loop {
            match open.conn.recv_message().await? {
                ServerMessage::Response(response) if response.id == id => return Ok(response.outcome),
                ServerMessage::Response(_) => {}
                ServerMessage::Event(Event::Match(event)) => inbox.push_back((Instant::now(), event)),
                ServerMessage::Event(_) => {}
            }
        }
    })
    .await
    .unwrap_or(Err(ConnError::Timeout));
    match answered {
        Ok(outcome) => {
            let is_expected = matches!(&outcome, Outcome::Error(body) if Some(body.code) == expected);
            ctx.shared.recorder.answered(ctx.index, kind, started.elapsed(), &outcome, is_expected);
            Ok(outcome)
        }
        Err(error) => {
            tracing::debug!(%error, client = ctx.index, request = kind, "match request failed");
            ctx.shared.recorder.failed(ctx.index, kind, &error);
            Err(Lost)
        }
    }
}

/// The next matchmaking event (from the inbox first), or `None` at `until`.
async fn next_event(
    ctx: &ClientContext,
    open: &mut Open,
    inbox: &mut Inbox,
    until: Instant,
) -> Result<Option<(Instant, MatchEvent)>, Lost> {
    if let Some(event) = inbox.pop_front() {
        return Ok(Some(event));
    }
    loop {
        tokio::select! {
            message = open.conn.recv_message() => match message {
                Ok(ServerMessage::Event(Event::Match(event))) => return Ok(Some((Instant::now(), event))),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, client = ctx.index, "match connection lost");
                    ctx.shared.recorder.failed(ctx.index, MATCH_WAIT, &error);
                    return Err(Lost);
                }
            },
            () = sleep_until(until) => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn the_team_with_the_lowest_account_id_wins_whatever_the_order() {
        let id = |n| AccountId(Uuid::from_u128(n));
        assert_eq!(winner(&[vec![id(5), id(9)], vec![id(7), id(2)]]), Some(1));
        assert_eq!(winner(&[vec![id(1)], vec![id(3)]]), Some(0));
        assert_eq!(winner(&[]), None);
    }
}
