//! Artifacts through the gateway, on every backend: input artifacts downloaded and output
//! artifacts uploaded by gRPC alone, the gateway reaching the emulator's artifact store with the
//! job's own credentials through `aws-sdk-s3`. Objects go in and come out through the emulator's
//! admin service, so what the store holds is checked apart from the gateway.

use codepipeline_gateway::pb::{
    emulator::{self as admin_pb},
    jobworker::{
        self as pb, download_input_artifact_response::Response as Downloaded,
        upload_output_artifact_request::Request as Uploading,
    },
};
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic_types::StatusExt;

use rstest::rstest;
use rstest_reuse::apply;

use crate::support::{
    Backend, TestGateway, demo_action_type, every_backend, gateway, in_process_and_real_sdk,
};

const BUCKET: &str = "codepipeline-us-east-1-artifact-tests";
const MIB: usize = 1024 * 1024;

fn artifact(name: &str, key: &str) -> pb::Artifact {
    pb::Artifact {
        name: name.to_owned(),
        revision: format!("{name}-revision"),
        location: Some(pb::ArtifactLocation {
            r#type: pb::ArtifactLocationType::S3.into(),
            s3_location: Some(pb::S3ArtifactLocation {
                bucket_name: BUCKET.to_owned(),
                object_key: key.to_owned(),
            }),
        }),
    }
}

/// Bytes that differ along the object, so a misplaced range shows.
fn content(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i % 251) as u8 ^ (i / 65_536) as u8)
        .collect()
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

impl TestGateway {
    /// An InProgress job with an input and an output artifact (and the encryption key, if any).
    async fn job_with_artifacts(&mut self, kms_key: Option<&str>) -> String {
        let n = uuid::Uuid::new_v4();
        let id = self
            .admin
            .create_job(admin_pb::CreateJobRequest {
                action_type_id: Some(demo_action_type()),
                input_artifacts: vec![artifact("SourceOutput", &format!("in/{n}.zip"))],
                output_artifacts: vec![artifact("BuildOutput", &format!("out/{n}.zip"))],
                encryption_key: kms_key.map(|id| pb::EncryptionKey {
                    id: id.to_owned(),
                    r#type: pb::EncryptionKeyType::Kms.into(),
                }),
                ..Default::default()
            })
            .await
            .expect("CreateJob")
            .into_inner()
            .job_id;
        let job = self
            .poll(10)
            .await
            .into_iter()
            .find(|job| job.id == id)
            .expect("the new job is handed out");
        self.acknowledge(&id, &job.nonce)
            .await
            .expect("acknowledged");
        id
    }

    async fn attach_input(&mut self, job_id: &str, bytes: &[u8]) {
        let header = admin_pb::AttachInputArtifactRequest {
            request: Some(admin_pb::attach_input_artifact_request::Request::Header(
                admin_pb::AttachInputArtifactHeader {
                    job_id: job_id.to_owned(),
                    artifact_name: "SourceOutput".to_owned(),
                    content_type: "application/zip".to_owned(),
                },
            )),
        };
        let chunks = bytes
            .chunks(MIB)
            .map(|chunk| admin_pb::AttachInputArtifactRequest {
                request: Some(admin_pb::attach_input_artifact_request::Request::Chunk(
                    chunk.to_vec(),
                )),
            });
        let messages: Vec<_> = std::iter::once(header).chain(chunks).collect();
        self.admin
            .attach_input_artifact(tokio_stream::iter(messages))
            .await
            .expect("AttachInputArtifact");
    }

    /// The output artifact as the store holds it: its metadata and bytes.
    async fn read_output(
        &mut self,
        job_id: &str,
    ) -> Result<(admin_pb::OutputArtifactMetadata, Vec<u8>), tonic::Status> {
        let mut stream = self
            .admin
            .read_output_artifact(admin_pb::ReadOutputArtifactRequest {
                job_id: job_id.to_owned(),
                artifact_name: "BuildOutput".to_owned(),
            })
            .await?
            .into_inner();
        let mut metadata = None;
        let mut bytes = Vec::new();
        while let Some(message) = stream.message().await? {
            match message.response {
                Some(admin_pb::read_output_artifact_response::Response::Metadata(m)) => {
                    metadata = Some(m)
                }
                Some(admin_pb::read_output_artifact_response::Response::Chunk(chunk)) => {
                    bytes.extend_from_slice(&chunk)
                }
                None => {}
            }
        }
        Ok((metadata.expect("metadata first"), bytes))
    }

    /// Downloads the input artifact through the gateway: its metadata and bytes.
    async fn download(
        &mut self,
        job_id: &str,
        name: &str,
    ) -> Result<(pb::ArtifactMetadata, Vec<u8>), tonic::Status> {
        let mut stream = self
            .artifacts
            .download_input_artifact(pb::DownloadInputArtifactRequest {
                job: Some(custom(job_id)),
                artifact_name: name.to_owned(),
            })
            .await?
            .into_inner();
        let mut metadata = None;
        let mut bytes = Vec::new();
        while let Some(message) = stream.message().await? {
            match message.response {
                Some(Downloaded::Metadata(m)) => metadata = Some(m),
                Some(Downloaded::Chunk(chunk)) => bytes.extend_from_slice(&chunk),
                None => {}
            }
        }
        Ok((metadata.expect("metadata first"), bytes))
    }

    /// Uploads `bytes` as the output artifact through the gateway, in 1 MiB messages.
    async fn upload(
        &mut self,
        job_id: &str,
        bytes: &[u8],
        declared: Option<i64>,
    ) -> Result<pb::UploadOutputArtifactResponse, tonic::Status> {
        // A worker that declares the size may leave out the end; one that does not must send it.
        let end = declared.is_none().then_some(END);
        let messages: Vec<_> = std::iter::once(header(job_id, "BuildOutput", declared))
            .chain(bytes.chunks(MIB).map(chunk_message))
            .chain(end)
            .collect();
        self.artifacts
            .upload_output_artifact(tokio_stream::iter(messages))
            .await
            .map(tonic::Response::into_inner)
    }
}

fn custom(job_id: &str) -> pb::ArtifactJob {
    pb::ArtifactJob {
        job: Some(pb::artifact_job::Job::JobId(job_id.to_owned())),
    }
}

fn header(job_id: &str, name: &str, declared: Option<i64>) -> pb::UploadOutputArtifactRequest {
    pb::UploadOutputArtifactRequest {
        request: Some(Uploading::Header(pb::UploadOutputArtifactHeader {
            job: Some(custom(job_id)),
            artifact_name: name.to_owned(),
            content_type: String::new(),
            size_bytes: declared,
        })),
    }
}

fn chunk_message(chunk: &[u8]) -> pb::UploadOutputArtifactRequest {
    pb::UploadOutputArtifactRequest {
        request: Some(Uploading::Chunk(chunk.to_vec().into())),
    }
}

const END: pb::UploadOutputArtifactRequest = pb::UploadOutputArtifactRequest {
    request: Some(Uploading::End(pb::UploadOutputArtifactEnd {})),
};

/// Parts of 5 MiB, S3's smallest: 5 MiB + 1 byte is then two parts.
const SMALL_PARTS: [&str; 2] = ["--artifact-part-size", "5MiB"];

#[apply(every_backend)]
#[tokio::test]
async fn artifacts_of_every_size_go_down_and_up_whole(#[case] backend: Backend) {
    let mut gw = gateway(backend).flags(&SMALL_PARTS).spawn().await;
    for size in [0, 1, 5 * MIB + 1] {
        let job = gw.job_with_artifacts(None).await;
        let bytes = content(size);
        gw.attach_input(&job, &bytes).await;
        let (metadata, downloaded) = gw.download(&job, "SourceOutput").await.unwrap();
        assert_eq!(metadata.size_bytes as usize, size, "{backend:?} {size}");
        assert_eq!(metadata.content_type, "application/zip");
        assert_eq!(metadata.revision, "SourceOutput-revision");
        assert_eq!(
            sha256(&downloaded),
            sha256(&bytes),
            "{backend:?}: {size} bytes down"
        );

        let uploaded = gw
            .upload(&job, &bytes, Some(size as i64))
            .await
            .unwrap_or_else(|status| panic!("{backend:?} {size}: {status:?}"));
        assert_eq!(uploaded.size_bytes as usize, size);
        let (stored, stored_bytes) = gw.read_output(&job).await.unwrap();
        assert_eq!(
            sha256(&stored_bytes),
            sha256(&bytes),
            "{backend:?}: {size} bytes up"
        );
        assert_eq!(stored.server_side_encryption, "aws:kms", "SSE-KMS always");
        let expected_parts = if size > 5 * MIB { 2 } else { 0 };
        assert_eq!(stored.parts, expected_parts, "{backend:?} {size}");
        assert_eq!(
            uploaded.sha256,
            {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(sha256(&bytes))
            },
            "the answer names the SHA-256 of what was written"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn two_hundred_mebibytes_go_down_and_up_whole() {
    let mut gw = gateway(Backend::InProcess).spawn().await;
    let job = gw.job_with_artifacts(None).await;
    let bytes = content(200 * MIB);
    gw.attach_input(&job, &bytes).await;
    let (_, downloaded) = gw.download(&job, "SourceOutput").await.unwrap();
    assert_eq!(downloaded.len(), bytes.len());
    assert!(downloaded == bytes, "the bytes came down in order");
    gw.upload(&job, &bytes, None).await.unwrap();
    let (stored, stored_bytes) = gw.read_output(&job).await.unwrap();
    assert!(stored_bytes == bytes, "the bytes went up in order");
    assert_eq!(stored.parts, 25, "200 MiB in parts of 8 MiB");
    gw.stop().await;
}

#[apply(in_process_and_real_sdk)]
#[tokio::test]
async fn the_jobs_kms_key_encrypts_its_outputs(#[case] backend: Backend) {
    let mut gw = gateway(backend).spawn().await;
    let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let job = gw.job_with_artifacts(Some(key)).await;
    let uploaded = gw.upload(&job, b"built", None).await.unwrap();
    assert_eq!(uploaded.kms_key_id, key);
    let (stored, _) = gw.read_output(&job).await.unwrap();
    assert_eq!(
        (
            stored.server_side_encryption.as_str(),
            stored.kms_key_id.as_str()
        ),
        ("aws:kms", key),
        "{backend:?}"
    );
    gw.stop().await;
}

#[apply(in_process_and_real_sdk)]
#[tokio::test]
async fn an_upload_cut_mid_stream_leaves_no_object_and_the_job_unchanged(#[case] backend: Backend) {
    let mut gw = gateway(backend).flags(&SMALL_PARTS).spawn().await;
    let job = gw.job_with_artifacts(None).await;
    let (requests, outgoing) = tokio::sync::mpsc::channel(4);
    let mut client = gw.artifacts.clone();
    let call = tokio::spawn(async move {
        client
            .upload_output_artifact(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await
    });
    requests
        .send(header(&job, "BuildOutput", None))
        .await
        .unwrap();
    // Two parts' worth, so a multipart upload is under way, then the worker goes away.
    for chunk in content(11 * MIB).chunks(MIB) {
        requests.send(chunk_message(chunk)).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    call.abort();
    drop(requests);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let stored = gw.read_output(&job).await.unwrap_err();
    assert_eq!(
        stored.code(),
        Code::FailedPrecondition,
        "{backend:?}: no object: {stored:?}"
    );
    assert_eq!(gw.job_state(&job).await.status(), pb::JobStatus::InProgress);

    // A declared size the bytes do not match is refused, and leaves nothing either.
    let refused = gw
        .upload(&job, &content(6 * MIB), Some(7 * MIB as i64))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(gw.read_output(&job).await.is_err());
    gw.stop().await;
}

/// To the handler, a worker's RST_STREAM and a clean end of its stream look the same, so an
/// upload is stored only on evidence that it is whole: no timing decides it.
#[apply(in_process_and_real_sdk)]
#[tokio::test]
async fn an_upload_is_stored_only_after_its_end_message_or_its_declared_size(
    #[case] backend: Backend,
) {
    let mut gw = gateway(backend).flags(&SMALL_PARTS).spawn().await;
    let job = gw.job_with_artifacts(None).await;
    let store_calls = |counts: &std::collections::HashMap<String, u64>, op: &str| {
        counts.get(op).copied().unwrap_or(0)
    };
    let bytes = content(11 * MIB);
    let unfinished: Vec<_> = std::iter::once(header(&job, "BuildOutput", None))
        .chain(bytes.chunks(MIB).map(chunk_message))
        .collect();
    let with_more_after_the_end: Vec<_> = unfinished
        .iter()
        .cloned()
        .chain([END, chunk_message(b"late")])
        .collect();
    for (case, messages) in [
        ("no end message, no declared size", unfinished),
        ("a chunk after the end message", with_more_after_the_end),
    ] {
        let refused = gw
            .artifacts
            .upload_output_artifact(tokio_stream::iter(messages))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{case}: {refused:?}");
        assert_eq!(
            refused.get_details_bad_request().unwrap().field_violations[0].field,
            "request",
            "{case}"
        );
        assert_eq!(
            gw.read_output(&job).await.unwrap_err().code(),
            Code::FailedPrecondition,
            "{backend:?} {case}: no object"
        );
    }
    let counts = gw
        .admin
        .get_call_counts(admin_pb::GetCallCountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .calls;
    assert_eq!(
        store_calls(&counts, "UploadPart"),
        4,
        "two parts were sent, twice"
    );
    assert_eq!(store_calls(&counts, "CompleteMultipartUpload"), 0);
    assert_eq!(store_calls(&counts, "AbortMultipartUpload"), 2);
    assert_eq!(gw.job_state(&job).await.status(), pb::JobStatus::InProgress);

    // The same bytes with their end, or with their size declared, are stored whole.
    for declared in [None, Some(bytes.len() as i64)] {
        gw.upload(&job, &bytes, declared).await.unwrap();
        let (_, stored) = gw.read_output(&job).await.unwrap();
        assert!(stored == bytes, "{backend:?} declared {declared:?}");
    }
    gw.stop().await;
}

#[apply(in_process_and_real_sdk)]
#[tokio::test]
async fn expired_credentials_are_renewed_mid_transfer(#[case] backend: Backend) {
    let mut gw = gateway(backend)
        .flags(&SMALL_PARTS)
        .engine(&["--artifact-credentials-ttl", "1s"])
        .spawn()
        .await;
    let job = gw.job_with_artifacts(None).await;
    let bytes = content(16 * MIB);
    let (requests, outgoing) = tokio::sync::mpsc::channel(4);
    let mut client = gw.artifacts.clone();
    let call = tokio::spawn(async move {
        client
            .upload_output_artifact(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await
    });
    requests
        .send(header(&job, "BuildOutput", None))
        .await
        .unwrap();
    // Slowly: the credentials fetched at the start expire between parts.
    for (i, chunk) in bytes.chunks(MIB).enumerate() {
        requests.send(chunk_message(chunk)).await.unwrap();
        if i % 5 == 4 {
            tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
        }
    }
    requests.send(END).await.unwrap();
    drop(requests);
    call.await
        .unwrap()
        .unwrap_or_else(|status| panic!("{backend:?}: {status:?}"));
    let (_, stored) = gw.read_output(&job).await.unwrap();
    assert!(stored == bytes, "{backend:?}");
    let details =
        gw.emulator.call_counts()[&codepipeline_gateway::upstream::Operation::GetJobDetails];
    assert!(
        details >= 2,
        "{backend:?}: the credentials were fetched again ({details} GetJobDetails)"
    );
    gw.stop().await;
}

#[apply(in_process_and_real_sdk)]
#[tokio::test]
async fn an_unknown_job_or_artifact_is_not_found_before_any_s3_request(#[case] backend: Backend) {
    let mut gw = gateway(backend).spawn().await;
    let unknown = gw
        .download("00000000-0000-4000-8000-000000000000", "SourceOutput")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert_eq!(
        unknown.get_details_error_info().unwrap().reason,
        "JobNotFoundException"
    );

    let job = gw.job_with_artifacts(None).await;
    let no_such = gw.download(&job, "NoSuchArtifact").await.unwrap_err();
    assert_eq!(no_such.code(), Code::NotFound, "{no_such:?}");
    assert_eq!(
        no_such.get_details_error_info().unwrap().reason,
        "NO_SUCH_ARTIFACT"
    );
    let wrong_way = gw.download(&job, "BuildOutput").await.unwrap_err();
    assert_eq!(
        wrong_way.code(),
        Code::NotFound,
        "an output is not an input: {wrong_way:?}"
    );
    let counts = gw
        .admin
        .get_call_counts(admin_pb::GetCallCountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .calls;
    let store_requests: u64 = ["GetObject", "HeadObject", "PutObject", "UploadPart"]
        .iter()
        .map(|op| counts.get(*op).copied().unwrap_or(0))
        .sum();
    assert_eq!(store_requests, 0, "{backend:?}: nothing reached the store");

    let invalid = gw.download("not-a-job", "SourceOutput").await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(
        invalid.get_details_bad_request().unwrap().field_violations[0].field,
        "job.job_id"
    );
    gw.stop().await;
}

#[apply(in_process_and_real_sdk)]
#[tokio::test]
async fn store_faults_and_refusals_arrive_as_their_codes(#[case] backend: Backend) {
    let mut gw = gateway(backend).flags(&SMALL_PARTS).spawn().await;
    let job = gw.job_with_artifacts(None).await;
    gw.attach_input(&job, b"zip").await;
    let set_faults = |plan: &str| admin_pb::SetFaultsRequest {
        plan: plan.to_owned(),
    };

    gw.admin
        .set_faults(set_faults("HeadObject:http503=1"))
        .await
        .unwrap();
    let unavailable = gw.download(&job, "SourceOutput").await.unwrap_err();
    assert_eq!(
        unavailable.code(),
        Code::Unavailable,
        "{backend:?}: {unavailable:?}"
    );
    assert!(unavailable.get_details_retry_info().is_some());

    gw.admin
        .set_faults(set_faults("UploadPart:http500=1"))
        .await
        .unwrap();
    let failed = gw.upload(&job, &content(11 * MIB), None).await.unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{backend:?}: {failed:?}");
    assert!(
        gw.read_output(&job).await.is_err(),
        "a failed part leaves no object"
    );

    gw.admin.set_faults(set_faults("")).await.unwrap();
    // A job no longer in progress: its credentials open nothing.
    gw.client
        .put_job_success_result(pb::PutJobSuccessResultRequest {
            job_id: job.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let finished = gw.download(&job, "SourceOutput").await.unwrap_err();
    assert_eq!(
        finished.code(),
        Code::FailedPrecondition,
        "{backend:?}: {finished:?}"
    );
    assert_eq!(
        finished.get_details_error_info().unwrap().reason,
        "AccessDenied"
    );
    gw.stop().await;
}
