//! The emulator's AWS wire-protocol front: the job-worker operations (custom and third-party)
//! over awsJson1_1, as CodePipeline serves
//! them (`POST /` with `X-Amz-Target: CodePipeline_20150709.<Operation>`, SigV4-signed, errors as
//! `{"__type": ..., "message": ...}` with `x-amzn-ErrorType` and `x-amzn-RequestId`). The AWS
//! SDKs (Rust, boto3, ...) pointed at it behave as against AWS. The admin gRPC service shares the
//! port, so one address is all a test needs.

use std::{sync::Arc, time::SystemTime};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::{Serialize, de::DeserializeOwned};

mod aws_json;

pub use super::sigv4::StaticCredentials;
use super::{
    Emulator,
    admin::AdminService,
    faults::Fault,
    sigv4::{self, SignedRequest},
};
use crate::{
    domain::{
        ThirdPartyInput, ThirdPartyRequest,
        validate::{self, InvalidRequest},
    },
    pb::jobworker as pb,
    upstream::{AwsErrorCode, Operation, UpstreamError},
};

/// The `X-Amz-Target` prefix of CodePipeline's operations.
const TARGET_PREFIX: &str = "CodePipeline_20150709.";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// What the front accepts: the static credentials and the region requests must be signed for.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// The only credentials accepted.
    pub credentials: StaticCredentials,
    /// The region in the signature's scope.
    pub region: String,
}

struct Front {
    emulator: Arc<Emulator>,
    config: FrontConfig,
}

/// The router serving awsJson1_1 on `POST /` and the admin gRPC service beside it.
pub fn router(emulator: Arc<Emulator>, config: FrontConfig) -> Router {
    let admin = AdminService::new(emulator.clone()).into_server();
    let aws_json_api = Router::new()
        .route("/", post(aws_json))
        .with_state(Arc::new(Front { emulator, config }));
    tonic::service::Routes::new(admin)
        .into_axum_router()
        .merge(aws_json_api)
        .fallback(unknown_path)
}

async fn unknown_path() -> Response {
    error_response(
        &request_id(),
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        "Only POST / is served",
    )
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
    /// Words the violations as AWS does, with the model's camelCase member paths.
    fn from(invalid: InvalidRequest) -> Self {
        let count = invalid.violations.len();
        let details: Vec<String> = invalid
            .violations
            .iter()
            .map(|v| {
                format!(
                    "Value at '{}' failed to satisfy constraint: Member {}",
                    camel_case_path(&v.field),
                    v.description
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

/// Marks a response whose connection must be closed instead of answered (an injected
/// `drop` fault); the connection layer of the emulator's server acts on it, and returns it as
/// the error that makes hyper close the connection.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("injected fault: connection dropped")]
pub struct DropConnection;

/// How a call is answered: normally, or as an injected fault that strikes after the call took
/// effect.
enum Answer {
    Json(Vec<u8>),
    Drop,
    Truncated(Vec<u8>),
    Malformed,
}

async fn aws_json(
    State(front): State<Arc<Front>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = request_id();
    let answer = match serve_call(&front, &method, &uri, &headers, &body).await {
        Ok(answer) => answer,
        Err(error) => {
            return error_response(&request_id, error.status, &error.code, &error.message);
        }
    };
    let json = match answer {
        Answer::Json(json) => json,
        Answer::Drop => {
            let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            response.extensions_mut().insert(DropConnection);
            return response;
        }
        Answer::Truncated(json) => {
            // Promise the whole body, send half of it, then fail the stream: the connection is
            // cut mid-answer.
            let length = json.len();
            let half = Bytes::from(json).slice(..length / 2);
            let chunks = futures_util::stream::iter([
                Ok(half),
                Err(std::io::Error::other("injected truncation")),
            ]);
            let mut response = axum::body::Body::from_stream(chunks).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            return response;
        }
        Answer::Malformed => br#"{"jobs": [{"id": "#.to_vec(),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                HeaderValue::from_str(&request_id).expect("a UUID is a valid header value"),
            ),
        ],
        json,
    )
        .into_response()
}

async fn serve_call(
    front: &Front,
    method: &Method,
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
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers,
        body,
    };
    sigv4::verify(
        &signed,
        &front.config.credentials,
        &front.config.region,
        SystemTime::now(),
    )
    .map_err(|rejection| ApiError::bad_request(rejection.code, rejection.message))?;

    let operation = headers
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
        .and_then(|target| target.strip_prefix(TARGET_PREFIX))
        .and_then(Operation::from_name)
        .ok_or_else(|| ApiError::bad_request("UnknownOperationException", ""))?;

    let emulator = &front.emulator;
    let fault = emulator.enter(operation).await;
    if let Some(fault) = fault.filter(|fault| !fault.after_effect()) {
        return Err(fault.as_upstream_error().into());
    }
    let result = match operation {
        Operation::PollForJobs => {
            call::<aws_json::PollForJobsIn, pb::PollForJobsRequest, _, _>(body, |input| {
                let jobs = emulator.poll(&input)?;
                Ok(aws_json::PollForJobsOut {
                    jobs: jobs.into_iter().map(Into::into).collect(),
                })
            })
        }
        Operation::AcknowledgeJob => {
            call::<aws_json::AcknowledgeJobIn, pb::AcknowledgeJobRequest, _, _>(body, |input| {
                emulator
                    .acknowledge(&input)
                    .map(aws_json::AcknowledgeJobOut::from)
            })
        }
        Operation::GetJobDetails => {
            call::<aws_json::GetJobDetailsIn, pb::GetJobDetailsRequest, _, _>(body, |input| {
                emulator
                    .details(&input)
                    .map(aws_json::GetJobDetailsOut::from)
            })
        }
        Operation::PutJobSuccessResult => {
            call::<aws_json::PutJobSuccessResultIn, pb::PutJobSuccessResultRequest, _, _>(
                body,
                |input| emulator.succeed(input).map(|()| aws_json::Empty {}),
            )
        }
        Operation::PutJobFailureResult => {
            call::<aws_json::PutJobFailureResultIn, pb::PutJobFailureResultRequest, _, _>(
                body,
                |input| emulator.fail(input).map(|()| aws_json::Empty {}),
            )
        }
        Operation::PollForThirdPartyJobs => {
            call::<aws_json::PollForThirdPartyJobsIn, pb::PollForThirdPartyJobsRequest, _, _>(
                body,
                |input| {
                    let jobs = emulator.poll_third_party(&input)?;
                    Ok(aws_json::PollForThirdPartyJobsOut {
                        jobs: jobs.into_iter().map(Into::into).collect(),
                    })
                },
            )
        }
        Operation::AcknowledgeThirdPartyJob => call_third_party::<
            aws_json::AcknowledgeThirdPartyJobIn,
            pb::AcknowledgeThirdPartyJobRequest,
            _,
            _,
        >(body, |input| {
            emulator
                .acknowledge_third_party(&input)
                .map(aws_json::AcknowledgeJobOut::from)
        }),
        Operation::GetThirdPartyJobDetails => call_third_party::<
            aws_json::GetThirdPartyJobDetailsIn,
            pb::GetThirdPartyJobDetailsRequest,
            _,
            _,
        >(body, |input| {
            emulator
                .details_third_party(&input)
                .map(aws_json::GetThirdPartyJobDetailsOut::from)
        }),
        Operation::PutThirdPartyJobSuccessResult => call_third_party::<
            aws_json::PutThirdPartyJobSuccessResultIn,
            pb::PutThirdPartyJobSuccessResultRequest,
            _,
            _,
        >(body, |input| {
            emulator
                .succeed_third_party(input)
                .map(|()| aws_json::Empty {})
        }),
        Operation::PutThirdPartyJobFailureResult => call_third_party::<
            aws_json::PutThirdPartyJobFailureResultIn,
            pb::PutThirdPartyJobFailureResultRequest,
            _,
            _,
        >(body, |input| {
            emulator
                .fail_third_party(input)
                .map(|()| aws_json::Empty {})
        }),
    };
    Ok(match fault {
        Some(Fault::DropConnection) => Answer::Drop,
        Some(Fault::TruncatedResponse) => {
            Answer::Truncated(result.unwrap_or_else(|_| b"{}".to_vec()))
        }
        Some(Fault::MalformedJson) => Answer::Malformed,
        _ => Answer::Json(result?),
    })
}

/// Runs one operation: JSON body -> protobuf request -> validated input -> engine -> JSON.
fn call<Body, Proto, Input, Output>(
    body: &[u8],
    run: impl FnOnce(Input) -> Result<Output, UpstreamError>,
) -> Result<Vec<u8>, ApiError>
where
    Body: DeserializeOwned + Into<Proto>,
    Input: TryFrom<Proto, Error = InvalidRequest>,
    Output: Serialize,
{
    let input = decode::<Body, Proto, Input>(body)?;
    let output = run(input)?;
    Ok(serde_json::to_vec(&output).expect("responses serialize"))
}

/// Runs one third-party operation, whose request must carry its client token itself: the
/// front is CodePipeline, which has no tokens to supply.
fn call_third_party<Body, Proto, Call, Output>(
    body: &[u8],
    run: impl FnOnce(ThirdPartyInput<Call>) -> Result<Output, UpstreamError>,
) -> Result<Vec<u8>, ApiError>
where
    Body: DeserializeOwned + Into<Proto>,
    ThirdPartyRequest<Call>: TryFrom<Proto, Error = InvalidRequest>,
    Output: Serialize,
{
    let request = decode::<Body, Proto, ThirdPartyRequest<Call>>(body)?;
    let output = run(validate::with_own_client_token(request)?)?;
    Ok(serde_json::to_vec(&output).expect("responses serialize"))
}

/// Decodes and validates a request body. Decoding into the protobuf request first lets the
/// gRPC edge's validator check it, so both doors enforce the same constraints.
fn decode<Body, Proto, Input>(body: &[u8]) -> Result<Input, ApiError>
where
    Body: DeserializeOwned + Into<Proto>,
    Input: TryFrom<Proto, Error = InvalidRequest>,
{
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    let request: Body = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request(
            "SerializationException",
            "The request body is not valid JSON for this operation",
        )
    })?;
    Ok(Input::try_from(request.into())?)
}

/// Decodes and validates an awsJson1_1 request body as the front does, without running it:
/// `Err` carries the AWS error code the front would answer with. For fuzzing and property tests.
pub fn check_request(operation: Operation, body: &[u8]) -> Result<(), String> {
    use crate::domain::{
        AcknowledgeJobInput, AcknowledgeThirdParty, FailureDetails, GetJobDetailsInput,
        PollForJobsInput, PollForThirdPartyJobsInput, PutJobFailureResultInput,
        PutJobSuccessResultInput, ThirdPartySuccess,
    };
    let result = match operation {
        Operation::PollForJobs => {
            decode::<aws_json::PollForJobsIn, pb::PollForJobsRequest, PollForJobsInput>(body)
                .map(drop)
        }
        Operation::AcknowledgeJob => {
            decode::<aws_json::AcknowledgeJobIn, pb::AcknowledgeJobRequest, AcknowledgeJobInput>(
                body,
            )
            .map(drop)
        }
        Operation::GetJobDetails => {
            decode::<aws_json::GetJobDetailsIn, pb::GetJobDetailsRequest, GetJobDetailsInput>(body)
                .map(drop)
        }
        Operation::PutJobSuccessResult => decode::<
            aws_json::PutJobSuccessResultIn,
            pb::PutJobSuccessResultRequest,
            PutJobSuccessResultInput,
        >(body)
        .map(drop),
        Operation::PutJobFailureResult => decode::<
            aws_json::PutJobFailureResultIn,
            pb::PutJobFailureResultRequest,
            PutJobFailureResultInput,
        >(body)
        .map(drop),
        Operation::PollForThirdPartyJobs => decode::<
            aws_json::PollForThirdPartyJobsIn,
            pb::PollForThirdPartyJobsRequest,
            PollForThirdPartyJobsInput,
        >(body)
        .map(drop),
        Operation::AcknowledgeThirdPartyJob => check_third_party::<
            aws_json::AcknowledgeThirdPartyJobIn,
            pb::AcknowledgeThirdPartyJobRequest,
            AcknowledgeThirdParty,
        >(body),
        Operation::GetThirdPartyJobDetails => check_third_party::<
            aws_json::GetThirdPartyJobDetailsIn,
            pb::GetThirdPartyJobDetailsRequest,
            (),
        >(body),
        Operation::PutThirdPartyJobSuccessResult => check_third_party::<
            aws_json::PutThirdPartyJobSuccessResultIn,
            pb::PutThirdPartyJobSuccessResultRequest,
            ThirdPartySuccess,
        >(body),
        Operation::PutThirdPartyJobFailureResult => check_third_party::<
            aws_json::PutThirdPartyJobFailureResultIn,
            pb::PutThirdPartyJobFailureResultRequest,
            FailureDetails,
        >(body),
    };
    result.map_err(|error| error.code)
}

fn check_third_party<Body, Proto, Call>(body: &[u8]) -> Result<(), ApiError>
where
    Body: DeserializeOwned + Into<Proto>,
    ThirdPartyRequest<Call>: TryFrom<Proto, Error = InvalidRequest>,
{
    let request = decode::<Body, Proto, ThirdPartyRequest<Call>>(body)?;
    validate::with_own_client_token(request)?;
    Ok(())
}

fn error_response(request_id: &str, status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": code, "message": message }).to_string();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(value) = HeaderValue::from_str(code) {
        headers.insert("x-amzn-errortype", value);
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    response
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
                check_request(operation, body.as_bytes()),
                Err("ValidationException".to_owned()),
                "{operation:?}"
            );
            let with_token = body.replacen('{', r#"{"clientToken": "t", "#, 1);
            assert_eq!(
                check_request(operation, with_token.as_bytes()),
                Ok(()),
                "{operation:?}"
            );
        }
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
