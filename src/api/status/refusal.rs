//! The refusals: what the gateway decided itself, before any upstream call (who is calling, its
//! limits, job streams, artifacts), and the status each is answered with.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{GATEWAY_DOMAIN, UPSTREAM_RETRY_AFTER};
use crate::api::Method;

/// A call the gateway itself refused, before any upstream call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token and no client certificate, where one is required.
    MissingCredentials,
    /// An `authorization` header that is not `Bearer <token>`.
    MalformedAuthorization,
    /// A bearer token that matches no client.
    UnknownToken,
    /// A verified client certificate whose SAN the token file does not list as a certificate
    /// client.
    UnknownCertificate {
        /// The certificate's first SAN.
        client_id: String,
    },
    /// A known client reaching outside its scope: an action type, a job of another action
    /// type (or one that does not exist: the answer is the same), or a partner connection.
    NotInScope {
        /// The client.
        client_id: String,
        /// What it reached for.
        reached: Reached,
    },
    /// A known client calling a method it is not allowed.
    MethodNotAllowed {
        /// The client.
        client_id: String,
        /// The method.
        method: Method,
    },
    /// A rate limit was hit.
    RateLimited {
        /// Whose limit: the caller's own rate, or the account's budget for an operation.
        scope: LimitScope,
        /// What is limited: `client:<id>` or `operation:<Operation>`.
        subject: String,
        /// When the next call would be let through.
        retry_after: Duration,
    },
    /// The gateway is handling as many calls as it may.
    Overloaded,
    /// The client has as many calls in flight as it may.
    ClientConcurrencyLimit {
        /// The client.
        client_id: String,
        /// Its limit.
        limit: u32,
    },
    /// The call's deadline passed before it was answered (its request never arrived whole, say).
    DeadlineExceeded,
    /// A StreamJobs stream broke the stream's protocol; the stream ends.
    Stream(StreamViolation),
    /// A job delivered on a StreamJobs stream can no longer be acknowledged there: its lease
    /// ended (it went to another subscriber, or was handed out again). Answered on the stream.
    LeaseEnded {
        /// The job.
        job_id: String,
    },
    /// An acknowledgement of this job is already on its way. Answered on the stream.
    AcknowledgementInProgress {
        /// The job.
        job_id: String,
    },
    /// An acknowledgement of this job sent on the client's earlier stream is still on its way:
    /// its answer decides whose the job is. Answered on the stream.
    ClaimPending {
        /// The job.
        job_id: String,
    },
    /// A unary AcknowledgeJob of a job a job stream of this gateway holds: refused, so that
    /// two workers never run one job.
    HeldByStream {
        /// The job.
        job_id: String,
    },
    /// As many job streams are open as the gateway, or this client, may have.
    StreamLimit {
        /// The client, when it is the client's own limit.
        client_id: Option<String>,
        /// The limit.
        limit: u32,
    },
    /// A subscription would start a feed beyond the process's, or this client's, feed limit.
    FeedLimit {
        /// The client, when it is the client's own limit.
        client_id: Option<String>,
        /// The limit.
        limit: usize,
    },
    /// An artifact transfer would hold more memory than its client's share, or the process's
    /// budget, allows.
    ArtifactMemory {
        /// The client, when it is the client's own share.
        client_id: Option<String>,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The gateway is shutting down: reconnect (to another replica).
    Draining,
    /// A stream's connection reached its maximum age, and the connection is about to close:
    /// open the stream again (the client makes a new connection).
    ConnectionAged,
    /// The shared rate limits cannot be reached and the gateway fails closed.
    LimitsUnavailable,
    /// A request message is over the size limit.
    MessageTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A third-party call carries no client token and the gateway holds none for it.
    NoClientToken {
        /// The job.
        job_id: String,
        /// Why none was found, and what the worker can do.
        reason: String,
    },
    /// The job's data names no such artifact.
    NoSuchArtifact {
        /// The job.
        job_id: String,
        /// The artifact asked for.
        name: String,
        /// `input` or `output`.
        direction: &'static str,
    },
    /// The job's data carries no artifact credentials, or no S3 location for the artifact.
    NoArtifactAccess {
        /// The job.
        job_id: String,
    },
    /// An artifact stream broke its protocol: no header first, a second header, an empty message.
    ArtifactStream {
        /// What was wrong.
        problem: &'static str,
    },
    /// Handling the call panicked.
    Panicked,
}

/// What a client reached for outside its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reached {
    /// Polling, or subscribing to, an action type (the request's own).
    ActionType(String),
    /// A job: whether it exists, and its action type, are not told.
    Job(String),
    /// A partner connection's client token, by the client id the request names.
    Partner(String),
}

/// How a StreamJobs stream broke its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamViolation {
    /// The first message is not a subscription (or the stream closed before one).
    NoSubscription,
    /// No subscription arrived within the time allowed.
    SubscriptionTimeout,
    /// A second subscription on the same stream.
    SecondSubscription,
    /// A message with nothing set.
    EmptyMessage,
    /// Credit beyond the subscription's maximum.
    CreditOverMaximum {
        /// The credit the stream holds.
        held: u32,
        /// The credit asked for.
        asked: u32,
        /// The subscription's maximum.
        max: u32,
    },
    /// An acknowledgement of a job never delivered on this stream.
    NotDelivered {
        /// The job.
        job_id: String,
    },
}

/// Whose rate limit a call is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// The caller's own rate (the default, or its token file override).
    Client,
    /// The account-wide budget of an upstream operation.
    Upstream,
}

impl LimitScope {
    /// The word for it in messages and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
        }
    }
}

/// How long an overloaded gateway suggests waiting before a retry.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_millis(100);
/// How long a client at its stream limit should wait before opening another.
const STREAM_LIMIT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How soon to claim a job again whose first acknowledgement is still on its way: about one
/// upstream round trip.
const CLAIM_RETRY_AFTER: Duration = Duration::from_millis(200);

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        let mut details = ErrorDetails::new();
        let (code, message) = answer(refusal, &mut details);
        Status::with_error_details(code, message, details)
    }
}

/// The code and message a refusal is answered with; its details go into `details`.
fn answer(refusal: Refusal, details: &mut ErrorDetails) -> (Code, String) {
    match refusal {
        Refusal::MissingCredentials => unauthenticated(
            details,
            "MISSING_CREDENTIALS",
            "this call needs an `authorization: Bearer <token>` header or a client certificate",
        ),
        Refusal::MalformedAuthorization => unauthenticated(
            details,
            "MALFORMED_AUTHORIZATION",
            "the authorization header must be `Bearer <token>`",
        ),
        Refusal::UnknownToken => {
            unauthenticated(details, "UNKNOWN_TOKEN", "the bearer token is not valid")
        }
        Refusal::UnknownCertificate { client_id } => unauthenticated(
            details,
            "UNKNOWN_CERTIFICATE",
            &format!(
                "the client certificate names {client_id}, which the token file does not list as a certificate client"
            ),
        ),
        Refusal::NotInScope { client_id, reached } => not_in_scope(details, &client_id, reached),
        Refusal::MethodNotAllowed { client_id, method } => {
            method_not_allowed(details, &client_id, method)
        }
        Refusal::RateLimited {
            scope,
            subject,
            retry_after,
        } => rate_limited(details, scope, subject, retry_after),
        Refusal::Overloaded => retry_elsewhere(
            details,
            "OVERLOADED",
            OVERLOADED_RETRY_AFTER,
            "the gateway is at its concurrency limit; retry, possibly on another replica",
        ),
        Refusal::ClientConcurrencyLimit { client_id, limit } => {
            client_concurrency_limit(details, &client_id, limit)
        }
        Refusal::DeadlineExceeded => deadline_exceeded(details),
        Refusal::Stream(violation) => stream_violation(violation, details),
        Refusal::LeaseEnded { job_id } => lease_ended(details, &job_id),
        Refusal::AcknowledgementInProgress { job_id } => {
            acknowledgement_in_progress(details, &job_id)
        }
        Refusal::ClaimPending { job_id } => claim_pending(details, &job_id),
        Refusal::HeldByStream { job_id } => held_by_stream(details, &job_id),
        Refusal::StreamLimit { client_id, limit } => {
            stream_limit(details, client_id.as_deref(), limit)
        }
        Refusal::FeedLimit { client_id, limit } => feed_limit(details, client_id.as_deref(), limit),
        Refusal::ArtifactMemory { client_id, limit } => {
            artifact_memory(details, client_id.as_deref(), limit)
        }
        Refusal::Draining => retry_elsewhere(
            details,
            "DRAINING",
            OVERLOADED_RETRY_AFTER,
            "the gateway is shutting down; open the stream again (on another replica)",
        ),
        Refusal::ConnectionAged => retry_elsewhere(
            details,
            "CONNECTION_AGED",
            Duration::ZERO,
            "the connection reached its maximum age and closes; open the stream again",
        ),
        Refusal::LimitsUnavailable => retry_elsewhere(
            details,
            "RATE_LIMITS_UNAVAILABLE",
            UPSTREAM_RETRY_AFTER,
            "the shared rate limits cannot be reached and this gateway fails closed; retry later",
        ),
        Refusal::MessageTooLarge { limit } => message_too_large(details, limit),
        Refusal::NoClientToken { job_id, reason } => no_client_token(details, &job_id, reason),
        Refusal::NoSuchArtifact {
            job_id,
            name,
            direction,
        } => no_such_artifact(details, &job_id, &name, direction),
        Refusal::NoArtifactAccess { job_id } => no_artifact_access(details, &job_id),
        Refusal::ArtifactStream { problem } => artifact_stream(details, problem),
        Refusal::Panicked => (Code::Internal, "unexpected error".to_owned()),
    }
}

/// ErrorInfo with the gateway's `reason` and nothing else.
fn error_info(details: &mut ErrorDetails, reason: &str) {
    details.set_error_info(reason, GATEWAY_DOMAIN, HashMap::new());
}

// Who is calling, and may they call this.

fn unauthenticated(details: &mut ErrorDetails, why: &str, message: &str) -> (Code, String) {
    error_info(details, why);
    (Code::Unauthenticated, message.to_owned())
}

fn method_not_allowed(
    details: &mut ErrorDetails,
    client_id: &str,
    method: Method,
) -> (Code, String) {
    let metadata = HashMap::from([
        ("client_id".to_owned(), client_id.to_owned()),
        (
            "method".to_owned(),
            format!("{}/{}", method.service(), method.name()),
        ),
    ]);
    details.set_error_info("METHOD_NOT_ALLOWED", GATEWAY_DOMAIN, metadata);
    (
        Code::PermissionDenied,
        format!("client {client_id} may not call {}", method.name()),
    )
}

fn not_in_scope(details: &mut ErrorDetails, client_id: &str, reached: Reached) -> (Code, String) {
    let (reason, key, value, what) = match reached {
        Reached::ActionType(action_type) => (
            "ACTION_TYPE_NOT_ALLOWED",
            "action_type",
            action_type.clone(),
            format!("action type {action_type}"),
        ),
        Reached::Job(job_id) => (
            "ACTION_TYPE_NOT_ALLOWED",
            "job_id",
            job_id.clone(),
            format!(
                "job {job_id} (it is not of an action type the client may work, or does not exist)"
            ),
        ),
        Reached::Partner(partner) => (
            "PARTNER_NOT_ALLOWED",
            "partner_client_id",
            partner.clone(),
            format!("partner connection {partner}"),
        ),
    };
    let metadata = HashMap::from([
        ("client_id".to_owned(), client_id.to_owned()),
        (key.to_owned(), value),
    ]);
    details.set_error_info(reason, GATEWAY_DOMAIN, metadata);
    (
        Code::PermissionDenied,
        format!("client {client_id} may not work {what}"),
    )
}

// The gateway's limits and its state.

fn rate_limited(
    details: &mut ErrorDetails,
    scope: LimitScope,
    subject: String,
    retry_after: Duration,
) -> (Code, String) {
    details.set_retry_info(Some(retry_after));
    details.add_quota_failure_violation(
        subject.clone(),
        format!(
            "over the {} rate limit; retry after {} ms",
            scope.as_str(),
            retry_after.as_millis()
        ),
    );
    (
        Code::ResourceExhausted,
        format!(
            "rate limit reached for {subject}; retry after {} ms",
            retry_after.as_millis()
        ),
    )
}

/// UNAVAILABLE for a while: the gateway cannot take the call now, another replica (or this one,
/// `retry_after` later) may.
fn retry_elsewhere(
    details: &mut ErrorDetails,
    why: &str,
    retry_after: Duration,
    message: &str,
) -> (Code, String) {
    error_info(details, why);
    details.set_retry_info(Some(retry_after));
    (Code::Unavailable, message.to_owned())
}

fn client_concurrency_limit(
    details: &mut ErrorDetails,
    client_id: &str,
    limit: u32,
) -> (Code, String) {
    details.set_retry_info(Some(OVERLOADED_RETRY_AFTER));
    details.add_quota_failure_violation(
        format!("client:{client_id}"),
        format!("{limit} calls in flight at once"),
    );
    (
        Code::ResourceExhausted,
        format!(
            "client {client_id} has {limit} calls in flight, as many as it may; retry when one ends"
        ),
    )
}

fn deadline_exceeded(details: &mut ErrorDetails) -> (Code, String) {
    error_info(details, "DEADLINE_EXCEEDED");
    (
        Code::DeadlineExceeded,
        "the call's deadline passed before it could be answered".to_owned(),
    )
}

fn message_too_large(details: &mut ErrorDetails, limit: usize) -> (Code, String) {
    error_info(details, "MESSAGE_TOO_LARGE");
    (
        Code::ResourceExhausted,
        format!("the request message is larger than the limit of {limit} bytes"),
    )
}

fn stream_limit(details: &mut ErrorDetails, client_id: Option<&str>, limit: u32) -> (Code, String) {
    details.set_retry_info(Some(STREAM_LIMIT_RETRY_AFTER));
    let subject = client_id.map_or_else(|| "gateway".to_owned(), |id| format!("client:{id}"));
    details.add_quota_failure_violation(subject.clone(), format!("{limit} job streams at once"));
    (
        Code::ResourceExhausted,
        format!("{subject} has {limit} job streams open, as many as it may"),
    )
}

fn feed_limit(details: &mut ErrorDetails, client_id: Option<&str>, limit: usize) -> (Code, String) {
    details.set_retry_info(Some(STREAM_LIMIT_RETRY_AFTER));
    let subject = client_id.map_or_else(|| "gateway".to_owned(), |id| format!("client:{id}"));
    details.add_quota_failure_violation(
        subject.clone(),
        format!("{limit} job feeds (action type and query param pairs) at once"),
    );
    (
        Code::ResourceExhausted,
        format!(
            "{subject} has {limit} job feeds open, as many as it may; subscribe to one already open \
             (another query param makes another feed)"
        ),
    )
}

fn artifact_memory(
    details: &mut ErrorDetails,
    client_id: Option<&str>,
    limit: usize,
) -> (Code, String) {
    details.set_retry_info(Some(STREAM_LIMIT_RETRY_AFTER));
    let subject = client_id.map_or_else(|| "gateway".to_owned(), |id| format!("client:{id}"));
    details.add_quota_failure_violation(
        subject.clone(),
        format!("{} MiB of artifact transfer buffers at once", limit >> 20),
    );
    (
        Code::ResourceExhausted,
        format!(
            "{subject}'s artifact transfers hold all the memory they may ({} MiB); retry when one ends",
            limit >> 20
        ),
    )
}

// The jobs of job streams.

fn lease_ended(details: &mut ErrorDetails, job_id: &str) -> (Code, String) {
    error_info(details, "LEASE_ENDED");
    details.set_resource_info("codepipeline.job", job_id, "", "");
    (
        Code::Aborted,
        format!(
            "job {job_id} is no longer leased to this stream (not acknowledged in time, or \
             handed out again); drop it and give its credit back"
        ),
    )
}

fn acknowledgement_in_progress(details: &mut ErrorDetails, job_id: &str) -> (Code, String) {
    error_info(details, "ACKNOWLEDGEMENT_IN_PROGRESS");
    (
        Code::FailedPrecondition,
        format!("job {job_id} is being acknowledged already; wait for that answer"),
    )
}

fn claim_pending(details: &mut ErrorDetails, job_id: &str) -> (Code, String) {
    error_info(details, "ACKNOWLEDGEMENT_PENDING");
    details.set_resource_info("codepipeline.job", job_id, "", "");
    details.set_retry_info(Some(CLAIM_RETRY_AFTER));
    (
        Code::Unavailable,
        format!(
            "an acknowledgement of job {job_id} sent on an earlier stream is still on its \
             way; acknowledge it again shortly"
        ),
    )
}

fn held_by_stream(details: &mut ErrorDetails, job_id: &str) -> (Code, String) {
    error_info(details, "JOB_HELD_BY_STREAM");
    details.set_resource_info("codepipeline.job", job_id, "", "");
    (
        Code::Aborted,
        format!(
            "job {job_id} was delivered on a job stream and is held there; acknowledge \
             streamed jobs on their stream. Drop it: another worker has it"
        ),
    )
}

fn stream_violation(violation: StreamViolation, details: &mut ErrorDetails) -> (Code, String) {
    let info = |details: &mut ErrorDetails, reason: &str, metadata: HashMap<String, String>| {
        details.set_error_info(reason, GATEWAY_DOMAIN, metadata);
    };
    match violation {
        StreamViolation::NoSubscription => {
            info(details, "SUBSCRIPTION_REQUIRED", HashMap::new());
            (
                Code::InvalidArgument,
                "the first message of a StreamJobs stream must be a subscription".to_owned(),
            )
        }
        StreamViolation::SubscriptionTimeout => {
            info(details, "SUBSCRIPTION_REQUIRED", HashMap::new());
            (
                Code::DeadlineExceeded,
                "no subscription arrived in time on the StreamJobs stream".to_owned(),
            )
        }
        StreamViolation::SecondSubscription => {
            info(details, "ALREADY_SUBSCRIBED", HashMap::new());
            (
                Code::FailedPrecondition,
                "this stream is subscribed already; open another stream for another feed"
                    .to_owned(),
            )
        }
        StreamViolation::EmptyMessage => {
            details.add_bad_request_violation(
                "request",
                "must set subscription, credit or acknowledge",
            );
            (
                Code::InvalidArgument,
                "a StreamJobs message must set subscription, credit or acknowledge".to_owned(),
            )
        }
        StreamViolation::CreditOverMaximum { held, asked, max } => {
            let metadata = HashMap::from([
                ("held".to_owned(), held.to_string()),
                ("asked".to_owned(), asked.to_string()),
                ("max_outstanding_jobs".to_owned(), max.to_string()),
            ]);
            info(details, "CREDIT_OVER_MAXIMUM", metadata);
            (
                Code::FailedPrecondition,
                format!(
                    "credit {asked} on top of {held} is over the subscription's max_outstanding_jobs of {max}"
                ),
            )
        }
        StreamViolation::NotDelivered { job_id } => {
            info(details, "JOB_NOT_DELIVERED", HashMap::new());
            details.set_resource_info("codepipeline.job", &job_id, "", "");
            (
                Code::FailedPrecondition,
                format!("job {job_id} was not delivered on this stream"),
            )
        }
    }
}

// Third-party jobs' client tokens and artifacts.

fn no_client_token(details: &mut ErrorDetails, job_id: &str, why: String) -> (Code, String) {
    error_info(details, "CLIENT_TOKEN_UNAVAILABLE");
    details.add_precondition_failure_violation(
        "CLIENT_TOKEN",
        format!("job:{job_id}"),
        why.clone(),
    );
    (Code::FailedPrecondition, why)
}

fn no_such_artifact(
    details: &mut ErrorDetails,
    job_id: &str,
    name: &str,
    direction: &str,
) -> (Code, String) {
    error_info(details, "NO_SUCH_ARTIFACT");
    details.set_resource_info(
        "codepipeline.artifact",
        name,
        job_id,
        format!("not an {direction} artifact of the job"),
    );
    (
        Code::NotFound,
        format!("job {job_id} has no {direction} artifact named {name}"),
    )
}

fn no_artifact_access(details: &mut ErrorDetails, job_id: &str) -> (Code, String) {
    error_info(details, "NO_ARTIFACT_ACCESS");
    (
        Code::FailedPrecondition,
        format!("CodePipeline gave no artifact credentials or S3 location for job {job_id}"),
    )
}

fn artifact_stream(details: &mut ErrorDetails, problem: &str) -> (Code, String) {
    details.add_bad_request_violation("request", problem);
    (
        Code::InvalidArgument,
        format!("invalid artifact stream: {problem}"),
    )
}
