//! The real `gateway` binary, twice: two processes sharing one Redis and one data directory, and
//! shutdown on SIGTERM; and a data directory it cannot make.

use std::time::Duration;

use game_client::Client;
use proto::{Encoding, Event, close};

use crate::support::{GatewayProcess, PATIENCE, World, closed, notice, username};

#[tokio::test]
async fn two_gateway_processes_share_accounts_events_and_revocations() {
    let world = World::new();
    let first = GatewayProcess::start(&world).await;
    let second = GatewayProcess::start(&world).await;
    let name = username("traveller");

    // Registered through one process, logged in through both: one auth.db, one Redis.
    let (on_first, session) = first.player(&name).await;
    let on_second = Client::connect(&second.url, Encoding::Json).await.unwrap();
    on_second.resume(&session.token).await.unwrap();

    // An event posted to the first process reaches the connection on the second.
    assert_eq!(notice(first.admin, session.account_id, "hello from the first").await, 202);
    let event = tokio::time::timeout(PATIENCE, on_second.next_event()).await.unwrap();
    assert_eq!(event, Some(Event::Notice { text: "hello from the first".into() }));

    // Logging out everywhere on the first closes the connection on the second at once.
    on_first.logout_everywhere().await.unwrap();
    assert_eq!(closed(&on_second).await.code, Some(close::SESSION_REVOKED));
}

#[tokio::test]
async fn sigterm_closes_connections_with_going_away_and_exits_zero() {
    let world = World::new();
    let process = GatewayProcess::start(&world).await;
    let (player, _) = process.player(&username("leaving")).await;
    let status = process.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(closed(&player).await.code, Some(close::GOING_AWAY));
}

#[tokio::test]
async fn every_acknowledged_update_reaches_sqlite_after_a_kill_9_and_restart() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let world = World::new();
    // Flush rarely, so the kill finds updates that are acknowledged but only in Redis; a short
    // lease lets the restarted process take over from the dead one quickly.
    let config = world.data_dir.path().join("crash.toml");
    std::fs::write(
        &config,
        "flush_interval = 2.0\nflush_lease = 2.5\nrequests_per_sec = 100000\nrequest_burst = 100000\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    let first = GatewayProcess::start_with(&world, &["--config", &config_arg]).await;

    let running = Arc::new(AtomicBool::new(true));
    let mut writers = Vec::new();
    for n in 0..20 {
        let (client, session) = first.player(&username(&format!("crash{n}-"))).await;
        let running = running.clone();
        writers.push(tokio::spawn(async move {
            let mut last_acked = None;
            let mut x = 0.0_f32;
            while running.load(Ordering::Relaxed) {
                x += 1.0;
                let update = proto::StateUpdate {
                    position: Some(proto::Position { x, y: 0.0, z: 0.0 }),
                    ..proto::StateUpdate::default()
                };
                match client.request(proto::Request::UpdateState(update)).await {
                    Ok(proto::Reply::StateAccepted { version }) => last_acked = Some((version, x)),
                    _ => break,
                }
            }
            (session.account_id, last_acked)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    first.kill_hard();
    running.store(false, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.push(writer.await.unwrap());
    }
    assert!(acknowledged.iter().all(|(_, last)| last.is_some()), "every writer got updates acknowledged");

    let _second = GatewayProcess::start_with(&world, &["--config", &config_arg]).await;
    let db = world.data_dir.path().join("player.db");
    let stored = |account_id: proto::AccountId| -> Option<(u64, f32)> {
        let conn = shard::rusqlite::Connection::open(&db).ok()?;
        conn.query_row(
            "SELECT version, x FROM player_state WHERE player_id = ?1",
            [account_id.0.as_bytes().as_slice()],
            |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, f64>(1)? as f32)),
        )
        .ok()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for (account_id, last) in acknowledged {
        let (version, x) = last.unwrap();
        loop {
            match stored(account_id) {
                // Not older than the last acknowledgement; the same version has the same value.
                Some((stored_version, stored_x))
                    if stored_version > version || (stored_version, stored_x) == (version, x) =>
                {
                    break;
                }
                _ => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "acknowledged version {version} of {account_id} reaches SQLite"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A data directory the gateway cannot make is named, with what to do, and said once: not a
/// bare `io: File exists` followed by the same words as its cause.
#[tokio::test]
async fn a_data_directory_that_is_a_file_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--data-dir", file.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .output();
    let output = tokio::time::timeout(PATIENCE, output).await.expect("the gateway stops").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("data directory {}", file.display())), "{stderr}");
    assert_eq!(stderr.matches("File exists").count(), 1, "{stderr}");
}
