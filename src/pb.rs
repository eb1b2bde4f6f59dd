//! Code generated from `proto/` by `build.rs`, and the file descriptor set served by reflection.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The generated packages, nested as the proto packages are (the emulator's messages refer to
/// the job-worker ones by relative path).
pub mod codepipeline {
    /// `codepipeline.jobworker`.
    pub mod jobworker {
        /// `codepipeline.jobworker.v1`.
        pub mod v1 {
            tonic::include_proto!("codepipeline.jobworker.v1");
        }
    }
    /// `codepipeline.emulator`.
    pub mod emulator {
        /// `codepipeline.emulator.v1`.
        pub mod v1 {
            tonic::include_proto!("codepipeline.emulator.v1");
        }
    }
}

/// The emulator's admin API: `codepipeline.emulator.v1`.
pub use codepipeline::emulator::v1 as emulator;
/// The job-worker API: `codepipeline.jobworker.v1`.
pub use codepipeline::jobworker::v1 as jobworker;

/// The encoded `FileDescriptorSet` of every proto the gateway serves, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
