//! `fasta_region(table, region [, region …])`: the bases of regions of an indexed FASTA table,
//! read through its `.fai` (and `.gzi` for BGZF) without scanning the file.
//!
//! Regions use samtools' syntax, 1-based and inclusive: `chr7`, `chr7:55019017`,
//! `chr7:55,019,017-55,211,628` (commas are allowed in numbers); a whole string that is a
//! sequence name is that sequence, so names holding `:` work. The result has one row per
//! region, in the order given: `id`, `start`, `end` (1-based, inclusive) and `sequence`.
//! The table must be one FASTA file indexed by `flightbear index` or `samtools faidx`.
//! Unknown sequences and coordinates outside a sequence are errors, as is a missing index.
//! Each region is read on a blocking thread with its bytes reserved in the memory pool.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use super::indexed::{
    IndexedFile, IndexedSource, Located, NoIndex, ReadSeek, not_describing, raw_end,
};
use super::reader::validate::first_invalid_sequence_byte;
use super::{FastaError, FastaFormat, SequenceFormat};
use crate::catalog::remote::{self, SoftEnd};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::TableReference;
use datafusion::common::{Result, plan_err};
use datafusion::datasource::listing::ListingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use noodles_bgzf as bgzf;
use noodles_core::{Position, Region};
use noodles_fasta as fasta;

/// The most regions one call may ask for.
pub const MAX_REGIONS: usize = 10_000;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
        Field::new("sequence", DataType::Utf8, false),
    ]))
});

/// The table function `fasta_region`.
#[derive(Debug, Default)]
pub struct FastaRegionFunction;

/// One region to read: the sequence's name and 1-based inclusive coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

fn string_argument(expr: &Expr, what: &str) -> Result<String> {
    match expr {
        Expr::Literal(value, _) => match value.try_as_str() {
            Some(Some(text)) => Ok(text.to_string()),
            _ => plan_err!("fasta_region(): the {what} must be a string, not {value}"),
        },
        other => plan_err!("fasta_region(): the {what} must be a string literal, not {other}"),
    }
}

impl TableFunctionImpl for FastaRegionFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() < 2 {
            return plan_err!(
                "fasta_region(table, region [, region …]) needs a table name and at least one \
                 region such as 'chr7:55,019,017-55,211,628'"
            );
        }
        if exprs.len() - 1 > MAX_REGIONS {
            return plan_err!("fasta_region(): at most {MAX_REGIONS} regions per call");
        }
        let table = string_argument(&exprs[0], "table name")?;
        let regions = exprs[1..]
            .iter()
            .map(|e| string_argument(e, "region"))
            .collect::<Result<Vec<_>>>()?;
        let Some(state) = args.session().as_any().downcast_ref::<SessionState>() else {
            return plan_err!("fasta_region(): no session");
        };
        // The index is read when the query runs (on a blocking thread, under the query's
        // deadline and cancellation), not while planning: a slow store must not hold a
        // planning thread.
        let source = indexed_file(state, &table)?;
        let stream = RegionStream {
            source,
            table,
            regions: Arc::new(regions),
        };
        Ok(Arc::new(StreamingTable::try_new(
            Arc::clone(&SCHEMA),
            vec![Arc::new(stream)],
        )?))
    }
}

/// The one FASTA file behind `table`, local or remote.
fn indexed_file(state: &SessionState, table: &str) -> Result<IndexedSource> {
    let reference = TableReference::from(table);
    let schema = state.schema_for_ref(reference.clone())?;
    let provider = futures::executor::block_on(schema.table(reference.table()))?;
    let Some(provider) = provider else {
        return plan_err!("fasta_region(): table '{table}' not found");
    };
    let Some(listing) = provider.downcast_ref::<ListingTable>() else {
        return plan_err!("fasta_region(): '{table}' is not a FASTA file table");
    };
    let is_fasta = listing
        .options()
        .format
        .downcast_ref::<FastaFormat>()
        .is_some_and(|format| format.options().format == super::SequenceFormat::Fasta);
    if !is_fasta {
        return plan_err!("fasta_region(): '{table}' is not a FASTA table");
    }
    let paths = listing.table_paths();
    let [url] = paths.as_slice() else {
        return plan_err!(
            "fasta_region(): '{table}' is made of {} locations; regions are read from a table of one indexed file",
            paths.len()
        );
    };
    if url.is_collection() {
        return plan_err!(
            "fasta_region(): '{table}' is a directory; regions are read from a table of one indexed file"
        );
    }
    if remote::is_remote(url.as_str()) {
        let store = remote::store_of(state.runtime_env(), url.get_url())?;
        return Ok(IndexedSource::Remote {
            store,
            key: url.prefix().clone(),
            url: url.to_string(),
        });
    }
    let Ok(path) = url::Url::parse(url.as_str()).and_then(|u| {
        u.to_file_path()
            .map_err(|()| url::ParseError::RelativeUrlWithoutBase)
    }) else {
        return plan_err!("fasta_region(): '{table}' is not a local file ({url})");
    };
    if path.is_dir() {
        return plan_err!(
            "fasta_region(): '{table}' is a directory; regions are read from a table of one indexed file"
        );
    }
    Ok(IndexedSource::Local(path))
}

/// An index file beside `path`: it must resolve to the same directory as the FASTA file, so
/// a link cannot make the server read a file outside the directories its tables are in.
pub(crate) fn beside(path: &Path, extension: &str) -> io::Result<PathBuf> {
    let index = path.with_added_extension(extension);
    let directory = |p: &Path| std::fs::canonicalize(p).map(|c| c.parent().map(Path::to_path_buf));
    if directory(&index)? != directory(path)? {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} must be a file in the directory of {}",
                index.display(),
                path.display()
            ),
        ));
    }
    Ok(index)
}

/// The index of `source`, checked against the file as scans check it (see
/// [`super::indexed`]), and the reservation of its memory.
fn load_index(
    pool: &Arc<dyn MemoryPool>,
    source: &IndexedSource,
    table: &str,
) -> Result<(IndexedFile, MemoryReservation)> {
    let located = Located::locate(source).map_err(|why| match why {
        NoIndex::Unusable(why) => DataFusionError::Plan(format!(
            "fasta_region(): table '{table}' has no index to read regions by: {why}"
        )),
        NoIndex::Unreadable { path, source } => read_error(path, source),
    })?;
    let reservation = MemoryConsumer::new("fasta_region index").register(pool);
    reservation.try_grow(located.memory())?;
    let path = source.display();
    let file = located
        .load()
        .map_err(|error| read_error(path.clone(), error))?
        .ok_or_else(|| {
            DataFusionError::Plan(format!("fasta_region(): {}", not_describing(&path)))
        })?;
    // The check's reader is gone; the reader of the regions reserves its own buffer.
    reservation.shrink(source.read_memory().min(reservation.size()));
    Ok((file, reservation))
}

/// A failed read of `path` (the file or an index file): a remote store's error keeps its gRPC
/// code (NOT_FOUND, PERMISSION_DENIED, UNAVAILABLE), a corrupt file is INVALID_ARGUMENT.
fn read_error(path: String, source: io::Error) -> DataFusionError {
    DataFusionError::External(Box::new(FastaError::Io {
        format: SequenceFormat::Fasta,
        path,
        source,
    }))
}

/// Parses one region in samtools' syntax against the index.
pub fn resolve(region: &str, index: &fasta::fai::Index) -> Result<Wanted, String> {
    Names::new(index).resolve(region)
}

/// The sequences of an index by name, to resolve the regions of one call.
struct Names<'a> {
    records: HashMap<&'a [u8], &'a fasta::fai::Record>,
    index: &'a fasta::fai::Index,
}

impl<'a> Names<'a> {
    fn new(index: &'a fasta::fai::Index) -> Self {
        // A name indexed twice is the first record of that name, as for samtools.
        let mut records = HashMap::new();
        for record in index.as_ref() {
            records.entry(record.name().as_ref()).or_insert(record);
        }
        Self { records, index }
    }

    /// The uncompressed offset just after the last base of `wanted` (resolved by these names).
    fn file_end(&self, wanted: &Wanted) -> u64 {
        let Some(record) = self.records.get(wanted.name.as_bytes()) else {
            return u64::MAX;
        };
        let bases = record.line_base_count().get();
        let last = wanted.end.saturating_sub(1);
        (last / bases)
            .saturating_mul(record.line_width().get())
            .saturating_add(last % bases)
            .saturating_add(record.position())
            .saturating_add(1)
    }

    /// Parses one region in samtools' syntax.
    fn resolve(&self, region: &str) -> Result<Wanted, String> {
        let (records, index) = (&self.records, self.index);
        let whole = |name: &str, length: u64| Wanted {
            name: name.to_string(),
            start: 1,
            end: length,
        };
        let text = region.trim();
        if let Some(record) = records.get(text.as_bytes()) {
            return Ok(whole(text, record.length()));
        }
        let Some((name, range)) = text.rsplit_once(':') else {
            return Err(unknown(text, index));
        };
        let Some(length) = records.get(name.as_bytes()).map(|record| record.length()) else {
            return Err(unknown(name, index));
        };
        let range: String = range.chars().filter(|&c| c != ',').collect();
        let number = |digits: &str| {
            digits.trim().parse::<u64>().map_err(|_| {
            format!(
                "'{region}' is not a region: expected NAME, NAME:START or NAME:START-END (1-based)"
            )
        })
        };
        let (start, end) = match range.split_once('-') {
            Some((start, "")) => (number(start)?, length),
            Some(("", end)) => (1, number(end)?),
            Some((start, end)) => (number(start)?, number(end)?),
            None if range.is_empty() => (1, length),
            None => (number(&range)?, length),
        };
        if start < 1 || start > end || end > length {
            return Err(format!(
                "{name}:{start}-{end} is outside {name}, which spans 1-{length} (1-based, inclusive)"
            ));
        }
        Ok(Wanted {
            name: name.to_string(),
            start,
            end,
        })
    }
}

fn unknown(name: &str, index: &fasta::fai::Index) -> String {
    let names: Vec<String> = index
        .as_ref()
        .iter()
        .take(5)
        .map(|r| String::from_utf8_lossy(r.name().as_ref()).into_owned())
        .collect();
    format!(
        "no sequence '{name}' in the index ({} sequences: {}{})",
        index.as_ref().len(),
        names.join(", "),
        if index.as_ref().len() > names.len() {
            ", …"
        } else {
            ""
        }
    )
}

/// The regions of one call, read one by one.
#[derive(Debug)]
struct RegionStream {
    source: IndexedSource,
    table: String,
    regions: Arc<Vec<String>>,
}

impl PartitionStream for RegionStream {
    fn schema(&self) -> &SchemaRef {
        &SCHEMA
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let state = Progress {
            next: 0,
            reader: None,
            reservation: MemoryConsumer::new("fasta_region").register(ctx.memory_pool()),
            pool: Arc::clone(ctx.memory_pool()),
            source: self.source.clone(),
            table: self.table.clone(),
            regions: Arc::clone(&self.regions),
            loaded: None,
        };
        let stream = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            if state.next >= state.regions.len() {
                return None;
            }
            // The previous batch has left this stream: its bytes are its consumer's now.
            state.reservation.free();
            let outcome = tokio::task::spawn_blocking(move || {
                if state.loaded.is_none() {
                    state.loaded = Some(Loaded::new(&state)?);
                }
                if state.reader.is_none() {
                    state.reader = Some(Reader::open(&state)?);
                }
                let loaded = state.loaded.as_ref().expect("loaded above");
                let wanted = (&loaded.wanted[state.next], loaded.raw_ends[state.next]);
                let reader = state.reader.as_mut().expect("opened above");
                let batch = reader.read(wanted, &mut state.reservation)?;
                state.next += 1;
                Ok::<_, DataFusionError>((batch, state))
            })
            .await;
            match outcome {
                Ok(Ok((batch, state))) => Some((Ok(batch), Some(state))),
                Ok(Err(error)) => Some((Err(error), None)),
                Err(join) => Some((Err(DataFusionError::External(Box::new(join))), None)),
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&SCHEMA), stream))
    }
}

/// Where a region stream stands.
struct Progress {
    next: usize,
    reader: Option<Reader>,
    reservation: MemoryReservation,
    pool: Arc<dyn MemoryPool>,
    source: IndexedSource,
    table: String,
    regions: Arc<Vec<String>>,
    loaded: Option<Loaded>,
}

/// The checked index of a region stream's file and the regions resolved against it.
struct Loaded {
    /// The file's size when its index was checked.
    size: u64,
    gzi: Option<bgzf::gzi::Index>,
    index: fasta::fai::Index,
    wanted: Vec<Wanted>,
    /// Where each wanted region ends in the file's own bytes (see [`raw_end`]).
    raw_ends: Vec<u64>,
    /// The index's memory, reserved while the stream lives.
    _index_memory: MemoryReservation,
}

impl Loaded {
    fn new(state: &Progress) -> Result<Self> {
        let (file, index_memory) = load_index(&state.pool, &state.source, &state.table)?;
        let (size, records, gzi) = file.into_parts();
        let index = fasta::fai::Index::from(records);
        let names = Names::new(&index);
        let wanted = state
            .regions
            .iter()
            .map(|region| {
                names
                    .resolve(region)
                    .map_err(|e| DataFusionError::Plan(format!("fasta_region(): {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let raw_ends = wanted
            .iter()
            .map(|wanted| raw_end(gzi.as_ref(), names.file_end(wanted)))
            .collect();
        Ok(Self {
            size,
            gzi,
            index,
            wanted,
            raw_ends,
            _index_memory: index_memory,
        })
    }
}

/// An indexed reader of one file, plain or BGZF.
struct Reader {
    inner: fasta::io::IndexedReader<fasta::io::BufReader<Box<dyn ReadSeek>>>,
    /// Moves a remote reader's soft end to each region's end (`None` for local files).
    soft_end: Option<SoftEnd>,
    path: String,
    /// The buffer of a remote reader, reserved while it lives.
    _buffer: Option<MemoryReservation>,
}

impl Reader {
    /// The reader of the file of `state`; a remote reader's buffer is reserved (split off the
    /// progress's reservation).
    fn open(state: &Progress) -> Result<Reader> {
        let reservation = &state.reservation;
        let loaded = state
            .loaded
            .as_ref()
            .ok_or_else(|| DataFusionError::Internal("fasta_region(): no index".into()))?;
        let path = state.source.display();
        let buffer = match state.source.read_memory() {
            0 => None,
            bytes => {
                reservation.try_grow(bytes)?;
                Some(reservation.split(bytes))
            }
        };
        let (file, soft_end) = state
            .source
            .open_steered(loaded.size, loaded.size)
            .map_err(|error| read_error(path.clone(), error))?;
        let inner = match &loaded.gzi {
            None => fasta::io::BufReader::Uncompressed(io::BufReader::new(file)),
            Some(gzi) => {
                fasta::io::BufReader::Bgzf(bgzf::io::IndexedReader::new(file, gzi.clone()))
            }
        };
        Ok(Reader {
            inner: fasta::io::IndexedReader::new(inner, loaded.index.clone()),
            soft_end,
            path,
            _buffer: buffer,
        })
    }

    /// One region as a batch of one row; its bytes are reserved in `reservation` first.
    fn read(
        &mut self,
        (wanted, raw_end): (&Wanted, u64),
        reservation: &mut MemoryReservation,
    ) -> Result<RecordBatch> {
        let length = usize::try_from(wanted.end - wanted.start + 1).unwrap_or(usize::MAX);
        // The bases as read and their copy in the batch.
        reservation
            .try_grow(length.saturating_mul(2))
            .map_err(|error| {
                DataFusionError::ResourcesExhausted(format!(
                    "fasta_region(): {}:{}-{} needs {length} bytes twice over: {}",
                    wanted.name,
                    wanted.start,
                    wanted.end,
                    match error.find_root() {
                        DataFusionError::ResourcesExhausted(reason) => reason.clone(),
                        other => other.strip_backtrace(),
                    }
                ))
            })?;
        let position = |at: u64| {
            usize::try_from(at)
                .ok()
                .and_then(Position::new)
                .ok_or_else(|| DataFusionError::Internal(format!("position {at}")))
        };
        let region = Region::new(
            wanted.name.as_str(),
            position(wanted.start)?..=position(wanted.end)?,
        );
        if let Some(soft_end) = &self.soft_end {
            soft_end.set(raw_end);
        }
        let record = self
            .inner
            .query(&region)
            .map_err(|error| read_error(format!("{} at {region}", self.path), error))?;
        let bases = record.sequence().as_ref();
        if bases.len() != length {
            return Err(DataFusionError::Execution(format!(
                "fasta_region(): {} gave {} bases for {region}, not {length}: the index does not \
                 match the file (index it again)",
                self.path,
                bases.len()
            )));
        }
        // The bytes a scan refuses (a space, a control byte) are refused here too: an index
        // made by a tool that counts them as bases does not make them bases.
        if let Some(at) = first_invalid_sequence_byte(bases) {
            return Err(DataFusionError::Execution(format!(
                "fasta_region(): {region} of {} holds byte 0x{:02x}, which is no base (the \
                 file is malformed: a scan of it fails too)",
                self.path, bases[at]
            )));
        }
        let Ok(text) = std::str::from_utf8(bases) else {
            return Err(DataFusionError::Execution(format!(
                "fasta_region(): {region} of {} holds bytes that are not text",
                self.path
            )));
        };
        let sequence = StringArray::from(vec![text]);
        drop(record);
        reservation.shrink(length);
        let batch = RecordBatch::try_new(
            Arc::clone(&SCHEMA),
            vec![
                Arc::new(StringArray::from(vec![wanted.name.as_str()])),
                Arc::new(Int64Array::from(vec![wanted.start as i64])),
                Arc::new(Int64Array::from(vec![wanted.end as i64])),
                Arc::new(sequence),
            ],
        )?;
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> fasta::fai::Index {
        let fai = "chr1\t1000\t6\t60\t61\nchr2:x\t10\t1030\t10\t11\n";
        fasta::fai::io::Reader::new(fai.as_bytes())
            .read_index()
            .unwrap()
    }

    #[test]
    fn a_region_ends_after_the_byte_of_its_last_base() {
        let index = index();
        let names = Names::new(&index);
        // chr1: bases from byte 6, 60 a line, lines of 61 bytes.
        let end = |region: &str| names.file_end(&names.resolve(region).unwrap());
        assert_eq!(end("chr1:1-1"), 7);
        assert_eq!(end("chr1:1-60"), 66);
        assert_eq!(end("chr1:61-61"), 68);
        assert_eq!(end("chr1"), 6 + 16 * 61 + 40);
        assert_eq!(end("chr2:x:10"), 1030 + 10);
    }

    #[test]
    fn regions_in_samtools_syntax() {
        let index = index();
        let wanted = |name: &str, start, end| {
            Ok(Wanted {
                name: name.into(),
                start,
                end,
            })
        };
        assert_eq!(resolve("chr1", &index), wanted("chr1", 1, 1000));
        assert_eq!(resolve("chr1:990", &index), wanted("chr1", 990, 1000));
        assert_eq!(resolve("chr1:1,000", &index), wanted("chr1", 1000, 1000));
        assert_eq!(resolve("chr1:5-1,000", &index), wanted("chr1", 5, 1000));
        assert_eq!(resolve("chr1:5-", &index), wanted("chr1", 5, 1000));
        assert_eq!(resolve("chr1:-5", &index), wanted("chr1", 1, 5));
        assert_eq!(resolve("chr2:x", &index), wanted("chr2:x", 1, 10));
        assert_eq!(resolve("chr2:x:3-4", &index), wanted("chr2:x", 3, 4));
        for (bad, says) in [
            ("chr3:1-5", "no sequence 'chr3'"),
            ("chr1:0-5", "outside chr1, which spans 1-1000"),
            ("chr1:10-5", "outside"),
            ("chr1:5-1001", "outside"),
            ("chr1:a-b", "not a region"),
            (
                "nope",
                "no sequence 'nope' in the index (2 sequences: chr1, chr2:x)",
            ),
        ] {
            let error = resolve(bad, &index).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
