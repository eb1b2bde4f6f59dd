//! The canonical request and the string to sign, as the SigV4 specification lays them out: the
//! signed headers' canonical values, the payload's hash, the query canonicalised.

use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::{ALGORITHM, Failure, Payload, Scope, SignedRequest};

/// A header's canonical value: all its values joined by commas, each trimmed, inner runs of
/// spaces collapsed.
pub(super) fn canonical_header_value(headers: &HeaderMap, name: &str) -> Option<String> {
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

/// The canonical request of `request`, with the headers `signed_headers` lists (`host;x-amz-date`)
/// and its payload's hash.
pub(super) fn canonical_request(
    request: &SignedRequest<'_>,
    signed_headers: &str,
) -> Result<String, Failure> {
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
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
    Ok(format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload_hash}",
        method = request.method,
        path = if request.path.is_empty() {
            "/"
        } else {
            request.path
        },
        query = canonical_query(request.query),
        signed = signed_headers,
    ))
}

/// The string to sign of a canonical request sent at `amz_date`, scoped to `date` (`YYYYMMDD`)
/// and `scope`.
pub(super) fn string_to_sign(
    amz_date: &str,
    date: &str,
    scope: Scope<'_>,
    canonical_request: &str,
) -> String {
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    format!(
        "{ALGORITHM}\n{amz_date}\n{credential_scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The query string as SigV4 canonicalises it: each name and value decoded and encoded again
/// the one way SigV4 encodes (unreserved characters kept, everything else `%XX` in upper case),
/// then sorted. A parameter without `=` (S3's `?uploads`) has the empty value.
pub(super) fn canonical_query(query: &str) -> String {
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
