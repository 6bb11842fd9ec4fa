//! The matchmaking configuration: the modes, the rating window, the matchmaker's timing and the
//! Elo K-factor. It deserialises from the gateway's TOML (`[matchmaking]`, durations in seconds).

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use crate::MatchError;
use crate::pass::{Shape, Window};
use crate::rating::{DEFAULT_K_FACTOR, K_FACTOR_MAX};

/// Default window of a ticket that has just joined, in rating points.
pub const DEFAULT_WINDOW_INITIAL: f64 = 50.0;
/// Default widening of the window per second of waiting, in rating points.
pub const DEFAULT_WINDOW_WIDEN_PER_SEC: f64 = 10.0;
/// Default widest window, in rating points (reached after 35 s with the defaults).
pub const DEFAULT_WINDOW_MAX: f64 = 400.0;
/// Default time between matchmaker passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default lifetime of the matchmaker lease; must exceed the interval.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// Default time a queued player may be disconnected before their ticket is removed.
pub const DEFAULT_DISCONNECT_GRACE: Duration = Duration::from_secs(30);
/// Longest mode name, in bytes.
pub const MODE_NAME_MAX_BYTES: usize = 32;
/// Most players one match may have.
pub const MATCH_PLAYERS_MAX: usize = 64;

/// One game mode: `n_teams` teams of `team_size` players.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeConfig {
    /// The mode's name, as clients ask for it: 1 to [`MODE_NAME_MAX_BYTES`] bytes of `a-z`,
    /// `0-9`, `_`, `-`; unique.
    pub name: String,
    /// Players per team, at least 1.
    pub team_size: u32,
    /// Teams per match, at least 2; `team_size × n_teams` at most [`MATCH_PLAYERS_MAX`].
    pub n_teams: u32,
}

impl ModeConfig {
    /// A mode of `n_teams` teams of `team_size`.
    pub fn new(name: &str, team_size: u32, n_teams: u32) -> ModeConfig {
        ModeConfig { name: name.to_owned(), team_size, n_teams }
    }

    /// The shape the pass forms.
    pub fn shape(&self) -> Shape {
        Shape { team_size: self.team_size as usize, n_teams: self.n_teams as usize }
    }
}

/// Configuration of the matchmaking domain.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchmakingConfig {
    /// The modes players may queue for; default `duel` (1v1) and `team` (2v2); at least one.
    pub modes: Vec<ModeConfig>,
    /// Window of a ticket that has just joined; default [`DEFAULT_WINDOW_INITIAL`]; ≥ 0.
    pub window_initial: f64,
    /// Widening of the window per second waited; default [`DEFAULT_WINDOW_WIDEN_PER_SEC`]; ≥ 0.
    pub window_widen_per_sec: f64,
    /// Widest window; default [`DEFAULT_WINDOW_MAX`]; at least `window_initial`.
    pub window_max: f64,
    /// Time between matchmaker passes; default [`DEFAULT_INTERVAL`]; positive.
    #[serde(with = "seconds")]
    pub interval: Duration,
    /// The matchmaker lease (one matchmaker across processes); default [`DEFAULT_LEASE`]; must
    /// exceed `interval`.
    #[serde(with = "seconds")]
    pub lease: Duration,
    /// A queued player disconnected this long loses their ticket; default
    /// [`DEFAULT_DISCONNECT_GRACE`].
    #[serde(with = "seconds")]
    pub disconnect_grace: Duration,
    /// Elo K-factor; default [`DEFAULT_K_FACTOR`]; positive, at most [`K_FACTOR_MAX`].
    pub k_factor: f64,
}

impl Default for MatchmakingConfig {
    fn default() -> Self {
        MatchmakingConfig {
            modes: vec![ModeConfig::new("duel", 1, 2), ModeConfig::new("team", 2, 2)],
            window_initial: DEFAULT_WINDOW_INITIAL,
            window_widen_per_sec: DEFAULT_WINDOW_WIDEN_PER_SEC,
            window_max: DEFAULT_WINDOW_MAX,
            interval: DEFAULT_INTERVAL,
            lease: DEFAULT_LEASE,
            disconnect_grace: DEFAULT_DISCONNECT_GRACE,
            k_factor: DEFAULT_K_FACTOR,
        }
    }
}

impl MatchmakingConfig {
    /// The rating window the pass uses.
    pub fn window(&self) -> Window {
        Window {
            initial: self.window_initial,
            widen_per_sec: self.window_widen_per_sec,
            max: self.window_max,
        }
    }

    /// The mode called `name`.
    pub fn mode(&self, name: &str) -> Option<&ModeConfig> {
        self.modes.iter().find(|mode| mode.name == name)
    }

    /// Checks every rule in the fields' docs.
    ///
    /// # Errors
    /// [`MatchError::Config`] naming the first broken rule.
    pub fn validate(&self) -> Result<(), MatchError> {
        let fail = |message: String| Err(MatchError::Config(message));
        if self.modes.is_empty() {
            return fail("at least one matchmaking mode is needed".into());
        }
        let mut names = HashSet::new();
        for mode in &self.modes {
            if !valid_mode_name(&mode.name) || !names.insert(mode.name.as_str()) {
                return fail(format!(
                    "mode {:?}: names are unique, 1 to {MODE_NAME_MAX_BYTES} bytes of a-z 0-9 _ -",
                    mode.name
                ));
            }
            let n_players = mode.team_size.saturating_mul(mode.n_teams) as usize;
            if mode.team_size == 0 || mode.n_teams < 2 || n_players > MATCH_PLAYERS_MAX {
                return fail(format!(
                    "mode {}: team_size ≥ 1, n_teams ≥ 2, at most {MATCH_PLAYERS_MAX} players",
                    mode.name
                ));
            }
        }
        let finite = [self.window_initial, self.window_widen_per_sec, self.window_max, self.k_factor]
            .iter()
            .all(|value| value.is_finite() && *value >= 0.0);
        if !finite
            || self.window_max < self.window_initial
            || self.k_factor <= 0.0
            || self.k_factor > K_FACTOR_MAX
        {
            return fail(format!(
                "windows must be finite and ≥ 0 with window_max ≥ window_initial; 0 < k_factor ≤ {K_FACTOR_MAX}"
            ));
        }
        if self.interval.is_zero() || self.lease <= self.interval {
            return fail("the matchmaking interval must be positive and below its lease".into());
        }
        Ok(())
    }
}

/// Whether `name` may name a mode.
pub fn valid_mode_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MODE_NAME_MAX_BYTES
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Durations in TOML are whole or fractional seconds.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
