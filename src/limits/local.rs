//! Rates kept in this process: one GCRA limiter per key (the `governor` crate), made on the
//! key's first call and made anew when its rate changes (a token file reload).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use governor::{
    RateLimiter,
    clock::Clock,
    middleware::NoOpMiddleware,
    nanos::Nanos,
    state::{InMemoryState, NotKeyed},
};

use super::{LimitClock, LimitKey, Limited, Rate};

/// One GCRA limiter on the gateway's clock.
type Limiter = RateLimiter<NotKeyed, InMemoryState, LimitClock, NoOpMiddleware<Nanos>>;

/// A key's limiter and the rate it was built for.
struct Keyed {
    rate: Rate,
    limiter: Arc<Limiter>,
}

/// The local limiters, one per key.
pub struct LocalRates {
    clock: LimitClock,
    keys: Mutex<HashMap<LimitKey, Keyed>>,
}

impl LocalRates {
    /// No limiter yet; each is made on its key's first call.
    pub fn new(clock: LimitClock) -> Self {
        Self {
            clock,
            keys: Mutex::default(),
        }
    }

    /// Takes one call of `key` at `rate`, or says when the next would be let through.
    pub fn check(&self, key: &LimitKey, rate: Rate) -> Result<(), Limited> {
        self.limiter(key, rate)
            .check()
            .map_err(|not_until| Limited::Over(not_until.wait_time_from(self.clock.now())))
    }

    fn limiter(&self, key: &LimitKey, rate: Rate) -> Arc<Limiter> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get(key) {
            Some(keyed) if keyed.rate == rate => keyed.limiter.clone(),
            _ => {
                let limiter = Arc::new(RateLimiter::direct_with_clock(
                    rate.quota(),
                    self.clock.clone(),
                ));
                keys.insert(
                    key.clone(),
                    Keyed {
                        rate,
                        limiter: limiter.clone(),
                    },
                );
                limiter
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroU32, time::Duration};

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_one_interval_per_call() {
        let clock = FakeRelativeClock::default();
        let rates = LocalRates::new(LimitClock::Fake(clock.clone()));
        let key = LimitKey::Client(Arc::from("a"));
        for _ in 0..3 {
            rates.check(&key, rate(2, 3)).unwrap();
        }
        assert_eq!(
            rates.check(&key, rate(2, 3)),
            Err(Limited::Over(Duration::from_millis(500)))
        );
        rates
            .check(&LimitKey::Client(Arc::from("b")), rate(2, 3))
            .expect("another key has its own rate");
        clock.advance(Duration::from_millis(500));
        rates.check(&key, rate(2, 3)).expect("refilled");
    }

    #[test]
    fn a_new_rate_for_a_key_takes_effect() {
        let rates = LocalRates::new(LimitClock::Fake(FakeRelativeClock::default()));
        let key = LimitKey::Client(Arc::from("a"));
        rates.check(&key, rate(1, 1)).unwrap();
        assert!(rates.check(&key, rate(1, 1)).is_err());
        for _ in 0..5 {
            rates.check(&key, rate(10, 5)).unwrap();
        }
    }
}
