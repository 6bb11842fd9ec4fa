//! The wire protocol between game clients and the gateway: the only wire contract of the backend.
//!
//! Owns: every message a client sends ([`ClientMessage`], [`Request`]) or receives ([`ServerMessage`],
//! [`Reply`], [`Event`], [`ErrorCode`]), the names of the WebSocket subprotocols that select an
//! encoding ([`Encoding`]), the protocol's limits and close codes, and the two codecs ([`codec`]).
//!
//! Never: opens a socket, spawns a task or touches a database. It depends on serde and the codecs
//! only, so a client in any environment can use it.
//!
//! # Changing the schema
//! Binary frames are bincode: fields are positional and enum variants are numbered in declaration
//! order. So, together:
//! - append new enum variants at the end and new fields only inside new variants; never reorder;
//! - a change that breaks existing clients bumps [`PROTOCOL_VERSION`] (and so the subprotocol names);
//! - `PROTOCOL.md` documents every message with a JSON example: update it in the same change (a
//!   test below decodes every example);
//! - the round-trip tests at the bottom of this file list one value of every message.

pub mod chat;
pub mod codec;
pub mod inventory;
pub mod matchmaking;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version of this protocol; it is part of every subprotocol name.
pub const PROTOCOL_VERSION: u32 = 1;

/// Subprotocol name for bincode-encoded binary frames.
pub const SUBPROTOCOL_BINCODE: &str = "game.v1.bincode";

/// Subprotocol name for JSON-encoded text frames.
pub const SUBPROTOCOL_JSON: &str = "game.v1.json";

/// Request ids are chosen by the client; 0 is reserved for responses to frames whose id could not
/// be read at all.
pub const UNKNOWN_REQUEST_ID: u64 = 0;

/// The largest frame (and message) the gateway accepts, in bytes, unless configured otherwise.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Bounds on the inputs of auth and player-state requests, checked by the server; clients may
/// check them early.
pub mod limits {
    /// Shortest username, in characters.
    pub const USERNAME_MIN_CHARS: usize = 3;
    /// Longest username, in characters.
    pub const USERNAME_MAX_CHARS: usize = 24;
    /// Shortest password, in characters (OWASP: at least 8).
    pub const PASSWORD_MIN_CHARS: usize = 8;
    /// Longest password, in bytes: bounds the work one login can cause.
    pub const PASSWORD_MAX_BYTES: usize = 128;
    /// Largest absolute value of a position coordinate.
    pub const COORDINATE_MAX_ABS: f32 = 1.0e6;
    /// Largest absolute value of a rotation, in degrees.
    pub const ROTATION_MAX_ABS_DEGREES: f32 = 360.0;
    /// Largest health value.
    pub const HEALTH_MAX: u32 = 1_000_000;
    /// Largest attributes blob of a player's state, in bytes.
    pub const ATTRIBUTES_MAX_BYTES: usize = 256;
}

/// WebSocket close codes the gateway uses, besides the standard ones.
pub mod close {
    /// Normal closure (standard).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down (standard "going away"); reconnect later.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the protocol in a way that cannot be answered per request (standard).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message exceeded the size limit (standard).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server has no room for another connection; retry with backoff (standard).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The connection's session was revoked (logout on another connection, logout everywhere,
    /// refresh, or a login of the account past its cap of live sessions, which ends the oldest).
    pub const SESSION_REVOKED: u16 = 4001;
    /// Nothing was heard from the client within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4002;
    /// The client did not read its messages fast enough and the outbound queue filled up.
    pub const SLOW_CONSUMER: u16 = 4003;
    /// The session expired (idle or absolute lifetime) while the connection was open.
    pub const SESSION_EXPIRED: u16 = 4004;
    /// The token given at the handshake is unknown, revoked or expired.
    pub const INVALID_TOKEN: u16 = 4005;
    /// The connection stayed without a session (never logged in, or logged out) past the login
    /// timeout.
    pub const LOGIN_TIMEOUT: u16 = 4006;
}

/// The encoding of a connection, chosen by the WebSocket subprotocol at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// bincode v2 (standard config: little-endian varints) in binary frames.
    Bincode,
    /// JSON in text frames.
    Json,
}

impl Encoding {
    /// The subprotocol name that selects this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Bincode => SUBPROTOCOL_BINCODE,
            Encoding::Json => SUBPROTOCOL_JSON,
        }
    }

    /// The encoding a subprotocol name selects, if this server speaks it.
    pub fn from_subprotocol(name: &str) -> Option<Encoding> {
        match name.trim() {
            SUBPROTOCOL_BINCODE => Some(Encoding::Bincode),
            SUBPROTOCOL_JSON => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// An account's identity: a UUID (v7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub Uuid);

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A frame sent by a client: one request with the id the client chose for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientMessage {
    /// Chosen by the client (any value but 0); echoed in the one response to this request.
    pub id: u64,
    /// What the client asks for.
    pub request: Request,
}

/// Everything a client can ask. Only the auth requests ([`Request::is_auth`]) are accepted before
/// the connection is authenticated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Creates an account. Answered with [`Reply::Registered`]; does not log in.
    Register {
        /// 3 to 24 characters of `a-z`, `A-Z`, `0-9`, `_`, `-`; unique ignoring case.
        username: String,
        /// 8 characters to 128 bytes.
        password: String,
    },
    /// Logs in and authenticates this connection. Answered with [`Reply::Session`].
    Login {
        /// The account's username, in any case.
        username: String,
        /// The account's password.
        password: String,
    },
    /// Authenticates this connection with a session token from an earlier login (reconnect).
    /// Answered with [`Reply::Session`] carrying the same token.
    Resume {
        /// The session token.
        token: String,
    },
    /// Replaces this connection's session token with a new one (rotation); the old token stops
    /// working at once. Answered with [`Reply::Session`].
    Refresh,
    /// Ends this connection's session; the connection stays open but unauthenticated.
    /// Answered with [`Reply::LoggedOut`].
    Logout,
    /// Ends every session of this account, on every gateway; other connections of the account
    /// are closed with [`close::SESSION_REVOKED`]. Answered with [`Reply::LoggedOut`].
    LogoutEverywhere,
    /// Who this connection is logged in as. Answered with [`Reply::Account`].
    Whoami,
    /// The cheapest authenticated round trip: answered by the gateway alone with [`Reply::Pong`].
    Ping,
    /// Changes this player's own state; fields left out keep their values. Answered with
    /// [`Reply::StateAccepted`] once the change is buffered (readable at once, durable in SQLite
    /// within the server's flush interval).
    UpdateState(StateUpdate),
    /// This player's own state, newest acknowledged version. Answered with [`Reply::State`]; a
    /// player who never stored state gets the default state with version 0.
    GetState,
    /// Another player's public state. Answered with [`Reply::PublicState`], or `not_found`.
    GetPlayerState {
        /// Whose state.
        account_id: AccountId,
    },
    /// A chat request (see [`chat`]).
    Chat(chat::ChatRequest),
    /// An inventory request (see [`inventory`]).
    Inventory(inventory::InventoryRequest),
    /// A matchmaking request (see [`matchmaking`]).
    Match(matchmaking::MatchRequest),
}

impl Request {
    /// Whether the request may be sent before the connection is authenticated.
    pub fn is_auth(&self) -> bool {
        matches!(self, Request::Register { .. } | Request::Login { .. } | Request::Resume { .. })
    }

    /// A short stable name of the request's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Register { .. } => "register",
            Request::Login { .. } => "login",
            Request::Resume { .. } => "resume",
            Request::Refresh => "refresh",
            Request::Logout => "logout",
            Request::LogoutEverywhere => "logout_everywhere",
            Request::Whoami => "whoami",
            Request::Ping => "ping",
            Request::UpdateState(_) => "update_state",
            Request::GetState => "get_state",
            Request::GetPlayerState { .. } => "get_player_state",
            Request::Chat(request) => request.kind(),
            Request::Inventory(request) => request.kind(),
            Request::Match(request) => request.kind(),
        }
    }
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMessage {
    /// The one answer to a request.
    Response(Response),
    /// Something the server tells the client unasked; carries no request id.
    Event(Event),
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The id of the request this answers ([`UNKNOWN_REQUEST_ID`] if it could not be read).
    pub id: u64,
    /// The result or the error.
    pub outcome: Outcome,
}

/// A request's result or error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The request succeeded.
    Ok(Reply),
    /// The request failed and changed nothing.
    Error(ErrorBody),
}

/// Successful results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The account was created.
    Registered {
        /// The new account's id.
        account_id: AccountId,
    },
    /// The connection is authenticated with this session.
    Session(SessionInfo),
    /// The session (or all sessions) ended.
    LoggedOut,
    /// The account this connection is logged in as.
    Account(AccountInfo),
    /// Answer to [`Request::Ping`].
    Pong {
        /// The server's clock, in milliseconds since the Unix epoch.
        server_time_ms: u64,
    },
    /// The state update was accepted.
    StateAccepted {
        /// The state's version after this update; versions of one player only grow.
        version: u64,
    },
    /// A player's own full state.
    State(PlayerState),
    /// Another player's public state.
    PublicState(PublicPlayerState),
    /// A chat result (see [`chat`]).
    Chat(chat::ChatReply),
    /// An inventory result (see [`inventory`]).
    Inventory(inventory::InventoryReply),
    /// A matchmaking result (see [`matchmaking`]).
    Match(matchmaking::MatchReply),
}

/// A point in the game world.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Position {
    /// East-west.
    pub x: f32,
    /// Up-down.
    pub y: f32,
    /// North-south.
    pub z: f32,
}

/// A change to a player's state: each field present replaces the stored one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StateUpdate {
    /// New position; each coordinate finite and within ±[`limits::COORDINATE_MAX_ABS`].
    pub position: Option<Position>,
    /// New heading in degrees; finite and within ±[`limits::ROTATION_MAX_ABS_DEGREES`].
    pub rotation: Option<f32>,
    /// New health, at most [`limits::HEALTH_MAX`].
    pub health: Option<u32>,
    /// New game-defined attributes, at most [`limits::ATTRIBUTES_MAX_BYTES`] bytes.
    pub attributes: Option<Vec<u8>>,
}

/// A player's full state, as the player sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlayerState {
    /// Whose state.
    pub account_id: AccountId,
    /// Where the player is.
    pub position: Position,
    /// Heading in degrees.
    pub rotation: f32,
    /// Health.
    pub health: u32,
    /// Game-defined attributes.
    pub attributes: Vec<u8>,
    /// Grows with every accepted update; 0 before the first.
    pub version: u64,
    /// When the last update was accepted (milliseconds since the Unix epoch).
    pub updated_at_ms: u64,
}

/// What other players may see of a player's state (no attributes).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PublicPlayerState {
    /// Whose state.
    pub account_id: AccountId,
    /// Where the player is.
    pub position: Position,
    /// Heading in degrees.
    pub rotation: f32,
    /// Health.
    pub health: u32,
    /// The state's version.
    pub version: u64,
    /// When the last update was accepted (milliseconds since the Unix epoch).
    pub updated_at_ms: u64,
}

/// A session as the client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The account logged in.
    pub account_id: AccountId,
    /// The account's username as registered.
    pub username: String,
    /// The session token: keep it secret; present it with [`Request::Resume`] or at the handshake.
    pub token: String,
    /// The session ends if unused for this long (seconds); any use restarts the count.
    pub idle_timeout_secs: u64,
    /// The session ends at this time whatever happens (milliseconds since the Unix epoch).
    pub expires_at_ms: u64,
}

/// Public facts about an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// The account's id.
    pub account_id: AccountId,
    /// The username as registered.
    pub username: String,
    /// When the account was created (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
}

/// A failed request's error: a stable code for programs and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for programs; stable across versions.
    pub code: ErrorCode,
    /// What went wrong, for people; may change between versions.
    pub message: String,
}

impl ErrorBody {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// Stable machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed, unknown or had invalid values; do not retry it unchanged.
    BadRequest,
    /// Not authenticated, bad credentials, or an invalid or expired session token.
    Unauthorized,
    /// Not allowed for this account: another player's channel, offer or match, or (the one case
    /// before authentication) a login to an account an operator disabled.
    Forbidden,
    /// The thing asked about does not exist.
    NotFound,
    /// The request conflicts with the current state (e.g. the username is taken).
    Conflict,
    /// Too many requests or attempts; retry later.
    RateLimited,
    /// A dependency of the server is down or did not answer in time; retry later. A request
    /// that timed out on its way to Redis may have been applied: state updates are safe to
    /// retry (the newest wins).
    Unavailable,
    /// The server failed; a bug, logged on the server.
    Internal,
}

impl ErrorCode {
    /// The code as it appears in JSON (`bad_request`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Messages the server sends unasked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The server is about to close this connection; the close frame follows.
    Kicked {
        /// The close code that follows (see [`close`]).
        code: u16,
        /// Why, for people.
        reason: String,
    },
    /// A notice addressed to this player, delivered on whichever gateway they are connected to.
    Notice {
        /// The text.
        text: String,
    },
    /// A chat event (see [`chat`]).
    Chat(chat::ChatEvent),
    /// An inventory event (see [`inventory`]).
    Inventory(inventory::InventoryEvent),
    /// A matchmaking event (see [`matchmaking`]).
    Match(matchmaking::MatchEvent),
}

/// Round-trip checks shared by the tests of every message module.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::{ClientMessage, Encoding, Event, Outcome, Reply, Request, Response, ServerMessage, codec};

    /// Every request, reply and event survives encoding and decoding in both encodings.
    pub(crate) fn assert_round_trips(
        requests: impl IntoIterator<Item = Request>,
        replies: impl IntoIterator<Item = Reply>,
        events: impl IntoIterator<Item = Event>,
    ) {
        let client: Vec<ClientMessage> =
            requests.into_iter().zip(1..).map(|(request, id)| ClientMessage { id, request }).collect();
        let server: Vec<ServerMessage> = replies
            .into_iter()
            .map(|reply| ServerMessage::Response(Response { id: 1, outcome: Outcome::Ok(reply) }))
            .chain(events.into_iter().map(ServerMessage::Event))
            .collect();
        for encoding in [Encoding::Bincode, Encoding::Json] {
            for message in &client {
                let bytes = codec::encode(encoding, message).expect("encode");
                assert_eq!(&codec::decode::<ClientMessage>(encoding, &bytes).expect("decode"), message);
            }
            for message in &server {
                let bytes = codec::encode(encoding, message).expect("encode");
                assert_eq!(&codec::decode::<ServerMessage>(encoding, &bytes).expect("decode"), message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_client_message() -> Vec<ClientMessage> {
        let requests = vec![
            Request::Register { username: "ada".into(), password: "correct horse".into() },
            Request::Login { username: "ada".into(), password: "correct horse".into() },
            Request::Resume { token: "t0k3n".into() },
            Request::Refresh,
            Request::Logout,
            Request::LogoutEverywhere,
            Request::Whoami,
            Request::Ping,
            Request::UpdateState(StateUpdate {
                position: Some(Position { x: 1.5, y: -2.0, z: 3.25 }),
                rotation: None,
                health: Some(90),
                attributes: Some(vec![1, 2, 3]),
            }),
            Request::GetState,
            Request::GetPlayerState { account_id: AccountId(Uuid::from_u128(7)) },
            Request::Chat(chat::ChatRequest::History {
                channel_id: chat::ChannelId(Uuid::from_u128(8)),
                before: Some(chat::MessageId(Uuid::from_u128(9))),
                limit: 50,
            }),
            Request::Chat(chat::ChatRequest::SendDirect {
                to: AccountId(Uuid::from_u128(7)),
                text: "hi".into(),
            }),
        ];
        requests.into_iter().zip(1..).map(|(request, id)| ClientMessage { id, request }).collect()
    }

    fn every_server_message() -> Vec<ServerMessage> {
        let account_id = AccountId(Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001));
        let replies = vec![
            Outcome::Ok(Reply::Registered { account_id }),
            Outcome::Ok(Reply::Session(SessionInfo {
                account_id,
                username: "ada".into(),
                token: "t0k3n".into(),
                idle_timeout_secs: 1800,
                expires_at_ms: 1_800_000_000_000,
            })),
            Outcome::Ok(Reply::LoggedOut),
            Outcome::Ok(Reply::Account(AccountInfo {
                account_id,
                username: "ada".into(),
                created_at_ms: 1_700_000_000_000,
            })),
            Outcome::Ok(Reply::Pong { server_time_ms: 42 }),
            Outcome::Ok(Reply::StateAccepted { version: 9 }),
            Outcome::Ok(Reply::State(PlayerState {
                account_id,
                position: Position { x: 1.0, y: 2.0, z: 3.0 },
                rotation: 90.0,
                health: 100,
                attributes: vec![7],
                version: 9,
                updated_at_ms: 1_700_000_000_000,
            })),
            Outcome::Ok(Reply::PublicState(PublicPlayerState {
                account_id,
                version: 9,
                ..Default::default()
            })),
            Outcome::Error(ErrorBody::new(ErrorCode::RateLimited, "slow down")),
        ];
        let mut messages: Vec<ServerMessage> = replies
            .into_iter()
            .zip(1..)
            .map(|(outcome, id)| ServerMessage::Response(Response { id, outcome }))
            .collect();
        messages
            .push(ServerMessage::Event(Event::Kicked { code: close::SESSION_REVOKED, reason: "bye".into() }));
        messages.push(ServerMessage::Event(Event::Notice { text: "hello".into() }));
        messages.push(ServerMessage::Event(Event::Chat(chat::ChatEvent::Message(chat::ChatMessage {
            message_id: chat::MessageId(Uuid::from_u128(9)),
            channel_id: chat::ChannelId(Uuid::from_u128(8)),
            sender: account_id,
            text: "hello\nworld".into(),
            sent_at_ms: 1_700_000_000_000,
        }))));
        messages
    }

    #[test]
    fn every_message_round_trips_through_both_encodings() {
        for encoding in [Encoding::Bincode, Encoding::Json] {
            for message in every_client_message() {
                let bytes = codec::encode(encoding, &message).expect("encode");
                assert_eq!(codec::decode::<ClientMessage>(encoding, &bytes).expect("decode"), message);
            }
            for message in every_server_message() {
                let bytes = codec::encode(encoding, &message).expect("encode");
                assert_eq!(codec::decode::<ServerMessage>(encoding, &bytes).expect("decode"), message);
            }
        }
    }

    #[test]
    fn json_shapes_match_protocol_md() {
        let check = |message: &ClientMessage, expected: &str| {
            assert_eq!(serde_json::to_string(message).expect("json"), expected);
        };
        check(&ClientMessage { id: 7, request: Request::Ping }, r#"{"id":7,"request":"ping"}"#);
        check(
            &ClientMessage {
                id: 1,
                request: Request::Login { username: "ada".into(), password: "pw".into() },
            },
            r#"{"id":1,"request":{"login":{"username":"ada","password":"pw"}}}"#,
        );
        let error = ServerMessage::Response(Response {
            id: 3,
            outcome: Outcome::Error(ErrorBody::new(ErrorCode::BadRequest, "no")),
        });
        assert_eq!(
            serde_json::to_string(&error).expect("json"),
            r#"{"response":{"id":3,"outcome":{"error":{"code":"bad_request","message":"no"}}}}"#
        );
    }

    #[test]
    fn every_json_example_in_protocol_md_decodes_and_the_servers_are_written_as_shown() {
        let doc = include_str!("../../PROTOCOL.md");
        let mut n_examples = 0;
        for (number, line) in doc.lines().enumerate().map(|(index, line)| (index + 1, line.trim())) {
            if let Some(request) = line.strip_prefix("→ ") {
                serde_json::from_str::<ClientMessage>(request)
                    .unwrap_or_else(|error| panic!("PROTOCOL.md:{number}: {error}"));
            } else if let Some(server) = line.strip_prefix("← ") {
                let message = serde_json::from_str::<ServerMessage>(server)
                    .unwrap_or_else(|error| panic!("PROTOCOL.md:{number}: {error}"));
                assert_eq!(serde_json::to_string(&message).expect("json"), server, "PROTOCOL.md:{number}");
            } else {
                continue;
            }
            n_examples += 1;
        }
        assert!(n_examples > 80, "only {n_examples} examples found");
    }

    #[test]
    fn subprotocol_names_carry_the_version() {
        for encoding in [Encoding::Bincode, Encoding::Json] {
            assert!(encoding.subprotocol().contains(&format!("v{PROTOCOL_VERSION}")));
            assert_eq!(Encoding::from_subprotocol(encoding.subprotocol()), Some(encoding));
        }
        assert_eq!(Encoding::from_subprotocol("game.v2.json"), None);
    }

    #[test]
    fn only_auth_requests_are_allowed_before_login() {
        let allowed: Vec<&str> =
            every_client_message().iter().filter(|m| m.request.is_auth()).map(|m| m.request.kind()).collect();
        assert_eq!(allowed, ["register", "login", "resume"]);
    }
}
