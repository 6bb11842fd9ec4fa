//! Throughput of `Kv::buffer_update` against a running Redis: seeds 1,000 records, then 1,000
//! concurrent tasks update them in a closed loop for 5 s, and the updates per second are printed,
//! with the CPU each update cost Redis (from its `INFO cpu`) and this process (from
//! `/proc/self/stat`, on Linux). CPU per update is the figure to compare between builds on a
//! shared machine: it moves far less with the machine's load than the rate does.
//!
//! `cargo run --release -p kv --example buffer_bench -- [REDIS_URL]` (default
//! `redis://127.0.0.1:6379`). Keys go under the prefix `bench:` and expire a minute after the run.
//! Run it in release: a debug build measures the client, not the batching.

#![allow(clippy::print_stdout, reason = "a benchmark's output is its result")]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kv::{BufferUpdate, Kv};
use tokio::task::JoinSet;

/// Redis to use when no URL is given.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Key prefix of everything the benchmark writes.
const KEY_PREFIX: &str = "bench:";
/// Namespace of the benchmark's records.
const NS: &str = "player";
/// Records seeded before the run; task `i` updates record `i % N_RECORDS`.
const N_RECORDS: usize = 1_000;
/// Concurrent callers, each awaiting its update before sending the next (a closed loop).
const N_TASKS: usize = 1_000;
/// How long the tasks run.
const RUN_TIME: Duration = Duration::from_secs(5);
/// TTL of the records.
const RECORD_TTL: Duration = Duration::from_secs(60);

/// What one task did.
#[derive(Default)]
struct TaskCounts {
    n_applied: u64,
    n_not_loaded: u64,
    n_errors: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| DEFAULT_URL.to_owned());
    let kv = Kv::connect_redis(&url, KEY_PREFIX).await?;
    for record in 0..N_RECORDS {
        let fields = vec![
            ("v".to_owned(), "0".to_owned()),
            ("x".to_owned(), "0".to_owned()),
            ("y".to_owned(), "0".to_owned()),
            ("hp".to_owned(), "100".to_owned()),
        ];
        // A record left by an earlier run within its TTL is fine as it is.
        kv.buffer_seed(NS, &record.to_string(), fields, RECORD_TTL).await?;
    }

    let redis_cpu_before = redis_cpu_seconds(&url).await?;
    let own_cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let deadline = started + RUN_TIME;
    let mut tasks = JoinSet::new();
    for task in 0..N_TASKS {
        let kv = kv.clone();
        tasks.spawn(async move {
            let id = (task % N_RECORDS).to_string();
            let mut counts = TaskCounts::default();
            let mut step = 0_u64;
            while Instant::now() < deadline {
                step += 1;
                let fields = vec![("x".to_owned(), step.to_string()), ("y".to_owned(), task.to_string())];
                match kv.buffer_update(NS, &id, fields, now_ms()).await {
                    Ok(BufferUpdate::Applied { .. }) => counts.n_applied += 1,
                    Ok(BufferUpdate::NotLoaded) => counts.n_not_loaded += 1,
                    Err(_) => counts.n_errors += 1,
                }
            }
            counts
        });
    }
    let mut total = TaskCounts::default();
    for counts in tasks.join_all().await {
        total.n_applied += counts.n_applied;
        total.n_not_loaded += counts.n_not_loaded;
        total.n_errors += counts.n_errors;
    }
    let elapsed = started.elapsed();
    let redis_cpu = redis_cpu_seconds(&url).await? - redis_cpu_before;
    let own_cpu = own_cpu_seconds().zip(own_cpu_before).map(|(after, before)| after - before);

    let rate = total.n_applied as f64 / elapsed.as_secs_f64();
    println!(
        "{} buffered updates applied in {:.2} s by {N_TASKS} tasks: {rate:.0} updates/s \
         ({} not loaded, {} errors)",
        total.n_applied,
        elapsed.as_secs_f64(),
        total.n_not_loaded,
        total.n_errors,
    );
    let per_update = |seconds: f64| seconds * 1e6 / total.n_applied.max(1) as f64;
    match own_cpu {
        Some(own_cpu) => println!(
            "CPU per update: Redis {:.2} µs, this process {:.2} µs",
            per_update(redis_cpu),
            per_update(own_cpu)
        ),
        None => println!("CPU per update: Redis {:.2} µs", per_update(redis_cpu)),
    }
    println!("buffer after the run: {:?}", kv.buffer_stats(NS).await?);
    Ok(())
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// CPU time Redis has used since it started (user and system), from `INFO cpu`.
async fn redis_cpu_seconds(url: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let mut connection = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut connection).await?;
    let seconds = info
        .lines()
        .filter_map(|line| line.strip_prefix("used_cpu_sys:").or_else(|| line.strip_prefix("used_cpu_user:")))
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .sum();
    Ok(seconds)
}

/// CPU time this process has used (user and system), or `None` where `/proc` does not tell.
fn own_cpu_seconds() -> Option<f64> {
    /// The kernel's clock ticks per second in `/proc` (USER_HZ, 100 on Linux).
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}
