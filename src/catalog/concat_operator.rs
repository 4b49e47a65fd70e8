//! The `||` operator held to the memory pool like the string functions.
//!
//! `a || b` is not a function DataFusion looks up by name but a binary operator, so the
//! session's function guards ([`super::functions`]) do not see it, and `sequence || sequence
//! || …` built results of hundreds of MB without asking the pool. [`GuardCalls`], an
//! analyzer rule that runs after type coercion, turns every `a || b` into a call of
//! [`ConcatOperator`] (guarded like `concat`): it evaluates DataFusion's own `||` on the
//! arguments, so results, types, NULL handling and column names stay the operator's.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr as PhysicalBinaryExpr, Column, Literal};

use super::functions::{guarded_as_concat, is_guarded};

/// `a || b` as a function of two arguments, computed by DataFusion's physical `||`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ConcatOperator {
    signature: Signature,
}

impl ConcatOperator {
    fn new() -> Self {
        Self {
            // Coerced as the operator's sides are (the rule runs after type coercion, but a
            // join's inputs may become views after it: see `super::view_joins`).
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The two sides of a call, as written.
fn sides(args: &[Expr]) -> Result<(&Expr, &Expr)> {
    match args {
        [left, right] => Ok((left, right)),
        _ => internal_err!("|| takes two arguments, got {}", args.len()),
    }
}

impl ScalarUDFImpl for ConcatOperator {
    fn name(&self) -> &str {
        "||"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [left, right] => {
                BinaryTypeCoercer::new(left, &Operator::StringConcat, right).get_result_type()
            }
            _ => internal_err!("|| takes two arguments, got {}", arg_types.len()),
        }
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [left, right] => {
                let (left, right) = BinaryTypeCoercer::new(left, &Operator::StringConcat, right)
                    .get_input_types()?;
                Ok(vec![left, right])
            }
            _ => internal_err!("|| takes two arguments, got {}", arg_types.len()),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        // NULL on either side gives NULL, as the operator.
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            self.return_type(&types)?,
            nullable,
        )))
    }

    // Shown as the operator, so plans and column names read as the query was written.
    fn display_name(&self, args: &[Expr]) -> Result<String> {
        let (left, right) = sides(args)?;
        Ok(format!("{left} || {right}"))
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let (left, right) = sides(args)?;
        Ok(format!("{} || {}", left.schema_name(), right.schema_name()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [left, right] = <[ColumnarValue; 2]>::try_from(args.args)
            .or_else(|args| internal_err!("|| takes two arguments, got {}", args.len()))?;
        let scalars = matches!(
            (&left, &right),
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
        );
        let rows = if scalars { 1 } else { args.number_rows };
        let (mut fields, mut columns) = (Vec::new(), Vec::new());
        let mut operand = |value: ColumnarValue| -> Arc<dyn PhysicalExpr> {
            match value {
                ColumnarValue::Scalar(scalar) => Arc::new(Literal::new(scalar)),
                ColumnarValue::Array(array) => {
                    let name = format!("arg{}", columns.len());
                    let column = Column::new(&name, columns.len());
                    fields.push(Field::new(name, array.data_type().clone(), true));
                    columns.push(array);
                    Arc::new(column)
                }
            }
        };
        let expr = PhysicalBinaryExpr::new(operand(left), Operator::StringConcat, operand(right));
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        match expr.evaluate(&batch)? {
            ColumnarValue::Array(array) if scalars => {
                ScalarValue::try_from_array(&array, 0).map(ColumnarValue::Scalar)
            }
            result => Ok(result),
        }
    }
}

/// The analyzer rule that makes every call of a guarded function go through its guard: each
/// `a || b` becomes a call of the guarded [`ConcatOperator`], and calls the SQL planner made
/// without looking the function up by name (`OVERLAY(s PLACING t FROM n)` calls DataFusion's
/// `overlay` directly) call the session's guarded function of that name.
#[derive(Debug)]
pub struct GuardCalls {
    operator: Arc<ScalarUDF>,
    guarded: HashMap<String, Arc<ScalarUDF>>,
}

impl GuardCalls {
    /// A rule calling the `guarded` functions (by name) and a `||` reserving its results in
    /// `pool`.
    pub fn new(guarded: HashMap<String, Arc<ScalarUDF>>, pool: &Arc<dyn MemoryPool>) -> Self {
        let operator = Arc::new(ScalarUDF::new_from_impl(ConcatOperator::new()));
        Self {
            operator: Arc::new(guarded_as_concat(operator, pool)),
            guarded,
        }
    }

    /// `expr` calling a guard, if it should.
    fn guard(&self, expr: Expr) -> Transformed<Expr> {
        match expr {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::StringConcat,
                right,
            }) => Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                Arc::clone(&self.operator),
                vec![*left, *right],
            ))),
            Expr::ScalarFunction(call) => match self.guarded.get(call.func.name()) {
                Some(guarded) if !is_guarded(&call.func) => Transformed::yes(Expr::ScalarFunction(
                    ScalarFunction::new_udf(Arc::clone(guarded), call.args),
                )),
                _ => Transformed::no(Expr::ScalarFunction(call)),
            },
            other => Transformed::no(other),
        }
    }

    /// `plan`'s own expressions with their calls guarded.
    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|expr| Ok(self.guard(expr)))?;
            Ok(rewritten.update_data(|expr| name.restore(expr)))
        })
    }
}

// An analyzer rule, not an optimizer rule: it must run before the optimizer folds constants,
// which would otherwise build `'…' || '…'` of literals with the unguarded operator.
impl AnalyzerRule for GuardCalls {
    fn name(&self) -> &str {
        "guard_calls"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        Ok(plan
            .transform_up_with_subqueries(|plan| self.rewrite(plan))?
            .data)
    }
}
