//! The FASTA file format, driven through plain DataFusion and checked against independent
//! oracles: noodles-fasta and a tiny reference reader written here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl, PartitionedFile,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use flightbear::fasta::{
    FastaError, FastaFormat, FastaFormatFactory, FastaOptions, FastaSource, fasta_schema,
    is_fasta_path,
};
use futures::StreamExt;

mod common;
use common::XorShift;
use common::files::{bgzf_blocks, gzip, write_file};
use tempfile::TempDir;

/// One FASTA record as the table shows it: (id, description, sequence).
type Row = (String, Option<String>, String);

// ---------------------------------------------------------------------------------------------
// Oracles
// ---------------------------------------------------------------------------------------------

/// The rules of the format in their plainest form: split on '\n', drop one trailing '\r',
/// skip blank lines, '>' starts a record. Errors are the 1-based line of the first problem.
fn reference_reader(text: &[u8]) -> std::result::Result<Vec<Row>, u64> {
    let mut rows = Vec::new();
    let mut current: Option<(String, Option<String>, Vec<u8>)> = None;
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line_number = index as u64 + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if let Some(header) = line.strip_prefix(b">") {
            if let Some((id, description, sequence)) = current.take() {
                rows.push((id, description, String::from_utf8(sequence).unwrap()));
            }
            if header
                .iter()
                .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(line_number);
            }
            let header = std::str::from_utf8(header).map_err(|_| line_number)?;
            if header.is_empty() || header.starts_with([' ', '\t']) {
                return Err(line_number);
            }
            let (id, description) = match header.find([' ', '\t']) {
                Some(k) => (&header[..k], header[k..].trim_matches([' ', '\t'])),
                None => (header, ""),
            };
            let description = (!description.is_empty()).then(|| description.to_string());
            current = Some((id.to_string(), description, Vec::new()));
        } else if line.is_empty() {
            continue;
        } else {
            let Some((_, _, sequence)) = current.as_mut() else {
                return Err(line_number);
            };
            if line.iter().any(|b| !(0x21..=0x7e).contains(b)) {
                return Err(line_number);
            }
            sequence.extend_from_slice(line);
        }
    }
    if let Some((id, description, sequence)) = current.take() {
        rows.push((id, description, String::from_utf8(sequence).unwrap()));
    }
    Ok(rows)
}

/// noodles-fasta's reading of the same text.
fn noodles_reader(text: &[u8]) -> Vec<Row> {
    let mut reader = noodles_fasta::io::Reader::new(text);
    reader
        .records()
        .map(|record| {
            let record = record.expect("noodles reads the fixture");
            (
                String::from_utf8(record.name().to_vec()).unwrap(),
                record
                    .description()
                    .map(|d| String::from_utf8(d.to_vec()).unwrap()),
                String::from_utf8(record.sequence().as_ref().to_vec()).unwrap(),
            )
        })
        .collect()
}

/// How generated FASTA text looks.
#[derive(Clone, Copy)]
struct Shape {
    records: usize,
    max_len: u64,
    line_width: usize,
    crlf: bool,
    blank_lines: bool,
}

/// Random valid FASTA text: descriptions, empty records, lowercase/IUPAC/protein letters.
fn generate(seed: u64, shape: Shape) -> Vec<u8> {
    let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let newline: &[u8] = if shape.crlf { b"\r\n" } else { b"\n" };
    let letters = b"ACGTNacgtnRYKMSWBDHVU*-XEFILPQ";
    let mut out = Vec::new();
    for r in 0..shape.records {
        out.push(b'>');
        write!(out, "seq{r}_{}", rng.below(1000)).unwrap();
        match rng.below(4) {
            0 => {}
            1 => write!(out, " desc {r}").unwrap(),
            2 => write!(out, "\tx=1 y=2\t ").unwrap(),
            _ => write!(out, "  spaced  words ").unwrap(),
        }
        out.extend_from_slice(newline);
        let len = if rng.below(10) == 0 {
            0
        } else {
            rng.below(shape.max_len + 1)
        };
        let mut written = 0;
        while written < len {
            let take = (shape.line_width as u64).min(len - written);
            for _ in 0..take {
                out.push(*rng.pick(letters));
            }
            written += take;
            out.extend_from_slice(newline);
            if shape.blank_lines && rng.below(8) == 0 {
                out.extend_from_slice(newline);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Driving DataFusion
// ---------------------------------------------------------------------------------------------

fn context(target_partitions: usize) -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(target_partitions)
        .with_repartition_file_scans(true)
        .with_repartition_file_min_size(64);
    SessionContext::new_with_config(config)
}

fn table_url(path: &Path) -> ListingTableUrl {
    let mut text = path.to_str().unwrap().to_string();
    if path.is_dir() && !text.ends_with('/') {
        text.push('/');
    }
    ListingTableUrl::parse(text).unwrap()
}

async fn register(ctx: &SessionContext, name: &str, path: &Path, options: FastaOptions) {
    let listing = ListingOptions::new(Arc::new(FastaFormat::new(options))).with_file_extension("");
    let config = ListingTableConfig::new(table_url(path))
        .with_listing_options(listing)
        .with_schema(fasta_schema());
    ctx.register_table(name, Arc::new(ListingTable::try_new(config).unwrap()))
        .unwrap();
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in batches {
        let id = batch.column(0).as_string::<i32>();
        let description = batch.column(1).as_string::<i32>();
        let sequence = batch.column(2).as_string::<i32>();
        for i in 0..batch.num_rows() {
            rows.push((
                id.value(i).to_string(),
                description
                    .is_valid(i)
                    .then(|| description.value(i).to_string()),
                sequence.value(i).to_string(),
            ));
        }
    }
    rows
}

/// Every row of the file(s) at `path`, in file order when `partitions` is 1.
async fn scan(path: &Path, options: FastaOptions, partitions: usize) -> Result<Vec<Row>> {
    let ctx = context(partitions);
    register(&ctx, "t", path, options).await;
    let batches = ctx
        .sql("SELECT id, description, sequence FROM t")
        .await?
        .collect()
        .await?;
    Ok(rows_of(&batches))
}

/// The physical plan of a scan of `path` with `partitions` target partitions, as text.
async fn scan_plan(path: &Path, partitions: usize) -> String {
    plan_of(path, "SELECT id FROM t", partitions).await
}

async fn read(path: &Path) -> Result<Vec<Row>> {
    scan(path, FastaOptions::default(), 1).await
}

/// The batches the scan itself produces (no operator above it to re-chunk them).
async fn raw_batches(path: &Path, options: FastaOptions) -> Vec<RecordBatch> {
    let ctx = context(1);
    register(&ctx, "t", path, options).await;
    let table = ctx.table_provider("t").await.unwrap();
    let plan = table.scan(&ctx.state(), None, &[], None).await.unwrap();
    assert_eq!(plan.output_partitioning().partition_count(), 1);
    collect(plan, ctx.task_ctx()).await.unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fasta")
        .join(name)
}

fn row(id: &str, description: Option<&str>, sequence: &str) -> Row {
    (
        id.to_string(),
        description.map(str::to_string),
        sequence.to_string(),
    )
}

// ---------------------------------------------------------------------------------------------
// Formats handled
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn multi_line_records_match_noodles_and_the_reference_reader() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, width) in [(1, 60), (2, 80), (3, 1), (4, 7)] {
        let shape = Shape {
            records: 300,
            max_len: 400,
            line_width: width,
            crlf: false,
            blank_lines: false,
        };
        let text = generate(seed, shape);
        let path = write_file(&dir, &format!("multi_{seed}.fasta"), &text);
        let rows = read(&path).await.unwrap();
        assert_eq!(rows, noodles_reader(&text), "seed {seed}");
        assert_eq!(rows, reference_reader(&text).unwrap(), "seed {seed}");
    }
}

#[tokio::test]
async fn crlf_and_blank_lines_match_the_reference_reader() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        records: 500,
        max_len: 300,
        line_width: 61,
        crlf: true,
        blank_lines: true,
    };
    let text = generate(7, shape);
    let path = write_file(&dir, "crlf.fa", &text);
    let rows = read(&path).await.unwrap();
    assert_eq!(rows, reference_reader(&text).unwrap());
    assert_eq!(rows.len(), 500);
}

#[tokio::test]
async fn fixture_with_crlf_blank_lines_and_empty_sequences() {
    let rows = read(&fixture("edge_cases.fa")).await.unwrap();
    assert_eq!(
        rows,
        vec![
            row("chr1", Some("first chromosome"), "ACGTNacgtnRYKM"),
            row("empty1", None, ""),
            row("empty2", Some("no bases"), ""),
            row("prot", Some("protein with stop"), "MKV*LL-GAX"),
            row("crlf", Some("windows line ends"), "ACGTACGT"),
            row("last", None, "TTTT"),
        ]
    );
    let text = fs::read(fixture("edge_cases.fa")).unwrap();
    assert_eq!(rows, reference_reader(&text).unwrap());
}

#[tokio::test]
async fn a_header_without_a_name_is_an_error_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, line) in [
        ("marker.fa", &b">"[..], 1),
        ("bare.fa", b">x\nACGT\n>\nGG\n", 3),
        ("described.fa", b">x\nAC\n\n> only description\nGG\n", 4),
    ] {
        let path = write_file(&dir, name, text);
        assert_eq!(reference_reader(text), Err(line), "{name}");
        let message = read(&path).await.unwrap_err().to_string();
        let expected = format!(
            "invalid FASTA in {} at line {line}: header line has no name",
            path.display()
        );
        assert!(message.contains(&expected), "{message}");
    }
}

#[tokio::test]
async fn file_without_trailing_newline_keeps_its_last_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("a.fa", &b">a desc\nAC\nGT"[..]),
        ("b.fa", b">a desc\r\nAC\r\nGT\r"),
        ("c.fa", b">a desc"),
    ] {
        let path = write_file(&dir, name, text);
        let expected_sequence = if name == "c.fa" { "" } else { "ACGT" };
        assert_eq!(
            read(&path).await.unwrap(),
            vec![row("a", Some("desc"), expected_sequence)],
            "{name}"
        );
    }
}

#[tokio::test]
async fn empty_and_blank_files_have_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("empty.fa", &b""[..]), ("blank.fa", b"\n\r\n\n")] {
        let path = write_file(&dir, name, text);
        assert_eq!(read(&path).await.unwrap(), vec![], "{name}");
        let ctx = context(1);
        register(&ctx, "t", &path, FastaOptions::default()).await;
        let batches = ctx
            .sql("SELECT COUNT(*) AS n FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let count = batches[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(count.value(0), 0);
    }
}

#[tokio::test]
async fn long_records_and_lines_longer_than_the_read_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = Vec::new();
    let mut rng = XorShift(99);
    // 12 Mbp in 60-column lines, then one 9 MiB line, then small records.
    text.extend_from_slice(b">big one big record\n");
    for i in 0..12_000_000u64 {
        text.push(*rng.pick(b"ACGT"));
        if i % 60 == 59 {
            text.push(b'\n');
        }
    }
    text.extend_from_slice(b">wide\r\n");
    text.extend(std::iter::repeat_n(b'G', 9 << 20));
    text.extend_from_slice(b"\r\n>small\nAC\n");
    let path = write_file(&dir, "long.fa", &text);
    let options = FastaOptions {
        batch_rows: None,
        batch_bytes: 1 << 20,
        ..FastaOptions::default()
    };
    let batches = raw_batches(&path, options).await;
    let rows = rows_of(&batches);
    assert_eq!(rows, noodles_reader(&text));
    assert_eq!(rows[0].2.len(), 12_000_000);
    assert_eq!(rows[1].2.len(), 9 << 20);
    // Each record over the budget is a batch of its own.
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
}

/// 300 Mbp in one record; slow, so run with `cargo test --release -- --ignored`.
#[tokio::test]
#[ignore]
async fn single_300_mbp_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = b">chr1 300 Mbp\n".to_vec();
    let line = [b"ACGTTGCA".repeat(10), b"\n".to_vec()].concat();
    for _ in 0..(300_000_000 / 80) {
        text.extend_from_slice(&line);
    }
    let path = write_file(&dir, "chr1.fa", &text);
    drop(text);
    let ctx = context(1);
    register(&ctx, "t", &path, FastaOptions::default()).await;
    let batches = ctx
        .sql("SELECT id, length(sequence) AS n FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = batches[0]
        .column(1)
        .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
    assert_eq!(n.value(0), 300_000_000);
}

// ---------------------------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn concatenated_gzip_members_are_all_read() {
    let dir = tempfile::tempdir().unwrap();
    let first = b">a one\nACGT\nAC\n".to_vec();
    let second = b">b two\nGGGG\n>c\nT\n".to_vec();
    let mut both = gzip(&first);
    both.extend_from_slice(&gzip(&second));
    let path = write_file(&dir, "two_members.fa.gz", &both);
    let text = [first, second].concat();
    assert_eq!(read(&path).await.unwrap(), noodles_reader(&text));
    assert_eq!(read(&path).await.unwrap().len(), 3);
}

#[tokio::test]
async fn bgzf_files_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        records: 2000,
        max_len: 500,
        line_width: 60,
        crlf: false,
        blank_lines: false,
    };
    let text = generate(11, shape);
    assert!(text.len() > 4 * 65536, "spans many BGZF blocks");
    let path = dir.path().join("reads.fa.bgz");
    let mut writer = noodles_bgzf::io::Writer::new(fs::File::create(&path).unwrap());
    writer.write_all(&text).unwrap();
    writer.finish().unwrap();
    assert_eq!(read(&path).await.unwrap(), noodles_reader(&text));
}

#[tokio::test]
async fn gzip_is_detected_by_magic_bytes_whatever_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate(
        5,
        Shape {
            records: 50,
            max_len: 200,
            line_width: 70,
            crlf: false,
            blank_lines: false,
        },
    );
    let expected = noodles_reader(&text);
    for name in ["named_plain.fa", "no_extension", "odd.txt.bgzf"] {
        let path = write_file(&dir, name, &gzip(&text));
        assert_eq!(read(&path).await.unwrap(), expected, "{name}");
    }
    // And plain text named as gzip is read as plain text.
    let path = write_file(&dir, "not_really.fa.gz", &text);
    assert_eq!(read(&path).await.unwrap(), expected);
}

#[tokio::test]
async fn compressed_files_are_never_split_between_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate(
        21,
        Shape {
            records: 3000,
            max_len: 300,
            line_width: 60,
            crlf: false,
            blank_lines: false,
        },
    );
    // Named without a compression suffix, so the planner does split it by bytes.
    let path = write_file(&dir, "hidden_gzip.fa", &gzip(&text));
    let mut rows = scan(&path, FastaOptions::default(), 4).await.unwrap();
    let mut expected = noodles_reader(&text);
    rows.sort();
    expected.sort();
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn a_directory_mixes_plain_and_compressed_files() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir, "a.fa", b">a\nAC\n");
    write_file(&dir, "b.fasta.gz", &gzip(b">b\nGT\n"));
    let mut rows = read(dir.path()).await.unwrap();
    rows.sort();
    assert_eq!(rows, vec![row("a", None, "AC"), row("b", None, "GT")]);
}

// ---------------------------------------------------------------------------------------------
// Batching, projection, partitioning
// ---------------------------------------------------------------------------------------------

fn string_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.as_string::<i32>().values().len())
        .sum()
}

#[tokio::test]
async fn batches_stay_within_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate(
        31,
        Shape {
            records: 4000,
            max_len: 3000,
            line_width: 60,
            crlf: false,
            blank_lines: true,
        },
    );
    let path = write_file(&dir, "budget.fa", &text);
    let budget = 64 * 1024;
    let options = FastaOptions {
        batch_rows: None,
        batch_bytes: budget,
        ..FastaOptions::default()
    };
    let batches = raw_batches(&path, options).await;
    assert!(
        batches.len() > text.len() / budget / 2,
        "{} batches",
        batches.len()
    );
    for batch in &batches {
        assert!(
            string_bytes(batch) <= budget || batch.num_rows() == 1,
            "a batch of {} rows holds {} bytes",
            batch.num_rows(),
            string_bytes(batch)
        );
    }
    assert_eq!(rows_of(&batches), reference_reader(&text).unwrap());
}

#[tokio::test]
async fn batches_stay_within_the_row_limit() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate(
        32,
        Shape {
            records: 1000,
            max_len: 50,
            line_width: 60,
            crlf: false,
            blank_lines: false,
        },
    );
    let path = write_file(&dir, "rows.fa", &text);
    let options = FastaOptions {
        batch_rows: Some(7),
        ..FastaOptions::default()
    };
    let batches = raw_batches(&path, options).await;
    assert!(batches.iter().all(|b| b.num_rows() <= 7));
    assert_eq!(batches.len(), 1000usize.div_ceil(7));
    assert_eq!(rows_of(&batches), noodles_reader(&text));
}

#[tokio::test]
async fn projection_without_sequence_returns_exactly_the_projected_columns() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate(
        41,
        Shape {
            records: 200,
            max_len: 300,
            line_width: 60,
            crlf: true,
            blank_lines: true,
        },
    );
    let path = write_file(&dir, "proj.fa", &text);
    let expected = reference_reader(&text).unwrap();
    let ctx = context(1);
    register(&ctx, "t", &path, FastaOptions::default()).await;

    let batches = ctx
        .sql("SELECT description, id FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut got = Vec::new();
    for batch in &batches {
        let names: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["description", "id"]);
        let description = batch.column(0).as_string::<i32>();
        let id = batch.column(1).as_string::<i32>();
        for i in 0..batch.num_rows() {
            got.push((
                id.value(i).to_string(),
                description
                    .is_valid(i)
                    .then(|| description.value(i).to_string()),
            ));
        }
    }
    let want: Vec<_> = expected
        .iter()
        .map(|(i, d, _)| (i.clone(), d.clone()))
        .collect();
    assert_eq!(got, want);

    // The scan node itself reads only the projected columns.
    let plan = ctx
        .sql("SELECT id FROM t")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let batches = collect(plan, ctx.task_ctx()).await.unwrap();
    assert!(batches.iter().all(|b| b.num_columns() == 1));
    let ids: Vec<_> = batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        ids,
        expected.iter().map(|r| r.0.clone()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn count_star_and_sequence_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate(
        51,
        Shape {
            records: 777,
            max_len: 500,
            line_width: 80,
            crlf: false,
            blank_lines: true,
        },
    );
    let path = write_file(&dir, "count.fa", &text);
    let expected = reference_reader(&text).unwrap();
    let total: usize = expected.iter().map(|r| r.2.len()).sum();
    for partitions in [1, 3] {
        let ctx = context(partitions);
        register(&ctx, "t", &path, FastaOptions::default()).await;
        let batches = ctx
            .sql("SELECT COUNT(*), SUM(length(sequence)) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let count = batches[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let sum = batches[0]
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(count.value(0), 777);
        assert_eq!(sum.value(0), total as i64);
    }
}

#[tokio::test]
async fn multi_partition_scan_returns_the_same_rows_as_a_single_partition() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, crlf) in [(61, false), (62, true)] {
        let text = generate(
            seed,
            Shape {
                records: 3000,
                max_len: 700,
                line_width: 60,
                crlf,
                blank_lines: true,
            },
        );
        let path = write_file(&dir, &format!("parts_{seed}.fa"), &text);

        // The plan really is split into byte ranges.
        let shown = scan_plan(&path, 4).await;
        assert!(shown.contains("4 groups"), "{shown}");

        let single = scan(&path, FastaOptions::default(), 1).await.unwrap();
        let mut multi = scan(&path, FastaOptions::default(), 4).await.unwrap();
        assert_eq!(single, reference_reader(&text).unwrap());
        let mut single_sorted = single.clone();
        single_sorted.sort();
        multi.sort();
        assert_eq!(multi, single_sorted);
    }
}

/// Splits a small file at every byte offset into two ranges: together they must hold
/// each record exactly once, whatever the split lands on ('>', '\n', '\r', mid-line).
#[tokio::test]
async fn every_split_point_gives_each_record_to_exactly_one_range() {
    let dir = tempfile::tempdir().unwrap();
    let text = b"\n>a one\r\nAC>G\r\n\r\n>b\n>c two\nGG\nTT\n\n>>d\nA\n>e".to_vec();
    let path = write_file(&dir, "split.fa", &text);
    let expected = reference_reader(&text).unwrap();
    let size = text.len() as u64;
    for split in 0..=size {
        // Each range alone: partitions of one scan share their files.
        let rows = rows_of_ranges(&path, size, &[split]).await;
        assert_eq!(rows, expected, "split at {split}");
    }
}

/// The rows of `path` read as the byte ranges that start at `splits` (and 0), in order.
async fn rows_of_ranges(path: &Path, size: u64, splits: &[u64]) -> Vec<Row> {
    rows_per_range(path, size, splits).await.concat()
}

/// The rows each byte range of `path` returns, each range scanned alone (partitions of one
/// scan share their files, so one partition may read every range).
async fn rows_per_range(path: &Path, size: u64, splits: &[u64]) -> Vec<Vec<Row>> {
    let location = path.to_str().unwrap().to_string();
    let mut bounds = vec![0];
    bounds.extend_from_slice(splits);
    bounds.push(size);
    let ctx = SessionContext::new();
    let mut rows = Vec::new();
    for w in bounds.windows(2) {
        let group = FileGroup::new(vec![PartitionedFile::new_with_range(
            location.clone(),
            size,
            w[0] as i64,
            w[1] as i64,
        )]);
        let source = Arc::new(FastaSource::new(fasta_schema(), FastaOptions::default()));
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
            .with_file_groups(vec![group])
            .build();
        let exec: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        let stream = exec.execute(0, ctx.task_ctx()).unwrap();
        let batches: Vec<RecordBatch> = stream.map(|b| b.unwrap()).collect().await;
        rows.push(rows_of(&batches));
    }
    rows
}

/// Splits a BGZF file of small blocks (one of them empty) at every compressed byte: the two
/// ranges together hold each record exactly once, in file order.
#[tokio::test]
async fn every_split_point_of_a_bgzf_file_gives_each_record_to_exactly_one_range() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        b"\n>a one\r\nAC>G\r\n\r\n>b\n>c two\nGG\nTT\n\n>>d\nA\n>e\nACGTACGT\n>f\nT".to_vec();
    let expected = reference_reader(&text).unwrap();
    for block in [1, 3, 7] {
        let bytes = bgzf_blocks(&text, block, 2);
        let path = write_file(&dir, &format!("split_{block}.fa.gz"), &bytes);
        let size = bytes.len() as u64;
        for split in 0..=size {
            let rows = rows_of_ranges(&path, size, &[split]).await;
            assert_eq!(rows, expected, "blocks of {block} bytes, split at {split}");
        }
        // Three ranges, at a spread of points.
        for first in (1..size).step_by(17) {
            let second = (first + size / 3).min(size);
            let rows = rows_of_ranges(&path, size, &[first, second]).await;
            assert_eq!(
                rows, expected,
                "blocks of {block}, splits at {first} and {second}"
            );
        }
    }
}

/// A BGZF file of many 64 KiB blocks is scanned by several partitions, each reading its own
/// blocks, and they return every record once, as noodles reads them.
#[tokio::test]
async fn bgzf_files_are_split_between_partitions_by_block() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        records: 4000,
        max_len: 800,
        line_width: 60,
        crlf: false,
        blank_lines: true,
    };
    let text = generate(12, shape);
    let path = dir.path().join("split.fa.gz");
    let mut writer = noodles_bgzf::io::Writer::new(fs::File::create(&path).unwrap());
    writer.write_all(&text).unwrap();
    writer.finish().unwrap();
    let size = fs::metadata(&path).unwrap().len();
    assert!(size > 2 * 65536, "many blocks");

    let splits = [size / 4, size / 2, 3 * size / 4];
    let per_range = rows_per_range(&path, size, &splits).await;
    // Each range reads records of its own (about a quarter each).
    for (i, rows) in per_range.iter().enumerate() {
        assert!(
            rows.len() > 4000 / 8,
            "range {i} read {} records",
            rows.len()
        );
    }
    assert_eq!(per_range.concat(), noodles_reader(&text));

    // The planner splits it although it is named .gz: it is BGZF.
    let shown = scan_plan(&path, 4).await;
    assert!(shown.contains("4 groups"), "{shown}");

    let mut multi = scan(&path, FastaOptions::default(), 4).await.unwrap();
    let mut expected = noodles_reader(&text);
    multi.sort();
    expected.sort();
    assert_eq!(multi, expected);
}

// ---------------------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_input_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 7] = [
        (
            "before_header.fa",
            b"\n\nACGT\n>a\nAC\n",
            "at line 3: expected a header line",
        ),
        (
            "nul.fa",
            b">a\nACGT\nAC\0T\n>b\nAA\n",
            "at line 3: sequence line contains byte 0x00",
        ),
        (
            "space.fa",
            b">a\nACGT\r\nAC GT\r\n",
            "at line 3: sequence line contains byte 0x20",
        ),
        (
            "latin1.fa",
            b">a\nAC\n>caf\xe9 x\nAC\n",
            "at line 3: header line is not valid UTF-8",
        ),
        (
            "control.fa",
            b">a\x01b\nAC\n",
            "at line 1: header line contains control byte 0x01",
        ),
        (
            "binary.fa",
            b">a\nAC\n\x7fELF\x02\x01\x01\0\0\0",
            "at line 3: sequence line contains byte 0x7f",
        ),
        (
            "utf8_seq.fa",
            b">a\nAC\xc3\xa9\n",
            "at line 2: sequence line contains byte 0xc3",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write_file(&dir, name, text);
        let message = read(&path).await.unwrap_err().to_string();
        let wanted = format!("invalid FASTA in {} {expected}", path.display());
        assert!(
            message.contains(&wanted),
            "{name}: {message}\nwanted: {wanted}"
        );
        // The error does not depend on the projection.
        let ctx = context(1);
        register(&ctx, "t", &path, FastaOptions::default()).await;
        let result = ctx
            .sql("SELECT COUNT(*) FROM t")
            .await
            .unwrap()
            .collect()
            .await;
        assert!(result.is_err(), "{name}: COUNT(*) succeeded");
    }
}

#[tokio::test]
async fn malformed_gzip_input_names_the_line_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, "bad.fa.gz", &gzip(b">a\nAC\nA\0\n"));
    let message = read(&path).await.unwrap_err().to_string();
    assert!(message.contains("bad.fa.gz at line 3"), "{message}");
    let path = write_file(&dir, "truncated.fa.gz", &gzip(b">a\nACGT\n")[..12]);
    let message = read(&path).await.unwrap_err().to_string();
    assert!(message.contains("truncated.fa.gz"), "{message}");
}

/// The [`FastaError`] behind a failed scan.
fn fasta_error(error: &DataFusionError) -> &FastaError {
    match error.find_root() {
        DataFusionError::External(inner) => inner
            .downcast_ref::<FastaError>()
            .unwrap_or_else(|| panic!("not a FASTA error: {error}")),
        root => panic!("not a FASTA error: {root}"),
    }
}

#[tokio::test]
async fn malformed_text_and_corrupt_or_truncated_gzip_are_the_clients_fault() {
    let dir = tempfile::tempdir().unwrap();
    let text = b">a first\nACGT\n>b\nAC\n";
    let mut corrupt = gzip(text);
    // Past the 10-byte gzip header: the deflate data itself is damaged.
    for byte in &mut corrupt[10..14] {
        *byte = 0xff;
    }
    // The malformed text is an invalid-FASTA error, the damaged streams are read errors.
    let cases = [
        ("bad.fa", b">a\nAC GT\n".to_vec(), "invalid FASTA in"),
        ("corrupt.fa.gz", corrupt, "cannot read FASTA file"),
        (
            "truncated.fa.gz",
            gzip(text)[..12].to_vec(),
            "cannot read FASTA file",
        ),
    ];
    for (name, bytes, kind) in cases {
        let path = write_file(&dir, name, &bytes);
        let error = read(&path).await.unwrap_err();
        let fasta = fasta_error(&error);
        let message = fasta.to_string();
        assert!(message.starts_with(kind), "{name}: {message}");
        assert!(message.contains(name), "{name}: {message}");
        assert!(fasta.is_client_fault(), "{name}: {fasta:?}");
    }
}

/// Random bytes, biased towards FASTA's own characters: never a panic, and the same verdict
/// (rows or the line of the first error) as the reference reader.
#[tokio::test]
async fn random_input_never_panics_and_agrees_with_the_reference_reader() {
    let dir = tempfile::tempdir().unwrap();
    let alphabet: &[u8] = b">>>\n\n\n\r ACGTacgtN*-\t\0\x01\x7f\xc3\xa9\xff";
    for seed in 1..=400u64 {
        let mut rng = XorShift(seed * 7919);
        let len = rng.below(300) as usize;
        let mut text: Vec<u8> = if rng.below(2) == 0 {
            b">".to_vec()
        } else {
            Vec::new()
        };
        for _ in 0..len {
            if rng.below(8) == 0 {
                text.push(rng.next() as u8);
            } else {
                text.push(*rng.pick(alphabet));
            }
        }
        let path = write_file(&dir, &format!("garbage_{seed}.fa"), &text);
        let ours = read(&path).await;
        match (ours, reference_reader(&text)) {
            (Ok(rows), Ok(expected)) => assert_eq!(rows, expected, "seed {seed}"),
            (Err(error), Err(line)) => {
                let message = error.to_string();
                assert!(
                    message.contains(&format!("at line {line}:")),
                    "seed {seed}: {message}"
                );
            }
            (ours, reference) => panic!("seed {seed}: ours {ours:?}, reference {reference:?}"),
        }
        // Split scans must not panic either.
        let _ = scan(&path, FastaOptions::default(), 3).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Registration and options
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_external_table_stored_as_fasta_with_options() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, "sql.fa", b">a x\nAC\n>b\nGGG\n");
    let mut state = SessionStateBuilder::new().with_default_features().build();
    state
        .register_file_format(
            Arc::new(FastaFormatFactory::new(FastaOptions::default())),
            true,
        )
        .unwrap();
    state.table_factories_mut().insert(
        "FASTA".to_string(),
        Arc::new(datafusion::datasource::listing_table_factory::ListingTableFactory::new()),
    );
    let ctx = SessionContext::new_with_state(state);
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE t STORED AS FASTA LOCATION '{}' OPTIONS ('batch_bytes' '1MiB', 'format.batch_rows' '10')",
        path.display()
    ))
    .await
    .unwrap();
    let batches = ctx
        .sql("SELECT id, description, sequence FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        rows_of(&batches),
        vec![row("a", Some("x"), "AC"), row("b", None, "GGG")]
    );

    let error = ctx
        .sql(&format!(
            "CREATE EXTERNAL TABLE u STORED AS FASTA LOCATION '{}' OPTIONS ('batch_size' '10')",
            path.display()
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unknown FASTA option 'format.batch_size'"),
        "{error}"
    );
    let error = ctx
        .sql(&format!(
            "CREATE EXTERNAL TABLE v STORED AS FASTA LOCATION '{}' OPTIONS ('batch_bytes' 'lots')",
            path.display()
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("invalid value 'lots' for FASTA option 'format.batch_bytes'"),
        "{error}"
    );
}

#[test]
fn fasta_paths_are_recognised_for_directory_listings() {
    assert!(is_fasta_path("/data/hg38.fa.gz"));
    assert!(is_fasta_path("proteins.faa"));
    assert!(!is_fasta_path("/data/reads.fq.gz"));
    assert!(!is_fasta_path("notes.txt"));
}

#[tokio::test]
async fn dropping_a_scan_early_stops_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate(
        71,
        Shape {
            records: 20000,
            max_len: 400,
            line_width: 60,
            crlf: false,
            blank_lines: false,
        },
    );
    let path = write_file(&dir, "early.fa", &text);
    let ctx = context(1);
    let options = FastaOptions {
        batch_rows: Some(10),
        ..FastaOptions::default()
    };
    register(&ctx, "t", &path, options).await;
    let mut stream = ctx
        .sql("SELECT * FROM t")
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.num_rows(), 10);
    drop(stream);
    // The reader thread notices the closed channel; nothing to wait for here but no hang
    // or panic in the runtime shutting down with it.
}

// ---------------------------------------------------------------------------------------------
// Memory limit
// ---------------------------------------------------------------------------------------------

/// A session whose memory pool is the server's, limited to `mib` MiB.
fn limited_context(mib: u64) -> SessionContext {
    let runtime =
        flightbear::catalog::runtime::runtime_env(flightbear::bytesize::ByteSize::mib(mib), None)
            .unwrap();
    SessionContext::new_with_config_rt(SessionConfig::new().with_target_partitions(1), runtime)
}

/// `records` records of `bases` bases each, in 60-column lines.
fn uniform_records(records: usize, bases: usize) -> Vec<u8> {
    let mut text = Vec::new();
    let line = [b'C'; 60];
    for i in 0..records {
        writeln!(text, ">r{i} record {i}").unwrap();
        for start in (0..bases).step_by(60) {
            text.extend_from_slice(&line[..60.min(bases - start)]);
            text.push(b'\n');
        }
    }
    text
}

#[tokio::test]
async fn a_record_larger_than_the_memory_limit_fails_with_resources_exhausted() {
    let dir = TempDir::new().unwrap();
    let path = write_file(&dir, "big.fa.gz", &gzip(&uniform_records(1, 24 << 20)));
    let ctx = limited_context(16);
    register(&ctx, "t", &path, FastaOptions::default()).await;
    let error = ctx
        .sql("SELECT length(sequence) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(
        matches!(error.find_root(), DataFusionError::ResourcesExhausted(_)),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("memory limit of 16MiB"), "{message}");
    assert!(message.contains("FASTA reader"), "{message}");
    assert!(message.contains("big.fa.gz"), "{message}");
    assert_all_released(&ctx.runtime_env().memory_pool).await;
}

/// The reader thread ends shortly after its stream: its reservation then goes back to the pool.
async fn assert_all_released(pool: &Arc<dyn datafusion::execution::memory_pool::MemoryPool>) {
    for _ in 0..500 {
        if pool.reserved() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{} bytes still reserved", pool.reserved());
}

#[tokio::test]
async fn records_larger_than_the_memory_limit_in_total_stream_within_it() {
    // 48 MiB of records through a 16 MiB pool in 1 MiB batches.
    let dir = TempDir::new().unwrap();
    let path = write_file(&dir, "many.fa", &uniform_records(768, 64 << 10));
    let ctx = limited_context(16);
    let options = FastaOptions {
        batch_bytes: 1 << 20,
        ..FastaOptions::default()
    };
    register(&ctx, "t", &path, options).await;
    let pool = Arc::clone(&ctx.runtime_env().memory_pool);
    let mut stream = ctx
        .sql("SELECT id, sequence FROM t")
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    let (mut rows, mut bases, mut peak) = (0, 0, 0);
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        // The batch in hand has left the scan (its holder accounts for it; this test holds no
        // reservation), so what is reserved now is the reader's next batch, if any.
        peak = peak.max(pool.reserved());
        rows += batch.num_rows();
        bases += batch.column(1).as_string::<i32>().value_data().len();
    }
    assert_eq!((rows, bases), (768, 768 << 16));
    assert!(peak <= 16 << 20, "peak reservation {peak}");
    drop(stream);
    assert_all_released(&pool).await;
}

#[tokio::test]
async fn the_scan_reserves_in_the_pool_of_the_session_that_planned_it() {
    let ctx = limited_context(64);
    let dir = TempDir::new().unwrap();
    let path = write_file(&dir, "a.fa", b">a\nACGT\n");
    register(&ctx, "t", &path, FastaOptions::default()).await;
    let plan = ctx
        .sql("SELECT * FROM t")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let mut sources = Vec::new();
    find_fasta_sources(&plan, &mut sources);
    assert_eq!(sources.len(), 1);
    let pool = sources[0]
        .memory_pool()
        .expect("the planned scan has the session's pool");
    assert!(Arc::ptr_eq(pool, &ctx.runtime_env().memory_pool));
}

fn find_fasta_sources(plan: &Arc<dyn ExecutionPlan>, found: &mut Vec<FastaSource>) {
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>()
        && let Some((_, source)) = exec.downcast_to_file_source::<FastaSource>()
    {
        found.push(source.clone());
    }
    for child in plan.children() {
        find_fasta_sources(child, found);
    }
}

// ---------------------------------------------------------------------------------------------
// Index lookups: WHERE id = / IN and COUNT(*) through a .fai (and .gzi)
// ---------------------------------------------------------------------------------------------

/// `text` without its records that have no bases (samtools leaves those out of a `.fai`).
fn without_empty_records(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let next_is_header = lines.get(i + 1).is_none_or(|next| next.starts_with(b">"));
        if !(line.starts_with(b">") && next_is_header) {
            out.extend_from_slice(line);
        }
    }
    out
}

/// The rows of `sql` over the table `t` of `path`, sorted.
async fn query(path: &Path, sql: &str, partitions: usize) -> Result<Vec<Row>> {
    let ctx = context(partitions);
    register(&ctx, "t", path, FastaOptions::default()).await;
    let mut rows = rows_of(&ctx.sql(sql).await?.collect().await?);
    rows.sort();
    Ok(rows)
}

/// The physical plan of `sql` over the table `t` of `path`, as text.
async fn plan_of(path: &Path, sql: &str, partitions: usize) -> String {
    let ctx = context(partitions);
    register(&ctx, "t", path, FastaOptions::default()).await;
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string()
}

async fn count(path: &Path) -> i64 {
    let ctx = context(2);
    register(&ctx, "t", path, FastaOptions::default()).await;
    let batches = ctx
        .sql("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
        .value(0)
}

/// (id, description, length) rows of `sql` (which selects those, the length as Int32), sorted.
async fn length_rows(
    path: &Path,
    sql: &str,
    partitions: usize,
) -> Result<Vec<(String, Option<String>, i32)>> {
    let ctx = context(partitions);
    register(&ctx, "t", path, FastaOptions::default()).await;
    let mut rows = Vec::new();
    for batch in ctx.sql(sql).await?.collect().await? {
        let id = batch.column(0).as_string::<i32>();
        let description = batch.column(1).as_string::<i32>();
        let length = batch
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        for i in 0..batch.num_rows() {
            rows.push((
                id.value(i).to_string(),
                description
                    .is_valid(i)
                    .then(|| description.value(i).to_string()),
                length.value(i),
            ));
        }
    }
    rows.sort();
    Ok(rows)
}

fn expected_lengths(rows: &[Row]) -> Vec<(String, Option<String>, i32)> {
    let mut lengths: Vec<_> = rows
        .iter()
        .map(|(id, description, sequence)| (id.clone(), description.clone(), sequence.len() as i32))
        .collect();
    lengths.sort();
    lengths
}

fn id_list(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn index_lookups_match_the_reference_reader_in_plain_and_bgzf_files() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (21, 60, false, false, true),
        (22, 7, true, false, true),
        (23, 50, false, true, true),
        (24, 13, true, true, false),
        (25, 60, false, false, false),
    ];
    for (seed, line_width, crlf, bgzf, final_newline) in cases {
        let shape = Shape {
            records: 300,
            max_len: 400,
            line_width,
            crlf,
            blank_lines: false,
        };
        let mut text = without_empty_records(&generate(seed, shape));
        if !final_newline {
            while text.last().is_some_and(|b| b.is_ascii_whitespace()) {
                text.pop();
            }
        }
        let name = format!("indexed{seed}.fa");
        let path = if bgzf {
            write_file(&dir, &format!("{name}.gz"), &bgzf_blocks(&text, 1000, 3))
        } else {
            write_file(&dir, &name, &text)
        };
        flightbear::fasta::index::index_file(&path).unwrap();
        let expected = reference_reader(&text).unwrap();
        let names: Vec<&str> = expected.iter().map(|row| row.0.as_str()).collect();
        let mut rng = XorShift(seed);
        for round in 0..4 {
            let mut wanted: Vec<&str> = (0..1 + round * 3).map(|_| *rng.pick(&names)).collect();
            // The last record, the first, and a name the file does not have.
            wanted.extend([names[names.len() - 1], names[0], "absent"]);
            let mut rows: Vec<Row> = expected
                .iter()
                .filter(|row| wanted.contains(&row.0.as_str()))
                .cloned()
                .collect();
            rows.sort();
            let sql = format!("SELECT * FROM t WHERE id IN ({})", id_list(&wanted));
            for partitions in [1, 3] {
                assert_eq!(
                    query(&path, &sql, partitions).await.unwrap(),
                    rows,
                    "seed {seed}, {partitions} partitions, {sql}"
                );
            }
        }
        let one = format!("SELECT * FROM t WHERE id = '{}'", names[5]);
        let rows: Vec<Row> = expected
            .iter()
            .filter(|r| r.0 == names[5])
            .cloned()
            .collect();
        assert_eq!(query(&path, &one, 2).await.unwrap(), rows);
        assert!(
            plan_of(&path, &one, 2).await.contains("index_lookup_ids=1"),
            "{}",
            plan_of(&path, &one, 2).await
        );
        // length(sequence) from the index, with and without a lookup.
        let all = "SELECT id, description, length(sequence) FROM t";
        for partitions in [1, 3] {
            assert_eq!(
                length_rows(&path, all, partitions).await.unwrap(),
                expected_lengths(&expected),
                "seed {seed}, {partitions} partitions"
            );
        }
        let some = format!("{all} WHERE id IN ({})", id_list(&names[..3]));
        assert_eq!(
            length_rows(&path, &some, 2).await.unwrap(),
            expected_lengths(&expected[..3])
        );
        let plan = plan_of(&path, all, 2).await;
        assert!(plan.contains("lengths_from_index"), "{plan}");
        // COUNT(*) is the index's record count: no scan in the plan.
        assert_eq!(count(&path).await, expected.len() as i64, "seed {seed}");
        let plan = plan_of(&path, "SELECT COUNT(*) FROM t", 2).await;
        assert!(!plan.contains("DataSourceExec"), "{plan}");
    }
}

/// Makes the index of `path` newer than the file, whatever was written to either since.
fn touch_index(path: &Path) {
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(path.with_added_extension("fai"))
        .unwrap()
        .set_modified(later)
        .unwrap();
}

/// Rewrites byte `at` of `path` keeping its length; its index stays newer than it.
fn poke(path: &Path, at: usize, byte: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] = byte;
    fs::write(path, bytes).unwrap();
    touch_index(path);
}

#[tokio::test]
async fn index_lookups_read_only_the_named_records() {
    let dir = tempfile::tempdir().unwrap();
    let text = b">good first\nACGTACGT\nACG\n>bad\nACGTACGT\nACGTACGT\n>last x\nGGGG\n";
    let path = write_file(&dir, "poisoned.fa", text);
    flightbear::fasta::index::index_file(&path).unwrap();
    // A byte no FASTA sequence may hold, in line 6 (record `bad`), after indexing.
    let line_6: usize = text
        .split_inclusive(|&b| b == b'\n')
        .take(5)
        .map(<[u8]>::len)
        .sum();
    assert_eq!(&text[line_6..line_6 + 8], b"ACGTACGT");
    poke(&path, line_6 + 2, 0x01);
    // A scan of the whole file meets the byte...
    let error = query(&path, "SELECT * FROM t", 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 6"), "{error}");
    // ...a lookup of the other records never reads it...
    let rows = query(&path, "SELECT * FROM t WHERE id IN ('good', 'last')", 2)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            row("good", Some("first"), "ACGTACGTACG"),
            row("last", Some("x"), "GGGG")
        ]
    );
    // ...nor does length(sequence), which the index holds...
    assert_eq!(
        length_rows(&path, "SELECT id, description, length(sequence) FROM t", 2)
            .await
            .unwrap(),
        vec![
            ("bad".to_string(), None, 16),
            ("good".to_string(), Some("first".to_string()), 11),
            ("last".to_string(), Some("x".to_string()), 4)
        ]
    );
    // ...and a lookup of `bad` reports it where a scan from the start finds it.
    let error = query(&path, "SELECT * FROM t WHERE id = 'bad'", 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 6"), "{error}");
}

#[tokio::test]
async fn indexes_that_do_not_describe_the_file_are_not_used() {
    let dir = tempfile::tempdir().unwrap();
    // samtools leaves out records without bases and keeps the first of repeated names.
    let text = b">a\nACGT\n>empty\n>b\nGG\n>a again\nTT\n>c\nCCC\n";
    let path = write_file(&dir, "partial.fa", text);
    flightbear::fasta::index::index_file(&path).unwrap();
    let expected = reference_reader(text).unwrap();
    assert_eq!(count(&path).await, 5);
    for (sql, ids) in [
        ("SELECT * FROM t WHERE id = 'empty'", vec!["empty"]),
        ("SELECT * FROM t WHERE id IN ('a', 'c')", vec!["a", "c"]),
    ] {
        let mut rows: Vec<Row> = expected
            .iter()
            .filter(|r| ids.contains(&r.0.as_str()))
            .cloned()
            .collect();
        rows.sort();
        assert_eq!(query(&path, sql, 2).await.unwrap(), rows, "{sql}");
    }

    assert_eq!(
        length_rows(&path, "SELECT id, description, length(sequence) FROM t", 2)
            .await
            .unwrap(),
        expected_lengths(&expected)
    );

    // Indexes that are not what they claim: wrong numbers, garbage, nothing.
    let claims = [
        "a\t99999999999\t3\t4\t5\nb\t2\t11\t2\t3\n",
        "a\t4\t3\t4\t5\nb\t2\t99999999999999999\t2\t3\n",
        "a\tx\t3\t4\t5\n",
        "a\t4\t3\t0\t5\n",
        "a\t4\t3\t4\t5\n",
        "b\t2\t11\t2\t3\na\t4\t3\t4\t5\nb\t2\t11\t2\t3\n",
        "",
    ];
    for (n, fai) in claims.into_iter().enumerate() {
        let path = write_file(&dir, &format!("claims{n}.fa"), b">a\nACGT\n>b\nGG\n");
        fs::write(path.with_added_extension("fai"), fai).unwrap();
        touch_index(&path);
        let both = vec![row("a", None, "ACGT"), row("b", None, "GG")];
        let sql = "SELECT * FROM t WHERE id IN ('a', 'b')";
        assert_eq!(query(&path, sql, 2).await.unwrap(), both, "{fai:?}");
        assert_eq!(count(&path).await, 2, "{fai:?}");
        let lengths = "SELECT id, description, length(sequence) FROM t";
        assert_eq!(
            length_rows(&path, lengths, 2).await.unwrap(),
            vec![("a".to_string(), None, 4), ("b".to_string(), None, 2)],
            "{fai:?}"
        );
    }

    // A record added after indexing: the index is older than the file.
    let complete = write_file(&dir, "grown.fa", b">a\nACGT\n>b\nGG\n");
    flightbear::fasta::index::index_file(&complete).unwrap();
    assert_eq!(count(&complete).await, 2);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut file = fs::File::options().append(true).open(&complete).unwrap();
    file.write_all(b">new\nTTT\n").unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(file);
    assert_eq!(count(&complete).await, 3);
    assert_eq!(
        query(&complete, "SELECT * FROM t WHERE id = 'new'", 1)
            .await
            .unwrap(),
        vec![row("new", None, "TTT")]
    );

    // An index whose records are not where it says (edited with its time kept).
    let moved = write_file(&dir, "moved.fa", b">a\nACGT\n>b\nGG\n");
    flightbear::fasta::index::index_file(&moved).unwrap();
    fs::write(&moved, b">a\nACG\n>b\nGGG\n").unwrap();
    touch_index(&moved);
    assert_eq!(
        query(&moved, "SELECT * FROM t WHERE id IN ('a', 'b')", 1)
            .await
            .unwrap(),
        vec![row("a", None, "ACG"), row("b", None, "GGG")]
    );
    assert_eq!(count(&moved).await, 2);
}
