//! Overload protection: a gateway-wide concurrency limit that sheds excess calls at once
//! (UNAVAILABLE, so the caller retries, possibly on another replica) instead of queueing them
//! into timeouts. Health checks are never shed.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use futures_util::future::{Either, Ready};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::{
    api::{Api, Refusal, methods},
    observability::Metrics,
};

/// Admits at most `max` calls at once across all connections; sheds the rest.
#[derive(Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl LoadShedLayer {
    /// A limit of `max` concurrent calls.
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            metrics,
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service of [`LoadShedLayer`].
#[derive(Clone)]
pub struct LoadShed<S> {
    layer: LoadShedLayer,
    inner: S,
}

pin_project! {
    /// Holds the call's permit until its response is ready.
    pub struct Permitted<F> {
        #[pin]
        inner: F,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F: Future> Future for Permitted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        this.permit.take();
        Poll::Ready(output)
    }
}

impl<S> Service<Request<Body>> for LoadShed<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, Permitted<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.layer.permits.clone().try_acquire_owned() {
            Ok(permit) => Either::Right(Permitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            }),
            // Health checks are never shed: a liveness probe failing under load would restart
            // the pod exactly when it is busiest.
            Err(_) if is_health_check(&request) => Either::Right(Permitted {
                inner: self.inner.call(request),
                permit: None,
            }),
            Err(_) => {
                self.layer.metrics.load_shed.inc();
                let status: Status = Refusal::Overloaded.into();
                Either::Left(futures_util::future::ready(Ok(status.into_http())))
            }
        }
    }
}

fn is_health_check(request: &Request<Body>) -> bool {
    methods::of(request).is_some_and(|method| method.api() == Api::Health)
}
