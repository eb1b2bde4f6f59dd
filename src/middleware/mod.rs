//! The tower middleware every gRPC call passes through. The stack is assembled in one place,
//! [`crate::app`], outermost first: telemetry -> gRPC only -> load shedding -> auth -> rate limit
//! -> deadline -> message size -> panic guard -> the services.
//!
//! Most layers only decide whether a call may go on: they implement [`Gate`] and are served by
//! one [`GateLayer`]. A gate that refuses answers with a gRPC status straight away (a
//! trailers-only response), so the call never reaches the services or the upstream.

pub mod auth;
pub mod deadline;
pub mod grpc_only;
pub mod methods;
pub mod overload;
pub mod panic;
pub mod rate_limit;
pub mod telemetry;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

/// A decision taken before a call reaches the services: let it through (possibly adding
/// extensions, such as the caller's identity, for later layers), or refuse it with a status.
pub trait Gate: Send + Sync + 'static {
    /// Checks the call; `Err` refuses it with that status.
    fn check(&self, request: &mut Request<Body>) -> Result<(), Status>;
}

/// Serves a [`Gate`] as a tower layer. The gate is shared (`Arc`) by every connection, so its
/// state (token sets, rate limiters) is the gateway's, not a connection's.
pub struct GateLayer<G> {
    gate: Arc<G>,
}

impl<G> GateLayer<G> {
    /// A layer applying `gate`.
    pub fn new(gate: Arc<G>) -> Self {
        Self { gate }
    }
}

impl<G> Clone for GateLayer<G> {
    fn clone(&self) -> Self {
        Self {
            gate: self.gate.clone(),
        }
    }
}

impl<G, S> Layer<S> for GateLayer<G> {
    type Service = Gated<G, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            gate: self.gate.clone(),
            inner,
        }
    }
}

/// The service of a [`GateLayer`].
pub struct Gated<G, S> {
    gate: Arc<G>,
    inner: S,
}

impl<G, S: Clone> Clone for Gated<G, S> {
    fn clone(&self) -> Self {
        Self {
            gate: self.gate.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<G, S> Service<Request<Body>> for Gated<G, S>
where
    G: Gate,
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        match self.gate.check(&mut request) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(status) => Either::Left(ready(Ok(status.into_http()))),
        }
    }
}
