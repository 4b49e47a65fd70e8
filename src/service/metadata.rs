//! Flight SQL metadata answers: catalogs, schemas, tables, table types, SQL info, XDBC types, keys.

use std::sync::{Arc, LazyLock};

use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData,
    XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Command, CommandGetDbSchemas, CommandGetTables, Nullable, Searchable, SqlInfo, SqlNullOrdering,
    SqlSupportedCaseSensitivity, SqlSupportedTransaction, XdbcDataType,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use prost::Message;

use super::error::ServiceError;
use super::wire::wire_schema;

/// The result of a metadata command, computed in full (metadata results are small).
pub async fn answer(
    ctx: &SessionContext,
    command: &Command,
    string_view: bool,
) -> Result<RecordBatch, ServiceError> {
    match command.clone() {
        Command::CommandGetCatalogs(_) => catalogs(ctx),
        Command::CommandGetDbSchemas(cmd) => db_schemas(ctx, cmd),
        Command::CommandGetTables(cmd) => tables(ctx, cmd, string_view).await,
        Command::CommandGetTableTypes(_) => table_types(),
        Command::CommandGetSqlInfo(cmd) => Ok(cmd.into_builder(&SQL_INFO).build()?),
        Command::CommandGetXdbcTypeInfo(cmd) => Ok(cmd.into_builder(&XDBC_TYPES).build()?),
        Command::CommandGetPrimaryKeys(_) => Ok(RecordBatch::new_empty(primary_keys_schema())),
        Command::CommandGetExportedKeys(_)
        | Command::CommandGetImportedKeys(_)
        | Command::CommandGetCrossReference(_) => Ok(RecordBatch::new_empty(foreign_keys_schema())),
        // The request decoder lets only the commands above through.
        other => Err(ServiceError::Internal(format!(
            "{} reached the metadata handler",
            other.type_url()
        ))),
    }
}

/// The FlightInfo of a metadata command's answer; its ticket carries the command itself.
pub fn flight_info(
    answer: &RecordBatch,
    command: Command,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, ServiceError> {
    let ticket = Ticket::new(command.into_any().encode_to_vec());
    Ok(FlightInfo::new()
        .try_with_schema(&answer.schema())?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor)
        .with_total_records(answer.num_rows() as i64)
        .with_ordered(true))
}

/// Table types flightbear reports, in the order GetTableTypes lists them.
pub const TABLE_TYPES: &[&str] = &["TABLE", "VIEW", "LOCAL TEMPORARY"];

fn table_type_name(table_type: TableType) -> &'static str {
    match table_type {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// GetCatalogs: every catalog of the session.
fn catalogs(ctx: &SessionContext) -> Result<RecordBatch, ServiceError> {
    let mut builder = GetCatalogsBuilder::new();
    let mut names = ctx.catalog_names();
    names.sort();
    for name in names {
        builder.append(name);
    }
    Ok(builder.build()?)
}

/// GetDbSchemas: every (catalog, schema) pair passing the command's filters.
fn db_schemas(ctx: &SessionContext, cmd: CommandGetDbSchemas) -> Result<RecordBatch, ServiceError> {
    let mut builder = cmd.into_builder();
    for (catalog_name, schema_name) in schema_pairs(ctx) {
        builder.append(catalog_name, schema_name);
    }
    Ok(builder.build()?)
}

fn schema_pairs(ctx: &SessionContext) -> Vec<(String, String)> {
    let with_information_schema = ctx.state().config().information_schema();
    let mut pairs = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            pairs.push((catalog_name.clone(), schema_name));
        }
        // The session adds information_schema on top of the catalog, so the catalog does not list it.
        if with_information_schema
            && !pairs
                .iter()
                .any(|(c, s)| c == &catalog_name && s == INFORMATION_SCHEMA)
        {
            pairs.push((catalog_name.clone(), INFORMATION_SCHEMA.to_string()));
        }
    }
    pairs.sort();
    pairs
}

const INFORMATION_SCHEMA: &str = "information_schema";

/// The schema provider behind a (catalog, schema) pair, information_schema included.
fn schema_provider(
    ctx: &SessionContext,
    catalog_name: &str,
    schema_name: &str,
) -> Option<Arc<dyn SchemaProvider>> {
    if schema_name == INFORMATION_SCHEMA {
        let catalogs = Arc::clone(ctx.state().catalog_list());
        return Some(Arc::new(InformationSchemaProvider::new(catalogs)));
    }
    ctx.catalog(catalog_name)?.schema(schema_name)
}

/// One table of the session, named by catalog, schema and table.
pub struct TableEntry {
    /// The catalog.
    pub catalog: String,
    /// The schema within the catalog.
    pub schema: String,
    /// The table's name within the schema.
    pub name: String,
    /// The table.
    pub table: Arc<dyn TableProvider>,
}

/// Every table of the session (information_schema included), sorted by catalog, schema, name.
pub async fn all_tables(ctx: &SessionContext) -> Result<Vec<TableEntry>, ServiceError> {
    let mut entries = Vec::new();
    for (catalog, schema_name) in schema_pairs(ctx) {
        let Some(schema) = schema_provider(ctx, &catalog, &schema_name) else {
            continue;
        };
        let mut names = schema.table_names();
        names.sort();
        for name in names {
            if let Some(table) = schema.table(&name).await? {
                entries.push(TableEntry {
                    catalog: catalog.clone(),
                    schema: schema_name.clone(),
                    name,
                    table,
                });
            }
        }
    }
    Ok(entries)
}

/// True for the schema DataFusion adds to describe the catalog itself.
pub fn is_information_schema(schema: &str) -> bool {
    schema == INFORMATION_SCHEMA
}

/// GetTables: every table passing the filters, with its wire schema when asked.
async fn tables(
    ctx: &SessionContext,
    cmd: CommandGetTables,
    string_view: bool,
) -> Result<RecordBatch, ServiceError> {
    let include_schema = cmd.include_schema;
    let mut builder = cmd.into_builder();
    for entry in all_tables(ctx).await? {
        let table_schema = if include_schema {
            wire_schema(&entry.table.schema(), string_view)
        } else {
            Arc::new(Schema::empty())
        };
        builder.append(
            &entry.catalog,
            &entry.schema,
            &entry.name,
            table_type_name(entry.table.table_type()),
            &table_schema,
        )?;
    }
    Ok(builder.build()?)
}

/// GetTableTypes: the fixed list of table types.
fn table_types() -> Result<RecordBatch, ServiceError> {
    let mut builder = arrow_flight::sql::CommandGetTableTypes {}.into_builder();
    for table_type in TABLE_TYPES {
        builder.append(table_type);
    }
    Ok(builder.build()?)
}

/// The SqlInfo values flightbear reports (GetSqlInfo); JDBC's metadata tree needs them.
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "flightbear");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, crate::ARROW_VERSION);
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    builder.append(SqlInfo::FlightSqlServerCancel, false);
    // Bulk ingest is served when the operator gives an --ingest-dir (else refused clearly).
    builder.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    builder.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    builder.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    builder.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    builder.append(SqlInfo::SqlDdlCatalog, false);
    builder.append(SqlInfo::SqlDdlSchema, true);
    builder.append(SqlInfo::SqlDdlTable, true);
    builder.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    builder.append(SqlInfo::SqlAllTablesAreSelectable, true);
    builder.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    builder.append(SqlInfo::SqlSearchStringEscape, "\\");
    builder.append(SqlInfo::SqlExtraNameCharacters, "");
    builder.append(SqlInfo::SqlSupportsColumnAliasing, true);
    builder.append(SqlInfo::SqlNullPlusNullIsNull, true);
    builder.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    builder.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    builder.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    builder.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    builder.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    builder.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    builder.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    builder.append(SqlInfo::SqlCatalogAtStart, true);
    builder.append(SqlInfo::SqlSchemaTerm, "schema");
    builder.append(SqlInfo::SqlCatalogTerm, "catalog");
    builder.append(SqlInfo::SqlProcedureTerm, "procedure");
    builder.append(SqlInfo::SqlSelectForUpdateSupported, false);
    builder.append(SqlInfo::SqlStoredProceduresSupported, false);
    builder.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    builder.append(SqlInfo::SqlTransactionsSupported, false);
    builder.append(SqlInfo::SqlBatchUpdatesSupported, false);
    builder.append(SqlInfo::SqlSavepointsSupported, false);
    builder.append(SqlInfo::SqlNamedParametersSupported, false);
    builder.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    builder.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    builder.append(SqlInfo::SqlMaxColumnNameLength, 0i64);
    builder.append(SqlInfo::SqlMaxStatementLength, 0i64);
    builder.append(
        SqlInfo::SqlKeywords,
        &[
            "ANALYZE", "EXPLAIN", "EXTERNAL", "LOCATION", "STORED", "OPTIONS", "QUALIFY", "UNNEST",
        ][..],
    );
    builder.append(
        SqlInfo::SqlNumericFunctions,
        &[
            "abs", "acos", "asin", "atan", "atan2", "ceil", "cos", "exp", "floor", "ln", "log",
            "log10", "log2", "pi", "power", "random", "round", "signum", "sin", "sqrt", "tan",
            "trunc",
        ][..],
    );
    builder.append(
        SqlInfo::SqlStringFunctions,
        &[
            "ascii",
            "btrim",
            "char_length",
            "concat",
            "concat_ws",
            "left",
            "length",
            "lower",
            "lpad",
            "ltrim",
            "md5",
            "octet_length",
            "regexp_match",
            "regexp_replace",
            "repeat",
            "replace",
            "reverse",
            "right",
            "rpad",
            "rtrim",
            "sha256",
            "split_part",
            "starts_with",
            "strpos",
            "substr",
            "translate",
            "trim",
            "upper",
        ][..],
    );
    builder.append(
        SqlInfo::SqlDatetimeFunctions,
        &[
            "current_date",
            "current_time",
            "date_bin",
            "date_part",
            "date_trunc",
            "from_unixtime",
            "now",
            "to_timestamp",
        ][..],
    );
    // Building only fails for an unsupported value type, which the list above does not use.
    builder.build().expect("static SqlInfo values build")
});

/// The types flightbear's SQL supports, for GetXdbcTypeInfo.
static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    let mut add = |name: &str, data_type: XdbcDataType, size: Option<i32>, quoted: bool| {
        let quote = quoted.then(|| "'".to_string());
        builder.append(XdbcTypeInfo {
            type_name: name.to_string(),
            data_type,
            column_size: size,
            literal_prefix: quote.clone(),
            literal_suffix: quote,
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: quoted,
            searchable: Searchable::Full,
            unsigned_attribute: (!quoted).then_some(false),
            fixed_prec_scale: false,
            auto_increment: (!quoted).then_some(false),
            local_type_name: Some(name.to_string()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: (!quoted).then_some(10),
            interval_precision: None,
        });
    };
    add("TINYINT", XdbcDataType::XdbcTinyint, Some(3), false);
    add("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), false);
    add("INTEGER", XdbcDataType::XdbcInteger, Some(10), false);
    add("BIGINT", XdbcDataType::XdbcBigint, Some(19), false);
    add("REAL", XdbcDataType::XdbcReal, Some(7), false);
    add("DOUBLE", XdbcDataType::XdbcDouble, Some(15), false);
    add("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false);
    add("VARCHAR", XdbcDataType::XdbcVarchar, None, true);
    add("BINARY", XdbcDataType::XdbcBinary, None, true);
    add("DATE", XdbcDataType::XdbcDate, Some(10), true);
    add("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(29), true);
    builder.build().expect("static XDBC type info builds")
});

/// Schema of GetPrimaryKeys results (Flight SQL spec).
fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Schema of GetExportedKeys / GetImportedKeys / GetCrossReference results (Flight SQL spec).
fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}
