//! Edge validation: protobuf requests to domain inputs, checking every constraint of the AWS
//! service model. A request that breaks any of them yields [`InvalidRequest`], naming each
//! offending field by its proto path (`action_type_id.provider`), and never reaches an upstream.

use std::{
    collections::{BTreeMap, HashMap},
    time::SystemTime,
};

pub use super::constraint::{Constraint, Shown};
use super::*;
use crate::pb::jobworker as pb;

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

/// Collects violations while a request is checked field by field.
#[derive(Default)]
struct Checker {
    violations: Vec<FieldViolation>,
}

/// What a string of the model must look like: its length range and allowed characters.
struct Text {
    min: usize,
    max: usize,
    allowed: Option<CharClass>,
}

/// A set of allowed characters: its regex-style name for messages, the model's pattern, and
/// its test.
struct CharClass {
    name: &'static str,
    pattern: &'static str,
    contains: fn(char) -> bool,
}

const fn text(min: usize, max: usize) -> Text {
    Text {
        min,
        max,
        allowed: None,
    }
}

/// `[0-9A-Za-z_-]`: provider, version, queryParam values, artifact names.
fn is_word_or_dash(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// `[A-Za-z0-9@\-_]`: output variable keys.
fn is_output_variable_key_char(c: char) -> bool {
    is_word_or_dash(c) || c == '@'
}

const PROVIDER: Text = Text {
    allowed: Some(CharClass {
        name: "[0-9A-Za-z_-]",
        pattern: "[0-9A-Za-z_-]+",
        contains: is_word_or_dash,
    }),
    ..text(1, 35)
};
const VERSION: Text = Text {
    allowed: Some(CharClass {
        name: "[0-9A-Za-z_-]",
        pattern: "[0-9A-Za-z_-]+",
        contains: is_word_or_dash,
    }),
    ..text(1, 9)
};
const QUERY_KEY: Text = text(1, 50);
const QUERY_VALUE: Text = Text {
    allowed: Some(CharClass {
        name: "[a-zA-Z0-9_-]",
        pattern: "[a-zA-Z0-9_-]+",
        contains: is_word_or_dash,
    }),
    ..text(1, 50)
};
const CONTINUATION_TOKEN: Text = text(1, 2048);
const REVISION: Text = text(1, 1500);
const CHANGE_IDENTIFIER: Text = text(1, 100);
const REVISION_SUMMARY: Text = text(1, 2048);
const EXECUTION_SUMMARY: Text = text(1, 2048);
const EXECUTION_ID: Text = text(1, 1500);
const FAILURE_MESSAGE: Text = text(1, 5000);
const ARTIFACT_NAME: Text = Text {
    allowed: Some(CharClass {
        name: "[a-zA-Z0-9_-]",
        pattern: "[a-zA-Z0-9_\\-]+",
        contains: is_word_or_dash,
    }),
    ..text(1, 100)
};
const CONTENT_TYPE: Text = text(1, 256);
const OUTPUT_VARIABLE_KEY: Text = Text {
    allowed: Some(CharClass {
        name: "[A-Za-z0-9@_-]",
        pattern: "[A-Za-z0-9@\\-_]+",
        contains: is_output_variable_key_char,
    }),
    ..text(1, usize::MAX)
};

impl Checker {
    fn violation(&mut self, field: impl Into<String>, constraint: Constraint, value: Shown) {
        self.violations
            .push(FieldViolation::new(field, constraint, value));
    }

    fn rule(
        &mut self,
        field: impl Into<String>,
        value: Shown,
        grpc: impl Into<String>,
        aws: impl Into<String>,
    ) {
        let constraint = Constraint::Rule {
            grpc: grpc.into(),
            aws: aws.into(),
        };
        self.violation(field, constraint, value);
    }

    /// Builds the checked value, from parts that are `None` only where a violation was recorded.
    fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, InvalidRequest> {
        match build() {
            Some(value) if self.violations.is_empty() => Ok(value),
            _ => Err(InvalidRequest {
                violations: self.violations,
            }),
        }
    }

    fn text(&mut self, field: &str, value: &str, rule: &Text) -> String {
        let len = value.chars().count();
        if len < rule.min || len > rule.max {
            let length = Constraint::Length {
                min: rule.min,
                max: rule.max,
            };
            self.violation(field, length, Shown::text(value));
        } else if let Some(class) = &rule.allowed
            && !value.chars().all(class.contains)
        {
            let chars = Constraint::Chars {
                class: class.name,
                pattern: class.pattern,
            };
            self.violation(field, chars, Shown::text(value));
        }
        value.to_owned()
    }

    fn optional_text(&mut self, field: &str, value: Option<&str>, rule: &Text) -> Option<String> {
        value.map(|value| self.text(field, value, rule))
    }

    fn job_id(&mut self, value: &str) -> Option<JobId> {
        JobId::parse(value)
            .map_err(|broken| self.violation("job_id", broken, shown(value)))
            .ok()
    }

    fn nonce(&mut self, value: &str) -> Option<Nonce> {
        Nonce::parse(value)
            .map_err(|broken| self.violation("nonce", broken, shown(value)))
            .ok()
    }

    /// Reads an enum field, where the zero value (unset) and values unknown to this build are
    /// both rejected.
    fn required_enum<P, D>(
        &mut self,
        field: &str,
        raw: i32,
        convert: impl Fn(P) -> Option<D>,
        one_of: impl FnOnce() -> Constraint,
    ) -> Option<D>
    where
        P: TryFrom<i32>,
    {
        let converted = P::try_from(raw).ok().and_then(convert);
        if converted.is_none() {
            // Zero is proto3's unset; any other number is a value unknown to this build.
            let value = if raw == 0 {
                Shown::Null
            } else {
                Shown::Value(raw.to_string())
            };
            self.violation(field, one_of(), value);
        }
        converted
    }

    fn max_batch_size(&mut self, size: Option<i32>) -> Option<u32> {
        size.and_then(|size| {
            let valid = u32::try_from(size).ok().filter(|size| *size >= 1);
            if valid.is_none() {
                let at_least_one = Constraint::Range { min: 1, max: None };
                self.violation(
                    "max_batch_size",
                    at_least_one,
                    Shown::Value(size.to_string()),
                );
            }
            valid
        })
    }

    fn third_party_job_id(&mut self, value: &str) -> Option<ThirdPartyJobId> {
        ThirdPartyJobId::parse(value)
            .map_err(|broken| self.violation("job_id", broken, shown(value)))
            .ok()
    }

    /// The client token a third-party request carries, or the client whose token the gateway
    /// supplies. The token's value never appears in a violation.
    fn credential(&mut self, client_token: &str, client_id: &str) -> Option<ClientCredential> {
        let client_id = (!client_id.is_empty())
            .then(|| {
                ClientId::parse(client_id)
                    .map_err(|broken| self.violation("client_id", broken, shown(client_id)))
                    .ok()
            })
            .flatten();
        if client_token.is_empty() {
            return Some(client_id.map_or(ClientCredential::Unnamed, ClientCredential::Client));
        }
        ClientToken::parse(client_token)
            .map(ClientCredential::Token)
            .map_err(|broken| {
                let secret = Shown::Secret {
                    len: client_token.chars().count(),
                };
                self.violation("client_token", broken, secret);
            })
            .ok()
    }

    fn failure_details(&mut self, details: Option<&pb::FailureDetails>) -> Option<FailureDetails> {
        let Some(details) = details else {
            self.violation("failure_details", Constraint::Required, Shown::Null);
            return None;
        };
        let kind = self.required_enum(
            "failure_details.type",
            details.r#type,
            FailureType::from_pb,
            || one_of(FailureType::ALL, FailureType::to_pb, FailureType::as_str),
        );
        let message = self.text(
            "failure_details.message",
            &details.message,
            &FAILURE_MESSAGE,
        );
        let external_execution_id = self.optional_text(
            "failure_details.external_execution_id",
            details.external_execution_id.as_deref(),
            &EXECUTION_ID,
        );
        Some(FailureDetails {
            kind: kind?,
            message,
            external_execution_id,
        })
    }

    /// An action type that PollForJobs (and a job feed) may ask for: its owner is Custom.
    fn custom_action_type_id(&mut self, value: Option<&pb::ActionTypeId>) -> Option<ActionTypeId> {
        let action_type_id = self.action_type_id("action_type_id", value);
        if let Some(action_type_id) = &action_type_id
            && action_type_id.owner != ActionOwner::Custom
        {
            self.rule(
                "action_type_id.owner",
                Shown::text(action_type_id.owner.as_str()),
                "must be ACTION_OWNER_CUSTOM: PollForJobs serves custom actions only",
                "must be Custom: PollForJobs serves custom actions only",
            );
        }
        action_type_id
    }

    fn query_param(&mut self, query_param: HashMap<String, String>) -> Option<QueryParam> {
        if query_param.len() > 1 {
            self.rule(
                "query_param",
                Shown::Value(format!("{} entries", query_param.len())),
                "must have at most one entry",
                "must have at most one entry",
            );
        }
        query_param
            .into_iter()
            .next()
            .map(|(key, value)| QueryParam {
                key: self.text("query_param.key", &key, &QUERY_KEY),
                value: self.text("query_param.value", &value, &QUERY_VALUE),
            })
    }

    fn action_type_id(
        &mut self,
        field: &str,
        value: Option<&pb::ActionTypeId>,
    ) -> Option<ActionTypeId> {
        let Some(value) = value else {
            self.violation(field, Constraint::Required, Shown::Null);
            return None;
        };
        let category = self.required_enum(
            &format!("{field}.category"),
            value.category,
            ActionCategory::from_pb,
            || {
                one_of(
                    ActionCategory::ALL,
                    ActionCategory::to_pb,
                    ActionCategory::as_str,
                )
            },
        );
        let owner = self.required_enum(
            &format!("{field}.owner"),
            value.owner,
            ActionOwner::from_pb,
            || one_of(ActionOwner::ALL, ActionOwner::to_pb, ActionOwner::as_str),
        );
        let provider = self.text(&format!("{field}.provider"), &value.provider, &PROVIDER);
        let version = self.text(&format!("{field}.version"), &value.version, &VERSION);
        Some(ActionTypeId {
            category: category?,
            owner: owner?,
            provider,
            version,
        })
    }

    fn current_revision(&mut self, value: &pb::CurrentRevision) -> CurrentRevision {
        CurrentRevision {
            revision: self.text("current_revision.revision", &value.revision, &REVISION),
            change_identifier: self.text(
                "current_revision.change_identifier",
                &value.change_identifier,
                &CHANGE_IDENTIFIER,
            ),
            created: value
                .created
                .and_then(|created| self.timestamp("current_revision.created", created)),
            revision_summary: self.optional_text(
                "current_revision.revision_summary",
                value.revision_summary.as_deref(),
                &REVISION_SUMMARY,
            ),
        }
    }

    /// A `google.protobuf.Timestamp` as its spec bounds it: 0001-01-01 to 9999-12-31, with
    /// nanos in 0..1e9 (prost would silently normalise out-of-range nanos instead).
    fn timestamp(&mut self, field: &str, value: prost_types::Timestamp) -> Option<SystemTime> {
        const SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
        let in_range =
            SECONDS.contains(&value.seconds) && (0..1_000_000_000).contains(&value.nanos);
        let converted = in_range.then(|| SystemTime::try_from(value).ok()).flatten();
        if converted.is_none() {
            let rule = "must be a valid timestamp (years 1 to 9999)";
            self.violation(
                field,
                Constraint::Rule {
                    grpc: rule.to_owned(),
                    aws: rule.to_owned(),
                },
                Shown::Value(value.seconds.to_string()),
            );
        }
        converted
    }

    fn execution_details(&mut self, value: &pb::ExecutionDetails) -> ExecutionDetails {
        let percent_complete = value.percent_complete.and_then(|percent| {
            let valid = u8::try_from(percent).ok().filter(|p| *p <= 100);
            if valid.is_none() {
                let percentage = Constraint::Range {
                    min: 0,
                    max: Some(100),
                };
                let value = Shown::Value(percent.to_string());
                self.violation("execution_details.percent_complete", percentage, value);
            }
            valid
        });
        ExecutionDetails {
            summary: self.optional_text(
                "execution_details.summary",
                value.summary.as_deref(),
                &EXECUTION_SUMMARY,
            ),
            external_execution_id: self.optional_text(
                "execution_details.external_execution_id",
                value.external_execution_id.as_deref(),
                &EXECUTION_ID,
            ),
            percent_complete,
        }
    }
}

/// The values of a domain enum, by their proto and AWS names.
fn one_of<D: Copy, P: PbEnumName>(
    all: &[D],
    to_pb: fn(D) -> P,
    aws: fn(D) -> &'static str,
) -> Constraint {
    Constraint::OneOf {
        proto: all.iter().map(|value| to_pb(*value).name()).collect(),
        aws: all.iter().map(|value| aws(*value)).collect(),
    }
}

/// A value as a violation shows it.
fn shown(value: &str) -> Shown {
    Shown::text(value)
}

/// The proto name of a generated enum value, for error messages.
trait PbEnumName {
    fn name(self) -> &'static str;
}

macro_rules! pb_enum_name {
    ($($ty:ty),+) => {$(
        impl PbEnumName for $ty {
            fn name(self) -> &'static str {
                self.as_str_name()
            }
        }
    )+};
}
pb_enum_name!(pb::ActionCategory, pb::ActionOwner, pb::FailureType);

impl TryFrom<pb::PollForJobsRequest> for PollForJobsInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::PollForJobsRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let action_type_id = check.custom_action_type_id(request.action_type_id.as_ref());
        let max_batch_size = check.max_batch_size(request.max_batch_size);
        let query_param = check.query_param(request.query_param);
        check.finish(|| {
            Some(Self {
                action_type_id: action_type_id?,
                max_batch_size,
                query_param,
            })
        })
    }
}

/// The most credit a StreamJobs stream may hold: its subscription's `max_outstanding_jobs`
/// is 1 to this.
pub const MAX_OUTSTANDING_JOBS: u32 = 100;

impl TryFrom<pb::StreamJobsSubscription> for SubscribeInput {
    type Error = InvalidRequest;

    fn try_from(subscription: pb::StreamJobsSubscription) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let action_type_id = check.custom_action_type_id(subscription.action_type_id.as_ref());
        let query_param = check.query_param(subscription.query_param);
        let max_outstanding_jobs = u32::try_from(subscription.max_outstanding_jobs)
            .ok()
            .filter(|jobs| (1..=MAX_OUTSTANDING_JOBS).contains(jobs));
        if max_outstanding_jobs.is_none() {
            check.violation(
                "max_outstanding_jobs",
                outstanding_jobs(),
                Shown::Value(subscription.max_outstanding_jobs.to_string()),
            );
        }
        check.finish(|| {
            Some(Self {
                action_type_id: action_type_id?,
                query_param,
                max_outstanding_jobs: max_outstanding_jobs?,
            })
        })
    }
}

/// The jobs of a StreamJobsCredit: 1 to [`MAX_OUTSTANDING_JOBS`].
pub fn credit(credit: &pb::StreamJobsCredit) -> Result<u32, InvalidRequest> {
    let mut check = Checker::default();
    let jobs = u32::try_from(credit.jobs)
        .ok()
        .filter(|jobs| (1..=MAX_OUTSTANDING_JOBS).contains(jobs));
    if jobs.is_none() {
        check.violation(
            "credit.jobs",
            outstanding_jobs(),
            Shown::Value(credit.jobs.to_string()),
        );
    }
    check.finish(|| jobs)
}

fn outstanding_jobs() -> Constraint {
    Constraint::Range {
        min: 1,
        max: Some(i64::from(MAX_OUTSTANDING_JOBS)),
    }
}

impl TryFrom<pb::AcknowledgeJobRequest> for AcknowledgeJobInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::AcknowledgeJobRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id(&request.job_id);
        let nonce = check.nonce(&request.nonce);
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                nonce: nonce?,
            })
        })
    }
}

impl TryFrom<pb::GetJobDetailsRequest> for GetJobDetailsInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::GetJobDetailsRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id(&request.job_id);
        check.finish(|| Some(Self { job_id: job_id? }))
    }
}

impl TryFrom<pb::PutJobSuccessResultRequest> for PutJobSuccessResultInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::PutJobSuccessResultRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id(&request.job_id);
        let current_revision = request
            .current_revision
            .as_ref()
            .map(|revision| check.current_revision(revision));
        let continuation_token = check.optional_text(
            "continuation_token",
            request.continuation_token.as_deref(),
            &CONTINUATION_TOKEN,
        );
        let execution_details = request
            .execution_details
            .as_ref()
            .map(|details| check.execution_details(details));
        if continuation_token.is_some() && !request.output_variables.is_empty() {
            check.rule(
                "output_variables",
                Shown::Value(format!("{} variables", request.output_variables.len())),
                "must be empty when continuation_token is set",
                "must be empty when continuationToken is set",
            );
        }
        let output_variables: BTreeMap<String, String> = request
            .output_variables
            .into_iter()
            .map(|(key, value)| {
                let field = format!("output_variables[{key:?}]");
                (check.text(&field, &key, &OUTPUT_VARIABLE_KEY), value)
            })
            .collect();
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                current_revision,
                continuation_token,
                execution_details,
                output_variables,
            })
        })
    }
}

impl TryFrom<pb::PutJobFailureResultRequest> for PutJobFailureResultInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::PutJobFailureResultRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id(&request.job_id);
        let failure_details = check.failure_details(request.failure_details.as_ref());
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                failure_details: failure_details?,
            })
        })
    }
}

impl TryFrom<pb::PollForThirdPartyJobsRequest> for PollForThirdPartyJobsInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::PollForThirdPartyJobsRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let action_type_id =
            check.action_type_id("action_type_id", request.action_type_id.as_ref());
        if let Some(action_type_id) = &action_type_id
            && action_type_id.owner != ActionOwner::ThirdParty
        {
            check.rule(
                "action_type_id.owner",
                Shown::text(action_type_id.owner.as_str()),
                "must be ACTION_OWNER_THIRD_PARTY: PollForThirdPartyJobs serves partner actions only",
                "must be ThirdParty: PollForThirdPartyJobs serves partner actions only",
            );
        }
        let max_batch_size = check.max_batch_size(request.max_batch_size);
        check.finish(|| {
            Some(Self {
                action_type_id: action_type_id?,
                max_batch_size,
            })
        })
    }
}

impl TryFrom<pb::AcknowledgeThirdPartyJobRequest> for ThirdPartyRequest<AcknowledgeThirdParty> {
    type Error = InvalidRequest;

    fn try_from(request: pb::AcknowledgeThirdPartyJobRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.third_party_job_id(&request.job_id);
        let credential = check.credential(&request.client_token, &request.client_id);
        let nonce = check.nonce(&request.nonce);
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                credential: credential?,
                call: AcknowledgeThirdParty { nonce: nonce? },
            })
        })
    }
}

impl TryFrom<pb::GetThirdPartyJobDetailsRequest> for ThirdPartyRequest<()> {
    type Error = InvalidRequest;

    fn try_from(request: pb::GetThirdPartyJobDetailsRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.third_party_job_id(&request.job_id);
        let credential = check.credential(&request.client_token, &request.client_id);
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                credential: credential?,
                call: (),
            })
        })
    }
}

impl TryFrom<pb::PutThirdPartyJobSuccessResultRequest> for ThirdPartyRequest<ThirdPartySuccess> {
    type Error = InvalidRequest;

    fn try_from(request: pb::PutThirdPartyJobSuccessResultRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.third_party_job_id(&request.job_id);
        let credential = check.credential(&request.client_token, &request.client_id);
        let current_revision = request
            .current_revision
            .as_ref()
            .map(|revision| check.current_revision(revision));
        let continuation_token = check.optional_text(
            "continuation_token",
            request.continuation_token.as_deref(),
            &CONTINUATION_TOKEN,
        );
        let execution_details = request
            .execution_details
            .as_ref()
            .map(|details| check.execution_details(details));
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                credential: credential?,
                call: ThirdPartySuccess {
                    current_revision,
                    continuation_token,
                    execution_details,
                },
            })
        })
    }
}

impl TryFrom<pb::PutThirdPartyJobFailureResultRequest> for ThirdPartyRequest<FailureDetails> {
    type Error = InvalidRequest;

    fn try_from(request: pb::PutThirdPartyJobFailureResultRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.third_party_job_id(&request.job_id);
        let credential = check.credential(&request.client_token, &request.client_id);
        let failure_details = check.failure_details(request.failure_details.as_ref());
        check.finish(|| {
            Some(Self {
                job_id: job_id?,
                credential: credential?,
                call: failure_details?,
            })
        })
    }
}

impl Checker {
    /// The job of an artifact call, its fields under `field`.
    fn artifact_job(&mut self, field: &str, job: Option<&pb::ArtifactJob>) -> Option<ArtifactJob> {
        use pb::artifact_job::Job;
        match job.and_then(|job| job.job.as_ref()) {
            None => {
                self.violation(field, Constraint::Required, Shown::Null);
                None
            }
            Some(Job::JobId(id)) => JobId::parse(id)
                .map(ArtifactJob::Custom)
                .map_err(|broken| self.violation(format!("{field}.job_id"), broken, shown(id)))
                .ok(),
            Some(Job::ThirdParty(third_party)) => {
                let mut nested = Checker::default();
                let job_id = nested.third_party_job_id(&third_party.job_id);
                let credential =
                    nested.credential(&third_party.client_token, &third_party.client_id);
                for mut violation in nested.violations {
                    violation.field = format!("{field}.third_party.{}", violation.field);
                    self.violations.push(violation);
                }
                Some(ArtifactJob::ThirdParty(ThirdPartyRequest {
                    job_id: job_id?,
                    credential: credential?,
                    call: (),
                }))
            }
        }
    }
}

impl TryFrom<pb::DownloadInputArtifactRequest> for DownloadInputArtifactInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::DownloadInputArtifactRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job = check.artifact_job("job", request.job.as_ref());
        let artifact_name = check.text("artifact_name", &request.artifact_name, &ARTIFACT_NAME);
        check.finish(|| {
            Some(Self {
                job: job?,
                artifact_name,
            })
        })
    }
}

impl TryFrom<pb::UploadOutputArtifactHeader> for UploadOutputArtifactInput {
    type Error = InvalidRequest;

    fn try_from(header: pb::UploadOutputArtifactHeader) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job = check.artifact_job("header.job", header.job.as_ref());
        let artifact_name = check.text(
            "header.artifact_name",
            &header.artifact_name,
            &ARTIFACT_NAME,
        );
        let content_type = if header.content_type.is_empty() {
            "application/zip".to_owned()
        } else {
            check.text("header.content_type", &header.content_type, &CONTENT_TYPE)
        };
        let size_bytes = header.size_bytes.and_then(|size| {
            let valid = u64::try_from(size).ok();
            if valid.is_none() {
                let at_least_zero = Constraint::Range { min: 0, max: None };
                check.violation(
                    "header.size_bytes",
                    at_least_zero,
                    Shown::Value(size.to_string()),
                );
            }
            valid
        });
        check.finish(|| {
            Some(Self {
                job: job?,
                artifact_name,
                content_type,
                size_bytes,
            })
        })
    }
}

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
