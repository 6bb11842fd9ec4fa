//! Inventory messages: requests, replies and events of the inventory domain, nested under
//! [`crate::Request::Inventory`], [`crate::Reply::Inventory`] and [`crate::Event::Inventory`] so each
//! domain's messages live in one file. (Filled by the inventory issue.)

use serde::{Deserialize, Serialize};

/// Inventory requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryRequest {}

impl InventoryRequest {
    /// A short stable name of the request's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match *self {}
    }
}

/// Inventory results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryReply {}

/// Inventory events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryEvent {}
