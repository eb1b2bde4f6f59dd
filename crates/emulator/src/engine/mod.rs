//! The job engine: action types, jobs and their lifecycle, behind the [`Upstream`] port.
//!
//! Here: the engine's types, its call counts and faults. The jobs' lifecycle is in `jobs.rs`,
//! with [`Emulator::apply`], where each operation meets its behaviour; what the artifact store
//! asks of the engine (issued credentials, artifact locations) in `artifacts.rs`, the demo work
//! seeded at start in `demo.rs`.

mod artifacts;
mod demo;
mod jobs;

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

pub use artifacts::{ArtifactAccess, ArtifactSide};
pub use demo::{
    DEMO_ARTIFACT_BUCKET, DEMO_CLIENT_ID, DEMO_CLIENT_TOKEN, demo_action_type, demo_client,
    demo_pipeline_context, demo_third_party_action_type,
};
pub use jobs::OUTPUT_VARIABLES_MAX_CHARS;

use super::{
    credentials, faults, random,
    store::{self, StoreOperation},
};
use codepipeline_job_port::domain::{
    ActionConfiguration, ActionTypeId, Artifact, ClientId, ClientToken, CurrentRevision,
    EncryptionKey, ExecutionDetails, FailureDetails, JobId, JobStatus, PipelineContext,
};
use codepipeline_job_port::upstream::{
    Operation, Upstream, UpstreamAnswer, UpstreamCall, UpstreamError,
};

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
    /// How much the artifact store may hold.
    pub store: store::StoreLimits,
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
            store: store::StoreLimits::default(),
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
            objects: store::Objects::with_limits(config.store),
            config,
        }
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
