//! PutObject: an output artifact written with its encryption and checksums, a body that is not
//! what its headers say, aws-chunked uploads.

use super::*;

#[tokio::test]
async fn an_output_artifact_is_written_with_its_encryption_and_checksums() {
    let f = fixture();
    let bytes = b"the build output".to_vec();
    let sha256 = aws_smithy_types::base64::encode(Sha256::digest(&bytes));
    let answer = f
        .send(
            f.request("PUT", &output_path())
                .header("content-type", "application/zip")
                .header("x-amz-server-side-encryption", "aws:kms")
                .header(
                    "x-amz-server-side-encryption-aws-kms-key-id",
                    "arn:aws:kms:us-east-1:123456789012:key/k1",
                )
                .header("x-amz-checksum-sha256", sha256.clone())
                .header(
                    "content-md5",
                    aws_smithy_types::base64::encode(md5::Md5::digest(&bytes)),
                )
                .body(bytes.clone()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&bytes)));
    assert_eq!(answer.header("etag"), Some(etag.as_str()));
    assert_eq!(
        answer.header("x-amz-server-side-encryption"),
        Some("aws:kms")
    );
    assert_eq!(
        answer.header("x-amz-checksum-sha256"),
        Some(sha256.as_str())
    );

    let object = f.object(OUTPUT_KEY).expect("stored");
    assert_eq!(object.content.to_vec(), bytes);
    assert_eq!(object.content_type.as_deref(), Some("application/zip"));
    assert_eq!(
        object.encryption,
        Encryption {
            algorithm: Some("aws:kms".to_owned()),
            kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/k1".to_owned()),
        }
    );
    assert_eq!(object.checksums.sha256.as_deref(), Some(sha256.as_str()));

    // An unsigned payload is accepted as such.
    let unsigned = f
        .send(
            f.request("PUT", &output_path())
                .body(b"v2".to_vec())
                .signed_as(Sign::Unsigned),
        )
        .await;
    assert_eq!(unsigned.status, StatusCode::OK);
    assert_eq!(f.object(OUTPUT_KEY).unwrap().content.to_vec(), b"v2");
}

#[tokio::test]
async fn a_body_that_is_not_what_its_headers_say_is_refused_and_not_stored() {
    let f = fixture();
    let other = aws_smithy_types::base64::encode(Sha256::digest(b"other"));
    let cases = [
        ("x-amz-checksum-sha256", other, "BadDigest"),
        (
            "content-md5",
            aws_smithy_types::base64::encode(md5::Md5::digest(b"other")),
            "BadDigest",
        ),
        (
            "x-amz-checksum-crc32",
            aws_smithy_types::base64::encode(crc32fast::hash(b"other").to_be_bytes()),
            "BadDigest",
        ),
        ("content-md5", "not base64!".to_owned(), "InvalidDigest"),
        (
            "x-amz-server-side-encryption",
            "rot13".to_owned(),
            "InvalidArgument",
        ),
    ];
    for (name, value, code) in cases {
        let answer = f
            .send(
                f.request("PUT", &output_path())
                    .header(name, value)
                    .body(b"bytes".to_vec()),
            )
            .await;
        answer.assert_error(400, code);
    }
    // The declared payload hash must be the body's: signed over one body, sent with another.
    let mut request = f
        .request("PUT", &output_path())
        .body(b"signed".to_vec())
        .build();
    *request.body_mut() = Body::from("sent");
    let answer = send_built(&f.store, request).await;
    answer.assert_error(400, "XAmzContentSHA256Mismatch");
    assert!(f.object(OUTPUT_KEY).is_none());
}

#[tokio::test]
async fn aws_chunked_uploads_are_not_implemented() {
    let f = fixture();
    let answer = f
        .send(
            f.request("PUT", &output_path())
                .header("content-encoding", "aws-chunked")
                .header("x-amz-decoded-content-length", "5")
                .body(b"bytes".to_vec()),
        )
        .await;
    answer.assert_error(501, "NotImplemented");
    assert!(answer.text().contains("aws-chunked"));
    assert!(f.object(OUTPUT_KEY).is_none());
}
