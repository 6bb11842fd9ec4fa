//! `gamectl`: the operators' command line. It reads the same configuration as the gateway (a TOML
//! file, environment variables, flags) and runs one operation of [`gateway::ops`]: status,
//! backup, restore, integrity, flush, accounts and sessions, the inventory ledger, chat years.
//!
//! Results go to stdout (a table, or JSON with `--json`); logs go to stderr (`RUST_LOG`, default
//! `warn`). The exit status is 0 on success, 1 on an error, 2 when `integrity` finds a problem or
//! `status` a shard or chat year it cannot read or a configured Redis that does not answer.

#![allow(clippy::print_stdout, reason = "a command-line tool prints its results")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gateway::GatewayConfig;
use gateway::ops::{self, backup};
use serde::Serialize;

/// Operate a game backend: its data directory, Redis and gateways. Reads the gateway's
/// configuration: flag, then environment variable, then the TOML file, then the default.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The gateway's TOML configuration file.
    #[arg(long, env = "GAME_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Directory of the SQLite shards [default: ./data].
    #[arg(long, env = "GAME_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Redis URL the gateways share; without one, the embedded store of a stopped gateway.
    #[arg(long, env = "GAME_REDIS_URL", global = true)]
    redis_url: Option<String>,
    /// Prefix of every Redis key [default: game:].
    #[arg(long, env = "GAME_KEY_PREFIX", global = true)]
    key_prefix: Option<String>,
    /// Seconds to wait for Redis or a gateway before giving up.
    #[arg(long, global = true, default_value_t = ops::DEFAULT_TIMEOUT.as_secs_f64())]
    timeout: f64,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every shard, Redis and the player-state buffer, and the connections of each gateway.
    Status {
        /// A gateway's admin address (host:port), repeatable [default: the configured
        /// admin_listen].
        #[arg(long = "admin", env = "GAME_ADMIN_ADDRS", value_delimiter = ',')]
        admins: Vec<String>,
    },
    /// Online backup of every shard into a new directory, after a forced player-state flush.
    Backup {
        /// The backup directory: new or empty.
        #[arg(long)]
        to: PathBuf,
        /// Skip the player-state flush (the backup then misses what the buffer still holds).
        #[arg(long)]
        no_flush: bool,
    },
    /// Restore a backup into --data-dir; refuses while a gateway runs on it.
    Restore {
        /// The backup directory (with its manifest.json).
        #[arg(long)]
        from: PathBuf,
    },
    /// Integrity check of every shard and archived chat year; exit status 2 if any fails.
    Integrity,
    /// Write every buffered player state to player.db now.
    Flush,
    /// Show, disable or enable an account.
    Account {
        #[command(subcommand)]
        action: AccountAction,
    },
    /// End sessions.
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// A player's inventory ledger, newest first.
    Ledger {
        /// Username or account id.
        player: String,
        /// Entries at most.
        #[arg(long, default_value_t = ops::DEFAULT_LEDGER_LIMIT)]
        limit: u32,
    },
    /// A match's players, ratings and result.
    Match {
        /// The match id.
        match_id: uuid::Uuid,
    },
    /// Chat's yearly shards.
    Chat {
        #[command(subcommand)]
        action: ChatAction,
    },
}

#[derive(Debug, Subcommand)]
enum AccountAction {
    /// Show an account.
    Show {
        /// Username or account id.
        name: String,
    },
    /// Disable an account: it cannot log in, and its sessions end now.
    Disable {
        /// Username or account id.
        name: String,
    },
    /// Let a disabled account log in again.
    Enable {
        /// Username or account id.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum SessionsAction {
    /// End every session of an account and close its live connections.
    Revoke {
        /// Username or account id.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ChatAction {
    /// Create a year's shard, the current one or later (nothing changes if it exists).
    Provision {
        /// The year.
        year: i32,
    },
    /// Move a past year into the archive (compacted, verified, read-only); finishes an
    /// interrupted retire, and only reports a year already retired.
    Retire {
        /// The year.
        year: i32,
    },
    /// Every year, live and archived.
    List,
}

impl Cli {
    fn gateway_config(&self) -> anyhow::Result<GatewayConfig> {
        let mut config = match &self.config {
            Some(path) => GatewayConfig::from_toml_file(path)?,
            None => GatewayConfig::default(),
        };
        if let Some(data_dir) = &self.data_dir {
            config.data_dir.clone_from(data_dir);
        }
        if let Some(redis_url) = &self.redis_url {
            config.redis_url = Some(redis_url.clone());
        }
        if let Some(key_prefix) = &self.key_prefix {
            config.key_prefix.clone_from(key_prefix);
        }
        config.validate()?;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("gamectl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.gateway_config()?;
    let timeout = Duration::try_from_secs_f64(cli.timeout).context("--timeout")?;
    let json = cli.json;
    match cli.command {
        Command::Status { admins } => {
            let admins = if admins.is_empty() {
                vec![config.admin_listen]
            } else {
                admins.iter().map(|admin| parse_admin(admin)).collect::<anyhow::Result<_>>()?
            };
            let status = ops::status(&config, &admins, timeout).await?;
            // Reported either way; the exit status lets a script or a probe see it too.
            let sound = status.shards.iter().all(|shard| shard.error.is_none())
                && status.chat_years_error.is_none()
                && (!status.redis.configured || status.redis.reachable);
            print(json, &status, print_status)?;
            Ok(if sound { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Backup { to, no_flush } => {
            let manifest = backup::backup(&config, &to, !no_flush, timeout)
                .await
                .with_context(|| format!("backup of {} into {}", config.data_dir.display(), to.display()))?;
            print(json, &manifest, |manifest| {
                match (&manifest.player_flush, &manifest.player_flush_skipped) {
                    (Some(flush), _) => println!("player-state flush: {} rows", flush.rows_written),
                    (None, Some(reason)) => println!("player-state flush skipped: {reason}"),
                    (None, None) => {}
                }
                for file in &manifest.files {
                    println!("{:<32} {:>10}  {}", file.path, human_bytes(file.bytes), file.sha256);
                }
                println!("backup complete: {} ({})", to.display(), manifest.started_at);
            })
        }
        Command::Restore { from } => {
            let report = backup::restore(&config, &from).await.with_context(|| {
                format!("restore of {} into {}", from.display(), config.data_dir.display())
            })?;
            print(json, &report, |report| {
                for file in &report.files {
                    println!("restored {file}");
                }
                if let Some(previous) = &report.previous {
                    println!("the previous shards are in {}", previous.display());
                }
            })
        }
        Command::Integrity => {
            let reports = ops::integrity(&config).await?;
            let all_ok = reports.iter().all(ops::Integrity::ok);
            print(json, &reports, |reports| {
                for report in reports {
                    if report.ok() {
                        println!("{:<24} ok", report.file);
                    } else {
                        println!("{:<24} FAILED", report.file);
                        for problem in &report.problems {
                            println!("    {problem}");
                        }
                    }
                }
            })?;
            Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Flush => {
            let flush = ops::flush(&config, timeout).await?;
            print(json, &flush, |flush| {
                println!(
                    "flushed {} player states in {} transactions ({} already current)",
                    flush.rows_written, flush.batches, flush.rows_skipped
                );
            })
        }
        Command::Account { action } => {
            let info = match &action {
                AccountAction::Show { name } => ops::account_show(&config, name, timeout).await?,
                AccountAction::Disable { name } => {
                    ops::set_account_disabled(&config, name, true, timeout).await?
                }
                AccountAction::Enable { name } => {
                    ops::set_account_disabled(&config, name, false, timeout).await?
                }
            };
            print(json, &info, print_account)
        }
        Command::Sessions { action: SessionsAction::Revoke { name } } => {
            let n_sessions = ops::revoke_sessions(&config, &name, timeout).await?;
            print(json, &serde_json::json!({ "account": name, "sessions_ended": n_sessions }), |_| {
                println!("{n_sessions} sessions of {name} ended");
            })
        }
        Command::Ledger { player, limit } => {
            let (account_id, lines) = ops::ledger(&config, &player, limit, timeout).await?;
            print(json, &lines, |lines| {
                println!("ledger of {player} ({account_id}), newest first");
                for line in lines {
                    println!(
                        "{:>8}  {}  {:<20} {:>+8}  {}  [{}]",
                        line.entry_id,
                        ops::utc_timestamp(line.at_ms),
                        line.item_id,
                        line.delta,
                        line.reason,
                        line.request_key
                    );
                }
            })
        }
        Command::Match { match_id } => {
            let details = ops::match_details(&config, match_id).await?;
            let value = serde_json::json!({
                "match_id": details.match_id,
                "mode": details.mode,
                "created_at_ms": details.created_at_ms,
                "teams": details.teams.iter().map(|team| team.iter().map(|player| serde_json::json!({
                    "account_id": player.account_id,
                    "rating_before": player.rating_before,
                    "rating_after": player.rating_after,
                })).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "outcome": details.outcome.map(|outcome| match outcome {
                    matchmaking::MatchOutcome::Winner(team) => format!("team {team} won"),
                    matchmaking::MatchOutcome::Draw => "draw".to_owned(),
                }),
                "finished_at_ms": details.finished_at_ms,
                "disputed": details.disputed,
            });
            print(json, &value, |_| {
                println!(
                    "match {} ({}), formed {}",
                    details.match_id,
                    details.mode,
                    ops::utc_timestamp(details.created_at_ms)
                );
                for (n, team) in details.teams.iter().enumerate() {
                    for player in team {
                        let after = player.rating_after.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
                        println!(
                            "  team {n}  {}  rating {:.1} -> {after}",
                            player.account_id, player.rating_before
                        );
                    }
                }
                match (details.outcome, details.disputed) {
                    (Some(matchmaking::MatchOutcome::Winner(team)), _) => {
                        println!("  result: team {team} won")
                    }
                    (Some(matchmaking::MatchOutcome::Draw), _) => println!("  result: draw"),
                    (None, true) => {
                        println!("  result: disputed (players disagree; a trusted caller must decide)")
                    }
                    (None, false) => println!("  result: not reported yet"),
                }
            })
        }
        Command::Chat { action } => match action {
            ChatAction::Provision { year } => {
                let path = ops::chat_provision(&config, year).await?;
                print(json, &path, |path| println!("provisioned {}", path.display()))
            }
            ChatAction::Retire { year } => {
                let report = ops::chat_retire(&config, year).await?;
                let outcome = match report.outcome {
                    chat::lifecycle::RetireOutcome::Retired => "retired",
                    chat::lifecycle::RetireOutcome::Resumed => "resumed",
                    chat::lifecycle::RetireOutcome::AlreadyRetired => "already retired",
                };
                let value = serde_json::json!({
                    "year": year,
                    "outcome": outcome,
                    "archive": report.archive_path,
                    "messages": report.messages,
                    "bytes_before": report.bytes_before,
                    "bytes_after": report.bytes_after,
                });
                print(json, &value, |_| {
                    if report.outcome == chat::lifecycle::RetireOutcome::AlreadyRetired {
                        println!(
                            "{year} is already retired: {} messages in {}",
                            report.messages,
                            report.archive_path.display()
                        );
                    } else {
                        println!(
                            "{outcome} {year}: {} messages, {} → {} in {}",
                            report.messages,
                            human_bytes(report.bytes_before),
                            human_bytes(report.bytes_after),
                            report.archive_path.display()
                        );
                    }
                })
            }
            ChatAction::List => {
                let years = ops::chat_list(&config).await?;
                let value: Vec<_> = years
                    .iter()
                    .map(|year| {
                        serde_json::json!({
                            "year": year.year,
                            "state": format!("{:?}", year.state).to_lowercase(),
                            "path": year.path,
                            "bytes": year.bytes,
                            "messages": year.messages,
                        })
                    })
                    .collect();
                print(json, &value, |_| {
                    for year in &years {
                        println!(
                            "{}  {:<8} {:>10} {:>10} messages  {}",
                            year.year,
                            format!("{:?}", year.state).to_lowercase(),
                            human_bytes(year.bytes),
                            year.messages,
                            year.path.display()
                        );
                    }
                })
            }
        },
    }
}

/// Prints `value` as JSON or with `human`.
fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human(value);
    }
    Ok(ExitCode::SUCCESS)
}

/// `host:port` or `http://host:port/`.
fn parse_admin(text: &str) -> anyhow::Result<SocketAddr> {
    let bare = text.trim_start_matches("http://").trim_end_matches('/');
    bare.parse().with_context(|| format!("--admin {text}: expected an address such as 127.0.0.1:7071"))
}

fn print_status(status: &ops::Status) {
    println!("data directory {}", status.data_dir.display());
    println!("{:<20} {:<10} {:>10} {:>10} {:>6}  rows", "shard", "domain", "size", "wal", "schema");
    for shard in &status.shards {
        let rows: Vec<String> = shard.tables.iter().map(|(table, n)| format!("{table}={n}")).collect();
        let schema = shard.schema_version.map_or_else(|| "?".to_owned(), |v| v.to_string());
        println!(
            "{:<20} {:<10} {:>10} {:>10} {:>6}  {}",
            shard.file.file,
            shard.file.domain,
            human_bytes(shard.bytes),
            human_bytes(shard.wal_bytes),
            schema,
            shard.error.as_deref().map_or_else(|| rows.join(" "), |error| format!("ERROR {error}"))
        );
    }
    for year in &status.chat_years {
        println!(
            "chat year {} {:<8} {:>10} {} messages",
            year.year,
            year.state,
            human_bytes(year.bytes),
            year.messages
        );
    }
    if let Some(error) = &status.chat_years_error {
        println!("chat years NOT listed: {error}");
    }
    let redis = &status.redis;
    match (redis.reachable, &redis.error) {
        (true, _) => println!(
            "redis reachable; {} player states buffered; flush lag {} ms",
            redis.buffered_players.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            redis.flush_lag_ms.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        ),
        (false, error) => println!("redis NOT reachable: {}", error.as_deref().unwrap_or("unknown")),
    }
    for setting in &redis.risky_settings {
        println!("redis WARNING: {setting}");
    }
    for gateway in &status.gateways {
        if gateway.reachable {
            println!(
                "gateway {} connections {} players {}",
                gateway.admin,
                gateway.connections.unwrap_or(0),
                gateway.players.unwrap_or(0)
            );
        } else {
            println!("gateway {} NOT reachable", gateway.admin);
        }
    }
}

fn print_account(info: &ops::AccountInfo) {
    println!("account   {}", info.account_id);
    println!("username  {}", info.username);
    println!("created   {}", ops::utc_timestamp(info.created_at_ms));
    println!("disabled  {}", info.disabled);
    if let Some(n_sessions) = info.sessions_ended {
        println!("sessions ended: {n_sessions}");
    }
}

/// Bytes with a binary unit.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}
