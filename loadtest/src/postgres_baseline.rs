//! The PostgreSQL baseline: the `state` scenario's player-state updates written the conventional
//! way, as a yardstick for the gateway's buffered write path. Workers each hold one connection and
//! send one prepared single-row upsert per update, each its own (autocommit) transaction, with
//! PostgreSQL's default durability (`synchronous_commit = on`, which each connection sets, so a
//! server or role configured otherwise does not change the yardstick), closed loop; the players
//! are spread over the workers so no two workers write the same row. The sweep runs each
//! concurrency level for the same duration and reports each level as an ordinary [`Report`]
//! (request kind [`KIND`]) and the best level.
//!
//! It is not a [`crate::ScenarioKind`]: it opens no WebSocket, has no gateway to scrape and
//! cannot be blended with the scenarios, so it is a subcommand of its own over [`run`].

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use proto::{Outcome, Reply};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use crate::report::Report;
use crate::scenario::state::Walk;
use crate::stats::Recorder;

/// The request kind the upserts are recorded under.
pub const KIND: &str = "pg_upsert";
/// What a run without a URL says instead of running.
pub const SKIP_MESSAGE: &str = "no --postgres-url given: skipping the PostgreSQL baseline";
/// The table written, dropped and created again at the start of every sweep.
pub const DEFAULT_TABLE: &str = "loadtest_player_state";
/// Distinct players the updates are spread over.
pub const DEFAULT_N_PLAYERS: usize = 1000;
/// The concurrency levels of the default sweep.
pub const DEFAULT_CONCURRENCY: [usize; 6] = [1, 2, 4, 8, 16, 32];
/// How long each concurrency level runs by default.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How long connecting to PostgreSQL may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest table name PostgreSQL keeps (`NAMEDATALEN` − 1).
const TABLE_NAME_MAX_BYTES: usize = 63;
/// The `synchronous_commit` every connection of the baseline sets: PostgreSQL's default, a commit
/// acknowledged once its WAL is flushed, whatever the server, role or URL would otherwise choose.
const SYNCHRONOUS_COMMIT: &str = "on";

/// Everything one sweep is told.
#[derive(Debug, Clone)]
pub struct BaselineOptions {
    /// `postgres://user@host:port/database`; `None` skips the baseline.
    pub postgres_url: Option<String>,
    /// Concurrent workers (connections) of each level, run in this order.
    pub concurrency: Vec<usize>,
    /// How long each level runs.
    pub duration: Duration,
    /// Distinct players; at least the largest concurrency, so every worker has players.
    pub n_players: usize,
    /// The table written: a plain SQL identifier (letters, digits, `_`). Dropped and created
    /// again at the start of the sweep.
    pub table: String,
    /// Print a line to stderr as each level ends.
    pub progress: bool,
}

impl BaselineOptions {
    /// The default sweep against `postgres_url` (none: skip).
    pub fn new(postgres_url: Option<String>) -> BaselineOptions {
        BaselineOptions {
            postgres_url,
            concurrency: DEFAULT_CONCURRENCY.to_vec(),
            duration: DEFAULT_DURATION,
            n_players: DEFAULT_N_PLAYERS,
            table: DEFAULT_TABLE.into(),
            progress: false,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.concurrency.is_empty(), "--concurrency needs at least one level");
        ensure!(self.concurrency.iter().all(|c| *c > 0), "every --concurrency level must be positive");
        let most = self.concurrency.iter().copied().max().unwrap_or(0);
        ensure!(
            self.n_players >= most,
            "--players ({}) must be at least the largest concurrency ({most})",
            self.n_players
        );
        let table = self.table.as_str();
        ensure!(
            !table.is_empty()
                && table.len() <= TABLE_NAME_MAX_BYTES
                && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !table.starts_with(|c: char| c.is_ascii_digit()),
            "--table {table:?} is not a plain SQL identifier"
        );
        Ok(())
    }
}

/// What a sweep did.
#[derive(Debug, Clone)]
pub enum BaselineOutcome {
    /// Nothing ran, for this reason ([`SKIP_MESSAGE`] without a URL).
    Skipped(String),
    /// The sweep ran.
    Ran(BaselineReport),
}

/// The result of one sweep.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// `SHOW server_version`.
    pub server_version: String,
    /// `SHOW synchronous_commit` on the baseline's connections ([`SYNCHRONOUS_COMMIT`], which
    /// each sets).
    pub synchronous_commit: String,
    /// The table written.
    pub table: String,
    /// Distinct players.
    pub n_players: usize,
    /// Each level's report, in the order run.
    pub levels: Vec<LevelReport>,
    /// The level with the most updates per second.
    pub best: Best,
}

/// One concurrency level of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// Concurrent workers (connections).
    pub concurrency: usize,
    /// The level's figures, as any run reports them (request kind [`KIND`]).
    pub report: Report,
}

/// The best level of a sweep.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Best {
    /// Its concurrency.
    pub concurrency: usize,
    /// Its upserts per second.
    pub per_sec: f64,
}

impl LevelReport {
    /// Upserts answered per second.
    pub fn per_sec(&self) -> f64 {
        self.report.kinds.get(KIND).map_or(0.0, |kind| kind.per_sec)
    }
}

impl BaselineReport {
    /// The sweep as text: how PostgreSQL was set up, each level's table, and the best level.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "postgres-baseline: PostgreSQL {}, table {}, {} players; one prepared single-row upsert per \
             update, autocommit; synchronous_commit={} (PostgreSQL's default: on)",
            self.server_version, self.table, self.n_players, self.synchronous_commit
        );
        for level in &self.levels {
            out.push_str(&level.report.render());
        }
        let _ = writeln!(
            out,
            "best: {:.0} updates/s at concurrency {}",
            self.best.per_sec, self.best.concurrency
        );
        out
    }
}

/// Runs the sweep of `options`: drops and creates the table, then runs each concurrency level in
/// turn. Without a URL, skips with [`SKIP_MESSAGE`].
///
/// # Errors
/// Invalid options, or PostgreSQL unreachable or refusing the table. Failed upserts are not
/// errors of the sweep: they are counted in the level's report.
pub async fn run(options: BaselineOptions) -> anyhow::Result<BaselineOutcome> {
    let Some(url) = options.postgres_url.as_deref() else {
        return Ok(BaselineOutcome::Skipped(SKIP_MESSAGE.into()));
    };
    options.validate()?;
    let (setup, driver) = connect(url).await?;
    let show = |setting: &'static str| {
        let setup = &setup;
        async move {
            let row = setup.query_one(&format!("SHOW {setting}"), &[]).await?;
            anyhow::Ok(row.try_get::<_, String>(0)?)
        }
    };
    let server_version = show("server_version").await?;
    let synchronous_commit = show("synchronous_commit").await?;
    let table = &options.table;
    setup
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (
                 player_id  uuid PRIMARY KEY,
                 x          real NOT NULL,
                 y          real NOT NULL,
                 z          real NOT NULL,
                 rotation   real NOT NULL,
                 health     int NOT NULL,
                 attributes bytea NOT NULL,
                 version    bigint NOT NULL,
                 updated_at timestamptz NOT NULL
             );"
        ))
        .await
        .with_context(|| format!("creating table {table}"))?;
    drop(setup);
    let _ = driver.await;

    // v7 ids, as the gateway's accounts have: the same players in every level.
    let player_ids: Vec<Uuid> = (0..options.n_players).map(|_| Uuid::now_v7()).collect();
    let mut levels = Vec::with_capacity(options.concurrency.len());
    for &concurrency in &options.concurrency {
        let report = run_level(url, table, &player_ids, concurrency, options.duration).await?;
        let level = LevelReport { concurrency, report };
        if options.progress {
            eprintln!(
                "postgres-baseline: concurrency {concurrency:>3}: {:>9.0} updates/s, errors {}",
                level.per_sec(),
                level.report.total_errors
            );
        }
        levels.push(level);
    }
    let best = levels
        .iter()
        .map(|level| Best { concurrency: level.concurrency, per_sec: level.per_sec() })
        .max_by(|a, b| a.per_sec.total_cmp(&b.per_sec))
        .context("no level ran")?;
    Ok(BaselineOutcome::Ran(BaselineReport {
        server_version,
        synchronous_commit,
        table: table.clone(),
        n_players: options.n_players,
        levels,
        best,
    }))
}

/// The upsert: absent fields keep their stored values (new players start from zero, as the
/// gateway's do), and the version grows by one per update.
fn upsert_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (player_id, x, y, z, rotation, health, attributes, version, updated_at)
         VALUES ($1, $2, $3, $4, coalesce($5::real, 0), coalesce($6::int, 0), coalesce($7::bytea, ''), 1, now())
         ON CONFLICT (player_id) DO UPDATE SET
             x = excluded.x, y = excluded.y, z = excluded.z,
             rotation = coalesce($5::real, {table}.rotation),
             health = coalesce($6::int, {table}.health),
             attributes = coalesce($7::bytea, {table}.attributes),
             version = {table}.version + 1,
             updated_at = excluded.updated_at
         RETURNING version"
    )
}

/// Runs `concurrency` workers for `duration`, worker `w` updating players `w`, `w + concurrency`,
/// ... in turn, and reports. Connections are opened and statements prepared before the clock
/// starts.
async fn run_level(
    url: &str,
    table: &str,
    player_ids: &[Uuid],
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Report> {
    let sql = upsert_sql(table);
    let mut workers = Vec::with_capacity(concurrency);
    let mut drivers = Vec::with_capacity(concurrency);
    for index in 0..concurrency {
        let (client, driver) = connect(url).await?;
        drivers.push(driver);
        let upsert = client.prepare(&sql).await.context("preparing the upsert")?;
        let players: Vec<(Uuid, Walk)> = player_ids
            .iter()
            .enumerate()
            .skip(index)
            .step_by(concurrency)
            .map(|(n, id)| (*id, Walk::new(n)))
            .collect();
        workers.push(Worker { index, client, upsert, players });
    }

    let recorder = std::sync::Arc::new(Recorder::default());
    let start = Instant::now();
    let deadline = start + duration;
    let mut running = JoinSet::new();
    for worker in workers {
        running.spawn(worker.run(recorder.clone(), deadline));
    }
    // Each worker drops its client when it ends, which ends its connection's driver.
    while running.join_next().await.is_some() {}
    let elapsed_secs = start.elapsed().as_secs_f64();
    for driver in drivers {
        let _ = driver.await;
    }
    Ok(Report::new(
        format!("postgres-baseline c={concurrency}"),
        concurrency,
        elapsed_secs,
        &recorder.snapshot(),
        Vec::new(),
    ))
}

/// One worker: a connection, its prepared upsert, and the players only it writes.
struct Worker {
    index: usize,
    client: Client,
    upsert: Statement,
    players: Vec<(Uuid, Walk)>,
}

impl Worker {
    /// Upserts its players round robin, one update at a time, until `deadline`.
    async fn run(mut self, recorder: std::sync::Arc<Recorder>, deadline: Instant) {
        let mut turn = 0;
        while Instant::now() < deadline {
            let (player_id, walk) = &mut self.players[turn];
            let player_id = *player_id;
            let update = walk.next_update();
            turn = (turn + 1) % self.players.len();
            let position = update.position.unwrap_or_default();
            let health = update.health.map(|health| i32::try_from(health).unwrap_or(i32::MAX));
            let started = Instant::now();
            let result = self
                .client
                .query_one(
                    &self.upsert,
                    &[
                        &player_id,
                        &position.x,
                        &position.y,
                        &position.z,
                        &update.rotation,
                        &health,
                        &update.attributes,
                    ],
                )
                .await
                .and_then(|row| row.try_get::<_, i64>(0));
            match result {
                Ok(version) => {
                    let version = u64::try_from(version).unwrap_or(0);
                    let outcome = Outcome::Ok(Reply::StateAccepted { version });
                    recorder.answered(self.index, KIND, started.elapsed(), &outcome, false);
                }
                Err(error) => {
                    tracing::debug!(%error, worker = self.index, "upsert failed");
                    recorder.failed_with(self.index, KIND, error_label(&error));
                    if self.client.is_closed() {
                        return;
                    }
                }
            }
        }
    }
}

/// `pg_<SQLSTATE>` for errors the server reported, `pg_closed` or `pg_client` otherwise.
fn error_label(error: &tokio_postgres::Error) -> String {
    match error.code() {
        Some(code) => format!("pg_{}", code.code()),
        None if error.is_closed() => "pg_closed".into(),
        None => "pg_client".into(),
    }
}

/// Connects to `url` without TLS and sets [`SYNCHRONOUS_COMMIT`]; returns the client and its
/// connection's driver, which must be polled (spawned) for the client to work and ends when the
/// client is dropped.
async fn connect(url: &str) -> anyhow::Result<(Client, tokio::task::JoinHandle<()>)> {
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(url, NoTls))
        .await
        .with_context(|| format!("connecting to {url}: timed out"))?
        .with_context(|| format!("connecting to {url}"))?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres connection ended");
        }
    });
    client
        .batch_execute(&format!("SET synchronous_commit = {SYNCHRONOUS_COMMIT}"))
        .await
        .context("setting synchronous_commit")?;
    Ok((client, driver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_accepted_as_table_names() {
        let with_table = |table: &str| BaselineOptions { table: table.into(), ..BaselineOptions::new(None) };
        for table in ["loadtest_player_state", "t1", "_x"] {
            assert!(with_table(table).validate().is_ok(), "{table}");
        }
        for table in ["", "1t", "a;DROP TABLE b", "a.b", "\"x\"", &"t".repeat(64)] {
            assert!(with_table(table).validate().is_err(), "{table}");
        }
    }

    #[test]
    fn every_worker_needs_a_player() {
        let options =
            BaselineOptions { n_players: 8, concurrency: vec![4, 16], ..BaselineOptions::new(None) };
        assert!(options.validate().is_err());
        assert!(BaselineOptions { concurrency: vec![], ..options.clone() }.validate().is_err());
        assert!(BaselineOptions { concurrency: vec![0], ..options.clone() }.validate().is_err());
        assert!(BaselineOptions { concurrency: vec![1, 8], ..options }.validate().is_ok());
    }
}
