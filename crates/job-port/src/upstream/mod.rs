//! The port: where validated calls go. An [`Upstream`] takes any operation's [`UpstreamCall`]
//! and gives its [`UpstreamAnswer`], or the one [`UpstreamError`]; callers use the typed door,
//! [`UpstreamExt::send`], with an operation's input ([`Call`]). The operations themselves are
//! declared once, in the table of [`operation`].
//!
//! This module knows no implementation: the AWS SDK adapter (in the gateway) and the emulator
//! (its own crate) depend on it, never the other way round.

mod error;
mod operation;
mod retry;

use std::future::Future;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use error::{AwsErrorCode, BoxError, FailureKind, UpstreamError};
pub use operation::{Call, Family, Kind, Operation, UpstreamAnswer, UpstreamCall};
pub use retry::Retries;

use crate::domain::ActionTypeId;

/// The CodePipeline job-worker API, as the gateway calls it.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Makes one call: one attempt, no retry (the gateway decides what is repeated).
    async fn call(&self, call: UpstreamCall) -> Result<UpstreamAnswer, UpstreamError>;

    /// Hints that jobs were just created, by action type, so a job feed can poll at once
    /// instead of at its next interval. Only an upstream that sees jobs being created can give
    /// them (the in-process emulator); CodePipeline cannot, and feeds on it rely on polling.
    fn new_jobs(&self) -> Option<broadcast::Receiver<ActionTypeId>> {
        None
    }
}

/// The typed door to an [`Upstream`]: an operation's input in, its own output out.
pub trait UpstreamExt {
    /// Makes the call `input` is for.
    fn send<C: Call>(
        &self,
        input: C,
    ) -> impl Future<Output = Result<C::Output, UpstreamError>> + Send;
}

impl<U: Upstream + ?Sized> UpstreamExt for U {
    async fn send<C: Call>(&self, input: C) -> Result<C::Output, UpstreamError> {
        let answer = self.call(input.into()).await?;
        C::answered(answer).map_err(|other| UpstreamError::Unexpected {
            source: format!(
                "{} was answered as {}: an upstream bug",
                C::OPERATION,
                other
            )
            .into(),
        })
    }
}
