//! Size-guarded SQL functions: string functions whose result can be far larger than their input,
//! or a copy as large as it, reserve an upper bound of it in the memory pool before they run.
//!
//! DataFusion's `repeat`, `lpad`, `rpad`, `replace` and `regexp_replace` allocate their whole
//! result without asking the pool, so `repeat('A', 2000000000)` takes 2 GB at once. The session
//! replaces each of them by a [`SizeGuarded`] wrapper: it computes an upper bound of the
//! result's bytes from the arguments, reserves it for the duration of the call, and fails with
//! `ResourcesExhausted` naming the function and the limit when it does not fit. Everything
//! else (name, signature, return type, NULL handling, simplification) is the inner function's.
//! Functions that copy their input (`upper`, `reverse_complement`, …) or a part of it (`substr`,
//! `left`, …) are guarded the same way: a projection of six copies of a 30 Mbp record built
//! all six (180 MB) under a 128 MiB limit before anything refused it.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::ptr::NonNull;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, Int64Array, OffsetSizeTrait, RecordBatch, make_array,
};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::compute::kernels::arity::unary;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ExprSchema, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
};

use super::concat_operator::GuardCalls;

/// Results bounded below this many bytes run without asking the pool.
const UNGUARDED_BYTES: usize = 1 << 20;

/// The most bytes one UTF-8 character takes.
const MAX_CHAR_BYTES: u64 = 4;

/// How a guarded function's result can grow, with the upper bound of its bytes per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) × n`.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad(...)`: `len(s) + n × min(4, len(fill))` (fill defaults to a space).
    Pad,
    /// `replace(s, from, to)`: `len(s) + len(s) / len(from) × len(to)`; an empty `from` matches
    /// `len(s) + 1` times.
    Replace,
    /// `regexp_replace(s, pattern, r [, flags])`: `len(s) + m × len(r) + k × len(s)` where `m`
    /// is 1, or `len(s) + 1` with the `g` flag, and `k` counts the `$` group references in `r`
    /// (all matches together are at most `len(s)` bytes).
    RegexpReplace,
    /// `concat(a, b, …)`, `a || b`, `overlay(s PLACING t …)`: the sum of the arguments' bytes
    /// (a non-string argument counts as its text).
    Sum,
    /// `concat_ws(sep, a, b, …)`: the sum of `a, b, …` plus `len(sep)` between each two.
    SumWithSeparator,
    /// `encode(s, 'hex' | 'base64')`: `2 × len(s) + 4`.
    Encode,
    /// `upper(s)`, `lower(s)`, `initcap(s)`, `reverse(s)`, the trims, `reverse_complement(s)`:
    /// `len(s)`. They copy their input whole (or less); a few non-ASCII case mappings grow it,
    /// and the reservation follows the result's actual size once it is built.
    Copy,
    /// `translate(seq [, table])`: `len(seq) / 3 + 1`; DataFusion's `translate(s, from, to)`
    /// as [`Growth::Copy`].
    Translate,
    /// `substr(s, start, count)`, `left(s, n)`, `right(s, n)` (the argument at `count` counts
    /// characters), `split_part`, `substr_index`: a part of `s`, at most `len(s)` and at most
    /// `4 × count` bytes a row. A part of a view array is a view of the same bytes: nothing is
    /// copied, nothing reserved.
    Part { count: Option<usize> },
}

/// The functions the session guards, by name.
const GUARDED: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("concat", Growth::Sum),
    ("concat_ws", Growth::SumWithSeparator),
    ("overlay", Growth::Sum),
    ("encode", Growth::Encode),
    ("upper", Growth::Copy),
    ("lower", Growth::Copy),
    ("initcap", Growth::Copy),
    ("reverse", Growth::Copy),
    ("btrim", Growth::Copy),
    ("ltrim", Growth::Copy),
    ("rtrim", Growth::Copy),
    // The sequence functions (registered before the guards are put in).
    ("reverse_complement", Growth::Copy),
    ("translate", Growth::Translate),
    ("substr", Growth::Part { count: Some(2) }),
    ("left", Growth::Part { count: Some(1) }),
    ("right", Growth::Part { count: Some(1) }),
    ("split_part", Growth::Part { count: None }),
    ("substr_index", Growth::Part { count: None }),
];

/// Replaces the session's functions whose results can be far larger than their inputs by
/// wrappers that reserve an upper bound of the result in `pool` first (and keep it while the
/// result lives).
/// An analyzer rule makes the `||` operator and the calls the SQL planner makes without looking
/// functions up by name go through the same guards ([`GuardCalls`]).
pub fn guard_amplifying_functions(state: &mut SessionState, pool: &Arc<dyn MemoryPool>) {
    let mut guarded_by_name = HashMap::new();
    for &(name, growth) in GUARDED {
        let Some(inner) = state.scalar_functions().get(name).cloned() else {
            continue;
        };
        let guarded = Arc::new(ScalarUDF::new_from_impl(SizeGuarded {
            inner,
            growth,
            pool: Arc::clone(pool),
        }));
        // Registering replaces the function of the same name and aliases; it does not fail.
        if let Err(error) = state.register_udf(Arc::clone(&guarded)) {
            tracing::error!("could not guard the SQL function {name}: {error}");
        }
        guarded_by_name.insert(name.to_string(), guarded);
    }
    state.add_analyzer_rule(Arc::new(GuardCalls::new(guarded_by_name, pool)));
}

/// Whether `function` is already a guard ([`SizeGuarded`]).
pub(crate) fn is_guarded(function: &ScalarUDF) -> bool {
    (function.inner().as_ref() as &dyn Any).is::<SizeGuarded>()
}

/// `inner` guarded as `concat` is: reserving the sum of its arguments' bytes in `pool`.
pub(crate) fn guarded_as_concat(inner: Arc<ScalarUDF>, pool: &Arc<dyn MemoryPool>) -> ScalarUDF {
    ScalarUDF::new_from_impl(SizeGuarded {
        inner,
        growth: Growth::Sum,
        pool: Arc::clone(pool),
    })
}

/// A scalar function that reserves an upper bound of its result's bytes before running `inner`.
#[derive(Debug)]
pub struct SizeGuarded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for SizeGuarded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
            && self.growth == other.growth
            && Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for SizeGuarded {}

impl Hash for SizeGuarded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.growth.hash(state);
    }
}

/// Bytes shown to people.
struct Bytes(usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = self.0 as f64 / (1u64 << 20) as f64;
        write!(f, "{mib:.1} MiB")
    }
}

/// Reserves `bytes` in `pool` for the result of the SQL function `name`, or fails with
/// `ResourcesExhausted` naming the function, the size and the limit.
pub(crate) fn reserve_result(
    pool: &Arc<dyn MemoryPool>,
    name: &str,
    bytes: usize,
) -> Result<MemoryReservation> {
    let reservation = MemoryConsumer::new(format!("function {name}")).register(pool);
    reservation.try_grow(bytes).map_err(|error| {
        let reason = pool_reason(&error);
        // Functions are named `f()`, operators (`||`) by their symbol.
        let subject = if name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            format!("{name}()")
        } else {
            format!("the {name} operator")
        };
        DataFusionError::ResourcesExhausted(format!(
            "{subject} would need up to {} for its result: {reason}",
            Bytes(bytes),
        ))
    })?;
    Ok(reservation)
}

/// Why the pool refused a reservation (its message, without DataFusion's wrapping).
pub(crate) fn pool_reason(error: &DataFusionError) -> String {
    match error.find_root() {
        DataFusionError::ResourcesExhausted(reason) => reason.clone(),
        other => other.strip_backtrace(),
    }
}

/// Owns a result's reservation; dropped (giving the memory back to the pool) with the last
/// buffer of the result.
struct Held {
    _reservation: AssertUnwindSafe<MemoryReservation>,
}

/// `array` with `reservation`, resized to the array's memory, kept until the last of the
/// array's buffers is dropped: a function's result stays counted in the pool while later
/// expressions, operators and the client's stream hold it, not only while it is built.
pub(crate) fn held(array: ArrayRef, reservation: MemoryReservation) -> ArrayRef {
    // Growing past the limit here is accounting, not allocating: the memory is already taken.
    reservation.resize(array.get_array_memory_size());
    make_array(holding(array.to_data(), &holder(reservation)))
}

/// `batch` with `reservation` kept until the last buffer of any of its columns is dropped.
pub(crate) fn held_batch(batch: RecordBatch, reservation: MemoryReservation) -> RecordBatch {
    let holder = holder(reservation);
    let (schema, columns, rows) = batch.into_parts();
    let columns = columns
        .into_iter()
        .map(|column| make_array(holding(column.to_data(), &holder)))
        .collect();
    // SAFETY: the same columns, over the same bytes, as a batch that was valid for `schema`.
    unsafe { RecordBatch::new_unchecked(schema, columns, rows) }
}

/// The owner of `reservation` that the buffers of a held result share.
fn holder(reservation: MemoryReservation) -> Arc<Held> {
    Arc::new(Held {
        _reservation: AssertUnwindSafe(reservation),
    })
}

/// `data` with every buffer (children's too) also owning `holder`.
fn holding(data: ArrayData, holder: &Arc<Held>) -> ArrayData {
    let buffers = data
        .buffers()
        .iter()
        .map(|buffer| buffer_holding(buffer, holder))
        .collect();
    let children = data
        .child_data()
        .iter()
        .map(|child| holding(child.clone(), holder))
        .collect();
    let builder = data.into_builder().buffers(buffers).child_data(children);
    // SAFETY: the buffers hold the same bytes at the same addresses as the array's own, which
    // they keep alive, and the children are the array's own, so the data stays as valid as
    // the array it came from.
    unsafe { builder.build_unchecked() }
}

/// A buffer over the same bytes as `buffer` that also owns `holder`.
fn buffer_holding(buffer: &Buffer, holder: &Arc<Held>) -> Buffer {
    let len = buffer.len();
    let ptr = NonNull::new(buffer.as_ptr().cast_mut()).unwrap_or(NonNull::dangling());
    let owner = Arc::new((buffer.clone(), Arc::clone(holder)));
    // SAFETY: `ptr` points at the `len` initialised bytes of `buffer`, which `owner` keeps
    // alive and never writes until the last `Buffer` made here is dropped.
    unsafe { Buffer::from_custom_allocation(ptr, len, owner) }
}

impl SizeGuarded {
    /// The function being guarded.
    fn wrapped(&self) -> &dyn ScalarUDFImpl {
        self.inner.inner().as_ref()
    }

    /// `expr` (what the function simplified itself to) with its calls of the function guarded
    /// again: `concat_ws(',', a, b)` simplifies to a new call of DataFusion's own `concat_ws`.
    fn guarding_calls(&self, expr: Expr) -> Result<Expr> {
        expr.transform_up(|expr| match expr {
            Expr::ScalarFunction(call)
                if call.func.name() == self.name() && !is_guarded(&call.func) =>
            {
                let guarded = ScalarUDF::new_from_impl(Self {
                    inner: call.func,
                    growth: self.growth,
                    pool: Arc::clone(&self.pool),
                });
                Ok(Transformed::yes(Expr::ScalarFunction(
                    ScalarFunction::new_udf(Arc::new(guarded), call.args),
                )))
            }
            other => Ok(Transformed::no(other)),
        })
        .map(|transformed| transformed.data)
    }

    /// Upper bound of the bytes of the result of a call with `args`.
    fn result_bound(&self, args: &[ColumnarValue], number_rows: usize) -> Result<usize> {
        let rows = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            1
        } else {
            number_rows
        };
        let arg = |i: usize| args.get(i);
        let total: u128 = match self.growth {
            Growth::Repeat => {
                let (s, n) = (byte_lengths(arg(0))?, integers(arg(1))?);
                (0..rows).map(|r| s.at(r) * n.at(r)).sum()
            }
            Growth::Pad => {
                let (s, n) = (byte_lengths(arg(0))?, integers(arg(1))?);
                let fill = match arg(2) {
                    Some(fill) => byte_lengths(Some(fill))?,
                    None => PerRow::constant(1),
                };
                (0..rows)
                    .map(|r| s.at(r) + n.at(r) * fill.at(r).clamp(1, MAX_CHAR_BYTES.into()))
                    .sum()
            }
            Growth::Replace => {
                let (s, from, to) = (
                    byte_lengths(arg(0))?,
                    byte_lengths(arg(1))?,
                    byte_lengths(arg(2))?,
                );
                (0..rows)
                    .map(|r| {
                        let len = s.at(r);
                        let matches = match from.at(r) {
                            0 => len + 1,
                            from => len / from,
                        };
                        len + matches * to.at(r)
                    })
                    .sum()
            }
            Growth::RegexpReplace => {
                let (s, replacement) = (byte_lengths(arg(0))?, byte_lengths(arg(2))?);
                let references = group_references(arg(2));
                let global = replaces_all(arg(3));
                (0..rows)
                    .map(|r| {
                        let len = s.at(r);
                        let matches = if global { len + 1 } else { 1 };
                        len + matches * replacement.at(r) + references * len
                    })
                    .sum()
            }
            Growth::Sum => {
                let parts = args
                    .iter()
                    .map(|a| text_lengths(Some(a)))
                    .collect::<Result<Vec<_>>>()?;
                (0..rows)
                    .map(|r| parts.iter().map(|p| p.at(r)).sum::<u128>())
                    .sum()
            }
            Growth::SumWithSeparator => {
                let separator = byte_lengths(arg(0))?;
                let parts = args
                    .iter()
                    .skip(1)
                    .map(|a| text_lengths(Some(a)))
                    .collect::<Result<Vec<_>>>()?;
                let gaps = parts.len().saturating_sub(1) as u128;
                (0..rows)
                    .map(|r| separator.at(r) * gaps + parts.iter().map(|p| p.at(r)).sum::<u128>())
                    .sum()
            }
            Growth::Encode => {
                let s = byte_lengths(arg(0))?;
                (0..rows).map(|r| 2 * s.at(r) + 4).sum()
            }
            Growth::Copy => copied_bytes(arg(0), rows),
            // Three bases make one amino acid; translate(s, from, to) is DataFusion's.
            Growth::Translate if args.len() < 3 => copied_bytes(arg(0), rows) / 3 + rows as u128,
            Growth::Translate => copied_bytes(arg(0), rows),
            Growth::Part { count } => {
                let whole = match arg(0).map(ColumnarValue::data_type) {
                    Some(DataType::Utf8View | DataType::BinaryView) => 0,
                    _ => copied_bytes(arg(0), rows),
                };
                match count.and_then(arg) {
                    // At most `count` characters of each row.
                    Some(ColumnarValue::Scalar(count)) if whole >= UNGUARDED_BYTES as u128 => {
                        match count.clone().cast_to(&DataType::Int64)? {
                            ScalarValue::Int64(Some(n)) if n >= 0 => whole.min(
                                u128::from(n.unsigned_abs())
                                    * u128::from(MAX_CHAR_BYTES)
                                    * rows as u128,
                            ),
                            _ => whole,
                        }
                    }
                    Some(counts @ ColumnarValue::Array(_)) if whole >= UNGUARDED_BYTES as u128 => {
                        let (s, n) = (byte_lengths(arg(0))?, integers(Some(counts))?);
                        (0..rows)
                            .map(|r| match n.signed_at(r) {
                                Some(n) if n >= 0 => s
                                    .at(r)
                                    .min(u128::from(n.unsigned_abs()) * u128::from(MAX_CHAR_BYTES)),
                                _ => s.at(r),
                            })
                            .sum()
                    }
                    _ => whole,
                }
            }
        };
        Ok(usize::try_from(total).unwrap_or(usize::MAX))
    }
}

/// One non-negative number per row of an argument; a scalar (one value) stands for every row;
/// NULL and negative values count as 0.
struct PerRow(Option<Int64Array>);

impl PerRow {
    fn constant(value: i64) -> Self {
        Self(Some(Int64Array::from(vec![value])))
    }

    /// The value of `row` as given: `None` for NULL.
    fn signed_at(&self, row: usize) -> Option<i64> {
        let values = self.0.as_ref()?;
        let index = if values.len() == 1 { 0 } else { row };
        (index < values.len() && !values.is_null(index)).then(|| values.value(index))
    }

    #[inline]
    fn at(&self, row: usize) -> u128 {
        let Some(values) = &self.0 else {
            return 0;
        };
        let index = if values.len() == 1 { 0 } else { row };
        if index >= values.len() || values.is_null(index) {
            return 0;
        }
        u128::try_from(values.value(index)).unwrap_or(0)
    }
}

/// The argument as an array: a scalar becomes one row.
fn as_array(arg: Option<&ColumnarValue>) -> Result<Option<ArrayRef>> {
    match arg {
        None => Ok(None),
        Some(ColumnarValue::Array(array)) => Ok(Some(Arc::clone(array))),
        Some(ColumnarValue::Scalar(scalar)) => scalar.to_array_of_size(1).map(Some),
    }
}

fn as_i64(array: &ArrayRef) -> Result<Int64Array> {
    let options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    let cast = cast_with_options(array, &DataType::Int64, &options)?;
    Ok(cast.as_primitive::<Int64Type>().clone())
}

/// Byte length of a string (or binary) argument per row.
fn byte_lengths(arg: Option<&ColumnarValue>) -> Result<PerRow> {
    let Some(array) = as_array(arg)? else {
        return Ok(PerRow(None));
    };
    if array.data_type().is_null() {
        return Ok(PerRow(None));
    }
    Ok(PerRow(Some(as_i64(&length(&array)?)?)))
}

/// A string or binary type: its values are runs of bytes of any length.
pub(crate) fn holds_bytes(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// Length of an argument as text per row: the bytes of a string or binary, the length of the
/// text a value of another type is cast to (the functions that take any type print it so).
fn text_lengths(arg: Option<&ColumnarValue>) -> Result<PerRow> {
    let Some(array) = as_array(arg)? else {
        return Ok(PerRow(None));
    };
    match array.data_type() {
        data_type if holds_bytes(data_type) || data_type.is_null() => byte_lengths(arg),
        _ => match cast_with_options(&array, &DataType::Utf8, &CastOptions::default()) {
            Ok(text) => byte_lengths(Some(&ColumnarValue::Array(text))),
            // Not castable: bound each row by the array's whole memory.
            Err(_) => {
                let bytes = i64::try_from(array.get_array_memory_size()).unwrap_or(i64::MAX);
                Ok(PerRow::constant(bytes))
            }
        },
    }
}

/// Bytes of a string argument's values in all `rows` (a scalar stands for each row).
fn copied_bytes(arg: Option<&ColumnarValue>, rows: usize) -> u128 {
    match arg {
        Some(ColumnarValue::Array(array)) => value_bytes(array),
        Some(ColumnarValue::Scalar(scalar)) => {
            let bytes = scalar.try_as_str().flatten().map_or_else(
                || scalar.size().saturating_sub(size_of::<ScalarValue>()),
                str::len,
            );
            bytes as u128 * rows as u128
        }
        None => 0,
    }
}

/// Bytes of an array's values: what its strings (or binaries) take together, found from the
/// offsets or views without reading them; the whole memory of an array of another type.
fn value_bytes(array: &ArrayRef) -> u128 {
    fn between<O: OffsetSizeTrait>(offsets: &[O]) -> u128 {
        let (first, last) = (offsets.first(), offsets.last());
        first.zip(last).map_or(0, |(first, last)| {
            (last.as_usize().saturating_sub(first.as_usize())) as u128
        })
    }
    match array.data_type() {
        DataType::Utf8 => between(array.as_string::<i32>().value_offsets()),
        DataType::LargeUtf8 => between(array.as_string::<i64>().value_offsets()),
        DataType::Binary => between(array.as_binary::<i32>().value_offsets()),
        DataType::LargeBinary => between(array.as_binary::<i64>().value_offsets()),
        DataType::Utf8View => array.as_string_view().lengths().map(u128::from).sum(),
        DataType::BinaryView => array.as_binary_view().lengths().map(u128::from).sum(),
        _ => array.get_array_memory_size() as u128,
    }
}

/// An integer argument per row.
fn integers(arg: Option<&ColumnarValue>) -> Result<PerRow> {
    match as_array(arg)? {
        Some(array) => Ok(PerRow(Some(as_i64(&array)?))),
        None => Ok(PerRow(None)),
    }
}

/// The target lengths of `lpad`/`rpad` with negative values made 0, which the functions treat
/// alike: DataFusion 55 sizes its buffer by adding the lengths as `usize`, so a column holding
/// a negative length makes it ask for `usize::MAX` bytes and panic.
fn negative_lengths_as_zero(target: &ColumnarValue) -> ColumnarValue {
    match target {
        ColumnarValue::Array(array) if array.data_type() == &DataType::Int64 => {
            let lengths = array.as_primitive::<Int64Type>();
            if lengths.iter().flatten().all(|n| n >= 0) {
                return target.clone();
            }
            let clamped: Int64Array = unary(lengths, |n: i64| n.max(0));
            ColumnarValue::Array(Arc::new(clamped))
        }
        _ => target.clone(),
    }
}

/// The most `$` group references in a replacement argument (counted over all its rows).
fn group_references(arg: Option<&ColumnarValue>) -> u128 {
    let count = |text: &str| text.bytes().filter(|&b| b == b'$').count() as u128;
    match arg {
        Some(ColumnarValue::Scalar(scalar)) => scalar.try_as_str().flatten().map_or(0, count),
        Some(ColumnarValue::Array(array)) => {
            let Ok(strings) = datafusion::arrow::compute::cast(array, &DataType::Utf8) else {
                return 0;
            };
            strings
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(count)
                .max()
                .unwrap_or(0)
        }
        None => 0,
    }
}

/// True unless the flags are known to lack `g` (replace every match).
fn replaces_all(flags: Option<&ColumnarValue>) -> bool {
    match flags {
        None => false,
        Some(ColumnarValue::Scalar(ScalarValue::Null)) => false,
        Some(ColumnarValue::Scalar(scalar)) => match scalar.try_as_str() {
            Some(Some(flags)) => flags.contains('g'),
            Some(None) => false,
            None => true,
        },
        Some(ColumnarValue::Array(_)) => true,
    }
}

// Delegates every method, so the wrapper behaves as the function it guards.
impl ScalarUDFImpl for SizeGuarded {
    fn name(&self) -> &str {
        self.wrapped().name()
    }

    fn aliases(&self) -> &[String] {
        self.wrapped().aliases()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.wrapped().display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.wrapped().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.wrapped().signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.wrapped().return_type(arg_types)
    }

    fn with_updated_config(&self, _config: &ConfigOptions) -> Option<ScalarUDF> {
        None
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.wrapped().return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.wrapped().is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.wrapped().is_strict()
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if self.growth == Growth::Pad
            && let Some(target) = args.args.get_mut(1)
        {
            *target = negative_lengths_as_zero(target);
        }
        let bound = self.result_bound(&args.args, args.number_rows)?;
        if bound < UNGUARDED_BYTES {
            return self.wrapped().invoke_with_args(args);
        }
        let reservation = reserve_result(&self.pool, self.name(), bound)?;
        Ok(match self.wrapped().invoke_with_args(args)? {
            ColumnarValue::Array(array) => ColumnarValue::Array(held(array, reservation)),
            scalar => scalar,
        })
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        Ok(match self.wrapped().simplify(args, info)? {
            ExprSimplifyResult::Simplified(expr) => {
                ExprSimplifyResult::Simplified(self.guarding_calls(expr)?)
            }
            original => original,
        })
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.wrapped().preimage(args, lit_expr, info)
    }

    fn short_circuits(&self) -> bool {
        self.wrapped().short_circuits()
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.wrapped().conditional_arguments(args)
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.wrapped().evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.wrapped().propagate_constraints(interval, inputs)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.wrapped().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.wrapped().preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.wrapped().strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.wrapped().coerce_types(arg_types)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.wrapped().struct_field_mapping(literal_args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.wrapped().documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.wrapped().placement(args)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    use super::super::limited_session as session;

    /// The same session with the functions the guards wrap put back.
    fn unguarded() -> SessionContext {
        let ctx = session(64);
        for (name, _) in super::GUARDED {
            let function = Arc::clone(&ctx.state().scalar_functions()[*name]);
            let guard: &dyn std::any::Any = function.inner().as_ref();
            let guard = guard.downcast_ref::<super::SizeGuarded>().unwrap();
            ctx.register_udf(guard.inner.as_ref().clone());
        }
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> datafusion::error::Result<Vec<RecordBatch>> {
        ctx.sql(sql).await?.collect().await
    }

    async fn text(ctx: &SessionContext, sql: &str) -> String {
        let batches = run(ctx, sql).await.unwrap();
        let schema = batches.first().map(|b| b.schema());
        format!("{schema:?}\n{}", pretty_format_batches(&batches).unwrap())
    }

    /// `sql` fails with ResourcesExhausted "`subject` would need up to …", naming the 64 MiB
    /// limit.
    async fn assert_refused(ctx: &SessionContext, sql: &str, subject: &str) {
        let error = run(ctx, sql).await.unwrap_err();
        assert!(
            matches!(
                error.find_root(),
                datafusion::error::DataFusionError::ResourcesExhausted(_)
            ),
            "{sql}: {error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("{subject} would need up to"))
                && message.contains("memory limit of 64MiB"),
            "{sql}: {message}"
        );
    }

    #[tokio::test]
    async fn a_result_larger_than_the_memory_limit_is_refused_before_it_is_built() {
        let ctx = session(64);
        for sql in [
            "SELECT length(repeat('A', 2000000000))",
            "SELECT length(lpad('x', 1000000000))",
            "SELECT length(rpad('x', 1000000000, 'ab'))",
            "SELECT length(replace(repeat('A', 1000000), 'A', repeat('B', 1000)))",
            "SELECT length(regexp_replace(repeat('A', 1000000), 'A', repeat('B', 1000), 'g'))",
        ] {
            let error = run(&ctx, sql).await.unwrap_err();
            let root = error.find_root();
            assert!(
                matches!(
                    root,
                    datafusion::error::DataFusionError::ResourcesExhausted(_)
                ),
                "{sql}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains("memory limit of 64MiB"),
                "{sql}: {message}"
            );
            assert!(message.contains("would need up to"), "{sql}: {message}");
        }
    }

    #[tokio::test]
    async fn results_that_fit_are_computed_by_the_original_functions() {
        let ctx = session(64);
        let reference = unguarded();
        let guarded = ctx.state().scalar_functions()["repeat"].clone();
        let guarded: &dyn std::any::Any = guarded.inner().as_ref();
        assert!(guarded.is::<super::SizeGuarded>());
        let setup = "CREATE TABLE t (s VARCHAR, n BIGINT, f VARCHAR) AS VALUES \
             ('ab', 3, 'xy'), (NULL, 2, '-'), ('é', NULL, 'ü'), ('abc', -1, NULL), ('', 0, '')";
        run(&ctx, setup).await.unwrap();
        run(&reference, setup).await.unwrap();
        for sql in [
            "SELECT repeat(s, n), repeat('ab', 2), repeat(NULL, 2), repeat(s, 2) FROM t",
            "SELECT lpad(s, 4), lpad(s, 5, f), rpad(s, 1), rpad(s, 5, f), lpad('x', 3) FROM t",
            "SELECT replace(s, 'b', f), replace(s, '', 'z'), replace(NULL, 'a', 'b') FROM t",
            "SELECT regexp_replace(s, 'b', f), regexp_replace(s, '(.)', '$1$1', 'g'), \
             regexp_replace(s, 'B', 'c', 'i') FROM t",
            "SELECT length(repeat('A', 3000000)), length(lpad('x', 3000000))",
            "SELECT repeat(arrow_cast(s, 'Utf8View'), 2), repeat(arrow_cast(s, 'LargeUtf8'), 2) FROM t",
            "SELECT upper(s), lower(f), initcap(s), reverse(f), btrim(f, 'x'), ltrim(s, 'a'), \
             rtrim(s), trim(f), reverse_complement(s), translate(s), translate(s, 'ab', 'xy') \
             FROM t",
            "SELECT upper(arrow_cast(s, 'Utf8View')), lower(arrow_cast(s, 'LargeUtf8')), \
             reverse_complement(arrow_cast(f, 'Utf8View')), translate(arrow_cast(s, 'LargeUtf8')), \
             upper(arrow_cast(s, 'Dictionary(Int32, Utf8)')) FROM t",
            "SELECT substr(s, 2), substr(s, 1, 1), substring(f FROM 2 FOR n), left(s, n), \
             right(s, -1), left(arrow_cast(s, 'Utf8View'), 1), split_part(s, 'b', 1), \
             substr_index(f, 'y', 1), substr(arrow_cast(s, 'LargeUtf8'), n) FROM t",
            "SELECT length(substr(repeat('ab', 1000000), 2, 600000)), \
             length(left(repeat('é', 1000000), 3)), length(right(repeat('x', 2000000), n)) FROM t",
            // 'ΐ' is 2 bytes and its upper case 6: the result outgrows the reservation's bound.
            "SELECT length(upper(repeat('ΐ', 1000000))), \
             length(reverse_complement(repeat('ACGT', 500000)))",
        ] {
            assert_eq!(text(&ctx, sql).await, text(&reference, sql).await, "{sql}");
        }
    }

    #[tokio::test]
    async fn concatenations_larger_than_the_memory_limit_are_refused_before_they_are_built() {
        let ctx = session(64);
        // 10 MB of text in a table: results are arrays, built when the query runs.
        run(
            &ctx,
            "CREATE TABLE t AS SELECT repeat('A', 10000000) AS s, '-' AS f",
        )
        .await
        .unwrap();
        let eight = |f: &str| [f; 8].join(", ");
        for (sql, subject) in [
            (
                format!("SELECT length(concat({})) FROM t", eight("s")),
                "concat()",
            ),
            (
                format!("SELECT length(concat_ws(f, {})) FROM t", eight("s")),
                "concat_ws()",
            ),
            // A literal separator makes DataFusion simplify the call to a new call.
            (
                format!("SELECT length(concat_ws(',', {})) FROM t", eight("s")),
                "concat_ws()",
            ),
            (
                format!("SELECT length(concat('x', {})) FROM t", eight("s")),
                "concat()",
            ),
            (
                format!("SELECT length({}) FROM t", ["s"; 8].join(" || ")),
                "the || operator",
            ),
            // Each level of a chain reserves its result while the next one is built.
            (
                "SELECT length(encode(encode(encode(s, 'hex'), 'hex'), 'hex')) FROM t".into(),
                "encode()",
            ),
            (
                "SELECT length(overlay(concat(s, s) PLACING concat(s, f, s) FROM 2 FOR 0)) FROM t"
                    .into(),
                "overlay()",
            ),
            // Literals folded while planning are guarded too.
            (
                format!(
                    "SELECT length({})",
                    ["repeat('A', 10000000)"; 8].join(" || ")
                ),
                "the || operator",
            ),
        ] {
            assert_refused(&ctx, &sql, subject).await;
        }
    }

    #[tokio::test]
    async fn copies_larger_than_the_memory_limit_are_refused_before_they_are_built() {
        // 80 MB of text in one batch of a table (made where it fits; a table's batches are
        // not a query's memory), each function's copy of it more than the limit.
        let roomy = session(1024);
        let rows = ["('A')"; 8].join(", ");
        run(
            &roomy,
            &format!(
                "CREATE TABLE t AS SELECT repeat(c, 10000000) AS s FROM (VALUES {rows}) AS v(c)"
            ),
        )
        .await
        .unwrap();
        let ctx = session(64);
        ctx.register_table("t", roomy.table_provider("t").await.unwrap())
            .unwrap();
        for (call, subject) in [
            ("upper(s)", "upper()"),
            ("lower(s)", "lower()"),
            ("initcap(s)", "initcap()"),
            ("reverse(s)", "reverse()"),
            ("btrim(s, 'x')", "btrim()"),
            ("trim(s)", "btrim()"),
            ("ltrim(s)", "ltrim()"),
            ("rtrim(s)", "rtrim()"),
            ("reverse_complement(s)", "reverse_complement()"),
            ("translate(s, 'A', 'C')", "translate()"),
            ("upper(arrow_cast(s, 'Utf8View'))", "upper()"),
            ("substr(s, 2)", "substr()"),
            ("substring(s FROM 2 FOR 9000000)", "substr()"),
            ("left(s, -1)", "left()"),
            ("right(s, 9000000)", "right()"),
            ("split_part(s, 'x', 1)", "split_part()"),
            ("substr_index(s, 'x', 1)", "substr_index()"),
        ] {
            let sql = format!("SELECT length({call}) FROM t");
            assert_refused(&ctx, &sql, subject).await;
        }
        // A protein is a third of its sequence: 27 MB fit.
        let lengths = text(&ctx, "SELECT length(translate(s)) AS n FROM t").await;
        assert_eq!(lengths.matches("| 3333333 |").count(), 8, "{lengths}");
        // So do parts of at most 100,000 characters a row (3.2 MB), and parts of views, which
        // are views of the same bytes.
        let lengths = text(
            &ctx,
            "SELECT length(substr(s, 5, 100000)) AS a, length(left(s, 100000)) AS b, \
             length(right(s, 100000)) AS c, \
             length(substr(arrow_cast(s, 'Utf8View'), 2)) AS d FROM t",
        )
        .await;
        assert_eq!(
            lengths
                .matches("| 100000 | 100000 | 100000 | 9999999 |")
                .count(),
            8,
            "{lengths}"
        );
    }

    #[tokio::test]
    async fn a_guarded_result_stays_reserved_while_it_lives() {
        let ctx = session(64);
        run(
            &ctx,
            "CREATE TABLE t AS SELECT repeat('A', 3000000) AS s, repeat('ΐ', 1000000) AS g",
        )
        .await
        .unwrap();
        let pool = Arc::clone(&ctx.runtime_env().memory_pool);
        let before = pool.reserved();
        // Megabytes held: the result's buffers, by their capacity.
        for (sql, megabytes) in [
            ("SELECT s || s AS c FROM t", 6..7),
            ("SELECT concat(s, s, 'x') AS c FROM t", 6..7),
            ("SELECT upper(s) AS c FROM t", 3..4),
            ("SELECT reverse_complement(s) AS c FROM t", 3..4),
            // Reserved as 2 MB before it ran, its actual 6 MB (in a buffer of 8) once built.
            ("SELECT upper(g) AS c FROM t", 6..9),
        ] {
            let batches = run(&ctx, sql).await.unwrap();
            let held = pool.reserved() - before;
            assert!(
                (megabytes.start * 1_000_000..megabytes.end * 1_000_000).contains(&held),
                "{sql}: {held} bytes reserved"
            );
            drop(batches);
            assert_eq!(pool.reserved(), before, "{sql}");
        }
    }

    #[tokio::test]
    async fn concatenations_that_fit_give_what_datafusion_gives() {
        let ctx = session(64);
        // DataFusion's own session with the same configuration: no guards, `||` the operator.
        let reference = SessionContext::new_with_config(ctx.copied_config());
        let setup = "CREATE TABLE t (s VARCHAR, n BIGINT, f VARCHAR) AS VALUES \
             ('ab', 3, 'xy'), (NULL, 2, '-'), ('é', NULL, 'ü'), ('abc', -1, NULL), ('', 0, '')";
        run(&ctx, setup).await.unwrap();
        run(&reference, setup).await.unwrap();
        for sql in [
            "SELECT s || f, s || n, n || s, s || NULL, 'x' || s || 'y', s || 1.5 FROM t",
            "SELECT concat(s, n, NULL, f), concat(s), concat(n, n) FROM t",
            "SELECT concat_ws(f, s, n, s), concat_ws('-', s), concat_ws(NULL, s, f) FROM t",
            "SELECT overlay(s PLACING f FROM 2 FOR 1), overlay(s PLACING 'zz' FROM 1) FROM t",
            "SELECT encode(s, 'hex'), encode(s, 'base64'), encode(NULL, 'hex') FROM t",
            "SELECT arrow_cast(s, 'Utf8View') || f, arrow_cast(s, 'LargeUtf8') || \
             arrow_cast(f, 'LargeUtf8'), arrow_cast(s, 'Utf8View') || 'x' FROM t",
            "SELECT s || f AS c FROM t WHERE s || 'b' = 'abb' ORDER BY s || f",
            "SELECT s || 'x', count(*) FROM t GROUP BY s || 'x' ORDER BY 1",
            "SELECT (SELECT max(s) || '!' FROM t) || 'y', 'a' || 'b' || 'c'",
            "SELECT s FROM t WHERE s || '' IN (SELECT f || '' FROM t) ORDER BY s",
        ] {
            assert_eq!(text(&ctx, sql).await, text(&reference, sql).await, "{sql}");
        }
        // The plan shows the operator as written.
        let plan = text(&ctx, "EXPLAIN SELECT s || f FROM t").await;
        assert!(plan.contains("t.s || t.f"), "{plan}");
    }

    #[tokio::test]
    async fn negative_pad_lengths_in_a_column_give_empty_strings_instead_of_a_panic() {
        let ctx = session(64);
        let values = "(VALUES ('ab', 3), ('cd', -1), (NULL, -5), ('ef', NULL)) AS t(s, n)";
        let guarded = format!("SELECT lpad(s, n) AS l, rpad(s, n, 'xy') AS r FROM {values}");
        let expected = format!(
            "SELECT lpad(s, greatest(n, 0)) AS l, rpad(s, greatest(n, 0), 'xy') AS r FROM {values}"
        );
        let reference = unguarded();
        assert_eq!(
            text(&ctx, &guarded).await,
            text(&reference, &expected).await
        );
    }

    #[tokio::test]
    async fn a_refused_call_keeps_nothing_reserved() {
        let ctx = session(64);
        assert!(run(&ctx, "SELECT repeat('A', 100000000)").await.is_err());
        let pool = &ctx.runtime_env().memory_pool;
        assert_eq!(pool.reserved(), 0);
    }

    #[tokio::test]
    async fn aggregates_that_concatenate_are_limited_by_their_operators() {
        // string_agg and array_agg buffer in the aggregate operator, which reserves its memory.
        let ctx = session(64);
        for sql in [
            "SELECT length(string_agg(repeat('A', 1000), ',')) \
             FROM generate_series(1, 200000)",
            "SELECT array_agg(repeat('A', 1000)) IS NULL FROM generate_series(1, 200000)",
        ] {
            let error = run(&ctx, sql).await.unwrap_err();
            assert!(
                matches!(
                    error.find_root(),
                    datafusion::error::DataFusionError::ResourcesExhausted(_)
                ),
                "{sql}: {error}"
            );
        }
    }
}
