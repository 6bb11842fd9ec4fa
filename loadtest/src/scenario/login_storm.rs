//! The `login-storm` scenario: each client repeatedly connects, logs in with its password and
//! disconnects, measuring login latency (an Argon2id verification on the server each time).
//! Always closed loop.

use tokio::time::Instant;

use super::{ClientContext, RETRY_PAUSE};

/// Runs one login-storm client.
pub async fn run(ctx: ClientContext) {
    while Instant::now() < ctx.shared.deadline {
        let Some(mut open) = ctx.connect().await else {
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        let logged_in = ctx.login(&mut open.conn).await.is_some();
        open.close().await;
        if !logged_in {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
