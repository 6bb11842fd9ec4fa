//! A typed async Rust client for the gateway's WebSocket protocol.
//!
//! Owns: the client side of a connection: the handshake (subprotocol, optional token), sending
//! requests with fresh ids and matching each response to its request, and handing server events
//! to the caller in order. The integration tests and the load test use it, so it speaks exactly
//! what `PROTOCOL.md` says and nothing more.
//!
//! Never: retries, reconnects or caches on its own; a caller that wants those builds them on top.
//! It also offers raw frame access ([`Client::send_raw`]) so tests can send what a buggy client would.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::{
    AccountInfo, ClientMessage, Encoding, ErrorBody, Event, Outcome, Reply, Request, ServerMessage,
    SessionInfo, codec,
};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

/// Why a request or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered the request with an error.
    #[error("server error {0}")]
    Server(ErrorBody),
    /// The WebSocket handshake or transport failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// The connection closed before the response arrived; carries the close code and reason if any.
    #[error("connection closed ({code:?}: {reason})")]
    Closed {
        /// The close code the server sent, if it sent one.
        code: Option<u16>,
        /// The close reason the server sent.
        reason: String,
    },
    /// A frame from the server did not decode, or the reply was of an unexpected kind.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, if the server answered with an error.
    pub fn code(&self) -> Option<proto::ErrorCode> {
        match self {
            ClientError::Server(body) => Some(body.code),
            _ => None,
        }
    }
}

/// How the connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code, if the server sent a close frame.
    pub code: Option<u16>,
    /// The close reason.
    pub reason: String,
}

/// Options for [`Client::connect_with`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The encoding to ask for. The connection speaks the one the server chooses (see
    /// [`Client::encoding`]), which differs only when `subprotocols` offers others.
    pub encoding: Encoding,
    /// A session token to authenticate with at the handshake.
    pub token: Option<String>,
    /// Subprotocol names to ask for instead of the encoding's (for tests of negotiation).
    pub subprotocols: Option<Vec<String>>,
    /// More handshake headers, by name and value (for tests of what a proxy adds).
    pub headers: Vec<(String, String)>,
}

impl ConnectOptions {
    /// Plain options for `encoding`.
    pub fn new(encoding: Encoding) -> Self {
        Self { encoding, token: None, subprotocols: None, headers: Vec::new() }
    }
}

/// How long the reader goes on reading after the server's Close, so the client's answering Close
/// goes out and the server can end the connection at once.
const CLOSE_ANSWER_WAIT: Duration = Duration::from_secs(1);

type Pending = Arc<Mutex<Responses>>;

/// Responses on their way to the callers waiting for them.
#[derive(Debug, Default)]
struct Responses {
    /// The callers waiting, by request id.
    waiters: HashMap<u64, oneshot::Sender<Answer>>,
    /// Responses read before anyone waited for them, oldest first per id: the answer to a frame
    /// sent with [`Client::send_raw`] may come before [`Client::expect_response`] is called.
    early: HashMap<u64, VecDeque<Answer>>,
}

/// A response as the reader hands it over: the outcome, or why it could not be read.
type Answer = Result<Outcome, ClientError>;

impl Responses {
    /// Hands `answer` to whoever waits for `id`, or keeps it for them.
    fn deliver(&mut self, id: u64, answer: Answer) {
        match self.waiters.remove(&id) {
            Some(waiter) => {
                let _ = waiter.send(answer);
            }
            None => self.early.entry(id).or_default().push_back(answer),
        }
    }
}

/// One connection to a gateway.
#[derive(Debug)]
pub struct Client {
    encoding: Encoding,
    next_id: AtomicU64,
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    events: Mutex<mpsc::UnboundedReceiver<Event>>,
    closed: Arc<Mutex<Option<CloseInfo>>>,
    closed_notify: Arc<tokio::sync::Notify>,
}

impl Client {
    /// Connects to `url` (`ws://host:port/`) speaking `encoding`.
    ///
    /// # Errors
    /// The handshake failed: unreachable server, refused subprotocol or token.
    pub async fn connect(url: &str, encoding: Encoding) -> Result<Client, ClientError> {
        Self::connect_with(url, ConnectOptions::new(encoding)).await
    }

    /// Connects with explicit options.
    ///
    /// # Errors
    /// The handshake failed: unreachable server, refused subprotocol or token;
    /// [`ClientError::Protocol`] when the subprotocol the server chose names no encoding.
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Client, ClientError> {
        let mut request = url.into_client_request()?;
        let protocols =
            options.subprotocols.clone().unwrap_or_else(|| vec![options.encoding.subprotocol().to_string()]);
        let header = |value: String| {
            HeaderValue::from_str(&value).map_err(|error| ClientError::Protocol(error.to_string()))
        };
        request.headers_mut().insert("Sec-WebSocket-Protocol", header(protocols.join(", "))?);
        if let Some(token) = &options.token {
            request.headers_mut().insert("Authorization", header(format!("Bearer {token}"))?);
        }
        for (name, value) in &options.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|error| ClientError::Protocol(error.to_string()))?;
            request.headers_mut().append(name, header(value.clone())?);
        }
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (socket, response) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
        // The server picks from the names offered; its echo, not the caller's wish, says what the
        // connection speaks (tungstenite has already checked that the echo was offered).
        let chosen = response.headers().get("Sec-WebSocket-Protocol").and_then(|name| name.to_str().ok());
        let encoding = chosen.and_then(Encoding::from_subprotocol).ok_or_else(|| {
            ClientError::Protocol(format!("the server chose {chosen:?}, which names no encoding"))
        })?;
        let (mut sink, mut stream) = socket.split();

        let (outgoing, mut outgoing_rx) = mpsc::unbounded_channel::<Message>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let closed: Arc<Mutex<Option<CloseInfo>>> = Arc::default();
        let closed_notify = Arc::new(tokio::sync::Notify::new());

        tokio::spawn(async move {
            while let Some(message) = outgoing_rx.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let reader_pending = pending.clone();
        let reader_closed = closed.clone();
        let reader_notify = closed_notify.clone();
        tokio::spawn(async move {
            let mut close = CloseInfo { code: None, reason: "connection dropped".into() };
            while let Some(frame) = stream.next().await {
                let bytes = match frame {
                    Ok(Message::Binary(bytes)) => bytes.to_vec(),
                    Ok(Message::Text(text)) => text.as_bytes().to_vec(),
                    Ok(Message::Close(frame)) => {
                        close = match frame {
                            Some(frame) => {
                                CloseInfo { code: Some(frame.code.into()), reason: frame.reason.to_string() }
                            }
                            None => CloseInfo { code: None, reason: String::new() },
                        };
                        break;
                    }
                    Ok(_) => continue,
                    Err(error) => {
                        close.reason = error.to_string();
                        break;
                    }
                };
                match codec::decode::<ServerMessage>(encoding, &bytes) {
                    Ok(ServerMessage::Response(response)) => {
                        reader_pending.lock().await.deliver(response.id, Ok(response.outcome));
                    }
                    Ok(ServerMessage::Event(event)) => {
                        let _ = events_tx.send(event);
                    }
                    // A response this client cannot read (a newer server's error code, say) still
                    // ends its request; an event it cannot read is skipped, as PROTOCOL.md asks.
                    Err(error) => match codec::peek_response_id(encoding, &bytes) {
                        Some(id) => {
                            let error = ClientError::Protocol(format!("undecodable response: {error}"));
                            reader_pending.lock().await.deliver(id, Err(error));
                        }
                        None => tracing::warn!(%error, "undecodable frame from server"),
                    },
                }
            }
            *reader_closed.lock().await = Some(close);
            // Dropping the waiters tells every pending request that the connection closed, and
            // dropping the sender of events ends `next_event` once the events are read.
            reader_pending.lock().await.waiters.clear();
            drop(events_tx);
            reader_notify.notify_waiters();
            // tungstenite sends the Close that answers the server's on the next read, so read on
            // until the server ends the connection (RFC 6455 §5.5.1), or for a moment at most.
            let _ = tokio::time::timeout(CLOSE_ANSWER_WAIT, async {
                while let Some(Ok(_)) = stream.next().await {}
            })
            .await;
        });

        Ok(Client {
            encoding,
            next_id: AtomicU64::new(1),
            outgoing,
            pending,
            events: Mutex::new(events),
            closed,
            closed_notify,
        })
    }

    /// The encoding this connection speaks: the one whose subprotocol the server chose.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Sends `request` and waits for its response.
    ///
    /// # Errors
    /// [`ClientError::Server`] when the server answered with an error; [`ClientError::Closed`] when
    /// the connection ended first; [`ClientError::Protocol`] when the response did not decode.
    pub async fn request(&self, request: Request) -> Result<Reply, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match self.request_with_id(id, request).await? {
            Outcome::Ok(reply) => Ok(reply),
            Outcome::Error(body) => Err(ClientError::Server(body)),
        }
    }

    /// Sends `request` under a caller-chosen id and returns the raw outcome.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the connection ended before the response;
    /// [`ClientError::Protocol`], without sending, when a request with this id still awaits its
    /// response, or when the response did not decode.
    pub async fn request_with_id(&self, id: u64, request: Request) -> Result<Outcome, ClientError> {
        let bytes = codec::encode(self.encoding, &ClientMessage { id, request })
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        let response = self.register_waiter(id, true).await?;
        self.send_raw(self.frame(bytes)).await?;
        match response.await {
            Ok(answer) => answer,
            Err(_) => Err(self.closed_error().await),
        }
    }

    /// Waits for the response with `id` to a frame sent with [`Client::send_raw`], or takes it if it
    /// has already come (the oldest one not yet taken, when several came with this id, such as
    /// [`proto::UNKNOWN_REQUEST_ID`]). Responses nobody asks for are kept until the client is dropped.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the connection ended before the response;
    /// [`ClientError::Protocol`] when something else already awaits the response with this id, or
    /// when the response did not decode.
    pub async fn expect_response(&self, id: u64) -> Result<Outcome, ClientError> {
        let response = self.register_waiter(id, false).await?;
        match response.await {
            Ok(answer) => answer,
            Err(_) => Err(self.closed_error().await),
        }
    }

    /// Sends a raw WebSocket message, bypassing the encoder.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the connection has ended.
    pub async fn send_raw(&self, message: Message) -> Result<(), ClientError> {
        if self.outgoing.send(message).is_err() {
            return Err(self.closed_error().await);
        }
        Ok(())
    }

    /// The next server event, or `None` once the connection has closed and all events are read.
    pub async fn next_event(&self) -> Option<Event> {
        self.events.lock().await.recv().await
    }

    /// Waits until the server closes the connection and says how.
    pub async fn closed(&self) -> CloseInfo {
        loop {
            let notified = self.closed_notify.notified();
            if let Some(info) = self.closed.lock().await.clone() {
                return info;
            }
            notified.await;
        }
    }

    /// Closes the connection with a normal close frame (code 1000); the server answers in kind.
    pub async fn close(&self) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = self.outgoing.send(Message::Close(Some(frame)));
    }

    /// Registers an account.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn register(&self, username: &str, password: &str) -> Result<proto::AccountId, ClientError> {
        match self.request(Request::Register { username: username.into(), password: password.into() }).await?
        {
            Reply::Registered { account_id } => Ok(account_id),
            other => Err(unexpected(&other)),
        }
    }

    /// Logs in and authenticates this connection.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn login(&self, username: &str, password: &str) -> Result<SessionInfo, ClientError> {
        session(self.request(Request::Login { username: username.into(), password: password.into() }).await?)
    }

    /// Authenticates this connection with an existing session token.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn resume(&self, token: &str) -> Result<SessionInfo, ClientError> {
        session(self.request(Request::Resume { token: token.into() }).await?)
    }

    /// Rotates this connection's session token.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn refresh(&self) -> Result<SessionInfo, ClientError> {
        session(self.request(Request::Refresh).await?)
    }

    /// Ends this connection's session.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.request(Request::Logout).await.map(drop)
    }

    /// Ends every session of the account.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn logout_everywhere(&self) -> Result<(), ClientError> {
        self.request(Request::LogoutEverywhere).await.map(drop)
    }

    /// Who this connection is logged in as.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn whoami(&self) -> Result<AccountInfo, ClientError> {
        match self.request(Request::Whoami).await? {
            Reply::Account(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// The authenticated round trip that touches no storage; returns the server's clock.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn ping(&self) -> Result<u64, ClientError> {
        match self.request(Request::Ping).await? {
            Reply::Pong { server_time_ms } => Ok(server_time_ms),
            other => Err(unexpected(&other)),
        }
    }

    /// Registers a waiter for the response with `id`. A request about to be sent (`sent_next`)
    /// waits for the answer to come; anyone else first takes an answer that came before them.
    async fn register_waiter(
        &self,
        id: u64,
        sent_next: bool,
    ) -> Result<oneshot::Receiver<Answer>, ClientError> {
        let (waiter, response) = oneshot::channel();
        {
            let mut responses = self.pending.lock().await;
            if sent_next {
                // Answers left unclaimed under this id belong to earlier frames, not to this one.
                responses.early.remove(&id);
            } else if let Some(answer) = responses.early.get_mut(&id).and_then(VecDeque::pop_front) {
                let _ = waiter.send(answer);
                return Ok(response);
            }
            // A second waiter would take the first one's place and leave it waiting for ever.
            if responses.waiters.get(&id).is_some_and(|first| !first.is_closed()) {
                return Err(ClientError::Protocol(format!(
                    "request id {id} is already awaiting its response"
                )));
            }
            responses.waiters.insert(id, waiter);
        }
        // The reader marks the connection closed before it drops the waiters, so a waiter added
        // after that drop is caught here instead of waiting forever.
        if self.closed.lock().await.is_some() {
            self.pending.lock().await.waiters.remove(&id);
            return Err(self.closed_error().await);
        }
        Ok(response)
    }

    fn frame(&self, bytes: Vec<u8>) -> Message {
        match self.encoding {
            Encoding::Bincode => Message::Binary(bytes.into()),
            // The JSON codec only ever produces UTF-8.
            Encoding::Json => Message::Text(String::from_utf8_lossy(&bytes).into_owned().into()),
        }
    }

    async fn closed_error(&self) -> ClientError {
        let info = self.closed().await;
        ClientError::Closed { code: info.code, reason: info.reason }
    }
}

fn session(reply: Reply) -> Result<SessionInfo, ClientError> {
    match reply {
        Reply::Session(info) => Ok(info),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {reply:?}"))
}
