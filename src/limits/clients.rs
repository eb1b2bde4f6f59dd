//! Each client's own rate: the default, or its token file override. One limiter per client id,
//! made on its first call and made anew when its rate changes (a token file reload).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tonic::Status;

use super::{LimitClock, Limiter, Rate, limiter, refused};
use crate::{api::LimitScope, observability::Metrics};

/// A client's limiter and the rate it was built for.
struct ClientLimiter {
    rate: Rate,
    limiter: Arc<Limiter>,
}

/// The per-client limiters, shared by every connection.
pub struct ClientLimits {
    default_rate: Rate,
    clock: LimitClock,
    /// Per client id.
    clients: Mutex<HashMap<Arc<str>, ClientLimiter>>,
    metrics: Arc<Metrics>,
}

impl ClientLimits {
    /// Limits each client to `default_rate`, unless it has a rate of its own.
    pub fn new(default_rate: Rate, clock: LimitClock, metrics: Arc<Metrics>) -> Self {
        Self {
            default_rate,
            clock,
            clients: Mutex::default(),
            metrics,
        }
    }

    /// Takes one call from the client's rate, or answers RESOURCE_EXHAUSTED. `own_rate` is the
    /// client's token file override, if it has one.
    pub fn check(&self, client_id: &Arc<str>, own_rate: Option<Rate>) -> Result<(), Status> {
        self.limiter_for(client_id, own_rate.unwrap_or(self.default_rate))
            .check()
            .map_err(|not_until| {
                refused(
                    &self.metrics,
                    &self.clock,
                    LimitScope::Client,
                    format!("client:{client_id}"),
                    not_until,
                )
            })
    }

    fn limiter_for(&self, client_id: &Arc<str>, rate: Rate) -> Arc<Limiter> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        match clients.get(client_id) {
            Some(client) if client.rate == rate => client.limiter.clone(),
            _ => {
                let limiter = Arc::new(limiter(rate, &self.clock));
                let client = ClientLimiter {
                    rate,
                    limiter: limiter.clone(),
                };
                clients.insert(client_id.clone(), client);
                limiter
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroU32, time::Duration};

    use governor::clock::FakeRelativeClock;
    use tonic_types::StatusExt;

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn limits(default: Rate) -> (ClientLimits, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limits = ClientLimits::new(default, LimitClock::Fake(clock.clone()), Metrics::new());
        (limits, clock)
    }

    #[test]
    fn a_client_gets_its_burst_then_resource_exhausted_with_retry_info() {
        let (limits, _clock) = limits(rate(1, 3));
        let a: Arc<str> = Arc::from("a");
        for _ in 0..3 {
            limits.check(&a, None).unwrap();
        }
        let status = limits.check(&a, None).unwrap_err();
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
            .expect("another client has its own budget");
    }

    #[test]
    fn time_refills_the_rate_one_token_per_period() {
        let (limits, clock) = limits(rate(2, 2));
        let a: Arc<str> = Arc::from("a");
        limits.check(&a, None).unwrap();
        limits.check(&a, None).unwrap();
        assert!(limits.check(&a, None).is_err());
        clock.advance(Duration::from_millis(499));
        assert!(limits.check(&a, None).is_err(), "not yet half a second");
        clock.advance(Duration::from_millis(1));
        limits.check(&a, None).expect("half a second refills one");
        assert!(limits.check(&a, None).is_err());
    }

    #[test]
    fn a_token_file_rate_overrides_the_default() {
        let (limits, _clock) = limits(rate(1, 1));
        let big: Arc<str> = Arc::from("big");
        for _ in 0..10 {
            limits.check(&big, Some(rate(100, 10))).unwrap();
        }
        assert!(limits.check(&big, Some(rate(100, 10))).is_err());
    }
}
