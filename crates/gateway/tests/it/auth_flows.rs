//! Register, log in, reconnect, refresh and log out, through both encodings.

use game_client::{Client, ConnectOptions};
use proto::{Encoding, ErrorCode};

use crate::support::{PASSWORD, TestGateway, World, username};

#[tokio::test]
async fn a_player_registers_logs_in_and_sees_who_they_are_in_both_encodings() {
    let world = World::new();
    let gateway = world.gateway().await;
    for encoding in [Encoding::Bincode, Encoding::Json] {
        let client = gateway.connect(encoding).await;
        let name = username("Ada");
        let account_id = client.register(&name, PASSWORD).await.unwrap();
        let session = client.login(&name.to_lowercase(), PASSWORD).await.unwrap();
        assert_eq!(session.account_id, account_id);
        assert_eq!(session.username, name, "the username keeps the case it was registered with");
        assert_eq!(session.token.len(), 64, "256 random bits as hex");
        let me = client.whoami().await.unwrap();
        assert_eq!((me.account_id, me.username), (account_id, name));
        assert!(client.ping().await.unwrap() > 0);
    }
}

#[tokio::test]
async fn usernames_are_unique_ignoring_case() {
    let world = World::new();
    let gateway = world.gateway().await;
    let client = gateway.connect(Encoding::Json).await;
    let name = username("Grace");
    client.register(&name, PASSWORD).await.unwrap();
    let again = client.register(&name.to_uppercase(), PASSWORD).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::Conflict));
}

#[tokio::test]
async fn registration_rules_are_enforced() {
    let world = World::new();
    let gateway = world.gateway().await;
    let client = gateway.connect(Encoding::Bincode).await;
    let check = async |name: &str, password: &str| client.register(name, password).await.unwrap_err().code();
    assert_eq!(check("ab", PASSWORD).await, Some(ErrorCode::BadRequest));
    assert_eq!(check("has space", PASSWORD).await, Some(ErrorCode::BadRequest));
    assert_eq!(check(&"x".repeat(25), PASSWORD).await, Some(ErrorCode::BadRequest));
    assert_eq!(check("valid_name", "short").await, Some(ErrorCode::BadRequest));
    assert_eq!(check("valid_name", &"p".repeat(129)).await, Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn a_reconnecting_player_resumes_with_the_token_by_request_header_or_query() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (first, session) = gateway.player(&username("resumer")).await;
    first.close().await;

    let by_request = gateway.connect(Encoding::Json).await;
    let resumed = by_request.resume(&session.token).await.unwrap();
    assert_eq!((resumed.account_id, &resumed.token), (session.account_id, &session.token));
    assert_eq!(by_request.whoami().await.unwrap().account_id, session.account_id);

    let options =
        ConnectOptions { token: Some(session.token.clone()), ..ConnectOptions::new(Encoding::Bincode) };
    let by_header = Client::connect_with(&gateway.url, options).await.unwrap();
    assert_eq!(by_header.whoami().await.unwrap().account_id, session.account_id);

    let url = format!("{}?token={}", gateway.url, session.token);
    let by_query = Client::connect(&url, Encoding::Json).await.unwrap();
    assert_eq!(by_query.whoami().await.unwrap().account_id, session.account_id);
}

#[tokio::test]
async fn only_auth_requests_are_answered_before_login() {
    let world = World::new();
    let gateway = world.gateway().await;
    let client = gateway.connect(Encoding::Bincode).await;
    for attempt in [client.ping().await.map(drop), client.whoami().await.map(drop), client.logout().await] {
        assert_eq!(attempt.unwrap_err().code(), Some(ErrorCode::Unauthorized));
    }
    let bogus = client.resume(&"0".repeat(64)).await.unwrap_err();
    assert_eq!(bogus.code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn logging_in_twice_on_one_connection_is_a_conflict() {
    let world = World::new();
    let gateway = world.gateway().await;
    let name = username("twice");
    let (client, _) = gateway.player(&name).await;
    assert_eq!(client.login(&name, PASSWORD).await.unwrap_err().code(), Some(ErrorCode::Conflict));
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_the_same_answer() {
    let world = World::new();
    let gateway = world.gateway().await;
    let name = username("known");
    gateway.player(&name).await;
    let client = gateway.connect(Encoding::Json).await;
    let wrong_password = client.login(&name, "not the password").await.unwrap_err();
    let unknown_user = client.login(&username("nobody"), "not the password").await.unwrap_err();
    let (game_client::ClientError::Server(a), game_client::ClientError::Server(b)) =
        (wrong_password, unknown_user)
    else {
        panic!("both are server errors");
    };
    assert_eq!(a, b);
    assert_eq!(a.code, ErrorCode::Unauthorized);
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_even_with_the_right_password_afterwards() {
    let world = World::new();
    let gateway = world.gateway().await;
    let name = username("target");
    gateway.player(&name).await;
    let attacker = gateway.connect(Encoding::Bincode).await;
    for _ in 0..auth::DEFAULT_ACCOUNT_FAILURE_LIMIT {
        let failure = attacker.login(&name, "guess guess").await.unwrap_err();
        assert_eq!(failure.code(), Some(ErrorCode::Unauthorized));
    }
    let throttled = attacker.login(&name, PASSWORD).await.unwrap_err();
    assert_eq!(throttled.code(), Some(ErrorCode::RateLimited));

    // The window is measured on the injected clock: once it passes, the right password works.
    world.clock.advance(auth::DEFAULT_THROTTLE_WINDOW);
    attacker.login(&name, PASSWORD).await.unwrap();
}

#[tokio::test]
async fn failed_logins_from_one_address_are_throttled_across_accounts() {
    let world = World::new();
    let config = gateway::GatewayConfig { login_failures_per_address: 3, ..world.config() };
    let gateway = world.gateway_with(config).await;
    let victim = username("victim");
    gateway.player(&victim).await;
    let sprayer = gateway.connect(Encoding::Json).await;
    for n in 0..3 {
        let failure = sprayer.login(&format!("spray{n}"), "guess guess").await.unwrap_err();
        assert_eq!(failure.code(), Some(ErrorCode::Unauthorized));
    }
    let throttled = sprayer.login(&victim, PASSWORD).await.unwrap_err();
    assert_eq!(throttled.code(), Some(ErrorCode::RateLimited));
}

#[tokio::test]
async fn concurrent_wrong_logins_for_one_account_check_at_most_the_limit_of_passwords() {
    const LIMIT: u64 = 5;
    let world = World::new();
    let config = gateway::GatewayConfig { login_failures_per_account: LIMIT, ..world.config() };
    let gateway = world.gateway_with(config).await;
    let name = username("besieged");
    gateway.player(&name).await;

    let usernames = (0..4 * LIMIT).map(|_| name.clone()).collect();
    check_concurrent_wrong_logins(&gateway, usernames, LIMIT).await;
    let late = gateway.connect(Encoding::Json).await;
    assert_eq!(late.login(&name, PASSWORD).await.unwrap_err().code(), Some(ErrorCode::RateLimited));
}

#[tokio::test]
async fn concurrent_wrong_logins_from_one_address_check_at_most_the_limit_of_passwords() {
    const LIMIT: u64 = 5;
    let world = World::new();
    let config = gateway::GatewayConfig { login_failures_per_address: LIMIT, ..world.config() };
    let gateway = world.gateway_with(config).await;

    let usernames = (0..4 * LIMIT).map(|n| format!("spray{n}")).collect();
    check_concurrent_wrong_logins(&gateway, usernames, LIMIT).await;
}

/// Sends a wrong-password login for each of `usernames`, all at once, each on its own connection,
/// and checks that exactly `limit` of them were judged (`unauthorized`) and the rest throttled.
async fn check_concurrent_wrong_logins(gateway: &TestGateway, usernames: Vec<String>, limit: u64) {
    let mut clients = Vec::new();
    for _ in &usernames {
        clients.push(gateway.connect(Encoding::Bincode).await);
    }
    let logins = clients.iter().zip(&usernames).map(|(client, name)| client.login(name, "guess guess"));
    let codes: Vec<_> = futures_util::future::join_all(logins)
        .await
        .into_iter()
        .map(|login| login.unwrap_err().code())
        .collect();
    let n_judged = codes.iter().filter(|code| **code == Some(ErrorCode::Unauthorized)).count();
    let n_throttled = codes.iter().filter(|code| **code == Some(ErrorCode::RateLimited)).count();
    assert_eq!((u64::try_from(n_judged).unwrap(), n_judged + n_throttled), (limit, codes.len()), "{codes:?}");
}

#[tokio::test]
async fn one_address_registers_a_bounded_number_of_accounts_per_window() {
    let world = World::new();
    let config = gateway::GatewayConfig { registrations_per_address: 3, ..world.config() };
    let gateway = world.gateway_with(config).await;
    let client = gateway.connect(Encoding::Json).await;
    // A name already taken still costs a password hash, so it counts.
    let (first, fourth) = (username("first"), username("fourth"));
    client.register(&first, PASSWORD).await.unwrap();
    let taken = client.register(&first, PASSWORD).await.unwrap_err();
    assert_eq!(taken.code(), Some(ErrorCode::Conflict));
    client.register(&username("third"), PASSWORD).await.unwrap();
    let refused = client.register(&fourth, PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused}");
    // Logging in is not limited by it, and the next window registers again.
    client.login(&first, PASSWORD).await.unwrap();
    world.clock.advance(auth::DEFAULT_THROTTLE_WINDOW);
    client.register(&fourth, PASSWORD).await.unwrap();
}
