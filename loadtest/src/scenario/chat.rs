//! The `chat` scenario: each client joins a public room shared with its neighbours (ranks
//! `rank / room_size` share the room `lt-<room_size>-<room>`), or with `chat_dm` pairs up with
//! one partner (ranks 2k and 2k+1) for direct messages; waits until its whole room (or its
//! partner) is there; then sends messages, closed loop or paced, until the end.
//!
//! Two latencies are recorded: the send's acknowledgement (under the request's kind,
//! `chat_send` or `chat_send_direct`, as the gateway counts it), and delivery: every message's
//! text carries its send time (wall clock, microseconds; in paced runs the scheduled send time),
//! and every *other* member that receives it records now − sent under
//! [`crate::stats::CHAT_DELIVERY`]. The sender's own copy is not counted. Each acknowledged
//! message adds its number of other members to the deliveries expected ([`Tally`]); clients stay
//! connected after the end until every expected delivery has arrived (or the drain timeout), and
//! the run records the shortfall as `undelivered` errors. A paced client that never gets to send
//! (it cannot connect, or its room or partner never comes) counts its whole schedule as
//! `not_sent`. At the very end a room's members leave it, so a later run with other rooms does
//! not deliver to them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::chat::{ChannelId, ChatEvent, ChatMessage, ChatReply, ChatRequest};
use proto::{AccountId, Event, Outcome, Reply, Request, ServerMessage};
use tokio::time::{Instant, sleep_until};

use super::{ClientContext, DRAIN_TIMEOUT, Open, Ready};
use crate::conn::ConnError;
use crate::stats::CHAT_DELIVERY;

/// The first word of every load-test message; the second is the run's id, the third the send
/// time in microseconds since the Unix epoch.
const TEXT_TAG: &str = "lt";
/// How often a client that is done sending checks whether every delivery has arrived.
const LINGER_POLL: Duration = Duration::from_millis(20);

/// Deliveries expected and seen across the run's chat clients.
#[derive(Debug)]
pub struct Tally {
    expected: AtomicU64,
    delivered: AtomicU64,
    /// Chat clients that may still send (or wait for an acknowledgement).
    sending: AtomicU64,
}

impl Tally {
    /// The tally of a run with `n_clients` chat clients.
    pub fn new(n_clients: u64) -> Tally {
        Tally {
            expected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            sending: AtomicU64::new(n_clients),
        }
    }

    /// Deliveries expected (other members of acknowledged messages' channels) but not seen.
    pub fn undelivered(&self) -> u64 {
        self.expected.load(Ordering::Relaxed).saturating_sub(self.delivered.load(Ordering::Relaxed))
    }

    fn all_delivered(&self) -> bool {
        self.sending.load(Ordering::Relaxed) == 0 && self.undelivered() == 0
    }
}

/// Counts a chat client out of [`Tally::sending`] when dropped, whichever way it ends.
struct DoneSending<'a>(&'a Tally);

impl Drop for DoneSending<'_> {
    fn drop(&mut self) {
        self.0.sending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a client sends.
enum Target {
    Room { channel_id: ChannelId, name: String },
    Direct { to: AccountId },
}

/// Runs one chat client.
pub async fn run(ctx: ClientContext) {
    let tally = &ctx.shared.chat;
    let done_sending = DoneSending(tally);
    // Where a paced client's schedule is counted from, should it never get to send.
    let schedule_start = ctx.first_send(ctx.rate.map(|rate| Duration::from_secs_f64(1.0 / rate)));
    let Some((mut open, own_id)) = ctx.connect_session().await else {
        record_schedule_unsent(&ctx, schedule_start);
        return;
    };
    let ready = Ready::new(&ctx.shared);
    let Some((target, fanout)) = join(&ctx, &mut open, own_id).await else {
        record_schedule_unsent(&ctx, schedule_start);
        drop(done_sending);
        linger(&ctx, &mut open, own_id, None).await;
        drop(ready);
        open.close().await;
        return;
    };
    let sent = send_until_deadline(&ctx, &mut open, own_id, &target, fanout).await;
    drop(done_sending);
    if sent.is_ok() {
        linger(&ctx, &mut open, own_id, Some(&target)).await;
        if let Target::Room { name, .. } = &target {
            ctx.call(&mut open.conn, Request::Chat(ChatRequest::LeaveRoom { name: name.clone() })).await;
        }
    }
    drop(ready);
    open.close().await;
}

/// Records the whole schedule of a paced client that never got to send (it could not connect or
/// join, or its room or partner never came) as `not_sent`, from `schedule_start`, as
/// [`ClientContext::record_unsent`] does; nothing for a client with nobody to write to (the last
/// of an odd number of direct-message clients, or alone in its room), which has no schedule.
fn record_schedule_unsent(ctx: &ClientContext, schedule_start: Instant) {
    let (target, has_others) = if ctx.shared.scenario.chat_dm {
        (Target::Direct { to: AccountId::default() }, ctx.rank ^ 1 < ctx.n_peers)
    } else {
        let room = Target::Room { channel_id: ChannelId::default(), name: String::new() };
        (room, room_of(ctx).2 >= 2)
    };
    if has_others {
        let kind = request(&ctx.shared.run_id, &target, schedule_start).kind();
        ctx.record_unsent(kind, schedule_start, ctx.rate.map(|rate| Duration::from_secs_f64(1.0 / rate)));
    }
}

/// The client's room: (members per room, room number, members of this room).
fn room_of(ctx: &ClientContext) -> (usize, usize, usize) {
    let size = ctx.shared.scenario.chat_room_size.max(2);
    let room = ctx.rank / size;
    (size, room, ctx.n_peers.min((room + 1) * size) - room * size)
}

/// Joins the room (or finds the partner) and waits for the others; returns where to send and
/// how many other members each message reaches. `None` when there is nobody to talk to or the
/// run ended first.
async fn join(ctx: &ClientContext, open: &mut Open, own_id: AccountId) -> Option<(Target, u64)> {
    let rendezvous = &ctx.shared.rendezvous;
    let deadline = ctx.shared.deadline;
    if ctx.shared.scenario.chat_dm {
        let key = format!("chat-dm-{}", ctx.rank / 2);
        rendezvous.arrive(&key, ctx.rank, own_id);
        let partner_rank = ctx.rank ^ 1;
        if partner_rank >= ctx.n_peers {
            return None;
        }
        let to = rendezvous.wait_for_member(&key, partner_rank, deadline).await?;
        return Some((Target::Direct { to }, 1));
    }
    let (size, room, members) = room_of(ctx);
    let name = format!("lt-{size}-{room}");
    let joined = ctx.call(&mut open.conn, Request::Chat(ChatRequest::JoinRoom { name: name.clone() })).await;
    let Some(Outcome::Ok(Reply::Chat(ChatReply::Channel(channel)))) = joined else { return None };
    let key = format!("chat-room-{room}");
    rendezvous.arrive(&key, ctx.rank, own_id);
    if members < 2 || !rendezvous.wait_for_count(&key, members, deadline).await {
        // Alone in the room, or the room never filled: leave it and send nothing.
        ctx.call(&mut open.conn, Request::Chat(ChatRequest::LeaveRoom { name })).await;
        return None;
    }
    Some((Target::Room { channel_id: channel.channel_id, name }, members as u64 - 1))
}

/// Sends until the deadline and waits for the last acknowledgements, recording deliveries that
/// arrive meanwhile. `Err` when the connection was lost.
async fn send_until_deadline(
    ctx: &ClientContext,
    open: &mut Open,
    own_id: AccountId,
    target: &Target,
    fanout: u64,
) -> Result<(), Lost> {
    let recorder = &ctx.shared.recorder;
    let deadline = ctx.shared.deadline;
    let drain_deadline = deadline + DRAIN_TIMEOUT;
    let interval = ctx.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let mut next = ctx.first_send(interval);
    let kind = request(&ctx.shared.run_id, target, Instant::now()).kind();
    // (request id, scheduled send time) of messages not acknowledged yet, oldest first.
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    loop {
        let now = Instant::now();
        // Paced, nothing leaves after the end even if its slot was due before it.
        let sending = if interval.is_some() { next < deadline } else { now < deadline };
        if !sending && pending.is_empty() {
            return Ok(());
        }
        // Closed loop: the next message leaves once the last is acknowledged.
        let due = match interval {
            Some(_) => next,
            None if pending.is_empty() => now,
            None => drain_deadline + DRAIN_TIMEOUT,
        };
        tokio::select! {
            () = sleep_until(due), if sending => {
                let scheduled = if interval.is_some() { next } else { now };
                match open.conn.send(request(&ctx.shared.run_id, target, scheduled)).await {
                    Ok(id) => pending.push_back((id, scheduled)),
                    Err(error) => {
                        // The message that did not go out fails with those awaiting an answer.
                        pending.push_back((0, scheduled));
                        ctx.record_unsent(kind, next + interval.unwrap_or_default(), interval);
                        return Err(fail_all(ctx, kind, &mut pending, &error));
                    }
                }
                if let Some(interval) = interval {
                    next += interval;
                }
            }
            message = open.conn.recv_message() => match message {
                Ok(ServerMessage::Response(response)) => {
                    let position = pending.iter().position(|(id, _)| *id == response.id);
                    if let Some((_, scheduled)) = position.and_then(|position| pending.remove(position)) {
                        recorder.answered(ctx.index, kind, scheduled.elapsed(), &response.outcome, false);
                        if matches!(response.outcome, Outcome::Ok(Reply::Chat(ChatReply::Sent { .. }))) {
                            ctx.shared.chat.expected.fetch_add(fanout, Ordering::Relaxed);
                        }
                    }
                }
                Ok(ServerMessage::Event(event)) => record_delivery(ctx, own_id, Some(target), &event),
                Err(error) => {
                    ctx.record_unsent(kind, next, interval);
                    if interval.is_none() && pending.is_empty() {
                        // Closed loop, the message due next fails in its place.
                        pending.push_back((0, now));
                    }
                    return Err(fail_all(ctx, kind, &mut pending, &error));
                }
            },
            () = sleep_until(drain_deadline), if !sending => {
                return Err(fail_all(ctx, kind, &mut pending, &ConnError::Timeout));
            }
        }
    }
}

/// Keeps receiving until every chat client is done sending and every expected delivery has
/// arrived, or the drain timeout.
async fn linger(ctx: &ClientContext, open: &mut Open, own_id: AccountId, target: Option<&Target>) {
    let give_up = ctx.shared.deadline + DRAIN_TIMEOUT;
    while !ctx.shared.chat.all_delivered() && Instant::now() < give_up {
        tokio::select! {
            message = open.conn.recv_message() => match message {
                Ok(ServerMessage::Event(event)) => record_delivery(ctx, own_id, target, &event),
                Ok(ServerMessage::Response(_)) => {}
                Err(_) => return,
            },
            () = tokio::time::sleep(LINGER_POLL) => {}
        }
    }
}

/// The message to send at `scheduled`: its text carries the run's id and the send time.
fn request(run_id: &str, target: &Target, scheduled: Instant) -> Request {
    // The scheduled time as wall-clock time, so another client can compare it with its own clock.
    let wall = SystemTime::now()
        .checked_sub(Instant::now().saturating_duration_since(scheduled))
        .unwrap_or(UNIX_EPOCH);
    let micros = wall.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros());
    let text = format!("{TEXT_TAG} {run_id} {micros}");
    Request::Chat(match target {
        Target::Room { channel_id, .. } => ChatRequest::Send { channel_id: *channel_id, text },
        Target::Direct { to } => ChatRequest::SendDirect { to: *to, text },
    })
}

/// Records the delivery of another member's message of this run in this client's channel.
fn record_delivery(ctx: &ClientContext, own_id: AccountId, target: Option<&Target>, event: &Event) {
    let Event::Chat(ChatEvent::Message(message)) = event else { return };
    if message.sender == own_id || !ours(target, message) {
        return;
    }
    let Some(sent_micros) = sent_at(&ctx.shared.run_id, &message.text) else { return };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros());
    let latency = Duration::from_micros(u64::try_from(now.saturating_sub(sent_micros)).unwrap_or(u64::MAX));
    ctx.shared.recorder.observed(ctx.index, CHAT_DELIVERY, latency);
    ctx.shared.chat.delivered.fetch_add(1, Ordering::Relaxed);
}

/// Whether `message` was sent where this client talks (a client that never found its room or
/// partner counts nothing: nobody expects it to receive).
fn ours(target: Option<&Target>, message: &ChatMessage) -> bool {
    match target {
        Some(Target::Room { channel_id, .. }) => message.channel_id == *channel_id,
        Some(Target::Direct { to }) => message.sender == *to,
        None => false,
    }
}

/// The send time in a message text of run `run_id`, in microseconds since the Unix epoch.
fn sent_at(run_id: &str, text: &str) -> Option<u128> {
    let mut words = text.split(' ');
    (words.next()? == TEXT_TAG && words.next()? == run_id).then_some(())?;
    words.next()?.parse().ok()
}

/// The connection was lost, or the last acknowledgements never came.
struct Lost;

/// Records every unacknowledged message as failed with `error` (the rest of a paced schedule is
/// [`ClientContext::record_unsent`]'s).
fn fail_all(
    ctx: &ClientContext,
    kind: &'static str,
    pending: &mut VecDeque<(u64, Instant)>,
    error: &ConnError,
) -> Lost {
    for _ in 0..pending.len() {
        ctx.shared.recorder.failed(ctx.index, kind, error);
    }
    pending.clear();
    tracing::debug!(%error, client = ctx.index, request = kind, "chat connection lost");
    Lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_texts_carry_the_run_and_the_send_time() {
        let target = Target::Direct { to: AccountId::default() };
        let Request::Chat(ChatRequest::SendDirect { text, .. }) = request("00ab", &target, Instant::now())
        else {
            panic!("a direct message");
        };
        let sent = sent_at("00ab", &text).expect("parses");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_micros();
        assert!(now >= sent && now - sent < 1_000_000, "{sent} vs {now}");
        assert_eq!(sent_at("00ac", &text), None, "another run's message");
        assert_eq!(sent_at("00ab", "hello there"), None);
    }
}
