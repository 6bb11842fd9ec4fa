//! Matchmaking: queues, the matchmaker, match records, ratings and history.
//!
//! Will own: `match.db` (matches, results, ratings), the queue of tickets kept in Redis through
//! the `kv` crate, the matchmaker lease, and the rating arithmetic.
//!
//! Never: delivers events itself or touches another domain's shard. (The package is called
//! `matchmaking` because `match` is a Rust keyword; the folder keeps the domain's name.)
//!
//! Empty until the match issue lands; the crate exists so the workspace has its final shape.
