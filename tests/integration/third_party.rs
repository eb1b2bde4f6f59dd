//! The third-party half of the job API, through both upstreams: the lifecycle, every modelled
//! error, the edge's checks, and the client tokens the gateway holds for its workers.

use std::time::Duration;

use codepipeline_gateway::{
    api::status::{AWS_DOMAIN, GATEWAY_DOMAIN},
    pb::jobworker as pb,
    upstream::Operation,
};
use tonic::Code;
use tonic_types::StatusExt;

use rstest::rstest;
use rstest_reuse::apply;

use crate::support::{
    Backend, PartnerJob, TestGateway, demo_third_party_action_type, every_backend, gateway, spawn,
};

const CLIENT: &str = "0e1d2c3b-4a59-4687-9a8b-7c6d5e4f3a21";
const CLIENT_TOKEN: &str = "partner-client-token-7f3a9c";

fn poll_request(max: i32) -> pb::PollForThirdPartyJobsRequest {
    pb::PollForThirdPartyJobsRequest {
        action_type_id: Some(demo_third_party_action_type()),
        max_batch_size: Some(max),
    }
}

fn failure_details() -> pb::FailureDetails {
    pb::FailureDetails {
        r#type: pb::FailureType::JobFailed.into(),
        message: "partner system rejected the build".to_owned(),
        external_execution_id: Some("partner-run-2".to_owned()),
    }
}

/// How a request names its client token: by value, by client, or not at all.
#[derive(Clone, Copy)]
enum Credential<'a> {
    Token(&'a str),
    Client(&'a str),
    Neither,
}

impl Credential<'_> {
    fn fields(self) -> (String, String) {
        match self {
            Self::Token(token) => (token.to_owned(), String::new()),
            Self::Client(client) => (String::new(), client.to_owned()),
            Self::Neither => (String::new(), String::new()),
        }
    }
}

impl TestGateway {
    async fn poll_third_party(&mut self, max: i32) -> Vec<pb::ThirdPartyJob> {
        self.third_party
            .poll_for_third_party_jobs(poll_request(max))
            .await
            .expect("PollForThirdPartyJobs")
            .into_inner()
            .jobs
    }

    async fn third_party_details(
        &mut self,
        job_id: &str,
        credential: Credential<'_>,
    ) -> Result<pb::ThirdPartyJobDetails, tonic::Status> {
        let (client_token, client_id) = credential.fields();
        self.third_party
            .get_third_party_job_details(pb::GetThirdPartyJobDetailsRequest {
                job_id: job_id.to_owned(),
                client_token,
                client_id,
            })
            .await
            .map(|response| response.into_inner().job_details.expect("job details"))
    }

    async fn third_party_ack(
        &mut self,
        job_id: &str,
        nonce: &str,
        credential: Credential<'_>,
    ) -> Result<pb::JobStatus, tonic::Status> {
        let (client_token, client_id) = credential.fields();
        self.third_party
            .acknowledge_third_party_job(pb::AcknowledgeThirdPartyJobRequest {
                job_id: job_id.to_owned(),
                nonce: nonce.to_owned(),
                client_token,
                client_id,
            })
            .await
            .map(|response| response.into_inner().status())
    }

    async fn third_party_success(
        &mut self,
        job_id: &str,
        credential: Credential<'_>,
        continuation_token: Option<&str>,
    ) -> Result<(), tonic::Status> {
        let (client_token, client_id) = credential.fields();
        self.third_party
            .put_third_party_job_success_result(pb::PutThirdPartyJobSuccessResultRequest {
                job_id: job_id.to_owned(),
                client_token,
                client_id,
                current_revision: Some(pb::CurrentRevision {
                    revision: "partner-rev-1".to_owned(),
                    change_identifier: "change-1".to_owned(),
                    created: None,
                    revision_summary: Some("built by the partner".to_owned()),
                }),
                continuation_token: continuation_token.map(str::to_owned),
                execution_details: Some(pb::ExecutionDetails {
                    summary: Some("partner build ok".to_owned()),
                    external_execution_id: Some("partner-run-1".to_owned()),
                    percent_complete: Some(100),
                }),
            })
            .await
            .map(drop)
    }

    async fn third_party_failure(
        &mut self,
        job_id: &str,
        credential: Credential<'_>,
    ) -> Result<(), tonic::Status> {
        let (client_token, client_id) = credential.fields();
        self.third_party
            .put_third_party_job_failure_result(pb::PutThirdPartyJobFailureResultRequest {
                job_id: job_id.to_owned(),
                client_token,
                client_id,
                failure_details: Some(failure_details()),
            })
            .await
            .map(drop)
    }

    /// Polls, reads the details and acknowledges `job` with its own token: its nonce.
    async fn third_party_in_progress(&mut self, job: &PartnerJob) -> String {
        let polled = self.poll_third_party(10).await;
        assert!(polled.iter().any(|p| p.job_id == job.job_id), "{polled:?}");
        let details = self
            .third_party_details(&job.job_id, Credential::Token(&job.client_token))
            .await
            .expect("GetThirdPartyJobDetails");
        self.third_party_ack(
            &job.job_id,
            &details.nonce,
            Credential::Token(&job.client_token),
        )
        .await
        .expect("AcknowledgeThirdPartyJob");
        details.nonce
    }
}

fn assert_aws_error(status: &tonic::Status, code: Code, reason: &str, context: &str) {
    assert_eq!(status.code(), code, "{context}: {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{context}: ErrorInfo in {status:?}"));
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        (reason, AWS_DOMAIN),
        "{context}"
    );
}

#[apply(every_backend)]
#[tokio::test]
async fn a_third_party_job_runs_its_lifecycle_from_poll_to_continuation_to_failure(
    #[case] backend: Backend,
) {
    let mut gw = spawn(backend).await;
    let job = gw.create_third_party_job(CLIENT, CLIENT_TOKEN).await;
    assert_eq!(
        (job.client_id.as_str(), job.client_token.as_str()),
        (CLIENT, CLIENT_TOKEN)
    );

    let polled = gw.poll_third_party(5).await;
    assert_eq!(polled.len(), 1, "{backend:?}");
    assert_eq!(
        (polled[0].client_id.as_str(), polled[0].job_id.as_str()),
        (CLIENT, job.job_id.as_str())
    );
    assert!(
        gw.poll_third_party(5).await.is_empty(),
        "a Dispatched job is not handed out twice"
    );

    let details = gw
        .third_party_details(&job.job_id, Credential::Token(CLIENT_TOKEN))
        .await
        .unwrap();
    assert_eq!(details.id, job.job_id);
    assert!(
        !details.nonce.is_empty(),
        "{backend:?}: the nonce comes with the details"
    );
    let data = details.data.expect("job data");
    assert_eq!(
        data.action_configuration.unwrap().configuration["ProjectName"],
        "partner-app"
    );
    let credentials = data.artifact_credentials.expect("artifact credentials");
    assert!(credentials.access_key_id.starts_with("ASIA"));
    assert_eq!(data.action_type_id, Some(demo_third_party_action_type()));

    let status = gw
        .third_party_ack(&job.job_id, &details.nonce, Credential::Token(CLIENT_TOKEN))
        .await
        .unwrap();
    assert_eq!(status, pb::JobStatus::InProgress, "{backend:?}");
    assert_eq!(
        gw.job_state(&job.job_id).await.status(),
        pb::JobStatus::InProgress
    );

    gw.third_party_success(&job.job_id, Credential::Token(CLIENT_TOKEN), Some("step-2"))
        .await
        .unwrap();
    let state = gw.job_state(&job.job_id).await;
    assert_eq!(state.status(), pb::JobStatus::Succeeded, "{backend:?}");
    assert_eq!(state.client_id, CLIENT, "the admin view names the client");
    assert_eq!(
        state
            .execution_details
            .unwrap()
            .external_execution_id
            .as_deref(),
        Some("partner-run-1")
    );
    assert_eq!(state.current_revision.unwrap().revision, "partner-rev-1");
    let follow_up = state.continued_by_job_id.expect("a follow-up job");

    let polled = gw.poll_third_party(5).await;
    assert_eq!(polled.len(), 1);
    assert_eq!(
        (polled[0].job_id.as_str(), polled[0].client_id.as_str()),
        (follow_up.as_str(), CLIENT)
    );
    let details = gw
        .third_party_details(&follow_up, Credential::Token(CLIENT_TOKEN))
        .await
        .unwrap();
    assert_eq!(
        details.data.unwrap().continuation_token.as_deref(),
        Some("step-2"),
        "the follow-up carries the continuation token"
    );
    gw.third_party_ack(&follow_up, &details.nonce, Credential::Token(CLIENT_TOKEN))
        .await
        .unwrap();
    gw.third_party_failure(&follow_up, Credential::Token(CLIENT_TOKEN))
        .await
        .unwrap();
    let state = gw.job_state(&follow_up).await;
    assert_eq!(state.status(), pb::JobStatus::Failed);
    assert_eq!(
        state.failure_details.unwrap().message,
        "partner system rejected the build"
    );
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn every_modelled_third_party_error_arrives_with_its_code_and_never_a_token(
    #[case] backend: Backend,
) {
    let mut gw = spawn(backend).await;
    let job = gw.create_third_party_job(CLIENT, CLIENT_TOKEN).await;
    let wrong = "someone-elses-token-55d1";
    let unknown = "partner-job-that-does-not-exist";
    let custom_job = gw.create_job(&[]).await;
    let mut checked = Vec::new();
    let mut check = |status: tonic::Status, code, reason: &str, what: &str| {
        let context = format!("{backend:?} {what}");
        assert_aws_error(&status, code, reason, &context);
        for secret in [CLIENT_TOKEN, wrong] {
            assert!(!status.message().contains(secret), "{context}: {status:?}");
            assert!(
                !format!("{:?}", status.details()).contains(secret),
                "{context}"
            );
        }
        checked.push(what.to_owned());
    };

    let poll = gw
        .third_party
        .poll_for_third_party_jobs(pb::PollForThirdPartyJobsRequest {
            action_type_id: Some(pb::ActionTypeId {
                provider: "NoSuchPartner".to_owned(),
                ..demo_third_party_action_type()
            }),
            max_batch_size: None,
        })
        .await
        .unwrap_err();
    check(
        poll,
        Code::NotFound,
        "ActionTypeNotFoundException",
        "poll of an unknown type",
    );

    // Unknown jobs: JobNotFound from every call about a job.
    let token = Credential::Token(CLIENT_TOKEN);
    check(
        gw.third_party_details(unknown, token).await.unwrap_err(),
        Code::NotFound,
        "JobNotFoundException",
        "details of an unknown job",
    );
    check(
        gw.third_party_ack(unknown, "1", token).await.unwrap_err(),
        Code::NotFound,
        "JobNotFoundException",
        "ack of an unknown job",
    );
    check(
        gw.third_party_success(unknown, token, None)
            .await
            .unwrap_err(),
        Code::NotFound,
        "JobNotFoundException",
        "success of an unknown job",
    );
    check(
        gw.third_party_failure(unknown, token).await.unwrap_err(),
        Code::NotFound,
        "JobNotFoundException",
        "failure of an unknown job",
    );

    // Another client's token: InvalidClientToken, the one code that says whose job it is not.
    let wrong_token = Credential::Token(wrong);
    check(
        gw.third_party_details(&job.job_id, wrong_token)
            .await
            .unwrap_err(),
        Code::PermissionDenied,
        "InvalidClientTokenException",
        "details with a wrong token",
    );
    check(
        gw.third_party_ack(&job.job_id, "1", wrong_token)
            .await
            .unwrap_err(),
        Code::PermissionDenied,
        "InvalidClientTokenException",
        "ack with a wrong token",
    );
    check(
        gw.third_party_success(&job.job_id, wrong_token, None)
            .await
            .unwrap_err(),
        Code::PermissionDenied,
        "InvalidClientTokenException",
        "success with a wrong token",
    );
    check(
        gw.third_party_failure(&job.job_id, wrong_token)
            .await
            .unwrap_err(),
        Code::PermissionDenied,
        "InvalidClientTokenException",
        "failure with a wrong token",
    );

    // A custom job is not a third-party one: InvalidJob where the model says so.
    check(
        gw.third_party_details(&custom_job, token)
            .await
            .unwrap_err(),
        Code::NotFound,
        "InvalidJobException",
        "third-party details of a custom job",
    );
    check(
        gw.third_party_ack(&custom_job, "1", token)
            .await
            .unwrap_err(),
        Code::NotFound,
        "JobNotFoundException",
        "third-party ack of a custom job",
    );
    let custom_details = gw
        .client
        .get_job_details(pb::GetJobDetailsRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap_err();
    check(
        custom_details,
        Code::NotFound,
        "JobNotFoundException",
        "custom details of a third-party job",
    );

    // Lifecycle errors: a stale nonce, a result for a job not InProgress.
    gw.poll_third_party(5).await;
    check(
        gw.third_party_ack(&job.job_id, "12345", token)
            .await
            .unwrap_err(),
        Code::Aborted,
        "InvalidNonceException",
        "ack with a stale nonce",
    );
    check(
        gw.third_party_success(&job.job_id, token, None)
            .await
            .unwrap_err(),
        Code::FailedPrecondition,
        "InvalidJobStateException",
        "success of a Dispatched job",
    );
    check(
        gw.third_party_failure(&job.job_id, token)
            .await
            .unwrap_err(),
        Code::FailedPrecondition,
        "InvalidJobStateException",
        "failure of a Dispatched job",
    );

    assert_eq!(checked.len(), 15);
    assert_eq!(
        gw.job_state(&job.job_id).await.status(),
        pb::JobStatus::Dispatched,
        "no refused call changed the job"
    );
    gw.stop().await;
}

/// Each case: a name, a bad call, and the field its violation must name.
fn edge_cases() -> Vec<(&'static str, ThirdPartyCall, &'static str)> {
    let job = "partner-job-1";
    let details = |job_id: String, client_token: String, client_id: String| {
        ThirdPartyCall::Details(pb::GetThirdPartyJobDetailsRequest {
            job_id,
            client_token,
            client_id,
        })
    };
    vec![
        (
            "poll without an action type",
            ThirdPartyCall::Poll(pb::PollForThirdPartyJobsRequest {
                action_type_id: None,
                max_batch_size: None,
            }),
            "action_type_id",
        ),
        (
            "poll for a custom action type",
            ThirdPartyCall::Poll(pb::PollForThirdPartyJobsRequest {
                action_type_id: Some(crate::support::demo_action_type()),
                max_batch_size: None,
            }),
            "action_type_id.owner",
        ),
        (
            "poll for no jobs",
            ThirdPartyCall::Poll(poll_request(0)),
            "max_batch_size",
        ),
        (
            "empty job id",
            details(String::new(), CLIENT_TOKEN.to_owned(), String::new()),
            "job_id",
        ),
        (
            "513-character job id",
            details("j".repeat(513), CLIENT_TOKEN.to_owned(), String::new()),
            "job_id",
        ),
        (
            "257-character client token",
            details(job.to_owned(), "t".repeat(257), String::new()),
            "client_token",
        ),
        (
            "client id that is no uuid",
            details(job.to_owned(), String::new(), "partner".to_owned()),
            "client_id",
        ),
        (
            "empty nonce",
            ThirdPartyCall::Ack(pb::AcknowledgeThirdPartyJobRequest {
                job_id: job.to_owned(),
                nonce: String::new(),
                client_token: CLIENT_TOKEN.to_owned(),
                client_id: String::new(),
            }),
            "nonce",
        ),
        (
            "2049-character continuation token",
            ThirdPartyCall::Success(pb::PutThirdPartyJobSuccessResultRequest {
                job_id: job.to_owned(),
                client_token: CLIENT_TOKEN.to_owned(),
                continuation_token: Some("c".repeat(2049)),
                ..Default::default()
            }),
            "continuation_token",
        ),
        (
            "101 percent complete",
            ThirdPartyCall::Success(pb::PutThirdPartyJobSuccessResultRequest {
                job_id: job.to_owned(),
                client_token: CLIENT_TOKEN.to_owned(),
                execution_details: Some(pb::ExecutionDetails {
                    percent_complete: Some(101),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "execution_details.percent_complete",
        ),
        (
            "failure without details",
            ThirdPartyCall::Failure(pb::PutThirdPartyJobFailureResultRequest {
                job_id: job.to_owned(),
                client_token: CLIENT_TOKEN.to_owned(),
                client_id: String::new(),
                failure_details: None,
            }),
            "failure_details",
        ),
    ]
}

enum ThirdPartyCall {
    Poll(pb::PollForThirdPartyJobsRequest),
    Ack(pb::AcknowledgeThirdPartyJobRequest),
    Details(pb::GetThirdPartyJobDetailsRequest),
    Success(pb::PutThirdPartyJobSuccessResultRequest),
    Failure(pb::PutThirdPartyJobFailureResultRequest),
}

#[apply(every_backend)]
#[tokio::test]
async fn every_broken_third_party_constraint_is_invalid_argument_with_no_upstream_call(
    #[case] backend: Backend,
) {
    let mut gw = spawn(backend).await;
    let long_token = "t".repeat(257);
    for (name, call, field) in edge_cases() {
        let client = &mut gw.third_party;
        let result = match call {
            ThirdPartyCall::Poll(r) => client.poll_for_third_party_jobs(r).await.map(drop),
            ThirdPartyCall::Ack(r) => client.acknowledge_third_party_job(r).await.map(drop),
            ThirdPartyCall::Details(r) => client.get_third_party_job_details(r).await.map(drop),
            ThirdPartyCall::Success(r) => {
                client.put_third_party_job_success_result(r).await.map(drop)
            }
            ThirdPartyCall::Failure(r) => {
                client.put_third_party_job_failure_result(r).await.map(drop)
            }
        };
        let status = result.expect_err(name);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{backend:?} {name}: {status:?}"
        );
        let violations = status
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations;
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, [field], "{backend:?} {name}");
        assert!(
            !status.message().contains(&long_token),
            "{name}: a token is never quoted"
        );
        assert!(
            !status.message().contains(CLIENT_TOKEN),
            "{name}: a token is never quoted"
        );
    }
    assert_eq!(
        gw.emulator.total_calls(),
        0,
        "{backend:?}: no bad call went upstream"
    );
    gw.stop().await;
}

fn client_token_file(dir: &tempfile::TempDir, entries: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.path().join("client-tokens.toml");
    let text: String = entries
        .iter()
        .map(|(id, token)| {
            format!("[[clients]]\nclient_id = \"{id}\"\nclient_token = \"{token}\"\n")
        })
        .collect();
    // Written aside and renamed in, as a Secret's update swaps the file whole.
    let staging = dir.path().join("client-tokens.toml.new");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, &path).unwrap();
    path
}

fn assert_no_client_token(status: &tonic::Status, context: &str) {
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{context}: {status:?}"
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("CLIENT_TOKEN_UNAVAILABLE", GATEWAY_DOMAIN),
        "{context}"
    );
    let precondition = status
        .get_details_precondition_failure()
        .expect("PreconditionFailure");
    assert_eq!(
        precondition.violations[0].r#type, "CLIENT_TOKEN",
        "{context}"
    );
}

#[apply(every_backend)]
#[tokio::test]
async fn the_gateway_supplies_the_client_token_by_named_client_or_by_its_own_poll(
    #[case] backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = client_token_file(&dir, &[(CLIENT, CLIENT_TOKEN)]);
    let mut gw = gateway(backend)
        .flags(&["--client-token-file", file.to_str().unwrap()])
        .spawn()
        .await;
    let job = gw.create_third_party_job(CLIENT, CLIENT_TOKEN).await;
    let polled = gw.poll_third_party(1).await;
    assert_eq!(polled[0].client_id, CLIENT);

    // Named client: the worker passes on the client_id the poll returned.
    let details = gw
        .third_party_details(&job.job_id, Credential::Client(CLIENT))
        .await
        .expect("the gateway supplied the token");
    // Neither: this gateway's own poll returned the job, so it knows the client.
    gw.third_party_ack(&job.job_id, &details.nonce, Credential::Neither)
        .await
        .expect("the gateway knew the client from its poll");
    gw.third_party_success(&job.job_id, Credential::Neither, None)
        .await
        .unwrap();
    assert_eq!(
        gw.job_state(&job.job_id).await.status(),
        pb::JobStatus::Succeeded
    );

    // The worker's own token still goes as given (a wrong one is refused upstream).
    let other = gw.create_third_party_job("", "").await;
    let refused = gw
        .third_party_details(&other.job_id, Credential::Token(CLIENT_TOKEN))
        .await
        .unwrap_err();
    assert_aws_error(
        &refused,
        Code::PermissionDenied,
        "InvalidClientTokenException",
        "own token",
    );

    let text = gw.metrics.render();
    assert!(
        text.contains(r#"gateway_client_tokens_supplied_total{client_from="request"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gateway_client_tokens_supplied_total{client_from="poll"} 2"#),
        "{text}"
    );
    assert!(
        text.contains("gateway_client_token_file_clients 1"),
        "{text}"
    );
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn a_missing_client_token_is_a_failed_precondition_and_no_upstream_call(
    #[case] backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = client_token_file(&dir, &[(CLIENT, CLIENT_TOKEN)]);
    let mut with_file = gateway(backend)
        .flags(&["--client-token-file", file.to_str().unwrap()])
        .spawn()
        .await;
    let stranger = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let job = with_file
        .create_third_party_job(stranger, "strangers-token")
        .await;
    let before = with_file.emulator.call_counts();
    let not_in_file = with_file
        .third_party_details(&job.job_id, Credential::Client(stranger))
        .await
        .unwrap_err();
    assert_no_client_token(&not_in_file, "a client the file does not list");
    assert!(not_in_file.message().contains(stranger), "{not_in_file:?}");
    let never_polled = with_file
        .third_party_ack(&job.job_id, "1", Credential::Neither)
        .await
        .unwrap_err();
    assert_no_client_token(
        &never_polled,
        "a job this gateway did not poll, no client named",
    );
    assert!(
        never_polled.message().contains("client_id"),
        "it says what to send: {never_polled:?}"
    );
    assert_eq!(
        with_file.emulator.call_counts(),
        before,
        "{backend:?}: nothing went upstream"
    );
    with_file.stop().await;

    let mut without_file = spawn(backend).await;
    let job = without_file
        .create_third_party_job(CLIENT, CLIENT_TOKEN)
        .await;
    without_file.poll_third_party(1).await;
    let before = without_file.emulator.call_counts();
    for credential in [Credential::Client(CLIENT), Credential::Neither] {
        let status = without_file
            .third_party_failure(&job.job_id, credential)
            .await
            .unwrap_err();
        assert_no_client_token(&status, "a gateway with no client-token file");
        assert!(
            status.message().contains("--client-token-file"),
            "{status:?}"
        );
    }
    assert_eq!(without_file.emulator.call_counts(), before);
    without_file.stop().await;
}

#[tokio::test]
async fn a_rotated_client_token_file_is_in_force_within_the_poll_interval() {
    let dir = tempfile::tempdir().unwrap();
    let file = client_token_file(&dir, &[(CLIENT, "the-old-token")]);
    let mut gw = gateway(Backend::InProcess)
        .flags(&[
            "--client-token-file",
            file.to_str().unwrap(),
            "--token-file-poll-interval",
            "50ms",
        ])
        .spawn()
        .await;
    let job = gw.create_third_party_job(CLIENT, CLIENT_TOKEN).await;
    let stale = gw
        .third_party_details(&job.job_id, Credential::Client(CLIENT))
        .await
        .unwrap_err();
    // The gateway supplied that token: the operator's file is wrong, not the worker's call.
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    let info = stale.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("CLIENT_TOKEN_FILE_REJECTED", "codepipeline-gateway"),
        "{stale:?}"
    );
    assert!(stale.message().contains("client-token file"), "{stale:?}");
    assert_eq!(
        stale.get_details_precondition_failure().unwrap().violations[0].subject,
        format!("job:{}", job.job_id)
    );

    client_token_file(&dir, &[(CLIENT, CLIENT_TOKEN)]);
    let rotated = wait_for(|| {
        gw.metrics
            .render()
            .contains(r#"gateway_client_token_file_reloads_total{result="success"} 2"#)
    })
    .await;
    assert!(rotated, "the new file was loaded");
    gw.third_party_details(&job.job_id, Credential::Client(CLIENT))
        .await
        .expect("the rotated token is supplied");

    // A broken file keeps the last good one in force, and says so.
    std::fs::write(
        &file,
        "[[clients]]\nclient_id = \"not-a-uuid\"\nclient_token = \"x\"\n",
    )
    .unwrap();
    assert!(
        wait_for(|| gw
            .metrics
            .render()
            .contains("gateway_client_token_file_healthy 0"))
        .await
    );
    gw.third_party_details(&job.job_id, Credential::Client(CLIENT))
        .await
        .expect("the last good file stays in force");
    gw.stop().await;
}

/// Waits up to 5 s for `done`.
async fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[apply(every_backend)]
#[tokio::test]
async fn third_party_calls_are_counted_per_operation(#[case] backend: Backend) {
    let mut gw = spawn(backend).await;
    let job = gw.create_third_party_job("", "").await;
    let nonce = gw.third_party_in_progress(&job).await;
    assert!(!nonce.is_empty());
    gw.third_party_success(&job.job_id, Credential::Token(&job.client_token), None)
        .await
        .unwrap();
    let counts = gw.emulator.call_counts();
    for op in [
        Operation::PollForThirdPartyJobs,
        Operation::GetThirdPartyJobDetails,
        Operation::AcknowledgeThirdPartyJob,
        Operation::PutThirdPartyJobSuccessResult,
    ] {
        assert_eq!(counts[&op], 1, "{backend:?} {op:?}");
    }
    let text = gw.metrics.render();
    assert!(
        text.contains(r#"grpc_server_handled_total{grpc_type="unary",grpc_service="codepipeline.jobworker.v1.ThirdPartyJobWorkerService",grpc_method="AcknowledgeThirdPartyJob",grpc_code="OK"} 1"#),
        "{text}"
    );
    gw.stop().await;
}
