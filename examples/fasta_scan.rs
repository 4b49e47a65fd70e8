//! Benchmark of the FASTA format: `SELECT COUNT(*), SUM(length(sequence))` through DataFusion.
//!
//! ```text
//! cargo run --release --example fasta_scan -- [--generate DIR] [--runs N] [--memory-limit SIZE] [FILES...]
//! ```
//!
//! `--memory-limit` runs the scans under the server's memory pool of that size (the reader then
//! reserves every buffer in it); without it the session's pool has no limit.
//!
//! Without FILES it generates (once) two files under DIR (default `bench-data/`): ~200 MB of
//! long records (8 x 25 Mbp, 60/80-column lines) and ~300 MB of 150 bp short reads with
//! descriptions, then scans each with one partition and with one partition per core.
//! Throughput is file bytes divided by the best wall time of N runs (default 5).
//!
//! It also gzips the short reads once (`short_reads.fa.gz`, level 6) and compares the scan of the
//! gzipped file with a single-thread gunzip of it (flate2 with zlib-rs, into a sink) in the same
//! run: compressed MB/s of each and their ratio. The scan decompresses on a thread of its own,
//! so it can approach the gunzip limit. Finally it BGZF-compresses the short reads
//! (`short_reads.fa.bgz`, noodles' writer) and scans that with one partition and with one per
//! core: BGZF files are split between partitions by block. It also writes a ~1 GB genome
//! (`genome_1g.fa`, 40 x 25 Mbp), indexes it (`flightbear index`) and times what the index
//! answers — `fasta_region` reads (1 kbp, one whole record), `WHERE id = 'chr5'` and `COUNT(*)` —
//! against the same answers found by a full scan (`WHERE upper(id) = 'CHR5'`, one partition
//! per core). Last, it writes the short reads as FASTQ
//! (`short_reads.fq`, ~300 MB, Phred+33 qualities) and scans that like the FASTA files: FASTQ
//! MB/s against the FASTA scan's in the same run. Files ending in `.fq`/`.fastq` (optionally
//! compressed) are read as FASTQ.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::prelude::{SessionConfig, SessionContext};
use flightbear::bytesize::ByteSize;
use flightbear::catalog::runtime::runtime_env;
use flightbear::fasta::{FastaFormat, FastaOptions, SequenceFormat, is_fastq_path};

const QUERY: &str = "SELECT COUNT(*), SUM(length(sequence)) FROM t";

struct Args {
    data_dir: PathBuf,
    runs: usize,
    memory_limit: Option<ByteSize>,
    files: Vec<PathBuf>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        data_dir: PathBuf::from("bench-data"),
        runs: 5,
        memory_limit: None,
        files: Vec::new(),
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--generate" => {
                args.data_dir = iter.next().ok_or("--generate needs a directory")?.into();
            }
            "--runs" => {
                args.runs = iter
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--runs needs a positive number")?;
            }
            "--memory-limit" => {
                let size = iter.next().ok_or("--memory-limit needs a size")?;
                let size = size.parse().map_err(|e| format!("--memory-limit: {e}"))?;
                args.memory_limit = Some(size);
            }
            "-h" | "--help" => {
                return Err("usage: fasta_scan [--generate DIR] [--runs N] [--memory-limit SIZE] [FILES...]".to_string());
            }
            _ => args.files.push(arg.into()),
        }
    }
    Ok(args)
}

/// A tiny xorshift generator; the data only needs to look like DNA.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fills `out` with bases, 32 per random number.
    fn bases(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            let mut bits = self.next();
            for b in chunk {
                *b = b"ACGT"[(bits & 3) as usize];
                bits >>= 2;
            }
        }
    }
}

/// `records` records of 25 Mbp each (60- and 80-column lines alternating).
fn generate_long_records(path: &Path, records: usize) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let mut line = [0u8; 80];
    for record in 0..records {
        let width = if record % 2 == 0 { 60 } else { 80 };
        writeln!(out, ">chr{} synthetic chromosome {record}", record + 1)?;
        let mut left = 25_000_000usize;
        while left > 0 {
            let n = width.min(left);
            rng.bases(&mut line[..n]);
            out.write_all(&line[..n])?;
            out.write_all(b"\n")?;
            left -= n;
        }
    }
    out.flush()
}

fn generate_short_reads(path: &Path) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut rng = XorShift(0x0dd_ba11_cafe_f00d);
    let mut read = [0u8; 150];
    let mut written = 0usize;
    let mut n = 0u64;
    while written < 300_000_000 {
        let header = format!(
            ">read{n} lane={} tile={} x={} y={}\n",
            n % 8,
            (n / 8) % 100,
            rng.next() % 30000,
            rng.next() % 30000
        );
        rng.bases(&mut read);
        out.write_all(header.as_bytes())?;
        out.write_all(&read)?;
        out.write_all(b"\n")?;
        written += header.len() + read.len() + 1;
        n += 1;
    }
    out.flush()
}

fn generate_short_reads_fastq(path: &Path) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut rng = XorShift(0x0dd_ba11_cafe_f00d);
    let mut read = [0u8; 150];
    let mut quality = [0u8; 150];
    let mut written = 0usize;
    let mut n = 0u64;
    while written < 300_000_000 {
        let header = format!("@read{n} 1:N:0:{}\n", rng.next() % 30000);
        rng.bases(&mut read);
        for q in quality.iter_mut() {
            *q = b'!' + (rng.next() % 42) as u8;
        }
        out.write_all(header.as_bytes())?;
        out.write_all(&read)?;
        out.write_all(b"\n+\n")?;
        out.write_all(&quality)?;
        out.write_all(b"\n")?;
        written += header.len() + 2 * read.len() + 4;
        n += 1;
    }
    out.flush()
}

fn gzip_file(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(from)?);
    let out = BufWriter::with_capacity(1 << 20, File::create(to)?);
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
    std::io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.flush()
}

fn bgzip_file(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(from)?);
    let mut writer = noodles_bgzf::io::Writer::new(BufWriter::new(File::create(to)?));
    std::io::copy(&mut input, &mut writer)?;
    writer.finish()?.flush()
}

/// Best time of a single-thread gunzip of `path` into a sink.
fn gunzip_time(path: &Path, runs: usize) -> std::io::Result<Duration> {
    let mut best = Duration::MAX;
    let mut buffer = vec![0u8; 1 << 20];
    for _ in 0..runs {
        let started = Instant::now();
        let file = BufReader::with_capacity(256 << 10, File::open(path)?);
        let mut decoder = flate2::bufread::MultiGzDecoder::new(file);
        while decoder.read(&mut buffer)? > 0 {}
        best = best.min(started.elapsed());
    }
    Ok(best)
}

/// The scan of a gzipped file against a plain gunzip of it, in compressed MB/s.
async fn compare_with_gunzip(
    path: &Path,
    runs: usize,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::metadata(path)?.len() as f64 / 1e6;
    let gunzip = gunzip_time(path, runs)?;
    let mut scan = Duration::MAX;
    for _ in 0..runs {
        scan = scan.min(run_once(path, 1, None).await?.0);
    }
    let (gunzip_rate, scan_rate) = (bytes / gunzip.as_secs_f64(), bytes / scan.as_secs_f64());
    println!(
        "gzip {} ({bytes:.1} MB compressed, best of {runs}): gunzip {gunzip_rate:.0} MB/s, \
         scan {scan_rate:.0} MB/s, scan/gunzip {:.2}",
        path.display(),
        scan_rate / gunzip_rate
    );
    Ok(())
}

/// What the index answers (regions, a record by id, the record count) against full scans.
async fn compare_index_with_scan(
    path: &Path,
    runs: usize,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    flightbear::fasta::index::index_file(path)?;
    // The scan at its best: one partition per core.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ctx = fasta_context(path, cores, None)?;
    ctx.register_udtf(
        "fasta_region",
        Arc::new(flightbear::fasta::region::FastaRegionFunction),
    );
    let megabytes = std::fs::metadata(path)?.len() as f64 / 1e6;
    // `upper(id) = 'CHR5'` names the record without letting the index find it: a full scan.
    let cases = [
        (
            "1 kbp, fasta_region",
            "SELECT sequence FROM fasta_region('t', 'chr5:12,000,001-12,001,000')",
            "SELECT substr(sequence, 12000001, 1000) AS sequence FROM t WHERE upper(id) = 'CHR5'",
        ),
        (
            "one whole 25 Mbp record, fasta_region",
            "SELECT sequence FROM fasta_region('t', 'chr5')",
            "SELECT sequence FROM t WHERE upper(id) = 'CHR5'",
        ),
        (
            "one whole 25 Mbp record, WHERE id = (index lookup)",
            "SELECT sequence FROM t WHERE id = 'chr5'",
            "SELECT sequence FROM t WHERE upper(id) = 'CHR5'",
        ),
        (
            "COUNT(*) (index record count)",
            "SELECT COUNT(*) FROM t",
            "SELECT COUNT(*) FROM t WHERE upper(id) <> ''",
        ),
    ];
    for (what, indexed, scan) in cases {
        let mut best = [Duration::MAX; 2];
        let mut answers = Vec::new();
        for _ in 0..runs {
            answers.clear();
            for sql in [indexed, scan] {
                let started = Instant::now();
                let batches = ctx.sql(sql).await?.collect().await?;
                let i = answers.len();
                best[i] = best[i].min(started.elapsed());
                let columns: Vec<_> = batches.iter().map(|b| b.column(0).as_ref()).collect();
                answers.push(datafusion::arrow::compute::concat(&columns)?);
            }
        }
        assert_eq!(&answers[0], &answers[1], "{what}: index and scan disagree");
        println!(
            "indexed {} ({what}, {megabytes:.0} MB file, best of {runs}): {:.2} ms, full scan ({cores} partitions) {:.1} ms, {:.0}x faster",
            path.display(),
            best[0].as_secs_f64() * 1e3,
            best[1].as_secs_f64() * 1e3,
            best[1].as_secs_f64() / best[0].as_secs_f64()
        );
    }
    Ok(())
}

/// A session with the FASTA (or FASTQ) file at `path` as table `t`.
fn fasta_context(
    path: &Path,
    partitions: usize,
    memory_limit: Option<ByteSize>,
) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_repartition_file_min_size(1 << 20);
    let ctx = match memory_limit {
        Some(limit) => SessionContext::new_with_config_rt(config, runtime_env(limit, None)?),
        None => SessionContext::new_with_config(config),
    };
    let url = ListingTableUrl::parse(path.to_string_lossy())?;
    let format = if is_fastq_path(&path.to_string_lossy()) {
        SequenceFormat::Fastq
    } else {
        SequenceFormat::Fasta
    };
    let options = FastaOptions {
        format,
        ..FastaOptions::default()
    };
    let listing = ListingOptions::new(Arc::new(FastaFormat::new(options))).with_file_extension("");
    let table = ListingTable::try_new(
        ListingTableConfig::new(url)
            .with_listing_options(listing)
            .with_schema(format.schema()),
    )?;
    ctx.register_table("t", Arc::new(table))?;
    Ok(ctx)
}

async fn run_once(
    path: &Path,
    partitions: usize,
    memory_limit: Option<ByteSize>,
) -> Result<(Duration, i64, i64)> {
    let ctx = fasta_context(path, partitions, memory_limit)?;
    let started = Instant::now();
    let batches = ctx.sql(QUERY).await?.collect().await?;
    let elapsed = started.elapsed();
    let batch = batches.first().ok_or_else(|| {
        datafusion::error::DataFusionError::Execution("query returned no batch".into())
    })?;
    let count = batch.column(0).as_primitive::<Int64Type>().value(0);
    let bases = batch.column(1).as_primitive::<Int64Type>().value(0);
    Ok((elapsed, count, bases))
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // The server's allocator settings, so the figures are the server's.
    flightbear::allocator::limit_arenas();
    let args = parse_args()?;
    let mut files = args.files.clone();
    if files.is_empty() {
        std::fs::create_dir_all(&args.data_dir)?;
        let long = args.data_dir.join("long_records.fa");
        let short = args.data_dir.join("short_reads.fa");
        if !long.exists() {
            eprintln!("generating {}", long.display());
            generate_long_records(&long, 8)?;
        }
        if !short.exists() {
            eprintln!("generating {}", short.display());
            generate_short_reads(&short)?;
        }
        let gzipped = args.data_dir.join("short_reads.fa.gz");
        if !gzipped.exists() {
            eprintln!("generating {}", gzipped.display());
            gzip_file(&short, &gzipped)?;
        }
        let bgzipped = args.data_dir.join("short_reads.fa.bgz");
        if !bgzipped.exists() {
            eprintln!("generating {}", bgzipped.display());
            bgzip_file(&short, &bgzipped)?;
        }
        let fastq = args.data_dir.join("short_reads.fq");
        if !fastq.exists() {
            eprintln!("generating {}", fastq.display());
            generate_short_reads_fastq(&fastq)?;
        }
        files = vec![long, short.clone(), bgzipped, fastq];
        compare_with_gunzip(&gzipped, args.runs).await?;
        let genome = args.data_dir.join("genome_1g.fa");
        if !genome.exists() {
            eprintln!("generating {}", genome.display());
            generate_long_records(&genome, 40)?;
        }
        compare_index_with_scan(&genome, args.runs).await?;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("query: {QUERY}  (best of {} runs)", args.runs);
    if let Some(limit) = args.memory_limit {
        println!("memory limit: {limit}");
    }
    println!(
        "{:<36} {:>10} {:>10} {:>6} {:>9} {:>10}",
        "file", "MB", "rows", "parts", "best s", "MB/s"
    );
    for file in &files {
        let bytes = std::fs::metadata(file)?.len() as f64;
        let mut partition_counts = vec![1];
        if cores > 1 {
            partition_counts.push(cores);
        }
        for partitions in partition_counts {
            let mut best = Duration::MAX;
            let mut rows = 0;
            for _ in 0..args.runs {
                let (elapsed, count, _bases) =
                    run_once(file, partitions, args.memory_limit).await?;
                best = best.min(elapsed);
                rows = count;
            }
            println!(
                "{:<36} {:>10.1} {:>10} {:>6} {:>9.3} {:>10.0}",
                file.display(),
                bytes / 1e6,
                rows,
                partitions,
                best.as_secs_f64(),
                bytes / 1e6 / best.as_secs_f64()
            );
        }
    }
    Ok(())
}
