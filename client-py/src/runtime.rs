//! The process-wide tokio runtime and the one way Python threads wait on it.
//!
//! Waiting happens in short slices with the GIL released; between slices the main thread runs
//! Python's signal handlers, so Ctrl-C stops a fetch that the network keeps blocked.

use std::future::Future;
use std::sync::OnceLock;
use std::thread::ThreadId;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::error::ClientError;

/// How long a blocked wait goes without checking for Ctrl-C.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

struct ProcessRuntime {
    runtime: Runtime,
    /// The process that started the runtime: its worker threads do not survive a fork.
    pid: u32,
}

static RUNTIME: OnceLock<Result<ProcessRuntime, String>> = OnceLock::new();
static MAIN_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Remembers the interpreter's main thread (where signal handlers run) if this is it.
pub fn note_main_thread(py: Python<'_>) -> PyResult<()> {
    let threading = py.import("threading")?;
    let current = threading.call_method0("current_thread")?;
    let main = threading.call_method0("main_thread")?;
    if current.is(&main) {
        let _ = MAIN_THREAD.set(std::thread::current().id());
    }
    Ok(())
}

/// Whether this thread is the one Python runs signal handlers on.
pub fn is_main_thread() -> bool {
    MAIN_THREAD.get() == Some(&std::thread::current().id())
}

/// The runtime, started on first use.
pub fn runtime() -> Result<&'static Runtime, ClientError> {
    let started = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("flightbear-io")
            .enable_all()
            .build()
            .map(|runtime| ProcessRuntime {
                runtime,
                pid: std::process::id(),
            })
            .map_err(|e| format!("cannot start the flightbear I/O runtime: {e}"))
    });
    match started {
        Ok(rt) if rt.pid == std::process::id() => Ok(&rt.runtime),
        Ok(_) => Err(ClientError::Runtime(
            "flightbear was used before this process was forked; its I/O threads do not \
             survive fork(). Connect in the parent only after forking, or use the 'spawn' \
             multiprocessing start method"
                .to_string(),
        )),
        Err(message) => Err(ClientError::Runtime(message.clone())),
    }
}

/// Runs `future` to completion on the runtime from a thread that does NOT hold the GIL.
///
/// On the main thread, Python signal handlers run every [`SIGNAL_CHECK_INTERVAL`]; if one
/// raises (Ctrl-C), the future is dropped, which cancels the call, and the error is returned.
pub fn wait<F>(future: F) -> Result<F::Output, ClientError>
where
    F: Future,
{
    let runtime = runtime()?;
    let check_signals = is_main_thread();
    let mut future = std::pin::pin!(future);
    loop {
        let slice = runtime
            .block_on(async { tokio::time::timeout(SIGNAL_CHECK_INTERVAL, future.as_mut()).await });
        match slice {
            Ok(output) => return Ok(output),
            Err(_elapsed) if check_signals => {
                Python::attach(|py| py.check_signals()).map_err(ClientError::Interrupted)?;
            }
            Err(_elapsed) => {}
        }
    }
}

/// Runs a client call from Python: GIL released while waiting, errors as Python exceptions.
pub fn run<F, T>(py: Python<'_>, future: F) -> PyResult<T>
where
    F: Future<Output = Result<T, ClientError>> + Send,
    T: Send,
{
    py.detach(|| wait(future).and_then(|result| result))
        .map_err(|e| e.into_pyerr(py))
}
