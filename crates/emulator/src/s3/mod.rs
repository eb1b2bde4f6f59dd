//! The artifact store's S3 REST API, where a job's artifacts are downloaded and uploaded with the job's temporary `artifactCredentials`, exactly
//! as a worker (or the gateway, on its behalf) does against the pipeline's artifact bucket.
//!
//! It serves, path-style only (`http://ADDR/{bucket}/{key}`), on a listener of its own (S3's
//! paths would collide with the front's gRPC paths):
//!
//! | operation | request |
//! |---|---|
//! | GetObject | `GET /{bucket}/{key}`; `Range: bytes=a-b`, `bytes=a-`, `bytes=-n` (206); `x-amz-checksum-mode: ENABLED` adds the stored checksums |
//! | HeadObject | `HEAD /{bucket}/{key}` |
//! | PutObject | `PUT /{bucket}/{key}`; records `x-amz-server-side-encryption`(`-aws-kms-key-id`); verifies `Content-MD5`, `x-amz-checksum-sha256`, `x-amz-checksum-crc32` when sent |
//! | CreateMultipartUpload | `POST /{bucket}/{key}?uploads` |
//! | UploadPart | `PUT /{bucket}/{key}?partNumber=N&uploadId=U` |
//! | CompleteMultipartUpload | `POST /{bucket}/{key}?uploadId=U`; parts below 5 MiB but the last are EntityTooSmall; ETag `"<md5 of the parts' md5s>-N"` |
//! | AbortMultipartUpload | `DELETE /{bucket}/{key}?uploadId=U` |
//!
//! Every request is SigV4-checked (service `s3`, the front's region) against the credentials
//! the engine issued with a job (`x-amz-content-sha256` a hex SHA-256, checked against the body
//! as it is read, or `UNSIGNED-PAYLOAD`). Then the access rules, as CodePipeline scopes a job's
//! credentials:
//!
//! - a key never issued is InvalidAccessKeyId; a session token not the key's is InvalidToken
//!   (none at all: InvalidAccessKeyId, as S3 answers); an expired credential is ExpiredToken;
//! - the credentials only work while their job is being worked on (InProgress): before it is
//!   acknowledged, or once it has a result (or timed out), every request is AccessDenied;
//! - they reach only their job's artifacts: its input artifacts' objects may be read (GET,
//!   HEAD), its output artifacts' objects written (PUT, multipart); any other key is
//!   AccessDenied. An input artifact's key with no object is NoSuchKey.
//!
//! Errors are S3's REST XML (`<Error><Code>..</Code><Message>..</Message><RequestId>..`) with
//! S3's statuses (one table: [`S3Error`]), and every answer carries `x-amz-request-id`. aws-chunked uploads
//! (`Content-Encoding: aws-chunked`, `STREAMING-*` payload hashes) are refused with
//! NotImplemented: the gateway sends whole bodies, and the AWS SDKs do too for in-memory bodies
//! (or with request checksum calculation `when_required`). A PutObject or part may be 5 GiB; a
//! body over that is EntityTooLarge, read no further.
//!
//! The fault plan may name the store's operations ([`StoreOperation`]): `UploadPart:http503=0.5`
//! answers half the parts `503 SlowDown`, `GetObject:drop=1` closes every download's connection.
//!
//! One request in, S3's answer out: every request is routed to its operation, SigV4-checked
//! against the credentials the engine issued, held to the job's access rules, run against the
//! objects ([`crate::store`]), and answered as S3 answers (errors through [`S3Error`]).
//! Each step has its file: `routing.rs`, `auth.rs` (SigV4 and the access rules), `body.rs`
//! (what the body promises, read and hashed), `operations.rs` and `answer.rs`.

mod answer;
mod auth;
mod body;
mod error;
#[cfg(test)]
mod handler_tests;
mod operations;
mod routing;
mod xml;

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response};

pub use error::S3Error;

use crate::{Emulator, store::StoreOperation};
use answer::{Answer, RequestIds, error_response};
use auth::authorize;
use body::{declared_payload, drain};
use codepipeline_job_port::domain::S3Location;
use operations::Call;
use routing::{parse_path, query_params, route, with_host};

/// The largest PutObject body: 5 GiB, as S3 allows.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The largest UploadPart body: 5 GiB, as S3 allows.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The largest CompleteMultipartUpload body read.
const MAX_XML_BODY: u64 = 1024 * 1024;
/// How much of a refused request's body is read (and dropped) so the client sees the answer
/// rather than a reset; a longer body has its connection closed instead.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// What the store accepts.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The region requests must be signed for (the front's).
    pub region: String,
}

/// The artifact store over the engine's objects and issued credentials. Cheap to clone: every
/// connection shares one.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    emulator: Arc<Emulator>,
    config: StoreConfig,
}

/// A request's body, as the store reads it.
pub trait RequestBody: http_body::Body<Data = Bytes> + Unpin + Send {}

impl<B: http_body::Body<Data = Bytes> + Unpin + Send> RequestBody for B {}

impl Store {
    /// The store for this engine.
    pub fn new(emulator: Arc<Emulator>, config: StoreConfig) -> Self {
        Self {
            inner: Arc::new(Inner { emulator, config }),
        }
    }

    /// Answers one request. A response carrying [`DropConnection`] in its extensions must not be
    /// sent: its connection is to be closed unanswered (an injected `drop` fault).
    ///
    /// [`DropConnection`]: crate::faults::DropConnection
    pub async fn handle<B: RequestBody>(&self, request: Request<B>) -> Response<Body> {
        let (parts, mut body) = request.into_parts();
        let ids = RequestIds::new();
        let head = parts.method == Method::HEAD;
        match self.serve(&parts, &mut body).await {
            Ok(answer) => answer.into_response(&ids),
            Err(error) => {
                drain(&mut body).await;
                error_response(&error, &ids, head)
            }
        }
    }

    async fn serve<B: RequestBody>(
        &self,
        parts: &http::request::Parts,
        body: &mut B,
    ) -> Result<Answer, S3Error> {
        let emulator = &self.inner.emulator;
        let (bucket, key) = parse_path(parts.uri.path())?;
        let params = query_params(parts.uri.query().unwrap_or(""));
        let operation = route(&parts.method, &params, &parts.headers)?;
        let headers = with_host(parts);
        let access = self.authenticate(parts, &headers)?;
        let declared = declared_payload(&headers)?;
        if !emulator.has_bucket(&bucket) {
            return Err(S3Error::no_such_bucket(&bucket));
        }
        let location = S3Location {
            bucket_name: bucket,
            object_key: key,
        };
        authorize(&access, operation, &location)?;
        let fault = emulator.enter_store(operation).await;
        if let Some(error) = fault.and_then(S3Error::from_fault) {
            return Err(error);
        }
        let request = Call {
            store: self,
            headers: &headers,
            params: &params,
            location,
            declared,
        };
        let answer = match operation {
            StoreOperation::GetObject => request.get(true)?,
            StoreOperation::HeadObject => request.get(false)?,
            StoreOperation::PutObject => request.put(body).await?,
            StoreOperation::CreateMultipartUpload => request.create_upload()?,
            StoreOperation::UploadPart => request.upload_part(body).await?,
            StoreOperation::CompleteMultipartUpload => request.complete_upload(body).await?,
            StoreOperation::AbortMultipartUpload => request.abort_upload()?,
        };
        Ok(match fault {
            Some(fault) => answer.struck_by(fault),
            None => answer,
        })
    }
}
