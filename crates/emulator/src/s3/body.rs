//! A request's body as the store reads it: what `x-amz-content-sha256` and the checksum headers
//! promise, and the body read whole (or drained) and hashed as it comes.

use std::pin::Pin;

use bytes::Bytes;
use http::{HeaderMap, header};
use md5::Md5;
use sha2::{Digest, Sha256};

use super::{DRAIN_LIMIT, RequestBody, S3Error};
use crate::{sigv4::UNSIGNED_PAYLOAD, store::Content};

/// What `x-amz-content-sha256` promises about the body.
#[derive(Debug, Clone, Copy)]
pub(super) enum Declared {
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
    /// The body's SHA-256.
    Sha256([u8; 32]),
}

/// Reads `x-amz-content-sha256` (present: the signature check required it) and
/// `Content-Encoding`; aws-chunked uploads are refused.
pub(super) fn declared_payload(headers: &HeaderMap) -> Result<Declared, S3Error> {
    let chunked = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| coding.trim().eq_ignore_ascii_case("aws-chunked"));
    let value = header_text(headers, "x-amz-content-sha256").unwrap_or_default();
    if chunked || value.starts_with("STREAMING-") {
        return Err(S3Error::not_implemented(
            "aws-chunked uploads (Content-Encoding: aws-chunked, x-amz-content-sha256: STREAMING-*) are not implemented by the emulator's store: send the body whole, with x-amz-content-sha256 its SHA-256 or UNSIGNED-PAYLOAD, and checksums as headers (AWS SDKs: an in-memory body, or request checksum calculation `when_required`)",
        ));
    }
    if value == UNSIGNED_PAYLOAD {
        return Ok(Declared::Unsigned);
    }
    let mut hash = [0u8; 32];
    match hex::decode_to_slice(value, &mut hash) {
        Ok(()) => Ok(Declared::Sha256(hash)),
        Err(_) => Err(S3Error::invalid_argument(
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-..., or a valid sha256 value.",
            "x-amz-content-sha256",
            value,
        )),
    }
}

pub(super) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The digests a body must match, from its headers.
#[derive(Default)]
pub(super) struct Expected {
    pub(super) md5: Option<[u8; 16]>,
    pub(super) sha256: Option<(String, [u8; 32])>,
    pub(super) crc32: Option<(String, u32)>,
}

impl Expected {
    pub(super) fn from_headers(headers: &HeaderMap) -> Result<Self, S3Error> {
        let base64 = |name: &str| -> Result<Option<(String, Vec<u8>)>, S3Error> {
            header_text(headers, name)
                .map(|text| {
                    aws_smithy_types::base64::decode(text)
                        .map(|bytes| (text.to_owned(), bytes))
                        .map_err(|_| {
                            S3Error::invalid_request(format!("Value for {name} header is invalid."))
                        })
                })
                .transpose()
        };
        let md5 = match header_text(headers, "content-md5") {
            None => None,
            Some(text) => Some(
                aws_smithy_types::base64::decode(text)
                    .ok()
                    .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
                    .ok_or_else(S3Error::invalid_digest)?,
            ),
        };
        let sha256 = base64("x-amz-checksum-sha256")?
            .map(|(text, bytes)| {
                <[u8; 32]>::try_from(bytes)
                    .map(|digest| (text, digest))
                    .map_err(|_| {
                        S3Error::invalid_request(
                            "Value for x-amz-checksum-sha256 header is invalid.",
                        )
                    })
            })
            .transpose()?;
        let crc32 = base64("x-amz-checksum-crc32")?
            .map(|(text, bytes)| {
                <[u8; 4]>::try_from(bytes)
                    .map(|digest| (text, u32::from_be_bytes(digest)))
                    .map_err(|_| {
                        S3Error::invalid_request(
                            "Value for x-amz-checksum-crc32 header is invalid.",
                        )
                    })
            })
            .transpose()?;
        Ok(Self { md5, sha256, crc32 })
    }
}

/// A body read whole, with its digests.
pub(super) struct Received {
    pub(super) content: Content,
    pub(super) md5: [u8; 16],
    pub(super) sha256: Option<[u8; 32]>,
    pub(super) crc32: Option<u32>,
}

impl Received {
    /// Checks the body against what its headers declared.
    pub(super) fn check(&self, declared: Declared, expected: &Expected) -> Result<(), S3Error> {
        if let Declared::Sha256(hash) = declared
            && self.sha256 != Some(hash)
        {
            return Err(S3Error::content_sha256_mismatch());
        }
        if expected.md5.is_some_and(|md5| md5 != self.md5) {
            return Err(S3Error::bad_digest("Content-MD5"));
        }
        if expected
            .sha256
            .as_ref()
            .is_some_and(|(_, sha256)| Some(*sha256) != self.sha256)
        {
            return Err(S3Error::bad_digest("x-amz-checksum-sha256"));
        }
        if expected
            .crc32
            .as_ref()
            .is_some_and(|(_, crc32)| Some(*crc32) != self.crc32)
        {
            return Err(S3Error::bad_digest("x-amz-checksum-crc32"));
        }
        Ok(())
    }
}

async fn next_frame<B: RequestBody>(body: &mut B) -> Option<Result<Option<Bytes>, ()>> {
    let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
    Some(frame.map(|frame| frame.into_data().ok()).map_err(drop))
}

/// Reads the body whole, at most `limit` bytes, hashing as it goes: SHA-256 only when `sha256`
/// (a declared hash or checksum needs it), CRC32 only when `crc32`.
pub(super) async fn read_body<B: RequestBody>(
    body: &mut B,
    headers: &HeaderMap,
    limit: u64,
    sha256: bool,
    crc32: bool,
) -> Result<Received, S3Error> {
    if let Some(length) = header_text(headers, "content-length").and_then(|n| n.parse::<u64>().ok())
        && length > limit
    {
        return Err(S3Error::entity_too_large(length, limit));
    }
    let mut content = Content::default();
    let mut md5 = Md5::new();
    let mut sha = sha256.then(Sha256::new);
    let mut crc = crc32.then(crc32fast::Hasher::new);
    while let Some(frame) = next_frame(body).await {
        let Some(data) = frame.map_err(|()| S3Error::incomplete_body())? else {
            continue;
        };
        if content.len() + data.len() as u64 > limit {
            return Err(S3Error::entity_too_large(
                content.len() + data.len() as u64,
                limit,
            ));
        }
        md5.update(&data);
        if let Some(sha) = &mut sha {
            sha.update(&data);
        }
        if let Some(crc) = &mut crc {
            crc.update(&data);
        }
        content.push(data);
    }
    Ok(Received {
        content,
        md5: md5.finalize().into(),
        sha256: sha.map(|sha| sha.finalize().into()),
        crc32: crc.map(crc32fast::Hasher::finalize),
    })
}

/// Reads what is left of a refused request's body, up to [`DRAIN_LIMIT`].
pub(super) async fn drain<B: RequestBody>(body: &mut B) {
    let mut read = 0u64;
    while read < DRAIN_LIMIT {
        match next_frame(body).await {
            Some(Ok(Some(data))) => read += data.len() as u64,
            Some(Ok(None)) => {}
            Some(Err(())) | None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::HeaderValue;

    use super::*;

    #[tokio::test]
    async fn a_body_over_the_limit_is_entity_too_large_declared_or_not() {
        let mut declared = HeaderMap::new();
        declared.insert("content-length", HeaderValue::from(11u64));
        let mut body = Body::from(vec![0u8; 11]);
        let error = read_body(&mut body, &declared, 10, false, false)
            .await
            .err()
            .unwrap();
        assert_eq!(error.code, "EntityTooLarge");

        // A streamed body that never said its length is cut off once it passes the limit.
        let chunks = futures_util::stream::iter(
            (0..1000).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&[1u8; 1024]))),
        );
        let mut body = Body::from_stream(chunks);
        let error = read_body(&mut body, &HeaderMap::new(), 64 * 1024, false, false)
            .await
            .err()
            .unwrap();
        assert_eq!(error.code, "EntityTooLarge");

        let mut body = Body::from(vec![3u8; 10]);
        let received = read_body(&mut body, &HeaderMap::new(), 10, true, true)
            .await
            .ok()
            .unwrap();
        assert_eq!(received.content.len(), 10);
        assert_eq!(received.sha256, Some(Sha256::digest([3u8; 10]).into()));
        assert_eq!(received.crc32, Some(crc32fast::hash(&[3u8; 10])));
    }
}
