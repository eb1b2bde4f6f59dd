//! The store's one error table: every refusal is an [`S3Error`], answered as S3's REST API
//! answers it: the HTTP status, and `<Error><Code>..</Code><Message>..</Message>...
//! <RequestId>..</RequestId></Error>` (no body for HEAD, as S3 sends none).

use http::StatusCode;

use super::xml;
use crate::store::{MIN_PART_SIZE, MultipartError};
use crate::{faults::Fault, sigv4::Failure};

/// An S3 error: status, code, message and the extra elements S3 adds for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    /// The HTTP status.
    pub status: StatusCode,
    /// S3's error code.
    pub code: &'static str,
    /// The message, as S3 words it.
    pub message: String,
    /// Further elements (`Key`, `BucketName`, `UploadId`, ...), in order.
    pub details: Vec<(&'static str, String)>,
}

impl S3Error {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.details.push((name, value.into()));
        self
    }

    /// NoSuchKey, 404.
    pub fn no_such_key(key: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        )
        .with("Key", key)
    }

    /// NoSuchBucket, 404.
    pub fn no_such_bucket(bucket: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist",
        )
        .with("BucketName", bucket)
    }

    /// NoSuchUpload, 404.
    pub fn no_such_upload(upload_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
        )
        .with("UploadId", upload_id)
    }

    /// AccessDenied, 403.
    pub fn access_denied() -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied")
    }

    /// AccessDenied, 403, for a request with no credentials at all.
    pub fn anonymous() -> Self {
        Self::access_denied()
    }

    /// InvalidAccessKeyId, 403: a key S3 does not know, or a temporary one without its token.
    pub fn invalid_access_key_id(access_key_id: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
        .with("AWSAccessKeyId", access_key_id)
    }

    /// InvalidToken, 400: a session token that is not the key's.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidToken",
            "The provided token is malformed or otherwise invalid.",
        )
    }

    /// ExpiredToken, 400.
    pub fn expired_token() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ExpiredToken",
            "The provided token has expired.",
        )
    }

    /// SignatureDoesNotMatch, 403.
    pub fn signature_does_not_match(access_key_id: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
        .with("AWSAccessKeyId", access_key_id)
    }

    /// The failure of a signature check, worded as S3 words it.
    pub fn from_signature(failure: &Failure, access_key_id: &str, region: &str) -> Self {
        match failure {
            Failure::Unsigned => Self::anonymous(),
            Failure::Malformed => Self::new(
                StatusCode::BAD_REQUEST,
                "AuthorizationHeaderMalformed",
                "The authorization header is malformed; it must be AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...",
            ),
            Failure::UnknownKey | Failure::BadToken { presented: false } => {
                Self::invalid_access_key_id(access_key_id)
            }
            Failure::BadToken { presented: true } => Self::invalid_token(),
            Failure::MissingDate => Self::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "AWS authentication requires a valid Date or x-amz-date header",
            ),
            Failure::Skewed { amz_date } => Self::new(
                StatusCode::FORBIDDEN,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
            )
            .with("RequestTime", amz_date.clone()),
            Failure::ScopeDate => Self::new(
                StatusCode::BAD_REQUEST,
                "AuthorizationHeaderMalformed",
                "The authorization header is malformed; the date in the credential scope is not the date of X-Amz-Date.",
            ),
            Failure::WrongScope {
                region: given,
                service,
            } if given != region => Self::new(
                StatusCode::BAD_REQUEST,
                "AuthorizationHeaderMalformed",
                format!(
                    "The authorization header is malformed; the region '{given}' is wrong; expecting '{region}'"
                ),
            )
            .with("Region", region)
            .with("Service", service.clone()),
            Failure::WrongScope { service, .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "AuthorizationHeaderMalformed",
                format!(
                    "The authorization header is malformed; incorrect service '{service}'. This endpoint belongs to 's3'."
                ),
            ),
            Failure::MissingSignedHeader(_) | Failure::SignatureMismatch => {
                Self::signature_does_not_match(access_key_id)
            }
            Failure::MissingPayloadHash => Self::invalid_request(
                "Missing required header for this request: x-amz-content-sha256",
            ),
            Failure::PayloadHashMismatch => Self::content_sha256_mismatch(),
        }
    }

    /// XAmzContentSHA256Mismatch, 400: the body is not what `x-amz-content-sha256` declared.
    pub fn content_sha256_mismatch() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    }

    /// InvalidRequest, 400.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
    }

    /// InvalidArgument, 400, about one header or parameter.
    pub fn invalid_argument(message: impl Into<String>, name: &str, value: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
            .with("ArgumentName", name)
            .with("ArgumentValue", value)
    }

    /// BadDigest, 400: a checksum or Content-MD5 that is not the body's.
    pub fn bad_digest(what: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadDigest",
            format!("The {what} you specified did not match the calculated checksum."),
        )
    }

    /// InvalidDigest, 400: a Content-MD5 that is not base64 of 16 bytes.
    pub fn invalid_digest() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidDigest",
            "The Content-MD5 you specified was invalid.",
        )
    }

    /// EntityTooLarge, 400.
    pub fn entity_too_large(size: u64, max: u64) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
        )
        .with("ProposedSize", size.to_string())
        .with("MaxSizeAllowed", max.to_string())
    }

    /// IncompleteBody, 400: the body ended early or broke off.
    pub fn incomplete_body() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header",
        )
    }

    /// InvalidRange, 416.
    pub fn invalid_range(requested: &str, size: u64) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            "The requested range is not satisfiable",
        )
        .with("RangeRequested", requested)
        .with("ActualObjectSize", size.to_string())
    }

    /// MalformedXML, 400.
    pub fn malformed_xml() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema",
        )
    }

    /// A multipart rule broken.
    pub fn from_multipart(error: &MultipartError, upload_id: &str) -> Self {
        match error {
            MultipartError::NoSuchUpload => Self::no_such_upload(upload_id),
            MultipartError::InvalidPart(number) => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
            )
            .with("UploadId", upload_id)
            .with("PartNumber", number.to_string()),
            MultipartError::InvalidPartOrder => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidPartOrder",
                "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
            )
            .with("UploadId", upload_id),
            MultipartError::EntityTooSmall { part, size } => Self::new(
                StatusCode::BAD_REQUEST,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            )
            .with("ProposedSize", size.to_string())
            .with("MinSizeAllowed", MIN_PART_SIZE.to_string())
            .with("PartNumber", part.to_string()),
            MultipartError::NoParts => Self::malformed_xml(),
            MultipartError::StoreFull => Self::store_full(),
            MultipartError::TooManyUploads => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "The emulator's store has as many multipart uploads in progress as it may; complete or abort one, or wait for abandoned ones to expire.",
            ),
        }
    }

    /// NotImplemented, 501.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "NotImplemented", message)
    }

    /// MethodNotAllowed, 405.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        )
        .with("Method", method)
        .with("ResourceType", "OBJECT")
    }

    /// The emulator's store holds as many bytes as it may (its limits): 503, as S3 answers when
    /// it cannot take a request now.
    pub fn store_full() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The emulator's store holds as many bytes as its limits allow; nothing more is stored.",
        )
    }

    /// SlowDown, 503.
    pub fn slow_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        )
    }

    /// InternalError, 500.
    pub fn internal_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    }

    /// What an injected fault that strikes before the request takes effect answers.
    pub fn from_fault(fault: Fault) -> Option<Self> {
        match fault {
            Fault::Http500 => Some(Self::internal_error()),
            Fault::Http503 | Fault::Throttling => Some(Self::slow_down()),
            Fault::DropConnection | Fault::TruncatedResponse | Fault::MalformedJson => None,
        }
    }

    /// The error document.
    pub fn to_xml(&self, request_id: &str, host_id: &str) -> String {
        let mut out = format!(
            "{}\n<Error><Code>{}</Code><Message>{}</Message>",
            xml::DECLARATION,
            self.code,
            xml::escape(&self.message)
        );
        for (name, value) in &self.details {
            out.push_str(&format!("<{name}>{}</{name}>", xml::escape(value)));
        }
        out.push_str(&format!(
            "<RequestId>{request_id}</RequestId><HostId>{host_id}</HostId></Error>"
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_s3s_code_and_status() {
        let cases = [
            (S3Error::no_such_key("k"), 404, "NoSuchKey"),
            (S3Error::no_such_bucket("b"), 404, "NoSuchBucket"),
            (S3Error::no_such_upload("u"), 404, "NoSuchUpload"),
            (S3Error::access_denied(), 403, "AccessDenied"),
            (S3Error::expired_token(), 400, "ExpiredToken"),
            (
                S3Error::invalid_access_key_id("k"),
                403,
                "InvalidAccessKeyId",
            ),
            (S3Error::invalid_token(), 400, "InvalidToken"),
            (
                S3Error::signature_does_not_match("k"),
                403,
                "SignatureDoesNotMatch",
            ),
            (S3Error::bad_digest("Content-MD5"), 400, "BadDigest"),
            (
                S3Error::from_multipart(&MultipartError::InvalidPart(1), "u"),
                400,
                "InvalidPart",
            ),
            (
                S3Error::from_multipart(&MultipartError::EntityTooSmall { part: 1, size: 1 }, "u"),
                400,
                "EntityTooSmall",
            ),
            (S3Error::invalid_range("bytes=9-", 3), 416, "InvalidRange"),
            (S3Error::not_implemented("x"), 501, "NotImplemented"),
            (S3Error::slow_down(), 503, "SlowDown"),
            (S3Error::internal_error(), 500, "InternalError"),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status.as_u16(), error.code), (status, code));
        }
    }

    #[test]
    fn signature_failures_are_worded_as_s3_words_them() {
        let cases = [
            (Failure::Unsigned, "AccessDenied"),
            (Failure::Malformed, "AuthorizationHeaderMalformed"),
            (Failure::UnknownKey, "InvalidAccessKeyId"),
            (Failure::BadToken { presented: false }, "InvalidAccessKeyId"),
            (Failure::BadToken { presented: true }, "InvalidToken"),
            (
                Failure::Skewed {
                    amz_date: "20200101T000000Z".to_owned(),
                },
                "RequestTimeTooSkewed",
            ),
            (
                Failure::WrongScope {
                    region: "eu-west-1".to_owned(),
                    service: "s3".to_owned(),
                },
                "AuthorizationHeaderMalformed",
            ),
            (Failure::SignatureMismatch, "SignatureDoesNotMatch"),
            (Failure::MissingPayloadHash, "InvalidRequest"),
            (Failure::PayloadHashMismatch, "XAmzContentSHA256Mismatch"),
        ];
        for (failure, code) in cases {
            assert_eq!(
                S3Error::from_signature(&failure, "ASIAX", "us-east-1").code,
                code,
                "{failure:?}"
            );
        }
    }

    #[test]
    fn the_error_document_is_s3s() {
        let xml = S3Error::no_such_key("a&b").to_xml("REQ", "HOST");
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>\
             <Message>The specified key does not exist.</Message><Key>a&amp;b</Key>\
             <RequestId>REQ</RequestId><HostId>HOST</HostId></Error>"
        );
    }
}
