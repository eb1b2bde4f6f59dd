//! Bad input is caught at the edge: INVALID_ARGUMENT with a BadRequest field violation naming
//! the field, and no call reaches the upstream (the emulator's call count does not move).

use std::collections::HashMap;

use codepipeline_gateway::pb::jobworker as pb;

use rstest::rstest;
use rstest_reuse::apply;

use crate::support::{Backend, demo_action_type, every_backend, spawn};
use tonic::Code;
use tonic_types::StatusExt;

const JOB: &str = "f4f4ff82-2d11-4a2b-9c3d-0123456789ab";

enum Call {
    Poll(pb::PollForJobsRequest),
    Ack(pb::AcknowledgeJobRequest),
    Details(pb::GetJobDetailsRequest),
    Success(pb::PutJobSuccessResultRequest),
    Failure(pb::PutJobFailureResultRequest),
}

fn poll(edit: impl FnOnce(&mut pb::PollForJobsRequest)) -> Call {
    let mut request = pb::PollForJobsRequest {
        action_type_id: Some(demo_action_type()),
        max_batch_size: Some(1),
        query_param: HashMap::new(),
    };
    edit(&mut request);
    Call::Poll(request)
}

fn action_type(edit: impl FnOnce(&mut pb::ActionTypeId)) -> Call {
    poll(|r| edit(r.action_type_id.as_mut().unwrap()))
}

fn ack(job_id: &str, nonce: &str) -> Call {
    Call::Ack(pb::AcknowledgeJobRequest {
        job_id: job_id.to_owned(),
        nonce: nonce.to_owned(),
    })
}

fn success(edit: impl FnOnce(&mut pb::PutJobSuccessResultRequest)) -> Call {
    let mut request = pb::PutJobSuccessResultRequest {
        job_id: JOB.to_owned(),
        ..Default::default()
    };
    edit(&mut request);
    Call::Success(request)
}

fn revision(edit: impl FnOnce(&mut pb::CurrentRevision)) -> Call {
    success(|r| {
        let mut revision = pb::CurrentRevision {
            revision: "r1".to_owned(),
            change_identifier: "c1".to_owned(),
            created: None,
            revision_summary: None,
        };
        edit(&mut revision);
        r.current_revision = Some(revision);
    })
}

fn execution(edit: impl FnOnce(&mut pb::ExecutionDetails)) -> Call {
    success(|r| {
        let mut details = pb::ExecutionDetails::default();
        edit(&mut details);
        r.execution_details = Some(details);
    })
}

fn failure(edit: impl FnOnce(&mut pb::FailureDetails)) -> Call {
    let mut details = pb::FailureDetails {
        r#type: pb::FailureType::JobFailed.into(),
        message: "failed".to_owned(),
        external_execution_id: None,
    };
    edit(&mut details);
    Call::Failure(pb::PutJobFailureResultRequest {
        job_id: JOB.to_owned(),
        failure_details: Some(details),
    })
}

fn s(len: usize) -> String {
    "a".repeat(len)
}

/// Each case: a name, the bad call, and the field its violation must name.
fn cases() -> Vec<(&'static str, Call, &'static str)> {
    vec![
        ("empty job id", ack("", "1"), "job_id"),
        ("job id that is no uuid", ack("not-a-uuid", "1"), "job_id"),
        ("uppercase job id", ack(&JOB.to_uppercase(), "1"), "job_id"),
        ("empty nonce", ack(JOB, ""), "nonce"),
        ("51-character nonce", ack(JOB, &s(51)), "nonce"),
        (
            "details for a malformed job id",
            Call::Details(pb::GetJobDetailsRequest {
                job_id: "1234".to_owned(),
            }),
            "job_id",
        ),
        (
            "missing action type",
            poll(|r| r.action_type_id = None),
            "action_type_id",
        ),
        (
            "unspecified category",
            action_type(|a| a.category = 0),
            "action_type_id.category",
        ),
        (
            "unknown category number",
            action_type(|a| a.category = 99),
            "action_type_id.category",
        ),
        (
            "unspecified owner",
            action_type(|a| a.owner = 0),
            "action_type_id.owner",
        ),
        (
            "owner AWS (PollForJobs is for custom actions)",
            action_type(|a| a.owner = pb::ActionOwner::Aws.into()),
            "action_type_id.owner",
        ),
        (
            "empty provider",
            action_type(|a| a.provider.clear()),
            "action_type_id.provider",
        ),
        (
            "36-character provider",
            action_type(|a| a.provider = s(36)),
            "action_type_id.provider",
        ),
        (
            "provider with a space",
            action_type(|a| a.provider = "My Provider".to_owned()),
            "action_type_id.provider",
        ),
        (
            "empty version",
            action_type(|a| a.version.clear()),
            "action_type_id.version",
        ),
        (
            "10-character version",
            action_type(|a| a.version = s(10)),
            "action_type_id.version",
        ),
        (
            "version with a dot",
            action_type(|a| a.version = "1.0".to_owned()),
            "action_type_id.version",
        ),
        (
            "batch size 0",
            poll(|r| r.max_batch_size = Some(0)),
            "max_batch_size",
        ),
        (
            "negative batch size",
            poll(|r| r.max_batch_size = Some(-3)),
            "max_batch_size",
        ),
        (
            "two query params",
            poll(|r| {
                r.query_param = [("a", "1"), ("b", "2")]
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .into()
            }),
            "query_param",
        ),
        (
            "51-character query key",
            poll(|r| r.query_param = [(s(51), "v".to_owned())].into()),
            "query_param.key",
        ),
        (
            "query value with a space",
            poll(|r| r.query_param = [("k".to_owned(), "a b".to_owned())].into()),
            "query_param.value",
        ),
        (
            "empty query value",
            poll(|r| r.query_param = [("k".to_owned(), String::new())].into()),
            "query_param.value",
        ),
        (
            "empty continuation token",
            success(|r| r.continuation_token = Some(String::new())),
            "continuation_token",
        ),
        (
            "2049-character continuation token",
            success(|r| r.continuation_token = Some(s(2049))),
            "continuation_token",
        ),
        (
            "output variables with a continuation token",
            success(|r| {
                r.continuation_token = Some("next".to_owned());
                r.output_variables = [("K".to_owned(), "v".to_owned())].into();
            }),
            "output_variables",
        ),
        (
            "output variable key with a space",
            success(|r| r.output_variables = [("MY KEY".to_owned(), "v".to_owned())].into()),
            "output_variables[\"MY KEY\"]",
        ),
        (
            "empty output variable key",
            success(|r| r.output_variables = [(String::new(), "v".to_owned())].into()),
            "output_variables[\"\"]",
        ),
        (
            "empty execution summary",
            execution(|d| d.summary = Some(String::new())),
            "execution_details.summary",
        ),
        (
            "2049-character execution summary",
            execution(|d| d.summary = Some(s(2049))),
            "execution_details.summary",
        ),
        (
            "1501-character external execution id",
            execution(|d| d.external_execution_id = Some(s(1501))),
            "execution_details.external_execution_id",
        ),
        (
            "percent complete 101",
            execution(|d| d.percent_complete = Some(101)),
            "execution_details.percent_complete",
        ),
        (
            "percent complete -1",
            execution(|d| d.percent_complete = Some(-1)),
            "execution_details.percent_complete",
        ),
        (
            "empty revision",
            revision(|r| r.revision.clear()),
            "current_revision.revision",
        ),
        (
            "1501-character revision",
            revision(|r| r.revision = s(1501)),
            "current_revision.revision",
        ),
        (
            "empty change identifier",
            revision(|r| r.change_identifier.clear()),
            "current_revision.change_identifier",
        ),
        (
            "101-character change identifier",
            revision(|r| r.change_identifier = s(101)),
            "current_revision.change_identifier",
        ),
        (
            "empty revision summary",
            revision(|r| r.revision_summary = Some(String::new())),
            "current_revision.revision_summary",
        ),
        (
            "timestamp with out-of-range nanos",
            revision(|r| {
                r.created = Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: 2_000_000_000,
                })
            }),
            "current_revision.created",
        ),
        (
            "missing failure details",
            Call::Failure(pb::PutJobFailureResultRequest {
                job_id: JOB.to_owned(),
                failure_details: None,
            }),
            "failure_details",
        ),
        (
            "unspecified failure type",
            failure(|d| d.r#type = 0),
            "failure_details.type",
        ),
        (
            "unknown failure type number",
            failure(|d| d.r#type = 42),
            "failure_details.type",
        ),
        (
            "empty failure message",
            failure(|d| d.message.clear()),
            "failure_details.message",
        ),
        (
            "5001-character failure message",
            failure(|d| d.message = s(5001)),
            "failure_details.message",
        ),
        (
            "empty failure external execution id",
            failure(|d| d.external_execution_id = Some(String::new())),
            "failure_details.external_execution_id",
        ),
        (
            "job id checked on failure results too",
            {
                let Call::Failure(mut request) = failure(|_| {}) else {
                    unreachable!()
                };
                request.job_id = "x".to_owned();
                Call::Failure(request)
            },
            "job_id",
        ),
    ]
}

#[apply(every_backend)]
#[tokio::test]
async fn every_broken_constraint_is_invalid_argument_naming_the_field_with_no_upstream_call(
    #[case] backend: Backend,
) {
    let mut gw = spawn(backend).await;
    for (name, call, field) in cases() {
        let client = &mut gw.client;
        let result = match call {
            Call::Poll(r) => client.poll_for_jobs(r).await.map(drop),
            Call::Ack(r) => client.acknowledge_job(r).await.map(drop),
            Call::Details(r) => client.get_job_details(r).await.map(drop),
            Call::Success(r) => client.put_job_success_result(r).await.map(drop),
            Call::Failure(r) => client.put_job_failure_result(r).await.map(drop),
        };
        let status = result.expect_err(name);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{backend:?} {name}: {status:?}"
        );
        let bad_request = status.get_details_bad_request().expect("BadRequest detail");
        let fields: Vec<_> = bad_request
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, [field], "{backend:?} {name}");
        assert!(!bad_request.field_violations[0].description.is_empty());
    }
    assert_eq!(
        gw.emulator.total_calls(),
        0,
        "{backend:?}: no bad call reached the upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn all_violations_of_a_request_are_reported_together() {
    let mut gw = spawn(Backend::InProcess).await;
    let status = gw
        .client
        .acknowledge_job(pb::AcknowledgeJobRequest {
            job_id: "bad".to_owned(),
            nonce: String::new(),
        })
        .await
        .unwrap_err();
    let fields: Vec<_> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["job_id", "nonce"]);
    gw.stop().await;
}
