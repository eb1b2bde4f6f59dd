//! The validators of the custom job worker's requests: PollForJobs and a job stream's
//! subscription and credit, AcknowledgeJob, GetJobDetails, PutJobSuccessResult and
//! PutJobFailureResult.

use std::collections::BTreeMap;

use super::{
    Constraint, InvalidRequest, MAX_OUTSTANDING_JOBS, Shown,
    fields::{CONTINUATION_TOKEN, Checker, OUTPUT_VARIABLE_KEY},
};
use crate::domain::*;
use crate::pb::jobworker as pb;

impl TryFrom<pb::PollForJobsRequest> for PollForJobsInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::PollForJobsRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let action_type_id = check.custom_action_type_id(request.action_type_id.as_ref());
        let max_batch_size = check.max_batch_size(request.max_batch_size);
        let query_param = check.query_param(request.query_param);
        check.finish(|| {
            Some(Self {
                action_type_id: action_type_id?,
                max_batch_size,
                query_param,
            })
        })
    }
}

impl TryFrom<pb::StreamJobsSubscription> for SubscribeInput {
    type Error = InvalidRequest;

    fn try_from(subscription: pb::StreamJobsSubscription) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let action_type_id = check.custom_action_type_id(subscription.action_type_id.as_ref());
        let query_param = check.query_param(subscription.query_param);
        let max_outstanding_jobs = u32::try_from(subscription.max_outstanding_jobs)
            .ok()
            .filter(|jobs| (1..=MAX_OUTSTANDING_JOBS).contains(jobs));
        if max_outstanding_jobs.is_none() {
            check.violation(
                "max_outstanding_jobs",
                outstanding_jobs(),
                Shown::Value(subscription.max_outstanding_jobs.to_string()),
            );
        }
        check.finish(|| {
            Some(Self {
                action_type_id: action_type_id?,
                query_param,
                max_outstanding_jobs: max_outstanding_jobs?,
            })
        })
    }
}

/// The jobs of a StreamJobsCredit: 1 to [`MAX_OUTSTANDING_JOBS`].
pub fn credit(credit: &pb::StreamJobsCredit) -> Result<u32, InvalidRequest> {
    let mut check = Checker::default();
    let jobs = u32::try_from(credit.jobs)
        .ok()
        .filter(|jobs| (1..=MAX_OUTSTANDING_JOBS).contains(jobs));
    if jobs.is_none() {
        check.violation(
            "credit.jobs",
            outstanding_jobs(),
            Shown::Value(credit.jobs.to_string()),
        );
    }
    check.finish(|| jobs)
}

fn outstanding_jobs() -> Constraint {
    Constraint::Range {
        min: 1,
        max: Some(i64::from(MAX_OUTSTANDING_JOBS)),
    }
}

impl TryFrom<pb::AcknowledgeJobRequest> for AcknowledgeJobInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::AcknowledgeJobRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id(&request.job_id);
        let nonce = check.nonce(&request.nonce);
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                nonce: nonce?,
            })
        })
    }
}

impl TryFrom<pb::GetJobDetailsRequest> for GetJobDetailsInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::GetJobDetailsRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id(&request.job_id);
        check.finish(|| Some(Self { job_id: job_id? }))
    }
}

impl TryFrom<pb::PutJobSuccessResultRequest> for PutJobSuccessResultInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::PutJobSuccessResultRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id(&request.job_id);
        let current_revision = request
            .current_revision
            .as_ref()
            .map(|revision| check.current_revision(revision));
        let continuation_token = check.optional_text(
            "continuation_token",
            request.continuation_token.as_deref(),
            &CONTINUATION_TOKEN,
        );
        let execution_details = request
            .execution_details
            .as_ref()
            .map(|details| check.execution_details(details));
        if continuation_token.is_some() && !request.output_variables.is_empty() {
            check.rule(
                "output_variables",
                Shown::Value(format!("{} variables", request.output_variables.len())),
                "must be empty when continuation_token is set",
                "must be empty when continuationToken is set",
            );
        }
        let output_variables: BTreeMap<String, String> = request
            .output_variables
            .into_iter()
            .map(|(key, value)| {
                let field = format!("output_variables[{key:?}]");
                (check.text(&field, &key, &OUTPUT_VARIABLE_KEY), value)
            })
            .collect();
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                current_revision,
                continuation_token,
                execution_details,
                output_variables,
            })
        })
    }
}

impl TryFrom<pb::PutJobFailureResultRequest> for PutJobFailureResultInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::PutJobFailureResultRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id(&request.job_id);
        let failure_details = check.failure_details(request.failure_details.as_ref());
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                failure_details: failure_details?,
            })
        })
    }
}
