//! One hostile client with a valid token against a quiet one, on one production gateway with its
//! default limits: the quiet client's AcknowledgeJob latency (concurrency 4) alone, then while
//! the hostile client holds 1,024 upload streams that never send a header, 40 uploads stalled
//! after theirs, 60 downloads it never reads and a feed per query param (64 asked for). The
//! baseline is the quiet client alone in the same run; the gateway's RSS is read before and at
//! the height of the attack.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, transport::Channel};

use codepipeline_gateway::pb::{
    emulator::{self as admin_pb, emulator_admin_service_client::EmulatorAdminServiceClient},
    jobworker::{
        self as pb, artifact_service_client::ArtifactServiceClient,
        job_worker_service_client::JobWorkerServiceClient,
        upload_output_artifact_request::Request as Uploading,
    },
};
use sha2::Digest;

use super::{Args, Proc, Row, Sizes, TOKEN, channel, latencies, meets, micros, percentile, row};

const QUIET: &str = "quiet-token";
const HOSTILE: &str = "hostile-token";
const MIB: usize = 1 << 20;

fn as_client<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

fn demo_action_type() -> pb::ActionTypeId {
    pb::ActionTypeId {
        category: pb::ActionCategory::Build.into(),
        owner: pb::ActionOwner::Custom.into(),
        provider: "DemoBuilder".to_owned(),
        version: "1".to_owned(),
    }
}

fn artifact(name: &str) -> pb::Artifact {
    pb::Artifact {
        name: name.to_owned(),
        revision: "bench".to_owned(),
        location: Some(pb::ArtifactLocation {
            r#type: pb::ArtifactLocationType::S3.into(),
            s3_location: Some(pb::S3ArtifactLocation {
                bucket_name: "codepipeline-bench".to_owned(),
                object_key: format!("tenants/{name}.zip"),
            }),
        }),
    }
}

/// The gateway with its production limits (nothing raised), three clients in its token file.
fn gateway(binary: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<Proc> {
    let entry = |id: &str, token: &str| {
        format!(
            "[[clients]]\nid = \"{id}\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n\
             action_types = [\"Build/Custom/DemoBuilder/1\"]\n",
            hex::encode(sha2::Sha256::digest(token.as_bytes()))
        )
    };
    let tokens = dir.join("tokens.toml");
    let operator = format!(
        "[[clients]]\nid = \"operator\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n",
        hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()))
    );
    std::fs::write(
        &tokens,
        [entry("quiet", QUIET), entry("hostile", HOSTILE), operator].concat(),
    )?;
    Proc::start(
        binary,
        &[
            "serve",
            "--upstream",
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--demo-jobs",
            "0",
            "--token-file",
            tokens.to_str().expect("utf-8"),
            // The quiet client's rate must not be what its latency measures.
            "--rate-limit-per-second",
            "100000",
            "--rate-limit-burst",
            "100000",
        ],
        &[],
        "grpc listening on ",
    )
}

/// A job with an input of `input_bytes` and an output, acknowledged by `token`: its id and the
/// acknowledgement, which answers InProgress again every time.
async fn job(
    admin: &mut EmulatorAdminServiceClient<Channel>,
    workers: &mut JobWorkerServiceClient<Channel>,
    token: &str,
    input_bytes: usize,
) -> anyhow::Result<pb::AcknowledgeJobRequest> {
    let job_id = admin
        .create_job(as_client(
            admin_pb::CreateJobRequest {
                action_type_id: Some(demo_action_type()),
                input_artifacts: vec![artifact("SourceOutput")],
                output_artifacts: vec![artifact("BuildOutput")],
                ..Default::default()
            },
            TOKEN,
        ))
        .await?
        .into_inner()
        .job_id;
    let header = admin_pb::AttachInputArtifactRequest {
        request: Some(admin_pb::attach_input_artifact_request::Request::Header(
            admin_pb::AttachInputArtifactHeader {
                job_id: job_id.clone(),
                artifact_name: "SourceOutput".to_owned(),
                content_type: String::new(),
            },
        )),
    };
    let chunks = (0..input_bytes / MIB).map(|_| admin_pb::AttachInputArtifactRequest {
        request: Some(admin_pb::attach_input_artifact_request::Request::Chunk(
            vec![7u8; MIB],
        )),
    });
    admin
        .attach_input_artifact(as_client(
            tokio_stream::iter(std::iter::once(header).chain(chunks)),
            TOKEN,
        ))
        .await?;
    let polled = workers
        .poll_for_jobs(as_client(
            pb::PollForJobsRequest {
                action_type_id: Some(demo_action_type()),
                max_batch_size: Some(10),
                query_param: Default::default(),
            },
            token,
        ))
        .await?
        .into_inner()
        .jobs;
    let job = polled
        .into_iter()
        .find(|job| job.id == job_id)
        .ok_or_else(|| anyhow::anyhow!("the job was not handed out"))?;
    let ack = pb::AcknowledgeJobRequest {
        job_id: job.id,
        nonce: job.nonce,
    };
    workers
        .acknowledge_job(as_client(ack.clone(), token))
        .await?;
    Ok(ack)
}

/// The quiet client's AcknowledgeJob latencies at concurrency 4, sorted.
async fn quiet_latencies(
    client: &JobWorkerServiceClient<Channel>,
    ack: &pb::AcknowledgeJobRequest,
    calls: usize,
) -> Vec<Duration> {
    let (client, ack) = (client.clone(), ack.clone());
    let call = move || {
        let (mut client, ack) = (client.clone(), ack.clone());
        async move {
            client
                .acknowledge_job(as_client(ack, QUIET))
                .await
                .expect("the quiet client is answered");
        }
    };
    let mut samples = latencies(4, calls, call).await;
    samples.sort_unstable();
    samples
}

/// What the hostile client holds open; dropped, it all goes.
#[derive(Default)]
struct Attack {
    senders: Vec<mpsc::Sender<pb::UploadOutputArtifactRequest>>,
    downloads: Vec<tonic::Streaming<pb::DownloadInputArtifactResponse>>,
    streams: Vec<mpsc::Sender<pb::StreamJobsRequest>>,
    refused: usize,
}

async fn attack(addr: std::net::SocketAddr, job_id: &str) -> anyhow::Result<Attack> {
    let mut attack = Attack::default();
    let artifact_job = || pb::ArtifactJob {
        job: Some(pb::artifact_job::Job::JobId(job_id.to_owned())),
    };
    // Several connections, as a fleet would open them.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(channel(addr).await?);
    }
    // Uploads stalled after their header and a first MiB, then (below) uploads that never
    // send one: the stalled ones first, so they meet the memory budget, not the concurrency
    // limit the headerless ones fill.
    for i in 0..40 {
        let (sender, receiver) = mpsc::channel(2);
        if i < 40 {
            sender
                .send(pb::UploadOutputArtifactRequest {
                    request: Some(Uploading::Header(pb::UploadOutputArtifactHeader {
                        job: Some(artifact_job()),
                        artifact_name: "BuildOutput".to_owned(),
                        content_type: String::new(),
                        size_bytes: Some(64 << 20),
                    })),
                })
                .await?;
            sender
                .send(pb::UploadOutputArtifactRequest {
                    request: Some(Uploading::Chunk(vec![1u8; MIB].into())),
                })
                .await?;
        }
        let mut client = ArtifactServiceClient::new(channels[i % channels.len()].clone());
        tokio::spawn(async move {
            let _ = client
                .upload_output_artifact(as_client(ReceiverStream::new(receiver), HOSTILE))
                .await;
        });
        attack.senders.push(sender);
    }
    // Downloads it never reads.
    for i in 0..60 {
        let mut client = ArtifactServiceClient::new(channels[i % channels.len()].clone());
        match client
            .download_input_artifact(as_client(
                pb::DownloadInputArtifactRequest {
                    job: Some(artifact_job()),
                    artifact_name: "SourceOutput".to_owned(),
                },
                HOSTILE,
            ))
            .await
        {
            Ok(download) => attack.downloads.push(download.into_inner()),
            Err(_) => attack.refused += 1,
        }
    }
    // A feed per query param.
    for i in 0..64 {
        let (sender, receiver) = mpsc::channel(2);
        sender
            .send(pb::StreamJobsRequest {
                request: Some(pb::stream_jobs_request::Request::Subscription(
                    pb::StreamJobsSubscription {
                        action_type_id: Some(demo_action_type()),
                        query_param: [("ProjectName".to_owned(), format!("p{i}"))].into(),
                        max_outstanding_jobs: 1,
                    },
                )),
            })
            .await?;
        let mut client = JobWorkerServiceClient::new(channels[i % channels.len()].clone());
        match client
            .stream_jobs(as_client(ReceiverStream::new(receiver), HOSTILE))
            .await
        {
            Ok(_) => attack.streams.push(sender),
            Err(_) => attack.refused += 1,
        }
    }
    for i in 0..1024 {
        let (sender, receiver) = mpsc::channel(2);
        let mut client = ArtifactServiceClient::new(channels[i % channels.len()].clone());
        tokio::spawn(async move {
            let _ = client
                .upload_output_artifact(as_client(ReceiverStream::new(receiver), HOSTILE))
                .await;
        });
        attack.senders.push(sender);
    }
    Ok(attack)
}

pub(super) async fn hostile_client(
    args: &Args,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let gateway = gateway(&args.gateway, dir.path())?;
    let channel_of = channel(gateway.addr).await?;
    let mut admin = EmulatorAdminServiceClient::new(channel_of.clone());
    let mut workers = JobWorkerServiceClient::new(channel_of.clone());
    let quiet_ack = job(&mut admin, &mut workers, QUIET, MIB).await?;
    let hostile_ack = job(&mut admin, &mut workers, HOSTILE, 16 * MIB).await?;
    let quiet = JobWorkerServiceClient::new(channel(gateway.addr).await?);
    let calls = sizes.latency_calls.1.max(400);

    let rss_before = gateway.rss_mib();
    let alone = quiet_latencies(&quiet, &quiet_ack, calls).await;
    let held = attack(gateway.addr, &hostile_ack.job_id).await?;
    // Let the stalled streams reach their handlers and take what they hold.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attacked = quiet_latencies(&quiet, &quiet_ack, calls).await;
    let rss_attacked = gateway.rss_mib();
    let refused = held.refused;
    drop(held);

    let (p99_alone, p99_attacked) = (
        micros(percentile(&alone, 0.99)),
        micros(percentile(&attacked, 0.99)),
    );
    let ratio = p99_attacked / p99_alone;
    rows.push(row(
        "quiet client's AcknowledgeJob p99 (concurrency 4) while a hostile client holds 1,024 \
         headerless uploads, 40 stalled uploads, 60 unread downloads, 64 feeds",
        format!(
            "p99 {p99_attacked:.0} us, p50 {:.0} us",
            micros(percentile(&attacked, 0.5))
        ),
        format!(
            "p99 {p99_alone:.0} us, p50 {:.0} us (the quiet client alone)",
            micros(percentile(&alone, 0.5))
        ),
        format!("{ratio:.2}x: {}", meets(ratio <= 2.0, "<= 2x")),
    ));
    rows.push(row(
        "gateway RSS under that attack",
        format!("{rss_attacked:.0} MiB ({refused} of the hostile downloads and feeds refused)"),
        format!("{rss_before:.0} MiB before"),
        meets(rss_attacked < 256.0, "< 256 MiB, the chart's memory limit"),
    ));
    Ok(())
}
