//! The job feed over real gRPC: StreamJobs subscribers share one poller per action type, get
//! no more jobs than their credit, take them with acknowledgements on the stream, and lose the
//! jobs they do not take in time to other subscribers, with the same nonce. Counted at the
//! emulator, which sees every upstream call.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use codepipeline_gateway::{
    pb::jobworker::{
        self as pb, job_worker_service_client::JobWorkerServiceClient,
        stream_jobs_request::Request as Send, stream_jobs_response::Response as Received,
    },
    upstream::Operation,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming, transport::Channel};
use tonic_types::StatusExt;

use rstest::rstest;
use rstest_reuse::apply;

use crate::support::{Backend, TestGateway, demo_action_type, every_backend, gateway, spawn};

/// A worker's end of a StreamJobs stream.
struct Stream {
    requests: mpsc::Sender<pb::StreamJobsRequest>,
    responses: Streaming<pb::StreamJobsResponse>,
}

fn subscription(credit: i32) -> pb::StreamJobsRequest {
    pb::StreamJobsRequest {
        request: Some(Send::Subscription(pb::StreamJobsSubscription {
            action_type_id: Some(demo_action_type()),
            query_param: Default::default(),
            max_outstanding_jobs: credit,
        })),
    }
}

/// Opens a stream whose first message is `first`.
async fn open(
    client: &JobWorkerServiceClient<Channel>,
    first: pb::StreamJobsRequest,
) -> Result<Stream, Status> {
    let (requests, outgoing) = mpsc::channel(64);
    requests.send(first).await.unwrap();
    let responses = client
        .clone()
        .stream_jobs(ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    Ok(Stream {
        requests,
        responses,
    })
}

async fn subscribe(client: &JobWorkerServiceClient<Channel>, credit: i32) -> Stream {
    open(client, subscription(credit))
        .await
        .expect("subscribed")
}

impl Stream {
    async fn send(&self, request: Send) {
        let _ = self
            .requests
            .send(pb::StreamJobsRequest {
                request: Some(request),
            })
            .await;
    }

    async fn credit(&self, jobs: i32) {
        self.send(Send::Credit(pb::StreamJobsCredit { jobs })).await;
    }

    async fn acknowledge(&self, job_id: &str) {
        self.send(Send::Acknowledge(pb::StreamJobsAcknowledge {
            job_id: job_id.to_owned(),
        }))
        .await;
    }

    /// The next message within `within`: `None` if none came.
    async fn next_within(&mut self, within: Duration) -> Option<Result<Received, Status>> {
        match tokio::time::timeout(within, self.responses.message()).await {
            Err(_) => None,
            Ok(Ok(Some(message))) => message.response.map(Ok),
            Ok(Ok(None)) => Some(Err(Status::ok("the stream ended"))),
            Ok(Err(status)) => Some(Err(status)),
        }
    }

    /// The next delivered job within `within`.
    async fn job_within(&mut self, within: Duration) -> Option<pb::Job> {
        match self.next_within(within).await {
            Some(Ok(Received::Job(job))) => Some(job),
            None => None,
            other => panic!("expected a job, got {other:?}"),
        }
    }

    /// The answer to an acknowledgement.
    async fn acknowledged(&mut self) -> pb::StreamJobsAcknowledged {
        match self.next_within(Duration::from_secs(10)).await {
            Some(Ok(Received::Acknowledged(answer))) => answer,
            other => panic!("expected an acknowledgement's answer, got {other:?}"),
        }
    }

    /// How the stream ended: its status.
    async fn ended(&mut self) -> Status {
        loop {
            match self.next_within(Duration::from_secs(10)).await {
                Some(Err(status)) => return status,
                Some(Ok(_)) => continue,
                None => panic!("the stream did not end"),
            }
        }
    }
}

async fn client(gw: &TestGateway) -> JobWorkerServiceClient<Channel> {
    JobWorkerServiceClient::new(crate::support::connect(gw.addr()).await)
}

fn polls(gw: &TestGateway) -> u64 {
    gw.emulator.call_counts()[&Operation::PollForJobs]
}

fn acknowledgements(gw: &TestGateway) -> u64 {
    gw.emulator.call_counts()[&Operation::AcknowledgeJob]
}

#[apply(every_backend)]
#[tokio::test]
async fn a_job_is_delivered_on_the_stream_taken_with_an_acknowledgement_and_finished(
    #[case] backend: Backend,
) {
    let mut gw = spawn(backend).await;
    let client = client(&gw).await;
    let mut stream = subscribe(&client, 2).await;
    let id = gw.create_job(&[("ProjectName", "app")]).await;
    let job = stream
        .job_within(Duration::from_secs(5))
        .await
        .expect("delivered");
    assert_eq!(job.id, id);
    assert!(!job.nonce.is_empty());
    stream.acknowledge(&id).await;
    let answer = stream.acknowledged().await;
    assert_eq!(answer.job_id, id);
    assert_eq!(answer.status(), pb::JobStatus::InProgress, "{answer:?}");
    assert!(answer.error.is_none());
    gw.client
        .put_job_success_result(pb::PutJobSuccessResultRequest {
            job_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("the result is unary, as before");
    let state = gw.job_state(&id).await;
    assert_eq!(state.status(), pb::JobStatus::Succeeded);
    assert_eq!((state.dispatch_count, state.acknowledge_count), (1, 1));
    gw.stop().await;
}

/// A gateway polling every 50..100 ms while idle, with `subscribers` streams on one feed.
async fn idle_feed(subscribers: usize) -> (TestGateway, Vec<Stream>) {
    let gw = gateway(Backend::InProcess)
        .flags(&[
            "--feed-min-idle-interval",
            "100ms",
            "--feed-max-idle-interval",
            "100ms",
        ])
        .spawn()
        .await;
    let client = client(&gw).await;
    let mut streams = Vec::new();
    for _ in 0..subscribers {
        streams.push(subscribe(&client, 5).await);
    }
    (gw, streams)
}

#[tokio::test]
async fn idle_subscribers_cost_the_same_polls_however_many_there_are() {
    // The three feeds idle side by side, so a busy machine slows them alike.
    let feeds = [
        idle_feed(1).await,
        idle_feed(10).await,
        idle_feed(100).await,
    ];
    let before: Vec<u64> = feeds.iter().map(|(gw, _)| polls(gw)).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during: Vec<u64> = feeds
        .iter()
        .zip(before)
        .map(|((gw, _), before)| polls(gw) - before)
        .collect();
    let one = during[0];
    assert!(one >= 20, "the feed polls while idle: {one}");
    // One poller per feed, whatever its subscribers: a poller per subscriber would poll 10 and
    // 100 times as often. The bound is loose because the idle backoff is jittered.
    for (subscribers, polls) in [(10, during[1]), (100, during[2])] {
        let ratio = polls as f64 / one as f64;
        assert!(
            ratio < 2.0,
            "{subscribers} subscribers: {polls} polls against {one} for one ({ratio:.2}x)"
        );
    }
    for (gw, streams) in feeds {
        drop(streams);
        gw.stop().await;
    }
}

#[tokio::test]
async fn no_subscriber_holds_more_unacknowledged_jobs_than_its_credit() {
    let mut gw = spawn(Backend::InProcess).await;
    for _ in 0..10 {
        gw.create_job(&[]).await;
    }
    let client = client(&gw).await;
    let mut stream = subscribe(&client, 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(stream.job_within(Duration::from_secs(5)).await.unwrap());
    }
    assert!(
        stream
            .job_within(Duration::from_millis(600))
            .await
            .is_none(),
        "no fourth job without credit"
    );
    stream.acknowledge(&held[0].id).await;
    assert!(stream.acknowledged().await.error.is_none());
    assert!(
        stream
            .job_within(Duration::from_millis(600))
            .await
            .is_none(),
        "an acknowledgement is not credit"
    );
    stream.credit(2).await;
    for _ in 0..2 {
        stream
            .job_within(Duration::from_secs(5))
            .await
            .expect("credit brings jobs");
    }
    assert!(
        stream
            .job_within(Duration::from_millis(600))
            .await
            .is_none()
    );
    gw.stop().await;
}

#[apply(every_backend)]
#[tokio::test]
async fn jobs_a_subscriber_leaves_with_go_to_another_at_once_with_the_same_nonce(
    #[case] backend: Backend,
) {
    let mut gw = spawn(backend).await;
    let mut created = HashSet::new();
    for _ in 0..5 {
        created.insert(gw.create_job(&[]).await);
    }
    let client = client(&gw).await;
    let mut leaving = subscribe(&client, 5).await;
    let mut held = HashMap::new();
    for _ in 0..5 {
        let job = leaving.job_within(Duration::from_secs(5)).await.unwrap();
        held.insert(job.id, job.nonce);
    }
    let taken = held.keys().next().unwrap().clone();
    leaving.acknowledge(&taken).await;
    assert!(leaving.acknowledged().await.error.is_none());
    let mut staying = subscribe(&client, 10).await;
    let left = Instant::now();
    drop(leaving);

    let mut again = HashMap::new();
    while again.len() < 4 {
        let job = staying
            .job_within(Duration::from_secs(1))
            .await
            .expect("redelivered within a second");
        again.insert(job.id, job.nonce);
    }
    assert!(
        left.elapsed() < Duration::from_secs(1),
        "{:?}",
        left.elapsed()
    );
    assert!(
        !again.contains_key(&taken),
        "a taken job is never delivered again"
    );
    for (id, nonce) in &again {
        assert_eq!(held.get(id), Some(nonce), "the same nonce");
        staying.acknowledge(id).await;
        let answer = staying.acknowledged().await;
        assert_eq!(answer.status(), pb::JobStatus::InProgress, "{answer:?}");
    }
    assert!(
        staying
            .job_within(Duration::from_millis(500))
            .await
            .is_none()
    );
    for id in &created {
        let state = gw.job_state(id).await;
        assert_eq!(state.status(), pb::JobStatus::InProgress);
        assert_eq!(state.dispatch_count, 1, "never re-dispatched upstream");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_job_not_acknowledged_within_the_deadline_goes_to_another_subscriber() {
    let mut gw = gateway(Backend::InProcess)
        .flags(&["--feed-ack-deadline", "300ms"])
        .spawn()
        .await;
    let client = client(&gw).await;
    let mut slow = subscribe(&client, 1).await;
    let mut quick = subscribe(&client, 1).await;
    gw.create_job(&[]).await;
    let (first, other) = tokio::select! {
        job = slow.job_within(Duration::from_secs(5)) => (job.unwrap(), &mut quick),
        job = quick.job_within(Duration::from_secs(5)) => (job.unwrap(), &mut slow),
    };
    let again = other
        .job_within(Duration::from_secs(2))
        .await
        .expect("delivered to the other after the deadline");
    assert_eq!(
        (again.id.as_str(), again.nonce.as_str()),
        (first.id.as_str(), first.nonce.as_str())
    );
    other.acknowledge(&again.id).await;
    assert!(other.acknowledged().await.error.is_none());
    assert_eq!(acknowledgements(&gw), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_lost_lease_is_answered_aborted_on_the_stream_which_goes_on() {
    let mut gw = gateway(Backend::InProcess)
        .flags(&["--feed-ack-deadline", "200ms"])
        .spawn()
        .await;
    let client = client(&gw).await;
    let mut late = subscribe(&client, 1).await;
    gw.create_job(&[]).await;
    let job = late.job_within(Duration::from_secs(5)).await.unwrap();
    // Another subscriber with credit takes over the job once the lease ends.
    let mut other = subscribe(&client, 1).await;
    let again = other.job_within(Duration::from_secs(2)).await.unwrap();
    assert_eq!(again.id, job.id);
    late.acknowledge(&job.id).await;
    let error = late.acknowledged().await.error.expect("refused");
    assert_eq!(error.code, Code::Aborted as i32, "{error:?}");
    assert_eq!(acknowledgements(&gw), 0, "refused at the gateway");
    // Done with the job it dropped, the late worker gives its credit back and gets work again.
    late.credit(1).await;
    gw.create_job(&[]).await;
    assert!(
        late.job_within(Duration::from_secs(5)).await.is_some(),
        "the stream goes on"
    );
    gw.stop().await;
}

/// One stream worker: takes what it is given, finishes it, gives the credit back.
async fn stream_worker(
    client: JobWorkerServiceClient<Channel>,
    credit: i32,
    deliveries: Arc<Mutex<HashMap<String, usize>>>,
    done: Arc<Mutex<HashSet<String>>>,
    total: usize,
) {
    let mut stream = subscribe(&client, credit).await;
    let mut results = client.clone();
    while done.lock().unwrap().len() < total {
        let Some(message) = stream.next_within(Duration::from_millis(500)).await else {
            continue;
        };
        match message.expect("the stream goes on") {
            Received::Job(job) => {
                *deliveries
                    .lock()
                    .unwrap()
                    .entry(job.id.clone())
                    .or_default() += 1;
                stream.acknowledge(&job.id).await;
            }
            Received::Acknowledged(answer) => {
                if answer.error.is_none() {
                    results
                        .put_job_success_result(pb::PutJobSuccessResultRequest {
                            job_id: answer.job_id.clone(),
                            ..Default::default()
                        })
                        .await
                        .expect("finished");
                    done.lock().unwrap().insert(answer.job_id);
                }
                stream.credit(1).await;
            }
        }
    }
}

#[tokio::test]
async fn a_burst_reaches_each_job_to_one_subscriber_once_with_few_polls() {
    // 100 workers of one client make 2,000 calls: its rate must not be what the test measures.
    let mut gw = gateway(Backend::InProcess)
        .flags(&[
            "--rate-limit-per-second",
            "100000",
            "--rate-limit-burst",
            "100000",
        ])
        .spawn()
        .await;
    let total = 1000;
    let mut created = HashSet::new();
    for _ in 0..total {
        created.insert(gw.create_job(&[]).await);
    }
    let polls_before = polls(&gw);
    let deliveries = Arc::new(Mutex::new(HashMap::new()));
    let done = Arc::new(Mutex::new(HashSet::new()));
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(client(&gw).await);
    }
    let workers: Vec<_> = (0..100)
        .map(|n| {
            tokio::spawn(stream_worker(
                clients[n % clients.len()].clone(),
                10,
                deliveries.clone(),
                done.clone(),
                total,
            ))
        })
        .collect();
    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        for worker in workers {
            worker.await.expect("a worker panicked");
        }
    })
    .await;
    assert!(
        finished.is_ok(),
        "{} of {total} done",
        done.lock().unwrap().len()
    );
    let polls = polls(&gw) - polls_before;
    let deliveries = deliveries.lock().unwrap().clone();
    assert_eq!(deliveries.len(), total);
    assert!(
        deliveries.values().all(|n| *n == 1),
        "each job delivered once"
    );
    assert_eq!(
        acknowledgements(&gw),
        total as u64,
        "acknowledged once each"
    );
    for job in gw.admin_jobs().await {
        assert!(created.contains(&job.job_id));
        assert_eq!(job.status(), pb::JobStatus::Succeeded);
        assert_eq!((job.acknowledge_count, job.result_count), (1, 1));
    }
    let per_job = polls as f64 / total as f64;
    assert!(
        per_job <= 0.2,
        "{polls} polls for {total} jobs ({per_job:.3} a job)"
    );
    gw.stop().await;
}

#[tokio::test]
async fn every_job_ends_exactly_once_through_twenty_percent_upstream_faults_on_the_real_sdk_path() {
    let mut gw = gateway(Backend::RealSdk)
        .flags(&["--aws-max-attempts", "3"])
        .engine(&[
            "--redispatch-after",
            "2s",
            "--faults",
            "*:http500=0.04,http503=0.03,throttling=0.05,drop=0.03,truncate=0.03,malformed=0.02",
        ])
        .spawn()
        .await;
    let total = 60;
    for _ in 0..total {
        gw.create_job(&[]).await;
    }
    let client = client(&gw).await;
    let finished = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(faulty_path_worker(client.clone(), finished.clone(), total)))
        .collect();
    let all_done = tokio::time::timeout(Duration::from_secs(90), async {
        for worker in workers {
            worker.await.expect("a worker panicked");
        }
    })
    .await;
    let reported = finished.lock().unwrap().clone();
    assert!(all_done.is_ok(), "{} of {total} finished", reported.len());
    let jobs = gw.admin_jobs().await;
    assert_eq!(jobs.len(), total);
    for job in jobs {
        assert_eq!(job.status(), pb::JobStatus::Succeeded, "{}", job.job_id);
        assert_eq!(job.result_count, 1, "{} completed once", job.job_id);
        assert_eq!(
            reported.get(&job.job_id),
            Some(&1),
            "reported by one worker once"
        );
    }
    let calls = gw.emulator.call_counts();
    assert!(
        calls[&Operation::AcknowledgeJob] + calls[&Operation::PutJobSuccessResult]
            > 2 * total as u64,
        "faults struck: {calls:?}"
    );
    gw.stop().await;
}

/// A stream worker that copes with a faulty upstream: retries what may be retried, drops what
/// another worker holds, and settles indeterminate results by looking at the job.
async fn faulty_path_worker(
    client: JobWorkerServiceClient<Channel>,
    finished: Arc<Mutex<HashMap<String, u32>>>,
    total: usize,
) {
    let mut stream = loop {
        match open(&client, subscription(4)).await {
            Ok(stream) => break stream,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut results = client.clone();
    while finished.lock().unwrap().len() < total {
        let Some(message) = stream.next_within(Duration::from_millis(500)).await else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(_) => {
                // The stream ended (a fault of the feed's poll is retried inside; this is the
                // transport): subscribe again.
                stream = subscribe(&client, 4).await;
                continue;
            }
        };
        match message {
            Received::Job(job) => stream.acknowledge(&job.id).await,
            Received::Acknowledged(answer) => match answer.error {
                None => {
                    let succeeded = put_success(&mut results, &answer.job_id).await;
                    if succeeded {
                        *finished.lock().unwrap().entry(answer.job_id).or_default() += 1;
                    }
                    stream.credit(1).await;
                }
                Some(error) if error.code == Code::Aborted as i32 => stream.credit(1).await,
                Some(_) => {
                    // Retry the acknowledgement after a moment; the job stays ours.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    stream.acknowledge(&answer.job_id).await;
                }
            },
        }
    }
}

/// PutJobSuccessResult until it is known to have taken effect: `true` if this worker's result
/// is the job's result, `false` if the job was not ours after all.
async fn put_success(client: &mut JobWorkerServiceClient<Channel>, job_id: &str) -> bool {
    let mut attempted = false;
    loop {
        let result = client
            .put_job_success_result(pb::PutJobSuccessResultRequest {
                job_id: job_id.to_owned(),
                ..Default::default()
            })
            .await;
        match result {
            Ok(_) => return true,
            // A repeat after an indeterminate attempt that took effect.
            Err(status) if status.code() == Code::FailedPrecondition && attempted => return true,
            Err(status) if status.code() == Code::FailedPrecondition => return false,
            Err(status) => {
                let indeterminate = status.get_details_error_info().is_some_and(|info| {
                    info.metadata
                        .get("indeterminate")
                        .is_some_and(|v| v == "true")
                });
                attempted |= indeterminate;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Opens a stream with `first` and returns how it ends: the status before any job.
async fn refused_stream(gw: &TestGateway, first: pb::StreamJobsRequest) -> Status {
    let client = client(gw).await;
    match open(&client, first).await {
        Err(status) => status,
        Ok(mut stream) => stream.ended().await,
    }
}

#[tokio::test]
async fn bad_subscriptions_are_refused_with_their_code_and_no_upstream_call() {
    let gw = spawn(Backend::InProcess).await;
    let credit_first = pb::StreamJobsRequest {
        request: Some(Send::Credit(pb::StreamJobsCredit { jobs: 1 })),
    };
    let aws_owned = pb::StreamJobsRequest {
        request: Some(Send::Subscription(pb::StreamJobsSubscription {
            action_type_id: Some(pb::ActionTypeId {
                owner: pb::ActionOwner::Aws.into(),
                ..demo_action_type()
            }),
            query_param: Default::default(),
            max_outstanding_jobs: 1,
        })),
    };
    let cases = [
        ("credit first", credit_first, Code::InvalidArgument, None),
        (
            "no message set",
            pb::StreamJobsRequest { request: None },
            Code::InvalidArgument,
            None,
        ),
        (
            "no credit",
            subscription(0),
            Code::InvalidArgument,
            Some("max_outstanding_jobs"),
        ),
        (
            "too much credit",
            subscription(101),
            Code::InvalidArgument,
            Some("max_outstanding_jobs"),
        ),
        (
            "not a custom action",
            aws_owned,
            Code::InvalidArgument,
            Some("action_type_id.owner"),
        ),
    ];
    for (case, first, code, field) in cases {
        let status = refused_stream(&gw, first).await;
        assert_eq!(status.code(), code, "{case}: {status:?}");
        if let Some(field) = field {
            let bad_request = status.get_details_bad_request().expect("BadRequest");
            assert!(
                bad_request
                    .field_violations
                    .iter()
                    .any(|v| v.field == field),
                "{case}: {bad_request:?}"
            );
        }
    }
    assert_eq!(gw.emulator.total_calls(), 0, "nothing reached the upstream");
    gw.stop().await;
}

#[tokio::test]
async fn bad_messages_on_a_stream_end_it_with_their_code_and_no_acknowledgement_upstream() {
    let gw = spawn(Backend::InProcess).await;
    let client = client(&gw).await;
    let reason = |status: &Status| status.get_details_error_info().map(|info| info.reason);

    let stream = subscribe(&client, 2).await;
    stream
        .send(Send::Subscription(pb::StreamJobsSubscription::default()))
        .await;
    let mut stream = stream;
    let status = stream.ended().await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("ALREADY_SUBSCRIBED"));

    let mut stream = subscribe(&client, 2).await;
    stream.credit(1).await;
    let status = stream.ended().await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("CREDIT_OVER_MAXIMUM"));

    let mut stream = subscribe(&client, 2).await;
    stream.credit(0).await;
    let status = stream.ended().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let mut stream = subscribe(&client, 2).await;
    stream
        .acknowledge("00000000-0000-4000-8000-000000000000")
        .await;
    let status = stream.ended().await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("JOB_NOT_DELIVERED"));

    let mut stream = subscribe(&client, 2).await;
    stream.acknowledge("not-a-job-id").await;
    let status = stream.ended().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "acknowledge.job_id"
    );

    assert_eq!(
        acknowledgements(&gw),
        0,
        "no acknowledgement reached the upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_unknown_action_type_ends_its_streams_not_found() {
    let gw = spawn(Backend::InProcess).await;
    let unknown = pb::StreamJobsRequest {
        request: Some(Send::Subscription(pb::StreamJobsSubscription {
            action_type_id: Some(pb::ActionTypeId {
                provider: "NoSuchProvider".to_owned(),
                ..demo_action_type()
            }),
            query_param: Default::default(),
            max_outstanding_jobs: 1,
        })),
    };
    let status = refused_stream(&gw, unknown).await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    gw.stop().await;
}

#[tokio::test]
async fn streams_end_unavailable_with_retry_info_when_the_gateway_drains() {
    let gw = spawn(Backend::InProcess).await;
    let client = client(&gw).await;
    let mut stream = subscribe(&client, 1).await;
    let stopping = tokio::spawn(gw.stop());
    let status = stream.ended().await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.get_details_retry_info().is_some());
    assert_eq!(status.get_details_error_info().unwrap().reason, "DRAINING");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the gateway stops once its streams end")
        .unwrap();
}

#[tokio::test]
async fn an_acknowledgement_in_flight_when_the_gateway_drains_is_answered_before_the_stream_ends() {
    let mut gw = gateway(Backend::InProcess)
        .engine(&["--faults", "AcknowledgeJob:latency=700ms"])
        .spawn()
        .await;
    let client = client(&gw).await;
    let mut stream = subscribe(&client, 1).await;
    let id = gw.create_job(&[]).await;
    stream
        .job_within(Duration::from_secs(5))
        .await
        .expect("delivered");
    stream.acknowledge(&id).await;
    // The acknowledgement is upstream (the emulator holds it 700 ms) when the drain begins.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let emulator = gw.emulator.clone();
    let stopping = tokio::spawn(gw.stop());
    let answer = stream.acknowledged().await;
    assert_eq!(answer.status(), pb::JobStatus::InProgress, "{answer:?}");
    let status = stream.ended().await;
    assert_eq!(status.get_details_error_info().unwrap().reason, "DRAINING");
    let job = emulator
        .job(&codepipeline_gateway::domain::JobId::parse(&id).unwrap())
        .unwrap();
    assert_eq!(
        job.status,
        codepipeline_gateway::domain::JobStatus::InProgress
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the gateway stops once the acknowledgement is answered")
        .unwrap();
}

/// A worker keeps one channel and reopens its stream the moment it ends, as the example workers
/// do. At each maximum age the stream ends with a status of its own just after the GOAWAY, so the
/// reopened stream is on a new connection: once per age, not in a loop on the aged connection.
#[tokio::test]
async fn a_stream_reopened_at_once_on_its_aged_channel_ends_once_per_maximum_age() {
    let mut gw = gateway(Backend::InProcess)
        .flags(&[
            "--max-connection-age",
            "1s",
            "--max-connection-age-grace",
            "10s",
        ])
        .spawn()
        .await;
    let client = client(&gw).await;
    let started = Instant::now();
    let mut ends = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        let mut stream = subscribe(&client, 1).await;
        let status = stream.ended().await;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "CONNECTION_AGED",
            "a status of its own, not a cut connection: {status:?}"
        );
        assert!(status.get_details_retry_info().is_some());
        ends += 1;
    }
    // Ages of 0.9 s to 1.1 s in 3.5 s (plus the one the loop ends on).
    assert!((3..=5).contains(&ends), "the stream ended {ends} times");
    // And the reopened stream still gets its jobs.
    let mut stream = subscribe(&client, 1).await;
    let id = gw.create_job(&[]).await;
    let job = stream
        .job_within(Duration::from_secs(5))
        .await
        .expect("delivered on the reopened stream");
    assert_eq!(job.id, id);
    gw.stop().await;
}

#[tokio::test]
async fn a_repeated_acknowledgement_is_answered_again_without_an_upstream_call() {
    let mut gw = spawn(Backend::InProcess).await;
    let client = client(&gw).await;
    let mut stream = subscribe(&client, 2).await;
    let id = gw.create_job(&[]).await;
    stream
        .job_within(Duration::from_secs(5))
        .await
        .expect("delivered");
    stream.acknowledge(&id).await;
    assert_eq!(
        stream.acknowledged().await.status(),
        pb::JobStatus::InProgress
    );
    stream.acknowledge(&id).await;
    let again = stream.acknowledged().await;
    assert_eq!(
        (again.job_id.as_str(), again.status()),
        (id.as_str(), pb::JobStatus::InProgress)
    );
    assert!(again.error.is_none());
    assert_eq!(acknowledgements(&gw), 1, "the repeat reached no upstream");
    // The stream goes on: the next job still comes.
    let next = gw.create_job(&[]).await;
    let job = stream
        .job_within(Duration::from_secs(5))
        .await
        .expect("the stream is still open");
    assert_eq!(job.id, next);
    gw.stop().await;
}

#[tokio::test]
async fn a_client_gets_no_more_job_streams_than_its_limit() {
    let gw = gateway(Backend::InProcess)
        .flags(&["--max-job-streams-per-client", "2"])
        .spawn()
        .await;
    let client = client(&gw).await;
    let _first = subscribe(&client, 1).await;
    let _second = subscribe(&client, 1).await;
    let status = refused_stream(&gw, subscription(1)).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.get_details_quota_failure().unwrap().violations[0].subject,
        "client:anonymous"
    );
    gw.stop().await;
}

/// Sets the emulator's fault plan, as the admin service's SetFaults does.
fn set_faults(gw: &TestGateway, plan: &str) {
    gw.emulator
        .set_faults(codepipeline_gateway::emulator::faults::FaultPlan::parse(plan).unwrap());
}

fn error_reason(answer: &pb::StreamJobsAcknowledged) -> String {
    let error = answer.error.clone().expect("an error");
    let status = Status::with_details(
        Code::from_i32(error.code),
        error.message.clone(),
        prost::Message::encode_to_vec(&error).into(),
    );
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

fn job_status(gw: &TestGateway, id: &str) -> codepipeline_gateway::domain::JobStatus {
    gw.emulator
        .job(&codepipeline_gateway::domain::JobId::parse(id).unwrap())
        .unwrap()
        .status
}

#[tokio::test]
async fn a_job_whose_acknowledgement_answer_was_lost_stays_its_holders_across_a_new_stream() {
    // Issue 21, scenario 1: the answer to B's acknowledgement is lost (the upstream applied it),
    // then B's stream ends (streams rotate with their connection). The job must stay B's: B
    // acknowledges it again on its next stream and gets it, not JOB_NOT_DELIVERED.
    let mut gw = gateway(Backend::InProcess)
        .flags(&["--feed-ack-deadline", "300ms"])
        .spawn()
        .await;
    let client = client(&gw).await;
    let mut a = subscribe(&client, 1).await;
    let id = gw.create_job(&[]).await;
    a.job_within(Duration::from_secs(5)).await.expect("to A");
    // A never acknowledges: the job goes to B.
    let mut b = subscribe(&client, 1).await;
    let job = b.job_within(Duration::from_secs(5)).await.expect("to B");
    assert_eq!(job.id, id);
    set_faults(&gw, "AcknowledgeJob:drop=1");
    b.acknowledge(&id).await;
    let lost = b.acknowledged().await;
    assert_eq!(lost.error.as_ref().unwrap().code, Code::Unavailable as i32);
    assert_eq!(
        job_status(&gw, &id),
        codepipeline_gateway::domain::JobStatus::InProgress
    );
    set_faults(&gw, "");
    // Well past the ack deadline and any re-dispatch window a clock could guess.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        a.job_within(Duration::from_millis(200)).await.is_none(),
        "never handed to another subscriber while B holds it"
    );
    drop(b);
    let mut b_again = subscribe(&client, 1).await;
    b_again.acknowledge(&id).await;
    let answer = b_again.acknowledged().await;
    assert!(answer.error.is_none(), "claimed back: {answer:?}");
    assert_eq!(answer.status(), pb::JobStatus::InProgress);
    gw.stop().await;
}

#[tokio::test]
async fn a_unary_acknowledgement_of_a_job_a_stream_holds_is_refused_without_an_upstream_call() {
    // Issue 21, scenario 2: A's lease ends, B takes the job on its stream; A's unary
    // AcknowledgeJob with the same nonce would be accepted again upstream: two workers.
    let mut gw = gateway(Backend::InProcess)
        .flags(&["--feed-ack-deadline", "300ms"])
        .spawn()
        .await;
    let client = client(&gw).await;
    let mut a = subscribe(&client, 1).await;
    let id = gw.create_job(&[]).await;
    let job = a.job_within(Duration::from_secs(5)).await.expect("to A");
    let mut b = subscribe(&client, 1).await;
    b.job_within(Duration::from_secs(5)).await.expect("to B");
    b.acknowledge(&id).await;
    assert!(b.acknowledged().await.error.is_none());
    let refused = gw.acknowledge(&id, &job.nonce).await.unwrap_err();
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "JOB_HELD_BY_STREAM"
    );
    assert_eq!(
        acknowledgements(&gw),
        1,
        "the unary call reached no upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_unary_acknowledgement_of_a_streamed_job_is_refused_after_its_feed_retired() {
    // Found attacking issue 21: once both streams closed and the feed retired (one ack deadline
    // with no subscriber), A's unary AcknowledgeJob with the nonce the feed gave it was
    // forwarded and answered IN_PROGRESS while B held the job.
    let mut gw = gateway(Backend::InProcess)
        .flags(&["--feed-ack-deadline", "300ms"])
        .spawn()
        .await;
    let client = client(&gw).await;
    let mut a = subscribe(&client, 1).await;
    let id = gw.create_job(&[]).await;
    let job = a.job_within(Duration::from_secs(5)).await.expect("to A");
    let mut b = subscribe(&client, 1).await;
    b.job_within(Duration::from_secs(5)).await.expect("to B");
    b.acknowledge(&id).await;
    assert!(b.acknowledged().await.error.is_none());
    drop((a, b));
    // Deserted for well over one ack deadline: the feed retires and forgets its jobs.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let refused = gw.acknowledge(&id, &job.nonce).await.unwrap_err();
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "JOB_HELD_BY_STREAM"
    );
    assert_eq!(
        acknowledgements(&gw),
        1,
        "the unary call reached no upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_old_acknowledgements_answer_does_not_end_the_lease_of_a_re_dispatched_copy() {
    // Issue 21, scenario 3: the upstream re-dispatches the job (a new nonce) to the same
    // subscriber while its first acknowledgement is on its way; that one's InvalidNonce must not
    // end the new copy's lease.
    let mut gw = gateway(Backend::InProcess)
        .flags(&[
            "--feed-min-idle-interval",
            "20ms",
            "--feed-max-idle-interval",
            "50ms",
        ])
        .engine(&["--redispatch-after", "100ms"])
        .spawn()
        .await;
    set_faults(&gw, "AcknowledgeJob:latency=800ms");
    let client = client(&gw).await;
    let mut stream = subscribe(&client, 2).await;
    let id = gw.create_job(&[]).await;
    let first = stream.job_within(Duration::from_secs(5)).await.unwrap();
    // The emulator hands the job out again 100 ms after the first poll, while this
    // acknowledgement is in its 800 ms.
    stream.acknowledge(&id).await;
    let second = stream
        .job_within(Duration::from_secs(5))
        .await
        .expect("the re-dispatched copy");
    assert_eq!(second.id, id);
    assert_ne!(second.nonce, first.nonce);
    let old = stream.acknowledged().await;
    assert_eq!(error_reason(&old), "InvalidNonceException", "{old:?}");
    set_faults(&gw, "");
    stream.acknowledge(&id).await;
    let answer = stream.acknowledged().await;
    assert!(
        answer.error.is_none(),
        "the new copy's lease lives: {answer:?}"
    );
    assert_eq!(
        job_status(&gw, &id),
        codepipeline_gateway::domain::JobStatus::InProgress
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_worker_that_restarts_gets_its_jobs_back_at_once() {
    // Issue 21, scenario 5: the only subscriber leaves with a job delivered and one more polled;
    // its next stream gets both at once, not after CodePipeline's re-dispatch.
    let mut gw = gateway(Backend::InProcess)
        .engine(&["--redispatch-after", "1h"])
        .spawn()
        .await;
    let client = client(&gw).await;
    let mut stream = subscribe(&client, 1).await;
    let id = gw.create_job(&[]).await;
    stream.job_within(Duration::from_secs(5)).await.unwrap();
    drop(stream);
    // The restart takes a moment: the feed has had no subscriber for a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut again = subscribe(&client, 1).await;
    let job = again
        .job_within(Duration::from_secs(2))
        .await
        .expect("back at once, with the same nonce");
    assert_eq!(job.id, id);
    again.acknowledge(&id).await;
    assert!(again.acknowledged().await.error.is_none());
    gw.stop().await;
}

#[tokio::test]
async fn jobs_a_poll_brings_back_after_the_last_subscriber_left_wait_for_the_next() {
    // Issue 21, scenario 5: a poll in flight when the last subscriber leaves feeds the feed,
    // which keeps its jobs for the next subscriber.
    let mut gw = gateway(Backend::InProcess)
        .engine(&["--redispatch-after", "1h"])
        .spawn()
        .await;
    set_faults(&gw, "PollForJobs:latency=500ms");
    let client = client(&gw).await;
    let id = gw.create_job(&[]).await;
    let stream = subscribe(&client, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(600)).await;
    set_faults(&gw, "");
    let mut next = subscribe(&client, 1).await;
    let job = next
        .job_within(Duration::from_secs(2))
        .await
        .expect("the polled job waited");
    assert_eq!(job.id, id);
    gw.stop().await;
}

#[tokio::test]
async fn a_never_sent_acknowledgement_of_a_stream_that_ended_puts_the_job_back() {
    // Issue 21, scenario 5: the stream ends while its acknowledgement is on its way, and the
    // upstream throttles it (it never took effect, and is not retried): the job goes to
    // another subscriber.
    let mut gw = gateway(Backend::InProcess)
        .flags(&["--aws-max-attempts", "1"])
        .engine(&["--redispatch-after", "1h"])
        .spawn()
        .await;
    set_faults(&gw, "AcknowledgeJob:latency=300ms,throttling=1");
    let client = client(&gw).await;
    let mut leaving = subscribe(&client, 1).await;
    let id = gw.create_job(&[]).await;
    leaving.job_within(Duration::from_secs(5)).await.unwrap();
    let mut other = subscribe(&client, 1).await;
    leaving.acknowledge(&id).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(leaving);
    set_faults(&gw, "");
    let job = other
        .job_within(Duration::from_secs(3))
        .await
        .expect("delivered again");
    assert_eq!(job.id, id);
    gw.stop().await;
}

#[tokio::test]
async fn no_feed_starts_or_polls_once_the_gateway_drains() {
    // Issue 21, scenario 5: a stream opened during the drain would start a poller whose jobs
    // nobody receives.
    use codepipeline_gateway::{
        domain::SubscribeInput,
        emulator::{Emulator, EmulatorConfig},
        feed::{FeedCharges, FeedConfig, FeedLimits, Feeds, Subscriber},
        limits::{ClientLimits, LimitClock, Rate, RateLimits, UpstreamBudget},
        observability::Metrics,
    };
    let emulator = Arc::new(Emulator::new(EmulatorConfig::default()));
    let metrics = Metrics::new();
    let rates = Arc::new(RateLimits::local(LimitClock::default(), metrics.clone()));
    let budget = Arc::new(UpstreamBudget::new(None, rates.clone()));
    let every_call = std::num::NonZeroU32::new(1_000).unwrap();
    let client_limits = Arc::new(ClientLimits::new(
        Rate {
            per_second: every_call,
            burst: every_call,
        },
        rates,
    ));
    let draining = tokio_util::sync::CancellationToken::new();
    let feeds = Feeds::new(
        FeedConfig {
            max_batch_size: 10,
            min_idle_interval: Duration::from_millis(10),
            max_idle_interval: Duration::from_millis(10),
            ack_deadline: Duration::from_secs(1),
            limits: FeedLimits {
                per_process: 8,
                per_client: 8,
            },
        },
        emulator.clone(),
        FeedCharges {
            budget,
            client_limits,
        },
        metrics,
        draining.clone(),
    );
    draining.cancel();
    let input = SubscribeInput {
        action_type_id: codepipeline_gateway::emulator::demo_action_type(),
        query_param: None,
        max_outstanding_jobs: 1,
    };
    let anyone = Subscriber {
        id: Arc::from("anyone"),
        rate: None,
    };
    assert!(feeds.subscribe(input, &anyone).is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(emulator.call_counts()[&Operation::PollForJobs], 0);
}
