//! Times one matchmaking pass over 10,000 waiting tickets (the target is under 50 ms), for the
//! default modes' shapes, and checks that equal ratings all match within one pass.
//!
//! Run: `cargo run --release -p matchmaking --example pass_bench`

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::time::Instant;

use matchmaking::pass::{Shape, Ticket, Window, form_matches};
use uuid::Uuid;

/// Tickets per pass.
const N_TICKETS: usize = 10_000;
/// Passes timed per case; the median is reported.
const N_RUNS: usize = 21;
const NOW_MS: u64 = 1_700_000_060_000;

fn main() {
    let window = Window {
        initial: matchmaking::DEFAULT_WINDOW_INITIAL,
        widen_per_sec: matchmaking::DEFAULT_WINDOW_WIDEN_PER_SEC,
        max: matchmaking::DEFAULT_WINDOW_MAX,
    };
    // Ratings spread over 1000..2000 and waits over the last minute, from a fixed seed.
    let mut seed: u64 = 42;
    let mut random = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let spread: Vec<Ticket> = (0..N_TICKETS)
        .map(|i| Ticket {
            player_id: Uuid::from_u128(i as u128 + 1),
            rating: 1000.0 + (random() % 100_000) as f64 / 100.0,
            enqueued_at_ms: NOW_MS - random() % 60_000,
        })
        .collect();
    let equal: Vec<Ticket> =
        spread.iter().map(|t| Ticket { rating: 1500.0, enqueued_at_ms: NOW_MS, ..*t }).collect();

    for (name, tickets) in [("spread ratings", &spread), ("equal ratings", &equal)] {
        for (mode, shape) in
            [("1v1", Shape { team_size: 1, n_teams: 2 }), ("2v2", Shape { team_size: 2, n_teams: 2 })]
        {
            let mut times = Vec::with_capacity(N_RUNS);
            let mut n_matched = 0;
            for _ in 0..N_RUNS {
                let started = Instant::now();
                let proposals = form_matches(tickets, shape, &window, NOW_MS);
                times.push(started.elapsed());
                n_matched = proposals.len() * shape.n_players();
            }
            times.sort();
            println!(
                "{name:>14}, {mode}: {N_TICKETS} tickets, median pass {:.2} ms (max {:.2} ms), {n_matched} matched",
                times[N_RUNS / 2].as_secs_f64() * 1e3,
                times[N_RUNS - 1].as_secs_f64() * 1e3,
            );
        }
    }
}
