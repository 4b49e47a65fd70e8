//! Statement handles: SQL plus bound parameters, carried in tickets and prepared-statement handles.

use std::io::Cursor;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use prost::Message;
use tonic::Code;

pub use crate::proto::StatementHandle;

/// Why a handle or its parameters could not be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The bytes a client sent back are not a handle.
    #[error("statement handle is not a valid protobuf message: {0}")]
    Undecodable(#[from] prost::DecodeError),
    /// The bound parameters are not an Arrow IPC stream.
    #[error("bad parameter data: {0}")]
    BadParameters(ArrowError),
    /// A parameter has a type that cannot be a SQL value.
    #[error("unsupported parameter value: {0}")]
    UnsupportedValue(DataFusionError),
    /// Parameters the server already holds as Arrow data could not be encoded.
    #[error("cannot encode parameter values: {0}")]
    Encode(ArrowError),
}

impl HandleError {
    /// The gRPC code: everything but encoding is about what the client sent.
    pub fn code(&self) -> Code {
        match self {
            Self::Encode(_) => Code::Internal,
            _ => Code::InvalidArgument,
        }
    }
}

impl StatementHandle {
    /// A handle for SQL with no parameters bound.
    pub fn for_sql(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            parameters: Bytes::new(),
            query_id: Bytes::new(),
            prepared_id: Bytes::new(),
            settings: Default::default(),
        }
    }

    /// A prepared statement's handle: the SQL and a new random prepared-statement id.
    pub fn prepared(sql: impl Into<String>) -> Self {
        Self {
            prepared_id: Bytes::copy_from_slice(uuid::Uuid::new_v4().as_bytes()),
            ..Self::for_sql(sql)
        }
    }

    /// Encodes the handle as protobuf bytes.
    pub fn to_bytes(&self) -> Bytes {
        self.encode_to_vec().into()
    }

    /// Decodes a handle a client sent back to us.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HandleError> {
        Ok(Self::decode(bytes)?)
    }

    /// Stores rows of parameter values (Arrow IPC stream), one row per execution.
    pub fn with_parameters(mut self, batches: &[RecordBatch]) -> Result<Self, HandleError> {
        let Some(first) = batches.first() else {
            self.parameters = Bytes::new();
            return Ok(self);
        };
        let mut buffer = Vec::new();
        {
            let mut writer =
                StreamWriter::try_new(&mut buffer, &first.schema()).map_err(HandleError::Encode)?;
            for batch in batches {
                writer.write(batch).map_err(HandleError::Encode)?;
            }
            writer.finish().map_err(HandleError::Encode)?;
        }
        self.parameters = buffer.into();
        Ok(self)
    }

    /// The bound parameter values, one list per row (one execution each); empty when none
    /// are bound.
    pub fn parameter_rows(&self) -> Result<Vec<Vec<ScalarValue>>, HandleError> {
        if self.parameters.is_empty() {
            return Ok(Vec::new());
        }
        let reader = StreamReader::try_new(Cursor::new(&self.parameters[..]), None)
            .map_err(HandleError::BadParameters)?;
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.map_err(HandleError::BadParameters)?;
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|column| ScalarValue::try_from_array(column, row).map(union_member))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(HandleError::UnsupportedValue)?,
                );
            }
        }
        Ok(rows)
    }
}

/// The value inside a union value: clients such as flightsql-dbapi send every parameter as a
/// one-row dense union, so that each may have its own type.
fn union_member(value: ScalarValue) -> ScalarValue {
    match value {
        ScalarValue::Union(Some((_, member)), ..) => union_member(*member),
        ScalarValue::Union(None, ..) => ScalarValue::Null,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn parameters_round_trip_through_the_handle_bytes() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![42])),
                Arc::new(StringArray::from(vec!["chr1"])),
            ],
        )
        .unwrap();
        let handle = StatementHandle::prepared("SELECT $1, $2")
            .with_parameters(&[batch.clone(), batch.slice(0, 0), batch])
            .unwrap();
        let decoded = StatementHandle::from_bytes(&handle.to_bytes()).unwrap();
        assert_eq!(decoded.sql, "SELECT $1, $2");
        assert_eq!(decoded.prepared_id.len(), 16);
        let row = vec![ScalarValue::Int64(Some(42)), ScalarValue::from("chr1")];
        assert_eq!(decoded.parameter_rows().unwrap(), vec![row.clone(), row]);
    }

    #[test]
    fn garbage_handle_is_invalid_argument() {
        let err = StatementHandle::from_bytes(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
}
