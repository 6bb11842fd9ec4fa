//! The `ping` scenario: authenticate once, then send `Ping` requests until the end.
//!
//! Closed loop (no rate): the next ping leaves when the last is answered; latency is the round
//! trip. Paced (a rate): pings leave on a fixed schedule whether or not earlier ones were answered,
//! a late client catches up in a burst, and latency is measured from each ping's *scheduled* send
//! time, so a stalled server shows up in the percentiles instead of slowing the load down
//! (no coordinated omission).

use std::collections::VecDeque;
use std::time::Duration;

use proto::Request;
use tokio::time::{Instant, sleep_until};

use super::{ClientContext, DRAIN_TIMEOUT, Open, Ready};
use crate::conn::ConnError;

/// Runs one ping client.
pub async fn run(ctx: ClientContext) {
    let Some(mut open) = ctx.connect_authenticated().await else { return };
    let ready = Ready::new(&ctx.shared);
    match ctx.rate {
        None => closed_loop(&ctx, &mut open).await,
        Some(rate) => paced(&ctx, &mut open, rate).await,
    }
    drop(ready);
    open.close().await;
}

async fn closed_loop(ctx: &ClientContext, open: &mut Open) {
    while Instant::now() < ctx.shared.deadline {
        if ctx.call(&mut open.conn, Request::Ping).await.is_none() {
            return;
        }
    }
}

async fn paced(ctx: &ClientContext, open: &mut Open, rate: f64) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    // Spread the clients' phases over one interval (golden-ratio steps) so they do not send in lockstep.
    let phase = (ctx.index as f64 * 0.618_033_988_7).fract();
    let mut next = Instant::now() + interval.mul_f64(phase);
    let deadline = ctx.shared.deadline;
    let drain_deadline = deadline + DRAIN_TIMEOUT;
    // (request id, scheduled send time) of pings not answered yet, oldest first.
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    let recorder = &ctx.shared.recorder;
    loop {
        let sending = next < deadline;
        if !sending && pending.is_empty() {
            return;
        }
        tokio::select! {
            () = sleep_until(next), if sending => {
                match open.conn.send(Request::Ping).await {
                    Ok(id) => pending.push_back((id, next)),
                    Err(error) => return fail_all(ctx, &mut pending, &error),
                }
                next += interval;
            }
            response = open.conn.recv() => match response {
                Ok(response) => {
                    let position = pending.iter().position(|(id, _)| *id == response.id);
                    if let Some((_, scheduled)) = position.and_then(|position| pending.remove(position)) {
                        recorder.answered(ctx.index, "ping", scheduled.elapsed(), &response.outcome, false);
                    }
                }
                Err(error) => return fail_all(ctx, &mut pending, &error),
            },
            () = sleep_until(drain_deadline), if !sending => {
                return fail_all(ctx, &mut pending, &ConnError::Timeout);
            }
        }
    }
}

/// Records every unanswered ping (at least one) as failed with `error`.
fn fail_all(ctx: &ClientContext, pending: &mut VecDeque<(u64, Instant)>, error: &ConnError) {
    // A connection lost between pings still counts once.
    for _ in 0..pending.len().max(1) {
        ctx.shared.recorder.failed(ctx.index, "ping", error);
    }
    pending.clear();
    if !matches!(error, ConnError::Timeout) && Instant::now() < ctx.shared.deadline {
        tracing::debug!(%error, client = ctx.index, "ping connection lost");
    }
}
