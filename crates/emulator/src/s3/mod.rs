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

use std::{pin::Pin, sync::Arc, time::SystemTime};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use md5::Md5;
use sha2::{Digest, Sha256};

mod error;
#[cfg(test)]
mod handler_tests;
mod xml;

pub use error::S3Error;

use crate::store::{
    Checksums, Content, Encryption, MAX_PART_NUMBER, Object, Part, StoreOperation, UploadSettings,
    quoted_hex,
};
use crate::{
    ArtifactAccess, Emulator,
    faults::{DropConnection, Fault},
    sigv4::{self, Payload, Scope, SignedRequest, StaticCredentials, UNSIGNED_PAYLOAD},
};
use codepipeline_job_port::domain::{JobStatus, S3Location};

/// The largest PutObject body: 5 GiB, as S3 allows.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The largest UploadPart body: 5 GiB, as S3 allows.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The largest CompleteMultipartUpload body read.
const MAX_XML_BODY: u64 = 1024 * 1024;
/// How much of a refused request's body is read (and dropped) so the client sees the answer
/// rather than a reset; a longer body has its connection closed instead.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// The name S3 requests are signed for.
const SIGNING_NAME: &str = "s3";

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

    /// Who signed the request: the issued credential and what its job may do, once the
    /// signature is checked.
    fn authenticate(
        &self,
        parts: &http::request::Parts,
        headers: &HeaderMap,
    ) -> Result<ArtifactAccess, S3Error> {
        let region = &self.inner.config.region;
        let access_key_id = sigv4::access_key_id(headers)
            .map_err(|failure| S3Error::from_signature(&failure, "", region))?;
        let access = self
            .inner
            .emulator
            .artifact_access(access_key_id)
            .ok_or_else(|| S3Error::invalid_access_key_id(access_key_id))?;
        let now = SystemTime::now();
        if access.credentials.is_expired(now) {
            return Err(S3Error::expired_token());
        }
        let credentials = StaticCredentials {
            access_key_id: access.credentials.access_key_id.clone(),
            secret_access_key: access.credentials.secret_access_key.clone(),
            session_token: Some(access.credentials.session_token.clone()),
        };
        let signed = SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers,
            payload: Payload::Declared,
        };
        let scope = Scope {
            region,
            service: SIGNING_NAME,
        };
        sigv4::verify(&signed, &credentials, scope, now)
            .map_err(|failure| S3Error::from_signature(&failure, access_key_id, region))?;
        Ok(access)
    }
}

/// The job's credentials work only while the job is being worked on (InProgress), and only on
/// its own artifacts: its inputs may be read, its outputs written.
fn authorize(
    access: &ArtifactAccess,
    operation: StoreOperation,
    location: &S3Location,
) -> Result<(), S3Error> {
    if access.status != JobStatus::InProgress {
        return Err(S3Error::access_denied());
    }
    let allowed = if operation.reads() {
        &access.inputs
    } else {
        &access.outputs
    };
    if allowed.contains(location) {
        Ok(())
    } else {
        Err(S3Error::access_denied())
    }
}

/// `/{bucket}/{key}`, decoded: path-style only.
fn parse_path(path: &str) -> Result<(String, String), S3Error> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(S3Error::not_implemented(
            "ListBuckets is not served: the emulator's store serves objects, path-style (/bucket/key)",
        ));
    }
    if key.is_empty() {
        return Err(S3Error::not_implemented(
            "Bucket operations are not served: the emulator's store serves objects, path-style (/bucket/key)",
        ));
    }
    let decode = |text: &str| {
        String::from_utf8(sigv4::percent_decode(text))
            .map_err(|_| S3Error::invalid_request("The path is not UTF-8 once decoded"))
    };
    Ok((decode(bucket)?, decode(key)?))
}

/// The query's parameters, decoded; `?uploads` has the empty value.
fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |text: &str| String::from_utf8_lossy(&sigv4::percent_decode(text)).into_owned();
            (decode(name), decode(value))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(given, _)| given == name)
        .map(|(_, value)| value.as_str())
}

/// The parameters that do not name another operation (a subresource).
fn is_plain_parameter(name: &str) -> bool {
    matches!(name, "x-id" | "uploadId" | "partNumber" | "uploads") || name.starts_with("response-")
}

/// Which operation a request is.
fn route(
    method: &Method,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Result<StoreOperation, S3Error> {
    if let Some((name, _)) = params.iter().find(|(name, _)| !is_plain_parameter(name)) {
        return Err(S3Error::not_implemented(format!(
            "The ?{name} subresource is not served by the emulator's store"
        )));
    }
    let has = |name: &str| param(params, name).is_some();
    let operation = match *method {
        Method::GET if has("uploadId") => {
            return Err(S3Error::not_implemented("ListParts is not served"));
        }
        Method::GET => StoreOperation::GetObject,
        Method::HEAD => StoreOperation::HeadObject,
        Method::PUT if headers.contains_key("x-amz-copy-source") => {
            return Err(S3Error::not_implemented(
                "CopyObject and UploadPartCopy are not served",
            ));
        }
        Method::PUT if has("uploadId") || has("partNumber") => StoreOperation::UploadPart,
        Method::PUT => StoreOperation::PutObject,
        Method::POST if has("uploads") => StoreOperation::CreateMultipartUpload,
        Method::POST if has("uploadId") => StoreOperation::CompleteMultipartUpload,
        Method::DELETE if has("uploadId") => StoreOperation::AbortMultipartUpload,
        Method::POST | Method::DELETE => {
            return Err(S3Error::not_implemented(format!(
                "{method} on an object is not served: only multipart uploads are"
            )));
        }
        _ => return Err(S3Error::method_not_allowed(method.as_str())),
    };
    Ok(operation)
}

/// The headers, with `host` from `:authority` for HTTP/2 callers (SigV4 signs it as `host`).
fn with_host(parts: &http::request::Parts) -> HeaderMap {
    let mut headers = parts.headers.clone();
    if !headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    headers
}

/// What `x-amz-content-sha256` promises about the body.
#[derive(Debug, Clone, Copy)]
enum Declared {
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
    /// The body's SHA-256.
    Sha256([u8; 32]),
}

/// Reads `x-amz-content-sha256` (present: the signature check required it) and
/// `Content-Encoding`; aws-chunked uploads are refused.
fn declared_payload(headers: &HeaderMap) -> Result<Declared, S3Error> {
    let chunked = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| coding.trim().eq_ignore_ascii_case("aws-chunked"));
    let value = header_text(headers, "x-amz-content-sha256").unwrap_or_default();
    if chunked || value.starts_with("STREAMING-") {
        return Err(S3Error::not_implemented(
            "aws-chunked uploads (Content-Encoding: aws-chunked, x-amz-content-sha256: STREAMING-*) are not implemented by the emulator's store: send the body whole, with x-amz-content-sha256 its SHA-256 or UNSIGNED-PAYLOAD, and checksums as headers (AWS SDKs: an in-memory body, or request checksum calculation `when_required`)",
        ));
    }
    if value == UNSIGNED_PAYLOAD {
        return Ok(Declared::Unsigned);
    }
    let mut hash = [0u8; 32];
    match hex::decode_to_slice(value, &mut hash) {
        Ok(()) => Ok(Declared::Sha256(hash)),
        Err(_) => Err(S3Error::invalid_argument(
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-..., or a valid sha256 value.",
            "x-amz-content-sha256",
            value,
        )),
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The digests a body must match, from its headers.
#[derive(Default)]
struct Expected {
    md5: Option<[u8; 16]>,
    sha256: Option<(String, [u8; 32])>,
    crc32: Option<(String, u32)>,
}

impl Expected {
    fn from_headers(headers: &HeaderMap) -> Result<Self, S3Error> {
        let base64 = |name: &str| -> Result<Option<(String, Vec<u8>)>, S3Error> {
            header_text(headers, name)
                .map(|text| {
                    aws_smithy_types::base64::decode(text)
                        .map(|bytes| (text.to_owned(), bytes))
                        .map_err(|_| {
                            S3Error::invalid_request(format!("Value for {name} header is invalid."))
                        })
                })
                .transpose()
        };
        let md5 = match header_text(headers, "content-md5") {
            None => None,
            Some(text) => Some(
                aws_smithy_types::base64::decode(text)
                    .ok()
                    .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
                    .ok_or_else(S3Error::invalid_digest)?,
            ),
        };
        let sha256 = base64("x-amz-checksum-sha256")?
            .map(|(text, bytes)| {
                <[u8; 32]>::try_from(bytes)
                    .map(|digest| (text, digest))
                    .map_err(|_| {
                        S3Error::invalid_request(
                            "Value for x-amz-checksum-sha256 header is invalid.",
                        )
                    })
            })
            .transpose()?;
        let crc32 = base64("x-amz-checksum-crc32")?
            .map(|(text, bytes)| {
                <[u8; 4]>::try_from(bytes)
                    .map(|digest| (text, u32::from_be_bytes(digest)))
                    .map_err(|_| {
                        S3Error::invalid_request(
                            "Value for x-amz-checksum-crc32 header is invalid.",
                        )
                    })
            })
            .transpose()?;
        Ok(Self { md5, sha256, crc32 })
    }
}

/// A body read whole, with its digests.
struct Received {
    content: Content,
    md5: [u8; 16],
    sha256: Option<[u8; 32]>,
    crc32: Option<u32>,
}

impl Received {
    /// Checks the body against what its headers declared.
    fn check(&self, declared: Declared, expected: &Expected) -> Result<(), S3Error> {
        if let Declared::Sha256(hash) = declared
            && self.sha256 != Some(hash)
        {
            return Err(S3Error::content_sha256_mismatch());
        }
        if expected.md5.is_some_and(|md5| md5 != self.md5) {
            return Err(S3Error::bad_digest("Content-MD5"));
        }
        if expected
            .sha256
            .as_ref()
            .is_some_and(|(_, sha256)| Some(*sha256) != self.sha256)
        {
            return Err(S3Error::bad_digest("x-amz-checksum-sha256"));
        }
        if expected
            .crc32
            .as_ref()
            .is_some_and(|(_, crc32)| Some(*crc32) != self.crc32)
        {
            return Err(S3Error::bad_digest("x-amz-checksum-crc32"));
        }
        Ok(())
    }
}

async fn next_frame<B: RequestBody>(body: &mut B) -> Option<Result<Option<Bytes>, ()>> {
    let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
    Some(frame.map(|frame| frame.into_data().ok()).map_err(drop))
}

/// Reads the body whole, at most `limit` bytes, hashing as it goes: SHA-256 only when `sha256`
/// (a declared hash or checksum needs it), CRC32 only when `crc32`.
async fn read_body<B: RequestBody>(
    body: &mut B,
    headers: &HeaderMap,
    limit: u64,
    sha256: bool,
    crc32: bool,
) -> Result<Received, S3Error> {
    if let Some(length) = header_text(headers, "content-length").and_then(|n| n.parse::<u64>().ok())
        && length > limit
    {
        return Err(S3Error::entity_too_large(length, limit));
    }
    let mut content = Content::default();
    let mut md5 = Md5::new();
    let mut sha = sha256.then(Sha256::new);
    let mut crc = crc32.then(crc32fast::Hasher::new);
    while let Some(frame) = next_frame(body).await {
        let Some(data) = frame.map_err(|()| S3Error::incomplete_body())? else {
            continue;
        };
        if content.len() + data.len() as u64 > limit {
            return Err(S3Error::entity_too_large(
                content.len() + data.len() as u64,
                limit,
            ));
        }
        md5.update(&data);
        if let Some(sha) = &mut sha {
            sha.update(&data);
        }
        if let Some(crc) = &mut crc {
            crc.update(&data);
        }
        content.push(data);
    }
    Ok(Received {
        content,
        md5: md5.finalize().into(),
        sha256: sha.map(|sha| sha.finalize().into()),
        crc32: crc.map(crc32fast::Hasher::finalize),
    })
}

/// Reads what is left of a refused request's body, up to [`DRAIN_LIMIT`].
async fn drain<B: RequestBody>(body: &mut B) {
    let mut read = 0u64;
    while read < DRAIN_LIMIT {
        match next_frame(body).await {
            Some(Ok(Some(data))) => read += data.len() as u64,
            Some(Ok(None)) => {}
            Some(Err(())) | None => return,
        }
    }
}

/// `x-amz-server-side-encryption` and its KMS key, checked as S3 checks them.
fn encryption(headers: &HeaderMap) -> Result<Encryption, S3Error> {
    let algorithm = header_text(headers, "x-amz-server-side-encryption");
    let kms_key_id = header_text(headers, "x-amz-server-side-encryption-aws-kms-key-id");
    if let Some(algorithm) = algorithm
        && !matches!(algorithm, "aws:kms" | "aws:kms:dsse" | "AES256")
    {
        return Err(S3Error::invalid_argument(
            "The encryption method specified is not supported",
            "x-amz-server-side-encryption",
            algorithm,
        ));
    }
    if kms_key_id.is_some() && !algorithm.is_some_and(|algorithm| algorithm.starts_with("aws:kms"))
    {
        return Err(S3Error::invalid_argument(
            "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
            "x-amz-server-side-encryption-aws-kms-key-id",
            kms_key_id.unwrap_or_default(),
        ));
    }
    Ok(Encryption {
        algorithm: algorithm.map(str::to_owned),
        kms_key_id: kms_key_id.map(str::to_owned),
    })
}

/// One authorised request against the objects.
struct Call<'a> {
    store: &'a Store,
    headers: &'a HeaderMap,
    params: &'a [(String, String)],
    location: S3Location,
    declared: Declared,
}

impl Call<'_> {
    fn objects(&self) -> &crate::store::Objects {
        self.store.inner.emulator.objects()
    }

    /// GetObject (`body`) or HeadObject.
    fn get(&self, body: bool) -> Result<Answer, S3Error> {
        let object = self
            .objects()
            .get(&self.location)
            .ok_or_else(|| S3Error::no_such_key(&self.location.object_key))?;
        let size = object.content.len();
        let range = match header_text(self.headers, "range") {
            Some(text) => parse_range(text, size)?,
            None => None,
        };
        let mut answer = Answer::new(StatusCode::OK);
        answer.header("accept-ranges", "bytes");
        answer.header("etag", &object.etag);
        answer.header("last-modified", &http_date(object.last_modified));
        answer.header(
            "content-type",
            object
                .content_type
                .as_deref()
                .unwrap_or("binary/octet-stream"),
        );
        answer.encryption(&object.encryption);
        let (start, end) = range.unwrap_or((0, size));
        if let Some((start, end)) = range {
            answer.status = StatusCode::PARTIAL_CONTENT;
            answer.header(
                "content-range",
                &format!("bytes {start}-{}/{size}", end - 1),
            );
        }
        let checksum_mode = header_text(self.headers, "x-amz-checksum-mode")
            .is_some_and(|mode| mode.eq_ignore_ascii_case("ENABLED"));
        // A range has no checksum of its own: S3 sends the object's only with the whole object.
        if checksum_mode && range.is_none() {
            answer.checksums(&object.checksums);
        }
        if body {
            answer.body = AnswerBody::Object(object.content.slice(start, end), end - start);
        } else {
            answer.header("content-length", &(end - start).to_string());
        }
        Ok(answer)
    }

    async fn put<B: RequestBody>(&self, body: &mut B) -> Result<Answer, S3Error> {
        let encryption = encryption(self.headers)?;
        let expected = Expected::from_headers(self.headers)?;
        let received = self.read(body, MAX_OBJECT_SIZE, &expected).await?;
        received.check(self.declared, &expected)?;
        let object = Object {
            etag: quoted_hex(&received.md5),
            content: received.content,
            content_type: header_text(self.headers, "content-type").map(str::to_owned),
            encryption,
            checksums: sent_checksums(&expected),
            parts: 0,
            last_modified: SystemTime::now(),
        };
        let object = self.objects().put(&self.location, object);
        let mut answer = Answer::new(StatusCode::OK);
        answer.header("etag", &object.etag);
        answer.encryption(&object.encryption);
        answer.checksums(&object.checksums);
        Ok(answer)
    }

    async fn read<B: RequestBody>(
        &self,
        body: &mut B,
        limit: u64,
        expected: &Expected,
    ) -> Result<Received, S3Error> {
        let sha256 = matches!(self.declared, Declared::Sha256(_)) || expected.sha256.is_some();
        read_body(body, self.headers, limit, sha256, expected.crc32.is_some()).await
    }

    fn upload_id(&self) -> &str {
        param(self.params, "uploadId").unwrap_or_default()
    }

    fn create_upload(&self) -> Result<Answer, S3Error> {
        let encryption = encryption(self.headers)?;
        let checksum_algorithm = header_text(self.headers, "x-amz-checksum-algorithm")
            .map(|algorithm| {
                let algorithm = algorithm.to_ascii_uppercase();
                match algorithm.as_str() {
                    "CRC32" | "CRC32C" | "SHA1" | "SHA256" | "CRC64NVME" => Ok(algorithm),
                    _ => Err(S3Error::invalid_request(
                        "Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]",
                    )),
                }
            })
            .transpose()?;
        let settings = UploadSettings {
            content_type: header_text(self.headers, "content-type").map(str::to_owned),
            encryption: encryption.clone(),
            checksum_algorithm: checksum_algorithm.clone(),
        };
        let upload_id = self.objects().create_upload(&self.location, settings);
        let mut answer = Answer::xml(xml::document(
            "InitiateMultipartUploadResult",
            &[
                ("Bucket", self.location.bucket_name.clone()),
                ("Key", self.location.object_key.clone()),
                ("UploadId", upload_id),
            ],
        ));
        answer.encryption(&encryption);
        if let Some(algorithm) = checksum_algorithm {
            answer.header("x-amz-checksum-algorithm", &algorithm);
        }
        Ok(answer)
    }

    async fn upload_part<B: RequestBody>(&self, body: &mut B) -> Result<Answer, S3Error> {
        let number_text = param(self.params, "partNumber").unwrap_or_default();
        let number = number_text
            .parse::<u32>()
            .ok()
            .filter(|number| (1..=MAX_PART_NUMBER).contains(number))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Part number must be an integer between 1 and 10000, inclusive",
                    "partNumber",
                    number_text,
                )
            })?;
        let upload_id = self.upload_id();
        if !self.objects().has_upload(&self.location, upload_id) {
            return Err(S3Error::no_such_upload(upload_id));
        }
        let expected = Expected::from_headers(self.headers)?;
        let received = self.read(body, MAX_PART_SIZE, &expected).await?;
        received.check(self.declared, &expected)?;
        let part = Part {
            md5: received.md5,
            sha256: expected.sha256.as_ref().and(received.sha256),
            crc32: expected.crc32.as_ref().and(received.crc32),
            content: received.content,
        };
        let etag = self
            .objects()
            .upload_part(&self.location, upload_id, number, part)
            .map_err(|error| S3Error::from_multipart(&error, upload_id))?;
        let mut answer = Answer::new(StatusCode::OK);
        answer.header("etag", &etag);
        answer.checksums(&sent_checksums(&expected));
        Ok(answer)
    }

    async fn complete_upload<B: RequestBody>(&self, body: &mut B) -> Result<Answer, S3Error> {
        let upload_id = self.upload_id();
        if !self.objects().has_upload(&self.location, upload_id) {
            return Err(S3Error::no_such_upload(upload_id));
        }
        let received = read_body(body, self.headers, MAX_XML_BODY, true, false).await?;
        received.check(self.declared, &Expected::default())?;
        let text =
            String::from_utf8(received.content.to_vec()).map_err(|_| S3Error::malformed_xml())?;
        let listed = xml::complete_multipart_parts(&text)
            .map_err(|xml::Malformed| S3Error::malformed_xml())?;
        let object = self
            .objects()
            .complete_upload(&self.location, upload_id, &listed)
            .map_err(|error| S3Error::from_multipart(&error, upload_id))?;
        let host = header_text(self.headers, "host").unwrap_or("localhost");
        let mut children = vec![
            (
                "Location",
                format!(
                    "http://{host}/{}/{}",
                    self.location.bucket_name, self.location.object_key
                ),
            ),
            ("Bucket", self.location.bucket_name.clone()),
            ("Key", self.location.object_key.clone()),
            ("ETag", object.etag.clone()),
        ];
        if let Some(sha256) = &object.checksums.sha256 {
            children.push(("ChecksumSHA256", sha256.clone()));
        }
        if let Some(crc32) = &object.checksums.crc32 {
            children.push(("ChecksumCRC32", crc32.clone()));
        }
        let mut answer = Answer::xml(xml::document("CompleteMultipartUploadResult", &children));
        answer.encryption(&object.encryption);
        Ok(answer)
    }

    fn abort_upload(&self) -> Result<Answer, S3Error> {
        let upload_id = self.upload_id();
        self.objects()
            .abort_upload(&self.location, upload_id)
            .map_err(|error| S3Error::from_multipart(&error, upload_id))?;
        Ok(Answer::new(StatusCode::NO_CONTENT))
    }
}

/// The checksums a request sent (and that were verified), to record and echo.
fn sent_checksums(expected: &Expected) -> Checksums {
    Checksums {
        sha256: expected.sha256.as_ref().map(|(text, _)| text.clone()),
        crc32: expected.crc32.as_ref().map(|(text, _)| text.clone()),
    }
}

/// A `Range` header against an object of `size` bytes: `bytes=a-b`, `bytes=a-` or `bytes=-n`
/// as `(start, end exclusive)`. A header S3 would ignore (another unit, several ranges, not a
/// range) is `None`: the whole object. A range that starts past the end is InvalidRange.
fn parse_range(text: &str, size: u64) -> Result<Option<(u64, u64)>, S3Error> {
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = || S3Error::invalid_range(text, size);
    let parse = |n: &str| n.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => {
            let Some(n) = parse(last) else {
                return Ok(None);
            };
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            Ok(Some((size.saturating_sub(n), size)))
        }
        // bytes=a-: from a to the end.
        (false, true) => {
            let Some(start) = parse(first) else {
                return Ok(None);
            };
            if start >= size {
                return Err(unsatisfiable());
            }
            Ok(Some((start, size)))
        }
        (false, false) => {
            let (Some(start), Some(last)) = (parse(first), parse(last)) else {
                return Ok(None);
            };
            if last < start {
                return Ok(None);
            }
            if start >= size {
                return Err(unsatisfiable());
            }
            Ok(Some((start, last.min(size - 1) + 1)))
        }
        (true, true) => Ok(None),
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`), as `Last-Modified` carries it.
fn http_date(at: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from(at)
        .format(format)
        .unwrap_or_default()
}

/// A request's `x-amz-request-id` and `x-amz-id-2`.
struct RequestIds {
    request_id: String,
    host_id: String,
}

impl RequestIds {
    fn new() -> Self {
        use rand::RngExt;
        let mut rng = rand::rng();
        let request_id = format!("{:016X}", rng.random::<u64>());
        let host_bytes: [u8; 48] = std::array::from_fn(|_| rng.random());
        Self {
            request_id,
            host_id: aws_smithy_types::base64::encode(host_bytes),
        }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("x-amz-request-id", &self.request_id),
            ("x-amz-id-2", &self.host_id),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }
}

fn error_response(error: &S3Error, ids: &RequestIds, head: bool) -> Response<Body> {
    let xml = error.to_xml(&ids.request_id, &ids.host_id);
    let mut response = if head {
        // S3 answers a HEAD with the status alone.
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(xml))
    };
    *response.status_mut() = error.status;
    let headers = response.headers_mut();
    ids.apply(headers);
    if !head {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
    }
    response
}

/// A successful answer, before any after-effect fault strikes it.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: AnswerBody,
}

enum AnswerBody {
    Empty,
    Xml(String),
    /// An object's bytes (or a range of them), and how many.
    Object(Vec<Bytes>, u64),
    /// An answer the connection is closed instead of (an injected `drop`).
    Dropped,
    /// An answer cut short: the length promised, the bytes sent before the cut.
    Truncated(u64, Bytes),
}

impl Answer {
    fn new(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: AnswerBody::Empty,
        }
    }

    fn xml(document: String) -> Self {
        let mut answer = Self::new(StatusCode::OK);
        answer.header("content-type", "application/xml");
        answer.body = AnswerBody::Xml(document);
        answer
    }

    fn header(&mut self, name: &'static str, value: &str) {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.insert(HeaderName::from_static(name), value);
        }
    }

    fn encryption(&mut self, encryption: &Encryption) {
        if let Some(algorithm) = &encryption.algorithm {
            self.header("x-amz-server-side-encryption", algorithm);
        }
        if let Some(key) = &encryption.kms_key_id {
            self.header("x-amz-server-side-encryption-aws-kms-key-id", key);
        }
    }

    fn checksums(&mut self, checksums: &Checksums) {
        if let Some(sha256) = &checksums.sha256 {
            self.header("x-amz-checksum-sha256", sha256);
        }
        if let Some(crc32) = &checksums.crc32 {
            self.header("x-amz-checksum-crc32", crc32);
        }
        if checksums.sha256.is_some() || checksums.crc32.is_some() {
            let kind = if checksums.is_composite() {
                "COMPOSITE"
            } else {
                "FULL_OBJECT"
            };
            self.header("x-amz-checksum-type", kind);
        }
    }

    /// The answer as an after-effect fault leaves it: dropped, cut short, or corrupted.
    fn struck_by(mut self, fault: Fault) -> Self {
        let bytes = match &self.body {
            AnswerBody::Xml(text) => Some(Bytes::from(text.clone().into_bytes())),
            AnswerBody::Object(chunks, _) => Some(Bytes::from(chunks.concat())),
            _ => None,
        };
        self.body = match (fault, bytes) {
            (Fault::DropConnection, _) | (Fault::TruncatedResponse, None) => AnswerBody::Dropped,
            (Fault::TruncatedResponse, Some(bytes)) => {
                let half = bytes.slice(..bytes.len() / 2);
                AnswerBody::Truncated(bytes.len() as u64, half)
            }
            (Fault::MalformedJson, Some(_)) if matches!(self.body, AnswerBody::Xml(_)) => {
                AnswerBody::Xml("<<< this is not XML".to_owned())
            }
            (Fault::MalformedJson, Some(bytes)) if !bytes.is_empty() => {
                // A corrupted download: the right length, one byte flipped.
                let mut corrupted = bytes.to_vec();
                let middle = corrupted.len() / 2;
                corrupted[middle] ^= 0xff;
                let len = corrupted.len() as u64;
                AnswerBody::Object(vec![Bytes::from(corrupted)], len)
            }
            (_, _) => self.body,
        };
        self
    }

    fn into_response(self, ids: &RequestIds) -> Response<Body> {
        let (body, length) = match self.body {
            AnswerBody::Empty => (Body::empty(), None),
            AnswerBody::Xml(text) => {
                let len = text.len() as u64;
                (Body::from(text), Some(len))
            }
            AnswerBody::Object(chunks, len) => (
                Body::from_stream(futures_util::stream::iter(
                    chunks.into_iter().map(Ok::<_, std::io::Error>),
                )),
                Some(len),
            ),
            AnswerBody::Dropped => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response.extensions_mut().insert(DropConnection);
                return response;
            }
            AnswerBody::Truncated(promised, half) => (
                // Promise the whole body, send half of it, then fail the stream: the connection
                // is cut mid-answer.
                Body::from_stream(futures_util::stream::iter([
                    Ok(half),
                    Err(std::io::Error::other("injected truncation")),
                ])),
                Some(promised),
            ),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        *headers = self.headers;
        if let Some(length) = length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        ids.apply(headers);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_s3_reads_them() {
        let size = 10;
        for (text, expected) in [
            ("bytes=0-0", Some((0, 1))),
            ("bytes=2-4", Some((2, 5))),
            ("bytes=8-20", Some((8, 10))),
            ("bytes=7-", Some((7, 10))),
            ("bytes=-3", Some((7, 10))),
            ("bytes=-30", Some((0, 10))),
            // What S3 ignores: the whole object.
            ("bytes=5-2", None),
            ("bytes=1-2,4-5", None),
            ("items=1-2", None),
            ("bytes=x-", None),
            ("bytes=-", None),
        ] {
            assert_eq!(parse_range(text, size).ok(), Some(expected), "{text}");
        }
        for unsatisfiable in ["bytes=10-", "bytes=10-12", "bytes=-0"] {
            let error = parse_range(unsatisfiable, size).unwrap_err();
            assert_eq!(error.code, "InvalidRange", "{unsatisfiable}");
        }
        assert!(
            parse_range("bytes=0-", 0).is_err(),
            "an empty object has no byte 0"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_entity_too_large_declared_or_not() {
        let mut declared = HeaderMap::new();
        declared.insert("content-length", HeaderValue::from(11u64));
        let mut body = Body::from(vec![0u8; 11]);
        let error = read_body(&mut body, &declared, 10, false, false)
            .await
            .err()
            .unwrap();
        assert_eq!(error.code, "EntityTooLarge");

        // A streamed body that never said its length is cut off once it passes the limit.
        let chunks = futures_util::stream::iter(
            (0..1000).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&[1u8; 1024]))),
        );
        let mut body = Body::from_stream(chunks);
        let error = read_body(&mut body, &HeaderMap::new(), 64 * 1024, false, false)
            .await
            .err()
            .unwrap();
        assert_eq!(error.code, "EntityTooLarge");

        let mut body = Body::from(vec![3u8; 10]);
        let received = read_body(&mut body, &HeaderMap::new(), 10, true, true)
            .await
            .ok()
            .unwrap();
        assert_eq!(received.content.len(), 10);
        assert_eq!(received.sha256, Some(Sha256::digest([3u8; 10]).into()));
        assert_eq!(received.crc32, Some(crc32fast::hash(&[3u8; 10])));
    }
}
