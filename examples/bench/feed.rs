//! The job feed against the example workers' polling loop, at the same worker count, on the real
//! SDK path (gateway -> aws-sdk-codepipeline -> the emulator's front), where nothing hints that a
//! job was created and the feed stands on its polls alone:
//!
//! - PollForJobs calls per idle minute, counted at the emulator;
//! - pickup latency, from CreateJob's answer to a worker holding the job, with jobs created one
//!   at a time at random intervals, and the polls each job cost;
//! - jobs per second through take -> acknowledge -> result, with a backlog queued up front.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use codepipeline_gateway::pb::{
    emulator::{
        CreateJobRequest, GetCallCountsRequest,
        emulator_admin_service_client::EmulatorAdminServiceClient,
    },
    jobworker::{
        self as pb, job_worker_service_client::JobWorkerServiceClient,
        stream_jobs_request::Request as ToGateway, stream_jobs_response::Response as FromGateway,
    },
};
use rand::RngExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{Args, Row, Sizes, channel, emulator_front, meets, percentile, row, sdk_gateway};

/// How many jobs a worker holds at once, in both modes.
const SLOTS: i32 = 4;
/// The example workers' poll interval when a poll found nothing (jittered +-50 %).
const POLL_INTERVAL: Duration = Duration::from_secs(5);

fn demo_action_type() -> pb::ActionTypeId {
    pb::ActionTypeId {
        category: pb::ActionCategory::Build.into(),
        owner: pb::ActionOwner::Custom.into(),
        provider: "DemoBuilder".to_owned(),
        version: "1".to_owned(),
    }
}

/// Which way the workers get their jobs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    Poll,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Stream => "StreamJobs subscribers",
            Self::Poll => "polling workers (5 s interval)",
        }
    }
}

/// When each job reached a worker, by id.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// `workers` workers in `mode`, taking, acknowledging and finishing every job they get, until
/// `stop` is set.
fn start_workers(
    mode: Mode,
    workers: usize,
    client: &JobWorkerServiceClient<Channel>,
    arrivals: &Arrivals,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|_| {
            let (client, arrivals, stop) = (client.clone(), arrivals.clone(), stop.clone());
            match mode {
                Mode::Stream => tokio::spawn(stream_worker(client, arrivals, stop)),
                Mode::Poll => tokio::spawn(polling_worker(client, arrivals, stop)),
            }
        })
        .collect()
}

async fn finish(client: &mut JobWorkerServiceClient<Channel>, job_id: String) {
    let _ = client
        .put_job_success_result(pb::PutJobSuccessResultRequest {
            job_id,
            ..Default::default()
        })
        .await;
}

async fn stream_worker(
    mut client: JobWorkerServiceClient<Channel>,
    arrivals: Arrivals,
    stop: Arc<AtomicBool>,
) {
    let (requests, outgoing) = mpsc::channel(64);
    let send = |request| pb::StreamJobsRequest {
        request: Some(request),
    };
    let _ = requests
        .send(send(ToGateway::Subscription(pb::StreamJobsSubscription {
            action_type_id: Some(demo_action_type()),
            query_param: Default::default(),
            max_outstanding_jobs: SLOTS,
        })))
        .await;
    let Ok(response) = client.stream_jobs(ReceiverStream::new(outgoing)).await else {
        return;
    };
    let mut responses = response.into_inner();
    while !stop.load(Ordering::Relaxed) {
        let message = tokio::time::timeout(Duration::from_millis(200), responses.message()).await;
        let Ok(Ok(Some(message))) = message else {
            if matches!(message, Ok(Ok(None) | Err(_))) {
                return;
            }
            continue;
        };
        match message.response {
            Some(FromGateway::Job(job)) => {
                arrivals
                    .lock()
                    .unwrap()
                    .entry(job.id.clone())
                    .or_insert_with(Instant::now);
                let acknowledge = pb::StreamJobsAcknowledge { job_id: job.id };
                let _ = requests
                    .send(send(ToGateway::Acknowledge(acknowledge)))
                    .await;
            }
            Some(FromGateway::Acknowledged(answer)) => {
                if answer.error.is_none() {
                    finish(&mut client, answer.job_id).await;
                }
                let credit = pb::StreamJobsCredit { jobs: 1 };
                let _ = requests.send(send(ToGateway::Credit(credit))).await;
            }
            None => {}
        }
    }
}

async fn polling_worker(
    mut client: JobWorkerServiceClient<Channel>,
    arrivals: Arrivals,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let polled = client
            .poll_for_jobs(pb::PollForJobsRequest {
                action_type_id: Some(demo_action_type()),
                max_batch_size: Some(SLOTS),
                query_param: Default::default(),
            })
            .await;
        let jobs = polled.map(|r| r.into_inner().jobs).unwrap_or_default();
        if jobs.is_empty() {
            let pause = POLL_INTERVAL.mul_f64(rand::rng().random_range(0.5..=1.5));
            let deadline = Instant::now() + pause;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        }
        for job in jobs {
            arrivals
                .lock()
                .unwrap()
                .entry(job.id.clone())
                .or_insert_with(Instant::now);
            let acknowledged = client
                .acknowledge_job(pb::AcknowledgeJobRequest {
                    job_id: job.id.clone(),
                    nonce: job.nonce,
                })
                .await;
            if acknowledged.is_ok() {
                finish(&mut client, job.id).await;
            }
        }
    }
}

async fn polls(admin: &mut EmulatorAdminServiceClient<Channel>) -> anyhow::Result<u64> {
    let counts = admin
        .get_call_counts(GetCallCountsRequest::default())
        .await?
        .into_inner();
    Ok(counts.calls.get("PollForJobs").copied().unwrap_or(0))
}

async fn create_job(admin: &mut EmulatorAdminServiceClient<Channel>) -> anyhow::Result<String> {
    Ok(admin
        .create_job(CreateJobRequest {
            action_type_id: Some(demo_action_type()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job_id)
}

/// What one mode did in each scenario.
struct Run {
    idle_polls_per_minute: f64,
    pickup: Vec<Duration>,
    pickup_polls_per_job: f64,
    jobs_per_second: f64,
    backlog_polls_per_job: f64,
}

async fn run_mode(args: &Args, sizes: &Sizes, mode: Mode, workers: usize) -> anyhow::Result<Run> {
    let emulator = emulator_front(&args.gateway)?;
    let endpoint = format!("http://{}", emulator.addr);
    let gateway = sdk_gateway(&args.gateway, &endpoint, &[])?;
    let mut admin = EmulatorAdminServiceClient::new(channel(emulator.addr).await?);
    let client = JobWorkerServiceClient::new(channel(gateway.addr).await?);
    let arrivals: Arrivals = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_workers(mode, workers, &client, &arrivals, &stop);
    // Let the workers take the emulator's demo job and settle into idling.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let before = polls(&mut admin).await?;
    tokio::time::sleep(sizes.feed_idle).await;
    let idle_polls = polls(&mut admin).await? - before;
    let idle_polls_per_minute = idle_polls as f64 * 60.0 / sizes.feed_idle.as_secs_f64();

    let before = polls(&mut admin).await?;
    let mut created = Vec::new();
    for _ in 0..sizes.feed_pickup_jobs {
        let pause = Duration::from_millis(rand::rng().random_range(100..=900));
        tokio::time::sleep(pause).await;
        let id = create_job(&mut admin).await?;
        created.push((id, Instant::now()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let all_arrived = {
            let arrived = arrivals.lock().unwrap();
            created.iter().all(|(id, _)| arrived.contains_key(id))
        };
        if all_arrived {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pickup_polls = polls(&mut admin).await? - before;
    let mut pickup: Vec<Duration> = {
        let arrived = arrivals.lock().unwrap();
        created
            .iter()
            .filter_map(|(id, at)| {
                arrived
                    .get(id)
                    .map(|got| got.saturating_duration_since(*at))
            })
            .collect()
    };
    if pickup.len() != created.len() {
        anyhow::bail!(
            "{}: {} of {} jobs picked up",
            mode.name(),
            pickup.len(),
            created.len()
        );
    }
    pickup.sort_unstable();

    let before = polls(&mut admin).await?;
    let mut backlog = Vec::new();
    for _ in 0..sizes.feed_backlog_jobs {
        backlog.push(create_job(&mut admin).await?);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        let done = {
            let arrived = arrivals.lock().unwrap();
            backlog.iter().all(|id| arrived.contains_key(id))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let jobs_per_second = backlog.len() as f64 / started.elapsed().as_secs_f64();
    let backlog_polls = polls(&mut admin).await? - before;

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.abort();
    }
    Ok(Run {
        idle_polls_per_minute,
        pickup_polls_per_job: pickup_polls as f64 / created.len() as f64,
        pickup,
        jobs_per_second,
        backlog_polls_per_job: backlog_polls as f64 / backlog.len() as f64,
    })
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// PollForJobs calls per minute while `subscribers` StreamJobs subscribers idle.
async fn idle_stream_polls(args: &Args, sizes: &Sizes, subscribers: usize) -> anyhow::Result<f64> {
    let emulator = emulator_front(&args.gateway)?;
    let endpoint = format!("http://{}", emulator.addr);
    let gateway = sdk_gateway(&args.gateway, &endpoint, &[])?;
    let mut admin = EmulatorAdminServiceClient::new(channel(emulator.addr).await?);
    let client = JobWorkerServiceClient::new(channel(gateway.addr).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_workers(
        Mode::Stream,
        subscribers,
        &client,
        &Arrivals::default(),
        &stop,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = polls(&mut admin).await?;
    tokio::time::sleep(sizes.feed_idle).await;
    let idle = polls(&mut admin).await? - before;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.abort();
    }
    Ok(idle as f64 * 60.0 / sizes.feed_idle.as_secs_f64())
}

pub(super) async fn feed(args: &Args, sizes: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let workers = sizes.feed_workers;
    let stream = run_mode(args, sizes, Mode::Stream, workers).await?;
    let poll = run_mode(args, sizes, Mode::Poll, workers).await?;
    let one = idle_stream_polls(args, sizes, 1).await?;
    let hundred = idle_stream_polls(args, sizes, 100).await?;
    let ratio = hundred / one;
    rows.push(row(
        "Upstream PollForJobs per idle minute, 100 subscribers against 1",
        format!("{hundred:.0} (100 StreamJobs subscribers)"),
        format!("{one:.0} (1 subscriber)"),
        format!("{ratio:.2}x: {}", meets(ratio <= 1.1, "<= 1.1x")),
    ));
    rows.push(row(
        &format!("Upstream PollForJobs per idle minute, {workers} workers"),
        format!(
            "{:.0} ({})",
            stream.idle_polls_per_minute,
            Mode::Stream.name()
        ),
        format!("{:.0} ({})", poll.idle_polls_per_minute, Mode::Poll.name()),
        format!(
            "{:.2}x the polling workers'",
            stream.idle_polls_per_minute / poll.idle_polls_per_minute
        ),
    ));
    // The idle interval the feed backs off to, from its default flags.
    let half_idle_ms = 500.0;
    let p50 = millis(percentile(&stream.pickup, 0.5));
    rows.push(row(
        &format!(
            "Pickup latency, job created -> a worker holds it ({} jobs at random intervals)",
            stream.pickup.len()
        ),
        format!(
            "p50 {p50:.0} ms, p99 {:.0} ms ({})",
            millis(percentile(&stream.pickup, 0.99)),
            Mode::Stream.name()
        ),
        format!(
            "p50 {:.0} ms, p99 {:.0} ms ({})",
            millis(percentile(&poll.pickup, 0.5)),
            millis(percentile(&poll.pickup, 0.99)),
            Mode::Poll.name()
        ),
        meets(
            p50 <= half_idle_ms + 10.0,
            "p50 <= half the 1 s idle interval + 10 ms",
        ),
    ));
    rows.push(row(
        "Upstream PollForJobs per job, jobs arriving one at a time",
        format!(
            "{:.2} ({})",
            stream.pickup_polls_per_job,
            Mode::Stream.name()
        ),
        format!("{:.2} ({})", poll.pickup_polls_per_job, Mode::Poll.name()),
        String::new(),
    ));
    rows.push(row(
        &format!(
            "Upstream PollForJobs per job, a burst of {} queued jobs",
            sizes.feed_backlog_jobs
        ),
        format!(
            "{:.3} ({})",
            stream.backlog_polls_per_job,
            Mode::Stream.name()
        ),
        format!("{:.3} ({})", poll.backlog_polls_per_job, Mode::Poll.name()),
        meets(stream.backlog_polls_per_job <= 0.2, "<= 0.2"),
    ));
    rows.push(row(
        &format!(
            "Jobs per second, take -> acknowledge -> result, {} queued, {workers} workers",
            sizes.feed_backlog_jobs
        ),
        format!("{:.0} ({})", stream.jobs_per_second, Mode::Stream.name()),
        format!("{:.0} ({})", poll.jobs_per_second, Mode::Poll.name()),
        format!("{:.2}x", stream.jobs_per_second / poll.jobs_per_second),
    ));
    Ok(())
}
