//! The gateway's metrics, kept in plain atomics owned by one [`Metrics`] value that is passed down
//! (no global recorder, so two gateways in one test process never mix their figures), and rendered
//! in the Prometheus text format for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the request latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] =
    [0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(index) = LATENCY_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// One request kind's figures: answers by outcome and a latency histogram. Successes are counted
/// without a lock, since every request passes here; errors, rarer, by code under one.
#[derive(Debug, Default)]
pub struct RequestKindStats {
    ok: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    latency: Histogram,
}

impl RequestKindStats {
    /// One request of this kind finished with `outcome` (`ok` or an error code) after `elapsed`.
    pub fn record(&self, outcome: &'static str, elapsed: Duration) {
        if outcome == "ok" {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(outcome).or_default() += 1;
        }
        self.latency.observe(elapsed);
    }

    /// Answers by outcome, `ok` included once any request succeeded.
    fn outcomes(&self) -> BTreeMap<&'static str, u64> {
        let mut outcomes = self.errors.lock().map(|errors| errors.clone()).unwrap_or_default();
        let ok = self.ok.load(Ordering::Relaxed);
        if ok > 0 {
            outcomes.insert("ok", ok);
        }
        outcomes
    }
}

/// Every figure the gateway exports.
#[derive(Debug, Default)]
pub struct Metrics {
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_refused_for_address: AtomicU64,
    /// Bytes queued for every connection's writer, together (`outbound`).
    outbound_queued_bytes: AtomicUsize,
    connections_authenticated: AtomicU64,
    closes: Mutex<BTreeMap<u16, u64>>,
    requests: Mutex<BTreeMap<&'static str, Arc<RequestKindStats>>>,
    bus_messages: AtomicU64,
    departures_unchecked: AtomicU64,
}

impl Metrics {
    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// The bytes queued for every connection together, which each connection's queue adds to and
    /// takes from.
    pub fn outbound_queued_bytes(&self) -> &AtomicUsize {
        &self.outbound_queued_bytes
    }

    /// A connection was refused because the server was full.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was refused because its client address had too many open.
    pub fn connection_refused_for_address(&self) {
        self.connections_refused_for_address.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection became (`true`) or stopped being (`false`) authenticated.
    pub fn authenticated(&self, now_authenticated: bool) {
        if now_authenticated {
            self.connections_authenticated.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections_authenticated.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The server closed a connection with `code`.
    pub fn closed_with(&self, code: u16) {
        if let Ok(mut closes) = self.closes.lock() {
            *closes.entry(code).or_default() += 1;
        }
    }

    /// A message arrived from the bus between gateways.
    pub fn bus_message(&self) {
        self.bus_messages.fetch_add(1, Ordering::Relaxed);
    }

    /// A player's departure from another process could not be checked (the queue of checks was
    /// full), so their ticket stays set aside. Returns the count so far at the first and then at
    /// every thousandth, when it is worth a warning.
    pub fn departure_unchecked(&self) -> Option<u64> {
        let total = self.departures_unchecked.fetch_add(1, Ordering::Relaxed) + 1;
        (total == 1 || total.is_multiple_of(1_000)).then_some(total)
    }

    /// A request of `kind` finished with `outcome` (`ok` or an error code) after `elapsed`.
    pub fn request(&self, kind: &'static str, outcome: &'static str, elapsed: Duration) {
        self.request_kind(kind).record(outcome, elapsed);
    }

    /// The figures of request kind `kind`, for a caller that records many requests of one kind
    /// (a connection keeps its last kind's) without looking them up each time.
    pub fn request_kind(&self, kind: &'static str) -> Arc<RequestKindStats> {
        let mut requests = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(requests.entry(kind).or_default())
    }

    /// Open connections now.
    pub fn open_connections(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Renders every figure in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        gauge(&mut out, "gateway_connections", "Open game connections.", "gauge", self.open_connections());
        gauge(
            &mut out,
            "gateway_outbound_queued_bytes",
            "Bytes waiting to be written to the connections behind the frame each is writing, together.",
            "gauge",
            self.outbound_queued_bytes.load(Ordering::Relaxed) as u64,
        );
        gauge(
            &mut out,
            "gateway_authenticated_connections",
            "Open connections that are logged in.",
            "gauge",
            self.connections_authenticated.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gateway_connections_accepted_total",
            "Connections accepted since start.",
            "counter",
            self.connections_accepted.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gateway_connections_refused_total",
            "Connections refused because the server was full.",
            "counter",
            self.connections_refused.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gateway_connections_refused_for_address_total",
            "Connections closed at once because their client address had too many open.",
            "counter",
            self.connections_refused_for_address.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gateway_bus_messages_total",
            "Messages received from the bus between gateway processes.",
            "counter",
            self.bus_messages.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gateway_departures_unchecked_total",
            "Departures from other processes of players connected here that were not checked (the \
             queue of checks was full), leaving their matchmaking tickets set aside.",
            "counter",
            self.departures_unchecked.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            "gauge",
            resident_bytes(),
        );

        let _ = writeln!(out, "# HELP gateway_closes_total Connections closed by the server, by close code.");
        let _ = writeln!(out, "# TYPE gateway_closes_total counter");
        if let Ok(closes) = self.closes.lock() {
            for (code, count) in closes.iter() {
                let _ = writeln!(out, "gateway_closes_total{{code=\"{code}\"}} {count}");
            }
        }

        let Ok(requests) = self.requests.lock() else { return out };
        let _ = writeln!(out, "# HELP gateway_requests_total Requests answered, by kind and outcome.");
        let _ = writeln!(out, "# TYPE gateway_requests_total counter");
        for (kind, stats) in requests.iter() {
            for (outcome, count) in &stats.outcomes() {
                let _ = writeln!(
                    out,
                    "gateway_requests_total{{request=\"{kind}\",outcome=\"{outcome}\"}} {count}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP gateway_request_duration_seconds Time from a request's arrival to its response."
        );
        let _ = writeln!(out, "# TYPE gateway_request_duration_seconds histogram");
        for (kind, stats) in requests.iter() {
            let histogram = &stats.latency;
            let mut cumulative = 0;
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&histogram.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "gateway_request_duration_seconds_bucket{{request=\"{kind}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = histogram.count.load(Ordering::Relaxed);
            let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "gateway_request_duration_seconds_bucket{{request=\"{kind}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(out, "gateway_request_duration_seconds_sum{{request=\"{kind}\"}} {sum}");
            let _ = writeln!(out, "gateway_request_duration_seconds_count{{request=\"{kind}\"}} {count}");
        }
        out
    }
}

/// The player domain's write-path figures. `buffer` is `None` when the store did not answer.
pub fn render_player(stats: &player::PlayerStats, buffer: Option<kv::BufferStats>, now_ms: u64) -> String {
    let mut out = String::new();
    let mut line = |name: &str, help: &str, kind: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    line(
        "player_updates_accepted_total",
        "State updates acknowledged.",
        "counter",
        load(&stats.updates_accepted),
    );
    line("player_flushes_total", "Flush transactions committed.", "counter", load(&stats.flushes));
    line(
        "player_rows_flushed_total",
        "Rows written to player.db by the flusher.",
        "counter",
        load(&stats.rows_flushed),
    );
    line(
        "player_flush_batch_rows",
        "Players in the last flush transaction.",
        "gauge",
        load(&stats.last_flush_rows),
    );
    line(
        "player_flush_duration_seconds",
        "Duration of the last flush transaction.",
        "gauge",
        load(&stats.last_flush_micros) / 1e6,
    );
    line("player_seeds_total", "Records loaded into the buffer from SQLite.", "counter", load(&stats.seeds));
    line(
        "player_buffer_heals_total",
        "Flush passes that found the buffer behind player.db (Redis lost or went back to older data).",
        "counter",
        load(&stats.buffer_heals),
    );
    if let Some(buffer) = buffer {
        line(
            "player_buffered",
            "Players with unflushed state (dirty or being flushed).",
            "gauge",
            buffer.n_buffered as f64,
        );
        let lag_ms = buffer.oldest_dirty_ms.map_or(0, |oldest| now_ms.saturating_sub(oldest));
        line("player_flush_lag_seconds", "Age of the oldest unflushed update.", "gauge", lag_ms as f64 / 1e3);
    }
    out
}

/// The inventory domain's write path: transactions, group commits and where their time goes.
pub fn render_inventory(stats: &inventory::InventoryStats) -> String {
    let mut out = String::new();
    let mut line = |name: &str, help: &str, kind: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    line(
        "inventory_transactions_total",
        "Inventory changes answered after their group committed, failures included.",
        "counter",
        load(&stats.changes),
    );
    line(
        "inventory_replays_total",
        "Changes answered with the stored result of an earlier request (same idempotency key).",
        "counter",
        load(&stats.replays),
    );
    line("inventory_groups_total", "Group commits (SQLite transactions).", "counter", load(&stats.groups));
    line("inventory_group_size", "Changes in the last group committed.", "gauge", load(&stats.last_group));
    line("inventory_group_size_max", "The largest group so far.", "gauge", load(&stats.largest_group));
    line(
        "inventory_apply_seconds_total",
        "Time spent running changes inside group transactions, before COMMIT.",
        "counter",
        load(&stats.apply_micros) / 1e6,
    );
    line(
        "inventory_commit_seconds_total",
        "Time spent in COMMIT (the fsync, at synchronous=FULL).",
        "counter",
        load(&stats.commit_micros) / 1e6,
    );
    line(
        "inventory_pruned_requests_total",
        "Idempotency records deleted after the retention window.",
        "counter",
        load(&stats.pruned_requests),
    );
    line(
        "inventory_pruned_offers_total",
        "Closed offers deleted after the retention window.",
        "counter",
        load(&stats.pruned_offers),
    );
    render_wal(&mut out, "inventory", &stats.wal);
    out
}

/// The chat domain and its live delivery: messages stored, group commits, the member cache,
/// events published on the bus and event frames queued on this process's connections.
pub(crate) fn render_chat(
    stats: &chat::ChatStats,
    announced: &crate::chat_requests::AnnounceStats,
    delivery: &crate::hub::DeliveryStats,
    n_bus_messages_dropped: u64,
) -> String {
    let mut out = String::new();
    let mut line = |name: &str, help: &str, kind: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    line("chat_messages_stored_total", "Chat messages committed.", "counter", load(&stats.messages_stored));
    line("chat_commits_total", "Chat group commits (SQLite transactions).", "counter", load(&stats.commits));
    line(
        "chat_commit_failures_total",
        "Chat group commits that failed (their senders got an error).",
        "counter",
        load(&stats.failed_commits),
    );
    line("chat_commit_size", "Messages in the last group commit.", "gauge", load(&stats.last_batch));
    line("chat_commit_size_max", "The largest group commit so far.", "gauge", load(&stats.largest_batch));
    line(
        "chat_commit_seconds_total",
        "Time spent in chat group commits (the transaction and its COMMIT).",
        "counter",
        load(&stats.commit_micros) / 1e6,
    );
    line(
        "chat_member_cache_hits_total",
        "Membership checks answered from the member cache.",
        "counter",
        load(&stats.member_cache_hits),
    );
    line(
        "chat_member_cache_misses_total",
        "Member lists read from chat.db.",
        "counter",
        load(&stats.membership_loads),
    );
    line(
        "chat_member_invalidations_published_total",
        "Membership changes announced to every process.",
        "counter",
        load(&stats.invalidations_published),
    );
    line(
        "chat_member_invalidations_received_total",
        "Membership invalidations applied to this process's cache.",
        "counter",
        load(&stats.invalidations_received),
    );
    line("chat_history_pages_total", "Chat history pages served.", "counter", load(&stats.history_pages));
    line(
        "chat_history_shard_reads_total",
        "Yearly shard queries made for history pages (more than one per page only across years).",
        "counter",
        load(&stats.history_shard_reads),
    );
    line(
        "chat_events_published_total",
        "Chat events published on the bus.",
        "counter",
        load(&announced.events),
    );
    line(
        "chat_event_publishes_total",
        "Bus messages carrying chat events (one per burst).",
        "counter",
        load(&announced.publishes),
    );
    line(
        "chat_event_recipients_total",
        "Accounts named by published chat events.",
        "counter",
        load(&announced.recipients),
    );
    line(
        "chat_events_unpublished_total",
        "Chat events lost to a bus outage (members read them in history).",
        "counter",
        load(&announced.failed),
    );
    line(
        "gateway_events_queued_total",
        "Event frames queued on this process's connections (one per event and connection).",
        "counter",
        load(&delivery.events_queued),
    );
    line(
        "gateway_event_encodings_total",
        "Events encoded for delivery (once per event and encoding, not per connection).",
        "counter",
        load(&delivery.encodings),
    );
    line(
        "gateway_bus_messages_dropped_total",
        "Bus messages dropped because this process's bus task fell too far behind.",
        "counter",
        n_bus_messages_dropped as f64,
    );
    render_wal(&mut out, "chat", &stats.wal);
    out
}

/// A domain's WAL keeper figures (`shard::WalKeeper`), as `<domain>_checkpoints_total` and so on.
fn render_wal(out: &mut String, domain: &str, wal: &shard::WalStats) {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    for (name, help, kind, value) in [
        ("checkpoints_total", "WAL checkpoints run beside the writer.", "counter", load(&wal.checkpoints)),
        (
            "checkpoint_seconds_total",
            "Time those checkpoints took (on their own connection).",
            "counter",
            load(&wal.checkpoint_micros) / 1e6,
        ),
        (
            "forced_checkpoints_total",
            "Checkpoints the writer ran itself because the WAL passed its limit.",
            "counter",
            load(&wal.forced_checkpoints),
        ),
        ("wal_bytes", "Size of the WAL file after the writer's last commit.", "gauge", load(&wal.wal_bytes)),
    ] {
        let _ = writeln!(
            out,
            "# HELP {domain}_{name} {help}\n# TYPE {domain}_{name} {kind}\n{domain}_{name} {value}"
        );
    }
}

/// Resident memory from `/proc/self/statm` (Linux); 0 where that is not available.
fn resident_bytes() -> u64 {
    const PAGE_BYTES: u64 = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()))
        .map_or(0, |pages| pages * PAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_kind_and_outcome() {
        let metrics = Metrics::default();
        metrics.request("ping", "ok", Duration::from_micros(50));
        metrics.request("ping", "ok", Duration::from_millis(3));
        metrics.request("login", "unauthorized", Duration::from_millis(40));
        let text = metrics.render();
        assert!(text.contains("gateway_requests_total{request=\"ping\",outcome=\"ok\"} 2"), "{text}");
        assert!(text.contains("gateway_requests_total{request=\"login\",outcome=\"unauthorized\"} 1"));
        assert!(text.contains("gateway_request_duration_seconds_bucket{request=\"ping\",le=\"0.0001\"} 1"));
        assert!(text.contains("gateway_request_duration_seconds_bucket{request=\"ping\",le=\"0.005\"} 2"));
        assert!(text.contains("gateway_request_duration_seconds_count{request=\"ping\"} 2"));
    }

    #[test]
    fn each_domain_s_wal_figures_carry_its_name() {
        let wal = shard::WalStats::default();
        wal.checkpoints.store(3, Ordering::Relaxed);
        wal.checkpoint_micros.store(1_500_000, Ordering::Relaxed);
        wal.wal_bytes.store(4096, Ordering::Relaxed);
        let mut text = String::new();
        render_wal(&mut text, "chat", &wal);
        assert!(text.contains("# TYPE chat_checkpoints_total counter\nchat_checkpoints_total 3\n"), "{text}");
        assert!(text.contains("chat_checkpoint_seconds_total 1.5\n"), "{text}");
        assert!(text.contains("chat_forced_checkpoints_total 0\n"), "{text}");
        assert!(text.contains("# TYPE chat_wal_bytes gauge\nchat_wal_bytes 4096\n"), "{text}");
    }
}
