//! Bulk ingest (Flight SQL CommandStatementIngest, ADBC's `adbc_ingest`): the record batches
//! of a DoPut stream stored as a table that joins with every other.
//!
//! Ingested tables are kept under `--ingest-dir`, one directory of Parquet parts per table
//! (`<dir>/<table>/part-….parquet`), and registered again when the server starts. An ingest
//! writes its part into a staging directory first (`<dir>/.staging-…`) and moves it into place
//! only once every batch has been written: a failed, cancelled or interrupted ingest leaves no
//! partial table behind (staging directories are removed, and those a crash left are removed
//! at the next start). Parts are immutable: appending adds one, replacing swaps the directory.
//!
//! Ingest follows the rules of DDL: an admin's right, only in the default schema, never over a
//! configured table, within `--max-client-tables`. While a part is written, the writer's
//! buffers are reserved in the memory pool; the data one ingest may send is bounded by
//! `--max-ingest-bytes`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::sql::{CommandStatementIngest, TableExistsOption, TableNotExistOption};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use tonic::{Code, Status, Streaming};

use super::FlightbearService;
use super::authorize::require_catalog_rights;
use super::deadline::Deadline;
use super::error::ServiceError;
use super::request::put_batches;
use super::sessions::Session;
use super::statement::QueryLog;
use super::temp_tables::{self, TempTable};
use crate::bytesize::ByteSize;
use crate::catalog::{CATALOG, SCHEMA};

/// Rows per Parquet row group, and the buffered bytes at which a row group is written early:
/// the writer holds one row group in memory.
const ROW_GROUP_ROWS: usize = 128 * 1024;
const ROW_GROUP_BYTES: usize = 32 * 1024 * 1024;
/// Longest table name: it is also a directory name.
const MAX_NAME_CHARS: usize = 128;
/// Staging directories start with this (and every name starting with a dot is not a table).
const STAGING_PREFIX: &str = ".staging-";
/// Replaced or dropped tables are moved aside under this prefix, then removed.
const TRASH_PREFIX: &str = ".trash-";

/// Why an ingest was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The server keeps no ingested tables.
    #[error(
        "bulk ingest into persistent tables is off on this server: its operator enables it \
         with --ingest-dir (temporary tables need no --ingest-dir)"
    )]
    Disabled,
    /// The session's table changed while the data was sent.
    #[error("table '{0}' changed while the data was sent; ingest again")]
    Changed(String),
    /// The command itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// Mode `create` and the table exists.
    #[error(
        "table '{0}' already exists: ingest mode 'create' never changes a table; use \
         'append', 'replace' or 'create_append'"
    )]
    Exists(String),
    /// Mode `append` and the table does not exist.
    #[error(
        "table '{0}' does not exist: ingest mode 'append' adds to an existing table; use \
         'create' or 'create_append'"
    )]
    Missing(String),
    /// Appending to a table that is not an ingested one.
    #[error(
        "table '{0}' was not made by bulk ingest (it was created with SQL): only ingested \
         tables can be appended to; use mode 'replace' to replace it"
    )]
    NotIngested(String),
    /// The batches do not fit the table's schema.
    #[error("the data does not match the schema of table '{table}': {detail}")]
    SchemaMismatch {
        /// The table.
        table: String,
        /// What differs.
        detail: String,
    },
    /// More data than `--max-ingest-bytes`.
    #[error(
        "one ingest may send at most {0} of Arrow data (--max-ingest-bytes); send less at a time"
    )]
    TooLarge(ByteSize),
    /// The data could not be stored.
    #[error("storing the ingested table failed: {0}")]
    Storage(String),
}

impl IngestError {
    /// The gRPC code.
    pub fn code(&self) -> Code {
        match self {
            Self::Disabled | Self::NotIngested(_) => Code::FailedPrecondition,
            Self::Invalid(_) | Self::SchemaMismatch { .. } => Code::InvalidArgument,
            Self::Changed(_) => Code::Aborted,
            Self::Exists(_) => Code::AlreadyExists,
            Self::Missing(_) => Code::NotFound,
            Self::TooLarge(_) => Code::ResourceExhausted,
            Self::Storage(_) => Code::Internal,
        }
    }
}

fn storage(what: &str, error: impl std::fmt::Display) -> IngestError {
    IngestError::Storage(format!("{what}: {error}"))
}

/// The ingested tables of this server: a directory of table directories.
#[derive(Debug)]
pub struct IngestStore {
    dir: PathBuf,
}

impl IngestStore {
    /// Opens (creating it if needed) the ingest directory, removing what interrupted ingests
    /// left behind.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') && entry.path().is_dir() {
                tracing::info!(path = %entry.path().display(), "removing an interrupted ingest");
                if let Err(error) = fs::remove_dir_all(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), %error, "could not remove");
                }
            }
        }
        Ok(Self { dir })
    }

    /// The tables kept here, by name. A directory that is not a readable table is logged and
    /// skipped: it must not keep the server from starting.
    pub fn tables(&self) -> std::io::Result<Vec<(String, Arc<dyn TableProvider>)>> {
        let mut tables = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() || table_name(&name).is_err() {
                continue;
            }
            match self.provider(&name) {
                Ok(table) => tables.push((name, table)),
                Err(error) => {
                    tracing::warn!(table = %name, %error, "skipping an unreadable ingested table")
                }
            }
        }
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(tables)
    }

    fn table_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// True when `name` is an ingested table.
    pub fn holds(&self, name: &str) -> bool {
        self.table_dir(name).is_dir()
    }

    /// The table over the parts of ingested table `name`, in the order they were ingested.
    pub fn provider(&self, name: &str) -> Result<Arc<dyn TableProvider>, IngestError> {
        let parts = parts(&self.table_dir(name))?;
        let Some(first) = parts.first() else {
            return Err(IngestError::Storage(format!("table '{name}' has no parts")));
        };
        let file = fs::File::open(first).map_err(|e| storage("reading the first part", e))?;
        let schema = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| storage("reading the first part", e))?
            .schema()
            .clone();
        // One URL per part: parts never change, so no listing cache can show a stale table.
        let urls = parts
            .iter()
            .map(|part| ListingTableUrl::parse(part.to_string_lossy()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| storage("naming the parts", e))?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(schema);
        let table = ListingTable::try_new(config).map_err(|e| storage("opening the table", e))?;
        Ok(Arc::new(table))
    }

    /// A new staging directory for one ingest; removed when dropped unless committed.
    fn staging(&self) -> Result<Staging, IngestError> {
        let dir = self.dir.join(format!("{STAGING_PREFIX}{}", unique()));
        fs::create_dir(&dir).map_err(|e| storage("creating the staging directory", e))?;
        let part = dir.join(part_name());
        Ok(Staging { dir, part })
    }

    /// Moves a written part into place: as a new part of `name` (`append`), or as the whole
    /// table, replacing what `name` held.
    fn commit(&self, staging: Staging, name: &str, append: bool) -> Result<(), IngestError> {
        let target = self.table_dir(name);
        if append {
            let part = target.join(staging.part.file_name().unwrap_or_default());
            return fs::rename(&staging.part, part).map_err(|e| storage("adding the part", e));
        }
        let trash = self.set_aside(name)?;
        fs::rename(&staging.dir, &target).map_err(|e| storage("moving the table in place", e))?;
        if let Some(trash) = trash {
            remove_quietly(&trash);
        }
        Ok(())
    }

    /// Removes ingested table `name`'s files (after DROP TABLE or a replacement by SQL), so
    /// it does not come back at the next start.
    pub fn remove(&self, name: &str) {
        match self.set_aside(name) {
            Ok(Some(trash)) => remove_quietly(&trash),
            Ok(None) => {}
            Err(error) => tracing::warn!(table = %name, %error, "could not remove its files"),
        }
    }

    /// Moves table `name`'s directory aside (a rename, so readers of open files go on), if it
    /// exists.
    fn set_aside(&self, name: &str) -> Result<Option<PathBuf>, IngestError> {
        let target = self.table_dir(name);
        if !target.exists() {
            return Ok(None);
        }
        let trash = self.dir.join(format!("{TRASH_PREFIX}{}", unique()));
        fs::rename(&target, &trash).map_err(|e| storage("moving the old table aside", e))?;
        Ok(Some(trash))
    }
}

/// The Parquet parts of a table directory, in name (= ingest) order.
fn parts(dir: &Path) -> Result<Vec<PathBuf>, IngestError> {
    let mut parts = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| storage("listing the table", e))? {
        let path = entry.map_err(|e| storage("listing the table", e))?.path();
        if path.extension().is_some_and(|ext| ext == "parquet") {
            parts.push(path);
        }
    }
    parts.sort();
    Ok(parts)
}

/// A part name that sorts after every earlier one.
fn part_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("part-{nanos:024}-{}.parquet", unique())
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn remove_quietly(path: &Path) {
    if let Err(error) = fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), %error, "could not remove");
    }
}

/// An ingest's staging directory and the part it writes; removed on drop (a failed or
/// cancelled ingest), after the part or the directory has been moved out of it.
struct Staging {
    dir: PathBuf,
    part: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.dir.exists() {
            remove_quietly(&self.dir);
        }
    }
}

/// Checks a client's table name: it is also a directory name, so it is a plain identifier.
/// Names are kept in lower case, as SQL reads unquoted names.
fn table_name(name: &str) -> Result<String, IngestError> {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_CHARS;
    if !plain {
        return Err(IngestError::Invalid(format!(
            "cannot ingest into table '{name}': table names for ingest are letters, digits and \
             '_' (not starting with a digit), at most {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_ascii_lowercase())
}

/// What an ingest command asks for.
#[derive(Debug)]
struct Target {
    reference: TableReference,
    /// A temporary table of the session.
    temporary: bool,
    /// Create the table when it does not exist (else fail).
    create: bool,
    /// What to do when it exists.
    if_exists: TableExistsOption,
}

impl Target {
    fn of(command: &CommandStatementIngest) -> Result<Self, IngestError> {
        if command.transaction_id.is_some() {
            return Err(IngestError::Invalid(
                "this server has no transactions: ingest without a transaction id".into(),
            ));
        }
        let name = table_name(&command.table)?;
        let options = command.table_definition_options.unwrap_or_default();
        let create = match TableNotExistOption::try_from(options.if_not_exist) {
            Ok(TableNotExistOption::Create) => true,
            Ok(TableNotExistOption::Fail) => false,
            _ => {
                return Err(IngestError::Invalid(
                    "the ingest command must say what to do when the table does not exist \
                     (if_not_exist CREATE or FAIL)"
                        .into(),
                ));
            }
        };
        let if_exists = match TableExistsOption::try_from(options.if_exists) {
            Ok(
                option @ (TableExistsOption::Fail
                | TableExistsOption::Append
                | TableExistsOption::Replace),
            ) => option,
            _ => {
                return Err(IngestError::Invalid(
                    "the ingest command must say what to do when the table exists (if_exists \
                     FAIL, APPEND or REPLACE)"
                        .into(),
                ));
            }
        };
        let reference = TableReference::full(
            command.catalog.clone().unwrap_or_else(|| CATALOG.into()),
            command.schema.clone().unwrap_or_else(|| SCHEMA.into()),
            name,
        );
        Ok(Self {
            reference,
            temporary: command.temporary,
            create,
            if_exists,
        })
    }

    /// The mode as ADBC names it, for logs.
    fn mode(&self) -> &'static str {
        match (self.create, self.if_exists) {
            (true, TableExistsOption::Fail) => "create",
            (false, TableExistsOption::Append) => "append",
            (true, TableExistsOption::Replace) => "replace",
            (true, TableExistsOption::Append) => "create_append",
            _ => "custom",
        }
    }

    /// Whether the ingest appends (`true`) or writes the whole table (`false`), given
    /// whether table `name` exists.
    fn appends(&self, name: &str, exists: bool) -> Result<bool, IngestError> {
        match (exists, self.if_exists) {
            (false, _) if self.create => Ok(false),
            (false, _) => Err(IngestError::Missing(name.into())),
            (true, TableExistsOption::Fail) => Err(IngestError::Exists(name.into())),
            (true, TableExistsOption::Replace) => Ok(false),
            (true, _) => Ok(true),
        }
    }

    /// What a persistent ingest does to table `name` as the catalog is now: `Some(schema)`
    /// appends to the ingested table of that schema, `None` writes the whole table.
    async fn plan(
        &self,
        name: &str,
        ctx: &SessionContext,
        store: &IngestStore,
    ) -> Result<Option<SchemaRef>, ServiceError> {
        let table = TableReference::full(CATALOG, SCHEMA, name);
        let existing = ctx.table_provider(table).await.ok();
        if !self.appends(name, existing.is_some())? {
            return Ok(None);
        }
        match existing {
            Some(table) if store.holds(name) => Ok(Some(table.schema())),
            _ => Err(IngestError::NotIngested(name.into()).into()),
        }
    }
}

impl FlightbearService {
    /// DoPut with CommandStatementIngest: stores the batches that follow as a table and
    /// returns how many rows were ingested.
    pub(super) async fn ingest(
        &self,
        command: CommandStatementIngest,
        first: FlightData,
        rest: Streaming<FlightData>,
        deadline: Option<Deadline>,
        session: &Session,
    ) -> Result<i64, ServiceError> {
        require_catalog_rights("ingest tables")?;
        let target = Target::of(&command)?;
        let store = match (&self.ingest, target.temporary) {
            (_, true) => None,
            (Some(store), false) => Some(Arc::clone(store)),
            (None, false) => return Err(IngestError::Disabled.into()),
        };
        let ctx = self.planner.catalog().clone();
        let name = self.guard.may_ingest(&target.reference, &ctx)?;
        let kind = if target.temporary { "TEMPORARY " } else { "" };
        let what = format!("INGEST INTO {kind}{name} (mode {})", target.mode());
        let mut log = QueryLog::new(&self.metrics, &what, "ingest");
        let rows = log.rows();
        let service = self.clone();
        let session = session.clone();
        let batches = put_batches(first, rest, self.max_ingest_bytes, |limit| {
            Status::resource_exhausted(IngestError::TooLarge(ByteSize(limit as u64)).to_string())
        });
        let outcome = self
            .run_limited(deadline, async move {
                let written = match store {
                    None => {
                        service
                            .ingest_temporary(&target, &name, batches, &session)
                            .await?
                    }
                    // The shared tables, not the session's temporary ones of the same name.
                    Some(store) => {
                        let work = service.ingest_persistent(&target, &name, batches, &ctx, &store);
                        temp_tables::outside_session(work).await?
                    }
                };
                rows.fetch_add(written, std::sync::atomic::Ordering::Relaxed);
                Ok(i64::try_from(written).unwrap_or(i64::MAX))
            })
            .await;
        log.finish(&outcome);
        outcome
    }

    /// Ingest into a persistent table: a Parquet part staged, then moved into place.
    async fn ingest_persistent(
        &self,
        target: &Target,
        name: &str,
        batches: FlightRecordBatchStream,
        ctx: &SessionContext,
        store: &IngestStore,
    ) -> Result<u64, ServiceError> {
        let append_to = target.plan(name, ctx, store).await?;
        let pool = Arc::clone(&ctx.runtime_env().memory_pool);
        let staging = store.staging()?;
        let written = write_part(&staging.part, batches, append_to.clone(), name, &pool).await?;
        // Under the DDL lock, the catalog is as the plan found it or the ingest fails.
        let _lock = self.guard.lock().await;
        self.guard.may_ingest(&target.reference, ctx)?;
        let now = target.plan(name, ctx, store).await?;
        let append = match (&append_to, &now) {
            (Some(before), Some(now)) if before == now => true,
            (None, None) => false,
            _ => return Err(IngestError::Changed(name.into()).into()),
        };
        store.commit(staging, name, append)?;
        let table = TableReference::full(CATALOG, SCHEMA, name);
        let provider = store.provider(name)?;
        ctx.deregister_table(table.clone())?;
        ctx.register_table(table, provider)?;
        Ok(written)
    }

    /// Ingest into a temporary table of `session`: the batches kept in memory, reserved in
    /// the pool for as long as the table lives.
    async fn ingest_temporary(
        &self,
        target: &Target,
        name: &str,
        mut batches: FlightRecordBatchStream,
        session: &Session,
    ) -> Result<u64, ServiceError> {
        let existing = self.sessions.temp_table(session, name);
        let append_to = match &existing {
            Some(table) if target.appends(name, true)? => {
                let table: &dyn std::any::Any = table.as_ref();
                Some(table.downcast_ref::<TempTable>().cloned().ok_or_else(|| {
                    ServiceError::Internal(format!("temporary table '{name}' of another kind"))
                })?)
            }
            Some(_) => None,
            None => {
                target.appends(name, false)?;
                None
            }
        };
        let pool = Arc::clone(&self.planner.catalog().runtime_env().memory_pool);
        let reservation = MemoryConsumer::new(format!("temporary table {name}")).register(&pool);
        let mut kept = Vec::new();
        let mut rows = 0u64;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let batch = match &append_to {
                Some(table) => conform(batch, &table.schema(), name)?,
                None => batch,
            };
            reservation.try_grow(batch.get_array_memory_size())?;
            rows += batch.num_rows() as u64;
            kept.push(batch);
        }
        let table = match &append_to {
            Some(table) => table.appended(kept, reservation),
            None => {
                let schema = batches.schema().cloned().ok_or_else(|| {
                    IngestError::Invalid("the ingest stream carried no schema and no data".into())
                })?;
                TempTable::new(schema, kept, reservation)
            }
        };
        // Another ingest of this session may have changed the table meanwhile.
        let now = self.sessions.temp_table(session, name);
        let unchanged = match (&existing, &now) {
            (Some(before), Some(now)) => Arc::ptr_eq(before, now),
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            return Err(IngestError::Changed(name.into()).into());
        }
        self.sessions
            .set_temp_table(session, name, Some(Arc::new(table)))?;
        Ok(rows)
    }

    /// Forgets the files of an ingested table that SQL dropped or replaced.
    pub(super) fn ingested_table_changed(&self, name: &str) {
        if let Some(store) = &self.ingest
            && store.holds(name)
        {
            store.remove(name);
        }
    }
}

/// The table a statement drops or replaces (DROP TABLE, CREATE OR REPLACE …), if any: once
/// it has run, an ingested table of that name must not come back at the next start.
pub(super) fn dropped_or_replaced(plan: &LogicalPlan) -> Option<String> {
    let name = match plan {
        LogicalPlan::Ddl(DdlStatement::DropTable(cmd)) => &cmd.name,
        LogicalPlan::Ddl(DdlStatement::DropView(cmd)) => &cmd.name,
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(cmd)) if cmd.or_replace => &cmd.name,
        LogicalPlan::Ddl(DdlStatement::CreateView(cmd)) if cmd.or_replace => &cmd.name,
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) if cmd.or_replace => &cmd.name,
        _ => return None,
    };
    Some(name.table().to_string())
}

/// Writes the batches of an ingest to one Parquet part and returns the rows written. With
/// `append_to`, the batches must have that schema (the table's).
async fn write_part(
    path: &Path,
    mut batches: FlightRecordBatchStream,
    append_to: Option<SchemaRef>,
    table: &str,
    pool: &Arc<dyn MemoryPool>,
) -> Result<u64, ServiceError> {
    let mut reservation = MemoryConsumer::new(format!("ingest into {table}")).register(pool);
    let mut writer: Option<ArrowWriter<fs::File>> = None;
    let mut rows = 0u64;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let batch = match &append_to {
            Some(schema) => conform(batch, schema, table)?,
            None => batch,
        };
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(new_writer(path, &batch.schema())?),
        };
        write_batch(writer, &batch, &mut reservation)?;
        rows += batch.num_rows() as u64;
        // Written batches are CPU work: let other queries on these threads go on.
        tokio::task::yield_now().await;
    }
    // An ingest of no batches still creates the table, with the schema that was sent.
    let writer = match writer {
        Some(writer) => writer,
        None => {
            let schema = match (&append_to, batches.schema()) {
                (Some(schema), _) => Arc::clone(schema),
                (None, Some(schema)) => Arc::clone(schema),
                (None, None) => {
                    return Err(IngestError::Invalid(
                        "the ingest stream carried no schema and no data".into(),
                    )
                    .into());
                }
            };
            new_writer(path, &schema)?
        }
    };
    writer
        .close()
        .map_err(|e| storage("finishing the part", e))?;
    Ok(rows)
}

fn new_writer(path: &Path, schema: &SchemaRef) -> Result<ArrowWriter<fs::File>, IngestError> {
    let file = fs::File::create(path).map_err(|e| storage("creating the part", e))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    ArrowWriter::try_new(file, Arc::clone(schema), Some(properties)).map_err(|e| {
        IngestError::Invalid(format!("these columns cannot be stored as Parquet: {e}"))
    })
}

/// Writes one batch, with the writer's buffers reserved in the memory pool: a row group is
/// written out early when the pool has no room for more.
fn write_batch(
    writer: &mut ArrowWriter<fs::File>,
    batch: &RecordBatch,
    reservation: &mut MemoryReservation,
) -> Result<(), ServiceError> {
    let incoming = batch.get_array_memory_size();
    if writer.in_progress_size() > ROW_GROUP_BYTES
        || reservation
            .try_resize(writer.memory_size().saturating_add(incoming))
            .is_err()
    {
        writer
            .flush()
            .map_err(|e| storage("writing a row group", e))?;
        reservation.try_resize(writer.memory_size().saturating_add(incoming))?;
    }
    writer
        .write(batch)
        .map_err(|e| storage("writing a batch", e))?;
    reservation.resize(writer.memory_size());
    Ok(())
}

/// A batch in the schema of the table it is appended to: same column names and types; a
/// column the table declares NOT NULL takes no nulls.
fn conform(
    batch: RecordBatch,
    schema: &SchemaRef,
    table: &str,
) -> Result<RecordBatch, IngestError> {
    let mismatch = |detail: String| IngestError::SchemaMismatch {
        table: table.into(),
        detail,
    };
    let sent = batch.schema();
    if sent.fields().len() != schema.fields().len() {
        return Err(mismatch(format!(
            "the table has {} columns, the data {}",
            schema.fields().len(),
            sent.fields().len()
        )));
    }
    for (want, got) in schema.fields().iter().zip(sent.fields()) {
        if want.name() != got.name() || want.data_type() != got.data_type() {
            return Err(mismatch(format!(
                "column '{}' {} was sent as '{}' {}",
                want.name(),
                want.data_type(),
                got.name(),
                got.data_type()
            )));
        }
    }
    RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec())
        .map_err(|e| mismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn table_names_are_plain_identifiers() {
        assert_eq!(table_name("Reads_2").unwrap(), "reads_2");
        for bad in [
            "",
            "1st",
            "../etc",
            "a/b",
            ".staging-x",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(table_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn appended_batches_must_match_the_table() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let sent = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = |ids: Vec<Option<&str>>| {
            RecordBatch::try_new(
                Arc::clone(&sent),
                vec![
                    Arc::new(StringArray::from(ids)),
                    Arc::new(Int64Array::from(vec![1, 2])),
                ],
            )
            .unwrap()
        };
        let ok = conform(batch(vec![Some("a"), Some("b")]), &schema, "t").unwrap();
        assert_eq!(ok.schema(), schema);
        let err = conform(batch(vec![Some("a"), None]), &schema, "t").unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        let other = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Float64, true),
        ]));
        let err = conform(batch(vec![Some("a"), Some("b")]), &other, "t").unwrap_err();
        assert!(err.to_string().contains("column 'n' Float64"), "{err}");
    }

    #[tokio::test]
    async fn staged_parts_vanish_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = IngestStore::open(dir.path()).unwrap();
        let staging = store.staging().unwrap();
        let staged = staging.dir.clone();
        fs::write(&staging.part, b"partial").unwrap();
        drop(staging);
        assert!(!staged.exists());
        // What a crash left is removed at the next start.
        fs::create_dir(dir.path().join(".staging-left")).unwrap();
        IngestStore::open(dir.path()).unwrap();
        assert!(!dir.path().join(".staging-left").exists());
        assert!(store.tables().unwrap().is_empty());
    }
}
