//! Scans that use a FASTA file's samtools index (`.fai`, and `.gzi` for BGZF): `WHERE id = 'chr7'`
//! and `id IN (…)` read only the bytes of the records they name, and `COUNT(*)` is the number of
//! records in the index.
//!
//! An index is used only where it describes its file. It must be no older than the file (a
//! `.gzi` too), lie in the file's directory, parse, and pass a check made once per version of
//! the files: each indexed record's header line ends where its sequence starts, its first line
//! of bases and its last end of line lie where its line layout puts them, and between the end of
//! one indexed record and the sequence of the next there is nothing but blank lines and the
//! header of that next record, with the indexed name; after the last record, only blank lines. A
//! `.gzi` must list blocks in order inside the file, and [`SEEK_SAMPLES`] records spread over the
//! file are reached through it. samtools leaves records without bases and repeated names out of
//! a `.fai`: such files pass for region reads ([`Checked::RecordsOnly`]) and are scanned as if
//! they had no index, as are files whose index is missing, stale or too large
//! ([`MAX_FAI_BYTES`]). Either way a query gets the same rows; the filter stays in the plan above
//! the scan, so the index only decides which bytes are read. The check does not read every line:
//! an index crafted to agree with the headers and line ends it reads is believed.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, InListExpr, Literal};
use datafusion::physical_plan::PhysicalExpr;
use memchr::memchr;
use noodles_bgzf as bgzf;
use noodles_fasta::fai;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::reader::validate::{header_problem, split_header};
use super::region::beside;
use crate::catalog::remote::{self, RangeReader, SoftEnd};
use crate::compression::{Compression, MAGIC_LEN};

/// Largest `.fai` used for queries (about 400,000 records); it is parsed per query.
pub const MAX_FAI_BYTES: u64 = 16 << 20;
/// Most names one scan may look up through an index; longer lists scan the file.
pub const MAX_IDS: usize = 100_000;
/// Longest stretch between two records (blank lines and a header line) the check accepts.
const MAX_GAP: u64 = 1 << 20;
/// Forward moves in a BGZF file up to this far read through instead of seeking: a seek
/// decompresses a block, and short records lie close together.
const SKIP_BY_READING: u64 = 1 << 20;
/// File versions whose check result is remembered; the memory of a full cache is forgotten.
const MAX_REMEMBERED: usize = 1024;
/// Records of a BGZF file the check reaches by seeking through its `.gzi`.
const SEEK_SAMPLES: usize = 16;
/// Most bytes one compressed byte of a BGZF block decompresses to (deflate's limit is 1032:1;
/// a BGZF block holds at most 64 KiB, and takes at least 28 bytes).
const MAX_INFLATION: u64 = 65_536 / 28 + 1;
/// Buffer of the plain file reader.
const READ_BUFFER: usize = 64 << 10;

/// The ids a row must have to pass every one of `filters` (a conjunction, as DataFusion pushes
/// them into a scan): `id = 'x'`, `'x' = id`, `id IN ('x', …)`, and ANDs and ORs of those.
/// `None` when the filters do not restrict `id` to a list (of at most [`MAX_IDS`]).
/// `id_index` is the column's position in the schema the filters refer to.
pub fn wanted_ids(filters: &[Arc<dyn PhysicalExpr>], id_index: usize) -> Option<BTreeSet<String>> {
    filters
        .iter()
        .filter_map(|filter| ids_of(filter.as_ref(), id_index))
        .reduce(|a, b| a.intersection(&b).cloned().collect())
        .filter(|ids| ids.len() <= MAX_IDS)
}

fn ids_of(expr: &dyn PhysicalExpr, id_index: usize) -> Option<BTreeSet<String>> {
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        let (left, right) = (binary.left().as_ref(), binary.right().as_ref());
        return match binary.op() {
            Operator::Eq => {
                let text = if is_id(left, id_index) {
                    text_literal(right)
                } else if is_id(right, id_index) {
                    text_literal(left)
                } else {
                    None
                };
                text.map(|text| BTreeSet::from([text]))
            }
            Operator::Or => {
                let mut ids = ids_of(left, id_index)?;
                ids.extend(ids_of(right, id_index)?);
                (ids.len() <= MAX_IDS).then_some(ids)
            }
            Operator::And => match (ids_of(left, id_index), ids_of(right, id_index)) {
                (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
                (Some(ids), None) | (None, Some(ids)) => Some(ids),
                (None, None) => None,
            },
            _ => None,
        };
    }
    let list = expr.downcast_ref::<InListExpr>()?;
    if list.negated() || !is_id(list.expr().as_ref(), id_index) || list.list().len() > MAX_IDS {
        return None;
    }
    let mut ids = BTreeSet::new();
    for item in list.list() {
        let literal = item.downcast_ref::<Literal>()?;
        match literal.value() {
            // NULL matches nothing.
            value if value.is_null() => {}
            _ => {
                ids.insert(text_literal(item.as_ref())?);
            }
        }
    }
    Some(ids)
}

/// True for the `id` column, or a cast of it to another string type.
fn is_id(expr: &dyn PhysicalExpr, id_index: usize) -> bool {
    if let Some(column) = expr.downcast_ref::<Column>() {
        return column.index() == id_index && column.name() == super::ID_COLUMN;
    }
    expr.downcast_ref::<CastExpr>()
        .is_some_and(|cast| cast.cast_type().is_string() && is_id(cast.expr().as_ref(), id_index))
}

fn text_literal(expr: &dyn PhysicalExpr) -> Option<String> {
    match expr.downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8(Some(text))
        | ScalarValue::LargeUtf8(Some(text))
        | ScalarValue::Utf8View(Some(text)) => Some(text.clone()),
        _ => None,
    }
}

/// One version of a FASTA file and its index files: sizes, modification times and (remote
/// objects) entity tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Version {
    path: String,
    files: Vec<Stamp>,
}

/// What identifies one version of a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Stamp {
    size: u64,
    modified: Option<SystemTime>,
    tag: Option<String>,
}

/// A file for [`IndexedFile`] to read: local, or remote by range requests.
pub trait ReadSeek: Read + Seek + Send {}

impl<T: Read + Seek + Send> ReadSeek for T {}

/// A FASTA file whose index may serve queries: a local file, or an object of a remote store
/// (its index files beside it in the store, read by range requests).
#[derive(Debug, Clone)]
pub enum IndexedSource {
    /// A local file.
    Local(PathBuf),
    /// An object of a remote store.
    Remote {
        /// The store.
        store: Arc<dyn ObjectStore>,
        /// The object's key.
        key: ObjectPath,
        /// The object's URL, for messages.
        url: String,
    },
}

impl IndexedSource {
    /// The file's path or URL, for messages.
    pub fn display(&self) -> String {
        match self {
            IndexedSource::Local(path) => path.display().to_string(),
            IndexedSource::Remote { url, .. } => url.clone(),
        }
    }

    /// The local file, if it is one.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            IndexedSource::Local(path) => Some(path),
            IndexedSource::Remote { .. } => None,
        }
    }

    fn remote_key(key: &ObjectPath, extension: Option<&str>) -> ObjectPath {
        match extension {
            Some(extension) => ObjectPath::from(format!("{key}.{extension}")),
            None => key.clone(),
        }
    }

    /// The stamp of the file (`extension` `None`) or of its index file with that extension;
    /// `None` when there is no such file. A local index file must lie beside the file.
    fn stamp(&self, extension: Option<&str>) -> io::Result<Option<Stamp>> {
        match self {
            IndexedSource::Local(path) => {
                let file = match extension {
                    Some(extension) => match beside(path, extension) {
                        Ok(file) => file,
                        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
                        Err(error) => return Err(error),
                    },
                    None => path.clone(),
                };
                let meta = match std::fs::metadata(&file) {
                    Ok(meta) if meta.is_file() => meta,
                    Ok(_) => return Ok(None),
                    Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(error) => return Err(error),
                };
                Ok(Some(Stamp {
                    size: meta.len(),
                    modified: meta.modified().ok(),
                    tag: None,
                }))
            }
            IndexedSource::Remote { store, key, .. } => {
                let (store, key) = (Arc::clone(store), Self::remote_key(key, extension));
                let head = remote::block_on(async move {
                    match store.head(&key).await {
                        Ok(meta) => Ok(Some(meta)),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(error) => Err(error),
                    }
                })
                .map_err(io::Error::other)?;
                Ok(head.map(|meta| Stamp {
                    size: meta.size,
                    modified: Some(meta.last_modified.into()),
                    tag: meta.e_tag,
                }))
            }
        }
    }

    /// The whole of an index file (at most `limit` bytes).
    pub fn read_index_file(&self, extension: &str, limit: u64) -> io::Result<Vec<u8>> {
        match self {
            IndexedSource::Local(path) => {
                let file = File::open(beside(path, extension)?)?;
                let mut bytes = Vec::new();
                file.take(limit + 1).read_to_end(&mut bytes)?;
                if bytes.len() as u64 > limit {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the .{extension} file is larger than {limit} bytes"),
                    ));
                }
                Ok(bytes)
            }
            IndexedSource::Remote { store, key, .. } => {
                let key = Self::remote_key(key, Some(extension));
                match remote::read_small(store, &key, limit).map_err(io::Error::other)? {
                    Some((bytes, _)) => Ok(bytes.to_vec()),
                    None => Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{key} not found"),
                    )),
                }
            }
        }
    }

    /// The first `n` bytes of the file (fewer when it is shorter) of `size` bytes.
    fn first_bytes(&self, n: usize, size: u64) -> io::Result<Vec<u8>> {
        let mut head = vec![0; n];
        let read = match self {
            IndexedSource::Local(path) => {
                super::bgzf::read_up_to(&mut File::open(path)?, &mut head)?
            }
            IndexedSource::Remote { store, key, .. } => {
                let (store, key) = (Arc::clone(store), key.clone());
                let end = size.min(n as u64);
                if end == 0 {
                    return Ok(Vec::new());
                }
                let bytes = remote::block_on(async move { store.get_range(&key, 0..end).await })
                    .map_err(io::Error::other)?;
                let read = bytes.len().min(head.len());
                head[..read].copy_from_slice(&bytes[..read]);
                read
            }
        };
        head.truncate(read);
        Ok(head)
    }

    /// The file of `size` bytes opened for reading anywhere; reads are expected to end near
    /// `soft_end` (a remote reader's fetches stop growing there, see
    /// [`RangeReader::with_soft_end`]). Both are ignored for local files.
    pub fn open_sized(&self, size: u64, soft_end: u64) -> io::Result<Box<dyn ReadSeek>> {
        Ok(self.open_steered(size, soft_end)?.0)
    }

    /// As [`IndexedSource::open_sized`], with the handle that moves a remote reader's soft end
    /// as reading goes from one record or region to the next (`None` for local files).
    pub fn open_steered(
        &self,
        size: u64,
        soft_end: u64,
    ) -> io::Result<(Box<dyn ReadSeek>, Option<SoftEnd>)> {
        match self {
            IndexedSource::Local(path) => Ok((Box::new(File::open(path)?), None)),
            IndexedSource::Remote { store, key, .. } => {
                let reader =
                    RangeReader::new(Arc::clone(store), key.clone(), size).with_soft_end(soft_end);
                let steer = reader.soft_end();
                Ok((Box::new(reader), Some(steer)))
            }
        }
    }

    /// Bytes a reader of this file holds besides its index (reserve them while reading).
    pub fn read_memory(&self) -> usize {
        match self {
            IndexedSource::Local(_) => 0,
            IndexedSource::Remote { .. } => RangeReader::MAX_BUFFER,
        }
    }
}

/// What the check found, per file version.
static CHECKED: LazyLock<Mutex<HashMap<Version, Checked>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// What the check of an index against its file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Every record of the file is indexed, where and as the index says (this many).
    Complete(u64),
    /// Every indexed record is where and as the index says, but the file has records the
    /// index leaves out (samtools leaves out records without bases and repeated names):
    /// regions can be read, scans cannot use it.
    RecordsOnly,
    /// The index does not describe the file.
    Mismatch,
}

fn remembered(version: &Version) -> Option<Checked> {
    CHECKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(version)
        .copied()
}

fn remember(version: Version, checked: Checked) {
    let mut remembered = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if remembered.len() >= MAX_REMEMBERED {
        remembered.clear();
    }
    remembered.insert(version, checked);
}

/// The index files of a FASTA file, found fresh and not yet read: [`Located::load`] reads them.
#[derive(Debug)]
pub struct Located {
    source: IndexedSource,
    /// The file is BGZF, with a `.gzi`.
    gzi: bool,
    version: Version,
}

/// Why a file's index cannot serve.
#[derive(Debug)]
pub enum NoIndex {
    /// There is no usable index: the reason, as a sentence.
    Unusable(String),
    /// The file or one of its index files could not be read (the store's error kept, so the
    /// client learns whether it is missing, forbidden or unreachable).
    Unreadable {
        /// The file that could not be read.
        path: String,
        /// The failure.
        source: io::Error,
    },
}

impl NoIndex {
    /// A failure to read `path`: a remote store's error is kept (its code tells the client
    /// what happened), a local one becomes the reason there is no index (a file the server may
    /// not read, an index linked from another directory).
    fn unreadable(path: String, error: io::Error) -> Self {
        if super::error::store_error_of(&error).is_some() {
            Self::Unreadable {
                path,
                source: error,
            }
        } else {
            Self::Unusable(format!("cannot read {path}: {error}"))
        }
    }
}

impl From<String> for NoIndex {
    fn from(reason: String) -> Self {
        Self::Unusable(reason)
    }
}

impl Located {
    /// The index files of the FASTA file `source` when they can serve queries: `None`
    /// without a `.fai` beside it, with one older than the file or larger than
    /// [`MAX_FAI_BYTES`], for compressed files other than BGZF with a fresh `.gzi`, and for
    /// versions that failed the check before.
    pub fn find(source: &IndexedSource) -> Option<Located> {
        Self::locate(source)
            .ok()
            .filter(|located| remembered(&located.version) != Some(Checked::RecordsOnly))
    }

    /// As [`Located::find`], with the reason when the index cannot serve (for messages).
    pub fn locate(source: &IndexedSource) -> Result<Located, NoIndex> {
        let path = source.display();
        let stamp = |extension: Option<&str>| {
            let name = extension.map_or(path.clone(), |extension| format!("{path}.{extension}"));
            source
                .stamp(extension)
                .map_err(|error| NoIndex::unreadable(name, error))
        };
        let data = stamp(None)?.ok_or_else(|| NoIndex::Unreadable {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        })?;
        let fresh = |index: &Stamp, extension: &str| {
            let fresh = match (index.modified, data.modified) {
                (Some(index), Some(data)) => index >= data,
                _ => false,
            };
            if index.size > MAX_FAI_BYTES {
                Err(format!(
                    "{path}.{extension} is larger than {MAX_FAI_BYTES} bytes"
                ))
            } else if !fresh {
                Err(format!(
                    "{path}.{extension} is older than {path}: index the file again \
                     (`flightbear index`)"
                ))
            } else {
                Ok(())
            }
        };
        let fai = stamp(Some("fai"))?.ok_or_else(|| {
            format!("there is no index {path}.fai (`flightbear index` writes one)")
        })?;
        fresh(&fai, "fai")?;
        let head = source
            .first_bytes(MAGIC_LEN, data.size)
            .map_err(|error| NoIndex::unreadable(path.clone(), error))?;
        let mut files = vec![data.clone(), fai];
        let gzi = match Compression::sniff(&head) {
            Compression::None => false,
            Compression::Gzip => {
                let gzi = stamp(Some("gzi"))?.ok_or_else(|| {
                    format!(
                        "{path} is compressed and has no block index {path}.gzi: it must be \
                         BGZF, indexed by `flightbear index`"
                    )
                })?;
                fresh(&gzi, "gzi")?;
                files.push(gzi);
                true
            }
            _ => {
                return Err(NoIndex::Unusable(format!(
                    "{path} is compressed without random access; recompress it with bgzip"
                )));
            }
        };
        let version = Version { path, files };
        if remembered(&version) == Some(Checked::Mismatch) {
            return Err(NoIndex::Unusable(not_describing(&version.path)));
        }
        Ok(Located {
            source: source.clone(),
            gzi,
            version,
        })
    }

    /// Bytes to reserve before [`Located::load`]: the parsed index takes about three times its text.
    pub fn memory(&self) -> usize {
        usize::try_from(self.version.files[1].size.saturating_mul(3))
            .unwrap_or(usize::MAX)
            .saturating_add(self.source.read_memory())
    }

    /// The number of records, when a check of this version found the index complete before.
    pub fn known_records(&self) -> Option<u64> {
        match remembered(&self.version) {
            Some(Checked::Complete(records)) => Some(records),
            _ => None,
        }
    }

    /// Reads the index and checks it against the file (once per version of the files);
    /// `None` when it does not describe the file. Errors are failures to read the files.
    pub fn load(self) -> io::Result<Option<IndexedFile>> {
        let text = self.source.read_index_file("fai", MAX_FAI_BYTES)?;
        // Index files are parsed from memory: any error is in their text.
        let Ok(index) = fai::io::Reader::new(&text[..]).read_index() else {
            remember(self.version, Checked::Mismatch);
            return Ok(None);
        };
        let mut records: Vec<fai::Record> = index.into();
        records.sort_by_key(fai::Record::position);
        drop(text);
        let gzi = match self.gzi {
            true => {
                let bytes = self.source.read_index_file("gzi", MAX_FAI_BYTES)?;
                match bgzf::gzi::io::Reader::new(&bytes[..]).read_index() {
                    Ok(gzi) if gzi_plausible(&gzi, self.version.files[0].size) => Some(gzi),
                    _ => {
                        remember(self.version, Checked::Mismatch);
                        return Ok(None);
                    }
                }
            }
            false => None,
        };
        let file = IndexedFile {
            source: self.source,
            size: self.version.files[0].size,
            records,
            gzi,
            complete: true,
        };
        let checked = match remembered(&self.version) {
            Some(checked) => checked,
            None => {
                let checked = match file.check() {
                    Ok(checked) => checked,
                    // A short or undecodable file does not match its index.
                    Err(error)
                        if matches!(
                            error.kind(),
                            io::ErrorKind::UnexpectedEof
                                | io::ErrorKind::InvalidData
                                | io::ErrorKind::InvalidInput
                        ) =>
                    {
                        Checked::Mismatch
                    }
                    Err(error) => return Err(error),
                };
                remember(self.version, checked);
                checked
            }
        };
        Ok(match checked {
            Checked::Complete(_) => Some(file),
            Checked::RecordsOnly => Some(IndexedFile {
                complete: false,
                ..file
            }),
            Checked::Mismatch => None,
        })
    }

    /// As [`Located::load`], for scans: `None` too when the file has records the index
    /// leaves out.
    pub fn load_complete(self) -> io::Result<Option<IndexedFile>> {
        Ok(self.load()?.filter(|file| file.complete))
    }
}

/// A FASTA file with an index that describes it (see the module documentation).
#[derive(Debug)]
pub struct IndexedFile {
    source: IndexedSource,
    /// The file's size when its index was found fresh.
    size: u64,
    /// In file order.
    records: Vec<fai::Record>,
    gzi: Option<bgzf::gzi::Index>,
    /// Every record of the file is indexed (see [`Checked`]).
    complete: bool,
}

/// The bytes `[start, end)` of the file holding one record, header line first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    /// Where reading up to `end` stops in the file's own bytes (see [`raw_end`]).
    pub raw_end: u64,
    /// The record is the last of the file, whose last line may lack its end of line.
    pub last: bool,
}

impl IndexedFile {
    /// Opens the file for reading at uncompressed positions.
    pub fn open(&self) -> io::Result<Positioned> {
        let (file, soft_end) = self.source.open_steered(self.size, self.size)?;
        let inner = match &self.gzi {
            None => Inner::Plain(BufReader::with_capacity(READ_BUFFER, file)),
            Some(gzi) => Inner::Bgzf(Box::new(bgzf::io::IndexedReader::new(file, gzi.clone()))),
        };
        Ok(Positioned {
            inner,
            position: 0,
            soft_end,
        })
    }

    /// The file's size, its records in file order and its `.gzi` (BGZF files).
    pub fn into_parts(self) -> (u64, Vec<fai::Record>, Option<bgzf::gzi::Index>) {
        (self.size, self.records, self.gzi)
    }

    /// The number of records.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Whether the index describes the file: see the module documentation.
    fn check(&self) -> io::Result<Checked> {
        let mut input = self.open()?;
        let mut end = 0;
        let mut gap = Vec::new();
        let mut terminator = 0;
        let mut complete = true;
        for record in &self.records {
            // The previous record's last end of line, then the gap to this record's bases.
            input.goto(end - terminator)?;
            if !line_end(&mut input, terminator)? {
                return Ok(Checked::Mismatch);
            }
            gap.clear();
            match read_gap(&mut input, end, record, &mut gap)? {
                Some(_) => {}
                // Records the index leaves out, then this record's header.
                None if gap_ends_with_header(&gap, record) => complete = false,
                None => return Ok(Checked::Mismatch),
            }
            if !first_line_ends(&mut input, record)? {
                return Ok(Checked::Mismatch);
            }
            let Some(record_end) = end_of(record) else {
                return Ok(Checked::Mismatch);
            };
            end = record_end;
            terminator = record.line_width().get() - record.line_base_count().get();
        }
        // The last line's end of line (a file may end without it), then only blank lines.
        input.goto(end - terminator)?;
        let mut rest = Vec::new();
        (&mut input).take(MAX_GAP + 1).read_to_end(&mut rest)?;
        let (ending, after) = rest.split_at(rest.len().min(terminator as usize));
        if !ending.is_empty() && !ending_matches(ending, terminator) {
            return Ok(Checked::Mismatch);
        }
        if after.len() as u64 > MAX_GAP || !after.iter().all(|&b| b == b'\n' || b == b'\r') {
            complete = false;
        }
        if !self.check_seeks()? {
            return Ok(Checked::Mismatch);
        }
        Ok(match complete {
            true => Checked::Complete(self.records.len() as u64),
            false => Checked::RecordsOnly,
        })
    }

    /// Reading forward seldom uses a `.gzi`; lookups do. Reaches the headers of up to
    /// [`SEEK_SAMPLES`] records spread over a BGZF file through its `.gzi`, from afar.
    fn check_seeks(&self) -> io::Result<bool> {
        if self.gzi.is_none() || self.records.is_empty() {
            return Ok(true);
        }
        let mut gap = Vec::new();
        let count = self.records.len();
        let mut previous_end = 0;
        let mut ends = Vec::with_capacity(count.min(SEEK_SAMPLES));
        for (i, record) in self.records.iter().enumerate() {
            if i % count.div_ceil(SEEK_SAMPLES) == 0 {
                ends.push((previous_end, record));
            }
            previous_end = end_of(record).ok_or_else(mismatch)?;
        }
        let mut input = self.open()?;
        for (end, record) in ends.into_iter().rev() {
            // Each sample is reached by seeking through the `.gzi`, never by reading through.
            input.seek_to(end)?;
            if read_gap(&mut input, end, record, &mut gap)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The spans of the records named in `ids`, in file order, whose header lies in the
    /// byte range `owned` (see [`IndexedFile::in_range`]; `None`: the whole file).
    pub fn spans(
        &self,
        ids: &BTreeSet<String>,
        input: &mut Positioned,
        owned: Option<(u64, u64)>,
    ) -> io::Result<Vec<Span>> {
        let mut spans = Vec::new();
        let mut end = 0;
        let mut gap = Vec::new();
        for (i, record) in self.records.iter().enumerate() {
            let record_end = end_of(record).ok_or_else(mismatch)?;
            if std::str::from_utf8(record.name()).is_ok_and(|name| ids.contains(name)) {
                input.expect_until(raw_end(self.gzi.as_ref(), record.position()));
                let header = read_gap(input, end, record, &mut gap)?.ok_or_else(mismatch)?;
                let start = end + header as u64;
                if owned.is_none_or(|(first, end)| self.in_range(start, first, end)) {
                    spans.push(Span {
                        start,
                        end: record_end,
                        raw_end: raw_end(self.gzi.as_ref(), record_end),
                        last: i + 1 == self.records.len(),
                    });
                }
            }
            end = record_end;
        }
        Ok(spans)
    }

    /// Whether a header at uncompressed position `at` lies in the byte range `[start, end)` of
    /// the file as scan ranges split it: by position in a plain file, and for BGZF by the
    /// compressed position of the block holding it.
    pub fn in_range(&self, at: u64, start: u64, end: u64) -> bool {
        (start..end).contains(&self.range_position(at))
    }

    /// Where uncompressed position `at` lies as scan ranges count: itself in a plain file, the
    /// compressed position of the block holding it in BGZF. Never decreases as `at` grows.
    fn range_position(&self, at: u64) -> u64 {
        match &self.gzi {
            None => at,
            Some(gzi) => {
                let blocks = gzi.as_ref();
                let after = blocks.partition_point(|(_, uncompressed)| *uncompressed <= at);
                after.checked_sub(1).map_or(0, |last| blocks[last].0)
            }
        }
    }

    /// The id, description and length of the records a scan of `owned` (`None`: the whole
    /// file) owns, in file order, from the index: only header lines are read, and only those
    /// of records near the range's ends when `describe` is false. `ids` keeps only the named records.
    pub fn rows(
        self,
        input: Positioned,
        ids: Option<Arc<BTreeSet<String>>>,
        describe: bool,
        owned: Option<(u64, u64)>,
    ) -> IndexRows {
        IndexRows {
            file: self,
            input,
            ids,
            describe,
            owned,
            next: 0,
            end: 0,
            gap: Vec::new(),
        }
    }
}

/// One record as the index tells it (see [`IndexedFile::rows`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    pub id: String,
    /// `None` unless asked for and present.
    pub description: Option<String>,
    pub length: u64,
}

/// The records of an index, one by one (see [`IndexedFile::rows`]).
pub struct IndexRows {
    file: IndexedFile,
    input: Positioned,
    ids: Option<Arc<BTreeSet<String>>>,
    describe: bool,
    owned: Option<(u64, u64)>,
    /// The next record to look at.
    next: usize,
    /// Where the record before it ends.
    end: u64,
    gap: Vec<u8>,
}

impl IndexRows {
    /// The next row, `None` after the last.
    pub fn next_row(&mut self) -> io::Result<Option<IndexRow>> {
        while let Some(record) = self.file.records.get(self.next) {
            self.next += 1;
            let start = self.end;
            self.end = end_of(record).ok_or_else(mismatch)?;
            let Ok(id) = std::str::from_utf8(record.name()) else {
                return Err(mismatch());
            };
            if self.ids.as_ref().is_some_and(|ids| !ids.contains(id)) {
                continue;
            }
            // The header starts between the end of the record before and the sequence.
            let owned = match self.owned {
                None => Some(true),
                Some((first, end)) => {
                    let low = self.file.range_position(start);
                    let high = self.file.range_position(record.position() - 1);
                    if first <= low && high < end {
                        Some(true)
                    } else if high < first || low >= end {
                        Some(false)
                    } else {
                        None
                    }
                }
            };
            if owned == Some(false) {
                continue;
            }
            let mut description = None;
            if self.describe || owned.is_none() {
                let header = read_gap(&mut self.input, start, record, &mut self.gap)?
                    .ok_or_else(mismatch)?;
                if let Some((first, end)) = self.owned
                    && !self.file.in_range(start + header as u64, first, end)
                {
                    continue;
                }
                if self.describe {
                    description = description_of(&self.gap[header..])?;
                }
            }
            return Ok(Some(IndexRow {
                id: id.to_owned(),
                description,
                length: record.length(),
            }));
        }
        Ok(None)
    }
}

/// The description in a header line (`>id description\n`), as the reader takes it; a header
/// the reader refuses is an error (a scan from the start then names its problem).
fn description_of(line: &[u8]) -> io::Result<Option<String>> {
    let text = line.strip_prefix(b">").unwrap_or(line);
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if header_problem(text).is_some() {
        return Err(mismatch());
    }
    let (_, description) = split_header(text);
    Ok((!description.is_empty()).then(|| String::from_utf8_lossy(description).into_owned()))
}

/// The error of a file that does not match its checked index (it changed meanwhile).
pub(crate) fn mismatch() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the file no longer matches its index (.fai): index it again",
    )
}

/// Reads the bytes from `end` (the end of the record before) to the sequence of `record`
/// into `gap`; the position of its header line in them when they are blank lines and then
/// the header of `record`.
fn read_gap(
    input: &mut Positioned,
    end: u64,
    record: &fai::Record,
    gap: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    let Some(length) = record
        .position()
        .checked_sub(end)
        .filter(|&length| length <= MAX_GAP)
    else {
        return Ok(None);
    };
    input.goto(end)?;
    gap.resize(length as usize, 0);
    input.read_exact(gap)?;
    Ok(header_at(gap, record.name()))
}

/// True when the next `terminator` bytes are an end of line (`\n`, or `\r\n` for two).
fn line_end(input: &mut Positioned, terminator: u64) -> io::Result<bool> {
    let mut bytes = [0u8; 2];
    if terminator > 2 {
        return Ok(false);
    }
    let bytes = &mut bytes[..terminator as usize];
    input.read_exact(bytes)?;
    Ok(ending_matches(bytes, terminator))
}

/// True when `bytes` are an end of line of `terminator` bytes (none, `\n` or `\r\n`).
fn ending_matches(bytes: &[u8], terminator: u64) -> bool {
    match terminator {
        0 => bytes.is_empty(),
        1 => bytes == b"\n",
        2 => bytes == b"\r\n",
        _ => false,
    }
}

/// True when the last line of `gap` is the header of `record` (records the index leaves out
/// may come before it).
fn gap_ends_with_header(gap: &[u8], record: &fai::Record) -> bool {
    let Some(body) = gap.strip_suffix(b"\n") else {
        return false;
    };
    let line_start = memchr::memrchr(b'\n', body).map_or(0, |at| at + 1);
    header_at(&gap[line_start..], record.name()).is_some()
}

/// True when the first line of bases of `record` (the input stands at its start) ends where
/// its line layout says; a record of one line ends as the next gap's check reads.
fn first_line_ends(input: &mut Positioned, record: &fai::Record) -> io::Result<bool> {
    let bases = record.line_base_count().get();
    if record.length() <= bases {
        return Ok(true);
    }
    let mut chunk = [0u8; 4096];
    let mut left = bases;
    while left > 0 {
        let part = &mut chunk[..usize::try_from(left.min(4096)).unwrap_or(4096)];
        input.read_exact(part)?;
        if memchr::memchr2(b'\n', b'\r', part).is_some() {
            return Ok(false);
        }
        left -= part.len() as u64;
    }
    line_end(input, record.line_width().get() - bases)
}

/// A `.gzi` that could describe a BGZF file of `size` bytes: blocks in order (empty ones, such
/// as end-of-file markers, add nothing), inside the file, none decompressing to more than a
/// block can hold.
fn gzi_plausible(gzi: &bgzf::gzi::Index, size: u64) -> bool {
    let mut previous = (0u64, 0u64);
    gzi.as_ref().iter().all(|&(compressed, uncompressed)| {
        let (last_compressed, last_uncompressed) = previous;
        previous = (compressed, uncompressed);
        compressed > last_compressed
            && compressed < size
            && uncompressed >= last_uncompressed
            && uncompressed - last_uncompressed
                <= (compressed - last_compressed).saturating_mul(MAX_INFLATION)
    })
}

/// Where the header line of the record named `name` starts in `gap`, when `gap` is blank
/// lines and then that header line, ending with its end of line.
fn header_at(gap: &[u8], name: &[u8]) -> Option<usize> {
    let start = gap.iter().position(|&b| b != b'\n' && b != b'\r')?;
    let text = gap[start..].strip_prefix(b">")?.strip_suffix(b"\n")?;
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if memchr(b'\n', text).is_some() {
        return None;
    }
    (split_header(text).0 == name).then_some(start)
}

/// Why an index that failed the check is not used (for messages).
pub(crate) fn not_describing(path: &str) -> String {
    format!(
        "the index {path}.fai does not describe {path}: index the file again (`flightbear index`)"
    )
}

/// Where reading a file up to its uncompressed offset `end` stops in the file's own bytes:
/// `end` itself in a plain file; in BGZF, past the block that holds the byte before `end`
/// (a block is decoded whole).
pub fn raw_end(gzi: Option<&bgzf::gzi::Index>, end: u64) -> u64 {
    match gzi {
        None => end,
        Some(gzi) => gzi.query(end.saturating_sub(1)).map_or(u64::MAX, |at| {
            at.compressed().saturating_add(super::bgzf::MAX_BLOCK)
        }),
    }
}

/// Where `record` ends: after the end of line of its last line of bases.
fn end_of(record: &fai::Record) -> Option<u64> {
    let bases = record.line_base_count().get();
    let width = record.line_width().get();
    if width <= bases || record.length() == 0 {
        return None;
    }
    let (full, rest) = (record.length() / bases, record.length() % bases);
    let last = if rest > 0 { rest + (width - bases) } else { 0 };
    full.checked_mul(width)?
        .checked_add(last)?
        .checked_add(record.position())
}

enum Inner {
    Plain(BufReader<Box<dyn ReadSeek>>),
    Bgzf(Box<bgzf::io::IndexedReader<Box<dyn ReadSeek>>>),
}

/// A file read at uncompressed positions: plain, or BGZF through its `.gzi`.
pub struct Positioned {
    inner: Inner,
    position: u64,
    /// Moves a remote reader's soft end (`None` for local files).
    soft_end: Option<SoftEnd>,
}

impl Positioned {
    /// Expects the reads that follow to stop at `raw_end` in the file's own bytes (see
    /// [`raw_end`]): a remote reader fetches no further ahead than that.
    pub fn expect_until(&mut self, raw_end: u64) {
        if let Some(soft_end) = &self.soft_end {
            soft_end.set(raw_end);
        }
    }

    /// Moves to uncompressed position `to` by seeking (through the `.gzi` in BGZF).
    pub fn seek_to(&mut self, to: u64) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(reader) => reader.seek(SeekFrom::Start(to))?,
            Inner::Bgzf(reader) => reader.seek(SeekFrom::Start(to))?,
        };
        self.position = to;
        Ok(())
    }

    /// Moves to uncompressed position `to`.
    pub fn goto(&mut self, to: u64) -> io::Result<()> {
        if let Inner::Plain(reader) = &mut self.inner {
            // Keeps the buffer when `to` lies in it.
            let offset = i64::try_from(to).map_err(|_| mismatch())?
                - i64::try_from(self.position).map_err(|_| mismatch())?;
            reader.seek_relative(offset)?;
            self.position = to;
            return Ok(());
        }
        if to >= self.position && to - self.position <= SKIP_BY_READING {
            let skip = to - self.position;
            if io::copy(&mut (&mut *self).take(skip), &mut io::sink())? != skip {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            return Ok(());
        }
        self.seek_to(to)
    }
}

impl Read for Positioned {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let read = match &mut self.inner {
            Inner::Plain(reader) => reader.read(out)?,
            Inner::Bgzf(reader) => reader.read(out)?,
        };
        self.position += read as u64;
        Ok(read)
    }
}

/// The text of the records of `spans`, one after the other: a FASTA file of just those records.
pub struct SpansRead {
    input: Positioned,
    spans: std::vec::IntoIter<Span>,
    current: Option<Span>,
}

impl SpansRead {
    pub fn new(input: Positioned, spans: Vec<Span>) -> Self {
        Self {
            input,
            spans: spans.into_iter(),
            current: None,
        }
    }
}

impl Read for SpansRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let span = match self.current {
                Some(span) if self.input.position < span.end => span,
                _ => {
                    let Some(next) = self.spans.next() else {
                        return Ok(0);
                    };
                    self.input.expect_until(next.raw_end);
                    self.input.goto(next.start)?;
                    self.current = Some(next);
                    continue;
                }
            };
            let want = (span.end - self.input.position).min(out.len() as u64) as usize;
            let read = self.input.read(&mut out[..want])?;
            if read > 0 {
                return Ok(read);
            }
            // The file's last line may end without an end of line.
            if !span.last || span.end - self.input.position > 2 {
                return Err(mismatch());
            }
            self.current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::execution::context::ExecutionProps;
    use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
    use datafusion::logical_expr::{col, in_list, lit};
    use datafusion::physical_expr::create_physical_expr;

    fn ids(sql: datafusion::logical_expr::Expr) -> Option<Vec<String>> {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("description", DataType::Utf8, true),
        ]);
        let df_schema = DFSchema::try_from(schema).unwrap();
        let expr = create_physical_expr(
            &sql,
            &df_schema,
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )
        .unwrap();
        wanted_ids(&[expr], 0).map(|ids| ids.into_iter().collect())
    }

    #[test]
    fn filters_on_id_give_the_wanted_ids() {
        let names = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(ids(col("id").eq(lit("chr7"))), names(&["chr7"]));
        assert_eq!(ids(lit("chr7").eq(col("id"))), names(&["chr7"]));
        assert_eq!(
            ids(in_list(
                col("id"),
                vec![lit("b"), lit("a"), lit(ScalarValue::Utf8(None))],
                false
            )),
            names(&["a", "b"])
        );
        assert_eq!(
            ids(col("id").eq(lit("a")).or(col("id").eq(lit("b")))),
            names(&["a", "b"])
        );
        assert_eq!(
            ids(col("id").eq(lit("a")).and(col("description").eq(lit("x")))),
            names(&["a"])
        );
        assert_eq!(
            ids(in_list(col("id"), vec![lit("a"), lit("b")], false).and(col("id").eq(lit("b")))),
            names(&["b"])
        );
        // What does not restrict id to a list.
        assert_eq!(ids(in_list(col("id"), vec![lit("a")], true)), None);
        assert_eq!(
            ids(col("id").eq(lit("a")).or(col("description").eq(lit("x")))),
            None
        );
        assert_eq!(ids(col("description").eq(lit("a"))), None);
        assert_eq!(ids(col("id").gt(lit("a"))), None);
    }

    #[test]
    fn headers_between_records_are_recognised() {
        assert_eq!(header_at(b">a desc\n", b"a"), Some(0));
        assert_eq!(header_at(b"\n\r\n>a\r\n", b"a"), Some(3));
        assert_eq!(header_at(b">a\tx\n", b"a"), Some(0));
        assert_eq!(header_at(b">ab\n", b"a"), None);
        // A record left out of the index (no bases, or a repeated name) lies in the gap.
        assert_eq!(header_at(b">empty\n>a\n", b"a"), None);
        assert_eq!(header_at(b"ACGT\n>a\n", b"a"), None);
        assert_eq!(header_at(b">a", b"a"), None);
    }

    fn record(name: &str, length: u64, offset: u64, bases: u64, width: u64) -> fai::Record {
        let text = format!("{name}\t{length}\t{offset}\t{bases}\t{width}\n");
        let index = fai::io::Reader::new(text.as_bytes()).read_index().unwrap();
        Vec::from(index).remove(0)
    }

    #[test]
    fn a_gap_may_end_with_the_header_after_records_left_out() {
        let a = record("a", 4, 10, 4, 5);
        assert!(gap_ends_with_header(b">empty\n>a\n", &a));
        assert!(gap_ends_with_header(b">a\nACGT\n>a two\n", &a));
        assert!(gap_ends_with_header(b">a\n", &a));
        assert!(!gap_ends_with_header(b">a\n>b\n", &a));
        assert!(!gap_ends_with_header(b">a\nAC", &a));
        assert!(!gap_ends_with_header(b"", &a));
    }

    #[test]
    fn line_ends_are_lf_or_crlf_by_width() {
        assert!(ending_matches(b"\n", 1));
        assert!(ending_matches(b"\r\n", 2));
        assert!(ending_matches(b"", 0));
        assert!(!ending_matches(b"\r", 1));
        assert!(!ending_matches(b"\nA", 2));
        assert!(!ending_matches(b"\n\n\n", 3));
    }

    #[test]
    fn plausible_block_indexes() {
        let gzi = |pairs: &[(u64, u64)]| bgzf::gzi::Index::from(pairs.to_vec());
        assert!(gzi_plausible(&gzi(&[]), 28));
        assert!(gzi_plausible(&gzi(&[(100, 65_280), (200, 130_560)]), 300));
        // An empty block (an end-of-file marker, or one between concatenated files) adds nothing.
        assert!(gzi_plausible(&gzi(&[(100, 65_280), (128, 65_280)]), 200));
        // Out of order, outside the file, or more than blocks can hold.
        assert!(!gzi_plausible(&gzi(&[(200, 65_280), (100, 130_560)]), 300));
        assert!(!gzi_plausible(&gzi(&[(100, 65_280), (90, 65_290)]), 300));
        assert!(!gzi_plausible(&gzi(&[(100, 65_280), (200, 60_000)]), 300));
        assert!(!gzi_plausible(&gzi(&[(100, 65_280)]), 100));
        assert!(!gzi_plausible(&gzi(&[(28, 65_280_000)]), 300));
    }
}
