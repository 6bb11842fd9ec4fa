//! Accounts, passwords and sessions.
//!
//! Owns: `auth.db` (the `accounts` table: usernames, Argon2id password hashes), the rules for
//! usernames and passwords, password hashing on a bounded blocking pool, session tokens (issued,
//! validated, rotated and revoked through the `kv` crate, which keeps them in Redis) and login
//! throttling per account and per client address.
//!
//! Never: stores a session or a token in SQLite, stores a token in clear anywhere (only its
//! SHA-256), knows about WebSockets, or reaches into another domain. Telling other gateway
//! processes that a session was revoked is the gateway's job: this crate returns which sessions
//! ended.

mod error;
mod passwords;
mod sessions;
mod store;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use clock::SharedClock;
use kv::Kv;
use shard::{Shard, ShardConfig};
use uuid::Uuid;

pub use error::AuthError;
pub use sessions::{IssuedSession, Session, SessionKey};

/// The schema version this build migrates `auth.db` to: a file at an older one is migrated
/// when opened.
pub fn schema_version() -> u32 {
    shard::latest_version(store::MIGRATIONS)
}

/// Shortest username, in characters.
pub const USERNAME_MIN_CHARS: usize = 3;
/// Longest username, in characters.
pub const USERNAME_MAX_CHARS: usize = 24;
/// Shortest password, in characters.
pub const PASSWORD_MIN_CHARS: usize = 8;
/// Longest password, in bytes.
pub const PASSWORD_MAX_BYTES: usize = 128;

/// Default idle lifetime of a session: a day without use ends it.
pub const DEFAULT_SESSION_IDLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default absolute lifetime of a session: 30 days after login it ends whatever happens.
pub const DEFAULT_SESSION_MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default number of failed logins of one account from one client address within a window
/// before the account is throttled for that address.
pub const DEFAULT_ACCOUNT_FAILURE_LIMIT: u64 = 10;
/// An account is throttled from every address once this many addresses' worth of failed logins
/// (`account_failure_limit` times this) were counted in a window: a guesser at one address cannot
/// lock the owner out elsewhere, and one spread over many addresses is still bounded.
pub const ACCOUNT_FAILURE_ADDRESSES: u64 = 10;
/// Default number of failed logins from one client address within a window before it is throttled.
pub const DEFAULT_ADDRESS_FAILURE_LIMIT: u64 = 100;
/// Default number of accounts one client address (an IPv6 address's /64) may register per window.
pub const DEFAULT_REGISTRATION_LIMIT: u64 = 20;
/// Default length of a throttling window.
pub const DEFAULT_THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Default number of live sessions one account may hold: enough for every device a player owns
/// many times over, few enough that logging one account in without end (a script, a leaked
/// password) costs the store nothing more than this many records.
pub const DEFAULT_MAX_SESSIONS_PER_ACCOUNT: usize = 64;
/// Default bound on password hashes waiting for a thread; past it logins are refused as busy.
pub const DEFAULT_MAX_QUEUED_HASHES: usize = 4096;

/// Configuration of the auth domain.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// A session unused for this long ends; default [`DEFAULT_SESSION_IDLE_TTL`].
    pub session_idle_ttl: Duration,
    /// A session ends this long after login whatever happens; default
    /// [`DEFAULT_SESSION_MAX_LIFETIME`]; must be at least `session_idle_ttl`.
    pub session_max_lifetime: Duration,
    /// Failed logins per account from one client address and window before that address is
    /// throttled for the account, counting those still being checked (from all addresses together
    /// [`ACCOUNT_FAILURE_ADDRESSES`] times as many); default [`DEFAULT_ACCOUNT_FAILURE_LIMIT`].
    pub account_failure_limit: u64,
    /// Failed logins per client address and window, counting those still being checked; default
    /// [`DEFAULT_ADDRESS_FAILURE_LIMIT`].
    pub address_failure_limit: u64,
    /// Registrations per client address and window, counted before the password is hashed;
    /// default [`DEFAULT_REGISTRATION_LIMIT`].
    pub registration_limit: u64,
    /// The throttling window; default [`DEFAULT_THROTTLE_WINDOW`].
    pub throttle_window: Duration,
    /// Live sessions one account may hold; a login past it ends the account's oldest sessions
    /// (by login, a refresh keeping its login's place), which [`IssuedSession::ended`] names, so
    /// a player who lost a device can always log in again. Default
    /// [`DEFAULT_MAX_SESSIONS_PER_ACCOUNT`]; at least 1 (0 counts as 1).
    pub max_sessions_per_account: usize,
    /// Password hashes computed at once; default: the number of CPUs. Each takes 19 MiB.
    pub hash_threads: usize,
    /// Password hashes allowed to wait for a thread; default [`DEFAULT_MAX_QUEUED_HASHES`].
    pub max_queued_hashes: usize,
    /// How `auth.db` is opened.
    pub shard: ShardConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_idle_ttl: DEFAULT_SESSION_IDLE_TTL,
            session_max_lifetime: DEFAULT_SESSION_MAX_LIFETIME,
            account_failure_limit: DEFAULT_ACCOUNT_FAILURE_LIMIT,
            address_failure_limit: DEFAULT_ADDRESS_FAILURE_LIMIT,
            registration_limit: DEFAULT_REGISTRATION_LIMIT,
            throttle_window: DEFAULT_THROTTLE_WINDOW,
            max_sessions_per_account: DEFAULT_MAX_SESSIONS_PER_ACCOUNT,
            hash_threads: std::thread::available_parallelism().map_or(2, usize::from),
            max_queued_hashes: DEFAULT_MAX_QUEUED_HASHES,
            shard: ShardConfig::default(),
        }
    }
}

/// An account as other code sees it: never its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's id (UUID v7).
    pub account_id: Uuid,
    /// The username as registered.
    pub username: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// The auth domain: cheap to clone, one per server.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    shard: Shard,
    kv: Kv,
    clock: SharedClock,
    config: AuthConfig,
    hasher: passwords::Hasher,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("shard", &self.inner.shard.path()).finish_non_exhaustive()
    }
}

impl Auth {
    /// Opens `auth.db` at `path` (running its migrations) and readies the hashing pool.
    ///
    /// # Errors
    /// The shard cannot be opened or migrated.
    pub async fn open(
        path: impl Into<std::path::PathBuf>,
        kv: Kv,
        clock: SharedClock,
        config: AuthConfig,
    ) -> Result<Auth, AuthError> {
        let shard = Shard::open(path, &config.shard, store::MIGRATIONS).await?;
        let hasher = passwords::Hasher::new(config.hash_threads, config.max_queued_hashes).await?;
        Ok(Auth { inner: Arc::new(Inner { shard, kv, clock, config, hasher }) })
    }

    /// The shard this domain owns, for health checks, backup and integrity checks.
    pub fn shard(&self) -> &Shard {
        &self.inner.shard
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// Creates an account.
    ///
    /// # Errors
    /// [`AuthError::InvalidUsername`] or [`AuthError::InvalidPassword`] for values outside the
    /// rules; [`AuthError::UsernameTaken`] when the name exists in any case.
    pub async fn register(&self, username: &str, password: &str) -> Result<Account, AuthError> {
        validate_username(username)?;
        validate_password(password)?;
        let password_hash = self.inner.hasher.hash(password.to_owned()).await?;
        let account = Account {
            account_id: Uuid::now_v7(),
            username: username.to_owned(),
            created_at_ms: self.inner.clock.now_ms(),
        };
        store::insert_account(&self.inner.shard, &account, password_hash).await?;
        tracing::info!(account_id = %account.account_id, "account registered");
        Ok(account)
    }

    /// Registers an account, like [`Auth::register`], for a client at `client`, whose network may
    /// register [`AuthConfig::registration_limit`] accounts per throttling window. Every attempt
    /// with a valid name and password counts, a name already taken included: each costs a
    /// password hash. One refused as [`AuthError::Busy`] hashed nothing and does not count.
    ///
    /// # Errors
    /// As [`Auth::register`]; [`AuthError::RegistrationsThrottled`] past the limit.
    pub async fn register_from(
        &self,
        username: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Account, AuthError> {
        validate_username(username)?;
        validate_password(password)?;
        let (window, retry_after) = self.throttle_window();
        let key = format!("register:addr:{}:{window}", throttled_network(client));
        let limit = [(key.as_str(), self.inner.config.registration_limit)];
        if !self.inner.kv.counters_hit_below(&limit, self.inner.config.throttle_window).await? {
            return Err(AuthError::RegistrationsThrottled { retry_after });
        }
        let registered = self.register(username, password).await;
        if let Err(AuthError::Busy) = registered
            && let Err(undo) = self.inner.kv.counter_undo_hit(&key).await
        {
            tracing::warn!(error = %undo, "could not take back a registration attempt");
        }
        registered
    }

    /// Checks a username and password and issues a new session. If the account then holds more
    /// than [`AuthConfig::max_sessions_per_account`] sessions, its oldest ones end, in the same
    /// store operation; the caller announces [`IssuedSession::ended`] as it does other revocations.
    ///
    /// An unknown username and a wrong password fail alike, after about the same time, so the
    /// answer does not tell which accounts exist.
    ///
    /// # Errors
    /// [`AuthError::BadCredentials`]; [`AuthError::Throttled`] after too many failures for the
    /// account or the address; [`AuthError::Store`] when Redis is down.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<IssuedSession, AuthError> {
        if password.len() > PASSWORD_MAX_BYTES || username.chars().count() > USERNAME_MAX_CHARS {
            return Err(AuthError::BadCredentials);
        }
        let username_key = username.to_ascii_lowercase();
        let throttle = self.throttle_keys(&username_key, client);
        self.count_attempt(&throttle).await?;

        let (account, disabled) = match self.check_password(username_key, password).await {
            Ok(Some(found)) => found,
            // The attempt stays counted: failures are what the throttle limits.
            Ok(None) => return Err(AuthError::BadCredentials),
            Err(error) => {
                // No password was judged, so the attempt is no failure.
                if let Err(undo) = self.uncount_attempt(&throttle).await {
                    tracing::warn!(error = %undo, "could not take back a login attempt");
                }
                return Err(error);
            }
        };
        if disabled {
            self.uncount_attempt(&throttle).await?;
            return Err(AuthError::AccountDisabled);
        }
        // The owner's success forgives the failures from their address only: a guesser elsewhere
        // keeps what it has used of the account's limit.
        self.inner.kv.counter_reset(&throttle.account_from_address).await?;
        self.inner.kv.counter_undo_hit(&throttle.account).await?;
        self.inner.kv.counter_undo_hit(&throttle.address).await?;
        let issued =
            sessions::issue(&self.inner.kv, &self.inner.config, self.inner.clock.now_ms(), &account).await?;
        // An operator may have disabled the account while the password was being verified. The
        // disable commits before it ends the account's sessions, so either that ends this session
        // too, or this second look sees the flag.
        if store::is_disabled(&self.inner.shard, account.account_id).await? != Some(false) {
            self.inner
                .kv
                .session_delete(issued.session.key.as_str(), &account.account_id.to_string())
                .await?;
            return Err(AuthError::AccountDisabled);
        }
        tracing::info!(account_id = %account.account_id, "logged in");
        Ok(issued)
    }

    /// Finds the live session a token stands for and restarts its idle time.
    ///
    /// # Errors
    /// [`AuthError::InvalidSession`] when the token is unknown, revoked or expired.
    pub async fn validate_token(&self, token: &str) -> Result<Session, AuthError> {
        self.validate(&SessionKey::of_token(token)).await
    }

    /// Like [`Auth::validate_token`], for a session already known by its key.
    ///
    /// # Errors
    /// [`AuthError::InvalidSession`] when the session is gone or expired.
    pub async fn validate(&self, key: &SessionKey) -> Result<Session, AuthError> {
        sessions::validate(&self.inner.kv, &self.inner.config, self.inner.clock.now_ms(), key).await
    }

    /// Replaces a session with a new one (new token, same account, same absolute end); the old
    /// token stops working. Of concurrent refreshes of one session exactly one succeeds, and a
    /// session ended meanwhile (by [`Auth::logout_everywhere`], say) is not replaced.
    ///
    /// # Errors
    /// [`AuthError::InvalidSession`] when the old session is gone or expired, or another refresh
    /// replaced it first.
    pub async fn refresh(&self, key: &SessionKey) -> Result<IssuedSession, AuthError> {
        let old = self.validate(key).await?;
        sessions::rotate(&self.inner.kv, &self.inner.config, self.inner.clock.now_ms(), &old).await
    }

    /// Ends one session. Ending a session that is already gone is not an error.
    ///
    /// # Errors
    /// [`AuthError::Store`] when Redis is down.
    pub async fn logout(&self, session: &Session) -> Result<(), AuthError> {
        self.inner.kv.session_delete(session.key.as_str(), &session.account_id.to_string()).await?;
        Ok(())
    }

    /// Ends every session of an account and returns the keys of the sessions that ended.
    ///
    /// # Errors
    /// [`AuthError::Store`] when Redis is down.
    pub async fn logout_everywhere(&self, account_id: Uuid) -> Result<Vec<SessionKey>, AuthError> {
        let ended = self.inner.kv.sessions_delete_all(&account_id.to_string()).await?;
        Ok(ended.into_iter().map(SessionKey::from_hash).collect())
    }

    /// The account with this id.
    ///
    /// # Errors
    /// [`AuthError::UnknownAccount`] when there is none.
    pub async fn account(&self, account_id: Uuid) -> Result<Account, AuthError> {
        store::find_by_id(&self.inner.shard, account_id).await?.ok_or(AuthError::UnknownAccount)
    }

    /// The account with this username (in any case).
    ///
    /// # Errors
    /// [`AuthError::UnknownAccount`] when there is none.
    pub async fn account_by_username(&self, username: &str) -> Result<Account, AuthError> {
        let found = store::find_by_username(&self.inner.shard, username.to_ascii_lowercase()).await?;
        found.map(|(account, _, _)| account).ok_or(AuthError::UnknownAccount)
    }

    /// Whether an operator disabled the account.
    ///
    /// # Errors
    /// [`AuthError::UnknownAccount`] when there is none.
    pub async fn is_disabled(&self, account_id: Uuid) -> Result<bool, AuthError> {
        store::is_disabled(&self.inner.shard, account_id).await?.ok_or(AuthError::UnknownAccount)
    }

    /// Disables or re-enables an account. A disabled account cannot log in; its existing sessions
    /// are not touched here: the caller ends them ([`Auth::logout_everywhere`]) *after* this
    /// returns, which together with the check at the end of [`Auth::login`] leaves no session
    /// behind.
    ///
    /// # Errors
    /// [`AuthError::UnknownAccount`] when there is none.
    pub async fn set_disabled(&self, account_id: Uuid, disabled: bool) -> Result<(), AuthError> {
        if !store::set_disabled(&self.inner.shard, account_id, disabled).await? {
            return Err(AuthError::UnknownAccount);
        }
        tracing::info!(%account_id, disabled, "account disabled flag set");
        Ok(())
    }

    /// The number of the current throttling window, and how long until it ends. Fixed windows
    /// numbered from the injected clock, so tests move between windows by moving the clock, and
    /// the counters expire by themselves in Redis.
    fn throttle_window(&self) -> (u64, Duration) {
        let window_ms =
            u64::try_from(self.inner.config.throttle_window.as_millis()).unwrap_or(u64::MAX).max(1);
        let now_ms = self.inner.clock.now_ms();
        (now_ms / window_ms, Duration::from_millis(window_ms - now_ms % window_ms))
    }

    fn throttle_keys(&self, username_key: &str, client: IpAddr) -> ThrottleKeys {
        let (window, retry_after) = self.throttle_window();
        let network = throttled_network(client);
        // The username as typed comes last and after its own prefix: whatever characters it
        // holds, no key of one kind can spell a key of another.
        ThrottleKeys {
            account_from_address: format!("login-fail:account-from:{window}:{network}/{username_key}"),
            account: format!("login-fail:account:{window}:{username_key}"),
            address: format!("login-fail:addr:{window}:{network}"),
            retry_after,
        }
    }

    /// Counts this login against the account's limits (from this address, and from all) and the
    /// address's before its password is checked, or refuses it if any limit is used up. Counting
    /// only after a failure would let concurrent attempts all pass the check before any of them
    /// was counted.
    async fn count_attempt(&self, keys: &ThrottleKeys) -> Result<(), AuthError> {
        let config = &self.inner.config;
        let counters = [
            (keys.account_from_address.as_str(), config.account_failure_limit),
            (keys.account.as_str(), config.account_failure_limit.saturating_mul(ACCOUNT_FAILURE_ADDRESSES)),
            (keys.address.as_str(), config.address_failure_limit),
        ];
        if !self.inner.kv.counters_hit_below(&counters, config.throttle_window).await? {
            return Err(AuthError::Throttled { retry_after: keys.retry_after });
        }
        Ok(())
    }

    /// Takes back what [`Auth::count_attempt`] counted, for a login that turned out not to be a
    /// failure.
    async fn uncount_attempt(&self, keys: &ThrottleKeys) -> Result<(), AuthError> {
        self.inner.kv.counter_undo_hit(&keys.account_from_address).await?;
        self.inner.kv.counter_undo_hit(&keys.account).await?;
        self.inner.kv.counter_undo_hit(&keys.address).await?;
        Ok(())
    }

    /// The account and whether it is disabled, if `password` is its password; `None` for a wrong
    /// password and for an unknown username alike, after about the same time.
    async fn check_password(
        &self,
        username_key: String,
        password: &str,
    ) -> Result<Option<(Account, bool)>, AuthError> {
        let found = store::find_by_username(&self.inner.shard, username_key).await?;
        let verified = match &found {
            Some((_, password_hash, _)) => {
                self.inner.hasher.verify(password.to_owned(), password_hash.clone()).await?
            }
            None => {
                self.inner.hasher.verify_dummy(password.to_owned()).await?;
                false
            }
        };
        Ok(found.filter(|_| verified).map(|(account, _, disabled)| (account, disabled)))
    }
}

/// The network a client address is throttled as: an IPv4 address alone, but an IPv6 address's
/// /64, since one subscriber usually holds a whole /64 and could otherwise take a fresh address
/// per guess. An IPv4 address mapped into IPv6 counts as the IPv4 address. The gateway caps
/// connections per client address by the same networks.
pub fn throttled_network(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

struct ThrottleKeys {
    account_from_address: String,
    account: String,
    address: String,
    retry_after: Duration,
}

fn validate_username(username: &str) -> Result<(), AuthError> {
    let n_chars = username.chars().count();
    if !(USERNAME_MIN_CHARS..=USERNAME_MAX_CHARS).contains(&n_chars) {
        return Err(AuthError::InvalidUsername(format!(
            "a username has {USERNAME_MIN_CHARS} to {USERNAME_MAX_CHARS} characters"
        )));
    }
    if !username.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(AuthError::InvalidUsername(
            "a username uses only letters a-z, digits, '_' and '-'".into(),
        ));
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return Err(AuthError::InvalidPassword(format!(
            "a password has at least {PASSWORD_MIN_CHARS} characters"
        )));
    }
    if password.len() > PASSWORD_MAX_BYTES {
        return Err(AuthError::InvalidPassword(format!("a password has at most {PASSWORD_MAX_BYTES} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_subscriber_is_throttled_as_its_whole_slash_64() {
        let network = |address: &str| throttled_network(address.parse().expect("an address")).to_string();
        assert_eq!(network("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(network("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_eq!(network("2001:db8:1:3::1"), "2001:db8:1:3::");
        assert_eq!(network("203.0.113.7"), "203.0.113.7");
        assert_eq!(network("::ffff:203.0.113.7"), "203.0.113.7");
    }

    #[test]
    fn usernames_follow_the_rules() {
        let check = |name: &str, ok: bool| assert_eq!(validate_username(name).is_ok(), ok, "{name:?}");
        check("ada", true);
        check("Ada_Lovelace-1815", true);
        check("ab", false);
        check(&"a".repeat(25), false);
        check("ada lovelace", false);
        check("ädä", false);
        check("ada\0", false);
        check("", false);
    }

    #[test]
    fn passwords_follow_the_rules() {
        let check =
            |password: &str, ok: bool| assert_eq!(validate_password(password).is_ok(), ok, "{password:?}");
        check("12345678", true);
        check("1234567", false);
        check(&"x".repeat(128), true);
        check(&"x".repeat(129), false);
        // Eight characters of two bytes each: long enough, short enough.
        check(&"é".repeat(8), true);
    }
}
