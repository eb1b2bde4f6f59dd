//! The port: where validated calls go. The [`Upstream`] trait has one async method per
//! job-worker operation, with domain types in and out, and every implementation reports failure
//! with the one [`UpstreamError`].
//!
//! This module knows no implementation: the AWS SDK adapter ([`crate::aws`]) and the emulator
//! ([`crate::emulator`]) depend on it, never the other way round.

mod error;
mod operation;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use error::{AwsErrorCode, BoxError, UpstreamError};
pub use operation::Operation;

use crate::domain::{
    AcknowledgeJobInput, ActionTypeId, GetJobDetailsInput, Job, JobDetails, JobStatus,
    PollForJobsInput, PutJobFailureResultInput, PutJobSuccessResultInput,
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

    /// Hints that jobs were just created, by action type, so a job feed can poll at once
    /// instead of at its next interval. Only an upstream that sees jobs being created can give
    /// them (the in-process emulator); CodePipeline cannot, and feeds on it rely on polling.
    fn new_jobs(&self) -> Option<broadcast::Receiver<ActionTypeId>> {
        None
    }
}
