//! What makes FASTA text valid, checked in bulk, and how a failed bulk check finds the offending line.
//!
//! Sequence bytes are copied into the column first and validated later, one vectorised pass
//! over everything appended since the last check ([`PendingCheck`]). Only when that pass fails
//! does the reader walk the source lines again to name the line.

use memchr::memchr;

use super::LineCursor;
use crate::fasta::FastaProblem;

/// A header's text (without `>`/`@` and line ending) split into the id, up to the first space
/// or tab, and the description, the rest without surrounding whitespace. Splitting at ASCII
/// bytes keeps both halves valid UTF-8.
pub(crate) fn split_header(text: &[u8]) -> (&[u8], &[u8]) {
    let id_end = memchr::memchr2(b' ', b'\t', text).unwrap_or(text.len());
    let (id, rest) = text.split_at(id_end);
    (id, rest.trim_ascii())
}

/// Checks a header's text (without `>` and line ending): no control bytes except tab, valid UTF-8.
///
/// Most headers are printable ASCII: eight bytes at a time prove it; any other header (tabs,
/// UTF-8, or a real problem) takes the exact byte-by-byte check.
pub(crate) fn header_problem(text: &[u8]) -> Option<FastaProblem> {
    let mut words = text.chunks_exact(8);
    let mut unusual = false;
    for word in &mut words {
        unusual |= maybe_unusual(u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
    }
    let rest = words.remainder();
    let mut last = [b'a'; 8];
    last[..rest.len()].copy_from_slice(rest);
    if !(unusual || maybe_unusual(u64::from_le_bytes(last))) {
        return None;
    }
    exact_header_problem(text)
}

/// False only when none of the eight bytes of `word` is below 0x20, 0x7f or above it
/// (the "has a byte less than n" and "has a zero byte" tests of Bit Twiddling Hacks: exact
/// about whether such a byte exists, which is all this needs).
#[inline(always)]
fn maybe_unusual(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let delete = word ^ (ONES * 0x7f);
    let is_delete = delete.wrapping_sub(ONES) & !delete & HIGH;
    (below_space | is_delete | (word & HIGH)) != 0
}

/// [`header_problem`] byte by byte.
fn exact_header_problem(text: &[u8]) -> Option<FastaProblem> {
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
#[inline]
pub(super) fn is_valid_sequence(bytes: &[u8]) -> bool {
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
pub(crate) fn first_invalid_sequence_byte(bytes: &[u8]) -> Option<usize> {
    if is_valid_sequence(bytes) {
        return None;
    }
    bytes.iter().position(|&b| !(0x21..=0x7e).contains(&b))
}

/// A byte that failed validation, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InvalidByte {
    /// 1-based line number of the line holding it.
    pub(super) line: u64,
    /// Its index in the block.
    pub(super) index: usize,
    /// The byte.
    pub(super) byte: u8,
}

/// Bookkeeping of the sequence bytes appended since the last validation: where they start in
/// the sequence column and where they were read from in the block.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingCheck {
    /// Sequence column bytes before this index have been validated.
    checked_values: usize,
    /// Block index the unvalidated bytes were read from.
    source_start: usize,
    /// The line cursor at `source_start`.
    cursor: LineCursor,
}

impl PendingCheck {
    /// Nothing appended yet; reading starts at block index 0 with `cursor`.
    pub(super) fn new(cursor: LineCursor) -> Self {
        Self {
            checked_values: 0,
            source_start: 0,
            cursor,
        }
    }

    /// The sequence bytes of `values` (the sequence column) not validated yet.
    #[inline]
    pub(super) fn unchecked<'a>(&self, values: &'a [u8]) -> &'a [u8] {
        debug_assert!(self.checked_values <= values.len());
        &values[self.checked_values..]
    }

    /// True when the unvalidated bytes of `values` are valid sequence bytes.
    #[inline]
    pub(super) fn is_valid(&self, values: &[u8]) -> bool {
        is_valid_sequence(self.unchecked(values))
    }

    /// Records that `values` is validated up to its end, and that the next appended bytes are
    /// read from block index `source_start`, where the line cursor is `cursor`.
    #[inline]
    pub(super) fn mark_checked(&mut self, values: &[u8], source_start: usize, cursor: LineCursor) {
        self.checked_values = values.len();
        self.source_start = source_start;
        self.cursor = cursor;
    }

    /// Notes that the unvalidated bytes are now read from block index `source_start`: the block
    /// moved its unparsed bytes to the front, or a range scan skipped to its first record.
    #[inline]
    pub(super) fn restart_at(&mut self, source_start: usize) {
        self.source_start = source_start;
    }

    /// Walks the source lines of the unvalidated bytes again, `parsed[source_start..]`, to find
    /// the first invalid sequence byte. `eof` says whether a last line without a newline ended
    /// the input (its trailing CR then is a line ending, not data).
    pub(super) fn locate(&self, parsed: &[u8], eof: bool) -> Option<InvalidByte> {
        debug_assert!(self.source_start <= parsed.len());
        let region = &parsed[self.source_start..];
        let mut line = self.cursor.line;
        let mut at_line_start = self.cursor.at_line_start;
        let mut offset = 0;
        while offset < region.len() {
            let rest = &region[offset..];
            let (line_len, has_newline) = match memchr(b'\n', rest) {
                Some(n) => (n, true),
                None => (rest.len(), false),
            };
            let is_header = at_line_start && rest.first() == Some(&b'>');
            if !is_header {
                let mut segment = &rest[..line_len];
                if (has_newline || eof)
                    && let [head @ .., b'\r'] = segment
                {
                    segment = head;
                }
                if let Some(i) = first_invalid_sequence_byte(segment) {
                    return Some(InvalidByte {
                        line,
                        index: self.source_start + offset + i,
                        byte: segment[i],
                    });
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
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn headers_reject_control_bytes_and_invalid_utf8_but_allow_tabs() {
        assert_eq!(header_problem(b"chr1\tdescription \xc3\xa9"), None);
        assert_eq!(
            header_problem(b"chr1\x07"),
            Some(FastaProblem::HeaderControlByte(0x07))
        );
        assert_eq!(
            header_problem(b"chr1 \xff"),
            Some(FastaProblem::HeaderNotUtf8)
        );
    }

    #[test]
    fn the_word_check_misses_no_byte_the_exact_check_refuses() {
        // Every byte value at every position of headers of several lengths (both sides of
        // a word boundary): the fast path agrees with the exact check.
        for length in [1, 7, 8, 9, 16, 23] {
            for at in 0..length {
                for byte in 0..=255u8 {
                    let mut text = vec![b'x'; length];
                    text[at] = byte;
                    assert_eq!(
                        header_problem(&text),
                        exact_header_problem(&text),
                        "byte 0x{byte:02x} at {at} of {length}"
                    );
                }
            }
        }
        let utf8 = "chr1 é".as_bytes();
        assert_eq!(header_problem(utf8), None);
        assert_eq!(header_problem(b""), None);
    }

    #[test]
    fn a_failed_check_is_located_on_its_source_line_skipping_headers() {
        let cursor = LineCursor {
            line: 7,
            line_known: true,
            at_line_start: true,
        };
        let pending = PendingCheck {
            checked_values: 0,
            source_start: 2,
            cursor,
        };
        let parsed = b"xxAC\r\n>h\tx\nGG\x01T\n";
        let found = pending.locate(parsed, false);
        assert_eq!(
            found,
            Some(InvalidByte {
                line: 9,
                index: 13,
                byte: 0x01
            })
        );
    }
}
