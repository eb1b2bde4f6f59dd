//! The black-box tests: gateways built as `main` builds them (or the binary itself), called over
//! real gRPC. One test binary, so the support module is shared and the AWS SDK linked once.

mod support;

mod artifact_store;
mod artifacts;
mod auth;
mod docs;
mod edge_validation;
mod emulator_front;
mod faults;
mod feed;
mod hardening;
mod job_lifecycle;
mod limits;
mod overload;
mod process;
mod properties;
mod redis_limits;
mod tenancy;
mod third_party;
mod tidy;
mod tls;
mod upstream_errors;
