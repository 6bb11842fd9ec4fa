//! The harness: a real `redis-server`, a real gateway started through `gateway::run` on port 0 with
//! a temporary data directory, and load-test options pointed at it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use gateway::config::ServiceToken;
use gateway::{GatewayConfig, GatewayError};
use kv::testing::RedisServer;
use loadtest::{Mix, Options, Report, ScenarioOptions};
use proto::{ClientMessage, Encoding, Outcome, ServerMessage, codec};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;

/// Every scenario runs this long.
pub const RUN_FOR: Duration = Duration::from_secs(2);
/// Clients per run.
pub const N_CLIENTS: usize = 10;
/// The gateway's service token, for the inventory scenario's grants.
pub const SERVICE_TOKEN: &str = "load-test-service-token";
/// Bounds waits: a hang is a failure.
const PATIENCE: Duration = Duration::from_secs(10);

/// A gateway with its own Redis and data directory, stopped on drop.
pub struct TestGateway {
    pub url: String,
    pub admin: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), GatewayError>>>,
    _redis: RedisServer,
    _data_dir: tempfile::TempDir,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        let redis = RedisServer::start();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let catalogue = data_dir.path().join("catalogue.toml");
        std::fs::write(&catalogue, loadtest::scenario::inventory::CATALOGUE).expect("write catalogue");
        let mut config = GatewayConfig {
            data_dir: data_dir.path().to_path_buf(),
            redis_url: Some(redis.url()),
            key_prefix: "lt-test:".into(),
            // Closed-loop clients send as fast as they are answered: far above a player's budget.
            requests_per_sec: 1_000_000,
            request_burst: 1_000_000,
            shutdown_timeout: Duration::from_secs(5),
            // Closed-loop chat clients too.
            chat_sends_per_window: 1_000_000,
            inventory_catalogue: Some(catalogue),
            service_token: Some(ServiceToken::new(SERVICE_TOKEN)),
            ..GatewayConfig::default()
        };
        // Matchmaker passes every 50 ms, so the match scenario's clients play several matches.
        config.matchmaking.interval = Duration::from_millis(50);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        let admin = format!("http://{}", admin_listener.local_addr().expect("admin addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway::run(
            listener,
            admin_listener,
            config,
            Arc::new(clock::SystemClock),
            shutdown.clone(),
        ));
        let gateway =
            TestGateway { url, admin, shutdown, task: Some(task), _redis: redis, _data_dir: data_dir };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while loadtest::metrics::scrape(&gateway.admin).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "gateway did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gateway
    }

    /// Options for a short run of `mix` against this gateway, with its admin port scraped.
    pub fn options(&self, mix: &str) -> Options {
        Options {
            admins: vec![self.admin.clone()],
            duration: RUN_FOR,
            ramp_up: Duration::from_millis(200),
            scenario: ScenarioOptions {
                service_token: Some(SERVICE_TOKEN.into()),
                ..ScenarioOptions::default()
            },
            ..Options::new(self.url.clone(), Mix::parse(mix).expect("mix"), N_CLIENTS)
        }
    }

    /// Waits until all [`N_CLIENTS`] are connected and the gateway has answered a `kind` request.
    pub async fn wait_until_every_client_sent(&self, kind: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let snapshot = loadtest::metrics::scrape(&self.admin).await.expect("scrape");
            let answered: u64 = snapshot.requests.get(kind).map_or(0, |outcomes| outcomes.values().sum());
            if snapshot.connections == N_CLIENTS as u64 && answered > 0 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the clients connect and send {kind}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the gateway holds no unflushed player state, and returns that scrape.
    pub async fn wait_until_player_state_is_flushed(&self) -> loadtest::metrics::Snapshot {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let snapshot = loadtest::metrics::scrape(&self.admin).await.expect("scrape");
            if snapshot.player_buffered == 0 {
                return snapshot;
            }
            assert!(tokio::time::Instant::now() < deadline, "the flusher empties the buffer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the gateway's shutdown, which closes every connection, without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("gateway stops")
            .expect("join")
            .expect("clean stop");
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A TCP proxy in front of a gateway's game port whose connections can all be cut at once, as a
/// network that goes away would, while the gateway (and its admin port) stays up.
pub struct CuttableProxy {
    pub url: String,
    cut: CancellationToken,
}

impl CuttableProxy {
    pub async fn start(gateway_url: &str) -> CuttableProxy {
        let upstream = gateway_url.trim_start_matches("ws://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("ws://{}/", listener.local_addr().expect("proxy addr"));
        let cut = CancellationToken::new();
        let accepting = cut.clone();
        tokio::spawn(async move {
            while let Some(Ok((mut client, _))) = accepting.run_until_cancelled(listener.accept()).await {
                let (upstream, cut) = (upstream.clone(), accepting.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    // Dropping both sockets at the cut closes them mid-conversation.
                    cut.run_until_cancelled(tokio::io::copy_bidirectional(&mut client, &mut server)).await;
                });
            }
        });
        CuttableProxy { url, cut }
    }

    /// Closes every proxied connection and accepts no more.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}

/// The report had no errors, and the clients' counts per request kind are the gateway's.
pub fn assert_clean_and_counted(report: &Report) {
    assert_eq!(report.total_errors, 0, "errors:\n{}", report.render());
    assert_eq!(report.client_requests(), report.server_requests, "counts differ:\n{}", report.render());
}

/// What a [`FakeGateway`] does with the `n`th request of a connection (from 0).
pub type Script = dyn Fn(u64, ClientMessage) -> Answer + Send + Sync;

/// A [`FakeGateway`]'s answer to one request.
pub struct Answer {
    /// Frames to send back (encoded bincode, sent as binary frames).
    pub frames: Vec<Vec<u8>>,
    /// Whether to close the connection once they are sent.
    pub then_close: bool,
}

/// A stand-in for the gateway on a real WebSocket, speaking bincode, that answers as its script
/// says: for frames the real gateway never sends, or a connection it closes at a chosen moment.
pub struct FakeGateway {
    pub url: String,
    task: JoinHandle<()>,
}

impl FakeGateway {
    pub async fn start(script: impl Fn(u64, ClientMessage) -> Answer + Send + Sync + 'static) -> FakeGateway {
        let script: Arc<Script> = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake gateway");
        let url = format!("ws://{}/", listener.local_addr().expect("fake gateway addr"));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_fake(stream, script.clone()));
            }
        });
        FakeGateway { url, task }
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_fake(stream: TcpStream, script: Arc<Script>) {
    #[allow(clippy::result_large_err, reason = "the error type is tungstenite's callback contract")]
    fn choose_bincode(_: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
        let bincode = HeaderValue::from_static(Encoding::Bincode.subprotocol());
        response.headers_mut().insert("Sec-WebSocket-Protocol", bincode);
        Ok(response)
    }
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, choose_bincode).await else { return };
    let mut n = 0;
    while let Some(Ok(frame)) = socket.next().await {
        let Message::Binary(bytes) = frame else { continue };
        let request: ClientMessage = codec::decode(Encoding::Bincode, &bytes).expect("a request");
        let answer = script(n, request);
        n += 1;
        for frame in answer.frames {
            if socket.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
        }
        if answer.then_close {
            break;
        }
    }
    let _ = socket.close(None).await;
}

/// The bincode frame of the response `outcome` to `request`.
pub fn response_frame(request: &ClientMessage, outcome: Outcome) -> Vec<u8> {
    let response = ServerMessage::Response(proto::Response { id: request.id, outcome });
    codec::encode(Encoding::Bincode, &response).expect("encode a response")
}
