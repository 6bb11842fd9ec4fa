//! The `accounts` table of `auth.db` and the SQL that touches it.

use shard::rusqlite::{self, OptionalExtension, params};
use shard::{Migration, Shard};
use uuid::Uuid;

use crate::{Account, AuthError};

pub(crate) static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "accounts",
    sql: "CREATE TABLE accounts (
              account_id    TEXT PRIMARY KEY,
              username      TEXT NOT NULL,
              -- The lower-cased username: uniqueness ignores case.
              username_key  TEXT NOT NULL UNIQUE,
              password_hash TEXT NOT NULL,
              created_at_ms INTEGER NOT NULL,
              disabled      INTEGER NOT NULL DEFAULT 0
          ) STRICT;",
}];

pub(crate) async fn insert_account(
    shard: &Shard,
    account: &Account,
    password_hash: String,
) -> Result<(), AuthError> {
    let account = account.clone();
    let inserted = shard
        .write(move |conn| {
            let result = conn.execute(
                "INSERT INTO accounts (account_id, username, username_key, password_hash, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    account.account_id.to_string(),
                    account.username,
                    account.username.to_ascii_lowercase(),
                    password_hash,
                    i64::try_from(account.created_at_ms).unwrap_or(i64::MAX),
                ],
            );
            match result {
                Ok(_) => Ok(true),
                Err(rusqlite::Error::SqliteFailure(error, _))
                    if error.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Ok(false)
                }
                Err(other) => Err(other),
            }
        })
        .await?;
    if inserted { Ok(()) } else { Err(AuthError::UsernameTaken) }
}

/// The account with this lower-cased username, with its password hash and whether it is
/// disabled.
pub(crate) async fn find_by_username(
    shard: &Shard,
    username_key: String,
) -> Result<Option<(Account, String, bool)>, AuthError> {
    Ok(shard
        .read(move |conn| {
            conn.query_row(
                "SELECT account_id, username, created_at_ms, password_hash, disabled
                 FROM accounts WHERE username_key = ?1",
                params![username_key],
                |row| Ok((account_of(row)?, row.get::<_, String>(3)?, row.get::<_, i64>(4)? != 0)),
            )
            .optional()
        })
        .await?)
}

/// Whether the account is disabled; `None` when there is no such account.
pub(crate) async fn is_disabled(shard: &Shard, account_id: Uuid) -> Result<Option<bool>, AuthError> {
    Ok(shard
        .read(move |conn| {
            conn.query_row(
                "SELECT disabled FROM accounts WHERE account_id = ?1",
                params![account_id.to_string()],
                |row| Ok(row.get::<_, i64>(0)? != 0),
            )
            .optional()
        })
        .await?)
}

/// Sets the `disabled` flag; returns whether the account exists.
pub(crate) async fn set_disabled(shard: &Shard, account_id: Uuid, disabled: bool) -> Result<bool, AuthError> {
    Ok(shard
        .write(move |conn| {
            conn.execute(
                "UPDATE accounts SET disabled = ?2 WHERE account_id = ?1",
                params![account_id.to_string(), i64::from(disabled)],
            )
        })
        .await?
        == 1)
}

pub(crate) async fn find_by_id(shard: &Shard, account_id: Uuid) -> Result<Option<Account>, AuthError> {
    Ok(shard
        .read(move |conn| {
            conn.query_row(
                "SELECT account_id, username, created_at_ms FROM accounts WHERE account_id = ?1",
                params![account_id.to_string()],
                account_of,
            )
            .optional()
        })
        .await?)
}

fn account_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    let id: String = row.get(0)?;
    let account_id = Uuid::parse_str(&id).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Account {
        account_id,
        username: row.get(1)?,
        created_at_ms: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
    })
}
