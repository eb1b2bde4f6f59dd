//! The account-wide budget of upstream calls, per operation over all clients, protecting the AWS
//! account's CodePipeline quota however many clients call. Spent by the handler only once a call
//! is valid and about to go upstream, so invalid requests cannot spend it for everyone.

use std::sync::Arc;

use enum_map::EnumMap;
use tonic::Status;

use super::{LimitClock, Limiter, Rate, limiter, refused};
use crate::{api::LimitScope, observability::Metrics, upstream::Operation};

/// The budget: one limiter per operation, when a budget is set.
pub struct UpstreamBudget {
    per_operation: Option<EnumMap<Operation, Limiter>>,
    clock: LimitClock,
    metrics: Arc<Metrics>,
}

impl UpstreamBudget {
    /// Each operation may be called upstream at `rate`; no limit when `None`.
    pub fn new(rate: Option<Rate>, clock: LimitClock, metrics: Arc<Metrics>) -> Self {
        Self {
            per_operation: rate.map(|rate| EnumMap::from_fn(|_| limiter(rate, &clock))),
            clock,
            metrics,
        }
    }

    /// Takes one call of `operation` from the budget, or answers RESOURCE_EXHAUSTED.
    pub fn spend(&self, operation: Operation) -> Result<(), Status> {
        let Some(per_operation) = &self.per_operation else {
            return Ok(());
        };
        per_operation[operation].check().map_err(|not_until| {
            refused(
                &self.metrics,
                &self.clock,
                LimitScope::Upstream,
                format!("operation:{operation}"),
                not_until,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroU32, time::Duration};

    use governor::clock::FakeRelativeClock;
    use tonic_types::StatusExt;

    use super::*;

    fn budget(rate: Option<(u32, u32)>) -> (UpstreamBudget, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let rate = rate.map(|(per_second, burst)| Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        });
        let budget = UpstreamBudget::new(rate, LimitClock::Fake(clock.clone()), Metrics::new());
        (budget, clock)
    }

    #[test]
    fn the_upstream_budget_is_per_operation() {
        let (budget, clock) = budget(Some((1, 2)));
        budget.spend(Operation::AcknowledgeJob).unwrap();
        budget.spend(Operation::AcknowledgeJob).unwrap();
        let status = budget.spend(Operation::AcknowledgeJob).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.get_details_quota_failure().unwrap().violations[0].subject,
            "operation:AcknowledgeJob"
        );
        budget
            .spend(Operation::PollForJobs)
            .expect("another operation has its own budget");
        clock.advance(Duration::from_secs(1));
        budget
            .spend(Operation::AcknowledgeJob)
            .expect("a second refills one call");
    }

    #[test]
    fn no_upstream_budget_means_no_limit() {
        let (budget, _clock) = budget(None);
        for _ in 0..1000 {
            budget.spend(Operation::PutJobSuccessResult).unwrap();
        }
    }
}
