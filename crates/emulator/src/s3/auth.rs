//! Who signed a request and what they may do: SigV4 for `s3` against the credentials the engine
//! issued, then the job's access rules.

use std::time::SystemTime;

use http::HeaderMap;

use super::{S3Error, Store};
use crate::{
    ArtifactAccess,
    sigv4::{self, Payload, Scope, SignedRequest, StaticCredentials},
    store::StoreOperation,
};
use codepipeline_job_port::domain::{JobStatus, S3Location};

/// The name S3 requests are signed for.
const SIGNING_NAME: &str = "s3";

impl Store {
    /// Who signed the request: the issued credential and what its job may do, once the
    /// signature is checked.
    pub(super) fn authenticate(
        &self,
        parts: &http::request::Parts,
        headers: &HeaderMap,
    ) -> Result<ArtifactAccess, S3Error> {
        let region = &self.inner.config.region;
        let access_key_id = sigv4::access_key_id(headers)
            .map_err(|failure| S3Error::from_signature(&failure, "", region))?;
        let access = self
            .inner
            .emulator
            .artifact_access(access_key_id)
            .ok_or_else(|| S3Error::invalid_access_key_id(access_key_id))?;
        let now = SystemTime::now();
        if access.credentials.is_expired(now) {
            return Err(S3Error::expired_token());
        }
        let credentials = StaticCredentials {
            access_key_id: access.credentials.access_key_id.clone(),
            secret_access_key: access.credentials.secret_access_key.clone(),
            session_token: Some(access.credentials.session_token.clone()),
        };
        let signed = SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers,
            payload: Payload::Declared,
        };
        let scope = Scope {
            region,
            service: SIGNING_NAME,
        };
        sigv4::verify(&signed, &credentials, scope, now)
            .map_err(|failure| S3Error::from_signature(&failure, access_key_id, region))?;
        Ok(access)
    }
}

/// The job's credentials work only while the job is being worked on (InProgress), and only on
/// its own artifacts: its inputs may be read, its outputs written.
pub(super) fn authorize(
    access: &ArtifactAccess,
    operation: StoreOperation,
    location: &S3Location,
) -> Result<(), S3Error> {
    if access.status != JobStatus::InProgress {
        return Err(S3Error::access_denied());
    }
    let allowed = if operation.reads() {
        &access.inputs
    } else {
        &access.outputs
    };
    if allowed.contains(location) {
        Ok(())
    } else {
        Err(S3Error::access_denied())
    }
}
