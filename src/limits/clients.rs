//! Each client's own rate: the default, or its token file override.

use std::sync::Arc;

use tonic::Status;

use super::{LimitKey, Rate, RateLimits};

/// The per-client rates, shared by every connection.
pub struct ClientLimits {
    default_rate: Rate,
    rates: Arc<RateLimits>,
}

impl ClientLimits {
    /// Limits each client to `default_rate`, unless it has a rate of its own; the rates are kept
    /// by `rates`.
    pub fn new(default_rate: Rate, rates: Arc<RateLimits>) -> Self {
        Self {
            default_rate,
            rates,
        }
    }

    /// The verdict on one more call of the client, if it can be given at once (see
    /// [`RateLimits::check_now`]). `own_rate` is the client's token file override, if any.
    pub fn check_now(
        &self,
        client_id: &Arc<str>,
        own_rate: Option<Rate>,
    ) -> Option<Result<(), Status>> {
        let key = LimitKey::Client(client_id.clone());
        let verdict = self
            .rates
            .check_now(&key, own_rate.unwrap_or(self.default_rate))?;
        Some(self.rates.answer(&key, verdict))
    }

    /// Takes one call from the client's rate, or answers RESOURCE_EXHAUSTED.
    pub async fn check(&self, client_id: &Arc<str>, own_rate: Option<Rate>) -> Result<(), Status> {
        let key = LimitKey::Client(client_id.clone());
        let verdict = self
            .rates
            .check(&key, own_rate.unwrap_or(self.default_rate))
            .await;
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

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn limits(default: Rate) -> (ClientLimits, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let rates = RateLimits::local(LimitClock::Fake(clock.clone()), Metrics::new());
        (ClientLimits::new(default, Arc::new(rates)), clock)
    }

    #[tokio::test]
    async fn a_client_gets_its_burst_then_resource_exhausted_with_retry_info() {
        let (limits, _clock) = limits(rate(1, 3));
        let a: Arc<str> = Arc::from("a");
        for _ in 0..3 {
            limits.check(&a, None).await.unwrap();
        }
        let status = limits.check(&a, None).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let retry = status
            .get_details_retry_info()
            .unwrap()
            .retry_delay
            .unwrap();
        assert_eq!(retry, Duration::from_secs(1), "one token per second");
        let quota = status.get_details_quota_failure().unwrap();
        assert_eq!(quota.violations[0].subject, "client:a");
        limits
            .check(&Arc::from("b"), None)
            .await
            .expect("another client has its own budget");
    }

    #[tokio::test]
    async fn time_refills_the_rate_one_token_per_period() {
        let (limits, clock) = limits(rate(2, 2));
        let a: Arc<str> = Arc::from("a");
        limits.check(&a, None).await.unwrap();
        limits.check(&a, None).await.unwrap();
        assert!(limits.check(&a, None).await.is_err());
        clock.advance(Duration::from_millis(499));
        assert!(
            limits.check(&a, None).await.is_err(),
            "not yet half a second"
        );
        clock.advance(Duration::from_millis(1));
        limits
            .check(&a, None)
            .await
            .expect("half a second refills one");
        assert!(limits.check_now(&a, None).unwrap().is_err());
    }

    #[tokio::test]
    async fn a_token_file_rate_overrides_the_default() {
        let (limits, _clock) = limits(rate(1, 1));
        let big: Arc<str> = Arc::from("big");
        for _ in 0..10 {
            limits.check(&big, Some(rate(100, 10))).await.unwrap();
        }
        assert!(limits.check(&big, Some(rate(100, 10))).await.is_err());
    }
}
