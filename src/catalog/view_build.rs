//! Join build sides of views collected into one batch that lists each shared buffer once.
//!
//! A hash, nested-loop or cross join collects its build side and concatenates its batches.
//! Arrow's `concat` of view arrays appends every batch's list of data buffers, even when the
//! batches share them: the output of a join whose rows repeat a 30 Mbp record as views (see
//! [`super::view_joins`]) comes in batches of 64 rows that each list the record's buffer, so
//! a second join built on it lists the same buffer once per batch. Everything that judges
//! views by their buffers then goes wrong: the join reserves each listing again, and arrow's
//! coalescer behind it (which finds a batch sparse when its buffers take more than twice the
//! bytes its views point at) copies the rows it finds sparse, record and all. A three-way join
//! over 30 Mbp records peaked at 650 MiB under a 128 MiB limit that way.
//!
//! [`OneBuildBatch`] puts a [`ContextExec`] of [`Change::OneBatch`] under the build side of
//! every such join whose build side holds views: it collects the side (as the join would),
//! with the buffers it holds reserved once each, and hands on one batch whose view columns list
//! each buffer once (`concat_views`); the join's own concatenation of a single batch copies
//! nothing.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericByteViewArray, RecordBatch, RecordBatchOptions,
};
use datafusion::arrow::buffer::{Buffer, ScalarBuffer};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{BinaryViewType, ByteViewType, DataType, StringViewType};
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use futures::StreamExt;

use super::bounded_operators::{Change, ContextExec, context_exec, is_context};

/// The physical optimizer rule that collects the build side (the left input) of hash,
/// nested-loop and cross joins into one batch ([`Change::OneBatch`]) when it holds views.
#[derive(Debug, Default)]
pub struct OneBuildBatch;

impl PhysicalOptimizerRule for OneBuildBatch {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| {
                let collects_left = node.downcast_ref::<HashJoinExec>().is_some()
                    || node.downcast_ref::<NestedLoopJoinExec>().is_some()
                    || node.downcast_ref::<CrossJoinExec>().is_some();
                let mut children: Vec<_> = node.children().into_iter().cloned().collect();
                let Some(build) = children.first_mut() else {
                    return Ok(Transformed::no(node));
                };
                if !collects_left || !has_views(build) || collected(build) {
                    return Ok(Transformed::no(node));
                }
                *build = collecting(Arc::clone(build))?;
                node.replace_children(
                    children,
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                )
                .map(Transformed::yes)
            })?
            .data)
    }

    fn name(&self) -> &str {
        "one_build_batch"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `plan` is collected into one batch, under the contexts the other rules put around a
/// join's inputs.
fn collected(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if is_context(plan, Change::OneBatch) {
        return true;
    }
    match (plan.downcast_ref::<ContextExec>(), plan.children().first()) {
        (Some(_), Some(input)) => collected(input),
        _ => false,
    }
}

/// `plan` collected into one batch: the first operator under the contexts the other rules put
/// around a join's inputs (which find them there) is wrapped.
fn collecting(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let input = match plan.downcast_ref::<ContextExec>() {
        Some(_) => plan.children().first().map(|input| Arc::clone(input)),
        None => None,
    };
    match input {
        Some(input) => plan.replace_children(
            vec![collecting(input)?],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        ),
        None => Ok(context_exec(plan, Change::OneBatch)),
    }
}

fn has_views(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.schema()
        .fields()
        .iter()
        .any(|field| matches!(field.data_type(), DataType::Utf8View | DataType::BinaryView))
}

/// The batches of `input` as one batch (none for no rows), holding what they hold reserved in
/// `reservation` meanwhile: each view buffer once, everything else as its memory size.
pub(super) async fn one_batch(
    mut input: SendableRecordBatchStream,
    reservation: MemoryReservation,
) -> Result<Option<RecordBatch>> {
    let schema = input.schema();
    let mut batches = Vec::new();
    let mut counted = HashSet::new();
    let mut bytes = 0;
    while let Some(batch) = input.next().await {
        let batch = batch?;
        bytes += unseen_bytes(&batch, &mut counted);
        reservation.try_resize(bytes)?;
        batches.push(batch);
    }
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Ok(None);
    }
    let columns = (0..schema.fields().len())
        .map(|index| {
            let arrays: Vec<&dyn Array> =
                batches.iter().map(|b| b.column(index).as_ref()).collect();
            match schema.field(index).data_type() {
                DataType::Utf8View => Ok(concat_views::<StringViewType>(&arrays)),
                DataType::BinaryView => Ok(concat_views::<BinaryViewType>(&arrays)),
                _ => concat(&arrays),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(Some(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?))
}

/// Bytes of `batch` not counted yet: view columns' data buffers not in `counted` (which they
/// are added to) and their views and nulls; other columns' whole memory.
fn unseen_bytes(batch: &RecordBatch, counted: &mut HashSet<(usize, usize)>) -> usize {
    let mut unseen = |buffers: &[Buffer]| -> usize {
        buffers
            .iter()
            .filter(|buffer| counted.insert(buffer_key(buffer)))
            .map(Buffer::capacity)
            .sum()
    };
    batch
        .columns()
        .iter()
        .map(|column| {
            let nulls = column.nulls().map_or(0, |nulls| nulls.buffer().capacity());
            match column.data_type() {
                DataType::Utf8View => {
                    let array = column.as_string_view();
                    array.views().inner().capacity() + nulls + unseen(array.data_buffers())
                }
                DataType::BinaryView => {
                    let array = column.as_binary_view();
                    array.views().inner().capacity() + nulls + unseen(array.data_buffers())
                }
                _ => column.get_array_memory_size(),
            }
        })
        .sum()
}

/// Where a buffer's bytes are: buffers with the same key hold the same bytes.
fn buffer_key(buffer: &Buffer) -> (usize, usize) {
    (buffer.as_ptr() as usize, buffer.len())
}

/// `arrays` (view arrays of type `T`) as one, listing each data buffer once however many of the
/// arrays list it; views and nulls are copied, the bytes they point at are not.
pub(super) fn concat_views<T: ByteViewType>(arrays: &[&dyn Array]) -> ArrayRef {
    let rows = arrays.iter().map(|array| array.len()).sum();
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut listed: HashMap<(usize, usize), u32> = HashMap::new();
    let mut views = Vec::with_capacity(rows);
    let mut nulls = NullBufferBuilder::new(rows);
    for array in arrays {
        let array = array.as_byte_view::<T>();
        let moved: Vec<u32> = array
            .data_buffers()
            .iter()
            .map(|buffer| {
                *listed.entry(buffer_key(buffer)).or_insert_with(|| {
                    buffers.push(buffer.clone());
                    (buffers.len() - 1) as u32
                })
            })
            .collect();
        views.extend(array.views().iter().map(|&view| {
            // A view's low 32 bits are its length; up to 12 bytes live in the view itself,
            // longer ones name their buffer in bits 64..96.
            if view as u32 <= 12 {
                return view;
            }
            let index = (view >> 64) as u32;
            match moved.get(index as usize) {
                Some(&to) => (view & !(u128::from(u32::MAX) << 64)) | (u128::from(to) << 64),
                // Only a null's view can name no buffer: make it an empty one.
                None => 0,
            }
        }));
        match array.nulls() {
            Some(array_nulls) => nulls.append_buffer(array_nulls),
            None => nulls.append_n_non_nulls(array.len()),
        }
    }
    // SAFETY: every view is the view of a valid array of `T`, now naming the same buffer (the
    // same bytes) at its new index, or an empty inline view in place of a null's view; the
    // nulls are the arrays' nulls in order.
    let array = unsafe {
        GenericByteViewArray::<T>::new_unchecked(ScalarBuffer::from(views), buffers, nulls.finish())
    };
    Arc::new(array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringViewArray, StringViewBuilder};

    fn long(text: &str) -> String {
        text.repeat(20)
    }

    #[test]
    fn concatenated_views_list_each_shared_buffer_once() {
        let mut builder = StringViewBuilder::new();
        for value in [
            Some(long("a")),
            None,
            Some("short".to_string()),
            Some(long("b")),
        ] {
            builder.append_option(value);
        }
        let first = builder.finish();
        let mut builder = StringViewBuilder::new();
        builder.append_value(long("c"));
        let second = builder.finish();
        // Slices of one array share its buffer; the second array has a buffer of its own.
        let pieces = [
            first.slice(0, 2),
            first.slice(2, 2),
            second.clone(),
            first.slice(3, 1),
        ];
        let arrays: Vec<&dyn Array> = pieces.iter().map(|a| a as &dyn Array).collect();
        let joined = concat_views::<StringViewType>(&arrays);
        let joined = joined.as_string_view();
        assert_eq!(joined.data_buffers().len(), 2);
        let expected: StringViewArray = [
            Some(long("a")),
            None,
            Some("short".into()),
            Some(long("b")),
            Some(long("c")),
            Some(long("b")),
        ]
        .into_iter()
        .collect();
        assert_eq!(joined, &expected);
        // Arrow's own concatenation lists the first array's buffer three times.
        let arrow = concat(&arrays).unwrap();
        assert_eq!(arrow.as_string_view().data_buffers().len(), 4);
        assert_eq!(arrow.as_string_view(), &expected);
    }
}
