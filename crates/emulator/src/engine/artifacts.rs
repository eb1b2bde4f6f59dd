//! What the artifact store asks of the engine: the credentials issued with each job's data, what
//! a credential may reach, where a job's artifacts are, and the store's call counts and faults.

use std::{
    collections::BTreeMap,
    sync::{MutexGuard, atomic::Ordering},
    time::{Instant, SystemTime},
};

use codepipeline_job_port::domain::{Artifact, JobData, JobId, JobStatus, S3Location};
use codepipeline_job_port::upstream::{AwsErrorCode, UpstreamError};

use super::{Emulator, JobRecord};
use crate::{
    credentials::{self, IssuedCredentials},
    faults,
    store::{self, StoreOperation},
};

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

impl Emulator {
    /// How many authenticated requests of each operation reached the artifact store.
    pub fn store_call_counts(&self) -> BTreeMap<StoreOperation, u64> {
        StoreOperation::ALL
            .into_iter()
            .map(|op| (op, self.store_calls[op].load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts an artifact-store request, waits the fault plan's latency for it, and draws its
    /// fault. (The engine's `--latency` is for job-worker calls only.)
    pub(crate) async fn enter_store(&self, op: StoreOperation) -> Option<faults::Fault> {
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
    pub(super) fn job_data(&self, id: &JobId, record: &JobRecord) -> JobData {
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
}
