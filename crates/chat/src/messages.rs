//! `chat-YYYY.db`: one year's messages, and the SQL that touches them.
//!
//! The table is clustered by (channel, message id), so a history page is one range scan of one
//! channel's newest rows.
//!
//! The shard also carries its own retirement mark (`retirement`, at most one row): `retire`
//! commits it before copying the year into the archive, and every write transaction reads it
//! under the write lock, so once it is committed no process (whatever it has open or cached)
//! commits another change that the copy would miss.

use std::path::Path;

use shard::rusqlite::{self, OptionalExtension, TransactionBehavior, params};
use shard::{Migration, Shard};

use crate::{ChannelId, ChatError, Message, MessageId};

pub(crate) static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "messages",
        sql: "CREATE TABLE messages (
              channel_id    BLOB NOT NULL,      -- ChannelId (its row is in chat.db)
              id            BLOB NOT NULL,      -- MessageId: UUID v7, sorts by time
              sender_id     BLOB NOT NULL,
              text          TEXT NOT NULL,
              sent_at_ms    INTEGER NOT NULL,
              deleted_at_ms INTEGER,            -- soft delete: hidden from history when set
              PRIMARY KEY (channel_id, id)
          ) STRICT, WITHOUT ROWID;",
    },
    Migration {
        version: 2,
        description: "retirement mark",
        sql: "CREATE TABLE retirement (
              only          INTEGER PRIMARY KEY CHECK (only = 1),
              started_at_ms INTEGER NOT NULL    -- when `retire` froze the shard
          ) STRICT;",
    },
];

/// What a write transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written<T> {
    /// It committed.
    Done(T),
    /// The shard is marked for retirement: nothing was changed.
    Retiring,
}

const INSERT: &str =
    "INSERT INTO messages (channel_id, id, sender_id, text, sent_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)";
const PAGE: &str = "SELECT id, sender_id, text, sent_at_ms FROM messages
                    WHERE channel_id = ?1 AND id < ?2 AND deleted_at_ms IS NULL
                    ORDER BY id DESC LIMIT ?3";

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uuid_of(bytes: &[u8]) -> rusqlite::Result<uuid::Uuid> {
    uuid::Uuid::from_slice(bytes)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e)))
}

/// Begins a write transaction, unless the shard is marked for retirement. IMMEDIATE takes the
/// write lock before the mark is read, so a mark committed by another process meanwhile is seen
/// rather than failing the commit later; one read per transaction, not per row.
fn begin_write(conn: &mut rusqlite::Connection) -> rusqlite::Result<Option<rusqlite::Transaction<'_>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let retiring = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM retirement)")?
        .query_row([], |row| row.get::<_, bool>(0))?;
    // Dropping the transaction rolls it back.
    Ok((!retiring).then_some(tx))
}

/// Marks the shard for retirement (nothing changes if it is marked already). Once this commits,
/// every later write transaction on the file finds the mark and changes nothing.
pub(crate) fn mark_retiring(conn: &mut rusqlite::Connection, now_ms: u64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("INSERT OR IGNORE INTO retirement (only, started_at_ms) VALUES (1, ?1)", [to_i64(now_ms)])?;
    tx.commit()
}

/// Inserts `messages` in one transaction: one commit (one fsync at most) for the whole batch.
pub(crate) fn insert_batch(
    conn: &mut rusqlite::Connection,
    messages: &[Message],
) -> rusqlite::Result<Written<()>> {
    let Some(tx) = begin_write(conn)? else { return Ok(Written::Retiring) };
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        for message in messages {
            insert.execute(params![
                message.channel_id.0.as_bytes().as_slice(),
                message.id.0.as_bytes().as_slice(),
                message.sender.as_bytes().as_slice(),
                message.text,
                to_i64(message.sent_at_ms),
            ])?;
        }
    }
    tx.commit()?;
    Ok(Written::Done(()))
}

/// Up to `limit` visible messages of the channel older than `before`, newest first.
pub(crate) async fn page(
    shard: &Shard,
    channel_id: ChannelId,
    before: MessageId,
    limit: usize,
) -> Result<Vec<Message>, ChatError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(shard
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(PAGE)?;
            let rows = stmt.query_map(
                params![channel_id.0.as_bytes().as_slice(), before.0.as_bytes().as_slice(), limit],
                |row| {
                    Ok(Message {
                        id: MessageId(uuid_of(row.get_ref(0)?.as_blob()?)?),
                        channel_id,
                        sender: uuid_of(row.get_ref(1)?.as_blob()?)?,
                        text: row.get(2)?,
                        sent_at_ms: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                    })
                },
            )?;
            rows.collect()
        })
        .await?)
}

/// The sender of a visible message, if the channel holds it.
pub(crate) async fn sender(
    shard: &Shard,
    channel_id: ChannelId,
    message_id: MessageId,
) -> Result<Option<uuid::Uuid>, ChatError> {
    Ok(shard
        .read(move |conn| {
            conn.prepare_cached(
                "SELECT sender_id FROM messages WHERE channel_id = ?1 AND id = ?2 AND deleted_at_ms IS NULL",
            )?
            .query_row(
                params![channel_id.0.as_bytes().as_slice(), message_id.0.as_bytes().as_slice()],
                |row| uuid_of(row.get_ref(0)?.as_blob()?),
            )
            .optional()
        })
        .await?)
}

/// Hides a message from history; false if it was already hidden or never there.
///
/// # Errors
/// [`ChatError::Archived`] when the shard is marked for retirement.
pub(crate) async fn soft_delete(
    shard: &Shard,
    channel_id: ChannelId,
    message_id: MessageId,
    now_ms: u64,
) -> Result<bool, ChatError> {
    let written = shard
        .write(move |conn| {
            let Some(tx) = begin_write(conn)? else { return Ok(Written::Retiring) };
            let changed = tx
                .prepare_cached(
                    "UPDATE messages SET deleted_at_ms = ?3
                     WHERE channel_id = ?1 AND id = ?2 AND deleted_at_ms IS NULL",
                )?
                .execute(params![
                    channel_id.0.as_bytes().as_slice(),
                    message_id.0.as_bytes().as_slice(),
                    to_i64(now_ms)
                ])?;
            tx.commit()?;
            Ok(Written::Done(changed == 1))
        })
        .await?;
    match written {
        Written::Done(changed) => Ok(changed),
        Written::Retiring => Err(ChatError::Archived(message_id.year())),
    }
}

/// Number of messages (deleted ones included) in a shard file, read on `conn`.
pub(crate) fn count(conn: &rusqlite::Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM messages", [], |row| row.get::<_, i64>(0))
        .map(|n| u64::try_from(n).unwrap_or(0))
}

/// The URI that opens the file at `path` `immutable` (no lock, no log: for files nothing
/// writes). In a URI, `?` and `#` would end the path and `%` begin an escape, so they are escaped.
pub(crate) fn immutable_uri(path: &Path) -> String {
    shard::file_uri(path, "immutable=1")
}

/// Messages of the shard open on `conn` that the archive at `archive` lacks or holds differently
/// (a soft delete it missed): zero when removing the shard loses nothing. The archive is
/// attached `immutable`, as nothing writes it. Each live row is looked up by the archive's
/// primary key, so a year of ten million messages is checked without a temporary copy of it
/// (`EXCEPT` would build one).
pub(crate) fn missing_from(conn: &rusqlite::Connection, archive: &Path) -> rusqlite::Result<u64> {
    conn.execute("ATTACH DATABASE ?1 AS archive", [immutable_uri(archive)])?;
    let missing = conn.query_row(MISSING_FROM_ARCHIVE, [], |row| row.get::<_, i64>(0));
    conn.execute("DETACH DATABASE archive", [])?;
    missing.map(|n| u64::try_from(n).unwrap_or(0))
}

const MISSING_FROM_ARCHIVE: &str = "
    SELECT count(*) FROM main.messages AS live
    WHERE NOT EXISTS (
        SELECT 1 FROM archive.messages AS copy
        WHERE copy.channel_id = live.channel_id AND copy.id = live.id
          AND copy.sender_id = live.sender_id AND copy.text = live.text
          AND copy.sent_at_ms = live.sent_at_ms AND copy.deleted_at_ms IS live.deleted_at_ms
    )";

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly by design")]
mod tests {
    use super::*;

    /// The query plan's detail lines for `sql` on a fresh `chat-YYYY.db` schema.
    fn plan(sql: &str) -> Vec<String> {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for migration in MIGRATIONS {
            conn.execute_batch(migration.sql).unwrap();
        }
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // Unbound parameters are NULL: the plan does not depend on their values.
        let mut rows = stmt.raw_query();
        let mut details = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            details.push(row.get::<_, String>(3).unwrap());
        }
        details
    }

    #[test]
    fn the_archive_check_finds_rows_missing_or_changed_and_looks_each_up_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let (live_path, archive_path) = (dir.path().join("live.db"), dir.path().join("archive.db"));
        for path in [&live_path, &archive_path] {
            let conn = rusqlite::Connection::open(path).unwrap();
            for migration in MIGRATIONS {
                conn.execute_batch(migration.sql).unwrap();
            }
            for n in 0..4_i64 {
                conn.execute(
                    "INSERT INTO messages (channel_id, id, sender_id, text, sent_at_ms) VALUES (x'01', ?1, x'02', 'hi', 5)",
                    [n.to_be_bytes()],
                )
                .unwrap();
            }
        }
        let live = rusqlite::Connection::open(&live_path).unwrap();
        assert_eq!(missing_from(&live, &archive_path).unwrap(), 0);
        // A soft delete and a message the copy missed.
        live.execute("UPDATE messages SET deleted_at_ms = 9 WHERE id = ?1", [1_i64.to_be_bytes()]).unwrap();
        live.execute(
            "INSERT INTO messages (channel_id, id, sender_id, text, sent_at_ms) VALUES (x'01', ?1, x'02', 'late', 6)",
            [7_i64.to_be_bytes()],
        )
        .unwrap();
        assert_eq!(missing_from(&live, &archive_path).unwrap(), 2);
        assert!(
            plan(&MISSING_FROM_ARCHIVE.replace("archive.", "main."))
                .iter()
                .any(|line| line.contains("PRIMARY KEY")),
            "each row is a key lookup, not a scan"
        );
    }

    #[test]
    fn a_history_page_is_one_range_of_the_primary_key_in_id_order() {
        // A search (not a scan) bounded by the cursor, and no sort: the rows come in key order,
        // so a page costs O(page size) whatever the shard holds.
        assert_eq!(plan(PAGE), ["SEARCH messages USING PRIMARY KEY (channel_id=? AND id<?)"]);
    }
}
