//! What a window function holds of its input is held in the memory pool.
//!
//! DataFusion 55's window operators reserve nothing: `WindowAggExec` (a frame that needs the
//! whole partition, as `count(*) OVER ()` or `first_value(x) OVER ()`) holds all of its input
//! before it computes anything, and `BoundedWindowAggExec` holds each partition's rows until its
//! frames are complete. `SELECT count(*) OVER () AS n, sequence FROM reads` over a 128 MB FASTA
//! file took 320 MiB under a 128 MiB limit, and over a larger file would take all of it.
//!
//! [`HoldWindowInputs`] puts a `ContextExec` of `Change::HoldInput` ("WindowInputExec")
//! under every window operator: each batch it passes on is reserved first, twice its size for
//! the copy the window concatenates it into (RESOURCE_EXHAUSTED when the pool cannot hold it),
//! and stays reserved for as long as its buffers live: in the window operator, its output
//! (which passes the input's columns on) and whatever is above.
//!
//! Gaps: `BoundedWindowAggExec` keeps a partition's rows in a concatenated copy and drops the
//! batches, whose reservations go with them; what a window function computes is not reserved
//! (a value repeated over a whole partition is copied into every row).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, GenericByteViewArray, RecordBatch};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{ByteViewType, DataType};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};

use super::bounded_operators::{Change, context_exec, is_context};
use super::functions::{held_batch, pool_reason};

/// The physical optimizer rule that holds the inputs of window operators in the memory pool
/// ([`Change::HoldInput`]).
#[derive(Debug, Default)]
pub struct HoldWindowInputs;

impl PhysicalOptimizerRule for HoldWindowInputs {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| {
                let window = node.downcast_ref::<WindowAggExec>().is_some()
                    || node.downcast_ref::<BoundedWindowAggExec>().is_some();
                if !window {
                    return Ok(Transformed::no(node));
                }
                let mut wrapped = false;
                let held = node
                    .children()
                    .into_iter()
                    .map(|child| match is_context(child, Change::HoldInput) {
                        true => Arc::clone(child),
                        false => {
                            wrapped = true;
                            context_exec(Arc::clone(child), Change::HoldInput)
                        }
                    })
                    .collect();
                if !wrapped {
                    return Ok(Transformed::no(node));
                }
                node.replace_children(
                    held,
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                )
                .map(Transformed::yes)
            })?
            .data)
    }

    fn name(&self) -> &str {
        "hold_window_inputs"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `batch` reserved in `pool` for as long as its buffers live, or RESOURCE_EXHAUSTED.
pub(super) fn hold(
    batch: RecordBatch,
    pool: &Arc<dyn MemoryPool>,
    partition: usize,
) -> Result<RecordBatch> {
    let reservation = MemoryConsumer::new(format!("WindowInputExec[{partition}]")).register(pool);
    // Twice: the window operators concatenate what they hold into one batch (WindowAggExec
    // all of its input at once, keeping the batches), a copy made where it cannot be reserved.
    let bytes = 2 * batch.columns().iter().map(held_bytes).sum::<usize>();
    reservation.try_grow(bytes).map_err(|error| {
        DataFusionError::ResourcesExhausted(format!(
            "a window function holds its input (the whole partition for a frame such as \
             OVER ()), and it does not fit: {}",
            pool_reason(&error)
        ))
    })?;
    Ok(held_batch(batch, reservation))
}

/// What `column` holds: a slice counts its part of a buffer it shares.
fn held_bytes(column: &ArrayRef) -> usize {
    match column.data_type() {
        DataType::Utf8View => view_bytes(column.as_string_view()),
        DataType::BinaryView => view_bytes(column.as_binary_view()),
        _ => column
            .to_data()
            .get_slice_memory_size()
            .unwrap_or_else(|_| column.get_array_memory_size()),
    }
}

/// A view array's views and nulls, and the data buffers no other array holds (arrow's slice
/// size leaves data buffers out). A buffer shared with other arrays is a join's input repeated
/// as views, held and counted by the join, or one batch counted already: counting it again for
/// every batch of a join's output would refuse windows over joins that share one record.
fn view_bytes<T: ByteViewType>(array: &GenericByteViewArray<T>) -> usize {
    let nulls = array.nulls().map_or(0, |nulls| nulls.buffer().len());
    let own: usize = array
        .data_buffers()
        .iter()
        .filter(|buffer| buffer.strong_count() == 1)
        .map(Buffer::capacity)
        .sum();
    array.views().inner().len() + nulls + own
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::displayable;

    use super::super::limited_session as session;

    /// 3 M rows of a 32-character hash (about 100 MB of Arrow data), made as the window reads
    /// them: no function here reserves what it makes.
    const WIDE: &str = "SELECT value AS v, md5(CAST(value AS VARCHAR)) AS h \
                        FROM generate_series(1, 3000000)";

    #[tokio::test]
    async fn a_window_over_more_input_than_the_limit_is_refused() {
        let ctx = session(64);
        for window in [
            "count(*) OVER ()",
            "first_value(h) OVER ()",
            "count(*) OVER (PARTITION BY v % 2)",
        ] {
            let sql = format!("SELECT max(n), max(h) FROM (SELECT {window} AS n, h FROM ({WIDE}))");
            let error = ctx.sql(&sql).await.unwrap().collect().await.unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(
                    error.find_root(),
                    datafusion::error::DataFusionError::ResourcesExhausted(_)
                ) && message.contains("a window function holds its input")
                    && message.contains("memory limit of 64MiB"),
                "{sql}: {message}"
            );
        }
    }

    #[tokio::test]
    async fn windows_that_fit_answer_as_before_with_their_input_held() {
        let ctx = session(256);
        let sql = format!(
            "SELECT count(*) OVER () AS n, first_value(v) OVER (ORDER BY v) AS f, \
             row_number() OVER (PARTITION BY v % 3 ORDER BY v DESC) AS r, v \
             FROM ({WIDE}) WHERE v <= 5 ORDER BY v"
        );
        let plan = ctx
            .sql(&sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let windows = shown.matches("WindowAggExec").count();
        assert!(windows >= 2, "{shown}");
        assert_eq!(shown.matches("WindowInputExec").count(), windows, "{shown}");
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let rows = pretty_format_batches(&batches).unwrap().to_string();
        // Rows v = 1..5: five of them, the first v 1, numbered from the largest v in each class
        // of v % 3 (5, 2 | 4, 1 | 3).
        for (v, r) in [(1, 2), (2, 2), (3, 1), (4, 1), (5, 1)] {
            let line = format!("| 5 | 1 | {r} | {v} |");
            assert!(rows.contains(&line), "{line}\n{rows}");
        }
        // The pool is empty again once the results are dropped.
        drop(batches);
        assert_eq!(ctx.runtime_env().memory_pool.reserved(), 0);
    }
}
