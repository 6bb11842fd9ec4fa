//! The load test's integration tests: each scenario runs for a couple of seconds with a handful of
//! clients against a real gateway (in process, on port 0) backed by a real `redis-server`, and must
//! finish without errors with the same request counts the gateway's `/metrics` saw.

mod scenarios;
mod support;
