//! The job feed: one poller per (action type, query param) per gateway process, shared by every
//! StreamJobs subscriber of it, so upstream polls do not grow with the number of workers.
//!
//! The poller polls only while some subscriber has credit, asking for as many jobs as the
//! subscribers have room for (capped); it polls again at once after a full batch and backs off
//! with jitter after an empty one, from the minimum to the maximum idle interval; it waits out
//! throttling and the upstream budget. Each polled job goes to exactly one subscriber with
//! credit, in turn, leased until the ack deadline ([`state`] keeps the books and states the
//! rules). A feed with no subscriber left lingers for one ack deadline, so a restarting worker
//! gets its jobs back, then its poller stops; once the gateway drains, no feed starts or polls.

mod handed;
mod poller;
pub mod state;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use handed::HandedToStreams;
pub use state::{AckOutcome, CreditRefusal, FeedEvent, SubscriberId, TakeRefusal};

use crate::{
    domain::{ActionTypeId, JobId, QueryParam, SubscribeInput},
    limits::{ClientLimits, Rate, UpstreamBudget},
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
    /// subscriber; also how long a departed holder's claim lasts, and how long a feed outlives
    /// its last subscriber.
    pub ack_deadline: Duration,
    /// How many feeds the process may have, and one client may be on when it starts another:
    /// each polls upstream on the one shared AWS identity, so distinct query params must not
    /// multiply without bound.
    pub limits: FeedLimits,
}

/// How many feeds may be open.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    /// In the process.
    pub per_process: usize,
    /// That one client is on, counted when it would start another (joining a feed that is
    /// open already is not refused).
    pub per_client: usize,
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
    /// Every subscription on the feed, by id: who may be charged for a poll, and which clients
    /// the feed counts against.
    subscribers: Mutex<HashMap<SubscriberId, Subscriber>>,
    /// The subscription charged for the last poll: the next one charges the next in turn.
    last_payer: Mutex<Option<SubscriberId>>,
    /// The process's memory of copies handed to streams, which outlives this feed.
    handed: Arc<HandedToStreams>,
    state: Mutex<state::FeedState>,
    /// Wakes the poller: credit granted, a subscriber left, a job taken.
    wake: Notify,
    metrics: FeedMetrics,
}

impl Shared {
    /// Who pays for the next poll, with the upstream budget: the subscriptions that hold credit
    /// (the ones the poll is for), in turn. `None` when none does.
    fn payer(&self) -> Option<Subscriber> {
        let asking: Vec<SubscriberId> = self.lock().with_credit().collect();
        let mut last = self.last_payer.lock().unwrap_or_else(|p| p.into_inner());
        let next = asking
            .iter()
            .find(|id| last.is_none_or(|last| **id > last))
            .or(asking.first())
            .copied()?;
        *last = Some(next);
        drop(last);
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&next)
            .cloned()
    }

    /// Whether `client` has a subscription on the feed.
    fn has_client(&self, client: &str) -> bool {
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|subscriber| &*subscriber.id == client)
    }

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
        for (job_id, nonce) in &tally.handed_to_streams {
            self.handed.insert(job_id, nonce);
        }
        for lost in tally.lost {
            metrics.jobs(
                match lost {
                    state::Lost::Refused => FeedJob::LostRefused,
                    state::Lost::Replaced => FeedJob::LostReplaced,
                    state::Lost::FeedEnded => FeedJob::LostFeedEnded,
                    state::Lost::Abandoned => FeedJob::LostAbandoned,
                },
                1,
            );
        }
    }
}

/// What a feed's polls spend: the account's upstream budget, and the rate of a client the poll
/// is for.
pub struct FeedCharges {
    /// The budget every upstream call spends.
    pub budget: Arc<UpstreamBudget>,
    /// The clients' rates.
    pub client_limits: Arc<ClientLimits>,
}

/// Every feed of the process.
pub struct Feeds {
    config: FeedConfig,
    upstream: Arc<dyn Upstream>,
    budget: Arc<UpstreamBudget>,
    client_limits: Arc<ClientLimits>,
    metrics: Arc<Metrics>,
    /// Cancelled when the gateway drains: no feed starts or polls from then on.
    draining: CancellationToken,
    feeds: Mutex<HashMap<FeedKey, Arc<Shared>>>,
    handed: Arc<HandedToStreams>,
}

/// Who subscribes: a client, and its own rate if it has one.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The client's id.
    pub id: Arc<str>,
    /// Its own rate, when the token file sets one (else the default).
    pub rate: Option<Rate>,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeRefusal {
    /// The gateway is draining.
    Draining,
    /// A new feed would be one more than the process may have.
    ProcessFeedLimit(usize),
    /// This client is on as many feeds as it may be when it starts another.
    ClientFeedLimit(usize),
}

impl Feeds {
    /// No feed yet; each starts with its first subscriber.
    pub fn new(
        config: FeedConfig,
        upstream: Arc<dyn Upstream>,
        charges: FeedCharges,
        metrics: Arc<Metrics>,
        draining: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            upstream,
            budget: charges.budget,
            client_limits: charges.client_limits,
            metrics,
            draining,
            feeds: Mutex::default(),
            handed: Arc::new(HandedToStreams::new(handed::REMEMBERED)),
        })
    }

    fn all(&self) -> Vec<Arc<Shared>> {
        self.feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Subscribes `subscriber` to the feed `input` names, starting it if needed (within the feed
    /// limits); refused once the gateway drains, so no poller starts whose jobs nobody would
    /// receive.
    pub fn subscribe(
        self: &Arc<Self>,
        input: SubscribeInput,
        subscriber: &Subscriber,
    ) -> Result<Subscription, SubscribeRefusal> {
        if self.draining.is_cancelled() {
            return Err(SubscribeRefusal::Draining);
        }
        let key = FeedKey {
            action_type_id: input.action_type_id,
            query_param: input.query_param,
        };
        let (events, received) = mpsc::unbounded_channel();
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if !feeds.contains_key(&key) {
            let limits = self.config.limits;
            if feeds.len() >= limits.per_process {
                return Err(SubscribeRefusal::ProcessFeedLimit(limits.per_process));
            }
            let on = feeds
                .values()
                .filter(|feed| feed.has_client(&subscriber.id))
                .count();
            if on >= limits.per_client {
                return Err(SubscribeRefusal::ClientFeedLimit(limits.per_client));
            }
        }
        let shared = feeds
            .entry(key.clone())
            .or_insert_with(|| {
                let shared = Arc::new(Shared {
                    subscribers: Mutex::default(),
                    last_payer: Mutex::default(),
                    handed: self.handed.clone(),
                    metrics: self.metrics.feed(&key.action_type_id.to_string()),
                    key: key.clone(),
                    state: Mutex::new(state::FeedState::new(
                        self.config.ack_deadline,
                        Instant::now(),
                    )),
                    wake: Notify::new(),
                });
                tokio::spawn(poller::run(self.clone(), shared.clone()));
                shared
            })
            .clone();
        let id = shared
            .lock()
            .subscribe(subscriber.id.clone(), input.max_outstanding_jobs, events);
        shared
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, subscriber.clone());
        drop(feeds);
        shared.wake.notify_one();
        Ok(Subscription {
            id,
            feed: shared,
            events: received,
        })
    }

    /// Whether a unary AcknowledgeJob of `job_id` with `nonce` must be refused: a feed of this
    /// process holds that copy for a stream, or a stream was told it is its own (remembered
    /// after its feed retired, for the last [`handed::REMEMBERED`] such copies). A feed on
    /// another replica cannot know.
    pub fn holds_for_a_stream(&self, job_id: &JobId, nonce: &str) -> bool {
        self.handed.contains(job_id, nonce)
            || self
                .all()
                .iter()
                .any(|feed| feed.lock().holds_for_a_stream(job_id, nonce))
    }

    /// A unary AcknowledgeJob no feed had a say in was accepted: a copy a feed holds with
    /// another nonce is stale, and is never delivered again.
    pub fn acknowledged_elsewhere(&self, job_id: &JobId) {
        for feed in self.all() {
            let mut state = feed.lock();
            state.acknowledged_elsewhere(job_id);
            feed.record(&mut state);
        }
    }

    /// Removes `shared` if it may retire (no subscriber for one ack deadline): its poller is
    /// ending. `false` when it may not (a subscriber came in the meantime).
    fn retire(&self, shared: &Arc<Shared>) -> bool {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = shared.lock();
        if !state.retirable(Instant::now()) {
            return false;
        }
        if feeds
            .get(&shared.key)
            .is_some_and(|current| Arc::ptr_eq(current, shared))
        {
            feeds.remove(&shared.key);
        }
        for job_id in state.retire() {
            // Not secret: a job id. The job may be InProgress upstream with no worker on it.
            tracing::warn!(
                %job_id,
                action_type = %shared.key.action_type_id,
                "a feed retired holding a job whose acknowledgement may have been accepted with \
                 no worker told; CodePipeline will time it out"
            );
        }
        shared.record(&mut state);
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

    /// Takes a job delivered here (or claims back one its client's earlier stream held): the
    /// nonce its acknowledgement goes upstream with, and where the outcome is told.
    pub fn take(&self, job_id: &JobId) -> Result<(String, Acknowledger), TakeRefusal> {
        let (nonce, generation) = self.feed.lock().take(self.id, job_id)?;
        Ok((
            nonce,
            Acknowledger {
                job_id: job_id.clone(),
                generation,
                feed: self.feed.clone(),
            },
        ))
    }
}

/// Tells a feed how the acknowledgement of a job taken from it ended, from wherever the
/// acknowledgement ran. The outcome of a copy the feed no longer holds changes nothing.
pub struct Acknowledger {
    job_id: JobId,
    generation: state::Generation,
    feed: Arc<Shared>,
}

impl Acknowledger {
    /// How it ended; `announced`: whether the answer was handed to the stream or caller that
    /// asked (a stream already gone was not).
    pub fn acknowledged(self, outcome: AckOutcome, announced: bool) {
        let mut state = self.feed.lock();
        state.acknowledged(
            &self.job_id,
            self.generation,
            outcome,
            announced,
            Instant::now(),
        );
        self.feed.record(&mut state);
        drop(state);
        self.feed.wake.notify_one();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.feed.lock().unsubscribe(self.id, Instant::now());
        self.feed.wake.notify_one();
    }
}

/// A job id made from a short name (up to 16 bytes), so that tests read as names.
#[cfg(test)]
pub(crate) fn job_id_named(name: &str) -> JobId {
    let digits = format!("{:0>32}", hex::encode(name));
    assert_eq!(digits.len(), 32, "a test job name of at most 16 bytes");
    let id = [
        &digits[..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..],
    ];
    JobId::parse(&id.join("-")).expect("a well-formed job id")
}

/// The name [`job_id_named`] made `id` from.
#[cfg(test)]
pub(crate) fn name_of_job(id: &JobId) -> String {
    let bytes = hex::decode(id.as_str().replace('-', "")).expect("hex digits");
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    String::from_utf8(bytes[start..].to_vec()).expect("a name")
}
