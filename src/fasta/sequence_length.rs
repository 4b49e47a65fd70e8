//! `length(sequence)` pushed into a FASTA scan: [`SequenceLength`] stands for
//! `character_length(sequence)` in the scan's projection, so a scan of a file with an index can
//! answer it from the index without reading the bases (see [`super::indexed`]).
//!
//! Sequences hold printable ASCII only (the reader refuses anything else), so their length in
//! characters is their length in bytes.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_plan::PhysicalExpr;

/// The names DataFusion gives `length(sequence)` and its synonyms in a physical plan.
const LENGTH_FUNCTIONS: [&str; 4] = ["character_length", "length", "char_length", "octet_length"];

/// `character_length(column)` of a sequence column: the `Int32` lengths of a `Utf8` column, or
/// the column itself when the scan already gives lengths in its place (`Int32`).
#[derive(Debug, Eq)]
pub struct SequenceLength {
    column: Arc<dyn PhysicalExpr>,
}

impl PartialEq for SequenceLength {
    fn eq(&self, other: &Self) -> bool {
        self.column.eq(&other.column)
    }
}

impl Hash for SequenceLength {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.column.hash(state);
    }
}

impl fmt::Display for SequenceLength {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "sequence_length({})", self.column)
    }
}

impl PhysicalExpr for SequenceLength {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.column.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let ColumnarValue::Array(array) = self.column.evaluate(batch)? else {
            return internal_err!("sequence_length() of a scalar");
        };
        match array.data_type() {
            DataType::Int32 => Ok(ColumnarValue::Array(array)),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let lengths = length(&array)?;
                Ok(ColumnarValue::Array(datafusion::arrow::compute::cast(
                    &lengths,
                    &DataType::Int32,
                )?))
            }
            other => internal_err!("sequence_length() of {other}"),
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.column]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        match children.pop() {
            Some(column) if children.is_empty() => Ok(Arc::new(Self { column })),
            _ => internal_err!("sequence_length() takes one argument"),
        }
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("character_length(")?;
        self.column.fmt_sql(f)?;
        f.write_str(")")
    }
}

/// `projection` with every `length(sequence)` (and synonyms) of the column at `sequence` as a
/// [`SequenceLength`]; true when the projection uses the sequence in no other way (a scan
/// may then give lengths in place of the bases).
pub fn with_sequence_lengths(
    projection: &ProjectionExprs,
    sequence: usize,
) -> Result<(ProjectionExprs, bool)> {
    let is_sequence = |expr: &Arc<dyn PhysicalExpr>| {
        expr.downcast_ref::<Column>()
            .is_some_and(|column| column.index() == sequence)
    };
    let mut rewritten = Vec::new();
    let mut lengths_only = true;
    let mut any_length = false;
    for item in projection.iter() {
        let expr = Arc::clone(&item.expr)
            .transform_down(|expr| {
                // Already rewritten by an earlier pushdown into the same scan.
                if expr.downcast_ref::<SequenceLength>().is_some() {
                    any_length = true;
                    return Ok(Transformed::new(expr, false, TreeNodeRecursion::Jump));
                }
                let length_of_sequence =
                    expr.downcast_ref::<ScalarFunctionExpr>()
                        .is_some_and(|function| {
                            LENGTH_FUNCTIONS.contains(&function.name())
                                && matches!(function.args(), [argument] if is_sequence(argument))
                                && function.return_type() == &DataType::Int32
                        });
                if length_of_sequence {
                    any_length = true;
                    let column = Arc::clone(expr.children()[0]);
                    let length: Arc<dyn PhysicalExpr> = Arc::new(SequenceLength { column });
                    return Ok(Transformed::new(length, true, TreeNodeRecursion::Jump));
                }
                if is_sequence(&expr) {
                    lengths_only = false;
                }
                Ok(Transformed::no(expr))
            })?
            .data;
        let mut item = item.clone();
        item.expr = expr;
        rewritten.push(item);
    }
    Ok((ProjectionExprs::new(rewritten), lengths_only && any_length))
}
