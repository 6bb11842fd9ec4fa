//! The `idle` scenario: connect, authenticate, and hold the connection open doing nothing until
//! the end, answering the server's heartbeats. It measures what an idle connection costs the
//! gateway (the run scrapes the gateway's memory before connecting and at the peak).

use tokio::time::sleep_until;

use super::{ClientContext, Ready};

/// Runs one idle client.
pub async fn run(ctx: ClientContext) {
    let Some(mut open) = ctx.connect_authenticated().await else { return };
    let ready = Ready::new(&ctx.shared);
    // Reading is what answers the server's WebSocket pings; nothing else should arrive.
    let held = async {
        loop {
            if let Err(error) = open.conn.recv().await {
                return error;
            }
        }
    };
    tokio::select! {
        () = sleep_until(ctx.shared.deadline) => {}
        error = held => {
            tracing::debug!(%error, client = ctx.index, "idle connection lost");
            ctx.shared.recorder.failed(ctx.index, "idle", &error);
        }
    }
    drop(ready);
    open.close().await;
}
