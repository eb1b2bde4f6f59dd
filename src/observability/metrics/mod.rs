//! The gateway's Prometheus metrics, in one registry served as text on the metrics port.
//!
//! gRPC server metrics use the names go-grpc-prometheus made common, so existing dashboards and
//! alerts work unchanged. Every label has a bounded set of values: methods outside the served
//! services are counted under `grpc_service="unknown"`.
//!
//! The label types and their closed sets are in `labels.rs`, the series resolved ahead of the
//! hot path in `series.rs`; the registry is here.

mod labels;
mod series;

use std::sync::Arc;

use enum_map::EnumMap;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

pub use labels::*;
pub use series::{FeedMetrics, MethodSeries, UpstreamSuccess, WatchedFileMetrics};

use crate::{
    api::{Method, RpcKind},
    upstream::{FailureKind, Operation},
};

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Per served method.
    methods: EnumMap<Method, MethodSeries>,
    /// For paths the gateway does not serve.
    unknown_method: MethodSeries,
    /// Per upstream operation.
    upstream_success: EnumMap<Operation, UpstreamSuccess>,
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
    /// Calls refused because their client had as many in flight as it may.
    pub client_concurrency_limited: Counter,
    /// Connections being served now.
    pub connections: Gauge,
    /// Connections refused at the connection limit.
    pub connections_refused: Counter,
    /// Connections told GOAWAY at their maximum age.
    pub connections_aged: Counter,
    /// Connections the gateway closed, by reason.
    pub connections_closed: Family<ConnectionClosedLabels, Counter>,
    /// Failed accepts (out of file descriptors, say).
    pub accept_failures: Counter,
    /// 1 while rate limits are kept where configured (always, in memory); 0 while the shared
    /// limits fall back to this process's own because Redis does not answer.
    pub rate_limit_backend_up: Gauge,
    /// Times the shared limits fell back to this process's own.
    pub rate_limit_fallbacks: Counter,
    /// The backend in force, as a label of a series set to 1.
    pub rate_limit_backend: Family<RateLimitBackendLabels, Gauge>,
    /// Round trips of rate-limit checks to Redis.
    pub redis_seconds: Histogram,
    /// Job feeds' polls, by feed and outcome.
    pub feed_polls: Family<FeedPollLabels, Counter>,
    /// Job feeds' jobs, by feed and event.
    pub feed_jobs: Family<FeedJobLabels, Counter>,
    /// Job feeds' subscribers, by feed.
    pub feed_subscribers: Family<FeedLabels, Gauge>,
    /// Job feeds' credit, by feed.
    pub feed_credit: Family<FeedLabels, Gauge>,
    /// From the poll that returned a job to its first delivery on a stream.
    pub feed_pickup_seconds: Histogram,
    /// The feed labels in use.
    feed_labels: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
    /// Calls being handled now.
    pub in_flight: Gauge,
    /// The token file's loads and health.
    pub token_file: WatchedFileMetrics,
    /// The client-token file's loads and health.
    pub client_token_file: WatchedFileMetrics,
    /// Third-party calls the gateway supplied a client token for, by how it found the client.
    pub client_tokens_supplied: Family<ClientTokenLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut metrics = Self::unregistered();
        metrics.register_calls();
        metrics.register_upstream();
        metrics.register_refusals();
        metrics.register_connections();
        metrics.register_rate_limit_backend();
        metrics.register_feeds();
        metrics.register_in_flight();
        metrics.register_secrets_files();
        for reason in [
            ConnectionClosed::HandshakeTimeout,
            ConnectionClosed::Idle,
            ConnectionClosed::Undelivered,
            ConnectionClosed::AgeGraceExpired,
        ] {
            let _ = metrics
                .connections_closed
                .get_or_create(&ConnectionClosedLabels { reason });
        }
        Arc::new(metrics)
    }

    /// Every metric at zero, the served methods' and the upstream operations' series resolved;
    /// none registered yet.
    fn unregistered() -> Self {
        let started = Family::<MethodLabels, Counter>::default();
        let handling_seconds =
            Family::<MethodLabels, Histogram>::new_with_constructor(latency_histogram);
        let methods = EnumMap::from_fn(|method: Method| {
            let labels = MethodLabels {
                grpc_type: method.kind(),
                grpc_service: ServiceLabel(Some(method)),
                grpc_method: MethodNameLabel(Some(method)),
            };
            MethodSeries::new(labels, &started, &handling_seconds)
        });
        let unknown = MethodLabels {
            grpc_type: RpcKind::Unary,
            grpc_service: ServiceLabel(None),
            grpc_method: MethodNameLabel(None),
        };
        let unknown_method = MethodSeries::new(unknown, &started, &handling_seconds);
        let upstream_calls = Family::<UpstreamLabels, Counter>::default();
        let upstream_seconds =
            Family::<UpstreamLabels, Histogram>::new_with_constructor(latency_histogram);
        let upstream_success = EnumMap::from_fn(|operation| {
            UpstreamSuccess::new(operation, &upstream_calls, &upstream_seconds)
        });
        Self {
            methods,
            unknown_method,
            upstream_success,
            started,
            handled: Family::default(),
            handling_seconds,
            upstream_calls,
            upstream_seconds,
            rate_limited: Family::default(),
            auth_rejected: Family::default(),
            load_shed: Counter::default(),
            client_concurrency_limited: Counter::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            connections_aged: Counter::default(),
            connections_closed: Family::default(),
            accept_failures: Counter::default(),
            rate_limit_backend_up: Gauge::default(),
            rate_limit_fallbacks: Counter::default(),
            rate_limit_backend: Family::default(),
            redis_seconds: Histogram::new([
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            ]),
            feed_polls: Family::default(),
            feed_jobs: Family::default(),
            feed_subscribers: Family::default(),
            feed_credit: Family::default(),
            feed_pickup_seconds: latency_histogram(),
            feed_labels: Default::default(),
            in_flight: Gauge::default(),
            token_file: WatchedFileMetrics::default(),
            client_token_file: WatchedFileMetrics::default(),
            client_tokens_supplied: Family::default(),
            registry: Registry::default(),
        }
    }

    /// Registers the gRPC server's calls, as go-grpc-prometheus names them.
    fn register_calls(&mut self) {
        self.registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            self.started.clone(),
        );
        self.registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            self.handled.clone(),
        );
        self.registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
            self.handling_seconds.clone(),
        );
    }

    /// Registers calls to CodePipeline.
    fn register_upstream(&mut self) {
        self.registry.register(
            "codepipeline_upstream_calls",
            "Calls to the CodePipeline API, by operation and outcome",
            self.upstream_calls.clone(),
        );
        self.registry.register(
            "codepipeline_upstream_call_seconds",
            "Latency of calls to the CodePipeline API (seconds), retries included",
            self.upstream_seconds.clone(),
        );
    }

    /// Registers calls the edge refused: rate limits, auth, load shedding, per-client concurrency.
    fn register_refusals(&mut self) {
        self.registry.register(
            "gateway_rate_limited",
            "Calls refused with RESOURCE_EXHAUSTED by the rate limiter",
            self.rate_limited.clone(),
        );
        self.registry.register(
            "gateway_auth_rejected",
            "Calls refused by authentication or authorisation",
            self.auth_rejected.clone(),
        );
        self.registry.register(
            "gateway_load_shed",
            "Calls refused because the gateway was at its concurrency limit",
            self.load_shed.clone(),
        );
        self.registry.register(
            "gateway_client_concurrency_limited",
            "Calls refused with RESOURCE_EXHAUSTED because their client had as many in flight as it may",
            self.client_concurrency_limited.clone(),
        );
    }

    /// Registers connections: served, refused, aged, closed, failed accepts.
    fn register_connections(&mut self) {
        self.registry.register(
            "gateway_connections",
            "Connections being served",
            self.connections.clone(),
        );
        self.registry.register(
            "gateway_connections_refused",
            "Connections refused at the connection limit",
            self.connections_refused.clone(),
        );
        self.registry.register(
            "gateway_connections_aged",
            "Connections told GOAWAY at their maximum age (their calls in flight finish within the grace)",
            self.connections_aged.clone(),
        );
        self.registry.register(
            "gateway_connections_closed",
            "Connections the gateway closed: no call in time after accepting, idle, an answer left unread, or calls still open when the grace after the maximum age ran out",
            self.connections_closed.clone(),
        );
        self.registry.register(
            "gateway_accept_failures",
            "Failed attempts to accept a connection (out of file descriptors, say)",
            self.accept_failures.clone(),
        );
    }

    /// Registers where the rate limits are kept, and how Redis answers.
    fn register_rate_limit_backend(&mut self) {
        self.registry.register(
            "gateway_rate_limit_backend_up",
            "1 while rate limits are kept where configured; 0 while the Redis backend falls back to this process's own",
            self.rate_limit_backend_up.clone(),
        );
        self.registry.register(
            "gateway_rate_limit_fallbacks",
            "Times the Redis rate-limit backend fell back to this process's own limits",
            self.rate_limit_fallbacks.clone(),
        );
        self.registry.register(
            "gateway_rate_limit_backend",
            "The rate-limit backend configured (memory or redis), as a label of a series set to 1",
            self.rate_limit_backend.clone(),
        );
        self.registry.register(
            "gateway_redis_call_seconds",
            "Round trips of rate-limit checks to Redis (seconds)",
            self.redis_seconds.clone(),
        );
    }

    /// Registers the job feeds.
    fn register_feeds(&mut self) {
        self.registry.register(
            "gateway_feed_polls",
            "PollForJobs calls made by job feeds, by feed and outcome",
            self.feed_polls.clone(),
        );
        self.registry.register(
            "gateway_feed_jobs",
            "Jobs through job feeds, by feed and event (delivered, redelivered, acknowledged, lost_*)",
            self.feed_jobs.clone(),
        );
        self.registry.register(
            "gateway_feed_subscribers",
            "StreamJobs subscribers, by feed",
            self.feed_subscribers.clone(),
        );
        self.registry.register(
            "gateway_feed_credit",
            "Credit StreamJobs subscribers hold (room for jobs), by feed",
            self.feed_credit.clone(),
        );
        self.registry.register(
            "gateway_feed_pickup_seconds",
            "From the poll that returned a job to its first delivery on a stream (seconds)",
            self.feed_pickup_seconds.clone(),
        );
    }

    /// Registers calls being handled now.
    fn register_in_flight(&mut self) {
        self.registry.register(
            "gateway_in_flight_calls",
            "Calls being handled now",
            self.in_flight.clone(),
        );
    }

    /// Registers the secrets files' loads and health (the token file, the client-token file)
    /// and the client tokens supplied from them.
    fn register_secrets_files(&mut self) {
        self.registry.register(
            "gateway_token_file_reloads",
            "Loads of the token file, by result",
            self.token_file.reloads.clone(),
        );
        self.registry.register(
            "gateway_token_file_healthy",
            "1 if the last load of the token file succeeded, 0 if an older one is in force",
            self.token_file.healthy.clone(),
        );
        self.registry.register(
            "gateway_token_file_clients",
            "Clients in the token file in force",
            self.token_file.entries.clone(),
        );
        self.registry.register(
            "gateway_client_token_file_reloads",
            "Loads of the client-token file, by result",
            self.client_token_file.reloads.clone(),
        );
        self.registry.register(
            "gateway_client_token_file_healthy",
            "1 if the last load of the client-token file succeeded, 0 if an older one is in force",
            self.client_token_file.healthy.clone(),
        );
        self.registry.register(
            "gateway_client_token_file_clients",
            "Third-party clients in the client-token file in force",
            self.client_token_file.entries.clone(),
        );
        self.registry.register(
            "gateway_client_tokens_supplied",
            "Third-party calls the gateway supplied the client token for, by how it knew the job's client",
            self.client_tokens_supplied.clone(),
        );
    }

    /// The series of `method`, or of the paths the gateway does not serve for `None`.
    pub fn method(&self, method: Option<Method>) -> &MethodSeries {
        method.map_or(&self.unknown_method, |method| &self.methods[method])
    }

    /// Records an upstream call of `operation` that ended with `outcome` after `seconds`.
    pub fn upstream_call(
        &self,
        operation: Operation,
        outcome: Result<(), FailureKind>,
        seconds: f64,
    ) {
        match outcome {
            Ok(()) => {
                let series = &self.upstream_success[operation];
                series.calls.inc();
                series.seconds.observe(seconds);
            }
            Err(failure) => {
                let labels = UpstreamLabels {
                    operation: OperationLabel(operation),
                    outcome: UpstreamOutcome(Err(failure)),
                };
                self.upstream_calls.get_or_create(&labels).inc();
                self.upstream_seconds
                    .get_or_create(&labels)
                    .observe(seconds);
            }
        }
    }

    /// The series of the feed labelled `feed` (its action type).
    pub fn feed(&self, feed: &str) -> FeedMetrics {
        let label = FeedLabel({
            let mut labels = self.feed_labels.lock().unwrap_or_else(|p| p.into_inner());
            match labels.get(feed) {
                Some(label) => label.clone(),
                None if labels.len() < MAX_FEED_LABELS => {
                    let label: Arc<str> = Arc::from(feed);
                    labels.insert(label.clone());
                    label
                }
                None => Arc::from("other"),
            }
        });
        let labels = FeedLabels {
            feed: label.clone(),
        };
        // Every series of the feed exists from its start, at zero, as go-grpc-prometheus
        // initialises its own: a rate over them works before the first event.
        for outcome in [FeedPoll::Jobs, FeedPoll::Empty, FeedPoll::Failed] {
            let _ = self.feed_polls.get_or_create(&FeedPollLabels {
                feed: label.clone(),
                outcome,
            });
        }
        for event in FeedJob::ALL {
            let _ = self.feed_jobs.get_or_create(&FeedJobLabels {
                feed: label.clone(),
                event,
            });
        }
        FeedMetrics {
            subscribers: self.feed_subscribers.get_or_create(&labels).clone(),
            credit: self.feed_credit.get_or_create(&labels).clone(),
            polls: self.feed_polls.clone(),
            jobs: self.feed_jobs.clone(),
            pickup_seconds: self.feed_pickup_seconds.clone(),
            label,
        }
    }

    /// Counts a connection the gateway closed for `reason`.
    pub fn connection_closed(&self, reason: ConnectionClosed) {
        self.connections_closed
            .get_or_create(&ConnectionClosedLabels { reason })
            .inc();
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
