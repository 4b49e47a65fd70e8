//! Bound parameters kept on this replica for clients that reuse the handle they had before binding.
//!
//! Flight SQL lets a server return a new handle from the DoPut that binds parameters. ADBC
//! adopts it (and that handle carries the parameters, so any replica serves it); flightsql-dbapi
//! and older JDBC drivers keep the original handle. For them the parameters are also kept
//! here, under the prepared statement's id, until ClosePreparedStatement, until they have been
//! idle for the time to live, or until newer bindings need the room.
//!
//! The store is bounded in entries and bytes, and its bytes are reserved in the server's memory
//! pool. When it is full, the least recently used entries are evicted: a client that forgets to
//! close its statements cannot lock others out, and a client whose entry was evicted is told to
//! bind its parameters again. A single binding larger than the whole budget is refused with
//! RESOURCE_EXHAUSTED.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};

use super::error::ServiceError;

/// Limits of the store.
#[derive(Debug, Clone, Copy)]
pub struct PreparedLimits {
    /// Prepared statements with parameters kept at once.
    pub max_statements: usize,
    /// Bytes of bound parameters (Arrow IPC) kept at once.
    pub max_bytes: usize,
    /// How long an unused entry is kept.
    pub ttl: Duration,
}

/// Bound parameters by prepared-statement id.
pub struct PreparedStore {
    limits: PreparedLimits,
    state: Mutex<State>,
}

struct State {
    entries: HashMap<Bytes, Entry>,
    /// Memory the entries hold (their bytes), reserved in the server's pool.
    reservation: MemoryReservation,
}

struct Entry {
    /// The SQL the parameters were bound for: a handle naming the id with other SQL does not
    /// get them.
    sql: String,
    parameters: Bytes,
    last_used: Instant,
}

impl Entry {
    fn size(&self) -> usize {
        self.parameters.len() + self.sql.len()
    }
}

impl PreparedStore {
    /// An empty store whose bytes count against `pool`.
    pub fn new(limits: PreparedLimits, pool: &Arc<dyn MemoryPool>) -> Self {
        let reservation =
            MemoryConsumer::new("bound parameters of prepared statements").register(pool);
        Self {
            limits,
            state: Mutex::new(State {
                entries: HashMap::new(),
                reservation,
            }),
        }
    }

    /// Keeps `parameters` as the binding of prepared statement `id` (replacing an older one),
    /// evicting expired and then least recently used entries to make room.
    pub fn insert(&self, id: &Bytes, sql: &str, parameters: Bytes) -> Result<(), ServiceError> {
        if id.is_empty() {
            return Ok(());
        }
        let entry = Entry {
            sql: sql.to_string(),
            parameters,
            last_used: Instant::now(),
        };
        let size = entry.size();
        if size > self.limits.max_bytes || self.limits.max_statements == 0 {
            return Err(ServiceError::Busy(format!(
                "the bound parameters take {size} bytes; this server keeps at most {} bytes of \
                 bound parameters (--max-prepared-bytes)",
                self.limits.max_bytes
            )));
        }
        let now = entry.last_used;
        let mut state = self.lock();
        state.remove(id);
        state.expire(now, self.limits.ttl);
        while state.entries.len() >= self.limits.max_statements
            || state.reservation.size() + size > self.limits.max_bytes
        {
            if !state.evict_least_recently_used() {
                break;
            }
        }
        // The memory pool may be shorter than our own budget: evict until it has room too.
        while state.reservation.try_grow(size).is_err() {
            if !state.evict_least_recently_used() {
                return Err(ServiceError::Busy(format!(
                    "no memory left to keep {size} bytes of bound parameters (--memory-limit)"
                )));
            }
        }
        state.entries.insert(id.clone(), entry);
        Ok(())
    }

    /// The parameters bound to prepared statement `id` for `sql`, if this replica still has them.
    pub fn get(&self, id: &Bytes, sql: &str) -> Option<Bytes> {
        if id.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut state = self.lock();
        state.expire(now, self.limits.ttl);
        let entry = state.entries.get_mut(id).filter(|entry| entry.sql == sql)?;
        entry.last_used = now;
        Some(entry.parameters.clone())
    }

    /// Frees the parameters of prepared statement `id` (ClosePreparedStatement).
    pub fn remove(&self, id: &Bytes) {
        self.lock().remove(id);
    }

    /// Entries kept now and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        let state = self.lock();
        (state.entries.len(), state.reservation.size())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the map consistent (every change is one call).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn remove(&mut self, id: &Bytes) {
        if let Some(entry) = self.entries.remove(id) {
            self.reservation.shrink(entry.size());
        }
    }

    /// Drops entries idle for longer than `ttl`.
    fn expire(&mut self, now: Instant, ttl: Duration) {
        let expired: Vec<Bytes> = self
            .entries
            .iter()
            .filter(|(_, entry)| now.duration_since(entry.last_used) > ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }

    /// Drops the entry unused for longest; false when there is none.
    fn evict_least_recently_used(&mut self) -> bool {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, entry)| entry.last_used)
            .map(|(id, _)| id.clone());
        match oldest {
            Some(id) => {
                self.remove(&id);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    use super::*;

    fn store(max_statements: usize, max_bytes: usize, pool_bytes: usize) -> PreparedStore {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(pool_bytes));
        PreparedStore::new(
            PreparedLimits {
                max_statements,
                max_bytes,
                ttl: Duration::from_secs(60),
            },
            &pool,
        )
    }

    fn id(n: u8) -> Bytes {
        Bytes::from(vec![n; 16])
    }

    #[test]
    fn parameters_are_found_by_id_and_sql_until_closed() {
        let store = store(10, 1000, 1 << 20);
        store
            .insert(&id(1), "SELECT $1", Bytes::from_static(b"abc"))
            .unwrap();
        assert_eq!(store.get(&id(1), "SELECT $1").unwrap(), "abc");
        assert!(store.get(&id(1), "SELECT $1 + 1").is_none());
        assert!(store.get(&id(2), "SELECT $1").is_none());
        store.remove(&id(1));
        assert!(store.get(&id(1), "SELECT $1").is_none());
        assert_eq!(store.usage(), (0, 0));
    }

    #[test]
    fn a_full_store_evicts_the_least_recently_used_entry() {
        let store = store(2, 1000, 1 << 20);
        store.insert(&id(1), "a", Bytes::from_static(b"1")).unwrap();
        store.insert(&id(2), "a", Bytes::from_static(b"2")).unwrap();
        // Using 1 makes 2 the oldest.
        assert!(store.get(&id(1), "a").is_some());
        store.insert(&id(3), "a", Bytes::from_static(b"3")).unwrap();
        assert!(store.get(&id(1), "a").is_some());
        assert!(store.get(&id(2), "a").is_none());
        assert!(store.get(&id(3), "a").is_some());
        assert_eq!(store.usage(), (2, 4));
    }

    #[test]
    fn bytes_are_bounded_by_the_budget_and_the_memory_pool() {
        let store = store(100, 10, 1 << 20);
        store.insert(&id(1), "", Bytes::from(vec![0; 6])).unwrap();
        store.insert(&id(2), "", Bytes::from(vec![0; 6])).unwrap();
        assert_eq!(store.usage(), (1, 6));
        let err = store
            .insert(&id(3), "", Bytes::from(vec![0; 11]))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);

        let small_pool = self::store(100, 1000, 8);
        small_pool
            .insert(&id(1), "", Bytes::from(vec![0; 6]))
            .unwrap();
        small_pool
            .insert(&id(2), "", Bytes::from(vec![0; 6]))
            .unwrap();
        assert_eq!(small_pool.usage(), (1, 6));
        let err = small_pool
            .insert(&id(3), "", Bytes::from(vec![0; 9]))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(small_pool.usage(), (0, 0));
    }

    #[test]
    fn idle_entries_expire() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 20));
        let store = PreparedStore::new(
            PreparedLimits {
                max_statements: 10,
                max_bytes: 1000,
                ttl: Duration::ZERO,
            },
            &pool,
        );
        store.insert(&id(1), "a", Bytes::from_static(b"1")).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(store.get(&id(1), "a").is_none());
        assert_eq!(store.usage(), (0, 0));
        assert_eq!(pool.reserved(), 0);
    }
}
