//! Chat messages: requests, replies and events of the chat domain, nested under
//! [`crate::Request::Chat`], [`crate::Reply::Chat`] and [`crate::Event::Chat`] so each
//! domain's messages live in one file. (Filled by the chat issue.)

use serde::{Deserialize, Serialize};

/// Chat requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRequest {}

impl ChatRequest {
    /// A short stable name of the request's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match *self {}
    }
}

/// Chat results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatReply {}

/// Chat events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatEvent {}
