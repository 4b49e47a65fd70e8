//! What the FASTA and FASTQ formats are to DataFusion: [`FastaFormat`] and the
//! [`FastaFormatFactory`] behind `STORED AS FASTA` and `STORED AS FASTQ`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{DataFusionError, GetExt, Result, Statistics, internal_err};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::{FileFormat, FileFormatFactory};
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder, FileSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::physical_plan::ExecutionPlan;
use object_store::{ObjectMeta, ObjectStore};

use super::indexed::{IndexedSource, Located};
use super::options::FastaOptions;
use super::source::FastaSource;

/// The number of records of the FASTA file `source`, when it has an index that describes it;
/// the index is read (once per version of the files) with its memory reserved in `pool`.
fn indexed_records(source: &IndexedSource, pool: &Arc<dyn MemoryPool>) -> Result<Option<u64>> {
    let Some(located) = Located::find(source) else {
        return Ok(None);
    };
    if let Some(records) = located.known_records() {
        return Ok(Some(records));
    }
    let reservation =
        MemoryConsumer::new(format!("FASTA index of {}", source.display())).register(pool);
    reservation.try_grow(located.memory())?;
    // A file that cannot be read has no statistics; its scan reports why.
    Ok(located
        .load_complete()
        .ok()
        .flatten()
        .map(|file| file.records() as u64))
}

/// Creates [`FastaFormat`]s, applying `CREATE EXTERNAL TABLE ... OPTIONS (...)` on top of its defaults.
#[derive(Debug, Clone, Default)]
pub struct FastaFormatFactory {
    options: FastaOptions,
}

impl FastaFormatFactory {
    /// A factory whose formats start from `options`.
    pub fn new(options: FastaOptions) -> Self {
        Self { options }
    }
}

impl FileFormatFactory for FastaFormatFactory {
    fn create(
        &self,
        _state: &dyn Session,
        format_options: &HashMap<String, String>,
    ) -> Result<Arc<dyn FileFormat>> {
        let options = self.options.with_table_options(format_options)?;
        Ok(Arc::new(FastaFormat::new(options)))
    }

    fn default(&self) -> Arc<dyn FileFormat> {
        Arc::new(FastaFormat::new(self.options))
    }
}

impl GetExt for FastaFormatFactory {
    fn get_ext(&self) -> String {
        self.options.format.ext().to_owned()
    }
}

/// The FASTA or FASTQ [`FileFormat`] (as its options say): a fixed schema (see
/// [`super::SequenceFormat::schema`]), any file name, any supported compression.
#[derive(Debug, Clone, Default)]
pub struct FastaFormat {
    options: FastaOptions,
}

impl FastaFormat {
    /// A format that reads with `options`.
    pub fn new(options: FastaOptions) -> Self {
        Self { options }
    }

    /// The reader options of this format.
    pub fn options(&self) -> &FastaOptions {
        &self.options
    }
}

impl fmt::Display for FastaFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.options.format.ext())
    }
}

#[async_trait]
impl FileFormat for FastaFormat {
    fn get_ext(&self) -> String {
        self.options.format.ext().to_owned()
    }

    fn get_ext_with_compression(&self, compression: &FileCompressionType) -> Result<String> {
        Ok(format!(
            "{}{}",
            self.options.format.ext(),
            compression.get_ext()
        ))
    }

    /// Compression is detected per file from its first bytes, so the format has none of its own.
    fn compression_type(&self) -> Option<FileCompressionType> {
        None
    }

    async fn infer_schema(
        &self,
        _state: &dyn Session,
        _store: &Arc<dyn ObjectStore>,
        _objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        Ok(self.options.format.schema())
    }

    /// The row count of a FASTA file with an index that describes it (see
    /// [`super::indexed`]), which answers `COUNT(*)` without reading the file; unknown otherwise.
    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Statistics> {
        let mut statistics = Statistics::new_unknown(&table_schema);
        if self.options.format != super::SequenceFormat::Fasta {
            return Ok(statistics);
        }
        let source = if store.to_string().starts_with("LocalFileSystem") {
            IndexedSource::Local(PathBuf::from(format!("/{}", object.location)))
        } else {
            IndexedSource::Remote {
                store: Arc::clone(store),
                key: object.location.clone(),
                url: format!("{store}/{}", object.location),
            }
        };
        let pool = Arc::clone(&state.runtime_env().memory_pool);
        let records = tokio::task::spawn_blocking(move || indexed_records(&source, &pool))
            .await
            .map_err(|error| DataFusionError::External(Box::new(error)))??;
        if let Some(records) = records.and_then(|n| usize::try_from(n).ok()) {
            statistics.num_rows = Precision::Exact(records);
        }
        Ok(statistics)
    }

    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: FileScanConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Keep the source DataFusion configured (projection, partition columns), with our
        // options and the session's memory pool, which the opener cannot reach otherwise.
        let Some(source) = conf.file_source.downcast_ref::<FastaSource>() else {
            return internal_err!(
                "a {} scan was planned with another file source",
                self.options.format
            );
        };
        let pool = Arc::clone(&state.runtime_env().memory_pool);
        let source = Arc::new(
            source
                .clone()
                .with_options(self.options)
                .with_memory_pool(pool),
        );
        let config = FileScanConfigBuilder::from(conf)
            .with_source(source)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        Arc::new(FastaSource::new(table_schema, self.options))
    }
}
