//! Bad input gets its documented error or close code; the server never panics and keeps serving
//! everyone else.

use std::time::Duration;

use game_client::Client;
use proto::{ClientMessage, Encoding, ErrorCode, Outcome, Reply, Request, close, codec};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{World, closed, join, requests_of_every_kind, username};

fn error_code(outcome: &Outcome) -> Option<ErrorCode> {
    match outcome {
        Outcome::Error(body) => Some(body.code),
        Outcome::Ok(_) => None,
    }
}

/// The answer to request `id`; fails the test, rather than hanging it, if none comes.
async fn answer(client: &Client, id: u64) -> Outcome {
    tokio::time::timeout(crate::support::PATIENCE, client.expect_response(id))
        .await
        .unwrap_or_else(|_| panic!("no answer to request {id}"))
        .unwrap()
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
    let outcome = answer(&client, proto::UNKNOWN_REQUEST_ID).await;
    assert_eq!(error_code(&outcome), Some(ErrorCode::BadRequest));
    assert_still_serving(&bystander).await;
}

#[tokio::test]
async fn an_unknown_message_type_is_a_bad_request_that_keeps_its_id() {
    let world = World::new();
    let gateway = world.gateway().await;
    let json = gateway.connect(Encoding::Json).await;
    json.send_raw(Message::Text(r#"{"id":77,"request":{"teleport":{"x":1}}}"#.into())).await.unwrap();
    assert_eq!(error_code(&answer(&json, 77).await), Some(ErrorCode::BadRequest));

    let binary = gateway.connect(Encoding::Bincode).await;
    let mut bytes =
        codec::encode(Encoding::Bincode, &ClientMessage { id: 78, request: Request::Ping }).unwrap();
    let variant = bytes.len() - 1;
    bytes[variant] = 200;
    binary.send_raw(Message::Binary(bytes.into())).await.unwrap();
    assert_eq!(error_code(&answer(&binary, 78).await), Some(ErrorCode::BadRequest));
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
    let outcome = answer(&client, 9).await;
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
    let outcome = answer(&client, 5).await;
    assert_eq!(error_code(&outcome), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn a_frame_of_the_wrong_kind_past_the_rate_limit_is_refused_with_its_own_id() {
    let world = World::new();
    let config = gateway::GatewayConfig { requests_per_sec: 1, request_burst: 1, ..world.config() };
    let gateway = world.gateway_with(config).await;
    let client = gateway.connect(Encoding::Json).await;
    // Takes the one request token (answered `unauthorized`: nobody is logged in).
    assert!(client.ping().await.is_err());
    let bytes = codec::encode(Encoding::Bincode, &ClientMessage { id: 5, request: Request::Ping }).unwrap();
    client.send_raw(Message::Binary(bytes.into())).await.unwrap();
    let outcome = answer(&client, 5).await;
    assert_eq!(error_code(&outcome), Some(ErrorCode::RateLimited));
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
async fn a_message_grown_past_the_limit_is_refused_with_a_close_the_client_can_read() {
    use futures_util::SinkExt;
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::MaybeTlsStream;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let world = World::new();
    let gateway = world.gateway().await;
    let (bystander, _) = gateway.player(&username("steady")).await;
    let mut request = gateway.url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", proto::SUBPROTOCOL_JSON.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    // A message in fragments of three tenths of the limit, streamed out at once: the fourth
    // crosses it, with six more behind it that the server has yet to read when it refuses it.
    for n in 0..10 {
        let opcode = OpCode::Data(if n == 0 { Data::Text } else { Data::Continue });
        let fragment = vec![b'x'; proto::DEFAULT_MAX_FRAME_BYTES * 3 / 10];
        socket.feed(Message::Frame(Frame::message(fragment, opcode, false))).await.unwrap();
    }
    socket.flush().await.unwrap();

    // The server read what still came and closed in good order: a close frame saying why, then
    // the end of the stream. Were the unread bytes met by a reset instead, many clients (browsers,
    // Node's ws) would report 1006 and lose the reason.
    let MaybeTlsStream::Plain(tcp) = socket.get_mut() else { unreachable!("ws:// is plain TCP") };
    let mut received = Vec::new();
    let ended = tokio::time::timeout(crate::support::PATIENCE, tcp.read_to_end(&mut received))
        .await
        .expect("the server closes the connection");
    assert!(ended.is_ok(), "the connection was reset: {ended:?}");
    let code = close::MESSAGE_TOO_BIG.to_be_bytes();
    assert!(
        received.first() == Some(&0x88) && received.get(2..4) == Some(&code[..]),
        "a close frame with 1009 first: {:?}",
        &received[..received.len().min(8)]
    );
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

/// A small deterministic generator, so a failing frame can be reproduced from the seed.
struct Mangler(u64);

impl Mangler {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `frame` with one or a few bytes changed, cut short, or grown. JSON stays text (a printable
    /// byte replaces or joins others), because a text frame that is not UTF-8 is a broken
    /// WebSocket, not a bad request.
    fn mangle(&mut self, frame: &[u8], encoding: Encoding) -> Vec<u8> {
        let mut bytes = frame.to_vec();
        let byte = |mangler: &mut Mangler| match encoding {
            Encoding::Bincode => mangler.next() as u8,
            Encoding::Json => b' ' + mangler.below(95) as u8,
        };
        match self.below(4) {
            0 if encoding == Encoding::Bincode => {
                for _ in 0..=self.below(3) {
                    let at = self.below(bytes.len());
                    bytes[at] ^= 1 << self.below(8);
                }
            }
            0 | 1 => {
                for _ in 0..=self.below(3) {
                    let at = self.below(bytes.len());
                    bytes[at] = byte(self);
                }
            }
            2 => bytes.truncate(self.below(bytes.len())),
            _ => {
                for _ in 0..=self.below(8) {
                    let at = self.below(bytes.len() + 1);
                    let inserted = byte(self);
                    bytes.insert(at, inserted);
                }
            }
        }
        bytes
    }
}

/// A raw WebSocket to the gateway, logged in as `username`.
async fn raw_logged_in(
    url: &str,
    encoding: Encoding,
    username: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut handshake = url.into_client_request().unwrap();
    handshake.headers_mut().insert("Sec-WebSocket-Protocol", encoding.subprotocol().parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(handshake).await.expect("connect");
    let login = Request::Login { username: username.into(), password: crate::support::PASSWORD.into() };
    let bytes = codec::encode(encoding, &ClientMessage { id: 1, request: login }).unwrap();
    socket.send(frame(encoding, bytes)).await.unwrap();
    match next_response(&mut socket, encoding).await {
        Ok(Outcome::Ok(_)) => socket,
        other => panic!("login of {username}: {other:?}"),
    }
}

fn frame(encoding: Encoding, bytes: Vec<u8>) -> Message {
    match encoding {
        Encoding::Bincode => Message::Binary(bytes.into()),
        Encoding::Json => Message::Text(String::from_utf8(bytes).expect("JSON is text").into()),
    }
}

/// The next response on `socket` (speaking `encoding`), skipping events; the close code if the
/// server closed it. Panics if the connection ends without a close frame or nothing comes within
/// the patience.
async fn next_response(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    encoding: Encoding,
) -> Result<Outcome, Option<u16>> {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(crate::support::PATIENCE, socket.next())
            .await
            .expect("an answer within the patience");
        let bytes = match message {
            Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
            Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
            Some(Ok(Message::Close(close))) => return Err(close.map(|close| u16::from(close.code))),
            Some(Ok(_)) => continue,
            ended => panic!("the connection ended without a close frame: {ended:?}"),
        };
        match codec::decode::<proto::ServerMessage>(encoding, &bytes).expect("the server's frames decode") {
            proto::ServerMessage::Response(response) => return Ok(response.outcome),
            proto::ServerMessage::Event(_) => continue,
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// Every mangled frame gets exactly one answer (or, for a request that still decodes to one that
/// ends the session, a close frame), never a silent drop or an abrupt end. A longer run by hand:
/// `MANGLE_SEED=7 MANGLE_PER_REQUEST=3000 cargo test -p gateway --test it mangled` (seeds 1–8 at
/// 300 and 11–12 at 3,000, 132,000 frames each, passed when this test was written).
#[tokio::test]
async fn mangled_requests_of_every_kind_are_each_answered_and_change_no_one_else() {
    use futures_util::SinkExt;
    let world = World::new();
    let config = gateway::GatewayConfig {
        requests_per_sec: 100_000,
        request_burst: 100_000,
        login_failures_per_address: 100_000,
        ..world.config()
    };
    let gateway = world.gateway_with(config).await;
    let (bystander, bystander_session) = gateway.player(&username("bystander")).await;
    let bystander_update = proto::StateUpdate {
        position: Some(proto::Position { x: 10.0, y: 20.0, z: 30.0 }),
        ..proto::StateUpdate::default()
    };
    bystander.request(Request::UpdateState(bystander_update)).await.unwrap();
    let Reply::State(bystander_before) = bystander.request(Request::GetState).await.unwrap() else {
        panic!("the bystander's state")
    };
    let fuzzer_name = username("fuzzer");
    let (fuzzer, _) = gateway.player(&fuzzer_name).await;
    let room = join(&fuzzer, "fuzz-room").await.channel_id;
    drop(fuzzer);

    let requests = requests_of_every_kind(bystander_session.account_id, room);
    let seed = env_or("MANGLE_SEED", 0x5eed_f022);
    let per_request = env_or("MANGLE_PER_REQUEST", 30);
    let mut mangler = Mangler(seed);
    // Most frames are bad requests; a few in a hundred still decode to a request and are served.
    let (mut n_ok, mut n_bad_request) = (0, 0);
    for encoding in [Encoding::Bincode, Encoding::Json] {
        let mut socket = raw_logged_in(&gateway.url, encoding, &fuzzer_name).await;
        for (index, request) in requests.iter().enumerate() {
            let valid =
                codec::encode(encoding, &ClientMessage { id: index as u64 + 2, request: request.clone() })
                    .unwrap();
            for _ in 0..per_request {
                let mangled = mangler.mangle(&valid, encoding);
                socket.send(frame(encoding, mangled.clone())).await.unwrap();
                match next_response(&mut socket, encoding).await {
                    Ok(outcome) => match error_code(&outcome) {
                        None => n_ok += 1,
                        Some(ErrorCode::BadRequest) => n_bad_request += 1,
                        Some(_) => {}
                    },
                    Err(code) => {
                        assert!(
                            code == Some(close::SESSION_REVOKED),
                            "{request:?} mangled to {mangled:?} (seed {seed:#x}) closed the connection with {code:?}"
                        );
                        socket = raw_logged_in(&gateway.url, encoding, &fuzzer_name).await;
                    }
                }
            }
        }
    }
    assert!(
        n_ok > 0 && n_bad_request > 0,
        "the frames reached both paths: {n_ok} served, {n_bad_request} refused"
    );

    assert_still_serving(&bystander).await;
    let Reply::State(bystander_after) = bystander.request(Request::GetState).await.unwrap() else {
        panic!("the bystander's state")
    };
    assert_eq!(bystander_after, bystander_before, "no mangled request changed another player's state");
    let (fuzzer, _) = gateway.player(&fuzzer_name).await;
    fuzzer.ping().await.expect("the fuzzing player is still served");
    gateway.stop().await.expect("a clean shutdown after the mangled frames");
}
