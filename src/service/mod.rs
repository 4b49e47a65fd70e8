//! The Flight service: [`FlightbearService`] answers every Flight RPC by decoding the request
//! ([`request`]) and delegating to the module that owns it.
//!
//! | module | owns |
//! |---|---|
//! | [`request`] | descriptors, tickets, DoPut commands and action bodies → one `Request` |
//! | [`planner`] | SQL options, `?` placeholders, logical/physical plans, parameter schemas |
//! | [`complexity`] | limits that refuse SQL too deep or too large to plan safely |
//! | [`executor`] | the query runtime, apart from the runtime that serves gRPC |
//! | [`running`] | query slots (admission) and the running queries CancelFlightInfo can stop |
//! | [`deadline`] | the server's query timeout and the client's gRPC deadline |
//! | [`statement`] | FlightInfo, schema and result stream of statements; updates; the query log |
//! | [`prepared`] | creating prepared statements and binding their parameters |
//! | [`prepared_store`] | bound parameters kept for clients that reuse the original handle |
//! | [`sessions`] | Flight sessions on this replica, named by the `arrow_flight_session_id` cookie |
//! | [`settings`] | the settings a session may change (`SET`, session options), checked on every use |
//! | [`session_options`] | the session actions and `SET`/`RESET`: what they change in a session |
//! | [`ingest`] | bulk ingest (CommandStatementIngest): tables kept as Parquet under `--ingest-dir` |
//! | [`temp_tables`] | temporary tables: kept in a session, seen by its statements only |
//! | [`reset_body`] | DoPut bodies a client reset end with CANCELLED, not as if complete |
//! | [`tables`] | plain Flight: path descriptors and ListFlights |
//! | [`metadata`] | Flight SQL metadata commands (catalogs, tables, SQL info, …) |
//! | [`actions`] | the table of DoAction actions behind DoAction and ListActions |
//! | [`wire`] | the schema and types clients receive |
//! | [`error`] | the one error type and its mapping to gRPC codes |

pub mod actions;
pub mod authorize;
pub mod complexity;
pub mod deadline;
pub mod decode_errors;
pub mod error;
pub mod executor;
pub mod handle;
pub mod ingest;
pub mod metadata;
pub mod placeholders;
pub mod planner;
pub mod prepared;
pub mod prepared_store;
pub mod request;
pub mod reset_body;
pub mod running;
pub mod session_options;
pub mod sessions;
pub mod settings;
pub mod statement;
pub mod tables;
pub mod temp_tables;
pub mod wire;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::{DoPutPreparedStatementResult, DoPutUpdateResult, ProstMessageExt};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoResult, Criteria, Empty, FlightData, FlightDescriptor,
    FlightInfo, HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc,
    SchemaResult, Ticket,
};
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::prelude::SessionContext;
use futures::Stream;
use prost::Message;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use authorize::CatalogGuard;
use deadline::Deadline;
pub use decode_errors::DecodeErrorsAsInvalidArgument;
pub use error::ServiceError;
use executor::QueryExecutor;
use planner::Planner;
use request::Request;
use running::RunningQueries;
use sessions::{Session, Sessions};

use crate::catalog::data_roots::DataRoots;
use crate::config::Config;
use crate::metrics::Metrics;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Request messages may always be this large, whatever `--max-sql-bytes` says.
const MIN_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// The flightbear Flight service: Flight SQL plus plain Flight over one DataFusion catalog.
#[derive(Clone)]
pub struct FlightbearService {
    planner: Planner,
    string_view: bool,
    executor: Arc<QueryExecutor>,
    queries: Arc<RunningQueries>,
    query_timeout: Option<Duration>,
    max_request_bytes: usize,
    metrics: Arc<Metrics>,
    guard: Arc<CatalogGuard>,
    prepared: Arc<prepared_store::PreparedStore>,
    sessions: Arc<Sessions>,
    /// Ingested tables (`None` without `--ingest-dir`).
    ingest: Option<Arc<ingest::IngestStore>>,
    /// Most bytes of Arrow data one bulk ingest may send.
    max_ingest_bytes: usize,
}

impl FlightbearService {
    /// A service over the given session, with the limits and settings of `config`. The tables
    /// registered in `ctx` now are the configured ones: clients cannot drop or replace them.
    pub fn new(ctx: SessionContext, config: &Config) -> std::io::Result<Self> {
        let max_sql_bytes = config.max_sql_bytes.as_usize();
        let roots = DataRoots::new(&config.data_roots).map_err(std::io::Error::other)?;
        let guard = Arc::new(CatalogGuard::new(&ctx, roots, config.max_client_tables));
        // Each session sees its temporary tables in the default schema.
        if let Some(catalog) = ctx.catalog(crate::catalog::CATALOG)
            && let Some(shared) = catalog.schema(crate::catalog::SCHEMA)
        {
            let schema = Arc::new(temp_tables::SessionSchema::new(shared));
            catalog
                .register_schema(crate::catalog::SCHEMA, schema)
                .map_err(std::io::Error::other)?;
        }
        // Ingested tables are registered after the guard: they are client tables.
        let ingest = match &config.ingest_dir {
            Some(dir) => Some(Arc::new(restore_ingested(&ctx, dir)?)),
            None => None,
        };
        let prepared = Arc::new(prepared_store::PreparedStore::new(
            config.prepared_limits(),
            &ctx.runtime_env().memory_pool,
        ));
        Ok(Self {
            planner: Planner::new(ctx, max_sql_bytes),
            string_view: config.string_view,
            executor: Arc::new(QueryExecutor::new(config.query_threads())?),
            queries: Arc::new(RunningQueries::new(
                config.max_concurrent_queries(),
                Duration::from_secs(config.queue_timeout),
            )),
            query_timeout: (config.query_timeout > 0)
                .then(|| Duration::from_secs(config.query_timeout)),
            // Room for the SQL text plus a bound parameter row and protobuf framing.
            max_request_bytes: max_sql_bytes.saturating_add(MIN_REQUEST_BYTES),
            metrics: Arc::new(Metrics::new()),
            guard,
            prepared,
            sessions: Arc::new(Sessions::new(config.session_limits())),
            ingest,
            max_ingest_bytes: config.max_ingest_bytes.as_usize(),
        })
    }

    /// Counts into `metrics` (by default the service counts into metrics nobody reads).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The tonic service for this server: requests are bounded, responses are not (large
    /// records stream as large messages), undecodable requests are the client's fault.
    pub fn into_server(self) -> DecodeErrorsAsInvalidArgument<FlightServiceServer<Self>> {
        let max_request_bytes = self.max_request_bytes;
        DecodeErrorsAsInvalidArgument::new(
            FlightServiceServer::new(self)
                .max_decoding_message_size(max_request_bytes)
                .max_encoding_message_size(usize::MAX),
            max_request_bytes,
        )
    }

    /// The running queries of this service (for metrics).
    pub fn running_queries(&self) -> &Arc<RunningQueries> {
        &self.queries
    }

    /// The deadline of a request: the server's query timeout or the client's, if sooner.
    fn deadline<T>(&self, request: &GrpcRequest<T>) -> Option<Deadline> {
        Deadline::for_request(self.query_timeout, request.metadata())
    }

    /// The schema clients see for a result schema.
    fn wire_schema(&self, schema: &SchemaRef) -> SchemaRef {
        wire::wire_schema(schema, self.string_view)
    }

    /// A statement handle with the settings it runs with: its session's (see
    /// [`Self::settings_for`]); the tickets and handles made from it carry them along.
    fn in_session(
        &self,
        mut handle: handle::StatementHandle,
        session: &Session,
    ) -> Result<handle::StatementHandle, ServiceError> {
        handle.settings = self.settings_for(session, std::mem::take(&mut handle.settings))?;
        Ok(handle)
    }

    /// GetFlightInfo (and PollFlightInfo): what a descriptor's results will be, and the ticket.
    async fn flight_info(
        &self,
        descriptor: FlightDescriptor,
        deadline: Option<Deadline>,
        session: &Session,
    ) -> Result<FlightInfo, ServiceError> {
        match Request::from_descriptor(&descriptor)? {
            Request::Query(handle) => {
                let handle = self.in_session(handle, session)?;
                self.statement_info(handle, descriptor, deadline, session.clone())
                    .await
            }
            Request::Table(path) => {
                let handle = self.in_session(self.table_query(&path)?, session)?;
                self.statement_info(handle, descriptor, deadline, session.clone())
                    .await
            }
            Request::Metadata(command) => {
                let answer = metadata::answer(self.planner.catalog(), &command, self.string_view);
                metadata::flight_info(&answer.await?, command, descriptor)
            }
            other => Err(unexpected(other)),
        }
    }

    async fn schema(
        &self,
        descriptor: FlightDescriptor,
        deadline: Option<Deadline>,
        session: &Session,
    ) -> Result<SchemaResult, ServiceError> {
        let schema = match Request::from_descriptor(&descriptor)? {
            Request::Query(handle) => {
                let handle = self.in_session(handle, session)?;
                self.statement_schema(handle, deadline).await?
            }
            Request::Table(path) => {
                let handle = self.in_session(self.table_query(&path)?, session)?;
                self.statement_schema(handle, deadline).await?
            }
            Request::Metadata(command) => {
                metadata::answer(self.planner.catalog(), &command, self.string_view)
                    .await?
                    .schema()
            }
            other => return Err(unexpected(other)),
        };
        Ok(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()).try_into()?)
    }

    async fn stream(
        &self,
        ticket: Ticket,
        deadline: Option<Deadline>,
    ) -> Result<BoxStream<FlightData>, ServiceError> {
        match Request::from_ticket(&ticket)? {
            Request::Query(handle) => self.statement_stream(handle, deadline).await,
            Request::Metadata(command) => {
                let answer =
                    metadata::answer(self.planner.catalog(), &command, self.string_view).await?;
                Ok(statement::batches_stream(answer.schema(), vec![answer]))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn put(
        &self,
        mut stream: Streaming<FlightData>,
        deadline: Option<Deadline>,
        session: &Session,
    ) -> Result<Bytes, ServiceError> {
        let first = stream
            .message()
            .await?
            .ok_or_else(|| ServiceError::invalid("DoPut stream is empty"))?;
        let descriptor = first
            .flight_descriptor
            .clone()
            .ok_or_else(|| ServiceError::invalid("DoPut needs a flight descriptor"))?;
        let result = match Request::from_put(&descriptor)? {
            Request::Update { handle, bindable } => {
                let handle = self.in_session(handle, session)?;
                let handle = if bindable {
                    self.bind_parameters(handle, first, stream).await?
                } else {
                    handle
                };
                let record_count = self.update(handle, deadline, session.clone()).await?;
                DoPutUpdateResult { record_count }.encode_to_vec()
            }
            Request::Ingest(command) => {
                let record_count = self
                    .ingest(command, first, stream, deadline, session)
                    .await?;
                DoPutUpdateResult { record_count }.encode_to_vec()
            }
            Request::Bind(handle) => {
                let handle = self.in_session(handle, session)?;
                let handle = self.bind_parameters(handle, first, stream).await?;
                DoPutPreparedStatementResult {
                    prepared_statement_handle: Some(handle.to_bytes()),
                }
                .encode_to_vec()
            }
            other => return Err(unexpected(other)),
        };
        Ok(result.into())
    }

    async fn action(
        &self,
        action: Action,
        session: &Session,
    ) -> Result<Option<Bytes>, ServiceError> {
        match Request::from_action(&action)? {
            Request::CreatePreparedStatement(request) => {
                let sql = request.query.clone();
                let settings = self.settings_for(session, Default::default())?;
                let result = self
                    .create_prepared_statement(request, settings)
                    .await
                    .inspect_err(|e| self.planning_failed(&sql, e))?;
                Ok(Some(result.as_any().encode_to_vec().into()))
            }
            Request::ClosePreparedStatement(request) => {
                self.close_prepared_statement(request);
                Ok(None)
            }
            Request::CancelFlightInfo(request) => {
                let status = self.cancel(request)?;
                Ok(Some(
                    CancelFlightInfoResult::new(status).encode_to_vec().into(),
                ))
            }
            Request::SetSessionOptions(request) => Ok(Some(
                self.set_session_options(session, request)?
                    .encode_to_vec()
                    .into(),
            )),
            Request::GetSessionOptions => Ok(Some(
                self.get_session_options(session)?.encode_to_vec().into(),
            )),
            Request::CloseSession => Ok(Some(self.close_session(session).encode_to_vec().into())),
            other => Err(unexpected(other)),
        }
    }
}

impl FlightbearService {
    /// The answer to a request in `session`, with the session cookie if the request started
    /// or ended the session.
    /// Runs a request's work in its session's scope: the session's temporary tables are
    /// found when it plans.
    async fn in_scope<T>(&self, session: &Session, work: impl Future<Output = T>) -> T {
        let scope = temp_tables::SessionScope::new(Arc::clone(&self.sessions), session.clone());
        temp_tables::in_scope(scope, work).await
    }

    fn answer<T>(&self, message: T, session: &Session) -> Response<T> {
        let mut response = Response::new(message);
        self.sessions.add_cookie(session, response.metadata_mut());
        response
    }
}

/// Opens the ingest directory and registers the tables kept in it; a name a configured table
/// already has is skipped with a warning.
fn restore_ingested(
    ctx: &SessionContext,
    dir: &std::path::Path,
) -> std::io::Result<ingest::IngestStore> {
    let store = ingest::IngestStore::open(dir)?;
    for (name, table) in store.tables()? {
        if ctx.table_exist(name.as_str()).unwrap_or(true) {
            tracing::warn!(table = %name, "an ingested table has the name of a configured table: not served");
            continue;
        }
        ctx.register_table(name.as_str(), table)
            .map_err(std::io::Error::other)?;
        tracing::info!(table = %name, dir = %dir.display(), "registered ingested table");
    }
    Ok(store)
}

/// A decoder returned a request its RPC does not handle: a bug in the decoder.
fn unexpected(request: Request) -> ServiceError {
    ServiceError::Internal(format!("request decoded for the wrong RPC: {request:?}"))
}

fn single<T: Send + 'static>(item: T) -> BoxStream<T> {
    Box::pin(futures::stream::once(futures::future::ready(Ok(item))))
}

#[tonic::async_trait]
impl FlightService for FlightbearService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        request: GrpcRequest<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // The authentication layer checked the credentials; its token also goes in the payload
        // (the header carries it too).
        let payload = request
            .extensions()
            .get::<crate::auth::IssuedToken>()
            .map(|token| Bytes::from(token.0.clone()))
            .unwrap_or_default();
        Ok(Response::new(single(HandshakeResponse {
            protocol_version: 0,
            payload,
        })))
    }

    async fn list_flights(
        &self,
        _request: GrpcRequest<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let infos = self.list_tables().await?;
        let stream = futures::stream::iter(infos.into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_flight_info(
        &self,
        request: GrpcRequest<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let deadline = self.deadline(&request);
        let session = self.sessions.for_request(request.metadata());
        let work = self.flight_info(request.into_inner(), deadline, &session);
        let info = self.in_scope(&session, work).await?;
        Ok(self.answer(info, &session))
    }

    async fn poll_flight_info(
        &self,
        request: GrpcRequest<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        // Planning is quick, so the answer is always complete on the first poll.
        let deadline = self.deadline(&request);
        let session = self.sessions.for_request(request.metadata());
        let work = self.flight_info(request.into_inner(), deadline, &session);
        let info = self.in_scope(&session, work).await?;
        let poll = PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        };
        Ok(self.answer(poll, &session))
    }

    async fn get_schema(
        &self,
        request: GrpcRequest<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let deadline = self.deadline(&request);
        let session = self.sessions.for_request(request.metadata());
        let work = self.schema(request.into_inner(), deadline, &session);
        let schema = self.in_scope(&session, work).await?;
        Ok(self.answer(schema, &session))
    }

    async fn do_get(
        &self,
        request: GrpcRequest<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let deadline = self.deadline(&request);
        let session = self.sessions.for_request(request.metadata());
        let work = self.stream(request.into_inner(), deadline);
        let stream = self.in_scope(&session, work).await?;
        Ok(self.answer(stream, &session))
    }

    async fn do_put(
        &self,
        request: GrpcRequest<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let deadline = self.deadline(&request);
        let session = self.sessions.for_request(request.metadata());
        let work = self.put(request.into_inner(), deadline, &session);
        let app_metadata = self.in_scope(&session, work).await?;
        Ok(self.answer(single(PutResult { app_metadata }), &session))
    }

    async fn do_action(
        &self,
        request: GrpcRequest<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let session = self.sessions.for_request(request.metadata());
        let work = self.action(request.into_inner(), &session);
        let stream: Self::DoActionStream = match self.in_scope(&session, work).await? {
            Some(body) => single(arrow_flight::Result { body }),
            None => Box::pin(futures::stream::empty()),
        };
        Ok(self.answer(stream, &session))
    }

    async fn list_actions(
        &self,
        _request: GrpcRequest<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = actions::action_types().into_iter().map(Ok);
        Ok(Response::new(Box::pin(futures::stream::iter(actions))))
    }

    async fn do_exchange(
        &self,
        _request: GrpcRequest<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoExchange is not supported"))
    }
}
