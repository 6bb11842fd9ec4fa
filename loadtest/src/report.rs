//! The final report: per request kind, count, throughput and latency percentiles, errors by code;
//! the gateways' own figures (memory, connections, and their request counters' deltas, so a test
//! can check that both sides counted the same); a text table for people and JSON for programs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::metrics::Snapshot;
use crate::stats::{self, KindStats, Stats};

/// The request kinds whose every success is one durable inventory transaction.
const INVENTORY_TRANSACTIONS: [&str; 3] =
    ["inventory_make_offer", "inventory_accept_offer", "inventory_consume"];

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario or blend that ran.
    pub scenario: String,
    /// Simulated clients.
    pub clients: usize,
    /// Wall time from the first connection to the last answer, in seconds.
    pub elapsed_secs: f64,
    /// Per request kind (plus `connect` for handshakes).
    pub kinds: BTreeMap<String, KindReport>,
    /// Errors of every kind.
    pub total_errors: u64,
    /// Requests the gateways counted during the run, summed over gateways, by kind.
    pub server_requests: BTreeMap<String, u64>,
    /// Inventory requests acknowledged with success (offers made and accepted, consumptions):
    /// each is one durable transaction on the server.
    pub inventory_transactions: u64,
    /// The same per second over the run.
    pub inventory_transactions_per_sec: f64,
    /// Each gateway's figures, in `--admin` order; none if a gateway could not be scraped after
    /// the run.
    pub gateways: Vec<GatewayReport>,
}

/// Figures for one request kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    /// Requests answered (successes and error responses).
    pub count: u64,
    /// Requests answered with success (for a measurement such as `chat_delivery`: those seen).
    pub ok: u64,
    /// Answers per second over the run.
    pub per_sec: f64,
    /// Latency percentiles and maximum, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Errors by code.
    pub errors: BTreeMap<String, u64>,
    /// Error answers that were part of the plan (first login of a new account), by code.
    pub expected: BTreeMap<String, u64>,
    /// The answered requests' latencies in microseconds, for any quantile (not in the JSON).
    #[serde(skip)]
    pub latency: Option<Histogram<u64>>,
}

impl KindReport {
    /// Errors of every code.
    pub fn n_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Requests that got no answer at all (timed out, or their connection was lost): the errors
    /// that are not error answers.
    pub fn n_unanswered(&self) -> u64 {
        let expected: u64 = self.expected.values().sum();
        let error_answers = self.count.saturating_sub(self.ok).saturating_sub(expected);
        self.n_errors().saturating_sub(error_answers)
    }

    /// Requests attempted: those answered (an error answer among them) and those that got no
    /// answer. An error answer is in both the count and the errors, so it is counted once here.
    pub fn n_attempts(&self) -> u64 {
        self.count + self.n_unanswered()
    }

    /// The latency at quantile `q` (0..=1) of the answered requests, in ms: from the histogram
    /// when the report has it, else from the smallest of the fixed percentiles kept at or above
    /// `q` (never below the true value); `None` past them or with nothing answered.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if let Some(latency) = &self.latency {
            return (!latency.is_empty()).then(|| latency.value_at_quantile(q) as f64 / 1000.0);
        }
        [
            (0.5, self.p50_ms),
            (0.9, self.p90_ms),
            (0.99, self.p99_ms),
            (0.999, self.p999_ms),
            (1.0, self.max_ms),
        ]
        .into_iter()
        .find(|(kept, _)| *kept >= q - 1e-9)
        .map(|(_, ms)| ms)
    }
}

/// One gateway's figures.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayReport {
    /// The admin address scraped.
    pub admin: String,
    /// Before any client connected.
    pub before: Snapshot,
    /// When every connection-holding client was connected (or at the last moment before the end).
    pub peak: Option<Snapshot>,
    /// After every client finished.
    pub after: Snapshot,
    /// (resident memory at the peak − before) ÷ (connections at the peak − before), in bytes.
    pub memory_per_connection_bytes: Option<f64>,
    /// Requests this gateway counted during the run, by kind.
    pub requests: BTreeMap<String, u64>,
    /// The same by kind and outcome.
    pub outcomes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Player-state updates this gateway acknowledged during the run.
    pub player_updates_accepted: u64,
    /// Player-state rows its flusher wrote to SQLite during the run (buffered mode), including
    /// the flush of the run's last updates unless it took longer than the settle timeout.
    pub player_rows_flushed: u64,
    /// Its player-state flush lag, sampled through the run (`None` if no sample succeeded).
    pub flush_lag: Option<FlushLag>,
}

/// The largest `player_flush_lag_seconds` a gateway reported in samples taken through a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FlushLag {
    /// The largest lag seen, in seconds.
    pub max_secs: f64,
    /// How many samples it is the largest of.
    pub samples: u64,
}

impl FlushLag {
    /// Counts one sample.
    pub fn add(&mut self, lag_secs: f64) {
        self.max_secs = self.max_secs.max(lag_secs);
        self.samples += 1;
    }
}

impl GatewayReport {
    /// The report of a gateway scraped `before`, at the `peak` and `after`, with its flush lag
    /// sampled in between.
    pub fn new(
        admin: String,
        before: Snapshot,
        peak: Option<Snapshot>,
        after: Snapshot,
        flush_lag: Option<FlushLag>,
    ) -> GatewayReport {
        // The connections open before the run are in the memory before it too.
        let memory_per_connection_bytes =
            peak.as_ref().filter(|peak| peak.connections > before.connections).map(|peak| {
                (peak.resident_bytes as f64 - before.resident_bytes as f64)
                    / (peak.connections - before.connections) as f64
            });
        GatewayReport {
            requests: after.requests_since(&before),
            outcomes: after.outcomes_since(&before),
            player_updates_accepted: after
                .player_updates_accepted
                .saturating_sub(before.player_updates_accepted),
            player_rows_flushed: after.player_rows_flushed.saturating_sub(before.player_rows_flushed),
            admin,
            before,
            peak,
            after,
            memory_per_connection_bytes,
            flush_lag,
        }
    }
}

impl Report {
    /// Builds the report from the clients' stats and the gateways' figures.
    pub fn new(
        scenario: String,
        clients: usize,
        elapsed_secs: f64,
        stats: &Stats,
        gateways: Vec<GatewayReport>,
    ) -> Report {
        let kinds: BTreeMap<String, KindReport> = stats
            .kinds
            .iter()
            .map(|(kind, stats)| ((*kind).to_owned(), kind_report(stats, elapsed_secs)))
            .collect();
        let total_errors = kinds.values().map(KindReport::n_errors).sum();
        let mut server_requests = BTreeMap::new();
        for gateway in &gateways {
            for (kind, count) in &gateway.requests {
                *server_requests.entry(kind.clone()).or_default() += count;
            }
        }
        let inventory_transactions: u64 =
            INVENTORY_TRANSACTIONS.iter().filter_map(|kind| kinds.get(*kind)).map(|kind| kind.ok).sum();
        let inventory_transactions_per_sec =
            if elapsed_secs > 0.0 { inventory_transactions as f64 / elapsed_secs } else { 0.0 };
        Report {
            scenario,
            clients,
            elapsed_secs,
            kinds,
            total_errors,
            server_requests,
            inventory_transactions,
            inventory_transactions_per_sec,
            gateways,
        }
    }

    /// Requests the clients had answered, by kind (without handshakes): what the server should
    /// have counted.
    pub fn client_requests(&self) -> BTreeMap<String, u64> {
        self.kinds
            .iter()
            .filter(|(kind, report)| stats::is_server_request(kind) && report.count > 0)
            .map(|(kind, report)| (kind.clone(), report.count))
            .collect()
    }

    /// Attempts of every kind (answers and failures), for error rates.
    pub fn total_attempts(&self) -> u64 {
        self.kinds.values().map(KindReport::n_attempts).sum()
    }

    /// The report as a text table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {}  clients {}  elapsed {:.1} s  errors {}",
            self.scenario, self.clients, self.elapsed_secs, self.total_errors
        );
        let _ = writeln!(
            out,
            "{:<22} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
            "request", "count", "per s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for (kind, report) in &self.kinds {
            let mut errors: Vec<String> =
                report.errors.iter().map(|(code, count)| format!("{code}={count}")).collect();
            errors.extend(report.expected.iter().map(|(code, count)| format!("({code}={count} expected)")));
            let _ = writeln!(
                out,
                "{kind:<22} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
                report.count,
                report.per_sec,
                report.p50_ms,
                report.p90_ms,
                report.p99_ms,
                report.p999_ms,
                report.max_ms,
                if errors.is_empty() { "-".to_owned() } else { errors.join(" ") }
            );
        }
        if self.inventory_transactions > 0 {
            let _ = writeln!(
                out,
                "inventory: {} durable transactions acknowledged (offers made and accepted, consumptions) = {:.0}/s",
                self.inventory_transactions, self.inventory_transactions_per_sec
            );
        }
        for gateway in &self.gateways {
            let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
            let _ = write!(
                out,
                "gateway {}: rss before {:.1} MiB",
                gateway.admin,
                mib(gateway.before.resident_bytes)
            );
            if let Some(peak) = &gateway.peak {
                let _ = write!(
                    out,
                    ", at peak {:.1} MiB with {} connections",
                    mib(peak.resident_bytes),
                    peak.connections
                );
            }
            if let Some(per_connection) = gateway.memory_per_connection_bytes {
                let _ = write!(out, " = {:.2} KiB per connection", per_connection / 1024.0);
            }
            let counted: Vec<String> =
                gateway.requests.iter().map(|(kind, count)| format!("{kind}={count}")).collect();
            let _ = write!(out, "; counted {}", counted.join(" "));
            if gateway.player_updates_accepted > 0 {
                let _ = write!(
                    out,
                    "; player updates accepted {}, rows flushed {} ({:.4} rows per update)",
                    gateway.player_updates_accepted,
                    gateway.player_rows_flushed,
                    gateway.player_rows_flushed as f64 / gateway.player_updates_accepted as f64
                );
                if let Some(lag) = gateway.flush_lag {
                    let _ = write!(
                        out,
                        "; flush lag at most {:.3} s in {} samples {} ms apart",
                        lag.max_secs,
                        lag.samples,
                        crate::FLUSH_LAG_SAMPLE_INTERVAL.as_millis()
                    );
                }
            }
            let _ = writeln!(out);
        }
        out
    }
}

fn kind_report(stats: &KindStats, elapsed_secs: f64) -> KindReport {
    let histogram = &stats.latency;
    let ms = |micros: u64| micros as f64 / 1000.0;
    let at = |q: f64| if histogram.is_empty() { 0.0 } else { ms(histogram.value_at_quantile(q)) };
    KindReport {
        count: stats.answered(),
        ok: stats.ok,
        per_sec: if elapsed_secs > 0.0 { stats.answered() as f64 / elapsed_secs } else { 0.0 },
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: if histogram.is_empty() { 0.0 } else { ms(histogram.max()) },
        mean_ms: if histogram.is_empty() { 0.0 } else { histogram.mean() / 1000.0 },
        errors: stats.errors.clone(),
        expected: stats.expected.clone(),
        latency: Some(histogram.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_per_connection_divides_by_the_connections_the_run_added() {
        let mib = 1024 * 1024;
        let before = Snapshot { resident_bytes: 100 * mib, connections: 100, ..Snapshot::default() };
        let peak = Snapshot { resident_bytes: 110 * mib, connections: 200, ..Snapshot::default() };
        let gateway = GatewayReport::new("admin".into(), before.clone(), Some(peak), before, None);
        // 10 MiB for the run's 100 connections; the 100 open before are in the memory before.
        assert_eq!(gateway.memory_per_connection_bytes, Some(10.0 * mib as f64 / 100.0));
    }
}
