//! The `ping` scenario: authenticate once, then send `Ping` requests until the end, closed loop or
//! paced (see [`super::request_loop`]). The gateway answers pings alone, so this is the ceiling
//! for any request that does real work.

use proto::Request;

use super::{ClientContext, request_loop};

/// Runs one ping client.
pub async fn run(ctx: ClientContext) {
    request_loop::run(ctx, || Request::Ping).await;
}
