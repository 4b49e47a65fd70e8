//! Turning an object-store object into decompressed bytes: a decoder picked by magic bytes, and a blocking bridge for async streams.

use std::io::{self, BufReader, Cursor, Read};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::compression::{Compression, MAGIC_LEN};

/// Input buffer of the gzip decoder.
const GZIP_BUFFER: usize = 256 * 1024;

/// Memory a decoder of `compression` holds besides the reader's own buffers: its input buffer,
/// state and window. Estimates of typical files: bzip2 decodes 900 kB blocks in ~3.7 MB; xz
/// and zstd keep a window that the file declares (8 MiB for `xz -6`, 1–8 MiB for zstd levels
/// up to 19, more for `xz -9` or `zstd --long`), so those files may use more than reserved.
pub(crate) fn decoder_memory(compression: Compression) -> usize {
    match compression {
        Compression::None => 0,
        Compression::Gzip => GZIP_BUFFER + (64 << 10),
        Compression::Bzip2 => 4 << 20,
        Compression::Xz | Compression::Zstd => 9 << 20,
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
        match raw.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = head[..len].to_vec();
    let compression = Compression::sniff(&head);
    let whole: Box<dyn Read + Send> = Box::new(Read::chain(Cursor::new(head), raw));
    let decoded: Box<dyn Read + Send> = match compression {
        Compression::None => whole,
        // Always multi-member: BGZF and `cat a.gz b.gz` are several gzip members in a row,
        // and stopping after the first one would silently drop records.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(GZIP_BUFFER, whole),
        )),
        Compression::Bzip2 | Compression::Xz | Compression::Zstd => compression
            .file_compression_type()
            .convert_read(whole)
            .map_err(io::Error::other)?,
    };
    Ok((compression, decoded))
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
        out[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_keeps_its_first_bytes() {
        let (compression, mut reader) = decompressed(Box::new(&b">a\nAC\n"[..])).unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(compression, Compression::None);
        assert_eq!(text, ">a\nAC\n");
    }
}
