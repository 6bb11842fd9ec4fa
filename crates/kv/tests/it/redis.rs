//! Behaviour only the Redis backend has: failing while Redis is away and recovering when it is back,
//! for commands and for subscriptions, and the batcher that gathers concurrent buffered updates into
//! pipelines.

use std::collections::HashMap;
use std::time::Duration;

use kv::{BufferUpdate, Kv, KvError, RiskySetting};
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
    let subscribed = subscription.subscribed();
    assert!(subscribed.get());
    assert_eq!(kv.publish("events", b"before").await.unwrap(), 1);
    assert_eq!(recv_soon(&mut subscription).await, b"before");

    server.stop();
    // The subscription task notices and starts backing off; a readiness check can tell.
    let deadline = Instant::now() + PATIENCE;
    while subscribed.get() {
        assert!(Instant::now() < deadline, "the lost subscription still says it receives");
        sleep(Duration::from_millis(20)).await;
    }
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
    assert!(subscribed.get(), "receiving again");

    shutdown.cancel();
    assert_eq!(subscription.recv().await, None);
    let deadline = Instant::now() + PATIENCE;
    while subscribed.get() {
        assert!(Instant::now() < deadline, "an ended subscription still says it receives");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_subscription_whose_redis_stops_answering_notices_and_resubscribes() {
    let server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    let shutdown = CancellationToken::new();
    let mut subscription = kv.subscribe("events", shutdown.clone()).await.unwrap();
    let subscribed = subscription.subscribed();

    // A frozen server keeps the connection open and answers nothing: no reset, no end of stream,
    // just silence, as from a host that vanished. Only a heartbeat tells that from a quiet channel.
    server.freeze();
    let frozen = Instant::now();
    let deadline = frozen + Duration::from_secs(15);
    while subscribed.get() {
        assert!(Instant::now() < deadline, "a subscription to a silent Redis still says it receives");
        sleep(Duration::from_millis(50)).await;
    }
    let noticed_after = frozen.elapsed();
    server.thaw();

    // Until the subscription is made again, publishes reach nobody (or, for a moment, the old
    // connection, which Redis has yet to see closed).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let _ = kv.publish("events", b"after").await;
        if let Ok(received) = tokio::time::timeout(Duration::from_millis(100), subscription.recv()).await {
            assert_eq!(received.as_deref(), Some(&b"after"[..]));
            break;
        }
        assert!(Instant::now() < deadline, "the subscription did not come back after {noticed_after:?}");
    }
    assert!(subscribed.get(), "receiving again");
    shutdown.cancel();
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

const LONG: Duration = Duration::from_secs(60);
/// A cap on an account's sessions that no test reaches unless it means to.
const MANY: usize = 1_000;

/// A raw connection for what the tests do behind kv's back (flushing the script cache, counting
/// clients).
async fn raw_connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Runs `n_updates` concurrent updates spread evenly over `n_records` records seeded at version 0
/// in a fresh namespace, and asserts every one was applied with its own version out of 1..=n_updates,
/// none lost or repeated, and that each record holds the newest of its versions.
async fn assert_concurrent_updates_all_apply(kv: &Kv, ns: &str, n_records: usize, n_updates: usize) {
    for record in 0..n_records {
        let fields = vec![("v".to_owned(), "0".to_owned())];
        assert!(kv.buffer_seed(ns, &format!("p{record}"), fields, LONG).await.unwrap());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for update in 0..n_updates {
        let kv = kv.clone();
        let ns = ns.to_owned();
        tasks.spawn(async move {
            let id = format!("p{}", update % n_records);
            let fields = vec![("x".to_owned(), update.to_string())];
            let outcome = kv.buffer_update(&ns, &id, fields, 1_000).await.unwrap();
            (id, outcome)
        });
    }
    let mut versions: HashMap<String, Vec<u64>> = HashMap::new();
    for (id, outcome) in tasks.join_all().await {
        match outcome {
            BufferUpdate::Applied { version, n_dirty } => {
                assert!((1..=n_records as u64).contains(&n_dirty), "n_dirty {n_dirty}");
                versions.entry(id).or_default().push(version);
            }
            BufferUpdate::NotLoaded => panic!("{id} was seeded but not loaded"),
        }
    }
    assert_eq!(versions.len(), n_records);
    let mut all: Vec<u64> = versions.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=n_updates as u64).collect::<Vec<_>>());
    for (id, versions) in versions {
        assert_eq!(versions.len(), n_updates / n_records, "updates of {id}");
        let newest = versions.iter().max().unwrap();
        let fields = kv.buffer_get(ns, &id).await.unwrap().unwrap();
        assert!(fields.contains(&("v".to_owned(), newest.to_string())), "{id}: {fields:?}");
    }
    assert_eq!(kv.buffer_stats(ns).await.unwrap().n_dirty, n_records as u64);
}

async fn config_set(raw: &mut redis::aio::MultiplexedConnection, parameter: &str, value: &str) {
    let () = redis::cmd("CONFIG").arg("SET").arg(parameter).arg(value).query_async(raw).await.unwrap();
}

/// Only `noeviction` is safe: an `allkeys-*` policy may drop buffered state (no TTL), a
/// `volatile-*` one an account's set of sessions (it has a TTL), after which logging out
/// everywhere misses sessions that stay valid.
#[tokio::test]
async fn an_eviction_policy_that_may_drop_player_state_or_a_session_index_is_reported() {
    let mut server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    let mut raw = raw_connection(&server).await;
    assert_eq!(kv.risky_settings().await.unwrap(), [], "Redis's default, noeviction");
    let without_ttl = |policy: &str| RiskySetting::EvictsKeysWithoutTtl { policy: policy.to_owned() };
    let with_ttl = |policy: &str| RiskySetting::EvictsKeysWithTtl { policy: policy.to_owned() };
    for (policy, expected) in [
        ("allkeys-lru", without_ttl("allkeys-lru")),
        ("volatile-lru", with_ttl("volatile-lru")),
        ("allkeys-random", without_ttl("allkeys-random")),
        ("volatile-ttl", with_ttl("volatile-ttl")),
    ] {
        config_set(&mut raw, "maxmemory-policy", policy).await;
        assert_eq!(kv.risky_settings().await.unwrap(), [expected], "{policy}");
    }
    config_set(&mut raw, "maxmemory-policy", "noeviction").await;
    assert_eq!(kv.risky_settings().await.unwrap(), []);
    server.stop();
    assert!(matches!(kv.risky_settings().await, Err(KvError::Unavailable(_))));
}

/// Snapshots alone bring back old records after a restart; an append-only file, or no
/// persistence at all, does not.
#[tokio::test]
async fn snapshots_without_an_append_only_file_are_reported() {
    let server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    let mut raw = raw_connection(&server).await;
    assert_eq!(kv.risky_settings().await.unwrap(), [], "the harness runs without persistence");
    config_set(&mut raw, "save", "3600 1 60 10000").await;
    assert_eq!(
        kv.risky_settings().await.unwrap(),
        [RiskySetting::SnapshotsWithoutAppendOnlyFile { save: "3600 1 60 10000".to_owned() }]
    );
    config_set(&mut raw, "appendonly", "yes").await;
    assert_eq!(kv.risky_settings().await.unwrap(), [], "with an append-only file");
    config_set(&mut raw, "appendonly", "no").await;
    config_set(&mut raw, "maxmemory-policy", "allkeys-lfu").await;
    assert_eq!(kv.risky_settings().await.unwrap().len(), 2, "both at once");
}

/// Managed Redis services often refuse CONFIG; that is no reason to fail, only to say nothing.
#[tokio::test]
async fn a_redis_that_refuses_config_reports_no_risky_setting() {
    let server = RedisServer::start();
    let mut raw = raw_connection(&server).await;
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "no-config", "on", ">secret", "~*", "&*", "+@all", "-config"][..])
        .query_async(&mut raw)
        .await
        .unwrap();
    config_set(&mut raw, "maxmemory-policy", "allkeys-lru").await;
    config_set(&mut raw, "save", "60 1").await;
    let url = format!("redis://no-config:secret@127.0.0.1:{}", server.port());
    let kv = Kv::connect_redis(&url, "t:").await.unwrap();
    assert_eq!(kv.risky_settings().await.unwrap(), []);
}

/// The walk over a namespace's keys matches the key prefix literally, even one with glob
/// characters, and pages through more records than one page holds.
#[tokio::test]
async fn dropping_a_buffer_stays_within_its_own_key_prefix() {
    let server = RedisServer::start();
    let starred = Kv::connect_redis(&server.url(), "a*:").await.unwrap();
    let plain = Kv::connect_redis(&server.url(), "ab:").await.unwrap();
    for n in 0..1_000 {
        let id = format!("p{n}");
        assert!(
            starred.buffer_seed("player", &id, vec![("v".to_owned(), "0".to_owned())], LONG).await.unwrap()
        );
        assert!(
            plain.buffer_seed("player", &id, vec![("v".to_owned(), "0".to_owned())], LONG).await.unwrap()
        );
    }
    assert_eq!(starred.buffer_drop_all("player").await.unwrap(), 1_000);
    assert_eq!(starred.buffer_get("player", "p999").await.unwrap(), None);
    assert!(plain.buffer_get("player", "p999").await.unwrap().is_some(), "a*: is not a pattern");
    assert_eq!(plain.buffer_drop_all("player").await.unwrap(), 1_000);
}

/// Records seeded again while the walk that drops a buffer is under way are flushed like any
/// other: none is left carrying the dirty marker outside the dirty set, where no later update
/// would put it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_seeded_again_while_a_buffer_is_dropped_stay_dirty() {
    let server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    for n in 0..5_000 {
        let fields = vec![("v".to_owned(), "0".to_owned())];
        assert!(kv.buffer_seed("player", &format!("p{n}"), fields, LONG).await.unwrap());
    }
    let hot: Vec<String> = (0..40).map(|n| format!("p{n}")).collect();
    let update = |id: &str, round: u64| {
        let kv = kv.clone();
        let id = id.to_owned();
        async move {
            let fields = vec![("x".to_owned(), round.to_string())];
            if kv.buffer_update("player", &id, fields.clone(), 1_000).await.unwrap()
                == BufferUpdate::NotLoaded
            {
                let seed = vec![("v".to_owned(), "0".to_owned())];
                kv.buffer_seed("player", &id, seed, LONG).await.unwrap();
                kv.buffer_update("player", &id, fields, 1_000).await.unwrap();
            }
        }
    };
    let dropped = std::sync::atomic::AtomicBool::new(false);
    let updating = async {
        let mut round = 0;
        while !dropped.load(std::sync::atomic::Ordering::Relaxed) {
            round += 1;
            for id in &hot {
                update(id, round).await;
            }
        }
    };
    let dropping = async {
        kv.buffer_drop_all("player").await.unwrap();
        dropped.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    tokio::join!(updating, dropping);

    for id in &hot {
        update(id, 0).await;
    }
    let claim = kv.buffer_claim("player", 10_000, u64::MAX).await.unwrap();
    let mut claimed: Vec<&str> = claim.records.iter().map(|record| record.id.as_str()).collect();
    claimed.sort_unstable();
    let mut expected: Vec<&str> = hot.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(claimed, expected, "every record updated after the drop is claimed, and nothing else");
}

/// Updates of absent records interleaved with updates of live ones, sent at once so they share
/// script runs: the live ones get every version out of 1..=n without a gap, the absent ones are
/// refused and stay absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_records_in_a_batch_neither_take_versions_nor_appear() {
    let server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    for record in 0..10 {
        let fields = vec![("v".to_owned(), "0".to_owned())];
        assert!(kv.buffer_seed("player", &format!("live{record}"), fields, LONG).await.unwrap());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for update in 0..1_000 {
        let kv = kv.clone();
        tasks.spawn(async move {
            let id = if update % 3 == 0 {
                format!("absent{}", update % 7)
            } else {
                format!("live{}", update % 10)
            };
            let fields = vec![("x".to_owned(), update.to_string())];
            (kv.buffer_update("player", &id, fields, 1_000).await.unwrap(), id)
        });
    }
    let mut versions = Vec::new();
    for (outcome, id) in tasks.join_all().await {
        match outcome {
            BufferUpdate::Applied { version, .. } => {
                assert!(id.starts_with("live"), "{id} was applied");
                versions.push(version);
            }
            BufferUpdate::NotLoaded => assert!(id.starts_with("absent"), "{id} was not loaded"),
        }
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=666).collect::<Vec<u64>>());
    for absent in 0..7 {
        assert_eq!(kv.buffer_get("player", &format!("absent{absent}")).await.unwrap(), None);
    }
    assert_eq!(kv.buffer_stats("player").await.unwrap().n_dirty, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_buffered_updates_are_all_applied_with_distinct_versions() {
    let server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    assert_concurrent_updates_all_apply(&kv, "player", 20, 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_updates_reload_the_script_after_the_script_cache_is_flushed() {
    let server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    assert_concurrent_updates_all_apply(&kv, "before", 5, 100).await;

    let mut raw = raw_connection(&server).await;
    redis::cmd("SCRIPT").arg("FLUSH").query_async::<()>(&mut raw).await.unwrap();
    assert_concurrent_updates_all_apply(&kv, "after", 10, 500).await;
}

#[tokio::test]
async fn buffered_update_fails_while_redis_is_down_and_works_after_restart() {
    let mut server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    let seed = || vec![("v".to_owned(), "0".to_owned())];
    assert!(kv.buffer_seed("player", "p1", seed(), LONG).await.unwrap());
    assert_eq!(
        kv.buffer_update("player", "p1", Vec::new(), 1_000).await.unwrap(),
        BufferUpdate::Applied { version: 1, n_dirty: 1 }
    );

    server.stop();
    let started = Instant::now();
    for _ in 0..3 {
        let result = kv.buffer_update("player", "p1", Vec::new(), 2_000).await;
        assert!(matches!(result, Err(KvError::Unavailable(_))), "got {result:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "failing took {:?}", started.elapsed());

    server.restart();
    // Updates are refused at once until a probe has seen Redis answer again. The restarted Redis
    // lost the data and its script cache: the update reloads the script, then finds no record.
    let deadline = Instant::now() + PATIENCE;
    let outcome = loop {
        match kv.buffer_update("player", "p1", Vec::new(), 3_000).await {
            Err(KvError::Unavailable(_)) if Instant::now() < deadline => {
                sleep(Duration::from_millis(20)).await
            }
            outcome => break outcome,
        }
    };
    assert_eq!(outcome.unwrap(), BufferUpdate::NotLoaded);
    assert!(kv.buffer_seed("player", "p1", seed(), LONG).await.unwrap());
    let outcome = kv.buffer_update("player", "p1", Vec::new(), 4_000).await.unwrap();
    assert!(matches!(outcome, BufferUpdate::Applied { version: 1.., n_dirty: 1 }), "got {outcome:?}");
}

/// How many client connections Redis has open.
async fn n_clients(raw: &mut redis::aio::MultiplexedConnection) -> usize {
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(raw).await.unwrap();
    list.lines().count()
}

#[tokio::test]
async fn dropping_every_kv_clone_closes_its_connection() {
    let server = RedisServer::start();
    let mut raw = raw_connection(&server).await;
    let n_before = n_clients(&mut raw).await;

    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    let clone = kv.clone();
    assert!(kv.buffer_seed("player", "p1", vec![("v".to_owned(), "0".to_owned())], LONG).await.unwrap());
    clone.buffer_update("player", "p1", Vec::new(), 1_000).await.unwrap();
    assert!(n_clients(&mut raw).await > n_before);

    drop(kv);
    clone.buffer_update("player", "p1", Vec::new(), 2_000).await.unwrap();
    drop(clone);
    // The batcher task, which holds a handle on the command connection, ends with the last clone.
    let deadline = Instant::now() + PATIENCE;
    while n_clients(&mut raw).await > n_before {
        assert!(Instant::now() < deadline, "the connection outlived every Kv clone");
        sleep(Duration::from_millis(20)).await;
    }
}

/// The slowest answer to a refused update while `n_writers` each update their own record every
/// `interval` and Redis is killed for `outage`, and how many updates were refused; waits until
/// every writer's updates apply again after the restart.
async fn refusals_during_outage(n_writers: usize, interval: Duration, outage: Duration) -> (Duration, usize) {
    let mut server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    for writer in 0..n_writers {
        let fields = vec![("v".to_owned(), "0".to_owned())];
        assert!(kv.buffer_seed("player", &format!("p{writer}"), fields, LONG).await.unwrap());
    }
    let restarted = CancellationToken::new();
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..n_writers {
        let (kv, restarted) = (kv.clone(), restarted.clone());
        writers.spawn(async move {
            let id = format!("p{writer}");
            let (mut slowest, mut refused) = (Duration::ZERO, 0);
            let mut next = Instant::now() + interval.mul_f64(writer as f64 / n_writers as f64);
            loop {
                tokio::time::sleep_until(next).await;
                next += interval;
                let sent = Instant::now();
                match kv.buffer_update("player", &id, Vec::new(), 1_000).await {
                    Ok(_) if restarted.is_cancelled() => return (slowest, refused),
                    Ok(_) => {}
                    Err(KvError::Unavailable(_)) => {
                        slowest = slowest.max(sent.elapsed());
                        refused += 1;
                    }
                    Err(other) => panic!("{id}: {other:?}"),
                }
            }
        });
    }
    sleep(Duration::from_millis(300)).await;
    server.stop();
    sleep(outage).await;
    server.restart();
    restarted.cancel();
    let outcomes = tokio::time::timeout(PATIENCE, writers.join_all()).await.expect("updates apply again");
    let slowest = outcomes.iter().map(|(slowest, _)| *slowest).max().unwrap_or_default();
    (slowest, outcomes.iter().map(|(_, refused)| refused).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_updates_are_refused_at_once_while_redis_is_down() {
    // 1,000 players at 20 updates/s each, Redis gone for 3 s.
    let (slowest, refused) =
        refusals_during_outage(1_000, Duration::from_millis(50), Duration::from_secs(3)).await;
    assert!(refused > 1_000, "only {refused} updates were refused");
    // Not held for the operation timeout (5 s) while the store is known to be down.
    assert!(slowest < Duration::from_millis(500), "a refusal took {slowest:?}");
}

/// Releases before the claim became a sorted set kept it as a hash (id → dirty-since) under
/// `{ns}:claim`; a batch such a flusher claimed and never released goes back into the dirty set
/// like any other claim, so upgrading after a crash loses nothing.
#[tokio::test]
async fn a_claim_left_as_a_hash_by_an_earlier_release_is_recovered() {
    let server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    for id in ["old", "both", "new"] {
        assert!(kv.buffer_seed("player", id, vec![("v".to_owned(), "0".to_owned())], LONG).await.unwrap());
    }
    kv.buffer_update("player", "both", Vec::new(), 500).await.unwrap();
    kv.buffer_update("player", "new", Vec::new(), 700).await.unwrap();
    assert_eq!(
        kv.buffer_claim("player", 1, u64::MAX).await.unwrap().records.len(),
        1,
        "\"both\" claimed anew"
    );
    let mut raw = raw_connection(&server).await;
    let () = redis::cmd("HSET")
        .arg("t:player:claim")
        .arg(&["old", "100", "both", "300"])
        .query_async(&mut raw)
        .await
        .unwrap();

    assert_eq!(kv.buffer_recover("player").await.unwrap(), 3, "one from the claim, two from the old hash");
    let claimed: Vec<(String, u64)> = kv
        .buffer_claim("player", 10, u64::MAX)
        .await
        .unwrap()
        .records
        .into_iter()
        .map(|record| (record.id, record.dirty_since_ms))
        .collect();
    let expected = [("old", 100), ("both", 300), ("new", 700)].map(|(id, since)| (id.to_owned(), since));
    assert_eq!(claimed, expected, "oldest first, each with its oldest dirty-since");
    let exists: u64 = redis::cmd("EXISTS").arg("t:player:claim").query_async(&mut raw).await.unwrap();
    assert_eq!(exists, 0, "the old hash is gone");
}

/// A Redis the earlier release marked `{ns}:flushed` (no baseline then) holds a buffer begun at
/// the lowest baseline, also after this release begins it: such a store, come back from a
/// snapshot, is still healed as older.
#[tokio::test]
async fn the_flushed_mark_of_an_earlier_release_reads_as_the_lowest_baseline() {
    let server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    let mut raw = raw_connection(&server).await;
    let () = redis::cmd("SET").arg("t:player:flushed").arg(1).query_async(&mut raw).await.unwrap();
    assert_eq!(kv.buffer_version("player").await.unwrap().baseline, Some(0));
    kv.buffer_begin("player", 25).await.unwrap();
    assert_eq!(kv.buffer_version("player").await.unwrap().baseline, Some(0), "begun as it was, not now");
    kv.buffer_begin("guild", 25).await.unwrap();
    assert_eq!(kv.buffer_version("guild").await.unwrap().baseline, Some(25));
}

/// Sessions that idled out in Redis leave their account's set at the account's next login: a
/// player who logs in now and then keeps the set alive, and it would otherwise list every session
/// they ever abandoned, a little more memory each time and more work for `sessions_delete_all`.
#[tokio::test]
async fn a_login_drops_the_sessions_that_idled_out_from_the_accounts_set() {
    let server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    let mut raw = raw_connection(&server).await;
    let n_listed = async |raw: &mut redis::aio::MultiplexedConnection| -> u64 {
        redis::cmd("ZCARD").arg("t:account-sessions:acct-1").query_async(raw).await.unwrap()
    };
    for n in 0..5 {
        kv.session_put(&format!("ab{n:02}"), "acct-1", b"r", Duration::from_millis(50), LONG, MANY)
            .await
            .unwrap();
    }
    kv.session_put("cd00", "acct-1", b"r", LONG, LONG, MANY).await.unwrap();
    assert_eq!(n_listed(&mut raw).await, 6);
    sleep(Duration::from_millis(150)).await;

    kv.session_put("cd01", "acct-1", b"r", LONG, LONG, MANY).await.unwrap();
    assert_eq!(n_listed(&mut raw).await, 2, "only the live sessions stay listed");
    let mut ended = kv.sessions_delete_all("acct-1").await.unwrap();
    ended.sort();
    assert_eq!(ended, ["cd00", "cd01"]);
}

/// Earlier releases kept an account's sessions in a plain SET, which orders nothing. Every
/// operation on the index converts such a key in place, its sessions counting as the oldest, so a
/// deployment upgrades with live sessions and nothing to run by hand.
#[tokio::test]
async fn an_accounts_set_left_by_an_earlier_release_is_converted_in_place() {
    let server = RedisServer::start();
    let kv = Kv::connect_redis(&server.url(), "t:").await.unwrap();
    let mut raw = raw_connection(&server).await;
    let legacy = async |raw: &mut redis::aio::MultiplexedConnection, account: &str, members: &[&str]| {
        for member in members {
            let () = redis::cmd("SET")
                .arg(format!("t:session:{member}"))
                .arg("r")
                .arg("PX")
                .arg(60_000)
                .query_async(raw)
                .await
                .unwrap();
        }
        let key = format!("t:account-sessions:{account}");
        let _: u64 = redis::cmd("SADD").arg(&key).arg(members).query_async(raw).await.unwrap();
        let _: u64 = redis::cmd("PEXPIRE").arg(&key).arg(600_000).query_async(raw).await.unwrap();
    };
    let key_type = async |raw: &mut redis::aio::MultiplexedConnection, account: &str| -> String {
        redis::cmd("TYPE").arg(format!("t:account-sessions:{account}")).query_async(raw).await.unwrap()
    };

    // Logging out everywhere straight after the upgrade still ends every session.
    legacy(&mut raw, "acct-1", &["aa01", "aa02"]).await;
    let mut ended = kv.sessions_delete_all("acct-1").await.unwrap();
    ended.sort();
    assert_eq!(ended, ["aa01", "aa02"]);

    // A login converts the set; its old sessions are the oldest, and the cap ends them first.
    legacy(&mut raw, "acct-2", &["bb01", "bb02"]).await;
    assert_eq!(kv.session_put("bb03", "acct-2", b"r", LONG, LONG, 2).await.unwrap(), ["bb01"]);
    assert_eq!(key_type(&mut raw, "acct-2").await, "zset");
    let index_ttl: i64 =
        redis::cmd("PTTL").arg("t:account-sessions:acct-2").query_async(&mut raw).await.unwrap();
    assert!(index_ttl > 500_000, "the set kept its TTL: {index_ttl}");
    assert_eq!(kv.session_put("bb04", "acct-2", b"r", LONG, LONG, 2).await.unwrap(), ["bb02"]);
    let mut ended = kv.sessions_delete_all("acct-2").await.unwrap();
    ended.sort();
    assert_eq!(ended, ["bb03", "bb04"]);

    // A logout and a rotation convert it too, and logging out everywhere then finds the rest.
    legacy(&mut raw, "acct-3", &["cc01", "cc02", "cc03"]).await;
    assert!(kv.session_delete("cc01", "acct-3").await.unwrap());
    assert_eq!(key_type(&mut raw, "acct-3").await, "zset");
    legacy(&mut raw, "acct-4", &["dd01", "dd02"]).await;
    assert!(kv.session_rotate("dd01", "acct-4", "dd11", b"r", LONG, LONG).await.unwrap());
    assert_eq!(key_type(&mut raw, "acct-4").await, "zset");
    let mut ended = kv.sessions_delete_all("acct-3").await.unwrap();
    ended.sort();
    assert_eq!(ended, ["cc02", "cc03"]);
    let mut ended = kv.sessions_delete_all("acct-4").await.unwrap();
    ended.sort();
    assert_eq!(ended, ["dd02", "dd11"]);
}
