//! What the clients measured: per request kind, an HDR histogram of latencies (microseconds, sized
//! for a minute and growing past it), the count of answers, and errors by code. Clients record
//! into a few sharded stats so thousands of tasks do not contend on one lock; the shards merge at
//! the end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use proto::Outcome;

use crate::conn::ConnError;

/// The latency range a histogram is allocated for at first; a longer latency (a paced request
/// answered late in a long saturated run) grows it rather than being recorded as this.
pub const INITIAL_MAX_LATENCY_MICROS: u64 = 60_000_000;
/// Significant decimal digits the histograms keep.
const SIGNIFICANT_DIGITS: u8 = 3;
/// Independent stats the clients record into (client `i` uses shard `i % SHARDS`).
const SHARDS: usize = 16;
/// The pseudo request kind under which connection handshakes are recorded; the server does not
/// count it as a request.
pub const CONNECT: &str = "connect";
/// The pseudo kind under which chat deliveries are recorded: one per message event a member
/// received from another member, with the time from the sender's send to the receipt.
pub const CHAT_DELIVERY: &str = "chat_delivery";
/// The pseudo kind of the admin port's `POST /inventory/grant` calls made while setting up.
pub const INVENTORY_GRANT: &str = "inventory_grant";
/// The pseudo kind of a whole trade seen by its offerer: from sending the offer to hearing that
/// the partner accepted it.
pub const TRADE: &str = "trade";
/// The pseudo kind of a matchmaking wait: from the `match_queue` acknowledgement to the
/// `match_found` event (time to match).
pub const MATCH_WAIT: &str = "match_wait";

/// Whether `kind` is a game request the gateway counts in `gateway_requests_total`, rather than
/// one of the load generator's own measurements ([`CONNECT`], [`CHAT_DELIVERY`],
/// [`INVENTORY_GRANT`], [`TRADE`], [`MATCH_WAIT`]).
pub fn is_server_request(kind: &str) -> bool {
    ![CONNECT, CHAT_DELIVERY, INVENTORY_GRANT, TRADE, MATCH_WAIT].contains(&kind)
}

/// Figures for one request kind.
#[derive(Debug, Clone)]
pub struct KindStats {
    /// Latency of every answered request (successes and error responses), in microseconds.
    pub latency: Histogram<u64>,
    /// Requests answered with success, and measurements observed ([`Recorder::observed`]).
    pub ok: u64,
    /// Errors by code: the server's error codes, and client-side failures (`timeout`, `closed`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Error responses that are part of the plan, by code (the failed first login of an account
    /// that does not exist yet): answered and counted, but not errors.
    pub expected: BTreeMap<String, u64>,
}

impl KindStats {
    fn new() -> KindStats {
        // The bounds are constants that hdrhistogram accepts.
        let mut latency = Histogram::new_with_bounds(1, INITIAL_MAX_LATENCY_MICROS, SIGNIFICANT_DIGITS)
            .expect("valid histogram bounds");
        latency.auto(true);
        KindStats { latency, ok: 0, errors: BTreeMap::new(), expected: BTreeMap::new() }
    }

    /// Requests answered by the server, whatever the outcome.
    pub fn answered(&self) -> u64 {
        self.latency.len()
    }

    /// Errors of every code.
    pub fn n_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    fn merge(&mut self, other: &KindStats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        for (code, count) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += count;
        }
        for (code, count) in &other.expected {
            *self.expected.entry(code.clone()).or_default() += count;
        }
    }
}

/// Figures for every request kind.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// By request kind ([`proto::Request::kind`], or [`CONNECT`]).
    pub kinds: BTreeMap<&'static str, KindStats>,
}

impl Stats {
    fn kind(&mut self, kind: &'static str) -> &mut KindStats {
        self.kinds.entry(kind).or_insert_with(KindStats::new)
    }

    fn merge(&mut self, other: &Stats) {
        for (kind, stats) in &other.kinds {
            self.kind(kind).merge(stats);
        }
    }
}

/// Where every client records; cheap live totals for the progress line.
#[derive(Debug)]
pub struct Recorder {
    shards: Vec<Mutex<Stats>>,
    answered: AtomicU64,
    errors: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            shards: (0..SHARDS).map(|_| Mutex::new(Stats::default())).collect(),
            answered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

impl Recorder {
    /// Records an answer to a request of `kind` after `latency`; an error outcome counts as an
    /// error unless `expected`.
    pub fn answered(
        &self,
        client: usize,
        kind: &'static str,
        latency: Duration,
        outcome: &Outcome,
        expected: bool,
    ) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.with_shard(client, |stats| {
            let kind = stats.kind(kind);
            record(&mut kind.latency, latency);
            if matches!(outcome, Outcome::Ok(_)) {
                kind.ok += 1;
            }
            if let Outcome::Error(body) = outcome {
                let bucket = if expected { &mut kind.expected } else { &mut kind.errors };
                *bucket.entry(body.code.as_str().to_owned()).or_default() += 1;
            }
        });
        if matches!(outcome, Outcome::Error(_)) && !expected {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a successful connection handshake.
    pub fn connected(&self, client: usize, latency: Duration) {
        self.observed(client, CONNECT, latency);
    }

    /// Records one measurement of `kind` that is not an answer to a request of this client (a
    /// handshake, a chat delivery, a settled trade): it counts as a success and has a latency,
    /// never an error, so the failures of its kind (`undelivered`, `unsettled`) stand out as the
    /// ones that never came.
    pub fn observed(&self, client: usize, kind: &'static str, latency: Duration) {
        self.with_shard(client, |stats| {
            let kind = stats.kind(kind);
            record(&mut kind.latency, latency);
            kind.ok += 1;
        });
    }

    /// Records a request of `kind` (or a connect) that got no answer.
    pub fn failed(&self, client: usize, kind: &'static str, error: &ConnError) {
        self.failed_with(client, kind, error.label());
    }

    /// Records a request of `kind` that failed with an error labelled `label` (for requests that
    /// are not sent over a [`crate::conn::Connection`]).
    pub fn failed_with(&self, client: usize, kind: &'static str, label: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.with_shard(client, |stats| *stats.kind(kind).errors.entry(label).or_default() += 1);
    }

    /// Records `n` failures of `kind` labelled `label` at once (deliveries that never came).
    pub fn failed_many(&self, client: usize, kind: &'static str, label: &str, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
        self.with_shard(client, |stats| *stats.kind(kind).errors.entry(label.to_owned()).or_default() += n);
    }

    /// (answers, errors) so far, for progress.
    pub fn totals(&self) -> (u64, u64) {
        (self.answered.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed))
    }

    /// Every shard merged.
    pub fn snapshot(&self) -> Stats {
        let mut merged = Stats::default();
        for shard in &self.shards {
            if let Ok(stats) = shard.lock() {
                merged.merge(&stats);
            }
        }
        merged
    }

    fn with_shard(&self, client: usize, record: impl FnOnce(&mut Stats)) {
        if let Ok(mut stats) = self.shards[client % SHARDS].lock() {
            record(&mut stats);
        }
    }
}

/// Records `latency` in microseconds (at least 1), growing `histogram` as far as hdrhistogram can
/// (2^62 µs, beyond any run); only past that is it recorded as the largest value it tracks.
fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
    if histogram.record(micros).is_err() {
        histogram.saturating_record(micros);
    }
}

#[cfg(test)]
mod tests {
    use proto::Reply;

    use super::*;

    #[test]
    fn latencies_past_a_minute_are_kept_as_they_were() {
        let recorder = Recorder::default();
        let pong = Outcome::Ok(Reply::Pong { server_time_ms: 0 });
        // A paced request answered late in a long saturated run, and a delivery that took ten
        // minutes.
        recorder.answered(0, "ping", Duration::from_secs(90), &pong, false);
        recorder.observed(1, CHAT_DELIVERY, Duration::from_secs(600));
        let stats = recorder.snapshot();
        let max_secs = |kind: &str| stats.kinds[kind].latency.max() as f64 / 1e6;
        assert!((max_secs("ping") - 90.0).abs() < 0.1, "{}", max_secs("ping"));
        assert!((max_secs(CHAT_DELIVERY) - 600.0).abs() < 1.0, "{}", max_secs(CHAT_DELIVERY));
    }
}
