//! Maps DataFusion, Arrow and decoding errors to gRPC statuses with readable messages.

use arrow_flight::error::FlightError;
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use tonic::Status;

/// The gRPC status for a DataFusion error: the client's mistakes are INVALID_ARGUMENT, ours INTERNAL.
pub fn datafusion_status(error: DataFusionError) -> Status {
    let message = error.strip_backtrace();
    match error.find_root() {
        // sqlparser's errors print as Debug (`ParserError("...")`); show the sentence itself.
        DataFusionError::SQL(parser_error, _) => {
            use datafusion::sql::sqlparser::parser::ParserError;
            let text = match parser_error.as_ref() {
                ParserError::ParserError(text) | ParserError::TokenizerError(text) => text.clone(),
                other => other.to_string(),
            };
            Status::invalid_argument(format!("SQL error: {text}"))
        }
        DataFusionError::Plan(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(..)
        | DataFusionError::Configuration(..)
        | DataFusionError::Execution(..) => Status::invalid_argument(message),
        DataFusionError::ResourcesExhausted(..) => Status::resource_exhausted(message),
        DataFusionError::ArrowError(arrow, _) => arrow_code(arrow, message),
        DataFusionError::IoError(io) if io.kind() == std::io::ErrorKind::NotFound => {
            Status::not_found(message)
        }
        DataFusionError::ObjectStore(store)
            if matches!(**store, object_store::Error::NotFound { .. }) =>
        {
            Status::not_found(message)
        }
        DataFusionError::External(inner) => {
            if let Some(location) = inner.downcast_ref::<crate::catalog::location::LocationError>()
            {
                match location {
                    crate::catalog::location::LocationError::Missing(_) => {
                        Status::not_found(message)
                    }
                    _ => Status::invalid_argument(message),
                }
            } else if inner.downcast_ref::<crate::fasta::FastaError>().is_some() {
                // The table's file is malformed: say which file and where.
                Status::invalid_argument(message)
            } else if let Some(arrow) = inner.downcast_ref::<ArrowError>() {
                arrow_code(arrow, message)
            } else {
                Status::internal(message)
            }
        }
        _ => Status::internal(message),
    }
}

fn arrow_code(error: &ArrowError, message: String) -> Status {
    match error {
        ArrowError::CastError(_)
        | ArrowError::ParseError(_)
        | ArrowError::CsvError(_)
        | ArrowError::JsonError(_)
        | ArrowError::InvalidArgumentError(_)
        | ArrowError::DivideByZero
        | ArrowError::ArithmeticOverflow(_)
        | ArrowError::ComputeError(_)
        | ArrowError::SchemaError(_) => Status::invalid_argument(message),
        ArrowError::MemoryError(_) => Status::resource_exhausted(message),
        ArrowError::IoError(_, io) if io.kind() == std::io::ErrorKind::NotFound => {
            Status::not_found(message)
        }
        _ => Status::internal(message),
    }
}

/// The gRPC status for an Arrow error raised while handling a request.
pub fn arrow_status(error: ArrowError) -> Status {
    let message = error.to_string();
    arrow_code(&error, message)
}

/// The gRPC status for a failure while streaming Flight data.
pub fn flight_status(error: FlightError) -> Status {
    match error {
        FlightError::Tonic(status) => *status,
        FlightError::Arrow(e) => arrow_status(e),
        FlightError::ExternalError(e) => match e.downcast::<DataFusionError>() {
            Ok(df) => datafusion_status(*df),
            Err(e) => Status::internal(e.to_string()),
        },
        other => Status::internal(other.to_string()),
    }
}

/// INVALID_ARGUMENT for a protobuf message that does not decode.
pub fn decode_status(what: &str, error: prost::DecodeError) -> Status {
    Status::invalid_argument(format!("{what} is not a valid protobuf message: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn plan_errors_are_invalid_argument_and_keep_the_text() {
        let status = datafusion_status(DataFusionError::Plan("table 'nope' not found".to_string()));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("nope"));
    }

    #[test]
    fn parser_errors_read_as_sentences_not_debug_dumps() {
        use datafusion::sql::sqlparser::parser::ParserError;
        let error = DataFusionError::SQL(
            Box::new(ParserError::ParserError(
                "Expected: an SQL statement".into(),
            )),
            None,
        );
        let status = datafusion_status(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "SQL error: Expected: an SQL statement");
    }

    #[test]
    fn resource_exhaustion_maps_to_resource_exhausted() {
        let status = datafusion_status(DataFusionError::ResourcesExhausted("memory".into()));
        assert_eq!(status.code(), Code::ResourceExhausted);
    }

    #[test]
    fn wrapped_errors_are_classified_by_their_root() {
        let inner = DataFusionError::Plan("bad".into());
        let wrapped = DataFusionError::Context("while planning".into(), Box::new(inner));
        assert_eq!(datafusion_status(wrapped).code(), Code::InvalidArgument);
    }
}
