//! Limits: each client's own rate ([`clients`]) and its calls in flight ([`concurrency`]),
//! checked by layers before anything else is spent on a call, and the account-wide budget of
//! each upstream operation ([`budget`]), spent by the handler once a call is valid and about to
//! go upstream.
//!
//! The rates are GCRA limiters (the `governor` crate) on one [`LimitClock`], shared by every
//! connection behind an `Arc`, so a client cannot escape its rate by opening more connections.

pub mod budget;
pub mod clients;
pub mod concurrency;

use std::{
    num::NonZeroU32,
    time::{Duration, Instant},
};

use governor::{
    NotUntil, Quota, RateLimiter,
    clock::{Clock, FakeRelativeClock},
    middleware::NoOpMiddleware,
    nanos::Nanos,
    state::{InMemoryState, NotKeyed},
};
use tonic::Status;

pub use budget::UpstreamBudget;
pub use clients::ClientLimits;
pub use concurrency::ClientConcurrency;

use crate::{
    api::{LimitScope, Refusal},
    observability::{Metrics, metrics::RateLimitedLabels},
};

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Calls per second, sustained.
    pub per_second: NonZeroU32,
    /// Calls allowed at once after a quiet period.
    pub burst: NonZeroU32,
}

impl Rate {
    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// The time source of every limiter: the process's monotonic clock, or, in tests, a fake one
/// that moves only when told to, so a limit can be proved without racing a refill.
#[derive(Debug, Clone)]
pub enum LimitClock {
    /// Real time, counted from when the clock was made.
    Monotonic(Instant),
    /// Time that moves only by [`FakeRelativeClock::advance`].
    Fake(FakeRelativeClock),
}

impl LimitClock {
    /// Real time.
    pub fn monotonic() -> Self {
        Self::Monotonic(Instant::now())
    }
}

impl Default for LimitClock {
    fn default() -> Self {
        Self::monotonic()
    }
}

impl Clock for LimitClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            Self::Monotonic(start) => start.elapsed().into(),
            Self::Fake(clock) => clock.now(),
        }
    }
}

/// One GCRA limiter on the gateway's clock.
type Limiter = RateLimiter<NotKeyed, InMemoryState, LimitClock, NoOpMiddleware<Nanos>>;

fn limiter(rate: Rate, clock: &LimitClock) -> Limiter {
    RateLimiter::direct_with_clock(rate.quota(), clock.clone())
}

/// RESOURCE_EXHAUSTED for a call over a limit of `scope`, counted.
fn refused(
    metrics: &Metrics,
    clock: &LimitClock,
    scope: LimitScope,
    subject: String,
    not_until: NotUntil<Nanos>,
) -> Status {
    metrics
        .rate_limited
        .get_or_create(&RateLimitedLabels { scope })
        .inc();
    let retry_after: Duration = not_until.wait_time_from(clock.now());
    Refusal::RateLimited {
        scope,
        subject,
        retry_after,
    }
    .into()
}
