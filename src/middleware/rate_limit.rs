//! Each client's own rate, checked before anything else is spent on a call: keyed by the
//! identity the authenticate layer established. Only job-worker calls are limited; health,
//! reflection and the emulator's admin service cost the upstream nothing.

use std::sync::Arc;

use http::{Request, Response};
use tonic::body::Body;
use tower_http::validate_request::ValidateRequest;

use crate::{
    api::{Api, methods},
    auth::Caller,
    limits::ClientLimits,
};

/// The validator of the rate-limit layer; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct RateLimit(Arc<ClientLimits>);

impl RateLimit {
    /// Applies `limits`, shared by every connection.
    pub fn new(limits: Arc<ClientLimits>) -> Self {
        Self(limits)
    }
}

impl ValidateRequest<Body> for RateLimit {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<Body>) -> Result<(), Response<Body>> {
        if !methods::of(request).is_some_and(|method| method.api() == Api::JobWorker) {
            return Ok(());
        }
        let result = match request.extensions().get::<Caller>() {
            Some(caller) => self.0.check(&caller.id, caller.rate),
            None => self.0.check(&Caller::anonymous().id, None),
        };
        result.map_err(|status| status.into_http())
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::{
        limits::{LimitClock, Rate},
        observability::Metrics,
    };

    fn one_call_a_second() -> RateLimit {
        let one = NonZeroU32::new(1).unwrap();
        let rate = Rate {
            per_second: one,
            burst: one,
        };
        let clock = LimitClock::Fake(FakeRelativeClock::default());
        RateLimit::new(Arc::new(ClientLimits::new(rate, clock, Metrics::new())))
    }

    fn request(path: &str) -> Request<Body> {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[test]
    fn job_worker_calls_are_limited_and_health_checks_never_are() {
        let mut limit = one_call_a_second();
        let ack = "/codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob";
        limit.validate(&mut request(ack)).unwrap();
        assert!(limit.validate(&mut request(ack)).is_err());
        for _ in 0..5 {
            limit
                .validate(&mut request("/grpc.health.v1.Health/Check"))
                .unwrap();
        }
    }
}
