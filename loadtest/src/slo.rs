//! Service level objectives a run must meet: `p99<20ms`, `p99.9<50ms`, `max<1s`, `errors<0.1%`,
//! each optionally scoped to one request kind (`ping:p99<5ms`). Unscoped latency objectives apply
//! to every request kind in the report (not to `connect`); unscoped error objectives to all
//! attempts together.

use std::fmt;

use crate::report::{KindReport, Report};
use crate::stats::CONNECT;

/// One objective.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// The request kind it applies to; `None` for all.
    pub scope: Option<String>,
    /// What is measured.
    pub metric: Metric,
    /// The bound the measurement must stay below: milliseconds, or a fraction for errors.
    pub below: f64,
    text: String,
}

/// What an objective measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A latency percentile (99.0 for p99), in ms; kept as written so 99.9 stays exactly 99.9.
    Percentile(f64),
    /// The error rate, as a fraction of attempts.
    Errors,
}

/// The outcome of checking one objective.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The objective as written.
    pub slo: String,
    /// What was measured (ms or fraction); for unscoped latency the worst kind.
    pub measured: f64,
    /// Where the worst measurement came from.
    pub kind: String,
    /// Whether the objective was met.
    pub met: bool,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.met { "met" } else { "MISSED" };
        if self.slo.contains("errors") {
            write!(f, "{verdict}: {} (measured {:.4}% in {})", self.slo, self.measured * 100.0, self.kind)
        } else {
            write!(f, "{verdict}: {} (measured {:.3} ms in {})", self.slo, self.measured, self.kind)
        }
    }
}

impl Slo {
    /// Parses `[kind:]metric<value`.
    ///
    /// # Errors
    /// Says what is wrong with the text.
    pub fn parse(text: &str) -> Result<Slo, String> {
        let (scope, rest) = match text.split_once(':') {
            Some((scope, rest)) => (Some(scope.trim().to_owned()), rest),
            None => (None, text),
        };
        let (metric, value) =
            rest.split_once('<').ok_or_else(|| format!("{text:?}: expected metric<value"))?;
        let metric = match metric.trim() {
            "errors" => Metric::Errors,
            "max" => Metric::Percentile(100.0),
            name => {
                let percent: f64 = name
                    .strip_prefix('p')
                    .and_then(|p| p.parse().ok())
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| {
                        format!("{text:?}: unknown metric {name:?} (p50, p99, p99.9, max, errors)")
                    })?;
                Metric::Percentile(percent)
            }
        };
        let value = value.trim();
        let below = match metric {
            Metric::Errors => match value.strip_suffix('%') {
                Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
                None => value.parse::<f64>(),
            }
            .map_err(|_| format!("{text:?}: bad error rate {value:?}"))?,
            Metric::Percentile(_) => {
                parse_ms(value).ok_or_else(|| format!("{text:?}: bad duration {value:?}"))?
            }
        };
        Ok(Slo { scope, metric, below, text: text.to_owned() })
    }

    /// Checks the objective against `report`.
    pub fn check(&self, report: &Report) -> Check {
        let in_scope = |kind: &str| match &self.scope {
            Some(scope) => kind == scope,
            None => kind != CONNECT,
        };
        let (measured, kind) = match self.metric {
            Metric::Errors => {
                let (errors, attempts) = report
                    .kinds
                    .iter()
                    .filter(|(kind, _)| self.scope.is_none() || in_scope(kind))
                    .fold((0, 0), |(e, a), (_, k)| (e + k.n_errors(), a + k.n_attempts()));
                let rate = if attempts == 0 { 0.0 } else { errors as f64 / attempts as f64 };
                (rate, self.scope.clone().unwrap_or_else(|| "all".into()))
            }
            Metric::Percentile(percent) => report
                .kinds
                .iter()
                .filter(|(kind, _)| in_scope(kind))
                .map(|(kind, k)| (latency_at(k, percent), kind.clone()))
                .fold((0.0, "none".to_owned()), |worst, next| if next.0 > worst.0 { next } else { worst }),
        };
        // A scoped latency objective over a kind that never ran cannot be met.
        let ran = self.scope.as_ref().is_none_or(|scope| report.kinds.contains_key(scope));
        Check { slo: self.text.clone(), measured, kind, met: ran && measured < self.below }
    }
}

/// The latency at `percent` of a kind's requests, in ms, counting those that got no answer as
/// slower than any that did: infinite when more went unanswered than the percentile leaves out
/// (every ping timing out must not read as a p99 of 0). Below that, the answered requests'
/// latency at the rank the percentile has among all requests, which the unanswered ones push up
/// (with 1 % unanswered, the p99 of all is the slowest answer).
fn latency_at(kind: &KindReport, percent: f64) -> f64 {
    let answered = kind.count as f64;
    let unanswered = kind.n_unanswered() as f64;
    let requests = answered + unanswered;
    if requests == 0.0 || unanswered > (1.0 - percent / 100.0) * requests {
        return f64::INFINITY;
    }
    let among_answered = (percent / 100.0 * requests / answered).min(1.0);
    kind.quantile_ms(among_answered).unwrap_or(f64::INFINITY)
}

/// `20ms`, `500us`, `1.5s` or a bare number of ms, in ms.
fn parse_ms(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix("us").or_else(|| value.strip_suffix("µs")) {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (value, 1.0)
    };
    number.trim().parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0).map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use proto::{ErrorBody, ErrorCode, Outcome};

    use super::*;
    use crate::stats::{CHAT_DELIVERY, Recorder};

    fn check(text: &str, scope: Option<&str>, metric: Metric, below: f64) {
        let slo = Slo::parse(text).expect(text);
        assert_eq!(slo.scope.as_deref(), scope, "{text}");
        assert_eq!(slo.metric, metric, "{text}");
        assert!((slo.below - below).abs() < 1e-12, "{text}: {}", slo.below);
    }

    #[test]
    fn objectives_parse_with_units_and_scopes() {
        check("p99<20ms", None, Metric::Percentile(99.0), 20.0);
        check("p99.9<50ms", None, Metric::Percentile(99.9), 50.0);
        check("ping:p99<500us", Some("ping"), Metric::Percentile(99.0), 0.5);
        check("max<1.5s", None, Metric::Percentile(100.0), 1500.0);
        check("errors<0.1%", None, Metric::Errors, 0.001);
        check("login:errors<0.01", Some("login"), Metric::Errors, 0.01);
    }

    fn ping_report(answered: u64, timed_out: u64) -> Report {
        let ping = KindReport {
            count: answered,
            ok: answered,
            per_sec: 0.0,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: 3.0,
            p999_ms: 4.0,
            max_ms: 5.0,
            mean_ms: 1.0,
            errors: BTreeMap::from([("timeout".to_owned(), timed_out)]),
            expected: BTreeMap::new(),
            latency: None,
        };
        Report {
            scenario: "ping".into(),
            clients: 1,
            elapsed_secs: 1.0,
            kinds: BTreeMap::from([("ping".to_owned(), ping)]),
            total_errors: timed_out,
            server_requests: BTreeMap::new(),
            inventory_transactions: 0,
            inventory_transactions_per_sec: 0.0,
            gateways: Vec::new(),
        }
    }

    #[test]
    fn requests_that_got_no_answer_count_as_slower_than_any_answer() {
        let slo = Slo::parse("ping:p99<20ms").expect("an objective");
        assert!(slo.check(&ping_report(1000, 0)).met, "every ping answered in 3 ms");
        assert!(slo.check(&ping_report(1000, 5)).met, "0.5 % unanswered is within the 1 % p99 leaves out");
        assert!(!slo.check(&ping_report(1000, 20)).met, "2 % unanswered puts p99 among them");
        assert!(!slo.check(&ping_report(0, 1000)).met, "every ping timed out");
    }

    #[test]
    fn deliveries_that_never_came_count_as_slower_than_any_that_did() {
        let recorder = Recorder::default();
        for _ in 0..1000 {
            recorder.observed(0, CHAT_DELIVERY, Duration::from_millis(5));
        }
        recorder.failed_many(0, CHAT_DELIVERY, "undelivered", 50);
        let report = Report::new("chat".into(), 1, 1.0, &recorder.snapshot(), Vec::new());
        let slo = Slo::parse("chat_delivery:p99<50ms").expect("an objective");
        assert!(!slo.check(&report).met, "5 % of the messages never arrived:\n{}", report.render());
    }

    #[test]
    fn an_error_answer_is_one_attempt_that_failed() {
        let recorder = Recorder::default();
        let unavailable = Outcome::Error(ErrorBody::new(ErrorCode::Unavailable, "Redis is down"));
        for _ in 0..1000 {
            recorder.answered(0, "update_state", Duration::from_millis(1), &unavailable, false);
        }
        let report = Report::new("state".into(), 1, 1.0, &recorder.snapshot(), Vec::new());
        assert_eq!(report.total_attempts(), 1000, "{}", report.render());
        let check = Slo::parse("errors<60%").expect("an objective").check(&report);
        assert_eq!(check.measured, 1.0, "every update was refused: {check}");
        assert!(!check.met, "{check}");
    }

    #[test]
    fn unanswered_requests_push_the_percentile_up_among_the_answered_ones() {
        let recorder = Recorder::default();
        let pong = Outcome::Ok(proto::Reply::Pong { server_time_ms: 0 });
        // 990 fast answers, 10 slow ones, and 9 requests that timed out: of the 1,009 requests
        // the 999th fastest, the p99, is a slow answer.
        for n in 0..1000 {
            let latency = Duration::from_millis(if n < 990 { 1 } else { 100 });
            recorder.answered(0, "ping", latency, &pong, false);
        }
        recorder.failed_many(0, "ping", "timeout", 9);
        let report = Report::new("ping".into(), 1, 1.0, &recorder.snapshot(), Vec::new());
        let check = Slo::parse("ping:p99<20ms").expect("an objective").check(&report);
        assert!(!check.met, "{check}");
        assert!((check.measured - 100.0).abs() < 0.1, "{check}");
        // Any percentile reads from the histogram, not only the few the table shows.
        let check = Slo::parse("ping:p95<20ms").expect("an objective").check(&report);
        assert!(check.met && (check.measured - 1.0).abs() < 0.01, "{check}");
    }

    #[test]
    fn malformed_objectives_are_refused() {
        for text in ["p99>20ms", "q99<20ms", "p99<fast", "errors<lots%", "p101<1ms"] {
            assert!(Slo::parse(text).is_err(), "{text}");
        }
    }
}
