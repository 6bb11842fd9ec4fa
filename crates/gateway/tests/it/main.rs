//! Integration tests of the gateway: real gateways, a real Redis, real WebSockets.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod support;

mod auth_flows;
mod bad_input;
mod chat;
mod connections;
mod inventory;
mod matchmaking;
mod ops;
mod player_state;
mod processes;
mod sessions;
