//! What the store does not serve, and the faults injected into what it does.

use super::*;

#[tokio::test]
async fn other_operations_and_paths_are_refused_plainly() {
    let f = fixture();
    for (method, path, status, code) in [
        ("GET", "/".to_owned(), 501, "NotImplemented"),
        ("GET", format!("/{BUCKET}"), 501, "NotImplemented"),
        (
            "GET",
            format!("{}?acl", input_path()),
            501,
            "NotImplemented",
        ),
        ("DELETE", input_path(), 501, "NotImplemented"),
        ("PATCH", input_path(), 405, "MethodNotAllowed"),
    ] {
        f.send(f.request(method, &path))
            .await
            .assert_error(status, code);
    }
}

#[tokio::test]
async fn injected_faults_are_answered_as_s3_would() {
    let f = fixture();
    f.put_input(&[5u8; 64]);
    let set = |plan: &str| f.emulator.set_faults(FaultPlan::parse(plan).unwrap());

    set("PutObject:http503=1;UploadPart:http500=1");
    f.send(f.request("PUT", &output_path()).body(b"x".to_vec()))
        .await
        .assert_error(503, "SlowDown");
    assert!(
        f.object(OUTPUT_KEY).is_none(),
        "a 503 strikes before the write"
    );

    set("PutObject:drop=1");
    let dropped = f
        .send(f.request("PUT", &output_path()).body(b"x".to_vec()))
        .await;
    assert!(dropped.dropped);
    assert!(
        f.object(OUTPUT_KEY).is_some(),
        "a drop strikes after the write"
    );

    set("GetObject:drop=1");
    assert!(f.send(f.request("GET", &input_path())).await.dropped);

    set("GetObject:truncate=1");
    let truncated = f.send(f.request("GET", &input_path())).await;
    assert_eq!(truncated.header("content-length"), Some("64"));
    assert!(truncated.body.is_err(), "the body breaks off");

    set("GetObject:malformed=1");
    let corrupted = f.send(f.request("GET", &input_path())).await;
    let body = corrupted.body.unwrap();
    assert_eq!(body.len(), 64);
    assert_eq!(body.iter().filter(|b| **b != 5).count(), 1);

    set("*:http500=1");
    assert_eq!(
        f.send(f.request("GET", &input_path())).await.status,
        StatusCode::OK,
        "`*` is CodePipeline's operations only"
    );
}
