//! Bad input gets its documented error or close code; the server never panics and keeps serving
//! everyone else.

use std::time::Duration;

use game_client::Client;
use proto::{ClientMessage, Encoding, ErrorCode, Outcome, Request, close, codec};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{World, closed, username};

fn error_code(outcome: &Outcome) -> Option<ErrorCode> {
    match outcome {
        Outcome::Error(body) => Some(body.code),
        Outcome::Ok(_) => None,
    }
}

async fn assert_still_serving(bystander: &Client) {
    bystander.ping().await.expect("the server keeps serving other clients");
}

#[tokio::test]
async fn malformed_json_is_a_bad_request_with_id_zero() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (bystander, _) = gateway.player(&username("calm")).await;
    let client = gateway.connect(Encoding::Json).await;
    client.send_raw(Message::Text("{not json".into())).await.unwrap();
    let outcome = client.expect_response(proto::UNKNOWN_REQUEST_ID).await.unwrap();
    assert_eq!(error_code(&outcome), Some(ErrorCode::BadRequest));
    assert_still_serving(&bystander).await;
}

#[tokio::test]
async fn an_unknown_message_type_is_a_bad_request_that_keeps_its_id() {
    let world = World::new();
    let gateway = world.gateway().await;
    let json = gateway.connect(Encoding::Json).await;
    json.send_raw(Message::Text(r#"{"id":77,"request":{"teleport":{"x":1}}}"#.into())).await.unwrap();
    assert_eq!(error_code(&json.expect_response(77).await.unwrap()), Some(ErrorCode::BadRequest));

    let binary = gateway.connect(Encoding::Bincode).await;
    let mut bytes =
        codec::encode(Encoding::Bincode, &ClientMessage { id: 78, request: Request::Ping }).unwrap();
    let variant = bytes.len() - 1;
    bytes[variant] = 200;
    binary.send_raw(Message::Binary(bytes.into())).await.unwrap();
    assert_eq!(error_code(&binary.expect_response(78).await.unwrap()), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn malformed_bincode_is_a_bad_request_and_the_connection_survives() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (client, _) = gateway.player(&username("garbled")).await;
    for garbage in [vec![], vec![0xff; 3], vec![0x05, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]] {
        client.send_raw(Message::Binary(garbage.into())).await.unwrap();
    }
    // A string whose length prefix claims far more bytes than the frame holds.
    client.send_raw(Message::Binary(vec![0x09, 0x00, 0xfc, 0xff, 0xff, 0xff, 0x7f].into())).await.unwrap();
    let outcome = client.expect_response(9).await.unwrap();
    assert_eq!(error_code(&outcome), Some(ErrorCode::BadRequest));
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_frame_of_the_wrong_kind_is_a_bad_request() {
    let world = World::new();
    let gateway = world.gateway().await;
    let client = gateway.connect(Encoding::Json).await;
    let bytes = codec::encode(Encoding::Bincode, &ClientMessage { id: 5, request: Request::Ping }).unwrap();
    client.send_raw(Message::Binary(bytes.into())).await.unwrap();
    // The id is read in the frame's own encoding, so the answer still carries it.
    let outcome = client.expect_response(5).await.unwrap();
    assert_eq!(error_code(&outcome), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn an_oversized_frame_closes_the_connection_with_message_too_big() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (bystander, _) = gateway.player(&username("steady")).await;
    let client = gateway.connect(Encoding::Bincode).await;
    let huge = vec![0_u8; proto::DEFAULT_MAX_FRAME_BYTES + 1];
    client.send_raw(Message::Binary(huge.into())).await.unwrap();
    assert_eq!(closed(&client).await.code, Some(close::MESSAGE_TOO_BIG));
    assert_still_serving(&bystander).await;
}

#[tokio::test]
async fn a_flood_past_the_rate_limit_is_refused_per_request() {
    let world = World::new();
    let config = gateway::GatewayConfig { requests_per_sec: 10, request_burst: 20, ..world.config() };
    let gateway = world.gateway_with(config).await;
    let (bystander, _) = gateway.player(&username("patient")).await;
    let (flooder, _) = gateway.player(&username("flooder")).await;
    let outcomes = futures_util::future::join_all((0..100).map(|_| flooder.request(Request::Ping))).await;
    let refused =
        outcomes.iter().filter(|o| matches!(o, Err(e) if e.code() == Some(ErrorCode::RateLimited))).count();
    let served = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(refused + served, 100, "every request gets exactly one answer");
    // The burst of 20, less the register and login that used two, plus a little refill.
    assert!((18..=25).contains(&served), "about the burst is served, got {served}");
    assert_still_serving(&bystander).await;

    // The bucket refills: a second later the flooder is served again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    flooder.ping().await.unwrap();
}

#[tokio::test]
async fn control_characters_in_usernames_are_refused() {
    let world = World::new();
    let gateway = world.gateway().await;
    let client = gateway.connect(Encoding::Json).await;
    let refused = client.register("bad\u{0}name", "correct horse").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::BadRequest));
}
