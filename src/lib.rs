//! flightbear: an Arrow Flight SQL server that serves FASTA, FASTQ and CSV files as SQL tables.
//!
//! Data flows one way: [`config`] → [`catalog`] (DataFusion session and tables, using [`fasta`])
//! → [`service`] (Flight SQL over gRPC) → [`server`] (listener, health, shutdown); [`metrics`]
//! is a leaf both service and server count into.
//!
//! | module | what it is |
//! |---|---|
//! | [`auth`] | users, argon2 passwords, signed bearer tokens, roles |
//! | [`bytesize`] | byte sizes as people write them (`512MiB`) |
//! | [`compression`] | compression suffixes and magic-byte sniffing, shared by FASTA and CSV |
//! | [`config`] | one `Config` from defaults, TOML, `FLIGHTBEAR_*` variables and flags |
//! | [`catalog`] | the DataFusion session, table locations, `STORED AS FASTA`/`FASTQ` |
//! | [`client`] | `flightbear query` and `flightbear tables`: a Flight SQL command-line client |
//! | [`fasta`] | the FASTA and FASTQ file formats: DataFusion `FileFormat`, `FileSource`, block readers |
//! | [`sequence`] | sequence functions for SQL: `gc_content`, `reverse_complement`, `translate`, `kmers` |
//! | [`service`] | the Flight service: requests, planning, statements, metadata, errors |
//! | [`metrics`] | what the server counts (RPCs, queries, connections), as Prometheus text |
//! | [`server`] | the gRPC server: listener, connection limits, health, `/metrics`, graceful shutdown |
//! | [`proto`] | flightbear's own protobuf messages (stateless statement handles) |
//! | [`flight_session`] | the Flight session messages (SetSessionOptions, …) |

pub mod allocator;
pub mod auth;
pub mod bytesize;
pub mod catalog;
pub mod client;
pub mod compression;
pub mod config;
pub mod fasta;
pub mod metrics;
pub mod sequence;
pub mod server;
pub mod service;

/// flightbear's own protobuf messages, compiled from `proto/` at build time.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/flightbear.v1.rs"));
}

/// The Flight session messages of Arrow's Flight.proto (arrow-flight 59 lacks them).
pub mod flight_session {
    include!(concat!(env!("OUT_DIR"), "/arrow.flight.protocol.rs"));
}

/// The Arrow version flightbear is built with (reported through GetSqlInfo).
pub const ARROW_VERSION: &str = env!("BUILD_ARROW_VERSION");
