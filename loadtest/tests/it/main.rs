//! The load test's integration tests: each scenario runs for a couple of seconds with a handful of
//! clients against a real gateway (in process, on port 0) backed by a real `redis-server`, and must
//! finish without errors with the same request counts the gateway's `/metrics` saw. The
//! PostgreSQL baseline runs against the machine's PostgreSQL, which is always there, like Redis.

mod conn;
mod match_play;
mod postgres_baseline;
mod scenarios;
mod support;
