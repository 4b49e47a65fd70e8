//! Temporary tables: what a bulk ingest with `temporary` set keeps in the client's session, in
//! memory counted against the memory limit, seen by that session's statements only and gone
//! when the session ends (CloseSession, idle timeout, eviction, restart).
//!
//! The default schema is wrapped once ([`SessionSchema`]): a lookup first asks the session of
//! the request being served (a task-local [`SessionScope`], carried to the planning and query
//! threads like the caller's identity), then the shared tables. So planning needs no other
//! plumbing, and a session's temporary table shadows a shared one of the same name for that
//! session only. Everything that changes the shared catalog (CREATE, DROP of shared tables) goes
//! to the shared schema; `DROP TABLE` of a temporary table drops it from its session.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session as CatalogSession, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{MemTable, TableType};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;

use super::sessions::{Session, Sessions};
use crate::catalog::{CATALOG, SCHEMA};

tokio::task_local! {
    /// The session of the request being served; `None` outside any request.
    static SCOPE: Option<SessionScope>;
}

/// A request's session, as the catalog sees it.
#[derive(Clone)]
pub struct SessionScope {
    sessions: Arc<Sessions>,
    session: Session,
}

impl SessionScope {
    /// The scope of `session`.
    pub fn new(sessions: Arc<Sessions>, session: Session) -> Self {
        Self { sessions, session }
    }
}

/// Runs `work` in `scope`.
pub async fn in_scope<F: Future>(scope: SessionScope, work: F) -> F::Output {
    SCOPE.scope(Some(scope), work).await
}

/// `work` carrying the current session scope along, for work spawned onto other threads.
pub fn with_scope<F: Future>(work: F) -> impl Future<Output = F::Output> {
    SCOPE.scope(current(), work)
}

/// Runs `work` outside any session: only the shared tables are seen.
pub async fn outside_session<F: Future>(work: F) -> F::Output {
    SCOPE.scope(None, work).await
}

fn current() -> Option<SessionScope> {
    SCOPE.try_with(Clone::clone).ok().flatten()
}

/// True when `name` is a temporary table of the current session.
pub fn is_temporary(name: &str) -> bool {
    temporary(name).is_some()
}

/// The temporary table `name` of the current session, if any.
fn temporary(name: &str) -> Option<Arc<dyn TableProvider>> {
    let scope = current()?;
    scope.sessions.temp_table(&scope.session, name)
}

/// The default schema as each session sees it: the shared tables and its temporary ones.
#[derive(Debug)]
pub struct SessionSchema {
    shared: Arc<dyn SchemaProvider>,
}

impl SessionSchema {
    /// Wraps the shared default schema.
    pub fn new(shared: Arc<dyn SchemaProvider>) -> Self {
        Self { shared }
    }
}

#[async_trait]
impl SchemaProvider for SessionSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.shared.table_names().into_iter().collect();
        if let Some(scope) = current() {
            names.extend(scope.sessions.temp_names(&scope.session));
        }
        names.into_iter().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match temporary(name) {
            Some(table) => Ok(Some(table)),
            None => self.shared.table(name).await,
        }
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        self.shared.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(scope) = current()
            && let Some(table) = scope.sessions.temp_table(&scope.session, name)
        {
            scope
                .sessions
                .set_temp_table(&scope.session, name, None)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            return Ok(Some(table));
        }
        self.shared.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        temporary(name).is_some() || self.shared.table_exist(name)
    }
}

/// The first temporary table of the current session that `plan` reads, if any: a view over
/// one would show the session's data to everyone, and keep it after the session ends.
pub fn temporary_table_read_by(plan: &LogicalPlan) -> Option<String> {
    let scope = current()?;
    let names = scope.sessions.temp_names(&scope.session);
    if names.is_empty() {
        return None;
    }
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = &scan.table_name;
            let in_default_schema = name.schema().is_none_or(|schema| schema == SCHEMA)
                && name.catalog().is_none_or(|catalog| catalog == CATALOG);
            if in_default_schema && names.iter().any(|temp| temp == name.table()) {
                found = Some(name.table().to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// One ingest's batches and the memory they hold.
#[derive(Debug)]
struct Part {
    batches: Vec<RecordBatch>,
    _reservation: MemoryReservation,
}

/// A temporary table: the parts its ingests added, each holding its memory reservation.
#[derive(Debug, Clone)]
pub struct TempTable {
    schema: SchemaRef,
    parts: Vec<Arc<Part>>,
}

impl TempTable {
    /// A table of one ingest's `batches` (of `schema`), whose memory `reservation` holds.
    pub fn new(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        reservation: MemoryReservation,
    ) -> Self {
        Self {
            schema,
            parts: vec![Arc::new(Part {
                batches,
                _reservation: reservation,
            })],
        }
    }

    /// This table with another ingest's batches after its own.
    pub fn appended(&self, batches: Vec<RecordBatch>, reservation: MemoryReservation) -> Self {
        let mut parts = self.parts.clone();
        parts.push(Arc::new(Part {
            batches,
            _reservation: reservation,
        }));
        Self {
            schema: Arc::clone(&self.schema),
            parts,
        }
    }

    fn memory_table(&self) -> Result<MemTable> {
        let batches = self
            .parts
            .iter()
            .flat_map(|part| part.batches.iter().cloned())
            .collect();
        MemTable::try_new(Arc::clone(&self.schema), vec![batches])
    }
}

#[async_trait]
impl TableProvider for TempTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        // A base table to DataFusion, so DROP TABLE finds it.
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.memory_table()?
            .scan(state, projection, filters, limit)
            .await
    }
}
