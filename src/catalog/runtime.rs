//! What every query shares: the memory pool that enforces the server's memory limit, and the spill directory.
//!
//! Operators that can spill (sorts, aggregations, joins) get fair shares of the pool and spill
//! to disk beyond them; everything else that reserves memory (the FASTA reader, in-memory
//! tables, result buffers) fails with RESOURCES_EXHAUSTED naming the limit once the pool is
//! full. Memory nobody reserves is not limited, so every big buffer must be reserved.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

use super::remote::{RemoteStores, S3Config};
use crate::bytesize::ByteSize;

/// How many of the largest consumers an out-of-memory error names.
const TOP_CONSUMERS: usize = 3;

/// The runtime environment queries run in: `limit` bytes of memory, spills to `spill_dir`
/// (a temporary directory when `None`), remote stores set up from the environment alone.
pub fn runtime_env(limit: ByteSize, spill_dir: Option<PathBuf>) -> Result<Arc<RuntimeEnv>> {
    runtime_env_with_stores(limit, spill_dir, RemoteStores::new(S3Config::default()))
}

/// [`runtime_env`] with the given object stores (local files and remote locations).
pub fn runtime_env_with_stores(
    limit: ByteSize,
    spill_dir: Option<PathBuf>,
    stores: RemoteStores,
) -> Result<Arc<RuntimeEnv>> {
    let pool = MemoryLimitPool::new(limit);
    let disk = DiskManagerBuilder::default().with_mode(match spill_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| {
                DataFusionError::Configuration(format!(
                    "cannot create the spill directory {}: {e}",
                    dir.display()
                ))
            })?;
            DiskManagerMode::Directories(vec![dir])
        }
        None => DiskManagerMode::OsTmpDirectory,
    });
    // No file statistics cache: a FASTA file's statistics come from its index, which can
    // appear or go while the file stays the same (the format keeps its own cache, keyed by
    // the index files too).
    let caches = CacheManagerConfig::default().with_file_statistics_cache_limit(0);
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(disk)
        .with_cache_manager(caches)
        .with_object_store_registry(Arc::new(stores))
        .build_arc()
}

/// A fair spill pool whose out-of-memory errors say which limit was reached and who holds
/// the memory.
///
/// Sorts stop short of the last [`headroom`] bytes of the pool: in DataFusion's fair pool a
/// sort may otherwise fill everything the unspillable consumers do not hold at that moment,
/// and the next batch a scan reads, or the merge that ends the sort, fails although the sort
/// could have spilled a little earlier.
#[derive(Debug)]
pub struct MemoryLimitPool {
    inner: TrackConsumersPool<FairSpillPool>,
    limit: ByteSize,
    headroom: usize,
}

/// Sorts leave headroom: the merge that ends a spilled sort and the scan feeding it grow after
/// the sort has filled its share. Other spilling operators (repartitions, grouped aggregates)
/// are left to the fair pool alone: refusing them early makes DataFusion 55 spill where it
/// otherwise fails cleanly, and its repartition spill files can then read back truncated
/// ("Unexpected End of Stream").
fn leaves_headroom(consumer: &MemoryConsumer) -> bool {
    consumer.can_spill() && consumer.name().starts_with("ExternalSorter")
}

/// What spilling operators leave free for the others: an eighth of the pool, between 4 MiB
/// and 256 MiB (never more than half the pool).
pub fn headroom(limit: usize) -> usize {
    (limit / 8).clamp(4 << 20, 256 << 20).min(limit / 2)
}

impl MemoryLimitPool {
    /// A pool of `limit` bytes.
    pub fn new(limit: ByteSize) -> Self {
        let top = NonZeroUsize::new(TOP_CONSUMERS).unwrap_or(NonZeroUsize::MIN);
        Self {
            inner: TrackConsumersPool::new(FairSpillPool::new(limit.as_usize()), top),
            limit,
            headroom: headroom(limit.as_usize()),
        }
    }

    fn exhausted(&self, error: DataFusionError) -> DataFusionError {
        // Keep the variant: spilling operators and the gRPC mapping both rely on it.
        DataFusionError::ResourcesExhausted(format!(
            "the server's memory limit of {} (--memory-limit) is reached: {}",
            self.limit,
            error.strip_backtrace()
        ))
    }
}

impl fmt::Display for MemoryLimitPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory limit of {}", self.limit)
    }
}

impl MemoryPool for MemoryLimitPool {
    fn name(&self) -> &str {
        "flightbear"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if leaves_headroom(reservation.consumer()) {
            let spill_limit = self.limit.as_usize() - self.headroom;
            if self.inner.reserved().saturating_add(additional) > spill_limit {
                return Err(self.exhausted(DataFusionError::ResourcesExhausted(format!(
                    "{} may not grow by {additional} bytes: sorts leave \
                     the last {} of the pool to operators that cannot spill",
                    reservation.consumer().name(),
                    ByteSize(self.headroom as u64),
                ))));
            }
        }
        self.inner
            .try_grow(reservation, additional)
            .map_err(|error| self.exhausted(error))
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit.as_usize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_names_the_limit() {
        let pool: Arc<dyn MemoryPool> = Arc::new(MemoryLimitPool::new(ByteSize::mib(1)));
        let reservation = MemoryConsumer::new("test reader").register(&pool);
        reservation.try_grow(512 << 10).unwrap();
        let error = reservation.try_grow(1 << 20).unwrap_err();
        assert!(matches!(error, DataFusionError::ResourcesExhausted(_)));
        let message = error.to_string();
        assert!(message.contains("memory limit of 1MiB"), "{message}");
        assert!(message.contains("test reader"), "{message}");
        drop(reservation);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn spilling_operators_leave_headroom_for_the_others() {
        let pool: Arc<dyn MemoryPool> = Arc::new(MemoryLimitPool::new(ByteSize::mib(64)));
        assert_eq!(headroom(64 << 20), 8 << 20);
        let sort = MemoryConsumer::new("ExternalSorter[0]")
            .with_can_spill(true)
            .register(&pool);
        let reader = MemoryConsumer::new("reader").register(&pool);
        sort.try_grow(56 << 20).unwrap();
        let error = sort.try_grow(1).unwrap_err();
        assert!(matches!(error, DataFusionError::ResourcesExhausted(_)));
        assert!(error.to_string().contains("last 8MiB"), "{error}");
        reader.try_grow(8 << 20).unwrap();
        assert!(reader.try_grow(1).is_err(), "the pool is full");
    }

    #[test]
    fn headroom_is_an_eighth_of_the_pool_within_bounds() {
        assert_eq!(headroom(16 << 20), 4 << 20);
        assert_eq!(headroom(6 << 20), 3 << 20);
        assert_eq!(headroom(1 << 30), 128 << 20);
        assert_eq!(headroom(64 << 30), 256 << 20);
    }
}
