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
use tokio::sync::broadcast;

use subtle::ConstantTimeEq;

use super::{
    credentials::{self, IssuedCredentials},
    faults, random,
    store::{self, StoreOperation},
};
use codepipeline_job_port::domain::{
    AcknowledgeJobInput, AcknowledgeThirdParty, ActionCategory, ActionConfiguration, ActionOwner,
    ActionTypeId, Artifact, ClientId, ClientToken, CurrentRevision, EncryptionKey,
    ExecutionDetails, FailureDetails, GetJobDetailsInput, Job, JobData, JobDetails, JobId,
    JobStatus, Nonce, PipelineContext, PollForJobsInput, PollForThirdPartyJobsInput,
    PutJobFailureResultInput, PutJobSuccessResultInput, QueryParam, S3Location, ThirdPartyInput,
    ThirdPartyJob, ThirdPartyJobDetails, ThirdPartySuccess,
};
use codepipeline_job_port::upstream::{
    AwsErrorCode, Operation, Upstream, UpstreamAnswer, UpstreamCall, UpstreamError,
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
    /// Faults injected into job-worker calls and artifact-store requests; the admin service can
    /// replace them.
    pub faults: faults::FaultPlan,
    /// How long the artifact credentials handed out with a job stay valid.
    pub artifact_credentials_ttl: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            account_id: "123456789012".to_owned(),
            redispatch_after: Duration::from_secs(30),
            job_timeout: Duration::from_secs(24 * 60 * 60),
            latency: Duration::ZERO,
            faults: faults::FaultPlan::default(),
            artifact_credentials_ttl: Duration::from_secs(15 * 60),
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
    /// For a third-party job: the client it is for. Custom jobs have none.
    pub client: Option<PartnerClient>,
}

/// A third-party client: the clientId / clientToken pair a partner receives when a customer
/// connects its action.
#[derive(Clone, PartialEq, Eq)]
pub struct PartnerClient {
    /// The public half.
    pub id: ClientId,
    /// The secret half, which every call about the job but the poll must carry.
    pub token: ClientToken,
}

impl PartnerClient {
    /// A new client with a random ID and a random 64-character token.
    pub fn random() -> Self {
        Self {
            id: ClientId::random(),
            token: ClientToken::parse(&random::text(64)).expect("64 characters is a valid token"),
        }
    }
}

impl std::fmt::Debug for PartnerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerClient")
            .field("id", &self.id)
            .field("token", &self.token)
            .finish()
    }
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
    /// A third-party job's client (never its token).
    pub client_id: Option<ClientId>,
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
    /// The buckets the jobs' artifacts are in: the artifact store's buckets.
    buckets: HashSet<String>,
}

/// The emulator: action types, jobs, and the counters of calls received.
pub struct Emulator {
    pub(super) config: EmulatorConfig,
    faults: ArcSwap<faults::FaultPlan>,
    state: Mutex<State>,
    calls: EnumMap<Operation, AtomicU64>,
    /// The artifact store's authenticated requests, by operation.
    store_calls: EnumMap<StoreOperation, AtomicU64>,
    /// Tells job feeds in the same process that jobs were created.
    created: broadcast::Sender<ActionTypeId>,
    /// Every artifact credential handed out, for the artifact store to check. Locked after
    /// `state` when both are needed, never before.
    credentials: Mutex<credentials::Registry>,
    /// The artifact store's objects.
    objects: store::Objects,
}

/// Which of a job's artifacts: the ones it reads or the ones it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSide {
    /// Input artifacts: readable with the job's credentials.
    Input,
    /// Output artifacts: writable with the job's credentials.
    Output,
}

/// What the artifact store needs to know about a request signed with an issued credential.
#[derive(Debug, Clone)]
pub struct ArtifactAccess {
    /// The credential, and the job it was issued for.
    pub credentials: IssuedCredentials,
    /// The job's status now: its credentials work only while it is InProgress.
    pub status: JobStatus,
    /// Where its input artifacts are (readable).
    pub inputs: Vec<S3Location>,
    /// Where its output artifacts are (writable).
    pub outputs: Vec<S3Location>,
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

/// The demo third-party action type seeded at start: Build / ThirdParty / DemoPartner / 1.
pub fn demo_third_party_action_type() -> ActionTypeId {
    ActionTypeId {
        category: ActionCategory::Build,
        owner: ActionOwner::ThirdParty,
        provider: "DemoPartner".to_owned(),
        version: "1".to_owned(),
    }
}

/// The client of the demo third-party jobs. Its token is fixed so a demo client-token file
/// (examples/client-tokens.toml) can hold it: a demo, not a secret.
pub const DEMO_CLIENT_ID: &str = "5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10";
/// The token of [`DEMO_CLIENT_ID`].
pub const DEMO_CLIENT_TOKEN: &str = "demo-partner-client-token";

/// The client of the demo third-party jobs.
pub fn demo_client() -> PartnerClient {
    PartnerClient {
        id: ClientId::parse(DEMO_CLIENT_ID).expect("the demo client ID is a UUID"),
        token: ClientToken::parse(DEMO_CLIENT_TOKEN).expect("the demo token is short"),
    }
}

impl Emulator {
    /// An emulator with no action types and no jobs.
    pub fn new(config: EmulatorConfig) -> Self {
        Self {
            faults: ArcSwap::from_pointee(config.faults.clone()),
            state: Mutex::default(),
            calls: Default::default(),
            store_calls: Default::default(),
            created: broadcast::channel(1024).0,
            credentials: Mutex::new(credentials::Registry::new(config.artifact_credentials_ttl)),
            objects: store::Objects::default(),
            config,
        }
    }

    /// Registers the demo action types and creates `jobs` Queued jobs for each (the
    /// third-party ones for [`demo_client`]), so a new user has work to poll at once.
    pub fn seed_demo(&self, jobs: usize) {
        for (action_type, client) in [
            (demo_action_type(), None),
            (demo_third_party_action_type(), Some(demo_client())),
        ] {
            self.register_action_type(action_type.clone())
                .expect("the demo action types have workers");
            for n in 1..=jobs {
                let input = demo_artifact(&action_type, "SourceOutput", n);
                let spec = JobSpec {
                    configuration: ActionConfiguration(BTreeMap::from([
                        ("ProjectName".to_owned(), "demo-app".to_owned()),
                        ("DeployToken".to_owned(), random::text(24)),
                    ])),
                    pipeline_context: demo_pipeline_context(&self.config.account_id),
                    input_artifacts: vec![input.clone()],
                    output_artifacts: vec![demo_artifact(&action_type, "BuildOutput", n)],
                    encryption_key: None,
                    client: client.clone(),
                };
                self.create_job(&action_type, spec)
                    .expect("the demo action type was just registered");
                if let Some(location) = &input.s3_location {
                    let revision = input.revision.as_deref().unwrap_or_default();
                    self.objects.put(
                        location,
                        store::Object::new(store::demo_source_zip(revision), "application/zip"),
                    );
                }
            }
        }
    }

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

    /// How many authenticated requests of each operation reached the artifact store.
    pub fn store_call_counts(&self) -> BTreeMap<StoreOperation, u64> {
        StoreOperation::ALL
            .into_iter()
            .map(|op| (op, self.store_calls[op].load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts an artifact-store request, waits the fault plan's latency for it, and draws its
    /// fault. (The engine's `--latency` is for job-worker calls only.)
    pub(super) async fn enter_store(&self, op: StoreOperation) -> Option<faults::Fault> {
        self.store_calls[op].fetch_add(1, Ordering::Relaxed);
        let drawn = self.faults.load().draw(op);
        if !drawn.latency.is_zero() {
            tokio::time::sleep(drawn.latency).await;
        }
        drawn.fault
    }

    /// The artifact store's objects.
    pub fn objects(&self) -> &store::Objects {
        &self.objects
    }

    /// Whether some job's artifacts are in this bucket: the buckets the artifact store has.
    pub fn has_bucket(&self, bucket: &str) -> bool {
        self.lock().buckets.contains(bucket)
    }

    /// What a request signed with this access key may do: the issued credential, its job's
    /// status and artifact locations. `None` for a key never issued (or long forgotten).
    pub fn artifact_access(&self, access_key_id: &str) -> Option<ArtifactAccess> {
        let credentials = self.issued().get(access_key_id)?.clone();
        let mut state = self.lock();
        let record = state.jobs.get_mut(&credentials.job_id)?;
        record.expire(Instant::now());
        let locations = |artifacts: &[Artifact]| {
            artifacts
                .iter()
                .filter_map(|artifact| artifact.s3_location.clone())
                .collect()
        };
        Some(ArtifactAccess {
            status: record.status,
            inputs: locations(&record.spec.input_artifacts),
            outputs: locations(&record.spec.output_artifacts),
            credentials,
        })
    }

    /// Where a job's input or output artifact named `name` is stored. A job that does not exist
    /// is JobNotFound; an artifact it does not have (or without a location) is `Ok(None)`.
    pub fn artifact_location(
        &self,
        id: &JobId,
        side: ArtifactSide,
        name: &str,
    ) -> Result<Option<S3Location>, UpstreamError> {
        let state = self.lock();
        let record = state.jobs.get(id).ok_or_else(|| {
            UpstreamError::service(AwsErrorCode::JobNotFound, format!("Job {id} was not found"))
        })?;
        let artifacts = match side {
            ArtifactSide::Input => &record.spec.input_artifacts,
            ArtifactSide::Output => &record.spec.output_artifacts,
        };
        Ok(artifacts
            .iter()
            .find(|artifact| artifact.name.as_deref() == Some(name))
            .and_then(|artifact| artifact.s3_location.clone()))
    }

    fn issued(&self) -> MutexGuard<'_, credentials::Registry> {
        // Each update is one insert or removal: a poisoned lock leaves nothing half-done.
        self.credentials
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The data a worker gets, with artifact credentials issued afresh for each poll or details
    /// call, as CodePipeline does, and remembered for the artifact store.
    fn job_data(&self, id: &JobId, record: &JobRecord) -> JobData {
        JobData {
            action_type_id: Some(record.action_type_id.clone()),
            action_configuration: record.spec.configuration.clone(),
            pipeline_context: Some(record.spec.pipeline_context.clone()),
            input_artifacts: record.spec.input_artifacts.clone(),
            output_artifacts: record.spec.output_artifacts.clone(),
            artifact_credentials: Some(self.issued().issue(id, SystemTime::now())),
            continuation_token: record.continuation_token.clone(),
            encryption_key: record.spec.encryption_key.clone(),
        }
    }

    /// Counts a call, waits the configured latency, and draws its fault: every door calls this
    /// first.
    pub(super) async fn enter(&self, op: Operation) -> Option<faults::Fault> {
        self.calls[op].fetch_add(1, Ordering::Relaxed);
        let drawn = self.faults.load().draw(op);
        let latency = self.config.latency + drawn.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        drawn.fault
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

    pub(super) fn poll(&self, input: &PollForJobsInput) -> Result<Vec<Job>, UpstreamError> {
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
                    id: id.to_string(),
                    nonce: record.nonce.clone().unwrap_or_default(),
                    account_id: self.config.account_id.clone(),
                }
            })
            .collect())
    }

    pub(super) fn poll_third_party(
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

    pub(super) fn acknowledge(
        &self,
        input: &AcknowledgeJobInput,
    ) -> Result<JobStatus, UpstreamError> {
        let mut state = self.lock();
        acknowledged(find_job(&mut state, &input.job_id)?, &input.nonce)
    }

    pub(super) fn acknowledge_third_party(
        &self,
        input: &ThirdPartyInput<AcknowledgeThirdParty>,
    ) -> Result<JobStatus, UpstreamError> {
        let mut state = self.lock();
        let (_, record) = find_third_party_job(&mut state, input, CustomJobIs::NotFound)?;
        acknowledged(record, &input.call.nonce)
    }

    pub(super) fn details(&self, input: &GetJobDetailsInput) -> Result<JobDetails, UpstreamError> {
        let mut state = self.lock();
        let record = find_job(&mut state, &input.job_id)?;
        Ok(JobDetails {
            id: input.job_id.to_string(),
            data: self.job_data(&input.job_id, record),
            account_id: self.config.account_id.clone(),
        })
    }

    pub(super) fn details_third_party(
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

    pub(super) fn succeed(&self, input: PutJobSuccessResultInput) -> Result<(), UpstreamError> {
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

    pub(super) fn succeed_third_party(
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

    pub(super) fn fail(&self, input: PutJobFailureResultInput) -> Result<(), UpstreamError> {
        let mut state = self.lock();
        in_progress(find_job(&mut state, &input.job_id)?, &input.job_id)?;
        let result = JobResult::Failure(input.failure_details);
        self.finish(&mut state, &input.job_id, result, None);
        Ok(())
    }

    pub(super) fn fail_third_party(
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

#[async_trait]
impl Upstream for Emulator {
    async fn call(&self, call: UpstreamCall) -> Result<UpstreamAnswer, UpstreamError> {
        self.serve(call.operation(), || self.apply(call)).await
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

/// The bucket of the demo jobs' artifacts.
pub const DEMO_ARTIFACT_BUCKET: &str = "codepipeline-us-east-1-demo-artifacts";

/// A demo job's artifact: one object per action type, artifact and job number.
fn demo_artifact(action_type: &ActionTypeId, name: &str, n: usize) -> Artifact {
    Artifact {
        name: Some(name.to_owned()),
        revision: Some(format!("demo-revision-{n}")),
        s3_location: Some(S3Location {
            bucket_name: DEMO_ARTIFACT_BUCKET.to_owned(),
            object_key: format!("demo-pipeline/{}/{name}/{n}.zip", action_type.provider),
        }),
    }
}
