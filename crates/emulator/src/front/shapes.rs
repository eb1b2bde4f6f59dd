//! The bodies of the job-worker operations, in the service model's member names: requests as
//! CodePipeline accepts them (turned into the protobuf requests, so one validator serves both
//! the gRPC edge and this front) and responses as CodePipeline sends them. serde maps them to
//! either wire protocol, JSON (awsJson1_1) or CBOR (rpcv2Cbor), which share the model's shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use codepipeline_job_port::domain::{
    self, ActionCategory, ActionOwner, FailureType, JobStatus,
    validate::{Constraint, FieldViolation, Shown},
};

use crate::pb::jobworker as pb;

/// A request body whose AWS enum names the protobuf request cannot carry when they are unknown
/// (they become 0, "unset"): it names them, so the error can quote them as AWS does.
pub trait EnumNames {
    /// The unknown enum names of the body, as violations on their proto paths.
    fn unknown_enum_names(&self) -> Vec<FieldViolation> {
        Vec::new()
    }
}

/// A violation for `name` at `field` if it is not one of `D`'s AWS names.
fn unknown_name<D: Copy>(
    field: &str,
    name: Option<&str>,
    all: &[D],
    from_aws: fn(&str) -> Option<D>,
    aws: fn(D) -> &'static str,
) -> Option<FieldViolation> {
    let name = name?;
    from_aws(name).is_none().then(|| {
        FieldViolation::new(
            field,
            Constraint::OneOf {
                proto: Vec::new(),
                aws: all.iter().map(|value| aws(*value)).collect(),
            },
            Shown::text(name),
        )
    })
}

impl ActionTypeIdIn {
    fn unknown_enum_names(&self) -> Vec<FieldViolation> {
        [
            unknown_name(
                "action_type_id.category",
                self.category.as_deref(),
                ActionCategory::ALL,
                ActionCategory::from_aws,
                ActionCategory::as_str,
            ),
            unknown_name(
                "action_type_id.owner",
                self.owner.as_deref(),
                ActionOwner::ALL,
                ActionOwner::from_aws,
                ActionOwner::as_str,
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl FailureDetailsIn {
    fn unknown_enum_names(&self) -> Vec<FieldViolation> {
        unknown_name(
            "failure_details.type",
            self.r#type.as_deref(),
            FailureType::ALL,
            FailureType::from_aws,
            FailureType::as_str,
        )
        .into_iter()
        .collect()
    }
}

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

/// Maps an AWS enum name to its protobuf number; unknown names become 0 (`*_UNSPECIFIED`),
/// which validation rejects ([`EnumNames`] keeps the name for the message).
fn enum_number<D: Copy, P: Into<i32>>(
    name: Option<&str>,
    from_aws: fn(&str) -> Option<D>,
    to_pb: fn(D) -> P,
) -> i32 {
    name.and_then(from_aws)
        .map_or(0, |value| to_pb(value).into())
}

/// JSON numbers can be anything; the model's integers are 32-bit. Out-of-range values are
/// saturated, which keeps them out of range for validation.
fn saturate(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeIdIn {
    category: Option<String>,
    owner: Option<String>,
    provider: Option<String>,
    version: Option<String>,
}

impl From<ActionTypeIdIn> for pb::ActionTypeId {
    fn from(id: ActionTypeIdIn) -> Self {
        Self {
            category: enum_number(
                id.category.as_deref(),
                ActionCategory::from_aws,
                ActionCategory::to_pb,
            ),
            owner: enum_number(
                id.owner.as_deref(),
                ActionOwner::from_aws,
                ActionOwner::to_pb,
            ),
            provider: id.provider.unwrap_or_default(),
            version: id.version.unwrap_or_default(),
        }
    }
}

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
pub struct CurrentRevisionIn {
    revision: Option<String>,
    change_identifier: Option<String>,
    /// Epoch seconds, as awsJson1_1 sends timestamps.
    created: Option<f64>,
    revision_summary: Option<String>,
}

impl From<CurrentRevisionIn> for pb::CurrentRevision {
    fn from(revision: CurrentRevisionIn) -> Self {
        Self {
            revision: revision.revision.unwrap_or_default(),
            change_identifier: revision.change_identifier.unwrap_or_default(),
            created: revision.created.map(epoch_seconds_to_timestamp),
            revision_summary: revision.revision_summary,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDetailsIn {
    summary: Option<String>,
    external_execution_id: Option<String>,
    percent_complete: Option<i64>,
}

impl From<ExecutionDetailsIn> for pb::ExecutionDetails {
    fn from(details: ExecutionDetailsIn) -> Self {
        Self {
            summary: details.summary,
            external_execution_id: details.external_execution_id,
            percent_complete: details.percent_complete.map(saturate),
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

fn epoch_seconds_to_timestamp(seconds: f64) -> prost_types::Timestamp {
    let whole = seconds.floor();
    prost_types::Timestamp {
        // `as` saturates out-of-range floats, and validation rejects what no time can be.
        seconds: whole as i64,
        nanos: ((seconds - whole) * 1e9) as i32,
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureDetailsIn {
    r#type: Option<String>,
    message: Option<String>,
    external_execution_id: Option<String>,
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

impl From<FailureDetailsIn> for pb::FailureDetails {
    fn from(details: FailureDetailsIn) -> Self {
        Self {
            r#type: enum_number(
                details.r#type.as_deref(),
                FailureType::from_aws,
                FailureType::to_pb,
            ),
            message: details.message.unwrap_or_default(),
            external_execution_id: details.external_execution_id,
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
            id: job.id,
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
                id: details.id,
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobDataOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    action_type_id: Option<ActionTypeIdOut>,
    action_configuration: ActionConfigurationOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_context: Option<PipelineContextOut>,
    input_artifacts: Vec<ArtifactOut>,
    output_artifacts: Vec<ArtifactOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_credentials: Option<CredentialsOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_key: Option<EncryptionKeyOut>,
}

impl From<domain::JobData> for JobDataOut {
    fn from(data: domain::JobData) -> Self {
        Self {
            action_type_id: data.action_type_id.map(|id| ActionTypeIdOut {
                category: id.category.as_str(),
                owner: id.owner.as_str(),
                provider: id.provider,
                version: id.version,
            }),
            action_configuration: ActionConfigurationOut {
                configuration: data.action_configuration.0,
            },
            pipeline_context: data.pipeline_context.map(|context| PipelineContextOut {
                pipeline_name: context.pipeline_name,
                stage: context.stage_name.map(|name| NameOut { name }),
                action: Some(ActionContextOut {
                    name: context.action_name,
                    action_execution_id: context.action_execution_id,
                }),
                pipeline_arn: context.pipeline_arn,
                pipeline_execution_id: context.pipeline_execution_id,
            }),
            input_artifacts: data.input_artifacts.into_iter().map(Into::into).collect(),
            output_artifacts: data.output_artifacts.into_iter().map(Into::into).collect(),
            artifact_credentials: data.artifact_credentials.map(|c| CredentialsOut {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: c.session_token,
            }),
            continuation_token: data.continuation_token,
            encryption_key: data.encryption_key.map(|key| EncryptionKeyOut {
                id: key.id,
                r#type: "KMS",
            }),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActionTypeIdOut {
    category: &'static str,
    owner: &'static str,
    provider: String,
    version: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActionConfigurationOut {
    configuration: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PipelineContextOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<NameOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<ActionContextOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_execution_id: Option<String>,
}

#[derive(Serialize)]
struct NameOut {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActionContextOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_execution_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<LocationOut>,
}

impl From<domain::Artifact> for ArtifactOut {
    fn from(artifact: domain::Artifact) -> Self {
        Self {
            name: artifact.name,
            revision: artifact.revision,
            location: artifact.s3_location.map(|s3| LocationOut {
                r#type: "S3",
                s3_location: S3LocationOut {
                    bucket_name: s3.bucket_name,
                    object_key: s3.object_key,
                },
            }),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocationOut {
    r#type: &'static str,
    s3_location: S3LocationOut,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct S3LocationOut {
    bucket_name: String,
    object_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CredentialsOut {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
}

#[derive(Serialize)]
struct EncryptionKeyOut {
    id: String,
    r#type: &'static str,
}
