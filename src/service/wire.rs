//! What goes on the wire: the schema clients see and the conversion of batches to it.
//!
//! DataFusion may produce Utf8View/BinaryView or dictionary columns; several JDBC drivers
//! cannot read views, and Flight sends dictionaries hydrated anyway. Converting here keeps
//! the FlightInfo schema identical to the streamed one.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;

/// The type a column is sent as.
fn wire_type(data_type: &DataType, string_view: bool) -> DataType {
    match data_type {
        DataType::Utf8View if !string_view => DataType::Utf8,
        DataType::BinaryView if !string_view => DataType::Binary,
        DataType::Dictionary(_, value) => wire_type(value, string_view),
        other => other.clone(),
    }
}

/// The SQL type name reported in `ARROW:FLIGHT:SQL:TYPE_NAME` (JDBC/ADBC column metadata).
fn sql_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "TINYINT UNSIGNED".into(),
        DataType::UInt16 => "SMALLINT UNSIGNED".into(),
        DataType::UInt32 => "INTEGER UNSIGNED".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float16 | DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => "DECIMAL".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(..) => "TIMESTAMP".into(),
        DataType::Interval(_) => "INTERVAL".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BINARY".into(),
        other => other.to_string(),
    }
}

/// The Flight SQL column metadata a field carries on the wire.
fn column_metadata(field: &Field, data_type: &DataType) -> HashMap<String, String> {
    let mut metadata = field.metadata().clone();
    metadata.insert(
        "ARROW:FLIGHT:SQL:TYPE_NAME".into(),
        sql_type_name(data_type),
    );
    if let DataType::Decimal128(precision, scale) = data_type {
        metadata.insert("ARROW:FLIGHT:SQL:PRECISION".into(), precision.to_string());
        metadata.insert("ARROW:FLIGHT:SQL:SCALE".into(), scale.to_string());
    }
    let is_text = matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    metadata.insert(
        "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE".into(),
        if is_text { "1" } else { "0" }.into(),
    );
    metadata.insert("ARROW:FLIGHT:SQL:IS_READ_ONLY".into(), "1".into());
    metadata.insert("ARROW:FLIGHT:SQL:IS_SEARCHABLE".into(), "1".into());
    metadata.insert("ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT".into(), "0".into());
    metadata
}

/// The schema clients are told about and receive: wire types plus Flight SQL column metadata.
pub fn wire_schema(schema: &SchemaRef, string_view: bool) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let data_type = wire_type(f.data_type(), string_view);
            let metadata = column_metadata(f, &data_type);
            f.as_ref()
                .clone()
                .with_data_type(data_type)
                .with_metadata(metadata)
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
        assert_eq!(
            wire.field(0).metadata()["ARROW:FLIGHT:SQL:TYPE_NAME"],
            "VARCHAR"
        );
        assert_eq!(
            wire_schema(&schema, true).field(0).data_type(),
            &DataType::Utf8View
        );

        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringViewArray::from(vec![Some("ACGT"), None]))],
        )
        .unwrap();
        let sent = to_wire(batch, &wire).unwrap();
        assert_eq!(sent.schema(), wire);
        assert_eq!(sent.column(0).null_count(), 1);
    }

    #[test]
    fn nullability_survives_every_conversion() {
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8View, false),
            Field::new("description", DataType::Utf8View, true),
            Field::new("kind", dictionary, false),
            Field::new("n", DataType::Int64, false),
        ]));
        for string_view in [false, true] {
            let wire = wire_schema(&schema, string_view);
            let nullable: Vec<_> = wire.fields().iter().map(|f| f.is_nullable()).collect();
            assert_eq!(
                nullable,
                [false, true, false, false],
                "string_view={string_view}"
            );
        }
    }

    #[test]
    fn batches_are_sent_with_the_announced_schema_also_when_empty() {
        // A batch may call a column nullable that the plan knows is not: the stream must still
        // carry the schema FlightInfo announced, or clients that compare them fail.
        let plan_schema = Arc::new(Schema::new(vec![Field::new(
            "id",
            DataType::Utf8View,
            false,
        )]));
        let wire = wire_schema(&plan_schema, false);
        let loose = Arc::new(Schema::new(vec![Field::new(
            "id",
            DataType::Utf8View,
            true,
        )]));
        let values = Arc::new(StringViewArray::from(vec!["chr1", "chr2"]));
        for batch in [
            RecordBatch::try_new(Arc::clone(&loose), vec![values]).unwrap(),
            RecordBatch::new_empty(loose),
        ] {
            let sent = to_wire(batch, &wire).unwrap();
            assert_eq!(sent.schema(), wire);
            assert!(!sent.schema().field(0).is_nullable());
        }
    }
}
