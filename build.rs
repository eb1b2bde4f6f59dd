//! Compiles the services the gateway serves (the job-worker API's servers and clients) with
//! protox (pure Rust, so no system `protoc` is needed), and writes the file descriptor set that
//! gRPC reflection serves. The messages are `codepipeline-job-port`'s; the emulator's admin API
//! is compiled in its own crate.

use std::{env, path::PathBuf};

const JOB_WORKER: &str = "codepipeline/jobworker/v1/job_worker.proto";
/// Described by reflection in emulator mode too (the `emulator` feature): its admin API.
const EMULATOR_ADMIN: &str = "codepipeline/emulator/v1/emulator_admin.proto";
/// Described by reflection too, so clients can decode the error details in statuses.
const ERROR_DETAILS: &str = "google/rpc/error_details.proto";
const INCLUDES: &[&str] = &["proto", "proto-deps"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut reflected = vec![JOB_WORKER, ERROR_DETAILS];
    if env::var_os("CARGO_FEATURE_EMULATOR").is_some() {
        reflected.push(EMULATOR_ADMIN);
    }
    let reflection_set = protox::compile(&reflected, INCLUDES)?;
    std::fs::write(
        out_dir.join("descriptor.bin"),
        prost::Message::encode_to_vec(&reflection_set),
    )?;

    tonic_prost_build::configure()
        .compile_well_known_types(false)
        // Every message is the port crate's: only the services are generated here.
        .extern_path(
            ".codepipeline.jobworker.v1",
            "::codepipeline_job_port::pb::jobworker",
        )
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        .compile_fds(protox::compile([JOB_WORKER], INCLUDES)?)?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=proto-deps");
    Ok(())
}
