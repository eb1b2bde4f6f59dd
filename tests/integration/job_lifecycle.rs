//! The job-worker loop end to end over gRPC, on both upstreams: the in-process emulator, and
//! the real AWS SDK talking awsJson1_1 to the emulator's HTTP front.

use std::time::Duration;

use codepipeline_gateway::pb::jobworker as pb;

use rstest::rstest;
use rstest_reuse::apply;

use crate::support::{Backend, every_backend, gateway, spawn};

#[apply(every_backend)]
#[tokio::test]
async fn a_job_goes_from_poll_to_acknowledge_to_success(#[case] backend: Backend) {
    let mut gw = spawn(backend).await;
    let id = gw
        .create_job(&[("ProjectName", "app"), ("ApiKey", "s3cr3t-value")])
        .await;

    let jobs = gw.poll(5).await;
    assert_eq!(jobs.len(), 1, "{backend:?}");
    let job = &jobs[0];
    assert_eq!(job.id, id);
    assert_eq!(job.account_id, "123456789012");
    let data = job.data.as_ref().expect("job data");
    assert_eq!(
        data.action_type_id,
        Some(crate::support::demo_action_type())
    );
    let configuration = &data.action_configuration.as_ref().unwrap().configuration;
    assert_eq!(
        configuration["ApiKey"], "s3cr3t-value",
        "secret configuration is in job data"
    );
    let polled_credentials = data
        .artifact_credentials
        .clone()
        .expect("artifact credentials");
    assert!(polled_credentials.access_key_id.starts_with("ASIA"));
    assert_eq!(gw.job_state(&id).await.status(), pb::JobStatus::Dispatched);

    assert_eq!(
        gw.acknowledge(&id, &job.nonce).await.unwrap(),
        pb::JobStatus::InProgress
    );
    assert_eq!(
        gw.acknowledge(&id, &job.nonce).await.unwrap(),
        pb::JobStatus::InProgress,
        "acknowledging an InProgress job again with its nonce returns InProgress"
    );

    let details = gw
        .client
        .get_job_details(pb::GetJobDetailsRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .job_details
        .unwrap();
    assert_eq!(details.id, id);
    let refreshed = details.data.unwrap().artifact_credentials.unwrap();
    assert_ne!(
        refreshed.secret_access_key, polled_credentials.secret_access_key,
        "credentials are issued afresh"
    );

    gw.client
        .put_job_success_result(pb::PutJobSuccessResultRequest {
            job_id: id.clone(),
            execution_details: Some(pb::ExecutionDetails {
                summary: Some("built".to_owned()),
                external_execution_id: Some("build-42".to_owned()),
                percent_complete: Some(100),
            }),
            current_revision: Some(pb::CurrentRevision {
                revision: "abc123".to_owned(),
                change_identifier: "change-1".to_owned(),
                created: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                revision_summary: Some("a change".to_owned()),
            }),
            output_variables: [("IMAGE_TAG".to_owned(), "v1".to_owned())].into(),
            continuation_token: None,
        })
        .await
        .unwrap();

    let state = gw.job_state(&id).await;
    assert_eq!(state.status(), pb::JobStatus::Succeeded, "{backend:?}");
    assert_eq!(
        (
            state.dispatch_count,
            state.acknowledge_count,
            state.result_count
        ),
        (1, 1, 1)
    );
    assert_eq!(
        state
            .execution_details
            .unwrap()
            .external_execution_id
            .as_deref(),
        Some("build-42")
    );
    assert_eq!(
        state.current_revision.unwrap().created.unwrap().seconds,
        1_700_000_000
    );
    assert_eq!(state.output_variables["IMAGE_TAG"], "v1");
    assert!(
        gw.poll(5).await.is_empty(),
        "a finished job is not handed out again"
    );
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn a_continuation_token_creates_a_follow_up_job_that_carries_it(#[case] backend: Backend) {
    let mut gw = spawn(backend).await;
    let (id, _) = gw.in_progress_job().await;
    gw.client
        .put_job_success_result(pb::PutJobSuccessResultRequest {
            job_id: id.clone(),
            continuation_token: Some("step-2".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();

    let follow_up = gw
        .poll(5)
        .await
        .pop()
        .expect("the follow-up job is handed out");
    assert_ne!(follow_up.id, id);
    assert_eq!(
        follow_up.data.unwrap().continuation_token.as_deref(),
        Some("step-2"),
        "{backend:?}"
    );
    let state = gw.job_state(&id).await;
    assert_eq!(state.status(), pb::JobStatus::Succeeded);
    assert_eq!(
        state.continued_by_job_id.as_deref(),
        Some(follow_up.id.as_str())
    );
    assert_eq!(
        gw.job_state(&follow_up.id)
            .await
            .continues_job_id
            .as_deref(),
        Some(id.as_str())
    );
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn a_failure_result_fails_the_job_with_its_details(#[case] backend: Backend) {
    let mut gw = spawn(backend).await;
    let (id, _) = gw.in_progress_job().await;
    gw.client
        .put_job_failure_result(pb::PutJobFailureResultRequest {
            job_id: id.clone(),
            failure_details: Some(pb::FailureDetails {
                r#type: pb::FailureType::ConfigurationError.into(),
                message: "no such project".to_owned(),
                external_execution_id: Some("run-7".to_owned()),
            }),
        })
        .await
        .unwrap();
    let state = gw.job_state(&id).await;
    assert_eq!(state.status(), pb::JobStatus::Failed, "{backend:?}");
    let failure = state.failure_details.unwrap();
    assert_eq!(failure.r#type(), pb::FailureType::ConfigurationError);
    assert_eq!(failure.message, "no such project");
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn an_unacknowledged_job_is_handed_out_again_with_a_new_nonce(#[case] backend: Backend) {
    let mut gw = gateway(backend)
        .engine(&["--redispatch-after", "50ms"])
        .spawn()
        .await;
    let id = gw.create_job(&[]).await;
    let first = gw.poll(1).await.pop().unwrap();
    assert!(
        gw.poll(1).await.is_empty(),
        "within the window the job stays with its worker"
    );

    tokio::time::sleep(Duration::from_millis(60)).await;
    let second = gw.poll(1).await.pop().expect("handed out again");
    assert_eq!(second.id, id);
    assert_ne!(second.nonce, first.nonce);

    let stale = gw.acknowledge(&id, &first.nonce).await.unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted, "{backend:?}");
    assert_eq!(
        gw.acknowledge(&id, &second.nonce).await.unwrap(),
        pb::JobStatus::InProgress
    );
    let state = gw.job_state(&id).await;
    assert_eq!((state.dispatch_count, state.acknowledge_count), (2, 1));
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn a_query_param_hands_out_only_matching_jobs(#[case] backend: Backend) {
    let mut gw = spawn(backend).await;
    let _blue = gw.create_job(&[("Pool", "blue")]).await;
    let green = gw.create_job(&[("Pool", "green")]).await;
    let jobs = gw
        .client
        .poll_for_jobs(pb::PollForJobsRequest {
            action_type_id: Some(crate::support::demo_action_type()),
            max_batch_size: Some(10),
            query_param: [("Pool".to_owned(), "green".to_owned())].into(),
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let ids: Vec<_> = jobs.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, [green.as_str()], "{backend:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_job_not_finished_in_time_is_timed_out() {
    let mut gw = gateway(Backend::InProcess)
        .engine(&["--job-timeout", "100ms"])
        .spawn()
        .await;
    let (id, nonce) = gw.in_progress_job().await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(gw.job_state(&id).await.status(), pb::JobStatus::TimedOut);
    let late = gw
        .client
        .put_job_success_result(pb::PutJobSuccessResultRequest {
            job_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        gw.acknowledge(&id, &nonce).await.unwrap_err().code(),
        tonic::Code::Aborted
    );
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn batch_size_bounds_a_poll_and_each_job_gets_its_own_nonce(#[case] backend: Backend) {
    let mut gw = spawn(backend).await;
    for _ in 0..5 {
        gw.create_job(&[]).await;
    }
    let jobs = gw.poll(3).await;
    assert_eq!(jobs.len(), 3, "{backend:?}");
    let nonces: std::collections::HashSet<_> = jobs.iter().map(|job| job.nonce.clone()).collect();
    assert_eq!(nonces.len(), 3);
    assert_eq!(gw.poll(10).await.len(), 2);
    gw.stop().await;
}
