//! One matchmaking pass as a pure function over an in-memory list of tickets: no I/O, no clock
//! (the time is an argument), so it can be tested exactly and benchmarked alone
//! (`examples/pass_bench.rs`).
//!
//! # The rule
//! A ticket's *window* is how far from its own rating it accepts others, and it widens the longer
//! the ticket waits: `min(initial + widen_per_sec × seconds waited, max)` ([`Window::at`]). A group
//! may become a match only if the spread of its ratings (highest minus lowest) is within the
//! window of *every* ticket in it, so no player is ever matched outside their current window.
//!
//! # The search
//! Tickets are sorted by rating once and linked in that order; a formed match unlinks its
//! tickets, so later searches skip them for free. Anchors are taken oldest first (the longest
//! waiting are served first); for each, candidates are taken nearest in rating first on both
//! sides, a candidate joining only if the group still satisfies the rule, until the group is
//! full, the next candidate is further from the anchor than the group's narrowest window, or
//! [`EXAMINED_PER_PLAYER`] candidates per seat were looked at (which bounds a pass at
//! O(n log n + n × players per match)). Teams are then dealt in snake order by rating
//! (strongest to team 0, next to team 1, …, back again), which balances team means.

use std::cmp::Ordering;

use uuid::Uuid;

/// Candidates looked at per seat of a match before an anchor gives up for this pass.
pub const EXAMINED_PER_PLAYER: usize = 4;

/// A waiting player as the pass sees them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ticket {
    /// The player.
    pub player_id: Uuid,
    /// Their rating in this mode.
    pub rating: f64,
    /// When they joined the queue (ms since the Unix epoch).
    pub enqueued_at_ms: u64,
}

/// How far from their rating a ticket accepts others, by waiting time (rating points).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// The window of a ticket that has just joined.
    pub initial: f64,
    /// How much it widens per second of waiting.
    pub widen_per_sec: f64,
    /// The widest it gets.
    pub max: f64,
}

impl Window {
    /// The window of a ticket that has waited `waited_ms`.
    pub fn at(&self, waited_ms: u64) -> f64 {
        (self.initial + self.widen_per_sec * waited_ms as f64 / 1000.0).min(self.max)
    }
}

/// The shape of a match: `n_teams` teams of `team_size` players.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Players per team, at least 1.
    pub team_size: usize,
    /// Teams per match, at least 2.
    pub n_teams: usize,
}

impl Shape {
    /// Players per match.
    pub fn n_players(self) -> usize {
        self.team_size * self.n_teams
    }
}

/// A match the pass proposes: the tickets of each team, strongest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// `n_teams` teams of `team_size` tickets.
    pub teams: Vec<Vec<Ticket>>,
}

impl Proposal {
    /// Every player of the proposal, team by team.
    pub fn player_ids(&self) -> Vec<Uuid> {
        self.teams.iter().flatten().map(|ticket| ticket.player_id).collect()
    }
}

/// No neighbour in the rating order.
const NONE: usize = usize::MAX;

/// Groups `tickets` (all of one mode) into matches of `shape` by the rule in the module doc, as
/// of `now_ms`. Each ticket is in at most one proposal; tickets left over wait for a later pass.
pub fn form_matches(tickets: &[Ticket], shape: Shape, window: &Window, now_ms: u64) -> Vec<Proposal> {
    let n = tickets.len();
    let n_players = shape.n_players();
    if n_players < 2 || n < n_players || shape.n_teams < 2 {
        return Vec::new();
    }
    let windows: Vec<f64> =
        tickets.iter().map(|ticket| window.at(now_ms.saturating_sub(ticket.enqueued_at_ms))).collect();

    // The rating order, and each ticket's place in it.
    let mut by_rating: Vec<usize> = (0..n).collect();
    by_rating.sort_unstable_by(|&a, &b| {
        tickets[a].rating.total_cmp(&tickets[b].rating).then_with(|| oldest_first(&tickets[a], &tickets[b]))
    });
    let mut place = vec![0; n];
    for (at, &index) in by_rating.iter().enumerate() {
        place[index] = at;
    }
    // A doubly linked list over the rating order, of tickets not yet matched.
    let mut prev: Vec<usize> = (0..n).map(|at| if at == 0 { NONE } else { at - 1 }).collect();
    let mut next: Vec<usize> = (0..n).map(|at| if at + 1 == n { NONE } else { at + 1 }).collect();
    let mut matched = vec![false; n];

    let mut anchors: Vec<usize> = (0..n).collect();
    anchors.sort_unstable_by(|&a, &b| oldest_first(&tickets[a], &tickets[b]));

    let max_examined = EXAMINED_PER_PLAYER * n_players;
    let mut proposals = Vec::new();
    let mut group: Vec<usize> = Vec::with_capacity(n_players);
    for anchor in anchors {
        if matched[anchor] {
            continue;
        }
        let anchor_rating = tickets[anchor].rating;
        group.clear();
        group.push(anchor);
        let (mut low, mut high, mut narrowest) = (anchor_rating, anchor_rating, windows[anchor]);
        let (mut left, mut right) = (prev[place[anchor]], next[place[anchor]]);
        let mut examined = 0;
        while group.len() < n_players && examined < max_examined {
            let distance = |at: usize| {
                if at == NONE { f64::INFINITY } else { (tickets[by_rating[at]].rating - anchor_rating).abs() }
            };
            let (left_distance, right_distance) = (distance(left), distance(right));
            let take_left = left_distance <= right_distance;
            let nearest = if take_left { left_distance } else { right_distance };
            // Any further candidate would stretch the spread past the group's narrowest window.
            if nearest > narrowest {
                break;
            }
            let at = if take_left { left } else { right };
            if take_left {
                left = prev[at];
            } else {
                right = next[at];
            }
            examined += 1;
            let candidate = by_rating[at];
            let rating = tickets[candidate].rating;
            let (new_low, new_high) = (low.min(rating), high.max(rating));
            let new_narrowest = narrowest.min(windows[candidate]);
            if new_high - new_low <= new_narrowest {
                group.push(candidate);
                (low, high, narrowest) = (new_low, new_high, new_narrowest);
            }
        }
        if group.len() < n_players {
            continue;
        }
        for &member in &group {
            matched[member] = true;
            let at = place[member];
            if prev[at] != NONE {
                next[prev[at]] = next[at];
            }
            if next[at] != NONE {
                prev[next[at]] = prev[at];
            }
        }
        proposals.push(Proposal { teams: deal_teams(tickets, &mut group, shape) });
    }
    proposals
}

/// Oldest first; equal times by player id, so the order never depends on the input's order.
fn oldest_first(a: &Ticket, b: &Ticket) -> Ordering {
    a.enqueued_at_ms.cmp(&b.enqueued_at_ms).then_with(|| a.player_id.cmp(&b.player_id))
}

/// Deals the group into teams in snake order by rating, strongest first.
fn deal_teams(tickets: &[Ticket], group: &mut [usize], shape: Shape) -> Vec<Vec<Ticket>> {
    group.sort_unstable_by(|&a, &b| {
        tickets[b].rating.total_cmp(&tickets[a].rating).then_with(|| oldest_first(&tickets[a], &tickets[b]))
    });
    let mut teams: Vec<Vec<Ticket>> =
        (0..shape.n_teams).map(|_| Vec::with_capacity(shape.team_size)).collect();
    for (k, &member) in group.iter().enumerate() {
        let (round, seat) = (k / shape.n_teams, k % shape.n_teams);
        let team = if round % 2 == 0 { seat } else { shape.n_teams - 1 - seat };
        teams[team].push(tickets[member]);
    }
    teams
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUEL: Shape = Shape { team_size: 1, n_teams: 2 };
    const WINDOW: Window = Window { initial: 50.0, widen_per_sec: 10.0, max: 400.0 };

    fn ticket(id: u128, rating: f64, enqueued_at_ms: u64) -> Ticket {
        Ticket { player_id: Uuid::from_u128(id), rating, enqueued_at_ms }
    }

    fn ids(proposals: &[Proposal]) -> Vec<Vec<u128>> {
        proposals.iter().map(|p| p.player_ids().into_iter().map(|id| id.as_u128()).collect()).collect()
    }

    #[test]
    fn window_widens_with_waiting_time_up_to_the_max() {
        assert_eq!(WINDOW.at(0), 50.0);
        assert_eq!(WINDOW.at(1_500), 65.0);
        assert_eq!(WINDOW.at(35_000), 400.0);
        assert_eq!(WINDOW.at(u64::MAX), 400.0);
    }

    #[test]
    fn close_ratings_match_and_far_ones_wait_until_their_windows_widen() {
        let tickets =
            [ticket(1, 1500.0, 0), ticket(2, 1540.0, 0), ticket(3, 1700.0, 0), ticket(4, 1800.0, 0)];
        // At once: 1 and 2 are 40 apart (within 50); 3 and 4 are 100 apart.
        assert_eq!(ids(&form_matches(&tickets, DUEL, &WINDOW, 0)), [[2, 1]]);
        // After 4.9 s their windows are 99: still not. After 5 s: 100, so they match.
        assert!(form_matches(&tickets[2..], DUEL, &WINDOW, 4_900).is_empty());
        assert_eq!(ids(&form_matches(&tickets[2..], DUEL, &WINDOW, 5_000)), [[4, 3]]);
    }

    #[test]
    fn the_narrowest_window_in_a_group_decides() {
        // 1 waited long (wide window), 2 just joined (window 50): 80 apart is too far for 2.
        let tickets = [ticket(1, 1500.0, 0), ticket(2, 1580.0, 60_000)];
        assert!(form_matches(&tickets, DUEL, &WINDOW, 60_000).is_empty());
        assert_eq!(form_matches(&tickets, DUEL, &WINDOW, 63_000).len(), 1);
    }

    #[test]
    fn oldest_tickets_are_served_first_with_their_nearest_rating() {
        // 2 is oldest: its nearest is 3 (10 away), not 1 (20 away).
        let tickets = [ticket(1, 1480.0, 5), ticket(2, 1500.0, 1), ticket(3, 1510.0, 9)];
        assert_eq!(ids(&form_matches(&tickets, DUEL, &WINDOW, 10)), [[3, 2]]);
    }

    #[test]
    fn teams_are_dealt_in_snake_order() {
        let shape = Shape { team_size: 2, n_teams: 2 };
        let tickets =
            [ticket(1, 1500.0, 0), ticket(2, 1510.0, 0), ticket(3, 1520.0, 0), ticket(4, 1530.0, 0)];
        let proposals = form_matches(&tickets, shape, &WINDOW, 0);
        let teams: Vec<Vec<u128>> = proposals[0]
            .teams
            .iter()
            .map(|team| team.iter().map(|t| t.player_id.as_u128()).collect())
            .collect();
        assert_eq!(teams, [vec![4, 1], vec![3, 2]]);
    }

    #[test]
    fn equal_ratings_all_match_in_one_pass_and_nobody_twice() {
        let tickets: Vec<Ticket> = (0..1001).map(|i| ticket(i, 1500.0, 0)).collect();
        let proposals = form_matches(&tickets, DUEL, &WINDOW, 0);
        assert_eq!(proposals.len(), 500);
        let mut seen: Vec<Uuid> = proposals.iter().flat_map(Proposal::player_ids).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn too_few_tickets_form_nothing() {
        assert!(form_matches(&[ticket(1, 1500.0, 0)], DUEL, &WINDOW, 0).is_empty());
        assert!(form_matches(&[], DUEL, &WINDOW, 0).is_empty());
    }
}
