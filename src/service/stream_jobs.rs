//! StreamJobs: a worker's stream on a job feed. The first message subscribes; then the gateway
//! sends delivered jobs (never more than the stream's credit) and the worker sends credit and
//! acknowledgements, each answered on the stream. The stream ends when the worker closes it,
//! breaks its protocol (a precise status, no upstream call), the feed fails for good (an unknown
//! action type), or the gateway drains (UNAVAILABLE with RetryInfo). Acknowledgements already on
//! their way upstream are always answered before the stream's final status.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Instant,
};

use futures_util::Stream;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::StatusExt;
use tracing::Instrument;

use super::{Called, JobWorker};
use crate::{
    api::{Method, Refusal, StreamViolation, status},
    auth::{Caller, Credentials},
    domain::{AcknowledgeJobInput, ActionTypeId, JobId, JobStatus, SubscribeInput, validate},
    feed::{
        AckOutcome, CreditRefusal, FeedEvent, SubscribeRefusal, Subscriber, Subscription,
        TakeRefusal,
    },
    limits::{ClientConcurrency, concurrency::InFlight},
    middleware::{connection::ConnectionInfo, deadline::CallDeadline},
    observability::audit::RequestId,
    pb::jobworker::{
        self as pb, stream_jobs_request::Request as Inbound,
        stream_jobs_response::Response as Outbound,
    },
    upstream::Operation,
};

/// What a stream sends: jobs, acknowledgement answers, and finally its status.
pub type Responses = Pin<Box<dyn Stream<Item = Result<pb::StreamJobsResponse, Status>> + Send>>;

/// Messages queued for a worker beyond what it reads at once: its credit bounds the jobs, and
/// each acknowledgement has one answer.
const OUTBOUND_QUEUE: usize = 256;

/// How many job streams may be open: over the gateway and per client. Streams are long-lived, so
/// they are not counted as calls in flight; this is their own limit.
pub struct StreamLimits {
    gateway: Arc<Semaphore>,
    gateway_limit: u32,
    per_client: ClientConcurrency,
}

/// A stream's places under [`StreamLimits`], given back when the stream ends.
struct StreamPlaces {
    _gateway: OwnedSemaphorePermit,
    _client: InFlight,
}

impl StreamLimits {
    /// At most `gateway` streams in all and `per_client` per client.
    pub fn new(gateway: u32, per_client: ClientConcurrency) -> Self {
        Self {
            gateway: Arc::new(Semaphore::new(gateway as usize)),
            gateway_limit: gateway,
            per_client,
        }
    }

    fn enter(&self, client_id: &Arc<str>) -> Result<StreamPlaces, Status> {
        let gateway =
            self.gateway
                .clone()
                .try_acquire_owned()
                .map_err(|_| Refusal::StreamLimit {
                    client_id: None,
                    limit: self.gateway_limit,
                })?;
        let client = self
            .per_client
            .enter(client_id)
            .map_err(|_| Refusal::StreamLimit {
                client_id: Some(client_id.to_string()),
                limit: self.per_client.limit(),
            })?;
        Ok(StreamPlaces {
            _gateway: gateway,
            _client: client,
        })
    }
}

/// Opens a stream: waits for its subscription, checks it and the stream limits, subscribes, and
/// serves the stream in a task of its own.
pub(super) async fn open(
    worker: &JobWorker,
    request: Request<Streaming<pb::StreamJobsRequest>>,
) -> Result<Response<Responses>, Status> {
    let caller = super::caller_of(&request);
    let request_id = request.extensions().get::<RequestId>().cloned();
    let credentials = request.extensions().get::<Credentials>().cloned();
    let job_streams_end_at = ConnectionInfo::in_extensions(request.extensions())
        .map(|connection| connection.job_streams_end_at);
    let mut inbound = request.into_inner();
    let subscription = tokio::time::timeout(worker.default_deadline, inbound.message())
        .await
        .map_err(|_| Refusal::Stream(StreamViolation::SubscriptionTimeout))??;
    let subscription = match subscription.and_then(|message| message.request) {
        Some(Inbound::Subscription(subscription)) => subscription,
        _ => return Err(Refusal::Stream(StreamViolation::NoSubscription).into()),
    };
    let input = SubscribeInput::try_from(subscription).map_err(status::invalid_request)?;
    worker.may_work(&caller, &input.action_type_id)?;
    if let Some(credentials) = &credentials {
        credentials.authorize_also(Method::Upstream(Operation::AcknowledgeJob))?;
    }
    let places = worker.streams.enter(&caller.id)?;
    let (outbound, responses) = mpsc::channel(OUTBOUND_QUEUE);
    let session = Session {
        worker: worker.clone(),
        caller,
        action_type: input.action_type_id.clone(),
        request_id,
        credentials,
        outbound,
        acknowledgements: JoinSet::new(),
        accepted: Arc::default(),
    };
    let subscription = worker
        .feeds
        .subscribe(
            input,
            &Subscriber {
                id: session.caller.id.clone(),
                rate: session.caller.rate,
            },
        )
        .map_err(|refusal| {
            Status::from(match refusal {
                SubscribeRefusal::Draining => Refusal::Draining,
                SubscribeRefusal::ProcessFeedLimit(limit) => Refusal::FeedLimit {
                    client_id: None,
                    limit,
                },
                SubscribeRefusal::ClientFeedLimit(limit) => Refusal::FeedLimit {
                    client_id: Some(session.caller.id.to_string()),
                    limit,
                },
            })
        })?;
    // The session runs in the call's span, so its acknowledgements are children of the
    // StreamJobs span, and the span lasts as long as the stream.
    tokio::spawn(
        session
            .run(subscription, inbound, places, job_streams_end_at)
            .instrument(tracing::Span::current()),
    );
    Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
}

/// One open stream.
struct Session {
    worker: JobWorker,
    /// Who the stream's credentials name, as of the last check: its rate and scope are the ones
    /// in force.
    caller: Caller,
    /// The action type the stream subscribed to, checked again against the caller's scope.
    action_type: ActionTypeId,
    /// The StreamJobs call's request id, for the audit trail of its acknowledgements.
    request_id: Option<RequestId>,
    /// The credentials the stream opened with, checked again as the token file changes and
    /// before each job is delivered or acknowledged; `None` on an open gateway.
    credentials: Option<Credentials>,
    outbound: mpsc::Sender<Result<pb::StreamJobsResponse, Status>>,
    /// Acknowledgements on their way upstream.
    acknowledgements: JoinSet<()>,
    /// The jobs this stream acknowledged, so a repeated acknowledgement is answered again.
    accepted: Arc<Mutex<RecentlyAccepted>>,
}

/// The most acknowledged jobs a stream remembers for repeated acknowledgements: far more than
/// its credit lets it hold at once.
const REMEMBERED_ACKNOWLEDGEMENTS: usize = 1024;

/// The answers of a stream's last accepted acknowledgements.
#[derive(Default)]
struct RecentlyAccepted {
    status: HashMap<JobId, JobStatus>,
    order: VecDeque<JobId>,
}

impl RecentlyAccepted {
    fn remember(&mut self, job_id: &JobId, status: JobStatus) {
        if self.status.insert(job_id.clone(), status).is_none() {
            self.order.push_back(job_id.clone());
        }
        while self.order.len() > REMEMBERED_ACKNOWLEDGEMENTS {
            if let Some(oldest) = self.order.pop_front() {
                self.status.remove(&oldest);
            }
        }
    }
}

impl Session {
    async fn run(
        mut self,
        mut subscription: Subscription,
        mut inbound: Streaming<pb::StreamJobsRequest>,
        _places: StreamPlaces,
        job_streams_end_at: Option<Instant>,
    ) {
        // When its connection is about to close, the stream ends with a status of its own
        // first: cut with the connection, the worker would learn nothing, and the answers of
        // its acknowledgements would be lost.
        let connection_aged = async {
            match job_streams_end_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(connection_aged);
        let mut token_file_reloads = self
            .credentials
            .as_ref()
            .and_then(Credentials::token_file_reloads);
        let ended = loop {
            tokio::select! {
                biased;
                () = self.worker.draining.cancelled() => break Some(Refusal::Draining.into()),
                () = &mut connection_aged => break Some(Refusal::ConnectionAged.into()),
                () = reloaded(&mut token_file_reloads) => {
                    if let Err(status) = self.still_authorized() {
                        break Some(status);
                    }
                }
                Some(_) = self.acknowledgements.join_next(), if !self.acknowledgements.is_empty() => {}
                event = subscription.next() => match event {
                    Some(FeedEvent::Job(mut job)) => {
                        // Not delivered to credentials no longer valid: it goes back to the
                        // feed when the stream leaves it.
                        if let Err(status) = self.still_authorized() {
                            break Some(status);
                        }
                        self.worker.job_owners.learn(&self.action_type, [job.id.as_str()]);
                        super::scope::without_artifact_credentials(&self.caller, &mut job.data);
                        let delivered = pb::StreamJobsResponse {
                            response: Some(Outbound::Job((*job).into())),
                        };
                        if self.outbound.send(Ok(delivered)).await.is_err() {
                            break None;
                        }
                    }
                    Some(FeedEvent::Ended(status)) => break Some(status),
                    None => break None,
                },
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Err(status) = self.handle(&subscription, message) {
                            break Some(status);
                        }
                    }
                    // The worker closed its side, or went away: the stream is over.
                    Ok(None) | Err(_) => break None,
                },
            }
        };
        // Leaving the feed at once hands the untaken jobs to other subscribers.
        drop(subscription);
        // An acknowledgement sent upstream may have taken effect: its answer comes first (each
        // is bounded by its deadline, and a draining process by its shutdown timeout).
        while self.acknowledgements.join_next().await.is_some() {}
        if let Some(status) = ended {
            let _ = self.outbound.send(Err(status)).await;
        }
    }

    /// Checks the stream's credentials again, taking up the caller's rate as it is now; `Err`
    /// ends the stream with the refusal a new call would get. A stream acknowledges its jobs,
    /// so its client must be allowed AcknowledgeJob too, as a unary acknowledgement would be.
    fn still_authorized(&mut self) -> Result<(), Status> {
        let Some(credentials) = &self.credentials else {
            return Ok(());
        };
        let caller = credentials.authorize()?;
        credentials.authorize_also(Method::Upstream(Operation::AcknowledgeJob))?;
        if caller.id != self.caller.id {
            // The token now names another client: the stream's feed place and limits are the
            // old client's, so the token is not valid for this stream any more.
            return Err(Refusal::UnknownToken.into());
        }
        // A reload that narrows the client's action types ends its streams outside them.
        self.worker.may_work(&caller, &self.action_type)?;
        self.caller = caller;
        Ok(())
    }

    /// One message from the worker; `Err` ends the stream with that status.
    fn handle(
        &mut self,
        subscription: &Subscription,
        message: pb::StreamJobsRequest,
    ) -> Result<(), Status> {
        match message.request {
            None => Err(Refusal::Stream(StreamViolation::EmptyMessage).into()),
            Some(Inbound::Subscription(_)) => {
                Err(Refusal::Stream(StreamViolation::SecondSubscription).into())
            }
            Some(Inbound::Credit(credit)) => {
                let jobs = validate::credit(&credit).map_err(status::invalid_request)?;
                subscription.grant(jobs).map_err(|refusal| match refusal {
                    CreditRefusal::OverMaximum { held, max } => {
                        Refusal::Stream(StreamViolation::CreditOverMaximum {
                            held,
                            asked: jobs,
                            max,
                        })
                        .into()
                    }
                })
            }
            Some(Inbound::Acknowledge(acknowledge)) => {
                self.still_authorized()?;
                self.acknowledge(subscription, acknowledge)
            }
        }
    }

    /// Takes a delivered job and sends its acknowledgement upstream in a task of its own, so a
    /// slow upstream does not hold the stream's other messages.
    fn acknowledge(
        &mut self,
        subscription: &Subscription,
        acknowledge: pb::StreamJobsAcknowledge,
    ) -> Result<(), Status> {
        let job_id = validate::job_id(&acknowledge.job_id).map_err(|invalid| {
            let mut invalid = invalid;
            for violation in &mut invalid.violations {
                violation.field = format!("acknowledge.{}", violation.field);
            }
            status::invalid_request(invalid)
        })?;
        let again = self
            .accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .status
            .get(&job_id)
            .copied();
        if let Some(status) = again {
            // Acknowledged on this stream already: the same answer, no upstream call.
            let _ = self
                .outbound
                .try_send(Ok(accepted(job_id.as_str(), status)));
            return Ok(());
        }
        let answer = match subscription.take(&job_id) {
            Ok((nonce, acknowledger)) => {
                let worker = self.worker.clone();
                let called = Called {
                    caller: self.caller.clone(),
                    request_id: self.request_id.clone(),
                };
                let outbound = self.outbound.clone();
                let accepted = self.accepted.clone();
                self.acknowledgements.spawn(
                    async move {
                        let job = job_id.clone();
                        let (outcome, answer, status) =
                            send_upstream(&worker, &called, job_id, nonce).await;
                        if let Some(status) = status {
                            accepted
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remember(&job, status);
                        }
                        // Whether the answer reached the stream decides whether the job is its
                        // holder's for sure, or held for the client to claim back.
                        let announced = outbound.send(Ok(answer)).await.is_ok();
                        acknowledger.acknowledged(outcome, announced);
                    }
                    .instrument(tracing::Span::current()),
                );
                return Ok(());
            }
            Err(TakeRefusal::NotDelivered) => {
                return Err(Refusal::Stream(StreamViolation::NotDelivered {
                    job_id: job_id.to_string(),
                })
                .into());
            }
            Err(TakeRefusal::LeaseEnded) => Refusal::LeaseEnded {
                job_id: job_id.to_string(),
            },
            Err(TakeRefusal::InProgress) => Refusal::AcknowledgementInProgress {
                job_id: job_id.to_string(),
            },
            Err(TakeRefusal::ClaimPending) => Refusal::ClaimPending {
                job_id: job_id.to_string(),
            },
        };
        let answer = refused(job_id.as_str(), &answer.into());
        // A full queue means the worker is not reading; its stream is its own problem.
        let _ = self.outbound.try_send(Ok(answer));
        Ok(())
    }
}

/// Resolves when the token file was reloaded; never, without one.
async fn reloaded(reloads: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(receiver) = reloads
        && receiver.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// AcknowledgeJob upstream for a job taken on a stream, within the client's rate and the
/// upstream budget: how it ended for the feed, the answer for the stream, and the job's status
/// when it was accepted.
async fn send_upstream(
    worker: &JobWorker,
    called: &Called,
    job_id: JobId,
    nonce: String,
) -> (AckOutcome, pb::StreamJobsResponse, Option<JobStatus>) {
    let caller = &called.caller;
    let job = job_id.to_string();
    if let Err(limited) = worker.client_limits.check(&caller.id, caller.rate).await {
        return (AckOutcome::NotSent, refused(&job, &limited), None);
    }
    let Ok(nonce) = crate::domain::Nonce::parse(&nonce) else {
        // The nonce came from CodePipeline; one the model does not allow cannot be sent.
        let status = Refusal::LeaseEnded {
            job_id: job.clone(),
        }
        .into();
        return (AckOutcome::Refused, refused(&job, &status), None);
    };
    let deadline = CallDeadline(std::time::Instant::now() + worker.default_deadline);
    let input = AcknowledgeJobInput { job_id, nonce };
    let result = worker.forward(input, Some(deadline)).await;
    worker.audit(
        called,
        Method::Upstream(Operation::AcknowledgeJob),
        &job,
        &result,
    );
    let outcome = ack_outcome(&result);
    match result {
        Ok(status) => (outcome, accepted(&job, status), Some(status)),
        Err(failure) => (outcome, refused(&job, &failure), None),
    }
}

/// What a finished acknowledgement means for the job's place in a feed.
fn ack_outcome<T>(result: &Result<T, Status>) -> AckOutcome {
    let Err(failure) = result else {
        return AckOutcome::Accepted;
    };
    let indeterminate = failure.get_details_error_info().is_some_and(|info| {
        info.metadata
            .get("indeterminate")
            .is_some_and(|v| v == "true")
    });
    match failure.code() {
        _ if indeterminate => AckOutcome::Indeterminate,
        // A limit refused it, or CodePipeline throttled it before doing anything.
        Code::ResourceExhausted | Code::Unavailable => AckOutcome::NotSent,
        _ => AckOutcome::Refused,
    }
}

fn accepted(job_id: &str, status: JobStatus) -> pb::StreamJobsResponse {
    pb::StreamJobsResponse {
        response: Some(Outbound::Acknowledged(pb::StreamJobsAcknowledged {
            job_id: job_id.to_owned(),
            status: status.to_pb().into(),
            error: None,
        })),
    }
}

fn refused(job_id: &str, failure: &Status) -> pb::StreamJobsResponse {
    pb::StreamJobsResponse {
        response: Some(Outbound::Acknowledged(pb::StreamJobsAcknowledged {
            job_id: job_id.to_owned(),
            status: pb::JobStatus::Unspecified.into(),
            error: Some(status::rpc_status(failure)),
        })),
    }
}

/// Keeps the compiler honest about the stream answer queue's size against the credit bound.
const _: () = assert!(OUTBOUND_QUEUE as u32 > 2 * validate::MAX_OUTSTANDING_JOBS);
