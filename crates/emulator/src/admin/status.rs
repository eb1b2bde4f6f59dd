//! What the admin service answers when a request is invalid or the engine refuses it: the
//! emulator's own small error table (the gateway's is for the job-worker API, and this crate
//! does not depend on the gateway). The engine's refusals keep their AWS error code as the
//! ErrorInfo reason, so a test can tell them apart.

use std::collections::HashMap;

use codepipeline_job_port::{
    domain::validate::InvalidRequest,
    upstream::{AwsErrorCode, UpstreamError},
};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The ErrorInfo domain of the admin service's refusals.
pub const ADMIN_DOMAIN: &str = "codepipeline-emulator";

/// INVALID_ARGUMENT with one BadRequest field violation per broken constraint.
pub fn invalid_request(invalid: InvalidRequest) -> Status {
    let mut details = ErrorDetails::new();
    for violation in &invalid.violations {
        details.add_bad_request_violation(&violation.field, &violation.description);
    }
    Status::with_error_details(Code::InvalidArgument, invalid.to_string(), details)
}

/// The engine refused an admin request.
pub fn refused(error: UpstreamError) -> Status {
    let UpstreamError::Service { code, message, .. } = &error else {
        return Status::internal(error.to_string());
    };
    let grpc_code = match code {
        AwsErrorCode::Validation => Code::InvalidArgument,
        AwsErrorCode::JobNotFound | AwsErrorCode::InvalidJob | AwsErrorCode::ActionTypeNotFound => {
            Code::NotFound
        }
        AwsErrorCode::InvalidJobState | AwsErrorCode::OutputVariablesSizeExceeded => {
            Code::FailedPrecondition
        }
        AwsErrorCode::InvalidNonce => Code::Aborted,
        AwsErrorCode::InvalidClientToken | AwsErrorCode::IdentityRejected(_) => {
            Code::PermissionDenied
        }
        AwsErrorCode::Throttling | AwsErrorCode::ServiceFault(_) => Code::Unavailable,
        AwsErrorCode::Other(_) => Code::Internal,
    };
    let mut details = ErrorDetails::new();
    details.set_error_info(code.as_str(), ADMIN_DOMAIN, HashMap::new());
    let message = message.clone().unwrap_or_else(|| code.as_str().to_owned());
    Status::with_error_details(grpc_code, message, details)
}

/// The store holds as many bytes as its limits allow: RESOURCE_EXHAUSTED, nothing attached.
pub fn store_full() -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("STORE_FULL", ADMIN_DOMAIN, HashMap::new());
    Status::with_error_details(
        Code::ResourceExhausted,
        "the emulator's store holds as many bytes as its limits allow",
        details,
    )
}
