//! The bodies of the job-worker operations, in the service model's member names: requests as
//! CodePipeline accepts them (turned into the protobuf requests, so one validator serves both
//! the gRPC edge and this front) and responses as CodePipeline sends them. serde maps them to
//! either wire protocol, JSON (awsJson1_1) or CBOR (rpcv2Cbor), which share the model's shapes.
//!
//! The top of this file is the front's table of operations: which request shape each
//! operation's body is and which response shape its answer becomes. Adding an operation adds a
//! row to each of [`decode_call`] and [`encode_answer`], and its shapes below them.

mod members;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use codepipeline_job_port::{
    domain::{
        self, JobStatus, ThirdPartyInput, ThirdPartyRequest,
        validate::{self, FieldViolation, InvalidRequest},
    },
    upstream::{Operation, UpstreamAnswer, UpstreamCall},
};

pub use members::EnumNames;
use members::{
    ActionTypeIdIn, CurrentRevisionIn, ExecutionDetailsIn, FailureDetailsIn, JobDataOut, saturate,
};

use super::{ApiError, protocol::Protocol};
use crate::pb::jobworker as pb;

/// Decodes and validates an operation's request body into its call. Decoding into the protobuf
/// request first lets the gRPC edge's validator check it, so both doors enforce the same
/// constraints.
pub fn decode_call(
    protocol: Protocol,
    operation: Operation,
    body: &[u8],
) -> Result<UpstreamCall, ApiError> {
    let call = Request { protocol, body };
    Ok(match operation {
        Operation::PollForJobs => UpstreamCall::PollForJobs(call.custom::<PollForJobsIn, _>()?),
        Operation::AcknowledgeJob => {
            UpstreamCall::AcknowledgeJob(call.custom::<AcknowledgeJobIn, _>()?)
        }
        Operation::GetJobDetails => {
            UpstreamCall::GetJobDetails(call.custom::<GetJobDetailsIn, _>()?)
        }
        Operation::PutJobSuccessResult => {
            UpstreamCall::PutJobSuccessResult(call.custom::<PutJobSuccessResultIn, _>()?)
        }
        Operation::PutJobFailureResult => {
            UpstreamCall::PutJobFailureResult(call.custom::<PutJobFailureResultIn, _>()?)
        }
        Operation::PollForThirdPartyJobs => {
            UpstreamCall::PollForThirdPartyJobs(call.custom::<PollForThirdPartyJobsIn, _>()?)
        }
        Operation::AcknowledgeThirdPartyJob => UpstreamCall::AcknowledgeThirdPartyJob(
            call.third_party::<AcknowledgeThirdPartyJobIn, _>()?,
        ),
        Operation::GetThirdPartyJobDetails => UpstreamCall::GetThirdPartyJobDetails(
            call.third_party::<GetThirdPartyJobDetailsIn, _>()?,
        ),
        Operation::PutThirdPartyJobSuccessResult => UpstreamCall::PutThirdPartyJobSuccessResult(
            call.third_party::<PutThirdPartyJobSuccessResultIn, _>()?,
        ),
        Operation::PutThirdPartyJobFailureResult => UpstreamCall::PutThirdPartyJobFailureResult(
            call.third_party::<PutThirdPartyJobFailureResultIn, _>()?,
        ),
    })
}

/// An operation's answer as its response body (`None`: no body, rpcv2Cbor's `Unit`).
pub fn encode_answer(protocol: Protocol, answer: UpstreamAnswer) -> Option<Vec<u8>> {
    match answer {
        UpstreamAnswer::PollForJobs(jobs) => protocol.encode(&PollForJobsOut {
            jobs: jobs.into_iter().map(Into::into).collect(),
        }),
        UpstreamAnswer::AcknowledgeJob(status)
        | UpstreamAnswer::AcknowledgeThirdPartyJob(status) => {
            protocol.encode(&AcknowledgeJobOut::from(status))
        }
        UpstreamAnswer::GetJobDetails(details) => protocol.encode(&GetJobDetailsOut::from(details)),
        UpstreamAnswer::PollForThirdPartyJobs(jobs) => protocol.encode(&PollForThirdPartyJobsOut {
            jobs: jobs.into_iter().map(Into::into).collect(),
        }),
        UpstreamAnswer::GetThirdPartyJobDetails(details) => {
            protocol.encode(&GetThirdPartyJobDetailsOut::from(details))
        }
        UpstreamAnswer::PutJobSuccessResult(())
        | UpstreamAnswer::PutJobFailureResult(())
        | UpstreamAnswer::PutThirdPartyJobSuccessResult(())
        | UpstreamAnswer::PutThirdPartyJobFailureResult(()) => protocol.encode(&Empty {}),
    }
}

/// A request body in the model's member names, and the protobuf request it becomes.
pub trait RequestShape: DeserializeOwned + EnumNames + Into<Self::Proto> {
    /// The protobuf request.
    type Proto;
}

/// One call's request body, in its protocol.
struct Request<'a> {
    protocol: Protocol,
    body: &'a [u8],
}

impl Request<'_> {
    /// A custom (or third-party poll) request: body -> protobuf request -> validated input.
    fn custom<Shape, Input>(&self) -> Result<Input, ApiError>
    where
        Shape: RequestShape,
        Input: TryFrom<Shape::Proto, Error = InvalidRequest>,
    {
        let request: Shape = self.protocol.decode(self.body).map_err(|_| {
            ApiError::bad_request(
                "SerializationException",
                self.protocol.undecodable_message(),
            )
        })?;
        let unknown_names = request.unknown_enum_names();
        Input::try_from(request.into()).map_err(|invalid| with_names(invalid, unknown_names).into())
    }

    /// A third-party request, which must carry its client token itself: the front is
    /// CodePipeline, which has no tokens to supply.
    fn third_party<Shape, T>(&self) -> Result<ThirdPartyInput<T>, ApiError>
    where
        Shape: RequestShape,
        ThirdPartyRequest<T>: TryFrom<Shape::Proto, Error = InvalidRequest>,
    {
        let request = self.custom::<Shape, ThirdPartyRequest<T>>()?;
        Ok(validate::with_own_client_token(request)?)
    }
}

/// An unknown enum name reached the validator as "unset": say what it was.
fn with_names(mut invalid: InvalidRequest, names: Vec<FieldViolation>) -> InvalidRequest {
    for named in names {
        if let Some(violation) = invalid
            .violations
            .iter_mut()
            .find(|v| v.field == named.field)
        {
            *violation = named;
        }
    }
    invalid
}

macro_rules! request_shapes {
    ($($shape:ident => $proto:ident,)*) => {
        $(impl RequestShape for $shape {
            type Proto = pb::$proto;
        })*
    };
}

request_shapes! {
    PollForJobsIn => PollForJobsRequest,
    AcknowledgeJobIn => AcknowledgeJobRequest,
    GetJobDetailsIn => GetJobDetailsRequest,
    PutJobSuccessResultIn => PutJobSuccessResultRequest,
    PutJobFailureResultIn => PutJobFailureResultRequest,
    PollForThirdPartyJobsIn => PollForThirdPartyJobsRequest,
    AcknowledgeThirdPartyJobIn => AcknowledgeThirdPartyJobRequest,
    GetThirdPartyJobDetailsIn => GetThirdPartyJobDetailsRequest,
    PutThirdPartyJobSuccessResultIn => PutThirdPartyJobSuccessResultRequest,
    PutThirdPartyJobFailureResultIn => PutThirdPartyJobFailureResultRequest,
}

// ---- requests ----

impl EnumNames for PollForJobsIn {
    fn unknown_enum_names(&self) -> Vec<FieldViolation> {
        self.action_type_id
            .as_ref()
            .map(ActionTypeIdIn::unknown_enum_names)
            .unwrap_or_default()
    }
}

impl EnumNames for PollForThirdPartyJobsIn {
    fn unknown_enum_names(&self) -> Vec<FieldViolation> {
        self.action_type_id
            .as_ref()
            .map(ActionTypeIdIn::unknown_enum_names)
            .unwrap_or_default()
    }
}

impl EnumNames for PutJobFailureResultIn {
    fn unknown_enum_names(&self) -> Vec<FieldViolation> {
        self.failure_details
            .as_ref()
            .map(FailureDetailsIn::unknown_enum_names)
            .unwrap_or_default()
    }
}

impl EnumNames for PutThirdPartyJobFailureResultIn {
    fn unknown_enum_names(&self) -> Vec<FieldViolation> {
        self.failure_details
            .as_ref()
            .map(FailureDetailsIn::unknown_enum_names)
            .unwrap_or_default()
    }
}

impl EnumNames for AcknowledgeJobIn {}
impl EnumNames for GetJobDetailsIn {}
impl EnumNames for PutJobSuccessResultIn {}
impl EnumNames for AcknowledgeThirdPartyJobIn {}
impl EnumNames for GetThirdPartyJobDetailsIn {}
impl EnumNames for PutThirdPartyJobSuccessResultIn {}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollForJobsIn {
    action_type_id: Option<ActionTypeIdIn>,
    max_batch_size: Option<i64>,
    query_param: Option<BTreeMap<String, String>>,
}

impl From<PollForJobsIn> for pb::PollForJobsRequest {
    fn from(request: PollForJobsIn) -> Self {
        Self {
            action_type_id: request.action_type_id.map(Into::into),
            max_batch_size: request.max_batch_size.map(saturate),
            query_param: request
                .query_param
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcknowledgeJobIn {
    job_id: Option<String>,
    nonce: Option<String>,
}

impl From<AcknowledgeJobIn> for pb::AcknowledgeJobRequest {
    fn from(request: AcknowledgeJobIn) -> Self {
        Self {
            job_id: request.job_id.unwrap_or_default(),
            nonce: request.nonce.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetJobDetailsIn {
    job_id: Option<String>,
}

impl From<GetJobDetailsIn> for pb::GetJobDetailsRequest {
    fn from(request: GetJobDetailsIn) -> Self {
        Self {
            job_id: request.job_id.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutJobSuccessResultIn {
    job_id: Option<String>,
    current_revision: Option<CurrentRevisionIn>,
    continuation_token: Option<String>,
    execution_details: Option<ExecutionDetailsIn>,
    output_variables: Option<BTreeMap<String, String>>,
}

impl From<PutJobSuccessResultIn> for pb::PutJobSuccessResultRequest {
    fn from(request: PutJobSuccessResultIn) -> Self {
        Self {
            job_id: request.job_id.unwrap_or_default(),
            current_revision: request.current_revision.map(Into::into),
            continuation_token: request.continuation_token,
            execution_details: request.execution_details.map(Into::into),
            output_variables: request
                .output_variables
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutJobFailureResultIn {
    job_id: Option<String>,
    failure_details: Option<FailureDetailsIn>,
}

impl From<PutJobFailureResultIn> for pb::PutJobFailureResultRequest {
    fn from(request: PutJobFailureResultIn) -> Self {
        Self {
            job_id: request.job_id.unwrap_or_default(),
            failure_details: request.failure_details.map(Into::into),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollForThirdPartyJobsIn {
    action_type_id: Option<ActionTypeIdIn>,
    max_batch_size: Option<i64>,
}

impl From<PollForThirdPartyJobsIn> for pb::PollForThirdPartyJobsRequest {
    fn from(request: PollForThirdPartyJobsIn) -> Self {
        Self {
            action_type_id: request.action_type_id.map(Into::into),
            max_batch_size: request.max_batch_size.map(saturate),
        }
    }
}

// The third-party requests: `clientToken` is required on the wire (the front checks it is
// there); the gRPC edge's `client_id`, which lets the gateway supply the token, is not a
// CodePipeline member.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcknowledgeThirdPartyJobIn {
    job_id: Option<String>,
    nonce: Option<String>,
    client_token: Option<String>,
}

impl From<AcknowledgeThirdPartyJobIn> for pb::AcknowledgeThirdPartyJobRequest {
    fn from(request: AcknowledgeThirdPartyJobIn) -> Self {
        Self {
            job_id: request.job_id.unwrap_or_default(),
            nonce: request.nonce.unwrap_or_default(),
            client_token: request.client_token.unwrap_or_default(),
            client_id: String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetThirdPartyJobDetailsIn {
    job_id: Option<String>,
    client_token: Option<String>,
}

impl From<GetThirdPartyJobDetailsIn> for pb::GetThirdPartyJobDetailsRequest {
    fn from(request: GetThirdPartyJobDetailsIn) -> Self {
        Self {
            job_id: request.job_id.unwrap_or_default(),
            client_token: request.client_token.unwrap_or_default(),
            client_id: String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutThirdPartyJobSuccessResultIn {
    job_id: Option<String>,
    client_token: Option<String>,
    current_revision: Option<CurrentRevisionIn>,
    continuation_token: Option<String>,
    execution_details: Option<ExecutionDetailsIn>,
}

impl From<PutThirdPartyJobSuccessResultIn> for pb::PutThirdPartyJobSuccessResultRequest {
    fn from(request: PutThirdPartyJobSuccessResultIn) -> Self {
        Self {
            job_id: request.job_id.unwrap_or_default(),
            client_token: request.client_token.unwrap_or_default(),
            client_id: String::new(),
            current_revision: request.current_revision.map(Into::into),
            continuation_token: request.continuation_token,
            execution_details: request.execution_details.map(Into::into),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutThirdPartyJobFailureResultIn {
    job_id: Option<String>,
    client_token: Option<String>,
    failure_details: Option<FailureDetailsIn>,
}

impl From<PutThirdPartyJobFailureResultIn> for pb::PutThirdPartyJobFailureResultRequest {
    fn from(request: PutThirdPartyJobFailureResultIn) -> Self {
        Self {
            job_id: request.job_id.unwrap_or_default(),
            client_token: request.client_token.unwrap_or_default(),
            client_id: String::new(),
            failure_details: request.failure_details.map(Into::into),
        }
    }
}

// ---- responses ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollForJobsOut {
    pub jobs: Vec<JobOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOut {
    id: String,
    data: JobDataOut,
    nonce: String,
    account_id: String,
}

impl From<domain::Job> for JobOut {
    fn from(job: domain::Job) -> Self {
        Self {
            id: job.id.into(),
            data: job.data.into(),
            nonce: job.nonce,
            account_id: job.account_id,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AcknowledgeJobOut {
    pub status: &'static str,
}

impl From<JobStatus> for AcknowledgeJobOut {
    fn from(status: JobStatus) -> Self {
        Self {
            status: status.as_str(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetJobDetailsOut {
    job_details: JobDetailsOut,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobDetailsOut {
    id: String,
    data: JobDataOut,
    account_id: String,
}

impl From<domain::JobDetails> for GetJobDetailsOut {
    fn from(details: domain::JobDetails) -> Self {
        Self {
            job_details: JobDetailsOut {
                id: details.id.into(),
                data: details.data.into(),
                account_id: details.account_id,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollForThirdPartyJobsOut {
    pub jobs: Vec<ThirdPartyJobOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThirdPartyJobOut {
    client_id: String,
    job_id: String,
}

impl From<domain::ThirdPartyJob> for ThirdPartyJobOut {
    fn from(job: domain::ThirdPartyJob) -> Self {
        Self {
            client_id: job.client_id,
            job_id: job.job_id,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetThirdPartyJobDetailsOut {
    job_details: ThirdPartyJobDetailsOut,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThirdPartyJobDetailsOut {
    id: String,
    data: JobDataOut,
    /// Absent while the job has no nonce (not handed out, or finished).
    #[serde(skip_serializing_if = "String::is_empty")]
    nonce: String,
}

impl From<domain::ThirdPartyJobDetails> for GetThirdPartyJobDetailsOut {
    fn from(details: domain::ThirdPartyJobDetails) -> Self {
        Self {
            job_details: ThirdPartyJobDetailsOut {
                id: details.id,
                data: details.data.into(),
                nonce: details.nonce,
            },
        }
    }
}

/// The output of the Put*Result operations: none (`Unit`). awsJson1_1 answers `{}`, rpcv2Cbor
/// no body at all.
#[derive(Serialize)]
pub struct Empty {}

/// An operation's output shape.
pub trait Output: Serialize {
    /// Whether the operation has no output (`Unit`).
    const UNIT: bool = false;
}

impl Output for Empty {
    const UNIT: bool = true;
}
impl Output for PollForJobsOut {}
impl Output for AcknowledgeJobOut {}
impl Output for GetJobDetailsOut {}
impl Output for PollForThirdPartyJobsOut {}
impl Output for GetThirdPartyJobDetailsOut {}
