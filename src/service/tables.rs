//! Plain Flight over tables: path descriptors resolved to table names, and ListFlights.

use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo};
use datafusion::common::TableReference;

use super::FlightbearService;
use super::error::ServiceError;
use super::handle::StatementHandle;
use super::statement::statement_ticket;
use crate::catalog;

impl FlightbearService {
    /// The statement that streams the table a path descriptor names.
    pub(super) fn table_query(&self, path: &[String]) -> Result<StatementHandle, ServiceError> {
        let table = self.table_sql_name(path)?;
        Ok(StatementHandle::for_sql(format!("SELECT * FROM {table}")))
    }

    /// Resolves `[table]`, `[schema, table]` or `[catalog, schema, table]` to a quoted SQL name.
    ///
    /// Names are matched exactly first, then in lower case (the case unquoted SQL names fold to).
    fn table_sql_name(&self, path: &[String]) -> Result<String, ServiceError> {
        if path.is_empty() || path.len() > 3 {
            return Err(ServiceError::InvalidRequest(format!(
                "a path descriptor names one table as [table], [schema, table] or \
                 [catalog, schema, table]; got {} elements",
                path.len()
            )));
        }
        let lower: Vec<String> = path.iter().map(|p| p.to_lowercase()).collect();
        for candidate in [path, &lower[..]] {
            let reference = match candidate {
                [table] => TableReference::bare(table.as_str()),
                [schema, table] => TableReference::partial(schema.as_str(), table.as_str()),
                [catalog, schema, table] => {
                    TableReference::full(catalog.as_str(), schema.as_str(), table.as_str())
                }
                _ => continue,
            };
            if self.planner.catalog().table_exist(reference)? {
                return Ok(candidate
                    .iter()
                    .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
                    .collect::<Vec<_>>()
                    .join("."));
            }
        }
        Err(ServiceError::TableNotFound(path.join(".")))
    }

    /// ListFlights: one FlightInfo per table (information_schema left out), with a path
    /// descriptor and a ticket that streams the whole table.
    pub(super) async fn list_tables(&self) -> Result<Vec<FlightInfo>, ServiceError> {
        let mut infos = Vec::new();
        let Some(catalog) = self.planner.catalog().catalog(catalog::CATALOG) else {
            return Ok(infos);
        };
        let mut schema_names = catalog.schema_names();
        schema_names.sort();
        for schema_name in schema_names {
            if schema_name == "information_schema" {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                let Some(table) = schema.table(&name).await? else {
                    continue;
                };
                let path = if schema_name == catalog::SCHEMA {
                    vec![name.clone()]
                } else {
                    vec![schema_name.clone(), name.clone()]
                };
                let handle = self.table_query(&path)?;
                infos.push(
                    FlightInfo::new()
                        .try_with_schema(&self.wire_schema(&table.schema()))?
                        .with_descriptor(FlightDescriptor::new_path(path))
                        .with_endpoint(FlightEndpoint::new().with_ticket(statement_ticket(&handle)))
                        .with_total_records(-1)
                        .with_total_bytes(-1),
                );
            }
        }
        Ok(infos)
    }
}
