//! Scraping a gateway's admin `/metrics` with a tiny HTTP/1.1 GET over a plain TCP stream (no
//! HTTP client dependency for one request), and reading the few series the reports need.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The figures of one scrape of one gateway.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// `process_resident_memory_bytes`.
    pub resident_bytes: u64,
    /// `gateway_connections`: open game connections.
    pub connections: u64,
    /// `gateway_requests_total` by request kind, then outcome.
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    /// `player_updates_accepted_total`: player-state updates acknowledged.
    pub player_updates_accepted: u64,
    /// `player_rows_flushed_total`: player-state rows the flusher wrote to SQLite.
    pub player_rows_flushed: u64,
    /// `player_flush_lag_seconds`: the age of the oldest update not yet in SQLite.
    pub player_flush_lag_secs: f64,
    /// `player_buffered`: players whose state is not yet in SQLite (0 without a buffer).
    pub player_buffered: u64,
}

impl Snapshot {
    /// Requests answered since `before`, by kind (all outcomes summed).
    pub fn requests_since(&self, before: &Snapshot) -> BTreeMap<String, u64> {
        let total = |snapshot: &Snapshot, kind: &str| -> u64 {
            snapshot.requests.get(kind).map_or(0, |outcomes| outcomes.values().sum())
        };
        self.requests
            .keys()
            .map(|kind| (kind.clone(), total(self, kind).saturating_sub(total(before, kind))))
            .filter(|(_, delta)| *delta > 0)
            .collect()
    }

    /// Requests answered since `before`, by kind and outcome.
    pub fn outcomes_since(&self, before: &Snapshot) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut deltas = BTreeMap::new();
        for (kind, outcomes) in &self.requests {
            for (outcome, count) in outcomes {
                let earlier = before.requests.get(kind).and_then(|o| o.get(outcome)).copied().unwrap_or(0);
                let delta = count.saturating_sub(earlier);
                if delta > 0 {
                    deltas.entry(kind.clone()).or_insert_with(BTreeMap::new).insert(outcome.clone(), delta);
                }
            }
        }
        deltas
    }
}

/// Scrapes `admin` (`http://host:port`, or just `host:port`).
///
/// # Errors
/// The port is unreachable, the answer is not `200`, or it does not parse.
pub async fn scrape(admin: &str) -> anyhow::Result<Snapshot> {
    let body = tokio::time::timeout(SCRAPE_TIMEOUT, get(admin, "/metrics"))
        .await
        .with_context(|| format!("scraping {admin}: timed out"))?
        .with_context(|| format!("scraping {admin}"))?;
    Ok(parse(&body))
}

/// Parses the Prometheus text format, keeping the series in [`Snapshot`].
pub fn parse(text: &str) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(exact) = value.trim().parse::<f64>() else { continue };
        // The counters and gauges read here are integers, but for the flush lag; the cast keeps
        // whole values exact.
        let value = exact as u64;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        match name {
            "player_flush_lag_seconds" => snapshot.player_flush_lag_secs = exact,
            "process_resident_memory_bytes" => snapshot.resident_bytes = value,
            "gateway_connections" => snapshot.connections = value,
            "player_updates_accepted_total" => snapshot.player_updates_accepted = value,
            "player_rows_flushed_total" => snapshot.player_rows_flushed = value,
            "player_buffered" => snapshot.player_buffered = value,
            "gateway_requests_total" => {
                let label = |key: &str| {
                    labels.split(',').find_map(|pair| {
                        pair.split_once('=')
                            .filter(|(k, _)| k.trim() == key)
                            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                    })
                };
                if let (Some(kind), Some(outcome)) = (label("request"), label("outcome")) {
                    snapshot.requests.entry(kind).or_default().insert(outcome, value);
                }
            }
            _ => {}
        }
    }
    snapshot
}

async fn get(admin: &str, path: &str) -> anyhow::Result<String> {
    let (status, body) = http(admin, "GET", path, &[], "").await?;
    if status != 200 {
        bail!("GET {path} answered {status}");
    }
    Ok(body)
}

/// `POST`s `body` (JSON) to `path` on `admin` with `Authorization: Bearer <bearer>`, and returns
/// the status and the body of the answer (for the admin port's service endpoints).
///
/// # Errors
/// The port is unreachable, or the answer is not HTTP.
pub async fn post_json(admin: &str, path: &str, bearer: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let headers =
        [("Authorization", format!("Bearer {bearer}")), ("Content-Type", "application/json".to_owned())];
    tokio::time::timeout(SCRAPE_TIMEOUT, http(admin, "POST", path, &headers, body))
        .await
        .with_context(|| format!("POST {admin}{path}: timed out"))?
}

/// One HTTP/1.1 request over a fresh connection: (status, body).
async fn http(
    admin: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let authority = admin.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head.split_whitespace().nth(1).and_then(|status| status.parse().ok()).unwrap_or(0);
    if head.lines().any(|line| line.to_ascii_lowercase().starts_with("transfer-encoding: chunked")) {
        return Ok((status, dechunk(body)));
    }
    Ok((status, body.to_owned()))
}

/// Joins the chunks of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_series_the_reports_need() {
        let text = "# HELP gateway_connections Open.\n# TYPE gateway_connections gauge\n\
                    gateway_connections 12\nprocess_resident_memory_bytes 4096000\n\
                    gateway_requests_total{request=\"ping\",outcome=\"ok\"} 70\n\
                    gateway_requests_total{request=\"login\",outcome=\"unauthorized\"} 2\n\
                    gateway_requests_total{request=\"login\",outcome=\"ok\"} 3\n\
                    player_updates_accepted_total 1200\nplayer_rows_flushed_total 60\n\
                    player_flush_lag_seconds 0.375\nplayer_buffered 7\n";
        let after = parse(text);
        assert_eq!(after.connections, 12);
        assert_eq!((after.player_updates_accepted, after.player_rows_flushed), (1200, 60));
        assert!((after.player_flush_lag_secs - 0.375).abs() < 1e-9);
        assert_eq!(after.player_buffered, 7);
        assert_eq!(after.resident_bytes, 4_096_000);
        let before = parse("gateway_requests_total{request=\"ping\",outcome=\"ok\"} 20\n");
        let deltas = after.requests_since(&before);
        assert_eq!(deltas.get("ping"), Some(&50));
        assert_eq!(deltas.get("login"), Some(&5));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
