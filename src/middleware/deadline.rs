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
