//! The write side of a connection: a bounded queue of encoded frames drained by one writer task,
//! and the one way to close the connection with a code.
//!
//! The queue is bounded so a client that stops reading costs a fixed amount of memory: when the
//! queue is full the connection is closed as a slow consumer instead of growing.

use std::sync::{Arc, Mutex};

use futures_util::{Sink, SinkExt};
use proto::{Encoding, Event, ServerMessage, codec};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// A request to end the connection.
#[derive(Debug)]
struct CloseRequest {
    code: u16,
    reason: String,
    /// Write what is already queued before the close frame (a kick's event); a slow consumer's
    /// queue is dropped instead.
    flush: bool,
}

/// The sending half, shared by the connection task and the hub. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

struct Inner {
    /// Boxed: the channel keeps blocks of 32 slots per connection once used, and a slot of a
    /// bare `Message` is 64 bytes where a box is 8.
    frames: mpsc::Sender<Box<Message>>,
    encoding: Encoding,
    close: Mutex<Option<oneshot::Sender<CloseRequest>>>,
    closing: CancellationToken,
    metrics: Arc<Metrics>,
}

/// The receiving half, owned by the writer task.
pub struct OutboundQueue {
    frames: mpsc::Receiver<Box<Message>>,
    close: oneshot::Receiver<CloseRequest>,
}

impl Outbound {
    /// A queue of at most `capacity` frames for a connection speaking `encoding`.
    pub fn new(encoding: Encoding, capacity: usize, metrics: Arc<Metrics>) -> (Outbound, OutboundQueue) {
        let (frames_tx, frames) = mpsc::channel(capacity);
        let (close_tx, close) = oneshot::channel();
        let inner = Inner {
            frames: frames_tx,
            encoding,
            close: Mutex::new(Some(close_tx)),
            closing: CancellationToken::new(),
            metrics,
        };
        (Outbound { inner: Arc::new(inner) }, OutboundQueue { frames, close })
    }

    /// Queues `message`. A full queue closes the connection as a slow consumer.
    pub fn send(&self, message: &ServerMessage) {
        if let Some(frame) = encode_frame(self.inner.encoding, message) {
            self.send_frame(frame);
        }
    }

    /// The encoding this connection speaks, for callers that encode a frame once for many
    /// connections ([`encode_frame`], then [`Outbound::send_frame`] with a clone).
    pub fn encoding(&self) -> Encoding {
        self.inner.encoding
    }

    /// Queues a frame that is already encoded (or a control frame such as a ping).
    pub fn send_frame(&self, frame: Message) {
        match self.inner.frames.try_send(Box::new(frame)) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(
                    proto::close::SLOW_CONSUMER,
                    "outbound queue full: the client reads too slowly",
                    false,
                );
            }
        }
    }

    /// Queues an event.
    pub fn send_event(&self, event: Event) {
        self.send(&ServerMessage::Event(event));
    }

    /// Tells the client why with a [`Event::Kicked`], then closes with `code`.
    pub fn kick(&self, code: u16, reason: &str) {
        self.send_event(Event::Kicked { code, reason: reason.into() });
        self.close(code, reason, true);
    }

    /// Closes the connection with `code` and `reason`; the first close wins.
    pub fn close(&self, code: u16, reason: &str, flush: bool) {
        let Ok(mut close) = self.inner.close.lock() else { return };
        if let Some(sender) = close.take() {
            self.inner.metrics.closed_with(code);
            let _ = sender.send(CloseRequest { code, reason: reason.into(), flush });
            self.inner.closing.cancel();
        }
    }

    /// Cancelled once a close has been requested.
    pub fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }
}

/// `message` as a frame for connections speaking `encoding`; `None` (logged) if it cannot be
/// encoded. Clones of the frame share its bytes.
pub fn encode_frame(encoding: Encoding, message: &ServerMessage) -> Option<Message> {
    let bytes = match codec::encode(encoding, message) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%error, "could not encode a server message");
            return None;
        }
    };
    Some(match encoding {
        Encoding::Bincode => Message::Binary(bytes.into()),
        Encoding::Json => Message::Text(String::from_utf8(bytes).unwrap_or_default().into()),
    })
}

impl OutboundQueue {
    /// Writes queued frames to `sink` until the connection is closed, batching whatever is queued
    /// into one flush; ends with the requested close frame.
    pub async fn write_to<S>(mut self, mut sink: S)
    where
        S: Sink<Message> + Unpin,
    {
        loop {
            tokio::select! {
                biased;
                request = &mut self.close => {
                    if let Ok(request) = request {
                        if request.flush {
                            while let Ok(frame) = self.frames.try_recv() {
                                if sink.feed(*frame).await.is_err() {
                                    return;
                                }
                            }
                        }
                        let frame = CloseFrame { code: CloseCode::from(request.code), reason: request.reason.into() };
                        let _ = sink.send(Message::Close(Some(frame))).await;
                    }
                    return;
                }
                frame = self.frames.recv() => {
                    let Some(frame) = frame else { return };
                    if sink.feed(*frame).await.is_err() {
                        return;
                    }
                    while let Ok(frame) = self.frames.try_recv() {
                        if sink.feed(*frame).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
