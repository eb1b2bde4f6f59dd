//! Tenant separation: two teams, two tokens, two action types. Each team works its own jobs and
//! gets PERMISSION_DENIED (`ACTION_TYPE_NOT_ALLOWED`) for every call on the other's, the same
//! answer for a job that does not exist, with no upstream call and no change to the job; a
//! partner's client token goes only to a client scoped to it; a client marked
//! `artifact_credentials = false` never sees them; a scope reload takes effect at once.

use std::{collections::HashMap, path::Path, time::Duration};

use codepipeline_gateway::pb::{emulator as admin_pb, jobworker as pb};
use rstest::rstest;
use rstest_reuse::apply;
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::support::{
    Backend, TestGateway, demo_action_type, demo_third_party_action_type, every_backend, gateway,
    in_process_and_real_sdk,
};

const TEAM_A: &str = "team-a-token";
const TEAM_B: &str = "team-b-token";
const OPERATOR: &str = "operator-token";
const PARTNER_A: &str = "5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10";
const PARTNER_B: &str = "0e1d2c3b-4a59-4687-9a8b-7c6d5e4f3a21";
const NO_SUCH_JOB: &str = "99999999-8888-4777-8666-555555555555";

/// Team B's action type: Build / Custom / OtherBuilder / 1.
fn other_action_type() -> pb::ActionTypeId {
    pb::ActionTypeId {
        provider: "OtherBuilder".to_owned(),
        ..demo_action_type()
    }
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token file: team A works the demo action types (custom, and third-party for partner A),
/// team B works OtherBuilder, the operator everything.
fn token_file(team_b_action_types: &str, team_a_extra: &str) -> String {
    format!(
        "[[clients]]\nid = \"team-a\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n\
         action_types = [\"Build/Custom/DemoBuilder/1\", \"Build/ThirdParty/Demo*/*\"]\n\
         partner_client_ids = [\"{PARTNER_A}\"]\n{team_a_extra}\n\
         [[clients]]\nid = \"team-b\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n\
         action_types = {team_b_action_types}\n\
         [[clients]]\nid = \"operator\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n",
        digest(TEAM_A),
        digest(TEAM_B),
        digest(OPERATOR)
    )
}

fn write_atomically(path: &Path, text: &str) {
    let staging = path.with_extension("new");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn assert_not_in_scope(result: Result<impl std::fmt::Debug, Status>, reason: &str, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, reason, "{what}");
    assert_eq!(
        info.metadata.get("client_id").map(String::as_str),
        Some("team-b")
    );
}

struct Tenants {
    gw: TestGateway,
    dir: tempfile::TempDir,
}

async fn tenants(backend: Backend, team_a_extra: &str) -> Tenants {
    tenants_with(backend, team_a_extra, &[]).await
}

async fn tenants_with(backend: Backend, team_a_extra: &str, flags: &[&str]) -> Tenants {
    tenants_on(backend, team_a_extra, flags, &[]).await
}

async fn tenants_on(
    backend: Backend,
    team_a_extra: &str,
    flags: &[&str],
    engine: &[&str],
) -> Tenants {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    write_atomically(
        &tokens,
        &token_file(r#"["Build/Custom/OtherBuilder/*"]"#, team_a_extra),
    );
    let client_tokens = dir.path().join("client-tokens.toml");
    write_atomically(
        &client_tokens,
        &format!(
            "[[clients]]\nclient_id = \"{PARTNER_A}\"\nclient_token = \"partner-a-secret\"\n\
             [[clients]]\nclient_id = \"{PARTNER_B}\"\nclient_token = \"partner-b-secret\"\n"
        ),
    );
    let mut all_flags = vec![
        "--token-file",
        tokens.to_str().unwrap(),
        "--token-file-poll-interval",
        "100ms",
        "--client-token-file",
        client_tokens.to_str().unwrap(),
    ];
    all_flags.extend_from_slice(flags);
    let mut gw = gateway(backend)
        .flags(&all_flags)
        .engine(engine)
        .spawn()
        .await;
    gw.admin
        .register_action_type(authed(
            admin_pb::RegisterActionTypeRequest {
                action_type_id: Some(other_action_type()),
            },
            OPERATOR,
        ))
        .await
        .expect("RegisterActionType");
    Tenants { gw, dir }
}

impl Tenants {
    async fn create_job(&mut self, action_type: pb::ActionTypeId) -> String {
        self.gw
            .admin
            .create_job(authed(
                admin_pb::CreateJobRequest {
                    action_type_id: Some(action_type),
                    configuration: [("Secret".to_owned(), "team-a-only".to_owned())].into(),
                    ..Default::default()
                },
                OPERATOR,
            ))
            .await
            .expect("CreateJob")
            .into_inner()
            .job_id
    }

    async fn create_third_party_job(&mut self, client_id: &str, client_token: &str) -> String {
        self.gw
            .admin
            .create_job(authed(
                admin_pb::CreateJobRequest {
                    action_type_id: Some(demo_third_party_action_type()),
                    client_id: client_id.to_owned(),
                    client_token: client_token.to_owned(),
                    ..Default::default()
                },
                OPERATOR,
            ))
            .await
            .expect("CreateJob")
            .into_inner()
            .job_id
    }

    async fn poll(
        &mut self,
        token: &str,
        action_type: pb::ActionTypeId,
    ) -> Result<Vec<pb::Job>, Status> {
        self.gw
            .client
            .poll_for_jobs(authed(
                pb::PollForJobsRequest {
                    action_type_id: Some(action_type),
                    max_batch_size: Some(10),
                    query_param: HashMap::new(),
                },
                token,
            ))
            .await
            .map(|response| response.into_inner().jobs)
    }

    async fn call_counts(&mut self) -> HashMap<String, u64> {
        self.gw
            .admin
            .get_call_counts(authed(admin_pb::GetCallCountsRequest {}, OPERATOR))
            .await
            .expect("GetCallCounts")
            .into_inner()
            .calls
    }

    async fn job_state(&mut self, job_id: &str) -> admin_pb::JobState {
        self.gw
            .admin
            .get_job(authed(
                admin_pb::GetJobRequest {
                    job_id: job_id.to_owned(),
                },
                OPERATOR,
            ))
            .await
            .expect("GetJob")
            .into_inner()
            .job
            .expect("a job state")
    }

    /// Every job-scoped call of the custom job API and the artifact API, by `token`, on `job_id`.
    async fn every_job_call(
        &mut self,
        token: &str,
        job_id: &str,
        nonce: &str,
    ) -> Vec<(&'static str, Result<(), Status>)> {
        let client = &mut self.gw.client;
        let artifacts = &mut self.gw.artifacts;
        let job = || pb::ArtifactJob {
            job: Some(pb::artifact_job::Job::JobId(job_id.to_owned())),
        };
        let mut results = vec![
            (
                "AcknowledgeJob",
                client
                    .acknowledge_job(authed(
                        pb::AcknowledgeJobRequest {
                            job_id: job_id.to_owned(),
                            nonce: nonce.to_owned(),
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "GetJobDetails",
                client
                    .get_job_details(authed(
                        pb::GetJobDetailsRequest {
                            job_id: job_id.to_owned(),
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "PutJobSuccessResult",
                client
                    .put_job_success_result(authed(
                        pb::PutJobSuccessResultRequest {
                            job_id: job_id.to_owned(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "PutJobFailureResult",
                client
                    .put_job_failure_result(authed(
                        pb::PutJobFailureResultRequest {
                            job_id: job_id.to_owned(),
                            failure_details: Some(pb::FailureDetails {
                                r#type: pb::FailureType::JobFailed.into(),
                                message: "not yours".to_owned(),
                                external_execution_id: None,
                            }),
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "DownloadInputArtifact",
                artifacts
                    .download_input_artifact(authed(
                        pb::DownloadInputArtifactRequest {
                            job: Some(job()),
                            artifact_name: "source".to_owned(),
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            ),
        ];
        let header = pb::UploadOutputArtifactRequest {
            request: Some(pb::upload_output_artifact_request::Request::Header(
                pb::UploadOutputArtifactHeader {
                    job: Some(job()),
                    artifact_name: "output".to_owned(),
                    content_type: String::new(),
                    size_bytes: Some(3),
                },
            )),
        };
        let chunk = pb::UploadOutputArtifactRequest {
            request: Some(pb::upload_output_artifact_request::Request::Chunk(
                b"bad".to_vec().into(),
            )),
        };
        results.push((
            "UploadOutputArtifact",
            artifacts
                .upload_output_artifact(authed(tokio_stream::iter([header, chunk]), token))
                .await
                .map(drop),
        ));
        results
    }
}

/// Team B, with a valid token allowed every RPC, reaches for team A's job in every way the job
/// API and the artifact API allow: each is refused alike, the job stays as it was, and
/// CodePipeline hears of none of it. A job id that exists nowhere gets the same answer.
#[apply(every_backend)]
#[tokio::test]
async fn a_team_is_refused_every_call_on_another_teams_jobs_and_the_upstream_never_hears_of_them(
    #[case] backend: Backend,
) {
    let mut t = tenants(backend, "").await;
    let job_id = t.create_job(demo_action_type()).await;
    assert_not_in_scope(
        t.poll(TEAM_B, demo_action_type()).await,
        "ACTION_TYPE_NOT_ALLOWED",
        "team B polls team A's action type",
    );
    let jobs = t
        .poll(TEAM_A, demo_action_type())
        .await
        .expect("team A polls");
    let job = jobs
        .iter()
        .find(|job| job.id == job_id)
        .expect("team A gets its job");
    let nonce = job.nonce.clone();

    let before = t.call_counts().await;
    for (what, result) in t.every_job_call(TEAM_B, &job_id, &nonce).await {
        assert_not_in_scope(result, "ACTION_TYPE_NOT_ALLOWED", what);
    }
    assert_eq!(
        t.call_counts().await,
        before,
        "no upstream call for a job the gateway saw"
    );
    let state = t.job_state(&job_id).await;
    assert_eq!(
        state.status(),
        pb::JobStatus::Dispatched,
        "the job is as it was"
    );
    assert_eq!((state.acknowledge_count, state.result_count), (0, 0));

    // A job id nobody has: the same answer (the lookup finds nothing), so ids cannot be probed.
    for (what, result) in t.every_job_call(TEAM_B, NO_SUCH_JOB, &nonce).await {
        assert_not_in_scope(result, "ACTION_TYPE_NOT_ALLOWED", what);
    }

    // Team A, whose job it is, works it as before.
    let status =
        t.gw.client
            .acknowledge_job(authed(
                pb::AcknowledgeJobRequest {
                    job_id: job_id.clone(),
                    nonce,
                },
                TEAM_A,
            ))
            .await
            .expect("team A acknowledges its job")
            .into_inner();
    assert_eq!(status.status(), pb::JobStatus::InProgress);
    t.gw.client
        .put_job_success_result(authed(
            pb::PutJobSuccessResultRequest {
                job_id: job_id.clone(),
                ..Default::default()
            },
            TEAM_A,
        ))
        .await
        .expect("team A reports success");
    assert_eq!(
        t.job_state(&job_id).await.status(),
        pb::JobStatus::Succeeded
    );
    let metrics = crate::support::scrape_metrics(t.gw.metrics_addr()).await;
    assert!(
        metrics.contains("gateway_auth_rejected_total{reason=\"action_type_not_allowed\"} 13"),
        "every refusal is counted by reason:\n{metrics}"
    );
    t.gw.stop().await;
}

/// A job this gateway never handed out (another replica polled it) is looked up once with the
/// gateway's own GetJobDetails: the other team is refused, the owner is let through.
#[apply(in_process_and_real_sdk)]
#[tokio::test]
async fn a_job_the_gateway_never_saw_is_looked_up_and_refused_to_the_other_team(
    #[case] backend: Backend,
) {
    let mut t = tenants(backend, "").await;
    let job_id = t.create_job(demo_action_type()).await;
    let client = t.gw.client.clone();
    let details = |token| {
        let mut client = client.clone();
        let job_id = job_id.clone();
        async move {
            client
                .get_job_details(authed(pb::GetJobDetailsRequest { job_id }, token))
                .await
                .map(|response| response.into_inner())
        }
    };
    assert_not_in_scope(
        details(TEAM_B).await,
        "ACTION_TYPE_NOT_ALLOWED",
        "unseen job",
    );
    let owned = details(TEAM_A).await.expect("team A reads its job");
    assert_eq!(owned.job_details.unwrap().id, job_id);
    let before = t.call_counts().await;
    assert_not_in_scope(details(TEAM_B).await, "ACTION_TYPE_NOT_ALLOWED", "seen now");
    assert_eq!(
        t.call_counts().await,
        before,
        "looked up once, then remembered"
    );
    t.gw.stop().await;
}

/// A StreamJobs subscription outside the client's scope is refused before it joins a feed; a
/// reload that narrows the scope ends a stream already open; one that widens it lets the
/// client in, without a restart.
#[tokio::test]
async fn job_streams_are_scoped_and_a_scope_reload_takes_effect_without_a_restart() {
    let mut t = tenants(Backend::InProcess, "").await;
    let subscribe = |action_type: pb::ActionTypeId, token: &'static str| {
        let mut client = t.gw.client.clone();
        async move {
            let (requests, outgoing) = tokio::sync::mpsc::channel(4);
            requests
                .send(pb::StreamJobsRequest {
                    request: Some(pb::stream_jobs_request::Request::Subscription(
                        pb::StreamJobsSubscription {
                            action_type_id: Some(action_type),
                            query_param: HashMap::new(),
                            max_outstanding_jobs: 1,
                        },
                    )),
                })
                .await
                .unwrap();
            let opened = client
                .stream_jobs(authed(
                    tokio_stream::wrappers::ReceiverStream::new(outgoing),
                    token,
                ))
                .await
                .map(|response| response.into_inner());
            (requests, opened)
        }
    };
    let (_kept, refused) = subscribe(demo_action_type(), TEAM_B).await;
    assert_not_in_scope(
        refused,
        "ACTION_TYPE_NOT_ALLOWED",
        "team B subscribes to team A's",
    );
    let (_kept_b, open_b) = subscribe(other_action_type(), TEAM_B).await;
    let mut open_b = open_b.expect("team B subscribes to its own");

    // Team B is given DemoBuilder and loses OtherBuilder.
    let tokens = t.dir.path().join("tokens.toml");
    write_atomically(
        &tokens,
        &token_file(r#"["Build/Custom/DemoBuilder/*"]"#, ""),
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match open_b.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the narrowed stream ends");
    assert_not_in_scope(
        Err::<(), _>(ended),
        "ACTION_TYPE_NOT_ALLOWED",
        "the stream outside the new scope",
    );
    let widened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if t.poll(TEAM_B, demo_action_type()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        widened.is_ok(),
        "the widened scope lets team B poll DemoBuilder"
    );
    t.gw.stop().await;
}

/// The client-token vault hands a partner's token only to a client scoped to that partner; the
/// third-party poll is scoped by action type like the custom one.
#[apply(in_process_and_real_sdk)]
#[tokio::test]
async fn a_partner_token_goes_only_to_a_client_scoped_to_that_partner(#[case] backend: Backend) {
    let mut t = tenants(backend, "").await;
    let mine = t
        .create_third_party_job(PARTNER_A, "partner-a-secret")
        .await;
    let theirs = t
        .create_third_party_job(PARTNER_B, "partner-b-secret")
        .await;
    let third_party = t.gw.third_party.clone();
    let details = |job_id: String, client_id: &str, token: &'static str| {
        let mut client = third_party.clone();
        let client_id = client_id.to_owned();
        async move {
            client
                .get_third_party_job_details(authed(
                    pb::GetThirdPartyJobDetailsRequest {
                        job_id,
                        client_token: String::new(),
                        client_id,
                    },
                    token,
                ))
                .await
                .map(drop)
        }
    };
    let before = t.call_counts().await;
    details(mine.clone(), PARTNER_A, TEAM_A)
        .await
        .expect("team A acts for partner A with the gateway's token");
    let reads = |counts: &HashMap<String, u64>| {
        counts
            .get("GetThirdPartyJobDetails")
            .copied()
            .unwrap_or_default()
    };
    assert_eq!(
        reads(&t.call_counts().await) - reads(&before),
        1,
        "the details of a job the gateway never saw are their own lookup: one read"
    );
    let refused = details(theirs.clone(), PARTNER_B, TEAM_A)
        .await
        .expect_err("team A naming partner B");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let info = refused.get_details_error_info().unwrap();
    assert_eq!(info.reason, "PARTNER_NOT_ALLOWED");
    assert_eq!(info.metadata["partner_client_id"], PARTNER_B);
    let poll =
        t.gw.third_party
            .poll_for_third_party_jobs(authed(
                pb::PollForThirdPartyJobsRequest {
                    action_type_id: Some(demo_third_party_action_type()),
                    max_batch_size: Some(1),
                },
                TEAM_B,
            ))
            .await;
    assert_not_in_scope(
        poll,
        "ACTION_TYPE_NOT_ALLOWED",
        "team B polls third-party jobs",
    );

    // Team A's job, once this gateway polled it, and a job id nobody has: to team B, naming no
    // client and no token (so the vault would have to answer), the same refusal.
    let polled =
        t.gw.third_party
            .poll_for_third_party_jobs(authed(
                pb::PollForThirdPartyJobsRequest {
                    action_type_id: Some(demo_third_party_action_type()),
                    max_batch_size: Some(10),
                },
                TEAM_A,
            ))
            .await
            .expect("team A polls its third-party jobs")
            .into_inner()
            .jobs;
    assert!(polled.iter().any(|job| job.job_id == mine));
    for job_id in [mine, NO_SUCH_JOB.to_owned()] {
        assert_not_in_scope(
            details(job_id, "", TEAM_B).await,
            "ACTION_TYPE_NOT_ALLOWED",
            "team B on a third-party job, naming no client",
        );
    }
    t.gw.stop().await;
}

/// A client marked `artifact_credentials = false` gets its jobs without them, on the poll, the
/// details and the third-party details, while an unscoped client keeps them.
#[apply(in_process_and_real_sdk)]
#[tokio::test]
async fn a_client_without_artifact_credentials_never_sees_them(#[case] backend: Backend) {
    let mut t = tenants(backend, "artifact_credentials = false").await;
    let job_id = t.create_job(demo_action_type()).await;
    let jobs = t.poll(TEAM_A, demo_action_type()).await.unwrap();
    let job = jobs.into_iter().find(|job| job.id == job_id).unwrap();
    assert!(
        job.data.as_ref().unwrap().artifact_credentials.is_none(),
        "poll"
    );
    let details =
        t.gw.client
            .get_job_details(authed(
                pb::GetJobDetailsRequest {
                    job_id: job_id.clone(),
                },
                TEAM_A,
            ))
            .await
            .unwrap()
            .into_inner();
    let data = details.job_details.unwrap().data.unwrap();
    assert!(data.artifact_credentials.is_none(), "details");
    let partner_job = t
        .create_third_party_job(PARTNER_A, "partner-a-secret")
        .await;
    let third_party =
        t.gw.third_party
            .get_third_party_job_details(authed(
                pb::GetThirdPartyJobDetailsRequest {
                    job_id: partner_job,
                    client_token: String::new(),
                    client_id: PARTNER_A.to_owned(),
                },
                TEAM_A,
            ))
            .await
            .expect("team A reads its partner's job")
            .into_inner();
    let data = third_party.job_details.unwrap().data.unwrap();
    assert!(data.artifact_credentials.is_none(), "third-party details");
    // The operator (unscoped) still sees them: the emulator does hand them out.
    let operator =
        t.gw.client
            .get_job_details(authed(pb::GetJobDetailsRequest { job_id }, OPERATOR))
            .await
            .unwrap()
            .into_inner();
    assert!(
        operator
            .job_details
            .unwrap()
            .data
            .unwrap()
            .artifact_credentials
            .is_some(),
        "an unscoped client keeps them"
    );
    t.gw.stop().await;
}

// Each client's share of the gateway.

/// An upload stream of `token` that sends its header for `job_id` and then nothing: it holds
/// what an upload holds until the test drops the sender.
async fn stalled_upload(
    gw: &TestGateway,
    token: &str,
    job_id: &str,
) -> (
    tokio::sync::mpsc::Sender<pb::UploadOutputArtifactRequest>,
    tokio::task::JoinHandle<Result<(), Status>>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender
        .send(pb::UploadOutputArtifactRequest {
            request: Some(pb::upload_output_artifact_request::Request::Header(
                pb::UploadOutputArtifactHeader {
                    job: Some(pb::ArtifactJob {
                        job: Some(pb::artifact_job::Job::JobId(job_id.to_owned())),
                    }),
                    artifact_name: "output".to_owned(),
                    content_type: String::new(),
                    size_bytes: Some(1 << 20),
                },
            )),
        })
        .await
        .unwrap();
    let mut client = gw.artifacts.clone();
    let request = authed(tokio_stream::wrappers::ReceiverStream::new(receiver), token);
    let call = tokio::spawn(async move { client.upload_output_artifact(request).await.map(drop) });
    (sender, call)
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("upload-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A job with an output artifact, acknowledged by team A: what an upload needs.
async fn job_with_output(t: &mut Tenants) -> String {
    let job_id =
        t.gw.admin
            .create_job(authed(
                admin_pb::CreateJobRequest {
                    action_type_id: Some(demo_action_type()),
                    output_artifacts: vec![pb::Artifact {
                        name: "output".to_owned(),
                        revision: String::new(),
                        location: Some(pb::ArtifactLocation {
                            r#type: pb::ArtifactLocationType::S3.into(),
                            s3_location: Some(pb::S3ArtifactLocation {
                                bucket_name: "codepipeline-artifacts".to_owned(),
                                object_key: format!("out/{}.zip", uuid_like()),
                            }),
                        }),
                    }],
                    ..Default::default()
                },
                OPERATOR,
            ))
            .await
            .expect("CreateJob")
            .into_inner()
            .job_id;
    let jobs = t.poll(TEAM_A, demo_action_type()).await.unwrap();
    let job = jobs.into_iter().find(|job| job.id == job_id).unwrap();
    t.gw.client
        .acknowledge_job(authed(
            pb::AcknowledgeJobRequest {
                job_id: job.id,
                nonce: job.nonce,
            },
            TEAM_A,
        ))
        .await
        .expect("AcknowledgeJob");
    job_id
}

/// Uploads that stall after their header hold their client's share of the artifact memory, not
/// everyone's: past its share the client is refused RESOURCE_EXHAUSTED, while another client's
/// upload goes through.
#[tokio::test]
async fn stalled_uploads_cost_their_client_its_own_share_and_nobody_elses() {
    let mut t = tenants_with(
        Backend::InProcess,
        "",
        &[
            "--artifact-part-size",
            "5MiB",
            "--artifact-memory-per-client",
            "10MiB",
            "--artifact-memory",
            "40MiB",
        ],
    )
    .await;
    let job_id = job_with_output(&mut t).await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(stalled_upload(&t.gw, TEAM_A, &job_id).await);
    }
    // The stalled pair holds team A's whole share (two parts): a third is refused at once.
    let (_third_sender, third) = stalled_upload(&t.gw, TEAM_A, &job_id).await;
    let refused = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("refused, not left waiting")
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let violation = &refused.get_details_quota_failure().unwrap().violations[0];
    assert_eq!(violation.subject, "client:team-a");

    // The operator's upload (another client) goes through whole, as do its calls.
    let header = pb::UploadOutputArtifactRequest {
        request: Some(pb::upload_output_artifact_request::Request::Header(
            pb::UploadOutputArtifactHeader {
                job: Some(pb::ArtifactJob {
                    job: Some(pb::artifact_job::Job::JobId(job_id.clone())),
                }),
                artifact_name: "output".to_owned(),
                content_type: String::new(),
                size_bytes: Some(3),
            },
        )),
    };
    let chunk = pb::UploadOutputArtifactRequest {
        request: Some(pb::upload_output_artifact_request::Request::Chunk(
            b"out".to_vec().into(),
        )),
    };
    let stored =
        t.gw.artifacts
            .upload_output_artifact(authed(tokio_stream::iter([header, chunk]), OPERATOR))
            .await
            .expect("another client's upload is served")
            .into_inner();
    assert_eq!(stored.size_bytes, 3);

    drop(stalled);
    t.gw.stop().await;
}

/// Artifact streams count among their client's calls in flight: two stalled uploads fill a
/// limit of two, so the client's next call is refused while another client's is served.
#[tokio::test]
async fn stalled_uploads_count_among_their_clients_calls_in_flight() {
    let mut t = tenants_with(
        Backend::InProcess,
        "",
        &["--max-concurrent-calls-per-client", "2"],
    )
    .await;
    let job_id = job_with_output(&mut t).await;
    let stalled = [
        stalled_upload(&t.gw, TEAM_A, &job_id).await,
        stalled_upload(&t.gw, TEAM_A, &job_id).await,
    ];
    let details = |token: &'static str| {
        let mut client = t.gw.client.clone();
        let job_id = job_id.clone();
        async move {
            client
                .get_job_details(authed(pb::GetJobDetailsRequest { job_id }, token))
                .await
                .map(drop)
        }
    };
    // The uploads reach the handler (and take their places) in their own time.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match details(TEAM_A).await {
                Err(status) => return status,
                Ok(()) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("team A reaches its limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused.get_details_quota_failure().unwrap().violations[0].subject,
        "client:team-a"
    );
    details(OPERATOR).await.expect("another client is served");
    drop(stalled);
    t.gw.stop().await;
}

/// An upload that never sends its header is ended at the default deadline, and gives back
/// what it held.
#[tokio::test]
async fn an_upload_that_never_sends_its_header_ends_at_the_default_deadline() {
    let t = tenants_with(Backend::InProcess, "", &["--default-deadline", "1s"]).await;
    let (_sender, receiver) = tokio::sync::mpsc::channel::<pb::UploadOutputArtifactRequest>(1);
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        t.gw.artifacts.clone().upload_output_artifact(authed(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
            TEAM_A,
        )),
    )
    .await
    .expect("the stream is ended, not left open")
    .unwrap_err();
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
    t.gw.stop().await;
}

/// A client on `--max-feeds-per-client` feeds (distinct query params, each with an upstream
/// poller) may start no other: RESOURCE_EXHAUSTED. Another client may still join the first
/// client's feeds and start its own, up to the same limit.
#[tokio::test]
async fn the_feeds_a_client_opens_are_bounded_and_another_client_is_not() {
    let t = tenants_with(Backend::InProcess, "", &["--max-feeds-per-client", "2"]).await;
    let subscribe = |token: &'static str, value: &str| {
        let mut client = t.gw.client.clone();
        let value = value.to_owned();
        async move {
            let (requests, outgoing) = tokio::sync::mpsc::channel(4);
            requests
                .send(pb::StreamJobsRequest {
                    request: Some(pb::stream_jobs_request::Request::Subscription(
                        pb::StreamJobsSubscription {
                            action_type_id: Some(demo_action_type()),
                            query_param: [("ProjectName".to_owned(), value)].into(),
                            max_outstanding_jobs: 1,
                        },
                    )),
                })
                .await
                .unwrap();
            let opened = client
                .stream_jobs(authed(
                    tokio_stream::wrappers::ReceiverStream::new(outgoing),
                    token,
                ))
                .await
                .map(|response| response.into_inner());
            (requests, opened)
        }
    };
    let mut open = Vec::new();
    for value in ["one", "two"] {
        let (sender, opened) = subscribe(TEAM_A, value).await;
        open.push((sender, opened.expect("within the client's feeds")));
    }
    let (_sender, third) = subscribe(TEAM_A, "three").await;
    let refused = third.expect_err("a third query param is a third feed");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.get_details_quota_failure().unwrap().violations[0].subject,
        "client:team-a"
    );
    let (_joined_sender, joined) = subscribe(OPERATOR, "one").await;
    joined.expect("joining a feed team A opened costs the operator nothing");
    // The operator is on one feed: it may start one more of its own, not a second.
    let (sender, opened) = subscribe(OPERATOR, "three").await;
    open.push((sender, opened.expect("the operator opens its own")));
    let (_sender, fourth) = subscribe(OPERATOR, "four").await;
    assert_eq!(
        fourth.expect_err("the operator is on two feeds").code(),
        Code::ResourceExhausted
    );
    t.gw.stop().await;
}

/// A transfer outlives the scope it started under only until its credentials are renewed: the
/// renewal authorizes the caller again, so an upload whose job a reload took out of its client's
/// scope ends PERMISSION_DENIED at its next part.
#[tokio::test]
async fn a_scope_narrowed_mid_upload_ends_the_upload_when_its_credentials_are_renewed() {
    let mut t = tenants_on(
        Backend::InProcess,
        "",
        &["--artifact-part-size", "5MiB"],
        &["--artifact-credentials-ttl", "1s"],
    )
    .await;
    let job_id = job_with_output(&mut t).await;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let header = pb::UploadOutputArtifactRequest {
        request: Some(pb::upload_output_artifact_request::Request::Header(
            pb::UploadOutputArtifactHeader {
                job: Some(pb::ArtifactJob {
                    job: Some(pb::artifact_job::Job::JobId(job_id.clone())),
                }),
                artifact_name: "output".to_owned(),
                content_type: String::new(),
                size_bytes: Some(12 << 20),
            },
        )),
    };
    let mib = || pb::UploadOutputArtifactRequest {
        request: Some(pb::upload_output_artifact_request::Request::Chunk(
            vec![5u8; 1 << 20].into(),
        )),
    };
    let mut client = t.gw.artifacts.clone();
    let request = authed(
        tokio_stream::wrappers::ReceiverStream::new(receiver),
        TEAM_A,
    );
    let call = tokio::spawn(async move { client.upload_output_artifact(request).await });
    sender.send(header).await.unwrap();
    for _ in 0..6 {
        sender.send(mib()).await.unwrap();
    }
    // Team A loses DemoBuilder; its first part went with the first credentials, which expire.
    let tokens = t.dir.path().join("tokens.toml");
    write_atomically(
        &tokens,
        &token_file(r#"["Build/Custom/OtherBuilder/*"]"#, "").replace(
            "action_types = [\"Build/Custom/DemoBuilder/1\", \"Build/ThirdParty/Demo*/*\"]",
            "action_types = [\"Build/Custom/OtherBuilder/1\"]",
        ),
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for _ in 0..6 {
        if sender.send(mib()).await.is_err() {
            break;
        }
    }
    drop(sender);
    let ended = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the upload ends")
        .unwrap()
        .expect_err("the upload outlived its scope");
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    t.gw.stop().await;
}

/// A feed's polls spend the rate of the clients they are for: the subscriptions holding credit,
/// in turn. A client whose stream holds a job (no credit left), or that left, is not charged for
/// polls made for another, so its own calls have its whole rate.
#[tokio::test]
async fn a_feed_is_paid_for_by_the_subscribers_it_polls_for() {
    let mut t = tenants_with(
        Backend::InProcess,
        "rate_per_second = 1\nburst = 1",
        &[
            "--feed-min-idle-interval",
            "50ms",
            "--feed-max-idle-interval",
            "100ms",
        ],
    )
    .await;
    let stream_client = t.gw.client.clone();
    let subscribe = |token: &'static str| {
        let mut client = stream_client.clone();
        async move {
            let (requests, outgoing) = tokio::sync::mpsc::channel(4);
            requests
                .send(pb::StreamJobsRequest {
                    request: Some(pb::stream_jobs_request::Request::Subscription(
                        pb::StreamJobsSubscription {
                            action_type_id: Some(demo_action_type()),
                            query_param: HashMap::new(),
                            max_outstanding_jobs: 1,
                        },
                    )),
                })
                .await
                .unwrap();
            let stream = client
                .stream_jobs(authed(
                    tokio_stream::wrappers::ReceiverStream::new(outgoing),
                    token,
                ))
                .await
                .expect("the stream opens")
                .into_inner();
            (requests, stream)
        }
    };
    // Team A (1 call a second) opens the feed and is handed a job: its credit is spent.
    let (_team_a, mut team_a_stream) = subscribe(TEAM_A).await;
    let job_id = t.create_job(demo_action_type()).await;
    let delivered = tokio::time::timeout(Duration::from_secs(5), team_a_stream.message())
        .await
        .expect("the job is delivered")
        .unwrap()
        .unwrap();
    assert!(
        matches!(&delivered.response, Some(pb::stream_jobs_response::Response::Job(job)) if job.id == job_id)
    );
    // The operator joins with credit: the feed polls (ten a second) for the operator alone.
    let (_operator, _operator_stream) = subscribe(OPERATOR).await;
    // Past a second, team A's rate would be whole again unless those polls still spent it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    t.poll(TEAM_A, demo_action_type())
        .await
        .expect("team A's own call has its rate");
    t.gw.stop().await;
}

/// The emulator's store keeps no more than `--store-max-bytes`: an input artifact past the room
/// left is refused as it streams in, and nothing is stored.
#[tokio::test]
async fn the_emulators_store_refuses_what_it_has_no_room_for() {
    let mut t = tenants_on(Backend::InProcess, "", &[], &["--store-max-bytes", "1MiB"]).await;
    let job_id =
        t.gw.admin
            .create_job(authed(
                admin_pb::CreateJobRequest {
                    action_type_id: Some(demo_action_type()),
                    input_artifacts: vec![pb::Artifact {
                        name: "source".to_owned(),
                        revision: String::new(),
                        location: Some(pb::ArtifactLocation {
                            r#type: pb::ArtifactLocationType::S3.into(),
                            s3_location: Some(pb::S3ArtifactLocation {
                                bucket_name: "codepipeline-artifacts".to_owned(),
                                object_key: "in/too-big.zip".to_owned(),
                            }),
                        }),
                    }],
                    ..Default::default()
                },
                OPERATOR,
            ))
            .await
            .expect("CreateJob")
            .into_inner()
            .job_id;
    let header = admin_pb::AttachInputArtifactRequest {
        request: Some(admin_pb::attach_input_artifact_request::Request::Header(
            admin_pb::AttachInputArtifactHeader {
                job_id,
                artifact_name: "source".to_owned(),
                content_type: String::new(),
            },
        )),
    };
    let chunks = (0..2).map(|_| admin_pb::AttachInputArtifactRequest {
        request: Some(admin_pb::attach_input_artifact_request::Request::Chunk(
            vec![0u8; 1 << 20],
        )),
    });
    let refused =
        t.gw.admin
            .attach_input_artifact(authed(
                tokio_stream::iter(std::iter::once(header).chain(chunks)),
                OPERATOR,
            ))
            .await
            .expect_err("two MiB in a one-MiB store");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "STORE_FULL"
    );
    assert_eq!(
        t.gw.emulator.objects().room(),
        1 << 20,
        "nothing was stored"
    );
    t.gw.stop().await;
}
