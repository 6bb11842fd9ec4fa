//! The load test's own connection against frames the real gateway does not send today.

use loadtest::conn::Connection;
use proto::{Encoding, Outcome, Reply, Request};

use crate::support::{Answer, FakeGateway, response_frame};

/// An `event` whose variant index (200) no version-1 client knows: what a newer server's new
/// event looks like to it.
const UNKNOWN_EVENT: [u8; 2] = [0x01, 200];

#[tokio::test]
async fn an_event_the_client_cannot_decode_is_skipped_and_the_connection_goes_on() {
    let gateway = FakeGateway::start(|_, request| {
        let pong = response_frame(&request, Outcome::Ok(Reply::Pong { server_time_ms: 1 }));
        Answer { frames: vec![UNKNOWN_EVENT.to_vec(), pong], then_close: false }
    })
    .await;
    let mut conn = Connection::open(&gateway.url, None, Encoding::Bincode).await.expect("connect");
    for _ in 0..3 {
        let outcome = conn.call(Request::Ping).await.expect("the ping is answered");
        assert!(matches!(outcome, Outcome::Ok(Reply::Pong { .. })), "{outcome:?}");
    }
    conn.close().await;
}
