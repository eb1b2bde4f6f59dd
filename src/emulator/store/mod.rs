//! The emulator's artifact store: an S3-compatible object store (in memory) where a job's
//! artifacts are downloaded and uploaded with the job's temporary `artifactCredentials`, exactly
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

mod demo;
mod error;
mod objects;
mod server;
mod xml;

pub use demo::{demo_source_files, demo_source_zip};
pub use error::S3Error;
pub use objects::{
    Checksums, Content, Encryption, MAX_PART_NUMBER, MIN_PART_SIZE, MultipartError, Object,
    Objects, Part, UploadSettings, quoted_hex,
};
pub use server::{MAX_OBJECT_SIZE, MAX_PART_SIZE, RequestBody, Store, StoreConfig};

/// The store's operations, as S3 names them: what the fault plan and the call counts name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, enum_map::Enum)]
pub enum StoreOperation {
    /// GetObject.
    GetObject,
    /// HeadObject.
    HeadObject,
    /// PutObject.
    PutObject,
    /// CreateMultipartUpload.
    CreateMultipartUpload,
    /// UploadPart.
    UploadPart,
    /// CompleteMultipartUpload.
    CompleteMultipartUpload,
    /// AbortMultipartUpload.
    AbortMultipartUpload,
}

impl StoreOperation {
    /// Every operation, for iteration.
    pub const ALL: [Self; 7] = [
        Self::GetObject,
        Self::HeadObject,
        Self::PutObject,
        Self::CreateMultipartUpload,
        Self::UploadPart,
        Self::CompleteMultipartUpload,
        Self::AbortMultipartUpload,
    ];

    /// S3's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetObject => "GetObject",
            Self::HeadObject => "HeadObject",
            Self::PutObject => "PutObject",
            Self::CreateMultipartUpload => "CreateMultipartUpload",
            Self::UploadPart => "UploadPart",
            Self::CompleteMultipartUpload => "CompleteMultipartUpload",
            Self::AbortMultipartUpload => "AbortMultipartUpload",
        }
    }

    /// The operation S3 names so.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Whether it reads an object (an input artifact) rather than writes one (an output).
    pub fn reads(self) -> bool {
        matches!(self, Self::GetObject | Self::HeadObject)
    }
}

#[cfg(test)]
mod tests;
