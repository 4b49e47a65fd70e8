//! The allocator settings of a flightbear process.
//!
//! glibc gives each thread that allocates while another holds the lock an arena of its own,
//! up to eight per core, and an arena keeps what is freed in it for its own threads: buffers
//! of long records freed on one thread are not reused by the next query's threads, so the
//! process grows past its memory pool. A server with a 128 MiB pool that had streamed 30 Mbp
//! records to six clients at once peaked at 252-393 MiB resident with glibc's default arenas
//! and 210-257 MiB with two (`tests/compat/test_memory.py`, 2026-12-07). Fixing the mmap
//! threshold instead (so large buffers go back to the system when freed) brought it to
//! 180 MiB but made an indexed read of one 25 Mbp record 2.3× slower (every buffer faulted
//! in afresh), and mimalloc peaked at 474-570 MiB.

/// Caps glibc's arenas at one per core (at least two), unless the operator chose a setting
/// (`MALLOC_ARENA_MAX`, `GLIBC_TUNABLES`). Call it first in `main`: arenas made before stay.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var_os("GLIBC_TUNABLES").is_some()
        {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; it takes the allocator's own lock.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
