//! The constraints of the service model a request value can break, each worded for both doors:
//! the gRPC edge's BadRequest descriptions ("must be 1 to 50 characters long", proto enum names)
//! and AWS's ValidationException clauses ("Member must have length less than or equal to 50",
//! AWS's enum values), so one check serves both without either borrowing the other's names.

use std::fmt;

/// The pattern of job IDs and client IDs (lowercase UUIDs), as the model writes it.
pub const UUID_PATTERN: &str = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

/// A constraint a value broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// The member is missing.
    Required,
    /// A length range, in characters.
    Length {
        /// The least.
        min: usize,
        /// The most (`usize::MAX`: no upper bound).
        max: usize,
    },
    /// A regular expression the whole value must match.
    Pattern(&'static str),
    /// Characters from one class only: the model's pattern is that class repeated.
    Chars {
        /// The class, regex-style (`[0-9A-Za-z_-]`).
        class: &'static str,
        /// The model's pattern (`[0-9A-Za-z_-]+`).
        pattern: &'static str,
    },
    /// One of a set of enum values.
    OneOf {
        /// The values' proto names (`ACTION_OWNER_CUSTOM`).
        proto: Vec<&'static str>,
        /// The values' AWS names (`Custom`).
        aws: Vec<&'static str>,
    },
    /// A numeric range.
    Range {
        /// The least.
        min: i64,
        /// The most, if bounded.
        max: Option<i64>,
    },
    /// A rule of the API beyond one member's shape, in each door's own words.
    Rule {
        /// As the gRPC edge says it (proto field names).
        grpc: String,
        /// As AWS says it (AWS member names).
        aws: String,
    },
}

/// The value that broke a constraint, as an AWS message may show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// The member was absent.
    Null,
    /// Its value.
    Value(String),
    /// A secret's value: never shown, only its length is used to word the constraint.
    Secret {
        /// Its length in characters.
        len: usize,
    },
}

impl Shown {
    /// A string value, shown as it is.
    pub fn text(value: &str) -> Self {
        Self::Value(value.to_owned())
    }

    fn len(&self) -> Option<usize> {
        match self {
            Self::Null => None,
            Self::Value(value) => Some(value.chars().count()),
            Self::Secret { len } => Some(*len),
        }
    }

    fn number(&self) -> Option<i64> {
        match self {
            Self::Value(value) => value.parse().ok(),
            _ => None,
        }
    }

    /// The value as AWS messages quote it: `'x'`, `null`, or a redaction.
    pub fn aws_quoted(&self) -> String {
        match self {
            Self::Null => "null".to_owned(),
            Self::Value(value) => format!("'{value}'"),
            Self::Secret { .. } => "'*** Sensitive Data Redacted ***'".to_owned(),
        }
    }
}

impl Constraint {
    /// The constraint in AWS's words, completing "Member ...", for the value that broke it.
    pub fn aws_clause(&self, value: &Shown) -> String {
        match self {
            Self::Required => "must not be null".to_owned(),
            Self::Length { min, max } => match value.len() {
                Some(len) if len < *min => {
                    format!("must have length greater than or equal to {min}")
                }
                _ => format!("must have length less than or equal to {max}"),
            },
            Self::Pattern(regex) | Self::Chars { pattern: regex, .. } => {
                format!("must satisfy regular expression pattern: {regex}")
            }
            Self::OneOf { aws, .. } => {
                format!("must satisfy enum value set: [{}]", aws.join(", "))
            }
            Self::Range { min, max } => match (value.number(), max) {
                (Some(n), Some(max)) if n > *max => {
                    format!("must have value less than or equal to {max}")
                }
                _ => format!("must have value greater than or equal to {min}"),
            },
            Self::Rule { aws, .. } => aws.clone(),
        }
    }
}

/// The gRPC edge's wording.
impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Required => f.write_str("is required"),
            Self::Length {
                min: 1,
                max: usize::MAX,
            } => f.write_str("must not be empty"),
            Self::Length { min, max } => write!(f, "must be {min} to {max} characters long"),
            Self::Pattern(regex) => write!(f, "must match {regex}"),
            Self::Chars { class, .. } => write!(f, "must only contain {class}"),
            Self::OneOf { proto, .. } => write!(f, "must be one of {}", proto.join(", ")),
            Self::Range { min, max: None } => write!(f, "must be at least {min}"),
            Self::Range {
                min,
                max: Some(max),
            } => write!(f, "must be {min} to {max}"),
            Self::Rule { grpc, .. } => f.write_str(grpc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_constraint_has_the_gateways_wording_and_awss() {
        let length = Constraint::Length { min: 1, max: 50 };
        assert_eq!(length.to_string(), "must be 1 to 50 characters long");
        assert_eq!(
            length.aws_clause(&Shown::text("")),
            "must have length greater than or equal to 1"
        );
        assert_eq!(
            length.aws_clause(&Shown::Secret { len: 51 }),
            "must have length less than or equal to 50"
        );
        let owner = Constraint::OneOf {
            proto: vec!["ACTION_OWNER_AWS", "ACTION_OWNER_CUSTOM"],
            aws: vec!["AWS", "Custom"],
        };
        assert_eq!(
            owner.to_string(),
            "must be one of ACTION_OWNER_AWS, ACTION_OWNER_CUSTOM"
        );
        assert_eq!(
            owner.aws_clause(&Shown::Null),
            "must satisfy enum value set: [AWS, Custom]"
        );
        let percent = Constraint::Range {
            min: 0,
            max: Some(100),
        };
        assert_eq!(
            percent.aws_clause(&Shown::text("101")),
            "must have value less than or equal to 100"
        );
        assert_eq!(
            percent.aws_clause(&Shown::text("-1")),
            "must have value greater than or equal to 0"
        );
        assert_eq!(
            Constraint::Pattern(UUID_PATTERN).aws_clause(&Shown::text("x")),
            format!("must satisfy regular expression pattern: {UUID_PATTERN}")
        );
        assert_eq!(
            Shown::Secret { len: 3 }.aws_quoted(),
            "'*** Sensitive Data Redacted ***'"
        );
    }
}
