//! The Flight service: Flight SQL commands plus plain Flight (table paths, UTF-8 SQL), over one DataFusion session.

pub mod error;
pub mod handle;
pub mod metadata;
pub mod placeholders;
pub mod wire;

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, Command, DoPutPreparedStatementResult,
    DoPutUpdateResult, ProstMessageExt,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Criteria,
    Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::TableReference;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{LogicalPlan, Statement};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use error::{arrow_status, datafusion_status, decode_status, flight_status};
use handle::StatementHandle;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

const PROTOBUF_TYPE_PREFIX: &str = "type.googleapis.com/";
const FLIGHT_SQL_TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";
const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// Clients may define tables and views, set session variables and query; they may not write files.
static SQL_OPTIONS: LazyLock<SQLOptions> = LazyLock::new(|| {
    SQLOptions::new()
        .with_allow_ddl(true)
        .with_allow_dml(false)
        .with_allow_statements(true)
});

/// What a descriptor or ticket asks for.
enum Target {
    /// A SQL statement (Flight SQL statement, prepared statement, plain SQL or a table path).
    Statement(StatementHandle),
    /// A Flight SQL metadata command.
    Metadata(Command),
}

impl Target {
    /// Turns the Flight SQL statement commands into statements; other commands stay as they are.
    /// (DoPut must not do this: there a prepared-statement command means "bind parameters".)
    fn statements_resolved(self) -> Result<Self, Status> {
        match self {
            Target::Metadata(Command::CommandStatementQuery(cmd)) => {
                Ok(Target::Statement(StatementHandle::for_sql(cmd.query)))
            }
            Target::Metadata(Command::CommandPreparedStatementQuery(cmd)) => Ok(Target::Statement(
                StatementHandle::from_bytes(&cmd.prepared_statement_handle)?,
            )),
            other => Ok(other),
        }
    }
}

/// A planned statement: either rows to stream, or a statement that has no rows (DDL, SET).
enum Planned {
    Query(Arc<dyn ExecutionPlan>, SessionContext),
    NoRows(LogicalPlan, SessionContext),
}

/// The flightbear Flight service.
#[derive(Clone)]
pub struct FlightSqlService {
    ctx: SessionContext,
    keep_views: bool,
}

impl FlightSqlService {
    /// A service over the given session; `keep_views` sends Utf8View columns as they are.
    pub fn new(ctx: SessionContext, keep_views: bool) -> Self {
        Self { ctx, keep_views }
    }

    /// The tonic server for this service, with message limits that suit large results.
    pub fn into_server(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(usize::MAX)
    }

    /// Each request gets its own session state (so `SET` stays local) over the shared catalog.
    fn request_context(&self) -> SessionContext {
        SessionContext::new_with_state(self.ctx.state())
    }

    fn schema_of(&self, plan: &Arc<dyn ExecutionPlan>) -> SchemaRef {
        wire::wire_schema(&plan.schema(), self.keep_views)
    }

    /// Parses, checks and binds a statement, without executing anything.
    async fn logical_plan(
        &self,
        ctx: &SessionContext,
        handle: &StatementHandle,
    ) -> Result<LogicalPlan, Status> {
        let sql = placeholders::number_question_marks(&handle.sql)?;
        let plan = ctx
            .state()
            .create_logical_plan(&sql)
            .await
            .map_err(datafusion_status)?;
        SQL_OPTIONS.verify_plan(&plan).map_err(datafusion_status)?;
        let values = handle.parameter_values()?;
        if values.is_empty() {
            return Ok(plan);
        }
        // Values go in as sent, not cast to the type DataFusion guessed for the placeholder:
        // `x < ?` with x BIGINT and 1.5 bound must compare against 1.5, not 1. Type coercion
        // after substitution makes the comparison right.
        plan.with_param_values(values).map_err(datafusion_status)
    }

    /// Plans a statement down to an execution plan (or recognises it as having no rows).
    async fn plan(&self, handle: &StatementHandle) -> Result<Planned, Status> {
        let ctx = self.request_context();
        let plan = self.logical_plan(&ctx, handle).await?;
        Self::plan_logical(plan, ctx).await
    }

    /// Takes an already parsed and bound plan down to an execution plan.
    async fn plan_logical(plan: LogicalPlan, ctx: SessionContext) -> Result<Planned, Status> {
        if has_no_rows(&plan) {
            return Ok(Planned::NoRows(plan, ctx));
        }
        let frame = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(datafusion_status)?;
        let physical = frame
            .create_physical_plan()
            .await
            .map_err(datafusion_status)?;
        Ok(Planned::Query(physical, ctx))
    }

    /// Runs a statement that has no rows (DDL, SET) and returns how many rows it changed.
    async fn run_no_rows(plan: LogicalPlan, ctx: SessionContext) -> Result<i64, Status> {
        let frame = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(datafusion_status)?;
        frame.collect().await.map_err(datafusion_status)?;
        Ok(0)
    }

    /// GetFlightInfo for a statement: plan only, return the exact schema DoGet will stream.
    async fn statement_info(
        &self,
        handle: StatementHandle,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        match self.plan(&handle).await? {
            Planned::NoRows(plan, ctx) => {
                // DDL takes effect now; a stateless ticket replayed later must not run it again.
                Self::run_no_rows(plan, ctx).await?;
                FlightInfo::new()
                    .try_with_schema(&Schema::empty())
                    .map_err(arrow_status)
                    .map(|info| info.with_descriptor(descriptor).with_total_records(0))
            }
            Planned::Query(physical, _) => {
                let schema = self.schema_of(&physical);
                let ticket = statement_ticket(&handle);
                Ok(FlightInfo::new()
                    .try_with_schema(&schema)
                    .map_err(arrow_status)?
                    .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
                    .with_descriptor(descriptor)
                    .with_total_records(-1)
                    .with_total_bytes(-1)
                    .with_ordered(true))
            }
        }
    }

    /// The schema a statement's results will have, without running it.
    async fn statement_schema(&self, handle: &StatementHandle) -> Result<SchemaRef, Status> {
        match self.plan(handle).await? {
            Planned::NoRows(..) => Ok(Arc::new(Schema::empty())),
            Planned::Query(physical, _) => Ok(self.schema_of(&physical)),
        }
    }

    /// DoGet for a statement: execute and stream batches as they are produced.
    async fn statement_stream(
        &self,
        handle: StatementHandle,
    ) -> Result<BoxStream<FlightData>, Status> {
        let (physical, ctx) = match self.plan(&handle).await? {
            Planned::NoRows(plan, ctx) => {
                Self::run_no_rows(plan, ctx).await?;
                return Ok(batches_stream(Arc::new(Schema::empty()), Vec::new()));
            }
            Planned::Query(physical, ctx) => (physical, ctx),
        };
        let schema = self.schema_of(&physical);
        let stream = execute_stream(physical, ctx.task_ctx()).map_err(datafusion_status)?;
        let mut log = QueryLog {
            sql: handle.sql.clone(),
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
            .map_err(flight_status);
        Ok(Box::pin(flight))
    }

    /// The result of a metadata command, computed in full (metadata results are small).
    async fn metadata_batch(&self, command: &Command) -> Result<RecordBatch, Status> {
        let ctx = &self.ctx;
        match command.clone() {
            Command::CommandGetCatalogs(_) => metadata::catalogs(ctx),
            Command::CommandGetDbSchemas(cmd) => metadata::db_schemas(ctx, cmd),
            Command::CommandGetTables(cmd) => metadata::tables(ctx, cmd, self.keep_views).await,
            Command::CommandGetTableTypes(_) => metadata::table_types(),
            Command::CommandGetSqlInfo(cmd) => cmd
                .into_builder(&metadata::SQL_INFO)
                .build()
                .map_err(flight_status),
            Command::CommandGetXdbcTypeInfo(cmd) => cmd
                .into_builder(&metadata::XDBC_TYPES)
                .build()
                .map_err(flight_status),
            Command::CommandGetPrimaryKeys(_) => {
                Ok(RecordBatch::new_empty(metadata::primary_keys_schema()))
            }
            Command::CommandGetExportedKeys(_)
            | Command::CommandGetImportedKeys(_)
            | Command::CommandGetCrossReference(_) => {
                Ok(RecordBatch::new_empty(metadata::foreign_keys_schema()))
            }
            other => Err(unsupported_command(&other)),
        }
    }

    async fn metadata_info(
        &self,
        command: Command,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let batch = self.metadata_batch(&command).await?;
        let ticket = Ticket::new(command.into_any().encode_to_vec());
        Ok(FlightInfo::new()
            .try_with_schema(&batch.schema())
            .map_err(arrow_status)?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor)
            .with_total_records(batch.num_rows() as i64)
            .with_ordered(true))
    }

    /// Reads what a descriptor asks for: a Flight SQL command, plain SQL, or a table path.
    async fn target_of(&self, descriptor: &FlightDescriptor) -> Result<Target, Status> {
        match DescriptorType::try_from(descriptor.r#type) {
            Ok(DescriptorType::Path) => {
                let table = self.table_path(&descriptor.path).await?;
                Ok(Target::Statement(StatementHandle::for_sql(format!(
                    "SELECT * FROM {table}"
                ))))
            }
            Ok(DescriptorType::Cmd) => decode_target(&descriptor.cmd, "descriptor command"),
            _ => Err(Status::invalid_argument(
                "flight descriptor must be a PATH or a CMD descriptor",
            )),
        }
    }

    /// Resolves `[table]`, `[schema, table]` or `[catalog, schema, table]` to a quoted SQL name.
    ///
    /// Names are matched exactly first, then in lower case (the case unquoted SQL names fold to).
    async fn table_path(&self, path: &[String]) -> Result<String, Status> {
        if path.is_empty() || path.len() > 3 {
            return Err(Status::invalid_argument(format!(
                "a path descriptor names one table as [table], [schema, table] or \
                 [catalog, schema, table]; got {} elements",
                path.len()
            )));
        }
        let lower: Vec<String> = path.iter().map(|p| p.to_lowercase()).collect();
        for candidate in [path, &lower[..]] {
            let reference = match candidate {
                [table] => TableReference::bare(table.as_str()),
                [schema, table] => TableReference::partial(schema.as_str(), table.as_str()),
                [catalog, schema, table] => {
                    TableReference::full(catalog.as_str(), schema.as_str(), table.as_str())
                }
                _ => continue,
            };
            if self.ctx.table_exist(reference).map_err(datafusion_status)? {
                return Ok(candidate
                    .iter()
                    .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
                    .collect::<Vec<_>>()
                    .join("."));
            }
        }
        Err(Status::not_found(format!(
            "table '{}' not found",
            path.join(".")
        )))
    }

    async fn flight_info(&self, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
        match self.target_of(&descriptor).await?.statements_resolved()? {
            Target::Statement(handle) => self.statement_info(handle, descriptor).await,
            Target::Metadata(command) => self.metadata_info(command, descriptor).await,
        }
    }

    /// Reads the parameter rows a client sends with DoPut and returns them as one batch.
    async fn read_parameters(
        first: FlightData,
        rest: Streaming<FlightData>,
    ) -> Result<Option<RecordBatch>, Status> {
        // The first message carries the descriptor and, from most clients, the parameter schema;
        // some clients send a descriptor-only message when nothing is bound.
        let head = (!first.data_header.is_empty()).then_some(first);
        let data = futures::stream::iter(head.map(Ok))
            .chain(rest.map_err(|s| FlightError::Tonic(Box::new(s))));
        let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(data);
        let mut found: Option<RecordBatch> = None;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(flight_status)?;
            if batch.num_rows() == 0 {
                continue;
            }
            if found.is_some() || batch.num_rows() > 1 {
                return Err(Status::invalid_argument(
                    "bind one row of parameter values; several rows are not supported",
                ));
            }
            found = Some(batch);
        }
        Ok(found)
    }

    async fn create_prepared_statement(
        &self,
        request: ActionCreatePreparedStatementRequest,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let handle = StatementHandle::for_sql(request.query);
        let ctx = self.request_context();
        let plan = self.logical_plan(&ctx, &handle).await?;
        let parameter_schema = parameter_schema(&plan)?;
        let dataset_schema = if has_no_rows(&plan) {
            // JDBC reads an empty dataset schema as "this is an update".
            Bytes::new()
        } else if !parameter_schema.fields().is_empty() {
            // Placeholders cannot be planned physically before they are bound.
            let schema = Arc::new(plan.schema().as_arrow().clone());
            ipc_schema(&wire::wire_schema(&schema, self.keep_views))?
        } else {
            match Self::plan_logical(plan, ctx).await? {
                Planned::Query(physical, _) => ipc_schema(&self.schema_of(&physical))?,
                Planned::NoRows(..) => Bytes::new(),
            }
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.to_bytes(),
            dataset_schema,
            parameter_schema: ipc_schema(&parameter_schema)?,
        })
    }

    async fn list_tables(&self) -> Result<Vec<FlightInfo>, Status> {
        let mut infos = Vec::new();
        let default_schema = crate::catalog::SCHEMA;
        let Some(catalog) = self.ctx.catalog(crate::catalog::CATALOG) else {
            return Ok(infos);
        };
        let mut schema_names = catalog.schema_names();
        schema_names.sort();
        for schema_name in schema_names {
            if schema_name == "information_schema" {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                let Some(table) = schema.table(&name).await.map_err(datafusion_status)? else {
                    continue;
                };
                let path = if schema_name == default_schema {
                    vec![name.clone()]
                } else {
                    vec![schema_name.clone(), name.clone()]
                };
                let sql_name = self.table_path(&path).await?;
                let handle = StatementHandle::for_sql(format!("SELECT * FROM {sql_name}"));
                let schema = wire::wire_schema(&table.schema(), self.keep_views);
                infos.push(
                    FlightInfo::new()
                        .try_with_schema(&schema)
                        .map_err(arrow_status)?
                        .with_descriptor(FlightDescriptor::new_path(path))
                        .with_endpoint(FlightEndpoint::new().with_ticket(statement_ticket(&handle)))
                        .with_total_records(-1)
                        .with_total_bytes(-1),
                );
            }
        }
        Ok(infos)
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

/// DDL and session statements produce no rows: they run once, at GetFlightInfo or DoPut.
fn has_no_rows(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Ddl(_) => true,
        LogicalPlan::Statement(statement) => !matches!(statement, Statement::Execute(_)),
        _ => false,
    }
}

/// The ticket that streams a statement: a Flight SQL TicketStatementQuery around our handle.
fn statement_ticket(handle: &StatementHandle) -> Ticket {
    let ticket = arrow_flight::sql::TicketStatementQuery {
        statement_handle: handle.to_bytes(),
    };
    Ticket::new(ticket.as_any().encode_to_vec())
}

/// Decodes a Flight SQL command packed in `Any`; other bytes are taken as UTF-8 SQL text.
fn decode_target(bytes: &[u8], what: &str) -> Result<Target, Status> {
    if let Ok(any) = Any::decode(bytes)
        && any.type_url.starts_with(PROTOBUF_TYPE_PREFIX)
    {
        if !any.type_url.starts_with(FLIGHT_SQL_TYPE_PREFIX) {
            return Err(Status::invalid_argument(format!(
                "{what} has unsupported command type {}",
                any.type_url
            )));
        }
        let command =
            Command::try_from(any).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))?;
        return match command {
            Command::TicketStatementQuery(ticket) => Ok(Target::Statement(
                StatementHandle::from_bytes(&ticket.statement_handle)?,
            )),
            other => Ok(Target::Metadata(other)),
        };
    }
    match std::str::from_utf8(bytes) {
        Ok(sql) if !sql.trim().is_empty() => Ok(Target::Statement(StatementHandle::for_sql(sql))),
        _ => Err(Status::invalid_argument(format!(
            "{what} is neither a Flight SQL command nor UTF-8 SQL text"
        ))),
    }
}

fn unsupported_command(command: &Command) -> Status {
    let name = command
        .type_url()
        .strip_prefix(FLIGHT_SQL_TYPE_PREFIX)
        .unwrap_or(command.type_url())
        .to_string();
    match command {
        Command::CommandStatementSubstraitPlan(_) => {
            Status::unimplemented("Substrait plans are not supported; send SQL")
        }
        Command::CommandStatementIngest(_) => Status::unimplemented(
            "bulk ingestion is not supported: flightbear tables are read-only",
        ),
        _ => Status::invalid_argument(format!("{name} is not valid here")),
    }
}

/// Encodes a schema as an Arrow IPC message (the form Flight SQL carries schemas in).
fn ipc_schema(schema: &Schema) -> Result<Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(arrow_status)?;
    Ok(message.0)
}

/// The schema of a statement's parameters: `$1`, `$2`, … in order.
fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, Status> {
    let types = plan.get_parameter_types().map_err(datafusion_status)?;
    let mut numbered: Vec<(usize, String, Option<DataType>)> = types
        .into_iter()
        .map(|(name, data_type)| {
            let number = name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            (number, name, data_type)
        })
        .collect();
    numbered.sort();
    Ok(Schema::new(
        numbered
            .into_iter()
            // A parameter whose type the SQL does not pin down is sent as text.
            .map(|(_, name, t)| {
                let t = t.filter(|t| t != &DataType::Null).unwrap_or(DataType::Utf8);
                Field::new(name, t, true)
            })
            .collect::<Vec<_>>(),
    ))
}

/// A stream of a schema and the given batches.
fn batches_stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> BoxStream<FlightData> {
    let input = futures::stream::iter(batches.into_iter().map(Ok));
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(input)
            .map_err(flight_status),
    )
}

fn single<T: Send + 'static>(item: T) -> BoxStream<T> {
    Box::pin(futures::stream::once(futures::future::ready(Ok(item))))
}

fn unpack<T: ProstMessageExt>(body: &[u8], what: &str) -> Result<T, Status> {
    let any = Any::decode(body).map_err(|e| decode_status(what, e))?;
    any.unpack::<T>()
        .map_err(|e| Status::invalid_argument(format!("{what}: {e}")))?
        .ok_or_else(|| {
            Status::invalid_argument(format!("{what}: unexpected message type {}", any.type_url))
        })
}

#[tonic::async_trait]
impl FlightService for FlightSqlService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // No authentication yet: every client is welcome.
        Ok(Response::new(single(HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::new(),
        })))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let infos = self.list_tables().await?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            infos.into_iter().map(Ok),
        ))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = self.flight_info(request.into_inner()).await?;
        Ok(Response::new(info))
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        // Planning is quick, so the answer is always complete on the first poll.
        let info = self.flight_info(request.into_inner()).await?;
        Ok(Response::new(PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        }))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let descriptor = request.into_inner();
        let schema = match self.target_of(&descriptor).await?.statements_resolved()? {
            Target::Statement(handle) => self.statement_schema(&handle).await?,
            Target::Metadata(command) => self.metadata_batch(&command).await?.schema(),
        };
        let result: SchemaResult = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(arrow_status)?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = request.into_inner();
        let stream = match decode_target(&ticket.ticket, "ticket")?.statements_resolved()? {
            Target::Statement(handle) => self.statement_stream(handle).await?,
            Target::Metadata(command) => {
                let batch = self.metadata_batch(&command).await?;
                batches_stream(batch.schema(), vec![batch])
            }
        };
        Ok(Response::new(stream))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("DoPut stream is empty"))?;
        let descriptor = first
            .flight_descriptor
            .clone()
            .ok_or_else(|| Status::invalid_argument("DoPut needs a flight descriptor"))?;
        let Target::Metadata(command) = decode_target(&descriptor.cmd, "DoPut command")? else {
            return Err(Status::invalid_argument(
                "DoPut expects a Flight SQL command (statement update or prepared statement)",
            ));
        };
        let put = |bytes: Vec<u8>| {
            Response::new(single(PutResult {
                app_metadata: bytes.into(),
            }))
        };
        match command {
            Command::CommandStatementUpdate(cmd) => {
                let count = self.update(StatementHandle::for_sql(cmd.query)).await?;
                Ok(put(DoPutUpdateResult {
                    record_count: count,
                }
                .encode_to_vec()))
            }
            Command::CommandPreparedStatementUpdate(cmd) => {
                let mut handle = StatementHandle::from_bytes(&cmd.prepared_statement_handle)?;
                if let Some(batch) = Self::read_parameters(first, stream).await? {
                    handle = handle.with_parameters(&batch)?;
                }
                let count = self.update(handle).await?;
                Ok(put(DoPutUpdateResult {
                    record_count: count,
                }
                .encode_to_vec()))
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                let mut handle = StatementHandle::from_bytes(&cmd.prepared_statement_handle)?;
                if let Some(batch) = Self::read_parameters(first, stream).await? {
                    handle = handle.with_parameters(&batch)?;
                }
                let result = DoPutPreparedStatementResult {
                    prepared_statement_handle: Some(handle.to_bytes()),
                };
                Ok(put(result.encode_to_vec()))
            }
            other => Err(unsupported_command(&other)),
        }
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        match action.r#type.as_str() {
            CREATE_PREPARED_STATEMENT => {
                let request: ActionCreatePreparedStatementRequest =
                    unpack(&action.body, "CreatePreparedStatement request")?;
                let result = self.create_prepared_statement(request).await?;
                Ok(Response::new(single(arrow_flight::Result {
                    body: result.as_any().encode_to_vec().into(),
                })))
            }
            CLOSE_PREPARED_STATEMENT => {
                // Handles are stateless: there is nothing to free, but check the request is sane.
                let _: ActionClosePreparedStatementRequest =
                    unpack(&action.body, "ClosePreparedStatement request")?;
                Ok(Response::new(Box::pin(futures::stream::empty())))
            }
            CANCEL_FLIGHT_INFO => {
                let _ = CancelFlightInfoRequest::decode(&action.body[..])
                    .map_err(|e| decode_status("CancelFlightInfo request", e))?;
                // Queries run only while their DoGet stream is open; closing it cancels them.
                let result = CancelFlightInfoResult::new(CancelStatus::NotCancellable);
                Ok(Response::new(single(arrow_flight::Result {
                    body: result.encode_to_vec().into(),
                })))
            }
            other => Err(Status::unimplemented(format!(
                "action '{other}' is not supported"
            ))),
        }
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (
                CREATE_PREPARED_STATEMENT,
                "Creates a prepared statement. Request: ActionCreatePreparedStatementRequest; \
                 response: ActionCreatePreparedStatementResult",
            ),
            (
                CLOSE_PREPARED_STATEMENT,
                "Closes a prepared statement. Request: ActionClosePreparedStatementRequest",
            ),
            (
                CANCEL_FLIGHT_INFO,
                "Cancels a query. Request: CancelFlightInfoRequest; response: CancelFlightInfoResult",
            ),
        ];
        let actions = actions.map(|(name, description)| {
            Ok(ActionType {
                r#type: name.to_string(),
                description: description.to_string(),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(actions))))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoExchange is not supported"))
    }
}

impl FlightSqlService {
    /// Runs a statement that returns no rows (CREATE/DROP/SET) and returns its record count.
    async fn update(&self, handle: StatementHandle) -> Result<i64, Status> {
        match self.plan(&handle).await? {
            Planned::NoRows(plan, ctx) => Self::run_no_rows(plan, ctx).await,
            Planned::Query(..) => Err(Status::invalid_argument(
                "this statement returns rows: run it as a query, not as an update",
            )),
        }
    }
}
