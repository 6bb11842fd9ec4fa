//! Shared fixtures: a tiny `items` schema and helpers to fill and damage a shard.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use shard::{Migration, Shard, ShardConfig};

/// Two migrations; neither is idempotent, so re-running one fails.
pub static ITEMS_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "items table",
        sql: "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL);",
    },
    Migration {
        version: 2,
        description: "running total and padding",
        sql: "ALTER TABLE items ADD COLUMN running_total INTEGER;
              ALTER TABLE items ADD COLUMN padding BLOB;
              CREATE INDEX items_name ON items (name);",
    },
];

pub async fn open_items(path: &Path) -> Shard {
    Shard::open(path, &ShardConfig::default(), ITEMS_MIGRATIONS).await.unwrap()
}

pub async fn count_items(shard: &Shard) -> i64 {
    shard.read(|c| c.query_row("SELECT count(*) FROM items", [], |r| r.get(0))).await.unwrap()
}

/// Inserts `n` rows of ~200 bytes each, so the file spans many pages.
pub async fn insert_padded_rows(shard: &Shard, n: usize) {
    shard
        .write(move |c| {
            let tx = c.transaction()?;
            for i in 0..n {
                tx.execute(
                    "INSERT INTO items (name, qty, padding) VALUES (?1, ?2, zeroblob(200))",
                    (format!("row-{i}"), i as i64),
                )?;
            }
            tx.commit()
        })
        .await
        .unwrap();
}

/// SQLite's default page size, which the test shards use.
const PAGE_SIZE: u64 = 4096;

/// Overwrites the body (not the header) of several pages in the middle of a closed database
/// file with garbage, so the b-tree cells no longer parse.
pub fn scribble_over_middle_pages(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    assert!(len > 16 * PAGE_SIZE, "file too small to corrupt meaningfully: {len}");
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let first_page = len / PAGE_SIZE / 2;
    let garbage: Vec<u8> = (0..2048u32).map(|i| (i * 31 + 7) as u8).collect();
    for page in first_page..first_page + 4 {
        file.seek(SeekFrom::Start(page * PAGE_SIZE + 1024)).unwrap();
        file.write_all(&garbage).unwrap();
    }
    file.sync_all().unwrap();
}
