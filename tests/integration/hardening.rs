//! The edge against connection abuse, over real sockets: a client at its limit of calls in
//! flight is refused while others are served, a call whose body never arrives is answered at the
//! default deadline, and connections that start no call, sit idle or come over the limit are
//! closed. (The hostile HTTP/2 frames themselves are sent by tests/edge, against the binary.)

use std::time::Duration;

use bytes::Bytes;
use codepipeline_gateway::pb::jobworker::{
    self as pb, job_worker_service_client::JobWorkerServiceClient,
};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::support::{Backend, TestGateway, gateway};

const UNKNOWN_JOB: &str = "00000000-0000-4000-8000-000000000000";

fn ack(token: &str) -> Request<pb::AcknowledgeJobRequest> {
    let mut request = Request::new(pb::AcknowledgeJobRequest {
        job_id: UNKNOWN_JOB.to_owned(),
        nonce: "1".to_owned(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A gateway whose token file lists clients `a` (token `token-a`) and `b` (`token-b`).
async fn two_clients(dir: &tempfile::TempDir, flags: &[&str], engine: &[&str]) -> TestGateway {
    let entry = |id: &str| {
        format!(
            "[[clients]]\nid = \"{id}\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n",
            hex::encode(Sha256::digest(format!("token-{id}").as_bytes()))
        )
    };
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, entry("a") + &entry("b")).unwrap();
    gateway(Backend::InProcess)
        .flags(&["--token-file", file.to_str().unwrap()])
        .flags(flags)
        .engine(engine)
        .spawn()
        .await
}

async fn client(gw: &TestGateway) -> JobWorkerServiceClient<tonic::transport::Channel> {
    JobWorkerServiceClient::new(crate::support::connect(gw.addr()).await)
}

#[tokio::test]
async fn a_client_at_its_limit_of_calls_in_flight_is_refused_while_another_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let gw = two_clients(
        &dir,
        &["--max-concurrent-calls-per-client", "2"],
        &["--latency", "300ms"],
    )
    .await;
    let a = client(&gw).await;
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let mut a = a.clone();
            tokio::spawn(async move { a.acknowledge_job(ack("token-a")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = client(&gw).await.acknowledge_job(ack("token-b")).await;
    assert_eq!(
        b.unwrap_err().code(),
        Code::NotFound,
        "client b is served while a is at its limit"
    );
    let mut codes = Vec::new();
    let mut refusal = None;
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        codes.push(status.code());
        if status.code() == Code::ResourceExhausted {
            refusal = Some(status);
        }
    }
    codes.sort_by_key(|code| *code as i32);
    assert_eq!(
        codes,
        [Code::NotFound, Code::NotFound, Code::ResourceExhausted]
    );
    let refusal = refusal.unwrap();
    assert_eq!(
        refusal.get_details_quota_failure().unwrap().violations[0].subject,
        "client:a"
    );
    assert!(refusal.get_details_retry_info().is_some());
    assert_eq!(
        gw.emulator.total_calls(),
        3,
        "the refused call never went upstream"
    );
    assert!(
        gw.metrics
            .render()
            .contains("gateway_client_concurrency_limited_total 1")
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_call_whose_body_never_arrives_is_answered_deadline_exceeded_at_the_default_deadline() {
    let gw = gateway(Backend::InProcess)
        .flags(&["--default-deadline", "300ms"])
        .spawn()
        .await;
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!(
        "http://{}/codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob",
        gw.addr()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    // Headers only: the body is promised (no END_STREAM) and never sent.
    let (response, _body) = h2.send_request(request, false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered, not held")
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "4", "{response:?}");
    assert_eq!(gw.emulator.total_calls(), 0);
    gw.stop().await;
}

/// Reads from `stream` until the peer closes it (or 5 s pass): what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the gateway closed the connection");
    received
}

#[tokio::test]
async fn a_connection_that_starts_no_call_is_closed_after_the_handshake_timeout() {
    let gw = gateway(Backend::InProcess)
        .flags(&["--handshake-timeout", "200ms"])
        .spawn()
        .await;
    let mut silent = TcpStream::connect(gw.addr()).await.unwrap();
    read_until_closed(&mut silent).await;
    assert!(
        gw.metrics
            .render()
            .contains(r#"gateway_connections_closed_total{reason="handshake_timeout"} 1"#)
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_its_client_reconnects() {
    let gw = gateway(Backend::InProcess)
        .flags(&["--idle-timeout", "200ms"])
        .spawn()
        .await;
    let mut client = client(&gw).await;
    let first = client.acknowledge_job(ack("unused")).await.unwrap_err();
    assert_eq!(first.code(), Code::NotFound);
    let closed = r#"gateway_connections_closed_total{reason="idle"} 1"#;
    let mut waited = Duration::ZERO;
    while !gw.metrics.render().contains(closed) && waited < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert!(
        gw.metrics.render().contains(closed),
        "the idle connection was closed"
    );
    let again = client.acknowledge_job(ack("unused")).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "the client reconnects");
    gw.stop().await;
}

/// The frames in `bytes`: (type, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, Bytes)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let kind = bytes[3];
        let payload = Bytes::copy_from_slice(&bytes[9..(9 + length).min(bytes.len())]);
        frames.push((kind, payload));
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    frames
}

#[tokio::test]
async fn a_connection_over_the_limit_is_refused_with_goaway_enhance_your_calm() {
    const GOAWAY: u8 = 0x7;
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    let gw = gateway(Backend::InProcess)
        // The held connections start no call; the handshake timeout ends them, and the test.
        .flags(&["--max-connections", "2", "--handshake-timeout", "1s"])
        .spawn()
        .await;
    let _held: Vec<TcpStream> = vec![
        TcpStream::connect(gw.addr()).await.unwrap(),
        TcpStream::connect(gw.addr()).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(gw.addr()).await.unwrap();
    third
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let received = read_until_closed(&mut third).await;
    let goaway = frames(&received)
        .into_iter()
        .find(|(kind, _)| *kind == GOAWAY)
        .expect("a GOAWAY frame");
    let code = u32::from_be_bytes(goaway.1[4..8].try_into().unwrap());
    assert_eq!(code, ENHANCE_YOUR_CALM);
    assert!(String::from_utf8_lossy(&goaway.1[8..]).contains("connection limit"));
    assert!(
        gw.metrics
            .render()
            .contains("gateway_connections_refused_total 1")
    );
    gw.stop().await;
}

/// The value of a counter in the gateway's metrics, 0 if it has no sample yet.
fn counter(gw: &TestGateway, sample: &str) -> u64 {
    gw.metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

/// One long-lived channel, as a worker keeps it: back-to-back slow calls across several maximum
/// ages. Each connection says GOAWAY at its age, the call in flight on it finishes within the
/// grace, and the channel moves the next calls to a new connection: no call is cut.
#[tokio::test]
async fn calls_on_a_long_lived_channel_outlive_its_connections_maximum_age() {
    let mut gw = gateway(Backend::InProcess)
        .flags(&[
            "--max-connection-age",
            "1s",
            "--max-connection-age-grace",
            "1s",
        ])
        .spawn()
        .await;
    let (job_id, _) = gw.in_progress_job().await;
    gw.emulator.set_faults(
        codepipeline_gateway::emulator::faults::FaultPlan::parse("GetJobDetails:latency=600ms")
            .unwrap(),
    );
    let started = std::time::Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let answer = gw
            .client
            .get_job_details(pb::GetJobDetailsRequest {
                job_id: job_id.clone(),
            })
            .await;
        calls += 1;
        assert!(answer.is_ok(), "call {calls} was cut: {answer:?}");
    }
    assert!(
        counter(&gw, "gateway_connections_aged_total") >= 2,
        "connections aged: {}",
        gw.metrics.render()
    );
    assert_eq!(
        counter(
            &gw,
            r#"gateway_connections_closed_total{reason="age_grace_expired"}"#
        ),
        0,
        "no connection needed cutting"
    );
    gw.stop().await;
}
