//! GetObject and HeadObject: an input artifact read whole, by range and by its head, and one
//! with no object.

use super::*;

#[tokio::test]
async fn an_input_artifact_is_read_whole_by_range_and_by_head() {
    let f = fixture();
    let bytes: Vec<u8> = (0u8..100).collect();
    f.put_input(&bytes);

    let whole = f.send(f.request("GET", &input_path())).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body.as_deref(), Ok(&bytes[..]));
    assert_eq!(whole.header("content-length"), Some("100"));
    assert_eq!(whole.header("content-type"), Some("application/zip"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert!(
        whole.header("x-amz-checksum-sha256").is_none(),
        "only when asked"
    );
    assert!(whole.header("last-modified").unwrap().ends_with(" GMT"));

    for (range, content_range, expected) in [
        ("bytes=2-5", "bytes 2-5/100", &bytes[2..6]),
        ("bytes=95-", "bytes 95-99/100", &bytes[95..]),
        ("bytes=-3", "bytes 97-99/100", &bytes[97..]),
        ("bytes=98-500", "bytes 98-99/100", &bytes[98..]),
    ] {
        let answer = f
            .send(f.request("GET", &input_path()).header("range", range))
            .await;
        assert_eq!(answer.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(answer.header("content-range"), Some(content_range));
        assert_eq!(answer.body.as_deref(), Ok(expected), "{range}");
    }
    let past_the_end = f
        .send(
            f.request("GET", &input_path())
                .header("range", "bytes=100-"),
        )
        .await;
    past_the_end.assert_error(416, "InvalidRange");
    assert!(
        past_the_end
            .text()
            .contains("<ActualObjectSize>100</ActualObjectSize>")
    );

    let checksummed = f
        .send(
            f.request("GET", &input_path())
                .header("x-amz-checksum-mode", "ENABLED"),
        )
        .await;
    assert_eq!(
        checksummed.header("x-amz-checksum-sha256"),
        Some(aws_smithy_types::base64::encode(Sha256::digest(&bytes)).as_str())
    );
    assert_eq!(
        checksummed.header("x-amz-checksum-type"),
        Some("FULL_OBJECT")
    );

    let head = f.send(f.request("HEAD", &input_path())).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("100"));
    assert_eq!(head.body.as_deref(), Ok(&[][..]));
    assert_eq!(head.header("etag"), whole.header("etag"));
    assert_eq!(
        f.emulator.store_call_counts()[&StoreOperation::GetObject],
        7
    );
}

#[tokio::test]
async fn an_input_without_an_object_is_no_such_key() {
    let f = fixture();
    let answer = f.send(f.request("GET", &input_path())).await;
    answer.assert_error(404, "NoSuchKey");
    assert!(answer.text().contains(&format!("<Key>{INPUT_KEY}</Key>")));
}
