//! The emulator's admin service, audited: every admin call (it creates jobs, replaces their
//! inputs, reads their outputs, sets faults) is one event in the audit trail, with the caller,
//! the method and the code it was answered with. It wraps the admin service itself, inside the
//! layers, so the caller and the request id are known.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tonic::{Code, body::Body, server::NamedService};
use tower::Service;

use crate::{
    api::methods,
    auth::Caller,
    observability::audit::{self, RequestId, Touched},
};

/// `S`, each call audited.
#[derive(Clone)]
pub struct Audited<S> {
    inner: S,
}

impl<S> Audited<S> {
    /// `inner`, audited.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for Audited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Audited<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = AuditedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let who = Who {
            method: methods::of(&request),
            client_id: request
                .extensions()
                .get::<Caller>()
                .map_or_else(|| Caller::anonymous().id, |caller| caller.id.clone()),
            request_id: request.extensions().get::<RequestId>().cloned(),
        };
        AuditedFuture {
            inner: self.inner.call(request),
            who: Some(who),
        }
    }
}

struct Who {
    method: Option<crate::api::Method>,
    client_id: std::sync::Arc<str>,
    request_id: Option<RequestId>,
}

pin_project! {
    /// The admin call, audited when its answer's headers come, or as CANCELLED when it is
    /// dropped first (the caller went away, or its deadline ended it).
    pub struct AuditedFuture<F> {
        #[pin]
        inner: F,
        who: Option<Who>,
    }

    impl<F> PinnedDrop for AuditedFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(who) = this.project().who.take() {
                who.record(Code::Cancelled);
            }
        }
    }
}

impl Who {
    fn record(self, code: Code) {
        if let Some(method) = self.method {
            audit::record_code(
                &Touched {
                    client_id: &self.client_id,
                    method,
                    job_id: None,
                    action_type: None,
                    request_id: self.request_id.as_ref(),
                },
                code,
            );
        }
    }
}

impl<F, E> Future for AuditedFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(who) = this.who.take() {
            // A refusal is a trailers-only answer, its code in the headers; a unary answer
            // without one is OK. (ReadOutputArtifact streams: its code is the one it started
            // with.)
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i32>().ok())
                    .map_or(Code::Ok, Code::from),
                Err(_) => Code::Internal,
            };
            who.record(code);
        }
        Poll::Ready(result)
    }
}
