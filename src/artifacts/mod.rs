//! Artifacts through the gateway: a job's objects in the pipeline's artifact bucket, read and
//! written with the job's own temporary credentials through `aws-sdk-s3`, so a worker needs no
//! AWS SDK and never sees the credentials.
//!
//! Transfers stream with bounded memory: a download fetches the object in ranged GETs of one
//! part size and hands its bytes on as the caller takes them; an upload keeps at most one part in
//! memory (a PutObject for an object smaller than a part, else a multipart upload committed only
//! when the whole stream arrived, and aborted otherwise). Each request is signed when sent, with
//! the credentials in force: when the store answers ExpiredToken, the transfer fetches fresh ones
//! ([`FreshCredentials`]) and repeats that request. Every write carries its SHA-256, which the
//! store verifies; a download is checked against the object's SHA-256 when the store keeps one.

use std::{
    fmt,
    sync::{Arc, RwLock},
};

use async_trait::async_trait;
use aws_credential_types::{
    Credentials,
    provider::{ProvideCredentials, future},
};
use aws_sdk_s3::{
    Client,
    config::{IdentityCache, RequestChecksumCalculation, ResponseChecksumValidation},
    error::{ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
    types::{
        ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart,
        ServerSideEncryption,
    },
};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::domain::{S3Location, SessionCredentials};

mod error;

use error::store_error;
pub use error::{ArtifactError, S3ErrorCode};

/// The smallest part S3 takes in a multipart upload (but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// The most parts of a multipart upload.
const MAX_PARTS: usize = 10_000;
/// The most a download hands on in one message (gRPC clients take up to 4 MiB by default).
const CHUNK: usize = 1024 * 1024;
/// Messages a download queues ahead of the worker's reading: the rest waits in S3.
pub const DOWNLOAD_QUEUE: usize = 4;
/// What a download may hold: its queue, the chunk being filled and the response body's buffers.
pub const DOWNLOAD_HOLDS: usize = (DOWNLOAD_QUEUE + 2) * CHUNK;

/// Where artifacts are and how they move.
#[derive(Debug, Clone)]
pub struct ArtifactSettings {
    /// The size of a ranged GET and of an upload part: what a transfer holds in memory.
    pub part_size: usize,
    /// An S3 endpoint to use instead of AWS's (path-style requests then).
    pub endpoint_url: Option<String>,
}

/// Where a transfer gets fresh credentials for its job when the store says they expired.
#[async_trait]
pub trait FreshCredentials: Send + Sync {
    /// The job's credentials, issued afresh.
    async fn fresh(&self) -> Result<SessionCredentials, tonic::Status>;
}

/// The credentials a transfer signs with: the job's, replaced when they expire.
#[derive(Clone)]
struct JobCredentials(Arc<RwLock<Credentials>>);

impl JobCredentials {
    fn new(credentials: &SessionCredentials) -> Self {
        Self(Arc::new(RwLock::new(sdk_credentials(credentials))))
    }

    fn replace(&self, credentials: &SessionCredentials) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = sdk_credentials(credentials);
    }
}

impl fmt::Debug for JobCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobCredentials(<redacted>)")
    }
}

impl ProvideCredentials for JobCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Ok(self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()))
    }
}

fn sdk_credentials(credentials: &SessionCredentials) -> Credentials {
    Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        Some(credentials.session_token.clone()),
        None,
        "codepipeline-job",
    )
}

/// The artifact store: one S3 configuration; each transfer signs with its job's credentials.
#[derive(Clone)]
pub struct Artifacts {
    config: aws_sdk_s3::config::Builder,
    part_size: usize,
}

impl Artifacts {
    /// The store for the gateway's AWS configuration (region, timeouts, HTTP client).
    pub fn new(sdk_config: &aws_config::SdkConfig, settings: &ArtifactSettings) -> Self {
        let mut config = aws_sdk_s3::config::Builder::from(sdk_config)
            // Credentials change per job and when they expire: never cached.
            .identity_cache(IdentityCache::no_cache())
            // The gateway sends each body's SHA-256 itself, in a header (no aws-chunked trailer).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &settings.endpoint_url {
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        Self {
            config,
            part_size: settings.part_size.max(MIN_PART_SIZE),
        }
    }

    /// What an upload holds in memory: one part.
    pub fn upload_holds(&self) -> usize {
        self.part_size
    }

    fn client(&self, credentials: &JobCredentials) -> Client {
        Client::from_conf(
            self.config
                .clone()
                .credentials_provider(credentials.clone())
                .build(),
        )
    }

    /// Opens `location` for reading with the job's `credentials`.
    pub async fn download(
        &self,
        location: &S3Location,
        credentials: &SessionCredentials,
        fresh: Arc<dyn FreshCredentials>,
    ) -> Result<Download, ArtifactError> {
        let credentials = JobCredentials::new(credentials);
        let mut transfer = Transfer {
            client: self.client(&credentials),
            credentials,
            fresh,
        };
        let head = transfer
            .retrying_expired(|client| {
                client
                    .head_object()
                    .bucket(&location.bucket_name)
                    .key(&location.object_key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
            })
            .await?;
        let size = u64::try_from(head.content_length.unwrap_or(0)).unwrap_or(0);
        // A multipart object's checksum is of its parts' checksums (S3 writes it "...-N" and
        // says COMPOSITE; some stores do neither, but its ETag still ends "-N"): not the
        // SHA-256 of its bytes, so not compared.
        let multipart = head.e_tag.as_deref().is_some_and(|etag| etag.contains('-'))
            || head
                .checksum_type
                .as_ref()
                .is_some_and(|kind| *kind == aws_sdk_s3::types::ChecksumType::Composite);
        let sha256 = head
            .checksum_sha256
            .filter(|sum| !sum.contains('-') && !multipart);
        let checked = sha256.is_some();
        Ok(Download {
            transfer,
            location: location.clone(),
            metadata: ObjectMetadata {
                size,
                content_type: head.content_type.unwrap_or_default(),
                sha256,
            },
            part_size: self.part_size as u64,
            offset: 0,
            body: None,
            hasher: checked.then(Sha256::new),
        })
    }

    /// Starts writing `location` with the job's `credentials`: nothing is stored before
    /// [`Upload::finish`].
    pub fn upload(
        &self,
        location: &S3Location,
        credentials: &SessionCredentials,
        fresh: Arc<dyn FreshCredentials>,
        options: UploadOptions,
    ) -> Upload {
        let credentials = JobCredentials::new(credentials);
        Upload {
            transfer: Transfer {
                client: self.client(&credentials),
                credentials,
                fresh,
            },
            location: location.clone(),
            options,
            part_size: self.part_size,
            buffer: BytesMut::new(),
            part_hasher: Sha256::new(),
            multipart: None,
            sent: 0,
            hasher: Sha256::new(),
        }
    }
}

/// What a download is of.
#[derive(Debug, Clone)]
pub struct ObjectMetadata {
    /// Its size in bytes.
    pub size: u64,
    /// Its content type.
    pub content_type: String,
    /// Its SHA-256 (base64), when the store keeps one for the whole object.
    pub sha256: Option<String>,
}

/// The requests of one transfer, with its credentials.
struct Transfer {
    client: Client,
    credentials: JobCredentials,
    fresh: Arc<dyn FreshCredentials>,
}

impl Transfer {
    /// Sends a request; when the store says the credentials expired, fetches fresh ones and
    /// sends it once more.
    async fn retrying_expired<T, E, Fut>(
        &mut self,
        send: impl Fn(&Client) -> Fut,
    ) -> Result<T, ArtifactError>
    where
        Fut: Future<Output = Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match send(&self.client).await.map_err(store_error) {
            Err(error) if error.is_expired_token() => {
                let fresh = self.fresh.fresh().await.map_err(ArtifactError::Refresh)?;
                self.credentials.replace(&fresh);
                tracing::debug!("artifact credentials expired; continuing with fresh ones");
                send(&self.client).await.map_err(store_error)
            }
            result => result,
        }
    }
}

/// An object being read.
pub struct Download {
    transfer: Transfer,
    location: S3Location,
    metadata: ObjectMetadata,
    part_size: u64,
    /// The next byte to fetch.
    offset: u64,
    /// The body of the ranged GET in progress.
    body: Option<ByteStream>,
    /// The bytes' SHA-256 so far, when the store has one to check it against.
    hasher: Option<Sha256>,
}

impl Download {
    /// What is being read.
    pub fn metadata(&self) -> &ObjectMetadata {
        &self.metadata
    }

    /// The next bytes (up to 256 KiB), `None` at the end, once the bytes were checked against
    /// the object's size and SHA-256.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ArtifactError> {
        // Room for a chunk and the piece that ends it, so the buffer does not double past it.
        let mut chunk = BytesMut::with_capacity(CHUNK + CHUNK / 4);
        while chunk.len() < CHUNK {
            let Some(body) = self.body.as_mut() else {
                if self.offset >= self.metadata.size {
                    break;
                }
                self.body = Some(self.next_range().await?);
                continue;
            };
            match body.next().await {
                Some(Ok(bytes)) => {
                    self.offset += bytes.len() as u64;
                    if self.offset > self.metadata.size {
                        return Err(ArtifactError::Corrupt { what: "size" });
                    }
                    if let Some(hasher) = &mut self.hasher {
                        hasher.update(&bytes);
                    }
                    // Large pieces go on as they came, uncopied.
                    if chunk.is_empty() && bytes.len() >= CHUNK / 4 {
                        return Ok(Some(bytes));
                    }
                    chunk.extend_from_slice(&bytes);
                }
                Some(Err(error)) => return Err(ArtifactError::Unavailable(Box::new(error))),
                None => self.body = None,
            }
        }
        if !chunk.is_empty() {
            return Ok(Some(chunk.freeze()));
        }
        self.verify()?;
        Ok(None)
    }

    async fn next_range(&mut self) -> Result<ByteStream, ArtifactError> {
        let last = (self.offset + self.part_size).min(self.metadata.size) - 1;
        let range = format!("bytes={}-{last}", self.offset);
        let location = self.location.clone();
        let output = self
            .transfer
            .retrying_expired(|client| {
                client
                    .get_object()
                    .bucket(&location.bucket_name)
                    .key(&location.object_key)
                    .range(&range)
                    .send()
            })
            .await?;
        Ok(output.body)
    }

    fn verify(&mut self) -> Result<(), ArtifactError> {
        if self.offset != self.metadata.size {
            return Err(ArtifactError::Corrupt { what: "size" });
        }
        let (Some(hasher), Some(expected)) = (self.hasher.take(), &self.metadata.sha256) else {
            return Ok(());
        };
        if base64(&hasher.finalize()) == *expected {
            Ok(())
        } else {
            Err(ArtifactError::Corrupt { what: "SHA-256" })
        }
    }
}

/// How an upload stores its object.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// The object's content type.
    pub content_type: String,
    /// The KMS key to encrypt it with; the AWS-managed key when `None`.
    pub kms_key_id: Option<String>,
    /// The size the worker declared, if it did.
    pub declared_size: Option<u64>,
}

/// What an upload stored.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 (base64) of its bytes.
    pub sha256: String,
    /// The store's ETag.
    pub etag: String,
}

struct Multipart {
    upload_id: String,
    parts: Vec<CompletedPart>,
}

/// An object being written.
pub struct Upload {
    transfer: Transfer,
    location: S3Location,
    options: UploadOptions,
    part_size: usize,
    buffer: BytesMut,
    /// The SHA-256 of the bytes in `buffer`: each byte is hashed once for its part and once
    /// for the whole object, as it arrives.
    part_hasher: Sha256,
    multipart: Option<Multipart>,
    sent: u64,
    hasher: Sha256,
}

impl Upload {
    /// Takes the next bytes; a full part is sent before this returns.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ArtifactError> {
        self.sent += bytes.len() as u64;
        if let Some(declared) = self.options.declared_size
            && self.sent > declared
        {
            return Err(ArtifactError::SizeMismatch {
                declared,
                sent: self.sent,
            });
        }
        self.hasher.update(bytes);
        let mut rest = bytes;
        while !rest.is_empty() {
            // A full part goes once more bytes come: if none do, it is the last part (or the
            // whole object, for one PutObject).
            if self.buffer.len() == self.part_size {
                self.send_part().await?;
            }
            let room = self.part_size - self.buffer.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            if self.buffer.is_empty() {
                // One allocation of a part's size (or of what is left of a declared size), not
                // a buffer that doubles its way past the part the reservation paid for.
                let left = self.options.declared_size.map_or(u64::MAX, |declared| {
                    declared - (self.sent - rest.len() as u64)
                });
                let size =
                    usize::try_from(left).map_or(self.part_size, |left| left.min(self.part_size));
                self.buffer = BytesMut::with_capacity(size.max(now.len()));
            }
            self.buffer.extend_from_slice(now);
            self.part_hasher.update(now);
            rest = later;
        }
        Ok(())
    }

    async fn send_part(&mut self) -> Result<(), ArtifactError> {
        if self.multipart.is_none() {
            let location = self.location.clone();
            let options = self.options.clone();
            let created = self
                .transfer
                .retrying_expired(|client| {
                    client
                        .create_multipart_upload()
                        .bucket(&location.bucket_name)
                        .key(&location.object_key)
                        .content_type(&options.content_type)
                        .checksum_algorithm(ChecksumAlgorithm::Sha256)
                        .server_side_encryption(ServerSideEncryption::AwsKms)
                        .set_ssekms_key_id(options.kms_key_id.clone())
                        .send()
                })
                .await?;
            self.multipart = Some(Multipart {
                upload_id: created.upload_id.unwrap_or_default(),
                parts: Vec::new(),
            });
        }
        let multipart = self.multipart.as_ref().expect("created above");
        let part_number = multipart.parts.len() + 1;
        if part_number > MAX_PARTS {
            return Err(ArtifactError::TooLarge {
                part_size: self.part_size,
            });
        }
        let body = self.buffer.split().freeze();
        let sha256 = base64(&std::mem::take(&mut self.part_hasher).finalize());
        let upload_id = multipart.upload_id.clone();
        let location = self.location.clone();
        let part = i32::try_from(part_number).expect("at most 10,000 parts");
        let uploaded = self
            .transfer
            .retrying_expired(|client| {
                client
                    .upload_part()
                    .bucket(&location.bucket_name)
                    .key(&location.object_key)
                    .upload_id(&upload_id)
                    .part_number(part)
                    .body(ByteStream::from(body.clone()))
                    .checksum_sha256(&sha256)
                    .send()
            })
            .await?;
        self.multipart.as_mut().expect("created above").parts.push(
            CompletedPart::builder()
                .part_number(part)
                .set_e_tag(uploaded.e_tag)
                .checksum_sha256(sha256)
                .build(),
        );
        Ok(())
    }

    /// Stores the object: the stream ended cleanly.
    pub async fn finish(mut self) -> Result<Uploaded, ArtifactError> {
        if let Some(declared) = self.options.declared_size
            && self.sent != declared
        {
            let sent = self.sent;
            self.abort().await;
            return Err(ArtifactError::SizeMismatch { declared, sent });
        }
        let sha256 = base64(&std::mem::take(&mut self.hasher).finalize());
        let result = if self.multipart.is_some() {
            self.complete().await
        } else {
            self.put_whole(&sha256).await
        };
        match result {
            Ok(etag) => Ok(Uploaded {
                size: self.sent,
                sha256,
                etag,
            }),
            Err(error) => {
                self.abort().await;
                Err(error)
            }
        }
    }

    async fn put_whole(&mut self, sha256: &str) -> Result<String, ArtifactError> {
        let body = self.buffer.split().freeze();
        let location = self.location.clone();
        let options = self.options.clone();
        let put = self
            .transfer
            .retrying_expired(|client| {
                client
                    .put_object()
                    .bucket(&location.bucket_name)
                    .key(&location.object_key)
                    .content_type(&options.content_type)
                    .body(ByteStream::from(body.clone()))
                    .checksum_sha256(sha256)
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(options.kms_key_id.clone())
                    .send()
            })
            .await?;
        Ok(put.e_tag.unwrap_or_default())
    }

    async fn complete(&mut self) -> Result<String, ArtifactError> {
        if !self.buffer.is_empty() {
            self.send_part().await?;
        }
        let multipart = self.multipart.as_ref().expect("a multipart upload");
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(multipart.parts.clone()))
            .build();
        let upload_id = multipart.upload_id.clone();
        let location = self.location.clone();
        let completed = self
            .transfer
            .retrying_expired(|client| {
                client
                    .complete_multipart_upload()
                    .bucket(&location.bucket_name)
                    .key(&location.object_key)
                    .upload_id(&upload_id)
                    .multipart_upload(parts.clone())
                    .send()
            })
            .await?;
        self.multipart = None;
        Ok(completed.e_tag.unwrap_or_default())
    }

    /// Leaves no object: the stream broke, or the store refused a part. The multipart upload is
    /// forgotten only once its abort was answered: a caller dropped mid-abort (hyper drops the
    /// handler when the worker resets the stream) leaves the abort to `Drop`.
    pub async fn abort(mut self) {
        let Some(multipart) = self.multipart.as_ref() else {
            return;
        };
        let upload_id = multipart.upload_id.clone();
        let location = self.location.clone();
        let aborted = self
            .transfer
            .retrying_expired(|client| {
                client
                    .abort_multipart_upload()
                    .bucket(&location.bucket_name)
                    .key(&location.object_key)
                    .upload_id(&upload_id)
                    .send()
            })
            .await;
        self.multipart = None;
        if let Err(error) = aborted {
            // The bucket's lifecycle rule for incomplete uploads is the backstop.
            tracing::warn!(
                bucket = %location.bucket_name,
                key = %location.object_key,
                %error,
                "an interrupted multipart upload could not be aborted"
            );
        }
    }
}

impl Drop for Upload {
    /// An upload dropped unfinished (its caller went away mid-stream) leaves no object: its
    /// multipart upload is aborted in the background.
    fn drop(&mut self) {
        let Some(multipart) = self.multipart.take() else {
            return;
        };
        let client = self.transfer.client.clone();
        let location = self.location.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client
                    .abort_multipart_upload()
                    .bucket(&location.bucket_name)
                    .key(&location.object_key)
                    .upload_id(&multipart.upload_id)
                    .send()
                    .await;
            });
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
