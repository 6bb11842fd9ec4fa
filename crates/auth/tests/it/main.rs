//! Integration tests of the auth domain against a real `redis-server`: the races between rotating,
//! validating and ending sessions, which only a real store run concurrently can show.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use auth::{Auth, AuthConfig, AuthError, IssuedSession};
use clock::ManualClock;
use kv::testing::RedisServer;

const PASSWORD: &str = "correct horse battery";
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Each race is run this often: the first rounds may order the store's commands differently while
/// Redis loads the scripts.
const N_ROUNDS: usize = 20;

/// An auth domain on a fresh Redis and a temporary `auth.db`, under a clock the test moves.
struct Fixture {
    auth: Auth,
    /// The store `auth` uses, to read what it left there.
    kv: kv::Kv,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
    _redis: RedisServer,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(AuthConfig::default()).await
    }

    async fn start_with(config: AuthConfig) -> Fixture {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let kv = kv::Kv::connect_redis(&redis.url(), "t:").await.unwrap();
        let clock = Arc::new(ManualClock::starting_now());
        let auth = Auth::open(dir.path().join("auth.db"), kv.clone(), clock.clone(), config).await.unwrap();
        auth.register("ada", PASSWORD).await.unwrap();
        Fixture { auth, kv, clock, _dir: dir, _redis: redis }
    }

    async fn login(&self) -> IssuedSession {
        self.auth.login("ada", PASSWORD, CLIENT).await.unwrap()
    }
}

#[tokio::test]
async fn of_concurrent_refreshes_of_one_session_exactly_one_succeeds() {
    let fixture = Fixture::start().await;
    let old = fixture.login().await;
    let mut refreshes = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let auth = fixture.auth.clone();
        let key = old.session.key.clone();
        refreshes.spawn(async move { auth.refresh(&key).await });
    }
    let mut new = Vec::new();
    for refresh in refreshes.join_all().await {
        match refresh {
            Ok(issued) => new.push(issued),
            Err(AuthError::InvalidSession) => {}
            Err(error) => panic!("unexpected error: {error}"),
        }
    }
    assert_eq!(new.len(), 1, "{new:?}");

    assert!(matches!(fixture.auth.validate(&old.session.key).await, Err(AuthError::InvalidSession)));
    fixture.auth.validate_token(&new[0].token).await.unwrap();
    // No other session was left behind.
    let ended = fixture.auth.logout_everywhere(old.session.account_id).await.unwrap();
    assert_eq!(ended, [new[0].session.key.clone()]);
}

#[tokio::test]
async fn a_refresh_racing_logout_everywhere_leaves_no_session() {
    let fixture = Fixture::start().await;
    for _ in 0..N_ROUNDS {
        let old = fixture.login().await;
        let (refreshed, ended) = tokio::join!(
            fixture.auth.refresh(&old.session.key),
            fixture.auth.logout_everywhere(old.session.account_id),
        );
        ended.unwrap();
        if let Ok(new) = refreshed {
            let revalidated = fixture.auth.validate_token(&new.token).await;
            assert!(matches!(revalidated, Err(AuthError::InvalidSession)), "{revalidated:?}");
        }
        assert_eq!(fixture.auth.logout_everywhere(old.session.account_id).await.unwrap(), []);
    }
}

#[tokio::test]
async fn a_session_ended_everywhere_is_not_brought_back_by_a_concurrent_validation() {
    let fixture = Fixture::start().await;
    for _ in 0..N_ROUNDS {
        let issued = fixture.login().await;
        // Long enough unused that validating writes the time of use back.
        fixture.clock.advance(AuthConfig::default().session_idle_ttl / 4);
        let key = &issued.session.key;
        let (_, ended) = tokio::join!(
            fixture.auth.validate(key),
            fixture.auth.logout_everywhere(issued.session.account_id)
        );
        ended.unwrap();
        assert!(matches!(fixture.auth.validate(key).await, Err(AuthError::InvalidSession)));
        fixture.clock.advance(Duration::from_secs(1));
    }
}

#[tokio::test]
async fn wrong_guesses_from_one_address_do_not_lock_the_owner_out_elsewhere() {
    let fixture = Fixture::start().await;
    let (guesser, owner) =
        (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    for _ in 0..auth::DEFAULT_ACCOUNT_FAILURE_LIMIT {
        let failure = fixture.auth.login("ada", "guess guess", guesser).await.unwrap_err();
        assert!(matches!(failure, AuthError::BadCredentials), "{failure:?}");
    }
    let throttled = fixture.auth.login("ada", PASSWORD, guesser).await.unwrap_err();
    assert!(matches!(throttled, AuthError::Throttled { .. }), "{throttled:?}");
    fixture.auth.login("ada", PASSWORD, owner).await.expect("the owner, elsewhere, still logs in");
}

#[tokio::test]
async fn wrong_guesses_spread_over_many_addresses_still_throttle_the_account() {
    let fixture = Fixture::start().await;
    let limit = auth::DEFAULT_ACCOUNT_FAILURE_LIMIT * auth::ACCOUNT_FAILURE_ADDRESSES;
    // Each address stays under its own limit for the account.
    for n in 0..limit {
        let address = IpAddr::V4(Ipv4Addr::new(203, 0, 113, u8::try_from(n % 200).unwrap()));
        let failure = fixture.auth.login("ada", "guess guess", address).await.unwrap_err();
        assert!(matches!(failure, AuthError::BadCredentials), "guess {n}: {failure:?}");
    }
    let fresh = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    let throttled = fixture.auth.login("ada", PASSWORD, fresh).await.unwrap_err();
    assert!(matches!(throttled, AuthError::Throttled { .. }), "{throttled:?}");
    fixture.clock.advance(auth::DEFAULT_THROTTLE_WINDOW);
    fixture.auth.login("ada", PASSWORD, fresh).await.expect("a new window");
}

#[tokio::test]
async fn a_username_spelling_another_key_does_not_throttle_the_real_account() {
    let fixture = Fixture::start().await;
    let owner = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    let guesser = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    // Usernames that would spell the keys of `ada` from the owner's address in a naive layout.
    for typed in ["ada:198.51.100.1", "198.51.100.1/ada", "ada/198.51.100.1"] {
        for _ in 0..auth::DEFAULT_ACCOUNT_FAILURE_LIMIT {
            let _ = fixture.auth.login(typed, "guess guess", guesser).await;
        }
    }
    fixture.auth.login("ada", PASSWORD, owner).await.expect("the owner still logs in");
}

#[tokio::test]
async fn a_registration_refused_as_busy_does_not_use_up_the_addresss_registrations() {
    const LIMIT: u64 = 2;
    // One hash at a time and none waiting: of two registrations at once, one at least is refused
    // as busy (both, if the thread has not yet given back its place after the fixture's).
    let config = AuthConfig {
        hash_threads: 1,
        max_queued_hashes: 0,
        registration_limit: LIMIT,
        ..AuthConfig::default()
    };
    let fixture = Fixture::start_with(config).await;
    let (first, second) = tokio::join!(
        fixture.auth.register_from("grace", PASSWORD, CLIENT),
        fixture.auth.register_from("hedy", PASSWORD, CLIENT),
    );
    let mut n_registered = 0;
    for result in [&first, &second] {
        match result {
            Ok(_) => n_registered += 1,
            Err(AuthError::Busy) => {}
            Err(error) => panic!("unexpected error: {error}"),
        }
    }
    assert!(n_registered < 2, "one at least is refused as busy");

    // What was refused as busy cost no hash, so the address has the rest of its registrations.
    for name in ["katherine", "margaret"].into_iter().take(usize::try_from(LIMIT).unwrap() - n_registered) {
        fixture.auth.register_from(name, PASSWORD, CLIENT).await.expect("a registration within the limit");
    }
    let throttled = fixture.auth.register_from("ada_2", PASSWORD, CLIENT).await.unwrap_err();
    assert!(matches!(throttled, AuthError::RegistrationsThrottled { .. }), "{throttled:?}");
}

#[tokio::test]
async fn a_login_past_the_accounts_cap_ends_its_oldest_session_and_names_it() {
    const CAP: usize = 2;
    let fixture =
        Fixture::start_with(AuthConfig { max_sessions_per_account: CAP, ..AuthConfig::default() }).await;
    let first = fixture.login().await;
    let second = fixture.login().await;
    assert_eq!(second.ended, []);
    let third = fixture.login().await;
    assert_eq!(third.ended, std::slice::from_ref(&first.session.key));
    assert!(matches!(fixture.auth.validate(&first.session.key).await, Err(AuthError::InvalidSession)));
    fixture.auth.validate(&second.session.key).await.unwrap();
    fixture.auth.validate(&third.session.key).await.unwrap();
}

/// The store's TTL only collects garbage, but it must not keep a session's key past the session's
/// absolute end: a validation in the session's last idle lifetime sets it to what is left.
#[tokio::test]
async fn validating_a_session_near_its_end_never_keeps_its_key_past_the_end() {
    let config = AuthConfig {
        session_idle_ttl: Duration::from_secs(3600),
        session_max_lifetime: Duration::from_secs(4 * 3600),
        ..AuthConfig::default()
    };
    let fixture = Fixture::start_with(config.clone()).await;
    let issued = fixture.login().await;
    let key = &issued.session.key;
    let ttl = async || fixture.kv.session_ttl(key.as_str()).await.unwrap().unwrap();
    let check = async |left: Duration| {
        let ttl = ttl().await;
        assert!(ttl <= left && ttl > left - Duration::from_secs(5), "{ttl:?}, {left:?} left");
    };

    // Far from the end, validating gives the key the whole idle lifetime.
    fixture.auth.validate(key).await.unwrap();
    check(config.session_idle_ttl).await;

    // Kept in use until half an hour before the end (each use writes the record back).
    let step = Duration::from_secs(30 * 60);
    for _ in 0..7 {
        fixture.clock.advance(step);
        fixture.auth.validate(key).await.unwrap();
    }
    // Used again five minutes later, too soon to write the record back: the read alone restarts
    // the key's TTL, which must still end with the session, 25 minutes from now.
    fixture.clock.advance(Duration::from_secs(5 * 60));
    fixture.auth.validate(key).await.unwrap();
    check(Duration::from_secs(25 * 60)).await;
}
