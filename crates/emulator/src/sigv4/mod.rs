//! Checks AWS Signature Version 4 on requests to the emulator's HTTP doors: the CodePipeline
//! front (service `codepipeline`, the body at hand) and the artifact store (service `s3`, the body
//! streamed after the check, its hash declared in `x-amz-content-sha256`).
//!
//! The canonical request and string to sign are built as the SigV4 specification lays them
//! out; the signing key and the signature come from `aws-sigv4`, the SDK's own signer. What went
//! wrong is a [`Failure`]; each door words it in its own service's codes ([`Failure::codepipeline`]
//! here, the store's error table for S3), as AWS's services word the same failures differently.
//!
//! The canonical request and the string to sign are in `canonical.rs`, the checks of a signed
//! request in `verify.rs`; what a door needs to ask for a check, and what a check can find, here.

mod canonical;
mod verify;

pub use canonical::percent_decode;
pub use verify::{access_key_id, verify};

use http::HeaderMap;

/// The credentials a request is checked against: the front's static ones, or the temporary
/// artifact credentials the engine issued.
#[derive(Clone)]
pub struct StaticCredentials {
    /// The access key ID.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token of temporary credentials, which requests must then carry.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why a request's signature was refused: the AWS error code and message to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The AWS error code (`__type`).
    pub code: &'static str,
    /// The message, as AWS words it.
    pub message: String,
}

fn reject(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// What went wrong with a request's signature, before any service words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No `Authorization` header.
    Unsigned,
    /// An `Authorization` header that is not `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
    /// Signature=...`.
    Malformed,
    /// Signed by an access key the service does not know.
    UnknownKey,
    /// The session token is not the one issued with the key: `presented` says whether the request
    /// carried one at all.
    BadToken {
        /// Whether an `X-Amz-Security-Token` was sent.
        presented: bool,
    },
    /// No `X-Amz-Date` in ISO 8601 basic format.
    MissingDate,
    /// The request's time is more than 15 minutes from ours.
    Skewed {
        /// The `X-Amz-Date` sent.
        amz_date: String,
    },
    /// The credential scope's date is not the request's.
    ScopeDate,
    /// The credential scope names another region or service.
    WrongScope {
        /// The region in the scope.
        region: String,
        /// The service in the scope.
        service: String,
    },
    /// A header listed in `SignedHeaders` is not in the request.
    MissingSignedHeader(String),
    /// `x-amz-content-sha256` is required (S3) and absent.
    MissingPayloadHash,
    /// `x-amz-content-sha256` is not the body's hash.
    PayloadHashMismatch,
    /// The signature is not the one the secret gives.
    SignatureMismatch,
}

impl Failure {
    /// The failure as CodePipeline (awsJson1_1 / RPC v2 CBOR) answers it.
    pub fn codepipeline(&self) -> Rejection {
        match self {
            Self::Unsigned => reject(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ),
            Self::Malformed => reject(
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters, and the AWS4-HMAC-SHA256 algorithm",
            ),
            Self::UnknownKey | Self::BadToken { .. } => reject(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            Self::MissingDate => reject(
                "IncompleteSignatureException",
                "Authorization requires an X-Amz-Date header in ISO 8601 basic format",
            ),
            Self::Skewed { amz_date } => reject(
                "InvalidSignatureException",
                format!(
                    "Signature expired: {amz_date} is more than 15 minutes from the server's time"
                ),
            ),
            Self::ScopeDate => reject(
                "InvalidSignatureException",
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP",
            ),
            Self::WrongScope { .. } => reject(
                "InvalidSignatureException",
                "Credential should be scoped to a valid region and service",
            ),
            Self::MissingSignedHeader(name) => reject(
                "InvalidSignatureException",
                format!("Header '{name}' is listed in SignedHeaders but is not in the request"),
            ),
            Self::MissingPayloadHash | Self::PayloadHashMismatch => reject(
                "InvalidSignatureException",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ),
            Self::SignatureMismatch => reject(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
            ),
        }
    }
}

/// The region and service a request must be signed for.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The region, e.g. `us-east-1`.
    pub region: &'a str,
    /// The signing name, e.g. `codepipeline` or `s3`.
    pub service: &'a str,
}

/// How the payload enters the signature.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// The whole body is at hand: its hash is computed here, and a declared
    /// `x-amz-content-sha256` must be it.
    Body(&'a [u8]),
    /// S3's way: `x-amz-content-sha256` is required and is what is signed (a hex SHA-256, or
    /// `UNSIGNED-PAYLOAD`); the caller checks the body against a hex hash as it reads it.
    Declared,
}

/// The `x-amz-content-sha256` value of a request whose body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The request being checked.
pub struct SignedRequest<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path, URI-encoded as sent (S3 and CodePipeline both sign it as sent, unnormalised).
    pub path: &'a str,
    /// The query string, possibly empty.
    pub query: &'a str,
    /// The headers; `host` must be among them when signed (HTTP/2 callers pass `:authority`).
    pub headers: &'a HeaderMap,
    /// How the payload is signed.
    pub payload: Payload<'a>,
}

#[cfg(test)]
mod tests;
