//! Fixtures: a `Kv` on each backend together with what must outlive it, and small async helpers.

use std::time::Duration;

use kv::{Kv, Subscription};

use crate::harness::RedisServer;

/// How long a test waits for something that should happen quickly.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A `Kv` plus the temporary directory or Redis server it runs on.
pub struct Fixture {
    pub kv: Kv,
    _dir: Option<tempfile::TempDir>,
    _server: Option<RedisServer>,
}

impl Fixture {
    /// An embedded store in a fresh temporary directory.
    pub fn embedded() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let kv = Kv::embedded(dir.path(), "t:").unwrap();
        Fixture { kv, _dir: Some(dir), _server: None }
    }

    /// A fresh `redis-server` and a `Kv` connected to it.
    pub async fn redis() -> Fixture {
        let server = RedisServer::start();
        let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
        Fixture { kv, _dir: None, _server: Some(server) }
    }
}

/// The next message, failing the test if none arrives within [`PATIENCE`].
pub async fn recv_soon(subscription: &mut Subscription) -> Vec<u8> {
    tokio::time::timeout(PATIENCE, subscription.recv())
        .await
        .expect("no message within the patience window")
        .expect("subscription ended unexpectedly")
}

/// Asserts no message arrives within a short while.
pub async fn assert_silent(subscription: &mut Subscription) {
    let received = tokio::time::timeout(Duration::from_millis(200), subscription.recv()).await;
    assert!(received.is_err(), "unexpected message: {received:?}");
}
