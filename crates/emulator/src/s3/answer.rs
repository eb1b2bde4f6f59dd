//! What the store answers: a success (as an after-effect fault may leave it) or S3's error XML,
//! each with its request ids.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

use super::S3Error;
use crate::{
    faults::{DropConnection, Fault},
    store::{Checksums, Encryption},
};

/// A request's `x-amz-request-id` and `x-amz-id-2`.
pub(super) struct RequestIds {
    request_id: String,
    host_id: String,
}

impl RequestIds {
    pub(super) fn new() -> Self {
        use rand::RngExt;
        let mut rng = rand::rng();
        let request_id = format!("{:016X}", rng.random::<u64>());
        let host_bytes: [u8; 48] = std::array::from_fn(|_| rng.random());
        Self {
            request_id,
            host_id: aws_smithy_types::base64::encode(host_bytes),
        }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("x-amz-request-id", &self.request_id),
            ("x-amz-id-2", &self.host_id),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }
}

pub(super) fn error_response(error: &S3Error, ids: &RequestIds, head: bool) -> Response<Body> {
    let xml = error.to_xml(&ids.request_id, &ids.host_id);
    let mut response = if head {
        // S3 answers a HEAD with the status alone.
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(xml))
    };
    *response.status_mut() = error.status;
    let headers = response.headers_mut();
    ids.apply(headers);
    if !head {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
    }
    response
}

/// A successful answer, before any after-effect fault strikes it.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    headers: HeaderMap,
    pub(super) body: AnswerBody,
}

pub(super) enum AnswerBody {
    Empty,
    Xml(String),
    /// An object's bytes (or a range of them), and how many.
    Object(Vec<Bytes>, u64),
    /// An answer the connection is closed instead of (an injected `drop`).
    Dropped,
    /// An answer cut short: the length promised, the bytes sent before the cut.
    Truncated(u64, Bytes),
}

impl Answer {
    pub(super) fn new(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: AnswerBody::Empty,
        }
    }

    pub(super) fn xml(document: String) -> Self {
        let mut answer = Self::new(StatusCode::OK);
        answer.header("content-type", "application/xml");
        answer.body = AnswerBody::Xml(document);
        answer
    }

    pub(super) fn header(&mut self, name: &'static str, value: &str) {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.insert(HeaderName::from_static(name), value);
        }
    }

    pub(super) fn encryption(&mut self, encryption: &Encryption) {
        if let Some(algorithm) = &encryption.algorithm {
            self.header("x-amz-server-side-encryption", algorithm);
        }
        if let Some(key) = &encryption.kms_key_id {
            self.header("x-amz-server-side-encryption-aws-kms-key-id", key);
        }
    }

    pub(super) fn checksums(&mut self, checksums: &Checksums) {
        if let Some(sha256) = &checksums.sha256 {
            self.header("x-amz-checksum-sha256", sha256);
        }
        if let Some(crc32) = &checksums.crc32 {
            self.header("x-amz-checksum-crc32", crc32);
        }
        if checksums.sha256.is_some() || checksums.crc32.is_some() {
            let kind = if checksums.is_composite() {
                "COMPOSITE"
            } else {
                "FULL_OBJECT"
            };
            self.header("x-amz-checksum-type", kind);
        }
    }

    /// The answer as an after-effect fault leaves it: dropped, cut short, or corrupted.
    pub(super) fn struck_by(mut self, fault: Fault) -> Self {
        let bytes = match &self.body {
            AnswerBody::Xml(text) => Some(Bytes::from(text.clone().into_bytes())),
            AnswerBody::Object(chunks, _) => Some(Bytes::from(chunks.concat())),
            _ => None,
        };
        self.body = match (fault, bytes) {
            (Fault::DropConnection, _) | (Fault::TruncatedResponse, None) => AnswerBody::Dropped,
            (Fault::TruncatedResponse, Some(bytes)) => {
                let half = bytes.slice(..bytes.len() / 2);
                AnswerBody::Truncated(bytes.len() as u64, half)
            }
            (Fault::MalformedJson, Some(_)) if matches!(self.body, AnswerBody::Xml(_)) => {
                AnswerBody::Xml("<<< this is not XML".to_owned())
            }
            (Fault::MalformedJson, Some(bytes)) if !bytes.is_empty() => {
                // A corrupted download: the right length, one byte flipped.
                let mut corrupted = bytes.to_vec();
                let middle = corrupted.len() / 2;
                corrupted[middle] ^= 0xff;
                let len = corrupted.len() as u64;
                AnswerBody::Object(vec![Bytes::from(corrupted)], len)
            }
            (_, _) => self.body,
        };
        self
    }

    pub(super) fn into_response(self, ids: &RequestIds) -> Response<Body> {
        let (body, length) = match self.body {
            AnswerBody::Empty => (Body::empty(), None),
            AnswerBody::Xml(text) => {
                let len = text.len() as u64;
                (Body::from(text), Some(len))
            }
            AnswerBody::Object(chunks, len) => (
                Body::from_stream(futures_util::stream::iter(
                    chunks.into_iter().map(Ok::<_, std::io::Error>),
                )),
                Some(len),
            ),
            AnswerBody::Dropped => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response.extensions_mut().insert(DropConnection);
                return response;
            }
            AnswerBody::Truncated(promised, half) => (
                // Promise the whole body, send half of it, then fail the stream: the connection
                // is cut mid-answer.
                Body::from_stream(futures_util::stream::iter([
                    Ok(half),
                    Err(std::io::Error::other("injected truncation")),
                ])),
                Some(promised),
            ),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        *headers = self.headers;
        if let Some(length) = length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        ids.apply(headers);
        response
    }
}
