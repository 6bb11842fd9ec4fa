//! Where connections are found: the registry of this process's authenticated connections, and the
//! bus (Redis pub/sub through `kv`) that carries events and revocations between gateway processes.
//!
//! Every message goes through the bus, also when its target is connected to this same process:
//! one path, so what works in a one-process test works across processes.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use auth::SessionKey;
use kv::Kv;
use proto::{Encoding, Event, ServerMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::outbound::{self, Outbound};

/// The pub/sub channel every gateway process listens on.
const BUS_CHANNEL: &str = "bus";
/// How long a revoked session is remembered for connections that register with it afterwards. A
/// connection checks its session in the store, then registers here; a revocation heard in between
/// would otherwise miss it, and it would serve until its next heartbeat check. Registering comes
/// a moment after the check, so a few seconds cover it with room to spare.
const REVOCATION_MEMORY: Duration = Duration::from_secs(5);

/// A message between gateway processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum BusMessage {
    /// Deliver `event` to every connection of `account_id`.
    ToAccount { account_id: Uuid, event: Event },
    /// Close every connection authenticated with one of these sessions.
    SessionsRevoked { keys: Vec<String> },
    /// Deliver `event` to every connection of each of `account_ids` (one bus message for many).
    ToAccounts { account_ids: Vec<Uuid>, event: Event },
    /// Several [`BusMessage::ToAccounts`] in one bus message, applied in order.
    ToAccountsBatch { deliveries: Vec<(Vec<Uuid>, Event)> },
    /// The last connection of `account_id` on one process ended and its matchmaking ticket was
    /// set aside; a process where the account is still connected puts it back.
    Departed { account_id: Uuid },
}

/// A number naming one connection within this process.
pub type ConnectionId = u64;

struct Entry {
    account_id: Uuid,
    session: SessionKey,
    outbound: Outbound,
}

#[derive(Default)]
struct Registry {
    connections: HashMap<ConnectionId, Entry>,
    by_account: HashMap<Uuid, HashSet<ConnectionId>>,
    by_session: HashMap<String, HashSet<ConnectionId>>,
    /// Sessions revoked within [`REVOCATION_MEMORY`] (or before it, until the next revocation
    /// forgets them), oldest first, and the same as a set.
    revoked_in_order: VecDeque<(Instant, String)>,
    recently_revoked: HashSet<String>,
}

/// What this process's hub handed to its connections, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Event frames queued on local connections (one per event and connection).
    pub events_queued: AtomicU64,
    /// Events encoded (at most once per event and encoding, however many connections get it).
    pub encodings: AtomicU64,
}

/// An event on its way to many connections, encoded at most once per encoding: every connection
/// speaking that encoding is handed a clone of the same frame, which shares its bytes.
struct Encoded {
    message: ServerMessage,
    bincode: OnceCell<Option<Message>>,
    json: OnceCell<Option<Message>>,
}

impl Encoded {
    fn new(event: Event) -> Encoded {
        Encoded { message: ServerMessage::Event(event), bincode: OnceCell::new(), json: OnceCell::new() }
    }

    /// Queues the event on `outbound`, encoding it on first use of that encoding.
    fn send_to(&self, outbound: &Outbound, stats: &DeliveryStats) {
        let encoding = outbound.encoding();
        let cell = match encoding {
            Encoding::Bincode => &self.bincode,
            Encoding::Json => &self.json,
        };
        let frame = cell.get_or_init(|| {
            stats.encodings.fetch_add(1, Ordering::Relaxed);
            outbound::encode_frame(encoding, &self.message)
        });
        if let Some(frame) = frame {
            outbound.send_frame(frame.clone());
        }
    }
}

impl Registry {
    /// Queues `event` on every connection of each of `account_ids`.
    fn to_accounts(&self, account_ids: &[Uuid], event: Event, stats: &DeliveryStats) {
        let event = Encoded::new(event);
        let ids = account_ids.iter().filter_map(|account_id| self.by_account.get(account_id));
        for entry in ids.flatten().filter_map(|id| self.connections.get(id)) {
            // Counted first, so whoever has received the event also sees it counted.
            stats.events_queued.fetch_add(1, Ordering::Relaxed);
            event.send_to(&entry.outbound, stats);
        }
    }

    /// Queues each event on every connection of its accounts, one connection at a time, so a
    /// connection's events are queued back to back (in order) and its writer sends them in one
    /// flush. Each event is encoded once per encoding, not once per connection.
    fn to_accounts_batch(&self, deliveries: Vec<(Vec<Uuid>, Event)>, stats: &DeliveryStats) {
        let mut queued: Vec<(ConnectionId, usize)> = Vec::new();
        let mut events = Vec::with_capacity(deliveries.len());
        for (index, (account_ids, event)) in deliveries.into_iter().enumerate() {
            for account_id in &account_ids {
                if let Some(ids) = self.by_account.get(account_id) {
                    queued.extend(ids.iter().map(|&id| (id, index)));
                }
            }
            events.push(Encoded::new(event));
        }
        // Stable: a connection's events keep their order.
        queued.sort_by_key(|&(id, _)| id);
        for connection in queued.chunk_by(|a, b| a.0 == b.0) {
            let Some(entry) = self.connections.get(&connection[0].0) else { continue };
            stats.events_queued.fetch_add(connection.len() as u64, Ordering::Relaxed);
            for &(_, index) in connection {
                events[index].send_to(&entry.outbound, stats);
            }
        }
    }

    /// Forgets connection `id`, so nothing more is queued on it.
    fn remove(&mut self, id: ConnectionId) {
        if let Some(entry) = self.connections.remove(&id) {
            remove_from(&mut self.by_account, &entry.account_id, id);
            remove_from(&mut self.by_session, &entry.session.as_str().to_owned(), id);
        }
    }

    /// Remembers that `keys` were revoked, forgetting revocations older than [`REVOCATION_MEMORY`].
    fn remember_revoked(&mut self, keys: Vec<String>, now: Instant) {
        while let Some((at, _)) = self.revoked_in_order.front()
            && now.duration_since(*at) > REVOCATION_MEMORY
        {
            if let Some((_, key)) = self.revoked_in_order.pop_front() {
                self.recently_revoked.remove(&key);
            }
        }
        for key in keys {
            // A key announced twice is remembered from its first announcement.
            if self.recently_revoked.insert(key.clone()) {
                self.revoked_in_order.push_back((now, key));
            }
        }
    }
}

/// Removes `id` from the set under `key`, and the set once empty.
fn remove_from<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, HashSet<ConnectionId>>,
    key: &K,
    id: ConnectionId,
) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(&id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

/// `n_receivers` processes heard a message. Every gateway listens on the bus, this one included,
/// so none means the message was published while every subscription was down (reconnecting
/// after a Redis restart) and is lost: an error, which the caller logs and counts as it does an
/// unreachable bus, rather than a success.
fn heard(n_receivers: u64) -> Result<(), kv::KvError> {
    if n_receivers == 0 {
        return Err(kv::KvError::Unavailable("no gateway process is subscribed to the bus".into()));
    }
    Ok(())
}

/// The registry and the bus. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    registry: Arc<Mutex<Registry>>,
    kv: Kv,
    metrics: Arc<Metrics>,
    delivery: Arc<DeliveryStats>,
    /// Whether the bus subscription receives, once [`Hub::listen`] made it.
    bus: Arc<OnceLock<kv::Subscribed>>,
}

impl Hub {
    /// A hub publishing through `kv`. Call [`Hub::listen`] to receive.
    pub fn new(kv: Kv, metrics: Arc<Metrics>) -> Hub {
        Hub { registry: Arc::default(), kv, metrics, delivery: Arc::default(), bus: Arc::default() }
    }

    /// Whether this process hears the bus: false before [`Hub::listen`], while its subscription
    /// is reconnecting (events for its connections are lost meanwhile), and once the bus task
    /// has ended. For `/readyz`.
    pub fn hears_bus(&self) -> bool {
        self.bus.get().is_some_and(kv::Subscribed::get)
    }

    /// Bus messages dropped because this process's bus task fell too far behind, for `/metrics`.
    pub fn n_bus_messages_dropped(&self) -> u64 {
        self.bus.get().map_or(0, kv::Subscribed::n_dropped)
    }

    /// What this process has handed to its connections.
    pub fn delivery_stats(&self) -> &DeliveryStats {
        &self.delivery
    }

    /// Subscribes to the bus and spawns the task that applies its messages to this process's
    /// connections until `shutdown`. Accounts that departed another process while connected to
    /// this one ([`Hub::departed`]) go to `still_connected`.
    ///
    /// # Errors
    /// The first subscription could not be made.
    pub async fn listen(
        &self,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
        still_connected: mpsc::Sender<Uuid>,
    ) -> Result<(), kv::KvError> {
        let mut subscription = self.kv.subscribe(BUS_CHANNEL, shutdown).await?;
        // Listened to once per process; a second call keeps reporting the first subscription.
        let _ = self.bus.set(subscription.subscribed());
        let hub = self.clone();
        tracker.spawn(async move {
            while let Some(payload) = subscription.recv().await {
                hub.metrics.bus_message();
                match serde_json::from_slice::<BusMessage>(&payload) {
                    Ok(message) => hub.apply(message, &still_connected),
                    Err(error) => tracing::warn!(%error, "undecodable bus message"),
                }
            }
        });
        Ok(())
    }

    /// Records that connection `id` is authenticated with `session`. A session revoked a moment
    /// ago (heard between the connection's check of it and this call) closes the connection at
    /// once, as the revocation would have, and leaves it unregistered.
    pub fn register(&self, id: ConnectionId, account_id: Uuid, session: SessionKey, outbound: Outbound) {
        let Ok(mut registry) = self.registry.lock() else { return };
        if registry.recently_revoked.contains(session.as_str()) {
            outbound.kick(proto::close::SESSION_REVOKED, "session revoked");
            return;
        }
        registry.by_account.entry(account_id).or_default().insert(id);
        registry.by_session.entry(session.as_str().to_owned()).or_default().insert(id);
        registry.connections.insert(id, Entry { account_id, session, outbound });
    }

    /// Forgets connection `id` (logged out or gone).
    pub fn unregister(&self, id: ConnectionId) {
        let Ok(mut registry) = self.registry.lock() else { return };
        registry.remove(id);
    }

    /// Whether `account_id` has an authenticated connection on this process.
    pub fn is_connected(&self, account_id: Uuid) -> bool {
        self.registry.lock().is_ok_and(|registry| registry.by_account.contains_key(&account_id))
    }

    /// Sends `event` to every connection of `account_id`, on whichever gateway process.
    ///
    /// # Errors
    /// The bus (Redis) is unreachable, or no gateway process heard it (the event is lost).
    pub async fn deliver(&self, account_id: Uuid, event: Event) -> Result<(), kv::KvError> {
        heard(self.publish(&BusMessage::ToAccount { account_id, event }).await?)
    }

    /// Sends `event` to every connection of each of `account_ids`, on whichever gateway
    /// process, with one bus message.
    ///
    /// # Errors
    /// The bus (Redis) is unreachable, or no gateway process heard it (the event is lost).
    pub async fn deliver_many(&self, account_ids: Vec<Uuid>, event: Event) -> Result<(), kv::KvError> {
        if account_ids.is_empty() {
            return Ok(());
        }
        heard(self.publish(&BusMessage::ToAccounts { account_ids, event }).await?)
    }

    /// Sends each event to every connection of its accounts, in order, with one bus message:
    /// for a burst of events (a group commit's chat messages) one publish instead of one each,
    /// and each connection's events arrive together.
    ///
    /// # Errors
    /// The bus (Redis) is unreachable, or no gateway process heard it (the event is lost).
    pub async fn deliver_batch(&self, deliveries: Vec<(Vec<Uuid>, Event)>) -> Result<(), kv::KvError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        heard(self.publish(&BusMessage::ToAccountsBatch { deliveries }).await?)
    }

    /// Closes every connection, on every gateway process, that uses one of these sessions.
    ///
    /// # Errors
    /// The bus (Redis) is unreachable. A revocation nobody hears is no error: no process has
    /// a connection to close (or, if this one's subscription is down, heartbeats close it).
    pub async fn revoke(&self, keys: &[SessionKey]) -> Result<(), kv::KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys = keys.iter().map(|key| key.as_str().to_owned()).collect();
        self.publish(&BusMessage::SessionsRevoked { keys }).await.map(drop)
    }

    /// Tells every gateway process that the last connection of `account_id` here ended and its
    /// matchmaking ticket was set aside, so one where the account is still connected puts it back.
    ///
    /// # Errors
    /// The bus (Redis) is unreachable, or no gateway process heard it (the event is lost).
    pub async fn departed(&self, account_id: Uuid) -> Result<(), kv::KvError> {
        heard(self.publish(&BusMessage::Departed { account_id }).await?)
    }

    /// Publishes `message`; returns how many gateway processes heard it.
    async fn publish(&self, message: &BusMessage) -> Result<u64, kv::KvError> {
        // Serialising our own enum of plain fields cannot fail.
        let payload = serde_json::to_vec(message).unwrap_or_default();
        self.kv.publish(BUS_CHANNEL, &payload).await
    }

    fn apply(&self, message: BusMessage, still_connected: &mpsc::Sender<Uuid>) {
        let Ok(mut registry) = self.registry.lock() else { return };
        let stats = &*self.delivery;
        match message {
            BusMessage::ToAccount { account_id, event } => registry.to_accounts(&[account_id], event, stats),
            BusMessage::ToAccounts { account_ids, event } => registry.to_accounts(&account_ids, event, stats),
            BusMessage::ToAccountsBatch { deliveries } => registry.to_accounts_batch(deliveries, stats),
            BusMessage::SessionsRevoked { keys } => {
                // Unregistered at once: an event heard before the connection's task ends would
                // otherwise be written after the kick, to a client no longer signed in.
                let ids = keys.iter().filter_map(|key| registry.by_session.get(key)).flatten();
                let ids: Vec<ConnectionId> = ids.copied().collect();
                for id in ids {
                    if let Some(entry) = registry.connections.get(&id) {
                        entry.outbound.kick(proto::close::SESSION_REVOKED, "session revoked");
                    }
                    registry.remove(id);
                }
                registry.remember_revoked(keys, Instant::now());
            }
            BusMessage::Departed { account_id } => {
                if registry.by_account.contains_key(&account_id)
                    && still_connected.try_send(account_id).is_err()
                    && let Some(n_unchecked) = self.metrics.departure_unchecked()
                {
                    tracing::warn!(
                        %account_id,
                        n_unchecked,
                        "too many departures to check; their tickets stay set aside until the \
                         players log in again (count so far)"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{OutboundQueue, QueueLimits};

    fn connection(metrics: &Arc<Metrics>) -> (Outbound, OutboundQueue) {
        let limits = QueueLimits { frames: 16, bytes: 1 << 16, total_bytes: 1 << 20 };
        Outbound::new(Encoding::Json, limits, metrics.clone())
    }

    #[tokio::test]
    async fn a_connection_registering_with_a_session_revoked_a_moment_ago_is_closed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kv = Kv::embedded(dir.path(), "t:").expect("embedded store");
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(kv, metrics.clone());
        let (still_connected, _departures) = mpsc::channel(1);
        let revoked = SessionKey::from_hash("ab".repeat(32));

        // Heard after the connection found its session in the store, before it registered.
        let keys = vec![revoked.as_str().to_owned()];
        hub.apply(BusMessage::SessionsRevoked { keys }, &still_connected);
        let (late, _late_queue) = connection(&metrics);
        hub.register(1, Uuid::now_v7(), revoked, late.clone());
        assert!(late.closing().is_cancelled(), "closed as the revocation would have closed it");

        let (other, _other_queue) = connection(&metrics);
        hub.register(2, Uuid::now_v7(), SessionKey::from_hash("cd".repeat(32)), other.clone());
        assert!(!other.closing().is_cancelled(), "another session is left alone");
    }

    #[tokio::test]
    async fn departures_past_the_check_queue_are_counted_for_the_operator() {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(Kv::embedded(dir.path(), "t:").expect("embedded store"), metrics.clone());
        let (still_connected, mut departures) = mpsc::channel(1);
        let (account_id, session) = (Uuid::now_v7(), SessionKey::from_hash("ab".repeat(32)));
        let (here, _queue) = connection(&metrics);
        hub.register(1, account_id, session, here);

        for _ in 0..3 {
            hub.apply(BusMessage::Departed { account_id }, &still_connected);
        }
        // A departure of someone not connected here needs no check, and is no loss.
        hub.apply(BusMessage::Departed { account_id: Uuid::now_v7() }, &still_connected);

        assert_eq!(departures.try_recv().ok(), Some(account_id), "the first is queued for its check");
        assert!(
            metrics.render().contains("gateway_departures_unchecked_total 2\n"),
            "the two that found the queue full are counted"
        );
    }

    #[tokio::test]
    async fn a_revoked_connection_gets_no_events_after_being_told_it_is_revoked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(Kv::embedded(dir.path(), "t:").expect("embedded store"), metrics.clone());
        let (still_connected, _departures) = mpsc::channel(1);
        let (account_id, session) = (Uuid::now_v7(), SessionKey::from_hash("ab".repeat(32)));
        let (revoked, queue) = connection(&metrics);
        hub.register(1, account_id, session.clone(), revoked);

        let keys = vec![session.as_str().to_owned()];
        hub.apply(BusMessage::SessionsRevoked { keys }, &still_connected);
        // Heard before the connection's task has ended and unregistered it.
        let event = Event::Notice { text: "your new direct message".into() };
        hub.apply(BusMessage::ToAccount { account_id, event }, &still_connected);

        let mut written: Vec<Message> = Vec::new();
        queue.write_to(&mut written).await;
        let texts: Vec<String> =
            written.iter().map(|frame| frame.to_text().unwrap_or("").to_owned()).collect();
        assert_eq!(texts.len(), 2, "the kick and the close frame: {texts:?}");
        assert!(texts[0].contains("kicked"), "{texts:?}");
        assert!(matches!(written[1], Message::Close(_)), "{texts:?}");
        assert!(!hub.is_connected(account_id), "a revoked connection no longer counts as the account's");
    }

    #[tokio::test]
    async fn an_event_no_process_hears_is_reported_as_not_delivered() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kv = Kv::embedded(dir.path(), "t:").expect("embedded store");
        // Not listening: as while this process's subscription reconnects after a Redis restart.
        let hub = Hub::new(kv, Arc::new(Metrics::default()));
        let notice = || Event::Notice { text: "maintenance at noon".into() };
        let account_id = Uuid::now_v7();

        assert!(hub.deliver(account_id, notice()).await.is_err());
        assert!(hub.deliver_many(vec![account_id], notice()).await.is_err());
        assert!(hub.deliver_batch(vec![(vec![account_id], notice())]).await.is_err());
        assert!(hub.departed(account_id).await.is_err());
        // A revocation nobody hears closes nothing that is open (gamectl with no gateway running).
        assert!(hub.revoke(&[SessionKey::from_hash("ab".repeat(32))]).await.is_ok());

        let shutdown = CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let (still_connected, _departures) = mpsc::channel(1);
        hub.listen(&tracker, shutdown.clone(), still_connected).await.expect("listening");
        assert!(hub.deliver(account_id, notice()).await.is_ok(), "heard by this process");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_hub_says_whether_it_hears_the_bus() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hub = Hub::new(Kv::embedded(dir.path(), "t:").expect("embedded store"), Arc::default());
        assert!(!hub.hears_bus(), "not before listening");

        let shutdown = CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let (still_connected, _departures) = mpsc::channel(1);
        hub.listen(&tracker, shutdown.clone(), still_connected).await.expect("listening");
        assert!(hub.hears_bus());

        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while hub.hears_bus() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("not once the bus task has ended");
    }
}
