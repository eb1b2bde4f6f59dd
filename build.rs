//! Compiles the gateway's protos with protox (pure Rust, so no system `protoc` is needed), and
//! writes the file descriptor set that gRPC reflection serves.

use std::{env, path::PathBuf};

/// The APIs the gateway serves; Rust code is generated for these.
const SERVED: &[&str] = &[
    "codepipeline/jobworker/v1/job_worker.proto",
    "codepipeline/emulator/v1/emulator_admin.proto",
];
/// Described by reflection too, so clients can decode the error details in statuses.
const ERROR_DETAILS: &str = "google/rpc/error_details.proto";
const INCLUDES: &[&str] = &["proto", "proto-deps"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut reflected: Vec<&str> = SERVED.to_vec();
    reflected.push(ERROR_DETAILS);
    let reflection_set = protox::compile(&reflected, INCLUDES)?;
    std::fs::write(
        out_dir.join("descriptor.bin"),
        prost::Message::encode_to_vec(&reflection_set),
    )?;

    tonic_prost_build::configure()
        .compile_well_known_types(false)
        // The job feed's acknowledgements carry a google.rpc.Status: tonic-types' own type.
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        // Artifact bytes pass through as `Bytes`, never copied into a `Vec`.
        .bytes(".codepipeline.jobworker.v1.DownloadInputArtifactResponse.chunk")
        .bytes(".codepipeline.jobworker.v1.UploadOutputArtifactRequest.chunk")
        .compile_fds(protox::compile(SERVED, INCLUDES)?)?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=proto-deps");
    Ok(())
}
