//! The gRPC handlers of `codepipeline.jobworker.v1.ThirdPartyJobWorkerService`: the same three
//! steps as the custom ones, with one more between validation and the upstream call: a request
//! without a client token gets the one the gateway holds for its job's client
//! ([`crate::auth::ClientTokens`]), or FAILED_PRECONDITION and no upstream call.

use tonic::{Request, Response, Status};

use super::{Called, JobWorker, caller_of, scope::HandedTo, validated};
use crate::{
    api::status,
    auth::Caller,
    domain::{
        AcknowledgeThirdParty, ClientCredential, FailureDetails, PollForThirdPartyJobsInput,
        ThirdPartyInput, ThirdPartyRequest, ThirdPartySuccess, validate::InvalidRequest,
    },
    pb::jobworker::{
        self as pb, third_party_job_worker_service_server::ThirdPartyJobWorkerServiceServer,
    },
    upstream::Call,
};

impl JobWorker {
    /// The tonic server for the third-party service.
    pub fn into_third_party_server(self) -> ThirdPartyJobWorkerServiceServer<Self> {
        ThirdPartyJobWorkerServiceServer::new(self)
    }

    /// Settles a validated third-party request's client token: the worker's own, or one the
    /// gateway holds for a partner the caller may act for.
    pub(super) fn with_client_token<T>(
        &self,
        caller: &Caller,
        request: ThirdPartyRequest<T>,
    ) -> Result<(ThirdPartyInput<T>, TokenFrom), Status> {
        let job_id = request.job_id.to_string();
        let token_from = match request.credential {
            ClientCredential::Token(_) => TokenFrom::Worker,
            ClientCredential::Client(_) | ClientCredential::Unnamed => TokenFrom::ClientTokenFile,
        };
        let input = self
            .client_tokens
            .complete(request, &caller.scope)
            .map_err(|withheld| self.token_withheld(caller, &job_id, withheld))?;
        Ok((input, token_from))
    }
}

/// Who supplied a third-party call's client token.
#[derive(Debug, Clone, Copy)]
pub(super) enum TokenFrom {
    /// The worker, in its request.
    Worker,
    /// The gateway, from its client-token file.
    ClientTokenFile,
}

impl TokenFrom {
    /// The status of a failed call: CodePipeline rejecting a token the gateway supplied is the
    /// operator's to fix, not the worker's (gRFC A54: not PERMISSION_DENIED for the caller).
    fn failure(self, status: Status, job_id: &str) -> Status {
        match self {
            Self::Worker => status,
            Self::ClientTokenFile => status::supplied_client_token_rejected(status, job_id),
        }
    }
}

impl JobWorker {
    /// Validates a third-party request, settles its client token, checks the job is in the
    /// caller's scope and makes its call; a call that changes the job is audited.
    async fn third_party<T, P, R>(&self, request: Request<P>) -> Result<Response<R>, Status>
    where
        ThirdPartyRequest<T>: TryFrom<P, Error = InvalidRequest>,
        ThirdPartyInput<T>: Call,
        <ThirdPartyInput<T> as Call>::Output: Into<R> + HandedTo,
    {
        let called = Called::of(&request);
        let (request, deadline) = validated::<P, ThirdPartyRequest<T>>(request)?;
        let job_id = request.job_id.clone();
        let operation = <ThirdPartyInput<T> as Call>::OPERATION;
        let result = async {
            // A job known to be another team's is refused before the client-token vault is
            // asked, so how the vault would answer says nothing about it.
            let check = self.check_before_details(&called.caller, job_id.as_str())?;
            let (input, token_from) = self.with_client_token(&called.caller, request)?;
            if operation.changes_job_state() {
                self.may_touch_third_party_job(&called.caller, &input, deadline)
                    .await?;
            }
            let answer = self
                .forward(input, deadline)
                .await
                .map_err(|status| token_from.failure(status, job_id.as_str()));
            if operation.changes_job_state() {
                return answer;
            }
            // A read is its own lookup: its answer is checked, as GetJobDetails' is.
            self.check_details_answer(
                &called.caller,
                job_id.as_str(),
                check,
                answer,
                HandedTo::job_data,
            )
        }
        .await;
        if operation.changes_job_state() {
            self.audit(
                &called,
                crate::api::Method::Upstream(operation),
                job_id.as_str(),
                &result,
            );
        }
        Ok(Response::new(result?.handed_to(&called.caller).into()))
    }
}

#[tonic::async_trait]
impl pb::third_party_job_worker_service_server::ThirdPartyJobWorkerService for JobWorker {
    async fn poll_for_third_party_jobs(
        &self,
        request: Request<pb::PollForThirdPartyJobsRequest>,
    ) -> Result<Response<pb::PollForThirdPartyJobsResponse>, Status> {
        let caller = caller_of(&request);
        let (input, deadline) = validated::<_, PollForThirdPartyJobsInput>(request)?;
        self.may_work(&caller, &input.action_type_id)?;
        let action_type = input.action_type_id.clone();
        let jobs = self.forward(input, deadline).await?;
        // The client ids the jobs name: the gateway supplies their tokens to later calls.
        self.client_tokens.remember(&jobs);
        self.job_owners
            .learn(&action_type, jobs.iter().map(|job| job.job_id.as_str()));
        Ok(Response::new(jobs.into()))
    }

    async fn acknowledge_third_party_job(
        &self,
        request: Request<pb::AcknowledgeThirdPartyJobRequest>,
    ) -> Result<Response<pb::AcknowledgeThirdPartyJobResponse>, Status> {
        self.third_party::<AcknowledgeThirdParty, _, _>(request)
            .await
    }

    async fn get_third_party_job_details(
        &self,
        request: Request<pb::GetThirdPartyJobDetailsRequest>,
    ) -> Result<Response<pb::GetThirdPartyJobDetailsResponse>, Status> {
        self.third_party::<(), _, _>(request).await
    }

    async fn put_third_party_job_success_result(
        &self,
        request: Request<pb::PutThirdPartyJobSuccessResultRequest>,
    ) -> Result<Response<pb::PutThirdPartyJobSuccessResultResponse>, Status> {
        self.third_party::<ThirdPartySuccess, _, _>(request).await
    }

    async fn put_third_party_job_failure_result(
        &self,
        request: Request<pb::PutThirdPartyJobFailureResultRequest>,
    ) -> Result<Response<pb::PutThirdPartyJobFailureResultResponse>, Status> {
        self.third_party::<FailureDetails, _, _>(request).await
    }
}
