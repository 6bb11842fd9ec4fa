//! The PostgreSQL baseline: skipped (and saying so) without a URL; with the machine's PostgreSQL,
//! a short sweep whose every acknowledged upsert is found in the table.

use std::time::Duration;

use loadtest::postgres_baseline::{self, BaselineOptions, BaselineOutcome, KIND, SKIP_MESSAGE};
use tokio_postgres::NoTls;

/// The PostgreSQL every machine that runs these tests has; `LOADTEST_POSTGRES_URL` overrides it.
const MACHINE_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Players of the test sweep: few enough that every one is written in the first level.
const N_PLAYERS: usize = 100;

#[tokio::test]
async fn postgres_baseline_without_a_url_is_skipped_with_a_message() {
    match postgres_baseline::run(BaselineOptions::new(None)).await.expect("run") {
        BaselineOutcome::Skipped(reason) => assert_eq!(reason, SKIP_MESSAGE),
        BaselineOutcome::Ran(report) => panic!("ran without a URL:\n{}", report.render()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_baseline_sweeps_levels_and_every_acknowledged_upsert_lands() {
    let url = std::env::var("LOADTEST_POSTGRES_URL").unwrap_or_else(|_| MACHINE_POSTGRES_URL.into());
    // A table of this test process alone, so a benchmark running meanwhile is not disturbed.
    let table = format!("loadtest_player_state_it_{}", std::process::id());
    let options = BaselineOptions {
        concurrency: vec![1, 2],
        duration: Duration::from_secs(1),
        n_players: N_PLAYERS,
        table: table.clone(),
        ..BaselineOptions::new(Some(url.clone()))
    };
    let report = match postgres_baseline::run(options).await.expect("run against the machine's PostgreSQL") {
        BaselineOutcome::Ran(report) => report,
        BaselineOutcome::Skipped(reason) => panic!("skipped with a URL: {reason}"),
    };
    let rendered = report.render();
    assert_eq!(report.synchronous_commit, "on", "{rendered}");
    let levels: Vec<usize> = report.levels.iter().map(|level| level.concurrency).collect();
    assert_eq!(levels, [1, 2], "{rendered}");
    let mut total = 0;
    for level in &report.levels {
        assert_eq!(level.report.total_errors, 0, "{rendered}");
        let upserts = level.report.kinds[KIND].count;
        assert!(upserts > 100, "only {upserts} upserts at concurrency {}:\n{rendered}", level.concurrency);
        total += upserts;
    }
    let best = report.levels.iter().map(|level| level.per_sec()).fold(0.0, f64::max);
    assert_eq!(report.best.per_sec, best, "{rendered}");
    assert!(
        rendered.contains(&format!("best: {best:.0} updates/s at concurrency {}", report.best.concurrency))
    );

    // Each upsert added one to its player's version (an insert starts at 1), so the versions
    // add up to the upserts acknowledged, and every player was written.
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    let driver = tokio::spawn(connection);
    let row = client
        .query_one(&format!("SELECT count(*), sum(version)::bigint FROM {table}"), &[])
        .await
        .expect("count");
    let (players, versions): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(players, N_PLAYERS as i64, "{rendered}");
    assert_eq!(versions, total as i64, "{rendered}");
    client.batch_execute(&format!("DROP TABLE {table}")).await.expect("drop");
    drop(client);
    driver.await.expect("join").expect("connection");
}

#[tokio::test]
async fn postgres_baseline_commits_durably_even_when_its_connection_asks_otherwise() {
    let url = std::env::var("LOADTEST_POSTGRES_URL").unwrap_or_else(|_| MACHINE_POSTGRES_URL.into());
    // A server, role or URL may turn synchronous commits off; the baseline is documented as
    // PostgreSQL's default durability, which is what the gateway is compared with.
    let separator = if url.contains('?') { '&' } else { '?' };
    let asking_otherwise = format!("{url}{separator}options=-c%20synchronous_commit%3Doff");
    let table = format!("loadtest_player_state_durable_{}", std::process::id());
    let options = BaselineOptions {
        concurrency: vec![1],
        duration: Duration::from_millis(200),
        n_players: 10,
        table: table.clone(),
        ..BaselineOptions::new(Some(asking_otherwise))
    };
    let report = match postgres_baseline::run(options).await.expect("run against the machine's PostgreSQL") {
        BaselineOutcome::Ran(report) => report,
        BaselineOutcome::Skipped(reason) => panic!("skipped with a URL: {reason}"),
    };
    assert_eq!(report.synchronous_commit, "on", "{}", report.render());
    assert_eq!(report.levels[0].report.total_errors, 0, "{}", report.render());
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    let driver = tokio::spawn(connection);
    client.batch_execute(&format!("DROP TABLE {table}")).await.expect("drop");
    drop(client);
    driver.await.expect("join").expect("connection");
}
