//! The caller's deadline: `grpc-timeout`, read once by the outermost layer
//! ([`super::instrument`]) into a [`CallDeadline`] extension that handlers bound their upstream
//! call with.

use std::time::{Duration, Instant};

/// When the caller stops waiting. Handlers finish their upstream call a little before it, so the
/// caller gets DEADLINE_EXCEEDED from the gateway (saying whether the outcome is known) rather
/// than from its own library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);

/// Time kept back from the caller's deadline to send the answer.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(5);

impl CallDeadline {
    /// The instant the upstream call must be done by.
    pub fn upstream_deadline(self) -> Instant {
        self.0.checked_sub(ANSWER_MARGIN).unwrap_or(self.0)
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), per the gRPC HTTP/2 spec.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (unit, digits) = value.as_bytes().split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount = digits
        .iter()
        .fold(0u64, |amount, digit| amount * 10 + u64::from(digit - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_per_the_spec() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "100", "123456789S", "-1S", "1x", "1.5S", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
