"""The seed helpers: checked sums, Summer, double_array."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

import flightbear
from flightbear import Summer, double_array, sum_as_string, sum_as_string_with_times

U64_MAX = 2**64 - 1


def test_sum_as_string_adds():
    assert sum_as_string(1, 2) == "3"
    assert sum_as_string(0, 0) == "0"
    assert sum_as_string(U64_MAX - 1, 1) == str(U64_MAX)


@pytest.mark.parametrize(
    ("a", "b", "error", "fragment"),
    [
        (-1, 2, ValueError, "a must be a non-negative int, got -1"),
        (1, -2, ValueError, "b must be a non-negative int, got -2"),
        (1.5, 2, TypeError, "a must be an int, got float"),
        ("1", 2, TypeError, "a must be an int, got str"),
        (True, 2, TypeError, "a must be an int, got bool"),
        (None, 2, TypeError, "a must be an int, got NoneType"),
        (2**64, 1, OverflowError, "a is too large"),
        (U64_MAX, 1, OverflowError, "does not fit in 64 bits"),
    ],
)
def test_sum_as_string_rejects_bad_input(a, b, error, fragment):
    with pytest.raises(error, match=fragment):
        sum_as_string(a, b)


def test_sum_with_times_multiplies_and_defaults_to_once():
    assert sum_as_string_with_times(1, 2, times=3) == "9"
    assert sum_as_string_with_times(1, 2) == "3"
    assert sum_as_string_with_times(1, 2, 1) == "3"


def test_sum_with_times_a_and_b_are_positional_only():
    with pytest.raises(TypeError):
        sum_as_string_with_times(a=1, b=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        sum_as_string_with_times(1, b=2)  # type: ignore[call-arg]


@pytest.mark.parametrize("times", [0, -1, -(2**70)])
def test_sum_with_times_below_one_is_a_value_error(times):
    with pytest.raises(ValueError, match=r"^times must be greater than 0$"):
        sum_as_string_with_times(1, 2, times=times)


@pytest.mark.parametrize(
    ("times", "error"), [(1.0, TypeError), ("3", TypeError), (2**64, OverflowError)]
)
def test_sum_with_times_rejects_bad_times(times, error):
    with pytest.raises(error, match="times"):
        sum_as_string_with_times(1, 2, times=times)


def test_sum_with_times_overflow_is_an_error_not_a_wrapped_number():
    with pytest.raises(OverflowError, match="does not fit in 64 bits"):
        sum_as_string_with_times(2**63, 0, times=2)


def test_summer_keeps_a_running_total():
    summer = Summer(1)
    assert summer.add(2) == 3
    assert summer.add(10) == 13
    assert summer.total == 13
    assert repr(summer) == "Summer(total=13)"
    assert Summer().total == 0


def test_summer_rejects_bad_values_and_keeps_its_total():
    summer = Summer(U64_MAX - 1)
    with pytest.raises(OverflowError):
        summer.add(2)
    with pytest.raises(ValueError):
        summer.add(-1)
    with pytest.raises(TypeError):
        summer.add(0.5)
    assert summer.total == U64_MAX - 1
    with pytest.raises(ValueError):
        Summer(-5)


def test_summer_is_thread_safe():
    summer = Summer(0)

    def work() -> None:
        for _ in range(1000):
            summer.add(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert summer.total == 4000


def test_double_array_doubles_and_keeps_nulls():
    result = double_array(pa.array([1, None, -3, 0], type=pa.int64()))
    assert result.type == pa.int64()
    assert result.to_pylist() == [2, None, -6, 0]


def test_double_array_respects_slices():
    result = double_array(pa.array([1, 2, 3, 4, None, 6]).slice(2, 3))
    assert result.to_pylist() == [6, 8, None]


def test_double_array_accepts_chunked_arrays():
    chunked = pa.chunked_array([[1, 2], [], [None, 4]], type=pa.int64())
    result = double_array(chunked)
    assert isinstance(result, pa.Array)
    assert result.to_pylist() == [2, 4, None, 8]
    assert double_array(pa.chunked_array([], type=pa.int64())).to_pylist() == []


def test_double_array_accepts_any_arrow_c_array_producer():
    class Producer:
        def __init__(self, array: pa.Array) -> None:
            self.array = array

        def __arrow_c_array__(self, requested_schema=None):
            return self.array.__arrow_c_array__(requested_schema)

    assert double_array(Producer(pa.array([5, None]))).to_pylist() == [10, None]


def test_double_array_reads_the_input_in_place():
    # Zero-copy in: the input buffer is not touched and stays alive; the output is new memory.
    source = pa.array(range(1000), type=pa.int64())
    before = source.buffers()[1].address
    result = double_array(source)
    assert source.buffers()[1].address == before
    assert result.buffers()[1].address != before
    assert result.to_pylist() == [2 * i for i in range(1000)]


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (pa.array([1.0, 2.0]), "double"),
        (pa.array([1, 2], type=pa.int32()), "int32"),
        (pa.array(["a"]), "string"),
        (pa.chunked_array([[1]], type=pa.uint64()), "uint64"),
    ],
)
def test_double_array_names_the_wrong_arrow_type(value, name):
    with pytest.raises(TypeError, match=f"expects an int64 array, got {name}"):
        double_array(value)


@pytest.mark.parametrize("value", [[1, 2], 3, None, "abc"])
def test_double_array_rejects_non_arrow_input(value):
    with pytest.raises(TypeError, match=f"got {type(value).__name__}"):
        double_array(value)


def test_double_array_overflow_is_an_error():
    with pytest.raises(OverflowError, match="overflows int64"):
        double_array(pa.array([1, 2**62], type=pa.int64()))
    with pytest.raises(OverflowError):
        double_array(pa.array([-(2**63)], type=pa.int64()))


def test_double_array_ignores_values_under_nulls():
    # A null slot may hold any value; it must not trigger an overflow.
    values = pa.py_buffer((2**62).to_bytes(8, "little", signed=True) * 2)
    validity = pa.py_buffer(bytes([0b01]))
    array = pa.Array.from_buffers(pa.int64(), 2, [validity, values], null_count=1)
    with pytest.raises(OverflowError):
        double_array(array)
    validity_none = pa.py_buffer(bytes([0b00]))
    nulls = pa.Array.from_buffers(pa.int64(), 2, [validity_none, values], null_count=2)
    assert double_array(nulls).to_pylist() == [None, None]


def test_version_is_exposed():
    assert isinstance(flightbear.__version__, str)
