//! Matchmaking: queues, the matchmaker, match records, ratings and history.
//!
//! Owns: `match.db` (matches, their players and each player's report, ratings per mode), the
//! queue of tickets kept in Redis through the `kv` crate (queue `"match"`, see `kv::queue`), the
//! matchmaker lease (`"matchmaker"`), the pass that groups tickets ([`pass`]), and the Elo
//! arithmetic ([`rating`]).
//!
//! # Flow
//! A player queues for a configured mode ([`Matchmaking::queue`]): their ticket (current rating,
//! enqueue time from the injected clock) goes into Redis, where a player holds at most one
//! ticket. Every gateway process calls [`Matchmaking::tick`] each interval; only the holder of
//! the lease does anything: it removes the tickets of players disconnected for longer than the
//! grace period, then per mode reads the tickets, runs [`pass::form_matches`], *claims* the
//! proposed groups in Redis (one Lua script: a group is taken only if every ticket is still
//! queued in that mode and not away, so a cancelled ticket is never matched and nobody is
//! matched twice), records the claimed matches in one SQLite transaction and returns them, so
//! the caller can tell the players. Results come from a trusted caller or from all players
//! agreeing ([`Matchmaking::report`]); the result, the ratings and the players' counters change
//! in one transaction, and a repeated report of the same result changes nothing.
//!
//! Never: delivers events itself, knows about sockets or accounts beyond their ids, or touches
//! another domain's shard. (The package is called `matchmaking` because `match` is a Rust
//! keyword; the folder keeps the domain's name.)

mod config;
mod error;
pub mod pass;
pub mod rating;
mod store;

use std::sync::Arc;

use clock::SharedClock;
use kv::{Kv, QueueJoin};
use shard::rusqlite::TransactionBehavior;
use shard::{Shard, ShardConfig};
use uuid::Uuid;

pub use config::{
    DEFAULT_DISCONNECT_GRACE, DEFAULT_INTERVAL, DEFAULT_LEASE, DEFAULT_WINDOW_INITIAL, DEFAULT_WINDOW_MAX,
    DEFAULT_WINDOW_WIDEN_PER_SEC, MATCH_PLAYERS_MAX, MODE_NAME_MAX_BYTES, MatchmakingConfig, ModeConfig,
    valid_mode_name,
};
pub use error::MatchError;
pub use rating::{DEFAULT_K_FACTOR, INITIAL_RATING, K_FACTOR_MAX};

/// The queue's name in the key-value store.
const QUEUE: &str = "match";
/// The lease that elects the one matchmaker.
const LEASE: &str = "matchmaker";
/// Most matches [`Matchmaking::history`] returns per page.
pub const HISTORY_LIMIT_MAX: u32 = 50;
/// Most entries [`Matchmaking::leaderboard`] returns.
pub const LEADERBOARD_LIMIT_MAX: u32 = 100;
/// Most neighbours on each side [`Matchmaking::around`] returns.
pub const AROUND_MAX: u32 = 25;

/// How a match ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOutcome {
    /// This team (0-based, as in [`MatchDetails::teams`]) won.
    Winner(u32),
    /// Nobody won.
    Draw,
}

/// Who reports a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// A trusted caller (a game server): its report decides at once.
    Service,
    /// A player of the match: the result stands once every player reported the same.
    Player(Uuid),
}

/// One player of a match.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    /// The player.
    pub account_id: Uuid,
    /// Their rating when queued; once the result is in, the rating the result was applied to.
    pub rating_before: f64,
    /// Their rating right after this match's result.
    pub rating_after: Option<f64>,
}

/// What one matchmaker step did ([`Matchmaking::tick`]).
#[derive(Debug, Default)]
pub struct Tick {
    /// The matches formed and recorded, whose players are to be told.
    pub formed: Vec<MatchDetails>,
    /// The first error of a mode whose pass failed; the other modes' passes ran.
    pub failed: Option<MatchError>,
}

/// A match as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchDetails {
    /// The match's id (UUID v7).
    pub match_id: Uuid,
    /// The mode it was formed for.
    pub mode: String,
    /// When the matchmaker formed it (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// The teams, each strongest first.
    pub teams: Vec<Vec<Participant>>,
    /// The result, once recorded.
    pub outcome: Option<MatchOutcome>,
    /// When the result was recorded.
    pub finished_at_ms: Option<u64>,
    /// Every player reported, but not the same result: a trusted caller must decide.
    pub disputed: bool,
}

impl MatchDetails {
    /// Every player of the match.
    pub fn account_ids(&self) -> Vec<Uuid> {
        self.teams.iter().flatten().map(|player| player.account_id).collect()
    }
}

/// Where a match stands after a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportStatus {
    /// The result is recorded and the ratings updated.
    Finished,
    /// This player's report is recorded; other players have not reported yet.
    AwaitingOthers,
    /// Every player reported, not alike; a trusted caller must decide.
    Disputed,
}

/// The answer to a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportReceipt {
    /// Where the match stands now.
    pub status: ReportStatus,
    /// True when this report repeats one already recorded (nothing changed).
    pub replayed: bool,
    /// The match after the report.
    pub details: MatchDetails,
}

/// A player's rating in one mode.
#[derive(Debug, Clone, PartialEq)]
pub struct RatingInfo {
    /// The mode.
    pub mode: String,
    /// The player.
    pub account_id: Uuid,
    /// The rating ([`INITIAL_RATING`] before the first result).
    pub rating: f64,
    /// 1-based place on the mode's leaderboard; `None` before the first result.
    pub rank: Option<u64>,
    /// Matches with a result.
    pub games: u64,
    /// Of which won.
    pub wins: u64,
    /// Of which lost.
    pub losses: u64,
    /// Of which drawn.
    pub draws: u64,
}

/// One line of a leaderboard.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderboardEntry {
    /// 1-based place (by rating, ties by account id).
    pub rank: u64,
    /// The player.
    pub account_id: Uuid,
    /// Their rating.
    pub rating: f64,
    /// Matches with a result.
    pub games: u64,
}

/// A player's place in a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedTicket {
    /// The mode.
    pub mode: String,
    /// The rating the matchmaker uses for them.
    pub rating: f64,
    /// When they joined (ms since the Unix epoch).
    pub enqueued_at_ms: u64,
}

/// The queue of one mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeStats {
    /// The mode.
    pub mode: String,
    /// Tickets waiting.
    pub n_waiting: u64,
    /// The median time the waiting tickets have waited so far (0 when none wait).
    pub median_wait_ms: u64,
}

/// The matchmaking domain: cheap to clone.
#[derive(Clone)]
pub struct Matchmaking {
    inner: Arc<Inner>,
}

struct Inner {
    shard: Shard,
    kv: Kv,
    clock: SharedClock,
    config: MatchmakingConfig,
}

impl std::fmt::Debug for Matchmaking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matchmaking")
            .field("modes", &self.inner.config.modes)
            .field("shard", &self.inner.shard)
            .finish_non_exhaustive()
    }
}

impl Matchmaking {
    /// Opens `match.db` at `path` (running its migrations).
    ///
    /// # Errors
    /// [`MatchError::Config`] for an inconsistent configuration; [`MatchError::Shard`] when the
    /// shard cannot be opened or migrated.
    pub async fn open(
        path: impl Into<std::path::PathBuf>,
        kv: Kv,
        clock: SharedClock,
        config: MatchmakingConfig,
        shard_config: &ShardConfig,
    ) -> Result<Matchmaking, MatchError> {
        config.validate()?;
        let shard = Shard::open(path, shard_config, store::MIGRATIONS).await?;
        Ok(Matchmaking { inner: Arc::new(Inner { shard, kv, clock, config }) })
    }

    /// The shard this domain owns.
    pub fn shard(&self) -> &Shard {
        &self.inner.shard
    }

    /// The configuration.
    pub fn config(&self) -> &MatchmakingConfig {
        &self.inner.config
    }

    fn mode(&self, name: &str) -> Result<&ModeConfig, MatchError> {
        self.inner
            .config
            .mode(name)
            .ok_or_else(|| MatchError::UnknownMode(name.chars().take(MODE_NAME_MAX_BYTES).collect()))
    }

    /// Puts `account_id` in the queue of `mode` with their current rating in that mode.
    ///
    /// # Errors
    /// [`MatchError::UnknownMode`]; [`MatchError::AlreadyQueued`] when the player already waits
    /// (in any mode); [`MatchError::Store`], [`MatchError::Shard`].
    pub async fn queue(&self, account_id: Uuid, mode: &str) -> Result<QueuedTicket, MatchError> {
        let mode = self.mode(mode)?.name.clone();
        let rating = self.rating(account_id, &mode).await?.rating;
        let now_ms = self.inner.clock.now_ms();
        match self.inner.kv.queue_join(QUEUE, &account_id.to_string(), &mode, rating, now_ms).await? {
            QueueJoin::Joined => Ok(QueuedTicket { mode, rating, enqueued_at_ms: now_ms }),
            QueueJoin::AlreadyQueued { mode } => Err(MatchError::AlreadyQueued { mode }),
        }
    }

    /// Takes `account_id` out of whichever queue they wait in; returns whether they waited.
    ///
    /// # Errors
    /// [`MatchError::Store`].
    pub async fn leave(&self, account_id: Uuid) -> Result<bool, MatchError> {
        Ok(self.inner.kv.queue_leave(QUEUE, &account_id.to_string()).await?.is_some())
    }

    /// The player's ticket, if they wait.
    ///
    /// # Errors
    /// [`MatchError::Store`].
    pub async fn ticket(&self, account_id: Uuid) -> Result<Option<QueuedTicket>, MatchError> {
        let ticket = self.inner.kv.queue_ticket(QUEUE, &account_id.to_string()).await?;
        Ok(ticket.map(|t| QueuedTicket { mode: t.mode, rating: t.rating, enqueued_at_ms: t.enqueued_at_ms }))
    }

    /// The player lost their last connection: if they wait, their ticket is kept but not
    /// matched, and removed by the matchmaker once they have been away for the disconnect grace.
    /// Returns whether they wait.
    ///
    /// # Errors
    /// [`MatchError::Store`].
    pub async fn disconnected(&self, account_id: Uuid) -> Result<bool, MatchError> {
        let now_ms = self.inner.clock.now_ms();
        Ok(self.inner.kv.queue_set_away(QUEUE, &account_id.to_string(), Some(now_ms)).await?)
    }

    /// The player is connected again: a ticket of theirs that is still waiting is matched again.
    ///
    /// # Errors
    /// [`MatchError::Store`].
    pub async fn connected(&self, account_id: Uuid) -> Result<bool, MatchError> {
        Ok(self.inner.kv.queue_set_away(QUEUE, &account_id.to_string(), None).await?)
    }

    /// Tickets waiting and their median wait, per configured mode, in configuration order.
    ///
    /// # Errors
    /// [`MatchError::Store`].
    pub async fn queue_stats(&self) -> Result<Vec<ModeStats>, MatchError> {
        let now_ms = self.inner.clock.now_ms();
        let mut all = Vec::with_capacity(self.inner.config.modes.len());
        for mode in &self.inner.config.modes {
            let stats = self.inner.kv.queue_stats(QUEUE, &mode.name).await?;
            all.push(ModeStats {
                mode: mode.name.clone(),
                n_waiting: stats.n_waiting,
                median_wait_ms: stats.median_enqueued_at_ms.map_or(0, |at| now_ms.saturating_sub(at)),
            });
        }
        Ok(all)
    }

    /// One matchmaker step, for every process to call each `interval`: takes or renews the lease
    /// for `holder` (unique per process) and, only if this process holds it, removes the tickets
    /// of players away longer than the disconnect grace and runs one pass per mode. Returns the
    /// matches formed and recorded (none when another process holds the lease), and the first
    /// error of a mode whose pass failed: the other modes' passes still run, and the matches
    /// they recorded are returned, so their players are told.
    ///
    /// Claims an earlier pass left unsettled (its answer from Redis was lost, or it stopped between
    /// claiming and settling) are settled first, once older than the lease: their players are in
    /// the match if it was recorded, else back in the queue.
    ///
    /// # Errors
    /// [`MatchError::Store`] when Redis fails before any pass ran; [`MatchError::Shard`] when
    /// `match.db` cannot be read to settle earlier claims. A pass's own failure is in
    /// [`Tick::failed`]: [`MatchError::Store`] when Redis fails (claimed tickets are settled by a
    /// later tick); [`MatchError::Shard`] when recording fails (the claimed players still holding
    /// a ticket are put back into the queue first, best effort).
    pub async fn tick(&self, holder: &str) -> Result<Tick, MatchError> {
        let inner = &self.inner;
        if !inner.kv.lease_acquire(LEASE, holder, inner.config.lease).await? {
            return Ok(Tick::default());
        }
        let now_ms = inner.clock.now_ms();
        let grace_ms = u64::try_from(inner.config.disconnect_grace.as_millis()).unwrap_or(u64::MAX);
        let removed = inner.kv.queue_remove_away(QUEUE, now_ms.saturating_sub(grace_ms)).await?;
        if !removed.is_empty() {
            tracing::info!(tickets = removed.len(), "removed the tickets of disconnected players");
        }
        let lease_ms = u64::try_from(inner.config.lease.as_millis()).unwrap_or(u64::MAX);
        self.settle_earlier_claims(now_ms.saturating_sub(lease_ms)).await?;
        let mut tick = Tick::default();
        for mode in &inner.config.modes {
            match self.pass(mode, now_ms).await {
                Ok(formed) => tick.formed.extend(formed),
                Err(error) => {
                    tick.failed.get_or_insert(error);
                }
            }
        }
        Ok(tick)
    }

    /// Settles the claims made before `claimed_before_ms` that no pass settled: a pass still at
    /// work would have lost the lease by then.
    async fn settle_earlier_claims(&self, claimed_before_ms: u64) -> Result<(), MatchError> {
        let inner = &self.inner;
        let claims: Vec<(String, u64)> = inner
            .kv
            .queue_claimed(QUEUE)
            .await?
            .into_iter()
            .filter(|(_, claimed_at_ms)| *claimed_at_ms < claimed_before_ms)
            .collect();
        if claims.is_empty() {
            return Ok(());
        }
        // A malformed id never made a match: it goes back, where passes skip it as they do.
        let lookups: Vec<(Uuid, u64)> =
            claims.iter().filter_map(|(id, at)| Uuid::parse_str(id).ok().map(|id| (id, *at))).collect();
        let matched: Vec<String> = inner
            .shard
            .read(move |conn| store::matched_since(conn, &lookups))
            .await?
            .iter()
            .map(Uuid::to_string)
            .collect();
        let (settled, put_back): (Vec<String>, Vec<String>) =
            claims.into_iter().map(|(id, _)| id).partition(|id| matched.contains(id));
        inner.kv.queue_settle(QUEUE, &settled).await?;
        let n_put_back = inner.kv.queue_unclaim(QUEUE, &put_back).await?;
        tracing::warn!(
            settled = settled.len(),
            put_back = n_put_back,
            "settled the claims of a matchmaking pass that did not finish"
        );
        Ok(())
    }

    /// Gives up the matchmaker lease if `holder` has it (at shutdown), so another process takes
    /// over at its next tick instead of after the lease runs out.
    ///
    /// # Errors
    /// [`MatchError::Store`].
    pub async fn release(&self, holder: &str) -> Result<(), MatchError> {
        Ok(self.inner.kv.lease_release(LEASE, holder).await?)
    }

    /// One pass over one mode: read, propose, claim, record.
    async fn pass(&self, mode: &ModeConfig, now_ms: u64) -> Result<Vec<MatchDetails>, MatchError> {
        let inner = &self.inner;
        let tickets: Vec<pass::Ticket> = inner
            .kv
            .queue_tickets(QUEUE, &mode.name)
            .await?
            .into_iter()
            .filter(|ticket| ticket.away_since_ms.is_none())
            .filter_map(|ticket| match Uuid::parse_str(&ticket.player_id) {
                Ok(player_id) => Some(pass::Ticket {
                    player_id,
                    rating: ticket.rating,
                    enqueued_at_ms: ticket.enqueued_at_ms,
                }),
                Err(_) => {
                    tracing::warn!(player_id = ticket.player_id, "skipping a ticket with a malformed id");
                    None
                }
            })
            .collect();
        let proposals = pass::form_matches(&tickets, mode.shape(), &inner.config.window(), now_ms);
        if proposals.is_empty() {
            return Ok(Vec::new());
        }
        let groups: Vec<Vec<String>> =
            proposals.iter().map(|p| p.player_ids().iter().map(Uuid::to_string).collect()).collect();
        let claimed = inner.kv.queue_claim(QUEUE, &mode.name, &groups, now_ms).await?;
        let proposals: Vec<pass::Proposal> = proposals
            .into_iter()
            .zip(claimed)
            .filter(|(_, claimed)| *claimed)
            .map(|(proposal, _)| proposal)
            .collect();
        let new_matches: Vec<store::NewMatch> = proposals
            .iter()
            .map(|proposal| store::NewMatch {
                match_id: new_match_id(now_ms),
                mode: mode.name.clone(),
                created_at_ms: now_ms,
                teams: proposal
                    .teams
                    .iter()
                    .map(|team| team.iter().map(|t| (t.player_id, t.rating)).collect())
                    .collect(),
            })
            .collect();
        if new_matches.is_empty() {
            return Ok(Vec::new());
        }
        let new_matches = Arc::new(new_matches);
        let to_write = new_matches.clone();
        let claimed_players: Vec<String> = proposals
            .iter()
            .flat_map(|proposal| proposal.teams.iter().flatten())
            .map(|ticket| ticket.player_id.to_string())
            .collect();
        if let Err(error) = inner.shard.write(move |conn| store::insert_matches(conn, &to_write)).await {
            // Those who left or were removed meanwhile stay out; the others keep their places.
            if let Err(error) = inner.kv.queue_unclaim(QUEUE, &claimed_players).await {
                tracing::warn!(%error, "could not put the players of unrecorded matches back; a later tick will");
            }
            return Err(error.into());
        }
        if let Err(error) = inner.kv.queue_settle(QUEUE, &claimed_players).await {
            tracing::warn!(%error, "could not settle the claims of recorded matches; a later tick will");
        }
        let formed: Vec<MatchDetails> = new_matches
            .iter()
            .map(|new| MatchDetails {
                match_id: new.match_id,
                mode: new.mode.clone(),
                created_at_ms: new.created_at_ms,
                teams: new
                    .teams
                    .iter()
                    .map(|team| {
                        team.iter()
                            .map(|(account_id, rating)| Participant {
                                account_id: *account_id,
                                rating_before: *rating,
                                rating_after: None,
                            })
                            .collect()
                    })
                    .collect(),
                outcome: None,
                finished_at_ms: None,
                disputed: false,
            })
            .collect();
        tracing::debug!(
            mode = mode.name,
            matches = formed.len(),
            waiting = tickets.len(),
            "matchmaking pass"
        );
        Ok(formed)
    }

    /// Records a result: from a trusted caller it decides at once; from a player it is their
    /// vote, and the result stands once every player voted alike (all votes in but different:
    /// [`ReportStatus::Disputed`], for a trusted caller to decide). When it stands, the ratings
    /// of every player move by Elo ([`rating`]) in the same transaction. Repeating a report that
    /// is already recorded changes nothing and answers `replayed`.
    ///
    /// # Errors
    /// [`MatchError::UnknownMatch`]; [`MatchError::NotParticipant`] (a player reporting a match
    /// they were not in); [`MatchError::InvalidRequest`] (a winning team that does not exist);
    /// [`MatchError::ResultConflict`] (the match finished with another result, or this player
    /// already reported another one); [`MatchError::Shard`].
    pub async fn report(
        &self,
        match_id: Uuid,
        reporter: Reporter,
        outcome: MatchOutcome,
    ) -> Result<ReportReceipt, MatchError> {
        let now_ms = self.inner.clock.now_ms();
        let k_factor = self.inner.config.k_factor;
        self.inner
            .shard
            .write(move |conn| {
                // Immediate: the report reads, then writes, and processes share `match.db`; a
                // deferred transaction whose read was overtaken by another's write would fail
                // with `SQLITE_BUSY` at once instead of waiting its turn.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                Ok(store::report(&tx, match_id, reporter, outcome, now_ms, k_factor)
                    .and_then(|receipt| tx.commit().map(|()| receipt).map_err(MatchError::from)))
            })
            .await?
    }

    /// A match with its players and result.
    ///
    /// # Errors
    /// [`MatchError::UnknownMatch`], [`MatchError::Shard`].
    pub async fn details(&self, match_id: Uuid) -> Result<MatchDetails, MatchError> {
        read_details(&self.inner.shard, match_id).await
    }

    /// A player's matches, newest first: `limit` (1 to [`HISTORY_LIMIT_MAX`]) of them, older
    /// than the match `before` when given (pass the last id of a page to get the next).
    ///
    /// # Errors
    /// [`MatchError::InvalidRequest`] for a bad limit; [`MatchError::UnknownMatch`] for an
    /// unknown `before`; [`MatchError::Shard`].
    pub async fn history(
        &self,
        account_id: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<MatchDetails>, MatchError> {
        check_limit(limit, HISTORY_LIMIT_MAX)?;
        self.inner.shard.read(move |conn| Ok(store::history(conn, account_id, before, limit))).await?
    }

    /// A player's rating in `mode`.
    ///
    /// # Errors
    /// [`MatchError::UnknownMode`], [`MatchError::Shard`].
    pub async fn rating(&self, account_id: Uuid, mode: &str) -> Result<RatingInfo, MatchError> {
        let mode = self.mode(mode)?.name.clone();
        Ok(self.inner.shard.read(move |conn| store::rating(conn, &mode, account_id)).await?)
    }

    /// The best `limit` (1 to [`LEADERBOARD_LIMIT_MAX`]) players of `mode`.
    ///
    /// # Errors
    /// [`MatchError::UnknownMode`], [`MatchError::InvalidRequest`], [`MatchError::Shard`].
    pub async fn leaderboard(&self, mode: &str, limit: u32) -> Result<Vec<LeaderboardEntry>, MatchError> {
        check_limit(limit, LEADERBOARD_LIMIT_MAX)?;
        let mode = self.mode(mode)?.name.clone();
        Ok(self.inner.shard.read(move |conn| store::top(conn, &mode, limit)).await?)
    }

    /// The `n` (0 to [`AROUND_MAX`]) players ranked just above and below `account_id` in `mode`,
    /// with the player in between (if they have a rank), best first.
    ///
    /// # Errors
    /// [`MatchError::UnknownMode`], [`MatchError::InvalidRequest`], [`MatchError::Shard`].
    pub async fn around(
        &self,
        account_id: Uuid,
        mode: &str,
        n: u32,
    ) -> Result<Vec<LeaderboardEntry>, MatchError> {
        if n > AROUND_MAX {
            return Err(MatchError::InvalidRequest(format!("at most {AROUND_MAX} neighbours per side")));
        }
        let mode = self.mode(mode)?.name.clone();
        Ok(self.inner.shard.read(move |conn| store::around(conn, &mode, account_id, n)).await?)
    }
}

fn check_limit(limit: u32, max: u32) -> Result<(), MatchError> {
    if limit == 0 || limit > max {
        return Err(MatchError::InvalidRequest(format!("limit must be 1 to {max}")));
    }
    Ok(())
}

/// A UUID v7 whose timestamp is the injected clock's.
fn new_match_id(now_ms: u64) -> Uuid {
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        now_ms / 1000,
        u32::try_from((now_ms % 1000) * 1_000_000).unwrap_or(0),
    );
    Uuid::new_v7(timestamp)
}

/// A match with its players and result, read from an already open `match.db` (for ops tools
/// that read shards without running the domain).
///
/// # Errors
/// [`MatchError::UnknownMatch`], [`MatchError::Shard`].
pub async fn read_details(shard: &Shard, match_id: Uuid) -> Result<MatchDetails, MatchError> {
    shard.read(move |conn| store::details(conn, match_id)).await?.ok_or(MatchError::UnknownMatch(match_id))
}
