//! The members the operations' bodies share: the action type, revision, execution and failure
//! details a request carries, and the job data a response carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use codepipeline_job_port::domain::{
    self, ActionCategory, ActionOwner, FailureType,
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
pub(super) fn unknown_name<D: Copy>(
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
    pub(super) fn unknown_enum_names(&self) -> Vec<FieldViolation> {
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
    pub(super) fn unknown_enum_names(&self) -> Vec<FieldViolation> {
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

/// Maps an AWS enum name to its protobuf number; unknown names become 0 (`*_UNSPECIFIED`),
/// which validation rejects ([`EnumNames`] keeps the name for the message).
pub(super) fn enum_number<D: Copy, P: Into<i32>>(
    name: Option<&str>,
    from_aws: fn(&str) -> Option<D>,
    to_pb: fn(D) -> P,
) -> i32 {
    name.and_then(from_aws)
        .map_or(0, |value| to_pb(value).into())
}

/// JSON numbers can be anything; the model's integers are 32-bit. Out-of-range values are
/// saturated, which keeps them out of range for validation.
pub(super) fn saturate(value: i64) -> i32 {
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JobDataOut {
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
pub(super) struct ActionTypeIdOut {
    category: &'static str,
    owner: &'static str,
    provider: String,
    version: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ActionConfigurationOut {
    configuration: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PipelineContextOut {
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
pub(super) struct NameOut {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ActionContextOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_execution_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ArtifactOut {
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
pub(super) struct LocationOut {
    r#type: &'static str,
    s3_location: S3LocationOut,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct S3LocationOut {
    bucket_name: String,
    object_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CredentialsOut {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
}

#[derive(Serialize)]
pub(super) struct EncryptionKeyOut {
    id: String,
    r#type: &'static str,
}
