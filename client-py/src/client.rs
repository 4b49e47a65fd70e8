//! An async Flight SQL client that keeps every gRPC status code (arrow-flight's own turns them into text).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, DoPutUpdateResult, ProstMessageExt,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, IpcMessage, Ticket,
};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::Channel;
use tonic::{IntoRequest, Request};

use crate::endpoint::ConnectOptions;
use crate::error::ClientError;
use crate::session::{
    GetSessionOptionsResult, SessionCookie, SessionOptionValue, SetSessionOptionsRequest,
    SetSessionOptionsResult,
};

const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";
const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
const CLOSE_SESSION: &str = "CloseSession";

/// A connected Flight SQL client; cheap to clone (clones share the HTTP/2 connection).
#[derive(Clone)]
pub struct FlightSqlClient {
    inner: FlightServiceClient<Channel>,
    /// Headers sent with every call, the bearer token included.
    headers: Arc<MetadataMap>,
    timeout: Option<Duration>,
    /// `grpc://`: failures before an answer may mean the server wants TLS.
    plaintext: bool,
    /// The Flight session the server started for this connection, if any.
    cookie: SessionCookie,
}

/// What a query returns before any row is fetched: its schema and where to fetch the rows.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    pub schema: SchemaRef,
    pub tickets: Vec<Ticket>,
}

/// One row of GetTables.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub catalog: Option<String>,
    pub db_schema: Option<String>,
    pub name: String,
    pub schema: Schema,
}

impl FlightSqlClient {
    /// Connects and, when credentials are given, trades them for a bearer token.
    pub async fn connect(
        options: &ConnectOptions,
        basic_auth: Option<(&str, &str)>,
    ) -> Result<Self, ClientError> {
        let channel = options.channel().await?;
        let inner = FlightServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut client = Self {
            inner,
            headers: Arc::new(options.headers.clone()),
            timeout: options.timeout,
            plaintext: !options.uri.tls,
            cookie: SessionCookie::default(),
        };
        if let Some((username, password)) = basic_auth {
            client.handshake(username, password).await?;
        }
        Ok(client)
    }

    /// Wraps a message with the connection's headers and deadline.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = message.into_request();
        for entry in self.headers.iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry {
                request.metadata_mut().append(key.clone(), value.clone());
            }
        }
        if let Some(cookie) = self.cookie.header() {
            request.metadata_mut().append("cookie", cookie);
        }
        request
    }

    /// Awaits a call's first answer, within the connection's timeout if it has one.
    /// Session cookies the answer sets are kept for the connection's later calls.
    async fn answer<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<tonic::Response<T>, ClientError> {
        let answer = self.first_answer(call).await?;
        self.cookie.update(answer.metadata());
        Ok(answer)
    }

    async fn first_answer<T>(
        &self,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, ClientError> {
        let failed = |status: tonic::Status| {
            let error = ClientError::from(status);
            if self.plaintext {
                error.before_plaintext_answer()
            } else {
                error
            }
        };
        match self.timeout {
            None => call.await.map_err(failed),
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(answer) => answer.map_err(failed),
                Err(_) => Err(ClientError::Status {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!(
                        "the server did not answer within {:.1} s",
                        limit.as_secs_f64()
                    ),
                }),
            },
        }
    }

    /// Basic-auth handshake; the server's `authorization` answer becomes the bearer header.
    async fn handshake(&mut self, username: &str, password: &str) -> Result<(), ClientError> {
        let credentials = BASE64_STANDARD.encode(format!("{username}:{password}"));
        let basic = AsciiMetadataValue::try_from(format!("Basic {credentials}"))
            .map_err(|_| ClientError::Protocol("credentials are not valid header text".into()))?;
        let message = HandshakeRequest {
            protocol_version: 0,
            payload: Default::default(),
        };
        let mut request = self.request(futures::stream::iter([message]));
        request
            .metadata_mut()
            .insert("authorization", basic.clone());
        let mut inner = self.inner.clone();
        let response = match self.answer(inner.handshake(request)).await {
            Ok(response) => response,
            // No handshake on this server: send the credentials with every call instead.
            Err(ClientError::Status {
                code: tonic::Code::Unimplemented,
                ..
            }) => {
                self.set_authorization(basic);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let header = response.metadata().get("authorization").cloned();
        let replies: Vec<_> = response.into_inner().try_collect().await?;
        let token = match header {
            Some(value) => Some(value),
            // Some servers return the token in the payload instead of a header.
            None => replies
                .iter()
                .find(|r| !r.payload.is_empty())
                .and_then(|r| std::str::from_utf8(&r.payload).ok())
                .map(bearer)
                .transpose()?,
        };
        if let Some(token) = token {
            self.set_authorization(token);
        }
        Ok(())
    }

    fn set_authorization(&mut self, value: AsciiMetadataValue) {
        let mut headers = (*self.headers).clone();
        headers.insert("authorization", value);
        self.headers = Arc::new(headers);
    }

    /// Plans `sql` on the server (GetFlightInfo) without fetching rows.
    pub async fn plan_statement(&self, sql: &str) -> Result<QueryPlan, ClientError> {
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        self.flight_info(command.as_any()).await
    }

    /// Plans a prepared statement with one row of bound parameters.
    ///
    /// Returns the plan and the handle, which the caller closes once the rows are fetched.
    pub async fn plan_prepared(
        &self,
        sql: &str,
        parameters: RecordBatch,
    ) -> Result<(QueryPlan, PreparedStatement), ClientError> {
        let prepared = self.prepare(sql).await?;
        let result: Result<QueryPlan, ClientError> = async {
            let parameters = conform(parameters, &prepared.parameter_schema)?;
            let handle = self.bind(&prepared.handle, parameters).await?;
            let command = CommandPreparedStatementQuery {
                prepared_statement_handle: handle.into(),
            };
            self.flight_info(command.as_any()).await
        }
        .await;
        match result {
            Ok(plan) => Ok((plan, prepared.closer(self.clone()))),
            Err(e) => {
                prepared.closer(self.clone()).close().await;
                Err(e)
            }
        }
    }

    async fn prepare(&self, sql: &str) -> Result<Prepared, ClientError> {
        let request = ActionCreatePreparedStatementRequest {
            query: sql.to_string(),
            transaction_id: None,
        };
        let body = self
            .action(CREATE_PREPARED_STATEMENT, request.as_any().encode_to_vec())
            .await?
            .ok_or_else(|| {
                ClientError::Protocol("CreatePreparedStatement returned nothing".into())
            })?;
        let any = Any::decode(body.as_slice())
            .map_err(|e| ClientError::Protocol(format!("CreatePreparedStatement result: {e}")))?;
        let result: ActionCreatePreparedStatementResult = any
            .unpack()
            .map_err(|e| ClientError::Protocol(format!("CreatePreparedStatement result: {e}")))?
            .ok_or_else(|| {
                ClientError::Protocol("CreatePreparedStatement returned another message".into())
            })?;
        let parameter_schema = if result.parameter_schema.is_empty() {
            Schema::empty()
        } else {
            Schema::try_from(IpcMessage(result.parameter_schema))?
        };
        Ok(Prepared {
            handle: result.prepared_statement_handle.to_vec(),
            parameter_schema,
        })
    }

    /// Sends the parameter row with DoPut; returns the handle to execute (servers may replace it).
    async fn bind(&self, handle: &[u8], parameters: RecordBatch) -> Result<Vec<u8>, ClientError> {
        let command = CommandPreparedStatementQuery {
            prepared_statement_handle: handle.to_vec().into(),
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let mut messages =
            arrow_flight::utils::batches_to_flight_data(&parameters.schema(), vec![parameters])?;
        if let Some(first) = messages.first_mut() {
            first.flight_descriptor = Some(descriptor);
        }
        let mut inner = self.inner.clone();
        let request = self.request(futures::stream::iter(messages));
        let mut replies = self.answer(inner.do_put(request)).await?.into_inner();
        let mut handle = handle.to_vec();
        while let Some(reply) = replies.message().await? {
            if reply.app_metadata.is_empty() {
                continue;
            }
            let result = DoPutPreparedStatementResult::decode(reply.app_metadata.as_ref())
                .map_err(|e| ClientError::Protocol(format!("DoPut result: {e}")))?;
            if let Some(updated) = result.prepared_statement_handle {
                handle = updated.to_vec();
            }
        }
        Ok(handle)
    }

    async fn close_prepared(&self, handle: Vec<u8>) -> Result<(), ClientError> {
        let request = ActionClosePreparedStatementRequest {
            prepared_statement_handle: handle.into(),
        };
        self.action(CLOSE_PREPARED_STATEMENT, request.as_any().encode_to_vec())
            .await
            .map(|_| ())
    }

    /// Runs a statement that returns no rows (DDL, DML); returns the affected-row count.
    pub async fn execute_update(&self, sql: &str) -> Result<i64, ClientError> {
        let command = CommandStatementUpdate {
            query: sql.to_string(),
            transaction_id: None,
        };
        let message = FlightData {
            flight_descriptor: Some(FlightDescriptor::new_cmd(command.as_any().encode_to_vec())),
            ..Default::default()
        };
        self.put_for_count(futures::stream::iter([message])).await
    }

    /// Sends a DoPut stream whose answer is a DoPutUpdateResult; returns its record count
    /// (-1 when the server sent none).
    async fn put_for_count(
        &self,
        messages: impl Stream<Item = FlightData> + Send + 'static,
    ) -> Result<i64, ClientError> {
        let mut inner = self.inner.clone();
        let request = self.request(messages);
        let mut replies = self.answer(inner.do_put(request)).await?.into_inner();
        let mut count = -1;
        while let Some(reply) = replies.message().await? {
            if !reply.app_metadata.is_empty() {
                count = DoPutUpdateResult::decode(reply.app_metadata.as_ref())
                    .map_err(|e| ClientError::Protocol(format!("DoPut update result: {e}")))?
                    .record_count;
            }
        }
        Ok(count)
    }

    /// Sends `batches` (of `schema`) with DoPut for a bulk ingest `command`; returns the rows
    /// the server ingested. If the batches fail (the source raised), the call is abandoned,
    /// never ended cleanly, so the server keeps nothing of it.
    pub async fn ingest(
        &self,
        command: CommandStatementIngest,
        schema: SchemaRef,
        batches: impl Stream<Item = Result<RecordBatch, ClientError>> + Send + 'static,
    ) -> Result<i64, ClientError> {
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_flight_descriptor(Some(descriptor))
            .build(batches.map_err(|e| FlightError::ExternalError(Box::new(e))));
        let (failed, failure) = tokio::sync::oneshot::channel::<ClientError>();
        // The request stream ends only when every batch was sent; on a failure it stays open
        // (pending) while the failure cancels the call.
        let messages = futures::stream::unfold(
            (Box::pin(encoded), Some(failed)),
            |(mut encoded, mut failed)| async move {
                match encoded.next().await {
                    Some(Ok(message)) => Some((message, (encoded, failed))),
                    Some(Err(error)) => {
                        if let Some(failed) = failed.take() {
                            let _ = failed.send(ClientError::from(error));
                        }
                        futures::future::pending().await
                    }
                    None => None,
                }
            },
        );
        tokio::select! {
            result = self.put_for_count(messages) => result,
            Ok(error) = failure => Err(error),
        }
    }

    /// The session's options (GetSessionOptions).
    pub async fn session_options(
        &self,
    ) -> Result<HashMap<String, SessionOptionValue>, ClientError> {
        let body = self.action(GET_SESSION_OPTIONS, Vec::new()).await?;
        let result = GetSessionOptionsResult::decode(body.unwrap_or_default().as_slice())
            .map_err(|e| ClientError::Protocol(format!("GetSessionOptions result: {e}")))?;
        Ok(result.session_options)
    }

    /// Sets session options (SetSessionOptions); returns the options the server refused,
    /// with the reason Flight.proto names (INVALID_NAME, INVALID_VALUE, ERROR).
    pub async fn set_session_options(
        &self,
        options: HashMap<String, SessionOptionValue>,
    ) -> Result<Vec<(String, &'static str)>, ClientError> {
        let request = SetSessionOptionsRequest {
            session_options: options,
        };
        let body = self
            .action(SET_SESSION_OPTIONS, request.encode_to_vec())
            .await?;
        let result = SetSessionOptionsResult::decode(body.unwrap_or_default().as_slice())
            .map_err(|e| ClientError::Protocol(format!("SetSessionOptions result: {e}")))?;
        let mut refused: Vec<_> = result
            .errors
            .into_iter()
            .map(|(name, error)| (name, error.name()))
            .collect();
        refused.sort();
        Ok(refused)
    }

    /// Ends the session the server keeps for this connection, if any (CloseSession).
    pub async fn close_session(&self) -> Result<(), ClientError> {
        if self.cookie.is_set() {
            self.action(CLOSE_SESSION, Vec::new()).await?;
        }
        Ok(())
    }

    /// Lists the server's tables with their Arrow schemas.
    pub async fn tables(&self) -> Result<Vec<TableInfo>, ClientError> {
        let command = CommandGetTables {
            include_schema: true,
            ..Default::default()
        };
        let plan = self.flight_info(command.as_any()).await?;
        let mut tables = Vec::new();
        for ticket in plan.tickets {
            let mut stream = self.fetch(ticket).await?;
            while let Some(batch) = stream.try_next().await? {
                tables.extend(table_rows(&batch)?);
            }
        }
        Ok(tables)
    }

    /// Starts streaming the record batches behind one ticket.
    pub async fn fetch(&self, ticket: Ticket) -> Result<FlightRecordBatchStream, ClientError> {
        let mut inner = self.inner.clone();
        let response = self.answer(inner.do_get(self.request(ticket))).await?;
        let data = response
            .into_inner()
            .map_err(|status| FlightError::Tonic(Box::new(status)));
        Ok(FlightRecordBatchStream::new_from_flight_data(data))
    }

    async fn flight_info(&self, command: Any) -> Result<QueryPlan, ClientError> {
        let descriptor = FlightDescriptor::new_cmd(command.encode_to_vec());
        let mut inner = self.inner.clone();
        let info: FlightInfo = self
            .answer(inner.get_flight_info(self.request(descriptor)))
            .await?
            .into_inner();
        let schema = if info.schema.is_empty() {
            Schema::empty()
        } else {
            info.clone().try_decode_schema()?
        };
        Ok(QueryPlan {
            schema: Arc::new(schema),
            tickets: info
                .endpoint
                .into_iter()
                .filter_map(|endpoint| endpoint.ticket)
                .collect(),
        })
    }

    /// Runs an action and returns the body of its first result, if any.
    async fn action(&self, kind: &str, body: Vec<u8>) -> Result<Option<Vec<u8>>, ClientError> {
        let action = Action {
            r#type: kind.to_string(),
            body: body.into(),
        };
        let mut inner = self.inner.clone();
        let mut results = self
            .answer(inner.do_action(self.request(action)))
            .await?
            .into_inner();
        let mut first = None;
        while let Some(result) = results.message().await? {
            first.get_or_insert(result.body.to_vec());
        }
        Ok(first)
    }
}

/// `Bearer <token>` as a header value.
fn bearer(token: &str) -> Result<AsciiMetadataValue, ClientError> {
    let value = if token.starts_with("Bearer ") || token.starts_with("bearer ") {
        token.to_string()
    } else {
        format!("Bearer {token}")
    };
    AsciiMetadataValue::try_from(value)
        .map_err(|_| ClientError::Protocol("the token is not valid header text".into()))
}

/// A bearer header for a user-supplied token.
pub fn bearer_header(token: &str) -> Option<AsciiMetadataValue> {
    bearer(token).ok()
}

struct Prepared {
    handle: Vec<u8>,
    parameter_schema: Schema,
}

impl Prepared {
    fn closer(self, client: FlightSqlClient) -> PreparedStatement {
        PreparedStatement {
            client,
            handle: Some(self.handle),
        }
    }
}

/// A server-side prepared statement, closed (without waiting) when dropped.
pub struct PreparedStatement {
    client: FlightSqlClient,
    handle: Option<Vec<u8>>,
}

impl PreparedStatement {
    async fn close(mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = self.client.close_prepared(handle).await;
        }
    }
}

impl Drop for PreparedStatement {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        if let Ok(runtime) = crate::runtime::runtime() {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.close_prepared(handle).await;
            });
        }
    }
}

/// Checks the parameter row against the server's parameter schema, when it sent one. Values
/// keep their own types (an int stays Int64 even where the server guessed text for an untyped
/// placeholder such as `SELECT ?`): the server coerces them where the SQL needs another type.
fn conform(parameters: RecordBatch, wanted: &Schema) -> Result<RecordBatch, ClientError> {
    if !wanted.fields().is_empty() && wanted.fields().len() != parameters.num_columns() {
        return Err(ClientError::Status {
            code: tonic::Code::InvalidArgument,
            message: format!(
                "the query has {} parameter(s) but {} value(s) were given",
                wanted.fields().len(),
                parameters.num_columns()
            ),
        });
    }
    Ok(parameters)
}

/// Decodes the rows of a GetTables batch (spec schema, `table_schema` included).
fn table_rows(batch: &RecordBatch) -> Result<Vec<TableInfo>, ClientError> {
    let text = |name: &str| -> Result<&StringArray, ClientError> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| ClientError::Protocol(format!("GetTables has no text column {name}")))
    };
    let catalogs = text("catalog_name")?;
    let schemas = text("db_schema_name")?;
    let names = text("table_name")?;
    let ipc = batch
        .column_by_name("table_schema")
        .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| ClientError::Protocol("GetTables has no table_schema column".into()))?;
    (0..batch.num_rows())
        .map(|row| {
            let optional = |a: &StringArray| (!a.is_null(row)).then(|| a.value(row).to_string());
            let schema = if ipc.is_null(row) || ipc.value(row).is_empty() {
                Schema::empty()
            } else {
                Schema::try_from(IpcMessage(ipc.value(row).to_vec().into()))?
            };
            Ok(TableInfo {
                catalog: optional(catalogs),
                db_schema: optional(schemas),
                name: names.value(row).to_string(),
                schema,
            })
        })
        .collect()
}
