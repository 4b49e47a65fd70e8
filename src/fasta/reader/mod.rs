//! The FASTA block reader: turns FASTA text into Arrow record batches without per-record allocation.
//!
//! [`FastaBatchReader`] fills one large reusable [`block::Block`] from its input, walks it line
//! by line with `memchr`, and appends sequence bytes straight into the values buffer of the
//! Arrow array it is building ([`columns`]). Sequence bytes are validated in bulk on that
//! values buffer ([`validate`]), so the final `StringArray` needs no second UTF-8 check.

mod block;
mod columns;
mod fastq;
mod memory;
pub(crate) mod validate;

use std::io::Read;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use memchr::memchr;

use self::block::{BLOCK_SIZE, Block};
use self::columns::{BatchBuilder, BatchError, InconsistentBatch};
use self::validate::{PendingCheck, first_invalid_sequence_byte, header_problem, split_header};
use super::SequenceFormat;
use super::bgzf::RangeEnd;
use super::error::{FastaError, FastaErrorLocation, FastaProblem};

pub use self::columns::ColumnSelection;
pub use self::fastq::FastqBatchReader;
pub use self::memory::{Handoff, OutOfMemory, ScanMemory};

/// Longest header line accepted; guards memory against binary input without newlines.
pub const MAX_HEADER_BYTES: usize = 64 << 20;

/// Largest byte count of one Arrow Utf8 array (32-bit offsets).
const MAX_UTF8_BYTES: usize = i32::MAX as usize;

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
    /// FASTA or FASTQ.
    pub format: SequenceFormat,
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
    /// Where the reader reserves its buffers before allocating them.
    pub memory: ScanMemory,
    /// For a range of a BGZF file: where the range ends in decompressed bytes, learnt while
    /// reading (it bounds [`ScanBounds::Range`]'s `end` further).
    pub range_end: Option<RangeEnd>,
}

impl ReaderConfig {
    /// The first byte of the text the reader no longer owns; `None` for a whole file.
    fn owned_end(&self) -> Option<u64> {
        let ScanBounds::Range { end, .. } = self.bounds else {
            return None;
        };
        Some(end.min(self.range_end.as_ref().map_or(u64::MAX, RangeEnd::get)))
    }

    /// The error for `problem` at `line` when the reader knows line numbers, else at
    /// `byte_offset` of the text.
    fn invalid(&self, line: Option<u64>, byte_offset: u64, problem: FastaProblem) -> FastaError {
        let location = match line {
            Some(line) => FastaErrorLocation::Line(line),
            None => FastaErrorLocation::Byte(byte_offset),
        };
        FastaError::Invalid {
            format: self.format,
            path: self.path.clone(),
            location,
            problem,
        }
    }

    /// A failure to read or decompress this file.
    pub(crate) fn io_error(&self, source: std::io::Error) -> FastaError {
        FastaError::Io {
            format: self.format,
            path: self.path.clone(),
            source,
        }
    }

    /// A broken invariant of the reader reading this file.
    fn internal(&self, message: impl Into<String>) -> FastaError {
        FastaError::Internal {
            format: self.format,
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// Why the batch builder could not hand out a batch, as the reader's error.
    fn batch_error(&self, error: BatchError) -> FastaError {
        match error {
            BatchError::OutOfMemory(error) => error.into(),
            BatchError::Inconsistent(InconsistentBatch(message)) => self.internal(message),
        }
    }
}

/// Where the parser stands in the text, as error messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LineCursor {
    /// 1-based number of the line holding the parse position (meaningful when `line_known`).
    line: u64,
    /// False for range scans that started mid-file: errors then name byte offsets.
    line_known: bool,
    /// The parse position is at the start of a line.
    at_line_start: bool,
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

/// Outcome of parsing what the block currently holds.
enum Parsed {
    /// A batch is complete.
    Batch((RecordBatch, Arc<Handoff>)),
    /// The block needs more input.
    NeedInput,
}

/// The reader of a scan: FASTA or FASTQ, as [`ReaderConfig::format`] says.
pub enum SequenceReader<R> {
    /// A FASTA reader.
    Fasta(FastaBatchReader<R>),
    /// A FASTQ reader.
    Fastq(FastqBatchReader<R>),
}

impl<R: Read> SequenceReader<R> {
    /// The reader of `config.format` over `input` (see [`FastaBatchReader::new`]).
    pub fn new(input: R, config: ReaderConfig) -> Self {
        match config.format {
            SequenceFormat::Fasta => Self::Fasta(FastaBatchReader::new(input, config)),
            SequenceFormat::Fastq => Self::Fastq(FastqBatchReader::new(input, config)),
        }
    }

    /// See [`FastaBatchReader::next_handoff`].
    pub fn next_handoff(&mut self) -> Result<Option<(RecordBatch, Arc<Handoff>)>, FastaError> {
        match self {
            Self::Fasta(reader) => reader.next_handoff(),
            Self::Fastq(reader) => reader.next_handoff(),
        }
    }
}

/// Streaming FASTA reader producing record batches of the configured columns.
pub struct FastaBatchReader<R> {
    input: R,
    /// File name, schema, batch limits and bounds; `batch` keeps its own copy of the columns.
    config: ReaderConfig,
    phase: Phase,
    block: Block,
    cursor: LineCursor,
    batch: BatchBuilder,
    pending: PendingCheck,
}

impl<R: Read> FastaBatchReader<R> {
    /// Creates a reader over `input`, which starts at the beginning of the text, or at byte
    /// `start - 1` for a [`ScanBounds::Range`] with `start > 0`.
    pub fn new(input: R, config: ReaderConfig) -> Self {
        let (phase, block_offset, line_known) = match config.bounds {
            ScanBounds::Whole | ScanBounds::Range { start: 0, .. } => (Phase::Lines, 0, true),
            ScanBounds::Range { start, .. } => (Phase::Resync, start - 1, false),
        };
        let config = ReaderConfig {
            batch_rows: config.batch_rows.max(1),
            batch_bytes: config.batch_bytes.max(1),
            ..config
        };
        let cursor = LineCursor {
            line: 1,
            line_known,
            at_line_start: true,
        };
        Self {
            input,
            phase,
            block: Block::new(block_offset, &config.memory),
            cursor,
            batch: BatchBuilder::new(config.columns.clone(), config.batch_rows, &config.memory),
            pending: PendingCheck::new(cursor),
            config,
        }
    }

    /// Returns the next batch, `None` at the end, or the first error found. The batch's
    /// buffers stay reserved by the scan until the batch is dropped.
    #[cfg(test)]
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, FastaError> {
        Ok(self.next_handoff()?.map(|(batch, _)| batch))
    }

    /// Like [`Self::next_batch`], with the batch's [`Handoff`]: detaching it when the batch
    /// leaves the scan hands the accounting of its buffers to whoever holds it then.
    pub fn next_handoff(&mut self) -> Result<Option<(RecordBatch, Arc<Handoff>)>, FastaError> {
        loop {
            match self.phase {
                Phase::Finished => return Ok(None),
                Phase::Draining => {
                    self.phase = Phase::Finished;
                    if self.batch.rows() == 0 {
                        return Ok(None);
                    }
                    return self.take_batch().map(Some);
                }
                Phase::Resync | Phase::Lines => {}
            }
            if self.block.is_parsed() {
                if self.block.eof {
                    self.end_of_input()?;
                } else {
                    self.refill()?;
                }
                continue;
            }
            match self.parse()? {
                Parsed::Batch(batch) => return Ok(Some(batch)),
                Parsed::NeedInput if self.phase != Phase::Lines && self.phase != Phase::Resync => {}
                Parsed::NeedInput if !self.block.eof => self.refill()?,
                // At end of input every line parser consumes what is left, so this means the
                // parser stopped without progress; fail instead of spinning.
                Parsed::NeedInput if !self.block.is_parsed() => {
                    return Err(self.config.internal("the FASTA parser made no progress"));
                }
                Parsed::NeedInput => {}
            }
        }
    }

    fn end_of_input(&mut self) -> Result<(), FastaError> {
        if self.batch.record_open() {
            self.finish_record()?;
        }
        self.phase = Phase::Draining;
        Ok(())
    }

    /// Moves the unparsed tail to the front of the block and reads more input after it.
    fn refill(&mut self) -> Result<(), FastaError> {
        // Validation must see the source lines still in the block, to name a bad one.
        self.validate_pending()?;
        self.block.discard_parsed();
        self.pending.restart_at(self.block.pos);
        if !self.block.grow_if_full(MAX_HEADER_BYTES + BLOCK_SIZE)? {
            return Err(self.invalid_here(FastaProblem::HeaderTooLong(MAX_HEADER_BYTES)));
        }
        self.block
            .fill_from(&mut self.input)
            .map_err(|source| self.config.io_error(source))
    }

    /// Parses lines from the block until a batch completes or the block runs out.
    fn parse(&mut self) -> Result<Parsed, FastaError> {
        if self.phase == Phase::Resync && !self.resync() {
            return Ok(Parsed::NeedInput);
        }
        while !self.block.is_parsed() {
            if self.phase != Phase::Lines {
                return Ok(Parsed::NeedInput);
            }
            if !self.cursor.at_line_start {
                if !self.sequence_lines()? {
                    return self.split_if_over_budget();
                }
            } else {
                match self.block.bytes[self.block.pos] {
                    b'>' => {
                        let header_offset = self.block.file_offset(self.block.pos);
                        if let Some(end) = self.config.owned_end()
                            && header_offset >= end
                        {
                            self.end_of_input()?;
                            return Ok(Parsed::NeedInput);
                        }
                        if self.batch.record_open() {
                            self.finish_record()?;
                            if self.batch.rows() >= self.config.batch_rows
                                || self.batch.bytes_used() >= self.config.batch_bytes
                            {
                                return self.take_batch().map(Parsed::Batch);
                            }
                        }
                        if !self.header_line()? {
                            return Ok(Parsed::NeedInput);
                        }
                    }
                    b'\n' => {
                        self.block.pos += 1;
                        self.cursor.line += 1;
                        continue;
                    }
                    _ if !self.batch.record_open() => {
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
        if self.batch.rows() > 0 && self.batch.bytes_used() > self.config.batch_bytes {
            return self.take_batch().map(Parsed::Batch);
        }
        Ok(Parsed::NeedInput)
    }

    /// Skips to the first line starting with `>` at or after the range start.
    /// Returns false when more input is needed (or the range holds no record).
    fn resync(&mut self) -> bool {
        let Some(end) = self.config.owned_end() else {
            self.phase = Phase::Lines;
            return true;
        };
        loop {
            let Some(newline) = memchr(b'\n', self.block.unparsed()).map(|i| self.block.pos + i)
            else {
                self.block.pos = self.block.filled;
                if self.block.file_offset(self.block.filled) >= end {
                    self.phase = Phase::Draining;
                }
                return false;
            };
            let candidate = newline + 1;
            if self.block.file_offset(candidate) >= end {
                self.phase = Phase::Draining;
                return false;
            }
            // `candidate` may be the end of the input held: the next line is not read yet.
            match self.block.bytes[..self.block.filled].get(candidate) {
                None => {
                    // Keep the newline so the next block can be checked for a '>' after it.
                    self.block.pos = newline;
                    if self.block.eof {
                        self.phase = Phase::Draining;
                    }
                    return false;
                }
                Some(b'>') => {
                    self.block.pos = candidate;
                    self.pending.restart_at(candidate);
                    self.phase = Phase::Lines;
                    self.cursor.at_line_start = true;
                    return true;
                }
                Some(_) => self.block.pos = candidate,
            }
        }
    }

    /// Consumes a blank line (`\r\n`) before the first header; any other text is an error.
    fn blank_line_before_first_header(&mut self) -> Result<bool, FastaError> {
        match self.block.unparsed() {
            [b'\r', b'\n', ..] => {
                self.block.pos += 2;
                self.cursor.line += 1;
                Ok(true)
            }
            [b'\r'] if self.block.eof => {
                self.block.pos += 1;
                Ok(true)
            }
            [b'\r'] => Ok(false),
            _ => Err(self.invalid_here(FastaProblem::MissingHeader)),
        }
    }

    /// Parses one header line; returns false when the line is not complete in the block.
    fn header_line(&mut self) -> Result<bool, FastaError> {
        let rest = self.block.unparsed();
        debug_assert_eq!(rest.first(), Some(&b'>'));
        let (line_len, consumed) = match memchr(b'\n', rest) {
            Some(n) => (n, n + 1),
            None if self.block.eof => (rest.len(), rest.len()),
            None if rest.len() > MAX_HEADER_BYTES => {
                return Err(self.invalid_here(FastaProblem::HeaderTooLong(MAX_HEADER_BYTES)));
            }
            None => return Ok(false),
        };
        // The line starts with '>', so `line_len >= 1`.
        let mut text = &rest[1..line_len];
        if let [head @ .., b'\r'] = text {
            text = head;
        }
        if text.len() > MAX_HEADER_BYTES {
            return Err(self.invalid_here(FastaProblem::HeaderTooLong(MAX_HEADER_BYTES)));
        }
        if let Some(problem) = header_problem(text) {
            return Err(self.invalid_here(problem));
        }
        let (id, description) = split_header(text);
        if id.is_empty() {
            return Err(self.invalid_here(FastaProblem::EmptyName));
        }
        self.batch.open_record(id, description)?;
        self.block.pos += consumed;
        self.cursor.line += 1;
        self.cursor.at_line_start = true;
        Ok(true)
    }

    /// Appends sequence lines until a header, the end of the block or the batch budget.
    /// Returns false when more input is needed to finish the current line.
    fn sequence_lines(&mut self) -> Result<bool, FastaError> {
        let store = self.batch.stores_sequence();
        // Past this many bytes the batch must be split (or the record is too long).
        let split_at = if self.batch.rows() > 0 {
            self.config
                .batch_bytes
                .saturating_sub(self.batch.header_bytes())
        } else {
            MAX_UTF8_BYTES
        };
        let eof = self.block.eof;
        let held = &self.block.bytes[..self.block.filled];
        let mut pos = self.block.pos;
        loop {
            let rest = &held[pos..];
            let (mut segment, consumed, line_done) = match memchr(b'\n', rest) {
                Some(n) => (&rest[..n], n + 1, true),
                None if eof => (rest, rest.len(), true),
                // A trailing CR may be the first half of a CRLF: leave it for the next block.
                None => match rest {
                    [head @ .., b'\r'] => (head, head.len(), false),
                    _ => (rest, rest.len(), false),
                },
            };
            if line_done && let [head @ .., b'\r'] = segment {
                segment = head;
            }
            let values = &mut self.batch.sequence.values;
            if store {
                if values.len() + segment.len() > MAX_UTF8_BYTES {
                    self.block.pos = pos;
                    return Err(self.invalid_here(FastaProblem::SequenceTooLong));
                }
                values.extend_from_slice(segment)?;
            } else if let Some(i) = first_invalid_sequence_byte(segment) {
                let byte = segment[i];
                self.block.pos = pos + i;
                return Err(self.invalid_here(FastaProblem::InvalidSequenceByte(byte)));
            }
            pos += consumed;
            if !line_done {
                self.block.pos = pos;
                self.cursor.at_line_start = false;
                return Ok(false);
            }
            self.cursor.line += 1;
            self.cursor.at_line_start = true;
            match held.get(pos) {
                // The end of the input held, or the next record's header.
                None | Some(b'>') => break,
                Some(_) => {}
            }
            if store && self.batch.sequence.values.len() > split_at {
                break;
            }
        }
        self.block.pos = pos;
        Ok(true)
    }

    fn finish_record(&mut self) -> Result<(), FastaError> {
        self.batch
            .finish_record()
            .map_err(|problem| self.invalid_here(problem))
    }

    /// Validates the sequence bytes appended since the last check.
    fn validate_pending(&mut self) -> Result<(), FastaError> {
        if !self.pending.is_valid(&self.batch.sequence.values) {
            return Err(self.locate_invalid_sequence());
        }
        self.pending
            .mark_checked(&self.batch.sequence.values, self.block.pos, self.cursor);
        Ok(())
    }

    /// The error for the first invalid byte among the unvalidated sequence bytes, named by
    /// walking their source lines again.
    fn locate_invalid_sequence(&self) -> FastaError {
        let parsed = &self.block.bytes[..self.block.pos];
        if let Some(bad) = self.pending.locate(parsed, self.block.eof) {
            let at = self.block.file_offset(bad.index);
            return self.invalid_at(bad.line, at, FastaProblem::InvalidSequenceByte(bad.byte));
        }
        // The bad byte came from an earlier block; name the first bad byte without a line.
        let unchecked = self.pending.unchecked(&self.batch.sequence.values);
        let byte = first_invalid_sequence_byte(unchecked).map_or(0, |i| unchecked[i]);
        let problem = FastaProblem::InvalidSequenceByte(byte);
        let at = self.block.file_offset(self.block.pos);
        self.invalid_at(self.cursor.line, at, problem)
    }

    /// The error for `problem` at the current position, unless sequence bytes read before it
    /// (not yet validated) hold an earlier error: errors are reported in file order.
    fn invalid_here(&self, problem: FastaProblem) -> FastaError {
        if !self.pending.is_valid(&self.batch.sequence.values) {
            return self.locate_invalid_sequence();
        }
        let at = self.block.file_offset(self.block.pos);
        self.invalid_at(self.cursor.line, at, problem)
    }

    fn invalid_at(&self, line: u64, byte_offset: u64, problem: FastaProblem) -> FastaError {
        let line = self.cursor.line_known.then_some(line);
        self.config.invalid(line, byte_offset, problem)
    }

    /// Builds a batch from the finished records; an unfinished record stays for the next one.
    fn take_batch(&mut self) -> Result<(RecordBatch, Arc<Handoff>), FastaError> {
        self.validate_pending()?;
        let taken = self.batch.take(
            &self.config.schema,
            self.config.batch_rows,
            self.config.batch_bytes,
        );
        // The carried-over tail of an unfinished record was validated above.
        self.pending
            .mark_checked(&self.batch.sequence.values, self.block.pos, self.cursor);
        taken.map_err(|error| self.config.batch_error(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;

    /// All columns of a whole file named `mem.fa`, in batches of at most 1000 rows.
    fn test_config(batch_bytes: usize, memory: ScanMemory) -> ReaderConfig {
        ReaderConfig {
            format: SequenceFormat::Fasta,
            path: "mem.fa".into(),
            schema: crate::fasta::fasta_schema(),
            columns: ColumnSelection::all(),
            batch_rows: 1000,
            batch_bytes,
            bounds: ScanBounds::Whole,
            memory,
            range_end: None,
        }
    }

    fn read_all(text: &[u8], batch_bytes: usize) -> Result<Vec<RecordBatch>, FastaError> {
        let config = test_config(batch_bytes, ScanMemory::unbounded(batch_bytes));
        let mut reader = FastaBatchReader::new(text, config);
        let mut batches = vec![];
        while let Some(batch) = reader.next_batch()? {
            batches.push(batch);
        }
        Ok(batches)
    }

    /// The (id, description, sequence) rows of `batches`, in order.
    fn rows(batches: &[RecordBatch]) -> Vec<(String, Option<String>, String)> {
        let text = |value: Option<&str>| value.map(str::to_owned);
        batches
            .iter()
            .flat_map(|batch| {
                let [id, description, sequence] =
                    [0, 1, 2].map(|i| batch.column(i).as_string::<i32>());
                let ids = id
                    .iter()
                    .map(|value| text(value).expect("id is never null"));
                let sequences = sequence
                    .iter()
                    .map(|value| text(value).expect("sequence is never null"));
                ids.zip(description.iter().map(text))
                    .zip(sequences)
                    .map(|((id, description), sequence)| (id, description, sequence))
            })
            .collect()
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
            format: SequenceFormat::Fasta,
            path: "huge.fa".into(),
            schema: crate::fasta::fasta_schema(),
            columns: ColumnSelection::all(),
            batch_rows: 1000,
            batch_bytes: 1 << 20,
            bounds: ScanBounds::Whole,
            memory: ScanMemory::unbounded(1 << 20),
            range_end: None,
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

    fn limited_reader(
        text: &'static [u8],
        limit_mib: u64,
        batch_bytes: usize,
    ) -> (
        FastaBatchReader<&'static [u8]>,
        std::sync::Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
    ) {
        use crate::catalog::runtime::MemoryLimitPool;
        let pool: std::sync::Arc<dyn datafusion::execution::memory_pool::MemoryPool> =
            std::sync::Arc::new(MemoryLimitPool::new(crate::bytesize::ByteSize::mib(
                limit_mib,
            )));
        let memory = ScanMemory::new(&pool, "FASTA reader mem.fa", batch_bytes * 2);
        let config = test_config(batch_bytes, memory);
        (FastaBatchReader::new(text, config), pool)
    }

    fn fasta_of(records: usize, sequence_len: usize) -> &'static [u8] {
        let mut text = Vec::new();
        for i in 0..records {
            text.extend_from_slice(format!(">r{i} some description\n").as_bytes());
            for line in vec![b'A'; sequence_len].chunks(60) {
                text.extend_from_slice(line);
                text.push(b'\n');
            }
        }
        text.leak()
    }

    #[test]
    fn a_record_larger_than_the_memory_limit_fails_with_the_pools_error() {
        let (mut reader, pool) = limited_reader(fasta_of(1, 8 << 20), 4, 1 << 20);
        let error = reader.next_batch().unwrap_err();
        assert!(matches!(error, FastaError::OutOfMemory(_)), "{error}");
        let error = datafusion::error::DataFusionError::from(error);
        assert!(
            matches!(
                error,
                datafusion::error::DataFusionError::ResourcesExhausted(_)
            ),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains("memory limit of 4MiB"), "{message}");
        assert!(message.contains("FASTA reader mem.fa"), "{message}");
        assert!(pool.reserved() <= 4 << 20);
        drop(reader);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn records_larger_than_the_memory_limit_in_total_stream_within_it() {
        // 40 MiB of records through an 8 MiB pool, 256 KiB batches, each dropped when read.
        let (mut reader, pool) = limited_reader(fasta_of(640, 64 << 10), 8, 256 << 10);
        let (mut rows, mut bytes, mut peak) = (0, 0, 0);
        while let Some(batch) = reader.next_batch().unwrap() {
            peak = peak.max(pool.reserved());
            assert!(pool.reserved() > batch.get_array_memory_size() / 2);
            rows += batch.num_rows();
            bytes += batch.column(2).as_string::<i32>().value_data().len();
        }
        assert_eq!((rows, bytes), (640, 640 << 16));
        assert!(peak <= 8 << 20, "peak reservation {peak}");
        drop(reader);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn a_reader_short_of_memory_waits_for_its_batch_downstream_to_be_dropped() {
        // Each 3 MiB record needs a 4 MiB buffer: two do not fit in 8 MiB with the block.
        let (mut reader, pool) = limited_reader(fasta_of(2, 3 << 20), 8, 1 << 20);
        let first = reader.next_batch().unwrap().unwrap();
        let consumer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        let second = reader.next_batch().unwrap().unwrap();
        consumer.join().unwrap();
        assert_eq!(second.num_rows(), 1);
        assert!(reader.next_batch().unwrap().is_none());
        drop((reader, second));
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn batches_keep_their_memory_reserved_until_dropped() {
        let (mut reader, pool) = limited_reader(fasta_of(4, 1000), 8, 1 << 20);
        let batch = reader.next_batch().unwrap().unwrap();
        assert!(reader.next_batch().unwrap().is_none());
        drop(reader);
        let held = pool.reserved();
        assert!(
            held >= batch.column(2).as_string::<i32>().value_data().len(),
            "{held}"
        );
        drop(batch);
        assert_eq!(pool.reserved(), 0);
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
