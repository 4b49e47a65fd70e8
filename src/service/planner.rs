//! From a statement handle to a DataFusion plan: SQL options, placeholders, logical and physical planning, parameter schemas.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::error::ServiceError;
use super::settings::{self, Settings};
use super::{complexity, placeholders};
use crate::catalog::memory_table;

/// Clients may define tables and views, set session variables and query; they may not write files.
static SQL_OPTIONS: LazyLock<SQLOptions> = LazyLock::new(|| {
    SQLOptions::new()
        .with_allow_ddl(true)
        .with_allow_dml(false)
        .with_allow_statements(true)
});

/// A planned statement: rows to stream, or a statement that has no rows (DDL, SET).
pub enum Planned {
    /// A query: an execution plan and the session it runs in.
    Rows(Arc<dyn ExecutionPlan>, SessionContext),
    /// DDL or a session statement, still to be run.
    NoRows(LogicalPlan, SessionContext),
}

/// Plans statements over the shared catalog.
#[derive(Clone)]
pub struct Planner {
    ctx: SessionContext,
    max_sql_bytes: usize,
}

impl Planner {
    /// A planner over the session that holds the catalog, for SQL of at most `max_sql_bytes`.
    pub fn new(ctx: SessionContext, max_sql_bytes: usize) -> Self {
        Self { ctx, max_sql_bytes }
    }

    /// The session holding the shared catalog (for metadata and table lookups).
    pub fn catalog(&self) -> &SessionContext {
        &self.ctx
    }

    /// Each request gets its own session state over the shared catalog, with its session's
    /// settings applied (so they change nothing for anyone else).
    pub fn request_context(&self, settings: &Settings) -> Result<SessionContext, ServiceError> {
        let ctx = SessionContext::new_with_state(self.ctx.state());
        settings::apply(&ctx, settings)?;
        Ok(ctx)
    }

    /// Parses and checks a statement, without binding parameters or executing anything.
    pub async fn logical_plan(
        &self,
        sql: &str,
        settings: &Settings,
    ) -> Result<(LogicalPlan, SessionContext), ServiceError> {
        if sql.len() > self.max_sql_bytes {
            return Err(ServiceError::InvalidRequest(format!(
                "the SQL text is {} bytes; this server accepts at most {} (--max-sql-bytes)",
                sql.len(),
                crate::bytesize::ByteSize(self.max_sql_bytes as u64)
            )));
        }
        let ctx = self.request_context(settings)?;
        let sql = placeholders::number_question_marks(sql)?;
        let state = ctx.state();
        let statement =
            state.sql_to_statement(&sql, &state.config().options().sql_parser.dialect)?;
        complexity::check(&statement)?;
        let plan = state.statement_to_plan(statement).await?;
        SQL_OPTIONS.verify_plan(&plan)?;
        authorize_catalog_change(&plan)?;
        Ok((plan, ctx))
    }

    /// Plans a statement with one row of parameter values (empty when none are bound) down to
    /// an execution plan, or recognises it as having no rows.
    pub async fn plan(
        &self,
        sql: &str,
        settings: &Settings,
        values: &[ScalarValue],
    ) -> Result<Planned, ServiceError> {
        let (plan, ctx) = self.logical_plan(sql, settings).await?;
        Self::physical_plan(bind_values(plan, values)?, ctx).await
    }

    /// Takes an already parsed and bound plan down to an execution plan.
    pub async fn physical_plan(
        plan: LogicalPlan,
        ctx: SessionContext,
    ) -> Result<Planned, ServiceError> {
        if has_no_rows(&plan) {
            return Ok(Planned::NoRows(plan, ctx));
        }
        let frame = ctx.execute_logical_plan(plan).await?;
        let physical = frame.create_physical_plan().await?;
        Ok(Planned::Rows(physical, ctx))
    }

    /// Runs a statement that has no rows (DDL, SET) and returns how many rows it changed.
    pub async fn run_no_rows(plan: LogicalPlan, ctx: SessionContext) -> Result<i64, ServiceError> {
        if let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(cmd)) = plan {
            // Our own CREATE TABLE AS: its data counts against the memory limit.
            memory_table::create_memory_table(&ctx, cmd).await?;
            return Ok(0);
        }
        let frame = ctx.execute_logical_plan(plan).await?;
        frame.collect().await?;
        Ok(0)
    }
}

/// Statements that change the shared catalog need a caller who may change it; `SET` and
/// queries do not.
fn authorize_catalog_change(plan: &LogicalPlan) -> Result<(), ServiceError> {
    if !matches!(
        plan,
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_)
    ) {
        return Ok(());
    }
    super::authorize::require_catalog_rights("change the catalog (CREATE, DROP, INSERT)")
}

/// DDL and session statements produce no rows: they run once, at GetFlightInfo or DoPut.
pub fn has_no_rows(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Ddl(_) => true,
        LogicalPlan::Statement(statement) => !matches!(statement, Statement::Execute(_)),
        _ => false,
    }
}

/// Substitutes one row of parameter values for the statement's placeholders, which must be
/// exactly as many as the values.
pub fn bind_values(plan: LogicalPlan, values: &[ScalarValue]) -> Result<LogicalPlan, ServiceError> {
    let expected = placeholder_count(&plan)?;
    if values.len() != expected {
        return Err(ServiceError::InvalidRequest(if values.is_empty() {
            format!(
                "placeholder $1 was not provided a value; bind parameters again (the statement \
                 has {expected} placeholder(s); parameters bound to a prepared statement expire \
                 when it is closed or idle, and live on the server that bound them)"
            )
        } else {
            let missing = if values.len() < expected {
                format!(" (${} has no value)", values.len() + 1)
            } else {
                String::new()
            };
            format!(
                "the statement has {expected} placeholder(s) but {} parameter value(s) were \
                 bound{missing}",
                values.len()
            )
        }));
    }
    if values.is_empty() {
        return Ok(plan);
    }
    // Values go in as sent, not cast to the type DataFusion guessed for the placeholder:
    // `x < ?` with x BIGINT and 1.5 bound must compare against 1.5, not 1. Type coercion
    // after substitution makes the comparison right, and refuses values of unusable types.
    Ok(plan.with_param_values(values.to_vec())?)
}

/// How many values a statement needs: its highest `$n` (or its number of named placeholders).
fn placeholder_count(plan: &LogicalPlan) -> Result<usize, ServiceError> {
    let names = plan.get_parameter_types()?;
    let highest = names
        .keys()
        .filter_map(|name| placeholder_number(name))
        .max()
        .unwrap_or(0);
    Ok(highest.max(names.len()))
}

/// The number of a `$n` placeholder (`None` for a named one).
fn placeholder_number(name: &str) -> Option<usize> {
    name.strip_prefix('$')?.parse().ok()
}

/// The schema of a statement's parameters: `$1`, `$2`, … in order.
pub fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, ServiceError> {
    let types = plan.get_parameter_types()?;
    let mut numbered: Vec<(usize, String, Option<DataType>)> = types
        .into_iter()
        .map(|(name, data_type)| {
            let number = placeholder_number(&name).unwrap_or(usize::MAX);
            (number, name, data_type)
        })
        .collect();
    numbered.sort();
    Ok(Schema::new(
        numbered
            .into_iter()
            // A parameter whose type the SQL does not pin down is sent as text.
            .map(|(_, name, t)| {
                let t = t.filter(|t| t != &DataType::Null).unwrap_or(DataType::Utf8);
                Field::new(name, t, true)
            })
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parsed(sql: &str) -> LogicalPlan {
        let planner = Planner::new(SessionContext::new(), 1 << 20);
        planner.logical_plan(sql, &Settings::new()).await.unwrap().0
    }

    #[tokio::test]
    async fn values_must_match_the_placeholders_in_number() {
        let plan = parsed("SELECT $1 AS a, $2 AS b, $1 AS c").await;
        let one = [ScalarValue::Int64(Some(1))];
        let err = bind_values(plan.clone(), &one).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().contains("2 placeholder(s) but 1"), "{err}");
        assert!(err.to_string().contains("$2 has no value"), "{err}");
        let three = [one[0].clone(), one[0].clone(), one[0].clone()];
        let err = bind_values(plan.clone(), &three).unwrap_err();
        assert!(err.to_string().contains("2 placeholder(s) but 3"), "{err}");
        let err = bind_values(plan, &[]).unwrap_err();
        assert!(err.to_string().contains("bind parameters again"), "{err}");
    }

    #[tokio::test]
    async fn statements_without_placeholders_take_no_values() {
        let plan = parsed("SELECT 1").await;
        assert!(bind_values(plan.clone(), &[]).is_ok());
        let err = bind_values(plan, &[ScalarValue::Int64(Some(1))]).unwrap_err();
        assert!(err.to_string().contains("0 placeholder(s) but 1"), "{err}");
    }

    #[tokio::test]
    async fn limit_takes_an_integer_parameter() {
        let planner = Planner::new(SessionContext::new(), 1 << 20);
        let sql = "SELECT * FROM (VALUES (1), (2), (3)) AS t(x) LIMIT ?";
        let Planned::Rows(physical, ctx) = planner
            .plan(sql, &Settings::new(), &[ScalarValue::Int64(Some(2))])
            .await
            .unwrap()
        else {
            panic!("a query has rows");
        };
        let batches = datafusion::physical_plan::collect(physical, ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    }
}
