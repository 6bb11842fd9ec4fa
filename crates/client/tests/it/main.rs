//! The client against a scripted server: request and response matching, and what it does with
//! frames the real gateway does not send.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use game_client::{Client, ClientError, ConnectOptions};
use proto::{ClientMessage, Encoding, Event, Outcome, Reply, Request, Response, ServerMessage, codec};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{FakeGateway, PATIENCE};

fn pong(id: u64) -> ServerMessage {
    ServerMessage::Response(Response { id, outcome: Outcome::Ok(Reply::Pong { server_time_ms: 42 }) })
}

fn notice(text: &str) -> ServerMessage {
    ServerMessage::Event(Event::Notice { text: text.into() })
}

#[tokio::test]
async fn a_response_that_arrives_before_it_is_awaited_is_kept_for_it() {
    let gateway = FakeGateway::start(proto::SUBPROTOCOL_BINCODE).await;
    let client = Client::connect(&gateway.url, Encoding::Bincode).await.unwrap();
    let mut server = gateway.socket().await;
    let frame = codec::encode(Encoding::Bincode, &ClientMessage { id: 9, request: Request::Ping }).unwrap();
    client.send_raw(Message::Binary(frame.into())).await.unwrap();
    server.next_request(Encoding::Bincode).await;
    server.send(&pong(9)).await;
    // Frames are read in order: once the event is here, so was the response before it.
    server.send(&notice("after the response")).await;
    assert!(matches!(client.next_event().await, Some(Event::Notice { .. })));
    let outcome = tokio::time::timeout(PATIENCE, client.expect_response(9))
        .await
        .expect("the response read earlier is handed over")
        .unwrap();
    assert_eq!(outcome, Outcome::Ok(Reply::Pong { server_time_ms: 42 }));
}

#[tokio::test]
async fn a_second_request_under_an_id_in_flight_is_refused_and_the_first_still_gets_its_answer() {
    let gateway = FakeGateway::start(proto::SUBPROTOCOL_BINCODE).await;
    let client = Arc::new(Client::connect(&gateway.url, Encoding::Bincode).await.unwrap());
    let mut server = gateway.socket().await;
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.request_with_id(5, Request::Ping).await }
    });
    // The first request is waiting once it has been sent.
    assert_eq!(server.next_request(Encoding::Bincode).await.id, 5);

    let second = tokio::time::timeout(PATIENCE, client.request_with_id(5, Request::Whoami))
        .await
        .expect("refused at once, not sent");
    assert!(matches!(second, Err(ClientError::Protocol(_))), "{second:?}");

    server.send(&pong(5)).await;
    let first = tokio::time::timeout(PATIENCE, first).await.expect("the first request is answered").unwrap();
    assert_eq!(first.unwrap(), Outcome::Ok(Reply::Pong { server_time_ms: 42 }));
}

#[tokio::test]
async fn a_response_the_client_cannot_decode_fails_its_request_instead_of_leaving_it_waiting() {
    let gateway = FakeGateway::start(proto::SUBPROTOCOL_BINCODE).await;
    let client = Arc::new(Client::connect(&gateway.url, Encoding::Bincode).await.unwrap());
    let mut server = gateway.socket().await;
    let request = tokio::spawn({
        let client = client.clone();
        async move { client.request(Request::Ping).await }
    });
    let id = server.next_request(Encoding::Bincode).await.id;
    // Response `id`, an error whose code (index 8) a newer server might send: PROTOCOL.md asks
    // clients to treat an unknown code as a generic error.
    let mut unknown_code = vec![0x00];
    unknown_code.extend(codec::encode(Encoding::Bincode, &id).unwrap());
    unknown_code.extend([0x01, 0x08, 0x02, b'n', b'o']);
    server.send_bytes(unknown_code).await;

    let answer = tokio::time::timeout(PATIENCE, request).await.expect("the request ends").unwrap();
    assert!(matches!(answer, Err(ClientError::Protocol(_))), "{answer:?}");
    // The connection goes on.
    let next = tokio::spawn({
        let client = client.clone();
        async move { client.request(Request::Ping).await }
    });
    let id = server.next_request(Encoding::Bincode).await.id;
    server.send(&pong(id)).await;
    assert!(tokio::time::timeout(PATIENCE, next).await.unwrap().unwrap().is_ok());
}

#[tokio::test]
async fn the_encoding_is_the_one_the_server_chose_from_the_offer() {
    let gateway = FakeGateway::start(proto::SUBPROTOCOL_BINCODE).await;
    let options = ConnectOptions {
        subprotocols: Some(vec![proto::SUBPROTOCOL_BINCODE.into(), proto::SUBPROTOCOL_JSON.into()]),
        ..ConnectOptions::new(Encoding::Json)
    };
    let client = Arc::new(Client::connect_with(&gateway.url, options).await.unwrap());
    let mut server = gateway.socket().await;
    assert_eq!(client.encoding(), Encoding::Bincode);
    let request = tokio::spawn({
        let client = client.clone();
        async move { client.request(Request::Ping).await }
    });
    let id = server.next_request(Encoding::Bincode).await.id;
    server.send(&pong(id)).await;
    assert!(tokio::time::timeout(PATIENCE, request).await.unwrap().unwrap().is_ok());
}

#[tokio::test]
async fn a_chosen_subprotocol_that_names_no_encoding_this_client_speaks_fails_the_connect() {
    let gateway = FakeGateway::start("game.v9.bincode").await;
    let options = ConnectOptions {
        subprotocols: Some(vec!["game.v9.bincode".into(), proto::SUBPROTOCOL_BINCODE.into()]),
        ..ConnectOptions::new(Encoding::Bincode)
    };
    let refused = Client::connect_with(&gateway.url, options).await;
    assert!(matches!(refused, Err(ClientError::Protocol(_))), "{refused:?}");
}

#[tokio::test]
async fn the_client_answers_the_servers_close_and_reports_its_code() {
    let gateway = FakeGateway::start(proto::SUBPROTOCOL_BINCODE).await;
    let client = Client::connect(&gateway.url, Encoding::Bincode).await.unwrap();
    let mut server = gateway.socket().await;
    server.close(proto::close::SESSION_REVOKED).await;
    // RFC 6455 §5.5.1: the endpoint that receives a Close sends one back, here while the client
    // is still held; the gateway otherwise waits out its close grace.
    match server.next_frame().await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), proto::close::SESSION_REVOKED),
        other => panic!("expected the client's close, got {other:?}"),
    }
    let info = tokio::time::timeout(PATIENCE, client.closed()).await.unwrap();
    assert_eq!(info.code, Some(proto::close::SESSION_REVOKED));
    assert_eq!(info.reason, "bye");
    // At once, though the client reads on for a while (this server keeps the socket open).
    let events_end = tokio::time::timeout(Duration::from_millis(500), client.next_event()).await;
    assert_eq!(events_end, Ok(None), "no events come after the close");
}

#[tokio::test]
async fn a_request_gets_its_own_answer_not_one_left_unclaimed_under_the_same_id() {
    let gateway = FakeGateway::start(proto::SUBPROTOCOL_BINCODE).await;
    let client = Arc::new(Client::connect(&gateway.url, Encoding::Bincode).await.unwrap());
    let mut server = gateway.socket().await;
    // A raw frame under id 1 whose answer nobody waits for.
    let frame = codec::encode(Encoding::Bincode, &ClientMessage { id: 1, request: Request::Ping }).unwrap();
    client.send_raw(Message::Binary(frame.into())).await.unwrap();
    server.next_request(Encoding::Bincode).await;
    let stale = Reply::Pong { server_time_ms: 1 };
    server.send(&ServerMessage::Response(Response { id: 1, outcome: Outcome::Ok(stale) })).await;
    server.send(&notice("the stale answer has been read")).await;
    client.next_event().await;

    // The client's own first request also has id 1.
    let request = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let id = server.next_request(Encoding::Bincode).await.id;
    server.send(&pong(id)).await;
    let answer = tokio::time::timeout(PATIENCE, request).await.unwrap().unwrap();
    assert_eq!(answer.unwrap(), 42);
}
