//! The emulator's AWS front at the HTTP level, where no SDK goes: what it answers a request that
//! is not an operation call.

use std::io::{Read, Write};

use crate::support::{Backend, spawn};

/// Sends `request` (HTTP/1.1, `Connection: close`) to `addr` and returns the whole answer.
fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.split("\r\n\r\n").next()?.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn other_methods_and_paths_get_an_aws_error_with_a_request_id() {
    let gw = spawn(Backend::RealSdk).await;
    let front = gw.front_addr().expect("the real SDK path has a front");
    for (request, status, content_type) in [
        (
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "405",
            "application/x-amz-json-1.1",
        ),
        (
            "DELETE /service/CodePipeline_20150709/operation/PollForJobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "405",
            "application/cbor",
        ),
        (
            "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "404",
            "application/x-amz-json-1.1",
        ),
    ] {
        let answer = tokio::task::spawn_blocking({
            let request = request.to_owned();
            move || http(front, &request)
        })
        .await
        .unwrap();
        let status_line = answer.lines().next().unwrap_or_default();
        assert!(status_line.contains(status), "{request}: {answer}");
        assert!(
            header(&answer, "x-amzn-requestid").is_some_and(|id| id.len() == 36),
            "{request}: {answer}"
        );
        assert_eq!(
            header(&answer, "content-type"),
            Some(content_type),
            "{request}"
        );
        if content_type.ends_with("json-1.1") {
            assert!(
                answer.contains(r#""__type":"UnknownOperationException""#),
                "{answer}"
            );
            assert_eq!(
                header(&answer, "x-amzn-errortype"),
                Some("UnknownOperationException")
            );
        } else {
            assert!(
                answer.contains("com.amazonaws.codepipeline#UnknownOperationException"),
                "{answer}"
            );
            assert_eq!(header(&answer, "smithy-protocol"), Some("rpc-v2-cbor"));
        }
    }
    assert_eq!(gw.emulator.total_calls(), 0);
    gw.stop().await;
}
