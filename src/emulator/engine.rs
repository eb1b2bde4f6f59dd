//! The job engine: action types, jobs and their lifecycle, behind the [`Upstream`] port.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use enum_map::EnumMap;
use rand::{
    RngExt,
    distr::{Alphanumeric, SampleString},
};
use tokio::sync::broadcast;

use super::faults;
use crate::{
    domain::{
        AcknowledgeJobInput, ActionCategory, ActionConfiguration, ActionOwner, ActionTypeId,
        Artifact, CurrentRevision, EncryptionKey, ExecutionDetails, FailureDetails,
        GetJobDetailsInput, Job, JobData, JobDetails, JobId, JobStatus, PipelineContext,
        PollForJobsInput, PutJobFailureResultInput, PutJobSuccessResultInput, S3Location,
        SessionCredentials,
    },
    upstream::{AwsErrorCode, Operation, Upstream, UpstreamError},
};

/// The most characters (keys and values together) a job's output variables may have, as AWS
/// documents for OutputVariablesSizeExceededException (122,880).
pub const OUTPUT_VARIABLES_MAX_CHARS: usize = 122_880;

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The 12-digit account that owns every job.
    pub account_id: String,
    /// How long a Dispatched job waits for its AcknowledgeJob before a poll hands it out again.
    pub redispatch_after: Duration,
    /// How long a job may take from creation to result before it is TimedOut.
    pub job_timeout: Duration,
    /// Latency added to every job-worker call (to keep calls in flight in tests and benchmarks).
    pub latency: Duration,
    /// Faults injected into job-worker calls; the admin service can replace them.
    pub faults: faults::FaultPlan,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            account_id: "123456789012".to_owned(),
            redispatch_after: Duration::from_secs(30),
            job_timeout: Duration::from_secs(24 * 60 * 60),
            latency: Duration::ZERO,
            faults: faults::FaultPlan::default(),
        }
    }
}

/// What a pipeline run gives a job: everything in its data but credentials and continuation.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    /// The action's configuration, secret properties included.
    pub configuration: ActionConfiguration,
    /// Where in the pipeline the job comes from.
    pub pipeline_context: PipelineContext,
    /// The artifacts the action reads.
    pub input_artifacts: Vec<Artifact>,
    /// The artifacts the action writes.
    pub output_artifacts: Vec<Artifact>,
    /// The key that encrypts the artifacts.
    pub encryption_key: Option<EncryptionKey>,
}

/// The result a worker reported for a job.
#[derive(Debug, Clone)]
pub enum JobResult {
    /// PutJobSuccessResult.
    Success {
        /// The revision reported.
        current_revision: Option<CurrentRevision>,
        /// What the worker did.
        execution_details: Option<ExecutionDetails>,
        /// The action's output variables.
        output_variables: BTreeMap<String, String>,
    },
    /// PutJobFailureResult.
    Failure(FailureDetails),
}

/// A job as the emulator sees it, without secrets: what the admin service shows.
#[derive(Debug, Clone)]
pub struct JobSnapshot {
    /// The job's ID.
    pub id: JobId,
    /// Its action type.
    pub action_type_id: ActionTypeId,
    /// Its status now.
    pub status: JobStatus,
    /// When it was created.
    pub created: SystemTime,
    /// How often a poll handed it out.
    pub dispatch_count: u32,
    /// How many acknowledgements moved it to InProgress.
    pub acknowledge_count: u32,
    /// How many results were accepted.
    pub result_count: u32,
    /// The token it was created with, when it continues an earlier job.
    pub continuation_token: Option<String>,
    /// The job it continues.
    pub continues: Option<JobId>,
    /// The follow-up job its success created.
    pub continued_by: Option<JobId>,
    /// The accepted result.
    pub result: Option<JobResult>,
}

struct JobRecord {
    action_type_id: ActionTypeId,
    spec: JobSpec,
    continuation_token: Option<String>,
    continues: Option<JobId>,
    continued_by: Option<JobId>,
    status: JobStatus,
    nonce: Option<String>,
    dispatched_at: Option<Instant>,
    created: SystemTime,
    deadline: Instant,
    dispatch_count: u32,
    acknowledge_count: u32,
    result_count: u32,
    result: Option<JobResult>,
}

impl JobRecord {
    /// Moves an unfinished job past its deadline to TimedOut.
    fn expire(&mut self, now: Instant) {
        if !self.status.is_final() && now >= self.deadline {
            self.status = JobStatus::TimedOut;
            self.nonce = None;
        }
    }
}

#[derive(Default)]
struct State {
    action_types: HashSet<ActionTypeId>,
    jobs: HashMap<JobId, JobRecord>,
    /// Every job ID, oldest first.
    creation_order: Vec<JobId>,
    /// Per action type, the jobs a poll may still hand out (Queued or Dispatched), oldest first.
    pending: HashMap<ActionTypeId, VecDeque<JobId>>,
}

/// The emulator: action types, jobs, and the counters of calls received.
pub struct Emulator {
    pub(super) config: EmulatorConfig,
    faults: ArcSwap<faults::FaultPlan>,
    state: Mutex<State>,
    calls: EnumMap<Operation, AtomicU64>,
    /// Tells job feeds in the same process that jobs were created.
    created: broadcast::Sender<ActionTypeId>,
}

/// The demo action type seeded at start: Build / Custom / DemoBuilder / 1.
pub fn demo_action_type() -> ActionTypeId {
    ActionTypeId {
        category: ActionCategory::Build,
        owner: ActionOwner::Custom,
        provider: "DemoBuilder".to_owned(),
        version: "1".to_owned(),
    }
}

impl Emulator {
    /// An emulator with no action types and no jobs.
    pub fn new(config: EmulatorConfig) -> Self {
        Self {
            faults: ArcSwap::from_pointee(config.faults.clone()),
            config,
            state: Mutex::default(),
            calls: Default::default(),
            created: broadcast::channel(1024).0,
        }
    }

    /// Registers the demo action type and creates `jobs` Queued jobs for it, so a new user has
    /// work to poll at once.
    pub fn seed_demo(&self, jobs: usize) {
        let action_type = demo_action_type();
        self.register_action_type(action_type.clone())
            .expect("the demo action type is custom");
        for n in 1..=jobs {
            let spec = JobSpec {
                configuration: ActionConfiguration(BTreeMap::from([
                    ("ProjectName".to_owned(), "demo-app".to_owned()),
                    ("DeployToken".to_owned(), random_text(24)),
                ])),
                pipeline_context: demo_pipeline_context(&self.config.account_id),
                input_artifacts: vec![demo_artifact("SourceOutput", n)],
                output_artifacts: vec![demo_artifact("BuildOutput", n)],
                encryption_key: None,
            };
            self.create_job(&action_type, spec)
                .expect("the demo action type was just registered");
        }
    }

    /// Registers a custom action type (what CreateCustomActionType does). Idempotent.
    pub fn register_action_type(&self, action_type: ActionTypeId) -> Result<(), UpstreamError> {
        if action_type.owner != ActionOwner::Custom {
            return Err(UpstreamError::service(
                AwsErrorCode::Validation,
                "Only custom action types (owner Custom) can be registered",
            ));
        }
        self.lock().action_types.insert(action_type);
        Ok(())
    }

    /// Creates a Queued job for a registered action type.
    pub fn create_job(
        &self,
        action_type: &ActionTypeId,
        spec: JobSpec,
    ) -> Result<JobId, UpstreamError> {
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

    /// How many calls of each operation reached the emulator, through any door.
    pub fn call_counts(&self) -> BTreeMap<Operation, u64> {
        Operation::ALL
            .into_iter()
            .map(|op| (op, self.calls[op].load(Ordering::Relaxed)))
            .collect()
    }

    /// The total of [`Self::call_counts`].
    pub fn total_calls(&self) -> u64 {
        self.calls.values().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, plan: faults::FaultPlan) {
        self.faults.store(std::sync::Arc::new(plan));
    }

    /// Counts a call, waits the configured latency, and draws its fault: every door calls this
    /// first.
    pub(super) async fn enter(&self, op: Operation) -> Option<faults::Fault> {
        self.calls[op].fetch_add(1, Ordering::Relaxed);
        let (fault_latency, fault) = self.faults.load().draw(op);
        let latency = self.config.latency + fault_latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        fault
    }

    /// Runs an in-process call through [`Self::enter`]: a fault that strikes after the effect
    /// still runs the call, then loses its answer.
    async fn serve<T>(
        &self,
        op: Operation,
        call: impl FnOnce() -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        match self.enter(op).await {
            None => call(),
            Some(fault) => {
                if fault.after_effect() {
                    // The effect happens; its answer is what the fault takes away.
                    let _ = call();
                }
                Err(fault.as_upstream_error())
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a job half-updated in a way later calls
        // must not see (each update is a few field writes), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn poll(&self, input: &PollForJobsInput) -> Result<Vec<Job>, UpstreamError> {
        let mut state = self.lock();
        if !state.action_types.contains(&input.action_type_id) {
            return Err(action_type_not_found(&input.action_type_id));
        }
        let max_batch = input.max_batch_size.unwrap_or(1) as usize;
        let now = Instant::now();
        let State { jobs, pending, .. } = &mut *state;
        let Some(queue) = pending.get_mut(&input.action_type_id) else {
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
            let matches_query = input.query_param.as_ref().is_none_or(|query| {
                record.spec.configuration.0.get(&query.key) == Some(&query.value)
            });
            if ready && matches_query && handed_out.len() < max_batch {
                let nonce = random_nonce();
                record.status = JobStatus::Dispatched;
                record.nonce = Some(nonce.clone());
                record.dispatched_at = Some(now);
                record.dispatch_count += 1;
                handed_out.push(Job {
                    id: id.to_string(),
                    data: job_data(record),
                    nonce,
                    account_id: self.config.account_id.clone(),
                });
            }
            true
        });
        Ok(handed_out)
    }

    pub(super) fn acknowledge(
        &self,
        input: &AcknowledgeJobInput,
    ) -> Result<JobStatus, UpstreamError> {
        let mut state = self.lock();
        let record = find_job(&mut state, &input.job_id)?;
        if record.nonce.as_deref() != Some(input.nonce.as_str()) {
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

    pub(super) fn details(&self, input: &GetJobDetailsInput) -> Result<JobDetails, UpstreamError> {
        let mut state = self.lock();
        let record = find_job(&mut state, &input.job_id)?;
        Ok(JobDetails {
            id: input.job_id.to_string(),
            data: job_data(record),
            account_id: self.config.account_id.clone(),
        })
    }

    pub(super) fn succeed(&self, input: PutJobSuccessResultInput) -> Result<(), UpstreamError> {
        let output_chars: usize = input
            .output_variables
            .iter()
            .map(|(key, value)| key.chars().count() + value.chars().count())
            .sum();
        let mut state = self.lock();
        let record = in_progress_job(&mut state, &input.job_id)?;
        if output_chars > OUTPUT_VARIABLES_MAX_CHARS {
            return Err(UpstreamError::service(
                AwsErrorCode::OutputVariablesSizeExceeded,
                format!("Output variables exceed {OUTPUT_VARIABLES_MAX_CHARS} characters"),
            ));
        }
        record.status = JobStatus::Succeeded;
        record.nonce = None;
        record.result_count += 1;
        record.result = Some(JobResult::Success {
            current_revision: input.current_revision,
            execution_details: input.execution_details,
            output_variables: input.output_variables,
        });
        if let Some(token) = input.continuation_token {
            let action_type_id = record.action_type_id.clone();
            let spec = record.spec.clone();
            let follow_up = self.insert_job(
                &mut state,
                action_type_id,
                spec,
                Some(token),
                Some(input.job_id.clone()),
            );
            if let Some(record) = state.jobs.get_mut(&input.job_id) {
                record.continued_by = Some(follow_up);
            }
        }
        Ok(())
    }

    pub(super) fn fail(&self, input: PutJobFailureResultInput) -> Result<(), UpstreamError> {
        let mut state = self.lock();
        let record = in_progress_job(&mut state, &input.job_id)?;
        record.status = JobStatus::Failed;
        record.nonce = None;
        record.result_count += 1;
        record.result = Some(JobResult::Failure(input.failure_details));
        Ok(())
    }
}

#[async_trait]
impl Upstream for Emulator {
    async fn poll_for_jobs(&self, input: PollForJobsInput) -> Result<Vec<Job>, UpstreamError> {
        self.serve(Operation::PollForJobs, || self.poll(&input))
            .await
    }

    async fn acknowledge_job(
        &self,
        input: AcknowledgeJobInput,
    ) -> Result<JobStatus, UpstreamError> {
        self.serve(Operation::AcknowledgeJob, || self.acknowledge(&input))
            .await
    }

    async fn get_job_details(
        &self,
        input: GetJobDetailsInput,
    ) -> Result<JobDetails, UpstreamError> {
        self.serve(Operation::GetJobDetails, || self.details(&input))
            .await
    }

    async fn put_job_success_result(
        &self,
        input: PutJobSuccessResultInput,
    ) -> Result<(), UpstreamError> {
        self.serve(Operation::PutJobSuccessResult, || self.succeed(input))
            .await
    }

    async fn put_job_failure_result(
        &self,
        input: PutJobFailureResultInput,
    ) -> Result<(), UpstreamError> {
        self.serve(Operation::PutJobFailureResult, || self.fail(input))
            .await
    }

    fn new_jobs(&self) -> Option<broadcast::Receiver<ActionTypeId>> {
        Some(self.created.subscribe())
    }
}

fn action_type_not_found(action_type: &ActionTypeId) -> UpstreamError {
    UpstreamError::service(
        AwsErrorCode::ActionTypeNotFound,
        format!("Action type {action_type} was not found"),
    )
}

fn find_job<'s>(state: &'s mut State, id: &JobId) -> Result<&'s mut JobRecord, UpstreamError> {
    let record = state.jobs.get_mut(id).ok_or_else(|| {
        UpstreamError::service(AwsErrorCode::JobNotFound, format!("Job {id} was not found"))
    })?;
    record.expire(Instant::now());
    Ok(record)
}

fn in_progress_job<'s>(
    state: &'s mut State,
    id: &JobId,
) -> Result<&'s mut JobRecord, UpstreamError> {
    let record = find_job(state, id)?;
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
    }
}

/// The data a worker gets, with artifact credentials issued afresh for each poll or details
/// call, as CodePipeline does.
fn job_data(record: &JobRecord) -> JobData {
    JobData {
        action_type_id: Some(record.action_type_id.clone()),
        action_configuration: record.spec.configuration.clone(),
        pipeline_context: Some(record.spec.pipeline_context.clone()),
        input_artifacts: record.spec.input_artifacts.clone(),
        output_artifacts: record.spec.output_artifacts.clone(),
        artifact_credentials: Some(SessionCredentials {
            access_key_id: format!("ASIA{}", random_text(16).to_ascii_uppercase()),
            secret_access_key: random_text(40),
            session_token: random_text(96),
        }),
        continuation_token: record.continuation_token.clone(),
        encryption_key: record.spec.encryption_key.clone(),
    }
}

fn random_text(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A nonce as unguessable as a session key: 128 random bits in decimal.
fn random_nonce() -> String {
    rand::rng().random::<u128>().to_string()
}

/// A pipeline context for jobs created without one.
pub fn demo_pipeline_context(account_id: &str) -> PipelineContext {
    PipelineContext {
        pipeline_name: Some("demo-pipeline".to_owned()),
        stage_name: Some("Build".to_owned()),
        action_name: Some("DemoBuild".to_owned()),
        action_execution_id: Some(uuid::Uuid::new_v4().to_string()),
        pipeline_arn: Some(format!(
            "arn:aws:codepipeline:us-east-1:{account_id}:demo-pipeline"
        )),
        pipeline_execution_id: Some(uuid::Uuid::new_v4().to_string()),
    }
}

fn demo_artifact(name: &str, n: usize) -> Artifact {
    Artifact {
        name: Some(name.to_owned()),
        revision: Some(format!("demo-revision-{n}")),
        s3_location: Some(S3Location {
            bucket_name: "codepipeline-us-east-1-demo-artifacts".to_owned(),
            object_key: format!("demo-pipeline/{name}/{n}.zip"),
        }),
    }
}
