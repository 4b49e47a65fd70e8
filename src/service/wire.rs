//! What goes on the wire: the schema clients see and the conversion of batches to it.
//!
//! DataFusion may produce Utf8View/BinaryView or dictionary columns; several JDBC drivers
//! cannot read views, and Flight sends dictionaries hydrated anyway. Converting here keeps
//! the FlightInfo schema identical to the streamed one.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;

/// The type a column is sent as.
fn wire_type(data_type: &DataType, keep_views: bool) -> DataType {
    match data_type {
        DataType::Utf8View if !keep_views => DataType::Utf8,
        DataType::BinaryView if !keep_views => DataType::Binary,
        DataType::Dictionary(_, value) => wire_type(value, keep_views),
        other => other.clone(),
    }
}

/// The schema clients are told about and receive.
pub fn wire_schema(schema: &SchemaRef, keep_views: bool) -> SchemaRef {
    let changed = schema
        .fields()
        .iter()
        .any(|f| &wire_type(f.data_type(), keep_views) != f.data_type());
    if !changed {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_data_type(wire_type(f.data_type(), keep_views))
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Converts a batch to the wire schema (a no-op when nothing needs converting).
pub fn to_wire(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options =
        datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, StringViewArray};

    use super::*;

    #[test]
    fn string_views_are_sent_as_utf8_unless_asked() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
        let wire = wire_schema(&schema, false);
        assert_eq!(wire.field(0).data_type(), &DataType::Utf8);
        assert_eq!(wire_schema(&schema, true), schema);

        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringViewArray::from(vec![Some("ACGT"), None]))],
        )
        .unwrap();
        let sent = to_wire(batch, &wire).unwrap();
        assert_eq!(sent.schema(), wire);
        assert_eq!(sent.column(0).null_count(), 1);
    }
}
