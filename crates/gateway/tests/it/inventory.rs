//! Inventory through the real gateway: grants on the admin port with the service token (and no
//! way for a player to grant), holdings and consumption, trades with their events, permissions,
//! expiry, bad input, idempotent retries across a restart, and conservation of items under
//! concurrent trading, also with the real binary killed (`kill -9`) mid-run and restarted.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use game_client::{Client, ClientError};
use gateway::GatewayConfig;
use gateway::config::ServiceToken;
use proto::inventory::{InventoryEvent, InventoryReply, InventoryRequest, ItemStack, OfferState, TradeOffer};
use proto::{AccountId, Encoding, ErrorCode, Event, Reply, Request};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::support::{GatewayProcess, PASSWORD, PATIENCE, TestGateway, World, admin, code, username};

const TOKEN: &str = "service-token-for-tests-0123456789";

const CATALOGUE: &str = r#"
[[item]]
id = "gold"
name = "Gold coin"
max_stack = 100000

[[item]]
id = "potion"
name = "Potion"
max_stack = 50

[[item]]
id = "sword"
name = "Sword of Dawn"
unique = true
"#;

fn catalogue_file(world: &World) -> PathBuf {
    let path = world.data_dir.path().join("catalogue.toml");
    std::fs::write(&path, CATALOGUE).unwrap();
    path
}

fn config(world: &World) -> GatewayConfig {
    GatewayConfig {
        inventory_catalogue: Some(catalogue_file(world)),
        service_token: Some(ServiceToken::new(TOKEN)),
        requests_per_sec: 100_000,
        request_burst: 100_000,
        ..world.config()
    }
}

fn key() -> String {
    Uuid::new_v4().simple().to_string()
}

fn stack(item_id: &str, quantity: u64) -> ItemStack {
    ItemStack { item_id: item_id.into(), quantity }
}

async fn call(client: &Client, request: InventoryRequest) -> Result<InventoryReply, ClientError> {
    match client.request(Request::Inventory(request)).await? {
        Reply::Inventory(reply) => Ok(reply),
        other => panic!("unexpected {other:?}"),
    }
}

async fn holdings(client: &Client) -> Vec<(String, u64)> {
    match call(client, InventoryRequest::Holdings).await.unwrap() {
        InventoryReply::Holdings { items } => items.into_iter().map(|s| (s.item_id, s.quantity)).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

fn owned(items: &[(&str, u64)]) -> Vec<(String, u64)> {
    items.iter().map(|(item, quantity)| ((*item).to_owned(), *quantity)).collect()
}

async fn consume(client: &Client, item_id: &str, quantity: u64, key: &str) -> Result<u64, ClientError> {
    let request =
        InventoryRequest::Consume { item_id: item_id.into(), quantity, idempotency_key: key.into() };
    match call(client, request).await? {
        InventoryReply::Consumed { remaining, .. } => Ok(remaining),
        other => panic!("unexpected {other:?}"),
    }
}

async fn make_offer(
    client: &Client,
    to: AccountId,
    gives: Vec<ItemStack>,
    wants: Vec<ItemStack>,
) -> Result<TradeOffer, ClientError> {
    let request = InventoryRequest::MakeOffer { to, gives, wants, idempotency_key: key() };
    match call(client, request).await? {
        InventoryReply::Offer(offer) => Ok(offer),
        other => panic!("unexpected {other:?}"),
    }
}

async fn settle(client: &Client, request: InventoryRequest) -> Result<TradeOffer, ClientError> {
    match call(client, request).await? {
        InventoryReply::Offer(offer) => Ok(offer),
        other => panic!("unexpected {other:?}"),
    }
}

/// The next inventory event of `client`, skipping others.
async fn inventory_event(client: &Client) -> InventoryEvent {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match client.next_event().await {
                Some(Event::Inventory(event)) => return event,
                Some(_) => {}
                None => panic!("connection closed while waiting for an inventory event"),
            }
        }
    })
    .await
    .expect("an inventory event arrives")
}

fn grant_body(account_id: AccountId, item_id: &str, quantity: u64, key: &str) -> String {
    serde_json::json!({
        "account_id": account_id, "item_id": item_id, "quantity": quantity,
        "reason": "test reward", "idempotency_key": key,
    })
    .to_string()
}

async fn grant(addr: SocketAddr, account_id: AccountId, item_id: &str, quantity: u64) -> u64 {
    let (status, body) = admin(
        addr,
        "POST",
        "/inventory/grant",
        Some(TOKEN),
        &grant_body(account_id, item_id, quantity, &key()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    answer["total"].as_u64().unwrap()
}

#[tokio::test]
async fn a_player_sees_grants_lists_and_consumes_their_own_items() {
    let world = World::new();
    let gateway = world.gateway_with(config(&world)).await;
    let (ada, session) = gateway.player(&username("ada")).await;
    assert_eq!(holdings(&ada).await, vec![]);

    assert_eq!(grant(gateway.admin, session.account_id, "potion", 5).await, 5);
    assert_eq!(
        inventory_event(&ada).await,
        InventoryEvent::Granted { item_id: "potion".into(), quantity: 5, total: 5 }
    );
    grant(gateway.admin, session.account_id, "sword", 1).await;
    assert_eq!(holdings(&ada).await, owned(&[("potion", 5), ("sword", 1)]));

    assert_eq!(consume(&ada, "potion", 2, "drink-1").await.unwrap(), 3);
    assert_eq!(code(consume(&ada, "potion", 4, &key()).await), ErrorCode::Conflict, "only 3 held");
    assert_eq!(holdings(&ada).await, owned(&[("potion", 3), ("sword", 1)]));

    match call(&ada, InventoryRequest::Catalogue).await.unwrap() {
        InventoryReply::Catalogue { items } => {
            let ids: Vec<_> = items.iter().map(|i| (i.item_id.as_str(), i.unique, i.max_stack)).collect();
            assert_eq!(ids, [("gold", false, 100_000), ("potion", false, 50), ("sword", true, 1)]);
        }
        other => panic!("unexpected {other:?}"),
    }

    // The ops view: the ledger on the admin port, with the service token only.
    let path = format!("/inventory/{}/ledger", session.account_id);
    assert_eq!(admin(gateway.admin, "GET", &path, None, "").await.0, 401);
    let (status, body) = admin(gateway.admin, "GET", &path, Some(TOKEN), "").await;
    assert_eq!(status, 200);
    let ledger: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let entries: Vec<(&str, i64, &str)> = ledger
        .iter()
        .map(|e| {
            (e["item_id"].as_str().unwrap(), e["delta"].as_i64().unwrap(), e["reason"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        entries,
        [("potion", -2, "consume"), ("sword", 1, "grant: test reward"), ("potion", 5, "grant: test reward")]
    );
}

#[tokio::test]
async fn only_the_service_token_grants_and_a_player_never_can() {
    let world = World::new();
    let gateway = world.gateway_with(config(&world)).await;
    let (ada, session) = gateway.player(&username("ada")).await;
    let body = grant_body(session.account_id, "gold", 10, "g-1");
    assert_eq!(admin(gateway.admin, "POST", "/inventory/grant", None, &body).await.0, 401);
    assert_eq!(
        admin(gateway.admin, "POST", "/inventory/grant", Some("wrong-token-0123456789"), &body).await.0,
        401
    );
    let (status, first) = admin(gateway.admin, "POST", "/inventory/grant", Some(TOKEN), &body).await;
    assert_eq!(status, 200, "{first}");
    let (status, retry) = admin(gateway.admin, "POST", "/inventory/grant", Some(TOKEN), &body).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&retry).unwrap()["replayed"], true);
    let other_body = grant_body(session.account_id, "gold", 11, "g-1");
    assert_eq!(admin(gateway.admin, "POST", "/inventory/grant", Some(TOKEN), &other_body).await.0, 409);
    assert_eq!(holdings(&ada).await, owned(&[("gold", 10)]), "a retried grant applies once");
    let nobody = grant_body(AccountId(Uuid::now_v7()), "gold", 1, "g-2");
    assert_eq!(admin(gateway.admin, "POST", "/inventory/grant", Some(TOKEN), &nobody).await.0, 404);
    let unknown = grant_body(session.account_id, "mana", 1, "g-3");
    assert_eq!(admin(gateway.admin, "POST", "/inventory/grant", Some(TOKEN), &unknown).await.0, 400);
    assert_eq!(admin(gateway.admin, "POST", "/inventory/grant", Some(TOKEN), "{").await.0, 400);

    // The player protocol has no grant at all: such a frame is not even a message.
    let json = gateway.connect(Encoding::Json).await;
    json.resume(&session.token).await.unwrap();
    let frame = format!(
        r#"{{"id":9,"request":{{"inventory":{{"grant":{{"account_id":"{}","item_id":"gold","quantity":1000,"reason":"me","idempotency_key":"x"}}}}}}}}"#,
        session.account_id
    );
    json.send_raw(Message::text(frame)).await.unwrap();
    match json.expect_response(9).await.unwrap() {
        proto::Outcome::Error(body) => assert_eq!(body.code, ErrorCode::BadRequest),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(holdings(&ada).await, owned(&[("gold", 10)]));

    // Without a service token configured, the endpoints are off.
    let config = GatewayConfig { service_token: None, ..config(&world) };
    let other = TestGateway::start(config, world.clock.clone()).await;
    let body = grant_body(session.account_id, "gold", 10, "g-4");
    assert_eq!(admin(other.admin, "POST", "/inventory/grant", Some(TOKEN), &body).await.0, 404);
}

#[tokio::test]
async fn bad_inventory_input_gets_stable_error_codes() {
    let world = World::new();
    let gateway = world.gateway_with(config(&world)).await;
    let (ada, ada_session) = gateway.player(&username("ada")).await;
    let (_bob, bob_session) = gateway.player(&username("bob")).await;
    grant(gateway.admin, ada_session.account_id, "gold", 10).await;
    let bad = ErrorCode::BadRequest;
    assert_eq!(code(consume(&ada, "mana", 1, &key()).await), bad, "unknown item");
    assert_eq!(code(consume(&ada, "gold", 0, &key()).await), bad, "zero");
    assert_eq!(code(consume(&ada, "gold", u64::MAX, &key()).await), bad, "huge");
    assert_eq!(code(consume(&ada, "gold", 1, "").await), bad, "no key");
    let me = ada_session.account_id;
    assert_eq!(code(make_offer(&ada, me, vec![stack("gold", 1)], vec![]).await), bad, "trade with oneself");
    let nobody = AccountId(Uuid::now_v7());
    assert_eq!(code(make_offer(&ada, nobody, vec![stack("gold", 1)], vec![]).await), ErrorCode::NotFound);
    // Recipients found are remembered; one not found is asked about again, and refused again.
    assert_eq!(code(make_offer(&ada, nobody, vec![stack("gold", 1)], vec![]).await), ErrorCode::NotFound);
    let bob = bob_session.account_id;
    assert_eq!(code(make_offer(&ada, bob, vec![stack("gold", u64::MAX)], vec![]).await), bad);
    assert_eq!(code(make_offer(&ada, bob, vec![], vec![]).await), bad, "an empty offer");
    let accept = InventoryRequest::AcceptOffer { offer_id: Uuid::now_v7(), idempotency_key: key() };
    assert_eq!(code(settle(&ada, accept).await), ErrorCode::NotFound);
    // A JSON number beyond u64 is not a message at all.
    let json = gateway.connect(Encoding::Json).await;
    json.resume(&ada_session.token).await.unwrap();
    let frame = r#"{"id":5,"request":{"inventory":{"consume":{"item_id":"gold","quantity":18446744073709551616,"idempotency_key":"k"}}}}"#;
    json.send_raw(Message::text(frame)).await.unwrap();
    match json.expect_response(5).await.unwrap() {
        proto::Outcome::Error(body) => assert_eq!(body.code, bad),
        other => panic!("unexpected {other:?}"),
    }
    let negative = r#"{"id":6,"request":{"inventory":{"consume":{"item_id":"gold","quantity":-1,"idempotency_key":"k"}}}}"#;
    json.send_raw(Message::text(negative)).await.unwrap();
    match json.expect_response(6).await.unwrap() {
        proto::Outcome::Error(body) => assert_eq!(body.code, bad),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(holdings(&ada).await, owned(&[("gold", 10)]));
}

#[tokio::test]
async fn a_trade_reaches_the_other_player_and_acceptance_swaps_both_sides() {
    let world = World::new();
    let gateway = world.gateway_with(config(&world)).await;
    let (ada, ada_session) = gateway.player(&username("ada")).await;
    let (bob, bob_session) = gateway.player(&username("bob")).await;
    let (eve, _) = gateway.player(&username("eve")).await;
    grant(gateway.admin, ada_session.account_id, "gold", 100).await;
    grant(gateway.admin, bob_session.account_id, "sword", 1).await;
    let _ = inventory_event(&ada).await;
    let _ = inventory_event(&bob).await;

    let offer = make_offer(&ada, bob_session.account_id, vec![stack("gold", 60)], vec![stack("sword", 1)])
        .await
        .unwrap();
    assert_eq!(offer.state, OfferState::Open);
    assert_eq!(inventory_event(&bob).await, InventoryEvent::OfferReceived(offer.clone()));
    match call(&bob, InventoryRequest::Offers).await.unwrap() {
        InventoryReply::Offers { offers } => assert_eq!(offers, vec![offer.clone()]),
        other => panic!("unexpected {other:?}"),
    }

    let id = offer.offer_id;
    let forbidden = ErrorCode::Forbidden;
    assert_eq!(
        code(settle(&eve, InventoryRequest::AcceptOffer { offer_id: id, idempotency_key: key() }).await),
        forbidden
    );
    assert_eq!(
        code(settle(&ada, InventoryRequest::AcceptOffer { offer_id: id, idempotency_key: key() }).await),
        forbidden
    );
    assert_eq!(
        code(settle(&bob, InventoryRequest::CancelOffer { offer_id: id, idempotency_key: key() }).await),
        forbidden
    );

    let accepted =
        settle(&bob, InventoryRequest::AcceptOffer { offer_id: id, idempotency_key: "take-it".into() })
            .await
            .unwrap();
    assert_eq!(accepted.state, OfferState::Accepted);
    assert_eq!(inventory_event(&ada).await, InventoryEvent::OfferSettled(accepted.clone()));
    assert_eq!(holdings(&ada).await, owned(&[("gold", 40), ("sword", 1)]));
    assert_eq!(holdings(&bob).await, owned(&[("gold", 60)]));
    let retry =
        settle(&bob, InventoryRequest::AcceptOffer { offer_id: id, idempotency_key: "take-it".into() })
            .await
            .unwrap();
    assert_eq!(retry, accepted, "a retry returns the first result");
    let again = settle(&bob, InventoryRequest::AcceptOffer { offer_id: id, idempotency_key: key() }).await;
    assert_eq!(code(again), ErrorCode::Conflict, "an offer is accepted once");
    assert_eq!(holdings(&bob).await, owned(&[("gold", 60)]));

    // Declined and cancelled offers move nothing; the other side hears of it.
    let second = make_offer(&ada, bob_session.account_id, vec![stack("gold", 1)], vec![]).await.unwrap();
    let _ = inventory_event(&bob).await;
    let declined =
        settle(&bob, InventoryRequest::DeclineOffer { offer_id: second.offer_id, idempotency_key: key() })
            .await
            .unwrap();
    assert_eq!(declined.state, OfferState::Declined);
    assert_eq!(inventory_event(&ada).await, InventoryEvent::OfferSettled(declined));
    let third = make_offer(&ada, bob_session.account_id, vec![stack("gold", 1)], vec![]).await.unwrap();
    let _ = inventory_event(&bob).await;
    let cancelled =
        settle(&ada, InventoryRequest::CancelOffer { offer_id: third.offer_id, idempotency_key: key() })
            .await
            .unwrap();
    assert_eq!(cancelled.state, OfferState::Cancelled);
    assert_eq!(inventory_event(&bob).await, InventoryEvent::OfferSettled(cancelled));
    assert_eq!(holdings(&ada).await, owned(&[("gold", 40), ("sword", 1)]));

    // /metrics counts every change the committer answered (refusals included) and the replay.
    assert_eq!(gateway.metric("inventory_transactions_total").await, Some(13.0));
    assert_eq!(gateway.metric("inventory_replays_total").await, Some(1.0));
    let groups = gateway.metric("inventory_groups_total").await.unwrap();
    assert!((1.0..=13.0).contains(&groups), "{groups} groups");
    assert!(gateway.metric("inventory_commit_seconds_total").await.unwrap() > 0.0);
}

#[tokio::test]
async fn an_expired_offer_cannot_be_accepted() {
    let world = World::new();
    let gateway =
        world.gateway_with(GatewayConfig { offer_ttl: Duration::from_secs(30), ..config(&world) }).await;
    let (ada, ada_session) = gateway.player(&username("ada")).await;
    let (bob, bob_session) = gateway.player(&username("bob")).await;
    grant(gateway.admin, ada_session.account_id, "gold", 5).await;
    let offer = make_offer(&ada, bob_session.account_id, vec![stack("gold", 5)], vec![]).await.unwrap();
    assert_eq!(offer.expires_at_ms, offer.created_at_ms + 30_000);
    world.clock.advance(Duration::from_secs(30));
    let late =
        settle(&bob, InventoryRequest::AcceptOffer { offer_id: offer.offer_id, idempotency_key: key() })
            .await;
    assert_eq!(code(late), ErrorCode::Conflict);
    match call(&bob, InventoryRequest::Offers).await.unwrap() {
        InventoryReply::Offers { offers } => assert!(offers.is_empty(), "expired offers are not listed"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(holdings(&ada).await, owned(&[("gold", 5)]));
    assert_eq!(holdings(&bob).await, vec![]);
}

#[tokio::test]
async fn a_retried_consumption_applies_once_also_across_a_restart() {
    let world = World::new();
    let gateway = world.gateway_with(config(&world)).await;
    let name = username("ada");
    let (ada, session) = gateway.player(&name).await;
    grant(gateway.admin, session.account_id, "potion", 10).await;
    assert_eq!(consume(&ada, "potion", 4, "once").await.unwrap(), 6);
    assert_eq!(consume(&ada, "potion", 4, "once").await.unwrap(), 6);
    assert_eq!(
        code(consume(&ada, "potion", 1, "once").await),
        ErrorCode::Conflict,
        "a key reused differently"
    );
    drop(ada);
    gateway.stop().await.unwrap();

    let gateway = world.gateway_with(config(&world)).await;
    let (ada, _) = gateway.player(&name).await;
    assert_eq!(consume(&ada, "potion", 4, "once").await.unwrap(), 6, "the first result, after a restart");
    assert_eq!(holdings(&ada).await, owned(&[("potion", 6)]));
}

/// Audits `inventory.db`: no holding is zero or negative, the ledger sums to every holding, and
/// per item granted − consumed = held with trades summing to zero. Returns per item
/// (granted, consumed, held).
fn audit(db: &std::path::Path) -> HashMap<String, (i64, i64, i64)> {
    let db = shard::rusqlite::Connection::open(db).unwrap();
    let bad: i64 =
        db.query_row("SELECT count(*) FROM holdings WHERE quantity <= 0", [], |r| r.get(0)).unwrap();
    assert_eq!(bad, 0, "no holding is zero or negative");
    let mismatched: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT account_id, item_id, sum(delta) AS total FROM ledger GROUP BY 1, 2) AS l
             FULL OUTER JOIN holdings AS h USING (account_id, item_id)
             WHERE coalesce(l.total, 0) <> coalesce(h.quantity, 0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mismatched, 0, "the ledger sums to every holding");
    let mut statement = db
        .prepare(
            "SELECT i.item_id,
                 (SELECT coalesce(sum(delta), 0) FROM ledger WHERE item_id = i.item_id AND reason LIKE 'grant:%'),
                 (SELECT coalesce(-sum(delta), 0) FROM ledger WHERE item_id = i.item_id AND reason = 'consume'),
                 (SELECT coalesce(sum(delta), 0) FROM ledger WHERE item_id = i.item_id AND reason LIKE 'trade %'),
                 (SELECT coalesce(sum(quantity), 0) FROM holdings WHERE item_id = i.item_id)
             FROM (SELECT DISTINCT item_id FROM ledger) AS i",
        )
        .unwrap();
    let rows: Vec<(String, i64, i64, i64, i64)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // Every offer in these tests has one line per side: an accepted one is exactly four ledger
    // entries (a debit and a credit per line), all from one accepting request.
    let doubled: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT reason FROM ledger WHERE reason LIKE 'trade %'
                                   GROUP BY reason HAVING count(*) <> 4 OR count(DISTINCT request_key) <> 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(doubled, 0, "no trade applied twice");
    let consumed_twice: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT account_id, request_key FROM ledger WHERE reason = 'consume'
                                   GROUP BY 1, 2 HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(consumed_twice, 0, "no consumption applied twice");
    let mut books = HashMap::new();
    for (item, granted, consumed, traded, held) in rows {
        assert_eq!(traded, 0, "{item}: trades neither make nor destroy items");
        assert_eq!(granted - consumed, held, "{item}: granted − consumed = held");
        books.insert(item, (granted, consumed, held));
    }
    books
}

/// What one trading client saw acknowledged.
#[derive(Debug, Default)]
struct Acked {
    /// Acknowledged consumptions: (key, item, quantity).
    consumed: Vec<(String, String, u64)>,
    /// Accepted offers.
    accepted: HashSet<Uuid>,
    /// Requests sent whose answer never came (the gateway died): (key, request).
    unanswered: Vec<(String, InventoryRequest)>,
}

/// Random trades and consumptions among `players` until `rounds` are done or the connection
/// dies. Every error must be a rule the request broke, never a server fault.
async fn trade_randomly(client: Client, me: usize, players: Vec<AccountId>, rounds: usize) -> Acked {
    let mut acked = Acked::default();
    let mut seed = me as u64 * 7919 + 17;
    let mut next = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let pick = |n: u64| usize::try_from(n).unwrap();
    for _ in 0..rounds {
        let item = ["gold", "potion", "sword"][pick(next(3))];
        let other = players[pick(next(players.len() as u64))];
        let key = key();
        let request = match next(4) {
            0 => InventoryRequest::Consume {
                item_id: item.into(),
                quantity: if item == "sword" { 1 } else { 1 + next(2) },
                idempotency_key: key.clone(),
            },
            1 if other != players[me] => InventoryRequest::MakeOffer {
                to: other,
                gives: vec![stack(item, 1)],
                wants: vec![stack("gold", 1 + next(5))],
                idempotency_key: key.clone(),
            },
            _ => {
                // Accept the newest offer received, if any.
                let Ok(InventoryReply::Offers { offers }) = call(&client, InventoryRequest::Offers).await
                else {
                    return acked;
                };
                let Some(offer) = offers.into_iter().find(|o| o.to == players[me]) else { continue };
                InventoryRequest::AcceptOffer { offer_id: offer.offer_id, idempotency_key: key.clone() }
            }
        };
        match call(&client, request.clone()).await {
            Ok(InventoryReply::Consumed { item_id, .. }) => {
                let InventoryRequest::Consume { quantity, .. } = request else { unreachable!() };
                acked.consumed.push((key, item_id, quantity));
            }
            Ok(InventoryReply::Offer(offer)) if offer.state == OfferState::Accepted => {
                acked.accepted.insert(offer.offer_id);
            }
            Ok(_) => {}
            Err(ClientError::Server(body)) => assert!(
                matches!(body.code, ErrorCode::Conflict | ErrorCode::Forbidden | ErrorCode::NotFound),
                "a rule, not a fault: {body}"
            ),
            Err(_) => {
                acked.unanswered.push((key, request));
                return acked;
            }
        }
    }
    acked
}

const N_TRADERS: usize = 8;
const START_GOLD: u64 = 200;
const START_POTIONS: u64 = 30;

/// Registers the traders and grants each their starting items through `admin`.
async fn traders(url: &str, admin_addr: SocketAddr) -> (Vec<(Client, String)>, Vec<AccountId>) {
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for n in 0..N_TRADERS {
        let name = username(&format!("trader{n}-"));
        let client = Client::connect(url, Encoding::Bincode).await.unwrap();
        client.register(&name, PASSWORD).await.unwrap();
        let session = client.login(&name, PASSWORD).await.unwrap();
        grant(admin_addr, session.account_id, "gold", START_GOLD).await;
        grant(admin_addr, session.account_id, "potion", START_POTIONS).await;
        ids.push(session.account_id);
        clients.push((client, name));
    }
    grant(admin_addr, ids[0], "sword", 1).await;
    (clients, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_conserved_when_many_clients_trade_and_consume_concurrently() {
    let world = World::new();
    let gateway = world.gateway_with(config(&world)).await;
    let (clients, ids) = traders(&gateway.url, gateway.admin).await;
    let mut tasks = Vec::new();
    for (me, (client, _)) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(trade_randomly(client, me, ids.clone(), 80)));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.push(task.await.unwrap());
    }
    gateway.stop().await.unwrap();

    let books = audit(&world.data_dir.path().join("inventory.db"));
    let n = N_TRADERS as i64;
    assert_eq!(books["gold"].0, n * START_GOLD as i64);
    assert_eq!(books["potion"].0, n * START_POTIONS as i64);
    for item in ["gold", "potion", "sword"] {
        let seen: u64 =
            acked.iter().flat_map(|a| &a.consumed).filter(|(_, i, _)| i == item).map(|(_, _, q)| q).sum();
        assert_eq!(
            books.get(item).map_or(0, |b| b.1),
            seen as i64,
            "{item}: consumed as the clients were told"
        );
    }
    let accepted: usize = acked.iter().map(|a| a.accepted.len()).sum();
    assert!(accepted > 0, "some trades went through");
}

/// A `gateway` process of `world` with the test catalogue and service token, killed on drop.
async fn start_process(world: &World, catalogue: &std::path::Path) -> GatewayProcess {
    let catalogue = catalogue.to_str().unwrap();
    let args =
        ["--inventory-catalogue", catalogue, "--requests-per-sec", "100000", "--request-burst", "100000"];
    GatewayProcess::start_with_env(world, &args, &[("GAME_SERVICE_TOKEN", TOKEN)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_inventory_change_survives_kill_9_and_none_applies_twice() {
    let world = World::new();
    let catalogue = catalogue_file(&world);
    let first = start_process(&world, &catalogue).await;
    let (clients, ids) = traders(&first.url, first.admin).await;
    let names: Vec<String> = clients.iter().map(|(_, name)| name.clone()).collect();
    let mut tasks = Vec::new();
    for (me, (client, _)) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(trade_randomly(client, me, ids.clone(), 100_000)));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(first); // SIGKILL: no drain, no final checkpoint.
    let mut acked = Vec::new();
    for task in tasks {
        acked.push(tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap());
    }
    assert!(acked.iter().any(|a| !a.consumed.is_empty()), "changes were acknowledged before the kill");

    let db = world.data_dir.path().join("inventory.db");
    let second = start_process(&world, &catalogue).await;
    // Every acknowledged change is there.
    {
        let conn = shard::rusqlite::Connection::open(&db).unwrap();
        let stored = |key: &str| -> bool {
            conn.query_row("SELECT count(*) FROM requests WHERE request_key = ?1", [key], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
                == 1
        };
        for (key, item, _) in acked.iter().flat_map(|a| &a.consumed) {
            assert!(stored(key), "acknowledged consumption of {item} ({key}) is stored");
        }
        for offer_id in acked.iter().flat_map(|a| &a.accepted) {
            let state: String = conn
                .query_row(
                    "SELECT state FROM offers WHERE offer_id = ?1",
                    [offer_id.as_bytes().as_slice()],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(state, "accepted");
        }
    }
    let books_after_crash = audit(&db);

    // Retrying everything, the unanswered requests included, applies nothing twice.
    let mut retried_acked = 0;
    for (me, acked) in acked.iter().enumerate() {
        let client = Client::connect(&second.url, Encoding::Bincode).await.unwrap();
        client.login(&names[me], PASSWORD).await.unwrap();
        for (key, item, quantity) in &acked.consumed {
            let request = InventoryRequest::Consume {
                item_id: item.clone(),
                quantity: *quantity,
                idempotency_key: key.clone(),
            };
            assert!(
                call(&client, request).await.is_ok(),
                "a retried acknowledged consumption answers as before"
            );
            retried_acked += 1;
        }
        for (_, request) in &acked.unanswered {
            let _ = call(&client, request.clone()).await;
            let _ = call(&client, request.clone()).await;
        }
    }
    assert!(retried_acked > 0);
    let books = audit(&db);
    let n = N_TRADERS as i64;
    assert_eq!(books["gold"].0, n * START_GOLD as i64, "grants applied exactly once");
    for item in ["gold", "potion", "sword"] {
        let acked_consumed: u64 =
            acked.iter().flat_map(|a| &a.consumed).filter(|(_, i, _)| i == item).map(|(_, _, q)| q).sum();
        let unanswered = acked.iter().flat_map(|a| &a.unanswered).count() as i64 * 2;
        let (before, after) =
            (books_after_crash.get(item).map_or(0, |b| b.1), books.get(item).map_or(0, |b| b.1));
        assert!(before >= acked_consumed as i64, "{item}: every acknowledged consumption survived");
        assert!(after - before <= unanswered, "{item}: only unanswered requests could apply on retry");
    }
}
