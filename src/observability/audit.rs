//! The audit trail: one structured event per state-changing call (an acknowledgement, a
//! result, an artifact written, an emulator admin action), on the log target `audit` of its
//! own, so it can be routed and kept apart from the operational log. An event names who
//! (client id), what (method, job id, action type when known), how it ended (the gRPC code)
//! and the call's request id; never a token, a nonce or a job's configuration.

use std::sync::Arc;

use http::HeaderMap;
use tonic::{Code, Status};

use crate::{api::Method, domain::ActionTypeId, observability::metrics::code_name};

/// The log target of audit events.
pub const TARGET: &str = "audit";

/// The id a call is known by in the log: the caller's `x-request-id` when it is a plain token
/// (at most 64 characters of `[0-9A-Za-z._-]`), else one the gateway makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    /// The header requests may carry their id in.
    pub const HEADER: &'static str = "x-request-id";

    /// The request id of a call with these headers.
    pub fn of(headers: &HeaderMap) -> Self {
        let given = headers
            .get(Self::HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 64
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            });
        Self(match given {
            Some(id) => Arc::from(id),
            None => Arc::from(uuid::Uuid::new_v4().to_string()),
        })
    }
}

/// What a state-changing call touched, for its audit event.
pub struct Touched<'a> {
    /// The caller's client id.
    pub client_id: &'a str,
    /// The method called.
    pub method: Method,
    /// The job, when the call names one (an emulator admin call is audited without).
    pub job_id: Option<&'a str>,
    /// The job's action type, when the gateway knows it.
    pub action_type: Option<&'a ActionTypeId>,
    /// The call's request id.
    pub request_id: Option<&'a RequestId>,
}

/// Records one audit event: `touched`, ended with `outcome`.
pub fn record(touched: &Touched<'_>, outcome: Result<(), &Status>) {
    record_code(touched, outcome.map_or_else(Status::code, |()| Code::Ok));
}

/// Records one audit event: `touched`, answered with `code`.
pub fn record_code(touched: &Touched<'_>, code: Code) {
    tracing::info!(
        target: TARGET,
        client_id = touched.client_id,
        method = touched.method.name(),
        service = touched.method.service(),
        job_id = touched.job_id,
        action_type = touched.action_type.map(tracing::field::display),
        outcome = code_name(code),
        request_id = touched.request_id.map(|id| &*id.0),
        "state-changing call"
    );
}
