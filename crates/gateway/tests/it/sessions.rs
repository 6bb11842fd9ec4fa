//! Session lifetime: rotation, logout, logout everywhere across gateway processes, expiry under a
//! controlled clock, and events that find a player on whichever gateway they are connected to.

use std::time::Duration;

use game_client::{Client, ConnectOptions};
use gateway::GatewayConfig;
use proto::{ClientMessage, Encoding, ErrorCode, Event, Reply, Request, close, codec};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{PASSWORD, PATIENCE, SERVICE_TOKEN, World, admin, closed, notice, username};

#[tokio::test]
async fn refresh_rotates_the_token_and_the_old_one_stops_working_everywhere() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (client, old) = gateway.player(&username("rotor")).await;
    let elsewhere =
        Client::connect(&format!("{}?token={}", gateway.url, old.token), Encoding::Json).await.unwrap();
    elsewhere.whoami().await.unwrap();

    let new = client.refresh().await.unwrap();
    assert_ne!(new.token, old.token);
    assert_eq!(new.account_id, old.account_id);
    assert_eq!(new.expires_at_ms, old.expires_at_ms, "rotation never extends a session's absolute lifetime");
    client.whoami().await.unwrap();

    assert_eq!(closed(&elsewhere).await.code, Some(close::SESSION_REVOKED));
    let late = gateway.connect(Encoding::Bincode).await;
    assert_eq!(late.resume(&old.token).await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
    late.resume(&new.token).await.unwrap();
}

#[tokio::test]
async fn of_concurrent_refreshes_of_one_session_exactly_one_succeeds() {
    const N_CONNECTIONS: usize = 10;
    let world = World::new();
    let gateway = world.gateway().await;
    let (first, old) = gateway.player(&username("racer")).await;
    let mut clients = vec![first];
    for _ in 1..N_CONNECTIONS {
        let client = gateway.connect(Encoding::Bincode).await;
        client.resume(&old.token).await.unwrap();
        clients.push(client);
    }

    let refreshes = futures_util::future::join_all(clients.iter().map(Client::refresh)).await;
    // The losers answer `unauthorized`, or are closed first by the winner's revocation.
    let new: Vec<_> = refreshes.into_iter().filter_map(Result::ok).collect();
    assert_eq!(new.len(), 1, "{new:?}");

    let late = gateway.connect(Encoding::Bincode).await;
    assert_eq!(late.resume(&old.token).await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
    late.resume(&new[0].token).await.unwrap();
}

/// Logging one account in without end (a script, a leaked password) keeps at most
/// `max_sessions_per_account` sessions: each login past it ends the oldest, whose connection is
/// kicked like any revoked one, and the new login always succeeds.
#[tokio::test]
async fn a_login_past_the_accounts_cap_kicks_its_oldest_session() {
    const CAP: usize = 3;
    let world = World::new();
    let gateway = world.gateway_with(GatewayConfig { max_sessions_per_account: CAP, ..world.config() }).await;
    let name = username("hoarder");
    let mut logins = vec![gateway.player(&name).await];
    for _ in 1..CAP {
        logins.push(gateway.player(&name).await);
    }
    for (client, _) in &logins {
        client.whoami().await.expect("within the cap, every session lives");
    }

    let (newest, _) = gateway.player(&name).await;
    newest.whoami().await.unwrap();
    let (oldest, oldest_session) = &logins[0];
    let event = tokio::time::timeout(PATIENCE, oldest.next_event()).await.unwrap();
    assert!(matches!(event, Some(Event::Kicked { code: close::SESSION_REVOKED, .. })), "{event:?}");
    assert_eq!(closed(oldest).await.code, Some(close::SESSION_REVOKED));
    let late = gateway.connect(Encoding::Bincode).await;
    let refused = late.resume(&oldest_session.token).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Unauthorized));
    for (client, session) in &logins[1..] {
        client.whoami().await.expect("the others live on");
        gateway.connect(Encoding::Bincode).await.resume(&session.token).await.expect("still resumable");
    }
}

#[tokio::test]
async fn logout_ends_the_session_but_keeps_the_connection() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (client, session) = gateway.player(&username("leaver")).await;
    client.logout().await.unwrap();
    assert_eq!(client.ping().await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
    assert_eq!(client.resume(&session.token).await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn logout_everywhere_closes_the_accounts_connections_on_another_gateway() {
    let world = World::new();
    let gateway_a = world.gateway().await;
    let gateway_b = world.gateway().await;
    let name = username("roamer");
    let (on_a, _) = gateway_a.player(&name).await;
    let (on_b, _) = gateway_b.player(&name).await;
    let (bystander, _) = gateway_b.player(&username("bystander")).await;

    on_a.logout_everywhere().await.unwrap();

    let event = tokio::time::timeout(PATIENCE, on_b.next_event()).await.unwrap();
    assert!(matches!(event, Some(Event::Kicked { code: close::SESSION_REVOKED, .. })), "{event:?}");
    assert_eq!(closed(&on_b).await.code, Some(close::SESSION_REVOKED));
    assert_eq!(on_a.ping().await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
    bystander.ping().await.unwrap();
}

#[tokio::test]
async fn an_event_reaches_a_player_on_whichever_gateway_they_are_connected_to() {
    let world = World::new();
    let gateway_a = world.gateway().await;
    let gateway_b = world.gateway().await;
    let (player, session) = gateway_b.player(&username("listener")).await;

    assert_eq!(notice(gateway_a.admin, session.account_id, "server restarts at noon").await, 202);
    let event = tokio::time::timeout(PATIENCE, player.next_event()).await.unwrap();
    assert_eq!(event, Some(Event::Notice { text: "server restarts at noon".into() }));
}

/// A notice reaches players as the game's own word, so only holders of the service token send
/// one, and only to an account that exists; a refused notice reaches no one.
#[tokio::test]
async fn a_notice_needs_the_service_token_and_a_known_account() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (player, session) = gateway.player(&username("reader")).await;
    let path = format!("/accounts/{}/notice", session.account_id);
    let post = |token| admin(gateway.admin, "POST", &path, token, "visit evil.example");
    assert_eq!(post(None).await.0, 401);
    assert_eq!(post(Some("not-the-service-token")).await.0, 401);
    let unknown = proto::AccountId(uuid::Uuid::now_v7());
    assert_eq!(notice(gateway.admin, unknown, "hello").await, 404);

    let off = world.gateway_with(GatewayConfig { service_token: None, ..world.config() }).await;
    assert_eq!(admin(off.admin, "POST", &path, Some(SERVICE_TOKEN), "hello").await.0, 404, "endpoint off");

    assert_eq!(notice(gateway.admin, session.account_id, "maintenance at noon").await, 202);
    let event = tokio::time::timeout(PATIENCE, player.next_event()).await.unwrap();
    assert_eq!(
        event,
        Some(Event::Notice { text: "maintenance at noon".into() }),
        "the first notice to arrive"
    );
}

/// Tools that call the admin port read one error shape: a malformed id in the path or a notice
/// too long is answered `{"code","message"}` like every other refusal, and only after the token
/// check, so a caller without the token learns nothing about the route.
#[tokio::test]
async fn admin_refusals_are_json_and_come_after_the_token_check() {
    let world = World::new();
    let gateway = world.gateway().await;
    let bad_request = |(status, body): (u16, String)| {
        let error: proto::ErrorBody =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {body:?}"));
        (status, error.code)
    };
    for (method, path) in [
        ("POST", "/accounts/not-an-id/notice"),
        ("GET", "/inventory/not-an-id/ledger"),
        ("POST", "/match/not-an-id/result"),
    ] {
        let refused = admin(gateway.admin, method, path, Some(SERVICE_TOKEN), "{\"winner\":0}").await;
        assert_eq!(bad_request(refused), (400, ErrorCode::BadRequest), "{method} {path}");
        let without_token = admin(gateway.admin, method, path, None, "").await;
        assert_eq!(bad_request(without_token), (401, ErrorCode::Unauthorized), "{method} {path}");
    }
    let (_player, session) = gateway.player(&username("listener")).await;
    let path = format!("/accounts/{}/notice", session.account_id);
    let too_long = "x".repeat(world.config().max_frame_bytes);
    let refused = admin(gateway.admin, "POST", &path, Some(SERVICE_TOKEN), &too_long).await;
    assert_eq!(bad_request(refused), (413, ErrorCode::BadRequest));
}

#[tokio::test]
async fn an_idle_session_expires_and_a_used_one_slides() {
    let world = World::new();
    let gateway = world.gateway().await;
    let idle_ttl = gateway::GatewayConfig::default().session_idle_ttl;
    let (client, session) = gateway.player(&username("sleeper")).await;
    client.close().await;

    // Used just before each idle period ends, the session lives on.
    for _ in 0..3 {
        world.clock.advance(idle_ttl - Duration::from_secs(60));
        let client = gateway.connect(Encoding::Bincode).await;
        client.resume(&session.token).await.unwrap();
        client.close().await;
    }
    world.clock.advance(idle_ttl + Duration::from_secs(1));
    let client = gateway.connect(Encoding::Bincode).await;
    assert_eq!(client.resume(&session.token).await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_much_it_is_used() {
    let world = World::new();
    let config = gateway::GatewayConfig {
        session_idle_ttl: Duration::from_secs(3600),
        session_max_lifetime: Duration::from_secs(3 * 3600),
        ..world.config()
    };
    let gateway = world.gateway_with(config).await;
    let (_, session) = gateway.player(&username("veteran")).await;
    for _ in 0..3 {
        world.clock.advance(Duration::from_secs(3000));
        gateway.connect(Encoding::Json).await.resume(&session.token).await.unwrap();
    }
    world.clock.advance(Duration::from_secs(3000));
    let client = gateway.connect(Encoding::Json).await;
    assert_eq!(client.resume(&session.token).await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn an_open_connection_is_closed_when_its_session_expires() {
    let world = World::new();
    let config = gateway::GatewayConfig {
        heartbeat_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_secs(5),
        session_idle_ttl: Duration::from_secs(3600),
        session_max_lifetime: Duration::from_secs(7200),
        ..world.config()
    };
    let gateway = world.gateway_with(config).await;
    let (client, _) = gateway.player(&username("lingerer")).await;
    world.clock.advance(Duration::from_secs(7201));
    assert_eq!(closed(&client).await.code, Some(close::SESSION_EXPIRED));
}

#[tokio::test]
async fn an_invalid_handshake_token_closes_the_connection_with_its_code() {
    let world = World::new();
    let gateway = world.gateway().await;
    let options = ConnectOptions { token: Some("f".repeat(64)), ..ConnectOptions::new(Encoding::Bincode) };
    let client = Client::connect_with(&gateway.url, options).await.unwrap();
    assert_eq!(closed(&client).await.code, Some(close::INVALID_TOKEN));
}

/// A refresh that finds the session ended (here idle too long, before any heartbeat noticed)
/// leaves the connection logged out, as the answer says: it serves nothing more on that session,
/// and a `login` on it needs no `logout` first.
#[tokio::test]
async fn a_refresh_that_finds_the_session_ended_leaves_the_connection_logged_out() {
    let world = World::new();
    let gateway = world.gateway().await;
    let name = username("napper");
    let (client, _) = gateway.player(&name).await;
    world.clock.advance(gateway::GatewayConfig::default().session_idle_ttl + Duration::from_secs(1));

    assert_eq!(client.refresh().await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
    assert_eq!(client.ping().await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
    client.login(&name, PASSWORD).await.unwrap();
    client.ping().await.unwrap();
}

/// A connection kicked because its session was revoked runs none of the requests it had already
/// received behind the one in progress: they would act for a session that has ended. (Before, the
/// connection picked between its close and its next frame at random, so a few more ran.)
#[tokio::test]
async fn a_kicked_connection_runs_none_of_the_requests_still_waiting_behind_it() {
    const N_TRIALS: usize = 8;
    const N_QUEUED: u64 = 5;
    const STOLEN_HEALTH: u32 = 7;
    let world = World::new();
    let gateway = world.gateway().await;
    for trial in 0..N_TRIALS {
        let name = username("stolen");
        let (thief, _) = gateway.player(&name).await;
        let (owner, _) = gateway.player(&name).await;
        // Registrations from elsewhere keep the password hashers busy, so the thief's own
        // registration below is still in progress when its session is revoked.
        let mut fillers = Vec::new();
        for _ in 0..4 {
            let filler = gateway.connect(Encoding::Bincode).await;
            send(&filler, 1, Request::Register { username: username("filler"), password: PASSWORD.into() })
                .await;
            fillers.push(filler);
        }
        send(&thief, 1, Request::Register { username: username("cover"), password: PASSWORD.into() }).await;
        for id in 2..2 + N_QUEUED {
            let update = proto::StateUpdate { health: Some(STOLEN_HEALTH), ..Default::default() };
            send(&thief, id, Request::UpdateState(update)).await;
        }

        owner.logout_everywhere().await.unwrap();
        assert_eq!(closed(&thief).await.code, Some(close::SESSION_REVOKED));

        let (owner, _) = gateway.player(&name).await;
        match owner.request(Request::GetState).await.unwrap() {
            Reply::State(state) => assert_ne!(state.health, STOLEN_HEALTH, "trial {trial}"),
            other => panic!("unexpected reply: {other:?}"),
        }
    }
}

/// Sends a request without waiting for its answer.
async fn send(client: &Client, id: u64, request: Request) {
    let bytes = codec::encode(client.encoding(), &ClientMessage { id, request }).unwrap();
    client.send_raw(Message::Binary(bytes.into())).await.unwrap();
}
