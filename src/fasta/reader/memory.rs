//! The memory one FASTA scan holds, reserved in DataFusion's memory pool before it is allocated.
//!
//! Every growable buffer of the reader is a [`TrackedVec`]: it asks the scan's reservation for
//! more room before its capacity grows and gives the room back when it is dropped. Capacity
//! grows by doubling, so the pool is asked O(log n) times per buffer, never per line.
//!
//! A batch stays reserved by the scan until it leaves the scan's stream ([`Handoff::detach`]):
//! from there on, what holds it accounts for it, as DataFusion's operators do (a sort reserves
//! the batches it buffers, the result stream the messages in flight), so nothing is counted
//! twice. A batch dropped before it left (a cancelled scan) releases its buffers itself.
//! Value buffers of finished batches come back as spares for reuse (faulting in fresh pages
//! costs more than parsing the bytes): a spare is reserved again when it comes back, stays
//! reserved while idle, and is the first thing freed when the pool is full.

use std::mem::size_of;
use std::ops::{Deref, DerefMut};
use std::panic::RefUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// Spare value buffers kept per column: the one being consumed comes back while the next
/// batch is built and another waits in the channel.
const SPARES_PER_COLUMN: usize = 2;

/// Largest spare buffer kept, whatever the batch budget: reuse saves page faults, which only
/// matter for buffers of batch size, and an idle buffer should not pin a huge record's memory.
const MAX_SPARE_BYTES: usize = 64 << 20;

/// Spares of one scan stay below this fraction of a limited pool.
const SPARE_SHARE_OF_POOL: usize = 16;

/// Smallest growth step in bytes: small buffers do not each ask the pool a dozen times.
const MIN_GROWTH_BYTES: usize = 64 << 10;

/// Above this capacity a buffer grows by half instead of doubling, so a huge record does not
/// reserve (and fail on) twice what it needs.
const DOUBLING_LIMIT_BYTES: usize = 64 << 20;

/// Longest a reader waits for its own batches downstream to free memory when the pool is full:
/// a record larger than what is left streams once the consumer has taken the previous one.
const DOWNSTREAM_WAIT: Duration = Duration::from_secs(30);

/// Number of columns whose value buffers are kept as spares (the FASTQ file columns, FASTA's
/// and `quality`).
pub(super) const SPARE_COLUMNS: usize = 4;

/// The pool refused to reserve memory: carries the pool's error (`ResourcesExhausted`, naming
/// the limit and the scan).
#[derive(Debug)]
pub struct OutOfMemory(pub(crate) Box<DataFusionError>);

/// The reservation of one scan and its spare buffers; clones share them.
#[derive(Debug, Clone)]
pub struct ScanMemory {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    reservation: MemoryReservation,
    /// Idle value buffers; their capacity is part of `reservation`.
    spares: Mutex<Spares>,
    /// Most bytes kept in spares, all columns together.
    spare_limit: usize,
    /// False once the reader is done: buffers coming back are freed, not kept.
    keeping_spares: AtomicBool,
    /// Value buffers of this scan in batches downstream (handed out, not dropped yet).
    downstream: Mutex<usize>,
    /// Notified whenever such a buffer comes back.
    released: Condvar,
}

/// Idle value buffers by column, and their total capacity.
#[derive(Debug, Default)]
struct Spares {
    by_column: [Vec<Vec<u8>>; SPARE_COLUMNS],
    bytes: usize,
}

// The shared state is atomics and a mutex whose contents stay consistent at every panic point
// (a poisoned lock only costs the reuse); the pool behind the reservation is `Sync` and keeps
// its own state consistent.
impl RefUnwindSafe for ScanMemory {}

impl ScanMemory {
    /// Registers a consumer named `name` in `pool`; value buffers totalling up to `spare_limit`
    /// bytes are kept for reuse, capped at [`MAX_SPARE_BYTES`] and at a sixteenth of a limited
    /// pool: a spare is a cache, and the pool cannot take it back for another query.
    pub fn new(pool: &Arc<dyn MemoryPool>, name: impl Into<String>, spare_limit: usize) -> Self {
        let reservation = MemoryConsumer::new(name).register(pool);
        let pool_share = match pool.memory_limit() {
            MemoryLimit::Finite(limit) => limit / SPARE_SHARE_OF_POOL,
            MemoryLimit::Infinite | MemoryLimit::Unknown => usize::MAX,
        };
        Self {
            shared: Arc::new(Shared {
                reservation,
                spares: Mutex::new(Default::default()),
                spare_limit: spare_limit.min(MAX_SPARE_BYTES).min(pool_share),
                keeping_spares: AtomicBool::new(true),
                downstream: Mutex::new(0),
                released: Condvar::new(),
            }),
        }
    }

    /// A scan whose memory is counted but never limited.
    #[cfg(test)]
    pub fn unbounded(spare_limit: usize) -> Self {
        use datafusion::execution::memory_pool::UnboundedMemoryPool;
        let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
        Self::new(&pool, "FASTA reader", spare_limit)
    }

    /// Bytes reserved for this scan now.
    #[cfg(test)]
    pub fn reserved(&self) -> usize {
        self.shared.reservation.size()
    }

    /// Reserves `bytes` until the returned guard is dropped.
    pub(crate) fn hold(&self, bytes: usize) -> Result<MemoryReservation, OutOfMemory> {
        let held = self.shared.reservation.new_empty();
        self.reserve_or_wait(|| held.try_grow(bytes))?;
        Ok(held)
    }

    pub(crate) fn try_grow(&self, bytes: usize) -> Result<(), OutOfMemory> {
        self.reserve_or_wait(|| self.shared.reservation.try_grow(bytes))
    }

    /// Runs `reserve`; when the pool refuses, frees the spare buffers and tries again, then
    /// waits for this scan's own batches downstream to be dropped (at most
    /// [`DOWNSTREAM_WAIT`]), trying again after each one. A scan with nothing downstream fails
    /// at once: waiting for other queries could wait forever.
    fn reserve_or_wait(
        &self,
        reserve: impl Fn() -> datafusion::error::Result<()>,
    ) -> Result<(), OutOfMemory> {
        if reserve().is_ok() {
            return Ok(());
        }
        let deadline = Instant::now() + DOWNSTREAM_WAIT;
        let mut downstream = self
            .shared
            .downstream
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            // A batch that came back may have become a spare.
            self.release_spares();
            let refused = match reserve() {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let before = *downstream;
            while *downstream >= before {
                let now = Instant::now();
                if before == 0 || now >= deadline {
                    return Err(OutOfMemory(Box::new(refused)));
                }
                downstream = match self
                    .shared
                    .released
                    .wait_timeout(downstream, deadline - now)
                {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
        }
    }

    /// A value buffer went downstream in a batch.
    fn sent_downstream(&self) {
        if let Ok(mut downstream) = self.shared.downstream.lock() {
            *downstream += 1;
        }
    }

    /// A value buffer sent downstream came back (its last batch was dropped).
    fn came_back(&self) {
        if let Ok(mut downstream) = self.shared.downstream.lock() {
            *downstream = downstream.saturating_sub(1);
        }
        self.shared.released.notify_all();
    }

    /// Accounts for `bytes` the allocator gave beyond what was asked; cannot fail.
    fn grow(&self, bytes: usize) {
        self.shared.reservation.grow(bytes);
    }

    fn release(&self, bytes: usize) {
        if bytes > 0 {
            // A mismatch is a bug in this module; losing track is better than a panic in `drop`.
            let released = self.shared.reservation.try_shrink(bytes);
            debug_assert!(
                released.is_ok(),
                "released more FASTA reader memory than reserved"
            );
        }
    }

    /// Frees every spare buffer; returns the bytes released.
    fn release_spares(&self) -> usize {
        let freed: Vec<Vec<u8>> = match self.shared.spares.lock() {
            Ok(mut spares) => {
                spares.bytes = 0;
                spares
                    .by_column
                    .iter_mut()
                    .flat_map(std::mem::take)
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let bytes = freed.iter().map(Vec::capacity).sum();
        drop(freed);
        self.release(bytes);
        bytes
    }

    /// A value buffer for `column` with room for `capacity` bytes, a spare one if there is one.
    pub(super) fn take_spare(
        &self,
        column: usize,
        capacity: usize,
    ) -> Result<TrackedVec<u8>, OutOfMemory> {
        let spare = self.shared.spares.lock().ok().and_then(|mut spares| {
            let spare = spares.by_column.get_mut(column)?.pop()?;
            spares.bytes -= spare.capacity();
            Some(spare)
        });
        let mut buffer = match spare {
            Some(mut bytes) => {
                bytes.clear();
                TrackedVec {
                    vec: bytes,
                    memory: self.clone(),
                    accounted: true,
                }
            }
            None => TrackedVec::new(self),
        };
        buffer.reserve(capacity)?;
        Ok(buffer)
    }

    /// Keeps `buffer` as a spare of `column`, or frees it when the spares would exceed their
    /// limit, the column has enough of them, or the reader is done.
    fn give_back(&self, column: usize, mut buffer: TrackedVec<u8>) {
        let capacity = buffer.vec.capacity();
        if capacity == 0
            || capacity > self.shared.spare_limit
            || !self.shared.keeping_spares.load(Ordering::Relaxed)
        {
            return;
        }
        let Ok(mut spares) = self.shared.spares.lock() else {
            return;
        };
        let fits = spares.bytes + capacity <= self.shared.spare_limit;
        if fits
            && let Some(kept) = spares.by_column.get_mut(column)
            && kept.len() < SPARES_PER_COLUMN
            // A buffer whose batch left the scan is reserved again, if the pool has room.
            && (buffer.accounted || self.shared.reservation.try_grow(capacity).is_ok())
        {
            // Moving the bytes out leaves `buffer` empty: its drop releases nothing, and the
            // capacity stays reserved for the spare.
            kept.push(std::mem::take(&mut buffer.vec));
            spares.bytes += capacity;
        }
    }

    /// The reader is done: free the spares and stop keeping buffers that come back.
    pub(super) fn stop_keeping_spares(&self) {
        self.shared.keeping_spares.store(false, Ordering::Relaxed);
        self.release_spares();
    }
}

/// Capacity to grow to from `capacity` elements of `size` bytes when `needed` are required.
fn grown_capacity(capacity: usize, needed: usize, size: usize) -> usize {
    let step = if capacity.saturating_mul(size) < DOUBLING_LIMIT_BYTES {
        capacity
    } else {
        capacity / 2
    };
    needed
        .max(capacity.saturating_add(step))
        .max(MIN_GROWTH_BYTES / size.max(1))
}

/// A `Vec` whose capacity is reserved in a [`ScanMemory`] before it is allocated and released
/// when it is dropped. It reads as a slice; every way to grow it is fallible.
#[derive(Debug)]
pub(super) struct TrackedVec<T> {
    vec: Vec<T>,
    memory: ScanMemory,
    /// The capacity is part of the scan's reservation (false once its batch left the scan).
    accounted: bool,
}

impl<T: Copy> TrackedVec<T> {
    /// An empty vector reserving nothing yet.
    pub(super) fn new(memory: &ScanMemory) -> Self {
        Self {
            vec: Vec::new(),
            memory: memory.clone(),
            accounted: true,
        }
    }

    /// Bytes of the scan's reservation this vector holds.
    pub(super) fn reserved_bytes(&self) -> usize {
        if self.accounted {
            self.vec.capacity() * size_of::<T>()
        } else {
            0
        }
    }

    /// An empty vector with room for `capacity` elements.
    pub(super) fn with_capacity(capacity: usize, memory: &ScanMemory) -> Result<Self, OutOfMemory> {
        let mut vec = Self::new(memory);
        vec.reserve(capacity)?;
        Ok(vec)
    }

    /// Makes room for `additional` more elements, reserving first.
    #[inline]
    pub(super) fn reserve(&mut self, additional: usize) -> Result<(), OutOfMemory> {
        if self.vec.capacity() - self.vec.len() >= additional {
            return Ok(());
        }
        self.grow(additional)
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, additional: usize) -> Result<(), OutOfMemory> {
        let size = size_of::<T>();
        let capacity = self.vec.capacity();
        let needed = self.vec.len().saturating_add(additional);
        let target = grown_capacity(capacity, needed, size);
        self.memory
            .try_grow((target - capacity).saturating_mul(size))?;
        self.vec.reserve_exact(target - self.vec.len());
        // The allocator may hand out more than asked for; count it too.
        let extra = self.vec.capacity().saturating_sub(target);
        if extra > 0 {
            self.memory.grow(extra * size);
        }
        Ok(())
    }

    /// Appends `items`, reserving first.
    #[inline]
    pub(super) fn extend_from_slice(&mut self, items: &[T]) -> Result<(), OutOfMemory> {
        self.reserve(items.len())?;
        self.vec.extend_from_slice(items);
        Ok(())
    }

    /// Appends `item`, reserving first.
    #[inline]
    pub(super) fn push(&mut self, item: T) -> Result<(), OutOfMemory> {
        self.reserve(1)?;
        self.vec.push(item);
        Ok(())
    }

    /// Appends `item` in room reserved earlier. Should there be none (a bug), the growth is
    /// counted without asking the pool, so the reservation still matches the capacity.
    #[inline]
    pub(super) fn push_reserved(&mut self, item: T) {
        let capacity = self.vec.capacity();
        self.vec.push(item);
        let grown = self.vec.capacity() - capacity;
        if grown > 0 {
            debug_assert!(false, "pushed into a TrackedVec without reserving");
            self.memory.grow(grown * size_of::<T>());
        }
    }

    /// Elements the vector holds room for.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.vec.capacity()
    }

    /// Sets the length to `len`, filling new elements with `value`, reserving first.
    pub(super) fn resize(&mut self, len: usize, value: T) -> Result<(), OutOfMemory> {
        self.reserve(len.saturating_sub(self.vec.len()))?;
        self.vec.resize(len, value);
        Ok(())
    }

    /// Shortens the vector to `len` elements, keeping its capacity.
    #[inline]
    pub(super) fn truncate(&mut self, len: usize) {
        self.vec.truncate(len);
    }
}

impl<T> Deref for TrackedVec<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        &self.vec
    }
}

impl<T> DerefMut for TrackedVec<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.vec
    }
}

impl<T> Drop for TrackedVec<T> {
    fn drop(&mut self) {
        if self.accounted {
            self.memory.release(self.vec.capacity() * size_of::<T>());
        }
    }
}

/// The buffers of one batch: reserved by the scan until the batch leaves it.
#[derive(Debug)]
pub struct Handoff {
    memory: ScanMemory,
    bytes: usize,
    detached: AtomicBool,
}

impl Handoff {
    /// A batch whose buffers hold `bytes` of `memory`'s reservation.
    pub(crate) fn new(memory: &ScanMemory, bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            memory: memory.clone(),
            bytes,
            detached: AtomicBool::new(false),
        })
    }

    /// The batch leaves the scan: its buffers are no longer part of the scan's reservation
    /// (what holds the batch downstream accounts for it). Call it while holding the batch.
    pub fn detach(&self) {
        if !self.detached.swap(true, Ordering::AcqRel) {
            self.memory.release(self.bytes);
        }
    }

    fn settle<T>(&self, buffer: &mut TrackedVec<T>) {
        if self.detached.load(Ordering::Acquire) {
            // Released by `detach`.
            buffer.accounted = false;
        }
    }
}

/// Owner of a buffer (other than a value buffer) of a batch: frees it when the last batch
/// using it is dropped, releasing its reservation unless the batch had left the scan.
pub(super) struct InBatch<T> {
    buffer: TrackedVec<T>,
    handoff: Arc<Handoff>,
}

impl<T> InBatch<T> {
    pub(super) fn new(buffer: TrackedVec<T>, handoff: &Arc<Handoff>) -> Self {
        Self {
            buffer,
            handoff: Arc::clone(handoff),
        }
    }
}

impl<T> Drop for InBatch<T> {
    fn drop(&mut self) {
        self.handoff.settle(&mut self.buffer);
    }
}

/// Owner of a value buffer of a batch: when the last batch using it is dropped, the buffer
/// becomes a spare of its column (or is freed, its reservation released).
pub(super) struct SpareOnDrop {
    buffer: Option<TrackedVec<u8>>,
    column: usize,
    handoff: Arc<Handoff>,
}

impl SpareOnDrop {
    /// Owns `buffer`, a value buffer of `column` in the batch of `handoff`.
    pub(super) fn new(buffer: TrackedVec<u8>, column: usize, handoff: &Arc<Handoff>) -> Self {
        buffer.memory.sent_downstream();
        Self {
            buffer: Some(buffer),
            column,
            handoff: Arc::clone(handoff),
        }
    }
}

impl Drop for SpareOnDrop {
    fn drop(&mut self) {
        if let Some(mut buffer) = self.buffer.take() {
            self.handoff.settle(&mut buffer);
            let memory = buffer.memory.clone();
            memory.give_back(self.column, buffer);
            memory.came_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytesize::ByteSize;
    use crate::catalog::runtime::MemoryLimitPool;

    fn pool(mib: u64) -> Arc<dyn MemoryPool> {
        Arc::new(MemoryLimitPool::new(ByteSize::mib(mib)))
    }

    #[test]
    fn a_vector_reserves_before_growing_and_releases_when_dropped() {
        let pool = pool(4);
        let memory = ScanMemory::new(&pool, "FASTA reader t.fa", 0);
        let mut bytes = TrackedVec::new(&memory);
        bytes.extend_from_slice(&[b'A'; 100]).unwrap();
        assert!(bytes.capacity() >= MIN_GROWTH_BYTES);
        assert_eq!(pool.reserved(), bytes.capacity());
        let error = bytes.reserve(8 << 20).unwrap_err();
        let error = DataFusionError::from(crate::fasta::FastaError::from(error));
        assert!(matches!(error, DataFusionError::ResourcesExhausted(_)));
        let message = error.to_string();
        assert!(message.contains("memory limit of 4MiB"), "{message}");
        assert!(message.contains("FASTA reader t.fa"), "{message}");
        // Nothing was allocated for the refused growth.
        assert_eq!(pool.reserved(), bytes.capacity());
        assert_eq!(bytes.len(), 100);
        drop(bytes);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn large_buffers_grow_by_half_and_small_ones_by_at_least_a_step() {
        assert_eq!(grown_capacity(0, 1, 1), MIN_GROWTH_BYTES);
        assert_eq!(grown_capacity(0, 1, 4), MIN_GROWTH_BYTES / 4);
        assert_eq!(grown_capacity(1 << 20, (1 << 20) + 1, 1), 2 << 20);
        assert_eq!(grown_capacity(128 << 20, (128 << 20) + 1, 1), 192 << 20);
        assert_eq!(grown_capacity(1 << 20, 5 << 20, 1), 5 << 20);
    }

    #[test]
    fn spare_buffers_stay_reserved_are_reused_and_are_freed_under_pressure() {
        let pool = pool(64);
        let memory = ScanMemory::new(&pool, "FASTA reader t.fa", 4 << 20);
        let buffer = memory.take_spare(2, 1 << 20).unwrap();
        let capacity = buffer.capacity();
        memory.give_back(2, buffer);
        assert_eq!(pool.reserved(), capacity, "a spare stays reserved");
        let reused = memory.take_spare(2, 1000).unwrap();
        assert_eq!(reused.capacity(), capacity, "the spare is reused");
        memory.give_back(2, reused);
        // 63.5 MiB more only fits once the 1 MiB spare is freed.
        let wanted = (63 << 20) + (512 << 10);
        let held = memory.hold(wanted).unwrap();
        assert_eq!(pool.reserved(), wanted);
        drop(held);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn spares_of_all_columns_together_stay_within_their_limit() {
        let pool = pool(64);
        let memory = ScanMemory::new(&pool, "FASTA reader t.fa", 2 << 20);
        let buffers: Vec<_> = (0..3)
            .map(|column| memory.take_spare(column, 1 << 20).unwrap())
            .collect();
        let capacity = buffers[0].capacity();
        for (column, buffer) in buffers.into_iter().enumerate() {
            memory.give_back(column, buffer);
        }
        assert_eq!(pool.reserved(), 2 * capacity, "the third buffer was freed");
    }

    #[test]
    fn spares_stay_below_a_sixteenth_of_a_limited_pool() {
        let pool = pool(16);
        let memory = ScanMemory::new(&pool, "FASTA reader t.fa", 64 << 20);
        let small = memory.take_spare(0, 1 << 20).unwrap();
        let large = memory.take_spare(1, 2 << 20).unwrap();
        let small_capacity = small.capacity();
        memory.give_back(0, small);
        memory.give_back(1, large);
        assert_eq!(
            pool.reserved(),
            small_capacity,
            "the 2 MiB buffer was freed"
        );
    }

    #[test]
    fn buffers_coming_back_after_the_reader_is_done_are_freed() {
        let pool = pool(4);
        let memory = ScanMemory::new(&pool, "FASTA reader t.fa", 4 << 20);
        let buffer = memory.take_spare(0, 1000).unwrap();
        let handoff = Handoff::new(&memory, buffer.reserved_bytes());
        let owner = SpareOnDrop::new(buffer, 0, &handoff);
        memory.stop_keeping_spares();
        drop(owner);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn a_batch_leaving_the_scan_is_released_and_its_buffers_come_back_reserved_again() {
        let pool = pool(64);
        let memory = ScanMemory::new(&pool, "FASTA reader t.fa", 4 << 20);
        let values = memory.take_spare(2, 1 << 20).unwrap();
        let offsets = TrackedVec::<i32>::with_capacity(1000, &memory).unwrap();
        let (value_bytes, offset_bytes) = (values.reserved_bytes(), offsets.reserved_bytes());
        let handoff = Handoff::new(&memory, value_bytes + offset_bytes);
        let values = SpareOnDrop::new(values, 2, &handoff);
        let offsets = InBatch::new(offsets, &handoff);
        assert_eq!(pool.reserved(), value_bytes + offset_bytes);
        handoff.detach();
        handoff.detach();
        assert_eq!(pool.reserved(), 0, "downstream accounts for the batch");
        drop(offsets);
        assert_eq!(pool.reserved(), 0);
        drop(values);
        assert_eq!(
            pool.reserved(),
            value_bytes,
            "the value buffer is a spare again"
        );
        memory.stop_keeping_spares();
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn a_batch_dropped_before_it_left_releases_its_buffers() {
        let pool = pool(4);
        let memory = ScanMemory::new(&pool, "FASTA reader t.fa", 0);
        let offsets = TrackedVec::<i32>::with_capacity(1000, &memory).unwrap();
        let handoff = Handoff::new(&memory, offsets.reserved_bytes());
        let offsets = InBatch::new(offsets, &handoff);
        assert!(pool.reserved() > 0);
        drop(offsets);
        assert_eq!(pool.reserved(), 0);
        drop(handoff);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn a_spare_coming_back_when_the_pool_is_full_is_freed() {
        let pool = pool(64);
        let memory = ScanMemory::new(&pool, "FASTA reader t.fa", 4 << 20);
        let values = memory.take_spare(1, 1 << 20).unwrap();
        let handoff = Handoff::new(&memory, values.reserved_bytes());
        let values = SpareOnDrop::new(values, 1, &handoff);
        handoff.detach();
        let other = memory.hold(64 << 20).unwrap();
        drop(values);
        assert_eq!(
            pool.reserved(),
            64 << 20,
            "no room: the buffer was freed, not kept"
        );
        drop(other);
        assert_eq!(pool.reserved(), 0);
    }
}
