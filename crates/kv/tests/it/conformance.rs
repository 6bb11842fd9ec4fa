//! The conformance suite: each behaviour is one `check_*` function on a `&Kv`, run once on the
//! embedded store and once on Redis, so both backends keep the same semantics.

use std::time::Duration;

use kv::Kv;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use crate::harness::RedisServer;
use crate::support::{PATIENCE, assert_silent, recv_soon};

const LONG: Duration = Duration::from_secs(60);

/// Generates `on_embedded::NAME` and `on_redis::NAME` tests that run `CHECK`.
macro_rules! conformance {
    ($($name:ident => $check:ident),* $(,)?) => {
        mod on_embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    let fixture = crate::support::Fixture::embedded();
                    super::$check(&fixture.kv).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let fixture = crate::support::Fixture::redis().await;
                    super::$check(&fixture.kv).await;
                }
            )*
        }
    };
}

conformance! {
    session_put_get_delete_round_trip => check_session_round_trip,
    session_touch_slides_idle_expiry => check_session_touch_slides_expiry,
    delete_all_returns_exactly_the_live_sessions => check_delete_all_returns_live_sessions,
    counter_counts_hits_and_resets => check_counter_counts_and_resets,
    counter_window_starts_at_first_hit_and_expires => check_counter_window_expires,
    published_message_reaches_subscriber => check_publish_subscribe_round_trip,
    two_subscribers_both_receive => check_two_subscribers_both_receive,
    dropped_subscription_stops_counting => check_dropped_subscription_unsubscribes,
    ping_answers => check_ping,
}

async fn check_ping(kv: &Kv) {
    kv.ping().await.unwrap();
}

async fn check_session_round_trip(kv: &Kv) {
    kv.session_put("aa01", "acct-1", b"record-1", LONG, LONG).await.unwrap();
    assert_eq!(kv.session_get_touch("aa01", LONG).await.unwrap().as_deref(), Some(&b"record-1"[..]));
    assert_eq!(kv.session_get_touch("ffff", LONG).await.unwrap(), None);

    // Putting again replaces the record.
    kv.session_put("aa01", "acct-1", b"record-2", LONG, LONG).await.unwrap();
    assert_eq!(kv.session_get_touch("aa01", LONG).await.unwrap().as_deref(), Some(&b"record-2"[..]));

    assert!(kv.session_delete("aa01", "acct-1").await.unwrap());
    assert!(!kv.session_delete("aa01", "acct-1").await.unwrap());
    assert_eq!(kv.session_get_touch("aa01", LONG).await.unwrap(), None);
    // The account set no longer lists it.
    assert_eq!(kv.sessions_delete_all("acct-1").await.unwrap(), Vec::<String>::new());
}

async fn check_session_touch_slides_expiry(kv: &Kv) {
    let idle = Duration::from_millis(600);
    kv.session_put("bb01", "acct-2", b"r", idle, LONG).await.unwrap();

    sleep(Duration::from_millis(350)).await;
    assert!(kv.session_get_touch("bb01", idle).await.unwrap().is_some());
    // 700 ms after put but only 350 ms after the touch: still alive because the touch slid the expiry.
    sleep(Duration::from_millis(350)).await;
    assert!(kv.session_get_touch("bb01", idle).await.unwrap().is_some());
    // Untouched for longer than the idle TTL: gone.
    sleep(Duration::from_millis(800)).await;
    assert_eq!(kv.session_get_touch("bb01", idle).await.unwrap(), None);
    assert!(!kv.session_delete("bb01", "acct-2").await.unwrap());
}

async fn check_delete_all_returns_live_sessions(kv: &Kv) {
    kv.session_put("cc01", "acct-3", b"1", LONG, LONG).await.unwrap();
    kv.session_put("cc02", "acct-3", b"2", LONG, LONG).await.unwrap();
    kv.session_put("cc03", "acct-3", b"3", Duration::from_millis(50), LONG).await.unwrap();
    kv.session_put("cc04", "acct-3", b"4", LONG, LONG).await.unwrap();
    assert!(kv.session_delete("cc04", "acct-3").await.unwrap());
    kv.session_put("dd01", "acct-4", b"other", LONG, LONG).await.unwrap();
    sleep(Duration::from_millis(150)).await;

    let mut deleted = kv.sessions_delete_all("acct-3").await.unwrap();
    deleted.sort();
    assert_eq!(deleted, ["cc01", "cc02"]);
    for token_hash in ["cc01", "cc02", "cc03", "cc04"] {
        assert_eq!(kv.session_get_touch(token_hash, LONG).await.unwrap(), None);
    }
    assert_eq!(kv.sessions_delete_all("acct-3").await.unwrap(), Vec::<String>::new());
    // Another account's sessions are untouched.
    assert!(kv.session_get_touch("dd01", LONG).await.unwrap().is_some());
}

async fn check_counter_counts_and_resets(kv: &Kv) {
    assert_eq!(kv.counter_get("login:1.2.3.4").await.unwrap(), 0);
    for expected in 1..=3 {
        assert_eq!(kv.counter_hit("login:1.2.3.4", LONG).await.unwrap(), expected);
    }
    assert_eq!(kv.counter_get("login:1.2.3.4").await.unwrap(), 3);
    assert_eq!(kv.counter_get("login:5.6.7.8").await.unwrap(), 0);

    kv.counter_reset("login:1.2.3.4").await.unwrap();
    assert_eq!(kv.counter_get("login:1.2.3.4").await.unwrap(), 0);
    assert_eq!(kv.counter_hit("login:1.2.3.4", LONG).await.unwrap(), 1);
    // Resetting an absent counter is fine.
    kv.counter_reset("never-hit").await.unwrap();
}

async fn check_counter_window_expires(kv: &Kv) {
    let window = Duration::from_millis(500);
    assert_eq!(kv.counter_hit("rate:p1", window).await.unwrap(), 1);
    sleep(Duration::from_millis(200)).await;
    assert_eq!(kv.counter_hit("rate:p1", window).await.unwrap(), 2);
    // 650 ms after the first hit, 450 ms after the second: a fixed window from the first hit is over.
    sleep(Duration::from_millis(450)).await;
    assert_eq!(kv.counter_get("rate:p1").await.unwrap(), 0);
    assert_eq!(kv.counter_hit("rate:p1", window).await.unwrap(), 1);
}

async fn check_publish_subscribe_round_trip(kv: &Kv) {
    let shutdown = CancellationToken::new();
    let mut subscription = kv.subscribe("room-1", shutdown.clone()).await.unwrap();

    assert_eq!(kv.publish("room-1", b"hello").await.unwrap(), 1);
    assert_eq!(recv_soon(&mut subscription).await, b"hello");
    assert_eq!(kv.publish("room-1", &[0, 159, 146, 150]).await.unwrap(), 1);
    assert_eq!(recv_soon(&mut subscription).await, [0, 159, 146, 150]);

    assert_eq!(kv.publish("room-2", b"elsewhere").await.unwrap(), 0);
    assert_silent(&mut subscription).await;

    shutdown.cancel();
    let after_shutdown = tokio::time::timeout(PATIENCE, subscription.recv()).await.unwrap();
    assert_eq!(after_shutdown, None);
}

async fn check_two_subscribers_both_receive(kv: &Kv) {
    let shutdown = CancellationToken::new();
    let mut first = kv.subscribe("lobby", shutdown.clone()).await.unwrap();
    let mut second = kv.clone().subscribe("lobby", shutdown.clone()).await.unwrap();

    assert_eq!(kv.publish("lobby", b"to-all").await.unwrap(), 2);
    assert_eq!(recv_soon(&mut first).await, b"to-all");
    assert_eq!(recv_soon(&mut second).await, b"to-all");
    shutdown.cancel();
}

async fn check_dropped_subscription_unsubscribes(kv: &Kv) {
    let shutdown = CancellationToken::new();
    let subscription = kv.subscribe("gone", shutdown.clone()).await.unwrap();
    assert_eq!(kv.publish("gone", b"x").await.unwrap(), 1);
    drop(subscription);

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while kv.publish("gone", b"x").await.unwrap() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "dropping the subscription did not unsubscribe");
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn prefixes_isolate_keys_and_channels_on_one_redis() {
    let server = RedisServer::start();
    let url = server.url();
    let a = Kv::connect_redis(&url, "a:").await.unwrap();
    let b = Kv::connect_redis(&url, "b:").await.unwrap();

    a.session_put("ee01", "acct-5", b"a's", LONG, LONG).await.unwrap();
    assert_eq!(b.session_get_touch("ee01", LONG).await.unwrap(), None);
    assert_eq!(b.sessions_delete_all("acct-5").await.unwrap(), Vec::<String>::new());
    assert!(!b.session_delete("ee01", "acct-5").await.unwrap());
    assert!(a.session_get_touch("ee01", LONG).await.unwrap().is_some());

    a.counter_hit("shared-name", LONG).await.unwrap();
    assert_eq!(b.counter_get("shared-name").await.unwrap(), 0);
    b.counter_reset("shared-name").await.unwrap();
    assert_eq!(a.counter_get("shared-name").await.unwrap(), 1);

    let shutdown = CancellationToken::new();
    let mut a_subscription = a.subscribe("news", shutdown.clone()).await.unwrap();
    assert_eq!(b.publish("news", b"b's").await.unwrap(), 0);
    assert_silent(&mut a_subscription).await;
    shutdown.cancel();
}
