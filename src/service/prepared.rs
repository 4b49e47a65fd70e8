//! Prepared statements: creating one (its parameter and result schemas), binding parameters from DoPut, closing.
//!
//! Handles are stateless: a prepared statement is its SQL, and binding parameters returns a
//! new handle that carries them, so any replica can serve any handle.

use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult,
};
use arrow_flight::{FlightData, IpcMessage, SchemaAsIpc};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::{StreamExt, TryStreamExt};
use tonic::Streaming;

use super::FlightbearService;
use super::error::ServiceError;
use super::handle::StatementHandle;
use super::planner::{Planned, Planner, has_no_rows, parameter_schema};

impl FlightbearService {
    /// Action CreatePreparedStatement: the handle plus the parameter and result schemas.
    pub(super) async fn create_prepared_statement(
        &self,
        request: ActionCreatePreparedStatementRequest,
    ) -> Result<ActionCreatePreparedStatementResult, ServiceError> {
        let handle = StatementHandle::for_sql(request.query);
        let (plan, ctx) = self.planner.logical_plan(&handle).await?;
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

    /// Action ClosePreparedStatement: handles are stateless, so there is nothing to free;
    /// the request was already checked to be well-formed.
    pub(super) fn close_prepared_statement(&self, _request: ActionClosePreparedStatementRequest) {}
}

/// DoPut after a prepared-statement command: the handle with the streamed parameter row bound
/// (or unchanged when the stream carries no rows).
pub(super) async fn bind_parameters(
    handle: StatementHandle,
    first: FlightData,
    rest: Streaming<FlightData>,
) -> Result<StatementHandle, ServiceError> {
    match read_parameters(first, rest).await? {
        Some(batch) => Ok(handle.with_parameters(&batch)?),
        None => Ok(handle),
    }
}

/// Reads the parameter row of a DoPut stream (its first message may already carry the schema).
async fn read_parameters(
    first: FlightData,
    rest: Streaming<FlightData>,
) -> Result<Option<RecordBatch>, ServiceError> {
    let head = (!first.data_header.is_empty()).then_some(first);
    let data = futures::stream::iter(head.map(Ok))
        .chain(rest.map_err(|status| FlightError::Tonic(Box::new(status))));
    let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
    let mut found: Option<RecordBatch> = None;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        if found.is_some() || batch.num_rows() > 1 {
            return Err(ServiceError::invalid(
                "bind one row of parameter values; several rows are not supported",
            ));
        }
        found = Some(batch);
    }
    Ok(found)
}

/// Encodes a schema as an Arrow IPC message (the form Flight SQL carries schemas in).
fn ipc_schema(schema: &Schema) -> Result<Bytes, ServiceError> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(message.0)
}
