//! Token validation benchmark: how fast `Auth::validate_token` answers against a real Redis, from
//! one task and from many at once (the redis crate pipelines concurrent callers on its one
//! multiplexed connection).
//!
//! Usage: `cargo run --release -p auth --example validate_bench [REDIS_URL] [SECONDS]`
//! (defaults `redis://127.0.0.1:6379`, 5 s per concurrency level). Keys live under `bench:`, and
//! `auth.db` in a temporary directory, so it does not disturb anything else.

use std::error::Error;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use auth::{Auth, AuthConfig};
use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Sessions logged in; the tasks validate them round robin.
const N_SESSIONS: usize = 50;
/// Concurrency levels measured, in order.
const CONCURRENCY: [usize; 2] = [1, 32];
/// Default seconds per concurrency level.
const DEFAULT_SECONDS: f64 = 5.0;
/// The password of the benchmark account.
const PASSWORD: &str = "bench-password-1";
/// Largest latency recorded, in microseconds.
const MAX_MICROS: u64 = 60_000_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let seconds: f64 = args.next().map_or(Ok(DEFAULT_SECONDS), |s| s.parse())?;
    let run_for = Duration::try_from_secs_f64(seconds)?;

    let dir = tempfile::tempdir()?;
    let kv = kv::Kv::connect_redis(&url, "validate-bench:").await?;
    let auth =
        Auth::open(dir.path().join("auth.db"), kv, Arc::new(clock::SystemClock), AuthConfig::default())
            .await?;
    auth.register("bencher", PASSWORD).await?;
    let mut tokens = Vec::with_capacity(N_SESSIONS);
    for _ in 0..N_SESSIONS {
        tokens.push(auth.login("bencher", PASSWORD, [127, 0, 0, 1].into()).await?.token);
    }
    let tokens = Arc::new(tokens);

    let mut out = std::io::stdout().lock();
    writeln!(out, "validate_token against {url}, {N_SESSIONS} sessions, {seconds} s per level")?;
    writeln!(
        out,
        "{:>6} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "tasks", "calls/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    )?;
    for n_tasks in CONCURRENCY {
        let deadline = Instant::now() + run_for;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..n_tasks {
            let auth = auth.clone();
            let tokens = tokens.clone();
            tasks.spawn(async move {
                let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds");
                let mut failures = 0_u64;
                let mut i = task;
                while Instant::now() < deadline {
                    let call = Instant::now();
                    if auth.validate_token(&tokens[i % tokens.len()]).await.is_err() {
                        failures += 1;
                    }
                    let micros = u64::try_from(call.elapsed().as_micros()).unwrap_or(MAX_MICROS);
                    latency.saturating_record(micros.max(1));
                    i += n_tasks;
                }
                (latency, failures)
            });
        }
        let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_MICROS, 3)?;
        let mut failures = 0;
        while let Some(joined) = tasks.join_next().await {
            let (task_latency, task_failures) = joined?;
            latency.add(&task_latency)?;
            failures += task_failures;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        writeln!(
            out,
            "{n_tasks:>6} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}{}",
            latency.len() as f64 / elapsed,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            latency.max() as f64 / 1000.0,
            if failures > 0 { format!("  ({failures} failed)") } else { String::new() },
        )?;
    }
    Ok(())
}
