//! What the FASTA and FASTQ formats are to DataFusion: [`FastaFormat`] and the
//! [`FastaFormatFactory`] behind `STORED AS FASTA` and `STORED AS FASTQ`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{GetExt, Result, Statistics, internal_err};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::{FileFormat, FileFormatFactory};
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder, FileSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::physical_plan::ExecutionPlan;
use object_store::{ObjectMeta, ObjectStore};

use super::options::FastaOptions;
use super::source::FastaSource;

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

    async fn infer_stats(
        &self,
        _state: &dyn Session,
        _store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        _object: &ObjectMeta,
    ) -> Result<Statistics> {
        Ok(Statistics::new_unknown(&table_schema))
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
