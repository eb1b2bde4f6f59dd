//! The store through its handler: requests signed as aws-sdk-s3 signs them, with the credentials
//! the engine issued for a job.

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use http::{HeaderMap, Request, StatusCode};
use sha2::{Digest, Sha256};

use super::*;
use crate::store::{Encryption, MIN_PART_SIZE, Object};
use crate::{Emulator, EmulatorConfig, JobSpec, demo_action_type, faults::FaultPlan};
use codepipeline_job_port::domain::{
    AcknowledgeJobInput, Artifact, JobId, Nonce, PollForJobsInput, PutJobSuccessResultInput,
    S3Location, SessionCredentials,
};

const BUCKET: &str = "artifact-bucket";
const INPUT_KEY: &str = "pipeline/Source/in.zip";
const OUTPUT_KEY: &str = "pipeline/Build/out.zip";

fn location(key: &str) -> S3Location {
    S3Location {
        bucket_name: BUCKET.to_owned(),
        object_key: key.to_owned(),
    }
}

fn artifact(name: &str, key: &str) -> Artifact {
    Artifact {
        name: Some(name.to_owned()),
        revision: Some("r1".to_owned()),
        s3_location: Some(location(key)),
    }
}

/// An emulator with one job: polled (so its credentials were issued) and, unless `acknowledge`
/// is false, acknowledged (InProgress).
struct Fixture {
    emulator: Arc<Emulator>,
    store: Store,
    job: JobId,
    credentials: SessionCredentials,
    nonce: String,
}

fn fixture_with(ttl: Duration, acknowledge: bool) -> Fixture {
    let emulator = Arc::new(Emulator::new(EmulatorConfig {
        artifact_credentials_ttl: ttl,
        ..EmulatorConfig::default()
    }));
    emulator.register_action_type(demo_action_type()).unwrap();
    let spec = JobSpec {
        input_artifacts: vec![artifact("SourceOutput", INPUT_KEY)],
        output_artifacts: vec![artifact("BuildOutput", OUTPUT_KEY)],
        ..JobSpec::default()
    };
    let job = emulator.create_job(&demo_action_type(), spec).unwrap();
    let polled = emulator
        .poll(&PollForJobsInput {
            action_type_id: demo_action_type(),
            max_batch_size: None,
            query_param: None,
        })
        .unwrap()
        .remove(0);
    if acknowledge {
        emulator
            .acknowledge(&AcknowledgeJobInput {
                job_id: job.clone(),
                nonce: Nonce::parse(&polled.nonce).unwrap(),
            })
            .unwrap();
    }
    let store = Store::new(
        emulator.clone(),
        StoreConfig {
            region: "us-east-1".to_owned(),
        },
    );
    Fixture {
        emulator,
        store,
        job,
        credentials: polled.data.artifact_credentials.unwrap(),
        nonce: polled.nonce,
    }
}

fn fixture() -> Fixture {
    fixture_with(Duration::from_secs(900), true)
}

/// How a test request is signed.
#[derive(Clone, Copy)]
enum Sign {
    /// With the job's credentials, the body's hash declared.
    Hashed,
    /// With the job's credentials, `UNSIGNED-PAYLOAD`.
    Unsigned,
}

struct Req<'a> {
    method: &'a str,
    path_and_query: String,
    headers: Vec<(&'a str, String)>,
    body: Vec<u8>,
    access_key_id: String,
    secret: String,
    token: Option<String>,
    sign: Sign,
}

impl Fixture {
    fn request(&self, method: &'static str, path_and_query: &str) -> Req<'static> {
        Req {
            method,
            path_and_query: path_and_query.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            access_key_id: self.credentials.access_key_id.clone(),
            secret: self.credentials.secret_access_key.clone(),
            token: Some(self.credentials.session_token.clone()),
            sign: Sign::Unsigned,
        }
    }

    async fn send(&self, request: Req<'_>) -> Answer {
        send(&self.store, request).await
    }

    fn object(&self, key: &str) -> Option<Arc<Object>> {
        self.emulator.objects().get(&location(key))
    }

    fn put_input(&self, bytes: &[u8]) {
        self.emulator.objects().put(
            &location(INPUT_KEY),
            Object::new(bytes.to_vec(), "application/zip"),
        );
    }
}

impl<'a> Req<'a> {
    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.sign = Sign::Hashed;
        self
    }

    fn signed_as(mut self, sign: Sign) -> Self {
        self.sign = sign;
        self
    }

    /// Signs as aws-sdk-s3 does, with the SDK's own signer.
    fn build(self) -> Request<Body> {
        use aws_credential_types::Credentials;
        use aws_sigv4::{
            http_request::{
                PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
                SigningSettings, UriPathNormalizationMode, sign,
            },
            sign::v4,
        };
        let identity = Credentials::new(
            &self.access_key_id,
            &self.secret,
            self.token.clone(),
            None,
            "test",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(std::time::SystemTime::now())
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let uri = format!("http://127.0.0.1:4598{}", self.path_and_query);
        let mut headers: Vec<(&str, String)> = vec![("host", "127.0.0.1:4598".to_owned())];
        headers.extend(self.headers.iter().cloned());
        let hash = hex::encode(Sha256::digest(&self.body));
        let body = match self.sign {
            Sign::Hashed => SignableBody::Precomputed(hash),
            Sign::Unsigned => SignableBody::UnsignedPayload,
        };
        let signable = SignableRequest::new(
            self.method,
            &uri,
            headers.iter().map(|(name, value)| (*name, value.as_str())),
            body,
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut request = Request::builder().method(self.method).uri(&uri);
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        request.body(Body::from(self.body)).unwrap()
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Vec<u8>, String>,
    dropped: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_deref().unwrap_or_default()).into_owned()
    }

    /// The S3 error code of an error answer.
    fn code(&self) -> String {
        let text = self.text();
        text.split("<Code>")
            .nth(1)
            .and_then(|rest| rest.split("</Code>").next())
            .unwrap_or_default()
            .to_owned()
    }

    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.code().as_str()),
            (status, code),
            "{}",
            self.text()
        );
        assert_eq!(self.header("x-amz-request-id").map(str::len), Some(16));
        assert_eq!(self.header("content-type"), Some("application/xml"));
    }
}

async fn send(store: &Store, request: Req<'_>) -> Answer {
    let response = store.handle(request.build()).await;
    let dropped = response
        .extensions()
        .get::<crate::faults::DropConnection>()
        .is_some();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(|error| error.to_string());
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        dropped,
    }
}

fn input_path() -> String {
    format!("/{BUCKET}/{INPUT_KEY}")
}

fn output_path() -> String {
    format!("/{BUCKET}/{OUTPUT_KEY}")
}

#[tokio::test]
async fn an_input_artifact_is_read_whole_by_range_and_by_head() {
    let f = fixture();
    let bytes: Vec<u8> = (0u8..100).collect();
    f.put_input(&bytes);

    let whole = f.send(f.request("GET", &input_path())).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body.as_deref(), Ok(&bytes[..]));
    assert_eq!(whole.header("content-length"), Some("100"));
    assert_eq!(whole.header("content-type"), Some("application/zip"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert!(
        whole.header("x-amz-checksum-sha256").is_none(),
        "only when asked"
    );
    assert!(whole.header("last-modified").unwrap().ends_with(" GMT"));

    for (range, content_range, expected) in [
        ("bytes=2-5", "bytes 2-5/100", &bytes[2..6]),
        ("bytes=95-", "bytes 95-99/100", &bytes[95..]),
        ("bytes=-3", "bytes 97-99/100", &bytes[97..]),
        ("bytes=98-500", "bytes 98-99/100", &bytes[98..]),
    ] {
        let answer = f
            .send(f.request("GET", &input_path()).header("range", range))
            .await;
        assert_eq!(answer.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(answer.header("content-range"), Some(content_range));
        assert_eq!(answer.body.as_deref(), Ok(expected), "{range}");
    }
    let past_the_end = f
        .send(
            f.request("GET", &input_path())
                .header("range", "bytes=100-"),
        )
        .await;
    past_the_end.assert_error(416, "InvalidRange");
    assert!(
        past_the_end
            .text()
            .contains("<ActualObjectSize>100</ActualObjectSize>")
    );

    let checksummed = f
        .send(
            f.request("GET", &input_path())
                .header("x-amz-checksum-mode", "ENABLED"),
        )
        .await;
    assert_eq!(
        checksummed.header("x-amz-checksum-sha256"),
        Some(aws_smithy_types::base64::encode(Sha256::digest(&bytes)).as_str())
    );
    assert_eq!(
        checksummed.header("x-amz-checksum-type"),
        Some("FULL_OBJECT")
    );

    let head = f.send(f.request("HEAD", &input_path())).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("100"));
    assert_eq!(head.body.as_deref(), Ok(&[][..]));
    assert_eq!(head.header("etag"), whole.header("etag"));
    assert_eq!(
        f.emulator.store_call_counts()[&StoreOperation::GetObject],
        7
    );
}

#[tokio::test]
async fn an_output_artifact_is_written_with_its_encryption_and_checksums() {
    let f = fixture();
    let bytes = b"the build output".to_vec();
    let sha256 = aws_smithy_types::base64::encode(Sha256::digest(&bytes));
    let answer = f
        .send(
            f.request("PUT", &output_path())
                .header("content-type", "application/zip")
                .header("x-amz-server-side-encryption", "aws:kms")
                .header(
                    "x-amz-server-side-encryption-aws-kms-key-id",
                    "arn:aws:kms:us-east-1:123456789012:key/k1",
                )
                .header("x-amz-checksum-sha256", sha256.clone())
                .header(
                    "content-md5",
                    aws_smithy_types::base64::encode(md5::Md5::digest(&bytes)),
                )
                .body(bytes.clone()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&bytes)));
    assert_eq!(answer.header("etag"), Some(etag.as_str()));
    assert_eq!(
        answer.header("x-amz-server-side-encryption"),
        Some("aws:kms")
    );
    assert_eq!(
        answer.header("x-amz-checksum-sha256"),
        Some(sha256.as_str())
    );

    let object = f.object(OUTPUT_KEY).expect("stored");
    assert_eq!(object.content.to_vec(), bytes);
    assert_eq!(object.content_type.as_deref(), Some("application/zip"));
    assert_eq!(
        object.encryption,
        Encryption {
            algorithm: Some("aws:kms".to_owned()),
            kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/k1".to_owned()),
        }
    );
    assert_eq!(object.checksums.sha256.as_deref(), Some(sha256.as_str()));

    // An unsigned payload is accepted as such.
    let unsigned = f
        .send(
            f.request("PUT", &output_path())
                .body(b"v2".to_vec())
                .signed_as(Sign::Unsigned),
        )
        .await;
    assert_eq!(unsigned.status, StatusCode::OK);
    assert_eq!(f.object(OUTPUT_KEY).unwrap().content.to_vec(), b"v2");
}

#[tokio::test]
async fn a_body_that_is_not_what_its_headers_say_is_refused_and_not_stored() {
    let f = fixture();
    let other = aws_smithy_types::base64::encode(Sha256::digest(b"other"));
    let cases = [
        ("x-amz-checksum-sha256", other, "BadDigest"),
        (
            "content-md5",
            aws_smithy_types::base64::encode(md5::Md5::digest(b"other")),
            "BadDigest",
        ),
        (
            "x-amz-checksum-crc32",
            aws_smithy_types::base64::encode(crc32fast::hash(b"other").to_be_bytes()),
            "BadDigest",
        ),
        ("content-md5", "not base64!".to_owned(), "InvalidDigest"),
        (
            "x-amz-server-side-encryption",
            "rot13".to_owned(),
            "InvalidArgument",
        ),
    ];
    for (name, value, code) in cases {
        let answer = f
            .send(
                f.request("PUT", &output_path())
                    .header(name, value)
                    .body(b"bytes".to_vec()),
            )
            .await;
        answer.assert_error(400, code);
    }
    // The declared payload hash must be the body's: signed over one body, sent with another.
    let mut request = f
        .request("PUT", &output_path())
        .body(b"signed".to_vec())
        .build();
    *request.body_mut() = Body::from("sent");
    let answer = send_built(&f.store, request).await;
    answer.assert_error(400, "XAmzContentSHA256Mismatch");
    assert!(f.object(OUTPUT_KEY).is_none());
}

async fn send_built(store: &Store, request: Request<Body>) -> Answer {
    let response = store.handle(request).await;
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: axum::body::to_bytes(body, usize::MAX)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string()),
        dropped: false,
    }
}

#[tokio::test]
async fn the_credentials_reach_only_the_jobs_artifacts_each_way() {
    let f = fixture();
    f.put_input(b"zip");
    f.emulator.objects().put(
        &location(OUTPUT_KEY),
        Object::new(b"out".to_vec(), "application/zip"),
    );
    // Outputs are not readable, inputs not writable, other keys neither.
    f.send(f.request("GET", &output_path()))
        .await
        .assert_error(403, "AccessDenied");
    f.send(f.request("PUT", &input_path()).body(b"x".to_vec()))
        .await
        .assert_error(403, "AccessDenied");
    f.send(f.request("POST", &format!("{}?uploads", input_path())))
        .await
        .assert_error(403, "AccessDenied");
    f.send(f.request("GET", &format!("/{BUCKET}/pipeline/another-job.zip")))
        .await
        .assert_error(403, "AccessDenied");
    f.send(f.request("GET", &format!("/no-such-bucket/{INPUT_KEY}")))
        .await
        .assert_error(404, "NoSuchBucket");
    assert_eq!(f.object(INPUT_KEY).unwrap().content.to_vec(), b"zip");

    // A HEAD is refused with its status alone.
    let head = f.send(f.request("HEAD", &output_path())).await;
    assert_eq!(head.status, StatusCode::FORBIDDEN);
    assert_eq!(head.body.as_deref(), Ok(&[][..]));
}

#[tokio::test]
async fn an_input_without_an_object_is_no_such_key() {
    let f = fixture();
    let answer = f.send(f.request("GET", &input_path())).await;
    answer.assert_error(404, "NoSuchKey");
    assert!(answer.text().contains(&format!("<Key>{INPUT_KEY}</Key>")));
}

#[tokio::test]
async fn unknown_keys_wrong_tokens_and_wrong_secrets_are_refused_as_s3_refuses_them() {
    let f = fixture();
    f.put_input(b"zip");
    let mut unknown = f.request("GET", &input_path());
    unknown.access_key_id = "ASIANEVERISSUED00000".to_owned();
    f.send(unknown)
        .await
        .assert_error(403, "InvalidAccessKeyId");

    let mut wrong_token = f.request("GET", &input_path());
    wrong_token.token = Some("another-token".to_owned());
    f.send(wrong_token).await.assert_error(400, "InvalidToken");

    let mut no_token = f.request("GET", &input_path());
    no_token.token = None;
    f.send(no_token)
        .await
        .assert_error(403, "InvalidAccessKeyId");

    let mut wrong_secret = f.request("GET", &input_path());
    wrong_secret.secret = "not-the-secret".to_owned();
    f.send(wrong_secret)
        .await
        .assert_error(403, "SignatureDoesNotMatch");

    let unsigned = Request::builder()
        .uri(format!("http://127.0.0.1:4598{}", input_path()))
        .body(Body::empty())
        .unwrap();
    send_built(&f.store, unsigned)
        .await
        .assert_error(403, "AccessDenied");
    assert_eq!(
        f.emulator.store_call_counts()[&StoreOperation::GetObject],
        0,
        "only authenticated requests are counted"
    );
}

#[tokio::test]
async fn expired_credentials_are_expired_token() {
    let f = fixture_with(Duration::ZERO, true);
    f.put_input(b"zip");
    f.send(f.request("GET", &input_path()))
        .await
        .assert_error(400, "ExpiredToken");
}

#[tokio::test]
async fn the_credentials_work_only_while_the_job_is_in_progress() {
    let dispatched = fixture_with(Duration::from_secs(900), false);
    dispatched.put_input(b"zip");
    dispatched
        .send(dispatched.request("GET", &input_path()))
        .await
        .assert_error(403, "AccessDenied");

    let f = fixture();
    f.put_input(b"zip");
    assert_eq!(
        f.send(f.request("GET", &input_path())).await.status,
        StatusCode::OK
    );
    f.emulator
        .succeed(PutJobSuccessResultInput {
            job_id: f.job.clone(),
            current_revision: None,
            continuation_token: None,
            execution_details: None,
            output_variables: Default::default(),
        })
        .unwrap();
    f.send(f.request("GET", &input_path()))
        .await
        .assert_error(403, "AccessDenied");
    assert!(!f.nonce.is_empty());
}

fn xml_text(text: &str, element: &str) -> String {
    text.split(&format!("<{element}>"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("</{element}>")).next())
        .unwrap_or_default()
        .to_owned()
}

fn complete_body(parts: &[(u32, &str)]) -> String {
    let mut body =
        String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (number, etag) in parts {
        body.push_str(&format!(
            "<Part><ETag>{}</ETag><PartNumber>{number}</PartNumber></Part>",
            etag.replace('"', "&quot;")
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

#[tokio::test]
async fn a_multipart_upload_follows_s3s_rules() {
    let f = fixture();
    let created = f
        .send(
            f.request("POST", &format!("{}?uploads", output_path()))
                .header("x-amz-server-side-encryption", "aws:kms")
                .header("x-amz-server-side-encryption-aws-kms-key-id", "key-1"),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    assert!(created.text().contains("<InitiateMultipartUploadResult"));
    assert_eq!(xml_text(&created.text(), "Key"), OUTPUT_KEY);
    let upload_id = xml_text(&created.text(), "UploadId");
    let part_path = |n: u32| format!("{}?partNumber={n}&uploadId={upload_id}", output_path());

    let big = vec![7u8; MIN_PART_SIZE as usize];
    let first = f
        .send(f.request("PUT", &part_path(1)).body(big.clone()))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let small = f
        .send(f.request("PUT", &part_path(2)).body(b"tail".to_vec()))
        .await;
    let last = f
        .send(f.request("PUT", &part_path(3)).body(b"end".to_vec()))
        .await;
    let etag = |answer: &Answer| answer.header("etag").unwrap().to_owned();

    f.send(f.request("PUT", &part_path(0)).body(b"x".to_vec()))
        .await
        .assert_error(400, "InvalidArgument");
    f.send(
        f.request(
            "PUT",
            &format!("{}?partNumber=1&uploadId=nope", output_path()),
        )
        .body(b"x".to_vec()),
    )
    .await
    .assert_error(404, "NoSuchUpload");

    let complete = |parts: Vec<(u32, String)>| {
        let borrowed: Vec<(u32, &str)> = parts.iter().map(|(n, e)| (*n, e.as_str())).collect();
        f.request("POST", &format!("{}?uploadId={upload_id}", output_path()))
            .body(complete_body(&borrowed))
    };
    f.send(complete(vec![
        (1, etag(&first)),
        (2, etag(&small)),
        (3, etag(&last)),
    ]))
    .await
    .assert_error(400, "EntityTooSmall");
    f.send(complete(vec![(1, etag(&first)), (2, etag(&last))]))
        .await
        .assert_error(400, "InvalidPart");
    f.send(complete(vec![(3, etag(&last)), (1, etag(&first))]))
        .await
        .assert_error(400, "InvalidPartOrder");
    f.send(
        f.request("POST", &format!("{}?uploadId={upload_id}", output_path()))
            .body("<nope/>"),
    )
    .await
    .assert_error(400, "MalformedXML");
    assert!(f.object(OUTPUT_KEY).is_none(), "nothing until completed");

    let done = f
        .send(complete(vec![(1, etag(&first)), (3, etag(&last))]))
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let object = f.object(OUTPUT_KEY).unwrap();
    assert_eq!(object.content.len(), MIN_PART_SIZE + 3);
    assert!(object.etag.ends_with("-2\""), "{}", object.etag);
    assert_eq!(
        xml_text(&done.text(), "ETag"),
        object.etag.replace('"', "&quot;")
    );
    assert_eq!(object.encryption.kms_key_id.as_deref(), Some("key-1"));
    assert_eq!(object.parts, 2);
}

#[tokio::test]
async fn an_aborted_upload_leaves_nothing() {
    let f = fixture();
    let created = f
        .send(f.request("POST", &format!("{}?uploads", output_path())))
        .await;
    let upload_id = xml_text(&created.text(), "UploadId");
    f.send(
        f.request(
            "PUT",
            &format!("{}?partNumber=1&uploadId={upload_id}", output_path()),
        )
        .body(b"part".to_vec()),
    )
    .await;
    let aborted = f
        .send(f.request("DELETE", &format!("{}?uploadId={upload_id}", output_path())))
        .await;
    assert_eq!(aborted.status, StatusCode::NO_CONTENT);
    assert!(f.object(OUTPUT_KEY).is_none());
    assert_eq!(f.emulator.objects().uploads_in_progress(), 0);
    f.send(f.request("DELETE", &format!("{}?uploadId={upload_id}", output_path())))
        .await
        .assert_error(404, "NoSuchUpload");
}

#[tokio::test]
async fn aws_chunked_uploads_are_not_implemented() {
    let f = fixture();
    let answer = f
        .send(
            f.request("PUT", &output_path())
                .header("content-encoding", "aws-chunked")
                .header("x-amz-decoded-content-length", "5")
                .body(b"bytes".to_vec()),
        )
        .await;
    answer.assert_error(501, "NotImplemented");
    assert!(answer.text().contains("aws-chunked"));
    assert!(f.object(OUTPUT_KEY).is_none());
}

#[tokio::test]
async fn other_operations_and_paths_are_refused_plainly() {
    let f = fixture();
    for (method, path, status, code) in [
        ("GET", "/".to_owned(), 501, "NotImplemented"),
        ("GET", format!("/{BUCKET}"), 501, "NotImplemented"),
        (
            "GET",
            format!("{}?acl", input_path()),
            501,
            "NotImplemented",
        ),
        ("DELETE", input_path(), 501, "NotImplemented"),
        ("PATCH", input_path(), 405, "MethodNotAllowed"),
    ] {
        f.send(f.request(method, &path))
            .await
            .assert_error(status, code);
    }
}

#[tokio::test]
async fn injected_faults_are_answered_as_s3_would() {
    let f = fixture();
    f.put_input(&[5u8; 64]);
    let set = |plan: &str| f.emulator.set_faults(FaultPlan::parse(plan).unwrap());

    set("PutObject:http503=1;UploadPart:http500=1");
    f.send(f.request("PUT", &output_path()).body(b"x".to_vec()))
        .await
        .assert_error(503, "SlowDown");
    assert!(
        f.object(OUTPUT_KEY).is_none(),
        "a 503 strikes before the write"
    );

    set("PutObject:drop=1");
    let dropped = f
        .send(f.request("PUT", &output_path()).body(b"x".to_vec()))
        .await;
    assert!(dropped.dropped);
    assert!(
        f.object(OUTPUT_KEY).is_some(),
        "a drop strikes after the write"
    );

    set("GetObject:drop=1");
    assert!(f.send(f.request("GET", &input_path())).await.dropped);

    set("GetObject:truncate=1");
    let truncated = f.send(f.request("GET", &input_path())).await;
    assert_eq!(truncated.header("content-length"), Some("64"));
    assert!(truncated.body.is_err(), "the body breaks off");

    set("GetObject:malformed=1");
    let corrupted = f.send(f.request("GET", &input_path())).await;
    let body = corrupted.body.unwrap();
    assert_eq!(body.len(), 64);
    assert_eq!(body.iter().filter(|b| **b != 5).count(), 1);

    set("*:http500=1");
    assert_eq!(
        f.send(f.request("GET", &input_path())).await.status,
        StatusCode::OK,
        "`*` is CodePipeline's operations only"
    );
}
