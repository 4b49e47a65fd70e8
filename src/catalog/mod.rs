//! The catalog: one DataFusion session with the FASTA format registered and every configured table in it.

pub mod bounded_operators;
pub mod client_tables;
pub mod concat_operator;
pub mod data_roots;
pub mod functions;
pub mod location;
pub mod memory_table;
pub mod remote;
pub mod runtime;
pub mod table_factory;
pub mod view_build;
pub mod view_joins;
pub mod window_input;
pub mod yield_points;

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::compression::Compression;
use crate::config::{Config, TableFormat, TableSpec};
use crate::fasta::{FastaFormat, FastaFormatFactory, FastaOptions, SequenceFormat};
use location::LocationError;

/// Name of the catalog every table lives in.
pub const CATALOG: &str = "flightbear";
/// Name of the schema configured tables are registered in.
pub const SCHEMA: &str = "public";

/// Why a table could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The location does not name usable files.
    #[error("table '{table}': {source}")]
    Location {
        /// The table.
        table: String,
        /// What is wrong with its location.
        source: LocationError,
    },
    /// DataFusion refused the table (e.g. CSV schema inference failed).
    #[error("table '{table}': {source}")]
    DataFusion {
        /// The table.
        table: String,
        /// DataFusion's error.
        source: DataFusionError,
    },
}

/// FASTA (and FASTQ) reader settings derived from the configuration.
pub fn fasta_options(config: &Config) -> FastaOptions {
    FastaOptions {
        format: SequenceFormat::Fasta,
        batch_rows: Some(config.batch_rows),
        batch_bytes: config.batch_bytes.as_usize(),
    }
}

/// Builds the session every request runs in: FASTA registered, `STORED AS FASTA` available,
/// the server's memory limit and spill directory in force, functions whose results can dwarf
/// their inputs guarded by that limit.
pub fn session_context(config: &Config) -> Result<SessionContext, DataFusionError> {
    let runtime = runtime::runtime_env_with_stores(
        config.memory_limit(),
        config.spill_dir.clone(),
        remote::RemoteStores::new(config.s3.clone()),
    )?;
    let mut session = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_information_schema(true)
        .with_batch_size(config.batch_rows);
    if config.target_partitions > 0 {
        session = session.with_target_partitions(config.target_partitions);
    }
    // `CAST(x AS VARCHAR)` should give Utf8: several JDBC drivers cannot read Utf8View.
    session
        .options_mut()
        .sql_parser
        .map_string_types_to_utf8view = config.string_view;
    let fasta = Arc::new(FastaFormatFactory::new(fasta_options(config)));
    let fastq = Arc::new(FastaFormatFactory::new(FastaOptions {
        format: SequenceFormat::Fastq,
        ..fasta_options(config)
    }));
    let pool = Arc::clone(&runtime.memory_pool);
    let mut state = SessionStateBuilder::new()
        .with_config(session)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_query_planner(Arc::new(view_joins::ViewJoinsPlanner))
        .with_physical_optimizer_rule(Arc::new(view_joins::OrderedToTheEnd))
        .with_physical_optimizer_rule(Arc::new(yield_points::YieldAfterEachBatch))
        .with_physical_optimizer_rule(Arc::new(bounded_operators::BoundExchangeBuffers))
        .with_physical_optimizer_rule(Arc::new(bounded_operators::NoNestedLoopJoinSpill))
        .with_physical_optimizer_rule(Arc::new(bounded_operators::SliceViewsForProjections))
        .with_physical_optimizer_rule(Arc::new(view_build::OneBuildBatch))
        .with_physical_optimizer_rule(Arc::new(window_input::HoldWindowInputs))
        .with_table_factory(
            "FASTA".to_string(),
            Arc::new(table_factory::FastaTableFactory(SequenceFormat::Fasta)),
        )
        .with_table_factory(
            "FASTQ".to_string(),
            Arc::new(table_factory::FastaTableFactory(SequenceFormat::Fastq)),
        )
        .build();
    // Registering cannot fail for a new format name; keep going without it if it ever does.
    for factory in [fasta, fastq] {
        if let Err(e) = state.register_file_format(factory, true) {
            tracing::error!("could not register a sequence file format: {e}");
        }
    }
    crate::sequence::register(&mut state, &pool);
    state.register_udtf(
        "fasta_region",
        Arc::new(crate::fasta::region::FastaRegionFunction),
    );
    functions::guard_amplifying_functions(&mut state, &pool);
    Ok(SessionContext::new_with_state(state))
}

/// A session as the server makes it, with a memory limit of `limit_mib` MiB.
#[cfg(test)]
pub(crate) fn limited_session(limit_mib: u64) -> SessionContext {
    let config = Config {
        memory_limit: Some(crate::bytesize::ByteSize::mib(limit_mib)),
        ..Config::default()
    };
    session_context(&config).unwrap()
}

/// Registers every configured table; the first failure stops start-up with a readable message.
pub async fn register_tables(
    ctx: &SessionContext,
    config: &Config,
    tables: &[TableSpec],
) -> Result<(), CatalogError> {
    for spec in tables {
        let locations = [spec.path.clone()];
        let table = build_table(&ctx.state(), &locations, spec.format, fasta_options(config))
            .await
            .map_err(|e| e.for_table(&spec.name))?;
        let name = spec.name.to_ascii_lowercase();
        ctx.register_table(name.as_str(), table)
            .map_err(|source| CatalogError::DataFusion {
                table: spec.name.clone(),
                source,
            })?;
        tracing::info!(table = %name, path = %spec.path, "registered table");
    }
    Ok(())
}

/// An error from building a table before the table's name is attached.
#[derive(Debug)]
pub enum BuildError {
    /// See [`LocationError`].
    Location(LocationError),
    /// See [`DataFusionError`].
    DataFusion(DataFusionError),
}

impl BuildError {
    fn for_table(self, table: &str) -> CatalogError {
        let table = table.to_string();
        match self {
            BuildError::Location(source) => CatalogError::Location { table, source },
            BuildError::DataFusion(source) => CatalogError::DataFusion { table, source },
        }
    }
}

impl From<BuildError> for DataFusionError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Location(e) => DataFusionError::External(Box::new(e)),
            BuildError::DataFusion(e) => e,
        }
    }
}

/// Builds a listing table over files, directories or globs in the given (or guessed) format;
/// FASTA and FASTQ tables read with `sequence` (its `format` set to the table's).
pub async fn build_table(
    state: &SessionState,
    locations: &[String],
    format: Option<TableFormat>,
    sequence: FastaOptions,
) -> Result<Arc<dyn TableProvider>, BuildError> {
    let mut files: Vec<String> = Vec::new();
    let mut format = format;
    for location in locations {
        let (named, found) = if remote::is_remote(location) {
            let (url, _) = remote::parse(location).map_err(BuildError::Location)?;
            let store =
                remote::store_of(state.runtime_env(), &url).map_err(BuildError::DataFusion)?;
            remote::resolve(store.as_ref(), location, format)
                .await
                .map_err(BuildError::Location)?
        } else {
            let (resolved, found) =
                location::resolve(location, format).map_err(BuildError::Location)?;
            let named = resolved
                .files
                .iter()
                .map(|f| f.to_string_lossy().into_owned());
            (named.collect(), found)
        };
        format = Some(found);
        files.extend(named);
    }
    let (Some(format), Some(first)) = (format, files.first()) else {
        return Err(BuildError::DataFusion(DataFusionError::Plan(
            "a table needs at least one location".into(),
        )));
    };
    let urls = files
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(BuildError::DataFusion)?;
    if urls
        .iter()
        .any(|url| url.object_store() != urls[0].object_store())
    {
        return Err(BuildError::DataFusion(DataFusionError::Plan(format!(
            "the files of one table must be in one store (one bucket, one host, or local \
             files): '{}' and '{}' are not",
            urls[0].object_store(),
            urls.iter()
                .map(ListingTableUrl::object_store)
                .find(|store| *store != urls[0].object_store())
                .map(|store| store.to_string())
                .unwrap_or_default()
        ))));
    }
    let first = std::path::Path::new(first);
    let file_format: Arc<dyn FileFormat> = match SequenceFormat::of_table(format) {
        Some(sequence_format) => Arc::new(FastaFormat::new(FastaOptions {
            format: sequence_format,
            ..sequence
        })),
        None => {
            let compression = Compression::of_path(first).file_compression_type();
            let delimiter = if format == TableFormat::Tsv {
                b'\t'
            } else {
                b','
            };
            Arc::new(
                CsvFormat::default()
                    .with_has_header(true)
                    .with_delimiter(delimiter)
                    .with_file_compression_type(compression),
            )
        }
    };
    // Files were selected by `resolve`; an empty extension keeps ListingTable from dropping any.
    let options = ListingOptions::new(file_format).with_file_extension("");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(state)
        .await
        .map_err(BuildError::DataFusion)?;
    let table = ListingTable::try_new(config).map_err(BuildError::DataFusion)?;
    Ok(Arc::new(table))
}
