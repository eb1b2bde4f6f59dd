//! The emulator's admin gRPC service (`codepipeline.emulator.v1.EmulatorAdminService`): register
//! action types, create jobs, and read what workers did. Served only in emulator mode.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    Emulator, JobResult, JobSnapshot, JobSpec, PartnerClient, demo_pipeline_context,
    faults::FaultPlan,
};
use crate::{
    api::status,
    domain::{
        ActionConfiguration, ActionOwner, ActionTypeId, ClientId, ClientToken, EncryptionKey,
        validate,
        validate::{FieldViolation, InvalidRequest, Shown},
    },
    pb::{
        emulator::{self as pb, emulator_admin_service_server::EmulatorAdminService},
        jobworker as jw,
    },
    upstream::{AwsErrorCode, UpstreamError},
};

/// The admin service over a shared emulator.
#[derive(Clone)]
pub struct AdminService {
    emulator: Arc<Emulator>,
}

impl AdminService {
    /// The service for this emulator.
    pub fn new(emulator: Arc<Emulator>) -> Self {
        Self { emulator }
    }

    /// The tonic server for this service.
    pub fn into_server(
        self,
    ) -> pb::emulator_admin_service_server::EmulatorAdminServiceServer<Self> {
        pb::emulator_admin_service_server::EmulatorAdminServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl EmulatorAdminService for AdminService {
    async fn register_action_type(
        &self,
        request: Request<pb::RegisterActionTypeRequest>,
    ) -> Result<Response<pb::RegisterActionTypeResponse>, Status> {
        let request = request.into_inner();
        let action_type =
            validate::action_type_id("action_type_id", request.action_type_id.as_ref())
                .map_err(status::invalid_request)?;
        self.emulator
            .register_action_type(action_type)
            .map_err(status::upstream_status)?;
        Ok(Response::new(pb::RegisterActionTypeResponse {}))
    }

    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::CreateJobResponse>, Status> {
        let request = request.into_inner();
        let action_type =
            validate::action_type_id("action_type_id", request.action_type_id.as_ref())
                .map_err(status::invalid_request)?;
        let client = partner_client(&action_type, &request.client_id, &request.client_token)
            .map_err(status::invalid_request)?;
        let spec = JobSpec {
            configuration: ActionConfiguration(request.configuration.into_iter().collect()),
            pipeline_context: request.pipeline_context.map_or_else(
                || demo_pipeline_context(&self.emulator.config.account_id),
                Into::into,
            ),
            input_artifacts: request
                .input_artifacts
                .into_iter()
                .map(Into::into)
                .collect(),
            output_artifacts: request
                .output_artifacts
                .into_iter()
                .map(Into::into)
                .collect(),
            encryption_key: request
                .encryption_key
                .filter(|key| !key.id.is_empty())
                .map(|key| EncryptionKey { id: key.id }),
            client: client.clone(),
        };
        let job_id = self
            .emulator
            .create_job(&action_type, spec)
            .map_err(status::upstream_status)?;
        let (client_id, client_token) = client
            .map(|client| (client.id.to_string(), client.token.expose().to_owned()))
            .unwrap_or_default();
        Ok(Response::new(pb::CreateJobResponse {
            job_id: job_id.to_string(),
            client_id,
            client_token,
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let job_id =
            validate::job_id(&request.into_inner().job_id).map_err(status::invalid_request)?;
        let job = self.emulator.job(&job_id).ok_or_else(|| {
            status::upstream_status(UpstreamError::service(
                AwsErrorCode::JobNotFound,
                format!("Job {job_id} was not found"),
            ))
        })?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_state(job)),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let action_type = request
            .action_type_id
            .as_ref()
            .map(|id| validate::action_type_id("action_type_id", Some(id)))
            .transpose()
            .map_err(status::invalid_request)?;
        let jobs = self.emulator.jobs(action_type.as_ref());
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(job_state).collect(),
        }))
    }

    async fn get_call_counts(
        &self,
        _request: Request<pb::GetCallCountsRequest>,
    ) -> Result<Response<pb::GetCallCountsResponse>, Status> {
        let calls = self
            .emulator
            .call_counts()
            .into_iter()
            .map(|(op, count)| (op.as_str().to_owned(), count))
            .collect();
        Ok(Response::new(pb::GetCallCountsResponse { calls }))
    }

    async fn set_faults(
        &self,
        request: Request<pb::SetFaultsRequest>,
    ) -> Result<Response<pb::SetFaultsResponse>, Status> {
        let plan = FaultPlan::parse(&request.into_inner().plan).map_err(|problem| {
            status::invalid_request(InvalidRequest {
                violations: vec![FieldViolation::rule("plan", problem, Shown::Null)],
            })
        })?;
        self.emulator.set_faults(plan);
        Ok(Response::new(pb::SetFaultsResponse {}))
    }
}

/// The client of a new job: for a third-party action type the one asked for, with a new ID or
/// token for what was left unset; for a custom one none, and asking for one is an error.
fn partner_client(
    action_type: &ActionTypeId,
    client_id: &str,
    client_token: &str,
) -> Result<Option<PartnerClient>, InvalidRequest> {
    let mut violations = Vec::new();
    if action_type.owner != ActionOwner::ThirdParty {
        for (field, value) in [("client_id", client_id), ("client_token", client_token)] {
            if !value.is_empty() {
                violations.push(FieldViolation::rule(
                    field,
                    "is only for a third-party action type",
                    Shown::Null,
                ));
            }
        }
        return if violations.is_empty() {
            Ok(None)
        } else {
            Err(InvalidRequest { violations })
        };
    }
    let random = PartnerClient::random();
    let id = match client_id {
        "" => Some(random.id),
        given => ClientId::parse(given)
            .map_err(|broken| {
                violations.push(FieldViolation::new("client_id", broken, Shown::text(given)));
            })
            .ok(),
    };
    let token = match client_token {
        "" => Some(random.token),
        given => ClientToken::parse(given)
            .map_err(|broken| {
                let secret = Shown::Secret {
                    len: given.chars().count(),
                };
                violations.push(FieldViolation::new("client_token", broken, secret));
            })
            .ok(),
    };
    match (id, token) {
        (Some(id), Some(token)) => Ok(Some(PartnerClient { id, token })),
        _ => Err(InvalidRequest { violations }),
    }
}

fn job_state(job: JobSnapshot) -> pb::JobState {
    let mut state = pb::JobState {
        job_id: job.id.to_string(),
        action_type_id: Some(jw::ActionTypeId::from(&job.action_type_id)),
        status: job.status.to_pb().into(),
        created: Some(job.created.into()),
        dispatch_count: job.dispatch_count,
        acknowledge_count: job.acknowledge_count,
        result_count: job.result_count,
        continuation_token: job.continuation_token,
        continues_job_id: job.continues.map(|id| id.to_string()),
        continued_by_job_id: job.continued_by.map(|id| id.to_string()),
        client_id: job.client_id.map(|id| id.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    match job.result {
        Some(JobResult::Success {
            current_revision,
            execution_details,
            output_variables,
        }) => {
            state.current_revision = current_revision.as_ref().map(Into::into);
            state.execution_details = execution_details.as_ref().map(Into::into);
            state.output_variables = output_variables.into_iter().collect();
        }
        Some(JobResult::Failure(details)) => state.failure_details = Some((&details).into()),
        None => {}
    }
    state
}
