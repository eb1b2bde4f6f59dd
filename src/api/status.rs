//! The one error table: every failure a caller can see becomes a `tonic::Status` here,
//! with a precise code and google.rpc details (ErrorInfo, BadRequest, RetryInfo, ResourceInfo)
//! that a worker can act on. Nothing else in the crate picks a status code for an upstream
//! failure.
//!
//! | cause | code |
//! |---|---|
//! | edge validation, ValidationException | INVALID_ARGUMENT |
//! | InvalidNonceException | ABORTED |
//! | JobNotFound / ActionTypeNotFound / InvalidJob | NOT_FOUND |
//! | InvalidJobState / OutputVariablesSizeExceeded | FAILED_PRECONDITION |
//! | InvalidClientTokenException | PERMISSION_DENIED (the worker's token) |
//! | InvalidClientTokenException for a token from the gateway's client-token file | FAILED_PRECONDITION |
//! | throttling, 5xx, unreachable or unreadable upstream | UNAVAILABLE |
//! | upstream timeout | DEADLINE_EXCEEDED |
//! | the gateway's own AWS identity rejected or missing | INTERNAL |
//! | no, malformed or unknown credential | UNAUTHENTICATED |
//! | a known caller calling a method it may not | PERMISSION_DENIED |
//! | a caller over its rate, or the account's upstream budget spent | RESOURCE_EXHAUSTED |
//! | the gateway at its concurrency limit | UNAVAILABLE (another replica may serve it) |
//! | a client at its own limit of calls in flight | RESOURCE_EXHAUSTED |
//! | a call unanswered at its deadline (its body never arrived, say) | DEADLINE_EXCEEDED |
//! | a request message over the size limit | RESOURCE_EXHAUSTED |
//! | a third-party call with no client token, none held for its client | FAILED_PRECONDITION |
//! | the artifact store's answers | see [`artifact_status`] |
//! | a panic while handling a call | INTERNAL, generic message |
//! | anything else | INTERNAL, generic message |

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::Method;
use crate::{
    domain::validate::InvalidRequest,
    upstream::{AwsErrorCode, Operation, UpstreamError},
};

/// The ErrorInfo domain of errors CodePipeline reported.
pub const AWS_DOMAIN: &str = "codepipeline.amazonaws.com";
/// The ErrorInfo domain of errors the gateway itself decided.
pub const GATEWAY_DOMAIN: &str = "codepipeline-gateway";
/// How long a caller should wait before retrying a call that met throttling or an outage.
pub const UPSTREAM_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The most characters of an AWS message copied into a status message.
const MAX_AWS_MESSAGE_CHARS: usize = 256;

/// INVALID_ARGUMENT with one BadRequest field violation per broken constraint.
pub fn invalid_request(invalid: InvalidRequest) -> Status {
    let mut details = ErrorDetails::new();
    for violation in &invalid.violations {
        details.add_bad_request_violation(&violation.field, &violation.description);
    }
    Status::with_error_details(Code::InvalidArgument, invalid.to_string(), details)
}

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
pub fn artifact_status(error: crate::artifacts::ArtifactError, job_id: &str, name: &str) -> Status {
    use crate::artifacts::{ArtifactError, S3ErrorCode};
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
            match s3_code {
                S3ErrorCode::NoSuchKey | S3ErrorCode::NoSuchBucket | S3ErrorCode::NotFound => (
                    Code::NotFound,
                    format!(
                        "artifact {name} of job {job_id} is not in the artifact store ({s3_code})"
                    ),
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

/// The status for an upstream failure outside a job-worker call (the emulator admin service).
pub fn upstream_status(error: UpstreamError) -> Status {
    classify(&error, None, None)
}

/// The status of a third-party call whose client token the gateway supplied from its
/// client-token file: CodePipeline's `InvalidClientTokenException` then means the operator's
/// file holds a wrong token, which the worker cannot fix by calling differently. Any other
/// failure is answered as it was.
pub fn supplied_client_token_rejected(status: Status, job_id: &str) -> Status {
    let Some(info) = status.get_details_error_info() else {
        return status;
    };
    if info.domain != AWS_DOMAIN || info.reason != AwsErrorCode::InvalidClientToken.as_str() {
        return status;
    }
    let mut details = ErrorDetails::new();
    // The AWS request id and operation stay, for the operator's support case.
    details.set_error_info("CLIENT_TOKEN_FILE_REJECTED", GATEWAY_DOMAIN, info.metadata);
    let reason = "CodePipeline rejected the client token the gateway's client-token file holds \
                  for this job's client; the gateway's operator must fix the file";
    details.add_precondition_failure_violation("CLIENT_TOKEN", format!("job:{job_id}"), reason);
    Status::with_error_details(Code::FailedPrecondition, reason, details)
}

/// The status for a failed job-worker call: `operation` is what was called, `resource` the job
/// or action type it was about.
pub fn upstream_call_status(operation: Operation, resource: &str, error: UpstreamError) -> Status {
    let status = classify(&error, Some(operation), Some(resource));
    log_failure(operation, &error, &status);
    status
}

fn classify(error: &UpstreamError, operation: Option<Operation>, resource: Option<&str>) -> Status {
    let mut metadata = HashMap::new();
    if let Some(request_id) = error.request_id() {
        metadata.insert("aws_request_id".to_owned(), request_id.to_owned());
    }
    if let Some(operation) = operation {
        metadata.insert("operation".to_owned(), operation.as_str().to_owned());
    }
    let mut details = ErrorDetails::new();
    let (code, message) = match error {
        UpstreamError::Service { code, message, .. } => {
            if let AwsErrorCode::ServiceFault(_) = code {
                // A server fault may strike after the call took effect.
                indeterminate(&mut metadata, operation);
            }
            details.set_error_info(code.as_str(), AWS_DOMAIN, metadata);
            let aws_message = message.as_deref().map(bounded).unwrap_or_default();
            match code {
                // AWS words validation errors with the offending values: not copied.
                AwsErrorCode::Validation => (
                    Code::InvalidArgument,
                    "CodePipeline rejected the request as invalid".to_owned(),
                ),
                AwsErrorCode::InvalidNonce => (
                    Code::Aborted,
                    "the nonce is not the job's current one: another worker holds this job; drop it"
                        .to_owned(),
                ),
                AwsErrorCode::JobNotFound | AwsErrorCode::InvalidJob => {
                    details.set_resource_info("codepipeline.job", resource.unwrap_or(""), "", "");
                    (Code::NotFound, format!("CodePipeline found no such job: {aws_message}"))
                }
                AwsErrorCode::ActionTypeNotFound => {
                    details.set_resource_info("codepipeline.action_type", resource.unwrap_or(""), "", "");
                    (Code::NotFound, format!("CodePipeline knows no such action type: {aws_message}"))
                }
                AwsErrorCode::InvalidJobState => (
                    Code::FailedPrecondition,
                    format!("the job is not in a state that allows this call: {aws_message}"),
                ),
                AwsErrorCode::OutputVariablesSizeExceeded => (
                    Code::FailedPrecondition,
                    format!("the output variables are too large: {aws_message}"),
                ),
                AwsErrorCode::InvalidClientToken => (
                    Code::PermissionDenied,
                    "CodePipeline rejected the client token".to_owned(),
                ),
                AwsErrorCode::Throttling => {
                    details.set_retry_info(Some(UPSTREAM_RETRY_AFTER));
                    (
                        Code::Unavailable,
                        "CodePipeline is throttling the gateway's account; retry later".to_owned(),
                    )
                }
                AwsErrorCode::ServiceFault(_) => {
                    details.set_retry_info(Some(UPSTREAM_RETRY_AFTER));
                    (Code::Unavailable, "CodePipeline had an internal failure; retry later".to_owned())
                }
                AwsErrorCode::IdentityRejected(_) => (
                    Code::Internal,
                    "CodePipeline rejected the gateway's own AWS identity; the gateway's operator must fix its credentials"
                        .to_owned(),
                ),
                AwsErrorCode::Other(_) => (Code::Internal, "unexpected error".to_owned()),
            }
        }
        UpstreamError::Timeout { .. } => {
            indeterminate(&mut metadata, operation);
            details.set_error_info("UPSTREAM_TIMEOUT", GATEWAY_DOMAIN, metadata);
            (
                Code::DeadlineExceeded,
                "CodePipeline did not answer in time".to_owned(),
            )
        }
        UpstreamError::Unavailable { .. } => {
            indeterminate(&mut metadata, operation);
            details.set_error_info("UPSTREAM_UNAVAILABLE", GATEWAY_DOMAIN, metadata);
            details.set_retry_info(Some(UPSTREAM_RETRY_AFTER));
            (
                Code::Unavailable,
                "CodePipeline could not be reached or answered unreadably; retry later".to_owned(),
            )
        }
        UpstreamError::NoCredentials { .. } => {
            details.set_error_info("GATEWAY_CREDENTIALS_UNAVAILABLE", GATEWAY_DOMAIN, metadata);
            (
                Code::Internal,
                "the gateway has no usable AWS credentials; the gateway's operator must fix them"
                    .to_owned(),
            )
        }
        UpstreamError::Unexpected { .. } => (Code::Internal, "unexpected error".to_owned()),
    };
    Status::with_error_details(code, message, details)
}

/// Says in the ErrorInfo whether the call may have taken effect although it failed: a lost
/// answer to a call that claims or completes a job leaves its outcome unknown.
fn indeterminate(metadata: &mut HashMap<String, String>, operation: Option<Operation>) {
    let indeterminate = operation.is_some_and(Operation::changes_job_state);
    metadata.insert("indeterminate".to_owned(), indeterminate.to_string());
}

/// AWS messages are short; bound them anyway so nothing unexpected is copied in full.
fn bounded(message: &str) -> String {
    message.chars().take(MAX_AWS_MESSAGE_CHARS).collect()
}

/// Logs a failed call: expected outcomes quietly, the gateway's own faults with their cause
/// chain. Never the request or response: they may carry job credentials.
fn log_failure(operation: Operation, error: &UpstreamError, status: &Status) {
    let request_id = error.request_id().unwrap_or("");
    match status.code() {
        Code::Internal | Code::Unavailable | Code::DeadlineExceeded => tracing::warn!(
            %operation,
            code = ?status.code(),
            aws_request_id = request_id,
            cause = %cause_chain(error),
            "upstream call failed"
        ),
        _ => tracing::debug!(
            %operation,
            code = ?status.code(),
            aws_request_id = request_id,
            "upstream answered with an error"
        ),
    }
}

/// `error: cause: cause ...`, for logs.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

/// A call the gateway itself refused, before any upstream call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token and no client certificate, where one is required.
    MissingCredentials,
    /// An `authorization` header that is not `Bearer <token>`.
    MalformedAuthorization,
    /// A bearer token that matches no client.
    UnknownToken,
    /// A known client calling a method it is not allowed.
    MethodNotAllowed {
        /// The client.
        client_id: String,
        /// The method.
        method: Method,
    },
    /// A rate limit was hit.
    RateLimited {
        /// Whose limit: the caller's own rate, or the account's budget for an operation.
        scope: LimitScope,
        /// What is limited: `client:<id>` or `operation:<Operation>`.
        subject: String,
        /// When the next call would be let through.
        retry_after: Duration,
    },
    /// The gateway is handling as many calls as it may.
    Overloaded,
    /// The client has as many calls in flight as it may.
    ClientConcurrencyLimit {
        /// The client.
        client_id: String,
        /// Its limit.
        limit: u32,
    },
    /// The call's deadline passed before it was answered (its request never arrived whole, say).
    DeadlineExceeded,
    /// A StreamJobs stream broke the stream's protocol; the stream ends.
    Stream(StreamViolation),
    /// A job delivered on a StreamJobs stream can no longer be acknowledged there: its lease
    /// ended (it went to another subscriber, or was handed out again). Answered on the stream.
    LeaseEnded {
        /// The job.
        job_id: String,
    },
    /// An acknowledgement of this job is already on its way. Answered on the stream.
    AcknowledgementInProgress {
        /// The job.
        job_id: String,
    },
    /// An acknowledgement of this job sent on the client's earlier stream is still on its way:
    /// its answer decides whose the job is. Answered on the stream.
    ClaimPending {
        /// The job.
        job_id: String,
    },
    /// A unary AcknowledgeJob of a job a job stream of this gateway holds: refused, so that
    /// two workers never run one job.
    HeldByStream {
        /// The job.
        job_id: String,
    },
    /// As many job streams are open as the gateway, or this client, may have.
    StreamLimit {
        /// The client, when it is the client's own limit.
        client_id: Option<String>,
        /// The limit.
        limit: u32,
    },
    /// The gateway is shutting down: reconnect (to another replica).
    Draining,
    /// A stream's connection reached its maximum age, and the connection is about to close:
    /// open the stream again (the client makes a new connection).
    ConnectionAged,
    /// The shared rate limits cannot be reached and the gateway fails closed.
    LimitsUnavailable,
    /// A request message is over the size limit.
    MessageTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A third-party call carries no client token and the gateway holds none for it.
    NoClientToken {
        /// The job.
        job_id: String,
        /// Why none was found, and what the worker can do.
        reason: String,
    },
    /// The job's data names no such artifact.
    NoSuchArtifact {
        /// The job.
        job_id: String,
        /// The artifact asked for.
        name: String,
        /// `input` or `output`.
        direction: &'static str,
    },
    /// The job's data carries no artifact credentials, or no S3 location for the artifact.
    NoArtifactAccess {
        /// The job.
        job_id: String,
    },
    /// An artifact stream broke its protocol: no header first, a second header, an empty message.
    ArtifactStream {
        /// What was wrong.
        problem: &'static str,
    },
    /// Handling the call panicked.
    Panicked,
}

/// How a StreamJobs stream broke its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamViolation {
    /// The first message is not a subscription (or the stream closed before one).
    NoSubscription,
    /// No subscription arrived within the time allowed.
    SubscriptionTimeout,
    /// A second subscription on the same stream.
    SecondSubscription,
    /// A message with nothing set.
    EmptyMessage,
    /// Credit beyond the subscription's maximum.
    CreditOverMaximum {
        /// The credit the stream holds.
        held: u32,
        /// The credit asked for.
        asked: u32,
        /// The subscription's maximum.
        max: u32,
    },
    /// An acknowledgement of a job never delivered on this stream.
    NotDelivered {
        /// The job.
        job_id: String,
    },
}

/// Whose rate limit a call is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// The caller's own rate (the default, or its token file override).
    Client,
    /// The account-wide budget of an upstream operation.
    Upstream,
}

impl LimitScope {
    /// The word for it in messages and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
        }
    }
}

/// How long an overloaded gateway suggests waiting before a retry.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_millis(100);
/// How long a client at its stream limit should wait before opening another.
const STREAM_LIMIT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How soon to claim a job again whose first acknowledgement is still on its way: about one
/// upstream round trip.
const CLAIM_RETRY_AFTER: Duration = Duration::from_millis(200);

fn stream_violation(violation: StreamViolation, details: &mut ErrorDetails) -> (Code, String) {
    let info = |details: &mut ErrorDetails, reason: &str, metadata: HashMap<String, String>| {
        details.set_error_info(reason, GATEWAY_DOMAIN, metadata);
    };
    match violation {
        StreamViolation::NoSubscription => {
            info(details, "SUBSCRIPTION_REQUIRED", HashMap::new());
            (
                Code::InvalidArgument,
                "the first message of a StreamJobs stream must be a subscription".to_owned(),
            )
        }
        StreamViolation::SubscriptionTimeout => {
            info(details, "SUBSCRIPTION_REQUIRED", HashMap::new());
            (
                Code::DeadlineExceeded,
                "no subscription arrived in time on the StreamJobs stream".to_owned(),
            )
        }
        StreamViolation::SecondSubscription => {
            info(details, "ALREADY_SUBSCRIBED", HashMap::new());
            (
                Code::FailedPrecondition,
                "this stream is subscribed already; open another stream for another feed"
                    .to_owned(),
            )
        }
        StreamViolation::EmptyMessage => {
            details.add_bad_request_violation(
                "request",
                "must set subscription, credit or acknowledge",
            );
            (
                Code::InvalidArgument,
                "a StreamJobs message must set subscription, credit or acknowledge".to_owned(),
            )
        }
        StreamViolation::CreditOverMaximum { held, asked, max } => {
            let metadata = HashMap::from([
                ("held".to_owned(), held.to_string()),
                ("asked".to_owned(), asked.to_string()),
                ("max_outstanding_jobs".to_owned(), max.to_string()),
            ]);
            info(details, "CREDIT_OVER_MAXIMUM", metadata);
            (
                Code::FailedPrecondition,
                format!(
                    "credit {asked} on top of {held} is over the subscription's max_outstanding_jobs of {max}"
                ),
            )
        }
        StreamViolation::NotDelivered { job_id } => {
            info(details, "JOB_NOT_DELIVERED", HashMap::new());
            details.set_resource_info("codepipeline.job", &job_id, "", "");
            (
                Code::FailedPrecondition,
                format!("job {job_id} was not delivered on this stream"),
            )
        }
    }
}

/// A status as the `google.rpc.Status` message that carries it inside another message, details
/// included.
pub fn rpc_status(status: &Status) -> tonic_types::Status {
    use prost::Message;
    tonic_types::Status::decode(status.details())
        .ok()
        .filter(|decoded| decoded.code == status.code() as i32)
        .unwrap_or_else(|| tonic_types::Status {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: Vec::new(),
        })
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        let mut details = ErrorDetails::new();
        let (code, message) = match refusal {
            Refusal::MissingCredentials => {
                details.set_error_info("MISSING_CREDENTIALS", GATEWAY_DOMAIN, HashMap::new());
                (
                    Code::Unauthenticated,
                    "this call needs an `authorization: Bearer <token>` header or a client certificate".to_owned(),
                )
            }
            Refusal::MalformedAuthorization => {
                details.set_error_info("MALFORMED_AUTHORIZATION", GATEWAY_DOMAIN, HashMap::new());
                (
                    Code::Unauthenticated,
                    "the authorization header must be `Bearer <token>`".to_owned(),
                )
            }
            Refusal::UnknownToken => {
                details.set_error_info("UNKNOWN_TOKEN", GATEWAY_DOMAIN, HashMap::new());
                (
                    Code::Unauthenticated,
                    "the bearer token is not valid".to_owned(),
                )
            }
            Refusal::MethodNotAllowed { client_id, method } => {
                let metadata = HashMap::from([
                    ("client_id".to_owned(), client_id.clone()),
                    (
                        "method".to_owned(),
                        format!("{}/{}", method.service(), method.name()),
                    ),
                ]);
                details.set_error_info("METHOD_NOT_ALLOWED", GATEWAY_DOMAIN, metadata);
                (
                    Code::PermissionDenied,
                    format!("client {client_id} may not call {}", method.name()),
                )
            }
            Refusal::RateLimited {
                scope,
                subject,
                retry_after,
            } => {
                details.set_retry_info(Some(retry_after));
                details.add_quota_failure_violation(
                    subject.clone(),
                    format!(
                        "over the {} rate limit; retry after {} ms",
                        scope.as_str(),
                        retry_after.as_millis()
                    ),
                );
                (
                    Code::ResourceExhausted,
                    format!(
                        "rate limit reached for {subject}; retry after {} ms",
                        retry_after.as_millis()
                    ),
                )
            }
            Refusal::Overloaded => {
                details.set_error_info("OVERLOADED", GATEWAY_DOMAIN, HashMap::new());
                details.set_retry_info(Some(OVERLOADED_RETRY_AFTER));
                (
                    Code::Unavailable,
                    "the gateway is at its concurrency limit; retry, possibly on another replica"
                        .to_owned(),
                )
            }
            Refusal::ClientConcurrencyLimit { client_id, limit } => {
                details.set_retry_info(Some(OVERLOADED_RETRY_AFTER));
                details.add_quota_failure_violation(
                    format!("client:{client_id}"),
                    format!("{limit} calls in flight at once"),
                );
                (
                    Code::ResourceExhausted,
                    format!(
                        "client {client_id} has {limit} calls in flight, as many as it may; retry when one ends"
                    ),
                )
            }
            Refusal::DeadlineExceeded => {
                details.set_error_info("DEADLINE_EXCEEDED", GATEWAY_DOMAIN, HashMap::new());
                (
                    Code::DeadlineExceeded,
                    "the call's deadline passed before it could be answered".to_owned(),
                )
            }
            Refusal::Stream(violation) => stream_violation(violation, &mut details),
            Refusal::LeaseEnded { job_id } => {
                details.set_error_info("LEASE_ENDED", GATEWAY_DOMAIN, HashMap::new());
                details.set_resource_info("codepipeline.job", &job_id, "", "");
                (
                    Code::Aborted,
                    format!(
                        "job {job_id} is no longer leased to this stream (not acknowledged in time, or \
                         handed out again); drop it and give its credit back"
                    ),
                )
            }
            Refusal::AcknowledgementInProgress { job_id } => {
                details.set_error_info(
                    "ACKNOWLEDGEMENT_IN_PROGRESS",
                    GATEWAY_DOMAIN,
                    HashMap::new(),
                );
                (
                    Code::FailedPrecondition,
                    format!("job {job_id} is being acknowledged already; wait for that answer"),
                )
            }
            Refusal::ClaimPending { job_id } => {
                details.set_error_info("ACKNOWLEDGEMENT_PENDING", GATEWAY_DOMAIN, HashMap::new());
                details.set_resource_info("codepipeline.job", &job_id, "", "");
                details.set_retry_info(Some(CLAIM_RETRY_AFTER));
                (
                    Code::Unavailable,
                    format!(
                        "an acknowledgement of job {job_id} sent on an earlier stream is still on its \
                         way; acknowledge it again shortly"
                    ),
                )
            }
            Refusal::HeldByStream { job_id } => {
                details.set_error_info("JOB_HELD_BY_STREAM", GATEWAY_DOMAIN, HashMap::new());
                details.set_resource_info("codepipeline.job", &job_id, "", "");
                (
                    Code::Aborted,
                    format!(
                        "job {job_id} was delivered on a job stream and is held there; acknowledge \
                         streamed jobs on their stream. Drop it: another worker has it"
                    ),
                )
            }
            Refusal::StreamLimit { client_id, limit } => {
                details.set_retry_info(Some(STREAM_LIMIT_RETRY_AFTER));
                let subject = client_id
                    .as_ref()
                    .map_or_else(|| "gateway".to_owned(), |id| format!("client:{id}"));
                details.add_quota_failure_violation(
                    subject.clone(),
                    format!("{limit} job streams at once"),
                );
                (
                    Code::ResourceExhausted,
                    format!("{subject} has {limit} job streams open, as many as it may"),
                )
            }
            Refusal::Draining => {
                details.set_error_info("DRAINING", GATEWAY_DOMAIN, HashMap::new());
                details.set_retry_info(Some(OVERLOADED_RETRY_AFTER));
                (
                    Code::Unavailable,
                    "the gateway is shutting down; open the stream again (on another replica)"
                        .to_owned(),
                )
            }
            Refusal::ConnectionAged => {
                details.set_error_info("CONNECTION_AGED", GATEWAY_DOMAIN, HashMap::new());
                details.set_retry_info(Some(Duration::ZERO));
                (
                    Code::Unavailable,
                    "the connection reached its maximum age and closes; open the stream again"
                        .to_owned(),
                )
            }
            Refusal::LimitsUnavailable => {
                details.set_error_info("RATE_LIMITS_UNAVAILABLE", GATEWAY_DOMAIN, HashMap::new());
                details.set_retry_info(Some(UPSTREAM_RETRY_AFTER));
                (
                    Code::Unavailable,
                    "the shared rate limits cannot be reached and this gateway fails closed; retry later"
                        .to_owned(),
                )
            }
            Refusal::MessageTooLarge { limit } => {
                details.set_error_info("MESSAGE_TOO_LARGE", GATEWAY_DOMAIN, HashMap::new());
                (
                    Code::ResourceExhausted,
                    format!("the request message is larger than the limit of {limit} bytes"),
                )
            }
            Refusal::NoClientToken { job_id, reason } => {
                details.set_error_info("CLIENT_TOKEN_UNAVAILABLE", GATEWAY_DOMAIN, HashMap::new());
                details.add_precondition_failure_violation(
                    "CLIENT_TOKEN",
                    format!("job:{job_id}"),
                    reason.clone(),
                );
                (Code::FailedPrecondition, reason)
            }
            Refusal::NoSuchArtifact {
                job_id,
                name,
                direction,
            } => {
                details.set_error_info("NO_SUCH_ARTIFACT", GATEWAY_DOMAIN, HashMap::new());
                details.set_resource_info(
                    "codepipeline.artifact",
                    &name,
                    &job_id,
                    format!("not an {direction} artifact of the job"),
                );
                (
                    Code::NotFound,
                    format!("job {job_id} has no {direction} artifact named {name}"),
                )
            }
            Refusal::NoArtifactAccess { job_id } => {
                details.set_error_info("NO_ARTIFACT_ACCESS", GATEWAY_DOMAIN, HashMap::new());
                (
                    Code::FailedPrecondition,
                    format!(
                        "CodePipeline gave no artifact credentials or S3 location for job {job_id}"
                    ),
                )
            }
            Refusal::ArtifactStream { problem } => {
                details.add_bad_request_violation("request", problem);
                (
                    Code::InvalidArgument,
                    format!("invalid artifact stream: {problem}"),
                )
            }
            Refusal::Panicked => (Code::Internal, "unexpected error".to_owned()),
        };
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str) -> UpstreamError {
        UpstreamError::Service {
            code: AwsErrorCode::from_aws(code),
            message: Some("m".to_owned()),
            request_id: Some("req-1".to_owned()),
        }
    }

    #[test]
    fn every_aws_code_maps_to_the_design_tables_grpc_code() {
        let table = [
            ("ValidationException", Code::InvalidArgument),
            ("InvalidNonceException", Code::Aborted),
            ("JobNotFoundException", Code::NotFound),
            ("ActionTypeNotFoundException", Code::NotFound),
            ("InvalidJobException", Code::NotFound),
            ("InvalidJobStateException", Code::FailedPrecondition),
            (
                "OutputVariablesSizeExceededException",
                Code::FailedPrecondition,
            ),
            ("InvalidClientTokenException", Code::PermissionDenied),
            ("ThrottlingException", Code::Unavailable),
            ("InternalFailure", Code::Unavailable),
            ("ServiceUnavailable", Code::Unavailable),
            ("AccessDeniedException", Code::Internal),
            ("UnrecognizedClientException", Code::Internal),
            ("InvalidSignatureException", Code::Internal),
            ("ExpiredTokenException", Code::Internal),
            ("SomethingNew", Code::Internal),
        ];
        for (aws_code, grpc_code) in table {
            let status = upstream_call_status(Operation::AcknowledgeJob, "job", service(aws_code));
            assert_eq!(status.code(), grpc_code, "{aws_code}");
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.reason, aws_code);
            assert_eq!(info.domain, AWS_DOMAIN);
            assert_eq!(
                info.metadata.get("aws_request_id").map(String::as_str),
                Some("req-1")
            );
        }
    }

    #[test]
    fn throttling_and_outages_tell_the_caller_when_to_retry() {
        for error in [
            service("ThrottlingException"),
            service("InternalFailure"),
            UpstreamError::Unavailable {
                source: "connection refused".into(),
            },
        ] {
            let status = upstream_status(error);
            assert_eq!(status.code(), Code::Unavailable);
            assert_eq!(
                status.get_details_retry_info().and_then(|r| r.retry_delay),
                Some(UPSTREAM_RETRY_AFTER)
            );
        }
    }

    #[test]
    fn a_timeout_of_a_state_changing_call_is_indeterminate_and_of_a_read_is_not() {
        let timeout = || UpstreamError::Timeout { request_id: None };
        let status = upstream_call_status(Operation::PutJobSuccessResult, "job", timeout());
        assert_eq!(status.code(), Code::DeadlineExceeded);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata["indeterminate"], "true");

        let status = upstream_call_status(Operation::GetJobDetails, "job", timeout());
        assert_eq!(
            status.get_details_error_info().unwrap().metadata["indeterminate"],
            "false"
        );
    }

    #[test]
    fn missing_gateway_credentials_are_internal_never_unauthenticated() {
        let status = upstream_status(UpstreamError::NoCredentials {
            source: "no creds".into(),
        });
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "GATEWAY_CREDENTIALS_UNAVAILABLE"
        );
    }

    #[test]
    fn unexpected_failures_get_a_generic_message_without_their_cause() {
        let status = upstream_status(UpstreamError::Unexpected {
            source: "secret detail".into(),
        });
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "unexpected error");
    }

    #[test]
    fn a_job_not_found_names_the_job_in_resource_info() {
        let status = upstream_call_status(
            Operation::GetJobDetails,
            "abc",
            service("JobNotFoundException"),
        );
        let resource = status.get_details_resource_info().expect("ResourceInfo");
        assert_eq!(resource.resource_name, "abc");
    }
}
