//! Inventory messages: requests, replies and events of the inventory domain, nested under
//! [`crate::Request::Inventory`], [`crate::Reply::Inventory`] and [`crate::Event::Inventory`] so each
//! domain's messages live in one file.
//!
//! A player lists, consumes and trades their own items. There is deliberately no request that
//! grants items: grants are a server-side power (the admin port's `POST /inventory/grant`, with
//! the service credential), never a player's.
//!
//! Every request that changes something carries an `idempotency_key` chosen by the client (1 to
//! [`IDEMPOTENCY_KEY_MAX_BYTES`] printable ASCII bytes, unique per account): a retry with the same
//! key returns the first success and applies nothing twice, also across a server restart.
//!
//! The same rules as in the crate root apply when this schema changes: append variants at the
//! end, update `PROTOCOL.md` and the round-trip test below.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AccountId;

/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_MAX_BYTES: usize = 64;
/// Most lines (distinct items) on one side of a trade offer.
pub const OFFER_LINES_MAX: usize = 16;

/// A quantity of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemStack {
    /// The catalogue's id of the item.
    pub item_id: String,
    /// How many: at least 1 and at most the item's `max_stack`.
    pub quantity: u64,
}

/// One item of the catalogue the server loaded at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueItem {
    /// Stable id (`a-z`, `0-9`, `_`, `-`, `.`; at most 64 bytes).
    pub item_id: String,
    /// Display name.
    pub name: String,
    /// A unique item is held at most once per player (`max_stack` is then 1).
    pub unique: bool,
    /// Most of this item one player may hold.
    pub max_stack: u64,
}

/// Where a trade offer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferState {
    /// Waiting for the recipient.
    Open,
    /// The recipient accepted: both sides were swapped in one transaction.
    Accepted,
    /// The recipient declined; nothing moved.
    Declined,
    /// The offerer withdrew it; nothing moved.
    Cancelled,
    /// Nobody acted before `expires_at_ms`; nothing moved.
    Expired,
}

/// A trade offer: `from` gives `gives` to `to` in exchange for `wants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeOffer {
    /// The offer's id.
    pub offer_id: Uuid,
    /// The offerer.
    pub from: AccountId,
    /// The recipient, who may accept or decline.
    pub to: AccountId,
    /// What the offerer gives.
    pub gives: Vec<ItemStack>,
    /// What the offerer wants in return.
    pub wants: Vec<ItemStack>,
    /// Where the offer stands.
    pub state: OfferState,
    /// When it was made (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// When it expires if still open (milliseconds since the Unix epoch).
    pub expires_at_ms: u64,
}

/// Inventory requests. Each applies only to the authenticated player.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryRequest {
    /// The items the server knows. Answered with [`InventoryReply::Catalogue`].
    Catalogue,
    /// What this player holds. Answered with [`InventoryReply::Holdings`].
    Holdings,
    /// Uses up `quantity` of an item this player holds. Answered with [`InventoryReply::Consumed`].
    Consume {
        /// The item.
        item_id: String,
        /// How many, at least 1.
        quantity: u64,
        /// The client's key for this change (see the module doc).
        idempotency_key: String,
    },
    /// Offers a trade to another player, who gets [`InventoryEvent::OfferReceived`]. The offerer
    /// must hold `gives` now and still at acceptance; nothing is reserved meanwhile. Answered
    /// with [`InventoryReply::Offer`].
    MakeOffer {
        /// The recipient; not this player.
        to: AccountId,
        /// What this player gives: at most [`OFFER_LINES_MAX`] distinct items.
        gives: Vec<ItemStack>,
        /// What this player wants in return: at most [`OFFER_LINES_MAX`] distinct items.
        wants: Vec<ItemStack>,
        /// The client's key for this change.
        idempotency_key: String,
    },
    /// Accepts an open offer made to this player: both holdings are re-checked and everything is
    /// swapped in one transaction, or nothing is. Answered with [`InventoryReply::Offer`].
    AcceptOffer {
        /// The offer.
        offer_id: Uuid,
        /// The client's key for this change.
        idempotency_key: String,
    },
    /// Declines an open offer made to this player. Answered with [`InventoryReply::Offer`].
    DeclineOffer {
        /// The offer.
        offer_id: Uuid,
        /// The client's key for this change.
        idempotency_key: String,
    },
    /// Withdraws an open offer this player made. Answered with [`InventoryReply::Offer`].
    CancelOffer {
        /// The offer.
        offer_id: Uuid,
        /// The client's key for this change.
        idempotency_key: String,
    },
    /// The open offers this player made or received. Answered with [`InventoryReply::Offers`].
    Offers,
}

impl InventoryRequest {
    /// A short stable name of the request's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            InventoryRequest::Catalogue => "inventory_catalogue",
            InventoryRequest::Holdings => "inventory_holdings",
            InventoryRequest::Consume { .. } => "inventory_consume",
            InventoryRequest::MakeOffer { .. } => "inventory_make_offer",
            InventoryRequest::AcceptOffer { .. } => "inventory_accept_offer",
            InventoryRequest::DeclineOffer { .. } => "inventory_decline_offer",
            InventoryRequest::CancelOffer { .. } => "inventory_cancel_offer",
            InventoryRequest::Offers => "inventory_offers",
        }
    }
}

/// Inventory results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryReply {
    /// The catalogue, sorted by item id.
    Catalogue {
        /// Every item.
        items: Vec<CatalogueItem>,
    },
    /// What the player holds, sorted by item id; items held zero times are absent.
    Holdings {
        /// One stack per item held.
        items: Vec<ItemStack>,
    },
    /// The consumption was applied (or, on a retry, had been).
    Consumed {
        /// The item.
        item_id: String,
        /// How many the player held right after this consumption.
        remaining: u64,
    },
    /// The offer as this request left it (`open` after `make_offer`, `accepted`, `declined` or
    /// `cancelled` after the others).
    Offer(TradeOffer),
    /// Open offers made or received, newest first.
    Offers {
        /// The offers.
        offers: Vec<TradeOffer>,
    },
}

/// Inventory events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryEvent {
    /// Another player made this player an offer.
    OfferReceived(TradeOffer),
    /// An offer this player is part of was accepted, declined or cancelled by the other side.
    OfferSettled(TradeOffer),
    /// The server granted this player items.
    Granted {
        /// What was granted.
        item_id: String,
        /// How many were granted.
        quantity: u64,
        /// How many the player holds now.
        total: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMessage, Event, Reply, Request};

    fn offer() -> TradeOffer {
        TradeOffer {
            offer_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_00aa),
            from: AccountId(Uuid::from_u128(1)),
            to: AccountId(Uuid::from_u128(2)),
            gives: vec![ItemStack { item_id: "gold".into(), quantity: 10 }],
            wants: vec![ItemStack { item_id: "sword".into(), quantity: 1 }],
            state: OfferState::Open,
            created_at_ms: 1_700_000_000_000,
            expires_at_ms: 1_700_000_600_000,
        }
    }

    #[test]
    fn every_inventory_message_round_trips_through_both_encodings() {
        let key = || "k1".to_owned();
        let requests = [
            InventoryRequest::Catalogue,
            InventoryRequest::Holdings,
            InventoryRequest::Consume { item_id: "potion".into(), quantity: 2, idempotency_key: key() },
            InventoryRequest::MakeOffer {
                to: AccountId(Uuid::from_u128(2)),
                gives: offer().gives,
                wants: offer().wants,
                idempotency_key: key(),
            },
            InventoryRequest::AcceptOffer { offer_id: offer().offer_id, idempotency_key: key() },
            InventoryRequest::DeclineOffer { offer_id: offer().offer_id, idempotency_key: key() },
            InventoryRequest::CancelOffer { offer_id: offer().offer_id, idempotency_key: key() },
            InventoryRequest::Offers,
        ];
        let replies = [
            InventoryReply::Catalogue {
                items: vec![CatalogueItem {
                    item_id: "gold".into(),
                    name: "Gold".into(),
                    unique: false,
                    max_stack: 1_000_000,
                }],
            },
            InventoryReply::Holdings { items: offer().gives },
            InventoryReply::Consumed { item_id: "potion".into(), remaining: 3 },
            InventoryReply::Offer(offer()),
            InventoryReply::Offers { offers: vec![offer()] },
        ];
        let events = [
            InventoryEvent::OfferReceived(offer()),
            InventoryEvent::OfferSettled(TradeOffer { state: OfferState::Accepted, ..offer() }),
            InventoryEvent::Granted { item_id: "gold".into(), quantity: 5, total: 15 },
        ];
        crate::test_support::assert_round_trips(
            requests.iter().cloned().map(Request::Inventory),
            replies.iter().cloned().map(Reply::Inventory),
            events.iter().cloned().map(Event::Inventory),
        );
    }

    #[test]
    fn json_shapes_match_protocol_md() {
        let message = ClientMessage {
            id: 40,
            request: Request::Inventory(InventoryRequest::Consume {
                item_id: "potion".into(),
                quantity: 1,
                idempotency_key: "use-7f3a".into(),
            }),
        };
        assert_eq!(
            serde_json::to_string(&message).expect("json"),
            r#"{"id":40,"request":{"inventory":{"consume":{"item_id":"potion","quantity":1,"idempotency_key":"use-7f3a"}}}}"#
        );
        let holdings = ClientMessage { id: 41, request: Request::Inventory(InventoryRequest::Holdings) };
        assert_eq!(
            serde_json::to_string(&holdings).expect("json"),
            r#"{"id":41,"request":{"inventory":"holdings"}}"#
        );
    }
}
