//! The job feed: one poller per (action type, query param) per gateway process, shared by every
//! StreamJobs subscriber of it, so upstream polls do not grow with the number of workers.
//!
//! The poller polls only while some subscriber has credit, asking for as many jobs as the
//! subscribers have room for (capped); it polls again at once after a full batch and backs off
//! with jitter after an empty one, from the minimum to the maximum idle interval; it waits out
//! throttling and the upstream budget. Each polled job goes to exactly one subscriber with
//! credit, in turn, leased until the ack deadline ([`state`] keeps the books). With no
//! subscriber left, the poller stops.

mod poller;
pub mod state;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{Notify, mpsc};

pub use state::{AckOutcome, CreditRefusal, FeedEvent, SubscriberId, TakeRefusal};

use crate::{
    domain::{ActionTypeId, QueryParam, SubscribeInput},
    limits::UpstreamBudget,
    observability::{
        Metrics,
        metrics::{FeedJob, FeedMetrics},
    },
    upstream::Upstream,
};

/// How the feeds poll and lease.
#[derive(Debug, Clone, Copy)]
pub struct FeedConfig {
    /// The most jobs one poll asks for.
    pub max_batch_size: u32,
    /// The wait after a poll that found jobs but not a full batch, and the first wait after an
    /// empty one.
    pub min_idle_interval: Duration,
    /// The longest wait between polls while subscribers wait for jobs.
    pub max_idle_interval: Duration,
    /// How long a delivered job waits for its acknowledgement before it goes to another
    /// subscriber.
    pub ack_deadline: Duration,
    /// How long after its poll a job is dropped if nobody took it: below CodePipeline's own
    /// re-dispatch window (about 30 s), so no stale nonce is delivered.
    pub redispatch_window: Duration,
}

/// What a feed is for: the action type and the query param its polls carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeedKey {
    /// The action type.
    pub action_type_id: ActionTypeId,
    /// The optional query param.
    pub query_param: Option<QueryParam>,
}

/// One feed's state, shared by its poller and its subscribers.
struct Shared {
    key: FeedKey,
    state: Mutex<state::FeedState>,
    /// Wakes the poller: credit granted, a subscriber left, a job taken.
    wake: Notify,
    metrics: FeedMetrics,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, state::FeedState> {
        // Every update leaves the books consistent; a panic mid-update is a bug, not a reason to
        // stop every feed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts what happened to the jobs since the last count.
    fn record(&self, state: &mut state::FeedState) {
        let tally = state.take_tally();
        let metrics = &self.metrics;
        for waited in &tally.delivered {
            metrics.pickup_seconds.observe(waited.as_secs_f64());
        }
        metrics.jobs(FeedJob::Delivered, tally.delivered.len() as u64);
        metrics.jobs(FeedJob::Redelivered, tally.redelivered as u64);
        metrics.jobs(FeedJob::Acknowledged, tally.acknowledged as u64);
        for lost in tally.lost {
            metrics.jobs(
                match lost {
                    state::Lost::Stale => FeedJob::LostStale,
                    state::Lost::Refused => FeedJob::LostRefused,
                    state::Lost::Replaced => FeedJob::LostReplaced,
                    state::Lost::FeedEnded => FeedJob::LostFeedEnded,
                },
                1,
            );
        }
    }
}

/// Every feed of the process.
pub struct Feeds {
    config: FeedConfig,
    upstream: Arc<dyn Upstream>,
    budget: Arc<UpstreamBudget>,
    metrics: Arc<Metrics>,
    feeds: Mutex<HashMap<FeedKey, Arc<Shared>>>,
}

impl Feeds {
    /// No feed yet; each starts with its first subscriber.
    pub fn new(
        config: FeedConfig,
        upstream: Arc<dyn Upstream>,
        budget: Arc<UpstreamBudget>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            upstream,
            budget,
            metrics,
            feeds: Mutex::default(),
        })
    }

    /// Subscribes to the feed `input` names, starting it if needed.
    pub fn subscribe(self: &Arc<Self>, input: SubscribeInput) -> Subscription {
        let key = FeedKey {
            action_type_id: input.action_type_id,
            query_param: input.query_param,
        };
        let (events, received) = mpsc::unbounded_channel();
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let shared = feeds
            .entry(key.clone())
            .or_insert_with(|| {
                let shared = Arc::new(Shared {
                    metrics: self.metrics.feed(&key.action_type_id.to_string()),
                    key: key.clone(),
                    state: Mutex::new(state::FeedState::new(
                        self.config.ack_deadline,
                        self.config.redispatch_window,
                    )),
                    wake: Notify::new(),
                });
                tokio::spawn(poller::run(self.clone(), shared.clone()));
                shared
            })
            .clone();
        let id = shared.lock().subscribe(input.max_outstanding_jobs, events);
        drop(feeds);
        shared.wake.notify_one();
        Subscription {
            id,
            feed: shared,
            events: received,
        }
    }

    /// A job was acknowledged with the unary AcknowledgeJob: if a feed of this process holds
    /// it, it is taken and never delivered again. (A feed on another replica cannot know.)
    pub fn taken_elsewhere(&self, job_id: &str) {
        let feeds: Vec<Arc<Shared>> = self
            .feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for feed in feeds {
            feed.lock().taken_elsewhere(job_id);
        }
    }

    /// Removes `shared` if it has no subscriber: its poller is ending. `false` when a subscriber
    /// came in the meantime.
    fn retire(&self, shared: &Arc<Shared>) -> bool {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if shared.lock().has_subscribers() {
            return false;
        }
        if feeds
            .get(&shared.key)
            .is_some_and(|current| Arc::ptr_eq(current, shared))
        {
            feeds.remove(&shared.key);
        }
        true
    }
}

/// A StreamJobs stream's place in its feed; leaving the feed when dropped hands the jobs it was
/// leased, and had not taken, to the other subscribers.
pub struct Subscription {
    id: SubscriberId,
    feed: Arc<Shared>,
    events: mpsc::UnboundedReceiver<FeedEvent>,
}

impl Subscription {
    /// The next delivered job, or how the feed ended.
    pub async fn next(&mut self) -> Option<FeedEvent> {
        self.events.recv().await
    }

    /// Room for `jobs` more.
    pub fn grant(&self, jobs: u32) -> Result<(), CreditRefusal> {
        self.feed.lock().grant(self.id, jobs)?;
        self.feed.wake.notify_one();
        Ok(())
    }

    /// Takes a job delivered here: the nonce its acknowledgement goes upstream with.
    pub fn take(&self, job_id: &str) -> Result<String, TakeRefusal> {
        self.feed.lock().take(self.id, job_id)
    }

    /// Where the outcome of taking `job_id` is told, from wherever its acknowledgement runs.
    pub fn acknowledger(&self, job_id: &str) -> Acknowledger {
        Acknowledger {
            id: self.id,
            job_id: job_id.to_owned(),
            feed: self.feed.clone(),
        }
    }
}

/// Tells a feed how the acknowledgement of a job a subscriber took ended. If the subscriber has
/// left by then, it changes nothing: a taken job is never delivered again.
pub struct Acknowledger {
    id: SubscriberId,
    job_id: String,
    feed: Arc<Shared>,
}

impl Acknowledger {
    /// How it ended.
    pub fn acknowledged(self, outcome: AckOutcome) {
        let mut state = self.feed.lock();
        state.acknowledged(self.id, &self.job_id, outcome, Instant::now());
        self.feed.record(&mut state);
        drop(state);
        self.feed.wake.notify_one();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.lock().unsubscribe(self.id);
        self.feed.wake.notify_one();
    }
}
