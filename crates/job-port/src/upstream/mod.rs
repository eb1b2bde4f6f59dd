//! The port: where validated calls go. The [`Upstream`] trait has one async method per
//! job-worker operation, with domain types in and out, and every implementation reports failure
//! with the one [`UpstreamError`].
//!
//! This module knows no implementation: the AWS SDK adapter ([`crate::aws`]) and the emulator
//! ([`crate::emulator`]) depend on it, never the other way round.

mod error;
mod operation;
mod retry;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use error::{AwsErrorCode, BoxError, UpstreamError};
pub use operation::Operation;
pub use retry::Retries;

use crate::domain::{
    AcknowledgeJobInput, AcknowledgeThirdParty, ActionTypeId, FailureDetails, GetJobDetailsInput,
    Job, JobDetails, JobStatus, PollForJobsInput, PollForThirdPartyJobsInput,
    PutJobFailureResultInput, PutJobSuccessResultInput, ThirdPartyInput, ThirdPartyJob,
    ThirdPartyJobDetails, ThirdPartySuccess,
};

/// The CodePipeline job-worker API, as the gateway calls it.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// PollForJobs.
    async fn poll_for_jobs(&self, input: PollForJobsInput) -> Result<Vec<Job>, UpstreamError>;
    /// AcknowledgeJob.
    async fn acknowledge_job(&self, input: AcknowledgeJobInput)
    -> Result<JobStatus, UpstreamError>;
    /// GetJobDetails.
    async fn get_job_details(&self, input: GetJobDetailsInput)
    -> Result<JobDetails, UpstreamError>;
    /// PutJobSuccessResult.
    async fn put_job_success_result(
        &self,
        input: PutJobSuccessResultInput,
    ) -> Result<(), UpstreamError>;
    /// PutJobFailureResult.
    async fn put_job_failure_result(
        &self,
        input: PutJobFailureResultInput,
    ) -> Result<(), UpstreamError>;

    /// PollForThirdPartyJobs.
    async fn poll_for_third_party_jobs(
        &self,
        input: PollForThirdPartyJobsInput,
    ) -> Result<Vec<ThirdPartyJob>, UpstreamError>;
    /// AcknowledgeThirdPartyJob.
    async fn acknowledge_third_party_job(
        &self,
        input: ThirdPartyInput<AcknowledgeThirdParty>,
    ) -> Result<JobStatus, UpstreamError>;
    /// GetThirdPartyJobDetails.
    async fn get_third_party_job_details(
        &self,
        input: ThirdPartyInput<()>,
    ) -> Result<ThirdPartyJobDetails, UpstreamError>;
    /// PutThirdPartyJobSuccessResult.
    async fn put_third_party_job_success_result(
        &self,
        input: ThirdPartyInput<ThirdPartySuccess>,
    ) -> Result<(), UpstreamError>;
    /// PutThirdPartyJobFailureResult.
    async fn put_third_party_job_failure_result(
        &self,
        input: ThirdPartyInput<FailureDetails>,
    ) -> Result<(), UpstreamError>;

    /// Hints that jobs were just created, by action type, so a job feed can poll at once
    /// instead of at its next interval. Only an upstream that sees jobs being created can give
    /// them (the in-process emulator); CodePipeline cannot, and feeds on it rely on polling.
    fn new_jobs(&self) -> Option<broadcast::Receiver<ActionTypeId>> {
        None
    }
}
