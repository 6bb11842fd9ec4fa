//! The player domain against a real Redis and a real `player.db`: read-your-writes, coalescing,
//! ordering, crash recovery of a claimed batch, a Redis that loses everything, and direct mode.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::sync::Arc;
use std::time::Duration;

use clock::ManualClock;
use kv::Kv;
use kv::testing::RedisServer;
use player::{PlayerConfig, PlayerState, Players, Position, StateUpdate, WriteMode};
use shard::rusqlite;
use uuid::Uuid;

struct World {
    redis: RedisServer,
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
}

impl World {
    fn new() -> World {
        World {
            redis: RedisServer::start(),
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(ManualClock::at(1_000)),
        }
    }

    async fn players(&self, mode: WriteMode) -> Players {
        let kv = Kv::connect_redis(&self.redis.url(), "t:").await.unwrap();
        let config = PlayerConfig { mode, flush_batch: 100, ..PlayerConfig::default() };
        Players::open(self.dir.path().join("player.db"), kv, self.clock.clone(), config).await.unwrap()
    }

    /// How many players `player.db` holds.
    fn n_rows(&self) -> usize {
        let conn = rusqlite::Connection::open(self.dir.path().join("player.db")).unwrap();
        let n: i64 = conn.query_row("SELECT count(*) FROM player_state", [], |row| row.get(0)).unwrap();
        usize::try_from(n).unwrap()
    }

    /// The row in `player.db` as SQLite holds it: (version, x, health).
    fn row(&self, player_id: Uuid) -> Option<(u64, f64, u32)> {
        let conn = rusqlite::Connection::open(self.dir.path().join("player.db")).unwrap();
        conn.query_row(
            "SELECT version, x, health FROM player_state WHERE player_id = ?1",
            [player_id.as_bytes().as_slice()],
            |row| Ok((row.get::<_, i64>(0)? as u64, row.get(1)?, row.get(2)?)),
        )
        .ok()
    }
}

fn at(x: f32) -> StateUpdate {
    StateUpdate { position: Some(Position { x, y: 0.0, z: 0.0 }), ..StateUpdate::default() }
}

fn health(value: u32) -> StateUpdate {
    StateUpdate { health: Some(value), ..StateUpdate::default() }
}

#[tokio::test]
async fn a_read_sees_the_newest_acknowledged_write_before_any_flush() {
    let world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let id = Uuid::new_v4();
    assert_eq!(players.get(id).await.unwrap(), None);
    assert_eq!(players.update(id, at(1.0)).await.unwrap(), 1);
    assert_eq!(players.update(id, health(70)).await.unwrap(), 2);
    let state = players.get(id).await.unwrap().unwrap();
    assert_eq!(
        (state.position.x, state.health, state.version),
        (1.0, 70, 2),
        "a partial update keeps the rest"
    );
    assert_eq!(world.row(id), None, "nothing reached SQLite yet");
}

#[tokio::test]
async fn a_thousand_updates_of_one_player_become_one_row_write_with_the_last_value() {
    let world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let id = Uuid::new_v4();
    for n in 1..=1000 {
        players.update(id, at(n as f32)).await.unwrap();
    }
    let report = players.flush_now().await.unwrap();
    assert_eq!((report.rows_written, report.batches), (1, 1));
    assert_eq!(world.row(id), Some((1000, 1000.0, 0)));
    assert_eq!(players.flush_now().await.unwrap().rows_written, 0, "a flushed player is clean");
}

#[tokio::test]
async fn a_pass_writes_every_dirty_player_in_batches() {
    let world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let ids: Vec<Uuid> = (0..250).map(|_| Uuid::new_v4()).collect();
    for (n, id) in ids.iter().enumerate() {
        players.update(*id, at(n as f32)).await.unwrap();
    }
    let report = players.flush_now().await.unwrap();
    assert_eq!((report.rows_written, report.batches), (250, 3), "batches of 100");
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(world.row(*id), Some((1 + n as u64, n as f64, 0)), "player {n}");
    }
    assert_eq!(players.flush_now().await.unwrap().rows_written, 0, "every player was flushed");
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    let world = World::new();
    let buffered = world.players(WriteMode::Buffered).await;
    let id = Uuid::new_v4();
    for n in 1..=5 {
        buffered.update(id, at(n as f32)).await.unwrap();
    }
    buffered.flush_now().await.unwrap();
    // Another writer moves SQLite ahead to version 7 while the buffer still counts from 5; its
    // next update (version 6) is older than what SQLite holds, so the flush must leave SQLite alone.
    let conn = rusqlite::Connection::open(world.dir.path().join("player.db")).unwrap();
    conn.execute(
        "UPDATE player_state SET version = 7, x = 100.0 WHERE player_id = ?1",
        [id.as_bytes().as_slice()],
    )
    .unwrap();
    assert_eq!(buffered.update(id, at(6.0)).await.unwrap(), 6);
    assert_eq!(buffered.flush_now().await.unwrap().rows_written, 0);
    assert_eq!(world.row(id), Some((7, 100.0, 0)));
    // That flush found the buffer behind player.db and dropped it: the next read and update start
    // from SQLite's newer state, and the update is written. (The version check itself is
    // `store`'s unit test.)
    assert_eq!(buffered.get(id).await.unwrap().unwrap().position.x, 100.0);
    let version = buffered.update(id, health(5)).await.unwrap();
    assert!(version > 7, "version {version}");
    buffered.flush_now().await.unwrap();
    assert_eq!(world.row(id), Some((version, 100.0, 5)));
}

/// A deployment that wrote directly switches to buffered with an empty Redis: its first seeds
/// begin the buffer at the versions direct writes reached, so versions continue above them and
/// the first flush keeps the moves made before it.
#[tokio::test]
async fn after_a_switch_from_direct_writes_the_first_moves_are_kept() {
    let world = World::new();
    let direct = world.players(WriteMode::Direct).await;
    let (busy, quiet) = (Uuid::new_v4(), Uuid::new_v4());
    direct.update(quiet, at(1.0)).await.unwrap();
    for n in 1..=20 {
        direct.update(busy, at(n as f32)).await.unwrap();
    }
    drop(direct);

    let buffered = world.players(WriteMode::Buffered).await;
    assert_eq!(buffered.update(quiet, at(7.0)).await.unwrap(), 21, "above player.db's highest, 20");
    assert_eq!(buffered.flush_now().await.unwrap().rows_written, 1);
    assert_eq!(world.row(quiet).map(|row| row.1), Some(7.0));
}

#[tokio::test]
async fn a_batch_claimed_by_a_flusher_that_died_is_recovered_by_the_next() {
    let world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let ids: Vec<Uuid> = (0..250).map(|_| Uuid::new_v4()).collect();
    let mut versions = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        versions.push(players.update(*id, health(n as u32)).await.unwrap());
    }
    // A flusher claims a batch, then "crashes" before writing it: the claim stays in Redis.
    let kv = Kv::connect_redis(&world.redis.url(), "t:").await.unwrap();
    let claimed = kv.buffer_claim("player", 100, u64::MAX).await.unwrap();
    assert_eq!(claimed.records.len(), 100);

    // The next flusher to take the lease recovers the claim first and writes everything.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let flusher = tokio::spawn(player::flusher::run(players.clone(), "next".into(), shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ids.iter().any(|id| world.row(*id).is_none()) {
        assert!(tokio::time::Instant::now() < deadline, "every player reaches SQLite");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    flusher.await.unwrap();
    for (n, (id, version)) in ids.iter().zip(versions).enumerate() {
        assert_eq!(world.row(*id), Some((version, 0.0, n as u32)));
    }
    let stats = kv.buffer_stats("player").await.unwrap();
    assert_eq!((stats.n_dirty, stats.n_claimed), (0, 0));
}

#[tokio::test]
async fn a_claim_left_by_a_flush_that_died_beside_the_running_flusher_is_written_by_it() {
    let world = World::new();
    let kv = Kv::connect_redis(&world.redis.url(), "t:").await.unwrap();
    let config = PlayerConfig { flush_interval: Duration::from_millis(300), ..PlayerConfig::default() };
    let players = Players::open(world.dir.path().join("player.db"), kv.clone(), world.clock.clone(), config)
        .await
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let flusher = tokio::spawn(player::flusher::run(players.clone(), "running".into(), shutdown.clone()));
    let warm_up = Uuid::new_v4();
    players.update(warm_up, health(1)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while world.row(warm_up).is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the flusher holds the lease and runs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Between two of the flusher's passes, a flush run beside it (`gamectl flush`) claims a
    // player and dies before writing it: its claim stays, and the player is no longer dirty.
    let orphan = loop {
        let player_id = Uuid::new_v4();
        let version = players.update(player_id, health(7)).await.unwrap();
        if kv.buffer_claim("player", 10, u64::MAX).await.unwrap().records.len() == 1 {
            break (player_id, version);
        }
        // The flusher's pass came first; try again right after it.
    };
    while world.row(orphan.0).is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the running flusher writes the orphaned claim");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(world.row(orphan.0).map(|row| (row.0, row.2)), Some((orphan.1, 7)));
    shutdown.cancel();
    flusher.await.unwrap();
}

/// An operator's flush (a backup's) returns only once every update acknowledged before it is in
/// SQLite, also those a flusher beside it claimed after the flush put back the claims it found.
#[tokio::test]
async fn a_flush_writes_what_a_flusher_beside_it_claimed_after_it_began() {
    let world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    players.update(first, health(1)).await.unwrap();
    players.update(second, health(2)).await.unwrap();
    // A flusher beside the flush holds a claim of one of them when the flush begins.
    let kv = Kv::connect_redis(&world.redis.url(), "t:").await.unwrap();
    assert_eq!(kv.buffer_claim("player", 1, u64::MAX).await.unwrap().records.len(), 1);

    // The flush puts that claim back, then waits for player.db, which this test keeps locked.
    let lock = rusqlite::Connection::open(world.dir.path().join("player.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let flush = tokio::spawn({
        let players = players.clone();
        async move { players.flush_now().await }
    });
    tokio::time::timeout(Duration::from_secs(5), async {
        while kv.buffer_stats("player").await.unwrap().n_claimed > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the flush puts the claim back");
    // Meanwhile the flusher beside it claims both players, and is still writing them when the
    // flush gets to claim.
    assert_eq!(kv.buffer_claim("player", 10, u64::MAX).await.unwrap().records.len(), 2);
    lock.execute_batch("ROLLBACK").unwrap();

    flush.await.unwrap().unwrap();
    assert_eq!((world.row(first).map(|row| row.2), world.row(second).map(|row| row.2)), (Some(1), Some(2)));
}

#[tokio::test]
async fn a_pass_that_outlasts_the_lease_keeps_it_so_no_second_flusher_starts() {
    let world = World::new();
    let kv = Kv::connect_redis(&world.redis.url(), "t:").await.unwrap();
    // One player per transaction: a pass over 8,000 players takes far longer than the lease.
    let lease = Duration::from_millis(500);
    let config = PlayerConfig {
        flush_batch: 1,
        flush_interval: Duration::from_millis(50),
        flush_lease: lease,
        ..PlayerConfig::default()
    };
    let players = Players::open(world.dir.path().join("player.db"), kv.clone(), world.clock.clone(), config)
        .await
        .unwrap();
    let ids: Vec<Uuid> = (0..8_000).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        players.update(*id, health(1)).await.unwrap();
    }

    let shutdown = tokio_util::sync::CancellationToken::new();
    let flusher = tokio::spawn(player::flusher::run(players.clone(), "first".into(), shutdown.clone()));
    // Once the pass has begun, another process asks for the lease all through it, as its own
    // flusher would.
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(30);
    while world.n_rows() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first flusher starts");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while world.n_rows() < ids.len() {
        assert!(tokio::time::Instant::now() < deadline, "every player reaches SQLite");
        let taken = kv.lease_acquire(player::flusher::LEASE, "second", lease).await.unwrap();
        assert!(!taken, "a second flusher got the lease {:?} into the first one's pass", started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pass = started.elapsed();
    assert!(pass > lease, "the pass outlasted the lease ({pass:?})");
    shutdown.cancel();
    flusher.await.unwrap();
    let stats = kv.buffer_stats("player").await.unwrap();
    assert_eq!((stats.n_dirty, stats.n_claimed), (0, 0));
}

#[tokio::test]
async fn after_redis_loses_everything_reads_fall_back_to_sqlite_and_versions_continue() {
    let mut world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let id = Uuid::new_v4();
    for n in 1..=3 {
        players.update(id, at(n as f32)).await.unwrap();
    }
    players.flush_now().await.unwrap();
    world.redis.stop();
    assert!(matches!(players.update(id, at(4.0)).await, Err(player::PlayerError::Store(_))));
    world.redis.restart();

    let state = until_reachable(|| players.get(id)).await.unwrap();
    assert_eq!((state.position.x, state.version), (3.0, 3), "read from SQLite");
    assert_eq!(players.update(id, health(10)).await.unwrap(), 4, "the version continues from SQLite's");
    let state = players.get(id).await.unwrap().unwrap();
    assert_eq!((state.position.x, state.health), (3.0, 10), "seeded from SQLite, then updated");
}

/// Redis comes back from an old snapshot: its records and its version counter are older than
/// `player.db`. The next flush notices (the counter is below `player.db`'s highest version, and
/// the buffer's baseline, from before that version was flushed, came back too), drops the whole
/// buffer, a restored claim with it, so every state is read from `player.db` again, and moves the
/// counter to the watermark, so no read shows the older state any more and later updates, partial
/// ones included, build on the newer state and reach SQLite.
#[tokio::test]
async fn after_redis_comes_back_from_an_old_snapshot_states_are_read_from_sqlite_again() {
    let mut world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let (mover, idler, in_flight) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for id in [mover, idler] {
        players.update(id, at(1.0)).await.unwrap();
    }
    players.flush_now().await.unwrap();
    // The snapshot also catches `in_flight` claimed by a flush that has not committed yet.
    players.update(in_flight, at(1.0)).await.unwrap();
    let flusher = Kv::connect_redis(&world.redis.url(), "t:").await.unwrap();
    assert_eq!(flusher.buffer_claim("player", 10, u64::MAX).await.unwrap().records.len(), 1);
    world.redis.save_snapshot();
    for n in 2..=5 {
        for id in [mover, idler, in_flight] {
            players.update(id, at(n as f32)).await.unwrap();
        }
    }
    players.flush_now().await.unwrap();
    let (mover_row, idler_row) = (world.row(mover).unwrap(), world.row(idler).unwrap());
    assert_eq!((mover_row.1, idler_row.1, world.row(in_flight).unwrap().1), (5.0, 5.0, 5.0));

    world.redis.restart();
    let restored = until_reachable(|| players.get(idler)).await.unwrap();
    assert_eq!(restored.position.x, 1.0, "before the next flush, Redis serves the snapshot's state");

    let report = until_reachable(|| players.flush_now()).await;
    assert_eq!(report.rows_written, 0, "nothing in the snapshot is newer than player.db");
    let idler_state = players.get(idler).await.unwrap().unwrap();
    assert_eq!((idler_state.position.x, idler_state.version), (5.0, idler_row.0), "read from player.db");
    let in_flight_state = players.get(in_flight).await.unwrap().unwrap();
    assert_eq!(in_flight_state.position.x, 5.0, "the restored claim was put back and dropped too");
    assert_eq!(players.buffer_stats().await.unwrap(), kv::BufferStats::default(), "nothing left behind");

    let version = players.update(mover, health(50)).await.unwrap();
    assert!(version > mover_row.0, "version {version} continues above player.db's {}", mover_row.0);
    players.update(idler, at(6.0)).await.unwrap();
    players.flush_now().await.unwrap();
    assert_eq!(world.row(mover), Some((version, 5.0, 50)), "the partial update kept the newer position");
    assert_eq!(world.row(idler).map(|row| row.1), Some(6.0));
    let second = players.flush_now().await.unwrap();
    assert_eq!((second.rows_written, second.rows_skipped), (0, 0), "healed once, then a quiet pass");
    assert_eq!(players.stats().buffer_heals.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// The same, with players moving while the flusher heals: a move merged into a restored record
/// carries the snapshot's older health, and must be dropped with it rather than stay in the
/// buffer, where reads would show the older health and a later flush would write it back into
/// `player.db` (the shared counter can give such a move a version above its stored one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_during_the_heal_never_bring_back_the_snapshots_health() {
    let mut world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let ids: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        players.update(*id, health(1)).await.unwrap();
    }
    players.flush_now().await.unwrap();
    world.redis.save_snapshot();
    // Far more updates after the snapshot than the moves below take versions for, so the flush's
    // version check skips those moves anyway: what fails without the heal is the buffer itself
    // keeping the snapshot's health.
    for _ in 0..10 {
        for id in &ids {
            players.update(*id, health(2)).await.unwrap();
        }
    }
    players.flush_now().await.unwrap();
    world.redis.restart();
    until_reachable(|| players.buffer_stats()).await;

    let healed = std::sync::atomic::AtomicBool::new(false);
    let moving = async {
        let mut step = 0.0;
        while !healed.load(std::sync::atomic::Ordering::Relaxed) {
            step += 1.0;
            for id in &ids {
                until_reachable(|| players.update(*id, at(step))).await;
            }
        }
    };
    let healing = async {
        until_reachable(|| players.flush_now()).await;
        healed.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    tokio::join!(moving, healing);

    for id in &ids {
        assert_eq!(players.get(*id).await.unwrap().unwrap().health, 2, "a read after the heal");
        players.update(*id, at(-1.0)).await.unwrap();
    }
    players.flush_now().await.unwrap();
    for id in &ids {
        assert_eq!(world.row(*id).map(|row| (row.1, row.2)), Some((-1.0, 2)), "player.db after the heal");
    }
}

/// A snapshot taken before the buffer's first flush pass, restored after later flushes: the
/// buffer was begun by its first seed, so it is still known to be older than `player.db` and
/// dropped, rather than taken for a store that lost its data. Here the buffer is itself new
/// after Redis lost everything, and the player's versions are far below `player.db`'s highest,
/// which the flushes after the snapshot must still move past.
#[tokio::test]
async fn a_snapshot_from_before_the_first_flush_is_still_healed_as_older() {
    let mut world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let (busy, id) = (Uuid::new_v4(), Uuid::new_v4());
    for _ in 0..20 {
        players.update(busy, health(1)).await.unwrap();
    }
    players.flush_now().await.unwrap();
    world.redis.stop();
    world.redis.restart();

    until_reachable(|| players.update(id, health(1))).await;
    world.redis.save_snapshot();
    players.update(id, health(2)).await.unwrap();
    until_reachable(|| players.flush_now()).await;
    assert_eq!(world.row(id).map(|row| row.2), Some(2));

    world.redis.restart();
    assert_eq!(until_reachable(|| players.get(id)).await.unwrap().health, 1, "the snapshot's state");
    until_reachable(|| players.flush_now()).await;
    let state = players.get(id).await.unwrap().unwrap();
    assert_eq!((state.health, state.version), (2, world.row(id).unwrap().0), "read from player.db");
    players.update(id, at(2.0)).await.unwrap();
    players.flush_now().await.unwrap();
    assert_eq!(world.row(id).map(|row| (row.1, row.2)), Some((2.0, 2)), "built on player.db's health");
}

/// Redis loses everything, and a player whose stored version is below `player.db`'s highest
/// moves before the next flush: its seed begins the buffer at that highest version, so the move
/// takes a version above it at once, and the next pass writes it; there is nothing to heal.
#[tokio::test]
async fn after_redis_loses_everything_versions_continue_above_the_highest_at_once() {
    let mut world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let (busy, quiet) = (Uuid::new_v4(), Uuid::new_v4());
    players.update(quiet, at(1.0)).await.unwrap();
    for n in 1..=20 {
        players.update(busy, at(n as f32)).await.unwrap();
    }
    players.flush_now().await.unwrap();
    world.redis.stop();
    world.redis.restart();

    let version = until_reachable(|| players.update(quiet, at(7.0))).await;
    assert!(version > world.row(busy).unwrap().0, "version {version} is above player.db's highest");
    let report = until_reachable(|| players.flush_now()).await;
    assert_eq!(report.rows_written, 1);
    assert_eq!(
        world.row(quiet).map(|row| (row.0, row.1)),
        Some((version, 7.0)),
        "the move reached player.db"
    );
    assert_eq!(players.stats().buffer_heals.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Retries `operation` while the store is unreachable: each connection to a restarted Redis
/// finds out on its first use, and reconnects.
async fn until_reachable<T, F, Fut>(mut operation: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, player::PlayerError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match operation().await {
            Ok(value) => return value,
            Err(player::PlayerError::Store(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
}

#[tokio::test]
async fn after_a_spell_of_direct_writes_the_buffer_never_brings_back_older_state() {
    let world = World::new();
    let (player, busy) = (Uuid::new_v4(), Uuid::new_v4());
    let buffered = world.players(WriteMode::Buffered).await;
    buffered.update(player, health(50)).await.unwrap();
    // Another player's moves take the shared counter far past this player's version.
    for n in 0..100 {
        buffered.update(busy, at(n as f32)).await.unwrap();
    }
    buffered.flush_now().await.unwrap();
    drop(buffered);

    // The deployment runs in direct mode for a while, on the same Redis...
    let direct = world.players(WriteMode::Direct).await;
    direct.update(player, health(10)).await.unwrap();
    drop(direct);

    // ...then buffered again: the record Redis kept from before must not come back.
    let buffered = world.players(WriteMode::Buffered).await;
    assert_eq!(buffered.get(player).await.unwrap().map(|state| state.health), Some(10));
    buffered.update(player, at(2.0)).await.unwrap();
    buffered.flush_now().await.unwrap();
    assert_eq!(world.row(player).map(|row| (row.1, row.2)), Some((2.0, 10)));
}

/// An operator's flush while the gateways write directly, by a tool that thinks the deployment
/// buffered: the note that the buffer is behind must still reach the next buffered gateway, or
/// its buffer begins below the direct writes and its first flush drops what it acknowledged.
#[tokio::test]
async fn an_operators_flush_beside_direct_writers_leaves_the_switch_back_to_the_gateways() {
    let world = World::new();
    let (player, busy) = (Uuid::new_v4(), Uuid::new_v4());
    let direct = world.players(WriteMode::Direct).await;
    direct.update(player, health(10)).await.unwrap();

    let kv = Kv::connect_redis(&world.redis.url(), "t:").await.unwrap();
    let config = PlayerConfig { mode: WriteMode::Buffered, flush_batch: 100, ..PlayerConfig::default() };
    let operator =
        Players::open_beside_gateways(world.dir.path().join("player.db"), kv, world.clock.clone(), config)
            .await
            .unwrap();
    operator.flush_now().await.unwrap();
    drop(operator);

    // The direct spell goes on, taking one player's version far up.
    for n in 0..200 {
        direct.update(busy, at(n as f32)).await.unwrap();
    }
    drop(direct);

    let buffered = world.players(WriteMode::Buffered).await;
    buffered.update(player, at(2.0)).await.unwrap();
    buffered.flush_now().await.unwrap();
    assert_eq!(world.row(player).map(|row| (row.1, row.2)), Some((2.0, 10)));
    assert_eq!(buffered.stats().buffer_heals.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test]
async fn direct_mode_writes_every_update_to_sqlite_at_once() {
    let world = World::new();
    let players = world.players(WriteMode::Direct).await;
    let id = Uuid::new_v4();
    assert_eq!(players.update(id, at(5.0)).await.unwrap(), 1);
    assert_eq!(world.row(id), Some((1, 5.0, 0)));
    assert_eq!(players.update(id, health(9)).await.unwrap(), 2);
    assert_eq!(world.row(id), Some((2, 5.0, 9)));
    let state: PlayerState = players.get(id).await.unwrap().unwrap();
    assert_eq!((state.position.x, state.health, state.version), (5.0, 9, 2));
}

#[tokio::test]
async fn invalid_values_change_nothing() {
    let world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let id = Uuid::new_v4();
    players.update(id, at(1.0)).await.unwrap();
    for bad in [
        at(f32::NAN),
        at(f32::INFINITY),
        at(2.0e6),
        StateUpdate { attributes: Some(vec![0; 257]), ..StateUpdate::default() },
    ] {
        assert!(matches!(players.update(id, bad).await, Err(player::PlayerError::InvalidValue(_))));
    }
    let state = players.get(id).await.unwrap().unwrap();
    assert_eq!((state.position.x, state.version), (1.0, 1));
}

/// SQLite keeps a REAL that is a whole number as an integer, so a -0.0 comes back from
/// `player.db` as 0.0: a zero is stored as 0.0 on every path, so a read gives the same bits
/// before the flush (from the buffer) and after it (from SQLite).
#[tokio::test]
async fn a_negative_zero_reads_the_same_before_and_after_its_flush() {
    let world = World::new();
    let players = world.players(WriteMode::Buffered).await;
    let id = Uuid::new_v4();
    let zeros = StateUpdate {
        position: Some(Position { x: -0.0, y: 0.0, z: -0.0 }),
        rotation: Some(-0.0),
        ..StateUpdate::default()
    };
    players.update(id, zeros).await.unwrap();
    let bits = |state: PlayerState| {
        let position = state.position;
        [position.x.to_bits(), position.y.to_bits(), position.z.to_bits(), state.rotation.to_bits()]
    };
    let buffered = bits(players.get(id).await.unwrap().unwrap());
    players.flush_now().await.unwrap();
    let from_sqlite = world.players(WriteMode::Direct).await;
    assert_eq!(bits(from_sqlite.get(id).await.unwrap().unwrap()), buffered);
    assert_eq!(buffered, [0; 4], "stored as 0.0");
}
