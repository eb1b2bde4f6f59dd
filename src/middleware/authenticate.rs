//! Applies the auth policy ([`crate::auth::Authenticator`]) to each call: a caller it accepts is
//! put in the request's extensions (and the call's span) for the layers and handlers below; a
//! refusal is answered at once. The credentials go in too ([`Credentials`]), for a job stream to
//! be authorized again as the token file changes.

use std::sync::Arc;

use http::{Request, Response, header::AUTHORIZATION};
use tonic::{body::Body, transport::server::TlsConnectInfo};
use tower_http::validate_request::ValidateRequest;

use super::connection::ConnectionInfo;
use crate::{
    api::methods,
    auth::{Authenticator, Credentials, Presented},
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
        let method = methods::of(request);
        let caller = self
            .0
            .authorize(&presented, method)
            .map_err(|status| status.into_http())?;
        tracing::Span::current().record("client_id", &*caller.id);
        let credentials = Credentials::new(
            self.0.clone(),
            &presented,
            peer_certificates.clone(),
            method,
        );
        request.extensions_mut().insert(caller);
        request.extensions_mut().insert(credentials);
        Ok(())
    }
}
