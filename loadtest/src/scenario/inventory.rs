//! The `inventory` scenario: each client gets [`GRANT_QUANTITY`] of [`COIN`] and of [`GEM`]
//! granted through the admin port (`POST /inventory/grant` with the service token, recorded under
//! [`crate::stats::INVENTORY_GRANT`]), then trades with a partner (ranks 2k and 2k+1) until the
//! end. The offerer (even rank) offers one coin for one gem; every [`CONSUME_EVERY`]th action it
//! consumes a coin instead. The acceptor (odd rank) accepts each offer as its `offer_received`
//! event arrives, and consumes a gem after every [`CONSUME_EVERY`]th acceptance. A client without
//! a partner (the last of an odd number) only consumes.
//!
//! Closed loop, the offerer waits for the trade to settle before its next action; paced, its
//! actions leave on schedule. Requests are recorded under their kinds as the gateway counts them
//! (`inventory_make_offer`, `inventory_accept_offer`, `inventory_consume`); the offerer also
//! records each whole trade, from its scheduled offer to the `offer_settled` event, under
//! [`crate::stats::TRADE`]. Every one of those requests that succeeds is one durable inventory
//! transaction on the server (acknowledged after its group commit).
//!
//! The gateway's catalogue must hold both items with room for many runs' grants: [`CATALOGUE`].

use std::collections::HashMap;
use std::time::Duration;

use proto::inventory::{InventoryEvent, InventoryReply, InventoryRequest, ItemStack, OfferState};
use proto::{AccountId, Event, Outcome, Reply, Request, ServerMessage};
use tokio::time::{Instant, sleep_until};
use uuid::Uuid;

use super::{ClientContext, DRAIN_TIMEOUT, Open, Ready};
use crate::conn::ConnError;
use crate::stats::{INVENTORY_GRANT, TRADE};

/// The item offerers give.
pub const COIN: &str = "lt-coin";
/// The item offerers ask for in return.
pub const GEM: &str = "lt-gem";
/// How many of each item every client is granted at the start of each run.
pub const GRANT_QUANTITY: u64 = 1_000_000;
/// Every this many actions, a client consumes one of its items.
pub const CONSUME_EVERY: u64 = 5;
/// A catalogue (TOML) with the scenario's items, each stackable to the largest amount allowed so
/// that repeated runs' grants keep fitting.
pub const CATALOGUE: &str = "[[item]]\nid = \"lt-coin\"\nname = \"Load-test coin\"\nmax_stack = 1000000000000\n\n\
                             [[item]]\nid = \"lt-gem\"\nname = \"Load-test gem\"\nmax_stack = 1000000000000\n";
/// How often an acceptor that is past the end checks whether its offerer is done.
const DONE_POLL: Duration = Duration::from_millis(20);

/// Runs one inventory client.
pub async fn run(ctx: ClientContext) {
    // Where a paced offerer's schedule starts, should it never get to act.
    let schedule_start = ctx.first_send(ctx.rate.map(|rate| Duration::from_secs_f64(1.0 / rate)));
    let Some((mut open, own_id)) = ctx.connect_session().await else {
        record_schedule_unsent(&ctx, schedule_start);
        return;
    };
    if !grant(&ctx, own_id, COIN).await || !grant(&ctx, own_id, GEM).await {
        record_schedule_unsent(&ctx, schedule_start);
        open.close().await;
        return;
    }
    let ready = Ready::new(&ctx.shared);
    let rendezvous = &ctx.shared.rendezvous;
    let pair = ctx.rank / 2;
    let (pair_key, done_key) = (format!("inventory-pair-{pair}"), format!("inventory-done-{pair}"));
    rendezvous.arrive(&pair_key, ctx.rank, own_id);
    let partner_rank = ctx.rank ^ 1;
    let partner = if partner_rank < ctx.n_peers {
        match rendezvous.wait_for_member(&pair_key, partner_rank, ctx.shared.deadline).await {
            Some(partner) => Some(partner),
            None => {
                // The partner never came: nothing to trade with.
                record_schedule_unsent(&ctx, schedule_start);
                drop(ready);
                open.close().await;
                return;
            }
        }
    } else {
        None
    };
    match partner {
        Some(partner) if ctx.rank % 2 == 1 => accept_offers(&ctx, &mut open, partner, &done_key).await,
        _ => {
            act(&ctx, &mut open, own_id, partner).await;
            rendezvous.arrive(&done_key, ctx.rank, own_id);
        }
    }
    drop(ready);
    open.close().await;
}

/// Grants `item` to the client's account through the admin port; false (recorded) on failure.
async fn grant(ctx: &ClientContext, own_id: AccountId, item: &str) -> bool {
    let recorder = &ctx.shared.recorder;
    let (Some(admin), Some(token)) = (&ctx.admin, &ctx.shared.scenario.service_token) else {
        recorder.failed_with(ctx.index, INVENTORY_GRANT, "no_service_token".into());
        return false;
    };
    let body = serde_json::json!({
        "account_id": own_id.0,
        "item_id": item,
        "quantity": GRANT_QUANTITY,
        "reason": "load test",
        "idempotency_key": format!("{}-{}-grant-{item}", ctx.shared.run_id, ctx.rank),
    });
    let started = Instant::now();
    match crate::metrics::post_json(admin, "/inventory/grant", token, &body.to_string()).await {
        Ok((200, _)) => {
            recorder.observed(ctx.index, INVENTORY_GRANT, started.elapsed());
            true
        }
        Ok((status, answer)) => {
            tracing::debug!(status, answer, client = ctx.index, "grant refused");
            recorder.failed_with(ctx.index, INVENTORY_GRANT, format!("http_{status}"));
            false
        }
        Err(error) => {
            tracing::debug!(%error, client = ctx.index, "grant failed");
            recorder.failed_with(ctx.index, INVENTORY_GRANT, "connect".into());
            false
        }
    }
}

/// A fresh idempotency key: unique per account and run.
fn key(ctx: &ClientContext, n: u64) -> String {
    format!("{}-{}-{n}", ctx.shared.run_id, ctx.rank)
}

/// Whether the offerer's `n`th action is a consumption rather than an offer.
fn consumes(n: u64, has_partner: bool) -> bool {
    !has_partner || (n + 1).is_multiple_of(CONSUME_EVERY)
}

/// The offerer's `n`th action: an offer to `partner`, or a consumption.
fn action(ctx: &ClientContext, n: u64, partner: Option<AccountId>) -> Request {
    let idempotency_key = key(ctx, n);
    Request::Inventory(match partner {
        Some(to) if !consumes(n, true) => InventoryRequest::MakeOffer {
            to,
            gives: vec![ItemStack { item_id: COIN.into(), quantity: 1 }],
            wants: vec![ItemStack { item_id: GEM.into(), quantity: 1 }],
            idempotency_key,
        },
        _ => InventoryRequest::Consume { item_id: COIN.into(), quantity: 1, idempotency_key },
    })
}

/// Records the whole schedule of a paced offerer (or lone consumer) that never got to act, from
/// `schedule_start`, as [`record_actions_unsent`] does; nothing for an acceptor, which only
/// answers offers.
fn record_schedule_unsent(ctx: &ClientContext, schedule_start: Instant) {
    let has_partner = ctx.rank ^ 1 < ctx.n_peers;
    if has_partner && ctx.rank % 2 == 1 {
        return;
    }
    record_actions_unsent(ctx, 0, schedule_start, has_partner);
}

/// Records the actions of a paced offerer from its `n`th, due at `next`, to the end as `not_sent`,
/// each under its kind (see [`ClientContext::record_unsent`]); nothing when it is not paced.
fn record_actions_unsent(ctx: &ClientContext, n: u64, next: Instant, has_partner: bool) {
    let interval = ctx.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let n_unsent = ctx.n_scheduled_from(next, interval);
    let n_consumptions = (n..n + n_unsent).filter(|&action_n| consumes(action_n, has_partner)).count() as u64;
    // The kinds as the report names them, from requests that are never sent.
    let consume =
        InventoryRequest::Consume { item_id: String::new(), quantity: 0, idempotency_key: String::new() };
    let offer = InventoryRequest::MakeOffer {
        to: AccountId(Uuid::nil()),
        gives: Vec::new(),
        wants: Vec::new(),
        idempotency_key: String::new(),
    };
    for (request, n_kind) in [(consume, n_consumptions), (offer, n_unsent - n_consumptions)] {
        if n_kind > 0 {
            ctx.shared.recorder.failed_many(
                ctx.index,
                Request::Inventory(request).kind(),
                "not_sent",
                n_kind,
            );
        }
    }
}

/// The offerer (or a lone consumer): acts until the end, then waits for the last answers and
/// the last trades to settle.
async fn act(ctx: &ClientContext, open: &mut Open, own_id: AccountId, partner: Option<AccountId>) {
    let recorder = &ctx.shared.recorder;
    let deadline = ctx.shared.deadline;
    let drain_deadline = deadline + DRAIN_TIMEOUT;
    let interval = ctx.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let mut next = ctx.first_send(interval);
    let mut n_actions = 0;
    // Requests not answered yet: (id, kind, scheduled send time).
    let mut pending: Vec<(u64, &'static str, Instant)> = Vec::new();
    // Offers made and not settled yet, with their scheduled send time.
    let mut unsettled: HashMap<Uuid, Instant> = HashMap::new();
    // Offers whose settlement arrived before the answer that made them.
    let mut settled_early: HashMap<Uuid, OfferState> = HashMap::new();
    loop {
        let now = Instant::now();
        // Paced, nothing leaves after the end even if its slot was due before it.
        let sending = if interval.is_some() { next < deadline } else { now < deadline };
        if !sending && pending.is_empty() && unsettled.is_empty() {
            return;
        }
        let due = match interval {
            Some(_) => next,
            None if pending.is_empty() && unsettled.is_empty() => now,
            None => drain_deadline + DRAIN_TIMEOUT,
        };
        tokio::select! {
            () = sleep_until(due), if sending => {
                let scheduled = if interval.is_some() { next } else { now };
                let request = action(ctx, n_actions, partner);
                n_actions += 1;
                let kind = request.kind();
                match open.conn.send(request).await {
                    Ok(id) => pending.push((id, kind, scheduled)),
                    Err(error) => {
                        pending.push((0, kind, scheduled));
                        if let Some(interval) = interval {
                            record_actions_unsent(ctx, n_actions, next + interval, partner.is_some());
                        }
                        return fail_all(ctx, &mut pending, &mut unsettled, &error);
                    }
                }
                if let Some(interval) = interval {
                    next += interval;
                }
            }
            message = open.conn.recv_message() => match message {
                Ok(ServerMessage::Response(response)) => {
                    let Some(position) = pending.iter().position(|(id, ..)| *id == response.id) else { continue };
                    let (_, kind, scheduled) = pending.swap_remove(position);
                    recorder.answered(ctx.index, kind, scheduled.elapsed(), &response.outcome, false);
                    if let Outcome::Ok(Reply::Inventory(InventoryReply::Offer(offer))) = &response.outcome {
                        match settled_early.remove(&offer.offer_id) {
                            Some(state) => record_trade(ctx, scheduled, state),
                            None => {
                                unsettled.insert(offer.offer_id, scheduled);
                            }
                        }
                    }
                }
                Ok(ServerMessage::Event(Event::Inventory(InventoryEvent::OfferSettled(offer))))
                    if offer.from == own_id =>
                {
                    match unsettled.remove(&offer.offer_id) {
                        Some(scheduled) => record_trade(ctx, scheduled, offer.state),
                        None => {
                            settled_early.insert(offer.offer_id, offer.state);
                        }
                    }
                }
                Ok(ServerMessage::Event(_)) => {}
                Err(error) => {
                    if interval.is_some() {
                        record_actions_unsent(ctx, n_actions, next, partner.is_some());
                    }
                    return fail_all(ctx, &mut pending, &mut unsettled, &error);
                }
            },
            () = sleep_until(drain_deadline), if !sending => {
                return fail_all(ctx, &mut pending, &mut unsettled, &ConnError::Timeout);
            }
        }
    }
}

/// The acceptor: accepts every offer from `partner` as it arrives, consuming now and then, until
/// the offerer is done (or the drain timeout).
async fn accept_offers(ctx: &ClientContext, open: &mut Open, partner: AccountId, done_key: &str) {
    let recorder = &ctx.shared.recorder;
    let deadline = ctx.shared.deadline;
    let drain_deadline = deadline + DRAIN_TIMEOUT;
    let mut n_actions = 0;
    // Requests not answered yet: (id, kind, when the offer that caused them arrived).
    let mut pending: Vec<(u64, &'static str, Instant)> = Vec::new();
    loop {
        let now = Instant::now();
        let offerer_done = now >= deadline && ctx.shared.rendezvous.count(done_key) > 0;
        if offerer_done && pending.is_empty() {
            return;
        }
        if now >= drain_deadline {
            return fail_all(ctx, &mut pending, &mut HashMap::new(), &ConnError::Timeout);
        }
        tokio::select! {
            message = open.conn.recv_message() => match message {
                Ok(ServerMessage::Event(Event::Inventory(InventoryEvent::OfferReceived(offer))))
                    if offer.from == partner =>
                {
                    let received = Instant::now();
                    let mut requests = vec![InventoryRequest::AcceptOffer {
                        offer_id: offer.offer_id,
                        idempotency_key: key(ctx, n_actions),
                    }];
                    n_actions += 1;
                    if n_actions.is_multiple_of(CONSUME_EVERY) {
                        requests.push(InventoryRequest::Consume {
                            item_id: GEM.into(),
                            quantity: 1,
                            idempotency_key: key(ctx, n_actions),
                        });
                        n_actions += 1;
                    }
                    for request in requests {
                        let request = Request::Inventory(request);
                        let kind = request.kind();
                        match open.conn.send(request).await {
                            Ok(id) => pending.push((id, kind, received)),
                            Err(error) => {
                                pending.push((0, kind, received));
                                return fail_all(ctx, &mut pending, &mut HashMap::new(), &error);
                            }
                        }
                    }
                }
                Ok(ServerMessage::Response(response)) => {
                    let Some(position) = pending.iter().position(|(id, ..)| *id == response.id) else { continue };
                    let (_, kind, received) = pending.swap_remove(position);
                    recorder.answered(ctx.index, kind, received.elapsed(), &response.outcome, false);
                }
                Ok(ServerMessage::Event(_)) => {}
                Err(error) => {
                    // Losing the connection after the end, with nothing pending, is the normal
                    // close of a server shutting down; anything else is an error.
                    if !(offerer_done && pending.is_empty()) {
                        if pending.is_empty() {
                            recorder.failed(ctx.index, "inventory_accept_offer", &error);
                        }
                        fail_all(ctx, &mut pending, &mut HashMap::new(), &error);
                    }
                    return;
                }
            },
            // Wakes at the end, then now and then, to see whether the offerer is done.
            () = sleep_until(if now < deadline { deadline } else { now + DONE_POLL }) => {}
        }
    }
}

/// Records a settled trade: its whole latency when accepted, else an error named by its state.
fn record_trade(ctx: &ClientContext, scheduled: Instant, state: OfferState) {
    let recorder = &ctx.shared.recorder;
    match state {
        OfferState::Accepted => recorder.observed(ctx.index, TRADE, scheduled.elapsed()),
        other => recorder.failed_with(ctx.index, TRADE, format!("{other:?}").to_lowercase()),
    }
}

/// Records every unanswered request as failed with `error`, and every unsettled trade as
/// `unsettled`.
fn fail_all(
    ctx: &ClientContext,
    pending: &mut Vec<(u64, &'static str, Instant)>,
    unsettled: &mut HashMap<Uuid, Instant>,
    error: &ConnError,
) {
    let recorder = &ctx.shared.recorder;
    for (_, kind, _) in pending.drain(..) {
        recorder.failed(ctx.index, kind, error);
    }
    for _ in unsettled.drain() {
        recorder.failed_with(ctx.index, TRADE, "unsettled".into());
    }
    tracing::debug!(%error, client = ctx.index, "inventory client stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_parses_and_names_both_items() {
        assert!(CATALOGUE.contains(&format!("id = \"{COIN}\"")));
        assert!(CATALOGUE.contains(&format!("id = \"{GEM}\"")));
        assert_eq!(CATALOGUE.matches("[[item]]").count(), 2);
    }
}
