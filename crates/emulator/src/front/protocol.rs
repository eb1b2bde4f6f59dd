//! CodePipeline's two wire protocols, as the front speaks them:
//!
//! - awsJson1_1: `POST /`, `X-Amz-Target: CodePipeline_20150709.<Operation>`, JSON bodies,
//!   errors as `{"__type": "<Code>", "message": ...}` with `x-amzn-ErrorType`;
//! - Smithy RPC v2 CBOR: `POST /service/CodePipeline_20150709/operation/<Operation>` with
//!   `smithy-protocol: rpc-v2-cbor`, CBOR bodies (definite or indefinite lengths, timestamps as
//!   tag 1), no body for an operation without output, errors as a CBOR map whose `__type` is the
//!   error's absolute shape ID.
//!
//! Both answer with `x-amzn-RequestId`.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use super::shapes::Output;

/// The service shape's name, as both protocols address it.
pub const SERVICE: &str = "CodePipeline_20150709";
/// The model's namespace, which rpcv2Cbor error types are qualified with.
const NAMESPACE: &str = "com.amazonaws.codepipeline";
const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const CBOR_CONTENT_TYPE: &str = "application/cbor";
const SMITHY_PROTOCOL: &str = "smithy-protocol";
const RPC_V2_CBOR: &str = "rpc-v2-cbor";

/// The protocol a request came in, and so its answer goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// awsJson1_1.
    AwsJson,
    /// Smithy RPC v2 CBOR.
    RpcV2Cbor,
}

/// Why a body could not be read: the request is not of the operation's shape.
pub struct Undecodable;

impl Protocol {
    /// The protocol of a request to `path`.
    pub fn of_path(path: &str) -> Self {
        if path.starts_with("/service/") {
            Self::RpcV2Cbor
        } else {
            Self::AwsJson
        }
    }

    /// Whether a rpcv2Cbor request's service segment names CodePipeline, by its shape name or
    /// its absolute one.
    pub fn is_codepipeline(service: &str) -> bool {
        service == SERVICE
            || service
                .strip_prefix(NAMESPACE)
                .and_then(|rest| rest.strip_prefix('.'))
                == Some(SERVICE)
    }

    /// Whether the request's headers are this protocol's: rpcv2Cbor requires
    /// `smithy-protocol: rpc-v2-cbor` and forbids `X-Amz-Target`.
    pub fn headers_conform(self, headers: &HeaderMap) -> bool {
        match self {
            Self::AwsJson => true,
            Self::RpcV2Cbor => {
                headers
                    .get(SMITHY_PROTOCOL)
                    .is_some_and(|value| value.as_bytes() == RPC_V2_CBOR.as_bytes())
                    && !headers.contains_key("x-amz-target")
                    && !headers.contains_key("x-amzn-target")
            }
        }
    }

    /// Reads a request body; an empty one is an empty input structure.
    pub fn decode<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, Undecodable> {
        match self {
            Self::AwsJson => {
                let body: &[u8] = if body.is_empty() { b"{}" } else { body };
                serde_json::from_slice(body).map_err(|_| Undecodable)
            }
            Self::RpcV2Cbor => {
                let body: &[u8] = if body.is_empty() { &[0xa0] } else { body };
                ciborium::from_reader(body).map_err(|_| Undecodable)
            }
        }
    }

    /// Writes an operation's output; `None` for an operation without one in rpcv2Cbor.
    pub fn encode<O: Output>(self, output: &O) -> Option<Vec<u8>> {
        match self {
            Self::AwsJson => Some(serde_json::to_vec(output).expect("outputs serialize")),
            Self::RpcV2Cbor if O::UNIT => None,
            Self::RpcV2Cbor => Some(cbor(output)),
        }
    }

    /// A body that does not parse, as an injected fault answers.
    pub fn malformed(self) -> Vec<u8> {
        match self {
            Self::AwsJson => br#"{"jobs": [{"id": "#.to_vec(),
            // A map announcing a key of 5 bytes, and the stream ending after 2 of them.
            Self::RpcV2Cbor => vec![0xbf, 0x65, b'j', b'o'],
        }
    }

    /// What the reason for the undecodable body is called.
    pub fn undecodable_message(self) -> &'static str {
        match self {
            Self::AwsJson => "The request body is not valid JSON for this operation",
            Self::RpcV2Cbor => "The request body is not valid CBOR for this operation",
        }
    }

    /// A successful answer.
    pub fn answer(self, request_id: &str, body: Option<Vec<u8>>) -> Response {
        let mut response = match body {
            Some(body) => {
                let mut response = (StatusCode::OK, body).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, self.content_type());
                response
            }
            None => StatusCode::OK.into_response(),
        };
        self.mark(response.headers_mut(), request_id);
        response
    }

    /// An error answer: `code` is the AWS error code (`JobNotFoundException`).
    pub fn error(
        self,
        request_id: &str,
        status: StatusCode,
        code: &str,
        message: &str,
    ) -> Response {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            #[serde(rename = "__type")]
            kind: &'a str,
            message: &'a str,
        }
        let body = match self {
            Self::AwsJson => serde_json::to_vec(&ErrorBody {
                kind: code,
                message,
            })
            .expect("errors serialize"),
            Self::RpcV2Cbor => cbor(&ErrorBody {
                kind: &format!("{NAMESPACE}#{code}"),
                message,
            }),
        };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type());
        if self == Self::AwsJson
            && let Ok(value) = HeaderValue::from_str(code)
        {
            headers.insert("x-amzn-errortype", value);
        }
        self.mark(headers, request_id);
        response
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::AwsJson => JSON_CONTENT_TYPE,
            Self::RpcV2Cbor => CBOR_CONTENT_TYPE,
        })
    }

    /// The headers every answer carries.
    fn mark(self, headers: &mut HeaderMap, request_id: &str) {
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.insert("x-amzn-requestid", value);
        }
        if self == Self::RpcV2Cbor {
            headers.insert(SMITHY_PROTOCOL, HeaderValue::from_static(RPC_V2_CBOR));
        }
    }
}

fn cbor(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).expect("writing to a Vec cannot fail");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbor_bodies_of_indefinite_length_and_tagged_timestamps_are_read() {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Shape {
            job_id: String,
            created: f64,
        }
        // {_ "jobId": "j", "created": 1(1.5) }, as the Rust SDK writes maps.
        let mut body = vec![0xbf, 0x65];
        body.extend(b"jobId");
        body.extend([0x61, b'j', 0x67]);
        body.extend(b"created");
        body.extend([0xc1, 0xfb]);
        body.extend(1.5f64.to_be_bytes());
        body.push(0xff);
        let Ok(shape) = Protocol::RpcV2Cbor.decode::<Shape>(&body) else {
            panic!("the body decodes");
        };
        assert_eq!((shape.job_id.as_str(), shape.created), ("j", 1.5));
        assert!(Protocol::RpcV2Cbor.decode::<Shape>(&[0xbf, 0x65]).is_err());
    }

    #[test]
    fn rpc_v2_cbor_requests_carry_the_protocol_header_and_no_target() {
        let mut headers = HeaderMap::new();
        assert!(!Protocol::RpcV2Cbor.headers_conform(&headers));
        headers.insert(SMITHY_PROTOCOL, HeaderValue::from_static(RPC_V2_CBOR));
        assert!(Protocol::RpcV2Cbor.headers_conform(&headers));
        headers.insert("x-amz-target", HeaderValue::from_static("x"));
        assert!(!Protocol::RpcV2Cbor.headers_conform(&headers));
        assert!(Protocol::is_codepipeline("CodePipeline_20150709"));
        assert!(Protocol::is_codepipeline(
            "com.amazonaws.codepipeline.CodePipeline_20150709"
        ));
        assert!(!Protocol::is_codepipeline("CodeBuild_20161006"));
    }
}
