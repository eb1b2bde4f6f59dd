//! The job-worker API's messages, generated from `proto/` by `build.rs`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `codepipeline.jobworker.v1`: the messages only (the services are generated where they are
/// served and called).
pub mod jobworker {
    include!(concat!(env!("OUT_DIR"), "/codepipeline.jobworker.v1.rs"));
}
