//! codepipeline-gateway: a gRPC gateway in front of the AWS CodePipeline job-worker API.
//!
//! Job workers in any language call [`service::JobWorker`] over gRPC; each call is validated at
//! the edge ([`domain::validate`]), forwarded to an [`upstream::Upstream`] (the real API through
//! the AWS SDK, or the embedded [`upstream::emulator`]), and its failure classified once into a
//! gRPC status ([`error`]). [`app`] wires the servers; [`config`] is the command line.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod pb;
pub mod service;
pub mod telemetry;
pub mod upstream;
