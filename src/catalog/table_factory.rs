//! `CREATE EXTERNAL TABLE ... STORED AS FASTA`: builds FASTA tables the same way `--table` does.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::CreateExternalTable;

use crate::config::TableFormat;

/// Creates FASTA tables from a file, a directory or a glob, honouring `OPTIONS (...)`.
#[derive(Debug, Default)]
pub struct FastaTableFactory;

#[async_trait]
impl TableProviderFactory for FastaTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("FASTA tables need a SessionState".into()))?;
        if !cmd.schema.fields().is_empty() {
            return Err(DataFusionError::Plan(
                "FASTA tables have a fixed schema (id, description, sequence); \
                 leave out the column list"
                    .into(),
            ));
        }
        if !cmd.table_partition_cols.is_empty() {
            return Err(DataFusionError::Plan(
                "FASTA tables do not support PARTITIONED BY".into(),
            ));
        }
        let format = state
            .get_file_format_factory("fasta")
            .ok_or_else(|| DataFusionError::Internal("FASTA format is not registered".into()))?
            .create(state, &cmd.options)?;
        let table =
            super::build_table(state, &cmd.locations, Some(TableFormat::Fasta), format).await?;
        Ok(table)
    }
}
