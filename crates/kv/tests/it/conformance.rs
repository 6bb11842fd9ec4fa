//! The conformance suite: each behaviour is one `check_*` function on a `&Kv`, run once on the
//! embedded store and once on Redis, so both backends keep the same semantics.

use std::time::Duration;

use kv::{
    BufferClaim, BufferStats, BufferUpdate, BufferVersion, ClaimedRecord, Field, Kv, QueueJoin, QueueStats,
    QueueTicket,
};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use crate::harness::RedisServer;
use crate::support::{PATIENCE, assert_silent, recv_soon};

const LONG: Duration = Duration::from_secs(60);
/// A cap on an account's sessions that no test reaches unless it means to.
const MANY: usize = 1_000;

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
    session_update_only_overwrites_a_live_session => check_session_update_only_overwrites_live,
    session_rotation_replaces_only_a_live_session => check_session_rotation_replaces_only_live,
    of_concurrent_rotations_of_one_session_exactly_one_succeeds => check_concurrent_rotations,
    a_login_past_the_accounts_cap_ends_its_oldest_sessions => check_session_cap_ends_the_oldest,
    a_rotated_session_keeps_its_logins_place_in_the_order => check_rotation_keeps_the_order,
    the_cap_counts_only_live_sessions => check_session_cap_counts_live_sessions,
    a_cap_above_the_prune_sample_still_counts_only_live_sessions => check_large_session_cap_counts_live_sessions,
    shortening_a_sessions_ttl_never_lengthens_it => check_session_expire_within,
    counter_counts_hits_and_resets => check_counter_counts_and_resets,
    counter_window_starts_at_first_hit_and_expires => check_counter_window_expires,
    counters_hit_below_their_limits_all_or_none => check_counters_hit_below_all_or_none,
    concurrent_hits_below_a_limit_never_pass_it => check_concurrent_hits_below_limit,
    undoing_a_hit_never_goes_below_zero_and_keeps_the_window => check_counter_undo_hit,
    published_message_reaches_subscriber => check_publish_subscribe_round_trip,
    two_subscribers_both_receive => check_two_subscribers_both_receive,
    messages_dropped_for_a_consumer_too_far_behind_are_counted => check_messages_dropped_for_a_consumer_too_far_behind_are_counted,
    a_consumer_behind_by_the_byte_budget_drops_newer_messages => check_subscription_byte_budget,
    dropped_subscription_stops_counting => check_dropped_subscription_unsubscribes,
    ping_answers => check_ping,
    update_of_an_absent_record_is_not_loaded_and_changes_nothing => check_update_absent_is_not_loaded,
    updates_continue_the_seeded_version_and_merge_fields => check_updates_continue_version_and_merge,
    dirty_set_counts_ids_and_keeps_the_first_dirty_time => check_dirty_keeps_first_time,
    seed_refuses_to_overwrite => check_seed_refuses_to_overwrite,
    versions_grow_across_records_and_continue_above_seeded_ones => check_versions_grow_across_records,
    claim_takes_the_oldest_first_up_to_max_with_current_fields => check_claim_oldest_first,
    a_large_claim_and_release_take_every_id_in_order => check_large_claim_and_release,
    update_after_claim_redirties_while_still_claimed => check_update_after_claim_redirties,
    a_record_claimed_twice_outlives_either_flush => check_a_record_claimed_twice_outlives_either_flush,
    release_removes_from_the_claim_only => check_release_removes_from_claim_only,
    recover_moves_the_claim_back_keeping_the_older_score => check_recover_keeps_older_score,
    a_release_from_before_a_recovery_leaves_the_claim_taken_after_it => check_stale_release_changes_nothing,
    the_version_counter_is_read_and_only_ever_raised => check_version_read_and_raised,
    dropping_a_buffer_leaves_nothing_of_it_and_no_other_namespace_touched => check_drop_all,
    dirty_records_never_expire_and_clean_ones_do => check_dirty_records_never_expire,
    namespaces_are_separate => check_namespaces_are_separate,
    lease_goes_to_one_holder_renews_and_is_released => check_lease_holder_renew_release,
    lease_expires_after_its_ttl => check_lease_expires,
    queue_holds_one_ticket_per_player_oldest_first => check_queue_one_ticket_per_player,
    queue_leave_returns_the_ticket_once => check_queue_leave,
    queue_claim_takes_whole_groups_only => check_queue_claim_whole_groups,
    queue_unclaim_puts_back_only_who_still_holds_a_ticket => check_queue_unclaim,
    queue_away_players_are_not_claimed_and_removed_after_grace => check_queue_away,
    queue_stats_count_and_median => check_queue_stats,
}

fn fields(pairs: &[(&str, &str)]) -> Vec<Field> {
    pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
}

/// The record's fields sorted by name, so they compare regardless of the backend's order.
async fn get_sorted(kv: &Kv, ns: &str, id: &str) -> Option<Vec<Field>> {
    let mut record = kv.buffer_get(ns, id).await.unwrap()?;
    record.sort();
    Some(record)
}

fn sorted(mut record: ClaimedRecord) -> ClaimedRecord {
    record.fields.sort();
    record
}

async fn update(kv: &Kv, id: &str, pairs: &[(&str, &str)], now_ms: u64) -> BufferUpdate {
    kv.buffer_update("player", id, fields(pairs), now_ms).await.unwrap()
}

async fn seed(kv: &Kv, id: &str, pairs: &[(&str, &str)]) -> bool {
    kv.buffer_seed("player", id, fields(pairs), LONG).await.unwrap()
}

fn applied(version: u64, n_dirty: u64) -> BufferUpdate {
    BufferUpdate::Applied { version, n_dirty }
}

/// Sizes of a buffer where no record is both dirty and claimed.
fn stats(n_dirty: u64, n_claimed: u64, oldest_dirty_ms: Option<u64>) -> BufferStats {
    BufferStats { n_dirty, n_claimed, n_buffered: n_dirty + n_claimed, oldest_dirty_ms }
}

async fn claimed_ids(kv: &Kv, max: usize) -> Vec<(String, u64)> {
    pairs(&kv.buffer_claim("player", max, u64::MAX).await.unwrap())
}

/// Each claimed record's (id, dirty-since).
fn pairs(claim: &BufferClaim) -> Vec<(String, u64)> {
    claim.records.iter().map(|record| (record.id.clone(), record.dirty_since_ms)).collect()
}

fn ids(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(id, since)| ((*id).to_owned(), *since)).collect()
}

async fn check_update_absent_is_not_loaded(kv: &Kv) {
    assert_eq!(update(kv, "p1", &[("x", "1")], 1_000).await, BufferUpdate::NotLoaded);
    assert_eq!(kv.buffer_get("player", "p1").await.unwrap(), None);
    assert_eq!(kv.buffer_stats("player").await.unwrap(), BufferStats::default());
    assert_eq!(kv.buffer_claim("player", 10, u64::MAX).await.unwrap().records, []);
    // An empty seed creates nothing, so the record stays absent.
    assert!(!kv.buffer_seed("player", "p1", Vec::new(), LONG).await.unwrap());
    assert_eq!(update(kv, "p1", &[], 1_000).await, BufferUpdate::NotLoaded);
}

async fn check_updates_continue_version_and_merge(kv: &Kv) {
    assert!(seed(kv, "p1", &[("v", "41"), ("t", "5"), ("x", "1"), ("y", "2")]).await);
    // Seeding does not dirty the record.
    assert_eq!(kv.buffer_stats("player").await.unwrap(), BufferStats::default());

    assert_eq!(update(kv, "p1", &[("x", "10")], 1_000).await, applied(42, 1));
    assert_eq!(
        get_sorted(kv, "player", "p1").await,
        Some(fields(&[("t", "1000"), ("v", "42"), ("x", "10"), ("y", "2")]))
    );
    assert_eq!(update(kv, "p1", &[("y", "20"), ("z", "30")], 2_000).await, applied(43, 1));
    assert_eq!(update(kv, "p1", &[], 3_000).await, applied(44, 1));
    assert_eq!(
        get_sorted(kv, "player", "p1").await,
        Some(fields(&[("t", "3000"), ("v", "44"), ("x", "10"), ("y", "20"), ("z", "30")]))
    );

    // A record seeded without "v" gets version 0; its updates take the namespace's next versions.
    assert!(seed(kv, "p2", &[("x", "1")]).await);
    assert_eq!(get_sorted(kv, "player", "p2").await, Some(fields(&[("v", "0"), ("x", "1")])));
    assert_eq!(update(kv, "p2", &[], 4_000).await, applied(45, 2));
}

async fn check_dirty_keeps_first_time(kv: &Kv) {
    for id in ["a", "b", "c"] {
        assert!(seed(kv, id, &[("v", "0")]).await);
    }
    assert_eq!(update(kv, "a", &[("x", "1")], 1_000).await, applied(1, 1));
    assert_eq!(update(kv, "a", &[("x", "2")], 2_000).await, applied(2, 1));
    assert_eq!(update(kv, "b", &[("x", "1")], 1_500).await, applied(3, 2));
    assert_eq!(update(kv, "a", &[("x", "3")], 3_000).await, applied(4, 2));
    assert_eq!(update(kv, "c", &[("x", "1")], 500).await, applied(5, 3));
    assert_eq!(update(kv, "b", &[("x", "2")], 3_500).await, applied(6, 3));
    assert_eq!(kv.buffer_stats("player").await.unwrap(), stats(3, 0, Some(500)));
    // Each id is still dirty since its first update.
    assert_eq!(claimed_ids(kv, 10).await, ids(&[("c", 500), ("a", 1_000), ("b", 1_500)]));
}

async fn check_seed_refuses_to_overwrite(kv: &Kv) {
    assert!(seed(kv, "p1", &[("v", "7"), ("x", "1")]).await);
    assert!(!seed(kv, "p1", &[("v", "100"), ("x", "2"), ("w", "3")]).await);
    assert_eq!(get_sorted(kv, "player", "p1").await, Some(fields(&[("v", "7"), ("x", "1")])));
    assert_eq!(update(kv, "p1", &[], 1_000).await, applied(8, 1));
    // Not even once updated and dirty.
    assert!(!seed(kv, "p1", &[("v", "100")]).await);
    assert_eq!(update(kv, "p1", &[], 2_000).await, applied(9, 1));
}

async fn check_versions_grow_across_records(kv: &Kv) {
    assert!(seed(kv, "a", &[("v", "0")]).await);
    assert!(seed(kv, "b", &[("v", "0")]).await);
    assert_eq!(update(kv, "a", &[], 1_000).await, applied(1, 1));
    // A seeded version above every version handed out so far raises the counter, for every record.
    assert!(seed(kv, "c", &[("v", "100")]).await);
    assert_eq!(update(kv, "b", &[], 1_000).await, applied(101, 2));
    assert_eq!(update(kv, "c", &[], 1_000).await, applied(102, 3));
    // A lower one does not lower it.
    assert!(seed(kv, "d", &[("v", "50")]).await);
    assert_eq!(update(kv, "d", &[], 1_000).await, applied(103, 4));
    // A version that is not a whole number is ignored by the counter and replaced by the update.
    assert!(seed(kv, "e", &[("v", "forty-one"), ("x", "1")]).await);
    assert_eq!(update(kv, "e", &[], 2_000).await, applied(104, 5));
    assert_eq!(get_sorted(kv, "player", "e").await, Some(fields(&[("t", "2000"), ("v", "104"), ("x", "1")])));
}

async fn check_claim_oldest_first(kv: &Kv) {
    for id in ["a", "b", "c", "d"] {
        assert!(seed(kv, id, &[("v", "0"), ("name", id)]).await);
    }
    update(kv, "c", &[("x", "c1")], 100).await;
    update(kv, "a", &[("x", "a1")], 200).await;
    update(kv, "b", &[("x", "b1")], 300).await;
    update(kv, "a", &[("x", "a2")], 400).await;
    // "d" was seeded but never updated: not dirty, never claimed.

    let first: Vec<ClaimedRecord> =
        kv.buffer_claim("player", 2, u64::MAX).await.unwrap().records.into_iter().map(sorted).collect();
    assert_eq!(
        first,
        [
            ClaimedRecord {
                id: "c".to_owned(),
                fields: fields(&[("name", "c"), ("t", "100"), ("v", "1"), ("x", "c1")]),
                dirty_since_ms: 100,
            },
            ClaimedRecord {
                id: "a".to_owned(),
                fields: fields(&[("name", "a"), ("t", "400"), ("v", "4"), ("x", "a2")]),
                dirty_since_ms: 200,
            },
        ]
    );
    assert_eq!(kv.buffer_stats("player").await.unwrap(), stats(1, 2, Some(100)));
    assert_eq!(claimed_ids(kv, 10).await, ids(&[("b", 300)]));
    assert_eq!(kv.buffer_stats("player").await.unwrap(), stats(0, 3, Some(100)));
    assert_eq!(claimed_ids(kv, 10).await, []);
    assert_eq!(claimed_ids(kv, 0).await, []);
    // Claiming leaves the records themselves in place.
    assert!(kv.buffer_get("player", "c").await.unwrap().is_some());
}

async fn check_large_claim_and_release(kv: &Kv) {
    // More ids than one Redis script run handles, so the claim and the release come in pieces.
    let ids: Vec<String> = (0..1_200).map(|n| format!("p{n:04}")).collect();
    for (n, id) in ids.iter().enumerate() {
        assert!(seed(kv, id, &[("v", "0")]).await);
        update(kv, id, &[("x", "1")], 1_000 + n as u64).await;
    }
    // Only ids dirty since at most the given time are taken.
    assert_eq!(kv.buffer_claim("player", 1_100, 1_009).await.unwrap().records.len(), 10);
    kv.buffer_recover("player").await.unwrap();
    let claim = kv.buffer_claim("player", 1_100, u64::MAX).await.unwrap();
    let claimed_ids: Vec<&str> = claim.records.iter().map(|record| record.id.as_str()).collect();
    assert_eq!(claimed_ids, ids[..1_100].iter().map(String::as_str).collect::<Vec<_>>());
    assert!(claim.records.iter().all(|record| record.fields.contains(&("x".to_owned(), "1".to_owned()))));
    assert_eq!(kv.buffer_stats("player").await.unwrap(), stats(100, 1_100, Some(1_000)));
    let claimed_ids: Vec<String> = claim.records.into_iter().map(|record| record.id).collect();
    kv.buffer_release("player", &claimed_ids, claim.generation, LONG).await.unwrap();
    assert_eq!(kv.buffer_stats("player").await.unwrap(), stats(100, 0, Some(2_100)));
    assert_eq!(kv.buffer_claim("player", 1_000, u64::MAX).await.unwrap().records.len(), 100);
}

async fn check_update_after_claim_redirties(kv: &Kv) {
    assert!(seed(kv, "a", &[("v", "0")]).await);
    update(kv, "a", &[("x", "1")], 100).await;
    assert_eq!(claimed_ids(kv, 10).await, ids(&[("a", 100)]));
    assert_eq!(kv.buffer_stats("player").await.unwrap(), stats(0, 1, Some(100)));

    assert_eq!(update(kv, "a", &[("x", "2")], 500).await, applied(2, 1));
    // Dirty and claimed, but one record with unflushed updates.
    let dirty_and_claimed = BufferStats { n_buffered: 1, ..stats(1, 1, Some(100)) };
    assert_eq!(kv.buffer_stats("player").await.unwrap(), dirty_and_claimed);

    // Not claimed again before the first claim is released: it stays dirty (see the next check).
    assert_eq!(claimed_ids(kv, 10).await, []);
    assert_eq!(kv.buffer_stats("player").await.unwrap(), dirty_and_claimed);
}

/// A flusher and an ops flush beside it claim after the same recovery, so their claims share a
/// generation. A record dirtied again while the first holds it must stay dirty or claimed until
/// a flush of its newer fields is released: if the second flush took it and died, the first
/// one's release must not leave it neither dirty nor claimed, expiring unflushed.
async fn check_a_record_claimed_twice_outlives_either_flush(kv: &Kv) {
    assert!(seed(kv, "a", &[("v", "0")]).await);
    update(kv, "a", &[("x", "1")], 100).await;
    let flusher = kv.buffer_claim("player", 10, u64::MAX).await.unwrap();
    update(kv, "a", &[("x", "2")], 200).await;
    // The ops flush claims what is dirty, then dies before writing it.
    let _died = kv.buffer_claim("player", 10, u64::MAX).await.unwrap();
    // The flusher wrote "a" as it claimed it and releases it.
    kv.buffer_release("player", &["a".to_owned()], flusher.generation, Duration::from_millis(1))
        .await
        .unwrap();
    sleep(Duration::from_millis(20)).await;

    assert_eq!(kv.buffer_recover("player").await.unwrap(), 0, "the next pass finds no claim to put back");
    let next = kv.buffer_claim("player", 10, u64::MAX).await.unwrap();
    assert_eq!(pairs(&next), ids(&[("a", 200)]), "still dirty, never expired");
    assert!(next.records[0].fields.contains(&("x".to_owned(), "2".to_owned())));
}

async fn check_release_removes_from_claim_only(kv: &Kv) {
    for id in ["a", "b", "c"] {
        assert!(seed(kv, id, &[("v", "0")]).await);
    }
    update(kv, "a", &[], 100).await;
    update(kv, "b", &[], 200).await;
    update(kv, "c", &[], 300).await;
    let claim = kv.buffer_claim("player", 2, u64::MAX).await.unwrap();
    assert_eq!(pairs(&claim), ids(&[("a", 100), ("b", 200)]));
    // "a" is updated while the flusher writes it.
    update(kv, "a", &[("x", "new")], 400).await;

    let released = ["a".to_owned(), "b".to_owned(), "unknown".to_owned()];
    kv.buffer_release("player", &released, claim.generation, LONG).await.unwrap();
    kv.buffer_release("player", &[], claim.generation, LONG).await.unwrap();
    assert_eq!(kv.buffer_stats("player").await.unwrap(), stats(2, 0, Some(300)));
    // The re-dirtied "a" is flushed again later, with its newer fields; "b" is done.
    assert_eq!(claimed_ids(kv, 10).await, ids(&[("c", 300), ("a", 400)]));
    // Records outlive their flush: they stay in the buffer until their TTL ends.
    assert!(kv.buffer_get("player", "b").await.unwrap().is_some());
}

async fn check_stale_release_changes_nothing(kv: &Kv) {
    for id in ["a", "b"] {
        assert!(seed(kv, id, &[("v", "0")]).await);
    }
    update(kv, "a", &[], 100).await;
    update(kv, "b", &[], 200).await;
    // The flusher claims both; while it writes, "a" is updated and an ops flush recovers the
    // claim and takes both again.
    let flusher = kv.buffer_claim("player", 10, u64::MAX).await.unwrap();
    update(kv, "a", &[("x", "new")], 300).await;
    assert_eq!(kv.buffer_recover("player").await.unwrap(), 2);
    let ops = kv.buffer_claim("player", 10, u64::MAX).await.unwrap();
    assert_eq!(pairs(&ops), ids(&[("a", 100), ("b", 200)]));
    assert_ne!(ops.generation, flusher.generation);

    // The flusher's release comes late: the ops flush's claim still holds both, so a crash now
    // would still recover them.
    let both = ["a".to_owned(), "b".to_owned()];
    kv.buffer_release("player", &both, flusher.generation, LONG).await.unwrap();
    assert_eq!(kv.buffer_stats("player").await.unwrap(), stats(0, 2, Some(100)));
    assert_eq!(kv.buffer_recover("player").await.unwrap(), 2);
    let after_crash = kv.buffer_claim("player", 10, u64::MAX).await.unwrap();
    assert_eq!(pairs(&after_crash), ids(&[("a", 100), ("b", 200)]));
    assert!(after_crash.records[0].fields.contains(&("x".to_owned(), "new".to_owned())));

    kv.buffer_release("player", &both, after_crash.generation, LONG).await.unwrap();
    assert_eq!(kv.buffer_stats("player").await.unwrap(), BufferStats::default());
}

fn version(last: u64, baseline: Option<u64>) -> BufferVersion {
    BufferVersion { last, baseline }
}

async fn check_version_read_and_raised(kv: &Kv) {
    assert_eq!(kv.buffer_version("player").await.unwrap(), version(0, None), "nothing handed out yet");
    assert!(seed(kv, "p1", &[("v", "0")]).await);
    assert_eq!(update(kv, "p1", &[("x", "1")], 1_000).await, applied(1, 1));
    assert_eq!(kv.buffer_version("player").await.unwrap(), version(1, None));
    kv.buffer_begin("player", 30).await.unwrap();
    assert_eq!(kv.buffer_version("player").await.unwrap(), version(30, Some(30)), "begun: counter raised");
    kv.buffer_begin("player", 35).await.unwrap();
    assert_eq!(kv.buffer_version("player").await.unwrap(), version(30, Some(30)), "the first baseline stays");
    assert!(kv.buffer_raise_version("player", 40).await.unwrap());
    assert!(!kv.buffer_raise_version("player", 7).await.unwrap(), "a lower floor changes nothing");
    assert_eq!(kv.buffer_version("player").await.unwrap(), version(40, Some(30)));
    assert_eq!(update(kv, "p1", &[("x", "2")], 1_001).await, applied(41, 1), "versions continue above it");
    assert_eq!(kv.buffer_version("other").await.unwrap(), version(0, None), "each namespace on its own");
}

async fn check_drop_all(kv: &Kv) {
    for id in ["never-updated", "claimed", "flushed", "dirty"] {
        assert!(seed(kv, id, &[("v", "0"), ("x", "seeded")]).await);
    }
    assert!(kv.buffer_seed("other", "never-updated", fields(&[("v", "0")]), LONG).await.unwrap());
    update(kv, "claimed", &[("x", "1")], 100).await;
    update(kv, "flushed", &[("x", "1")], 200).await;
    let claim = kv.buffer_claim("player", 10, u64::MAX).await.unwrap();
    kv.buffer_release("player", &["flushed".to_owned()], claim.generation, LONG).await.unwrap();
    update(kv, "dirty", &[("x", "1")], 300).await;
    update(kv, "claimed", &[("x", "2")], 400).await;
    kv.buffer_begin("player", 2).await.unwrap();

    assert_eq!(kv.buffer_drop_all("player").await.unwrap(), 4);
    for id in ["never-updated", "claimed", "flushed", "dirty"] {
        assert_eq!(kv.buffer_get("player", id).await.unwrap(), None, "{id}");
        assert_eq!(update(kv, id, &[("x", "3")], 500).await, BufferUpdate::NotLoaded, "{id}");
    }
    assert_eq!(kv.buffer_stats("player").await.unwrap(), BufferStats::default(), "no dirty set, no claim");
    assert_eq!(kv.buffer_recover("player").await.unwrap(), 0);
    assert_eq!(
        kv.buffer_version("player").await.unwrap(),
        version(4, Some(2)),
        "the counter and the baseline stay"
    );
    assert!(
        kv.buffer_get("other", "never-updated").await.unwrap().is_some(),
        "other namespaces are left alone"
    );
}

async fn check_recover_keeps_older_score(kv: &Kv) {
    for id in ["a", "b", "c"] {
        assert!(seed(kv, id, &[("v", "0")]).await);
    }
    update(kv, "a", &[], 100).await;
    update(kv, "b", &[], 200).await;
    assert_eq!(claimed_ids(kv, 10).await, ids(&[("a", 100), ("b", 200)]));
    update(kv, "a", &[], 300).await;
    update(kv, "c", &[], 50).await;
    // "a" is both dirty and claimed: three records with unflushed updates.
    assert_eq!(
        kv.buffer_stats("player").await.unwrap(),
        BufferStats { n_buffered: 3, ..stats(2, 2, Some(50)) }
    );

    // The flusher "crashed": nothing was released.
    assert_eq!(kv.buffer_recover("player").await.unwrap(), 2);
    assert_eq!(kv.buffer_stats("player").await.unwrap(), stats(3, 0, Some(50)));
    let claim = kv.buffer_claim("player", 10, u64::MAX).await.unwrap();
    assert_eq!(pairs(&claim), ids(&[("c", 50), ("a", 100), ("b", 200)]));

    let released = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
    kv.buffer_release("player", &released, claim.generation, LONG).await.unwrap();
    assert_eq!(kv.buffer_recover("player").await.unwrap(), 0);
    assert_eq!(kv.buffer_stats("player").await.unwrap(), BufferStats::default());
}

async fn check_dirty_records_never_expire(kv: &Kv) {
    let short = Duration::from_millis(300);
    // Seeded and never updated: expires after the seed's TTL.
    assert!(kv.buffer_seed("player", "seeded", fields(&[("v", "0")]), short).await.unwrap());
    // Updated: its TTL is gone until it is flushed.
    assert!(kv.buffer_seed("player", "dirty", fields(&[("v", "0")]), short).await.unwrap());
    update(kv, "dirty", &[("x", "1")], 500).await;
    // Flushed and released: expires after the release's TTL.
    assert!(seed(kv, "flushed", &[("v", "0")]).await);
    update(kv, "flushed", &[("x", "1")], 200).await;
    // Updated again while the flusher wrote it: still dirty after the release, so no TTL.
    assert!(seed(kv, "redirtied", &[("v", "0")]).await);
    update(kv, "redirtied", &[("x", "1")], 300).await;
    let claim = kv.buffer_claim("player", 2, u64::MAX).await.unwrap();
    assert_eq!(pairs(&claim), ids(&[("flushed", 200), ("redirtied", 300)]));
    update(kv, "redirtied", &[("x", "2")], 400).await;
    let flushed = ["flushed".to_owned(), "redirtied".to_owned()];
    kv.buffer_release("player", &flushed, claim.generation, short).await.unwrap();

    sleep(Duration::from_millis(600)).await;
    assert_eq!(kv.buffer_get("player", "seeded").await.unwrap(), None);
    assert_eq!(update(kv, "seeded", &[], 700).await, BufferUpdate::NotLoaded);
    assert_eq!(kv.buffer_get("player", "flushed").await.unwrap(), None);
    let claimed: Vec<ClaimedRecord> =
        kv.buffer_claim("player", 10, u64::MAX).await.unwrap().records.into_iter().map(sorted).collect();
    let claimed: Vec<(&str, &[Field])> =
        claimed.iter().map(|record| (record.id.as_str(), record.fields.as_slice())).collect();
    assert_eq!(
        claimed,
        [
            ("redirtied", &fields(&[("t", "400"), ("v", "4"), ("x", "2")])[..]),
            ("dirty", &fields(&[("t", "500"), ("v", "1"), ("x", "1")])[..]),
        ]
    );
    // An expired record can be seeded afresh.
    assert!(seed(kv, "seeded", &[("v", "5")]).await);
    assert_eq!(update(kv, "seeded", &[], 800).await, applied(6, 1));
}

async fn check_namespaces_are_separate(kv: &Kv) {
    assert!(kv.buffer_seed("player", "1", fields(&[("v", "0")]), LONG).await.unwrap());
    assert!(kv.buffer_seed("guild", "1", fields(&[("v", "10")]), LONG).await.unwrap());
    assert_eq!(kv.buffer_update("guild", "1", Vec::new(), 100).await.unwrap(), applied(11, 1));
    assert_eq!(kv.buffer_stats("player").await.unwrap(), BufferStats::default());
    assert_eq!(kv.buffer_claim("player", 10, u64::MAX).await.unwrap().records, []);
    assert_eq!(get_sorted(kv, "player", "1").await, Some(fields(&[("v", "0")])));
    assert_eq!(kv.buffer_stats("guild").await.unwrap(), stats(1, 0, Some(100)));
}

async fn check_lease_holder_renew_release(kv: &Kv) {
    let ttl = Duration::from_millis(500);
    assert!(kv.lease_acquire("flusher", "node-a", ttl).await.unwrap());
    assert!(!kv.lease_acquire("flusher", "node-b", ttl).await.unwrap());
    // Another lease name is independent.
    assert!(kv.lease_acquire("matchmaker", "node-b", ttl).await.unwrap());

    // Renewing extends the lease: 700 ms after taking it, node-a still holds it.
    sleep(Duration::from_millis(350)).await;
    assert!(kv.lease_acquire("flusher", "node-a", ttl).await.unwrap());
    sleep(Duration::from_millis(350)).await;
    assert!(!kv.lease_acquire("flusher", "node-b", ttl).await.unwrap());

    // Only the holder can release it.
    kv.lease_release("flusher", "node-b").await.unwrap();
    assert!(!kv.lease_acquire("flusher", "node-b", ttl).await.unwrap());
    kv.lease_release("flusher", "node-a").await.unwrap();
    assert!(kv.lease_acquire("flusher", "node-b", ttl).await.unwrap());
    assert!(!kv.lease_acquire("flusher", "node-a", ttl).await.unwrap());
    // Releasing a free lease is fine.
    kv.lease_release("never-taken", "node-a").await.unwrap();
}

async fn check_lease_expires(kv: &Kv) {
    assert!(kv.lease_acquire("flusher", "node-a", Duration::from_millis(200)).await.unwrap());
    assert!(!kv.lease_acquire("flusher", "node-b", LONG).await.unwrap());
    sleep(Duration::from_millis(400)).await;
    assert!(kv.lease_acquire("flusher", "node-b", LONG).await.unwrap());
    assert!(!kv.lease_acquire("flusher", "node-a", LONG).await.unwrap());
}

async fn check_ping(kv: &Kv) {
    kv.ping().await.unwrap();
}

async fn check_session_round_trip(kv: &Kv) {
    kv.session_put("aa01", "acct-1", b"record-1", LONG, LONG, MANY).await.unwrap();
    assert_eq!(kv.session_get_touch("aa01", LONG).await.unwrap().as_deref(), Some(&b"record-1"[..]));
    assert_eq!(kv.session_get_touch("ffff", LONG).await.unwrap(), None);

    // Putting again replaces the record.
    kv.session_put("aa01", "acct-1", b"record-2", LONG, LONG, MANY).await.unwrap();
    assert_eq!(kv.session_get_touch("aa01", LONG).await.unwrap().as_deref(), Some(&b"record-2"[..]));

    assert!(kv.session_delete("aa01", "acct-1").await.unwrap());
    assert!(!kv.session_delete("aa01", "acct-1").await.unwrap());
    assert_eq!(kv.session_get_touch("aa01", LONG).await.unwrap(), None);
    // The account set no longer lists it.
    assert_eq!(kv.sessions_delete_all("acct-1").await.unwrap(), Vec::<String>::new());
}

async fn check_session_touch_slides_expiry(kv: &Kv) {
    let idle = Duration::from_millis(600);
    kv.session_put("bb01", "acct-2", b"r", idle, LONG, MANY).await.unwrap();

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
    kv.session_put("cc01", "acct-3", b"1", LONG, LONG, MANY).await.unwrap();
    kv.session_put("cc02", "acct-3", b"2", LONG, LONG, MANY).await.unwrap();
    kv.session_put("cc03", "acct-3", b"3", Duration::from_millis(50), LONG, MANY).await.unwrap();
    kv.session_put("cc04", "acct-3", b"4", LONG, LONG, MANY).await.unwrap();
    assert!(kv.session_delete("cc04", "acct-3").await.unwrap());
    kv.session_put("dd01", "acct-4", b"other", LONG, LONG, MANY).await.unwrap();
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

async fn session(kv: &Kv, token_hash: &str) -> Option<Vec<u8>> {
    kv.session_get_touch(token_hash, LONG).await.unwrap()
}

async fn check_session_update_only_overwrites_live(kv: &Kv) {
    assert!(!kv.session_update("ff01", b"record-1", LONG).await.unwrap());
    assert_eq!(session(kv, "ff01").await, None, "an update creates nothing");

    kv.session_put("ff01", "acct-6", b"record-1", Duration::from_millis(300), LONG, MANY).await.unwrap();
    assert!(kv.session_update("ff01", b"record-2", LONG).await.unwrap());
    // The update set the idle TTL too: past the first one, the session lives on.
    sleep(Duration::from_millis(500)).await;
    assert_eq!(session(kv, "ff01").await.as_deref(), Some(&b"record-2"[..]));
    // It stays in the account's set.
    assert_eq!(kv.sessions_delete_all("acct-6").await.unwrap(), ["ff01"]);

    assert!(!kv.session_update("ff01", b"record-3", LONG).await.unwrap());
    assert_eq!(session(kv, "ff01").await, None, "a deleted session stays deleted");
}

async fn check_session_rotation_replaces_only_live(kv: &Kv) {
    kv.session_put("ee01", "acct-5", b"old", LONG, LONG, MANY).await.unwrap();
    assert!(kv.session_rotate("ee01", "acct-5", "ee02", b"new", LONG, LONG).await.unwrap());
    assert_eq!(session(kv, "ee01").await, None);
    assert_eq!(session(kv, "ee02").await.as_deref(), Some(&b"new"[..]));

    // The old session is gone, so rotating it again creates nothing.
    assert!(!kv.session_rotate("ee01", "acct-5", "ee03", b"again", LONG, LONG).await.unwrap());
    assert_eq!(session(kv, "ee03").await, None);

    // The new session replaced the old one in the account's set.
    assert_eq!(kv.sessions_delete_all("acct-5").await.unwrap(), ["ee02"]);
    assert!(!kv.session_rotate("ee02", "acct-5", "ee04", b"late", LONG, LONG).await.unwrap());
    assert_eq!(session(kv, "ee04").await, None, "no rotation outlives a delete-all before it");
    assert_eq!(kv.sessions_delete_all("acct-5").await.unwrap(), Vec::<String>::new());

    // The new session gets the idle TTL given.
    kv.session_put("ee05", "acct-5", b"old", LONG, LONG, MANY).await.unwrap();
    assert!(
        kv.session_rotate("ee05", "acct-5", "ee06", b"new", Duration::from_millis(50), LONG).await.unwrap()
    );
    sleep(Duration::from_millis(150)).await;
    assert_eq!(session(kv, "ee06").await, None);
}

async fn check_concurrent_rotations(kv: &Kv) {
    const N_ROTATIONS: usize = 10;
    kv.session_put("ab00", "acct-7", b"old", LONG, LONG, MANY).await.unwrap();
    let mut rotations = tokio::task::JoinSet::new();
    for n in 1..=N_ROTATIONS {
        let kv = kv.clone();
        rotations.spawn(async move {
            let new = format!("ab{n:02}");
            kv.session_rotate("ab00", "acct-7", &new, b"new", LONG, LONG).await.unwrap().then_some(new)
        });
    }
    let winners: Vec<String> = rotations.join_all().await.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(kv.sessions_delete_all("acct-7").await.unwrap(), winners);
}

async fn check_session_cap_ends_the_oldest(kv: &Kv) {
    const CAP: usize = 3;
    for token_hash in ["ca01", "ca02", "ca03"] {
        assert_eq!(kv.session_put(token_hash, "acct-8", b"r", LONG, LONG, CAP).await.unwrap(), [""; 0]);
    }
    // The fourth login ends the first, and only it; the new one always stays.
    assert_eq!(kv.session_put("ca04", "acct-8", b"r", LONG, LONG, CAP).await.unwrap(), ["ca01"]);
    assert_eq!(session(kv, "ca01").await, None);
    assert_eq!(kv.session_put("ca05", "acct-8", b"r", LONG, LONG, CAP).await.unwrap(), ["ca02"]);
    // Another account is counted apart.
    assert_eq!(kv.session_put("cb01", "acct-9", b"r", LONG, LONG, CAP).await.unwrap(), [""; 0]);
    // A logout makes room.
    assert!(kv.session_delete("ca04", "acct-8").await.unwrap());
    assert_eq!(kv.session_put("ca06", "acct-8", b"r", LONG, LONG, CAP).await.unwrap(), [""; 0]);
    // A lowered cap ends as many as it takes, oldest first.
    assert_eq!(
        kv.session_put("ca07", "acct-8", b"r", LONG, LONG, 1).await.unwrap(),
        ["ca03", "ca05", "ca06"]
    );

    let mut left = kv.sessions_delete_all("acct-8").await.unwrap();
    left.sort();
    assert_eq!(left, ["ca07"]);
    assert!(session(kv, "cb01").await.is_some());
}

async fn check_rotation_keeps_the_order(kv: &Kv) {
    const CAP: usize = 3;
    for token_hash in ["da01", "da02", "da03"] {
        kv.session_put(token_hash, "acct-10", b"r", LONG, LONG, CAP).await.unwrap();
    }
    // Rotating the oldest login neither ends another session nor makes it the newest.
    assert!(kv.session_rotate("da01", "acct-10", "da11", b"r", LONG, LONG).await.unwrap());
    assert!(session(kv, "da02").await.is_some() && session(kv, "da03").await.is_some());
    assert_eq!(kv.session_put("da04", "acct-10", b"r", LONG, LONG, CAP).await.unwrap(), ["da11"]);
    // A rotated newest login stays the newest.
    assert!(kv.session_rotate("da04", "acct-10", "da14", b"r", LONG, LONG).await.unwrap());
    assert_eq!(kv.session_put("da05", "acct-10", b"r", LONG, LONG, CAP).await.unwrap(), ["da02"]);
    assert_eq!(kv.session_put("da06", "acct-10", b"r", LONG, LONG, CAP).await.unwrap(), ["da03"]);
    assert_eq!(kv.session_put("da07", "acct-10", b"r", LONG, LONG, CAP).await.unwrap(), ["da14"]);
}

async fn check_session_cap_counts_live_sessions(kv: &Kv) {
    const CAP: usize = 2;
    kv.session_put("ea01", "acct-11", b"r", Duration::from_millis(50), LONG, CAP).await.unwrap();
    kv.session_put("ea02", "acct-11", b"r", LONG, LONG, CAP).await.unwrap();
    sleep(Duration::from_millis(150)).await;
    // The first idled out: it takes no place, and is not reported as ended by this login.
    assert_eq!(kv.session_put("ea03", "acct-11", b"r", LONG, LONG, CAP).await.unwrap(), [""; 0]);
    let mut left = kv.sessions_delete_all("acct-11").await.unwrap();
    left.sort();
    assert_eq!(left, ["ea02", "ea03"]);
}

async fn check_large_session_cap_counts_live_sessions(kv: &Kv) {
    // Above the 64 members a login looks at when the set is larger than the cap: were only a
    // sample of a full set looked at, the one session that ended would often be missed, and a
    // live one evicted in its place. Ten accounts make such a miss near certain to show.
    const CAP: usize = 100;
    for account in 0..10 {
        let account_id = format!("acct-big-{account}");
        for n in 0..CAP {
            let idle_ttl = if n == CAP / 2 { Duration::from_millis(50) } else { LONG };
            let token_hash = format!("{account:02x}{n:04x}");
            kv.session_put(&token_hash, &account_id, b"r", idle_ttl, LONG, CAP).await.unwrap();
        }
    }
    sleep(Duration::from_millis(150)).await;
    for account in 0..10 {
        let account_id = format!("acct-big-{account}");
        let ended = kv.session_put(&format!("{account:02x}ffff"), &account_id, b"r", LONG, LONG, CAP).await;
        assert_eq!(ended.unwrap(), [""; 0], "account {account}: the session that ended made room");
    }
}

async fn check_session_expire_within(kv: &Kv) {
    kv.session_put("fa01", "acct-12", b"r", LONG, LONG, MANY).await.unwrap();
    kv.session_expire_within("fa01", Duration::from_secs(5)).await.unwrap();
    let ttl = kv.session_ttl("fa01").await.unwrap().unwrap();
    assert!(ttl <= Duration::from_secs(5) && ttl > Duration::from_secs(4), "{ttl:?}");
    kv.session_expire_within("fa01", LONG).await.unwrap();
    assert!(kv.session_ttl("fa01").await.unwrap().unwrap() <= Duration::from_secs(5), "never lengthened");
    kv.session_expire_within("fa02", LONG).await.unwrap();
    assert_eq!(kv.session_ttl("fa02").await.unwrap(), None, "a missing session stays missing");
    kv.session_expire_within("fa01", Duration::from_millis(50)).await.unwrap();
    sleep(Duration::from_millis(150)).await;
    assert_eq!(session(kv, "fa01").await, None);
}

async fn check_counters_hit_below_all_or_none(kv: &Kv) {
    let hit = async |counters: &[(&str, u64)]| kv.counters_hit_below(counters, LONG).await.unwrap();
    assert!(hit(&[("acct:a", 2), ("addr:x", 3)]).await);
    assert!(hit(&[("acct:a", 2), ("addr:x", 3)]).await);
    // The account is at its limit: neither counter moves.
    assert!(!hit(&[("acct:a", 2), ("addr:x", 3)]).await);
    assert_eq!(kv.counter_get("acct:a").await.unwrap(), 2);
    assert_eq!(kv.counter_get("addr:x").await.unwrap(), 2);

    assert!(hit(&[("acct:b", 2), ("addr:x", 3)]).await);
    // The address is at its limit: a fresh account is not counted either.
    assert!(!hit(&[("acct:c", 2), ("addr:x", 3)]).await);
    assert_eq!(kv.counter_get("acct:c").await.unwrap(), 0);
    assert_eq!(kv.counter_get("addr:x").await.unwrap(), 3);

    assert!(!hit(&[("zero", 0)]).await, "a limit of 0 allows nothing");
    assert!(hit(&[]).await);

    // A counter created here expires after the window, from its first hit.
    assert!(kv.counters_hit_below(&[("windowed", 5)], Duration::from_millis(300)).await.unwrap());
    sleep(Duration::from_millis(450)).await;
    assert_eq!(kv.counter_get("windowed").await.unwrap(), 0);
}

async fn check_concurrent_hits_below_limit(kv: &Kv) {
    const LIMIT: u64 = 5;
    let mut hits = tokio::task::JoinSet::new();
    for _ in 0..4 * LIMIT {
        let kv = kv.clone();
        hits.spawn(async move { kv.counters_hit_below(&[("busy", LIMIT)], LONG).await.unwrap() });
    }
    let n_counted = hits.join_all().await.into_iter().filter(|counted| *counted).count();
    assert_eq!(u64::try_from(n_counted).unwrap(), LIMIT);
    assert_eq!(kv.counter_get("busy").await.unwrap(), LIMIT);
}

async fn check_counter_undo_hit(kv: &Kv) {
    assert_eq!(kv.counter_hit("undo", Duration::from_millis(400)).await.unwrap(), 1);
    assert_eq!(kv.counter_hit("undo", Duration::from_millis(400)).await.unwrap(), 2);
    kv.counter_undo_hit("undo").await.unwrap();
    assert_eq!(kv.counter_get("undo").await.unwrap(), 1);
    kv.counter_undo_hit("undo").await.unwrap();
    kv.counter_undo_hit("undo").await.unwrap();
    assert_eq!(kv.counter_get("undo").await.unwrap(), 0);
    assert_eq!(kv.counter_hit("undo", LONG).await.unwrap(), 1, "never below zero");
    // The counter keeps its first window, so it still expires on time.
    sleep(Duration::from_millis(550)).await;
    assert_eq!(kv.counter_get("undo").await.unwrap(), 0);

    // Undoing a hit on an absent counter creates nothing.
    kv.counter_undo_hit("never-hit").await.unwrap();
    assert_eq!(kv.counter_hit("never-hit", LONG).await.unwrap(), 1);
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

    let subscribed = subscription.subscribed();
    assert!(subscribed.get());
    shutdown.cancel();
    let after_shutdown = tokio::time::timeout(PATIENCE, subscription.recv()).await.unwrap();
    assert_eq!(after_shutdown, None);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while subscribed.get() {
        assert!(tokio::time::Instant::now() < deadline, "an ended subscription still says it receives");
        sleep(Duration::from_millis(10)).await;
    }
}

async fn check_messages_dropped_for_a_consumer_too_far_behind_are_counted(kv: &Kv) {
    let shutdown = CancellationToken::new();
    let mut subscription = kv.subscribe("flood", shutdown.clone()).await.unwrap();
    let subscribed = subscription.subscribed();
    // Nothing is read while these arrive: all but a buffer's worth are dropped.
    for n in 0..kv::SUBSCRIPTION_BUFFER + 5 {
        kv.publish("flood", n.to_string().as_bytes()).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while subscribed.n_dropped() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "dropped {} of 5", subscribed.n_dropped());
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(subscribed.n_dropped(), 5);
    recv_soon(&mut subscription).await;
    shutdown.cancel();
}

async fn check_subscription_byte_budget(kv: &Kv) {
    const MESSAGE_BYTES: usize = 1 << 20;
    let fitting = kv::SUBSCRIPTION_BUFFER_BYTES / MESSAGE_BYTES;
    let shutdown = CancellationToken::new();
    let mut subscription = kv.subscribe("big", shutdown.clone()).await.unwrap();
    let subscribed = subscription.subscribed();
    // Far fewer messages than the buffer's count, but more bytes than its budget, all unread.
    for n in 0..fitting + 3 {
        let mut payload = vec![0_u8; MESSAGE_BYTES];
        payload[0] = u8::try_from(n).unwrap();
        kv.publish("big", &payload).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while subscribed.n_dropped() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "dropped {} of 3", subscribed.n_dropped());
        sleep(Duration::from_millis(10)).await;
    }
    for n in 0..fitting {
        let payload = recv_soon(&mut subscription).await;
        assert_eq!((payload.len(), usize::from(payload[0])), (MESSAGE_BYTES, n), "the oldest are kept");
    }
    assert_silent(&mut subscription).await;
    assert_eq!(subscribed.n_dropped(), 3);

    // Read, the budget is free again.
    kv.publish("big", &[7; MESSAGE_BYTES]).await.unwrap();
    assert_eq!(recv_soon(&mut subscription).await.len(), MESSAGE_BYTES);
    shutdown.cancel();
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

    a.session_put("ee01", "acct-5", b"a's", LONG, LONG, MANY).await.unwrap();
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

// --- Waiting queues (kv::queue) ---

fn ticket(player_id: &str, mode: &str, rating: f64, enqueued_at_ms: u64) -> QueueTicket {
    QueueTicket {
        player_id: player_id.to_owned(),
        mode: mode.to_owned(),
        rating,
        enqueued_at_ms,
        away_since_ms: None,
    }
}

fn group(players: &[&str]) -> Vec<String> {
    players.iter().map(|player| (*player).to_owned()).collect()
}

async fn check_queue_one_ticket_per_player(kv: &Kv) {
    assert_eq!(kv.queue_join("mm", "b", "duel", 1500.0, 20).await.unwrap(), QueueJoin::Joined);
    assert_eq!(kv.queue_join("mm", "a", "duel", 1516.5, 10).await.unwrap(), QueueJoin::Joined);
    assert_eq!(kv.queue_join("mm", "c", "team", 1400.0, 5).await.unwrap(), QueueJoin::Joined);
    // A player waits in one mode at a time, whichever they ask for next.
    let again = kv.queue_join("mm", "a", "team", 1516.5, 30).await.unwrap();
    assert_eq!(again, QueueJoin::AlreadyQueued { mode: "duel".into() });
    assert_eq!(
        kv.queue_tickets("mm", "duel").await.unwrap(),
        vec![ticket("a", "duel", 1516.5, 10), ticket("b", "duel", 1500.0, 20)]
    );
    assert_eq!(kv.queue_tickets("mm", "team").await.unwrap(), vec![ticket("c", "team", 1400.0, 5)]);
    assert_eq!(kv.queue_ticket("mm", "a").await.unwrap(), Some(ticket("a", "duel", 1516.5, 10)));
    assert_eq!(kv.queue_ticket("mm", "zz").await.unwrap(), None);
    // Queues are separate by name.
    assert!(kv.queue_tickets("other", "duel").await.unwrap().is_empty());
}

async fn check_queue_leave(kv: &Kv) {
    kv.queue_join("mm", "a", "duel", 1500.0, 10).await.unwrap();
    assert_eq!(kv.queue_leave("mm", "a").await.unwrap(), Some(ticket("a", "duel", 1500.0, 10)));
    assert_eq!(kv.queue_leave("mm", "a").await.unwrap(), None);
    assert!(kv.queue_tickets("mm", "duel").await.unwrap().is_empty());
    // Having left, the player may join another mode.
    assert_eq!(kv.queue_join("mm", "a", "team", 1500.0, 11).await.unwrap(), QueueJoin::Joined);
}

async fn check_queue_claim_whole_groups(kv: &Kv) {
    for (player, at) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        kv.queue_join("mm", player, "duel", 1500.0, at).await.unwrap();
    }
    kv.queue_join("mm", "t", "team", 1500.0, 5).await.unwrap();
    kv.queue_leave("mm", "d").await.unwrap();
    let claimed = kv
        .queue_claim(
            "mm",
            "duel",
            &[group(&["a", "b"]), group(&["c", "d"]), group(&["b", "c"]), group(&["c", "t"])],
            50,
        )
        .await
        .unwrap();
    // (a, b) is taken; (c, d) fails on the departed d; (b, c) fails on b, claimed just before;
    // (c, t) fails since t waits in another mode. c keeps waiting.
    assert_eq!(claimed, [true, false, false, false]);
    assert_eq!(kv.queue_tickets("mm", "duel").await.unwrap(), vec![ticket("c", "duel", 1500.0, 3)]);
    assert_eq!(kv.queue_ticket("mm", "t").await.unwrap(), Some(ticket("t", "team", 1500.0, 5)));
    assert!(kv.queue_claim("mm", "duel", &[], 50).await.unwrap().is_empty());
    // Claimed, a and b keep their tickets (a second join is refused) until their match settles.
    assert_eq!(kv.queue_claimed("mm").await.unwrap(), [("a".to_owned(), 50), ("b".to_owned(), 50)]);
    assert_eq!(kv.queue_ticket("mm", "a").await.unwrap(), Some(ticket("a", "duel", 1500.0, 1)));
    assert!(matches!(
        kv.queue_join("mm", "a", "duel", 1500.0, 60).await.unwrap(),
        QueueJoin::AlreadyQueued { .. }
    ));
    assert_eq!(kv.queue_settle("mm", &group(&["a", "b", "c"])).await.unwrap(), 2, "c was never claimed");
    assert_eq!(kv.queue_ticket("mm", "a").await.unwrap(), None);
    assert!(kv.queue_claimed("mm").await.unwrap().is_empty());
    assert_eq!(kv.queue_tickets("mm", "duel").await.unwrap(), vec![ticket("c", "duel", 1500.0, 3)]);
}

async fn check_queue_unclaim(kv: &Kv) {
    for (player, at) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        kv.queue_join("mm", player, "duel", 1500.0, at).await.unwrap();
    }
    let claimed = kv.queue_claim("mm", "duel", &[group(&["a", "b"]), group(&["c", "d"])], 50).await.unwrap();
    assert_eq!(claimed, [true, true]);
    assert!(kv.queue_tickets("mm", "duel").await.unwrap().is_empty());
    // While the matches are being recorded: a leaves (no longer waiting, so nothing to cancel,
    // but the ticket goes), b's connection ends, c is removed as away.
    assert_eq!(kv.queue_leave("mm", "a").await.unwrap(), None);
    assert_eq!(kv.queue_ticket("mm", "a").await.unwrap(), None);
    assert!(kv.queue_set_away("mm", "b", Some(55)).await.unwrap());
    assert!(kv.queue_set_away("mm", "c", Some(40)).await.unwrap());
    assert_eq!(kv.queue_remove_away("mm", 45).await.unwrap().len(), 1);
    // Neither match was recorded: only b and d go back, with their places, b still away.
    assert_eq!(kv.queue_unclaim("mm", &group(&["a", "b", "c", "d"])).await.unwrap(), 2);
    let back = kv.queue_tickets("mm", "duel").await.unwrap();
    assert_eq!(
        back,
        vec![
            QueueTicket { away_since_ms: Some(55), ..ticket("b", "duel", 1500.0, 2) },
            ticket("d", "duel", 1500.0, 4)
        ]
    );
    assert!(kv.queue_claimed("mm").await.unwrap().is_empty());
    // Nothing claimed is settled or put back twice.
    assert_eq!(kv.queue_unclaim("mm", &group(&["b", "d"])).await.unwrap(), 0);
    assert_eq!(kv.queue_settle("mm", &group(&["b", "d"])).await.unwrap(), 0);
    assert_eq!(kv.queue_tickets("mm", "duel").await.unwrap().len(), 2);

    // One who leaves a claim and queues again keeps the new ticket when the claim settles.
    kv.queue_join("mm", "e", "duel", 1500.0, 80).await.unwrap();
    assert_eq!(kv.queue_claim("mm", "duel", &[group(&["d", "e"])], 85).await.unwrap(), [true]);
    assert_eq!(kv.queue_leave("mm", "e").await.unwrap(), None);
    assert_eq!(kv.queue_join("mm", "e", "duel", 1500.0, 90).await.unwrap(), QueueJoin::Joined);
    assert_eq!(kv.queue_settle("mm", &group(&["d", "e"])).await.unwrap(), 2);
    let waiting: Vec<(String, u64)> = kv
        .queue_tickets("mm", "duel")
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.player_id, t.enqueued_at_ms))
        .collect();
    assert_eq!(waiting, [("b".to_owned(), 2), ("e".to_owned(), 90)]);
}

async fn check_queue_away(kv: &Kv) {
    kv.queue_join("mm", "a", "duel", 1500.0, 1).await.unwrap();
    kv.queue_join("mm", "b", "duel", 1500.0, 2).await.unwrap();
    kv.queue_join("mm", "c", "duel", 1500.0, 3).await.unwrap();
    assert!(kv.queue_set_away("mm", "a", Some(100)).await.unwrap());
    // A later mark keeps the first.
    assert!(kv.queue_set_away("mm", "a", Some(150)).await.unwrap());
    assert!(kv.queue_set_away("mm", "b", Some(120)).await.unwrap());
    assert!(!kv.queue_set_away("mm", "nobody", Some(100)).await.unwrap());
    let tickets = kv.queue_tickets("mm", "duel").await.unwrap();
    let away: Vec<Option<u64>> = tickets.iter().map(|t| t.away_since_ms).collect();
    assert_eq!(away, [Some(100), Some(120), None]);
    // An away player is not claimed.
    assert_eq!(kv.queue_claim("mm", "duel", &[group(&["a", "c"])], 200).await.unwrap(), [false]);
    // b comes back before the grace ends; a does not.
    assert!(kv.queue_set_away("mm", "b", None).await.unwrap());
    let removed = kv.queue_remove_away("mm", 110).await.unwrap();
    assert_eq!(removed, vec![QueueTicket { away_since_ms: Some(100), ..ticket("a", "duel", 1500.0, 1) }]);
    assert!(kv.queue_remove_away("mm", 1_000).await.unwrap().is_empty());
    let left: Vec<String> =
        kv.queue_tickets("mm", "duel").await.unwrap().into_iter().map(|t| t.player_id).collect();
    assert_eq!(left, ["b", "c"]);
    assert_eq!(kv.queue_claim("mm", "duel", &[group(&["b", "c"])], 200).await.unwrap(), [true]);
}

async fn check_queue_stats(kv: &Kv) {
    assert_eq!(kv.queue_stats("mm", "duel").await.unwrap(), QueueStats::default());
    for (player, at) in [("a", 10), ("b", 20), ("c", 30)] {
        kv.queue_join("mm", player, "duel", 1500.0, at).await.unwrap();
    }
    let stats = kv.queue_stats("mm", "duel").await.unwrap();
    assert_eq!(stats, QueueStats { n_waiting: 3, median_enqueued_at_ms: Some(20) });
    kv.queue_join("mm", "d", "duel", 1500.0, 40).await.unwrap();
    let stats = kv.queue_stats("mm", "duel").await.unwrap();
    assert_eq!(stats, QueueStats { n_waiting: 4, median_enqueued_at_ms: Some(30) });
}
