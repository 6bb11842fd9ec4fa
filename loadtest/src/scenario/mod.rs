//! The scenarios: what one simulated client does, one file each, and the registry that names them.
//!
//! Adding a scenario: a variant in [`ScenarioKind`], its name in [`ScenarioKind::ALL`] and
//! [`ScenarioKind::name`], whether it holds a connection ([`ScenarioKind::holds_connection`]),
//! and a `run(ctx)` in its own file dispatched from [`run_client`]. Everything a client needs
//! (connecting, authenticating, timing and recording a request) is on [`ClientContext`]; a
//! scenario that sends one kind of request over and over builds it and hands the rest to
//! [`request_loop`]. Scenarios whose clients work in pairs or groups (`chat`, `inventory`) find
//! each other through [`Shared::rendezvous`], by their [`ClientContext::rank`] among the clients
//! of their kind; options beyond a rate live in [`ScenarioOptions`].

pub mod chat;
pub mod idle;
pub mod inventory;
pub mod login_storm;
pub mod match_play;
pub mod mixed;
pub mod ping;
pub mod rendezvous;
pub mod request_loop;
pub mod state;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proto::{AccountId, Encoding, ErrorCode, Outcome, Reply, Request, SessionInfo};
use tokio::time::Instant;

use crate::conn::{ConnError, Connection};
use crate::stats::Recorder;

pub use mixed::Mix;

/// A request with no answer after this long counts as a `timeout` error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// After the end of the run, how long clients wait for the answers still on their way.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connect or login before a looping client tries again, so a refusing server
/// is not hammered in a tight loop.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The kinds of simulated client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScenarioKind {
    /// Connects, authenticates, and holds the connection open doing nothing.
    Idle,
    /// Repeatedly connects, logs in with the password, and disconnects.
    LoginStorm,
    /// Authenticates once, then sends pings (closed loop or paced).
    Ping,
    /// Authenticates once, then sends player-state updates of a walking player (closed loop or
    /// paced).
    State,
    /// Joins a room (or pairs up for direct messages) and sends messages, recording the send's
    /// acknowledgement and every other member's delivery.
    Chat,
    /// Gets items granted, then trades them with a partner (offer, accept) and consumes some.
    Inventory,
    /// Queues for a match, plays it (every player reports the same result), and queues again.
    Match,
}

impl ScenarioKind {
    /// Every scenario, in the order help texts list them.
    pub const ALL: [ScenarioKind; 7] = [
        ScenarioKind::Idle,
        ScenarioKind::LoginStorm,
        ScenarioKind::Ping,
        ScenarioKind::State,
        ScenarioKind::Chat,
        ScenarioKind::Inventory,
        ScenarioKind::Match,
    ];

    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Idle => "idle",
            ScenarioKind::LoginStorm => "login-storm",
            ScenarioKind::Ping => "ping",
            ScenarioKind::State => "state",
            ScenarioKind::Chat => "chat",
            ScenarioKind::Inventory => "inventory",
            ScenarioKind::Match => "match",
        }
    }

    /// The scenario named `name`.
    pub fn from_name(name: &str) -> Option<ScenarioKind> {
        Self::ALL.into_iter().find(|kind| kind.name() == name.trim())
    }

    /// Whether a client of this kind keeps one connection open for the whole run (it then counts
    /// towards the peak the idle memory figure is taken at).
    pub fn holds_connection(self) -> bool {
        match self {
            ScenarioKind::Idle
            | ScenarioKind::Ping
            | ScenarioKind::State
            | ScenarioKind::Chat
            | ScenarioKind::Inventory
            | ScenarioKind::Match => true,
            ScenarioKind::LoginStorm => false,
        }
    }
}

/// Per-client request rates by scenario: `10` for every scenario, or `ping=10` for one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    /// The rate of scenarios not named in `by_kind`; `None` is closed loop.
    pub default: Option<f64>,
    /// Rates of named scenarios.
    pub by_kind: BTreeMap<ScenarioKind, f64>,
}

impl Rates {
    /// Adds one `--rate` value: `R` or `scenario=R`; 0 means closed loop.
    ///
    /// # Errors
    /// An unknown scenario or a rate that is not a non-negative number.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let (kind, rate) = match spec.split_once('=') {
            Some((name, rate)) => (
                Some(ScenarioKind::from_name(name).ok_or_else(|| format!("unknown scenario {name:?}"))?),
                rate,
            ),
            None => (None, spec),
        };
        let rate: f64 = rate.trim().parse().map_err(|_| format!("bad rate {rate:?}"))?;
        if !rate.is_finite() || rate < 0.0 {
            return Err(format!("bad rate {rate}"));
        }
        match kind {
            Some(kind) => {
                self.by_kind.insert(kind, rate);
            }
            None => self.default = Some(rate),
        }
        Ok(())
    }

    /// The paced rate of `kind`, or `None` for closed loop.
    pub fn of(&self, kind: ScenarioKind) -> Option<f64> {
        self.by_kind.get(&kind).copied().or(self.default).filter(|rate| *rate > 0.0)
    }
}

/// Default members per chat room.
pub const DEFAULT_CHAT_ROOM_SIZE: usize = 10;
/// Default matchmaking mode of the `match` scenario.
pub const DEFAULT_MATCH_MODE: &str = "duel";

/// What scenarios need beyond a rate.
#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    /// `chat`: members per room (clients `rank / chat_room_size` share a room); default
    /// [`DEFAULT_CHAT_ROOM_SIZE`]; at least 2.
    pub chat_room_size: usize,
    /// `chat`: direct messages between pairs of clients (ranks 2k and 2k+1) instead of rooms.
    pub chat_dm: bool,
    /// `inventory`: the gateways' service token, for the admin port's grant endpoint.
    pub service_token: Option<String>,
    /// `match`: the mode clients queue for; default [`DEFAULT_MATCH_MODE`].
    pub match_mode: String,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        ScenarioOptions {
            chat_room_size: DEFAULT_CHAT_ROOM_SIZE,
            chat_dm: false,
            service_token: None,
            match_mode: DEFAULT_MATCH_MODE.into(),
        }
    }
}

/// What every client of a run shares.
#[derive(Debug)]
pub struct Shared {
    /// Where the clients record.
    pub recorder: Recorder,
    /// Connections open now.
    pub connected: AtomicU64,
    /// Clients holding an authenticated connection now.
    pub ready: AtomicU64,
    /// When clients stop sending.
    pub deadline: Instant,
    /// The password of every load-test account.
    pub password: String,
    /// What scenarios need beyond a rate.
    pub scenario: ScenarioOptions,
    /// Where clients that work together find each other.
    pub rendezvous: rendezvous::Rendezvous,
    /// Distinguishes this run's chat messages and idempotency keys from earlier runs' (the
    /// accounts and their data outlive a run): 16 hex digits.
    pub run_id: String,
    /// Chat deliveries expected and seen, across clients.
    pub chat: chat::Tally,
}

impl Shared {
    /// The shared state of a run that stops sending at `deadline`, with `n_chat` chat clients.
    pub fn new(deadline: Instant, password: String, scenario: ScenarioOptions, n_chat: u64) -> Shared {
        Shared {
            recorder: Recorder::default(),
            connected: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            deadline,
            password,
            scenario,
            rendezvous: rendezvous::Rendezvous::default(),
            run_id: format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0),
            chat: chat::Tally::new(n_chat),
        }
    }
}

/// One simulated client: who it is, where it connects, and what it shares.
#[derive(Debug, Clone)]
pub struct ClientContext {
    /// The client's number, from 0.
    pub index: usize,
    /// The client's number among the clients of its scenario, from 0 (pairs and rooms are made
    /// of neighbouring ranks).
    pub rank: usize,
    /// Clients of this client's scenario in the run.
    pub n_peers: usize,
    /// The admin URL of the gateway this client connects to, if given.
    pub admin: Option<String>,
    /// The gateway to connect to.
    pub target: String,
    /// The local address to connect from.
    pub source: Option<IpAddr>,
    /// The encoding to speak.
    pub encoding: Encoding,
    /// The account of this client.
    pub username: String,
    /// A session token to authenticate with instead of the password.
    pub token: Option<String>,
    /// Requests per second, or `None` for closed loop.
    pub rate: Option<f64>,
    /// The run's shared state.
    pub shared: Arc<Shared>,
}

/// Runs one client of `kind` until the deadline.
pub async fn run_client(kind: ScenarioKind, ctx: ClientContext) {
    match kind {
        ScenarioKind::Idle => idle::run(ctx).await,
        ScenarioKind::LoginStorm => login_storm::run(ctx).await,
        ScenarioKind::Ping => ping::run(ctx).await,
        ScenarioKind::State => state::run(ctx).await,
        ScenarioKind::Chat => chat::run(ctx).await,
        ScenarioKind::Inventory => inventory::run(ctx).await,
        ScenarioKind::Match => match_play::run(ctx).await,
    }
}

/// An open connection, counted in [`Shared::connected`] while it lives.
pub struct Open {
    /// The connection.
    pub conn: Connection,
    shared: Arc<Shared>,
}

impl Open {
    /// Closes the connection.
    pub async fn close(self) {
        let Open { conn, shared } = self;
        conn.close().await;
        shared.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a client in [`Shared::ready`] while it lives.
pub struct Ready(Arc<Shared>);

impl Ready {
    /// Counts the client as ready until dropped.
    pub fn new(shared: &Arc<Shared>) -> Ready {
        shared.ready.fetch_add(1, Ordering::Relaxed);
        Ready(shared.clone())
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        self.0.ready.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientContext {
    /// When a paced client sending every `interval` sends first: clients' phases are spread over
    /// one interval in golden-ratio steps, so they do not send in lockstep. At once when unpaced.
    pub fn first_send(&self, interval: Option<Duration>) -> Instant {
        let phase = (self.index as f64 * 0.618_033_988_7).fract();
        Instant::now() + interval.map_or(Duration::ZERO, |interval| interval.mul_f64(phase))
    }

    /// Records the requests of `kind` a paced client had scheduled from `next` to the end but
    /// will not send (its connection was lost) as failed, `not_sent`: left out, a client that
    /// drops out would lower the offered load, and flatter the others' latency, without a trace
    /// in the report. Nothing for a closed-loop client (no `interval`), which has no schedule.
    pub fn record_unsent(&self, kind: &'static str, next: Instant, interval: Option<Duration>) {
        let n_unsent = self.n_scheduled_from(next, interval);
        if n_unsent > 0 {
            self.shared.recorder.failed_many(self.index, kind, "not_sent", n_unsent);
        }
    }

    /// How many requests a client sending every `interval` has scheduled from `next` to the end;
    /// none when it is not paced.
    pub fn n_scheduled_from(&self, next: Instant, interval: Option<Duration>) -> u64 {
        let deadline = self.shared.deadline;
        match interval.filter(|interval| !interval.is_zero() && next < deadline) {
            Some(interval) => ((deadline - next).as_secs_f64() / interval.as_secs_f64()).ceil() as u64,
            None => 0,
        }
    }

    /// Opens a connection, recording the handshake's latency or failure.
    pub async fn connect(&self) -> Option<Open> {
        let started = Instant::now();
        let opened =
            tokio::time::timeout(REQUEST_TIMEOUT, Connection::open(&self.target, self.source, self.encoding))
                .await
                .unwrap_or(Err(ConnError::Timeout));
        match opened {
            Ok(conn) => {
                self.shared.recorder.connected(self.index, started.elapsed());
                self.shared.connected.fetch_add(1, Ordering::Relaxed);
                Some(Open { conn, shared: self.shared.clone() })
            }
            Err(error) => {
                tracing::debug!(%error, client = self.index, "connect failed");
                self.shared.recorder.failed(self.index, crate::stats::CONNECT, &error);
                None
            }
        }
    }

    /// Opens a connection and authenticates it: with the token if the client has one (`resume`),
    /// else with the password. `None` (recorded) when either fails.
    pub async fn connect_authenticated(&self) -> Option<Open> {
        self.connect_session().await.map(|(open, _)| open)
    }

    /// As [`ClientContext::connect_authenticated`], also returning the account's id.
    pub async fn connect_session(&self) -> Option<(Open, AccountId)> {
        let mut open = self.connect().await?;
        let session = match &self.token {
            Some(token) => match self.call(&mut open.conn, Request::Resume { token: token.clone() }).await {
                Some(Outcome::Ok(Reply::Session(session))) => Some(session),
                _ => None,
            },
            None => self.login_session(&mut open.conn).await,
        };
        match session {
            Some(session) => Some((open, session.account_id)),
            None => {
                open.close().await;
                None
            }
        }
    }

    /// Logs in with the password, registering the account first if the login says it does not
    /// exist; returns the session token.
    pub async fn login(&self, conn: &mut Connection) -> Option<String> {
        self.login_session(conn).await.map(|session| session.token)
    }

    /// As [`ClientContext::login`], returning the whole session.
    pub async fn login_session(&self, conn: &mut Connection) -> Option<SessionInfo> {
        let login =
            || Request::Login { username: self.username.clone(), password: self.shared.password.clone() };
        match self.call_expecting(conn, login(), Some(ErrorCode::Unauthorized)).await? {
            Outcome::Ok(Reply::Session(session)) => return Some(session),
            Outcome::Ok(_) => return None,
            Outcome::Error(_) => {}
        }
        let register =
            Request::Register { username: self.username.clone(), password: self.shared.password.clone() };
        // Conflict: another run registered it meanwhile; the login below settles it.
        self.call_expecting(conn, register, Some(ErrorCode::Conflict)).await?;
        match self.call(conn, login()).await? {
            Outcome::Ok(Reply::Session(session)) => Some(session),
            _ => None,
        }
    }

    /// Sends `request`, waits for its answer and records it; `None` when no answer came.
    pub async fn call(&self, conn: &mut Connection, request: Request) -> Option<Outcome> {
        self.call_expecting(conn, request, None).await
    }

    /// As [`ClientContext::call`], recording an error answer with code `expected` as part of the
    /// plan rather than as an error.
    pub async fn call_expecting(
        &self,
        conn: &mut Connection,
        request: Request,
        expected: Option<ErrorCode>,
    ) -> Option<Outcome> {
        let kind = request.kind();
        let started = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, conn.call(request))
            .await
            .unwrap_or(Err(ConnError::Timeout));
        match answer {
            Ok(outcome) => {
                let is_expected = matches!(&outcome, Outcome::Error(body) if Some(body.code) == expected);
                self.shared.recorder.answered(self.index, kind, started.elapsed(), &outcome, is_expected);
                Some(outcome)
            }
            Err(error) => {
                tracing::debug!(%error, client = self.index, request = kind, "request failed");
                self.shared.recorder.failed(self.index, kind, &error);
                None
            }
        }
    }
}
