//! Rate limits (GCRA, via governor): each client has its own rate, the default or its token
//! file override, and each upstream operation has a budget that protects the AWS account's
//! CodePipeline quota however many clients call. One limiter set is shared by every connection,
//! so a client cannot escape its rate by opening more connections.

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

/// The rate limit gate.
pub struct RateLimiter {
    default_rate: Rate,
    /// Per client id.
    clients: Mutex<HashMap<Arc<str>, ClientLimiter>>,
    /// Per operation: the account-wide budget, when one is set.
    upstream: HashMap<Operation, DefaultDirectRateLimiter>,
    metrics: Arc<Metrics>,
    clock: DefaultClock,
}

impl RateLimiter {
    /// Limits each client to `default_rate` (unless its token file entry says otherwise), and
    /// each upstream operation to `upstream_rate` over all clients.
    pub fn new(default_rate: Rate, upstream_rate: Option<Rate>, metrics: Arc<Metrics>) -> Self {
        let upstream = upstream_rate
            .map(|rate| {
                Operation::ALL
                    .into_iter()
                    .map(|op| (op, DefaultDirectRateLimiter::direct(quota(rate))))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            default_rate,
            clients: Mutex::default(),
            upstream,
            metrics,
            clock: DefaultClock::default(),
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

    fn refuse(
        &self,
        scope: &'static str,
        subject: String,
        not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>,
    ) -> Status {
        self.metrics
            .rate_limited
            .get_or_create(&RateLimitedLabels { scope })
            .inc();
        Refusal::RateLimited {
            scope,
            subject,
            retry_after: not_until.wait_time_from(self.clock.now()),
        }
        .into()
    }
}

impl Gate for RateLimiter {
    fn check(&self, request: &mut Request<Body>) -> Result<(), Status> {
        // Only job-worker calls cost the upstream anything; health, reflection and the
        // emulator's admin service are not limited.
        let Some(method) = methods::of(request).filter(|m| m.api == Api::JobWorker) else {
            return Ok(());
        };
        let anonymous;
        let caller = match request.extensions().get::<Caller>() {
            Some(caller) => caller,
            None => {
                anonymous = Caller::anonymous();
                &anonymous
            }
        };
        if let Err(not_until) = self.limiter_for(caller).check() {
            return Err(self.refuse("client", format!("client:{}", caller.id), not_until));
        }
        if let Some(limiter) =
            Operation::from_name(method.name).and_then(|op| self.upstream.get(&op))
            && let Err(not_until) = limiter.check()
        {
            return Err(self.refuse("upstream", format!("operation:{}", method.name), not_until));
        }
        Ok(())
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
        let limiter = RateLimiter::new(rate(1, 3), None, Metrics::new());
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
        let limiter = RateLimiter::new(rate(1, 1), None, Metrics::new());
        let generous = caller("big", Some(rate(100, 10)));
        for _ in 0..10 {
            limiter.check(&mut ack_request(generous.clone())).unwrap();
        }
        assert!(limiter.check(&mut ack_request(generous)).is_err());
    }

    #[test]
    fn the_upstream_budget_holds_across_clients() {
        let limiter = RateLimiter::new(rate(100, 100), Some(rate(1, 2)), Metrics::new());
        limiter.check(&mut ack_request(caller("a", None))).unwrap();
        limiter.check(&mut ack_request(caller("b", None))).unwrap();
        let status = limiter
            .check(&mut ack_request(caller("c", None)))
            .unwrap_err();
        assert_eq!(
            status.get_details_quota_failure().unwrap().violations[0].subject,
            "operation:AcknowledgeJob"
        );
    }

    #[test]
    fn health_checks_are_never_limited() {
        let limiter = RateLimiter::new(rate(1, 1), None, Metrics::new());
        for _ in 0..5 {
            let mut request = Request::builder()
                .uri("/grpc.health.v1.Health/Check")
                .body(Body::empty())
                .unwrap();
            limiter.check(&mut request).unwrap();
        }
    }
}
