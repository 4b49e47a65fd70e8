//! What a client asks for: descriptors, tickets, DoPut commands and action bodies decoded into one [`Request`].
//!
//! Each RPC has its own decoder because the same Flight SQL message means different things in
//! different places: a `CommandPreparedStatementQuery` asks for rows in GetFlightInfo but binds
//! parameters in DoPut. Decoding per RPC makes the wrong reading unrepresentable.

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, Any, Command,
    CommandStatementIngest, ProstMessageExt,
};
use arrow_flight::{Action, CancelFlightInfoRequest, FlightData, FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Status, Streaming};

use super::actions::ActionKind;
use super::error::ServiceError;
use super::handle::StatementHandle;
use crate::flight_session::{
    CloseSessionRequest, GetSessionOptionsRequest, SetSessionOptionsRequest,
};

const PROTOBUF_TYPE_PREFIX: &str = "type.googleapis.com/";
/// Type URL prefix of every Flight SQL message.
pub const FLIGHT_SQL_TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// One decoded client request.
#[derive(Debug)]
pub enum Request {
    /// Run SQL and stream its rows (a statement that has no rows, such as DDL, runs once).
    Query(StatementHandle),
    /// Stream a whole table, named by a path descriptor: `[table]`, `[schema, table]` or
    /// `[catalog, schema, table]`.
    Table(Vec<String>),
    /// Answer a Flight SQL metadata command (GetCatalogs, GetTables, …).
    Metadata(Command),
    /// Run a statement that returns a count, not rows (DoPut). `bindable` statements are
    /// prepared ones: parameter rows may follow in the DoPut stream.
    Update {
        /// The statement.
        handle: StatementHandle,
        /// True for a prepared statement, whose parameters may follow.
        bindable: bool,
    },
    /// Bind the parameters that follow in the DoPut stream to a prepared statement.
    Bind(StatementHandle),
    /// Bulk ingest: store the record batches that follow in the DoPut stream as a table.
    Ingest(CommandStatementIngest),
    /// Action CreatePreparedStatement.
    CreatePreparedStatement(ActionCreatePreparedStatementRequest),
    /// Action ClosePreparedStatement.
    ClosePreparedStatement(ActionClosePreparedStatementRequest),
    /// Action CancelFlightInfo.
    CancelFlightInfo(CancelFlightInfoRequest),
    /// Action SetSessionOptions.
    SetSessionOptions(SetSessionOptionsRequest),
    /// Action GetSessionOptions.
    GetSessionOptions,
    /// Action CloseSession.
    CloseSession,
}

impl Request {
    /// What a GetFlightInfo, PollFlightInfo or GetSchema descriptor asks for: a query,
    /// a table or a metadata command.
    pub fn from_descriptor(descriptor: &FlightDescriptor) -> Result<Self, ServiceError> {
        match DescriptorType::try_from(descriptor.r#type) {
            Ok(DescriptorType::Path) => Ok(Self::Table(descriptor.path.clone())),
            Ok(DescriptorType::Cmd) => Self::readable(&descriptor.cmd, "descriptor command"),
            _ => Err(ServiceError::invalid(
                "flight descriptor must be a PATH or a CMD descriptor",
            )),
        }
    }

    /// What a DoGet ticket asks for: a query or a metadata command.
    pub fn from_ticket(ticket: &Ticket) -> Result<Self, ServiceError> {
        Self::readable(&ticket.ticket, "ticket")
    }

    /// What the descriptor at the head of a DoPut stream asks for: an update or a bind.
    pub fn from_put(descriptor: &FlightDescriptor) -> Result<Self, ServiceError> {
        let not_a_put = || {
            ServiceError::invalid(
                "DoPut expects a Flight SQL command (statement update, prepared statement or \
                 bulk ingest)",
            )
        };
        let Some(command) = flight_sql_command(&descriptor.cmd, "DoPut command")? else {
            return Err(not_a_put());
        };
        match command {
            Command::CommandStatementUpdate(cmd) => Ok(Self::Update {
                handle: StatementHandle::for_sql(cmd.query),
                bindable: false,
            }),
            Command::CommandPreparedStatementUpdate(cmd) => Ok(Self::Update {
                handle: StatementHandle::from_bytes(&cmd.prepared_statement_handle)?,
                bindable: true,
            }),
            Command::CommandPreparedStatementQuery(cmd) => Ok(Self::Bind(
                StatementHandle::from_bytes(&cmd.prepared_statement_handle)?,
            )),
            Command::CommandStatementIngest(cmd) => Ok(Self::Ingest(cmd)),
            Command::TicketStatementQuery(_) => Err(not_a_put()),
            other => Err(unsupported_command(&other)),
        }
    }

    /// What a DoAction call asks for.
    pub fn from_action(action: &Action) -> Result<Self, ServiceError> {
        let Some(kind) = ActionKind::named(&action.r#type) else {
            return Err(ServiceError::Unsupported(format!(
                "action '{}' is not supported",
                action.r#type
            )));
        };
        let body = &action.body[..];
        Ok(match kind {
            ActionKind::CreatePreparedStatement => {
                Self::CreatePreparedStatement(unpack(body, "CreatePreparedStatement request")?)
            }
            ActionKind::ClosePreparedStatement => {
                Self::ClosePreparedStatement(unpack(body, "ClosePreparedStatement request")?)
            }
            ActionKind::CancelFlightInfo => {
                Self::CancelFlightInfo(decode(body, "CancelFlightInfo request")?)
            }
            ActionKind::SetSessionOptions => {
                Self::SetSessionOptions(decode(body, "SetSessionOptions request")?)
            }
            ActionKind::GetSessionOptions => {
                decode::<GetSessionOptionsRequest>(body, "GetSessionOptions request")?;
                Self::GetSessionOptions
            }
            ActionKind::CloseSession => {
                decode::<CloseSessionRequest>(body, "CloseSession request")?;
                Self::CloseSession
            }
        })
    }

    /// Bytes that ask for rows: a Flight SQL statement or metadata command, or UTF-8 SQL.
    fn readable(bytes: &[u8], what: &'static str) -> Result<Self, ServiceError> {
        let Some(command) = flight_sql_command(bytes, what)? else {
            return match std::str::from_utf8(bytes) {
                Ok(sql) if !sql.trim().is_empty() => Ok(Self::Query(StatementHandle::for_sql(sql))),
                _ => Err(ServiceError::InvalidRequest(format!(
                    "{what} is neither a Flight SQL command nor UTF-8 SQL text"
                ))),
            };
        };
        match command {
            Command::CommandStatementQuery(cmd) => {
                Ok(Self::Query(StatementHandle::for_sql(cmd.query)))
            }
            Command::CommandPreparedStatementQuery(cmd) => Ok(Self::Query(
                StatementHandle::from_bytes(&cmd.prepared_statement_handle)?,
            )),
            Command::TicketStatementQuery(ticket) => Ok(Self::Query(StatementHandle::from_bytes(
                &ticket.statement_handle,
            )?)),
            command if is_metadata(&command) => Ok(Self::Metadata(command)),
            other => Err(unsupported_command(&other)),
        }
    }
}

/// Decodes a Flight SQL command packed in `Any`. `None` when the bytes are not a protobuf
/// `Any` at all (plain SQL text, for instance); an error for other protobuf messages.
fn flight_sql_command(bytes: &[u8], what: &str) -> Result<Option<Command>, ServiceError> {
    let Ok(any) = Any::decode(bytes) else {
        return Ok(None);
    };
    if !any.type_url.starts_with(PROTOBUF_TYPE_PREFIX) {
        return Ok(None);
    }
    if !any.type_url.starts_with(FLIGHT_SQL_TYPE_PREFIX) {
        return Err(ServiceError::InvalidRequest(format!(
            "{what} has unsupported command type {}",
            any.type_url
        )));
    }
    Command::try_from(any)
        .map(Some)
        .map_err(|e| ServiceError::InvalidRequest(format!("{what}: {e}")))
}

/// The commands answered by [`super::metadata`].
fn is_metadata(command: &Command) -> bool {
    matches!(
        command,
        Command::CommandGetCatalogs(_)
            | Command::CommandGetDbSchemas(_)
            | Command::CommandGetTables(_)
            | Command::CommandGetTableTypes(_)
            | Command::CommandGetSqlInfo(_)
            | Command::CommandGetXdbcTypeInfo(_)
            | Command::CommandGetPrimaryKeys(_)
            | Command::CommandGetExportedKeys(_)
            | Command::CommandGetImportedKeys(_)
            | Command::CommandGetCrossReference(_)
    )
}

/// The error for a Flight SQL command sent where it has no meaning, or not offered at all.
fn unsupported_command(command: &Command) -> ServiceError {
    let name = command
        .type_url()
        .strip_prefix(FLIGHT_SQL_TYPE_PREFIX)
        .unwrap_or(command.type_url())
        .to_string();
    match command {
        Command::CommandStatementSubstraitPlan(_) => {
            ServiceError::Unsupported("Substrait plans are not supported; send SQL".into())
        }
        _ => ServiceError::InvalidRequest(format!("{name} is not valid here")),
    }
}

/// Decodes a Flight action body: the plain message (Flight's own actions are not packed in `Any`).
fn decode<T: Message + Default>(body: &[u8], what: &'static str) -> Result<T, ServiceError> {
    T::decode(body).map_err(|source| ServiceError::Undecodable { what, source })
}

/// Decodes a Flight SQL action body: a Flight SQL message packed in `Any`.
fn unpack<T: ProstMessageExt>(body: &[u8], what: &'static str) -> Result<T, ServiceError> {
    let any = Any::decode(body).map_err(|source| ServiceError::Undecodable { what, source })?;
    any.unpack::<T>()
        .map_err(|e| ServiceError::InvalidRequest(format!("{what}: {e}")))?
        .ok_or_else(|| {
            ServiceError::InvalidRequest(format!(
                "{what}: unexpected message type {}",
                any.type_url
            ))
        })
}

/// The record batches of a DoPut stream whose first message (already read, for its
/// descriptor) may carry the schema. Past `max_bytes` of messages the stream fails with
/// INVALID_ARGUMENT, or with `too_much`'s code and message.
pub fn put_batches(
    first: FlightData,
    rest: Streaming<FlightData>,
    max_bytes: usize,
    too_much: fn(usize) -> Status,
) -> FlightRecordBatchStream {
    let head = (!first.data_header.is_empty()).then_some(first);
    let mut received = 0usize;
    let data = futures::stream::iter(head.map(Ok))
        .chain(rest.map_err(|status| FlightError::Tonic(Box::new(status))))
        .and_then(move |message| {
            received = received
                .saturating_add(message.data_header.len())
                .saturating_add(message.data_body.len());
            futures::future::ready(if received > max_bytes {
                Err(FlightError::Tonic(Box::new(too_much(max_bytes))))
            } else {
                Ok(message)
            })
        });
    FlightRecordBatchStream::new_from_flight_data(data)
}

#[cfg(test)]
mod tests {
    use arrow_flight::sql::{
        CommandGetCatalogs, CommandPreparedStatementQuery, CommandStatementQuery,
    };
    use tonic::Code;

    use super::*;

    fn descriptor(message: impl ProstMessageExt) -> FlightDescriptor {
        FlightDescriptor::new_cmd(message.as_any().encode_to_vec())
    }

    #[test]
    fn a_prepared_statement_query_asks_for_rows_in_get_flight_info_but_binds_in_do_put() {
        let handle = StatementHandle::for_sql("SELECT $1");
        let command = CommandPreparedStatementQuery {
            prepared_statement_handle: handle.to_bytes(),
        };
        let got = Request::from_descriptor(&descriptor(command.clone())).unwrap();
        assert!(matches!(got, Request::Query(h) if h.sql == "SELECT $1"));
        let put = Request::from_put(&descriptor(command)).unwrap();
        assert!(matches!(put, Request::Bind(h) if h.sql == "SELECT $1"));
    }

    #[test]
    fn plain_sql_text_and_paths_are_plain_flight_requests() {
        let sql = Request::from_ticket(&Ticket::new("SELECT 1")).unwrap();
        assert!(matches!(sql, Request::Query(h) if h.sql == "SELECT 1"));
        let path = Request::from_descriptor(&FlightDescriptor::new_path(vec!["t".into()]));
        assert!(matches!(path, Ok(Request::Table(p)) if p == ["t"]));
        let metadata = Request::from_descriptor(&descriptor(CommandGetCatalogs {})).unwrap();
        assert!(matches!(metadata, Request::Metadata(_)));
    }

    #[test]
    fn commands_in_the_wrong_place_are_invalid_arguments() {
        let query = CommandStatementQuery {
            query: "SELECT 1".into(),
            transaction_id: None,
        };
        let err = Request::from_put(&descriptor(query)).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.to_string()
                .contains("CommandStatementQuery is not valid here")
        );
        let err = Request::from_ticket(&Ticket::new(vec![0xff, 0xfe])).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    #[test]
    fn undecodable_action_bodies_are_invalid_arguments() {
        let action = Action::new("CancelFlightInfo", vec![0xff, 0xff, 0xff]);
        let err = Request::from_action(&action).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let unknown = Request::from_action(&Action::new("Explode", "")).unwrap_err();
        assert_eq!(unknown.code(), Code::Unimplemented);
    }
}
