//! The checks of a signed request, in the order AWS makes them: the `Authorization` header, the
//! key and its session token, the request's time and the credential scope, then the signature.

use std::time::{Duration, SystemTime};

use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use http::HeaderMap;
use subtle::ConstantTimeEq;
use time::{OffsetDateTime, PrimitiveDateTime, macros::format_description};

use super::{
    ALGORITHM, Failure, Scope, SignedRequest, StaticCredentials,
    canonical::{canonical_header_value, canonical_request, string_to_sign},
};

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

/// Checks the request's SigV4 signature against `credentials`, for `scope`.
pub fn verify(
    request: &SignedRequest<'_>,
    credentials: &StaticCredentials,
    scope: Scope<'_>,
    now: SystemTime,
) -> Result<(), Failure> {
    let auth = authorization(request.headers)?;
    check_identity(&auth, request.headers, credentials)?;
    let (amz_date, request_time) = request_time(&auth, request.headers, now)?;
    if auth.region != scope.region || auth.service != scope.service {
        return Err(Failure::WrongScope {
            region: auth.region.to_owned(),
            service: auth.service.to_owned(),
        });
    }
    let canonical_request = canonical_request(request, auth.signed_headers)?;
    let string_to_sign = string_to_sign(&amz_date, auth.date, scope, &canonical_request);
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

/// The request is signed with these credentials' key, and carries their session token (none
/// when they have none).
fn check_identity(
    auth: &Authorization<'_>,
    headers: &HeaderMap,
    credentials: &StaticCredentials,
) -> Result<(), Failure> {
    if auth.access_key_id != credentials.access_key_id {
        return Err(Failure::UnknownKey);
    }
    let presented_token = headers
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
    Ok(())
}

/// The request's `X-Amz-Date`, and the time it says, if it is within the allowed skew of `now`
/// and its date is the credential scope's.
fn request_time(
    auth: &Authorization<'_>,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<(String, SystemTime), Failure> {
    let amz_date = canonical_header_value(headers, "x-amz-date").unwrap_or_default();
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
    Ok((amz_date, request_time))
}
