//! Query threads: DataFusion's CPU-bound planning and execution run on threads of their own, never on the runtime that serves gRPC.
//!
//! A saturated runtime cannot answer health checks, accept connections or even notice that a
//! client cancelled, so queries run elsewhere (the pattern of DataFusion's `thread_pools`
//! example and InfluxDB's dedicated executor) and hand their results back over channels.
//!
//! Planning, which the complexity limits keep short, shares one runtime. Each running query
//! gets a runtime of its own whose threads end with it: one operator can keep a thread busy
//! for seconds between two yields (a nested-loop join probing one batch), and on a shared pool
//! two such queries would stall every other query; with threads per query the operating
//! system shares the cores among all running queries. The threads have large stacks
//! (planning deep SQL recurses deeply); stack memory is only committed as it is used.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use super::error::ServiceError;
use super::temp_tables::with_scope;

/// Stack size of query threads. The query-complexity limits of the planner keep the deepest
/// accepted query well inside it: every query at those limits ran with 8 MiB stacks here
/// (`tests/compat/test_limits.py` has them), so this leaves an eightfold margin.
pub const QUERY_THREAD_STACK: usize = 64 * 1024 * 1024;

/// Where queries are planned and run.
pub struct QueryExecutor {
    planning: Option<Runtime>,
    planning_handle: Handle,
    threads_per_query: usize,
}

fn runtime(threads: usize, name: &str) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .thread_stack_size(QUERY_THREAD_STACK)
        .enable_all()
        .build()
}

impl QueryExecutor {
    /// Planning on `threads` shared threads; each query on `threads` threads of its own.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let planning = runtime(threads, "flightbear-plan")?;
        let planning_handle = planning.handle().clone();
        Ok(Self {
            planning: Some(planning),
            planning_handle,
            threads_per_query: threads.max(1),
        })
    }

    /// Runs `future` (planning, or other short work) on the shared planning threads.
    /// Dropping the returned [`QueryTask`] aborts it.
    pub fn spawn<F>(&self, future: F) -> QueryTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        QueryTask {
            // The caller and the session go along: planning checks what the caller may do,
            // and finds the session's temporary tables.
            handle: self
                .planning_handle
                .spawn(crate::auth::with_caller(with_scope(future))),
            runtime: None,
        }
    }

    /// Runs `future` on the planning threads and waits for its result.
    pub async fn run<F, T>(&self, future: F) -> Result<T, ServiceError>
    where
        F: Future<Output = Result<T, ServiceError>> + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(future).await
    }

    /// Runs a query on threads of its own, which end when the returned task is dropped.
    pub fn spawn_query<F>(&self, future: F) -> Result<QueryTask<F::Output>, ServiceError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = runtime(self.threads_per_query, "flightbear-query")
            .map_err(|e| ServiceError::Internal(format!("cannot start query threads: {e}")))?;
        Ok(QueryTask {
            handle: runtime.spawn(crate::auth::with_caller(with_scope(future))),
            runtime: Some(runtime),
        })
    }
}

impl Drop for QueryExecutor {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which is not allowed inside another
        // runtime; running work is abandoned instead.
        if let Some(runtime) = self.planning.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task on query threads that is aborted when dropped, so a request that goes away takes
/// its query with it; a query's own threads end with it.
pub struct QueryTask<T> {
    handle: JoinHandle<T>,
    runtime: Option<Runtime>,
}

impl<T> Drop for QueryTask<T> {
    fn drop(&mut self) {
        self.handle.abort();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl<T> Future for QueryTask<Result<T, ServiceError>> {
    type Output = Result<T, ServiceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result,
                Err(error) if error.is_panic() => {
                    let message = panic_message(error.into_panic());
                    Err(ServiceError::Internal(format!(
                        "query task panicked: {message}"
                    )))
                }
                Err(_) => Err(ServiceError::Internal("query task was aborted".into())),
            })
    }
}

/// `future`'s outcome, or an internal error naming the panic that ended it.
///
/// A streamed query sends its batches over a channel from its own task: when that task
/// panicked (DataFusion re-raises an operator's panic in the task that reads its output), the
/// runtime caught the panic, the channel closed, and the client saw the stream end as if the
/// query had finished, with the rows sent so far and no error.
pub async fn unless_panicked<T>(
    future: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .unwrap_or_else(|payload| {
            Err(ServiceError::Internal(format!(
                "query task panicked: {}",
                panic_message(payload)
            )))
        })
}

/// The text of a panic payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn work_runs_on_its_threads_and_panics_become_internal_errors() {
        let executor = QueryExecutor::new(1).unwrap();
        let name = executor
            .run(async { Ok(std::thread::current().name().map(str::to_string)) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("flightbear-plan"));
        let query = executor
            .spawn_query(async { Ok(std::thread::current().name().map(str::to_string)) })
            .unwrap();
        assert_eq!(query.await.unwrap().as_deref(), Some("flightbear-query"));
        let panicked = executor
            .run(async {
                if true {
                    panic!("boom");
                }
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(panicked.to_string().contains("boom"), "{panicked}");
    }

    #[tokio::test]
    async fn a_query_whose_operator_panics_ends_with_an_error_not_an_early_end() {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
        use datafusion::prelude::{SessionConfig, SessionContext};

        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        let boom = Arc::new(
            |_: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
                panic!("offset overflow")
            },
        );
        ctx.register_udf(create_udf(
            "boom",
            vec![DataType::Int64],
            DataType::Int64,
            Volatility::Volatile,
            boom,
        ));
        let executor = QueryExecutor::new(1).unwrap();
        let (sender, mut receiver) = tokio::sync::mpsc::channel(4);
        // As a streamed query runs: batches go over a channel from the query's task, which
        // reads them from operators running in tasks of their own (the repartition's).
        let task = executor
            .spawn_query(async move {
                let outcome = unless_panicked(async {
                    let frame = ctx
                        .sql("SELECT boom(v) FROM (SELECT column1 AS v FROM (VALUES (1), (2)))")
                        .await?;
                    let mut batches = frame.execute_stream().await?;
                    while let Some(batch) = batches.next().await {
                        let _ = sender.send(Ok(batch?.num_rows())).await;
                    }
                    Ok(())
                })
                .await;
                if let Err(error) = outcome {
                    let _ = sender.send(Err(error)).await;
                }
                Ok(())
            })
            .unwrap();
        let mut last = None;
        while let Some(message) = receiver.recv().await {
            last = Some(message);
        }
        task.await.unwrap();
        let error = last.expect("the stream ends with an error").unwrap_err();
        assert!(matches!(error, ServiceError::Internal(_)), "{error}");
        assert!(error.to_string().contains("offset overflow"), "{error}");
    }

    #[tokio::test]
    async fn dropping_a_task_aborts_it() {
        let executor = QueryExecutor::new(1).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = executor.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(task);
        // The task's sender is dropped when the aborted task is.
        assert!(rx.await.is_err());
    }
}
