//! `flightbear query` and `flightbear tables`: a Flight SQL command-line client.
//!
//! It speaks Flight SQL as any client does (GetFlightInfo of a `CommandStatementQuery`, DoGet of
//! each endpoint; prepared statements with a parameter batch sent by DoPut), so it works against
//! any Flight SQL server, not only flightbear. Results stream: each batch is written out as it
//! arrives (the aligned table sizes its columns on the first rows).

mod output;

use std::path::PathBuf;
use std::time::Duration;

use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt,
};
use arrow_flight::{
    Action, FlightClient, FlightDescriptor, FlightInfo, encode::FlightDataEncoderBuilder,
    error::FlightError,
};
use base64::Engine;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use std::sync::Arc;
use tonic::transport::{Channel, Endpoint};

pub use output::{OutputFormat, ResultWriter};

/// How to reach and log in to a Flight SQL server.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `HOST:PORT`, `http://HOST:PORT` or `https://HOST:PORT` (TLS).
    pub addr: String,
    /// User name for HTTP Basic credentials (with `password`).
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<String>,
    /// A bearer token, instead of a user name and password.
    pub token: Option<String>,
    /// PEM CA certificate(s) to verify an https:// server with (default: the system's roots).
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How long to wait for the connection.
    pub connect_timeout: Duration,
}

/// Why a command failed: the server's gRPC status, or a local problem.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{}: {}", grpc_code_name(.0.code()), .0.message())]
    Status(Box<tonic::Status>),
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address as given.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// A parameter or an answer could not be handled.
    #[error("{0}")]
    Invalid(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The standard upper-case name of a gRPC code (`INVALID_ARGUMENT`).
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<FlightError> for ClientError {
    fn from(error: FlightError) -> Self {
        match error {
            FlightError::Tonic(status) => Self::Status(status),
            other => Self::Invalid(other.to_string()),
        }
    }
}

impl From<ArrowError> for ClientError {
    fn from(error: ArrowError) -> Self {
        match error {
            ArrowError::IoError(_, source) => Self::Output(source),
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// A connected Flight SQL client with its credentials on every call.
pub struct Client {
    flight: FlightClient,
    options: ClientOptions,
}

fn with_scheme(addr: &str) -> String {
    // HOST:PORT without a scheme is plaintext gRPC.
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

async fn channel(addr: &str, options: &ClientOptions) -> Result<Channel, ClientError> {
    let uri = with_scheme(addr);
    let connect_error = |message: String| ClientError::Connect {
        addr: addr.to_owned(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| connect_error(e.to_string()))?
        .connect_timeout(options.connect_timeout);
    if uri.starts_with("https://") {
        let tls = crate::server::tls::client_config(
            options.tls_ca.as_deref(),
            options.tls_cert.as_deref(),
            options.tls_key.as_deref(),
        )
        .map_err(connect_error)?;
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| connect_error(e.to_string()))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| connect_error(crate::server::tls::error_chain(&e)))
}

impl Client {
    /// Connects to `options.addr` and sets the credentials every call carries.
    pub async fn connect(options: ClientOptions) -> Result<Self, ClientError> {
        let flight = Self::flight_client(&options.addr, &options).await?;
        Ok(Self { flight, options })
    }

    async fn flight_client(
        addr: &str,
        options: &ClientOptions,
    ) -> Result<FlightClient, ClientError> {
        let mut flight = FlightClient::new(channel(addr, options).await?);
        let authorization = match (&options.token, &options.username) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, Some(user)) => {
                let password = options.password.as_deref().unwrap_or_default();
                let credentials =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {credentials}"))
            }
            (None, None) => None,
        };
        if let Some(value) = authorization {
            flight.add_header("authorization", &value)?;
        }
        Ok(flight)
    }

    /// Runs `sql` and writes every batch of its answer to `out`; returns the number of rows.
    /// With `params`, the statement is prepared and the values bound to its `?` or `$n`
    /// placeholders (cast to the types the server asks for).
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[String],
        out: &mut ResultWriter<'_>,
    ) -> Result<u64, ClientError> {
        if params.is_empty() {
            let command = CommandStatementQuery {
                query: sql.to_owned(),
                transaction_id: None,
            };
            let info = self.flight_info(command.as_any()).await?;
            return self.write_results(info, out).await;
        }
        let handle = self.prepare(sql).await?;
        let result = self.query_prepared(&handle, params, out).await;
        // Close it whatever happened; an error closing does not hide the query's error.
        let close = ActionClosePreparedStatementRequest {
            prepared_statement_handle: handle.prepared_statement_handle.clone(),
        };
        let action = Action::new("ClosePreparedStatement", close.as_any().encode_to_vec());
        if let Ok(stream) = self.flight.do_action(action).await {
            let _ = stream.try_collect::<Vec<_>>().await;
        }
        result
    }

    async fn prepare(
        &mut self,
        sql: &str,
    ) -> Result<ActionCreatePreparedStatementResult, ClientError> {
        let request = ActionCreatePreparedStatementRequest {
            query: sql.to_owned(),
            transaction_id: None,
        };
        let action = Action::new("CreatePreparedStatement", request.as_any().encode_to_vec());
        let answers: Vec<_> = self.flight.do_action(action).await?.try_collect().await?;
        let first = answers.first().ok_or_else(|| {
            ClientError::Invalid("the server did not prepare the statement".into())
        })?;
        let any = Any::decode(first.clone()).map_err(|e| ClientError::Invalid(e.to_string()))?;
        any.unpack::<ActionCreatePreparedStatementResult>()
            .map_err(|e| ClientError::Invalid(e.to_string()))?
            .ok_or_else(|| {
                ClientError::Invalid("unexpected answer to CreatePreparedStatement".into())
            })
    }

    async fn query_prepared(
        &mut self,
        prepared: &ActionCreatePreparedStatementResult,
        params: &[String],
        out: &mut ResultWriter<'_>,
    ) -> Result<u64, ClientError> {
        let schema = if prepared.parameter_schema.is_empty() {
            None
        } else {
            Some(Arc::new(try_schema_from_ipc_buffer(
                &prepared.parameter_schema,
            )?))
        };
        let batch = parameter_batch(schema, params)?;
        let mut command = CommandPreparedStatementQuery {
            prepared_statement_handle: prepared.prepared_statement_handle.clone(),
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter([Ok(batch)]));
        let results: Vec<_> = self.flight.do_put(data).await?.try_collect().await?;
        // A server may hand back a new handle for the bound statement.
        if let Some(result) = results.first()
            && !result.app_metadata.is_empty()
            && let Ok(updated) = DoPutPreparedStatementResult::decode(result.app_metadata.clone())
            && let Some(handle) = updated.prepared_statement_handle
        {
            command.prepared_statement_handle = handle;
        }
        let info = self.flight_info(command.as_any()).await?;
        self.write_results(info, out).await
    }

    /// Lists the server's tables with their columns (GetTables with schemas).
    pub async fn tables(&mut self) -> Result<Vec<TableInfo>, ClientError> {
        let command = CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: true,
        };
        let info = self.flight_info(command.as_any()).await?;
        let mut tables = Vec::new();
        for endpoint in &info.endpoint {
            let Some(ticket) = endpoint.ticket.clone() else {
                continue;
            };
            let mut stream = self.flight.do_get(ticket).await?;
            while let Some(batch) = stream.next().await {
                tables.extend(table_infos(&batch?)?);
            }
        }
        Ok(tables)
    }

    async fn flight_info(&mut self, command: Any) -> Result<FlightInfo, ClientError> {
        let descriptor = FlightDescriptor::new_cmd(command.encode_to_vec());
        Ok(self.flight.get_flight_info(descriptor).await?)
    }

    /// Reads every endpoint of `info` in order (from the server that owns it) into `out`.
    async fn write_results(
        &mut self,
        info: FlightInfo,
        out: &mut ResultWriter<'_>,
    ) -> Result<u64, ClientError> {
        if let Ok(schema) = info.clone().try_decode_schema() {
            out.start(&Arc::new(schema))?;
        }
        let mut rows = 0;
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            // An endpoint served elsewhere names its server; "reuse connection" means this one.
            let elsewhere = endpoint
                .location
                .iter()
                .map(|location| location.uri.as_str())
                .find(|uri| !uri.is_empty() && !uri.starts_with("arrow-flight-reuse-connection:"));
            let mut stream = match elsewhere {
                Some(uri) => {
                    let mut other = Self::flight_client(uri, &self.options).await?;
                    other.do_get(ticket).await?
                }
                None => self.flight.do_get(ticket).await?,
            };
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                out.write(&batch)?;
            }
        }
        out.finish()?;
        Ok(rows)
    }
}

/// One table of `flightbear tables`.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// Catalog, schema and table name, dot-separated where present.
    pub name: String,
    /// `TABLE`, `VIEW`, …
    pub kind: String,
    /// The table's columns, when the server sent them.
    pub schema: Option<Schema>,
}

fn table_infos(batch: &RecordBatch) -> Result<Vec<TableInfo>, ClientError> {
    let column = |name: &str| batch.column_by_name(name).map(|c| c.as_string_opt::<i32>());
    let (Some(Some(names)), Some(Some(kinds))) = (column("table_name"), column("table_type"))
    else {
        return Err(ClientError::Invalid(
            "the GetTables answer has no table_name or table_type column".into(),
        ));
    };
    let catalogs = column("catalog_name").flatten();
    let schemas = column("db_schema_name").flatten();
    let table_schemas = batch
        .column_by_name("table_schema")
        .and_then(|c| c.as_binary_opt::<i32>());
    let mut tables = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let parts: Vec<&str> = [catalogs, schemas]
            .into_iter()
            .flatten()
            .filter(|column| column.is_valid(row))
            .map(|column| column.value(row))
            .chain([names.value(row)])
            .collect();
        let schema = match table_schemas {
            Some(schemas) if schemas.is_valid(row) => {
                Some(try_schema_from_ipc_buffer(schemas.value(row))?)
            }
            _ => None,
        };
        tables.push(TableInfo {
            name: parts.join("."),
            kind: kinds.value(row).to_owned(),
            schema,
        });
    }
    Ok(tables)
}

/// The one-row batch of parameter values: each value cast from text to the type the server's
/// parameter schema gives (text when it gives none).
fn parameter_batch(
    schema: Option<SchemaRef>,
    params: &[String],
) -> Result<RecordBatch, ClientError> {
    let fields: Vec<Field> = match &schema {
        Some(schema) if !schema.fields().is_empty() => {
            if schema.fields().len() != params.len() {
                return Err(ClientError::Invalid(format!(
                    "the statement has {} parameters but {} values were given",
                    schema.fields().len(),
                    params.len()
                )));
            }
            schema.fields().iter().map(|f| f.as_ref().clone()).collect()
        }
        _ => (1..=params.len())
            .map(|i| Field::new(format!("${i}"), DataType::Utf8, true))
            .collect(),
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(params.len());
    let mut out_fields = Vec::with_capacity(params.len());
    for (field, value) in fields.into_iter().zip(params) {
        let text: ArrayRef = Arc::new(StringArray::from(vec![value.as_str()]));
        let target = match field.data_type() {
            DataType::Null => DataType::Utf8,
            other => other.clone(),
        };
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let cast = cast_with_options(&text, &target, &options).map_err(|e| {
            ClientError::Invalid(format!(
                "parameter {} ('{value}') is not a {target}: {e}",
                field.name()
            ))
        })?;
        out_fields.push(Field::new(field.name(), target, true));
        columns.push(cast);
    }
    let schema = Arc::new(Schema::new(out_fields));
    Ok(RecordBatch::try_new(schema, columns)?)
}
