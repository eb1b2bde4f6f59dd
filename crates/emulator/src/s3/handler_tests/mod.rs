//! The store through its handler: requests signed as aws-sdk-s3 signs them, with the credentials
//! the engine issued for a job. Here the fixture and the signed requests; the tests are by S3
//! operation, with the access rules and what is refused on their own.

mod access;
mod get_object;
mod multipart;
mod put_object;
mod refusals;

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
        self.emulator
            .objects()
            .put(
                &location(INPUT_KEY),
                Object::new(bytes.to_vec(), "application/zip"),
            )
            .expect("room in the store");
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
