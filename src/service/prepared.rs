//! Prepared statements: creating one (its parameter and result schemas), binding parameters from DoPut, closing.
//!
//! A prepared statement is its SQL plus a random id. Binding parameters returns a new handle
//! that carries them, so any replica can serve it (ADBC adopts it); the replica that bound them
//! also keeps them under the id ([`super::prepared_store`]) for clients that go on using the
//! original handle (flightsql-dbapi, older JDBC drivers). A handle that carries parameters
//! uses its own; one without uses those kept here, if any.
//!
//! A DoPut may bind several rows (executemany): a query then returns the results of each row
//! in order, an update the summed count.

use std::sync::Arc;

use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult,
};
use arrow_flight::{FlightData, IpcMessage, SchemaAsIpc};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::ScalarValue;
use futures::StreamExt;
use tonic::{Status, Streaming};

use super::FlightbearService;
use super::error::ServiceError;
use super::handle::StatementHandle;
use super::planner::{Planned, Planner, has_no_rows, parameter_schema};
use super::request::put_batches;
use super::settings::Settings;

impl FlightbearService {
    /// Action CreatePreparedStatement: the handle plus the parameter and result schemas. The
    /// handle carries the session's settings.
    pub(super) async fn create_prepared_statement(
        &self,
        request: ActionCreatePreparedStatementRequest,
        settings: Settings,
    ) -> Result<ActionCreatePreparedStatementResult, ServiceError> {
        let mut handle = StatementHandle::prepared(request.query);
        handle.settings = settings;
        let (plan, ctx) = self
            .planner
            .logical_plan(&handle.sql, &handle.settings)
            .await?;
        let parameter_schema = parameter_schema(&plan)?;
        let dataset_schema = if has_no_rows(&plan) {
            // JDBC reads an empty dataset schema as "this is an update".
            Bytes::new()
        } else if !parameter_schema.fields().is_empty() {
            // Placeholders cannot be planned physically before they are bound.
            let schema = Arc::new(plan.schema().as_arrow().clone());
            ipc_schema(&self.wire_schema(&schema))?
        } else {
            match Planner::physical_plan(plan, ctx).await? {
                Planned::Rows(physical, _) => ipc_schema(&self.wire_schema(&physical.schema()))?,
                Planned::NoRows(..) => Bytes::new(),
            }
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.to_bytes(),
            dataset_schema,
            parameter_schema: ipc_schema(&parameter_schema)?,
        })
    }

    /// Action ClosePreparedStatement: frees the parameters this replica keeps for it (a handle
    /// from any replica, or one already closed, is fine: there is nothing else to free).
    pub(super) fn close_prepared_statement(&self, request: ActionClosePreparedStatementRequest) {
        if let Ok(handle) = StatementHandle::from_bytes(&request.prepared_statement_handle) {
            self.prepared.remove(&handle.prepared_id);
        }
    }

    /// DoPut after a prepared-statement command: the handle with the streamed parameter rows
    /// bound (or unchanged when the stream carries no rows); this replica keeps them too.
    pub(super) async fn bind_parameters(
        &self,
        handle: StatementHandle,
        first: FlightData,
        rest: Streaming<FlightData>,
    ) -> Result<StatementHandle, ServiceError> {
        let batches = read_parameters(first, rest).await?;
        if batches.is_empty() {
            return Ok(handle);
        }
        let handle = handle.with_parameters(&batches)?;
        self.prepared
            .insert(&handle.prepared_id, &handle.sql, handle.parameters.clone())?;
        Ok(handle)
    }

    /// The parameter rows a statement runs with, one execution each: those its handle carries,
    /// else those this replica keeps for its prepared statement (then put in the handle); one
    /// empty row when none are bound.
    pub(super) fn parameter_rows(
        &self,
        handle: &mut StatementHandle,
    ) -> Result<Vec<Vec<ScalarValue>>, ServiceError> {
        if handle.parameters.is_empty()
            && let Some(kept) = self.prepared.get(&handle.prepared_id, &handle.sql)
        {
            handle.parameters = kept;
        }
        let rows = handle.parameter_rows()?;
        Ok(if rows.is_empty() {
            vec![Vec::new()]
        } else {
            rows
        })
    }
}

/// Most parameter rows one DoPut may bind (executemany): each row is one execution.
pub const MAX_PARAMETER_ROWS: usize = 10_000;
/// Most bytes of parameter messages one DoPut may carry: the handle that returns them must fit
/// in a request (the request cap is the SQL limit plus 16 MiB).
pub const MAX_PARAMETER_BYTES: usize = 8 * 1024 * 1024;

/// Reads the parameter rows of a DoPut stream (its first message may already carry the
/// schema), at most [`MAX_PARAMETER_ROWS`] rows in [`MAX_PARAMETER_BYTES`] of messages.
async fn read_parameters(
    first: FlightData,
    rest: Streaming<FlightData>,
) -> Result<Vec<RecordBatch>, ServiceError> {
    let mut batches = put_batches(first, rest, MAX_PARAMETER_BYTES, |limit| {
        Status::invalid_argument(format!(
            "the bound parameters exceed {limit} bytes; bind fewer rows at a time"
        ))
    });
    let mut found = Vec::new();
    let mut rows = 0usize;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        if found
            .first()
            .is_some_and(|first: &RecordBatch| first.schema() != batch.schema())
        {
            return Err(ServiceError::invalid(
                "every batch of bound parameters must have the same schema",
            ));
        }
        rows += batch.num_rows();
        if rows > MAX_PARAMETER_ROWS {
            return Err(ServiceError::invalid(format!(
                "at most {MAX_PARAMETER_ROWS} parameter rows may be bound at once; bind fewer \
                 rows at a time"
            )));
        }
        found.push(batch);
    }
    Ok(found)
}

/// Encodes a schema as an Arrow IPC message (the form Flight SQL carries schemas in).
fn ipc_schema(schema: &Schema) -> Result<Bytes, ServiceError> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(message.0)
}
