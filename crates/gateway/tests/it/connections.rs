//! The connection lifecycle: negotiation, caps, heartbeats, slow consumers, shutdown, the admin
//! port, the embedded store, and a Redis outage.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use game_client::{Client, ClientError, ConnectOptions};
use proto::chat::{ChatReply, ChatRequest};
use proto::{Encoding, ErrorCode, Reply, Request, close};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{
    PASSWORD, PATIENCE, TestGateway, World, closed, join, notice, requests_of_every_kind, username,
};

#[tokio::test]
async fn an_unknown_protocol_version_is_refused_at_the_handshake_with_a_reason() {
    let world = World::new();
    let gateway = world.gateway().await;
    let options = ConnectOptions {
        subprotocols: Some(vec!["game.v2.json".into()]),
        ..ConnectOptions::new(Encoding::Json)
    };
    let refused = Client::connect_with(&gateway.url, options).await.unwrap_err();
    let ClientError::WebSocket(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("expected an HTTP refusal, got {refused:?}");
    };
    assert_eq!(response.status(), 400);
    let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
    assert!(body.contains("game.v1.bincode") && body.contains("game.v2.json"), "{body}");
}

#[tokio::test]
async fn the_first_supported_subprotocol_offered_wins() {
    let world = World::new();
    let gateway = world.gateway().await;
    let options = ConnectOptions {
        subprotocols: Some(vec!["game.v9.bincode".into(), "game.v1.json".into()]),
        ..ConnectOptions::new(Encoding::Json)
    };
    let client = Client::connect_with(&gateway.url, options).await.unwrap();
    client.register(&username("negotiator"), PASSWORD).await.unwrap();
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_with_try_again_later() {
    let world = World::new();
    let gateway = world.gateway_with(gateway::GatewayConfig { max_connections: 2, ..world.config() }).await;
    let first = gateway.connect(Encoding::Bincode).await;
    let _second = gateway.connect(Encoding::Bincode).await;
    let third = gateway.connect(Encoding::Bincode).await;
    assert_eq!(closed(&third).await.code, Some(close::TRY_AGAIN_LATER));
    // A refused connection was never open.
    assert_eq!(gateway.metric("gateway_connections_accepted_total").await, Some(2.0));
    assert_eq!(gateway.metric("gateway_connections_refused_total").await, Some(1.0));
    first.close().await;
    closed(&first).await;
    // The slot is given back when a connection ends.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let fourth = gateway.connect(Encoding::Bincode).await;
        if fourth.register(&username("late"), PASSWORD).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a slot frees up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_client_address_cannot_hold_more_than_its_share_of_connections() {
    let world = World::new();
    let config = gateway::GatewayConfig { max_connections_per_address: 2, ..world.config() };
    let gateway = world.gateway_with(config).await;
    let addr: std::net::SocketAddr =
        gateway.url.trim_start_matches("ws://").trim_end_matches('/').parse().unwrap();
    let from = |source: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((std::net::Ipv4Addr::from(source), 0).into()).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", proto::SUBPROTOCOL_BINCODE.parse().unwrap());
        tokio_tungstenite::client_async(request, stream).await.map(|(socket, _)| socket)
    };
    let first = from([127, 0, 0, 1]).await.expect("first connection");
    let _second = from([127, 0, 0, 1]).await.expect("second connection");
    assert!(from([127, 0, 0, 1]).await.is_err(), "a third from the same address is dropped");
    let _elsewhere = from([127, 0, 0, 2]).await.expect("another address still connects");
    assert_eq!(gateway.metric("gateway_connections_refused_for_address_total").await, Some(1.0));
    // The place is given back when a connection ends.
    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while from([127, 0, 0, 1]).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "a place frees up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Behind a load balancer every connection has the balancer's address. Trusted, it speaks for
/// its clients: each per-address limit counts the address it forwards. Not trusted, what a
/// client writes in `X-Forwarded-For` changes nothing.
#[tokio::test]
async fn a_trusted_proxy_s_connections_count_as_the_addresses_it_forwards() {
    let world = World::new();
    let limits = gateway::GatewayConfig {
        max_connections_per_address: 1,
        login_failures_per_address: 2,
        ..world.config()
    };
    let behind_proxy = gateway::GatewayConfig {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
        ..limits.clone()
    };
    let gateway = world.gateway_with(behind_proxy).await;
    let forwarded = |client: &str| ConnectOptions {
        headers: vec![("X-Forwarded-For".into(), format!("6.6.6.6, {client}"))],
        ..ConnectOptions::new(Encoding::Bincode)
    };
    let first = Client::connect_with(&gateway.url, forwarded("198.51.100.1")).await.unwrap();
    let other = Client::connect_with(&gateway.url, forwarded("198.51.100.2")).await.unwrap();
    first.register(&username("first"), PASSWORD).await.expect("one connection of the first address");
    other
        .register(&username("other"), PASSWORD)
        .await
        .expect("one of another address, through the same proxy");
    let second = Client::connect_with(&gateway.url, forwarded("198.51.100.1")).await.unwrap();
    let dropped = second.register(&username("second"), PASSWORD).await;
    assert!(
        matches!(dropped, Err(ClientError::Closed { .. })),
        "a second of the first address is dropped: {dropped:?}"
    );
    assert_eq!(gateway.metric("gateway_connections_refused_for_address_total").await, Some(1.0));

    // Failed logins count against the forwarded address, not the proxy's.
    for attempt in 0..2 {
        let refused = first.login(&username(&format!("ghost{attempt}")), PASSWORD).await.unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::Unauthorized));
    }
    let throttled = first.login(&username("ghost"), PASSWORD).await.unwrap_err();
    assert_eq!(throttled.code(), Some(ErrorCode::RateLimited), "the first address used up its failures");
    let elsewhere = other.login(&username("ghost"), PASSWORD).await.unwrap_err();
    assert_eq!(elsewhere.code(), Some(ErrorCode::Unauthorized), "the other address has its own");

    let direct = world.gateway_with(limits).await;
    let _only = Client::connect_with(&direct.url, forwarded("198.51.100.1")).await.unwrap();
    let spoofed = Client::connect_with(&direct.url, forwarded("198.51.100.2")).await;
    assert!(spoofed.is_err(), "an untrusted peer is its own address, whatever it forwards");
}

#[tokio::test]
async fn a_client_that_drops_its_socket_without_a_close_frame_is_counted_as_lost_not_as_a_violation() {
    let world = World::new();
    let gateway = world.gateway().await;
    let socket = silent_socket(&gateway, None).await;
    drop(socket);
    wait_for_zero(&gateway, "gateway_connections", "the connection ends").await;
    let violations = format!("gateway_closes_total{{code=\"{}\"}}", close::POLICY_VIOLATION);
    assert_eq!(gateway.metric(&violations).await, None);
}

/// The test configuration with a heartbeat every 100 ms and an idle timeout of 400 ms.
fn quick_heartbeats(world: &World) -> gateway::GatewayConfig {
    gateway::GatewayConfig {
        heartbeat_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(400),
        ..world.config()
    }
}

/// A WebSocket that never reads, over a socket whose receive buffer is small, so what the gateway
/// sends it backs up at once.
async fn small_window_socket(
    gateway: &TestGateway,
    token: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = gateway.url.trim_start_matches("ws://").trim_end_matches('/').parse().unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let url = match token {
        Some(token) => format!("{}?token={token}", gateway.url),
        None => gateway.url.clone(),
    };
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", proto::SUBPROTOCOL_BINCODE.parse().unwrap());
    tokio_tungstenite::client_async(request, stream).await.unwrap().0
}

/// Waits until the gateway's `series` reads 0; `what` says what that means.
async fn wait_for_zero(gateway: &TestGateway, series: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while gateway.metric(series).await != Some(0.0) {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket that completes the handshake and then never reads (so it never answers pings).
async fn silent_socket(
    gateway: &TestGateway,
    token: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = match token {
        Some(token) => format!("{}?token={token}", gateway.url),
        None => gateway.url.clone(),
    };
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", proto::SUBPROTOCOL_BINCODE.parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
}

/// Reads until the close frame and returns its code.
async fn close_code_of<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    socket: &mut tokio_tungstenite::WebSocketStream<S>,
) -> Option<u16> {
    tokio::time::timeout(PATIENCE, async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Close(frame)) => return frame.map(|frame| u16::from(frame.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the server closes the connection")
}

#[tokio::test]
async fn a_silent_client_is_disconnected_after_the_idle_timeout() {
    let world = World::new();
    let gateway = world.gateway_with(quick_heartbeats(&world)).await;
    let mut silent = silent_socket(&gateway, None).await;
    let (talker, _) = gateway.player(&username("talker")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // A client whose library answers pings stays connected while idle.
    talker.ping().await.unwrap();
    assert_eq!(close_code_of(&mut silent).await, Some(close::IDLE_TIMEOUT));
}

#[tokio::test]
async fn a_connection_without_a_session_is_closed_after_the_login_timeout() {
    let world = World::new();
    let config = gateway::GatewayConfig {
        heartbeat_interval: Duration::from_millis(100),
        login_timeout: Duration::from_millis(1500),
        ..world.config()
    };
    let gateway = world.gateway_with(config).await;
    let (player_name, leaver_name) = (username("player"), username("leaver"));
    let registrar = gateway.connect(Encoding::Bincode).await;
    registrar.register(&player_name, PASSWORD).await.unwrap();
    registrar.register(&leaver_name, PASSWORD).await.unwrap();
    // All answer the gateway's pings; only those without a session are closed.
    let lurker = gateway.connect(Encoding::Bincode).await;
    let (player, _) = gateway.player(&player_name).await;
    let (leaver, _) = gateway.player(&leaver_name).await;
    leaver.logout().await.unwrap();
    assert_eq!(closed(&lurker).await.code, Some(close::LOGIN_TIMEOUT));
    // A logout starts the clock again.
    assert_eq!(closed(&leaver).await.code, Some(close::LOGIN_TIMEOUT));
    player.ping().await.expect("a logged-in player stays");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_as_a_slow_consumer() {
    let world = World::new();
    let gateway = world.gateway_with(gateway::GatewayConfig { outbound_queue: 8, ..world.config() }).await;
    let (_, session) = gateway.player(&username("sluggish")).await;
    let mut sluggish = silent_socket(&gateway, Some(&session.token)).await;
    notices_until_closed_as_slow(&gateway, session.account_id, 600).await;
    assert_eq!(close_code_of(&mut sluggish).await, Some(close::SLOW_CONSUMER));
    let closes = gateway.metric(&format!("gateway_closes_total{{code=\"{}\"}}", close::SLOW_CONSUMER)).await;
    assert_eq!(closes, Some(1.0));
}

#[tokio::test]
async fn a_client_that_stops_reading_large_messages_is_disconnected_before_its_queue_grows_large() {
    let world = World::new();
    // The queue may hold 1,024 messages, but not more than 256 KiB of them.
    let config = gateway::GatewayConfig { outbound_queue_bytes: 256 << 10, ..world.config() };
    let gateway = world.gateway_with(config).await;
    let (_, session) = gateway.player(&username("hoarder")).await;
    let mut hoarder = silent_socket(&gateway, Some(&session.token)).await;
    // 600 notices of 30 KB: 18 MB, more than the kernel's socket buffers take, in far fewer
    // than 1,024 messages.
    notices_until_closed_as_slow(&gateway, session.account_id, 600).await;
    assert_eq!(close_code_of(&mut hoarder).await, Some(close::SLOW_CONSUMER));
}

/// Sends `account_id` up to `n` notices of 30 KB, stopping once the gateway has closed a
/// connection as a slow consumer: the closed client then starts reading while the gateway still
/// waits for it to take its close frame.
async fn notices_until_closed_as_slow(gateway: &TestGateway, account_id: proto::AccountId, n: usize) {
    let text = "x".repeat(30_000);
    let slow_closes = format!("gateway_closes_total{{code=\"{}\"}}", close::SLOW_CONSUMER);
    for sent in 1..=n {
        notice(gateway.admin, account_id, &text).await;
        if sent % 10 == 0 && gateway.metric(&slow_closes).await.is_some() {
            return;
        }
    }
}

#[tokio::test]
async fn a_client_that_floods_pings_is_closed_as_a_policy_violation() {
    let world = World::new();
    let gateway = world.gateway().await;
    let mut flooder = silent_socket(&gateway, None).await;
    for _ in 0..100 {
        if flooder.send(Message::Ping(vec![7; 125].into())).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code_of(&mut flooder).await, Some(close::POLICY_VIOLATION));
}

#[tokio::test]
async fn a_client_that_pings_and_pongs_but_never_reads_is_disconnected_after_the_idle_timeout() {
    let world = World::new();
    let gateway = world.gateway_with(quick_heartbeats(&world)).await;
    // A client with a small receive buffer that never reads, so it never answers the gateway's
    // pings, while it keeps sending pings and pongs of its own, within the ping rate.
    let mut flooder = small_window_socket(&gateway, None).await;
    let (ping, pong) = (Message::Ping(vec![7; 125].into()), Message::Pong(vec![7; 125].into()));
    let sending_until = tokio::time::Instant::now() + PATIENCE;
    let mut dropped = false;
    while tokio::time::Instant::now() < sending_until {
        if flooder.send(ping.clone()).await.is_err() || flooder.send(pong.clone()).await.is_err() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(dropped, "a client that only pings and pongs is still connected after {PATIENCE:?}");
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_work_it_queued() {
    let world = World::new();
    let gateway = world.gateway().await;
    let mut client = silent_socket(&gateway, None).await;
    // Forty registrations, each a password hash, sent at once; then the client resets the
    // connection without reading an answer.
    for n in 0..40 {
        let register =
            Request::Register { username: username(&format!("gone{n}")), password: PASSWORD.into() };
        let bytes =
            proto::codec::encode(Encoding::Bincode, &proto::ClientMessage { id: n, request: register });
        client.feed(Message::Binary(bytes.unwrap().into())).await.unwrap();
    }
    client.flush().await.unwrap();
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = client.get_ref() {
        tcp.set_zero_linger().unwrap();
    }
    drop(client);
    // Its connection ends at the first answer it cannot write, not after the fortieth hash.
    wait_for_zero(&gateway, "gateway_connections", "the connection is still served").await;
    let registered = gateway.metric("gateway_requests_total{request=\"register\",outcome=\"ok\"}").await;
    assert!(registered.unwrap_or(0.0) < 20.0, "{registered:?} registrations served after the client left");
}

#[tokio::test]
async fn connections_that_stop_reading_cannot_together_queue_more_than_the_process_allows() {
    let world = World::new();
    // Each connection may queue 64 MiB, but all of them together only 256 KiB.
    let config = gateway::GatewayConfig {
        outbound_queue_bytes: 64 << 20,
        outbound_total_bytes: 256 << 10,
        ..world.config()
    };
    let gateway = world.gateway_with(config).await;
    let (_, session) = gateway.player(&username("hoarder")).await;
    let (reader, reader_session) = gateway.player(&username("reader")).await;
    // A client with a small receive buffer that never reads.
    let mut hoarder = small_window_socket(&gateway, Some(&session.token)).await;
    // Up to 9 MB of notices: more than the kernel's buffers take, far under its own queue's bound.
    notices_until_closed_as_slow(&gateway, session.account_id, 300).await;
    assert_eq!(close_code_of(&mut hoarder).await, Some(close::SLOW_CONSUMER));
    // What it had queued no longer counts, and a client that reads is served as before.
    wait_for_zero(&gateway, "gateway_outbound_queued_bytes", "the closed connection's queue is given back")
        .await;
    notice(gateway.admin, reader_session.account_id, "still here").await;
    loop {
        match reader.next_event().await.expect("the reader is served") {
            proto::Event::Notice { text } if text == "still here" => break,
            _ => {}
        }
    }
}

#[tokio::test]
async fn what_a_kicked_connection_had_queued_leaves_the_outbound_total() {
    let world = World::new();
    let gateway = world.gateway().await;
    let name = username("kicked");
    let (kicked, _) = gateway.player(&name).await;
    let (other, _) = gateway.player(&name).await;
    // The kick queues a `kicked` event and then closes, writing what is queued first.
    other.logout_everywhere().await.unwrap();
    assert_eq!(closed(&kicked).await.code, Some(close::SESSION_REVOKED));
    wait_for_zero(&gateway, "gateway_outbound_queued_bytes", "every queued byte is given back").await;
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_going_away_and_returns() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (player, _) = gateway.player(&username("stayer")).await;
    let fresh = gateway.connect(Encoding::Json).await;
    gateway.stop().await.unwrap();
    assert_eq!(closed(&player).await.code, Some(close::GOING_AWAY));
    assert_eq!(closed(&fresh).await.code, Some(close::GOING_AWAY));
}

#[tokio::test]
async fn the_admin_port_reports_health_readiness_and_metrics() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (player, _) = gateway.player(&username("counted")).await;
    for _ in 0..3 {
        player.ping().await.unwrap();
    }
    assert_eq!(gateway.http("GET", "/healthz", "").await.unwrap().0, 200);
    assert_eq!(gateway.http("GET", "/readyz", "").await.unwrap().0, 200);
    assert_eq!(gateway.metric("gateway_requests_total{request=\"ping\",outcome=\"ok\"}").await, Some(3.0));
    assert_eq!(gateway.metric("gateway_authenticated_connections").await, Some(1.0));
    assert_eq!(gateway.metric("gateway_bus_messages_dropped_total").await, Some(0.0));
    assert!(gateway.metric("process_resident_memory_bytes").await.unwrap() > 0.0);
}

#[tokio::test]
async fn a_redis_outage_is_reported_as_unavailable_and_recovered_from() {
    let mut world = World::new();
    let gateway = world.gateway().await;
    let name = username("weathered");
    let (player, _) = gateway.player(&name).await;

    world.redis.stop();
    let client = gateway.connect(Encoding::Bincode).await;
    let refused = client.login(&name, PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Unavailable));
    let (status, problems) = gateway.http("GET", "/readyz", "").await.unwrap();
    assert_eq!(status, 503);
    assert!(problems.contains("bus:"), "says the bus hears nothing meanwhile: {problems}");
    // What needs no Redis keeps working.
    player.ping().await.unwrap();

    world.redis.restart();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while client.login(&name, PASSWORD).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "logins work again once Redis is back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ready once the bus is subscribed again too, which may come a moment after the commands.
    while gateway.http("GET", "/readyz", "").await.unwrap().0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "ready again once Redis is back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_gateway_refuses_a_data_directory_a_restore_left_half_done() {
    let world = World::new();
    std::fs::create_dir(world.data_dir.path().join(".restore-staging")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let starting = gateway::run(listener, admin, world.config(), world.clock.clone(), Default::default());
    let started = tokio::time::timeout(PATIENCE, starting)
        .await
        .expect("the gateway refuses at once instead of serving");
    let Err(gateway::GatewayError::Config(message)) = started else { panic!("{started:?}") };
    assert!(message.contains("a restore into this data directory did not finish"), "{message}");
    assert!(!world.data_dir.path().join("player.db").exists(), "no empty shard was made");
}

#[tokio::test]
async fn without_redis_the_embedded_store_serves_one_process_only() {
    let world = World::new();
    let config = gateway::GatewayConfig { redis_url: None, ..world.config() };
    let gateway = world.gateway_with(config.clone()).await;
    let (player, session) = gateway.player(&username("offline")).await;
    player.ping().await.unwrap();
    gateway.connect(Encoding::Json).await.resume(&session.token).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = gateway::run(listener, admin, config, world.clock.clone(), Default::default()).await;
    assert!(matches!(second, Err(gateway::GatewayError::Kv(kv::KvError::EmbeddedInUse(_)))), "{second:?}");
}

#[tokio::test]
async fn a_client_that_closes_gets_a_normal_close_in_return() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (player, _) = gateway.player(&username("polite")).await;
    player.close().await;
    assert_eq!(closed(&player).await.code, Some(close::NORMAL));
}

/// Whatever needs Redis is refused with `unavailable` at once, whatever does not is served, and
/// no request hangs, goes unanswered, or fails as `internal`; a refused request leaves nothing
/// behind, and the same requests are served once Redis is back.
#[tokio::test]
async fn during_a_redis_outage_every_kind_of_request_is_answered_and_none_as_internal() {
    let mut world = World::new();
    let config = gateway::GatewayConfig { flush_interval: Duration::from_millis(100), ..world.config() };
    let gateway = world.gateway_with(config).await;
    let (other, other_session) = gateway.player(&username("other")).await;
    // The other player's state is in player.db before Redis goes (and comes back empty).
    other
        .request(Request::UpdateState(proto::StateUpdate { health: Some(5), ..Default::default() }))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while gateway.metric("player_rows_flushed_total").await < Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "the other player's state is flushed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (player, _) = gateway.player(&username("stranded")).await;
    let room = join(&player, "fuzz-room").await;
    let requests = requests_of_every_kind(other_session.account_id, room.channel_id);

    world.redis.stop();
    let mut refused = Vec::new();
    for request in &requests {
        let answered = tokio::time::timeout(PATIENCE, player.request(request.clone()))
            .await
            .unwrap_or_else(|_| panic!("{request:?} was not answered during the outage"));
        match answered.map_err(|error| error.code()) {
            Ok(_) => {}
            Err(Some(ErrorCode::Unavailable)) => refused.push(request.clone()),
            Err(code) => assert!(
                matches!(code, Some(ErrorCode::BadRequest | ErrorCode::NotFound | ErrorCode::Forbidden)),
                "{request:?} during the outage: {code:?}"
            ),
        }
    }
    for kind in ["update_state", "get_player_state", "chat_send", "chat_send_direct"] {
        assert!(refused.iter().any(|request| request.kind() == kind), "{kind} needs Redis: {refused:?}");
    }
    let Reply::Chat(ChatReply::Channels(channels)) =
        player.request(Request::Chat(ChatRequest::Channels)).await.unwrap()
    else {
        panic!("the player's channels")
    };
    assert_eq!(channels, vec![room], "a refused direct message made no channel");

    // The harness's Redis comes back empty, as one without persistence does: the session is gone,
    // but is checked only at the next heartbeat, so the rest is served until then; a refresh finds
    // it gone, is refused as unauthorized and logs the connection out (the client logs in again).
    world.redis.restart();
    refused.sort_by_key(|request| matches!(request, Request::Refresh));
    for request in refused {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let answered = loop {
            match player.request(request.clone()).await {
                Err(error) if error.code() == Some(ErrorCode::Unavailable) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{request:?} is answered once Redis is back"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                answered => break answered.map_err(|error| error.code()),
            }
        };
        match request {
            Request::Refresh => {
                assert_eq!(answered.unwrap_err(), Some(ErrorCode::Unauthorized));
                assert_eq!(player.ping().await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
            }
            _ => assert!(answered.is_ok(), "{request:?} after the outage: {answered:?}"),
        }
    }
}

/// A client that sends an admin request's headers and then stalls mid-body is answered 408 after
/// the body timeout rather than holding the connection, and one stalled at shutdown does not hold
/// the gateway up (before, shutdown waited out its whole timeout for it).
#[tokio::test]
async fn an_admin_request_whose_body_never_arrives_holds_neither_the_port_nor_the_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let world = World::new();
    let gateway = world.gateway().await;
    let stall = || async {
        let mut stream = tokio::net::TcpStream::connect(gateway.admin).await.unwrap();
        let head = "POST /inventory/grant HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                    Content-Length: 100\r\n\r\n{";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
    };

    let mut stalled = stall().await;
    let mut response = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_string(&mut response));
    let _ = read.await.expect("answered within the body timeout");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"code\":\"bad_request\""), "{response}");

    let _stalled = stall().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = std::time::Instant::now();
    gateway.stop().await.unwrap();
    // The test gateway's shutdown timeout is 5 s: a stalled request used to take all of it.
    assert!(stopping.elapsed() < Duration::from_millis(4_500), "shutdown took {:?}", stopping.elapsed());
}
