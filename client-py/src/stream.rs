//! A query's rows as a blocking Arrow `RecordBatchReader`, fed by a background fetch.
//!
//! A task on the runtime pulls batches from the Flight stream(s) into a small bounded queue, so
//! decoding the next batch overlaps with the consumer's work while memory stays bounded. The
//! reader is what pyarrow, polars or duckdb call through the Arrow C stream interface.

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use futures::TryStreamExt;
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use std::sync::Arc;

use crate::client::{FlightSqlClient, PreparedStatement, QueryPlan};
use crate::error::ClientError;
use crate::runtime;

/// Batches fetched ahead of the consumer.
const PREFETCH: usize = 2;

/// The rows of one query, fetched in order from every endpoint's ticket.
pub struct BatchStream {
    schema: SchemaRef,
    queue: mpsc::Receiver<Result<RecordBatch, ClientError>>,
    fetcher: Option<JoinHandle<()>>,
    finished: bool,
    /// The prepared statement behind the rows, kept open until they are read.
    _prepared: Option<Arc<PreparedStatement>>,
}

impl BatchStream {
    /// Starts fetching `plan`'s rows in the background.
    pub fn start(
        client: FlightSqlClient,
        plan: QueryPlan,
        prepared: Option<Arc<PreparedStatement>>,
    ) -> Result<Self, ClientError> {
        let (sender, queue) = mpsc::channel(PREFETCH);
        let schema = plan.schema.clone();
        let fetcher = runtime::runtime()?.spawn(fetch_all(client, plan, sender));
        Ok(Self {
            schema,
            queue,
            fetcher: Some(fetcher),
            finished: false,
            _prepared: prepared,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch, waiting (GIL released, Ctrl-C checked) only if none is queued yet.
    ///
    /// Must be called without holding the GIL.
    pub fn next_batch(&mut self) -> Option<Result<RecordBatch, ClientError>> {
        match self.ready() {
            Some(item) => item,
            None => {
                let item = runtime::wait(self.queue.recv()).unwrap_or_else(|e| Some(Err(e)));
                self.settle(item)
            }
        }
    }

    /// The next item if it needs no waiting (`None` when the consumer would have to wait).
    pub fn ready(&mut self) -> Option<Option<Result<RecordBatch, ClientError>>> {
        if self.finished {
            return Some(None);
        }
        match self.queue.try_recv() {
            Ok(item) => Some(self.settle(Some(item))),
            Err(mpsc::error::TryRecvError::Disconnected) => Some(self.settle(None)),
            Err(mpsc::error::TryRecvError::Empty) => None,
        }
    }

    /// Ends the stream after its last batch or its first error.
    fn settle(
        &mut self,
        item: Option<Result<RecordBatch, ClientError>>,
    ) -> Option<Result<RecordBatch, ClientError>> {
        if !matches!(item, Some(Ok(_))) {
            self.stop();
        }
        item
    }

    /// Stops the background fetch; dropping the Flight stream cancels it on the server.
    fn stop(&mut self) {
        self.finished = true;
        self.queue.close();
        if let Some(fetcher) = self.fetcher.take() {
            fetcher.abort();
        }
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn fetch_all(
    client: FlightSqlClient,
    plan: QueryPlan,
    sender: mpsc::Sender<Result<RecordBatch, ClientError>>,
) {
    for ticket in plan.tickets {
        let result: Result<(), ClientError> = async {
            let mut batches = client.fetch(ticket).await?;
            while let Some(batch) = batches.try_next().await? {
                let batch = conform(batch, &plan.schema)?;
                if sender.send(Ok(batch)).await.is_err() {
                    // The consumer is gone; dropping `batches` cancels the call.
                    return Ok(());
                }
            }
            Ok(())
        }
        .await;
        if let Err(error) = result {
            let _ = sender.send(Err(error)).await;
            return;
        }
        if sender.is_closed() {
            return;
        }
    }
}

/// Gives a batch exactly the announced schema, as the C stream interface requires.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ClientError> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(ClientError::Protocol(format!(
            "the server announced {} column(s) but sent {}",
            schema.fields().len(),
            batch.num_columns()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A [`BatchStream`] as the synchronous `RecordBatchReader` behind an Arrow C stream.
///
/// Consumers call it from any thread, with or without the GIL.
pub struct FlightBatchReader {
    stream: BatchStream,
}

impl FlightBatchReader {
    pub fn new(stream: BatchStream) -> Self {
        Self { stream }
    }
}

impl Iterator for FlightBatchReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        // pyarrow and polars call in with the GIL released, duckdb from its own threads; a
        // caller that holds the GIL is rare, and there `attach` is re-entrant and `detach`
        // lets other Python threads run while we wait.
        let item = match self.stream.ready() {
            Some(ready) => ready,
            None if runtime::is_main_thread() => {
                Python::attach(|py| py.detach(|| self.stream.next_batch()))
            }
            None => self.stream.next_batch(),
        };
        match item? {
            Ok(batch) => Some(Ok(batch)),
            Err(ClientError::Interrupted(err)) => {
                // The C stream can only return text, so the KeyboardInterrupt itself would be
                // lost: set it pending again so Python raises it right after pyarrow returns.
                Python::attach(|py| {
                    if err.is_instance_of::<PyKeyboardInterrupt>(py) {
                        // SAFETY: called with the GIL held; only trips the SIGINT flag.
                        unsafe { pyo3::ffi::PyErr_SetInterrupt() };
                    }
                });
                Some(Err(ArrowError::ExternalError(Box::new(Interrupted))))
            }
            Err(other) => Some(Err(other.into())),
        }
    }
}

impl RecordBatchReader for FlightBatchReader {
    fn schema(&self) -> SchemaRef {
        self.stream.schema()
    }
}

#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by KeyboardInterrupt")
    }
}

impl std::error::Error for Interrupted {}
