//! Compiles the job-worker API's messages (not its services: the gateway's own `build.rs`
//! generates those, naming these types) with protox, so no system `protoc` is needed.

use std::{env, path::PathBuf};

const JOB_WORKER: &str = "codepipeline/jobworker/v1/job_worker.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../..");
    let includes = [root.join("proto"), root.join("proto-deps")];
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_well_known_types(false)
        // The job feed's acknowledgements carry a google.rpc.Status: tonic-types' own type.
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        // Artifact bytes pass through as `Bytes`, never copied into a `Vec`.
        .bytes(".codepipeline.jobworker.v1.DownloadInputArtifactResponse.chunk")
        .bytes(".codepipeline.jobworker.v1.UploadOutputArtifactRequest.chunk")
        .compile_fds(protox::compile([JOB_WORKER], &includes)?)?;
    for dir in &includes {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    Ok(())
}
