//! One feed's bookkeeping, with no I/O: its subscribers and their credit, and an entry for each
//! job it polled, until the job is known to be someone's or gone. The poller drives it; the tests
//! drive it by hand.
//!
//! A job's entry moves through these states:
//!
//! ```text
//!  offer ─> Waiting ──deliver──> Leased ──take──> Taking ──Accepted──────────> (gone: the holder's)
//!              ^                   │                 │  ──Refused───────────> (gone: not ours)
//!              │     ack deadline, │                 │  ──NotSent───────────> Leased again
//!              ├──── stream ends ──┘                 │  ──Indeterminate─────> Held ──take──> Taking
//!              │                                     │
//!              └──── a departed holder's claim ends ─┘ (Held and Away, one ack deadline on)
//! ```
//!
//! The rules:
//!
//! - Credit comes back only when the worker grants it: the gateway cannot know when a worker is
//!   done with a job. A subscriber never holds more credit than its maximum.
//! - A lease not taken by its deadline, or whose stream ends first, puts the job back to wait for
//!   another subscriber, with the same nonce.
//! - A job whose acknowledgement is on its way (Taking) or came back indeterminate (Held) belongs
//!   to its holder until the outcome is known; no clock takes it away. If the holder's stream
//!   ends, the holder is *away*: its client may claim the job back from another stream by
//!   acknowledging it again (the same nonce goes upstream, which is safe: CodePipeline answers
//!   InProgress or InvalidNonce). An answer that reached nobody because its stream was gone
//!   leaves the job held the same way. Only once a held job's claim has been unclaimed for one
//!   ack deadline is it delivered to another subscriber, whose acknowledgement settles it.
//! - A job leaves the feed when the upstream says so, never on a clock alone: an acknowledgement
//!   accepted or refused (InvalidNonce, JobNotFound), or a later poll returning the job with a new
//!   nonce (the one held is stale).
//! - Each entry has a generation; an acknowledgement's outcome names the generation it was taken
//!   in, and the outcome of an older one (a job re-dispatched meanwhile) changes nothing.
//! - A job the feed polled is acknowledged on a stream only: a unary AcknowledgeJob with the
//!   nonce of a copy the feed holds, or of one a stream was told is its own, is refused (the
//!   upstream would accept the same nonce again, and two workers would run the job).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tonic::Status;

use crate::domain::{Job, JobId};

/// A subscriber's number within its feed.
pub type SubscriberId = u64;

/// An entry's generation: a new one for every copy of a job a poll returned.
pub type Generation = u64;

/// What a subscriber's stream receives from the feed.
#[derive(Debug)]
pub enum FeedEvent {
    /// A delivered job, leased to the subscriber (boxed: jobs are large, and most events are).
    Job(Box<Job>),
    /// The feed ended (its action type is unknown, say): the stream ends with this status.
    Ended(Status),
}

/// Why a job left the feed without being acknowledged through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lost {
    /// Its acknowledgement was refused upstream (another worker holds it, or it is gone).
    Refused,
    /// A later poll returned it with a new nonce.
    Replaced,
    /// The feed ended with the job still in it.
    FeedEnded,
    /// The feed had no subscriber for one ack deadline and retired with the job waiting: it is
    /// left to CodePipeline's re-dispatch.
    Abandoned,
}

/// What happened to the jobs, for the feed's metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// First deliveries, with how long each waited since its poll was sent.
    pub delivered: Vec<Duration>,
    /// Deliveries of a job that was leased or held before.
    pub redelivered: usize,
    /// Jobs acknowledged upstream.
    pub acknowledged: usize,
    /// The copies (job id, nonce) a stream was told are its own.
    pub handed_to_streams: Vec<(JobId, String)>,
    /// Jobs that left unacknowledged, by reason.
    pub lost: Vec<Lost>,
}

/// Why a subscriber cannot take a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeRefusal {
    /// The feed does not know the job: it was never delivered here.
    NotDelivered,
    /// The job is not this subscriber's (its lease ended, another holds it, or it is gone):
    /// drop it.
    LeaseEnded,
    /// This subscriber's acknowledgement of it is already on its way.
    InProgress,
    /// An acknowledgement sent from the client's earlier stream is still on its way: ask again
    /// once it is answered.
    ClaimPending,
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
    /// It may or may not have taken effect: the holder keeps the job, and may acknowledge
    /// again, but it is never delivered elsewhere while the holder is there.
    Indeterminate,
}

/// Who holds an entry that is being or was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    /// A subscriber whose stream is open.
    Stream { id: SubscriberId, client: Arc<str> },
    /// A subscriber that left before its acknowledgement's answer reached it. Its client may
    /// claim the job back; a Held entry's claim lasts one ack deadline from `since`.
    Away { client: Arc<str>, since: Instant },
}

impl Holder {
    fn client(&self) -> &Arc<str> {
        match self {
            Self::Stream { client, .. } | Self::Away { client, .. } => client,
        }
    }

    fn is_stream(&self, subscriber: SubscriberId) -> bool {
        matches!(self, Self::Stream { id, .. } if *id == subscriber)
    }

    fn is_away_for(&self, client: &str) -> bool {
        matches!(self, Self::Away { client: c, .. } if &**c == client)
    }

    /// The same client, no longer on a stream, from `now`.
    fn away(&self, now: Instant) -> Self {
        Self::Away {
            client: self.client().clone(),
            since: now,
        }
    }
}

/// What the feed remembers of a job that left it.
#[derive(Debug)]
struct Ended {
    nonce: String,
    /// Whether a worker was told the job is its own through this feed.
    accepted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryState {
    /// Waiting for a subscriber with credit; not to `previous_holder` if another has credit.
    Waiting {
        previous_holder: Option<SubscriberId>,
    },
    /// Delivered, waiting for its holder's acknowledgement until `until`.
    Leased {
        holder: SubscriberId,
        until: Instant,
    },
    /// An acknowledgement is on its way upstream.
    Taking { holder: Holder },
    /// An acknowledgement went upstream with no known outcome, or its answer reached nobody.
    Held { holder: Holder },
}

#[derive(Debug)]
struct Entry {
    job: Job,
    generation: Generation,
    /// When the poll that returned this copy was sent.
    polled_at: Instant,
    /// Whether it was delivered before (a later delivery counts as a redelivery).
    delivered_before: bool,
    /// Whether an acknowledgement of this copy may have been accepted with nobody told.
    maybe_accepted: bool,
    state: EntryState,
}

#[derive(Debug)]
struct Subscriber {
    client: Arc<str>,
    credit: u32,
    max: u32,
    events: mpsc::UnboundedSender<FeedEvent>,
}

/// How many job ids that left the feed it remembers, so a late acknowledgement of one is told
/// to drop it rather than ending its stream as a protocol violation.
const REMEMBERED_ENDED: usize = 4096;

/// One feed's subscribers and job entries.
#[derive(Debug)]
pub struct FeedState {
    ack_deadline: Duration,
    subscribers: BTreeMap<SubscriberId, Subscriber>,
    next_subscriber: SubscriberId,
    next_generation: Generation,
    /// The subscriber after which the next delivery looks for credit, for fairness.
    last_served: SubscriberId,
    entries: HashMap<JobId, Entry>,
    /// The Waiting entries' job ids, oldest first.
    waiting: VecDeque<JobId>,
    /// Jobs that left the feed lately, oldest first: a late acknowledgement of one is refused
    /// as what it is (the job is gone, or someone else's), not taken for a protocol violation.
    ended: VecDeque<JobId>,
    ended_jobs: HashMap<JobId, Ended>,
    /// Since when the feed has had no subscriber.
    deserted_since: Option<Instant>,
    tally: Tally,
}

impl FeedState {
    /// A feed with no subscribers, leasing jobs for `ack_deadline`: also how long an away
    /// holder's claim lasts, and how long the feed outlives its last subscriber.
    pub fn new(ack_deadline: Duration, now: Instant) -> Self {
        Self {
            ack_deadline,
            subscribers: BTreeMap::new(),
            next_subscriber: 1,
            next_generation: 1,
            last_served: 0,
            entries: HashMap::new(),
            waiting: VecDeque::new(),
            ended: VecDeque::new(),
            ended_jobs: HashMap::new(),
            deserted_since: Some(now),
            tally: Tally::default(),
        }
    }

    /// Adds a subscriber of `client` with `credit` (its maximum too); its events go to `events`.
    pub fn subscribe(
        &mut self,
        client: Arc<str>,
        credit: u32,
        events: mpsc::UnboundedSender<FeedEvent>,
    ) -> SubscriberId {
        let id = self.next_subscriber;
        self.next_subscriber += 1;
        self.subscribers.insert(
            id,
            Subscriber {
                client,
                credit,
                max: credit,
                events,
            },
        );
        self.deserted_since = None;
        id
    }

    /// Removes a subscriber: the jobs leased to it wait for another one; those it was taking or
    /// held stay its client's, away.
    pub fn unsubscribe(&mut self, id: SubscriberId, now: Instant) {
        if self.subscribers.remove(&id).is_none() {
            return;
        }
        if self.subscribers.is_empty() {
            self.deserted_since = Some(now);
        }
        let mut handed_on = Vec::new();
        for (job_id, entry) in &mut self.entries {
            match &mut entry.state {
                EntryState::Leased { holder, .. } if *holder == id => {
                    entry.state = EntryState::Waiting {
                        previous_holder: Some(id),
                    };
                    handed_on.push(job_id.clone());
                }
                EntryState::Taking { holder } | EntryState::Held { holder }
                    if holder.is_stream(id) =>
                {
                    *holder = holder.away(now);
                }
                _ => {}
            }
        }
        // Handed on first, ahead of jobs that never left.
        for job_id in handed_on {
            self.waiting.push_front(job_id);
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

    /// Whether the feed may end now: no subscriber for one ack deadline, and no acknowledgement
    /// on its way.
    pub fn retirable(&self, now: Instant) -> bool {
        self.deserted_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.ack_deadline)
            && !self
                .entries
                .values()
                .any(|entry| matches!(entry.state, EntryState::Taking { .. }))
    }

    /// The credit all subscribers hold together, less what the waiting jobs will use: how many
    /// jobs a poll may usefully ask for.
    pub fn room(&self) -> u32 {
        self.credit().saturating_sub(self.waiting.len() as u32)
    }

    /// The subscribers holding credit: the ones a poll is for.
    pub fn with_credit(&self) -> impl Iterator<Item = SubscriberId> + '_ {
        self.subscribers
            .iter()
            .filter(|(_, subscriber)| subscriber.credit > 0)
            .map(|(id, _)| *id)
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
        if subscriber.credit.saturating_add(jobs) > subscriber.max {
            return Err(CreditRefusal::OverMaximum {
                held: subscriber.credit,
                max: subscriber.max,
            });
        }
        subscriber.credit += jobs;
        Ok(())
    }

    /// Jobs a poll sent at `polled_at` returned, to be delivered. A copy with a new nonce
    /// replaces the one held, whatever its state: the upstream handed the job out again, so the
    /// old nonce can no longer be acknowledged.
    pub fn offer(&mut self, jobs: Vec<Job>, polled_at: Instant) {
        for job in jobs {
            if let Some(entry) = self.entries.get(&job.id) {
                if entry.job.nonce == job.nonce {
                    continue;
                }
                self.remove(&job.id.clone(), Some(Lost::Replaced));
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            self.ended_jobs.remove(&job.id);
            self.waiting.push_back(job.id.clone());
            self.entries.insert(
                job.id.clone(),
                Entry {
                    job,
                    generation,
                    polled_at,
                    delivered_before: false,
                    maybe_accepted: false,
                    state: EntryState::Waiting {
                        previous_holder: None,
                    },
                },
            );
        }
    }

    /// Takes an entry out of the feed: acknowledged (`lost` is `None`), or lost and why.
    fn remove(&mut self, job_id: &JobId, lost: Option<Lost>) {
        let Some(entry) = self.entries.remove(job_id) else {
            return;
        };
        if matches!(entry.state, EntryState::Waiting { .. }) {
            self.waiting.retain(|waiting| waiting != job_id);
        }
        match lost {
            Some(lost) => self.tally.lost.push(lost),
            None => {
                self.tally.acknowledged += 1;
                self.tally
                    .handed_to_streams
                    .push((job_id.clone(), entry.job.nonce.clone()));
            }
        }
        let accepted = lost.is_none();
        let ended = Ended {
            nonce: entry.job.nonce,
            accepted,
        };
        if self.ended_jobs.insert(job_id.clone(), ended).is_none() {
            self.ended.push_back(job_id.clone());
        }
        while self.ended.len() > REMEMBERED_ENDED {
            if let Some(oldest) = self.ended.pop_front() {
                self.ended_jobs.remove(&oldest);
            }
        }
    }

    /// Delivers waiting jobs to subscribers with credit, fairly, each leased until the ack
    /// deadline.
    pub fn deliver(&mut self, now: Instant) {
        while let Some(job_id) = self.waiting.pop_front() {
            let Some(entry) = self.entries.get_mut(&job_id) else {
                continue;
            };
            let EntryState::Waiting { previous_holder } = entry.state else {
                continue;
            };
            let Some(id) = next_with_credit(&self.subscribers, self.last_served, previous_holder)
            else {
                self.waiting.push_front(job_id);
                return;
            };
            let subscriber = self.subscribers.get_mut(&id).expect("chosen above");
            if subscriber
                .events
                .send(FeedEvent::Job(Box::new(entry.job.clone())))
                .is_err()
            {
                // Its stream is gone; it unsubscribes when its handler ends.
                subscriber.credit = 0;
                self.waiting.push_front(job_id);
                continue;
            }
            subscriber.credit -= 1;
            self.last_served = id;
            if entry.delivered_before {
                self.tally.redelivered += 1;
            } else {
                self.tally
                    .delivered
                    .push(now.saturating_duration_since(entry.polled_at));
                entry.delivered_before = true;
            }
            entry.state = EntryState::Leased {
                holder: id,
                until: now + self.ack_deadline,
            };
        }
    }

    /// Ends leases past their deadline and away holders' claims past theirs: their jobs wait
    /// for another subscriber. Nothing else ends on a clock.
    pub fn expire(&mut self, now: Instant) {
        let claim = self.ack_deadline;
        let mut ended = Vec::new();
        for (job_id, entry) in &mut self.entries {
            let previous_holder = match &entry.state {
                EntryState::Leased { holder, until } if *until <= now => Some(*holder),
                EntryState::Held {
                    holder: Holder::Away { since, .. },
                } if now.saturating_duration_since(*since) >= claim => None,
                _ => continue,
            };
            entry.state = EntryState::Waiting { previous_holder };
            ended.push(job_id.clone());
        }
        for job_id in ended {
            self.waiting.push_front(job_id);
        }
    }

    /// When the next lease or claim ends, or the deserted feed may retire.
    pub fn next_deadline(&self) -> Option<Instant> {
        let claim = self.ack_deadline;
        let entries = self
            .entries
            .values()
            .filter_map(|entry| match &entry.state {
                EntryState::Leased { until, .. } => Some(*until),
                EntryState::Held {
                    holder: Holder::Away { since, .. },
                } => Some(*since + claim),
                _ => None,
            });
        let retires = self.deserted_since.map(|since| since + self.ack_deadline);
        entries.chain(retires).min()
    }

    /// Subscriber `id` takes `job_id`: its acknowledgement goes upstream with the returned nonce,
    /// and its outcome is told with the returned generation. A job held away for the
    /// subscriber's client is claimed back.
    pub fn take(
        &mut self,
        id: SubscriberId,
        job_id: &JobId,
    ) -> Result<(String, Generation), TakeRefusal> {
        let Some(entry) = self.entries.get_mut(job_id) else {
            return Err(if self.ended_jobs.contains_key(job_id) {
                TakeRefusal::LeaseEnded
            } else {
                TakeRefusal::NotDelivered
            });
        };
        let Some(client) = self.subscribers.get(&id).map(|s| s.client.clone()) else {
            return Err(TakeRefusal::LeaseEnded);
        };
        match &entry.state {
            EntryState::Leased { holder, .. } if *holder == id => {}
            EntryState::Held { holder } if holder.is_stream(id) || holder.is_away_for(&client) => {}
            EntryState::Taking { holder } if holder.is_stream(id) => {
                return Err(TakeRefusal::InProgress);
            }
            EntryState::Taking { holder } if holder.is_away_for(&client) => {
                return Err(TakeRefusal::ClaimPending);
            }
            _ => return Err(TakeRefusal::LeaseEnded),
        }
        entry.state = EntryState::Taking {
            holder: Holder::Stream { id, client },
        };
        Ok((entry.job.nonce.clone(), entry.generation))
    }

    /// Whether a unary AcknowledgeJob of `job_id` with `nonce` must be refused: the feed holds
    /// that copy of the job (the nonce was learnt from a stream), or a stream was told it is its
    /// own. Forwarded, it would be accepted again upstream, and two workers would run the job.
    pub fn holds_for_a_stream(&self, job_id: &JobId, nonce: &str) -> bool {
        self.entries
            .get(job_id)
            .is_some_and(|entry| entry.job.nonce == nonce)
            || self
                .ended_jobs
                .get(job_id)
                .is_some_and(|ended| ended.accepted && ended.nonce == nonce)
    }

    /// A unary AcknowledgeJob of `job_id` the feed had no say in was accepted upstream: a copy
    /// the feed holds with another nonce is stale, and is not delivered again.
    pub fn acknowledged_elsewhere(&mut self, job_id: &JobId) {
        if let Some(entry) = self.entries.get(job_id)
            && matches!(
                entry.state,
                EntryState::Waiting { .. } | EntryState::Leased { .. }
            )
        {
            self.remove(job_id, Some(Lost::Replaced));
        }
    }

    /// How the acknowledgement of `job_id` taken in `generation` ended; `announced`: whether
    /// its answer was handed to the one who asked (a stream that was already gone was not).
    pub fn acknowledged(
        &mut self,
        job_id: &JobId,
        generation: Generation,
        outcome: AckOutcome,
        announced: bool,
        now: Instant,
    ) {
        let Some(entry) = self
            .entries
            .get_mut(job_id)
            .filter(|entry| entry.generation == generation)
        else {
            return;
        };
        let EntryState::Taking { holder } = &entry.state else {
            return;
        };
        let holder = holder.clone();
        match outcome {
            AckOutcome::Accepted if announced => self.remove(job_id, None),
            AckOutcome::Refused => self.remove(job_id, Some(Lost::Refused)),
            AckOutcome::Accepted | AckOutcome::Indeterminate => {
                // The holder keeps it: on its stream if the answer reached it there, else away,
                // so that its client can claim it back.
                let on_stream = announced
                    && matches!(&holder, Holder::Stream { id, .. } if self.subscribers.contains_key(id));
                entry.maybe_accepted = true;
                entry.state = EntryState::Held {
                    holder: if on_stream { holder } else { holder.away(now) },
                };
            }
            AckOutcome::NotSent => match holder {
                Holder::Stream { id, .. } if self.subscribers.contains_key(&id) => {
                    entry.state = EntryState::Leased {
                        holder: id,
                        until: now + self.ack_deadline,
                    };
                }
                // Never sent, and nobody on a stream holds it: safe to deliver again.
                _ => {
                    entry.state = EntryState::Waiting {
                        previous_holder: None,
                    };
                    self.waiting.push_front(job_id.clone());
                }
            },
        }
    }

    /// Ends every subscriber's stream with `status`; every job still here is dropped.
    pub fn end(&mut self, status: &Status) {
        for subscriber in self.subscribers.values() {
            let _ = subscriber.events.send(FeedEvent::Ended(status.clone()));
        }
        let job_ids: Vec<JobId> = self.entries.keys().cloned().collect();
        for job_id in job_ids {
            self.remove(&job_id, Some(Lost::FeedEnded));
        }
    }

    /// The feed retires: the jobs still here are left to CodePipeline's re-dispatch. Returns
    /// the ids of those whose acknowledgement may have been accepted with nobody told.
    pub fn retire(&mut self) -> Vec<JobId> {
        let unknown: Vec<JobId> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.maybe_accepted)
            .map(|(job_id, _)| job_id.clone())
            .collect();
        let job_ids: Vec<JobId> = self.entries.keys().cloned().collect();
        for job_id in job_ids {
            self.remove(&job_id, Some(Lost::Abandoned));
        }
        unknown
    }

    /// What happened since the last call, for the metrics.
    pub fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }
}

/// The next subscriber after `last_served` that has credit, other than `avoid` when another has
/// credit too.
fn next_with_credit(
    subscribers: &BTreeMap<SubscriberId, Subscriber>,
    last_served: SubscriberId,
    avoid: Option<SubscriberId>,
) -> Option<SubscriberId> {
    let after = subscribers.range(last_served + 1..);
    let before = subscribers.range(..=last_served);
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

#[cfg(test)]
mod tests;
