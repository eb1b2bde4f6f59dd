//! Checks AWS Signature Version 4 on requests to the emulator's HTTP doors: the CodePipeline
//! front (service `codepipeline`, the body at hand) and the artifact store (service `s3`, the body
//! streamed after the check, its hash declared in `x-amz-content-sha256`).
//!
//! The canonical request and string to sign are built here as the SigV4 specification lays them
//! out; the signing key and the signature come from `aws-sigv4`, the SDK's own signer. What went
//! wrong is a [`Failure`]; each door words it in its own service's codes ([`Failure::codepipeline`]
//! here, the store's error table for S3), as AWS's services word the same failures differently.

use std::time::{Duration, SystemTime};

use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{OffsetDateTime, PrimitiveDateTime, macros::format_description};

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
/// How far a request's time may be from ours, as AWS allows.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix(ALGORITHM)?.trim_start();
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let mut scope = credential?.split('/');
    let authorization = Authorization {
        access_key_id: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed_headers?,
        signature: signature?,
    };
    (scope.next()? == "aws4_request" && scope.next().is_none()).then_some(authorization)
}

fn authorization(headers: &HeaderMap) -> Result<Authorization<'_>, Failure> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(Failure::Unsigned)?;
    header
        .to_str()
        .ok()
        .and_then(parse_authorization)
        .ok_or(Failure::Malformed)
}

/// The access key ID a request is signed with, so the caller can look up its credentials.
pub fn access_key_id(headers: &HeaderMap) -> Result<&str, Failure> {
    authorization(headers).map(|auth| auth.access_key_id)
}

fn parse_amz_date(value: &str) -> Option<OffsetDateTime> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    PrimitiveDateTime::parse(value, format)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// A header's canonical value: all its values joined by commas, each trimmed, inner runs of
/// spaces collapsed.
fn canonical_header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

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

/// Checks the request's SigV4 signature against `credentials`, for `scope`.
pub fn verify(
    request: &SignedRequest<'_>,
    credentials: &StaticCredentials,
    scope: Scope<'_>,
    now: SystemTime,
) -> Result<(), Failure> {
    let auth = authorization(request.headers)?;
    if auth.access_key_id != credentials.access_key_id {
        return Err(Failure::UnknownKey);
    }
    let presented_token = request
        .headers
        .get("x-amz-security-token")
        .map(|token| token.as_bytes());
    let token_ok = match (credentials.session_token.as_deref(), presented_token) {
        (None, None) => true,
        (Some(issued), Some(presented)) => bool::from(issued.as_bytes().ct_eq(presented)),
        // A token we did not issue, or none where the credentials are temporary.
        _ => false,
    };
    if !token_ok {
        return Err(Failure::BadToken {
            presented: presented_token.is_some(),
        });
    }
    let amz_date = canonical_header_value(request.headers, "x-amz-date").unwrap_or_default();
    let request_time = parse_amz_date(&amz_date).ok_or(Failure::MissingDate)?;
    let request_time = SystemTime::from(request_time);
    let skew = now
        .duration_since(request_time)
        .unwrap_or_else(|ahead| ahead.duration());
    if skew > MAX_CLOCK_SKEW {
        return Err(Failure::Skewed { amz_date });
    }
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(Failure::ScopeDate);
    }
    if auth.region != scope.region || auth.service != scope.service {
        return Err(Failure::WrongScope {
            region: auth.region.to_owned(),
            service: auth.service.to_owned(),
        });
    }

    let mut canonical_headers = String::new();
    for name in auth.signed_headers.split(';') {
        let value = canonical_header_value(request.headers, name)
            .ok_or_else(|| Failure::MissingSignedHeader(name.to_owned()))?;
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let declared = canonical_header_value(request.headers, "x-amz-content-sha256");
    let payload_hash = match request.payload {
        // The signature covers the body through its hash; a declared hash must be the body's.
        Payload::Body(body) => {
            let hash = hex::encode(Sha256::digest(body));
            if declared.is_some_and(|declared| declared != hash) {
                return Err(Failure::PayloadHashMismatch);
            }
            hash
        }
        Payload::Declared => declared.ok_or(Failure::MissingPayloadHash)?,
    };
    let canonical_request = format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload_hash}",
        method = request.method,
        path = if request.path.is_empty() {
            "/"
        } else {
            request.path
        },
        query = canonical_query(request.query),
        signed = auth.signed_headers,
    );
    let credential_scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, scope.region, scope.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{credential_scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let signing_key = generate_signing_key(
        &credentials.secret_access_key,
        request_time,
        scope.region,
        scope.service,
    );
    let expected = calculate_signature(signing_key, string_to_sign.as_bytes());
    if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        Ok(())
    } else {
        Err(Failure::SignatureMismatch)
    }
}

/// The query string as SigV4 canonicalises it: each name and value decoded and encoded again
/// the one way SigV4 encodes (unreserved characters kept, everything else `%XX` in upper case),
/// then sorted. A parameter without `=` (S3's `?uploads`) has the empty value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&percent_decode(key)),
                uri_encode(&percent_decode(value)),
            )
        })
        .collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes `%XX` escapes; a broken escape is kept as it is.
pub fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// SigV4's URI encoding of a query name or value: `A-Za-z0-9-_.~` kept, every other byte `%XX`.
fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODEPIPELINE: Scope<'static> = Scope {
        region: "us-east-1",
        service: "codepipeline",
    };

    fn credentials() -> StaticCredentials {
        StaticCredentials {
            session_token: None,
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
        }
    }

    /// Signs a request the way the SDK does, with the SDK's own signer, then checks it here.
    fn sdk_signed(secret: &str, body: &'static [u8]) -> (HeaderMap, SystemTime) {
        sdk_signed_with_token(secret, None, body)
    }

    fn sdk_signed_with_token(
        secret: &str,
        session_token: Option<&str>,
        body: &'static [u8],
    ) -> (HeaderMap, SystemTime) {
        use aws_credential_types::Credentials;
        use aws_sigv4::{
            http_request::{SignableBody, SignableRequest, SigningSettings, sign},
            sign::v4,
        };
        let now = SystemTime::now();
        let identity = Credentials::new(
            "AKIDEXAMPLE",
            secret,
            session_token.map(str::to_owned),
            None,
            "test",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("codepipeline")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [
            ("host", "127.0.0.1:4599"),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "CodePipeline_20150709.AcknowledgeJob"),
        ];
        let signable = SignableRequest::new(
            "POST",
            "http://127.0.0.1:4599/",
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(name, value.parse().unwrap());
        }
        for (name, value) in instructions.headers() {
            let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.insert(name, value.parse().unwrap());
        }
        (map, now)
    }

    fn request<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers,
            payload: Payload::Body(body),
        }
    }

    /// The CodePipeline error code a check ends with.
    fn code(result: Result<(), Failure>) -> &'static str {
        result
            .map_err(|failure| failure.codepipeline().code)
            .unwrap_err()
    }

    fn in_region(region: &str) -> Scope<'_> {
        Scope {
            region,
            service: "codepipeline",
        }
    }

    #[test]
    fn a_request_signed_by_the_sdk_signer_is_accepted() {
        let body = br#"{"jobId":"f4f4ff82-2d11-4a2b-9c3d-0123456789ab","nonce":"3"}"#;
        let (headers, now) = sdk_signed(&credentials().secret_access_key, body);
        assert_eq!(
            verify(&request(&headers, body), &credentials(), CODEPIPELINE, now),
            Ok(())
        );
    }

    #[test]
    fn a_session_token_must_be_the_one_issued_and_present_when_one_was() {
        let secret = credentials().secret_access_key;
        let body = b"{}";
        let temporary = StaticCredentials {
            session_token: Some("issued-session-token".to_owned()),
            ..credentials()
        };
        let (headers, now) = sdk_signed_with_token(&secret, Some("issued-session-token"), body);
        assert_eq!(
            verify(&request(&headers, body), &temporary, CODEPIPELINE, now),
            Ok(())
        );
        for (credentials, token) in [
            (credentials(), Some("a-token-nobody-issued")),
            (temporary.clone(), Some("another-token")),
            (temporary, None),
        ] {
            let (headers, now) = sdk_signed_with_token(&secret, token, body);
            let result = verify(&request(&headers, body), &credentials, CODEPIPELINE, now);
            assert_eq!(
                result,
                Err(Failure::BadToken {
                    presented: token.is_some()
                })
            );
            assert_eq!(code(result), "UnrecognizedClientException", "{token:?}");
        }
    }

    #[test]
    fn a_wrong_secret_or_a_changed_body_is_an_invalid_signature() {
        let body = br#"{"nonce":"3"}"#;
        let (headers, now) = sdk_signed("not-the-secret", body);
        let result = verify(&request(&headers, body), &credentials(), CODEPIPELINE, now);
        assert_eq!(code(result), "InvalidSignatureException");

        let (headers, now) = sdk_signed(&credentials().secret_access_key, body);
        let result = verify(
            &request(&headers, br#"{"nonce":"4"}"#),
            &credentials(),
            CODEPIPELINE,
            now,
        );
        assert_eq!(result, Err(Failure::SignatureMismatch));
    }

    #[test]
    fn a_declared_payload_hash_that_is_not_the_bodys_is_refused() {
        let body = b"{}";
        let (mut headers, now) = sdk_signed(&credentials().secret_access_key, body);
        headers.insert(
            "x-amz-content-sha256",
            hex::encode(Sha256::digest(b"other")).parse().unwrap(),
        );
        let result = verify(&request(&headers, body), &credentials(), CODEPIPELINE, now);
        assert_eq!(result, Err(Failure::PayloadHashMismatch));
        assert_eq!(code(result), "InvalidSignatureException");
    }

    #[test]
    fn a_request_from_too_long_ago_is_refused() {
        let body = b"{}";
        let (headers, now) = sdk_signed(&credentials().secret_access_key, body);
        let later = now + Duration::from_secs(16 * 60);
        let result = verify(
            &request(&headers, body),
            &credentials(),
            CODEPIPELINE,
            later,
        );
        assert!(matches!(result, Err(Failure::Skewed { .. })), "{result:?}");
        assert_eq!(code(result), "InvalidSignatureException");
    }

    #[test]
    fn another_region_or_service_in_the_scope_is_refused() {
        let body = b"{}";
        let (headers, now) = sdk_signed(&credentials().secret_access_key, body);
        let result = verify(
            &request(&headers, body),
            &credentials(),
            in_region("eu-west-1"),
            now,
        );
        assert_eq!(code(result), "InvalidSignatureException");
        let s3 = Scope {
            region: "us-east-1",
            service: "s3",
        };
        let result = verify(&request(&headers, body), &credentials(), s3, now);
        assert_eq!(
            result,
            Err(Failure::WrongScope {
                region: "us-east-1".to_owned(),
                service: "codepipeline".to_owned()
            })
        );
    }

    #[test]
    fn unsigned_and_unknown_key_requests_get_the_aws_codes() {
        let headers = HeaderMap::new();
        let result = verify(
            &request(&headers, b"{}"),
            &credentials(),
            CODEPIPELINE,
            SystemTime::now(),
        );
        assert_eq!(code(result), "MissingAuthenticationTokenException");

        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDOTHER/20260101/us-east-1/codepipeline/aws4_request, SignedHeaders=host, Signature=00"
                .parse()
                .unwrap(),
        );
        assert_eq!(access_key_id(&headers), Ok("AKIDOTHER"));
        let result = verify(
            &request(&headers, b"{}"),
            &credentials(),
            CODEPIPELINE,
            SystemTime::now(),
        );
        assert_eq!(result, Err(Failure::UnknownKey));
        assert_eq!(code(result), "UnrecognizedClientException");
    }

    /// Signs an S3 request as aws-sdk-s3 does: `x-amz-content-sha256` signed, the path as sent.
    fn s3_signed(
        method: &str,
        path_and_query: &str,
        payload_hash: &str,
        secret: &str,
    ) -> (HeaderMap, SystemTime) {
        use aws_credential_types::Credentials;
        use aws_sigv4::{
            http_request::{
                PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
                SigningSettings, UriPathNormalizationMode, sign,
            },
            sign::v4,
        };
        let now = SystemTime::now();
        let identity = Credentials::new(
            "ASIAEXAMPLE",
            secret,
            Some("the-session-token".to_owned()),
            None,
            "test",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(now)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let headers = [("host", "127.0.0.1:4598")];
        let body = if payload_hash == UNSIGNED_PAYLOAD {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Precomputed(payload_hash.to_owned())
        };
        let signable = SignableRequest::new(
            method,
            format!("http://127.0.0.1:4598{path_and_query}"),
            headers.iter().copied(),
            body,
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(name, value.parse().unwrap());
        }
        for (name, value) in instructions.headers() {
            let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.insert(name, value.parse().unwrap());
        }
        (map, now)
    }

    const S3: Scope<'static> = Scope {
        region: "us-east-1",
        service: "s3",
    };

    fn s3_credentials() -> StaticCredentials {
        StaticCredentials {
            access_key_id: "ASIAEXAMPLE".to_owned(),
            secret_access_key: "s3-secret".to_owned(),
            session_token: Some("the-session-token".to_owned()),
        }
    }

    #[test]
    fn s3_requests_are_checked_with_the_declared_payload_hash_and_their_query() {
        let body_hash = hex::encode(Sha256::digest(b"object bytes"));
        for (method, path, query, hash) in [
            ("PUT", "/bucket/dir/a%20b.zip", "", body_hash.as_str()),
            ("GET", "/bucket/dir/key.zip", "", UNSIGNED_PAYLOAD),
            ("POST", "/bucket/key", "uploads", UNSIGNED_PAYLOAD),
            (
                "PUT",
                "/bucket/key",
                "partNumber=2&uploadId=abc%2Fdef",
                body_hash.as_str(),
            ),
        ] {
            let path_and_query = if query.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{query}")
            };
            let (headers, now) = s3_signed(method, &path_and_query, hash, "s3-secret");
            let signed = SignedRequest {
                method,
                path,
                query,
                headers: &headers,
                payload: Payload::Declared,
            };
            assert_eq!(
                verify(&signed, &s3_credentials(), S3, now),
                Ok(()),
                "{method} {path_and_query}"
            );
            let wrong = StaticCredentials {
                secret_access_key: "another-secret".to_owned(),
                ..s3_credentials()
            };
            assert_eq!(
                verify(&signed, &wrong, S3, now),
                Err(Failure::SignatureMismatch)
            );
        }
    }

    #[test]
    fn an_s3_request_needs_its_payload_hash_header() {
        let (mut headers, now) = s3_signed("GET", "/b/k", UNSIGNED_PAYLOAD, "s3-secret");
        headers.remove("x-amz-content-sha256");
        let signed = SignedRequest {
            method: "GET",
            path: "/b/k",
            query: "",
            headers: &headers,
            payload: Payload::Declared,
        };
        // Signed, so listed in SignedHeaders: its absence is found there first.
        assert_eq!(
            verify(&signed, &s3_credentials(), S3, now),
            Err(Failure::MissingSignedHeader(
                "x-amz-content-sha256".to_owned()
            ))
        );
    }

    #[test]
    fn the_query_is_canonicalised_as_sigv4_wants() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("uploads"), "uploads=");
        assert_eq!(
            canonical_query("uploadId=a%2fb&partNumber=3&x-id=UploadPart"),
            "partNumber=3&uploadId=a%2Fb&x-id=UploadPart"
        );
        assert_eq!(canonical_query("k=a b"), "k=a%20b");
        assert_eq!(percent_decode("a%2Fb%zz%4"), b"a/b%zz%4");
    }
}
