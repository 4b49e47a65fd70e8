//! The record batch under construction: one growable Utf8 column per selected field, its buffers reserved in the scan's memory.

use std::ptr::NonNull;
use std::sync::Arc;

use datafusion::arrow::alloc::Allocation;
use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::SchemaRef;

use super::memory::{
    Handoff, InBatch, OutOfMemory, SPARE_COLUMNS, ScanMemory, SpareOnDrop, TrackedVec,
};
use crate::fasta::FastaProblem;

/// Rows a first batch makes room for; later batches size themselves on the previous one.
const INITIAL_ROWS: usize = 1024;

/// Index of each column in the file schema ([`crate::fasta::fasta_schema`], and
/// [`crate::fasta::fastq_schema`] which adds `quality`).
const ID: usize = 0;
const DESCRIPTION: usize = 1;
const SEQUENCE: usize = 2;
const QUALITY: usize = 3;
const FILE_COLUMNS: usize = 4;
const _: () = assert!(FILE_COLUMNS == SPARE_COLUMNS);

/// Hands `buffer` to the Arrow buffer of a batch; `owner` wraps it into what frees it when the
/// last batch using it is dropped.
fn batch_buffer<T: Copy, O: Allocation + 'static>(
    buffer: TrackedVec<T>,
    owner: impl FnOnce(TrackedVec<T>) -> O,
) -> Buffer {
    let len = std::mem::size_of_val::<[T]>(&buffer);
    let ptr = NonNull::from(&buffer[..]).cast::<u8>();
    let owner = Arc::new(owner(buffer));
    // SAFETY: `ptr` points at the `len` initialised bytes of the heap memory of `buffer`, now
    // held by `owner` (moving a Vec does not move its heap memory). The owner neither writes
    // nor frees that memory until the last `Buffer` holding it is dropped.
    unsafe { Buffer::from_custom_allocation(ptr, len, owner) }
}

/// Which file columns a scan produces, in output order (indices into the file schema).
#[derive(Debug, Clone)]
pub struct ColumnSelection {
    indices: Vec<usize>,
    selected: [bool; FILE_COLUMNS],
}

impl ColumnSelection {
    /// Selects the given file-schema column indices (0 = id, 1 = description, 2 = sequence,
    /// 3 = quality); unknown indices are ignored.
    pub fn new(indices: &[usize]) -> Self {
        let indices: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| i < FILE_COLUMNS)
            .collect();
        let mut selected = [false; FILE_COLUMNS];
        for &i in &indices {
            selected[i] = true;
        }
        Self { indices, selected }
    }

    /// Selects the three FASTA columns.
    #[cfg(test)]
    pub fn all() -> Self {
        Self::new(&[ID, DESCRIPTION, SEQUENCE])
    }

    /// Selects the four FASTQ columns.
    #[cfg(test)]
    pub fn all_fastq() -> Self {
        Self::new(&[ID, DESCRIPTION, SEQUENCE, QUALITY])
    }

    /// True when the scan produces the sequence column.
    #[inline]
    pub(super) fn sequence(&self) -> bool {
        self.selected[SEQUENCE]
    }
}

/// Growable Utf8 column whose last, possibly unfinished, value is `values[finished_len()..]`.
#[derive(Debug)]
pub(super) struct Utf8Column {
    /// Index of the column in the file schema; keys its spare value buffers.
    column: usize,
    /// Start of each value and the end of the last finished one: never empty, never decreasing,
    /// never past `values.len()`.
    offsets: TrackedVec<i32>,
    /// The bytes of every value, the unfinished one last.
    pub(super) values: TrackedVec<u8>,
    memory: ScanMemory,
}

impl Utf8Column {
    fn new(column: usize, memory: &ScanMemory) -> Self {
        let mut offsets = TrackedVec::new(memory);
        // The first offset of an empty column is counted like any growth, without a limit:
        // the smallest step is far below any pool a server runs with.
        offsets.push_reserved(0);
        Self {
            column,
            offsets,
            values: TrackedVec::new(memory),
            memory: memory.clone(),
        }
    }

    /// Length of the finished values; the unfinished one starts here.
    fn finished_len(&self) -> usize {
        let last = self.offsets[self.offsets.len() - 1];
        debug_assert!(last >= 0 && last as usize <= self.values.len());
        last as usize
    }

    /// Makes room for the end offset of the value being built, so [`Self::finish_value`]
    /// needs no memory.
    #[inline]
    fn reserve_value(&mut self) -> Result<(), OutOfMemory> {
        self.offsets.reserve(1)
    }

    /// Ends the current value; its offset slot was reserved by [`Self::reserve_value`].
    #[inline]
    fn finish_value(&mut self) -> Result<(), FastaProblem> {
        let end = i32::try_from(self.values.len()).map_err(|_| FastaProblem::SequenceTooLong)?;
        self.offsets.push_reserved(end);
        Ok(())
    }

    /// Hands out the finished values and keeps the unfinished one for the next batch.
    fn take(
        &mut self,
        rows_hint: usize,
        bytes_hint: usize,
    ) -> Result<(TrackedVec<i32>, TrackedVec<u8>), OutOfMemory> {
        let finished = self.finished_len();
        let tail_len = self.values.len() - finished;
        let mut next_offsets = TrackedVec::with_capacity(rows_hint + 1, &self.memory)?;
        next_offsets.push(0)?;
        let mut next_values = self
            .memory
            .take_spare(self.column, bytes_hint.max(tail_len * 2))?;
        next_values.extend_from_slice(&self.values[finished..])?;
        self.values.truncate(finished);
        Ok((
            std::mem::replace(&mut self.offsets, next_offsets),
            std::mem::replace(&mut self.values, next_values),
        ))
    }
}

/// Why a batch could not be handed out.
#[derive(Debug)]
pub(super) enum BatchError {
    /// The buffers of the next batch do not fit in the memory pool.
    OutOfMemory(OutOfMemory),
    /// See [`InconsistentBatch`].
    Inconsistent(InconsistentBatch),
}

impl From<OutOfMemory> for BatchError {
    fn from(error: OutOfMemory) -> Self {
        Self::OutOfMemory(error)
    }
}

/// A batch whose parts do not fit together: a bug in the reader, not a problem of the input.
#[derive(Debug)]
pub(super) struct InconsistentBatch(pub(super) String);

/// Builds a `StringArray` from parts the reader produced, checking what `new_unchecked` relies
/// on; `values` becomes a spare of `column` when the array is dropped.
fn utf8_array(
    rows: usize,
    offsets: TrackedVec<i32>,
    values: TrackedVec<u8>,
    column: usize,
    nulls: Option<NullBuffer>,
    handoff: &Arc<Handoff>,
) -> Result<ArrayRef, InconsistentBatch> {
    let well_formed = offsets.len() == rows + 1
        && offsets.first() == Some(&0)
        && offsets.windows(2).all(|w| w[0] <= w[1])
        && offsets
            .last()
            .is_some_and(|&last| usize::try_from(last).is_ok_and(|l| l <= values.len()))
        && nulls.as_ref().is_none_or(|n| n.len() == rows);
    if !well_formed {
        return Err(InconsistentBatch(
            "inconsistent FASTA batch offsets".to_owned(),
        ));
    }
    let offsets_len = offsets.len();
    let offsets = batch_buffer(offsets, |offsets| InBatch::new(offsets, handoff));
    let values = batch_buffer(values, |values| SpareOnDrop::new(values, column, handoff));
    // SAFETY: the offsets were checked just above to be monotonic, start at 0 and stay
    // within `values`; every value is either a header part taken from a `str` validated by
    // `header_problem` and split at ASCII bytes, or sequence bytes that the reader's pending
    // check found to be printable ASCII. So `StringArray::try_new` would succeed. The offsets
    // buffer comes from a `Vec<i32>`, so it is aligned for `i32`.
    let array = unsafe {
        let offsets = OffsetBuffer::new_unchecked(ScalarBuffer::new(offsets, 0, offsets_len));
        StringArray::new_unchecked(offsets, values, nulls)
    };
    Ok(Arc::new(array))
}

/// The batch being built: the selected columns, the records finished so far, and the sizes of
/// the previous batch (capacity hints for the next one).
#[derive(Debug)]
pub(super) struct BatchBuilder {
    selection: ColumnSelection,
    pub(super) id: Utf8Column,
    pub(super) description: Utf8Column,
    description_nulls: NullBufferBuilder,
    /// The open record's header has no description.
    description_is_null: bool,
    pub(super) sequence: Utf8Column,
    pub(super) quality: Utf8Column,
    /// Finished records.
    rows: usize,
    /// A header was read and its record is not finished yet.
    record_open: bool,
    /// Rows of the previous batch (at least 1).
    last_rows: usize,
    /// Value bytes of each column in the previous batch, by file column index.
    last_bytes: [usize; FILE_COLUMNS],
}

impl BatchBuilder {
    /// An empty batch of `selection` whose buffers are reserved in `memory`; `batch_rows`
    /// sizes its first buffers.
    pub(super) fn new(selection: ColumnSelection, batch_rows: usize, memory: &ScanMemory) -> Self {
        let initial_rows = batch_rows.min(INITIAL_ROWS);
        Self {
            selection,
            id: Utf8Column::new(ID, memory),
            description: Utf8Column::new(DESCRIPTION, memory),
            description_nulls: NullBufferBuilder::new(initial_rows),
            description_is_null: true,
            sequence: Utf8Column::new(SEQUENCE, memory),
            quality: Utf8Column::new(QUALITY, memory),
            rows: 0,
            record_open: false,
            last_rows: initial_rows,
            last_bytes: [0; FILE_COLUMNS],
        }
    }

    /// Finished records in this batch.
    #[inline]
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// True between a header and the end of its record.
    #[inline]
    pub(super) fn record_open(&self) -> bool {
        self.record_open
    }

    /// True when sequence bytes are kept (the sequence column is selected).
    #[inline]
    pub(super) fn stores_sequence(&self) -> bool {
        self.selection.sequence()
    }

    /// True when quality bytes are kept (the quality column is selected).
    #[inline]
    pub(super) fn stores_quality(&self) -> bool {
        self.selection.selected[QUALITY]
    }

    /// Header bytes held (id and description).
    #[inline]
    pub(super) fn header_bytes(&self) -> usize {
        self.id.values.len() + self.description.values.len()
    }

    /// String bytes held in all columns, the open record's included.
    #[inline]
    pub(super) fn bytes_used(&self) -> usize {
        self.header_bytes() + self.sequence.values.len() + self.quality.values.len()
    }

    /// Opens a record with the two parts of its header; `description` is empty when absent.
    /// Reserves what finishing the record needs besides its sequence bytes.
    #[inline]
    pub(super) fn open_record(&mut self, id: &[u8], description: &[u8]) -> Result<(), OutOfMemory> {
        if self.selection.selected[ID] {
            self.id.values.extend_from_slice(id)?;
            self.id.reserve_value()?;
        }
        self.description_is_null = description.is_empty();
        if self.selection.selected[DESCRIPTION] {
            self.description.values.extend_from_slice(description)?;
            self.description.reserve_value()?;
        }
        if self.selection.selected[SEQUENCE] {
            self.sequence.reserve_value()?;
        }
        if self.selection.selected[QUALITY] {
            self.quality.reserve_value()?;
        }
        self.record_open = true;
        Ok(())
    }

    /// Ends the open record, making it a row.
    #[inline]
    pub(super) fn finish_record(&mut self) -> Result<(), FastaProblem> {
        if self.selection.selected[ID] {
            self.id.finish_value()?;
        }
        if self.selection.selected[DESCRIPTION] {
            self.description.finish_value()?;
            self.description_nulls.append(!self.description_is_null);
        }
        if self.selection.selected[SEQUENCE] {
            self.sequence.finish_value()?;
        }
        if self.selection.selected[QUALITY] {
            self.quality.finish_value()?;
        }
        self.rows += 1;
        self.record_open = false;
        Ok(())
    }

    /// Hands out the finished records as a batch of `schema`; an open record stays for the
    /// next batch. `batch_rows` and `batch_bytes` cap the buffers reserved for that batch.
    pub(super) fn take(
        &mut self,
        schema: &SchemaRef,
        batch_rows: usize,
        batch_bytes: usize,
    ) -> Result<(RecordBatch, Arc<Handoff>), BatchError> {
        let rows = self.rows;
        let rows_hint = self.last_rows.max(rows).min(batch_rows);
        // Every buffer of the next batch is reserved before any of this batch goes downstream:
        // a reader short of memory waits only for batches that are really downstream.
        let mut parts: [Option<(TrackedVec<i32>, TrackedVec<u8>)>; FILE_COLUMNS] =
            [None, None, None, None];
        for index in [ID, DESCRIPTION, SEQUENCE, QUALITY] {
            if !self.selection.selected[index] {
                continue;
            }
            let bytes_hint = self.last_bytes[index].min(batch_bytes);
            let column = match index {
                ID => &mut self.id,
                DESCRIPTION => &mut self.description,
                SEQUENCE => &mut self.sequence,
                _ => &mut self.quality,
            };
            // The values handed out are what the finished records hold.
            self.last_bytes[index] = column.finished_len();
            parts[index] = Some(column.take(rows_hint, bytes_hint)?);
        }
        let bytes = parts
            .iter()
            .flatten()
            .map(|(offsets, values)| offsets.reserved_bytes() + values.reserved_bytes())
            .sum();
        let handoff = Handoff::new(&self.sequence.memory, bytes);
        let mut arrays: [Option<ArrayRef>; FILE_COLUMNS] = [None, None, None, None];
        for (index, part) in parts.into_iter().enumerate() {
            let Some((offsets, values)) = part else {
                continue;
            };
            let nulls = match index {
                DESCRIPTION => self.description_nulls.finish(),
                _ => None,
            };
            let array = utf8_array(rows, offsets, values, index, nulls, &handoff);
            arrays[index] = Some(array.map_err(BatchError::Inconsistent)?);
        }
        self.last_rows = rows.max(1);
        self.rows = 0;

        let output = self
            .selection
            .indices
            .iter()
            .map(|&i| arrays[i].clone())
            .collect::<Option<Vec<ArrayRef>>>()
            .ok_or_else(|| {
                BatchError::Inconsistent(InconsistentBatch(
                    "a selected column was not built".to_owned(),
                ))
            })?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(Arc::clone(schema), output, &options)
            .map_err(|e| BatchError::Inconsistent(InconsistentBatch(e.to_string())))?;
        Ok((batch, handoff))
    }
}

impl Drop for BatchBuilder {
    fn drop(&mut self) {
        // Batches still downstream free their buffers when dropped instead of keeping them.
        self.sequence.memory.stop_keeping_spares();
    }
}
