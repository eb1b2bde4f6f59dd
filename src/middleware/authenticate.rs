//! Applies the auth policy ([`crate::auth::Authenticator`]) to each call: a caller it accepts is
//! put in the request's extensions (and the call's span) for the layers and handlers below; a
//! refusal is answered at once.

use std::sync::Arc;

use http::{Request, Response};
use tonic::body::Body;
use tower_http::validate_request::ValidateRequest;

use crate::{api::methods, auth::Authenticator};

/// The validator of the authenticate layer; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Authenticate(Arc<Authenticator>);

impl Authenticate {
    /// Applies `authenticator`, shared by every connection.
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self(authenticator)
    }
}

impl ValidateRequest<Body> for Authenticate {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<Body>) -> Result<(), Response<Body>> {
        let caller = self
            .0
            .authorize(request, methods::of(request))
            .map_err(|status| status.into_http())?;
        tracing::Span::current().record("client_id", &*caller.id);
        request.extensions_mut().insert(caller);
        Ok(())
    }
}
