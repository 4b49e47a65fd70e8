//! The `flightbear` binary: flags, environment, TOML, sample data, health check and SIGTERM.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_flightbear");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process that is killed if the test fails half-way.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn healthcheck(port: u16) -> bool {
    Command::new(BIN)
        .args(["healthcheck", "--addr", &format!("http://127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn wait_healthy(port: u16, child: &mut Child) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early with {status}");
        }
        if healthcheck(port) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server did not become healthy");
}

async fn count(port: u16, sql: &str) -> i64 {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    let batches = common::query(&mut client, sql).await;
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_without_tables_serves_the_sample_data_and_stops_on_sigterm() {
    let port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    wait_healthy(port, &mut child);
    let mut server = ServerProcess(child);

    let fasta = include_str!("../src/sample/sequences.fa");
    let expected = common::reference_read(fasta).len() as i64;
    assert_eq!(
        count(port, "SELECT COUNT(*) FROM sequences").await,
        expected
    );
    let csv_rows = include_str!("../src/sample/samples.csv").lines().count() as i64 - 1;
    assert_eq!(count(port, "SELECT COUNT(*) FROM samples").await, csv_rows);

    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");

    // The banner names the tables and how to connect; the sample files are gone once the
    // server has stopped.
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        stderr.contains(&format!("listening on 127.0.0.1:{port} (2 tables)")),
        "{stderr}"
    );
    let sample = stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("sequences  fasta  "))
        .unwrap_or_else(|| panic!("no sequences line in {stderr}"));
    assert!(sample.ends_with("sequences.fa"), "{sample}");
    for line in [
        format!("adbc_driver_flightsql.dbapi.connect(\"grpc://127.0.0.1:{port}\")"),
        format!("pyarrow.flight.connect(\"grpc://127.0.0.1:{port}\")"),
        format!("flightbear.connect(\"grpc://127.0.0.1:{port}\")"),
        format!("flightbear query --addr 127.0.0.1:{port} \"SELECT * FROM sequences LIMIT 5\""),
    ] {
        assert!(stderr.contains(&line), "{line} missing from {stderr}");
    }
    let sample_dir = std::path::Path::new(sample).parent().unwrap();
    assert!(
        !sample_dir.exists(),
        "{} was left behind",
        sample_dir.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_come_from_toml_environment_and_flags_together() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.fa"), ">a\nACGT\n>b\nGG\n").unwrap();
    std::fs::write(dir.path().join("c.txt"), ">c\nA\n").unwrap();
    std::fs::write(dir.path().join("s.tsv"), "x\ty\n1\t2\n3\t4\n5\t6\n").unwrap();
    let port = free_port();
    let toml = dir.path().join("flightbear.toml");
    std::fs::write(
        &toml,
        format!(
            "bind = \"127.0.0.1:1\"\n[[tables]]\nname = \"from_toml\"\npath = \"{}\"\n",
            dir.path().join("a.fa").display()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&toml)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .arg("--fasta")
        .arg(format!("forced={}", dir.path().join("c.txt").display()))
        .env(
            "FLIGHTBEAR_TABLES",
            format!("from_env={}", dir.path().join("s.tsv").display()),
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = ServerProcess(child);
    wait_healthy(port, &mut server.0);
    assert_eq!(count(port, "SELECT COUNT(*) FROM from_toml").await, 2);
    assert_eq!(count(port, "SELECT COUNT(*) FROM forced").await, 1);
    assert_eq!(count(port, "SELECT SUM(y) FROM from_env").await, 12);
}

#[test]
fn bad_configuration_exits_with_a_message_naming_the_problem() {
    let output = Command::new(BIN)
        .args(["serve", "--table", "genome"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("NAME=PATH"), "{stderr}");

    let output = Command::new(BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--table",
            "g=/no/such/file.fa",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/no/such/file.fa"), "{stderr}");
    // Said once, not once as a log line and again as a message.
    assert_eq!(stderr.matches("/no/such/file.fa").count(), 1, "{stderr}");
    let json = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
        .args(["--table", "g=/no/such/file.fa"])
        .output()
        .unwrap();
    assert!(!json.status.success());
    let stderr = String::from_utf8_lossy(&json.stderr);
    let line: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(line["level"], "ERROR", "{stderr}");
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    assert!(!healthcheck(free_port()));
}

#[tokio::test(flavor = "multi_thread")]
async fn host_names_in_bind_and_schemeless_health_check_addresses_work() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", &format!("localhost:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(port, &mut child);
    let _server = ServerProcess(child);
    let plain = Command::new(BIN)
        .args(["healthcheck", "--addr", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(plain.status.success(), "{plain:?}");
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), "SERVING");
    let named = Command::new(BIN)
        .args(["healthcheck", "--addr", &format!("localhost:{port}")])
        .output()
        .unwrap();
    assert!(named.status.success(), "{named:?}");

    // Nothing listens: the failure names the address and why.
    let silent = free_port();
    let refused = Command::new(BIN)
        .args(["healthcheck", "--addr", &format!("127.0.0.1:{silent}")])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!("http://127.0.0.1:{silent}")),
        "{said}"
    );
    assert!(said.to_lowercase().contains("refused"), "{said}");

    // A bind address that is no address stops start-up with a message that says so.
    let bad = Command::new(BIN)
        .args(["serve", "--bind", "localhost"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(said.contains("localhost:50051"), "{said}");
}

/// The type the server sends for a Utf8View value: Utf8View with string_view on, Utf8 off.
async fn view_type(port: u16) -> datafusion::arrow::datatypes::DataType {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    let batches = common::query(&mut client, "SELECT arrow_cast('a', 'Utf8View') AS v").await;
    batches[0].schema().field(0).data_type().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn booleans_from_any_layer_override_either_way() {
    use datafusion::arrow::datatypes::DataType;
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("flightbear.toml");
    std::fs::write(&toml, "string_view = true\n").unwrap();
    // TOML true, environment FALSE: off. Environment 1 over nothing: on. Flag off over TOML on.
    let cases: [(&[&str], Option<&str>, DataType); 3] = [
        (&["--config"], Some("FALSE"), DataType::Utf8),
        (&[], Some("1"), DataType::Utf8View),
        (
            &["--config", "FILE", "--string-view", "no"],
            None,
            DataType::Utf8,
        ),
    ];
    for (args, env, expected) in cases {
        let port = free_port();
        let mut command = Command::new(BIN);
        command.args(["serve", "--bind", &format!("127.0.0.1:{port}")]);
        for arg in args {
            if *arg == "--config" {
                command.arg("--config").arg(&toml);
            } else if *arg != "FILE" {
                command.arg(arg);
            }
        }
        if let Some(value) = env {
            command.env("FLIGHTBEAR_STRING_VIEW", value);
        }
        let mut child = command.stderr(Stdio::null()).spawn().unwrap();
        wait_healthy(port, &mut child);
        let _server = ServerProcess(child);
        assert_eq!(view_type(port).await, expected, "{args:?} {env:?}");
    }
    let bad = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:1"])
        .env("FLIGHTBEAR_NO_SAMPLE_DATA", "maybe")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(said.contains("'maybe' is not a boolean"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_from_the_environment_and_flags_add_up_and_unknown_variables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.fa"), ">a\nACGT\n>b\nGG\n").unwrap();
    std::fs::write(dir.path().join("c.fa"), ">c\nA\n").unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--table")
        .arg(format!("from_flag={}", dir.path().join("c.fa").display()))
        .env(
            "FLIGHTBEAR_TABLES",
            format!("from_env={}", dir.path().join("a.fa").display()),
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(port, &mut child);
    let _server = ServerProcess(child);
    assert_eq!(count(port, "SELECT COUNT(*) FROM from_env").await, 2);
    assert_eq!(count(port, "SELECT COUNT(*) FROM from_flag").await, 1);

    let typo = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("FLIGHTBEAR_BATCH_ROW", "5")
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(2));
    let said = String::from_utf8_lossy(&typo.stderr);
    assert!(said.contains("FLIGHTBEAR_BATCH_ROW;"), "{said}");
    assert!(said.contains("FLIGHTBEAR_BATCH_ROWS"), "{said}");
}

/// Runs `flightbear ARGS…` to the end (at most 60 s); its exit success, stdout and stderr.
async fn run_binary(args: Vec<String>) -> (bool, Vec<u8>, String) {
    let run = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("FLIGHTBEAR_ADDR")
            .output()
            .unwrap()
    });
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the command ends within 60 s")
        .unwrap();
    (
        output.status.success(),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn query_args(addr: &str, sql: &str, extra: &[&str]) -> Vec<String> {
    ["query", "--addr", addr, sql]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn query_prints_every_format_and_fails_with_the_grpc_code() {
    let dir = tempfile::tempdir().unwrap();
    let fasta = dir.path().join("seqs.fa");
    std::fs::write(&fasta, ">a one\nACGT\n>b\nGG\n>c two, three\n\n").unwrap();
    let tables = vec![flightbear::config::TableSpec {
        name: "seqs".into(),
        path: fasta.display().to_string(),
        format: None,
    }];
    let server = common::start_server(tables, |_| {}).await;
    let addr = server.addr.to_string();
    let sql = "SELECT id, description, length(sequence) AS n FROM seqs ORDER BY id";

    let (ok, out, err) = run_binary(query_args(&addr, sql, &[])).await;
    assert!(ok, "{err}");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "id | description | n\n\
         ---+-------------+--\n\
         a  | one         | 4\n\
         b  | NULL        | 2\n\
         c  | two, three  | 0\n\
         (3 rows)\n"
    );

    let (ok, out, err) = run_binary(query_args(&addr, sql, &["--format", "csv"])).await;
    assert!(ok, "{err}");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "id,description,n\na,one,4\nb,,2\nc,\"two, three\",0\n"
    );

    let (ok, out, err) = run_binary(query_args(&addr, sql, &["--format", "jsonl"])).await;
    assert!(ok, "{err}");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"id\":\"a\",\"description\":\"one\",\"n\":4}\n\
         {\"id\":\"b\",\"description\":null,\"n\":2}\n\
         {\"id\":\"c\",\"description\":\"two, three\",\"n\":0}\n"
    );

    let (ok, out, err) = run_binary(query_args(&addr, sql, &["--format", "arrow"])).await;
    assert!(ok, "{err}");
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(out.as_slice(), None).unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(common::strings(&batches, 0), ["a", "b", "c"]);

    // Parameters are bound to the placeholders, cast to the types the server asks for.
    let (ok, out, err) = run_binary(query_args(
        &addr,
        "SELECT id FROM seqs WHERE length(sequence) >= $1 AND id <> $2 ORDER BY id",
        &["--param", "2", "--param", "a", "--format", "csv"],
    ))
    .await;
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8(out).unwrap(), "id\nb\n");

    // Errors: the gRPC code and the server's message on stderr, exit status 1.
    let (ok, out, err) = run_binary(query_args(&addr, "SELECT nope FROM seqs", &[])).await;
    assert!(!ok && out.is_empty());
    assert!(
        err.starts_with("flightbear query: INVALID_ARGUMENT: "),
        "{err}"
    );
    assert!(err.contains("nope"), "{err}");
    let (ok, _, err) = run_binary(query_args(&addr, "SELECT 1", &["--format", "xml"])).await;
    assert!(
        !ok && err.contains("expected table, csv, jsonl or arrow"),
        "{err}"
    );
    let closed = format!("127.0.0.1:{}", free_port());
    let (ok, _, err) = run_binary(query_args(&closed, "SELECT 1", &[])).await;
    assert!(
        !ok && err.contains(&format!("cannot connect to {closed}")),
        "{err}"
    );

    // `tables` lists each table with its columns.
    let (ok, out, err) = run_binary(vec!["tables".into(), "--addr".into(), addr.clone()]).await;
    assert!(ok, "{err}");
    let listing = String::from_utf8(out).unwrap();
    assert!(
        listing.contains("flightbear.public.seqs (table)\n    id Utf8 NOT NULL\n    description Utf8\n    sequence Utf8 NOT NULL\n"),
        "{listing}"
    );
    server.shutdown().await.unwrap();
}
