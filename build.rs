//! Compiles the gateway's protos with protox (pure Rust, so no system `protoc` is needed) and keeps
//! the file descriptor set for gRPC reflection.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "codepipeline/jobworker/v1/job_worker.proto",
    "codepipeline/emulator/v1/emulator_admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    std::fs::write(
        out_dir.join("descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .compile_well_known_types(false)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
