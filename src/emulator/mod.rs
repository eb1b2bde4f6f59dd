//! The embedded CodePipeline job emulator: a faithful in-memory job engine for custom actions,
//! the second implementation of the [`crate::upstream::Upstream`] port.
//!
//! It keeps action types and jobs and follows the documented job lifecycle: PollForJobs hands
//! Queued jobs out as Dispatched with a fresh random nonce and fresh artifact credentials;
//! AcknowledgeJob with the current nonce makes them InProgress (again: InProgress), any other
//! nonce is InvalidNonceException; a Dispatched job not acknowledged within the re-dispatch window
//! is handed out again with a new nonce; results need an InProgress job (else
//! InvalidJobStateException); a success with a continuation token creates a follow-up job
//! carrying the token; a job not finished within the job timeout is TimedOut.
//!
//! Three doors lead in, all counting the calls they receive: the [`Upstream`] implementation
//! ([`engine`], in-process, for `serve --upstream emulator`), the AWS wire-protocol front
//! ([`front`], what the AWS SDKs talk to), and the admin gRPC service ([`admin`]) that creates
//! work.
//!
//! [`Upstream`]: crate::upstream::Upstream

pub mod admin;
mod engine;
pub mod faults;
pub mod front;
mod sigv4;

pub use engine::{
    Emulator, EmulatorConfig, JobResult, JobSnapshot, JobSpec, OUTPUT_VARIABLES_MAX_CHARS,
    demo_action_type, demo_pipeline_context,
};
