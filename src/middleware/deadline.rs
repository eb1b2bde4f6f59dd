//! A call's deadline: the caller's `grpc-timeout`, or the default deadline of a unary call,
//! read once by the outermost layer ([`super::instrument`]) into a [`CallDeadline`] extension.
//! Handlers bound their upstream call with it; the [`DeadlineLayer`] bounds everything else the
//! call does before it answers, such as waiting for a request body that never arrives.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::api::Refusal;

/// When the call must be answered: a little before the caller stops waiting, so that the caller
/// gets the gateway's DEADLINE_EXCEEDED (saying whether the outcome is known) rather than its
/// own library's, which says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);

/// Time kept back from the answer deadline for the upstream call's answer to be made and sent:
/// the handler's answer comes before the [`DeadlineLayer`]'s generic one.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(5);

/// The fixed part of [`answer_margin`]: the answer's way to the caller and the caller's own
/// scheduling (a cold JVM, a busy event loop), measured at a few milliseconds on loopback.
const CLIENT_SLACK: Duration = Duration::from_millis(20);

impl CallDeadline {
    /// The answer deadline of a call that arrived at `received` with `timeout`: `grpc-timeout`
    /// is rounded up by some clients (gRPC C-core, behind Python, Ruby and C++, rounds it up to
    /// three significant figures: up to 1% more), and the caller's clock started before the
    /// request was sent, so the answer is due [`answer_margin`] before the timeout ends.
    pub fn for_timeout(received: Instant, timeout: Duration) -> Self {
        Self(received + timeout - answer_margin(timeout))
    }

    /// The instant the upstream call must be done by.
    pub fn upstream_deadline(self) -> Instant {
        self.0.checked_sub(ANSWER_MARGIN).unwrap_or(self.0)
    }
}

/// How long before a caller's timeout ends the gateway answers: more than C-core's rounding
/// (1/64 is over 1%) plus [`CLIENT_SLACK`], and never more than half the timeout.
pub fn answer_margin(timeout: Duration) -> Duration {
    (CLIENT_SLACK + timeout / 64).min(timeout / 2)
}

/// Answers DEADLINE_EXCEEDED for a call still unanswered at its deadline.
#[derive(Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for Deadline<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let deadline = request.extensions().get::<CallDeadline>().copied();
        DeadlineFuture {
            inner: self.inner.call(request),
            expires: deadline.map(|CallDeadline(at)| tokio::time::sleep_until(at.into())),
        }
    }
}

pin_project! {
    /// The call, or DEADLINE_EXCEEDED once its deadline passes.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        expires: Option<Sleep>,
    }
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            return Poll::Ready(output);
        }
        match this.expires.as_pin_mut().map(|expires| expires.poll(cx)) {
            Some(Poll::Ready(())) => {
                let status: Status = Refusal::DeadlineExceeded.into();
                Poll::Ready(Ok(status.into_http()))
            }
            _ => Poll::Pending,
        }
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

    /// C-core's encoding of a timeout: rounded up to three significant figures.
    fn rounded_up_to_three_figures(timeout: Duration) -> Duration {
        let nanos = timeout.as_nanos();
        let mut scale = 1u128;
        while nanos / scale >= 1000 {
            scale *= 10;
        }
        Duration::from_nanos(u64::try_from(nanos.div_ceil(scale) * scale).unwrap())
    }

    #[test]
    fn the_answer_is_due_before_a_rounded_up_timeout_ends_at_the_caller() {
        let received = Instant::now();
        for millis in [
            50, 999, 1001, 1009, 1500, 2500, 10_001, 20_000, 100_100, 3_600_000,
        ] {
            let timeout = Duration::from_millis(millis);
            let sent = rounded_up_to_three_figures(timeout);
            let CallDeadline(answer_by) = CallDeadline::for_timeout(received, sent);
            assert!(
                answer_by + CLIENT_SLACK / 2 <= received + timeout,
                "{millis} ms, sent as {sent:?}: answered {:?} before the caller's timeout",
                (received + timeout) - answer_by
            );
        }
        // And a short timeout keeps half of itself.
        let tiny = Duration::from_millis(10);
        assert_eq!(answer_margin(tiny), Duration::from_millis(5));
    }

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
