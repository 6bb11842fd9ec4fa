//! Inventory requests: wire types in, `inventory` domain calls, wire types out, plus the events
//! that tell the other side of a trade, and the service endpoints of the admin port (grants and
//! the ledger), which only a caller holding the configured service token may use. The domain
//! validates and decides; this file converts, authorises and announces.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use inventory::{Catalogue, Committer, Inventory, InventoryError, ItemStack, Offer, OfferState};
use proto::inventory::{InventoryEvent, InventoryReply, InventoryRequest};
use proto::{AccountId, ErrorBody, ErrorCode, Event, Reply};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{GatewayConfig, GatewayError, Shared, errors};

/// Ledger entries the admin port returns at most.
const LEDGER_ENTRIES_LISTED: u32 = 1000;
/// Accounts [`KnownAccounts`] remembers at most (some 3 MiB) before it starts over.
const KNOWN_ACCOUNTS_MAX: usize = 100_000;

/// Accounts known to exist, so that an offer to a recent recipient needs no read of `auth.db`.
/// Accounts are never deleted, so an entry never goes stale (a disabled account still exists and
/// still receives offers, as without the cache); the set is emptied when it is full.
#[derive(Debug, Default)]
pub(crate) struct KnownAccounts(Mutex<HashSet<Uuid>>);

impl KnownAccounts {
    fn contains(&self, account_id: Uuid) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).contains(&account_id)
    }

    fn insert(&self, account_id: Uuid) {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= KNOWN_ACCOUNTS_MAX {
            known.clear();
        }
        known.insert(account_id);
    }
}

/// Whether `account_id` exists: from [`KnownAccounts`], else from `auth.db`.
async fn check_account(shared: &Shared, account_id: Uuid) -> Result<(), ErrorBody> {
    if shared.known_accounts.contains(account_id) {
        return Ok(());
    }
    shared.auth.account(account_id).await.map_err(|error| errors::from_auth(&error))?;
    shared.known_accounts.insert(account_id);
    Ok(())
}

/// Loads the catalogue named in `config` (none: an empty catalogue, so every grant is refused)
/// and opens `inventory.db`. The caller runs the returned committer.
pub(crate) async fn open(
    config: &GatewayConfig,
    clock: clock::SharedClock,
) -> Result<(Inventory, Committer), GatewayError> {
    let catalogue = match &config.inventory_catalogue {
        Some(path) => Catalogue::load(path)?,
        None => {
            tracing::warn!(
                "no inventory catalogue configured: the catalogue is empty and every grant is refused"
            );
            Catalogue::default()
        }
    };
    tracing::info!(items = catalogue.len(), "inventory catalogue loaded");
    Ok(Inventory::open(config.data_dir.join("inventory.db"), catalogue, clock, config.inventory_config())
        .await?)
}

fn stack_from_wire(stack: proto::inventory::ItemStack) -> ItemStack {
    ItemStack { item_id: stack.item_id, quantity: stack.quantity }
}

fn stack_to_wire(stack: ItemStack) -> proto::inventory::ItemStack {
    proto::inventory::ItemStack { item_id: stack.item_id, quantity: stack.quantity }
}

fn offer_to_wire(offer: Offer) -> proto::inventory::TradeOffer {
    use proto::inventory::OfferState as Wire;
    proto::inventory::TradeOffer {
        offer_id: offer.offer_id,
        from: AccountId(offer.from),
        to: AccountId(offer.to),
        gives: offer.gives.into_iter().map(stack_to_wire).collect(),
        wants: offer.wants.into_iter().map(stack_to_wire).collect(),
        state: match offer.state {
            OfferState::Open => Wire::Open,
            OfferState::Accepted => Wire::Accepted,
            OfferState::Declined => Wire::Declined,
            OfferState::Cancelled => Wire::Cancelled,
            OfferState::Expired => Wire::Expired,
        },
        created_at_ms: offer.created_at_ms,
        expires_at_ms: offer.expires_at_ms,
    }
}

/// One inventory request of the authenticated player `own_id`; only ever their own items.
pub(crate) async fn handle(
    shared: &Shared,
    own_id: Uuid,
    request: InventoryRequest,
) -> Result<Reply, ErrorBody> {
    let inventory = &shared.inventory;
    let fail = |error: InventoryError| errors::from_inventory(&error);
    let reply = match request {
        InventoryRequest::Catalogue => InventoryReply::Catalogue {
            items: inventory
                .catalogue()
                .items()
                .map(|def| proto::inventory::CatalogueItem {
                    item_id: def.item_id.clone(),
                    name: def.name.clone(),
                    unique: def.unique,
                    max_stack: def.max_stack,
                })
                .collect(),
        },
        InventoryRequest::Holdings => InventoryReply::Holdings {
            items: inventory.holdings(own_id).await.map_err(fail)?.into_iter().map(stack_to_wire).collect(),
        },
        InventoryRequest::Consume { item_id, quantity, idempotency_key } => {
            let receipt = inventory
                .consume(own_id, ItemStack { item_id, quantity }, idempotency_key)
                .await
                .map_err(fail)?;
            InventoryReply::Consumed { item_id: receipt.value.item_id, remaining: receipt.value.quantity }
        }
        InventoryRequest::MakeOffer { to, gives, wants, idempotency_key } => {
            // The inventory knows accounts only by id: an offer to nobody is refused here.
            if to.0 != own_id {
                check_account(shared, to.0).await?;
            }
            let offer = inventory::NewOffer {
                to: to.0,
                gives: gives.into_iter().map(stack_from_wire).collect(),
                wants: wants.into_iter().map(stack_from_wire).collect(),
            };
            let receipt = inventory.make_offer(own_id, offer, idempotency_key).await.map_err(fail)?;
            let offer = offer_to_wire(receipt.value);
            if !receipt.replayed {
                announce(shared, offer.to.0, InventoryEvent::OfferReceived(offer.clone())).await;
            }
            InventoryReply::Offer(offer)
        }
        InventoryRequest::AcceptOffer { offer_id, idempotency_key } => {
            settled(shared, own_id, inventory.accept(own_id, offer_id, idempotency_key).await.map_err(fail)?)
                .await
        }
        InventoryRequest::DeclineOffer { offer_id, idempotency_key } => {
            settled(shared, own_id, inventory.decline(own_id, offer_id, idempotency_key).await.map_err(fail)?)
                .await
        }
        InventoryRequest::CancelOffer { offer_id, idempotency_key } => {
            settled(shared, own_id, inventory.cancel(own_id, offer_id, idempotency_key).await.map_err(fail)?)
                .await
        }
        InventoryRequest::Offers => InventoryReply::Offers {
            offers: inventory.offers(own_id).await.map_err(fail)?.into_iter().map(offer_to_wire).collect(),
        },
    };
    Ok(Reply::Inventory(reply))
}

/// The reply to settling an offer; the other side hears of it unless this was a retry.
async fn settled(shared: &Shared, own_id: Uuid, receipt: inventory::Receipt<Offer>) -> InventoryReply {
    let offer = offer_to_wire(receipt.value);
    if !receipt.replayed {
        let other = if offer.from.0 == own_id { offer.to.0 } else { offer.from.0 };
        announce(shared, other, InventoryEvent::OfferSettled(offer.clone())).await;
    }
    InventoryReply::Offer(offer)
}

/// Best effort: the change is committed whether or not the bus carries the event, and the
/// player sees it in `holdings` and `offers` anyway.
async fn announce(shared: &Shared, account_id: Uuid, event: InventoryEvent) {
    if let Err(error) = shared.hub.deliver(account_id, Event::Inventory(event)).await {
        tracing::warn!(%error, %account_id, "could not publish an inventory event");
    }
}

/// The body of `POST /inventory/grant`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    account_id: Uuid,
    item_id: String,
    quantity: u64,
    reason: String,
    idempotency_key: String,
}

/// The answer to a grant.
#[derive(Debug, Serialize)]
struct Granted {
    account_id: Uuid,
    item_id: String,
    /// How many the player holds after the grant.
    total: u64,
    /// True when this repeats the result of an earlier grant with the same key.
    replayed: bool,
}

/// One ledger entry as the admin port prints it.
#[derive(Debug, Serialize)]
struct LedgerLine {
    entry_id: u64,
    item_id: String,
    delta: i64,
    reason: String,
    request_key: String,
    at_ms: u64,
}

pub(crate) type HttpAnswer = (StatusCode, [(header::HeaderName, &'static str); 1], String);

pub(crate) fn json_answer(status: StatusCode, body: &impl Serialize) -> HttpAnswer {
    // Serialising our own structs of plain fields cannot fail.
    let text = serde_json::to_string(body).unwrap_or_default() + "\n";
    (status, [(header::CONTENT_TYPE, "application/json")], text)
}

pub(crate) fn error_answer(body: &ErrorBody) -> HttpAnswer {
    let status = match body.code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_answer(status, body)
}

/// Whether the request carries `Authorization: Bearer <service token>`. Answers 404 when no
/// service token is configured (the endpoints are off) and 401 for a missing or wrong token.
pub(crate) fn authorise(shared: &Shared, headers: &HeaderMap) -> Result<(), HttpAnswer> {
    let Some(expected) = &shared.config.service_token else {
        return Err(error_answer(&ErrorBody::new(
            ErrorCode::NotFound,
            "service endpoints are off: no service token is configured",
        )));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(error_answer(&ErrorBody::new(ErrorCode::Unauthorized, "a valid service token is required")))
    }
}

/// Compares without stopping at the first difference, so timing does not reveal how much of a
/// guessed token is right (only whether its length is).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// `POST /inventory/grant`: a trusted caller gives a player items (see PROTOCOL.md §11).
pub(crate) async fn grant_http(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> HttpAnswer {
    if let Err(answer) = authorise(&shared, &headers) {
        return answer;
    }
    let body: GrantBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => return error_answer(&ErrorBody::new(ErrorCode::BadRequest, format!("body: {error}"))),
    };
    if let Err(error) = shared.auth.account(body.account_id).await {
        return error_answer(&errors::from_auth(&error));
    }
    let grant = inventory::Grant {
        account_id: body.account_id,
        item_id: body.item_id,
        quantity: body.quantity,
        reason: body.reason,
        idempotency_key: body.idempotency_key,
    };
    match shared.inventory.grant(grant).await {
        Ok(receipt) => {
            let total = receipt.value.quantity;
            let item_id = receipt.value.item_id;
            if !receipt.replayed {
                let event =
                    InventoryEvent::Granted { item_id: item_id.clone(), quantity: body.quantity, total };
                announce(&shared, body.account_id, event).await;
            }
            let answer = Granted { account_id: body.account_id, item_id, total, replayed: receipt.replayed };
            json_answer(StatusCode::OK, &answer)
        }
        Err(error) => error_answer(&errors::from_inventory(&error)),
    }
}

/// `GET /inventory/{account_id}/ledger`: the newest ledger entries of a player, newest first.
pub(crate) async fn ledger_http(
    State(shared): State<Arc<Shared>>,
    account_id: Result<Path<Uuid>, PathRejection>,
    headers: HeaderMap,
) -> HttpAnswer {
    if let Err(answer) = authorise(&shared, &headers) {
        return answer;
    }
    let account_id = match crate::admin::path_id(account_id) {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    match shared.inventory.ledger(account_id, LEDGER_ENTRIES_LISTED).await {
        Ok(entries) => {
            let lines: Vec<LedgerLine> = entries
                .into_iter()
                .map(|e| LedgerLine {
                    entry_id: e.entry_id,
                    item_id: e.item_id,
                    delta: e.delta,
                    reason: e.reason,
                    request_key: e.request_key,
                    at_ms: e.at_ms,
                })
                .collect();
            json_answer(StatusCode::OK, &lines)
        }
        Err(error) => error_answer(&errors::from_inventory(&error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-tokeN", b"secret-token"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"", b"secret-token"));
    }
}
