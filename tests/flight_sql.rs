//! Flight SQL behaviour of a real flightbear server, driven by arrow-flight's Flight SQL client.

mod common;

use std::io::Write;
use std::sync::Arc;

use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo,
};
use arrow_flight::{FlightDescriptor, Ticket};
use common::*;
use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use flightbear::config::{TableFormat, TableSpec};
use futures::StreamExt;
use tonic::Code;

const FASTA: &str = ">chr1 first chromosome\nACGTACGTAC\nGGCC\n>chr2\nTTTT\n>empty lonely\n>prot1  a protein \r\nMKV*\r\nLL-\r\n";

const CSV: &str = "sample_id,species,reads\nS1,human,100\nS2,mouse,250\nS3,human,50\n";

struct Fixture {
    _dir: tempfile::TempDir,
    dir_path: std::path::PathBuf,
    tables: Vec<TableSpec>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let fa = dir.path().join("seqs.fa");
    std::fs::write(&fa, FASTA).unwrap();
    let csv = dir.path().join("samples.csv");
    std::fs::write(&csv, CSV).unwrap();
    let tsv = dir.path().join("samples.tsv");
    std::fs::write(&tsv, CSV.replace(',', "\t")).unwrap();
    let gz = dir.path().join("samples2.csv.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(CSV.as_bytes()).unwrap();
    std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
    let spec = |name: &str, path: &std::path::Path| TableSpec {
        name: name.into(),
        path: path.display().to_string(),
        format: None,
    };
    let tables = vec![
        spec("seqs", &fa),
        spec("samples", &csv),
        spec("samples_tsv", &tsv),
        spec("samples_gz", &gz),
    ];
    Fixture {
        dir_path: dir.path().to_path_buf(),
        _dir: dir,
        tables,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn statement_query_returns_the_reference_readers_records() {
    let fx = fixture();
    let server = start_server(fx.tables.clone(), |_| {}).await;
    let mut client = client(&server).await;
    let batches = query(&mut client, "SELECT id, description, sequence FROM seqs").await;
    assert_eq!(records_of(&batches), reference_read(FASTA));
    assert_eq!(
        records_of(&batches)[2],
        Record {
            id: "empty".into(),
            description: Some("lonely".into()),
            sequence: String::new()
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flight_info_schema_is_the_streamed_schema_also_for_empty_results() {
    let fx = fixture();
    let server = start_server(fx.tables.clone(), |_| {}).await;
    let mut client = client(&server).await;
    for sql in [
        "SELECT * FROM seqs WHERE false",
        "SELECT id, length(sequence) AS len FROM seqs",
        "SELECT species, SUM(reads) AS total FROM samples GROUP BY species",
        "SELECT CAST(id AS VARCHAR) AS v FROM seqs",
    ] {
        let info = client.execute(sql.to_string(), None).await.unwrap();
        let announced = info.clone().try_decode_schema().unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let mut stream = client.do_get(ticket).await.unwrap();
        while let Some(batch) = stream.next().await {
            assert_eq!(batch.unwrap().schema().as_ref(), &announced, "{sql}");
        }
        let streamed = stream.schema().expect("schema was sent").as_ref().clone();
        assert_eq!(streamed, announced, "{sql}");
        assert!(!announced.fields().is_empty(), "{sql}");
        for field in announced.fields() {
            assert_ne!(field.data_type(), &DataType::Utf8View, "{sql}");
        }
    }
}

fn nullability(schema: &Schema) -> Vec<(&str, bool)> {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.is_nullable()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn result_and_prepared_schemas_carry_real_nullability() {
    let fx = fixture();
    let server = start_server(fx.tables.clone(), |_| {}).await;
    let mut client = client(&server).await;
    let fasta = [("id", false), ("description", true), ("sequence", false)];
    let cases: [(&str, &[(&str, bool)]); 5] = [
        ("SELECT * FROM seqs", &fasta),
        (
            "SELECT sequence, id FROM seqs WHERE false",
            &[("sequence", false), ("id", false)],
        ),
        (
            "SELECT 1 AS one, NULL AS nothing",
            &[("one", false), ("nothing", true)],
        ),
        ("SELECT count(*) AS n FROM samples", &[("n", false)]),
        // CSV inference cannot know a column has no empty fields.
        (
            "SELECT * FROM samples",
            &[("sample_id", true), ("species", true), ("reads", true)],
        ),
    ];
    for (sql, expected) in cases {
        let info = client.execute(sql.to_string(), None).await.unwrap();
        let announced = info.clone().try_decode_schema().unwrap();
        assert_eq!(nullability(&announced), expected, "{sql}");
        let batches = fetch(&mut client, &info).await.unwrap();
        assert!(
            batches.iter().all(|b| b.schema().as_ref() == &announced),
            "{sql}"
        );
        let prepared = client.prepare(sql.to_string(), None).await.unwrap();
        assert_eq!(prepared.dataset_schema().unwrap(), &announced, "{sql}");
        prepared.close().await.unwrap();
    }
    // With placeholders, the dataset schema comes from the logical plan.
    let sql = "SELECT id, description FROM seqs WHERE id = $1";
    let prepared = client.prepare(sql.to_string(), None).await.unwrap();
    assert_eq!(
        nullability(prepared.dataset_schema().unwrap()),
        [("id", false), ("description", true)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_tsv_and_gzipped_csv_tables_infer_header_and_types() {
    let fx = fixture();
    let server = start_server(fx.tables.clone(), |_| {}).await;
    let mut client = client(&server).await;
    for table in ["samples", "samples_tsv", "samples_gz"] {
        let batches = query(
            &mut client,
            &format!("SELECT sample_id, reads FROM {table} ORDER BY sample_id"),
        )
        .await;
        let batch = &batches[0];
        assert_eq!(
            batch.schema().field(1).data_type(),
            &DataType::Int64,
            "{table}"
        );
        let reads = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(reads.values().to_vec(), vec![100, 250, 50], "{table}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_statements_bind_question_mark_and_dollar_parameters() {
    let fx = fixture();
    let server = start_server(fx.tables.clone(), |_| {}).await;
    let mut client = client(&server).await;

    let mut prepared = client
        .prepare(
            "SELECT sample_id FROM samples WHERE species = ? AND reads > ? ORDER BY sample_id"
                .to_string(),
            None,
        )
        .await
        .unwrap();
    let params = prepared.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 2);
    assert_eq!(params.field(0).name(), "$1");
    assert_eq!(
        prepared.dataset_schema().unwrap().field(0).name(),
        "sample_id"
    );
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int32, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["human"])),
            Arc::new(datafusion::arrow::array::Int32Array::from(vec![60])),
        ],
    )
    .unwrap();
    prepared.set_parameters(batch).unwrap();
    let info = prepared.execute().await.unwrap();
    let rows = fetch(&mut client, &info).await.unwrap();
    assert_eq!(strings(&rows, 0), ["S1"]);
    prepared.close().await.unwrap();

    let mut prepared = client
        .prepare("SELECT $1 + $2 AS total".to_string(), None)
        .await
        .unwrap();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![40])),
            Arc::new(Int64Array::from(vec![2])),
        ],
    )
    .unwrap();
    prepared.set_parameters(batch).unwrap();
    let info = prepared.execute().await.unwrap();
    let rows = fetch(&mut client, &info).await.unwrap();
    assert_eq!(rows[0].column(0).as_primitive::<Int64Type>().value(0), 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn ddl_creates_and_drops_tables_and_views() {
    let fx = fixture();
    let root = fx.dir_path.clone();
    let server = start_server(vec![], |config| config.data_roots = vec![root]).await;
    let mut client = client(&server).await;
    let fa = fx.dir_path.join("seqs.fa");

    let count = client
        .execute_update(
            format!(
                "CREATE EXTERNAL TABLE ext STORED AS FASTA LOCATION '{}'",
                fa.display()
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(count, 0);
    let batches = query(&mut client, "SELECT * FROM ext").await;
    assert_eq!(records_of(&batches), reference_read(FASTA));

    client
        .execute_update(
            "CREATE VIEW long_ones AS SELECT id FROM ext WHERE length(sequence) > 5".into(),
            None,
        )
        .await
        .unwrap();
    let batches = query(&mut client, "SELECT id FROM long_ones ORDER BY id").await;
    assert_eq!(row_count(&batches), 2);

    // Prepared DDL: empty dataset schema (JDBC reads that as an update), then executed as update.
    let mut prepared = client
        .prepare("DROP VIEW long_ones".into(), None)
        .await
        .unwrap();
    assert!(prepared.dataset_schema().unwrap().fields().is_empty());
    prepared.execute_update().await.unwrap();
    let err = client
        .execute("SELECT * FROM long_ones".into(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("long_ones"), "{err}");

    // DDL through a query statement also works (ADBC executes everything as a query).
    let info = client.execute("DROP TABLE ext".into(), None).await.unwrap();
    assert!(info.endpoint.is_empty());
    assert!(
        client
            .execute("SELECT * FROM ext".into(), None)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_external_table_on_a_directory_reads_every_fasta_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.fa"), ">a\nAC\n").unwrap();
    std::fs::write(dir.path().join("b.fasta"), ">b\nGT\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not fasta").unwrap();
    let root = dir.path().to_path_buf();
    let server = start_server(vec![], |config| config.data_roots = vec![root]).await;
    let mut client = client(&server).await;
    client
        .execute_update(
            format!(
                "CREATE EXTERNAL TABLE d STORED AS FASTA LOCATION '{}'",
                dir.path().display()
            ),
            None,
        )
        .await
        .unwrap();
    let batches = query(&mut client, "SELECT id FROM d ORDER BY id").await;
    assert_eq!(strings(&batches, 0), ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_commands_list_everything_without_filters() {
    let fx = fixture();
    let server = start_server(fx.tables.clone(), |_| {}).await;
    let mut client = client(&server).await;

    let info = client.get_catalogs().await.unwrap();
    let batches = fetch(&mut client, &info).await.unwrap();
    assert_eq!(strings(&batches, 0), ["flightbear"]);

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let batches = fetch(&mut client, &info).await.unwrap();
    let schemas = strings(&batches, 1);
    assert!(schemas.contains(&"public".to_string()), "{schemas:?}");

    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let announced = info.clone().try_decode_schema().unwrap();
    let batches = fetch(&mut client, &info).await.unwrap();
    assert_eq!(batches[0].schema().as_ref(), &announced);
    let batch = &batches[0];
    let names = batch.column(2).as_string::<i32>();
    let seqs_row = (0..batch.num_rows())
        .find(|&i| names.value(i) == "seqs")
        .expect("seqs listed");
    assert_eq!(batch.column(3).as_string::<i32>().value(seqs_row), "TABLE");
    let ipc = batch.column(4).as_binary::<i32>().value(seqs_row);
    let schema = datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer(ipc).unwrap();
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.is_nullable()))
        .collect();
    assert_eq!(
        fields,
        [
            ("id".to_string(), false),
            ("description".to_string(), true),
            ("sequence".to_string(), false)
        ]
    );

    // Filters narrow the list.
    let info = client
        .get_tables(CommandGetTables {
            catalog: Some("flightbear".into()),
            db_schema_filter_pattern: Some("pub%".into()),
            table_name_filter_pattern: Some("samples%".into()),
            table_types: vec!["TABLE".into()],
            include_schema: false,
        })
        .await
        .unwrap();
    let batches = fetch(&mut client, &info).await.unwrap();
    assert_eq!(row_count(&batches), 3);

    let info = client.get_table_types().await.unwrap();
    let batches = fetch(&mut client, &info).await.unwrap();
    assert!(row_count(&batches) >= 2);

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerArrowVersion,
        ])
        .await
        .unwrap();
    let batches = fetch(&mut client, &info).await.unwrap();
    assert_eq!(row_count(&batches), 2);
    let all = client.get_sql_info(vec![]).await.unwrap();
    let batches = fetch(&mut client, &all).await.unwrap();
    assert!(row_count(&batches) > 20);

    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let batches = fetch(&mut client, &info).await.unwrap();
    assert!(row_count(&batches) >= 5);

    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "seqs".into(),
        })
        .await
        .unwrap();
    let announced = info.clone().try_decode_schema().unwrap();
    assert_eq!(announced.field(2).name(), "table_name");
    assert!(!announced.field(2).is_nullable());
    let batches = fetch(&mut client, &info).await.unwrap();
    assert_eq!(row_count(&batches), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_flight_lists_tables_and_serves_paths_and_utf8_sql() {
    let fx = fixture();
    let server = start_server(fx.tables.clone(), |_| {}).await;
    let mut sql_client = client(&server).await;
    let flight = sql_client.inner_mut();

    let infos: Vec<_> = flight
        .list_flights(arrow_flight::Criteria::default())
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    let mut paths: Vec<_> = infos
        .iter()
        .map(|i| {
            i.as_ref()
                .unwrap()
                .flight_descriptor
                .clone()
                .unwrap()
                .path
                .join(".")
        })
        .collect();
    paths.sort();
    assert_eq!(paths, ["samples", "samples_gz", "samples_tsv", "seqs"]);

    let info = flight
        .get_flight_info(FlightDescriptor::new_path(vec!["seqs".into()]))
        .await
        .unwrap()
        .into_inner();
    let batches = fetch(&mut sql_client, &info).await.unwrap();
    assert_eq!(records_of(&batches), reference_read(FASTA));

    let flight = sql_client.inner_mut();
    let info = flight
        .get_flight_info(FlightDescriptor::new_cmd(
            "SELECT COUNT(*) AS n FROM samples",
        ))
        .await
        .unwrap()
        .into_inner();
    let batches = fetch(&mut sql_client, &info).await.unwrap();
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 3);

    let flight = sql_client.inner_mut();
    let schema = flight
        .get_schema(FlightDescriptor::new_path(vec!["samples".into()]))
        .await
        .unwrap()
        .into_inner();
    let schema = Schema::try_from(&schema).unwrap();
    assert_eq!(schema.field(0).name(), "sample_id");
    let schema = flight
        .get_schema(FlightDescriptor::new_cmd("SELECT id FROM seqs"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(Schema::try_from(&schema).unwrap().fields().len(), 1);

    let err = flight
        .get_flight_info(FlightDescriptor::new_path(vec!["nope".into()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("nope"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let fx = fixture();
    let server = start_server(fx.tables.clone(), |_| {}).await;
    let mut client = client(&server).await;

    let err = client.execute("SELEC 1".into(), None).await.unwrap_err();
    assert!(
        err.to_string().contains("SELEC") || err.to_string().to_lowercase().contains("sql"),
        "{err}"
    );

    let status = status_of(
        client
            .execute("SELECT * FROM missing_table".into(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("missing_table"),
        "{}",
        status.message()
    );

    let flight = client.inner_mut();
    let err = flight
        .do_get(Ticket::new(vec![0xff, 0x00, 0x13, 0x37]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = flight
        .get_flight_info(FlightDescriptor::new_cmd(vec![0x0a, 0xff, 0xfe, 0x00]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = flight
        .do_action(arrow_flight::Action::new(
            "CreatePreparedStatement",
            vec![1u8, 2, 3],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // COPY would write files on the server: refused.
    assert!(
        client
            .execute("COPY samples TO '/tmp/x.csv'".into(), None)
            .await
            .is_err()
    );

    let batches = query(&mut client, "SELECT COUNT(*) FROM seqs").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 4);
}

/// A gRPC codec that sends and receives raw bytes, to put undecodable messages on the wire.
#[derive(Clone, Copy, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> Self::Encoder {
        RawBytes
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_protobuf_requests_are_invalid_argument_and_the_server_keeps_serving() {
    let fx = fixture();
    let server = start_server(fx.tables.clone(), |_| {}).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // A varint cut short: no protobuf message decodes from these bytes.
    let garbage = vec![0x0a, 0xff, 0xff, 0xff];
    for method in ["GetFlightInfo", "GetSchema", "PollFlightInfo"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = format!("/arrow.flight.protocol.FlightService/{method}");
        let status = grpc
            .unary(
                tonic::Request::new(garbage.clone()),
                path.parse().unwrap(),
                RawBytes,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status}");
    }
    for method in ["DoGet", "DoAction", "ListFlights"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = format!("/arrow.flight.protocol.FlightService/{method}");
        let answer = grpc
            .server_streaming(
                tonic::Request::new(garbage.clone()),
                path.parse().unwrap(),
                RawBytes,
            )
            .await;
        let status = match answer {
            Err(status) => status,
            Ok(response) => {
                let mut stream = response.into_inner();
                stream.message().await.unwrap_err()
            }
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status}");
    }
    // DoPut decodes its messages as they stream in, inside the handler.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let answer = grpc
        .streaming(
            tonic::Request::new(futures::stream::iter([garbage.clone()])),
            "/arrow.flight.protocol.FlightService/DoPut"
                .parse()
                .unwrap(),
            RawBytes,
        )
        .await;
    let status = match answer {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "DoPut: {status}");

    let mut client = client(&server).await;
    let batches = query(&mut client, "SELECT COUNT(*) FROM seqs").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_fasta_streams_in_many_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.fa");
    let text = write_random_fasta(&path, 3000, 4000, 42);
    let file_size = text.len();
    let budget = 64 * 1024;
    assert!(
        file_size > 50 * budget,
        "file is many times the batch budget"
    );
    let tables = vec![TableSpec {
        name: "big".into(),
        path: path.display().to_string(),
        format: Some(TableFormat::Fasta),
    }];
    let server = start_server(tables, |c| {
        c.batch_bytes = flightbear::bytesize::ByteSize(budget as u64);
        c.target_partitions = 1;
    })
    .await;
    let mut client = client(&server).await;
    let info = client
        .execute("SELECT * FROM big".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        let bytes: usize = batch
            .column_by_name("sequence")
            .unwrap()
            .as_string::<i32>()
            .value_data()
            .len();
        // A batch may exceed the budget only by its last record.
        assert!(bytes <= budget + 4000 + 100, "batch of {bytes} bytes");
        batches.push(batch);
    }
    assert!(batches.len() > 40, "{} batches", batches.len());
    assert_eq!(records_of(&batches), reference_read(&text));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_abandons_a_stream_does_not_disturb_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.fa");
    write_random_fasta(&path, 4000, 3000, 7);
    let tables = vec![TableSpec {
        name: "big".into(),
        path: path.display().to_string(),
        format: None,
    }];
    let server = start_server(tables, |c| {
        c.batch_bytes = flightbear::bytesize::ByteSize(16 * 1024)
    })
    .await;
    let mut client = client(&server).await;
    for _ in 0..5 {
        let info = client
            .execute("SELECT * FROM big".into(), None)
            .await
            .unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let mut stream = client.do_get(ticket).await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.num_rows() > 0);
        drop(stream);
    }
    let batches = query(&mut client, "SELECT COUNT(*) FROM big").await;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        4000
    );
    let nulls = query(
        &mut client,
        "SELECT COUNT(*) FROM big WHERE description IS NULL",
    )
    .await;
    let null_count = nulls[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(null_count, (0..4000).filter(|i| i % 3 == 0).count() as i64);
    assert!(nulls[0].column(0).null_count() == 0);
}
