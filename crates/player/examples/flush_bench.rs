//! How fast the flusher moves buffered player states into SQLite: starts its own `redis-server`,
//! buffers one update for each of [`N_PLAYERS`] players, then times one flush pass (claim from
//! Redis, upsert into `player.db`, release), twice: into an empty table (inserts) and, after one
//! more update each, over the stored rows (updates, the steady state). It prints the rows per
//! second of the SQLite transactions alone and of the whole pass, then how long dropping the
//! whole buffer takes, which heals one that came back older than `player.db`.
//!
//! `cargo run --release -p player --example flush_bench` (needs `redis-server` on the PATH).

#![allow(clippy::print_stdout, reason = "a benchmark's output is its result")]

use std::sync::Arc;
use std::time::Instant;

use clock::SystemClock;
use kv::Kv;
use kv::testing::RedisServer;
use player::{PlayerConfig, Players, Position, StateUpdate};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Players buffered before each pass.
const N_PLAYERS: usize = 100_000;
/// Rows per SQLite transaction, as the reference figure (1.1 million rows/s) used.
const FLUSH_BATCH: usize = 1_000;
/// Concurrent updaters while buffering.
const N_TASKS: usize = 500;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir()?;
    let kv = Kv::connect_redis(&redis.url(), "bench:").await?;
    let config = PlayerConfig { flush_batch: FLUSH_BATCH, ..PlayerConfig::default() };
    let players =
        Players::open(dir.path().join("player.db"), kv.clone(), Arc::new(SystemClock), config).await?;
    let ids: Arc<Vec<Uuid>> = Arc::new((0..N_PLAYERS).map(|_| Uuid::now_v7()).collect());

    for (pass, what) in ["into an empty table", "over the stored rows"].iter().enumerate() {
        let buffering = Instant::now();
        update_everyone(&players, &ids, pass as f32).await?;
        let buffered_in = buffering.elapsed();
        let flushing = Instant::now();
        let report = players.flush_now().await?;
        let pass_time = flushing.elapsed();
        let rows = report.rows_written as f64;
        println!(
            "flush {what}: {} rows in {} transactions; SQLite {:.0} rows/s ({:.1} ms), whole pass {:.0} rows/s ({:.1} ms); buffering took {:.1} s",
            report.rows_written,
            report.batches,
            rows / report.write_time.as_secs_f64(),
            report.write_time.as_secs_f64() * 1e3,
            rows / pass_time.as_secs_f64(),
            pass_time.as_secs_f64() * 1e3,
            buffered_in.as_secs_f64(),
        );
    }
    // What healing a buffer that came back older than player.db costs: dropping all of it (the
    // player domain buffers in namespace "player").
    let dropping = Instant::now();
    let dropped = kv.buffer_drop_all("player").await?;
    println!(
        "dropping the whole buffer (one that came back older than player.db): {dropped} records in {:.1} ms",
        dropping.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// One update of every player, moved to `x`.
async fn update_everyone(players: &Players, ids: &Arc<Vec<Uuid>>, x: f32) -> Result<(), player::PlayerError> {
    let mut tasks = JoinSet::new();
    for task in 0..N_TASKS {
        let players = players.clone();
        let ids = Arc::clone(ids);
        tasks.spawn(async move {
            for id in ids.iter().skip(task).step_by(N_TASKS) {
                let update = StateUpdate {
                    position: Some(Position { x, y: 1.0, z: 2.0 }),
                    health: Some(100),
                    ..StateUpdate::default()
                };
                players.update(*id, update).await?;
            }
            Ok::<(), player::PlayerError>(())
        });
    }
    for result in tasks.join_all().await {
        result?;
    }
    Ok(())
}
