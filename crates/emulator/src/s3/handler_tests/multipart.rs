//! The multipart uploads: created, uploaded in parts, completed as S3 completes them, aborted.

use super::*;

fn xml_text(text: &str, element: &str) -> String {
    text.split(&format!("<{element}>"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("</{element}>")).next())
        .unwrap_or_default()
        .to_owned()
}

fn complete_body(parts: &[(u32, &str)]) -> String {
    let mut body =
        String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (number, etag) in parts {
        body.push_str(&format!(
            "<Part><ETag>{}</ETag><PartNumber>{number}</PartNumber></Part>",
            etag.replace('"', "&quot;")
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

#[tokio::test]
async fn a_multipart_upload_follows_s3s_rules() {
    let f = fixture();
    let created = f
        .send(
            f.request("POST", &format!("{}?uploads", output_path()))
                .header("x-amz-server-side-encryption", "aws:kms")
                .header("x-amz-server-side-encryption-aws-kms-key-id", "key-1"),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    assert!(created.text().contains("<InitiateMultipartUploadResult"));
    assert_eq!(xml_text(&created.text(), "Key"), OUTPUT_KEY);
    let upload_id = xml_text(&created.text(), "UploadId");
    let part_path = |n: u32| format!("{}?partNumber={n}&uploadId={upload_id}", output_path());

    let big = vec![7u8; MIN_PART_SIZE as usize];
    let first = f
        .send(f.request("PUT", &part_path(1)).body(big.clone()))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let small = f
        .send(f.request("PUT", &part_path(2)).body(b"tail".to_vec()))
        .await;
    let last = f
        .send(f.request("PUT", &part_path(3)).body(b"end".to_vec()))
        .await;
    let etag = |answer: &Answer| answer.header("etag").unwrap().to_owned();

    f.send(f.request("PUT", &part_path(0)).body(b"x".to_vec()))
        .await
        .assert_error(400, "InvalidArgument");
    f.send(
        f.request(
            "PUT",
            &format!("{}?partNumber=1&uploadId=nope", output_path()),
        )
        .body(b"x".to_vec()),
    )
    .await
    .assert_error(404, "NoSuchUpload");

    let complete = |parts: Vec<(u32, String)>| {
        let borrowed: Vec<(u32, &str)> = parts.iter().map(|(n, e)| (*n, e.as_str())).collect();
        f.request("POST", &format!("{}?uploadId={upload_id}", output_path()))
            .body(complete_body(&borrowed))
    };
    f.send(complete(vec![
        (1, etag(&first)),
        (2, etag(&small)),
        (3, etag(&last)),
    ]))
    .await
    .assert_error(400, "EntityTooSmall");
    f.send(complete(vec![(1, etag(&first)), (2, etag(&last))]))
        .await
        .assert_error(400, "InvalidPart");
    f.send(complete(vec![(3, etag(&last)), (1, etag(&first))]))
        .await
        .assert_error(400, "InvalidPartOrder");
    f.send(
        f.request("POST", &format!("{}?uploadId={upload_id}", output_path()))
            .body("<nope/>"),
    )
    .await
    .assert_error(400, "MalformedXML");
    assert!(f.object(OUTPUT_KEY).is_none(), "nothing until completed");

    let done = f
        .send(complete(vec![(1, etag(&first)), (3, etag(&last))]))
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let object = f.object(OUTPUT_KEY).unwrap();
    assert_eq!(object.content.len(), MIN_PART_SIZE + 3);
    assert!(object.etag.ends_with("-2\""), "{}", object.etag);
    assert_eq!(
        xml_text(&done.text(), "ETag"),
        object.etag.replace('"', "&quot;")
    );
    assert_eq!(object.encryption.kms_key_id.as_deref(), Some("key-1"));
    assert_eq!(object.parts, 2);
}

#[tokio::test]
async fn an_aborted_upload_leaves_nothing() {
    let f = fixture();
    let created = f
        .send(f.request("POST", &format!("{}?uploads", output_path())))
        .await;
    let upload_id = xml_text(&created.text(), "UploadId");
    f.send(
        f.request(
            "PUT",
            &format!("{}?partNumber=1&uploadId={upload_id}", output_path()),
        )
        .body(b"part".to_vec()),
    )
    .await;
    let aborted = f
        .send(f.request("DELETE", &format!("{}?uploadId={upload_id}", output_path())))
        .await;
    assert_eq!(aborted.status, StatusCode::NO_CONTENT);
    assert!(f.object(OUTPUT_KEY).is_none());
    assert_eq!(f.emulator.objects().uploads_in_progress(), 0);
    f.send(f.request("DELETE", &format!("{}?uploadId={upload_id}", output_path())))
        .await
        .assert_error(404, "NoSuchUpload");
}
