//! The `player_state` table of `player.db` and the SQL that touches it.

use shard::rusqlite::{self, OptionalExtension, params};
use shard::{Migration, Shard};
use uuid::Uuid;

use crate::{PlayerError, PlayerState, Position, StateUpdate};

pub(crate) static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "player_state",
        sql: "CREATE TABLE player_state (
                  player_id     BLOB PRIMARY KEY,   -- the account's UUID, 16 bytes
                  x             REAL NOT NULL,
                  y             REAL NOT NULL,
                  z             REAL NOT NULL,
                  rotation      REAL NOT NULL,
                  health        INTEGER NOT NULL,
                  attributes    BLOB NOT NULL,
                  version       INTEGER NOT NULL,
                  updated_at_ms INTEGER NOT NULL
              ) STRICT, WITHOUT ROWID;",
    },
    Migration {
        version: 2,
        description: "version_watermark",
        sql: "CREATE TABLE version_watermark (
                  id              INTEGER PRIMARY KEY CHECK (id = 0),
                  highest_version INTEGER NOT NULL    -- the highest version player_state has held
              ) STRICT;
              INSERT INTO version_watermark (id, highest_version)
                  SELECT 0, coalesce(max(version), 0) FROM player_state;",
    },
    Migration {
        version: 3,
        description: "buffer_behind_direct_writes",
        sql: "ALTER TABLE version_watermark
                  -- 1 once a process wrote in direct mode, until a buffered one dropped the buffer
                  ADD COLUMN buffer_behind_direct_writes INTEGER NOT NULL DEFAULT 0;",
    },
];

/// Writes a flushed state unless the stored one is as new or newer: an older version never
/// overwrites a newer one, whatever order flushes run in.
const UPSERT_IF_NEWER: &str = "
    INSERT INTO player_state (player_id, x, y, z, rotation, health, attributes, version, updated_at_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT (player_id) DO UPDATE SET
        x = excluded.x, y = excluded.y, z = excluded.z, rotation = excluded.rotation,
        health = excluded.health, attributes = excluded.attributes,
        version = excluded.version, updated_at_ms = excluded.updated_at_ms
    WHERE excluded.version > player_state.version";

/// One update as its own transaction (direct mode): absent values keep the stored ones.
const UPDATE_DIRECT: &str = "
    INSERT INTO player_state (player_id, x, y, z, rotation, health, attributes, version, updated_at_ms)
    VALUES (?1, coalesce(?2, 0), coalesce(?3, 0), coalesce(?4, 0), coalesce(?5, 0), coalesce(?6, 0),
            coalesce(?7, x''), 1, ?8)
    ON CONFLICT (player_id) DO UPDATE SET
        x = coalesce(?2, x), y = coalesce(?3, y), z = coalesce(?4, z), rotation = coalesce(?5, rotation),
        health = coalesce(?6, health), attributes = coalesce(?7, attributes),
        version = version + 1, updated_at_ms = ?8
    RETURNING version";

const RAISE_WATERMARK: &str =
    "UPDATE version_watermark SET highest_version = max(highest_version, ?1) WHERE id = 0";

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) async fn update_direct(
    shard: &Shard,
    player_id: Uuid,
    update: StateUpdate,
    now_ms: u64,
) -> Result<u64, PlayerError> {
    let version: i64 = shard
        .write(move |conn| {
            let position = update.position;
            conn.prepare_cached(UPDATE_DIRECT)?.query_row(
                params![
                    player_id.as_bytes().as_slice(),
                    position.map(|p| f64::from(p.x)),
                    position.map(|p| f64::from(p.y)),
                    position.map(|p| f64::from(p.z)),
                    update.rotation.map(f64::from),
                    update.health,
                    update.attributes,
                    to_i64(now_ms),
                ],
                |row| row.get(0),
            )
        })
        .await?;
    Ok(u64::try_from(version).unwrap_or(0))
}

pub(crate) async fn load(shard: &Shard, player_id: Uuid) -> Result<Option<PlayerState>, PlayerError> {
    Ok(shard.read(move |conn| load_on(conn, player_id)).await?)
}

/// A player's stored state and the version watermark, in one read: what seeding needs.
pub(crate) async fn load_with_watermark(
    shard: &Shard,
    player_id: Uuid,
) -> Result<(Option<PlayerState>, u64), PlayerError> {
    Ok(shard.read(move |conn| Ok((load_on(conn, player_id)?, watermark_on(conn)?))).await?)
}

fn load_on(conn: &rusqlite::Connection, player_id: Uuid) -> rusqlite::Result<Option<PlayerState>> {
    conn.prepare_cached(
        "SELECT x, y, z, rotation, health, attributes, version, updated_at_ms
         FROM player_state WHERE player_id = ?1",
    )?
    .query_row(params![player_id.as_bytes().as_slice()], |row| {
        #[allow(clippy::cast_possible_truncation, reason = "stored from f32, so exact")]
        let position = Position {
            x: row.get::<_, f64>(0)? as f32,
            y: row.get::<_, f64>(1)? as f32,
            z: row.get::<_, f64>(2)? as f32,
        };
        #[allow(clippy::cast_possible_truncation, reason = "stored from f32, so exact")]
        let rotation = row.get::<_, f64>(3)? as f32;
        Ok(PlayerState {
            player_id,
            position,
            rotation,
            health: row.get(4)?,
            attributes: row.get(5)?,
            version: u64::try_from(row.get::<_, i64>(6)?).unwrap_or(0),
            updated_at_ms: u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
        })
    })
    .optional()
}

/// The highest version `player_state` has held, as far as flushes know: every flush raises it in
/// its transaction, and [`raise_watermark_to_stored`] catches up with direct writes. The buffer's
/// version counter is never below it unless the buffer lost data or went back to older data, or
/// direct writes moved a player past it (see `flusher::flush_all`).
pub(crate) async fn version_watermark(shard: &Shard) -> Result<u64, PlayerError> {
    Ok(shard.read(watermark_on).await?)
}

fn watermark_on(conn: &rusqlite::Connection) -> rusqlite::Result<u64> {
    let highest: i64 = conn
        .prepare_cached("SELECT highest_version FROM version_watermark WHERE id = 0")?
        .query_row([], |row| row.get(0))?;
    Ok(u64::try_from(highest).unwrap_or(0))
}

/// Raises the version watermark to the highest version `player_state` holds. Direct writes (a
/// process in `direct` mode, or this deployment before it switched to `buffered`) do not raise it
/// themselves, which keeps each to one row; this catches up with them by a scan of the table, so
/// it runs when a buffered process opens `player.db`, when a process takes the flusher lease and
/// before an explicit flush, not every pass.
pub(crate) async fn raise_watermark_to_stored(shard: &Shard) -> Result<(), PlayerError> {
    let highest: i64 = shard
        .read(|conn| {
            conn.prepare_cached("SELECT coalesce(max(version), 0) FROM player_state")?
                .query_row([], |row| row.get(0))
        })
        .await?;
    shard.write(move |conn| conn.prepare_cached(RAISE_WATERMARK)?.execute(params![highest])).await?;
    Ok(())
}

/// Notes that direct writes are about to begin: whatever a buffer holds from before is older than
/// them from now on (see `Players::open`).
pub(crate) async fn mark_buffer_behind(shard: &Shard) -> Result<(), PlayerError> {
    shard
        .write(|conn| {
            conn.prepare_cached("UPDATE version_watermark SET buffer_behind_direct_writes = 1 WHERE id = 0")?
                .execute([])
        })
        .await?;
    Ok(())
}

/// Takes the note of [`mark_buffer_behind`] if it is there: true for exactly one of several
/// buffered processes opening at once, the one to drop the buffer.
pub(crate) async fn take_buffer_behind(shard: &Shard) -> Result<bool, PlayerError> {
    let taken = shard
        .write(|conn| {
            conn.prepare_cached(
                "UPDATE version_watermark SET buffer_behind_direct_writes = 0
                 WHERE id = 0 AND buffer_behind_direct_writes = 1",
            )?
            .execute([])
        })
        .await?;
    Ok(taken == 1)
}

/// Writes `states` in one transaction, and raises the version watermark to the newest of them;
/// returns (rows written, rows skipped as not newer).
pub(crate) async fn write_batch(shard: &Shard, states: Vec<PlayerState>) -> Result<(u64, u64), PlayerError> {
    Ok(shard
        .write(move |conn| {
            let tx = conn.transaction()?;
            let (mut written, mut stale) = (0, 0);
            {
                let mut upsert = tx.prepare_cached(UPSERT_IF_NEWER)?;
                for state in &states {
                    let changed = upsert.execute(params![
                        state.player_id.as_bytes().as_slice(),
                        f64::from(state.position.x),
                        f64::from(state.position.y),
                        f64::from(state.position.z),
                        f64::from(state.rotation),
                        state.health,
                        state.attributes,
                        to_i64(state.version),
                        to_i64(state.updated_at_ms),
                    ])?;
                    if changed == 1 {
                        written += 1;
                    } else {
                        stale += 1;
                    }
                }
            }
            let highest = states.iter().map(|state| state.version).max().unwrap_or(0);
            tx.prepare_cached(RAISE_WATERMARK)?.execute(params![to_i64(highest)])?;
            tx.commit()?;
            Ok::<_, rusqlite::Error>((written, stale))
        })
        .await?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

    use super::*;

    fn at_version(player_id: Uuid, x: f32, version: u64) -> PlayerState {
        PlayerState { player_id, position: Position { x, y: 0.0, z: 0.0 }, version, ..PlayerState::default() }
    }

    #[tokio::test]
    async fn a_flush_never_lets_an_older_version_overwrite_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let shard = Shard::open(dir.path().join("player.db"), &shard::ShardConfig::default(), MIGRATIONS)
            .await
            .unwrap();
        let id = Uuid::new_v4();
        assert_eq!(write_batch(&shard, vec![at_version(id, 5.0, 5)]).await.unwrap(), (1, 0));
        for (x, older_or_same) in [(3.0, 3), (5.5, 5)] {
            let skipped = write_batch(&shard, vec![at_version(id, x, older_or_same)]).await.unwrap();
            assert_eq!(skipped, (0, 1), "version {older_or_same}");
        }
        assert_eq!(
            load(&shard, id).await.unwrap().map(|state| (state.version, state.position.x)),
            Some((5, 5.0))
        );
        assert_eq!(write_batch(&shard, vec![at_version(id, 6.0, 6)]).await.unwrap(), (1, 0));
        assert_eq!(version_watermark(&shard).await.unwrap(), 6);
    }
}
