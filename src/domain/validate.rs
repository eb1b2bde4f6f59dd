//! Edge validation: protobuf requests to domain inputs, checking every constraint of the AWS
//! service model. A request that breaks any of them yields [`InvalidRequest`], naming each
//! offending field by its proto path (`action_type_id.provider`), and never reaches an upstream.

use std::{
    collections::{BTreeMap, HashMap},
    time::SystemTime,
};

use super::*;
use crate::pb::jobworker as pb;

/// One broken constraint: the field (proto path) and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request, e.g. `failure_details.message`.
    pub field: String,
    /// The constraint it breaks, e.g. `must be 1 to 5000 characters long`.
    pub description: String,
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

/// A set of allowed characters: its regex-style name for messages, and its test.
struct CharClass {
    name: &'static str,
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
        contains: is_word_or_dash,
    }),
    ..text(1, 35)
};
const VERSION: Text = Text {
    allowed: Some(CharClass {
        name: "[0-9A-Za-z_-]",
        contains: is_word_or_dash,
    }),
    ..text(1, 9)
};
const QUERY_KEY: Text = text(1, 50);
const QUERY_VALUE: Text = Text {
    allowed: Some(CharClass {
        name: "[a-zA-Z0-9_-]",
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
const OUTPUT_VARIABLE_KEY: Text = Text {
    allowed: Some(CharClass {
        name: "[A-Za-z0-9@_-]",
        contains: is_output_variable_key_char,
    }),
    ..text(1, usize::MAX)
};

impl Checker {
    fn violation(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
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
            let description = match (rule.min, rule.max) {
                (1, usize::MAX) => "must not be empty".to_owned(),
                (min, max) => format!("must be {min} to {max} characters long"),
            };
            self.violation(field, description);
        } else if let Some(class) = &rule.allowed
            && !value.chars().all(class.contains)
        {
            self.violation(field, format!("must only contain {}", class.name));
        }
        value.to_owned()
    }

    fn optional_text(&mut self, field: &str, value: Option<&str>, rule: &Text) -> Option<String> {
        value.map(|value| self.text(field, value, rule))
    }

    fn job_id(&mut self, value: &str) -> Option<JobId> {
        JobId::parse(value)
            .map_err(|description| self.violation("job_id", description))
            .ok()
    }

    fn nonce(&mut self, value: &str) -> Option<Nonce> {
        Nonce::parse(value)
            .map_err(|description| self.violation("nonce", description))
            .ok()
    }

    /// Reads an enum field, where the zero value (unset) and values unknown to this build are
    /// both rejected.
    fn required_enum<P, D>(
        &mut self,
        field: &str,
        raw: i32,
        convert: impl Fn(P) -> Option<D>,
        names: &[&str],
    ) -> Option<D>
    where
        P: TryFrom<i32>,
    {
        let converted = P::try_from(raw).ok().and_then(convert);
        if converted.is_none() {
            self.violation(field, format!("must be one of {}", names.join(", ")));
        }
        converted
    }

    fn max_batch_size(&mut self, size: Option<i32>) -> Option<u32> {
        size.and_then(|size| {
            let valid = u32::try_from(size).ok().filter(|size| *size >= 1);
            if valid.is_none() {
                self.violation("max_batch_size", "must be at least 1");
            }
            valid
        })
    }

    fn third_party_job_id(&mut self, value: &str) -> Option<ThirdPartyJobId> {
        ThirdPartyJobId::parse(value)
            .map_err(|description| self.violation("job_id", description))
            .ok()
    }

    /// The client token a third-party request carries, or the client whose token the gateway
    /// supplies. The token's value never appears in a violation.
    fn credential(&mut self, client_token: &str, client_id: &str) -> Option<ClientCredential> {
        let client_id = (!client_id.is_empty())
            .then(|| {
                ClientId::parse(client_id)
                    .map_err(|description| self.violation("client_id", description))
                    .ok()
            })
            .flatten();
        if client_token.is_empty() {
            return Some(client_id.map_or(ClientCredential::Unnamed, ClientCredential::Client));
        }
        ClientToken::parse(client_token)
            .map(ClientCredential::Token)
            .map_err(|description| self.violation("client_token", description))
            .ok()
    }

    fn failure_details(&mut self, details: Option<&pb::FailureDetails>) -> Option<FailureDetails> {
        let Some(details) = details else {
            self.violation("failure_details", "is required");
            return None;
        };
        let kind = self.required_enum(
            "failure_details.type",
            details.r#type,
            FailureType::from_pb,
            &pb_names::<pb::FailureType>(FailureType::ALL.iter().map(|t| t.to_pb())),
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
            self.violation(
                "action_type_id.owner",
                "must be ACTION_OWNER_CUSTOM: PollForJobs serves custom actions only",
            );
        }
        action_type_id
    }

    fn query_param(&mut self, query_param: HashMap<String, String>) -> Option<QueryParam> {
        if query_param.len() > 1 {
            self.violation("query_param", "must have at most one entry");
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
            self.violation(field, "is required");
            return None;
        };
        let category = self.required_enum(
            &format!("{field}.category"),
            value.category,
            ActionCategory::from_pb,
            &pb_names::<pb::ActionCategory>(ActionCategory::ALL.iter().map(|c| c.to_pb())),
        );
        let owner = self.required_enum(
            &format!("{field}.owner"),
            value.owner,
            ActionOwner::from_pb,
            &pb_names::<pb::ActionOwner>(ActionOwner::ALL.iter().map(|o| o.to_pb())),
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
            self.violation(field, "must be a valid timestamp");
        }
        converted
    }

    fn execution_details(&mut self, value: &pb::ExecutionDetails) -> ExecutionDetails {
        let percent_complete = value.percent_complete.and_then(|percent| {
            let valid = u8::try_from(percent).ok().filter(|p| *p <= 100);
            if valid.is_none() {
                self.violation("execution_details.percent_complete", "must be 0 to 100");
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

fn pb_names<E: PbEnumName>(values: impl Iterator<Item = E>) -> Vec<&'static str> {
    values.map(E::name).collect()
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
                format!("must be 1 to {MAX_OUTSTANDING_JOBS}"),
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
            format!("must be 1 to {MAX_OUTSTANDING_JOBS}"),
        );
    }
    check.finish(|| jobs)
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
            check.violation(
                "output_variables",
                "must be empty when continuation_token is set",
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
            check.violation(
                "action_type_id.owner",
                "must be ACTION_OWNER_THIRD_PARTY: PollForThirdPartyJobs serves partner actions only",
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
            violations: vec![FieldViolation {
                field: "client_token".to_owned(),
                description: "must not be null".to_owned(),
            }],
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
