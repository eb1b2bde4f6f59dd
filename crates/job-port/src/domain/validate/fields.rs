//! The field rules every validator shares: the model's string lengths and characters, enums,
//! timestamps, ids, nonces and client tokens, and the nested messages several requests carry,
//! each checked by a [`Checker`] that collects every violation.

use std::{collections::HashMap, time::SystemTime};

use super::{Constraint, FieldViolation, InvalidRequest, Shown};
use crate::domain::*;
use crate::pb::jobworker as pb;

/// Collects violations while a request is checked field by field.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) violations: Vec<FieldViolation>,
}

/// What a string of the model must look like: its length range and allowed characters.
pub(super) struct Text {
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
pub(super) const CONTINUATION_TOKEN: Text = text(1, 2048);
const REVISION: Text = text(1, 1500);
const CHANGE_IDENTIFIER: Text = text(1, 100);
const REVISION_SUMMARY: Text = text(1, 2048);
const EXECUTION_SUMMARY: Text = text(1, 2048);
const EXECUTION_ID: Text = text(1, 1500);
const FAILURE_MESSAGE: Text = text(1, 5000);
pub(super) const ARTIFACT_NAME: Text = Text {
    allowed: Some(CharClass {
        name: "[a-zA-Z0-9_-]",
        pattern: "[a-zA-Z0-9_\\-]+",
        contains: is_word_or_dash,
    }),
    ..text(1, 100)
};
pub(super) const CONTENT_TYPE: Text = text(1, 256);
pub(super) const OUTPUT_VARIABLE_KEY: Text = Text {
    allowed: Some(CharClass {
        name: "[A-Za-z0-9@_-]",
        pattern: "[A-Za-z0-9@\\-_]+",
        contains: is_output_variable_key_char,
    }),
    ..text(1, usize::MAX)
};

impl Checker {
    pub(super) fn violation(
        &mut self,
        field: impl Into<String>,
        constraint: Constraint,
        value: Shown,
    ) {
        self.violations
            .push(FieldViolation::new(field, constraint, value));
    }

    pub(super) fn rule(
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
    pub(super) fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, InvalidRequest> {
        match build() {
            Some(value) if self.violations.is_empty() => Ok(value),
            _ => Err(InvalidRequest {
                violations: self.violations,
            }),
        }
    }

    pub(super) fn text(&mut self, field: &str, value: &str, rule: &Text) -> String {
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

    pub(super) fn optional_text(
        &mut self,
        field: &str,
        value: Option<&str>,
        rule: &Text,
    ) -> Option<String> {
        value.map(|value| self.text(field, value, rule))
    }

    pub(super) fn job_id(&mut self, value: &str) -> Option<JobId> {
        JobId::parse(value)
            .map_err(|broken| self.violation("job_id", broken, shown(value)))
            .ok()
    }

    pub(super) fn nonce(&mut self, value: &str) -> Option<Nonce> {
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

    pub(super) fn max_batch_size(&mut self, size: Option<i32>) -> Option<u32> {
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

    pub(super) fn third_party_job_id(&mut self, value: &str) -> Option<ThirdPartyJobId> {
        ThirdPartyJobId::parse(value)
            .map_err(|broken| self.violation("job_id", broken, shown(value)))
            .ok()
    }

    /// The client token a third-party request carries, or the client whose token the gateway
    /// supplies. The token's value never appears in a violation.
    pub(super) fn credential(
        &mut self,
        client_token: &str,
        client_id: &str,
    ) -> Option<ClientCredential> {
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

    pub(super) fn failure_details(
        &mut self,
        details: Option<&pb::FailureDetails>,
    ) -> Option<FailureDetails> {
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
    pub(super) fn custom_action_type_id(
        &mut self,
        value: Option<&pb::ActionTypeId>,
    ) -> Option<ActionTypeId> {
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

    pub(super) fn query_param(
        &mut self,
        query_param: HashMap<String, String>,
    ) -> Option<QueryParam> {
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

    pub(super) fn action_type_id(
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

    pub(super) fn current_revision(&mut self, value: &pb::CurrentRevision) -> CurrentRevision {
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

    pub(super) fn execution_details(&mut self, value: &pb::ExecutionDetails) -> ExecutionDetails {
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
pub(super) fn shown(value: &str) -> Shown {
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
