//! `flightbear index`: a samtools-compatible FASTA index (`.fai`), and for BGZF files the
//! gzip index (`.gzi`) that lets readers find an uncompressed offset's block.
//!
//! The `.fai` is noodles' indexer over the (decompressed) text: one line per record with its
//! name, length, offset of the first base, bases per line and bytes per line, exactly the
//! file `samtools faidx` writes. Like samtools, it requires every sequence line of a record
//! but the last to have the same length. Plain gzip cannot be indexed (no block boundaries
//! to seek to): recompress with `bgzip`. Both files are written beside the FASTA file,
//! through a temporary file renamed into place, so a reader never sees half an index.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::num::NonZero;
use std::path::{Path, PathBuf};

use noodles_bgzf as bgzf;
use noodles_fasta as fasta;

use super::bgzf::{block_size, read_up_to};
use super::reader::validate::first_invalid_sequence_byte;
use crate::compression::{Compression, MAGIC_LEN};

/// What `index_file` wrote.
#[derive(Debug, PartialEq, Eq)]
pub struct Indexed {
    /// The `.fai` file.
    pub fai: PathBuf,
    /// The `.gzi` file of a BGZF input.
    pub gzi: Option<PathBuf>,
    /// Records indexed.
    pub records: usize,
    /// Records left out, as samtools leaves them out.
    pub skipped: Skipped,
}

/// Why a file could not be indexed; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The file could not be read or the index written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// No record has bases: samtools refuses such a file too, and an empty index would hide
    /// the records a scan reads.
    #[error(
        "{path}: no record with bases, nothing to index ({empty} records without bases; samtools writes no index either)"
    )]
    NothingToIndex { path: PathBuf, empty: usize },
    /// The file is compressed in a way that has no random access.
    #[error("{path}: {what} cannot be indexed; recompress it with `bgzip` (BGZF) or decompress it")]
    NotSeekable { path: PathBuf, what: &'static str },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `<path>.fai`, and `<path>.gzi` when `path` is BGZF.
pub fn index_file(path: &Path) -> Result<Indexed, IndexError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut head = [0u8; 18];
    let read = read_up_to(&mut file, &mut head).map_err(io_error(path))?;
    file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
    let compression = Compression::sniff(&head[..read.min(MAGIC_LEN)]);
    let ((index, skipped), gzi) = match compression {
        Compression::None => (fai_of(BufReader::new(file)).map_err(io_error(path))?, None),
        Compression::Gzip if block_size(&head[..read]).is_some() => {
            let blocks = bgzf_blocks(BufReader::new(file)).map_err(io_error(path))?;
            let reader = bgzf::io::Reader::new(File::open(path).map_err(io_error(path))?);
            (fai_of(reader).map_err(io_error(path))?, Some(blocks))
        }
        Compression::Gzip => {
            return Err(IndexError::NotSeekable {
                path: path.to_path_buf(),
                what: "plain gzip (not BGZF)",
            });
        }
        Compression::Bzip2 | Compression::Xz | Compression::Zstd => {
            return Err(IndexError::NotSeekable {
                path: path.to_path_buf(),
                what: "a bzip2, xz or zstd file",
            });
        }
    };
    let records = index.as_ref().len();
    if records == 0 {
        return Err(IndexError::NothingToIndex {
            path: path.to_path_buf(),
            empty: skipped.empty,
        });
    }
    let fai = path.with_added_extension("fai");
    write_atomically(&fai, |out| {
        fasta::fai::io::Writer::new(out).write_index(&index)
    })?;
    let gzi = match gzi {
        Some(blocks) => {
            let gzi = path.with_added_extension("gzi");
            let index = bgzf::gzi::Index::from(blocks);
            write_atomically(&gzi, |out| {
                bgzf::gzi::io::Writer::new(out).write_index(&index)
            })?;
            Some(gzi)
        }
        None => None,
    };
    Ok(Indexed {
        fai,
        gzi,
        records,
        skipped,
    })
}

/// One line of FASTA text as the indexer sees it (never held whole in memory).
struct Line {
    /// Bytes including the line end.
    width: u64,
    /// Bytes without `\n` or `\r\n`.
    bases: u64,
    /// The first byte.
    first: u8,
    /// A byte of a sequence line that is no base (outside printable, non-space ASCII; line
    /// ends aside), which a scan refuses.
    invalid: Option<u8>,
}

/// Reads the next line of `reader`, handing the bytes of a header line after `>` to
/// `header` (in pieces); `None` at the end of the text.
fn next_line<R: io::BufRead>(
    reader: &mut R,
    mut header: impl FnMut(&[u8]),
) -> io::Result<Option<Line>> {
    let (mut width, mut first, mut previous) = (0u64, None, None);
    // A '\r' ending the previous piece: a line end if '\n' (or the end of the text) follows.
    let (mut invalid, mut pending_return) = (None, false);
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            let Some(first) = first else {
                return Ok(None);
            };
            // The last line, without a line end.
            let bases = width - u64::from(previous == Some(b'\r'));
            return Ok(Some(Line {
                width,
                bases,
                first,
                invalid,
            }));
        }
        let end = memchr::memchr(b'\n', buffer);
        let chunk = &buffer[..end.map_or(buffer.len(), |i| i + 1)];
        let line_first = *first.get_or_insert(chunk[0]);
        if line_first == b'>' {
            let text = if width == 0 { &chunk[1..] } else { chunk };
            header(text);
        } else if invalid.is_none() {
            if pending_return && chunk[0] != b'\n' {
                invalid = Some(b'\r');
            }
            let mut text = chunk.strip_suffix(b"\n").unwrap_or(chunk);
            pending_return = end.is_none() && text.last() == Some(&b'\r');
            text = text.strip_suffix(b"\r").unwrap_or(text);
            if let Some(at) = first_invalid_sequence_byte(text) {
                invalid = invalid.or(Some(text[at]));
            }
        }
        let before_end = match end {
            Some(0) => previous,
            Some(i) => Some(chunk[i - 1]),
            None => None,
        };
        previous = chunk.last().copied();
        width += chunk.len() as u64;
        let consumed = chunk.len();
        reader.consume(consumed);
        if end.is_some() {
            let bases = width - 1 - u64::from(before_end == Some(b'\r'));
            return Ok(Some(Line {
                width,
                bases,
                first: line_first,
                invalid,
            }));
        }
    }
}

/// What indexing a file found besides the records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Records without a base (samtools leaves them out of the index).
    pub empty: usize,
    /// Names seen again after their first record (samtools keeps the first).
    pub duplicates: Vec<String>,
}

/// A record being indexed.
struct Open {
    name: Vec<u8>,
    offset: u64,
    length: u64,
    /// Bases and bytes of the first sequence line.
    line: Option<(u64, u64)>,
    /// A line shorter than the first (or blank) was seen: only blank lines may follow.
    ended: bool,
}

/// The samtools index of FASTA text, with samtools' rules: every sequence line of a record
/// but the last has the same number of bases and bytes, blank lines only at a record's end,
/// records without bases left out, the first of records with the same name kept.
fn fai_of<R: io::BufRead>(mut reader: R) -> io::Result<(fasta::fai::Index, Skipped)> {
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidData, message);
    let mut records: Vec<fasta::fai::Record> = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut skipped = Skipped::default();
    let mut open: Option<Open> = None;
    let (mut offset, mut number) = (0u64, 0u64);
    let mut close = |record: Open, skipped: &mut Skipped| {
        let name = String::from_utf8_lossy(&record.name).into_owned();
        let Some((bases, width)) = record.line.filter(|_| record.length > 0) else {
            skipped.empty += 1;
            return;
        };
        if !names.insert(name.clone()) {
            skipped.duplicates.push(name);
            return;
        }
        let (Some(bases), Some(width)) = (NonZero::new(bases), NonZero::new(width)) else {
            skipped.empty += 1;
            return;
        };
        records.push(fasta::fai::Record::new(
            record.name,
            record.length,
            record.offset,
            bases,
            width,
        ));
    };
    loop {
        let mut name = Vec::new();
        let mut in_name = true;
        let line = next_line(&mut reader, |bytes| {
            if in_name {
                match bytes.iter().position(|b| b.is_ascii_whitespace()) {
                    Some(end) => {
                        name.extend_from_slice(&bytes[..end]);
                        in_name = false;
                    }
                    None => name.extend_from_slice(bytes),
                }
            }
        })?;
        let Some(line) = line else { break };
        number += 1;
        offset += line.width;
        if line.first == b'>' {
            if let Some(record) = open.take() {
                close(record, &mut skipped);
            }
            open = Some(Open {
                name,
                offset,
                length: 0,
                line: None,
                ended: false,
            });
            continue;
        }
        let Some(record) = open.as_mut() else {
            return Err(invalid(format!(
                "line {number}: text before the first '>' header"
            )));
        };
        let name = || String::from_utf8_lossy(&record.name).into_owned();
        if let Some(byte) = line.invalid {
            return Err(invalid(format!(
                "line {number}: sequence '{}' holds byte 0x{byte:02x}, which is no base (a \
                 scan of the file refuses it too)",
                name()
            )));
        }
        let blank = line.bases == 0;
        match record.line {
            None if blank => record.ended = true,
            None => record.line = Some((line.bases, line.width)),
            Some(_) if blank => record.ended = true,
            Some((bases, width)) => {
                if record.ended
                    || line.bases > bases
                    || (line.bases == bases && line.width != width)
                {
                    return Err(invalid(format!(
                        "line {number}: sequence '{}' has lines of different lengths (every line \
                         but the last must have {bases} bases); samtools cannot index it either",
                        name()
                    )));
                }
                record.ended = line.bases < bases;
            }
        }
        if !blank && record.line.is_some() && record.ended && record.length == 0 {
            // A blank line before the first bases.
            return Err(invalid(format!(
                "line {number}: sequence '{}' starts with a blank line",
                name()
            )));
        }
        record.length += line.bases;
    }
    if let Some(record) = open.take() {
        close(record, &mut skipped);
    }
    Ok((fasta::fai::Index::from(records), skipped))
}

/// The (compressed, uncompressed) offset of every BGZF block but the first, as a `.gzi`
/// holds them, read from the block headers and trailers without decompressing.
fn bgzf_blocks<R: Read + Seek>(mut reader: R) -> io::Result<Vec<(u64, u64)>> {
    let (mut compressed, mut uncompressed) = (0u64, 0u64);
    let mut blocks = Vec::new();
    let mut header = [0u8; 18];
    loop {
        let filled = read_up_to(&mut reader, &mut header)?;
        if filled == 0 {
            return Ok(blocks);
        }
        let Some(size) = block_size(&header[..filled]) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "not a BGZF block at byte {compressed} (a gzip member without the BC field)"
                ),
            ));
        };
        if size < 18 + 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("BGZF block at byte {compressed} is too short"),
            ));
        }
        // The trailer: CRC32 then ISIZE, the block's uncompressed size.
        reader.seek_relative(i64::try_from(size - 18 - 4).unwrap_or(i64::MAX))?;
        let mut isize = [0u8; 4];
        reader.read_exact(&mut isize).map_err(|_| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the BGZF block at byte {compressed} is cut short"),
            )
        })?;
        if compressed > 0 {
            blocks.push((compressed, uncompressed));
        }
        compressed += size;
        uncompressed += u64::from(u32::from_le_bytes(isize));
    }
}

/// Writes `path` through `<path>.tmp-<pid>`, renamed into place once complete.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
) -> Result<(), IndexError> {
    let temporary = path.with_added_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut out = io::BufWriter::new(File::create(&temporary)?);
        write(&mut out)?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgzip(text: &[u8], block: usize) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut writer = bgzf::io::Writer::new(&mut out);
            for chunk in text.chunks(block) {
                writer.write_all(chunk).unwrap();
                writer.flush().unwrap();
            }
            writer.finish().unwrap();
        }
        out
    }

    #[test]
    fn plain_files_get_the_samtools_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.fa");
        std::fs::write(&path, ">a desc\nACGT\nAC\n>b\nGGGGG\n").unwrap();
        let indexed = index_file(&path).unwrap();
        assert_eq!(indexed.records, 2);
        assert_eq!(indexed.gzi, None);
        let fai = std::fs::read_to_string(dir.path().join("x.fa.fai")).unwrap();
        assert_eq!(fai, "a\t6\t8\t4\t5\nb\t5\t19\t5\t6\n");
    }

    #[test]
    fn bgzf_files_get_a_gzi_of_their_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.fa.gz");
        let text = b">a\nACGTACGT\nACGT\n>b\nTTTT\n";
        std::fs::write(&path, bgzip(text, 7)).unwrap();
        let indexed = index_file(&path).unwrap();
        assert_eq!(indexed.records, 2);
        let gzi = bgzf::gzi::fs::read(indexed.gzi.unwrap()).unwrap();
        // Blocks of 7 bytes: 25 bytes make 4 blocks, then the empty end-of-file block.
        assert_eq!(gzi.query(7).unwrap().uncompressed(), 0);
        assert_eq!(gzi.query(24).unwrap().uncompressed(), 3);
        let fai = std::fs::read_to_string(dir.path().join("x.fa.gz.fai")).unwrap();
        assert_eq!(fai, "a\t12\t3\t8\t9\nb\t4\t20\t4\t5\n");
    }

    /// Index text as a file `x.fa` and return the `.fai` text, or the error.
    fn fai_text(text: &[u8]) -> Result<(String, Skipped), String> {
        let (index, skipped) = fai_of(text).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        fasta::fai::io::Writer::new(&mut out)
            .write_index(&index)
            .unwrap();
        Ok((String::from_utf8(out).unwrap(), skipped))
    }

    #[test]
    fn samtools_rules_for_odd_files() {
        // Each expectation is what `samtools faidx` (htslib 1.21, through pysam) wrote.
        let (fai, skipped) = fai_text(b">a desc\nACGT\nAC\n>e\n>b\nGGGGG\n").unwrap();
        assert_eq!(fai, "a\t6\t8\t4\t5\nb\t5\t22\t5\t6\n");
        assert_eq!(skipped.empty, 1);
        let (fai, _) = fai_text(b">a\r\nACGT\r\nAC\r\n>b\r\nGG\r\n").unwrap();
        assert_eq!(fai, "a\t6\t4\t4\t6\nb\t2\t18\t2\t4\n");
        let (fai, skipped) = fai_text(b">a\nACGT\nAC\n\n>b\nGG\n\n\n>a\nTT\n").unwrap();
        assert_eq!(fai, "a\t6\t3\t4\t5\nb\t2\t15\t2\t3\n");
        assert_eq!(skipped.duplicates, ["a"]);
        let (fai, _) = fai_text(b">a x\tb\nACGT\n>\nAC\n").unwrap();
        assert_eq!(fai, "a\t4\t7\t4\t5\n\t2\t14\t2\t3\n");
        let (fai, _) = fai_text(b">a\nACGT\nAC").unwrap();
        assert_eq!(fai, "a\t6\t3\t4\t5\n");
        for bad in [
            &b">a\nACGT\n\nAC\n"[..],
            b">a\nACG\nACGT\nA\n",
            b"junk\n>a\nAC\n",
        ] {
            let error = fai_text(bad).unwrap_err();
            assert!(error.starts_with("line "), "{error}");
        }
    }

    #[test]
    fn bytes_a_scan_refuses_are_not_indexed_as_bases() {
        for (text, byte) in [
            (&b">a\nAC GT\nACG\n"[..], "0x20"),
            (b">a\nACGT\nA\0G\n", "0x00"),
            (b">a\nAC\rGT\r\n", "0x0d"),
            (b">a\nACGT\r\r\n", "0x0d"),
            (b">a\nAC\xffGT\n", "0xff"),
        ] {
            let error = fai_text(text).unwrap_err();
            assert!(error.contains(byte) && error.contains("line "), "{error}");
        }
        // Line ends (LF, CRLF, a CR before the end of the text) are not bases; a '>' inside
        // a line is printable, as for scans.
        let (fai, _) = fai_text(b">a\r\nAC>T\r\nAC\r").unwrap();
        assert_eq!(fai, "a\t6\t4\t4\t6\n");
        // A CRLF split between two reads of the buffer is one line end.
        let text = b">a\r\nACGTAC\r\nACGTAC\r\nA\r\n";
        for capacity in 1..text.len() {
            let (index, _) = fai_of(BufReader::with_capacity(capacity, &text[..])).unwrap();
            assert_eq!(index.as_ref()[0].length(), 13, "capacity {capacity}");
        }
    }

    #[test]
    fn lines_longer_than_the_read_buffer_are_counted_whole() {
        let sequence = "ACGT".repeat(5000);
        let text = format!(">long\r\n{sequence}\r\n{sequence}\r\nAC\r\n");
        let (index, _) = fai_of(BufReader::with_capacity(7, text.as_bytes())).unwrap();
        let record = &index.as_ref()[0];
        assert_eq!(record.length(), 40002);
        assert_eq!(record.line_base_count().get(), 20000);
        assert_eq!(record.line_width().get(), 20002);
        assert_eq!(record.position(), 7);
    }

    #[test]
    fn unindexable_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.fa.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b">a\nACGT\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let error = index_file(&path).unwrap_err().to_string();
        assert!(
            error.contains("plain gzip") && error.contains("bgzip"),
            "{error}"
        );
        let ragged = dir.path().join("r.fa");
        std::fs::write(&ragged, ">a\nACG\nACGT\nA\n").unwrap();
        let error = index_file(&ragged).unwrap_err().to_string();
        assert!(error.contains("r.fa"), "{error}");
        assert!(!dir.path().join("r.fa.fai").exists());
        // Nothing to index: samtools fails on these too.
        for (name, text) in [("e.fa", ""), ("h.fa", ">a\n"), ("hh.fa", ">a\n\n>b\n")] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let error = index_file(&path).unwrap_err().to_string();
            assert!(
                error.contains(name) && error.contains("nothing to index"),
                "{error}"
            );
            assert!(!dir.path().join(format!("{name}.fai")).exists());
        }
    }
}
