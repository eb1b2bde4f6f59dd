//! The job-worker API as validated Rust types: what the service handlers, the upstreams and the
//! emulator exchange.
//!
//! Requests reach the handlers only as these types, made from protobuf messages by [`validate`]
//! (`TryFrom<pb::...>`), which checks every constraint of the AWS service model: no handler can
//! forget a check and no invalid request reaches an upstream. Their fields are public so the
//! adapters can read them; the identifiers inside ([`JobId`], [`Nonce`]) can only be made by
//! parsing. Responses are plain data: they come from CodePipeline, which the gateway trusts.

pub mod constraint;
mod enums;
mod ids;
mod pb_convert;
pub mod validate;

use std::{collections::BTreeMap, fmt, time::SystemTime};

pub use enums::{ActionCategory, ActionOwner, FailureType, JobStatus};
pub use ids::{ClientId, ClientToken, JobId, Nonce, ThirdPartyJobId};

/// Identifies an action type: category, owner, provider and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionTypeId {
    /// The category of the action.
    pub category: ActionCategory,
    /// Who created the action type.
    pub owner: ActionOwner,
    /// The provider: 1..35 characters of `[0-9A-Za-z_-]`.
    pub provider: String,
    /// The version: 1..9 characters of `[0-9A-Za-z_-]`.
    pub version: String,
}

impl fmt::Display for ActionTypeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.category, self.owner, self.provider, self.version
        )
    }
}

/// The one queryable configuration property a poll may filter on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueryParam {
    /// The property's name.
    pub key: String,
    /// The value jobs must have for it.
    pub value: String,
}

/// A validated PollForJobs request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollForJobsInput {
    /// The action type to poll for; its owner is always [`ActionOwner::Custom`].
    pub action_type_id: ActionTypeId,
    /// The most jobs to return, when the caller set it.
    pub max_batch_size: Option<u32>,
    /// The optional filter on a queryable property.
    pub query_param: Option<QueryParam>,
}

/// A validated StreamJobs subscription: what a job feed delivers, and the stream's credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeInput {
    /// The action type; its owner is always [`ActionOwner::Custom`].
    pub action_type_id: ActionTypeId,
    /// The optional filter on a queryable property.
    pub query_param: Option<QueryParam>,
    /// The initial credit and the most the stream may hold.
    pub max_outstanding_jobs: u32,
}

/// How a third-party call names its client's token: given by the worker, or to be supplied
/// by the gateway for this client (its client-token file), or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredential {
    /// The worker sent the token.
    Token(ClientToken),
    /// The worker named the job's client; the gateway supplies its token.
    Client(ClientId),
    /// Neither: the gateway may know the job's client from its own poll.
    Unnamed,
}

/// A validated third-party request, before the gateway settles which client token it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThirdPartyRequest<T> {
    /// The job.
    pub job_id: ThirdPartyJobId,
    /// The token, or where to find it.
    pub credential: ClientCredential,
    /// The rest of the request.
    pub call: T,
}

/// A validated third-party request with its client token, as it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThirdPartyInput<T> {
    /// The job.
    pub job_id: ThirdPartyJobId,
    /// The client token.
    pub client_token: ClientToken,
    /// The rest of the request.
    pub call: T,
}

impl<T> ThirdPartyRequest<T> {
    /// The request with `client_token`.
    pub fn with_token(self, client_token: ClientToken) -> ThirdPartyInput<T> {
        ThirdPartyInput {
            job_id: self.job_id,
            client_token,
            call: self.call,
        }
    }
}

/// A validated PollForThirdPartyJobs request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollForThirdPartyJobsInput {
    /// The action type; its owner is always [`ActionOwner::ThirdParty`].
    pub action_type_id: ActionTypeId,
    /// The most jobs to return, when the caller set it.
    pub max_batch_size: Option<u32>,
}

/// A third-party job a poll returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThirdPartyJob {
    /// Its client.
    pub client_id: String,
    /// The job.
    pub job_id: String,
}

/// AcknowledgeThirdPartyJob's own member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcknowledgeThirdParty {
    /// The nonce GetThirdPartyJobDetails returned.
    pub nonce: Nonce,
}

/// PutThirdPartyJobSuccessResult's own members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThirdPartySuccess {
    /// The revision a source action worked on.
    pub current_revision: Option<CurrentRevision>,
    /// Asks CodePipeline to continue the action with this token.
    pub continuation_token: Option<String>,
    /// What the worker did.
    pub execution_details: Option<ExecutionDetails>,
}

/// The details of a third-party job, as GetThirdPartyJobDetails returns them.
#[derive(Clone, PartialEq, Eq)]
pub struct ThirdPartyJobDetails {
    /// The job's ID.
    pub id: String,
    /// What the job is about.
    pub data: JobData,
    /// The nonce to acknowledge it with.
    pub nonce: String,
}

impl fmt::Debug for ThirdPartyJobDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThirdPartyJobDetails")
            .field("id", &self.id)
            .field("data", &self.data)
            .field("nonce", &"<redacted>")
            .finish()
    }
}

/// The job an artifact call is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactJob {
    /// A custom job.
    Custom(JobId),
    /// A third-party job, with its client token or where to find it.
    ThirdParty(ThirdPartyRequest<()>),
}

impl ArtifactJob {
    /// The job's ID as text, for messages and resource names.
    pub fn id(&self) -> &str {
        match self {
            Self::Custom(id) => id.as_str(),
            Self::ThirdParty(request) => request.job_id.as_str(),
        }
    }
}

/// A validated DownloadInputArtifact request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadInputArtifactInput {
    /// The job.
    pub job: ArtifactJob,
    /// The input artifact's name.
    pub artifact_name: String,
}

/// A validated UploadOutputArtifact header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOutputArtifactInput {
    /// The job.
    pub job: ArtifactJob,
    /// The output artifact's name.
    pub artifact_name: String,
    /// The object's content type.
    pub content_type: String,
    /// The object's size, when the worker declared it.
    pub size_bytes: Option<u64>,
}

/// A validated AcknowledgeJob request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcknowledgeJobInput {
    /// The job.
    pub job_id: JobId,
    /// The nonce PollForJobs handed out with it.
    pub nonce: Nonce,
}

/// A validated GetJobDetails request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetJobDetailsInput {
    /// The job.
    pub job_id: JobId,
}

/// A validated PutJobSuccessResult request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutJobSuccessResultInput {
    /// The job.
    pub job_id: JobId,
    /// The revision a source action worked on.
    pub current_revision: Option<CurrentRevision>,
    /// Asks CodePipeline to continue the action with this token. Never set with output variables.
    pub continuation_token: Option<String>,
    /// What the worker did.
    pub execution_details: Option<ExecutionDetails>,
    /// The action's output variables.
    pub output_variables: BTreeMap<String, String>,
}

/// A validated PutJobFailureResult request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutJobFailureResultInput {
    /// The job.
    pub job_id: JobId,
    /// Why it failed.
    pub failure_details: FailureDetails,
}

/// The revision a source action worked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentRevision {
    /// The revision.
    pub revision: String,
    /// The change identifier of the revision.
    pub change_identifier: String,
    /// When the revision was created.
    pub created: Option<SystemTime>,
    /// A summary of the revision.
    pub revision_summary: Option<String>,
}

/// What a job worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionDetails {
    /// A summary for the console.
    pub summary: Option<String>,
    /// The worker's own ID for the execution.
    pub external_execution_id: Option<String>,
    /// How far the work is, 0..=100.
    pub percent_complete: Option<u8>,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureDetails {
    /// The kind of failure.
    pub kind: FailureType,
    /// What went wrong.
    pub message: String,
    /// The worker's own ID for the execution.
    pub external_execution_id: Option<String>,
}

/// A job handed out by PollForJobs. `Debug` shows neither the nonce nor the job data's secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Job {
    /// The job's ID.
    pub id: JobId,
    /// What the job is about.
    pub data: JobData,
    /// The nonce to acknowledge it with.
    pub nonce: String,
    /// The AWS account that owns the job.
    pub account_id: String,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("data", &self.data)
            .field("nonce", &"<redacted>")
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// A job's details, as GetJobDetails returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDetails {
    /// The job's ID.
    pub id: JobId,
    /// What the job is about.
    pub data: JobData,
    /// The AWS account that owns the job.
    pub account_id: String,
}

/// What a job is about. Holds secrets: its `Debug` output shows none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobData {
    /// The action type.
    pub action_type_id: Option<ActionTypeId>,
    /// The action's configuration, secret properties included.
    pub action_configuration: ActionConfiguration,
    /// Where in the pipeline the job comes from.
    pub pipeline_context: Option<PipelineContext>,
    /// The artifacts the action reads.
    pub input_artifacts: Vec<Artifact>,
    /// The artifacts the action writes.
    pub output_artifacts: Vec<Artifact>,
    /// Temporary credentials for the artifact bucket.
    pub artifact_credentials: Option<SessionCredentials>,
    /// The token of the job this one continues.
    pub continuation_token: Option<String>,
    /// The key that encrypts the artifacts.
    pub encryption_key: Option<EncryptionKey>,
}

/// An action's configuration properties, secret ones included; `Debug` shows only the names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ActionConfiguration(pub BTreeMap<String, String>);

impl fmt::Debug for ActionConfiguration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|key| (key, "<redacted>")))
            .finish()
    }
}

/// Temporary AWS credentials; `Debug` shows none of them.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionCredentials {
    /// The access key ID.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token.
    pub session_token: String,
}

impl fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionCredentials(<redacted>)")
    }
}

/// Where in a pipeline a job comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineContext {
    /// The pipeline's name.
    pub pipeline_name: Option<String>,
    /// The stage's name.
    pub stage_name: Option<String>,
    /// The action's name.
    pub action_name: Option<String>,
    /// The ID of this execution of the action.
    pub action_execution_id: Option<String>,
    /// The pipeline's ARN.
    pub pipeline_arn: Option<String>,
    /// The ID of the pipeline execution.
    pub pipeline_execution_id: Option<String>,
}

/// An input or output artifact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Artifact {
    /// The artifact's name.
    pub name: Option<String>,
    /// The artifact's revision.
    pub revision: Option<String>,
    /// The S3 object holding it.
    pub s3_location: Option<S3Location>,
}

/// An S3 object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket_name: String,
    /// The object key.
    pub object_key: String,
}

/// The KMS key that encrypts a pipeline's artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionKey {
    /// The key's ID, ARN or alias ARN.
    pub id: String,
}
