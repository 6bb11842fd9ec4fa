//! Behaviour only the Redis backend has: failing while Redis is away and recovering when it is back,
//! for commands and for subscriptions.

use std::time::Duration;

use kv::{Kv, KvError};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::harness::RedisServer;
use crate::support::{PATIENCE, recv_soon};

#[tokio::test]
async fn commands_fail_while_redis_is_down_and_work_after_restart() {
    let mut server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    assert!(!kv.is_embedded());
    assert_eq!(kv.counter_hit("c", Duration::from_secs(60)).await.unwrap(), 1);

    server.stop();
    let started = Instant::now();
    assert!(matches!(kv.ping().await, Err(KvError::Unavailable(_))));
    assert!(matches!(kv.counter_hit("c", Duration::from_secs(60)).await, Err(KvError::Unavailable(_))));
    assert!(matches!(
        kv.session_get_touch("aa", Duration::from_secs(60)).await,
        Err(KvError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "failing while Redis is down took {:?}",
        started.elapsed()
    );

    server.restart();
    // The first command after the restart already reconnects.
    kv.ping().await.unwrap();
    // Nothing was persisted: the counter starts over.
    assert_eq!(kv.counter_hit("c", Duration::from_secs(60)).await.unwrap(), 1);
}

#[tokio::test]
async fn subscription_resubscribes_after_redis_restarts() {
    let mut server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    let shutdown = CancellationToken::new();
    let mut subscription = kv.subscribe("events", shutdown.clone()).await.unwrap();
    assert_eq!(kv.publish("events", b"before").await.unwrap(), 1);
    assert_eq!(recv_soon(&mut subscription).await, b"before");

    server.stop();
    // Give the subscription task time to notice and start backing off.
    sleep(Duration::from_millis(300)).await;
    server.restart();

    // Publish until Redis reports the resubscribed receiver; earlier publishes reach nobody.
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(1) = kv.publish("events", b"after").await {
            break;
        }
        assert!(Instant::now() < deadline, "the subscription did not come back");
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recv_soon(&mut subscription).await, b"after");

    shutdown.cancel();
    assert_eq!(subscription.recv().await, None);
}

#[tokio::test]
async fn connecting_to_nothing_fails_with_unavailable() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let started = Instant::now();
    match Kv::connect_redis(&url, "t:").await {
        Err(KvError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(matches!(Kv::connect_redis("not a url", "t:").await, Err(KvError::Unavailable(_))));
}

#[tokio::test]
async fn subscribing_to_a_stopped_redis_fails_with_unavailable() {
    let mut server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    server.stop();
    assert!(matches!(kv.subscribe("events", CancellationToken::new()).await, Err(KvError::Unavailable(_))));
}
