//! OpenTelemetry traces, exported over OTLP when an endpoint is configured, off (and free)
//! otherwise.
//!
//! Each call's `grpc` span (made by [`crate::middleware::instrument`]) is the server span: the
//! W3C `traceparent` / `tracestate` the caller sent is its parent, and its fields follow the RPC
//! semantic conventions. Each upstream call is a client span under it ([`upstream_call`]), with
//! the operation, the AWS request id, the attempts and the outcome. Only the gateway's own
//! spans are exported, never events: a span's fields are names, codes and ids by construction,
//! so no job payload, token or credential can become an attribute.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use http::HeaderMap;
use opentelemetry::{
    propagation::Extractor, propagation::TextMapPropagator, trace::TracerProvider,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tracing::{Instrument, Metadata, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Layer, filter::filter_fn, registry::LookupSpan};

use crate::upstream::Operation;

/// Where traces go and how many are kept.
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// The OTLP/gRPC collector, e.g. `http://otel-collector:4317`.
    pub otlp_endpoint: String,
    /// The share of traces started here that are kept (0..=1); a caller's sampled flag is
    /// followed whatever it is.
    pub sampling_ratio: f64,
}

/// Whether spans are exported: set once, when the exporter starts.
static EXPORTING: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The tracing layer that exports the gateway's spans over OTLP.
pub fn layer<S>(settings: &TraceSettings) -> anyhow::Result<impl Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.otlp_endpoint.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .context("the OTLP exporter")?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(env!("CARGO_PKG_NAME"));
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio,
        ))))
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
    let _ = PROVIDER.set(provider);
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_target(false)
        .with_filter(filter_fn(exported)))
}

/// Only the gateway's own spans: not events (whose fields may quote an upstream error), not the
/// SDK's spans.
fn exported(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.target().starts_with(env!("CARGO_CRATE_NAME"))
}

/// Sends the spans not yet exported; call before the process exits.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.shutdown()
    {
        tracing::warn!(%error, "the last spans were not exported");
    }
}

/// Makes the caller's trace context (W3C `traceparent` / `tracestate` in the request's
/// metadata) the parent of `span`. Nothing is parsed unless spans are exported.
pub fn adopt_remote_parent(span: &Span, headers: &HeaderMap) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    // An unsampled or disabled span has nothing to attach to; that is fine.
    let _ = span.set_parent(parent);
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// The spans of the upstream call in progress in this task, so the AWS adapter can note what
/// only it sees.
struct UpstreamCall {
    /// The call's server span.
    call: Span,
    /// The upstream call's client span.
    upstream: Span,
    attempts: AtomicU32,
}

tokio::task_local! {
    static UPSTREAM_CALL: UpstreamCall;
}

/// Runs `call` (one upstream operation) inside a client span under the current (server) span;
/// `finished` names its outcome. The AWS request id and attempts are noted by
/// [`record_aws_request_id`] and [`record_attempt`].
pub async fn upstream_call<T, E>(
    operation: Operation,
    call: impl Future<Output = Result<T, E>>,
    outcome: impl FnOnce(&Result<T, E>) -> &'static str,
) -> Result<T, E> {
    let upstream = tracing::debug_span!(
        "upstream",
        "otel.name" = operation.as_str(),
        "otel.kind" = "client",
        "otel.status_code" = Empty,
        "rpc.system" = "aws-api",
        "rpc.service" = "CodePipeline",
        "rpc.method" = operation.as_str(),
        aws_request_id = Empty,
        attempts = Empty,
        outcome = Empty,
    );
    let context = UpstreamCall {
        call: Span::current(),
        upstream: upstream.clone(),
        attempts: AtomicU32::new(0),
    };
    let result = UPSTREAM_CALL
        .scope(context, call.instrument(upstream.clone()))
        .await;
    let outcome = outcome(&result);
    upstream.record("outcome", outcome);
    if result.is_err() {
        upstream.record("otel.status_code", "ERROR");
    }
    result
}

/// Notes the AWS request id of the upstream call in progress, on its span and its call's (or,
/// outside [`upstream_call`], on the current span).
pub fn record_aws_request_id(request_id: &str) {
    let recorded = UPSTREAM_CALL.try_with(|spans| {
        spans.upstream.record("aws_request_id", request_id);
        spans.call.record("aws_request_id", request_id);
    });
    if recorded.is_err() {
        Span::current().record("aws_request_id", request_id);
    }
}

/// Counts an attempt (an HTTP request) of the upstream call in progress.
pub fn record_attempt() {
    let _ = UPSTREAM_CALL.try_with(|spans| {
        let attempts = spans.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        // i64: the tracing bridge to OpenTelemetry exports unsigned integers as strings.
        spans.upstream.record("attempts", i64::from(attempts));
    });
}
