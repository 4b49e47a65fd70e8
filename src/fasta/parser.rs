//! Block parser that turns FASTA text into Arrow record batches without per-record allocation.
//!
//! The reader fills one large reusable buffer from its input, walks it line by line with
//! `memchr`, and appends sequence bytes straight into the values buffer of the Arrow array it
//! is building. Sequence bytes are validated in bulk on that values buffer (one vectorised
//! pass per block), so the final `StringArray` can be built without a second UTF-8 check.
//! Only when validation fails does the reader walk the block again to find the line.

use std::io::{ErrorKind, Read};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::SchemaRef;
use memchr::{memchr, memchr2};

use super::error::{FastaError, FastaErrorLocation, FastaProblem};

/// Size of the reusable input block. Small enough to stay in L2 cache between the `read`
/// that fills it and the copy out of it, large enough that syscalls do not matter.
const BLOCK_SIZE: usize = 1 << 20;

/// Longest header line accepted; guards memory against binary input without newlines.
pub const MAX_HEADER_BYTES: usize = 64 << 20;

/// Largest byte count of one Arrow Utf8 array (32-bit offsets).
const MAX_UTF8_BYTES: usize = i32::MAX as usize;

/// Value buffers kept for reuse per column; enough for the batch being built, the one in
/// the channel and the one being consumed.
const POOL_BUFFERS: usize = 4;

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

/// Which file columns a scan produces, in output order (indices into [`super::fasta_schema`]).
#[derive(Debug, Clone)]
pub struct ColumnSelection {
    indices: Vec<usize>,
    id: bool,
    description: bool,
    sequence: bool,
}

impl ColumnSelection {
    /// Selects the given file-schema column indices (0 = id, 1 = description, 2 = sequence);
    /// unknown indices are ignored.
    pub fn new(indices: &[usize]) -> Self {
        let indices: Vec<usize> = indices.iter().copied().filter(|&i| i < 3).collect();
        Self {
            id: indices.contains(&0),
            description: indices.contains(&1),
            sequence: indices.contains(&2),
            indices,
        }
    }

    /// Selects all three columns.
    #[cfg(test)]
    pub fn all() -> Self {
        Self::new(&[0, 1, 2])
    }
}

/// The part of a file one reader is responsible for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanBounds {
    /// The input starts at the beginning of the text; read every record.
    Whole,
    /// Read the records whose header `>` lies in `[start, end)` of the (uncompressed) file,
    /// finishing the last one past `end`. The input starts at byte `start - 1` (or 0).
    Range {
        /// First byte owned by this scan.
        start: u64,
        /// First byte no longer owned by this scan.
        end: u64,
    },
}

/// Settings of one [`FastaBatchReader`].
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// File name used in error messages.
    pub path: String,
    /// Output schema; must match `columns`.
    pub schema: SchemaRef,
    /// Columns to produce.
    pub columns: ColumnSelection,
    /// Most rows per batch.
    pub batch_rows: usize,
    /// String bytes after which a batch closes.
    pub batch_bytes: usize,
    /// Which records to read.
    pub bounds: ScanBounds,
}

/// Growable Utf8 column whose last, possibly unfinished, value is `values[offsets.last()..]`.
#[derive(Debug)]
struct Utf8Column {
    offsets: Vec<i32>,
    values: Vec<u8>,
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

    fn last_offset(&self) -> usize {
        self.offsets
            .last()
            .map_or(0, |&offset| usize::try_from(offset).unwrap_or(0))
    }

    /// Ends the current value.
    fn finish_value(&mut self) -> Result<(), FastaProblem> {
        let end = i32::try_from(self.values.len()).map_err(|_| FastaProblem::SequenceTooLong)?;
        self.offsets.push(end);
        Ok(())
    }

    /// Hands out the finished values and keeps the unfinished one for the next batch.
    fn take(&mut self, rows_hint: usize, bytes_hint: usize) -> (Vec<i32>, Vec<u8>) {
        let finished = self.last_offset().min(self.values.len());
        let tail = self.values.get(finished..).unwrap_or_default();
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Looking for the first line that starts with `>` (range scans only).
    Resync,
    /// Parsing lines.
    Lines,
    /// Input is exhausted or the range is done; the last batch is still to be handed out.
    Draining,
    /// Nothing more to hand out.
    Finished,
}

/// Outcome of parsing what the buffer currently holds.
enum Parsed {
    /// A batch is complete.
    Batch(RecordBatch),
    /// The buffer needs more input.
    NeedInput,
}

/// Streaming FASTA reader producing record batches of the configured columns.
pub struct FastaBatchReader<R> {
    input: R,
    config: ReaderConfig,
    phase: Phase,

    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    eof: bool,

    /// 1-based number of the line containing `pos` (meaningful when `line_known`).
    line: u64,
    /// False for range scans that started mid-file: errors then name byte offsets.
    line_known: bool,
    at_line_start: bool,
    in_record: bool,

    id: Utf8Column,
    description: Utf8Column,
    description_nulls: NullBufferBuilder,
    description_is_null: bool,
    sequence: Utf8Column,
    rows: usize,

    /// Sequence bytes before this index have been validated.
    checked_values: usize,
    /// Where in `buf` the unvalidated sequence bytes came from, and the line state there.
    checked_src: usize,
    checked_line: u64,
    checked_at_line_start: bool,

    /// Capacity hints from the previous batch.
    last_rows: usize,
    last_bytes: [usize; 3],
}

impl<R: Read> FastaBatchReader<R> {
    /// Creates a reader over `input`, which starts at the beginning of the text, or at byte
    /// `start - 1` for a [`ScanBounds::Range`] with `start > 0`.
    pub fn new(input: R, config: ReaderConfig) -> Self {
        let (phase, buf_offset, line_known) = match config.bounds {
            ScanBounds::Whole | ScanBounds::Range { start: 0, .. } => (Phase::Lines, 0, true),
            ScanBounds::Range { start, .. } => (Phase::Resync, start - 1, false),
        };
        let batch_rows = config.batch_rows.max(1);
        let initial_rows = batch_rows.min(1024);
        let pool_max_capacity = config.batch_bytes.max(1).saturating_mul(2);
        Self {
            input,
            phase,
            buf: vec![0; BLOCK_SIZE],
            pos: 0,
            filled: 0,
            buf_offset,
            eof: false,
            line: 1,
            line_known,
            at_line_start: true,
            in_record: false,
            id: Utf8Column::new(pool_max_capacity),
            description: Utf8Column::new(pool_max_capacity),
            description_nulls: NullBufferBuilder::new(initial_rows),
            description_is_null: true,
            sequence: Utf8Column::new(pool_max_capacity),
            rows: 0,
            checked_values: 0,
            checked_src: 0,
            checked_line: 1,
            checked_at_line_start: true,
            last_rows: initial_rows,
            last_bytes: [0; 3],
            config: ReaderConfig {
                batch_rows,
                batch_bytes: config.batch_bytes.max(1),
                ..config
            },
        }
    }

    /// Returns the next batch, `None` at the end, or the first error found.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, FastaError> {
        loop {
            match self.phase {
                Phase::Finished => return Ok(None),
                Phase::Draining => {
                    self.phase = Phase::Finished;
                    if self.rows == 0 {
                        return Ok(None);
                    }
                    return self.take_batch().map(Some);
                }
                Phase::Resync | Phase::Lines => {}
            }
            if self.pos >= self.filled {
                if self.eof {
                    self.end_of_input()?;
                } else {
                    self.refill()?;
                }
                continue;
            }
            match self.parse()? {
                Parsed::Batch(batch) => return Ok(Some(batch)),
                Parsed::NeedInput if self.phase != Phase::Lines && self.phase != Phase::Resync => {}
                Parsed::NeedInput if !self.eof => self.refill()?,
                // At end of input every line parser consumes what is left, so this means the
                // parser stopped without progress; fail instead of spinning.
                Parsed::NeedInput if self.pos < self.filled => {
                    return Err(FastaError::Io {
                        path: self.config.path.clone(),
                        source: std::io::Error::other(
                            "internal error: FASTA parser made no progress",
                        ),
                    });
                }
                Parsed::NeedInput => {}
            }
        }
    }

    fn end_of_input(&mut self) -> Result<(), FastaError> {
        if self.in_record {
            self.finish_record()?;
        }
        self.phase = Phase::Draining;
        Ok(())
    }

    /// Moves the unparsed tail to the front of the buffer and reads more input after it.
    fn refill(&mut self) -> Result<(), FastaError> {
        self.validate_pending()?;
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.buf_offset += self.pos as u64;
            self.filled -= self.pos;
            self.pos = 0;
            self.checked_src = 0;
        }
        if self.filled == self.buf.len() {
            // Only an unfinished header line keeps this much unparsed; make room for it.
            let grown = (self.buf.len() * 2).min(MAX_HEADER_BYTES + BLOCK_SIZE);
            if grown <= self.buf.len() {
                return Err(self.invalid_here(FastaProblem::HeaderTooLong(MAX_HEADER_BYTES)));
            }
            self.buf.resize(grown, 0);
        }
        while self.filled < self.buf.len() {
            let Some(space) = self.buf.get_mut(self.filled..) else {
                break;
            };
            match self.input.read(space) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(FastaError::Io {
                        path: self.config.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Parses lines from `buf[pos..filled]` until a batch completes or input runs out.
    fn parse(&mut self) -> Result<Parsed, FastaError> {
        if self.phase == Phase::Resync && !self.resync() {
            return Ok(Parsed::NeedInput);
        }
        while self.pos < self.filled {
            if self.phase != Phase::Lines {
                return Ok(Parsed::NeedInput);
            }
            if !self.at_line_start {
                if !self.sequence_lines()? {
                    return self.split_if_over_budget();
                }
            } else {
                let first = self.buf.get(self.pos).copied().unwrap_or(b'\n');
                match first {
                    b'>' => {
                        let header_offset = self.buf_offset + self.pos as u64;
                        if let ScanBounds::Range { end, .. } = self.config.bounds
                            && header_offset >= end
                        {
                            self.end_of_input()?;
                            return Ok(Parsed::NeedInput);
                        }
                        if self.in_record {
                            self.finish_record()?;
                            if self.rows >= self.config.batch_rows
                                || self.batch_bytes_used() >= self.config.batch_bytes
                            {
                                return self.take_batch().map(Parsed::Batch);
                            }
                        }
                        if !self.header_line()? {
                            return Ok(Parsed::NeedInput);
                        }
                    }
                    b'\n' => {
                        self.pos += 1;
                        self.line += 1;
                        continue;
                    }
                    _ if !self.in_record => {
                        if !self.blank_line_before_first_header()? {
                            return Ok(Parsed::NeedInput);
                        }
                        continue;
                    }
                    _ => {
                        if !self.sequence_lines()? {
                            return self.split_if_over_budget();
                        }
                    }
                }
            }
            if let Parsed::Batch(batch) = self.split_if_over_budget()? {
                return Ok(Parsed::Batch(batch));
            }
        }
        Ok(Parsed::NeedInput)
    }

    /// Closes the batch when the unfinished record pushed it over the byte budget; the
    /// unfinished record moves to the next batch so this one stays within budget.
    fn split_if_over_budget(&mut self) -> Result<Parsed, FastaError> {
        if self.rows > 0 && self.batch_bytes_used() > self.config.batch_bytes {
            return self.take_batch().map(Parsed::Batch);
        }
        Ok(Parsed::NeedInput)
    }

    /// Skips to the first line starting with `>` at or after the range start.
    /// Returns false when more input is needed (or the range holds no record).
    fn resync(&mut self) -> bool {
        let ScanBounds::Range { end, .. } = self.config.bounds else {
            self.phase = Phase::Lines;
            return true;
        };
        loop {
            let rest = self.buf.get(self.pos..self.filled).unwrap_or_default();
            let Some(newline) = memchr(b'\n', rest).map(|i| self.pos + i) else {
                self.pos = self.filled;
                if self.buf_offset + self.filled as u64 >= end {
                    self.phase = Phase::Draining;
                }
                return false;
            };
            let candidate = newline + 1;
            if self.buf_offset + candidate as u64 >= end {
                self.phase = Phase::Draining;
                return false;
            }
            match self.buf.get(candidate..self.filled).and_then(|b| b.first()) {
                None => {
                    // Keep the newline so the next block can be checked for a '>' after it.
                    self.pos = newline;
                    if self.eof {
                        self.phase = Phase::Draining;
                    }
                    return false;
                }
                Some(b'>') => {
                    self.pos = candidate;
                    self.checked_src = candidate;
                    self.phase = Phase::Lines;
                    self.at_line_start = true;
                    return true;
                }
                Some(_) => self.pos = candidate,
            }
        }
    }

    /// Consumes a blank line (`\r\n`) before the first header; any other text is an error.
    fn blank_line_before_first_header(&mut self) -> Result<bool, FastaError> {
        let rest = self.buf.get(self.pos..self.filled).unwrap_or_default();
        match rest {
            [b'\r', b'\n', ..] => {
                self.pos += 2;
                self.line += 1;
                Ok(true)
            }
            [b'\r'] if self.eof => {
                self.pos += 1;
                Ok(true)
            }
            [b'\r'] => Ok(false),
            _ => Err(self.invalid_here(FastaProblem::MissingHeader)),
        }
    }

    /// Parses one header line; returns false when the line is not complete in the buffer.
    fn header_line(&mut self) -> Result<bool, FastaError> {
        let rest = self.buf.get(self.pos..self.filled).unwrap_or_default();
        let (line_len, consumed) = match memchr(b'\n', rest) {
            Some(n) => (n, n + 1),
            None if self.eof => (rest.len(), rest.len()),
            None if rest.len() > MAX_HEADER_BYTES => {
                return Err(self.invalid_here(FastaProblem::HeaderTooLong(MAX_HEADER_BYTES)));
            }
            None => return Ok(false),
        };
        let mut text = rest.get(1..line_len).unwrap_or_default();
        if let [head @ .., b'\r'] = text {
            text = head;
        }
        if text.len() > MAX_HEADER_BYTES {
            return Err(self.invalid_here(FastaProblem::HeaderTooLong(MAX_HEADER_BYTES)));
        }
        if let Some(problem) = header_problem(text) {
            return Err(self.invalid_here(problem));
        }
        // Splitting at ASCII bytes keeps both halves valid UTF-8.
        let id_end = memchr2(b' ', b'\t', text).unwrap_or(text.len());
        let (id, rest_of_header) = text.split_at(id_end);
        let description = rest_of_header.trim_ascii();
        if self.config.columns.id {
            self.id.values.extend_from_slice(id);
        }
        self.description_is_null = description.is_empty();
        if self.config.columns.description {
            self.description.values.extend_from_slice(description);
        }
        self.pos += consumed;
        self.line += 1;
        self.in_record = true;
        self.at_line_start = true;
        Ok(true)
    }

    /// Appends sequence lines until a header, the end of the buffer or the batch budget.
    /// Returns false when more input is needed to finish the current line.
    fn sequence_lines(&mut self) -> Result<bool, FastaError> {
        let store = self.config.columns.sequence;
        // Past this many bytes the batch must be split (or the record is too long).
        let split_at = if self.rows > 0 {
            self.config
                .batch_bytes
                .saturating_sub(self.id.values.len() + self.description.values.len())
        } else {
            MAX_UTF8_BYTES
        };
        let buf = self.buf.get(..self.filled).unwrap_or_default();
        let mut pos = self.pos;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            let (mut segment, consumed, line_done) = match memchr(b'\n', rest) {
                Some(n) => (rest.get(..n).unwrap_or_default(), n + 1, true),
                None if self.eof => (rest, rest.len(), true),
                // A trailing CR may be the first half of a CRLF: leave it for the next block.
                None => match rest {
                    [head @ .., b'\r'] => (head, head.len(), false),
                    _ => (rest, rest.len(), false),
                },
            };
            if line_done && let [head @ .., b'\r'] = segment {
                segment = head;
            }
            if store {
                if self.sequence.values.len() + segment.len() > MAX_UTF8_BYTES {
                    self.pos = pos;
                    return Err(self.invalid_here(FastaProblem::SequenceTooLong));
                }
                self.sequence.values.extend_from_slice(segment);
            } else if let Some(i) = first_invalid_sequence_byte(segment) {
                let byte = segment.get(i).copied().unwrap_or(0);
                self.pos = pos + i;
                return Err(self.invalid_here(FastaProblem::InvalidSequenceByte(byte)));
            }
            pos += consumed;
            if !line_done {
                self.pos = pos;
                self.at_line_start = false;
                return Ok(false);
            }
            self.line += 1;
            self.at_line_start = true;
            match buf.get(pos) {
                None | Some(b'>') => break,
                Some(_) => {}
            }
            if store && self.sequence.values.len() > split_at {
                break;
            }
        }
        self.pos = pos;
        Ok(true)
    }

    fn finish_record(&mut self) -> Result<(), FastaError> {
        let columns = &self.config.columns;
        let result = (|| {
            if columns.id {
                self.id.finish_value()?;
            }
            if columns.description {
                self.description.finish_value()?;
                self.description_nulls.append(!self.description_is_null);
            }
            if columns.sequence {
                self.sequence.finish_value()?;
            }
            Ok(())
        })();
        result.map_err(|problem| self.invalid_here(problem))?;
        self.rows += 1;
        self.in_record = false;
        Ok(())
    }

    fn batch_bytes_used(&self) -> usize {
        self.id.values.len() + self.description.values.len() + self.sequence.values.len()
    }

    /// Validates the sequence bytes appended since the last check.
    fn validate_pending(&mut self) -> Result<(), FastaError> {
        let pending = self
            .sequence
            .values
            .get(self.checked_values..)
            .unwrap_or_default();
        if !is_valid_sequence(pending) {
            return Err(self.locate_invalid_sequence());
        }
        self.checked_values = self.sequence.values.len();
        self.checked_src = self.pos;
        self.checked_line = self.line;
        self.checked_at_line_start = self.at_line_start;
        Ok(())
    }

    /// Walks the source lines behind the failed validation again to name the line.
    fn locate_invalid_sequence(&self) -> FastaError {
        let region = self.buf.get(self.checked_src..self.pos).unwrap_or_default();
        let mut line = self.checked_line;
        let mut at_line_start = self.checked_at_line_start;
        let mut offset = 0;
        while offset < region.len() {
            let rest = region.get(offset..).unwrap_or_default();
            let (line_len, has_newline) = match memchr(b'\n', rest) {
                Some(n) => (n, true),
                None => (rest.len(), false),
            };
            let is_header = at_line_start && rest.first() == Some(&b'>');
            if !is_header {
                let mut segment = rest.get(..line_len).unwrap_or_default();
                if (has_newline || self.eof)
                    && let [head @ .., b'\r'] = segment
                {
                    segment = head;
                }
                if let Some(i) = first_invalid_sequence_byte(segment) {
                    let byte = segment.get(i).copied().unwrap_or(0);
                    let at = self.buf_offset + (self.checked_src + offset + i) as u64;
                    return self.invalid_at(line, at, FastaProblem::InvalidSequenceByte(byte));
                }
            }
            offset += line_len + usize::from(has_newline);
            if has_newline {
                line += 1;
                at_line_start = true;
            } else {
                at_line_start = false;
            }
        }
        // The bad byte came from an earlier block; name the first bad byte without a line.
        let pending = self
            .sequence
            .values
            .get(self.checked_values..)
            .unwrap_or_default();
        let byte = first_invalid_sequence_byte(pending)
            .and_then(|i| pending.get(i).copied())
            .unwrap_or(0);
        let problem = FastaProblem::InvalidSequenceByte(byte);
        self.invalid_at(self.line, self.buf_offset + self.pos as u64, problem)
    }

    /// The error for `problem` at the current position, unless sequence bytes read before it
    /// (not yet validated) hold an earlier error: errors are reported in file order.
    fn invalid_here(&self, problem: FastaProblem) -> FastaError {
        let pending = self
            .sequence
            .values
            .get(self.checked_values..)
            .unwrap_or_default();
        if !is_valid_sequence(pending) {
            return self.locate_invalid_sequence();
        }
        self.invalid_at(self.line, self.buf_offset + self.pos as u64, problem)
    }

    fn invalid_at(&self, line: u64, byte_offset: u64, problem: FastaProblem) -> FastaError {
        let location = if self.line_known {
            FastaErrorLocation::Line(line)
        } else {
            FastaErrorLocation::Byte(byte_offset)
        };
        FastaError::Invalid {
            path: self.config.path.clone(),
            location,
            problem,
        }
    }

    /// Builds a batch from the finished records; an unfinished record stays for the next one.
    fn take_batch(&mut self) -> Result<RecordBatch, FastaError> {
        self.validate_pending()?;
        let rows = self.rows;
        let rows_hint = self.last_rows.max(rows).min(self.config.batch_rows);
        let budget = self.config.batch_bytes;
        let columns = self.config.columns.clone();
        let mut arrays: [Option<ArrayRef>; 3] = [None, None, None];
        if columns.id {
            let (offsets, values) = self.id.take(rows_hint, self.last_bytes[0].min(budget));
            self.last_bytes[0] = values.len();
            let values = pooled_buffer(values, &self.id.pool);
            arrays[0] = Some(self.utf8_array(rows, offsets, values, None)?);
        }
        if columns.description {
            let nulls = self.description_nulls.finish();
            let (offsets, values) = self
                .description
                .take(rows_hint, self.last_bytes[1].min(budget));
            self.last_bytes[1] = values.len();
            let values = pooled_buffer(values, &self.description.pool);
            arrays[1] = Some(self.utf8_array(rows, offsets, values, nulls)?);
        }
        if columns.sequence {
            let (offsets, values) = self
                .sequence
                .take(rows_hint, self.last_bytes[2].min(budget));
            self.last_bytes[2] = values.len();
            let values = pooled_buffer(values, &self.sequence.pool);
            arrays[2] = Some(self.utf8_array(rows, offsets, values, None)?);
        }
        // The carried-over tail of an unfinished record was validated above.
        self.checked_values = self.sequence.values.len();
        self.last_rows = rows.max(1);
        self.rows = 0;

        let output: Vec<ArrayRef> = columns
            .indices
            .iter()
            .filter_map(|&i| arrays.get(i).cloned().flatten())
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(Arc::clone(&self.config.schema), output, &options)
            .map_err(|e| FastaError::Io {
                path: self.config.path.clone(),
                source: std::io::Error::other(e),
            })
    }

    fn utf8_array(
        &self,
        rows: usize,
        offsets: Vec<i32>,
        values: Buffer,
        nulls: Option<NullBuffer>,
    ) -> Result<ArrayRef, FastaError> {
        let well_formed = offsets.len() == rows + 1
            && offsets.first() == Some(&0)
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets
                .last()
                .is_some_and(|&last| usize::try_from(last).is_ok_and(|l| l <= values.len()))
            && nulls.as_ref().is_none_or(|n| n.len() == rows);
        if !well_formed {
            return Err(FastaError::Io {
                path: self.config.path.clone(),
                source: std::io::Error::other("internal error: inconsistent FASTA batch offsets"),
            });
        }
        // SAFETY: the offsets were checked just above to be monotonic, start at 0 and stay
        // within `values`; every value is either a header part taken from a `str` validated by
        // `header_problem` and split at ASCII bytes, or sequence bytes that `validate_pending`
        // checked to be printable ASCII. So `StringArray::try_new` would succeed.
        let array = unsafe {
            let offsets = OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets));
            StringArray::new_unchecked(offsets, values, nulls)
        };
        Ok(Arc::new(array))
    }
}

/// Checks a header's text (without `>` and line ending): no control bytes except tab, valid UTF-8.
fn header_problem(text: &[u8]) -> Option<FastaProblem> {
    // One pass that compiles to SIMD: flag control bytes and note any non-ASCII byte.
    #[inline(always)]
    fn scan(bytes: &[u8], control: &mut u8, high: &mut u8) {
        for &b in bytes {
            *control |= u8::from(b < 0x20 && b != b'\t') | u8::from(b == 0x7f);
            *high |= b;
        }
    }
    let (mut control, mut high) = (0u8, 0u8);
    let mut chunks = text.chunks_exact(16);
    for chunk in &mut chunks {
        scan(chunk, &mut control, &mut high);
    }
    scan(chunks.remainder(), &mut control, &mut high);
    if control != 0 {
        let is_control = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
        let byte = text.iter().copied().find(|&b| is_control(b)).unwrap_or(0);
        return Some(FastaProblem::HeaderControlByte(byte));
    }
    if high >= 0x80 && std::str::from_utf8(text).is_err() {
        return Some(FastaProblem::HeaderNotUtf8);
    }
    None
}

/// True when every byte is printable, non-space ASCII (0x21..=0x7E).
///
/// Written as a branch-free reduction over fixed-size chunks so it compiles to SIMD.
pub fn is_valid_sequence(bytes: &[u8]) -> bool {
    #[inline(always)]
    fn bad(b: u8) -> u8 {
        u8::from(b.wrapping_sub(0x21) > 0x7e - 0x21)
    }
    let mut chunks = bytes.chunks_exact(64);
    for chunk in &mut chunks {
        let mut acc = 0u8;
        for &b in chunk {
            acc |= bad(b);
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().fold(0u8, |acc, &b| acc | bad(b)) == 0
}

/// Index of the first byte outside printable, non-space ASCII.
fn first_invalid_sequence_byte(bytes: &[u8]) -> Option<usize> {
    if is_valid_sequence(bytes) {
        return None;
    }
    bytes.iter().position(|&b| !(0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};

    fn read_all(text: &[u8], batch_bytes: usize) -> Result<Vec<RecordBatch>, FastaError> {
        let config = ReaderConfig {
            path: "mem.fa".into(),
            schema: super::super::fasta_schema(),
            columns: ColumnSelection::all(),
            batch_rows: 1000,
            batch_bytes,
            bounds: ScanBounds::Whole,
        };
        let mut reader = FastaBatchReader::new(text, config);
        let mut batches = vec![];
        while let Some(batch) = reader.next_batch()? {
            batches.push(batch);
        }
        Ok(batches)
    }

    fn rows(batches: &[RecordBatch]) -> Vec<(String, Option<String>, String)> {
        let mut out = vec![];
        for batch in batches {
            let id = batch.column(0).as_string::<i32>();
            let description = batch.column(1).as_string::<i32>();
            let sequence = batch.column(2).as_string::<i32>();
            for i in 0..batch.num_rows() {
                out.push((
                    id.value(i).to_string(),
                    description
                        .is_valid(i)
                        .then(|| description.value(i).to_string()),
                    sequence.value(i).to_string(),
                ));
            }
        }
        out
    }

    #[test]
    fn records_are_split_into_id_description_and_joined_sequence() {
        let text = b"\n>a first  one \r\nAC\r\n\r\ngt\n>b\n>c\tx\nNN*-";
        let got = rows(&read_all(text, 1 << 20).unwrap());
        assert_eq!(
            got,
            vec![
                ("a".into(), Some("first  one".into()), "ACgt".into()),
                ("b".into(), None, "".into()),
                ("c".into(), Some("x".into()), "NN*-".into()),
            ]
        );
    }

    #[test]
    fn validity_check_rejects_space_and_control_bytes() {
        assert!(is_valid_sequence(b"ACGT*-!~"));
        assert!(!is_valid_sequence(b"AC GT"));
        let long = [b'A'; 200];
        assert!(is_valid_sequence(&long));
        let mut bad = long;
        bad[130] = 0;
        assert!(!is_valid_sequence(&bad));
        assert_eq!(first_invalid_sequence_byte(&bad), Some(130));
    }

    /// Endless 60-column sequence lines after one header.
    struct EndlessRecord {
        header_sent: bool,
        produced: u64,
        limit: u64,
    }

    impl Read for EndlessRecord {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if !self.header_sent {
                self.header_sent = true;
                out[..5].copy_from_slice(b">big\n");
                return Ok(5);
            }
            let mut written = 0;
            for byte in out.iter_mut() {
                if self.produced >= self.limit {
                    break;
                }
                *byte = if self.produced % 61 == 60 {
                    b'\n'
                } else {
                    b'A'
                };
                self.produced += 1;
                written += 1;
            }
            Ok(written)
        }
    }

    /// Needs ~2.2 GB of memory and a few seconds: `cargo test --release -- --ignored`.
    #[test]
    #[ignore]
    fn a_record_longer_than_the_utf8_limit_is_an_error_not_an_overflow() {
        let input = EndlessRecord {
            header_sent: false,
            produced: 0,
            limit: (i32::MAX as u64) / 60 * 61 + 61 * 1000,
        };
        let config = ReaderConfig {
            path: "huge.fa".into(),
            schema: super::super::fasta_schema(),
            columns: ColumnSelection::all(),
            batch_rows: 1000,
            batch_bytes: 1 << 20,
            bounds: ScanBounds::Whole,
        };
        let error = FastaBatchReader::new(input, config)
            .next_batch()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("invalid FASTA in huge.fa at line 35791396: record sequence is longer than 2147483647 bytes"),
            "{error}"
        );
    }

    #[test]
    fn invalid_bytes_name_the_line() {
        let err = read_all(b">a\nACGT\nAC\0T\n", 1 << 20)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid FASTA in mem.fa at line 3: sequence line contains byte 0x00"
        );
    }
}
