//! FASTQ tables through DataFusion, checked against noodles-fastq as the reference reader:
//! whole files, every split point of byte ranges (plain and BGZF), multi-member gzip, errors.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl, PartitionedFile,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use flightbear::fasta::{FastaFormat, FastaOptions, FastaSource, SequenceFormat, fastq_schema};
use futures::StreamExt;

mod common;
use common::XorShift;
use common::files::{bgzf_blocks, gzip, write_file};

type Row = (String, Option<String>, String, String);

fn fastq() -> FastaOptions {
    FastaOptions {
        format: SequenceFormat::Fastq,
        ..FastaOptions::default()
    }
}

/// noodles-fastq's reading of `text`, the description trimmed and NULL when empty (as
/// flightbear's FASTA and FASTQ tables give it).
fn noodles_rows(text: &[u8]) -> Vec<Row> {
    let mut reader = noodles_fastq::io::Reader::new(text);
    let string = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
    reader
        .records()
        .map(|record| {
            let record = record.expect("noodles reads the fixture");
            let description = string(record.description()).trim().to_owned();
            (
                string(record.name()),
                (!description.is_empty()).then_some(description),
                string(record.sequence()),
                string(record.quality_scores()),
            )
        })
        .collect()
}

/// Random valid FASTQ: descriptions, empty reads, quality lines that often start with `@`
/// (and `+`), `+` lines that repeat the header, optionally CRLF line ends.
fn generate(seed: u64, records: usize, max_len: u64, crlf: bool) -> Vec<u8> {
    let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let newline: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut out = Vec::new();
    for r in 0..records {
        let mut header = format!("read{r}_{}", rng.below(1000));
        match rng.below(3) {
            0 => {}
            1 => header.push_str(" 1:N:0:ACGT"),
            _ => header.push_str("\tlength=7  x "),
        }
        write!(out, "@{header}").unwrap();
        out.extend_from_slice(newline);
        let len = if rng.below(12) == 0 {
            0
        } else {
            1 + rng.below(max_len)
        };
        for _ in 0..len {
            out.push(*rng.pick(b"ACGTNacgtn"));
        }
        out.extend_from_slice(newline);
        out.push(b'+');
        if rng.below(4) == 0 {
            out.extend_from_slice(header.as_bytes());
        }
        out.extend_from_slice(newline);
        for i in 0..len {
            let score = match (i, rng.below(3)) {
                (0, 0) => b'@',
                (0, 1) => b'+',
                _ => b'!' + rng.below(94) as u8,
            };
            out.push(score);
        }
        out.extend_from_slice(newline);
    }
    out
}

fn context(target_partitions: usize) -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(target_partitions)
        .with_repartition_file_scans(true)
        .with_repartition_file_min_size(64);
    SessionContext::new_with_config(config)
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in batches {
        let [id, description, sequence, quality] =
            [0, 1, 2, 3].map(|i| batch.column(i).as_string::<i32>());
        for i in 0..batch.num_rows() {
            rows.push((
                id.value(i).to_owned(),
                description
                    .is_valid(i)
                    .then(|| description.value(i).to_owned()),
                sequence.value(i).to_owned(),
                quality.value(i).to_owned(),
            ));
        }
    }
    rows
}

/// Every row of the file at `path` scanned with `partitions` partitions, in file order.
async fn scan(path: &Path, partitions: usize) -> Result<Vec<Row>> {
    let ctx = context(partitions);
    let listing = ListingOptions::new(Arc::new(FastaFormat::new(fastq()))).with_file_extension("");
    let url = ListingTableUrl::parse(path.to_str().unwrap()).unwrap();
    let config = ListingTableConfig::new(url)
        .with_listing_options(listing)
        .with_schema(fastq_schema());
    ctx.register_table("t", Arc::new(ListingTable::try_new(config).unwrap()))?;
    let batches = ctx
        .sql("SELECT id, description, sequence, quality FROM t")
        .await?
        .collect()
        .await?;
    let mut rows = rows_of(&batches);
    if partitions > 1 {
        // Partitions finish in any order; ids are unique, so sorting restores a comparable order.
        rows.sort();
    }
    Ok(rows)
}

/// The rows each byte range of `path` returns, each range scanned alone.
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
        let source = Arc::new(FastaSource::new(fastq_schema(), fastq()));
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

#[tokio::test]
async fn random_files_match_noodles_with_one_and_several_partitions() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, crlf) in [(1, false), (2, true), (3, false)] {
        let text = generate(seed, 400, 300, crlf);
        let expected = noodles_rows(&text);
        assert_eq!(expected.len(), 400);
        let path = write_file(&dir, &format!("random_{seed}.fq"), &text);
        assert_eq!(scan(&path, 1).await.unwrap(), expected, "seed {seed}");
        let mut sorted = expected.clone();
        sorted.sort();
        assert_eq!(
            scan(&path, 3).await.unwrap(),
            sorted,
            "seed {seed}, 3 partitions"
        );
    }
}

#[tokio::test]
async fn every_split_point_gives_each_record_to_exactly_one_range() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, crlf) in [(7, false), (8, true)] {
        let text = generate(seed, 12, 20, crlf);
        let expected = noodles_rows(&text);
        let path = write_file(&dir, &format!("split_{seed}.fq"), &text);
        let size = text.len() as u64;
        for split in 0..=size {
            let rows = rows_per_range(&path, size, &[split]).await.concat();
            assert_eq!(rows, expected, "seed {seed}, split at {split}");
        }
    }
}

#[tokio::test]
async fn every_split_point_of_a_bgzf_file_gives_each_record_to_exactly_one_range() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate(11, 8, 12, false);
    let expected = noodles_rows(&text);
    for block in [5, 23] {
        let bytes = bgzf_blocks(&text, block, 2);
        let path = write_file(&dir, &format!("split_{block}.fastq.gz"), &bytes);
        let size = bytes.len() as u64;
        for split in 0..=size {
            let rows = rows_per_range(&path, size, &[split]).await.concat();
            assert_eq!(rows, expected, "blocks of {block} bytes, split at {split}");
        }
    }
}

#[tokio::test]
async fn bgzf_files_are_read_by_several_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate(12, 3000, 200, false);
    let bytes = bgzf_blocks(&text, 60_000, 1);
    let path = write_file(&dir, "reads.fq.bgz", &bytes);
    let size = bytes.len() as u64;
    let ranges = rows_per_range(&path, size, &[size / 4, size / 2, 3 * size / 4]).await;
    assert!(
        ranges.iter().all(|rows| !rows.is_empty()),
        "each range reads its own blocks"
    );
    assert_eq!(ranges.concat(), noodles_rows(&text));
    let mut sorted = noodles_rows(&text);
    sorted.sort();
    assert_eq!(scan(&path, 4).await.unwrap(), sorted);
}

#[tokio::test]
async fn multi_member_gzip_is_read_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate(21, 900, 150, false);
    // Members cut at arbitrary bytes, even inside records and lines.
    let cuts = [0, 1234, 1235, text.len() / 2, text.len() - 7, text.len()];
    let mut bytes = Vec::new();
    for w in cuts.windows(2) {
        bytes.extend_from_slice(&gzip(&text[w[0]..w[1]]));
    }
    let path = write_file(&dir, "members.fq.gz", &bytes);
    let rows = scan(&path, 1).await.unwrap();
    assert_eq!(rows.len(), 900);
    assert_eq!(rows, noodles_rows(&text));
    // Any name: compression is found from the first bytes.
    let path = write_file(&dir, "members.fastq", &bytes);
    assert_eq!(scan(&path, 2).await.unwrap().len(), 900);
}

#[tokio::test]
async fn malformed_files_fail_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = generate(31, 50, 40, false);
    text.extend_from_slice(b"@last\nACGT\n+\nIII\n");
    let lines = text.iter().filter(|&&b| b == b'\n').count();
    let path = write_file(&dir, "bad.fq", &text);
    let message = scan(&path, 1).await.unwrap_err().to_string();
    let expected = format!(
        "invalid FASTQ in {} at line {lines}: quality line has 3 characters but the sequence has 4",
        path.display()
    );
    assert!(message.contains(&expected), "{message}");
    let path = write_file(&dir, "cut.fq.gz", &gzip(&text[..text.len() - 9]));
    let message = scan(&path, 1).await.unwrap_err().to_string();
    assert!(
        message.contains("the file ends inside a record"),
        "{message}"
    );
}

/// The error each byte range of `path` ends with (`None` for a range that reads cleanly).
async fn range_errors(path: &Path, size: u64, split: u64) -> Vec<Option<String>> {
    let location = path.to_str().unwrap().to_string();
    let ctx = SessionContext::new();
    let mut errors = Vec::new();
    for (start, end) in [(0, split), (split, size)] {
        let group = FileGroup::new(vec![PartitionedFile::new_with_range(
            location.clone(),
            size,
            start as i64,
            end as i64,
        )]);
        let source = Arc::new(FastaSource::new(fastq_schema(), fastq()));
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
            .with_file_groups(vec![group])
            .build();
        let exec: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        let mut stream = exec.execute(0, ctx.task_ctx()).unwrap();
        let mut error = None;
        while let Some(batch) = stream.next().await {
            if let Err(e) = batch {
                error = Some(e.to_string());
                break;
            }
        }
        errors.push(error);
    }
    errors
}

#[tokio::test]
async fn one_malformed_file_gives_one_message_however_it_is_split() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = generate(51, 20, 30, false);
    text.extend_from_slice(b"@bad1\nACGT\n+\nIII\n");
    text.extend_from_slice(&generate(52, 20, 30, false));
    text.extend_from_slice(b"@bad2\nAC\n-\nII\n");
    text.extend_from_slice(&generate(53, 5, 30, false));
    let path = write_file(&dir, "two_bad.fq", &text);
    let whole = scan(&path, 1).await.unwrap_err().to_string();
    assert!(whole.contains("quality line has 3 characters"), "{whole}");
    assert!(whole.contains(" at line "), "{whole}");
    let size = text.len() as u64;
    for split in (1..size).step_by(37) {
        for error in range_errors(&path, size, split).await.into_iter().flatten() {
            assert_eq!(error, whole, "split at {split}");
        }
    }
}
