//! Yield points: every leaf of a plan hands its task back to the runtime after each batch, so a long query notices cancellation and shares its threads.
//!
//! A Rust thread cannot be preempted, and a task is only cancelled when it yields. DataFusion's
//! own cooperative scheduling yields after a budget of 128 batches, and an operator such as a
//! nested-loop join with a selective filter keeps pulling batches inside one poll until it
//! has output: one poll could last the whole query, and neither a cancel nor the deadline
//! would stop it. After this rule, every batch a scan produces costs one yield, so the work
//! between yields is what one batch costs (microseconds to a few seconds, never the query).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use futures::{Stream, StreamExt};

/// The physical optimizer rule that puts a [`YieldExec`] above every leaf.
#[derive(Debug, Default)]
pub struct YieldAfterEachBatch;

impl PhysicalOptimizerRule for YieldAfterEachBatch {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.children().is_empty() && node.downcast_ref::<YieldExec>().is_none() {
                let wrapped: Arc<dyn ExecutionPlan> = Arc::new(YieldExec { input: node });
                Ok(Transformed::new(wrapped, true, TreeNodeRecursion::Jump))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "yield_after_each_batch"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input's batches through, yielding to the runtime before each one.
#[derive(Debug)]
pub struct YieldExec {
    input: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for YieldExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("YieldExec")
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
            (Some(input), true) => Ok(Arc::new(Self { input })),
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
        }))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }
}

/// Returns `Pending` (having woken itself) once before each batch of its input.
struct YieldingStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    yielded: bool,
}

impl Stream for YieldingStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let next = self.input.poll_next_unpin(cx);
        if next.is_ready() {
            self.yielded = false;
        }
        next
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

    #[tokio::test]
    async fn every_leaf_yields_and_answers_stay_the_same() {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(YieldAfterEachBatch))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let frame = ctx
            .sql(
                "SELECT count(*) FROM generate_series(1, 1000) a \
                 CROSS JOIN (VALUES (1), (2), (3)) b WHERE a.value % 2 = 0",
            )
            .await
            .unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        assert_eq!(shown.matches("YieldExec").count(), 2, "{shown}");
        let batches = frame.collect().await.unwrap();
        let count = datafusion::arrow::array::AsArray::as_primitive::<
            datafusion::arrow::datatypes::Int64Type,
        >(batches[0].column(0))
        .value(0);
        assert_eq!(count, 1500);
    }
}
