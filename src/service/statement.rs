//! Statements: the FlightInfo and schema of a query without running it, its result stream, updates, and the query log.

use std::sync::Arc;
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::physical_plan::execute_stream;
use futures::{StreamExt, TryStreamExt};
use prost::Message;

use super::error::ServiceError;
use super::handle::StatementHandle;
use super::planner::{Planned, Planner};
use super::{BoxStream, FlightbearService, wire};

impl FlightbearService {
    /// GetFlightInfo for a statement: plan only, return the exact schema DoGet will stream.
    pub(super) async fn statement_info(
        &self,
        handle: StatementHandle,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, ServiceError> {
        match self.planner.plan(&handle).await? {
            Planned::NoRows(plan, ctx) => {
                // DDL takes effect now; a stateless ticket replayed later must not run it again.
                Planner::run_no_rows(plan, ctx).await?;
                Ok(FlightInfo::new()
                    .try_with_schema(&Schema::empty())?
                    .with_descriptor(descriptor)
                    .with_total_records(0))
            }
            Planned::Rows(physical, _) => {
                let schema = self.wire_schema(&physical.schema());
                Ok(FlightInfo::new()
                    .try_with_schema(&schema)?
                    .with_endpoint(FlightEndpoint::new().with_ticket(statement_ticket(&handle)))
                    .with_descriptor(descriptor)
                    .with_total_records(-1)
                    .with_total_bytes(-1)
                    .with_ordered(true))
            }
        }
    }

    /// The schema a statement's results will have, without running it.
    pub(super) async fn statement_schema(
        &self,
        handle: &StatementHandle,
    ) -> Result<SchemaRef, ServiceError> {
        match self.planner.plan(handle).await? {
            Planned::NoRows(..) => Ok(Arc::new(Schema::empty())),
            Planned::Rows(physical, _) => Ok(self.wire_schema(&physical.schema())),
        }
    }

    /// DoGet for a statement: execute and stream batches as they are produced.
    pub(super) async fn statement_stream(
        &self,
        handle: StatementHandle,
    ) -> Result<BoxStream<FlightData>, ServiceError> {
        let (physical, ctx) = match self.planner.plan(&handle).await? {
            Planned::NoRows(plan, ctx) => {
                Planner::run_no_rows(plan, ctx).await?;
                return Ok(batches_stream(Arc::new(Schema::empty()), Vec::new()));
            }
            Planned::Rows(physical, ctx) => (physical, ctx),
        };
        let schema = self.wire_schema(&physical.schema());
        let stream = execute_stream(physical, ctx.task_ctx())?;
        let mut log = QueryLog {
            sql: handle.sql,
            started: Instant::now(),
            rows: 0,
        };
        let wire_schema = Arc::clone(&schema);
        let batches = stream.map(move |batch| {
            let batch = batch.map_err(|e| FlightError::ExternalError(Box::new(e)))?;
            // Use the whole `log` so the closure owns it and it is dropped with the stream.
            let log = &mut log;
            log.rows += batch.num_rows();
            wire::to_wire(batch, &wire_schema).map_err(FlightError::Arrow)
        });
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(|e| ServiceError::from(e).into());
        Ok(Box::pin(flight))
    }

    /// Runs a statement that returns no rows (CREATE/DROP/SET) and returns its record count.
    pub(super) async fn update(&self, handle: StatementHandle) -> Result<i64, ServiceError> {
        match self.planner.plan(&handle).await? {
            Planned::NoRows(plan, ctx) => Planner::run_no_rows(plan, ctx).await,
            Planned::Rows(..) => Err(ServiceError::invalid(
                "this statement returns rows: run it as a query, not as an update",
            )),
        }
    }
}

/// Logs a query's row count and duration when its stream ends or the client goes away.
struct QueryLog {
    sql: String,
    started: Instant,
    rows: usize,
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        tracing::info!(
            sql = %self.sql,
            rows = self.rows,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "query stream closed"
        );
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
