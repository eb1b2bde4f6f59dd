//! The emulator's S3-compatible artifact store, through the real `aws-sdk-s3` (path-style, the
//! store's address as its endpoint) with the artifact credentials a job's GetJobDetails hands
//! out, fetched through the emulator's front with the real `aws-sdk-codepipeline`: what a worker,
//! or the gateway on its behalf, does against the pipeline's artifact bucket.

use std::{io::Read, time::Duration};

use aws_credential_types::Credentials;
use aws_sdk_codepipeline::types::{ActionCategory, ActionOwner, ActionTypeId};
use aws_sdk_s3::{
    error::ProvideErrorMetadata,
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption},
};
use aws_smithy_types::retry::RetryConfig;
use codepipeline_gateway::{
    app::EmulatorApp,
    pb::{
        emulator::{self as admin_pb, emulator_admin_service_client::EmulatorAdminServiceClient},
        jobworker as pb,
    },
};
use tonic::transport::Channel;

use crate::support::{ACCESS_KEY_ID, Backend, REGION, SECRET_ACCESS_KEY, gateway};

/// An `emulator` process's worth (front and store on port 0) with the SDK clients a worker has.
struct Emulator {
    app: EmulatorApp,
    codepipeline: aws_sdk_codepipeline::Client,
    admin: EmulatorAdminServiceClient<Channel>,
}

async fn emulator(engine: &[&str]) -> Emulator {
    let app = crate::support::emulator_front(engine).await;
    let config = aws_sdk_codepipeline::Config::builder()
        .behavior_version(aws_sdk_codepipeline::config::BehaviorVersion::latest())
        .region(aws_sdk_codepipeline::config::Region::new(REGION))
        .endpoint_url(format!("http://{}", app.addr()))
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "test",
        ))
        .build();
    let admin = EmulatorAdminServiceClient::new(
        Channel::from_shared(format!("http://{}", app.addr()))
            .unwrap()
            .connect_lazy(),
    );
    Emulator {
        codepipeline: aws_sdk_codepipeline::Client::from_conf(config),
        admin,
        app,
    }
}

fn demo_action_type() -> ActionTypeId {
    ActionTypeId::builder()
        .category(ActionCategory::Build)
        .owner(ActionOwner::Custom)
        .provider("DemoBuilder")
        .version("1")
        .build()
        .unwrap()
}

/// An artifact as a job's data lists it: its bucket and key.
fn location(artifacts: &[aws_sdk_codepipeline::types::Artifact]) -> (String, String) {
    let s3 = artifacts[0]
        .location()
        .and_then(|location| location.s3_location())
        .expect("an S3 artifact");
    (s3.bucket_name().to_owned(), s3.object_key().to_owned())
}

/// A job being worked on: polled, acknowledged, and its details (with fresh credentials) read.
struct Work {
    id: String,
    input: (String, String),
    output: (String, String),
    s3: aws_sdk_s3::Client,
}

impl Emulator {
    /// Polls `count` demo jobs, acknowledges them, and reads each one's details.
    async fn work(&self, count: i32) -> Vec<Work> {
        let polled = self
            .codepipeline
            .poll_for_jobs()
            .action_type_id(demo_action_type())
            .max_batch_size(count)
            .send()
            .await
            .expect("PollForJobs");
        let mut work = Vec::new();
        for job in polled.jobs() {
            let id = job.id().unwrap().to_owned();
            self.codepipeline
                .acknowledge_job()
                .job_id(&id)
                .nonce(job.nonce().unwrap())
                .send()
                .await
                .expect("AcknowledgeJob");
            work.push(self.details(&id).await);
        }
        assert_eq!(work.len(), count as usize, "enough demo jobs");
        work
    }

    /// GetJobDetails: the job's artifacts and a new set of credentials for them.
    async fn details(&self, id: &str) -> Work {
        let details = self
            .codepipeline
            .get_job_details()
            .job_id(id)
            .send()
            .await
            .expect("GetJobDetails");
        let data = details.job_details().unwrap().data().unwrap();
        let credentials = data.artifact_credentials().expect("artifact credentials");
        Work {
            id: id.to_owned(),
            input: location(data.input_artifacts()),
            output: location(data.output_artifacts()),
            s3: s3_client(
                self.app.s3_addr(),
                credentials.access_key_id(),
                credentials.secret_access_key(),
                credentials.session_token(),
            ),
        }
    }

    async fn finish(&self, id: &str) {
        self.codepipeline
            .put_job_success_result()
            .job_id(id)
            .send()
            .await
            .expect("PutJobSuccessResult");
    }

    /// ReadOutputArtifact: the metadata and the bytes.
    async fn read_output(
        &mut self,
        job_id: &str,
    ) -> Result<(admin_pb::OutputArtifactMetadata, Vec<u8>), tonic::Status> {
        read_output(&mut self.admin, job_id).await
    }
}

async fn read_output(
    admin: &mut EmulatorAdminServiceClient<Channel>,
    job_id: &str,
) -> Result<(admin_pb::OutputArtifactMetadata, Vec<u8>), tonic::Status> {
    use admin_pb::read_output_artifact_response::Response as Message;
    let mut stream = admin
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
            Some(Message::Metadata(first)) => metadata = Some(first),
            Some(Message::Chunk(chunk)) => bytes.extend_from_slice(&chunk),
            None => panic!("an empty message"),
        }
    }
    Ok((metadata.expect("the metadata comes first"), bytes))
}

/// An S3 client as a worker makes one from a job's credentials: path-style, the store as
/// endpoint, one attempt (so a refusal is seen as it is).
fn s3_client(
    addr: std::net::SocketAddr,
    access_key_id: &str,
    secret_access_key: &str,
    session_token: &str,
) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(REGION))
        .endpoint_url(format!("http://{addr}"))
        .force_path_style(true)
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .credentials_provider(Credentials::new(
            access_key_id,
            secret_access_key,
            Some(session_token.to_owned()),
            None,
            "job",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The S3 error code of a failed call.
fn code<E: ProvideErrorMetadata, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> Option<&str> {
    error.code()
}

async fn get(s3: &aws_sdk_s3::Client, (bucket, key): &(String, String)) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("GetObject")
        .body
        .collect()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_worker_downloads_the_demo_input_zip_and_a_range_of_it() {
    let emu = emulator(&["--demo-jobs", "1"]).await;
    let work = emu.work(1).await.remove(0);
    let (bucket, key) = &work.input;

    let bytes = get(&work.s3, &work.input).await;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).expect("a zip");
    let mut readme = String::new();
    archive
        .by_name("README.md")
        .expect("the demo zip has a README")
        .read_to_string(&mut readme)
        .unwrap();
    assert!(readme.contains("demo-revision-1"), "{readme}");

    let range = work
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .range("bytes=0-3")
        .send()
        .await
        .expect("a ranged GetObject");
    assert_eq!(
        range.content_range(),
        Some(format!("bytes 0-3/{}", bytes.len()).as_str())
    );
    assert_eq!(range.body.collect().await.unwrap().to_vec(), b"PK\x03\x04");

    let head = work
        .s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("HeadObject");
    assert_eq!(head.content_length(), Some(bytes.len() as i64));
    assert_eq!(head.content_type(), Some("application/zip"));
    emu.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_uploads_its_output_whole_and_in_parts_with_sse_kms_recorded() {
    let mut emu = emulator(&["--demo-jobs", "1"]).await;
    let work = emu.work(1).await.remove(0);
    let (bucket, key) = work.output.clone();
    let kms_key = "arn:aws:kms:us-east-1:123456789012:key/demo-key";

    let small = b"a small build output".to_vec();
    let put = work
        .s3
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .body(ByteStream::from(small.clone()))
        .content_type("application/zip")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(kms_key)
        .send()
        .await
        .expect("PutObject");
    assert_eq!(put.ssekms_key_id(), Some(kms_key));
    assert!(
        put.checksum_crc32().is_some(),
        "the SDK's default CRC32 was sent as a header, verified and echoed"
    );
    let (metadata, bytes) = emu.read_output(&work.id).await.expect("ReadOutputArtifact");
    assert_eq!(bytes, small);
    assert_eq!(metadata.size_bytes, small.len() as i64);
    assert_eq!(metadata.kms_key_id, kms_key);
    assert_eq!(metadata.server_side_encryption, "aws:kms");
    assert_eq!(metadata.content_type, "application/zip");
    assert_eq!(Some(metadata.etag.as_str()), put.e_tag());

    // 5 MiB + 1: two parts, the first at S3's minimum.
    let large: Vec<u8> = (0..5 * 1024 * 1024 + 1).map(|i| (i % 251) as u8).collect();
    let upload = work
        .s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(kms_key)
        .send()
        .await
        .expect("CreateMultipartUpload");
    let upload_id = upload.upload_id().unwrap();
    let mut parts = Vec::new();
    for (number, chunk) in [
        (1, &large[..5 * 1024 * 1024]),
        (2, &large[5 * 1024 * 1024..]),
    ] {
        let part = work
            .s3
            .upload_part()
            .bucket(&bucket)
            .key(&key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .expect("UploadPart");
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag().unwrap())
                .build(),
        );
    }
    let completed = work
        .s3
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("CompleteMultipartUpload");
    let etag = completed.e_tag().unwrap();
    assert!(etag.ends_with("-2\""), "{etag}");
    let (metadata, bytes) = emu.read_output(&work.id).await.expect("ReadOutputArtifact");
    assert!(bytes == large, "the parts, in order");
    assert_eq!(metadata.parts, 2);
    assert_eq!(metadata.etag, etag);
    assert_eq!(metadata.kms_key_id, kms_key);
    emu.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_part_under_5_mib_but_the_last_is_entity_too_small() {
    let emu = emulator(&["--demo-jobs", "1"]).await;
    let work = emu.work(1).await.remove(0);
    let (bucket, key) = work.output.clone();
    let upload = work
        .s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let mut parts = Vec::new();
    for number in 1..=2 {
        let part = work
            .s3
            .upload_part()
            .bucket(&bucket)
            .key(&key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(vec![1u8; 1024]))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag().unwrap())
                .build(),
        );
    }
    let error = work
        .s3
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some("EntityTooSmall"), "{error:?}");
    emu.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_aborted_multipart_upload_leaves_nothing() {
    let mut emu = emulator(&["--demo-jobs", "1"]).await;
    let work = emu.work(1).await.remove(0);
    let (bucket, key) = work.output.clone();
    let upload = work
        .s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    work.s3
        .upload_part()
        .bucket(&bucket)
        .key(&key)
        .upload_id(upload_id)
        .part_number(1)
        .body(ByteStream::from(vec![9u8; 1024]))
        .send()
        .await
        .unwrap();
    work.s3
        .abort_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .upload_id(upload_id)
        .send()
        .await
        .expect("AbortMultipartUpload");
    let nothing = emu.read_output(&work.id).await.unwrap_err();
    assert_eq!(
        nothing.code(),
        tonic::Code::FailedPrecondition,
        "{nothing:?}"
    );
    let error = work
        .s3
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .upload_id(upload_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some("NoSuchUpload"));
    emu.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_credentials_are_expired_token() {
    let emu = emulator(&["--demo-jobs", "1", "--artifact-credentials-ttl", "1s"]).await;
    let work = emu.work(1).await.remove(0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (bucket, key) = &work.input;
    let error = work
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some("ExpiredToken"), "{error:?}");
    // New details bring new credentials.
    let again = emu.details(&work.id).await;
    assert!(!get(&again.s3, &again.input).await.is_empty());
    emu.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn another_jobs_artifacts_are_access_denied() {
    let emu = emulator(&["--demo-jobs", "2"]).await;
    let mut work = emu.work(2).await;
    let (theirs, mine) = (work.remove(1), work.remove(0));
    let error = mine
        .s3
        .get_object()
        .bucket(&theirs.input.0)
        .key(&theirs.input.1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some("AccessDenied"), "{error:?}");
    let error = mine
        .s3
        .put_object()
        .bucket(&theirs.output.0)
        .key(&theirs.output.1)
        .body(ByteStream::from_static(b"not mine"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some("AccessDenied"), "{error:?}");
    // Its own input is fine, and its output is not readable.
    assert!(!get(&mine.s3, &mine.input).await.is_empty());
    let error = mine
        .s3
        .get_object()
        .bucket(&mine.output.0)
        .key(&mine.output.1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some("AccessDenied"));
    emu.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_finished_jobs_credentials_are_access_denied() {
    let emu = emulator(&["--demo-jobs", "1"]).await;
    let work = emu.work(1).await.remove(0);
    assert!(!get(&work.s3, &work.input).await.is_empty());
    emu.finish(&work.id).await;
    let error = work
        .s3
        .get_object()
        .bucket(&work.input.0)
        .key(&work.input.1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some("AccessDenied"), "{error:?}");
    emu.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_input_not_attached_is_no_such_key_until_the_admin_attaches_it() {
    let mut emu = emulator(&["--demo-jobs", "0"]).await;
    let artifact = |name: &str, key: &str| pb::Artifact {
        name: name.to_owned(),
        revision: "r1".to_owned(),
        location: Some(pb::ArtifactLocation {
            r#type: pb::ArtifactLocationType::S3.into(),
            s3_location: Some(pb::S3ArtifactLocation {
                bucket_name: "test-artifacts".to_owned(),
                object_key: key.to_owned(),
            }),
        }),
    };
    let job_id = emu
        .admin
        .create_job(admin_pb::CreateJobRequest {
            action_type_id: Some(crate::support::demo_action_type()),
            input_artifacts: vec![artifact("SourceOutput", "p/Source/in.zip")],
            output_artifacts: vec![artifact("BuildOutput", "p/Build/out.zip")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let work = emu.work(1).await.remove(0);
    assert_eq!(work.id, job_id);
    let error = work
        .s3
        .get_object()
        .bucket(&work.input.0)
        .key(&work.input.1)
        .send()
        .await
        .unwrap_err();
    assert!(
        error
            .as_service_error()
            .is_some_and(|error| error.is_no_such_key()),
        "{error:?}"
    );

    // 3 MiB in 1 MiB chunks, streamed.
    let bytes: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    use admin_pb::attach_input_artifact_request::Request as Message;
    let messages = std::iter::once(Message::Header(admin_pb::AttachInputArtifactHeader {
        job_id: job_id.clone(),
        artifact_name: "SourceOutput".to_owned(),
        content_type: String::new(),
    }))
    .chain(
        bytes
            .chunks(1024 * 1024)
            .map(|chunk| Message::Chunk(chunk.to_vec())),
    )
    .map(|request| admin_pb::AttachInputArtifactRequest {
        request: Some(request),
    })
    .collect::<Vec<_>>();
    let attached = emu
        .admin
        .attach_input_artifact(futures_util::stream::iter(messages))
        .await
        .expect("AttachInputArtifact")
        .into_inner();
    assert_eq!(attached.size_bytes, bytes.len() as i64);
    assert_eq!(
        attached.location.unwrap().object_key,
        "p/Source/in.zip".to_owned()
    );
    // The SDK checks the download against the stored SHA-256 it asks for.
    assert!(get(&work.s3, &work.input).await == bytes);

    let not_an_input = emu
        .admin
        .attach_input_artifact(futures_util::stream::iter([
            admin_pb::AttachInputArtifactRequest {
                request: Some(Message::Header(admin_pb::AttachInputArtifactHeader {
                    job_id,
                    artifact_name: "BuildOutput".to_owned(),
                    content_type: String::new(),
                })),
            },
        ]))
        .await
        .unwrap_err();
    assert_eq!(not_an_input.code(), tonic::Code::InvalidArgument);
    emu.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_key_is_invalid_access_key_id() {
    let emu = emulator(&["--demo-jobs", "1"]).await;
    let work = emu.work(1).await.remove(0);
    let stranger = s3_client(emu.app.s3_addr(), "ASIANEVERISSUED00000", "secret", "token");
    let error = stranger
        .get_object()
        .bucket(&work.input.0)
        .key(&work.input.1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some("InvalidAccessKeyId"), "{error:?}");
    emu.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn injected_store_faults_reach_the_sdk_as_s3_errors() {
    let mut emu = emulator(&["--demo-jobs", "1"]).await;
    let work = emu.work(1).await.remove(0);
    emu.admin
        .set_faults(admin_pb::SetFaultsRequest {
            plan: "PutObject:http503=1;GetObject:drop=1".to_owned(),
        })
        .await
        .unwrap();
    let error = work
        .s3
        .put_object()
        .bucket(&work.output.0)
        .key(&work.output.1)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some("SlowDown"), "{error:?}");
    let dropped = work
        .s3
        .get_object()
        .bucket(&work.input.0)
        .key(&work.input.1)
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(dropped, aws_sdk_s3::error::SdkError::DispatchFailure(_)),
        "{dropped:?}"
    );
    let counts = emu
        .admin
        .get_call_counts(admin_pb::GetCallCountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .calls;
    assert_eq!(counts.get("PutObject"), Some(&1));
    assert_eq!(counts.get("GetObject"), Some(&1));
    emu.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn serve_with_the_emulator_upstream_serves_the_store_too() {
    let mut gw = gateway(Backend::InProcess)
        .engine(&["--demo-jobs", "1"])
        .spawn()
        .await;
    let job: pb::Job = gw.poll(1).await.remove(0);
    gw.acknowledge(&job.id, &job.nonce).await.unwrap();
    let details = gw
        .client
        .get_job_details(pb::GetJobDetailsRequest {
            job_id: job.id.clone(),
        })
        .await
        .expect("GetJobDetails")
        .into_inner();
    let data = details.job_details.unwrap().data.unwrap();
    let credentials = data.artifact_credentials.unwrap();
    let input = data.input_artifacts[0]
        .location
        .as_ref()
        .and_then(|location| location.s3_location.as_ref())
        .unwrap();
    let s3 = s3_client(
        gw.s3_addr(),
        &credentials.access_key_id,
        &credentials.secret_access_key,
        &credentials.session_token,
    );
    let bytes = get(&s3, &(input.bucket_name.clone(), input.object_key.clone())).await;
    assert!(bytes.starts_with(b"PK\x03\x04"));
    gw.stop().await;
}
