//! The real binary as a process: graceful shutdown on SIGTERM under load, no secret in the most
//! verbose logs, and the rule that it forwards to AWS only for callers it authenticates.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::support::start_binary;
use codepipeline_gateway::pb::{
    emulator::{CreateJobRequest, emulator_admin_service_client::EmulatorAdminServiceClient},
    jobworker::{self as pb, job_worker_service_client::JobWorkerServiceClient},
};
use sha2::Digest;
use tonic::{Request, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The gateway binary, running; killed if a test fails before it ends.
struct Gateway {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

impl Gateway {
    /// Starts `serve --upstream emulator` with `args` and waits for its address.
    fn start(args: &[&str], stderr: Stdio) -> Self {
        let mut all = vec![
            "serve",
            "--upstream",
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--demo-jobs",
            "0",
        ];
        all.extend(args);
        Self::started(start_binary(&all, stderr, "grpc listening on "))
    }

    /// Starts `serve --upstream aws` against the emulator front at `endpoint`, with `args`.
    fn start_on_aws(endpoint: &str, args: &[&str], stderr: Stdio) -> Self {
        let mut all = vec![
            "serve",
            "--upstream",
            "aws",
            "--aws-region",
            crate::support::REGION,
            "--aws-endpoint-url",
            endpoint,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        all.extend(args);
        Self::started(start_binary(&all, stderr, "grpc listening on "))
    }

    fn started((child, addr): (Child, String)) -> Self {
        Self {
            child,
            addr: addr.parse().unwrap(),
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, for at most `limit`.
    async fn exit_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the process did not exit in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if !token.is_empty() {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn create_job(channel: Channel, token: &str, configuration: &[(&str, &str)]) -> String {
    EmulatorAdminServiceClient::new(channel)
        .create_job(with_token(
            CreateJobRequest {
                action_type_id: Some(crate::support::demo_action_type()),
                configuration: configuration
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .job_id
}

async fn health(channel: Channel) -> ServingStatus {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status()
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_refuses_new_ones_and_exits_cleanly() {
    let mut gateway = Gateway::start(
        &[
            "--latency",
            "1500ms",
            "--lame-duck",
            "500ms",
            "--shutdown-timeout",
            "10s",
        ],
        Stdio::null(),
    );
    let channel = gateway.channel().await;
    let mut in_flight = Vec::new();
    for _ in 0..8 {
        let job_id = create_job(channel.clone(), "", &[]).await;
        let mut client = JobWorkerServiceClient::new(channel.clone());
        in_flight.push(tokio::spawn(async move {
            client
                .get_job_details(pb::GetJobDetailsRequest { job_id })
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.terminate();

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        health(channel.clone()).await,
        ServingStatus::NotServing,
        "health flips first"
    );

    tokio::time::sleep(Duration::from_millis(700)).await;
    let new_connection = Channel::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await;
    assert!(
        new_connection.is_err(),
        "after the lame-duck period the listener is closed"
    );

    for call in in_flight {
        let details = call.await.unwrap().expect("every in-flight call succeeded");
        assert!(details.into_inner().job_details.is_some());
    }
    assert!(gateway.exit_status(Duration::from_secs(10)).await.success());
}

/// A supervisor may stop the process the moment it says it listens; that must already be a
/// graceful exit, not death by the signal's default action. A few rounds, because the window
/// this guards against is short.
#[tokio::test]
async fn sigterm_as_soon_as_the_address_is_printed_is_a_clean_exit() {
    for _ in 0..20 {
        let mut gateway = Gateway::start(&["--lame-duck", "0s"], Stdio::null());
        gateway.terminate();
        let status = gateway.exit_status(Duration::from_secs(10)).await;
        assert!(status.success(), "exited with {status}");
    }
}

#[tokio::test]
async fn the_most_verbose_logs_of_a_whole_job_lifecycle_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let token = "bearer-token-6b1d0c4e9f";
    let wrong_token = "wrong-token-3f9a77e2c1";
    let token_file = dir.path().join("tokens.toml");
    std::fs::write(
        &token_file,
        format!(
            "[[clients]]\nid = \"workers\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n",
            hex::encode(sha2::Sha256::digest(token.as_bytes()))
        ),
    )
    .unwrap();
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut gateway = Gateway::start(
        &[
            "--log",
            "trace",
            "--log-format",
            "json",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        Stdio::from(log),
    );
    let channel = gateway.channel().await;
    let secret_value = "config-secret-8d2e61a0";
    let job_id = create_job(channel.clone(), token, &[("DeployPassword", secret_value)]).await;
    let mut client = JobWorkerServiceClient::new(channel.clone());

    let job = client
        .poll_for_jobs(with_token(
            pb::PollForJobsRequest {
                action_type_id: Some(crate::support::demo_action_type()),
                max_batch_size: Some(1),
                query_param: Default::default(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs
        .remove(0);
    assert_eq!(job.id, job_id);
    let mut secrets = vec![
        token.to_owned(),
        wrong_token.to_owned(),
        secret_value.to_owned(),
        job.nonce.clone(),
    ];
    let credentials = job.data.unwrap().artifact_credentials.unwrap();
    secrets.extend([
        credentials.access_key_id,
        credentials.secret_access_key,
        credentials.session_token,
    ]);

    let mut acknowledge = with_token(
        pb::AcknowledgeJobRequest {
            job_id: job_id.clone(),
            nonce: job.nonce.clone(),
        },
        token,
    );
    acknowledge
        .metadata_mut()
        .insert("x-request-id", "ack-request-7".parse().unwrap());
    client.acknowledge_job(acknowledge).await.unwrap();
    let details = client
        .get_job_details(with_token(
            pb::GetJobDetailsRequest {
                job_id: job_id.clone(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    let refreshed = details
        .job_details
        .unwrap()
        .data
        .unwrap()
        .artifact_credentials
        .unwrap();
    secrets.extend([
        refreshed.access_key_id,
        refreshed.secret_access_key,
        refreshed.session_token,
    ]);
    client
        .put_job_success_result(with_token(
            pb::PutJobSuccessResultRequest {
                job_id: job_id.clone(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap();
    let refused = client
        .get_job_details(with_token(
            pb::GetJobDetailsRequest {
                job_id: job_id.clone(),
            },
            wrong_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    gateway.terminate();
    assert!(gateway.exit_status(Duration::from_secs(10)).await.success());
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains(r#""level":"TRACE""#),
        "the logs are at the most verbose level"
    );
    assert!(logs.contains("call finished"), "calls were logged");
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the log: {secret}"
        );
    }
    // The audit trail: one event per state-changing call, on its own target, none for reads.
    let audited: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["target"] == "audit")
        .map(|event| event["fields"].clone())
        .collect();
    let methods: Vec<&str> = audited
        .iter()
        .map(|fields| fields["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["CreateJob", "AcknowledgeJob", "PutJobSuccessResult"],
        "the admin call and the job's two state changes: {audited:?}"
    );
    for fields in &audited {
        assert_eq!(fields["client_id"], "workers");
        assert_eq!(fields["outcome"], "OK");
    }
    for fields in &audited[1..] {
        assert_eq!(fields["job_id"], job_id.as_str());
        assert_eq!(fields["action_type"], "Build/Custom/DemoBuilder/1");
    }
    assert_eq!(
        audited[1]["request_id"], "ack-request-7",
        "the caller's x-request-id"
    );
    assert!(
        audited[2]["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "a request id the gateway made: {:?}",
        audited[2]
    );
}

/// `serve --upstream aws` with `flags`, run until it exits or has started: its exit status if it
/// exited (`None` if it is serving) and what it wrote on stderr.
fn serve_aws(flags: &[&str]) -> (Option<std::process::ExitStatus>, String) {
    use std::io::Read;
    let mut child = crate::support::binary()
        .args(["serve", "--upstream", "aws", "--aws-region", "us-east-1"])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let started = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("grpc listening on "));
    let status = if started {
        let _ = child.kill();
        let _ = child.wait();
        None
    } else {
        Some(child.wait().unwrap())
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[tokio::test]
async fn logs_written_to_a_pipe_or_a_file_carry_no_colour_codes() {
    use std::io::Read;
    let mut gateway = Gateway::start(&[], Stdio::piped());
    // A clean exit after SIGTERM: every line logged is in the pipe when the process is gone.
    gateway.terminate();
    assert!(gateway.exit_status(Duration::from_secs(30)).await.success());
    let mut stderr = String::new();
    gateway
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no ANSI escape: {stderr:?}");
}

#[tokio::test]
async fn serving_aws_without_authenticating_callers_is_refused_at_start_unless_allowed() {
    let (status, stderr) = serve_aws(&[]);
    let status = status.expect("it does not start");
    assert!(!status.success(), "exited with {status}");
    assert!(
        stderr.contains("refusing to forward to AWS without authenticating callers")
            && stderr.contains("--allow-unauthenticated"),
        "says why and what to do: {stderr}"
    );

    let (status, stderr) = serve_aws(&["--allow-unauthenticated"]);
    assert_eq!(
        status, None,
        "an explicit --allow-unauthenticated serves: {stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "").unwrap();
    let (status, stderr) = serve_aws(&["--token-file", tokens.to_str().unwrap()]);
    assert_eq!(
        status, None,
        "a token file is authentication enough: {stderr}"
    );
}

/// Upstream of the gateway under a trace-level log test: the emulator in its process, or the
/// real SDK talking HTTP to the emulator front in another.
#[derive(Debug, Clone, Copy)]
enum TraceUpstream {
    InProcess,
    RealSdk,
}

#[rstest::rstest]
#[case::in_process(TraceUpstream::InProcess)]
#[case::real_sdk(TraceUpstream::RealSdk)]
#[tokio::test]
async fn the_most_verbose_logs_of_third_party_calls_and_artifact_transfers_hold_no_secret(
    #[case] upstream: TraceUpstream,
) {
    use codepipeline_gateway::pb::jobworker::third_party_job_worker_service_client::ThirdPartyJobWorkerServiceClient;

    const CLIENT: &str = "0e1d2c3b-4a59-4687-9a8b-7c6d5e4f3a21";
    let held_token = "token-held-by-the-gateway-41c7e9";
    let own_token = "token-sent-by-the-worker-9d02b3";
    let wrong_token = "token-of-nobody-5a6e11";
    let secret_value = "partner-config-secret-0c7d52";
    let dir = tempfile::tempdir().unwrap();
    let client_tokens = dir.path().join("client-tokens.toml");
    std::fs::write(
        &client_tokens,
        format!("[[clients]]\nclient_id = \"{CLIENT}\"\nclient_token = \"{held_token}\"\n"),
    )
    .unwrap();
    let gateway_log = dir.path().join("gateway.log");
    let emulator_log = dir.path().join("emulator.log");
    let verbose = [
        "--log",
        "trace",
        "--log-format",
        "json",
        "--client-token-file",
        client_tokens.to_str().unwrap(),
    ];
    let (mut gateway, admin, _emulator) = match upstream {
        TraceUpstream::InProcess => {
            let gateway = Gateway::start(
                &verbose,
                Stdio::from(std::fs::File::create(&gateway_log).unwrap()),
            );
            let admin = gateway.channel().await;
            (gateway, admin, None)
        }
        TraceUpstream::RealSdk => {
            let store = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .to_string();
            let (child, endpoint) = start_binary(
                &[
                    "emulator",
                    "--listen",
                    "127.0.0.1:0",
                    "--s3-listen",
                    &store,
                    "--demo-jobs",
                    "0",
                    "--access-key-id",
                    crate::support::ACCESS_KEY_ID,
                    "--secret-access-key",
                    crate::support::SECRET_ACCESS_KEY,
                    "--region",
                    crate::support::REGION,
                    "--log",
                    "trace",
                ],
                Stdio::from(std::fs::File::create(&emulator_log).unwrap()),
                "emulator listening on ",
            );
            let emulator = Gateway {
                child,
                addr: endpoint.trim_start_matches("http://").parse().unwrap(),
            };
            let store_url = format!("http://{store}");
            let mut flags = verbose.to_vec();
            flags.extend(["--allow-unauthenticated", "--s3-endpoint-url", &store_url]);
            let gateway = Gateway::start_on_aws(
                &endpoint,
                &flags,
                Stdio::from(std::fs::File::create(&gateway_log).unwrap()),
            );
            let admin = emulator.channel().await;
            (gateway, admin, Some(emulator))
        }
    };
    let mut admin = EmulatorAdminServiceClient::new(admin);
    let mut jobs = Vec::new();
    for token in [held_token, own_token] {
        let created = admin
            .create_job(CreateJobRequest {
                action_type_id: Some(crate::support::demo_third_party_action_type()),
                client_id: if token == held_token {
                    CLIENT.to_owned()
                } else {
                    String::new()
                },
                client_token: token.to_owned(),
                configuration: [("PartnerApiKey".to_owned(), secret_value.to_owned())].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        jobs.push(created.job_id);
    }
    let mut client = ThirdPartyJobWorkerServiceClient::new(gateway.channel().await);
    let polled = client
        .poll_for_third_party_jobs(pb::PollForThirdPartyJobsRequest {
            action_type_id: Some(crate::support::demo_third_party_action_type()),
            max_batch_size: Some(2),
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(polled.len(), 2);
    let mut secrets = vec![
        held_token.to_owned(),
        own_token.to_owned(),
        wrong_token.to_owned(),
        secret_value.to_owned(),
    ];
    // One job with the token the gateway holds, one with the worker's own.
    for (job_id, client_token) in [(&jobs[0], ""), (&jobs[1], own_token)] {
        let details = client
            .get_third_party_job_details(pb::GetThirdPartyJobDetailsRequest {
                job_id: job_id.clone(),
                client_token: client_token.to_owned(),
                client_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .job_details
            .unwrap();
        let credentials = details.data.unwrap().artifact_credentials.unwrap();
        secrets.extend([
            details.nonce.clone(),
            credentials.secret_access_key,
            credentials.session_token,
        ]);
        client
            .acknowledge_third_party_job(pb::AcknowledgeThirdPartyJobRequest {
                job_id: job_id.clone(),
                nonce: details.nonce,
                client_token: client_token.to_owned(),
                client_id: String::new(),
            })
            .await
            .unwrap();
        client
            .put_third_party_job_success_result(pb::PutThirdPartyJobSuccessResultRequest {
                job_id: job_id.clone(),
                client_token: client_token.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let refused = client
        .get_third_party_job_details(pb::GetThirdPartyJobDetailsRequest {
            job_id: jobs[0].clone(),
            client_token: wrong_token.to_owned(),
            client_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // Artifacts: the gateway fetches the job's credentials itself and signs S3 requests with
    // them; none may show, nor the bytes' secrets.
    let transferred = transfer_artifacts(&mut admin, &gateway).await;
    secrets.extend(transferred);

    gateway.terminate();
    assert!(gateway.exit_status(Duration::from_secs(10)).await.success());
    let logs = std::fs::read_to_string(&gateway_log).unwrap();
    assert!(
        logs.contains(r#""level":"TRACE""#),
        "{upstream:?}: at the most verbose level"
    );
    assert!(
        logs.contains("GetThirdPartyJobDetails"),
        "{upstream:?}: the calls were logged"
    );
    // The credentials the gateway fetched for the transfers were never seen here: their
    // access key IDs (ASIA + 16) must not show either.
    let access_key = logs
        .match_indices("ASIA")
        .map(|(at, _)| &logs[at..(at + 20).min(logs.len())])
        .find(|key| key.len() == 20 && key[4..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(
        access_key.is_none(),
        "{upstream:?}: an access key ID reached the log: {access_key:?}\n{}",
        logs.lines()
            .filter(|line| access_key.is_some_and(|key| line.contains(key)))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{upstream:?}: a secret reached the gateway's log: {secret}\n{}",
            logs.lines()
                .filter(|line| line.contains(secret.as_str()))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// A custom job with artifacts, its input downloaded and its output uploaded through the
/// gateway: the secrets the test saw (the job's credentials from the poll, the bytes).
async fn transfer_artifacts(
    admin: &mut EmulatorAdminServiceClient<Channel>,
    gateway: &Gateway,
) -> Vec<String> {
    use codepipeline_gateway::pb::{
        emulator::{
            AttachInputArtifactHeader, AttachInputArtifactRequest, attach_input_artifact_request,
        },
        jobworker::artifact_service_client::ArtifactServiceClient,
    };
    let location = |name: &str| pb::Artifact {
        name: name.to_owned(),
        revision: "r1".to_owned(),
        location: Some(pb::ArtifactLocation {
            r#type: pb::ArtifactLocationType::S3.into(),
            s3_location: Some(pb::S3ArtifactLocation {
                bucket_name: "codepipeline-us-east-1-trace-artifacts".to_owned(),
                object_key: format!("trace/{name}.zip"),
            }),
        }),
    };
    let job_id = admin
        .create_job(CreateJobRequest {
            action_type_id: Some(crate::support::demo_action_type()),
            input_artifacts: vec![location("SourceOutput")],
            output_artifacts: vec![location("BuildOutput")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let input = b"input-bytes-secret-2f7a91".to_vec();
    admin
        .attach_input_artifact(tokio_stream::iter([
            AttachInputArtifactRequest {
                request: Some(attach_input_artifact_request::Request::Header(
                    AttachInputArtifactHeader {
                        job_id: job_id.clone(),
                        artifact_name: "SourceOutput".to_owned(),
                        content_type: String::new(),
                    },
                )),
            },
            AttachInputArtifactRequest {
                request: Some(attach_input_artifact_request::Request::Chunk(input.clone())),
            },
        ]))
        .await
        .unwrap();
    let channel = gateway.channel().await;
    let mut jobs = JobWorkerServiceClient::new(channel.clone());
    let job = jobs
        .poll_for_jobs(pb::PollForJobsRequest {
            action_type_id: Some(crate::support::demo_action_type()),
            max_batch_size: Some(1),
            query_param: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
        .remove(0);
    jobs.acknowledge_job(pb::AcknowledgeJobRequest {
        job_id: job_id.clone(),
        nonce: job.nonce.clone(),
    })
    .await
    .unwrap();
    let mut artifacts = ArtifactServiceClient::new(channel);
    let artifact_job = pb::ArtifactJob {
        job: Some(pb::artifact_job::Job::JobId(job_id.clone())),
    };
    let mut download = artifacts
        .download_input_artifact(pb::DownloadInputArtifactRequest {
            job: Some(artifact_job.clone()),
            artifact_name: "SourceOutput".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    while let Some(message) = download.message().await.unwrap() {
        if let Some(pb::download_input_artifact_response::Response::Chunk(chunk)) = message.response
        {
            received.extend_from_slice(&chunk);
        }
    }
    assert_eq!(received, input);
    let output = b"output-bytes-secret-8c3e05".to_vec();
    artifacts
        .upload_output_artifact(tokio_stream::iter([
            pb::UploadOutputArtifactRequest {
                request: Some(pb::upload_output_artifact_request::Request::Header(
                    pb::UploadOutputArtifactHeader {
                        job: Some(artifact_job),
                        artifact_name: "BuildOutput".to_owned(),
                        content_type: String::new(),
                        size_bytes: None,
                    },
                )),
            },
            pb::UploadOutputArtifactRequest {
                request: Some(pb::upload_output_artifact_request::Request::Chunk(
                    output.clone().into(),
                )),
            },
            pb::UploadOutputArtifactRequest {
                request: Some(pb::upload_output_artifact_request::Request::End(
                    pb::UploadOutputArtifactEnd {},
                )),
            },
        ]))
        .await
        .unwrap();
    let credentials = job.data.unwrap().artifact_credentials.unwrap();
    vec![
        credentials.secret_access_key,
        credentials.session_token,
        String::from_utf8(input).unwrap(),
        String::from_utf8(output).unwrap(),
    ]
}

#[tokio::test]
async fn token_new_prints_a_token_and_the_entry_that_lets_exactly_it_in() {
    let output = crate::support::binary()
        .args([
            "token",
            "new",
            "--client-id",
            "team-a",
            "--rpc",
            "PollForJobs",
        ])
        .args(["--action-type", "Build/Custom/DemoBuilder/*"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "nothing logged: {output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let (token, entry) = printed
        .split_once("\n\n")
        .expect("the token, then the entry");
    assert!(!entry.contains(token), "the entry holds the digest only");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("tokens.toml");
    std::fs::write(&token_file, entry).unwrap();
    let mut gateway = Gateway::start(
        &["--token-file", token_file.to_str().unwrap()],
        Stdio::null(),
    );
    let mut client = JobWorkerServiceClient::new(gateway.channel().await);
    let poll = |action_type: pb::ActionTypeId| pb::PollForJobsRequest {
        action_type_id: Some(action_type),
        max_batch_size: Some(1),
        query_param: Default::default(),
    };
    let demo = crate::support::demo_action_type();
    client
        .poll_for_jobs(with_token(poll(demo.clone()), token))
        .await
        .expect("the new token polls its action type");
    let other = client
        .poll_for_jobs(with_token(poll(demo.clone()), "cpgw_not-the-token"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::Unauthenticated);
    let not_granted = client
        .acknowledge_job(with_token(
            pb::AcknowledgeJobRequest {
                job_id: "00000000-0000-4000-8000-000000000000".to_owned(),
                nonce: "1".to_owned(),
            },
            token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        not_granted.code(),
        tonic::Code::PermissionDenied,
        "only the RPCs given"
    );
    let out_of_scope = client
        .poll_for_jobs(with_token(
            poll(pb::ActionTypeId {
                provider: "Other".to_owned(),
                ..demo
            }),
            token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        out_of_scope.code(),
        tonic::Code::PermissionDenied,
        "only its action types"
    );
    gateway.terminate();
    assert!(gateway.exit_status(Duration::from_secs(10)).await.success());

    let refused = crate::support::binary()
        .args(["token", "new", "--client-id", "x", "--rpc", "PollForJob"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("\"PollForJob\""));
}

#[tokio::test]
async fn config_check_reads_what_serve_would_and_says_what_is_wrong_without_serving() {
    let check = |args: &[&str]| {
        let output = crate::support::binary()
            .args(["config", "check"])
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
        )
    };
    let front = crate::support::emulator_front(&[]).await;
    let endpoint = format!("http://{}", front.addr());
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("tokens.toml");
    std::fs::write(
        &good,
        "[[clients]]\nid = \"ops\"\ntoken_sha256 = \"".to_owned()
            + &"ab".repeat(32)
            + "\"\nallowed_rpcs = [\"*\"]\n",
    )
    .unwrap();
    let aws = ["--upstream", "aws", "--aws-region", "us-east-1"];
    let (ok, said) = check(
        &[
            &aws[..],
            &[
                "--aws-endpoint-url",
                &endpoint,
                "--token-file",
                good.to_str().unwrap(),
                "--reach",
            ],
        ]
        .concat(),
    );
    assert!(ok, "{said}");
    assert!(said.contains("ok    token file: 1 clients"), "{said}");
    assert!(said.contains("ok    CodePipeline endpoint"), "{said}");

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "clients = [\n").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (ok, said) = check(
        &[
            &aws[..],
            &[
                "--aws-endpoint-url",
                &format!("http://{closed}"),
                "--token-file",
                broken.to_str().unwrap(),
                "--reach",
            ],
        ]
        .concat(),
    );
    assert!(!ok, "{said}");
    assert!(said.contains("FAIL  token file"), "{said}");
    assert!(said.contains("FAIL  CodePipeline endpoint"), "{said}");

    let (ok, said) = check(&aws);
    assert!(
        !ok && said.contains("FAIL  flags: refusing to forward to AWS"),
        "{said}"
    );
    front.shutdown().await.unwrap();
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_command_line() {
    let run = |args: &[&str]| {
        let output = crate::support::binary().args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    for word in ["serve", "emulator", "token", "--upstream", "--token-file"] {
        assert!(bash.contains(word), "bash completions name {word}");
    }
    assert!(run(&["completions", "zsh"]).contains("#compdef codepipeline-gateway"));
    let man = run(&["man"]);
    assert!(man.contains(".TH codepipeline-gateway 1"), "{man}");
    assert!(man.contains("serve") && man.contains("config"), "{man}");
}
