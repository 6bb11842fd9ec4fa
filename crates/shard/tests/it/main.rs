//! Integration tests for `shard`: each opens a real SQLite file in a temporary directory.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use shard::{Migration, Shard, ShardConfig, ShardError, Synchronous};
use support::{ITEMS_MIGRATIONS, count_items, open_items};

#[tokio::test]
async fn open_sets_wal_and_pragmas_on_writer_and_readers() {
    for (synchronous, expected) in [(Synchronous::Normal, 1), (Synchronous::Full, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/items.db");
        let config = ShardConfig { synchronous, ..ShardConfig::default() };
        let shard = Shard::open(&path, &config, ITEMS_MIGRATIONS).await.unwrap();
        assert_eq!(shard.path(), path);

        let query = |conn: &shard::rusqlite::Connection| {
            let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
            let busy: i64 = conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
            Ok((journal, sync, fk, busy))
        };
        let written = shard.write(move |conn| query(conn)).await.unwrap();
        let read = shard.read(move |conn| query(conn)).await.unwrap();
        let want = ("wal".to_owned(), expected, 1, 5000);
        assert_eq!(written, want, "writer pragmas for {synchronous:?}");
        assert_eq!(read, want, "reader pragmas for {synchronous:?}");
        assert!(dir.path().join("nested/dir/items.db-wal").exists());
    }
}

/// A shard whose file was removed under it (a retired year's) fails to read rather than leave an
/// empty file in its place when its pool opens a new reader.
#[tokio::test]
async fn a_reader_opened_after_the_file_was_removed_does_not_recreate_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.db");
    drop(open_items(&path).await);
    let shard = Shard::open_existing(&path, &ShardConfig::default()).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    assert!(
        shard
            .read(|conn| conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)))
            .await
            .is_err()
    );
    assert!(!path.exists(), "the read recreated the file");
}

#[tokio::test]
async fn temporary_files_stay_in_memory_only_when_asked() {
    // `PRAGMA temp_store`: 0 is the build's default (files), 2 is memory.
    for (temp_in_memory, expected) in [(false, 0), (true, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig { temp_in_memory, ..ShardConfig::default() };
        let shard = Shard::open(dir.path().join("items.db"), &config, ITEMS_MIGRATIONS).await.unwrap();
        let query =
            |conn: &shard::rusqlite::Connection| conn.query_row("PRAGMA temp_store", [], |r| r.get(0));
        let written: i64 = shard.write(move |conn| query(conn)).await.unwrap();
        let read: i64 = shard.read(move |conn| query(conn)).await.unwrap();
        assert_eq!((written, read), (expected, expected), "temp_in_memory = {temp_in_memory}");
    }
}

#[tokio::test]
async fn migrations_apply_once_and_reopening_does_not_rerun_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.db");
    let shard = open_items(&path).await;
    assert_eq!(shard.schema_version().await.unwrap(), 2);
    drop(shard);

    // `CREATE TABLE` without `IF NOT EXISTS` fails if re-run: reopening proves it is skipped.
    let shard = open_items(&path).await;
    assert_eq!(shard.schema_version().await.unwrap(), 2);
    assert_eq!(count_items(&shard).await, 0);
}

#[tokio::test]
async fn new_migrations_apply_on_top_of_an_older_file() {
    static V1: &[Migration] = &[ITEMS_MIGRATIONS[0]];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.db");
    let shard = Shard::open(&path, &ShardConfig::default(), V1).await.unwrap();
    assert_eq!(shard.schema_version().await.unwrap(), 1);
    drop(shard);

    let shard = open_items(&path).await;
    assert_eq!(shard.schema_version().await.unwrap(), 2);
}

#[tokio::test]
async fn failing_migration_keeps_previous_version() {
    static BROKEN: &[Migration] = &[
        ITEMS_MIGRATIONS[0],
        Migration {
            version: 2,
            description: "half applies, then fails",
            sql: "CREATE TABLE extra (id INTEGER); INSERT INTO no_such_table VALUES (1);",
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.db");
    let err = Shard::open(&path, &ShardConfig::default(), BROKEN).await.unwrap_err();
    assert!(matches!(err, ShardError::Migration { version: 2, .. }), "{err:?}");

    // Migration 1 landed; migration 2 (including its first statement) rolled back.
    static V1: &[Migration] = &[ITEMS_MIGRATIONS[0]];
    let shard = Shard::open(&path, &ShardConfig::default(), V1).await.unwrap();
    assert_eq!(shard.schema_version().await.unwrap(), 1);
    let extra_tables: i64 = shard
        .read(|c| c.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'extra'", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(extra_tables, 0);
}

#[tokio::test]
async fn file_with_newer_schema_is_refused() {
    static V1: &[Migration] = &[ITEMS_MIGRATIONS[0]];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.db");
    drop(open_items(&path).await);

    let err = Shard::open(&path, &ShardConfig::default(), V1).await.unwrap_err();
    assert!(matches!(err, ShardError::TooNew(_, 2, 1)), "{err:?}");
}

/// A build that refuses a newer file (a downgrade) must leave it as it was: not switch it to
/// WAL, which rewrites its header, before saying no.
#[tokio::test]
async fn a_refused_newer_file_is_left_byte_for_byte_unchanged() {
    static V1: &[Migration] = &[ITEMS_MIGRATIONS[0]];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.db");
    {
        let conn = shard::rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY); PRAGMA user_version = 7;").unwrap();
    }
    let before = std::fs::read(&path).unwrap();

    let err = Shard::open(&path, &ShardConfig::default(), V1).await.unwrap_err();
    assert!(matches!(err, ShardError::TooNew(_, 7, 1)), "{err:?}");
    assert!(err.to_string().contains("newer release"), "says what to run: {err}");
    assert!(std::fs::read(&path).unwrap() == before, "the refused file changed");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["items.db"], "no log files left beside it");
}

#[tokio::test]
async fn migration_list_must_be_numbered_in_order() {
    static GAP: &[Migration] =
        &[ITEMS_MIGRATIONS[0], Migration { version: 3, description: "skips 2", sql: "SELECT 1" }];
    let dir = tempfile::tempdir().unwrap();
    let err = Shard::open(dir.path().join("items.db"), &ShardConfig::default(), GAP).await.unwrap_err();
    assert!(matches!(err, ShardError::Open { .. }), "{err:?}");
}

#[tokio::test]
async fn read_connections_are_query_only() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open_items(&dir.path().join("items.db")).await;
    let err =
        shard.read(|c| c.execute("INSERT INTO items (name, qty) VALUES ('x', 1)", [])).await.unwrap_err();
    assert!(matches!(err, ShardError::Sqlite(_)), "{err:?}");
    assert_eq!(count_items(&shard).await, 0);
}

#[tokio::test]
async fn concurrent_writes_are_serialized_and_all_land() {
    const TASKS: usize = 50;
    const INSERTS_PER_TASK: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let shard = open_items(&dir.path().join("items.db")).await;

    let mut handles = Vec::new();
    for task in 0..TASKS {
        let shard = shard.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..INSERTS_PER_TASK {
                shard
                    .write(move |c| {
                        // A read-modify-write: lost updates would show if writers overlapped.
                        let tx = c.transaction()?;
                        let total: i64 =
                            tx.query_row("SELECT coalesce(sum(qty), 0) FROM items", [], |r| r.get(0))?;
                        tx.execute(
                            "INSERT INTO items (name, qty, running_total) VALUES (?1, 1, ?2)",
                            (format!("t{task}-{i}"), total + 1),
                        )?;
                        tx.commit()
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(count_items(&shard).await, (TASKS * INSERTS_PER_TASK) as i64);
    let max_total: i64 =
        shard.read(|c| c.query_row("SELECT max(running_total) FROM items", [], |r| r.get(0))).await.unwrap();
    assert_eq!(max_total, (TASKS * INSERTS_PER_TASK) as i64);
}

#[tokio::test]
async fn reader_sees_committed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open_items(&dir.path().join("items.db")).await;
    for n in 1..=3 {
        shard.write(|c| c.execute("INSERT INTO items (name, qty) VALUES ('a', 1)", [])).await.unwrap();
        assert_eq!(count_items(&shard).await, n);
    }
}

#[tokio::test]
async fn writer_left_in_a_transaction_is_rolled_back_for_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open_items(&dir.path().join("items.db")).await;
    shard
        .write(|c| c.execute_batch("BEGIN; INSERT INTO items (name, qty) VALUES ('lost', 1);"))
        .await
        .unwrap();
    let err = shard.write(|_| -> shard::rusqlite::Result<()> { panic!("writer panics") }).await.unwrap_err();
    assert!(matches!(err, ShardError::Task(_)), "{err:?}");
    shard.write(|c| c.execute("INSERT INTO items (name, qty) VALUES ('kept', 1)", [])).await.unwrap();
    assert_eq!(count_items(&shard).await, 1);
}

#[tokio::test]
async fn backup_during_writes_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open_items(&dir.path().join("items.db")).await;
    support::insert_padded_rows(&shard, 2_000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let shard = shard.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                shard
                    .write(|c| c.execute("INSERT INTO items (name, qty) VALUES ('during', 1)", []))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    // Let the writer get going before the backup starts.
    while count_items(&shard).await < 2_010 {
        tokio::task::yield_now().await;
    }
    let committed_before = count_items(&shard).await;
    let dest = dir.path().join("backups/nested/items-backup.db");
    shard.backup_to(&dest).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.unwrap();
    assert!(during > 0);

    let copy = open_items(&dest).await;
    assert_eq!(copy.integrity_check().await.unwrap(), Vec::<String>::new());
    assert!(count_items(&copy).await >= committed_before);
    assert_eq!(copy.schema_version().await.unwrap(), 2);

    // The destination must be new.
    let err = shard.backup_to(&dest).await.unwrap_err();
    assert!(matches!(err, ShardError::Io(_)), "{err:?}");
}

#[tokio::test]
async fn integrity_check_is_empty_on_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open_items(&dir.path().join("items.db")).await;
    support::insert_padded_rows(&shard, 500).await;
    assert_eq!(shard.integrity_check().await.unwrap(), Vec::<String>::new());
    shard.checkpoint().await.unwrap();
    assert_eq!(shard.integrity_check().await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn integrity_check_reports_a_corrupted_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.db");
    let shard = open_items(&path).await;
    support::insert_padded_rows(&shard, 2_000).await;
    shard.checkpoint().await.unwrap();
    drop(shard);
    support::scribble_over_middle_pages(&path);

    match Shard::open(&path, &ShardConfig::default(), ITEMS_MIGRATIONS).await {
        Err(err) => eprintln!("open refused the corrupted file: {err}"),
        Ok(shard) => match shard.integrity_check().await {
            Err(err) => eprintln!("integrity_check failed on the corrupted file: {err}"),
            Ok(problems) => assert!(!problems.is_empty(), "corruption went unnoticed"),
        },
    }
}

#[tokio::test]
async fn zero_read_pool_size_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let config = ShardConfig { read_pool_size: 0, ..ShardConfig::default() };
    let err = Shard::open(dir.path().join("items.db"), &config, ITEMS_MIGRATIONS).await.unwrap_err();
    assert!(matches!(err, ShardError::Open { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_keeper_checkpoints_beside_the_writer_and_keeps_the_wal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.db");
    let shard = open_items(&path).await;
    const LIMIT: u64 = 256 * 1024;
    let stats = Arc::new(shard::WalStats::default());
    let mut keeper = shard::WalKeeper::start(&shard, 4, LIMIT, stats.clone()).await.unwrap();
    let autocheckpoint: i64 =
        shard.write(|conn| conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))).await.unwrap();
    assert_eq!(autocheckpoint, 0, "SQLite no longer checkpoints inside commits");

    // 400 commits of four 1 KiB rows each: some 2,000 pages, 8 MiB of WAL, if nothing copied them
    // back and started the WAL over. The WAL file's size is checked after every commit.
    let wal = dir.path().join("items.db-wal");
    for n in 0..400 {
        shard
            .write(move |conn| {
                let tx = conn.transaction()?;
                for row in 0..4 {
                    tx.execute(
                        "INSERT INTO items (name, qty, padding) VALUES (?1, ?2, randomblob(1024))",
                        (format!("row-{n}-{row}"), n),
                    )?;
                }
                tx.commit()
            })
            .await
            .unwrap();
        keeper.after_commit(&shard).await;
        // 1.5 times the limit plus one commit of a few pages.
        let wal_bytes = std::fs::metadata(&wal).unwrap().len();
        assert!(wal_bytes <= LIMIT * 3 / 2 + 16 * 4096, "the WAL grew to {wal_bytes} bytes");
        assert_eq!(stats.wal_bytes.load(Ordering::Relaxed), wal_bytes);
    }
    keeper.finish().await;
    assert!(stats.checkpoints.load(Ordering::Relaxed) > 0, "checkpoints ran beside the writer");
    assert!(stats.forced_checkpoints.load(Ordering::Relaxed) > 0, "the writer started the WAL over");
    assert_eq!(count_items(&shard).await, 1_600);
}
