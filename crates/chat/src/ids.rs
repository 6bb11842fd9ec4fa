//! Message and channel ids, and the calendar arithmetic that maps a time to its year.
//!
//! A [`MessageId`] is a UUID version 7 whose 48-bit timestamp is the message's server time in
//! milliseconds (from the injected clock), so ids sort by time and the id alone says which
//! year's shard holds the message. The 74 remaining bits are a 42-bit counter (started at a
//! random point each millisecond, so ids made by one process within one millisecond keep their
//! order) and 32 random bits (so two processes writing in the same millisecond do not collide).
//! UUIDs rather than a 64-bit integer because a JSON client in JavaScript would silently round a
//! millisecond-plus-sequence integer above 2^53; a UUID travels as a string.

use std::sync::Mutex;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Milliseconds in a day.
const MS_PER_DAY: i64 = 86_400_000;
/// The counter of a message id has this many bits.
const COUNTER_BITS: u32 = 42;

/// A message's id: a UUID v7 carrying its server timestamp (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub Uuid);

impl MessageId {
    /// The message's server time, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(self) -> u64 {
        let bytes = self.0.as_bytes();
        bytes[..6].iter().fold(0, |ms, &byte| (ms << 8) | u64::from(byte))
    }

    /// The year (UTC) whose shard holds the message.
    pub fn year(self) -> i32 {
        year_of_ms(self.timestamp_ms())
    }
}

/// A channel's id: random (UUID v7) for rooms and groups, derived from the two accounts for a
/// direct-message channel ([`direct_channel_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub Uuid);

/// The one direct-message channel of two accounts, the same whichever of them asks: a UUID
/// version 8 made of the first 16 bytes of SHA-256 over the two ids in sorted order.
pub fn direct_channel_id(a: Uuid, b: Uuid) -> ChannelId {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::new().chain_update(b"chat-direct").chain_update(low).chain_update(high).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    ChannelId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// Makes message ids that grow within a millisecond (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct IdGenerator {
    /// (millisecond of the last id, its counter).
    last: Mutex<(u64, u64)>,
}

impl IdGenerator {
    /// A new id stamped with `now_ms`.
    pub(crate) fn next(&self, now_ms: u64) -> MessageId {
        let counter = {
            let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Start low in the counter's range, so a burst has room to count up.
            let start = || rand::random::<u64>() & ((1 << (COUNTER_BITS - 2)) - 1);
            if last.0 == now_ms {
                last.1 = (last.1 + 1) & ((1 << COUNTER_BITS) - 1);
                last.1
            } else if last.0 < now_ms {
                *last = (now_ms, start());
                last.1
            } else {
                // An earlier millisecond than the last id's (a send that read the clock before
                // another but was stamped after it): its own counter, leaving the later
                // millisecond's count where it is, so that millisecond's next id still sorts last.
                start()
            }
        };
        MessageId(message_uuid(now_ms, counter, rand::random()))
    }
}

/// The bytes of a message id: 48 bits of milliseconds, version 7, the counter's top 12 bits,
/// variant 0b10, the counter's low 30 bits, 32 random bits.
#[allow(clippy::cast_possible_truncation, reason = "each byte takes the bits it is shifted to")]
fn message_uuid(ms: u64, counter: u64, random: u32) -> Uuid {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70 | ((counter >> 38) & 0x0f) as u8;
    b[7] = (counter >> 30) as u8;
    b[8] = 0x80 | ((counter >> 24) & 0x3f) as u8;
    b[9] = (counter >> 16) as u8;
    b[10] = (counter >> 8) as u8;
    b[11] = counter as u8;
    b[12..].copy_from_slice(&random.to_be_bytes());
    Uuid::from_bytes(b)
}

/// The smallest id of any message at or after `ms`: a page cursor that means "before this time".
pub(crate) fn first_id_at(ms: u64) -> MessageId {
    MessageId(message_uuid(ms, 0, 0))
}

/// The calendar year (UTC, proleptic Gregorian) of a time in milliseconds since the epoch.
pub fn year_of_ms(ms: u64) -> i32 {
    let days = i64::try_from(ms).unwrap_or(i64::MAX) / MS_PER_DAY;
    civil_from_days(days).0
}

/// The first millisecond of `year` (UTC); 0 for years before 1970.
pub fn year_start_ms(year: i32) -> u64 {
    u64::try_from(days_from_civil(year, 1, 1) * MS_PER_DAY).unwrap_or(0)
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// (year, month, day) of a day number since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_begin_at_midnight_utc() {
        // 2027-01-01T00:00:00Z, from `date -u -d 2027-01-01 +%s`.
        assert_eq!(year_start_ms(2027), 1_798_761_600_000);
        assert_eq!(year_start_ms(1970), 0);
        assert_eq!(year_start_ms(2024) + 366 * 86_400_000, year_start_ms(2025), "2024 is a leap year");
        for year in [1970, 1999, 2000, 2026, 2027, 2100, 2400] {
            let start = year_start_ms(year);
            assert_eq!(year_of_ms(start), year);
            if start > 0 {
                assert_eq!(year_of_ms(start - 1), year - 1);
            }
        }
        assert_eq!(civil_from_days(days_from_civil(2028, 2, 29)), (2028, 2, 29));
    }

    #[test]
    fn message_ids_sort_by_time_and_carry_it() {
        let ids = IdGenerator::default();
        let start = year_start_ms(2027);
        let mut made = Vec::new();
        for ms in [start - 1, start - 1, start - 1, start, start, start + 1] {
            made.push(ids.next(ms));
        }
        let mut sorted = made.clone();
        sorted.sort();
        assert_eq!(sorted, made, "ids of one generator sort in the order they were made");
        assert_eq!(made[0].timestamp_ms(), start - 1);
        assert_eq!((made[2].year(), made[3].year()), (2026, 2027));
        assert!(made.iter().all(|id| id.0.get_version_num() == 7));
        assert!(first_id_at(start) <= made[3] && first_id_at(start) > made[2]);
    }

    #[test]
    fn a_late_stamp_of_an_earlier_millisecond_keeps_the_later_ones_in_order() {
        // A send reads the clock before its rate check and is stamped after it, so a stamp of
        // an earlier millisecond can come between two of a later one.
        let ids = IdGenerator::default();
        for ms in 1_000..1_064 {
            let first = ids.next(ms);
            let late = ids.next(ms - 1);
            let second = ids.next(ms);
            assert!(late < first && first < second, "ids of one millisecond keep their order");
        }
    }

    #[test]
    fn a_direct_channel_is_the_same_from_both_sides() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(direct_channel_id(a, b), direct_channel_id(b, a));
        assert_ne!(direct_channel_id(a, b), direct_channel_id(a, Uuid::now_v7()));
    }
}
