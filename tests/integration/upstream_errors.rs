//! Every modelled CodePipeline error, through both upstreams, arrives as the DESIGN table's gRPC
//! code with an ErrorInfo naming the AWS error code.

use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future,
};
use codepipeline_gateway::{api::status::AWS_DOMAIN, pb::jobworker as pb};
use rstest::rstest;

use rstest_reuse::apply;

use crate::support::{Backend, every_backend, gateway, spawn};
use tonic::Code;
use tonic_types::StatusExt;

const UNKNOWN_JOB: &str = "00000000-0000-4000-8000-000000000000";

/// Asserts the status's code and its ErrorInfo reason and domain; returns the ErrorInfo.
fn assert_aws_error(
    status: &tonic::Status,
    code: Code,
    reason: &str,
    backend: Backend,
) -> tonic_types::ErrorInfo {
    assert_eq!(status.code(), code, "{backend:?}: {status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, reason, "{backend:?}");
    assert_eq!(info.domain, AWS_DOMAIN);
    info
}

#[apply(every_backend)]
#[tokio::test]
async fn acknowledging_with_a_stale_nonce_is_aborted(#[case] backend: Backend) {
    let mut gw = spawn(backend).await;
    let id = gw.create_job(&[]).await;
    gw.poll(1).await;
    let status = gw.acknowledge(&id, "12345").await.unwrap_err();
    let info = assert_aws_error(&status, Code::Aborted, "InvalidNonceException", backend);
    if backend.is_real_sdk() {
        assert!(
            !info.metadata["aws_request_id"].is_empty(),
            "the AWS request id travels in ErrorInfo metadata"
        );
    }
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn calls_about_an_unknown_job_are_not_found(#[case] backend: Backend) {
    let mut gw = spawn(backend).await;
    let ack = gw.acknowledge(UNKNOWN_JOB, "1").await.unwrap_err();
    assert_aws_error(&ack, Code::NotFound, "JobNotFoundException", backend);
    let resource = ack.get_details_resource_info().expect("ResourceInfo");
    assert_eq!(resource.resource_name, UNKNOWN_JOB);

    let details = gw
        .client
        .get_job_details(pb::GetJobDetailsRequest {
            job_id: UNKNOWN_JOB.to_owned(),
        })
        .await
        .unwrap_err();
    assert_aws_error(&details, Code::NotFound, "JobNotFoundException", backend);

    let success = gw
        .client
        .put_job_success_result(pb::PutJobSuccessResultRequest {
            job_id: UNKNOWN_JOB.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_aws_error(&success, Code::NotFound, "JobNotFoundException", backend);

    let failure = gw
        .client
        .put_job_failure_result(pb::PutJobFailureResultRequest {
            job_id: UNKNOWN_JOB.to_owned(),
            failure_details: Some(pb::FailureDetails {
                r#type: pb::FailureType::JobFailed.into(),
                message: "x".to_owned(),
                external_execution_id: None,
            }),
        })
        .await
        .unwrap_err();
    assert_aws_error(&failure, Code::NotFound, "JobNotFoundException", backend);
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn a_result_for_a_job_that_is_not_in_progress_is_a_failed_precondition(
    #[case] backend: Backend,
) {
    let mut gw = spawn(backend).await;
    let id = gw.create_job(&[]).await;
    gw.poll(1).await;
    let dispatched_only = gw
        .client
        .put_job_success_result(pb::PutJobSuccessResultRequest {
            job_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_aws_error(
        &dispatched_only,
        Code::FailedPrecondition,
        "InvalidJobStateException",
        backend,
    );

    let (done, _) = gw.in_progress_job().await;
    let success = pb::PutJobSuccessResultRequest {
        job_id: done.clone(),
        ..Default::default()
    };
    gw.client
        .put_job_success_result(success.clone())
        .await
        .unwrap();
    let twice = gw.client.put_job_success_result(success).await.unwrap_err();
    assert_aws_error(
        &twice,
        Code::FailedPrecondition,
        "InvalidJobStateException",
        backend,
    );
    assert_eq!(
        gw.job_state(&done).await.result_count,
        1,
        "the second result was not accepted"
    );
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn polling_an_unregistered_action_type_is_not_found(#[case] backend: Backend) {
    let mut gw = spawn(backend).await;
    let status = gw
        .client
        .poll_for_jobs(pb::PollForJobsRequest {
            action_type_id: Some(pb::ActionTypeId {
                provider: "NoSuchProvider".to_owned(),
                ..crate::support::demo_action_type()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_aws_error(
        &status,
        Code::NotFound,
        "ActionTypeNotFoundException",
        backend,
    );
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn output_variables_over_the_size_limit_are_a_failed_precondition(#[case] backend: Backend) {
    let mut gw = spawn(backend).await;
    let (id, _) = gw.in_progress_job().await;
    let huge = (0..7)
        .map(|n| (format!("VAR_{n}"), "x".repeat(20_000)))
        .collect();
    let status = gw
        .client
        .put_job_success_result(pb::PutJobSuccessResultRequest {
            job_id: id.clone(),
            output_variables: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_aws_error(
        &status,
        Code::FailedPrecondition,
        "OutputVariablesSizeExceededException",
        backend,
    );
    assert_eq!(gw.job_state(&id).await.status(), pb::JobStatus::InProgress);
    gw.stop().await;
}

#[tokio::test]
async fn a_gateway_whose_own_aws_identity_is_rejected_answers_internal_not_unauthenticated() {
    let mut gw = gateway(Backend::RealSdk)
        .signing_secret("not-the-secret")
        .spawn()
        .await;
    let status = gw.acknowledge(UNKNOWN_JOB, "1").await.unwrap_err();
    assert_aws_error(
        &status,
        Code::Internal,
        "InvalidSignatureException",
        Backend::RealSdk,
    );
    assert!(status.message().contains("gateway's own AWS identity"));
    assert_eq!(
        gw.emulator.total_calls(),
        0,
        "a wrongly signed call never reaches the engine"
    );
    gw.stop().await;
}

/// Temporary credentials: the emulator's key with a session token.
fn with_session_token(token: Option<&str>) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
        crate::support::ACCESS_KEY_ID,
        crate::support::SECRET_ACCESS_KEY,
        token.map(str::to_owned),
        None,
        "test",
    ))
}

#[rstest]
#[case::real_sdk(Backend::RealSdk)]
#[case::real_sdk_cbor(Backend::RealSdkCbor)]
#[tokio::test]
async fn a_session_token_the_front_did_not_issue_is_an_unrecognized_client(
    #[case] backend: Backend,
) {
    // The front issued no token: one the gateway sends is not AWS's.
    let mut bogus = gateway(backend)
        .aws_credentials(with_session_token(Some("a-token-nobody-issued")))
        .spawn()
        .await;
    let status = bogus.acknowledge(UNKNOWN_JOB, "1").await.unwrap_err();
    assert_aws_error(
        &status,
        Code::Internal,
        "UnrecognizedClientException",
        backend,
    );
    bogus.stop().await;

    // The front's credentials are temporary: the token must come, and be the one issued.
    for (token, accepted) in [
        (Some("issued-token"), true),
        (Some("other"), false),
        (None, false),
    ] {
        let mut gw = gateway(backend)
            .engine(&["--session-token", "issued-token"])
            .aws_credentials(with_session_token(token))
            .spawn()
            .await;
        let status = gw.acknowledge(UNKNOWN_JOB, "1").await.unwrap_err();
        let reason = if accepted {
            "JobNotFoundException"
        } else {
            "UnrecognizedClientException"
        };
        let code = if accepted {
            Code::NotFound
        } else {
            Code::Internal
        };
        assert_aws_error(&status, code, reason, backend);
        gw.stop().await;
    }
}

/// A credential chain that finds nothing, like a pod with no IRSA role and no environment.
#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "no credentials in this test",
        )))
    }
}

#[tokio::test]
async fn a_gateway_without_aws_credentials_answers_internal_not_unauthenticated() {
    let mut gw = gateway(Backend::RealSdk)
        .aws_credentials(SharedCredentialsProvider::new(NoCredentials))
        .spawn()
        .await;
    let status = gw.acknowledge(UNKNOWN_JOB, "1").await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "GATEWAY_CREDENTIALS_UNAVAILABLE");
    assert_eq!(gw.emulator.total_calls(), 0);
    gw.stop().await;
}

/// An AWS endpoint of this test's own: each call is answered with the body of the first
/// `(operation, in the request, answer)` whose operation it is and whose request holds the text
/// (awsJson1_1); every call's operation is told to `calls`.
async fn canned_aws(
    answers: &'static [(&'static str, &'static str, &'static str)],
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use axum::{http::HeaderMap, routing::post};
    let (called, calls) = tokio::sync::mpsc::unbounded_channel();
    let router = axum::Router::new().route(
        "/",
        post(move |headers: HeaderMap, request: String| {
            let operation = headers
                .get("x-amz-target")
                .and_then(|value| value.to_str().ok())
                .and_then(|target| target.strip_prefix("CodePipeline_20150709."))
                .unwrap_or_default()
                .to_owned();
            let body = answers
                .iter()
                .find(|(name, holds, _)| *name == operation && request.contains(holds))
                .map_or("{}", |(_, _, body)| *body);
            let _ = called.send(operation);
            async move { ([("content-type", "application/x-amz-json-1.1")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, calls)
}

#[tokio::test]
async fn a_job_id_from_aws_that_is_not_codepipelines_never_reaches_a_worker() {
    const GOOD: &str = "0123abcd-0000-4000-8000-000000000001";
    const OTHER: &str = "0123abcd-0000-4000-8000-000000000002";
    let (endpoint, mut calls) = canned_aws(&[
        (
            "PollForJobs",
            "",
            r#"{"jobs":[
                {"id":"not-a-uuid","nonce":"1","accountId":"123456789012","data":{}},
                {"id":"0123abcd-0000-4000-8000-000000000001","nonce":"2","accountId":"123456789012","data":{}}
            ]}"#,
        ),
        (
            "GetJobDetails",
            GOOD,
            r#"{"jobDetails":{"id":"NOT-A-UUID","accountId":"123456789012","data":{}}}"#,
        ),
        (
            "GetJobDetails",
            OTHER,
            r#"{"jobDetails":{"id":"0123abcd-0000-4000-8000-000000000002","accountId":"123456789012","data":{}}}"#,
        ),
    ])
    .await;
    let seams = codepipeline_gateway::app::Seams {
        aws_credentials: Some(crate::support::signing_with(
            crate::support::SECRET_ACCESS_KEY,
        )),
        ..Default::default()
    };
    let app = crate::support::app(
        &[
            "--upstream",
            "aws",
            "--aws-region",
            "us-east-1",
            "--aws-endpoint-url",
            &endpoint,
            "--aws-max-attempts",
            "1",
            "--allow-unauthenticated",
        ],
        seams,
    )
    .await;
    let mut client = pb::job_worker_service_client::JobWorkerServiceClient::new(
        crate::support::connect(app.grpc_addr()).await,
    );
    let jobs = client
        .poll_for_jobs(pb::PollForJobsRequest {
            action_type_id: Some(crate::support::demo_action_type()),
            max_batch_size: Some(10),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, [GOOD], "only the job a worker can name back");
    assert_eq!(calls.recv().await.unwrap(), "PollForJobs");

    // Details naming a malformed id are the upstream's fault, not the caller's.
    let status = client
        .get_job_details(pb::GetJobDetailsRequest {
            job_id: GOOD.to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(calls.recv().await.unwrap(), "GetJobDetails");
    // The control: the same shape with a well-formed id is answered.
    let details = client
        .get_job_details(pb::GetJobDetailsRequest {
            job_id: OTHER.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(details.job_details.unwrap().id, OTHER);
    app.shutdown().await.unwrap();
}
