//! The emulator's artifact store: the objects of the jobs' artifacts, in memory, with their
//! checksums, encryption and multipart uploads in progress ([`Objects`]), the demo pipeline's
//! source ([`demo_source_zip`]), and the names of the store's operations ([`StoreOperation`]),
//! which the fault plan and the call counts use. [`crate::s3`] serves them over S3's REST API.

mod demo;
mod objects;

pub use demo::{demo_source_files, demo_source_zip};
pub use objects::{
    Checksums, Content, Encryption, MAX_PART_NUMBER, MIN_PART_SIZE, MultipartError, Object,
    Objects, Part, StoreFull, StoreLimits, UploadSettings, quoted_hex,
};

/// The store's operations, as S3 names them: what the fault plan and the call counts name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, enum_map::Enum)]
pub enum StoreOperation {
    /// GetObject.
    GetObject,
    /// HeadObject.
    HeadObject,
    /// PutObject.
    PutObject,
    /// CreateMultipartUpload.
    CreateMultipartUpload,
    /// UploadPart.
    UploadPart,
    /// CompleteMultipartUpload.
    CompleteMultipartUpload,
    /// AbortMultipartUpload.
    AbortMultipartUpload,
}

impl StoreOperation {
    /// Every operation, for iteration.
    pub const ALL: [Self; 7] = [
        Self::GetObject,
        Self::HeadObject,
        Self::PutObject,
        Self::CreateMultipartUpload,
        Self::UploadPart,
        Self::CompleteMultipartUpload,
        Self::AbortMultipartUpload,
    ];

    /// S3's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetObject => "GetObject",
            Self::HeadObject => "HeadObject",
            Self::PutObject => "PutObject",
            Self::CreateMultipartUpload => "CreateMultipartUpload",
            Self::UploadPart => "UploadPart",
            Self::CompleteMultipartUpload => "CompleteMultipartUpload",
            Self::AbortMultipartUpload => "AbortMultipartUpload",
        }
    }

    /// The operation S3 names so.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Whether it reads an object (an input artifact) rather than writes one (an output).
    pub fn reads(self) -> bool {
        matches!(self, Self::GetObject | Self::HeadObject)
    }
}
