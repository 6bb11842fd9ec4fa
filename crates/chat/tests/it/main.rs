//! The chat domain against real shards in a temporary directory, with the embedded key-value
//! store and a clock moved by hand: group commit, the drain at shutdown, the year boundary,
//! permissions, soft delete, the send rate, the membership-change rate, membership limits (also
//! joins racing for a room's last place), and the shard lifecycle (also writes racing a retire,
//! and a retire interrupted and run again).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::sync::Arc;
use std::time::Duration;

use chat::lifecycle::{self, RetireOutcome, ShardState};
use chat::{ChannelKind, Chat, ChatConfig, ChatError, GroupCommitter, year_start_ms};
use clock::{Clock, ManualClock};
use kv::Kv;
use shard::ShardConfig;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Mid-2026: far from any year boundary.
const JUNE_2026_MS: u64 = 1_780_000_000_000;

struct World {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    kv: Kv,
    shutdown: CancellationToken,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let kv = Kv::embedded(&dir.path().join("kv"), "t:").unwrap();
        World { dir, clock: Arc::new(ManualClock::at(JUNE_2026_MS)), kv, shutdown: CancellationToken::new() }
    }

    fn config() -> ChatConfig {
        ChatConfig { sends_per_window: 1_000_000, ..ChatConfig::default() }
    }

    /// A chat domain with its writer not yet running.
    async fn open_idle(&self, config: ChatConfig) -> (Chat, GroupCommitter) {
        Chat::open(self.dir.path(), self.kv.clone(), self.clock.clone(), config).await.unwrap()
    }

    /// A chat domain with its writer running until the world ends.
    async fn chat_with(&self, config: ChatConfig) -> Chat {
        let (chat, committer) = self.open_idle(config).await;
        tokio::spawn(committer.run(self.shutdown.clone()));
        chat
    }

    async fn chat(&self) -> Chat {
        self.chat_with(World::config()).await
    }

    fn archive_dir(&self) -> std::path::PathBuf {
        World::config().archive_dir(self.dir.path())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn texts(page: &chat::HistoryPage) -> Vec<&str> {
    page.messages.iter().map(|message| message.text.as_str()).collect()
}

#[tokio::test]
async fn concurrent_sends_share_group_commits_and_all_reach_history() {
    let world = World::new();
    let chat = world.chat().await;
    let players: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    let mut room = None;
    for &player in &players {
        room = Some(chat.join_room(player, "lobby").await.unwrap().id);
    }
    let room = room.unwrap();
    let mut sends = tokio::task::JoinSet::new();
    for (n, &player) in players.iter().enumerate() {
        for k in 0..20 {
            let chat = chat.clone();
            sends.spawn(async move { chat.send(player, room, &format!("{n}-{k}")).await });
        }
    }
    while let Some(sent) = sends.join_next().await {
        let delivery = sent.unwrap().unwrap();
        assert_eq!(delivery.recipients.len(), players.len(), "every member is told");
    }
    let (stored, commits) = chat.stats().snapshot();
    assert_eq!(stored, 400);
    assert!(commits < 400, "400 messages in {commits} commits: batching did not happen");

    let mut seen = 0;
    let mut before = None;
    loop {
        let page = chat.history(players[0], room, before, 100).await.unwrap();
        assert!(page.messages.windows(2).all(|pair| pair[0].id > pair[1].id), "newest first");
        seen += page.messages.len();
        match page.next_before {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, 400);
}

#[tokio::test]
async fn shutdown_commits_every_queued_message_before_the_writer_returns() {
    let world = World::new();
    let (chat, committer) = world.open_idle(World::config()).await;
    let sender = Uuid::now_v7();
    let room = chat.join_room(sender, "lobby").await.unwrap().id;
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..50 {
        let chat = chat.clone();
        sends.spawn(async move { chat.send(sender, room, &format!("queued {n}")).await });
    }
    // Let every send reach the queue while no writer runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    world.shutdown.cancel();
    committer.run(world.shutdown.clone()).await;
    while let Some(sent) = sends.join_next().await {
        sent.unwrap().unwrap();
    }
    assert_eq!(chat.stats().snapshot().0, 50);
    let late = chat.send(sender, room, "too late").await.unwrap_err();
    assert!(matches!(late, ChatError::ShuttingDown), "{late:?}");
}

#[tokio::test]
async fn messages_go_to_the_shard_of_their_year_and_history_pages_across_the_boundary() {
    let world = World::new();
    let new_year = year_start_ms(2027);
    world.clock.set(new_year - 1);
    let chat = world.chat().await;
    let files = |year: i32| world.dir.path().join(chat::shard_file_name(year)).exists();
    assert!(files(2026) && files(2027), "the current and the next year are provisioned at start-up");
    assert!(!files(2028));

    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let last_of_2026 = chat.send_direct(ada, bob, "23:59:59.999").await.unwrap().value;
    world.clock.set(new_year);
    let first_of_2027 = chat.send_direct(bob, ada, "00:00:00.000").await.unwrap().value;
    assert_eq!((last_of_2026.id.year(), first_of_2027.id.year()), (2026, 2027));
    assert_eq!(first_of_2027.sent_at_ms, new_year);
    assert!(files(2028), "the first commit of 2027 provisions 2028");

    let shards = lifecycle::list(world.dir.path(), &world.archive_dir()).await.unwrap();
    let counts: Vec<(i32, u64)> = shards.iter().map(|shard| (shard.year, shard.messages)).collect();
    assert_eq!(counts, [(2026, 1), (2027, 1), (2028, 0)]);

    let channel = last_of_2026.channel_id;
    let both = chat.history(ada, channel, None, 10).await.unwrap();
    assert_eq!(texts(&both), ["00:00:00.000", "23:59:59.999"]);
    assert_eq!((both.next_before, both.archived), (None, false));

    let first = chat.history(ada, channel, None, 1).await.unwrap();
    assert_eq!(texts(&first), ["00:00:00.000"]);
    let second = chat.history(bob, channel, first.next_before, 1).await.unwrap();
    assert_eq!(texts(&second), ["23:59:59.999"]);
    let rest = chat.history(bob, channel, second.next_before, 1).await.unwrap();
    assert!(rest.messages.is_empty());
}

#[tokio::test]
async fn the_newest_page_skips_next_years_empty_shard_except_just_before_new_year() {
    let world = World::new();
    let chat = world.chat().await;
    assert!(world.dir.path().join(chat::shard_file_name(2027)).exists(), "provisioned ahead");
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let channel = chat.send_direct(ada, bob, "june").await.unwrap().value.channel_id;
    let reads = |chat: &Chat| chat.stats().history_shard_reads.load(std::sync::atomic::Ordering::Relaxed);

    let check = |now_ms: u64, expected_reads: u64| {
        let (chat, world) = (&chat, &world);
        async move {
            world.clock.set(now_ms);
            let before = reads(chat);
            let page = chat.history(ada, channel, None, 10).await.unwrap();
            assert_eq!(texts(&page), ["june"], "at {now_ms}");
            assert_eq!(reads(chat) - before, expected_reads, "shards read at {now_ms}");
        }
    };
    // 2026 only: 2027 is empty and no year before 2026 has a shard.
    check(JUNE_2026_MS, 1).await;
    // Within the clock-skew allowance of new year another process may already write 2027.
    check(year_start_ms(2027) - chat::CLOCK_SKEW_ALLOWANCE_MS, 2).await;
    check(year_start_ms(2027) - chat::CLOCK_SKEW_ALLOWANCE_MS - 1, 1).await;
}

#[tokio::test]
async fn a_retired_year_is_archived_verified_and_ends_history_with_a_marker() {
    let world = World::new();
    world.clock.set(year_start_ms(2026) + 1000);
    let chat = world.chat().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    for n in 0..3 {
        chat.send_direct(ada, bob, &format!("old {n}")).await.unwrap();
    }
    let config = ShardConfig::default();
    let (data, archive) = (world.dir.path(), world.archive_dir());
    let refused = lifecycle::retire(data, &archive, 2026, world.clock.now_ms(), &config).await.unwrap_err();
    assert!(matches!(refused, ChatError::Refused(_)), "the current year is refused: {refused:?}");

    world.clock.set(year_start_ms(2027) + 5);
    chat.send_direct(bob, ada, "new").await.unwrap();
    let report = lifecycle::retire(data, &archive, 2026, world.clock.now_ms(), &config).await.unwrap();
    assert_eq!(report.messages, 3);
    assert!(!data.join("chat-2026.db").exists() && !data.join("chat-2026.db-wal").exists());
    assert!(std::fs::metadata(&report.archive_path).unwrap().permissions().readonly());

    let shards = lifecycle::list(data, &archive).await.unwrap();
    let states: Vec<(i32, ShardState, u64)> = shards.iter().map(|s| (s.year, s.state, s.messages)).collect();
    assert_eq!(
        states,
        [(2026, ShardState::Archived, 3), (2027, ShardState::Live, 1), (2028, ShardState::Live, 0)]
    );

    let channel = chat::direct_channel_id(ada, bob);
    let page = chat.history(ada, channel, None, 10).await.unwrap();
    assert_eq!(texts(&page), ["new"]);
    assert!(page.archived, "older history is in the archive");
    // A group made after the retired year has no archived history to hint at.
    world.clock.set(year_start_ms(2027) + 86_400_000);
    let group = chat.create_group(ada, "after the archive").await.unwrap();
    chat.send(ada, group.id, "first").await.unwrap();
    let page = chat.history(ada, group.id, None, 10).await.unwrap();
    assert_eq!((texts(&page), page.archived), (vec!["first"], false));
    let again = lifecycle::retire(data, &archive, 2026, world.clock.now_ms(), &config).await.unwrap();
    assert_eq!((again.outcome, again.messages), (RetireOutcome::AlreadyRetired, 3), "a re-run is a no-op");
    let now = world.clock.now_ms();
    assert!(matches!(
        lifecycle::provision(data, &archive, 2026, now, &config).await,
        Err(ChatError::Refused(_))
    ));
    let provisioned = lifecycle::provision(data, &archive, 2030, now, &config).await.unwrap();
    assert!(provisioned.exists());
}

#[tokio::test]
async fn a_year_retires_from_a_data_directory_whose_name_has_uri_characters() {
    let world = World::new();
    let data = world.dir.path().join("odd ?#% name");
    let archive = data.join("archive");
    world.clock.set(year_start_ms(2026) + 1000);
    let (chat, committer) =
        Chat::open(&data, world.kv.clone(), world.clock.clone(), World::config()).await.unwrap();
    tokio::spawn(committer.run(world.shutdown.clone()));
    chat.send_direct(Uuid::now_v7(), Uuid::now_v7(), "kept").await.unwrap();
    world.clock.set(year_start_ms(2027) + 1000);
    let report = lifecycle::retire(&data, &archive, 2026, world.clock.now_ms(), &ShardConfig::default())
        .await
        .unwrap();
    assert_eq!(report.messages, 1);
}

/// The state a retire leaves when it stops right after marking the live shard (`keep_archive`
/// false) or after renaming its archive into place (true): the marked shard is still live. The
/// archive is a copy of the marked shard, so copying it back recreates the shard as it was.
fn unretire(data: &std::path::Path, archive: &std::path::Path, year: i32, keep_archive: bool) {
    let (live, archived) =
        (data.join(chat::shard_file_name(year)), archive.join(chat::shard_file_name(year)));
    std::fs::copy(&archived, &live).unwrap();
    let mut permissions = std::fs::metadata(&live).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false, reason = "a test file owned by the test")]
    permissions.set_readonly(false);
    std::fs::set_permissions(&live, permissions).unwrap();
    if !keep_archive {
        std::fs::remove_file(&archived).unwrap();
    }
}

fn states(shards: &[lifecycle::YearShard]) -> Vec<(i32, ShardState, u64)> {
    shards.iter().map(|s| (s.year, s.state, s.messages)).collect()
}

#[tokio::test]
async fn writes_to_a_year_being_retired_are_refused_and_every_acknowledged_one_is_archived() {
    let world = World::new();
    world.clock.set(year_start_ms(2027) - 10_000);
    let chat = world.chat().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let channel = chat::direct_channel_id(ada, bob);
    chat.send_direct(ada, bob, "kept").await.unwrap();
    let oops = chat.send_direct(ada, bob, "oops").await.unwrap().value;
    world.clock.set(year_start_ms(2027) + 5_000);
    let config = ShardConfig::default();
    let (data, archive) = (world.dir.path(), world.archive_dir());
    let report = lifecycle::retire(data, &archive, 2026, world.clock.now_ms(), &config).await.unwrap();
    assert_eq!((report.outcome, report.messages), (RetireOutcome::Retired, 2));

    // A clock behind by a few seconds stamps a send in 2026, whose shard this process still has
    // open: it must be refused, not stored in the removed file.
    world.clock.set(year_start_ms(2027) - 1_000);
    let late = chat.send_direct(bob, ada, "late").await;
    assert!(matches!(late, Err(ChatError::Archived(2026))), "{late:?}");
    assert!(matches!(chat.delete(ada, channel, oops.id).await, Err(ChatError::Archived(2026))));

    // Stopped right after the mark: the shard is live, readable, and takes no write.
    unretire(data, &archive, 2026, false);
    let late = chat.send_direct(bob, ada, "late").await;
    assert!(matches!(late, Err(ChatError::Archived(2026))), "{late:?}");
    let deleted = chat.delete(ada, channel, oops.id).await;
    assert!(matches!(deleted, Err(ChatError::Archived(2026))), "{deleted:?}");
    assert_eq!(texts(&chat.history(ada, channel, None, 10).await.unwrap()), ["oops", "kept"]);

    world.clock.set(year_start_ms(2027) + 5_000);
    let report = lifecycle::retire(data, &archive, 2026, world.clock.now_ms(), &config).await.unwrap();
    assert_eq!((report.outcome, report.messages), (RetireOutcome::Retired, 2));
    let shards = lifecycle::list(data, &archive).await.unwrap();
    assert_eq!(states(&shards)[0], (2026, ShardState::Archived, 2));
}

#[tokio::test]
async fn an_interrupted_retire_is_finished_by_running_it_again() {
    let world = World::new();
    world.clock.set(year_start_ms(2027) - 10_000);
    let chat = world.chat().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    for n in 0..3 {
        chat.send_direct(ada, bob, &format!("old {n}")).await.unwrap();
    }
    world.clock.set(year_start_ms(2027) + 5_000);
    let config = ShardConfig::default();
    let (data, archive) = (world.dir.path(), world.archive_dir());
    lifecycle::retire(data, &archive, 2026, world.clock.now_ms(), &config).await.unwrap();

    // Stopped after the archive was renamed into place, before the live files were removed.
    unretire(data, &archive, 2026, true);
    let shards = lifecycle::list(data, &archive).await.unwrap();
    assert_eq!(states(&shards)[..2], [(2026, ShardState::Live, 3), (2026, ShardState::Archived, 3)]);
    let report = lifecycle::retire(data, &archive, 2026, world.clock.now_ms(), &config).await.unwrap();
    assert_eq!((report.outcome, report.messages), (RetireOutcome::Resumed, 3));
    let shards = lifecycle::list(data, &archive).await.unwrap();
    assert_eq!(states(&shards)[0], (2026, ShardState::Archived, 3));
    assert_eq!(states(&shards)[1].0, 2027, "2026 is no longer live");

    // Stopped after removing the database but not its companions.
    let companions = [data.join("chat-2026.db-wal"), data.join("chat-2026.db-shm")];
    for companion in &companions {
        std::fs::write(companion, b"").unwrap();
    }
    let report = lifecycle::retire(data, &archive, 2026, world.clock.now_ms(), &config).await.unwrap();
    assert_eq!((report.outcome, report.messages), (RetireOutcome::AlreadyRetired, 3));
    assert!(companions.iter().all(|companion| !companion.exists()), "leftovers are removed");
    let page = chat.history(ada, chat::direct_channel_id(ada, bob), None, 10).await.unwrap();
    assert!(page.messages.is_empty() && page.archived);
}

#[tokio::test]
async fn only_members_read_and_post_and_only_the_owner_manages_a_group() {
    let world = World::new();
    let chat = world.chat().await;
    let (owner, member, outsider) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let group = chat.create_group(owner, "Raid night").await.unwrap();
    assert_eq!((group.kind, group.owner), (ChannelKind::Group, Some(owner)));
    let added = chat.add_member(owner, group.id, member).await.unwrap();
    assert!(added.recipients.contains(&member));
    let again = chat.add_member(owner, group.id, member).await.unwrap();
    assert!(again.recipients.is_empty(), "adding a member again tells nobody");
    chat.send(member, group.id, "hi").await.unwrap();

    let check = |result: Result<_, ChatError>, expected: &str| {
        let error = result.map(drop).unwrap_err();
        assert!(format!("{error:?}").starts_with(expected), "{error:?} is not {expected}");
    };
    check(chat.send(outsider, group.id, "let me in").await.map(drop), "NotMember");
    check(chat.history(outsider, group.id, None, 10).await.map(drop), "NotMember");
    check(chat.add_member(outsider, group.id, outsider).await.map(drop), "NotMember");
    check(chat.add_member(member, group.id, outsider).await.map(drop), "NotAllowed");
    check(chat.remove_member(member, group.id, owner).await.map(drop), "InvalidRequest");
    check(chat.send(owner, chat::ChannelId(Uuid::now_v7()), "void").await.map(drop), "UnknownChannel");

    chat.remove_member(owner, group.id, member).await.unwrap();
    check(chat.send(member, group.id, "still here?").await.map(drop), "NotMember");

    // Rooms: anyone reads, members post.
    let room = chat.join_room(owner, "Plaza").await.unwrap();
    assert_eq!(chat.join_room(member, "plaza").await.unwrap().id, room.id, "names ignore case");
    chat.send(member, room.id, "hello plaza").await.unwrap();
    assert_eq!(texts(&chat.history(outsider, room.id, None, 10).await.unwrap()), ["hello plaza"]);
    check(chat.send(outsider, room.id, "lurker").await.map(drop), "NotMember");
    chat.leave_room(member, "plaza").await.unwrap();
    check(chat.send(member, room.id, "gone").await.map(drop), "NotMember");
    let mine: Vec<_> = chat.channels_of(owner).await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(mine, [group.id, room.id]);
}

#[tokio::test]
async fn a_deleted_message_leaves_history_and_only_its_sender_deletes_it() {
    let world = World::new();
    let chat = world.chat().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let keep = chat.send_direct(ada, bob, "keep").await.unwrap().value;
    let oops = chat.send_direct(ada, bob, "oops").await.unwrap().value;
    let channel = oops.channel_id;
    assert!(matches!(chat.delete(bob, channel, oops.id).await, Err(ChatError::NotAllowed(_))));
    let deleted = chat.delete(ada, channel, oops.id).await.unwrap();
    assert_eq!(deleted.value, (channel, oops.id));
    assert_eq!(deleted.recipients.len(), 2);
    assert_eq!(texts(&chat.history(bob, channel, None, 10).await.unwrap()), ["keep"]);
    assert!(matches!(chat.delete(ada, channel, oops.id).await, Err(ChatError::UnknownMessage)));
    assert!(matches!(
        chat.delete(ada, channel, chat::MessageId(Uuid::now_v7())).await,
        Err(ChatError::UnknownMessage)
    ));
    assert_eq!(keep.text, "keep");
}

#[tokio::test]
async fn the_send_rate_is_per_player_and_per_window_of_the_clock() {
    let world = World::new();
    let config =
        ChatConfig { sends_per_window: 2, send_window: Duration::from_secs(10), ..ChatConfig::default() };
    let chat = world.chat_with(config).await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    world.clock.set(JUNE_2026_MS / 10_000 * 10_000);
    chat.send_direct(ada, bob, "1").await.unwrap();
    chat.send_direct(ada, bob, "2").await.unwrap();
    assert!(matches!(chat.send_direct(ada, bob, "3").await, Err(ChatError::RateLimited)));
    let carol = Uuid::now_v7();
    assert!(matches!(chat.send_direct(ada, carol, "hi").await, Err(ChatError::RateLimited)));
    assert!(!chat.has_direct_channel(ada, carol).await.unwrap(), "a refused first message makes no channel");
    chat.send_direct(bob, ada, "bob is not limited by ada's sends").await.unwrap();
    world.clock.advance(Duration::from_secs(10));
    chat.send_direct(ada, bob, "next window").await.unwrap();
    let history = chat.history(ada, chat::direct_channel_id(ada, bob), None, 10).await.unwrap();
    assert_eq!(history.messages.len(), 4, "a refused send stores nothing");
}

#[tokio::test]
async fn text_is_cleaned_before_it_is_stored_and_bad_text_is_refused() {
    let world = World::new();
    let chat = world.chat().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let sent = chat.send_direct(ada, bob, "  two\u{0}\nlines\u{7}\r ").await.unwrap().value;
    assert_eq!(sent.text, "two\nlines");
    for bad in ["", " \u{1}\r\n ", &"x".repeat(chat::MAX_TEXT_CHARS + 1)] {
        assert!(matches!(chat.send_direct(ada, bob, bad).await, Err(ChatError::InvalidText(_))), "{bad:?}");
    }
    assert!(
        chat.send_direct(ada, bob, &"é".repeat(chat::MAX_TEXT_CHARS)).await.is_ok(),
        "characters, not bytes"
    );
    assert!(matches!(chat.send_direct(ada, ada, "me").await, Err(ChatError::InvalidRequest(_))));
}

#[tokio::test]
async fn outsiders_cannot_tell_whether_two_players_have_a_direct_channel() {
    let world = World::new();
    let chat = world.chat().await;
    let (ada, bob, carol, eve) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    chat.send_direct(ada, bob, "just between us").await.unwrap();
    // Anyone can compute a pair's channel id from the two account ids, so an outsider's request
    // must answer the same whether the pair ever wrote or not.
    for pair in [chat::direct_channel_id(ada, bob), chat::direct_channel_id(ada, carol)] {
        let read = chat.history(eve, pair, None, 10).await;
        assert!(matches!(read, Err(ChatError::UnknownChannel)), "{read:?}");
        let posted = chat.send(eve, pair, "hello?").await;
        assert!(matches!(posted, Err(ChatError::UnknownChannel)), "{posted:?}");
        let deleted = chat.delete(eve, pair, chat::MessageId(Uuid::now_v7())).await;
        assert!(matches!(deleted, Err(ChatError::UnknownChannel)), "{deleted:?}");
        let added = chat.add_member(eve, pair, eve).await;
        assert!(matches!(added, Err(ChatError::UnknownChannel)), "{added:?}");
        let removed = chat.remove_member(eve, pair, eve).await;
        assert!(matches!(removed, Err(ChatError::UnknownChannel)), "{removed:?}");
    }
    let page = chat.history(bob, chat::direct_channel_id(ada, bob), None, 10).await.unwrap();
    assert_eq!(texts(&page), ["just between us"], "the pair still reads it");
}

#[tokio::test]
async fn a_member_removed_while_a_message_waits_for_its_commit_is_not_told_of_it() {
    let world = World::new();
    let (chat, committer) = world.open_idle(World::config()).await;
    let (owner, member) = (Uuid::now_v7(), Uuid::now_v7());
    let group = chat.create_group(owner, "guild").await.unwrap().id;
    chat.add_member(owner, group, member).await.unwrap();
    let sending = {
        let chat = chat.clone();
        tokio::spawn(async move { chat.send(owner, group, "after you left").await })
    };
    // The message waits in the queue (no writer runs yet) while the member is removed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sending.is_finished());
    chat.remove_member(owner, group, member).await.unwrap();
    tokio::spawn(committer.run(world.shutdown.clone()));
    let delivery = sending.await.unwrap().unwrap();
    assert_eq!(delivery.recipients, [owner], "stored after the removal, so not for the removed member");
    assert!(matches!(chat.history(member, group, None, 10).await, Err(ChatError::NotMember)));
}

fn is_limit(result: &Result<impl std::fmt::Debug, ChatError>) -> bool {
    matches!(result, Err(ChatError::LimitReached(_)))
}

#[tokio::test]
async fn full_rooms_and_groups_and_a_player_in_the_most_channels_are_refused_and_change_nothing() {
    let world = World::new();
    let config = ChatConfig {
        max_room_members: 2,
        max_group_members: 2,
        max_channels_per_player: 3,
        ..World::config()
    };
    let chat = world.chat_with(config).await;
    let (ada, bob, carol) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

    let room = chat.join_room(ada, "plaza").await.unwrap().id;
    chat.join_room(bob, "plaza").await.unwrap();
    let full = chat.join_room(carol, "plaza").await;
    assert!(is_limit(&full), "{full:?}");
    assert_eq!(chat.join_room(bob, "plaza").await.unwrap().id, room, "a member joins again at the cap");
    chat.leave_room(bob, "plaza").await.unwrap();
    chat.join_room(carol, "plaza").await.unwrap();

    let group = chat.create_group(ada, "duo").await.unwrap().id;
    chat.add_member(ada, group, bob).await.unwrap();
    let full = chat.add_member(ada, group, carol).await;
    assert!(is_limit(&full), "{full:?}");
    assert!(chat.add_member(ada, group, bob).await.unwrap().recipients.is_empty(), "already in: no change");

    // Ada is in the room and the group: one more, then no further room, group or invitation.
    chat.join_room(ada, "third").await.unwrap();
    assert!(is_limit(&chat.join_room(ada, "fourth").await));
    assert!(is_limit(&chat.create_group(ada, "one too many").await));
    let bobs = chat.create_group(bob, "bob's").await.unwrap().id;
    assert!(is_limit(&chat.add_member(bob, bobs, ada).await));
    chat.send_direct(ada, carol, "direct channels do not count").await.unwrap();

    let ada_channels = chat.channels_of(ada).await.unwrap();
    assert_eq!(ada_channels.len(), 4, "the room, the group, the third room and the direct channel");
    assert!(
        chat.leave_room(carol, "fourth").await.is_err_and(|error| matches!(error, ChatError::UnknownChannel)),
        "a refused first join creates no room"
    );
}

#[tokio::test]
async fn concurrent_joins_at_a_rooms_cap_fill_it_exactly() {
    let world = World::new();
    let chat = world.chat_with(ChatConfig { max_room_members: 5, ..World::config() }).await;
    let joins: Vec<_> = (0..20)
        .map(|_| {
            let chat = chat.clone();
            tokio::spawn(async move { chat.join_room(Uuid::now_v7(), "crowded").await })
        })
        .collect();
    let mut n_joined = 0;
    for join in joins {
        match join.await.unwrap() {
            Ok(_) => n_joined += 1,
            Err(error) => assert!(matches!(error, ChatError::LimitReached(_)), "{error:?}"),
        }
    }
    assert_eq!(n_joined, 5);
}

#[tokio::test]
async fn membership_changes_are_limited_per_player_and_per_window_of_the_clock() {
    let world = World::new();
    let config = ChatConfig {
        membership_changes_per_window: 3,
        membership_window: Duration::from_secs(10),
        ..World::config()
    };
    let chat = world.chat_with(config).await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    world.clock.set(JUNE_2026_MS / 10_000 * 10_000);
    chat.join_room(ada, "door").await.unwrap();
    chat.leave_room(ada, "door").await.unwrap();
    let group = chat.create_group(ada, "guild").await.unwrap().id;
    assert!(matches!(chat.join_room(ada, "door").await, Err(ChatError::MembershipRateLimited)));
    assert!(matches!(chat.add_member(ada, group, bob).await, Err(ChatError::MembershipRateLimited)));
    assert!(!chat.channels_of(bob).await.unwrap().iter().any(|c| c.id == group), "a refused add adds nobody");
    chat.join_room(bob, "door").await.unwrap();
    world.clock.advance(Duration::from_secs(10));
    chat.add_member(ada, group, bob).await.unwrap();
    chat.remove_member(bob, group, bob).await.unwrap();
}

/// A process that sent nothing since 2026 has no shard of 2028 open; another, started in 2028,
/// writes there. The first one's newest page still starts in the clock's year.
#[tokio::test]
async fn the_newest_page_reads_the_clocks_year_even_where_this_process_never_opened_it() {
    let world = World::new();
    let quiet = world.chat().await;
    world.clock.set(year_start_ms(2028) + 86_400_000);
    let busy = world.chat().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let sent = busy.send_direct(ada, bob, "happy 2028").await.unwrap().value;
    let page = quiet.history(bob, sent.channel_id, None, 10).await.unwrap();
    assert_eq!(texts(&page), ["happy 2028"]);
}

#[tokio::test]
async fn only_a_change_of_members_drops_them_from_every_processs_cache() {
    let world = World::new();
    let chat = world.chat().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let published = || chat.stats().invalidations_published.load(std::sync::atomic::Ordering::Relaxed);
    chat.join_room(ada, "lobby").await.unwrap();
    assert_eq!(published(), 1);
    chat.join_room(ada, "lobby").await.unwrap();
    chat.leave_room(bob, "lobby").await.unwrap();
    let group = chat.create_group(ada, "guild").await.unwrap().id;
    chat.add_member(ada, group, bob).await.unwrap();
    chat.add_member(ada, group, bob).await.unwrap();
    assert_eq!(published(), 2, "joining again, leaving unjoined or adding again changes nobody");
}
