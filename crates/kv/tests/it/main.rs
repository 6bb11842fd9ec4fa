//! Integration tests of the kv crate: one conformance suite run against both backends (the embedded
//! store and a real `redis-server`), plus the behaviours only one backend has (the embedded store's
//! file lock, reconnecting to Redis).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

// kv's own tests include the harness by path, since a dev-dependency on kv itself (to turn on the
// `testing` feature) is not wanted; other crates use `kv::testing`.
#[path = "../../src/testing.rs"]
#[allow(dead_code, reason = "not every harness function is used here")]
mod harness;

mod conformance;
mod embedded;
mod redis;
mod support;
