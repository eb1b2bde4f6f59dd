//! How an upstream call fails: [`UpstreamError`], with the AWS error codes it may carry. What a
//! caller sees for each is decided elsewhere, in the one error table ([`crate::api::status`]).

use std::fmt;

/// The boxed error that carries a failure's cause chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error code CodePipeline (or AWS's front door) answers with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AwsErrorCode {
    /// ValidationException: the request broke a constraint.
    Validation,
    /// InvalidNonceException: the nonce is not the job's current one.
    InvalidNonce,
    /// JobNotFoundException.
    JobNotFound,
    /// ActionTypeNotFoundException.
    ActionTypeNotFound,
    /// InvalidJobStateException: the job is not in a state that allows the call.
    InvalidJobState,
    /// OutputVariablesSizeExceededException.
    OutputVariablesSizeExceeded,
    /// InvalidClientTokenException (third-party actions).
    InvalidClientToken,
    /// InvalidJobException (third-party actions).
    InvalidJob,
    /// ThrottlingException: the account's request rate is over its quota.
    Throttling,
    /// The gateway's own AWS identity was rejected: AccessDenied, UnrecognizedClient, a bad or
    /// missing signature, an expired token.
    IdentityRejected(String),
    /// InternalFailure / ServiceUnavailable: a server-side fault (HTTP 5xx).
    ServiceFault(String),
    /// Any other code.
    Other(String),
}

impl AwsErrorCode {
    /// The code for an AWS error name, as in `__type` or `x-amzn-ErrorType`.
    pub fn from_aws(code: &str) -> Self {
        match code {
            "ValidationException" => Self::Validation,
            "InvalidNonceException" => Self::InvalidNonce,
            "JobNotFoundException" => Self::JobNotFound,
            "ActionTypeNotFoundException" => Self::ActionTypeNotFound,
            "InvalidJobStateException" => Self::InvalidJobState,
            "OutputVariablesSizeExceededException" => Self::OutputVariablesSizeExceeded,
            "InvalidClientTokenException" => Self::InvalidClientToken,
            "InvalidJobException" => Self::InvalidJob,
            "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded" => Self::Throttling,
            "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "IncompleteSignatureException"
            | "MissingAuthenticationToken"
            | "MissingAuthenticationTokenException"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidClientTokenId" => Self::IdentityRejected(code.to_owned()),
            "InternalFailure"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "ServiceUnavailableException" => Self::ServiceFault(code.to_owned()),
            other => Self::Other(other.to_owned()),
        }
    }

    /// The AWS error name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Validation => "ValidationException",
            Self::InvalidNonce => "InvalidNonceException",
            Self::JobNotFound => "JobNotFoundException",
            Self::ActionTypeNotFound => "ActionTypeNotFoundException",
            Self::InvalidJobState => "InvalidJobStateException",
            Self::OutputVariablesSizeExceeded => "OutputVariablesSizeExceededException",
            Self::InvalidClientToken => "InvalidClientTokenException",
            Self::InvalidJob => "InvalidJobException",
            Self::Throttling => "ThrottlingException",
            Self::IdentityRejected(code) | Self::ServiceFault(code) | Self::Other(code) => code,
        }
    }
}

impl fmt::Display for AwsErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an upstream call failed. Classified into a gRPC status in one place:
/// [`crate::api::status`].
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// CodePipeline answered with an error.
    #[error("CodePipeline answered {code}")]
    Service {
        /// The AWS error code.
        code: AwsErrorCode,
        /// AWS's message. Copied (bounded) into statuses only for modelled errors whose AWS text
        /// names no request value (never for ValidationException); never logged.
        message: Option<String>,
        /// The AWS request ID, for support cases.
        request_id: Option<String>,
    },
    /// No answer within the configured or the caller's time budget.
    #[error("CodePipeline did not answer in time")]
    Timeout {
        /// The AWS request ID of the last attempt, when one was seen.
        request_id: Option<String>,
    },
    /// CodePipeline could not be reached, or its answer could not be read.
    #[error("CodePipeline could not be reached or answered unreadably")]
    Unavailable {
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The gateway has no usable AWS credentials of its own.
    #[error("the gateway could not load its AWS credentials")]
    NoCredentials {
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// Anything else: a bug or an unexpected SDK failure.
    #[error("unexpected upstream failure")]
    Unexpected {
        /// What went wrong.
        #[source]
        source: BoxError,
    },
}

impl UpstreamError {
    /// A modelled CodePipeline error with the emulator's own message.
    pub fn service(code: AwsErrorCode, message: impl Into<String>) -> Self {
        Self::Service {
            code,
            message: Some(message.into()),
            request_id: None,
        }
    }

    /// The failure's kind, a closed set (the values of a metrics label).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Service { code, .. } => match code {
                AwsErrorCode::Validation => FailureKind::Validation,
                AwsErrorCode::InvalidNonce => FailureKind::InvalidNonce,
                AwsErrorCode::JobNotFound => FailureKind::JobNotFound,
                AwsErrorCode::ActionTypeNotFound => FailureKind::ActionTypeNotFound,
                AwsErrorCode::InvalidJobState => FailureKind::InvalidJobState,
                AwsErrorCode::OutputVariablesSizeExceeded => {
                    FailureKind::OutputVariablesSizeExceeded
                }
                AwsErrorCode::InvalidClientToken => FailureKind::InvalidClientToken,
                AwsErrorCode::InvalidJob => FailureKind::InvalidJob,
                AwsErrorCode::Throttling => FailureKind::Throttling,
                AwsErrorCode::IdentityRejected(_) => FailureKind::IdentityRejected,
                AwsErrorCode::ServiceFault(_) => FailureKind::ServiceFault,
                AwsErrorCode::Other(_) => FailureKind::OtherError,
            },
            Self::Timeout { .. } => FailureKind::Timeout,
            Self::Unavailable { .. } => FailureKind::Unavailable,
            Self::NoCredentials { .. } => FailureKind::NoCredentials,
            Self::Unexpected { .. } => FailureKind::Unexpected,
        }
    }

    /// The AWS request ID, when the failure came with one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Service { request_id, .. } | Self::Timeout { request_id } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }
}

/// How an upstream call failed, as a closed set: the AWS error code for modelled errors, else
/// what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// ValidationException.
    Validation,
    /// InvalidNonceException.
    InvalidNonce,
    /// JobNotFoundException.
    JobNotFound,
    /// ActionTypeNotFoundException.
    ActionTypeNotFound,
    /// InvalidJobStateException.
    InvalidJobState,
    /// OutputVariablesSizeExceededException.
    OutputVariablesSizeExceeded,
    /// InvalidClientTokenException.
    InvalidClientToken,
    /// InvalidJobException.
    InvalidJob,
    /// ThrottlingException.
    Throttling,
    /// The gateway's own AWS identity was refused.
    IdentityRejected,
    /// A 5xx.
    ServiceFault,
    /// Another AWS error.
    OtherError,
    /// No answer in time.
    Timeout,
    /// CodePipeline could not be reached.
    Unavailable,
    /// The gateway has no AWS credentials.
    NoCredentials,
    /// Anything else.
    Unexpected,
}

impl FailureKind {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "ValidationException",
            Self::InvalidNonce => "InvalidNonceException",
            Self::JobNotFound => "JobNotFoundException",
            Self::ActionTypeNotFound => "ActionTypeNotFoundException",
            Self::InvalidJobState => "InvalidJobStateException",
            Self::OutputVariablesSizeExceeded => "OutputVariablesSizeExceededException",
            Self::InvalidClientToken => "InvalidClientTokenException",
            Self::InvalidJob => "InvalidJobException",
            Self::Throttling => "ThrottlingException",
            Self::IdentityRejected => "identity_rejected",
            Self::ServiceFault => "service_fault",
            Self::OtherError => "other_error",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::NoCredentials => "no_credentials",
            Self::Unexpected => "unexpected",
        }
    }
}
