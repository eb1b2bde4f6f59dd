//! The embedded CodePipeline job emulator: a faithful in-memory job engine for custom and
//! third-party actions, the second implementation of the [`Upstream`] port.
//!
//! It keeps action types and jobs and follows the documented job lifecycle: PollForJobs hands
//! Queued jobs out as Dispatched with a fresh random nonce and fresh artifact credentials;
//! AcknowledgeJob with the current nonce makes them InProgress (again: InProgress), any other
//! nonce is InvalidNonceException; a Dispatched job not acknowledged within the re-dispatch window
//! is handed out again with a new nonce; results need an InProgress job (else
//! InvalidJobStateException); a success with a continuation token creates a follow-up job
//! carrying the token; a job not finished within the job timeout is TimedOut.
//!
//! A third-party job belongs to a client (a clientId / clientToken pair): PollForThirdPartyJobs
//! hands it out as `{clientId, jobId}`, GetThirdPartyJobDetails gives its data and nonce, and
//! every third-party call but the poll must carry the client's token (else
//! InvalidClientTokenException). The custom operations do not find third-party jobs, nor the
//! third-party ones custom jobs (GetThirdPartyJobDetails says InvalidJobException).
//!
//! Three doors lead in, all counting the calls they receive: the [`Upstream`] implementation
//! ([`engine`], in-process, for `serve --upstream emulator`), the AWS wire-protocol front
//! ([`front`], what the AWS SDKs talk to), and the admin gRPC service ([`admin`]) that creates
//! work. Beside them, on a listener of its own, the artifact store ([`store`]) serves the jobs'
//! artifacts over S3's REST API to whoever holds a job's artifact credentials, which the engine
//! remembers ([`credentials`]) as it issues them with each poll and details call.
//!
//! [`Upstream`]: codepipeline_job_port::upstream::Upstream

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod credentials;
mod engine;
pub mod faults;
pub mod front;
pub mod pb;
mod random;
pub mod s3;
mod sigv4;
pub mod store;

pub use credentials::IssuedCredentials;
pub use engine::{
    ArtifactAccess, ArtifactSide, DEMO_ARTIFACT_BUCKET, DEMO_CLIENT_ID, DEMO_CLIENT_TOKEN,
    Emulator, EmulatorConfig, JobResult, JobSnapshot, JobSpec, OUTPUT_VARIABLES_MAX_CHARS,
    PartnerClient, demo_action_type, demo_client, demo_pipeline_context,
    demo_third_party_action_type,
};
