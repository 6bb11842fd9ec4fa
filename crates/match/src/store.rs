//! The tables of `match.db` and the SQL that touches them: matches, their players (with each
//! player's report and rating change), and the ratings per mode.

use shard::Migration;
use shard::rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use shard::rusqlite::{self, Connection, OptionalExtension, ToSql, Transaction, params};
use uuid::Uuid;

use crate::rating::{INITIAL_RATING, team_deltas};
use crate::{
    LeaderboardEntry, MatchDetails, MatchError, MatchOutcome, Participant, RatingInfo, ReportReceipt,
    ReportStatus, Reporter,
};

pub(crate) static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "matches, participants, ratings",
    sql: "CREATE TABLE matches (
              match_id       BLOB PRIMARY KEY,          -- UUID v7
              mode           TEXT NOT NULL,
              n_teams        INTEGER NOT NULL CHECK (n_teams >= 2),
              created_at_ms  INTEGER NOT NULL,
              outcome        INTEGER,                   -- NULL while open; -1 draw; else the winning team
              finished_at_ms INTEGER,
              reported_by    TEXT CHECK (reported_by IN ('service', 'players'))
          ) STRICT, WITHOUT ROWID;

          CREATE TABLE participants (
              match_id      BLOB NOT NULL REFERENCES matches (match_id),
              account_id    BLOB NOT NULL,
              team          INTEGER NOT NULL,
              created_at_ms INTEGER NOT NULL,           -- the match's, for history order
              rating_before REAL NOT NULL,
              rating_after  REAL,                       -- set when the result is recorded
              vote          INTEGER,                    -- this player's report, encoded as outcome
              PRIMARY KEY (match_id, account_id)
          ) STRICT, WITHOUT ROWID;
          CREATE INDEX participants_history ON participants (account_id, created_at_ms, match_id);

          CREATE TABLE ratings (
              mode          TEXT NOT NULL,
              account_id    BLOB NOT NULL,
              rating        REAL NOT NULL,
              games         INTEGER NOT NULL,
              wins          INTEGER NOT NULL,
              losses        INTEGER NOT NULL,
              draws         INTEGER NOT NULL,
              updated_at_ms INTEGER NOT NULL,
              PRIMARY KEY (mode, account_id)
          ) STRICT, WITHOUT ROWID;
          CREATE INDEX ratings_board ON ratings (mode, rating DESC, account_id);",
}];

/// A match the matchmaker formed, to be recorded.
pub(crate) struct NewMatch {
    pub(crate) match_id: Uuid,
    pub(crate) mode: String,
    pub(crate) created_at_ms: u64,
    /// Per team: (player, rating when queued).
    pub(crate) teams: Vec<Vec<(Uuid, f64)>>,
}

/// A UUID as SQLite stores it here: a 16-byte BLOB.
struct Id(Uuid);

impl ToSql for Id {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(self.0.as_bytes())))
    }
}

impl FromSql for Id {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Uuid::from_slice(value.as_blob()?).map(Id).map_err(|error| FromSqlError::Other(Box::new(error)))
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn encode_outcome(outcome: MatchOutcome) -> i64 {
    match outcome {
        MatchOutcome::Winner(team) => i64::from(team),
        MatchOutcome::Draw => -1,
    }
}

fn decode_outcome(value: i64) -> MatchOutcome {
    u32::try_from(value).map_or(MatchOutcome::Draw, MatchOutcome::Winner)
}

/// Records formed matches, all in one transaction.
pub(crate) fn insert_matches(conn: &mut Connection, matches: &[NewMatch]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert_match = tx.prepare_cached(
            "INSERT INTO matches (match_id, mode, n_teams, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut insert_player = tx.prepare_cached(
            "INSERT INTO participants (match_id, account_id, team, created_at_ms, rating_before)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for new in matches {
            let created = to_i64(new.created_at_ms);
            insert_match.execute(params![Id(new.match_id), new.mode, new.teams.len() as i64, created])?;
            for (team, players) in new.teams.iter().enumerate() {
                for (account_id, rating) in players {
                    insert_player.execute(params![
                        Id(new.match_id),
                        Id(*account_id),
                        team as i64,
                        created,
                        rating
                    ])?;
                }
            }
        }
    }
    tx.commit()
}

/// Of `claims` (player, claim ms), the players in a match created at their claim's time or later:
/// the matches their claims were for, recorded.
pub(crate) fn matched_since(conn: &Connection, claims: &[(Uuid, u64)]) -> rusqlite::Result<Vec<Uuid>> {
    let mut in_match = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM participants WHERE account_id = ?1 AND created_at_ms >= ?2)",
    )?;
    let mut matched = Vec::new();
    for &(player_id, claimed_at_ms) in claims {
        if in_match.query_row(params![Id(player_id), to_i64(claimed_at_ms)], |row| row.get::<_, bool>(0))? {
            matched.push(player_id);
        }
    }
    Ok(matched)
}

/// A match with its players, or `None`.
pub(crate) fn details(conn: &Connection, match_id: Uuid) -> rusqlite::Result<Option<MatchDetails>> {
    let head = conn
        .prepare_cached(
            "SELECT mode, n_teams, created_at_ms, outcome, finished_at_ms FROM matches WHERE match_id = ?1",
        )?
        .query_row(params![Id(match_id)], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Option<i64>>(3)?,
                row.get::<_, Option<i64>>(4)?,
            ))
        })
        .optional()?;
    let Some((mode, n_teams, created_at_ms, outcome, finished_at_ms)) = head else { return Ok(None) };
    let mut teams: Vec<Vec<Participant>> = (0..n_teams.max(0)).map(|_| Vec::new()).collect();
    let mut votes = Vec::new();
    let mut statement = conn.prepare_cached(
        "SELECT account_id, team, rating_before, rating_after, vote FROM participants
         WHERE match_id = ?1 ORDER BY team, rating_before DESC, account_id",
    )?;
    let rows = statement.query_map(params![Id(match_id)], |row| {
        Ok((
            row.get::<_, Id>(0)?.0,
            row.get::<_, i64>(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get::<_, Option<i64>>(4)?,
        ))
    })?;
    for row in rows {
        let (account_id, team, rating_before, rating_after, vote) = row?;
        votes.push(vote);
        if let Some(players) = usize::try_from(team).ok().and_then(|team| teams.get_mut(team)) {
            players.push(Participant { account_id, rating_before, rating_after });
        }
    }
    // Disputed: everyone reported, and not alike, while the match is still open.
    let disputed = outcome.is_none()
        && votes.iter().all(Option::is_some)
        && votes.windows(2).any(|pair| pair[0] != pair[1]);
    Ok(Some(MatchDetails {
        match_id,
        mode,
        created_at_ms: to_u64(created_at_ms),
        teams,
        outcome: outcome.map(decode_outcome),
        finished_at_ms: finished_at_ms.map(to_u64),
        disputed,
    }))
}

/// Records a report in `tx` (the caller commits): see [`crate::Matchmaking::report`].
pub(crate) fn report(
    tx: &Transaction<'_>,
    match_id: Uuid,
    reporter: Reporter,
    outcome: MatchOutcome,
    now_ms: u64,
    k_factor: f64,
) -> Result<ReportReceipt, MatchError> {
    let Some(details) = details(tx, match_id)? else { return Err(MatchError::UnknownMatch(match_id)) };
    if let Reporter::Player(account_id) = reporter
        && !details.teams.iter().flatten().any(|player| player.account_id == account_id)
    {
        return Err(MatchError::NotParticipant);
    }
    if let MatchOutcome::Winner(team) = outcome
        && team as usize >= details.teams.len()
    {
        return Err(MatchError::InvalidRequest(format!(
            "team {team} does not exist: this match has teams 0 to {}",
            details.teams.len() - 1
        )));
    }
    if let Some(recorded) = details.outcome {
        if recorded != outcome {
            return Err(MatchError::ResultConflict("the match is already finished with another result"));
        }
        return Ok(ReportReceipt { status: ReportStatus::Finished, replayed: true, details });
    }
    let finish = match reporter {
        Reporter::Service => true,
        Reporter::Player(account_id) => {
            let previous: Option<i64> = tx
                .prepare_cached("SELECT vote FROM participants WHERE match_id = ?1 AND account_id = ?2")?
                .query_row(params![Id(match_id), Id(account_id)], |row| row.get(0))?;
            match previous {
                Some(vote) if vote != encode_outcome(outcome) => {
                    return Err(MatchError::ResultConflict("you already reported a different result"));
                }
                Some(_) => {
                    let status =
                        if details.disputed { ReportStatus::Disputed } else { ReportStatus::AwaitingOthers };
                    return Ok(ReportReceipt { status, replayed: true, details });
                }
                None => {}
            }
            tx.prepare_cached("UPDATE participants SET vote = ?3 WHERE match_id = ?1 AND account_id = ?2")?
                .execute(params![Id(match_id), Id(account_id), encode_outcome(outcome)])?;
            let (n_missing, n_other): (i64, i64) = tx
                .prepare_cached(
                    "SELECT count(*) FILTER (WHERE vote IS NULL), count(*) FILTER (WHERE vote <> ?2)
                     FROM participants WHERE match_id = ?1",
                )?
                .query_row(params![Id(match_id), encode_outcome(outcome)], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            if n_missing > 0 || n_other > 0 {
                let details = self::details(tx, match_id)?.ok_or(MatchError::UnknownMatch(match_id))?;
                let status =
                    if n_missing > 0 { ReportStatus::AwaitingOthers } else { ReportStatus::Disputed };
                return Ok(ReportReceipt { status, replayed: false, details });
            }
            true
        }
    };
    debug_assert!(finish);
    finish_match(tx, &details, reporter, outcome, now_ms, k_factor)?;
    let details = self::details(tx, match_id)?.ok_or(MatchError::UnknownMatch(match_id))?;
    Ok(ReportReceipt { status: ReportStatus::Finished, replayed: false, details })
}

/// Applies the result: Elo on the players' current ratings, their counters, the match row.
fn finish_match(
    tx: &Transaction<'_>,
    details: &MatchDetails,
    reporter: Reporter,
    outcome: MatchOutcome,
    now_ms: u64,
    k_factor: f64,
) -> Result<(), MatchError> {
    let current: Vec<Vec<f64>> = details
        .teams
        .iter()
        .map(|team| {
            team.iter()
                .map(|player| {
                    Ok(rating_row(tx, &details.mode, player.account_id)?.map_or(INITIAL_RATING, |r| r.0))
                })
                .collect::<rusqlite::Result<Vec<f64>>>()
        })
        .collect::<rusqlite::Result<_>>()?;
    let means: Vec<f64> =
        current.iter().map(|team| team.iter().sum::<f64>() / team.len().max(1) as f64).collect();
    let winner = match outcome {
        MatchOutcome::Winner(team) => Some(team as usize),
        MatchOutcome::Draw => None,
    };
    let deltas = team_deltas(&means, winner, k_factor);
    let now = to_i64(now_ms);
    let mut upsert = tx.prepare_cached(
        "INSERT INTO ratings (mode, account_id, rating, games, wins, losses, draws, updated_at_ms)
         VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7)
         ON CONFLICT (mode, account_id) DO UPDATE SET rating = excluded.rating, games = games + 1,
             wins = wins + excluded.wins, losses = losses + excluded.losses,
             draws = draws + excluded.draws, updated_at_ms = excluded.updated_at_ms",
    )?;
    let mut participant = tx.prepare_cached(
        "UPDATE participants SET rating_before = ?3, rating_after = ?4 WHERE match_id = ?1 AND account_id = ?2",
    )?;
    for (team, players) in details.teams.iter().enumerate() {
        let (win, loss, draw) = match winner {
            None => (0, 0, 1),
            Some(w) if w == team => (1, 0, 0),
            Some(_) => (0, 1, 0),
        };
        for (player, before) in players.iter().zip(&current[team]) {
            let after = before + deltas[team];
            upsert.execute(params![details.mode, Id(player.account_id), after, win, loss, draw, now])?;
            participant.execute(params![Id(details.match_id), Id(player.account_id), before, after])?;
        }
    }
    let reported_by = match reporter {
        Reporter::Service => "service",
        Reporter::Player(_) => "players",
    };
    tx.prepare_cached(
        "UPDATE matches SET outcome = ?2, finished_at_ms = ?3, reported_by = ?4 WHERE match_id = ?1",
    )?
    .execute(params![Id(details.match_id), encode_outcome(outcome), now, reported_by])?;
    Ok(())
}

/// (rating, games, wins, losses, draws) as stored.
type RatingRow = (f64, i64, i64, i64, i64);

/// A player's row in `ratings` for a mode, if they have finished a match.
fn rating_row(conn: &Connection, mode: &str, account_id: Uuid) -> rusqlite::Result<Option<RatingRow>> {
    conn.prepare_cached(
        "SELECT rating, games, wins, losses, draws FROM ratings WHERE mode = ?1 AND account_id = ?2",
    )?
    .query_row(params![mode, Id(account_id)], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
    })
    .optional()
}

/// How many rated players of `mode` rank before (rating, account): higher rating, or equal
/// rating and smaller id.
fn n_ranked_before(conn: &Connection, mode: &str, rating: f64, account_id: Uuid) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM ratings WHERE mode = ?1
             AND (rating > ?2 OR (rating = ?2 AND account_id < ?3))",
        )?
        .query_row(params![mode, rating, Id(account_id)], |row| row.get(0))?;
    Ok(to_u64(n))
}

/// A player's rating in `mode` (the initial rating and no rank before their first result).
pub(crate) fn rating(conn: &Connection, mode: &str, account_id: Uuid) -> rusqlite::Result<RatingInfo> {
    let Some((rating, games, wins, losses, draws)) = rating_row(conn, mode, account_id)? else {
        return Ok(RatingInfo {
            mode: mode.to_owned(),
            account_id,
            rating: INITIAL_RATING,
            rank: None,
            games: 0,
            wins: 0,
            losses: 0,
            draws: 0,
        });
    };
    Ok(RatingInfo {
        mode: mode.to_owned(),
        account_id,
        rating,
        rank: Some(n_ranked_before(conn, mode, rating, account_id)? + 1),
        games: to_u64(games),
        wins: to_u64(wins),
        losses: to_u64(losses),
        draws: to_u64(draws),
    })
}

fn entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Uuid, f64, i64)> {
    Ok((row.get::<_, Id>(0)?.0, row.get(1)?, row.get(2)?))
}

/// The best `limit` players of `mode`.
pub(crate) fn top(conn: &Connection, mode: &str, limit: u32) -> rusqlite::Result<Vec<LeaderboardEntry>> {
    let mut statement = conn.prepare_cached(
        "SELECT account_id, rating, games FROM ratings WHERE mode = ?1
         ORDER BY rating DESC, account_id LIMIT ?2",
    )?;
    let rows = statement.query_map(params![mode, limit], entry)?;
    rows.zip(1..)
        .map(|(row, rank)| {
            row.map(|(account_id, rating, games)| LeaderboardEntry {
                rank,
                account_id,
                rating,
                games: to_u64(games),
            })
        })
        .collect()
}

/// Up to `n` players ranked just above `account_id`, the player (if rated), and up to `n` just
/// below, best first. An unrated player is placed at the initial rating, without an entry.
pub(crate) fn around(
    conn: &Connection,
    mode: &str,
    account_id: Uuid,
    n: u32,
) -> rusqlite::Result<Vec<LeaderboardEntry>> {
    // One snapshot for the three reads: a result landing between them could otherwise lift more
    // players above this one than were counted before it, and the ranks would not add up.
    let snapshot = conn.unchecked_transaction()?;
    let conn = &*snapshot;
    let own = rating_row(conn, mode, account_id)?;
    let rating = own.map_or(INITIAL_RATING, |row| row.0);
    let before = n_ranked_before(conn, mode, rating, account_id)?;
    let mut above: Vec<(Uuid, f64, i64)> = conn
        .prepare_cached(
            "SELECT account_id, rating, games FROM ratings WHERE mode = ?1
             AND (rating > ?2 OR (rating = ?2 AND account_id < ?3))
             ORDER BY rating ASC, account_id DESC LIMIT ?4",
        )?
        .query_map(params![mode, rating, Id(account_id), n], entry)?
        .collect::<rusqlite::Result<_>>()?;
    above.reverse();
    let below: Vec<(Uuid, f64, i64)> = conn
        .prepare_cached(
            "SELECT account_id, rating, games FROM ratings WHERE mode = ?1
             AND (rating < ?2 OR (rating = ?2 AND account_id > ?3))
             ORDER BY rating DESC, account_id ASC LIMIT ?4",
        )?
        .query_map(params![mode, rating, Id(account_id), n], entry)?
        .collect::<rusqlite::Result<_>>()?;
    let first_rank = before + 1 - above.len() as u64;
    let own = own.map(|(rating, games, ..)| (account_id, rating, games));
    Ok(above
        .into_iter()
        .chain(own)
        .chain(below)
        .zip(first_rank..)
        .map(|((account_id, rating, games), rank)| LeaderboardEntry {
            rank,
            account_id,
            rating,
            games: to_u64(games),
        })
        .collect())
}

/// A player's matches, newest first, older than the match `before` if given.
pub(crate) fn history(
    conn: &Connection,
    account_id: Uuid,
    before: Option<Uuid>,
    limit: u32,
) -> Result<Vec<MatchDetails>, MatchError> {
    let cursor: (i64, Uuid) = match before {
        None => (i64::MAX, Uuid::max()),
        Some(match_id) => {
            let created: Option<i64> = conn
                .prepare_cached("SELECT created_at_ms FROM matches WHERE match_id = ?1")?
                .query_row(params![Id(match_id)], |row| row.get(0))
                .optional()?;
            (created.ok_or(MatchError::UnknownMatch(match_id))?, match_id)
        }
    };
    let ids: Vec<Uuid> = conn
        .prepare_cached(
            "SELECT match_id FROM participants WHERE account_id = ?1 AND (created_at_ms, match_id) < (?2, ?3)
             ORDER BY created_at_ms DESC, match_id DESC LIMIT ?4",
        )?
        .query_map(params![Id(account_id), cursor.0, Id(cursor.1), limit], |row| {
            row.get::<_, Id>(0).map(|id| id.0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut matches = Vec::with_capacity(ids.len());
    for match_id in ids {
        matches.push(details(conn, match_id)?.ok_or(MatchError::UnknownMatch(match_id))?);
    }
    Ok(matches)
}
