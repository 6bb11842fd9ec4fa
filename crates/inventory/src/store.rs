//! The tables of `inventory.db` and the SQL that touches them: holdings, offers, the ledger and
//! the idempotency records. Changes run inside the committer's transaction, one savepoint each.

use shard::Migration;
use shard::rusqlite::{self, Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::{
    Change, Command, Inner, InventoryError, ItemStack, LedgerEntry, OFFERS_LISTED_MAX, Offer, OfferState,
    Receipt, Scope, Settle,
};

pub(crate) static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "holdings, offers, ledger, requests",
        sql: "CREATE TABLE holdings (
              account_id BLOB NOT NULL,                 -- the account's UUID, 16 bytes
              item_id    TEXT NOT NULL,
              quantity   INTEGER NOT NULL CHECK (quantity > 0 AND quantity <= 1000000000000),
              PRIMARY KEY (account_id, item_id)
          ) STRICT, WITHOUT ROWID;

          CREATE TABLE offers (
              offer_id      BLOB PRIMARY KEY,           -- UUID v7
              from_account  BLOB NOT NULL,
              to_account    BLOB NOT NULL,
              gives         TEXT NOT NULL,              -- JSON array of {item_id, quantity}
              wants         TEXT NOT NULL,
              state         TEXT NOT NULL CHECK (state IN ('open', 'accepted', 'declined', 'cancelled')),
              created_at_ms INTEGER NOT NULL,
              expires_at_ms INTEGER NOT NULL,           -- an open offer past it reads as expired
              settled_at_ms INTEGER
          ) STRICT, WITHOUT ROWID;
          CREATE INDEX offers_from ON offers (from_account, state, expires_at_ms);
          CREATE INDEX offers_to ON offers (to_account, state, expires_at_ms);

          CREATE TABLE ledger (
              entry_id    INTEGER PRIMARY KEY,
              account_id  BLOB NOT NULL,
              item_id     TEXT NOT NULL,
              delta       INTEGER NOT NULL CHECK (delta <> 0),
              reason      TEXT NOT NULL,
              request_key TEXT NOT NULL,
              at_ms       INTEGER NOT NULL
          ) STRICT;
          CREATE INDEX ledger_account ON ledger (account_id, entry_id);

          CREATE TABLE requests (
              scope       TEXT NOT NULL,                -- 'player:<uuid>' or 'service'
              request_key TEXT NOT NULL,
              fingerprint TEXT NOT NULL,                -- the request, to refuse a reused key
              result      TEXT NOT NULL,                -- the first result, returned to retries
              at_ms       INTEGER NOT NULL,
              PRIMARY KEY (scope, request_key)
          ) STRICT, WITHOUT ROWID;",
    },
    Migration {
        version: 2,
        description: "index only open offers; time indexes for pruning",
        // Indexing only open offers keeps those indexes as small as the number of open offers, so a
        // group of changes dirties few of their pages; settling an offer takes it out. The time
        // indexes let pruning find the oldest rows without a scan.
        sql: "DROP INDEX offers_from;
          DROP INDEX offers_to;
          CREATE INDEX offers_from_open ON offers (from_account, expires_at_ms) WHERE state = 'open';
          CREATE INDEX offers_to_open ON offers (to_account, expires_at_ms) WHERE state = 'open';
          CREATE INDEX offers_expiry ON offers (expires_at_ms);
          CREATE INDEX requests_age ON requests (at_ms);",
    },
];

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Player(account_id) => format!("player:{account_id}"),
        Scope::Service => "service".to_owned(),
    }
}

fn internal(error: serde_json::Error) -> InventoryError {
    InventoryError::Internal(format!("stored JSON: {error}"))
}

/// Applies one change (or returns the stored result of its key) and records its key.
pub(crate) fn apply(
    conn: &Connection,
    inner: &Inner,
    scope: &Scope,
    key: &str,
    command: &Command,
    now_ms: u64,
) -> Result<Receipt<Change>, InventoryError> {
    let fingerprint = fingerprint(command)?;
    if let Some(receipt) = stored(conn, scope, key, &fingerprint)? {
        return Ok(receipt);
    }

    let change = match command {
        Command::Grant { account_id, item_id, quantity, reason } => {
            let entry = Entry { reason: &format!("grant: {reason}"), key, now_ms };
            let total = credit(conn, inner, *account_id, item_id, *quantity, &entry)?;
            Change::Holding(ItemStack::new(item_id.as_str(), total))
        }
        Command::Consume { account_id, item_id, quantity } => {
            let entry = Entry { reason: "consume", key, now_ms };
            let remaining = debit(conn, *account_id, item_id, *quantity, &entry)?;
            Change::Holding(ItemStack::new(item_id.as_str(), remaining))
        }
        Command::MakeOffer { from, to, gives, wants } => {
            Change::Offer(make_offer(conn, inner, *from, *to, gives, wants, now_ms)?)
        }
        Command::Settle { account_id, offer_id, action } => {
            Change::Offer(settle(conn, inner, *account_id, *offer_id, *action, key, now_ms)?)
        }
    };
    let result = serde_json::to_string(&change).map_err(internal)?;
    let scope = scope_text(scope);
    conn.prepare_cached(
        "INSERT INTO requests (scope, request_key, fingerprint, result, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![scope, key, fingerprint, result, to_i64(now_ms)])?;
    Ok(Receipt { value: change, replayed: false })
}

/// What an idempotency record keeps of its request, to tell a retry from another request.
pub(crate) fn fingerprint(command: &Command) -> Result<String, InventoryError> {
    serde_json::to_string(command).map_err(internal)
}

/// The stored result of an earlier request with this key, as a replay; `None` when the key is
/// new (or was pruned).
///
/// # Errors
/// [`InventoryError::KeyReused`] when the key was used for a request with another fingerprint.
pub(crate) fn stored(
    conn: &Connection,
    scope: &Scope,
    key: &str,
    fingerprint: &str,
) -> Result<Option<Receipt<Change>>, InventoryError> {
    let stored: Option<(String, String)> = conn
        .prepare_cached("SELECT fingerprint, result FROM requests WHERE scope = ?1 AND request_key = ?2")?
        .query_row(params![scope_text(scope), key], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((stored_fingerprint, result)) = stored else { return Ok(None) };
    if stored_fingerprint != fingerprint {
        return Err(InventoryError::KeyReused);
    }
    let change: Change = serde_json::from_str(&result).map_err(internal)?;
    Ok(Some(Receipt { value: change, replayed: true }))
}

/// Rows one prune pass deleted.
pub(crate) struct Pruned {
    pub(crate) requests: usize,
    pub(crate) offers: usize,
}

/// Deletes at most `batch` idempotency records made before `before_ms` and at most `batch`
/// offers that expired before it (an offer is settled, if at all, before it expires, so these
/// are all closed and have been for the whole window). Oldest first, through the time indexes.
pub(crate) fn prune(conn: &Connection, before_ms: u64, batch: usize) -> rusqlite::Result<Pruned> {
    let (before, batch) = (to_i64(before_ms), i64::try_from(batch).unwrap_or(i64::MAX));
    let requests = conn
        .prepare_cached(
            "DELETE FROM requests WHERE (scope, request_key) IN (
                 SELECT scope, request_key FROM requests WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
        )?
        .execute(params![before, batch])?;
    let offers = conn
        .prepare_cached(
            "DELETE FROM offers WHERE offer_id IN (
                 SELECT offer_id FROM offers WHERE expires_at_ms < ?1 ORDER BY expires_at_ms LIMIT ?2)",
        )?
        .execute(params![before, batch])?;
    Ok(Pruned { requests, offers })
}

/// What a ledger entry says besides the holding and delta.
struct Entry<'a> {
    reason: &'a str,
    key: &'a str,
    now_ms: u64,
}

fn held(conn: &Connection, account_id: Uuid, item_id: &str) -> rusqlite::Result<u64> {
    let quantity: Option<i64> = conn
        .prepare_cached("SELECT quantity FROM holdings WHERE account_id = ?1 AND item_id = ?2")?
        .query_row(params![account_id.as_bytes().as_slice(), item_id], |row| row.get(0))
        .optional()?;
    Ok(quantity.map_or(0, to_u64))
}

/// Appends the ledger entry for a change of a holding.
fn append_ledger(
    conn: &Connection,
    account_id: Uuid,
    item_id: &str,
    delta: i64,
    entry: &Entry<'_>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO ledger (account_id, item_id, delta, reason, request_key, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        account_id.as_bytes().as_slice(),
        item_id,
        delta,
        entry.reason,
        entry.key,
        to_i64(entry.now_ms)
    ])?;
    Ok(())
}

/// Takes `quantity` from a holding (deleting it at zero); returns what is left.
fn debit(
    conn: &Connection,
    account_id: Uuid,
    item_id: &str,
    quantity: u64,
    entry: &Entry<'_>,
) -> Result<u64, InventoryError> {
    let account = account_id.as_bytes().as_slice();
    // The common case in one statement: more is held than is taken.
    let left: Option<i64> = conn
        .prepare_cached(
            "UPDATE holdings SET quantity = quantity - ?3
             WHERE account_id = ?1 AND item_id = ?2 AND quantity > ?3 RETURNING quantity",
        )?
        .query_row(params![account, item_id, to_i64(quantity)], |row| row.get(0))
        .optional()?;
    let left = match left {
        Some(left) => to_u64(left),
        None => {
            let held = held(conn, account_id, item_id)?;
            if held != quantity {
                return Err(InventoryError::Insufficient {
                    item_id: item_id.to_owned(),
                    held,
                    needed: quantity,
                });
            }
            conn.prepare_cached("DELETE FROM holdings WHERE account_id = ?1 AND item_id = ?2")?
                .execute(params![account, item_id])?;
            0
        }
    };
    append_ledger(conn, account_id, item_id, -to_i64(quantity), entry)?;
    Ok(left)
}

/// Adds `quantity` to a holding within the item's `max_stack`; returns the new total.
fn credit(
    conn: &Connection,
    inner: &Inner,
    account_id: Uuid,
    item_id: &str,
    quantity: u64,
    entry: &Entry<'_>,
) -> Result<u64, InventoryError> {
    let Some(def) = inner.catalogue.get(item_id) else {
        return Err(InventoryError::UnknownItem(item_id.to_owned()));
    };
    let stack_full =
        || InventoryError::StackFull { account_id, item_id: item_id.to_owned(), max_stack: def.max_stack };
    if quantity > def.max_stack {
        return Err(stack_full());
    }
    // One statement: insert, or add within max_stack (no row comes back when it would not fit).
    let total: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO holdings (account_id, item_id, quantity) VALUES (?1, ?2, ?3)
             ON CONFLICT (account_id, item_id) DO UPDATE SET quantity = quantity + excluded.quantity
             WHERE quantity + excluded.quantity <= ?4
             RETURNING quantity",
        )?
        .query_row(
            params![account_id.as_bytes().as_slice(), item_id, to_i64(quantity), to_i64(def.max_stack)],
            |row| row.get(0),
        )
        .optional()?;
    let Some(total) = total else { return Err(stack_full()) };
    append_ledger(conn, account_id, item_id, to_i64(quantity), entry)?;
    Ok(to_u64(total))
}

fn make_offer(
    conn: &Connection,
    inner: &Inner,
    from: Uuid,
    to: Uuid,
    gives: &[ItemStack],
    wants: &[ItemStack],
    now_ms: u64,
) -> Result<Offer, InventoryError> {
    let open: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM offers WHERE from_account = ?1 AND state = 'open' AND expires_at_ms > ?2",
        )?
        .query_row(params![from.as_bytes().as_slice(), to_i64(now_ms)], |row| row.get(0))?;
    if to_u64(open) >= u64::from(inner.config.max_open_offers) {
        return Err(InventoryError::TooManyOpenOffers(inner.config.max_open_offers));
    }
    for stack in gives {
        let held = held(conn, from, &stack.item_id)?;
        if held < stack.quantity {
            return Err(InventoryError::Insufficient {
                item_id: stack.item_id.clone(),
                held,
                needed: stack.quantity,
            });
        }
    }
    let ttl_ms = u64::try_from(inner.config.offer_ttl.as_millis()).unwrap_or(u64::MAX);
    let offer = Offer {
        offer_id: Uuid::now_v7(),
        from,
        to,
        gives: gives.to_vec(),
        wants: wants.to_vec(),
        state: OfferState::Open,
        created_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
    };
    conn.prepare_cached(
        "INSERT INTO offers (offer_id, from_account, to_account, gives, wants, state, created_at_ms, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6, ?7)",
    )?
    .execute(params![
        offer.offer_id.as_bytes().as_slice(),
        from.as_bytes().as_slice(),
        to.as_bytes().as_slice(),
        serde_json::to_string(&offer.gives).map_err(internal)?,
        serde_json::to_string(&offer.wants).map_err(internal)?,
        to_i64(offer.created_at_ms),
        to_i64(offer.expires_at_ms),
    ])?;
    Ok(offer)
}

fn settle(
    conn: &Connection,
    inner: &Inner,
    account_id: Uuid,
    offer_id: Uuid,
    action: Settle,
    key: &str,
    now_ms: u64,
) -> Result<Offer, InventoryError> {
    let Some(mut offer) = load_offer(conn, offer_id, now_ms)? else {
        return Err(InventoryError::UnknownOffer(offer_id));
    };
    match action {
        Settle::Accept | Settle::Decline if account_id != offer.to => {
            return Err(InventoryError::NotAllowed("only the recipient may accept or decline an offer"));
        }
        Settle::Cancel if account_id != offer.from => {
            return Err(InventoryError::NotAllowed("only the offerer may cancel an offer"));
        }
        _ => {}
    }
    match offer.state {
        OfferState::Open => {}
        OfferState::Expired => return Err(InventoryError::OfferExpired),
        closed => return Err(InventoryError::OfferClosed(closed)),
    }
    let (state, text) = match action {
        Settle::Accept => {
            // Not the client's bad input: the catalogue changed since the offer was made.
            let lines = offer.gives.iter().chain(&offer.wants);
            if let Some(retired) =
                lines.into_iter().find(|stack| inner.catalogue.get(&stack.item_id).is_none())
            {
                return Err(InventoryError::ItemRetired { item_id: retired.item_id.clone() });
            }
            // Every debit before any credit: a player may receive an item they give away in the
            // same trade (a unique one included) without tripping its max_stack.
            let reason = format!("trade {offer_id}");
            let entry = Entry { reason: &reason, key, now_ms };
            // The offerer's side fails without its holdings in the message the accepter reads.
            for stack in &offer.gives {
                debit(conn, offer.from, &stack.item_id, stack.quantity, &entry).map_err(
                    |error| match error {
                        InventoryError::Insufficient { item_id, .. } => {
                            InventoryError::OffererLacks { item_id }
                        }
                        other => other,
                    },
                )?;
            }
            for stack in &offer.wants {
                debit(conn, offer.to, &stack.item_id, stack.quantity, &entry)?;
            }
            for stack in &offer.gives {
                credit(conn, inner, offer.to, &stack.item_id, stack.quantity, &entry)?;
            }
            for stack in &offer.wants {
                credit(conn, inner, offer.from, &stack.item_id, stack.quantity, &entry).map_err(|error| {
                    match error {
                        InventoryError::StackFull { item_id, .. } => InventoryError::OffererFull { item_id },
                        other => other,
                    }
                })?;
            }
            (OfferState::Accepted, "accepted")
        }
        Settle::Decline => (OfferState::Declined, "declined"),
        Settle::Cancel => (OfferState::Cancelled, "cancelled"),
    };
    let changed = conn
        .prepare_cached(
            "UPDATE offers SET state = ?2, settled_at_ms = ?3 WHERE offer_id = ?1 AND state = 'open'",
        )?
        .execute(params![offer_id.as_bytes().as_slice(), text, to_i64(now_ms)])?;
    if changed != 1 {
        return Err(InventoryError::Internal(format!("offer {offer_id} was not open when settled")));
    }
    offer.state = state;
    Ok(offer)
}

const OFFER_COLUMNS: &str =
    "offer_id, from_account, to_account, gives, wants, state, created_at_ms, expires_at_ms";

/// An offer row, with an open offer past its expiry read as expired. The JSON columns are
/// decoded by the caller (a bad one is an internal error, not a SQLite one).
fn offer_row(row: &rusqlite::Row<'_>, now_ms: u64) -> rusqlite::Result<Result<Offer, InventoryError>> {
    let uuid = |index: usize| -> rusqlite::Result<Uuid> {
        let bytes: Vec<u8> = row.get(index)?;
        Uuid::from_slice(&bytes).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Blob, e.into())
        })
    };
    let (offer_id, from, to) = (uuid(0)?, uuid(1)?, uuid(2)?);
    let (gives, wants, state): (String, String, String) = (row.get(3)?, row.get(4)?, row.get(5)?);
    let created_at_ms = to_u64(row.get(6)?);
    let expires_at_ms = to_u64(row.get(7)?);
    Ok((|| {
        let state = match state.as_str() {
            "open" if now_ms >= expires_at_ms => OfferState::Expired,
            "open" => OfferState::Open,
            "accepted" => OfferState::Accepted,
            "declined" => OfferState::Declined,
            "cancelled" => OfferState::Cancelled,
            other => return Err(InventoryError::Internal(format!("offer state {other:?}"))),
        };
        Ok(Offer {
            offer_id,
            from,
            to,
            gives: serde_json::from_str(&gives).map_err(internal)?,
            wants: serde_json::from_str(&wants).map_err(internal)?,
            state,
            created_at_ms,
            expires_at_ms,
        })
    })())
}

fn load_offer(conn: &Connection, offer_id: Uuid, now_ms: u64) -> Result<Option<Offer>, InventoryError> {
    let sql = format!("SELECT {OFFER_COLUMNS} FROM offers WHERE offer_id = ?1");
    conn.prepare_cached(&sql)?
        .query_row(params![offer_id.as_bytes().as_slice()], |row| offer_row(row, now_ms))
        .optional()?
        .transpose()
}

pub(crate) fn holdings(conn: &Connection, account_id: Uuid) -> rusqlite::Result<Vec<ItemStack>> {
    conn.prepare_cached("SELECT item_id, quantity FROM holdings WHERE account_id = ?1 ORDER BY item_id")?
        .query_map(params![account_id.as_bytes().as_slice()], |row| {
            Ok(ItemStack { item_id: row.get(0)?, quantity: to_u64(row.get(1)?) })
        })?
        .collect()
}

pub(crate) fn open_offers(
    conn: &Connection,
    account_id: Uuid,
    now_ms: u64,
) -> rusqlite::Result<Vec<Result<Offer, InventoryError>>> {
    let sql = format!(
        "SELECT {OFFER_COLUMNS} FROM offers
         WHERE offer_id IN (
             SELECT offer_id FROM offers WHERE from_account = ?1 AND state = 'open' AND expires_at_ms > ?2
             UNION ALL
             SELECT offer_id FROM offers WHERE to_account = ?1 AND state = 'open' AND expires_at_ms > ?2)
         ORDER BY created_at_ms DESC, offer_id DESC LIMIT ?3"
    );
    conn.prepare_cached(&sql)?
        .query_map(params![account_id.as_bytes().as_slice(), to_i64(now_ms), OFFERS_LISTED_MAX], |row| {
            offer_row(row, now_ms)
        })?
        .collect()
}

pub(crate) fn ledger(conn: &Connection, account_id: Uuid, limit: u32) -> rusqlite::Result<Vec<LedgerEntry>> {
    conn.prepare_cached(
        "SELECT entry_id, item_id, delta, reason, request_key, at_ms FROM ledger
         WHERE account_id = ?1 ORDER BY entry_id DESC LIMIT ?2",
    )?
    .query_map(params![account_id.as_bytes().as_slice(), limit], |row| {
        Ok(LedgerEntry {
            entry_id: to_u64(row.get(0)?),
            account_id,
            item_id: row.get(1)?,
            delta: row.get(2)?,
            reason: row.get(3)?,
            request_key: row.get(4)?,
            at_ms: to_u64(row.get(5)?),
        })
    })?
    .collect()
}
