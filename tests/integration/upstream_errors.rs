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
