//! Elo ratings for teams.
//!
//! A team's rating is the mean of its players' ratings. With two teams, team A's expected score
//! against B is `E = 1 / (1 + 10^((R_B - R_A) / 400))`, and every player of A moves by
//! `K × (S - E)`, where `S` is 1 for a win, 0.5 for a draw and 0 for a loss. With more than two
//! teams every pair of teams is scored like that (the winner beat each other team; two losing
//! teams drew with each other) and a team's change is the mean over its opponents, so the
//! ratings of a match always sum to what they summed to before (for equal team sizes).

/// The rating of a player who has never finished a match.
pub const INITIAL_RATING: f64 = 1500.0;
/// Default K-factor: the most a player's rating moves after one match against an equal team is
/// K/2 (16 points).
pub const DEFAULT_K_FACTOR: f64 = 32.0;
/// Largest K-factor the configuration accepts: far above any useful one (chess uses 10 to 40),
/// and small enough that ratings stay finite however many matches are played, since one result
/// moves a rating by at most K. An unbounded K let ratings reach infinity and then NaN, which
/// `match.db` cannot store, so such matches could never finish.
pub const K_FACTOR_MAX: f64 = 1000.0;

/// The chance that a team rated `rating` beats one rated `opponent` (a draw counts half).
pub fn expected_score(rating: f64, opponent: f64) -> f64 {
    1.0 / (1.0 + 10f64.powf((opponent - rating) / 400.0))
}

/// The rating change of every player of each team, given each team's mean rating and the
/// winning team (`None`: a draw). Panics never; a `winner` out of range scores as a draw.
pub fn team_deltas(team_ratings: &[f64], winner: Option<usize>, k_factor: f64) -> Vec<f64> {
    let n_teams = team_ratings.len();
    if n_teams < 2 {
        return vec![0.0; n_teams];
    }
    let score = |team: usize, other: usize| match winner {
        Some(w) if w == team => 1.0,
        Some(w) if w == other => 0.0,
        _ => 0.5,
    };
    (0..n_teams)
        .map(|team| {
            let total: f64 = (0..n_teams)
                .filter(|other| *other != team)
                .map(|other| score(team, other) - expected_score(team_ratings[team], team_ratings[other]))
                .sum();
            k_factor * total / (n_teams - 1) as f64
        })
        .collect()
}
