//! The language the gateway and its upstreams share: the job-worker API's protobuf messages
//! ([`pb`]), the validated domain types a request becomes at the edge ([`domain`]), and the port
//! every CodePipeline adapter implements ([`upstream`]: `Upstream`, `Operation`,
//! `UpstreamError`, the retry policy). It knows no adapter: the AWS one lives in the gateway,
//! the emulator in its own crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod domain;
pub mod pb;
pub mod upstream;
