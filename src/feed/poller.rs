//! A feed's poller: the one task that polls upstream for a feed, delivers what it finds, and
//! ends leases on time.

use std::{sync::Arc, time::Duration};

use rand::RngExt;
use tokio::{sync::broadcast, time::Instant};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::{Feeds, Shared};
use crate::{
    api::status,
    domain::{ActionTypeId, Job, PollForJobsInput},
    observability::metrics::{FeedMetrics, FeedPoll},
    upstream::{Operation, UpstreamExt},
};

/// The longest a poll may take, if the upstream sets no bound of its own.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait after a failure that says nothing of when to retry.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// The least time between two polls that hints of new jobs bring forward: jobs created one by
/// one in a burst are picked up a batch at a time, not with a poll each.
const HINT_COALESCING: Duration = Duration::from_millis(50);

/// How a poll went.
enum Polled {
    /// Jobs, from a poll that asked for `asked`.
    Jobs { jobs: Vec<Job>, asked: u32 },
    /// None.
    Empty,
    /// A failure worth retrying after this long (throttling, an outage, the budget spent).
    RetryAfter(Duration),
    /// A failure retrying will not mend (an unknown action type): the subscribers are told.
    Fatal(Status),
}

/// The gauges last reported for this feed; they are moved by the difference, since feeds past
/// the label cap share a series.
#[derive(Default)]
struct Reported {
    subscribers: i64,
    credit: i64,
}

impl Reported {
    fn update(&mut self, metrics: &FeedMetrics, subscribers: usize, credit: u32) {
        let (subscribers, credit) = (subscribers as i64, i64::from(credit));
        metrics.subscribers.inc_by(subscribers - self.subscribers);
        metrics.credit.inc_by(credit - self.credit);
        *self = Self {
            subscribers,
            credit,
        };
    }
}

/// Runs the feed until it has no subscriber left.
pub(super) async fn run(feeds: Arc<Feeds>, shared: Arc<Shared>) {
    let config = feeds.config;
    let mut hints = feeds.upstream.new_jobs();
    let mut next_poll = Instant::now();
    let mut last_poll = Instant::now();
    let mut idle = config.min_idle_interval;
    let mut reported = Reported::default();
    loop {
        let now = Instant::now();
        let (room, next_deadline, retirable) = {
            let mut state = shared.lock();
            state.expire(now.into_std());
            state.deliver(now.into_std());
            shared.record(&mut state);
            reported.update(&shared.metrics, state.subscriber_count(), state.credit());
            (
                state.room(),
                state.next_deadline(),
                state.retirable(now.into_std()),
            )
        };
        if retirable && feeds.retire(&shared) {
            reported.update(&shared.metrics, 0, 0);
            return;
        }
        // A draining gateway polls no more: its streams are ending, and a polled job would wait
        // for a subscriber that never comes.
        let may_poll = room > 0 && !feeds.draining.is_cancelled();
        if may_poll && now >= next_poll {
            let asked = room.min(config.max_batch_size);
            last_poll = now;
            // The poll's send time, not its answer's: a slow answer carries nonces as old as the
            // request that fetched them.
            let sent_at = std::time::Instant::now();
            match poll(&feeds, &shared, asked).await {
                Polled::Jobs { jobs, asked } => {
                    let full = jobs.len() as u32 >= asked;
                    shared.lock().offer(jobs, sent_at);
                    idle = config.min_idle_interval;
                    // A full batch says more may be waiting.
                    next_poll = if full {
                        Instant::now()
                    } else {
                        Instant::now() + config.min_idle_interval
                    };
                }
                Polled::Empty => {
                    next_poll = Instant::now() + jittered(idle);
                    idle = (idle * 2).min(config.max_idle_interval);
                }
                Polled::RetryAfter(wait) => next_poll = Instant::now() + jittered(wait),
                Polled::Fatal(status) => {
                    let mut state = shared.lock();
                    state.end(&status);
                    shared.record(&mut state);
                    // Subscribers who come later are polled for afresh, after a pause.
                    next_poll = Instant::now() + config.max_idle_interval;
                }
            }
            continue;
        }
        let poll_due = may_poll.then_some(next_poll);
        let wake_at = [poll_due, next_deadline.map(Instant::from_std)]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            () = shared.wake.notified() => {}
            () = sleep_until(wake_at) => {}
            () = feeds.draining.cancelled(), if !feeds.draining.is_cancelled() => {}
            hint = next_hint(&mut hints) => {
                if hint.is_none_or(|action_type| action_type == shared.key.action_type_id) {
                    // Jobs were created for this action type (or we missed some hints).
                    next_poll = next_poll.min(Instant::now().max(last_poll + HINT_COALESCING));
                    idle = config.min_idle_interval;
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next hint that jobs were created: `Some(action type)`, or `None` when hints were
/// missed. Never resolves when the upstream gives no hints.
async fn next_hint(hints: &mut Option<broadcast::Receiver<ActionTypeId>>) -> Option<ActionTypeId> {
    let Some(receiver) = hints else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(action_type) => Some(action_type),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => {
            *hints = None;
            std::future::pending().await
        }
    }
}

/// Between half and all of `wait`, so pollers of many feeds (and replicas) do not poll in step.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// One poll for up to `asked` jobs, within the rate of a client it is for and the upstream
/// budget.
async fn poll(feeds: &Feeds, shared: &Shared, asked: u32) -> Polled {
    let metrics = &shared.metrics;
    if let Some(payer) = shared.payer()
        && let Err(refused) = feeds.client_limits.check(&payer.id, payer.rate).await
    {
        metrics.poll(FeedPoll::Failed);
        return Polled::RetryAfter(retry_delay(&refused));
    }
    if let Err(refused) = feeds.budget.spend(Operation::PollForJobs).await {
        metrics.poll(FeedPoll::Failed);
        return Polled::RetryAfter(retry_delay(&refused));
    }
    let input = PollForJobsInput {
        action_type_id: shared.key.action_type_id.clone(),
        max_batch_size: Some(asked),
        query_param: shared.key.query_param.clone(),
    };
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(POLL_TIMEOUT, feeds.upstream.send(input))
        .await
        .unwrap_or(Err(crate::upstream::UpstreamError::Timeout {
            request_id: None,
        }));
    let outcome = result
        .as_ref()
        .map(drop)
        .map_err(crate::upstream::UpstreamError::kind);
    feeds.metrics.upstream_call(
        Operation::PollForJobs,
        outcome,
        started.elapsed().as_secs_f64(),
    );
    match result {
        Ok(jobs) if jobs.is_empty() => {
            metrics.poll(FeedPoll::Empty);
            Polled::Empty
        }
        Ok(jobs) => {
            metrics.poll(FeedPoll::Jobs);
            Polled::Jobs { jobs, asked }
        }
        Err(error) => {
            metrics.poll(FeedPoll::Failed);
            let action_type = shared.key.action_type_id.to_string();
            let status = status::upstream_call_status(Operation::PollForJobs, &action_type, error);
            match status.code() {
                Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => {
                    Polled::RetryAfter(retry_delay(&status))
                }
                _ => Polled::Fatal(status),
            }
        }
    }
}

/// The wait a status's RetryInfo asks for, or a default.
fn retry_delay(status: &Status) -> Duration {
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or(DEFAULT_RETRY)
}
