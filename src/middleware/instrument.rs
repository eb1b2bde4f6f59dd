//! The outermost layer: it resolves what the call is (the served method and its deadline: the
//! caller's `grpc-timeout`, else the default deadline for a unary call; both put in the request's
//! extensions once for every layer and handler below), records the call as open on its
//! connection until it ends, and gives every call, refused or served, a tracing span (method,
//! client id, code, latency, AWS request id) and its count in the gRPC server metrics. The final
//! code is read where gRPC puts it: the headers of a trailers-only answer, else the trailers.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use pin_project_lite::pin_project;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};
use tracing::{Span, field::Empty};

use super::{
    connection::{ConnectionCalls, ConnectionInfo},
    deadline::{CallDeadline, parse_grpc_timeout},
};
use crate::{
    api::{Method, RpcKind, methods::Resolved},
    observability::{Metrics, audit::RequestId, metrics::code_name, traces},
};

/// Resolves, counts and traces every call.
#[derive(Clone)]
pub struct InstrumentLayer {
    metrics: Arc<Metrics>,
    default_deadline: Duration,
}

impl InstrumentLayer {
    /// A layer recording into `metrics`; a unary call whose caller sets no deadline gets
    /// `default_deadline`.
    pub fn new(metrics: Arc<Metrics>, default_deadline: Duration) -> Self {
        Self {
            metrics,
            default_deadline,
        }
    }
}

impl<S> Layer<S> for InstrumentLayer {
    type Service = Instrument<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Instrument {
            metrics: self.metrics.clone(),
            default_deadline: self.default_deadline,
            inner,
        }
    }
}

/// The service of [`InstrumentLayer`].
#[derive(Clone)]
pub struct Instrument<S> {
    metrics: Arc<Metrics>,
    default_deadline: Duration,
    inner: S,
}

/// One call being recorded; records itself when dropped unfinished (the caller went away, or
/// its deadline passed and the server stopped the call).
struct CallRecord {
    metrics: Arc<Metrics>,
    method: Option<Method>,
    span: Span,
    started: Instant,
    deadline: Option<Instant>,
    /// The connection the call is open on.
    connection: Option<Arc<ConnectionCalls>>,
    finished: bool,
}

impl CallRecord {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let series = self.metrics.method(self.method);
        series.handled(&self.metrics.handled, code).inc();
        series.handling_seconds.observe(elapsed.as_secs_f64());
        self.metrics.in_flight.dec();
        if let Some(connection) = &self.connection {
            connection.ended(self.deadline);
        }
        // i64: the tracing bridge to OpenTelemetry exports unsigned integers as strings.
        let latency_us = i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX);
        self.span.record("code", code_name(code));
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.span.record("latency_us", latency_us);
        // Upstream failures are logged with their cause where they are classified, and shed
        // calls are counted, not logged (that would flood the log exactly under overload): only
        // the gateway's own faults are worth a warning here.
        let (service, name) = self
            .method
            .map_or(("unknown", "unknown"), |m| (m.service(), m.name()));
        match code {
            Code::Internal | Code::Unknown => tracing::warn!(
                parent: &self.span,
                service,
                method = name,
                code = code_name(code),
                latency_us,
                "call failed"
            ),
            _ => tracing::debug!(
                parent: &self.span,
                code = code_name(code),
                latency_us,
                "call finished"
            ),
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.finished {
            let expired = self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline);
            self.finish(if expired {
                Code::DeadlineExceeded
            } else {
                Code::Cancelled
            });
        }
    }
}

impl<S> Service<Request<Body>> for Instrument<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = InstrumentFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let method = Method::from_path(request.uri().path());
        request.extensions_mut().insert(Resolved(method));
        let request_id = RequestId::of(request.headers());
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .or_else(|| {
                // Streams may be long by design; a unary call is bounded however it is sent.
                let unary = method.is_none_or(|method| method.kind() == RpcKind::Unary);
                unary.then_some(self.default_deadline)
            });
        let deadline = timeout.map(|timeout| CallDeadline::for_timeout(started, timeout));
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(deadline);
        }
        let deadline = deadline.map(|CallDeadline(at)| at);
        let connection = ConnectionInfo::of(&request).map(|info| info.calls.clone());
        if let Some(connection) = &connection {
            connection.started(deadline);
        }
        self.metrics.method(method).started.inc();
        self.metrics.in_flight.inc();
        let (service, name) = method.map_or(("unknown", "unknown"), |m| (m.service(), m.name()));
        // Named as the OpenTelemetry RPC conventions name a gRPC server span's attributes.
        let span = tracing::debug_span!(
            "grpc",
            "otel.name" = request.uri().path().trim_start_matches('/'),
            "otel.kind" = "server",
            "otel.status_code" = Empty,
            "rpc.system" = "grpc",
            "rpc.service" = service,
            "rpc.method" = name,
            "rpc.grpc.status_code" = Empty,
            client_id = Empty,
            code = Empty,
            latency_us = Empty,
            aws_request_id = Empty,
            request_id = &*request_id.0,
        );
        request.extensions_mut().insert(request_id);
        traces::adopt_remote_parent(&span, request.headers());
        let inner = span.in_scope(|| self.inner.call(request));
        InstrumentFuture {
            inner,
            record: Some(CallRecord {
                metrics: self.metrics.clone(),
                method,
                span,
                started,
                deadline,
                connection,
                finished: false,
            }),
        }
    }
}

pin_project! {
    /// Runs the call inside its span and records the answer.
    pub struct InstrumentFuture<F> {
        #[pin]
        inner: F,
        record: Option<CallRecord>,
    }
}

impl<F, E> Future for InstrumentFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.record.as_ref().map(|record| record.span.enter());
            ready!(this.inner.poll(cx))
        };
        let Some(mut record) = this.record.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(match result {
            Ok(response) => match grpc_status(response.headers()) {
                Some(code) => {
                    record.finish(code);
                    Ok(response)
                }
                None => Ok(response.map(|body| {
                    Body::new(InstrumentedBody {
                        inner: body,
                        record,
                    })
                })),
            },
            Err(error) => {
                record.finish(Code::Unknown);
                Err(error)
            }
        })
    }
}

pin_project! {
    /// Carries the call's record to the trailers, where gRPC puts the final status.
    struct InstrumentedBody {
        #[pin]
        inner: Body,
        record: CallRecord,
    }
}

impl http_body::Body for InstrumentedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.record.finish(code);
                }
            }
            Some(Err(status)) => this.record.finish(status.code()),
            None => this.record.finish(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The codes the RPC conventions count as a server span's error: the server failed, not the
/// caller.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}
