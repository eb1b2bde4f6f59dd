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
//!
//! The table is kept in three parts: the refusals the gateway decides itself (`refusal.rs`),
//! upstream failures (`upstream.rs`) and the artifact store's answers (`artifact.rs`); the
//! shared domains, retry delay and wording rules are here.

mod artifact;
mod refusal;
mod upstream;

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use artifact::{S3_DOMAIN, artifact_status};
pub use refusal::{LimitScope, Reached, Refusal, StreamViolation};
pub use upstream::{supplied_client_token_rejected, upstream_call_status, upstream_status};

use crate::domain::validate::InvalidRequest;

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

/// AWS messages are short; bound them anyway so nothing unexpected is copied in full.
fn bounded(message: &str) -> String {
    message.chars().take(MAX_AWS_MESSAGE_CHARS).collect()
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
