//! The jobs' lifecycle: action types registered, jobs created, dispatched with a fresh nonce,
//! acknowledged, finished (a success with a continuation token creating the follow-up job) or
//! timed out, and what each operation answers about them.

use std::{
    collections::BTreeMap,
    time::{Instant, SystemTime},
};

use subtle::ConstantTimeEq;

use codepipeline_job_port::domain::{
    AcknowledgeJobInput, AcknowledgeThirdParty, ActionOwner, ActionTypeId, FailureDetails,
    GetJobDetailsInput, Job, JobDetails, JobId, JobStatus, Nonce, PollForJobsInput,
    PollForThirdPartyJobsInput, PutJobFailureResultInput, PutJobSuccessResultInput, QueryParam,
    ThirdPartyInput, ThirdPartyJob, ThirdPartyJobDetails, ThirdPartySuccess,
};
use codepipeline_job_port::upstream::{AwsErrorCode, UpstreamAnswer, UpstreamCall, UpstreamError};

use super::{Emulator, JobRecord, JobResult, JobSnapshot, JobSpec, State};
use crate::random;

/// The most characters (keys and values together) a job's output variables may have, as AWS
/// documents for OutputVariablesSizeExceededException (122,880).
pub const OUTPUT_VARIABLES_MAX_CHARS: usize = 122_880;

impl Emulator {
    /// Applies one call to the jobs, as CodePipeline would: the one place an operation meets
    /// its behaviour, for the in-process upstream and both wire fronts alike.
    pub fn apply(&self, call: UpstreamCall) -> Result<UpstreamAnswer, UpstreamError> {
        use UpstreamAnswer as Answer;
        Ok(match call {
            UpstreamCall::PollForJobs(input) => Answer::PollForJobs(self.poll(&input)?),
            UpstreamCall::AcknowledgeJob(input) => {
                Answer::AcknowledgeJob(self.acknowledge(&input)?)
            }
            UpstreamCall::GetJobDetails(input) => Answer::GetJobDetails(self.details(&input)?),
            UpstreamCall::PutJobSuccessResult(input) => {
                Answer::PutJobSuccessResult(self.succeed(input)?)
            }
            UpstreamCall::PutJobFailureResult(input) => {
                Answer::PutJobFailureResult(self.fail(input)?)
            }
            UpstreamCall::PollForThirdPartyJobs(input) => {
                Answer::PollForThirdPartyJobs(self.poll_third_party(&input)?)
            }
            UpstreamCall::AcknowledgeThirdPartyJob(input) => {
                Answer::AcknowledgeThirdPartyJob(self.acknowledge_third_party(&input)?)
            }
            UpstreamCall::GetThirdPartyJobDetails(input) => {
                Answer::GetThirdPartyJobDetails(self.details_third_party(&input)?)
            }
            UpstreamCall::PutThirdPartyJobSuccessResult(input) => {
                Answer::PutThirdPartyJobSuccessResult(self.succeed_third_party(input)?)
            }
            UpstreamCall::PutThirdPartyJobFailureResult(input) => {
                Answer::PutThirdPartyJobFailureResult(self.fail_third_party(input)?)
            }
        })
    }
}

impl Emulator {
    /// Registers an action type a worker may poll for: a custom one (what
    /// CreateCustomActionType does) or a third-party one (what publishing a partner action
    /// does). Idempotent.
    pub fn register_action_type(&self, action_type: ActionTypeId) -> Result<(), UpstreamError> {
        if action_type.owner == ActionOwner::Aws {
            return Err(UpstreamError::service(
                AwsErrorCode::Validation,
                "Only custom and third-party action types can be registered: AWS actions have no workers",
            ));
        }
        self.lock().action_types.insert(action_type);
        Ok(())
    }

    /// Creates a Queued job for a registered action type. A third-party job needs its client;
    /// a custom job has none.
    pub fn create_job(
        &self,
        action_type: &ActionTypeId,
        spec: JobSpec,
    ) -> Result<JobId, UpstreamError> {
        let third_party = action_type.owner == ActionOwner::ThirdParty;
        if third_party != spec.client.is_some() {
            return Err(UpstreamError::service(
                AwsErrorCode::Validation,
                if third_party {
                    "A third-party job needs a client (its clientId and clientToken)"
                } else {
                    "Only a third-party job has a client"
                },
            ));
        }
        let mut state = self.lock();
        if !state.action_types.contains(action_type) {
            return Err(action_type_not_found(action_type));
        }
        Ok(self.insert_job(&mut state, action_type.clone(), spec, None, None))
    }

    fn insert_job(
        &self,
        state: &mut State,
        action_type_id: ActionTypeId,
        spec: JobSpec,
        continuation_token: Option<String>,
        continues: Option<JobId>,
    ) -> JobId {
        let id = JobId::random();
        // No receiver (no feed in this process) is fine: the hint is for feeds only.
        let _ = self.created.send(action_type_id.clone());
        state
            .pending
            .entry(action_type_id.clone())
            .or_default()
            .push_back(id.clone());
        state.creation_order.push(id.clone());
        state.buckets.extend(
            spec.input_artifacts
                .iter()
                .chain(&spec.output_artifacts)
                .filter_map(|artifact| artifact.s3_location.as_ref())
                .map(|location| location.bucket_name.clone()),
        );
        state.jobs.insert(
            id.clone(),
            JobRecord {
                action_type_id,
                spec,
                continuation_token,
                continues,
                continued_by: None,
                status: JobStatus::Queued,
                nonce: None,
                dispatched_at: None,
                created: SystemTime::now(),
                deadline: Instant::now() + self.config.job_timeout,
                dispatch_count: 0,
                acknowledge_count: 0,
                result_count: 0,
                result: None,
            },
        );
        id
    }

    /// One job's state, without secrets.
    pub fn job(&self, id: &JobId) -> Option<JobSnapshot> {
        let mut state = self.lock();
        let now = Instant::now();
        state.jobs.get_mut(id).map(|record| {
            record.expire(now);
            snapshot(id, record)
        })
    }

    /// Every job, oldest first, optionally of one action type.
    pub fn jobs(&self, action_type: Option<&ActionTypeId>) -> Vec<JobSnapshot> {
        let mut state = self.lock();
        let now = Instant::now();
        let State {
            jobs,
            creation_order,
            ..
        } = &mut *state;
        creation_order
            .iter()
            .filter_map(|id| {
                let record = jobs.get_mut(id)?;
                record.expire(now);
                let wanted = action_type.is_none_or(|wanted| *wanted == record.action_type_id);
                wanted.then(|| snapshot(id, record))
            })
            .collect()
    }

    /// Hands out up to `max_batch` ready jobs of `action_type` (matching `query`), each
    /// Dispatched with a fresh nonce: their IDs.
    fn dispatch(
        &self,
        state: &mut State,
        action_type: &ActionTypeId,
        max_batch: usize,
        query: Option<&QueryParam>,
    ) -> Result<Vec<JobId>, UpstreamError> {
        if !state.action_types.contains(action_type) {
            return Err(action_type_not_found(action_type));
        }
        let now = Instant::now();
        let State { jobs, pending, .. } = state;
        let Some(queue) = pending.get_mut(action_type) else {
            return Ok(Vec::new());
        };
        let mut handed_out = Vec::new();
        queue.retain(|id| {
            let Some(record) = jobs.get_mut(id) else {
                return false;
            };
            record.expire(now);
            let ready = match record.status {
                JobStatus::Queued => true,
                JobStatus::Dispatched => record
                    .dispatched_at
                    .is_some_and(|at| now.duration_since(at) >= self.config.redispatch_after),
                _ => return false,
            };
            let matches_query = query.is_none_or(|query| {
                record.spec.configuration.0.get(&query.key) == Some(&query.value)
            });
            if ready && matches_query && handed_out.len() < max_batch {
                record.status = JobStatus::Dispatched;
                record.nonce = Some(random::nonce());
                record.dispatched_at = Some(now);
                record.dispatch_count += 1;
                handed_out.push(id.clone());
            }
            true
        });
        Ok(handed_out)
    }

    pub(crate) fn poll(&self, input: &PollForJobsInput) -> Result<Vec<Job>, UpstreamError> {
        let mut state = self.lock();
        let max_batch = input.max_batch_size.unwrap_or(1) as usize;
        let ids = self.dispatch(
            &mut state,
            &input.action_type_id,
            max_batch,
            input.query_param.as_ref(),
        )?;
        Ok(ids
            .into_iter()
            .map(|id| {
                let record = &state.jobs[&id];
                Job {
                    data: self.job_data(&id, record),
                    id: id.clone(),
                    nonce: record.nonce.clone().unwrap_or_default(),
                    account_id: self.config.account_id.clone(),
                }
            })
            .collect())
    }

    pub(crate) fn poll_third_party(
        &self,
        input: &PollForThirdPartyJobsInput,
    ) -> Result<Vec<ThirdPartyJob>, UpstreamError> {
        let mut state = self.lock();
        let max_batch = input.max_batch_size.unwrap_or(1) as usize;
        let ids = self.dispatch(&mut state, &input.action_type_id, max_batch, None)?;
        Ok(ids
            .into_iter()
            .map(|id| ThirdPartyJob {
                client_id: state.jobs[&id]
                    .spec
                    .client
                    .as_ref()
                    .map(|client| client.id.to_string())
                    .unwrap_or_default(),
                job_id: id.to_string(),
            })
            .collect())
    }

    pub(crate) fn acknowledge(
        &self,
        input: &AcknowledgeJobInput,
    ) -> Result<JobStatus, UpstreamError> {
        let mut state = self.lock();
        acknowledged(find_job(&mut state, &input.job_id)?, &input.nonce)
    }

    pub(crate) fn acknowledge_third_party(
        &self,
        input: &ThirdPartyInput<AcknowledgeThirdParty>,
    ) -> Result<JobStatus, UpstreamError> {
        let mut state = self.lock();
        let (_, record) = find_third_party_job(&mut state, input, CustomJobIs::NotFound)?;
        acknowledged(record, &input.call.nonce)
    }

    pub(crate) fn details(&self, input: &GetJobDetailsInput) -> Result<JobDetails, UpstreamError> {
        let mut state = self.lock();
        let record = find_job(&mut state, &input.job_id)?;
        Ok(JobDetails {
            id: input.job_id.clone(),
            data: self.job_data(&input.job_id, record),
            account_id: self.config.account_id.clone(),
        })
    }

    pub(crate) fn details_third_party(
        &self,
        input: &ThirdPartyInput<()>,
    ) -> Result<ThirdPartyJobDetails, UpstreamError> {
        let mut state = self.lock();
        let (id, record) = find_third_party_job(&mut state, input, CustomJobIs::Invalid)?;
        Ok(ThirdPartyJobDetails {
            data: self.job_data(&id, record),
            id: id.to_string(),
            nonce: record.nonce.clone().unwrap_or_default(),
        })
    }

    pub(crate) fn succeed(&self, input: PutJobSuccessResultInput) -> Result<(), UpstreamError> {
        let output_chars: usize = input
            .output_variables
            .iter()
            .map(|(key, value)| key.chars().count() + value.chars().count())
            .sum();
        let mut state = self.lock();
        in_progress(find_job(&mut state, &input.job_id)?, &input.job_id)?;
        if output_chars > OUTPUT_VARIABLES_MAX_CHARS {
            return Err(UpstreamError::service(
                AwsErrorCode::OutputVariablesSizeExceeded,
                format!("Output variables exceed {OUTPUT_VARIABLES_MAX_CHARS} characters"),
            ));
        }
        let result = JobResult::Success {
            current_revision: input.current_revision,
            execution_details: input.execution_details,
            output_variables: input.output_variables,
        };
        self.finish(&mut state, &input.job_id, result, input.continuation_token);
        Ok(())
    }

    pub(crate) fn succeed_third_party(
        &self,
        input: ThirdPartyInput<ThirdPartySuccess>,
    ) -> Result<(), UpstreamError> {
        let mut state = self.lock();
        let (id, record) = find_third_party_job(&mut state, &input, CustomJobIs::NotFound)?;
        in_progress(record, &id)?;
        let result = JobResult::Success {
            current_revision: input.call.current_revision,
            execution_details: input.call.execution_details,
            output_variables: BTreeMap::new(),
        };
        self.finish(&mut state, &id, result, input.call.continuation_token);
        Ok(())
    }

    pub(crate) fn fail(&self, input: PutJobFailureResultInput) -> Result<(), UpstreamError> {
        let mut state = self.lock();
        in_progress(find_job(&mut state, &input.job_id)?, &input.job_id)?;
        let result = JobResult::Failure(input.failure_details);
        self.finish(&mut state, &input.job_id, result, None);
        Ok(())
    }

    pub(crate) fn fail_third_party(
        &self,
        input: ThirdPartyInput<FailureDetails>,
    ) -> Result<(), UpstreamError> {
        let mut state = self.lock();
        let (id, record) = find_third_party_job(&mut state, &input, CustomJobIs::NotFound)?;
        in_progress(record, &id)?;
        self.finish(&mut state, &id, JobResult::Failure(input.call), None);
        Ok(())
    }

    /// Records an InProgress job's accepted result; a success with a continuation token
    /// creates the follow-up job that carries it.
    fn finish(
        &self,
        state: &mut State,
        id: &JobId,
        result: JobResult,
        continuation_token: Option<String>,
    ) {
        let Some(record) = state.jobs.get_mut(id) else {
            return;
        };
        record.status = match result {
            JobResult::Success { .. } => JobStatus::Succeeded,
            JobResult::Failure(_) => JobStatus::Failed,
        };
        record.nonce = None;
        record.result_count += 1;
        record.result = Some(result);
        if let Some(token) = continuation_token {
            let action_type_id = record.action_type_id.clone();
            let spec = record.spec.clone();
            let follow_up =
                self.insert_job(state, action_type_id, spec, Some(token), Some(id.clone()));
            if let Some(record) = state.jobs.get_mut(id) {
                record.continued_by = Some(follow_up);
            }
        }
    }
}

fn action_type_not_found(action_type: &ActionTypeId) -> UpstreamError {
    UpstreamError::service(
        AwsErrorCode::ActionTypeNotFound,
        format!("Action type {action_type} was not found"),
    )
}

/// A custom job. Third-party jobs are not found by the custom operations.
fn find_job<'s>(state: &'s mut State, id: &JobId) -> Result<&'s mut JobRecord, UpstreamError> {
    let not_found =
        || UpstreamError::service(AwsErrorCode::JobNotFound, format!("Job {id} was not found"));
    let record = state.jobs.get_mut(id).ok_or_else(not_found)?;
    if record.spec.client.is_some() {
        return Err(not_found());
    }
    record.expire(Instant::now());
    Ok(record)
}

/// What a third-party operation answers for a custom job: only GetThirdPartyJobDetails models
/// InvalidJobException; for the others such a job does not exist.
#[derive(Clone, Copy)]
enum CustomJobIs {
    NotFound,
    Invalid,
}

/// A third-party job, for a call carrying its client's token: JobNotFound for an unknown job,
/// `custom` for a custom one, InvalidClientToken for another client's token.
fn find_third_party_job<'s, T>(
    state: &'s mut State,
    input: &ThirdPartyInput<T>,
    custom: CustomJobIs,
) -> Result<(JobId, &'s mut JobRecord), UpstreamError> {
    let not_found = || {
        UpstreamError::service(
            AwsErrorCode::JobNotFound,
            format!("Job {} was not found", input.job_id),
        )
    };
    let id = JobId::parse(input.job_id.as_str()).map_err(|_| not_found())?;
    let record = state.jobs.get_mut(&id).ok_or_else(not_found)?;
    let Some(client) = &record.spec.client else {
        return Err(match custom {
            CustomJobIs::NotFound => not_found(),
            CustomJobIs::Invalid => UpstreamError::service(
                AwsErrorCode::InvalidJob,
                format!("Job {id} is not a third-party job"),
            ),
        });
    };
    let matches: bool = client
        .token
        .expose()
        .as_bytes()
        .ct_eq(input.client_token.expose().as_bytes())
        .into();
    if !matches {
        // Never the token in the message: neither the one given nor the job's.
        return Err(UpstreamError::service(
            AwsErrorCode::InvalidClientToken,
            "The client token is not valid for this job",
        ));
    }
    record.expire(Instant::now());
    Ok((id, record))
}

/// Acknowledges a job with `nonce`: Dispatched -> InProgress (InProgress stays so).
fn acknowledged(record: &mut JobRecord, nonce: &Nonce) -> Result<JobStatus, UpstreamError> {
    if record.nonce.as_deref() != Some(nonce.as_str()) {
        return Err(UpstreamError::service(
            AwsErrorCode::InvalidNonce,
            "The nonce is not the job's current nonce",
        ));
    }
    if record.status == JobStatus::Dispatched {
        record.status = JobStatus::InProgress;
        record.acknowledge_count += 1;
    }
    Ok(record.status)
}

/// The job, if it is InProgress (only then may a result be reported), else InvalidJobState.
fn in_progress<'s>(
    record: &'s mut JobRecord,
    id: &JobId,
) -> Result<&'s mut JobRecord, UpstreamError> {
    if record.status != JobStatus::InProgress {
        return Err(UpstreamError::service(
            AwsErrorCode::InvalidJobState,
            format!("Job {id} is {}, not InProgress", record.status),
        ));
    }
    Ok(record)
}

fn snapshot(id: &JobId, record: &JobRecord) -> JobSnapshot {
    JobSnapshot {
        id: id.clone(),
        action_type_id: record.action_type_id.clone(),
        status: record.status,
        created: record.created,
        dispatch_count: record.dispatch_count,
        acknowledge_count: record.acknowledge_count,
        result_count: record.result_count,
        continuation_token: record.continuation_token.clone(),
        continues: record.continues.clone(),
        continued_by: record.continued_by.clone(),
        result: record.result.clone(),
        client_id: record.spec.client.as_ref().map(|client| client.id.clone()),
    }
}
