//! Turning an object-store object into decompressed bytes: compression sniffing and a blocking bridge for async streams.

use std::io::{self, BufReader, Cursor, Read};

use bytes::{Buf, Bytes};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use futures::StreamExt;
use futures::stream::BoxStream;

/// How many leading bytes decide the compression.
pub(crate) const MAGIC_LEN: usize = 6;

/// Compression of a file, decided by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Plain text.
    None,
    /// gzip, including BGZF and concatenated members.
    Gzip,
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Detects the compression from a file's first bytes. FASTA text starts with `>` or
    /// whitespace, so none of these signatures can be mistaken for plain FASTA.
    pub(crate) fn sniff(head: &[u8]) -> Self {
        match head {
            [0x1f, 0x8b, ..] => Self::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            [b'B', b'Z', b'h', ..] => Self::Bzip2,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Self::Xz,
            _ => Self::None,
        }
    }

    /// True for every compressed variant.
    pub(crate) fn is_compressed(self) -> bool {
        self != Self::None
    }
}

/// Reads the first bytes of `raw`, detects the compression, and returns a reader of the
/// decompressed text (which still includes those first bytes).
pub(crate) fn decompressed(
    mut raw: Box<dyn Read + Send>,
) -> io::Result<(Compression, Box<dyn Read + Send>)> {
    let mut head = [0u8; MAGIC_LEN];
    let mut len = 0;
    while len < MAGIC_LEN {
        let Some(space) = head.get_mut(len..) else {
            break;
        };
        match raw.read(space) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = head.get(..len).unwrap_or_default().to_vec();
    let compression = Compression::sniff(&head);
    let whole: Box<dyn Read + Send> = Box::new(Read::chain(Cursor::new(head), raw));
    let decoded: Box<dyn Read + Send> = match compression {
        Compression::None => whole,
        // Always multi-member: BGZF and `cat a.gz b.gz` are several gzip members in a row,
        // and stopping after the first one would silently drop records.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(256 * 1024, whole),
        )),
        Compression::Bzip2 => convert(FileCompressionType::BZIP2, whole)?,
        Compression::Xz => convert(FileCompressionType::XZ, whole)?,
        Compression::Zstd => convert(FileCompressionType::ZSTD, whole)?,
    };
    Ok((compression, decoded))
}

fn convert(
    compression: FileCompressionType,
    raw: Box<dyn Read + Send>,
) -> io::Result<Box<dyn Read + Send>> {
    compression.convert_read(raw).map_err(io::Error::other)
}

/// A blocking [`Read`] over an async byte stream, for use on a blocking thread only.
pub(crate) struct StreamRead {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    runtime: tokio::runtime::Handle,
    current: Bytes,
}

impl StreamRead {
    /// Wraps `stream`; `runtime` drives it while a read waits.
    pub(crate) fn new(
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            stream,
            runtime,
            current: Bytes::new(),
        }
    }
}

impl Read for StreamRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), self.current.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_decide_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 4]), Compression::Gzip);
        assert_eq!(Compression::sniff(b">chr1\n"), Compression::None);
        assert_eq!(Compression::sniff(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }

    #[test]
    fn plain_text_keeps_its_first_bytes() {
        let (compression, mut reader) = decompressed(Box::new(&b">a\nAC\n"[..])).unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(compression, Compression::None);
        assert_eq!(text, ">a\nAC\n");
    }
}
