//! Authentication and authorisation: who is calling, and may they call this method. The
//! policy lives here; [`crate::middleware::authenticate`] applies it to each call.
//!
//! Callers prove who they are with a bearer token (`authorization: Bearer <token>`) listed in
//! the token file, or with a client certificate verified by the mTLS client CA (its first SAN is
//! the client id). The token file holds only SHA-256 digests of tokens; a presented token is
//! hashed and compared with every entry in constant time. Health is always reachable without
//! credentials, and so is reflection unless configured otherwise.

mod certificate;
pub mod client_tokens;
pub mod new_token;
pub mod scope;
pub mod token_file;
pub mod watched_file;

use std::sync::{Arc, LazyLock};

use http::HeaderValue;
use tonic::Status;
use tonic::transport::CertificateDer;

pub use client_tokens::{ClientTokenSet, ClientTokens};
pub use scope::Scope;
use token_file::Identified;
pub use token_file::{TokenSet, TokenStore};
pub use watched_file::FileError;

use crate::{
    api::{Api, Method, Refusal},
    limits::Rate,
    observability::{
        Metrics,
        metrics::{AuthRejectedLabels, AuthRejection},
    },
};

/// Who is calling, as authentication established it. Later layers and handlers read it from the
/// request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client's id (token file entry or certificate SAN), or `anonymous`.
    pub id: Arc<str>,
    /// The client's own rate, when the token file sets one.
    pub rate: Option<Rate>,
    /// What the client may work.
    pub scope: Arc<Scope>,
}

impl Caller {
    /// The caller of a gateway that does not authenticate.
    pub fn anonymous() -> Self {
        static ANONYMOUS: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("anonymous"));
        Self {
            id: ANONYMOUS.clone(),
            rate: None,
            scope: Scope::unscoped(),
        }
    }
}

/// The credentials a call presents.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    /// The `authorization` header, if any.
    pub authorization: Option<&'a HeaderValue>,
    /// The verified client certificate (DER), on an mTLS connection.
    pub peer_certificate: Option<&'a [u8]>,
}

/// The credentials a call presented, kept with the call so that a long one (a job stream) can
/// be authorized again: when the token file changes, and before each job it is given or
/// acknowledges. A removed token, or a narrowed `allowed_rpcs`, then reaches open streams too.
#[derive(Clone)]
pub struct Credentials {
    authenticator: Arc<Authenticator>,
    authorization: Option<HeaderValue>,
    peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
    method: Option<Method>,
}

impl Credentials {
    /// The credentials of a call to `method`, for `authenticator` to check again.
    pub fn new(
        authenticator: Arc<Authenticator>,
        presented: &Presented<'_>,
        peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
        method: Option<Method>,
    ) -> Self {
        Self {
            authenticator,
            authorization: presented.authorization.cloned(),
            peer_certificates,
            method,
        }
    }

    /// Who the credentials name now, and whether they may still call the method.
    pub fn authorize(&self) -> Result<Caller, Status> {
        self.authenticator.authorize(&self.presented(), self.method)
    }

    /// Whether the credentials may, now, also call `method`: a job stream acknowledges jobs,
    /// so it needs AcknowledgeJob as well as StreamJobs.
    pub fn authorize_also(&self, method: Method) -> Result<Caller, Status> {
        self.authenticator
            .authorize(&self.presented(), Some(method))
    }

    fn presented(&self) -> Presented<'_> {
        Presented {
            authorization: self.authorization.as_ref(),
            peer_certificate: self
                .peer_certificates
                .as_deref()
                .and_then(|certificates| certificates.first())
                .map(|certificate| certificate.as_ref()),
        }
    }

    /// Changes when the token file does, if there is one.
    pub fn token_file_reloads(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.authenticator
            .tokens
            .as_ref()
            .map(|tokens| tokens.reloads())
    }
}

/// The auth policy: tokens and/or client certificates, and which methods need them.
pub struct Authenticator {
    tokens: Option<Arc<TokenStore>>,
    /// Whether verified client certificates identify callers.
    client_certificates: bool,
    /// Whether reflection needs credentials too.
    reflection_requires_auth: bool,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// An authenticator. With neither tokens nor client certificates the gateway is open: every
    /// caller is [`Caller::anonymous`].
    pub fn new(
        tokens: Option<Arc<TokenStore>>,
        client_certificates: bool,
        reflection_requires_auth: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            tokens,
            client_certificates,
            reflection_requires_auth,
            metrics,
        }
    }

    fn is_open(&self) -> bool {
        self.tokens.is_none() && !self.client_certificates
    }

    fn refuse(&self, reason: AuthRejection, refusal: Refusal) -> Status {
        self.metrics
            .auth_rejected
            .get_or_create(&AuthRejectedLabels { reason })
            .inc();
        refusal.into()
    }

    /// The client this request's credentials name, if it carries any, with its permissions.
    fn identify(&self, presented: &Presented<'_>) -> Result<Option<Identified>, Status> {
        if let Some(tokens) = &self.tokens
            && let Some(header) = presented.authorization
        {
            let token = header
                .to_str()
                .ok()
                .and_then(|value| value.split_once(' '))
                .filter(|(scheme, token)| {
                    scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()
                })
                .map(|(_, token)| token.trim())
                .ok_or_else(|| {
                    self.refuse(AuthRejection::InvalidToken, Refusal::MalformedAuthorization)
                })?;
            let set = tokens.current();
            let client = set
                .by_token(token)
                .ok_or_else(|| self.refuse(AuthRejection::InvalidToken, Refusal::UnknownToken))?;
            return Ok(Some(client.identified()));
        }
        if self.client_certificates
            && let Some(id) = presented.peer_certificate.and_then(certificate::client_id)
        {
            // With a token file, a certificate is an identity only if the file lists it as a
            // certificate client; without one, the client CA is the list.
            let Some(tokens) = &self.tokens else {
                return Ok(Some(Identified {
                    caller: Caller {
                        id: Arc::from(id.as_str()),
                        rate: None,
                        scope: Scope::unscoped(),
                    },
                    allowed: None,
                }));
            };
            let listed = tokens
                .current()
                .by_certificate(&id)
                .map(token_file::Client::identified);
            return listed.map(Some).ok_or_else(|| {
                self.refuse(
                    AuthRejection::UnknownCertificate,
                    Refusal::UnknownCertificate { client_id: id },
                )
            });
        }
        Ok(None)
    }

    /// Decides who presented these credentials and whether they may call `method` (the method
    /// the request's path names, `None` for one the gateway does not serve): the caller, or the
    /// refusal.
    pub fn authorize(
        &self,
        presented: &Presented<'_>,
        method: Option<Method>,
    ) -> Result<Caller, Status> {
        let exempt = method.is_some_and(|method| {
            method.api() == Api::Health
                || (method.api() == Api::Reflection && !self.reflection_requires_auth)
        });
        if exempt || self.is_open() {
            return Ok(Caller::anonymous());
        }
        let Identified { caller, allowed } = self.identify(presented)?.ok_or_else(|| {
            self.refuse(
                AuthRejection::MissingCredentials,
                Refusal::MissingCredentials,
            )
        })?;
        // An unknown method goes on to be answered UNIMPLEMENTED, once the caller is known.
        if let Some(method) = method
            && !allowed.is_none_or(|allowed| allowed.allows(method))
        {
            return Err(self.refuse(
                AuthRejection::Forbidden,
                Refusal::MethodNotAllowed {
                    client_id: caller.id.to_string(),
                    method,
                },
            ));
        }
        Ok(caller)
    }
}
