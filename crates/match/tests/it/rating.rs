//! The Elo arithmetic against values worked out by hand.

use matchmaking::rating::{expected_score, team_deltas};

fn close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-3, "{actual} is not {expected}");
}

#[test]
fn equal_ratings_expect_half_and_move_by_half_k() {
    close(expected_score(1500.0, 1500.0), 0.5);
    let deltas = team_deltas(&[1500.0, 1500.0], Some(0), 32.0);
    close(deltas[0], 16.0);
    close(deltas[1], -16.0);
    let draw = team_deltas(&[1500.0, 1500.0], None, 32.0);
    close(draw[0], 0.0);
}

#[test]
fn a_400_point_favourite_expects_ten_to_one() {
    // 1 / (1 + 10^(-1)) = 10/11.
    close(expected_score(1900.0, 1500.0), 10.0 / 11.0);
    // The underdog wins: +32 × 10/11 = 29.091; the favourite loses as much.
    let deltas = team_deltas(&[1900.0, 1500.0], Some(1), 32.0);
    close(deltas[1], 29.0909);
    close(deltas[0], -29.0909);
    // 1600 vs 1400 won by the favourite: E = 1/(1+10^-0.5) = 0.75975, +32 × 0.24025 = 7.688.
    close(team_deltas(&[1600.0, 1400.0], Some(0), 32.0)[0], 7.688);
}

#[test]
fn three_teams_score_every_pair_and_conserve_the_sum() {
    let deltas = team_deltas(&[1500.0, 1500.0, 1500.0], Some(2), 30.0);
    // The winner beat both (+15 each, mean 15); the losers lost once and drew once (-15 + 0)/2.
    close(deltas[2], 15.0);
    close(deltas[0], -7.5);
    close(deltas.iter().sum(), 0.0);
}
