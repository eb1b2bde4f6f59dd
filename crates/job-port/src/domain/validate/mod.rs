//! Edge validation: protobuf requests to domain inputs, checking every constraint of the AWS
//! service model. A request that breaks any of them yields [`InvalidRequest`], naming each
//! offending field by its proto path (`action_type_id.provider`), and never reaches an upstream.
//!
//! The shared field rules (lengths, characters, enums, timestamps, ids, tokens) are in
//! `fields.rs`; each operation's validator is in `custom.rs`, `third_party.rs` or `artifacts.rs`.

mod artifacts;
mod custom;
mod fields;
mod third_party;

pub use super::constraint::{Constraint, Shown};
use super::*;
use crate::pb::jobworker as pb;
use fields::Checker;

/// One broken constraint: the field (proto path), what it must be, and the value that broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request, e.g. `failure_details.message`.
    pub field: String,
    /// The constraint in the gateway's words, e.g. `must be 1 to 5000 characters long`.
    pub description: String,
    /// The constraint, for wording it as AWS does.
    pub constraint: Constraint,
    /// The value that broke it (secrets never shown).
    pub value: Shown,
}

impl FieldViolation {
    /// `value` of `field` breaks `constraint`.
    pub fn new(field: impl Into<String>, constraint: Constraint, value: Shown) -> Self {
        Self {
            field: field.into(),
            description: constraint.to_string(),
            constraint,
            value,
        }
    }

    /// `field` breaks a rule that both doors word the same way.
    pub fn rule(field: impl Into<String>, rule: impl Into<String>, value: Shown) -> Self {
        let rule = rule.into();
        Self::new(
            field,
            Constraint::Rule {
                grpc: rule.clone(),
                aws: rule,
            },
            value,
        )
    }
}

/// A request that broke one or more constraints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {}", describe(.violations))]
pub struct InvalidRequest {
    /// Every broken constraint, in the order they were checked.
    pub violations: Vec<FieldViolation>,
}

fn describe(violations: &[FieldViolation]) -> String {
    let parts: Vec<String> = violations
        .iter()
        .map(|v| format!("{} {}", v.field, v.description))
        .collect();
    parts.join("; ")
}

/// The most credit a StreamJobs stream may hold: its subscription's `max_outstanding_jobs`
/// is 1 to this.
pub const MAX_OUTSTANDING_JOBS: u32 = 100;

pub use custom::credit;

/// A third-party request as CodePipeline takes it: with the client token itself (`clientToken`
/// is a required member). A request that names only a client is the gateway's to complete.
pub fn with_own_client_token<T>(
    request: ThirdPartyRequest<T>,
) -> Result<ThirdPartyInput<T>, InvalidRequest> {
    match &request.credential {
        ClientCredential::Token(token) => {
            let token = token.clone();
            Ok(request.with_token(token))
        }
        ClientCredential::Client(_) | ClientCredential::Unnamed => Err(InvalidRequest {
            violations: vec![FieldViolation::new(
                "client_token",
                Constraint::Required,
                Shown::Null,
            )],
        }),
    }
}

/// Checks an action type ID outside a request (the emulator's admin service uses it).
pub fn action_type_id(
    field: &str,
    value: Option<&pb::ActionTypeId>,
) -> Result<ActionTypeId, InvalidRequest> {
    let mut check = Checker::default();
    let id = check.action_type_id(field, value);
    check.finish(|| id)
}

/// Checks a job ID outside a request (the emulator's admin service uses it).
pub fn job_id(value: &str) -> Result<JobId, InvalidRequest> {
    let mut check = Checker::default();
    let id = check.job_id(value);
    check.finish(|| id)
}
