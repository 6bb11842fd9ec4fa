//! Chat requests: wire types in, `chat` domain calls, wire types out, and the events the domain
//! says to deliver published on the bus. The domain holds the rules; this file converts.
//!
//! Events go through one [`Announcer`] task, which publishes whatever is queued as one bus
//! message ([`Hub::deliver_batch`]): the sends answered by one group commit finish together, so
//! under load many messages share a publish, and each connection gets its events together (one
//! write to its socket rather than one per event). Under load it publishes at most once per
//! [`MIN_PUBLISH_INTERVAL`], gathering meanwhile; an event after a quiet spell goes at once.

use chat::{Channel, ChannelKind, Delivery, Message};
use proto::chat::{ChatEvent, ChatReply, ChatRequest};
use proto::{AccountId, ErrorBody, Event, Reply};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::hub::Hub;
use crate::{Shared, errors};

/// Chat events waiting for the announcer, at most; senders wait for room beyond it.
const ANNOUNCE_QUEUE: usize = 8_192;
/// A bus message stops gathering events once they name this many recipients (a room's event
/// lists all its members), so one publish stays within a few hundred KiB. This also bounds the events per publish, which is what caps chat throughput: the
/// announcer publishes at most once per [`MIN_PUBLISH_INTERVAL`], and every send waits for its
/// publish, so 64 events per message held direct messages near 21,000/s.
const MAX_ANNOUNCE_RECIPIENTS: usize = 8_192;
/// Shortest time between two publishes under load: the most an event waits for company. Each
/// publish costs every receiving connection a socket write, so at 2,000 messages/s into a room
/// this turns about four writes per member into one.
const MIN_PUBLISH_INTERVAL: Duration = Duration::from_millis(2);

/// An event to publish, and where to say it was.
struct Announcement {
    recipients: Vec<Uuid>,
    event: Event,
    published: oneshot::Sender<()>,
}

/// What the announcer published, for `/metrics`.
#[derive(Debug, Default)]
pub struct AnnounceStats {
    /// Chat events published on the bus.
    pub events: AtomicU64,
    /// Bus messages that carried them (one per burst).
    pub publishes: AtomicU64,
    /// Accounts those events named (before they fan out to connections).
    pub recipients: AtomicU64,
    /// Events that could not be published (bus unreachable; members see them in history).
    pub failed: AtomicU64,
}

/// The queue of chat events to publish. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Announcer {
    queue: mpsc::Sender<Announcement>,
    stats: Arc<AnnounceStats>,
}

/// The announcer's end of the queue; run it with [`AnnouncerTask::run`].
pub(crate) struct AnnouncerTask {
    receiver: mpsc::Receiver<Announcement>,
    hub: Hub,
    stats: Arc<AnnounceStats>,
}

impl Announcer {
    /// An announcer publishing through `hub`, and the task that does it.
    pub(crate) fn new(hub: Hub) -> (Announcer, AnnouncerTask) {
        let (queue, receiver) = mpsc::channel(ANNOUNCE_QUEUE);
        let stats = Arc::new(AnnounceStats::default());
        (Announcer { queue, stats: stats.clone() }, AnnouncerTask { receiver, hub, stats })
    }

    /// What has been published so far.
    pub(crate) fn stats(&self) -> &AnnounceStats {
        &self.stats
    }
}

impl AnnouncerTask {
    /// Publishes queued events until `shutdown`, then what is still queued.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut last_publish: Option<Instant> = None;
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                first = self.receiver.recv() => first,
            };
            let Some(first) = first else { return };
            if let Some(ready) = last_publish.map(|last| last + MIN_PUBLISH_INTERVAL) {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep_until(ready) => {}
                }
            }
            last_publish = Some(Instant::now());
            self.publish(first).await;
        }
        self.receiver.close();
        while let Some(first) = self.receiver.recv().await {
            self.publish(first).await;
        }
    }

    /// Publishes `first` and whatever else is queued, up to [`MAX_ANNOUNCE_RECIPIENTS`].
    async fn publish(&mut self, first: Announcement) {
        let mut recipients = first.recipients.len();
        let mut batch = vec![first];
        while recipients < MAX_ANNOUNCE_RECIPIENTS {
            match self.receiver.try_recv() {
                Ok(next) => {
                    recipients += next.recipients.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (deliveries, published): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|a| ((a.recipients, a.event), a.published)).unzip();
        let n_events = deliveries.len();
        let n_recipients: usize = deliveries.iter().map(|(recipients, _)| recipients.len()).sum();
        match self.hub.deliver_batch(deliveries).await {
            Ok(()) => {
                self.stats.events.fetch_add(n_events as u64, Ordering::Relaxed);
                self.stats.publishes.fetch_add(1, Ordering::Relaxed);
                self.stats.recipients.fetch_add(n_recipients as u64, Ordering::Relaxed);
            }
            Err(error) => {
                self.stats.failed.fetch_add(n_events as u64, Ordering::Relaxed);
                tracing::warn!(%error, n_events, "could not publish chat events; members will see them in history");
            }
        }
        for published in published {
            // A request that stopped waiting does not need to know.
            let _ = published.send(());
        }
    }
}

fn channel_id(id: proto::chat::ChannelId) -> chat::ChannelId {
    chat::ChannelId(id.0)
}

fn channel_to_wire(channel: &Channel) -> proto::chat::ChannelInfo {
    proto::chat::ChannelInfo {
        channel_id: proto::chat::ChannelId(channel.id.0),
        kind: match channel.kind {
            ChannelKind::Room => proto::chat::ChannelKind::Room,
            ChannelKind::Group => proto::chat::ChannelKind::Group,
            ChannelKind::Direct => proto::chat::ChannelKind::Direct,
        },
        name: channel.name.clone(),
        owner: channel.owner.map(AccountId),
    }
}

fn message_to_wire(message: Message) -> proto::chat::ChatMessage {
    proto::chat::ChatMessage {
        message_id: proto::chat::MessageId(message.id.0),
        channel_id: proto::chat::ChannelId(message.channel_id.0),
        sender: AccountId(message.sender),
        text: message.text,
        sent_at_ms: message.sent_at_ms,
    }
}

/// Publishes `event` to `recipients` and returns once it is published (or failed to be). The
/// request already succeeded (the change is stored), so a bus outage only costs the live
/// delivery; members still see it in history.
async fn announce(shared: &Shared, recipients: Vec<Uuid>, event: ChatEvent) {
    if recipients.is_empty() {
        return;
    }
    let (published, done) = oneshot::channel();
    let announcement = Announcement { recipients, event: Event::Chat(event), published };
    if shared.chat_announcer.queue.send(announcement).await.is_err() {
        tracing::warn!("chat announcer stopped; members will see the event in history");
        return;
    }
    let _ = done.await;
}

/// Applies one chat request of the authenticated account `own_id`.
pub(crate) async fn apply(shared: &Shared, own_id: Uuid, request: ChatRequest) -> Result<Reply, ErrorBody> {
    let chat = &shared.chat;
    let fail = |error: chat::ChatError| errors::from_chat(&error);
    let reply = match request {
        ChatRequest::JoinRoom { name } => {
            ChatReply::Channel(channel_to_wire(&chat.join_room(own_id, &name).await.map_err(fail)?))
        }
        ChatRequest::LeaveRoom { name } => {
            let room = chat.leave_room(own_id, &name).await.map_err(fail)?;
            ChatReply::Left { channel_id: proto::chat::ChannelId(room.id.0) }
        }
        ChatRequest::CreateGroup { name } => {
            ChatReply::Channel(channel_to_wire(&chat.create_group(own_id, &name).await.map_err(fail)?))
        }
        ChatRequest::AddMember { channel_id: group, account_id } => {
            // The chat domain does not know accounts: only one that exists joins a group.
            shared.auth.account(account_id.0).await.map_err(|e| errors::from_auth(&e))?;
            let Delivery { value, recipients } =
                chat.add_member(own_id, channel_id(group), account_id.0).await.map_err(fail)?;
            // Nobody is told when the account already was a member.
            if recipients.contains(&account_id.0) {
                announce(shared, vec![account_id.0], ChatEvent::Added(channel_to_wire(&value))).await;
            }
            ChatReply::MemberAdded { channel_id: group, account_id }
        }
        ChatRequest::RemoveMember { channel_id: group, account_id } => {
            let Delivery { recipients, .. } =
                chat.remove_member(own_id, channel_id(group), account_id.0).await.map_err(fail)?;
            // The removed one is among the recipients only if they were a member: nobody else
            // is told of a group they never saw.
            if recipients.contains(&account_id.0) {
                announce(shared, vec![account_id.0], ChatEvent::Removed { channel_id: group }).await;
            }
            ChatReply::MemberRemoved { channel_id: group, account_id }
        }
        ChatRequest::Send { channel_id: to, text } => {
            sent(shared, chat.send(own_id, channel_id(to), &text).await.map_err(fail)?).await
        }
        ChatRequest::SendDirect { to, text } => {
            // The chat domain does not know accounts: make sure this one exists, unless the two
            // already have a channel (made only after that same check; accounts are never
            // deleted).
            if !chat.has_direct_channel(own_id, to.0).await.map_err(fail)? {
                shared.auth.account(to.0).await.map_err(|e| errors::from_auth(&e))?;
            }
            sent(shared, chat.send_direct(own_id, to.0, &text).await.map_err(fail)?).await
        }
        ChatRequest::History { channel_id: id, before, limit } => {
            let before = before.map(|before| chat::MessageId(before.0));
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let page = chat.history(own_id, channel_id(id), before, limit).await.map_err(fail)?;
            ChatReply::History(proto::chat::HistoryPage {
                channel_id: id,
                messages: page.messages.into_iter().map(message_to_wire).collect(),
                next_before: page.next_before.map(|next| proto::chat::MessageId(next.0)),
                archived: page.archived,
            })
        }
        ChatRequest::Delete { channel_id: id, message_id } => {
            let deleted =
                chat.delete(own_id, channel_id(id), chat::MessageId(message_id.0)).await.map_err(fail)?;
            announce(shared, deleted.recipients, ChatEvent::Deleted { channel_id: id, message_id }).await;
            ChatReply::Deleted { channel_id: id, message_id }
        }
        ChatRequest::Channels => {
            let channels = chat.channels_of(own_id).await.map_err(fail)?;
            ChatReply::Channels(channels.iter().map(channel_to_wire).collect())
        }
    };
    Ok(Reply::Chat(reply))
}

/// Announces a stored message to its channel's members and acknowledges it.
async fn sent(shared: &Shared, delivery: Delivery<Message>) -> ChatReply {
    let message = message_to_wire(delivery.value);
    let reply = ChatReply::Sent {
        channel_id: message.channel_id,
        message_id: message.message_id,
        sent_at_ms: message.sent_at_ms,
    };
    announce(shared, delivery.recipients, ChatEvent::Message(message)).await;
    reply
}
