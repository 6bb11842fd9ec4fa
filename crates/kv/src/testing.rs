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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long to wait for a started server to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between readiness probes.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How many ports `start` tries before giving up.
const START_ATTEMPTS: u32 = 5;
/// The lowest port [`unused_port`] picks: above the well-known and most registered services.
const LOWEST_PORT: u16 = 20_000;
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
        let server_id = NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kv-redis-{}-{server_id}", std::process::id()));
        if let Err(error) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {error}", dir.display());
        }
        let mut server = RedisServer { child: None, port: 0, dir };
        // Another process can still take a port between the check and redis-server's bind; then
        // the server exits at once, and another port is tried.
        for _ in 0..START_ATTEMPTS {
            server.port = unused_port();
            server.child = Some(server.spawn());
            if server.wait_ready() {
                return server;
            }
            server.stop();
        }
        panic!("redis-server did not answer PING on any of {START_ATTEMPTS} ports");
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on (the same across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Has the server write a snapshot of its data now (`SAVE`), which the next
    /// [`RedisServer::restart`] loads: a Redis that comes back with older data.
    ///
    /// # Panics
    /// If the server does not answer `+OK`.
    pub fn save_snapshot(&self) {
        self.expect_ok("SAVE");
    }

    /// Changes a setting of the running server (`CONFIG SET`), e.g. `save` to `60 1`; a restart
    /// starts from the harness's own settings again.
    ///
    /// # Panics
    /// If the server does not answer `+OK`.
    pub fn config_set(&self, parameter: &str, value: &str) {
        self.expect_ok(&format!("CONFIG SET {parameter} \"{value}\""));
    }

    /// Sends one inline command and expects `+OK`.
    fn expect_ok(&self, command: &str) {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream =
            TcpStream::connect_timeout(&address, Duration::from_secs(1)).expect("connect to redis-server");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("set a read timeout");
        stream.write_all(format!("{command}\r\n").as_bytes()).expect("send the command");
        let mut reply = [0_u8; 5];
        stream.read_exact(&mut reply).expect("read the reply");
        assert_eq!(&reply, b"+OK\r\n", "{command} failed");
    }

    /// Kills the server process (SIGKILL) and waits for it to exit. Its data is gone (no
    /// persistence), except a snapshot taken with [`RedisServer::save_snapshot`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it already exited, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Suspends the server process (SIGSTOP): its connections stay open but nothing on them is
    /// answered, as with a half-open connection to a host that vanished. [`RedisServer::thaw`]
    /// resumes it; a stop or restart works on a frozen server too.
    ///
    /// # Panics
    /// If the server is not running or the signal cannot be sent.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a server suspended by [`RedisServer::freeze`] (SIGCONT).
    ///
    /// # Panics
    /// If the server is not running or the signal cannot be sent.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {signal} redis-server failed");
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

/// A loopback port that was free a moment ago, for a server a test starts in another process.
///
/// Chosen below the kernel's ephemeral range: a port the kernel hands out (`bind` to port 0) can be
/// given next to any outgoing connection of a test running beside this one, which then holds it
/// when the server binds (CI saw a gateway fail that way). Ports below the range are only ever
/// taken by a bind, and each test picks its own pseudo-randomly, so collisions are rare; callers
/// still retry on one.
///
/// # Panics
/// If no free port is found after many tries.
pub fn unused_port() -> u16 {
    static NEXT_PICK: AtomicU64 = AtomicU64::new(0);
    let below = ephemeral_range_start().max(LOWEST_PORT + 1_000);
    let seed = u64::from(std::process::id())
        ^ SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.subsec_nanos().into());
    for _ in 0..1_000 {
        let pick = NEXT_PICK.fetch_add(1, Ordering::Relaxed);
        // SplitMix64's finaliser: spreads consecutive picks, and processes, over the range.
        let mut mixed = seed.wrapping_add(pick.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^= mixed >> 31;
        let port = LOWEST_PORT + (mixed % u64::from(below - LOWEST_PORT)) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {below}");
}

/// The first port of the kernel's ephemeral range (Linux's default if it cannot be read).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
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
