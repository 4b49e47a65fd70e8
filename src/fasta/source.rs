//! How a FASTA scan is configured ([`FastaSource`]) and how one file or byte range is read ([`FastaOpener`]).

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::{FileRange, PartitionedFile};
use datafusion::datasource::physical_plan::{
    FileOpenFuture, FileOpener, FileScanConfig, FileSource,
};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryPool, MemoryReservation, UnboundedMemoryPool};
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr_common::sort_expr::LexOrdering;
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{DisplayFormatType, PhysicalExpr, apply_expression_roots};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::{
    GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::bgzf;
use super::error::{FastaError, FastaErrorLocation};
use super::indexed::{
    self, IndexRow, IndexRows, IndexedFile, IndexedSource, Located, Positioned, ReadSeek, SpansRead,
};
use super::input::{DECODED_MEMORY, Decoded, StreamRead, decoder_memory, decompressed};
use super::options::{DEFAULT_BATCH_ROWS, FastaOptions};
use super::reader::{
    ColumnSelection, Handoff, ReaderConfig, ScanBounds, ScanMemory, SequenceReader,
};
use super::sequence_length::with_sequence_lengths;
use super::{SEQUENCE_COLUMN, SequenceFormat};
use crate::compression::Compression;
use datafusion::arrow::array::{ArrayRef, Int32Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// Batches buffered between the reader thread and the consumer; keeps memory bounded.
const CHANNEL_CAPACITY: usize = 1;

/// A [`FileSource`] that scans FASTA or FASTQ files (as its options say), like DataFusion's
/// `CsvSource` is for CSV.
///
/// Each scan of a file reserves its buffers in [`FastaSource::memory_pool`] before allocating
/// them; [`FastaFormat`](super::FastaFormat) sets the session's pool when it plans a scan.
#[derive(Debug, Clone)]
pub struct FastaSource {
    options: FastaOptions,
    /// Where scans reserve their memory; `None` counts it in a pool of their own, without a limit.
    memory_pool: Option<Arc<dyn MemoryPool>>,
    batch_size: Option<usize>,
    table_schema: TableSchema,
    projection: SplitProjection,
    metrics: ExecutionPlanMetricsSet,
    /// The ids the query's filters limit rows to, when they do: FASTA files with an index
    /// read only those records (see [`super::indexed`]).
    ids: Option<Arc<BTreeSet<String>>>,
    /// The projection uses the sequence only through `length(sequence)` (`SequenceLength`):
    /// FASTA files with an index give the lengths it holds in place of the bases.
    lengths: bool,
}

impl FastaSource {
    /// A source over `table_schema` (the FASTA schema plus any partition columns).
    pub fn new(table_schema: impl Into<TableSchema>, options: FastaOptions) -> Self {
        let table_schema = table_schema.into();
        Self {
            options,
            memory_pool: None,
            batch_size: None,
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            metrics: ExecutionPlanMetricsSet::new(),
            ids: None,
            lengths: false,
        }
    }

    /// Returns this source with other reader options.
    pub fn with_options(mut self, options: FastaOptions) -> Self {
        self.options = options;
        self
    }

    /// The reader options of this source.
    pub fn options(&self) -> &FastaOptions {
        &self.options
    }

    /// Returns this source with scans reserving their memory in `pool` (the session's pool,
    /// `RuntimeEnv::memory_pool`): a scan whose buffers do not fit fails with the pool's
    /// `ResourcesExhausted` error instead of allocating.
    pub fn with_memory_pool(mut self, pool: Arc<dyn MemoryPool>) -> Self {
        self.memory_pool = Some(pool);
        self
    }

    /// The pool scans reserve their memory in, if one was set.
    pub fn memory_pool(&self) -> Option<&Arc<dyn MemoryPool>> {
        self.memory_pool.as_ref()
    }

    fn batch_rows(&self) -> usize {
        self.options
            .batch_rows
            .or(self.batch_size)
            .unwrap_or(DEFAULT_BATCH_ROWS)
    }
}

impl FileSource for FastaSource {
    fn create_file_opener(
        &self,
        object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let file_schema = self.table_schema.file_schema();
        let indices = self.projection.file_indices.clone();
        let opener = Arc::new(FastaOpener {
            format: self.options.format,
            object_store,
            store_url: base_config.object_store_url.as_str().to_owned(),
            schema: Arc::new(file_schema.project(&indices)?),
            columns: ColumnSelection::new(&indices),
            batch_rows: self.batch_rows(),
            batch_bytes: self.options.batch_bytes,
            memory_pool: self
                .memory_pool
                .clone()
                .unwrap_or_else(|| Arc::new(UnboundedMemoryPool::default())),
            ids: self.ids.clone(),
            lengths: self.lengths,
            indices: indices.clone(),
        });
        ProjectionOpener::try_new(self.projection.clone(), opener, file_schema)
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        let mut source = self.clone();
        source.batch_size = Some(batch_size);
        Arc::new(source)
    }

    fn try_pushdown_projection(
        &self,
        projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn FileSource>>> {
        let mut source = self.clone();
        let mut merged = self.projection.source.try_merge(projection)?;
        source.lengths = false;
        if self.options.format == SequenceFormat::Fasta
            && let Ok(sequence) = self.table_schema.table_schema().index_of(SEQUENCE_COLUMN)
        {
            let (with_lengths, lengths_only) = with_sequence_lengths(&merged, sequence)?;
            if lengths_only {
                merged = with_lengths;
                source.lengths = true;
            }
        }
        source.projection = SplitProjection::new(self.table_schema.file_schema(), &merged);
        Ok(Some(Arc::new(source)))
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        Some(&self.projection.source)
    }

    /// Takes note of the ids the filters limit rows to, for index lookups; every filter stays
    /// in the plan (the scan may read more records than pass it).
    fn try_pushdown_filters(
        &self,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn FileSource>>> {
        let result = FilterPushdownPropagation::with_parent_pushdown_result(vec![
            PushedDown::No;
            filters.len()
        ]);
        let id_index = self.table_schema.table_schema().index_of(super::ID_COLUMN);
        let ids = match id_index {
            Ok(index) if self.options.format == SequenceFormat::Fasta => {
                indexed::wanted_ids(&filters, index)
            }
            _ => None,
        };
        let Some(ids) = ids else {
            return Ok(result);
        };
        let ids = match &self.ids {
            Some(known) => known.intersection(&ids).cloned().collect(),
            None => ids,
        };
        let mut source = self.clone();
        source.ids = Some(Arc::new(ids));
        Ok(result.with_updated_node(Arc::new(source)))
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        self.options.format.ext()
    }

    fn supports_repartitioning(&self) -> bool {
        true
    }

    fn repartitioned(
        &self,
        target_partitions: usize,
        repartition_file_min_size: usize,
        output_ordering: Option<LexOrdering>,
        config: &FileScanConfig,
    ) -> Result<Option<FileScanConfig>> {
        // Compressed files cannot be split, except BGZF (by block). The opener copes with a
        // split compressed file (the range starting at 0 reads it all), but then one partition
        // does all the work, so do not split scans that include other compressed files.
        let local = config.object_store_url.as_str() == "file:///";
        let unsplittable = config
            .file_groups
            .iter()
            .flat_map(|group| group.files())
            .any(|file| {
                let location = file.object_meta.location.as_ref();
                let compression = Compression::of_path(location);
                // Remote gzip may be BGZF: the opener finds out (a plain gzip's later ranges
                // then read nothing, its range at 0 reads it all).
                compression.is_compressed()
                    && !(local && is_local_bgzf(&format!("/{location}")))
                    && (local || compression != Compression::Gzip)
            });
        if unsplittable || config.file_compression_type.is_compressed() {
            return Ok(None);
        }
        let partitioner = datafusion::datasource::physical_plan::FileGroupPartitioner::new()
            .with_target_partitions(target_partitions)
            .with_repartition_file_min_size(repartition_file_min_size)
            .with_preserve_order_within_groups(output_ordering.is_some());
        Ok(partitioner
            .repartition_file_groups(&config.file_groups)
            .map(|file_groups| {
                let mut repartitioned = config.clone();
                repartitioned.file_groups = file_groups;
                repartitioned
            }))
    }

    fn fmt_extra(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, ", batch_bytes={}", self.options.batch_bytes)?;
                if let Some(rows) = self.options.batch_rows {
                    write!(f, ", batch_rows={rows}")?;
                }
                if let Some(ids) = &self.ids {
                    write!(f, ", index_lookup_ids={}", ids.len())?;
                }
                if self.lengths {
                    write!(f, ", lengths_from_index_when_indexed")?;
                }
                Ok(())
            }
            DisplayFormatType::TreeRender => Ok(()),
        }
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.projection.source.iter(), f)
    }
}

/// A [`FileOpener`] that reads one FASTA file, or the records starting in one byte range
/// of it, on a blocking thread and streams the batches back through a bounded channel.
pub struct FastaOpener {
    format: SequenceFormat,
    object_store: Arc<dyn ObjectStore>,
    store_url: String,
    schema: datafusion::arrow::datatypes::SchemaRef,
    columns: ColumnSelection,
    batch_rows: usize,
    batch_bytes: usize,
    memory_pool: Arc<dyn MemoryPool>,
    ids: Option<Arc<BTreeSet<String>>>,
    lengths: bool,
    /// The file columns produced, as indices into the file schema.
    indices: Vec<usize>,
}

impl FileOpener for FastaOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let store = Arc::clone(&self.object_store);
        let location = file.object_meta.location.clone();
        let display_path = if self.store_url.starts_with("file://") {
            format!("/{location}")
        } else {
            format!("{}{location}", self.store_url)
        };
        let bounds = scan_bounds(file.range.as_ref())?;
        // Value buffers up to twice the batch budget come back for reuse (see `ScanMemory`).
        let memory = ScanMemory::new(
            &self.memory_pool,
            format!("{} reader {display_path}", self.format),
            self.batch_bytes.saturating_mul(2),
        );
        let config = ReaderConfig {
            format: self.format,
            path: display_path,
            schema: Arc::clone(&self.schema),
            columns: self.columns.clone(),
            batch_rows: self.batch_rows,
            batch_bytes: self.batch_bytes,
            bounds,
            memory,
            range_end: None,
        };
        let format = self.format;
        let ids = self.ids.clone();
        let lengths = self.lengths.then(|| self.indices.clone());
        let remote = self.store_url != "file:///";
        let source = if !remote {
            IndexedSource::Local(PathBuf::from(&config.path))
        } else {
            IndexedSource::Remote {
                store: Arc::clone(&store),
                key: location.clone(),
                url: config.path.clone(),
            }
        };
        Ok(async move {
            if let Some(indices) = lengths {
                let source = source.clone();
                let lookup = config.clone();
                let ids = ids.clone();
                let rows = tokio::task::spawn_blocking(move || {
                    index_rows(&source, ids, &indices, &lookup).map(|rows| (rows, lookup))
                })
                .await
                .map_err(|error| DataFusionError::External(Box::new(error)))??;
                if let (Some((rows, index_memory)), config) = rows {
                    return Ok(spawn_reader(format, move |sender| {
                        send_index_rows(rows, config, sender);
                        drop(index_memory);
                    }));
                }
            }
            if let Some(ids) = ids {
                let (lookup, lookup_source) = (config.clone(), source.clone());
                let indexed = tokio::task::spawn_blocking(move || {
                    indexed_read(&lookup_source, &ids, &lookup).map(|input| (input, lookup))
                })
                .await
                .map_err(|error| DataFusionError::External(Box::new(error)))??;
                if let (Some((input, held)), config) = indexed {
                    return Ok(spawn_reader(format, move |sender| {
                        read_spans_to_channel(input, source.local_path(), config, sender);
                        drop(held);
                    }));
                }
            }
            let size = file.object_meta.size;
            if let ScanBounds::Range { start, end } = bounds
                && size > 0
            {
                // A split file. Its head tells BGZF (each range reads the records starting in
                // its own blocks), other compression (the range at 0 decompresses the whole
                // file) and plain text (each range reads from its start).
                let head_end = (bgzf::HEADER_LEN as u64).min(size);
                let head = store.get_range(&location, 0..head_end).await?;
                if bgzf::block_size(&head).is_some() {
                    return Ok(spawn_reader(format, move |sender| {
                        read_bgzf_range(&source, (size, start, end), config, sender)
                    }));
                }
                if start > 0 && Compression::sniff(&head).is_compressed() {
                    return Ok(futures::stream::empty().boxed());
                }
            }
            let options = match bounds {
                // One byte before the range: the reader sees whether the range starts a line.
                ScanBounds::Range { start, .. } if start > 0 => GetOptions {
                    range: Some(GetRange::Offset(start - 1)),
                    ..GetOptions::default()
                },
                _ => GetOptions::default(),
            };
            let get = store.get_opts(&location, options).await?;
            if get.meta.size != size {
                // Read as it is now, the file would give other rows than the plan counted on.
                return Err(DataFusionError::ObjectStore(Box::new(
                    object_store::Error::Generic {
                        store: "flightbear",
                        source: format!(
                            "{} changed while being read (its size went from {size} to {} \
                             bytes): run the query again",
                            config.path, get.meta.size
                        )
                        .into(),
                    },
                )));
            }
            let runtime = tokio::runtime::Handle::current();
            Ok(spawn_reader(format, move |sender| {
                read_to_channel(get, config, runtime, sender)
            }))
        }
        .boxed())
    }
}

/// Runs `read` on a blocking thread and streams the batches it sends; a panic is an error.
fn spawn_reader(
    format: SequenceFormat,
    read: impl FnOnce(&BatchSender) + Send + 'static,
) -> BoxStream<'static, Result<RecordBatch>> {
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::task::spawn_blocking(move || {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| read(&sender)));
        if outcome.is_err() {
            let error = DataFusionError::Internal(format!("the {format} reader panicked"));
            let _ = sender.blocking_send(Err(error));
        }
    });
    ReceiverStream::new(receiver)
        .map(|message| {
            message.map(|(batch, handoff)| {
                handoff.detach();
                batch
            })
        })
        .boxed()
}

/// The index of the file `source` when it describes the file (see [`super::indexed`]), its
/// memory (and a remote reader's buffer) held in the scan's reservation by the returned guard,
/// and the file opened for reading through it; `None` when the file is to be scanned.
fn load_index(
    source: &IndexedSource,
    config: &ReaderConfig,
) -> Result<Option<(IndexedFile, Positioned, MemoryReservation)>, FastaError> {
    let Some(located) = Located::find(source) else {
        return Ok(None);
    };
    let held = config.memory.hold(located.memory())?;
    let io_error = |source| config.io_error(source);
    let Some(file) = located.load_complete().map_err(io_error)? else {
        return Ok(None);
    };
    let input = file.open().map_err(io_error)?;
    Ok(Some((file, input, held)))
}

/// The byte range of the file a scan owns, as the index's readers take it (`None`: all).
fn owned_range(bounds: ScanBounds) -> Option<(u64, u64)> {
    match bounds {
        ScanBounds::Whole => None,
        ScanBounds::Range { start, end } => Some((start, end)),
    }
}

/// The text of the records named in `ids` that this scan owns, read through the file's
/// index; `None` when the file has no index that describes it (it is then scanned).
fn indexed_read(
    source: &IndexedSource,
    ids: &BTreeSet<String>,
    config: &ReaderConfig,
) -> Result<Option<(SpansRead, MemoryReservation)>, FastaError> {
    let Some((file, mut input, held)) = load_index(source, config)? else {
        return Ok(None);
    };
    let spans = file
        .spans(ids, &mut input, owned_range(config.bounds))
        .map_err(|error| config.io_error(error))?;
    drop(file);
    // The reader's buffer stays while the spans are read; the index is gone.
    held.resize(source.read_memory());
    Ok(Some((SpansRead::new(input, spans), held)))
}

/// The records of a scan that asks for sequence lengths only, read from the file's index
/// (held in memory, and its reservation with it, as long as the rows are read); `None` when
/// the file has no index that describes it (it is then scanned).
fn index_rows(
    source: &IndexedSource,
    ids: Option<Arc<BTreeSet<String>>>,
    indices: &[usize],
    config: &ReaderConfig,
) -> Result<Option<(IndexRows, MemoryReservation)>, FastaError> {
    let Some((file, input, held)) = load_index(source, config)? else {
        return Ok(None);
    };
    let describe = indices.contains(&1);
    let rows = file.rows(input, ids, describe, owned_range(config.bounds));
    Ok(Some((rows, held)))
}

/// Sends the rows of an index as batches of the scan's columns, `length(sequence)` given as
/// `Int32` lengths in the sequence column's place (`SequenceLength` takes them as they are).
fn send_index_rows(mut rows: IndexRows, config: ReaderConfig, sender: &BatchSender) {
    let schema = lengths_schema(&config.schema);
    // Local paths are absolute; a remote file (a URL) is not re-read for its first error.
    let path = Some(PathBuf::from(&config.path)).filter(|path| path.is_absolute());
    let mut batch = Vec::new();
    let mut bytes = 0;
    loop {
        if sender.is_closed() {
            return;
        }
        let row = match rows.next_row() {
            Ok(row) => row,
            Err(error) => {
                let error = if error.kind() == io::ErrorKind::InvalidData {
                    path.as_deref()
                        .and_then(|path| first_error_of(path, whole_file_config(&config), sender))
                        .unwrap_or_else(|| config.io_error(error))
                } else {
                    config.io_error(error)
                };
                let _ = sender.blocking_send(Err(error.into()));
                return;
            }
        };
        if let Some(row) = &row {
            bytes += row.id.len() + row.description.as_ref().map_or(0, String::len) + 12;
        }
        let full = batch.len() + 1 >= config.batch_rows || bytes >= config.batch_bytes;
        let last = row.is_none();
        batch.extend(row);
        if (full || last) && !batch.is_empty() {
            let message = index_batch(&batch, &schema, &config, bytes);
            let failed = message.is_err();
            if sender.blocking_send(message).is_err() || failed {
                return;
            }
            batch.clear();
            bytes = 0;
        }
        if last {
            return;
        }
    }
}

/// `schema` with the sequence column as `Int32` lengths.
fn lengths_schema(schema: &SchemaRef) -> SchemaRef {
    let fields = schema.fields().iter().map(|field| {
        if field.name() == SEQUENCE_COLUMN {
            Arc::new(Field::new(SEQUENCE_COLUMN, DataType::Int32, false))
        } else {
            Arc::clone(field)
        }
    });
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

/// One batch of index rows, its `bytes` reserved in the scan's memory until it leaves the scan.
fn index_batch(
    rows: &[IndexRow],
    schema: &SchemaRef,
    config: &ReaderConfig,
    bytes: usize,
) -> Result<(RecordBatch, Arc<Handoff>)> {
    config.memory.try_grow(bytes).map_err(FastaError::from)?;
    let handoff = Handoff::new(&config.memory, bytes);
    let columns = schema
        .fields()
        .iter()
        .map(|field| -> Result<ArrayRef> {
            Ok(match field.name().as_str() {
                SEQUENCE_COLUMN => {
                    let lengths = rows.iter().map(|row| {
                        i32::try_from(row.length).map_err(|_| {
                            DataFusionError::Execution(format!(
                                "{}: record '{}' has {} bases, more than a Utf8 column holds",
                                config.path, row.id, row.length
                            ))
                        })
                    });
                    Arc::new(lengths.collect::<Result<Int32Array>>()?)
                }
                super::DESCRIPTION_COLUMN => Arc::new(
                    rows.iter()
                        .map(|row| row.description.as_deref())
                        .collect::<StringArray>(),
                ),
                _ => Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|row| row.id.as_str()),
                )),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new(Arc::clone(schema), columns)?;
    Ok((batch, handoff))
}

fn scan_bounds(range: Option<&FileRange>) -> Result<ScanBounds> {
    let Some(range) = range else {
        return Ok(ScanBounds::Whole);
    };
    let start = u64::try_from(range.start);
    let end = u64::try_from(range.end);
    match (start, end) {
        (Ok(start), Ok(end)) if start <= end => Ok(ScanBounds::Range { start, end }),
        _ => Err(DataFusionError::Internal(format!(
            "invalid file range {}..{}",
            range.start, range.end
        ))),
    }
}

/// Batches with their [`Handoff`]: the stream detaches it when the batch leaves the scan.
type BatchSender = mpsc::Sender<Result<(RecordBatch, Arc<Handoff>)>>;

/// Runs on a blocking thread: parses the object and sends batches until the end, the first
/// error, or the consumer going away (a failed send or a closed channel stops the loop).
fn read_to_channel(
    get: GetResult,
    mut config: ReaderConfig,
    runtime: tokio::runtime::Handle,
    sender: &BatchSender,
) {
    let local = match &get.payload {
        GetResultPayload::File(_, path) => Some(path.clone()),
        GetResultPayload::Stream(_) => None,
    };
    // What reading the whole file takes, should this range find malformed text (see below).
    let whole_file = whole_file_config(&config);
    let opened = open_input(get, &mut config, runtime);
    send_input(opened, config, sender, |error| {
        range_error(error, local.as_deref(), whole_file, sender)
    });
}

/// Sends the batches of an opened input (or the error opening it), as [`send_batches`] does;
/// the reservation (the decoder's memory) is held while the input lives.
fn send_input(
    opened: Result<(Box<dyn Read + Send>, Option<MemoryReservation>), FastaError>,
    config: ReaderConfig,
    sender: &BatchSender,
    on_error: impl FnOnce(FastaError) -> FastaError,
) {
    let (input, held) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _ = sender.blocking_send(Err(error.into()));
            return;
        }
    };
    let input = StopWhenClosed {
        inner: input,
        sender: sender.clone(),
        _held: held,
    };
    send_batches(SequenceReader::new(input, config), sender, on_error);
}

/// The error to report for `error`, met reading a range of a file. A range that starts
/// mid-file knows byte offsets, not lines, and which of several malformed records it meets
/// depends on how the file was split: the file's first error, found by reading a local file
/// (`local`) from the start, is the same however it was split.
fn range_error(
    error: FastaError,
    local: Option<&Path>,
    whole_file: ReaderConfig,
    sender: &BatchSender,
) -> FastaError {
    match error {
        FastaError::Invalid {
            location: FastaErrorLocation::Byte(_),
            ..
        } => local
            .and_then(|path| first_error_of(path, whole_file, sender))
            .unwrap_or(error),
        error => error,
    }
}

/// Reads the records of an index lookup (a FASTA text of just those records) and sends their
/// batches. Malformed text is reported as a scan from the start of the file finds it first
/// (its lines are not the lines of the lookup's text); a remote file (`path` `None`) is not
/// re-read, its error says the file does not match its index.
fn read_spans_to_channel(
    input: SpansRead,
    path: Option<&Path>,
    config: ReaderConfig,
    sender: &BatchSender,
) {
    let whole_file = whole_file_config(&config);
    let input = StopWhenClosed {
        inner: input,
        sender: sender.clone(),
        _held: None,
    };
    let reader = SequenceReader::new(
        input,
        ReaderConfig {
            bounds: ScanBounds::Whole,
            range_end: None,
            ..config
        },
    );
    send_batches(reader, sender, |error| match error {
        FastaError::Invalid { .. } => path
            .and_then(|path| first_error_of(path, whole_file.clone(), sender))
            .unwrap_or_else(|| whole_file.io_error(indexed::mismatch())),
        error => error,
    });
}

/// What reading the whole file takes to find its first error: no columns, the whole text.
fn whole_file_config(config: &ReaderConfig) -> ReaderConfig {
    ReaderConfig {
        columns: ColumnSelection::new(&[]),
        schema: Arc::new(datafusion::arrow::datatypes::Schema::empty()),
        bounds: ScanBounds::Whole,
        range_end: None,
        ..config.clone()
    }
}

/// Sends the batches of `reader` until the end, the first error (as `on_error` reports it),
/// or the consumer going away (a failed send or a closed channel stops the loop).
fn send_batches<R: Read>(
    mut reader: SequenceReader<R>,
    sender: &BatchSender,
    on_error: impl FnOnce(FastaError) -> FastaError,
) {
    loop {
        if sender.is_closed() {
            return;
        }
        let message = match reader.next_handoff() {
            Ok(Some(batch)) => Ok(batch),
            Ok(None) => return,
            Err(error) => {
                let _ = sender.blocking_send(Err(on_error(error).into()));
                return;
            }
        };
        if sender.blocking_send(message).is_err() {
            return;
        }
    }
}

/// The first error reading the local file at `path` from its start finds (`None` if it reads
/// to the end, cannot be opened, or the consumer went away meanwhile).
fn first_error_of(
    path: &std::path::Path,
    config: ReaderConfig,
    sender: &BatchSender,
) -> Option<FastaError> {
    let file = std::fs::File::open(path).ok()?;
    let (_, input) = decompressed(Box::new(file)).ok()?;
    let input = StopWhenClosed {
        inner: input,
        sender: sender.clone(),
        _held: None,
    };
    let mut reader = SequenceReader::new(input, config);
    loop {
        match reader.next_handoff() {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(FastaError::Io { .. }) if sender.is_closed() => return None,
            Err(error) => return Some(error),
        }
    }
}

/// Positions the object at the first byte the reader needs and decompresses it if needed;
/// the reservation holds the decoder's memory. (BGZF ranges are read by [`read_bgzf_range`].)
fn open_input(
    get: GetResult,
    config: &mut ReaderConfig,
    runtime: tokio::runtime::Handle,
) -> Result<(Box<dyn Read + Send>, Option<MemoryReservation>), FastaError> {
    let range_start = get.range.start;
    let expected = get.range.end - get.range.start;
    let raw: Box<dyn Read + Send> = match get.payload {
        GetResultPayload::File(mut file, path) => {
            config.path = path.display().to_string();
            file.seek(SeekFrom::Start(range_start))
                .map_err(|source| config.io_error(source))?;
            Box::new(file)
        }
        GetResultPayload::Stream(stream) => Box::new(StreamRead::new(stream, expected, runtime)),
    };
    if range_start > 0 {
        // Only uncompressed files are read from the middle (checked by the opener).
        return Ok((raw, None));
    }
    let (compression, decoded) = decompressed(raw).map_err(|source| config.io_error(source))?;
    if !compression.is_compressed() {
        return Ok((decoded, None));
    }
    // Byte ranges refer to compressed bytes: the range at 0 owns the whole file.
    config.bounds = ScanBounds::Whole;
    let held = config
        .memory
        .hold(decoder_memory(compression) + DECODED_MEMORY)?;
    // Decompression on its own thread, parsing on this one.
    let decoded = Decoded::spawn(decoded).map_err(|source| config.io_error(source))?;
    Ok((Box::new(decoded), Some(held)))
}

/// True when the local file at `path` starts with a BGZF block (read at planning time: one
/// small read per compressed file of a scan).
fn is_local_bgzf(path: &str) -> bool {
    let mut head = [0u8; bgzf::HEADER_LEN];
    std::fs::File::open(path)
        .and_then(|mut file| bgzf::read_up_to(&mut file, &mut head))
        .is_ok_and(|filled| bgzf::block_size(&head[..filled]).is_some())
}

/// Runs on a blocking thread: reads the records starting in the blocks that start in the
/// compressed range `[start, end)` of the BGZF file `source` of `size` bytes (a remote one by
/// range requests, which stop growing two blocks past the range) and sends their batches.
fn read_bgzf_range(
    source: &IndexedSource,
    (size, start, end): (u64, u64, u64),
    mut config: ReaderConfig,
    sender: &BatchSender,
) {
    let whole_file = whole_file_config(&config);
    let opened = source
        .open_sized(size, end.saturating_add(2 * bgzf::MAX_BLOCK))
        .map_err(|error| config.io_error(error))
        .and_then(|file| bgzf_range(file, source.read_memory(), (size, start, end), &mut config));
    send_input(opened, config, sender, |error| {
        range_error(error, source.local_path(), whole_file, sender)
    });
}

/// The input of the compressed range `[start, end)` of a BGZF file: the records starting in
/// the blocks that start in it, decompressed on a thread of their own. The reservation holds
/// the decoder's memory and `file_memory` (what reading `file` holds).
fn bgzf_range(
    file: Box<dyn ReadSeek>,
    file_memory: usize,
    (size, start, end): (u64, u64, u64),
    config: &mut ReaderConfig,
) -> Result<(Box<dyn Read + Send>, Option<MemoryReservation>), FastaError> {
    let held = config
        .memory
        .hold(decoder_memory(Compression::Gzip) + DECODED_MEMORY + file_memory)?;
    let Some(planned) =
        bgzf::plan(file, size, start, end).map_err(|source| config.io_error(source))?
    else {
        return Ok((Box::new(io::empty()), None));
    };
    config.bounds = ScanBounds::Range {
        start: planned.start,
        end: u64::MAX,
    };
    config.range_end = Some(planned.end);
    let decoded =
        Decoded::spawn(Box::new(planned.reader)).map_err(|source| config.io_error(source))?;
    Ok((Box::new(decoded), Some(held)))
}

/// Makes reads fail once the consumer has dropped its stream, so an abandoned scan stops
/// at the next block instead of parsing a whole record first.
struct StopWhenClosed<R> {
    inner: R,
    sender: BatchSender,
    /// Memory reserved while `inner` lives (its decoder's, its buffers').
    _held: Option<MemoryReservation>,
}

impl<R: Read> Read for StopWhenClosed<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.sender.is_closed() {
            return Err(io::Error::other("scan cancelled"));
        }
        self.inner.read(out)
    }
}
