//! One feed's bookkeeping, with no I/O: its subscribers and their credit, the jobs waiting to be
//! delivered, and the leases of delivered jobs. The poller drives it; the tests drive it by hand.
//!
//! A job's life here: a poll returns it (`offer`) -> it waits -> it is delivered to a subscriber
//! with credit (`deliver`), which uses one credit and leases it -> the subscriber takes it
//! (`take`, an acknowledgement going upstream) -> acknowledged (`acknowledged`): gone. Credit
//! comes back only when the worker grants it, once it is done with a delivered job (finished,
//! or dropped because its acknowledgement was refused): the gateway cannot know when that is. A lease not taken by
//! its deadline, or whose subscriber leaves, puts the job back to wait for another subscriber,
//! with the same nonce. A job whose acknowledgement was sent is never delivered again. Any job
//! still here past the redispatch window is dropped: CodePipeline has handed it out again with a
//! new nonce by then, so the one we hold is stale.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tonic::Status;

use crate::domain::Job;

/// A subscriber's number within its feed.
pub type SubscriberId = u64;

/// What a subscriber's stream receives from the feed.
#[derive(Debug)]
pub enum FeedEvent {
    /// A delivered job, leased to the subscriber (boxed: jobs are large, and most events are).
    Job(Box<Job>),
    /// The feed ended (its action type is unknown, say): the stream ends with this status.
    Ended(Status),
}

/// Why a job left the feed without being acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lost {
    /// Older than the redispatch window: CodePipeline has handed it out again.
    Stale,
    /// Its acknowledgement was refused upstream (another worker holds it, or it is gone).
    Refused,
    /// A later poll returned it with a new nonce.
    Replaced,
    /// The feed ended with the job still in it.
    FeedEnded,
}

/// What happened to the jobs, for the feed's metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// First deliveries, with how long each waited since its poll.
    pub delivered: Vec<Duration>,
    /// Deliveries of a job that was leased before.
    pub redelivered: usize,
    /// Jobs acknowledged upstream.
    pub acknowledged: usize,
    /// Jobs that left unacknowledged, by reason.
    pub lost: Vec<Lost>,
}

/// Why a subscriber cannot take a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeRefusal {
    /// It was never delivered on this stream: the worker is confused.
    NotDelivered,
    /// Its lease ended (expired, or the job went stale or was replaced): drop it.
    LeaseEnded,
    /// Its acknowledgement is already on its way.
    InProgress,
}

/// Why a subscriber's credit grant is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditRefusal {
    /// The credit would exceed the subscription's maximum.
    OverMaximum {
        /// The credit the subscriber holds now.
        held: u32,
        /// The subscription's maximum.
        max: u32,
    },
}

/// How an acknowledgement that was taken ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// CodePipeline accepted it: the job is the worker's.
    Accepted,
    /// CodePipeline refused it for good (InvalidNonce, JobNotFound): the job is lost.
    Refused,
    /// It never reached CodePipeline (a limit refused it first): the lease goes on.
    NotSent,
    /// It may or may not have taken effect: the subscriber keeps the job, and may acknowledge
    /// again, but it is never delivered elsewhere.
    Indeterminate,
}

#[derive(Debug)]
struct Subscriber {
    credit: u32,
    max: u32,
    events: mpsc::UnboundedSender<FeedEvent>,
    /// Jobs delivered to it, and when: to tell a late acknowledgement ("lease ended") from a
    /// confused one ("never delivered here"). Pruned after the redispatch window.
    delivered: HashMap<String, Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseState {
    /// Waiting for the subscriber's acknowledgement until this instant.
    Leased { until: Instant },
    /// An acknowledgement is on its way upstream.
    Taking,
    /// An acknowledgement went upstream with no known outcome: the subscriber keeps the job.
    Held,
}

#[derive(Debug)]
struct Lease {
    job: Job,
    holder: SubscriberId,
    polled_at: Instant,
    state: LeaseState,
}

#[derive(Debug)]
struct Waiting {
    job: Job,
    polled_at: Instant,
    /// The subscriber whose lease of it ended, if any: it goes to another one if it can.
    previous_holder: Option<SubscriberId>,
}

/// One feed's subscribers, waiting jobs and leases.
#[derive(Debug)]
pub struct FeedState {
    ack_deadline: Duration,
    redispatch_window: Duration,
    subscribers: BTreeMap<SubscriberId, Subscriber>,
    next_id: SubscriberId,
    /// The subscriber after which the next delivery looks for credit, for fairness.
    last_served: SubscriberId,
    waiting: VecDeque<Waiting>,
    leases: HashMap<String, Lease>,
    tally: Tally,
}

impl FeedState {
    /// A feed with no subscribers, leasing jobs for `ack_deadline` and dropping those older than
    /// `redispatch_window`.
    pub fn new(ack_deadline: Duration, redispatch_window: Duration) -> Self {
        Self {
            ack_deadline,
            redispatch_window,
            subscribers: BTreeMap::new(),
            next_id: 1,
            last_served: 0,
            waiting: VecDeque::new(),
            leases: HashMap::new(),
            tally: Tally::default(),
        }
    }

    /// Adds a subscriber with `credit` (its maximum too); its events go to `events`.
    pub fn subscribe(
        &mut self,
        credit: u32,
        events: mpsc::UnboundedSender<FeedEvent>,
    ) -> SubscriberId {
        let id = self.next_id;
        self.next_id += 1;
        self.subscribers.insert(
            id,
            Subscriber {
                credit,
                max: credit,
                events,
                delivered: HashMap::new(),
            },
        );
        id
    }

    /// Removes a subscriber; the jobs it was leased and had not taken wait for another one.
    /// (Jobs whose acknowledgement went upstream are not delivered again.)
    pub fn unsubscribe(&mut self, id: SubscriberId) {
        self.subscribers.remove(&id);
        let ended: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.holder == id)
            .map(|(job_id, _)| job_id.clone())
            .collect();
        for job_id in ended {
            let lease = self.leases.remove(&job_id).expect("listed above");
            if let LeaseState::Leased { .. } = lease.state {
                self.wait_again(lease);
            }
        }
    }

    /// Whether any subscriber is left.
    pub fn has_subscribers(&self) -> bool {
        !self.subscribers.is_empty()
    }

    /// How many subscribers there are.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// The credit all subscribers hold together, less what the waiting jobs will use: how many
    /// jobs a poll may usefully ask for.
    pub fn room(&self) -> u32 {
        let credit: u32 = self.subscribers.values().map(|s| s.credit).sum();
        credit.saturating_sub(self.waiting.len() as u32)
    }

    /// The credit subscribers hold.
    pub fn credit(&self) -> u32 {
        self.subscribers.values().map(|s| s.credit).sum()
    }

    /// Gives subscriber `id` room for `jobs` more.
    pub fn grant(&mut self, id: SubscriberId, jobs: u32) -> Result<(), CreditRefusal> {
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return Ok(());
        };
        if subscriber.credit + jobs > subscriber.max {
            return Err(CreditRefusal::OverMaximum {
                held: subscriber.credit,
                max: subscriber.max,
            });
        }
        subscriber.credit += jobs;
        Ok(())
    }

    /// Jobs a poll returned at `polled_at`, to be delivered.
    pub fn offer(&mut self, jobs: Vec<Job>, polled_at: Instant) {
        for job in jobs {
            if self.leases.remove(&job.id).is_some() {
                // CodePipeline handed it out again: the nonce we held is stale.
                self.tally.lost.push(Lost::Replaced);
            }
            if let Some(at) = self.waiting.iter().position(|w| w.job.id == job.id) {
                self.waiting.remove(at);
                self.tally.lost.push(Lost::Replaced);
            }
            self.waiting.push_back(Waiting {
                job,
                polled_at,
                previous_holder: None,
            });
        }
    }

    /// Delivers waiting jobs to subscribers with credit, fairly, each leased until the ack
    /// deadline.
    pub fn deliver(&mut self, now: Instant) {
        while let Some(waiting) = self.waiting.pop_front() {
            let Some(id) = self.next_with_credit(waiting.previous_holder) else {
                self.waiting.push_front(waiting);
                return;
            };
            let subscriber = self.subscribers.get_mut(&id).expect("chosen above");
            if subscriber
                .events
                .send(FeedEvent::Job(Box::new(waiting.job.clone())))
                .is_err()
            {
                // Its stream is gone; it unsubscribes when its handler ends.
                subscriber.credit = 0;
                self.waiting.push_front(waiting);
                continue;
            }
            subscriber.credit -= 1;
            subscriber.delivered.insert(waiting.job.id.clone(), now);
            self.last_served = id;
            match waiting.previous_holder {
                None => self
                    .tally
                    .delivered
                    .push(now.saturating_duration_since(waiting.polled_at)),
                Some(_) => self.tally.redelivered += 1,
            }
            self.leases.insert(
                waiting.job.id.clone(),
                Lease {
                    job: waiting.job,
                    holder: id,
                    polled_at: waiting.polled_at,
                    state: LeaseState::Leased {
                        until: now + self.ack_deadline,
                    },
                },
            );
        }
    }

    /// The next subscriber after the last one served that has credit, other than `avoid` when
    /// another has credit too.
    fn next_with_credit(&self, avoid: Option<SubscriberId>) -> Option<SubscriberId> {
        let after = self.subscribers.range(self.last_served + 1..);
        let before = self.subscribers.range(..=self.last_served);
        let mut with_credit = after
            .chain(before)
            .filter(|(_, subscriber)| subscriber.credit > 0)
            .map(|(id, _)| *id);
        let first = with_credit.next()?;
        if Some(first) != avoid {
            return Some(first);
        }
        Some(with_credit.next().unwrap_or(first))
    }

    /// Ends leases past their deadline (their jobs wait again) and drops jobs past the
    /// redispatch window.
    pub fn expire(&mut self, now: Instant) {
        let window = self.redispatch_window;
        let stale = |polled_at: Instant| now.saturating_duration_since(polled_at) >= window;
        let before = self.waiting.len();
        self.waiting.retain(|waiting| !stale(waiting.polled_at));
        for _ in self.waiting.len()..before {
            self.tally.lost.push(Lost::Stale);
        }
        let ended: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, lease)| {
                stale(lease.polled_at)
                    || matches!(lease.state, LeaseState::Leased { until } if until <= now)
            })
            .map(|(job_id, _)| job_id.clone())
            .collect();
        for job_id in ended {
            let lease = self.leases.remove(&job_id).expect("listed above");
            if stale(lease.polled_at) {
                self.tally.lost.push(Lost::Stale);
            } else {
                self.wait_again(lease);
            }
        }
        for subscriber in self.subscribers.values_mut() {
            subscriber
                .delivered
                .retain(|_, at| now.saturating_duration_since(*at) < window * 2);
        }
    }

    fn wait_again(&mut self, lease: Lease) {
        self.waiting.push_front(Waiting {
            job: lease.job,
            polled_at: lease.polled_at,
            previous_holder: Some(lease.holder),
        });
    }

    /// When the next lease ends or a job goes stale, if anything is leased or waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        let window = self.redispatch_window;
        let leases = self.leases.values().flat_map(|lease| {
            let stale = lease.polled_at + window;
            match lease.state {
                LeaseState::Leased { until } => [Some(until), Some(stale)],
                LeaseState::Taking | LeaseState::Held => [None, Some(stale)],
            }
        });
        let waiting = self.waiting.iter().map(|w| Some(w.polled_at + window));
        leases.chain(waiting).flatten().min()
    }

    /// Subscriber `id` takes `job_id`: its acknowledgement goes upstream with the returned job's
    /// nonce, and the job is never delivered elsewhere from now on.
    pub fn take(&mut self, id: SubscriberId, job_id: &str) -> Result<String, TakeRefusal> {
        match self.leases.get_mut(job_id) {
            Some(lease) if lease.holder == id => match lease.state {
                LeaseState::Leased { .. } | LeaseState::Held => {
                    lease.state = LeaseState::Taking;
                    Ok(lease.job.nonce.clone())
                }
                LeaseState::Taking => Err(TakeRefusal::InProgress),
            },
            _ => {
                let delivered_here = self
                    .subscribers
                    .get(&id)
                    .is_some_and(|s| s.delivered.contains_key(job_id));
                Err(if delivered_here {
                    TakeRefusal::LeaseEnded
                } else {
                    TakeRefusal::NotDelivered
                })
            }
        }
    }

    /// How the acknowledgement of a job subscriber `id` took ended.
    pub fn acknowledged(
        &mut self,
        id: SubscriberId,
        job_id: &str,
        outcome: AckOutcome,
        now: Instant,
    ) {
        let Some(lease) = self
            .leases
            .get_mut(job_id)
            .filter(|lease| lease.holder == id)
        else {
            return;
        };
        match outcome {
            AckOutcome::Accepted => {
                self.leases.remove(job_id);
                self.tally.acknowledged += 1;
                if let Some(subscriber) = self.subscribers.get_mut(&id) {
                    subscriber.delivered.remove(job_id);
                }
            }
            AckOutcome::Refused => {
                self.leases.remove(job_id);
                self.tally.lost.push(Lost::Refused);
            }
            AckOutcome::NotSent => {
                lease.state = LeaseState::Leased {
                    until: now + self.ack_deadline,
                }
            }
            AckOutcome::Indeterminate => lease.state = LeaseState::Held,
        }
    }

    /// A job was acknowledged outside the feed (a unary AcknowledgeJob with the nonce it was
    /// delivered with): whoever holds it here, it is taken, and is never delivered again.
    pub fn taken_elsewhere(&mut self, job_id: &str) {
        self.leases.remove(job_id);
        self.waiting.retain(|waiting| waiting.job.id != job_id);
    }

    /// Ends every subscriber's stream with `status`; every job still here is dropped.
    pub fn end(&mut self, status: &Status) {
        for subscriber in self.subscribers.values() {
            let _ = subscriber.events.send(FeedEvent::Ended(status.clone()));
        }
        let dropped = self.waiting.len() + self.leases.len();
        self.waiting.clear();
        self.leases.clear();
        self.tally
            .lost
            .extend(std::iter::repeat_n(Lost::FeedEnded, dropped));
    }

    /// What happened since the last call, for the metrics.
    pub fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobData;

    const ACK: Duration = Duration::from_secs(10);
    const WINDOW: Duration = Duration::from_secs(25);

    fn job(id: &str) -> Job {
        Job {
            id: id.to_owned(),
            data: JobData::default(),
            nonce: format!("nonce-{id}"),
            account_id: "123456789012".to_owned(),
        }
    }

    fn subscriber(
        feed: &mut FeedState,
        credit: u32,
    ) -> (SubscriberId, mpsc::UnboundedReceiver<FeedEvent>) {
        let (events, received) = mpsc::unbounded_channel();
        (feed.subscribe(credit, events), received)
    }

    fn received(events: &mut mpsc::UnboundedReceiver<FeedEvent>) -> Vec<String> {
        let mut ids = Vec::new();
        while let Ok(FeedEvent::Job(job)) = events.try_recv() {
            ids.push(job.id);
        }
        ids
    }

    #[test]
    fn jobs_go_to_subscribers_with_credit_in_turn_and_never_beyond_it() {
        let now = Instant::now();
        let mut feed = FeedState::new(ACK, WINDOW);
        let (_a, mut a) = subscriber(&mut feed, 2);
        let (_b, mut b) = subscriber(&mut feed, 1);
        assert_eq!(feed.room(), 3);
        feed.offer((1..=5).map(|n| job(&n.to_string())).collect(), now);
        feed.deliver(now);
        assert_eq!(received(&mut a), ["1", "3"]);
        assert_eq!(received(&mut b), ["2"]);
        assert_eq!(feed.room(), 0, "two jobs wait for credit");
        assert_eq!(feed.credit(), 0);
        assert_eq!(feed.take_tally().delivered.len(), 3);
    }

    #[test]
    fn an_unacknowledged_lease_goes_to_another_subscriber_with_the_same_nonce() {
        let now = Instant::now();
        let mut feed = FeedState::new(ACK, WINDOW);
        let (a_id, mut a) = subscriber(&mut feed, 1);
        let (_b_id, mut b) = subscriber(&mut feed, 1);
        feed.offer(vec![job("j")], now);
        feed.deliver(now);
        assert_eq!(received(&mut a), ["j"]);
        feed.expire(now + ACK - Duration::from_millis(1));
        feed.deliver(now);
        assert!(received(&mut b).is_empty(), "not before the deadline");
        feed.expire(now + ACK);
        feed.deliver(now + ACK);
        let FeedEvent::Job(again) = b.try_recv().unwrap() else {
            panic!("a job")
        };
        assert_eq!((again.id.as_str(), again.nonce.as_str()), ("j", "nonce-j"));
        assert_eq!(feed.take(a_id, "j"), Err(TakeRefusal::LeaseEnded));
        assert_eq!(feed.take_tally().redelivered, 1);
    }

    #[test]
    fn a_leaving_subscriber_hands_its_untaken_jobs_to_the_others_but_not_taken_ones() {
        let now = Instant::now();
        let mut feed = FeedState::new(ACK, WINDOW);
        let (a_id, mut a) = subscriber(&mut feed, 2);
        feed.offer(vec![job("taken"), job("untaken")], now);
        feed.deliver(now);
        assert_eq!(received(&mut a).len(), 2);
        feed.take(a_id, "taken").unwrap();
        let (_b_id, mut b) = subscriber(&mut feed, 5);
        feed.unsubscribe(a_id);
        feed.deliver(now);
        assert_eq!(received(&mut b), ["untaken"]);
    }

    #[test]
    fn a_taken_job_is_never_delivered_again_whatever_its_acknowledgement_answers() {
        let now = Instant::now();
        let mut feed = FeedState::new(ACK, WINDOW);
        let (a_id, mut a) = subscriber(&mut feed, 1);
        let (_b_id, mut b) = subscriber(&mut feed, 1);
        feed.offer(vec![job("j")], now);
        feed.deliver(now);
        assert_eq!(received(&mut a), ["j"]);
        feed.take(a_id, "j").unwrap();
        assert_eq!(feed.take(a_id, "j"), Err(TakeRefusal::InProgress));
        feed.acknowledged(a_id, "j", AckOutcome::Indeterminate, now);
        feed.expire(now + ACK * 2);
        feed.deliver(now + ACK * 2);
        assert!(received(&mut b).is_empty());
        assert_eq!(
            feed.take(a_id, "j"),
            Ok("nonce-j".to_owned()),
            "a may try again"
        );
        feed.acknowledged(a_id, "j", AckOutcome::Accepted, now);
        assert_eq!(feed.next_deadline(), None, "nothing left");
    }

    #[test]
    fn an_acknowledgement_that_never_went_upstream_keeps_the_lease() {
        let now = Instant::now();
        let mut feed = FeedState::new(ACK, WINDOW);
        let (a_id, mut a) = subscriber(&mut feed, 1);
        feed.offer(vec![job("j")], now);
        feed.deliver(now);
        received(&mut a);
        feed.take(a_id, "j").unwrap();
        feed.acknowledged(a_id, "j", AckOutcome::NotSent, now);
        assert_eq!(feed.next_deadline(), Some(now + ACK));
        assert_eq!(feed.take(a_id, "j"), Ok("nonce-j".to_owned()));
    }

    #[test]
    fn jobs_past_the_redispatch_window_are_dropped() {
        let now = Instant::now();
        let mut feed = FeedState::new(Duration::from_secs(60), WINDOW);
        let (a_id, mut a) = subscriber(&mut feed, 1);
        feed.offer(vec![job("leased"), job("waiting")], now);
        feed.deliver(now);
        assert_eq!(received(&mut a), ["leased"]);
        assert_eq!(feed.next_deadline(), Some(now + WINDOW));
        feed.expire(now + WINDOW);
        assert_eq!(feed.take_tally().lost, [Lost::Stale, Lost::Stale]);
        assert_eq!(
            feed.credit(),
            0,
            "credit comes back only when the worker grants it"
        );
        assert_eq!(feed.take(a_id, "leased"), Err(TakeRefusal::LeaseEnded));
        assert_eq!(feed.take(a_id, "never"), Err(TakeRefusal::NotDelivered));
    }

    #[test]
    fn credit_never_exceeds_the_subscriptions_maximum() {
        let mut feed = FeedState::new(ACK, WINDOW);
        let (a_id, _a) = subscriber(&mut feed, 3);
        assert_eq!(
            feed.grant(a_id, 1),
            Err(CreditRefusal::OverMaximum { held: 3, max: 3 })
        );
        feed.offer(vec![job("1")], Instant::now());
        feed.deliver(Instant::now());
        feed.grant(a_id, 1).unwrap();
        assert_eq!(feed.credit(), 3);
    }

    #[test]
    fn a_job_acknowledged_outside_the_feed_is_never_delivered_again() {
        let now = Instant::now();
        let mut feed = FeedState::new(ACK, WINDOW);
        let (a_id, mut a) = subscriber(&mut feed, 1);
        let (_b_id, mut b) = subscriber(&mut feed, 1);
        feed.offer(vec![job("j")], now);
        feed.deliver(now);
        assert_eq!(received(&mut a), ["j"]);
        feed.taken_elsewhere("j");
        feed.unsubscribe(a_id);
        feed.expire(now + ACK);
        feed.deliver(now + ACK);
        assert!(received(&mut b).is_empty());
    }

    #[test]
    fn a_job_polled_again_replaces_the_stale_lease() {
        let now = Instant::now();
        let mut feed = FeedState::new(ACK, WINDOW);
        let (a_id, mut a) = subscriber(&mut feed, 2);
        feed.offer(vec![job("j")], now);
        feed.deliver(now);
        received(&mut a);
        let mut renewed = job("j");
        renewed.nonce = "fresh".to_owned();
        feed.offer(vec![renewed], now);
        feed.deliver(now);
        let FeedEvent::Job(job) = a.try_recv().unwrap() else {
            panic!("a job")
        };
        assert_eq!(job.nonce, "fresh");
        assert_eq!(feed.take(a_id, "j"), Ok("fresh".to_owned()));
        assert_eq!(feed.take_tally().lost, [Lost::Replaced]);
    }
}
