//! Artifacts through the gateway against `aws-sdk-s3` talking to the same store directly, in the
//! same run: an emulator process (its front and its S3-compatible store), a gateway on the `aws`
//! upstream pointed at both, one job with an input and an output artifact. Download and upload
//! throughput in interleaved rounds, then the gateway's RSS while it streams 1 GiB down and up.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use codepipeline_gateway::pb::{
    emulator::{self as admin_pb, emulator_admin_service_client::EmulatorAdminServiceClient},
    jobworker::{
        self as pb, artifact_service_client::ArtifactServiceClient,
        job_worker_service_client::JobWorkerServiceClient,
    },
};
use tonic::transport::Channel;

use super::{ACCESS_KEY_ID, Args, Proc, Row, SECRET_ACCESS_KEY, Sizes, channel, row, sdk_gateway};

const MIB: usize = 1024 * 1024;
const BUCKET: &str = "codepipeline-us-east-1-bench-artifacts";
const PART: usize = 8 * MIB;

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn artifact(name: &str) -> pb::Artifact {
    pb::Artifact {
        name: name.to_owned(),
        revision: "bench".to_owned(),
        location: Some(pb::ArtifactLocation {
            r#type: pb::ArtifactLocationType::S3.into(),
            s3_location: Some(pb::S3ArtifactLocation {
                bucket_name: BUCKET.to_owned(),
                object_key: format!("bench/{name}.zip"),
            }),
        }),
    }
}

struct Bench {
    admin: EmulatorAdminServiceClient<Channel>,
    artifacts: ArtifactServiceClient<Channel>,
    s3: aws_sdk_s3::Client,
    job_id: String,
}

impl Bench {
    async fn attach(&mut self, size: usize) -> anyhow::Result<()> {
        let header = admin_pb::AttachInputArtifactRequest {
            request: Some(admin_pb::attach_input_artifact_request::Request::Header(
                admin_pb::AttachInputArtifactHeader {
                    job_id: self.job_id.clone(),
                    artifact_name: "SourceOutput".to_owned(),
                    content_type: String::new(),
                },
            )),
        };
        let chunks = (0..size / MIB).map(|_| admin_pb::AttachInputArtifactRequest {
            request: Some(admin_pb::attach_input_artifact_request::Request::Chunk(
                vec![7u8; MIB],
            )),
        });
        self.admin
            .attach_input_artifact(tokio_stream::iter(std::iter::once(header).chain(chunks)))
            .await?;
        Ok(())
    }

    /// Downloads the input through the gateway: the bytes received.
    async fn download_through(&mut self) -> anyhow::Result<usize> {
        let mut stream = self
            .artifacts
            .download_input_artifact(pb::DownloadInputArtifactRequest {
                job: Some(pb::ArtifactJob {
                    job: Some(pb::artifact_job::Job::JobId(self.job_id.clone())),
                }),
                artifact_name: "SourceOutput".to_owned(),
            })
            .await?
            .into_inner();
        let mut received = 0;
        while let Some(message) = stream.message().await? {
            if let Some(pb::download_input_artifact_response::Response::Chunk(chunk)) =
                message.response
            {
                received += chunk.len();
            }
        }
        Ok(received)
    }

    /// Uploads `size` bytes as the output through the gateway.
    async fn upload_through(&mut self, size: usize) -> anyhow::Result<()> {
        let header = pb::UploadOutputArtifactRequest {
            request: Some(pb::upload_output_artifact_request::Request::Header(
                pb::UploadOutputArtifactHeader {
                    job: Some(pb::ArtifactJob {
                        job: Some(pb::artifact_job::Job::JobId(self.job_id.clone())),
                    }),
                    artifact_name: "BuildOutput".to_owned(),
                    content_type: String::new(),
                    size_bytes: Some(size as i64),
                },
            )),
        };
        let chunk = bytes::Bytes::from(vec![9u8; MIB]);
        let chunks = (0..size / MIB).map(move |_| pb::UploadOutputArtifactRequest {
            request: Some(pb::upload_output_artifact_request::Request::Chunk(
                chunk.clone(),
            )),
        });
        self.artifacts
            .upload_output_artifact(tokio_stream::iter(std::iter::once(header).chain(chunks)))
            .await?;
        Ok(())
    }

    /// Downloads the input with the SDK directly: the bytes received.
    async fn download_direct(&self) -> anyhow::Result<usize> {
        let mut body = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key("bench/SourceOutput.zip")
            .send()
            .await?
            .body;
        let mut received = 0;
        while let Some(bytes) = body.next().await {
            received += bytes?.len();
        }
        Ok(received)
    }

    /// Uploads `size` bytes with the SDK directly, in parts of the gateway's size.
    async fn upload_direct(&self, size: usize) -> anyhow::Result<()> {
        let key = "bench/BuildOutput.zip";
        let created = self
            .s3
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .send()
            .await?;
        let upload_id = created.upload_id.unwrap_or_default();
        let part = bytes::Bytes::from(vec![9u8; PART]);
        let mut parts = Vec::new();
        let mut sent = 0;
        while sent < size {
            let length = PART.min(size - sent);
            let number = parts.len() as i32 + 1;
            let uploaded = self
                .s3
                .upload_part()
                .bucket(BUCKET)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(part.slice(..length)))
                .send()
                .await?;
            parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag)
                    .build(),
            );
            sent += length;
        }
        self.s3
            .complete_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await?;
        Ok(())
    }
}

fn mib_per_second(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

pub(super) async fn artifacts(
    args: &Args,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let store_addr = free_port()?;
    let store_listen = store_addr.to_string();
    let emulator = Proc::start(
        &args.gateway,
        &[
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--s3-listen",
            &store_listen,
            "--demo-jobs",
            "0",
            "--access-key-id",
            ACCESS_KEY_ID,
            "--secret-access-key",
            SECRET_ACCESS_KEY,
        ],
        &[],
        "emulator listening on ",
    )?;
    let endpoint = format!("http://{}", emulator.addr);
    let store = format!("http://{store_addr}");
    let gateway = sdk_gateway(
        &args.gateway,
        &endpoint,
        &[
            ("CPGW_S3_ENDPOINT_URL", &store),
            ("CPGW_ARTIFACT_PART_SIZE", "8MiB"),
        ],
    )?;

    let mut admin = EmulatorAdminServiceClient::new(channel(emulator.addr).await?);
    let action_type = pb::ActionTypeId {
        category: pb::ActionCategory::Build.into(),
        owner: pb::ActionOwner::Custom.into(),
        provider: "BenchBuilder".to_owned(),
        version: "1".to_owned(),
    };
    admin
        .register_action_type(admin_pb::RegisterActionTypeRequest {
            action_type_id: Some(action_type.clone()),
        })
        .await?;
    let job_id = admin
        .create_job(admin_pb::CreateJobRequest {
            action_type_id: Some(action_type.clone()),
            input_artifacts: vec![artifact("SourceOutput")],
            output_artifacts: vec![artifact("BuildOutput")],
            ..Default::default()
        })
        .await?
        .into_inner()
        .job_id;
    let mut workers = JobWorkerServiceClient::new(channel(gateway.addr).await?);
    let job = workers
        .poll_for_jobs(pb::PollForJobsRequest {
            action_type_id: Some(action_type),
            max_batch_size: Some(1),
            query_param: Default::default(),
        })
        .await?
        .into_inner()
        .jobs
        .pop()
        .context("the bench job is handed out")?;
    workers
        .acknowledge_job(pb::AcknowledgeJobRequest {
            job_id: job.id.clone(),
            nonce: job.nonce.clone(),
        })
        .await?;
    let credentials = job
        .data
        .and_then(|data| data.artifact_credentials)
        .context("the job has artifact credentials")?;
    let s3_config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&store)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            Some(credentials.session_token),
            None,
            "bench",
        ))
        .build();
    let mut bench = Bench {
        admin,
        artifacts: ArtifactServiceClient::new(channel(gateway.addr).await?),
        s3: aws_sdk_s3::Client::from_conf(s3_config),
        job_id,
    };

    let size = sizes.artifact_bytes;
    bench.attach(size).await?;
    let mut best = [[0f64; 2]; 2];
    for round in 0..sizes.rounds * 2 {
        // Alternate which goes first, so a noisy moment falls on both.
        for through in if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            let started = Instant::now();
            let received = if through {
                bench.download_through().await?
            } else {
                bench.download_direct().await?
            };
            anyhow::ensure!(
                received == size,
                "a download came short: {received} of {size}"
            );
            let rate = mib_per_second(size, started.elapsed());
            best[0][usize::from(through)] = best[0][usize::from(through)].max(rate);
            let started = Instant::now();
            if through {
                bench.upload_through(size).await?;
            } else {
                bench.upload_direct(size).await?;
            }
            let rate = mib_per_second(size, started.elapsed());
            best[1][usize::from(through)] = best[1][usize::from(through)].max(rate);
        }
    }
    for (what, [direct, through]) in [("download", best[0]), ("upload", best[1])] {
        let ratio = through / direct;
        rows.push(row(
            &format!(
                "Artifact {what} of {} MiB (best of rounds): through the gateway",
                size / MIB
            ),
            format!("{through:.0} MiB/s"),
            format!("{direct:.0} MiB/s (aws-sdk-s3 to the same store directly)"),
            format!(
                "{ratio:.2}x direct: {}",
                super::meets(ratio >= 0.8, ">= 0.8x")
            ),
        ));
    }

    // Memory: the gateway's RSS while 1 GiB streams down, then up.
    let large = sizes.artifact_rss_bytes;
    bench.attach(large).await?;
    let before = gateway.rss_mib();
    let sampler_pid = gateway.child.id();
    let peak = std::sync::Arc::new(std::sync::Mutex::new(before));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let rss = super::rss_of(sampler_pid);
                {
                    let mut peak = peak.lock().unwrap();
                    *peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let received = bench.download_through().await?;
    anyhow::ensure!(received == large, "the large download came short");
    bench.upload_through(large).await?;
    sampling.abort();
    let growth = *peak.lock().unwrap() - before;
    rows.push(row(
        &format!(
            "Gateway RSS while streaming {} MiB down then up",
            large / MIB
        ),
        format!("peak +{growth:.1} MiB"),
        format!("{before:.1} MiB before"),
        super::meets(growth <= 32.0, "<= +32 MiB"),
    ));
    Ok(())
}
