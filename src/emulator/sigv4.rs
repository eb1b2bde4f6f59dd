//! Checks AWS Signature Version 4 on requests to the emulator's HTTP front, answering as AWS
//! does when a request is unsigned, signed by an unknown key, or signed wrongly.
//!
//! The canonical request and string to sign are built here as the SigV4 specification lays them
//! out; the signing key and the signature come from `aws-sigv4`, the SDK's own signer.

use std::time::{Duration, SystemTime};

use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{OffsetDateTime, PrimitiveDateTime, macros::format_description};

/// The static credentials the emulator accepts.
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

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "codepipeline";
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
    /// The path, already URI-encoded as sent.
    pub path: &'a str,
    /// The query string, possibly empty.
    pub query: &'a str,
    /// The headers; `host` must be among them when signed (HTTP/2 callers pass `:authority`).
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// Checks the request's SigV4 signature against the accepted credentials and region.
pub fn verify(
    request: &SignedRequest<'_>,
    credentials: &StaticCredentials,
    region: &str,
    now: SystemTime,
) -> Result<(), Rejection> {
    let Some(header) = request.headers.get(http::header::AUTHORIZATION) else {
        return Err(reject(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let auth = header
        .to_str()
        .ok()
        .and_then(parse_authorization)
        .ok_or_else(|| {
            reject(
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters, and the AWS4-HMAC-SHA256 algorithm",
            )
        })?;
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
    if auth.access_key_id != credentials.access_key_id || !token_ok {
        return Err(reject(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    let amz_date = canonical_header_value(request.headers, "x-amz-date").unwrap_or_default();
    let request_time = parse_amz_date(&amz_date).ok_or_else(|| {
        reject(
            "IncompleteSignatureException",
            "Authorization requires an X-Amz-Date header in ISO 8601 basic format",
        )
    })?;
    let request_time = SystemTime::from(request_time);
    let skew = now
        .duration_since(request_time)
        .unwrap_or_else(|ahead| ahead.duration());
    if skew > MAX_CLOCK_SKEW {
        return Err(reject(
            "InvalidSignatureException",
            format!("Signature expired: {amz_date} is more than 15 minutes from the server's time"),
        ));
    }
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(reject(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP",
        ));
    }
    if auth.region != region || auth.service != SERVICE {
        return Err(reject(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to a valid region and service: '{region}', '{SERVICE}'"
            ),
        ));
    }

    let mut canonical_headers = String::new();
    for name in auth.signed_headers.split(';') {
        let value = canonical_header_value(request.headers, name).ok_or_else(|| {
            reject(
                "InvalidSignatureException",
                format!("Header '{name}' is listed in SignedHeaders but is not in the request"),
            )
        })?;
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    // The signature covers the body through its hash; a declared hash must be the body's.
    let payload_hash = hex::encode(Sha256::digest(request.body));
    if canonical_header_value(request.headers, "x-amz-content-sha256")
        .is_some_and(|declared| declared != payload_hash)
    {
        return Err(reject(
            "InvalidSignatureException",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        ));
    }
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
    let scope = format!("{}/{region}/{SERVICE}/aws4_request", auth.date);
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let signing_key = generate_signing_key(
        &credentials.secret_access_key,
        request_time,
        region,
        SERVICE,
    );
    let expected = calculate_signature(signing_key, string_to_sign.as_bytes());
    if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        Ok(())
    } else {
        Err(reject(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        ))
    }
}

/// The query string with its parameters sorted, as SigV4 wants (the job-worker operations send
/// none, so values are kept as encoded).
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

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
            body,
        }
    }

    #[test]
    fn a_request_signed_by_the_sdk_signer_is_accepted() {
        let body = br#"{"jobId":"f4f4ff82-2d11-4a2b-9c3d-0123456789ab","nonce":"3"}"#;
        let (headers, now) = sdk_signed(&credentials().secret_access_key, body);
        assert_eq!(
            verify(&request(&headers, body), &credentials(), "us-east-1", now),
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
            verify(&request(&headers, body), &temporary, "us-east-1", now),
            Ok(())
        );
        for (credentials, token) in [
            (credentials(), Some("a-token-nobody-issued")),
            (temporary.clone(), Some("another-token")),
            (temporary, None),
        ] {
            let (headers, now) = sdk_signed_with_token(&secret, token, body);
            let err = verify(&request(&headers, body), &credentials, "us-east-1", now).unwrap_err();
            assert_eq!(err.code, "UnrecognizedClientException", "{token:?}");
        }
    }

    #[test]
    fn a_wrong_secret_or_a_changed_body_is_an_invalid_signature() {
        let body = br#"{"nonce":"3"}"#;
        let (headers, now) = sdk_signed("not-the-secret", body);
        let err = verify(&request(&headers, body), &credentials(), "us-east-1", now).unwrap_err();
        assert_eq!(err.code, "InvalidSignatureException");

        let (headers, now) = sdk_signed(&credentials().secret_access_key, body);
        let err = verify(
            &request(&headers, br#"{"nonce":"4"}"#),
            &credentials(),
            "us-east-1",
            now,
        )
        .unwrap_err();
        assert_eq!(err.code, "InvalidSignatureException");
    }

    #[test]
    fn a_declared_payload_hash_that_is_not_the_bodys_is_refused() {
        let body = b"{}";
        let (mut headers, now) = sdk_signed(&credentials().secret_access_key, body);
        headers.insert(
            "x-amz-content-sha256",
            hex::encode(Sha256::digest(b"other")).parse().unwrap(),
        );
        let err = verify(&request(&headers, body), &credentials(), "us-east-1", now).unwrap_err();
        assert_eq!(err.code, "InvalidSignatureException");
    }

    #[test]
    fn a_request_from_too_long_ago_is_refused() {
        let body = b"{}";
        let (headers, now) = sdk_signed(&credentials().secret_access_key, body);
        let later = now + Duration::from_secs(16 * 60);
        let err = verify(&request(&headers, body), &credentials(), "us-east-1", later).unwrap_err();
        assert_eq!(err.code, "InvalidSignatureException");
    }

    #[test]
    fn another_region_in_the_scope_is_refused() {
        let body = b"{}";
        let (headers, now) = sdk_signed(&credentials().secret_access_key, body);
        let err = verify(&request(&headers, body), &credentials(), "eu-west-1", now).unwrap_err();
        assert_eq!(err.code, "InvalidSignatureException");
    }

    #[test]
    fn unsigned_and_unknown_key_requests_get_the_aws_codes() {
        let headers = HeaderMap::new();
        let err = verify(
            &request(&headers, b"{}"),
            &credentials(),
            "us-east-1",
            SystemTime::now(),
        )
        .unwrap_err();
        assert_eq!(err.code, "MissingAuthenticationTokenException");

        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDOTHER/20260101/us-east-1/codepipeline/aws4_request, SignedHeaders=host, Signature=00"
                .parse()
                .unwrap(),
        );
        let err = verify(
            &request(&headers, b"{}"),
            &credentials(),
            "us-east-1",
            SystemTime::now(),
        )
        .unwrap_err();
        assert_eq!(err.code, "UnrecognizedClientException");
    }
}
