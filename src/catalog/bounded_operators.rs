//! Operators held to the memory pool where DataFusion 55 lets them escape it: repartition,
//! filter and join output buffers, and nested-loop join spills.
//!
//! **Repartition buffers.** DataFusion 55's `RepartitionExec` merges the small batches it cuts
//! for each output partition in a coalescer until they add up to `batch_size` rows (8,192), and
//! only then reserves the merged batch in the memory pool. Rows are counted, not bytes: rows of
//! a few hundred bytes make a few MB, but the partial state of a grouped `string_agg` or
//! `array_agg` (one row per group, the group's whole text or list so far) can be megabytes per
//! row, and 8,192 of them tens of GB that nobody reserved. A grouped `string_agg` over a cross
//! join of 3,000 reads went past 10 GB resident under a 128 MiB limit that way (the aggregate
//! itself reports its size correctly and spills). [`BoundExchangeBuffers`] puts a
//! [`ContextExec`] above every repartition that coalesces: it runs the repartition with a batch
//! size of one row, which turns DataFusion's coalescer off (each batch is reserved as soon as
//! it is cut; the repartition's own inputs run with the session's batch size), and merges the batches the repartition emits itself, by rows and bytes: up to
//! `batch_size` rows and at most [`COALESCE_BYTES`], with what it holds reserved in the pool,
//! passing batches on unmerged when the pool is short.
//!
//! **Filter and join outputs.** A `FilterExec` merges what passes into batches of its own
//! batch size (the session's 8,192 rows), so a `WHERE` over records of megabytes built batches
//! of hundreds of MB that nobody reserved; it runs with a batch size of one row (its coalescer
//! off) under the same bytes-merging [`ContextExec`]. A join copies its input rows into every
//! output row and makes up to `batch_size` output rows at a time (the batch size sets how many
//! rows its loops produce, not only how it merges), so a join of 100 kbp records made 1.6 GB
//! batches; a join whose output can hold wide values (strings, binaries, lists) runs with
//! [`JOIN_BATCH_ROWS`] and is merged by bytes above.
//!
//! **Nested-loop join spills.** When a nested-loop join's build side does not fit, DataFusion
//! 55.2 falls back to spilling it, by executing the build side a second time
//! (`NestedLoopJoinStream::initiate_fallback`). A file scan shares its queue of files between
//! executions of the same plan, so the second execution reads only the files the first one had
//! not claimed: nothing at all ("Left side produced no data to spill", INTERNAL), or, for a
//! table of many files, a silently incomplete build side. The fallback also drops or repeats
//! unmatched rows for outer joins (apache/datafusion#24745, #24764). [`NoNestedLoopJoinSpill`]
//! runs every nested-loop join without a spill directory, so a build side that does not fit
//! ends the query with RESOURCE_EXHAUSTED naming the limit, and gives the join's inputs their
//! spill directory back.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PiecewiseMergeJoinExec, SortMergeJoinExec,
    SymmetricHashJoinExec,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr,
    PlanProperties, ReplaceChildrenOptions,
};
use datafusion::prelude::SessionConfig;
use futures::{Stream, StreamExt};

use super::functions::holds_bytes;

/// The most bytes a merged batch collects before it is handed on.
pub const COALESCE_BYTES: usize = 8 << 20;

/// The physical optimizer rule that puts a [`ContextExec`] merging batches by bytes above
/// every repartition whose batches DataFusion would coalesce (all but order-preserving ones).
#[derive(Debug, Default)]
pub struct BoundExchangeBuffers;

impl PhysicalOptimizerRule for BoundExchangeBuffers {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = plan
            .transform_up(|node| {
                // Operators are wrapped from their parent; one already bounded is recognised by
                // its inputs (`coalescing`), so the rule can run twice.
                let children = node.children();
                if !children.iter().any(|child| coalesces(child)) {
                    return Ok(Transformed::no(node));
                }
                let new_children = children
                    .into_iter()
                    .map(|child| bounded(Arc::clone(child)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Transformed::yes(node.replace_children(
                    new_children,
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                )?))
            })?
            .data;
        bounded(plan)
    }

    fn name(&self) -> &str {
        "bound_exchange_buffers"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The rows a join whose output may hold wide values makes at a time: each output row copies
/// its input rows, so at the session's 8,192 rows a join of 100 kbp records built 1.6 GB
/// batches (a self-join of a 50 MB FASTA file took 8 GB under a 128 MiB limit).
pub const JOIN_BATCH_ROWS: usize = 64;

/// How an operator that merges its output by rows is to run: [`Change::BoundedCoalesce`] for a
/// repartition (see `RepartitionExec::execute_inner`) or a filter (its own batch size), whose
/// coalescer a batch size of one row turns off; [`Change::BoundedJoin`] for a join whose output
/// may hold wide values (its batch size also sets how many rows it makes at a time). `None`
/// for other operators and ones already bounded.
fn coalescing(node: &Arc<dyn ExecutionPlan>) -> Option<Change> {
    // Already bounded (the rule may run twice; the spill rule may have wrapped the inputs).
    let children = node.children();
    if !children.is_empty() && children.into_iter().all(restores_batch_size) {
        return None;
    }
    if let Some(exec) = node.downcast_ref::<RepartitionExec>() {
        let merges = !exec.preserve_order() && !exec.properties().boundedness.is_unbounded();
        return merges.then_some(Change::BoundedCoalesce);
    }
    if node.downcast_ref::<FilterExec>().is_some() {
        return Some(Change::BoundedCoalesce);
    }
    let join = node.downcast_ref::<HashJoinExec>().is_some()
        || node.downcast_ref::<NestedLoopJoinExec>().is_some()
        || node.downcast_ref::<SortMergeJoinExec>().is_some()
        || node.downcast_ref::<SymmetricHashJoinExec>().is_some()
        || node.downcast_ref::<CrossJoinExec>().is_some()
        || node.downcast_ref::<PiecewiseMergeJoinExec>().is_some();
    let wide = node
        .schema()
        .fields()
        .iter()
        .any(|field| may_be_wide(field.data_type()));
    (join && wide).then_some(Change::BoundedJoin)
}

/// A [`Change::RestoreBatchSize`], possibly under a [`Change::RestoreSpill`].
fn restores_batch_size(node: &Arc<dyn ExecutionPlan>) -> bool {
    match node.downcast_ref::<ContextExec>() {
        Some(exec) if exec.change == Change::RestoreBatchSize => true,
        Some(exec) if exec.change == Change::RestoreSpill => restores_batch_size(&exec.input),
        _ => false,
    }
}

/// Whether a value of this type can take more than a few bytes (strings, binaries, lists).
fn may_be_wide(data_type: &DataType) -> bool {
    if holds_bytes(data_type) {
        return true;
    }
    match data_type {
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::Map(..)
        | DataType::Union(..) => true,
        DataType::FixedSizeBinary(width) => *width > 1024,
        DataType::FixedSizeList(field, _) => may_be_wide(field.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| may_be_wide(f.data_type())),
        DataType::Dictionary(_, values) => may_be_wide(values),
        DataType::RunEndEncoded(_, values) => may_be_wide(values.data_type()),
        _ => false,
    }
}

fn coalesces(node: &Arc<dyn ExecutionPlan>) -> bool {
    coalescing(node).is_some()
}

/// An operator that merges by rows, run without merging (or, a join, a few rows at a time) and
/// merged by bytes above; its own inputs run with the session's batch size again.
fn bounded(node: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(change) = coalescing(&node) else {
        return Ok(node);
    };
    // A filter keeps its batch size itself (the planner sets it from the session's).
    let node = match node.downcast_ref::<FilterExec>() {
        Some(filter) => Arc::new(filter.with_batch_size(1)?),
        None => node,
    };
    let inputs = node
        .children()
        .into_iter()
        .map(|child| context_exec(Arc::clone(child), Change::RestoreBatchSize))
        .collect();
    let node = node.replace_children(
        inputs,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )?;
    Ok(context_exec(node, change))
}

/// The physical optimizer rule that runs every nested-loop join without a spill directory
/// (its inputs with it).
#[derive(Debug, Default)]
pub struct NoNestedLoopJoinSpill;

impl PhysicalOptimizerRule for NoNestedLoopJoinSpill {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| {
                let children = node.children();
                let done = children
                    .iter()
                    .all(|child| is_context(child, Change::RestoreSpill));
                if node.downcast_ref::<NestedLoopJoinExec>().is_none() || done {
                    return Ok(Transformed::no(node));
                }
                let inputs = children
                    .into_iter()
                    .map(|child| context_exec(Arc::clone(child), Change::RestoreSpill))
                    .collect();
                let join = node.replace_children(
                    inputs,
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                )?;
                Ok(Transformed::yes(context_exec(join, Change::WithoutSpill)))
            })?
            .data)
    }

    fn name(&self) -> &str {
        "no_nested_loop_join_spill"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The physical optimizer rule that cuts the views a projection computes from into slices
/// ([`view_slices`]): a join's output rows share their inputs' bytes as views (see
/// [`super::view_joins`]), 64 rows repeating a 30 Mbp record are a few KB of views, and an
/// expression that copies what they point at (the cast back to strings, `upper`, `||`) would
/// make 1.9 GB at once. Slices are cut only there: a join's build side would count each slice's
/// buffers again (arrow's coalescer then copies rows it thinks sparse).
#[derive(Debug, Default)]
pub struct SliceViewsForProjections;

impl PhysicalOptimizerRule for SliceViewsForProjections {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| {
                let Some(projection) = node.downcast_ref::<ProjectionExec>() else {
                    return Ok(Transformed::no(node));
                };
                let input = projection.input();
                let views = input.schema().fields().iter().any(|field| {
                    matches!(field.data_type(), DataType::Utf8View | DataType::BinaryView)
                });
                let computes = projection
                    .expr()
                    .iter()
                    .any(|expr| expr.expr.downcast_ref::<Column>().is_none());
                if !views || !computes || is_context(input, Change::SliceViews) {
                    return Ok(Transformed::no(node));
                }
                let sliced = context_exec(Arc::clone(input), Change::SliceViews);
                node.replace_children(
                    vec![sliced],
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                )
                .map(Transformed::yes)
            })?
            .data)
    }

    fn name(&self) -> &str {
        "slice_views_for_projections"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What a [`ContextExec`] changes for its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// One-row batches for the input (a repartition: no coalescing of its own), and its output
    /// merged by rows and bytes; the session's batch size is kept in the session config for
    /// [`Change::RestoreBatchSize`].
    BoundedCoalesce,
    /// [`JOIN_BATCH_ROWS`] for the input (a join whose output may be wide), and its output
    /// merged as [`Change::BoundedCoalesce`] merges.
    BoundedJoin,
    /// The session's batch size back, for the inputs of an operator run
    /// [`Change::BoundedCoalesce`] or [`Change::BoundedJoin`] (one-row batches there would make
    /// the whole subtree crawl).
    RestoreBatchSize,
    /// No spill directory for the input (a nested-loop join); the spilling runtime is kept in
    /// the session config for [`Change::RestoreSpill`].
    WithoutSpill,
    /// The spilling runtime back, for the inputs of a join run [`Change::WithoutSpill`].
    RestoreSpill,
    /// The input's batches cut into [`view_slices`] (for a projection above).
    SliceViews,
    /// The input collected into one batch whose view columns list each buffer once (a join's
    /// build side: [`super::view_build`]).
    OneBatch,
    /// Each batch of the input reserved for as long as its buffers live (a window operator's
    /// input: [`super::window_input`]).
    HoldInput,
}

/// The spilling runtime a [`Change::WithoutSpill`] set aside.
struct SpillingRuntime(Arc<RuntimeEnv>);

/// The batch size a [`Change::BoundedCoalesce`] set aside.
struct SessionBatchSize(usize);

pub(super) fn is_context(node: &Arc<dyn ExecutionPlan>, change: Change) -> bool {
    node.downcast_ref::<ContextExec>()
        .is_some_and(|exec| exec.change == change)
}

pub(super) fn context_exec(
    input: Arc<dyn ExecutionPlan>,
    change: Change,
) -> Arc<dyn ExecutionPlan> {
    Arc::new(ContextExec { input, change })
}

/// Runs its input in a changed task context (and for [`Change::BoundedCoalesce`] merges its
/// output); everything else is the input's.
#[derive(Debug)]
pub struct ContextExec {
    input: Arc<dyn ExecutionPlan>,
    change: Change,
}

impl DisplayAs for ContextExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.change {
            Change::BoundedCoalesce => write!(f, "BoundedCoalesceExec: max_bytes={COALESCE_BYTES}"),
            Change::BoundedJoin => write!(
                f,
                "BoundedCoalesceExec: max_bytes={COALESCE_BYTES}, join_rows={JOIN_BATCH_ROWS}"
            ),
            Change::WithoutSpill => f.write_str("NoSpillExec"),
            Change::RestoreSpill => f.write_str("SpillExec"),
            Change::RestoreBatchSize => f.write_str("BatchSizeExec"),
            Change::SliceViews => write!(f, "ViewSlicesExec: max_bytes={COALESCE_BYTES}"),
            Change::OneBatch => f.write_str("OneBatchExec"),
            Change::HoldInput => f.write_str("WindowInputExec"),
        }
    }
}

impl ExecutionPlan for ContextExec {
    fn name(&self) -> &str {
        "ContextExec"
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
            (Some(input), true) => Ok(context_exec(input, self.change)),
            _ => internal_err!("ContextExec has exactly one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        match self.change {
            Change::BoundedCoalesce | Change::BoundedJoin => {
                let batch_rows = context.session_config().batch_size();
                let input_rows = match self.change {
                    Change::BoundedJoin => JOIN_BATCH_ROWS.min(batch_rows),
                    _ => 1,
                };
                let config = context
                    .session_config()
                    .clone()
                    .with_batch_size(input_rows)
                    .with_extension(Arc::new(SessionBatchSize(batch_rows)));
                let inner = derived(&context, config, context.runtime_env());
                let input = self.input.execute(partition, inner)?;
                let reservation = MemoryConsumer::new(format!("BoundedCoalesceExec[{partition}]"))
                    .register(context.memory_pool());
                Ok(Box::pin(BoundedCoalesceStream::new(
                    input,
                    batch_rows,
                    reservation,
                )))
            }
            Change::WithoutSpill => {
                let spilling = context.runtime_env();
                let runtime = RuntimeEnvBuilder::from_runtime_env(&spilling)
                    .with_disk_manager_builder(
                        DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
                    )
                    .build_arc()?;
                let config = context
                    .session_config()
                    .clone()
                    .with_extension(Arc::new(SpillingRuntime(spilling)));
                self.input
                    .execute(partition, derived(&context, config, runtime))
            }
            Change::RestoreSpill => {
                let config = context.session_config().clone();
                let inner = match config.get_extension::<SpillingRuntime>() {
                    Some(spilling) => derived(&context, config, Arc::clone(&spilling.0)),
                    None => context,
                };
                self.input.execute(partition, inner)
            }
            Change::SliceViews => {
                let input = self.input.execute(partition, context)?;
                let slices = input.flat_map(|batch| {
                    let slices = match batch {
                        Ok(batch) => view_slices(batch).into_iter().map(Ok).collect(),
                        Err(error) => vec![Err(error)],
                    };
                    futures::stream::iter(slices)
                });
                Ok(Box::pin(RecordBatchStreamAdapter::new(
                    self.input.schema(),
                    slices,
                )))
            }
            Change::OneBatch => {
                let input = self.input.execute(partition, Arc::clone(&context))?;
                let reservation = MemoryConsumer::new(format!("OneBatchExec[{partition}]"))
                    .register(context.memory_pool());
                let batch = futures::stream::once(super::view_build::one_batch(input, reservation))
                    .filter_map(|batch| futures::future::ready(batch.transpose()));
                Ok(Box::pin(RecordBatchStreamAdapter::new(
                    self.input.schema(),
                    batch,
                )))
            }
            Change::HoldInput => {
                let input = self.input.execute(partition, Arc::clone(&context))?;
                let pool = Arc::clone(context.memory_pool());
                let held = input.map(move |batch| {
                    batch.and_then(|batch| super::window_input::hold(batch, &pool, partition))
                });
                Ok(Box::pin(RecordBatchStreamAdapter::new(
                    self.input.schema(),
                    held,
                )))
            }
            Change::RestoreBatchSize => {
                let config = context.session_config().clone();
                let inner = match config.get_extension::<SessionBatchSize>() {
                    Some(rows) => {
                        let config = config.with_batch_size(rows.0);
                        derived(&context, config, context.runtime_env())
                    }
                    None => context,
                };
                self.input.execute(partition, inner)
            }
        }
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }
}

/// `context` with another session config and runtime.
fn derived(
    context: &TaskContext,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
) -> Arc<TaskContext> {
    Arc::new(TaskContext::new(
        context.task_id(),
        context.session_id(),
        config,
        context.scalar_functions().clone(),
        context.higher_order_functions().clone(),
        context.aggregate_functions().clone(),
        context.window_functions().clone(),
        runtime,
    ))
}

/// Merges its input's batches up to the coalescer's rows, [`COALESCE_BYTES`] and what the pool
/// grants; batches of [`COALESCE_BYTES`] or more pass through without a copy.
struct BoundedCoalesceStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    coalescer: BatchCoalescer,
    /// Merged (or passed-through) batches waiting to be handed on, in input order.
    ready: VecDeque<RecordBatch>,
    /// What the coalescer holds.
    reservation: MemoryReservation,
    done: bool,
}

impl BoundedCoalesceStream {
    fn new(
        input: SendableRecordBatchStream,
        batch_rows: usize,
        reservation: MemoryReservation,
    ) -> Self {
        let schema = input.schema();
        Self {
            coalescer: BatchCoalescer::new(Arc::clone(&schema), batch_rows),
            schema,
            input,
            ready: VecDeque::new(),
            reservation,
            done: false,
        }
    }

    fn take_completed(&mut self) {
        while let Some(batch) = self.coalescer.next_completed_batch() {
            self.ready.push_back(batch);
        }
    }

    /// Hands on what the coalescer holds.
    fn flush(&mut self) -> Result<()> {
        self.coalescer.finish_buffered_batch()?;
        self.take_completed();
        self.reservation.free();
        Ok(())
    }

    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.get_array_memory_size() >= COALESCE_BYTES {
            self.flush()?;
            self.ready.push_back(batch);
            return Ok(());
        }
        self.coalescer.push_batch(batch)?;
        self.take_completed();
        let held = self.coalescer.size();
        if held >= COALESCE_BYTES || self.reservation.try_resize(held).is_err() {
            self.flush()?;
        }
        Ok(())
    }
}

/// `batch` cut into slices whose view columns point at no more than [`COALESCE_BYTES`] each
/// (at least one row a slice); slicing copies nothing.
fn view_slices(batch: RecordBatch) -> Vec<RecordBatch> {
    let views: Vec<&[u128]> = batch
        .columns()
        .iter()
        .filter_map(|column| match column.data_type() {
            DataType::Utf8View => Some(column.as_string_view().views().as_ref()),
            DataType::BinaryView => Some(column.as_binary_view().views().as_ref()),
            _ => None,
        })
        .collect();
    if views.is_empty() || batch.num_rows() < 2 {
        return vec![batch];
    }
    // A view's low 32 bits are its length; up to 12 bytes live in the view itself.
    let pointed = |row: usize| -> usize {
        views
            .iter()
            .map(|column| match column[row] as u32 as usize {
                inline if inline <= 12 => 0,
                length => length,
            })
            .sum()
    };
    let mut slices = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for row in 0..batch.num_rows() {
        let row_bytes = pointed(row);
        if row > start && bytes + row_bytes > COALESCE_BYTES {
            slices.push(batch.slice(start, row - start));
            (start, bytes) = (row, 0);
        }
        bytes += row_bytes;
    }
    if start == 0 {
        return vec![batch];
    }
    slices.push(batch.slice(start, batch.num_rows() - start));
    slices
}

impl Stream for BoundedCoalesceStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(batch) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(batch)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let step = match this.input.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(batch))) => this.push(batch),
                Poll::Ready(Some(Err(error))) => Err(error),
                Poll::Ready(None) => {
                    this.done = true;
                    this.flush()
                }
            };
            if let Err(error) = step {
                this.done = true;
                return Poll::Ready(Some(Err(error)));
            }
        }
    }
}

impl RecordBatchStream for BoundedCoalesceStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::DataFusionError;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{SessionConfig, SessionContext};
    use futures::stream;

    use super::*;

    fn context() -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(BoundExchangeBuffers))
            .build();
        SessionContext::new_with_state(state)
    }

    #[tokio::test]
    async fn repartitions_are_bounded_once_and_answers_stay_the_same() {
        let ctx = context();
        let sql = "SELECT v % 7 AS k, count(*) AS n, string_agg(CAST(v AS VARCHAR), ',') AS s \
                   FROM (SELECT value AS v FROM generate_series(1, 20000)) GROUP BY v % 7 ORDER BY k";
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains("RepartitionExec"), "{shown}");
        assert_eq!(
            shown.matches("BoundedCoalesceExec").count(),
            shown.matches("RepartitionExec").count(),
            "{shown}"
        );
        assert_eq!(
            shown.matches("BatchSizeExec").count(),
            shown.matches("RepartitionExec").count(),
            "{shown}"
        );
        let again = BoundExchangeBuffers
            .optimize(Arc::clone(&plan), &ConfigOptions::default())
            .unwrap();
        assert_eq!(shown, displayable(again.as_ref()).indent(true).to_string());

        let batches = collect(plan, ctx.task_ctx()).await.unwrap();
        let mut groups = 0;
        for batch in &batches {
            let keys = batch
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let counts = batch
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let texts = batch.column(2).as_string::<i64>();
            for row in 0..batch.num_rows() {
                let key = keys.value(row);
                let mut expected: Vec<i64> = (1..=20000).filter(|v| v % 7 == key).collect();
                let mut got: Vec<i64> = texts
                    .value(row)
                    .split(',')
                    .map(|v| v.parse().unwrap())
                    .collect();
                got.sort_unstable();
                expected.sort_unstable();
                assert_eq!(counts.value(row), expected.len() as i64);
                assert_eq!(got, expected);
                groups += 1;
            }
        }
        assert_eq!(groups, 7);
    }

    fn batch_of(rows: usize, width: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let text = "x".repeat(width);
        let values = StringArray::from_iter_values(std::iter::repeat_n(text.as_str(), rows));
        RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap()
    }

    async fn merged(batches: Vec<RecordBatch>, batch_rows: usize) -> Vec<usize> {
        let schema = batches[0].schema();
        let pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool> = Arc::new(
            datafusion::execution::memory_pool::GreedyMemoryPool::new(64 << 20),
        );
        let input = Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                Arc::clone(&schema),
                stream::iter(batches.into_iter().map(Ok)),
            ),
        );
        let reservation = MemoryConsumer::new("test").register(&pool);
        let stream = BoundedCoalesceStream::new(input, batch_rows, reservation);
        let out: Vec<RecordBatch> = stream.map(|b| b.unwrap()).collect().await;
        assert_eq!(pool.reserved(), 0);
        out.iter().map(|b| b.num_rows()).collect()
    }

    #[tokio::test]
    async fn small_rows_merge_by_rows_and_wide_rows_by_bytes() {
        // Narrow rows: 100 batches of 10 rows make batches of 256 rows.
        let sizes = merged((0..100).map(|_| batch_of(10, 8)).collect(), 256).await;
        assert_eq!(sizes, [256, 256, 256, 232]);
        // Rows of 1 MiB: at most 8 of them are merged, however many rows a batch may have.
        let sizes = merged((0..20).map(|_| batch_of(1, 1 << 20)).collect(), 8192).await;
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&rows| rows <= 8), "{sizes:?}");
        // A batch of 8 MiB or more passes through whole.
        let sizes = merged(
            vec![batch_of(3, 10), batch_of(16, 1 << 20), batch_of(2, 10)],
            8192,
        )
        .await;
        assert_eq!(sizes, [3, 16, 2]);
    }

    /// A session with both rules and a table `t (id, s)` of `rows` rows of `width` bytes, one
    /// row per batch (as long FASTA records arrive).
    async fn wide_table(rows: usize, width: usize) -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(BoundExchangeBuffers))
            .with_physical_optimizer_rule(Arc::new(NoNestedLoopJoinSpill))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let text = "x".repeat(width);
        let batches = (0..rows)
            .map(|row| {
                let ids = datafusion::arrow::array::Int64Array::from(vec![row as i64]);
                let values = StringArray::from(vec![text.as_str()]);
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(ids), Arc::new(values)])
                    .unwrap()
            })
            .collect();
        let table = datafusion::datasource::MemTable::try_new(schema, vec![batches]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    /// Runs `sql`: its plan, its rows, and the bytes of its largest batch.
    async fn largest_batch(ctx: &SessionContext, sql: &str) -> (String, usize, usize) {
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let again = BoundExchangeBuffers
            .optimize(Arc::clone(&plan), &ConfigOptions::default())
            .unwrap();
        assert_eq!(shown, displayable(again.as_ref()).indent(true).to_string());
        let batches = collect(plan, ctx.task_ctx()).await.unwrap();
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let largest = batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .max()
            .unwrap_or(0);
        (shown, rows, largest)
    }

    #[tokio::test]
    async fn filters_merge_wide_rows_by_bytes() {
        // 400 rows of 100 kB: the filter merged them into batches of up to 8,192 rows (40 MB).
        let ctx = wide_table(400, 100_000).await;
        let (shown, rows, largest) =
            largest_batch(&ctx, "SELECT id, s FROM t WHERE id % 2 = 0").await;
        assert!(shown.contains("FilterExec"), "{shown}");
        assert_eq!(rows, 200);
        assert!(largest < 2 * COALESCE_BYTES, "{largest} bytes\n{shown}");
    }

    #[tokio::test]
    async fn joins_of_wide_rows_make_batches_of_a_few_rows_merged_by_bytes() {
        let ctx = wide_table(150, 10_000).await;
        for (sql, expected) in [
            // Nested loops, hash (all keys equal), cross: 8,192 rows of 20 kB made 160 MB.
            (
                "SELECT a.s, b.s FROM t a JOIN t b ON a.id <> b.id",
                150 * 149,
            ),
            (
                "SELECT a.s, b.s FROM t a JOIN t b ON a.id % 1 = b.id % 1",
                150 * 150,
            ),
            ("SELECT a.s, b.s FROM t a CROSS JOIN t b", 150 * 150),
        ] {
            let (shown, rows, largest) = largest_batch(&ctx, sql).await;
            assert!(shown.contains("join_rows=64"), "{sql}\n{shown}");
            assert_eq!(rows, expected, "{sql}");
            assert!(
                largest < 2 * COALESCE_BYTES,
                "{sql}: {largest} bytes\n{shown}"
            );
        }
        // A join whose output holds only numbers keeps the session's batch size.
        let (shown, rows, _) =
            largest_batch(&ctx, "SELECT a.id, b.id FROM t a JOIN t b ON a.id < b.id").await;
        assert!(!shown.contains("join_rows"), "{shown}");
        assert_eq!(rows, 150 * 149 / 2);
    }

    async fn nested_loop_count(pool_bytes: usize) -> Result<i64> {
        let pool = datafusion::execution::memory_pool::FairSpillPool::new(pool_bytes);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()?;
        assert!(runtime.disk_manager.tmp_files_enabled());
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(NoNestedLoopJoinSpill))
            .build();
        let ctx = SessionContext::new_with_state(state);
        // The build side: 2,000 rows of 1,000 bytes; the probe side: 3,000 numbers.
        let sql = "SELECT count(*) FROM \
                   (SELECT repeat('x', 1000) AS s FROM generate_series(1, 2000)) a \
                   JOIN generate_series(1, 3000) b ON length(a.s) < b.value";
        let frame = ctx.sql(sql).await?;
        let plan = frame.clone().create_physical_plan().await?;
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains("NestedLoopJoinExec"), "{shown}");
        assert_eq!(shown.matches("NoSpillExec").count(), 1, "{shown}");
        assert_eq!(shown.matches("SpillExec").count(), 3, "{shown}");
        let again = NoNestedLoopJoinSpill.optimize(Arc::clone(&plan), &ConfigOptions::default())?;
        assert_eq!(shown, displayable(again.as_ref()).indent(true).to_string());
        let batches = collect(plan, ctx.task_ctx()).await?;
        Ok(batches[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0))
    }

    #[tokio::test]
    async fn a_nested_loop_join_whose_build_side_does_not_fit_is_resources_exhausted() {
        // Each of the 2,000 rows matches the values 1,001 to 3,000.
        assert_eq!(nested_loop_count(64 << 20).await.unwrap(), 2000 * 2000);
        let error = nested_loop_count(64 << 10).await.unwrap_err();
        assert!(
            matches!(error.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{error}"
        );
    }

    #[test]
    fn view_batches_are_sliced_by_the_bytes_they_point_at() {
        use datafusion::arrow::array::{ArrayRef, Int64Array, StringViewArray};
        let big = "A".repeat(3 << 20);
        let rows: Vec<Option<&str>> =
            vec![Some(big.as_str()), Some("short"), Some(big.as_str()), None]
                .into_iter()
                .cycle()
                .take(12)
                .collect();
        let views: ArrayRef = Arc::new(StringViewArray::from(rows));
        let numbers: ArrayRef = Arc::new(Int64Array::from_iter_values(0..12));
        let batch = RecordBatch::try_from_iter([("s", views), ("n", numbers)]).unwrap();
        let slices = view_slices(batch.clone());
        // Two 3 MiB values fit in 8 MiB, a third does not: rows 0-3, 4-7, 8-11.
        let lengths: Vec<usize> = slices.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(lengths, [4, 4, 4]);
        let joined = datafusion::arrow::compute::concat_batches(&batch.schema(), &slices).unwrap();
        assert_eq!(joined, batch);
        // A value larger than the bound is a slice of its own; small ones are not cut.
        let huge = "C".repeat(9 << 20);
        let views: ArrayRef = Arc::new(StringViewArray::from(vec![&*huge, "x", &*huge]));
        let batch = RecordBatch::try_from_iter([("s", views)]).unwrap();
        let lengths: Vec<usize> = view_slices(batch)
            .iter()
            .map(RecordBatch::num_rows)
            .collect();
        assert_eq!(lengths, [1, 1, 1]);
        let small: ArrayRef = Arc::new(StringViewArray::from(vec!["a much longer string"; 100]));
        let batch = RecordBatch::try_from_iter([("s", small)]).unwrap();
        assert_eq!(view_slices(batch).len(), 1);
    }
}
