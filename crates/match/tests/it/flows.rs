//! The domain's behaviours end to end: queueing, the matchmaker's passes with time moved by hand,
//! claims under concurrency, disconnects, results and the queries.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use matchmaking::{MatchError, MatchOutcome, MatchmakingConfig, ModeConfig, ReportStatus, Reporter};
use uuid::Uuid;

use crate::support::{T0, World, player};

fn config() -> MatchmakingConfig {
    MatchmakingConfig {
        modes: vec![ModeConfig::new("duel", 1, 2), ModeConfig::new("team", 2, 2)],
        window_initial: 50.0,
        window_widen_per_sec: 10.0,
        window_max: 400.0,
        disconnect_grace: Duration::from_secs(30),
        ..MatchmakingConfig::default()
    }
}

/// Plays a 1v1 to its end: `winner` beats `loser`. The clock moves 40 s after queueing, so the
/// windows are at their widest and any two ratings within 400 match.
async fn play(
    world: &World,
    mm: &matchmaking::Matchmaking,
    winner: Uuid,
    loser: Uuid,
) -> matchmaking::MatchDetails {
    mm.queue(winner, "duel").await.unwrap();
    mm.queue(loser, "duel").await.unwrap();
    world.clock.advance(Duration::from_secs(40));
    let formed = mm.tick("h").await.unwrap().formed;
    assert_eq!(formed.len(), 1, "{formed:?}");
    let team = formed[0].teams.iter().position(|team| team[0].account_id == winner).unwrap();
    let receipt =
        mm.report(formed[0].match_id, Reporter::Service, MatchOutcome::Winner(team as u32)).await.unwrap();
    receipt.details
}

#[tokio::test]
async fn window_widens_with_waiting_time_until_the_pair_matches() {
    let world = World::new();
    let mm = world.matchmaking(config()).await;
    let (low, high) = (player(), player());
    let first = play(&world, &mm, high, low).await;
    let high_rating =
        first.teams.iter().flatten().find(|p| p.account_id == high).unwrap().rating_after.unwrap();
    let low_rating =
        first.teams.iter().flatten().find(|p| p.account_id == low).unwrap().rating_after.unwrap();
    assert_eq!((high_rating, low_rating), (1516.0, 1484.0));

    // 32 apart: within the initial window of 50 at once.
    mm.queue(high, "duel").await.unwrap();
    mm.queue(low, "duel").await.unwrap();
    assert_eq!(mm.tick("h").await.unwrap().formed.len(), 1);

    // A rival who beat four newcomers is rated about 60 above the next newcomer: more than the
    // initial window of 50.
    let (rival, newcomer) = (player(), player());
    for _ in 0..4 {
        play(&world, &mm, rival, player()).await;
    }
    let gap = mm.rating(rival, "duel").await.unwrap().rating - 1500.0;
    assert!(gap > 55.0 && gap < 65.0, "{gap}");
    mm.queue(rival, "duel").await.unwrap();
    mm.queue(newcomer, "duel").await.unwrap();
    assert!(mm.tick("h").await.unwrap().formed.is_empty(), "outside the initial window");
    // The window reaches the gap after (gap - 50) / 10 seconds, not a moment before.
    let needed_ms = ((gap - 50.0) * 100.0).ceil() as u64;
    world.clock.advance(Duration::from_millis(needed_ms - 1));
    assert!(mm.tick("h").await.unwrap().formed.is_empty(), "one ms too early");
    world.clock.advance(Duration::from_millis(1));
    let formed = mm.tick("h").await.unwrap().formed;
    assert_eq!(formed.len(), 1);
    let mut ids = formed[0].account_ids();
    ids.sort();
    let mut expected = vec![rival, newcomer];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn no_match_is_ever_formed_outside_the_current_windows() {
    let world = World::new();
    let mm = world.matchmaking(config()).await;
    // Ratings are fixed at queue time; spread ratings by reporting results first would be slow,
    // so test fairness on the pass directly with many tickets at many times.
    let window = config().window();
    let mut seed: u64 = 7;
    let mut random = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let tickets: Vec<matchmaking::pass::Ticket> = (0..2000u128)
        .map(|i| matchmaking::pass::Ticket {
            player_id: Uuid::from_u128(i + 1),
            rating: 1000.0 + (random() % 1000) as f64,
            enqueued_at_ms: T0 + random() % 60_000,
        })
        .collect();
    let mut waiting = tickets;
    let mut now = T0 + 60_000;
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let shape = matchmaking::pass::Shape { team_size: 2, n_teams: 2 };
        let proposals = matchmaking::pass::form_matches(&waiting, shape, &window, now);
        for proposal in &proposals {
            let members: Vec<_> = proposal.teams.iter().flatten().collect();
            let low = members.iter().map(|t| t.rating).fold(f64::INFINITY, f64::min);
            let high = members.iter().map(|t| t.rating).fold(f64::NEG_INFINITY, f64::max);
            for member in &members {
                let allowed = window.at(now - member.enqueued_at_ms);
                assert!(high - low <= allowed, "spread {} beyond a window of {allowed}", high - low);
                assert!(seen.insert(member.player_id), "matched twice");
            }
        }
        let matched: HashSet<Uuid> = proposals.iter().flat_map(|p| p.player_ids()).collect();
        waiting.retain(|t| !matched.contains(&t.player_id));
        now += 1_000;
    }
    // With windows up to 400 over ratings spread over 1000, almost everyone is matched.
    assert!(waiting.len() < 100, "{} left", waiting.len());
    drop(mm);
}

#[tokio::test]
async fn concurrent_queueing_and_cancelling_never_matches_anyone_twice_or_after_leaving() {
    let world = World::new();
    let first = world.matchmaking(config()).await;
    let second = world.matchmaking(config()).await;
    let players: Vec<Uuid> = (0..300).map(|_| player()).collect();
    let mut left_tasks = Vec::new();
    for (i, &account_id) in players.iter().enumerate() {
        let mm = if i % 2 == 0 { first.clone() } else { second.clone() };
        left_tasks.push(tokio::spawn(async move {
            let mode = if i % 3 == 0 { "team" } else { "duel" };
            mm.queue(account_id, mode).await.unwrap();
            tokio::task::yield_now().await;
            // Every fourth player cancels; whether before or after being matched is a race.
            (i % 4 == 0 && mm.leave(account_id).await.unwrap()).then_some(account_id)
        }));
    }
    let matchmakers: Vec<_> = [(first.clone(), "one"), (second.clone(), "two")]
        .into_iter()
        .map(|(mm, holder)| {
            tokio::spawn(async move {
                let mut formed = Vec::new();
                for _ in 0..30 {
                    formed.extend(mm.tick(holder).await.unwrap().formed.into_iter().map(|m| (holder, m)));
                    tokio::task::yield_now().await;
                }
                formed
            })
        })
        .collect();
    let mut left = HashSet::new();
    for task in left_tasks {
        left.extend(task.await.unwrap());
    }
    let mut formed = Vec::new();
    for task in matchmakers {
        formed.extend(task.await.unwrap());
    }
    // Drain what is left with one more pass.
    formed.extend(first.tick("one").await.unwrap().formed.into_iter().map(|m| ("one", m)));
    let holders: HashSet<&str> = formed.iter().map(|(holder, _)| *holder).collect();
    assert_eq!(holders.len(), 1, "only the lease holder forms matches");
    let mut times_matched: HashMap<Uuid, u32> = HashMap::new();
    for (_, details) in &formed {
        for account_id in details.account_ids() {
            *times_matched.entry(account_id).or_default() += 1;
        }
    }
    assert!(times_matched.values().all(|&n| n == 1), "someone was matched twice");
    assert!(
        left.iter().all(|account_id| !times_matched.contains_key(account_id)),
        "a cancelled ticket was matched"
    );
    // Everyone else was matched or still waits; nobody vanished.
    for account_id in &players {
        let waits = first.ticket(*account_id).await.unwrap().is_some();
        let matched = times_matched.contains_key(account_id);
        let cancelled = left.contains(account_id);
        assert_eq!(u8::from(waits) + u8::from(matched) + u8::from(cancelled), 1, "{account_id}");
    }
    assert!(formed.len() > 50, "{} matches", formed.len());
    // Every formed match is recorded.
    for (_, details) in formed.iter().take(5) {
        assert_eq!(first.details(details.match_id).await.unwrap().account_ids(), details.account_ids());
    }
}

#[tokio::test]
async fn a_disconnected_player_is_not_matched_and_loses_the_ticket_after_the_grace() {
    let world = World::new();
    let mm = world.matchmaking(config()).await;
    let (gone, back, other) = (player(), player(), player());
    mm.queue(gone, "duel").await.unwrap();
    mm.queue(back, "duel").await.unwrap();
    assert!(mm.disconnected(gone).await.unwrap());
    assert!(mm.disconnected(back).await.unwrap());
    assert!(mm.tick("h").await.unwrap().formed.is_empty(), "away players are not matched");
    world.clock.advance(Duration::from_secs(29));
    assert!(mm.connected(back).await.unwrap());
    assert!(mm.tick("h").await.unwrap().formed.is_empty());
    assert!(mm.ticket(gone).await.unwrap().is_some(), "still within the grace");
    world.clock.advance(Duration::from_secs(1));
    assert!(mm.tick("h").await.unwrap().formed.is_empty());
    assert_eq!(mm.ticket(gone).await.unwrap(), None, "removed after the grace");
    mm.queue(other, "duel").await.unwrap();
    let formed = mm.tick("h").await.unwrap().formed;
    let mut ids = formed[0].account_ids();
    ids.sort();
    let mut expected = vec![back, other];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_mode_whose_matches_cannot_be_recorded_loses_no_other_mode_and_no_place_in_line() {
    let world = World::new();
    let mm = world.matchmaking(config()).await;
    // `match.db` refuses team matches, as a full disk or a broken shard would refuse them all.
    let db = rusqlite::Connection::open(world.dir.path().join("match.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_team BEFORE INSERT ON matches WHEN NEW.mode = 'team'
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .unwrap();
    let duelists = [player(), player()];
    let team_players = [player(), player(), player(), player()];
    for duelist in duelists {
        mm.queue(duelist, "duel").await.unwrap();
    }
    for team_player in team_players {
        mm.queue(team_player, "team").await.unwrap();
    }
    world.clock.advance(Duration::from_secs(20));

    let tick = mm.tick("h").await.unwrap();
    assert!(matches!(tick.failed, Some(MatchError::Shard(_))), "{:?}", tick.failed);
    let modes: Vec<&str> = tick.formed.iter().map(|formed| formed.mode.as_str()).collect();
    assert_eq!(modes, ["duel"], "the duel was recorded, so its players must be told");
    for team_player in team_players {
        let ticket = mm.ticket(team_player).await.unwrap().expect("back in the queue");
        assert_eq!(ticket.enqueued_at_ms, T0, "with the place they had");
    }

    db.execute_batch("DROP TRIGGER refuse_team").unwrap();
    let tick = mm.tick("h").await.unwrap();
    assert!(tick.failed.is_none(), "{:?}", tick.failed);
    let mut matched = tick.formed[0].account_ids();
    matched.sort();
    let mut expected = team_players.to_vec();
    expected.sort();
    assert_eq!(matched, expected);
}

/// While a pass's matches wait on `match.db` their players hold no place in line, but what they
/// do meanwhile counts: when recording fails, one who left stays out, and one whose connection
/// ended goes back marked away and is removed after the grace, never matched.
#[tokio::test]
async fn players_who_leave_or_go_while_their_match_fails_to_record_are_never_matched() {
    let world = World::new();
    let kv = kv::Kv::connect_redis(&world.redis.url(), "t:").await.unwrap();
    let shard =
        shard::ShardConfig { busy_timeout: Duration::from_millis(500), ..shard::ShardConfig::default() };
    let mm = matchmaking::Matchmaking::open(
        world.dir.path().join("match.db"),
        kv,
        world.clock.clone(),
        config(),
        &shard,
    )
    .await
    .unwrap();
    let [leaver, partner, goner, other] = [player(), player(), player(), player()];
    for duelist in [leaver, partner, goner, other] {
        mm.queue(duelist, "duel").await.unwrap();
    }
    world.clock.advance(Duration::from_secs(1));

    let blocker = rusqlite::Connection::open(world.dir.path().join("match.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let ticking = tokio::spawn({
        let mm = mm.clone();
        async move { mm.tick("h").await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!mm.leave(leaver).await.unwrap(), "being matched, no longer waiting");
    assert!(mm.disconnected(goner).await.unwrap());
    let tick = ticking.await.unwrap();
    blocker.execute_batch("ROLLBACK").unwrap();
    assert!(matches!(tick.failed, Some(MatchError::Shard(_))), "{:?}", tick.failed);
    assert!(mm.ticket(leaver).await.unwrap().is_none());
    let kv = kv::Kv::connect_redis(&world.redis.url(), "t:").await.unwrap();
    let back = kv.queue_ticket("match", &goner.to_string()).await.unwrap();
    assert!(back.is_some_and(|ticket| ticket.away_since_ms.is_some()), "back, and away");
    assert_eq!(mm.ticket(partner).await.unwrap().map(|ticket| ticket.enqueued_at_ms), Some(T0));

    world.clock.advance(Duration::from_secs(60));
    let tick = mm.tick("h").await.unwrap();
    assert!(tick.failed.is_none(), "{:?}", tick.failed);
    let matched: Vec<Vec<Uuid>> = tick.formed.iter().map(|formed| formed.account_ids()).collect();
    assert_eq!(matched.len(), 1, "{matched:?}");
    let mut matched = matched[0].clone();
    matched.sort();
    let mut expected = vec![partner, other];
    expected.sort();
    assert_eq!(matched, expected);
    assert!(mm.ticket(goner).await.unwrap().is_none(), "removed after the grace");
}

/// A claim the pass never heard back about (Redis ran it, the answer was lost) is settled by a
/// later tick once older than the lease: its players go back into the queue if no match was
/// recorded, and lose their tickets if one was.
#[tokio::test]
async fn claims_a_pass_never_settled_are_settled_by_a_later_tick() {
    let world = World::new();
    let mm = world.matchmaking(config()).await;
    let kv = kv::Kv::connect_redis(&world.redis.url(), "t:").await.unwrap();
    let (a, b) = (player(), player());
    mm.queue(a, "duel").await.unwrap();
    mm.queue(b, "duel").await.unwrap();
    let group = vec![a.to_string(), b.to_string()];
    assert_eq!(kv.queue_claim("match", "duel", std::slice::from_ref(&group), T0).await.unwrap(), [true]);

    world.clock.advance(Duration::from_secs(1));
    assert!(mm.tick("h").await.unwrap().formed.is_empty(), "within the lease the claim is left alone");
    world.clock.advance(Duration::from_secs(10));
    let tick = mm.tick("h").await.unwrap();
    assert_eq!(tick.formed.len(), 1, "put back, then matched: {:?}", tick.failed);
    let recorded_at = tick.formed[0].created_at_ms;
    assert!(kv.queue_claimed("match").await.unwrap().is_empty());
    assert!(mm.ticket(a).await.unwrap().is_none());

    // A pass that recorded its match but stopped before settling the claim.
    mm.queue(a, "duel").await.unwrap();
    mm.queue(b, "duel").await.unwrap();
    assert_eq!(kv.queue_claim("match", "duel", &[group], recorded_at).await.unwrap(), [true]);
    world.clock.advance(Duration::from_secs(10));
    let tick = mm.tick("h").await.unwrap();
    assert!(tick.formed.is_empty(), "never matched twice");
    assert!(mm.ticket(a).await.unwrap().is_none() && mm.ticket(b).await.unwrap().is_none());
    assert!(kv.queue_claimed("match").await.unwrap().is_empty());
}

#[tokio::test]
async fn processes_sharing_match_db_record_results_at_the_same_time() {
    let world = World::new();
    let (one, two) = (world.matchmaking(config()).await, world.matchmaking(config()).await);
    for _ in 0..200 {
        one.queue(player(), "duel").await.unwrap();
    }
    let formed = one.tick("h").await.unwrap().formed;
    assert_eq!(formed.len(), 100);
    let mut reports = tokio::task::JoinSet::new();
    for (index, game) in formed.iter().enumerate() {
        let process = if index % 2 == 0 { one.clone() } else { two.clone() };
        let match_id = game.match_id;
        reports
            .spawn(async move { process.report(match_id, Reporter::Service, MatchOutcome::Winner(0)).await });
    }
    while let Some(report) = reports.join_next().await {
        assert_eq!(report.unwrap().unwrap().status, ReportStatus::Finished);
    }
}

#[tokio::test]
async fn results_are_idempotent_and_conflicts_refused() {
    let world = World::new();
    let mm = world.matchmaking(config()).await;
    let (a, b, outsider) = (player(), player(), player());

    // A trusted report decides at once; repeating it changes nothing.
    mm.queue(a, "duel").await.unwrap();
    mm.queue(b, "duel").await.unwrap();
    let formed = mm.tick("h").await.unwrap().formed;
    let match_id = formed[0].match_id;
    let a_team = formed[0].teams.iter().position(|t| t[0].account_id == a).unwrap() as u32;
    let receipt = mm.report(match_id, Reporter::Service, MatchOutcome::Winner(a_team)).await.unwrap();
    assert_eq!((receipt.status, receipt.replayed), (ReportStatus::Finished, false));
    let again = mm.report(match_id, Reporter::Service, MatchOutcome::Winner(a_team)).await.unwrap();
    assert_eq!((again.status, again.replayed), (ReportStatus::Finished, true));
    assert!(matches!(
        mm.report(match_id, Reporter::Service, MatchOutcome::Draw).await,
        Err(MatchError::ResultConflict(_))
    ));
    assert!(matches!(
        mm.report(match_id, Reporter::Player(a), MatchOutcome::Winner(1 - a_team)).await,
        Err(MatchError::ResultConflict(_))
    ));
    let rating = mm.rating(a, "duel").await.unwrap();
    assert_eq!((rating.rating, rating.games, rating.wins, rating.rank), (1516.0, 1, 1, Some(1)));
    assert_eq!(mm.rating(b, "duel").await.unwrap().rating, 1484.0);

    // Players: the result stands once both agree.
    world.clock.advance(Duration::from_secs(1));
    mm.queue(a, "duel").await.unwrap();
    mm.queue(b, "duel").await.unwrap();
    let match_id = mm.tick("h").await.unwrap().formed[0].match_id;
    let details = mm.details(match_id).await.unwrap();
    let b_team = details.teams.iter().position(|t| t[0].account_id == b).unwrap() as u32;
    let b_wins = MatchOutcome::Winner(b_team);
    let first = mm.report(match_id, Reporter::Player(a), b_wins).await.unwrap();
    assert_eq!((first.status, first.replayed), (ReportStatus::AwaitingOthers, false));
    let repeat = mm.report(match_id, Reporter::Player(a), b_wins).await.unwrap();
    assert_eq!((repeat.status, repeat.replayed), (ReportStatus::AwaitingOthers, true));
    assert!(matches!(
        mm.report(match_id, Reporter::Player(a), MatchOutcome::Draw).await,
        Err(MatchError::ResultConflict(_))
    ));
    assert!(matches!(
        mm.report(match_id, Reporter::Player(outsider), b_wins).await,
        Err(MatchError::NotParticipant)
    ));
    assert!(matches!(
        mm.report(match_id, Reporter::Player(b), MatchOutcome::Winner(2)).await,
        Err(MatchError::InvalidRequest(_))
    ));
    assert!(matches!(
        mm.report(Uuid::now_v7(), Reporter::Service, b_wins).await,
        Err(MatchError::UnknownMatch(_))
    ));
    let done = mm.report(match_id, Reporter::Player(b), b_wins).await.unwrap();
    assert_eq!(done.status, ReportStatus::Finished);
    // b (1484) beat a (1516): expected 0.454, so b gains 32 × 0.546 = 17.47.
    let b_after = mm.rating(b, "duel").await.unwrap().rating;
    assert!((b_after - 1501.47).abs() < 0.01, "{b_after}");
    let a_after = mm.rating(a, "duel").await.unwrap().rating;
    assert!((a_after + b_after - 3000.0).abs() < 1e-9, "Elo conserves the sum");

    // Disagreeing players leave the match disputed for a trusted caller.
    world.clock.advance(Duration::from_secs(1));
    mm.queue(a, "duel").await.unwrap();
    mm.queue(b, "duel").await.unwrap();
    let match_id = mm.tick("h").await.unwrap().formed[0].match_id;
    mm.report(match_id, Reporter::Player(a), MatchOutcome::Winner(0)).await.unwrap();
    let disputed = mm.report(match_id, Reporter::Player(b), MatchOutcome::Winner(1)).await.unwrap();
    assert_eq!(disputed.status, ReportStatus::Disputed);
    assert!(disputed.details.disputed);
    let settled = mm.report(match_id, Reporter::Service, MatchOutcome::Draw).await.unwrap();
    assert_eq!(settled.status, ReportStatus::Finished);
}

#[tokio::test]
async fn bad_input_is_refused() {
    let world = World::new();
    let mm = world.matchmaking(config()).await;
    let a = player();
    assert!(matches!(mm.queue(a, "battle-royale").await, Err(MatchError::UnknownMode(_))));
    mm.queue(a, "duel").await.unwrap();
    match mm.queue(a, "team").await {
        Err(MatchError::AlreadyQueued { mode }) => assert_eq!(mode, "duel"),
        other => panic!("{other:?}"),
    }
    assert!(mm.leave(a).await.unwrap());
    assert!(!mm.leave(a).await.unwrap());
    assert!(matches!(mm.history(a, None, 0).await, Err(MatchError::InvalidRequest(_))));
    assert!(matches!(mm.leaderboard("duel", 1000).await, Err(MatchError::InvalidRequest(_))));
    assert!(matches!(mm.rating(a, "nope").await, Err(MatchError::UnknownMode(_))));
    let bad = MatchmakingConfig { modes: vec![ModeConfig::new("solo", 1, 1)], ..config() };
    assert!(matches!(bad.validate(), Err(MatchError::Config(_))));
    let parsed: MatchmakingConfig =
        toml::from_str("interval = 0.5\n[[modes]]\nname = \"squad\"\nteam_size = 4\nn_teams = 2\n").unwrap();
    assert_eq!(parsed.modes, vec![ModeConfig::new("squad", 4, 2)]);
    assert_eq!(parsed.interval, Duration::from_millis(500));
    parsed.validate().unwrap();
}

#[test]
fn a_k_factor_that_could_drive_ratings_past_any_finite_value_is_refused() {
    // Each result moves a rating by at most K, so a bounded K keeps every rating finite; with
    // K = f64::MAX two wins already reach f64::MAX, and the next match makes it infinite.
    for k_factor in [f64::MAX, 1e300, matchmaking::K_FACTOR_MAX * 2.0] {
        let config = MatchmakingConfig { k_factor, ..config() };
        assert!(matches!(config.validate(), Err(MatchError::Config(_))), "{k_factor}");
    }
    MatchmakingConfig { k_factor: matchmaking::K_FACTOR_MAX, ..config() }.validate().unwrap();
}

#[tokio::test]
async fn history_pages_newest_first_and_leaderboards_rank_by_rating() {
    let world = World::new();
    let mm = world.matchmaking(config()).await;
    let (star, rookie) = (player(), player());
    let mut ids = Vec::new();
    for _ in 0..5 {
        world.clock.advance(Duration::from_secs(1));
        ids.push(play(&world, &mm, star, rookie).await.match_id);
    }
    let page = mm.history(star, None, 2).await.unwrap();
    let page_ids: Vec<Uuid> = page.iter().map(|m| m.match_id).collect();
    assert_eq!(page_ids, [ids[4], ids[3]]);
    let next = mm.history(star, Some(ids[3]), 10).await.unwrap();
    let next_ids: Vec<Uuid> = next.iter().map(|m| m.match_id).collect();
    assert_eq!(next_ids, [ids[2], ids[1], ids[0]]);
    assert!(mm.history(player(), None, 10).await.unwrap().is_empty());

    // Three more players between them.
    let middle: Vec<Uuid> = (0..3).map(|_| player()).collect();
    for &m in &middle {
        play(&world, &mm, m, player()).await;
    }
    let top = mm.leaderboard("duel", 2).await.unwrap();
    assert_eq!(top[0].account_id, star);
    assert_eq!(top.iter().map(|e| e.rank).collect::<Vec<_>>(), [1, 2]);
    let around = mm.around(rookie, "duel", 2).await.unwrap();
    let rookie_rank = mm.rating(rookie, "duel").await.unwrap().rank.unwrap();
    let me = around.iter().find(|e| e.account_id == rookie).unwrap();
    assert_eq!(me.rank, rookie_rank);
    assert!(around.windows(2).all(|w| w[0].rank + 1 == w[1].rank && w[0].rating >= w[1].rating));
    assert_eq!(around.len(), 3, "the rookie is last: two above, none below");

    // Queue statistics: the median wait of those waiting.
    for seconds in [30, 20, 10] {
        mm.queue(player(), "team").await.unwrap();
        world.clock.advance(Duration::from_secs(seconds));
    }
    let stats = mm.queue_stats().await.unwrap();
    assert_eq!(stats[0].n_waiting, 0);
    assert_eq!((stats[1].mode.as_str(), stats[1].n_waiting, stats[1].median_wait_ms), ("team", 3, 30_000));
}
