//! Tenant separation: every call is checked against the job it touches, before any upstream
//! state change. A poll or subscription is checked against the action type it names; a call
//! about a job, against the job's action type, which the gateway knows from its own polls and
//! feeds ([`JobOwners`]) or else learns with its own details call. A job outside the caller's
//! scope and a job that does not exist are refused alike (PERMISSION_DENIED,
//! `ACTION_TYPE_NOT_ALLOWED`), so job ids cannot be probed.
//!
//! Across replicas the cache is not shared: a replica that did not poll a job asks
//! CodePipeline once (one GetJobDetails, or GetThirdPartyJobDetails, spending the budget) and
//! remembers the answer.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use lru::LruCache;
use tonic::{Code, Status};

use super::JobWorker;
use crate::{
    api::{Reached, Refusal},
    auth::{Caller, client_tokens::NoClientToken},
    domain::{
        ActionTypeId, GetJobDetailsInput, JobData, JobId, JobStatus, ThirdPartyInput,
        ThirdPartyJobDetails,
    },
    middleware::deadline::CallDeadline,
    observability::metrics::{AuthRejectedLabels, AuthRejection},
};

/// The most jobs whose action type a gateway remembers: far more than are in flight at once.
const REMEMBERED_JOBS: NonZeroUsize = NonZeroUsize::new(65_536).unwrap();

/// Which action type each job the gateway saw belongs to, most recently seen first.
pub struct JobOwners {
    jobs: Mutex<LruCache<String, Arc<ActionTypeId>>>,
}

impl Default for JobOwners {
    fn default() -> Self {
        Self {
            jobs: Mutex::new(LruCache::new(REMEMBERED_JOBS)),
        }
    }
}

impl JobOwners {
    /// Remembers that the jobs `ids` are of `action_type` (one poll's, or one feed's).
    pub fn learn<'a>(&self, action_type: &ActionTypeId, ids: impl IntoIterator<Item = &'a str>) {
        let action_type = Arc::new(action_type.clone());
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            jobs.put(id.to_owned(), action_type.clone());
        }
    }

    /// The action type of job `id`, if the gateway saw it.
    pub(super) fn get(&self, id: &str) -> Option<Arc<ActionTypeId>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

/// Whether a failed details call says anything about the job itself (it does not exist, or is
/// not the caller's): such a failure is refused as out of scope. Any other (throttled,
/// unavailable, timed out) is the upstream's and is answered as it is.
fn tells_of_the_job(code: Code) -> bool {
    !matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
    )
}

impl JobWorker {
    /// A refusal of `caller` for reaching `reached`, counted by reason.
    pub(super) fn not_in_scope(&self, caller: &Caller, reached: Reached) -> Status {
        let reason = match reached {
            Reached::Partner(_) => AuthRejection::PartnerNotAllowed,
            Reached::ActionType(_) | Reached::Job(_) => AuthRejection::ActionTypeNotAllowed,
        };
        self.metrics
            .auth_rejected
            .get_or_create(&AuthRejectedLabels { reason })
            .inc();
        Refusal::NotInScope {
            client_id: caller.id.to_string(),
            reached,
        }
        .into()
    }

    /// Refuses a poll or subscription for an action type outside the caller's scope.
    pub(super) fn may_work(
        &self,
        caller: &Caller,
        action_type: &ActionTypeId,
    ) -> Result<(), Status> {
        if caller.scope.allows_action_type(action_type) {
            Ok(())
        } else {
            Err(self.not_in_scope(caller, Reached::ActionType(action_type.to_string())))
        }
    }

    /// Refuses a call about a job of an action type outside the caller's scope, or about a job
    /// that does not exist. The job's action type is the one remembered, or CodePipeline's
    /// answer to a details call with the gateway's own identity.
    pub(super) async fn may_touch_job(
        &self,
        caller: &Caller,
        job_id: &JobId,
        deadline: Option<CallDeadline>,
    ) -> Result<(), Status> {
        if !caller.scope.limits_action_types() {
            return Ok(());
        }
        if let Some(action_type) = self.job_owners.get(job_id.as_str()) {
            return self.job_in_scope(caller, job_id.as_str(), Some(&action_type));
        }
        // The lookup is an upstream call the caller asked for: it spends the caller's rate, so
        // a client probing ids cannot spend the shared budget faster than its own calls could.
        self.client_limits.check(&caller.id, caller.rate).await?;
        let input = GetJobDetailsInput {
            job_id: job_id.clone(),
        };
        match self.forward(input, deadline).await {
            Ok(details) => self.learned(caller, job_id.as_str(), &details.data),
            Err(status) if tells_of_the_job(status.code()) => {
                Err(self.not_in_scope(caller, Reached::Job(job_id.to_string())))
            }
            Err(status) => Err(status),
        }
    }

    /// As [`Self::may_touch_job`], for a third-party job: unknown, it is looked up with the
    /// call's own client token.
    pub(super) async fn may_touch_third_party_job<T>(
        &self,
        caller: &Caller,
        input: &ThirdPartyInput<T>,
        deadline: Option<CallDeadline>,
    ) -> Result<(), Status> {
        if !caller.scope.limits_action_types() {
            return Ok(());
        }
        let job_id = input.job_id.as_str();
        if let Some(action_type) = self.job_owners.get(job_id) {
            return self.job_in_scope(caller, job_id, Some(&action_type));
        }
        self.client_limits.check(&caller.id, caller.rate).await?;
        let details = ThirdPartyInput {
            job_id: input.job_id.clone(),
            client_token: input.client_token.clone(),
            call: (),
        };
        match self.forward(details, deadline).await {
            Ok(details) => self.learned(caller, job_id, &details.data),
            Err(status) if tells_of_the_job(status.code()) => {
                Err(self.not_in_scope(caller, Reached::Job(job_id.to_owned())))
            }
            Err(status) => Err(status),
        }
    }

    /// For a call that reads the job's details anyway (GetJobDetails, the artifact RPCs): the
    /// check made now, when the job's action type is known; else the one to make on the answer.
    pub(super) fn check_before_details(
        &self,
        caller: &Caller,
        job_id: &str,
    ) -> Result<DetailsCheck, Status> {
        if !caller.scope.limits_action_types() {
            return Ok(DetailsCheck::Done);
        }
        match self.job_owners.get(job_id) {
            Some(action_type) => {
                self.job_in_scope(caller, job_id, Some(&action_type))?;
                Ok(DetailsCheck::Done)
            }
            None => Ok(DetailsCheck::OnAnswer),
        }
    }

    /// The details call's answer, checked if [`Self::check_before_details`] could not: a job
    /// that does not exist is refused as one out of scope.
    pub(super) fn check_details_answer<T>(
        &self,
        caller: &Caller,
        job_id: &str,
        check: DetailsCheck,
        answer: Result<T, Status>,
        data: impl FnOnce(&T) -> Option<&JobData>,
    ) -> Result<T, Status> {
        match (check, answer) {
            (DetailsCheck::Done, answer) => answer,
            (DetailsCheck::OnAnswer, Ok(details)) => {
                match data(&details) {
                    Some(data) => self.learned(caller, job_id, data)?,
                    // An answer that tells nothing of the job's action type proves nothing.
                    None => return Err(self.not_in_scope(caller, Reached::Job(job_id.to_owned()))),
                }
                Ok(details)
            }
            (DetailsCheck::OnAnswer, Err(status)) if tells_of_the_job(status.code()) => {
                Err(self.not_in_scope(caller, Reached::Job(job_id.to_owned())))
            }
            (DetailsCheck::OnAnswer, Err(status)) => Err(status),
        }
    }

    /// Remembers the action type a job's data names, and checks it.
    fn learned(&self, caller: &Caller, job_id: &str, data: &JobData) -> Result<(), Status> {
        if let Some(action_type) = &data.action_type_id {
            self.job_owners.learn(action_type, [job_id]);
        }
        self.job_in_scope(caller, job_id, data.action_type_id.as_ref())
    }

    fn job_in_scope(
        &self,
        caller: &Caller,
        job_id: &str,
        action_type: Option<&ActionTypeId>,
    ) -> Result<(), Status> {
        match action_type {
            Some(action_type) if caller.scope.allows_action_type(action_type) => Ok(()),
            _ => Err(self.not_in_scope(caller, Reached::Job(job_id.to_owned()))),
        }
    }

    /// The status of a third-party call the gateway holds no token for, or may not hand one to.
    /// To a scoped caller, a job this gateway did not poll is refused as one out of its scope:
    /// "not polled here" would tell a job the gateway knows from one it does not.
    pub(super) fn token_withheld(
        &self,
        caller: &Caller,
        job_id: &str,
        withheld: NoClientToken,
    ) -> Status {
        match withheld {
            NoClientToken::UnknownClient(_) if caller.scope.limits_action_types() => {
                self.not_in_scope(caller, Reached::Job(job_id.to_owned()))
            }
            NoClientToken::NotInScope { client, named } => {
                let reached = if named {
                    Reached::Partner(client.to_string())
                } else {
                    Reached::Job(job_id.to_owned())
                };
                self.not_in_scope(caller, reached)
            }
            missing => Refusal::NoClientToken {
                job_id: job_id.to_owned(),
                reason: missing.to_string(),
            }
            .into(),
        }
    }
}

/// Whether a call that reads a job's details still has to check them against the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DetailsCheck {
    /// Checked already, or the caller is unscoped.
    Done,
    /// The job's action type is unknown: the details' answer decides.
    OnAnswer,
}

/// Takes the artifact credentials out of job data, for a client that is not to hold them.
pub(super) fn without_artifact_credentials(caller: &Caller, data: &mut JobData) {
    if !caller.scope.hands_artifact_credentials() {
        data.artifact_credentials = None;
    }
}

/// An answer as the caller may receive it: job data without the artifact credentials a client
/// marked `artifact_credentials = false` is not to hold.
pub(super) trait HandedTo {
    /// The answer for `caller`.
    fn handed_to(self, caller: &Caller) -> Self;

    /// The job's data the answer carries, if it is a details answer: then the answer itself
    /// tells the job's action type, and no lookup is needed before the call.
    fn job_data(&self) -> Option<&JobData> {
        None
    }
}

impl HandedTo for () {
    fn handed_to(self, _: &Caller) -> Self {}
}

impl HandedTo for JobStatus {
    fn handed_to(self, _: &Caller) -> Self {
        self
    }
}

impl HandedTo for ThirdPartyJobDetails {
    fn handed_to(mut self, caller: &Caller) -> Self {
        without_artifact_credentials(caller, &mut self.data);
        self
    }

    fn job_data(&self) -> Option<&JobData> {
        Some(&self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActionCategory, ActionOwner};

    fn action_type(provider: &str) -> ActionTypeId {
        ActionTypeId {
            category: ActionCategory::Build,
            owner: ActionOwner::Custom,
            provider: provider.to_owned(),
            version: "1".to_owned(),
        }
    }

    #[test]
    fn a_job_is_remembered_with_its_action_type_until_newer_ones_push_it_out() {
        let owners = JobOwners::default();
        owners.learn(&action_type("A"), ["job-1", "job-2"]);
        assert_eq!(owners.get("job-1").as_deref(), Some(&action_type("A")));
        assert_eq!(owners.get("job-3"), None);
        let many: Vec<String> = (0..REMEMBERED_JOBS.get())
            .map(|i| format!("n{i}"))
            .collect();
        owners.learn(&action_type("B"), many.iter().map(String::as_str));
        assert_eq!(owners.get("job-2"), None, "the oldest is forgotten");
        assert_eq!(owners.get("n0").as_deref(), Some(&action_type("B")));
    }

    #[test]
    fn only_answers_about_the_job_are_refused_as_out_of_scope() {
        assert!(tells_of_the_job(Code::NotFound));
        assert!(tells_of_the_job(Code::PermissionDenied));
        assert!(!tells_of_the_job(Code::Unavailable));
        assert!(!tells_of_the_job(Code::ResourceExhausted));
    }
}
