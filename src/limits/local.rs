//! Rates kept in this process: GCRA, one theoretical arrival time per key, on the gateway's
//! [`LimitClock`]. The arithmetic is the Redis script's ([`super::shared`]), so a key keeps its
//! state when its rate changes (a token file reload) on either backend: the new rate applies
//! to the time already used, and a change cannot hand out a fresh burst.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use governor::clock::Clock;

use super::{LimitClock, LimitKey, Limited, Rate};

/// The local limiters, one theoretical arrival time per key.
pub struct LocalRates {
    clock: LimitClock,
    /// Each key's theoretical arrival time, in nanoseconds of the clock.
    arrivals: Mutex<HashMap<LimitKey, u64>>,
}

impl LocalRates {
    /// No key yet; each starts with its full burst on its first call.
    pub fn new(clock: LimitClock) -> Self {
        Self {
            clock,
            arrivals: Mutex::default(),
        }
    }

    /// Takes one call of `key` at `rate`, or says when the next would be let through.
    pub fn check(&self, key: &LimitKey, rate: Rate) -> Result<(), Limited> {
        let now = u64::from(self.clock.now());
        let interval = duration_nanos(rate.emission_interval());
        let tolerance = interval.saturating_mul(u64::from(rate.burst.get()));
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        let arrival = arrivals.get(key).copied().unwrap_or(now).max(now);
        let next = arrival + interval;
        if next > now + tolerance {
            return Err(Limited::Over(Duration::from_nanos(next - tolerance - now)));
        }
        arrivals.insert(key.clone(), next);
        Ok(())
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroU32, sync::Arc, time::Duration};

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
        assert!(rates.check(&key, rate(2, 3)).is_err(), "one call refilled");
    }

    #[test]
    fn a_larger_rate_applies_to_the_time_already_used() {
        let clock = FakeRelativeClock::default();
        let rates = LocalRates::new(LimitClock::Fake(clock.clone()));
        let key = LimitKey::Client(Arc::from("a"));
        rates.check(&key, rate(1, 1)).unwrap();
        assert!(rates.check(&key, rate(1, 1)).is_err());
        // One second used; at 10/s with a burst of 20 (2 s), one more second is left: 10 calls.
        for call in 0..10 {
            assert!(rates.check(&key, rate(10, 20)).is_ok(), "call {call}");
        }
        assert_eq!(
            rates.check(&key, rate(10, 20)),
            Err(Limited::Over(Duration::from_millis(100)))
        );
        clock.advance(Duration::from_millis(100));
        rates
            .check(&key, rate(10, 20))
            .expect("the new rate refills");
    }

    /// The reload that made a client unlimited: alternating calls at two rates each rebuilt
    /// the key's limiter with a full burst.
    #[test]
    fn alternating_between_two_rates_hands_out_no_fresh_burst() {
        let rates = LocalRates::new(LimitClock::Fake(FakeRelativeClock::default()));
        let key = LimitKey::Client(Arc::from("a"));
        let admitted = (0..24)
            .filter(|call| {
                let rate = if call % 2 == 0 {
                    rate(1, 1)
                } else {
                    rate(1, 2)
                };
                rates.check(&key, rate).is_ok()
            })
            .count();
        assert_eq!(admitted, 2, "the larger burst, once");
    }
}
