//! The record batch under construction: one growable Utf8 column per selected field, and pooled value buffers.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::SchemaRef;

use crate::fasta::FastaProblem;

/// Value buffers kept for reuse per column; enough for the batch being built, the one in
/// the channel and the one being consumed.
const POOL_BUFFERS: usize = 4;

/// Rows a first batch makes room for; later batches size themselves on the previous one.
const INITIAL_ROWS: usize = 1024;

/// Index of each column in the FASTA file schema ([`crate::fasta::fasta_schema`]).
const ID: usize = 0;
const DESCRIPTION: usize = 1;
const SEQUENCE: usize = 2;
const FILE_COLUMNS: usize = 3;

/// Value buffers handed back by dropped batches, so later batches reuse memory that is
/// already mapped: faulting in fresh pages costs more than parsing the bytes.
#[derive(Debug)]
struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    /// Larger buffers (a single huge record) are freed rather than kept.
    max_capacity: usize,
}

impl BufferPool {
    fn new(max_capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::new()),
            max_capacity,
        })
    }

    /// An empty buffer with room for at least `capacity` bytes.
    fn take(&self, capacity: usize) -> Vec<u8> {
        // A poisoned pool only costs the reuse: allocate instead.
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        match reused {
            Some(mut bytes) => {
                bytes.clear();
                bytes.reserve(capacity);
                bytes
            }
            None => Vec::with_capacity(capacity),
        }
    }

    fn give_back(&self, bytes: Vec<u8>) {
        if bytes.capacity() == 0 || bytes.capacity() > self.max_capacity {
            return;
        }
        if let Ok(mut free) = self.free.lock()
            && free.len() < POOL_BUFFERS
        {
            free.push(bytes);
        }
    }
}

/// Owner of an Arrow buffer's memory that returns it to its pool when the last batch using it is dropped.
struct PooledBytes {
    bytes: Vec<u8>,
    pool: Weak<BufferPool>,
}

impl Drop for PooledBytes {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(std::mem::take(&mut self.bytes));
        }
    }
}

/// Wraps `bytes` as an Arrow buffer whose memory goes back to `pool` when dropped.
fn pooled_buffer(bytes: Vec<u8>, pool: &Arc<BufferPool>) -> Buffer {
    let len = bytes.len();
    let ptr = NonNull::from(bytes.as_slice()).cast::<u8>();
    let owner = Arc::new(PooledBytes {
        bytes,
        pool: Arc::downgrade(pool),
    });
    // SAFETY: `ptr` points at the `len` initialised bytes of the Vec now owned by `owner`.
    // Moving a Vec does not move its heap memory, and `owner` neither writes nor frees it
    // until the last `Buffer` holding `owner` is dropped.
    unsafe { Buffer::from_custom_allocation(ptr, len, owner) }
}

/// Which file columns a scan produces, in output order (indices into [`crate::fasta::fasta_schema`]).
#[derive(Debug, Clone)]
pub struct ColumnSelection {
    indices: Vec<usize>,
    selected: [bool; FILE_COLUMNS],
}

impl ColumnSelection {
    /// Selects the given file-schema column indices (0 = id, 1 = description, 2 = sequence);
    /// unknown indices are ignored.
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

    /// Selects all three columns.
    #[cfg(test)]
    pub fn all() -> Self {
        Self::new(&[ID, DESCRIPTION, SEQUENCE])
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
    /// Start of each value and the end of the last finished one: never empty, never decreasing,
    /// never past `values.len()`.
    offsets: Vec<i32>,
    /// The bytes of every value, the unfinished one last.
    pub(super) values: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl Utf8Column {
    fn new(pool_max_capacity: usize) -> Self {
        Self {
            offsets: vec![0],
            values: Vec::new(),
            pool: BufferPool::new(pool_max_capacity),
        }
    }

    /// Length of the finished values; the unfinished one starts here.
    fn finished_len(&self) -> usize {
        let last = self.offsets[self.offsets.len() - 1];
        debug_assert!(last >= 0 && last as usize <= self.values.len());
        last as usize
    }

    /// Ends the current value.
    #[inline]
    fn finish_value(&mut self) -> Result<(), FastaProblem> {
        let end = i32::try_from(self.values.len()).map_err(|_| FastaProblem::SequenceTooLong)?;
        self.offsets.push(end);
        Ok(())
    }

    /// Hands out the finished values and keeps the unfinished one for the next batch.
    fn take(&mut self, rows_hint: usize, bytes_hint: usize) -> (Vec<i32>, Vec<u8>) {
        let finished = self.finished_len();
        let tail = &self.values[finished..];
        let mut next_values = self.pool.take(bytes_hint.max(tail.len() * 2));
        next_values.extend_from_slice(tail);
        self.values.truncate(finished);
        let mut next_offsets = Vec::with_capacity(rows_hint + 1);
        next_offsets.push(0);
        (
            std::mem::replace(&mut self.offsets, next_offsets),
            std::mem::replace(&mut self.values, next_values),
        )
    }

    /// Takes the finished values as an Arrow array of `rows` values, pooling the value buffer.
    fn take_array(
        &mut self,
        rows: usize,
        rows_hint: usize,
        bytes_hint: usize,
        nulls: Option<NullBuffer>,
    ) -> Result<ArrayRef, InconsistentBatch> {
        let (offsets, values) = self.take(rows_hint, bytes_hint);
        let values = pooled_buffer(values, &self.pool);
        utf8_array(rows, offsets, values, nulls)
    }
}

/// A batch whose parts do not fit together: a bug in the reader, not a problem of the input.
#[derive(Debug)]
pub(super) struct InconsistentBatch(pub(super) String);

/// Builds a `StringArray` from parts the reader produced, checking what `new_unchecked` relies on.
fn utf8_array(
    rows: usize,
    offsets: Vec<i32>,
    values: Buffer,
    nulls: Option<NullBuffer>,
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
    // SAFETY: the offsets were checked just above to be monotonic, start at 0 and stay
    // within `values`; every value is either a header part taken from a `str` validated by
    // `header_problem` and split at ASCII bytes, or sequence bytes that the reader's pending
    // check found to be printable ASCII. So `StringArray::try_new` would succeed.
    let array = unsafe {
        let offsets = OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets));
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
    /// An empty batch of `selection`; `batch_rows` and `batch_bytes` size its buffers.
    pub(super) fn new(selection: ColumnSelection, batch_rows: usize, batch_bytes: usize) -> Self {
        let initial_rows = batch_rows.min(INITIAL_ROWS);
        let pool_max_capacity = batch_bytes.saturating_mul(2);
        Self {
            selection,
            id: Utf8Column::new(pool_max_capacity),
            description: Utf8Column::new(pool_max_capacity),
            description_nulls: NullBufferBuilder::new(initial_rows),
            description_is_null: true,
            sequence: Utf8Column::new(pool_max_capacity),
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

    /// Header bytes held (id and description).
    #[inline]
    pub(super) fn header_bytes(&self) -> usize {
        self.id.values.len() + self.description.values.len()
    }

    /// String bytes held in all columns, the open record's included.
    #[inline]
    pub(super) fn bytes_used(&self) -> usize {
        self.header_bytes() + self.sequence.values.len()
    }

    /// Opens a record with the two parts of its header; `description` is empty when absent.
    #[inline]
    pub(super) fn open_record(&mut self, id: &[u8], description: &[u8]) {
        if self.selection.selected[ID] {
            self.id.values.extend_from_slice(id);
        }
        self.description_is_null = description.is_empty();
        if self.selection.selected[DESCRIPTION] {
            self.description.values.extend_from_slice(description);
        }
        self.record_open = true;
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
    ) -> Result<RecordBatch, InconsistentBatch> {
        let rows = self.rows;
        let rows_hint = self.last_rows.max(rows).min(batch_rows);
        let mut arrays: [Option<ArrayRef>; FILE_COLUMNS] = [None, None, None];
        for index in [ID, DESCRIPTION, SEQUENCE] {
            if !self.selection.selected[index] {
                continue;
            }
            let bytes_hint = self.last_bytes[index].min(batch_bytes);
            let (column, nulls) = match index {
                ID => (&mut self.id, None),
                DESCRIPTION => (&mut self.description, self.description_nulls.finish()),
                _ => (&mut self.sequence, None),
            };
            // The values handed out are what the finished records hold.
            self.last_bytes[index] = column.finished_len();
            arrays[index] = Some(column.take_array(rows, rows_hint, bytes_hint, nulls)?);
        }
        self.last_rows = rows.max(1);
        self.rows = 0;

        let output = self
            .selection
            .indices
            .iter()
            .map(|&i| arrays[i].clone())
            .collect::<Option<Vec<ArrayRef>>>()
            .ok_or_else(|| InconsistentBatch("a selected column was not built".to_owned()))?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(Arc::clone(schema), output, &options)
            .map_err(|e| InconsistentBatch(e.to_string()))
    }
}
