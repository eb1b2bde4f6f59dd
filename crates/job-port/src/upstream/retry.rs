//! When a failed upstream attempt is worth another: the one retry policy, applied by the call
//! site that also spends the upstream budget per attempt ([`crate::service`]). The AWS adapter
//! makes one SDK attempt per call, so every attempt the account sees is one the gateway counted.

use std::time::Duration;

use super::{AwsErrorCode, Operation, UpstreamError};

/// How often, and for how long, a call is tried.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// The time all attempts of one call may take together.
    pub within: Duration,
}

impl Retries {
    /// The wait before attempt `attempt + 1` of `operation` after `error`, or `None`: give up.
    /// ThrottlingException is answered before anything is done, so every operation repeats it.
    /// A server fault, an unreachable or unreadable upstream, or an attempt out of time may
    /// follow a call that took effect: only the operations whose repeat is harmless retry them.
    pub fn after(
        self,
        operation: Operation,
        attempt: u32,
        error: &UpstreamError,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let transient = match error {
            UpstreamError::Service { code, .. } => match code {
                AwsErrorCode::Throttling => return Some(backoff(attempt)),
                AwsErrorCode::ServiceFault(_) => true,
                _ => false,
            },
            UpstreamError::Timeout { .. } | UpstreamError::Unavailable { .. } => true,
            UpstreamError::NoCredentials { .. } | UpstreamError::Unexpected { .. } => false,
        };
        (transient && operation.repeat_is_harmless()).then(|| backoff(attempt))
    }
}

/// 100 ms doubling per attempt, capped at 2 s, with full jitter so that throttled gateways do not
/// retry in step.
fn backoff(attempt: u32) -> Duration {
    use rand::RngExt;
    let ceiling_ms = (100u64 << attempt.min(5)).min(2_000);
    Duration::from_millis(rand::rng().random_range(ceiling_ms / 2..=ceiling_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRIES: Retries = Retries {
        max_attempts: 3,
        within: Duration::from_secs(15),
    };

    fn unavailable() -> UpstreamError {
        UpstreamError::Unavailable {
            source: "connection reset".into(),
        }
    }

    #[test]
    fn throttling_is_retried_for_every_operation_up_to_the_attempts() {
        let throttled = UpstreamError::service(AwsErrorCode::Throttling, "slow down");
        for operation in Operation::ALL {
            assert!(
                RETRIES.after(operation, 1, &throttled).is_some(),
                "{operation}"
            );
            assert!(
                RETRIES.after(operation, 2, &throttled).is_some(),
                "{operation}"
            );
            assert!(
                RETRIES.after(operation, 3, &throttled).is_none(),
                "{operation}"
            );
        }
    }

    #[test]
    fn an_uncertain_failure_is_retried_only_where_a_repeat_is_harmless() {
        assert!(
            RETRIES
                .after(Operation::GetJobDetails, 1, &unavailable())
                .is_some()
        );
        assert!(
            RETRIES
                .after(Operation::PollForJobs, 1, &unavailable())
                .is_some()
        );
        for operation in [
            Operation::AcknowledgeJob,
            Operation::PutJobSuccessResult,
            Operation::PutJobFailureResult,
            Operation::AcknowledgeThirdPartyJob,
        ] {
            assert!(
                RETRIES.after(operation, 1, &unavailable()).is_none(),
                "{operation}"
            );
        }
        let invalid = UpstreamError::service(AwsErrorCode::InvalidNonce, "no");
        assert!(
            RETRIES
                .after(Operation::GetJobDetails, 1, &invalid)
                .is_none()
        );
    }
}
