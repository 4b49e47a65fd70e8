//! BGZF files read in parallel: each byte range of the compressed file owns the records whose
//! header starts in the blocks that start in it.
//!
//! A BGZF file is a series of gzip members ("blocks") of at most 64 KiB, each announcing its
//! size in a `BC` extra field, so a range can find the first block starting at or after its
//! first byte without decompressing anything before it. The range decompresses from the last
//! byte of the block before that one (to know whether its first `>` starts a line), and the
//! reader learns where its range ends, in decompressed bytes, only when the decoder reaches the
//! first block starting at or after the range's end: [`RangeEnd`] carries that position from the
//! decoder to the parser. Records are therefore split between ranges exactly as in a plain
//! file, by the position of their `>`, and every record is read by exactly one range.

use std::io::{self, BufRead, Read, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use noodles_bgzf as bgzf;

use super::indexed::ReadSeek;

/// Bytes of a BGZF block header (the gzip header with the `BC` extra field).
pub(crate) const HEADER_LEN: usize = 18;
/// The largest BGZF block.
pub(crate) const MAX_BLOCK: u64 = 1 << 16;
/// The most empty blocks (end-of-file markers of concatenated files) looked past backwards.
const MAX_EMPTY_BLOCKS: usize = 1 << 12;
/// Bytes read at once while looking back past empty blocks (28 bytes each): thousands of
/// them in a row cost a few reads, not one read each.
const LOOK_BACK: u64 = 4 * MAX_BLOCK;

/// The first bytes of every BGZF block header (gzip magic, deflate, FEXTRA).
const BLOCK_MAGIC: [u8; 4] = [0x1f, 0x8b, 8, 4];

/// The size of the BGZF block whose header starts `header`, or `None` when it is no BGZF
/// block header.
pub(crate) fn block_size(header: &[u8]) -> Option<u64> {
    match header {
        [
            0x1f,
            0x8b,
            8,
            flags,
            _,
            _,
            _,
            _,
            _,
            _,
            6,
            0,
            b'B',
            b'C',
            2,
            0,
            low,
            high,
            ..,
        ] if flags & 4 != 0 => Some(u64::from(u16::from_le_bytes([*low, *high])) + 1),
        _ => None,
    }
}

/// Where a range ends in decompressed bytes, once the decoder knows it; `u64::MAX` until then.
/// The decoder stores it before it hands over any byte past it.
#[derive(Debug, Clone, Default)]
pub struct RangeEnd(Arc<AtomicU64>);

impl RangeEnd {
    fn unknown() -> Self {
        Self(Arc::new(AtomicU64::new(u64::MAX)))
    }

    /// The end, or `u64::MAX` while the decoder has not reached it.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, end: u64) {
        self.0.store(end, Ordering::Release);
    }
}

/// What a range of a BGZF file reads.
pub(crate) struct Planned {
    /// The decompressed text, starting one byte before the first owned byte (or at the start).
    pub reader: BlockRange,
    /// Position of the first owned byte in the reader's coordinates: 0 when the text starts
    /// with the first owned byte, otherwise 1 (the reader starts at the byte before).
    pub start: u64,
    /// Where the owned bytes end, in the same coordinates.
    pub end: RangeEnd,
}

/// Plans the reading of the compressed bytes `[start, end)` of a BGZF file of `size` bytes;
/// `None` when no block starts in the range (it owns no record).
pub(crate) fn plan(
    mut file: Box<dyn ReadSeek>,
    size: u64,
    start: u64,
    end: u64,
) -> io::Result<Option<Planned>> {
    let first = if start == 0 {
        0
    } else {
        match block_at_or_after(&mut file, start, size)? {
            Some(first) if first < end => first,
            _ => return Ok(None),
        }
    };
    // Headers are found by their bytes, which a block's compressed data may hold too (a
    // crafted file can plant a fake block there): a block that starts before `first` and runs
    // past it means `first` lies inside a real block. Refuse rather than read a fake block.
    if first > 0
        && let Some(covering) = covering_block(&mut file, first, size)?
    {
        return Err(ambiguous(format!(
            "the block found at byte {first} lies inside the block at byte {covering}"
        )));
    }
    let previous = if first == 0 {
        None
    } else {
        previous_nonempty_block(&mut file, first)?
    };
    let range_end = RangeEnd::unknown();
    let mut reader = bgzf::io::Reader::new(file);
    let (position, owned_start) = match previous {
        // Start on the last byte of the block before, so the parser sees whether the first
        // owned byte starts a line.
        Some((block, length)) => (bgzf::VirtualPosition::try_from((block, length - 1)), 1),
        None => (bgzf::VirtualPosition::try_from((first, 0)), 0),
    };
    let position =
        position.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    reader.seek(position)?;
    Ok(Some(Planned {
        reader: BlockRange {
            inner: reader,
            end,
            produced: 0,
            range_end: range_end.clone(),
            published: false,
        },
        start: owned_start,
        end: range_end,
    }))
}

/// Reads up to `buffer.len()` bytes at `offset`; fewer only at the end of the file.
fn read_at(file: &mut dyn ReadSeek, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
    file.seek(SeekFrom::Start(offset))?;
    read_up_to(file, buffer)
}

/// Reads until `buffer` is full or the input ends; returns the bytes read.
pub(crate) fn read_up_to(
    reader: &mut (impl Read + ?Sized),
    buffer: &mut [u8],
) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// True when a valid block header is at `offset` and the block after it is another one or the
/// end of the file (two headers in a row do not happen by chance in deflate data).
fn is_block_at(file: &mut dyn ReadSeek, offset: u64, size: u64) -> io::Result<Option<u64>> {
    let mut header = [0u8; HEADER_LEN];
    if read_at(file, offset, &mut header)? < HEADER_LEN {
        return Ok(None);
    }
    let Some(length) = block_size(&header) else {
        return Ok(None);
    };
    let next = offset + length;
    if next == size {
        return Ok(Some(length));
    }
    if next > size || read_at(file, next, &mut header)? < HEADER_LEN {
        return Ok(None);
    }
    Ok(block_size(&header).map(|_| length))
}

/// The first block starting at or after `at`, if any before the end of the file.
fn block_at_or_after(file: &mut dyn ReadSeek, at: u64, size: u64) -> io::Result<Option<u64>> {
    // Blocks are at most 64 KiB: one starts within 64 KiB of any offset inside the data.
    let window_end = (at + MAX_BLOCK + HEADER_LEN as u64).min(size);
    let mut window = vec![0u8; usize::try_from(window_end.saturating_sub(at)).unwrap_or(0)];
    let filled = read_at(file, at, &mut window)?;
    for (i, pair) in window[..filled].windows(4).enumerate() {
        if pair == BLOCK_MAGIC {
            let candidate = at + i as u64;
            if is_block_at(file, candidate, size)?.is_some() {
                return Ok(Some(candidate));
            }
        }
    }
    Ok(None)
}

/// The error of a file whose block boundaries cannot be told from its bytes.
fn ambiguous(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the BGZF blocks of this file cannot be told apart from the data inside them \
             ({what}): the file is corrupt or crafted; index it (`flightbear index` writes a \
             .gzi) or read it with one partition"
        ),
    )
}

/// A block (a valid header followed by another one, or by the end of the file) that starts
/// within [`MAX_BLOCK`] bytes before `at` and ends after it, if any: then `at` lies inside it.
fn covering_block(file: &mut dyn ReadSeek, at: u64, size: u64) -> io::Result<Option<u64>> {
    let from = at.saturating_sub(MAX_BLOCK);
    let mut window = vec![0u8; usize::try_from(at - from).unwrap_or(0) + HEADER_LEN];
    let filled = read_at(file, from, &mut window)?;
    for i in 0..(at - from) as usize {
        if i + HEADER_LEN > filled {
            break;
        }
        if let Some(length) = block_size(&window[i..filled])
            && from + i as u64 + length > at
            && is_block_at(file, from + i as u64, size)?.is_some()
        {
            return Ok(Some(from + i as u64));
        }
    }
    Ok(None)
}

/// The block ending exactly at `block`, with its uncompressed length, skipping back over
/// empty blocks; `None` when every block before `block` is empty. Two headers that both end
/// at `block` (one of them planted in the other's data) are an error.
fn previous_nonempty_block(
    file: &mut dyn ReadSeek,
    mut block: u64,
) -> io::Result<Option<(u64, u16)>> {
    // The bytes `[window_start, window_start + window.len())` of the file.
    let (mut window, mut window_start) = (Vec::new(), 0u64);
    for _ in 0..MAX_EMPTY_BLOCKS {
        let from = block.saturating_sub(MAX_BLOCK);
        if from < window_start || window.is_empty() {
            window_start = block.saturating_sub(LOOK_BACK);
            window = vec![0u8; usize::try_from(block - window_start).unwrap_or(0)];
            let filled = read_at(file, window_start, &mut window)?;
            window.truncate(filled);
        }
        // The bytes before `block` a block ending there may start in.
        let end = usize::try_from(block - window_start)
            .unwrap_or(0)
            .min(window.len());
        let skip = usize::try_from(from - window_start).unwrap_or(0).min(end);
        let before = &window[..end];
        let mut previous = None;
        for found in memchr::memmem::find_iter(&before[skip..], &BLOCK_MAGIC) {
            let i = skip + found;
            if let Some(length) = block_size(&before[i..])
                && window_start + i as u64 + length == block
            {
                if let Some(other) = previous {
                    return Err(ambiguous(format!(
                        "the blocks at bytes {other} and {} both end at byte {block}",
                        window_start + i as u64
                    )));
                }
                previous = Some(window_start + i as u64);
            }
        }
        let Some(start) = previous else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no BGZF block ends at byte {block}: the file is not BGZF throughout"),
            ));
        };
        // The block's uncompressed length is the last 4 bytes of the block (ISIZE).
        let isize = before.get(end.saturating_sub(4)..end).unwrap_or_default();
        let length =
            u32::from_le_bytes(isize.try_into().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "a BGZF block ends early")
            })?);
        if length > 0 {
            let length = u16::try_from(length).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a BGZF block holds more than 64 KiB",
                )
            })?;
            return Ok(Some((start, length)));
        }
        if start == 0 {
            return Ok(None);
        }
        block = start;
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("more than {MAX_EMPTY_BLOCKS} empty BGZF blocks in a row"),
    ))
}

/// The decompressed bytes of a BGZF range, telling [`RangeEnd`] where the first block at or
/// after the range's end begins.
pub(crate) struct BlockRange {
    inner: bgzf::io::Reader<Box<dyn ReadSeek>>,
    /// Compressed offset where the range ends.
    end: u64,
    /// Decompressed bytes handed out so far.
    produced: u64,
    range_end: RangeEnd,
    published: bool,
}

impl Read for BlockRange {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let data = self.inner.fill_buf()?;
        if data.is_empty() {
            return Ok(0);
        }
        if !self.published {
            let block = self.inner.virtual_position().compressed();
            if block >= self.end {
                self.range_end.set(self.produced);
                self.published = true;
            }
        }
        let data = self.inner.fill_buf()?;
        let n = out.len().min(data.len());
        out[..n].copy_from_slice(&data[..n]);
        self.inner.consume(n);
        self.produced += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// One BGZF block holding `data` in a stored (uncompressed) deflate block, so the data
    /// appears as is among the block's compressed bytes.
    fn stored_block(data: &[u8]) -> Vec<u8> {
        let total = HEADER_LEN + 5 + data.len() + 8;
        let mut block = vec![
            0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 6, 0, b'B', b'C', 2, 0,
        ];
        block.extend_from_slice(&u16::try_from(total - 1).unwrap().to_le_bytes());
        let length = u16::try_from(data.len()).unwrap();
        block.push(1); // the last deflate block, stored
        block.extend_from_slice(&length.to_le_bytes());
        block.extend_from_slice(&(!length).to_le_bytes());
        block.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(data);
        block.extend_from_slice(&crc.sum().to_le_bytes());
        block.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        block
    }

    /// A block header claiming a block of `length` bytes (nothing behind it is valid).
    fn fake_header(length: usize) -> Vec<u8> {
        let mut header = stored_block(b"")[..HEADER_LEN - 2].to_vec();
        header.extend_from_slice(&u16::try_from(length - 1).unwrap().to_le_bytes());
        header
    }

    fn plan_of(file: &[u8], start: u64) -> io::Result<Option<Planned>> {
        let size = file.len() as u64;
        plan(Box::new(Cursor::new(file.to_vec())), size, start, size)
    }

    /// `data` with a fake header planted at `at` whose block would end `to` bytes after the
    /// start of the block holding the data (a stored block puts its data 23 bytes in).
    fn planted(mut data: Vec<u8>, at: usize, to: usize) -> Vec<u8> {
        let header = fake_header(to - (HEADER_LEN + 5 + at));
        data.splice(at..at + HEADER_LEN, header);
        data
    }

    #[test]
    fn a_fake_block_planted_inside_a_real_one_is_refused_not_read() {
        let a = stored_block(b">a\nACGTACGT\n");
        let text = vec![b'C'; 400];
        let real = stored_block(&text);
        // In `r`, a header whose block would end where the real one ends: a range starting
        // before it would take it for the first block of the range.
        let r = stored_block(&planted(text, 100, real.len()));
        let t = stored_block(b">b\nGGGG\n");
        let file = [a.clone(), r.clone(), t, stored_block(b"")].concat();
        let inside_r = (a.len() + 30) as u64;
        let error = plan_of(&file, inside_r).err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(
            error.to_string().contains("lies inside the block at byte"),
            "{error}"
        );
        // A range that starts on the real block still plans; one that starts on the block
        // after it cannot tell which of the two came before.
        assert!(plan_of(&file, 1).unwrap().is_some());
        let error = plan_of(&file, (a.len() + r.len() - 5) as u64)
            .err()
            .expect("refused");
        assert!(error.to_string().contains("both end at byte"), "{error}");
    }

    #[test]
    fn a_range_looks_back_past_thousands_of_empty_blocks() {
        let a = stored_block(b">a\nACGT\n");
        let empty = stored_block(b"");
        let t = stored_block(b">b\nGGGG\n");
        let file = |empties: usize| [a.clone(), empty.repeat(empties), t.clone()].concat();
        // A range starting among 3000 empty blocks (concatenated empty files) finds `a`
        // before them.
        let many = file(3000);
        let planned = plan_of(&many, (a.len() + 2500 * empty.len() + 3) as u64).unwrap();
        assert_eq!(planned.expect("a block starts in the range").start, 1);
        let error = plan_of(&file(5000), (a.len() + 4500 * empty.len() + 3) as u64)
            .err()
            .expect("too many");
        assert!(
            error.to_string().contains("empty BGZF blocks in a row"),
            "{error}"
        );
    }

    #[test]
    fn two_blocks_ending_where_a_range_starts_are_refused() {
        // A header planted in `a` whose block would end where `r` ends: which block comes
        // before `t` (and so whether `t` starts a line) cannot be told.
        let r = stored_block(&[b'A'; 200]);
        let text = vec![b'C'; 400];
        let a_length = stored_block(&text).len();
        let a = stored_block(&planted(text, 50, a_length + r.len()));
        let t = stored_block(b">b\nGGGG\n");
        let file = [a.clone(), r.clone(), t, stored_block(b"")].concat();
        let error = plan_of(&file, (a.len() + 10) as u64)
            .err()
            .expect("refused");
        assert!(error.to_string().contains("both end at byte"), "{error}");
    }
}
