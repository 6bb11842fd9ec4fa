//! Times history pages on a year's shard holding 10 million messages (the target is a page under
//! 2 ms at p99), through the public API (`Chat::history`), as the gateway calls it.
//!
//! The shard is built once, in a data directory that is kept and reused (`/tmp/chat-history-bench`
//! unless given): `Chat::open` creates and migrates `chat.db` and `chat-2026.db` with the crate's
//! own migrations and 1,000 rooms are joined through `Chat::join_room`; then 10,000 messages per
//! room are inserted into the migrated `messages` table in time order (interleaved across rooms,
//! as live traffic arrives), 200,000 per transaction. Then it reads random pages: the newest page
//! of a random room, and pages before a random point in a random room's history.
//!
//! Run: `cargo run --release -p chat --example history_bench [DATA_DIR]`

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat::{ChannelId, Chat, ChatConfig, MessageId, shard_file_name, year_of_ms, year_start_ms};
use clock::ManualClock;
use shard::rusqlite::{Connection, params};
use uuid::Uuid;

/// Rooms the messages are spread over.
const N_ROOMS: usize = 1_000;
/// Messages in the shard.
const N_MESSAGES: u64 = 10_000_000;
/// Messages per insert transaction.
const ROWS_PER_TRANSACTION: u64 = 200_000;
/// The bench's "now": 2026-07-01T00:00:00Z; the messages span the first half of 2026.
const NOW_MS: u64 = 1_782_864_000_000;
/// Pages read per case.
const N_READS: usize = 20_000;
/// Messages per page (the gateway's cap is `chat::MAX_PAGE_SIZE`).
const PAGE_SIZES: [usize; 2] = [50, chat::MAX_PAGE_SIZE];

/// A small deterministic generator (a 64-bit LCG), so every run builds the same shard.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::main]
async fn main() {
    let data_dir =
        std::env::args().nth(1).map_or_else(|| PathBuf::from("/tmp/chat-history-bench"), PathBuf::from);
    let kv_dir = tempfile::tempdir().unwrap();
    let kv = kv::Kv::embedded(kv_dir.path(), "bench:").unwrap();
    let clock = Arc::new(ManualClock::at(NOW_MS));
    let config = ChatConfig { sends_per_window: u64::MAX, ..ChatConfig::default() };
    let (chat, _committer) = Chat::open(&data_dir, kv, clock, config).await.unwrap();

    // Rooms are readable by anyone, so the reader joins none; each room has its own member, as
    // one player is in at most `chat::DEFAULT_MAX_CHANNELS_PER_PLAYER` rooms.
    let reader = Uuid::from_u128(1);
    let mut rooms = Vec::with_capacity(N_ROOMS);
    for n in 0..N_ROOMS {
        let member = Uuid::from_u128(2 + n as u128);
        rooms.push(chat.join_room(member, &format!("bench-{n}")).await.unwrap().id);
    }
    let year = year_of_ms(NOW_MS);
    let shard_path = data_dir.join(shard_file_name(year));
    fill(&shard_path, &rooms, year_start_ms(year));

    println!(
        "history pages on {} ({N_MESSAGES} messages in {N_ROOMS} rooms), {N_READS} reads per case, one at a time",
        shard_path.display()
    );
    println!("{:<34} {:>9} {:>9} {:>9} {:>9}", "case", "p50 ms", "p99 ms", "max ms", "messages");
    let mut random = Random(7);
    let span_ms = NOW_MS - year_start_ms(year);
    for limit in PAGE_SIZES {
        for (case, from_cursor) in [("newest page", false), ("page before a random message", true)] {
            let mut times = Vec::with_capacity(N_READS);
            let mut n_messages = 0;
            for _ in 0..N_READS {
                let room = rooms[usize::try_from(random.below(N_ROOMS as u64)).unwrap()];
                let before = from_cursor.then(|| cursor_at(year_start_ms(year) + random.below(span_ms)));
                let started = Instant::now();
                let page = chat.history(reader, room, before, limit).await.unwrap();
                times.push(started.elapsed());
                n_messages += page.messages.len();
            }
            times.sort();
            let ms = |at: Duration| at.as_secs_f64() * 1e3;
            println!(
                "{:<34} {:>9.3} {:>9.3} {:>9.3} {:>9.1}",
                format!("{case}, limit {limit}"),
                ms(times[N_READS / 2]),
                ms(times[N_READS * 99 / 100]),
                ms(times[N_READS - 1]),
                n_messages as f64 / N_READS as f64,
            );
        }
    }
}

/// A history cursor meaning "before `ms`".
fn cursor_at(ms: u64) -> MessageId {
    MessageId(uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10]).into_uuid())
}

/// Inserts the messages unless the shard holds them already.
fn fill(path: &std::path::Path, rooms: &[ChannelId], from_ms: u64) {
    let mut conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    conn.pragma_update(None, "cache_size", -262_144).unwrap();
    let have: i64 = conn.query_row("SELECT count(*) FROM messages", [], |row| row.get(0)).unwrap();
    let have = u64::try_from(have).unwrap();
    if have >= N_MESSAGES {
        return;
    }
    println!("filling {} with {} messages ...", path.display(), N_MESSAGES - have);
    let started = Instant::now();
    let mut random = Random(42 + have);
    let senders: Vec<Uuid> = (0..1_000u128).map(|n| Uuid::from_u128(1_000 + n)).collect();
    // One message every `step_ms` on average, so the year's first half is covered.
    let step_ms = (NOW_MS - 1 - from_ms) / N_MESSAGES;
    let mut at_ms = from_ms + have * step_ms;
    let mut inserted = have;
    while inserted < N_MESSAGES {
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (channel_id, id, sender_id, text, sent_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .unwrap();
            let end = (inserted + ROWS_PER_TRANSACTION).min(N_MESSAGES);
            for n in inserted..end {
                at_ms += step_ms;
                let room = rooms[usize::try_from(random.below(rooms.len() as u64)).unwrap()];
                let mut tail = [0u8; 10];
                tail[..8].copy_from_slice(&random.next().to_be_bytes());
                let id = uuid::Builder::from_unix_timestamp_millis(at_ms, &tail).into_uuid();
                let sender = senders[usize::try_from(random.below(senders.len() as u64)).unwrap()];
                let text = format!("message {n} of the history bench, with some ordinary chat words");
                insert
                    .execute(params![
                        room.0.as_bytes().as_slice(),
                        id.as_bytes().as_slice(),
                        sender.as_bytes().as_slice(),
                        text,
                        i64::try_from(at_ms).unwrap(),
                    ])
                    .unwrap();
            }
            inserted = end;
        }
        tx.commit().unwrap();
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    println!("filled in {:.1} s", started.elapsed().as_secs_f64());
}
