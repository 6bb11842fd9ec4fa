//! A throwaway `redis-server` for integration tests: started on a free loopback port with no
//! persistence, stoppable and restartable on the same port (to test reconnecting), killed on drop.
//!
//! Synchronous on purpose (`std::process`, `std::net`), so it works from any test, async or not.
//! This file depends on nothing else in the crate: kv's own integration tests include it by path.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long to wait for a started server to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between readiness probes.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How many times `restart` tries to spawn when the port is briefly busy.
const RESTART_ATTEMPTS: u32 = 10;
/// Pause between those attempts.
const RESTART_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Makes temp dir names unique within one process.
static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(0);

/// A `redis-server` child process on `127.0.0.1:{port}` with its own temporary directory.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` from `PATH` on a free 127.0.0.1 port with `--save "" --appendonly no` in
    /// a fresh temporary directory, and waits (up to about 5 s) until it answers `PING`.
    ///
    /// # Panics
    /// If `redis-server` is not installed, or does not come up.
    pub fn start() -> RedisServer {
        let port = free_port();
        let server_id = NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kv-redis-{}-{server_id}-{port}", std::process::id()));
        if let Err(error) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {error}", dir.display());
        }
        let mut server = RedisServer { child: None, port, dir };
        server.child = Some(server.spawn());
        if !server.wait_ready() {
            panic!("redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}");
        }
        server
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on (the same across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server process (SIGKILL) and waits for it to exit. Its data is gone (no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it already exited, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (retrying while the port is briefly busy) and waits
    /// until it answers `PING`. Stops it first if it is running.
    ///
    /// # Panics
    /// If it does not come up after several attempts.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..RESTART_ATTEMPTS {
            self.child = Some(self.spawn());
            if self.wait_ready() {
                return;
            }
            self.stop();
            std::thread::sleep(RESTART_RETRY_DELAY);
        }
        panic!("redis-server did not restart on port {} after {RESTART_ATTEMPTS} attempts", self.port);
    }

    fn spawn(&self) -> Child {
        let spawned = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (not found on PATH); these tests need it \
                 (e.g. `apt-get install redis-server`)"
            ),
            Err(error) => panic!("cannot start redis-server: {error}"),
        }
    }

    /// Polls until the server answers `PING` (true), or it exited or time ran out (false).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            // A server that exited (say, the port was taken) will never answer.
            if let Some(child) = self.child.as_mut()
                && matches!(child.try_wait(), Ok(Some(_)))
            {
                return false;
            }
            if answers_ping(self.port) {
                return true;
            }
            std::thread::sleep(READY_POLL_INTERVAL);
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago: bind port 0, read the port, release it.
fn free_port() -> u16 {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|listener| listener.local_addr()) {
        Ok(address) => address.port(),
        Err(error) => panic!("cannot find a free port: {error}"),
    }
}

/// Sends `PING` and expects `+PONG`.
fn answers_ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    if stream.set_read_timeout(Some(Duration::from_millis(500))).is_err()
        || stream.write_all(b"PING\r\n").is_err()
    {
        return false;
    }
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
