//! How a transfer fails: [`ArtifactError`], with S3's error codes as a closed set where the
//! gateway decides on them ([`S3ErrorCode`]).

use std::fmt;

use aws_sdk_s3::{
    error::{ProvideErrorMetadata, SdkError},
    operation::RequestId,
};

use super::MAX_PARTS;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The store refused a request.
    #[error("S3 answered {code} (HTTP {http_status}): {message}")]
    Store {
        /// The S3 error code (`NoSuchKey`, `AccessDenied`, ...).
        code: S3ErrorCode,
        /// Its message.
        message: String,
        /// The HTTP status.
        http_status: u16,
        /// The request ID S3 gave.
        request_id: Option<String>,
    },
    /// The store could not be reached, or answered unreadably.
    #[error("S3 could not be reached")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The bytes read are not the object's.
    #[error("the bytes read do not match the object's {what}")]
    Corrupt {
        /// What did not match: its size, or its SHA-256.
        what: &'static str,
    },
    /// The worker sent more or fewer bytes than it declared.
    #[error("{sent} bytes were sent where {declared} were declared")]
    SizeMismatch {
        /// The size declared in the header.
        declared: u64,
        /// The bytes sent.
        sent: u64,
    },
    /// The object is larger than a multipart upload of this part size can hold.
    #[error("the object is larger than {MAX_PARTS} parts of {part_size} bytes")]
    TooLarge {
        /// The part size in force.
        part_size: usize,
    },
    /// Fresh credentials could not be had (the job's details call failed).
    #[error("fresh artifact credentials could not be had")]
    Refresh(tonic::Status),
}

impl ArtifactError {
    pub(super) fn is_expired_token(&self) -> bool {
        matches!(
            self,
            Self::Store {
                code: S3ErrorCode::ExpiredToken,
                ..
            }
        )
    }
}

pub(super) fn store_error<E>(
    error: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> ArtifactError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &error {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            let http_status = raw.status().as_u16();
            let meta = service.err().meta();
            // HEAD answers carry no body: the status says what the code would have.
            let code = meta.code().map_or_else(
                || match http_status {
                    404 => S3ErrorCode::NotFound,
                    403 => S3ErrorCode::AccessDenied,
                    400 => S3ErrorCode::BadRequest,
                    503 => S3ErrorCode::SlowDown,
                    _ => S3ErrorCode::InternalError,
                },
                S3ErrorCode::from_s3,
            );
            ArtifactError::Store {
                code,
                message: meta.message().unwrap_or_default().to_owned(),
                http_status,
                request_id: error.request_id().map(str::to_owned),
            }
        }
        _ => ArtifactError::Unavailable(Box::new(error)),
    }
}

macro_rules! s3_error_codes {
    ($($(#[doc = $doc:literal])* $code:ident,)*) => {
        /// An S3 error code: the ones the gateway answers differently, by name; any other kept
        /// as S3 sent it (for the caller's ErrorInfo).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum S3ErrorCode {
            $($(#[doc = $doc])* $code,)*
            /// Another code.
            Other(String),
        }

        impl S3ErrorCode {
            /// The code S3 sent.
            pub fn from_s3(code: &str) -> Self {
                match code {
                    $(stringify!($code) => Self::$code,)*
                    other => Self::Other(other.to_owned()),
                }
            }

            /// The code, as S3 names it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$code => stringify!($code),)*
                    Self::Other(code) => code,
                }
            }
        }
    };
}

s3_error_codes! {
    /// The object does not exist.
    NoSuchKey,
    /// The bucket does not exist.
    NoSuchBucket,
    /// A HEAD for what does not exist (HEAD answers carry no code).
    NotFound,
    /// The credentials may not do this.
    AccessDenied,
    /// The access key is unknown.
    InvalidAccessKeyId,
    /// The session token is not valid.
    InvalidToken,
    /// The session token expired.
    ExpiredToken,
    /// The signature is wrong.
    SignatureDoesNotMatch,
    /// The bucket refuses everyone.
    AllAccessDisabled,
    /// Throttled.
    SlowDown,
    /// The store failed.
    InternalError,
    /// The store is unavailable.
    ServiceUnavailable,
    /// The request took too long to arrive.
    RequestTimeout,
    /// The bytes do not match their checksum.
    BadDigest,
    /// The checksum given is malformed.
    InvalidDigest,
    /// The bytes do not match their SHA-256.
    XAmzContentSHA256Mismatch,
    /// The request is malformed.
    BadRequest,
}

impl fmt::Display for S3ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_kept_as_sent() {
        for known in ["NoSuchKey", "ExpiredToken", "XAmzContentSHA256Mismatch"] {
            let code = S3ErrorCode::from_s3(known);
            assert!(!matches!(code, S3ErrorCode::Other(_)), "{known}");
            assert_eq!(code.as_str(), known);
        }
        assert_eq!(
            S3ErrorCode::from_s3("QuotaExceeded"),
            S3ErrorCode::Other("QuotaExceeded".to_owned())
        );
    }
}
