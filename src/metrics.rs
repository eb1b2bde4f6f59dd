//! The gateway's Prometheus metrics, in one registry served as text on the metrics port.
//!
//! gRPC server metrics use the names go-grpc-prometheus made common, so existing dashboards and
//! alerts work unchanged. Every label has a bounded set of values: methods outside the served
//! services are counted under `grpc_service="unknown"`.

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::upstream::Operation;

/// `grpc_type`, `grpc_service`, `grpc_method`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `unary`, `server_stream` (health Watch) or `bidi_stream` (reflection).
    pub grpc_type: &'static str,
    /// The fully qualified service, or `unknown`.
    pub grpc_service: &'static str,
    /// The method, or `unknown`.
    pub grpc_method: &'static str,
}

/// [`MethodLabels`] plus the status code name (`OK`, `NotFound`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    /// `unary`, `server_stream` or `bidi_stream`.
    pub grpc_type: &'static str,
    /// The fully qualified service, or `unknown`.
    pub grpc_service: &'static str,
    /// The method, or `unknown`.
    pub grpc_method: &'static str,
    /// The gRPC status code, as go-grpc-prometheus names it.
    pub grpc_code: &'static str,
}

/// An upstream call: the AWS operation and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The AWS operation.
    pub operation: &'static str,
    /// `success`, or the failure's kind (`InvalidNonceException`, `timeout`, ...).
    pub outcome: &'static str,
}

/// A rejection by the rate limiter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitedLabels {
    /// `client` (the caller's own rate) or `upstream` (the AWS account's budget).
    pub scope: &'static str,
}

/// A rejection by authentication or authorisation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthRejectedLabels {
    /// `missing_credentials`, `invalid_token` or `forbidden`.
    pub reason: &'static str,
}

/// A token file (re)load.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// The number of gRPC status codes (0..=16).
const CODES: usize = 17;

/// The series of one served method, resolved once, so the hot path does no label hashing: the
/// started and latency series exist from the start (as go-grpc-prometheus initialises them),
/// the handled series appear with their first code.
pub struct MethodSeries {
    labels: MethodLabels,
    /// Calls started.
    pub started: Counter,
    /// Call latency.
    pub handling_seconds: Histogram,
    handled: [OnceLock<Counter>; CODES],
}

impl MethodSeries {
    /// The handled counter of `code`.
    pub fn handled(&self, family: &Family<HandledLabels, Counter>, code: tonic::Code) -> &Counter {
        let index = (code as usize).min(CODES - 1);
        self.handled[index].get_or_init(|| {
            family
                .get_or_create(&HandledLabels {
                    grpc_type: self.labels.grpc_type,
                    grpc_service: self.labels.grpc_service,
                    grpc_method: self.labels.grpc_method,
                    grpc_code: crate::middleware::telemetry::code_name(code),
                })
                .clone()
        })
    }
}

/// The successful-call series of one upstream operation, resolved once.
pub struct UpstreamSuccess {
    /// Calls.
    pub calls: Counter,
    /// Latency.
    pub seconds: Histogram,
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Per served method, in [`crate::middleware::methods::METHODS`] order, then one for
    /// methods the gateway does not serve.
    methods: Vec<MethodSeries>,
    /// Per upstream operation, in [`Operation::ALL`] order.
    upstream_success: Vec<UpstreamSuccess>,
    /// Calls started.
    pub started: Family<MethodLabels, Counter>,
    /// Calls finished, by code.
    pub handled: Family<HandledLabels, Counter>,
    /// Call latency, from the request's arrival to its status.
    pub handling_seconds: Family<MethodLabels, Histogram>,
    /// Upstream calls, by operation and outcome.
    pub upstream_calls: Family<UpstreamLabels, Counter>,
    /// Upstream call latency, by operation and outcome.
    pub upstream_seconds: Family<UpstreamLabels, Histogram>,
    /// Calls refused by the rate limiter.
    pub rate_limited: Family<RateLimitedLabels, Counter>,
    /// Calls refused by authentication or authorisation.
    pub auth_rejected: Family<AuthRejectedLabels, Counter>,
    /// Calls refused because the gateway was at its concurrency limit.
    pub load_shed: Counter,
    /// Calls being handled now.
    pub in_flight: Gauge,
    /// Token file loads.
    pub token_file_reloads: Family<ReloadLabels, Counter>,
    /// 1 when the last token file load succeeded, 0 when the gateway is running on an older one.
    pub token_file_healthy: Gauge,
    /// Clients in the token file in force.
    pub token_file_clients: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut metrics = Self {
            methods: Vec::new(),
            upstream_success: Vec::new(),
            started: Family::default(),
            handled: Family::default(),
            handling_seconds: Family::new_with_constructor(latency_histogram),
            upstream_calls: Family::default(),
            upstream_seconds: Family::new_with_constructor(latency_histogram),
            rate_limited: Family::default(),
            auth_rejected: Family::default(),
            load_shed: Counter::default(),
            in_flight: Gauge::default(),
            token_file_reloads: Family::default(),
            token_file_healthy: Gauge::default(),
            token_file_clients: Gauge::default(),
            registry: Registry::default(),
        };
        metrics.registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            metrics.started.clone(),
        );
        metrics.registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            metrics.handled.clone(),
        );
        metrics.registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
            metrics.handling_seconds.clone(),
        );
        metrics.registry.register(
            "codepipeline_upstream_calls",
            "Calls to the CodePipeline API, by operation and outcome",
            metrics.upstream_calls.clone(),
        );
        metrics.registry.register(
            "codepipeline_upstream_call_seconds",
            "Latency of calls to the CodePipeline API (seconds), retries included",
            metrics.upstream_seconds.clone(),
        );
        metrics.registry.register(
            "gateway_rate_limited",
            "Calls refused with RESOURCE_EXHAUSTED by the rate limiter",
            metrics.rate_limited.clone(),
        );
        metrics.registry.register(
            "gateway_auth_rejected",
            "Calls refused by authentication or authorisation",
            metrics.auth_rejected.clone(),
        );
        metrics.registry.register(
            "gateway_load_shed",
            "Calls refused because the gateway was at its concurrency limit",
            metrics.load_shed.clone(),
        );
        metrics.registry.register(
            "gateway_in_flight_calls",
            "Calls being handled now",
            metrics.in_flight.clone(),
        );
        metrics.registry.register(
            "gateway_token_file_reloads",
            "Loads of the token file, by result",
            metrics.token_file_reloads.clone(),
        );
        metrics.registry.register(
            "gateway_token_file_healthy",
            "1 if the last load of the token file succeeded, 0 if an older one is in force",
            metrics.token_file_healthy.clone(),
        );
        metrics.registry.register(
            "gateway_token_file_clients",
            "Clients in the token file in force",
            metrics.token_file_clients.clone(),
        );
        let unknown = crate::middleware::methods::Method {
            service: "unknown",
            name: "unknown",
            kind: "unary",
            api: crate::middleware::methods::Api::JobWorker,
        };
        metrics.methods = crate::middleware::methods::METHODS
            .iter()
            .chain(std::iter::once(&unknown))
            .map(|method| {
                let labels = MethodLabels {
                    grpc_type: method.kind,
                    grpc_service: method.service,
                    grpc_method: method.name,
                };
                MethodSeries {
                    started: metrics.started.get_or_create(&labels).clone(),
                    handling_seconds: metrics.handling_seconds.get_or_create(&labels).clone(),
                    labels,
                    handled: Default::default(),
                }
            })
            .collect();
        metrics.upstream_success = Operation::ALL
            .into_iter()
            .map(|operation| {
                let labels = UpstreamLabels {
                    operation: operation.as_str(),
                    outcome: "success",
                };
                UpstreamSuccess {
                    calls: metrics.upstream_calls.get_or_create(&labels).clone(),
                    seconds: metrics.upstream_seconds.get_or_create(&labels).clone(),
                }
            })
            .collect();
        Arc::new(metrics)
    }

    /// The series of the method at `index` in [`crate::middleware::methods::METHODS`], or of
    /// unknown methods for `None`.
    pub fn method(&self, index: Option<usize>) -> &MethodSeries {
        let unknown = self.methods.len() - 1;
        &self.methods[index.unwrap_or(unknown).min(unknown)]
    }

    /// Records an upstream call of `operation` that ended with `outcome` after `seconds`.
    pub fn upstream_call(
        &self,
        operation: Operation,
        outcome: Result<(), &'static str>,
        seconds: f64,
    ) {
        match outcome {
            Ok(()) => {
                let series = &self.upstream_success[operation as usize];
                series.calls.inc();
                series.seconds.observe(seconds);
            }
            Err(outcome) => {
                let labels = UpstreamLabels {
                    operation: operation.as_str(),
                    outcome,
                };
                self.upstream_calls.get_or_create(&labels).inc();
                self.upstream_seconds
                    .get_or_create(&labels)
                    .observe(seconds);
            }
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
