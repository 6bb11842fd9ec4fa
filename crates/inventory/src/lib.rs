//! Inventory: the item catalogue, what each player holds, consumption, grants and atomic trades.
//!
//! Owns: `inventory.db` (holdings, trade offers, the append-only ledger and the idempotency
//! records), the [`Catalogue`] loaded at start-up, and the rules that conserve items: quantities
//! never go negative, no player holds more of an item than its `max_stack` (a unique item at most
//! once), and an accepted trade swaps both sides in one transaction or nothing.
//!
//! Every change goes through the one [`Committer`] task, which group-commits: it takes every
//! change queued while the previous group was committing, runs each in its own `SAVEPOINT` inside
//! one SQLite transaction (so one failing change does not fail the others), commits once, and
//! only then answers each caller. With the shard at `synchronous=FULL` (the default here) an
//! answered change survives a power loss; the fsync is shared by the whole group.
//!
//! Every change carries an idempotency key, unique per caller (a player's account, or the
//! service for grants). The key, a fingerprint of the request and its result are stored in the
//! change's own savepoint, so a retry with the same key returns the first result and applies
//! nothing twice, also after a restart, for as long as the record is kept (`retention`, a day by
//! default). Only successes are recorded: a failed change applied nothing, so its retry is simply
//! evaluated again. The committer prunes records older than the window, and offers closed longer
//! than it, a small batch at a time inside its group transactions (see `committer.rs`); the
//! ledger is never pruned. Every change of a holding appends a ledger entry (who, item, delta,
//! reason, request key, time) in the same transaction.
//!
//! Never: lets a player grant items ([`Inventory::grant`] is for trusted callers: the gateway's
//! service endpoint and, later, other domains through the gateway), knows about accounts beyond
//! their ids, touches another domain's shard, or knows about sockets.

mod catalogue;
mod committer;
mod error;
mod store;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use clock::SharedClock;
use serde::{Deserialize, Serialize};
use shard::{Shard, ShardConfig, Synchronous};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub use catalogue::{Catalogue, DEFAULT_MAX_STACK, ITEM_ID_MAX_BYTES, ItemDef, MAX_STACK_LIMIT};
pub use committer::Committer;
pub use error::InventoryError;

/// The schema version this build migrates `inventory.db` to: a file at an older one is migrated
/// when opened.
pub fn schema_version() -> u32 {
    shard::latest_version(store::MIGRATIONS)
}

/// Default lifetime of an open trade offer.
pub const DEFAULT_OFFER_TTL: Duration = Duration::from_secs(10 * 60);
/// Default number of open offers one player may have made at once.
pub const DEFAULT_MAX_OPEN_OFFERS: u32 = 50;
/// Default largest number of changes committed in one SQLite transaction.
pub const DEFAULT_MAX_GROUP: usize = 1024;
/// Default number of changes waiting for the committer before callers wait to enqueue.
pub const DEFAULT_QUEUE: usize = 16 * 1024;
/// Default time idempotency records and closed offers are kept: a retry within a day of its
/// first request returns the first result.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Default time between prune passes while nothing is left over from the last one.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of rows of each table one prune pass deletes at most.
pub const DEFAULT_PRUNE_BATCH: usize = 1024;
/// Default number of group commits between two checkpoints of the WAL, which run beside the
/// committer on a connection of their own.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 16;
/// Default size of the WAL file past which the committer checkpoints it itself between groups.
pub const DEFAULT_WAL_LIMIT_BYTES: u64 = 128 * 1024 * 1024;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_MAX_BYTES: usize = 64;
/// Longest grant reason, in bytes.
pub const REASON_MAX_BYTES: usize = 128;
/// Most lines (distinct items) on one side of an offer.
pub const OFFER_LINES_MAX: usize = 16;
/// Most offers [`Inventory::offers`] returns.
pub const OFFERS_LISTED_MAX: u32 = 200;

/// Configuration of the inventory domain.
#[derive(Debug, Clone)]
pub struct InventoryConfig {
    /// Lifetime of an open offer; default [`DEFAULT_OFFER_TTL`]; at least a millisecond (offers
    /// expire by whole milliseconds: a shorter one would expire every offer as it is made).
    pub offer_ttl: Duration,
    /// Open offers one player may have made at once; default [`DEFAULT_MAX_OPEN_OFFERS`].
    pub max_open_offers: u32,
    /// Changes per SQLite transaction at most; default [`DEFAULT_MAX_GROUP`]; must be positive.
    pub max_group: usize,
    /// Changes queued for the committer at most; default [`DEFAULT_QUEUE`]; must be positive.
    pub queue: usize,
    /// How long an idempotency record is kept after its request, and a closed (settled or
    /// expired) offer after it closed; default [`DEFAULT_RETENTION`]; must be positive. A retry
    /// within this window returns the first result; a key older than it counts as new.
    pub retention: Duration,
    /// Time between prune passes, by the injected clock, while the last pass left nothing
    /// behind; default [`DEFAULT_PRUNE_INTERVAL`].
    pub prune_interval: Duration,
    /// Rows of each table one prune pass deletes at most; default [`DEFAULT_PRUNE_BATCH`]; must
    /// be positive. A pass that deletes a full batch is followed by another after the next group.
    pub prune_batch: usize,
    /// Group commits between two checkpoints of the WAL; default [`DEFAULT_CHECKPOINT_EVERY`];
    /// must be positive. The checkpoints run on a read connection beside the committer (SQLite's
    /// automatic checkpoints inside `COMMIT` are off), so a group never waits for one, and a page
    /// written by many groups in between is copied into the database once.
    pub checkpoint_every: u64,
    /// Size of the WAL file, in bytes, past which the committer checkpoints between groups
    /// itself (the checkpoints beside it rarely find a moment with no commit in flight, which
    /// starting the WAL over needs), and to which the file is cut back when the WAL starts over:
    /// the WAL stays within 1.5 times this plus one group; default [`DEFAULT_WAL_LIMIT_BYTES`];
    /// must be positive.
    pub wal_limit_bytes: u64,
    /// How `inventory.db` is opened; `synchronous` defaults to FULL here: the economy survives a
    /// power loss, and group commit keeps that fast. Its temporary files are always kept in
    /// memory ([`ShardConfig::temp_in_memory`]): the committer's savepoint per change would
    /// otherwise write a sub-journal page by page.
    pub shard: ShardConfig,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            offer_ttl: DEFAULT_OFFER_TTL,
            max_open_offers: DEFAULT_MAX_OPEN_OFFERS,
            max_group: DEFAULT_MAX_GROUP,
            queue: DEFAULT_QUEUE,
            retention: DEFAULT_RETENTION,
            prune_interval: DEFAULT_PRUNE_INTERVAL,
            prune_batch: DEFAULT_PRUNE_BATCH,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            wal_limit_bytes: DEFAULT_WAL_LIMIT_BYTES,
            shard: ShardConfig { synchronous: Synchronous::Full, ..ShardConfig::default() },
        }
    }
}

/// A quantity of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemStack {
    /// The catalogue's id of the item.
    pub item_id: String,
    /// How many.
    pub quantity: u64,
}

impl ItemStack {
    /// `quantity` of `item_id`.
    pub fn new(item_id: impl Into<String>, quantity: u64) -> ItemStack {
        ItemStack { item_id: item_id.into(), quantity }
    }
}

/// Where an offer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferState {
    /// Waiting for the recipient.
    Open,
    /// Accepted: both sides were swapped.
    Accepted,
    /// Declined by the recipient.
    Declined,
    /// Withdrawn by the offerer.
    Cancelled,
    /// Nobody acted before it expired.
    Expired,
}

/// A trade offer: `from` gives `gives` to `to` in exchange for `wants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The offer's id (UUID v7).
    pub offer_id: Uuid,
    /// The offerer.
    pub from: Uuid,
    /// The recipient.
    pub to: Uuid,
    /// What the offerer gives.
    pub gives: Vec<ItemStack>,
    /// What the offerer wants in return.
    pub wants: Vec<ItemStack>,
    /// Where it stands.
    pub state: OfferState,
    /// When it was made (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// When it expires if still open.
    pub expires_at_ms: u64,
}

/// A grant of items by a trusted caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who receives the items.
    pub account_id: Uuid,
    /// The item.
    pub item_id: String,
    /// How many, at least 1.
    pub quantity: u64,
    /// Why, for the ledger (1 to [`REASON_MAX_BYTES`] bytes).
    pub reason: String,
    /// The caller's idempotency key; grants share one key space across trusted callers, so
    /// callers should prefix theirs (`match-4711-reward-…`).
    pub idempotency_key: String,
}

/// A new trade offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOffer {
    /// The recipient; not the offerer.
    pub to: Uuid,
    /// What the offerer gives.
    pub gives: Vec<ItemStack>,
    /// What the offerer wants in return.
    pub wants: Vec<ItemStack>,
}

/// The result of a change, and whether it is the stored result of an earlier request with the
/// same idempotency key (then nothing was applied this time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt<T> {
    /// The result.
    pub value: T,
    /// True when this repeats the first result of the same key.
    pub replayed: bool,
}

/// One entry of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Grows with every entry.
    pub entry_id: u64,
    /// Whose holding changed.
    pub account_id: Uuid,
    /// The item.
    pub item_id: String,
    /// The change of the holding.
    pub delta: i64,
    /// Why: `grant: <reason>`, `consume`, or `trade <offer id>`.
    pub reason: String,
    /// The idempotency key of the request that made the change.
    pub request_key: String,
    /// When (milliseconds since the Unix epoch).
    pub at_ms: u64,
}

/// Counters of the write path, for metrics and tests.
#[derive(Debug, Default)]
pub struct InventoryStats {
    /// SQLite transactions (groups) committed.
    pub groups: AtomicU64,
    /// Changes answered after a group committed, successes and failures alike.
    pub changes: AtomicU64,
    /// Changes answered with the stored result of an earlier request.
    pub replays: AtomicU64,
    /// The largest group so far.
    pub largest_group: AtomicU64,
    /// Changes in the last group committed.
    pub last_group: AtomicU64,
    /// Microseconds spent running changes inside group transactions (before `COMMIT`).
    pub apply_micros: AtomicU64,
    /// Microseconds spent in `COMMIT` (with `synchronous=FULL`, mostly the fsync).
    pub commit_micros: AtomicU64,
    /// Idempotency records deleted after the retention window.
    pub pruned_requests: AtomicU64,
    /// Closed offers deleted after the retention window.
    pub pruned_offers: AtomicU64,
    /// The checkpoints run beside the committer, and the WAL's size after the last group.
    pub wal: Arc<shard::WalStats>,
}

/// The inventory domain: cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) shard: Shard,
    pub(crate) catalogue: Catalogue,
    pub(crate) clock: SharedClock,
    pub(crate) config: InventoryConfig,
    pub(crate) stats: InventoryStats,
    jobs: mpsc::Sender<committer::Job>,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("items", &self.inner.catalogue.len())
            .field("shard", &self.inner.shard)
            .finish_non_exhaustive()
    }
}

/// Who owns an idempotency key space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum Scope {
    /// A player's own requests.
    Player(Uuid),
    /// Trusted callers' grants.
    Service,
}

/// A change, as queued for the committer.
#[derive(Debug, Clone, Serialize)]
pub(crate) enum Command {
    Grant { account_id: Uuid, item_id: String, quantity: u64, reason: String },
    Consume { account_id: Uuid, item_id: String, quantity: u64 },
    MakeOffer { from: Uuid, to: Uuid, gives: Vec<ItemStack>, wants: Vec<ItemStack> },
    Settle { account_id: Uuid, offer_id: Uuid, action: Settle },
}

/// What the recipient or the offerer does to an open offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Settle {
    Accept,
    Decline,
    Cancel,
}

/// A change's result as stored with its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Change {
    /// A holding after a grant or consumption.
    Holding(ItemStack),
    /// An offer after it was made or settled.
    Offer(Offer),
}

impl Inventory {
    /// Opens `inventory.db` at `path` (running its migrations) with `catalogue`, and returns the
    /// domain plus its [`Committer`], which the caller must run (on its task tracker) for any
    /// change to be applied.
    ///
    /// # Errors
    /// [`InventoryError::Config`] for an inconsistent configuration; [`InventoryError::Shard`]
    /// when the shard cannot be opened or migrated.
    pub async fn open(
        path: impl Into<std::path::PathBuf>,
        catalogue: Catalogue,
        clock: SharedClock,
        config: InventoryConfig,
    ) -> Result<(Inventory, Committer), InventoryError> {
        if config.offer_ttl.as_millis() == 0
            || config.max_group == 0
            || config.queue == 0
            || config.retention.is_zero()
            || config.prune_batch == 0
            || config.checkpoint_every == 0
            || config.wal_limit_bytes == 0
        {
            return Err(InventoryError::Config(
                "offer_ttl (at least a millisecond), max_group, queue, retention, prune_batch, \
                 checkpoint_every and wal_limit_bytes must be positive"
                    .into(),
            ));
        }
        let shard_config = ShardConfig { temp_in_memory: true, ..config.shard.clone() };
        let shard = Shard::open(path, &shard_config, store::MIGRATIONS).await?;
        let (jobs, queue) = mpsc::channel(config.queue);
        let inner =
            Arc::new(Inner { shard, catalogue, clock, config, stats: InventoryStats::default(), jobs });
        let committer = Committer::new(inner.clone(), queue);
        Ok((Inventory { inner }, committer))
    }

    /// The shard this domain owns.
    pub fn shard(&self) -> &Shard {
        &self.inner.shard
    }

    /// The catalogue loaded at start-up.
    pub fn catalogue(&self) -> &Catalogue {
        &self.inner.catalogue
    }

    /// Counters of the write path.
    pub fn stats(&self) -> &InventoryStats {
        &self.inner.stats
    }

    /// What `account_id` holds, sorted by item id.
    ///
    /// # Errors
    /// [`InventoryError::Shard`] when `inventory.db` fails.
    pub async fn holdings(&self, account_id: Uuid) -> Result<Vec<ItemStack>, InventoryError> {
        Ok(self.inner.shard.read(move |conn| store::holdings(conn, account_id)).await?)
    }

    /// Open offers `account_id` made or received, newest first (at most [`OFFERS_LISTED_MAX`]).
    ///
    /// # Errors
    /// [`InventoryError::Shard`] when `inventory.db` fails.
    pub async fn offers(&self, account_id: Uuid) -> Result<Vec<Offer>, InventoryError> {
        let now_ms = self.inner.clock.now_ms();
        let offers = self.inner.shard.read(move |conn| store::open_offers(conn, account_id, now_ms)).await?;
        offers.into_iter().collect()
    }

    /// The newest `limit` ledger entries of `account_id`, newest first.
    ///
    /// # Errors
    /// [`InventoryError::Shard`] when `inventory.db` fails.
    pub async fn ledger(&self, account_id: Uuid, limit: u32) -> Result<Vec<LedgerEntry>, InventoryError> {
        Ok(self.inner.shard.read(move |conn| store::ledger(conn, account_id, limit)).await?)
    }

    /// Gives a player items. For trusted callers only: never reachable from a player's request.
    /// Returns the player's holding of the item afterwards.
    ///
    /// # Errors
    /// [`InventoryError::UnknownItem`], [`InventoryError::InvalidQuantity`] (zero, or more than
    /// `max_stack`), [`InventoryError::InvalidRequest`] (key or reason),
    /// [`InventoryError::StackFull`] when the player would hold more than `max_stack`,
    /// [`InventoryError::KeyReused`], [`InventoryError::ShuttingDown`], [`InventoryError::Shard`].
    pub async fn grant(&self, grant: Grant) -> Result<Receipt<ItemStack>, InventoryError> {
        let checked = self.check_stack(&ItemStack::new(grant.item_id.as_str(), grant.quantity));
        if checked.is_ok() && (grant.reason.trim().is_empty() || grant.reason.len() > REASON_MAX_BYTES) {
            return Err(InventoryError::InvalidRequest(format!(
                "a grant's reason must be 1 to {REASON_MAX_BYTES} bytes"
            )));
        }
        let command = Command::Grant {
            account_id: grant.account_id,
            item_id: grant.item_id,
            quantity: grant.quantity,
            reason: grant.reason,
        };
        self.submit_checked(checked, Scope::Service, grant.idempotency_key, command).await.and_then(holding)
    }

    /// Uses up `quantity` of an item `account_id` holds; returns the holding afterwards.
    ///
    /// # Errors
    /// [`InventoryError::UnknownItem`], [`InventoryError::InvalidQuantity`],
    /// [`InventoryError::InvalidRequest`] (key), [`InventoryError::Insufficient`],
    /// [`InventoryError::KeyReused`], [`InventoryError::ShuttingDown`], [`InventoryError::Shard`].
    pub async fn consume(
        &self,
        account_id: Uuid,
        stack: ItemStack,
        idempotency_key: String,
    ) -> Result<Receipt<ItemStack>, InventoryError> {
        let checked = self.check_stack(&stack);
        let command = Command::Consume { account_id, item_id: stack.item_id, quantity: stack.quantity };
        self.submit_checked(checked, Scope::Player(account_id), idempotency_key, command)
            .await
            .and_then(holding)
    }

    /// `from` offers a trade. `from` must hold `gives` now (and again at acceptance; nothing is
    /// reserved). The offer expires after the configured `offer_ttl`.
    ///
    /// # Errors
    /// [`InventoryError::InvalidRequest`] (an offer to oneself, no lines, too many or duplicate
    /// lines, a bad key), [`InventoryError::UnknownItem`], [`InventoryError::InvalidQuantity`],
    /// [`InventoryError::Insufficient`], [`InventoryError::TooManyOpenOffers`],
    /// [`InventoryError::KeyReused`], [`InventoryError::ShuttingDown`], [`InventoryError::Shard`].
    pub async fn make_offer(
        &self,
        from: Uuid,
        offer: NewOffer,
        idempotency_key: String,
    ) -> Result<Receipt<Offer>, InventoryError> {
        let checked = self.check_offer(from, &offer);
        let command = Command::MakeOffer { from, to: offer.to, gives: offer.gives, wants: offer.wants };
        self.submit_checked(checked, Scope::Player(from), idempotency_key, command).await.and_then(offer_of)
    }

    /// Checks what can be checked of a new offer without the database.
    fn check_offer(&self, from: Uuid, offer: &NewOffer) -> Result<(), InventoryError> {
        if offer.to == from {
            return Err(InventoryError::InvalidRequest("a player cannot trade with themselves".into()));
        }
        if offer.gives.is_empty() && offer.wants.is_empty() {
            return Err(InventoryError::InvalidRequest("an offer gives or wants something".into()));
        }
        for side in [&offer.gives, &offer.wants] {
            if side.len() > OFFER_LINES_MAX {
                return Err(InventoryError::InvalidRequest(format!(
                    "an offer has at most {OFFER_LINES_MAX} lines per side"
                )));
            }
            let mut seen = std::collections::HashSet::new();
            for stack in side {
                self.check_stack(stack)?;
                if !seen.insert(stack.item_id.as_str()) {
                    return Err(InventoryError::InvalidRequest(format!(
                        "{} appears twice on one side",
                        stack.item_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The recipient accepts an open offer: both sides' holdings are checked again and everything
    /// is swapped in one transaction, or nothing is.
    ///
    /// # Errors
    /// [`InventoryError::UnknownOffer`], [`InventoryError::NotAllowed`] (not the recipient),
    /// [`InventoryError::OfferClosed`], [`InventoryError::OfferExpired`],
    /// [`InventoryError::Insufficient`] (either side), [`InventoryError::StackFull`] (either side),
    /// [`InventoryError::ItemRetired`] (an item since removed from the catalogue), and the
    /// common ones of [`Inventory::consume`].
    pub async fn accept(
        &self,
        account_id: Uuid,
        offer_id: Uuid,
        idempotency_key: String,
    ) -> Result<Receipt<Offer>, InventoryError> {
        self.settle(account_id, offer_id, Settle::Accept, idempotency_key).await
    }

    /// The recipient declines an open offer.
    ///
    /// # Errors
    /// As [`Inventory::accept`], without the holding checks.
    pub async fn decline(
        &self,
        account_id: Uuid,
        offer_id: Uuid,
        idempotency_key: String,
    ) -> Result<Receipt<Offer>, InventoryError> {
        self.settle(account_id, offer_id, Settle::Decline, idempotency_key).await
    }

    /// The offerer withdraws an open offer.
    ///
    /// # Errors
    /// As [`Inventory::decline`]; [`InventoryError::NotAllowed`] when not the offerer.
    pub async fn cancel(
        &self,
        account_id: Uuid,
        offer_id: Uuid,
        idempotency_key: String,
    ) -> Result<Receipt<Offer>, InventoryError> {
        self.settle(account_id, offer_id, Settle::Cancel, idempotency_key).await
    }

    async fn settle(
        &self,
        account_id: Uuid,
        offer_id: Uuid,
        action: Settle,
        idempotency_key: String,
    ) -> Result<Receipt<Offer>, InventoryError> {
        let command = Command::Settle { account_id, offer_id, action };
        self.submit(Scope::Player(account_id), idempotency_key, command).await.and_then(offer_of)
    }

    /// Checks what can be checked without the database: a known item and a quantity within
    /// `1..=max_stack`.
    fn check_stack(&self, stack: &ItemStack) -> Result<(), InventoryError> {
        let Some(def) = self.inner.catalogue.get(&stack.item_id) else {
            return Err(InventoryError::UnknownItem(truncated(&stack.item_id)));
        };
        if stack.quantity == 0 || stack.quantity > def.max_stack {
            return Err(InventoryError::InvalidQuantity(format!(
                "{} must be 1 to {} (its max_stack)",
                def.item_id, def.max_stack
            )));
        }
        Ok(())
    }

    /// Queues `command` unless `checked` (what [`Inventory::check_stack`] and the like said of
    /// it) refused it. A request refused by the catalogue that repeats, under the same key, one
    /// that was applied gets the first result: the catalogue may have changed since (an item
    /// removed, a `max_stack` lowered), but the change was made, and its retry must say so.
    async fn submit_checked(
        &self,
        checked: Result<(), InventoryError>,
        scope: Scope,
        idempotency_key: String,
        command: Command,
    ) -> Result<Receipt<Change>, InventoryError> {
        match checked {
            Ok(()) => self.submit(scope, idempotency_key, command).await,
            Err(error @ (InventoryError::UnknownItem(_) | InventoryError::InvalidQuantity(_))) => {
                let fingerprint = store::fingerprint(&command)?;
                let stored = self
                    .inner
                    .shard
                    .read(move |conn| Ok(store::stored(conn, &scope, &idempotency_key, &fingerprint)))
                    .await?;
                match stored {
                    Ok(Some(first)) => Ok(first),
                    // A new key, or one used for another request: the refusal stands.
                    Ok(None) | Err(InventoryError::KeyReused) => Err(error),
                    Err(other) => Err(other),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Queues a change for the committer and waits until its group has committed.
    async fn submit(
        &self,
        scope: Scope,
        idempotency_key: String,
        command: Command,
    ) -> Result<Receipt<Change>, InventoryError> {
        let valid_key = !idempotency_key.is_empty()
            && idempotency_key.len() <= IDEMPOTENCY_KEY_MAX_BYTES
            && idempotency_key.bytes().all(|b| b.is_ascii_graphic());
        if !valid_key {
            return Err(InventoryError::InvalidRequest(format!(
                "an idempotency key is 1 to {IDEMPOTENCY_KEY_MAX_BYTES} printable ASCII bytes"
            )));
        }
        let (reply, answer) = oneshot::channel();
        let job = committer::Job { scope, idempotency_key, command, reply };
        self.inner.jobs.send(job).await.map_err(|_| InventoryError::ShuttingDown)?;
        // A dropped answer means the committer stopped mid-group: whether the change committed
        // is unknown, which is what retrying with the same key resolves.
        answer.await.map_err(|_| InventoryError::ShuttingDown)?
    }
}

fn holding(receipt: Receipt<Change>) -> Result<Receipt<ItemStack>, InventoryError> {
    match receipt.value {
        Change::Holding(stack) => Ok(Receipt { value: stack, replayed: receipt.replayed }),
        Change::Offer(_) => Err(InventoryError::Internal("stored result is an offer, not a holding".into())),
    }
}

fn offer_of(receipt: Receipt<Change>) -> Result<Receipt<Offer>, InventoryError> {
    match receipt.value {
        Change::Offer(offer) => Ok(Receipt { value: offer, replayed: receipt.replayed }),
        Change::Holding(_) => {
            Err(InventoryError::Internal("stored result is a holding, not an offer".into()))
        }
    }
}

/// A client's string, shortened for an error message.
fn truncated(text: &str) -> String {
    text.chars().take(ITEM_ID_MAX_BYTES).collect()
}
