//! Plain Flight over tables: path descriptors resolved to table names, and ListFlights.

use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo};
use datafusion::common::TableReference;

use super::error::ServiceError;
use super::handle::StatementHandle;
use super::statement::statement_ticket;
use super::{FlightbearService, metadata};
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

    /// ListFlights: one FlightInfo per table of flightbear's catalog (information_schema left
    /// out), with a path descriptor and a ticket that streams the whole table.
    pub(super) async fn list_tables(&self) -> Result<Vec<FlightInfo>, ServiceError> {
        let mut infos = Vec::new();
        for entry in metadata::all_tables(self.planner.catalog()).await? {
            if entry.catalog != catalog::CATALOG || metadata::is_information_schema(&entry.schema) {
                continue;
            }
            let path = if entry.schema == catalog::SCHEMA {
                vec![entry.name]
            } else {
                vec![entry.schema, entry.name]
            };
            let handle = self.table_query(&path)?;
            infos.push(
                FlightInfo::new()
                    .try_with_schema(&self.wire_schema(&entry.table.schema()))?
                    .with_descriptor(FlightDescriptor::new_path(path))
                    .with_endpoint(FlightEndpoint::new().with_ticket(statement_ticket(&handle)))
                    .with_total_records(-1)
                    .with_total_bytes(-1),
            );
        }
        Ok(infos)
    }
}
