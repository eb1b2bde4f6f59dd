//! The gRPC handlers of `codepipeline.jobworker.v1.JobWorkerService` (and, in [`third_party`],
//! of `ThirdPartyJobWorkerService`; in [`artifacts`], of `ArtifactService`). Each unary one is three
//! steps: validate the request into domain input (INVALID_ARGUMENT and no upstream call when it
//! is bad), call the upstream within the caller's deadline, and turn the answer or the failure
//! into the response or the status. StreamJobs ([`stream_jobs`]) serves a job feed.

mod artifacts;
mod scope;
mod stream_jobs;
mod third_party;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

pub use scope::JobOwners;
pub use stream_jobs::StreamLimits;

use crate::{
    api::{Method, Refusal, status},
    artifacts::Artifacts,
    auth::{Caller, ClientTokens},
    domain::{
        AcknowledgeJobInput, GetJobDetailsInput, JobId, PollForJobsInput, PutJobFailureResultInput,
        PutJobSuccessResultInput, validate::InvalidRequest,
    },
    feed::Feeds,
    limits::{ArtifactMemory, ClientLimits, UpstreamBudget},
    middleware::deadline::CallDeadline,
    observability::{
        Metrics,
        audit::{self, RequestId, Touched},
        traces,
    },
    pb::jobworker::{self as pb, job_worker_service_server::JobWorkerServiceServer},
    upstream::{Call, Operation, Retries, Upstream, UpstreamError, UpstreamExt},
};

/// What the job-worker service works with, made once for the process.
#[derive(Clone)]
pub struct JobWorker {
    /// Where calls go.
    pub upstream: Arc<dyn Upstream>,
    /// The client tokens the gateway supplies to third-party calls that carry none.
    pub client_tokens: Arc<ClientTokens>,
    /// The artifact store, reached with each job's own credentials.
    pub artifacts: Arc<Artifacts>,
    /// The account-wide budget every upstream call spends.
    pub budget: Arc<UpstreamBudget>,
    /// The registry calls are counted in.
    pub metrics: Arc<Metrics>,
    /// The job feeds StreamJobs subscribes to.
    pub feeds: Arc<Feeds>,
    /// Each client's rate, which every acknowledgement on a stream spends too.
    pub client_limits: Arc<ClientLimits>,
    /// How many job streams may be open.
    pub streams: Arc<StreamLimits>,
    /// Cancelled when the gateway stops taking calls: open streams end.
    pub draining: CancellationToken,
    /// How long a new stream may take to send its subscription, and how long an
    /// acknowledgement sent on a stream may take upstream.
    pub default_deadline: Duration,
    /// How often and for how long an upstream call is tried.
    pub retries: Retries,
    /// The action type of each job the gateway saw, for checking calls against scopes.
    pub job_owners: Arc<JobOwners>,
    /// The memory artifact transfers may hold, per client and in all.
    pub artifact_memory: Arc<ArtifactMemory>,
}

impl JobWorker {
    /// The tonic server for this service.
    pub fn into_server(self) -> JobWorkerServiceServer<Self> {
        JobWorkerServiceServer::new(self)
    }

    /// Validates a request about one job, checks the job is in the caller's scope, makes its
    /// call and records it in the audit trail: the shape of the custom job-worker calls that
    /// change a job.
    async fn job_call<C, P, R>(&self, request: Request<P>) -> Result<Response<R>, Status>
    where
        C: Call + AboutJob + TryFrom<P, Error = InvalidRequest>,
        C::Output: Into<R>,
    {
        let called = Called::of(&request);
        let (input, deadline) = validated::<P, C>(request)?;
        let job_id = input.job_id().clone();
        let result = async {
            self.may_touch_job(&called.caller, &job_id, deadline)
                .await?;
            self.forward(input, deadline).await
        }
        .await;
        self.audit(
            &called,
            Method::Upstream(C::OPERATION),
            job_id.as_str(),
            &result,
        );
        Ok(Response::new(result?.into()))
    }

    /// Records a state-changing call about `job_id` in the audit trail.
    fn audit<T>(&self, called: &Called, method: Method, job_id: &str, result: &Result<T, Status>) {
        let action_type = self.job_owners.get(job_id);
        audit::record(
            &Touched {
                client_id: &called.caller.id,
                method,
                job_id: Some(job_id),
                action_type: action_type.as_deref(),
                request_id: called.request_id.as_ref(),
            },
            result.as_ref().map(drop),
        );
    }

    /// Makes an upstream call within the caller's deadline, trying again as [`Retries`] allow
    /// (throttling for every operation, uncertain failures for harmless repeats), each attempt
    /// spending the upstream budget and counted; classifies the failure it ends with. The
    /// operation, and what the call is about, follow from the input.
    async fn forward<C: Call>(
        &self,
        input: C,
        deadline: Option<CallDeadline>,
    ) -> Result<C::Output, Status> {
        let operation = C::OPERATION;
        let retries_end = Instant::now() + self.retries.within;
        let ends = deadline.map(CallDeadline::upstream_deadline);
        let mut attempt = 1;
        let mut retried: Option<UpstreamError> = None;
        loop {
            // Charged per attempt, after validation: a request refused at the edge spends
            // nothing, and the account's quota counts every attempt. A retry the budget
            // refuses answers with the failure it would have retried.
            if let Err(refused) = self.budget.spend(operation).await {
                return Err(match retried {
                    Some(error) => {
                        status::upstream_call_status(operation, &input.resource(), error)
                    }
                    None => refused,
                });
            }
            let call = self.upstream.send(input.clone());
            let error = match self.attempt(operation, ends, call).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let now = Instant::now();
            let retry_at = self
                .retries
                .after(operation, attempt, &error)
                .map(|backoff| now + backoff)
                .filter(|&at| at < retries_end && ends.is_none_or(|ends| at < ends));
            let Some(retry_at) = retry_at else {
                return Err(status::upstream_call_status(
                    operation,
                    &input.resource(),
                    error,
                ));
            };
            tokio::time::sleep_until(retry_at.into()).await;
            retried = Some(error);
            attempt += 1;
        }
    }

    /// One attempt, bounded by `ends`, traced and counted.
    async fn attempt<T>(
        &self,
        operation: Operation,
        ends: Option<Instant>,
        call: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let started = Instant::now();
        let bounded = async {
            match ends {
                Some(ends) => tokio::time::timeout_at(ends.into(), call)
                    .await
                    .unwrap_or(Err(UpstreamError::Timeout { request_id: None })),
                None => call.await,
            }
        };
        let result = traces::upstream_call(operation, bounded, |result| {
            result
                .as_ref()
                .map_or_else(|error| error.kind().as_str(), |_| "success")
        })
        .await;
        let outcome = result.as_ref().map(drop).map_err(UpstreamError::kind);
        self.metrics
            .upstream_call(operation, outcome, started.elapsed().as_secs_f64());
        result
    }
}

/// Who is calling, as the authenticate layer established it.
fn caller_of<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous)
}

/// Who is calling, and the call's request id, for checks and the audit trail.
struct Called {
    caller: Caller,
    request_id: Option<RequestId>,
}

impl Called {
    fn of<T>(request: &Request<T>) -> Self {
        Self {
            caller: caller_of(request),
            request_id: request.extensions().get::<RequestId>().cloned(),
        }
    }
}

/// A request about one custom job.
trait AboutJob {
    /// The job.
    fn job_id(&self) -> &JobId;
}

macro_rules! about_job {
    ($($input:ty),*) => {$(
        impl AboutJob for $input {
            fn job_id(&self) -> &JobId {
                &self.job_id
            }
        }
    )*};
}

about_job!(
    AcknowledgeJobInput,
    PutJobSuccessResultInput,
    PutJobFailureResultInput
);

/// Validates a protobuf request into its domain input (or answers INVALID_ARGUMENT), and reads
/// the caller's deadline.
fn validated<P, D>(request: Request<P>) -> Result<(D, Option<CallDeadline>), Status>
where
    D: TryFrom<P, Error = InvalidRequest>,
{
    let deadline = request.extensions().get::<CallDeadline>().copied();
    let input = D::try_from(request.into_inner()).map_err(status::invalid_request)?;
    Ok((input, deadline))
}

#[tonic::async_trait]
impl pb::job_worker_service_server::JobWorkerService for JobWorker {
    type StreamJobsStream = stream_jobs::Responses;

    async fn stream_jobs(
        &self,
        request: Request<Streaming<pb::StreamJobsRequest>>,
    ) -> Result<Response<Self::StreamJobsStream>, Status> {
        stream_jobs::open(self, request).await
    }

    async fn poll_for_jobs(
        &self,
        request: Request<pb::PollForJobsRequest>,
    ) -> Result<Response<pb::PollForJobsResponse>, Status> {
        let caller = caller_of(&request);
        let (input, deadline) = validated::<_, PollForJobsInput>(request)?;
        self.may_work(&caller, &input.action_type_id)?;
        let action_type = input.action_type_id.clone();
        let mut jobs = self.forward(input, deadline).await?;
        self.job_owners
            .learn(&action_type, jobs.iter().map(|job| job.id.as_str()));
        for job in &mut jobs {
            scope::without_artifact_credentials(&caller, &mut job.data);
        }
        Ok(Response::new(jobs.into()))
    }

    async fn acknowledge_job(
        &self,
        request: Request<pb::AcknowledgeJobRequest>,
    ) -> Result<Response<pb::AcknowledgeJobResponse>, Status> {
        let called = Called::of(&request);
        let (input, deadline) = validated::<_, AcknowledgeJobInput>(request)?;
        let job_id = input.job_id.clone();
        let result = async {
            self.may_touch_job(&called.caller, &job_id, deadline)
                .await?;
            // A copy a job stream of this process was given is acknowledged on a stream only.
            if self.feeds.holds_for_a_stream(&job_id, input.nonce.as_str()) {
                return Err(Refusal::HeldByStream {
                    job_id: job_id.to_string(),
                }
                .into());
            }
            let result = self.forward(input, deadline).await;
            if result.is_ok() {
                // A poller's own copy: the one a feed holds, with another nonce, is stale.
                self.feeds.acknowledged_elsewhere(&job_id);
            }
            result
        }
        .await;
        self.audit(
            &called,
            Method::Upstream(Operation::AcknowledgeJob),
            job_id.as_str(),
            &result,
        );
        Ok(Response::new(result?.into()))
    }

    async fn get_job_details(
        &self,
        request: Request<pb::GetJobDetailsRequest>,
    ) -> Result<Response<pb::GetJobDetailsResponse>, Status> {
        let caller = caller_of(&request);
        let (input, deadline) = validated::<_, GetJobDetailsInput>(request)?;
        let job_id = input.job_id.to_string();
        // The details are the lookup: a job the gateway has not seen is checked on their answer.
        let check = self.check_before_details(&caller, &job_id)?;
        let answer = self.forward(input, deadline).await;
        let mut details =
            self.check_details_answer(&caller, &job_id, check, answer, |details| {
                Some(&details.data)
            })?;
        scope::without_artifact_credentials(&caller, &mut details.data);
        Ok(Response::new(details.into()))
    }

    async fn put_job_success_result(
        &self,
        request: Request<pb::PutJobSuccessResultRequest>,
    ) -> Result<Response<pb::PutJobSuccessResultResponse>, Status> {
        self.job_call::<PutJobSuccessResultInput, _, _>(request)
            .await
    }

    async fn put_job_failure_result(
        &self,
        request: Request<pb::PutJobFailureResultRequest>,
    ) -> Result<Response<pb::PutJobFailureResultResponse>, Status> {
        self.job_call::<PutJobFailureResultInput, _, _>(request)
            .await
    }
}
