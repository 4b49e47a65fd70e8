//! What the server counts (RPCs, queries, connections) and its Prometheus text at `/metrics`.
//!
//! [`Metrics`] is one set of counters per server, shared by the gRPC wrapper ([`rpc`]), the
//! query log of the Flight service and the connection gate of the server. Gauges that
//! describe the present (running queries, reserved memory, open connections) are not kept
//! here: the server reads them at scrape time and hands them to [`Metrics::render`].
//!
//! Every label has a small, fixed set of values (method names, gRPC code names, statement
//! kinds), so no client can make the output grow.

pub mod rpc;

use std::time::Duration;

use datafusion::physical_plan::ExecutionPlan;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Code;

pub use rpc::RpcMetricsLayer;

/// The `Content-Type` of [`Metrics::render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the query duration buckets, in seconds: 5 ms to an hour.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    kind: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The counters of one server; see the module documentation.
pub struct Metrics {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    queries: Family<QueryLabels, Counter>,
    query_duration: Family<KindLabel, Histogram, fn() -> Histogram>,
    rows: Counter,
    bytes: Counter,
    spills: Counter,
    spilled_bytes: Counter,
    cancelled: Counter,
    timed_out: Counter,
    connections_accepted: Counter,
    connections_refused: Counter,
    connections_timed_out: Counter,
    live: LiveMetrics,
}

/// The gauges set from a [`Live`] reading at each scrape.
#[derive(Default)]
struct LiveMetrics {
    running: Gauge,
    queued: Gauge,
    memory_reserved: Gauge,
    memory_limit: Gauge,
    connections_open: Gauge,
    connections_limit: Gauge,
}

/// The state of the server at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    /// Queries running now.
    pub running_queries: usize,
    /// Queries waiting for a slot now.
    pub queued_queries: usize,
    /// Bytes reserved in the memory pool now.
    pub memory_reserved: usize,
    /// The memory pool's limit.
    pub memory_limit: usize,
    /// Client connections open now.
    pub connections_open: usize,
    /// Client connections allowed at once (`--max-connections`).
    pub connections_limit: usize,
}

/// How one statement ended, for [`Metrics::query_finished`].
#[derive(Debug, Clone, Copy)]
pub struct QueryOutcome<'a> {
    /// `query` (streams rows) or `statement` (DDL, SET, …).
    pub kind: &'static str,
    /// The gRPC code it ended with.
    pub code: Code,
    /// How long it ran.
    pub elapsed: Duration,
    /// Rows streamed to the client.
    pub rows: u64,
    /// Arrow IPC bytes streamed to the client.
    pub bytes: u64,
    /// Its physical plan, if it got that far: its operators' metrics say what spilled.
    pub plan: Option<&'a dyn ExecutionPlan>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            rpcs: Family::default(),
            queries: Family::default(),
            query_duration: Family::new_with_constructor(duration_histogram),
            rows: Counter::default(),
            bytes: Counter::default(),
            spills: Counter::default(),
            spilled_bytes: Counter::default(),
            cancelled: Counter::default(),
            timed_out: Counter::default(),
            connections_accepted: Counter::default(),
            connections_refused: Counter::default(),
            connections_timed_out: Counter::default(),
            live: LiveMetrics::default(),
        };
        metrics.register();
        metrics
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "flightbear_rpcs",
            "gRPC calls answered, by method and status code (a stream the client dropped is CANCELLED)",
            self.rpcs.clone(),
        );
        r.register(
            "flightbear_queries",
            "Statements finished, by kind (query, statement, planning) and status code",
            self.queries.clone(),
        );
        r.register(
            "flightbear_query_duration_seconds",
            "How long statements ran, by kind (query, statement)",
            self.query_duration.clone(),
        );
        r.register(
            "flightbear_query_rows",
            "Rows streamed to clients",
            self.rows.clone(),
        );
        r.register(
            "flightbear_query_bytes",
            "Arrow IPC bytes streamed to clients",
            self.bytes.clone(),
        );
        r.register(
            "flightbear_query_spills",
            "Spill files written by sorts, aggregations and joins short of memory",
            self.spills.clone(),
        );
        r.register(
            "flightbear_query_spilled_bytes",
            "Bytes written to spill files",
            self.spilled_bytes.clone(),
        );
        r.register(
            "flightbear_queries_cancelled",
            "Statements that ended CANCELLED (client went away, or CancelFlightInfo)",
            self.cancelled.clone(),
        );
        r.register(
            "flightbear_queries_timed_out",
            "Statements that ended DEADLINE_EXCEEDED (--query-timeout or the client's deadline)",
            self.timed_out.clone(),
        );
        r.register(
            "flightbear_queries_running",
            "Queries running now",
            self.live.running.clone(),
        );
        r.register(
            "flightbear_queries_queued",
            "Queries waiting for a slot now (--max-concurrent-queries)",
            self.live.queued.clone(),
        );
        r.register(
            "flightbear_memory_reserved_bytes",
            "Memory reserved by queries in the memory pool now",
            self.live.memory_reserved.clone(),
        );
        r.register(
            "flightbear_memory_limit_bytes",
            "The memory pool's limit (--memory-limit)",
            self.live.memory_limit.clone(),
        );
        r.register(
            "flightbear_connections_open",
            "Client connections open now",
            self.live.connections_open.clone(),
        );
        r.register(
            "flightbear_connections_limit",
            "Client connections allowed at once (--max-connections)",
            self.live.connections_limit.clone(),
        );
        r.register(
            "flightbear_connections_accepted",
            "Client connections accepted",
            self.connections_accepted.clone(),
        );
        r.register(
            "flightbear_connections_refused",
            "Client connections closed at once because --max-connections were open",
            self.connections_refused.clone(),
        );
        r.register(
            "flightbear_connections_timed_out",
            "Client connections closed for silence (--idle-timeout, or no HTTP/2 preface in time)",
            self.connections_timed_out.clone(),
        );
    }

    /// A gRPC call answered `code`.
    pub fn rpc_finished(&self, method: &'static str, code: Code) {
        self.rpcs
            .get_or_create(&RpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
    }

    /// A statement ended (successfully or not): counts, duration, rows, bytes and spills.
    pub fn query_finished(&self, outcome: &QueryOutcome<'_>) {
        self.count_query(outcome.kind, outcome.code);
        self.query_duration
            .get_or_create(&KindLabel { kind: outcome.kind })
            .observe(outcome.elapsed.as_secs_f64());
        self.rows.inc_by(outcome.rows);
        self.bytes.inc_by(outcome.bytes);
        if let Some(plan) = outcome.plan {
            let spills = Spills::of(plan);
            self.spills.inc_by(spills.files);
            self.spilled_bytes.inc_by(spills.bytes);
        }
    }

    /// A statement failed before it could run (while planning, or waiting for a slot).
    pub fn planning_failed(&self, code: Code) {
        self.count_query("planning", code);
    }

    fn count_query(&self, kind: &'static str, code: Code) {
        self.queries
            .get_or_create(&QueryLabels {
                kind,
                code: code_name(code),
            })
            .inc();
        match code {
            Code::Cancelled => {
                self.cancelled.inc();
            }
            Code::DeadlineExceeded => {
                self.timed_out.inc();
            }
            _ => {}
        }
    }

    /// A client connection was accepted.
    pub fn connection_accepted(&self) {
        self.connections_accepted.inc();
    }

    /// A client connection was closed at once: too many were open.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// A client connection was closed because it was silent too long.
    pub fn connection_timed_out(&self) {
        self.connections_timed_out.inc();
    }

    /// Everything in the Prometheus text format, with the gauges read from `live`.
    pub fn render(&self, live: &Live) -> String {
        let gauges = &self.live;
        gauges.running.set(gauge_value(live.running_queries));
        gauges.queued.set(gauge_value(live.queued_queries));
        gauges
            .memory_reserved
            .set(gauge_value(live.memory_reserved));
        gauges.memory_limit.set(gauge_value(live.memory_limit));
        gauges
            .connections_open
            .set(gauge_value(live.connections_open));
        gauges
            .connections_limit
            .set(gauge_value(live.connections_limit));
        let mut text = String::new();
        // Writing into a String cannot fail, and our label values need no escaping.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

fn gauge_value(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What a plan's operators spilled, summed over the whole tree.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Spills {
    /// Spill files written.
    pub files: u64,
    /// Bytes written to them.
    pub bytes: u64,
}

impl Spills {
    /// The spills recorded in the metrics of `plan` and every operator below it.
    pub fn of(plan: &dyn ExecutionPlan) -> Self {
        let mut spills = Self::default();
        let mut pending = vec![plan];
        while let Some(node) = pending.pop() {
            if let Some(metrics) = node.metrics() {
                spills.files += metrics.spill_count().unwrap_or(0) as u64;
                spills.bytes += metrics.spilled_bytes().unwrap_or(0) as u64;
            }
            pending.extend(node.children().into_iter().map(|child| child.as_ref()));
        }
        spills
    }
}

/// The name gRPC gives a status code (`OK`, `INVALID_ARGUMENT`, …).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use std::sync::Arc;

    /// The value of the sample `line_start` (name and labels) in `text`.
    fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(line_start)?.strip_prefix(' '))
            .map(|value| value.parse().expect("a number"))
    }

    #[test]
    fn every_metric_has_help_and_type_and_the_flightbear_prefix() {
        let metrics = Metrics::new();
        // Families with labels appear once they have a sample.
        metrics.rpc_finished("DoGet", Code::Ok);
        metrics.query_finished(&QueryOutcome {
            kind: "statement",
            code: Code::Ok,
            elapsed: Duration::ZERO,
            rows: 0,
            bytes: 0,
            plan: None,
        });
        let text = metrics.render(&Live::default());
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            assert!(line.starts_with("flightbear_"), "{line}");
        }
        for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
        }
        assert!(
            text.contains("# TYPE flightbear_rpcs_total counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE flightbear_query_duration_seconds histogram"));
        assert!(text.contains("# TYPE flightbear_queries_running gauge"));
    }

    #[test]
    fn finished_queries_are_counted_by_kind_and_code_with_cancellations_and_timeouts() {
        let metrics = Metrics::new();
        let outcome = |code| QueryOutcome {
            kind: "query",
            code,
            elapsed: Duration::from_millis(30),
            rows: 10,
            bytes: 1000,
            plan: None,
        };
        metrics.query_finished(&outcome(Code::Ok));
        metrics.query_finished(&outcome(Code::Cancelled));
        metrics.query_finished(&outcome(Code::DeadlineExceeded));
        metrics.planning_failed(Code::InvalidArgument);
        metrics.rpc_finished("DoGet", Code::Ok);
        let text = metrics.render(&Live {
            running_queries: 2,
            memory_limit: 1 << 20,
            ..Live::default()
        });
        let count = |labels: &str| {
            let value = sample(&text, labels);
            assert!(value.is_some(), "no {labels} in\n{text}");
            value
        };
        assert_eq!(
            count(r#"flightbear_queries_total{kind="query",code="OK"}"#),
            Some(1.0)
        );
        assert_eq!(
            count(r#"flightbear_queries_total{kind="planning",code="INVALID_ARGUMENT"}"#),
            Some(1.0)
        );
        assert_eq!(count("flightbear_queries_cancelled_total"), Some(1.0));
        assert_eq!(count("flightbear_queries_timed_out_total"), Some(1.0));
        assert_eq!(count("flightbear_query_rows_total"), Some(30.0));
        assert_eq!(count("flightbear_query_bytes_total"), Some(3000.0));
        assert_eq!(
            count(r#"flightbear_query_duration_seconds_count{kind="query"}"#),
            Some(3.0)
        );
        assert_eq!(
            count(r#"flightbear_query_duration_seconds_bucket{kind="query",le="0.05"}"#),
            Some(3.0)
        );
        assert_eq!(
            count(r#"flightbear_rpcs_total{method="DoGet",code="OK"}"#),
            Some(1.0)
        );
        assert_eq!(count("flightbear_queries_running"), Some(2.0));
        assert_eq!(count("flightbear_memory_limit_bytes"), Some(1048576.0));
    }

    #[tokio::test]
    async fn spills_are_summed_over_the_plan_tree() {
        // A sort of ~16 MB of rows in a 4 MiB pool has to spill to answer.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(4 << 20)))
            .build_arc()
            .unwrap();
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_sort_spill_reservation_bytes(1 << 20);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let frame = ctx
            .sql("SELECT value FROM generate_series(1, 2000000) ORDER BY value DESC")
            .await
            .unwrap();
        let plan = frame.create_physical_plan().await.unwrap();
        assert_eq!(Spills::of(plan.as_ref()), Spills::default());
        let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            2_000_000
        );
        let spills = Spills::of(plan.as_ref());
        assert!(spills.files > 0 && spills.bytes > 0, "{spills:?}");

        let metrics = Metrics::new();
        metrics.query_finished(&QueryOutcome {
            kind: "query",
            code: Code::Ok,
            elapsed: Duration::from_secs(1),
            rows: 0,
            bytes: 0,
            plan: Some(plan.as_ref()),
        });
        let text = metrics.render(&Live::default());
        assert_eq!(
            sample(&text, "flightbear_query_spills_total"),
            Some(spills.files as f64)
        );
    }

    #[test]
    fn code_names_are_grpc_names() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::from_i32(4)), "DEADLINE_EXCEEDED");
    }
}
