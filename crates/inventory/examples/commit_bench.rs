//! Drives the group committer directly, without a gateway: `pairs` pairs of players trade as the
//! load test's `inventory` scenario does (the offerer offers one coin for one gem, the partner
//! accepts, every fifth action a consumption), each pair one change at a time, for `seconds`.
//! Prints transactions per second and where the committer's time went (µs of apply per change,
//! ms per `COMMIT`, changes per group).
//!
//! `cargo run --release -p inventory --example commit_bench -- [pairs] [seconds] [dir]`
//! (defaults 500, 10, a temporary directory; `synchronous=FULL` as the gateway runs it).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a benchmark CLI")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use inventory::{Catalogue, Grant, Inventory, InventoryConfig, InventoryStats, ItemStack, NewOffer};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CATALOGUE: &str = "[[item]]\nid = \"coin\"\nname = \"Coin\"\nmax_stack = 1000000000000\n\n\
                         [[item]]\nid = \"gem\"\nname = \"Gem\"\nmax_stack = 1000000000000\n";
const GRANTED: u64 = 1_000_000;
const CONSUME_EVERY: u64 = 5;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let pairs: u64 = args.next().map_or(500, |a| a.parse().expect("pairs: a number"));
    let seconds: u64 = args.next().map_or(10, |a| a.parse().expect("seconds: a number"));
    let temp = tempfile::tempdir().unwrap();
    let dir = args.next().map_or_else(|| temp.path().to_owned(), std::path::PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();

    let (inventory, committer) = Inventory::open(
        dir.join("inventory.db"),
        Catalogue::from_toml(CATALOGUE).unwrap(),
        Arc::new(clock::SystemClock),
        InventoryConfig::default(),
    )
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let committer = tokio::spawn(committer.run(shutdown.clone()));

    let run = Uuid::now_v7().simple().to_string()[..12].to_owned();
    let accounts: Vec<(Uuid, Uuid)> = (0..pairs).map(|_| (Uuid::new_v4(), Uuid::new_v4())).collect();
    let mut grants = tokio::task::JoinSet::new();
    for (index, &(offerer, acceptor)) in accounts.iter().enumerate() {
        let inventory = inventory.clone();
        let run = run.clone();
        grants.spawn(async move {
            for (side, account_id) in [("a", offerer), ("b", acceptor)] {
                for item_id in ["coin", "gem"] {
                    let grant = Grant {
                        account_id,
                        item_id: item_id.into(),
                        quantity: GRANTED,
                        reason: "bench".into(),
                        idempotency_key: format!("{run}-{index}{side}-{item_id}"),
                    };
                    inventory.grant(grant).await.unwrap();
                }
            }
        });
    }
    grants.join_all().await;

    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let before = Snapshot::of(inventory.stats());
    let started = Instant::now();
    let mut traders = tokio::task::JoinSet::new();
    for (index, &(offerer, acceptor)) in accounts.iter().enumerate() {
        let (inventory, done, run) = (inventory.clone(), done.clone(), run.clone());
        traders.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let key = format!("{run}-{index}-{n}");
                if n.is_multiple_of(CONSUME_EVERY) {
                    inventory.consume(offerer, ItemStack::new("coin", 1), key).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let offer = NewOffer {
                    to: acceptor,
                    gives: vec![ItemStack::new("coin", 1)],
                    wants: vec![ItemStack::new("gem", 1)],
                };
                let offer = inventory.make_offer(offerer, offer, key).await.unwrap().value;
                inventory
                    .accept(acceptor, offer.offer_id, format!("{run}-{index}-{n}-accept"))
                    .await
                    .unwrap();
                done.fetch_add(2, Ordering::Relaxed);
            }
        });
    }
    traders.join_all().await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = Snapshot::of(inventory.stats());
    shutdown.cancel();
    committer.await.unwrap();

    let changes = after.changes - before.changes;
    let groups = (after.groups - before.groups).max(1);
    println!(
        "{pairs} pairs, {elapsed:.1} s: {} transactions, {:.0}/s; {groups} groups of {:.0}; apply {:.1} µs per change; commit {:.2} ms per group ({:.1} µs per change)",
        done.load(Ordering::Relaxed),
        done.load(Ordering::Relaxed) as f64 / elapsed,
        changes as f64 / groups as f64,
        (after.apply_micros - before.apply_micros) as f64 / changes.max(1) as f64,
        (after.commit_micros - before.commit_micros) as f64 / groups as f64 / 1000.0,
        (after.commit_micros - before.commit_micros) as f64 / changes.max(1) as f64,
    );
    let stats = inventory.stats();
    println!(
        "checkpoints beside the committer: {} ({:.1} ms each), by the committer itself: {}; WAL file {} bytes",
        stats.wal.checkpoints.load(Ordering::Relaxed),
        stats.wal.checkpoint_micros.load(Ordering::Relaxed) as f64
            / stats.wal.checkpoints.load(Ordering::Relaxed).max(1) as f64
            / 1000.0,
        stats.wal.forced_checkpoints.load(Ordering::Relaxed),
        stats.wal.wal_bytes.load(Ordering::Relaxed),
    );
}

/// The counters this benchmark reads.
struct Snapshot {
    changes: u64,
    groups: u64,
    apply_micros: u64,
    commit_micros: u64,
}

impl Snapshot {
    fn of(stats: &InventoryStats) -> Snapshot {
        Snapshot {
            changes: stats.changes.load(Ordering::Relaxed),
            groups: stats.groups.load(Ordering::Relaxed),
            apply_micros: stats.apply_micros.load(Ordering::Relaxed),
            commit_micros: stats.commit_micros.load(Ordering::Relaxed),
        }
    }
}
