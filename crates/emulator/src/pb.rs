//! The admin API's code, generated from `proto/` by `build.rs`, and the job-worker messages it
//! refers to (from `codepipeline-job-port`).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub use codepipeline_job_port::pb::jobworker;

/// `codepipeline.emulator.v1`: the emulator's admin service, its messages, server and client.
pub mod emulator {
    include!(concat!(env!("OUT_DIR"), "/codepipeline.emulator.v1.rs"));
}
