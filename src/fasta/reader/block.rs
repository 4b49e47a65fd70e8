//! The reusable input block a FASTA reader parses from: one large buffer, refilled in place.

use std::io::{self, ErrorKind, Read};

use super::memory::{OutOfMemory, ScanMemory, TrackedVec};

/// Size of the reusable input block. Small enough to stay in L2 cache between the `read`
/// that fills it and the copy out of it, large enough that syscalls do not matter.
pub(super) const BLOCK_SIZE: usize = 1 << 20;

/// Input bytes held for parsing: `bytes[pos..filled]` is read but not parsed yet.
///
/// Invariant: `pos <= filled <= bytes.len()`.
#[derive(Debug)]
pub(super) struct Block {
    /// The buffer, reserved in the scan's memory; only `bytes[..filled]` holds input.
    pub(super) bytes: TrackedVec<u8>,
    /// Index of the first unparsed byte.
    pub(super) pos: usize,
    /// Number of bytes of input held.
    pub(super) filled: usize,
    /// File offset of `bytes[0]`.
    pub(super) offset: u64,
    /// The input has no more bytes.
    pub(super) eof: bool,
}

impl Block {
    /// An empty block whose first byte will be the file's byte `offset`; it takes its memory
    /// (`BLOCK_SIZE` bytes) at the first [`Self::grow_if_full`].
    pub(super) fn new(offset: u64, memory: &ScanMemory) -> Self {
        Self {
            bytes: TrackedVec::new(memory),
            pos: 0,
            filled: 0,
            offset,
            eof: false,
        }
    }

    /// The bytes read but not parsed yet.
    #[inline]
    pub(super) fn unparsed(&self) -> &[u8] {
        &self.bytes[self.pos..self.filled]
    }

    /// True when every byte held has been parsed.
    #[inline]
    pub(super) fn is_parsed(&self) -> bool {
        self.pos >= self.filled
    }

    /// File offset of `bytes[index]`.
    #[inline]
    pub(super) fn file_offset(&self, index: usize) -> u64 {
        self.offset + index as u64
    }

    /// Moves the unparsed bytes to the front, so `pos` becomes 0.
    pub(super) fn discard_parsed(&mut self) {
        if self.pos > 0 {
            self.bytes.copy_within(self.pos..self.filled, 0);
            self.offset += self.pos as u64;
            self.filled -= self.pos;
            self.pos = 0;
        }
    }

    /// Makes room when the block is full of unparsed bytes (only an unfinished header line
    /// keeps that much), doubling it up to `max_len`; a new block gets `BLOCK_SIZE` bytes.
    /// `Ok(false)` when it is already `max_len` bytes large.
    pub(super) fn grow_if_full(&mut self, max_len: usize) -> Result<bool, OutOfMemory> {
        if self.filled < self.bytes.len() {
            return Ok(true);
        }
        let grown = (self.bytes.len() * 2).clamp(BLOCK_SIZE, max_len.max(BLOCK_SIZE));
        if grown <= self.bytes.len() {
            return Ok(false);
        }
        self.bytes.resize(grown, 0)?;
        Ok(true)
    }

    /// Reads from `input` until the block is full or the input ends.
    pub(super) fn fill_from(&mut self, input: &mut impl Read) -> io::Result<()> {
        while self.filled < self.bytes.len() {
            let space = &mut self.bytes[self.filled..];
            let space_len = space.len();
            match input.read(space) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    // `Read` promises this; a reader breaking it would move `filled` past the buffer.
                    assert!(
                        n <= space_len,
                        "a reader returned more bytes than asked for"
                    );
                    self.filled += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> ScanMemory {
        ScanMemory::unbounded(0)
    }

    #[test]
    fn discarding_parsed_bytes_keeps_file_offsets() {
        let mut block = Block::new(100, &memory());
        assert!(block.grow_if_full(BLOCK_SIZE).unwrap());
        block.fill_from(&mut &b">a\nACGT\n"[..]).unwrap();
        assert!(block.eof);
        block.pos = 3;
        block.discard_parsed();
        assert_eq!(block.unparsed(), b"ACGT\n");
        assert_eq!(block.file_offset(0), 103);
    }

    #[test]
    fn a_full_block_grows_up_to_its_limit_and_reserves_what_it_holds() {
        let memory = memory();
        let mut block = Block::new(0, &memory);
        assert_eq!(memory.reserved(), 0);
        assert!(block.grow_if_full(3 * BLOCK_SIZE).unwrap());
        assert_eq!(block.bytes.len(), BLOCK_SIZE);
        block.filled = BLOCK_SIZE;
        assert!(block.grow_if_full(3 * BLOCK_SIZE).unwrap());
        assert_eq!(block.bytes.len(), 2 * BLOCK_SIZE);
        block.filled = 2 * BLOCK_SIZE;
        assert!(block.grow_if_full(3 * BLOCK_SIZE).unwrap());
        block.filled = 3 * BLOCK_SIZE;
        assert!(!block.grow_if_full(3 * BLOCK_SIZE).unwrap());
        assert_eq!(memory.reserved(), block.bytes.capacity());
        drop(block);
        assert_eq!(memory.reserved(), 0);
    }
}
