//! The real `gamectl` binary against real gateways and a real Redis: an online backup under load
//! restores every acknowledged write, restore refuses over a running gateway, `integrity` finds
//! a damaged shard, clear errors, disabling an account ends its live session, and `status`
//! reports the shards, the player buffer and a risky Redis setting; `chat retire` refuses a
//! gateway's later writes to the year, finishes an interrupted retire and repeats as a no-op, and
//! a damaged archive fails `integrity` and `status`; without the gateways' Redis, `gamectl`
//! refuses.

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::chat::{ChatReply, ChatRequest, MessageId};
use proto::{ErrorCode, Reply, Request, close};

use crate::support::{PASSWORD, World, closed, join, username};

/// Runs `gamectl` with `args` against the data directory and the world's Redis.
async fn gamectl(world: &World, data_dir: &Path, args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamectl"))
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--redis-url", &world.redis.url()])
        .args(["--key-prefix", "test:"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("gamectl finishes")
        .expect("gamectl runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_success(output: &Output) {
    assert!(output.status.success(), "gamectl failed: {}\n{}", stderr(output), stdout(output));
}

/// What the writers had acknowledged: per player (account, version, x), and chat messages.
#[derive(Clone, Default)]
struct Acknowledged {
    states: Vec<(proto::AccountId, u64, f32)>,
    messages: Vec<(MessageId, u64)>,
}

#[tokio::test]
async fn backup_under_load_restores_every_acknowledged_write() {
    let world = World::new();
    // Flush rarely: at backup time the newest states are only in Redis, so the backup must
    // force the flush itself.
    let config = gateway::GatewayConfig {
        flush_interval: Duration::from_secs(30),
        flush_lease: Duration::from_secs(60),
        chat_sends_per_window: 1_000_000,
        requests_per_sec: 100_000,
        request_burst: 100_000,
        ..world.config()
    };
    let gateway = world.gateway_with(config).await;

    let n_players = 6;
    let acked: Arc<Mutex<Vec<Acknowledged>>> = Arc::new(Mutex::new(vec![Acknowledged::default(); n_players]));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut writers = Vec::new();
    for n in 0..n_players {
        let (client, session) = gateway.player(&username(&format!("backup{n}-"))).await;
        let room = join(&client, "lobby").await.channel_id;
        let (acked, running) = (acked.clone(), running.clone());
        writers.push(tokio::spawn(async move {
            let mut x = 0.0_f32;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                x += 1.0;
                let update = proto::StateUpdate {
                    position: Some(proto::Position { x, y: 0.0, z: 0.0 }),
                    ..proto::StateUpdate::default()
                };
                let Ok(Reply::StateAccepted { version }) = client.request(Request::UpdateState(update)).await
                else {
                    panic!("update refused");
                };
                acked.lock().unwrap()[n].states = vec![(session.account_id, version, x)];
                let send = ChatRequest::Send { channel_id: room, text: format!("{x}") };
                let Ok(Reply::Chat(ChatReply::Sent { message_id, sent_at_ms, .. })) =
                    client.request(Request::Chat(send)).await
                else {
                    panic!("send refused");
                };
                acked.lock().unwrap()[n].messages.push((message_id, sent_at_ms));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Everything acknowledged before the backup starts must be in it.
    let before: Vec<Acknowledged> = acked.lock().unwrap().clone();
    let backup_dir = tempfile::tempdir().unwrap();
    let backup_path = backup_dir.path().join("backup-1");
    let output =
        gamectl(&world, world.data_dir.path(), &["backup", "--to", backup_path.to_str().unwrap()]).await;
    assert_success(&output);
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup_path.join("manifest.json")).unwrap()).unwrap();
    let rows_flushed = manifest["player_flush"]["rows_written"].as_u64().unwrap();
    assert!(rows_flushed > 0, "the backup flushed buffered states first: {manifest}");

    let restored = tempfile::tempdir().unwrap();
    let output =
        gamectl(&world, restored.path(), &["restore", "--from", backup_path.to_str().unwrap()]).await;
    assert_success(&output);
    assert_success(&gamectl(&world, restored.path(), &["integrity"]).await);

    let player_db = shard::rusqlite::Connection::open(restored.path().join("player.db")).unwrap();
    let mut n_messages = 0;
    for player in &before {
        for (account_id, version, x) in &player.states {
            let (stored_version, stored_x): (i64, f64) = player_db
                .query_row(
                    "SELECT version, x FROM player_state WHERE player_id = ?1",
                    [account_id.0.as_bytes().as_slice()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .expect("the player's state is in the backup");
            let stored_version = stored_version as u64;
            assert!(
                stored_version > *version || (stored_version == *version && stored_x as f32 == *x),
                "acknowledged version {version} of {account_id} is in the backup (found {stored_version})"
            );
        }
        for (message_id, sent_at_ms) in &player.messages {
            let year_db = restored.path().join(chat::shard_file_name(chat::year_of_ms(*sent_at_ms)));
            let chat_db = shard::rusqlite::Connection::open(year_db).unwrap();
            let found: i64 = chat_db
                .query_row(
                    "SELECT count(*) FROM messages WHERE id = ?1",
                    [message_id.0.as_bytes().as_slice()],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(found, 1, "acknowledged message {message_id:?} is in the backup");
            n_messages += 1;
        }
    }
    assert!(n_messages > 0, "the load sent messages before the backup");
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn restore_refuses_over_a_running_gateway() {
    let world = World::new();
    let gateway = world.gateway().await;
    let name = username("restorer");
    let (_client, _) = gateway.player(&name).await;
    let backup_dir = tempfile::tempdir().unwrap();
    let backup_path = backup_dir.path().join("b");
    assert_success(
        &gamectl(&world, world.data_dir.path(), &["backup", "--to", backup_path.to_str().unwrap()]).await,
    );

    let refused =
        gamectl(&world, world.data_dir.path(), &["restore", "--from", backup_path.to_str().unwrap()]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("a gateway is running"), "{}", stderr(&refused));

    // Once the gateway stops, the same restore goes through and sets the old shards aside.
    gateway.stop().await.unwrap();
    let output =
        gamectl(&world, world.data_dir.path(), &["restore", "--from", backup_path.to_str().unwrap()]).await;
    assert_success(&output);
    assert!(stdout(&output).contains("pre-restore-"), "{}", stdout(&output));
    let restarted = world.gateway().await;
    let client = restarted.connect(proto::Encoding::Bincode).await;
    client.login(&name, PASSWORD).await.expect("the restored account logs in");
    restarted.stop().await.unwrap();
}

/// A restore that stopped half-way (every shard set aside, one of the backup's moved in) is
/// finished by running it again: the originals stay together where the first run put them, and
/// the report says so.
#[tokio::test]
async fn a_restore_run_again_after_stopping_half_way_keeps_the_originals_in_one_place() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (in_backup, after_backup) = (username("inbackup"), username("afterbackup"));
    gateway.player(&in_backup).await;
    let backup_dir = tempfile::tempdir().unwrap();
    let backup_path = backup_dir.path().join("b");
    let data = world.data_dir.path();
    assert_success(&gamectl(&world, data, &["backup", "--to", backup_path.to_str().unwrap()]).await);
    gateway.player(&after_backup).await;
    gateway.stop().await.unwrap();

    // What a restore leaves when it stops after setting the shards aside and moving one in.
    let first_aside = data.join("pre-restore-1000");
    std::fs::create_dir(&first_aside).unwrap();
    for entry in std::fs::read_dir(data).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if [".db", ".db-wal", ".db-shm"].iter().any(|suffix| name.ends_with(suffix)) {
            // A write-ahead log SQLite removes as the stopped gateway's last connection closes.
            match std::fs::rename(data.join(&name), first_aside.join(&name)) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound && !name.ends_with(".db") => {}
                renamed => renamed.unwrap(),
            }
        }
    }
    std::fs::copy(backup_path.join("auth.db"), data.join("auth.db")).unwrap();
    std::fs::create_dir(data.join(".restore-staging")).unwrap();

    let output = gamectl(&world, data, &["restore", "--from", backup_path.to_str().unwrap()]).await;
    assert_success(&output);
    assert!(stdout(&output).contains("pre-restore-1000"), "{}", stdout(&output));
    let usernames = |db: &Path| -> Vec<String> {
        let conn = shard::rusqlite::Connection::open(db).unwrap();
        let mut query = conn.prepare("SELECT username FROM accounts").unwrap();
        query.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let original = usernames(&first_aside.join("auth.db"));
    assert!(original.contains(&after_backup), "the original auth.db was overwritten: {original:?}");
    let restored = usernames(&data.join("auth.db"));
    assert!(restored.contains(&in_backup) && !restored.contains(&after_backup), "{restored:?}");
}

#[tokio::test]
async fn chat_retire_refuses_later_writes_finishes_an_interrupted_run_and_repeats_as_a_no_op() {
    // gamectl reads the real clock, so the year retired is one that has surely ended.
    let year = 2024;
    let world = World::new();
    world.clock.set(chat::year_start_ms(year + 1) - 10_000);
    let gateway = world.gateway().await;
    let (ada, _) = gateway.player(&username("ada")).await;
    let (_, bob) = gateway.player(&username("bob")).await;
    let direct =
        |text: &str| Request::Chat(ChatRequest::SendDirect { to: bob.account_id, text: text.into() });
    assert!(matches!(ada.request(direct("acknowledged")).await, Ok(Reply::Chat(ChatReply::Sent { .. }))));

    let data = world.data_dir.path();
    let retire = ["chat", "retire", "2024"];
    let output = gamectl(&world, data, &retire).await;
    assert_success(&output);
    assert!(stdout(&output).starts_with("retired 2024: 1 messages"), "{}", stdout(&output));
    // The gateway, still in 2024 by its clock, sends into the year gamectl just retired.
    let late = ada.request(direct("late")).await;
    assert_eq!(late.expect_err("refused").code(), Some(ErrorCode::Conflict));

    // Stopped after the archive was renamed into place, before the live shard was removed: the
    // archive is a copy of the marked shard, so copying it back recreates that state.
    let (live, archived) = (data.join("chat-2024.db"), data.join("chat-archive/chat-2024.db"));
    std::fs::copy(&archived, &live).unwrap();
    let mut permissions = std::fs::metadata(&live).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false, reason = "a test file owned by the test")]
    permissions.set_readonly(false);
    std::fs::set_permissions(&live, permissions).unwrap();
    let listed = |output: &Output, state: &str| {
        stdout(output).lines().any(|line| line.split_whitespace().take(2).eq(["2024", state]))
    };
    let list = gamectl(&world, data, &["chat", "list"]).await;
    assert!(listed(&list, "live") && listed(&list, "archived"), "{}", stdout(&list));

    let output = gamectl(&world, data, &retire).await;
    assert_success(&output);
    assert!(stdout(&output).starts_with("resumed 2024: 1 messages"), "{}", stdout(&output));
    let list = gamectl(&world, data, &["chat", "list"]).await;
    assert!(!listed(&list, "live") && listed(&list, "archived"), "{}", stdout(&list));
    assert!(stdout(&list).lines().any(|line| line.starts_with("2024") && line.contains(" 1 messages")));

    let output = gamectl(&world, data, &retire).await;
    assert_success(&output);
    assert!(stdout(&output).contains("2024 is already retired"), "{}", stdout(&output));

    // The archive is checked with the live shards, and a damaged one is reported.
    assert_success(&gamectl(&world, data, &["integrity"]).await);
    let mut permissions = std::fs::metadata(&archived).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false, reason = "a test file owned by the test")]
    permissions.set_readonly(false);
    std::fs::set_permissions(&archived, permissions).unwrap();
    let mut bytes = std::fs::read(&archived).unwrap();
    assert!(bytes.len() > 4096, "the archive has pages past the first");
    bytes[4096..].fill(0xAB);
    std::fs::write(&archived, bytes).unwrap();
    let output = gamectl(&world, data, &["integrity"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let report = stdout(&output);
    assert!(
        report.lines().any(|line| line.starts_with("chat-archive/chat-2024.db") && line.contains("FAILED")),
        "{report}"
    );
    let output = gamectl(&world, data, &["status"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(stdout(&output).contains("chat years NOT listed"), "{}", stdout(&output));
}

/// A mistyped year is refused with a reason and leaves no file: one that has ended, one no
/// message id can be stamped in, and a negative one (whose file no listing reads back as a year).
#[tokio::test]
async fn chat_provision_refuses_years_nothing_can_be_written_in() {
    let world = World::new();
    let gateway = world.gateway().await;
    gateway.stop().await.unwrap();
    let data = world.data_dir.path();
    let shards = || {
        let mut names: Vec<_> = std::fs::read_dir(data)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".db"))
            .collect();
        names.sort();
        names
    };
    let before = shards();
    for (year, reason) in [("2020", "has ended"), ("-5", "has ended"), ("99999", "last year a message id")] {
        let output = gamectl(&world, data, &["chat", "provision", "--", year]).await;
        assert_eq!(output.status.code(), Some(1), "{year}: {}", stdout(&output));
        assert!(stderr(&output).contains(reason), "{year}: {}", stderr(&output));
    }
    assert_eq!(shards(), before, "no shard made");
    // gamectl reads the real clock: its next year is always one to provision.
    let next = chat::year_of_ms(clock::Clock::now_ms(&clock::SystemClock)) + 1;
    assert_success(&gamectl(&world, data, &["chat", "provision", &next.to_string()]).await);

    // Provisioning it again changes nothing, and so does not migrate it from an older release
    // (whose gateways may be writing it): that is refused, saying which gamectl to run.
    let path = data.join(chat::shard_file_name(next));
    let set_version = |version: u32| {
        let conn = shard::rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
    };
    let older = chat::lifecycle::year_schema_version() - 1;
    set_version(older);
    let output = gamectl(&world, data, &["chat", "provision", &next.to_string()]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stderr(&output).contains("older than this gamectl"), "{}", stderr(&output));
    let conn = shard::rusqlite::Connection::open(&path).unwrap();
    let version: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
    assert_eq!(version, older, "left as it was");
}

/// Two retires at once would remove each other's copy and live files: the second is refused,
/// saying why, while the first holds the data directory's retire lock.
#[tokio::test]
async fn chat_retire_is_refused_while_another_retire_runs() {
    let year = 2024;
    let world = World::new();
    world.clock.set(chat::year_start_ms(year + 1) - 10_000);
    let gateway = world.gateway().await;
    gateway.stop().await.unwrap();
    let data = world.data_dir.path();
    let lock = std::fs::File::create(data.join(chat::lifecycle::RETIRE_LOCK_FILE)).unwrap();
    lock.try_lock().unwrap();
    let output = gamectl(&world, data, &["chat", "retire", "2024"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stderr(&output).contains("another chat retire is running"), "{}", stderr(&output));
    assert!(data.join("chat-2024.db").exists(), "the year stays live");

    drop(lock);
    // A lock file it cannot open (here a directory: the tests run as root, whom permissions do
    // not stop) is named, with what to do.
    let lock_path = data.join(chat::lifecycle::RETIRE_LOCK_FILE);
    std::fs::remove_file(&lock_path).unwrap();
    std::fs::create_dir(&lock_path).unwrap();
    let output = gamectl(&world, data, &["chat", "retire", "2024"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stderr(&output).contains(&format!("cannot open {}", lock_path.display())), "{}", stderr(&output));
    std::fs::remove_dir(&lock_path).unwrap();

    let output = gamectl(&world, data, &["chat", "retire", "2024"]).await;
    assert_success(&output);
    assert!(stdout(&output).starts_with("retired 2024"), "{}", stdout(&output));
}

#[tokio::test]
async fn integrity_reports_a_corrupt_shard() {
    let world = World::new();
    let gateway = world.gateway().await;
    for n in 0..3 {
        gateway.player(&username(&format!("sound{n}-"))).await;
    }
    gateway.stop().await.unwrap();
    assert_success(&gamectl(&world, world.data_dir.path(), &["integrity"]).await);

    // Overwrite the second page of auth.db (the accounts table) with garbage.
    let auth_db = world.data_dir.path().join("auth.db");
    let mut bytes = std::fs::read(&auth_db).unwrap();
    assert!(bytes.len() >= 8192, "auth.db has a second page");
    bytes[4096..8192].fill(0xAB);
    std::fs::write(&auth_db, bytes).unwrap();

    let output = gamectl(&world, world.data_dir.path(), &["integrity"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let report = stdout(&output);
    assert!(report.lines().any(|line| line.starts_with("auth.db") && line.contains("FAILED")), "{report}");
    assert!(report.lines().any(|line| line.starts_with("player.db") && line.ends_with("ok")), "{report}");
}

/// A backup copies a damaged page as it is: it must fail instead of reporting a complete backup
/// that a rotation would keep in place of the sound ones; a destination that is a file is named,
/// and a file error is said once.
#[tokio::test]
async fn backup_fails_on_a_damaged_shard_and_names_a_destination_it_cannot_use() {
    let world = World::new();
    let gateway = world.gateway().await;
    for n in 0..3 {
        gateway.player(&username(&format!("kept{n}-"))).await;
    }
    gateway.stop().await.unwrap();
    let data = world.data_dir.path();
    let backups = tempfile::tempdir().unwrap();

    let file = backups.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let output = gamectl(&world, data, &["backup", "--to", file.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stderr(&output).contains("exists and is not a directory"), "{}", stderr(&output));

    let sound = backups.path().join("sound");
    assert_success(&gamectl(&world, data, &["backup", "--to", sound.to_str().unwrap()]).await);
    assert!(sound.join("manifest.json").is_file());
    // A file error is said once, not once more as its own cause.
    let output = gamectl(&world, &file, &["restore", "--from", sound.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert_eq!(stderr(&output).matches("File exists").count(), 1, "{}", stderr(&output));

    let auth_db = data.join("auth.db");
    let mut bytes = std::fs::read(&auth_db).unwrap();
    assert!(bytes.len() >= 8192, "auth.db has a second page");
    bytes[4096..8192].fill(0xAB);
    std::fs::write(&auth_db, bytes).unwrap();
    let damaged = backups.path().join("damaged");
    let output = gamectl(&world, data, &["backup", "--to", damaged.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stderr(&output).contains("auth.db is damaged"), "{}", stderr(&output));
    assert!(!damaged.join("manifest.json").exists(), "no manifest: not a backup");
}

#[tokio::test]
async fn clear_errors_for_a_wrong_data_dir_a_missing_shard_and_a_silent_redis() {
    let world = World::new();
    let missing = world.data_dir.path().join("nowhere");
    let output = gamectl(&world, &missing, &["integrity"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("not a data directory"), "{}", stderr(&output));
    assert!(!missing.exists(), "a wrong data directory is left untouched");

    std::fs::write(world.data_dir.path().join("chat.db"), b"").unwrap();
    let output = gamectl(&world, world.data_dir.path(), &["flush"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("missing shard"), "{}", stderr(&output));

    // A port where nothing listens: the error names Redis, within the timeout.
    std::fs::write(world.data_dir.path().join("player.db"), b"").unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", dead.local_addr().unwrap());
    drop(dead);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamectl"))
        .args([
            "--data-dir",
            world.data_dir.path().to_str().unwrap(),
            "--redis-url",
            &url,
            "--timeout",
            "2",
            "flush",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("Redis"), "{}", stderr(&output));
}

#[tokio::test]
async fn disabling_an_account_ends_its_live_session_and_refuses_its_login() {
    let world = World::new();
    let gateway = world.gateway().await;
    let name = username("banned");
    let (client, session) = gateway.player(&name).await;

    let output = gamectl(&world, world.data_dir.path(), &["account", "disable", &name]).await;
    assert_success(&output);
    assert_eq!(closed(&client).await.code, Some(close::SESSION_REVOKED));

    let again = gateway.connect(proto::Encoding::Bincode).await;
    let error = again.login(&name, PASSWORD).await.expect_err("a disabled account cannot log in");
    assert_eq!(error.code(), Some(ErrorCode::Forbidden));
    assert!(again.resume(&session.token).await.is_err(), "its old token is dead");

    let shown = gamectl(&world, world.data_dir.path(), &["--json", "account", "show", &name]).await;
    assert_success(&shown);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["disabled"], true);

    // Enabled again, it logs in; revoking its sessions closes that connection too.
    assert_success(&gamectl(&world, world.data_dir.path(), &["account", "enable", &name]).await);
    again.login(&name, PASSWORD).await.expect("an enabled account logs in");
    assert_success(&gamectl(&world, world.data_dir.path(), &["sessions", "revoke", &name]).await);
    assert_eq!(closed(&again).await.code, Some(close::SESSION_REVOKED));
    gateway.stop().await.unwrap();
}

/// Without a Redis URL `gamectl` has only an empty store of its own: beside a gateway on Redis it
/// must refuse rather than report sessions ended that it never saw.
#[tokio::test]
async fn without_the_gateways_redis_gamectl_refuses_instead_of_acting_on_an_empty_store() {
    let world = World::new();
    let gateway = world.gateway().await;
    let name = username("unrevoked");
    let (client, _session) = gateway.player(&name).await;

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamectl"))
        .args(["--data-dir", world.data_dir.path().to_str().unwrap()])
        .args(["sessions", "revoke", &name])
        .env_remove("GAME_REDIS_URL")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("gamectl runs");
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stderr(&output).contains("--redis-url"), "{}", stderr(&output));
    client.ping().await.expect("the session stands");

    // Told the Redis, it revokes.
    assert_success(&gamectl(&world, world.data_dir.path(), &["sessions", "revoke", &name]).await);
    assert_eq!(closed(&client).await.code, Some(close::SESSION_REVOKED));
    gateway.stop().await.unwrap();
}

/// A shard at an older schema (gateways of the release before still on it) is not migrated by a
/// newer `gamectl` reading an account: it refuses and says which gamectl to run.
#[tokio::test]
async fn gamectl_refuses_to_migrate_a_shard_of_an_older_release_under_its_gateways() {
    let world = World::new();
    let gateway = world.gateway().await;
    let name = username("older");
    gateway.player(&name).await;
    gateway.stop().await.unwrap();
    let auth_db = world.data_dir.path().join("auth.db");
    let older = auth::schema_version() - 1;
    let set_version = |version: u32| {
        let conn = shard::rusqlite::Connection::open(&auth_db).unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
    };
    set_version(older);

    let output = gamectl(&world, world.data_dir.path(), &["account", "show", &name]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stderr(&output).contains("older than this gamectl"), "{}", stderr(&output));
    let conn = shard::rusqlite::Connection::open(&auth_db).unwrap();
    let version: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
    assert_eq!(version, older, "left as it was");

    set_version(auth::schema_version());
    assert_success(&gamectl(&world, world.data_dir.path(), &["account", "show", &name]).await);
}

#[tokio::test]
async fn match_shows_a_recorded_match_read_from_the_shard() {
    use proto::matchmaking::{MatchEvent, MatchReply, MatchRequest};

    let world = World::new();
    let mut config = world.config();
    config.matchmaking.interval = Duration::from_millis(50);
    let gateway = world.gateway_with(config).await;
    let (ada, ada_session) = gateway.player(&username("ctl_ada")).await;
    let (bob, _) = gateway.player(&username("ctl_bob")).await;
    for player in [&ada, &bob] {
        let queued =
            player.request(Request::Match(MatchRequest::Queue { mode: "duel".into() })).await.unwrap();
        assert!(matches!(queued, Reply::Match(MatchReply::Queued { .. })), "{queued:?}");
    }
    let match_id = tokio::time::timeout(crate::support::PATIENCE, async {
        loop {
            if let Some(proto::Event::Match(MatchEvent::MatchFound { match_id, .. })) = ada.next_event().await
            {
                return match_id;
            }
        }
    })
    .await
    .expect("a match is formed");

    let output = gamectl(&world, world.data_dir.path(), &["--json", "match", &match_id.to_string()]).await;
    assert_success(&output);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(shown["mode"], "duel");
    assert_eq!(shown["teams"].as_array().unwrap().len(), 2);
    assert!(stdout(&output).contains(&ada_session.account_id.to_string()));
    assert_eq!(shown["outcome"], serde_json::Value::Null);

    let unknown = gamectl(&world, world.data_dir.path(), &["match", &uuid::Uuid::new_v4().to_string()]).await;
    assert!(!unknown.status.success());
}

#[tokio::test]
async fn status_reports_the_shards_the_player_buffer_a_risky_redis_setting_and_a_silent_redis() {
    let mut world = World::new();
    let gateway = world.gateway_flushing_only_at_the_ends().await;
    let (player, _) = gateway.player(&username("ctl_status")).await;
    let update = proto::StateUpdate { health: Some(5), ..Default::default() };
    player.request(Request::UpdateState(update)).await.unwrap();

    let output = gamectl(&world, world.data_dir.path(), &["--json", "status"]).await;
    assert_success(&output);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["redis"]["reachable"], true);
    assert_eq!(status["redis"]["buffered_players"], 1, "the update waits for its flush");
    assert_eq!(status["redis"]["risky_settings"], serde_json::json!([]), "the harness keeps nothing on disk");
    let player_db = status["shards"].as_array().unwrap().iter().find(|shard| shard["file"] == "player.db");
    assert!(player_db.is_some_and(|shard| shard["tables"]["version_watermark"] == 1), "{status}");

    world.redis.config_set("save", "60 1");
    let output = gamectl(&world, world.data_dir.path(), &["status"]).await;
    assert_success(&output);
    assert!(
        stdout(&output).contains("redis WARNING: Redis saves RDB snapshots (save \"60 1\")"),
        "{}",
        stdout(&output)
    );
    gateway.stop().await.unwrap();

    // A silent Redis is reported, and the exit status says something is wrong.
    world.redis.stop();
    let output = gamectl(&world, world.data_dir.path(), &["status"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(stdout(&output).contains("redis NOT reachable"), "{}", stdout(&output));
}
