//! The loop `ping` and `state` share: authenticate once, then send one request after another until
//! the end; the scenarios differ only in the request they build.
//!
//! Closed loop (no rate): the next request leaves when the last is answered; latency is the round
//! trip. Paced (a rate): requests leave on a fixed schedule whether or not earlier ones were
//! answered, a late client catches up in a burst, and latency is measured from each request's
//! *scheduled* send time, so a stalled server shows up in the percentiles instead of slowing the
//! load down (no coordinated omission). Answers are recorded under [`Request::kind`], the label
//! the gateway counts them under.

use std::collections::VecDeque;
use std::time::Duration;

use proto::Request;
use tokio::time::{Instant, sleep_until};

use super::{ClientContext, DRAIN_TIMEOUT, Open, Ready};
use crate::conn::ConnError;

/// Runs one client that sends the requests `next_request` builds, one per call, until the end.
pub async fn run(ctx: ClientContext, mut next_request: impl FnMut() -> Request) {
    let Some(mut open) = ctx.connect_authenticated().await else {
        // A paced client that never got going leaves its whole schedule unsent.
        let interval = ctx.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
        ctx.record_unsent(next_request().kind(), ctx.first_send(interval), interval);
        return;
    };
    let ready = Ready::new(&ctx.shared);
    match ctx.rate {
        None => closed_loop(&ctx, &mut open, &mut next_request).await,
        Some(rate) => paced(&ctx, &mut open, rate, &mut next_request).await,
    }
    drop(ready);
    open.close().await;
}

async fn closed_loop(ctx: &ClientContext, open: &mut Open, next_request: &mut impl FnMut() -> Request) {
    while Instant::now() < ctx.shared.deadline {
        if ctx.call(&mut open.conn, next_request()).await.is_none() {
            return;
        }
    }
}

async fn paced(ctx: &ClientContext, open: &mut Open, rate: f64, next_request: &mut impl FnMut() -> Request) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = ctx.first_send(Some(interval));
    let deadline = ctx.shared.deadline;
    let drain_deadline = deadline + DRAIN_TIMEOUT;
    // Built one ahead, so a connection lost before the first send is still recorded under the
    // right kind.
    let mut request = next_request();
    let kind = request.kind();
    // (request id, scheduled send time) of requests not answered yet, oldest first.
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    let recorder = &ctx.shared.recorder;
    // One timer for the whole run, moved on after each send: a fresh `sleep_until` per turn of the
    // loop would register with the timer wheel and deregister again on every answer, costing the
    // load generator CPU the machine's other processes need.
    let send_time = sleep_until(next);
    tokio::pin!(send_time);
    loop {
        let sending = next < deadline;
        if !sending && pending.is_empty() {
            return;
        }
        tokio::select! {
            () = &mut send_time, if sending => {
                match open.conn.send(std::mem::replace(&mut request, next_request())).await {
                    Ok(id) => pending.push_back((id, next)),
                    Err(error) => {
                        // The request that did not go out fails with those awaiting an answer.
                        pending.push_back((0, next));
                        ctx.record_unsent(kind, next + interval, Some(interval));
                        return fail_all(ctx, kind, &mut pending, &error);
                    }
                }
                next += interval;
                send_time.as_mut().reset(next);
            }
            response = open.conn.recv() => match response {
                Ok(response) => {
                    let position = pending.iter().position(|(id, _)| *id == response.id);
                    if let Some((_, scheduled)) = position.and_then(|position| pending.remove(position)) {
                        recorder.answered(ctx.index, kind, scheduled.elapsed(), &response.outcome, false);
                    }
                }
                Err(error) => {
                    ctx.record_unsent(kind, next, Some(interval));
                    return fail_all(ctx, kind, &mut pending, &error);
                }
            },
            () = sleep_until(drain_deadline), if !sending => {
                return fail_all(ctx, kind, &mut pending, &ConnError::Timeout);
            }
        }
    }
}

/// Records every unanswered request as failed with `error` (the rest of the schedule is
/// [`ClientContext::record_unsent`]'s).
fn fail_all(
    ctx: &ClientContext,
    kind: &'static str,
    pending: &mut VecDeque<(u64, Instant)>,
    error: &ConnError,
) {
    for _ in 0..pending.len() {
        ctx.shared.recorder.failed(ctx.index, kind, error);
    }
    pending.clear();
    if !matches!(error, ConnError::Timeout) && Instant::now() < ctx.shared.deadline {
        tracing::debug!(%error, client = ctx.index, request = kind, "connection lost");
    }
}
