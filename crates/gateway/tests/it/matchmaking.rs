//! Matchmaking through real gateways: two in-process gateways sharing one Redis and data
//! directory (one matchmaker between them), `match_found` and `match_finished` events, results
//! from the service token and from players, disconnects, and bad input.

use std::time::Duration;

use game_client::{Client, ClientError};
use gateway::GatewayConfig;
use gateway::config::ServiceToken;
use proto::matchmaking::{MatchEvent, MatchInfo, MatchReply, MatchRequest, ReportStatus};
use proto::{AccountId, ErrorCode, Event, Reply, Request};
use uuid::Uuid;

use crate::support::{PATIENCE, World, admin, code, username};

const TOKEN: &str = "service-token-for-match-tests-0123";

fn config(world: &World) -> GatewayConfig {
    let mut config = GatewayConfig { service_token: Some(ServiceToken::new(TOKEN)), ..world.config() };
    config.matchmaking.interval = Duration::from_millis(50);
    config
}

async fn call(client: &Client, request: MatchRequest) -> Result<MatchReply, ClientError> {
    match client.request(Request::Match(request)).await? {
        Reply::Match(reply) => Ok(reply),
        other => panic!("unexpected {other:?}"),
    }
}

/// The next matchmaking event of `client`, skipping others.
async fn match_event(client: &Client) -> MatchEvent {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match client.next_event().await {
                Some(Event::Match(event)) => return event,
                Some(_) => {}
                None => panic!("connection closed while waiting for a match event"),
            }
        }
    })
    .await
    .expect("a match event arrives")
}

async fn found(client: &Client) -> (Uuid, Vec<Vec<AccountId>>) {
    match match_event(client).await {
        MatchEvent::MatchFound { match_id, teams, .. } => (match_id, teams),
        other => panic!("expected match_found, got {other:?}"),
    }
}

async fn finished(client: &Client) -> MatchInfo {
    match match_event(client).await {
        MatchEvent::MatchFinished(info) => info,
        other => panic!("expected match_finished, got {other:?}"),
    }
}

fn team_of(teams: &[Vec<AccountId>], account_id: AccountId) -> u32 {
    teams.iter().position(|team| team.contains(&account_id)).unwrap() as u32
}

#[tokio::test]
async fn two_gateways_share_one_queue_and_the_service_reports_the_result_once() {
    let world = World::new();
    let one = world.gateway_with(config(&world)).await;
    let two = world.gateway_with(config(&world)).await;
    let (ada, ada_session) = one.player(&username("ada")).await;
    let (bob, bob_session) = two.player(&username("bob")).await;

    let MatchReply::Modes { modes } = call(&ada, MatchRequest::Modes).await.unwrap() else { panic!() };
    assert_eq!(modes.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["duel", "team"]);
    let queued = call(&ada, MatchRequest::Queue { mode: "duel".into() }).await.unwrap();
    assert!(matches!(queued, MatchReply::Queued { rating: 1500.0, .. }), "{queued:?}");
    call(&bob, MatchRequest::Queue { mode: "duel".into() }).await.unwrap();

    // One match, found on both gateways, by whichever process holds the matchmaker lease.
    let (match_id, teams) = found(&ada).await;
    let (bob_match, _) = found(&bob).await;
    assert_eq!(match_id, bob_match);
    assert_eq!(teams.iter().flatten().count(), 2);
    let MatchReply::Left { was_queued } = call(&ada, MatchRequest::Leave).await.unwrap() else { panic!() };
    assert!(!was_queued, "a matched player has left the queue");

    // A body that forgets the winner is refused, not taken for a draw.
    let (status, answer) =
        admin(two.admin, "POST", &format!("/match/{match_id}/result"), Some(TOKEN), "{}").await;
    assert_eq!(status, 400, "{answer}");

    // The game server reports: ada's team wins.
    let ada_team = team_of(&teams, ada_session.account_id);
    let body = format!(r#"{{"winner":{ada_team}}}"#);
    let (status, answer) =
        admin(two.admin, "POST", &format!("/match/{match_id}/result"), Some(TOKEN), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""replayed":false"#), "{answer}");
    let info = finished(&ada).await;
    assert_eq!(finished(&bob).await, info);
    assert_eq!(info.winner, Some(ada_team));
    let ratings: Vec<f64> = info.teams.iter().flatten().filter_map(|p| p.rating_after).collect();
    assert_eq!(ratings.iter().sum::<f64>(), 3000.0);

    // Idempotent: the same report again changes nothing; another one conflicts; a bad token is refused.
    let (status, answer) =
        admin(one.admin, "POST", &format!("/match/{match_id}/result"), Some(TOKEN), &body).await;
    assert_eq!(status, 200);
    assert!(answer.contains(r#""replayed":true"#), "{answer}");
    let (status, _) =
        admin(one.admin, "POST", &format!("/match/{match_id}/result"), Some(TOKEN), r#"{"winner":null}"#)
            .await;
    assert_eq!(status, 409);
    let (status, _) =
        admin(one.admin, "POST", &format!("/match/{match_id}/result"), Some("wrong-token-0123456789"), &body)
            .await;
    assert_eq!(status, 401);

    // Queries see it from either gateway.
    let MatchReply::Rating(rating) =
        call(&bob, MatchRequest::Rating { mode: "duel".into(), account_id: Some(ada_session.account_id) })
            .await
            .unwrap()
    else {
        panic!()
    };
    assert_eq!((rating.rating, rating.rank, rating.wins), (1516.0, Some(1), 1));
    let MatchReply::History { matches } =
        call(&bob, MatchRequest::History { before: None, limit: 10 }).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].match_id, match_id);
    let MatchReply::Leaderboard { entries } =
        call(&ada, MatchRequest::Leaderboard { mode: "duel".into(), limit: 10 }).await.unwrap()
    else {
        panic!()
    };
    let order: Vec<AccountId> = entries.iter().map(|e| e.account_id).collect();
    assert_eq!(order, [ada_session.account_id, bob_session.account_id]);
    let MatchReply::Leaderboard { entries } =
        call(&bob, MatchRequest::AroundMe { mode: "duel".into(), n: 5 }).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(entries.iter().map(|e| e.rank).collect::<Vec<_>>(), [1, 2]);
    drop((one, two));
}

#[tokio::test]
async fn players_agree_on_a_result_and_bad_reports_are_refused() {
    let world = World::new();
    let gateway = world.gateway_with(config(&world)).await;
    let (ada, ada_session) = gateway.player(&username("ada")).await;
    let (bob, bob_session) = gateway.player(&username("bob")).await;
    let (eve, _) = gateway.player(&username("eve")).await;

    assert_eq!(code(call(&ada, MatchRequest::Queue { mode: "chess".into() }).await), ErrorCode::BadRequest);
    call(&ada, MatchRequest::Queue { mode: "duel".into() }).await.unwrap();
    assert_eq!(code(call(&ada, MatchRequest::Queue { mode: "team".into() }).await), ErrorCode::Conflict);
    call(&bob, MatchRequest::Queue { mode: "duel".into() }).await.unwrap();
    let (match_id, teams) = found(&ada).await;
    found(&bob).await;
    let bob_wins = Some(team_of(&teams, bob_session.account_id));
    let ada_wins = Some(team_of(&teams, ada_session.account_id));

    let report = |winner| MatchRequest::Report { match_id, winner };
    assert_eq!(code(call(&eve, report(bob_wins)).await), ErrorCode::Forbidden);
    assert_eq!(
        code(call(&eve, MatchRequest::Report { match_id: Uuid::now_v7(), winner: None }).await),
        ErrorCode::NotFound
    );
    assert_eq!(code(call(&ada, report(Some(7))).await), ErrorCode::BadRequest);
    let MatchReply::Reported { status, replayed, .. } = call(&ada, report(bob_wins)).await.unwrap() else {
        panic!()
    };
    assert_eq!((status, replayed), (ReportStatus::AwaitingOthers, false));
    let MatchReply::Reported { replayed, .. } = call(&ada, report(bob_wins)).await.unwrap() else { panic!() };
    assert!(replayed);
    assert_eq!(code(call(&ada, report(ada_wins)).await), ErrorCode::Conflict);
    let MatchReply::Reported { status, game, .. } = call(&bob, report(bob_wins)).await.unwrap() else {
        panic!()
    };
    assert_eq!(status, ReportStatus::Finished);
    assert_eq!(game.winner, bob_wins);
    assert_eq!(finished(&ada).await.match_id, match_id);
    assert_eq!(code(call(&bob, report(ada_wins)).await), ErrorCode::Conflict);
    let MatchReply::Match(details) = call(&eve, MatchRequest::Details { match_id }).await.unwrap() else {
        panic!()
    };
    assert!(details.finished);
}

#[tokio::test]
async fn a_player_who_disconnects_or_logs_out_leaves_the_queue_after_the_grace_period() {
    let world = World::new();
    let gateway = world.gateway_with(config(&world)).await;
    let (ada, _) = gateway.player(&username("ada")).await;
    let (bob, _) = gateway.player(&username("bob")).await;
    let (watcher, _) = gateway.player(&username("watcher")).await;
    call(&ada, MatchRequest::Queue { mode: "team".into() }).await.unwrap();
    call(&bob, MatchRequest::Queue { mode: "team".into() }).await.unwrap();
    assert_eq!(waiting(&watcher).await, 2);
    ada.close().await;
    drop(ada);
    // Bob's connection stays open, but nobody is logged in on it any more.
    bob.logout().await.unwrap();
    // Within the grace the tickets stay, however many passes run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(waiting(&watcher).await, 2);
    world.clock.advance(matchmaking_grace() + Duration::from_secs(1));
    tokio::time::timeout(PATIENCE, async {
        while waiting(&watcher).await != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("both tickets are removed after the grace");
}

#[tokio::test]
async fn a_player_still_connected_to_another_gateway_keeps_their_ticket() {
    let world = World::new();
    let one = world.gateway_with(config(&world)).await;
    let two = world.gateway_with(config(&world)).await;
    let ada = username("ada");
    // Ada reconnected through the other gateway before her old connection ended.
    let (old_connection, _) = one.player(&ada).await;
    let (new_connection, _) = two.player(&ada).await;
    let (watcher, _) = one.player(&username("watcher")).await;
    call(&old_connection, MatchRequest::Queue { mode: "team".into() }).await.unwrap();
    old_connection.close().await;
    drop(old_connection);
    // Past the grace, with passes running, the ticket of a player still connected stays.
    tokio::time::sleep(Duration::from_secs(1)).await;
    world.clock.advance(matchmaking_grace() + Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(waiting(&watcher).await, 1);
    // Once her last connection anywhere ends, the ticket goes after the grace.
    new_connection.close().await;
    drop(new_connection);
    // Moved on again and again: the ticket is set aside whenever the gateway notices the close.
    tokio::time::timeout(PATIENCE, async {
        while waiting(&watcher).await != 0 {
            world.clock.advance(matchmaking_grace() + Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the ticket is removed after the grace");
}

/// Tickets waiting in the `team` queue, as a player sees them.
async fn waiting(watcher: &Client) -> u64 {
    let MatchReply::QueueStats { modes } = call(watcher, MatchRequest::QueueStats).await.unwrap() else {
        panic!()
    };
    modes.iter().find(|m| m.mode == "team").unwrap().waiting
}

fn matchmaking_grace() -> Duration {
    GatewayConfig::default().matchmaking.disconnect_grace
}
