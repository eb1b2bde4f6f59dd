//! The feed's state machine against a model of CodePipeline and of well-behaved workers, driven
//! by random interleavings of every event: streams opening and closing (cleanly or cut), credit,
//! polls and re-dispatches, deliveries and expiries, acknowledgements on streams and unary, and
//! their answers arriving accepted, refused, lost (indeterminate) or never sent.
//!
//! After every step:
//! - no job is held (told "accepted, InProgress") by two workers;
//! - a job the upstream accepted is held by a worker, or the feed still holds it (a worker
//!   can claim it, or it will be delivered again), or its acknowledgement is still on its way;
//! - a job handed to the feed whose nonce is still current is still in the feed with that nonce;
//! - no subscriber holds more credit than its maximum.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::ControlFlow,
};

use proptest::prelude::*;

use super::*;

const ACK: Duration = Duration::from_millis(100);
const WORKERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Create,
    Open {
        worker: usize,
        credit: u32,
    },
    Close {
        worker: usize,
        clean: bool,
    },
    Grant {
        worker: usize,
    },
    Poll {
        max: u32,
        redispatch: bool,
    },
    RedispatchElsewhere {
        job: usize,
    },
    Tick {
        ms: u64,
    },
    Ack {
        worker: usize,
        pick: usize,
    },
    Resolve {
        pick: usize,
        fault: Fault,
    },
    Unary {
        worker: usize,
        pick: usize,
        fault: Fault,
    },
    Finish {
        worker: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// Applied upstream, answer lost.
    Lost,
    /// Refused before it reached the upstream (throttled, rate-limited).
    NotSent,
}

fn op() -> impl Strategy<Value = Op> {
    let worker = 0..WORKERS;
    let fault = prop_oneof![
        4 => Just(Fault::None),
        2 => Just(Fault::Lost),
        1 => Just(Fault::NotSent),
    ];
    prop_oneof![
        2 => Just(Op::Create),
        2 => (worker.clone(), 1..4u32).prop_map(|(worker, credit)| Op::Open { worker, credit }),
        1 => (worker.clone(), any::<bool>()).prop_map(|(worker, clean)| Op::Close { worker, clean }),
        2 => worker.clone().prop_map(|worker| Op::Grant { worker }),
        3 => (1..4u32, any::<bool>()).prop_map(|(max, redispatch)| Op::Poll { max, redispatch }),
        1 => (0..8usize).prop_map(|job| Op::RedispatchElsewhere { job }),
        3 => (0..150u64).prop_map(|ms| Op::Tick { ms }),
        4 => (worker.clone(), 0..8usize).prop_map(|(worker, pick)| Op::Ack { worker, pick }),
        4 => (0..8usize, fault.clone()).prop_map(|(pick, fault)| Op::Resolve { pick, fault }),
        1 => (worker.clone(), 0..8usize, fault).prop_map(|(worker, pick, fault)| Op::Unary { worker, pick, fault }),
        1 => worker.prop_map(|worker| Op::Finish { worker }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpState {
    Queued,
    Dispatched,
    InProgress,
    Done,
}

#[derive(Debug)]
struct UpJob {
    state: UpState,
    nonce: u64,
    /// The nonce last handed to the feed, if the feed polled it.
    fed: Option<u64>,
}

#[derive(Debug, Default)]
struct Worker {
    stream: Option<(SubscriberId, mpsc::UnboundedReceiver<FeedEvent>)>,
    /// Jobs received and not settled, with the nonce they came with.
    received: BTreeMap<JobId, String>,
    /// Jobs whose acknowledgement's answer it did not get, to acknowledge again.
    pending: BTreeMap<JobId, String>,
    /// Jobs it was told are its own, InProgress.
    holding: HashSet<JobId>,
}

#[derive(Debug)]
struct InFlight {
    worker: usize,
    stream: SubscriberId,
    job: JobId,
    nonce: String,
    generation: Generation,
}

struct World {
    now: Instant,
    feed: FeedState,
    upstream: Vec<UpJob>,
    workers: Vec<Worker>,
    in_flight: Vec<InFlight>,
    /// Streams that ended, and whether cleanly (answers still reached their worker).
    closed: HashMap<SubscriberId, bool>,
    next_nonce: u64,
    /// What happened, for the failure message.
    log: Vec<String>,
}

fn team() -> Arc<str> {
    Arc::from("team")
}

enum Answer {
    Accepted(UpState),
    Refused,
    NotSent,
}

impl World {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            now,
            feed: FeedState::new(ACK, now),
            upstream: Vec::new(),
            workers: (0..WORKERS).map(|_| Worker::default()).collect(),
            in_flight: Vec::new(),
            closed: HashMap::new(),
            next_nonce: 1,
            log: Vec::new(),
        }
    }

    fn job_id(index: usize) -> JobId {
        crate::feed::job_id_named(&format!("job-{index}"))
    }

    fn index_of(job: &JobId) -> usize {
        let name = crate::feed::name_of_job(job);
        name["job-".len()..].parse().unwrap()
    }

    fn nonce(&mut self) -> u64 {
        self.next_nonce += 1;
        self.next_nonce
    }

    /// CodePipeline's AcknowledgeJob.
    fn upstream_acknowledge(&mut self, job: &JobId, nonce: &str, fault: Fault) -> Answer {
        if let Fault::NotSent = fault {
            return Answer::NotSent;
        }
        let index = Self::index_of(job);
        let up = &mut self.upstream[index];
        if up.nonce.to_string() != nonce {
            return Answer::Refused;
        }
        if up.state == UpState::Dispatched {
            up.state = UpState::InProgress;
        }
        Answer::Accepted(up.state)
    }

    fn receive(&mut self) {
        for (index, worker) in self.workers.iter_mut().enumerate() {
            if let Some((_, events)) = &mut worker.stream {
                while let Ok(event) = events.try_recv() {
                    if let FeedEvent::Job(job) = event {
                        self.log.push(format!(
                            "  w{index} receives {} nonce {}",
                            job.id, job.nonce
                        ));
                        worker.received.insert(job.id.clone(), job.nonce.clone());
                        worker.pending.remove(&job.id);
                    }
                }
            }
        }
    }

    fn step(&mut self, op: Op) {
        self.log.push(format!("{op:?}"));
        match op {
            Op::Create => self.upstream.push(UpJob {
                state: UpState::Queued,
                nonce: 0,
                fed: None,
            }),
            Op::Open { worker, credit } => {
                if self.workers[worker].stream.is_none() {
                    let (events, received) = mpsc::unbounded_channel();
                    let id = self.feed.subscribe(team(), credit, events);
                    self.workers[worker].stream = Some((id, received));
                }
            }
            Op::Close { worker, clean } => {
                if let Some((id, _)) = self.workers[worker].stream.take() {
                    self.feed.unsubscribe(id, self.now);
                    self.closed.insert(id, clean);
                    // Leased jobs are gone from this worker; what it acknowledged without an
                    // answer it will acknowledge again on its next stream.
                    let worker = &mut self.workers[worker];
                    worker.received.clear();
                }
            }
            Op::Grant { worker } => {
                if let Some((id, _)) = &self.workers[worker].stream {
                    let _ = self.feed.grant(*id, 1);
                }
            }
            Op::Poll { max, redispatch } => self.poll(max, redispatch),
            Op::RedispatchElsewhere { job } => {
                if job < self.upstream.len() && self.upstream[job].state == UpState::Dispatched {
                    let nonce = self.nonce();
                    self.upstream[job].nonce = nonce;
                }
            }
            Op::Tick { ms } => {
                self.now += Duration::from_millis(ms);
                self.feed.expire(self.now);
                self.feed.deliver(self.now);
            }
            Op::Ack { worker, pick } => {
                if self.acknowledge_on_stream(worker, pick).is_break() {
                    return;
                }
            }
            Op::Resolve { pick, fault } => {
                if self.resolve(pick, fault).is_break() {
                    return;
                }
            }
            Op::Unary {
                worker,
                pick,
                fault,
            } => {
                if self.unary_acknowledge(worker, pick, fault).is_break() {
                    return;
                }
            }
            Op::Finish { worker } => {
                let held = self.workers[worker].holding.iter().next().cloned();
                if let Some(job) = held {
                    self.workers[worker].holding.remove(&job);
                    self.upstream[Self::index_of(&job)].state = UpState::Done;
                }
            }
        }
        self.receive();
    }

    /// A poll of up to `max` jobs (the room the feed has, at most), Dispatched ones among them
    /// when `redispatch`: each handed to the feed with a fresh nonce, and delivered.
    fn poll(&mut self, max: u32, redispatch: bool) {
        let room = self.feed.room().min(max) as usize;
        let mut handed = Vec::new();
        for index in 0..self.upstream.len() {
            if handed.len() >= room {
                break;
            }
            let eligible = match self.upstream[index].state {
                UpState::Queued => true,
                UpState::Dispatched => redispatch,
                _ => false,
            };
            if eligible {
                let nonce = self.nonce();
                let up = &mut self.upstream[index];
                up.state = UpState::Dispatched;
                up.nonce = nonce;
                up.fed = Some(nonce);
                handed.push(Job {
                    id: Self::job_id(index),
                    ..with_nonce("", &nonce.to_string())
                });
            }
        }
        self.feed.offer(handed, self.now);
        self.feed.deliver(self.now);
    }

    /// `worker` acknowledges, on its stream, one of the jobs it received or still has to claim.
    /// `Break` when the step ends there, the streams left unread until the next one.
    fn acknowledge_on_stream(&mut self, worker: usize, pick: usize) -> ControlFlow<()> {
        let Some((stream, _)) = &self.workers[worker].stream else {
            return ControlFlow::Break(());
        };
        let stream = *stream;
        let w = &self.workers[worker];
        let candidates: Vec<JobId> = w.received.keys().chain(w.pending.keys()).cloned().collect();
        let Some(job) = candidates.get(pick % candidates.len().max(1)).cloned() else {
            return ControlFlow::Break(());
        };
        let taken = self.feed.take(stream, &job);
        self.log.push(format!(
            "  w{worker} (stream {stream}) takes {job}: {taken:?}"
        ));
        match taken {
            Ok((nonce, generation)) => self.in_flight.push(InFlight {
                worker,
                stream,
                job,
                nonce,
                generation,
            }),
            Err(TakeRefusal::LeaseEnded) => {
                let w = &mut self.workers[worker];
                w.received.remove(&job);
                w.pending.remove(&job);
            }
            Err(TakeRefusal::InProgress | TakeRefusal::ClaimPending) => {}
            Err(TakeRefusal::NotDelivered) => {
                panic!("a well-behaved worker's acknowledgement of {job} was a violation")
            }
        }
        ControlFlow::Continue(())
    }

    /// The answer to one acknowledgement on a stream reaches the feed (and, if announced, the
    /// worker).
    /// `Break` when the step ends there, the streams left unread until the next one.
    fn resolve(&mut self, pick: usize, fault: Fault) -> ControlFlow<()> {
        if self.in_flight.is_empty() {
            return ControlFlow::Break(());
        }
        let ack = self.in_flight.remove(pick % self.in_flight.len());
        let answer = self.upstream_acknowledge(&ack.job, &ack.nonce, fault);
        let open = self.workers[ack.worker]
            .stream
            .as_ref()
            .is_some_and(|(id, _)| *id == ack.stream);
        let announced = open || self.closed.get(&ack.stream).copied().unwrap_or(false);
        let outcome = match (&answer, fault) {
            (Answer::NotSent, _) => AckOutcome::NotSent,
            (_, Fault::Lost) => AckOutcome::Indeterminate,
            (Answer::Accepted(_), _) => AckOutcome::Accepted,
            (Answer::Refused, _) => AckOutcome::Refused,
        };
        self.log.push(format!(
            "  w{} (stream {}) {} gen {}: {outcome:?}, announced {announced}",
            ack.worker, ack.stream, ack.job, ack.generation
        ));
        self.feed
            .acknowledged(&ack.job, ack.generation, outcome, announced, self.now);
        let worker = &mut self.workers[ack.worker];
        if !announced {
            // No answer came: as good as indeterminate, to the worker.
            worker.received.remove(&ack.job);
            worker.pending.insert(ack.job, ack.nonce);
            return ControlFlow::Break(());
        }
        match outcome {
            AckOutcome::Accepted => {
                worker.received.remove(&ack.job);
                worker.pending.remove(&ack.job);
                if matches!(answer, Answer::Accepted(UpState::InProgress)) {
                    worker.holding.insert(ack.job);
                }
            }
            AckOutcome::Refused => {
                worker.received.remove(&ack.job);
                worker.pending.remove(&ack.job);
            }
            AckOutcome::NotSent => {}
            AckOutcome::Indeterminate => {
                worker.received.remove(&ack.job);
                worker.pending.insert(ack.job, ack.nonce);
            }
        }
        ControlFlow::Continue(())
    }

    /// `worker` acknowledges one of its jobs by a unary call, unless a stream holds it.
    /// `Break` when the step ends there, the streams left unread until the next one.
    fn unary_acknowledge(&mut self, worker: usize, pick: usize, fault: Fault) -> ControlFlow<()> {
        let w = &self.workers[worker];
        let candidates: Vec<(JobId, String)> = w
            .received
            .iter()
            .chain(w.pending.iter())
            .map(|(j, n)| (j.clone(), n.clone()))
            .collect();
        let Some((job, nonce)) = candidates.get(pick % candidates.len().max(1)).cloned() else {
            return ControlFlow::Break(());
        };
        let refused = self.feed.holds_for_a_stream(&job, &nonce);
        self.log.push(format!(
            "  w{worker} unary {job} nonce {nonce}: refused {refused}, {fault:?}"
        ));
        if refused {
            let w = &mut self.workers[worker];
            w.received.remove(&job);
            w.pending.remove(&job);
            return ControlFlow::Break(());
        }
        let answer = self.upstream_acknowledge(&job, &nonce, fault);
        let w = &mut self.workers[worker];
        match (answer, fault) {
            (Answer::NotSent, _) => {}
            (_, Fault::Lost) => {
                w.received.remove(&job);
                w.pending.insert(job, nonce);
            }
            (Answer::Accepted(state), _) => {
                w.received.remove(&job);
                w.pending.remove(&job);
                if state == UpState::InProgress {
                    w.holding.insert(job.clone());
                }
                self.feed.acknowledged_elsewhere(&job);
            }
            (Answer::Refused, _) => {
                w.received.remove(&job);
                w.pending.remove(&job);
            }
        }
        ControlFlow::Continue(())
    }

    fn check(&self) {
        for index in 0..self.upstream.len() {
            let job = Self::job_id(index);
            let holders: Vec<usize> = (0..WORKERS)
                .filter(|w| self.workers[*w].holding.contains(&job))
                .collect();
            assert!(holders.len() <= 1, "{job} is held by workers {holders:?}");
            let up = &self.upstream[index];
            let in_feed = self.feed.entries.get(&job);
            let in_flight = self.in_flight.iter().any(|ack| ack.job == job);
            if up.state == UpState::InProgress && holders.is_empty() {
                assert!(
                    in_feed.is_some() || in_flight,
                    "{job} was accepted upstream but nobody holds it, and the feed forgot it"
                );
            }
            if up.state == UpState::Dispatched && up.fed == Some(up.nonce) {
                assert_eq!(
                    in_feed.map(|entry| entry.job.nonce.clone()),
                    Some(up.nonce.to_string()),
                    "{job}'s current nonce was handed to the feed, which lost it"
                );
            }
        }
        for subscriber in self.feed.subscribers.values() {
            assert!(subscriber.credit <= subscriber.max);
        }
        let waiting: HashSet<&JobId> = self.feed.waiting.iter().collect();
        assert_eq!(waiting.len(), self.feed.waiting.len(), "a job waits twice");
        for (job, entry) in &self.feed.entries {
            assert_eq!(
                matches!(entry.state, EntryState::Waiting { .. }),
                waiting.contains(job),
                "{job}'s waiting queue place agrees with its state"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_interleaving_gives_a_job_two_holders_or_loses_an_accepted_one(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let mut world = World::new();
        for op in ops {
            world.step(op);
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.check()));
            if let Err(panic) = checked {
                eprintln!("{}", world.log.join("\n"));
                std::panic::resume_unwind(panic);
            }
        }
    }
}
