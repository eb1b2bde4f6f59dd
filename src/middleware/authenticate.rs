//! Applies the auth policy ([`crate::auth::Authenticator`]) to each call: a caller it accepts is
//! put in the request's extensions (and the call's span) for the layers and handlers below; a
//! refusal is answered at once.

use std::sync::Arc;

use http::{Request, Response, header::AUTHORIZATION};
use tonic::{body::Body, transport::server::TlsConnectInfo};
use tower_http::validate_request::ValidateRequest;

use super::connection::ConnectionInfo;
use crate::{
    api::methods,
    auth::{Authenticator, Presented},
};

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
        let peer_certificates = request
            .extensions()
            .get::<TlsConnectInfo<ConnectionInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        let presented = Presented {
            authorization: request.headers().get(AUTHORIZATION),
            peer_certificate: peer_certificates
                .as_deref()
                .and_then(|certificates| certificates.first())
                .map(|certificate| certificate.as_ref()),
        };
        let caller = self
            .0
            .authorize(&presented, methods::of(request))
            .map_err(|status| status.into_http())?;
        tracing::Span::current().record("client_id", &*caller.id);
        request.extensions_mut().insert(caller);
        Ok(())
    }
}
