//! What a call that panicked answers, for tower-http's `CatchPanicLayer`: INTERNAL with a generic
//! message; the panic is logged, and the connection and the server go on serving.

use std::any::Any;

use http::Response;
use tonic::{Status, body::Body};

use crate::api::Refusal;

/// The answer to a call whose handler panicked.
pub fn internal_error(panic: Box<dyn Any + Send>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic>".to_owned());
    tracing::error!(panic = %message, "a call panicked; answered INTERNAL");
    let status: Status = Refusal::Panicked.into();
    status.into_http()
}
