//! The seed's small helpers: checked integer sums, a running total, and doubling an Int64 array.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::ArrayData;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, make_array};
use arrow::buffer::ScalarBuffer;
use arrow::compute::concat;
use arrow::datatypes::{DataType, Int64Type};
use arrow::pyarrow::{FromPyArrow, ToPyArrow};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

/// Reads a non-negative Python `int` that fits in 64 bits, naming the argument in every error.
fn natural(value: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, got {}",
            type_name(value)
        )));
    }
    if let Ok(n) = value.extract::<u64>() {
        return Ok(n);
    }
    if value.lt(0)? {
        return Err(PyValueError::new_err(format!(
            "{name} must be a non-negative int, got {value}"
        )));
    }
    Err(PyOverflowError::new_err(format!(
        "{name} is too large: {value} does not fit in 64 bits (max {})",
        u64::MAX
    )))
}

/// The Python type name of `value`, for error messages.
fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "<unknown>".to_string())
}

fn checked_sum(a: u64, b: u64) -> PyResult<u64> {
    a.checked_add(b)
        .ok_or_else(|| PyOverflowError::new_err(format!("{a} + {b} does not fit in 64 bits")))
}

/// Returns the sum of two non-negative ints as a string.
#[pyfunction]
pub fn sum_as_string(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<String> {
    let (a, b) = (natural(a, "a")?, natural(b, "b")?);
    Ok(checked_sum(a, b)?.to_string())
}

/// Returns `(a + b) * times` as a string; `times` must be at least 1.
#[pyfunction]
// `None` stands for the default so the signature can show the real default of 1.
#[pyo3(signature = (a, b, /, times = None), text_signature = "(a, b, /, times=1)")]
pub fn sum_as_string_with_times(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    times: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let (a, b) = (natural(a, "a")?, natural(b, "b")?);
    let times = match times {
        None => 1,
        Some(t) => {
            if !t.is_instance_of::<PyBool>() && t.is_instance_of::<PyInt>() && t.lt(1)? {
                return Err(PyValueError::new_err("times must be greater than 0"));
            }
            natural(t, "times")?
        }
    };
    let sum = checked_sum(a, b)?;
    let product = sum.checked_mul(times).ok_or_else(|| {
        PyOverflowError::new_err(format!("({a} + {b}) * {times} does not fit in 64 bits"))
    })?;
    Ok(product.to_string())
}

/// A running total of non-negative ints.
#[pyclass(frozen, module = "flightbear")]
pub struct Summer {
    total: AtomicU64,
}

#[pymethods]
impl Summer {
    #[new]
    #[pyo3(signature = (start = None), text_signature = "(start=0)")]
    fn new(start: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let start = match start {
            Some(s) => natural(s, "start")?,
            None => 0,
        };
        Ok(Self {
            total: AtomicU64::new(start),
        })
    }

    /// Adds `value` to the total and returns the new total.
    fn add(&self, value: &Bound<'_, PyAny>) -> PyResult<u64> {
        let value = natural(value, "value")?;
        let previous = self
            .total
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_add(value));
        match previous {
            Ok(t) => Ok(t + value),
            Err(t) => Err(PyOverflowError::new_err(format!(
                "{t} + {value} does not fit in 64 bits"
            ))),
        }
    }

    /// The running total.
    #[getter]
    fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    fn __repr__(&self) -> String {
        format!("Summer(total={})", self.total())
    }
}

/// Returns a new pyarrow Int64 array with every value doubled and nulls kept.
///
/// Accepts a pyarrow `Array` or `ChunkedArray`, or any object exporting `__arrow_c_array__`; the
/// input is read in place through the Arrow C data interface.
#[pyfunction]
pub fn double_array<'py>(array: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = array.py();
    let chunks = input_chunks(array)?;
    let doubled = chunks
        .iter()
        .map(|chunk| double_chunk(chunk).map(|a| Arc::new(a) as ArrayRef))
        .collect::<PyResult<Vec<_>>>()?;
    let result: ArrayRef = match doubled.as_slice() {
        [] => Arc::new(Int64Array::from(Vec::<i64>::new())),
        [one] => one.clone(),
        many => {
            let refs: Vec<&dyn Array> = many.iter().map(|a| a.as_ref()).collect();
            concat(&refs).map_err(|e| PyValueError::new_err(e.to_string()))?
        }
    };
    result.to_data().to_pyarrow(py)
}

/// Imports the chunks of `array` without copying, checking that each is Int64.
fn input_chunks(array: &Bound<'_, PyAny>) -> PyResult<Vec<ArrayRef>> {
    let py = array.py();
    let expected = "double_array expects a pyarrow Int64 Array or ChunkedArray, or an object \
                    with __arrow_c_array__";
    let parts: Vec<Bound<'_, PyAny>> = if array.hasattr("__arrow_c_array__")? {
        vec![array.clone()]
    } else if array.hasattr("chunks")? && array.hasattr("type")? {
        // A pyarrow ChunkedArray: check its type first so a zero-chunk input is validated too.
        let dtype = DataType::from_pyarrow_bound(&array.getattr("type")?)
            .map_err(|_| PyTypeError::new_err(format!("{expected}, got {}", type_name(array))))?;
        check_int64(&dtype, array)?;
        array
            .getattr("chunks")?
            .try_iter()?
            .collect::<PyResult<_>>()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{expected}, got {}",
            type_name(array)
        )));
    };
    parts
        .iter()
        .map(|part| {
            let data = ArrayData::from_pyarrow_bound(part).map_err(|e| {
                if e.is_instance_of::<PyTypeError>(py) {
                    e
                } else {
                    PyValueError::new_err(format!("cannot import the array: {e}"))
                }
            })?;
            check_int64(data.data_type(), part)?;
            Ok(make_array(data))
        })
        .collect()
}

/// Fails unless `dtype` is Int64, naming the type as the caller's library spells it.
fn check_int64(dtype: &DataType, source: &Bound<'_, PyAny>) -> PyResult<()> {
    if dtype == &DataType::Int64 {
        return Ok(());
    }
    let name = source
        .getattr("type")
        .and_then(|t| t.str())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| dtype.to_string());
    Err(PyTypeError::new_err(format!(
        "double_array expects an int64 array, got {name}"
    )))
}

/// Doubles the valid slots of one Int64 chunk; a null slot keeps its null and gets 0.
fn double_chunk(chunk: &ArrayRef) -> PyResult<Int64Array> {
    let input = chunk.as_primitive::<Int64Type>();
    let mut values = Vec::with_capacity(input.len());
    for (index, value) in input.values().iter().enumerate() {
        if input.is_null(index) {
            values.push(0);
            continue;
        }
        let doubled = value.checked_mul(2).ok_or_else(|| {
            PyOverflowError::new_err(format!(
                "doubling {value} (at index {index}) overflows int64"
            ))
        })?;
        values.push(doubled);
    }
    Ok(Int64Array::new(
        ScalarBuffer::from(values),
        input.nulls().cloned(),
    ))
}
