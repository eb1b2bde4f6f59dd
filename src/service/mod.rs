//! The gRPC handlers of `codepipeline.jobworker.v1.JobWorkerService`. Each one is three steps:
//! validate the request into domain input (INVALID_ARGUMENT and no upstream call when it is
//! bad), call the upstream, and turn the answer or the failure into the response or the status.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{
    domain::{
        AcknowledgeJobInput, GetJobDetailsInput, PollForJobsInput, PutJobFailureResultInput,
        PutJobSuccessResultInput,
    },
    error,
    pb::jobworker::{self as pb, job_worker_service_server::JobWorkerServiceServer},
    upstream::{Operation, Upstream},
};

/// The job-worker service over one upstream.
#[derive(Clone)]
pub struct JobWorker {
    upstream: Arc<dyn Upstream>,
}

impl JobWorker {
    /// The service, forwarding to `upstream`.
    pub fn new(upstream: Arc<dyn Upstream>) -> Self {
        Self { upstream }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> JobWorkerServiceServer<Self> {
        JobWorkerServiceServer::new(self)
    }
}

/// Validates a protobuf request into its domain input, or answers INVALID_ARGUMENT.
fn validated<P, D>(request: Request<P>) -> Result<D, Status>
where
    D: TryFrom<P, Error = crate::domain::validate::InvalidRequest>,
{
    D::try_from(request.into_inner()).map_err(error::invalid_request)
}

#[tonic::async_trait]
impl pb::job_worker_service_server::JobWorkerService for JobWorker {
    async fn poll_for_jobs(
        &self,
        request: Request<pb::PollForJobsRequest>,
    ) -> Result<Response<pb::PollForJobsResponse>, Status> {
        let input: PollForJobsInput = validated(request)?;
        let action_type = input.action_type_id.to_string();
        let jobs =
            self.upstream.poll_for_jobs(input).await.map_err(|e| {
                error::upstream_call_status(Operation::PollForJobs, &action_type, e)
            })?;
        Ok(Response::new(pb::PollForJobsResponse {
            jobs: jobs.into_iter().map(Into::into).collect(),
        }))
    }

    async fn acknowledge_job(
        &self,
        request: Request<pb::AcknowledgeJobRequest>,
    ) -> Result<Response<pb::AcknowledgeJobResponse>, Status> {
        let input: AcknowledgeJobInput = validated(request)?;
        let job_id = input.job_id.clone();
        let status = self.upstream.acknowledge_job(input).await.map_err(|e| {
            error::upstream_call_status(Operation::AcknowledgeJob, job_id.as_str(), e)
        })?;
        Ok(Response::new(pb::AcknowledgeJobResponse {
            status: status.to_pb().into(),
        }))
    }

    async fn get_job_details(
        &self,
        request: Request<pb::GetJobDetailsRequest>,
    ) -> Result<Response<pb::GetJobDetailsResponse>, Status> {
        let input: GetJobDetailsInput = validated(request)?;
        let job_id = input.job_id.clone();
        let details = self.upstream.get_job_details(input).await.map_err(|e| {
            error::upstream_call_status(Operation::GetJobDetails, job_id.as_str(), e)
        })?;
        Ok(Response::new(pb::GetJobDetailsResponse {
            job_details: Some(details.into()),
        }))
    }

    async fn put_job_success_result(
        &self,
        request: Request<pb::PutJobSuccessResultRequest>,
    ) -> Result<Response<pb::PutJobSuccessResultResponse>, Status> {
        let input: PutJobSuccessResultInput = validated(request)?;
        let job_id = input.job_id.clone();
        self.upstream
            .put_job_success_result(input)
            .await
            .map_err(|e| {
                error::upstream_call_status(Operation::PutJobSuccessResult, job_id.as_str(), e)
            })?;
        Ok(Response::new(pb::PutJobSuccessResultResponse {}))
    }

    async fn put_job_failure_result(
        &self,
        request: Request<pb::PutJobFailureResultRequest>,
    ) -> Result<Response<pb::PutJobFailureResultResponse>, Status> {
        let input: PutJobFailureResultInput = validated(request)?;
        let job_id = input.job_id.clone();
        self.upstream
            .put_job_failure_result(input)
            .await
            .map_err(|e| {
                error::upstream_call_status(Operation::PutJobFailureResult, job_id.as_str(), e)
            })?;
        Ok(Response::new(pb::PutJobFailureResultResponse {}))
    }
}
