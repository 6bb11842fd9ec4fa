//! Matchmaking messages: requests, replies and events of the match domain, nested under
//! [`crate::Request::Match`], [`crate::Reply::Match`] and [`crate::Event::Match`].
//!
//! A player queues for a mode (at most one queue at a time), is told [`MatchEvent::MatchFound`]
//! when the matchmaker puts them into a match, and after playing reports the result; the result
//! stands once every player of the match reported the same one, or when the game server reports
//! it on the admin port (`POST /match/{match_id}/result`, with the service credential). Then every
//! player gets [`MatchEvent::MatchFinished`] with the new ratings (Elo, starting at 1500).
//!
//! Teams are numbered from 0 in the order of [`MatchInfo::teams`]; a result names the winning
//! team, or none for a draw.
//!
//! The same rules as in the crate root apply when this schema changes: append variants at the
//! end, update `PROTOCOL.md` and the round-trip test below.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AccountId;

/// Matchmaking requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchRequest {
    /// The configured modes. Answered with [`MatchReply::Modes`].
    Modes,
    /// Joins the queue of `mode`. Answered with [`MatchReply::Queued`]; `conflict` when already
    /// queued (in any mode), `bad_request` for an unknown mode. A player whose every connection
    /// is gone for the server's disconnect grace (30 s by default) leaves the queue.
    Queue {
        /// A mode's name, from [`MatchRequest::Modes`].
        mode: String,
    },
    /// Leaves the queue. Answered with [`MatchReply::Left`].
    Leave,
    /// Reports the result of a match this player was in. Answered with [`MatchReply::Reported`];
    /// `forbidden` when not in the match, `conflict` when this player already reported another
    /// result or the match finished with another one. Repeating the same report is harmless.
    Report {
        /// The match.
        match_id: Uuid,
        /// The winning team, or `None` for a draw. Required in JSON even though it is an
        /// `Option`: a report left without it would otherwise count as a vote for a draw.
        #[serde(deserialize_with = "Option::deserialize")]
        winner: Option<u32>,
    },
    /// This player's matches, newest first. Answered with [`MatchReply::History`].
    History {
        /// Only matches older than this one (the last of the previous page); `None` for the newest.
        before: Option<Uuid>,
        /// How many, 1 to 50.
        limit: u32,
    },
    /// One match. Answered with [`MatchReply::Match`], or `not_found`.
    Details {
        /// The match.
        match_id: Uuid,
    },
    /// A player's rating in a mode. Answered with [`MatchReply::Rating`].
    Rating {
        /// The mode.
        mode: String,
        /// Whose; `None` for this player.
        account_id: Option<AccountId>,
    },
    /// The best players of a mode. Answered with [`MatchReply::Leaderboard`].
    Leaderboard {
        /// The mode.
        mode: String,
        /// How many, 1 to 100.
        limit: u32,
    },
    /// The players ranked just above and below this player (and this player, once rated).
    /// Answered with [`MatchReply::Leaderboard`].
    AroundMe {
        /// The mode.
        mode: String,
        /// How many on each side, 0 to 25.
        n: u32,
    },
    /// Tickets waiting and the median wait per mode. Answered with [`MatchReply::QueueStats`].
    QueueStats,
}

impl MatchRequest {
    /// A short stable name of the request's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MatchRequest::Modes => "match_modes",
            MatchRequest::Queue { .. } => "match_queue",
            MatchRequest::Leave => "match_leave",
            MatchRequest::Report { .. } => "match_report",
            MatchRequest::History { .. } => "match_history",
            MatchRequest::Details { .. } => "match_details",
            MatchRequest::Rating { .. } => "match_rating",
            MatchRequest::Leaderboard { .. } => "match_leaderboard",
            MatchRequest::AroundMe { .. } => "match_around_me",
            MatchRequest::QueueStats => "match_queue_stats",
        }
    }
}

/// A mode players can queue for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeInfo {
    /// The mode's name.
    pub name: String,
    /// Players per team.
    pub team_size: u32,
    /// Teams per match.
    pub n_teams: u32,
}

/// One player of a match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchPlayer {
    /// The player.
    pub account_id: AccountId,
    /// Their rating when queued, or, once finished, the rating the result was applied to.
    pub rating_before: f64,
    /// Their rating after this match's result; `None` until then.
    pub rating_after: Option<f64>,
}

/// A match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchInfo {
    /// The match's id.
    pub match_id: Uuid,
    /// Its mode.
    pub mode: String,
    /// When it was formed (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// The teams (team 0 first), each strongest first.
    pub teams: Vec<Vec<MatchPlayer>>,
    /// Whether the result is recorded.
    pub finished: bool,
    /// The winning team once finished; `None` for a draw (or while open).
    pub winner: Option<u32>,
    /// When the result was recorded.
    pub finished_at_ms: Option<u64>,
    /// Every player reported, but not alike: the game server decides.
    pub disputed: bool,
}

/// Where a match stands after a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// The result is recorded and the ratings updated.
    Finished,
    /// This report is recorded; other players have not reported yet.
    AwaitingOthers,
    /// Every player reported, not alike.
    Disputed,
}

/// A player's rating in a mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingInfo {
    /// The mode.
    pub mode: String,
    /// The player.
    pub account_id: AccountId,
    /// The Elo rating (1500 before the first result).
    pub rating: f64,
    /// Place on the mode's leaderboard (1 = best); `None` before the first result.
    pub rank: Option<u64>,
    /// Matches with a result.
    pub games: u64,
    /// Won.
    pub wins: u64,
    /// Lost.
    pub losses: u64,
    /// Drawn.
    pub draws: u64,
}

/// One line of a leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardEntry {
    /// Place (1 = best; ties broken by account id).
    pub rank: u64,
    /// The player.
    pub account_id: AccountId,
    /// Their rating.
    pub rating: f64,
    /// Matches with a result.
    pub games: u64,
}

/// The queue of one mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The mode.
    pub mode: String,
    /// Tickets waiting.
    pub waiting: u64,
    /// The median time those tickets have waited so far, in milliseconds.
    pub median_wait_ms: u64,
}

/// Matchmaking results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchReply {
    /// The configured modes.
    Modes {
        /// Every mode.
        modes: Vec<ModeInfo>,
    },
    /// This player waits in the queue.
    Queued {
        /// The mode.
        mode: String,
        /// The rating the matchmaker uses for them.
        rating: f64,
        /// When they joined (milliseconds since the Unix epoch).
        enqueued_at_ms: u64,
    },
    /// This player is not in a queue (any more).
    Left {
        /// Whether they were waiting.
        was_queued: bool,
    },
    /// The report is recorded.
    Reported {
        /// Where the match stands now.
        status: ReportStatus,
        /// True when this repeats an earlier report (nothing changed).
        replayed: bool,
        /// The match after the report.
        game: MatchInfo,
    },
    /// Matches, newest first.
    History {
        /// The page.
        matches: Vec<MatchInfo>,
    },
    /// One match.
    Match(MatchInfo),
    /// A rating.
    Rating(RatingInfo),
    /// Leaderboard lines, best first.
    Leaderboard {
        /// The lines.
        entries: Vec<LeaderboardEntry>,
    },
    /// The queues.
    QueueStats {
        /// One per configured mode.
        modes: Vec<QueueStats>,
    },
}

/// Matchmaking events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchEvent {
    /// The matchmaker put this player into a match; they have left the queue.
    MatchFound {
        /// The match.
        match_id: Uuid,
        /// Its mode.
        mode: String,
        /// The players of each team (team 0 first), strongest first.
        teams: Vec<Vec<AccountId>>,
    },
    /// A match of this player has its result; ratings are updated.
    MatchFinished(MatchInfo),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMessage, Event, Reply, Request, ServerMessage};

    fn info() -> MatchInfo {
        MatchInfo {
            match_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_00bb),
            mode: "duel".into(),
            created_at_ms: 1_700_000_000_000,
            teams: vec![
                vec![MatchPlayer {
                    account_id: AccountId(Uuid::from_u128(1)),
                    rating_before: 1500.0,
                    rating_after: Some(1516.0),
                }],
                vec![MatchPlayer {
                    account_id: AccountId(Uuid::from_u128(2)),
                    rating_before: 1500.0,
                    rating_after: Some(1484.0),
                }],
            ],
            finished: true,
            winner: Some(0),
            finished_at_ms: Some(1_700_000_600_000),
            disputed: false,
        }
    }

    #[test]
    fn every_match_message_round_trips_through_both_encodings() {
        let requests = [
            MatchRequest::Modes,
            MatchRequest::Queue { mode: "duel".into() },
            MatchRequest::Leave,
            MatchRequest::Report { match_id: info().match_id, winner: None },
            MatchRequest::History { before: Some(info().match_id), limit: 20 },
            MatchRequest::Details { match_id: info().match_id },
            MatchRequest::Rating { mode: "duel".into(), account_id: Some(AccountId(Uuid::from_u128(2))) },
            MatchRequest::Leaderboard { mode: "duel".into(), limit: 10 },
            MatchRequest::AroundMe { mode: "duel".into(), n: 3 },
            MatchRequest::QueueStats,
        ];
        let entry =
            LeaderboardEntry { rank: 1, account_id: AccountId(Uuid::from_u128(1)), rating: 1516.0, games: 1 };
        let replies = [
            MatchReply::Modes { modes: vec![ModeInfo { name: "duel".into(), team_size: 1, n_teams: 2 }] },
            MatchReply::Queued { mode: "duel".into(), rating: 1500.0, enqueued_at_ms: 1_700_000_000_000 },
            MatchReply::Left { was_queued: true },
            MatchReply::Reported { status: ReportStatus::AwaitingOthers, replayed: false, game: info() },
            MatchReply::History { matches: vec![info()] },
            MatchReply::Match(info()),
            MatchReply::Rating(RatingInfo {
                mode: "duel".into(),
                account_id: AccountId(Uuid::from_u128(1)),
                rating: 1516.0,
                rank: Some(1),
                games: 1,
                wins: 1,
                losses: 0,
                draws: 0,
            }),
            MatchReply::Leaderboard { entries: vec![entry] },
            MatchReply::QueueStats {
                modes: vec![QueueStats { mode: "duel".into(), waiting: 3, median_wait_ms: 1200 }],
            },
        ];
        let events = [
            MatchEvent::MatchFound {
                match_id: info().match_id,
                mode: "duel".into(),
                teams: vec![vec![AccountId(Uuid::from_u128(1))], vec![AccountId(Uuid::from_u128(2))]],
            },
            MatchEvent::MatchFinished(info()),
        ];
        crate::test_support::assert_round_trips(
            requests.iter().cloned().map(Request::Match),
            replies.iter().cloned().map(Reply::Match),
            events.iter().cloned().map(Event::Match),
        );
    }

    #[test]
    fn json_shapes_match_protocol_md() {
        let queue =
            ClientMessage { id: 50, request: Request::Match(MatchRequest::Queue { mode: "duel".into() }) };
        assert_eq!(
            serde_json::to_string(&queue).expect("json"),
            r#"{"id":50,"request":{"match":{"queue":{"mode":"duel"}}}}"#
        );
        let found = ServerMessage::Event(Event::Match(MatchEvent::MatchFound {
            match_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_00bb),
            mode: "duel".into(),
            teams: vec![vec![AccountId(Uuid::from_u128(1))], vec![AccountId(Uuid::from_u128(2))]],
        }));
        assert_eq!(
            serde_json::to_string(&found).expect("json"),
            r#"{"event":{"match":{"match_found":{"match_id":"01930000-0000-7000-8000-0000000000bb","mode":"duel","teams":[["00000000-0000-0000-0000-000000000001"],["00000000-0000-0000-0000-000000000002"]]}}}}"#
        );
    }

    #[test]
    fn a_report_must_say_its_winner_even_for_a_draw() {
        let draw = r#"{"id":51,"request":{"match":{"report":{"match_id":"01930000-0000-7000-8000-0000000000bb","winner":null}}}}"#;
        let decoded: ClientMessage = serde_json::from_str(draw).expect("a written-out draw is a report");
        assert!(matches!(decoded.request, Request::Match(MatchRequest::Report { winner: None, .. })));
        let forgotten =
            r#"{"id":52,"request":{"match":{"report":{"match_id":"01930000-0000-7000-8000-0000000000bb"}}}}"#;
        let error = serde_json::from_str::<ClientMessage>(forgotten).expect_err("no winner, no report");
        assert!(error.to_string().contains("missing field `winner`"), "{error}");
    }
}
