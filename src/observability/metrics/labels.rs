//! The label sets of the metrics and the closed sets their values come from: enums of the
//! gateway's own outcomes, and newtypes over the port's and tonic's types that write their words.

use std::{fmt::Write, sync::Arc};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
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
    /// A verified client certificate the token file does not list as a certificate client.
    UnknownCertificate,
    /// A known client touching a job, or polling an action type, outside its scope.
    ActionTypeNotAllowed,
    /// A known client naming a partner connection outside its scope.
    PartnerNotAllowed,
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
            Self::UnknownCertificate => "unknown_certificate",
            Self::ActionTypeNotAllowed => "action_type_not_allowed",
            Self::PartnerNotAllowed => "partner_not_allowed",
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

/// A feed as a label value: its action type, one of the first [`MAX_FEED_LABELS`], or `other`.
/// Made only by [`Metrics::feed`](super::Metrics::feed), which keeps the set bounded.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct FeedLabel(pub(super) Arc<str>);

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
