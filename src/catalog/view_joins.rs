//! Joins repeat their input rows without copying their strings.
//!
//! A join copies an input row into every output row it matches: a hash join `take`s each
//! matched row's values, so `SELECT c.pos, substr(g.sequence, c.pos, 21) FROM sites c JOIN
//! genome g ON g.id = c.chrom` copied a 30 Mbp chromosome once per site (10,000 sites made
//! 300 GB of copies, 1.9 GB at a time under a 128 MiB limit) before `substr` kept 21 bytes of
//! each. Views (`Utf8View`, `BinaryView`) point into their buffers instead: [`ViewJoinsPlanner`]
//! casts the string and binary columns of every join input whose values the join can repeat to views
//! (zero-copy: the views point into the input's own buffer), so a join's output rows share
//! their inputs' bytes, and the expressions above run on views (`substr` of a view is a view).
//! The plan's result is cast back to the types it had, so clients, prepared statements,
//! `INSERT` and `COPY` see exactly the schema they saw before; that cast copies only what the
//! result holds (21 bytes a site above), in slices of at most 8 MiB of what the views point at
//! ([`super::bounded_operators::SliceViewsForProjections`]). Windows read their inputs as
//! views the same way: an aggregate over a whole partition repeats its value into every row.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan, Projection, cast};
use datafusion::optimizer::AnalyzerRule;
use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    ReplaceChildrenOptions,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

/// The session's query planner: DataFusion's, on a plan whose joins repeat rows as views.
#[derive(Debug, Default)]
pub struct ViewJoinsPlanner;

#[async_trait]
impl QueryPlanner for ViewJoinsPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = view_joins(logical_plan.clone(), session.config_options())?;
        DefaultPhysicalPlanner::default()
            .create_physical_plan(&plan, session)
            .await
    }
}

/// The physical optimizer rule that keeps a query's sorted rows in one partition up to its
/// result ([`ordered_to_the_end`]); it runs after DataFusion's own rules.
#[derive(Debug, Default)]
pub struct OrderedToTheEnd;

impl PhysicalOptimizerRule for OrderedToTheEnd {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        ordered_to_the_end(plan)
    }

    fn name(&self) -> &str {
        "ordered_to_the_end"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with its sorted rows kept in one partition up to the result. The cast back to the
/// query's types above an `ORDER BY` is a projection that computes, so DataFusion runs it in
/// parallel over a round-robin repartition of the sorted rows: each partition was in order, but
/// results (and `collect`) coalesce partitions as their batches come, and `ORDER BY` over a
/// join came back out of order. The repartition under the operators above the sort that keep
/// their input's order is dropped.
fn ordered_to_the_end(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
        let input = repartition.input();
        if matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_))
            && input.output_partitioning().partition_count() == 1
            && input.output_ordering().is_some()
        {
            return Ok(Arc::clone(input));
        }
    }
    let children = plan.children();
    let [child] = children.as_slice() else {
        return Ok(plan);
    };
    if !plan.maintains_input_order()[0] {
        return Ok(plan);
    }
    let child = Arc::clone(child);
    let ordered = ordered_to_the_end(Arc::clone(&child))?;
    if Arc::ptr_eq(&ordered, &child) {
        return Ok(plan);
    }
    plan.replace_children(
        vec![ordered],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// `plan` with the inputs of its row-repeating joins and its windows as views, giving the same
/// schema.
pub fn view_joins(plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
    if !repeats_rows_anywhere(&plan)? {
        return Ok(plan);
    }
    match plan {
        // Statements around a query: their own schema does not depend on the query's types,
        // the query's result is what must keep its types.
        LogicalPlan::Dml(_)
        | LogicalPlan::Copy(_)
        | LogicalPlan::Ddl(_)
        | LogicalPlan::Explain(_)
        | LogicalPlan::Analyze(_) => Ok(plan
            .map_children(|child| view_joins(child, config).map(Transformed::yes))?
            .data),
        query => {
            let types = query.schema().as_ref().clone();
            let viewed = query
                .transform_up(|node| match node {
                    LogicalPlan::Join(_) | LogicalPlan::Window(_) => view_inputs(node),
                    LogicalPlan::Projection(projection) => keep_computed_types(projection),
                    other => Ok(Transformed::no(other)),
                })?
                .data;
            let coerced = TypeCoercion::new().analyze(viewed, config)?;
            restore_types(coerced, &types)
        }
    }
}

/// Whether any join (that can repeat a row) or window in `plan`, subqueries included, has an
/// input that holds strings or binaries.
fn repeats_rows_anywhere(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        let viewable = |input: &LogicalPlan| {
            input
                .schema()
                .fields()
                .iter()
                .any(|field| view_type(field.data_type()).is_some())
        };
        found = match node {
            LogicalPlan::Join(join) => {
                viewed_join(join) && (viewable(&join.left) || viewable(&join.right))
            }
            LogicalPlan::Window(window) => viewable(&window.input),
            _ => false,
        };
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    Ok(found)
}

/// Joins that can copy an input value more than once. Inner and outer joins repeat an input
/// row in every output row it matches. Joins without equality keys (nested loops, cross joins)
/// also build a batch repeating one build-side value once per probe row (DataFusion's
/// `ScalarValue::to_array_of_size`), for their output and to evaluate their condition, so even
/// semi and anti joins without keys copied it: `long g JOIN generate_series(1, 100) s ON
/// length(g.sequence) > s.v` took 4 GB under a 256 MiB limit, and past 2 GiB in one batch arrow
/// panicked ("offset overflow"). Through views a value is copied at most once a batch. Equality
/// semi, anti and mark joins with a condition evaluate it over the matched pairs the same way;
/// without a condition they compare keys only and pass each row at most once, so they stay as
/// they were. Views cost joins of short strings some time (`make bench-joins`).
fn viewed_join(join: &Join) -> bool {
    matches!(
        join.join_type,
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
    ) || join.on.is_empty()
        || join.filter.is_some()
}

/// The view type a column of this type is cast to, if any.
fn view_type(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 => Some(DataType::Utf8View),
        DataType::Binary | DataType::LargeBinary => Some(DataType::BinaryView),
        _ => None,
    }
}

/// A join that repeats rows, or a window, over its inputs with their strings and binaries cast
/// to views. A window function whose frame is the whole partition (`first_value(x) OVER ()`,
/// `max(x) OVER (PARTITION BY …)`) computes one value and repeats it into every row of the
/// partition (`ScalarValue::to_array_of_size`): `first_value(g.sequence) OVER ()` over 300 rows
/// of 30 Mbp records built 8.9 GB under a 256 MiB limit. Functions that return their argument's
/// type return a view there, whose repetition copies the value once.
fn view_inputs(node: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let inputs = match &node {
        LogicalPlan::Join(join) if viewed_join(join) => {
            let left = viewed(&join.left)?;
            let right = viewed(&join.right)?;
            if left.is_none() && right.is_none() {
                return Ok(Transformed::no(node));
            }
            vec![
                left.unwrap_or_else(|| join.left.as_ref().clone()),
                right.unwrap_or_else(|| join.right.as_ref().clone()),
            ]
        }
        LogicalPlan::Window(window) => match viewed(&window.input)? {
            Some(input) => vec![input],
            None => return Ok(Transformed::no(node)),
        },
        _ => return Ok(Transformed::no(node)),
    };
    let exprs = node.expressions();
    node.with_new_exprs(exprs, inputs).map(Transformed::yes)
}

/// `projection` with the strings and binaries it computes cast to the types they had. On views
/// they would be views too, pointing into the join's inputs: 21 bases of `substr` keeping a
/// 30 Mbp record's buffer alive, and counted at its size by every operator that holds them (a
/// sort above ran out of memory). The cast copies what they hold; columns passed on as they are
/// stay views for the operators above.
fn keep_computed_types(mut projection: Projection) -> Result<Transformed<LogicalPlan>> {
    let mut changed = false;
    let schema = Arc::clone(&projection.schema);
    for (expr, (qualifier, field)) in projection.expr.iter_mut().zip(schema.iter()) {
        if passed_on(expr) || view_type(field.data_type()).is_none() {
            continue;
        }
        *expr = cast(expr.clone().unalias(), field.data_type().clone())
            .alias_qualified(qualifier.cloned(), field.name());
        changed = true;
    }
    let plan = LogicalPlan::Projection(projection);
    Ok(if changed {
        Transformed::yes(plan)
    } else {
        Transformed::no(plan)
    })
}

/// A column passed on as it is, perhaps renamed.
fn passed_on(expr: &Expr) -> bool {
    match expr {
        Expr::Column(_) => true,
        Expr::Alias(alias) => passed_on(&alias.expr),
        _ => false,
    }
}

/// `input` under a projection casting its strings and binaries to views; `None` without any.
fn viewed(input: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    let targets: Vec<Option<DataType>> = input
        .schema()
        .fields()
        .iter()
        .map(|field| view_type(field.data_type()))
        .collect();
    if targets.iter().all(Option::is_none) {
        return Ok(None);
    }
    cast_columns(input.clone(), targets).map(Some)
}

/// `plan` under a projection casting its columns back to `types`' where they differ.
fn restore_types(plan: LogicalPlan, types: &DFSchema) -> Result<LogicalPlan> {
    let targets: Vec<Option<DataType>> = plan
        .schema()
        .fields()
        .iter()
        .zip(types.fields())
        .map(|(now, before)| {
            (now.data_type() != before.data_type()).then(|| before.data_type().clone())
        })
        .collect();
    if targets.iter().all(Option::is_none) {
        return Ok(plan);
    }
    cast_columns(plan, targets)
}

/// `plan` under a projection passing each column on, cast to its target type where it has one
/// (same name and qualifier).
fn cast_columns(plan: LogicalPlan, targets: Vec<Option<DataType>>) -> Result<LogicalPlan> {
    let exprs = plan
        .schema()
        .iter()
        .zip(targets)
        .map(|((qualifier, field), target)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            match target {
                Some(data_type) => {
                    cast(column, data_type).alias_qualified(qualifier.cloned(), field.name())
                }
                None => column,
            }
        })
        .collect::<Vec<_>>();
    Projection::try_new(exprs, Arc::new(plan)).map(LogicalPlan::Projection)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, RecordBatch};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::SessionContext;

    use crate::config::Config;

    fn contexts() -> (SessionContext, SessionContext) {
        let viewing = crate::catalog::session_context(&Config::default()).unwrap();
        // The same session with DataFusion's own planner: the oracle.
        let state = viewing.state();
        let plain = datafusion::execution::SessionStateBuilder::new_from_existing(state)
            .with_query_planner(Arc::new(DefaultPlanner))
            .build();
        (viewing, SessionContext::new_with_state(plain))
    }

    #[derive(Debug)]
    struct DefaultPlanner;

    #[async_trait]
    impl QueryPlanner for DefaultPlanner {
        async fn create_physical_plan(
            &self,
            logical_plan: &LogicalPlan,
            session: &dyn Session,
        ) -> Result<Arc<dyn ExecutionPlan>> {
            DefaultPhysicalPlanner::default()
                .create_physical_plan(logical_plan, session)
                .await
        }
    }

    use super::*;

    const TABLES: &str = "WITH g(id, seq) AS (VALUES ('chr1', 'ACGTACGTAACCGGTTACGT'), \
        ('chr2', 'GGGGCCCCAAAATTTTGGCA'), ('chr4', NULL)), \
        s(chrom, pos, tag) AS (VALUES ('chr1', 2, X'0102'), ('chr1', 15, X'03'), \
        ('chr2', 1, NULL), ('chr3', 1, X'04'), (NULL, 4, X'05'), ('chr4', 3, X'06'))";

    /// The physical plan of `sql`, as EXPLAIN shows it.
    async fn shown_plan(ctx: &SessionContext, sql: &str) -> String {
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await;
        displayable(plan.unwrap().as_ref()).indent(true).to_string()
    }

    /// Runs `sql` in both sessions: same schema, same rows; returns the viewing plan.
    async fn same_answer(sql: &str) -> String {
        let (viewing, plain) = contexts();
        let sql = format!("{TABLES} {sql}");
        let mut answers = Vec::new();
        let mut shown = String::new();
        for ctx in [&viewing, &plain] {
            let plan = ctx
                .sql(&sql)
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            if shown.is_empty() {
                shown = displayable(plan.as_ref()).indent(true).to_string();
            }
            let schema = plan.schema();
            let batches: Vec<RecordBatch> = collect(plan, ctx.task_ctx()).await.unwrap();
            answers.push((schema, pretty_format_batches(&batches).unwrap().to_string()));
        }
        assert_eq!(answers[0], answers[1], "{sql}\n{shown}");
        shown
    }

    #[tokio::test]
    async fn joins_answer_as_before_with_views_inside() {
        let queries = [
            "SELECT s.pos, substr(g.seq, s.pos, 5) AS k FROM s JOIN g ON g.id = s.chrom ORDER BY 1",
            "SELECT s.pos, g.seq AS whole, upper(g.seq), substr(g.seq, 2) FROM s JOIN g \
             ON g.id = s.chrom ORDER BY upper(g.seq), 1",
            "SELECT k, count(*) FROM (SELECT substr(g.seq, s.pos, 2) AS k FROM s JOIN g \
             ON g.id = s.chrom) GROUP BY k ORDER BY k",
            "SELECT s.chrom, g.seq, s.tag FROM s LEFT JOIN g ON g.id = s.chrom ORDER BY 1, 2",
            "SELECT * FROM s FULL JOIN g ON g.id = s.chrom ORDER BY s.pos, g.id",
            "SELECT * FROM s RIGHT JOIN g ON g.id = s.chrom AND s.pos > 1 ORDER BY g.id, s.pos",
            "SELECT a.id || '/' || b.id AS pair, a.seq || b.seq AS both FROM g a CROSS JOIN g b \
             ORDER BY 1",
            "SELECT g.id, count(*) AS n, max(s.tag) AS t, string_agg(s.chrom, ',') AS c \
             FROM g JOIN s ON g.id = s.chrom GROUP BY g.id ORDER BY 1",
            "SELECT s.chrom FROM s JOIN g ON g.id = s.chrom UNION ALL SELECT 'x' ORDER BY 1",
            "SELECT g.id FROM g JOIN s ON s.pos = CAST(substr(g.id, 4) AS BIGINT) \
             WHERE upper(g.seq) LIKE 'G%' ORDER BY 1",
            "SELECT s.pos FROM s JOIN g ON g.id = s.chrom \
             WHERE g.id IN (SELECT chrom FROM s WHERE pos < 3) ORDER BY 1",
            "SELECT g.id FROM g WHERE EXISTS (SELECT 1 FROM s WHERE s.chrom = g.id) ORDER BY 1",
            // Joins over a join's output, whose build side is collected into one batch.
            "SELECT a.pos, substr(g.seq, a.pos, 3) AS k, b.tag FROM s a JOIN g ON g.id = a.chrom \
             JOIN s b ON b.chrom = g.id AND b.pos = a.pos ORDER BY 1",
            "SELECT a.pos, g.seq, b.pos AS p FROM s a JOIN g ON g.id = a.chrom \
             LEFT JOIN s b ON b.chrom = g.id AND b.pos > a.pos ORDER BY 1, 2, 3",
            "SELECT x.seq, y.id FROM (SELECT g.seq FROM s JOIN g ON g.id = s.chrom) x \
             CROSS JOIN g y ORDER BY 1, 2",
            // Joins without equality keys, of every kind, and semi and anti joins with a
            // condition.
            "SELECT a.id, b.seq, a.seq FROM g a JOIN g b ON a.id < b.id ORDER BY 1, 2",
            "SELECT a.id, b.id AS b, b.seq FROM g a LEFT JOIN g b ON a.seq > b.seq ORDER BY 1, 2",
            "SELECT s.chrom, s.tag, g.seq FROM s FULL JOIN g ON s.pos > length(g.seq) - 18 \
             ORDER BY 1, 2, 3",
            "SELECT g.id, g.seq FROM g WHERE EXISTS (SELECT 1 FROM s WHERE s.chrom < g.id) \
             ORDER BY 1",
            "SELECT s.chrom, s.tag FROM s WHERE NOT EXISTS (SELECT 1 FROM g WHERE g.id <= s.chrom) \
             ORDER BY 1, 2",
            "SELECT s.chrom, s.pos FROM s WHERE EXISTS (SELECT 1 FROM g WHERE g.id = s.chrom \
             AND substr(g.seq, s.pos, 1) = 'A') ORDER BY 1, 2",
            "SELECT a.id, b.chrom, b.tag, a.seq FROM g a CROSS JOIN s b ORDER BY 1, 2, 3",
            "SELECT a.seq, count(*) AS n FROM g a, s b WHERE a.seq > COALESCE(b.chrom, '') \
             GROUP BY a.seq ORDER BY 1",
            // Windows, over views.
            "SELECT g.id, first_value(g.seq) OVER () AS f, max(g.seq) OVER () AS m FROM g \
             ORDER BY 1",
            "SELECT s.chrom, s.pos, max(s.chrom) OVER (PARTITION BY s.pos % 2) AS m, \
             lag(s.chrom) OVER (ORDER BY s.pos, s.chrom) AS prev, \
             first_value(s.tag) OVER (PARTITION BY s.chrom ORDER BY s.pos) AS t \
             FROM s ORDER BY 2, 1",
            "SELECT g.id, string_agg(g.id, ',') OVER (ORDER BY g.id) AS ids, \
             last_value(upper(g.seq)) OVER (ORDER BY g.id ROWS BETWEEN UNBOUNDED PRECEDING \
             AND UNBOUNDED FOLLOWING) AS u FROM g ORDER BY 1",
            "SELECT x.chrom, x.f, substr(g.seq, 1, 3) AS k FROM (SELECT chrom, \
             first_value(chrom) OVER (PARTITION BY pos > 2 ORDER BY chrom) AS f FROM s) x \
             JOIN g ON g.id = x.f ORDER BY 1, 2",
        ];
        for sql in queries {
            same_answer(sql).await;
        }
    }

    /// The cast back above an `ORDER BY` computes, so DataFusion runs it over a round-robin
    /// repartition of the sorted rows; those partitions must be merged back in order, not
    /// coalesced (2 of 4 partitions' batches interleaved: 41 pairs out of order in 2 M rows).
    #[tokio::test]
    async fn ordered_results_stay_in_order_through_the_cast_back() {
        let config = Config {
            target_partitions: 4,
            ..Config::default()
        };
        let ctx = crate::catalog::session_context(&config).unwrap();
        for (sql, descending) in [
            (
                "SELECT x.k, x.name, y.name AS next FROM a x JOIN a y ON y.k = x.k + 1 ORDER BY x.k DESC",
                true,
            ),
            (
                "SELECT x.k, y.name FROM a x JOIN a y ON y.k % 7 = x.k AND y.k < 100000 ORDER BY x.k, y.name",
                false,
            ),
        ] {
            let sql = format!(
                "WITH a AS (SELECT value AS k, 'name-' || value AS name \
                 FROM generate_series(1, 200000)) {sql}"
            );
            let frame = ctx.sql(&sql).await.unwrap();
            let plan = frame.clone().create_physical_plan().await.unwrap();
            let shown = displayable(plan.as_ref()).indent(true).to_string();
            let batches = frame.collect().await.unwrap();
            let mut keys = Vec::new();
            for batch in &batches {
                let k = batch.column(0).as_primitive::<Int64Type>();
                let name = batch.column(1).as_string::<i32>();
                keys.extend(
                    k.values()
                        .iter()
                        .copied()
                        .zip(name.iter().map(Option::unwrap)),
                );
            }
            assert!(keys.len() > 80_000, "{}", keys.len());
            let out_of_order = keys
                .windows(2)
                .filter(|pair| match descending {
                    true => pair[0].0 < pair[1].0,
                    false => pair[0] > pair[1],
                })
                .count();
            assert_eq!(out_of_order, 0, "{sql}\n{shown}");
        }
    }

    #[tokio::test]
    async fn join_inputs_are_cast_to_views_and_the_result_back() {
        let shown = same_answer(
            "SELECT s.pos, substr(g.seq, s.pos, 5) AS k FROM s JOIN g ON g.id = s.chrom",
        )
        .await;
        assert!(shown.contains("AS Utf8View"), "{shown}");
        // substr's result is cast back where it is computed, not only at the end.
        let projection = shown.lines().find(|line| line.contains("substr")).unwrap();
        assert!(projection.contains("CAST(substr("), "{shown}");
        assert!(projection.contains("AS Utf8)"), "{shown}");
        // ... over slices of the join's output.
        let below = shown
            .lines()
            .skip_while(|line| !line.contains("substr"))
            .nth(1)
            .unwrap();
        assert!(below.contains("ViewSlicesExec"), "{shown}");
        // A join's build side of views is collected into one batch.
        let shown = same_answer(
            "SELECT a.pos, substr(g.seq, a.pos, 3) AS k FROM s a JOIN g ON g.id = a.chrom \
             JOIN s b ON b.chrom = g.id AND b.pos = a.pos",
        )
        .await;
        let joins = shown.matches("HashJoinExec").count();
        assert_eq!(shown.matches("OneBatchExec").count(), joins, "{shown}");
        // Joins without equality keys repeat a build-side value once per probe row: views.
        for sql in [
            "SELECT a.seq, b.seq FROM g a JOIN g b ON a.id < b.id",
            "SELECT g.id FROM g WHERE EXISTS (SELECT 1 FROM s WHERE s.chrom < g.id)",
            "SELECT a.id, b.chrom FROM g a CROSS JOIN s b",
        ] {
            let (viewing, _) = contexts();
            let shown = shown_plan(&viewing, &format!("{TABLES} {sql}")).await;
            assert!(
                shown.contains("NestedLoopJoinExec") || shown.contains("CrossJoinExec"),
                "{shown}"
            );
            assert!(shown.contains("Utf8View"), "{shown}");
        }
        // A window repeats a value over a partition: views, cast back above.
        let (viewing, _) = contexts();
        let sql = format!("{TABLES} SELECT id, first_value(seq) OVER () AS f FROM g");
        let shown = shown_plan(&viewing, &sql).await;
        assert!(shown.contains("WindowAggExec"), "{shown}");
        assert!(shown.contains("AS Utf8View) as seq"), "{shown}");
        assert!(shown.contains("AS Utf8) as f"), "{shown}");
        // Equality joins that pass each row at most once and compare only keys stay as they
        // were.
        let (viewing, _) = contexts();
        let sql = format!("{TABLES} SELECT g.id FROM g WHERE g.id IN (SELECT chrom FROM s)");
        let shown = shown_plan(&viewing, &sql).await;
        assert!(shown.contains("HashJoinExec: mode="), "{shown}");
        assert!(!shown.contains("Utf8View"), "{shown}");
    }

    #[tokio::test]
    async fn statements_around_a_join_keep_their_types() {
        let (viewing, _) = contexts();
        for statement in [
            "CREATE TABLE t (id VARCHAR, n BIGINT)",
            "CREATE TABLE g AS SELECT column1 AS id, column2 AS seq \
             FROM (VALUES ('chr1', 'ACGTACGTAACCGGTT'), ('chr2', 'GGGGCCCC'))",
            "CREATE TABLE s AS SELECT column1 AS chrom, column2 AS pos \
             FROM (VALUES ('chr1', 2), ('chr1', 3), ('chr2', 4), ('chr3', 1))",
            "INSERT INTO t SELECT g.id, s.pos FROM s JOIN g ON g.id = s.chrom",
            "CREATE TABLE u AS SELECT g.seq, s.pos FROM s JOIN g ON g.id = s.chrom",
        ] {
            viewing
                .sql(statement)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
        }
        let rows = viewing
            .sql("SELECT id, n, arrow_typeof(id) AS ty FROM t ORDER BY n")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let shown = pretty_format_batches(&rows).unwrap().to_string();
        assert_eq!(shown.matches("| Utf8 |").count(), 3, "{shown}");
        let stored = viewing.table_provider("u").await.unwrap().schema();
        assert_eq!(stored.field(0).data_type(), &DataType::Utf8);
        let explained = viewing
            .sql(&format!(
                "EXPLAIN {TABLES} SELECT g.seq FROM s JOIN g ON g.id = s.chrom"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let shown = pretty_format_batches(&explained).unwrap().to_string();
        assert!(shown.contains("Utf8View"), "{shown}");
    }
}
