//! Which operation a request is, from its path, query and method: path-style only, objects
//! only, and a plain refusal for everything else S3 serves.

use http::{HeaderMap, HeaderValue, Method, header};

use super::S3Error;
use crate::{sigv4, store::StoreOperation};

/// `/{bucket}/{key}`, decoded: path-style only.
pub(super) fn parse_path(path: &str) -> Result<(String, String), S3Error> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(S3Error::not_implemented(
            "ListBuckets is not served: the emulator's store serves objects, path-style (/bucket/key)",
        ));
    }
    if key.is_empty() {
        return Err(S3Error::not_implemented(
            "Bucket operations are not served: the emulator's store serves objects, path-style (/bucket/key)",
        ));
    }
    let decode = |text: &str| {
        String::from_utf8(sigv4::percent_decode(text))
            .map_err(|_| S3Error::invalid_request("The path is not UTF-8 once decoded"))
    };
    Ok((decode(bucket)?, decode(key)?))
}

/// The query's parameters, decoded; `?uploads` has the empty value.
pub(super) fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |text: &str| String::from_utf8_lossy(&sigv4::percent_decode(text)).into_owned();
            (decode(name), decode(value))
        })
        .collect()
}

pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(given, _)| given == name)
        .map(|(_, value)| value.as_str())
}

/// The parameters that do not name another operation (a subresource).
fn is_plain_parameter(name: &str) -> bool {
    matches!(name, "x-id" | "uploadId" | "partNumber" | "uploads") || name.starts_with("response-")
}

/// Which operation a request is.
pub(super) fn route(
    method: &Method,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Result<StoreOperation, S3Error> {
    if let Some((name, _)) = params.iter().find(|(name, _)| !is_plain_parameter(name)) {
        return Err(S3Error::not_implemented(format!(
            "The ?{name} subresource is not served by the emulator's store"
        )));
    }
    let has = |name: &str| param(params, name).is_some();
    let operation = match *method {
        Method::GET if has("uploadId") => {
            return Err(S3Error::not_implemented("ListParts is not served"));
        }
        Method::GET => StoreOperation::GetObject,
        Method::HEAD => StoreOperation::HeadObject,
        Method::PUT if headers.contains_key("x-amz-copy-source") => {
            return Err(S3Error::not_implemented(
                "CopyObject and UploadPartCopy are not served",
            ));
        }
        Method::PUT if has("uploadId") || has("partNumber") => StoreOperation::UploadPart,
        Method::PUT => StoreOperation::PutObject,
        Method::POST if has("uploads") => StoreOperation::CreateMultipartUpload,
        Method::POST if has("uploadId") => StoreOperation::CompleteMultipartUpload,
        Method::DELETE if has("uploadId") => StoreOperation::AbortMultipartUpload,
        Method::POST | Method::DELETE => {
            return Err(S3Error::not_implemented(format!(
                "{method} on an object is not served: only multipart uploads are"
            )));
        }
        _ => return Err(S3Error::method_not_allowed(method.as_str())),
    };
    Ok(operation)
}

/// The headers, with `host` from `:authority` for HTTP/2 callers (SigV4 signs it as `host`).
pub(super) fn with_host(parts: &http::request::Parts) -> HeaderMap {
    let mut headers = parts.headers.clone();
    if !headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    headers
}
