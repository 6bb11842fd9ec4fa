//! Integration tests of the matchmaking domain on a real `redis-server` and a real `match.db`,
//! with time under the test's control (`ManualClock`).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

mod flows;
mod rating;
mod support;
