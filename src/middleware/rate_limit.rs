//! Rate limits (GCRA, via governor): each client has its own rate, the default or its token
//! file override, checked by a gate before anything else is spent on the call; and each upstream
//! operation has a budget that protects the AWS account's CodePipeline quota however many
//! clients call, charged by the handler only once a call is valid and about to go upstream, so
//! that invalid requests cannot spend it for everyone. One limiter set is shared by every
//! connection, so a client cannot escape its rate by opening more connections.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use governor::{
    DefaultDirectRateLimiter, Quota,
    clock::{Clock, DefaultClock},
};
use http::Request;
use tonic::{Status, body::Body};

use super::{
    Gate,
    auth::{Caller, Rate},
    methods::{self, Api},
};
use crate::{
    error::Refusal,
    metrics::{Metrics, RateLimitedLabels},
    upstream::Operation,
};

fn quota(rate: Rate) -> Quota {
    Quota::per_second(rate.per_second).allow_burst(rate.burst)
}

/// A client's limiter and the rate it was built for.
struct ClientLimiter {
    rate: Rate,
    limiter: Arc<DefaultDirectRateLimiter>,
}

/// RESOURCE_EXHAUSTED for a call over a limit of `scope`, counted.
fn refused(
    metrics: &Metrics,
    scope: &'static str,
    subject: String,
    not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>,
) -> Status {
    metrics
        .rate_limited
        .get_or_create(&RateLimitedLabels { scope })
        .inc();
    Refusal::RateLimited {
        scope,
        subject,
        retry_after: not_until.wait_time_from(DefaultClock::default().now()),
    }
    .into()
}

/// The per-client rate limit gate.
pub struct RateLimiter {
    default_rate: Rate,
    /// Per client id.
    clients: Mutex<HashMap<Arc<str>, ClientLimiter>>,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    /// Limits each client to `default_rate`, unless its token file entry says otherwise.
    pub fn new(default_rate: Rate, metrics: Arc<Metrics>) -> Self {
        Self {
            default_rate,
            clients: Mutex::default(),
            metrics,
        }
    }

    /// The caller's limiter, made on its first call, and made anew when its rate changed (a
    /// token file reload).
    fn limiter_for(&self, caller: &Caller) -> Arc<DefaultDirectRateLimiter> {
        let rate = caller.rate.unwrap_or(self.default_rate);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        match clients.get(&caller.id) {
            Some(client) if client.rate == rate => client.limiter.clone(),
            _ => {
                let limiter = Arc::new(DefaultDirectRateLimiter::direct(quota(rate)));
                let client = ClientLimiter {
                    rate,
                    limiter: limiter.clone(),
                };
                clients.insert(caller.id.clone(), client);
                limiter
            }
        }
    }
}

impl Gate for RateLimiter {
    fn check(&self, request: &mut Request<Body>) -> Result<(), Status> {
        // Only job-worker calls cost the upstream anything; health, reflection and the
        // emulator's admin service are not limited.
        if !methods::of(request).is_some_and(|m| m.api == Api::JobWorker) {
            return Ok(());
        }
        let anonymous;
        let caller = match request.extensions().get::<Caller>() {
            Some(caller) => caller,
            None => {
                anonymous = Caller::anonymous();
                &anonymous
            }
        };
        self.limiter_for(caller).check().map_err(|not_until| {
            refused(
                &self.metrics,
                "client",
                format!("client:{}", caller.id),
                not_until,
            )
        })
    }
}

/// The account-wide budget of upstream calls, per operation over all clients.
pub struct UpstreamBudget {
    /// Per operation, when a budget is set.
    per_operation: HashMap<Operation, DefaultDirectRateLimiter>,
    metrics: Arc<Metrics>,
}

impl UpstreamBudget {
    /// Each operation may be called upstream at `rate`; no limit when `None`.
    pub fn new(rate: Option<Rate>, metrics: Arc<Metrics>) -> Self {
        let per_operation = rate
            .map(|rate| {
                Operation::ALL
                    .into_iter()
                    .map(|op| (op, DefaultDirectRateLimiter::direct(quota(rate))))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            per_operation,
            metrics,
        }
    }

    /// Takes one call of `operation` from the budget, or answers RESOURCE_EXHAUSTED.
    pub fn spend(&self, operation: Operation) -> Result<(), Status> {
        match self
            .per_operation
            .get(&operation)
            .map(|limiter| limiter.check())
        {
            Some(Err(not_until)) => Err(refused(
                &self.metrics,
                "upstream",
                format!("operation:{operation}"),
                not_until,
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use tonic_types::StatusExt;

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn ack_request(caller: Caller) -> Request<Body> {
        let mut request = Request::builder()
            .uri("/codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob")
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(caller);
        request
    }

    fn caller(id: &str, rate: Option<Rate>) -> Caller {
        Caller {
            id: Arc::from(id),
            rate,
        }
    }

    #[test]
    fn a_client_gets_its_burst_then_resource_exhausted_with_retry_info() {
        let limiter = RateLimiter::new(rate(1, 3), Metrics::new());
        for _ in 0..3 {
            limiter.check(&mut ack_request(caller("a", None))).unwrap();
        }
        let status = limiter
            .check(&mut ack_request(caller("a", None)))
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let retry = status
            .get_details_retry_info()
            .unwrap()
            .retry_delay
            .unwrap();
        assert!(retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(1));
        let quota = status.get_details_quota_failure().unwrap();
        assert_eq!(quota.violations[0].subject, "client:a");
        limiter
            .check(&mut ack_request(caller("b", None)))
            .expect("another client has its own budget");
    }

    #[test]
    fn a_token_file_rate_overrides_the_default() {
        let limiter = RateLimiter::new(rate(1, 1), Metrics::new());
        let generous = caller("big", Some(rate(100, 10)));
        for _ in 0..10 {
            limiter.check(&mut ack_request(generous.clone())).unwrap();
        }
        assert!(limiter.check(&mut ack_request(generous)).is_err());
    }

    #[test]
    fn the_upstream_budget_is_per_operation() {
        let budget = UpstreamBudget::new(Some(rate(1, 2)), Metrics::new());
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
    }

    #[test]
    fn no_upstream_budget_means_no_limit() {
        let budget = UpstreamBudget::new(None, Metrics::new());
        for _ in 0..1000 {
            budget.spend(Operation::PutJobSuccessResult).unwrap();
        }
    }

    #[test]
    fn health_checks_are_never_limited() {
        let limiter = RateLimiter::new(rate(1, 1), Metrics::new());
        for _ in 0..5 {
            let mut request = Request::builder()
                .uri("/grpc.health.v1.Health/Check")
                .body(Body::empty())
                .unwrap();
            limiter.check(&mut request).unwrap();
        }
    }
}
