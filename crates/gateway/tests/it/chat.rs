//! Chat through the real gateway and a real Redis: rooms, groups and direct messages, live
//! delivery (also between two gateways), history paging (also across a year boundary and into
//! a retired year, and a send stamped in a retired year), permissions (also revoked through another gateway process), the send rate and
//! membership-change rate, membership limits, soft delete and bad input.

use std::time::Duration;

use game_client::{Client, ClientError};
use proto::chat::{ChannelId, ChannelKind, ChatEvent, ChatReply, ChatRequest, HistoryPage, MessageId};
use proto::{ClientMessage, Encoding, ErrorCode, Event, Outcome, Reply, Request, codec};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{GatewayProcess, PATIENCE, World, admin, join, username};

/// 2030-12-31T23:59:59.999Z.
const LAST_MS_OF_2030: u64 = 1_924_991_999_999;

async fn chat(client: &Client, request: ChatRequest) -> Result<ChatReply, ClientError> {
    match client.request(Request::Chat(request)).await? {
        Reply::Chat(reply) => Ok(reply),
        other => panic!("unexpected {other:?}"),
    }
}

fn code(result: Result<ChatReply, ClientError>) -> Option<ErrorCode> {
    result.expect_err("the request is refused").code()
}

async fn send(client: &Client, channel_id: ChannelId, text: &str) -> Result<ChatReply, ClientError> {
    chat(client, ChatRequest::Send { channel_id, text: text.into() }).await
}

/// Sends and returns (channel, message id, server time).
async fn sent(result: Result<ChatReply, ClientError>) -> (ChannelId, MessageId, u64) {
    match result.unwrap() {
        ChatReply::Sent { channel_id, message_id, sent_at_ms } => (channel_id, message_id, sent_at_ms),
        other => panic!("unexpected {other:?}"),
    }
}

async fn direct(client: &Client, to: proto::AccountId, text: &str) -> Result<ChatReply, ClientError> {
    chat(client, ChatRequest::SendDirect { to, text: text.into() }).await
}

async fn history(
    client: &Client,
    channel_id: ChannelId,
    before: Option<MessageId>,
    limit: u32,
) -> Result<HistoryPage, ClientError> {
    match chat(client, ChatRequest::History { channel_id, before, limit }).await? {
        ChatReply::History(page) => Ok(page),
        other => panic!("unexpected {other:?}"),
    }
}

fn texts(page: &HistoryPage) -> Vec<&str> {
    page.messages.iter().map(|message| message.text.as_str()).collect()
}

/// The next chat event of this client (other events are skipped).
async fn next_chat_event(client: &Client) -> ChatEvent {
    loop {
        match tokio::time::timeout(PATIENCE, client.next_event()).await.expect("a chat event arrives") {
            Some(Event::Chat(event)) => return event,
            Some(_) => {}
            None => panic!("the connection ended"),
        }
    }
}

/// The text of the next chat message event of this client.
async fn next_message_text(client: &Client) -> String {
    match next_chat_event(client).await {
        ChatEvent::Message(message) => message.text,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn room_members_get_every_message_live_and_history_pages_by_cursor() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (ada, _) = gateway.player(&username("ada")).await;
    let (bob, _) = gateway.player(&username("bob")).await;
    let room = join(&ada, "Tavern").await;
    assert_eq!((room.kind, room.name.as_str()), (ChannelKind::Room, "tavern"));
    assert_eq!(join(&bob, "tavern").await.channel_id, room.channel_id, "one room per name");

    for n in 1..=5 {
        sent(send(&ada, room.channel_id, &format!("round {n}")).await).await;
    }
    for n in 1..=5 {
        assert_eq!(next_message_text(&bob).await, format!("round {n}"), "in send order");
        assert_eq!(next_message_text(&ada).await, format!("round {n}"), "the sender's connections too");
    }
    // Each event is encoded once for both members' connections (both speak bincode).
    assert_eq!(gateway.metric("gateway_events_queued_total").await, Some(10.0));
    assert_eq!(gateway.metric("gateway_event_encodings_total").await, Some(5.0));
    assert_eq!(gateway.metric("chat_messages_stored_total").await, Some(5.0));

    let first = history(&bob, room.channel_id, None, 2).await.unwrap();
    assert_eq!(texts(&first), ["round 5", "round 4"]);
    let second = history(&bob, room.channel_id, first.next_before, 2).await.unwrap();
    assert_eq!(texts(&second), ["round 3", "round 2"]);
    let last = history(&bob, room.channel_id, second.next_before, 2).await.unwrap();
    assert_eq!(texts(&last), ["round 1"]);
    assert_eq!((last.next_before, last.archived), (None, false));

    chat(&bob, ChatRequest::LeaveRoom { name: "TAVERN".into() }).await.unwrap();
    assert_eq!(code(send(&bob, room.channel_id, "hello?").await), Some(ErrorCode::Forbidden));
    assert_eq!(history(&bob, room.channel_id, None, 1).await.unwrap().messages.len(), 1, "rooms are public");
}

#[tokio::test]
async fn a_message_reaches_a_member_connected_to_another_gateway() {
    let world = World::new();
    let gateway_a = world.gateway().await;
    let gateway_b = world.gateway().await;
    let (ada, ada_session) = gateway_a.player(&username("ada")).await;
    let (bob, bob_session) = gateway_b.player(&username("bob")).await;

    let (channel, _, _) = sent(direct(&ada, bob_session.account_id, "from a to b").await).await;
    assert_eq!(next_message_text(&bob).await, "from a to b");
    // Two processes order messages of one millisecond arbitrarily; real clocks move.
    world.clock.advance(Duration::from_millis(1));
    sent(direct(&bob, ada_session.account_id, "from b to a").await).await;
    assert_eq!(next_message_text(&ada).await, "from a to b", "ada's own message first");
    assert_eq!(next_message_text(&ada).await, "from b to a");

    let room = join(&ada, "crossroads").await;
    join(&bob, "crossroads").await;
    sent(send(&bob, room.channel_id, "anyone on a?").await).await;
    assert_eq!(next_message_text(&ada).await, "anyone on a?");
    let page = history(&ada, channel, None, 10).await.unwrap();
    assert_eq!(texts(&page), ["from b to a", "from a to b"], "both gateways write and read one history");
}

#[tokio::test]
async fn only_group_members_read_and_post_and_only_the_owner_adds_and_removes() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (owner, owner_session) = gateway.player(&username("owner")).await;
    let (member, member_session) = gateway.player(&username("member")).await;
    let (outsider, outsider_session) = gateway.player(&username("outsider")).await;
    let group = match chat(&owner, ChatRequest::CreateGroup { name: "Raid night".into() }).await.unwrap() {
        ChatReply::Channel(group) => group,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!((group.kind, group.owner), (ChannelKind::Group, Some(owner_session.account_id)));
    let id = group.channel_id;

    let add = |account_id| ChatRequest::AddMember { channel_id: id, account_id };
    chat(&owner, add(member_session.account_id)).await.unwrap();
    assert_eq!(
        next_chat_event(&member).await,
        ChatEvent::Added(group.clone()),
        "the new member learns of it"
    );
    sent(send(&member, id, "glad to be here").await).await;

    assert_eq!(code(send(&outsider, id, "let me in").await), Some(ErrorCode::Forbidden));
    assert_eq!(
        code(history(&outsider, id, None, 10).await.map(ChatReply::History)),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(code(chat(&outsider, add(outsider_session.account_id)).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(chat(&member, add(outsider_session.account_id)).await), Some(ErrorCode::Forbidden));
    let kick_owner = ChatRequest::RemoveMember { channel_id: id, account_id: owner_session.account_id };
    assert_eq!(code(chat(&member, kick_owner).await), Some(ErrorCode::BadRequest));

    let remove = ChatRequest::RemoveMember { channel_id: id, account_id: member_session.account_id };
    chat(&owner, remove).await.unwrap();
    loop {
        // The member's own message comes first.
        if next_chat_event(&member).await == (ChatEvent::Removed { channel_id: id }) {
            break;
        }
    }
    assert_eq!(code(send(&member, id, "still here?").await), Some(ErrorCode::Forbidden));
    assert_eq!(texts(&history(&owner, id, None, 10).await.unwrap()), ["glad to be here"]);
    match chat(&owner, ChatRequest::Channels).await.unwrap() {
        ChatReply::Channels(channels) => assert_eq!(channels, std::slice::from_ref(&group)),
        other => panic!("unexpected {other:?}"),
    }

    // Removing someone who never was a member tells them nothing: the next event the outsider
    // gets is being added, not a `removed` from a group they never saw.
    let remove_outsider =
        ChatRequest::RemoveMember { channel_id: id, account_id: outsider_session.account_id };
    chat(&owner, remove_outsider).await.unwrap();
    chat(&owner, add(outsider_session.account_id)).await.unwrap();
    assert_eq!(next_chat_event(&outsider).await, ChatEvent::Added(group));
    // Adding a member again changes nothing and tells them nothing: their next event is the
    // owner's message.
    chat(&owner, add(outsider_session.account_id)).await.unwrap();
    sent(send(&owner, id, "welcome").await).await;
    match next_chat_event(&outsider).await {
        ChatEvent::Message(message) => assert_eq!(message.text, "welcome"),
        other => panic!("expected the owner's message, got {other:?}"),
    }
    // Only accounts that exist are added.
    let nobody = proto::AccountId(uuid::Uuid::now_v7());
    assert_eq!(code(chat(&owner, add(nobody)).await), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn direct_messages_make_one_channel_per_pair_that_only_the_pair_reads() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (ada, ada_session) = gateway.player(&username("ada")).await;
    let (bob, bob_session) = gateway.player(&username("bob")).await;
    let (eve, _) = gateway.player(&username("eve")).await;

    let (channel, _, _) = sent(direct(&ada, bob_session.account_id, "hi bob").await).await;
    let (reply_channel, _, _) = sent(direct(&bob, ada_session.account_id, "hi ada").await).await;
    assert_eq!(channel, reply_channel, "one channel for the pair, whoever writes first");
    assert_eq!(texts(&history(&bob, channel, None, 10).await.unwrap()), ["hi ada", "hi bob"]);
    // Eve can compute the pair's channel id, but it answers her as a channel that does not
    // exist, like that of a pair that never wrote: she learns nothing of who writes to whom.
    assert_eq!(
        code(history(&eve, channel, None, 10).await.map(ChatReply::History)),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(code(send(&eve, channel, "psst").await), Some(ErrorCode::NotFound));
    sent(send(&ada, channel, "send works on the channel too").await).await;

    let nobody = proto::AccountId(uuid::Uuid::now_v7());
    assert_eq!(code(direct(&ada, nobody, "hello?").await), Some(ErrorCode::NotFound));
    assert_eq!(code(direct(&ada, ada_session.account_id, "me").await), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn bad_chat_input_is_refused_with_its_code_and_text_is_cleaned() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (ada, _) = gateway.player(&username("ada")).await;
    let room = join(&ada, "plaza").await;

    let too_long = "x".repeat(proto::chat::TEXT_MAX_CHARS + 1);
    assert_eq!(code(send(&ada, room.channel_id, &too_long).await), Some(ErrorCode::BadRequest));
    assert_eq!(code(send(&ada, room.channel_id, " \u{0}\r\n\t").await), Some(ErrorCode::BadRequest));
    let unknown = ChannelId(uuid::Uuid::now_v7());
    assert_eq!(code(send(&ada, unknown, "anyone?").await), Some(ErrorCode::NotFound));
    assert_eq!(
        code(history(&ada, unknown, None, 10).await.map(ChatReply::History)),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(
        code(chat(&ada, ChatRequest::JoinRoom { name: "no spaces".into() }).await),
        Some(ErrorCode::BadRequest)
    );

    sent(send(&ada, room.channel_id, "  bell\u{7} and\u{202E} tab\t\nnext line ").await).await;
    assert_eq!(texts(&history(&ada, room.channel_id, None, 1).await.unwrap()), ["bell and tab\nnext line"]);

    // Invalid UTF-8 inside a bincode string: the frame decodes no further.
    let request = Request::Chat(ChatRequest::Send { channel_id: room.channel_id, text: "WXYZ".into() });
    let mut bytes = codec::encode(Encoding::Bincode, &ClientMessage { id: 91, request }).unwrap();
    let at = bytes.windows(4).position(|window| window == b"WXYZ").unwrap();
    bytes[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    ada.send_raw(Message::Binary(bytes.into())).await.unwrap();
    match ada.expect_response(91).await.unwrap() {
        Outcome::Error(body) => assert_eq!(body.code, ErrorCode::BadRequest),
        Outcome::Ok(reply) => panic!("unexpected {reply:?}"),
    }
    assert_eq!(history(&ada, room.channel_id, None, 10).await.unwrap().messages.len(), 1, "nothing stored");
}

#[tokio::test]
async fn the_send_rate_is_limited_per_player_by_window_of_the_clock() {
    let world = World::new();
    let config = gateway::GatewayConfig {
        chat_sends_per_window: 3,
        chat_send_window: Duration::from_secs(60),
        ..world.config()
    };
    let gateway = world.gateway_with(config).await;
    let (ada, _) = gateway.player(&username("ada")).await;
    let (bob, _) = gateway.player(&username("bob")).await;
    let room = join(&ada, "spam").await;
    join(&bob, "spam").await;
    for n in 0..3 {
        sent(send(&ada, room.channel_id, &format!("{n}")).await).await;
    }
    assert_eq!(code(send(&ada, room.channel_id, "one too many").await), Some(ErrorCode::RateLimited));
    sent(send(&bob, room.channel_id, "bob has his own budget").await).await;
    world.clock.advance(Duration::from_secs(60));
    sent(send(&ada, room.channel_id, "a new window").await).await;
    assert_eq!(history(&ada, room.channel_id, None, 100).await.unwrap().messages.len(), 5);
}

#[tokio::test]
async fn a_player_in_the_most_rooms_and_groups_is_refused_another_with_conflict() {
    let world = World::new();
    let config = gateway::GatewayConfig { chat_membership_changes_per_window: 1_000, ..world.config() };
    let gateway = world.gateway_with(config).await;
    let (ada, _) = gateway.player(&username("ada")).await;
    for n in 0..chat::DEFAULT_MAX_CHANNELS_PER_PLAYER {
        join(&ada, &format!("room-{n}")).await;
    }
    let refused = chat(&ada, ChatRequest::JoinRoom { name: "one-more".into() }).await;
    let error = refused.expect_err("past the cap");
    assert_eq!(error.code(), Some(ErrorCode::Conflict));
    assert!(error.to_string().contains("100 rooms and groups"), "{error}");
    let refused = chat(&ada, ChatRequest::CreateGroup { name: "one more".into() }).await;
    assert_eq!(code(refused), Some(ErrorCode::Conflict));
    chat(&ada, ChatRequest::LeaveRoom { name: "room-0".into() }).await.unwrap();
    join(&ada, "one-more").await;
}

#[tokio::test]
async fn joining_and_leaving_is_limited_per_player_by_window_of_the_clock() {
    let world = World::new();
    let config = gateway::GatewayConfig {
        chat_membership_changes_per_window: 4,
        chat_membership_window: Duration::from_secs(60),
        ..world.config()
    };
    let gateway = world.gateway_with(config).await;
    let (ada, _) = gateway.player(&username("ada")).await;
    let (bob, _) = gateway.player(&username("bob")).await;
    for _ in 0..2 {
        join(&ada, "revolving-door").await;
        chat(&ada, ChatRequest::LeaveRoom { name: "revolving-door".into() }).await.unwrap();
    }
    let refused = chat(&ada, ChatRequest::JoinRoom { name: "revolving-door".into() }).await;
    let error = refused.expect_err("past the membership rate");
    assert_eq!(error.code(), Some(ErrorCode::RateLimited));
    assert!(error.to_string().contains("joining and leaving too fast"), "{error}");
    let refused = chat(&ada, ChatRequest::CreateGroup { name: "another door".into() }).await;
    assert_eq!(code(refused), Some(ErrorCode::RateLimited), "groups count too");
    // Bob has his own budget.
    join(&bob, "revolving-door").await;
    world.clock.advance(Duration::from_secs(60));
    join(&ada, "revolving-door").await;
}

#[tokio::test]
async fn a_deleted_message_is_announced_and_leaves_history() {
    let world = World::new();
    let gateway = world.gateway().await;
    let (ada, _) = gateway.player(&username("ada")).await;
    let (bob, bob_session) = gateway.player(&username("bob")).await;
    let (channel, _, _) = sent(direct(&ada, bob_session.account_id, "keep").await).await;
    let (_, oops, _) = sent(direct(&ada, bob_session.account_id, "oops").await).await;
    next_message_text(&bob).await;
    next_message_text(&bob).await;

    let steal = ChatRequest::Delete { channel_id: channel, message_id: oops };
    assert_eq!(code(chat(&bob, steal.clone()).await), Some(ErrorCode::Forbidden));
    assert_eq!(
        chat(&ada, steal.clone()).await.unwrap(),
        ChatReply::Deleted { channel_id: channel, message_id: oops }
    );
    assert_eq!(next_chat_event(&bob).await, ChatEvent::Deleted { channel_id: channel, message_id: oops });
    assert_eq!(texts(&history(&bob, channel, None, 10).await.unwrap()), ["keep"]);
    assert_eq!(code(chat(&ada, steal).await), Some(ErrorCode::NotFound), "already deleted");
}

#[tokio::test]
async fn messages_either_side_of_new_year_go_to_their_shards_and_page_seamlessly() {
    let world = World::new();
    world.clock.set(LAST_MS_OF_2030);
    let gateway = world.gateway().await;
    let data = world.data_dir.path();
    assert!(
        data.join("chat-2030.db").exists() && data.join("chat-2031.db").exists(),
        "provisioned at start-up"
    );
    let (ada, _) = gateway.player(&username("ada")).await;
    let (_, bob_session) = gateway.player(&username("bob")).await;

    let (channel, old_id, old_ms) = sent(direct(&ada, bob_session.account_id, "last of 2030").await).await;
    world.clock.advance(Duration::from_millis(1));
    let (_, new_id, new_ms) = sent(direct(&ada, bob_session.account_id, "first of 2031").await).await;
    assert_eq!((old_ms, new_ms), (LAST_MS_OF_2030, LAST_MS_OF_2030 + 1));
    assert!(old_id < new_id, "ids sort by time");
    let count = |year: i32| {
        let conn = shard::rusqlite::Connection::open(data.join(format!("chat-{year}.db"))).unwrap();
        conn.query_row("SELECT count(*) FROM messages", [], |row| row.get::<_, i64>(0)).unwrap()
    };
    assert_eq!((count(2030), count(2031)), (1, 1));
    assert!(data.join("chat-2032.db").exists(), "the next year is provisioned ahead of its boundary");

    let both = history(&ada, channel, None, 10).await.unwrap();
    assert_eq!(texts(&both), ["first of 2031", "last of 2030"]);
    let newest = history(&ada, channel, None, 1).await.unwrap();
    assert_eq!(texts(&newest), ["first of 2031"]);
    let older = history(&ada, channel, newest.next_before, 1).await.unwrap();
    assert_eq!(texts(&older), ["last of 2030"]);
}

#[tokio::test]
async fn history_reaching_a_retired_year_ends_with_the_archived_marker() {
    let world = World::new();
    world.clock.set(LAST_MS_OF_2030 - 1_000);
    let gateway = world.gateway().await;
    let (ada, _) = gateway.player(&username("ada")).await;
    let (_, bob_session) = gateway.player(&username("bob")).await;
    let (channel, old_id, _) = sent(direct(&ada, bob_session.account_id, "old news").await).await;
    world.clock.set(LAST_MS_OF_2030 + 1_000);
    sent(direct(&ada, bob_session.account_id, "fresh").await).await;

    let data = world.data_dir.path();
    let archive = chat::ChatConfig::default().archive_dir(data);
    let shard_config = shard::ShardConfig::default();
    let now_ms = LAST_MS_OF_2030 + 1_000;
    let current = chat::lifecycle::retire(data, &archive, 2031, now_ms, &shard_config).await.unwrap_err();
    assert!(matches!(current, chat::ChatError::Refused(_)), "{current:?}");
    let report = chat::lifecycle::retire(data, &archive, 2030, now_ms, &shard_config).await.unwrap();
    assert_eq!(report.messages, 1);

    let page = history(&ada, channel, None, 10).await.unwrap();
    assert_eq!(texts(&page), ["fresh"]);
    assert!(page.archived, "older history is archived");
    let delete = ChatRequest::Delete { channel_id: channel, message_id: old_id };
    assert_eq!(code(chat(&ada, delete).await), Some(ErrorCode::Conflict));
}

#[tokio::test]
async fn a_send_stamped_in_a_retired_year_is_refused_and_the_archive_holds_every_acknowledged_one() {
    let world = World::new();
    world.clock.set(LAST_MS_OF_2030 - 1_000);
    let gateway = world.gateway().await;
    let (ada, _) = gateway.player(&username("ada")).await;
    let (_, bob_session) = gateway.player(&username("bob")).await;
    sent(direct(&ada, bob_session.account_id, "old news").await).await;

    let data = world.data_dir.path();
    let archive = chat::ChatConfig::default().archive_dir(data);
    let shard_config = shard::ShardConfig::default();
    let report =
        chat::lifecycle::retire(data, &archive, 2030, LAST_MS_OF_2030 + 1_000, &shard_config).await.unwrap();
    assert_eq!(report.messages, 1);

    // This gateway's clock has not reached 2031 yet (skew between machines is allowed), and it
    // still has 2030's shard open from the first send.
    let late = direct(&ada, bob_session.account_id, "late").await;
    assert_eq!(code(late), Some(ErrorCode::Conflict), "refused, not stored in the removed file");
    let shards = chat::lifecycle::list(data, &archive).await.unwrap();
    let years: Vec<_> = shards.iter().map(|shard| (shard.year, shard.state, shard.messages)).collect();
    assert_eq!(years[0], (2030, chat::lifecycle::ShardState::Archived, 1));
    assert_ne!(years[1].0, 2030, "2030 is not live again");
}

/// The value of one `/metrics` line of the gateway behind `admin_addr`, by its name.
async fn metric(admin_addr: std::net::SocketAddr, name: &str) -> f64 {
    let (_, text) = admin(admin_addr, "GET", "/metrics", None, "").await;
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} on /metrics"))
}

#[tokio::test]
async fn a_member_removed_from_a_group_is_refused_at_once_across_gateway_processes() {
    let world = World::new();
    // Member lists cached for an hour: only the invalidation between the processes can make the
    // second one notice the removal within the test.
    let config = world.data_dir.path().join("chat.toml");
    std::fs::write(&config, "chat_member_cache_ttl = 3600.0\n").unwrap();
    let config = ["--config", config.to_str().unwrap()];
    let first = GatewayProcess::start_with(&world, &config).await;
    let second = GatewayProcess::start_with(&world, &config).await;
    let (owner, _) = first.player(&username("owner")).await;
    let (member, member_session) = second.player(&username("member")).await;

    let group = match chat(&owner, ChatRequest::CreateGroup { name: "guild".into() }).await.unwrap() {
        ChatReply::Channel(group) => group.channel_id,
        other => panic!("unexpected {other:?}"),
    };
    let add = ChatRequest::AddMember { channel_id: group, account_id: member_session.account_id };
    chat(&owner, add).await.unwrap();
    assert!(matches!(next_chat_event(&member).await, ChatEvent::Added(_)));
    // The second process caches the group with the member in it.
    sent(send(&member, group, "hello from the second").await).await;
    assert_eq!(texts(&history(&member, group, None, 10).await.unwrap()), ["hello from the second"]);

    let remove = ChatRequest::RemoveMember { channel_id: group, account_id: member_session.account_id };
    chat(&owner, remove).await.unwrap();
    // Wait until the second process has applied every invalidation the first published.
    let published = metric(first.admin, "chat_member_invalidations_published_total").await;
    assert!(published >= 2.0, "the addition and the removal were published");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(second.admin, "chat_member_invalidations_received_total").await < published {
        assert!(tokio::time::Instant::now() < deadline, "the second process hears of the removal");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    assert_eq!(code(send(&member, group, "still here?").await), Some(ErrorCode::Forbidden));
    assert_eq!(
        code(history(&member, group, None, 10).await.map(ChatReply::History)),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        texts(&history(&owner, group, None, 10).await.unwrap()),
        ["hello from the second"],
        "the refused message was not stored"
    );
}
