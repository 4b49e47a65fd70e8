//! Sequence functions for SQL: `gc_content`, `reverse_complement`, `translate`, `kmers`.
//!
//! Each takes any string type (Utf8, LargeUtf8, Utf8View) and gives NULL for a NULL input.
//! `reverse_complement` and `translate` answer in the type they were given; `kmers` answers a
//! list of Utf8 and reserves its result in the memory pool first (its result is up to `k`
//! times its input). The letter-level rules, and what they are checked against, are in
//! [`nucleotides`] and [`codes`].

pub mod codes;
pub mod nucleotides;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, LargeStringBuilder, ListBuilder, StringBuilder,
    StringViewBuilder, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::types::{NativeType, logical_int64, logical_string};
use datafusion::common::{Result, exec_err, internal_err};
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, TypeSignatureClass, Volatility,
};

use crate::catalog::functions::reserve_result;
use codes::GeneticCode;

/// Registers the sequence functions in `state`; `kmers` reserves its results in `pool`.
pub fn register(state: &mut SessionState, pool: &Arc<dyn MemoryPool>) {
    let functions = [
        ScalarUDF::new_from_impl(GcContent::new()),
        ScalarUDF::new_from_impl(ReverseComplement::new()),
        ScalarUDF::new_from_impl(Translate::new(
            state.scalar_functions().get("translate").cloned(),
        )),
        ScalarUDF::new_from_impl(Kmers::new(Arc::clone(pool))),
    ];
    for function in functions {
        let name = function.name().to_string();
        // Registering replaces any function of the same name; it does not fail.
        if let Err(error) = state.register_udf(Arc::new(function)) {
            tracing::error!("could not register the SQL function {name}: {error}");
        }
    }
}

/// A sequence argument: any string type.
fn sequence_arg() -> Coercion {
    Coercion::new_exact(TypeSignatureClass::Native(logical_string()))
}

/// An integer argument, taken as Int64.
fn integer_arg() -> Coercion {
    Coercion::new_implicit(
        TypeSignatureClass::Native(logical_int64()),
        vec![TypeSignatureClass::Integer],
        NativeType::Int64,
    )
}

/// The strings of a sequence argument, row by row.
fn strings(array: &ArrayRef) -> Result<Box<dyn Iterator<Item = Option<&str>> + '_>> {
    Ok(match array.data_type() {
        DataType::Utf8 => Box::new(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(array.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(array.as_string_view().iter()),
        DataType::Null => Box::new(std::iter::repeat_n(None, array.len())),
        other => return internal_err!("a sequence function was given {other}"),
    })
}

/// The type a string-valued function answers for an argument of type `input`.
fn string_result_type(input: &DataType) -> DataType {
    match input {
        DataType::LargeUtf8 | DataType::Utf8View => input.clone(),
        _ => DataType::Utf8,
    }
}

/// A builder of strings of the type a function answers.
enum StringsOut {
    Utf8(StringBuilder),
    Large(LargeStringBuilder),
    View(StringViewBuilder),
}

impl StringsOut {
    fn new(input: &DataType, rows: usize, bytes: usize) -> Self {
        match string_result_type(input) {
            DataType::LargeUtf8 => Self::Large(LargeStringBuilder::with_capacity(rows, bytes)),
            DataType::Utf8View => Self::View(StringViewBuilder::with_capacity(rows)),
            _ => Self::Utf8(StringBuilder::with_capacity(rows, bytes)),
        }
    }

    fn append(&mut self, value: Option<&str>) {
        match self {
            Self::Utf8(b) => b.append_option(value),
            Self::Large(b) => b.append_option(value),
            Self::View(b) => b.append_option(value),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Utf8(mut b) => Arc::new(b.finish()),
            Self::Large(mut b) => Arc::new(b.finish()),
            Self::View(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Bytes of a string array's values (an upper bound of a result made from them).
fn value_bytes(array: &ArrayRef) -> usize {
    array.get_buffer_memory_size()
}

/// `gc_content(seq)`: the GC fraction of a sequence (see [`nucleotides::gc_content`]).
#[derive(Debug, PartialEq, Eq, Hash)]
struct GcContent {
    signature: Signature,
}

impl GcContent {
    fn new() -> Self {
        Self {
            signature: Signature::coercible(vec![sequence_arg()], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for GcContent {
    fn name(&self) -> &str {
        "gc_content"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |args: &[ArrayRef]| {
                let values: Float64Array = strings(&args[0])?
                    .map(|s| s.and_then(|s| nucleotides::gc_content(s.as_bytes())))
                    .collect();
                Ok(Arc::new(values) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }
}

/// `reverse_complement(seq)`: see [`nucleotides::reverse_complement_into`].
#[derive(Debug, PartialEq, Eq, Hash)]
struct ReverseComplement {
    signature: Signature,
}

impl ReverseComplement {
    fn new() -> Self {
        Self {
            signature: Signature::coercible(vec![sequence_arg()], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ReverseComplement {
    fn name(&self) -> &str {
        "reverse_complement"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(string_result_type(&arg_types[0]))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |args: &[ArrayRef]| {
                let input = &args[0];
                let mut out = StringsOut::new(input.data_type(), input.len(), value_bytes(input));
                let mut buffer = String::new();
                for value in strings(input)? {
                    match value {
                        Some(sequence) => {
                            buffer.clear();
                            nucleotides::reverse_complement_into(sequence, &mut buffer);
                            out.append(Some(&buffer));
                        }
                        None => out.append(None),
                    }
                }
                Ok(out.finish())
            },
            vec![],
        )(&args.args)
    }
}

/// `translate(seq [, table_id])`: the protein of a nucleotide sequence under an NCBI genetic
/// code (1, the standard code, by default); see [`codes`]. With three arguments it is
/// DataFusion's (PostgreSQL's) character translation `translate(str, from, to)`, which it
/// replaces by name.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Translate {
    signature: Signature,
    /// DataFusion's `translate(str, from, to)`.
    characters: Option<Arc<ScalarUDF>>,
}

impl Translate {
    fn new(characters: Option<Arc<ScalarUDF>>) -> Self {
        let mut signatures = vec![
            TypeSignature::Coercible(vec![sequence_arg()]),
            TypeSignature::Coercible(vec![sequence_arg(), integer_arg()]),
        ];
        if let Some(characters) = &characters {
            match &characters.signature().type_signature {
                TypeSignature::OneOf(theirs) => signatures.extend(theirs.iter().cloned()),
                theirs => signatures.push(theirs.clone()),
            }
        }
        Self {
            signature: Signature::one_of(signatures, Volatility::Immutable),
            characters,
        }
    }

    /// DataFusion's character translation, for a call with three arguments.
    fn characters(&self, arguments: usize) -> Option<&ScalarUDF> {
        self.characters.as_deref().filter(|_| arguments == 3)
    }
}

impl ScalarUDFImpl for Translate {
    fn name(&self) -> &str {
        "translate"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match self.characters(arg_types.len()) {
            Some(characters) => characters.return_type(arg_types),
            None => Ok(string_result_type(&arg_types[0])),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match self.characters(args.args.len()) {
            Some(characters) => characters.invoke_with_args(args),
            None => make_scalar_function(translate, vec![])(&args.args),
        }
    }
}

fn translate(args: &[ArrayRef]) -> Result<ArrayRef> {
    let input = &args[0];
    // The genetic code of each row: the standard code without a second argument; NULL for a
    // NULL table id.
    let tables = args.get(1).filter(|t| !t.data_type().is_null());
    let tables = tables.map(|t| t.as_primitive::<Int64Type>());
    if args.get(1).is_some() && tables.is_none() {
        return Ok(new_null_array(
            &string_result_type(input.data_type()),
            input.len(),
        ));
    }
    let standard = GeneticCode::by_id(1).expect("the standard genetic code is known");
    let mut out = StringsOut::new(input.data_type(), input.len(), value_bytes(input) / 3);
    let mut protein = Vec::new();
    for (row, value) in strings(input)?.enumerate() {
        let code = match tables {
            None => Some(standard),
            Some(tables) if tables.is_null(row) => None,
            Some(tables) => {
                let id = tables.value(row);
                match GeneticCode::by_id(id) {
                    Some(code) => Some(code),
                    None => {
                        return exec_err!(
                            "translate(): there is no genetic code {id}; NCBI tables {} are known",
                            GeneticCode::known_ids()
                        );
                    }
                }
            }
        };
        let (Some(sequence), Some(code)) = (value, code) else {
            out.append(None);
            continue;
        };
        protein.clear();
        if let Err(invalid) = code.translate_into(sequence.as_bytes(), &mut protein) {
            return exec_err!(
                "translate(): codon '{}' at position {} is not made of IUPAC nucleotide codes",
                whole_characters(sequence, invalid.position - 1),
                invalid.position
            );
        }
        // Every letter a genetic code gives is ASCII.
        let protein =
            std::str::from_utf8(&protein).map_err(|e| DataFusionError::Internal(e.to_string()))?;
        out.append(Some(protein));
    }
    Ok(out.finish())
}

/// The codon at byte `start` of `sequence`, extended to whole characters: a codon's three bytes
/// can end inside a character (`translate('ATGé€A')` names `é€`, not `é` and half of `€`).
/// Every byte before a refused codon is a nucleotide code (ASCII), so `start` begins one.
fn whole_characters(sequence: &str, start: usize) -> &str {
    let mut end = (start + 3).min(sequence.len());
    while !sequence.is_char_boundary(end) {
        end += 1;
    }
    sequence.get(start..end).unwrap_or(sequence)
}

/// `kmers(seq, k)`: the list of overlapping k-mers of a sequence, in order (see
/// [`nucleotides::kmers`]), so `unnest` and `GROUP BY` count them. The result is reserved in
/// the memory pool before it is built, twice over (the copy `unnest` makes).
#[derive(Debug)]
struct Kmers {
    signature: Signature,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for Kmers {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature && Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for Kmers {}

impl Hash for Kmers {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.signature.hash(state);
    }
}

impl Kmers {
    fn new(pool: Arc<dyn MemoryPool>) -> Self {
        Self {
            signature: Signature::coercible(
                vec![sequence_arg(), integer_arg()],
                Volatility::Immutable,
            ),
            pool,
        }
    }
}

/// The type `kmers` answers.
fn kmers_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

impl ScalarUDFImpl for Kmers {
    fn name(&self) -> &str {
        "kmers"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(kmers_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(|args: &[ArrayRef]| self.kmers(args), vec![])(&args.args)
    }
}

impl Kmers {
    fn kmers(&self, args: &[ArrayRef]) -> Result<ArrayRef> {
        let input = &args[0];
        if args[1].data_type().is_null() {
            return Ok(new_null_array(&kmers_type(), input.len()));
        }
        let ks = args[1].as_primitive::<Int64Type>();
        // The k of each row with a sequence and a k; the first k below 1 is an error.
        let mut rows = Vec::with_capacity(input.len());
        for (row, sequence) in strings(input)?.enumerate() {
            let k = (!ks.is_null(row)).then(|| ks.value(row));
            rows.push(match (sequence, k) {
                (Some(sequence), Some(k)) if k >= 1 => Some((sequence, k)),
                (Some(_), Some(k)) => return exec_err!("kmers(): k must be at least 1, not {k}"),
                _ => None,
            });
        }
        // What the result holds: the k-mers' bytes, their offsets, the lists' offsets.
        let (mut bytes, mut count) = (0usize, 0usize);
        for &(sequence, k) in rows.iter().flatten() {
            let k = usize::try_from(k).unwrap_or(usize::MAX);
            let (b, c) = nucleotides::kmers_size(sequence, k);
            bytes = bytes.saturating_add(b);
            count = count.saturating_add(c);
        }
        if bytes > i32::MAX as usize {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "kmers() would make {bytes} bytes of k-mers from one batch of {} rows, more than \
                 a list of strings holds (2 GiB): use a larger k or shorter sequences",
                input.len()
            )));
        }
        let total = bytes + 4 * count + 4 * (input.len() + 1);
        // Twice over: the list, and the copy of its k-mers `unnest` (its usual consumer) makes
        // while the list still lives. Neither is in the pool once returned, so a list that
        // fits once but not twice would take the server past its limit.
        let reservation = reserve_result(&self.pool, "kmers", total.saturating_mul(2))?;
        let values = StringBuilder::with_capacity(count, bytes);
        let mut lists = ListBuilder::with_capacity(values, input.len());
        for row in rows {
            match row {
                Some((sequence, k)) => {
                    let k = usize::try_from(k).unwrap_or(usize::MAX);
                    for kmer in nucleotides::kmers(sequence, k) {
                        lists.values().append_value(kmer);
                    }
                    lists.append(true);
                }
                None => lists.append(false),
            }
        }
        let result: ArrayRef = Arc::new(lists.finish());
        drop(reservation);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn query(sql: &str) -> Result<Vec<String>> {
        let ctx = SessionContext::new();
        let mut state = ctx.state();
        let pool = Arc::clone(&state.runtime_env().memory_pool);
        register(&mut state, &pool);
        let ctx = SessionContext::new_with_state(state);
        let batches = ctx.sql(sql).await?.collect().await?;
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
        Ok(text.lines().map(str::to_string).collect())
    }

    #[tokio::test]
    async fn functions_answer_for_every_string_type_and_null() -> Result<()> {
        let lines = query(
            "SELECT gc_content(s) AS gc, reverse_complement(s) AS rc, translate(s) AS p, \
             translate(s, 2) AS p2, kmers(s, 2) AS k FROM (VALUES ('ATGTGA'), (NULL)) AS t(s)",
        )
        .await?;
        assert_eq!(
            lines[3],
            "| 0.3333333333333333 | TCACAT | M* | MW | [AT, TG, GT, TG, GA] |"
        );
        assert_eq!(
            lines[4],
            "|                    |        |    |    |                      |"
        );
        for ty in ["VARCHAR", "TEXT"] {
            let lines = query(&format!(
                "SELECT reverse_complement(arrow_cast('aCgN', 'Utf8View')) AS a, \
                 translate(CAST('GCN' AS {ty})) AS b, kmers(arrow_cast('ACG', 'LargeUtf8'), 3) AS c"
            ))
            .await?;
            assert_eq!(lines[3], "| NcGt | A | [ACG] |");
        }
        let lines = query(
            "SELECT translate(NULL) AS a, kmers('ACG', NULL) AS b, translate('ATG', NULL) AS c",
        )
        .await?;
        assert_eq!(lines[3], "|   |   |   |");
        Ok(())
    }

    #[tokio::test]
    async fn bad_arguments_are_errors_that_say_why() {
        let error = query("SELECT translate('ATG', 7)")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("no genetic code 7"), "{error}");
        let error = query("SELECT translate('AT-GGG')")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("codon 'AT-' at position 1"), "{error}");
        let error = query("SELECT kmers('ACGT', 0)")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("k must be at least 1"), "{error}");
    }
}
