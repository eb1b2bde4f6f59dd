//! The enumerations of the service model, each with its AWS wire name.

use std::fmt;

/// Declares an enum whose variants have fixed AWS wire names.
macro_rules! aws_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $wire:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in the model's order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The name AWS uses on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)+
                }
            }

            /// The value with this AWS wire name.
            pub fn from_aws(name: &str) -> Option<Self> {
                match name {
                    $($wire => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

aws_enum!(
    /// The category of an action.
    ActionCategory {
        /// Source.
        Source = "Source",
        /// Build.
        Build = "Build",
        /// Deploy.
        Deploy = "Deploy",
        /// Test.
        Test = "Test",
        /// Invoke.
        Invoke = "Invoke",
        /// Approval.
        Approval = "Approval",
        /// Compute.
        Compute = "Compute",
    }
);

aws_enum!(
    /// Who created an action type.
    ActionOwner {
        /// AWS.
        Aws = "AWS",
        /// A partner.
        ThirdParty = "ThirdParty",
        /// The account itself: the owner of every action type a job worker polls for.
        Custom = "Custom",
    }
);

aws_enum!(
    /// The status of a job.
    JobStatus {
        /// Created.
        Created = "Created",
        /// Waiting for a worker's poll.
        Queued = "Queued",
        /// Handed out, not yet acknowledged.
        Dispatched = "Dispatched",
        /// Acknowledged; a worker is on it.
        InProgress = "InProgress",
        /// Not finished in time.
        TimedOut = "TimedOut",
        /// Finished successfully.
        Succeeded = "Succeeded",
        /// Finished with a failure.
        Failed = "Failed",
    }
);

aws_enum!(
    /// The kind of a job failure.
    FailureType {
        /// The job failed.
        JobFailed = "JobFailed",
        /// The action's configuration is wrong.
        ConfigurationError = "ConfigurationError",
        /// The worker lacked a permission.
        PermissionError = "PermissionError",
        /// The revision is out of sync.
        RevisionOutOfSync = "RevisionOutOfSync",
        /// The revision is not available.
        RevisionUnavailable = "RevisionUnavailable",
        /// A system the worker needs is unavailable.
        SystemUnavailable = "SystemUnavailable",
    }
);

impl JobStatus {
    /// Whether the job can no longer change.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::TimedOut)
    }
}
