//! The artifact store's answers as statuses: what S3 said about a transfer, or that it could
//! not be reached, or that the bytes were not what they should be.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{GATEWAY_DOMAIN, UPSTREAM_RETRY_AFTER, bounded, cause_chain};
use crate::artifacts::{ArtifactError, S3ErrorCode};

/// The ErrorInfo domain of errors the artifact store (S3) reported.
pub const S3_DOMAIN: &str = "s3.amazonaws.com";

/// The status for a failed artifact transfer of `job_id`'s artifact `name`.
///
/// | S3 answer | code |
/// |---|---|
/// | NoSuchKey / NoSuchBucket / NotFound | NOT_FOUND |
/// | AccessDenied / InvalidAccessKeyId / InvalidToken / ExpiredToken / SignatureDoesNotMatch | FAILED_PRECONDITION: the job's credentials do not reach it (the job is no longer in progress) |
/// | SlowDown / InternalError / ServiceUnavailable / 5xx, unreachable | UNAVAILABLE, RetryInfo |
/// | BadDigest / InvalidDigest, bytes not the object's | DATA_LOSS |
/// | anything else | INTERNAL |
pub fn artifact_status(error: ArtifactError, job_id: &str, name: &str) -> Status {
    let mut details = ErrorDetails::new();
    let (code, message) = match error {
        ArtifactError::Store {
            code: s3_code,
            message,
            http_status,
            request_id,
        } => {
            let mut metadata = HashMap::from([("http_status".to_owned(), http_status.to_string())]);
            if let Some(request_id) = request_id {
                metadata.insert("s3_request_id".to_owned(), request_id);
            }
            details.set_error_info(s3_code.as_str(), S3_DOMAIN, metadata);
            details.set_resource_info("codepipeline.artifact", name, job_id, "");
            let message = bounded(&message);
            store_refusal(&mut details, &s3_code, http_status, &message, job_id, name)
        }
        ArtifactError::Unavailable(source) => {
            tracing::warn!(error = %cause_chain(&*source), "artifact store unreachable");
            details.set_error_info("S3_UNAVAILABLE", GATEWAY_DOMAIN, HashMap::new());
            details.set_retry_info(Some(UPSTREAM_RETRY_AFTER));
            (
                Code::Unavailable,
                "the artifact store could not be reached or answered unreadably; retry".to_owned(),
            )
        }
        ArtifactError::Corrupt { what } => {
            details.set_error_info("ARTIFACT_CORRUPT", GATEWAY_DOMAIN, HashMap::new());
            (
                Code::DataLoss,
                format!("the bytes of artifact {name} do not match the object's {what}"),
            )
        }
        ArtifactError::SizeMismatch { declared, sent } => {
            details.add_bad_request_violation(
                "header.size_bytes",
                format!("{declared} bytes were declared and {sent} sent"),
            );
            (
                Code::InvalidArgument,
                format!(
                    "{sent} bytes were sent where the header declared {declared}; nothing was stored"
                ),
            )
        }
        ArtifactError::TooLarge { part_size } => {
            details.add_quota_failure_violation(
                format!("artifact:{name}"),
                format!("at most 10,000 parts of {part_size} bytes"),
            );
            (
                Code::ResourceExhausted,
                format!("artifact {name} is larger than 10,000 parts of {part_size} bytes"),
            )
        }
        ArtifactError::Refresh(status) => return status,
    };
    Status::with_error_details(code, message, details)
}

/// The code and message for a transfer of `job_id`'s artifact `name` that S3 refused with
/// `s3_code` (its `message` bounded).
fn store_refusal(
    details: &mut ErrorDetails,
    s3_code: &S3ErrorCode,
    http_status: u16,
    message: &str,
    job_id: &str,
    name: &str,
) -> (Code, String) {
    match s3_code {
        S3ErrorCode::NoSuchKey | S3ErrorCode::NoSuchBucket | S3ErrorCode::NotFound => (
            Code::NotFound,
            format!("artifact {name} of job {job_id} is not in the artifact store ({s3_code})"),
        ),
        S3ErrorCode::AccessDenied
        | S3ErrorCode::InvalidAccessKeyId
        | S3ErrorCode::InvalidToken
        | S3ErrorCode::ExpiredToken
        | S3ErrorCode::SignatureDoesNotMatch
        | S3ErrorCode::AllAccessDisabled => (
            Code::FailedPrecondition,
            format!(
                "the artifact store refused job {job_id}'s credentials ({s3_code}): \
                         the job is no longer in progress, or the artifact is not the job's"
            ),
        ),
        S3ErrorCode::SlowDown
        | S3ErrorCode::InternalError
        | S3ErrorCode::ServiceUnavailable
        | S3ErrorCode::RequestTimeout => {
            details.set_retry_info(Some(UPSTREAM_RETRY_AFTER));
            (
                Code::Unavailable,
                format!("the artifact store is unavailable ({s3_code}); retry"),
            )
        }
        _ if http_status >= 500 => {
            details.set_retry_info(Some(UPSTREAM_RETRY_AFTER));
            (
                Code::Unavailable,
                format!("the artifact store is unavailable ({s3_code}); retry"),
            )
        }
        S3ErrorCode::BadDigest
        | S3ErrorCode::InvalidDigest
        | S3ErrorCode::XAmzContentSHA256Mismatch => (
            Code::DataLoss,
            format!("the artifact store received other bytes than were sent ({s3_code})"),
        ),
        _ => {
            tracing::warn!(%s3_code, http_status, %message, "artifact store refused a request");
            (
                Code::Internal,
                format!("the artifact store refused the transfer ({s3_code})"),
            )
        }
    }
}
