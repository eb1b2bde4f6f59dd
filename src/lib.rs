//! codepipeline-gateway: a gRPC gateway in front of the AWS CodePipeline job-worker API.
//!
//! Job workers in any language call [`service::JobWorker`] over gRPC: the custom and
//! third-party job-worker services (their protobuf code in [`pb`]), StreamJobs served from the
//! job [`feed`]s, and the artifact service ([`artifacts`], through S3 with each job's own
//! credentials). Each call passes the [`middleware`] stack (instrumentation, auth from [`auth`],
//! rate limits from [`limits`]), is validated at the edge into [`domain`] types, and is
//! forwarded through the [`upstream`] port to the real API ([`aws`]) or the embedded
//! [`emulator`]; every failure becomes a gRPC status in one table ([`api::status`]). [`app`]
//! builds all of it from the command line ([`config`]); [`observability`] holds logs, traces and
//! metrics. `ARCHITECTURE.md` is the map.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod artifacts;
pub mod auth;
pub mod aws;
pub mod config;
pub mod feed;
pub mod limits;
pub mod middleware;
pub mod observability;
pub mod pb;
pub mod service;

/// The embedded emulator, the port's second adapter: the `codepipeline-emulator` crate (the
/// default `emulator` feature).
#[cfg(feature = "emulator")]
pub use codepipeline_emulator as emulator;
/// The validated domain types and the upstream port: the `codepipeline-job-port` crate.
pub use codepipeline_job_port::{domain, upstream};
