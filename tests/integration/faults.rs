//! Upstream faults through the real path (gateway -> AWS SDK -> HTTP -> emulator): each fault
//! maps to the DESIGN table's code, state-changing calls are repeated only when that is safe,
//! lost answers are reported as indeterminate, and a pool of jobs worked through 20 % faults
//! ends with every job completed exactly once.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use codepipeline_gateway::{
    pb::{
        emulator::{ListJobsRequest, SetFaultsRequest},
        jobworker::{self as pb, job_worker_service_client::JobWorkerServiceClient},
    },
    upstream::Operation,
};
use tonic::{Code, Request, Status, transport::Channel};

use crate::support::{Backend, Spawn, gateway};
use tonic_types::StatusExt;

/// A gateway on the real SDK path whose SDK client makes up to `max_attempts` attempts.
fn real_sdk(max_attempts: u32) -> Spawn {
    gateway(Backend::RealSdk).flags(&["--aws-max-attempts", &max_attempts.to_string()])
}

async fn set_faults(gw: &mut crate::support::TestGateway, plan: &str) {
    gw.admin
        .set_faults(SetFaultsRequest {
            plan: plan.to_owned(),
        })
        .await
        .expect("SetFaults");
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

fn indeterminate(status: &Status) -> bool {
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get("indeterminate").cloned())
        .as_deref()
        == Some("true")
}

#[tokio::test]
async fn each_fault_maps_to_its_code_and_lost_answers_are_indeterminate() {
    let mut gw = real_sdk(1).spawn().await;
    // (fault, expected code, expected ErrorInfo reason, did the acknowledgement take effect?)
    let table = [
        ("http500", Code::Unavailable, "InternalFailure", false),
        ("http503", Code::Unavailable, "ServiceUnavailable", false),
        (
            "throttling",
            Code::Unavailable,
            "ThrottlingException",
            false,
        ),
        ("drop", Code::Unavailable, "UPSTREAM_UNAVAILABLE", true),
        ("truncate", Code::Unavailable, "UPSTREAM_UNAVAILABLE", true),
        ("malformed", Code::Unavailable, "UPSTREAM_UNAVAILABLE", true),
    ];
    for (fault, code, expected_reason, took_effect) in table {
        let id = gw.create_job(&[]).await;
        let job = gw.poll(1).await.pop().expect("a job");
        assert_eq!(job.id, id);
        set_faults(&mut gw, &format!("AcknowledgeJob:{fault}=1")).await;
        let status = gw.acknowledge(&id, &job.nonce).await.unwrap_err();
        set_faults(&mut gw, "").await;

        assert_eq!(status.code(), code, "{fault}: {status:?}");
        assert_eq!(reason(&status), expected_reason, "{fault}");
        if code == Code::Unavailable {
            assert!(
                status.get_details_retry_info().is_some(),
                "{fault}: RetryInfo"
            );
        }
        let state = gw.job_state(&id).await;
        let acknowledged = state.status() == pb::JobStatus::InProgress;
        assert_eq!(
            acknowledged, took_effect,
            "{fault}: did the call take effect"
        );
        // Whenever the call may have taken effect, the caller is told so.
        if took_effect {
            assert!(indeterminate(&status), "{fault}: indeterminate");
        }
        // Acknowledging again with the same nonce is safe either way.
        assert_eq!(
            gw.acknowledge(&id, &job.nonce).await.unwrap(),
            pb::JobStatus::InProgress
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_upstream_never_holds_a_call_past_the_callers_deadline() {
    let mut gw = real_sdk(1).spawn().await;
    set_faults(&mut gw, "GetJobDetails:latency=3s").await;
    let mut request = Request::new(pb::GetJobDetailsRequest {
        job_id: "00000000-0000-4000-8000-000000000000".to_owned(),
    });
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let started = std::time::Instant::now();
    let status = gw.client.get_job_details(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    // Not a timing assertion on speed: the call must end by the deadline, not after the 3 s.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    gw.stop().await;
}

#[tokio::test]
async fn state_changing_calls_are_repeated_only_after_throttling() {
    let mut gw = real_sdk(3).spawn().await;
    let calls = |gw: &crate::support::TestGateway, op: Operation| gw.emulator.call_counts()[&op];

    set_faults(&mut gw, "AcknowledgeJob:throttling=1").await;
    let throttled = gw
        .acknowledge("00000000-0000-4000-8000-000000000000", "1")
        .await
        .unwrap_err();
    assert_eq!(reason(&throttled), "ThrottlingException");
    assert_eq!(
        calls(&gw, Operation::AcknowledgeJob),
        3,
        "throttling is retried: nothing was done"
    );

    set_faults(&mut gw, "AcknowledgeJob:drop=1").await;
    gw.acknowledge("00000000-0000-4000-8000-000000000000", "1")
        .await
        .unwrap_err();
    assert_eq!(
        calls(&gw, Operation::AcknowledgeJob),
        4,
        "a lost answer is not retried blindly"
    );

    set_faults(&mut gw, "AcknowledgeJob:http500=1").await;
    gw.acknowledge("00000000-0000-4000-8000-000000000000", "1")
        .await
        .unwrap_err();
    assert_eq!(
        calls(&gw, Operation::AcknowledgeJob),
        5,
        "a server fault may have acted: not retried"
    );
    gw.stop().await;
}

/// A worker as docs/workers.md describes one: drops ABORTED jobs, repeats a call whose outcome is
/// indeterminate, and treats FAILED_PRECONDITION on a repeated result as "already done".
async fn work(
    name: &'static str,
    mut client: JobWorkerServiceClient<Channel>,
    done: Arc<Mutex<HashMap<String, &'static str>>>,
    total: usize,
) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while done.lock().unwrap().len() < total && tokio::time::Instant::now() < give_up {
        let polled = client
            .poll_for_jobs(pb::PollForJobsRequest {
                action_type_id: Some(crate::support::demo_action_type()),
                max_batch_size: Some(2),
                query_param: Default::default(),
            })
            .await;
        let jobs = match polled {
            Ok(response) => response.into_inner().jobs,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        'jobs: for job in jobs {
            loop {
                match client
                    .acknowledge_job(pb::AcknowledgeJobRequest {
                        job_id: job.id.clone(),
                        nonce: job.nonce.clone(),
                    })
                    .await
                {
                    Ok(_) => break,
                    Err(status) if status.code() == Code::Aborted => continue 'jobs,
                    Err(status) if status.code() == Code::NotFound => continue 'jobs,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            let mut repeated = false;
            loop {
                let result = client
                    .put_job_success_result(pb::PutJobSuccessResultRequest {
                        job_id: job.id.clone(),
                        execution_details: Some(pb::ExecutionDetails {
                            external_execution_id: Some(name.to_owned()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await;
                match result {
                    Ok(_) => break,
                    // A repeat after a lost answer finds the job already completed.
                    Err(status) if status.code() == Code::FailedPrecondition && repeated => break,
                    Err(status) if status.code() == Code::FailedPrecondition => continue 'jobs,
                    Err(_) => {
                        repeated = true;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            let previous = done.lock().unwrap().insert(job.id.clone(), name);
            assert!(
                previous.is_none(),
                "job {} completed by {name} and {previous:?}",
                job.id
            );
        }
    }
}

#[tokio::test]
async fn every_job_is_completed_exactly_once_through_twenty_percent_upstream_faults() {
    let mut gw = real_sdk(3)
        .engine(&[
            "--redispatch-after",
            "300ms",
            "--faults",
            "*:http500=0.04,http503=0.03,throttling=0.05,drop=0.03,truncate=0.03,malformed=0.02",
        ])
        .spawn()
        .await;
    let total = 40;
    let mut created = HashSet::new();
    for _ in 0..total {
        created.insert(gw.create_job(&[]).await);
    }
    let done = Arc::new(Mutex::new(HashMap::new()));
    let workers: Vec<_> = ["w1", "w2", "w3", "w4"]
        .into_iter()
        .map(|name| tokio::spawn(work(name, gw.client.clone(), done.clone(), total)))
        .collect();
    for worker in workers {
        worker.await.expect("a worker panicked");
    }

    let done = done.lock().unwrap().clone();
    assert_eq!(done.len(), total, "every job was completed by some worker");
    let jobs = gw
        .admin
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), total, "no job appeared from nowhere");
    for job in &jobs {
        assert!(created.contains(&job.job_id));
        assert_eq!(
            job.status(),
            pb::JobStatus::Succeeded,
            "job {} is stuck",
            job.job_id
        );
        assert_eq!(job.result_count, 1, "job {} completed once", job.job_id);
        assert_eq!(job.acknowledge_count, 1);
        let by = job
            .execution_details
            .as_ref()
            .and_then(|d| d.external_execution_id.as_deref());
        assert_eq!(
            by,
            Some(done[&job.job_id]),
            "the recorded worker is the one that completed it"
        );
    }
    // Without faults each job takes exactly one AcknowledgeJob and one result; with one call in
    // five faulted, some must have been repeated (all 80 escaping has odds of about 1 in 10^8).
    let counts = gw.emulator.call_counts();
    let acks_and_results =
        counts[&Operation::AcknowledgeJob] + counts[&Operation::PutJobSuccessResult];
    assert!(
        acks_and_results > 2 * total as u64,
        "faults made workers repeat calls: {counts:?}"
    );
    gw.stop().await;
}

/// Under throttling the gateway retries, and every attempt spends the upstream budget: the
/// account never sees more attempts than the budget allows, however many attempts a call may
/// make. (The SDK used to retry inside one budget charge: 3 attempts for one token.)
#[rstest::rstest]
#[case::in_process(Backend::InProcess)]
#[case::real_sdk(Backend::RealSdk)]
#[tokio::test]
async fn each_attempt_of_a_throttled_call_spends_the_upstream_budget(#[case] backend: Backend) {
    let mut gw = gateway(backend)
        .flags(&[
            "--aws-max-attempts",
            "5",
            "--upstream-rate-limit-per-second",
            "1",
            "--upstream-rate-limit-burst",
            "2",
        ])
        .spawn()
        .await;
    let id = gw.create_job(&[]).await;
    let job = gw.poll(1).await.pop().expect("the job");
    assert_eq!(job.id, id);
    set_faults(&mut gw, "AcknowledgeJob:throttling=1").await;
    let refused = gw.acknowledge(&job.id, &job.nonce).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused), "ThrottlingException", "{refused:?}");
    let attempts =
        gw.emulator.call_counts()[&codepipeline_gateway::upstream::Operation::AcknowledgeJob];
    assert_eq!(
        attempts, 2,
        "two attempts, the budget's burst of 2, not the 5 the call may make"
    );
    gw.stop().await;
}
