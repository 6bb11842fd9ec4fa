//! The write side of a connection: a bounded queue of encoded frames drained by one writer task,
//! and the one way to close the connection with a code.
//!
//! The queue is bounded in frames and in bytes so a client that stops reading costs a fixed
//! amount of memory: when either is reached the connection is closed as a slow consumer instead
//! of growing. Frames alone would not do: a thousand chat history pages of long messages are
//! hundreds of megabytes.

use std::sync::atomic::{AtomicUsize, Ordering};
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

/// How much one connection's queue holds before the connection counts as slow.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Frames waiting to be written.
    pub frames: usize,
    /// Their bytes; a single larger frame still goes out when nothing else waits.
    pub bytes: usize,
    /// The bytes queued for every connection of the process together: past it, a connection
    /// whose queue is backed up is closed rather than add more.
    pub total_bytes: usize,
}

/// The sending half, shared by the connection task and the hub. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

/// The bytes queued for one connection, and the process's total they are part of.
struct QueuedBytes {
    connection: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// A frame in a connection's queue. Its bytes count against the connection's queue (and, when it
/// waits behind other frames, the process's total) from when it is queued until it leaves the
/// queue, however it leaves: taken by the writer, refused by a full or closed channel, or dropped
/// with a closed connection's queue.
struct Queued {
    frame: Option<Message>,
    len: usize,
    in_total: bool,
    bytes: Arc<QueuedBytes>,
}

impl Queued {
    /// The frame, for the socket; its bytes leave the queue.
    fn into_frame(mut self) -> Message {
        self.frame.take().unwrap_or_else(|| Message::Binary(Default::default()))
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.bytes.connection.fetch_sub(self.len, Ordering::Relaxed);
        if self.in_total {
            self.bytes.metrics.outbound_queued_bytes().fetch_sub(self.len, Ordering::Relaxed);
        }
    }
}

struct Inner {
    /// Boxed: the channel keeps blocks of 32 slots per connection once used, and a slot of a
    /// bare frame is 64 bytes or more where a box is 8.
    frames: mpsc::Sender<Box<Queued>>,
    bytes: Arc<QueuedBytes>,
    max_queued_bytes: usize,
    max_total_queued_bytes: usize,
    encoding: Encoding,
    close: Mutex<Option<oneshot::Sender<CloseRequest>>>,
    closing: CancellationToken,
    metrics: Arc<Metrics>,
}

/// The receiving half, owned by the writer task.
pub struct OutboundQueue {
    frames: mpsc::Receiver<Box<Queued>>,
    close: oneshot::Receiver<CloseRequest>,
    /// Cancelled when the writer ends, so a connection whose client has gone (a failed write)
    /// stops serving requests nobody will read.
    closing: CancellationToken,
}

impl Outbound {
    /// A queue within `limits` for a connection speaking `encoding`.
    pub fn new(encoding: Encoding, limits: QueueLimits, metrics: Arc<Metrics>) -> (Outbound, OutboundQueue) {
        let (frames_tx, frames) = mpsc::channel(limits.frames);
        let (close_tx, close) = oneshot::channel();
        let bytes = Arc::new(QueuedBytes { connection: AtomicUsize::new(0), metrics: metrics.clone() });
        let closing = CancellationToken::new();
        let inner = Inner {
            frames: frames_tx,
            bytes,
            max_queued_bytes: limits.bytes,
            max_total_queued_bytes: limits.total_bytes,
            encoding,
            close: Mutex::new(Some(close_tx)),
            closing: closing.clone(),
            metrics,
        };
        let queue = OutboundQueue { frames, close, closing };
        (Outbound { inner: Arc::new(inner) }, queue)
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
        let len = frame.len();
        let bytes = &self.inner.bytes;
        let queued_before = bytes.connection.fetch_add(len, Ordering::Relaxed);
        // Only a backlog counts toward the process's total: a frame that finds its queue empty is
        // the one a reader that keeps up takes next, and leaving it out spares every answer two
        // updates of one counter that all cores share.
        let behind_others = queued_before > 0;
        let total_before = if behind_others {
            bytes.metrics.outbound_queued_bytes().fetch_add(len, Ordering::Relaxed)
        } else {
            0
        };
        // Counted from here on; dropping it, wherever that happens, takes the bytes off again.
        let queued =
            Box::new(Queued { frame: Some(frame), len, in_total: behind_others, bytes: bytes.clone() });
        if behind_others
            && (queued_before + len > self.inner.max_queued_bytes
                || total_before + len > self.inner.max_total_queued_bytes)
        {
            drop(queued);
            return self.close_slow();
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.inner.frames.try_send(queued) {
            self.close_slow();
        }
    }

    fn close_slow(&self) {
        self.close(proto::close::SLOW_CONSUMER, "outbound queue full: the client reads too slowly", false);
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
    /// into one flush; ends with the requested close frame. Hands the sink back, for a connection
    /// that has to read what the client still sends before it lets the socket go.
    pub async fn write_to<S>(mut self, mut sink: S) -> S
    where
        S: Sink<Message> + Unpin,
    {
        // However the writer ends (a failed write, a close, the task aborted), the connection
        // learns it. A guard rather than a wrapping function: awaiting an inner one would keep
        // the sink twice in every connection's writer task.
        let _cancel_when_done = self.closing.clone().drop_guard();
        loop {
            tokio::select! {
                biased;
                request = &mut self.close => {
                    if let Ok(request) = request {
                        if request.flush {
                            while let Ok(queued) = self.frames.try_recv() {
                                if sink.feed((*queued).into_frame()).await.is_err() {
                                    return sink;
                                }
                            }
                        }
                        let frame = CloseFrame { code: CloseCode::from(request.code), reason: request.reason.into() };
                        let _ = sink.send(Message::Close(Some(frame))).await;
                    }
                    return sink;
                }
                queued = self.frames.recv() => {
                    let Some(queued) = queued else { return sink };
                    if sink.feed((*queued).into_frame()).await.is_err() {
                        return sink;
                    }
                    while let Ok(queued) = self.frames.try_recv() {
                        if sink.feed((*queued).into_frame()).await.is_err() {
                            return sink;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return sink;
                    }
                }
            }
        }
    }
}
