//! Conversions between domain values and their protobuf messages, in the direction the gateway
//! needs: enums both ways, responses and recorded results to protobuf, and the job description
//! the emulator's admin service accepts from protobuf.

use std::time::SystemTime;

use super::*;
use crate::pb::jobworker as pb;

/// Declares the mapping between a domain enum and its generated protobuf enum.
macro_rules! pb_enum {
    ($domain:ident <=> $pb:ident { $($variant:ident <=> $pb_variant:ident,)+ }) => {
        impl $domain {
            /// The protobuf value; `*_UNSPECIFIED` is never produced.
            pub fn to_pb(self) -> pb::$pb {
                match self {
                    $(Self::$variant => pb::$pb::$pb_variant,)+
                }
            }

            /// The domain value, or `None` for `*_UNSPECIFIED`.
            pub fn from_pb(value: pb::$pb) -> Option<Self> {
                match value {
                    $(pb::$pb::$pb_variant => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

pb_enum!(ActionCategory <=> ActionCategory {
    Source <=> Source,
    Build <=> Build,
    Deploy <=> Deploy,
    Test <=> Test,
    Invoke <=> Invoke,
    Approval <=> Approval,
    Compute <=> Compute,
});

pb_enum!(ActionOwner <=> ActionOwner {
    Aws <=> Aws,
    ThirdParty <=> ThirdParty,
    Custom <=> Custom,
});

pb_enum!(JobStatus <=> JobStatus {
    Created <=> Created,
    Queued <=> Queued,
    Dispatched <=> Dispatched,
    InProgress <=> InProgress,
    TimedOut <=> TimedOut,
    Succeeded <=> Succeeded,
    Failed <=> Failed,
});

pb_enum!(FailureType <=> FailureType {
    JobFailed <=> JobFailed,
    ConfigurationError <=> ConfigurationError,
    PermissionError <=> PermissionError,
    RevisionOutOfSync <=> RevisionOutOfSync,
    RevisionUnavailable <=> RevisionUnavailable,
    SystemUnavailable <=> SystemUnavailable,
});

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    time.into()
}

impl From<&ActionTypeId> for pb::ActionTypeId {
    fn from(id: &ActionTypeId) -> Self {
        Self {
            category: id.category.to_pb().into(),
            owner: id.owner.to_pb().into(),
            provider: id.provider.clone(),
            version: id.version.clone(),
        }
    }
}

impl From<Job> for pb::Job {
    fn from(job: Job) -> Self {
        Self {
            id: job.id.into(),
            data: Some(job.data.into()),
            nonce: job.nonce,
            account_id: job.account_id,
        }
    }
}

impl From<JobDetails> for pb::JobDetails {
    fn from(details: JobDetails) -> Self {
        Self {
            id: details.id.into(),
            data: Some(details.data.into()),
            account_id: details.account_id,
        }
    }
}

impl From<ThirdPartyJob> for pb::ThirdPartyJob {
    fn from(job: ThirdPartyJob) -> Self {
        Self {
            client_id: job.client_id,
            job_id: job.job_id,
        }
    }
}

impl From<ThirdPartyJobDetails> for pb::ThirdPartyJobDetails {
    fn from(details: ThirdPartyJobDetails) -> Self {
        Self {
            id: details.id,
            data: Some(details.data.into()),
            nonce: details.nonce,
        }
    }
}

impl From<JobData> for pb::JobData {
    fn from(data: JobData) -> Self {
        Self {
            action_type_id: data.action_type_id.as_ref().map(Into::into),
            action_configuration: Some(pb::ActionConfiguration {
                configuration: data.action_configuration.0.into_iter().collect(),
            }),
            pipeline_context: data.pipeline_context.map(Into::into),
            input_artifacts: data.input_artifacts.into_iter().map(Into::into).collect(),
            output_artifacts: data.output_artifacts.into_iter().map(Into::into).collect(),
            artifact_credentials: data
                .artifact_credentials
                .map(|c| pb::AwsSessionCredentials {
                    access_key_id: c.access_key_id,
                    secret_access_key: c.secret_access_key,
                    session_token: c.session_token,
                }),
            continuation_token: data.continuation_token,
            encryption_key: data.encryption_key.map(|key| pb::EncryptionKey {
                id: key.id,
                r#type: pb::EncryptionKeyType::Kms.into(),
            }),
        }
    }
}

impl From<PipelineContext> for pb::PipelineContext {
    fn from(context: PipelineContext) -> Self {
        Self {
            pipeline_name: context.pipeline_name.unwrap_or_default(),
            stage: context.stage_name.map(|name| pb::StageContext { name }),
            action: (context.action_name.is_some() || context.action_execution_id.is_some()).then(
                || pb::ActionContext {
                    name: context.action_name.unwrap_or_default(),
                    action_execution_id: context.action_execution_id.unwrap_or_default(),
                },
            ),
            pipeline_arn: context.pipeline_arn.unwrap_or_default(),
            pipeline_execution_id: context.pipeline_execution_id.unwrap_or_default(),
        }
    }
}

/// Proto3 strings have no presence: the empty string means "not set".
fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

impl From<pb::PipelineContext> for PipelineContext {
    fn from(context: pb::PipelineContext) -> Self {
        let action = context.action.unwrap_or_default();
        Self {
            pipeline_name: non_empty(context.pipeline_name),
            stage_name: context.stage.and_then(|stage| non_empty(stage.name)),
            action_name: non_empty(action.name),
            action_execution_id: non_empty(action.action_execution_id),
            pipeline_arn: non_empty(context.pipeline_arn),
            pipeline_execution_id: non_empty(context.pipeline_execution_id),
        }
    }
}

impl From<Artifact> for pb::Artifact {
    fn from(artifact: Artifact) -> Self {
        Self {
            name: artifact.name.unwrap_or_default(),
            revision: artifact.revision.unwrap_or_default(),
            location: artifact.s3_location.map(|s3| pb::ArtifactLocation {
                r#type: pb::ArtifactLocationType::S3.into(),
                s3_location: Some(pb::S3ArtifactLocation {
                    bucket_name: s3.bucket_name,
                    object_key: s3.object_key,
                }),
            }),
        }
    }
}

impl From<pb::Artifact> for Artifact {
    fn from(artifact: pb::Artifact) -> Self {
        Self {
            name: non_empty(artifact.name),
            revision: non_empty(artifact.revision),
            s3_location: artifact
                .location
                .and_then(|location| location.s3_location)
                .map(|s3| S3Location {
                    bucket_name: s3.bucket_name,
                    object_key: s3.object_key,
                }),
        }
    }
}

impl From<&ExecutionDetails> for pb::ExecutionDetails {
    fn from(details: &ExecutionDetails) -> Self {
        Self {
            summary: details.summary.clone(),
            external_execution_id: details.external_execution_id.clone(),
            percent_complete: details.percent_complete.map(i32::from),
        }
    }
}

impl From<&CurrentRevision> for pb::CurrentRevision {
    fn from(revision: &CurrentRevision) -> Self {
        Self {
            revision: revision.revision.clone(),
            change_identifier: revision.change_identifier.clone(),
            created: revision.created.map(timestamp),
            revision_summary: revision.revision_summary.clone(),
        }
    }
}

impl From<&FailureDetails> for pb::FailureDetails {
    fn from(details: &FailureDetails) -> Self {
        Self {
            r#type: details.kind.to_pb().into(),
            message: details.message.clone(),
            external_execution_id: details.external_execution_id.clone(),
        }
    }
}

// The answers as the gRPC responses: what each operation's output becomes on the way back.

impl From<Vec<Job>> for pb::PollForJobsResponse {
    fn from(jobs: Vec<Job>) -> Self {
        Self {
            jobs: jobs.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<JobStatus> for pb::AcknowledgeJobResponse {
    fn from(status: JobStatus) -> Self {
        Self {
            status: status.to_pb().into(),
        }
    }
}

impl From<JobDetails> for pb::GetJobDetailsResponse {
    fn from(details: JobDetails) -> Self {
        Self {
            job_details: Some(details.into()),
        }
    }
}

impl From<()> for pb::PutJobSuccessResultResponse {
    fn from((): ()) -> Self {
        Self {}
    }
}

impl From<()> for pb::PutJobFailureResultResponse {
    fn from((): ()) -> Self {
        Self {}
    }
}

impl From<Vec<ThirdPartyJob>> for pb::PollForThirdPartyJobsResponse {
    fn from(jobs: Vec<ThirdPartyJob>) -> Self {
        Self {
            jobs: jobs.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<JobStatus> for pb::AcknowledgeThirdPartyJobResponse {
    fn from(status: JobStatus) -> Self {
        Self {
            status: status.to_pb().into(),
        }
    }
}

impl From<ThirdPartyJobDetails> for pb::GetThirdPartyJobDetailsResponse {
    fn from(details: ThirdPartyJobDetails) -> Self {
        Self {
            job_details: Some(details.into()),
        }
    }
}

impl From<()> for pb::PutThirdPartyJobSuccessResultResponse {
    fn from((): ()) -> Self {
        Self {}
    }
}

impl From<()> for pb::PutThirdPartyJobFailureResultResponse {
    fn from((): ()) -> Self {
        Self {}
    }
}
