//! The job-worker operations, by their AWS names: the closed set every count, budget and label
//! of an upstream call is keyed by.

use std::fmt;

use enum_map::Enum;

/// The job-worker operations, by their AWS names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Enum)]
pub enum Operation {
    /// PollForJobs.
    PollForJobs,
    /// AcknowledgeJob.
    AcknowledgeJob,
    /// GetJobDetails.
    GetJobDetails,
    /// PutJobSuccessResult.
    PutJobSuccessResult,
    /// PutJobFailureResult.
    PutJobFailureResult,
    /// PollForThirdPartyJobs.
    PollForThirdPartyJobs,
    /// AcknowledgeThirdPartyJob.
    AcknowledgeThirdPartyJob,
    /// GetThirdPartyJobDetails.
    GetThirdPartyJobDetails,
    /// PutThirdPartyJobSuccessResult.
    PutThirdPartyJobSuccessResult,
    /// PutThirdPartyJobFailureResult.
    PutThirdPartyJobFailureResult,
}

impl Operation {
    /// Every operation, for iteration; per-operation state lives in an [`enum_map::EnumMap`],
    /// never at an index.
    pub const ALL: [Self; 10] = [
        Self::PollForJobs,
        Self::AcknowledgeJob,
        Self::GetJobDetails,
        Self::PutJobSuccessResult,
        Self::PutJobFailureResult,
        Self::PollForThirdPartyJobs,
        Self::AcknowledgeThirdPartyJob,
        Self::GetThirdPartyJobDetails,
        Self::PutThirdPartyJobSuccessResult,
        Self::PutThirdPartyJobFailureResult,
    ];

    /// The AWS operation name, also the gRPC method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PollForJobs => "PollForJobs",
            Self::AcknowledgeJob => "AcknowledgeJob",
            Self::GetJobDetails => "GetJobDetails",
            Self::PutJobSuccessResult => "PutJobSuccessResult",
            Self::PutJobFailureResult => "PutJobFailureResult",
            Self::PollForThirdPartyJobs => "PollForThirdPartyJobs",
            Self::AcknowledgeThirdPartyJob => "AcknowledgeThirdPartyJob",
            Self::GetThirdPartyJobDetails => "GetThirdPartyJobDetails",
            Self::PutThirdPartyJobSuccessResult => "PutThirdPartyJobSuccessResult",
            Self::PutThirdPartyJobFailureResult => "PutThirdPartyJobFailureResult",
        }
    }

    /// The operation with this AWS name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Whether repeating the call after a lost response can change the outcome the caller sees:
    /// it claims or completes a job, so the first attempt may already have done so.
    pub fn changes_job_state(self) -> bool {
        !matches!(self, Self::GetJobDetails | Self::GetThirdPartyJobDetails)
    }

    /// Whether repeating the call after an uncertain failure is harmless: reads, and polls (a
    /// lost poll's jobs are handed out again by CodePipeline; a repeat cannot turn a success
    /// into an error, as a repeated acknowledgement or result can).
    pub fn repeat_is_harmless(self) -> bool {
        matches!(
            self,
            Self::GetJobDetails
                | Self::GetThirdPartyJobDetails
                | Self::PollForJobs
                | Self::PollForThirdPartyJobs
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_operation_once_and_names_round_trip() {
        assert_eq!(Operation::ALL.len(), Operation::LENGTH);
        for op in Operation::ALL {
            assert_eq!(Operation::from_name(op.as_str()), Some(op));
        }
    }
}
