//! The inventory domain against a real `inventory.db`: grants, consumption, trades and their
//! permissions and expiry, idempotent retries (also after reopening), group commit with failures
//! inside a group, the shutdown drain, and conservation under concurrency.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clock::ManualClock;
use inventory::{
    Catalogue, Committer, Grant, Inventory, InventoryConfig, InventoryError, ItemStack, NewOffer, OfferState,
};
use shard::rusqlite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

const CATALOGUE: &str = r#"
[[item]]
id = "gold"
name = "Gold coin"
max_stack = 1000

[[item]]
id = "potion"
name = "Potion"
max_stack = 20

[[item]]
id = "sword"
name = "Sword of Dawn"
unique = true
"#;

struct World {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(ManualClock::at(1_000_000)),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }

    fn config() -> InventoryConfig {
        // NORMAL keeps the test suite quick; FULL is the default and what the gateway runs.
        let shard = shard::ShardConfig { synchronous: shard::Synchronous::Normal, ..Default::default() };
        InventoryConfig {
            offer_ttl: Duration::from_secs(60),
            max_open_offers: 3,
            shard,
            ..Default::default()
        }
    }

    /// Opens the inventory with `config` without starting its committer.
    async fn open_paused_with(&self, config: InventoryConfig) -> (Inventory, Committer) {
        self.open_paused_with_catalogue(CATALOGUE, config).await
    }

    /// Opens the inventory with `catalogue` and `config` without starting its committer.
    async fn open_paused_with_catalogue(
        &self,
        catalogue: &str,
        config: InventoryConfig,
    ) -> (Inventory, Committer) {
        Inventory::open(
            self.dir.path().join("inventory.db"),
            Catalogue::from_toml(catalogue).unwrap(),
            self.clock.clone(),
            config,
        )
        .await
        .unwrap()
    }

    /// Opens the inventory with another catalogue than [`CATALOGUE`] and starts its committer.
    async fn open_with_catalogue(&self, catalogue: &str) -> Inventory {
        let (inventory, committer) = self.open_paused_with_catalogue(catalogue, World::config()).await;
        self.tracker.spawn(committer.run(self.shutdown.clone()));
        inventory
    }

    /// Opens the inventory without starting its committer.
    async fn open_paused(&self) -> (Inventory, Committer) {
        self.open_paused_with(World::config()).await
    }

    /// Opens the inventory with `config` and starts its committer.
    async fn open_with(&self, config: InventoryConfig) -> Inventory {
        let (inventory, committer) = self.open_paused_with(config).await;
        self.tracker.spawn(committer.run(self.shutdown.clone()));
        inventory
    }

    /// Opens the inventory and starts its committer.
    async fn open(&self) -> Inventory {
        self.open_with(World::config()).await
    }

    async fn stop(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(10), self.tracker.wait()).await.unwrap();
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("inventory.db")).unwrap()
    }
}

fn key() -> String {
    Uuid::new_v4().simple().to_string()
}

fn stack(item_id: &str, quantity: u64) -> ItemStack {
    ItemStack::new(item_id, quantity)
}

async fn grant(inventory: &Inventory, account_id: Uuid, item_id: &str, quantity: u64) -> u64 {
    let grant = Grant {
        account_id,
        item_id: item_id.into(),
        quantity,
        reason: "test".into(),
        idempotency_key: key(),
    };
    inventory.grant(grant).await.unwrap().value.quantity
}

async fn held(inventory: &Inventory, account_id: Uuid) -> Vec<(String, u64)> {
    inventory.holdings(account_id).await.unwrap().into_iter().map(|s| (s.item_id, s.quantity)).collect()
}

fn owned(items: &[(&str, u64)]) -> Vec<(String, u64)> {
    items.iter().map(|(item, quantity)| ((*item).to_owned(), *quantity)).collect()
}

#[tokio::test]
async fn grants_and_consumption_change_holdings_and_append_the_ledger() {
    let world = World::new();
    let inventory = world.open().await;
    let ada = Uuid::now_v7();
    assert_eq!(held(&inventory, ada).await, vec![]);
    assert_eq!(grant(&inventory, ada, "potion", 5).await, 5);
    assert_eq!(grant(&inventory, ada, "potion", 3).await, 8);
    assert_eq!(grant(&inventory, ada, "gold", 100).await, 100);
    assert_eq!(held(&inventory, ada).await, owned(&[("gold", 100), ("potion", 8)]));

    let used = inventory.consume(ada, stack("potion", 2), key()).await.unwrap();
    assert_eq!((used.value.quantity, used.replayed), (6, false));
    let too_many = inventory.consume(ada, stack("potion", 7), key()).await;
    assert!(matches!(too_many, Err(InventoryError::Insufficient { held: 6, needed: 7, .. })), "{too_many:?}");
    assert_eq!(inventory.consume(ada, stack("potion", 6), key()).await.unwrap().value.quantity, 0);
    assert_eq!(held(&inventory, ada).await, owned(&[("gold", 100)]), "an empty holding disappears");

    let ledger = inventory.ledger(ada, 10).await.unwrap();
    let deltas: Vec<(&str, i64, &str)> =
        ledger.iter().map(|e| (e.item_id.as_str(), e.delta, e.reason.as_str())).collect();
    assert_eq!(
        deltas,
        [
            ("potion", -6, "consume"),
            ("potion", -2, "consume"),
            ("gold", 100, "grant: test"),
            ("potion", 3, "grant: test"),
            ("potion", 5, "grant: test")
        ],
        "newest first; the refused consumption left no entry"
    );
    world.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_changes() {
    let world = World::new();
    let inventory = world.open().await;
    let ada = Uuid::now_v7();
    grant(&inventory, ada, "gold", 10).await;
    let check = |result: Result<inventory::Receipt<ItemStack>, InventoryError>, expected: &str| {
        let error = result.unwrap_err();
        let name = format!("{error:?}");
        assert!(name.starts_with(expected), "{name} should be {expected}");
    };
    check(inventory.consume(ada, stack("mana", 1), key()).await, "UnknownItem");
    check(inventory.consume(ada, stack("gold", 0), key()).await, "InvalidQuantity");
    check(inventory.consume(ada, stack("gold", u64::MAX), key()).await, "InvalidQuantity");
    check(inventory.consume(ada, stack("gold", 1), String::new()).await, "InvalidRequest");
    check(inventory.consume(ada, stack("gold", 1), "x".repeat(65)).await, "InvalidRequest");
    check(inventory.consume(ada, stack("gold", 1), "with space".into()).await, "InvalidRequest");
    let huge = Grant {
        account_id: ada,
        item_id: "gold".into(),
        quantity: u64::MAX,
        reason: "r".into(),
        idempotency_key: key(),
    };
    check(inventory.grant(huge.clone()).await, "InvalidQuantity");
    check(inventory.grant(Grant { quantity: 1, reason: " ".into(), ..huge.clone() }).await, "InvalidRequest");
    check(inventory.grant(Grant { quantity: 991, ..huge }).await, "StackFull");
    assert_eq!(held(&inventory, ada).await, owned(&[("gold", 10)]));
    world.stop().await;
}

#[tokio::test]
async fn a_unique_item_is_never_held_twice() {
    let world = World::new();
    let inventory = world.open().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(grant(&inventory, ada, "sword", 1).await, 1);
    let again = Grant {
        account_id: ada,
        item_id: "sword".into(),
        quantity: 1,
        reason: "r".into(),
        idempotency_key: key(),
    };
    assert!(matches!(inventory.grant(again).await, Err(InventoryError::StackFull { .. })));
    // A trade that would give bob a second sword fails as a whole.
    grant(&inventory, bob, "sword", 1).await;
    grant(&inventory, bob, "gold", 5).await;
    let offer = NewOffer { to: bob, gives: vec![stack("sword", 1)], wants: vec![stack("gold", 5)] };
    let offer = inventory.make_offer(ada, offer, key()).await.unwrap().value;
    let accepted = inventory.accept(bob, offer.offer_id, key()).await;
    assert!(matches!(accepted, Err(InventoryError::StackFull { .. })), "{accepted:?}");
    // One asking for a second sword fails on the offerer's side, and says so.
    grant(&inventory, ada, "gold", 5).await;
    let asks = NewOffer { to: bob, gives: vec![stack("gold", 5)], wants: vec![stack("sword", 1)] };
    let asks = inventory.make_offer(ada, asks, key()).await.unwrap().value;
    let accepted = inventory.accept(bob, asks.offer_id, key()).await;
    assert!(matches!(accepted, Err(InventoryError::OffererFull { .. })), "{accepted:?}");
    assert_eq!(held(&inventory, ada).await, owned(&[("gold", 5), ("sword", 1)]));
    assert_eq!(held(&inventory, bob).await, owned(&[("gold", 5), ("sword", 1)]));
    world.stop().await;
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_result_also_after_reopening() {
    let world = World::new();
    let inventory = world.open().await;
    let ada = Uuid::now_v7();
    grant(&inventory, ada, "potion", 10).await;
    let first = inventory.consume(ada, stack("potion", 3), "use-1".into()).await.unwrap();
    let retry = inventory.consume(ada, stack("potion", 3), "use-1".into()).await.unwrap();
    assert_eq!((first.value.quantity, first.replayed), (7, false));
    assert_eq!((retry.value.quantity, retry.replayed), (7, true), "the first result, applied once");
    let reused = inventory.consume(ada, stack("potion", 4), "use-1".into()).await;
    assert!(matches!(reused, Err(InventoryError::KeyReused)), "{reused:?}");
    // Keys belong to one player: another may use the same key.
    let bob = Uuid::now_v7();
    grant(&inventory, bob, "potion", 10).await;
    assert!(!inventory.consume(bob, stack("potion", 3), "use-1".into()).await.unwrap().replayed);
    world.stop().await;
    drop(inventory);

    let world = World { tracker: TaskTracker::new(), shutdown: CancellationToken::new(), ..world };
    let inventory = world.open().await;
    let after_restart = inventory.consume(ada, stack("potion", 3), "use-1".into()).await.unwrap();
    assert_eq!((after_restart.value.quantity, after_restart.replayed), (7, true));
    assert_eq!(held(&inventory, ada).await, owned(&[("potion", 7)]));
    world.stop().await;
}

#[tokio::test]
async fn a_retry_gets_its_first_result_also_after_the_catalogue_changed() {
    let world = World::new();
    let inventory = world.open().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let reward = Grant {
        account_id: ada,
        item_id: "potion".into(),
        quantity: 15,
        reason: "r".into(),
        idempotency_key: "reward-1".into(),
    };
    inventory.grant(reward.clone()).await.unwrap();
    grant(&inventory, ada, "sword", 1).await;
    inventory.consume(ada, stack("potion", 12), "use-1".into()).await.unwrap();
    let proposal = NewOffer { to: bob, gives: vec![stack("sword", 1)], wants: vec![] };
    let offer = inventory.make_offer(ada, proposal.clone(), "offer-1".into()).await.unwrap().value;
    world.stop().await;
    drop(inventory);

    // Restarted with potions stacking to 10 only and the sword gone: each retry still gets the
    // first result (the change was made), and nothing is applied again.
    let world = World { tracker: TaskTracker::new(), shutdown: CancellationToken::new(), ..world };
    let inventory =
        world.open_with_catalogue("[[item]]\nid = \"potion\"\nname = \"Potion\"\nmax_stack = 10\n").await;
    let granted = inventory.grant(reward.clone()).await.unwrap();
    assert_eq!((granted.value.quantity, granted.replayed), (15, true));
    let used = inventory.consume(ada, stack("potion", 12), "use-1".into()).await.unwrap();
    assert_eq!((used.value.quantity, used.replayed), (3, true));
    let offered = inventory.make_offer(ada, proposal.clone(), "offer-1".into()).await.unwrap();
    assert_eq!((offered.value, offered.replayed), (offer, true));
    // A new request is judged by the catalogue as it is now.
    let again = inventory.grant(Grant { idempotency_key: "reward-2".into(), ..reward }).await;
    assert!(matches!(again, Err(InventoryError::InvalidQuantity(_))), "{again:?}");
    let again = inventory.make_offer(ada, proposal, "offer-2".into()).await;
    assert!(matches!(again, Err(InventoryError::UnknownItem(_))), "{again:?}");
    assert_eq!(held(&inventory, ada).await, owned(&[("potion", 3), ("sword", 1)]));
    world.stop().await;
}

#[tokio::test]
async fn an_offer_naming_an_item_since_removed_from_the_catalogue_is_refused_as_a_conflict() {
    let world = World::new();
    let inventory = world.open().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    grant(&inventory, ada, "potion", 5).await;
    grant(&inventory, bob, "gold", 5).await;
    let asks_gold = NewOffer { to: bob, gives: vec![], wants: vec![stack("gold", 5)] };
    let wants_gold = inventory.make_offer(ada, asks_gold, key()).await.unwrap().value;
    let gives_potion = NewOffer { to: bob, gives: vec![stack("potion", 5)], wants: vec![] };
    let potions = inventory.make_offer(ada, gives_potion, key()).await.unwrap().value;
    world.stop().await;
    drop(inventory);

    // Restarted without gold: an offer asking for it cannot be accepted, and says why (not as if
    // the accepter had sent a bad item id); it can still be declined. The other offer is untouched.
    let world = World { tracker: TaskTracker::new(), shutdown: CancellationToken::new(), ..world };
    let inventory =
        world.open_with_catalogue("[[item]]\nid = \"potion\"\nname = \"Potion\"\nmax_stack = 20\n").await;
    let accepted = inventory.accept(bob, wants_gold.offer_id, key()).await;
    assert!(
        matches!(&accepted, Err(InventoryError::ItemRetired { item_id }) if item_id == "gold"),
        "{accepted:?}"
    );
    let declined = inventory.decline(bob, wants_gold.offer_id, key()).await.unwrap().value;
    assert_eq!(declined.state, OfferState::Declined);
    assert_eq!(
        inventory.accept(bob, potions.offer_id, key()).await.unwrap().value.state,
        OfferState::Accepted
    );
    assert_eq!(held(&inventory, ada).await, vec![]);
    assert_eq!(held(&inventory, bob).await, owned(&[("gold", 5), ("potion", 5)]));
    world.stop().await;
}

#[tokio::test]
async fn an_accepted_trade_swaps_both_sides_and_rechecks_holdings() {
    let world = World::new();
    let inventory = world.open().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    grant(&inventory, ada, "gold", 100).await;
    grant(&inventory, ada, "potion", 2).await;
    grant(&inventory, bob, "sword", 1).await;

    let proposal = NewOffer {
        to: bob,
        gives: vec![stack("gold", 60), stack("potion", 2)],
        wants: vec![stack("sword", 1)],
    };
    let offer = inventory.make_offer(ada, proposal.clone(), key()).await.unwrap().value;
    assert_eq!((offer.from, offer.to, offer.state), (ada, bob, OfferState::Open));
    assert_eq!(inventory.offers(bob).await.unwrap(), vec![offer.clone()]);
    assert_eq!(inventory.offers(ada).await.unwrap(), vec![offer.clone()]);

    // Ada spends a potion meanwhile: acceptance re-checks and moves nothing, and tells Bob which
    // item is missing but not what Ada holds.
    inventory.consume(ada, stack("potion", 1), key()).await.unwrap();
    let refused = inventory.accept(bob, offer.offer_id, key()).await;
    assert!(
        matches!(&refused, Err(InventoryError::OffererLacks { item_id }) if item_id == "potion"),
        "{refused:?}"
    );
    let told = refused.unwrap_err().to_string();
    assert!(!told.contains('1') && !told.contains('2'), "{told}");
    assert_eq!(held(&inventory, bob).await, owned(&[("sword", 1)]));
    grant(&inventory, ada, "potion", 1).await;

    let accepted = inventory.accept(bob, offer.offer_id, key()).await.unwrap().value;
    assert_eq!(accepted.state, OfferState::Accepted);
    assert_eq!(held(&inventory, ada).await, owned(&[("gold", 40), ("sword", 1)]));
    assert_eq!(held(&inventory, bob).await, owned(&[("gold", 60), ("potion", 2)]));
    let twice = inventory.accept(bob, offer.offer_id, key()).await;
    assert!(matches!(twice, Err(InventoryError::OfferClosed(OfferState::Accepted))), "{twice:?}");
    assert!(inventory.offers(bob).await.unwrap().is_empty(), "settled offers are not listed");
    world.stop().await;
}

#[tokio::test]
async fn only_the_recipient_answers_and_only_the_offerer_cancels() {
    let world = World::new();
    let inventory = world.open().await;
    let (ada, bob, eve) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    grant(&inventory, ada, "gold", 10).await;
    let proposal = NewOffer { to: bob, gives: vec![stack("gold", 10)], wants: vec![] };
    let offer = inventory.make_offer(ada, proposal.clone(), key()).await.unwrap().value;
    let not_allowed = |result: Result<inventory::Receipt<inventory::Offer>, InventoryError>| {
        assert!(matches!(result, Err(InventoryError::NotAllowed(_))), "{result:?}");
    };
    not_allowed(inventory.accept(ada, offer.offer_id, key()).await);
    not_allowed(inventory.accept(eve, offer.offer_id, key()).await);
    not_allowed(inventory.decline(eve, offer.offer_id, key()).await);
    not_allowed(inventory.cancel(bob, offer.offer_id, key()).await);
    let unknown = inventory.accept(bob, Uuid::now_v7(), key()).await;
    assert!(matches!(unknown, Err(InventoryError::UnknownOffer(_))), "{unknown:?}");
    let to_self = inventory.make_offer(ada, NewOffer { to: ada, ..proposal.clone() }, key()).await;
    assert!(matches!(to_self, Err(InventoryError::InvalidRequest(_))), "{to_self:?}");
    let empty = inventory.make_offer(ada, NewOffer { to: bob, gives: vec![], wants: vec![] }, key()).await;
    assert!(matches!(empty, Err(InventoryError::InvalidRequest(_))), "{empty:?}");
    let twice = NewOffer { to: bob, gives: vec![stack("gold", 1), stack("gold", 1)], wants: vec![] };
    assert!(matches!(inventory.make_offer(ada, twice, key()).await, Err(InventoryError::InvalidRequest(_))));
    let unheld = NewOffer { to: bob, gives: vec![stack("potion", 1)], wants: vec![] };
    assert!(matches!(
        inventory.make_offer(ada, unheld, key()).await,
        Err(InventoryError::Insufficient { .. })
    ));

    let cancelled = inventory.cancel(ada, offer.offer_id, key()).await.unwrap().value;
    assert_eq!(cancelled.state, OfferState::Cancelled);
    let declined = inventory.make_offer(ada, proposal, key()).await.unwrap().value;
    assert_eq!(
        inventory.decline(bob, declined.offer_id, key()).await.unwrap().value.state,
        OfferState::Declined
    );
    assert_eq!(held(&inventory, ada).await, owned(&[("gold", 10)]), "nothing moved");
    assert_eq!(held(&inventory, bob).await, vec![]);
    world.stop().await;
}

#[tokio::test]
async fn offers_expire_on_the_injected_clock_and_are_limited_per_player() {
    let world = World::new();
    let inventory = world.open().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    grant(&inventory, ada, "gold", 10).await;
    let proposal = NewOffer { to: bob, gives: vec![stack("gold", 1)], wants: vec![] };
    let first = inventory.make_offer(ada, proposal.clone(), key()).await.unwrap().value;
    assert_eq!(first.expires_at_ms, first.created_at_ms + 60_000);
    inventory.make_offer(ada, proposal.clone(), key()).await.unwrap();
    inventory.make_offer(ada, proposal.clone(), key()).await.unwrap();
    let fourth = inventory.make_offer(ada, proposal.clone(), key()).await;
    assert!(matches!(fourth, Err(InventoryError::TooManyOpenOffers(3))), "{fourth:?}");

    world.clock.advance(Duration::from_secs(60));
    let late = inventory.accept(bob, first.offer_id, key()).await;
    assert!(matches!(late, Err(InventoryError::OfferExpired)), "{late:?}");
    assert!(matches!(inventory.cancel(ada, first.offer_id, key()).await, Err(InventoryError::OfferExpired)));
    assert!(inventory.offers(bob).await.unwrap().is_empty(), "expired offers are not listed");
    inventory.make_offer(ada, proposal, key()).await.unwrap();
    assert_eq!(held(&inventory, bob).await, vec![]);
    world.stop().await;
}

#[tokio::test]
async fn an_offer_ttl_under_a_millisecond_is_refused_at_open() {
    let world = World::new();
    for offer_ttl in [Duration::ZERO, Duration::from_micros(400)] {
        let config = InventoryConfig { offer_ttl, ..World::config() };
        let opened = Inventory::open(
            world.dir.path().join("inventory.db"),
            Catalogue::from_toml(CATALOGUE).unwrap(),
            world.clock.clone(),
            config,
        )
        .await;
        assert!(
            matches!(opened, Err(InventoryError::Config(_))),
            "{offer_ttl:?}: every offer would be born expired"
        );
    }
}

#[tokio::test]
async fn idempotency_records_and_closed_offers_are_pruned_in_batches_after_the_retention_window() {
    let world = World::new();
    let inventory = world
        .open_with(InventoryConfig {
            retention: Duration::from_secs(3600),
            prune_batch: 2,
            ..World::config()
        })
        .await;
    let count = |table: &str| -> i64 {
        world.db().query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
    };
    let pruned = |inventory: &Inventory| {
        let stats = inventory.stats();
        (stats.pruned_requests.load(Ordering::Relaxed), stats.pruned_offers.load(Ordering::Relaxed))
    };

    // Five records and two offers (one accepted, one left to expire), all made now.
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    grant(&inventory, ada, "gold", 10).await;
    inventory.consume(ada, stack("gold", 1), "use-1".into()).await.unwrap();
    let proposal = NewOffer { to: bob, gives: vec![stack("gold", 1)], wants: vec![] };
    let accepted = inventory.make_offer(ada, proposal.clone(), key()).await.unwrap().value;
    inventory.accept(bob, accepted.offer_id, key()).await.unwrap();
    inventory.make_offer(ada, proposal.clone(), key()).await.unwrap();
    let ledger_entries = count("ledger");

    // Within the window a retry is still answered from its record, and nothing is pruned.
    world.clock.advance(Duration::from_secs(3599));
    let retry = inventory.consume(ada, stack("gold", 1), "use-1".into()).await.unwrap();
    assert_eq!((retry.value.quantity, retry.replayed), (9, true));
    assert_eq!(pruned(&inventory), (0, 0));

    // Past the window (and the open offer's expiry), each group prunes at most two rows of each
    // table, and the group after a full batch prunes again.
    world.clock.advance(Duration::from_secs(61 + 1));
    let fresh = inventory.make_offer(ada, proposal, key()).await.unwrap().value;
    assert_eq!(pruned(&inventory), (2, 2));
    inventory.consume(ada, stack("gold", 1), key()).await.unwrap();
    assert_eq!(pruned(&inventory), (4, 2));
    inventory.consume(ada, stack("gold", 1), key()).await.unwrap();
    assert_eq!(pruned(&inventory), (5, 2));
    assert_eq!(count("requests"), 3, "the records made after the window began stay");
    assert_eq!(inventory.offers(ada).await.unwrap(), vec![fresh], "an open offer is never pruned");
    assert_eq!(count("offers"), 1);
    assert_eq!(count("ledger"), ledger_entries + 2, "the ledger is never pruned");

    // A key older than the window counts as new.
    let late_retry = inventory.consume(ada, stack("gold", 1), "use-1".into()).await.unwrap();
    assert_eq!((late_retry.value.quantity, late_retry.replayed), (5, false));
    world.stop().await;
}

#[tokio::test]
async fn pruning_goes_on_after_the_clock_is_set_back() {
    let world = World::new();
    let inventory =
        world.open_with(InventoryConfig { retention: Duration::from_secs(3600), ..World::config() }).await;
    let pruned = || inventory.stats().pruned_requests.load(Ordering::Relaxed);
    let ada = Uuid::now_v7();
    grant(&inventory, ada, "gold", 10).await;

    // A bad time source puts the clock a year ahead for one group, which prunes the first record;
    // then the clock is set right.
    world.clock.advance(Duration::from_secs(365 * 24 * 3600));
    grant(&inventory, ada, "gold", 1).await;
    assert_eq!(pruned(), 1);
    world.clock.set(1_000_000 + 60_000);
    inventory.consume(ada, stack("gold", 1), "use-1".into()).await.unwrap();

    // Past the window, the record made after the clock was set right is pruned as usual, not a
    // year later.
    world.clock.advance(Duration::from_secs(2 * 3600));
    grant(&inventory, ada, "gold", 1).await;
    assert_eq!(pruned(), 2);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_beside_the_committer_keep_the_wal_bounded() {
    let world = World::new();
    const LIMIT: u64 = 256 * 1024;
    let inventory = world
        .open_with(InventoryConfig { checkpoint_every: 4, wal_limit_bytes: LIMIT, ..World::config() })
        .await;

    // One group per change, each writing a few pages (holding, ledger, record, their indexes):
    // some 1,500 pages of WAL, 6 MiB, if nothing copied them back and started the WAL over. The
    // WAL file's size is checked after every change, not only at the end.
    let ada = Uuid::now_v7();
    let wal = world.dir.path().join("inventory.db-wal");
    for n in 1..=300 {
        assert_eq!(grant(&inventory, ada, "gold", 1).await, n);
        // 1.5 times the limit plus one group of a few pages.
        let wal_bytes = std::fs::metadata(&wal).unwrap().len();
        assert!(wal_bytes <= LIMIT * 3 / 2 + 16 * 4096, "the WAL grew to {wal_bytes} bytes");
    }
    assert!(inventory.stats().wal.checkpoints.load(Ordering::Relaxed) > 0);
    assert_eq!(held(&inventory, ada).await, owned(&[("gold", 300)]));
    world.stop().await;
}

#[tokio::test]
async fn one_group_commits_many_changes_and_a_failing_one_does_not_fail_the_others() {
    let world = World::new();
    let (inventory, committer) = world.open_paused().await;
    let ada = Uuid::now_v7();
    // Queue everything before the committer runs, so it all lands in one group.
    let mut pending = Vec::new();
    for n in 0..40u64 {
        let inventory = inventory.clone();
        pending.push(tokio::spawn(async move {
            let grant = Grant {
                account_id: ada,
                item_id: "gold".into(),
                quantity: 10,
                reason: "r".into(),
                idempotency_key: format!("g{n}"),
            };
            let granted = inventory.grant(grant).await.is_ok();
            // Consumes more than one grant gives: fails unless queued after enough grants.
            let consumed = inventory.consume(ada, stack("potion", 1), format!("c{n}")).await.is_ok();
            (granted, consumed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    world.tracker.spawn(committer.run(world.shutdown.clone()));
    for task in pending {
        assert_eq!(task.await.unwrap(), (true, false), "grants commit, the consumptions of no potion fail");
    }
    assert_eq!(held(&inventory, ada).await, owned(&[("gold", 400)]));
    let stats = inventory.stats();
    let groups = stats.groups.load(Ordering::Relaxed);
    assert!(stats.largest_group.load(Ordering::Relaxed) >= 40, "one group held every grant");
    assert!(groups <= 41, "{groups} groups for 80 changes");
    world.stop().await;
}

#[tokio::test]
async fn shutdown_commits_every_queued_change_and_then_refuses_new_ones() {
    let world = World::new();
    let (inventory, committer) = world.open_paused().await;
    let ada = Uuid::now_v7();
    let mut pending = Vec::new();
    for n in 0..20 {
        let inventory = inventory.clone();
        let grant = Grant {
            account_id: ada,
            item_id: "gold".into(),
            quantity: 1,
            reason: "r".into(),
            idempotency_key: format!("g{n}"),
        };
        pending.push(tokio::spawn(async move { inventory.grant(grant).await.map(|r| r.value.quantity) }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    world.shutdown.cancel();
    world.tracker.spawn(committer.run(world.shutdown.clone()));
    world.stop().await;
    for task in pending {
        assert!(task.await.unwrap().is_ok(), "a queued change commits during the drain");
    }
    assert_eq!(held(&inventory, ada).await, owned(&[("gold", 20)]));
    let late = inventory.consume(ada, stack("gold", 1), key()).await;
    assert!(matches!(late, Err(InventoryError::ShuttingDown)), "{late:?}");
}

/// Checks the books of `inventory.db`: per item, granted − consumed = held; no holding is
/// negative; per holding, the ledger sums to it. Returns the total held per item.
pub fn audit(db: &rusqlite::Connection) -> HashMap<String, i64> {
    let negative: i64 =
        db.query_row("SELECT count(*) FROM holdings WHERE quantity <= 0", [], |r| r.get(0)).unwrap();
    assert_eq!(negative, 0, "no holding is zero or negative");
    let mismatched: i64 = db
        .query_row(
            "SELECT count(*) FROM (
                 SELECT account_id, item_id, sum(delta) AS total FROM ledger GROUP BY account_id, item_id
             ) AS l FULL OUTER JOIN holdings AS h USING (account_id, item_id)
             WHERE coalesce(l.total, 0) <> coalesce(h.quantity, 0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mismatched, 0, "the ledger sums to every holding");
    let mut statement = db
        .prepare(
            "SELECT item_id,
                    (SELECT coalesce(sum(delta), 0) FROM ledger l WHERE l.item_id = i.item_id AND reason LIKE 'grant:%'),
                    (SELECT coalesce(sum(delta), 0) FROM ledger l WHERE l.item_id = i.item_id AND reason = 'consume'),
                    (SELECT coalesce(sum(delta), 0) FROM ledger l WHERE l.item_id = i.item_id AND reason LIKE 'trade %'),
                    (SELECT coalesce(sum(quantity), 0) FROM holdings h WHERE h.item_id = i.item_id)
             FROM (SELECT DISTINCT item_id FROM ledger) AS i",
        )
        .unwrap();
    let rows = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<(String, i64, i64, i64, i64)>>>()
        .unwrap();
    let mut totals = HashMap::new();
    for (item, granted, consumed, traded, held) in rows {
        assert_eq!(traded, 0, "{item}: trades move items, never make or destroy them");
        assert_eq!(granted + consumed, held, "{item}: granted − consumed = held");
        totals.insert(item, held);
    }
    totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_conserved_under_concurrent_trades_and_consumption() {
    let world = World::new();
    let inventory = world.open().await;
    let players: Vec<Uuid> = (0..12).map(|_| Uuid::now_v7()).collect();
    for player in &players {
        grant(&inventory, *player, "gold", 500).await;
        grant(&inventory, *player, "potion", 20).await;
    }
    grant(&inventory, players[0], "sword", 1).await;

    let mut tasks = Vec::new();
    for (index, me) in players.iter().copied().enumerate() {
        let inventory = inventory.clone();
        let players = players.clone();
        tasks.push(tokio::spawn(async move {
            let mut seed = index as u64 * 7919 + 1;
            let mut next = move |n: u64| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 33) % n
            };
            for _ in 0..60 {
                let other = players[usize::try_from(next(players.len() as u64)).unwrap()];
                let item = ["gold", "potion", "sword"][usize::try_from(next(3)).unwrap()];
                match next(3) {
                    0 => {
                        let _ = inventory.consume(me, stack(item, 1 + next(3)), key()).await;
                    }
                    _ if other != me => {
                        let proposal = NewOffer {
                            to: other,
                            gives: vec![stack(item, 1 + next(2))],
                            wants: vec![stack("gold", 1 + next(20))],
                        };
                        if let Ok(offer) = inventory.make_offer(me, proposal, key()).await {
                            // The recipient answers at once, racing everyone else's changes.
                            let _ = inventory.accept(other, offer.value.offer_id, key()).await;
                        }
                    }
                    _ => {}
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    world.stop().await;
    let totals = audit(&world.db());
    assert!(totals["gold"] <= 12 * 500 && totals["sword"] <= 1);
    let trades: i64 = world
        .db()
        .query_row("SELECT count(*) FROM offers WHERE state = 'accepted'", [], |r| r.get(0))
        .unwrap();
    assert!(trades > 0, "some trades went through");
}
