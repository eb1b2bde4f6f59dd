//! The series resolved ahead of the hot path: a served method's, an upstream operation's
//! successes, a feed's, and a watched secrets file's.

use std::sync::OnceLock;

use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use tonic::Code;

use super::labels::{
    CodeLabel, FeedJob, FeedJobLabels, FeedLabel, FeedPoll, FeedPollLabels, HandledLabels,
    MethodLabels, OperationLabel, ReloadLabels, UpstreamLabels, UpstreamOutcome,
};
use crate::upstream::Operation;

/// The series of one feed, resolved when the feed starts.
#[derive(Clone)]
pub struct FeedMetrics {
    pub(super) label: FeedLabel,
    pub(super) polls: Family<FeedPollLabels, Counter>,
    pub(super) jobs: Family<FeedJobLabels, Counter>,
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
    /// The series of `labels`, its started and latency series made in their families.
    pub(super) fn new(
        labels: MethodLabels,
        started: &Family<MethodLabels, Counter>,
        handling_seconds: &Family<MethodLabels, Histogram>,
    ) -> Self {
        Self {
            started: started.get_or_create(&labels).clone(),
            handling_seconds: handling_seconds.get_or_create(&labels).clone(),
            labels,
            handled: Default::default(),
        }
    }

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

impl UpstreamSuccess {
    /// The successes of `operation`, made in the families of every outcome.
    pub(super) fn new(
        operation: Operation,
        calls: &Family<UpstreamLabels, Counter>,
        seconds: &Family<UpstreamLabels, Histogram>,
    ) -> Self {
        let labels = UpstreamLabels {
            operation: OperationLabel(operation),
            outcome: UpstreamOutcome(Ok(())),
        };
        Self {
            calls: calls.get_or_create(&labels).clone(),
            seconds: seconds.get_or_create(&labels).clone(),
        }
    }
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
