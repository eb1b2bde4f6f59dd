//! The account-wide budget of upstream calls, per operation over all clients, protecting the AWS
//! account's CodePipeline quota however many clients call. Spent by the handler only once a call
//! is valid and about to go upstream, so invalid requests cannot spend it for everyone.

use std::sync::Arc;

use tonic::Status;

use super::{LimitKey, Rate, RateLimits};
use crate::upstream::Operation;

/// The budget: one rate per operation, when a budget is set.
pub struct UpstreamBudget {
    rate: Option<Rate>,
    rates: Arc<RateLimits>,
}

impl UpstreamBudget {
    /// Each operation may be called upstream at `rate`; no limit when `None`. The rates are kept
    /// by `rates`.
    pub fn new(rate: Option<Rate>, rates: Arc<RateLimits>) -> Self {
        Self { rate, rates }
    }

    /// Takes one call of `operation` from the budget, or answers RESOURCE_EXHAUSTED.
    pub async fn spend(&self, operation: Operation) -> Result<(), Status> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let key = LimitKey::Operation(operation);
        let verdict = match self.rates.check_now(&key, rate) {
            Some(verdict) => verdict,
            None => self.rates.check(&key, rate).await,
        };
        self.rates.answer(&key, verdict)
    }
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroU32, time::Duration};

    use governor::clock::FakeRelativeClock;
    use tonic_types::StatusExt;

    use super::*;
    use crate::{limits::LimitClock, observability::Metrics};

    fn budget(rate: Option<(u32, u32)>) -> (UpstreamBudget, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let rate = rate.map(|(per_second, burst)| Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        });
        let rates = RateLimits::local(LimitClock::Fake(clock.clone()), Metrics::new());
        (UpstreamBudget::new(rate, Arc::new(rates)), clock)
    }

    #[tokio::test]
    async fn the_upstream_budget_is_per_operation() {
        let (budget, clock) = budget(Some((1, 2)));
        budget.spend(Operation::AcknowledgeJob).await.unwrap();
        budget.spend(Operation::AcknowledgeJob).await.unwrap();
        let status = budget.spend(Operation::AcknowledgeJob).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.get_details_quota_failure().unwrap().violations[0].subject,
            "operation:AcknowledgeJob"
        );
        budget
            .spend(Operation::PollForJobs)
            .await
            .expect("another operation has its own budget");
        clock.advance(Duration::from_secs(1));
        budget
            .spend(Operation::AcknowledgeJob)
            .await
            .expect("a second refills one call");
    }

    #[tokio::test]
    async fn no_upstream_budget_means_no_limit() {
        let (budget, _clock) = budget(None);
        for _ in 0..1000 {
            budget.spend(Operation::PutJobSuccessResult).await.unwrap();
        }
    }
}
