//! The test harness: a real `redis-server` per test, real gateways started through
//! `gateway::run` on port 0 (or as real `gateway` processes), and real clients over real
//! WebSockets.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clock::ManualClock;
use game_client::{Client, CloseInfo};
use gateway::{GatewayConfig, GatewayError};
use kv::testing::RedisServer;
use proto::{Encoding, SessionInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A password that satisfies the rules.
pub const PASSWORD: &str = "correct horse battery";

/// The service token of the world's gateways (the admin port's service endpoints).
pub const SERVICE_TOKEN: &str = "service-token-of-the-test-world";

/// Bounds every wait in the tests: a hang is a failure, not a stuck CI run.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A world for one test: a Redis, a data directory and a clock under the test's control.
pub struct World {
    pub redis: RedisServer,
    pub data_dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
}

impl World {
    pub fn new() -> World {
        World {
            redis: RedisServer::start(),
            data_dir: tempfile::tempdir().expect("temp dir"),
            clock: Arc::new(ManualClock::starting_now()),
        }
    }

    /// A configuration for a gateway of this world, on ephemeral ports.
    pub fn config(&self) -> GatewayConfig {
        GatewayConfig {
            data_dir: self.data_dir.path().to_path_buf(),
            redis_url: Some(self.redis.url()),
            key_prefix: "test:".into(),
            shutdown_timeout: Duration::from_secs(5),
            service_token: Some(gateway::config::ServiceToken::new(SERVICE_TOKEN)),
            // Every test's players register from 127.0.0.1.
            registrations_per_address: 100_000,
            ..GatewayConfig::default()
        }
    }

    /// Starts a gateway of this world with the default test configuration.
    pub async fn gateway(&self) -> TestGateway {
        self.gateway_with(self.config()).await
    }

    /// Starts a gateway of this world with `config`.
    pub async fn gateway_with(&self, config: GatewayConfig) -> TestGateway {
        TestGateway::start(config, self.clock.clone()).await
    }

    /// Starts a gateway whose flusher writes only at start-up and at shutdown (an hour between
    /// flushes), and returns once its start-up flush has had its moment: player states updated
    /// from now on stay buffered until it stops.
    pub async fn gateway_flushing_only_at_the_ends(&self) -> TestGateway {
        let config = GatewayConfig {
            flush_interval: Duration::from_secs(3600),
            flush_lease: Duration::from_secs(7200),
            ..self.config()
        };
        let gateway = self.gateway_with(config).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        gateway
    }
}

/// A gateway running in this process.
pub struct TestGateway {
    pub url: String,
    pub admin: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), GatewayError>>>,
}

impl TestGateway {
    pub async fn start(config: GatewayConfig, clock: Arc<ManualClock>) -> TestGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        let admin = admin_listener.local_addr().expect("admin addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway::run(listener, admin_listener, config, clock, shutdown.clone()));
        let gateway = TestGateway { url, admin, shutdown, task: Some(task) };
        gateway.wait_ready().await;
        gateway
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if let Ok((200, _)) = self.http("GET", "/healthz", "").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gateway did not become healthy");
    }

    /// A new client speaking `encoding`.
    pub async fn connect(&self, encoding: Encoding) -> Client {
        Client::connect(&self.url, encoding).await.expect("connect")
    }

    /// A new client logged in as `username` (registered first unless it exists). Registering
    /// first keeps failed logins, which count towards throttling, out of the tests' way.
    pub async fn player(&self, username: &str) -> (Client, SessionInfo) {
        let client = self.connect(Encoding::Bincode).await;
        if let Err(error) = client.register(username, PASSWORD).await {
            assert_eq!(error.code(), Some(proto::ErrorCode::Conflict), "register {username}: {error}");
        }
        let session = client.login(username, PASSWORD).await.expect("login");
        (client, session)
    }

    /// One HTTP/1.1 request to the admin port: (status, body).
    pub async fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(self.admin).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
        Ok((status, body))
    }

    /// The value of one line of `/metrics`, by its full name with labels.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.http("GET", "/metrics", "").await.ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Asks the gateway to stop and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), GatewayError> {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(PATIENCE, task).await.expect("gateway stops in time").expect("gateway task")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits for the client's connection to be closed by the server and returns how.
pub async fn closed(client: &Client) -> CloseInfo {
    tokio::time::timeout(PATIENCE, client.closed()).await.expect("server closes the connection")
}

/// A unique username for this test run.
pub fn username(stem: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{stem}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The server's error code of a failed request; panics if the request succeeded.
pub fn code<T: std::fmt::Debug>(result: Result<T, game_client::ClientError>) -> proto::ErrorCode {
    match result {
        Err(error) => error.code().unwrap_or_else(|| panic!("not a server error: {error}")),
        Ok(value) => panic!("expected an error, got {value:?}"),
    }
}

/// Joins the public room `name` (creating it) and returns it.
pub async fn join(client: &Client, name: &str) -> proto::chat::ChannelInfo {
    let request = proto::Request::Chat(proto::chat::ChatRequest::JoinRoom { name: name.into() });
    match client.request(request).await {
        Ok(proto::Reply::Chat(proto::chat::ChatReply::Channel(channel))) => channel,
        other => panic!("joining {name}: {other:?}"),
    }
}

/// Sends `account_id` a notice through the admin port at `addr`, with the service token; the
/// status code.
pub async fn notice(addr: std::net::SocketAddr, account_id: proto::AccountId, text: &str) -> u16 {
    admin(addr, "POST", &format!("/accounts/{account_id}/notice"), Some(SERVICE_TOKEN), text).await.0
}

/// One HTTP/1.1 request to an admin port with an optional bearer token: (status, body).
pub async fn admin(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    try_admin(addr, method, path, token, body).await.expect("the admin port answers")
}

/// [`admin`], or `None` if the port cannot be reached or the exchange breaks off.
async fn try_admin(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Some((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// How many times [`GatewayProcess::start`] tries new ports.
const START_ATTEMPTS: u32 = 5;

/// A `gateway` process, killed on drop if still running.
pub struct GatewayProcess {
    child: Child,
    pub url: String,
    pub admin: SocketAddr,
}

/// Whether `/healthz` on the admin port answers 200 within a second.
async fn answers_health_check(admin_addr: SocketAddr) -> bool {
    let probe = try_admin(admin_addr, "GET", "/healthz", None, "");
    matches!(tokio::time::timeout(Duration::from_secs(1), probe).await, Ok(Some((200, _))))
}

impl GatewayProcess {
    pub async fn start(world: &World) -> GatewayProcess {
        Self::start_with(world, &[]).await
    }

    pub async fn start_with(world: &World, extra_args: &[&str]) -> GatewayProcess {
        Self::start_with_env(world, extra_args, &[]).await
    }

    /// Started with these flags and environment variables besides the world's.
    pub async fn start_with_env(world: &World, extra_args: &[&str], env: &[(&str, &str)]) -> GatewayProcess {
        // A port found free can be taken by another test before the process binds it.
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(world, extra_args, env).await {
                Ok(process) => return process,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("the gateway process exited at start-up:\n{log}"),
            }
        }
        panic!("the gateway process found its ports taken {START_ATTEMPTS} times");
    }

    /// Starts the process on two unused ports; its start-up log if it exits before it serves.
    async fn try_start(
        world: &World,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<GatewayProcess, String> {
        let (port, admin_port) = (kv::testing::unused_port(), kv::testing::unused_port());
        // Kept beside the data, so a process that dies at start-up says why.
        let log_path = world.data_dir.path().join(format!("gateway-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("gateway log file");
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(extra_args)
            .env("GAME_SERVICE_TOKEN", SERVICE_TOKEN)
            // Every test's players register from 127.0.0.1.
            .env("GAME_REGISTRATIONS_PER_ADDRESS", "100000")
            .envs(env.iter().copied())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--data-dir", world.data_dir.path().to_str().unwrap()])
            .args(["--redis-url", &world.redis.url()])
            .args(["--key-prefix", "procs:"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the gateway binary starts");
        let mut process = GatewayProcess {
            child,
            url: format!("ws://127.0.0.1:{port}/"),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
        };
        // The ports are bound before start-up opens the domains, so a port taking connections
        // does not mean the process serves; the admin router answers only once it does.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !answers_health_check(process.admin).await {
            if let Some(status) = process.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("({status})\n{log}"));
            }
            assert!(tokio::time::Instant::now() < deadline, "the gateway process serves");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(process)
    }

    pub async fn player(&self, name: &str) -> (Client, proto::SessionInfo) {
        let client = Client::connect(&self.url, Encoding::Bincode).await.unwrap();
        let _ = client.register(name, PASSWORD).await;
        let session = client.login(name, PASSWORD).await.unwrap();
        (client, session)
    }

    /// Kills the process with SIGKILL: no shutdown, no final flush.
    pub fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "the gateway exits after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Valid requests of every domain; some name the other player, a room or an unknown id.
pub fn requests_of_every_kind(other: proto::AccountId, room: proto::chat::ChannelId) -> Vec<proto::Request> {
    use proto::Request;
    use proto::chat::{ChatRequest, MessageId};
    use proto::inventory::{InventoryRequest, ItemStack};
    use proto::matchmaking::MatchRequest;
    let unknown = uuid::Uuid::now_v7();
    let stack = ItemStack { item_id: "gem".into(), quantity: 3 };
    vec![
        Request::Whoami,
        Request::Ping,
        Request::Refresh,
        Request::UpdateState(proto::StateUpdate {
            position: Some(proto::Position { x: 1.5, y: -2.0, z: 3.25 }),
            rotation: Some(90.0),
            health: Some(77),
            attributes: Some(vec![1, 2, 3, 4]),
        }),
        Request::GetState,
        Request::GetPlayerState { account_id: other },
        Request::Chat(ChatRequest::JoinRoom { name: "fuzz-room".into() }),
        Request::Chat(ChatRequest::Send { channel_id: room, text: "hello there".into() }),
        Request::Chat(ChatRequest::SendDirect { to: other, text: "psst".into() }),
        Request::Chat(ChatRequest::History { channel_id: room, before: None, limit: 5 }),
        Request::Chat(ChatRequest::Delete { channel_id: room, message_id: MessageId(unknown) }),
        Request::Chat(ChatRequest::AddMember { channel_id: room, account_id: other }),
        Request::Chat(ChatRequest::RemoveMember { channel_id: room, account_id: other }),
        Request::Chat(ChatRequest::Channels),
        Request::Inventory(InventoryRequest::Holdings),
        Request::Inventory(InventoryRequest::Consume {
            item_id: "gem".into(),
            quantity: 1,
            idempotency_key: "fuzz-consume".into(),
        }),
        Request::Inventory(InventoryRequest::MakeOffer {
            to: other,
            gives: vec![stack.clone()],
            wants: vec![stack],
            idempotency_key: "fuzz-offer".into(),
        }),
        Request::Inventory(InventoryRequest::AcceptOffer {
            offer_id: unknown,
            idempotency_key: "fuzz-accept".into(),
        }),
        Request::Match(MatchRequest::Rating { mode: "duel".into(), account_id: Some(other) }),
        Request::Match(MatchRequest::Report { match_id: unknown, winner: Some(1) }),
        Request::Match(MatchRequest::History { before: None, limit: 10 }),
        Request::Match(MatchRequest::Leaderboard { mode: "duel".into(), limit: 10 }),
    ]
}
