//! One test per scenario, plus the token path and the blends.

use std::time::Duration;

use loadtest::slo::Slo;
use loadtest::stats::{CHAT_DELIVERY, INVENTORY_GRANT, TRADE};
use loadtest::{Mix, Rates, ScenarioKind, ScenarioOptions};
use proto::{AccountId, ClientMessage, Outcome, Reply, Request, SessionInfo};

use crate::support::{
    Answer, CuttableProxy, FakeGateway, N_CLIENTS, TestGateway, assert_clean_and_counted, response_frame,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_closed_loop_is_counted_alike_by_client_and_server() {
    let gateway = TestGateway::start().await;
    let report = loadtest::run(gateway.options("ping")).await.expect("run");
    assert_clean_and_counted(&report);
    let ping = &report.kinds["ping"];
    assert!(ping.count > 100, "only {} pings:\n{}", ping.count, report.render());
    // Every client registered on its first login, which the report keeps apart from errors.
    assert_eq!(report.kinds["login"].expected.get("unauthorized"), Some(&(N_CLIENTS as u64)));
    assert!(Slo::parse("errors<0.1%").expect("slo").check(&report).met);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_ping_sends_at_the_asked_rate() {
    let gateway = TestGateway::start().await;
    let mut rates = Rates::default();
    rates.add("ping=20").expect("rate");
    let report = loadtest::run(loadtest::Options { rates, ..gateway.options("ping") }).await.expect("run");
    assert_clean_and_counted(&report);
    // 10 clients × 20/s over about 2 s is 400: pacing must never send more than the schedule
    // (plus the phases' slack); on a busy machine it may send somewhat fewer.
    let pings = report.kinds["ping"].count;
    assert!((200..=460).contains(&pings), "{pings} pings:\n{}", report.render());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_clients_that_lose_their_connection_count_what_they_did_not_send() {
    let gateway = TestGateway::start().await;
    let mut rates = Rates::default();
    rates.add("ping=20").expect("rate");
    // No admin port to scrape at the end: it goes away with the gateway.
    let options = loadtest::Options {
        rates,
        admins: Vec::new(),
        duration: Duration::from_secs(8),
        ..gateway.options("ping")
    };
    let run = tokio::spawn(loadtest::run(options));
    // Once the clients ping, the gateway goes away, closing every client's connection with most
    // of the run still ahead of them.
    gateway.wait_until_every_client_sent("ping").await;
    gateway.begin_shutdown();
    let report = run.await.expect("join").expect("run");
    // 10 clients × 20/s with seconds left each: what they never sent is counted as
    // `not_sent`, not silently missing, and never more than their schedule.
    let ping = &report.kinds["ping"];
    let not_sent = ping.errors.get("not_sent").copied().unwrap_or(0);
    assert!(not_sent >= 200, "{not_sent} not sent:\n{}", report.render());
    assert!(ping.count + ping.n_errors() <= 10 * 20 * 8 + 60, "{}", report.render());
    assert!(!Slo::parse("ping:p99<1s").expect("slo").check(&report).met, "most pings got no answer");
}

/// A stand-in gateway's answer to a `resume` (a session) or a `ping`.
fn session_or_pong(request: &ClientMessage) -> Outcome {
    match request.request {
        Request::Resume { .. } => Outcome::Ok(Reply::Session(SessionInfo {
            account_id: AccountId::default(),
            username: "lt-load-0".into(),
            token: "token".into(),
            idle_timeout_secs: 60,
            expires_at_ms: u64::MAX,
        })),
        _ => Outcome::Ok(Reply::Pong { server_time_ms: 0 }),
    }
}

#[tokio::test]
async fn a_run_without_admin_ports_ends_when_its_clients_do() {
    let gateway = FakeGateway::start(|_, request| {
        let outcome = session_or_pong(&request);
        Answer { frames: vec![response_frame(&request, outcome)], then_close: false }
    })
    .await;
    let options = loadtest::Options {
        tokens: vec!["token".into()],
        duration: Duration::from_millis(500),
        ..loadtest::Options::new(gateway.url.clone(), Mix::single(ScenarioKind::Ping), 1)
    };
    let started = tokio::time::Instant::now();
    let report = loadtest::run(options).await.expect("run");
    // Nothing to scrape: no waiting for counters that no gateway reports.
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(report.kinds["ping"].count > 0, "{}", report.render());
}

#[tokio::test]
async fn a_paced_client_whose_connection_closes_between_requests_counts_exactly_its_schedule() {
    // Answers the resume and five pings, then closes the connection with nothing outstanding.
    let gateway = FakeGateway::start(|n, request| {
        let outcome = session_or_pong(&request);
        Answer { frames: vec![response_frame(&request, outcome)], then_close: n == 5 }
    })
    .await;
    let mut rates = Rates::default();
    rates.add("ping=20").expect("rate");
    let options = loadtest::Options {
        rates,
        tokens: vec!["token".into()],
        duration: Duration::from_secs(1),
        ..loadtest::Options::new(gateway.url.clone(), Mix::single(ScenarioKind::Ping), 1)
    };
    let report = loadtest::run(options).await.expect("run");
    // 20 pings scheduled over the second: five answered, the other fifteen not sent, and nothing
    // else.
    let ping = &report.kinds["ping"];
    assert_eq!(ping.count, 5, "{}", report.render());
    assert_eq!(ping.errors.get("not_sent"), Some(&15), "{}", report.render());
    assert_eq!(ping.n_attempts(), 20, "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_goes_away_during_a_run_still_gets_the_clients_report() {
    let gateway = TestGateway::start().await;
    let mut rates = Rates::default();
    rates.add("ping=20").expect("rate");
    let options = loadtest::Options { rates, duration: Duration::from_secs(4), ..gateway.options("ping") };
    let run = tokio::spawn(loadtest::run(options));
    gateway.wait_until_every_client_sent("ping").await;
    gateway.stop().await;
    // The admin port went with the gateway: the report has no gateway figures, but what the
    // clients saw (pings answered, then the rest of the schedule not sent) is all there.
    let report = run.await.expect("join").expect("a report without the gateway's figures");
    assert!(report.gateways.is_empty(), "{}", report.render());
    let ping = &report.kinds["ping"];
    assert!(ping.count > 0 && ping.errors.get("not_sent").is_some_and(|n| *n > 0), "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_traders_whose_connections_are_cut_count_what_they_did_not_send() {
    let gateway = TestGateway::start().await;
    let proxy = CuttableProxy::start(&gateway.url).await;
    let mut rates = Rates::default();
    rates.add("inventory=20").expect("rate");
    let options = loadtest::Options {
        rates,
        targets: vec![proxy.url.clone()],
        duration: Duration::from_secs(10),
        ..gateway.options("inventory")
    };
    let run = tokio::spawn(loadtest::run(options));
    // Once the traders trade, the network between them and the gateway goes away, with most of
    // the run still ahead of them.
    gateway.wait_until_every_client_sent("inventory_make_offer").await;
    proxy.cut();
    let report = run.await.expect("join").expect("run");
    // The 5 offerers' schedules (20/s each, seconds left) are counted under the kinds they would
    // have been sent as, four offers to one consumption, and never more than the schedule.
    let not_sent = |kind: &str| report.kinds.get(kind).and_then(|kind| kind.errors.get("not_sent").copied());
    let offers = not_sent("inventory_make_offer").unwrap_or(0);
    let consumptions = not_sent("inventory_consume").unwrap_or(0);
    assert!(offers >= 200, "{offers} offers not sent:\n{}", report.render());
    assert!(
        (offers / 8..=offers / 3).contains(&consumptions),
        "{consumptions} consumptions not sent:\n{}",
        report.render()
    );
    let sent_or_not = |kind: &str| report.kinds.get(kind).map_or(0, |kind| kind.count + kind.n_errors());
    let scheduled = sent_or_not("inventory_make_offer") + sent_or_not("inventory_consume");
    assert!(scheduled <= 5 * 20 * 10 + 60, "{}", report.render());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_hold_connections_and_the_gateway_memory_is_reported() {
    let gateway = TestGateway::start().await;
    let report = loadtest::run(gateway.options("idle")).await.expect("run");
    assert_clean_and_counted(&report);
    let peak = report.gateways[0].peak.as_ref().expect("peak scraped");
    assert_eq!(peak.connections, N_CLIENTS as u64, "{}", report.render());
    assert!(report.gateways[0].memory_per_connection_bytes.is_some());
    assert_eq!(report.gateways[0].after.connections, 0, "connections left open");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_storm_logs_in_over_and_over() {
    let gateway = TestGateway::start().await;
    let report = loadtest::run(gateway.options("login-storm")).await.expect("run");
    assert_clean_and_counted(&report);
    let logins = &report.kinds["login"];
    // Each client's first login fails (new account) and is followed by a successful one.
    assert!(logins.count > 2 * N_CLIENTS as u64, "only {} logins:\n{}", logins.count, report.render());
    assert!(report.kinds["connect"].count > N_CLIENTS as u64);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_sessions_resume_instead_of_logging_in_in_a_blend() {
    let gateway = TestGateway::start().await;
    let (tokens, _) =
        loadtest::prepare_sessions(gateway.options("login-storm"), 4).await.expect("prepare sessions");
    assert_eq!(tokens.len(), N_CLIENTS);
    let options = loadtest::Options { tokens, ..gateway.options("ping=3,idle=1") };
    let report = loadtest::run(options).await.expect("run");
    assert_clean_and_counted(&report);
    assert!(!report.kinds.contains_key("login"), "clients logged in again:\n{}", report.render());
    assert_eq!(report.kinds["resume"].count, N_CLIENTS as u64);
    assert!(report.kinds["ping"].count > 0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_updates_are_counted_alike_by_client_server_and_player_store() {
    let gateway = TestGateway::start().await;
    let report = loadtest::run(gateway.options("state")).await.expect("run");
    assert_clean_and_counted(&report);
    let updates = report.kinds["update_state"].count;
    assert!(updates > 100, "only {updates} updates:\n{}", report.render());
    // Every acknowledged update reached the player domain, and nothing else did.
    assert_eq!(report.gateways[0].player_updates_accepted, updates, "{}", report.render());
    // Players stay dirty between flushes under load, so the lag sampled through the run is seen.
    let lag = report.gateways[0].flush_lag.expect("the flush lag was sampled");
    assert!(lag.samples >= 5 && lag.max_secs > 0.0, "{lag:?}");
    assert!(report.render().contains("flush lag at most"), "{}", report.render());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rows_flushed_include_the_flush_of_the_runs_last_updates() {
    let gateway = TestGateway::start().await;
    let mut rates = Rates::default();
    rates.add("state=20").expect("rate");
    let report = loadtest::run(loadtest::Options { rates, ..gateway.options("state") }).await.expect("run");
    assert_clean_and_counted(&report);
    // Once the buffer is empty every update of the run is in player.db: the report must have
    // counted the rows of that last flush too.
    let flushed = gateway.wait_until_player_state_is_flushed().await;
    let reported = &report.gateways[0];
    assert_eq!(
        reported.player_rows_flushed,
        flushed.player_rows_flushed - reported.before.player_rows_flushed,
        "{}",
        report.render()
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_state_and_ping_in_a_blend_are_recorded_under_their_own_kinds() {
    let gateway = TestGateway::start().await;
    let mut rates = Rates::default();
    rates.add("state=20").expect("rate");
    rates.add("ping=20").expect("rate");
    let report =
        loadtest::run(loadtest::Options { rates, ..gateway.options("state=1,ping=1") }).await.expect("run");
    assert_clean_and_counted(&report);
    // 5 clients of each × 20/s over about 2 s is 200 apiece; never more than the schedule.
    for kind in ["update_state", "ping"] {
        let count = report.kinds[kind].count;
        assert!((100..=230).contains(&count), "{count} {kind}:\n{}", report.render());
    }
    assert_eq!(report.gateways[0].player_updates_accepted, report.kinds["update_state"].count);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_rooms_deliver_every_acknowledged_message_to_every_other_member() {
    let gateway = TestGateway::start().await;
    // Two rooms of five.
    let scenario = ScenarioOptions { chat_room_size: 5, ..gateway.options("chat").scenario };
    let report = loadtest::run(loadtest::Options { scenario, ..gateway.options("chat") }).await.expect("run");
    assert_clean_and_counted(&report);
    let sent = report.kinds["chat_send"].ok;
    assert!(sent > 50, "only {sent} messages:\n{}", report.render());
    // Each message reaches the four other members of its room, and nobody else.
    assert_eq!(report.kinds[CHAT_DELIVERY].count, 4 * sent, "{}", report.render());
    assert_eq!(report.kinds["chat_join_room"].ok, N_CLIENTS as u64);
    assert_eq!(report.kinds["chat_leave_room"].ok, N_CLIENTS as u64);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_direct_messages_reach_the_partner() {
    let gateway = TestGateway::start().await;
    let scenario = ScenarioOptions { chat_dm: true, ..gateway.options("chat").scenario };
    let mut rates = Rates::default();
    rates.add("chat=20").expect("rate");
    let report =
        loadtest::run(loadtest::Options { scenario, rates, ..gateway.options("chat") }).await.expect("run");
    assert_clean_and_counted(&report);
    // 10 clients × 20/s for about 2 s, minus the wait for partners; never more than the schedule.
    let sent = report.kinds["chat_send_direct"].ok;
    assert!((100..=460).contains(&sent), "{sent} messages:\n{}", report.render());
    assert_eq!(report.kinds[CHAT_DELIVERY].count, sent, "{}", report.render());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_chat_clients_that_never_get_to_send_count_their_schedule_as_not_sent() {
    let gateway = TestGateway::start().await;
    let (mut tokens, _) =
        loadtest::prepare_sessions(gateway.options("login-storm"), 4).await.expect("prepare sessions");
    // Client 1 cannot authenticate, so its partner, client 0, has nobody to write to.
    tokens[1] = "0".repeat(64);
    let scenario = ScenarioOptions { chat_dm: true, ..gateway.options("chat").scenario };
    let mut rates = Rates::default();
    rates.add("chat=20").expect("rate");
    let options = loadtest::Options { scenario, rates, tokens, ..gateway.options("chat") };
    let report = loadtest::run(options).await.expect("run");
    // Each of the two clients scheduled about 20/s × 2 s and sent none of it.
    let sends = &report.kinds["chat_send_direct"];
    let not_sent = sends.errors.get("not_sent").copied().unwrap_or(0);
    assert!((60..=90).contains(&not_sent), "{not_sent} not sent:\n{}", report.render());
    assert_eq!(sends.n_errors(), not_sent, "{}", report.render());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_partners_trade_and_consume_and_every_offer_is_accepted() {
    let gateway = TestGateway::start().await;
    let report = loadtest::run(gateway.options("inventory")).await.expect("run");
    assert_clean_and_counted(&report);
    let rendered = report.render();
    // Two items granted to each client through the admin port.
    assert_eq!(report.kinds[INVENTORY_GRANT].count, 2 * N_CLIENTS as u64, "{rendered}");
    let offers = report.kinds["inventory_make_offer"].ok;
    assert!(offers > 20, "only {offers} offers:\n{rendered}");
    // Closed loop, every offer is accepted and settles before the offerer's next action.
    assert_eq!(report.kinds["inventory_accept_offer"].ok, offers, "{rendered}");
    assert_eq!(report.kinds[TRADE].count, offers, "{rendered}");
    let consumed = report.kinds["inventory_consume"].ok;
    assert!(consumed > 0, "{rendered}");
    assert_eq!(report.inventory_transactions, 2 * offers + consumed, "{rendered}");
    assert!(rendered.contains("durable transactions acknowledged"), "{rendered}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_blend_of_every_request_scenario_is_counted_alike() {
    let gateway = TestGateway::start().await;
    let mut rates = Rates::default();
    rates.add("10").expect("rate");
    let options = gateway.options("ping=1,state=1,chat=1,inventory=1");
    let report = loadtest::run(loadtest::Options { rates, ..options }).await.expect("run");
    assert_clean_and_counted(&report);
    for kind in ["ping", "update_state", "chat_send", CHAT_DELIVERY, "inventory_make_offer"] {
        assert!(report.kinds.get(kind).is_some_and(|k| k.count > 0), "no {kind}:\n{}", report.render());
    }
    gateway.stop().await;
}
