//! Native core of the `flightbear` Python package: a Flight SQL client plus the seed helpers.
//!
//! Behaviour lives here; `python/flightbear/` only re-exports it and adds ergonomics.

mod client;
mod connection;
mod endpoint;
mod error;
mod runtime;
mod seed;
mod session;
mod stream;

use pyo3::prelude::*;

/// The private extension module `flightbear._flightbear`.
#[pymodule]
fn _flightbear(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::note_main_thread(m.py())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(seed::sum_as_string, m)?)?;
    m.add_function(wrap_pyfunction!(seed::sum_as_string_with_times, m)?)?;
    m.add_function(wrap_pyfunction!(seed::double_array, m)?)?;
    m.add_class::<seed::Summer>()?;
    m.add_function(wrap_pyfunction!(connection::connect, m)?)?;
    m.add_class::<connection::Connection>()?;
    m.add_class::<connection::QueryResult>()?;
    m.add_class::<connection::BatchIterator>()?;
    Ok(())
}
