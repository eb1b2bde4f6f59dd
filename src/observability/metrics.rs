//! The gateway's Prometheus metrics, in one registry served as text on the metrics port.
//!
//! gRPC server metrics use the names go-grpc-prometheus made common, so existing dashboards and
//! alerts work unchanged. Every label has a bounded set of values: methods outside the served
//! services are counted under `grpc_service="unknown"`.

use std::{
    fmt::Write,
    sync::{Arc, OnceLock},
};

use enum_map::EnumMap;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tonic::Code;

use crate::{
    api::{LimitScope, Method, RpcKind},
    upstream::{FailureKind, Operation},
};

/// `grpc_type`, `grpc_service`, `grpc_method`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `unary`, `server_stream` (health Watch) or `bidi_stream` (reflection).
    pub grpc_type: RpcKind,
    /// The fully qualified service, or `unknown`.
    pub grpc_service: ServiceLabel,
    /// The method, or `unknown`.
    pub grpc_method: MethodNameLabel,
}

/// [`MethodLabels`] plus the status code name (`OK`, `NotFound`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    /// `unary`, `server_stream` or `bidi_stream`.
    pub grpc_type: RpcKind,
    /// The fully qualified service, or `unknown`.
    pub grpc_service: ServiceLabel,
    /// The method, or `unknown`.
    pub grpc_method: MethodNameLabel,
    /// The gRPC status code, as go-grpc-prometheus names it.
    pub grpc_code: CodeLabel,
}

/// An upstream call: the AWS operation and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The AWS operation.
    pub operation: OperationLabel,
    /// `success`, or the failure's kind (`InvalidNonceException`, `timeout`, ...).
    pub outcome: UpstreamOutcome,
}

/// A rejection by the rate limiter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitedLabels {
    /// `client` (the caller's own rate) or `upstream` (the AWS account's budget).
    pub scope: LimitScope,
}

/// A rejection by authentication or authorisation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthRejectedLabels {
    /// Why the call was refused.
    pub reason: AuthRejection,
}

/// Why authentication or authorisation refused a call.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum AuthRejection {
    /// No credential where one is required.
    MissingCredentials,
    /// A malformed `authorization` header, or a token no client has.
    InvalidToken,
    /// A known client calling an RPC it may not.
    Forbidden,
}

/// A token file (re)load.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// How the load ended.
    pub result: ReloadResult,
}

/// How a token file load ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    /// The file was read, parsed and put in force.
    Success,
    /// The file could not be read or parsed; the last good one stays in force.
    Failure,
}

/// A client token the gateway supplied to a third-party call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientTokenLabels {
    /// How the gateway knew the job's client.
    pub client_from: ClientFrom,
}

/// How the gateway knew which client's token a third-party call needs.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ClientFrom {
    /// The request named the client (`client_id`).
    Request,
    /// This gateway's own PollForThirdPartyJobs returned the job with its client.
    Poll,
}

impl ClientFrom {
    /// The `client_from` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Poll => "poll",
        }
    }
}

impl AuthRejection {
    /// The `reason` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidToken => "invalid_token",
            Self::Forbidden => "forbidden",
        }
    }
}

impl ReloadResult {
    /// The `result` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// Why the gateway closed a connection.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ConnectionClosed {
    /// No call started within the handshake timeout.
    HandshakeTimeout,
    /// No call was open for the idle timeout.
    Idle,
    /// A call stayed undelivered long past its deadline: the peer does not read.
    Undelivered,
    /// Calls were still open when the grace after the connection's maximum age ran out.
    AgeGraceExpired,
}

impl ConnectionClosed {
    /// The `reason` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Idle => "idle",
            Self::Undelivered => "undelivered",
            Self::AgeGraceExpired => "age_grace_expired",
        }
    }
}

/// A connection the gateway closed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionClosedLabels {
    /// Why.
    pub reason: ConnectionClosed,
}

/// How a feed's poll ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum FeedPoll {
    /// It returned jobs.
    Jobs,
    /// It returned none.
    Empty,
    /// It failed (or a limit refused it).
    Failed,
}

impl FeedPoll {
    /// The `outcome` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Jobs => "jobs",
            Self::Empty => "empty",
            Self::Failed => "failed",
        }
    }
}

/// What happened to a job in a feed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum FeedJob {
    /// Delivered to a subscriber for the first time.
    Delivered,
    /// Delivered again after a lease ended.
    Redelivered,
    /// Acknowledged upstream by the subscriber that held it.
    Acknowledged,
    /// Dropped: its acknowledgement was refused upstream.
    LostRefused,
    /// Dropped: a later poll returned it with a new nonce.
    LostReplaced,
    /// Dropped: its feed ended.
    LostFeedEnded,
    /// Left to CodePipeline: its feed had no subscriber for one ack deadline.
    LostAbandoned,
}

impl FeedJob {
    /// Every event.
    pub const ALL: [Self; 7] = [
        Self::Delivered,
        Self::Redelivered,
        Self::Acknowledged,
        Self::LostRefused,
        Self::LostReplaced,
        Self::LostFeedEnded,
        Self::LostAbandoned,
    ];

    /// The `event` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Redelivered => "redelivered",
            Self::Acknowledged => "acknowledged",
            Self::LostRefused => "lost_refused",
            Self::LostReplaced => "lost_replaced",
            Self::LostFeedEnded => "lost_feed_ended",
            Self::LostAbandoned => "lost_abandoned",
        }
    }
}

/// The rate-limit backend configured.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitBackendLabels {
    /// Where the limits are kept.
    pub backend: RateLimitBackend,
}

/// Where the rate limits are kept.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RateLimitBackend {
    /// In this process.
    Memory,
    /// In Redis, shared by the replicas.
    Redis,
}

impl RateLimitBackend {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
        }
    }
}

/// A feed's polls, by outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedPollLabels {
    /// The feed: its action type (`Build/Custom/DemoBuilder/1`), or `other` past the
    /// [`MAX_FEED_LABELS`] first feeds.
    pub feed: FeedLabel,
    /// How the poll ended.
    pub outcome: FeedPoll,
}

/// A feed's jobs, by event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedJobLabels {
    /// The feed.
    pub feed: FeedLabel,
    /// What happened.
    pub event: FeedJob,
}

/// A feed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabels {
    /// The feed.
    pub feed: FeedLabel,
}

/// The most feeds with a label of their own; later ones share `feed="other"`, so subscribers
/// naming made-up action types cannot grow the label set without bound.
pub const MAX_FEED_LABELS: usize = 64;

/// The series of one feed, resolved when the feed starts.
#[derive(Clone)]
pub struct FeedMetrics {
    label: FeedLabel,
    polls: Family<FeedPollLabels, Counter>,
    jobs: Family<FeedJobLabels, Counter>,
    /// Subscribers now.
    pub subscribers: Gauge,
    /// Credit the subscribers hold now.
    pub credit: Gauge,
    /// From the poll that returned a job to its first delivery.
    pub pickup_seconds: Histogram,
}

impl FeedMetrics {
    /// Counts a poll.
    pub fn poll(&self, outcome: FeedPoll) {
        self.polls
            .get_or_create(&FeedPollLabels {
                feed: self.label.clone(),
                outcome,
            })
            .inc();
    }

    /// Counts `n` jobs of `event`.
    pub fn jobs(&self, event: FeedJob, n: u64) {
        if n > 0 {
            self.jobs
                .get_or_create(&FeedJobLabels {
                    feed: self.label.clone(),
                    event,
                })
                .inc_by(n);
        }
    }
}

/// A feed as a label value: its action type, one of the first [`MAX_FEED_LABELS`], or `other`.
/// Made only by [`Metrics::feed`], which keeps the set bounded.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct FeedLabel(Arc<str>);

impl FeedLabel {
    fn as_str(&self) -> &str {
        &self.0
    }
}

/// The port's [`Operation`] as a label value (the trait and the type are both foreign here).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct OperationLabel(pub Operation);

impl OperationLabel {
    fn as_str(self) -> &'static str {
        self.0.as_str()
    }
}

/// A served method's service as a label value; `unknown` for a path the gateway does not serve.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct ServiceLabel(pub Option<Method>);

impl ServiceLabel {
    fn as_str(self) -> &'static str {
        self.0.map_or("unknown", Method::service)
    }
}

/// A served method's name as a label value; `unknown` for a path the gateway does not serve.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct MethodNameLabel(pub Option<Method>);

impl MethodNameLabel {
    fn as_str(self) -> &'static str {
        self.0.map_or("unknown", Method::name)
    }
}

/// A gRPC status code as a label value, as go-grpc-prometheus names it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct CodeLabel(pub Code);

impl CodeLabel {
    fn as_str(self) -> &'static str {
        code_name(self.0)
    }
}

/// How an upstream call ended, as a label value: `success` or the failure's kind.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct UpstreamOutcome(pub Result<(), FailureKind>);

impl UpstreamOutcome {
    fn as_str(self) -> &'static str {
        match self.0 {
            Ok(()) => "success",
            Err(failure) => failure.as_str(),
        }
    }
}

/// Label values of closed sets, written as their `as_str` words.
macro_rules! label_value_as_str {
    ($($ty:ty),+) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )+};
}

label_value_as_str!(
    RpcKind,
    LimitScope,
    OperationLabel,
    FeedLabel,
    ServiceLabel,
    MethodNameLabel,
    CodeLabel,
    UpstreamOutcome,
    RateLimitBackend,
    AuthRejection,
    ReloadResult,
    ClientFrom,
    ConnectionClosed,
    FeedPoll,
    FeedJob
);

/// The number of gRPC status codes: the spec numbers them 0..=16, as `tonic::Code` does.
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
    pub fn handled(&self, family: &Family<HandledLabels, Counter>, code: Code) -> &Counter {
        let index = (code as usize).min(CODES - 1);
        self.handled[index].get_or_init(|| {
            family
                .get_or_create(&HandledLabels {
                    grpc_type: self.labels.grpc_type,
                    grpc_service: self.labels.grpc_service,
                    grpc_method: self.labels.grpc_method,
                    grpc_code: CodeLabel(code),
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

/// The loads and health of one watched secrets file.
#[derive(Clone)]
pub struct WatchedFileMetrics {
    /// Loads, by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// 0 while the gateway runs on an older version after a bad edit; else 1 (also with no
    /// file at all: nothing stale is in force).
    pub healthy: Gauge,
    /// Entries in the version in force.
    pub entries: Gauge,
}

impl Default for WatchedFileMetrics {
    fn default() -> Self {
        let healthy = Gauge::default();
        healthy.set(1);
        Self {
            reloads: Family::default(),
            healthy,
            entries: Gauge::default(),
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let started = Family::<MethodLabels, Counter>::default();
        let handling_seconds =
            Family::<MethodLabels, Histogram>::new_with_constructor(latency_histogram);
        let method_series = |labels: MethodLabels| MethodSeries {
            started: started.get_or_create(&labels).clone(),
            handling_seconds: handling_seconds.get_or_create(&labels).clone(),
            labels,
            handled: Default::default(),
        };
        let methods = EnumMap::from_fn(|method: Method| {
            method_series(MethodLabels {
                grpc_type: method.kind(),
                grpc_service: ServiceLabel(Some(method)),
                grpc_method: MethodNameLabel(Some(method)),
            })
        });
        let unknown_method = method_series(MethodLabels {
            grpc_type: RpcKind::Unary,
            grpc_service: ServiceLabel(None),
            grpc_method: MethodNameLabel(None),
        });
        let upstream_calls = Family::<UpstreamLabels, Counter>::default();
        let upstream_seconds =
            Family::<UpstreamLabels, Histogram>::new_with_constructor(latency_histogram);
        let upstream_success = EnumMap::from_fn(|operation| {
            let labels = UpstreamLabels {
                operation: OperationLabel(operation),
                outcome: UpstreamOutcome(Ok(())),
            };
            UpstreamSuccess {
                calls: upstream_calls.get_or_create(&labels).clone(),
                seconds: upstream_seconds.get_or_create(&labels).clone(),
            }
        });
        let mut metrics = Self {
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
            "gateway_client_concurrency_limited",
            "Calls refused with RESOURCE_EXHAUSTED because their client had as many in flight as it may",
            metrics.client_concurrency_limited.clone(),
        );
        metrics.registry.register(
            "gateway_connections",
            "Connections being served",
            metrics.connections.clone(),
        );
        metrics.registry.register(
            "gateway_connections_refused",
            "Connections refused at the connection limit",
            metrics.connections_refused.clone(),
        );
        metrics.registry.register(
            "gateway_connections_aged",
            "Connections told GOAWAY at their maximum age (their calls in flight finish within the grace)",
            metrics.connections_aged.clone(),
        );
        metrics.registry.register(
            "gateway_connections_closed",
            "Connections the gateway closed: no call in time after accepting, idle, an answer left unread, or calls still open when the grace after the maximum age ran out",
            metrics.connections_closed.clone(),
        );
        metrics.registry.register(
            "gateway_accept_failures",
            "Failed attempts to accept a connection (out of file descriptors, say)",
            metrics.accept_failures.clone(),
        );
        metrics.registry.register(
            "gateway_rate_limit_backend_up",
            "1 while rate limits are kept where configured; 0 while the Redis backend falls back to this process's own",
            metrics.rate_limit_backend_up.clone(),
        );
        metrics.registry.register(
            "gateway_rate_limit_fallbacks",
            "Times the Redis rate-limit backend fell back to this process's own limits",
            metrics.rate_limit_fallbacks.clone(),
        );
        metrics.registry.register(
            "gateway_rate_limit_backend",
            "The rate-limit backend configured (memory or redis), as a label of a series set to 1",
            metrics.rate_limit_backend.clone(),
        );
        metrics.registry.register(
            "gateway_redis_call_seconds",
            "Round trips of rate-limit checks to Redis (seconds)",
            metrics.redis_seconds.clone(),
        );
        metrics.registry.register(
            "gateway_feed_polls",
            "PollForJobs calls made by job feeds, by feed and outcome",
            metrics.feed_polls.clone(),
        );
        metrics.registry.register(
            "gateway_feed_jobs",
            "Jobs through job feeds, by feed and event (delivered, redelivered, acknowledged, lost_*)",
            metrics.feed_jobs.clone(),
        );
        metrics.registry.register(
            "gateway_feed_subscribers",
            "StreamJobs subscribers, by feed",
            metrics.feed_subscribers.clone(),
        );
        metrics.registry.register(
            "gateway_feed_credit",
            "Credit StreamJobs subscribers hold (room for jobs), by feed",
            metrics.feed_credit.clone(),
        );
        metrics.registry.register(
            "gateway_feed_pickup_seconds",
            "From the poll that returned a job to its first delivery on a stream (seconds)",
            metrics.feed_pickup_seconds.clone(),
        );
        metrics.registry.register(
            "gateway_in_flight_calls",
            "Calls being handled now",
            metrics.in_flight.clone(),
        );
        metrics.registry.register(
            "gateway_token_file_reloads",
            "Loads of the token file, by result",
            metrics.token_file.reloads.clone(),
        );
        metrics.registry.register(
            "gateway_token_file_healthy",
            "1 if the last load of the token file succeeded, 0 if an older one is in force",
            metrics.token_file.healthy.clone(),
        );
        metrics.registry.register(
            "gateway_token_file_clients",
            "Clients in the token file in force",
            metrics.token_file.entries.clone(),
        );
        metrics.registry.register(
            "gateway_client_token_file_reloads",
            "Loads of the client-token file, by result",
            metrics.client_token_file.reloads.clone(),
        );
        metrics.registry.register(
            "gateway_client_token_file_healthy",
            "1 if the last load of the client-token file succeeded, 0 if an older one is in force",
            metrics.client_token_file.healthy.clone(),
        );
        metrics.registry.register(
            "gateway_client_token_file_clients",
            "Third-party clients in the client-token file in force",
            metrics.client_token_file.entries.clone(),
        );
        metrics.registry.register(
            "gateway_client_tokens_supplied",
            "Third-party calls the gateway supplied the client token for, by how it knew the job's client",
            metrics.client_tokens_supplied.clone(),
        );
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

/// Code names as go-grpc-prometheus writes them (`codes.Code.String()` in Go).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
