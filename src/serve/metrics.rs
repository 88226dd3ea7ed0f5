//! Counters per function, rendered in the Prometheus text format.
//!
//! Updated on every request with relaxed atomics only: no lock and no
//! allocation on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Why a request was turned away before a function ran.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// The tenant or the function was at its concurrency limit, or the
    /// instance pool was full (503).
    Concurrency,
    /// The body was larger than allowed (413).
    BodySize,
}

#[derive(Debug, Default)]
pub struct FunctionMetrics {
    /// Responses by status class: 1xx..5xx.
    responses: [AtomicU64; 5],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    in_flight: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    memory_limits: AtomicU64,
    failures: AtomicU64,
    rejected_concurrency: AtomicU64,
    rejected_body: AtomicU64,
}

impl FunctionMetrics {
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// An instance (or a request that never got one) has ended.
    pub fn ended(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Counts how an instance ended.
    pub fn finished(&self, outcome: &wrun_runtime::Outcome) {
        use wrun_runtime::Outcome;
        let counter = match outcome {
            Outcome::Done => return,
            Outcome::Trap(_) => &self.traps,
            Outcome::Timeout => &self.timeouts,
            Outcome::BodyTimeout => &self.body_timeouts,
            Outcome::Memory(_) => &self.memory_limits,
            Outcome::Failed(_) => &self.failures,
            Outcome::Busy(_) => &self.rejected_concurrency,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn responded(&self, status: u16, latency: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
        let seconds = latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_sum_us.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
        self.latency_count.fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, why: Rejection) {
        match why {
            Rejection::Concurrency => &self.rejected_concurrency,
            Rejection::BodySize => &self.rejected_body,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }
}

/// One function's series, for rendering.
pub struct Series<'a> {
    pub tenant: &'a str,
    pub function: &'a str,
    pub metrics: &'a FunctionMetrics,
    pub idle_instances: usize,
}

/// Renders every function's series; `unrouted` counts requests no route took.
pub fn render(series: &[Series<'_>], unrouted: u64) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, lines: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        lines(&mut out);
    };
    let labels = |s: &Series<'_>| format!("tenant=\"{}\",function=\"{}\"", s.tenant, s.function);
    family(
        "wrun_requests_total",
        "counter",
        "Responses sent, by status class.",
        &mut |out| {
            for s in series {
                for (i, count) in s.metrics.responses.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "wrun_requests_total{{{},code=\"{}xx\"}} {}",
                        labels(s),
                        i + 1,
                        count.load(Relaxed)
                    );
                }
            }
        },
    );
    family(
        "wrun_request_duration_seconds",
        "histogram",
        "Time from receiving a request to sending the response head.",
        &mut |out| {
            for s in series {
                let l = labels(s);
                let mut cumulative = 0;
                for (bound, count) in BUCKETS.iter().zip(&s.metrics.latency_buckets) {
                    cumulative += count.load(Relaxed);
                    let _ = writeln!(
                        out,
                        "wrun_request_duration_seconds_bucket{{{l},le=\"{bound}\"}} {cumulative}"
                    );
                }
                let total = s.metrics.latency_count.load(Relaxed);
                let sum = s.metrics.latency_sum_us.load(Relaxed) as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "wrun_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {total}\n\
                     wrun_request_duration_seconds_sum{{{l}}} {sum}\n\
                     wrun_request_duration_seconds_count{{{l}}} {total}"
                );
            }
        },
    );
    let mut simple = |name: &str, kind: &str, help: &str, value: &dyn Fn(&Series<'_>) -> u64| {
        family(name, kind, help, &mut |out| {
            for s in series {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(s), value(s));
            }
        });
    };
    simple(
        "wrun_instances_in_flight",
        "gauge",
        "Instances running a request now.",
        &|s| s.metrics.in_flight.load(Relaxed),
    );
    simple(
        "wrun_instances_pooled",
        "gauge",
        "Instances kept for reuse (functions with max_instance_reuse > 1).",
        &|s| s.idle_instances as u64,
    );
    simple(
        "wrun_traps_total",
        "counter",
        "Requests whose instance trapped.",
        &|s| s.metrics.traps.load(Relaxed),
    );
    simple(
        "wrun_timeouts_total",
        "counter",
        "Requests stopped at their time limit while the function ran (504).",
        &|s| s.metrics.timeouts.load(Relaxed),
    );
    simple(
        "wrun_body_timeouts_total",
        "counter",
        "Requests whose body had not arrived when their time limit was reached (408).",
        &|s| s.metrics.body_timeouts.load(Relaxed),
    );
    simple(
        "wrun_memory_limit_total",
        "counter",
        "Requests whose instance ran out of its memory limit.",
        &|s| s.metrics.memory_limits.load(Relaxed),
    );
    simple(
        "wrun_function_failures_total",
        "counter",
        "Requests the function answered outside the protocol (no response, bad CGI output, non-zero exit).",
        &|s| s.metrics.failures.load(Relaxed),
    );
    family(
        "wrun_rejections_total",
        "counter",
        "Requests turned away before the function ran.",
        &mut |out| {
            for s in series {
                let l = labels(s);
                let _ = writeln!(
                    out,
                    "wrun_rejections_total{{{l},reason=\"concurrency\"}} {}\n\
                     wrun_rejections_total{{{l},reason=\"body_size\"}} {}",
                    s.metrics.rejected_concurrency.load(Relaxed),
                    s.metrics.rejected_body.load(Relaxed)
                );
            }
        },
    );
    let _ = writeln!(
        out,
        "# HELP wrun_unrouted_requests_total Requests no route matched (404).\n\
         # TYPE wrun_unrouted_requests_total counter\nwrun_unrouted_requests_total {unrouted}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histogram_and_counters() {
        let m = FunctionMetrics::default();
        m.started();
        m.responded(200, Duration::from_micros(700));
        m.responded(503, Duration::from_millis(3));
        m.finished(&wrun_runtime::Outcome::Timeout);
        m.finished(&wrun_runtime::Outcome::BodyTimeout);
        m.ended();
        m.rejected(Rejection::Concurrency);
        let text = render(
            &[Series {
                tenant: "a",
                function: "f",
                metrics: &m,
                idle_instances: 0,
            }],
            2,
        );
        assert!(text.contains("wrun_requests_total{tenant=\"a\",function=\"f\",code=\"2xx\"} 1"));
        assert!(text.contains("wrun_requests_total{tenant=\"a\",function=\"f\",code=\"5xx\"} 1"));
        assert!(text.contains(
            "wrun_request_duration_seconds_bucket{tenant=\"a\",function=\"f\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "wrun_request_duration_seconds_bucket{tenant=\"a\",function=\"f\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("wrun_timeouts_total{tenant=\"a\",function=\"f\"} 1"));
        assert!(text.contains("wrun_body_timeouts_total{tenant=\"a\",function=\"f\"} 1"));
        assert!(text.contains("wrun_instances_in_flight{tenant=\"a\",function=\"f\"} 0"));
        assert!(text.contains("reason=\"concurrency\"} 1"));
        assert!(text.contains("wrun_unrouted_requests_total 2"));
    }
}
