//! A lean WebSocket connection for load generation: one task owns the socket, sends requests with
//! fresh ids and reads responses, with no background tasks or locks per connection (the load
//! generator shares the machine with the server, so its own cost matters).
//!
//! It speaks the same protocol as `game_client::Client`, but connects over a `TcpStream` it built
//! itself, so each connection can be bound to a chosen local address (`--source-addr`) before it
//! connects: one source address only has about 28,000 ephemeral ports.

use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use proto::{ClientMessage, Encoding, Outcome, Request, Response, ServerMessage, codec};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// Read buffer per connection: game frames are small, and 10,000 idle connections with
/// tungstenite's 128 KiB default would cost the load generator over a gigabyte.
const READ_BUFFER_BYTES: usize = 4096;

/// Why a connection or request failed on the client side (server errors arrive as [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The target URL is not a `ws://host:port/` URL.
    #[error("bad target: {0}")]
    Target(String),
    /// Resolving, binding or connecting the TCP socket failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The WebSocket handshake or transport failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// The server closed the connection, with this close code if it sent one.
    #[error("closed by the server (code {code:?})")]
    Closed {
        /// The close code of the server's close frame.
        code: Option<u16>,
    },
    /// A frame did not decode or a reply was of the wrong kind.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
}

impl ConnError {
    /// A short stable label for reports (`connect`, `closed_4005`, `timeout`, ...).
    pub fn label(&self) -> String {
        match self {
            ConnError::Target(_) => "bad_target".into(),
            ConnError::Connect(_) => "connect".into(),
            ConnError::WebSocket(_) => "websocket".into(),
            ConnError::Closed { code: Some(code) } => format!("closed_{code}"),
            ConnError::Closed { code: None } => "closed".into(),
            ConnError::Protocol(_) => "protocol".into(),
            ConnError::Timeout => "timeout".into(),
        }
    }
}

/// One WebSocket connection to a gateway.
pub struct Connection {
    socket: WebSocketStream<TcpStream>,
    encoding: Encoding,
    next_id: u64,
}

impl Connection {
    /// Connects to `target` (`ws://host:port/`) from `source` (any local address if `None`),
    /// asking for `encoding`.
    ///
    /// # Errors
    /// [`ConnError`] when the URL is bad, the socket cannot be bound or connected, or the
    /// handshake fails.
    pub async fn open(
        target: &str,
        source: Option<IpAddr>,
        encoding: Encoding,
    ) -> Result<Connection, ConnError> {
        let mut request = target.into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(encoding.subprotocol()));
        let uri = request.uri();
        let host = uri.host().ok_or_else(|| ConnError::Target(target.to_owned()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let address = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(ConnError::Connect)?
            .next()
            .ok_or_else(|| ConnError::Target(target.to_owned()))?;
        let socket = if address.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(ConnError::Connect)?;
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0)).map_err(ConnError::Connect)?;
        }
        let stream = socket.connect(address).await.map_err(ConnError::Connect)?;
        stream.set_nodelay(true).map_err(ConnError::Connect)?;
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES).write_buffer_size(0);
        let (socket, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
        Ok(Connection { socket, encoding, next_id: 1 })
    }

    /// Sends `request` under a fresh id and returns the id.
    ///
    /// # Errors
    /// [`ConnError`] when the connection is broken.
    pub async fn send(&mut self, request: Request) -> Result<u64, ConnError> {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = codec::encode(self.encoding, &ClientMessage { id, request })
            .map_err(|error| ConnError::Protocol(error.to_string()))?;
        let message = match self.encoding {
            Encoding::Bincode => Message::Binary(bytes.into()),
            Encoding::Json => Message::Text(
                String::from_utf8(bytes).map_err(|error| ConnError::Protocol(error.to_string()))?.into(),
            ),
        };
        self.socket.send(message).await?;
        Ok(id)
    }

    /// The next response, skipping server events. Cancel-safe: frames stay buffered.
    ///
    /// # Errors
    /// As [`Connection::recv_message`].
    pub async fn recv(&mut self) -> Result<Response, ConnError> {
        loop {
            if let ServerMessage::Response(response) = self.recv_message().await? {
                return Ok(response);
            }
        }
    }

    /// The next message from the server, response or event (for scenarios that listen to events,
    /// such as chat deliveries or trade offers). A frame that does not decode and is not a
    /// response (a newer server's event, say) is skipped, as PROTOCOL.md §9 asks of clients.
    /// Cancel-safe: frames stay buffered.
    ///
    /// # Errors
    /// [`ConnError::Closed`] when the server closed the connection; [`ConnError::Protocol`] for a
    /// response that does not decode, whose request's outcome is then unknown.
    pub async fn recv_message(&mut self) -> Result<ServerMessage, ConnError> {
        loop {
            let bytes = match self.socket.next().await {
                None => return Err(ConnError::Closed { code: None }),
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(Message::Binary(bytes))) => bytes,
                Some(Ok(Message::Text(text))) => text.into(),
                Some(Ok(Message::Close(frame))) => {
                    return Err(ConnError::Closed { code: frame.map(|frame| u16::from(frame.code)) });
                }
                Some(Ok(_)) => continue,
            };
            match codec::decode::<ServerMessage>(self.encoding, &bytes) {
                Ok(message) => return Ok(message),
                Err(error) if codec::peek_response_id(self.encoding, &bytes).is_some() => {
                    return Err(ConnError::Protocol(format!("undecodable response: {error}")));
                }
                Err(error) => tracing::debug!(%error, "skipped an undecodable frame from the server"),
            }
        }
    }

    /// Sends `request` and waits for its response.
    ///
    /// # Errors
    /// As [`Connection::send`] and [`Connection::recv`].
    pub async fn call(&mut self, request: Request) -> Result<Outcome, ConnError> {
        let id = self.send(request).await?;
        loop {
            let response = self.recv().await?;
            if response.id == id {
                return Ok(response.outcome);
            }
        }
    }

    /// Sends a normal close frame; does not wait for the server's.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
