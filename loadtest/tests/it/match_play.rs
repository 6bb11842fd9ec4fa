//! The `match` scenario against a gateway whose matchmaker passes every 50 ms.

use std::time::Duration;

use loadtest::conn::Connection;
use loadtest::stats::MATCH_WAIT;
use proto::matchmaking::{MatchReply, MatchRequest};
use proto::{Encoding, Outcome, Reply, Request};

use crate::support::{N_CLIENTS, TestGateway, assert_clean_and_counted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_players_queue_agree_on_results_and_queue_again() {
    let gateway = TestGateway::start().await;
    let options = loadtest::Options { duration: Duration::from_secs(3), ..gateway.options("match") };
    let report = loadtest::run(options.clone()).await.expect("run");
    assert_clean_and_counted(&report);
    let rendered = report.render();
    let matched = report.kinds[MATCH_WAIT].count;
    // Every player of every match waited once and reported once; nobody is left in a match.
    assert!(matched >= N_CLIENTS as u64, "only {matched} matches found:\n{rendered}");
    assert_eq!(report.kinds["match_report"].ok, matched, "{rendered}");
    assert!(report.kinds["match_queue"].ok >= matched, "{rendered}");

    // Every client played at least one match: all of them are on the duel leaderboard.
    let mut conn = Connection::open(&gateway.url, None, Encoding::Bincode).await.expect("connect");
    let login = Request::Login {
        username: loadtest::username(&options.username_prefix, 0),
        password: options.password.clone(),
    };
    assert!(matches!(conn.call(login).await.expect("login"), Outcome::Ok(Reply::Session(_))));
    let leaderboard = Request::Match(MatchRequest::Leaderboard { mode: "duel".into(), limit: 100 });
    let Outcome::Ok(Reply::Match(MatchReply::Leaderboard { entries })) =
        conn.call(leaderboard).await.expect("leaderboard")
    else {
        panic!("a leaderboard");
    };
    assert_eq!(entries.len(), N_CLIENTS, "{entries:?}\n{rendered}");
    assert!(entries.iter().all(|entry| entry.games >= 1), "{entries:?}");
    assert_eq!(entries.iter().map(|entry| entry.games).sum::<u64>(), matched, "{entries:?}");
    conn.close().await;
    gateway.stop().await;
}
