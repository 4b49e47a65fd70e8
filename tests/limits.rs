//! Limits that keep one client from hurting the others, against a real server: query
//! complexity, cancellation, deadlines, admission, memory.

mod common;

use std::time::{Duration, Instant};

use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
use common::*;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use flightbear::config::ByteSize;
use futures::StreamExt;
use prost::Message;
use tonic::Code;

/// Runs for minutes unless stopped.
const ENDLESS: &str = "SELECT count(*) FROM generate_series(1, 100000000000)";

async fn count(client: &mut Client, sql: &str) -> i64 {
    let batches = query(client, sql).await;
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

type Client = arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>;

#[tokio::test(flavor = "multi_thread")]
async fn sql_too_deep_to_plan_is_refused_and_the_server_keeps_serving() {
    let server = start_server(Vec::new(), |_| {}).await;
    let mut client = client(&server).await;
    let chain = vec!["1"; 2000].join("+");
    let union = (0..5000)
        .map(|i| format!("SELECT {i}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    for sql in [format!("SELECT {chain}"), union] {
        let status = status_of(client.execute(sql, None).await.unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("query too complex"),
            "{status}"
        );
    }
    let chain = vec!["1"; 400].join("+");
    assert_eq!(count(&mut client, &format!("SELECT {chain}")).await, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_flight_info_stops_the_running_stream_and_refuses_later_ones() {
    let server = start_server(Vec::new(), |_| {}).await;
    let mut client = client(&server).await;
    let info = client.execute(ENDLESS.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket.clone()).await.unwrap();
    // Let the query start before it is cancelled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let request = CancelFlightInfoRequest::new(info.clone());
    let mut answers = client
        .inner_mut()
        .do_action(Action::new("CancelFlightInfo", request.encode_to_vec()))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let result = CancelFlightInfoResult::decode(answer.body).unwrap();
    assert_eq!(result.status(), CancelStatus::Cancelled);

    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream ends soon after the cancel");
    let status = status_of(ended.unwrap().unwrap_err());
    assert_eq!(status.code(), Code::Cancelled, "{status}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let late = client.do_get(ticket).await;
    let status = match late {
        Err(error) => status_of(error),
        Ok(mut stream) => status_of(stream.next().await.unwrap().unwrap_err()),
    };
    assert_eq!(status.code(), Code::Cancelled);
    assert_eq!(count(&mut client, "SELECT 41 + 1").await, 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_past_the_server_timeout_ends_with_deadline_exceeded() {
    let server = start_server(Vec::new(), |config| config.query_timeout = 1).await;
    let mut client = client(&server).await;
    let info = client.execute(ENDLESS.into(), None).await.unwrap();
    let error = fetch(&mut client, &info).await.unwrap_err();
    let status = status_of(error);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.message().contains("--query-timeout"), "{status}");
    assert_eq!(count(&mut client, "SELECT 1").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_server_turns_away_queries_after_the_queue_wait() {
    let server = start_server(Vec::new(), |config| {
        config.max_concurrent_queries = 1;
        config.queue_timeout = 1;
    })
    .await;
    let mut busy = client(&server).await;
    let info = busy.execute(ENDLESS.into(), None).await.unwrap();
    let running = busy
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let mut other = client(&server).await;
    let info = other.execute("SELECT 1".into(), None).await.unwrap();
    let status = status_of(fetch(&mut other, &info).await.unwrap_err());
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("busy"), "{status}");
    drop(running);
    // The slot frees once the server notices the stream is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = other.execute("SELECT 1".into(), None).await.unwrap();
        match fetch(&mut other, &info).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("the slot never freed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_table_as_counts_against_the_memory_limit() {
    let server = start_server(Vec::new(), |config| {
        config.memory_limit = Some(ByteSize::mib(32));
    })
    .await;
    let mut client = client(&server).await;
    let status = status_of(
        client
            .execute(
                "CREATE TABLE big AS SELECT repeat('x', 1000) AS s \
                 FROM generate_series(1, 200000)"
                    .into(),
                None,
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("memory limit of 32MiB"),
        "{status}"
    );
    client
        .execute(
            "CREATE TABLE small AS SELECT value FROM generate_series(1, 1000)".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(count(&mut client, "SELECT count(*) FROM small").await, 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_longer_than_the_limit_is_refused_with_the_limit_named() {
    let server = start_server(Vec::new(), |config| {
        config.max_sql_bytes = ByteSize(64 * 1024);
    })
    .await;
    let mut client = client(&server).await;
    let literal = "A".repeat(100 * 1024);
    let status = status_of(
        client
            .execute(format!("SELECT length('{literal}')"), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("--max-sql-bytes"), "{status}");
    // Far past the request size limit: refused by the transport, same code and hint.
    let huge = "A".repeat(40 * 1024 * 1024);
    let status = status_of(
        client
            .execute(format!("SELECT length('{huge}')"), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("--max-sql-bytes"), "{status}");
}
