//! The `loadtest` binary: parses the command line, runs a scenario (or prepares session tokens),
//! prints the report, writes the JSON report, and exits with 2 when an SLO is missed.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use loadtest::postgres_baseline::{self, BaselineOptions, BaselineOutcome};
use loadtest::slo::Slo;
use loadtest::{Mix, Options, Rates, ScenarioOptions};
use proto::Encoding;

/// mimalloc rather than glibc's malloc: many small short-lived allocations per request, and
/// glibc's allocator was a tenth of the load generator's CPU time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code when an SLO is missed.
const EXIT_SLO_MISSED: i32 = 2;

/// Load generator for the game gateway.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Logs N accounts in once and writes their session tokens, one per line, for `--token-file`.
    PrepareSessions {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Where to write the tokens.
        #[arg(long)]
        out: PathBuf,
        /// Logins in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// The player-state workload of the `state` scenario as plain PostgreSQL upserts (one prepared
    /// autocommit statement per update), swept over concurrency levels, for comparison.
    PostgresBaseline(BaselineArgs),
}

#[derive(Debug, Args)]
struct BaselineArgs {
    /// `postgres://user@host:port/database`; without one the baseline is skipped.
    #[arg(long, env = "LOADTEST_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Concurrent connections of each level, run in this order.
    #[arg(long, value_delimiter = ',', default_values_t = postgres_baseline::DEFAULT_CONCURRENCY)]
    concurrency: Vec<usize>,
    /// Seconds each level runs.
    #[arg(long, default_value_t = postgres_baseline::DEFAULT_DURATION.as_secs_f64())]
    duration: f64,
    /// Distinct players the updates are spread over.
    #[arg(long, default_value_t = postgres_baseline::DEFAULT_N_PLAYERS)]
    players: usize,
    /// The table to write; dropped and created again at the start.
    #[arg(long, default_value = postgres_baseline::DEFAULT_TABLE)]
    table: String,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Do not print a line as each level ends.
    #[arg(long)]
    no_progress: bool,
}

/// Where and how clients connect.
#[derive(Debug, Args)]
struct ConnectArgs {
    /// A gateway's game URL; repeat to spread clients round robin over several.
    #[arg(long = "target", default_value = "ws://127.0.0.1:7070/")]
    targets: Vec<String>,
    /// Simulated clients (accounts `lt-<prefix>-0` ..).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// The encoding clients speak.
    #[arg(long, value_enum, default_value_t = EncodingArg::Bincode)]
    encoding: EncodingArg,
    /// Local address to bind client sockets to; repeat to spread over several (round robin).
    #[arg(long = "source-addr")]
    source_addrs: Vec<IpAddr>,
    /// Accounts are `lt-<prefix>-<n>`, registered on first use; reuse a prefix to reuse them.
    #[arg(long, default_value = loadtest::DEFAULT_USERNAME_PREFIX)]
    username_prefix: String,
    /// Print a status line every second to stderr.
    #[arg(long, overrides_with = "no_progress", default_value_t = true)]
    progress: bool,
    /// Do not print status lines.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// A gateway's admin URL, matched to the targets in order, for its metrics.
    #[arg(long = "admin")]
    admins: Vec<String>,
    /// `idle`, `login-storm`, `ping`, `state`, `chat`, `inventory`, `match`, a blend such as
    /// `ping=8,idle=1,login-storm=1`, or `mixed` with `--mix`.
    #[arg(long, default_value = "ping")]
    scenario: String,
    /// The blend for `--scenario mixed`.
    #[arg(long)]
    mix: Option<String>,
    /// Seconds over which clients start, evenly.
    #[arg(long, default_value_t = 0.0)]
    ramp_up: f64,
    /// Seconds the run lasts after the ramp-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Requests per second per client (`10`, or `ping=10` for one scenario); absent or 0: closed loop.
    #[arg(long = "rate")]
    rates: Vec<String>,
    /// Session tokens, one per line (from `prepare-sessions`): clients resume instead of logging in.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// `chat`: members per room; clients `rank / N` share a room.
    #[arg(long, default_value_t = loadtest::scenario::DEFAULT_CHAT_ROOM_SIZE)]
    chat_room_size: usize,
    /// `chat`: send direct messages between pairs of clients instead of into rooms.
    #[arg(long)]
    chat_dm: bool,
    /// `match`: the matchmaking mode clients queue for.
    #[arg(long, default_value = loadtest::scenario::DEFAULT_MATCH_MODE)]
    match_mode: String,
    /// `inventory`: the gateways' service token, for granting items through the admin port
    /// (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "LOADTEST_SERVICE_TOKEN", hide_env_values = true)]
    service_token: Option<String>,
    /// An objective such as `p99<20ms`, `ping:p99.9<50ms`, `errors<0.1%`; repeatable. A missed one
    /// makes the exit code 2.
    #[arg(long = "slo")]
    slos: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EncodingArg {
    Bincode,
    Json,
}

impl ConnectArgs {
    fn options(&self, mix: Mix) -> Options {
        Options {
            targets: self.targets.clone(),
            source_addrs: self.source_addrs.clone(),
            encoding: match self.encoding {
                EncodingArg::Bincode => Encoding::Bincode,
                EncodingArg::Json => Encoding::Json,
            },
            username_prefix: self.username_prefix.clone(),
            progress: self.progress && !self.no_progress,
            ..Options::new(String::new(), mix, self.clients)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let cli = Cli::parse();
    match cli.command {
        Some(Command::PrepareSessions { connect, out, concurrency }) => {
            let options = connect.options(Mix::single(loadtest::ScenarioKind::LoginStorm));
            let (tokens, report) = loadtest::prepare_sessions(options, concurrency).await?;
            std::fs::write(&out, tokens.join("\n") + "\n")
                .with_context(|| format!("writing {}", out.display()))?;
            let mut stdout = std::io::stdout().lock();
            write!(stdout, "{}", report.render())?;
            writeln!(stdout, "wrote {} tokens to {}", tokens.len(), out.display())?;
            Ok(())
        }
        Some(Command::PostgresBaseline(args)) => postgres_baseline(args).await,
        None => run(cli.run).await,
    }
}

async fn postgres_baseline(args: BaselineArgs) -> anyhow::Result<()> {
    let options = BaselineOptions {
        concurrency: args.concurrency,
        duration: Duration::try_from_secs_f64(args.duration).context("--duration")?,
        n_players: args.players,
        table: args.table,
        progress: !args.no_progress,
        ..BaselineOptions::new(args.postgres_url)
    };
    let mut stdout = std::io::stdout().lock();
    let report = match postgres_baseline::run(options).await? {
        BaselineOutcome::Skipped(reason) => {
            writeln!(stdout, "{reason}")?;
            return Ok(());
        }
        BaselineOutcome::Ran(report) => report,
    };
    write!(stdout, "{}", report.render())?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mix = match (args.scenario.as_str(), &args.mix) {
        ("mixed", Some(mix)) => Mix::parse(mix),
        ("mixed", None) => Err("--scenario mixed needs --mix".to_owned()),
        (scenario, _) => Mix::parse(scenario),
    }
    .map_err(anyhow::Error::msg)?;
    let mut rates = Rates::default();
    for rate in &args.rates {
        rates.add(rate).map_err(anyhow::Error::msg)?;
    }
    let slos = args
        .slos
        .iter()
        .map(|slo| Slo::parse(slo))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let tokens = match &args.token_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let tokens: Vec<String> =
                text.lines().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
            anyhow::ensure!(!tokens.is_empty(), "{} holds no tokens", path.display());
            if tokens.len() < args.connect.clients {
                tracing::warn!(
                    tokens = tokens.len(),
                    clients = args.connect.clients,
                    "fewer tokens than clients: sessions are shared round robin"
                );
            }
            tokens
        }
        None => Vec::new(),
    };
    let options = Options {
        admins: args.admins.clone(),
        ramp_up: Duration::try_from_secs_f64(args.ramp_up).context("--ramp-up")?,
        duration: Duration::try_from_secs_f64(args.duration).context("--duration")?,
        rates,
        tokens,
        scenario: ScenarioOptions {
            chat_room_size: args.chat_room_size,
            chat_dm: args.chat_dm,
            service_token: args.service_token.clone(),
            match_mode: args.match_mode.clone(),
        },
        ..args.connect.options(mix)
    };

    let report = loadtest::run(options).await?;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", report.render())?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    let checks: Vec<_> = slos.iter().map(|slo| slo.check(&report)).collect();
    for check in &checks {
        writeln!(stdout, "slo {check}")?;
    }
    stdout.flush()?;
    if checks.iter().any(|check| !check.met) {
        std::process::exit(EXIT_SLO_MISSED);
    }
    Ok(())
}
