//! Player state through the gateway: read-your-writes, who may read and write what, bad values,
//! the flusher writing to `player.db`, and Redis going away or coming back with older data.

use std::time::Duration;

use game_client::Client;
use proto::{ClientMessage, Encoding, ErrorCode, Position, Reply, Request, StateUpdate, codec};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{PATIENCE, World, username};

fn moved_to(x: f32, y: f32, z: f32) -> StateUpdate {
    StateUpdate { position: Some(Position { x, y, z }), ..StateUpdate::default() }
}

async fn update(client: &Client, update: StateUpdate) -> Result<u64, game_client::ClientError> {
    match client.request(Request::UpdateState(update)).await? {
        Reply::StateAccepted { version } => Ok(version),
        other => panic!("unexpected {other:?}"),
    }
}

async fn own_state(client: &Client) -> proto::PlayerState {
    match client.request(Request::GetState).await.unwrap() {
        Reply::State(state) => state,
        other => panic!("unexpected {other:?}"),
    }
}

/// The row of `player.db` for `account_id`: (version, x, health).
fn stored_row(world: &World, account_id: proto::AccountId) -> Option<(i64, f64, i64)> {
    let conn = shard::rusqlite::Connection::open(world.data_dir.path().join("player.db")).unwrap();
    conn.query_row(
        "SELECT version, x, health FROM player_state WHERE player_id = ?1",
        [account_id.0.as_bytes().as_slice()],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .ok()
}

#[tokio::test]
async fn a_player_reads_their_own_writes_at_once_in_both_encodings() {
    let world = World::new();
    let gateway = world.gateway().await;
    for encoding in [Encoding::Bincode, Encoding::Json] {
        let (player, session) = gateway.player(&username("mover")).await;
        let player = if encoding == Encoding::Json {
            let json = gateway.connect(Encoding::Json).await;
            json.resume(&session.token).await.unwrap();
            drop(player);
            json
        } else {
            player
        };
        let fresh = own_state(&player).await;
        assert_eq!(
            (fresh.version, fresh.position),
            (0, Position::default()),
            "the default state before any update"
        );

        // Versions only grow; they come from one sequence shared by every player.
        let first = update(&player, moved_to(1.5, 2.0, -3.25)).await.unwrap();
        let health = StateUpdate { health: Some(80), attributes: Some(vec![9, 9]), ..StateUpdate::default() };
        let second = update(&player, health).await.unwrap();
        assert!(0 < first && first < second, "versions {first} then {second}");
        let state = own_state(&player).await;
        assert_eq!(state.position, Position { x: 1.5, y: 2.0, z: -3.25 });
        assert_eq!((state.health, state.attributes.as_slice(), state.version), (80, &[9, 9][..], second));
        assert_eq!(state.account_id, session.account_id);
    }
}

#[tokio::test]
async fn other_players_see_public_state_only_and_unknown_players_are_not_found() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (alice, alice_session) = gateway.player(&username("alice")).await;
    let (bob, _) = gateway.player(&username("bob")).await;
    let secret = StateUpdate { attributes: Some(vec![42]), ..moved_to(7.0, 8.0, 9.0) };
    update(&alice, secret).await.unwrap();

    let seen = bob.request(Request::GetPlayerState { account_id: alice_session.account_id }).await.unwrap();
    let Reply::PublicState(public) = seen else { panic!("unexpected {seen:?}") };
    assert_eq!((public.account_id, public.position.x, public.version), (alice_session.account_id, 7.0, 1));

    let nobody = proto::AccountId(uuid::Uuid::new_v4());
    let missing = bob.request(Request::GetPlayerState { account_id: nobody }).await.unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn state_requests_before_login_are_unauthorized() {
    let world = World::new();
    let gateway = world.gateway().await;
    let stranger = gateway.connect(Encoding::Bincode).await;
    let refused = update(&stranger, moved_to(1.0, 1.0, 1.0)).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Unauthorized));
    let refused = stranger.request(Request::GetState).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn bad_values_are_refused_and_change_nothing() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (player, session) = gateway.player(&username("careful")).await;
    update(&player, moved_to(1.0, 2.0, 3.0)).await.unwrap();

    let bad_updates = [
        moved_to(f32::NAN, 0.0, 0.0),
        moved_to(0.0, f32::INFINITY, 0.0),
        moved_to(0.0, 0.0, f32::NEG_INFINITY),
        moved_to(2.0e6, 0.0, 0.0),
        StateUpdate { rotation: Some(f32::NAN), ..StateUpdate::default() },
        StateUpdate { health: Some(proto::limits::HEALTH_MAX + 1), ..StateUpdate::default() },
        StateUpdate {
            attributes: Some(vec![0; proto::limits::ATTRIBUTES_MAX_BYTES + 1]),
            ..StateUpdate::default()
        },
        StateUpdate::default(),
    ];
    for bad in bad_updates {
        let refused = update(&player, bad.clone()).await.unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::BadRequest), "{bad:?}");
    }
    // JSON cannot carry NaN; a number too large for an f32 arrives as infinity and is refused.
    let json = gateway.connect(Encoding::Json).await;
    json.resume(&session.token).await.unwrap();
    let frame = r#"{"id":5,"request":{"update_state":{"position":{"x":1e39,"y":0,"z":0},"rotation":null,"health":null,"attributes":null}}}"#;
    json.send_raw(Message::Text(frame.into())).await.unwrap();
    assert!(
        matches!(json.expect_response(5).await.unwrap(), proto::Outcome::Error(e) if e.code == ErrorCode::BadRequest)
    );

    let state = own_state(&player).await;
    assert_eq!((state.position, state.version), (Position { x: 1.0, y: 2.0, z: 3.0 }, 1));
}

/// 1,000 updates of one player between two flushes become one row write with the last value.
/// The flusher waits an hour between passes, and the flush is forced once every update is
/// acknowledged, so how fast the machine runs cannot split the updates over several passes.
#[tokio::test]
async fn the_flusher_writes_the_newest_state_to_sqlite_and_coalesces_updates() {
    let world = World::new();
    let config = gateway::GatewayConfig {
        requests_per_sec: 100_000,
        request_burst: 100_000,
        flush_interval: Duration::from_secs(3600),
        flush_lease: Duration::from_secs(7200),
        ..world.config()
    };
    let gateway = world.gateway_with(config.clone()).await;
    let (player, session) = gateway.player(&username("runner")).await;
    let bytes: Vec<Vec<u8>> = (1..=1000)
        .map(|n| {
            let message =
                ClientMessage { id: n, request: Request::UpdateState(moved_to(n as f32, 0.0, 0.0)) };
            codec::encode(Encoding::Bincode, &message).unwrap()
        })
        .collect();
    // Pipelined: all 1,000 leave before the first answer is read.
    let waiters: Vec<_> = (1..=1000).map(|id| player.expect_response(id)).collect();
    for frame in bytes {
        player.send_raw(Message::Binary(frame.into())).await.unwrap();
    }
    for outcome in futures_util::future::join_all(waiters).await {
        assert!(matches!(outcome.unwrap(), proto::Outcome::Ok(Reply::StateAccepted { .. })));
    }
    assert_eq!(gateway.metric("player_updates_accepted_total").await, Some(1000.0));

    let flush = gateway::ops::flush(&config, PATIENCE).await.unwrap();
    assert_eq!(flush.rows_written, 1, "1,000 updates became {} row writes", flush.rows_written);
    assert_eq!(stored_row(&world, session.account_id), Some((1000, 1000.0, 0)), "the last value");
}

#[tokio::test]
async fn direct_mode_acknowledges_after_sqlite_commits() {
    let world = World::new();
    let config = gateway::GatewayConfig {
        player_write_mode: gateway::config::PlayerWriteMode::Direct,
        ..world.config()
    };
    let gateway = world.gateway_with(config).await;
    let (player, session) = gateway.player(&username("direct")).await;
    assert_eq!(update(&player, moved_to(4.0, 0.0, 0.0)).await.unwrap(), 1);
    assert_eq!(stored_row(&world, session.account_id), Some((1, 4.0, 0)));
}

#[tokio::test]
async fn shutdown_ends_with_a_final_flush() {
    let world = World::new();
    let gateway = world.gateway_flushing_only_at_the_ends().await;
    let (player, session) = gateway.player(&username("last")).await;
    update(&player, moved_to(5.0, 0.0, 0.0)).await.unwrap();
    assert_eq!(stored_row(&world, session.account_id), None);
    gateway.stop().await.unwrap();
    assert_eq!(stored_row(&world, session.account_id), Some((1, 5.0, 0)));
}

#[tokio::test]
async fn while_redis_is_down_updates_are_refused_as_unavailable_and_resume_after() {
    let mut world = World::new();
    let gateway = world.gateway().await;
    let mut players = Vec::new();
    for n in 0..5 {
        players.push(gateway.player(&username(&format!("outage{n}-"))).await);
    }
    for (player, _) in &players {
        update(player, moved_to(1.0, 0.0, 0.0)).await.unwrap();
    }
    world.redis.stop();
    for (player, _) in &players {
        let refused = tokio::time::timeout(PATIENCE, update(player, moved_to(2.0, 0.0, 0.0))).await.unwrap();
        assert_eq!(
            refused.unwrap_err().code(),
            Some(ErrorCode::Unavailable),
            "refused, never silently dropped"
        );
    }
    world.redis.restart();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for (player, _) in &players {
        while update(player, moved_to(3.0, 0.0, 0.0)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "updates are accepted again once Redis is back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(own_state(player).await.position.x, 3.0);
    }
}

/// Redis restarts from a snapshot taken before the player's last moves, which `player.db`
/// already holds: the flusher notices the buffer went back in time, the player reads their newer
/// state again, and a later partial update builds on it.
#[tokio::test]
async fn after_redis_comes_back_from_an_old_snapshot_a_player_reads_their_newer_state_again() {
    let mut world = World::new();
    let config = gateway::GatewayConfig { flush_interval: Duration::from_millis(200), ..world.config() };
    let gateway = world.gateway_with(config).await;
    let (player, session) = gateway.player(&username("rewound")).await;
    update(&player, moved_to(1.0, 0.0, 0.0)).await.unwrap();
    let flushed = |x: f64| stored_row(&world, session.account_id).is_some_and(|row| row.1 == x);
    eventually(|| flushed(1.0), "the first move reaches player.db").await;
    world.redis.save_snapshot();
    for x in 2..=5 {
        update(&player, moved_to(x as f32, 0.0, 0.0)).await.unwrap();
    }
    eventually(|| flushed(5.0), "the last move reaches player.db").await;

    world.redis.restart();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(Reply::State(state)) = player.request(Request::GetState).await
            && state.position.x == 5.0
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the player reads their newer state again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The read above can come while the heal is under way (its first step drops the record).
    while gateway.metric("player_buffer_heals_total").await < Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "the heal is counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = StateUpdate { health: Some(42), ..StateUpdate::default() };
    update(&player, health).await.unwrap();
    eventually(
        || stored_row(&world, session.account_id).is_some_and(|row| (row.1, row.2) == (5.0, 42)),
        "the partial update reaches player.db on top of the newer position",
    )
    .await;
}

/// Waits until `condition` holds, failing with `what` after [`PATIENCE`].
async fn eventually(condition: impl Fn() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
