//! In-memory tables (`CREATE TABLE … AS SELECT`, `CREATE TABLE … AS VALUES`) whose data counts against the memory limit for as long as the table exists.
//!
//! DataFusion's own `CREATE TABLE AS` collects the whole result before anything is accounted,
//! so one statement could copy gigabytes into memory and keep them forever. Here every batch is
//! reserved in the pool as it arrives (a copy too large fails with RESOURCES_EXHAUSTED before
//! the memory is gone), and the reservation lives in the table: dropping the table frees it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Constraints, DataFusionError, Result, not_impl_err};
use datafusion::datasource::{MemTable, TableType};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{CreateMemoryTable, Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

/// Runs `CREATE TABLE … AS …` with the semantics of DataFusion's, but accounted.
pub async fn create_memory_table(ctx: &SessionContext, cmd: CreateMemoryTable) -> Result<()> {
    let CreateMemoryTable {
        name,
        input,
        if_not_exists,
        or_replace,
        constraints,
        column_defaults,
        temporary,
    } = cmd;
    if temporary {
        return not_impl_err!("Temporary tables not supported");
    }
    let exists = ctx.table_exist(name.clone())?;
    match (if_not_exists, or_replace, exists) {
        (true, false, true) => return Ok(()),
        (true, true, true) => {
            return Err(DataFusionError::Execution(
                "'IF NOT EXISTS' cannot coexist with 'REPLACE'".into(),
            ));
        }
        (false, false, true) => {
            return Err(DataFusionError::Execution(format!(
                "Table '{name}' already exists"
            )));
        }
        _ => {}
    }
    let state = ctx.state();
    let input = state.optimize(&input)?;
    ensure_unique_column_names(&input)?;
    let schema = Arc::clone(input.schema().inner());
    let plan = state.create_physical_plan(&input).await?;
    let pool = &ctx.runtime_env().memory_pool;
    let reservation = MemoryConsumer::new(format!("in-memory table {name}")).register(pool);
    let partitions = collect_reserved(plan, ctx, &reservation).await?;
    let table = MemTable::try_new(schema, partitions)?
        .with_constraints(constraints)
        .with_column_defaults(column_defaults.into_iter().collect());
    if exists {
        ctx.deregister_table(name.clone())?;
    }
    ctx.register_table(
        name,
        Arc::new(AccountedTable {
            inner: table,
            _reservation: reservation,
        }),
    )?;
    Ok(())
}

/// Runs every partition of `plan` at once, reserving each batch before keeping it.
async fn collect_reserved(
    plan: Arc<dyn ExecutionPlan>,
    ctx: &SessionContext,
    reservation: &MemoryReservation,
) -> Result<Vec<Vec<RecordBatch>>> {
    let task_ctx = ctx.task_ctx();
    let partitions = (0..plan.output_partitioning().partition_count()).map(|partition| {
        let stream = plan.execute(partition, Arc::clone(&task_ctx));
        async move {
            stream?
                .try_fold(Vec::new(), |mut batches, batch| async move {
                    reservation.try_grow(batch.get_array_memory_size())?;
                    batches.push(batch);
                    Ok(batches)
                })
                .await
        }
    });
    futures::future::try_join_all(partitions).await
}

/// DDL keeps column names without their qualifiers, so they must be unique without them.
fn ensure_unique_column_names(plan: &LogicalPlan) -> Result<()> {
    let mut seen = HashSet::new();
    for field in plan.schema().fields() {
        if !seen.insert(field.name().as_str()) {
            return Err(DataFusionError::Plan(format!(
                "CREATE TABLE AS needs unique column names; '{}' appears twice (use AS to rename)",
                field.name()
            )));
        }
    }
    Ok(())
}

/// A [`MemTable`] that holds the reservation of its data.
#[derive(Debug)]
struct AccountedTable {
    inner: MemTable,
    _reservation: MemoryReservation,
}

#[async_trait]
impl TableProvider for AccountedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        self.inner.get_logical_plan()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.inner.get_column_default(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        _input: Arc<dyn ExecutionPlan>,
        _insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Inserted rows would not be accounted; statements that write are refused anyway.
        not_impl_err!("INSERT into in-memory tables is not supported")
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::logical_expr::DdlStatement;
    use datafusion::prelude::SessionConfig;

    use super::*;
    use crate::bytesize::ByteSize;
    use crate::catalog::runtime::MemoryLimitPool;

    fn context(limit: ByteSize) -> SessionContext {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(MemoryLimitPool::new(limit)))
            .build_arc()
            .unwrap();
        SessionContext::new_with_config_rt(SessionConfig::new(), runtime)
    }

    async fn create(ctx: &SessionContext, sql: &str) -> Result<()> {
        match ctx.state().create_logical_plan(sql).await? {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(cmd)) => {
                create_memory_table(ctx, cmd).await
            }
            other => panic!("not CREATE TABLE AS: {other}"),
        }
    }

    #[tokio::test]
    async fn a_table_holds_its_reservation_until_it_is_dropped() {
        let ctx = context(ByteSize::mib(64));
        let pool = Arc::clone(&ctx.runtime_env().memory_pool);
        create(
            &ctx,
            "CREATE TABLE t AS SELECT value FROM generate_series(1, 100000)",
        )
        .await
        .unwrap();
        let rows = ctx
            .sql("SELECT count(*) FROM t")
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(rows.unwrap()[0].num_rows(), 1);
        assert!(pool.reserved() >= 100_000 * 8, "{}", pool.reserved());
        ctx.deregister_table("t").unwrap();
        assert_eq!(pool.reserved(), 0);
    }

    #[tokio::test]
    async fn a_copy_larger_than_the_limit_fails_and_leaves_nothing_behind() {
        let ctx = context(ByteSize::mib(16));
        let error = create(
            &ctx,
            "CREATE TABLE big AS SELECT repeat('x', 1000) AS s FROM generate_series(1, 100000)",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{error}"
        );
        assert!(
            error.to_string().contains("memory limit of 16MiB"),
            "{error}"
        );
        assert!(!ctx.table_exist("big").unwrap());
        assert_eq!(ctx.runtime_env().memory_pool.reserved(), 0);
    }

    #[tokio::test]
    async fn replace_and_if_not_exists_keep_datafusion_semantics() {
        let ctx = context(ByteSize::mib(64));
        create(&ctx, "CREATE TABLE t AS VALUES (1), (2)")
            .await
            .unwrap();
        create(&ctx, "CREATE TABLE IF NOT EXISTS t AS VALUES (9)")
            .await
            .unwrap();
        assert!(create(&ctx, "CREATE TABLE t AS VALUES (3)").await.is_err());
        create(&ctx, "CREATE OR REPLACE TABLE t AS VALUES (7), (8), (9)")
            .await
            .unwrap();
        let batches = ctx
            .sql("SELECT count(*) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let count = datafusion::arrow::array::AsArray::as_primitive::<
            datafusion::arrow::datatypes::Int64Type,
        >(batches[0].column(0))
        .value(0);
        assert_eq!(count, 3);
    }
}
