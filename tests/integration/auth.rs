//! Authentication and authorisation over real gRPC: bearer tokens from a reloading token file,
//! health without credentials, and refusals that never reach the upstream.

use std::{path::Path, sync::Arc, time::Duration};

use codepipeline_gateway::{observability::Metrics, pb::jobworker as pb};
use sha2::{Digest, Sha256};
use tonic::{Code, Request};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

use crate::support::{Backend, TestGateway, demo_action_type, gateway};

const ALL_RPCS: &str = r#"["*"]"#;
const ACK_ONLY: &str = r#"["AcknowledgeJob"]"#;

fn entry(id: &str, token: &str, allowed: &str) -> String {
    format!(
        "[[clients]]\nid = \"{id}\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = {allowed}\n",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn poll_request() -> pb::PollForJobsRequest {
    pb::PollForJobsRequest {
        action_type_id: Some(demo_action_type()),
        max_batch_size: Some(1),
        query_param: Default::default(),
    }
}

fn error_reason(status: &tonic::Status) -> String {
    status.get_details_error_info().expect("ErrorInfo").reason
}

async fn spawn_with_token_file(path: &Path, poll: Duration) -> (TestGateway, Arc<Metrics>) {
    let poll = humantime::format_duration(poll).to_string();
    let gw = gateway(Backend::InProcess)
        .flags(&[
            "--token-file",
            path.to_str().unwrap(),
            "--token-file-poll-interval",
            &poll,
        ])
        .spawn()
        .await;
    let metrics = gw.metrics.clone();
    (gw, metrics)
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated_and_never_reach_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, entry("workers", "good-token", ALL_RPCS)).unwrap();
    let (mut gw, _) = spawn_with_token_file(&file, Duration::from_secs(60)).await;

    let missing = gw.client.poll_for_jobs(poll_request()).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(error_reason(&missing), "MISSING_CREDENTIALS");

    let wrong = gw
        .client
        .poll_for_jobs(authed(poll_request(), "bad-token"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(error_reason(&wrong), "UNKNOWN_TOKEN");

    let mut basic = Request::new(poll_request());
    basic
        .metadata_mut()
        .insert("authorization", "Basic d29ya2Vyczpnb29k".parse().unwrap());
    let malformed = gw.client.poll_for_jobs(basic).await.unwrap_err();
    assert_eq!(malformed.code(), Code::Unauthenticated);
    assert_eq!(error_reason(&malformed), "MALFORMED_AUTHORIZATION");

    assert_eq!(
        gw.emulator.total_calls(),
        0,
        "no refused call reached the emulator"
    );
    gw.client
        .poll_for_jobs(authed(poll_request(), "good-token"))
        .await
        .expect("a valid token is accepted");
    assert_eq!(gw.emulator.total_calls(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_client_calling_an_rpc_it_is_not_allowed_is_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, entry("acker", "ack-token", ACK_ONLY)).unwrap();
    let (mut gw, metrics) = spawn_with_token_file(&file, Duration::from_secs(60)).await;

    let denied = gw
        .client
        .poll_for_jobs(authed(poll_request(), "ack-token"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let info = denied.get_details_error_info().unwrap();
    assert_eq!(info.reason, "METHOD_NOT_ALLOWED");
    assert_eq!(info.metadata["client_id"], "acker");
    assert_eq!(gw.emulator.total_calls(), 0);

    let allowed = gw
        .client
        .acknowledge_job(authed(
            pb::AcknowledgeJobRequest {
                job_id: "00000000-0000-4000-8000-000000000000".to_owned(),
                nonce: "1".to_owned(),
            },
            "ack-token",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        allowed.code(),
        Code::NotFound,
        "the allowed call reached the upstream"
    );
    assert!(
        metrics
            .render()
            .contains(r#"gateway_auth_rejected_total{reason="forbidden"} 1"#)
    );
    gw.stop().await;
}

#[tokio::test]
async fn health_is_reachable_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, entry("workers", "t", ALL_RPCS)).unwrap();
    let (gw, _) = spawn_with_token_file(&file, Duration::from_secs(60)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", gw.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    gw.stop().await;
}

/// Polls `check` until it holds. The bound is a safety net for a broken build, not a measure:
/// each check waits on the gateway having done something (a reload counted, a token taken).
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Replaces the file as Kubernetes replaces a mounted Secret: whole, in one rename, so no
/// reload can read it half-written.
fn replace_atomically(file: &Path, content: &str) {
    let next = file.with_extension("next");
    std::fs::write(&next, content).unwrap();
    std::fs::rename(&next, file).unwrap();
}

/// How many reloads of the token file ended with `result`, from the metrics page.
fn reloads(metrics: &Metrics, result: &str) -> u64 {
    let page = metrics.render();
    let prefix = format!("gateway_token_file_reloads_total{{result=\"{result}\"}} ");
    page.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |count| count.trim().parse().unwrap())
}

#[tokio::test]
async fn a_rotated_token_file_takes_effect_without_a_restart_and_a_broken_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, entry("workers", "old-token", ALL_RPCS)).unwrap();
    let (mut gw, metrics) = spawn_with_token_file(&file, Duration::from_millis(20)).await;
    gw.client
        .poll_for_jobs(authed(poll_request(), "old-token"))
        .await
        .unwrap();

    let loaded = reloads(&metrics, "success");
    replace_atomically(&file, &entry("workers", "new-token", ALL_RPCS));
    assert!(
        eventually(async || reloads(&metrics, "success") > loaded).await,
        "the rotated file is reloaded"
    );
    gw.client
        .poll_for_jobs(authed(poll_request(), "new-token"))
        .await
        .expect("the new token is accepted");
    let old = gw
        .client
        .poll_for_jobs(authed(poll_request(), "old-token"))
        .await
        .unwrap_err();
    assert_eq!(
        old.code(),
        Code::Unauthenticated,
        "the rotated-out token is refused"
    );

    let failed = reloads(&metrics, "failure");
    replace_atomically(&file, "[[clients]\nthis is not toml");
    assert!(
        eventually(async || reloads(&metrics, "failure") > failed).await,
        "the broken file is refused"
    );
    assert!(metrics.render().contains("gateway_token_file_healthy 0"));
    gw.client
        .poll_for_jobs(authed(poll_request(), "new-token"))
        .await
        .expect("the last good file stays in force");
    gw.stop().await;
}

/// A file rewritten in place is truncated before it is written: the reload that reads it empty
/// must not lock every worker out (this is what made the test above flaky when it rewrote the
/// file in place).
#[tokio::test]
async fn a_token_file_read_empty_mid_rewrite_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, entry("workers", "token", ALL_RPCS)).unwrap();
    let (mut gw, metrics) = spawn_with_token_file(&file, Duration::from_millis(20)).await;

    let failed = reloads(&metrics, "failure");
    std::fs::write(&file, "").unwrap();
    assert!(
        eventually(async || reloads(&metrics, "failure") > failed).await,
        "the empty read is refused"
    );
    gw.client
        .poll_for_jobs(authed(poll_request(), "token"))
        .await
        .expect("the last good file stays in force");

    let loaded = reloads(&metrics, "success");
    std::fs::write(&file, "clients = []\n").unwrap();
    assert!(
        eventually(async || reloads(&metrics, "success") > loaded).await,
        "a file that says it lists nobody is taken"
    );
    let refused = gw
        .client
        .poll_for_jobs(authed(poll_request(), "token"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    gw.stop().await;
}

/// Creates a demo job through the admin service, which needs a token too.
async fn create_job(gw: &mut TestGateway, token: &str) -> String {
    gw.admin
        .create_job(authed(
            codepipeline_gateway::pb::emulator::CreateJobRequest {
                action_type_id: Some(demo_action_type()),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("CreateJob")
        .into_inner()
        .job_id
}

/// A StreamJobs stream opened with `token`, subscribed to the demo action type with `credit`.
async fn open_stream(
    gw: &TestGateway,
    token: &str,
    credit: i32,
) -> (
    tokio::sync::mpsc::Sender<pb::StreamJobsRequest>,
    tonic::Streaming<pb::StreamJobsResponse>,
) {
    use pb::stream_jobs_request::Request as Send;
    let (requests, outgoing) = tokio::sync::mpsc::channel(64);
    requests
        .send(pb::StreamJobsRequest {
            request: Some(Send::Subscription(pb::StreamJobsSubscription {
                action_type_id: Some(demo_action_type()),
                query_param: Default::default(),
                max_outstanding_jobs: credit,
            })),
        })
        .await
        .unwrap();
    let responses = gw
        .client
        .clone()
        .stream_jobs(authed(
            tokio_stream::wrappers::ReceiverStream::new(outgoing),
            token,
        ))
        .await
        .expect("the stream opens")
        .into_inner();
    (requests, responses)
}

/// The status a stream ends with, within five seconds; the messages before it are skipped.
async fn stream_end(responses: &mut tonic::Streaming<pb::StreamJobsResponse>) -> tonic::Status {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ended")
}

/// The token rotation docs/authentication.md describes must reach streams already open: a removed client's
/// stream ends UNAUTHENTICATED when the file is reloaded, and the jobs go to the clients still
/// listed. A narrowed `allowed_rpcs` ends the stream PERMISSION_DENIED.
#[tokio::test]
async fn a_reloaded_token_file_reaches_the_job_streams_already_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(
        &file,
        entry("leaving", "leaving-token", ALL_RPCS)
            + &entry("narrowed", "narrowed-token", ALL_RPCS)
            + &entry("staying", "staying-token", ALL_RPCS),
    )
    .unwrap();
    let (mut gw, _metrics) = spawn_with_token_file(&file, Duration::from_millis(20)).await;
    let (_leaving_requests, mut leaving) = open_stream(&gw, "leaving-token", 1).await;
    let (_narrowed_requests, mut narrowed) = open_stream(&gw, "narrowed-token", 1).await;

    std::fs::write(
        &file,
        entry("narrowed", "narrowed-token", ACK_ONLY)
            + &entry("staying", "staying-token", ALL_RPCS),
    )
    .unwrap();
    let removed = stream_end(&mut leaving).await;
    assert_eq!(removed.code(), Code::Unauthenticated, "{removed:?}");
    assert_eq!(error_reason(&removed), "UNKNOWN_TOKEN");
    let forbidden = stream_end(&mut narrowed).await;
    assert_eq!(forbidden.code(), Code::PermissionDenied, "{forbidden:?}");

    let (_staying_requests, mut staying) = open_stream(&gw, "staying-token", 1).await;
    let id = create_job(&mut gw, "staying-token").await;
    let delivered = tokio::time::timeout(Duration::from_secs(5), staying.message())
        .await
        .expect("delivered in time")
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            delivered.response,
            Some(pb::stream_jobs_response::Response::Job(ref job)) if job.id == id
        ),
        "{delivered:?}"
    );
    gw.stop().await;
}

/// Found attacking issue 21: a client allowed StreamJobs but not AcknowledgeJob acknowledged
/// jobs on its stream, while its unary AcknowledgeJob was PERMISSION_DENIED. A stream needs
/// both, when it opens and after every reload.
#[tokio::test]
async fn a_job_stream_needs_acknowledge_job_as_well_as_stream_jobs() {
    use pb::stream_jobs_request::Request as Send;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let streams_only = r#"["StreamJobs", "PollForJobs"]"#;
    std::fs::write(
        &file,
        entry("streams-only", "streams-only-token", streams_only)
            + &entry("narrowed", "narrowed-token", ALL_RPCS),
    )
    .unwrap();
    let (gw, _metrics) = spawn_with_token_file(&file, Duration::from_millis(20)).await;
    let subscription = pb::StreamJobsRequest {
        request: Some(Send::Subscription(pb::StreamJobsSubscription {
            action_type_id: Some(demo_action_type()),
            query_param: Default::default(),
            max_outstanding_jobs: 1,
        })),
    };
    let refused = gw
        .client
        .clone()
        .stream_jobs(authed(
            tokio_stream::iter([subscription]),
            "streams-only-token",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("AcknowledgeJob"), "{refused:?}");

    let (_requests, mut narrowed) = open_stream(&gw, "narrowed-token", 1).await;
    std::fs::write(&file, entry("narrowed", "narrowed-token", streams_only)).unwrap();
    let forbidden = stream_end(&mut narrowed).await;
    assert_eq!(forbidden.code(), Code::PermissionDenied, "{forbidden:?}");
    gw.stop().await;
}

/// A client's rate changed by a reload while its stream is open: the stream's acknowledgements
/// and its unary calls count against one rate, the new one, with no fresh burst for either.
#[tokio::test]
async fn a_rate_changed_while_a_stream_is_open_holds_for_its_stream_and_its_unary_calls() {
    use pb::stream_jobs_request::Request as Send;
    let rated = |burst: u32| {
        entry("rated", "rated-token", ALL_RPCS) + &format!("rate_per_second = 1\nburst = {burst}\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let rated = |burst: u32| rated(burst) + &entry("admin", "admin-token", ALL_RPCS);
    std::fs::write(&file, rated(1)).unwrap();
    let (mut gw, metrics) = spawn_with_token_file(&file, Duration::from_millis(20)).await;
    // Twelve jobs, made by an admin client with a rate of its own.
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(create_job(&mut gw, "admin-token").await);
    }
    // Opening the stream takes the burst of 1.
    let (requests, mut responses) = open_stream(&gw, "rated-token", 12).await;
    let mut delivered = 0;
    while delivered < 12 {
        let message = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("the jobs are delivered")
            .unwrap()
            .unwrap();
        if let Some(pb::stream_jobs_response::Response::Job(_)) = message.response {
            delivered += 1;
        }
    }
    std::fs::write(&file, rated(2)).unwrap();
    assert!(
        eventually(async || metrics
            .render()
            .contains(r#"gateway_token_file_reloads_total{result="success"} 2"#))
        .await,
        "the new rate is loaded"
    );
    let mut unary_admitted = 0;
    for id in &ids {
        requests
            .send(pb::StreamJobsRequest {
                request: Some(Send::Acknowledge(pb::StreamJobsAcknowledge {
                    job_id: id.clone(),
                })),
            })
            .await
            .unwrap();
        let unary = gw
            .client
            .get_job_details(authed(
                pb::GetJobDetailsRequest { job_id: id.clone() },
                "rated-token",
            ))
            .await;
        match unary {
            Ok(_) => unary_admitted += 1,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    let mut stream_admitted = 0;
    for _ in 0..12 {
        let message = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("every acknowledgement is answered")
            .unwrap()
            .unwrap();
        match message.response {
            Some(pb::stream_jobs_response::Response::Acknowledged(answer)) => match answer.error {
                None => stream_admitted += 1,
                Some(error) => assert_eq!(error.code, Code::ResourceExhausted as i32, "{error:?}"),
            },
            other => panic!("expected an answer, got {other:?}"),
        }
    }
    // At 1/s the test's second or so admits one or two more, not 24.
    assert!(
        stream_admitted + unary_admitted <= 3,
        "admitted {stream_admitted} acknowledgements and {unary_admitted} unary calls"
    );
    gw.stop().await;
}
