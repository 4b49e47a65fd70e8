//! Statements: the FlightInfo and schema of a query without running it, its result stream, updates, and the query log.
//!
//! Everything here runs on the query runtime under the server's limits (a query slot, the
//! deadline, cancellation); results come back to the gRPC runtime over a small channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Code, Status};

use super::deadline::Deadline;
use super::error::{ServiceError, shortened};
use super::executor::{QueryTask, unless_panicked};
use super::handle::StatementHandle;
use super::planner::{Planned, Planner};
use super::request::Request;
use super::running::new_query_id;
use super::sessions::Session;
use super::settings::{Change, Settings};
use super::{BoxStream, FlightbearService, wire};
use crate::metrics::{Metrics, QueryOutcome};

/// Flight messages buffered between a running query and its gRPC stream.
const RESULT_CHANNEL_CAPACITY: usize = 1;

/// A Flight message on its way to the client, with the memory it holds reserved: the message
/// and the copy tonic encodes it into, until the gRPC layer asks for the next message.
type Outgoing = Result<(FlightData, MemoryReservation), Status>;

impl FlightbearService {
    /// GetFlightInfo for a statement: plan only, return the exact schema DoGet will stream.
    /// DDL runs now, once; its FlightInfo has no endpoint.
    pub(super) async fn statement_info(
        &self,
        mut handle: StatementHandle,
        descriptor: FlightDescriptor,
        deadline: Option<Deadline>,
        session: Session,
    ) -> Result<FlightInfo, ServiceError> {
        let service = self.clone();
        let sql = handle.sql.clone();
        // The outer error is a failure to plan; the inner one, of a statement that ran (and
        // logged itself, even when the deadline stopped it).
        let ran = Arc::new(AtomicBool::new(false));
        let started = Arc::clone(&ran);
        let planned = self
            .run_limited(deadline, async move {
                // The ticket carries the parameters, so any replica can stream it.
                let rows = service.parameter_rows(&mut handle)?;
                Ok(
                    match service
                        .planner
                        .plan(&handle.sql, &handle.settings, &rows[0])
                        .await?
                    {
                        Planned::NoRows(plan, ctx) => {
                            started.store(true, Ordering::Relaxed);
                            service
                                .run_statements(&handle, plan, ctx, &rows, &session, deadline)
                                .await
                                .map(|_| None)
                        }
                        Planned::Rows(physical, _) => {
                            // A fresh id per FlightInfo, so CancelFlightInfo finds its streams.
                            handle.query_id = new_query_id();
                            let schema = service.wire_schema(&physical.schema());
                            Ok(Some((executions_schema(schema, rows.len()), handle)))
                        }
                    },
                )
            })
            .await;
        let Some((schema, handle)) =
            planned.inspect_err(|e| self.failed_before_running(&sql, e, &ran))??
        else {
            return Ok(FlightInfo::new()
                .try_with_schema(&Schema::empty())?
                .with_descriptor(descriptor)
                .with_total_records(0));
        };
        Ok(FlightInfo::new()
            .try_with_schema(&schema)?
            .with_endpoint(FlightEndpoint::new().with_ticket(statement_ticket(&handle)))
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_total_bytes(-1)
            .with_ordered(true))
    }

    /// The schema a statement's results will have, without running it.
    pub(super) async fn statement_schema(
        &self,
        mut handle: StatementHandle,
        deadline: Option<Deadline>,
    ) -> Result<SchemaRef, ServiceError> {
        let service = self.clone();
        let sql = handle.sql.clone();
        self.run_limited(deadline, async move {
            let rows = service.parameter_rows(&mut handle)?;
            Ok(
                match service
                    .planner
                    .plan(&handle.sql, &handle.settings, &rows[0])
                    .await?
                {
                    Planned::NoRows(..) => Arc::new(Schema::empty()),
                    Planned::Rows(physical, _) => {
                        executions_schema(service.wire_schema(&physical.schema()), rows.len())
                    }
                },
            )
        })
        .await
        .inspect_err(|e| self.planning_failed(&sql, e))
    }

    /// DoGet for a statement: run it on the query runtime and stream batches as they come.
    ///
    /// The query stops when the client drops the stream, when CancelFlightInfo names its
    /// query id, or at its deadline; the stream then ends with CANCELLED or DEADLINE_EXCEEDED.
    pub(super) async fn statement_stream(
        &self,
        handle: StatementHandle,
        deadline: Option<Deadline>,
    ) -> Result<BoxStream<FlightData>, ServiceError> {
        let registration = self.queries.register(&handle.query_id)?;
        let slot = self.queries.admit().await?;
        let (sender, receiver) = mpsc::channel(RESULT_CHANNEL_CAPACITY);
        let service = self.clone();
        let task = self.executor.spawn_query(async move {
            let _slot = slot;
            let mut log = QueryLog::new(&service.metrics, &handle.sql, "query").until(deadline);
            let cancelled = registration.token().clone();
            let outcome = tokio::select! {
                biased;
                () = cancelled.cancelled() => Err(ServiceError::Cancelled(
                    "the query was cancelled (CancelFlightInfo)".into(),
                )),
                () = sleep_until(deadline) => Err(deadline_error(deadline)),
                outcome = unless_panicked(service.produce(handle, &sender, &log)) => outcome,
            };
            log.finish(&outcome);
            if let Err(error) = outcome {
                // The client may be gone already; then nobody needs to hear about it.
                let _ = sender.send(Err(error.into())).await;
            }
        })?;
        Ok(Box::pin(ResultStream {
            receiver,
            in_flight: None,
            _task: task,
        }))
    }

    /// Plans and runs a statement, sending its Flight messages until the end or an error.
    /// With several parameter rows, the results of each row follow one another in one stream.
    async fn produce(
        &self,
        mut handle: StatementHandle,
        sender: &mpsc::Sender<Outgoing>,
        log: &QueryLog,
    ) -> Result<(), ServiceError> {
        let pool = &self.planner.catalog().runtime_env().memory_pool;
        let results =
            MemoryConsumer::new("query results on their way to the client").register(pool);
        let mut rows = self.parameter_rows(&mut handle)?;
        let later_rows = rows.split_off(1);
        let executions = later_rows.len() + 1;
        let (schema, batches) = match self
            .planner
            .plan(&handle.sql, &handle.settings, &rows[0])
            .await?
        {
            Planned::NoRows(LogicalPlan::Ddl(ddl), _) => {
                return Err(ServiceError::PermissionDenied(format!(
                    "{} runs from GetFlightInfo or DoPut, never from a DoGet ticket",
                    ddl.name()
                )));
            }
            Planned::NoRows(plan, _) if Change::of_plan(&plan).is_some() => {
                return Err(ServiceError::invalid(
                    "SET and RESET change a session: run them from GetFlightInfo or DoPut, \
                     not from a DoGet ticket",
                ));
            }
            Planned::NoRows(plan, ctx) => {
                // A session statement (SET): it changes nothing shared. This stream already
                // holds a query slot.
                Planner::run_no_rows(plan, ctx).await?;
                (Arc::new(Schema::empty()), futures::stream::empty().boxed())
            }
            Planned::Rows(physical, ctx) => {
                let schema = executions_schema(self.wire_schema(&physical.schema()), executions);
                let _ = log.plan.set(Arc::clone(&physical));
                let first = execute_stream(physical, ctx.task_ctx())?;
                let stream =
                    first.chain(self.later_executions(handle.sql, handle.settings, later_rows));
                let wire_schema = Arc::clone(&schema);
                let rows = Arc::clone(&log.rows);
                let batches = stream.map(move |batch| {
                    let batch = batch.map_err(|e| FlightError::ExternalError(Box::new(e)))?;
                    rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    wire::to_wire(batch, &wire_schema).map_err(FlightError::Arrow)
                });
                (schema, batches.boxed())
            }
        };
        let mut messages = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches);
        while let Some(message) = messages.next().await {
            let message = message?;
            let size = message.data_body.len() + message.data_header.len();
            log.bytes.fetch_add(size as u64, Ordering::Relaxed);
            let held = results.new_empty();
            held.try_grow(size.saturating_mul(2))?;
            if sender.send(Ok((message, held))).await.is_err() {
                return Err(ServiceError::Cancelled(
                    "the client closed the stream".into(),
                ));
            }
        }
        Ok(())
    }

    /// Runs a statement that returns no rows (CREATE/DROP/SET) and returns its record count.
    pub(super) async fn update(
        &self,
        mut handle: StatementHandle,
        deadline: Option<Deadline>,
        session: Session,
    ) -> Result<i64, ServiceError> {
        let service = self.clone();
        let sql = handle.sql.clone();
        // The outer error is a failure to plan; the inner one, of a statement that ran (and
        // logged itself, even when the deadline stopped it).
        let ran = Arc::new(AtomicBool::new(false));
        let started = Arc::clone(&ran);
        self.run_limited(deadline, async move {
            let rows = service.parameter_rows(&mut handle)?;
            match service
                .planner
                .plan(&handle.sql, &handle.settings, &rows[0])
                .await?
            {
                Planned::NoRows(plan, ctx) => {
                    started.store(true, Ordering::Relaxed);
                    Ok(service
                        .run_statements(&handle, plan, ctx, &rows, &session, deadline)
                        .await)
                }
                Planned::Rows(..) => Err(ServiceError::invalid(
                    "this statement returns rows: run it as a query, not as an update",
                )),
            }
        })
        .await
        .inspect_err(|e| self.failed_before_running(&sql, e, &ran))?
    }

    /// Runs a statement without rows once per parameter row (the first already planned) and
    /// returns the summed count; stops at the first failure. `SET` and `RESET` change
    /// `session` (once, whatever the rows).
    async fn run_statements(
        &self,
        handle: &StatementHandle,
        plan: LogicalPlan,
        ctx: SessionContext,
        rows: &[Vec<ScalarValue>],
        session: &Session,
        deadline: Option<Deadline>,
    ) -> Result<i64, ServiceError> {
        if let Some(change) = Change::of_plan(&plan) {
            let mut log = QueryLog::new(&self.metrics, &handle.sql, "statement");
            let outcome = self.change_setting(session, &ctx, change).map(|()| 0);
            log.finish(&outcome);
            return outcome;
        }
        let mut count = self.run_statement(handle, plan, ctx, deadline).await?;
        for row in rows.iter().skip(1) {
            match self
                .planner
                .plan(&handle.sql, &handle.settings, row)
                .await?
            {
                Planned::NoRows(plan, ctx) => {
                    count = count
                        .saturating_add(self.run_statement(handle, plan, ctx, deadline).await?);
                }
                Planned::Rows(..) => return Err(rows_then_no_rows()),
            }
        }
        Ok(count)
    }

    /// The results of a query for its parameter rows after the first, one after the other;
    /// each row is planned when the previous one's results have been sent.
    fn later_executions(
        &self,
        sql: String,
        settings: Settings,
        rows: Vec<Vec<ScalarValue>>,
    ) -> impl Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static {
        let planner = self.planner.clone();
        futures::stream::iter(rows)
            .then(move |row| {
                let (planner, sql, settings) = (planner.clone(), sql.clone(), settings.clone());
                async move {
                    match planner.plan(&sql, &settings, &row).await? {
                        Planned::Rows(physical, ctx) => {
                            Ok(execute_stream(physical, ctx.task_ctx())?)
                        }
                        Planned::NoRows(..) => Err(rows_then_no_rows()),
                    }
                }
            })
            .map_err(|e: ServiceError| match e {
                ServiceError::DataFusion(e) => e,
                other => DataFusionError::External(Box::new(Status::from(other))),
            })
            .try_flatten()
    }

    /// Runs a statement without rows (DDL, SET) in a query slot on threads of its own, and
    /// logs it: DDL such as CREATE TABLE AS can be as heavy as any query.
    async fn run_statement(
        &self,
        handle: &StatementHandle,
        plan: LogicalPlan,
        ctx: SessionContext,
        deadline: Option<Deadline>,
    ) -> Result<i64, ServiceError> {
        // The deadline stops it from outside (`run_limited`): the log then says so.
        let mut log = QueryLog::new(&self.metrics, &handle.sql, "statement").until(deadline);
        let outcome = async {
            // Holds the DDL lock (for DDL) until the statement has run.
            let authorized = self.guard.authorize(plan, &ctx).await?;
            let plan = authorized.plan.clone();
            // (Not a session's temporary table of that name: it has no files.)
            let replaced = super::ingest::dropped_or_replaced(&plan)
                .filter(|table| !super::temp_tables::is_temporary(table));
            let _slot = self.queries.admit().await?;
            let count = self
                .executor
                .spawn_query(Planner::run_no_rows(plan, ctx))?
                .await?;
            if let Some(table) = replaced {
                self.ingested_table_changed(&table);
            }
            Ok(count)
        }
        .await;
        log.finish(&outcome);
        outcome
    }

    /// Runs `work` (planning, and statements that run in their own slot) on the planning
    /// threads, stopping it at the deadline.
    pub(super) async fn run_limited<T: Send + 'static>(
        &self,
        deadline: Option<Deadline>,
        work: impl Future<Output = Result<T, ServiceError>> + Send + 'static,
    ) -> Result<T, ServiceError> {
        self.executor
            .run(async move {
                tokio::select! {
                    biased;
                    () = sleep_until(deadline) => Err(deadline_error(deadline)),
                    outcome = work => outcome,
                }
            })
            .await
    }
}

/// The schema of a query's results: with several parameter rows every column may hold nulls,
/// since a later row's results are sent under the schema planned for the first.
fn executions_schema(schema: SchemaRef, executions: usize) -> SchemaRef {
    if executions <= 1 {
        return schema;
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// One parameter row made a query and another a statement without rows: cannot happen, as
/// every row has the same types.
fn rows_then_no_rows() -> ServiceError {
    ServiceError::Internal("parameter rows of one statement planned as different kinds".into())
}

/// Sleeps until the deadline, or forever without one.
async fn sleep_until(deadline: Option<Deadline>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.instant()).await,
        None => std::future::pending().await,
    }
}

fn deadline_error(deadline: Option<Deadline>) -> ServiceError {
    match deadline {
        Some(deadline) => deadline.exceeded(),
        None => ServiceError::Internal("a query without deadline timed out".into()),
    }
}

/// The gRPC side of a running query: Flight messages from the query runtime. Dropping it
/// (the client went away) aborts the query.
struct ResultStream {
    receiver: mpsc::Receiver<Outgoing>,
    /// The reservation of the message handed out last: tonic is done with it (encoded and
    /// passed to the transport) when it asks for the next one.
    in_flight: Option<MemoryReservation>,
    _task: QueryTask<()>,
}

impl Stream for ResultStream {
    type Item = Result<FlightData, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.in_flight = None;
        self.receiver.poll_recv(cx).map(|next| {
            next.map(|outgoing| {
                outgoing.map(|(message, held)| {
                    self.in_flight = Some(held);
                    message
                })
            })
        })
    }
}

/// One log line per statement, written when it ends, however it ends: outcome (gRPC code),
/// duration, rows, bytes and the SQL on one line.
pub(super) struct QueryLog {
    sql: String,
    kind: &'static str,
    started: Instant,
    rows: Arc<AtomicU64>,
    bytes: AtomicU64,
    outcome: Option<(Code, String)>,
    /// When the work must stop: a log dropped unfinished after it was stopped by the deadline.
    deadline: Option<Deadline>,
    /// The physical plan once it runs: its operators' metrics say what spilled.
    plan: OnceLock<Arc<dyn ExecutionPlan>>,
    metrics: Arc<Metrics>,
}

/// Longest SQL text a log line shows; longer text is cut with its full length noted.
const LOGGED_SQL_CHARS: usize = 2000;

/// The SQL as a log line shows it: at most [`LOGGED_SQL_CHARS`] characters.
fn sql_for_log(sql: &str) -> String {
    match sql.char_indices().nth(LOGGED_SQL_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &sql[..cut], sql.len()),
        None => sql.to_string(),
    }
}

impl QueryLog {
    pub(super) fn new(metrics: &Arc<Metrics>, sql: &str, kind: &'static str) -> Self {
        Self {
            sql: sql_for_log(sql),
            kind,
            started: Instant::now(),
            rows: Arc::new(AtomicU64::new(0)),
            bytes: AtomicU64::new(0),
            outcome: None,
            deadline: None,
            plan: OnceLock::new(),
            metrics: Arc::clone(metrics),
        }
    }

    /// The log of work stopped at `deadline` (dropped unfinished once it has passed).
    pub(super) fn until(mut self, deadline: Option<Deadline>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The row counter of the logged work, for work that counts its rows elsewhere.
    pub(super) fn rows(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.rows)
    }

    pub(super) fn finish<T>(&mut self, outcome: &Result<T, ServiceError>) {
        self.outcome = Some(match outcome {
            Ok(_) => (Code::Ok, String::new()),
            Err(error) => (error.code(), error.to_string()),
        });
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        // Work dropped unfinished was stopped by its deadline, or its client went away.
        let (code, error) = self.outcome.take().unwrap_or_else(|| match self.deadline {
            Some(deadline) if deadline.passed() => {
                let error = deadline.exceeded();
                (error.code(), error.to_string())
            }
            _ => (Code::Cancelled, "the client went away".into()),
        });
        let elapsed = self.started.elapsed();
        let elapsed_ms = elapsed.as_millis() as u64;
        let rows = self.rows.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        self.metrics.query_finished(&QueryOutcome {
            kind: self.kind,
            code,
            elapsed,
            rows,
            bytes,
            plan: self.plan.get().map(|plan| plan.as_ref()),
        });
        // Debug formatting keeps multi-line SQL on one log line.
        if code == Code::Ok {
            tracing::info!(kind = self.kind, code = ?code, elapsed_ms, rows, bytes, sql = ?self.sql, "query finished");
        } else {
            let error = shortened(&error);
            tracing::warn!(kind = self.kind, code = ?code, elapsed_ms, rows, bytes, sql = ?self.sql, error = %error, "query failed");
        }
    }
}

impl FlightbearService {
    /// Statements refused before they ran (bad SQL, limits, a deadline while planning) are
    /// logged and counted like failed queries.
    /// Logs a failure to plan, unless the statement had started and logged itself (`ran`).
    fn failed_before_running(&self, sql: &str, error: &ServiceError, ran: &AtomicBool) {
        if !ran.load(Ordering::Relaxed) {
            self.planning_failed(sql, error);
        }
    }

    pub(super) fn planning_failed(&self, sql: &str, error: &ServiceError) {
        let sql = sql_for_log(sql);
        let message = error.to_string();
        let message = shortened(&message);
        tracing::warn!(kind = "planning", code = ?error.code(), sql = ?sql, error = %message, "query failed");
        self.metrics.planning_failed(error.code());
    }
}

/// The ticket that streams a statement: a Flight SQL TicketStatementQuery around our handle.
pub(super) fn statement_ticket(handle: &StatementHandle) -> Ticket {
    let ticket = TicketStatementQuery {
        statement_handle: handle.to_bytes(),
    };
    Ticket::new(ticket.as_any().encode_to_vec())
}

/// A stream of a schema and the given batches.
pub(super) fn batches_stream(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> BoxStream<FlightData> {
    let input = futures::stream::iter(batches.into_iter().map(Ok));
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(input)
            .map_err(|e| ServiceError::from(e).into()),
    )
}

impl FlightbearService {
    /// CancelFlightInfo: cancels every running stream of the FlightInfo's query on this
    /// replica, and refuses streams of it that start later.
    pub(super) fn cancel(
        &self,
        request: arrow_flight::CancelFlightInfoRequest,
    ) -> Result<arrow_flight::CancelStatus, ServiceError> {
        let info = request.info.ok_or_else(|| {
            ServiceError::invalid("CancelFlightInfo request carries no FlightInfo")
        })?;
        let mut cancellable = false;
        for ticket in info.endpoint.iter().filter_map(|e| e.ticket.as_ref()) {
            if let Request::Query(handle) = Request::from_ticket(ticket)?
                && !handle.query_id.is_empty()
            {
                cancellable = true;
                let streams = self.queries.cancel(&handle.query_id);
                tracing::info!(streams, "query cancelled (CancelFlightInfo)");
            }
        }
        // Metadata answers and statements without a query id have nothing to cancel.
        Ok(if cancellable {
            arrow_flight::CancelStatus::Cancelled
        } else {
            arrow_flight::CancelStatus::NotCancellable
        })
    }
}
