//! The emulator's AWS wire-protocol front: the job-worker operations (custom and third-party)
//! as CodePipeline serves them, in both its protocols ([`protocol`]): awsJson1_1 (`POST /` with
//! `X-Amz-Target`) and Smithy RPC v2 CBOR (`POST /service/CodePipeline_20150709/operation/<Op>`).
//! Every request is SigV4-checked the same way, and every answer (errors included) carries
//! `x-amzn-RequestId`. The AWS SDKs (Rust, boto3, JavaScript, ...) pointed at it behave as against
//! AWS. The admin gRPC service shares the port, so one address is all a test needs.

use std::{sync::Arc, time::SystemTime};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};

mod protocol;
mod shapes;

pub use super::sigv4::StaticCredentials;
use super::{
    Emulator,
    admin::AdminService,
    faults::Fault,
    sigv4::{self, Payload, Scope, SignedRequest},
};
use codepipeline_job_port::domain::validate::InvalidRequest;
use codepipeline_job_port::upstream::{AwsErrorCode, Operation, UpstreamError};
pub use protocol::Protocol;

/// What the front accepts: the static credentials and the region requests must be signed for.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// The only credentials accepted.
    pub credentials: StaticCredentials,
    /// The region in the signature's scope.
    pub region: String,
}

/// The name CodePipeline's requests are signed for.
const SIGNING_NAME: &str = "codepipeline";

struct Front {
    emulator: Arc<Emulator>,
    config: FrontConfig,
}

/// The router serving both protocols and the admin gRPC service beside them.
pub fn router(emulator: Arc<Emulator>, config: FrontConfig) -> Router {
    let admin = AdminService::new(emulator.clone()).into_server();
    let aws_api = Router::new()
        .route("/", post(aws_json))
        .route(
            "/service/{service}/operation/{operation}",
            post(rpc_v2_cbor),
        )
        .with_state(Arc::new(Front { emulator, config }));
    tonic::service::Routes::new(admin)
        .into_axum_router()
        .merge(aws_api)
        .method_not_allowed_fallback(unknown_path)
        .fallback(unknown_path)
}

/// Anything but the two protocols' POSTs: an AWS error, in the protocol the path suggests.
async fn unknown_path(method: Method, uri: Uri) -> Response {
    let protocol = Protocol::of_path(uri.path());
    let (status, message) = if method == Method::POST {
        (
            StatusCode::NOT_FOUND,
            format!("No operation is served at {}", uri.path()),
        )
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not served: operations are called with POST"),
        )
    };
    let mut response = protocol.error(&request_id(), status, "UnknownOperationException", &message);
    if method != Method::POST {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An AWS error as the front answers it.
struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl From<InvalidRequest> for ApiError {
    /// Words the violations as AWS does: AWS's member paths and values, AWS's clauses.
    fn from(invalid: InvalidRequest) -> Self {
        let count = invalid.violations.len();
        let details: Vec<String> = invalid
            .violations
            .iter()
            .map(|v| {
                format!(
                    "Value {} at '{}' failed to satisfy constraint: Member {}",
                    v.value.aws_quoted(),
                    camel_case_path(&v.field),
                    v.constraint.aws_clause(&v.value)
                )
            })
            .collect();
        let noun = if count == 1 { "error" } else { "errors" };
        Self::bad_request(
            "ValidationException",
            format!("{count} validation {noun} detected: {}", details.join("; ")),
        )
    }
}

impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::Service { code, message, .. } => Self {
                status: match &code {
                    AwsErrorCode::ServiceFault(name) if name == "ServiceUnavailable" => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    AwsErrorCode::ServiceFault(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                },
                code: code.as_str().to_owned(),
                message: message.unwrap_or_default(),
            },
            other => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "InternalFailure".to_owned(),
                message: other.to_string(),
            },
        }
    }
}

/// `action_type_id.provider` -> `actionTypeId.provider`.
fn camel_case_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper_next = false;
    for c in path.chars() {
        match c {
            '_' => upper_next = true,
            c if upper_next => {
                out.extend(c.to_uppercase());
                upper_next = false;
            }
            c => out.push(c),
        }
    }
    out
}

pub use super::faults::DropConnection;

/// How a call is answered: normally, or as an injected fault that strikes after the call took
/// effect.
enum Answer {
    Body(Option<Vec<u8>>),
    Drop,
    Truncated(Vec<u8>),
    Malformed,
}

/// `POST /`: awsJson1_1, the operation named by `X-Amz-Target`.
async fn aws_json(
    State(front): State<Arc<Front>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = headers
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
        .and_then(|target| target.strip_prefix(protocol::SERVICE))
        .and_then(|target| target.strip_prefix('.'))
        .and_then(Operation::from_name);
    answer(&front, Protocol::AwsJson, operation, &uri, &headers, &body).await
}

/// `POST /service/{service}/operation/{operation}`: Smithy RPC v2 CBOR.
async fn rpc_v2_cbor(
    State(front): State<Arc<Front>>,
    Path((service, operation)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = Protocol::is_codepipeline(&service)
        .then(|| Operation::from_name(&operation))
        .flatten();
    answer(
        &front,
        Protocol::RpcV2Cbor,
        operation,
        &uri,
        &headers,
        &body,
    )
    .await
}

async fn answer(
    front: &Front,
    protocol: Protocol,
    operation: Option<Operation>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let request_id = request_id();
    let answer = match serve_call(front, protocol, operation, uri, headers, body).await {
        Ok(answer) => answer,
        Err(error) => {
            return protocol.error(&request_id, error.status, &error.code, &error.message);
        }
    };
    match answer {
        Answer::Body(body) => protocol.answer(&request_id, body),
        Answer::Drop => {
            let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            response.extensions_mut().insert(DropConnection);
            response
        }
        Answer::Truncated(body) => {
            // Promise the whole body, send half of it, then fail the stream: the connection is
            // cut mid-answer.
            let length = body.len();
            let half = Bytes::from(body).slice(..length / 2);
            let chunks = futures_util::stream::iter([
                Ok(half),
                Err(std::io::Error::other("injected truncation")),
            ]);
            let mut response = axum::body::Body::from_stream(chunks).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            response
        }
        Answer::Malformed => protocol.answer(&request_id, Some(protocol.malformed())),
    }
}

async fn serve_call(
    front: &Front,
    protocol: Protocol,
    operation: Option<Operation>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Answer, ApiError> {
    // HTTP/2 callers carry the host as `:authority`; SigV4 signs it as `host`.
    let with_host;
    let headers = match uri.authority() {
        Some(authority) if !headers.contains_key(header::HOST) => {
            let mut copy = headers.clone();
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                copy.insert(header::HOST, host);
            }
            with_host = copy;
            &with_host
        }
        _ => headers,
    };
    let signed = SignedRequest {
        method: "POST",
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers,
        payload: Payload::Body(body),
    };
    let scope = Scope {
        region: &front.config.region,
        service: SIGNING_NAME,
    };
    sigv4::verify(&signed, &front.config.credentials, scope, SystemTime::now()).map_err(
        |failure| {
            let rejection = failure.codepipeline();
            ApiError::bad_request(rejection.code, rejection.message)
        },
    )?;
    if !protocol.headers_conform(headers) {
        return Err(ApiError::bad_request(
            "SerializationException",
            "An rpc-v2-cbor request carries `smithy-protocol: rpc-v2-cbor` and no X-Amz-Target",
        ));
    }
    let operation = operation
        .ok_or_else(|| ApiError::bad_request("UnknownOperationException", "No such operation"))?;

    let emulator = &front.emulator;
    let fault = emulator.enter(operation).await;
    if let Some(fault) = fault.filter(|fault| !fault.after_effect()) {
        return Err(fault.as_upstream_error().into());
    }
    let result = shapes::decode_call(protocol, operation, body)
        .and_then(|call| Ok(emulator.apply(call)?))
        .map(|answer| shapes::encode_answer(protocol, answer));
    Ok(match fault {
        Some(Fault::DropConnection) => Answer::Drop,
        Some(Fault::TruncatedResponse) => {
            Answer::Truncated(result.ok().flatten().unwrap_or_else(|| b"{}".to_vec()))
        }
        Some(Fault::MalformedJson) => Answer::Malformed,
        _ => Answer::Body(result?),
    })
}

/// Decodes and validates a request body as the front does, without running it: `Err` carries
/// the AWS error code the front would answer with. For fuzzing and property tests.
pub fn check_request(protocol: Protocol, operation: Operation, body: &[u8]) -> Result<(), String> {
    shapes::decode_call(protocol, operation, body)
        .map(drop)
        .map_err(|error| error.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_third_party_call_without_its_client_token_is_a_validation_error() {
        let calls = [
            (
                Operation::AcknowledgeThirdPartyJob,
                r#"{"jobId": "j-1", "nonce": "1"}"#,
            ),
            (Operation::GetThirdPartyJobDetails, r#"{"jobId": "j-1"}"#),
            (
                Operation::PutThirdPartyJobSuccessResult,
                r#"{"jobId": "j-1"}"#,
            ),
            (
                Operation::PutThirdPartyJobFailureResult,
                r#"{"jobId": "j-1", "failureDetails": {"type": "JobFailed", "message": "x"}}"#,
            ),
        ];
        for (operation, body) in calls {
            assert_eq!(
                check_request(Protocol::AwsJson, operation, body.as_bytes()),
                Err("ValidationException".to_owned()),
                "{operation:?}"
            );
            let with_token = body.replacen('{', r#"{"clientToken": "t", "#, 1);
            assert_eq!(
                check_request(Protocol::AwsJson, operation, with_token.as_bytes()),
                Ok(()),
                "{operation:?}"
            );
        }
    }

    /// The message the front answers `operation`'s `body` with, in awsJson1_1.
    fn validation_message(operation: Operation, body: &str) -> String {
        match shapes::decode_call(Protocol::AwsJson, operation, body.as_bytes()) {
            Ok(_) => panic!("{body} is valid"),
            Err(error) => {
                assert_eq!(error.code, "ValidationException");
                error.message
            }
        }
    }

    #[test]
    fn validation_errors_are_worded_as_aws_words_them() {
        assert_eq!(
            validation_message(
                Operation::AcknowledgeJob,
                r#"{"jobId": "not-a-job", "nonce": ""}"#
            ),
            "2 validation errors detected: \
             Value 'not-a-job' at 'jobId' failed to satisfy constraint: Member must satisfy regular expression pattern: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}; \
             Value '' at 'nonce' failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
        assert_eq!(
            validation_message(
                Operation::PollForJobs,
                r#"{"actionTypeId": {"category": "Build", "owner": "Partner", "provider": "x.y", "version": "1"}, "maxBatchSize": 0}"#
            ),
            "3 validation errors detected: \
             Value 'Partner' at 'actionTypeId.owner' failed to satisfy constraint: Member must satisfy enum value set: [AWS, ThirdParty, Custom]; \
             Value 'x.y' at 'actionTypeId.provider' failed to satisfy constraint: Member must satisfy regular expression pattern: [0-9A-Za-z_-]+; \
             Value '0' at 'maxBatchSize' failed to satisfy constraint: Member must have value greater than or equal to 1"
        );
        assert_eq!(
            validation_message(
                Operation::PutJobFailureResult,
                r#"{"jobId": "f4f4ff82-2d11-4a2b-9c3d-0123456789ab", "failureDetails": {"type": "Oops", "message": "m"}}"#
            ),
            "1 validation error detected: \
             Value 'Oops' at 'failureDetails.type' failed to satisfy constraint: Member must satisfy enum value set: \
             [JobFailed, ConfigurationError, PermissionError, RevisionOutOfSync, RevisionUnavailable, SystemUnavailable]"
        );
        let missing = validation_message(
            Operation::PutJobFailureResult,
            r#"{"jobId": "f4f4ff82-2d11-4a2b-9c3d-0123456789ab"}"#,
        );
        assert_eq!(
            missing,
            "1 validation error detected: Value null at 'failureDetails' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn field_paths_are_worded_in_the_models_member_names() {
        assert_eq!(
            camel_case_path("action_type_id.provider"),
            "actionTypeId.provider"
        );
        assert_eq!(camel_case_path("job_id"), "jobId");
        assert_eq!(
            camel_case_path("failure_details.external_execution_id"),
            "failureDetails.externalExecutionId"
        );
    }
}
