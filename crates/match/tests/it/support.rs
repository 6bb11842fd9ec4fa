//! A matchmaking domain on a throwaway Redis and a temporary data directory.

use std::sync::Arc;

use clock::ManualClock;
use kv::Kv;
use kv::testing::RedisServer;
use matchmaking::{Matchmaking, MatchmakingConfig};
use shard::ShardConfig;
use uuid::Uuid;

/// The start of every test's clock.
pub const T0: u64 = 1_700_000_000_000;

pub struct World {
    pub redis: RedisServer,
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
}

impl World {
    pub fn new() -> World {
        World {
            redis: RedisServer::start(),
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(ManualClock::at(T0)),
        }
    }

    /// A domain on this world's Redis and `match.db` (several share them, like processes).
    pub async fn matchmaking(&self, config: MatchmakingConfig) -> Matchmaking {
        let kv = Kv::connect_redis(&self.redis.url(), "t:").await.unwrap();
        Matchmaking::open(
            self.dir.path().join("match.db"),
            kv,
            self.clock.clone(),
            config,
            &ShardConfig::default(),
        )
        .await
        .unwrap()
    }
}

/// A new player id.
pub fn player() -> Uuid {
    Uuid::now_v7()
}
