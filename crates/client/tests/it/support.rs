//! A scripted stand-in for the gateway: it accepts one connection, answering the handshake with
//! a subprotocol of the test's choosing, and hands the server's end of the socket to the test,
//! which then reads and writes frames as the case needs (answers the real gateway never sends).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::{ClientMessage, Encoding, ServerMessage, codec};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// How long a test waits for something that should happen at once before it fails.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// The server's end of one connection.
pub struct FakeGateway {
    /// The URL the client connects to.
    pub url: String,
    accepted: JoinHandle<WebSocketStream<TcpStream>>,
}

impl FakeGateway {
    /// Listens on a free port; the connection it accepts is answered with `subprotocol`.
    pub async fn start(subprotocol: &'static str) -> FakeGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let accepted = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            #[allow(
                clippy::result_large_err,
                reason = "the signature tungstenite's handshake callback takes"
            )]
            let choose = |_: &Request, mut response: Response| {
                response
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(subprotocol));
                Ok(response)
            };
            tokio_tungstenite::accept_hdr_async(stream, choose).await.unwrap()
        });
        FakeGateway { url, accepted }
    }

    /// The accepted connection, once the client has connected.
    pub async fn socket(self) -> ServerSocket {
        ServerSocket(self.accepted.await.unwrap())
    }
}

/// The server's end of an accepted connection.
pub struct ServerSocket(WebSocketStream<TcpStream>);

impl ServerSocket {
    /// The next request the client sent, decoded in `encoding`.
    pub async fn next_request(&mut self, encoding: Encoding) -> ClientMessage {
        let frame = tokio::time::timeout(PATIENCE, self.0.next()).await.expect("a request").unwrap().unwrap();
        let bytes = match &frame {
            Message::Binary(bytes) => bytes.to_vec(),
            Message::Text(text) => text.as_bytes().to_vec(),
            other => panic!("expected a request, got {other:?}"),
        };
        codec::decode(encoding, &bytes).expect("a request the codec reads")
    }

    /// Sends `message` in bincode.
    pub async fn send(&mut self, message: &ServerMessage) {
        let bytes = codec::encode(Encoding::Bincode, message).unwrap();
        self.0.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// Sends raw bytes in a binary frame.
    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.0.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// Closes with `code`, as the gateway does when it ends a connection.
    pub async fn close(&mut self, code: u16) {
        let frame = CloseFrame { code: code.into(), reason: "bye".into() };
        self.0.send(Message::Close(Some(frame))).await.unwrap();
    }

    /// The next frame from the client, if one comes within [`PATIENCE`].
    pub async fn next_frame(&mut self) -> Option<Message> {
        tokio::time::timeout(PATIENCE, self.0.next()).await.ok().flatten().and_then(Result::ok)
    }
}
