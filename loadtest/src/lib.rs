//! The load generator every benchmark runs on: simulated clients of the gateway, scenario by
//! scenario, with latency histograms, live progress, the gateways' own figures scraped from their
//! admin ports, a text and JSON report, and SLO checks.
//!
//! Entry points: [`run`] (one run of a scenario or blend, returning a [`Report`]),
//! [`prepare_sessions`] (log many accounts in once, for token files) and
//! [`postgres_baseline::run`] (the player-state workload as plain PostgreSQL upserts, for
//! comparison). The `loadtest` binary is a thin CLI over them; tests call them directly.

pub mod conn;
pub mod metrics;
pub mod postgres_baseline;
pub mod report;
pub mod scenario;
pub mod slo;
pub mod stats;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use proto::Encoding;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use report::Report;
pub use scenario::{Mix, Rates, ScenarioKind, ScenarioOptions};

use crate::metrics::Snapshot;
use crate::report::{FlushLag, GatewayReport};
use crate::scenario::{ClientContext, DRAIN_TIMEOUT, REQUEST_TIMEOUT, Shared};

/// The password of every load-test account.
pub const DEFAULT_PASSWORD: &str = "load-test-password";
/// The default account prefix: accounts are `lt-<prefix>-<n>`.
pub const DEFAULT_USERNAME_PREFIX: &str = "load";
/// Interval of the progress line.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long the gateways' figures may keep moving after the last answer: request counters (the
/// gateway counts a request just after it queues the response), connections closing, and the
/// flush of the last player-state updates (every second by default).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between the scrapes that check the counters have settled.
const SETTLE_POLL: Duration = Duration::from_millis(100);
/// Pause between reaching the peak and scraping it, so the last handshakes' buffers are counted.
const PEAK_SETTLE: Duration = Duration::from_millis(500);
/// Time between two samples of each gateway's player-state flush lag during a run: a fraction of
/// the default flush interval (1 s), so the lag's peaks just before each flush are seen.
pub const FLUSH_LAG_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// Everything one run is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Gateways' game URLs (`ws://host:port/`); clients are spread over them round robin.
    pub targets: Vec<String>,
    /// Gateways' admin URLs (`http://host:port`), matched to `targets`; may be empty.
    pub admins: Vec<String>,
    /// The scenario or blend each client runs.
    pub mix: Mix,
    /// Simulated clients.
    pub clients: usize,
    /// Clients start evenly over this long.
    pub ramp_up: Duration,
    /// How long the run lasts after the ramp-up.
    pub duration: Duration,
    /// Per-client request rates (absent: closed loop).
    pub rates: Rates,
    /// The encoding clients speak.
    pub encoding: Encoding,
    /// Local addresses to connect from, round robin; empty: any.
    pub source_addrs: Vec<IpAddr>,
    /// Accounts are `lt-<prefix>-<n>`.
    pub username_prefix: String,
    /// The accounts' password.
    pub password: String,
    /// Session tokens; client `i` resumes with token `i % len` instead of logging in.
    pub tokens: Vec<String>,
    /// Print a status line every second to stderr.
    pub progress: bool,
    /// What scenarios need beyond a rate (chat rooms, the service token for grants).
    pub scenario: ScenarioOptions,
}

impl Options {
    /// Options for `clients` clients of `mix` against one gateway, with everything else default.
    pub fn new(target: impl Into<String>, mix: Mix, clients: usize) -> Options {
        Options {
            targets: vec![target.into()],
            admins: Vec::new(),
            mix,
            clients,
            ramp_up: Duration::ZERO,
            duration: Duration::from_secs(10),
            rates: Rates::default(),
            encoding: Encoding::Bincode,
            source_addrs: Vec::new(),
            username_prefix: DEFAULT_USERNAME_PREFIX.into(),
            password: DEFAULT_PASSWORD.into(),
            tokens: Vec::new(),
            progress: false,
            scenario: ScenarioOptions::default(),
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.targets.is_empty(), "at least one --target is needed");
        ensure!(self.clients > 0, "--clients must be positive");
        ensure!(
            self.admins.is_empty() || self.admins.len() == self.targets.len(),
            "give one --admin per --target, or none"
        );
        ensure!(self.scenario.chat_room_size >= 2, "--chat-room-size must be at least 2");
        if self.mix.kinds().any(|kind| kind == ScenarioKind::Inventory) {
            ensure!(
                !self.admins.is_empty() && self.scenario.service_token.is_some(),
                "the inventory scenario grants items through the admin port: give --admin and --service-token"
            );
        }
        let longest = username(&self.username_prefix, self.clients.saturating_sub(1));
        ensure!(
            longest.len() <= proto::limits::USERNAME_MAX_CHARS,
            "username prefix too long: {longest:?} exceeds {} characters",
            proto::limits::USERNAME_MAX_CHARS
        );
        Ok(())
    }

    /// Client `index`, number `rank` of the `n_peers` clients of `kind`.
    fn client(
        &self,
        index: usize,
        (kind, rank, n_peers): (ScenarioKind, usize, usize),
        shared: &Arc<Shared>,
    ) -> ClientContext {
        ClientContext {
            index,
            rank,
            n_peers,
            admin: (!self.admins.is_empty()).then(|| self.admins[index % self.admins.len()].clone()),
            target: self.targets[index % self.targets.len()].clone(),
            source: (!self.source_addrs.is_empty())
                .then(|| self.source_addrs[index % self.source_addrs.len()]),
            encoding: self.encoding,
            username: username(&self.username_prefix, index),
            token: (!self.tokens.is_empty()).then(|| self.tokens[index % self.tokens.len()].clone()),
            rate: self.rates.of(kind),
            shared: shared.clone(),
        }
    }
}

/// The account of client `index`.
pub fn username(prefix: &str, index: usize) -> String {
    format!("lt-{prefix}-{index}")
}

/// Runs the clients of `options` for the ramp-up and the duration, waits for their last answers,
/// and reports.
///
/// # Errors
/// Invalid options, or a gateway's admin port that cannot be scraped before the run (one that
/// cannot be scraped after it leaves the gateways out of the report).
pub async fn run(options: Options) -> anyhow::Result<Report> {
    options.validate()?;
    let before = scrape_all(&options.admins).await.context("scraping before the run")?;

    let start = Instant::now();
    let kinds = options.mix.assign(options.clients);
    let n_holding = kinds.iter().filter(|kind| kind.holds_connection()).count() as u64;
    let mut n_of_kind: HashMap<ScenarioKind, usize> = HashMap::new();
    for kind in &kinds {
        *n_of_kind.entry(*kind).or_default() += 1;
    }
    let n_of = |kind: ScenarioKind| n_of_kind.get(&kind).copied().unwrap_or(0);
    let shared = Arc::new(Shared::new(
        start + options.ramp_up + options.duration,
        options.password.clone(),
        options.scenario.clone(),
        n_of(ScenarioKind::Chat) as u64,
    ));

    let mut clients = JoinSet::new();
    let mut ranks: HashMap<ScenarioKind, usize> = HashMap::new();
    for (index, kind) in kinds.iter().copied().enumerate() {
        let rank = ranks.entry(kind).or_default();
        let ctx = options.client(index, (kind, *rank, n_of(kind)), &shared);
        *rank += 1;
        let starts_at = start + options.ramp_up.mul_f64(index as f64 / options.clients as f64);
        clients.spawn(async move {
            tokio::time::sleep_until(starts_at).await;
            scenario::run_client(kind, ctx).await;
        });
    }
    let progress = options.progress.then(|| tokio::spawn(progress(shared.clone(), options.clients, start)));

    // Only runs that update player state have a flush lag; the others are left unscraped.
    let lag_admins = if n_of(ScenarioKind::State) > 0 { options.admins.clone() } else { Vec::new() };
    let (stop_sampling, sampling_stopped) = tokio::sync::oneshot::channel();
    let flush_lag = tokio::spawn(sample_flush_lag(lag_admins, shared.deadline, sampling_stopped));
    let peak = scrape_at_peak(&options.admins, &shared, n_holding).await;
    let grace = shared.deadline + DRAIN_TIMEOUT + REQUEST_TIMEOUT;
    while tokio::time::timeout_at(grace, clients.join_next()).await.is_ok_and(|joined| joined.is_some()) {}
    if !clients.is_empty() {
        tracing::warn!(stuck = clients.len(), "clients still busy after the grace period: stopping them");
        clients.abort_all();
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    if let Some(progress) = progress {
        progress.abort();
    }
    let _ = stop_sampling.send(());
    let flush_lag = flush_lag.await.unwrap_or_default();

    let undelivered = shared.chat.undelivered();
    if undelivered > 0 {
        shared.recorder.failed_many(0, stats::CHAT_DELIVERY, "undelivered", undelivered);
    }
    let stats = shared.recorder.snapshot();
    let expected: u64 = stats
        .kinds
        .iter()
        .filter(|(kind, _)| stats::is_server_request(kind))
        .map(|(_, kind)| kind.answered())
        .sum();
    // A gateway that went away during the run is what the clients' figures then tell of: they
    // are reported without the gateways' own.
    let after = match scrape_settled(&options.admins, &before, expected).await {
        Ok(after) => after,
        Err(error) => {
            tracing::warn!(%error, "no gateway figures after the run: reporting the clients' alone");
            Vec::new()
        }
    };
    let gateways = options
        .admins
        .iter()
        .zip(before)
        .zip(after)
        .enumerate()
        .map(|(i, ((admin, before), after))| {
            let peak = peak.as_ref().and_then(|peak| peak.get(i).cloned());
            let lag = flush_lag.get(i).copied().filter(|lag| lag.samples > 0);
            GatewayReport::new(admin.clone(), before, peak, after, lag)
        })
        .collect();
    Ok(Report::new(options.mix.name(), options.clients, elapsed_secs, &stats, gateways))
}

/// Logs accounts `0..options.clients` in once each (registering those that do not exist), at most
/// `concurrency` at a time, and returns their session tokens in account order, with the login
/// report.
///
/// # Errors
/// Invalid options, or an account that could not be logged in.
pub async fn prepare_sessions(options: Options, concurrency: usize) -> anyhow::Result<(Vec<String>, Report)> {
    options.validate()?;
    let start = Instant::now();
    let shared = Arc::new(Shared::new(start, options.password.clone(), options.scenario.clone(), 0));
    let progress = options.progress.then(|| tokio::spawn(progress(shared.clone(), options.clients, start)));
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut logins = JoinSet::new();
    for index in 0..options.clients {
        let ctx = ClientContext {
            token: None,
            ..options.client(index, (ScenarioKind::LoginStorm, index, options.clients), &shared)
        };
        let slots = slots.clone();
        logins.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let mut open = ctx.connect().await?;
            let token = ctx.login(&mut open.conn).await;
            open.close().await;
            token.map(|token| (index, token))
        });
    }
    let mut tokens = vec![String::new(); options.clients];
    let mut missing = 0;
    while let Some(joined) = logins.join_next().await {
        match joined.ok().flatten() {
            Some((index, token)) => tokens[index] = token,
            None => missing += 1,
        }
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let report = Report::new(
        "prepare-sessions".into(),
        options.clients,
        start.elapsed().as_secs_f64(),
        &shared.recorder.snapshot(),
        Vec::new(),
    );
    if missing > 0 {
        bail!("{missing} of {} accounts could not log in:\n{}", options.clients, report.render());
    }
    Ok((tokens, report))
}

/// Samples each gateway's `player_flush_lag_seconds` every [`FLUSH_LAG_SAMPLE_INTERVAL`] until
/// `deadline` or `stop` (the clients finished early), one entry per admin port; a sample that
/// fails is left out.
async fn sample_flush_lag(
    admins: Vec<String>,
    deadline: Instant,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<FlushLag> {
    let mut lags = vec![FlushLag::default(); admins.len()];
    let mut ticks = tokio::time::interval(FLUSH_LAG_SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            now = ticks.tick() => if now >= deadline { break },
            _ = &mut stop => break,
        }
        for (admin, lag) in admins.iter().zip(&mut lags) {
            if let Ok(snapshot) = metrics::scrape(admin).await {
                lag.add(snapshot.player_flush_lag_secs);
            }
        }
    }
    lags
}

async fn scrape_all(admins: &[String]) -> anyhow::Result<Vec<Snapshot>> {
    let mut snapshots = Vec::with_capacity(admins.len());
    for admin in admins {
        snapshots.push(metrics::scrape(admin).await?);
    }
    Ok(snapshots)
}

/// Scrapes when every connection-holding client is connected and authenticated, or shortly before
/// the end if that never happens; `None` without admin ports or holding clients.
async fn scrape_at_peak(admins: &[String], shared: &Shared, n_holding: u64) -> Option<Vec<Snapshot>> {
    if admins.is_empty() || n_holding == 0 {
        return None;
    }
    let last_chance = shared.deadline.checked_sub(Duration::from_secs(1)).unwrap_or(shared.deadline);
    while shared.ready.load(Ordering::Relaxed) < n_holding && Instant::now() < last_chance {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep_until((Instant::now() + PEAK_SETTLE).min(shared.deadline)).await;
    match scrape_all(admins).await {
        Ok(snapshots) => Some(snapshots),
        Err(error) => {
            tracing::warn!(%error, "could not scrape at the peak");
            None
        }
    }
}

/// Scrapes until the gateways have counted `expected` requests since `before` (they count just
/// after answering), hold no more connections than before (a connection counts as closed a
/// moment after its client has gone) and, if they took player-state updates, have flushed them
/// all (so the rows flushed include the flush after the last update), or until the settle
/// timeout.
async fn scrape_settled(
    admins: &[String],
    before: &[Snapshot],
    expected: u64,
) -> anyhow::Result<Vec<Snapshot>> {
    if admins.is_empty() {
        return Ok(Vec::new());
    }
    let counted = |snapshots: &[Snapshot]| -> u64 {
        snapshots
            .iter()
            .zip(before)
            .map(|(after, before)| after.requests_since(before).values().sum::<u64>())
            .sum()
    };
    let still_open = |snapshots: &[Snapshot]| -> bool {
        snapshots.iter().zip(before).any(|(after, before)| after.connections > before.connections)
    };
    let still_buffered = |snapshots: &[Snapshot]| -> bool {
        snapshots.iter().zip(before).any(|(after, before)| {
            after.player_updates_accepted > before.player_updates_accepted && after.player_buffered > 0
        })
    };
    let give_up = Instant::now() + SETTLE_TIMEOUT;
    let mut snapshots = scrape_all(admins).await?;
    while (counted(&snapshots) < expected || still_open(&snapshots) || still_buffered(&snapshots))
        && Instant::now() < give_up
    {
        tokio::time::sleep(SETTLE_POLL).await;
        snapshots = scrape_all(admins).await?;
    }
    Ok(snapshots)
}

/// Prints a status line every second: elapsed time, connections, answers per second, errors.
async fn progress(shared: Arc<Shared>, n_clients: usize, start: Instant) {
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut last = (Instant::now(), 0);
    loop {
        ticks.tick().await;
        let (answered, errors) = shared.recorder.totals();
        let now = Instant::now();
        let per_sec = (answered - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, answered);
        eprintln!(
            "[{:>5.0}s] connected {:>6}  ready {:>6}/{n_clients}  answers/s {:>9.0}  answers {:>10}  errors {}",
            start.elapsed().as_secs_f64(),
            shared.connected.load(Ordering::Relaxed),
            shared.ready.load(Ordering::Relaxed),
            per_sec,
            answered,
            errors,
        );
    }
}
