//! Turning an object-store object into decompressed bytes: a decoder picked by magic bytes, and a blocking bridge for async streams.

use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::sync::mpsc;

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
        Compression::Gzip => Box::new(GzipMembers::new(BufReader::with_capacity(
            GZIP_BUFFER,
            whole,
        ))),
        Compression::Bzip2 | Compression::Xz | Compression::Zstd => compression
            .file_compression_type()
            .convert_read(whole)
            .map_err(io::Error::other)?,
    };
    Ok((compression, decoded))
}

/// Every gzip member of the input, one after the other, as `gzip -d` reads them: zero bytes
/// after the last member (tape or block padding) are ignored; anything else after a member
/// must be another member (an error otherwise, never a silent end).
struct GzipMembers<R: BufRead> {
    /// The member being decoded; `None` at the end.
    member: Option<flate2::bufread::GzDecoder<R>>,
}

impl<R: BufRead> GzipMembers<R> {
    fn new(input: R) -> Self {
        Self {
            member: Some(flate2::bufread::GzDecoder::new(input)),
        }
    }
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while let Some(member) = &mut self.member {
            let n = member.read(out)?;
            if n > 0 || out.is_empty() {
                return Ok(n);
            }
            let mut input = self.member.take().map(|member| member.into_inner());
            if let Some(rest) = &mut input
                && more_members(rest)?
            {
                self.member = input.map(flate2::bufread::GzDecoder::new);
            }
        }
        Ok(0)
    }
}

/// True when another gzip member follows; false at the end of the input, or when only zero
/// bytes are left. Zeros followed by anything else are an error.
fn more_members(input: &mut impl BufRead) -> io::Result<bool> {
    let mut zeros = 0u64;
    loop {
        let data = input.fill_buf()?;
        if data.is_empty() {
            return Ok(false);
        }
        match data.iter().position(|&byte| byte != 0) {
            Some(0) if zeros == 0 => return Ok(true),
            Some(at) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} zero bytes after a gzip member, then more data: the file is \
                         corrupt",
                        zeros + at as u64
                    ),
                ));
            }
            None => {
                zeros += data.len() as u64;
                let all = data.len();
                input.consume(all);
            }
        }
    }
}

/// Decompressed bytes travel from the decoding thread to the parser in chunks of this size.
const DECODED_CHUNK: usize = 1 << 20;
/// Chunks decoded ahead of the parser.
const DECODED_AHEAD: usize = 2;
/// Memory of a [`Decoded`] reader's chunks: those queued, the one being filled, the one being
/// parsed, and a spare.
pub(crate) const DECODED_MEMORY: usize = (DECODED_AHEAD + 3) * DECODED_CHUNK;

/// What the decoding thread sends: a chunk and its filled length, the end, or an error.
type Chunk = io::Result<Option<(Vec<u8>, usize)>>;

/// A [`Read`] of a decoder that runs on a thread of its own, so decompression and parsing
/// use two cores: the parser gets chunks decoded ahead of it, and returns their buffers for
/// reuse. Dropping the reader stops the thread after the chunk it is decoding.
pub(crate) struct Decoded {
    chunks: mpsc::Receiver<Chunk>,
    spares: mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    filled: usize,
    position: usize,
    ended: bool,
}

impl Decoded {
    /// Starts decoding `inner` on a new thread.
    pub(crate) fn spawn(mut inner: Box<dyn Read + Send>) -> io::Result<Self> {
        let (send, chunks) = mpsc::sync_channel::<Chunk>(DECODED_AHEAD);
        let (spares, spare) = mpsc::sync_channel::<Vec<u8>>(2);
        std::thread::Builder::new()
            .name("flightbear-decode".into())
            .spawn(move || {
                loop {
                    let mut buffer = spare.try_recv().unwrap_or_else(|_| vec![0; DECODED_CHUNK]);
                    let mut filled = 0;
                    while filled < buffer.len() {
                        match inner.read(&mut buffer[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                let _ = send.send(Err(e));
                                return;
                            }
                        }
                    }
                    let end = filled < buffer.len();
                    if filled > 0 && send.send(Ok(Some((buffer, filled)))).is_err() {
                        return;
                    }
                    if end {
                        let _ = send.send(Ok(None));
                        return;
                    }
                }
            })?;
        Ok(Self {
            chunks,
            spares,
            current: Vec::new(),
            filled: 0,
            position: 0,
            ended: false,
        })
    }
}

impl Read for Decoded {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.position == self.filled {
            if self.ended {
                return Ok(0);
            }
            let used = std::mem::take(&mut self.current);
            if !used.is_empty() {
                let _ = self.spares.try_send(used);
            }
            match self.chunks.recv() {
                Ok(Ok(Some((chunk, filled)))) => {
                    (self.current, self.filled, self.position) = (chunk, filled, 0);
                }
                Ok(Ok(None)) => self.ended = true,
                Ok(Err(error)) => {
                    self.ended = true;
                    return Err(error);
                }
                // The thread ended without saying so: it panicked. Never a silent end.
                Err(mpsc::RecvError) => {
                    self.ended = true;
                    return Err(io::Error::other("the decompression thread failed"));
                }
            }
        }
        let n = out.len().min(self.filled - self.position);
        out[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// A blocking [`Read`] over an async byte stream, for use on a blocking thread only.
pub(crate) struct StreamRead {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    runtime: tokio::runtime::Handle,
    current: Bytes,
    /// Bytes the response must hold, and bytes received so far.
    expected: u64,
    received: u64,
}

impl StreamRead {
    /// Wraps `stream`, which must hold `expected` bytes (a shorter or longer body is an
    /// error, not a shorter file); `runtime` drives it while a read waits.
    pub(crate) fn new(
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        expected: u64,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            stream,
            runtime,
            current: Bytes::new(),
            expected,
            received: 0,
        }
    }
}

impl Read for StreamRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                Some(Ok(bytes)) => {
                    self.received += bytes.len() as u64;
                    self.current = bytes;
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return self.ended(),
            }
        }
        if self.received > self.expected {
            return Err(self.body_error());
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

impl StreamRead {
    fn ended(&self) -> io::Result<usize> {
        match self.received == self.expected {
            true => Ok(0),
            false => Err(self.body_error()),
        }
    }

    fn body_error(&self) -> io::Error {
        io::Error::other(object_store::Error::Generic {
            store: "remote",
            source: format!(
                "the response held {} bytes where {} were due: the object changed while being \
                 read, or its store sent a broken response",
                self.received, self.expected
            )
            .into(),
        })
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

    fn gunzip(bytes: Vec<u8>) -> io::Result<String> {
        let (compression, mut reader) = decompressed(Box::new(Cursor::new(bytes)))?;
        assert_eq!(compression, Compression::Gzip);
        let mut text = String::new();
        reader.read_to_string(&mut text)?;
        Ok(text)
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut encoder, text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn every_gzip_member_is_read_and_zero_padding_after_the_last_ignored() {
        let two = [gzip(">a\nAC\n"), gzip(">b\nGT\n")].concat();
        assert_eq!(gunzip(two.clone()).unwrap(), ">a\nAC\n>b\nGT\n");
        // Padded to a block size, as tape and some uploaders do: gzip ignores the zeros.
        let padded = [two.clone(), vec![0; 300_000]].concat();
        assert_eq!(gunzip(padded).unwrap(), ">a\nAC\n>b\nGT\n");
        // Zeros then data, or data that is no gzip member, are errors: never fewer records.
        for tail in [[vec![0; 10], gzip(">c\nA\n")].concat(), b"garbage".to_vec()] {
            let error = gunzip([two.clone(), tail].concat()).unwrap_err();
            // The kinds decoders give a corrupt stream: the client's fault (INVALID_ARGUMENT).
            let kind = error.kind();
            assert!(
                matches!(
                    kind,
                    io::ErrorKind::InvalidData
                        | io::ErrorKind::InvalidInput
                        | io::ErrorKind::UnexpectedEof
                ),
                "{error}"
            );
        }
    }

    #[test]
    fn decoded_on_a_thread_gives_every_byte_then_the_end() {
        let text: Vec<u8> = (0..3 * DECODED_CHUNK + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut decoded = Decoded::spawn(Box::new(Cursor::new(text.clone()))).unwrap();
        let mut out = Vec::new();
        let mut piece = vec![0; 70_000];
        loop {
            match decoded.read(&mut piece).unwrap() {
                0 => break,
                n => out.extend_from_slice(&piece[..n]),
            }
        }
        assert_eq!(out, text);
        assert_eq!(decoded.read(&mut piece).unwrap(), 0);
    }

    #[test]
    fn decoder_errors_reach_the_reader() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "corrupt deflate stream",
                    ));
                }
                let n = out.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut decoded = Decoded::spawn(Box::new(Failing(DECODED_CHUNK + 5))).unwrap();
        let mut sink = Vec::new();
        let error = decoded.read_to_end(&mut sink).unwrap_err();
        assert_eq!(error.to_string(), "corrupt deflate stream");
    }
}
