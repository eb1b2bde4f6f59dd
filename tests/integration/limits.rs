//! Rate limits, load shedding, message size, deadlines and panics over real gRPC: each refusal
//! has its precise code and details, never reaches the upstream, and the gateway keeps serving.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use codepipeline_gateway::{
    limits::LimitClock,
    pb::jobworker as pb,
    upstream::{Upstream, UpstreamAnswer, UpstreamCall, UpstreamError},
};
use governor::clock::FakeRelativeClock;
use pb::job_worker_service_client::JobWorkerServiceClient;
use tonic::{Code, Request, transport::Channel};
use tonic_types::StatusExt;

use crate::support::{Backend, gateway, spawn};

/// A clock that stands still unless a test moves it, so no token is refilled mid-test.
fn frozen_clock() -> LimitClock {
    LimitClock::Fake(FakeRelativeClock::default())
}

const UNKNOWN_JOB: &str = "00000000-0000-4000-8000-000000000000";

fn ack() -> pb::AcknowledgeJobRequest {
    pb::AcknowledgeJobRequest {
        job_id: UNKNOWN_JOB.to_owned(),
        nonce: "1".to_owned(),
    }
}

async fn connect(addr: std::net::SocketAddr) -> JobWorkerServiceClient<Channel> {
    JobWorkerServiceClient::new(crate::support::connect(addr).await)
}

/// The upstream budget guards the AWS account's quota for every client together, so requests
/// that never go upstream must not spend it: one client's bad input would starve the others.
#[tokio::test]
async fn only_calls_that_go_upstream_spend_the_upstream_budget() {
    let gw = gateway(Backend::InProcess)
        .flags(&[
            "--upstream-rate-limit-per-second",
            "1",
            "--upstream-rate-limit-burst",
            "3",
        ])
        .limit_clock(frozen_clock())
        .spawn()
        .await;
    let mut client = connect(gw.addr()).await;
    for _ in 0..10 {
        let invalid = pb::AcknowledgeJobRequest {
            job_id: "not-a-job-id".to_owned(),
            nonce: String::new(),
        };
        let status = client.acknowledge_job(invalid).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    // The whole burst is still there for valid calls, which the emulator answers NOT_FOUND.
    for call in 0..3 {
        let status = client.acknowledge_job(ack()).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "call {call}: {status:?}");
    }
    // Then the budget runs out at once: the clock stands still, so nothing is refilled.
    let refused = client.acknowledge_job(ack()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused.get_details_quota_failure().unwrap().violations[0].subject,
        "operation:AcknowledgeJob"
    );
    assert!(refused.get_details_retry_info().is_some());
    assert_eq!(
        gw.emulator.total_calls(),
        3,
        "only calls within the budget reached the upstream"
    );
    assert!(
        gw.metrics
            .render()
            .contains(r#"gateway_rate_limited_total{scope="upstream"} 1"#)
    );
    gw.stop().await;
}

#[tokio::test]
async fn one_clients_rate_holds_across_many_connections() {
    let gw = gateway(Backend::InProcess)
        .flags(&["--rate-limit-per-second", "1", "--rate-limit-burst", "5"])
        .limit_clock(frozen_clock())
        .spawn()
        .await;
    let mut connections = Vec::new();
    for _ in 0..10 {
        connections.push(connect(gw.addr()).await);
    }
    let mut admitted = 0;
    let mut limited = Vec::new();
    for round in 0..3 {
        for client in &mut connections {
            match client.acknowledge_job(ack()).await {
                Err(status) if status.code() == Code::ResourceExhausted => limited.push(status),
                // Admitted calls reach the emulator, which knows no such job.
                Err(status) if status.code() == Code::NotFound => admitted += 1,
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
    }
    // Exactly the burst of 5: the clock stands still, so nothing is refilled.
    assert_eq!(admitted, 5, "admitted {admitted} of 30");
    assert_eq!(
        gw.emulator.total_calls(),
        admitted as u64,
        "limited calls never reached the upstream"
    );
    let status = &limited[0];
    let retry = status
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(retry <= Duration::from_secs(1), "{retry:?}");
    assert_eq!(
        status.get_details_quota_failure().unwrap().violations[0].subject,
        "client:anonymous"
    );
    assert!(
        gw.metrics
            .render()
            .contains(r#"gateway_rate_limited_total{scope="client"} 25"#)
    );
    gw.stop().await;
}

#[tokio::test]
async fn calls_beyond_the_concurrency_limit_are_shed_at_once_with_unavailable() {
    let gw = gateway(Backend::InProcess)
        .flags(&["--max-concurrent-calls", "2"])
        .engine(&["--latency", "400ms"])
        .spawn()
        .await;
    let client = connect(gw.addr()).await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.acknowledge_job(ack()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = tonic_health::pb::health_client::HealthClient::new(
        crate::support::connect(gw.addr()).await,
    )
    .check(tonic_health::pb::HealthCheckRequest::default())
    .await;
    assert!(health.is_ok(), "health checks are never shed: {health:?}");
    let mut shed = 0;
    let mut served = 0;
    for call in calls {
        match call.await.unwrap() {
            Err(status) if status.code() == Code::Unavailable => {
                assert_eq!(
                    status.get_details_error_info().unwrap().reason,
                    "OVERLOADED"
                );
                assert!(status.get_details_retry_info().is_some());
                shed += 1;
            }
            Err(status) if status.code() == Code::NotFound => served += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((served, shed), (2, 4));
    let mut client = client;
    assert_eq!(
        client.acknowledge_job(ack()).await.unwrap_err().code(),
        Code::NotFound,
        "the gateway serves again once load is gone"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_request_message_over_the_size_limit_is_resource_exhausted() {
    let mut gw = gateway(Backend::InProcess)
        .flags(&["--max-message-size", "1024"])
        .spawn()
        .await;
    let status = gw
        .client
        .put_job_failure_result(pb::PutJobFailureResultRequest {
            job_id: UNKNOWN_JOB.to_owned(),
            failure_details: Some(pb::FailureDetails {
                r#type: pb::FailureType::JobFailed.into(),
                message: "x".repeat(4000),
                external_execution_id: None,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(gw.emulator.total_calls(), 0);
    assert_eq!(
        gw.client.acknowledge_job(ack()).await.unwrap_err().code(),
        Code::NotFound
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_callers_deadline_bounds_the_upstream_call_and_says_the_outcome_is_indeterminate() {
    let mut gw = gateway(Backend::InProcess)
        .engine(&["--latency", "2s"])
        .spawn()
        .await;
    // The header, not a client-side timeout, so what we read is the gateway's own answer.
    let mut request = Request::new(ack());
    request
        .metadata_mut()
        .insert("grpc-timeout", "200m".parse().unwrap());
    let status = gw.client.acknowledge_job(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "UPSTREAM_TIMEOUT");
    assert_eq!(info.metadata["indeterminate"], "true");

    let mut read = Request::new(pb::GetJobDetailsRequest {
        job_id: UNKNOWN_JOB.to_owned(),
    });
    read.metadata_mut()
        .insert("grpc-timeout", "200m".parse().unwrap());
    let status = gw.client.get_job_details(read).await.unwrap_err();
    assert_eq!(
        status.get_details_error_info().unwrap().metadata["indeterminate"],
        "false"
    );
    gw.stop().await;
}

/// An upstream whose every call panics: a bug the gateway must survive.
struct PanickingUpstream;

#[async_trait]
impl Upstream for PanickingUpstream {
    async fn call(&self, call: UpstreamCall) -> Result<UpstreamAnswer, UpstreamError> {
        panic!("{} bug", call.operation())
    }
}

#[tokio::test]
async fn a_panicking_call_answers_internal_and_the_connection_keeps_serving() {
    let gw = gateway(Backend::InProcess)
        .upstream(Arc::new(PanickingUpstream))
        .spawn()
        .await;
    let mut client = connect(gw.addr()).await;
    for _ in 0..3 {
        let status = client.acknowledge_job(ack()).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(
            status.message(),
            "unexpected error",
            "the panic message is not shown"
        );
    }
    let invalid = client
        .acknowledge_job(pb::AcknowledgeJobRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        invalid.code(),
        Code::InvalidArgument,
        "the same connection still answers"
    );
    let text = gw.metrics.render();
    assert!(text.contains(
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="codepipeline.jobworker.v1.JobWorkerService",grpc_method="AcknowledgeJob",grpc_code="Internal"} 3"#
    ), "{text}");
    gw.stop().await;
}

#[tokio::test]
async fn the_metrics_page_counts_calls_by_code_and_upstream_outcome() {
    let mut gw = spawn(Backend::InProcess).await;
    gw.client.acknowledge_job(ack()).await.unwrap_err();
    gw.client
        .acknowledge_job(pb::AcknowledgeJobRequest::default())
        .await
        .unwrap_err();
    gw.poll(1).await;

    let page = crate::support::scrape_metrics(gw.metrics_addr()).await;
    for expected in [
        r#"grpc_server_started_total{grpc_type="unary",grpc_service="codepipeline.jobworker.v1.JobWorkerService",grpc_method="AcknowledgeJob"} 2"#,
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="codepipeline.jobworker.v1.JobWorkerService",grpc_method="AcknowledgeJob",grpc_code="NotFound"} 1"#,
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="codepipeline.jobworker.v1.JobWorkerService",grpc_method="AcknowledgeJob",grpc_code="InvalidArgument"} 1"#,
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="codepipeline.jobworker.v1.JobWorkerService",grpc_method="PollForJobs",grpc_code="OK"} 1"#,
        r#"codepipeline_upstream_calls_total{operation="AcknowledgeJob",outcome="JobNotFoundException"} 1"#,
        r#"codepipeline_upstream_calls_total{operation="PollForJobs",outcome="success"} 1"#,
        "grpc_server_handling_seconds_bucket",
        "gateway_in_flight_calls 0",
    ] {
        assert!(page.contains(expected), "missing {expected}\n{page}");
    }
    gw.stop().await;
}
