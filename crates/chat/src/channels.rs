//! `chat.db`: the channels and who belongs to them, and the SQL that touches them.
//!
//! Channels outlive years, so they live in their own small shard rather than in a yearly one.

use shard::rusqlite::{self, OptionalExtension, TransactionBehavior, params};
use shard::{Migration, Shard};
use uuid::Uuid;

use crate::members::Membership;
use crate::{Channel, ChannelId, ChannelKind, ChatError};

pub(crate) static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "channels and members",
    sql: "CREATE TABLE channels (
              id            BLOB PRIMARY KEY,   -- ChannelId, 16 bytes
              kind          TEXT NOT NULL CHECK (kind IN ('room', 'group', 'direct')),
              name          TEXT NOT NULL,      -- '' for direct channels
              owner_id      BLOB,               -- groups only
              created_at_ms INTEGER NOT NULL
          ) STRICT;
          CREATE UNIQUE INDEX rooms_by_name ON channels (name) WHERE kind = 'room';
          CREATE TABLE members (
              channel_id    BLOB NOT NULL REFERENCES channels (id),
              account_id    BLOB NOT NULL,
              joined_at_ms  INTEGER NOT NULL,
              PRIMARY KEY (channel_id, account_id)
          ) STRICT, WITHOUT ROWID;
          CREATE INDEX members_by_account ON members (account_id, channel_id);",
}];

const SELECT_CHANNEL: &str = "SELECT id, kind, name, owner_id, created_at_ms FROM channels";
const INSERT_CHANNEL: &str =
    "INSERT INTO channels (id, kind, name, owner_id, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)";
const INSERT_MEMBER: &str =
    "INSERT OR IGNORE INTO members (channel_id, account_id, joined_at_ms) VALUES (?1, ?2, ?3)";

fn kind_text(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Room => "room",
        ChannelKind::Group => "group",
        ChannelKind::Direct => "direct",
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uuid_of(bytes: &[u8]) -> rusqlite::Result<Uuid> {
    Uuid::from_slice(bytes)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e)))
}

fn channel_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Channel> {
    let kind = match row.get_ref(1)?.as_str()? {
        "room" => ChannelKind::Room,
        "group" => ChannelKind::Group,
        _ => ChannelKind::Direct,
    };
    let owner: Option<Vec<u8>> = row.get(3)?;
    Ok(Channel {
        id: ChannelId(uuid_of(row.get_ref(0)?.as_blob()?)?),
        kind,
        name: row.get(2)?,
        owner: owner.map(|bytes| uuid_of(&bytes)).transpose()?,
        created_at_ms: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
    })
}

fn insert_channel(conn: &rusqlite::Connection, channel: &Channel) -> rusqlite::Result<()> {
    conn.prepare_cached(INSERT_CHANNEL)?.execute(params![
        channel.id.0.as_bytes().as_slice(),
        kind_text(channel.kind),
        channel.name,
        channel.owner.as_ref().map(|owner| owner.as_bytes().to_vec()),
        to_i64(channel.created_at_ms),
    ])?;
    Ok(())
}

fn insert_member(
    conn: &rusqlite::Connection,
    channel_id: ChannelId,
    account_id: Uuid,
    now_ms: u64,
) -> rusqlite::Result<bool> {
    let added = conn.prepare_cached(INSERT_MEMBER)?.execute(params![
        channel_id.0.as_bytes().as_slice(),
        account_id.as_bytes().as_slice(),
        to_i64(now_ms)
    ])?;
    Ok(added == 1)
}

/// The channel with this id.
pub(crate) async fn channel(shard: &Shard, channel_id: ChannelId) -> Result<Option<Channel>, ChatError> {
    Ok(shard
        .read(move |conn| {
            conn.prepare_cached(&format!("{SELECT_CHANNEL} WHERE id = ?1"))?
                .query_row([channel_id.0.as_bytes().as_slice()], channel_row)
                .optional()
        })
        .await?)
}

/// The channel with this id and every member. (A channel's row never changes once written; the
/// members are read by one statement, so they are one snapshot.)
pub(crate) async fn membership(
    shard: &Shard,
    channel_id: ChannelId,
) -> Result<Option<Membership>, ChatError> {
    Ok(shard
        .read(move |conn| {
            let id = channel_id.0.as_bytes().as_slice();
            let Some(channel) = conn
                .prepare_cached(&format!("{SELECT_CHANNEL} WHERE id = ?1"))?
                .query_row([id], channel_row)
                .optional()?
            else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached("SELECT account_id FROM members WHERE channel_id = ?1")?;
            let members =
                stmt.query_map([id], |row| uuid_of(row.get_ref(0)?.as_blob()?))?.collect::<Result<_, _>>()?;
            Ok(Some(Membership::new(channel, members)))
        })
        .await?)
}

/// Every member of the channel.
pub(crate) async fn members(shard: &Shard, channel_id: ChannelId) -> Result<Vec<Uuid>, ChatError> {
    Ok(shard
        .read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT account_id FROM members WHERE channel_id = ?1")?;
            let rows = stmt
                .query_map([channel_id.0.as_bytes().as_slice()], |row| uuid_of(row.get_ref(0)?.as_blob()?))?;
            rows.collect()
        })
        .await?)
}

/// Whether the account belongs to the channel.
pub(crate) async fn is_member(
    shard: &Shard,
    channel_id: ChannelId,
    account_id: Uuid,
) -> Result<bool, ChatError> {
    Ok(shard
        .read(move |conn| {
            conn.prepare_cached("SELECT 1 FROM members WHERE channel_id = ?1 AND account_id = ?2")?
                .query_row(
                    params![channel_id.0.as_bytes().as_slice(), account_id.as_bytes().as_slice()],
                    |_| Ok(()),
                )
                .optional()
                .map(|found| found.is_some())
        })
        .await?)
}

/// Every channel the account belongs to, oldest first.
pub(crate) async fn channels_of(shard: &Shard, account_id: Uuid) -> Result<Vec<Channel>, ChatError> {
    Ok(shard
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.id, c.kind, c.name, c.owner_id, c.created_at_ms
                 FROM members m JOIN channels c ON c.id = m.channel_id
                 WHERE m.account_id = ?1 ORDER BY c.created_at_ms, c.id",
            )?;
            let rows = stmt.query_map([account_id.as_bytes().as_slice()], channel_row)?;
            rows.collect()
        })
        .await?)
}

/// Most members of one channel and most rooms and groups one player is in; checked inside the
/// transaction that adds a member, so two joins racing for the last place cannot both pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) room_members: usize,
    pub(crate) group_members: usize,
    pub(crate) channels_per_player: usize,
}

/// Whose limit was reached, for the error's message: the one asking, or another player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joiner {
    /// The account asked to join (a room, or a group it creates).
    Themselves,
    /// Someone else added the account (a group's owner).
    Added,
}

fn count(conn: &rusqlite::Connection, sql: &str, id: &[u8]) -> rusqlite::Result<usize> {
    let n: i64 = conn.prepare_cached(sql)?.query_row([id], |row| row.get(0))?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Why adding `account_id` to `channel` would break a limit, if it would.
fn refusal(
    conn: &rusqlite::Connection,
    limits: Limits,
    channel: &Channel,
    account_id: Uuid,
    joiner: Joiner,
) -> rusqlite::Result<Option<ChatError>> {
    let (most, what) = match channel.kind {
        ChannelKind::Room => (limits.room_members, "room"),
        ChannelKind::Group => (limits.group_members, "group"),
        ChannelKind::Direct => return Ok(None),
    };
    let members = count(
        conn,
        "SELECT COUNT(*) FROM members WHERE channel_id = ?1",
        channel.id.0.as_bytes().as_slice(),
    )?;
    if members >= most {
        return Ok(Some(ChatError::LimitReached(format!("the {what} is full ({most} members)"))));
    }
    let joined = count(
        conn,
        "SELECT COUNT(*) FROM members m JOIN channels c ON c.id = m.channel_id
         WHERE m.account_id = ?1 AND c.kind != 'direct'",
        account_id.as_bytes().as_slice(),
    )?;
    if joined >= limits.channels_per_player {
        let who = match joiner {
            Joiner::Themselves => "you are",
            Joiner::Added => "that player is",
        };
        let most = limits.channels_per_player;
        return Ok(Some(ChatError::LimitReached(format!(
            "{who} in {most} rooms and groups, the most one may be in"
        ))));
    }
    Ok(None)
}

/// Whether the account belongs to the channel, inside a transaction.
fn has_member(
    conn: &rusqlite::Connection,
    channel_id: ChannelId,
    account_id: Uuid,
) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM members WHERE channel_id = ?1 AND account_id = ?2")?
        .query_row(params![channel_id.0.as_bytes().as_slice(), account_id.as_bytes().as_slice()], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

/// Adds the account to the room called `name`, creating the room if it does not exist, unless
/// the room is full or the account is in as many rooms and groups as `limits` allow (then
/// nothing changes, and no room is created). Also says whether the account joined (false if it
/// already was a member).
pub(crate) async fn join_room(
    shard: &Shard,
    name: String,
    new_id: ChannelId,
    account_id: Uuid,
    now_ms: u64,
    limits: Limits,
) -> Result<(Channel, bool), ChatError> {
    shard
        .write(move |conn| {
            // IMMEDIATE: two processes creating the same room serialise here instead of one
            // failing on the unique index, and two joins cannot both take a room's last place.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing = tx
                .prepare_cached(&format!("{SELECT_CHANNEL} WHERE kind = 'room' AND name = ?1"))?
                .query_row([&name], channel_row)
                .optional()?;
            let room = match existing {
                Some(room) => room,
                None => {
                    let room = Channel {
                        id: new_id,
                        kind: ChannelKind::Room,
                        name,
                        owner: None,
                        created_at_ms: now_ms,
                    };
                    insert_channel(&tx, &room)?;
                    room
                }
            };
            if has_member(&tx, room.id, account_id)? {
                return Ok(Ok((room, false)));
            }
            if let Some(refusal) = refusal(&tx, limits, &room, account_id, Joiner::Themselves)? {
                return Ok(Err(refusal));
            }
            insert_member(&tx, room.id, account_id, now_ms)?;
            tx.commit()?;
            Ok(Ok((room, true)))
        })
        .await?
}

/// The room called `name`.
pub(crate) async fn room_by_name(shard: &Shard, name: String) -> Result<Option<Channel>, ChatError> {
    Ok(shard
        .read(move |conn| {
            conn.prepare_cached(&format!("{SELECT_CHANNEL} WHERE kind = 'room' AND name = ?1"))?
                .query_row([&name], channel_row)
                .optional()
        })
        .await?)
}

/// Creates a direct channel with its two members, if it does not exist yet.
pub(crate) async fn create(
    shard: &Shard,
    channel: Channel,
    members: Vec<Uuid>,
) -> Result<Channel, ChatError> {
    Ok(shard
        .write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists = tx
                .prepare_cached("SELECT 1 FROM channels WHERE id = ?1")?
                .query_row([channel.id.0.as_bytes().as_slice()], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                insert_channel(&tx, &channel)?;
                for account_id in members {
                    insert_member(&tx, channel.id, account_id, channel.created_at_ms)?;
                }
            }
            tx.commit()?;
            Ok(channel)
        })
        .await?)
}

/// Creates a group with its owner as its only member, unless the owner is in as many rooms and
/// groups as `limits` allow.
pub(crate) async fn create_group(
    shard: &Shard,
    group: Channel,
    limits: Limits,
) -> Result<Channel, ChatError> {
    let owner = group.owner.ok_or_else(|| ChatError::InvalidRequest("a group has an owner".into()))?;
    shard
        .write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            insert_channel(&tx, &group)?;
            if let Some(refusal) = refusal(&tx, limits, &group, owner, Joiner::Themselves)? {
                return Ok(Err(refusal));
            }
            insert_member(&tx, group.id, owner, group.created_at_ms)?;
            tx.commit()?;
            Ok(Ok(group))
        })
        .await?
}

/// Adds a member to `group`; false if they already were one. Refused when the group is full or
/// the account is in as many rooms and groups as `limits` allow.
pub(crate) async fn add_member(
    shard: &Shard,
    group: Channel,
    account_id: Uuid,
    now_ms: u64,
    limits: Limits,
) -> Result<bool, ChatError> {
    shard
        .write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if has_member(&tx, group.id, account_id)? {
                return Ok(Ok(false));
            }
            if let Some(refusal) = refusal(&tx, limits, &group, account_id, Joiner::Added)? {
                return Ok(Err(refusal));
            }
            insert_member(&tx, group.id, account_id, now_ms)?;
            tx.commit()?;
            Ok(Ok(true))
        })
        .await?
}

/// Removes a member; false if they were not one.
pub(crate) async fn remove_member(
    shard: &Shard,
    channel_id: ChannelId,
    account_id: Uuid,
) -> Result<bool, ChatError> {
    Ok(shard
        .write(move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM members WHERE channel_id = ?1 AND account_id = ?2")?
                .execute(params![channel_id.0.as_bytes().as_slice(), account_id.as_bytes().as_slice()])?;
            Ok(removed == 1)
        })
        .await?)
}
