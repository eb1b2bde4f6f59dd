//! Each client's calls in flight ([`crate::limits::ClientConcurrency`]), unary and artifact
//! streams alike, counted from the moment the authenticate layer knows the caller until the
//! answer is delivered: the place travels with the response body, so a peer that never reads
//! its answers (or its download) keeps using up its own places, not everyone's. (Job streams
//! are long by design and have a limit of their own.)

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::{
    api::{Api, Method, methods},
    auth::Caller,
    limits::{ClientConcurrency, concurrency::InFlight},
};

/// Applies the per-client limit to job-worker calls.
#[derive(Clone)]
pub struct ClientConcurrencyLayer {
    limits: Arc<ClientConcurrency>,
}

impl ClientConcurrencyLayer {
    /// A layer applying `limits`, shared by every connection.
    pub fn new(limits: Arc<ClientConcurrency>) -> Self {
        Self { limits }
    }
}

impl<S> Layer<S> for ClientConcurrencyLayer {
    type Service = ClientConcurrencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientConcurrencyService {
            limits: self.limits.clone(),
            inner,
        }
    }
}

/// The service of [`ClientConcurrencyLayer`].
#[derive(Clone)]
pub struct ClientConcurrencyService<S> {
    limits: Arc<ClientConcurrency>,
    inner: S,
}

impl<S> Service<Request<Body>> for ClientConcurrencyService<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, Admitted<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limited = methods::of(&request)
            .is_some_and(|method| method.api() == Api::JobWorker && method != Method::StreamJobs);
        if !limited {
            return Either::Right(Admitted {
                inner: self.inner.call(request),
                place: None,
            });
        }
        let entered = match request.extensions().get::<Caller>() {
            Some(caller) => self.limits.enter(&caller.id),
            None => self.limits.enter(&Caller::anonymous().id),
        };
        match entered {
            Ok(place) => Either::Right(Admitted {
                inner: self.inner.call(request),
                place: Some(place),
            }),
            Err(status) => Either::Left(ready(Ok(status.into_http()))),
        }
    }
}

pin_project! {
    /// A call holding its client's place; the place moves into the answer's body.
    pub struct Admitted<F> {
        #[pin]
        inner: F,
        place: Option<InFlight>,
    }
}

impl<F, E> Future for Admitted<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        Poll::Ready(match this.place.take() {
            Some(place) => output.map(|response| {
                response.map(|body| {
                    Body::new(Placed {
                        inner: body,
                        _place: place,
                    })
                })
            }),
            None => output,
        })
    }
}

pin_project! {
    /// An answer's body holding its call's place until the body is done with.
    struct Placed {
        #[pin]
        inner: Body,
        _place: InFlight,
    }
}

impl http_body::Body for Placed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
