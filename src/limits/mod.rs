//! Limits: each client's own rate ([`clients`]) and its calls in flight ([`concurrency`]),
//! checked by layers before anything else is spent on a call, and the account-wide budget of
//! each upstream operation ([`budget`]), spent by the handler once a call is valid and about to
//! go upstream. Artifact transfers reserve the memory they hold ([`memory`]).
//!
//! The rates are GCRA limiters kept by one [`RateLimits`]: in this process ([`local`], on one
//! [`LimitClock`]), or in Redis ([`shared`]) so that every gateway process
//! sharing it enforces one rate, with the local limiters as the fallback while Redis does not
//! answer. Either way they are shared by every connection behind an `Arc`, so a client cannot
//! escape its rate by opening more connections.

pub mod budget;
pub mod clients;
pub mod concurrency;
pub mod local;
pub mod memory;
pub mod shared;

use std::{
    fmt,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use governor::{
    clock::{Clock, FakeRelativeClock},
    nanos::Nanos,
};
use tonic::Status;

pub use budget::UpstreamBudget;
pub use clients::ClientLimits;
pub use concurrency::ClientConcurrency;
pub use local::LocalRates;
pub use memory::ArtifactMemory;
pub use shared::{SharedRates, SharedRatesConfig};

use crate::{
    api::{LimitScope, Refusal},
    observability::{Metrics, metrics::RateLimitedLabels},
    upstream::Operation,
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
    /// The time one call's share of the rate takes: GCRA's emission interval.
    fn emission_interval(self) -> Duration {
        Duration::from_secs(1) / self.per_second.get()
    }
}

/// What a rate limits: one client, or one upstream operation over all clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A client's own rate.
    Client(Arc<str>),
    /// An operation's share of the AWS account's quota.
    Operation(Operation),
}

impl fmt::Display for LimitKey {
    /// The key as refusals name it (`client:<id>`, `operation:<Operation>`), and as Redis keys
    /// end.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Client(id) => write!(f, "client:{id}"),
            Self::Operation(operation) => write!(f, "operation:{operation}"),
        }
    }
}

impl LimitKey {
    fn scope(&self) -> LimitScope {
        match self {
            Self::Client(_) => LimitScope::Client,
            Self::Operation(_) => LimitScope::Upstream,
        }
    }
}

/// Why a rate refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Over the rate: the next call would be let through after this long.
    Over(Duration),
    /// The shared limits cannot be reached and the gateway fails closed.
    Unavailable,
}

/// The time source of the local limiters: the process's monotonic clock, or, in tests, a fake
/// one that moves only when told to, so a limit can be proved without racing a refill.
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

/// Every rate the gateway enforces, kept in this process or in Redis.
pub struct RateLimits {
    local: LocalRates,
    shared: Option<Arc<SharedRates>>,
    metrics: Arc<Metrics>,
}

impl RateLimits {
    /// Rates kept in this process only.
    pub fn local(clock: LimitClock, metrics: Arc<Metrics>) -> Self {
        Self {
            local: LocalRates::new(clock),
            shared: None,
            metrics,
        }
    }

    /// Rates kept in Redis, with this process's own as the fallback.
    pub fn shared(shared: Arc<SharedRates>, clock: LimitClock, metrics: Arc<Metrics>) -> Self {
        Self {
            local: LocalRates::new(clock),
            shared: Some(shared),
            metrics,
        }
    }

    /// The verdict on one more call of `key` at `rate`, if it can be given without waiting: the
    /// local limiters, a token leased from Redis, or Redis known to be down. `None`: it takes a
    /// round trip to Redis ([`Self::check`]).
    pub fn check_now(&self, key: &LimitKey, rate: Rate) -> Option<Result<(), Limited>> {
        match &self.shared {
            None => Some(self.local.check(key, rate)),
            Some(shared) => shared.check_now(key, rate, &self.local),
        }
    }

    /// The verdict on one more call of `key` at `rate`.
    pub async fn check(&self, key: &LimitKey, rate: Rate) -> Result<(), Limited> {
        match &self.shared {
            None => self.local.check(key, rate),
            Some(shared) => shared.check(key, rate, &self.local).await,
        }
    }

    /// The verdict as the status a refused call answers: RESOURCE_EXHAUSTED, counted, or
    /// UNAVAILABLE when the shared limits cannot be reached and the gateway fails closed.
    pub fn answer(&self, key: &LimitKey, verdict: Result<(), Limited>) -> Result<(), Status> {
        let scope = key.scope();
        match verdict {
            Ok(()) => Ok(()),
            Err(Limited::Over(retry_after)) => {
                self.metrics
                    .rate_limited
                    .get_or_create(&RateLimitedLabels { scope })
                    .inc();
                Err(Refusal::RateLimited {
                    scope,
                    subject: key.to_string(),
                    retry_after,
                }
                .into())
            }
            Err(Limited::Unavailable) => Err(Refusal::LimitsUnavailable.into()),
        }
    }
}
