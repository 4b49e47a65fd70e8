//! Shared helpers for the integration tests: start a real server, connect a Flight SQL client,
//! and an independent reference FASTA reader to check answers against.
#![allow(dead_code)]

pub mod files;

use std::path::Path;

use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::RecordBatch;
use flightbear::config::{Config, TableSpec};
use flightbear::server::RunningServer;
use futures::TryStreamExt;
use tonic::transport::Channel;

/// Starts a server on an ephemeral port serving the given tables.
pub async fn start_server(
    tables: Vec<TableSpec>,
    tweak: impl FnOnce(&mut Config),
) -> RunningServer {
    let mut config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        tables,
        sample_data: false,
        ..Config::default()
    };
    tweak(&mut config);
    flightbear::server::start(config)
        .await
        .expect("server starts")
}

/// A Flight SQL client connected to the server.
pub async fn client(server: &RunningServer) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .expect("connects");
    FlightSqlServiceClient::new(channel)
}

/// Fetches every endpoint of a FlightInfo and returns the batches.
pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: &FlightInfo,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let mut batches = Vec::new();
    for endpoint in &info.endpoint {
        let ticket = endpoint.ticket.clone().expect("endpoint has a ticket");
        let stream = client.do_get(ticket).await?;
        let mut part: Vec<RecordBatch> = stream.try_collect().await?;
        batches.append(&mut part);
    }
    Ok(batches)
}

/// Runs a query through GetFlightInfo + DoGet.
pub async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    fetch(client, &info)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// One FASTA record as the reference reader sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub id: String,
    pub description: Option<String>,
    pub sequence: String,
}

/// A deliberately simple FASTA reader, independent of the server's parser.
///
/// The README's rule: `id` is the header up to the first space or tab, `description` the rest
/// trimmed of ASCII whitespace (None when empty); sequence lines lose their line ends (LF or
/// CRLF) and are joined; empty lines are skipped.
pub fn reference_read(text: &str) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(header) = line.strip_prefix('>') {
            let (id, rest) = header.split_at(header.find([' ', '\t']).unwrap_or(header.len()));
            let rest = rest.trim_ascii();
            records.push(Record {
                id: id.to_string(),
                description: (!rest.is_empty()).then(|| rest.to_string()),
                sequence: String::new(),
            });
        } else if !line.is_empty() {
            records
                .last_mut()
                .expect("sequence before first header")
                .sequence
                .push_str(line);
        }
    }
    records
}

/// Reads (id, description, sequence) columns from result batches.
pub fn records_of(batches: &[RecordBatch]) -> Vec<Record> {
    use datafusion::arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for batch in batches {
        let id = batch.column_by_name("id").unwrap().as_string::<i32>();
        let description = batch
            .column_by_name("description")
            .unwrap()
            .as_string::<i32>();
        let sequence = batch.column_by_name("sequence").unwrap().as_string::<i32>();
        for i in 0..batch.num_rows() {
            out.push(Record {
                id: id.value(i).to_string(),
                description: (!description.is_null(i)).then(|| description.value(i).to_string()),
                sequence: sequence.value(i).to_string(),
            });
        }
    }
    out
}

/// The non-null values of a string column, across all batches.
pub fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    use datafusion::arrow::array::AsArray;
    batches
        .iter()
        .flat_map(|b| {
            b.column(column)
                .as_string::<i32>()
                .iter()
                .map(|v| v.expect("non-null string").to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Total rows of some batches.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// A small xorshift generator so tests make reproducible data without extra crates.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Writes a FASTA file of `records` random DNA records with 60-column lines; returns its text.
pub fn write_random_fasta(path: &Path, records: usize, max_len: u64, seed: u64) -> String {
    let mut rng = XorShift(seed);
    let mut text = String::new();
    for i in 0..records {
        let len = rng.below(max_len + 1) as usize;
        if i % 3 == 0 {
            text.push_str(&format!(">rec{i}\n"));
        } else {
            text.push_str(&format!(">rec{i} random record number {i}\n"));
        }
        let seq: String = (0..len)
            .map(|_| b"ACGTN"[rng.below(5) as usize] as char)
            .collect();
        for chunk in seq.as_bytes().chunks(60) {
            text.push_str(std::str::from_utf8(chunk).unwrap());
            text.push('\n');
        }
    }
    std::fs::write(path, &text).unwrap();
    text
}

/// The gRPC status inside a Flight client error.
pub fn status_of(error: arrow_flight::error::FlightError) -> tonic::Status {
    match error {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => panic!("expected a gRPC status, got {other}"),
    }
}
