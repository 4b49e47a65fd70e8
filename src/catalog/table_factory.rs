//! `CREATE EXTERNAL TABLE ... STORED AS FASTA` (or `FASTQ`): builds the tables the same way
//! `--table` does.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::CreateExternalTable;

use crate::config::TableFormat;
use crate::fasta::{FastaFormat, SequenceFormat};

/// Creates FASTA or FASTQ tables from a file, a directory or a glob, honouring `OPTIONS (...)`.
#[derive(Debug, Default)]
pub struct FastaTableFactory(pub SequenceFormat);

#[async_trait]
impl TableProviderFactory for FastaTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let format = self.0;
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal(format!("{format} tables need a SessionState"))
            })?;
        if !cmd.schema.fields().is_empty() {
            let columns = format
                .schema()
                .fields()
                .iter()
                .map(|field| field.name().as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(DataFusionError::Plan(format!(
                "{format} tables have a fixed schema ({columns}); leave out the column list"
            )));
        }
        if !cmd.table_partition_cols.is_empty() {
            return Err(DataFusionError::Plan(format!(
                "{format} tables do not support PARTITIONED BY"
            )));
        }
        // The registered factory holds the server's reader settings; OPTIONS (...) go on top.
        let created = state
            .get_file_format_factory(format.ext())
            .ok_or_else(|| DataFusionError::Internal(format!("{format} is not registered")))?
            .create(state, &cmd.options)?;
        let options = *created
            .downcast_ref::<FastaFormat>()
            .ok_or_else(|| DataFusionError::Internal(format!("{format} has another format")))?
            .options();
        let table_format = TableFormat::from(format);
        let table = super::build_table(state, &cmd.locations, Some(table_format), options).await?;
        Ok(table)
    }
}
