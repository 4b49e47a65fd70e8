//! Who may change the catalog, and how: the one check every statement without rows passes
//! before it runs (GetFlightInfo, DoPut updates and prepared statements alike).
//!
//! The rules: tables configured at start cannot be dropped, replaced
//! or shadowed; schemas and catalogs are fixed; client tables live in the default schema and
//! are limited in number; files a client registers lie inside a data root (see
//! [`crate::catalog::data_roots`]). Session statements (`SET`) change nothing shared and are
//! always allowed. DDL is serialised, so the count limit holds exactly. That readers change
//! nothing is checked earlier, when the statement is planned (`planner::logical_plan`).

use std::collections::HashSet;

use datafusion::common::TableReference;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use tokio::sync::{Mutex, MutexGuard};

use super::error::ServiceError;
use crate::catalog::data_roots::DataRoots;
use crate::catalog::{CATALOG, SCHEMA, client_tables};

/// The catalog's protections.
#[derive(Debug)]
pub struct CatalogGuard {
    /// Names (lower case, in the default schema) of the tables configured at start.
    protected: HashSet<String>,
    roots: DataRoots,
    max_client_tables: usize,
    /// Held while a statement that changes the catalog is checked and run.
    ddl: Mutex<()>,
}

/// A statement allowed to run; holds the DDL lock until dropped.
pub struct Authorized<'a> {
    /// The statement, with client locations replaced by the files they name.
    pub plan: LogicalPlan,
    _ddl: Option<MutexGuard<'a, ()>>,
}

/// Changing the shared catalog (DDL, bulk ingest) needs a caller who may change it: `what`
/// names the change for the error. Without a caller (work that lost its request) nothing is
/// changed.
pub fn require_catalog_rights(what: &str) -> Result<(), ServiceError> {
    match crate::auth::caller() {
        Some(caller) if caller.may_change_catalog() => Ok(()),
        Some(caller) => Err(ServiceError::PermissionDenied(format!(
            "user '{}' is a reader and may not {what}; an admin may",
            caller.user
        ))),
        None => Err(ServiceError::Internal(format!(
            "a request to {what} was served outside any request"
        ))),
    }
}

impl CatalogGuard {
    /// Protects the tables registered in `ctx` now (the configured ones).
    pub fn new(ctx: &SessionContext, roots: DataRoots, max_client_tables: usize) -> Self {
        let protected = ctx
            .catalog(CATALOG)
            .and_then(|catalog| catalog.schema(SCHEMA))
            .map(|schema| schema.table_names().into_iter().collect())
            .unwrap_or_default();
        Self {
            protected,
            roots,
            max_client_tables,
            ddl: Mutex::new(()),
        }
    }

    /// Checks a statement without rows; DDL waits for the DDL lock.
    pub async fn authorize(
        &self,
        plan: LogicalPlan,
        ctx: &SessionContext,
    ) -> Result<Authorized<'_>, ServiceError> {
        let LogicalPlan::Ddl(ddl) = plan else {
            return Ok(Authorized { plan, _ddl: None });
        };
        let lock = self.ddl.lock().await;
        let ddl = match ddl {
            DdlStatement::CreateExternalTable(mut cmd) => {
                self.may_create(&cmd.name, ctx)?;
                client_tables::confine(&mut cmd, &self.roots, ctx).await?;
                DdlStatement::CreateExternalTable(cmd)
            }
            DdlStatement::CreateMemoryTable(cmd) => {
                self.may_create(&cmd.name, ctx)?;
                DdlStatement::CreateMemoryTable(cmd)
            }
            DdlStatement::CreateView(cmd) => {
                self.may_create(&cmd.name, ctx)?;
                if let Some(table) = super::temp_tables::temporary_table_read_by(&cmd.input) {
                    return Err(ServiceError::PermissionDenied(format!(
                        "a view cannot read temporary table '{table}': views are shared, \
                         temporary tables belong to one session"
                    )));
                }
                DdlStatement::CreateView(cmd)
            }
            DdlStatement::DropTable(cmd) => {
                self.may_drop(&cmd.name, ctx)?;
                DdlStatement::DropTable(cmd)
            }
            DdlStatement::DropView(cmd) => {
                self.may_drop(&cmd.name, ctx)?;
                DdlStatement::DropView(cmd)
            }
            DdlStatement::CreateCatalogSchema(_)
            | DdlStatement::CreateCatalog(_)
            | DdlStatement::DropCatalogSchema(_) => {
                return Err(ServiceError::PermissionDenied(format!(
                    "schemas and catalogs are fixed on this server ({} is not allowed)",
                    ddl.name()
                )));
            }
            other => {
                return Err(ServiceError::PermissionDenied(format!(
                    "{} is not allowed on this server",
                    other.name()
                )));
            }
        };
        Ok(Authorized {
            plan: LogicalPlan::Ddl(ddl),
            _ddl: Some(lock),
        })
    }

    /// Checks that a client may create (or replace) table `name` by bulk ingest, and returns
    /// its name in the default schema. The caller takes [`Self::lock`] before changing the
    /// catalog and checks again under it.
    pub fn may_ingest(
        &self,
        name: &TableReference,
        ctx: &SessionContext,
    ) -> Result<String, ServiceError> {
        self.may_create(name, ctx)?;
        Self::client_name(name, ctx)
    }

    /// The DDL lock: held while the catalog changes.
    pub async fn lock(&self) -> MutexGuard<'_, ()> {
        self.ddl.lock().await
    }

    /// The name of a table in the default schema, or PERMISSION_DENIED for another schema.
    /// A name without a schema is resolved the way the statement will resolve it: in the
    /// session's current catalog and schema.
    fn client_name(name: &TableReference, ctx: &SessionContext) -> Result<String, ServiceError> {
        let state = ctx.state();
        let current = &state.config_options().catalog;
        let resolved = name
            .clone()
            .resolve(&current.default_catalog, &current.default_schema);
        if resolved.catalog.as_ref() != CATALOG || resolved.schema.as_ref() != SCHEMA {
            return Err(ServiceError::PermissionDenied(format!(
                "clients may create and drop tables and views only in {CATALOG}.{SCHEMA}, \
                 not in {}.{}",
                resolved.catalog, resolved.schema
            )));
        }
        Ok(resolved.table.to_string())
    }

    fn protected_error(&self, table: &str) -> Option<ServiceError> {
        self.protected.contains(table).then(|| {
            ServiceError::PermissionDenied(format!(
                "table '{table}' is configured by the server's operator: clients cannot drop, \
                 replace or shadow it"
            ))
        })
    }

    fn may_create(&self, name: &TableReference, ctx: &SessionContext) -> Result<(), ServiceError> {
        let table = Self::client_name(name, ctx)?;
        if let Some(error) = self.protected_error(&table) {
            return Err(error);
        }
        let existing: Vec<String> = ctx
            .catalog(CATALOG)
            .and_then(|catalog| catalog.schema(SCHEMA))
            .map(|schema| schema.table_names())
            .unwrap_or_default();
        let client_tables = existing
            .iter()
            .filter(|name| !self.protected.contains(*name))
            .count();
        if !existing.contains(&table) && client_tables >= self.max_client_tables {
            return Err(ServiceError::Busy(format!(
                "clients have created {client_tables} tables and views, the most this server \
                 keeps (--max-client-tables); drop one first"
            )));
        }
        Ok(())
    }

    fn may_drop(&self, name: &TableReference, ctx: &SessionContext) -> Result<(), ServiceError> {
        let table = Self::client_name(name, ctx)?;
        match self.protected_error(&table) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
