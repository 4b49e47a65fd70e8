//! How `flightbear query` writes results: an aligned table, CSV, JSON lines or Arrow IPC, one
//! batch at a time.

use std::io::Write;
use std::str::FromStr;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::{self, LineDelimitedWriter};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// Rows the aligned table reads before it fixes its column widths.
const TABLE_SIZING_ROWS: usize = 1000;

/// Widest a column of the aligned table is padded to; longer values are printed whole.
const TABLE_MAX_WIDTH: usize = 60;

/// The output formats of `flightbear query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An aligned text table with a header and a row count.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row and line (NULLs written as `null`).
    Jsonl,
    /// The Arrow IPC stream format (what `pyarrow.ipc.open_stream` reads).
    Arrow,
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "jsonl" | "json" | "ndjson" => Ok(Self::Jsonl),
            "arrow" | "ipc" => Ok(Self::Arrow),
            other => Err(format!(
                "unknown format '{other}' (expected table, csv, jsonl or arrow)"
            )),
        }
    }
}

enum State<'a> {
    /// Nothing written yet.
    Waiting(Box<dyn Write + 'a>),
    Table(Table<'a>),
    Csv(Box<csv::Writer<Box<dyn Write + 'a>>>),
    Jsonl(LineDelimitedWriter<Box<dyn Write + 'a>>),
    Arrow(StreamWriter<Box<dyn Write + 'a>>),
    Done,
}

/// Writes the batches of one result in one format.
pub struct ResultWriter<'a> {
    format: OutputFormat,
    schema: Option<SchemaRef>,
    state: State<'a>,
}

impl<'a> ResultWriter<'a> {
    /// A writer of `format` to `out`.
    pub fn new(format: OutputFormat, out: impl Write + 'a) -> Self {
        Self {
            format,
            schema: None,
            state: State::Waiting(Box::new(out)),
        }
    }

    /// Announces the result's schema, so an empty result still gets its header.
    pub fn start(&mut self, schema: &SchemaRef) -> Result<(), ArrowError> {
        self.schema = Some(SchemaRef::clone(schema));
        Ok(())
    }

    fn begin(&mut self, schema: &SchemaRef) -> Result<(), ArrowError> {
        let State::Waiting(_) = self.state else {
            return Ok(());
        };
        let State::Waiting(out) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("checked just above");
        };
        self.state = match self.format {
            OutputFormat::Table => State::Table(Table::new(out, schema)),
            OutputFormat::Csv => State::Csv(Box::new(
                csv::WriterBuilder::new().with_header(true).build(out),
            )),
            OutputFormat::Jsonl => State::Jsonl(
                json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, json::writer::LineDelimited>(out),
            ),
            OutputFormat::Arrow => State::Arrow(StreamWriter::try_new(out, schema)?),
        };
        Ok(())
    }

    /// Writes one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        self.begin(&batch.schema())?;
        match &mut self.state {
            State::Table(table) => table.write(batch),
            State::Csv(writer) => writer.write(batch),
            State::Jsonl(writer) => writer.write(batch),
            State::Arrow(writer) => writer.write(batch),
            State::Waiting(_) | State::Done => Ok(()),
        }
    }

    /// Ends the output (the table's last rows and row count, the IPC end marker) and flushes.
    pub fn finish(&mut self) -> Result<(), ArrowError> {
        if let (State::Waiting(_), Some(schema)) = (&self.state, self.schema.clone()) {
            // An empty result: the header (CSV, table) or schema (Arrow) all the same.
            self.begin(&schema)?;
            if let State::Csv(writer) = &mut self.state {
                writer.write(&RecordBatch::new_empty(schema))?;
            }
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Table(table) => table.finish(),
            State::Csv(writer) => writer.into_inner().flush().map_err(ArrowError::from),
            State::Jsonl(mut writer) => {
                writer.finish()?;
                writer.into_inner().flush().map_err(ArrowError::from)
            }
            State::Arrow(mut writer) => {
                writer.finish()?;
                writer.into_inner()?.flush().map_err(ArrowError::from)
            }
            State::Waiting(mut out) => out.flush().map_err(ArrowError::from),
            State::Done => Ok(()),
        }
    }
}

/// The aligned table: the first rows size the columns, later rows are printed as they come.
struct Table<'a> {
    out: Box<dyn Write + 'a>,
    header: Vec<String>,
    right_aligned: Vec<bool>,
    widths: Option<Vec<usize>>,
    pending: Vec<Vec<String>>,
    rows: u64,
}

impl<'a> Table<'a> {
    fn new(out: Box<dyn Write + 'a>, schema: &SchemaRef) -> Self {
        Self {
            out,
            header: schema.fields().iter().map(|f| f.name().clone()).collect(),
            right_aligned: schema
                .fields()
                .iter()
                .map(|f| f.data_type().is_numeric())
                .collect(),
            widths: None,
            pending: Vec::new(),
            rows: 0,
        }
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let options = FormatOptions::default().with_null("NULL");
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| cell(&f.value(row).to_string()))
                .collect();
            self.rows += 1;
            match &self.widths {
                Some(_) => self.print_row(&cells)?,
                None => {
                    self.pending.push(cells);
                    if self.pending.len() >= TABLE_SIZING_ROWS {
                        self.settle()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Fixes the column widths on the rows held, prints the header and those rows.
    fn settle(&mut self) -> Result<(), ArrowError> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.pending {
            for (width, value) in widths.iter_mut().zip(row) {
                *width = (*width).max(value.chars().count().min(TABLE_MAX_WIDTH));
            }
        }
        self.widths = Some(widths);
        let header = self.header.clone();
        self.print_row(&header)?;
        let rule: Vec<String> = self
            .widths
            .iter()
            .flatten()
            .map(|&w| "-".repeat(w))
            .collect();
        writeln!(self.out, "{}", rule.join("-+-"))?;
        for row in std::mem::take(&mut self.pending) {
            self.print_row(&row)?;
        }
        Ok(())
    }

    fn print_row(&mut self, cells: &[String]) -> Result<(), ArrowError> {
        let widths = self.widths.as_deref().unwrap_or_default();
        let mut line = String::new();
        for (i, value) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str(" | ");
            }
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(value.chars().count());
            let last = i + 1 == cells.len();
            if self.right_aligned.get(i).copied().unwrap_or(false) {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(value);
            } else {
                line.push_str(value);
                if !last {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        writeln!(self.out, "{line}")?;
        Ok(())
    }

    fn finish(mut self) -> Result<(), ArrowError> {
        if self.widths.is_none() {
            self.settle()?;
        }
        let noun = if self.rows == 1 { "row" } else { "rows" };
        writeln!(self.out, "({} {noun})", self.rows)?;
        self.out.flush()?;
        Ok(())
    }
}

/// A value as one table cell: line breaks and tabs shown escaped, so rows stay on one line.
fn cell(value: &str) -> String {
    if value.contains(['\n', '\r', '\t']) {
        value
            .replace('\n', "\\n")
            .replace('\r', "\\r")
            .replace('\t', "\\t")
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a\tb"), None])),
                Arc::new(Int64Array::from(vec![Some(5), Some(1234)])),
            ],
        )
        .unwrap()
    }

    fn written(format: OutputFormat, batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = ResultWriter::new(format, &mut out);
        writer.start(&batch().schema()).unwrap();
        for b in batches {
            writer.write(b).unwrap();
        }
        writer.finish().unwrap();
        drop(writer);
        out
    }

    #[test]
    fn tables_align_columns_and_count_rows() {
        let text = String::from_utf8(written(OutputFormat::Table, &[batch()])).unwrap();
        assert_eq!(
            text,
            "id   |    n\n-----+-----\na\\tb |    5\nNULL | 1234\n(2 rows)\n"
        );
        let empty = String::from_utf8(written(OutputFormat::Table, &[])).unwrap();
        assert_eq!(empty, "id | n\n---+--\n(0 rows)\n");
    }

    #[test]
    fn csv_and_json_lines_write_every_row() {
        let csv = String::from_utf8(written(OutputFormat::Csv, &[batch(), batch()])).unwrap();
        assert_eq!(csv, "id,n\na\tb,5\n,1234\na\tb,5\n,1234\n");
        assert_eq!(
            String::from_utf8(written(OutputFormat::Csv, &[])).unwrap(),
            "id,n\n"
        );
        let json = String::from_utf8(written(OutputFormat::Jsonl, &[batch()])).unwrap();
        assert_eq!(
            json,
            "{\"id\":\"a\\tb\",\"n\":5}\n{\"id\":null,\"n\":1234}\n"
        );
    }

    #[test]
    fn arrow_ipc_round_trips() {
        let bytes = written(OutputFormat::Arrow, &[batch()]);
        let reader =
            datafusion::arrow::ipc::reader::StreamReader::try_new(bytes.as_slice(), None).unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(batches, vec![batch()]);
    }

    #[test]
    fn formats_are_named_in_any_case() {
        assert_eq!("CSV".parse(), Ok(OutputFormat::Csv));
        assert_eq!("jsonl".parse(), Ok(OutputFormat::Jsonl));
        assert!(
            "xml"
                .parse::<OutputFormat>()
                .unwrap_err()
                .contains("expected table")
        );
    }
}
