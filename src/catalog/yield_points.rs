//! Yield points: every leaf of a plan hands its task back to the runtime after each batch, so a long query notices cancellation and shares its threads.
//!
//! A Rust thread cannot be preempted, and a task is only cancelled when it yields. DataFusion's
//! own cooperative scheduling yields after a budget of 128 batches, and an operator such as a
//! nested-loop join with a selective filter keeps pulling batches inside one poll until it
//! has output: one poll could last the whole query, and neither a cancel nor the deadline
//! would stop it. After this rule, every batch a scan produces costs one yield, so the work
//! between yields is what one batch costs.
//!
//! One operator makes a batch cost too much: a nested-loop join compares each batch of its
//! probe side with every row of its build side (8,192 × 400,000 rows took seconds here). Its
//! probe side is therefore fed in slices whose size adapts so that one slice takes about
//! [`SLICE_TARGET`]: whole batches while the join is fast, fewer rows when it is not.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::NestedLoopJoinExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::{Stream, StreamExt};

/// How long the work on one slice of a nested-loop join's probe side should take.
pub const SLICE_TARGET: Duration = Duration::from_millis(250);

/// The physical optimizer rule that puts a [`YieldExec`] above every leaf, and feeds the probe
/// side of every nested-loop join in adaptive slices.
#[derive(Debug, Default)]
pub struct YieldAfterEachBatch;

impl PhysicalOptimizerRule for YieldAfterEachBatch {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = plan
            .transform_up(|node| {
                // Leaves are wrapped from their parent, so a leaf already under a YieldExec
                // is recognised and the rule can run twice without stacking yields.
                let sliced_probe = node.downcast_ref::<NestedLoopJoinExec>().is_some();
                let is_yield = node.downcast_ref::<YieldExec>().is_some();
                let children = node.children();
                let mut changed = false;
                let mut new_children = Vec::with_capacity(children.len());
                for (index, child) in children.into_iter().enumerate() {
                    let mut child = Arc::clone(child);
                    if !is_yield && is_bare_leaf(&child) {
                        child = yield_above(child, false);
                        changed = true;
                    }
                    // The probe (right) side of a nested-loop join is fed in slices.
                    if sliced_probe && index == 1 && !is_sliced(&child) {
                        child = yield_above(child, true);
                        changed = true;
                    }
                    new_children.push(child);
                }
                if changed {
                    Ok(Transformed::yes(node.replace_children(
                        new_children,
                        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                    )?))
                } else {
                    Ok(Transformed::no(node))
                }
            })?
            .data;
        Ok(if is_bare_leaf(&plan) {
            yield_above(plan, false)
        } else {
            plan
        })
    }

    fn name(&self) -> &str {
        "yield_after_each_batch"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A leaf of the plan: a scan or a generator. Its parent decides whether it is wrapped yet.
fn is_bare_leaf(node: &Arc<dyn ExecutionPlan>) -> bool {
    node.children().is_empty()
}

fn is_sliced(node: &Arc<dyn ExecutionPlan>) -> bool {
    node.downcast_ref::<YieldExec>()
        .is_some_and(|exec| exec.slice_adaptively)
}

fn yield_above(input: Arc<dyn ExecutionPlan>, slice_adaptively: bool) -> Arc<dyn ExecutionPlan> {
    Arc::new(YieldExec {
        input,
        slice_adaptively,
    })
}

/// Passes its input's batches through, yielding to the runtime before each one; with
/// `slice_adaptively`, in slices sized so the consumer's work on one takes about [`SLICE_TARGET`].
#[derive(Debug)]
pub struct YieldExec {
    input: Arc<dyn ExecutionPlan>,
    slice_adaptively: bool,
}

impl DisplayAs for YieldExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.slice_adaptively {
            f.write_str("YieldExec: slices=adaptive")
        } else {
            f.write_str("YieldExec")
        }
    }
}

impl ExecutionPlan for YieldExec {
    fn name(&self) -> &str {
        "YieldExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self {
                input,
                slice_adaptively: self.slice_adaptively,
            })),
            _ => datafusion::common::internal_err!("YieldExec has exactly one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(YieldingStream {
            schema: input.schema(),
            input,
            yielded: false,
            slicer: self.slice_adaptively.then(Slicer::default),
        }))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }
}

/// Returns `Pending` (having woken itself) once before each batch (or slice) of its input.
struct YieldingStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    yielded: bool,
    slicer: Option<Slicer>,
}

/// Rows in the first slice of a nested-loop join's probe side: small enough that a join with
/// a huge build side yields within [`SLICE_TARGET`] from its first slice; fast joins double it
/// back to whole batches within a few slices.
const FIRST_SLICE_ROWS: usize = 64;

/// Cuts batches into slices whose rows follow how long the consumer took on the last one.
struct Slicer {
    /// The rest of the batch being sliced.
    rest: Option<RecordBatch>,
    /// Rows per slice (whole batches once this exceeds their size).
    rows: usize,
    /// When the last slice was handed out, and its rows.
    handed: Option<(Instant, usize)>,
}

impl Default for Slicer {
    fn default() -> Self {
        Self {
            rest: None,
            rows: FIRST_SLICE_ROWS,
            handed: None,
        }
    }
}

impl Slicer {
    /// Adjusts the slice size to the time the consumer spent on the last slice.
    fn learn(&mut self, now: Instant) {
        let Some((at, rows)) = self.handed.take() else {
            return;
        };
        let spent = now.duration_since(at);
        if spent > SLICE_TARGET {
            let scaled = rows as f64 * SLICE_TARGET.as_secs_f64() / spent.as_secs_f64();
            self.rows = (scaled as usize).max(1);
        } else if spent < SLICE_TARGET / 4 && rows >= self.rows {
            self.rows = self.rows.saturating_mul(2).min(1 << 24);
        }
    }

    /// The next slice of `batch` (the remainder is kept for the next call).
    fn cut(&mut self, batch: RecordBatch, now: Instant) -> RecordBatch {
        let rows = self.rows.min(batch.num_rows());
        let slice = batch.slice(0, rows);
        if rows < batch.num_rows() {
            self.rest = Some(batch.slice(rows, batch.num_rows() - rows));
        }
        self.handed = Some((now, rows.max(1)));
        slice
    }
}

impl Stream for YieldingStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(slicer) = &mut this.slicer {
            slicer.learn(Instant::now());
        }
        if !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let next = match this.slicer.as_mut().and_then(|slicer| slicer.rest.take()) {
            Some(rest) => Poll::Ready(Some(Ok(rest))),
            None => this.input.poll_next_unpin(cx),
        };
        if !next.is_ready() {
            return next;
        }
        this.yielded = false;
        match (next, &mut this.slicer) {
            (Poll::Ready(Some(Ok(batch))), Some(slicer)) => {
                Poll::Ready(Some(Ok(slicer.cut(batch, Instant::now()))))
            }
            (next, _) => next,
        }
    }
}

impl RecordBatchStream for YieldingStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The physical plan of `sql` with the rule (as text), and the count it answers.
    async fn plan_and_count(sql: &str) -> (Arc<dyn ExecutionPlan>, String, i64) {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(YieldAfterEachBatch))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let shown = show(&plan);
        let batches = frame.collect().await.unwrap();
        let count = datafusion::arrow::array::AsArray::as_primitive::<
            datafusion::arrow::datatypes::Int64Type,
        >(batches[0].column(0))
        .value(0);
        (plan, shown, count)
    }

    fn show(plan: &Arc<dyn ExecutionPlan>) -> String {
        datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string()
    }

    #[tokio::test]
    async fn every_leaf_yields_and_answers_stay_the_same() {
        let (_, shown, count) = plan_and_count(
            "SELECT count(*) FROM generate_series(1, 1000) a \
             CROSS JOIN (VALUES (1), (2), (3)) b WHERE a.value % 2 = 0",
        )
        .await;
        assert_eq!(shown.matches("YieldExec").count(), 2, "{shown}");
        assert_eq!(count, 1500);
    }

    #[tokio::test]
    async fn a_nested_loop_join_gets_its_probe_side_in_adaptive_slices() {
        let (plan, shown, count) = plan_and_count(
            "SELECT count(*) FROM generate_series(1, 3000) a \
             JOIN generate_series(1, 3000) b ON a.value + b.value = 3001",
        )
        .await;
        assert!(shown.contains("NestedLoopJoinExec"), "{shown}");
        assert_eq!(
            shown.matches("YieldExec: slices=adaptive").count(),
            1,
            "{shown}"
        );
        // Optimizing again adds nothing.
        let again = YieldAfterEachBatch
            .optimize(plan, &ConfigOptions::default())
            .unwrap();
        assert_eq!(shown, show(&again));
        assert_eq!(count, 3000);
    }

    #[test]
    fn slices_start_small_grow_while_fast_and_shrink_when_slow() {
        use datafusion::arrow::array::{Array, Int64Array};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let values = Int64Array::from_iter_values(0..1000);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap();
        let mut slicer = Slicer::default();
        let mut now = Instant::now();
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut next = Some(batch.clone());
        // A fast consumer: 64, 128, 256, then the rest of the batch.
        while let Some(input) = next.take().or_else(|| slicer.rest.take()) {
            let slice = slicer.cut(input, now);
            sizes.push(slice.num_rows());
            let column = slice
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            seen.extend(column.values().iter().copied());
            now += SLICE_TARGET / 8;
            slicer.learn(now);
        }
        assert_eq!(sizes, [64, 128, 256, 512, 40]);
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        // The short last slice does not double the size again.
        assert_eq!(slicer.rows, 1024);
        // A whole batch took four targets: slices of 250 rows.
        let whole = slicer.cut(batch.clone(), now);
        assert_eq!(whole.num_rows(), 1000);
        now += SLICE_TARGET * 4;
        slicer.learn(now);
        assert_eq!(slicer.rows, 250);
        let slice = slicer.cut(batch, now);
        assert_eq!(slice.num_rows(), 250);
        // Between a quarter and the whole target: the size stays.
        slicer.learn(now + SLICE_TARGET / 2);
        assert_eq!(slicer.rows, 250);
    }
}
