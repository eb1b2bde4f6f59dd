//! Every operation's access rules: the job's credentials reach only its artifacts, only while it
//! is InProgress, and unknown keys, wrong tokens and secrets, expired credentials are refused.

use super::*;

#[tokio::test]
async fn the_credentials_reach_only_the_jobs_artifacts_each_way() {
    let f = fixture();
    f.put_input(b"zip");
    f.emulator
        .objects()
        .put(
            &location(OUTPUT_KEY),
            Object::new(b"out".to_vec(), "application/zip"),
        )
        .expect("room in the store");
    // Outputs are not readable, inputs not writable, other keys neither.
    f.send(f.request("GET", &output_path()))
        .await
        .assert_error(403, "AccessDenied");
    f.send(f.request("PUT", &input_path()).body(b"x".to_vec()))
        .await
        .assert_error(403, "AccessDenied");
    f.send(f.request("POST", &format!("{}?uploads", input_path())))
        .await
        .assert_error(403, "AccessDenied");
    f.send(f.request("GET", &format!("/{BUCKET}/pipeline/another-job.zip")))
        .await
        .assert_error(403, "AccessDenied");
    f.send(f.request("GET", &format!("/no-such-bucket/{INPUT_KEY}")))
        .await
        .assert_error(404, "NoSuchBucket");
    assert_eq!(f.object(INPUT_KEY).unwrap().content.to_vec(), b"zip");

    // A HEAD is refused with its status alone.
    let head = f.send(f.request("HEAD", &output_path())).await;
    assert_eq!(head.status, StatusCode::FORBIDDEN);
    assert_eq!(head.body.as_deref(), Ok(&[][..]));
}

#[tokio::test]
async fn unknown_keys_wrong_tokens_and_wrong_secrets_are_refused_as_s3_refuses_them() {
    let f = fixture();
    f.put_input(b"zip");
    let mut unknown = f.request("GET", &input_path());
    unknown.access_key_id = "ASIANEVERISSUED00000".to_owned();
    f.send(unknown)
        .await
        .assert_error(403, "InvalidAccessKeyId");

    let mut wrong_token = f.request("GET", &input_path());
    wrong_token.token = Some("another-token".to_owned());
    f.send(wrong_token).await.assert_error(400, "InvalidToken");

    let mut no_token = f.request("GET", &input_path());
    no_token.token = None;
    f.send(no_token)
        .await
        .assert_error(403, "InvalidAccessKeyId");

    let mut wrong_secret = f.request("GET", &input_path());
    wrong_secret.secret = "not-the-secret".to_owned();
    f.send(wrong_secret)
        .await
        .assert_error(403, "SignatureDoesNotMatch");

    let unsigned = Request::builder()
        .uri(format!("http://127.0.0.1:4598{}", input_path()))
        .body(Body::empty())
        .unwrap();
    send_built(&f.store, unsigned)
        .await
        .assert_error(403, "AccessDenied");
    assert_eq!(
        f.emulator.store_call_counts()[&StoreOperation::GetObject],
        0,
        "only authenticated requests are counted"
    );
}

#[tokio::test]
async fn expired_credentials_are_expired_token() {
    let f = fixture_with(Duration::ZERO, true);
    f.put_input(b"zip");
    f.send(f.request("GET", &input_path()))
        .await
        .assert_error(400, "ExpiredToken");
}

#[tokio::test]
async fn the_credentials_work_only_while_the_job_is_in_progress() {
    let dispatched = fixture_with(Duration::from_secs(900), false);
    dispatched.put_input(b"zip");
    dispatched
        .send(dispatched.request("GET", &input_path()))
        .await
        .assert_error(403, "AccessDenied");

    let f = fixture();
    f.put_input(b"zip");
    assert_eq!(
        f.send(f.request("GET", &input_path())).await.status,
        StatusCode::OK
    );
    f.emulator
        .succeed(PutJobSuccessResultInput {
            job_id: f.job.clone(),
            current_revision: None,
            continuation_token: None,
            execution_details: None,
            output_variables: Default::default(),
        })
        .unwrap();
    f.send(f.request("GET", &input_path()))
        .await
        .assert_error(403, "AccessDenied");
    assert!(!f.nonce.is_empty());
}
