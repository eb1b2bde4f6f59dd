//! Refuses HTTP requests that are not gRPC before anything else looks at them: the gRPC
//! protocol is `POST` with a `content-type` starting with `application/grpc`. tonic would
//! otherwise serve a well-framed message sent as anything. The refusals are plain HTTP statuses,
//! as the gRPC over HTTP/2 spec asks (415 for the content-type), so a non-gRPC client does not
//! read a gRPC error's HTTP 200 as success.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tonic::body::Body;
use tower_http::validate_request::ValidateRequest;

/// The validator of the gRPC-only layer.
#[derive(Clone, Copy, Default)]
pub struct GrpcOnly;

/// The HTTP status refusing a request that is not gRPC, if it is not.
fn refusal<B>(request: &Request<B>) -> Option<StatusCode> {
    if request.method() != Method::POST {
        return Some(StatusCode::METHOD_NOT_ALLOWED);
    }
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    (!is_grpc).then_some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
}

impl ValidateRequest<Body> for GrpcOnly {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<Body>) -> Result<(), Response<Body>> {
        let Some(status) = refusal(request) else {
            return Ok(());
        };
        let mut response = Response::new(Body::empty());
        *response.status_mut() = status;
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        Err(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, content_type: Option<&str>) -> Request<Body> {
        let mut builder = Request::builder().method(method).uri("/x/y");
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn only_posts_of_grpc_content_pass() {
        assert_eq!(
            refusal(&request(Method::POST, Some("application/grpc"))),
            None
        );
        assert_eq!(
            refusal(&request(Method::POST, Some("application/grpc+proto"))),
            None
        );
        assert_eq!(
            refusal(&request(Method::POST, Some("application/json"))),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            refusal(&request(Method::POST, None)),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            refusal(&request(Method::GET, Some("application/grpc"))),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
    }
}
