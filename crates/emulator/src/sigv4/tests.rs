//! The checks against requests signed by the SDK's own signer, as the CodePipeline front and
//! aws-sdk-s3 sign them.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::canonical::canonical_query;
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
