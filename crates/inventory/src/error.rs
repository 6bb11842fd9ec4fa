//! The ways an inventory operation fails. Every failure changes nothing.

use uuid::Uuid;

use crate::OfferState;

/// Why an inventory operation failed; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The item id is not in the catalogue.
    #[error("unknown item: {0}")]
    UnknownItem(String),
    /// A quantity is zero or larger than the item's `max_stack`.
    #[error("invalid quantity: {0}")]
    InvalidQuantity(String),
    /// Some other value breaks the rules: an idempotency key, a grant reason, an offer's lines,
    /// or a trade with oneself.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The offer exists but the caller may not do this to it (not the recipient, not the offerer).
    #[error("not allowed: {0}")]
    NotAllowed(&'static str),
    /// No offer has this id.
    #[error("unknown offer {0}")]
    UnknownOffer(Uuid),
    /// The player holds fewer of an item than the operation takes.
    #[error("not enough {item_id}: {held} held, {needed} needed")]
    Insufficient {
        /// The item.
        item_id: String,
        /// How many are held.
        held: u64,
        /// How many the operation takes.
        needed: u64,
    },
    /// The operation would give a player more of an item than its `max_stack` (a unique item
    /// twice, for one).
    #[error("{item_id}: {account_id} would hold more than the {max_stack} allowed")]
    StackFull {
        /// Who would receive too many.
        account_id: Uuid,
        /// The item.
        item_id: String,
        /// The item's `max_stack`.
        max_stack: u64,
    },
    /// Accepting would take from the offerer more of an item than they still hold. Names the
    /// item, never how many the offerer holds: that is theirs to know.
    #[error("the offerer no longer holds the {item_id} offered")]
    OffererLacks {
        /// The item.
        item_id: String,
    },
    /// Accepting would give the offerer more of an item than its `max_stack`.
    #[error("the offerer cannot hold the {item_id} asked for")]
    OffererFull {
        /// The item.
        item_id: String,
    },
    /// Accepting would move an item the catalogue no longer has (removed since the offer was
    /// made): the offer can only be declined or cancelled.
    #[error("the offer names {item_id}, which is no longer in the catalogue")]
    ItemRetired {
        /// The item.
        item_id: String,
    },
    /// The offer was already accepted, declined or cancelled.
    #[error("the offer is already {0:?}")]
    OfferClosed(OfferState),
    /// The offer expired before this request.
    #[error("the offer expired")]
    OfferExpired,
    /// The player already has the most open offers allowed.
    #[error("too many open offers (at most {0})")]
    TooManyOpenOffers(u32),
    /// The idempotency key was already used, by this caller, for a different request.
    #[error("idempotency key already used for a different request")]
    KeyReused,
    /// The catalogue file cannot be read or breaks a rule.
    #[error("catalogue: {0}")]
    Catalogue(String),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The inventory writer has stopped (the server is shutting down); nothing was applied.
    #[error("the inventory is shutting down")]
    ShuttingDown,
    /// `inventory.db` failed.
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    /// A stored record could not be read back (a bug or tampering).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<shard::rusqlite::Error> for InventoryError {
    fn from(error: shard::rusqlite::Error) -> Self {
        InventoryError::Shard(shard::ShardError::Sqlite(error))
    }
}
