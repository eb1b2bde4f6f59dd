//! The table of operations: each job-worker operation is declared here once, with its kind, its
//! validated input and its answer. Everything that is the same for all of them follows from the
//! table: the [`Operation`] every count, budget and label is keyed by, the [`UpstreamCall`] and
//! [`UpstreamAnswer`] an [`super::Upstream`] takes and gives, and the typed [`Call`] a handler
//! makes.
//!
//! A declarative macro rather than `build.rs` codegen: the table is Rust, read where it is used,
//! and rust-analyzer and the compiler see through it; what the macro makes is plain enums and
//! one trait impl per row.

use std::fmt;

use enum_map::Enum;

use crate::domain::{
    AcknowledgeJobInput, AcknowledgeThirdParty, FailureDetails, GetJobDetailsInput, Job,
    JobDetails, JobStatus, PollForJobsInput, PollForThirdPartyJobsInput, PutJobFailureResultInput,
    PutJobSuccessResultInput, ThirdPartyInput, ThirdPartyJob, ThirdPartyJobDetails,
    ThirdPartySuccess,
};

/// What an operation does to a job, which decides whether repeating it is harmless and what the
/// call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Hands out jobs of an action type (and claims them, with a new nonce each).
    Poll,
    /// Reads a job.
    Read,
    /// Acknowledges a job: Dispatched -> InProgress.
    Acknowledge,
    /// Reports a job's result.
    Report,
}

/// Which served API an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Custom actions: `JobWorkerService`.
    Custom,
    /// Third-party actions, whose calls carry a client token: `ThirdPartyJobWorkerService`.
    ThirdParty,
}

/// A validated input of one operation: the typed door to an [`super::Upstream`].
pub trait Call: Clone + Send + Sync + Into<UpstreamCall> + 'static {
    /// The operation this input is for.
    const OPERATION: Operation;
    /// What the operation answers.
    type Output: Send + 'static;
    /// What the call is about, for messages: the job, or the polled action type.
    fn resource(&self) -> String;
    /// The answer, if it is this operation's; else the operation it answers.
    fn answered(answer: UpstreamAnswer) -> Result<Self::Output, Operation>;
}

/// What a call is about, by the operation's kind.
macro_rules! resource_of {
    (Poll, $input:expr) => {
        $input.action_type_id.to_string()
    };
    ($kind:ident, $input:expr) => {
        $input.job_id.to_string()
    };
}

macro_rules! operations {
    ($($name:ident: $family:ident $kind:ident ($input:ty) -> $output:ty;)*) => {
        /// The job-worker operations, by their AWS names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Enum)]
        pub enum Operation {
            $(#[doc = stringify!($name)] $name,)*
        }

        impl Operation {
            /// Every operation, for iteration; per-operation state lives in an
            /// [`enum_map::EnumMap`], never at an index.
            pub const ALL: [Self; <Self as Enum>::LENGTH] = [$(Self::$name,)*];

            /// The AWS operation name, also the gRPC method name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$name => stringify!($name),)*
                }
            }

            /// What it does to a job.
            pub const fn kind(self) -> Kind {
                match self {
                    $(Self::$name => Kind::$kind,)*
                }
            }

            /// Which served API it belongs to.
            pub const fn family(self) -> Family {
                match self {
                    $(Self::$name => Family::$family,)*
                }
            }
        }

        /// A validated call of one operation, as an [`super::Upstream`] takes it.
        #[derive(Debug, Clone)]
        pub enum UpstreamCall {
            $(#[doc = stringify!($name)] $name($input),)*
        }

        /// An operation's answer, as an [`super::Upstream`] gives it.
        #[derive(Debug, Clone)]
        pub enum UpstreamAnswer {
            $(#[doc = stringify!($name)] $name($output),)*
        }

        impl UpstreamCall {
            /// The call's operation.
            pub fn operation(&self) -> Operation {
                match self {
                    $(Self::$name(_) => Operation::$name,)*
                }
            }
        }

        impl UpstreamAnswer {
            /// The operation this answers.
            pub fn operation(&self) -> Operation {
                match self {
                    $(Self::$name(_) => Operation::$name,)*
                }
            }
        }

        $(
            impl From<$input> for UpstreamCall {
                fn from(input: $input) -> Self {
                    Self::$name(input)
                }
            }

            impl Call for $input {
                const OPERATION: Operation = Operation::$name;
                type Output = $output;

                fn resource(&self) -> String {
                    resource_of!($kind, self)
                }

                fn answered(answer: UpstreamAnswer) -> Result<$output, Operation> {
                    match answer {
                        UpstreamAnswer::$name(output) => Ok(output),
                        other => Err(other.operation()),
                    }
                }
            }
        )*
    };
}

operations! {
    PollForJobs: Custom Poll (PollForJobsInput) -> Vec<Job>;
    AcknowledgeJob: Custom Acknowledge (AcknowledgeJobInput) -> JobStatus;
    GetJobDetails: Custom Read (GetJobDetailsInput) -> JobDetails;
    PutJobSuccessResult: Custom Report (PutJobSuccessResultInput) -> ();
    PutJobFailureResult: Custom Report (PutJobFailureResultInput) -> ();
    PollForThirdPartyJobs: ThirdParty Poll (PollForThirdPartyJobsInput) -> Vec<ThirdPartyJob>;
    AcknowledgeThirdPartyJob: ThirdParty Acknowledge (ThirdPartyInput<AcknowledgeThirdParty>)
        -> JobStatus;
    GetThirdPartyJobDetails: ThirdParty Read (ThirdPartyInput<()>) -> ThirdPartyJobDetails;
    PutThirdPartyJobSuccessResult: ThirdParty Report (ThirdPartyInput<ThirdPartySuccess>) -> ();
    PutThirdPartyJobFailureResult: ThirdParty Report (ThirdPartyInput<FailureDetails>) -> ();
}

impl Operation {
    /// The operation with this AWS name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Whether repeating the call after a lost response can change the outcome the caller sees:
    /// it claims or completes a job, so the first attempt may already have done so.
    pub fn changes_job_state(self) -> bool {
        self.kind() != Kind::Read
    }

    /// Whether repeating the call after an uncertain failure is harmless: reads, and polls (a
    /// lost poll's jobs are handed out again by CodePipeline; a repeat cannot turn a success
    /// into an error, as a repeated acknowledgement or result can).
    pub fn repeat_is_harmless(self) -> bool {
        matches!(self.kind(), Kind::Read | Kind::Poll)
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

    #[test]
    fn only_reads_leave_a_job_as_it_was_and_only_reads_and_polls_are_harmless_to_repeat() {
        let reads: Vec<_> = Operation::ALL
            .into_iter()
            .filter(|op| !op.changes_job_state())
            .collect();
        assert_eq!(
            reads,
            [Operation::GetJobDetails, Operation::GetThirdPartyJobDetails]
        );
        assert!(Operation::PollForJobs.repeat_is_harmless());
        assert!(!Operation::AcknowledgeJob.repeat_is_harmless());
        assert!(!Operation::PutThirdPartyJobFailureResult.repeat_is_harmless());
    }

    #[test]
    fn a_call_is_about_its_job_or_its_polled_action_type() {
        let job = crate::domain::JobId::parse("11111111-2222-3333-4444-555555555555").unwrap();
        let details = GetJobDetailsInput {
            job_id: job.clone(),
        };
        assert_eq!(details.resource(), job.to_string());
        assert_eq!(
            UpstreamCall::from(details).operation(),
            Operation::GetJobDetails
        );
    }

    #[test]
    fn an_answer_of_another_operation_is_named_not_taken() {
        let answer = UpstreamAnswer::PutJobSuccessResult(());
        let other = <PutJobFailureResultInput as Call>::answered(answer).unwrap_err();
        assert_eq!(other, Operation::PutJobSuccessResult);
    }
}
