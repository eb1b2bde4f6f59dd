//! Compiles the emulator's admin API (messages, server and client) with protox, so no system
//! `protoc` is needed; the job-worker messages it names come from `codepipeline-job-port`.

use std::{env, path::PathBuf};

const ADMIN: &str = "codepipeline/emulator/v1/emulator_admin.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../..");
    let includes = [root.join("proto"), root.join("proto-deps")];
    tonic_prost_build::configure()
        .compile_well_known_types(false)
        .extern_path(
            ".codepipeline.jobworker.v1",
            "::codepipeline_job_port::pb::jobworker",
        )
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        .compile_fds(protox::compile([ADMIN], &includes)?)?;
    for dir in &includes {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    Ok(())
}
