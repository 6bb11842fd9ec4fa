//! One game connection: the handshake (subprotocol and optional token), then a loop that reads
//! frames, answers each request in order, sends heartbeats and ends the connection with a close
//! code when anything goes wrong. Writing happens in [`crate::outbound`]'s writer task.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Stream, StreamExt};
use proto::{
    ClientMessage, Encoding, ErrorBody, ErrorCode, Outcome, Reply, Request, Response, ServerMessage, codec,
};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as HttpRequest, Response as HttpResponse,
};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Shared;
use crate::chat_requests;
use crate::config::GatewayConfig;
use crate::errors;
use crate::hub::ConnectionId;
use crate::inventory_requests;
use crate::matchmaking_requests;
use crate::metrics::RequestKindStats;
use crate::outbound::{Outbound, QueueLimits};
use crate::player_requests;

/// Frames the writer feeds are gathered up to this many bytes before a socket write (the writer
/// also flushes whenever its queue is drained, so nothing waits): a burst of chat events for one
/// connection becomes a few writes instead of one system call per frame.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// How long a client has to complete the WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused client (server full) has to complete the handshake that tells it so.
const REFUSAL_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// WebSocket Pings a client may send per second, with a burst allowance, apart from its request
/// budget: each costs a Pong, which the socket layer buffers even when the client does not read.
const PINGS_PER_SEC: u32 = 10;
const PING_BURST: u32 = 20;
/// How long the server keeps reading after it sent a close frame, so the client can read the
/// close frame before the socket goes away.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Bytes read at a time by [`discard_until_closed`].
const DISCARD_CHUNK_BYTES: usize = 16 * 1024;

/// Whether an accepted connection has a place on the server.
pub(crate) enum Admission {
    /// It holds one of the `max_connections` slots until it ends.
    Admitted { _slot: OwnedSemaphorePermit },
    /// The server is full: it is told so (close 1013) after a short handshake, holding one of the
    /// places for refusals meanwhile.
    Refused { _place: OwnedSemaphorePermit },
}

/// Open connections per client network (see [`auth::throttled_network`]), each at most `limit`.
pub(crate) struct AddressSlots {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limit: usize,
}

/// One connection's place among its address's; given back when dropped.
pub(crate) struct AddressSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    network: IpAddr,
}

impl AddressSlots {
    pub(crate) fn new(limit: usize) -> AddressSlots {
        AddressSlots { open: Arc::default(), limit }
    }

    /// A place for one more connection from `client`, unless its network has `limit` open.
    pub(crate) fn try_take(&self, client: IpAddr) -> Option<AddressSlot> {
        let network = auth::throttled_network(client);
        let mut open = self.open.lock().ok()?;
        let count = open.entry(network).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot { open: self.open.clone(), network })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Ok(mut open) = self.open.lock() else { return };
        if let Some(count) = open.get_mut(&self.network) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.network);
            }
        }
    }
}

/// Serves one accepted TCP connection until it ends. A refused one gets a close frame saying the
/// server is full instead of a silently dropped socket.
///
/// Not an `async fn` itself: one that wrapped an instrumented async block would keep its
/// arguments twice, once of its own and once in the block, in every connection's task.
pub(crate) fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    id: ConnectionId,
    admission: Admission,
    address_slot: Option<AddressSlot>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> {
    let span = tracing::info_span!("connection", id, %peer, client = tracing::field::Empty);
    serve_in_span(stream, peer, id, admission, address_slot, shared, shutdown).instrument(span)
}

async fn serve_in_span(
    stream: TcpStream,
    peer: SocketAddr,
    id: ConnectionId,
    admission: Admission,
    mut address_slot: Option<AddressSlot>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let handshake_timeout = match admission {
        Admission::Admitted { .. } => HANDSHAKE_TIMEOUT,
        Admission::Refused { .. } => REFUSAL_HANDSHAKE_TIMEOUT,
    };
    // Boxed, and its result already split: the handshake's state (with its timer and the wait for
    // shutdown) and the unsplit socket are large and short-lived, and would otherwise be reserved
    // inside every connection's task for as long as it lives.
    let accepted =
        Box::pin(accept_websocket(stream, peer.ip(), &shared.config, handshake_timeout, &shutdown)).await;
    let Some(Accepted { encoding, token, client, sink, mut stream }) = accepted else { return };
    // A trusted proxy's connection is counted against the address it speaks for, now known (in
    // the same variable: a second one would be kept in every connection's future).
    if address_slot.is_none() {
        tracing::Span::current().record("client", tracing::field::display(client));
        address_slot = shared.address_slots.try_take(client);
        if address_slot.is_none() {
            shared.metrics.connection_refused_for_address();
            return;
        }
    }
    let (outbound, queue) = Outbound::new(
        encoding,
        QueueLimits {
            frames: shared.config.outbound_queue,
            bytes: shared.config.outbound_queue_bytes,
            total_bytes: shared.config.outbound_total_bytes,
        },
        shared.metrics.clone(),
    );
    let writer = tokio::spawn(queue.write_to(sink));
    let admitted = matches!(admission, Admission::Admitted { .. });
    if admitted {
        shared.metrics.connection_opened();
    }

    let mut connection = Connection::new(id, client, encoding, outbound.clone(), shared.clone());
    if !admitted {
        outbound.close(proto::close::TRY_AGAIN_LATER, "server full; retry later", false);
    } else if let Some(token) = token {
        Box::pin(connection.authenticate_at_handshake(&token)).await;
    }
    let unread_input = connection.run(&mut stream, &shutdown).await;
    let account_id = connection.session.as_ref().map(|session| session.account_id);
    connection.end();
    if let Some(account_id) = account_id {
        Box::pin(matchmaking_requests::disconnected(&shared, account_id)).await;
    }
    if admitted {
        shared.metrics.connection_closed();
    }
    drop(admission);
    drop(address_slot);
    // Boxed: the wait for the writer, and what it hands back, would otherwise be reserved in every
    // connection's task for as long as it lives.
    Box::pin(finish_writing(writer, stream, unread_input)).await;
}

/// Waits for the writer to write the close frame and end, and lets the socket go: at once, or,
/// when the client is still sending (`unread_input`), once it has read what the client sends.
async fn finish_writing(
    mut writer: tokio::task::JoinHandle<SplitSink<Socket, Message>>,
    stream: SplitStream<Socket>,
    unread_input: bool,
) {
    // A writer stuck on a client that stopped reading would hold the socket forever.
    match tokio::time::timeout(CLOSE_GRACE, &mut writer).await {
        Ok(Ok(sink)) if unread_input => discard_until_closed(sink, stream).await,
        Ok(_) => {}
        Err(_) => writer.abort(),
    }
}

/// Reads and throws away what the client still sends, until it closes or for [`CLOSE_GRACE`] at
/// most, after the close frame was written. A frame the WebSocket layer refused (too big,
/// malformed) ends its reading with the rest of the client's bytes unread, and a socket closed
/// with bytes unread is reset by the kernel: the reset can destroy the close frame before the
/// client reads it, and the client then sees 1006 instead of the code that says what it did wrong.
async fn discard_until_closed(sink: SplitSink<Socket, Message>, stream: SplitStream<Socket>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Ok(mut socket) = sink.reunite(stream) else { return };
    let tcp = socket.get_mut();
    // Our end of the conversation is over: the client reads its end, then closes.
    let _ = tcp.shutdown().await;
    let mut discarded = vec![0_u8; DISCARD_CHUNK_BYTES];
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Ok(n_read) = tcp.read(&mut discarded).await
            && n_read > 0
        {}
    })
    .await;
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A connection whose WebSocket handshake succeeded: its two halves and what the handshake agreed on.
struct Accepted {
    encoding: Encoding,
    token: Option<String>,
    /// Where the connection comes from (see [`crate::forwarded`]).
    client: IpAddr,
    sink: SplitSink<Socket, Message>,
    stream: SplitStream<Socket>,
}

/// The WebSocket handshake, within `timeout` and unless the server shuts down first; `None` when
/// it failed (the client was told why where it could be).
async fn accept_websocket(
    stream: TcpStream,
    peer: IpAddr,
    config: &GatewayConfig,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Option<Accepted> {
    let _ = stream.set_nodelay(true);
    let mut handshake = Handshake::default();
    let socket_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_bytes)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    #[allow(clippy::result_large_err, reason = "the error type is tungstenite's callback contract")]
    let accept = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &HttpRequest, response: HttpResponse| handshake.negotiate(request, response),
        Some(socket_config),
    );
    let done = tokio::select! {
        done = tokio::time::timeout(timeout, accept) => done,
        () = shutdown.cancelled() => return None,
    };
    let socket = match done {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => {
            tracing::debug!(%error, "handshake refused or failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("handshake timed out");
            return None;
        }
    };
    let encoding = handshake.encoding?;
    let client =
        crate::forwarded::client_address(peer, handshake.forwarded_for.as_deref(), &config.trusted_proxies);
    let (sink, stream) = socket.split();
    Some(Accepted { encoding, token: handshake.token, client, sink, stream })
}

/// What the handshake agreed on.
#[derive(Default)]
struct Handshake {
    encoding: Option<Encoding>,
    token: Option<String>,
    /// Every `X-Forwarded-For` line, joined in order.
    forwarded_for: Option<String>,
}

impl Handshake {
    /// Picks the first offered subprotocol this server speaks and reads the token from the
    /// `Authorization: Bearer` header or the `token` query parameter (browsers cannot set headers).
    #[allow(clippy::result_large_err, reason = "the error type is tungstenite's callback contract")]
    fn negotiate(
        &mut self,
        request: &HttpRequest,
        mut response: HttpResponse,
    ) -> Result<HttpResponse, ErrorResponse> {
        let offered: Vec<&str> = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let Some((name, encoding)) = offered
            .iter()
            .find_map(|name| Encoding::from_subprotocol(name).map(|encoding| (*name, encoding)))
        else {
            let message = format!(
                "unsupported protocol: offered [{}]; this server speaks protocol version {} as {} or {}",
                offered.join(", "),
                proto::PROTOCOL_VERSION,
                proto::SUBPROTOCOL_BINCODE,
                proto::SUBPROTOCOL_JSON,
            );
            let mut refusal = ErrorResponse::new(Some(message));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            return Err(refusal);
        };
        if let Ok(value) = HeaderValue::from_str(name) {
            response.headers_mut().insert("Sec-WebSocket-Protocol", value);
        }
        self.encoding = Some(encoding);
        self.token = bearer_token(request).or_else(|| query_token(request));
        self.forwarded_for = forwarded_for(request);
        Ok(response)
    }
}

fn bearer_token(request: &HttpRequest) -> Option<String> {
    let value = request.headers().get("Authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

fn forwarded_for(request: &HttpRequest) -> Option<String> {
    let lines: Vec<&str> =
        request.headers().get_all("X-Forwarded-For").iter().filter_map(|value| value.to_str().ok()).collect();
    (!lines.is_empty()).then(|| lines.join(","))
}

fn query_token(request: &HttpRequest) -> Option<String> {
    request.uri().query()?.split('&').find_map(|pair| pair.strip_prefix("token=").map(str::to_owned))
}

/// Requests a connection may send per second, with a burst allowance: a token bucket.
struct RequestBudget {
    tokens: f64,
    capacity: f64,
    per_sec: f64,
    updated: Instant,
}

impl RequestBudget {
    fn new(per_sec: u32, burst: u32) -> Self {
        let capacity = f64::from(burst.max(1));
        Self { tokens: capacity, capacity, per_sec: f64::from(per_sec), updated: Instant::now() }
    }

    fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.updated).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Connection {
    id: ConnectionId,
    /// The client's address, which the per-address login and registration limits count.
    client: IpAddr,
    encoding: Encoding,
    outbound: Outbound,
    shared: Arc<Shared>,
    session: Option<auth::Session>,
    budget: RequestBudget,
    /// The figures of the last request kind answered: a connection mostly repeats one kind, so
    /// this spares a shared lookup per request.
    last_kind: Option<(&'static str, Arc<RequestKindStats>)>,
}

impl Connection {
    fn new(
        id: ConnectionId,
        client: IpAddr,
        encoding: Encoding,
        outbound: Outbound,
        shared: Arc<Shared>,
    ) -> Self {
        let budget = RequestBudget::new(shared.config.requests_per_sec, shared.config.request_burst);
        Connection { id, client, encoding, outbound, shared, session: None, budget, last_kind: None }
    }

    async fn authenticate_at_handshake(&mut self, token: &str) {
        match self.shared.auth.validate_token(token).await {
            Ok(session) => {
                // Registered first, as a login is: a departure from another process heard in
                // between then finds the player here.
                let account_id = session.account_id;
                self.authenticate(session);
                matchmaking_requests::connected(&self.shared, account_id).await;
            }
            Err(auth::AuthError::InvalidSession) => {
                self.outbound.close(
                    proto::close::INVALID_TOKEN,
                    "the session token is invalid or expired",
                    false,
                );
            }
            Err(error) => {
                let body = errors::from_auth(&error);
                self.outbound.close(proto::close::TRY_AGAIN_LATER, &body.message, false);
            }
        }
    }

    /// Serves the connection until it closes. Returns whether reading stopped at a frame the
    /// WebSocket layer refused, with the client still sending (see [`discard_until_closed`]).
    async fn run<S>(&mut self, mut stream: S, shutdown: &CancellationToken) -> bool
    where
        S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
    {
        let config = &self.shared.config;
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + config.heartbeat_interval, config.heartbeat_interval);
        let idle_timeout = config.idle_timeout;
        // Heartbeats in a row that found no session (none yet, or logged out): the login timeout
        // counts in heartbeats, so a connection keeps no clock of its own for it.
        let mut heartbeats_without_session: u32 = 0;
        let mut last_heard = Instant::now();
        // The payload of the last heartbeat's Ping while it is unanswered: only a Pong echoing it
        // says the client reads. Unguessable, so a client that does not read cannot fake one.
        let ping_keys = std::collections::hash_map::RandomState::new();
        let mut n_heartbeats: u64 = 0;
        let mut awaited_pong: Option<[u8; 8]> = None;
        let mut unread_input = false;
        let mut ping_budget = RequestBudget::new(PINGS_PER_SEC, PING_BURST);
        let closing = self.outbound.closing().clone();
        // Created once, not per loop turn: each new cancellation future registers with its token
        // and unregisters when dropped, two locks per frame for nothing. The server-wide token is
        // shared by every connection, so each gets its own child to keep them off one lock.
        let closed = closing.cancelled();
        let shutdown = shutdown.child_token();
        let shutting_down = shutdown.cancelled();
        tokio::pin!(closed, shutting_down);
        loop {
            tokio::select! {
                // In this order: a connection being closed (kicked when its session was revoked,
                // say) runs none of the frames it has read but not yet handled.
                biased;
                () = &mut closed => break,
                () = &mut shutting_down => {
                    self.outbound.close(proto::close::GOING_AWAY, "server shutting down", true);
                    break;
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() >= idle_timeout {
                        self.outbound.close(proto::close::IDLE_TIMEOUT, "nothing heard within the idle timeout", false);
                        break;
                    }
                    heartbeats_without_session = if self.session.is_some() { 0 } else { heartbeats_without_session + 1 };
                    if self.shared.config.heartbeat_interval * heartbeats_without_session >= self.shared.config.login_timeout {
                        self.outbound.close(proto::close::LOGIN_TIMEOUT, "no login within the login timeout", false);
                        break;
                    }
                    n_heartbeats += 1;
                    let payload = std::hash::BuildHasher::hash_one(&ping_keys, n_heartbeats).to_le_bytes();
                    self.outbound.send_frame(Message::Ping(payload.to_vec().into()));
                    awaited_pong = Some(payload);
                    Box::pin(self.revalidate()).await;
                }
                frame = stream.next() => {
                    match frame {
                        None => break,
                        Some(Ok(message)) => {
                            // Heard: a request, a close, or the pong to our ping; the client's own
                            // pings and unsolicited pongs say nothing of whether it reads.
                            match &message {
                                Message::Ping(_) | Message::Frame(_) => {}
                                Message::Pong(payload) => {
                                    if awaited_pong.is_some_and(|awaited| awaited[..] == payload[..]) {
                                        last_heard = Instant::now();
                                        awaited_pong = None;
                                    }
                                }
                                _ => last_heard = Instant::now(),
                            }
                            match message {
                                Message::Binary(bytes) => self.on_frame(&bytes, Encoding::Bincode).await,
                                Message::Text(text) => self.on_frame(text.as_bytes(), Encoding::Json).await,
                                Message::Close(_) => {
                                    self.outbound.close(proto::close::NORMAL, "closed by the client", true);
                                    break;
                                }
                                Message::Ping(_) if !ping_budget.try_take() => {
                                    self.outbound.close(
                                        proto::close::POLICY_VIOLATION,
                                        "pings over the ping rate limit",
                                        false,
                                    );
                                    break;
                                }
                                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                            }
                        }
                        Some(Err(error)) => {
                            unread_input = self.on_read_error(&error);
                            break;
                        }
                    }
                }
            }
        }
        if closing.is_cancelled() && !unread_input {
            // Keep reading briefly so the client gets our close frame and can answer it.
            let _ =
                tokio::time::timeout(CLOSE_GRACE, async { while let Some(Ok(_)) = stream.next().await {} })
                    .await;
        }
        unread_input
    }

    /// Closes the connection with the code that says what the client did wrong; returns whether
    /// it did, the client being still there and its bytes after the refused frame unread.
    fn on_read_error(&self, error: &tungstenite::Error) -> bool {
        match error {
            tungstenite::Error::Capacity(_) => {
                tracing::debug!(%error, "oversized frame");
                self.outbound.close(proto::close::MESSAGE_TOO_BIG, "message exceeds the size limit", false);
                true
            }
            // A client gone without a close frame broke no rule: it is a lost connection.
            tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
                tracing::debug!(%error, "connection lost");
                false
            }
            tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => {
                tracing::debug!(%error, "websocket protocol violation");
                self.outbound.close(proto::close::POLICY_VIOLATION, "websocket protocol violation", false);
                true
            }
            _ => {
                tracing::debug!(%error, "connection lost");
                false
            }
        }
    }

    /// Checks now and then that the session still stands (revocations missed while the bus was
    /// down, expiry); a store outage is not the client's fault and does not disconnect.
    async fn revalidate(&mut self) {
        let Some(session) = &self.session else { return };
        match self.shared.auth.validate(&session.key).await {
            Ok(_) => {}
            Err(auth::AuthError::InvalidSession) => {
                self.outbound.kick(proto::close::SESSION_EXPIRED, "the session expired or was revoked");
            }
            Err(error) => tracing::warn!(%error, "could not revalidate the session"),
        }
    }

    async fn on_frame(&mut self, bytes: &[u8], frame_encoding: Encoding) {
        let started = Instant::now();
        if !self.budget.try_take() {
            let id = codec::peek_request_id(frame_encoding, bytes);
            self.respond(
                id,
                Outcome::Error(ErrorBody::new(ErrorCode::RateLimited, "request rate limit exceeded")),
            );
            self.shared.metrics.request("rejected", ErrorCode::RateLimited.as_str(), started.elapsed());
            return;
        }
        if frame_encoding != self.encoding {
            let id = codec::peek_request_id(frame_encoding, bytes);
            let message = match self.encoding {
                Encoding::Bincode => "this connection speaks bincode in binary frames",
                Encoding::Json => "this connection speaks JSON in text frames",
            };
            self.respond(id, Outcome::Error(ErrorBody::new(ErrorCode::BadRequest, message)));
            self.shared.metrics.request("malformed", ErrorCode::BadRequest.as_str(), started.elapsed());
            return;
        }
        let ClientMessage { id, request } = match codec::decode(self.encoding, bytes) {
            Ok(message) => message,
            Err(error) => {
                let id = codec::peek_request_id(self.encoding, bytes);
                let body =
                    ErrorBody::new(ErrorCode::BadRequest, format!("malformed or unknown message: {error}"));
                self.respond(id, Outcome::Error(body));
                self.shared.metrics.request("malformed", ErrorCode::BadRequest.as_str(), started.elapsed());
                return;
            }
        };
        let kind = request.kind();
        // Boxed: the largest request future (a login) would otherwise be part of every idle
        // connection's task, costing its size in memory for each of thousands of connections.
        let outcome = Box::pin(self.handle(request)).await;
        let label = match &outcome {
            Outcome::Ok(_) => "ok",
            Outcome::Error(body) => body.code.as_str(),
        };
        self.record_request(kind, label, started.elapsed());
        self.respond(id, outcome);
    }

    fn record_request(&mut self, kind: &'static str, outcome: &'static str, elapsed: Duration) {
        match &self.last_kind {
            Some((last, stats)) if std::ptr::eq(*last, kind) => stats.record(outcome, elapsed),
            _ => {
                let stats = self.shared.metrics.request_kind(kind);
                stats.record(outcome, elapsed);
                self.last_kind = Some((kind, stats));
            }
        }
    }

    fn respond(&self, id: u64, outcome: Outcome) {
        self.outbound.send(&ServerMessage::Response(Response { id, outcome }));
    }

    async fn handle(&mut self, request: Request) -> Outcome {
        let was_authenticated = self.session.is_some();
        let result = self.apply(request).await;
        if let (false, Some(session)) = (was_authenticated, &self.session) {
            matchmaking_requests::connected(&self.shared, session.account_id).await;
        }
        match result {
            Ok(reply) => Outcome::Ok(reply),
            Err(body) => Outcome::Error(body),
        }
    }

    async fn apply(&mut self, request: Request) -> Result<Reply, ErrorBody> {
        let auth = self.shared.auth.clone();
        // Registering is allowed with or without a session: it does not log in.
        if let Request::Register { username, password } = request {
            let account = auth
                .register_from(&username, &password, self.client)
                .await
                .map_err(|e| errors::from_auth(&e))?;
            return Ok(Reply::Registered { account_id: proto::AccountId(account.account_id) });
        }
        // Only the account id is copied per request; the rare requests that need the session
        // itself clone it where they use it.
        let Some(account_id) = self.session.as_ref().map(|session| session.account_id) else {
            return match request {
                Request::Login { username, password } => {
                    let issued = auth
                        .login(&username, &password, self.client)
                        .await
                        .map_err(|e| errors::from_auth(&e))?;
                    let reply = self.start_session(issued.session, issued.token);
                    // The oldest sessions this login ended to keep the account within its cap.
                    self.announce_revoked(&issued.ended).await;
                    Ok(reply)
                }
                Request::Resume { token } => {
                    let session = auth.validate_token(&token).await.map_err(|e| errors::from_auth(&e))?;
                    Ok(self.start_session(session, token))
                }
                _ => Err(ErrorBody::new(ErrorCode::Unauthorized, "log in first")),
            };
        };
        match request {
            Request::Register { .. } | Request::Login { .. } | Request::Resume { .. } => Err(ErrorBody::new(
                ErrorCode::Conflict,
                "this connection is already logged in; log out first",
            )),
            Request::Refresh => {
                let key = self.current_session()?.key;
                let issued = match auth.refresh(&key).await {
                    Ok(issued) => issued,
                    Err(error @ auth::AuthError::InvalidSession) => {
                        // The session ended (expired, or revoked before this connection heard):
                        // nothing more is served on it, as after a logout.
                        self.logged_out(account_id, &[key]).await;
                        return Err(errors::from_auth(&error));
                    }
                    Err(error) => return Err(errors::from_auth(&error)),
                };
                let reply = self.start_session(issued.session, issued.token);
                self.announce_revoked(&[key]).await;
                Ok(reply)
            }
            Request::Logout => {
                let session = self.current_session()?;
                auth.logout(&session).await.map_err(|e| errors::from_auth(&e))?;
                self.logged_out(account_id, &[session.key]).await;
                Ok(Reply::LoggedOut)
            }
            Request::LogoutEverywhere => {
                let ended = auth.logout_everywhere(account_id).await.map_err(|e| errors::from_auth(&e))?;
                self.logged_out(account_id, &ended).await;
                Ok(Reply::LoggedOut)
            }
            Request::Whoami => {
                let account = auth.account(account_id).await.map_err(|e| errors::from_auth(&e))?;
                Ok(Reply::Account(proto::AccountInfo {
                    account_id: proto::AccountId(account.account_id),
                    username: account.username,
                    created_at_ms: account.created_at_ms,
                }))
            }
            Request::Ping => Ok(Reply::Pong { server_time_ms: self.shared.clock.now_ms() }),
            Request::UpdateState(update) => {
                player_requests::update(&self.shared.players, account_id, update).await
            }
            Request::GetState => player_requests::get_own(&self.shared.players, account_id).await,
            Request::GetPlayerState { account_id } => {
                player_requests::get_public(&self.shared.players, account_id.0).await
            }
            Request::Chat(request) => chat_requests::apply(&self.shared, account_id, request).await,
            Request::Inventory(request) => {
                inventory_requests::handle(&self.shared, account_id, request).await
            }
            Request::Match(request) => matchmaking_requests::handle(&self.shared, account_id, request).await,
        }
    }

    /// A copy of the connection's session, for the requests that act on the session itself.
    fn current_session(&self) -> Result<auth::Session, ErrorBody> {
        self.session.clone().ok_or_else(|| ErrorBody::new(ErrorCode::Unauthorized, "log in first"))
    }

    /// Tells every gateway to close connections using these (already deleted) sessions. If the
    /// bus is down the request has still succeeded: those connections find their session gone at
    /// their next heartbeat.
    async fn announce_revoked(&self, keys: &[auth::SessionKey]) {
        if let Err(error) = self.shared.hub.revoke(keys).await {
            tracing::warn!(%error, "could not announce revoked sessions; heartbeats will catch them");
        }
    }

    /// After a logout: the connection has no session any more, the `revoked` sessions are
    /// announced to every process, and a queued ticket of the account is set aside as after a
    /// disconnect (logged out is gone, as far as matchmaking is concerned).
    async fn logged_out(&mut self, account_id: uuid::Uuid, revoked: &[auth::SessionKey]) {
        self.end_session();
        self.announce_revoked(revoked).await;
        matchmaking_requests::disconnected(&self.shared, account_id).await;
    }

    /// Authenticates the connection with `session` and answers with what the client must keep.
    fn start_session(&mut self, session: auth::Session, token: String) -> Reply {
        let info = proto::SessionInfo {
            account_id: proto::AccountId(session.account_id),
            username: session.username.clone(),
            token,
            idle_timeout_secs: self.shared.config.session_idle_ttl.as_secs(),
            expires_at_ms: session.expires_at_ms,
        };
        self.authenticate(session);
        Reply::Session(info)
    }

    fn authenticate(&mut self, session: auth::Session) {
        self.end_session();
        tracing::debug!(account_id = %session.account_id, "authenticated");
        self.shared.hub.register(self.id, session.account_id, session.key.clone(), self.outbound.clone());
        self.shared.metrics.authenticated(true);
        self.session = Some(session);
    }

    fn end_session(&mut self) {
        if self.session.take().is_some() {
            self.shared.hub.unregister(self.id);
            self.shared.metrics.authenticated(false);
        }
    }

    fn end(mut self) {
        self.end_session();
        tracing::debug!(encoding = ?self.encoding, "connection ended");
    }
}
