//! The AWS adapter: the [`Upstream`] port served by the real CodePipeline API through
//! `aws-sdk-codepipeline`, configured by `aws-config`: the
//! default credential chain (environment, profile, web identity / IRSA, EKS Pod Identity,
//! instance metadata), region, `AWS_ENDPOINT_URL` or an explicit endpoint, and explicit timeouts
//! and retry attempts (the SDK sets no operation timeout by default).

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_credential_types::provider::{SharedCredentialsProvider, error::CredentialsError};
use aws_sdk_codepipeline::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    operation::RequestId,
    types as sdk,
};
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{Intercept, context::BeforeTransmitInterceptorContextRef},
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::{DateTime, config_bag::ConfigBag};

use crate::{
    domain::{
        AcknowledgeJobInput, AcknowledgeThirdParty, ActionCategory, ActionConfiguration,
        ActionOwner, ActionTypeId, Artifact, EncryptionKey, FailureDetails, GetJobDetailsInput,
        Job, JobData, JobDetails, JobId, JobStatus, PipelineContext, PollForJobsInput,
        PollForThirdPartyJobsInput, PutJobFailureResultInput, PutJobSuccessResultInput, S3Location,
        SessionCredentials, ThirdPartyInput, ThirdPartyJob, ThirdPartyJobDetails,
        ThirdPartySuccess,
    },
    observability::traces,
    upstream::{AwsErrorCode, Operation, Upstream, UpstreamAnswer, UpstreamCall, UpstreamError},
};

/// Settings of the SDK client, as configured.
#[derive(Debug, Clone)]
pub struct SdkSettings {
    /// The region, when not taken from the environment.
    pub region: Option<String>,
    /// A CodePipeline endpoint to use instead of AWS's.
    pub endpoint_url: Option<String>,
    /// The wire protocol.
    pub protocol: WireProtocol,
    /// How long to wait for a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// The budget of one operation, retries included (the artifact store's S3 calls; the
    /// gateway's own retries of CodePipeline calls are bounded by it too).
    pub operation_timeout: Duration,
    /// The budget of one attempt.
    pub attempt_timeout: Duration,
    /// Attempts per operation, the first included: the SDK's for S3, the gateway's for
    /// CodePipeline.
    pub max_attempts: u32,
}

/// CodePipeline's wire protocols: the SDK speaks either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireProtocol {
    /// awsJson1_1.
    AwsJson,
    /// Smithy RPC v2 CBOR.
    RpcV2Cbor,
}

/// The `aws` upstream: one SDK client, shared by every call, making one attempt per call. The
/// gateway decides what is retried ([`crate::upstream::Retries`]), so that each attempt spends
/// the upstream budget: the SDK's own retries would repeat calls the budget never saw.
#[derive(Debug, Clone)]
pub struct AwsUpstream {
    client: Client,
}

impl AwsUpstream {
    /// Loads the SDK configuration from the environment and the settings: region, endpoint,
    /// timeouts, retries, credentials. `credentials` replaces the default credential chain
    /// (tests use static credentials).
    pub async fn sdk_config(
        settings: &SdkSettings,
        credentials: Option<SharedCredentialsProvider>,
    ) -> anyhow::Result<aws_config::SdkConfig> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.connect_timeout)
            .operation_timeout(settings.operation_timeout)
            .operation_attempt_timeout(settings.attempt_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts));
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let config = loader.load().await;
        if config.region().is_none() {
            anyhow::bail!(
                "no AWS region: give --aws-region, or set AWS_REGION or a profile's region"
            );
        }
        Ok(config)
    }

    /// The upstream over `config` (see [`Self::sdk_config`]).
    pub fn new(config: &aws_config::SdkConfig, settings: &SdkSettings) -> Self {
        // Set on the CodePipeline config only: the SDK config would hand the protocol to every
        // client made from it, the artifact store's S3 client included.
        let client_config = || {
            let mut builder =
                aws_sdk_codepipeline::config::Builder::from(config).interceptor(CountAttempts);
            if let Some(endpoint) = &settings.endpoint_url {
                builder = builder.endpoint_url(endpoint);
            }
            match settings.protocol {
                WireProtocol::AwsJson => builder,
                WireProtocol::RpcV2Cbor => {
                    builder.protocol(aws_smithy_cbor::protocol::RpcV2CborProtocol::new())
                }
            }
        };
        // One attempt per call: the gateway retries ([`crate::upstream::Retries`]).
        let one_attempt = TimeoutConfig::builder()
            .connect_timeout(settings.connect_timeout)
            .operation_timeout(settings.attempt_timeout)
            .operation_attempt_timeout(settings.attempt_timeout)
            .build();
        let config = client_config()
            .retry_config(RetryConfig::disabled())
            .timeout_config(one_attempt)
            .build();
        Self {
            client: Client::from_conf(config),
        }
    }
}

#[async_trait]
impl Upstream for AwsUpstream {
    async fn call(&self, call: UpstreamCall) -> Result<UpstreamAnswer, UpstreamError> {
        use UpstreamAnswer as Answer;
        Ok(match call {
            UpstreamCall::PollForJobs(input) => {
                Answer::PollForJobs(self.poll_for_jobs(input).await?)
            }
            UpstreamCall::AcknowledgeJob(input) => {
                Answer::AcknowledgeJob(self.acknowledge_job(input).await?)
            }
            UpstreamCall::GetJobDetails(input) => {
                Answer::GetJobDetails(self.get_job_details(input).await?)
            }
            UpstreamCall::PutJobSuccessResult(input) => {
                Answer::PutJobSuccessResult(self.put_job_success_result(input).await?)
            }
            UpstreamCall::PutJobFailureResult(input) => {
                Answer::PutJobFailureResult(self.put_job_failure_result(input).await?)
            }
            UpstreamCall::PollForThirdPartyJobs(input) => {
                Answer::PollForThirdPartyJobs(self.poll_for_third_party_jobs(input).await?)
            }
            UpstreamCall::AcknowledgeThirdPartyJob(input) => {
                Answer::AcknowledgeThirdPartyJob(self.acknowledge_third_party_job(input).await?)
            }
            UpstreamCall::GetThirdPartyJobDetails(input) => {
                Answer::GetThirdPartyJobDetails(self.get_third_party_job_details(input).await?)
            }
            UpstreamCall::PutThirdPartyJobSuccessResult(input) => {
                Answer::PutThirdPartyJobSuccessResult(
                    self.put_third_party_job_success_result(input).await?,
                )
            }
            UpstreamCall::PutThirdPartyJobFailureResult(input) => {
                Answer::PutThirdPartyJobFailureResult(
                    self.put_third_party_job_failure_result(input).await?,
                )
            }
        })
    }
}

/// One SDK call per operation: the request built from the domain input, the answer read back
/// into the domain. Sending, the request id and the failure's class are [`sent`]'s.
impl AwsUpstream {
    async fn poll_for_jobs(&self, input: PollForJobsInput) -> Result<Vec<Job>, UpstreamError> {
        let request = self
            .client
            .poll_for_jobs()
            .action_type_id(sdk_action_type_id(&input.action_type_id)?)
            .set_max_batch_size(input.max_batch_size.map(sdk_batch_size))
            .set_query_param(input.query_param.map(|q| HashMap::from([(q.key, q.value)])));
        let output = sent(request.send()).await?;
        Ok(output
            .jobs
            .unwrap_or_default()
            .into_iter()
            .filter_map(|job| {
                // A job no worker could name back (its id is not CodePipeline's UUID) cannot
                // be worked through the gateway: it is left to time out upstream, said once.
                let Some(id) = job.id.as_deref().and_then(|id| JobId::parse(id).ok()) else {
                    tracing::warn!(id = ?job.id, "PollForJobs answered a job with a malformed id; skipped");
                    return None;
                };
                Some(Job {
                    id,
                    data: job.data.map(job_data).unwrap_or_default(),
                    nonce: job.nonce.unwrap_or_default(),
                    account_id: job.account_id.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn acknowledge_job(
        &self,
        input: AcknowledgeJobInput,
    ) -> Result<JobStatus, UpstreamError> {
        let request = self
            .client
            .acknowledge_job()
            .job_id(input.job_id.as_str())
            .nonce(input.nonce.as_str());
        job_status(
            sent(request.send()).await?.status,
            Operation::AcknowledgeJob,
        )
    }

    async fn get_job_details(
        &self,
        input: GetJobDetailsInput,
    ) -> Result<JobDetails, UpstreamError> {
        let request = self.client.get_job_details().job_id(input.job_id.as_str());
        let details = sent(request.send())
            .await?
            .job_details
            .ok_or_else(|| answered_without("GetJobDetails", "job details"))?;
        let id = details
            .id
            .as_deref()
            .and_then(|id| JobId::parse(id).ok())
            .ok_or_else(|| answered_without("GetJobDetails", "a well-formed job id"))?;
        Ok(JobDetails {
            id,
            data: details.data.map(job_data).unwrap_or_default(),
            account_id: details.account_id.unwrap_or_default(),
        })
    }

    async fn put_job_success_result(
        &self,
        input: PutJobSuccessResultInput,
    ) -> Result<(), UpstreamError> {
        let output_variables = (!input.output_variables.is_empty()).then(|| {
            input
                .output_variables
                .into_iter()
                .collect::<HashMap<_, _>>()
        });
        let request = self
            .client
            .put_job_success_result()
            .job_id(input.job_id.as_str())
            .set_current_revision(sdk_current_revision(input.current_revision)?)
            .set_continuation_token(input.continuation_token)
            .set_execution_details(input.execution_details.map(sdk_execution_details))
            .set_output_variables(output_variables);
        sent(request.send()).await.map(drop)
    }

    async fn put_job_failure_result(
        &self,
        input: PutJobFailureResultInput,
    ) -> Result<(), UpstreamError> {
        let request = self
            .client
            .put_job_failure_result()
            .job_id(input.job_id.as_str())
            .failure_details(sdk_failure_details(input.failure_details)?);
        sent(request.send()).await.map(drop)
    }

    async fn poll_for_third_party_jobs(
        &self,
        input: PollForThirdPartyJobsInput,
    ) -> Result<Vec<ThirdPartyJob>, UpstreamError> {
        let request = self
            .client
            .poll_for_third_party_jobs()
            .action_type_id(sdk_action_type_id(&input.action_type_id)?)
            .set_max_batch_size(input.max_batch_size.map(sdk_batch_size));
        Ok(sent(request.send())
            .await?
            .jobs
            .unwrap_or_default()
            .into_iter()
            .map(|job| ThirdPartyJob {
                client_id: job.client_id.unwrap_or_default(),
                job_id: job.job_id.unwrap_or_default(),
            })
            .collect())
    }

    async fn acknowledge_third_party_job(
        &self,
        input: ThirdPartyInput<AcknowledgeThirdParty>,
    ) -> Result<JobStatus, UpstreamError> {
        let request = self
            .client
            .acknowledge_third_party_job()
            .job_id(input.job_id.as_str())
            .nonce(input.call.nonce.as_str())
            .client_token(input.client_token.expose());
        job_status(
            sent(request.send()).await?.status,
            Operation::AcknowledgeThirdPartyJob,
        )
    }

    async fn get_third_party_job_details(
        &self,
        input: ThirdPartyInput<()>,
    ) -> Result<ThirdPartyJobDetails, UpstreamError> {
        let request = self
            .client
            .get_third_party_job_details()
            .job_id(input.job_id.as_str())
            .client_token(input.client_token.expose());
        let details = sent(request.send())
            .await?
            .job_details
            .ok_or_else(|| answered_without("GetThirdPartyJobDetails", "job details"))?;
        Ok(ThirdPartyJobDetails {
            id: details.id.unwrap_or_default(),
            data: details.data.map(third_party_job_data).unwrap_or_default(),
            nonce: details.nonce.unwrap_or_default(),
        })
    }

    async fn put_third_party_job_success_result(
        &self,
        input: ThirdPartyInput<ThirdPartySuccess>,
    ) -> Result<(), UpstreamError> {
        let success = input.call;
        let request = self
            .client
            .put_third_party_job_success_result()
            .job_id(input.job_id.as_str())
            .client_token(input.client_token.expose())
            .set_current_revision(sdk_current_revision(success.current_revision)?)
            .set_continuation_token(success.continuation_token)
            .set_execution_details(success.execution_details.map(sdk_execution_details));
        sent(request.send()).await.map(drop)
    }

    async fn put_third_party_job_failure_result(
        &self,
        input: ThirdPartyInput<FailureDetails>,
    ) -> Result<(), UpstreamError> {
        let request = self
            .client
            .put_third_party_job_failure_result()
            .job_id(input.job_id.as_str())
            .client_token(input.client_token.expose())
            .failure_details(sdk_failure_details(input.call)?);
        sent(request.send()).await.map(drop)
    }
}

/// Sends one SDK request: its AWS request id noted in the call's span, its failure sorted into
/// the gateway's upstream errors.
async fn sent<O, E>(send: impl Future<Output = Result<O, SdkError<E>>>) -> Result<O, UpstreamError>
where
    O: RequestId,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let output = send.await.map_err(classify)?;
    record_request_id(output.request_id());
    Ok(output)
}

/// A batch size as the SDK takes it (the model's bound is far below `i32::MAX`).
fn sdk_batch_size(size: u32) -> i32 {
    i32::try_from(size).unwrap_or(i32::MAX)
}

/// The status an acknowledgement answered with.
fn job_status(
    status: Option<sdk::JobStatus>,
    operation: Operation,
) -> Result<JobStatus, UpstreamError> {
    status
        .as_ref()
        .and_then(|status| JobStatus::from_aws(status.as_str()))
        .ok_or_else(|| answered_without(operation.as_str(), "a known status"))
}

fn answered_without(operation: &str, what: &str) -> UpstreamError {
    UpstreamError::Unexpected {
        source: format!("{operation} answered without {what}").into(),
    }
}

fn sdk_current_revision(
    revision: Option<crate::domain::CurrentRevision>,
) -> Result<Option<sdk::CurrentRevision>, UpstreamError> {
    revision
        .map(|revision| {
            sdk::CurrentRevision::builder()
                .revision(revision.revision)
                .change_identifier(revision.change_identifier)
                .set_created(revision.created.map(DateTime::from))
                .set_revision_summary(revision.revision_summary)
                .build()
        })
        .transpose()
        .map_err(unexpected)
}

fn sdk_execution_details(details: crate::domain::ExecutionDetails) -> sdk::ExecutionDetails {
    sdk::ExecutionDetails::builder()
        .set_summary(details.summary)
        .set_external_execution_id(details.external_execution_id)
        .set_percent_complete(details.percent_complete.map(i32::from))
        .build()
}

fn sdk_failure_details(details: FailureDetails) -> Result<sdk::FailureDetails, UpstreamError> {
    sdk::FailureDetails::builder()
        .r#type(sdk::FailureType::from(details.kind.as_str()))
        .message(details.message)
        .set_external_execution_id(details.external_execution_id)
        .build()
        .map_err(unexpected)
}

/// Notes the AWS request id of a call in its spans.
fn record_request_id(request_id: Option<&str>) {
    if let Some(request_id) = request_id {
        traces::record_aws_request_id(request_id);
    }
}

/// Counts each HTTP attempt of an operation in the upstream call's span: the SDK's retries and
/// the gateway's own throttling retries alike.
#[derive(Debug)]
struct CountAttempts;

impl Intercept for CountAttempts {
    fn name(&self) -> &'static str {
        "CountAttempts"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        traces::record_attempt();
        Ok(())
    }
}

fn unexpected(error: impl std::error::Error + Send + Sync + 'static) -> UpstreamError {
    UpstreamError::Unexpected {
        source: Box::new(error),
    }
}

/// Sorts an SDK failure into the gateway's upstream errors. This only names what happened;
/// what the caller sees is decided in [`crate::api::status`].
fn classify<E>(error: SdkError<E>) -> UpstreamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let request_id = error.request_id().map(str::to_owned);
    record_request_id(request_id.as_deref());
    if is_caused_by::<CredentialsError>(&error) {
        return UpstreamError::NoCredentials {
            source: Box::new(error),
        };
    }
    match &error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = match context.err().code() {
                Some(code) => AwsErrorCode::from_aws(code),
                None => AwsErrorCode::Other(format!("HTTP {status}")),
            };
            let code = match code {
                AwsErrorCode::Other(code) if status >= 500 => AwsErrorCode::ServiceFault(code),
                code => code,
            };
            UpstreamError::Service {
                code,
                message: context.err().message().map(str::to_owned),
                request_id,
            }
        }
        SdkError::TimeoutError(_) => UpstreamError::Timeout { request_id },
        // With attempt and operation timeouts set, a dispatch timeout is the connect timeout:
        // CodePipeline could not be reached.
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => UpstreamError::Unavailable {
            source: Box::new(error),
        },
        _ => UpstreamError::Unexpected {
            source: Box::new(error),
        },
    }
}

/// Whether `T` is anywhere in the error's `source()` chain.
fn is_caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<T>() {
            return true;
        }
        current = error.source();
    }
    false
}

fn sdk_action_type_id(id: &ActionTypeId) -> Result<sdk::ActionTypeId, UpstreamError> {
    sdk::ActionTypeId::builder()
        .category(sdk::ActionCategory::from(id.category.as_str()))
        .owner(sdk::ActionOwner::from(id.owner.as_str()))
        .provider(&id.provider)
        .version(&id.version)
        .build()
        .map_err(unexpected)
}

/// The job data of a custom or a third-party job: the SDK has a type for each, with the same
/// members.
macro_rules! job_data_from {
    ($data:expr) => {{
        let data = $data;

        JobData {
            action_type_id: data.action_type_id.and_then(|id| {
                Some(ActionTypeId {
                    category: ActionCategory::from_aws(id.category.as_str())?,
                    owner: ActionOwner::from_aws(id.owner.as_str())?,
                    provider: id.provider,
                    version: id.version,
                })
            }),
            action_configuration: ActionConfiguration(
                data.action_configuration
                    .and_then(|config| config.configuration)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            ),
            pipeline_context: data.pipeline_context.map(|context| {
                let action = context.action;
                PipelineContext {
                    pipeline_name: context.pipeline_name,
                    stage_name: context.stage.and_then(|stage| stage.name),
                    action_name: action.as_ref().and_then(|a| a.name.clone()),
                    action_execution_id: action.and_then(|a| a.action_execution_id),
                    pipeline_arn: context.pipeline_arn,
                    pipeline_execution_id: context.pipeline_execution_id,
                }
            }),
            input_artifacts: artifacts(data.input_artifacts),
            output_artifacts: artifacts(data.output_artifacts),
            artifact_credentials: data.artifact_credentials.map(|c| SessionCredentials {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: c.session_token,
            }),
            continuation_token: data.continuation_token,
            encryption_key: data.encryption_key.map(|key| EncryptionKey { id: key.id }),
        }
    }};
}

fn job_data(data: sdk::JobData) -> JobData {
    job_data_from!(data)
}

fn third_party_job_data(data: sdk::ThirdPartyJobData) -> JobData {
    job_data_from!(data)
}

fn artifacts(artifacts: Option<Vec<sdk::Artifact>>) -> Vec<Artifact> {
    artifacts
        .unwrap_or_default()
        .into_iter()
        .map(|artifact| Artifact {
            name: artifact.name,
            revision: artifact.revision,
            s3_location: artifact
                .location
                .and_then(|location| location.s3_location)
                .map(|s3| S3Location {
                    bucket_name: s3.bucket_name,
                    object_key: s3.object_key,
                }),
        })
        .collect()
}
