//! The FASTQ block reader: four-line records written straight into Arrow buffers, with the
//! FASTA reader's input block, batch builder and memory accounting.
//!
//! A record is parsed once all four of its lines are in the block (the block grows for a long
//! read), so records never straddle a refill. Every line is checked as it is copied: the header
//! like a FASTA header, sequence and quality bytes printable non-space ASCII, the `+` line
//! present (repeating the header or empty), the quality as long as the sequence.
//!
//! A range scan must find the first record that starts in its range although a quality line may
//! start with `@` too. A line starting with `@` starts a record unless the line after it also
//! starts with `@` (then it is a quality line and the next header follows) or is empty without a
//! `+` line after it. The reader refuses sequence lines starting with `@`, so in any file it
//! reads whole, this rule finds exactly the record starts.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use memchr::memchr;

use super::block::{BLOCK_SIZE, Block};
use super::columns::BatchBuilder;
use super::memory::Handoff;
use super::validate::{first_invalid_sequence_byte, header_problem, split_header};
use super::{
    LineCursor, MAX_HEADER_BYTES, MAX_UTF8_BYTES, Parsed, Phase, ReaderConfig, ScanBounds,
};
use crate::fasta::error::{FastaError, FastaProblem};

/// Largest record accepted: a header and two lines of the longest Arrow Utf8 value. (The
/// memory pool refuses far smaller blocks on any real server.)
const MAX_RECORD_BYTES: usize = MAX_HEADER_BYTES + 2 * MAX_UTF8_BYTES;

/// The four lines of one record, as ranges of the text it starts (line endings left out).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordLines {
    lines: [Range<usize>; 4],
    /// Bytes of the record, line endings included.
    len: usize,
}

/// Where a record's lines were found.
#[derive(Debug, PartialEq, Eq)]
enum Split {
    Record(RecordLines),
    /// The record's last line is not complete in the text yet.
    NeedInput,
    /// The input ends before the record's fourth line.
    Truncated,
}

/// The end of a line's content: `end` less a carriage return before it.
fn content_end(text: &[u8], start: usize, end: usize) -> usize {
    if end > start && text[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

/// Splits the record at the start of `text` into its four lines. At the end of the input
/// (`eof`) the last line needs no line feed, and a missing quality line is an empty one.
fn split_record(text: &[u8], eof: bool) -> Split {
    let mut lines: [Range<usize>; 4] = Default::default();
    let mut start = 0;
    for (index, line) in lines.iter_mut().enumerate() {
        match memchr(b'\n', &text[start..]) {
            Some(n) => {
                *line = start..content_end(text, start, start + n);
                start += n + 1;
            }
            None if !eof => return Split::NeedInput,
            None if index == 3 => {
                *line = start..content_end(text, start, text.len());
                start = text.len();
            }
            None => return Split::Truncated,
        }
    }
    Split::Record(RecordLines { lines, len: start })
}

/// Whether the line at the start of `text` (which starts with `@`) starts a record; `None`
/// when more input is needed to tell.
fn is_record_start(text: &[u8], eof: bool) -> Option<bool> {
    // Nothing after the line: a last quality line (or a truncated record, which is not ours).
    let Some(first) = memchr(b'\n', text) else {
        return eof.then_some(false);
    };
    let second = &text[first + 1..];
    let second_end = memchr(b'\n', second);
    let second_is_empty = match second {
        [] => return eof.then_some(false),
        [b'@', ..] => return Some(false),
        [b'\n', ..] | [b'\r', b'\n', ..] => true,
        [b'\r'] if second_end.is_none() && !eof => return None,
        [b'\r'] => true,
        _ => false,
    };
    if !second_is_empty {
        return Some(true);
    }
    // An empty second line: an empty sequence if a `+` line follows, else blank lines.
    let Some(second_end) = second_end else {
        return eof.then_some(false);
    };
    match second.get(second_end + 1) {
        Some(&byte) => Some(byte == b'+'),
        None => eof.then_some(false),
    }
}

/// What is wrong with a record, and where: the index of its line (0..4) and the byte in the text.
type RecordProblem = (usize, usize, FastaProblem);

/// Checks the lines of a record; returns its header text (after `@`, without line ending).
fn check_record<'a>(text: &'a [u8], record: &RecordLines) -> Result<&'a [u8], RecordProblem> {
    let [header, sequence, plus, quality] = &record.lines;
    debug_assert_eq!(text.get(header.start), Some(&b'@'));
    let header_text = &text[header.start + 1..header.end];
    if header_text.len() > MAX_HEADER_BYTES {
        return Err((
            0,
            header.start,
            FastaProblem::HeaderTooLong(MAX_HEADER_BYTES),
        ));
    }
    if let Some(problem) = header_problem(header_text) {
        return Err((0, header.start, problem));
    }
    if matches!(header_text.first(), None | Some(b' ' | b'\t')) {
        return Err((0, header.start, FastaProblem::EmptyName));
    }
    let bases = &text[sequence.clone()];
    if bases.first() == Some(&b'@') {
        return Err((1, sequence.start, FastaProblem::SequenceStartsWithAt));
    }
    if let Some(i) = first_invalid_sequence_byte(bases) {
        let problem = FastaProblem::InvalidSequenceByte(bases[i]);
        return Err((1, sequence.start + i, problem));
    }
    let plus_text = &text[plus.clone()];
    match plus_text {
        [b'+'] => {}
        [b'+', repeated @ ..] if repeated == header_text => {}
        [b'+', ..] => return Err((2, plus.start, FastaProblem::PlusLineMismatch)),
        _ => return Err((2, plus.start, FastaProblem::MissingPlusLine)),
    }
    let scores = &text[quality.clone()];
    if scores.len() != bases.len() {
        let problem = FastaProblem::QualityLengthMismatch {
            sequence: bases.len(),
            quality: scores.len(),
        };
        return Err((3, quality.start, problem));
    }
    if let Some(i) = first_invalid_sequence_byte(scores) {
        let problem = FastaProblem::InvalidQualityByte(scores[i]);
        return Err((3, quality.start + i, problem));
    }
    Ok(header_text)
}

/// Streaming FASTQ reader producing record batches of the configured columns.
pub struct FastqBatchReader<R> {
    input: R,
    config: ReaderConfig,
    phase: Phase,
    block: Block,
    cursor: LineCursor,
    batch: BatchBuilder,
    /// The first blank line seen since the last record (its line and file offset): an error if
    /// another record follows, accepted at the end of the file.
    blank_line: Option<(u64, u64)>,
}

impl<R: Read> FastqBatchReader<R> {
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
        Self {
            input,
            phase,
            block: Block::new(block_offset, &config.memory),
            cursor: LineCursor {
                line: 1,
                line_known,
                at_line_start: true,
            },
            batch: BatchBuilder::new(config.columns.clone(), config.batch_rows, &config.memory),
            blank_line: None,
            config,
        }
    }

    /// Returns the next batch, `None` at the end, or the first error found.
    #[cfg(test)]
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, FastaError> {
        Ok(self.next_handoff()?.map(|(batch, _)| batch))
    }

    /// The next batch with its [`Handoff`] (see [`super::FastaBatchReader::next_handoff`]).
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
            match self.parse()? {
                Parsed::Batch(batch) => return Ok(Some(batch)),
                Parsed::NeedInput if matches!(self.phase, Phase::Draining | Phase::Finished) => {}
                Parsed::NeedInput if !self.block.eof => self.refill()?,
                // At the end of the input the parser consumes everything or fails.
                Parsed::NeedInput if !self.block.is_parsed() => {
                    return Err(self.config.internal("the FASTQ parser made no progress"));
                }
                Parsed::NeedInput => self.phase = Phase::Draining,
            }
        }
    }

    /// Moves the unparsed tail to the front of the block and reads more input after it.
    fn refill(&mut self) -> Result<(), FastaError> {
        self.block.discard_parsed();
        if !self.block.grow_if_full(MAX_RECORD_BYTES + BLOCK_SIZE)? {
            return Err(self.invalid_here(FastaProblem::RecordTooLong(MAX_RECORD_BYTES)));
        }
        self.block
            .fill_from(&mut self.input)
            .map_err(|source| self.config.io_error(source))
    }

    /// Parses records from the block until a batch completes or the block runs out.
    fn parse(&mut self) -> Result<Parsed, FastaError> {
        if self.phase == Phase::Resync && !self.resync() {
            return Ok(Parsed::NeedInput);
        }
        while self.phase == Phase::Lines {
            let rows = self.batch.rows();
            if rows >= self.config.batch_rows
                || (rows > 0 && self.batch.bytes_used() >= self.config.batch_bytes)
            {
                return self.take_batch().map(Parsed::Batch);
            }
            let eof = self.block.eof;
            let blank = match self.block.unparsed() {
                [] => return Ok(Parsed::NeedInput),
                [b'\n', ..] => Some(1),
                [b'\r', b'\n', ..] => Some(2),
                [b'\r'] if !eof => return Ok(Parsed::NeedInput),
                [b'\r'] => Some(1),
                _ => None,
            };
            if let Some(len) = blank {
                let offset = self.block.file_offset(self.block.pos);
                self.blank_line.get_or_insert((self.cursor.line, offset));
                self.block.pos += len;
                self.cursor.line += 1;
                continue;
            }
            let start = self.block.file_offset(self.block.pos);
            if self.config.owned_end().is_some_and(|end| start >= end) {
                self.phase = Phase::Draining;
                return Ok(Parsed::NeedInput);
            }
            if let Some((line, offset)) = self.blank_line {
                return Err(self.invalid_at(line, offset, FastaProblem::BlankLine));
            }
            if self.block.unparsed()[0] != b'@' {
                return Err(self.invalid_here(FastaProblem::MissingFastqHeader));
            }
            let record = match split_record(self.block.unparsed(), eof) {
                Split::Record(record) => record,
                Split::NeedInput => return Ok(Parsed::NeedInput),
                Split::Truncated => return Err(self.invalid_here(FastaProblem::TruncatedRecord)),
            };
            // A record that would push a batch over its byte budget starts the next batch.
            let record_bytes = record.len;
            if rows > 0 && self.batch.bytes_used() + record_bytes > self.config.batch_bytes {
                return self.take_batch().map(Parsed::Batch);
            }
            self.append(&record)?;
            self.block.pos += record.len;
            self.cursor.line += 4;
        }
        Ok(Parsed::NeedInput)
    }

    /// Checks one record at the parse position and adds it to the batch.
    fn append(&mut self, record: &RecordLines) -> Result<(), FastaError> {
        let text = &self.block.bytes[self.block.pos..self.block.filled];
        let header = match check_record(text, record) {
            Ok(header) => header,
            Err((line, at, problem)) => {
                let offset = self.block.file_offset(self.block.pos + at);
                return Err(self.invalid_at(self.cursor.line + line as u64, offset, problem));
            }
        };
        let (id, description) = split_header(header);
        let batch = &mut self.batch;
        batch.open_record(id, description)?;
        let [_, sequence, _, quality] = &record.lines;
        if batch.stores_sequence() {
            batch
                .sequence
                .values
                .extend_from_slice(&text[sequence.clone()])?;
        }
        if batch.stores_quality() {
            batch
                .quality
                .values
                .extend_from_slice(&text[quality.clone()])?;
        }
        batch
            .finish_record()
            .map_err(|problem| self.invalid_here(problem))
    }

    /// Skips to the first record that starts at or after the range start. Returns false when
    /// more input is needed (or the range holds no record).
    fn resync(&mut self) -> bool {
        let Some(end) = self.config.owned_end() else {
            self.phase = Phase::Lines;
            return true;
        };
        loop {
            let held = &self.block.bytes[..self.block.filled];
            let Some(newline) = memchr(b'\n', &held[self.block.pos..]).map(|i| self.block.pos + i)
            else {
                self.block.pos = self.block.filled;
                if self.block.file_offset(self.block.filled) >= end || self.block.eof {
                    self.phase = Phase::Draining;
                }
                return false;
            };
            let candidate = newline + 1;
            if self.block.file_offset(candidate) >= end {
                self.phase = Phase::Draining;
                return false;
            }
            let starts = match held.get(candidate) {
                Some(b'@') => is_record_start(&held[candidate..], self.block.eof),
                Some(_) => Some(false),
                None if self.block.eof => {
                    self.phase = Phase::Draining;
                    return false;
                }
                None => None,
            };
            match starts {
                // Keep the newline so the next block can look at the line after it again.
                None => {
                    self.block.pos = newline;
                    return false;
                }
                Some(true) => {
                    self.block.pos = candidate;
                    self.phase = Phase::Lines;
                    return true;
                }
                Some(false) => self.block.pos = candidate,
            }
        }
    }

    fn invalid_here(&self, problem: FastaProblem) -> FastaError {
        let offset = self.block.file_offset(self.block.pos);
        self.invalid_at(self.cursor.line, offset, problem)
    }

    fn invalid_at(&self, line: u64, byte_offset: u64, problem: FastaProblem) -> FastaError {
        let line = self.cursor.line_known.then_some(line);
        self.config.invalid(line, byte_offset, problem)
    }

    fn take_batch(&mut self) -> Result<(RecordBatch, Arc<Handoff>), FastaError> {
        self.batch
            .take(
                &self.config.schema,
                self.config.batch_rows,
                self.config.batch_bytes,
            )
            .map_err(|error| self.config.batch_error(error))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ColumnSelection, ScanMemory};
    use super::*;
    use crate::fasta::SequenceFormat;
    use datafusion::arrow::array::{Array, AsArray};

    type Row = (String, Option<String>, String, String);

    fn config(bounds: ScanBounds, batch_bytes: usize) -> ReaderConfig {
        ReaderConfig {
            format: SequenceFormat::Fastq,
            path: "mem.fq".into(),
            schema: crate::fasta::fastq_schema(),
            columns: ColumnSelection::all_fastq(),
            batch_rows: 1000,
            batch_bytes,
            bounds,
            memory: ScanMemory::unbounded(batch_bytes),
            range_end: None,
        }
    }

    fn rows(batches: &[RecordBatch]) -> Vec<Row> {
        let mut rows = Vec::new();
        for batch in batches {
            let [id, description, sequence, quality] =
                [0, 1, 2, 3].map(|i| batch.column(i).as_string::<i32>());
            for i in 0..batch.num_rows() {
                rows.push((
                    id.value(i).to_owned(),
                    description
                        .is_valid(i)
                        .then(|| description.value(i).to_owned()),
                    sequence.value(i).to_owned(),
                    quality.value(i).to_owned(),
                ));
            }
        }
        rows
    }

    fn read(text: &[u8], bounds: ScanBounds, batch_bytes: usize) -> Result<Vec<Row>, FastaError> {
        let input = match bounds {
            ScanBounds::Range { start, .. } if start > 0 => &text[start as usize - 1..],
            _ => text,
        };
        let mut reader = FastqBatchReader::new(input, config(bounds, batch_bytes));
        let mut batches = Vec::new();
        while let Some(batch) = reader.next_batch()? {
            batches.push(batch);
        }
        Ok(rows(&batches))
    }

    fn read_all(text: &[u8]) -> Result<Vec<Row>, FastaError> {
        read(text, ScanBounds::Whole, 1 << 20)
    }

    fn row(id: &str, description: Option<&str>, sequence: &str, quality: &str) -> Row {
        (
            id.into(),
            description.map(Into::into),
            sequence.into(),
            quality.into(),
        )
    }

    /// Qualities starting with `@`, an empty record, CRLF, a repeated name on the `+` line,
    /// a tab in a header, no final line feed.
    const TRICKY: &[u8] = b"@r1 first read\nACGT\n+\n@@@@\n@r2\r\nGG\r\n+r2\r\n@I\r\n@r3\n\n+\n\n@r4\tx  y \nNA\n+\n@+\n@r5\nT\n+r5\n@";

    fn tricky_rows() -> Vec<Row> {
        vec![
            row("r1", Some("first read"), "ACGT", "@@@@"),
            row("r2", None, "GG", "@I"),
            row("r3", None, "", ""),
            row("r4", Some("x  y"), "NA", "@+"),
            row("r5", None, "T", "@"),
        ]
    }

    #[test]
    fn records_are_split_into_their_four_columns() {
        assert_eq!(read_all(TRICKY).unwrap(), tricky_rows());
    }

    #[test]
    fn every_split_point_gives_each_record_to_exactly_one_range() {
        let size = TRICKY.len() as u64;
        for split in 0..=size {
            let mut got = read(
                TRICKY,
                ScanBounds::Range {
                    start: 0,
                    end: split,
                },
                1 << 20,
            )
            .unwrap_or_else(|e| panic!("split {split}: {e}"));
            let second = read(
                TRICKY,
                ScanBounds::Range {
                    start: split,
                    end: size,
                },
                1 << 20,
            )
            .unwrap_or_else(|e| panic!("split {split}: {e}"));
            got.extend(second);
            assert_eq!(got, tricky_rows(), "split at {split}");
        }
    }

    #[test]
    fn small_byte_budgets_give_one_record_per_batch() {
        let mut reader = FastqBatchReader::new(TRICKY, config(ScanBounds::Whole, 1));
        let mut sizes = Vec::new();
        while let Some(batch) = reader.next_batch().unwrap() {
            sizes.push(batch.num_rows());
        }
        assert_eq!(sizes, vec![1; 5]);
    }

    #[test]
    fn records_longer_than_the_block_are_read_whole() {
        let long = "ACGT".repeat(600_000);
        let quality = "I".repeat(long.len());
        let text = format!("@a\n{long}\n+\n{quality}\n@b\nA\n+\n#\n");
        let got = read_all(text.as_bytes()).unwrap();
        assert_eq!(
            got,
            vec![row("a", None, &long, &quality), row("b", None, "A", "#")]
        );
    }

    #[test]
    fn trailing_blank_lines_are_accepted() {
        assert_eq!(read_all(b"@a\nA\n+\n#\n\n\r\n\n").unwrap().len(), 1);
        assert!(read_all(b"").unwrap().is_empty());
        assert!(read_all(b"\n\n").unwrap().is_empty());
    }

    fn error(text: &[u8]) -> String {
        read_all(text).unwrap_err().to_string()
    }

    #[test]
    fn malformed_records_name_the_line_and_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"@a\nAC\n+\n#\n",
                "line 4: quality line has 1 characters but the sequence has 2",
            ),
            (
                b"@a\nAC\n-\n##\n",
                "line 3: expected the '+' line of the record",
            ),
            (
                b"@a\nAC\n+b\n##\n",
                "line 3: the '+' line does not repeat the record's header",
            ),
            (
                b"@a\nA\n+\n#\n@b\nAC\n",
                "line 5: the file ends inside a record",
            ),
            (
                b"@a\nA\n+\n#\n\n@b\nA\n+\n#\n",
                "line 5: blank line between records",
            ),
            (
                b">a\nA\n",
                "line 1: expected a header line starting with '@'",
            ),
            (b"@ a\nA\n+\n#\n", "line 1: header line has no name"),
            (b"@a\n@A\n+\n##\n", "line 2: sequence line starts with '@'"),
            (
                b"@a\nA C\n+\n###\n",
                "line 2: sequence line contains byte 0x20",
            ),
            (
                b"@a\nAC\n+\n#\x7f\n",
                "line 4: quality line contains byte 0x7f",
            ),
            (
                b"@a\x01\nA\n+\n#\n",
                "line 1: header line contains control byte 0x01",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.starts_with("invalid FASTQ in mem.fq at ") && message.contains(expected),
                "{message} should say {expected}"
            );
        }
    }

    #[test]
    fn range_scans_name_byte_offsets() {
        let text = b"@a\nA\n+\n#\n@b\nAC\n+\n#\n";
        let size = text.len() as u64;
        let message = read(
            text,
            ScanBounds::Range {
                start: 5,
                end: size,
            },
            1 << 20,
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("byte offset 17: quality line has 1 characters"),
            "{message}"
        );
    }

    #[test]
    fn record_starts_are_told_from_quality_lines() {
        assert_eq!(is_record_start(b"@q\n@r\nA\n", true), Some(false));
        assert_eq!(is_record_start(b"@r\nA\n+\n", false), Some(true));
        assert_eq!(is_record_start(b"@r\n\n+\n", false), Some(true));
        assert_eq!(is_record_start(b"@q\n\n\n", false), Some(false));
        assert_eq!(is_record_start(b"@q\n", false), None);
        assert_eq!(is_record_start(b"@q\n", true), Some(false));
        assert_eq!(is_record_start(b"@r\n\n", false), None);
        assert_eq!(is_record_start(b"@r\r\n\r\n+\r\n", false), Some(true));
    }

    #[test]
    fn a_record_is_split_once_its_four_lines_are_held() {
        assert_eq!(split_record(b"@a\nAC\n+\n##", false), Split::NeedInput);
        let Split::Record(record) = split_record(b"@a\r\nAC\n+\n##", true) else {
            panic!("a record at the end of input");
        };
        assert_eq!(record.lines, [0..2, 4..6, 7..8, 9..11]);
        assert_eq!(record.len, 11);
        assert_eq!(split_record(b"@a\nAC\n", true), Split::Truncated);
    }
}
