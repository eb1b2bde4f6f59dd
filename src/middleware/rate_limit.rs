//! Each client's own rate, checked before anything else is spent on a call: keyed by the
//! identity the authenticate layer established. Only job-worker calls are limited; health,
//! reflection and the emulator's admin service cost the upstream nothing.
//!
//! The verdict is usually known at once (the limits are in memory, or a token leased from Redis
//! is at hand); only a check that needs a round trip to Redis makes the call wait for it.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::{
    api::{Api, methods},
    auth::Caller,
    limits::ClientLimits,
};

/// Applies each client's rate to job-worker calls.
#[derive(Clone)]
pub struct RateLimitLayer {
    limits: Arc<ClientLimits>,
}

impl RateLimitLayer {
    /// A layer applying `limits`, shared by every connection.
    pub fn new(limits: Arc<ClientLimits>) -> Self {
        Self { limits }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            limits: self.limits.clone(),
            inner,
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    limits: Arc<ClientLimits>,
    inner: S,
}

/// A call waiting for its rate's verdict from Redis, then the call itself.
type Checking<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S> Service<Request<Body>> for RateLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future =
        Either<Ready<Result<Response<Body>, S::Error>>, Either<S::Future, Checking<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !methods::of(&request).is_some_and(|method| method.api() == Api::JobWorker) {
            return Either::Right(Either::Left(self.inner.call(request)));
        }
        let (id, rate) = match request.extensions().get::<Caller>() {
            Some(caller) => (caller.id.clone(), caller.rate),
            None => (Caller::anonymous().id, None),
        };
        match self.limits.check_now(&id, rate) {
            Some(Ok(())) => Either::Right(Either::Left(self.inner.call(request))),
            Some(Err(status)) => Either::Left(ready(Ok(status.into_http()))),
            None => {
                // The ready service goes with the call; a clone takes its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let limits = self.limits.clone();
                Either::Right(Either::Right(Box::pin(async move {
                    match limits.check(&id, rate).await {
                        Ok(()) => inner.call(request).await,
                        Err(status) => Ok(status.into_http()),
                    }
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;
    use tower::ServiceExt;

    use super::*;
    use crate::{
        limits::{LimitClock, Rate, RateLimits},
        observability::Metrics,
    };

    fn one_call_a_second() -> RateLimitLayer {
        let one = NonZeroU32::new(1).unwrap();
        let rate = Rate {
            per_second: one,
            burst: one,
        };
        let rates = RateLimits::local(
            LimitClock::Fake(FakeRelativeClock::default()),
            Metrics::new(),
        );
        RateLimitLayer::new(Arc::new(ClientLimits::new(rate, Arc::new(rates))))
    }

    async fn code(layer: &RateLimitLayer, path: &str) -> Option<String> {
        let service = layer.layer(tower::service_fn(|_: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        }));
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = service.oneshot(request).await.unwrap();
        response
            .headers()
            .get("grpc-status")
            .map(|code| code.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn job_worker_calls_are_limited_and_health_checks_never_are() {
        let layer = one_call_a_second();
        let ack = "/codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob";
        assert_eq!(code(&layer, ack).await, None, "served");
        assert_eq!(
            code(&layer, ack).await.as_deref(),
            Some("8"),
            "RESOURCE_EXHAUSTED"
        );
        for _ in 0..5 {
            assert_eq!(code(&layer, "/grpc.health.v1.Health/Check").await, None);
        }
    }
}
