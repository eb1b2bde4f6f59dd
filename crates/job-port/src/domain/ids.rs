//! Identifiers whose format the service model fixes.

use std::fmt;

use super::constraint::{Constraint, UUID_PATTERN};

/// A custom-action job's ID: a lowercase UUID, `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// Checks the model's pattern.
    pub fn parse(value: &str) -> Result<Self, Constraint> {
        let bytes = value.as_bytes();
        let well_formed = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
            });
        if well_formed {
            Ok(Self(value.to_owned()))
        } else {
            Err(Constraint::Pattern(UUID_PATTERN))
        }
    }

    /// A new random job ID (what CodePipeline assigns).
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The nonce PollForJobs hands out with a job: 1..50 characters. It is what lets exactly one
/// worker claim the job, so it is not printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Nonce(String);

impl Nonce {
    /// Checks the model's length constraint.
    pub fn parse(value: &str) -> Result<Self, Constraint> {
        length(value, 1, 50).map(|()| Self(value.to_owned()))
    }

    /// The nonce as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonce(<redacted>)")
    }
}

/// A third-party job's ID: 1..512 characters of anything (the model leaves it free).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThirdPartyJobId(String);

impl ThirdPartyJobId {
    /// Checks the model's length constraint.
    pub fn parse(value: &str) -> Result<Self, Constraint> {
        length(value, 1, 512).map(|()| Self(value.to_owned()))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ThirdPartyJobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ThirdPartyJobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A third-party client's ID: the public half of its clientId / clientToken pair, a lowercase
/// UUID as the model writes it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

impl ClientId {
    /// Checks the model's pattern (a lowercase UUID).
    pub fn parse(value: &str) -> Result<Self, Constraint> {
        JobId::parse(value).map(|id| Self(id.0))
    }

    /// A new random client ID.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A third-party client's token: 1..256 characters, the secret half of the pair. Never printed
/// by `Debug` or `Display`, never in an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientToken(String);

impl ClientToken {
    /// Checks the model's length constraint.
    pub fn parse(value: &str) -> Result<Self, Constraint> {
        length(value, 1, 256).map(|()| Self(value.to_owned()))
    }

    /// The token itself, for the call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientToken(<redacted>)")
    }
}

fn length(value: &str, min: usize, max: usize) -> Result<(), Constraint> {
    if (min..=max).contains(&value.chars().count()) {
        Ok(())
    } else {
        Err(Constraint::Length { min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_party_ids_and_tokens_are_checked_for_length_and_tokens_never_print() {
        assert!(ThirdPartyJobId::parse("any job id, even with spaces").is_ok());
        assert!(ThirdPartyJobId::parse("").is_err());
        assert!(ThirdPartyJobId::parse(&"x".repeat(513)).is_err());
        assert!(ClientId::parse("f4f4ff82-2d11-4a2b-9c3d-0123456789ab").is_ok());
        assert!(ClientId::parse("not-a-uuid").is_err());
        let token = ClientToken::parse("s3cr3t-client-token").unwrap();
        assert_eq!(format!("{token:?}"), "ClientToken(<redacted>)");
        assert!(ClientToken::parse(&"t".repeat(257)).is_err());
    }

    #[test]
    fn job_id_accepts_a_lowercase_uuid() {
        assert!(JobId::parse("f4f4ff82-2d11-4a2b-9c3d-0123456789ab").is_ok());
    }

    #[test]
    fn job_id_rejects_uppercase_short_groups_and_extra_groups() {
        for bad in [
            "",
            "F4F4FF82-2D11-4A2B-9C3D-0123456789AB",
            "f4f4ff82-2d11-4a2b-9c3d-0123456789a",
            "f4f4ff82-2d11-4a2b-9c3d-0123456789ab-00",
            "f4f4ff822d114a2b9c3d0123456789ab",
            "g4f4ff82-2d11-4a2b-9c3d-0123456789ab",
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn nonce_length_is_counted_in_characters() {
        assert!(Nonce::parse("").is_err());
        assert!(Nonce::parse(&"é".repeat(50)).is_ok());
        assert!(Nonce::parse(&"a".repeat(51)).is_err());
    }

    #[test]
    fn random_job_ids_are_valid() {
        let id = JobId::random();
        assert_eq!(JobId::parse(id.as_str()).unwrap(), id);
    }
}
