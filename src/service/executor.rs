//! The query runtime: DataFusion's CPU-bound planning and execution run on their own threads, never on the runtime that serves gRPC.
//!
//! A saturated runtime cannot answer health checks, accept connections or even notice that a
//! client cancelled, so queries get a runtime of their own (the pattern of DataFusion's
//! `thread_pools` example and InfluxDB's dedicated executor) and hand their results back over
//! channels. Its threads have large stacks: planning deep SQL recurses deeply, and the stack
//! is only committed as it is used.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use super::error::ServiceError;

/// Stack size of query threads. The query-complexity limits of the planner keep the deepest
/// accepted query well inside it: every query at those limits ran with 8 MiB stacks here
/// (`tests/compat/test_limits.py` has them), so this leaves an eightfold margin.
pub const QUERY_THREAD_STACK: usize = 64 * 1024 * 1024;

/// Threads of the runtime that runs queries.
pub struct QueryExecutor {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl QueryExecutor {
    /// A runtime with `threads` worker threads (0: one per core) named `flightbear-query`.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if threads > 0 {
            builder.worker_threads(threads);
        }
        let runtime = builder
            .thread_name("flightbear-query")
            .thread_stack_size(QUERY_THREAD_STACK)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Runs `future` on the query runtime. Dropping the returned [`QueryTask`] aborts it.
    pub fn spawn<F>(&self, future: F) -> QueryTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        QueryTask(self.handle.spawn(future))
    }

    /// Runs `future` on the query runtime and waits for its result.
    pub async fn run<F, T>(&self, future: F) -> Result<T, ServiceError>
    where
        F: Future<Output = Result<T, ServiceError>> + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(future).await
    }
}

impl Drop for QueryExecutor {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which is not allowed inside another
        // runtime; running queries are abandoned instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task on the query runtime that is aborted when dropped, so a request that goes away
/// takes its query with it.
pub struct QueryTask<T>(JoinHandle<T>);

impl<T> Drop for QueryTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for QueryTask<Result<T, ServiceError>> {
    type Output = Result<T, ServiceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| match joined {
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
    use super::*;

    #[tokio::test]
    async fn work_runs_on_query_threads_and_panics_become_internal_errors() {
        let executor = QueryExecutor::new(1).unwrap();
        let name = executor
            .run(async { Ok(std::thread::current().name().map(str::to_string)) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("flightbear-query"));
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
