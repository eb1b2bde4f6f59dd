//! Upstream failures as statuses: what CodePipeline answered (its error codes), or that it
//! did not (timeouts, outages, the gateway's own AWS identity), for the call that met it.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{AWS_DOMAIN, GATEWAY_DOMAIN, UPSTREAM_RETRY_AFTER, bounded, cause_chain};
use crate::upstream::{AwsErrorCode, Operation, UpstreamError};

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
            service_error(code, &aws_message, resource, &mut details)
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

/// The code and message for an error CodePipeline answered with, `aws_message` its own words.
fn service_error(
    code: &AwsErrorCode,
    aws_message: &str,
    resource: Option<&str>,
    details: &mut ErrorDetails,
) -> (Code, String) {
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

/// Says in the ErrorInfo whether the call may have taken effect although it failed: a lost
/// answer to a call that claims or completes a job leaves its outcome unknown.
fn indeterminate(metadata: &mut HashMap<String, String>, operation: Option<Operation>) {
    let indeterminate = operation.is_some_and(Operation::changes_job_state);
    metadata.insert("indeterminate".to_owned(), indeterminate.to_string());
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
