//! Test files: gzip and hand-made BGZF.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use tempfile::TempDir;

pub fn write_file(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    path
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// One BGZF block (a gzip member with the `BC` field) holding `data`, written by hand so the
/// tests choose where blocks end.
pub fn bgzf_block(data: &[u8]) -> Vec<u8> {
    let mut deflate =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflate.write_all(data).unwrap();
    let compressed = deflate.finish().unwrap();
    let size = u16::try_from(18 + compressed.len() + 8 - 1).unwrap();
    let mut block = vec![
        0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 6, 0, b'B', b'C', 2, 0,
    ];
    block.extend_from_slice(&size.to_le_bytes());
    block.extend_from_slice(&compressed);
    let mut crc = flate2::Crc::new();
    crc.update(data);
    block.extend_from_slice(&crc.sum().to_le_bytes());
    block.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    block
}

/// BGZF of `text` in blocks of `block` bytes, with an empty block (the end-of-file marker of
/// a concatenated file) after the `empty_after`-th block and at the end.
pub fn bgzf_blocks(text: &[u8], block: usize, empty_after: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, chunk) in text.chunks(block).enumerate() {
        out.extend_from_slice(&bgzf_block(chunk));
        if i == empty_after {
            out.extend_from_slice(&bgzf_block(b""));
        }
    }
    out.extend_from_slice(&bgzf_block(b""));
    out
}
