//! The validators of the third-party job worker's requests: PollForThirdPartyJobs and the calls
//! about a job, each with its client token or the client whose token the gateway supplies.

use super::{
    InvalidRequest, Shown,
    fields::{CONTINUATION_TOKEN, Checker},
};
use crate::domain::*;
use crate::pb::jobworker as pb;

impl TryFrom<pb::PollForThirdPartyJobsRequest> for PollForThirdPartyJobsInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::PollForThirdPartyJobsRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let action_type_id =
            check.action_type_id("action_type_id", request.action_type_id.as_ref());
        if let Some(action_type_id) = &action_type_id
            && action_type_id.owner != ActionOwner::ThirdParty
        {
            check.rule(
                "action_type_id.owner",
                Shown::text(action_type_id.owner.as_str()),
                "must be ACTION_OWNER_THIRD_PARTY: PollForThirdPartyJobs serves partner actions only",
                "must be ThirdParty: PollForThirdPartyJobs serves partner actions only",
            );
        }
        let max_batch_size = check.max_batch_size(request.max_batch_size);
        check.finish(|| {
            Some(Self {
                action_type_id: action_type_id?,
                max_batch_size,
            })
        })
    }
}

impl TryFrom<pb::AcknowledgeThirdPartyJobRequest> for ThirdPartyRequest<AcknowledgeThirdParty> {
    type Error = InvalidRequest;

    fn try_from(request: pb::AcknowledgeThirdPartyJobRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.third_party_job_id(&request.job_id);
        let credential = check.credential(&request.client_token, &request.client_id);
        let nonce = check.nonce(&request.nonce);
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                credential: credential?,
                call: AcknowledgeThirdParty { nonce: nonce? },
            })
        })
    }
}

impl TryFrom<pb::GetThirdPartyJobDetailsRequest> for ThirdPartyRequest<()> {
    type Error = InvalidRequest;

    fn try_from(request: pb::GetThirdPartyJobDetailsRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.third_party_job_id(&request.job_id);
        let credential = check.credential(&request.client_token, &request.client_id);
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                credential: credential?,
                call: (),
            })
        })
    }
}

impl TryFrom<pb::PutThirdPartyJobSuccessResultRequest> for ThirdPartyRequest<ThirdPartySuccess> {
    type Error = InvalidRequest;

    fn try_from(request: pb::PutThirdPartyJobSuccessResultRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.third_party_job_id(&request.job_id);
        let credential = check.credential(&request.client_token, &request.client_id);
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
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                credential: credential?,
                call: ThirdPartySuccess {
                    current_revision,
                    continuation_token,
                    execution_details,
                },
            })
        })
    }
}

impl TryFrom<pb::PutThirdPartyJobFailureResultRequest> for ThirdPartyRequest<FailureDetails> {
    type Error = InvalidRequest;

    fn try_from(request: pb::PutThirdPartyJobFailureResultRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.third_party_job_id(&request.job_id);
        let credential = check.credential(&request.client_token, &request.client_id);
        let failure_details = check.failure_details(request.failure_details.as_ref());
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                credential: credential?,
                call: failure_details?,
            })
        })
    }
}
