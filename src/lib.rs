//! flightbear: an Arrow Flight SQL server that serves FASTA and CSV files as SQL tables.
//!
//! Data flows one way: [`config`] → [`catalog`] (DataFusion session and tables, using [`fasta`])
//! → [`service`] (Flight SQL over gRPC) → [`server`] (listener, health, shutdown).

pub mod catalog;
pub mod compression;
pub mod config;
pub mod fasta;
pub mod server;
pub mod service;

/// flightbear's own protobuf messages, compiled from `proto/` at build time.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/flightbear.v1.rs"));
}

/// The Arrow version flightbear is built with (reported through GetSqlInfo).
pub const ARROW_VERSION: &str = env!("FLIGHTBEAR_ARROW_VERSION");
