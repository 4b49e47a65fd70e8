//! Queries running on this replica: admission (how many may run at once), query ids for
//! CancelFlightInfo, and the cancellation of every stream of a query.
//!
//! Tickets stay stateless: a ticket carries its query id, and only the streams that are
//! running here are registered here. A cancelled id is remembered for a while, so a DoGet of
//! a cancelled FlightInfo that arrives after the cancel fails instead of starting the query.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::error::ServiceError;

/// How long a cancelled query id is remembered.
const REMEMBER_CANCELLED: Duration = Duration::from_secs(600);
/// Most cancelled query ids remembered at once.
const MAX_REMEMBERED: usize = 10_000;

/// A new random query id (16 bytes).
pub fn new_query_id() -> Bytes {
    Bytes::copy_from_slice(uuid::Uuid::new_v4().as_bytes())
}

/// The running queries of this replica and the gate that admits new ones.
pub struct RunningQueries {
    slots: Arc<Semaphore>,
    max_running: usize,
    queue_wait: Duration,
    queued: AtomicUsize,
    next_stream: AtomicU64,
    state: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    /// Streams running per query id.
    running: HashMap<Bytes, Vec<(u64, CancellationToken)>>,
    /// Recently cancelled ids, oldest first.
    cancelled: VecDeque<(Bytes, Instant)>,
}

impl Registry {
    fn forget_old_cancellations(&mut self, now: Instant) {
        while let Some((_, when)) = self.cancelled.front() {
            if now.duration_since(*when) < REMEMBER_CANCELLED
                && self.cancelled.len() <= MAX_REMEMBERED
            {
                break;
            }
            self.cancelled.pop_front();
        }
    }
}

impl RunningQueries {
    /// At most `max_running` queries at once; a query waits up to `queue_wait` for a slot.
    pub fn new(max_running: usize, queue_wait: Duration) -> Self {
        let max_running = max_running.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max_running)),
            max_running,
            queue_wait,
            queued: AtomicUsize::new(0),
            next_stream: AtomicU64::new(0),
            state: Mutex::new(Registry::default()),
        }
    }

    /// Waits for a slot to run a query; RESOURCE_EXHAUSTED when none frees up in time.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let waited =
            tokio::time::timeout(self.queue_wait, Arc::clone(&self.slots).acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(ServiceError::Internal("query slots closed".into())),
            Err(_elapsed) => Err(ServiceError::Busy(format!(
                "the server is busy: {} queries are running (--max-concurrent-queries) and no \
                 slot freed up within {} s; try again later",
                self.max_running,
                self.queue_wait.as_secs()
            ))),
        }
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.max_running - self.slots.available_permits()
    }

    /// Queries waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Registers a stream of the query `id`; the stream's token fires when the query is
    /// cancelled. An id that was already cancelled is refused with CANCELLED.
    pub fn register(self: &Arc<Self>, id: &Bytes) -> Result<Registration, ServiceError> {
        let token = CancellationToken::new();
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        if !id.is_empty() {
            let mut state = self.lock();
            state.forget_old_cancellations(Instant::now());
            if state.cancelled.iter().any(|(cancelled, _)| cancelled == id) {
                return Err(ServiceError::Cancelled(
                    "this query was cancelled (CancelFlightInfo)".into(),
                ));
            }
            state
                .running
                .entry(id.clone())
                .or_default()
                .push((stream, token.clone()));
        }
        Ok(Registration {
            queries: Arc::clone(self),
            id: id.clone(),
            stream,
            token,
        })
    }

    /// Cancels every running stream of the query `id` and refuses its later streams.
    /// Returns how many running streams were cancelled.
    pub fn cancel(&self, id: &Bytes) -> usize {
        let mut state = self.lock();
        let now = Instant::now();
        state.forget_old_cancellations(now);
        if !state.cancelled.iter().any(|(cancelled, _)| cancelled == id) {
            state.cancelled.push_back((id.clone(), now));
        }
        let streams = state.running.remove(id).unwrap_or_default();
        for (_, token) in &streams {
            token.cancel();
        }
        streams.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // The registry holds no invariant a panic could break half-way.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One running stream of a query; dropping it unregisters the stream.
pub struct Registration {
    queries: Arc<RunningQueries>,
    id: Bytes,
    stream: u64,
    token: CancellationToken,
}

impl Registration {
    /// Fires when the query is cancelled.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.id.is_empty() {
            return;
        }
        let mut state = self.queries.lock();
        if let Some(streams) = state.running.get_mut(&self.id) {
            streams.retain(|(stream, _)| *stream != self.stream);
            if streams.is_empty() {
                state.running.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancelling_a_query_fires_every_stream_and_refuses_later_ones() {
        let queries = Arc::new(RunningQueries::new(4, Duration::from_millis(10)));
        let id = new_query_id();
        let first = queries.register(&id).unwrap();
        let second = queries.register(&id).unwrap();
        let other = queries.register(&new_query_id()).unwrap();
        assert_eq!(queries.cancel(&id), 2);
        assert!(first.token().is_cancelled() && second.token().is_cancelled());
        assert!(!other.token().is_cancelled());
        let late = queries.register(&id).err().unwrap();
        assert_eq!(late.code(), tonic::Code::Cancelled);
    }

    #[tokio::test]
    async fn a_full_server_answers_resource_exhausted_after_the_queue_wait() {
        let queries = RunningQueries::new(1, Duration::from_millis(20));
        let held = queries.admit().await.unwrap();
        assert_eq!(queries.running(), 1);
        let refused = queries.admit().await.err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        drop(held);
        assert!(queries.admit().await.is_ok());
    }

    #[test]
    fn dropped_registrations_leave_nothing_behind() {
        let queries = Arc::new(RunningQueries::new(1, Duration::ZERO));
        let id = new_query_id();
        drop(queries.register(&id).unwrap());
        assert!(queries.lock().running.is_empty());
        assert_eq!(queries.cancel(&id), 0);
    }
}
